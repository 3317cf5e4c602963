# Average pooling of one plane, and its gradient. Included by _pool.pxi.

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
                         Py_ssize_t oh0, Py_ssize_t oh1, bint count_include_pad,
                         floating* split) noexcept nogil:
    """Output rows [oh0, oh1) of a plane. Interior columns (see _interior_columns) share their rows and divisor
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
    for oh in range(oh0, oh1):
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
            o[ow] = s * (<floating> 1 / win.divisor)
        if lo == hi:
            continue
        win = _avg_window(oh, lo, p, count_include_pad)
        if fixed and win.h1 - win.h0 == p.KH:
            _fixed_row(x, p, win.h0, lo, hi, o, NULL, split, True, <floating> 1 / win.divisor)
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
                o[ow] = o[ow] * (<floating> 1 / win.divisor)


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
                g = go[ow] * (<floating> 1 / div)
                row[2 * ow] = g
                row[2 * ow + 1] = g
        else:
            for ow in range(p.OW):
                g = go[ow] * (<floating> 1 / div)
                for kw in range(p.KW):
                    row[ow * p.KW + kw] = g
        for c in range(covered, p.W):
            row[c] = 0
        for kh in range(1, p.KH):
            memcpy(row + kh * p.W, row, p.W * sizeof(floating))
    memset(grad_in + p.OH * p.KH * p.W, 0, (p.H - p.OH * p.KH) * p.W * sizeof(floating))


cdef void avg_pool_grad_plane(const floating* grad_out, floating* grad_in, const Pool2d* p,
                              bint count_include_pad, bint tiled,
                              floating* scratch) noexcept nogil:
    """Zeroes the plane of grad_in, then spreads grad_out over it. `scratch`
    holds OW + W + 2 values (NULL: every column goes the per-output way).

    The interior columns of an output row share their window rows and
    divisor, so their contribution to each of those rows is the same: it is
    spread into a row of scratch once, then added to the KH input rows
    contiguously. Spreading into every input row directly took KH times as
    many strided passes, and 1.2-1.8x the time (2x2 and 3x3 windows at
    stride 2). Those two spread their row in one loop writing even and odd
    columns, which vectorises; other windows take KW passes. With `tiled`
    (windows that tile the plane: kernel = stride, no padding) it is
    _avg_pool_grad_tiled instead."""
    cdef Py_ssize_t oh, ow, ih, iw, j, kw, lo, hi, n, c0
    cdef _Window win
    cdef floating g
    cdef floating* gr
    cdef floating* s = scratch
    cdef floating* h = scratch + p.OW + 2 if scratch != NULL else NULL
    if tiled:
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
            g = grad_out[oh * p.OW + ow] * (<floating> 1 / win.divisor)
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
            s[1 + ow - lo] = grad_out[oh * p.OW + ow] * (<floating> 1 / win.divisor)
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
