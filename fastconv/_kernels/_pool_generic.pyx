# cython: language_level=3
# The pooling kernels compiled for one ISA level; see _pool.pxi.
include "_pool.pxi"
