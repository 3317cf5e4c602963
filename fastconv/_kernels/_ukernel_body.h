/* The micro-kernels for one dtype: included by _ukernel.h with FC_T (the
 * scalar), FC_S (its suffix: f32 or f64) and FC_W (the lanes of a vector)
 * bound; the vector layer's names of that dtype follow from FC_S. See
 * _ukernel.h for the contract. */
#define FC_PASTE(a, b) a##b
#define FC_XPASTE(a, b) FC_PASTE(a, b)
#define FC_NAME(op) FC_XPASTE(op##_, FC_S)
#define FC_V FC_XPASTE(fc_v, FC_S)
#define FC_LOAD FC_NAME(fc_load)
#define FC_STORE FC_NAME(fc_store)
#define FC_BCAST FC_NAME(fc_bcast)
#define FC_FMA FC_NAME(fc_fma)
#define FC_ZERO FC_NAME(fc_zero)
#define FC_ADD FC_NAME(fc_add)
#define FC_RELU FC_NAME(fc_relu)

/* accumulator row i: two vectors, c<i>a and c<i>b */
#define FC_ACC(i) FC_V c##i##a = FC_ZERO(), c##i##b = FC_ZERO();
#define FC_STEP(i, ai) { FC_V s_ = FC_BCAST(ai); \
    c##i##a = FC_FMA(s_, b0, c##i##a); c##i##b = FC_FMA(s_, b1, c##i##b); }
#define FC_STEP_PACKED(i) FC_STEP(i, a[i])
#define FC_STEP_ROWS(i) FC_STEP(i, p##i[k])
#define FC_PUT(i) FC_STORE(c + (i) * ldc, c##i##a); FC_STORE(c + (i) * ldc + FC_W, c##i##b);

/* C (MR x NR) = A (packed, kc x MR)^T B (kc rows of NR, ldb apart) */
FC_KERNEL void FC_NAME(fc_gemm)(ptrdiff_t kc, const FC_T* FC_RESTRICT a,
                                const FC_T* FC_RESTRICT b, ptrdiff_t ldb,
                                FC_T* FC_RESTRICT c, ptrdiff_t ldc) {
    FC_ROWS(FC_ACC)
    for (ptrdiff_t k = 0; k < kc; k++) {
        FC_V b0 = FC_LOAD(b), b1 = FC_LOAD(b + FC_W);
        FC_ROWS(FC_STEP_PACKED)
        a += FASTCONV_MR;
        b += ldb;
    }
    FC_ROWS(FC_PUT)
}

/* fc_gemm with row k of B at b + off[k], and an epilogue: with `add`, the
 * block is added to c; else bias[i] (bias NULL: none) is added to row i;
 * then, with `relu`, max(., 0), NaN kept. The implicit forward stores full
 * blocks straight into the output with it. */
#define FC_ADD_C(i) c##i##a = FC_ADD(c##i##a, FC_LOAD(c + (i) * ldc)); \
    c##i##b = FC_ADD(c##i##b, FC_LOAD(c + (i) * ldc + FC_W));
#define FC_ADD_BIAS(i) { FC_V s_ = FC_BCAST(bias[i]); \
    c##i##a = FC_ADD(c##i##a, s_); c##i##b = FC_ADD(c##i##b, s_); }
#define FC_RELU_ROW(i) c##i##a = FC_RELU(c##i##a); c##i##b = FC_RELU(c##i##b);
FC_KERNEL void FC_NAME(fc_gemm_taps)(ptrdiff_t kc, const FC_T* FC_RESTRICT a,
                                     const FC_T* FC_RESTRICT b,
                                     const ptrdiff_t* FC_RESTRICT off,
                                     FC_T* FC_RESTRICT c, ptrdiff_t ldc,
                                     const FC_T* FC_RESTRICT bias, int add, int relu) {
    FC_ROWS(FC_ACC)
    for (ptrdiff_t k = 0; k < kc; k++) {
        const FC_T* bk = b + off[k];
        FC_V b0 = FC_LOAD(bk), b1 = FC_LOAD(bk + FC_W);
        FC_ROWS(FC_STEP_PACKED)
        a += FASTCONV_MR;
    }
    if (add) {
        FC_ROWS(FC_ADD_C)
    } else if (bias) {
        FC_ROWS(FC_ADD_BIAS)
    }
    if (relu) {
        FC_ROWS(FC_RELU_ROW)
    }
    FC_ROWS(FC_PUT)
}

/* c[j] = sum_k a[k*MR] * b[off[k] + j] for j < MR*NR: one row of A (row 0
 * of a packed panel, or any row: a points at it) against MR*NR columns */
#define FC_STEP_ROW(i) c##i##a = FC_FMA(s_, FC_LOAD(bk + 2 * (i) * FC_W), c##i##a); \
    c##i##b = FC_FMA(s_, FC_LOAD(bk + (2 * (i) + 1) * FC_W), c##i##b);
#define FC_PUT_ROW(i) FC_STORE(c + 2 * (i) * FC_W, c##i##a); \
    FC_STORE(c + (2 * (i) + 1) * FC_W, c##i##b);
FC_KERNEL void FC_NAME(fc_gemm_row)(ptrdiff_t kc, const FC_T* FC_RESTRICT a,
                                    const FC_T* FC_RESTRICT b,
                                    const ptrdiff_t* FC_RESTRICT off,
                                    FC_T* FC_RESTRICT c) {
    FC_ROWS(FC_ACC)
    for (ptrdiff_t k = 0; k < kc; k++) {
        const FC_T* bk = b + off[k];
        FC_V s_ = FC_BCAST(a[k * FASTCONV_MR]);
        FC_ROWS(FC_STEP_ROW)
    }
    FC_ROWS(FC_PUT_ROW)
}

/* C (MR x NR) = A B with row i of A read in place: nseg segments of seglen
 * values, at a + aoff[i] + s*sstride; B is contiguous, row k at b + k*NR */
#define FC_ROW_PTR(i) const FC_T* p##i = a + aoff[i];
#define FC_ROW_NEXT(i) p##i += sstride;
FC_KERNEL void FC_NAME(fc_gemm_rows)(ptrdiff_t nseg, ptrdiff_t seglen, ptrdiff_t sstride,
                                     const FC_T* FC_RESTRICT a,
                                     const ptrdiff_t* FC_RESTRICT aoff,
                                     const FC_T* FC_RESTRICT b,
                                     FC_T* FC_RESTRICT c, ptrdiff_t ldc) {
    FC_ROWS(FC_ACC)
    FC_ROWS(FC_ROW_PTR)
    for (ptrdiff_t s = 0; s < nseg; s++) {
        for (ptrdiff_t k = 0; k < seglen; k++) {
            FC_V b0 = FC_LOAD(b), b1 = FC_LOAD(b + FC_W);
            FC_ROWS(FC_STEP_ROWS)
            b += 2 * FC_W;
        }
        FC_ROWS(FC_ROW_NEXT)
    }
    FC_ROWS(FC_PUT)
}

/* n rounds of MR*2 independent vector FMAs (2*MR*2*W*n flops): the peak the
 * micro-kernels are measured against, in the same registers. Each chain
 * starts from its own value (equal chains would be merged into one by the
 * compiler), and the sum of all is returned, so that none can be removed. */
#define FC_ACC_SEED(i) FC_V c##i##a = FC_BCAST(seed * (FC_T)(2 * (i) + 1)), \
    c##i##b = FC_BCAST(seed * (FC_T)(2 * (i) + 2));
#define FC_PEAK(i) c##i##a = FC_FMA(c##i##a, x, y); c##i##b = FC_FMA(c##i##b, x, y);
#define FC_SUM(i) FC_STORE(out, c##i##a); for (int l = 0; l < FC_W; l++) total += out[l]; \
    FC_STORE(out, c##i##b); for (int l = 0; l < FC_W; l++) total += out[l];
FC_KERNEL double FC_NAME(fc_fma_peak)(ptrdiff_t n, FC_T seed) {
    FC_T out[FC_W];
    double total = 0;
    FC_V x = FC_BCAST((FC_T)0.999999), y = FC_BCAST((FC_T)1e-6);
    FC_ROWS(FC_ACC_SEED)
    for (ptrdiff_t r = 0; r < n; r++) {
        FC_ROWS(FC_PEAK)
    }
    FC_ROWS(FC_SUM)
    return total;
}

#undef FC_PASTE
#undef FC_XPASTE
#undef FC_NAME
#undef FC_ACC
#undef FC_STEP
#undef FC_STEP_PACKED
#undef FC_STEP_ROWS
#undef FC_PUT
#undef FC_ADD_C
#undef FC_ADD_BIAS
#undef FC_RELU_ROW
#undef FC_STEP_ROW
#undef FC_PUT_ROW
#undef FC_ROW_PTR
#undef FC_ROW_NEXT
#undef FC_PEAK
#undef FC_ACC_SEED
#undef FC_SUM
#undef FC_V
#undef FC_LOAD
#undef FC_STORE
#undef FC_BCAST
#undef FC_FMA
#undef FC_ZERO
#undef FC_ADD
#undef FC_RELU
/* the bindings of this dtype, set by _ukernel.h */
#undef FC_T
#undef FC_S
#undef FC_W
