# Stubs of the convolution kernels; _conv_avx2 and _conv_avx512 are the same
# module compiled for other instruction sets.
import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]

def conv2d_forward(
    x: _Float, weight: _Float, bias: _Float, out: _Float,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, groups: int, n_threads: int,
) -> None: ...
def conv2d_input_grad(
    grad_out: _Float, weight: _Float, bias: _Float, grad_in: _Float,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, groups: int, n_threads: int,
) -> None: ...
def conv2d_weight_grad(
    x: _Float, grad_out: _Float, partial: _Float, KH: int, KW: int,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, groups: int, n_threads: int,
) -> int: ...  # rows of partial that hold sums
def bias_grad(grad_out: _Float, out: _Float, n_threads: int) -> None: ...
def implicit_tiles(
    itemsize: int, H: int, W: int, KH: int, KW: int, OH: int, OW: int,
    sh: int, sw: int, dh: int, dw: int, n_planes: int, n_threads: int,
) -> tuple[int, int] | None: ...
def workspace_peak(reset: bool = False) -> int: ...
