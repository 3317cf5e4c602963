# cython: language_level=3
# The batch-norm kernels compiled for one ISA level; see _norm.pxi.
include "_norm.pxi"
