# Max pooling of one plane, and its gradient. Included by _pool.pxi.

cdef void max_pool_plane(const floating* x, floating* out, int64_t* indices,
                         const Pool2d* p, Py_ssize_t oh0, Py_ssize_t oh1, int* taps,
                         floating* split, bint windows) noexcept nogil:
    """Output rows [oh0, oh1) of a plane. `taps` is scratch for OW ints where
    indices are wanted (a window's taps then lie fewer than 2**31 elements
    apart: _taps_fit_int), `split` for 6*(OW + 1) values (3x3 windows at
    stride 2 de-interleave their rows into it; see _row_fixed). With
    `windows`, every output goes through _max_window (the path for windows
    too tall for int tap offsets).

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
    if windows:
        lo = hi = 0                         # every column through _max_window
        fixed = False
    for oh in range(oh0, oh1):
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
        if lo >= hi:                        # no interior: no pass over the taps
            continue
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
