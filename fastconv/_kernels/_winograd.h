/* The transforms of the Winograd F(2x2, 3x3) forward (_conv_winograd.pxi),
 * vectorised along a row of tiles with _isa.h's vector layer: one
 * definition, compiled per ISA and included per dtype from
 * _winograd_body.h.
 *
 *   fc_wino_input_S   V = B^T d B of L tiles: value (i, j) of tile k's 4x4
 *                     input block at d[(4i + j)*ldd + k] (16 planes);
 *                     value xi of V goes to v[xi*ld + k].
 *   fc_wino_output_S  Y = A^T M A + b of L tiles, M value xi of tile k at
 *                     m[xi*ldm + k]; output (a, c) of tile k (row a and
 *                     column c of its 2x2 block) goes to y[(2a + c)*L + k].
 *                     Returns whether every output is finite.
 *   fc_wino_split_S, fc_wino_interleave_S
 *                     a row's even and odd columns into two planes, and
 *                     two planes interleaved back into a row: loops that
 *                     the compiler vectorises, given restrict.
 *
 * The transforms run L in whole vectors, then one lane at a time: L is all
 * the tiles of an item (tens), not a row of tiles, which at 8 tiles (a
 * 16x16 map) would fill no AVX-512 vector of floats.
 */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H
#include "_isa.h"

#if defined(_MSC_VER)
#define FC_WINO static __inline
#define FC_WINO_RESTRICT __restrict
#else
#define FC_WINO static inline __attribute__((unused))
#define FC_WINO_RESTRICT __restrict__
#endif

#define FC_T float
#define FC_S f32
#define FC_W FASTCONV_VEC_F32
#include "_winograd_body.h"

#define FC_T double
#define FC_S f64
#define FC_W FASTCONV_VEC_F64
#include "_winograd_body.h"

#endif
