/* Checks every micro-kernel of _ukernel.h, and _isa.h's transposes, against
 * a plain loop, for the ISA this file is compiled for: built and run by
 * tests/test_ukernels.py with each x86-64 ISA's flags natively, and for
 * aarch64 (NEON) with a cross compiler under qemu-user. Prints the ISA, MR x NR, and "ok", or the first
 * mismatch; exits non-zero on any mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "_ukernel.h"

static unsigned long long state = 88172645463325252ULL;
static double next_value(void) {  /* xorshift64, values in [-1, 1) */
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) / (double)(1ULL << 52) - 1.0;
}

static int failures = 0;

static void check(const char* what, int kc, double got, double want, double bound) {
    if (!(fabs(got - want) <= bound)) {  /* also catches NaN */
        if (failures++ < 5)
            printf("MISMATCH %s kc=%d: got %.17g, want %.17g\n", what, kc, got, want);
    }
}

#define SENTINEL (-12345.0)
#define CHECK_DTYPE(T, S, NR, EPS)                                                     \
static void check_##S(int kc) {                                                        \
    enum { MR = FASTCONV_MR, LDB = NR + 3, LDC = NR + 5, SPAN = 2 * MR * NR };         \
    T* a = malloc(sizeof(T) * kc * MR);                                                \
    T* b = malloc(sizeof(T) * (kc * LDB + SPAN * (kc + 1)));                           \
    T* c = malloc(sizeof(T) * MR * LDC);                                               \
    ptrdiff_t* off = malloc(sizeof(ptrdiff_t) * kc);                                   \
    ptrdiff_t aoff[FASTCONV_MR];                                                       \
    T bias[FASTCONV_MR];                                                               \
    int i, j, k, s, nseg = 3;                                                          \
    double bound = 4 * EPS * (kc + 1) * 3;                                             \
    for (i = 0; i < kc * MR; i++) a[i] = (T)next_value();                              \
    for (i = 0; i < kc * LDB + SPAN * (kc + 1); i++) b[i] = (T)next_value();           \
    for (k = 0; k < kc; k++) off[k] = (ptrdiff_t)((k * 7919) % (kc + 1)) * SPAN / 2 + k % 3; \
    /* fc_gemm: B rows LDB apart; nothing past NR columns of C is written */            \
    for (i = 0; i < MR * LDC; i++) c[i] = (T)SENTINEL;                                 \
    fc_gemm_##S(kc, a, b, LDB, c, LDC);                                                \
    for (i = 0; i < MR; i++) {                                                         \
        for (j = 0; j < NR; j++) {                                                     \
            double want = 0;                                                           \
            for (k = 0; k < kc; k++) want += (double)a[k * MR + i] * b[k * LDB + j];  \
            check("fc_gemm_" #S, kc, c[i * LDC + j], want, bound);                     \
        }                                                                              \
        for (j = NR; j < LDC; j++) check("fc_gemm_" #S " (past NR)", kc, c[i * LDC + j], SENTINEL, 0); \
    }                                                                                  \
    /* fc_gemm_taps: B row k at off[k]; then with the bias; then, with the  \
     * ReLU, added to C = 1 - 2 x the last result (sums of either sign) */          \
    for (i = 0; i < MR; i++) bias[i] = (T)next_value();                                \
    for (int mode = 0; mode < 3; mode++) {                                             \
        if (mode == 2)                                                                 \
            for (i = 0; i < MR; i++)                                                   \
                for (j = 0; j < NR; j++) c[i * LDC + j] = (T)(1 - 2 * c[i * LDC + j]); \
        fc_gemm_taps_##S(kc, a, b, off, c, LDC, mode == 1 ? bias : NULL, mode == 2, mode == 2); \
        for (i = 0; i < MR; i++)                                                       \
            for (j = 0; j < NR; j++) {                                                 \
                double want = 0, ab;                                                   \
                for (k = 0; k < kc; k++) want += (double)a[k * MR + i] * b[off[k] + j]; \
                ab = want;                                                             \
                if (mode == 1) want += bias[i];                                        \
                if (mode == 2) want = fmax(1 - 2 * (ab + bias[i]) + ab, 0);            \
                check("fc_gemm_taps_" #S, kc, c[i * LDC + j], want,                    \
                      mode == 2 ? 3 * bound : bound);  /* 2 x the last error, plus one */  \
            }                                                                          \
    }                                                                                  \
    /* fc_gemm_row: row 2 of the panel against MR*NR columns at off[k] */             \
    {                                                                                  \
        T* cr = malloc(sizeof(T) * MR * NR);                                           \
        fc_gemm_row_##S(kc, a + 2, b, off, cr);                                        \
        for (j = 0; j < MR * NR; j++) {                                                \
            double want = 0;                                                           \
            for (k = 0; k < kc; k++) want += (double)a[k * MR + 2] * b[off[k] + j];   \
            check("fc_gemm_row_" #S, kc, cr[j], want, bound);                          \
        }                                                                              \
        free(cr);                                                                      \
    }                                                                                  \
    /* fc_gemm_rows: A rows in place, nseg segments of kc values, 2*kc+1 apart */     \
    {                                                                                  \
        ptrdiff_t sstride = 2 * kc + 1, alen = MR * 4 + (nseg - 1) * sstride + kc;     \
        T* ar = malloc(sizeof(T) * alen);                                              \
        T* br = malloc(sizeof(T) * nseg * kc * NR);                                    \
        for (i = 0; i < alen; i++) ar[i] = (T)next_value();                            \
        for (i = 0; i < nseg * kc * NR; i++) br[i] = (T)next_value();                  \
        for (i = 0; i < MR; i++) aoff[i] = (ptrdiff_t)(4 * (MR - 1 - i));              \
        fc_gemm_rows_##S(nseg, kc, sstride, ar, aoff, br, c, LDC);                     \
        for (i = 0; i < MR; i++)                                                       \
            for (j = 0; j < NR; j++) {                                                 \
                double want = 0;                                                       \
                for (s = 0; s < nseg; s++)                                             \
                    for (k = 0; k < kc; k++)                                           \
                        want += (double)ar[aoff[i] + s * sstride + k] * br[(s * kc + k) * NR + j]; \
                check("fc_gemm_rows_" #S, kc, c[i * LDC + j], want, bound * nseg);     \
            }                                                                          \
        free(ar);                                                                      \
        free(br);                                                                      \
    }                                                                                  \
    free(a); free(b); free(c); free(off);                                              \
}

CHECK_DTYPE(float, f32, FASTCONV_NR_F32, 1.2e-7)
CHECK_DTYPE(double, f64, FASTCONV_NR_F64, 2.3e-16)

/* fc_transpose: a W x W square, rows W + 3 and W + 5 apart; nothing else of
 * d is written */
#define CHECK_TRANSPOSE(T, S, W)                                                       static void check_transpose_##S(void) {                                                    enum { LDS = W + 3, LDD = W + 5 };                                                     T s[W * LDS], d[(W + 1) * LDD];                                                        int i, j;                                                                              for (i = 0; i < W * LDS; i++) s[i] = (T)next_value();                                  for (i = 0; i < (W + 1) * LDD; i++) d[i] = (T)SENTINEL;                                fc_transpose_##S(s, LDS, d, LDD);                                                      for (i = 0; i < W + 1; i++)                                                                for (j = 0; j < LDD; j++)                                                                  check("fc_transpose_" #S, W, d[i * LDD + j],                                                 i < W && j < W ? s[j * LDS + i] : SENTINEL, 0);                      }

CHECK_TRANSPOSE(float, f32, FASTCONV_VEC_F32)
CHECK_TRANSPOSE(double, f64, FASTCONV_VEC_F64)

int main(void) {
    static const int depths[] = {1, 2, 5, 16, 97, 256};
    unsigned i;
    for (i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        check_f32(depths[i]);
        check_f64(depths[i]);
    }
    check_transpose_f32();
    check_transpose_f64();
    /* the FMA peak loop computes a finite, seed-dependent value */
    if (!(fc_fma_peak_f32(1000, 1.0f) != fc_fma_peak_f32(1000, 2.0f)) ||
        !isfinite(fc_fma_peak_f64(1000, 1.0))) {
        printf("MISMATCH fc_fma_peak\n");
        failures++;
    }
    printf("%s %dx%d (float32) %dx%d (float64): %s\n", FASTCONV_ISA_NAME, FASTCONV_MR,
           FASTCONV_NR_F32, FASTCONV_MR, FASTCONV_NR_F64, failures ? "FAILED" : "ok");
    return failures != 0;
}
