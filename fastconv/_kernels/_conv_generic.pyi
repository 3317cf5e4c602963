# Stubs of the convolution kernels; _conv_avx2 and _conv_avx512 are the same
# module compiled for other instruction sets. Checked against the compiled
# modules by tests/test_stubs.py.
from typing import Literal

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_ForwardPath = Literal["im2col", "implicit", "implicit_row", "channels", "winograd"]
_InputGradPath = Literal["col2im", "implicit_adjoint"]
_WeightGradPath = Literal["direct", "implicit", "im2col", "im2col_by_columns"]

def pack_forward_weight(weight: _Float, groups: int, channels: bool, n_threads: int) -> _Float: ...
def pack_winograd_weight(weight: _Float, n_threads: int) -> _Float: ...
def conv2d_forward(
    x: _Float, weight: _Float, bias: _Float, packed: _Float, out: _Float,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, groups: int,
    path: _ForwardPath, rows: int, cw: int, relu: bool, n_threads: int,
) -> bool: ...  # True: winograd met a non-finite value, out is to be computed again
def conv2d_input_grad(
    grad_out: _Float, weight: _Float, bias: _Float, grad_in: _Float,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, groups: int,
    path: _InputGradPath, rows: int, cw: int, n_threads: int,
) -> None: ...
def conv2d_weight_grad(
    x: _Float, grad_out: _Float, partial: _Float, KH: int, KW: int,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, groups: int,
    path: _WeightGradPath, rows: int, cw: int, n_threads: int,
) -> int: ...  # rows of partial that hold sums
def depthwise_forward_or_input_grad(
    src: _Float, weight: _Float, bias: _Float, dst: _Float,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, transposed: bool, flat: bool,
    relu: bool, n_threads: int,
) -> None: ...
def depthwise_weight_grad(
    x: _Float, grad_out: _Float, partial: _Float, KH: int, KW: int,
    sh: int, sw: int, ph: int, pw: int, dh: int, dw: int, flat: bool, band: int,
    n_threads: int,
) -> None: ...
def bias_grad(grad_out: _Float, out: _Float, n_threads: int) -> None: ...
def implicit_tiles(
    itemsize: int, N: int, H: int, W: int, KH: int, KW: int, OH: int, OW: int,
    sh: int, sw: int, ph: int, dh: int, dw: int, groups: int, n_threads: int, slack: float,
) -> tuple[int, int, float] | None: ...
def blocking() -> dict[str, int | dict[int, int]]: ...
def workspace_peak(reset: bool = False) -> int: ...
def ukernel() -> tuple[str, int, int, int]: ...
def micro_gemm(a: _Float, b: _Float, c: _Float) -> None: ...
def micro_gemm_taps(
    a: _Float, b: _Float, off: NDArray[np.intp], c: _Float, bias: _Float | None = None,
    add: bool = False, relu: bool = False,
) -> None: ...
def micro_gemm_row(a: _Float, b: _Float, off: NDArray[np.intp], c: _Float) -> None: ...
def micro_gemm_rows(
    nseg: int, seglen: int, sstride: int, a: _Float, aoff: NDArray[np.intp], b: _Float,
    c: _Float,
) -> None: ...
def transpose_block(s: _Float, d: _Float) -> None: ...
def micro_run(itemsize: int, kc: int, reps: int, n_threads: int) -> float: ...
def fma_peak_run(itemsize: int, n: int, n_threads: int) -> float: ...
