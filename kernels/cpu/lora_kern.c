/*
 * LoRA products (lora_kern.h): the scalar reference and the choice of version.
 */
#include "lora_kern.h"

#include <string.h>

#include "types.h"
#include "kern.h"
#include "quant.h"

static inline float at(int type, const void *p, int64_t i) {
    if (type == CTN_TYPE_F32) return ((const float *)p)[i];
    uint16_t h;
    memcpy(&h, (const char *)p + i * 2, 2);
    return type == CTN_TYPE_F16 ? ctn_fp16_to_fp32(h) : ctn_bf16_to_fp32(h);
}

static void down_scalar(int type, const void *a, int64_t n_in, int32_t r0, int32_t r1,
                        const float *x, int64_t ldx, const int32_t *idx, int g, float *u,
                        int64_t ldu) {
    for (int j = 0; j < g; j++) {
        const float *xt = x + (int64_t)idx[j] * ldx;
        for (int32_t r = r0; r < r1; r++) {
            float s = 0.0f;
            for (int64_t i = 0; i < n_in; i++)
                s += at(type, a, (int64_t)r * n_in + i) * xt[i];
            u[(int64_t)idx[j] * ldu + r] = s;
        }
    }
}

static void up_scalar(int type, const void *bt, int64_t n_out, int32_t rank, int64_t o0, int64_t o1,
                      const float *u, int64_t ldu, float scale, const float *sc, const int32_t *idx,
                      int g, float *y, int64_t ldy) {
    (void)n_out; /* bt's layout depends on rank only */
    for (int j = 0; j < g; j++) {
        const float *ut = u + (int64_t)idx[j] * ldu;
        float *yt = y + (int64_t)idx[j] * ldy;
        const float c = scale * sc[idx[j]];
        for (int64_t o = o0; o < o1; o++) {
            float s = 0.0f;
            for (int32_t r = 0; r < rank; r++)
                s += at(type, bt, ctn_lora_bt_index(rank, o, r)) * ut[r];
            yt[o] += c * s;
        }
    }
}

static const ctn_lora_kern scalar = {down_scalar, up_scalar};

const ctn_lora_kern *ctn_lora_kern_get(void) {
    const ctn_isa isa = ctn_kern_isa();
    return isa == CTN_ISA_AVX512 || isa == CTN_ISA_AMX ? &ctn__lora_kern_avx512
           : isa == CTN_ISA_AVX2                       ? &ctn__lora_kern_avx2
                                                       : &scalar;
}
