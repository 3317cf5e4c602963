# Convolution kernels: forward, input gradient (transposed convolution) and
# weight gradient, for float32 and float64 through the fused `floating` type.
#
# This file is included by _conv_generic.pyx, _conv_avx2.pyx and
# _conv_avx512.pyx, which are the same code compiled with different ISA flags;
# fastconv._dispatch picks one at import time from the CPU's features.
#
# Design
# ------
# All three ops are GEMMs over patches of the input, computed tile by tile so
# that no whole-batch im2col buffer ever exists. Every 2-D geometry is handled
# (1-D convolutions arrive with H = kH = 1). Let Cg = C_in/groups,
# Mg = C_out/groups, K = Cg*kH*kW and P = OH*OW. Rows of K are ordered
# (ci, kh, kw), the order of the weight's memory.
#
# * forward:      out[n, g] (Mg x P)  = W_g (Mg x K) @ col[n, g] (K x P) + b
#   parallel over (n, g, tile of TP output positions): each item writes its own
#   slice of `out`. The col tile is built K-block by K-block (KC rows) straight
#   into packed panels, so workspace is TP*KC per thread.
# * input grad:   colgrad (K x P) = W_g^T (K x Mg) @ grad_out[n, g] (Mg x P),
#   scattered (col2im) into grad_in. Parallel over (n, g, chunk of input
#   channels): every item owns whole planes of grad_in, so the scatter-add has
#   no write conflicts. Output positions are walked sequentially inside an item.
#   This is the seeds' "full convolution with the flipped kernel", generalised
#   to stride, dilation, padding and groups.
# * weight grad:  dW_g (Mg x K) += grad_out[n, g] (Mg x TP) @ col^T (TP x K),
#   a reduction over batch and positions. Parallel over (n, g, tile); each
#   thread accumulates into its own private copy of dW, and the copies are
#   summed after the parallel region (never += races on shared output).
#
# The GEMMs use one register-blocked micro-kernel, MR x NR = 6 x 16: operands
# are packed into contiguous panels (A: kc x MR, B: kc x NR) so that the inner
# loop streams both, and the 6 x 16 accumulator block stays in SIMD registers.
# The compiler vectorises the NR loop; the ISA variant decides the width.
#
# Compiler directives: boundscheck=False, wraparound=False, cdivision=True,
# initializedcheck=False (set in setup.py). Index arithmetic is Py_ssize_t.

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport malloc, free
from libc.string cimport memset

import numpy as np

from fastconv._kernels._openmp cimport omp_get_thread_num

cdef enum:
    MR = 6      # rows of the micro-kernel's accumulator block
    NR = 16     # columns of the micro-kernel's accumulator block
    TP = 128    # output positions per tile (a multiple of NR)
    KC = 256    # depth of one packed block (rows of K, or columns for dW)


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline void _micro(Py_ssize_t kc, const floating* a, const floating* b,
                        floating* c) noexcept nogil:
    """c[MR][NR] = sum_k a[k][:MR] (outer) b[k][:NR] over packed panels."""
    cdef floating c0[NR]
    cdef floating c1[NR]
    cdef floating c2[NR]
    cdef floating c3[NR]
    cdef floating c4[NR]
    cdef floating c5[NR]
    cdef floating a0, a1, a2, a3, a4, a5, bj
    cdef Py_ssize_t j, k
    for j in range(NR):
        c0[j] = 0
        c1[j] = 0
        c2[j] = 0
        c3[j] = 0
        c4[j] = 0
        c5[j] = 0
    for k in range(kc):
        a0 = a[0]
        a1 = a[1]
        a2 = a[2]
        a3 = a[3]
        a4 = a[4]
        a5 = a[5]
        for j in range(NR):
            bj = b[j]
            c0[j] += a0 * bj
            c1[j] += a1 * bj
            c2[j] += a2 * bj
            c3[j] += a3 * bj
            c4[j] += a4 * bj
            c5[j] += a5 * bj
        a += MR
        b += NR
    for j in range(NR):
        c[j] = c0[j]
        c[NR + j] = c1[j]
        c[2 * NR + j] = c2[j]
        c[3 * NR + j] = c3[j]
        c[4 * NR + j] = c4[j]
        c[5 * NR + j] = c5[j]


cdef void _tile_origins(Py_ssize_t p0, Py_ssize_t tp, Py_ssize_t OW,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t* ih0, Py_ssize_t* iw0) noexcept nogil:
    """Top-left input coordinate of the receptive field of each position in a tile."""
    cdef Py_ssize_t j, oh = p0 // OW, ow = p0 % OW
    for j in range(tp):
        ih0[j] = oh * sh - ph
        iw0[j] = ow * sw - pw
        ow = ow + 1
        if ow == OW:
            ow = 0
            oh = oh + 1


cdef void _im2col_panels(const floating* x_g, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t k0, Py_ssize_t kc, Py_ssize_t tp,
                         const Py_ssize_t* ih0, const Py_ssize_t* iw0,
                         Py_ssize_t panel_stride, bint transposed,
                         floating* out) noexcept nogil:
    """Rows k0..k0+kc of the patch matrix of one tile, written as packed panels.

    Not transposed (forward): panel jb holds positions jb*NR.. as columns,
    out[jb*panel_stride + kk*NR + j]. Transposed (weight gradient): panel kb
    holds rows kb*NR.. as columns, out[kb*panel_stride + t*NR + kk % NR].
    Zero padding is applied by the bounds test.
    """
    cdef Py_ssize_t kk, k, j, ci, r, kh, kw, ih, iw, KK = KH * KW
    cdef const floating* xc
    cdef floating v
    cdef floating* dst
    for kk in range(kc):
        k = k0 + kk
        ci = k // KK
        r = k - ci * KK
        kh = r // KW
        kw = r - kh * KW
        xc = x_g + ci * H * W
        if transposed:
            dst = out + (kk // NR) * panel_stride + (kk % NR)
        for j in range(tp):
            ih = ih0[j] + kh * dh
            iw = iw0[j] + kw * dw
            if <size_t>ih < <size_t>H and <size_t>iw < <size_t>W:
                v = xc[ih * W + iw]
            else:
                v = 0
            if transposed:
                dst[j * NR] = v
            else:
                out[(j // NR) * panel_stride + kk * NR + (j % NR)] = v
        if not transposed:
            for j in range(tp, _ceil_div(tp, NR) * NR):
                out[(j // NR) * panel_stride + kk * NR + (j % NR)] = 0
    if transposed:
        for kk in range(kc, _ceil_div(kc, NR) * NR):
            dst = out + (kk // NR) * panel_stride + (kk % NR)
            for j in range(tp):
                dst[j * NR] = 0


cdef void _pack_rows(const floating* a, Py_ssize_t m, Py_ssize_t k, Py_ssize_t lda,
                     floating* out) noexcept nogil:
    """Pack an m x k row-major matrix into ceil(m/MR) panels of k x MR (zero tail)."""
    cdef Py_ssize_t mp, i, kk
    for mp in range(_ceil_div(m, MR)):
        for kk in range(k):
            for i in range(MR):
                if mp * MR + i < m:
                    out[(mp * k + kk) * MR + i] = a[(mp * MR + i) * lda + kk]
                else:
                    out[(mp * k + kk) * MR + i] = 0


cdef void _pack_cols(const floating* a, Py_ssize_t k, Py_ssize_t m, Py_ssize_t lda,
                     floating* out) noexcept nogil:
    """Pack the transpose of a k x m row-major matrix into ceil(m/MR) panels of
    k x MR: panel mp holds columns mp*MR.. of `a`."""
    cdef Py_ssize_t mp, i, kk
    for mp in range(_ceil_div(m, MR)):
        for kk in range(k):
            for i in range(MR):
                if mp * MR + i < m:
                    out[(mp * k + kk) * MR + i] = a[kk * lda + mp * MR + i]
                else:
                    out[(mp * k + kk) * MR + i] = 0


def conv2d_forward(const floating[:, :, :, ::1] x,          # IN  (N, C_in, H, W)
                   const floating[:, :, :, ::1] weight,     # IN  (C_out, C_in/g, kH, kW)
                   const floating[::1] bias,                # IN  (C_out,) or empty
                   floating[:, :, :, ::1] out,              # OUT (N, C_out, OH, OW)
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int n_threads):
    """out = conv2d(x, weight, bias): cross-correlation over padded patches."""
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t C_out = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3], P = OH * OW
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, K = Cg * KH * KW
    cdef Py_ssize_t nmp = _ceil_div(Mg, MR), ntiles = _ceil_div(P, TP)
    cdef Py_ssize_t n_items = N * groups * ntiles
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, g, p0, tp, kb0, k0, kc, mp, nb, i, j, co, rows, cols
    cdef Py_ssize_t n_failed = 0
    cdef floating* bpack
    cdef floating* ctile
    cdef Py_ssize_t* ih0
    cdef Py_ssize_t* iw0
    cdef floating* dst
    cdef floating b

    if n_items == 0:
        return
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] wpack = np.empty(groups * nmp * MR * K, dtype=dtype)
    with nogil:
        for g in range(groups):
            _pack_rows(&weight[g * Mg, 0, 0, 0], Mg, K, K, &wpack[g * nmp * MR * K])

    with nogil, parallel(num_threads=n_threads):
        bpack = <floating*> malloc(TP * KC * sizeof(floating))
        ctile = <floating*> malloc(MR * NR * sizeof(floating))
        ih0 = <Py_ssize_t*> malloc(2 * TP * sizeof(Py_ssize_t))
        iw0 = ih0 + TP
        for item in prange(n_items, schedule='static'):
            if bpack == NULL or ctile == NULL or ih0 == NULL:
                n_failed += 1
                continue
            n = item // (groups * ntiles)
            g = (item // ntiles) % groups
            p0 = (item % ntiles) * TP
            tp = min(TP, P - p0)
            _tile_origins(p0, tp, OW, sh, sw, ph, pw, ih0, iw0)
            for kb0 in range(_ceil_div(K, KC)):
                k0 = kb0 * KC
                kc = min(KC, K - k0)
                _im2col_panels(&x[n, g * Cg, 0, 0], H, W, KH, KW, dh, dw,
                               k0, kc, tp, ih0, iw0, KC * NR, False, bpack)
                for nb in range(_ceil_div(tp, NR)):
                    cols = min(NR, tp - nb * NR)
                    for mp in range(nmp):
                        _micro(kc, &wpack[((g * nmp + mp) * K + k0) * MR],
                               bpack + nb * KC * NR, ctile)
                        rows = min(MR, Mg - mp * MR)
                        for i in range(rows):
                            co = g * Mg + mp * MR + i
                            dst = &out[n, co, 0, 0] + p0 + nb * NR
                            if k0 == 0:
                                b = bias[co] if has_bias else 0
                                for j in range(cols):
                                    dst[j] = ctile[i * NR + j] + b
                            else:
                                for j in range(cols):
                                    dst[j] += ctile[i * NR + j]
        free(ih0)
        free(ctile)
        free(bpack)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def conv2d_input_grad(const floating[:, :, :, ::1] grad_out,  # IN  (N, C_out, OH, OW)
                      const floating[:, :, :, ::1] weight,    # IN  (C_out, C_in/g, kH, kW)
                      const floating[::1] bias,               # IN  (C_in,) or empty
                      floating[:, :, :, ::1] grad_in,         # OUT (N, C_in, H, W)
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int n_threads):
    """grad_in = conv2d_input(grad_out, weight) (+ bias: conv_transpose2d).

    grad_in[n, ci, ih, iw] = sum over (co, kh, kw, oh, ow) with
    ih = oh*sh - ph + kh*dh and iw = ow*sw - pw + kw*dw of
    weight[co, ci, kh, kw] * grad_out[n, co, oh, ow].
    """
    cdef Py_ssize_t N = grad_in.shape[0], C_in = grad_in.shape[1]
    cdef Py_ssize_t H = grad_in.shape[2], W = grad_in.shape[3]
    cdef Py_ssize_t C_out = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef Py_ssize_t OH = grad_out.shape[2], OW = grad_out.shape[3], P = OH * OW
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, KK = KH * KW, K = Cg * KK
    cdef Py_ssize_t nrp = _ceil_div(K, MR)
    cdef Py_ssize_t n_chunks, chunk, n_items
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t item, n, g, c0, c1, r0, r1, r, rp, tile, p0, tp, nb, i, j, ci, kh, kw
    cdef Py_ssize_t ih, iw, cols, q, co
    cdef Py_ssize_t n_failed = 0
    cdef floating* bpack
    cdef floating* ctile
    cdef Py_ssize_t* ih0
    cdef Py_ssize_t* iw0
    cdef floating* plane
    cdef const floating* src
    cdef floating b

    if N * C_in == 0:
        return
    # Enough items to keep every thread busy, each owning whole grad_in planes.
    n_chunks = min(Cg, _ceil_div(4 * n_threads, N * groups))
    chunk = _ceil_div(Cg, n_chunks)
    n_chunks = _ceil_div(Cg, chunk)
    n_items = N * groups * n_chunks

    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] wpack = np.empty(max(1, groups * nrp * MR * Mg), dtype=dtype)
    with nogil:
        for g in range(groups):
            _pack_cols(&weight[g * Mg, 0, 0, 0], Mg, K, K, &wpack[g * nrp * MR * Mg])

    with nogil, parallel(num_threads=n_threads):
        bpack = <floating*> malloc(max(1, TP * Mg) * sizeof(floating))
        ctile = <floating*> malloc(MR * NR * sizeof(floating))
        ih0 = <Py_ssize_t*> malloc(2 * TP * sizeof(Py_ssize_t))
        iw0 = ih0 + TP
        for item in prange(n_items, schedule='static'):
            if bpack == NULL or ctile == NULL or ih0 == NULL:
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
                _tile_origins(p0, tp, OW, sh, sw, ph, pw, ih0, iw0)
                # B panels: grad_out[n, g*Mg + co, p0 + nb*NR + j] -> [nb][co][j]
                for nb in range(_ceil_div(tp, NR)):
                    cols = min(NR, tp - nb * NR)
                    for co in range(Mg):
                        src = &grad_out[n, g * Mg + co, 0, 0] + p0 + nb * NR
                        for j in range(NR):
                            bpack[(nb * Mg + co) * NR + j] = src[j] if j < cols else 0
                for nb in range(_ceil_div(tp, NR)):
                    cols = min(NR, tp - nb * NR)
                    for rp in range(r0 // MR, _ceil_div(r1, MR)):
                        _micro(Mg, &wpack[(g * nrp + rp) * MR * Mg],
                               bpack + nb * Mg * NR, ctile)
                        for i in range(MR):
                            r = rp * MR + i
                            if r < r0 or r >= r1:
                                continue
                            ci = r // KK
                            kh = (r - ci * KK) // KW
                            kw = r - ci * KK - kh * KW
                            plane = &grad_in[n, g * Cg + ci, 0, 0]
                            for j in range(cols):
                                ih = ih0[nb * NR + j] + kh * dh
                                iw = iw0[nb * NR + j] + kw * dw
                                if <size_t>ih < <size_t>H and <size_t>iw < <size_t>W:
                                    plane[ih * W + iw] += ctile[i * NR + j]
        free(ih0)
        free(ctile)
        free(bpack)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def conv2d_weight_grad(const floating[:, :, :, ::1] x,          # IN  (N, C_in, H, W)
                       const floating[:, :, :, ::1] grad_out,   # IN  (N, C_out, OH, OW)
                       floating[:, ::1] partial,                # OUT (n_threads, C_out*K), zeroed
                       Py_ssize_t KH, Py_ssize_t KW,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int n_threads):
    """Per-thread partial sums of conv2d_weight; the caller sums axis 0.

    dW[co, ci, kh, kw] = sum over (n, oh, ow) of grad_out[n, co, oh, ow] *
    x[n, ci, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw] (zero outside x).
    """
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t C_out = grad_out.shape[1], OH = grad_out.shape[2], OW = grad_out.shape[3]
    cdef Py_ssize_t P = OH * OW, Cg = C_in // groups, Mg = C_out // groups
    cdef Py_ssize_t K = Cg * KH * KW, nmp = _ceil_div(Mg, MR), ntiles = _ceil_div(P, TP)
    cdef Py_ssize_t n_items = N * groups * ntiles
    cdef Py_ssize_t item, n, g, p0, tp, kb0, k0, kc, mp, kb, i, j, rows, cols
    cdef Py_ssize_t n_failed = 0
    cdef floating* apack
    cdef floating* bpack
    cdef floating* ctile
    cdef floating* acc
    cdef Py_ssize_t* ih0
    cdef Py_ssize_t* iw0

    if n_items == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        apack = <floating*> malloc(nmp * MR * TP * sizeof(floating))
        bpack = <floating*> malloc(KC * TP * sizeof(floating))
        ctile = <floating*> malloc(MR * NR * sizeof(floating))
        ih0 = <Py_ssize_t*> malloc(2 * TP * sizeof(Py_ssize_t))
        iw0 = ih0 + TP
        acc = &partial[omp_get_thread_num(), 0]
        for item in prange(n_items, schedule='static'):
            if apack == NULL or bpack == NULL or ctile == NULL or ih0 == NULL:
                n_failed += 1
                continue
            n = item // (groups * ntiles)
            g = (item // ntiles) % groups
            p0 = (item % ntiles) * TP
            tp = min(TP, P - p0)
            _tile_origins(p0, tp, OW, sh, sw, ph, pw, ih0, iw0)
            # A panels: grad_out rows of group g, contraction over the tile.
            _pack_rows(&grad_out[n, g * Mg, 0, 0] + p0, Mg, tp, P, apack)
            for kb0 in range(_ceil_div(K, KC)):
                k0 = kb0 * KC
                kc = min(KC, K - k0)
                _im2col_panels(&x[n, g * Cg, 0, 0], H, W, KH, KW, dh, dw,
                               k0, kc, tp, ih0, iw0, TP * NR, True, bpack)
                for kb in range(_ceil_div(kc, NR)):
                    cols = min(NR, kc - kb * NR)
                    for mp in range(nmp):
                        _micro(tp, apack + mp * tp * MR, bpack + kb * TP * NR, ctile)
                        rows = min(MR, Mg - mp * MR)
                        for i in range(rows):
                            for j in range(cols):
                                acc[(g * Mg + mp * MR + i) * K + k0 + kb * NR + j] += \
                                    ctile[i * NR + j]
        free(ih0)
        free(ctile)
        free(bpack)
        free(apack)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def bias_grad(const floating[:, :, ::1] grad_out,   # IN  (N, C, P)
              floating[::1] out,                    # OUT (C,)
              int n_threads):
    """out[c] = sum over n and positions of grad_out[n, c], accumulated in float64."""
    cdef Py_ssize_t N = grad_out.shape[0], C = grad_out.shape[1], P = grad_out.shape[2]
    cdef Py_ssize_t c, n, p
    cdef double s
    cdef const floating* row
    for c in prange(C, schedule='static', nogil=True, num_threads=n_threads):
        s = 0
        for n in range(N):
            row = &grad_out[n, c, 0]
            for p in range(P):
                s = s + row[p]
        out[c] = <floating> s
