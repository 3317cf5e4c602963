# The forward of 3x3 convolutions at stride 1 by Winograd's minimal filtering
# F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural
# Networks", 2016). Included by _conv.pxi.
#
# Each 2x2 block of outputs (a Winograd tile) is computed from the 4x4 block
# of input around it:
#
#     Y = A^T [ sum_ci  (G g_ci G^T) * (B^T d_ci B) ] A      (* elementwise)
#
# with the 4x4 transforms
#
#     B^T = [1  0 -1  0]    G = [1    0    0 ]    A^T = [1  1  1  0]
#           [0  1  1  0]        [1/2  1/2  1/2]         [0  1 -1 -1]
#           [0 -1  1  0]        [1/2 -1/2  1/2]
#           [0  1  0 -1]        [0    0    1 ]
#
# For each of the 16 positions xi of the transformed 4x4 block, the sum over
# ci is a GEMM: M_xi (C_out x tiles) = U_xi (C_out x C_in) @ V_xi (C_in x
# tiles), run by the same micro-kernel as the other paths. 16 multiply-adds
# per input channel give 4 outputs, against 36 directly: the GEMMs are 2.25x
# fewer operations, and the transforms of the input (V) and of the result
# (Y) are additions, O(C_in + C_out) per tile against the GEMMs'
# O(C_in * C_out). B^T and A^T hold only 0 and +-1; G's halves are exact.
#
# Layout. U (pack_winograd_weight): A panels of MR output channels per xi,
# value (ci, i) of panel mp at ((xi*nmp + mp)*C_in + ci)*MR + i. Tiles are
# numbered across the batch, t = n*tH*tW + th*tW + tw, and an item is a
# block of WT consecutive tiles (WT a multiple of NR, chosen by the plan):
# its V, value (xi, ci, t) at (xi*C_in + ci)*LD + t, the micro-kernel's B
# operand with rows LD apart, and per panel of MR output channels its M,
# (xi, i, t) at (xi*MR + i)*LD + t. LD = WT + NR, room for the input
# transform's whole vector past the last tile; and rows of a power of two
# of tiles (128: 512 bytes) put the rows of a panel on a few sets of the
# cache: the GEMMs and transforms of cifar-sized items ran 1.1-1.3x slower
# (Zen 5).
#
# Non-finite values. The transforms mix the values of a tile: an inf weight
# spreads over all 16 values of U, and an inf input meets values of both
# signs in B^T d B, so inf - inf is NaN where the direct sum is +-inf. The
# kernel therefore returns True, and the launcher computes the call again
# by a direct path, when U holds a non-finite value or any output is
# non-finite: those outputs are then non-finite directly too (every input
# value at stride 1 is in some output's window, and a direct sum with a
# non-finite term is non-finite), so the direct path gives the reference's
# values and the Winograd path never shows its own.

cdef inline void _apply_g(const floating* g, Py_ssize_t ld_in, floating* u,
                          Py_ssize_t ld_out) noexcept nogil:
    """u[0..3] (ld_out apart) = G @ g[0..2] (ld_in apart)."""
    u[0] = g[0]
    u[ld_out] = (g[0] + g[ld_in] + g[2 * ld_in]) * 0.5
    u[2 * ld_out] = (g[0] - g[ld_in] + g[2 * ld_in]) * 0.5
    u[3 * ld_out] = g[2 * ld_in]


cdef void _winograd_weight(const floating* g, floating* dst, Py_ssize_t ld) noexcept nogil:
    """dst[xi*ld] = (G g G^T)[xi] for one 3x3 kernel g."""
    cdef floating gg[12]  # G g: 4 x 3
    cdef floating u[16]   # (G g) G^T: 4 x 4
    cdef Py_ssize_t c, r, xi
    for c in range(3):
        _apply_g(g + c, 3, gg + c, 3)
    for r in range(4):
        _apply_g(gg + 3 * r, 1, u + 4 * r, 1)
    for xi in range(16):
        dst[xi * ld] = u[xi]


def pack_winograd_weight(const floating[:, :, :, ::1] weight,   # IN (C_out, C_in, 3, 3)
                         int n_threads):
    """U = G g G^T of every (output, input) channel pair, as the winograd
    forward's A panels (see the layout above): packed once for a model
    whose weights stay fixed, as pack_forward_weight's panels."""
    cdef Py_ssize_t C_out = weight.shape[0], C_in = weight.shape[1]
    cdef Py_ssize_t nmp = _ceil_div(C_out, MR), co, ci
    if weight.shape[2] != 3 or weight.shape[3] != 3:
        raise ValueError(f"Expected a 3x3 weight, got {weight.shape[2]}x{weight.shape[3]}")
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] packed = np.zeros(16 * nmp * MR * C_in, dtype=dtype)
    if C_out * C_in == 0:
        return np.asarray(packed)
    with nogil:
        for co in prange(C_out, schedule='static', num_threads=n_threads):
            for ci in range(C_in):
                _winograd_weight(&weight[co, ci, 0, 0],
                                 &packed[((co // MR) * C_in + ci) * MR + co % MR],
                                 nmp * C_in * MR)
    return np.asarray(packed)


cdef extern from "_winograd.h" nogil:
    void fc_wino_input_f32(const float* x, Py_ssize_t C, Py_ssize_t ldn, Py_ssize_t H,
                           Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t tH,
                           Py_ssize_t tW, Py_ssize_t th, Py_ssize_t tw, Py_ssize_t nt, float* s,
                           float* v, Py_ssize_t ldc, Py_ssize_t ld)
    void fc_wino_input_f64(const double* x, Py_ssize_t C, Py_ssize_t ldn, Py_ssize_t H,
                           Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t tH,
                           Py_ssize_t tW, Py_ssize_t th, Py_ssize_t tw, Py_ssize_t nt,
                           double* s, double* v, Py_ssize_t ldc, Py_ssize_t ld)
    bint fc_wino_output_f32(const float* m, Py_ssize_t ldm, Py_ssize_t L, float b, float* y)
    bint fc_wino_output_f64(const double* m, Py_ssize_t ldm, Py_ssize_t L, double b,
                            double* y)
    void fc_wino_interleave_f32(const float* a, const float* b, Py_ssize_t n, float* dst)
    void fc_wino_interleave_f64(const double* a, const double* b, Py_ssize_t n, double* dst)


cdef void _winograd_input(const floating[:, :, :, ::1] x, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t t0, Py_ssize_t nt,
                          Py_ssize_t ncols, Py_ssize_t ld, floating* v,
                          floating* s) noexcept nogil:
    """V of tiles t0..t0+nt (see the layout, rows ld apart, with room for
    a vector past nt), columns nt..ncols zero; `s` is scratch of
    32*max(nt, NR) + 16 values."""
    cdef Py_ssize_t C_in = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t per_image = tH * tW
    cdef Py_ssize_t n = t0 // per_image, th = (t0 % per_image) // tW, tw = t0 % tW
    cdef Py_ssize_t ci, t, xi
    if floating is float:
        fc_wino_input_f32(&x[n, 0, 0, 0], C_in, C_in * H * W, H, W, ph, pw, tH, tW, th, tw,
                          nt, s, v, ld, C_in * ld)
    else:
        fc_wino_input_f64(&x[n, 0, 0, 0], C_in, C_in * H * W, H, W, ph, pw, tH, tW, th, tw,
                          nt, s, v, ld, C_in * ld)
    for ci in range(C_in):
        for t in range(nt, ncols):
            for xi in range(16):
                v[(xi * C_in + ci) * ld + t] = 0


cdef bint _winograd_output(const floating* m, Py_ssize_t ld, Py_ssize_t rows,
                           Py_ssize_t co0, Py_ssize_t tH, Py_ssize_t tW, Py_ssize_t t0,
                           Py_ssize_t nt, const floating[::1] bias, bint relu,
                           floating[:, :, :, ::1] out, floating* y) noexcept nogil:
    """Y = A^T M A (+ bias, ReLU) of `rows` output channels from co0 at
    tiles t0..t0+nt into `out` (clipped to it), M's rows ld apart:
    transformed all at once into `y` (scratch of 4*nt values, 4 planes),
    then interleaved into the rows of outputs a row of tiles at a time.
    False where an output is not finite."""
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3], per_image = tH * tW
    cdef Py_ssize_t i, t, n, th, tw, L, k, a, ncol
    cdef bint finite = True
    cdef floating b
    cdef floating* dst
    for i in range(rows):
        b = bias[co0 + i] if bias.shape[0] > 0 else 0
        # (finite: checked before the ReLU hides a -inf)
        if floating is float:
            finite = fc_wino_output_f32(m + i * ld, MR * ld, nt, b, y) and finite
        else:
            finite = fc_wino_output_f64(m + i * ld, MR * ld, nt, b, y) and finite
        if relu:
            for k in range(4 * nt):
                y[k] = 0 if y[k] < 0 else y[k]  # NaN stays NaN
        t = 0
        n = t0 // per_image
        th = (t0 - n * per_image) // tW
        tw = t0 - n * per_image - th * tW
        while t < nt:  # runs of tiles along a row of tiles
            L = min(tW - tw, nt - t)
            # y's planes (row a, column c of the 2x2 blocks) interleaved into rows
            ncol = min(2 * L, OW - 2 * tw)
            for a in range(min(2, OH - 2 * th)):
                dst = &out[n, co0 + i, 2 * th + a, 2 * tw]
                if floating is float:
                    fc_wino_interleave_f32(y + 2 * a * nt + t, y + (2 * a + 1) * nt + t, ncol,
                                           dst)
                else:
                    fc_wino_interleave_f64(y + 2 * a * nt + t, y + (2 * a + 1) * nt + t, ncol,
                                           dst)
            t = t + L
            tw = 0
            th = th + 1
            if th == tH:
                th = 0
                n = n + 1
    return finite


cdef bint _forward_winograd(const floating[:, :, :, ::1] x, const floating[::1] upack,
                            const floating[::1] bias, floating[:, :, :, ::1] out,
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t wt, bint relu,
                            int n_threads) except -1:
    """The winograd forward (see above) over items of wt tiles; True where
    U or an output is not finite (the caller then computes it directly)."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], C_out = out.shape[1]
    cdef Py_ssize_t tH = _ceil_div(out.shape[2], 2), tW = _ceil_div(out.shape[3], 2)
    cdef Py_ssize_t NT = N * tH * tW, nmp = _ceil_div(C_out, MR), ld = wt + nr
    cdef Py_ssize_t item, t0, nt, nb, ncols, mp, xi, i
    cdef Py_ssize_t n_failed = 0, n_non_finite = 0
    cdef floating* v
    cdef floating* m
    cdef floating* scratch  # the input blocks' planes, then the outputs'
    if wt <= 0 or wt % nr:
        raise ValueError(f"Expected a winograd block of a multiple of {nr} tiles, got {wt}")
    if not _all_finite(&upack[0], upack.shape[0]):
        return True
    _note_workspace((16 * (C_in + MR) * ld + 32 * wt + 16) * sizeof(floating), n_threads)
    with nogil, parallel(num_threads=n_threads):
        v = <floating*> malloc(16 * C_in * ld * sizeof(floating))
        m = <floating*> malloc(16 * MR * ld * sizeof(floating))
        scratch = <floating*> malloc((32 * wt + 16) * sizeof(floating))
        for item in prange(_ceil_div(NT, wt), schedule='static'):
            if v == NULL or m == NULL or scratch == NULL:
                n_failed += 1
                continue
            t0 = item * wt
            nt = min(wt, NT - t0)
            ncols = _ceil_div(nt, nr) * nr
            _winograd_input(x, ph, pw, tH, tW, t0, nt, ncols, ld, v, scratch)
            for mp in range(nmp):
                for xi in range(16):
                    for nb in range(ncols // nr):
                        _micro(C_in, &upack[(xi * nmp + mp) * C_in * MR],
                               v + xi * C_in * ld + nb * nr, ld,
                               m + xi * MR * ld + nb * nr, ld)
                if not _winograd_output(m, ld, min(MR, C_out - mp * MR), mp * MR, tH, tW, t0,
                                        nt, bias, relu, out, scratch):
                    n_non_finite += 1
        free(scratch)
        free(m)
        free(v)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")
    return n_non_finite > 0
