/*
 * Weight formats: block layouts and the scalar reference quantizers and dequantizers.
 *
 *     float x[256], y[256];
 *     ctn_block_q4_K q[1];
 *     if (ctn_quantize_row(CTN_TYPE_Q4_K, x, q, 256) < 0) ...   // n a multiple of 256
 *     ctn_dequantize_row(CTN_TYPE_Q4_K, q, y, 256);
 *
 * These are the reference path every SIMD kernel is checked against. They produce exactly
 * the bytes ggml's reference quantizers produce (quantize_row_*_ref, which is what
 * ggml_quantize_chunk runs when no importance matrix is given, for the K-quants too) and
 * exactly the floats of ggml's to_float; tests/compat/quantdiff.c checks both bit for bit
 * against libggml-base.
 *
 * Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. A row of n elements of type t
 * takes n / ctn_type_block_size(t) * ctn_type_block_bytes(t) bytes. Blocks are packed
 * back to back with no padding, as in a GGUF file; the block types need 2-byte alignment
 * (F32 rows 4-byte).
 *
 * NaN and infinity: the quantizers reproduce what ggml's reference code compiles to on
 * x86-64 (where a float-to-int conversion of NaN or of an out-of-range value yields
 * INT_MIN), without relying on undefined behaviour. A NaN in a block therefore gives
 * deterministic but meaningless codes for that block (often a NaN or infinite scale).
 * Callers that care must check their inputs; llama.cpp does not either.
 */
#ifndef CTN_QUANT_H
#define CTN_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "base.h"  /* CTN_E* */
#include "types.h" /* ctn_type */

#define CTN_QK8_0        32
#define CTN_QK4_0        32
#define CTN_QK4_1        32
#define CTN_QK5_0        32
#define CTN_QK5_1        32
#define CTN_QK_K         256 /* super-block size of the K-quants */
#define CTN_K_SCALE_SIZE 12  /* packed 6-bit scales and mins of Q4_K / Q5_K */

/*
 * Q8_0: 32 weights as int8 times one half-precision scale: w = d * qs[i]. 34 bytes,
 * 8.5 bits per weight.
 */
typedef struct {
    uint16_t d;           /* scale, IEEE half */
    int8_t qs[CTN_QK8_0]; /* (32) quants */
} ctn_block_q8_0;

/*
 * Q4_0: 32 weights as 4-bit codes with an implicit offset of 8: w = d * (q - 8).
 * Byte j holds weight j in its low nibble and weight j + 16 in its high nibble.
 * 18 bytes, 4.5 bits per weight.
 */
typedef struct {
    uint16_t d;                /* scale, IEEE half */
    uint8_t qs[CTN_QK4_0 / 2]; /* (16) nibbles */
} ctn_block_q4_0;

/*
 * Q4_1: 32 weights as 4-bit codes with a scale and an offset: w = d * q + m, where m is the
 * block's minimum. Nibbles as in Q4_0. 20 bytes, 5 bits per weight.
 */
typedef struct {
    uint16_t d;                /* scale, IEEE half */
    uint16_t m;                /* minimum, IEEE half */
    uint8_t qs[CTN_QK4_1 / 2]; /* (16) nibbles */
} ctn_block_q4_1;

/*
 * Q5_0: 32 weights as 5-bit codes with an implicit offset of 16: w = d * (q - 16). The low
 * 4 bits are packed as Q4_0's nibbles; bit j of the little-endian 32-bit word qh is the
 * fifth bit of weight j. 22 bytes, 5.5 bits per weight.
 */
typedef struct {
    uint16_t d;                /* scale, IEEE half */
    uint8_t qh[4];             /* fifth bits, little-endian uint32 */
    uint8_t qs[CTN_QK5_0 / 2]; /* (16) low nibbles */
} ctn_block_q5_0;

/*
 * Q5_1: 32 weights as 5-bit codes with a scale and an offset: w = d * q + m. Bits packed
 * as in Q5_0. 24 bytes, 6 bits per weight.
 */
typedef struct {
    uint16_t d;                /* scale, IEEE half */
    uint16_t m;                /* minimum, IEEE half */
    uint8_t qh[4];             /* fifth bits, little-endian uint32 */
    uint8_t qs[CTN_QK5_1 / 2]; /* (16) low nibbles */
} ctn_block_q5_1;

/*
 * Q4_K: a super-block of 256 weights in 8 sub-blocks of 32, w = d * sc[j] * q - dmin * m[j]
 * with 4-bit q and 6-bit sc/m. scales[] packs the 8 (sc, m) pairs: for j < 4, sc[j] is
 * the low 6 bits of scales[j] and m[j] the low 6 bits of scales[j + 4]; for j >= 4 the low
 * nibble of scales[j + 4] holds sc's low 4 bits and its high nibble m's low 4 bits, while
 * their top 2 bits sit in the top 2 bits of scales[j - 4] (sc) and scales[j] (m).
 * qs: each 32-byte group covers 64 weights, sub-block 2g in the low nibbles and 2g + 1 in
 * the high nibbles. 144 bytes, 4.5 bits per weight.
 */
typedef struct {
    uint16_t d;                       /* super-block scale of the scales, IEEE half */
    uint16_t dmin;                    /* super-block scale of the mins, IEEE half */
    uint8_t scales[CTN_K_SCALE_SIZE]; /* (12) packed 6-bit scales and mins */
    uint8_t qs[CTN_QK_K / 2];         /* (128) nibbles */
} ctn_block_q4_K;

/*
 * Q5_K: as Q4_K with a fifth bit per weight: bit 2g of qh[l] is the high bit of weight
 * l of sub-block 2g, bit 2g + 1 that of sub-block 2g + 1. 176 bytes, 5.5 bits per weight.
 */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[CTN_K_SCALE_SIZE]; /* (12) packed 6-bit scales and mins */
    uint8_t qh[CTN_QK_K / 8];         /* (32) high bits */
    uint8_t qs[CTN_QK_K / 2];         /* (128) low nibbles */
} ctn_block_q5_K;

/*
 * Q6_K: 256 weights in 16 sub-blocks of 16, w = d * scales[j] * (q - 32) with 6-bit q and
 * int8 scales. Per 128 weights (two halves of the block): ql holds 64 bytes of low
 * nibbles (weights l and l + 64 in byte l, l + 32 and l + 96 in byte l + 32) and qh 32
 * bytes of high bit pairs (weights l, l + 32, l + 64, l + 96 at bits 0, 2, 4, 6 of qh[l]).
 * 210 bytes, 6.5625 bits per weight.
 */
typedef struct {
    uint8_t ql[CTN_QK_K / 2];     /* (128) low 4 bits */
    uint8_t qh[CTN_QK_K / 4];     /* (64) high 2 bits */
    int8_t scales[CTN_QK_K / 16]; /* (16) 8-bit sub-block scales */
    uint16_t d;                   /* super-block scale, IEEE half */
} ctn_block_q6_K;

_Static_assert(sizeof(ctn_block_q8_0) == 34, "q8_0 block must be 34 bytes");
_Static_assert(sizeof(ctn_block_q4_0) == 18, "q4_0 block must be 18 bytes");
_Static_assert(sizeof(ctn_block_q4_1) == 20, "q4_1 block must be 20 bytes");
_Static_assert(sizeof(ctn_block_q5_0) == 22, "q5_0 block must be 22 bytes");
_Static_assert(sizeof(ctn_block_q5_1) == 24, "q5_1 block must be 24 bytes");
_Static_assert(sizeof(ctn_block_q4_K) == 144, "q4_K block must be 144 bytes");
_Static_assert(sizeof(ctn_block_q5_K) == 176, "q5_K block must be 176 bytes");
_Static_assert(sizeof(ctn_block_q6_K) == 210, "q6_K block must be 210 bytes");

/* ---- scalar conversions ------------------------------------------------------------- */

/*
 * IEEE half <-> float. Float to half rounds to nearest, ties to even, overflows to
 * infinity and keeps subnormals; every NaN becomes 0x7E00 with the input's sign (as ggml).
 * Half to float is exact; a NaN keeps its payload and is made quiet.
 */
uint16_t ctn_fp32_to_fp16(float f);
float ctn_fp16_to_fp32(uint16_t h);
/*
 * bfloat16 <-> float. Float to bf16 rounds to nearest, ties to even, keeps subnormals;
 * a NaN keeps its top 16 bits with the quiet bit (0x40) forced on (as ggml).
 */
uint16_t ctn_fp32_to_bf16(float f);
float ctn_bf16_to_fp32(uint16_t h);

/* ---- rows --------------------------------------------------------------------------- */

/* True when ctn_quantize_row / ctn_dequantize_row handle this type. */
bool ctn_quant_supported(int type);

/*
 * Quantizes n floats from x (borrowed) into dst, which must hold the row's bytes (see
 * above). Returns 0, CTN_ENOTSUP for an unsupported type, CTN_EINVAL when n is negative
 * or not a multiple of the type's block size, or when x or dst is NULL with n > 0.
 */
int ctn_quantize_row(int type, const float *x, void *dst, int64_t n);
/* Dequantizes n elements of src into y; same errors as ctn_quantize_row. */
int ctn_dequantize_row(int type, const void *src, float *y, int64_t n);

/* ---- LoRA B, transposed in runs of 16 outputs (engine/lora.h, the LoRA products) ---- */

/* Where element (o, r) of B is in bt. */
static inline int64_t ctn_lora_bt_index(int64_t rank, int64_t o, int64_t r) {
    return ((o / 16) * rank + r) * 16 + o % 16;
}
/* Values bt holds: rank * n_out rounded up to 16. */
static inline int64_t ctn_lora_bt_len(int64_t rank, int64_t n_out) {
    return rank * ((n_out + 15) / 16 * 16);
}

/* One adapter matrix pair (engine/lora.h loads them; the backends' LoRA products read them). */
typedef struct {
    int32_t rank;  /* 0: this matrix is not updated */
    int64_t n_in;  /* columns of A = the base tensor's ne[0] */
    int64_t n_out; /* rows of B = the base tensor's ne[1] */
    float scale;   /* alpha / rank (or / sqrt(rank) with rsLoRA) for this pair */
    int type;      /* how a and bt hold their values: CTN_TYPE_F32, CTN_TYPE_F16 or
                      CTN_TYPE_BF16 (engine/lora.h, "Precision") */
    void *a;       /* A: (rank, n_in) row-major, owned */
    void *bt;      /* B transposed in runs of 16 outputs: element (o, r) of B at
                      ctn_lora_bt_index(rank, o, r), n_out rounded up to 16 with zeros, owned
                      (the forward pass adds sum_r u[r] * B[o..o+16][r] for a run at a
                      time, reading one contiguous block per run) */
} ctn_lora_mat;

#endif
