# Batch normalisation, forward (batch or running statistics) and backward.
#
# This file is included by _norm_generic.pyx, _norm_avx2.pyx and
# _norm_avx512.pyx: the same code compiled with different ISA flags, of which
# fastconv._config picks one at import time (the same ISA as the convolution
# and pooling kernels). One family per ISA rather than a single generic
# module because every loop here is a streaming reduction or a streaming
# multiply-add: the lane accumulators below only become 4- or 8-wide double
# vectors (and the float32 -> float64 conversions 8- or 16-wide) when the
# compiler may use AVX2 or AVX-512, and the dispatch costs nothing: it is
# the machinery _config already has.
#
# Design
# ------
# Inputs arrive as (N, C, S) C-contiguous arrays, S the product of the
# spatial sizes (1 for (N, C) input, L for (N, C, L), H*W for (N, C, H, W)).
# Channel c is then N runs of S contiguous elements, `C*S` apart.
#
# * Parallel axis: channels. Every statistic, every output element and every
#   gradient of channel c is computed by the one thread that owns c, so there
#   are no write conflicts and no cross-thread reduction, and each channel's
#   sums are added in one fixed order: results are bitwise independent of the
#   thread count. (With fewer channels than threads some threads idle; the
#   BatchNorm layers of CNNs have 16 to 2048 channels.)
# * Loop order, S > 1 ("rows"): prange over channels; for each channel all
#   passes run back to back, so the second pass finds the channel's N*S
#   elements in cache while they fit in L2 (a ResNet's at batch 8: at most
#   8*56*56 float32, 100 KB). S == 1 ("columns", (N, C) input): a channel is a
#   column, so a thread takes a block of up to MAX_BLOCK adjacent channels and
#   walks the rows, with one accumulator per channel of the block (vectorised
#   across channels). The block width only splits work; a channel's sums are
#   added in the same order (row by row) whatever it is.
# * Passes. Training forward: 1 pass of statistics, 1 pass writing
#   y = x*alpha + beta (alpha = weight*invstd, beta = bias - mean*alpha, as
#   PyTorch's CPU kernel). Eval forward: 1 pass, y = x*scale + shift with the
#   per-channel scale and shift computed by the caller from the running
#   statistics. Training backward: 1 pass of sums (the statistics, sum(dy),
#   sum(dy*(x - k))), 1 pass writing dx. Eval backward: 1 pass doing both.
# * Accumulation is in float64 for both dtypes (PyTorch's CPU accumulation
#   type for float32 is double), in LANES independent accumulators per sum
#   (row path), combined in a fixed order at the end of the channel; they let
#   the compiler vectorise a reduction it may not reorder.
# * Statistics in one pass, shifted: with k = the channel's first element,
#   s1 = sum(x - k), s2 = sum((x - k)^2), mean = k + s1/M and
#   var = s2/M - (s1/M)^2 (biased; clamped at 0, a NaN kept). Shifting by a
#   sample of the channel keeps the cancellation of the textbook one-pass
#   formula away (its relative error is about eps*(1 + ((mean - k)/std)^2),
#   and k is within a few std of the mean), so one read of the data
#   replaces PyTorch's two.
#   sum(dy*(x - mean)) = sum(dy*(x - k)) - (mean - k)*sum(dy) likewise.
# * Backward, training (M = N*S, xmu = x - mean):
#     grad_bias = sum(dy), grad_weight = sum(dy*xmu)*invstd,
#     dx = (dy - sum(dy)/M - xmu*invstd^2*sum(dy*xmu)/M) * invstd*weight;
#   eval: dx = dy*invstd*weight, grad_weight likewise, with the running mean
#   and invstd = 1/sqrt(running_var + eps) given.
# * An empty weight (or bias) array means none: weight 1, bias 0.
#
# Compiler directives: boundscheck=False, wraparound=False, cdivision=True,
# initializedcheck=False (set in setup.py).

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc


cdef enum:
    LANES = 8        # independent accumulators per sum on the row path
    MAX_BLOCK = 64   # most channels of one block on the column path


cdef struct Sums:
    double x1, x2, g, gx  # sum(x - k), sum((x - k)^2), sum(dy), sum(dy*(x - k))


cdef inline double _lanes(const double* a) noexcept nogil:
    """The LANES accumulators of one sum, added in a fixed order (pairwise)."""
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


# -- row path: one channel, N runs of S elements ------------------------------


cdef Sums _stats_rows(const floating* x, Py_ssize_t N, Py_ssize_t S, Py_ssize_t stride,
                      double k) noexcept nogil:
    """sum(x - k) and sum((x - k)^2) over one channel."""
    cdef double a1[LANES]
    cdef double a2[LANES]
    cdef Py_ssize_t n, i, j
    cdef const floating* r
    cdef double d
    cdef Sums s
    for j in range(LANES):
        a1[j] = 0
        a2[j] = 0
    for n in range(N):
        r = x + n * stride
        i = 0
        while i + LANES <= S:
            for j in range(LANES):
                d = <double>r[i + j] - k
                a1[j] += d
                a2[j] += d * d
            i += LANES
        for j in range(S - i):
            d = <double>r[i + j] - k
            a1[j] += d
            a2[j] += d * d
    s.x1, s.x2, s.g, s.gx = _lanes(a1), _lanes(a2), 0, 0
    return s


cdef Sums _grad_sums_rows(const floating* x, const floating* gy, Py_ssize_t N, Py_ssize_t S,
                          Py_ssize_t stride, double k) noexcept nogil:
    """All four sums of one channel in one pass (training backward)."""
    cdef double a1[LANES]
    cdef double a2[LANES]
    cdef double a3[LANES]
    cdef double a4[LANES]
    cdef Py_ssize_t n, i, j
    cdef const floating* r
    cdef const floating* q
    cdef double d, g
    cdef Sums s
    for j in range(LANES):
        a1[j] = 0
        a2[j] = 0
        a3[j] = 0
        a4[j] = 0
    for n in range(N):
        r = x + n * stride
        q = gy + n * stride
        i = 0
        while i + LANES <= S:
            for j in range(LANES):
                d = <double>r[i + j] - k
                g = q[i + j]
                a1[j] += d
                a2[j] += d * d
                a3[j] += g
                a4[j] += g * d
            i += LANES
        for j in range(S - i):
            d = <double>r[i + j] - k
            g = q[i + j]
            a1[j] += d
            a2[j] += d * d
            a3[j] += g
            a4[j] += g * d
    s.x1, s.x2, s.g, s.gx = _lanes(a1), _lanes(a2), _lanes(a3), _lanes(a4)
    return s


cdef Sums _grad_eval_rows(const floating* x, const floating* gy, floating* gx, Py_ssize_t N,
                          Py_ssize_t S, Py_ssize_t stride, double mean,
                          floating scale) noexcept nogil:
    """sum(dy) and sum(dy*(x - mean)) of one channel, writing dx = dy*scale
    in the same pass (eval backward)."""
    cdef double a3[LANES]
    cdef double a4[LANES]
    cdef Py_ssize_t n, i, j
    cdef const floating* r
    cdef const floating* q
    cdef floating* o
    cdef double g
    cdef Sums s
    for j in range(LANES):
        a3[j] = 0
        a4[j] = 0
    for n in range(N):
        r = x + n * stride
        q = gy + n * stride
        o = gx + n * stride
        i = 0
        while i + LANES <= S:
            for j in range(LANES):
                g = q[i + j]
                a3[j] += g
                a4[j] += g * (<double>r[i + j] - mean)
                o[i + j] = q[i + j] * scale
            i += LANES
        for j in range(S - i):
            g = q[i + j]
            a3[j] += g
            a4[j] += g * (<double>r[i + j] - mean)
            o[i + j] = q[i + j] * scale
    s.x1, s.x2, s.g, s.gx = 0, 0, _lanes(a3), _lanes(a4)
    return s


cdef void _affine_rows(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t S,
                       Py_ssize_t stride, floating a, floating b) noexcept nogil:
    """y = x*a + b over one channel."""
    cdef Py_ssize_t n, i
    cdef const floating* r
    cdef floating* o
    for n in range(N):
        r = x + n * stride
        o = y + n * stride
        for i in range(S):
            o[i] = r[i] * a + b


cdef void _grad_input_rows(const floating* x, const floating* gy, floating* gx, Py_ssize_t N,
                           Py_ssize_t S, Py_ssize_t stride, floating mean, floating k,
                           floating mean_dy, floating scale) noexcept nogil:
    """dx = (dy - mean_dy - (x - mean)*k) * scale over one channel."""
    cdef Py_ssize_t n, i
    cdef const floating* r
    cdef const floating* q
    cdef floating* o
    for n in range(N):
        r = x + n * stride
        q = gy + n * stride
        o = gx + n * stride
        for i in range(S):
            o[i] = (q[i] - mean_dy - (r[i] - mean) * k) * scale


# -- column path: (N, C) input, a block of w adjacent channels -----------------
# Pointers point at element (0, c0); rows are C apart. `acc` is per-thread
# scratch of 5 * MAX_BLOCK doubles: the shifts k, then one array per sum.


cdef void _sums_cols(const floating* x, const floating* gy, Py_ssize_t N, Py_ssize_t C,
                     Py_ssize_t w, bint with_grad, double* acc) noexcept nogil:
    """The sums of each channel of the block, shifted by its first element."""
    cdef double* k = acc
    cdef double* s1 = acc + MAX_BLOCK
    cdef double* s2 = acc + 2 * MAX_BLOCK
    cdef double* sg = acc + 3 * MAX_BLOCK
    cdef double* sgx = acc + 4 * MAX_BLOCK
    cdef Py_ssize_t n, j
    cdef const floating* r
    cdef const floating* q
    cdef double d, g
    for j in range(w):
        k[j] = x[j]
        s1[j] = 0
        s2[j] = 0
        sg[j] = 0
        sgx[j] = 0
    for n in range(N):
        r = x + n * C
        if with_grad:
            q = gy + n * C
            for j in range(w):
                d = <double>r[j] - k[j]
                g = q[j]
                s1[j] += d
                s2[j] += d * d
                sg[j] += g
                sgx[j] += g * d
        else:
            for j in range(w):
                d = <double>r[j] - k[j]
                s1[j] += d
                s2[j] += d * d


cdef void _grad_eval_cols(const floating* x, const floating* gy, floating* gx, Py_ssize_t N,
                          Py_ssize_t C, Py_ssize_t w, const double* mean,
                          const double* scale, double* acc) noexcept nogil:
    """sum(dy), sum(dy*(x - mean)) into acc's 4th and 5th arrays, dx = dy*scale."""
    cdef double* sg = acc + 3 * MAX_BLOCK
    cdef double* sgx = acc + 4 * MAX_BLOCK
    cdef Py_ssize_t n, j
    cdef const floating* r
    cdef const floating* q
    cdef floating* o
    cdef double g
    for j in range(w):
        sg[j] = 0
        sgx[j] = 0
    for n in range(N):
        r = x + n * C
        q = gy + n * C
        o = gx + n * C
        for j in range(w):
            g = q[j]
            sg[j] += g
            sgx[j] += g * (<double>r[j] - mean[j])
            o[j] = q[j] * <floating>scale[j]


cdef void _affine_cols(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C,
                       Py_ssize_t w, const double* a, const double* b) noexcept nogil:
    cdef Py_ssize_t n, j
    cdef const floating* r
    cdef floating* o
    for n in range(N):
        r = x + n * C
        o = y + n * C
        for j in range(w):
            o[j] = r[j] * <floating>a[j] + <floating>b[j]


cdef void _grad_input_cols(const floating* x, const floating* gy, floating* gx, Py_ssize_t N,
                           Py_ssize_t C, Py_ssize_t w, const double* acc) noexcept nogil:
    """dx = (dy - mean_dy - (x - mean)*k) * scale for a block, with mean, k,
    mean_dy and scale per channel in acc's first four arrays."""
    cdef const double* mean = acc
    cdef const double* k = acc + MAX_BLOCK
    cdef const double* mean_dy = acc + 2 * MAX_BLOCK
    cdef const double* scale = acc + 3 * MAX_BLOCK
    cdef Py_ssize_t n, j
    cdef const floating* r
    cdef const floating* q
    cdef floating* o
    for n in range(N):
        r = x + n * C
        q = gy + n * C
        o = gx + n * C
        for j in range(w):
            o[j] = (q[j] - <floating>mean_dy[j] - (r[j] - <floating>mean[j]) * <floating>k[j]) \
                * <floating>scale[j]


# -- per-channel scalars -------------------------------------------------------


cdef struct Moments:
    double mean, var  # the batch mean and biased variance of a channel


cdef inline Moments _moments(Sums s, double k, double M) noexcept nogil:
    """Mean and biased variance from the shifted sums of M values."""
    cdef double m1 = s.x1 / M
    cdef double v = s.x2 / M - m1 * m1
    cdef Moments m
    m.mean = k + m1
    m.var = 0 if v < 0 else v  # rounding can make it negative; a NaN stays NaN
    return m


cdef inline Sums _column_sums(const double* acc, Py_ssize_t j) noexcept nogil:
    """The sums of channel j of a block, from _sums_cols's scratch."""
    cdef Sums s
    s.x1, s.x2 = acc[MAX_BLOCK + j], acc[2 * MAX_BLOCK + j]
    s.g, s.gx = acc[3 * MAX_BLOCK + j], acc[4 * MAX_BLOCK + j]
    return s


cdef inline double _param(const floating* p, Py_ssize_t c, double default) noexcept nogil:
    """p[c], or `default` when p is NULL (no weight or no bias)."""
    return <double>p[c] if p != NULL else default


cdef inline Py_ssize_t _block(Py_ssize_t S, Py_ssize_t block) noexcept nogil:
    """Channels per prange iteration: 1 on the row path."""
    if S != 1 or block < 1:
        return 1
    return min(block, <Py_ssize_t>MAX_BLOCK)


# -- entry points: parallel over channels (or blocks of channels) ---------------


def batch_norm_train_forward(const floating[:, :, ::1] x,     # IN  (N, C, S), N*S >= 1
                             const floating[::1] weight,      # IN  (C,) or (0,): none
                             const floating[::1] bias,        # IN  (C,) or (0,): none
                             double eps,
                             floating[:, :, ::1] out,         # OUT (N, C, S)
                             double[::1] mean_out,            # OUT (C,) batch mean
                             double[::1] var_out,             # OUT (C,) biased variance
                             Py_ssize_t block, int n_threads):
    """Normalise with the batch statistics, which are returned in mean_out
    and var_out. `block` (chosen by fastconv._launch): channels per task
    when S == 1 (at most 64; 1 means the row path)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t bw = _block(S, block), nb = (C + bw - 1) // bw
    cdef Py_ssize_t b, c, c0, w, j, n_failed = 0
    cdef double M = <double>(N * S), invstd, alpha, k
    cdef double* acc = NULL
    cdef const floating* wp = &weight[0] if weight.shape[0] > 0 else NULL
    cdef const floating* bp = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Moments mo
    cdef bint cols = bw > 1
    if N * S < 1:
        raise ValueError("batch_norm_train_forward needs N*S >= 1")
    with nogil, parallel(num_threads=n_threads):
        acc = <double*>malloc(5 * MAX_BLOCK * sizeof(double)) if cols else NULL
        for b in prange(nb, schedule='static'):
            c0 = b * bw
            w = min(bw, C - c0)
            if cols:
                if acc == NULL:
                    n_failed += 1
                    continue
                _sums_cols(&x[0, c0, 0], NULL, N, C, w, False, acc)
                for j in range(w):
                    c = c0 + j
                    mo = _moments(_column_sums(acc, j), acc[j], M)
                    mean_out[c], var_out[c] = mo.mean, mo.var
                    invstd = 1 / sqrt(mo.var + eps)
                    alpha = _param(wp, c, 1.0) * invstd
                    acc[MAX_BLOCK + j] = alpha
                    acc[2 * MAX_BLOCK + j] = _param(bp, c, 0.0) - mo.mean * alpha
                _affine_cols(&x[0, c0, 0], &out[0, c0, 0], N, C, w, acc + MAX_BLOCK,
                             acc + 2 * MAX_BLOCK)
            else:
                k = x[0, c0, 0]
                mo = _moments(_stats_rows(&x[0, c0, 0], N, S, C * S, k), k, M)
                mean_out[c0], var_out[c0] = mo.mean, mo.var
                invstd = 1 / sqrt(mo.var + eps)
                alpha = _param(wp, c0, 1.0) * invstd
                _affine_rows(&x[0, c0, 0], &out[0, c0, 0], N, S, C * S, <floating>alpha,
                             <floating>(_param(bp, c0, 0.0) - mo.mean * alpha))
        free(acc)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")


def batch_norm_apply(const floating[:, :, ::1] x,    # IN  (N, C, S)
                     const double[::1] scale,        # IN  (C,)
                     const double[::1] shift,        # IN  (C,)
                     floating[:, :, ::1] out,        # OUT (N, C, S)
                     Py_ssize_t block, int n_threads):
    """y = x*scale[c] + shift[c] (the eval forward, with scale and shift
    computed from the running statistics). `block` as for
    batch_norm_train_forward."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t bw = _block(S, block), nb = (C + bw - 1) // bw
    cdef Py_ssize_t b, c0, w
    if N == 0:
        return
    for b in prange(nb, schedule='static', nogil=True, num_threads=n_threads):
        c0 = b * bw
        w = min(bw, C - c0)
        if bw > 1:
            _affine_cols(&x[0, c0, 0], &out[0, c0, 0], N, C, w, &scale[c0], &shift[c0])
        else:
            _affine_rows(&x[0, c0, 0], &out[0, c0, 0], N, S, C * S, <floating>scale[c0],
                         <floating>shift[c0])


def batch_norm_backward(const floating[:, :, ::1] x,         # IN  (N, C, S)
                        const floating[:, :, ::1] grad_out,  # IN  (N, C, S)
                        const floating[::1] weight,          # IN  (C,) or (0,): none
                        double[::1] mean,                    # IN (eval) / OUT (training) (C,)
                        double[::1] invstd,                  # IN (eval) / OUT (training) (C,)
                        bint training, double eps,
                        floating[:, :, ::1] grad_in,         # OUT (N, C, S)
                        double[::1] grad_weight,             # OUT (C,)
                        double[::1] grad_bias,               # OUT (C,)
                        Py_ssize_t block, int n_threads):
    """The input, weight and bias gradients of batch normalisation. With
    `training` (which needs N*S >= 1) the batch statistics are recomputed, in
    the same pass as the gradient sums, and written to mean and invstd;
    otherwise those hold the running mean and 1/sqrt(running_var + eps).
    `block` as for batch_norm_train_forward."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t bw = _block(S, block), nb = (C + bw - 1) // bw
    cdef Py_ssize_t b, c, c0, w, j, n_failed = 0
    cdef double M = <double>(N * S), k, istd, sgxm, a
    cdef double* acc = NULL
    cdef const floating* wp = &weight[0] if weight.shape[0] > 0 else NULL
    cdef Sums s
    cdef Moments mo
    cdef bint cols = bw > 1
    if N == 0:
        grad_weight[:] = 0
        grad_bias[:] = 0
        return
    with nogil, parallel(num_threads=n_threads):
        acc = <double*>malloc(5 * MAX_BLOCK * sizeof(double)) if cols else NULL
        for b in prange(nb, schedule='static'):
            c0 = b * bw
            w = min(bw, C - c0)
            if cols:
                if acc == NULL:
                    n_failed += 1
                    continue
                if training:
                    _sums_cols(&x[0, c0, 0], &grad_out[0, c0, 0], N, C, w, True, acc)
                    for j in range(w):
                        c = c0 + j
                        s = _column_sums(acc, j)
                        k = acc[j]
                        mo = _moments(s, k, M)
                        istd = 1 / sqrt(mo.var + eps)
                        mean[c], invstd[c] = mo.mean, istd
                        sgxm = s.gx - (mo.mean - k) * s.g
                        grad_bias[c] = s.g
                        grad_weight[c] = sgxm * istd
                        # the per-channel constants of dx, for _grad_input_cols
                        acc[j] = mo.mean
                        acc[MAX_BLOCK + j] = istd * istd * sgxm / M
                        acc[2 * MAX_BLOCK + j] = s.g / M
                        acc[3 * MAX_BLOCK + j] = _param(wp, c, 1.0) * istd
                    _grad_input_cols(&x[0, c0, 0], &grad_out[0, c0, 0], &grad_in[0, c0, 0],
                                     N, C, w, acc)
                else:
                    for j in range(w):
                        acc[j] = _param(wp, c0 + j, 1.0) * invstd[c0 + j]
                    _grad_eval_cols(&x[0, c0, 0], &grad_out[0, c0, 0], &grad_in[0, c0, 0],
                                    N, C, w, &mean[c0], acc, acc)
                    for j in range(w):
                        c = c0 + j
                        grad_bias[c] = acc[3 * MAX_BLOCK + j]
                        grad_weight[c] = acc[4 * MAX_BLOCK + j] * invstd[c]
            elif training:
                k = x[0, c0, 0]
                s = _grad_sums_rows(&x[0, c0, 0], &grad_out[0, c0, 0], N, S, C * S, k)
                mo = _moments(s, k, M)
                istd = 1 / sqrt(mo.var + eps)
                mean[c0], invstd[c0] = mo.mean, istd
                sgxm = s.gx - (mo.mean - k) * s.g
                grad_bias[c0] = s.g
                grad_weight[c0] = sgxm * istd
                _grad_input_rows(&x[0, c0, 0], &grad_out[0, c0, 0], &grad_in[0, c0, 0], N, S,
                                 C * S, <floating>mo.mean, <floating>(istd * istd * sgxm / M),
                                 <floating>(s.g / M), <floating>(_param(wp, c0, 1.0) * istd))
            else:
                a = _param(wp, c0, 1.0) * invstd[c0]
                s = _grad_eval_rows(&x[0, c0, 0], &grad_out[0, c0, 0], &grad_in[0, c0, 0], N,
                                    S, C * S, mean[c0], <floating>a)
                grad_bias[c0] = s.g
                grad_weight[c0] = s.gx * invstd[c0]
        free(acc)
    if n_failed:
        raise MemoryError("fastconv: could not allocate per-thread workspace")
