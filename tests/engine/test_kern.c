/*
 * The CPU kernels (kernels/cpu/kern.h) on every ISA the CPU has: gemm against a double-precision
 * reference computed from the dequantized weights and activations, each ISA against the
 * scalar one, bit-identical results for every tiling of the output (batch invariance), the
 * activation quantizers against llama.cpp's reference rules, the vector operations, and
 * the ISA selection.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kern.h"
#include "quant.h"
#include "test.h"

/* The non-VNNI AVX-512 kernels are only reached on CPUs without VNNI; test them directly. */
typedef void (*gemm_fn)(int64_t n, const void *w, size_t w_stride, int64_t nr, const void *a,
                        size_t a_stride, int64_t nc, float *y, size_t ldy);
#if defined(__x86_64__)
gemm_fn ctn__gemm_avx512(int wtype, int vnni);
#endif

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Uniform in [-1, 1), with some blocks scaled up or down so scales vary. */
static float rndf(void) {
    return (float)((double)rnd() / 2147483648.0 - 1.0);
}

static void fill(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 32) {
        const float s = (rnd() & 3) == 0 ? 0.01f : (rnd() & 3) == 1 ? 10.0f : 1.0f;
        for (int64_t j = i; j < i + 32 && j < n; j++)
            x[j] = rndf() * s;
    }
}

static const int wtypes[] = {CTN_TYPE_F32,  CTN_TYPE_F16,  CTN_TYPE_BF16, CTN_TYPE_Q8_0,
                             CTN_TYPE_Q4_0, CTN_TYPE_Q4_1, CTN_TYPE_Q5_0, CTN_TYPE_Q5_1,
                             CTN_TYPE_Q4_K, CTN_TYPE_Q5_K, CTN_TYPE_Q6_K};
#define N_WTYPES (int)(sizeof wtypes / sizeof wtypes[0])

static size_t row_bytes(int type, int64_t n) {
    return (size_t)(n / ctn_type_block_size(type) * ctn_type_block_bytes(type));
}

/* Dequantizes an activation row (Q8_1 and Q8_K are not weight types of quant.c). */
static void deq_act(int atype, const void *a, double *y, int64_t n) {
    if (atype == CTN_TYPE_Q8_1) {
        const ctn_block_q8_1 *b = a;
        for (int64_t i = 0; i < n; i++)
            y[i] = (double)ctn_fp16_to_fp32(b[i / 32].d) * b[i / 32].qs[i % 32];
    } else if (atype == CTN_TYPE_Q8_K) {
        const ctn_block_q8_K *b = a;
        for (int64_t i = 0; i < n; i++)
            y[i] = (double)b[i / 256].d * b[i / 256].qs[i % 256];
    } else {
        float *f = malloc((size_t)n * sizeof *f);
        ctn_dequantize_row(atype, a, f, n);
        for (int64_t i = 0; i < n; i++)
            y[i] = f[i];
        free(f);
    }
}

/* A problem: nr weight rows and nc activation rows of n values, packed. */
typedef struct {
    const ctn_kern *k;
    int64_t n, nr, nc;
    size_t ws, as;
    unsigned char *w, *a;
} problem;

static void problem_init(problem *p, int wtype, int64_t n, int64_t nr, int64_t nc) {
    p->k = ctn_kern_get(wtype);
    p->n = n, p->nr = nr, p->nc = nc;
    p->ws = row_bytes(wtype, n);
    p->as = ctn_kern_act_bytes(p->k->atype, n);
    p->w = malloc(p->ws * (size_t)nr);
    p->a = malloc(p->as * (size_t)nc);
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t r = 0; r < nr; r++) {
        fill(x, n);
        ctn_quantize_row(wtype, x, p->w + r * p->ws, n);
    }
    for (int64_t c = 0; c < nc; c++) {
        fill(x, n);
        p->k->from_float(x, p->a + c * p->as, n);
    }
    free(x);
}

static void problem_free(problem *p) {
    free(p->w);
    free(p->a);
}

static void run_gemm(const ctn_kern *k, const problem *p, float *y) {
    k->gemm(p->n, p->w, p->ws, p->nr, p->a, p->as, p->nc, y, (size_t)p->nr);
}

/*
 * gemm against sum w * a in double from the dequantized rows. The bound is relative to
 * sum |w| |a| (float accumulation), plus, for Q4_1 / Q5_1, the half rounding of the
 * activation block sums s that those kernels use for the offset term.
 */
static int check_reference(int wtype, int64_t n) {
    const ctn_kern *k = ctn_kern_get(wtype);
    problem p;
    problem_init(&p, wtype, n, 5, 3);
    float *y = malloc((size_t)(p.nr * p.nc) * sizeof *y);
    float *wf = malloc((size_t)n * sizeof *wf);
    double *ad = malloc((size_t)n * sizeof *ad);
    run_gemm(k, &p, y);
    int bad = 0;
    for (int64_t c = 0; c < p.nc; c++) {
        deq_act(k->atype, p.a + c * p.as, ad, n);
        for (int64_t r = 0; r < p.nr; r++) {
            ctn_dequantize_row(wtype, p.w + r * p.ws, wf, n);
            double ref = 0, mag = 0, extra = 0;
            for (int64_t i = 0; i < n; i++) {
                ref += (double)wf[i] * ad[i];
                mag += fabs((double)wf[i] * ad[i]);
            }
            if (k->atype == CTN_TYPE_Q8_1) {
                /* Q4_1 / Q5_1 blocks start with the halves d and m. */
                const ctn_block_q8_1 *b = (const void *)(p.a + c * p.as);
                const size_t bb = (size_t)ctn_type_block_bytes(wtype);
                for (int64_t i = 0; i < n / 32; i++) {
                    uint16_t mh;
                    memcpy(&mh, p.w + r * p.ws + (size_t)i * bb + 2, 2);
                    extra += fabs((double)ctn_fp16_to_fp32(mh)) *
                             fabs((double)ctn_fp16_to_fp32(b[i].s)) / 1024;
                }
            }
            const double err = fabs((double)y[c * p.nr + r] - ref);
            if (err > 3e-6 * mag + extra + 1e-30) {
                if (bad++ < 3)
                    printf("  type %d isa %s n %lld (%lld,%lld): %.9g vs %.9g (mag %.3g)\n", wtype,
                           ctn_isa_name(ctn_kern_isa()), (long long)n, (long long)r, (long long)c,
                           y[c * p.nr + r], ref, mag);
            }
        }
    }
    free(y);
    free(wf);
    free(ad);
    problem_free(&p);
    return bad;
}

/* Every ISA the enum names (isa_list fills at most this many). */
#define N_ISAS (CTN_ISA_AMX + 1)

static int isa_list(ctn_isa *out) {
    int m = 0;
    for (int i = CTN_ISA_SCALAR; i <= CTN_ISA_AMX; i++)
        if (ctn_isa_supported((ctn_isa)i)) out[m++] = (ctn_isa)i;
    return m;
}

/*
 * The sizes each type is tested at: one block, an odd number of blocks, a larger row, and
 * one past 2048 (the AVX-512 Q8_0 / Q4_0 drivers precompute activation data up to 2048).
 */
#define N_SIZES 4
static void sizes_for(int wtype, int64_t s[N_SIZES]) {
    const int64_t b = ctn_kern_get(wtype)->block;
    if (b == 1) {
        s[0] = 1, s[1] = 37, s[2] = 1000, s[3] = 2071;
    } else if (b == 32) {
        s[0] = 32, s[1] = 96, s[2] = 2048, s[3] = 2080;
    } else {
        s[0] = 256, s[1] = 768, s[2] = 2048, s[3] = 2304;
    }
}

TEST(gemm_matches_reference) {
    ctn_isa isas[N_ISAS];
    const int m = isa_list(isas);
    for (int i = 0; i < m; i++) {
        CHECK_EQ_INT(ctn_kern_set_isa(isas[i]), 0);
        for (int t = 0; t < N_WTYPES; t++) {
            int64_t s[N_SIZES];
            sizes_for(wtypes[t], s);
            for (int j = 0; j < N_SIZES; j++)
                CHECK_EQ_INT(check_reference(wtypes[t], s[j]), 0);
        }
    }
    ctn_kern_set_isa(isas[m - 1]);
}

/* Each ISA against the scalar kernel, by normalised error. */
TEST(isa_matches_scalar) {
    ctn_isa isas[N_ISAS];
    const int m = isa_list(isas);
    for (int t = 0; t < N_WTYPES; t++) {
        int64_t s[N_SIZES];
        sizes_for(wtypes[t], s);
        problem p;
        ctn_kern_set_isa(CTN_ISA_SCALAR);
        problem_init(&p, wtypes[t], s[3], 6, 5);
        float *y0 = malloc((size_t)(p.nr * p.nc) * sizeof *y0);
        float *y1 = malloc((size_t)(p.nr * p.nc) * sizeof *y1);
        run_gemm(ctn_kern_get(wtypes[t]), &p, y0);
        double num = 0, den = 0;
        for (int i = 1; i < m; i++) {
            ctn_kern_set_isa(isas[i]);
            run_gemm(ctn_kern_get(wtypes[t]), &p, y1);
            for (int64_t j = 0; j < p.nr * p.nc; j++) {
                num += ((double)y1[j] - y0[j]) * ((double)y1[j] - y0[j]);
                den += (double)y0[j] * y0[j];
            }
            if (!(num <= 1e-10 * den)) {
                printf("  type %d isa %s: normalised error %g\n", wtypes[t], ctn_isa_name(isas[i]),
                       sqrt(num / den));
                CHECK(0);
            }
        }
        free(y0);
        free(y1);
        problem_free(&p);
    }
    ctn_kern_set_isa(isas[m - 1]);
}

/*
 * Batch invariance: the full product computed at once, then again in sub-tiles of many
 * shapes and offsets (each sub-gemm sees only its rows and columns); every value must
 * have the same bits.
 */
static int check_tilings(gemm_fn g, const problem *p, const float *full) {
    static const int64_t shapes[] = {1, 2, 3, 4, 5, 7, 8, 17};
    const int ns = (int)(sizeof shapes / sizeof shapes[0]);
    float *y = malloc((size_t)(p->nr * p->nc) * sizeof *y);
    int bad = 0;
    for (int a = 0; a < ns; a++)
        for (int b = 0; b < ns; b++) {
            const int64_t tr = shapes[a], tc = shapes[b];
            memset(y, 0xFF, (size_t)(p->nr * p->nc) * sizeof *y);
            /* Start with a ragged first tile so tiles sit at different offsets. */
            for (int64_t c0 = 0; c0 < p->nc;) {
                const int64_t cn0 = c0 == 0 ? (tc + 1) / 2 : tc;
                const int64_t cn = c0 + cn0 > p->nc ? p->nc - c0 : cn0;
                for (int64_t r0 = 0; r0 < p->nr;) {
                    const int64_t rn0 = r0 == 0 ? (tr + 2) / 3 : tr;
                    const int64_t rn = r0 + rn0 > p->nr ? p->nr - r0 : rn0;
                    g(p->n, p->w + r0 * p->ws, p->ws, rn, p->a + c0 * p->as, p->as, cn,
                      y + c0 * p->nr + r0, (size_t)p->nr);
                    r0 += rn;
                }
                c0 += cn;
            }
            if (memcmp(y, full, (size_t)(p->nr * p->nc) * sizeof *y) != 0) bad++;
        }
    free(y);
    return bad;
}

TEST(gemm_is_batch_invariant) {
    ctn_isa isas[N_ISAS];
    const int m = isa_list(isas);
    for (int i = 0; i < m; i++) {
        ctn_kern_set_isa(isas[i]);
        for (int t = 0; t < N_WTYPES; t++) {
            const ctn_kern *k = ctn_kern_get(wtypes[t]);
            const int64_t n = k->block == 1 ? 45 : k->block == 32 ? 160 : 512;
            problem p;
            problem_init(&p, wtypes[t], n, 37, 19);
            /* Past the precomputed length too: the other path must give the same bits. */
            if (k->block == 32) {
                problem q;
                problem_init(&q, wtypes[t], 2080, 9, 6);
                float *fq = malloc(9 * 6 * sizeof *fq);
                run_gemm(k, &q, fq);
                CHECK_EQ_INT(check_tilings(k->gemm, &q, fq), 0);
                free(fq);
                problem_free(&q);
                /* Rows longer than the matrix-vector chunk of the AMX kernels (1024 blocks). */
                problem_init(&q, wtypes[t], 32 * 1030, 3, 2);
                fq = malloc(3 * 2 * sizeof *fq);
                run_gemm(k, &q, fq);
                CHECK_EQ_INT(check_tilings(k->gemm, &q, fq), 0);
                free(fq);
                problem_free(&q);
            }
            float *full = malloc((size_t)(p.nr * p.nc) * sizeof *full);
            run_gemm(k, &p, full);
            const int bad = check_tilings(k->gemm, &p, full);
            if (bad)
                printf("  type %d isa %s: %d tilings differ\n", wtypes[t], ctn_isa_name(isas[i]),
                       bad);
            CHECK_EQ_INT(bad, 0);
#if defined(__x86_64__)
            /* Without VNNI the AVX-512 integer sums are the same, so the bits are too. */
            if (isas[i] == CTN_ISA_AVX512 && ctn__gemm_avx512(wtypes[t], 0)) {
                CHECK_EQ_INT(check_tilings(ctn__gemm_avx512(wtypes[t], 0), &p, full), 0);
                CHECK_EQ_INT(check_tilings(ctn__gemm_avx512(wtypes[t], 1), &p, full), 0);
            }
#endif
            free(full);
            problem_free(&p);
        }
    }
    ctn_kern_set_isa(isas[m - 1]);
}

/*
 * A prefill-sized batch at a long row: more activation rows than one call's slice of
 * columns (64 in the AMX kernels), row and column counts that are not multiples of 16,
 * against each column alone (decode, nc == 1) and against odd blocks of rows and columns.
 */
TEST(gemm_wide_batch_is_invariant) {
    ctn_isa isas[N_ISAS];
    const int m = isa_list(isas);
    for (int i = 0; i < m; i++) {
        ctn_kern_set_isa(isas[i]);
        for (int t = 0; t < N_WTYPES; t++) {
            const ctn_kern *k = ctn_kern_get(wtypes[t]);
            int64_t s[N_SIZES];
            sizes_for(wtypes[t], s);
            problem p;
            problem_init(&p, wtypes[t], s[3], 37, 70);
            const size_t ny = (size_t)(p.nr * p.nc);
            float *full = malloc(ny * sizeof *full), *y = malloc(ny * sizeof *y);
            run_gemm(k, &p, full);
            memset(y, 0xFF, ny * sizeof *y);
            for (int64_t c = 0; c < p.nc; c++)
                k->gemm(p.n, p.w, p.ws, p.nr, p.a + c * p.as, p.as, 1, y + c * p.nr, (size_t)p.nr);
            int bad = memcmp(y, full, ny * sizeof *y) != 0;
            memset(y, 0xFF, ny * sizeof *y);
            for (int64_t c0 = 0; c0 < p.nc; c0 += 67) {
                const int64_t cn = p.nc - c0 < 67 ? p.nc - c0 : 67;
                for (int64_t r0 = 0; r0 < p.nr; r0 += 21) {
                    const int64_t rn = p.nr - r0 < 21 ? p.nr - r0 : 21;
                    k->gemm(p.n, p.w + r0 * p.ws, p.ws, rn, p.a + c0 * p.as, p.as, cn,
                            y + c0 * p.nr + r0, (size_t)p.nr);
                }
            }
            bad += memcmp(y, full, ny * sizeof *y) != 0;
            if (bad)
                printf("  type %d isa %s: wide batch differs\n", wtypes[t], ctn_isa_name(isas[i]));
            CHECK_EQ_INT(bad, 0);
            free(full);
            free(y);
            problem_free(&p);
        }
    }
    ctn_kern_set_isa(isas[m - 1]);
}

/* Strides larger than a row and ldy larger than nr are honoured (same bits, nothing else
 * written). */
TEST(gemm_honours_strides) {
    ctn_isa isas[N_ISAS];
    const int m = isa_list(isas);
    for (int i = 0; i < m; i++) {
        ctn_kern_set_isa(isas[i]);
        for (int t = 0; t < N_WTYPES; t++) {
            const ctn_kern *k = ctn_kern_get(wtypes[t]);
            const int64_t n = k->block == 1 ? 19 : k->block == 32 ? 96 : 256;
            problem p;
            problem_init(&p, wtypes[t], n, 6, 5);
            float y0[30], y1[5 * 9];
            run_gemm(k, &p, y0);
            const size_t ws = p.ws + 36, as = p.as + 12, ldy = 9; /* keep 4-byte alignment */
            unsigned char *w = calloc(ws, 6), *a = calloc(as, 5);
            for (int r = 0; r < 6; r++)
                memcpy(w + r * ws, p.w + r * p.ws, p.ws);
            for (int c = 0; c < 5; c++)
                memcpy(a + c * as, p.a + c * p.as, p.as);
            for (int j = 0; j < 45; j++)
                y1[j] = -7.0f;
            k->gemm(n, w, ws, 6, a, as, 5, y1, ldy);
            int bad = 0;
            for (int c = 0; c < 5; c++)
                for (int r = 0; r < 9; r++)
                    bad += r < 6 ? memcmp(&y1[c * 9 + r], &y0[c * 6 + r], 4) != 0
                                 : y1[c * 9 + r] != -7.0f;
            CHECK_EQ_INT(bad, 0);
            free(w);
            free(a);
            problem_free(&p);
        }
    }
    ctn_kern_set_isa(isas[m - 1]);
}

/* ---- activation quantizers ---------------------------------------------------------- */

/* llama.cpp's quantize_row_q8_1_ref, written out from its rules. */
static void ref_q8_1(const float *x, ctn_block_q8_1 *y, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fabsf(x[32 * i + j]) > amax ? fabsf(x[32 * i + j]) : amax;
        const float d = amax / 127, id = d != 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            y[i].qs[j] = (int8_t)lroundf(x[32 * i + j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = ctn_fp32_to_fp16(d);
        y[i].s = ctn_fp32_to_fp16((float)sum * d);
    }
}

/* quantize_row_q8_K_ref: round half to even (nearest_int), clamp at 127. */
static void ref_q8_K(const float *x, ctn_block_q8_K *y, int64_t n) {
    memset(y, 0, (size_t)(n / 256) * sizeof *y);
    for (int64_t i = 0; i < n / 256; i++) {
        const float *xb = x + 256 * i;
        float amax = 0, max = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]), max = xb[j];
        if (amax == 0) continue;
        const float iscale = -127.f / max;
        for (int j = 0; j < 256; j++) {
            const float v = iscale * xb[j];
            int q = (int)rintf(v); /* the default rounding mode: ties to even */
            y[i].qs[j] = (int8_t)(q > 127 ? 127 : q);
        }
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)s;
        }
        y[i].d = 1 / iscale;
    }
}

/* Rows with the cases that matter: an all-zero block, exact ties, a negative extreme. */
static void fill_edges(float *x, int64_t n) {
    fill(x, n);
    for (int j = 0; j < 32; j++)
        x[j] = 0;
    for (int j = 32; j < 64; j++)
        x[j] = (float)(j - 48) * 0.5f; /* scale 16/127: many values land near .5 */
    x[64] = -3.0f;
    for (int j = 65; j < 96; j++)
        x[j] = (float)(j - 80) * (3.0f / 127.0f) * 0.5f;
    /* Scale exactly 1 (max 127): every x.5 is a tie, half away from zero for Q8_0 / Q8_1
     * and half to even for Q8_K. */
    x[96] = 127.0f;
    for (int j = 97; j < 128; j++)
        x[j] = (float)(j - 112) + 0.5f;
    if (n >= 512) {
        x[256] = -127.0f; /* Q8_K: iscale = 1 */
        for (int j = 257; j < 512; j++)
            x[j] = (float)((j % 200) - 100) + 0.5f;
    }
}

TEST(from_float_q8_0_q8_1_q8_K) {
    static const int64_t ns[] = {256, 512, 4096};
    for (int s = 0; s < 3; s++) {
        const int64_t n = ns[s];
        float *x = malloc((size_t)n * sizeof *x);
        fill_edges(x, n);
        ctn_isa isas[N_ISAS];
        const int m = isa_list(isas);
        for (int i = 0; i < m; i++) {
            ctn_kern_set_isa(isas[i]);
            /* Q8_0: quant.c's quantizer is checked bit for bit against ggml elsewhere. */
            const size_t b0 = ctn_kern_act_bytes(CTN_TYPE_Q8_0, n);
            unsigned char *a = calloc(1, b0), *r = calloc(1, b0);
            ctn_kern_get(CTN_TYPE_Q8_0)->from_float(x, a, n);
            ctn_quantize_row(CTN_TYPE_Q8_0, x, r, n);
            CHECK(memcmp(a, r, b0) == 0);
            free(a), free(r);

            const size_t b1 = ctn_kern_act_bytes(CTN_TYPE_Q8_1, n);
            CHECK_EQ_INT(b1, (size_t)n / 32 * 36);
            a = calloc(1, b1), r = calloc(1, b1);
            ctn_kern_get(CTN_TYPE_Q4_1)->from_float(x, a, n);
            ref_q8_1(x, (ctn_block_q8_1 *)r, n);
            CHECK(memcmp(a, r, b1) == 0);
            free(a), free(r);

            const size_t bk = ctn_kern_act_bytes(CTN_TYPE_Q8_K, n);
            CHECK_EQ_INT(bk, (size_t)n / 256 * 292);
            a = calloc(1, bk), r = calloc(1, bk);
            ctn_kern_get(CTN_TYPE_Q6_K)->from_float(x, a, n);
            ref_q8_K(x, (ctn_block_q8_K *)r, n);
            CHECK(memcmp(a, r, bk) == 0);
            free(a), free(r);
        }
        free(x);
    }
    /* The zero block and the extreme value: codes as the rules say. */
    float x[256];
    for (int j = 0; j < 256; j++)
        x[j] = j < 32 ? 0.0f : (float)(j % 7) - 3.0f;
    x[40] = -6.0f;
    ctn_block_q8_0 q0[8];
    ctn_kern_get(CTN_TYPE_Q8_0)->from_float(x, q0, 256);
    CHECK_EQ_INT(q0[0].d, 0);
    CHECK_EQ_INT(q0[1].qs[8], -127);
    CHECK_EQ_INT(q0[1].qs[9], 64); /* 3 * 127 / 6 = 63.5: half away from zero */
    CHECK_EQ_INT(q0[1].qs[10], -64);
    CHECK_EQ_INT(q0[1].qs[11], -42); /* -2 * 127 / 6 = -42.33 */
    ctn_block_q8_K qk;
    ctn_kern_get(CTN_TYPE_Q4_K)->from_float(x, &qk, 256);
    CHECK(qk.d > 0); /* the extreme is negative: iscale = -127 / -6 > 0 */
    CHECK_EQ_INT(qk.qs[40], -127);
    CHECK_EQ_INT(qk.bsums[0], 0);
}

TEST(from_float_f16_bf16_f32) {
    float x[19];
    fill(x, 19);
    x[3] = 65520.0f; /* rounds to infinity in half */
    uint16_t h[19], b[19];
    float f[19];
    ctn_kern_get(CTN_TYPE_F16)->from_float(x, h, 19);
    ctn_kern_get(CTN_TYPE_BF16)->from_float(x, b, 19);
    ctn_kern_get(CTN_TYPE_F32)->from_float(x, f, 19);
    for (int i = 0; i < 19; i++) {
        CHECK_EQ_INT(h[i], ctn_fp32_to_fp16(x[i]));
        CHECK_EQ_INT(b[i], ctn_fp32_to_bf16(x[i]));
        CHECK(f[i] == x[i]);
    }
    CHECK_EQ_INT(h[3], 0x7C00);
}

/* ---- vector operations --------------------------------------------------------------- */

TEST(vec_ops) {
    static const int64_t ns[] = {1, 7, 8, 16, 33, 100, 1000};
    ctn_isa isas[N_ISAS];
    const int m = isa_list(isas);
    float x[1000], y[1000], y1[1000];
    uint16_t h[1000], h1[1000];
    for (int i = 0; i < m; i++) {
        ctn_kern_set_isa(isas[i]);
        const ctn_vec *v = ctn_vec_get();
        for (int s = 0; s < 7; s++) {
            const int64_t n = ns[s];
            fill(x, n);
            fill(y, n);
            for (int64_t j = 0; j < n; j++)
                h[j] = ctn_fp32_to_fp16(x[j]);
            double r32 = 0, r16 = 0, mag = 0;
            for (int64_t j = 0; j < n; j++) {
                r32 += (double)x[j] * y[j];
                r16 += (double)ctn_fp16_to_fp32(h[j]) * y[j];
                mag += fabs((double)x[j] * y[j]);
            }
            CHECK(fabs(v->dot_f32(n, x, y) - r32) <= 1e-6 * mag + 1e-30);
            CHECK(fabs(v->dot_f16(n, h, y) - r16) <= 1e-6 * mag + 1e-30);
            memcpy(y1, y, (size_t)n * sizeof *y);
            v->mad_f32(n, y1, x, 0.75f);
            int bad = 0;
            for (int64_t j = 0; j < n; j++)
                bad +=
                    fabs((double)y1[j] - (y[j] + 0.75 * x[j])) > 1e-6 * (fabs(y[j]) + fabs(x[j]));
            memcpy(y1, y, (size_t)n * sizeof *y);
            v->mad_f16(n, y1, h, -1.5f);
            for (int64_t j = 0; j < n; j++) {
                const double e = y[j] - 1.5 * ctn_fp16_to_fp32(h[j]);
                bad += fabs((double)y1[j] - e) > 1e-6 * (fabs(y[j]) + 2 * fabs(x[j]));
            }
            CHECK_EQ_INT(bad, 0);
            x[0] = 65520.0f;
            x[n - 1] = 1e-7f; /* subnormal half */
            v->to_f16(n, h1, x);
            for (int64_t j = 0; j < n; j++)
                bad += h1[j] != ctn_fp32_to_fp16(x[j]);
            CHECK_EQ_INT(bad, 0);
        }
    }
    ctn_kern_set_isa(isas[m - 1]);
}

/* softmax and silu_mul against double-precision references: every ISA within 4e-7
 * relative of each value (expf's own error is ~1 ulp), exp across the whole float range
 * (underflow to 0, large arguments), and NaN propagated. */
TEST(vec_softmax_silu) {
    static const int64_t ns[] = {1, 7, 16, 17, 100, 1000};
    ctn_isa isas[N_ISAS];
    const int m = isa_list(isas);
    float x[1000], u[1000], g[1000];
    for (int i = 0; i < m; i++) {
        ctn_kern_set_isa(isas[i]);
        const ctn_vec *v = ctn_vec_get();
        for (int s = 0; s < 6; s++) {
            const int64_t n = ns[s];
            fill(x, n);
            for (int64_t j = 0; j < n; j++)
                x[j] *= 40.0f; /* scores from -40 to 40: exponentials down to e^-80 */
            /* The reference takes the kernels' float arguments (scale * x - max, rounded as
             * they round it), then exact exponentials. */
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; j++)
                mx = fmaxf(mx, 0.5f * x[j]);
            double sum = 0;
            for (int64_t j = 0; j < n; j++)
                sum += exp((double)(0.5f * x[j] - mx));
            float y[1000];
            memcpy(y, x, (size_t)n * sizeof *x);
            v->softmax(n, y, 0.5f);
            int bad = 0;
            for (int64_t j = 0; j < n; j++) {
                const double e = exp((double)(0.5f * x[j] - mx)) / sum;
                bad += fabs(y[j] - e) > 4e-7 * e + 1e-37;
            }
            if (bad)
                printf("  softmax isa %s n %lld: %d bad\n", ctn_isa_name(isas[i]), (long long)n,
                       bad);
            CHECK_EQ_INT(bad, 0);
            /* silu over -100 .. 100 (e^-g from e^-100 to e^100). */
            fill(u, n);
            for (int64_t j = 0; j < n; j++)
                g[j] = x[j] * 2.5f;
            memcpy(y, g, (size_t)n * sizeof *g);
            v->silu_mul(n, y, u);
            for (int64_t j = 0; j < n; j++) {
                const double e = (double)g[j] / (1.0 + exp(-(double)g[j])) * u[j];
                /* Past g = -88.7, e^-g overflows a float and the product is 0 (as it is
                 * with expf): the true value is below 1e-35. */
                bad += fabs(y[j] - e) > 4e-7 * fabs(e) + 1e-35;
            }
            if (bad)
                printf("  silu isa %s n %lld: %d bad\n", ctn_isa_name(isas[i]), (long long)n, bad);
            CHECK_EQ_INT(bad, 0);
            /* A NaN anywhere makes the whole softmax NaN. */
            memcpy(y, x, (size_t)n * sizeof *x);
            y[n / 2] = NAN;
            v->softmax(n, y, 1.0f);
            for (int64_t j = 0; j < n; j++)
                bad += !isnan(y[j]);
            CHECK_EQ_INT(bad, 0);
        }
        /* A single very negative score next to 0: its weight underflows to exactly 0. */
        float z[2] = {0.0f, -1000.0f};
        v->softmax(2, z, 1.0f);
        CHECK(z[0] == 1.0f && z[1] == 0.0f);
    }
    ctn_kern_set_isa(isas[m - 1]);
}

/* ---- selection ------------------------------------------------------------------------ */

/* main sets CATENA_ISA=scalar before the first kernel call: start-up honours it. */
TEST(isa_from_environment) {
    CHECK_EQ_INT(ctn_kern_isa(), CTN_ISA_SCALAR);
}

TEST(isa_selection) {
    CHECK(ctn_isa_supported(CTN_ISA_SCALAR));
    CHECK_STR(ctn_isa_name(CTN_ISA_SCALAR), "scalar");
    CHECK_STR(ctn_isa_name(CTN_ISA_AVX2), "avx2");
    CHECK_STR(ctn_isa_name(CTN_ISA_AVX512), "avx512");
    CHECK_STR(ctn_isa_name(CTN_ISA_AMX), "amx");
    const ctn_isa best = ctn_isa_supported(CTN_ISA_AMX)      ? CTN_ISA_AMX
                         : ctn_isa_supported(CTN_ISA_AVX512) ? CTN_ISA_AVX512
                         : ctn_isa_supported(CTN_ISA_AVX2)   ? CTN_ISA_AVX2
                                                             : CTN_ISA_SCALAR;
    CHECK_EQ_INT(ctn_kern_set_isa((ctn_isa)7), CTN_ENOTSUP);
    CHECK_EQ_INT(ctn_kern_set_isa((ctn_isa)-1), CTN_ENOTSUP);
    for (int i = CTN_ISA_SCALAR; i <= CTN_ISA_AMX; i++) {
        const int rc = ctn_kern_set_isa((ctn_isa)i);
        CHECK_EQ_INT(rc, ctn_isa_supported((ctn_isa)i) ? 0 : CTN_ENOTSUP);
        if (rc == 0) CHECK_EQ_INT(ctn_kern_isa(), i);
    }
    CHECK_EQ_INT(ctn_kern_set_isa(best), 0);
    CHECK(ctn_kern_get(CTN_TYPE_Q2_K) == NULL);
    CHECK(ctn_kern_get(CTN_TYPE_Q8_K) == NULL);
    CHECK(ctn_kern_get(-1) == NULL);
    for (int t = 0; t < N_WTYPES; t++) {
        const ctn_kern *k = ctn_kern_get(wtypes[t]);
        CHECK(k != NULL && k->wtype == wtypes[t]);
    }
    CHECK_EQ_INT(ctn_kern_get(CTN_TYPE_Q4_0)->atype, CTN_TYPE_Q8_0);
    CHECK_EQ_INT(ctn_kern_get(CTN_TYPE_Q5_1)->atype, CTN_TYPE_Q8_1);
    CHECK_EQ_INT(ctn_kern_get(CTN_TYPE_Q6_K)->atype, CTN_TYPE_Q8_K);
    CHECK_EQ_INT(ctn_kern_get(CTN_TYPE_BF16)->atype, CTN_TYPE_BF16);
    CHECK_EQ_INT(ctn_kern_get(CTN_TYPE_Q4_K)->block, 256);
    CHECK_EQ_INT(ctn_kern_act_bytes(CTN_TYPE_F16, 10), 20);
    CHECK_EQ_INT(ctn_kern_act_bytes(CTN_TYPE_Q8_0, 64), 68);
}

/*
 * ctn_kern_get_f32act, the exact products: F32 activations taken as they are, against the
 * dequantized weights, on every ISA and weight type. Rows of 2816 values (past the 1024-value
 * chunk, a ragged last one) and 70 columns (past 64). Each value is within float rounding of
 * sum w * x in double over the dequantized row and the unrounded activations, and, summed
 * over the matrix, closer to it than the default kernel (which rounds the activations
 * first); every tiling gives the same bits (batch invariance).
 */
TEST(f32act_is_exact_and_batch_invariant) {
    ctn_isa isas[N_ISAS];
    const int m = isa_list(isas);
    enum { N = 2816, NR = 13, NC = 70 };
    float *x = malloc((size_t)N * NC * sizeof *x), *wf = malloc((size_t)N * sizeof *wf);
    float *y = malloc((size_t)NR * NC * sizeof *y), *yd = malloc((size_t)NR * NC * sizeof *yd);
    for (int i = 0; i < m; i++) {
        ctn_kern_set_isa(isas[i]);
        for (int t = 0; t < N_WTYPES; t++) {
            const ctn_kern *k = ctn_kern_get_f32act(wtypes[t]), *kd = ctn_kern_get(wtypes[t]);
            CHECK(k != NULL && k->atype == CTN_TYPE_F32 && k->wtype == wtypes[t]);
            if (k == NULL) continue;
            problem p = {k, N, NR, NC, row_bytes(wtypes[t], N), (size_t)N * 4, NULL, NULL};
            p.w = malloc(p.ws * NR);
            p.a = malloc(p.as * NC);
            for (int64_t r = 0; r < NR; r++) {
                fill(wf, N);
                ctn_quantize_row(wtypes[t], wf, p.w + r * p.ws, N);
            }
            fill(x, (int64_t)N * NC);
            for (int64_t c = 0; c < NC; c++)
                k->from_float(x + c * N, p.a + c * p.as, N);
            run_gemm(k, &p, y);
            /* The default kernel on the same weights and activations. */
            problem q;
            q.k = kd, q.n = N, q.nr = NR, q.nc = NC, q.ws = p.ws, q.w = p.w;
            q.as = ctn_kern_act_bytes(kd->atype, N);
            q.a = malloc(q.as * NC);
            for (int64_t c = 0; c < NC; c++)
                kd->from_float(x + c * N, q.a + c * q.as, N);
            run_gemm(kd, &q, yd);
            double err_exact = 0, err_default = 0;
            int bad = 0;
            for (int64_t r = 0; r < NR; r++) {
                ctn_dequantize_row(wtypes[t], p.w + r * p.ws, wf, N);
                for (int64_t c = 0; c < NC; c++) {
                    double ref = 0, mag = 0;
                    for (int64_t j = 0; j < N; j++) {
                        ref += (double)wf[j] * x[c * N + j];
                        mag += fabs((double)wf[j] * x[c * N + j]);
                    }
                    const double e = fabs((double)y[c * NR + r] - ref);
                    err_exact += e;
                    err_default += fabs((double)yd[c * NR + r] - ref);
                    if (e > 3e-6 * mag + 1e-30 && bad++ < 3)
                        printf("  type %d isa %s (%lld,%lld): %.9g vs %.9g (mag %.3g)\n", wtypes[t],
                               ctn_isa_name(isas[i]), (long long)r, (long long)c, y[c * NR + r],
                               ref, mag);
                }
            }
            CHECK_EQ_INT(bad, 0);
            if (wtypes[t] != CTN_TYPE_F32) CHECK(err_exact < err_default);
            CHECK_EQ_INT(check_tilings(k->gemm, &p, y), 0);
            free(q.a);
            free(p.w);
            free(p.a);
        }
    }
    ctn_kern_set_isa(isas[m - 1]);
    free(x), free(wf), free(y), free(yd);
}

int main(void) {
    setenv("CATENA_ISA", "scalar", 1);
    RUN(isa_from_environment);
    RUN(isa_selection);
    RUN(from_float_q8_0_q8_1_q8_K);
    RUN(from_float_f16_bf16_f32);
    RUN(gemm_matches_reference);
    RUN(isa_matches_scalar);
    RUN(gemm_is_batch_invariant);
    RUN(gemm_wide_batch_is_invariant);
    RUN(gemm_honours_strides);
    RUN(f32act_is_exact_and_batch_invariant);
    RUN(vec_ops);
    RUN(vec_softmax_silu);
    return test_summary();
}
