/*
 * Differential test of kernels/quant.c against ggml: for every supported type and many
 * random rows (several distributions, scales and lengths), ctn_quantize_row must produce
 * the same bytes as ggml_quantize_chunk without an importance matrix, and
 * ctn_dequantize_row the same float bits as ggml's to_float (dequantize_row_* and the
 * fp16/bf16 row converters). The half/bfloat16 scalar conversions are compared on every
 * 16-bit pattern and on a sweep of float bit patterns.
 *
 * Only libggml-base.so is loaded, by full path from the node-llama-cpp folder
 * ($CATENA_LLAMA_LIBDIR overrides it). Exits 77, a ctest skip, when it is not there.
 * The prototypes below are our own, written from ggml.h's documented ABI.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llamacpp_dl.h" /* LCPP_DEFAULT_LIBDIR, LCPP_LIBDIR_ENV */
#include "quant.h"

typedef size_t (*quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start,
                                    int64_t nrows, int64_t n_per_row, const float *imatrix);
typedef void (*to_float_fn)(const void *x, float *y, int64_t k);
typedef uint16_t (*fp32_to_16_fn)(float f);
typedef float (*fp16_to_32_fn)(uint16_t h);
typedef struct {
    uint16_t bits;
} ggml_bf16;
typedef ggml_bf16 (*fp32_to_bf16_fn)(float f);
typedef float (*bf16_to_fp32_fn)(ggml_bf16 h);

static quantize_chunk_fn g_quantize_chunk;
static fp32_to_16_fn g_fp32_to_fp16;
static fp16_to_32_fn g_fp16_to_fp32;
static fp32_to_bf16_fn g_fp32_to_bf16;
static bf16_to_fp32_fn g_bf16_to_fp32;

static const struct {
    int type;
    const char *to_float; /* ggml's to_float for the type */
} TYPES_INIT[] = {
    {CTN_TYPE_F16, "ggml_fp16_to_fp32_row"}, {CTN_TYPE_BF16, "ggml_bf16_to_fp32_row"},
    {CTN_TYPE_Q8_0, "dequantize_row_q8_0"},  {CTN_TYPE_Q4_0, "dequantize_row_q4_0"},
    {CTN_TYPE_Q4_1, "dequantize_row_q4_1"},  {CTN_TYPE_Q5_0, "dequantize_row_q5_0"},
    {CTN_TYPE_Q5_1, "dequantize_row_q5_1"},
    {CTN_TYPE_Q4_K, "dequantize_row_q4_K"},  {CTN_TYPE_Q5_K, "dequantize_row_q5_K"},
    {CTN_TYPE_Q6_K, "dequantize_row_q6_K"},
};
#define N_TYPES (sizeof TYPES_INIT / sizeof TYPES_INIT[0])
static to_float_fn g_to_float[N_TYPES];

static int n_pass, n_fail;

static void *sym(void *h, const char *name) {
    void *p = dlsym(h, name);
    if (p == NULL) fprintf(stderr, "quantdiff: libggml-base lacks %s\n", name);
    return p;
}

/* Loads libggml-base.so; 0 on success, -1 when it is unavailable. */
static int load(void) {
    const char *dir = getenv(LCPP_LIBDIR_ENV);
    if (dir == NULL || *dir == '\0') dir = LCPP_DEFAULT_LIBDIR;
    char path[4096];
    snprintf(path, sizeof path, "%s/libggml-base.so", dir);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "quantdiff: %s\n", dlerror());
        return -1;
    }
    void *p[5] = {sym(h, "ggml_quantize_chunk"), sym(h, "ggml_fp32_to_fp16"),
                  sym(h, "ggml_fp16_to_fp32"), sym(h, "ggml_fp32_to_bf16"),
                  sym(h, "ggml_bf16_to_fp32")};
    for (int i = 0; i < 5; i++)
        if (p[i] == NULL) return -1;
    /* POSIX allows converting dlsym's result to a function pointer. */
    memcpy(&g_quantize_chunk, &p[0], sizeof p[0]);
    memcpy(&g_fp32_to_fp16, &p[1], sizeof p[1]);
    memcpy(&g_fp16_to_fp32, &p[2], sizeof p[2]);
    memcpy(&g_fp32_to_bf16, &p[3], sizeof p[3]);
    memcpy(&g_bf16_to_fp32, &p[4], sizeof p[4]);
    for (size_t i = 0; i < N_TYPES; i++) {
        void *f = sym(h, TYPES_INIT[i].to_float);
        if (f == NULL) return -1;
        memcpy(&g_to_float[i], &f, sizeof f);
    }
    return 0;
}

/* xorshift64*: deterministic, so a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static float uniform(void) { /* [0, 1) */
    return (float)(rng() >> 40) / 16777216.0f;
}
static float gauss(void) {
    float u = uniform(), v = uniform();
    return sqrtf(-2.0f * logf(u + 1e-12f)) * cosf(6.2831853f * v);
}

/* Row generators: the distributions weights and activations actually show, and worse. */
enum { D_GAUSS, D_UNIFORM, D_OUTLIERS, D_SPARSE, D_POSITIVE, D_CONST_BLOCKS, D_TINY, D_COUNT };
static const char *const DIST_NAME[D_COUNT] = {"gauss",    "uniform",      "outliers", "sparse",
                                               "positive", "const-blocks", "tiny"};

static void fill(float *x, int64_t n, int dist, float scale) {
    for (int64_t i = 0; i < n; i++) {
        float v;
        switch (dist) {
        case D_GAUSS: v = gauss(); break;
        case D_UNIFORM: v = 2 * uniform() - 1; break;
        case D_OUTLIERS: v = (rng() % 61 == 0) ? 40 * gauss() : gauss(); break;
        case D_SPARSE: v = (rng() % 8 == 0) ? gauss() : 0.0f; break;
        case D_POSITIVE: v = uniform() + 0.25f; break;
        case D_CONST_BLOCKS: v = (float)((i / 32) % 5) - 2.0f; break;
        default: v = gauss() * 1e-20f; break; /* below the K-quants' all-zero threshold */
        }
        x[i] = v * scale;
    }
}

static void report(int ok, const char *what) {
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL %s\n", what);
    }
}

/* One row through both implementations; returns 1 when bytes and floats agree. */
static int compare_row(size_t ti, const float *x, int64_t n, uint8_t *qa, uint8_t *qb, float *ya,
                       float *yb, char *why, size_t whylen) {
    const int type = TYPES_INIT[ti].type;
    const size_t bytes = (size_t)(n / ctn_type_block_size(type) * ctn_type_block_bytes(type));
    memset(qa, 0xAA, bytes);
    memset(qb, 0x55, bytes);
    if (ctn_quantize_row(type, x, qa, n) != 0) {
        snprintf(why, whylen, "ctn_quantize_row failed");
        return 0;
    }
    size_t got = g_quantize_chunk(type, x, qb, 0, 1, n, NULL);
    if (got != bytes) {
        snprintf(why, whylen, "ggml wrote %zu bytes, expected %zu", got, bytes);
        return 0;
    }
    for (size_t i = 0; i < bytes; i++) {
        if (qa[i] != qb[i]) {
            snprintf(why, whylen, "byte %zu (block %zu): catena %02x ggml %02x", i,
                     i / (size_t)ctn_type_block_bytes(type), qa[i], qb[i]);
            return 0;
        }
    }
    if (ctn_dequantize_row(type, qa, ya, n) != 0) {
        snprintf(why, whylen, "ctn_dequantize_row failed");
        return 0;
    }
    g_to_float[ti](qb, yb, n);
    for (int64_t i = 0; i < n; i++) {
        uint32_t a, b;
        memcpy(&a, &ya[i], 4);
        memcpy(&b, &yb[i], 4);
        if (a != b) {
            snprintf(why, whylen, "float %lld: catena %08x ggml %08x", (long long)i, a, b);
            return 0;
        }
    }
    return 1;
}

static void test_rows(void) {
    static const int64_t LENS[] = {256, 512, 768, 1024, 2048, 4096};
    static const float SCALES[] = {1.0f, 0.02f, 1e-3f, 300.0f, 6e4f};
    enum { MAXN = 4096 };
    float *x = malloc(MAXN * sizeof *x), *ya = malloc(MAXN * sizeof *ya);
    float *yb = malloc(MAXN * sizeof *yb);
    uint8_t *qa = malloc(MAXN * 4), *qb = malloc(MAXN * 4);
    if (!x || !ya || !yb || !qa || !qb) {
        report(0, "out of memory");
        goto done;
    }
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        int rows = 0, bad = 0;
        char first[256] = "";
        for (int dist = 0; dist < D_COUNT; dist++) {
            for (size_t si = 0; si < sizeof SCALES / sizeof SCALES[0]; si++) {
                for (int rep = 0; rep < 16; rep++) {
                    const int64_t n = LENS[rng() % (sizeof LENS / sizeof LENS[0])];
                    fill(x, n, dist, SCALES[si]);
                    char why[200];
                    rows++;
                    if (!compare_row(ti, x, n, qa, qb, ya, yb, why, sizeof why)) {
                        if (bad++ == 0)
                            snprintf(first, sizeof first, "%s scale %g n %lld: %s", DIST_NAME[dist],
                                     (double)SCALES[si], (long long)n, why);
                    }
                }
            }
        }
        /* Rows with special values: zeros, a lone spike, infinities and NaNs. */
        static const char *const SPECIAL[] = {"zeros", "spike", "inf", "nan", "denormal"};
        for (int sp = 0; sp < 5; sp++) {
            const int64_t n = 512;
            fill(x, n, D_GAUSS, 1.0f);
            if (sp == 0) memset(x, 0, n * sizeof *x);
            if (sp == 1) {
                memset(x, 0, n * sizeof *x);
                x[77] = 3.5f;
                x[300] = -1e-3f;
            }
            if (sp == 2) x[5] = INFINITY, x[400] = -INFINITY;
            if (sp == 3) x[0] = NAN, x[260] = NAN;
            if (sp == 4)
                for (int64_t i = 0; i < n; i++)
                    x[i] *= 1e-40f;
            char why[200];
            rows++;
            if (!compare_row(ti, x, n, qa, qb, ya, yb, why, sizeof why) && bad++ == 0)
                snprintf(first, sizeof first, "special row '%s': %s", SPECIAL[sp], why);
        }
        char what[400];
        snprintf(what, sizeof what, "%s: %d of %d rows differ; first: %s",
                 ctn_type_name(TYPES_INIT[ti].type), bad, rows, first);
        report(bad == 0, what);
        printf("%-5s %d rows, %d identical\n", ctn_type_name(TYPES_INIT[ti].type), rows,
               rows - bad);
    }
done:
    free(x), free(ya), free(yb), free(qa), free(qb);
}

static void test_scalar_conversions(void) {
    int bad16 = 0, badbf = 0, bad32 = 0, badb32 = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float a = ctn_fp16_to_fp32((uint16_t)h), b = g_fp16_to_fp32((uint16_t)h);
        if (memcmp(&a, &b, 4) != 0) bad16++;
        ggml_bf16 hb = {(uint16_t)h};
        a = ctn_bf16_to_fp32((uint16_t)h), b = g_bf16_to_fp32(hb);
        if (memcmp(&a, &b, 4) != 0) badbf++;
    }
    /* Every 2^23 / 1021-th float pattern plus random ones: all exponents, both signs. */
    for (uint64_t i = 0; i < (1ull << 32); i += 4093) {
        for (int r = 0; r < 2; r++) {
            uint32_t u = r ? (uint32_t)rng() : (uint32_t)i;
            float f;
            memcpy(&f, &u, 4);
            if (ctn_fp32_to_fp16(f) != g_fp32_to_fp16(f)) bad32++;
            if (ctn_fp32_to_bf16(f) != g_fp32_to_bf16(f).bits) badb32++;
        }
    }
    char what[200];
    snprintf(what, sizeof what, "fp16->fp32 on all 65536 halves: %d differ", bad16);
    report(bad16 == 0, what);
    snprintf(what, sizeof what, "bf16->fp32 on all 65536 values: %d differ", badbf);
    report(badbf == 0, what);
    snprintf(what, sizeof what, "fp32->fp16 on ~2M float patterns: %d differ", bad32);
    report(bad32 == 0, what);
    snprintf(what, sizeof what, "fp32->bf16 on ~2M float patterns: %d differ", badb32);
    report(badb32 == 0, what);
}

int main(void) {
    if (load() < 0) {
        printf("libggml-base unavailable; skipping\n");
        return 77;
    }
    test_scalar_conversions();
    test_rows();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
