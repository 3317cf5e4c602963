/* The transforms of the Winograd F(2x2, 3x3) forward (_conv_winograd.pxi),
 * vectorised along a row of tiles with _isa.h's vector layer: one
 * definition, compiled per ISA and included per dtype from
 * _winograd_body.h.
 *
 *   fc_wino_input_S   V = B^T d B of a block of tiles (consecutive across
 *                     rows of tiles and images) in every input channel;
 *                     value xi of tile t of channel c goes to
 *                     v[xi*ld + c*ldc + t].
 *   fc_wino_output_S  Y = A^T M A + b of L tiles, M value xi of tile k at
 *                     m[xi*ldm + k]; output (a, c) of tile k (row a and
 *                     column c of its 2x2 block) goes to y[(2a + c)*L + k].
 *                     Returns whether every output is finite.
 *   fc_wino_interleave_S
 *                     two planes interleaved back into a row.
 *
 * Both transforms run along the tiles in whole vectors. The input's goes a
 * row of tiles at a time where a row fills a vector, else over the whole
 * block; the output's over the whole block (tens of tiles), then one lane at
 * a time. Before this layout, the input's gather, from Cython, a row of
 * tiles at a time into 16 planes, cost as much as the GEMMs (Zen 5, AVX2
 * build); fc_wino_input_S says what changed.
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
