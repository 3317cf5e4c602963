# Direct (non-GEMM) kernels over flat planes: the flat-plane layout shared with
# _weight_grad_direct, and the depthwise convolution. Included by _conv.pxi.

# -- flat planes (stride 1, direct kernels) -------------------------------------
#
# At stride 1 a plane is first copied into a zero-bordered scratch plane of
# Hp x Wp (_Flat), and the other operand is laid out with the same row
# stride Wp. Output (oh, ow) is then flat index j = oh*Wp + ow, and tap
# (kh, kw) reads flat index j + kh*dh*Wp + kw*dw: one contiguous pass of
# (OH-1)*Wp + OW values per tap over the whole plane, which vectorises,
# rather than one pass per row. (MobileNet's 14x14 and 7x7 rows are shorter
# than an AVX-512 vector, so row passes were scalar remainder loops.) The
# columns ow >= OW in between rows are computed and discarded (forward) or
# are zero (gradients). Used by the depthwise kernels and by the weight
# gradient with few output channels (_weight_grad_direct).


cdef struct _Flat:
    Py_ssize_t Hp, Wp, L   # the padded plane, and the length of one tap's pass


cdef _Flat _flat(const Geometry* geo):
    """The stride-1 padded plane: wide enough for every tap's reads and for the
    whole input at offset (ph, pw)."""
    cdef _Flat f
    f.Hp = max(geo.OH + (geo.KH - 1) * geo.dh, geo.H + geo.ph)
    f.Wp = max(geo.OW + (geo.KW - 1) * geo.dw, geo.W + geo.pw)
    f.L = (geo.OH - 1) * f.Wp + geo.OW
    return f


cdef void _place(const floating* src, Py_ssize_t H, Py_ssize_t W, Py_ssize_t row0,
                 Py_ssize_t nrows, Py_ssize_t c0, Py_ssize_t Wp, floating* dst) noexcept nogil:
    """dst (nrows x Wp) = rows row0 .. row0 + nrows of src (H x W; rows outside
    it are zeros), each at column c0 (c0 + W <= Wp), zeros elsewhere."""
    cdef Py_ssize_t r, c, ih
    cdef floating* row
    for r in range(nrows):
        row = dst + r * Wp
        ih = row0 + r
        if ih < 0 or ih >= H:
            for c in range(Wp):
                row[c] = 0
            continue
        for c in range(c0):
            row[c] = 0
        memcpy(row + c0, src + ih * W, W * sizeof(floating))
        for c in range(c0 + W, Wp):
            row[c] = 0


cdef inline double _dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """sum(a[:n] * b[:n]) for n a multiple of DOT_LANES, over DOT_LANES
    interleaved partial sums in the data's precision (so that the
    multiply-adds vectorise; one dot is one image's contribution, at most a
    plane long), added up in float64."""
    cdef floating acc[DOT_LANES]
    cdef double s = 0
    cdef Py_ssize_t p, lane
    for lane in range(DOT_LANES):
        acc[lane] = 0
    for p in range(n // DOT_LANES):
        for lane in range(DOT_LANES):
            acc[lane] += a[p * DOT_LANES + lane] * b[p * DOT_LANES + lane]
    for lane in range(DOT_LANES):
        s += acc[lane]
    return s

cdef double _dot_rows(const floating* a, const floating* b, Py_ssize_t rows, Py_ssize_t n,
                      Py_ssize_t ld) noexcept nogil:
    """sum(a[r*ld + c] * b[r*ld + c]) for r < rows, c < n, in float64: the
    dot of _dot without the columns between rows."""
    cdef double s = 0
    cdef Py_ssize_t r, c
    for r in range(rows):
        for c in range(n):
            s += a[r * ld + c] * b[r * ld + c]
    return s

# -- depthwise convolution (groups == C_in == C_out) ----------------------------
#
# With one input and one output channel per group the GEMM is 1 x kH*kW: a
# direct loop is the right algorithm, parallel over (n, c) planes for forward
# and input gradient, over c for the weight gradient, whose taps each own one
# weight (no write conflicts). At stride 1 every tap is one pass over a flat
# plane (see _Flat); other strides take one strided pass per row and tap.


cdef void _depthwise_plane_s1(const floating* src, floating* dst, const floating* w,
                              floating b, const Geometry* geo, const _Flat* f,
                              bint transposed, bint relu, floating* pad,
                              floating* acc) noexcept nogil:
    """One plane at stride 1 over flat planes (see _Flat), plus the bias b
    (and max(., 0) with `relu`, forward only); `pad` and `acc` are scratch
    for Hp*Wp values each."""
    cdef Py_ssize_t kh, kw, j, r, c, off, Wp = f.Wp
    cdef floating wv, v
    if transposed:
        # acc (Hp x Wp) += w * src, laid out with row stride Wp in `pad`
        _place(src, geo.OH, geo.OW, 0, geo.OH, 0, Wp, pad)
        memset(acc, 0, f.Hp * Wp * sizeof(floating))
    else:
        _place(src, geo.H, geo.W, -geo.ph, f.Hp, geo.pw, Wp, pad)
        memset(acc, 0, f.L * sizeof(floating))
    for kh in range(geo.KH):
        for kw in range(geo.KW):
            wv = w[kh * geo.KW + kw]
            off = kh * geo.dh * Wp + kw * geo.dw
            if transposed and not isfinite(wv):
                # only the outputs, not the zero columns between rows of
                # `pad`: inf * 0 would put NaN where no output reaches
                for r in range(geo.OH):
                    for c in range(geo.OW):
                        acc[off + r * Wp + c] += wv * pad[r * Wp + c]
            elif transposed:
                for j in range(f.L):
                    acc[off + j] += wv * pad[j]
            else:
                for j in range(f.L):
                    acc[j] += wv * pad[off + j]
    if transposed:
        for r in range(geo.H):
            for c in range(geo.W):
                dst[r * geo.W + c] = b + acc[(r + geo.ph) * Wp + c + geo.pw]
        return
    for r in range(geo.OH):
        for c in range(geo.OW):
            v = b + acc[r * Wp + c]
            dst[r * geo.OW + c] = 0 if relu and v < 0 else v  # NaN stays NaN


cdef void _depthwise_rows(const floating* src, floating* dst, const floating* w,
                          floating b, const Geometry* geo, bint relu) noexcept nogil:
    """The forward of one plane with no scratch: dst (OH, OW) = b + the sum of
    taps w * src (H, W), one output row at a time (it stays in L1 over the
    taps; then max(., 0) with `relu`), one strided pass per tap. The taps
    that fall in the padding read nothing, except that a non-finite weight
    times the padding's zeros is NaN, as on the other paths, in the
    reference and in PyTorch."""
    cdef Py_ssize_t kh, kw, oh, ih, iw0, ow, lo, hi
    cdef _Range rg
    cdef Py_ssize_t H = geo.H, W = geo.W, OW = geo.OW, sw = geo.sw
    cdef const floating* xr
    cdef floating* d
    cdef floating wv
    cdef bint row_inside
    for oh in range(geo.OH):
        d = dst + oh * OW
        for ow in range(OW):
            d[ow] = b
        for kh in range(geo.KH):
            ih = oh * geo.sh - geo.ph + kh * geo.dh
            row_inside = 0 <= ih < H
            for kw in range(geo.KW):
                wv = w[kh * geo.KW + kw]
                iw0 = kw * geo.dw - geo.pw
                rg = _valid_range(iw0, sw, OW, W)
                lo = rg.lo if row_inside else OW
                hi = rg.hi if row_inside else OW
                if not isfinite(wv):
                    for ow in range(OW):
                        if ow < lo or ow >= hi:
                            d[ow] += wv * 0
                if not row_inside:
                    continue
                xr = src + ih * W + iw0
                if sw == 1:  # a constant stride, which gcc vectorises
                    for ow in range(lo, hi):
                        d[ow] += wv * xr[ow]
                else:
                    for ow in range(lo, hi):
                        d[ow] += wv * xr[ow * sw]
        if relu:
            for ow in range(OW):
                d[ow] = 0 if d[ow] < 0 else d[ow]  # NaN stays NaN


cdef void _depthwise_rows_transposed(const floating* src, floating* dst, const floating* w,
                                     floating b, const Geometry* geo) noexcept nogil:
    """The adjoint of _depthwise_rows with no scratch: dst (H, W) = b + the
    sum of taps w * src (OH, OW) scattered to their inputs, one strided pass
    per row and tap."""
    cdef Py_ssize_t kh, kw, oh, ih, iw0, ow, lo, hi, q
    cdef _Range rg
    cdef Py_ssize_t H = geo.H, W = geo.W, OW = geo.OW, sw = geo.sw
    cdef floating wv
    for q in range(H * W):
        dst[q] = b
    for kh in range(geo.KH):
        for kw in range(geo.KW):
            wv = w[kh * geo.KW + kw]
            iw0 = kw * geo.dw - geo.pw
            rg = _valid_range(iw0, sw, OW, W)
            lo = rg.lo
            hi = rg.hi
            for oh in range(geo.OH):
                ih = oh * geo.sh - geo.ph + kh * geo.dh
                if ih < 0 or ih >= H:
                    continue
                for ow in range(lo, hi):
                    dst[ih * W + iw0 + ow * sw] += wv * src[oh * OW + ow]


def depthwise_forward_or_input_grad(
        const floating[:, :, :, ::1] src,       # IN  x (N, C, H, W), or grad_out (N, C, OH, OW)
        const floating[:, :, :, ::1] weight,    # IN  (C, 1, kH, kW)
        const floating[::1] bias,               # IN  (C,) or empty
        floating[:, :, :, ::1] dst,             # OUT out (N, C, OH, OW), or grad_in (N, C, H, W)
        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
        Py_ssize_t dh, Py_ssize_t dw, bint transposed, bint flat, bint relu, int n_threads):
    """Depthwise conv2d (transposed=False; with `relu`, max(., 0) fused) or
    its input gradient, which is also the depthwise conv_transpose2d
    (transposed=True), plus bias. Parallel over (n, c) planes. With `flat`
    (the path depthwise_flat, stride 1 only) each plane goes through two
    scratch planes of Hp x Wp (see _Flat); otherwise by rows, with no
    scratch."""
    cdef Py_ssize_t N = src.shape[0], C = src.shape[1]
    cdef Geometry geo
    if transposed:
        geo = _geometry(dst.shape[2], dst.shape[3], weight.shape[2], weight.shape[3],
                        src.shape[2], src.shape[3], sh, sw, ph, pw, dh, dw)
    else:
        geo = _geometry(src.shape[2], src.shape[3], weight.shape[2], weight.shape[3],
                        dst.shape[2], dst.shape[3], sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t plane, c, n_failed = 0
    cdef bint has_bias = bias.shape[0] > 0
    cdef _Flat f = _flat(&geo)
    cdef floating b
    cdef floating* d
    cdef const floating* s
    cdef floating* pad = NULL
    if flat and not (sh == 1 and sw == 1):
        raise ValueError("the flat depthwise kernel needs stride 1")
    if flat:
        _note_workspace(2 * f.Hp * f.Wp * sizeof(floating), n_threads)
    with nogil, parallel(num_threads=n_threads):
        if flat:
            pad = <floating*> malloc(2 * f.Hp * f.Wp * sizeof(floating))
        for plane in prange(N * C, schedule='static'):
            c = plane % C
            s = &src[plane // C, c, 0, 0]
            d = &dst[plane // C, c, 0, 0]
            b = bias[c] if has_bias else 0
            if flat:
                if pad == NULL:
                    n_failed += 1
                    continue
                _depthwise_plane_s1(s, d, &weight[c, 0, 0, 0], b, &geo, &f, transposed, relu,
                                    pad, pad + f.Hp * f.Wp)
            elif transposed:
                _depthwise_rows_transposed(s, d, &weight[c, 0, 0, 0], b, &geo)
            else:
                _depthwise_rows(s, d, &weight[c, 0, 0, 0], b, &geo, relu)
        free(pad)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def depthwise_weight_grad(const floating[:, :, :, ::1] x,          # IN  (N, C, H, W)
                          const floating[:, :, :, ::1] grad_out,   # IN  (N, C, OH, OW)
                          floating[:, ::1] partial,                # OUT (n_threads, C*kH*kW), zeroed
                          Py_ssize_t KH, Py_ssize_t KW,
                          Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t dh, Py_ssize_t dw, bint flat, Py_ssize_t band,
                          int n_threads):
    """Per-thread partial sums of the depthwise conv2d_weight; the caller sums
    axis 0: dW[c, kh, kw] = sum over (n, oh, ow) of grad_out[n, c, oh, ow] *
    x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]. With `flat` (the path
    depthwise_flat, stride 1 only) this is _weight_grad_direct with one
    channel per group, over bands of `band` output rows; otherwise one thread owns each channel's taps (into
    partial[0]) and sums them a row at a time, with no scratch."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    cdef Geometry geo = _geometry(x.shape[2], x.shape[3], KH, KW, grad_out.shape[2],
                                  grad_out.shape[3], sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t c, n, kh, kw, oh, ih, iw0, ow, lo, hi
    cdef _Range rg
    cdef bint gy_finite
    cdef double total
    cdef floating row
    cdef const floating* xp
    cdef const floating* gp
    if flat and not (sh == 1 and sw == 1):
        raise ValueError("the flat depthwise kernel needs stride 1")
    if flat:
        _weight_grad_direct(x, grad_out, partial, &geo, C, band, n_threads)
        return
    for c in prange(C, schedule='static', nogil=True, num_threads=n_threads):
        # a non-finite grad_out times the padding's zeros is NaN, as on the
        # other paths, in the reference and in PyTorch: checked once a channel
        gy_finite = True
        for n in range(N):
            if not _all_finite(&grad_out[n, c, 0, 0], geo.OH * geo.OW):
                gy_finite = False
                break
        for kh in range(KH):
            for kw in range(KW):
                iw0 = kw * geo.dw - geo.pw
                rg = _valid_range(iw0, geo.sw, geo.OW, geo.W)
                lo = rg.lo
                hi = rg.hi
                total = 0
                for n in range(N):
                    xp = &x[n, c, 0, 0]
                    gp = &grad_out[n, c, 0, 0]
                    for oh in range(geo.OH):
                        ih = oh * geo.sh - geo.ph + kh * geo.dh
                        if ih < 0 or ih >= geo.H:
                            if not gy_finite:
                                for ow in range(geo.OW):
                                    total = total + gp[oh * geo.OW + ow] * 0
                            continue
                        row = 0
                        for ow in range(lo, hi):
                            row = row + gp[oh * geo.OW + ow] * \
                                xp[ih * geo.W + iw0 + ow * geo.sw]
                        if not gy_finite:
                            for ow in range(geo.OW):
                                if ow < lo or ow >= hi:
                                    row = row + gp[oh * geo.OW + ow] * 0
                        total = total + row
                partial[0, (c * KH + kh) * KW + kw] = <floating> total
