/* The GEMM micro-kernels: one contract, written once, compiled per ISA.
 *
 * Contract. Each kernel computes one MR x NR block of C = A B (MR and NR
 * from the blocking table in _isa.h) entirely in vector registers and
 * stores it, overwriting c; callers add partial blocks and clip edges.
 *   A: a packed panel, value (k, i) at a[k*MR + i] (zero-padded rows), or,
 *      for fc_gemm_rows, row i read in place;
 *   B: row k holds NR consecutive values, at b + k*ldb, or at b + off[k]
 *      (the taps of the implicit kernels, read in place from a padded input
 *      copy);
 *   C: row i at c + i*ldc.
 * The kernels are named fc_<op>_<dtype>; show_config names the build's ISA
 * (FASTCONV_ISA_NAME) and MR x NR:
 *   fc_gemm_S        B rows ldb apart
 *   fc_gemm_taps_S   B rows at off[k]; the block added to c, or bias[i]
 *                    added to row i, then max(., 0) if asked: the implicit
 *                    forward's full blocks go straight to the output
 *   fc_gemm_row_S    one row of A against MR*NR columns of B at off[k]: the
 *                    same registers for layers of one or two output channels
 *   fc_gemm_rows_S   A rows read in place as nseg segments of seglen values
 *   fc_fma_peak_S    a tight loop of independent FMAs: the roofline's roof
 *
 * The body is _ukernel_body.h, included once per dtype with FC_T (the
 * scalar), FC_S (its suffix) and FC_W (the lanes) bound. It uses intrinsics
 * through _isa.h's vector layer, not GCC vector extensions, which MSVC
 * lacks. The accumulators are named variables, c<i><a|b>, never an array,
 * so that the compiler keeps all 2*MR in registers. The kernels are never
 * inlined (FC_KERNEL): inlined into a large caller, the float64 AVX2 kernel
 * (12 accumulators of AVX2's 16 registers) had one accumulator spilled to
 * the stack in its inner loop, and the forward ran at half speed. Called,
 * each is register-allocated alone; tests/test_ukernels.py disassembles
 * every build and fails on any vector register stored to or loaded from
 * the stack in them.
 */
#ifndef FASTCONV_UKERNEL_H
#define FASTCONV_UKERNEL_H
#include "_isa.h"

#if defined(_MSC_VER)
#define FC_RESTRICT __restrict
#define FC_KERNEL static __declspec(noinline)
#else
#define FC_RESTRICT __restrict__
#if defined(__aarch64__) && defined(__GNUC__) && !defined(__clang__)
/* gcc's scheduling before register allocation hoisted all 16 B loads of
 * fc_gemm_row to the top of its loop and spilled one to the stack */
#define FC_KERNEL static __attribute__((noinline, unused, optimize("no-schedule-insns")))
#else
#define FC_KERNEL static __attribute__((noinline, unused))
#endif
#endif

/* the MR rows, unrolled: R(i) for i = 0..MR-1 */
#if FASTCONV_MR == 8
#define FC_ROWS(R) R(0) R(1) R(2) R(3) R(4) R(5) R(6) R(7)
#else
#define FC_ROWS(R) R(0) R(1) R(2) R(3) R(4) R(5)
#endif

#define FC_T float
#define FC_S f32
#define FC_W FASTCONV_VEC_F32
#include "_ukernel_body.h"

#define FC_T double
#define FC_S f64
#define FC_W FASTCONV_VEC_F64
#include "_ukernel_body.h"

#endif
