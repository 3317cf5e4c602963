# cython: language_level=3
# The convolution kernels compiled for one ISA level; see _conv.pxi.
include "_conv.pxi"
