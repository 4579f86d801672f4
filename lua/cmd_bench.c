/*
 * `catena bench`: prefill and decode speed of the engine on a model, as one JSON line.
 *
 * The prompt is N token ids chosen without a tokenizer, id_i = 1 + (i * 7919) % (n_vocab - 1),
 * so that bench/llamacpp_gen.c feeds llama.cpp exactly the same ids. Prefill is one forward
 * pass over all N tokens up to the last token's logits; decode then generates gen-tokens
 * tokens one at a time, each fed the argmax of the previous logits. After a warm-up run that
 * is not counted, each of --reps runs starts from an empty KV cache, and the medians are
 * printed.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "commands.h"
#include "forward.h"
#include "kern.h"
#include "model.h"

static int usage(FILE *f) {
    fprintf(f, "usage: catena bench -m MODEL.gguf [--prompt-tokens N] [--gen-tokens N]\n"
               "                    [--threads N] [--reps R] [--kv-f32]\n"
               "  Measures prefill (N prompt tokens in one batch, default 256) and decode\n"
               "  (default 64 tokens, greedy) and prints one JSON line with prefill_tok_s and\n"
               "  decode_tok_s (medians of R runs, default 3, after a warm-up run).\n");
    return f == stderr ? 2 : 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Writes s as a JSON string (quotes, backslashes and control characters escaped). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static int32_t argmax(const float *v, int64_t n) {
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int32_t)i;
    return best;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* One run: prefill then decode; the times of both. */
static int run_once(ctn_fwd *f, ctn_kv_seq *seq, const int32_t *prompt, int64_t n_prompt,
                    int64_t n_gen, float *logits, double *t_prefill, double *t_decode) {
    const int64_t n_vocab = ctn_fwd_model(f)->hp.n_vocab;
    ctn_kv_seq_clear(ctn_fwd_kv(f), seq);
    double t0 = now_s();
    ctn_fwd_seg seg = {.seq = seq, .tokens = prompt, .n_tokens = n_prompt, .logits = true};
    if (ctn_fwd_run(f, &seg, 1, logits) < 0) return -1;
    double t1 = now_s();
    for (int64_t i = 0; i < n_gen; i++) {
        int32_t next = argmax(logits, n_vocab);
        seg = (ctn_fwd_seg){.seq = seq, .tokens = &next, .n_tokens = 1, .logits = true};
        if (ctn_fwd_run(f, &seg, 1, logits) < 0) return -1;
    }
    double t2 = now_s();
    *t_prefill = t1 - t0;
    *t_decode = t2 - t1;
    return 0;
}

int ctn_cmd_bench(int argc, char **argv) {
    const char *path = NULL;
    long n_prompt = 256, n_gen = 64, threads = 0, reps = 3;
    bool kv_f32 = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long *dst = NULL, lo = 1, hi = 65536;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            path = argv[++i];
            continue;
        } else if (!strcmp(a, "--kv-f32")) {
            kv_f32 = true;
            continue;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            return usage(stdout);
        } else if (!strcmp(a, "--prompt-tokens") || !strcmp(a, "-p")) {
            dst = &n_prompt;
        } else if (!strcmp(a, "--gen-tokens") || !strcmp(a, "-n")) {
            dst = &n_gen, lo = 0;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            dst = &threads, hi = 512;
        } else if (!strcmp(a, "--reps") || !strcmp(a, "-r")) {
            dst = &reps, hi = 1000;
        }
        if (dst == NULL || i + 1 >= argc) {
            fprintf(stderr, "catena bench: unknown or incomplete argument '%s'\n", a);
            return usage(stderr);
        }
        if (parse_int(argv[++i], lo, hi, dst) < 0) {
            fprintf(stderr, "catena bench: %s wants a whole number in %ld..%ld, not '%s'\n", a, lo,
                    hi, argv[i]);
            return 2;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "catena bench: no model given (-m MODEL.gguf)\n");
        return usage(stderr);
    }

    char err[512];
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    ctn_fwd *f = NULL;
    ctn_kv_seq seq = {0};
    float *logits = NULL;
    int32_t *prompt = NULL;
    int status = 1, rc;
    if ((rc = ctn_gguf_open(&g, path, err, sizeof err)) < 0 ||
        (rc = ctn_model_load(&m, g, err, sizeof err)) < 0) {
        fprintf(stderr, "catena bench: %s\n", err);
        goto done;
    }
    const int64_t n_vocab = m->hp.n_vocab;
    ctn_fwd_params fp = {.n_threads = (int)threads,
                         .n_ctx = n_prompt + n_gen,
                         .n_batch = n_prompt,
                         .kv_f32 = kv_f32};
    if ((rc = ctn_fwd_new(&f, m, &fp, err, sizeof err)) < 0) {
        fprintf(stderr, "catena bench: %s\n", err);
        goto done;
    }
    logits = malloc((size_t)n_vocab * sizeof *logits);
    prompt = malloc((size_t)n_prompt * sizeof *prompt);
    if (logits == NULL || prompt == NULL || ctn_fwd_seq_init(f, &seq) < 0) {
        fprintf(stderr, "catena bench: out of memory\n");
        goto done;
    }
    for (long i = 0; i < n_prompt; i++)
        prompt[i] = n_vocab > 1 ? (int32_t)(1 + ((int64_t)i * 7919) % (n_vocab - 1)) : 0;

    double *tp = calloc((size_t)reps, sizeof *tp), *td = calloc((size_t)reps, sizeof *td);
    if (tp == NULL || td == NULL) {
        free(tp), free(td);
        fprintf(stderr, "catena bench: out of memory\n");
        goto done;
    }
    double a, b;
    bool ok = run_once(f, &seq, prompt, n_prompt, n_gen, logits, &a, &b) == 0;
    for (long r = 0; ok && r < reps; r++) {
        ok = run_once(f, &seq, prompt, n_prompt, n_gen, logits, &a, &b) == 0;
        tp[r] = (double)n_prompt / a;
        td[r] = n_gen > 0 ? (double)n_gen / b : 0.0;
    }
    if (!ok) {
        fprintf(stderr, "catena bench: %s\n", ctn_fwd_errmsg(f));
        free(tp), free(td);
        goto done;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"model\": ");
    json_str(stdout, path);
    printf(", \"threads\": %d, \"prompt_tokens\": %ld, \"gen_tokens\": %ld, "
           "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"peak_rss_mb\": %.1f, "
           "\"kv_type\": \"%s\", \"isa\": \"%s\"}\n",
           ctn_fwd_threads(f), n_prompt, n_gen, median(tp, (int)reps), median(td, (int)reps),
           (double)ru.ru_maxrss / 1024.0, kv_f32 ? "f32" : "f16", ctn_isa_name(ctn_kern_isa()));
    free(tp), free(td);
    status = 0;
done:
    if (f != NULL) ctn_fwd_seq_close(f, &seq);
    free(prompt);
    free(logits);
    ctn_fwd_free(f);
    ctn_model_free(m);
    ctn_gguf_free(g);
    return status;
}
