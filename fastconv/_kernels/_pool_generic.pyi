import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_Geometry = tuple[int, int, int, int, int, int, int, int]  # kH, kW, sh, sw, ph, pw, dh, dw

def max_pool2d_forward(
    x: _Float, out: _Float, indices: NDArray[np.int64], geometry: _Geometry, n_threads: int
) -> None: ...
def max_pool_backward(
    grad_out: _Float, indices: NDArray[np.int64], grad_in: _Float, n_threads: int
) -> int: ...
def avg_pool2d_forward(
    x: _Float, out: _Float, geometry: _Geometry, count_include_pad: bool, n_threads: int
) -> None: ...
def avg_pool2d_backward(
    grad_out: _Float, grad_in: _Float, geometry: _Geometry, count_include_pad: bool,
    n_threads: int,
) -> None: ...
