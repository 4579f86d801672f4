/*
 * The value side of attention: for ng query heads that share one KV head, adds the
 * probability-weighted values of np cached positions to their outputs,
 *
 *     out[g * ldo + d] += sum over p < np of s[g * lds + p] * v[p * v_stride + d]
 *
 * for g < ng, d < D, with v F16 (the default KV cache) or F32. Each output element sums
 * its positions in order p = 0, 1, ..., so its value does not depend on ng (batch
 * invariance, as kern.h). Scalar, AVX2 and AVX-512 versions follow kern.h's ISA choice.
 */
#ifndef CTN_ATTN_H
#define CTN_ATTN_H

#include <stddef.h>
#include <stdint.h>

typedef void (*ctn_attn_acc_fn)(int64_t D, int64_t np, int64_t ng, const void *v, size_t v_stride,
                                const float *s, size_t lds, float *out, size_t ldo);

typedef struct {
    ctn_attn_acc_fn acc_f16; /* v holds IEEE halves; v_stride in elements */
    ctn_attn_acc_fn acc_f32; /* v holds floats */
} ctn_attn;

/* The functions for the ISA kern.h has chosen (ctn_kern_isa). */
const ctn_attn *ctn_attn_get(void);

#endif
