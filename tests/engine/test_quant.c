/*
 * kernels/quant.c on its own: round-trip error bounds per type, known values, special
 * values and the half/bfloat16 conversions on their edge cases. Bit-exactness with ggml is
 * tests/compat/quantdiff.c's job; these tests hold without llama.cpp installed.
 *
 * Decisions this file pins down:
 *  - A NaN or infinity in a block spoils only that block (blocks are independent); what
 *    the spoiled block holds is whatever ggml's reference produces (checked by quantdiff).
 *  - Magnitudes so small that a block's half-precision scale underflows dequantize to 0;
 *    so large that it overflows (above about 127 * 65504 for Q8_0) give infinite scales.
 */
#include <math.h>
#include <stdlib.h>

#include "quant.h"
#include "test.h"

static const int TYPES[] = {CTN_TYPE_F32,  CTN_TYPE_F16,  CTN_TYPE_BF16, CTN_TYPE_Q8_0,
                            CTN_TYPE_Q4_0, CTN_TYPE_Q4_1, CTN_TYPE_Q5_0, CTN_TYPE_Q5_1,
                            CTN_TYPE_Q4_K, CTN_TYPE_Q5_K, CTN_TYPE_Q6_K};
#define N_TYPES ((int)(sizeof TYPES / sizeof TYPES[0]))
enum { MAXN = 4096 };

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float uniform(void) {
    return (float)(rng() >> 40) / 16777216.0f;
}
static float gauss(void) {
    return sqrtf(-2.0f * logf(uniform() + 1e-12f)) * cosf(6.2831853f * uniform());
}

static size_t row_bytes(int type, int64_t n) {
    return (size_t)(n / ctn_type_block_size(type) * ctn_type_block_bytes(type));
}

/* Quantizes and dequantizes x; returns sqrt(sum (y - x)^2 / sum x^2), or -1 on error. */
static double roundtrip(int type, const float *x, float *y, int64_t n) {
    static uint8_t q[MAXN * 4];
    if (ctn_quantize_row(type, x, q, n) != 0) return -1;
    if (ctn_dequantize_row(type, q, y, n) != 0) return -1;
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        den += (double)x[i] * x[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/*
 * Normalised RMS error bounds on Gaussian rows. Measured worst values over 4096-element
 * rows are scale-independent (1e-3 to 1e5): F16 2.1e-4, BF16 1.7e-3, Q8_0 5.5e-3,
 * Q6_K 2.1e-2, Q5_K 3.7e-2, Q5_1 3.8e-2, Q5_0 4.4e-2, Q4_K 7.3e-2, Q4_1 8.0e-2, Q4_0 8.9e-2;
 * the bounds leave about 1.4x headroom.
 */
static double tolerance(int type) {
    switch (type) {
    case CTN_TYPE_F32: return 0.0;
    case CTN_TYPE_F16: return 3e-4;
    case CTN_TYPE_BF16: return 2.5e-3;
    case CTN_TYPE_Q8_0: return 0.008;
    case CTN_TYPE_Q6_K: return 0.03;
    case CTN_TYPE_Q5_K: return 0.055;
    case CTN_TYPE_Q5_1: return 0.054;
    case CTN_TYPE_Q5_0: return 0.062;
    case CTN_TYPE_Q4_1: return 0.11;
    case CTN_TYPE_Q4_K: return 0.10;
    default: return 0.13; /* Q4_0 */
    }
}

TEST(roundtrip_error_bounds) {
    static float x[MAXN], y[MAXN];
    static const float SCALES[] = {1.0f, 0.02f, 1e-3f, 1e3f};
    for (int t = 0; t < N_TYPES; t++) {
        double worst = 0;
        for (size_t s = 0; s < sizeof SCALES / sizeof SCALES[0]; s++) {
            for (int rep = 0; rep < 3; rep++) {
                for (int i = 0; i < MAXN; i++)
                    x[i] = gauss() * SCALES[s];
                double e = roundtrip(TYPES[t], x, y, MAXN);
                CHECK(e >= 0);
                if (e > worst) worst = e;
            }
        }
        printf("  %-5s worst normalised RMS error %.2e (bound %.1e)\n", ctn_type_name(TYPES[t]),
               worst, tolerance(TYPES[t]));
        CHECK(worst <= tolerance(TYPES[t]));
    }
}

/* Fewer bits must not give less error: the bounds above would allow a mix-up. */
TEST(error_orders_by_bits) {
    static float x[MAXN], y[MAXN];
    for (int i = 0; i < MAXN; i++)
        x[i] = gauss();
    double q8 = roundtrip(CTN_TYPE_Q8_0, x, y, MAXN), q6 = roundtrip(CTN_TYPE_Q6_K, x, y, MAXN);
    double q5 = roundtrip(CTN_TYPE_Q5_K, x, y, MAXN), q4 = roundtrip(CTN_TYPE_Q4_K, x, y, MAXN);
    double q40 = roundtrip(CTN_TYPE_Q4_0, x, y, MAXN), f16 = roundtrip(CTN_TYPE_F16, x, y, MAXN);
    CHECK(f16 < q8 && q8 < q6 && q6 < q5 && q5 < q4 && q4 < q40);
    double q51 = roundtrip(CTN_TYPE_Q5_1, x, y, MAXN), q50 = roundtrip(CTN_TYPE_Q5_0, x, y, MAXN);
    double q41 = roundtrip(CTN_TYPE_Q4_1, x, y, MAXN);
    CHECK(q6 < q51 && q51 < q50 && q50 < q41 && q41 < q40);
    CHECK(roundtrip(CTN_TYPE_F32, x, y, MAXN) == 0.0);
}

TEST(all_zeros_stay_zero) {
    static float x[512], y[512];
    static uint8_t q[2048];
    memset(x, 0, sizeof x);
    for (int t = 0; t < N_TYPES; t++) {
        for (int i = 0; i < 512; i++)
            y[i] = 1.0f;
        CHECK_EQ_INT(ctn_quantize_row(TYPES[t], x, q, 512), 0);
        CHECK_EQ_INT(ctn_dequantize_row(TYPES[t], q, y, 512), 0);
        int nonzero = 0;
        for (int i = 0; i < 512; i++)
            nonzero += y[i] != 0.0f;
        CHECK_EQ_INT(nonzero, 0);
        /*
         * The bytes are pinned too, as ggml writes them: all zero, except Q4_0 whose scale
         * is 0 / -8 = -0 (0x8000) and whose codes are 8 (0x88 per byte), and Q5_0 whose
         * scale is 0 / -16 = -0 and whose codes are 16 (low nibbles 0, every fifth bit set).
         */
        size_t nb = row_bytes(TYPES[t], 512), nz = 0;
        for (size_t i = 0; i < nb; i++)
            nz += q[i] != 0;
        if (TYPES[t] == CTN_TYPE_Q4_0) {
            CHECK_EQ_INT(nz, nb / 18 * 17);
            CHECK(q[0] == 0x00 && q[1] == 0x80 && q[2] == 0x88 && q[17] == 0x88);
        } else if (TYPES[t] == CTN_TYPE_Q5_0) {
            CHECK_EQ_INT(nz, nb / 22 * 5);
            CHECK(q[0] == 0x00 && q[1] == 0x80 && q[2] == 0xFF && q[5] == 0xFF && q[6] == 0x00);
        } else {
            CHECK_EQ_INT(nz, 0);
        }
    }
}

TEST(constant_row) {
    static float x[256], y[256];
    for (int t = 0; t < N_TYPES; t++) {
        for (int s = -1; s <= 1; s += 2) {
            for (int i = 0; i < 256; i++)
                x[i] = 0.7f * (float)s;
            CHECK(roundtrip(TYPES[t], x, y, 256) >= 0);
            for (int i = 0; i < 256; i++) {
                if (fabsf(y[i] - x[i]) > 0.7f * 2e-3f) {
                    printf("  %s constant %g -> %g at %d\n", ctn_type_name(TYPES[t]), (double)x[i],
                           (double)y[i], i);
                    CHECK(0);
                    break;
                }
            }
        }
    }
}

/* One large value among zeros: the spike is kept, and symmetric types keep zeros exact. */
TEST(single_spike) {
    static float x[256], y[256];
    for (int t = 0; t < N_TYPES; t++) {
        memset(x, 0, sizeof x);
        x[100] = -5.25f;
        CHECK(roundtrip(TYPES[t], x, y, 256) >= 0);
        CHECK(fabsf(y[100] - x[100]) <= 5.25f * 2e-3f);
        if (TYPES[t] != CTN_TYPE_Q4_K && TYPES[t] != CTN_TYPE_Q5_K && TYPES[t] != CTN_TYPE_Q4_1 &&
            TYPES[t] != CTN_TYPE_Q5_1) {
            int nonzero = 0;
            for (int i = 0; i < 256; i++)
                nonzero += i != 100 && y[i] != 0.0f;
            CHECK_EQ_INT(nonzero, 0);
        }
    }
}

TEST(magnitude_extremes) {
    static float x[256], y[256];
    /* Large but representable scales: the relative error bounds still hold. */
    for (int i = 0; i < 256; i++)
        x[i] = gauss() * 1e5f;
    for (int t = 0; t < N_TYPES; t++) {
        if (TYPES[t] == CTN_TYPE_F16) continue; /* 1e5 is beyond the half range */
        /* Q4_1 and Q5_1 store the block minimum as a half: it overflows here, as in ggml. */
        if (TYPES[t] == CTN_TYPE_Q4_1 || TYPES[t] == CTN_TYPE_Q5_1) continue;
        CHECK(roundtrip(TYPES[t], x, y, 256) <= tolerance(TYPES[t]));
    }
    for (int i = 0; i < 256; i++)
        x[i] *= 0.1f; /* 1e4: the minima fit */
    CHECK(roundtrip(CTN_TYPE_Q4_1, x, y, 256) <= tolerance(CTN_TYPE_Q4_1));
    CHECK(roundtrip(CTN_TYPE_Q5_1, x, y, 256) <= tolerance(CTN_TYPE_Q5_1));
    /* Q8_0's scale amax/127 overflows the half range: infinite scale, inf/NaN output. */
    for (int i = 0; i < 32; i++)
        x[i] = 1e7f;
    CHECK(roundtrip(CTN_TYPE_Q8_0, x, y, 32) >= 0);
    CHECK(isinf(y[0]));
    /* Below the half range the scale underflows to zero and the block reads back as 0. */
    for (int i = 0; i < 256; i++)
        x[i] = 1e-12f * (1 + (float)(i % 3));
    for (int t = 3; t < N_TYPES; t++) {
        CHECK(roundtrip(TYPES[t], x, y, 256) >= 0);
        CHECK(y[0] == 0.0f && y[255] == 0.0f);
    }
}

/* A NaN spoils its own block and no other. */
TEST(nan_stays_in_its_block) {
    static float x[512];
    static uint8_t a[2048], b[2048];
    for (int t = 3; t < N_TYPES; t++) { /* the block types */
        const int64_t bs = ctn_type_block_size(TYPES[t]);
        const size_t bb = (size_t)ctn_type_block_bytes(TYPES[t]);
        for (int i = 0; i < 512; i++)
            x[i] = gauss();
        CHECK_EQ_INT(ctn_quantize_row(TYPES[t], x, a, 512), 0);
        x[3] = NAN;
        CHECK_EQ_INT(ctn_quantize_row(TYPES[t], x, b, 512), 0);
        CHECK(memcmp(a + bb, b + bb, row_bytes(TYPES[t], 512 - bs)) == 0);
    }
    /* In F16 and BF16 a NaN stays a NaN. */
    uint16_t h;
    float f;
    CHECK_EQ_INT(ctn_quantize_row(CTN_TYPE_F16, (float[]){NAN}, &h, 1), 0);
    CHECK_EQ_INT(ctn_dequantize_row(CTN_TYPE_F16, &h, &f, 1), 0);
    CHECK(isnan(f));
    CHECK_EQ_INT(ctn_quantize_row(CTN_TYPE_BF16, (float[]){NAN}, &h, 1), 0);
    CHECK_EQ_INT(ctn_dequantize_row(CTN_TYPE_BF16, &h, &f, 1), 0);
    CHECK(isnan(f));
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

TEST(fp16_edges) {
    CHECK_EQ_INT(ctn_fp32_to_fp16(0.0f), 0x0000);
    CHECK_EQ_INT(ctn_fp32_to_fp16(-0.0f), 0x8000);
    CHECK_EQ_INT(ctn_fp32_to_fp16(1.0f), 0x3C00);
    CHECK_EQ_INT(ctn_fp32_to_fp16(-2.0f), 0xC000);
    CHECK_EQ_INT(ctn_fp32_to_fp16(65504.0f), 0x7BFF);   /* largest half */
    CHECK_EQ_INT(ctn_fp32_to_fp16(65519.996f), 0x7BFF); /* just below the tie */
    CHECK_EQ_INT(ctn_fp32_to_fp16(65520.0f), 0x7C00);   /* tie rounds to even: inf */
    CHECK_EQ_INT(ctn_fp32_to_fp16(1e9f), 0x7C00);
    CHECK_EQ_INT(ctn_fp32_to_fp16(INFINITY), 0x7C00);
    CHECK_EQ_INT(ctn_fp32_to_fp16(-INFINITY), 0xFC00);
    CHECK_EQ_INT(ctn_fp32_to_fp16(NAN), 0x7E00);
    CHECK_EQ_INT(ctn_fp32_to_fp16(-NAN), 0xFE00);
    CHECK_EQ_INT(ctn_fp32_to_fp16(from_bits(0x7F800001u)), 0x7E00); /* signalling NaN */
    CHECK_EQ_INT(ctn_fp32_to_fp16(0x1.0p-14f), 0x0400);             /* smallest normal */
    CHECK_EQ_INT(ctn_fp32_to_fp16(0x1.0p-24f), 0x0001);             /* smallest subnormal */
    CHECK_EQ_INT(ctn_fp32_to_fp16(0x1.0p-25f), 0x0000);             /* tie: to even, 0 */
    CHECK_EQ_INT(ctn_fp32_to_fp16(0x1.000002p-25f), 0x0001);        /* just above the tie */
    CHECK_EQ_INT(ctn_fp32_to_fp16(0x3.0p-25f), 0x0002);             /* tie between 1 and 2 */
    CHECK_EQ_INT(ctn_fp32_to_fp16(0x1.0p-26f), 0x0000);
    CHECK_EQ_INT(ctn_fp32_to_fp16(1.0f + 0x1.0p-11f), 0x3C00); /* tie: even 1.0 */
    CHECK_EQ_INT(ctn_fp32_to_fp16(1.0f + 0x3.0p-11f), 0x3C02); /* tie: even ...02 */
    CHECK_EQ_INT(ctn_fp32_to_fp16(1.0f + 0x1.8p-11f), 0x3C01); /* above the tie */
    CHECK_EQ_INT(ctn_fp32_to_fp16(from_bits(1)), 0x0000);      /* float subnormal */

    CHECK(ctn_fp16_to_fp32(0x0001) == 0x1.0p-24f);
    CHECK(ctn_fp16_to_fp32(0x03FF) == 0x1.ff8p-15f);
    CHECK(ctn_fp16_to_fp32(0x0400) == 0x1.0p-14f);
    CHECK(ctn_fp16_to_fp32(0x7BFF) == 65504.0f);
    CHECK_EQ_INT(to_bits(ctn_fp16_to_fp32(0x8000)), 0x80000000u);
    CHECK(isinf(ctn_fp16_to_fp32(0x7C00)) && ctn_fp16_to_fp32(0xFC00) < 0);
    CHECK(isnan(ctn_fp16_to_fp32(0x7E00)) && isnan(ctn_fp16_to_fp32(0x7C01)));
    /* Every finite half survives the round trip. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7C00) == 0x7C00) continue;
        bad += ctn_fp32_to_fp16(ctn_fp16_to_fp32((uint16_t)h)) != h;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(bf16_edges) {
    CHECK_EQ_INT(ctn_fp32_to_bf16(1.0f), 0x3F80);
    CHECK_EQ_INT(ctn_fp32_to_bf16(-0.0f), 0x8000);
    CHECK_EQ_INT(ctn_fp32_to_bf16(1.0f + 0x1.0p-8f), 0x3F80); /* tie: even */
    CHECK_EQ_INT(ctn_fp32_to_bf16(1.0f + 0x3.0p-8f), 0x3F82); /* tie: even, upwards */
    CHECK_EQ_INT(ctn_fp32_to_bf16(1.0f + 0x1.8p-8f), 0x3F81);
    CHECK_EQ_INT(ctn_fp32_to_bf16(from_bits(0x00008000u)), 0x0000); /* subnormal tie */
    CHECK_EQ_INT(ctn_fp32_to_bf16(from_bits(0x00018000u)), 0x0002);
    CHECK_EQ_INT(ctn_fp32_to_bf16(from_bits(0x00010000u)), 0x0001); /* subnormals kept */
    CHECK_EQ_INT(ctn_fp32_to_bf16(from_bits(0x7F7FFFFFu)), 0x7F80); /* FLT_MAX rounds to inf */
    CHECK_EQ_INT(ctn_fp32_to_bf16(INFINITY), 0x7F80);
    CHECK_EQ_INT(ctn_fp32_to_bf16(-INFINITY), 0xFF80);
    CHECK_EQ_INT(ctn_fp32_to_bf16(from_bits(0x7F800001u)), 0x7FC0); /* NaN made quiet */
    CHECK_EQ_INT(ctn_fp32_to_bf16(from_bits(0xFFA12345u)), 0xFFE1); /* payload kept */
    CHECK_EQ_INT(ctn_fp32_to_bf16(from_bits(0x7FFFFFFFu)), 0x7FFF); /* no carry into sign */
    CHECK_EQ_INT(to_bits(ctn_bf16_to_fp32(0x3F81)), 0x3F810000u);
    CHECK_EQ_INT(to_bits(ctn_bf16_to_fp32(0x0001)), 0x00010000u);
}

TEST(argument_errors) {
    float x[64] = {0}, y[64];
    uint8_t q[256];
    CHECK_EQ_INT(ctn_quantize_row(CTN_TYPE_Q8_0, x, q, 33), CTN_EINVAL);
    CHECK_EQ_INT(ctn_quantize_row(CTN_TYPE_Q4_K, x, q, 64), CTN_EINVAL);
    CHECK_EQ_INT(ctn_dequantize_row(CTN_TYPE_Q6_K, q, y, 32), CTN_EINVAL);
    CHECK_EQ_INT(ctn_quantize_row(CTN_TYPE_F16, x, q, -1), CTN_EINVAL);
    CHECK_EQ_INT(ctn_quantize_row(CTN_TYPE_Q8_0, NULL, q, 32), CTN_EINVAL);
    CHECK_EQ_INT(ctn_dequantize_row(CTN_TYPE_Q8_0, q, NULL, 32), CTN_EINVAL);
    CHECK_EQ_INT(ctn_quantize_row(CTN_TYPE_Q8_1, x, q, 32), CTN_ENOTSUP);
    CHECK_EQ_INT(ctn_dequantize_row(CTN_TYPE_Q2_K, q, y, 256), CTN_ENOTSUP);
    CHECK_EQ_INT(ctn_quantize_row(-1, x, q, 32), CTN_ENOTSUP);
    CHECK_EQ_INT(ctn_quantize_row(999, x, q, 32), CTN_ENOTSUP);
    CHECK_EQ_INT(ctn_quantize_row(CTN_TYPE_Q4_K, NULL, NULL, 0), 0);
    CHECK(ctn_quant_supported(CTN_TYPE_Q5_K) && !ctn_quant_supported(CTN_TYPE_IQ4_XS));
}

int main(void) {
    RUN(roundtrip_error_bounds);
    RUN(error_orders_by_bits);
    RUN(all_zeros_stay_zero);
    RUN(constant_row);
    RUN(single_spike);
    RUN(magnitude_extremes);
    RUN(nan_stays_in_its_block);
    RUN(fp16_edges);
    RUN(bf16_edges);
    RUN(argument_errors);
    return test_summary();
}
