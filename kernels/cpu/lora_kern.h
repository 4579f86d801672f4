/*
 * The two products of a LoRA update in the forward pass (forward.c), for a group of tokens
 * that run with one adapter matrix:
 *
 *     down: u[t][r]  = sum_i A[r][i] * x[t][i]            for r in [r0, r1)
 *     up:   y[t][o] += scale * sc[t] * sum_r Bt[r][o] * u[t][r]    for o in [o0, o1)
 *
 * A (rank x n_in, row-major) and Bt (B in runs of 16 outputs, lora.h ctn_lora_bt_index) hold
 * F32, F16 or BF16 values (o0 a multiple of 16); x, u and y
 * are F32, token t's rows at x + idx[j] * ldx, u + idx[j] * ldu and y + idx[j] * ldy and its
 * scale at sc[idx[j]] for the group's tokens j < g (no gather). The sums run over i and over r in
 * one order whatever g, r0..r1 or o0..o1 are, so a token's update does not depend on what else is
 * in the batch or on how the work is split. The AVX-512 versions are chosen when the ISA in use
 * (kern.h) has it; results then differ from the scalar ones by summation order only.
 */
#ifndef CTN_LORA_KERN_H
#define CTN_LORA_KERN_H

#include <stdint.h>

typedef struct {
    void (*down)(int type, const void *a, int64_t n_in, int32_t r0, int32_t r1, const float *x,
                 int64_t ldx, const int32_t *idx, int g, float *u, int64_t ldu);
    void (*up)(int type, const void *bt, int64_t n_out, int32_t rank, int64_t o0, int64_t o1,
               const float *u, int64_t ldu, float scale, const float *sc, const int32_t *idx, int g,
               float *y, int64_t ldy);
} ctn_lora_kern;

/* The products for the ISA in use. */
const ctn_lora_kern *ctn_lora_kern_get(void);

/* The AVX-512 and AVX2 products (engine/lora_avx512.c, engine/lora_avx2.c). */
extern const ctn_lora_kern ctn__lora_kern_avx512;
extern const ctn_lora_kern ctn__lora_kern_avx2;

#endif
