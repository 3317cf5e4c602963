# Convolution geometry for the kernels: the Geometry struct, the valid range
# of a strided run, the runs of a tile of positions, the implicit kernels'
# view of a 1-D convolution (images as rows) and their tile shape, and the
# workspace accounting. Included by _conv.pxi.

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


cdef inline bint _blocks_by_row(Py_ssize_t cw, Py_ssize_t wt, Py_ssize_t nr) noexcept nogil:
    """Whether the implicit forward's blocks of nr positions start at each
    row of a tile, computing past the row's cw outputs only to the end of
    its last block, rather than run on across rows (wt positions a row):
    where that is no more work. A block within a row goes to the output in
    place."""
    return _ceil_div(cw, nr) * nr <= wt


cdef double _implicit_tiles(const Geometry* geo, Py_ssize_t nr, Py_ssize_t n_planes,
                            int n_threads, double slack, Py_ssize_t* rows,
                            Py_ssize_t* cw) noexcept nogil:
    """The implicit kernels' tile of rows x cw outputs and its efficiency,
    the share of the forward's work that is useful; -1 where no tile holds a
    row of outputs (fastconv._plan decides whether the path is taken).

    A tile's rows in each phase of its input copy are cw + ew wide (ew =
    (KW-1)*dw // sw), and the forward computes the positions between rows
    and throws them away, as it does the tail of the last block of nr
    columns, or, by rows (_blocks_by_row), the tail of each row's last
    block. The most rows are taken whose efficiency is within `slack` of
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
        if _blocks_by_row(c, wt, nr):
            eff = <double> c / (_ceil_div(c, nr) * nr)
        else:
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
    sums, and the channels forward's patches of its at most 512 positions)
    this is the whole of a call's workspace: it is bounded by tiles, never
    by the batch.
    """
    global _workspace_peak
    peak = _workspace_peak
    if reset:
        _workspace_peak = 0
    return peak
