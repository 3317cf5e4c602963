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
# kernel for one plane. A plane of the output (forward) or of the input
# gradient (backward) is written by exactly one thread, so the max-pool
# gradient can accumulate where windows overlap without races, and the
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
#   gradient spreads grad_out / divisor over the window.
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


cdef inline Py_ssize_t _first_valid(Py_ssize_t start, Py_ssize_t d) noexcept nogil:
    """Smallest start + m*d >= 0."""
    if start >= 0:
        return start
    return start + ((-start + d - 1) // d) * d


cdef inline void _max_window(const floating* x, const Pool2d* p, Py_ssize_t oh,
                             Py_ssize_t ow, floating* out, int64_t* indices) noexcept nogil:
    """One output, scanning its window with bounds tests (used at the edges)."""
    cdef Py_ssize_t kh, kw, ih, iw, best
    cdef Py_ssize_t hs = oh * p.sh - p.ph, ws = ow * p.sw - p.pw
    cdef floating v, m = -INFINITY
    best = _first_valid(hs, p.dh) * p.W + _first_valid(ws, p.dw)
    for kh in range(p.KH):
        ih = hs + kh * p.dh
        if ih < 0:
            continue
        if ih >= p.H:
            break
        for kw in range(p.KW):
            iw = ws + kw * p.dw
            if iw < 0:
                continue
            if iw >= p.W:
                break
            v = x[ih * p.W + iw]
            if v > m or v != v:
                m = v
                best = ih * p.W + iw
    out[oh * p.OW + ow] = m
    if indices != NULL:
        indices[oh * p.OW + ow] = best


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a."""
    return -((-a) // b) if a < 0 else (a + b - 1) // b


cdef inline void _interior_columns(const Pool2d* p, Py_ssize_t* lo,
                                   Py_ssize_t* hi) noexcept nogil:
    """The output columns [lo, hi) whose windows lie inside the input."""
    lo[0] = min(_ceil_div(p.pw, p.sw), p.OW)
    hi[0] = max(lo[0], min(_ceil_div(p.W - (p.KW - 1) * p.dw + p.pw, p.sw), p.OW))


cdef inline void _max_row(const floating* xr, floating* m, int* taps, int tap,
                          Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t sw) noexcept nogil:
    """One tap over a row of outputs: m[ow] takes xr[ow*sw] if greater or NaN,
    and taps[ow] (unless NULL) takes `tap` with it. Branch-free, so it vectorises."""
    cdef Py_ssize_t ow
    cdef floating v
    cdef bint take
    if taps == NULL:
        for ow in range(lo, hi):
            v = xr[ow * sw]
            take = (v > m[ow]) | (v != v)
            m[ow] = v if take else m[ow]
    else:
        for ow in range(lo, hi):
            v = xr[ow * sw]
            take = (v > m[ow]) | (v != v)
            m[ow] = v if take else m[ow]
            taps[ow] = tap if take else taps[ow]


cdef inline floating _tap(const floating* x0, const floating* x1, Py_ssize_t ld, Py_ssize_t ow,
                          int kh, int kw, const int S, const bint split) noexcept nogil:
    """Tap (kh, kw) of output ow's window for _row_fixed."""
    if not split:
        return x0[kh * ld + ow * S + kw]
    return (x0 if kw % 2 == 0 else x1)[kh * ld + ow + kw // 2]


cdef inline void _row_fixed(const floating* x0, const floating* x1, Py_ssize_t ld,
                            Py_ssize_t W, floating* o, int64_t* idx, Py_ssize_t base,
                            Py_ssize_t lo, Py_ssize_t hi, const int K, const int S,
                            const bint split, const bint avg, floating divisor) noexcept nogil:
    """A row of outputs whose K x K windows (stride S, no dilation) lie inside
    the input, whose rows are W apart: the maximum, with idx[ow] (unless NULL)
    = base + ow*S + the winning tap's offset, or with `avg` the sum / divisor.
    Called with literal K, S, split and avg, so the compiler unrolls the
    window and vectorises over ow; the taps are visited in the row-major order
    of the edge loops (_max_window, avg_pool_plane), so the results agree
    bitwise.

    Tap (kh, kw) of output ow is x0[kh*ld + ow*S + kw], or with `split` (S =
    2) the input's even and odd columns, de-interleaved into rows ld apart:
    x0[kh*ld + ow + kw/2] for even kw, x1[...] for odd. A stride-2 pass that
    reads an even column past the pair it loads (K = 3) makes gcc peel the
    last vector iteration into scalar code; contiguous rows do not."""
    cdef Py_ssize_t ow
    cdef int kh, kw
    cdef int best32            # the winning tap's offset, in an integer as wide
    cdef int64_t best64        # as the data, so that compare and select vectorise
    cdef floating v, m
    if avg:
        for ow in range(lo, hi):
            m = 0
            for kh in range(K):
                for kw in range(K):
                    m = m + _tap(x0, x1, ld, ow, kh, kw, S, split)
            o[ow] = m / divisor
        return
    if idx == NULL:
        for ow in range(lo, hi):
            m = _tap(x0, x1, ld, ow, 0, 0, S, split)
            for kh in range(K):
                for kw in range(K):
                    if kh > 0 or kw > 0:
                        v = _tap(x0, x1, ld, ow, kh, kw, S, split)
                        m = v if (v > m) | (v != v) else m
            o[ow] = m
        return
    for ow in range(lo, hi):
        m = _tap(x0, x1, ld, ow, 0, 0, S, split)
        best32 = best64 = 0
        for kh in range(K):
            for kw in range(K):
                if kh > 0 or kw > 0:
                    v = _tap(x0, x1, ld, ow, kh, kw, S, split)
                    if floating is float:
                        best32 = <int>(kh * W + kw) if (v > m) | (v != v) else best32
                    else:
                        best64 = kh * W + kw if (v > m) | (v != v) else best64
                    m = v if (v > m) | (v != v) else m
        o[ow] = m
        idx[ow] = base + ow * S + (best32 if floating is float else best64)


cdef inline void _row_fixed_tiled(const floating* x0, const floating* x1, Py_ssize_t ld,
                                  Py_ssize_t W, floating* o, int64_t* idx, Py_ssize_t base,
                                  Py_ssize_t lo, Py_ssize_t hi, const int K, const int S,
                                  const bint split, const bint avg,
                                  floating divisor) noexcept nogil:
    """_row_fixed over [lo, hi). A row of at least two vectors is done in
    whole vectors: a multiple of `vl` outputs, then the last `vl` again
    (recomputing a few outputs, with the same result) instead of the scalar
    remainder loop, whose data-dependent branches cost as much as the vector
    part on rows of tens of outputs (1.5-2x on 55 outputs in measurements)."""
    cdef Py_ssize_t vl = FASTCONV_VEC_F32 if floating is float else FASTCONV_VEC_F64
    cdef Py_ssize_t n = (hi - lo) // vl * vl
    if hi - lo < 2 * vl:
        n = hi - lo
    _row_fixed(x0, x1, ld, W, o, idx, base, lo, lo + n, K, S, split, avg, divisor)
    if lo + n < hi:
        _row_fixed(x0, x1, ld, W, o, idx, base, hi - vl, hi, K, S, split, avg, divisor)


cdef inline void _deinterleave(const floating* xr, floating* ev, floating* od,
                               Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """ev[j] = xr[2j] for j in [lo, hi], od[j] = xr[2j + 1] for j in [lo, hi)."""
    cdef Py_ssize_t j
    for j in range(lo, hi):
        ev[j] = xr[2 * j]
        od[j] = xr[2 * j + 1]
    ev[hi] = xr[2 * hi]


cdef inline bint _has_fixed_rows(const Pool2d* p) noexcept nogil:
    """Square 2x2 and 3x3 windows at stride 1 or 2, undilated: _fixed_row."""
    return (p.KH == p.KW and (p.KH == 2 or p.KH == 3) and (p.sw == 1 or p.sw == 2)
            and p.dh == 1 and p.dw == 1)


cdef inline void _fixed_row(const floating* x, const Pool2d* p, Py_ssize_t hs, Py_ssize_t lo,
                            Py_ssize_t hi, floating* o, int64_t* idx, floating* split,
                            const bint avg, floating divisor) noexcept nogil:
    """Outputs [lo, hi) of the row whose windows start at input row hs, all of
    whose window rows are inside the input (see _row_fixed). `split` is
    scratch for 6*(OW + 1) values."""
    cdef Py_ssize_t kh, ld = p.OW + 1, base = hs * p.W - p.pw
    cdef const floating* xr = x + base
    if p.KH == 3 and p.sw == 2:
        for kh in range(3):
            _deinterleave(xr + kh * p.W, split + kh * ld, split + (3 + kh) * ld, lo, hi)
        _row_fixed_tiled(split, split + 3 * ld, ld, p.W, o, idx, base, lo, hi, 3, 2, True,
                         avg, divisor)
    elif p.KH == 2 and p.sw == 2:
        _row_fixed_tiled(xr, NULL, p.W, p.W, o, idx, base, lo, hi, 2, 2, False, avg, divisor)
    elif p.KH == 2:
        _row_fixed_tiled(xr, NULL, p.W, p.W, o, idx, base, lo, hi, 2, 1, False, avg, divisor)
    else:
        _row_fixed_tiled(xr, NULL, p.W, p.W, o, idx, base, lo, hi, 3, 1, False, avg, divisor)


cdef inline bint _tiles_row_pairs(const Pool2d* p) noexcept nogil:
    """2x2 windows at stride 2 that tile whole pairs of input rows (W = 2*OW,
    no padding): see _flat_plane."""
    return (p.KH == 2 and p.KW == 2 and p.sh == 2 and p.sw == 2 and p.ph == 0
            and p.pw == 0 and p.dh == 1 and p.dw == 1 and p.W == 2 * p.OW
            and p.H >= 2 * p.OH)


cdef void _avg_flat(const floating* x, Py_ssize_t W, floating* u, Py_ssize_t n) noexcept nogil:
    """u[t] = the average of the 2x2 window at x[2t] (rows W apart), summed
    in the taps' row-major order, as by _row_fixed. The literal divisor
    compiles to an exact multiply: the division by a variable in
    _row_fixed took most of its time."""
    cdef Py_ssize_t t
    cdef floating m
    for t in range(n):
        m = 0
        m = m + x[2 * t]
        m = m + x[2 * t + 1]
        m = m + x[2 * t + W]
        m = m + x[2 * t + W + 1]
        u[t] = m / 4


cdef void _max_flat(const floating* x, Py_ssize_t W, floating* u, int64_t* uidx,
                    Py_ssize_t base, Py_ssize_t n) noexcept nogil:
    """u[t] = the maximum of the 2x2 window at x[2t] (rows W apart), by
    _row_fixed's rule in its order, and uidx[t] (unless NULL) = base + its
    flat index."""
    cdef Py_ssize_t t
    cdef floating m, v
    cdef bint take
    cdef int best32             # as wide as the data, as in _row_fixed
    cdef int64_t best64
    if uidx == NULL:
        for t in range(n):
            m = x[2 * t]
            v = x[2 * t + 1]
            m = v if (v > m) | (v != v) else m
            v = x[2 * t + W]
            m = v if (v > m) | (v != v) else m
            v = x[2 * t + W + 1]
            m = v if (v > m) | (v != v) else m
            u[t] = m
        return
    for t in range(n):
        m = x[2 * t]
        best32 = best64 = 0
        v = x[2 * t + 1]
        take = (v > m) | (v != v)
        if floating is float:
            best32 = 1 if take else best32
        else:
            best64 = 1 if take else best64
        m = v if take else m
        v = x[2 * t + W]
        take = (v > m) | (v != v)
        if floating is float:
            best32 = <int> W if take else best32
        else:
            best64 = W if take else best64
        m = v if take else m
        v = x[2 * t + W + 1]
        take = (v > m) | (v != v)
        if floating is float:
            best32 = <int> W + 1 if take else best32
        else:
            best64 = W + 1 if take else best64
        m = v if take else m
        u[t] = m
        uidx[t] = base + 2 * t + (best32 if floating is float else best64)


cdef inline void _even_rows(const void* src, void* dst, Py_ssize_t rows,
                            Py_ssize_t row_bytes) noexcept nogil:
    """dst row r = src row 2r."""
    cdef Py_ssize_t r
    for r in range(rows):
        memcpy(<char*> dst + r * row_bytes, <const char*> src + 2 * r * row_bytes, row_bytes)


cdef void _flat_plane(const floating* x, const Pool2d* p, floating* out, int64_t* indices,
                      Py_ssize_t band, floating* u, int64_t* uidx, bint avg) noexcept nogil:
    """A _tiles_row_pairs plane, `band` rows of outputs at a time, each band
    as one flat row: with W = 2*OW, output (oh, ow)'s window starts at x[2t]
    for t = 2*oh*OW + ow, so t = 0 .. (2*band - 1)*OW is one long vectorised
    loop (_avg_flat, _max_flat) into `u` (and `uidx`), whose even rows of OW
    are the outputs; the odd rows, whose windows straddle two pairs of input
    rows, are discarded. Row by row, rows shorter than two vectors ran in the
    scalar remainder loop (LeNet's 14 outputs in float32)."""
    cdef Py_ssize_t b, oh0, rows, n
    for b in range(_ceil_div(p.OH, band)):
        oh0 = b * band
        rows = min(band, p.OH - oh0)
        n = (2 * rows - 1) * p.OW
        if avg:
            _avg_flat(x + 2 * oh0 * p.W, p.W, u, n)
        else:
            _max_flat(x + 2 * oh0 * p.W, p.W, u, uidx, 2 * oh0 * p.W, n)
        _even_rows(u, out + oh0 * p.OW, rows, p.OW * sizeof(floating))
        if indices != NULL:
            _even_rows(uidx, indices + oh0 * p.OW, rows, p.OW * sizeof(int64_t))


cdef Py_ssize_t _flat_band(const Pool2d* p, Py_ssize_t vl, Py_ssize_t itemsize) noexcept nogil:
    """Rows of outputs per pass of _flat_plane: as many as fill FLAT_BYTES,
    or one where a row is two vectors long."""
    if p.OW >= 2 * vl:
        return 1
    return max(1, FLAT_BYTES // (2 * p.OW * itemsize))


cdef void max_pool_plane(const floating* x, floating* out, int64_t* indices,
                         const Pool2d* p, int* taps, floating* split) noexcept nogil:
    """`taps` is scratch for OW ints (or NULL if the plane has >= 2**31 elements
    or no indices are wanted), `split` for 6*(OW + 1) values (3x3 windows at
    stride 2 de-interleave their rows into it; see _row_fixed).

    Columns whose windows lie inside the input are done a row of outputs at a
    time: by _fixed_row for the square windows it unrolls (when all of the
    window's rows are inside the input), otherwise one pass over the row per
    tap of the window, a compare-and-select the compiler vectorises (the
    running maximum lives in the output row; with indices, the winning tap's
    offset in `taps`). The scan order per output is the same row-major order
    as _max_window's, so the results are identical. Edge columns go through
    _max_window.
    """
    cdef Py_ssize_t oh, ow, kh, kw, kh0, kh1, hs, lo, hi
    cdef const floating* xr
    cdef floating* m
    cdef int64_t* idx
    cdef int tap
    cdef bint fixed = _has_fixed_rows(p)
    if floating is double:
        fixed = fixed and (indices == NULL or FASTCONV_F64_INDEX_SIMD)
    _interior_columns(p, &lo, &hi)
    if indices != NULL and taps == NULL:
        lo = hi = 0                         # every column through _max_window
        fixed = False
    for oh in range(p.OH):
        hs = oh * p.sh - p.ph
        kh0 = max(_ceil_div(-hs, p.dh), 0)
        kh1 = min(_ceil_div(p.H - hs, p.dh), p.KH)
        if kh0 >= kh1:                      # no row in bounds: keep the edge rules
            for ow in range(p.OW):
                _max_window(x, p, oh, ow, out, indices)
            continue
        for ow in range(lo):
            _max_window(x, p, oh, ow, out, indices)
        for ow in range(hi, p.OW):
            _max_window(x, p, oh, ow, out, indices)
        m = out + oh * p.OW
        idx = indices + oh * p.OW if indices != NULL else NULL
        if fixed and kh0 == 0 and kh1 == p.KH and lo < hi:
            _fixed_row(x, p, hs, lo, hi, m, idx, split, False, 0)
            continue
        for ow in range(lo, hi):
            m[ow] = -INFINITY
        if taps != NULL:
            for ow in range(lo, hi):
                taps[ow] = <int>(kh0 * p.dh * p.W)
        for kh in range(kh0, kh1):
            for kw in range(p.KW):
                xr = x + (hs + kh * p.dh) * p.W + kw * p.dw - p.pw
                tap = <int>(kh * p.dh * p.W + kw * p.dw)
                # constant strides let the compiler vectorise the strided loads
                if p.sw == 1:
                    _max_row(xr, m, taps, tap, lo, hi, 1)
                elif p.sw == 2:
                    _max_row(xr, m, taps, tap, lo, hi, 2)
                else:
                    _max_row(xr, m, taps, tap, lo, hi, p.sw)
        if idx == NULL:
            continue
        for ow in range(lo, hi):
            idx[ow] = hs * p.W - p.pw + ow * p.sw + taps[ow]


cdef Py_ssize_t max_pool_grad_plane(const floating* grad_out, const int64_t* indices,
                                    Py_ssize_t n_out, floating* grad_in,
                                    Py_ssize_t n_in) noexcept nogil:
    """Zeroes the plane of grad_in, then routes grad_out into it (the plane is
    still in cache for the scatter). Returns the number of out-of-range
    indices, which are skipped."""
    cdef Py_ssize_t q, bad = 0
    cdef int64_t i
    memset(grad_in, 0, n_in * sizeof(floating))
    for q in range(n_out):
        i = indices[q]
        if 0 <= i < n_in:
            grad_in[i] += grad_out[q]
        else:
            bad += 1
    return bad


cdef struct _Window:
    Py_ssize_t h0, h1, w0, w1, divisor


cdef inline _Window _avg_window(Py_ssize_t oh, Py_ssize_t ow, const Pool2d* p,
                                bint count_include_pad) noexcept nogil:
    """The window of output (oh, ow) clipped to the input, and its divisor."""
    cdef _Window win
    cdef Py_ssize_t hs = oh * p.sh - p.ph, ws = ow * p.sw - p.pw
    cdef Py_ssize_t he = min(hs + p.KH, p.H + p.ph), we = min(ws + p.KW, p.W + p.pw)
    win.h0 = max(hs, 0)
    win.h1 = min(he, p.H)
    win.w0 = max(ws, 0)
    win.w1 = min(we, p.W)
    if count_include_pad:
        win.divisor = (he - hs) * (we - ws)
    else:
        win.divisor = (win.h1 - win.h0) * (win.w1 - win.w0)
    return win


cdef inline void _sum_row(const floating* xr, floating* s, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t sw) noexcept nogil:
    """One tap over a row of outputs: s[ow] += xr[ow*sw]."""
    cdef Py_ssize_t ow
    for ow in range(lo, hi):
        s[ow] += xr[ow * sw]


cdef inline void _spread_row(const floating* g, floating* gr, Py_ssize_t lo, Py_ssize_t hi,
                             Py_ssize_t sw) noexcept nogil:
    """One tap over a row of outputs: gr[ow*sw] += g[ow]."""
    cdef Py_ssize_t ow
    for ow in range(lo, hi):
        gr[ow * sw] += g[ow]


cdef void avg_pool_plane(const floating* x, floating* out, const Pool2d* p,
                         bint count_include_pad, floating* split) noexcept nogil:
    """Interior columns (see _interior_columns) share their rows and divisor
    within an output row, so they are summed a row at a time (_fixed_row, or
    one vectorised pass per tap), in the same order as the per-output loop of
    the edges. `split` is scratch for _fixed_row."""
    cdef Py_ssize_t oh, ow, ih, iw, kw, lo, hi
    cdef _Window win
    cdef floating s
    cdef floating* o
    cdef const floating* xr
    cdef bint fixed = _has_fixed_rows(p)
    _interior_columns(p, &lo, &hi)
    for oh in range(p.OH):
        o = out + oh * p.OW
        for ow in range(p.OW):
            if lo <= ow < hi:
                continue
            win = _avg_window(oh, ow, p, count_include_pad)
            if win.h0 >= win.h1 or win.w0 >= win.w1:
                o[ow] = 0
                continue
            s = 0
            for ih in range(win.h0, win.h1):
                for iw in range(win.w0, win.w1):
                    s += x[ih * p.W + iw]
            o[ow] = s / win.divisor
        if lo == hi:
            continue
        win = _avg_window(oh, lo, p, count_include_pad)
        if fixed and win.h1 - win.h0 == p.KH:
            _fixed_row(x, p, win.h0, lo, hi, o, NULL, split, True, win.divisor)
            continue
        for ow in range(lo, hi):
            o[ow] = 0
        for ih in range(win.h0, win.h1):
            for kw in range(p.KW):
                xr = x + ih * p.W + kw - p.pw
                if p.sw == 1:
                    _sum_row(xr, o, lo, hi, 1)
                elif p.sw == 2:
                    _sum_row(xr, o, lo, hi, 2)
                else:
                    _sum_row(xr, o, lo, hi, p.sw)
        if win.h0 < win.h1:
            for ow in range(lo, hi):
                o[ow] = o[ow] / win.divisor


cdef void _avg_pool_grad_tiled(const floating* grad_out, floating* grad_in,
                               const Pool2d* p) noexcept nogil:
    """avg_pool_grad_plane for windows that tile the input (kernel = stride,
    no padding, every window inside the input: 2x2 pooling at stride 2, say).
    Each input takes the share of its one window, and the rows of a window
    are equal: the first is written, the others copied, and only the
    uncovered last rows and columns are zeroed. The general way (zero the
    plane, then add each share in) took 2x the time of the max-pool
    gradient."""
    cdef Py_ssize_t oh, ow, kh, kw, c, div = p.KH * p.KW, covered = p.OW * p.KW
    cdef floating g
    cdef floating* row
    cdef const floating* go
    for oh in range(p.OH):
        row = grad_in + oh * p.KH * p.W
        go = grad_out + oh * p.OW
        if p.KW == 2:  # a literal width, which gcc vectorises
            for ow in range(p.OW):
                g = go[ow] / div
                row[2 * ow] = g
                row[2 * ow + 1] = g
        else:
            for ow in range(p.OW):
                g = go[ow] / div
                for kw in range(p.KW):
                    row[ow * p.KW + kw] = g
        for c in range(covered, p.W):
            row[c] = 0
        for kh in range(1, p.KH):
            memcpy(row + kh * p.W, row, p.W * sizeof(floating))
    memset(grad_in + p.OH * p.KH * p.W, 0, (p.H - p.OH * p.KH) * p.W * sizeof(floating))


cdef void avg_pool_grad_plane(const floating* grad_out, floating* grad_in, const Pool2d* p,
                              bint count_include_pad, floating* scratch) noexcept nogil:
    """Zeroes the plane of grad_in, then spreads grad_out over it. `scratch`
    holds OW + W + 2 values (NULL: every column goes the per-output way).

    The interior columns of an output row share their window rows and
    divisor, so their contribution to each of those rows is the same: it is
    spread into a row of scratch once, then added to the KH input rows
    contiguously. Spreading into every input row directly took KH times as
    many strided passes, and 1.2-1.8x the time (2x2 and 3x3 windows at
    stride 2). Those two spread their row in one loop writing even and odd
    columns, which vectorises; other windows take KW passes."""
    cdef Py_ssize_t oh, ow, ih, iw, j, kw, lo, hi, n, c0
    cdef _Window win
    cdef floating g
    cdef floating* gr
    cdef floating* s = scratch
    cdef floating* h = scratch + p.OW + 2 if scratch != NULL else NULL
    if p.KH == p.sh and p.KW == p.sw and p.ph == 0 and p.pw == 0 \
            and p.OH * p.sh <= p.H and p.OW * p.sw <= p.W:
        _avg_pool_grad_tiled(grad_out, grad_in, p)
        return
    memset(grad_in, 0, p.H * p.W * sizeof(floating))
    _interior_columns(p, &lo, &hi)
    if scratch == NULL:
        lo = hi = 0
    n = hi - lo
    c0 = lo * p.sw - p.pw                   # the first input column they touch
    for oh in range(p.OH):
        for ow in range(p.OW):
            if lo <= ow < hi:
                continue
            win = _avg_window(oh, ow, p, count_include_pad)
            if win.h0 >= win.h1 or win.w0 >= win.w1:
                continue
            g = grad_out[oh * p.OW + ow] / win.divisor
            for ih in range(win.h0, win.h1):
                for iw in range(win.w0, win.w1):
                    grad_in[ih * p.W + iw] += g
        if n == 0:
            continue
        win = _avg_window(oh, lo, p, count_include_pad)
        if win.h0 >= win.h1:
            continue
        # s[1 + i] = output lo + i's share, with s[0] = s[n + 1] = 0
        s[0] = s[n + 1] = 0
        for ow in range(lo, hi):
            s[1 + ow - lo] = grad_out[oh * p.OW + ow] / win.divisor
        # h[j] = the sum of the shares of the outputs covering column c0 + j
        if p.sw == 2 and p.KW == 2:
            for j in range(n):
                h[2 * j] = s[1 + j]
                h[2 * j + 1] = s[1 + j]
        elif p.sw == 2 and p.KW == 3:
            for j in range(n):
                h[2 * j] = s[1 + j] + s[j]
                h[2 * j + 1] = s[1 + j]
            h[2 * n] = s[n]
        else:
            for j in range((n - 1) * p.sw + p.KW):
                h[j] = 0
            for kw in range(p.KW):
                if p.sw == 1:
                    _spread_row(s + 1, h + kw, 0, n, 1)
                else:
                    _spread_row(s + 1, h + kw, 0, n, p.sw)
        for ih in range(win.h0, win.h1):
            gr = grad_in + ih * p.W + c0
            for j in range((n - 1) * p.sw + p.KW):
                gr[j] += h[j]


cdef Pool2d _geometry(Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                      tuple args):
    cdef Pool2d p
    p.H, p.W, p.OH, p.OW = H, W, OH, OW
    p.KH, p.KW, p.sh, p.sw, p.ph, p.pw, p.dh, p.dw = args
    return p


# -- entry points: parallel over planes ----------------------------------------


def max_pool2d_forward(const floating[:, :, ::1] x,      # IN  (planes, H, W)
                       floating[:, :, ::1] out,          # OUT (planes, OH, OW)
                       int64_t[:, :, ::1] indices,       # OUT (planes, OH, OW) or (0, 0, 0)
                       tuple geometry,                   # (kH, kW, sh, sw, ph, pw, dh, dw)
                       int n_threads):
    cdef Pool2d p = _geometry(x.shape[1], x.shape[2], out.shape[1], out.shape[2], geometry)
    cdef bint want_indices = indices.shape[0] > 0
    cdef Py_ssize_t c
    cdef int* taps = NULL
    cdef floating* split = NULL
    # int tap offsets need the plane to fit in an int; else the edge path does all
    cdef bint use_taps = want_indices and p.H * p.W < 2**31
    cdef Py_ssize_t vl = FASTCONV_VEC_F32 if floating is float else FASTCONV_VEC_F64
    cdef Py_ssize_t band = _flat_band(&p, vl, sizeof(floating)), n_failed = 0
    cdef Py_ssize_t n_flat = max(2 * band * p.OW, 1)
    cdef int64_t* uidx = NULL
    # rows of two vectors vectorise row by row; float64 indices only where
    # the compare-and-select vectorises (see _row_fixed)
    if (_tiles_row_pairs(&p) and p.OW < 2 * vl and use_taps == want_indices
            and (floating is float or not want_indices or FASTCONV_F64_INDEX_SIMD)):
        with nogil, parallel(num_threads=n_threads):
            split = <floating*>malloc(n_flat * sizeof(floating))
            uidx = <int64_t*>malloc(n_flat * sizeof(int64_t)) if use_taps else NULL
            for c in prange(x.shape[0], schedule='static'):
                if split == NULL or (use_taps and uidx == NULL):
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
            for c in prange(x.shape[0], schedule='static'):
                if split == NULL or (use_taps and taps == NULL):
                    n_failed += 1
                    continue
                max_pool_plane(&x[c, 0, 0], &out[c, 0, 0],
                               &indices[c, 0, 0] if want_indices else NULL, &p, taps, split)
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
                       bint count_include_pad, int n_threads):
    cdef Pool2d p = _geometry(x.shape[1], x.shape[2], out.shape[1], out.shape[2], geometry)
    cdef Py_ssize_t c, n_failed = 0
    cdef floating* split = NULL
    cdef Py_ssize_t vl = FASTCONV_VEC_F32 if floating is float else FASTCONV_VEC_F64
    cdef Py_ssize_t band = _flat_band(&p, vl, sizeof(floating))
    if _tiles_row_pairs(&p):  # at any row length: see _avg_flat
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
            for c in prange(x.shape[0], schedule='static'):
                if split == NULL:
                    n_failed += 1
                    continue
                avg_pool_plane(&x[c, 0, 0], &out[c, 0, 0], &p, count_include_pad, split)
            free(split)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def avg_pool2d_backward(const floating[:, :, ::1] grad_out,  # IN  (planes, OH, OW)
                        floating[:, :, ::1] grad_in,         # OUT (planes, H, W)
                        tuple geometry,                      # (kH, kW, sh, sw, ph, pw, 1, 1)
                        bint count_include_pad, int n_threads):
    cdef Pool2d p = _geometry(grad_in.shape[1], grad_in.shape[2], grad_out.shape[1],
                              grad_out.shape[2], geometry)
    cdef Py_ssize_t c
    cdef floating* scratch = NULL
    with nogil, parallel(num_threads=n_threads):
        scratch = <floating*>malloc((p.OW + p.W + 2) * sizeof(floating))
        for c in prange(grad_in.shape[0], schedule='static'):
            avg_pool_grad_plane(&grad_out[c, 0, 0], &grad_in[c, 0, 0], &p, count_include_pad,
                                scratch)
        free(scratch)
