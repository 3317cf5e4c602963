/* Register-block width of the GEMM micro-kernel, per instruction set.
 *
 * The micro-kernel keeps an MR x NR block of C in registers. NR is two SIMD
 * vectors, so the 6 x 2 = 12 accumulators hide the FMA latency and still
 * leave registers for the B row and the broadcast A value: 32 floats / 16
 * doubles with AVX-512, 16 / 8 with AVX2, 8 / 4 with 128-bit SIMD (SSE2,
 * NEON). The macros come from the compiler's ISA flags for each build.
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
#if defined(__AVX512F__)
#define FASTCONV_NR_F32 32
#define FASTCONV_NR_F64 16
#elif defined(__AVX2__)
#define FASTCONV_NR_F32 16
#define FASTCONV_NR_F64 8
#else
#define FASTCONV_NR_F32 8
#define FASTCONV_NR_F64 4
#endif
#endif
