# The GEMM micro-kernels, as the convolution kernels see them: the blocking
# table and the C micro-kernels of _ukernel.h (compiled once per ISA, as is
# everything that includes this file), wrapped for the fused `floating`
# type, and thin entry points through which the tests check each
# micro-kernel against NumPy and the benchmark measures it against the FMA
# peak.

cdef extern from "_ukernel.h" nogil:
    # the blocking table (see _isa.h)
    enum:
        FASTCONV_NR_F32  # micro-kernel columns for float32 (2 SIMD vectors)
        FASTCONV_NR_F64  # ... and for float64
        FASTCONV_VEC_F32  # lanes of one vector of floats
        FASTCONV_VEC_F64  # ... and of doubles
        MR "FASTCONV_MR"  # rows of the micro-kernel's accumulator block
        NR_MAX "FASTCONV_NR_MAX"  # the widest NR of any build
        TP "FASTCONV_TP"  # output positions per tile (a multiple of every NR)
        LD "FASTCONV_LD"  # row stride of the per-thread tile buffers
        KC "FASTCONV_KC"  # depth of one packed block (rows of K, or columns for dW)
        RB "FASTCONV_RB"  # rows of one column block of the input gradient (a multiple of MR)
        QT "FASTCONV_QT"  # most positions (discarded ones included) in an implicit tile
    const char* FASTCONV_ISA_NAME  # the vector ISA of this build, for show_config
    # the micro-kernels (see _ukernel.h for their contract)
    void fc_gemm_f32(Py_ssize_t kc, const float* a, const float* b, Py_ssize_t ldb,
                     float* c, Py_ssize_t ldc)
    void fc_gemm_f64(Py_ssize_t kc, const double* a, const double* b, Py_ssize_t ldb,
                     double* c, Py_ssize_t ldc)
    void fc_gemm_taps_f32(Py_ssize_t kc, const float* a, const float* b, const Py_ssize_t* off,
                          float* c, Py_ssize_t ldc, const float* bias, bint add, bint relu)
    void fc_gemm_taps_f64(Py_ssize_t kc, const double* a, const double* b, const Py_ssize_t* off,
                          double* c, Py_ssize_t ldc, const double* bias, bint add, bint relu)
    void fc_gemm_row_f32(Py_ssize_t kc, const float* a, const float* b, const Py_ssize_t* off,
                         float* c)
    void fc_gemm_row_f64(Py_ssize_t kc, const double* a, const double* b, const Py_ssize_t* off,
                         double* c)
    void fc_gemm_rows_f32(Py_ssize_t nseg, Py_ssize_t seglen, Py_ssize_t sstride, const float* a,
                          const Py_ssize_t* aoff, const float* b, float* c, Py_ssize_t ldc)
    void fc_gemm_rows_f64(Py_ssize_t nseg, Py_ssize_t seglen, Py_ssize_t sstride, const double* a,
                          const Py_ssize_t* aoff, const double* b, double* c, Py_ssize_t ldc)
    double fc_fma_peak_f32(Py_ssize_t n, float seed)
    double fc_fma_peak_f64(Py_ssize_t n, double seed)
    # the register transposes of one vector width (see _isa.h)
    void fc_transpose_f32(const float* s, Py_ssize_t lds, float* d, Py_ssize_t ldd)
    void fc_transpose_f64(const double* s, Py_ssize_t lds, double* d, Py_ssize_t ldd)

cdef inline void _micro(Py_ssize_t kc, const floating* a, const floating* b, Py_ssize_t ldb,
                        floating* c, Py_ssize_t ldc) noexcept nogil:
    """c[i, j] = sum_k a[k, i] * b[k, j] for an MR x NR block (fc_gemm).

    `a` is a packed panel (kc x MR, contiguous); row k of `b` starts at
    b + k*ldb and holds NR values.
    """
    if floating is float:
        fc_gemm_f32(kc, a, b, ldb, c, ldc)
    else:
        fc_gemm_f64(kc, a, b, ldb, c, ldc)


cdef inline void _micro_taps(Py_ssize_t kc, const floating* a, const floating* b,
                             const Py_ssize_t* off, floating* c, Py_ssize_t ldc,
                             const floating* bias=NULL, bint add=False,
                             bint relu=False) noexcept nogil:
    """_micro with row k of `b` at b + off[k], the offset of tap k in the
    padded input of the implicit forward (fc_gemm_taps). With `add` the block
    is added to c, else bias[i] (if not NULL) to its row i; with `relu`,
    max(., 0) of that, NaN kept."""
    if floating is float:
        fc_gemm_taps_f32(kc, a, b, off, c, ldc, bias, add, relu)
    else:
        fc_gemm_taps_f64(kc, a, b, off, c, ldc, bias, add, relu)


cdef inline void _micro_taps_row(Py_ssize_t kc, const floating* a, const floating* b,
                                 const Py_ssize_t* off, floating* c) noexcept nogil:
    """c[j] = sum_k a[k*MR] * b[off[k] + j] for j < MR*NR: _micro_taps for
    one row of A (one output channel) and MR times as many columns, in the
    same accumulator registers (fc_gemm_row). With fewer output channels per
    group than MR, _micro_taps computed MR rows all the same, most of them
    padding."""
    if floating is float:
        fc_gemm_row_f32(kc, a, b, off, c)
    else:
        fc_gemm_row_f64(kc, a, b, off, c)


cdef inline void _micro_rows(Py_ssize_t nseg, Py_ssize_t seglen, Py_ssize_t sstride,
                             const floating* a, const Py_ssize_t* aoff, const floating* b,
                             floating* c, Py_ssize_t ldc) noexcept nogil:
    """c[i, j] = sum_k A[i, k] * b[k, j] for an MR x NR block, with row i of A
    read in place: its nseg segments of seglen values start at a + aoff[i] +
    s*sstride. Row k of `b` is b + k*NR (fc_gemm_rows).

    _micro with the A operand unpacked: the weight gradient reads the rows of
    the patch matrix (taps) straight from the padded input, so nothing of
    size K x positions is ever transposed.
    """
    if floating is float:
        fc_gemm_rows_f32(nseg, seglen, sstride, a, aoff, b, c, ldc)
    else:
        fc_gemm_rows_f64(nseg, seglen, sstride, a, aoff, b, c, ldc)


cdef inline void _transpose(const floating* s, Py_ssize_t lds, floating* d,
                            Py_ssize_t ldd) noexcept nogil:
    """d[c*ldd + j] = s[j*lds + c] for j, c < one vector's lanes (fc_transpose)."""
    if floating is float:
        fc_transpose_f32(s, lds, d, ldd)
    else:
        fc_transpose_f64(s, lds, d, ldd)


# -- entry points for the tests and the benchmark ------------------------------


def ukernel():
    """(vector ISA, MR, NR for float32, NR for float64) of this build's micro-kernel."""
    return FASTCONV_ISA_NAME.decode(), MR, FASTCONV_NR_F32, FASTCONV_NR_F64


cdef Py_ssize_t _nr_of(Py_ssize_t itemsize):
    return FASTCONV_NR_F32 if itemsize == 4 else FASTCONV_NR_F64


def _check_block(name, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t want_rows,
                 Py_ssize_t want_cols):
    if rows < want_rows or cols < want_cols:
        raise ValueError(f"Expected {name} of at least ({want_rows}, {want_cols}), "
                         f"got ({rows}, {cols})")


def _check_offsets(const Py_ssize_t[::1] off, Py_ssize_t count, Py_ssize_t width,
                   Py_ssize_t size):
    cdef Py_ssize_t k
    if off.shape[0] < count:
        raise ValueError(f"Expected at least {count} offsets, got {off.shape[0]}")
    for k in range(count):
        if off[k] < 0 or off[k] + width > size:
            raise ValueError(f"offset {off[k]} of row {k} is outside b (size {size})")


def micro_gemm(const floating[:, ::1] a,   # IN  (kc, MR): a packed panel
               const floating[:, ::1] b,   # IN  (kc, ldb >= NR)
               floating[:, ::1] c):        # OUT (MR, ldc >= NR)
    """c[:MR, :NR] = a.T @ b[:, :NR] by fc_gemm."""
    cdef Py_ssize_t nr = _nr_of(sizeof(floating))
    _check_block("a", a.shape[0], a.shape[1], 0, MR)
    _check_block("b", b.shape[0], b.shape[1], a.shape[0], nr)
    _check_block("c", c.shape[0], c.shape[1], MR, nr)
    _micro(a.shape[0], &a[0, 0], &b[0, 0], b.shape[1], &c[0, 0], c.shape[1])


def micro_gemm_taps(const floating[:, ::1] a,     # IN  (kc, MR): a packed panel
                    const floating[::1] b,        # IN  rows of NR at off[k]
                    const Py_ssize_t[::1] off,    # IN  (kc,)
                    floating[:, ::1] c,           # INOUT (MR, ldc >= NR)
                    const floating[::1] bias=None,  # IN (MR,) or None
                    bint add=False, bint relu=False):
    """c[i, j] = sum_k a[k, i] * b[off[k] + j] by fc_gemm_taps, plus c[i, j]
    with `add`, else plus bias[i]; with `relu`, max(., 0) of that."""
    cdef Py_ssize_t nr = _nr_of(sizeof(floating))
    cdef const floating* bp = NULL
    _check_block("a", a.shape[0], a.shape[1], 0, MR)
    _check_offsets(off, a.shape[0], nr, b.shape[0])
    _check_block("c", c.shape[0], c.shape[1], MR, nr)
    if bias is not None:
        if bias.shape[0] != MR:
            raise ValueError(f"Expected a bias of {MR} values, got {bias.shape[0]}")
        bp = &bias[0]
    _micro_taps(a.shape[0], &a[0, 0], &b[0], &off[0], &c[0, 0], c.shape[1], bp, add, relu)


def micro_gemm_row(const floating[:, ::1] a,     # IN  (kc, MR): column 0 is used
                   const floating[::1] b,        # IN  rows of MR*NR at off[k]
                   const Py_ssize_t[::1] off,    # IN  (kc,)
                   floating[::1] c):             # OUT (MR*NR,)
    """c[j] = sum_k a[k, 0] * b[off[k] + j] by fc_gemm_row."""
    cdef Py_ssize_t nr = _nr_of(sizeof(floating))
    _check_block("a", a.shape[0], a.shape[1], 0, MR)
    _check_offsets(off, a.shape[0], MR * nr, b.shape[0])
    _check_block("c", 1, c.shape[0], 1, MR * nr)
    _micro_taps_row(a.shape[0], &a[0, 0], &b[0], &off[0], &c[0])


def micro_gemm_rows(Py_ssize_t nseg, Py_ssize_t seglen, Py_ssize_t sstride,
                    const floating[::1] a,        # IN  rows read at aoff[i] + s*sstride
                    const Py_ssize_t[::1] aoff,   # IN  (MR,)
                    const floating[:, ::1] b,     # IN  (nseg*seglen, NR)
                    floating[:, ::1] c):          # OUT (MR, ldc >= NR)
    """c[i, j] = sum_{s,k} a[aoff[i] + s*sstride + k] * b[s*seglen + k, j] by fc_gemm_rows."""
    cdef Py_ssize_t nr = _nr_of(sizeof(floating)), i
    if nseg < 1 or seglen < 1 or sstride < 0:
        raise ValueError(f"Expected nseg, seglen >= 1 and sstride >= 0, "
                         f"got {nseg}, {seglen}, {sstride}")
    if b.shape[0] != nseg * seglen or b.shape[1] != nr:
        raise ValueError(f"Expected b of shape ({nseg * seglen}, {nr}), "
                         f"got ({b.shape[0]}, {b.shape[1]})")
    _check_offsets(aoff, MR, (nseg - 1) * sstride + seglen, a.shape[0])
    _check_block("c", c.shape[0], c.shape[1], MR, nr)
    _micro_rows(nseg, seglen, sstride, &a[0], &aoff[0], &b[0, 0], &c[0, 0], c.shape[1])


def transpose_block(const floating[:, ::1] s,  # IN  (W, lds >= W)
                    floating[:, ::1] d):        # OUT (W, ldd >= W)
    """d[:W, :W] = s[:W, :W].T by fc_transpose, W the lanes of one vector."""
    cdef Py_ssize_t w = FASTCONV_VEC_F32 if floating is float else FASTCONV_VEC_F64
    _check_block("s", s.shape[0], s.shape[1], w, w)
    _check_block("d", d.shape[0], d.shape[1], w, w)
    _transpose(&s[0, 0], s.shape[1], &d[0, 0], d.shape[1])


def micro_run(Py_ssize_t itemsize, Py_ssize_t kc, Py_ssize_t reps, int n_threads):
    """Run fc_gemm `reps` times on each of n_threads threads, on panels that
    stay in L1 (kc rows); returns the floating-point operations done."""
    cdef Py_ssize_t nr = _nr_of(itemsize), t, r, i
    cdef char* buf
    cdef Py_ssize_t n_failed = 0
    if itemsize not in (4, 8) or kc < 1 or reps < 0 or n_threads < 1:
        raise ValueError(f"Expected itemsize 4 or 8, kc >= 1, reps >= 0 and n_threads >= 1, "
                         f"got {itemsize}, {kc}, {reps}, {n_threads}")
    with nogil:
        for t in prange(n_threads, schedule="static", num_threads=n_threads):
            buf = <char*> calloc(kc * (MR + nr) + MR * nr, itemsize)
            if buf == NULL:
                n_failed += 1
                continue
            for i in range(kc * (MR + nr)):
                if itemsize == 4:
                    (<float*> buf)[i] = 1e-3 * (i % 7)
                else:
                    (<double*> buf)[i] = 1e-3 * (i % 7)
            for r in range(reps):
                if itemsize == 4:
                    fc_gemm_f32(kc, <float*> buf, <float*> buf + kc * MR, nr,
                                <float*> buf + kc * (MR + nr), nr)
                else:
                    fc_gemm_f64(kc, <double*> buf, <double*> buf + kc * MR, nr,
                                <double*> buf + kc * (MR + nr), nr)
            free(buf)
    if n_failed:
        raise MemoryError("fastconv: could not allocate the micro-kernel's panels")
    return 2.0 * MR * nr * kc * reps * n_threads


def fma_peak_run(Py_ssize_t itemsize, Py_ssize_t n, int n_threads):
    """Run fc_fma_peak (n rounds of 2*MR independent vector FMAs) on each of
    n_threads threads; returns the floating-point operations done."""
    cdef Py_ssize_t nr = _nr_of(itemsize), t
    cdef double sink = 0
    if itemsize not in (4, 8) or n < 0 or n_threads < 1:
        raise ValueError(f"Expected itemsize 4 or 8, n >= 0 and n_threads >= 1, "
                         f"got {itemsize}, {n}, {n_threads}")
    with nogil:
        for t in prange(n_threads, schedule="static", num_threads=n_threads):
            if itemsize == 4:
                sink += fc_fma_peak_f32(n, <float> (t + 1))
            else:
                sink += fc_fma_peak_f64(n, <double> (t + 1))
    return 2.0 * MR * nr * n * n_threads
