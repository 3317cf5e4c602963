"""fastconv: fast, exact convolution and pooling kernels for NumPy.

Functional ops follow PyTorch's names and conventions (channels-first,
cross-correlation, ``stride/padding/dilation/groups``); :mod:`fastconv.grad`
has their gradients with ``torch.nn.grad`` signatures; :mod:`fastconv.reference`
is a pure-NumPy implementation of every op, the baseline and test oracle.
"""

try:
    from ._kernels import _openmp  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on how it was installed
    raise ImportError(
        "fastconv's compiled kernels could not be imported. Install the package with "
        "`pip install .` (or build in place with `python setup.py build_ext --inplace`); "
        "if you are inside the source tree, run Python from another directory."
    ) from exc

from . import grad, models, nn, optim, reference
from ._backend import get_backend, use_backend
from ._checkpoint import UnsafeCheckpointError, load
from ._config import get_num_threads, set_num_threads, show_config
from ._plan import conv_plan
from ._version import __version__
from .functional import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    avg_pool1d,
    avg_pool2d,
    batch_norm,
    conv1d,
    conv2d,
    conv_transpose1d,
    conv_transpose2d,
    max_pool1d,
    max_pool2d,
)

__all__ = [
    "__version__",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "batch_norm",
    "grad",
    "nn",
    "models",
    "optim",
    "reference",
    "set_num_threads",
    "get_num_threads",
    "show_config",
    "conv_plan",
    "use_backend",
    "get_backend",
    "load",
    "UnsafeCheckpointError",
]
