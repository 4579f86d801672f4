/*
 * The body of the SIMD attention value accumulation (see attn.h), written once for both
 * vector widths: attn_avx2.c and attn_avx512.c define the vector type and operations below
 * and include this file, each compiled with its own target flags.
 *
 *   VEC       the float vector type          W        floats per vector
 *   VLOAD     unaligned load of W floats     VSTORE   unaligned store
 *   VSET1     broadcast one float            VFMA     a * b + c, fused
 *   LOAD_H    W halves from memory, widened  ATTN_NAME the exported getter
 *
 * Each output element accumulates its positions in order with one fused multiply-add per
 * position, whatever ng is (batch invariance).
 */
#include <immintrin.h>

#include "attn.h"

static inline VEC load_h(const uint16_t *p) {
    return LOAD_H(p);
}

/* One tile of up to 4 query heads x 4 vectors of D; tails go one vector at a time. */
static void acc_f16(int64_t D, int64_t np, int64_t ng, const void *v, size_t v_stride,
                    const float *s, size_t lds, float *out, size_t ldo) {
    const uint16_t *vh = v;
    for (int64_t g0 = 0; g0 < ng; g0 += 4) {
        const int64_t gn = ng - g0 < 4 ? ng - g0 : 4;
        int64_t d = 0;
        for (; d + 4 * W <= D; d += 4 * W) {
            VEC acc[4][4];
            for (int64_t g = 0; g < gn; g++)
                for (int k = 0; k < 4; k++)
                    acc[g][k] = VLOAD(out + (size_t)(g0 + g) * ldo + d + k * W);
            for (int64_t p = 0; p < np; p++) {
                const uint16_t *row = vh + (size_t)p * v_stride + d;
                const VEC x0 = load_h(row), x1 = load_h(row + W), x2 = load_h(row + 2 * W),
                          x3 = load_h(row + 3 * W);
                for (int64_t g = 0; g < gn; g++) {
                    const VEC w = VSET1(s[(size_t)(g0 + g) * lds + (size_t)p]);
                    acc[g][0] = VFMA(w, x0, acc[g][0]);
                    acc[g][1] = VFMA(w, x1, acc[g][1]);
                    acc[g][2] = VFMA(w, x2, acc[g][2]);
                    acc[g][3] = VFMA(w, x3, acc[g][3]);
                }
            }
            for (int64_t g = 0; g < gn; g++)
                for (int k = 0; k < 4; k++)
                    VSTORE(out + (size_t)(g0 + g) * ldo + d + k * W, acc[g][k]);
        }
        for (; d + W <= D; d += W)
            for (int64_t g = 0; g < gn; g++) {
                float *o = out + (size_t)(g0 + g) * ldo + d;
                VEC a = VLOAD(o);
                for (int64_t p = 0; p < np; p++)
                    a = VFMA(VSET1(s[(size_t)(g0 + g) * lds + (size_t)p]),
                             load_h(vh + (size_t)p * v_stride + d), a);
                VSTORE(o, a);
            }
        for (; d < D; d++)
            for (int64_t g = 0; g < gn; g++) {
                float *o = out + (size_t)(g0 + g) * ldo + d;
                float a = *o;
                for (int64_t p = 0; p < np; p++)
                    a = __builtin_fmaf(s[(size_t)(g0 + g) * lds + (size_t)p],
                                       _cvtsh_ss(vh[(size_t)p * v_stride + d]), a);
                *o = a;
            }
    }
}

static void acc_f32(int64_t D, int64_t np, int64_t ng, const void *v, size_t v_stride,
                    const float *s, size_t lds, float *out, size_t ldo) {
    const float *vf = v;
    for (int64_t g = 0; g < ng; g++) {
        float *o = out + (size_t)g * ldo;
        const float *sg = s + (size_t)g * lds;
        int64_t d = 0;
        for (; d + W <= D; d += W) {
            VEC a = VLOAD(o + d);
            for (int64_t p = 0; p < np; p++)
                a = VFMA(VSET1(sg[p]), VLOAD(vf + (size_t)p * v_stride + d), a);
            VSTORE(o + d, a);
        }
        for (; d < D; d++) {
            float a = o[d];
            for (int64_t p = 0; p < np; p++)
                a = __builtin_fmaf(sg[p], vf[(size_t)p * v_stride + d], a);
            o[d] = a;
        }
    }
}

static const ctn_attn attn = {acc_f16, acc_f32};

const ctn_attn *ATTN_NAME(void);
const ctn_attn *ATTN_NAME(void) {
    return &attn;
}
