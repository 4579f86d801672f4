/*
 * Scalar reference quantizers and dequantizers (see quant.h).
 *
 * Bit-exactness with ggml is the point of this file, so every expression that rounds is
 * evaluated in the same order and precision as in ggml's reference code: float (not
 * double) arithmetic, no fused multiply-add (FP_CONTRACT is off below), the same
 * accumulation order in every loop. Changing `a*b*c` into `a*(b*c)` here breaks
 * tests/compat/quantdiff.c. The algorithms are the published ones (FP16 conversion after
 * Maratyszcza's FP16 library, the K-quant scale searches after ggml-quants.c); the code is
 * written for this engine.
 */
#include "quant.h"

#include <math.h>
#include <string.h>

#include "base.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Groups whose largest magnitude is below this are treated as all zero (as ggml). */
#define GROUP_MAX_EPS 1e-15f

static inline float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ==== half and bfloat16 =================================================================== */

/*
 * Half to float without branches on the exponent: a normal half is rebiased by shifting
 * it into a float's exponent field and multiplying by 2^-112; a subnormal is built as
 * 0.5 + m * 2^-24 with the exponent of 0.5 and then has 0.5 subtracted, which is exact.
 */
float ctn_fp16_to_fp32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w; /* drops the sign */
    const float normal = bits_to_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float subnormal = bits_to_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t mag = two_w < (1u << 27) ? f32_to_bits(subnormal) : f32_to_bits(normal);
    return bits_to_f32(sign | mag);
}

/*
 * Float to half, rounding to nearest even with the FPU's own rounding: |f| is scaled so
 * that an overflow becomes infinity and then back, and adding a power of two chosen from
 * f's exponent leaves exactly the half's mantissa bits in the low bits of the sum.
 */
uint16_t ctn_fp32_to_fp16(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = f32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u; /* smallest exponent: subnormal halves */
    base = bits_to_f32((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = f32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

float ctn_bf16_to_fp32(uint16_t h) {
    return bits_to_f32((uint32_t)h << 16);
}

uint16_t ctn_fp32_to_bf16(float f) {
    const uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

/* ==== helpers shared by the quantizers ==================================================== */

#define MAXF(a, b) ((a) > (b) ? (a) : (b)) /* with ggml's NaN behaviour: MAXF(NaN, b) == b */
#define MINI(a, b) ((a) < (b) ? (a) : (b))
#define MAXI(a, b) ((a) > (b) ? (a) : (b))

/*
 * The value x86-64 gives for a C conversion of float to a 32-bit int: truncation, and
 * INT_MIN for NaN or out-of-range values (where C leaves the result undefined). ggml's
 * conversions to int8_t and uint8_t compile to this followed by keeping the low byte.
 */
static inline int32_t trunc_i32(float v) {
    if (!(v > -2147483904.0f && v < 2147483648.0f)) return INT32_MIN;
    return (int32_t)v;
}

static inline int8_t low_i8(int32_t v) {
    return (int8_t)(uint8_t)((uint32_t)v & 0xFFu);
}

/*
 * Round to nearest (ties to even) by adding 1.5 * 2^23, which leaves the integer in the
 * low mantissa bits; valid for |v| <= 2^22 - 1. Outside that range (and for NaN) the
 * result is meaningless but defined, and equal to ggml's.
 */
static inline int nearest_int(float v) {
    const float t = v + 12582912.f;
    return (int)(f32_to_bits(t) & 0x007fffffu) - 0x00400000;
}

/* ==== Q8_0 ================================================================================ */

static void quantize_q8_0(const float *x, ctn_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += CTN_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < CTN_QK8_0; j++)
            amax = MAXF(amax, fabsf(x[j]));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ctn_fp32_to_fp16(d);
        for (int j = 0; j < CTN_QK8_0; j++)
            y[i].qs[j] = low_i8(trunc_i32(roundf(x[j] * id)));
    }
}

static void dequantize_q8_0(const ctn_block_q8_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = ctn_fp16_to_fp32(x[i].d);
        for (int j = 0; j < CTN_QK8_0; j++)
            *y++ = x[i].qs[j] * d;
    }
}

/* ==== Q4_0 ================================================================================ */

/*
 * The scale maps the signed value of largest magnitude to -8, so that value is exact and
 * the other end of the range, +7, is the one that saturates.
 */
static void quantize_q4_0(const float *x, ctn_block_q4_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += CTN_QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < CTN_QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ctn_fp32_to_fp16(d);
        for (int j = 0; j < CTN_QK4_0 / 2; j++) {
            const float x0 = x[j] * id;
            const float x1 = x[CTN_QK4_0 / 2 + j] * id;
            const uint8_t q0 = (uint8_t)MINI(15, low_i8(trunc_i32(x0 + 8.5f)));
            const uint8_t q1 = (uint8_t)MINI(15, low_i8(trunc_i32(x1 + 8.5f)));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void dequantize_q4_0(const ctn_block_q4_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += CTN_QK4_0) {
        const float d = ctn_fp16_to_fp32(x[i].d);
        for (int j = 0; j < CTN_QK4_0 / 2; j++) {
            y[j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + CTN_QK4_0 / 2] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

/* ==== Q4_1, Q5_0, Q5_1 ==================================================================== */

/* Stores the fifth bits of a Q5 block as a little-endian 32-bit word, whatever the host. */
static inline void put_qh(uint8_t qh[4], uint32_t v) {
    for (int b = 0; b < 4; b++)
        qh[b] = (uint8_t)(v >> (8 * b));
}

static inline uint32_t get_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

/* The block's minimum and maximum, starting from +-FLT_MAX as ggml does (NaNs are skipped). */
static inline void block_min_max(const float *x, int n, float *min, float *max) {
    float lo = 3.40282347e+38f, hi = -3.40282347e+38f;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *min = lo, *max = hi;
}

/* The grid spans [min, max] in 15 steps; codes are rounded half up and capped at 15. */
static void quantize_q4_1(const float *x, ctn_block_q4_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += CTN_QK4_1) {
        float min, max;
        block_min_max(x, CTN_QK4_1, &min, &max);
        const float d = (max - min) / 15;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ctn_fp32_to_fp16(d);
        y[i].m = ctn_fp32_to_fp16(min);
        for (int j = 0; j < CTN_QK4_1 / 2; j++) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[CTN_QK4_1 / 2 + j] - min) * id;
            const uint8_t q0 = (uint8_t)MINI(15, low_i8(trunc_i32(x0 + 0.5f)));
            const uint8_t q1 = (uint8_t)MINI(15, low_i8(trunc_i32(x1 + 0.5f)));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void dequantize_q4_1(const ctn_block_q4_1 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += CTN_QK4_1) {
        const float d = ctn_fp16_to_fp32(x[i].d);
        const float m = ctn_fp16_to_fp32(x[i].m);
        for (int j = 0; j < CTN_QK4_1 / 2; j++) {
            y[j] = (x[i].qs[j] & 0x0F) * d + m;
            y[j + CTN_QK4_1 / 2] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

/* As Q4_0 with 32 levels: the value of largest magnitude maps to -16, +15 saturates. */
static void quantize_q5_0(const float *x, ctn_block_q5_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += CTN_QK5_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < CTN_QK5_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -16;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ctn_fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < CTN_QK5_0 / 2; j++) {
            const float x0 = x[j] * id;
            const float x1 = x[CTN_QK5_0 / 2 + j] * id;
            const uint8_t q0 = (uint8_t)MINI(31, low_i8(trunc_i32(x0 + 16.5f)));
            const uint8_t q1 = (uint8_t)MINI(31, low_i8(trunc_i32(x1 + 16.5f)));
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + CTN_QK5_0 / 2);
        }
        put_qh(y[i].qh, qh);
    }
}

static void dequantize_q5_0(const ctn_block_q5_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += CTN_QK5_0) {
        const float d = ctn_fp16_to_fp32(x[i].d);
        const uint32_t qh = get_qh(x[i].qh);
        for (int j = 0; j < CTN_QK5_0 / 2; j++) {
            const int h0 = (int)((qh >> j) << 4) & 0x10;
            const int h1 = (int)(qh >> (j + 12)) & 0x10;
            const int32_t q0 = ((x[i].qs[j] & 0x0F) | h0) - 16;
            const int32_t q1 = ((x[i].qs[j] >> 4) | h1) - 16;
            y[j] = q0 * d;
            y[j + CTN_QK5_0 / 2] = q1 * d;
        }
    }
}

/* As Q4_1 with 31 steps; codes are not capped (a rounding overflow keeps its low 5 bits). */
static void quantize_q5_1(const float *x, ctn_block_q5_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += CTN_QK5_1) {
        float min, max;
        block_min_max(x, CTN_QK5_1, &min, &max);
        const float d = (max - min) / 31;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ctn_fp32_to_fp16(d);
        y[i].m = ctn_fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < CTN_QK5_1 / 2; j++) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[CTN_QK5_1 / 2 + j] - min) * id;
            const uint8_t q0 = (uint8_t)((uint32_t)trunc_i32(x0 + 0.5f) & 0xFFu);
            const uint8_t q1 = (uint8_t)((uint32_t)trunc_i32(x1 + 0.5f) & 0xFFu);
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + CTN_QK5_1 / 2);
        }
        put_qh(y[i].qh, qh);
    }
}

static void dequantize_q5_1(const ctn_block_q5_1 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += CTN_QK5_1) {
        const float d = ctn_fp16_to_fp32(x[i].d);
        const float m = ctn_fp16_to_fp32(x[i].m);
        const uint32_t qh = get_qh(x[i].qh);
        for (int j = 0; j < CTN_QK5_1 / 2; j++) {
            const int h0 = (int)((qh >> j) << 4) & 0x10;
            const int h1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = ((x[i].qs[j] & 0x0F) | h0) * d + m;
            y[j + CTN_QK5_1 / 2] = ((x[i].qs[j] >> 4) | h1) * d + m;
        }
    }
}

/* ==== K-quant scale searches ============================================================== */

/*
 * Asymmetric quantization of n values to 0..nmax: x ~ scale * L - min. Starts from the
 * plain min/max grid, then tries nstep + 1 slightly different grid widths, each followed
 * by a weighted least-squares fit of scale and min, and keeps the one with the smallest
 * weighted squared error. min is clamped so that zero stays representable. Returns the
 * scale; *the_min receives the (non-negative) offset, L the codes; Laux is scratch.
 */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)MAXI(0, MINI(nmax, l));
        const float diff = scale * L[i] + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = MAXI(0, MINI(nmax, l));
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                const float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/*
 * Symmetric quantization of n values to -nmax..nmax-1 (stored offset by nmax), weighted by
 * x^2: starts from the scale that maps the largest magnitude to -nmax, then tries 18 nearby
 * grid scales with a least-squares fit each and keeps the best. Returns the scale.
 */
static float make_qx_quants_rmse1(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = MAXI(-nmax, MINI(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = MAXI(-nmax, MINI(nmax - 1, l));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + MAXI(-nmax, MINI(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Unpacks the 6-bit scale and min of sub-block j from a Q4_K/Q5_K scales[] array. */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/*
 * The shared first half of Q4_K and Q5_K: fits a scale and min per sub-block of 32
 * (weights |x| + rms of the sub-block), quantizes the 8 scales and 8 mins to 6 bits against
 * the super-block's largest of each, then requantizes every weight to 0..nmax against the
 * rounded scales. Fills d, dmin, scales and L (256 codes).
 */
static void quantize_k_scales(const float *x, int nmax, float rmin, int nstep, uint16_t *dd,
                              uint16_t *dmin, uint8_t *scales, uint8_t *L) {
    float mins[CTN_QK_K / 32], sc[CTN_QK_K / 32], weights[32];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < CTN_QK_K / 32; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(xs[l]);
        sc[j] =
            make_qkx2_quants(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        if (sc[j] > max_scale) max_scale = sc[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales, 0, CTN_K_SCALE_SIZE);
    for (int j = 0; j < CTN_QK_K / 32; j++) {
        /* ggml stores the rounded value into a uint8_t before clamping: keep the low byte. */
        uint8_t ls = (uint8_t)nearest_int(inv_scale * sc[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = MINI(63, ls);
        lm = MINI(63, lm);
        if (j < 4) {
            scales[j] = ls;
            scales[j + 4] = lm;
        } else {
            scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *dd = ctn_fp32_to_fp16(max_scale / 63.f);
    *dmin = ctn_fp32_to_fp16(max_min / 63.f);
    for (int j = 0; j < CTN_QK_K / 32; j++) {
        uint8_t s, m;
        get_scale_min_k4(j, scales, &s, &m);
        const float d = ctn_fp16_to_fp32(*dd) * s;
        if (d == 0.0f) continue; /* keeps the codes from the fit */
        const float dm = ctn_fp16_to_fp32(*dmin) * m;
        for (int l = 0; l < 32; l++) {
            const int q = nearest_int((x[32 * j + l] + dm) / d);
            L[32 * j + l] = (uint8_t)MAXI(0, MINI(nmax, q));
        }
    }
}

/* ==== Q4_K ================================================================================ */

static void quantize_q4_K(const float *x, ctn_block_q4_K *y, int64_t nb) {
    uint8_t L[CTN_QK_K];
    for (int64_t i = 0; i < nb; i++, x += CTN_QK_K) {
        quantize_k_scales(x, 15, -1.f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < CTN_QK_K; j += 64, q += 32) {
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        }
    }
}

static void dequantize_q4_K(const ctn_block_q4_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = ctn_fp16_to_fp32(x[i].d);
        const float min = ctn_fp16_to_fp32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int j = 0, is = 0; j < CTN_QK_K; j += 64, q += 32, is += 2) {
            uint8_t sc, m;
            get_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

/* ==== Q5_K ================================================================================ */

static void quantize_q5_K(const float *x, ctn_block_q5_K *y, int64_t nb) {
    uint8_t L[CTN_QK_K];
    for (int64_t i = 0; i < nb; i++, x += CTN_QK_K) {
        quantize_k_scales(x, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, CTN_QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < CTN_QK_K; n += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[n + j], l2 = L[n + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

static void dequantize_q5_K(const ctn_block_q5_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = ctn_fp16_to_fp32(x[i].d);
        const float min = ctn_fp16_to_fp32(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        unsigned u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < CTN_QK_K; j += 64, ql += 32, is += 2, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, m;
            get_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* ==== Q6_K ================================================================================ */

static void quantize_q6_K(const float *x, ctn_block_q6_K *y, int64_t nb) {
    int8_t L[CTN_QK_K];
    float scales[CTN_QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += CTN_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < CTN_QK_K / 16; ib++) {
            const float scale = make_qx_quants_rmse1(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            y[i].d = ctn_fp32_to_fp16(0.f);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = ctn_fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < CTN_QK_K / 16; ib++) {
            y[i].scales[ib] = (int8_t)MINI(127, nearest_int(iscale * scales[ib]));
        }
        for (int j = 0; j < CTN_QK_K / 16; j++) {
            const float d = ctn_fp16_to_fp32(y[i].d) * y[i].scales[j];
            if (d == 0.0f) continue;
            for (int l = 0; l < 16; l++) {
                const int q = nearest_int(x[16 * j + l] / d);
                L[16 * j + l] = (int8_t)(MAXI(-32, MINI(31, q)) + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < CTN_QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t a = (uint8_t)L[j + l], b = (uint8_t)L[j + l + 32];
                const uint8_t c = (uint8_t)L[j + l + 64], e = (uint8_t)L[j + l + 96];
                ql[l] = (uint8_t)((a & 0xF) | ((c & 0xF) << 4));
                ql[l + 32] = (uint8_t)((b & 0xF) | ((e & 0xF) << 4));
                qh[l] = (uint8_t)((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
            }
        }
    }
}

static void dequantize_q6_K(const ctn_block_q6_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = ctn_fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < CTN_QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

/* ==== dispatch ============================================================================ */

bool ctn_quant_supported(int type) {
    switch (type) {
    case CTN_TYPE_F32:
    case CTN_TYPE_F16:
    case CTN_TYPE_BF16:
    case CTN_TYPE_Q8_0:
    case CTN_TYPE_Q4_0:
    case CTN_TYPE_Q4_1:
    case CTN_TYPE_Q5_0:
    case CTN_TYPE_Q5_1:
    case CTN_TYPE_Q4_K:
    case CTN_TYPE_Q5_K:
    case CTN_TYPE_Q6_K: return true;
    default: return false;
    }
}

/* Validates the arguments and returns the number of blocks, or a negative error. */
static int64_t check_row(int type, const void *a, const void *b, int64_t n) {
    if (!ctn_quant_supported(type)) return CTN_ENOTSUP;
    const int64_t bs = ctn_type_block_size(type);
    if (n < 0 || n % bs != 0) return CTN_EINVAL;
    if (n > 0 && (a == NULL || b == NULL)) return CTN_EINVAL;
    return n / bs;
}

int ctn_quantize_row(int type, const float *x, void *dst, int64_t n) {
    const int64_t nb = check_row(type, x, dst, n);
    if (nb < 0) return (int)nb;
    switch (type) {
    case CTN_TYPE_F32:
        if (nb > 0) memcpy(dst, x, (size_t)n * sizeof(float));
        break;
    case CTN_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = ctn_fp32_to_fp16(x[i]);
        break;
    case CTN_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = ctn_fp32_to_bf16(x[i]);
        break;
    case CTN_TYPE_Q8_0: quantize_q8_0(x, dst, nb); break;
    case CTN_TYPE_Q4_0: quantize_q4_0(x, dst, nb); break;
    case CTN_TYPE_Q4_1: quantize_q4_1(x, dst, nb); break;
    case CTN_TYPE_Q5_0: quantize_q5_0(x, dst, nb); break;
    case CTN_TYPE_Q5_1: quantize_q5_1(x, dst, nb); break;
    case CTN_TYPE_Q4_K: quantize_q4_K(x, dst, nb); break;
    case CTN_TYPE_Q5_K: quantize_q5_K(x, dst, nb); break;
    case CTN_TYPE_Q6_K: quantize_q6_K(x, dst, nb); break;
    }
    return 0;
}

int ctn_dequantize_row(int type, const void *src, float *y, int64_t n) {
    const int64_t nb = check_row(type, src, y, n);
    if (nb < 0) return (int)nb;
    switch (type) {
    case CTN_TYPE_F32:
        if (nb > 0) memcpy(y, src, (size_t)n * sizeof(float));
        break;
    case CTN_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            y[i] = ctn_fp16_to_fp32(((const uint16_t *)src)[i]);
        break;
    case CTN_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            y[i] = ctn_bf16_to_fp32(((const uint16_t *)src)[i]);
        break;
    case CTN_TYPE_Q8_0: dequantize_q8_0(src, y, nb); break;
    case CTN_TYPE_Q4_0: dequantize_q4_0(src, y, nb); break;
    case CTN_TYPE_Q4_1: dequantize_q4_1(src, y, nb); break;
    case CTN_TYPE_Q5_0: dequantize_q5_0(src, y, nb); break;
    case CTN_TYPE_Q5_1: dequantize_q5_1(src, y, nb); break;
    case CTN_TYPE_Q4_K: dequantize_q4_K(src, y, nb); break;
    case CTN_TYPE_Q5_K: dequantize_q5_K(src, y, nb); break;
    case CTN_TYPE_Q6_K: dequantize_q6_K(src, y, nb); break;
    }
    return 0;
}
