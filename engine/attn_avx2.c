/*
 * Attention value accumulation with AVX2+FMA+F16C (see attn.h); compiled with -mavx2 -mfma -mf16c
 * only (CMakeLists.txt). Each output element accumulates its positions in order with one fused
 * multiply-add per position, whatever ng is.
 */
#include <immintrin.h>

#include "attn.h"

#define W 8 /* floats per vector */

static inline __m256 load_h(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* One tile of up to 4 query heads x 4 vectors of D; tails go one vector at a time. */
static void acc_f16(int64_t D, int64_t np, int64_t ng, const void *v, size_t v_stride,
                    const float *s, size_t lds, float *out, size_t ldo) {
    const uint16_t *vh = v;
    for (int64_t g0 = 0; g0 < ng; g0 += 4) {
        const int64_t gn = ng - g0 < 4 ? ng - g0 : 4;
        int64_t d = 0;
        for (; d + 4 * W <= D; d += 4 * W) {
            __m256 acc[4][4];
            for (int64_t g = 0; g < gn; g++)
                for (int k = 0; k < 4; k++)
                    acc[g][k] = _mm256_loadu_ps(out + (size_t)(g0 + g) * ldo + d + k * W);
            for (int64_t p = 0; p < np; p++) {
                const uint16_t *row = vh + (size_t)p * v_stride + d;
                const __m256 x0 = load_h(row), x1 = load_h(row + W), x2 = load_h(row + 2 * W),
                             x3 = load_h(row + 3 * W);
                for (int64_t g = 0; g < gn; g++) {
                    const __m256 w = _mm256_set1_ps(s[(size_t)(g0 + g) * lds + (size_t)p]);
                    acc[g][0] = _mm256_fmadd_ps(w, x0, acc[g][0]);
                    acc[g][1] = _mm256_fmadd_ps(w, x1, acc[g][1]);
                    acc[g][2] = _mm256_fmadd_ps(w, x2, acc[g][2]);
                    acc[g][3] = _mm256_fmadd_ps(w, x3, acc[g][3]);
                }
            }
            for (int64_t g = 0; g < gn; g++)
                for (int k = 0; k < 4; k++)
                    _mm256_storeu_ps(out + (size_t)(g0 + g) * ldo + d + k * W, acc[g][k]);
        }
        for (; d + W <= D; d += W)
            for (int64_t g = 0; g < gn; g++) {
                float *o = out + (size_t)(g0 + g) * ldo + d;
                __m256 a = _mm256_loadu_ps(o);
                for (int64_t p = 0; p < np; p++)
                    a = _mm256_fmadd_ps(_mm256_set1_ps(s[(size_t)(g0 + g) * lds + (size_t)p]),
                                        load_h(vh + (size_t)p * v_stride + d), a);
                _mm256_storeu_ps(o, a);
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
            __m256 a = _mm256_loadu_ps(o + d);
            for (int64_t p = 0; p < np; p++)
                a = _mm256_fmadd_ps(_mm256_set1_ps(sg[p]),
                                    _mm256_loadu_ps(vf + (size_t)p * v_stride + d), a);
            _mm256_storeu_ps(o + d, a);
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

const ctn_attn *ctn__attn_avx2(void);
const ctn_attn *ctn__attn_avx2(void) {
    return &attn;
}
