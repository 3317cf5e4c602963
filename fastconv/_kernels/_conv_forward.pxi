# The forward convolution: conv2d_forward and its GEMM paths, im2col tiles,
# implicit tiles, and the operands swapped for few positions (channels).
# Included by _conv.pxi.

def conv2d_forward(const floating[:, :, :, ::1] x,          # IN  (N, C_in, H, W)
                   const floating[:, :, :, ::1] weight,     # IN  (C_out, C_in/g, kH, kW)
                   const floating[::1] bias,                # IN  (C_out,) or empty
                   const floating[::1] packed,              # IN  pack_forward_weight(weight) or empty
                   floating[:, :, :, ::1] out,              # OUT (N, C_out, OH, OW)
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                   str path, Py_ssize_t rows, Py_ssize_t cw, bint relu, int n_threads):
    """out = conv2d(x, weight, bias): cross-correlation over padded patches;
    with `relu`, max(out, 0), applied as the last block of K is stored.

    `path` (chosen by fastconv._plan): "im2col", or "implicit" or
    "implicit_row" on tiles of rows x cw outputs, or "channels", or
    "winograd" (3x3, stride 1, no dilation or groups) on blocks of `rows`
    tiles, which takes pack_winograd_weight's panels as `packed`.

    Returns True where the winograd path met a non-finite value, and wrote
    no trustworthy output: the caller computes it again by another path.
    Every other path returns False.
    """
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1]
    cdef Py_ssize_t C_out = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef Geometry geo = _geometry(x.shape[2], x.shape[3], KH, KW, out.shape[2], out.shape[3],
                                  sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, K = Cg * KH * KW
    cdef Py_ssize_t n_images
    cdef Geometry igeo = _implicit_geometry(&geo, N, C_in, C_out, &n_images)
    if path not in ("im2col", "implicit", "implicit_row", "channels", "winograd"):
        raise ValueError(f"unknown forward path {path!r}")
    if N * geo.OH * geo.OW == 0:
        return False
    cdef const floating[::1] wpack = packed
    if path == "winograd":
        if (KH, KW, sh, sw, dh, dw, groups) != (3, 3, 1, 1, 1, 1, 1):
            raise ValueError("the winograd path takes 3x3 kernels at stride 1, without "
                             "dilation or groups")
        if packed.shape[0] == 0:
            wpack = pack_winograd_weight(weight, n_threads)
        elif packed.shape[0] != 16 * _ceil_div(C_out, MR) * MR * C_in:
            raise ValueError(f"packed weight of {packed.shape[0]} values, expected "
                             f"{16 * _ceil_div(C_out, MR) * MR * C_in} (pack_winograd_weight "
                             f"of this build)")
        return _forward_winograd(x, wpack, bias, out, ph, pw, rows, relu, n_threads)
    # the weight's panels: of MR output channels (A), or of NR ("channels": B)
    cdef bint channels = path == "channels", by_rows = path == "implicit_row"
    cdef Py_ssize_t width = nr if channels else MR
    if packed.shape[0] == 0:
        wpack = _pack_groups(weight, groups, False, width, n_threads)
    elif packed.shape[0] != groups * _ceil_div(Mg, width) * width * K:
        raise ValueError(f"packed weight of {packed.shape[0]} values, expected "
                         f"{groups * _ceil_div(Mg, width) * width * K} (pack_forward_weight "
                         f"of this build, channels={channels})")
    if channels:
        _forward_channels(x, wpack, bias, out, &geo, groups, relu, n_threads)
    elif path != "im2col":
        _forward_implicit(x, wpack, bias, out, &igeo, n_images, groups, rows, cw, by_rows,
                          relu, n_threads)
    else:
        _forward_im2col(x, wpack, bias, out, &geo, groups, relu, n_threads)
    return False


cdef inline void _store_block(const floating* ctile, Py_ssize_t nr, Py_ssize_t rows,
                              Py_ssize_t run, floating* dst, Py_ssize_t ld_dst,
                              const floating[::1] bias, Py_ssize_t co, bint first,
                              bint relu) noexcept nogil:
    """Write (first block of K: with the bias) or add `run` columns of `rows`
    rows of an MR x nr result block to output rows ld_dst apart; with `relu`
    (the last block of K, of a fused ReLU), max(result, 0), NaN kept."""
    cdef Py_ssize_t i, jj
    cdef floating b, v
    for i in range(rows):
        b = bias[co + i] if first and bias.shape[0] > 0 else 0
        if first and relu:
            for jj in range(run):
                v = ctile[i * nr + jj] + b
                dst[i * ld_dst + jj] = 0 if v < 0 else v  # NaN stays NaN
        elif first:
            for jj in range(run):
                dst[i * ld_dst + jj] = ctile[i * nr + jj] + b
        elif relu:
            for jj in range(run):
                v = dst[i * ld_dst + jj] + ctile[i * nr + jj]
                dst[i * ld_dst + jj] = 0 if v < 0 else v  # NaN stays NaN
        else:
            for jj in range(run):
                dst[i * ld_dst + jj] += ctile[i * nr + jj]


cdef void _forward_im2col(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                          const floating[::1] bias, floating[:, :, :, ::1] out,
                          const Geometry* geo, Py_ssize_t groups, bint relu,
                          int n_threads) except *:
    """The forward over tiles of TP positions that may span images, each built
    by _im2col KC rows at a time. Where tiles are fewer than two per thread
    (deep layers of one image: 49 positions at 7x7), the items are tiles x
    parts of the output channels, each part building the tile's patches
    itself (a copy of K x TP values for its MR x K x TP multiply-adds)."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], C_out = out.shape[1]
    cdef Py_ssize_t P = geo.OH * geo.OW, NP = N * P
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, K = Cg * geo.KH * geo.KW
    cdef Py_ssize_t nmp = _ceil_div(Mg, MR), ntiles = _ceil_div(NP, TP)
    cdef Py_ssize_t nparts = 1, mpb, part, mp0, mp1
    # K in nkb blocks of equal depth kcb <= KC (not KC and a thin remainder)
    cdef Py_ssize_t nkb = _ceil_div(K, KC), kcb = _ceil_div(K, nkb), nrun
    cdef Py_ssize_t item, g, q0, tp, kb0, k0, kc, mp, nb, j, rows, cols, q, n, p, run
    cdef Py_ssize_t n_failed = 0
    cdef floating* col
    cdef floating* ctile
    cdef _Run* runs

    if groups * ntiles < 2 * n_threads:
        nparts = min(nmp, _ceil_div(2 * n_threads, groups * ntiles))
    mpb = _ceil_div(nmp, nparts)
    nparts = _ceil_div(nmp, mpb)  # none empty
    _note_workspace((KC * LD + MR * NR_MAX) * sizeof(floating) + TP * sizeof(_Run), n_threads)
    with nogil, parallel(num_threads=n_threads):
        col = <floating*> calloc(KC * LD, sizeof(floating))
        ctile = <floating*> malloc(MR * NR_MAX * sizeof(floating))
        runs = <_Run*> malloc(TP * sizeof(_Run))
        for item in prange(groups * ntiles * nparts, schedule='static'):
            if col == NULL or ctile == NULL or runs == NULL:
                n_failed += 1
                continue
            # parts outermost: the static schedule then gives each thread
            # whole parts of the channels over every tile, the same work
            # whatever the width of the last tile
            part = item // (groups * ntiles)
            mp0 = part * mpb
            mp1 = min(nmp, mp0 + mpb)
            g = item // ntiles % groups
            q0 = (item % ntiles) * TP
            tp = min(TP, NP - q0)
            nrun = _tile_runs(geo, q0, tp, runs)
            for kb0 in range(nkb):
                k0 = kb0 * kcb
                kc = min(kcb, K - k0)
                _im2col(&x[0, g * Cg, 0, 0], C_in * geo.H * geo.W, geo, k0, kc, runs, nrun,
                        col)
                for nb in range(_ceil_div(tp, nr)):
                    cols = min(nr, tp - nb * nr)
                    for mp in range(mp0, mp1):
                        _micro(kc, &wpack[((g * nmp + mp) * K + k0) * MR], col + nb * nr,
                               LD, ctile, nr)
                        rows = min(MR, Mg - mp * MR)
                        # scatter the block's columns to their images
                        j = 0
                        q = q0 + nb * nr
                        n = q // P
                        p = q - n * P
                        while j < cols:
                            run = min(cols - j, P - p)
                            _store_block(ctile + j, nr, rows, run,
                                         &out[n, g * Mg + mp * MR, 0, 0] + p, P,
                                         bias, g * Mg + mp * MR, k0 == 0,
                                         relu and kb0 == nkb - 1)
                            j = j + run
                            p = 0
                            n = n + 1
        free(runs)
        free(ctile)
        free(col)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")

cdef void _forward_implicit(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                            const floating[::1] bias, floating[:, :, :, ::1] out,
                            const Geometry* geo, Py_ssize_t N, Py_ssize_t groups,
                            Py_ssize_t R, Py_ssize_t cw, bint by_rows, bint relu,
                            int n_threads) except *:
    """The forward with no im2col: the B operand is read in place.

    For each tile (see _Tiling) and block of channels, the input is copied
    once into xt. Tap (ci, kh, kw) of output q is xt[off + q], where off is
    the tap's offset (_tap_offsets): each row of B is a contiguous run of xt.
    The columns c >= cw of the tile are computed and discarded, in blocks
    of nr positions that run across its rows or start at each row
    (_blocks_by_row); a block within one row is stored in place by the
    micro-kernel, the others through ctile. `geo` is an
    _implicit_geometry of N images. With `by_rows`, one output channel at a
    time, in blocks of MR*NR positions (_micro_taps_row).
    """
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t C_in = x.shape[1], C_out = out.shape[1]
    cdef Py_ssize_t KK = geo.KH * geo.KW, Cg = C_in // groups, Mg = C_out // groups
    cdef Py_ssize_t K = Cg * KK, nmp = _ceil_div(Mg, MR)
    cdef _Tiling t = _tiling(geo, Cg, R, cw)
    cdef Py_ssize_t[::1] off = _tap_offsets(geo, &t, t.cpb * KK)
    cdef _Tile tl
    cdef Py_ssize_t item, cb, ci0, nci, nb, nbr, q, ncols, mp, m, co, c
    cdef bint by_row_blocks = _blocks_by_row(t.cw, t.wt, nr)
    cdef Py_ssize_t bw = MR * nr
    cdef Py_ssize_t n_failed = 0
    cdef floating* xt
    cdef floating* ctile
    cdef floating* y
    cdef bint direct

    _note_workspace((t.cpb * t.cs + 2 * MR * NR_MAX) * sizeof(floating), n_threads)
    with nogil, parallel(num_threads=n_threads):
        # the zero tail is read only by discarded columns
        xt = <floating*> calloc(t.cpb * t.cs + MR * NR_MAX, sizeof(floating))
        ctile = <floating*> malloc(MR * NR_MAX * sizeof(floating))
        for item in prange(N * groups * t.nrt * t.nct, schedule='static'):
            if xt == NULL or ctile == NULL:
                n_failed += 1
                continue
            tl = _tile(geo, &t, groups, item)
            for cb in range(t.ncb):
                ci0 = cb * t.cpb
                nci = min(t.cpb, Cg - ci0)
                _fill_tile(&x[0, 0, 0, 0] + tl.n * geo.xn + (tl.g * Cg + ci0) * geo.xc, nci,
                           geo, &t, &tl, xt)
                if by_rows:
                    for m in range(Mg):
                        co = tl.g * Mg + m
                        for nb in range(_ceil_div(tl.npos, bw)):
                            _micro_taps_row(nci * KK, &wpack[((tl.g * nmp + m // MR) * K
                                                              + ci0 * KK) * MR + m % MR],
                                            xt + nb * bw, &off[0], ctile)
                            _store_tile(ctile, bw, 1, min(bw, tl.npos - nb * bw), nb * bw, &t,
                                        &tl, geo, &out[0, 0, 0, 0] + tl.n * geo.yn, bias, co,
                                        cb == 0, relu and cb == t.ncb - 1)
                    continue
                nbr = _ceil_div(tl.cols, nr)
                for nb in range(tl.rows * nbr if by_row_blocks else _ceil_div(tl.npos, nr)):
                    if by_row_blocks:
                        q = nb // nbr * t.wt + nb % nbr * nr
                        ncols = min(nr, tl.cols - nb % nbr * nr)
                    else:
                        q = nb * nr
                        ncols = min(nr, tl.npos - q)
                    # a block of nr outputs of one row goes straight to the
                    # output, for every full block of MR channels
                    c = q % t.wt
                    direct = c + nr <= tl.cols
                    if direct:
                        y = (&out[0, 0, 0, 0] + tl.n * geo.yn + (tl.oh0 + q // t.wt) * geo.yr
                             + tl.ow0 + c)
                    for mp in range(nmp):
                        co = tl.g * Mg + mp * MR
                        if direct and co + MR <= (tl.g + 1) * Mg:
                            _micro_taps(nci * KK, &wpack[((tl.g * nmp + mp) * K + ci0 * KK) * MR],
                                        xt + q, &off[0], y + co * geo.yc, geo.yc,
                                        &bias[co] if bias.shape[0] > 0 else NULL, cb > 0,
                                        relu and cb == t.ncb - 1)
                            continue
                        _micro_taps(nci * KK, &wpack[((tl.g * nmp + mp) * K + ci0 * KK) * MR],
                                    xt + q, &off[0], ctile, nr)
                        _store_tile(ctile, nr, min(MR, Mg - mp * MR), ncols, q, &t, &tl, geo,
                                    &out[0, 0, 0, 0] + tl.n * geo.yn, bias, co,
                                    cb == 0, relu and cb == t.ncb - 1)
        free(ctile)
        free(xt)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


cdef void _forward_channels(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                            const floating[::1] bias, floating[:, :, :, ::1] out,
                            const Geometry* geo, Py_ssize_t groups, bint relu,
                            int n_threads) except *:
    """The forward for few positions (deep layers of small batches: 49 at
    7x7), with the GEMM's operands swapped:
    out_g^T (N*P x Mg) = col_g^T (N*P x K) @ W_g^T (K x Mg).

    The micro-kernel's vectors then run along the output channels, which
    are many, and its MR rows along the positions, which are few: 49
    positions fill 7 panels of 8 where they filled 2 blocks of NR = 32 of
    the im2col path (77% useful). Two phases:

    1. The patches of all positions, as A panels of MR positions in blocks
       of K (`apack`, shared), items (group, chunk of positions, block of K).
    2. Items (group, panel of NR output channels): each reads its panel of
       the weight (pack_forward_weight(..., channels=True)) once, in order,
       a KC x NR block at a time against every position panel, and sums the
       blocks of K in `acc` before storing, with the bias and ReLU, once.
    """
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], C_out = out.shape[1]
    cdef Py_ssize_t P = geo.OH * geo.OW, NP = N * P
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, K = Cg * geo.KH * geo.KW
    cdef Py_ssize_t npp = _ceil_div(NP, MR), ncp = _ceil_div(Mg, nr)
    # chunks of whole position panels that one tile of patches holds
    cdef Py_ssize_t chunk = TP // MR, nchunks = _ceil_div(npp, chunk)
    cdef Py_ssize_t nkb = _ceil_div(K, KC), kcb = _ceil_div(K, nkb)
    cdef Py_ssize_t item, g, c, pp0, pp1, pp, q0, tp, kb, k0, kc, kk, i, cp, co, j, q
    cdef Py_ssize_t nch, npos, n_failed = 0, n_failed_gemm = 0
    cdef floating* col
    cdef floating* acc
    cdef floating* ctile
    cdef floating* dst
    cdef const floating* src
    cdef _Run* runs
    cdef floating v, b
    cdef bint has_bias = bias.shape[0] > 0
    dtype = np.float32 if floating is float else np.float64
    # apack[g][kb]: npp panels of kc x MR, K-block-major as phase 2 reads them
    cdef floating[::1] apack = np.empty(groups * npp * MR * K, dtype=dtype)
    # qoff[q]: where position q (image n, position p) is in channel 0 of `out`
    cdef Py_ssize_t[::1] qoff = np.empty(NP, dtype=np.intp)
    for q in range(NP):
        qoff[q] = q // P * C_out * P + q % P

    _note_workspace((KC * LD + (npp + 1) * MR * NR_MAX) * sizeof(floating)
                    + TP * sizeof(_Run), n_threads)
    with nogil, parallel(num_threads=n_threads):
        col = <floating*> calloc(KC * LD, sizeof(floating))
        acc = <floating*> malloc(npp * MR * NR_MAX * sizeof(floating))
        ctile = <floating*> malloc(MR * NR_MAX * sizeof(floating))
        runs = <_Run*> malloc(TP * sizeof(_Run))
        for item in prange(groups * nchunks * nkb, schedule='static'):
            if col == NULL or acc == NULL or ctile == NULL or runs == NULL:
                n_failed += 1
                continue
            g = item // (nchunks * nkb)
            c = item // nkb % nchunks
            kb = item % nkb
            k0 = kb * kcb
            kc = min(kcb, K - k0)
            pp0 = c * chunk
            pp1 = min(npp, pp0 + chunk)
            q0 = pp0 * MR
            tp = min(NP, pp1 * MR) - q0
            _im2col(&x[0, g * Cg, 0, 0], C_in * geo.H * geo.W, geo, k0, kc, runs,
                    _tile_runs(geo, q0, tp, runs), col)
            for pp in range(pp0, pp1):
                dst = &apack[(g * npp * K + k0 * npp + pp * kc) * MR]
                npos = min(MR, NP - pp * MR)
                for kk in range(kc):
                    src = col + kk * LD + (pp - pp0) * MR
                    for i in range(npos):
                        dst[kk * MR + i] = src[i]
                    for i in range(npos, MR):  # past the last position
                        dst[kk * MR + i] = 0
        # (the prange ends with a barrier: apack is whole from here on)
        for item in prange(groups * ncp, schedule='static'):
            if col == NULL or acc == NULL or ctile == NULL or runs == NULL:
                n_failed_gemm += 1  # (one reduction variable per prange)
                continue
            g = item // ncp
            cp = item % ncp
            for kb in range(nkb):
                k0 = kb * kcb
                kc = min(kcb, K - k0)
                src = &wpack[((g * ncp + cp) * K + k0) * nr]
                for pp in range(npp):
                    # the first block of K straight into acc, the others added
                    dst = acc + pp * MR * nr if kb == 0 else ctile
                    _micro(kc, &apack[(g * npp * K + k0 * npp + pp * kc) * MR], src, nr,
                           dst, nr)
                    if kb > 0:
                        for i in range(MR * nr):
                            acc[pp * MR * nr + i] += ctile[i]
            # acc[pp][i][j] (at (pp*MR + i)*nr + j): position q = pp*MR + i,
            # channel cp*nr + j of the group
            co = g * Mg + cp * nr
            nch = min(nr, Mg - cp * nr)
            for j in range(nch):
                dst = &out[0, co + j, 0, 0]
                b = bias[co + j] if has_bias else 0
                for q in range(NP):
                    v = acc[q * nr + j] + b
                    dst[qoff[q]] = 0 if relu and v < 0 else v  # NaN stays NaN
        free(runs)
        free(ctile)
        free(acc)
        free(col)
    if n_failed or n_failed_gemm:
        raise MemoryError("fastconv: could not allocate per-thread workspace")
