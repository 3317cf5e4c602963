/* The instruction set of this build, its vector layer and its blocking table.
 *
 * Every kernel module is compiled once per ISA (setup.py passes the flags);
 * this header reads the compiler's ISA macros and defines, for float32 and
 * float64, the handful of vector operations the micro-kernels need
 * (_ukernel.h) and the Winograd transforms add (_winograd.h), plus every
 * block size of the convolution kernels, in one table with compile-time
 * checks of the constraints the kernels rely on. Each ISA also has its
 * register transposes of one vector width, for the packing of B panels:
 *
 *   fc_transpose_S(s, lds, d, ldd)   d[c*ldd + j] = s[j*lds + c], j, c < W
 *
 * for W = FASTCONV_VEC_F32 floats or FASTCONV_VEC_F64 doubles.
 *
 *   build            vector              MR x NR (f32 / f64)   registers
 *   avx512           zmm, FMA            8 x 32 / 8 x 16       32
 *   avx2             ymm, FMA            6 x 16 / 6 x 8        16
 *   generic x86-64   xmm (SSE2), mul+add 6 x 8 / 6 x 4         16
 *   generic aarch64  NEON, FMA           8 x 8 / 8 x 4         32
 *   generic other    scalar              6 x 2 / 6 x 2         -
 *
 * NR is two vectors. Where there are 16 registers, the 6 x 2 = 12
 * accumulators, the two vectors of a B row and one broadcast A value take
 * 15 of them, as in the 6x16 kernels of BLIS and OpenBLAS for Haswell and
 * Zen; 12 independent FMA chains cover FMA latency x FMA pipes (4 x 2) with
 * slack. With 32 registers, 8 rows (16 accumulators) read each B row for
 * more FMAs: 0.95-1.0x the time of 6 rows on the AVX-512 build (Zen 5),
 * and channel counts are mostly multiples of 8.
 *
 * FASTCONV_FORCE_SCALAR selects the scalar layer on any CPU (for tests), and
 * FASTCONV_ISA_MR another MR (6 or 8, for measurements).
 */
#ifndef FASTCONV_ISA_H
#define FASTCONV_ISA_H
#include <stddef.h>

#if defined(_MSC_VER)
#define FC_ISA_FN static __inline
#else
#define FC_ISA_FN static inline __attribute__((unused))
#endif

#if defined(FASTCONV_FORCE_SCALAR)  /* for testing the portable path anywhere */
#define FASTCONV_SCALAR_ISA 1
#elif defined(__AVX512F__)
#define FASTCONV_ISA_NAME "avx512f"
#include <immintrin.h>
#define FASTCONV_VEC_F32 16
typedef __m512 fc_vf32;
typedef __m512d fc_vf64;
#define fc_load_f32(p) _mm512_loadu_ps(p)
#define fc_store_f32(p, v) _mm512_storeu_ps((p), (v))
#define fc_bcast_f32(x) _mm512_set1_ps(x)
#define fc_fma_f32(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define fc_zero_f32() _mm512_setzero_ps()
#define fc_load_f64(p) _mm512_loadu_pd(p)
#define fc_store_f64(p, v) _mm512_storeu_pd((p), (v))
#define fc_bcast_f64(x) _mm512_set1_pd(x)
#define fc_fma_f64(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#define fc_zero_f64() _mm512_setzero_pd()
#define fc_add_f32(a, b) _mm512_add_ps((a), (b))
#define fc_sub_f32(a, b) _mm512_sub_ps((a), (b))
#define fc_add_f64(a, b) _mm512_add_pd((a), (b))
#define fc_sub_f64(a, b) _mm512_sub_pd((a), (b))
#define fc_relu_f32(v) _mm512_max_ps(_mm512_setzero_ps(), (v))  /* NaN: the 2nd operand */
#define fc_relu_f64(v) _mm512_max_pd(_mm512_setzero_pd(), (v))
/* the transposes: 16x16 floats by 2x2 and 4x4 blocks within 128-bit lanes,
 * then the lanes; 8x8 doubles by 2x2 blocks, then the lanes */
FC_ISA_FN void fc_transpose_f32(const float* s, ptrdiff_t lds, float* d, ptrdiff_t ldd) {
    __m512 r[16], t[16];
    int i, e;
    for (i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(s + i * lds);
    for (i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 16; i += 4) {  /* r[i + e], lane L: rows i..i+3 of column 4L + e */
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), dd = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, dd));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, dd));
    }
    for (e = 0; e < 4; e++) {  /* lanes (0, 2) and (1, 3) of the four row groups */
        __m512 lo02 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88);
        __m512 hi02 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88);
        __m512 lo13 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xdd);
        __m512 hi13 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xdd);
        _mm512_storeu_ps(d + e * ldd, _mm512_shuffle_f32x4(lo02, hi02, 0x88));
        _mm512_storeu_ps(d + (4 + e) * ldd, _mm512_shuffle_f32x4(lo13, hi13, 0x88));
        _mm512_storeu_ps(d + (8 + e) * ldd, _mm512_shuffle_f32x4(lo02, hi02, 0xdd));
        _mm512_storeu_ps(d + (12 + e) * ldd, _mm512_shuffle_f32x4(lo13, hi13, 0xdd));
    }
}
FC_ISA_FN void fc_transpose_f64(const double* s, ptrdiff_t lds, double* d, ptrdiff_t ldd) {
    __m512d r[8], t[8];
    int i, e;
    for (i = 0; i < 8; i++) r[i] = _mm512_loadu_pd(s + i * lds);
    for (i = 0; i < 8; i += 2) {  /* t[i + e], lane L: rows i, i+1 of column 2L + e */
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (e = 0; e < 2; e++) {
        __m512d lo02 = _mm512_shuffle_f64x2(t[e], t[2 + e], 0x88);
        __m512d hi02 = _mm512_shuffle_f64x2(t[4 + e], t[6 + e], 0x88);
        __m512d lo13 = _mm512_shuffle_f64x2(t[e], t[2 + e], 0xdd);
        __m512d hi13 = _mm512_shuffle_f64x2(t[4 + e], t[6 + e], 0xdd);
        _mm512_storeu_pd(d + e * ldd, _mm512_shuffle_f64x2(lo02, hi02, 0x88));
        _mm512_storeu_pd(d + (2 + e) * ldd, _mm512_shuffle_f64x2(lo13, hi13, 0x88));
        _mm512_storeu_pd(d + (4 + e) * ldd, _mm512_shuffle_f64x2(lo02, hi02, 0xdd));
        _mm512_storeu_pd(d + (6 + e) * ldd, _mm512_shuffle_f64x2(lo13, hi13, 0xdd));
    }
}

#elif defined(__AVX2__) && defined(__FMA__) || defined(_MSC_VER) && defined(__AVX2__)
#define FASTCONV_ISA_NAME "avx2+fma"
#include <immintrin.h>
#define FASTCONV_VEC_F32 8
typedef __m256 fc_vf32;
typedef __m256d fc_vf64;
#define fc_load_f32(p) _mm256_loadu_ps(p)
#define fc_store_f32(p, v) _mm256_storeu_ps((p), (v))
#define fc_bcast_f32(x) _mm256_set1_ps(x)
#define fc_fma_f32(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define fc_zero_f32() _mm256_setzero_ps()
#define fc_load_f64(p) _mm256_loadu_pd(p)
#define fc_store_f64(p, v) _mm256_storeu_pd((p), (v))
#define fc_bcast_f64(x) _mm256_set1_pd(x)
#define fc_fma_f64(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#define fc_zero_f64() _mm256_setzero_pd()
#define fc_add_f32(a, b) _mm256_add_ps((a), (b))
#define fc_sub_f32(a, b) _mm256_sub_ps((a), (b))
#define fc_add_f64(a, b) _mm256_add_pd((a), (b))
#define fc_sub_f64(a, b) _mm256_sub_pd((a), (b))
#define fc_relu_f32(v) _mm256_max_ps(_mm256_setzero_ps(), (v))  /* NaN: the 2nd operand */
#define fc_relu_f64(v) _mm256_max_pd(_mm256_setzero_pd(), (v))
/* the transposes: 8x8 floats by 2x2 and 4x4 blocks within 128-bit lanes,
 * then the lanes; 4x4 doubles by 2x2 blocks, then the lanes */
FC_ISA_FN void fc_transpose_f32(const float* s, ptrdiff_t lds, float* d, ptrdiff_t ldd) {
    __m256 r[8], t[8];
    int i, e;
    for (i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(s + i * lds);
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {  /* r[i + e], lane L: rows i..i+3 of column 4L + e */
        __m256d a = _mm256_castps_pd(t[i]), b = _mm256_castps_pd(t[i + 1]);
        __m256d c = _mm256_castps_pd(t[i + 2]), dd = _mm256_castps_pd(t[i + 3]);
        r[i] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
        r[i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
        r[i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, dd));
        r[i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, dd));
    }
    for (e = 0; e < 4; e++) {
        _mm256_storeu_ps(d + e * ldd, _mm256_permute2f128_ps(r[e], r[4 + e], 0x20));
        _mm256_storeu_ps(d + (4 + e) * ldd, _mm256_permute2f128_ps(r[e], r[4 + e], 0x31));
    }
}
FC_ISA_FN void fc_transpose_f64(const double* s, ptrdiff_t lds, double* d, ptrdiff_t ldd) {
    __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + lds);
    __m256d r2 = _mm256_loadu_pd(s + 2 * lds), r3 = _mm256_loadu_pd(s + 3 * lds);
    /* lane L of t<e>, u<e>: rows (0, 1), (2, 3) of column 2L + e */
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d u0 = _mm256_unpacklo_pd(r2, r3), u1 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, u0, 0x20));
    _mm256_storeu_pd(d + ldd, _mm256_permute2f128_pd(t1, u1, 0x20));
    _mm256_storeu_pd(d + 2 * ldd, _mm256_permute2f128_pd(t0, u0, 0x31));
    _mm256_storeu_pd(d + 3 * ldd, _mm256_permute2f128_pd(t1, u1, 0x31));
}

#elif defined(__SSE2__) || defined(_M_X64)
#define FASTCONV_ISA_NAME "sse2"
#include <emmintrin.h>
#define FASTCONV_VEC_F32 4
typedef __m128 fc_vf32;
typedef __m128d fc_vf64;
#define fc_load_f32(p) _mm_loadu_ps(p)
#define fc_store_f32(p, v) _mm_storeu_ps((p), (v))
#define fc_bcast_f32(x) _mm_set1_ps(x)
#define fc_fma_f32(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))  /* no FMA in SSE2 */
#define fc_zero_f32() _mm_setzero_ps()
#define fc_load_f64(p) _mm_loadu_pd(p)
#define fc_store_f64(p, v) _mm_storeu_pd((p), (v))
#define fc_bcast_f64(x) _mm_set1_pd(x)
#define fc_fma_f64(a, b, c) _mm_add_pd(_mm_mul_pd((a), (b)), (c))
#define fc_zero_f64() _mm_setzero_pd()
#define fc_add_f32(a, b) _mm_add_ps((a), (b))
#define fc_sub_f32(a, b) _mm_sub_ps((a), (b))
#define fc_add_f64(a, b) _mm_add_pd((a), (b))
#define fc_sub_f64(a, b) _mm_sub_pd((a), (b))
#define fc_relu_f32(v) _mm_max_ps(_mm_setzero_ps(), (v))  /* NaN: the 2nd operand */
#define fc_relu_f64(v) _mm_max_pd(_mm_setzero_pd(), (v))
/* the transposes: 4x4 floats, 2x2 doubles */
FC_ISA_FN void fc_transpose_f32(const float* s, ptrdiff_t lds, float* d, ptrdiff_t ldd) {
    __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + lds);
    __m128 r2 = _mm_loadu_ps(s + 2 * lds), r3 = _mm_loadu_ps(s + 3 * lds);
    __m128 t0 = _mm_unpacklo_ps(r0, r1), t1 = _mm_unpacklo_ps(r2, r3);  /* columns 0, 1 */
    __m128 t2 = _mm_unpackhi_ps(r0, r1), t3 = _mm_unpackhi_ps(r2, r3);  /* columns 2, 3 */
    _mm_storeu_ps(d, _mm_movelh_ps(t0, t1));
    _mm_storeu_ps(d + ldd, _mm_movehl_ps(t1, t0));
    _mm_storeu_ps(d + 2 * ldd, _mm_movelh_ps(t2, t3));
    _mm_storeu_ps(d + 3 * ldd, _mm_movehl_ps(t3, t2));
}
FC_ISA_FN void fc_transpose_f64(const double* s, ptrdiff_t lds, double* d, ptrdiff_t ldd) {
    __m128d r0 = _mm_loadu_pd(s), r1 = _mm_loadu_pd(s + lds);
    _mm_storeu_pd(d, _mm_unpacklo_pd(r0, r1));
    _mm_storeu_pd(d + ldd, _mm_unpackhi_pd(r0, r1));
}

#elif defined(__aarch64__) || defined(_M_ARM64)
#define FASTCONV_ISA_NAME "neon"
#include <arm_neon.h>
#define FASTCONV_VEC_F32 4
typedef float32x4_t fc_vf32;
typedef float64x2_t fc_vf64;
#define fc_load_f32(p) vld1q_f32(p)
#define fc_store_f32(p, v) vst1q_f32((p), (v))
#define fc_bcast_f32(x) vdupq_n_f32(x)
#define fc_fma_f32(a, b, c) vfmaq_f32((c), (a), (b))
#define fc_zero_f32() vdupq_n_f32(0.0f)
#define fc_load_f64(p) vld1q_f64(p)
#define fc_store_f64(p, v) vst1q_f64((p), (v))
#define fc_bcast_f64(x) vdupq_n_f64(x)
#define fc_fma_f64(a, b, c) vfmaq_f64((c), (a), (b))
#define fc_zero_f64() vdupq_n_f64(0.0)
#define fc_add_f32(a, b) vaddq_f32((a), (b))
#define fc_sub_f32(a, b) vsubq_f32((a), (b))
#define fc_add_f64(a, b) vaddq_f64((a), (b))
#define fc_sub_f64(a, b) vsubq_f64((a), (b))
/* vmaxq would give +0 for -0 */
#define fc_relu_f32(v) vbslq_f32(vcltq_f32((v), vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), (v))
#define fc_relu_f64(v) vbslq_f64(vcltq_f64((v), vdupq_n_f64(0.0)), vdupq_n_f64(0.0), (v))
/* the transposes: 4x4 floats by 2x2 blocks, then pairs; 2x2 doubles */
FC_ISA_FN void fc_transpose_f32(const float* s, ptrdiff_t lds, float* d, ptrdiff_t ldd) {
    float32x4_t r0 = vld1q_f32(s), r1 = vld1q_f32(s + lds);
    float32x4_t r2 = vld1q_f32(s + 2 * lds), r3 = vld1q_f32(s + 3 * lds);
    /* t<e>, u<e>: rows (0, 1), (2, 3) of columns e and 2 + e */
    float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1));
    float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
    float64x2_t u0 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3));
    float64x2_t u1 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
    vst1q_f32(d, vreinterpretq_f32_f64(vtrn1q_f64(t0, u0)));
    vst1q_f32(d + ldd, vreinterpretq_f32_f64(vtrn1q_f64(t1, u1)));
    vst1q_f32(d + 2 * ldd, vreinterpretq_f32_f64(vtrn2q_f64(t0, u0)));
    vst1q_f32(d + 3 * ldd, vreinterpretq_f32_f64(vtrn2q_f64(t1, u1)));
}
FC_ISA_FN void fc_transpose_f64(const double* s, ptrdiff_t lds, double* d, ptrdiff_t ldd) {
    float64x2_t r0 = vld1q_f64(s), r1 = vld1q_f64(s + lds);
    vst1q_f64(d, vtrn1q_f64(r0, r1));
    vst1q_f64(d + ldd, vtrn2q_f64(r0, r1));
}

#else  /* any other CPU: one lane, which the compiler may still vectorise */
#define FASTCONV_SCALAR_ISA 1
#endif

#ifdef FASTCONV_SCALAR_ISA
#define FASTCONV_ISA_NAME "scalar"
#define FASTCONV_VEC_F32 1
typedef float fc_vf32;
typedef double fc_vf64;
#define fc_load_f32(p) (*(p))
#define fc_store_f32(p, v) (*(p) = (v))
#define fc_bcast_f32(x) (x)
#define fc_fma_f32(a, b, c) ((a) * (b) + (c))
#define fc_zero_f32() 0.0f
#define fc_load_f64(p) (*(p))
#define fc_store_f64(p, v) (*(p) = (v))
#define fc_bcast_f64(x) (x)
#define fc_fma_f64(a, b, c) ((a) * (b) + (c))
#define fc_zero_f64() 0.0
#define fc_add_f32(a, b) ((a) + (b))
#define fc_sub_f32(a, b) ((a) - (b))
#define fc_add_f64(a, b) ((a) + (b))
#define fc_sub_f64(a, b) ((a) - (b))
#define fc_relu_f32(v) ((v) < 0 ? 0.0f : (v))
#define fc_relu_f64(v) ((v) < 0 ? 0.0 : (v))
/* the transposes: of one value */
FC_ISA_FN void fc_transpose_f32(const float* s, ptrdiff_t lds, float* d, ptrdiff_t ldd) {
    (void)lds; (void)ldd;
    d[0] = s[0];
}
FC_ISA_FN void fc_transpose_f64(const double* s, ptrdiff_t lds, double* d, ptrdiff_t ldd) {
    (void)lds; (void)ldd;
    d[0] = s[0];
}
#endif

#ifdef FASTCONV_SCALAR_ISA
#define FASTCONV_VEC_F64 1
#else
#define FASTCONV_VEC_F64 (FASTCONV_VEC_F32 / 2)
#endif

/* -- the blocking table -------------------------------------------------------
 * MR      rows of the micro-kernel's accumulator block (rows of packed A)
 * NR      its columns: two vectors
 * TP      output positions per tile of the im2col kernels
 * LD      row stride of the per-thread tile buffers: TP + 16, not a power of
 *         two, so that a column walk does not alias cache sets
 * KC      depth of one packed block (rows of K, or columns for dW): a KC x TP
 *         tile of B is 128 KiB in float32, within L2 on every CPU we build for
 * RB      rows of one column block of the input gradient
 * QT      most positions (discarded ones included) in an implicit tile
 */
#if defined(FASTCONV_ISA_MR)  /* for measuring another block shape */
#define FASTCONV_MR FASTCONV_ISA_MR
#elif defined(__AVX512F__) || defined(__aarch64__) || defined(_M_ARM64)
#define FASTCONV_MR 8  /* 32 vector registers */
#else
#define FASTCONV_MR 6  /* 16 vector registers */
#endif
#define FASTCONV_NR_F32 (2 * FASTCONV_VEC_F32)
#define FASTCONV_NR_F64 (2 * FASTCONV_VEC_F64)
#define FASTCONV_NR_MAX 32
#define FASTCONV_TP 128
#define FASTCONV_LD (FASTCONV_TP + 16)
#define FASTCONV_KC 256
#define FASTCONV_RB 96
#define FASTCONV_QT 512

/* compile-time checks of what the kernels assume (a negative array size
 * fails in C89, C11 and MSVC alike) */
#define FASTCONV_CHECK(name, cond) typedef char fastconv_check_##name[(cond) ? 1 : -1]
FASTCONV_CHECK(tp_multiple_of_nr_f32, FASTCONV_TP % FASTCONV_NR_F32 == 0);
FASTCONV_CHECK(tp_multiple_of_nr_f64, FASTCONV_TP % FASTCONV_NR_F64 == 0);
FASTCONV_CHECK(nr_fits_nr_max, FASTCONV_NR_F32 <= FASTCONV_NR_MAX);
FASTCONV_CHECK(ld_holds_tile, FASTCONV_LD >= FASTCONV_TP);
FASTCONV_CHECK(rb_multiple_of_mr, FASTCONV_RB % FASTCONV_MR == 0);
FASTCONV_CHECK(kc_multiple_of_nr, FASTCONV_KC % FASTCONV_NR_F32 == 0);
FASTCONV_CHECK(mr_unrolled, FASTCONV_MR == 6 || FASTCONV_MR == 8);  /* see _ukernel.h */

/* Whether gcc vectorises a float64 compare that selects an int64 (a max-pool
 * index): not with x86's SSE2 alone, which has no 64-bit integer compare. */
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(__AVX2__)
#define FASTCONV_F64_INDEX_SIMD 0
#else
#define FASTCONV_F64_INDEX_SIMD 1
#endif
#endif
