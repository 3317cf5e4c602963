# 2x2 pooling at stride 2 over whole pairs of input rows, as flat rows
# (_flat_plane). Included by _pool.pxi.

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
    """A plane of 2x2 windows at stride 2 that tile whole pairs of input rows
    (W = 2*OW, no padding: fastconv._plan's "flat" path), `band` rows of
    outputs at a time, each band
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
