# The input gradient (transposed convolution): col2im, and the adjoint of the
# implicit forward for 1-D convolutions with the images as rows. Included by
# _conv.pxi.

def conv2d_input_grad(const floating[:, :, :, ::1] grad_out,  # IN  (N, C_out, OH, OW)
                      const floating[:, :, :, ::1] weight,    # IN  (C_out, C_in/g, kH, kW)
                      const floating[::1] bias,               # IN  (C_in,) or empty
                      floating[:, :, :, ::1] grad_in,         # OUT (N, C_in, H, W)
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                      str path, Py_ssize_t rows, Py_ssize_t cw, int n_threads):
    """grad_in = conv2d_input(grad_out, weight) (+ bias: conv_transpose2d).

    grad_in[n, ci, ih, iw] = sum over (co, kh, kw, oh, ow) with
    ih = oh*sh - ph + kh*dh and iw = ow*sw - pw + kw*dw of
    weight[co, ci, kh, kw] * grad_out[n, co, oh, ow].

    `path` (chosen by fastconv._plan): "col2im", or "implicit_adjoint" on
    the forward's implicit tiles of rows x cw outputs, for a 1-D convolution
    whose images are the rows, with one tile across (cw = OW).
    """
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t N = grad_in.shape[0], C_in = grad_in.shape[1]
    cdef Py_ssize_t H = grad_in.shape[2], W = grad_in.shape[3]
    cdef Py_ssize_t C_out = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef Geometry geo = _geometry(H, W, KH, KW, grad_out.shape[2], grad_out.shape[3],
                                  sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t P = geo.OH * geo.OW
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, KK = KH * KW, K = Cg * KK
    cdef Py_ssize_t nrp = _ceil_div(K, MR)
    cdef Py_ssize_t n_chunks, chunk, n_items
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, g, c0, c1, r0, r1, rb0, rb1, rp, tile, p0, tp, nb, j, ci, q, co
    cdef Py_ssize_t n_failed = 0
    cdef floating* gtile
    cdef floating* colgrad
    cdef floating* plane
    cdef const floating* src
    cdef floating b
    cdef _Run* runs
    cdef Py_ssize_t nrun

    if path not in ("col2im", "implicit_adjoint"):
        raise ValueError(f"unknown input-gradient path {path!r}")
    if N * C_in == 0:
        return
    # Enough items to keep every thread busy, each owning whole grad_in planes:
    # whole images when they share evenly among the threads (a chunk copies
    # all of its image's grad_out tiles, whatever its number of channels).
    n_chunks = min(Cg, _ceil_div(4 * n_threads, N * groups))
    if N * groups % n_threads == 0:
        n_chunks = 1
    chunk = _ceil_div(Cg, n_chunks)
    n_chunks = _ceil_div(Cg, chunk)
    n_items = N * groups * n_chunks

    cdef floating[::1] wpack = _pack_groups(weight, groups, True, MR, n_threads)
    cdef Py_ssize_t n_images
    cdef Geometry igeo = _implicit_geometry(&geo, N, C_in, C_out, &n_images)
    if path == "implicit_adjoint":
        _input_grad_implicit(grad_out, wpack, bias, grad_in, &igeo, groups, rows, cw,
                             n_threads)
        return

    _note_workspace((Mg * LD + RB * LD) * sizeof(floating) + TP * sizeof(_Run), n_threads)
    with nogil, parallel(num_threads=n_threads):
        gtile = <floating*> calloc(Mg * LD, sizeof(floating))
        colgrad = <floating*> malloc(RB * LD * sizeof(floating))
        runs = <_Run*> malloc(TP * sizeof(_Run))
        for item in prange(n_items, schedule='static'):
            if gtile == NULL or colgrad == NULL or runs == NULL:
                n_failed += 1
                continue
            n = item // (groups * n_chunks)
            g = (item // n_chunks) % groups
            c0 = (item % n_chunks) * chunk
            c1 = min(Cg, c0 + chunk)
            for ci in range(c0, c1):
                plane = &grad_in[n, g * Cg + ci, 0, 0]
                b = bias[g * Cg + ci] if has_bias else 0
                for q in range(H * W):
                    plane[q] = b
            r0 = c0 * KK
            r1 = c1 * KK
            for tile in range(_ceil_div(P, TP)):
                p0 = tile * TP
                tp = min(TP, P - p0)
                nrun = _tile_runs(&geo, p0, tp, runs)
                # The grad_out tile of this group, rows of LD, zero past tp.
                for co in range(Mg):
                    src = &grad_out[n, g * Mg + co, 0, 0] + p0
                    for j in range(tp):
                        gtile[co * LD + j] = src[j]
                    for j in range(tp, _ceil_div(tp, nr) * nr):
                        gtile[co * LD + j] = 0
                # Column blocks of RB rows, aligned to the packed panels.
                rb0 = r0 - r0 % MR
                while rb0 < r1:
                    rb1 = min(rb0 + RB, r1)
                    for rp in range(_ceil_div(rb1 - rb0, MR)):
                        for nb in range(_ceil_div(tp, nr)):
                            _micro(Mg, &wpack[(g * nrp + rb0 // MR + rp) * MR * Mg],
                                   gtile + nb * nr, LD, colgrad + rp * MR * LD + nb * nr, LD)
                    _col2im(colgrad, max(rb0, r0), rb1, rb0, &grad_in[n, g * Cg, 0, 0], &geo,
                            runs, nrun)
                    rb0 = rb0 + RB
        free(runs)
        free(colgrad)
        free(gtile)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")

cdef bint _all_finite(const floating* a, Py_ssize_t n) noexcept nogil:
    """Whether a[0..n] are all finite: four running sums of a * 0, NaN from
    any inf or NaN, which the compiler keeps in one vector (a loop that
    stops at the first non-finite value does not vectorise)."""
    cdef floating zero = 0, s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i
    for i in range(0, n - n % 4, 4):
        s0 += a[i] * zero
        s1 += a[i + 1] * zero
        s2 += a[i + 2] * zero
        s3 += a[i + 3] * zero
    for i in range(n - n % 4, n):
        s0 += a[i] * zero
    return s0 + s1 + s2 + s3 == 0


cdef inline void _add_outputs(floating* dst, const floating* src, Py_ssize_t q0,
                              Py_ssize_t n, Py_ssize_t wt, const _Tile* tl) noexcept nogil:
    """dst[q] += src[q - q0] for the tile positions q in [q0, q0 + n) that are
    outputs (column q % wt < cols, q < npos), in runs: the columns between
    rows hold products of the weight with zeros, which are NaN where a
    weight is not finite, and must not reach grad_in. (With a finite weight
    they are exact zeros, and the whole block is added at once: these runs
    cost 1.2-1.5x the input gradient's time on MNIST-1D's layers.)"""
    cdef Py_ssize_t q = q0, c, run, j
    while q < q0 + n and q < tl.npos:
        c = q % wt
        if c >= tl.cols:
            q = q + wt - c
            continue
        run = min(tl.cols - c, q0 + n - q, tl.npos - q)
        for j in range(run):
            dst[q + j] += src[q - q0 + j]
        q = q + run


cdef void _input_grad_implicit(const floating[:, :, :, ::1] grad_out,
                               const floating[::1] wpack, const floating[::1] bias,
                               floating[:, :, :, ::1] grad_in, const Geometry* geo,
                               Py_ssize_t groups, Py_ssize_t R, Py_ssize_t cw,
                               int n_threads) except *:
    """The input gradient with no col2im, on _forward_implicit's tiles of a
    1-D convolution (the images as rows, one tile across), which own
    disjoint rows of grad_in.

    For each tile and block of channels, colgrad = W_g^T @ grad_out tile, the
    grad_out tile laid out at the positions q = r*wt + c of the forward's
    tile (zero in the columns c >= cols). The outputs of row (ci, kw) of
    colgrad are added to a zeroed copy xt at the tap's offset
    (_add_outputs), and xt is added into grad_in (_unfill_tile): the adjoint
    of the forward's reads. `wpack` is W_g^T packed by _pack_groups; `geo` is
    an _implicit_geometry.
    """
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t C_in = grad_in.shape[1], C_out = grad_out.shape[1]
    cdef Py_ssize_t KK = geo.KH * geo.KW, Cg = C_in // groups, Mg = C_out // groups
    cdef Py_ssize_t K = Cg * KK, nrp = _ceil_div(K, MR)
    cdef _Tiling t = _tiling(geo, Cg, R, cw)
    cdef Py_ssize_t[::1] off = _tap_offsets(geo, &t, t.cpb * KK)
    # grad_out's channels in nmb blocks of mcb <= KC, the depth of one GEMM
    cdef Py_ssize_t nmb = _ceil_div(Mg, KC), mcb = _ceil_div(Mg, nmb), ldq = QT + 16
    cdef Py_ssize_t item, cb, ci0, nci, mb, m0, mc, co, r, nq, q0, p, nb, i, j, k, kr0, kr1
    cdef Py_ssize_t plane, ih
    cdef Py_ssize_t n_failed = 0
    cdef _Tile tl
    cdef floating* xt
    cdef floating* gtile
    cdef floating* ctile
    cdef floating* dst
    cdef const floating* src
    cdef floating bv
    cdef bint has_bias = bias.shape[0] > 0
    cdef bint finite = _all_finite(&wpack[0], wpack.shape[0])

    # grad_in starts as the bias (or zero); the tiles add into it
    for plane in prange(C_in, schedule='static', nogil=True, num_threads=n_threads):
        bv = bias[plane] if has_bias else 0
        for ih in range(geo.H):
            dst = &grad_in[0, 0, 0, 0] + plane * geo.xc + ih * geo.xr
            for i in range(geo.W):
                dst[i] = bv

    _note_workspace((t.cpb * t.cs + NR_MAX + mcb * ldq + MR * NR_MAX) * sizeof(floating),
                    n_threads)
    with nogil, parallel(num_threads=n_threads):
        xt = <floating*> malloc((t.cpb * t.cs + NR_MAX) * sizeof(floating))
        gtile = <floating*> malloc(mcb * ldq * sizeof(floating))
        ctile = <floating*> malloc(MR * NR_MAX * sizeof(floating))
        for item in prange(groups * t.nrt, schedule='static'):
            if xt == NULL or gtile == NULL or ctile == NULL:
                n_failed += 1
                continue
            tl = _tile(geo, &t, groups, item)
            nq = _ceil_div(tl.npos, nr) * nr
            for cb in range(t.ncb):
                ci0 = cb * t.cpb
                nci = min(t.cpb, Cg - ci0)
                memset(xt, 0, (nci * t.cs + NR_MAX) * sizeof(floating))
                kr0 = ci0 * KK
                kr1 = kr0 + nci * KK
                for mb in range(nmb):
                    m0 = mb * mcb
                    mc = min(mcb, Mg - m0)
                    for co in range(mc):
                        dst = gtile + co * ldq
                        memset(dst, 0, nq * sizeof(floating))
                        src = (&grad_out[0, 0, 0, 0] + (tl.g * Mg + m0 + co) * geo.yc
                               + tl.oh0 * geo.yr)
                        for r in range(tl.rows):
                            memcpy(dst + r * t.wt, src + r * geo.yr, tl.cols * sizeof(floating))
                    # panels of MR taps over rows kr0..kr1 of K (aligned down:
                    # rows outside are computed and dropped), TP positions at
                    # a time so that their B stays in cache
                    for q0 in range(_ceil_div(nq, TP)):
                        for p in range(kr0 // MR, _ceil_div(kr1, MR)):
                            for nb in range(q0 * TP // nr, min(nq, q0 * TP + TP) // nr):
                                _micro(mc, &wpack[((tl.g * nrp + p) * Mg + m0) * MR],
                                       gtile + nb * nr, ldq, ctile, nr)
                                for i in range(MR):
                                    k = p * MR + i
                                    if k < kr0 or k >= kr1:
                                        continue
                                    dst = xt + off[k - kr0]
                                    if finite:  # the columns between rows hold exact zeros
                                        for j in range(nr):
                                            dst[nb * nr + j] += ctile[i * nr + j]
                                    else:
                                        _add_outputs(dst, ctile + i * nr, nb * nr, nr, t.wt,
                                                     &tl)
                _unfill_tile(xt, nci, geo, &t, &tl,
                             &grad_in[0, 0, 0, 0] + (tl.g * Cg + ci0) * geo.xc)
        free(ctile)
        free(gtile)
        free(xt)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")
