/*
 * The CPU compute kernels: dot products of weight rows with activation rows for every weight
 * type the engine runs, and the small vector operations attention needs. Each has a scalar
 * version (the reference, always present), an AVX2+FMA+F16C version and an AVX-512 version
 * (F, BW, VL, plus VNNI where the CPU has it); the best one the CPU supports is chosen at
 * run time (no -march=native: each ISA lives in its own source file compiled with its own
 * target flags).
 *
 *     const ctn_kern *k = ctn_kern_get(CTN_TYPE_Q8_0);        // NULL: type not supported
 *     k->from_float(x, xa, n);                                // activations -> k->atype
 *     k->gemm(n, w, w_row_bytes, n_rows, xa, a_row_bytes, n_tok, y, n_rows);
 *
 * As llama.cpp does, activations are converted once per matrix product to the format the
 * weight type's dot product reads (atype): F32 for F32 weights, F16 for F16, BF16 for BF16,
 * Q8_0 for Q8_0 / Q4_0 / Q5_0, Q8_1 for Q4_1 / Q5_1 and Q8_K for Q4_K / Q5_K / Q6_K. The
 * quantized dot products work block by block on the packed weights (no row is dequantized
 * first).
 *
 * Batch invariance: gemm's result for one (weight row, activation row) pair is the same bits
 * whatever nr and nc are and wherever the pair sits in the tile, so a sequence's output does
 * not depend on what else is in the batch. Results may differ between ISAs (summation
 * order), never between calls on the same ISA.
 */
#ifndef CTN_KERN_H
#define CTN_KERN_H

#include <stddef.h>
#include <stdint.h>

/* Q8_K: the activation format of the K-quants (256 values, float scale, int8 quants and
 * the sums of each 16 quants). */
typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[256 / 16];
} ctn_block_q8_K;

/* Q8_1: the activation format of Q4_1 / Q5_1 (32 values; s = d * sum of qs). */
typedef struct {
    uint16_t d; /* IEEE half */
    uint16_t s; /* IEEE half */
    int8_t qs[32];
} ctn_block_q8_1;

typedef struct {
    int wtype;     /* ctn_type of the weight rows */
    int atype;     /* ctn_type activations are converted to */
    int64_t block; /* n must be a multiple of this (the larger of both types' block sizes) */
    /* Converts n floats (a multiple of block) into atype. */
    void (*from_float)(const float *x, void *a, int64_t n);
    /*
     * For r < nr and c < nc: y[c * ldy + r] = dot(weight row r, activation row c), each of
     * n elements (a multiple of block). Weight row r starts at (char *)w + r * w_stride,
     * activation row c at (char *)a + c * a_stride. nr, nc >= 1; any sizes are handled.
     */
    void (*gemm)(int64_t n, const void *w, size_t w_stride, int64_t nr, const void *a,
                 size_t a_stride, int64_t nc, float *y, size_t ldy);
} ctn_kern;

/* The kernel for a weight type on the current ISA, or NULL when the type has none. */
const ctn_kern *ctn_kern_get(int wtype);
/*
 * The exact product for a weight type: activations stay F32 (atype F32, from_float a copy)
 * and the weight rows are dequantized, a tile at a time, to F32 (ctn_dequantize_row) and
 * multiplied by the F32 kernel. So a quantized model's products carry only the weights'
 * rounding, not the activations' conversion to Q8_0 / Q8_1 / Q8_K (or F16 / BF16) as well.
 * Slower than ctn_kern_get's (F32 arithmetic instead of integer dot products); batch
 * invariant as the F32 kernel is. NULL when the type has no kernel.
 */
const ctn_kern *ctn_kern_get_f32act(int wtype);
/* Bytes of one activation row of n elements of atype (n a multiple of its block). */
size_t ctn_kern_act_bytes(int atype, int64_t n);

/* Vector operations on float / half vectors (attention over an F16 or F32 KV cache). */
typedef struct {
    float (*dot_f32)(int64_t n, const float *x, const float *y);
    float (*dot_f16)(int64_t n, const uint16_t *x, const float *y); /* x half, y float */
    void (*mad_f32)(int64_t n, float *y, const float *x, float s);  /* y += s * x */
    void (*mad_f16)(int64_t n, float *y, const uint16_t *x, float s);
    void (*to_f16)(int64_t n, uint16_t *y, const float *x); /* round to nearest even */
    /* x[i] = softmax(scale * x)[i]: max subtracted, exponentials summed in double. NaN in,
     * NaN out. */
    void (*softmax)(int64_t n, float *x, float scale);
    /* g[i] = silu(g[i]) * u[i] = g[i] / (1 + e^-g[i]) * u[i]. */
    void (*silu_mul)(int64_t n, float *g, const float *u);
} ctn_vec;

const ctn_vec *ctn_vec_get(void);

/* The instruction sets, best last. AMX is AVX-512 with Q8_0, Q4_0, Q4_K and Q5_K matrix
 * products on AMX tiles (kern_amx.c, kern_amx_k.c). */
typedef enum { CTN_ISA_SCALAR, CTN_ISA_AVX2, CTN_ISA_AVX512, CTN_ISA_AMX } ctn_isa;

/* The ISA in use: the best the CPU has, unless ctn_kern_set_isa chose another. */
ctn_isa ctn_kern_isa(void);
const char *ctn_isa_name(ctn_isa isa);
/* True when the CPU (and OS) support the ISA. */
int ctn_isa_supported(ctn_isa isa);
/*
 * Selects the ISA for later ctn_kern_get / ctn_vec_get calls (tests run every path; the
 * CATENA_ISA environment variable, "scalar", "avx2", "avx512" or "amx", does the same at start-up).
 * Returns 0, or CTN_ENOTSUP when the CPU lacks it. Not thread-safe: call before any work.
 */
int ctn_kern_set_isa(ctn_isa isa);

#endif
