# The same kernels as _conv_generic, compiled for another instruction set.
from ._conv_generic import *  # noqa: F403
