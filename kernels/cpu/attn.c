/* Attention value accumulation (see attn.h): the scalar reference and the ISA dispatch. */
#include "attn.h"

#include "kern.h"
#include "quant.h"

/* Defined in attn_avx2.c / attn_avx512.c (x86-64 only). */
const ctn_attn *ctn__attn_avx2(void);
const ctn_attn *ctn__attn_avx512(void);

static void acc_f16(int64_t D, int64_t np, int64_t ng, const void *v, size_t v_stride,
                    const float *s, size_t lds, float *out, size_t ldo) {
    const uint16_t *vh = v;
    for (int64_t g = 0; g < ng; g++)
        for (int64_t p = 0; p < np; p++) {
            const float w = s[(size_t)g * lds + (size_t)p];
            const uint16_t *row = vh + (size_t)p * v_stride;
            float *o = out + (size_t)g * ldo;
            for (int64_t d = 0; d < D; d++)
                o[d] += w * ctn_fp16_to_fp32(row[d]);
        }
}

static void acc_f32(int64_t D, int64_t np, int64_t ng, const void *v, size_t v_stride,
                    const float *s, size_t lds, float *out, size_t ldo) {
    const float *vf = v;
    for (int64_t g = 0; g < ng; g++)
        for (int64_t p = 0; p < np; p++) {
            const float w = s[(size_t)g * lds + (size_t)p];
            const float *row = vf + (size_t)p * v_stride;
            float *o = out + (size_t)g * ldo;
            for (int64_t d = 0; d < D; d++)
                o[d] += w * row[d];
        }
}

static const ctn_attn attn_scalar = {acc_f16, acc_f32};

const ctn_attn *ctn_attn_get(void) {
#if defined(__x86_64__)
    switch (ctn_kern_isa()) {
    case CTN_ISA_AVX512:
    case CTN_ISA_AMX: return ctn__attn_avx512();
    case CTN_ISA_AVX2: return ctn__attn_avx2();
    default: break;
    }
#endif
    return &attn_scalar;
}
