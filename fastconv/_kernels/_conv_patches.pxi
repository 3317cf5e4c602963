# Patch tiles: im2col (rows of the patch matrix for a tile of positions) and
# its adjoint col2im (the scatter-add of the input gradient). Included by
# _conv.pxi.

cdef void _im2col(const floating* x_g, Py_ssize_t x_image, const Geometry* geo,
                  Py_ssize_t k0, Py_ssize_t kc, const _Run* runs, Py_ssize_t nrun,
                  floating* col) noexcept nogil:
    """Rows k0..k0+kc of one tile of the patch matrix: col[kk*LD + j] is
    x_pad[n, ci, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw] for row k0 + kk =
    (ci, kh, kw) and position j of the tile, whose runs are `runs`. `x_g`
    points at channel 0 of the group in image 0; images are `x_image` apart.

    Each run is a (strided) copy with zero fill at the borders: no
    per-element bounds test.
    """
    cdef Py_ssize_t H = geo.H, W = geo.W, sw = geo.sw
    cdef Py_ssize_t KK = geo.KH * geo.KW
    cdef Py_ssize_t kk, ci, kh, kw, r, seg, ih, iw
    cdef _Range rg
    cdef floating* dst
    ci = k0 // KK
    kh = (k0 - ci * KK) // geo.KW
    kw = k0 - ci * KK - kh * geo.KW
    for kk in range(kc):
        for r in range(nrun):
            seg = runs[r].seg
            dst = col + kk * LD + runs[r].j
            ih = runs[r].ih0 + kh * geo.dh
            if ih < 0 or ih >= H:
                memset(dst, 0, seg * sizeof(floating))
                continue
            iw = runs[r].iw0 + kw * geo.dw
            rg = _run_range(iw, sw, seg, W)
            _copy_row(dst, x_g + runs[r].n * x_image + (ci * H + ih) * W + iw,
                      rg.lo, rg.hi, seg, sw)
        kw = kw + 1
        if kw == geo.KW:
            kw = 0
            kh = kh + 1
            if kh == geo.KH:
                kh = 0
                ci = ci + 1


cdef void _col2im(const floating* colgrad, Py_ssize_t r_begin, Py_ssize_t r_end,
                  Py_ssize_t r_base, floating* grad_g, const Geometry* geo,
                  const _Run* runs, Py_ssize_t nrun) noexcept nogil:
    """The adjoint of _im2col within one image, for rows r_begin..r_end (row r
    is stored at colgrad[(r - r_base)*LD]) of a tile whose runs are `runs`:
    add each value to the input position it was read from. `grad_g` points at
    channel 0 of the group."""
    cdef Py_ssize_t H = geo.H, W = geo.W, KK = geo.KH * geo.KW, sw = geo.sw
    cdef Py_ssize_t rr, ci, kh, kw, r, ih, iw, t, lo, hi
    cdef _Range rg
    cdef const floating* src
    cdef floating* dst
    ci = r_begin // KK
    kh = (r_begin - ci * KK) // geo.KW
    kw = r_begin - ci * KK - kh * geo.KW
    for rr in range(r_begin, r_end):
        for r in range(nrun):
            ih = runs[r].ih0 + kh * geo.dh
            if 0 <= ih < H:
                iw = runs[r].iw0 + kw * geo.dw
                rg = _run_range(iw, sw, runs[r].seg, W)
                lo = rg.lo
                hi = rg.hi
                src = colgrad + (rr - r_base) * LD + runs[r].j
                dst = grad_g + (ci * H + ih) * W + iw
                if sw == 1:
                    for t in range(lo, hi):
                        dst[t] += src[t]
                elif sw == 2:  # a constant stride, which gcc vectorises
                    for t in range(lo, hi):
                        dst[2 * t] += src[t]
                else:
                    for t in range(lo, hi):
                        dst[t * sw] += src[t]
        kw = kw + 1
        if kw == geo.KW:
            kw = 0
            kh = kh + 1
            if kh == geo.KH:
                kh = 0
                ci = ci + 1
