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

/* Row i of the 4x4 input blocks at tile k, times B: (a0 - a2, a1 + a2,
 * a2 - a1, a1 - a3) for the row (a0, a1, a2, a3), value j at
 * d[i*rs + oj + k] (o0 = 0): from 16 planes of the blocks' values, or from
 * each input row's even and odd columns, a2 and a3 one place on. */
#define FC_IN_ROW(T, LD, ADD, SUB, i, k) \
    T c##i##0, c##i##1, c##i##2, c##i##3; { \
        const FC_T* d_ = d + (i) * rs + (k); \
        T a0 = LD(d_), a1 = LD(d_ + o1), a2 = LD(d_ + o2), a3 = LD(d_ + o3); \
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

/* V = B^T d B of L tiles, their blocks' values laid out as FC_IN_ROW says;
 * value xi of tile k goes to v[xi*ld + k]. In whole vectors, the last one
 * overlapping the one before; one lane at a time for fewer tiles than a
 * vector. */
FC_WINO void FC_NAME(fc_wino_transform)(const FC_T* FC_WINO_RESTRICT d, ptrdiff_t rs,
                                        ptrdiff_t o1, ptrdiff_t o2, ptrdiff_t o3,
                                        ptrdiff_t L, FC_T* FC_WINO_RESTRICT v,
                                        ptrdiff_t ld) {
    ptrdiff_t k = 0;
    if (L < FC_W) {
        for (; k < L; k++)
            FC_IN_STEP(FC_T, FC_S_LOAD, FC_S_STORE, FC_S_ADD, FC_S_SUB, k)
        return;
    }
    for (; k + FC_W <= L; k += FC_W)
        FC_IN_STEP(FC_V, FC_NAME(fc_load), FC_NAME(fc_store), FC_NAME(fc_add),
                   FC_NAME(fc_sub), k)
    if (k < L) {
        k = L - FC_W;
        FC_IN_STEP(FC_V, FC_NAME(fc_load), FC_NAME(fc_store), FC_NAME(fc_add),
                   FC_NAME(fc_sub), k)
    }
}

/* column c of row, zero outside 0..W (the padding) or for a row of padding
 * (row NULL) */
#define FC_WINO_AT(c) (row != NULL && 0 <= (c) && (c) < W ? row[c] : 0)

/* p[j*ldp + k] = row[c0 + 2k + j] for j < m, k < n (m = 4: the rows of the
 * 4x4 input blocks of n tiles along a row of tiles; m = 2: the even and odd
 * columns). No pointer is formed outside the row. */
FC_WINO void FC_NAME(fc_wino_columns)(const FC_T* FC_WINO_RESTRICT row, ptrdiff_t W,
                                      ptrdiff_t c0, ptrdiff_t n, int m,
                                      FC_T* FC_WINO_RESTRICT p, ptrdiff_t ldp) {
    ptrdiff_t k, lo = 0, hi = 0;
    if (row != NULL) {  /* k in lo..hi: the m columns inside the row */
        lo = c0 >= 0 ? 0 : (1 - c0) / 2;
        lo = lo < n ? lo : n;
        hi = W - c0 - m + 2 >= 0 ? (W - c0 - m + 2) / 2 : 0;
        hi = hi < n ? hi : n;
        hi = hi > lo ? hi : lo;
        if (m == 2) {
            for (k = lo; k < hi; k++) {
                p[k] = row[c0 + 2 * k];
                p[ldp + k] = row[c0 + 2 * k + 1];
            }
        } else {
            for (k = lo; k < hi; k++) {
                p[k] = row[c0 + 2 * k];
                p[ldp + k] = row[c0 + 2 * k + 1];
                p[2 * ldp + k] = row[c0 + 2 * k + 2];
                p[3 * ldp + k] = row[c0 + 2 * k + 3];
            }
        }
    }
    for (k = 0; k < lo; k++)  /* the edges */
        for (int j = 0; j < m; j++)
            p[j * ldp + k] = FC_WINO_AT(c0 + 2 * k + j);
    for (k = hi; k < n; k++)
        for (int j = 0; j < m; j++)
            p[j * ldp + k] = FC_WINO_AT(c0 + 2 * k + j);
}

/* For fc_wino_input: the values of the input blocks of nt tiles from
 * (th, tw) of one channel (plane x). With `rows`, a run along a row of
 * tiles: input row i's even and odd columns, nt + 1 of each, value k at
 * s[i*ls + k] and s[(4 + i)*ls + k] (ls = nt + 1). Else the 16 planes of
 * the tiles' blocks over rows of tiles and images (ldn values apart),
 * value (i, j) of tile t at s[(4i + j)*nt + t]. */
FC_WINO void FC_NAME(fc_wino_gather)(const FC_T* x, ptrdiff_t ldn, ptrdiff_t H, ptrdiff_t W,
                                     ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t tH, ptrdiff_t tW,
                                     ptrdiff_t th, ptrdiff_t tw, ptrdiff_t nt, int rows,
                                     FC_T* s) {
    ptrdiff_t t = 0;
    if (rows) {
        for (int i = 0; i < 4; i++) {
            ptrdiff_t r = 2 * th - ph + i;
            FC_NAME(fc_wino_columns)(0 <= r && r < H ? x + r * W : NULL, W, 2 * tw - pw,
                                     nt + 1, 2, s + i * (nt + 1), 4 * (nt + 1));
        }
        return;
    }
    while (t < nt) {  /* runs of tiles along a row of tiles */
        ptrdiff_t L = tW - tw < nt - t ? tW - tw : nt - t;
        for (int i = 0; i < 4; i++) {
            ptrdiff_t r = 2 * th - ph + i;
            FC_NAME(fc_wino_columns)(0 <= r && r < H ? x + r * W : NULL, W, 2 * tw - pw, L,
                                     4, s + 4 * i * nt + t, nt);
        }
        t += L;
        tw = 0;
        if (++th == tH && t < nt) {
            th = 0;
            x += ldn;
        }
    }
}

/* V = B^T d B of nt tiles from (th, tw) in each of C channels of an
 * image's planes (H x W) at x, rows of tW tiles, tH rows to an image,
 * images ldn values apart, the blocks from row 2*th - ph and column
 * 2*tw - pw; value xi of tile t of channel c goes to v[xi*ld + c*ldc + t].
 *
 * Rows of tiles of at least a vector go a run along a row of tiles at a
 * time, from each input row's even and odd columns, split once (columns 2
 * and 3 of a block are columns 0 and 1 of the next one's). A run shorter
 * than a vector (at the ends of nt) fills a whole one: v's rows need room
 * for a vector past nt, and the values past the run are not V's (the next
 * run overwrites them, or they lie past nt). Shorter rows of tiles go
 * all nt tiles at once, from the 16 planes of their blocks (twice the
 * stores, but whole vectors). Each channel's values are gathered before the
 * previous channel's are transformed: a vector load right after the stores
 * it spans would wait for them (store-to-load forwarding fails: 27% of the
 * kernel's time on Zen 5). `s` is scratch of 32*max(nt, vector) + 16
 * values. */
FC_WINO void FC_NAME(fc_wino_input)(const FC_T* x, ptrdiff_t C, ptrdiff_t ldn, ptrdiff_t H,
                                    ptrdiff_t W, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t tH,
                                    ptrdiff_t tW, ptrdiff_t th, ptrdiff_t tw, ptrdiff_t nt,
                                    FC_T* FC_WINO_RESTRICT s, FC_T* FC_WINO_RESTRICT v,
                                    ptrdiff_t ldc, ptrdiff_t ld) {
    int rows = tW >= FC_W;
    ptrdiff_t t = 0;
    if (C <= 0)
        return;
    while (t < nt) {
        ptrdiff_t L = rows ? (tW - tw < nt - t ? tW - tw : nt - t) : nt;
        ptrdiff_t n = rows && L < FC_W ? FC_W : L;  /* the tiles transformed */
        ptrdiff_t half = rows ? 8 * (n + 1) : 16 * nt;  /* one channel's values */
        ptrdiff_t rs = rows ? n + 1 : 4 * nt, o1 = rows ? 4 * (n + 1) : nt;
        ptrdiff_t o2 = rows ? 1 : 2 * nt, o3 = rows ? 4 * (n + 1) + 1 : 3 * nt;
        FC_NAME(fc_wino_gather)(x, ldn, H, W, ph, pw, tH, tW, th, tw, n, rows, s);
        for (ptrdiff_t c = 0; c < C; c++) {
            if (c + 1 < C)
                FC_NAME(fc_wino_gather)(x + (c + 1) * H * W, ldn, H, W, ph, pw, tH, tW, th,
                                        tw, n, rows, s + ((c + 1) % 2) * half);
            FC_NAME(fc_wino_transform)(s + (c % 2) * half, rs, o1, o2, o3, n,
                                       v + c * ldc + t, ld);
        }
        t += L;
        tw += L;
        if (tw == tW) {
            tw = 0;
            if (++th == tH && t < nt) {
                th = 0;
                x += ldn;
            }
        }
    }
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

#undef FC_IN_ROW
#undef FC_WINO_AT
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
