# The weight gradient: implicit tiles, im2col tiles (per-thread copies of dW,
# or blocks of columns of dW), and the direct kernel for few output channels
# at stride 1. Included by _conv.pxi.

cdef void _weight_grad_implicit(const floating[:, :, :, ::1] x,
                                const floating[:, :, :, ::1] grad_out,
                                floating[:, ::1] partial, const Geometry* geo, Py_ssize_t N,
                                Py_ssize_t groups, Py_ssize_t R, Py_ssize_t cw,
                                int n_threads) except *:
    """The weight gradient with no im2col and no transposed patches.

    dW_g^T (K x Mg) = col (K x P) @ grad_out_g^T (P x Mg), tile by tile (see
    _Tiling): grad_out is packed once per tile as B panels, and the rows of
    col, the taps, are read by _micro_rows straight from the padded input
    xt, one segment per output row of the tile. `geo` is an
    _implicit_geometry of N images.
    """
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t C_in = x.shape[1], C_out = grad_out.shape[1]
    cdef Py_ssize_t KK = geo.KH * geo.KW, Cg = C_in // groups, Mg = C_out // groups
    cdef Py_ssize_t K = Cg * KK, ncp = _ceil_div(Mg, nr)
    cdef _Tiling t = _tiling(geo, Cg, R, cw)
    # whole panels of MR taps: the padding entries point into xt, and their
    # results are dropped
    cdef Py_ssize_t[::1] off = _tap_offsets(geo, &t, _ceil_div(t.cpb * KK, MR) * MR)
    cdef _Tile tl
    cdef Py_ssize_t item, cb, ci0, nci, cp, tp, taps, cols, i, j
    cdef Py_ssize_t n_failed = 0
    cdef floating* xt
    cdef floating* bpack
    cdef floating* ctile
    cdef floating* acc

    _note_workspace((t.cpb * t.cs + ncp * nr * QT + MR * NR_MAX) * sizeof(floating), n_threads)
    with nogil, parallel(num_threads=n_threads):
        xt = <floating*> calloc(t.cpb * t.cs, sizeof(floating))
        bpack = <floating*> malloc(ncp * nr * QT * sizeof(floating))
        ctile = <floating*> malloc(MR * NR_MAX * sizeof(floating))
        acc = &partial[omp_get_thread_num(), 0]
        for item in prange(N * groups * t.nrt * t.nct, schedule='static'):
            if xt == NULL or bpack == NULL or ctile == NULL:
                n_failed += 1
                continue
            tl = _tile(geo, &t, groups, item)
            _pack_tile_grad(&grad_out[0, 0, 0, 0] + tl.n * geo.yn + tl.g * Mg * geo.yc, Mg,
                            geo, &tl, bpack)
            for cb in range(t.ncb):
                ci0 = cb * t.cpb
                nci = min(t.cpb, Cg - ci0)
                _fill_tile(&x[0, 0, 0, 0] + tl.n * geo.xn + (tl.g * Cg + ci0) * geo.xc, nci,
                           geo, &t, &tl, xt)
                for cp in range(ncp):
                    cols = min(nr, Mg - cp * nr)
                    for tp in range(_ceil_div(nci * KK, MR)):
                        taps = min(MR, nci * KK - tp * MR)
                        _micro_rows(tl.rows, tl.cols, t.wt, xt, &off[tp * MR],
                                    bpack + cp * tl.rows * tl.cols * nr, ctile, nr)
                        for i in range(taps):
                            for j in range(cols):
                                acc[(tl.g * Mg + cp * nr + j) * K + ci0 * KK + tp * MR + i] += \
                                    ctile[i * nr + j]
        free(ctile)
        free(bpack)
        free(xt)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")

cdef void _weight_grad_direct(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] grad_out,
                              floating[:, ::1] partial, const Geometry* geo,
                              Py_ssize_t groups, Py_ssize_t R, int n_threads) except *:
    """The stride-1 weight gradient for few output channels per group, as dot
    products over flat planes (see _Flat): dW[co, ci, kh, kw] += the dot of
    grad_out[n, co] and x[n, ci] shifted by the tap, per image and band of R
    output rows (the plan's choice: the scratch of a band is bounded, and
    the bands give every thread items where images are few).

    Parallel over (image, group, band), each thread adding into its own row
    of `partial`. Taken for at most NR/4 output channels, where the GEMM
    paths fill a quarter of each B panel or less (lenet1's 6 channels ran at
    24 GFLOP/s): there it measured 0.58-0.78x their time, and with 12-15
    channels 1.5-2x.
    """
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], C_out = grad_out.shape[1]
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, KK = geo.KH * geo.KW
    cdef Py_ssize_t K = Cg * KK, item, n, g, ci, co, kh, kw, n_failed = 0
    cdef Py_ssize_t nb = _ceil_div(geo.OH, R), r0, rb, L
    cdef bint finite
    cdef Py_ssize_t Wp = _flat(geo).Wp, halo = (geo.KH - 1) * geo.dh
    # the dots run over whole blocks of DOT_LANES (no scalar remainder): each
    # band is followed by DOT_LANES zeros, so the extra products are 0
    cdef Py_ssize_t xsize = (R + halo) * Wp + DOT_LANES, ysize = R * Wp + DOT_LANES
    cdef floating* xp
    cdef floating* yp
    cdef floating* acc
    _note_workspace((xsize + Mg * ysize) * sizeof(floating), n_threads)
    with nogil, parallel(num_threads=n_threads):
        xp = <floating*> malloc((xsize + Mg * ysize) * sizeof(floating))
        yp = xp + xsize
        acc = &partial[omp_get_thread_num(), 0]
        for item in prange(N * groups * nb, schedule='static'):
            if xp == NULL:
                n_failed += 1
                continue
            n = item // (groups * nb)
            g = item // nb % groups
            r0 = item % nb * R
            rb = min(R, geo.OH - r0)
            L = _ceil_div((rb - 1) * Wp + geo.OW, DOT_LANES) * DOT_LANES
            for co in range(Mg):
                _place(&grad_out[n, g * Mg + co, 0, 0], geo.OH, geo.OW, r0, rb, 0, Wp,
                       yp + co * ysize)
                memset(yp + co * ysize + rb * Wp, 0, DOT_LANES * sizeof(floating))
            for ci in range(Cg):
                _place(&x[n, g * Cg + ci, 0, 0], geo.H, geo.W, r0 - geo.ph, rb + halo,
                       geo.pw, Wp, xp)
                memset(xp + (rb + halo) * Wp, 0, DOT_LANES * sizeof(floating))
                # a non-finite input could meet the zeros between rows of
                # grad_out (0 * inf = NaN where no output reaches it): then
                # the dots go over the outputs only, row by row
                finite = _all_finite(xp, (rb + halo) * Wp)
                for co in range(Mg):
                    for kh in range(geo.KH):
                        for kw in range(geo.KW):
                            acc[(g * Mg + co) * K + ci * KK + kh * geo.KW + kw] += <floating> (
                                _dot(yp + co * ysize, xp + kh * geo.dh * Wp + kw * geo.dw, L)
                                if finite else
                                _dot_rows(yp + co * ysize, xp + kh * geo.dh * Wp + kw * geo.dw,
                                          rb, geo.OW, Wp))
        free(xp)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")

cdef void _weight_grad_tile(const floating* x_g, Py_ssize_t x_image, const floating* y_g,
                            Py_ssize_t y_image, const Geometry* geo, Py_ssize_t Mg,
                            Py_ssize_t K, Py_ssize_t q0, Py_ssize_t tp, Py_ssize_t kb_lo,
                            Py_ssize_t kb_hi, Py_ssize_t kcb, floating* acc,
                            floating* apack, floating* col, floating* bpack, floating* ctile,
                            _Run* runs) noexcept nogil:
    """acc (Mg x K, group g's rows of dW) += the contribution of positions
    q0..q0+tp, for the blocks kb_lo..kb_hi of kcb columns of K. `x_g` and
    `y_g` point at channel 0 of group g in image 0."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t nmp = _ceil_div(Mg, MR), nrun, kb0, k0, kc, kb, mp, cols, rows, i, j
    # A panels: grad_out rows of the group, contraction over the tile
    _pack_positions(y_g, y_image, geo.OH * geo.OW, Mg, q0, tp, apack)
    nrun = _tile_runs(geo, q0, tp, runs)
    for kb0 in range(kb_lo, kb_hi):
        k0 = kb0 * kcb
        kc = min(kcb, K - k0)
        _im2col(x_g, x_image, geo, k0, kc, runs, nrun, col)
        _transpose_panels(col, kc, tp, bpack)
        for kb in range(_ceil_div(kc, nr)):
            cols = min(nr, kc - kb * nr)
            for mp in range(nmp):
                _micro(tp, apack + mp * tp * MR, bpack + kb * tp * nr, nr, ctile, nr)
                rows = min(MR, Mg - mp * MR)
                for i in range(rows):
                    for j in range(cols):
                        acc[(mp * MR + i) * K + k0 + kb * nr + j] += ctile[i * nr + j]


def conv2d_weight_grad(const floating[:, :, :, ::1] x,          # IN  (N, C_in, H, W)
                       const floating[:, :, :, ::1] grad_out,   # IN  (N, C_out, OH, OW)
                       floating[:, ::1] partial,                # OUT (n_threads, C_out*K), zeroed
                       Py_ssize_t KH, Py_ssize_t KW,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                       str path, Py_ssize_t rows, Py_ssize_t cw, int n_threads):
    """Per-thread partial sums of conv2d_weight in the first rows of
    `partial`; returns how many rows hold them, for the caller to sum.

    `path` (chosen by fastconv._plan): "direct" (stride 1, few output
    channels), "implicit" on the forward's tiles of rows x cw outputs,
    "im2col" over tiles of TP positions, or "im2col_by_columns".

    dW[co, ci, kh, kw] = sum over (n, oh, ow) of grad_out[n, co, oh, ow] *
    x[n, ci, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw] (zero outside x).

    The reduction is over positions, so items that split the positions (the
    implicit kernel's tiles, or tiles of TP positions) each add into their
    thread's own copy of dW, walking all of it once per item. Where dW is
    larger than a core's cache (deep layers: 512 channels at 3x3 is 9 MB in
    float32) and an item sums fewer than TP positions (small feature maps),
    that walk misses the cache for every few dozen positions summed: 8x
    slower than PyTorch on a 7x7 map. There the items are blocks of columns
    of dW instead, each summing over all positions into its own slice of one
    copy (row 0), so each slice stays in cache.
    """
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], C_out = grad_out.shape[1]
    cdef Geometry geo = _geometry(x.shape[2], x.shape[3], KH, KW, grad_out.shape[2],
                                  grad_out.shape[3], sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t P = geo.OH * geo.OW, NP = N * P, Cg = C_in // groups, Mg = C_out // groups
    cdef Py_ssize_t K = Cg * KH * KW, nmp = _ceil_div(Mg, MR), ntiles = _ceil_div(NP, TP)
    cdef Py_ssize_t x_image = C_in * geo.H * geo.W, y_image = C_out * P
    # K in nkb blocks of equal depth kcb <= KC, rounded up to whole B panels
    cdef Py_ssize_t nkb = _ceil_div(K, KC)
    cdef Py_ssize_t kcb = min(KC, _ceil_div(_ceil_div(K, max(nkb, 1)), nr) * nr)
    cdef Py_ssize_t item, g, q0, tile, kb0, n_items, n_images
    cdef Geometry igeo = _implicit_geometry(&geo, N, C_in, C_out, &n_images)
    cdef bint by_columns = path == "im2col_by_columns"
    cdef Py_ssize_t n_failed = 0
    cdef floating* apack
    cdef floating* col
    cdef floating* bpack
    cdef floating* ctile
    cdef floating* acc
    cdef _Run* runs

    if path not in ("direct", "implicit", "im2col", "im2col_by_columns"):
        raise ValueError(f"unknown weight-gradient path {path!r}")
    if NP == 0 or K == 0:
        return 1
    if path == "direct":
        if sh != 1 or sw != 1:
            raise ValueError("the direct weight gradient needs stride 1")
        _weight_grad_direct(x, grad_out, partial, &geo, groups, rows, n_threads)
        return n_threads
    if path == "implicit":
        _weight_grad_implicit(x, grad_out, partial, &igeo, n_images, groups, rows, cw,
                              n_threads)
        return n_threads
    n_items = groups * (nkb if by_columns else ntiles)
    _note_workspace((nmp * MR * TP + KC * LD + KC * TP + MR * NR_MAX) * sizeof(floating)
                    + TP * sizeof(_Run), n_threads)
    with nogil, parallel(num_threads=n_threads):
        apack = <floating*> malloc(nmp * MR * TP * sizeof(floating))
        col = <floating*> malloc(KC * LD * sizeof(floating))
        bpack = <floating*> malloc(KC * TP * sizeof(floating))
        ctile = <floating*> malloc(MR * NR_MAX * sizeof(floating))
        runs = <_Run*> malloc(TP * sizeof(_Run))
        acc = &partial[0 if by_columns else omp_get_thread_num(), 0]
        for item in prange(n_items, schedule='static'):
            if (apack == NULL or col == NULL or bpack == NULL or ctile == NULL
                    or runs == NULL):
                n_failed += 1
                continue
            if by_columns:
                g = item // nkb
                kb0 = item % nkb
                for tile in range(ntiles):
                    q0 = tile * TP
                    _weight_grad_tile(&x[0, g * Cg, 0, 0], x_image, &grad_out[0, g * Mg, 0, 0],
                                      y_image, &geo, Mg, K, q0, min(TP, NP - q0), kb0, kb0 + 1,
                                      kcb, acc + g * Mg * K, apack, col, bpack, ctile, runs)
            else:
                g = item // ntiles
                q0 = (item % ntiles) * TP
                _weight_grad_tile(&x[0, g * Cg, 0, 0], x_image, &grad_out[0, g * Mg, 0, 0],
                                  y_image, &geo, Mg, K, q0, min(TP, NP - q0), 0, nkb,
                                  kcb, acc + g * Mg * K, apack, col, bpack, ctile, runs)
        free(runs)
        free(ctile)
        free(bpack)
        free(col)
        free(apack)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")
    return 1 if by_columns else n_threads
