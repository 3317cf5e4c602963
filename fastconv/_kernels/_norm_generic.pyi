# Stubs of the batch-norm kernels; _norm_avx2 and _norm_avx512 are the same
# module compiled for other instruction sets. Checked against the compiled
# modules by tests/test_stubs.py. Arrays are (N, C, S) C-contiguous, S the
# product of the spatial sizes; per-channel statistics are float64 (C,).
import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_F64 = NDArray[np.float64]

def batch_norm_train_forward(
    x: _Float, weight: _Float, bias: _Float, eps: float, out: _Float, mean_out: _F64,
    var_out: _F64, block: int, n_threads: int,
) -> None: ...
def batch_norm_apply(
    x: _Float, scale: _F64, shift: _F64, out: _Float, block: int, n_threads: int
) -> None: ...
def batch_norm_backward(
    x: _Float, grad_out: _Float, weight: _Float, mean: _F64, invstd: _F64, training: bool,
    eps: float, grad_in: _Float, grad_weight: _F64, grad_bias: _F64, block: int,
    n_threads: int,
) -> None: ...
