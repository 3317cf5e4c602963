# Convolution kernels: forward, input gradient (transposed convolution) and
# weight gradient, for float32 and float64 through the fused `floating` type.
#
# This file is included by _conv_generic.pyx, _conv_avx2.pyx and
# _conv_avx512.pyx: the same code compiled with different ISA flags, of which
# fastconv._config picks one at import time from the CPU's features. It
# holds the design and includes the families, one file each:
#
#   _ukernel.pxi          the micro-kernels (C, _ukernel.h) and the blocking table
#   _conv_geometry.pxi    Geometry, runs of a tile, the implicit tile's shape
#   _conv_patches.pxi     im2col and col2im
#   _conv_pack.pxi        A and B panels for the micro-kernels
#   _conv_implicit.pxi    implicit tiles: the padded input copy and its taps
#   _conv_forward.pxi     conv2d_forward: im2col, implicit and channels paths
#   _conv_winograd.pxi    its winograd path: F(2x2, 3x3) for 3x3 at stride 1
#   _conv_input_grad.pxi  conv2d_input_grad: col2im and implicit adjoint
#   _conv_weight_grad.pxi conv2d_weight_grad: implicit, im2col, direct
#   _conv_direct.pxi      flat planes and the depthwise kernels
#   _conv_bias.pxi        bias_grad
#
# Which path an op takes is decided in fastconv/_plan.py, never here: every
# entry point takes its path (and implicit tile) as arguments.
#
# Design
# ------
# All three ops are GEMMs over patches of the input, computed tile by tile so
# that no whole-batch im2col buffer ever exists (the channels forward holds
# the patches of all its positions, at most 512). Every 2-D geometry is handled
# (1-D convolutions arrive with H = kH = 1). Let Cg = C_in/groups,
# Mg = C_out/groups, K = Cg*kH*kW and P = OH*OW. Rows of K are ordered
# (ci, kh, kw), the order of the weight's memory. Output positions are
# numbered q = n*P + p across the batch, so that a tile of TP positions may
# span several small images and the GEMMs stay wide for small feature maps.
#
# * forward:      out[:, g] (Mg x N*P) = W_g (Mg x K) @ col_g (K x N*P) + b
#   parallel over (g, tile of TP positions): each item writes its own slice
#   of `out`. The col tile is built KC rows at a time, so the workspace is
#   KC*TP per thread. The implicit forward (_forward_implicit) needs no col
#   tile: it copies a padded block of input rows once and reads each row of
#   B from it in place (at stride s, from a copy split into s x s phases;
#   for 1-D convolutions, with the images as rows). For few positions
#   (_forward_channels) the operands swap: out_g^T = col_g^T @ W_g^T, the
#   patches of all positions as A panels and the weight as B panels of NR
#   output channels, parallel over those panels.
# * input grad:   colgrad (K x P) = W_g^T (K x Mg) @ grad_out[n, g] (Mg x P),
#   scattered (col2im) into grad_in. Parallel over (n, g, chunk of input
#   channels): every item owns whole planes of grad_in, so the scatter-add has
#   no write conflicts; positions are walked sequentially inside an item.
#   This is the seeds' "full convolution with the flipped kernel", generalised
#   to stride, dilation, padding and groups. A 1-D convolution with few
#   outputs per image takes the adjoint of the implicit forward instead
#   (_input_grad_implicit), on its tiles of images as rows.
# * weight grad:  dW_g (Mg x K) += grad_out_g (Mg x TP) @ col^T (TP x K), a
#   reduction over batch and positions. Parallel over (g, tile); each thread
#   accumulates into its own private copy of dW, and the copies are summed
#   after the parallel region (never += races on shared output). Where dW
#   outgrows the cache and tiles are small, parallel over (g, block of
#   columns of dW) instead, each item summing all positions into its own
#   slice (see conv2d_weight_grad). On the implicit forward's tiles
#   (_weight_grad_implicit) it is dW_g^T = col @ grad_out_g^T instead, with
#   the rows of col read in place from the same padded copy of the input, so
#   that only grad_out is ever transposed; at stride 1 with at most NR/4
#   output channels per group, each weight is a dot product per image
#   (_weight_grad_direct).
#
# The GEMMs share the register-blocked micro-kernels of _ukernel.h (C with
# explicit vectors, one contract for every ISA; wrapped in _ukernel.pxi): an
# MR x NR block of accumulators, MR = 6 or 8 rows by NR = two SIMD vectors,
# the A operand packed in panels of MR rows, the B operand a tile buffer
# whose rows hold NR consecutive values. Every block size is in the blocking
# table of _isa.h. The implicit forward of few output channels per group
# holds one row of MR*NR values in the same registers instead
# (_micro_taps_row).
#
# Compiler directives: boundscheck=False, wraparound=False, cdivision=True,
# initializedcheck=False (set in setup.py). Index arithmetic is Py_ssize_t.

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free, malloc
from libc.math cimport isfinite
from libc.string cimport memcpy, memset

import numpy as np

from fastconv._kernels._openmp cimport omp_get_thread_num


include "_ukernel.pxi"
include "_conv_geometry.pxi"
include "_conv_patches.pxi"
include "_conv_pack.pxi"
include "_conv_implicit.pxi"
include "_conv_forward.pxi"
include "_conv_winograd.pxi"
include "_conv_input_grad.pxi"
include "_conv_weight_grad.pxi"
include "_conv_direct.pxi"
include "_conv_bias.pxi"
