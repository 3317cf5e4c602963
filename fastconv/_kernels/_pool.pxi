# Max and average pooling, forward and backward.
#
# This file is included by _pool_generic.pyx, _pool_avx2.pyx and
# _pool_avx512.pyx: the same code compiled with different ISA flags, of which
# fastconv._config picks one at import time (the same ISA as the convolution
# kernels). Wider vectors matter here: the compare-and-select of a float64
# maximum and its int64 index only vectorise with AVX2 or AVX-512.
#
# Design
# ------
# Pooling is memory-bound, so there is one loop nest per op and no packing.
# Inputs arrive as (planes, H, W) with planes = N*C (1-D pooling has H = kH =
# 1). Each entry point is a `prange` over planes calling a `noexcept nogil`
# kernel for one plane; where planes are fewer than the threads (one large
# image), the forward's items are bands of output rows of a plane instead
# (_row_bands). A plane of the input gradient (backward) is written by
# exactly one thread, so the gradients can accumulate where windows overlap
# without races (a large single plane runs on one thread there), and the
# results are bitwise independent of the thread count.
#
# Window of output (oh, ow): rows ih = oh*sh - ph + kh*dh, columns likewise,
# restricted to the input (padding is never read).
#
# * Rows of outputs: the output columns whose windows lie inside the input
#   (_interior_columns) are worked a row at a time and vectorised over the
#   row. Square 2x2 and 3x3 windows at stride 1 or 2 (_row_fixed) are
#   unrolled, so each output's window is one pass; other windows take one
#   branch-free pass over the row per tap (_max_row, _sum_row). The few edge columns
#   are done one output at a time with bounds tests. All of them visit a
#   window's taps in the same row-major order, so they agree bitwise.
# * 2x2 windows at stride 2 that tile whole pairs of input rows (W = 2*OW, no
#   padding) are pooled as flat rows instead (_flat_plane): average pooling
#   always, max pooling where rows are shorter than two vectors.
# * Max pooling starts from the first in-bounds element with value -inf and
#   takes an element when `value > max or value is NaN` (PyTorch's rule):
#   ties keep the first maximum, a NaN wins (the last NaN, if several), and
#   an all -inf window still gets the index of a real element. Indices are
#   flat positions h*W + w in the plane.
# * The gradients zero their plane of grad_in themselves (it is then in cache
#   for the accumulation), so grad_in may be uninitialised memory.
# * The max-pool gradient routes grad_out[p] to indices[p], bounds-checking
#   each index; out-of-range ones are counted and skipped, never written.
# * Average pooling divides by the window area clipped to the padded input
#   (count_include_pad) or to the input itself; an empty window yields 0. Its
#   gradient spreads grad_out / divisor over the window. Both multiply by
#   1 / divisor (within an ulp of the quotient): a division by a subnormal
#   value took 1.6-1.8x the time of a normal one, a multiplication none.
#
# Compiler directives: boundscheck=False, wraparound=False, cdivision=True,
# initializedcheck=False (set in setup.py).

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from libc.math cimport INFINITY
from libc.stdint cimport int64_t


cdef enum:
    FLAT_BYTES = 16384  # most outputs of one pass of _flat_plane


cdef extern from "_isa.h":
    enum:
        FASTCONV_VEC_F32  # lanes of a SIMD vector of float32
        FASTCONV_VEC_F64  # ... and of float64
        FASTCONV_F64_INDEX_SIMD  # whether float64 max-pool indices vectorise


cdef struct Pool2d:
    Py_ssize_t H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw


include "_pool_rows.pxi"
include "_pool_flat.pxi"
include "_pool_max.pxi"
include "_pool_avg.pxi"


cdef Pool2d _geometry(Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                      tuple args):
    cdef Pool2d p
    p.H, p.W, p.OH, p.OW = H, W, OH, OW
    p.KH, p.KW, p.sh, p.sw, p.ph, p.pw, p.dh, p.dw = args
    return p


# -- entry points: parallel over planes ----------------------------------------


def blocking():
    """The vector facts of this build, for fastconv._plan: lanes per itemsize,
    and whether float64 max-pool indices vectorise."""
    return dict(VEC={4: FASTCONV_VEC_F32, 8: FASTCONV_VEC_F64},
                F64_INDEX_SIMD=bool(FASTCONV_F64_INDEX_SIMD))


cdef Py_ssize_t _row_bands(Py_ssize_t planes, Py_ssize_t OH, int n_threads) noexcept nogil:
    """Bands of output rows per plane for the forward's items: 1, or where
    planes are fewer than the threads, enough for two items per thread."""
    if planes == 0 or planes >= n_threads:
        return 1
    return max(1, min(OH, _ceil_div(2 * n_threads, planes)))


cdef inline bint _taps_fit_int(const Pool2d* p) noexcept nogil:
    """Whether the offsets kh*dh*W + kw*dw of a window's in-bounds taps fit
    in an int: the rows they span (at most the padded input's) times W."""
    cdef Py_ssize_t limit = 1 << 31
    return min((p.KH - 1) * p.dh + 1, p.H + p.ph) * p.W < limit


def max_pool2d_forward(const floating[:, :, ::1] x,      # IN  (planes, H, W)
                       floating[:, :, ::1] out,          # OUT (planes, OH, OW)
                       int64_t[:, :, ::1] indices,       # OUT (planes, OH, OW) or (0, 0, 0)
                       tuple geometry,                   # (kH, kW, sh, sw, ph, pw, dh, dw)
                       str path, int n_threads):
    """`path` (chosen by fastconv._plan): "flat" (2x2 windows at stride 2 that
    tile pairs of rows), "rows" (a row of outputs at a time; with indices,
    windows whose taps lie fewer than 2**31 elements apart) or "windows"
    (one output at a time)."""
    cdef Pool2d p = _geometry(x.shape[1], x.shape[2], out.shape[1], out.shape[2], geometry)
    cdef bint want_indices = indices.shape[0] > 0
    cdef Py_ssize_t planes = x.shape[0], nb = _row_bands(planes, p.OH, n_threads)
    cdef Py_ssize_t R = _ceil_div(p.OH, nb), item, c, oh0
    cdef int* taps = NULL
    cdef floating* split = NULL
    # int tap offsets (the rows path with indices) need the window to fit in an int
    cdef bint use_taps = want_indices and path == "rows"
    cdef bint windows = path == "windows"
    cdef Py_ssize_t vl = FASTCONV_VEC_F32 if floating is float else FASTCONV_VEC_F64
    cdef Py_ssize_t band = _flat_band(&p, vl, sizeof(floating)), n_failed = 0
    cdef Py_ssize_t n_flat = max(2 * band * p.OW, 1)
    cdef int64_t* uidx = NULL
    if path not in ("flat", "rows", "windows"):
        raise ValueError(f"unknown max-pool path {path!r}")
    if use_taps and not _taps_fit_int(&p):
        raise ValueError("the rows path with indices needs windows of fewer than 2**31 elements")
    if path == "flat":
        with nogil, parallel(num_threads=n_threads):
            split = <floating*>malloc(n_flat * sizeof(floating))
            uidx = <int64_t*>malloc(n_flat * sizeof(int64_t)) if want_indices else NULL
            for c in prange(x.shape[0], schedule='static'):
                if split == NULL or (want_indices and uidx == NULL):
                    n_failed += 1
                    continue
                _flat_plane(&x[c, 0, 0], &p, &out[c, 0, 0],
                            &indices[c, 0, 0] if want_indices else NULL, band, split, uidx,
                            False)
            free(uidx)
            free(split)
    else:
        with nogil, parallel(num_threads=n_threads):
            taps = <int*>malloc(max(p.OW, 1) * sizeof(int)) if use_taps else NULL
            split = <floating*>malloc(6 * (p.OW + 1) * sizeof(floating))
            for item in prange(planes * nb, schedule='static'):
                if split == NULL or (use_taps and taps == NULL):
                    n_failed += 1
                    continue
                c = item // nb
                oh0 = item % nb * R
                max_pool_plane(&x[c, 0, 0], &out[c, 0, 0],
                               &indices[c, 0, 0] if want_indices else NULL, &p, oh0,
                               min(oh0 + R, p.OH), taps, split, windows)
            free(taps)
            free(split)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def max_pool_backward(const floating[:, ::1] grad_out,   # IN  (planes, OH*OW)
                      const int64_t[:, ::1] indices,     # IN  (planes, OH*OW)
                      floating[:, ::1] grad_in,          # OUT (planes, H*W)
                      int n_threads):
    """Route grad_out to the recorded argmax positions; returns the number of
    out-of-range indices, which are skipped."""
    cdef Py_ssize_t c, bad = 0
    for c in prange(grad_out.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        bad += max_pool_grad_plane(&grad_out[c, 0], &indices[c, 0], grad_out.shape[1],
                                   &grad_in[c, 0], grad_in.shape[1])
    return bad


def avg_pool2d_forward(const floating[:, :, ::1] x,      # IN  (planes, H, W)
                       floating[:, :, ::1] out,          # OUT (planes, OH, OW)
                       tuple geometry,                   # (kH, kW, sh, sw, ph, pw, 1, 1)
                       bint count_include_pad, str path, int n_threads):
    """`path` (chosen by fastconv._plan): "flat" (2x2 windows at stride 2 that
    tile pairs of rows) or "rows"."""
    cdef Pool2d p = _geometry(x.shape[1], x.shape[2], out.shape[1], out.shape[2], geometry)
    cdef Py_ssize_t planes = x.shape[0], nb = _row_bands(planes, p.OH, n_threads)
    cdef Py_ssize_t R = _ceil_div(p.OH, nb), item, c, oh0, n_failed = 0
    cdef floating* split = NULL
    cdef Py_ssize_t vl = FASTCONV_VEC_F32 if floating is float else FASTCONV_VEC_F64
    cdef Py_ssize_t band = _flat_band(&p, vl, sizeof(floating))
    if path not in ("flat", "rows"):
        raise ValueError(f"unknown average-pool path {path!r}")
    if path == "flat":
        with nogil, parallel(num_threads=n_threads):
            split = <floating*>malloc(max(2 * band * p.OW, 1) * sizeof(floating))
            for c in prange(x.shape[0], schedule='static'):
                if split == NULL:
                    n_failed += 1
                    continue
                _flat_plane(&x[c, 0, 0], &p, &out[c, 0, 0], NULL, band, split, NULL, True)
            free(split)
    else:
        with nogil, parallel(num_threads=n_threads):
            split = <floating*>malloc(6 * (p.OW + 1) * sizeof(floating))
            for item in prange(planes * nb, schedule='static'):
                if split == NULL:
                    n_failed += 1
                    continue
                c = item // nb
                oh0 = item % nb * R
                avg_pool_plane(&x[c, 0, 0], &out[c, 0, 0], &p, oh0, min(oh0 + R, p.OH),
                               count_include_pad, split)
            free(split)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def avg_pool2d_backward(const floating[:, :, ::1] grad_out,  # IN  (planes, OH, OW)
                        floating[:, :, ::1] grad_in,         # OUT (planes, H, W)
                        tuple geometry,                      # (kH, kW, sh, sw, ph, pw, 1, 1)
                        bint count_include_pad, str path, int n_threads):
    """`path` (chosen by fastconv._plan): "tiled" (the windows tile the plane:
    kernel = stride, no padding) or "rows"."""
    cdef Pool2d p = _geometry(grad_in.shape[1], grad_in.shape[2], grad_out.shape[1],
                              grad_out.shape[2], geometry)
    cdef Py_ssize_t c, n_failed = 0
    cdef floating* scratch = NULL
    cdef bint tiled = path == "tiled"
    if path not in ("tiled", "rows"):
        raise ValueError(f"unknown average-pool gradient path {path!r}")
    with nogil, parallel(num_threads=n_threads):
        scratch = <floating*>malloc((p.OW + p.W + 2) * sizeof(floating))
        for c in prange(grad_in.shape[0], schedule='static'):
            if scratch == NULL:
                n_failed += 1
                continue
            avg_pool_grad_plane(&grad_out[c, 0, 0], &grad_in[c, 0, 0], &p, count_include_pad,
                                tiled, scratch)
        free(scratch)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")
