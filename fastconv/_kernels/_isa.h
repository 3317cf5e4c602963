/* SIMD widths per instruction set, from the compiler's ISA flags for each
 * build (see setup.py).
 *
 * The GEMM micro-kernel keeps an MR x NR block of C in registers. NR is two
 * SIMD vectors, so the 6 x 2 = 12 accumulators hide the FMA latency and still
 * leave registers for the B row and the broadcast A value: 32 floats / 16
 * doubles with AVX-512, 16 / 8 with AVX2, 8 / 4 with 128-bit SIMD (SSE2,
 * NEON). The pooling kernels use the vector width itself.
 */
#ifndef FASTCONV_ISA_H
#define FASTCONV_ISA_H
/* Rows of the block, MR: 6 rows x 2 vectors = 12 accumulators where there
 * are 32 vector registers (AVX-512, AArch64), 4 x 2 = 8 where there are 16
 * (SSE2, AVX2): with 12, gcc spilled two accumulators to the stack in every
 * iteration, and the AVX2 kernel ran at a third of its peak. */
#if defined(__AVX512F__) || defined(__aarch64__)
#define FASTCONV_MR 6
#else
#define FASTCONV_MR 4
#endif
/* Lanes of one SIMD vector */
#if defined(__AVX512F__)
#define FASTCONV_VEC_F32 16
#elif defined(__AVX2__)
#define FASTCONV_VEC_F32 8
#else
#define FASTCONV_VEC_F32 4
#endif
#define FASTCONV_VEC_F64 (FASTCONV_VEC_F32 / 2)
#define FASTCONV_NR_F32 (2 * FASTCONV_VEC_F32)
#define FASTCONV_NR_F64 (2 * FASTCONV_VEC_F64)
/* Whether gcc vectorises a float64 compare that selects an int64 (a max-pool
 * index): not with x86's SSE2 alone, which has no 64-bit integer compare. */
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(__AVX2__)
#define FASTCONV_F64_INDEX_SIMD 0
#else
#define FASTCONV_F64_INDEX_SIMD 1
#endif
#endif
