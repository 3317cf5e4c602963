# Implicit tiles: the padded (phase-split) input copy of a tile of rows x cw
# outputs, the taps' offsets into it, the store of a result block into the
# output, and the adjoint copy back (_unfill_tile). Included by _conv.pxi.

cdef struct _Tiling:
    # The implicit kernels' tiles: R output rows x cw output columns of one
    # image and group (nrt x nct of them per plane), read from a padded copy
    # `xt` of their input, cpb channels at a time (ncb blocks). At stride
    # (sh, sw) the copy is split into nah x naw phases: phase (a, b) holds the
    # input rows oh*sh + a and columns ow*sw + b (padded coordinates), so that
    # every tap reads one phase at unit stride. A phase has R + eh rows of
    # wt = cw + ew values (ps in all); channels are cs apart.
    Py_ssize_t R, cw, eh, ew, wt, nah, naw, ps, cs, nrt, nct, cpb, ncb


cdef struct _Tile:
    # One tile: image n, group g, outputs from (oh0, ow0), rows x cols of
    # them, numbered q = r*wt + c up to npos (columns c >= cols are discarded)
    Py_ssize_t n, g, oh0, ow0, rows, cols, npos


cdef _Tiling _tiling(const Geometry* geo, Py_ssize_t Cg, Py_ssize_t R, Py_ssize_t cw):
    """The tiling for tiles of R x cw outputs."""
    cdef _Tiling t
    cdef Py_ssize_t KK = geo.KH * geo.KW
    t.R, t.cw = R, cw
    t.eh = _phase_extent(geo.KH, geo.dh, geo.sh)
    t.ew = _phase_extent(geo.KW, geo.dw, geo.sw)
    t.wt = cw + t.ew
    t.nah = min(geo.sh, (geo.KH - 1) * geo.dh + 1)
    t.naw = min(geo.sw, (geo.KW - 1) * geo.dw + 1)
    t.ps = (R + t.eh) * t.wt
    t.cs = t.nah * t.naw * t.ps
    t.nrt, t.nct = _ceil_div(geo.OH, R), _ceil_div(geo.OW, cw)
    # K in blocks of whole channels, balanced, each at most about KC deep
    t.cpb = _ceil_div(Cg, _ceil_div(Cg * KK, KC))
    t.ncb = _ceil_div(Cg, t.cpb)
    return t


cdef Py_ssize_t[::1] _tap_offsets(const Geometry* geo, const _Tiling* t, Py_ssize_t n):
    """off[(ci*kH + kh)*kW + kw] = the offset in xt of tap (ci, kh, kw) of a
    channel block, for its cpb*kH*kW taps; n entries, the rest zero."""
    cdef Py_ssize_t[::1] off = np.zeros(n, dtype=np.intp)
    cdef Py_ssize_t ci, kh, kw, i, j
    for ci in range(t.cpb):
        for kh in range(geo.KH):
            for kw in range(geo.KW):
                i = kh * geo.dh
                j = kw * geo.dw
                off[(ci * geo.KH + kh) * geo.KW + kw] = (
                    ci * t.cs + (i % geo.sh * t.naw + j % geo.sw) * t.ps
                    + i // geo.sh * t.wt + j // geo.sw)
    return off


cdef inline _Tile _tile(const Geometry* geo, const _Tiling* t, Py_ssize_t groups,
                        Py_ssize_t item) noexcept nogil:
    cdef _Tile tl
    tl.n = item // (groups * t.nrt * t.nct)
    tl.g = (item // (t.nrt * t.nct)) % groups
    tl.oh0 = (item // t.nct) % t.nrt * t.R
    tl.ow0 = item % t.nct * t.cw
    tl.rows = min(t.R, geo.OH - tl.oh0)
    tl.cols = min(t.cw, geo.OW - tl.ow0)
    tl.npos = (tl.rows - 1) * t.wt + tl.cols
    return tl


cdef void _fill_tile(const floating* x_c, Py_ssize_t nci, const Geometry* geo,
                     const _Tiling* t, const _Tile* tl, floating* xt) noexcept nogil:
    """xt[ci*cs + (a*naw + b)*ps + r*wt + c] = x_pad[ci, (oh0 + r)*sh + a,
    (ow0 + c)*sw + b] for the nci channels from x_c (a channel of one image)
    and the rows the tile reads."""
    # the geometry in locals: through the pointers, it would be reloaded
    # after every memcpy
    cdef Py_ssize_t H = geo.H, sh = geo.sh, sw = geo.sw, xc = geo.xc, xr = geo.xr
    cdef Py_ssize_t wt = t.wt, nrow = tl.rows + t.eh, ih0 = tl.oh0 * sh - geo.ph
    cdef Py_ssize_t ci, a, b, r, ih, iw, lo, hi
    cdef _Range rg
    cdef floating* dst
    for b in range(t.naw):
        iw = tl.ow0 * sw + b - geo.pw
        rg = _run_range(iw, sw, wt, geo.W)
        lo = rg.lo
        hi = rg.hi
        for ci in range(nci):
            for a in range(t.nah):
                for r in range(nrow):
                    dst = xt + ci * t.cs + (a * t.naw + b) * t.ps + r * wt
                    ih = ih0 + r * sh + a
                    if ih < 0 or ih >= H:
                        memset(dst, 0, wt * sizeof(floating))
                    else:
                        _copy_row(dst, x_c + ci * xc + ih * xr + iw, lo, hi, wt, sw)


cdef inline void _store_tile(const floating* ctile, Py_ssize_t ldc, Py_ssize_t rows,
                             Py_ssize_t ncols, Py_ssize_t q, const _Tiling* t,
                             const _Tile* tl, const Geometry* geo, floating* y_n,
                             const floating[::1] bias, Py_ssize_t co, bint first,
                             bint relu) noexcept nogil:
    """Write (first block of K: with the bias; the last of a fused ReLU: with
    max(., 0), see _store_block) or add the tile's positions q ..
    q+ncols of a result block of `rows` output channels from co (rows of
    ctile ldc apart) to image y_n of the output, row by row of the tile; the
    discarded columns are dropped."""
    cdef Py_ssize_t j = 0, r = q // t.wt, c = q % t.wt, run
    while j < ncols:
        run = min(ncols - j, t.wt - c)
        if c < tl.cols:
            _store_block(ctile + j, ldc, rows, min(run, tl.cols - c),
                         y_n + co * geo.yc + (tl.oh0 + r) * geo.yr + tl.ow0 + c, geo.yc,
                         bias, co, first, relu)
        j = j + run
        c = 0
        r = r + 1

cdef void _unfill_tile(const floating* xt, Py_ssize_t nci, const Geometry* geo,
                       const _Tiling* t, const _Tile* tl, floating* g_c) noexcept nogil:
    """The adjoint of _fill_tile: add xt back into the inputs it was copied
    from, for the nci channels from g_c (a channel of grad_in); the padding
    is dropped."""
    cdef Py_ssize_t H = geo.H, sh = geo.sh, sw = geo.sw, xc = geo.xc, xr = geo.xr
    cdef Py_ssize_t wt = t.wt, nrow = tl.rows + t.eh, ih0 = tl.oh0 * sh - geo.ph
    cdef Py_ssize_t ci, a, b, r, ih, iw, c, lo, hi
    cdef _Range rg
    cdef floating* dst
    cdef const floating* src
    for b in range(t.naw):
        iw = tl.ow0 * sw + b - geo.pw
        rg = _run_range(iw, sw, wt, geo.W)
        lo = rg.lo
        hi = rg.hi
        for ci in range(nci):
            for a in range(t.nah):
                for r in range(nrow):
                    ih = ih0 + r * sh + a
                    if ih < 0 or ih >= H:
                        continue
                    src = xt + ci * t.cs + (a * t.naw + b) * t.ps + r * wt
                    dst = g_c + ci * xc + ih * xr + iw
                    if sw == 1:
                        for c in range(lo, hi):
                            dst[c] += src[c]
                    elif sw == 2:  # a constant stride, which gcc vectorises
                        for c in range(lo, hi):
                            dst[2 * c] += src[c]
                    else:
                        for c in range(lo, hi):
                            dst[c * sw] += src[c]
