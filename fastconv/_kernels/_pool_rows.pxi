# Pooling a row of outputs at a time: the window of one output (the edges),
# the interior columns, one pass per tap, and the unrolled square windows
# (_fixed_row). Included by _pool.pxi.

cdef inline Py_ssize_t _first_valid(Py_ssize_t start, Py_ssize_t d) noexcept nogil:
    """Smallest start + m*d >= 0."""
    if start >= 0:
        return start
    return start + ((-start + d - 1) // d) * d


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a."""
    return -((-a) // b) if a < 0 else (a + b - 1) // b


cdef void _max_window(const floating* x, const Pool2d* p, Py_ssize_t oh,
                      Py_ssize_t ow, floating* out, int64_t* indices) noexcept nogil:
    """One output, scanning the in-bounds taps of its window row-major (used at
    the edges). The taps before the input are skipped by arithmetic, not one
    by one: a window of 2**31 taps mostly in the padding costs nothing. Not
    inline: inlined at its four call sites, it kept gcc 12 from inlining
    _fixed_row's unrolled rows into max_pool_plane, and 2x2 max pooling at
    stride 2 ran 18x slower."""
    cdef Py_ssize_t kh, kw, ih, iw, best
    cdef Py_ssize_t hs = oh * p.sh - p.ph, ws = ow * p.sw - p.pw
    cdef Py_ssize_t kh0 = _ceil_div(-hs, p.dh) if hs < 0 else 0
    cdef Py_ssize_t kw0 = _ceil_div(-ws, p.dw) if ws < 0 else 0
    cdef floating v, m = -INFINITY
    best = _first_valid(hs, p.dh) * p.W + _first_valid(ws, p.dw)
    for kh in range(kh0, p.KH):
        ih = hs + kh * p.dh
        if ih >= p.H:
            break
        for kw in range(kw0, p.KW):
            iw = ws + kw * p.dw
            if iw >= p.W:
                break
            v = x[ih * p.W + iw]
            if v > m or v != v:
                m = v
                best = ih * p.W + iw
    out[oh * p.OW + ow] = m
    if indices != NULL:
        indices[oh * p.OW + ow] = best


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
                            const bint split, const bint avg, floating scale) noexcept nogil:
    """A row of outputs whose K x K windows (stride S, no dilation) lie inside
    the input, whose rows are W apart: the maximum, with idx[ow] (unless NULL)
    = base + ow*S + the winning tap's offset, or with `avg` the sum times
    `scale` (1 / the divisor: a division by subnormal sums took 1.6-1.8x
    the time of normal ones, a multiplication none).
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
            o[ow] = m * scale
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
                                  floating scale) noexcept nogil:
    """_row_fixed over [lo, hi). A row of at least two vectors is done in
    whole vectors: a multiple of `vl` outputs, then the last `vl` again
    (recomputing a few outputs, with the same result) instead of the scalar
    remainder loop, whose data-dependent branches cost as much as the vector
    part on rows of tens of outputs (1.5-2x on 55 outputs in measurements)."""
    cdef Py_ssize_t vl = FASTCONV_VEC_F32 if floating is float else FASTCONV_VEC_F64
    cdef Py_ssize_t n = (hi - lo) // vl * vl
    if hi - lo < 2 * vl:
        n = hi - lo
    _row_fixed(x0, x1, ld, W, o, idx, base, lo, lo + n, K, S, split, avg, scale)
    if lo + n < hi:
        _row_fixed(x0, x1, ld, W, o, idx, base, hi - vl, hi, K, S, split, avg, scale)


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
                            const bint avg, floating scale) noexcept nogil:
    """Outputs [lo, hi) of the row whose windows start at input row hs, all of
    whose window rows are inside the input (see _row_fixed). `split` is
    scratch for 6*(OW + 1) values."""
    cdef Py_ssize_t kh, ld = p.OW + 1, base = hs * p.W - p.pw
    cdef const floating* xr = x + base
    if p.KH == 3 and p.sw == 2:
        for kh in range(3):
            _deinterleave(xr + kh * p.W, split + kh * ld, split + (3 + kh) * ld, lo, hi)
        _row_fixed_tiled(split, split + 3 * ld, ld, p.W, o, idx, base, lo, hi, 3, 2, True,
                         avg, scale)
    elif p.KH == 2 and p.sw == 2:
        _row_fixed_tiled(xr, NULL, p.W, p.W, o, idx, base, lo, hi, 2, 2, False, avg, scale)
    elif p.KH == 2:
        _row_fixed_tiled(xr, NULL, p.W, p.W, o, idx, base, lo, hi, 2, 1, False, avg, scale)
    else:
        _row_fixed_tiled(xr, NULL, p.W, p.W, o, idx, base, lo, hi, 3, 1, False, avg, scale)
