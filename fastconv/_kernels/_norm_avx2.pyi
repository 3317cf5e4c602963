# The same kernels as _norm_generic, compiled for another instruction set.
from ._norm_generic import *  # noqa: F403
