/*
 * Micro-benchmark of the CPU kernels (kernels/cpu/kern.h) at the shapes of a 110M-parameter
 * model (dim 768, hidden 2048, vocab 32000), single thread:
 *   gemv: nc = 1 (decode), GB/s of weight bytes read;
 *   gemm: nc = 256 (prefill) or --cols N (a batch of N decoding sequences), GOPS
 *         (2 * n * rows * cols per call) and microseconds per call.
 *
 *     bench_kern [type ...] [--isa scalar|avx2|avx512|amx] [--secs S] [--cols N]
 *
 * Types: q8_0 q4_0 q4_k q6_k f16 (default: all), also q5_k f32 bf16 q4_1 q5_0 q5_1.
 * The scalar ISA's gemm runs on at most 128 rows (it is slow; the rate is what counts).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kern.h"
#include "quant.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;

static float rndf(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static const struct {
    const char *name;
    int type;
} types[] = {
    {"q8_0", CTN_TYPE_Q8_0}, {"q4_0", CTN_TYPE_Q4_0}, {"q4_k", CTN_TYPE_Q4_K},
    {"q6_k", CTN_TYPE_Q6_K}, {"f16", CTN_TYPE_F16},   {"q5_k", CTN_TYPE_Q5_K},
    {"f32", CTN_TYPE_F32},   {"bf16", CTN_TYPE_BF16}, {"q4_1", CTN_TYPE_Q4_1},
    {"q5_0", CTN_TYPE_Q5_0}, {"q5_1", CTN_TYPE_Q5_1},
};
#define N_TYPES   (int)(sizeof types / sizeof types[0])
#define N_DEFAULT 5

static const struct {
    int64_t n, rows;
    const char *what;
} shapes[] = {
    {768, 2048, "ffn up/gate"},
    {768, 768, "attn q/k/v/o"},
    {2048, 768, "ffn down"},
    {768, 32000, "lm head"},
};

/* Runs fn until secs have passed (at least twice); returns seconds per call. */
static double time_gemm(const ctn_kern *k, int64_t n, const void *w, size_t ws, int64_t nr,
                        const void *a, size_t as, int64_t nc, float *y, double secs) {
    k->gemm(n, w, ws, nr, a, as, nc, y, (size_t)nr); /* warm up */
    int reps = 0;
    const double t0 = now();
    double t;
    do {
        k->gemm(n, w, ws, nr, a, as, nc, y, (size_t)nr);
        reps++;
        t = now() - t0;
    } while (t < secs || reps < 2);
    return t / reps;
}

static void bench_type(int ti, ctn_isa isa, double secs, int64_t nc) {
    ctn_kern_set_isa(isa);
    const ctn_kern *k = ctn_kern_get(types[ti].type);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t n = shapes[s].n, nr = shapes[s].rows;
        const size_t ws =
            (size_t)(n / ctn_type_block_size(k->wtype) * ctn_type_block_bytes(k->wtype));
        const size_t as = ctn_kern_act_bytes(k->atype, n);
        unsigned char *w = malloc(ws * (size_t)nr), *a = malloc(as * (size_t)nc);
        float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)(nr * nc) * sizeof *y);
        /* 64 distinct quantized rows, repeated: the reference quantizers are slow. */
        for (int64_t r = 0; r < nr; r++) {
            if (r < 64) {
                for (int64_t i = 0; i < n; i++)
                    x[i] = rndf();
                ctn_quantize_row(k->wtype, x, w + (size_t)r * ws, n);
            } else {
                memcpy(w + (size_t)r * ws, w + (size_t)(r % 64) * ws, ws);
            }
        }
        for (int64_t c = 0; c < nc; c++) {
            for (int64_t i = 0; i < n; i++)
                x[i] = rndf();
            k->from_float(x, a + (size_t)c * as, n);
        }
        const double tv = time_gemm(k, n, w, ws, nr, a, as, 1, y, secs);
        const int64_t gr = isa == CTN_ISA_SCALAR && nr > 128 ? 128 : nr;
        const double tm = time_gemm(k, n, w, ws, gr, a, as, nc, y, secs);
        printf("%-5s %-7s %5lld x %-5lld %-13s gemv %7.2f GB/s %8.1f us   gemm(%lld) %7.1f GOPS "
               "%8.1f us\n",
               types[ti].name, ctn_isa_name(isa), (long long)nr, (long long)n, shapes[s].what,
               (double)(ws * (size_t)nr) / tv * 1e-9, tv * 1e6, (long long)nc,
               2.0 * (double)n * (double)gr * (double)nc / tm * 1e-9, tm * 1e6);
        fflush(stdout);
        free(w), free(a), free(x), free(y);
    }
}

int main(int argc, char **argv) {
    int sel[N_TYPES] = {0}, any = 0, isa = -1;
    double secs = 0.3;
    int64_t nc = 256;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--isa") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            for (int j = CTN_ISA_SCALAR; j <= CTN_ISA_AMX; j++)
                if (strcmp(v, ctn_isa_name((ctn_isa)j)) == 0) isa = j;
            if (isa < 0 || !ctn_isa_supported((ctn_isa)isa)) {
                fprintf(stderr, "bench_kern: ISA %s not available\n", v);
                return 2;
            }
        } else if (strcmp(argv[i], "--secs") == 0 && i + 1 < argc) {
            secs = atof(argv[++i]);
        } else if (strcmp(argv[i], "--cols") == 0 && i + 1 < argc) {
            nc = atoll(argv[++i]);
            if (nc < 1 || nc > 4096) {
                fprintf(stderr, "bench_kern: --cols must be 1..4096\n");
                return 2;
            }
        } else {
            int found = 0;
            for (int j = 0; j < N_TYPES; j++)
                if (strcmp(argv[i], types[j].name) == 0) sel[j] = found = any = 1;
            if (!found) {
                fprintf(stderr, "usage: bench_kern [type ...] [--isa scalar|avx2|avx512|amx] "
                                "[--secs S] [--cols N]\n");
                return 2;
            }
        }
    }
    if (!any)
        for (int j = 0; j < N_DEFAULT; j++)
            sel[j] = 1;
    for (int j = 0; j < N_TYPES; j++) {
        if (!sel[j]) continue;
        for (int i = CTN_ISA_AMX; i >= CTN_ISA_SCALAR; i--) {
            if (isa >= 0 ? i != isa : !ctn_isa_supported((ctn_isa)i)) continue;
            bench_type(j, (ctn_isa)i, secs, nc);
        }
    }
    return 0;
}
