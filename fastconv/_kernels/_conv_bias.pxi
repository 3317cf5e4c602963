# The bias gradient: sums over the batch and positions. Included by _conv.pxi.

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
