# The same kernels as _pool_generic, compiled for another instruction set.
from ._pool_generic import *  # noqa: F403
