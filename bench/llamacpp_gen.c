/*
 * Prefill and decode speed of llama.cpp's CPU backend, with the definitions of `catena bench`
 * so that bench/run_engine.sh can put the two side by side.
 *
 *   llamacpp_gen -m MODEL.gguf [--prompt-tokens N] [--gen-tokens N] [--threads N] [--reps R]
 *
 * Prints one JSON line:
 *   {"model": path, "threads": N, "prompt_tokens": N, "gen_tokens": N, "prefill_tok_s": x,
 *    "decode_tok_s": y, "peak_rss_mb": z, "isa": "..."}
 *
 * The work, as `catena bench` defines it:
 * - the prompt is N token ids chosen without a tokenizer: id_i = 1 + (i * 7919) % (n_vocab - 1)
 *   for i = 0 .. N-1;
 * - prefill: one llama_decode of all N prompt tokens as one batch (n_batch = n_ubatch >= N),
 *   logits asked for the last token only, timed until its logits are available;
 *   prefill_tok_s = N / that time;
 * - decode: then gen-tokens steps of one token each, each feeding the argmax of the previous
 *   logits (the first step the argmax of the prefill's logits) at the next position, timed
 *   from the first step's start to the last step's logits; decode_tok_s = gen_tokens / time.
 * One untimed warm-up repetition comes first, then --reps timed repetitions (3 by default),
 * the KV cache cleared before each; each rate reported is the median over the repetitions.
 * peak_rss_mb is getrusage's ru_maxrss at the end / 1024, so MiB (the model is mmapped: its pages
 * count once read). "isa" names the libggml-cpu variant ggml loaded (e.g. "llama.cpp:icelake").
 *
 * The context is llama.cpp's default apart from the sizes and threads: F16 KV cache, flash
 * attention AUTO, which is on for the CPU backend (bench/llamacpp_dl.h). n_ctx is
 * prompt + gen tokens.
 *
 * llama.cpp libraries: $CATENA_LLAMA_LIBDIR or bench/node_modules (scripts/setup-peers.sh).
 * Exit status 0, 1 on a failure, 2 on bad usage, 77 when llama.cpp is not installed.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "llamacpp_dl.h"

#define MAX_REPS 1000

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n-1] (sorts v). */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Writes s as a JSON string body (quotes and backslashes escaped, control bytes as \u). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/*
 * One repetition: clears the KV cache, prefills the prompt, decodes gen tokens. Writes the
 * two rates. Returns 0 or -1 (with a message on stderr).
 */
static int run_once(lcpp_model *m, const int32_t *prompt, int32_t n_prompt, int32_t n_gen,
                    int32_t n_vocab, double *prefill_tok_s, double *decode_tok_s) {
    const float *logits;
    lcpp_model_clear(m);
    double t0 = now_s();
    if (lcpp_model_decode_batch(m, prompt, n_prompt, 0, &logits) < 0) {
        fprintf(stderr, "llamacpp_gen: llama_decode of the %d-token prompt failed\n",
                (int)n_prompt);
        return -1;
    }
    double t1 = now_s();
    for (int32_t i = 0; i < n_gen; i++) {
        int32_t tok = argmax(logits, n_vocab);
        if (lcpp_model_decode(m, tok, n_prompt + i, &logits) < 0) {
            fprintf(stderr, "llamacpp_gen: llama_decode at position %d failed\n",
                    (int)(n_prompt + i));
            return -1;
        }
    }
    double t2 = now_s();
    *prefill_tok_s = n_prompt / (t1 - t0);
    *decode_tok_s = n_gen > 0 ? n_gen / (t2 - t1) : 0.0;
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: llamacpp_gen -m MODEL.gguf [--prompt-tokens N] [--gen-tokens N] "
                    "[--threads N] [--reps R]\n");
    return 2;
}

/* Parses a decimal integer in [lo, hi] into *out; false when s is not one. */
static bool parse_int(const char *s, long lo, long hi, int32_t *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return false;
    *out = (int32_t)v;
    return true;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int32_t n_prompt = 256, n_gen = 64, n_threads = 1, reps = 3;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            path = v;
        else if (!strcmp(a, "--prompt-tokens"))
            ok = ok && parse_int(v, 1, 1 << 20, &n_prompt);
        else if (!strcmp(a, "--gen-tokens"))
            ok = ok && parse_int(v, 0, 1 << 20, &n_gen);
        else if (!strcmp(a, "--threads"))
            ok = ok && parse_int(v, 1, 1024, &n_threads);
        else if (!strcmp(a, "--reps"))
            ok = ok && parse_int(v, 1, MAX_REPS, &reps);
        else
            ok = false;
        if (!ok) return usage();
    }
    if (!path) return usage();

    char err[512] = "";
    if (lcpp_lib_open(NULL, err, sizeof err) < 0) {
        fprintf(stderr, "llamacpp_gen: llama.cpp unavailable: %s\n", err);
        return 77;
    }
    lcpp_model *m;
    uint32_t n_ctx = (uint32_t)n_prompt + (uint32_t)n_gen;
    if (lcpp_model_open_bench(&m, path, n_ctx, (uint32_t)n_prompt, n_threads, err, sizeof err) <
        0) {
        fprintf(stderr, "llamacpp_gen: %s\n", err);
        return 1;
    }
    int32_t n_vocab = lcpp_model_n_vocab(m);
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    double *pre = malloc((size_t)reps * sizeof *pre), *dec = malloc((size_t)reps * sizeof *dec);
    if (!prompt || !pre || !dec || n_vocab < 2) {
        fprintf(stderr, "llamacpp_gen: %s\n",
                n_vocab < 2 ? "vocabulary too small" : "out of memory");
        lcpp_model_free(m);
        return 1;
    }
    for (int32_t i = 0; i < n_prompt; i++)
        prompt[i] = 1 + (int32_t)(((int64_t)i * 7919) % (n_vocab - 1));

    int rc = 0;
    double wp, wd;
    if (run_once(m, prompt, n_prompt, n_gen, n_vocab, &wp, &wd) < 0) rc = 1; /* warm-up */
    for (int r = 0; rc == 0 && r < reps; r++)
        if (run_once(m, prompt, n_prompt, n_gen, n_vocab, &pre[r], &dec[r]) < 0) rc = 1;
    if (rc == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        char variant[64], isa[80];
        lcpp_cpu_variant(variant, sizeof variant);
        snprintf(isa, sizeof isa, "llama.cpp%s%s", *variant ? ":" : "", variant);
        printf("{\"model\": ");
        json_str(stdout, path);
        printf(", \"threads\": %d, \"prompt_tokens\": %d, \"gen_tokens\": %d, "
               "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"peak_rss_mb\": %.1f, "
               "\"isa\": ",
               (int)n_threads, (int)n_prompt, (int)n_gen, median(pre, reps), median(dec, reps),
               (double)ru.ru_maxrss / 1024.0);
        json_str(stdout, isa);
        printf("}\n");
    }
    free(prompt);
    free(pre);
    free(dec);
    lcpp_model_free(m);
    return rc;
}
