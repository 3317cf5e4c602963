# Stubs of the pooling kernels; _pool_avx2 and _pool_avx512 are the same
# module compiled for other instruction sets. Checked against the compiled
# modules by tests/test_stubs.py.
from typing import Literal

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_Geometry = tuple[int, int, int, int, int, int, int, int]  # kH, kW, sh, sw, ph, pw, dh, dw

def blocking() -> dict[str, dict[int, int] | bool]: ...
def max_pool2d_forward(
    x: _Float, out: _Float, indices: NDArray[np.int64], geometry: _Geometry,
    path: Literal["flat", "rows", "windows"], n_threads: int,
) -> None: ...
def max_pool_backward(
    grad_out: _Float, indices: NDArray[np.int64], grad_in: _Float, n_threads: int
) -> int: ...
def avg_pool2d_forward(
    x: _Float, out: _Float, geometry: _Geometry, count_include_pad: bool,
    path: Literal["flat", "rows"], n_threads: int,
) -> None: ...
def avg_pool2d_backward(
    grad_out: _Float, grad_in: _Float, geometry: _Geometry, count_include_pad: bool,
    path: Literal["tiled", "rows"], n_threads: int,
) -> None: ...
