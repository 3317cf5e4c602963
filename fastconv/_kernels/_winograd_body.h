/* The Winograd transforms for one dtype: included by _winograd.h with FC_T,
 * FC_S and FC_W bound, as _ukernel_body.h is. */
#define FC_PASTE(a, b) a##b
#define FC_XPASTE(a, b) FC_PASTE(a, b)
#define FC_NAME(op) FC_XPASTE(op##_, FC_S)
#define FC_V FC_XPASTE(fc_v, FC_S)

/* the scalar lane: the same operations on FC_T */
#define FC_S_LOAD(p) (*(p))
#define FC_S_STORE(p, x) (*(p) = (x))
#define FC_S_ADD(a, b) ((a) + (b))
#define FC_S_SUB(a, b) ((a) - (b))
#define FC_S_BCAST(x) (x)

/* row i of the input blocks at tile k, times B: (a0 - a2, a1 + a2, a2 - a1,
 * a1 - a3) for the row (a0, a1, a2, a3), planes 4i..4i+3 of d */
#define FC_IN_ROW(T, LD, ADD, SUB, i, k) \
    T c##i##0, c##i##1, c##i##2, c##i##3; { \
        const FC_T* d_ = d + 4 * (i) * ldd + (k); \
        T a0 = LD(d_), a1 = LD(d_ + ldd), a2 = LD(d_ + 2 * ldd), a3 = LD(d_ + 3 * ldd); \
        c##i##0 = SUB(a0, a2); c##i##1 = ADD(a1, a2); \
        c##i##2 = SUB(a2, a1); c##i##3 = SUB(a1, a3); }
/* B^T on the columns of the four rows, stored */
#define FC_IN_COL(ST, ADD, SUB, j, k) \
    ST(v + (j) * ld + (k), SUB(c0##j, c2##j)); \
    ST(v + (4 + (j)) * ld + (k), ADD(c1##j, c2##j)); \
    ST(v + (8 + (j)) * ld + (k), SUB(c2##j, c1##j)); \
    ST(v + (12 + (j)) * ld + (k), SUB(c1##j, c3##j));
#define FC_IN_STEP(T, LD, ST, ADD, SUB, k) { \
    FC_IN_ROW(T, LD, ADD, SUB, 0, k) FC_IN_ROW(T, LD, ADD, SUB, 1, k) \
    FC_IN_ROW(T, LD, ADD, SUB, 2, k) FC_IN_ROW(T, LD, ADD, SUB, 3, k) \
    FC_IN_COL(ST, ADD, SUB, 0, k) FC_IN_COL(ST, ADD, SUB, 1, k) \
    FC_IN_COL(ST, ADD, SUB, 2, k) FC_IN_COL(ST, ADD, SUB, 3, k) }

FC_WINO void FC_NAME(fc_wino_input)(const FC_T* FC_WINO_RESTRICT d, ptrdiff_t ldd,
                                    ptrdiff_t L, FC_T* FC_WINO_RESTRICT v, ptrdiff_t ld) {
    ptrdiff_t k = 0;
    for (; k + FC_W <= L; k += FC_W)
        FC_IN_STEP(FC_V, FC_NAME(fc_load), FC_NAME(fc_store), FC_NAME(fc_add),
                   FC_NAME(fc_sub), k)
    for (; k < L; k++)
        FC_IN_STEP(FC_T, FC_S_LOAD, FC_S_STORE, FC_S_ADD, FC_S_SUB, k)
}

/* column j of A^T M at tile k: (m0j + m1j + m2j, m1j - m2j - m3j) */
#define FC_OUT_COL(T, LD, ADD, SUB, j, k) \
    T s0##j, s1##j; { \
        T m0 = LD(m + (j) * ldm + (k)), m1 = LD(m + (4 + (j)) * ldm + (k)); \
        T m2 = LD(m + (8 + (j)) * ldm + (k)), m3 = LD(m + (12 + (j)) * ldm + (k)); \
        s0##j = ADD(ADD(m0, m1), m2); s1##j = SUB(SUB(m1, m2), m3); }
/* (A^T M) A + b on row a, stored, and y - y added to chk: 0 for a finite
 * y, NaN for an inf or NaN, so that chk stays 0 while every y is finite */
#define FC_OUT_ROW(T, ST, ADD, SUB, a, k) { \
    T y0_ = ADD(ADD(ADD(s##a##0, s##a##1), s##a##2), bv); \
    T y1_ = ADD(SUB(SUB(s##a##1, s##a##2), s##a##3), bv); \
    ST(y + (2 * (a)) * L + (k), y0_); ST(y + (2 * (a) + 1) * L + (k), y1_); \
    chk = ADD(chk, ADD(SUB(y0_, y0_), SUB(y1_, y1_))); }
#define FC_OUT_STEP(T, LD, ST, ADD, SUB, k) { \
    FC_OUT_COL(T, LD, ADD, SUB, 0, k) FC_OUT_COL(T, LD, ADD, SUB, 1, k) \
    FC_OUT_COL(T, LD, ADD, SUB, 2, k) FC_OUT_COL(T, LD, ADD, SUB, 3, k) \
    FC_OUT_ROW(T, ST, ADD, SUB, 0, k) FC_OUT_ROW(T, ST, ADD, SUB, 1, k) }

/* returns whether every output is finite */
FC_WINO int FC_NAME(fc_wino_output)(const FC_T* FC_WINO_RESTRICT m, ptrdiff_t ldm,
                                    ptrdiff_t L, FC_T b, FC_T* FC_WINO_RESTRICT y) {
    ptrdiff_t k = 0;
    FC_T lanes[FC_W], sum = 0;
    {
        FC_V bv = FC_NAME(fc_bcast)(b), chk = FC_NAME(fc_bcast)(0);
        for (; k + FC_W <= L; k += FC_W)
            FC_OUT_STEP(FC_V, FC_NAME(fc_load), FC_NAME(fc_store), FC_NAME(fc_add),
                        FC_NAME(fc_sub), k)
        FC_NAME(fc_store)(lanes, chk);
    }
    for (int i = 0; i < FC_W; i++)
        sum += lanes[i];
    {
        FC_T bv = b, chk = 0;
        for (; k < L; k++)
            FC_OUT_STEP(FC_T, FC_S_LOAD, FC_S_STORE, FC_S_ADD, FC_S_SUB, k)
        sum += chk;
    }
    return sum == 0;
}

/* dst[2k] = a[k], dst[2k + 1] = b[k] for k < n/2, and dst[n - 1] = a[n/2]
 * for an odd n: two planes of a row of outputs, interleaved */
FC_WINO void FC_NAME(fc_wino_interleave)(const FC_T* FC_WINO_RESTRICT a,
                                         const FC_T* FC_WINO_RESTRICT b, ptrdiff_t n,
                                         FC_T* FC_WINO_RESTRICT dst) {
    for (ptrdiff_t k = 0; k < n / 2; k++) {
        dst[2 * k] = a[k];
        dst[2 * k + 1] = b[k];
    }
    if (n % 2)
        dst[n - 1] = a[n / 2];
}

/* e[k] = src[2k], o[k] = src[2k + 1] for k < n: a row's even and odd columns */
FC_WINO void FC_NAME(fc_wino_split)(const FC_T* FC_WINO_RESTRICT src, ptrdiff_t n,
                                    FC_T* FC_WINO_RESTRICT e, FC_T* FC_WINO_RESTRICT o) {
    for (ptrdiff_t k = 0; k < n; k++) {
        e[k] = src[2 * k];
        o[k] = src[2 * k + 1];
    }
}

#undef FC_IN_ROW
#undef FC_IN_COL
#undef FC_IN_STEP
#undef FC_OUT_COL
#undef FC_OUT_ROW
#undef FC_OUT_STEP
#undef FC_S_LOAD
#undef FC_S_STORE
#undef FC_S_ADD
#undef FC_S_SUB
#undef FC_S_BCAST
#undef FC_PASTE
#undef FC_XPASTE
#undef FC_NAME
#undef FC_V
#undef FC_T
#undef FC_S
#undef FC_W
