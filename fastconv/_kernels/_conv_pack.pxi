# Packing for the micro-kernels: A panels of MR rows (weights, or the
# transposed weight), positions of grad_out as A panels, the patch tile as B
# panels, and grad_out at a tile's outputs as B panels. Included by _conv.pxi.

cdef void _pack_panel(const floating* a, Py_ssize_t m, Py_ssize_t k, Py_ssize_t ld_row,
                      Py_ssize_t ld_col, Py_ssize_t mp, Py_ssize_t width,
                      floating* out) noexcept nogil:
    """Pack panel mp (rows mp*width.., as k x width, zero past row m) of the
    m x k matrix whose value (i, kk) is a[i*ld_row + kk*ld_col]."""
    cdef Py_ssize_t i, kk, rows = min(width, m - mp * width)
    cdef const floating* src = a + mp * width * ld_row
    for kk in range(k):
        for i in range(rows):
            out[kk * width + i] = src[i * ld_row + kk * ld_col]
        for i in range(rows, width):
            out[kk * width + i] = 0


cdef floating[::1] _pack_groups(const floating[:, :, :, ::1] weight, Py_ssize_t groups,
                                bint transposed, Py_ssize_t width, int n_threads):
    """The weight (C_out, C_in/g, kH, kW) in panels of `width` rows, group by
    group: W_g (Mg x K) for the forward (A panels of MR output channels, or
    B panels of NR of them for the "channels" path), or its transpose
    (K x Mg, with `transposed`) for the input gradient. Parallel over
    panels: the weight of a deep layer is MBs (9.4 for 512 -> 512 channels,
    3x3, float32)."""
    cdef Py_ssize_t Mg = weight.shape[0] // groups
    cdef Py_ssize_t K = weight.shape[1] * weight.shape[2] * weight.shape[3]
    cdef Py_ssize_t m = K if transposed else Mg, k = Mg if transposed else K
    cdef Py_ssize_t ld_row = 1 if transposed else K, ld_col = K if transposed else 1
    cdef Py_ssize_t npanels = _ceil_div(m, width), item, g, mp
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] packed = np.empty(groups * npanels * width * k, dtype=dtype)
    if groups * m * k == 0:
        return packed
    with nogil:
        for item in prange(groups * npanels, schedule='static', num_threads=n_threads):
            g = item // npanels
            mp = item % npanels
            _pack_panel(&weight[g * Mg, 0, 0, 0], m, k, ld_row, ld_col, mp, width,
                        &packed[(g * npanels + mp) * width * k])
    return packed


def pack_forward_weight(const floating[:, :, :, ::1] weight, Py_ssize_t groups,
                        bint channels, int n_threads):
    """The forward's panels of `weight`, for conv2d_forward's `packed`: packed
    once for a model whose weights stay fixed (inference), not on every call.
    A panels of MR output channels, or with `channels` B panels of NR of them
    (the "channels" path)."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    return np.asarray(_pack_groups(weight, groups, False, nr if channels else MR, n_threads))


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

cdef void _pack_tile_grad(const floating* y_c, Py_ssize_t m, const Geometry* geo,
                          const _Tile* tl, floating* out) noexcept nogil:
    """Rows 0..m of grad_out (y_c: channel 0 of the group in one image) at the
    tile's outputs p = r*cols + c, as ceil(m/NR) B panels of rows*cols x NR
    (zero past row m).

    A transpose, done PB outputs at a time: each block of a panel (PB*NR
    values) is filled from NR rows before the next, so that it stays in the
    L1 cache. Row by row, every row walked the whole panel (64 KB for a tile
    of 512 outputs in float32), and the packing took half the weight
    gradient's time on CIFAR's first layer. Squares of one vector width go
    through the registers (_transpose); the edges, one value at a time."""
    cdef Py_ssize_t nr = FASTCONV_NR_F32 if floating is float else FASTCONV_NR_F64
    cdef Py_ssize_t w = FASTCONV_VEC_F32 if floating is float else FASTCONV_VEC_F64
    cdef Py_ssize_t P = tl.rows * tl.cols, yc = geo.yc, yr = geo.yr
    cdef Py_ssize_t cp, jb, j, j0, r, c, cv, c0, cb, blk, row
    cdef const floating* src
    cdef const floating* row_src
    cdef floating* dst
    for cp in range(_ceil_div(m, nr)):
        for r in range(tl.rows):
            for blk in range(_ceil_div(tl.cols, PB)):
                c0 = blk * PB
                cb = min(PB, tl.cols - c0)
                dst = out + (cp * P + r * tl.cols + c0) * nr
                src = y_c + (tl.oh0 + r) * yr + tl.ow0 + c0
                for jb in range(nr // w):  # the panel's rows, a vector's lanes at a time
                    j0 = jb * w
                    cv = 0  # the columns transposed in registers
                    if cp * nr + j0 + w <= m:
                        cv = cb - cb % w
                        for c in range(cv // w):
                            _transpose(src + (cp * nr + j0) * yc + c * w, yc,
                                       dst + c * w * nr + j0, nr)
                    for j in range(j0, j0 + w):
                        row = cp * nr + j
                        if row >= m:
                            for c in range(cv, cb):
                                dst[c * nr + j] = 0
                        else:
                            row_src = src + row * yc
                            for c in range(cv, cb):
                                dst[c * nr + j] = row_src[c]
