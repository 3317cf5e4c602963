# Convolution kernels: forward, input gradient (transposed convolution) and
# weight gradient, for float32 and float64 through the fused `floating` type.
#
# This file is included by _conv_generic.pyx, _conv_avx2.pyx and
# _conv_avx512.pyx: the same code compiled with different ISA flags, of which
# fastconv._config picks one at import time from the CPU's features.
#
# Design
# ------
# All three ops are GEMMs over patches of the input, computed tile by tile so
# that no whole-batch im2col buffer ever exists. Every 2-D geometry is handled
# (1-D convolutions arrive with H = kH = 1). Let Cg = C_in/groups,
# Mg = C_out/groups, K = Cg*kH*kW and P = OH*OW. Rows of K are ordered
# (ci, kh, kw), the order of the weight's memory. Output positions are
# numbered q = n*P + p across the batch, so that a tile of TP positions may
# span several small images and the GEMMs stay wide for small feature maps.
#
# * forward:      out[:, g] (Mg x N*P) = W_g (Mg x K) @ col_g (K x N*P) + b
#   parallel over (g, tile of TP positions): each item writes its own slice
#   of `out`. The col tile is built KC rows at a time, so the workspace is
#   KC*TP per thread. The implicit forward (_forward_implicit) needs no col
#   tile: it copies a padded block of input rows once and reads each row of
#   B from it in place (at stride s, from a copy split into s x s phases;
#   for 1-D convolutions, with the images as rows). The input gradient at
#   stride 1 is this forward with the flipped weight
#   (fastconv.functional.conv_input_grad).
# * input grad:   colgrad (K x P) = W_g^T (K x Mg) @ grad_out[n, g] (Mg x P),
#   scattered (col2im) into grad_in. Parallel over (n, g, chunk of input
#   channels): every item owns whole planes of grad_in, so the scatter-add has
#   no write conflicts; positions are walked sequentially inside an item.
#   This is the seeds' "full convolution with the flipped kernel", generalised
#   to stride, dilation, padding and groups. A 1-D convolution with few
#   outputs per image takes the adjoint of the implicit forward instead
#   (_input_grad_implicit), on its tiles of images as rows.
# * weight grad:  dW_g (Mg x K) += grad_out_g (Mg x TP) @ col^T (TP x K), a
#   reduction over batch and positions. Parallel over (g, tile); each thread
#   accumulates into its own private copy of dW, and the copies are summed
#   after the parallel region (never += races on shared output). Where dW
#   outgrows the cache and tiles are small, parallel over (g, block of
#   columns of dW) instead, each item summing all positions into its own
#   slice (see conv2d_weight_grad). On the implicit forward's tiles
#   (_weight_grad_implicit) it is dW_g^T = col @ grad_out_g^T instead, with
#   the rows of col read in place from the same padded copy of the input, so
#   that only grad_out is ever transposed; at stride 1 with at most NR/4
#   output channels per group, each weight is a dot product per image
#   (_weight_grad_direct).
#
# The GEMMs share the register-blocked micro-kernels of _ukernel.h (C with
# explicit vectors, one contract for every ISA; wrapped in _ukernel.pxi): an
# MR x NR = 6 x (two SIMD vectors) block of 12 accumulators, the A operand
# packed in panels of MR rows, the B operand a tile buffer whose rows hold NR
# consecutive values. Every block size is in the blocking table of _isa.h.
# The implicit forward of one or two output channels per group holds one row
# of MR*NR values in the same registers instead (_micro_taps_row).
#
# Compiler directives: boundscheck=False, wraparound=False, cdivision=True,
# initializedcheck=False (set in setup.py). Index arithmetic is Py_ssize_t.

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

import numpy as np

from fastconv._kernels._openmp cimport omp_get_thread_num


include "_ukernel.pxi"

cdef enum:
    DOT_LANES = 16  # independent partial sums of _dot
    PB = 16     # outputs per block of _pack_tile_grad's transpose

cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef struct _Range:
    Py_ssize_t lo, hi


cdef inline _Range _valid_range(Py_ssize_t start, Py_ssize_t step, Py_ssize_t count,
                                Py_ssize_t size) noexcept nogil:
    """[lo, hi): the t in [0, count) with 0 <= start + t*step < size.

    Returned by value, never through pointers: a variable whose address is
    taken inside a prange is not made thread-private by Cython.
    """
    cdef _Range r
    cdef Py_ssize_t h = count
    r.lo = 0
    if start < 0:
        r.lo = (-start + step - 1) // step
    if start + (count - 1) * step >= size:
        h = (size - start + step - 1) // step if start < size else 0
    r.lo = min(r.lo, count)
    r.hi = max(h, r.lo)
    return r


cdef struct Geometry:
    # one convolution, in the forward direction: x (N, C_in, H, W) -> y (N, C_out, OH, OW)
    Py_ssize_t H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw
    # strides (in elements) of images, channels and rows of x and y: set and
    # used only by the implicit kernels (see _implicit_geometry)
    Py_ssize_t xn, xc, xr, yn, yc, yr


cdef struct _Run:
    # Positions j .. j+seg of a tile that share an output row (n, oh): their
    # windows start at input row ih0 = oh*sh - ph, columns iw0 + t*sw.
    Py_ssize_t j, seg, n, ih0, iw0


cdef Py_ssize_t _tile_runs(const Geometry* geo, Py_ssize_t q0, Py_ssize_t tp,
                           _Run* runs) noexcept nogil:
    """Split positions q0..q0+tp (numbered n*P + p across the batch) into runs
    along output rows; returns their number (at most tp)."""
    cdef Py_ssize_t P = geo.OH * geo.OW, nrun = 0, j = 0
    cdef Py_ssize_t n = q0 // P
    cdef Py_ssize_t oh = (q0 - n * P) // geo.OW
    cdef Py_ssize_t ow = q0 - n * P - oh * geo.OW
    while j < tp:
        runs[nrun].j = j
        runs[nrun].seg = min(geo.OW - ow, tp - j)
        runs[nrun].n = n
        runs[nrun].ih0 = oh * geo.sh - geo.ph
        runs[nrun].iw0 = ow * geo.sw - geo.pw
        j = j + runs[nrun].seg
        nrun = nrun + 1
        ow = 0
        oh = oh + 1
        if oh == geo.OH:
            oh = 0
            n = n + 1
    return nrun


cdef inline _Range _run_range(Py_ssize_t iw, Py_ssize_t sw, Py_ssize_t seg,
                              Py_ssize_t W) noexcept nogil:
    """_valid_range without a division in the common case of stride 1."""
    cdef _Range r
    if sw != 1:
        return _valid_range(iw, sw, seg, W)
    r.lo = min(max(-iw, 0), seg)
    r.hi = max(min(W - iw, seg), r.lo)
    return r


cdef inline void _copy_row(floating* dst, const floating* src, Py_ssize_t lo,
                           Py_ssize_t hi, Py_ssize_t n, Py_ssize_t sw) noexcept nogil:
    """dst[t] = src[t*sw] for t in [lo, hi), zero for the rest of [0, n): one
    row of a patch tile or of a tile's input copy, zero outside the input."""
    cdef Py_ssize_t t
    for t in range(lo):
        dst[t] = 0
    if sw == 1:
        memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating))
    elif sw == 2:  # a constant stride, which gcc vectorises
        for t in range(lo, hi):
            dst[t] = src[2 * t]
    else:
        for t in range(lo, hi):
            dst[t] = src[t * sw]
    for t in range(hi, n):
        dst[t] = 0


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


cdef void _pack_positions(const floating* y_g, Py_ssize_t y_image, Py_ssize_t P,
                          Py_ssize_t m, Py_ssize_t q0, Py_ssize_t tp,
                          floating* out) noexcept nogil:
    """Pack rows 0..m of grad_out for positions q0..q0+tp (which may span
    images) into ceil(m/MR) panels of tp x MR; `y_g` points at channel 0 of
    the group in image 0, images are `y_image` apart."""
    cdef Py_ssize_t mp, i, j, t, n, p, run, row
    cdef const floating* src
    for mp in range(_ceil_div(m, MR)):
        for i in range(MR):
            row = mp * MR + i
            t = 0
            n = q0 // P
            p = q0 - n * P
            while t < tp:
                run = min(P - p, tp - t)
                if row < m:
                    src = y_g + n * y_image + row * P + p
                    for j in range(run):
                        out[(mp * tp + t + j) * MR + i] = src[j]
                else:
                    for j in range(run):
                        out[(mp * tp + t + j) * MR + i] = 0
                t = t + run
                p = 0
                n = n + 1


cdef void _transpose_panels(const floating* col, Py_ssize_t kc, Py_ssize_t tp,
                            floating* out) noexcept nogil:
    """out[(kb*tp + t)*NR + jj] = col[(kb*NR + jj)*LD + t], zero past row kc:
    the patch tile as B panels whose columns are rows of K (weight gradient)."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t kb, t, jj, rows
    cdef const floating* src
    cdef floating* dst
    for kb in range(_ceil_div(kc, nr)):
        rows = min(nr, kc - kb * nr)
        src = col + kb * nr * LD
        dst = out + kb * tp * nr
        # blocks of 8 positions: contiguous 8-wide reads of each row, rows
        # of nr written whole
        for t in range(0, tp - tp % 8, 8):
            for jj in range(rows):
                dst[t * nr + jj] = src[jj * LD + t]
                dst[(t + 1) * nr + jj] = src[jj * LD + t + 1]
                dst[(t + 2) * nr + jj] = src[jj * LD + t + 2]
                dst[(t + 3) * nr + jj] = src[jj * LD + t + 3]
                dst[(t + 4) * nr + jj] = src[jj * LD + t + 4]
                dst[(t + 5) * nr + jj] = src[jj * LD + t + 5]
                dst[(t + 6) * nr + jj] = src[jj * LD + t + 6]
                dst[(t + 7) * nr + jj] = src[jj * LD + t + 7]
        for t in range(tp - tp % 8, tp):
            for jj in range(rows):
                dst[t * nr + jj] = src[jj * LD + t]
        for t in range(tp):
            for jj in range(rows, nr):
                dst[t * nr + jj] = 0


cdef Geometry _geometry(Py_ssize_t H, Py_ssize_t W, Py_ssize_t KH, Py_ssize_t KW,
                        Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw):
    cdef Geometry geo
    geo.H, geo.W, geo.KH, geo.KW, geo.OH, geo.OW = H, W, KH, KW, OH, OW
    geo.sh, geo.sw, geo.ph, geo.pw, geo.dh, geo.dw = sh, sw, ph, pw, dh, dw
    return geo


cdef inline bint _images_as_rows(const Geometry* geo) noexcept nogil:
    """Whether _implicit_geometry sees the images as the rows of one image."""
    return geo.H == 1 and geo.OH == 1 and geo.KH == 1 and geo.ph == 0


cdef Geometry _implicit_geometry(const Geometry* geo, Py_ssize_t N, Py_ssize_t C_in,
                                 Py_ssize_t C_out, Py_ssize_t* n_images) noexcept nogil:
    """`geo` with the strides of C-contiguous x (N, C_in, H, W) and y (N,
    C_out, OH, OW), for the implicit kernels; the number of images they see
    in n_images.

    A 1-D convolution (H = OH = kH = 1) is seen as one image whose rows are
    the N images: x[n, c, 0, :] is row n of channel c. Its tiles then stack
    several short rows (MNIST-1D's 10 or 19 outputs), instead of one row
    per tile, most of it padding of the micro-kernel's NR columns.
    """
    cdef Geometry g = geo[0]
    g.xr, g.xc, g.xn = g.W, g.H * g.W, C_in * g.H * g.W
    g.yr, g.yc, g.yn = g.OW, g.OH * g.OW, C_out * g.OH * g.OW
    n_images[0] = N
    if _images_as_rows(geo):
        g.H = g.OH = N
        g.sh = g.dh = 1  # rows no longer step over an input row
        g.xr, g.xc, g.xn = C_in * g.W, g.W, 0
        g.yr, g.yc, g.yn = C_out * g.OW, g.OW, 0
        n_images[0] = 1
    return g


cdef inline Py_ssize_t _phase_extent(Py_ssize_t k, Py_ssize_t d, Py_ssize_t s) noexcept nogil:
    """The rows (or columns) a tile reads beyond its outputs, in its phases."""
    return (k - 1) * d // s


cdef double _implicit_tiles(const Geometry* geo, Py_ssize_t nr, Py_ssize_t n_planes,
                            int n_threads, double slack, Py_ssize_t* rows,
                            Py_ssize_t* cw) noexcept nogil:
    """The implicit kernels' tile of rows x cw outputs and its efficiency,
    the share of the forward's work that is useful; -1 where no tile holds a
    row of outputs (fastconv._plan decides whether the path is taken).

    A tile's rows in each phase of its input copy are cw + ew wide (ew =
    (KW-1)*dw // sw), and the forward computes the positions between rows
    and throws them away, as it does the tail of the last block of nr
    columns. The most rows are taken whose efficiency is within `slack` of
    the best, while the tiles still number at least 4 per thread. (The
    weight gradient sums only the valid positions, but the same tiles serve
    it well.)
    """
    cdef Py_ssize_t ew = _phase_extent(geo.KW, geo.dw, geo.sw), r, rmax, c, wt
    cdef double eff, best = 0
    if 2 * ew >= QT:
        return -1
    if geo.OW + ew <= QT:
        c = geo.OW
        rmax = min(geo.OH, QT // (c + ew))
    else:
        c = QT - ew
        rmax = 1
    wt = c + ew
    rows[0] = 1
    for r in range(1, rmax + 1):
        if n_planes * _ceil_div(geo.OH, r) * _ceil_div(geo.OW, c) < 4 * n_threads and r > 1:
            break
        eff = <double> (r * c) / (_ceil_div(r * wt, nr) * nr)
        if eff >= best - slack:
            rows[0] = r
            best = max(best, eff)
    cw[0] = c
    return best


def implicit_tiles(Py_ssize_t itemsize, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W,
                   Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t sh,
                   Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t dh, Py_ssize_t dw,
                   Py_ssize_t groups, int n_threads, double slack):
    """(rows, columns, efficiency) of the implicit kernels' tiles for N
    images of this geometry, or None where no tile holds a row of outputs;
    for fastconv._plan, which passes the result back to the kernels."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if itemsize == 4 else FASTCONV_NR_F64
    cdef Py_ssize_t rows = 0, cw = 0, n_images
    cdef Geometry geo = _geometry(H, W, KH, KW, OH, OW, sh, sw, ph, 0, dh, dw)
    geo = _implicit_geometry(&geo, N, groups, groups, &n_images)
    cdef double eff = _implicit_tiles(&geo, nr, n_images * groups, n_threads, slack, &rows, &cw)
    if eff < 0:
        return None
    return rows, cw, eff


def blocking():
    """This build's blocking table (_isa.h), for fastconv._plan."""
    return dict(MR=MR, NR={4: FASTCONV_NR_F32, 8: FASTCONV_NR_F64}, TP=TP, KC=KC, QT=QT)


def conv2d_forward(const floating[:, :, :, ::1] x,          # IN  (N, C_in, H, W)
                   const floating[:, :, :, ::1] weight,     # IN  (C_out, C_in/g, kH, kW)
                   const floating[::1] bias,                # IN  (C_out,) or empty
                   floating[:, :, :, ::1] out,              # OUT (N, C_out, OH, OW)
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                   str path, Py_ssize_t rows, Py_ssize_t cw, int n_threads):
    """out = conv2d(x, weight, bias): cross-correlation over padded patches.

    `path` (chosen by fastconv._plan): "im2col", or "implicit" or
    "implicit_row" on tiles of rows x cw outputs.
    """
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1]
    cdef Py_ssize_t C_out = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef Geometry geo = _geometry(x.shape[2], x.shape[3], KH, KW, out.shape[2], out.shape[3],
                                  sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, K = Cg * KH * KW
    cdef Py_ssize_t nmp = _ceil_div(Mg, MR), g, n_images
    cdef Geometry igeo = _implicit_geometry(&geo, N, C_in, C_out, &n_images)
    if path not in ("im2col", "implicit", "implicit_row"):
        raise ValueError(f"unknown forward path {path!r}")
    if N * geo.OH * geo.OW == 0:
        return
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] wpack = np.empty(groups * nmp * MR * K, dtype=dtype)
    with nogil:
        for g in range(groups):
            _pack_rows(&weight[g * Mg, 0, 0, 0], Mg, K, K, &wpack[g * nmp * MR * K])
    cdef bint by_rows = path == "implicit_row"
    if path != "im2col":
        _forward_implicit(x, wpack, bias, out, &igeo, n_images, groups, rows, cw, by_rows,
                          n_threads)
    else:
        _forward_im2col(x, wpack, bias, out, &geo, groups, n_threads)


cdef inline void _store_block(const floating* ctile, Py_ssize_t nr, Py_ssize_t rows,
                              Py_ssize_t run, floating* dst, Py_ssize_t ld_dst,
                              const floating[::1] bias, Py_ssize_t co, bint first) noexcept nogil:
    """Write (first block of K: with the bias) or add `run` columns of `rows`
    rows of an MR x nr result block to output rows ld_dst apart."""
    cdef Py_ssize_t i, jj
    cdef floating b
    for i in range(rows):
        if first:
            b = bias[co + i] if bias.shape[0] > 0 else 0
            for jj in range(run):
                dst[i * ld_dst + jj] = ctile[i * nr + jj] + b
        else:
            for jj in range(run):
                dst[i * ld_dst + jj] += ctile[i * nr + jj]


cdef void _forward_im2col(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                          const floating[::1] bias, floating[:, :, :, ::1] out,
                          const Geometry* geo, Py_ssize_t groups, int n_threads) except *:
    """The forward over tiles of TP positions that may span images, each built
    by _im2col KC rows at a time."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], C_out = out.shape[1]
    cdef Py_ssize_t P = geo.OH * geo.OW, NP = N * P
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, K = Cg * geo.KH * geo.KW
    cdef Py_ssize_t nmp = _ceil_div(Mg, MR), ntiles = _ceil_div(NP, TP)
    # K in nkb blocks of equal depth kcb <= KC (not KC and a thin remainder)
    cdef Py_ssize_t nkb = _ceil_div(K, KC), kcb = _ceil_div(K, nkb), nrun
    cdef Py_ssize_t item, g, q0, tp, kb0, k0, kc, mp, nb, j, rows, cols, q, n, p, run
    cdef Py_ssize_t n_failed = 0
    cdef floating* col
    cdef floating* ctile
    cdef _Run* runs

    _note_workspace((KC * LD + MR * NR_MAX) * sizeof(floating) + TP * sizeof(_Run), n_threads)
    with nogil, parallel(num_threads=n_threads):
        col = <floating*> calloc(KC * LD, sizeof(floating))
        ctile = <floating*> malloc(MR * NR_MAX * sizeof(floating))
        runs = <_Run*> malloc(TP * sizeof(_Run))
        for item in prange(groups * ntiles, schedule='static'):
            if col == NULL or ctile == NULL or runs == NULL:
                n_failed += 1
                continue
            g = item // ntiles
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
                    for mp in range(nmp):
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
                                         bias, g * Mg + mp * MR, k0 == 0)
                            j = j + run
                            p = 0
                            n = n + 1
        free(runs)
        free(ctile)
        free(col)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


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
                             const floating[::1] bias, Py_ssize_t co, bint first) noexcept nogil:
    """Write (first block of K: with the bias) or add the tile's positions q ..
    q+ncols of a result block of `rows` output channels from co (rows of
    ctile ldc apart) to image y_n of the output, row by row of the tile; the
    discarded columns are dropped."""
    cdef Py_ssize_t j = 0, r = q // t.wt, c = q % t.wt, run
    while j < ncols:
        run = min(ncols - j, t.wt - c)
        if c < tl.cols:
            _store_block(ctile + j, ldc, rows, min(run, tl.cols - c),
                         y_n + co * geo.yc + (tl.oh0 + r) * geo.yr + tl.ow0 + c, geo.yc,
                         bias, co, first)
        j = j + run
        c = 0
        r = r + 1


cdef void _forward_implicit(const floating[:, :, :, ::1] x, const floating[::1] wpack,
                            const floating[::1] bias, floating[:, :, :, ::1] out,
                            const Geometry* geo, Py_ssize_t N, Py_ssize_t groups,
                            Py_ssize_t R, Py_ssize_t cw, bint by_rows, int n_threads) except *:
    """The forward with no im2col: the B operand is read in place.

    For each tile (see _Tiling) and block of channels, the input is copied
    once into xt. Tap (ci, kh, kw) of output q is xt[off + q], where off is
    the tap's offset (_tap_offsets): each row of B is a contiguous run of xt.
    The columns c >= cw of the tile are computed and discarded. `geo` is an
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
    cdef Py_ssize_t item, cb, ci0, nci, nb, mp, m, co
    cdef Py_ssize_t bw = MR * nr
    cdef Py_ssize_t n_failed = 0
    cdef floating* xt
    cdef floating* ctile

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
                                        cb == 0)
                    continue
                for nb in range(_ceil_div(tl.npos, nr)):
                    for mp in range(nmp):
                        _micro_taps(nci * KK, &wpack[((tl.g * nmp + mp) * K + ci0 * KK) * MR],
                                    xt + nb * nr, &off[0], ctile, nr)
                        _store_tile(ctile, nr, min(MR, Mg - mp * MR),
                                    min(nr, tl.npos - nb * nr), nb * nr, &t, &tl, geo,
                                    &out[0, 0, 0, 0] + tl.n * geo.yn, bias, tl.g * Mg + mp * MR,
                                    cb == 0)
        free(ctile)
        free(xt)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


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

    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] wpack = np.empty(max(1, groups * nrp * MR * Mg), dtype=dtype)
    with nogil:
        for g in range(groups):
            _pack_cols(&weight[g * Mg, 0, 0, 0], Mg, K, K, &wpack[g * nrp * MR * Mg])
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
    tile (zero in the columns c >= cols, so that they add nothing). Row (ci,
    kw) of colgrad is added to a zeroed copy xt at the tap's offset, a
    contiguous run, and xt is added into grad_in (_unfill_tile): the adjoint
    of the forward's reads. `wpack` is W_g^T packed by _pack_cols; `geo` is
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
                                    dst = xt + off[k - kr0] + nb * nr
                                    for j in range(nr):
                                        dst[j] += ctile[i * nr + j]
                _unfill_tile(xt, nci, geo, &t, &tl,
                             &grad_in[0, 0, 0, 0] + (tl.g * Cg + ci0) * geo.xc)
        free(ctile)
        free(gtile)
        free(xt)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


cdef void _pack_tile_grad(const floating* y_c, Py_ssize_t m, const Geometry* geo,
                          const _Tile* tl, floating* out) noexcept nogil:
    """Rows 0..m of grad_out (y_c: channel 0 of the group in one image) at the
    tile's outputs p = r*cols + c, as ceil(m/NR) B panels of rows*cols x NR
    (zero past row m).

    A transpose, done PB outputs at a time: each block of a panel (PB*NR
    values) is filled from NR rows before the next, so that it stays in the
    L1 cache. Row by row, every row walked the whole panel (64 KB for a tile
    of 512 outputs in float32), and the packing took half the weight
    gradient's time on CIFAR's first layer."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t P = tl.rows * tl.cols, yc = geo.yc, yr = geo.yr
    cdef Py_ssize_t cp, j, r, c, c0, cb, blk, row
    cdef const floating* src
    cdef floating* dst
    for cp in range(_ceil_div(m, nr)):
        for r in range(tl.rows):
            for blk in range(_ceil_div(tl.cols, PB)):
                c0 = blk * PB
                cb = min(PB, tl.cols - c0)
                dst = out + (cp * P + r * tl.cols + c0) * nr
                for j in range(nr):
                    row = cp * nr + j
                    if row >= m:
                        for c in range(cb):
                            dst[c * nr + j] = 0
                        continue
                    src = y_c + row * yc + (tl.oh0 + r) * yr + tl.ow0 + c0
                    for c in range(cb):
                        dst[c * nr + j] = src[c]


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


cdef void _place(const floating* src, Py_ssize_t H, Py_ssize_t W, Py_ssize_t r0,
                 Py_ssize_t c0, Py_ssize_t Hp, Py_ssize_t Wp, floating* dst) noexcept nogil:
    """dst (Hp x Wp) = src (H x W) with its (0, 0) at (r0, c0) (both >= 0, and
    it fits), zero elsewhere."""
    cdef Py_ssize_t r, c
    cdef floating* row
    for r in range(Hp):
        row = dst + r * Wp
        if r < r0 or r >= r0 + H:
            for c in range(Wp):
                row[c] = 0
            continue
        for c in range(c0):
            row[c] = 0
        memcpy(row + c0, src + (r - r0) * W, W * sizeof(floating))
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


cdef void _weight_grad_direct(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] grad_out,
                              floating[:, ::1] partial, const Geometry* geo,
                              Py_ssize_t groups, int n_threads) except *:
    """The stride-1 weight gradient for few output channels per group, as dot
    products over flat planes (see _Flat): dW[co, ci, kh, kw] += the dot of
    grad_out[n, co] and x[n, ci] shifted by the tap, per image.

    Parallel over (image, group), each thread adding into its own row of
    `partial`. Taken for at most NR/4 output channels, where the GEMM paths
    fill a quarter of each B panel or less (lenet1's 6 channels ran at 24
    GFLOP/s): there it measured 0.58-0.78x their time, and with 12-15
    channels 1.5-2x.
    """
    cdef Py_ssize_t N = x.shape[0], C_in = x.shape[1], C_out = grad_out.shape[1]
    cdef Py_ssize_t Cg = C_in // groups, Mg = C_out // groups, KK = geo.KH * geo.KW
    cdef Py_ssize_t K = Cg * KK, item, n, g, ci, co, kh, kw, n_failed = 0
    cdef _Flat f = _flat(geo)
    # the dots run over whole blocks of DOT_LANES (no scalar remainder): the
    # planes are followed by DOT_LANES zeros, so the extra products are 0
    cdef Py_ssize_t L = _ceil_div(f.L, DOT_LANES) * DOT_LANES
    cdef Py_ssize_t xsize = f.Hp * f.Wp + DOT_LANES, ysize = geo.OH * f.Wp + DOT_LANES
    cdef floating* xp
    cdef floating* yp
    cdef floating* acc
    _note_workspace((xsize + Mg * ysize) * sizeof(floating), n_threads)
    with nogil, parallel(num_threads=n_threads):
        xp = <floating*> calloc(xsize + Mg * ysize, sizeof(floating))
        yp = xp + xsize
        acc = &partial[omp_get_thread_num(), 0]
        for item in prange(N * groups, schedule='static'):
            if xp == NULL:
                n_failed += 1
                continue
            n = item // groups
            g = item % groups
            for co in range(Mg):
                _place(&grad_out[n, g * Mg + co, 0, 0], geo.OH, geo.OW, 0, 0, geo.OH, f.Wp,
                       yp + co * ysize)
            for ci in range(Cg):
                _place(&x[n, g * Cg + ci, 0, 0], geo.H, geo.W, geo.ph, geo.pw, f.Hp, f.Wp, xp)
                for co in range(Mg):
                    for kh in range(geo.KH):
                        for kw in range(geo.KW):
                            acc[(g * Mg + co) * K + ci * KK + kh * geo.KW + kw] += <floating> _dot(
                                yp + co * ysize, xp + kh * geo.dh * f.Wp + kw * geo.dw, L)
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
        _weight_grad_direct(x, grad_out, partial, &geo, groups, n_threads)
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


# -- depthwise convolution (groups == C_in == C_out) ----------------------------
#
# With one input and one output channel per group the GEMM is 1 x kH*kW: a
# direct loop is the right algorithm, parallel over (n, c) planes for forward
# and input gradient, over c for the weight gradient, whose taps each own one
# weight (no write conflicts). At stride 1 every tap is one pass over a flat
# plane (see _Flat); other strides take one strided pass per row and tap.


cdef void _depthwise_plane_s1(const floating* src, floating* dst, const floating* w,
                              floating b, const Geometry* geo, const _Flat* f,
                              bint transposed, floating* pad, floating* acc) noexcept nogil:
    """_depthwise_plane at stride 1 (see _Flat), plus the bias b; `pad` and
    `acc` are scratch for Hp*Wp values each."""
    cdef Py_ssize_t kh, kw, j, r, c, off, Wp = f.Wp
    cdef floating wv
    if transposed:
        # acc (Hp x Wp) += w * src, laid out with row stride Wp in `pad`
        _place(src, geo.OH, geo.OW, 0, 0, geo.OH, Wp, pad)
        memset(acc, 0, f.Hp * Wp * sizeof(floating))
    else:
        _place(src, geo.H, geo.W, geo.ph, geo.pw, f.Hp, Wp, pad)
        memset(acc, 0, f.L * sizeof(floating))
    for kh in range(geo.KH):
        for kw in range(geo.KW):
            wv = w[kh * geo.KW + kw]
            off = kh * geo.dh * Wp + kw * geo.dw
            if transposed:
                for j in range(f.L):
                    acc[off + j] += wv * pad[j]
            else:
                for j in range(f.L):
                    acc[j] += wv * pad[off + j]
    if transposed:
        for r in range(geo.H):
            for c in range(geo.W):
                dst[r * geo.W + c] = b + acc[(r + geo.ph) * Wp + c + geo.pw]
    else:
        for r in range(geo.OH):
            for c in range(geo.OW):
                dst[r * geo.OW + c] = b + acc[r * Wp + c]


cdef void _depthwise_plane(const floating* src, floating* dst, const floating* w,
                           const Geometry* geo, bint transposed) noexcept nogil:
    """Forward: dst (OH, OW) += sum of taps w * src (H, W); transposed: dst (H, W)
    += the adjoint, from src (OH, OW). One strided pass per row and tap."""
    cdef Py_ssize_t kh, kw, oh, ih, iw0, ow, lo, hi
    cdef _Range rg
    cdef Py_ssize_t H = geo.H, W = geo.W, OW = geo.OW, sw = geo.sw
    cdef floating wv
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
                if transposed:
                    for ow in range(lo, hi):
                        dst[ih * W + iw0 + ow * sw] += wv * src[oh * OW + ow]
                else:
                    for ow in range(lo, hi):
                        dst[oh * OW + ow] += wv * src[ih * W + iw0 + ow * sw]


def depthwise_forward_or_input_grad(
        const floating[:, :, :, ::1] src,       # IN  x (N, C, H, W), or grad_out (N, C, OH, OW)
        const floating[:, :, :, ::1] weight,    # IN  (C, 1, kH, kW)
        const floating[::1] bias,               # IN  (C,) or empty
        floating[:, :, :, ::1] dst,             # OUT out (N, C, OH, OW), or grad_in (N, C, H, W)
        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
        Py_ssize_t dh, Py_ssize_t dw, bint transposed, int n_threads):
    """Depthwise conv2d (transposed=False) or its input gradient, which is also
    the depthwise conv_transpose2d (transposed=True), plus bias."""
    cdef Py_ssize_t N = src.shape[0], C = src.shape[1]
    cdef Geometry geo
    if transposed:
        geo = _geometry(dst.shape[2], dst.shape[3], weight.shape[2], weight.shape[3],
                        src.shape[2], src.shape[3], sh, sw, ph, pw, dh, dw)
    else:
        geo = _geometry(src.shape[2], src.shape[3], weight.shape[2], weight.shape[3],
                        dst.shape[2], dst.shape[3], sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t plane, c, q, size = dst.shape[2] * dst.shape[3], n_failed = 0
    cdef bint has_bias = bias.shape[0] > 0, flat = sh == 1 and sw == 1
    cdef _Flat f = _flat(&geo)
    cdef floating b
    cdef floating* d
    cdef floating* pad = NULL
    if flat:
        _note_workspace(2 * f.Hp * f.Wp * sizeof(floating), n_threads)
    with nogil, parallel(num_threads=n_threads):
        if flat:
            pad = <floating*> malloc(2 * f.Hp * f.Wp * sizeof(floating))
        for plane in prange(N * C, schedule='static'):
            c = plane % C
            d = &dst[plane // C, c, 0, 0]
            b = bias[c] if has_bias else 0
            if flat:
                if pad == NULL:
                    n_failed += 1
                    continue
                _depthwise_plane_s1(&src[plane // C, c, 0, 0], d, &weight[c, 0, 0, 0], b,
                                    &geo, &f, transposed, pad, pad + f.Hp * f.Wp)
                continue
            for q in range(size):
                d[q] = b
            _depthwise_plane(&src[plane // C, c, 0, 0], d, &weight[c, 0, 0, 0], &geo,
                             transposed)
        free(pad)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def depthwise_weight_grad(const floating[:, :, :, ::1] x,          # IN  (N, C, H, W)
                          const floating[:, :, :, ::1] grad_out,   # IN  (N, C, OH, OW)
                          floating[:, ::1] partial,                # OUT (n_threads, C*kH*kW), zeroed
                          Py_ssize_t KH, Py_ssize_t KW,
                          Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t dh, Py_ssize_t dw, int n_threads):
    """Per-thread partial sums of the depthwise conv2d_weight; the caller sums
    axis 0: dW[c, kh, kw] = sum over (n, oh, ow) of grad_out[n, c, oh, ow] *
    x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]. At stride 1 this is
    _weight_grad_direct with one channel per group; otherwise one thread owns
    each channel's taps (into partial[0]) and sums them a row at a time."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    cdef Geometry geo = _geometry(x.shape[2], x.shape[3], KH, KW, grad_out.shape[2],
                                  grad_out.shape[3], sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t c, n, kh, kw, oh, ih, iw0, ow, lo, hi
    cdef _Range rg
    cdef double total
    cdef floating row
    cdef const floating* xp
    cdef const floating* gp
    if sh == 1 and sw == 1:
        _weight_grad_direct(x, grad_out, partial, &geo, C, n_threads)
        return
    for c in prange(C, schedule='static', nogil=True, num_threads=n_threads):
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
                            continue
                        row = 0
                        for ow in range(lo, hi):
                            row = row + gp[oh * geo.OW + ow] * \
                                xp[ih * geo.W + iw0 + ow * geo.sw]
                        total = total + row
                partial[0, (c * KH + kh) * KW + kw] = <floating> total


cdef Py_ssize_t _workspace_peak = 0


cdef void _note_workspace(Py_ssize_t per_thread, int n_threads):
    """Record the bytes one kernel call mallocs outside NumPy, over all threads."""
    global _workspace_peak
    _workspace_peak = max(_workspace_peak, per_thread * n_threads)


def workspace_peak(bint reset=False):
    """The most bytes one kernel call of this module has malloc'd outside
    NumPy (per-thread tiles, over all threads) since the last reset; with
    reset=True, return it and start again from zero.

    Besides the NumPy arrays (outputs, packed weights, per-thread partial
    sums) this is the whole of a call's workspace: it is bounded by tiles,
    never by the batch.
    """
    global _workspace_peak
    peak = _workspace_peak
    if reset:
        _workspace_peak = 0
    return peak


cdef enum:
    SUM_LANES = 16  # independent partial sums of _sum: enough to fill the adder pipes
    SUM_BLOCK = 4096  # values of a block of channels summed over the batch by bias_grad


cdef inline double _sum(const floating* row, Py_ssize_t n) noexcept nogil:
    """sum(row[:n]) in float64, over SUM_LANES interleaved partial sums so that the adds
    vectorise and do not wait on each other."""
    cdef double acc[SUM_LANES]
    cdef double s = 0
    cdef Py_ssize_t p, lane, n_full = n - n % SUM_LANES
    for lane in range(SUM_LANES):
        acc[lane] = 0
    for p in range(n_full // SUM_LANES):
        for lane in range(SUM_LANES):
            acc[lane] += row[p * SUM_LANES + lane]
    for p in range(n_full, n):
        s += row[p]
    for lane in range(SUM_LANES):
        s += acc[lane]
    return s


def bias_grad(const floating[:, :, ::1] grad_out,   # IN  (N, C, P)
              floating[::1] out,                    # OUT (C,)
              int n_threads):
    """out[c] = sum over n and positions of grad_out[n, c], accumulated in float64.

    Parallel over channels, each summing its N rows of P values. Rows shorter
    than 2*SUM_LANES (MNIST-1D's 5 to 19 positions) cost more in loop
    overhead than in adds: there, parallel over blocks of channels whose
    positions fill about SUM_BLOCK values, each image's block is one
    contiguous run added into a float64 copy that stays in cache, summed per
    channel at the end (0.4-0.6x the time; with longer rows, 1.4-2.2x).
    """
    cdef Py_ssize_t N = grad_out.shape[0], C = grad_out.shape[1], P = grad_out.shape[2]
    cdef Py_ssize_t cpb = max(1, SUM_BLOCK // max(P, 1)), nblocks = _ceil_div(C, cpb)
    cdef Py_ssize_t blk, c0, nc, n, i, c, n_failed = 0
    cdef const floating* src
    cdef double* acc
    cdef double s
    if P >= 2 * SUM_LANES or N == 0:
        for c in prange(C, schedule='static', nogil=True, num_threads=n_threads):
            s = 0
            for n in range(N):
                s = s + _sum(&grad_out[n, c, 0], P)
            out[c] = <floating> s
        return
    _note_workspace(cpb * P * sizeof(double), n_threads)
    with nogil, parallel(num_threads=n_threads):
        acc = <double*> malloc(cpb * P * sizeof(double))
        for blk in prange(nblocks, schedule='static'):
            if acc == NULL:
                n_failed += 1
                continue
            c0 = blk * cpb
            nc = min(cpb, C - c0)
            src = &grad_out[0, c0, 0]
            for i in range(nc * P):
                acc[i] = src[i]
            for n in range(1, N):
                src = &grad_out[n, c0, 0]
                for i in range(nc * P):
                    acc[i] += src[i]
            for c in range(nc):
                out[c0 + c] = <floating> _sum(acc + c * P, P)
        free(acc)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")
