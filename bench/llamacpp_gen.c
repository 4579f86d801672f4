/*
 * Prefill and decode speed of llama.cpp's CPU backend, with the definitions of `catena bench`
 * so that bench/run_engine.sh can put the two side by side.
 *
 *   llamacpp_gen -m MODEL.gguf [--prompt-tokens N] [--gen-tokens N] [--threads N] [--reps R]
 *                [--parallel P] [--kv-unified] [--print-ids]
 *
 * Prints one JSON line:
 *   {"model": path, "threads": N, "prompt_tokens": N, "gen_tokens": N, "parallel": P,
 *    "kv_unified": b, "prefill_tok_s": x, "decode_tok_s": y, "peak_rss_mb": z, "isa": "..."}
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
 * --parallel P (default 1; 1 is the single-sequence work above, unchanged) decodes P
 * sequences together, as a server batching P requests would:
 * - sequence s (0 .. P-1) has its own prompt, id_i = 1 + ((i + 131 * s) * 7919) % (n_vocab - 1)
 *   (s = 0 is the single-sequence prompt);
 * - prefill: each sequence's prompt as one llama_decode (logits of its last token), one after
 *   the other, the argmax of each taken at once; prefill_tok_s = P * N / the total time;
 * - decode: gen-tokens steps, each ONE llama_decode of a batch of P tokens, token s being
 *   sequence s's argmax of its previous logits at its next position, logits asked for all P;
 *   decode_tok_s = P * gen_tokens / the time from the first step's start to the last step's
 *   logits (aggregate over the sequences).
 * The context holds P sequences (n_seq_max = P) in n_ctx = P * (prompt + gen tokens) cells,
 * n_batch = n_ubatch = max(P, prompt tokens). By default the KV cache is llama.cpp's default
 * for several sequences, one stream of n_ctx / P cells per sequence (kv_unified false), so a
 * sequence's attention reads only its own cells; --kv-unified sets kv_unified, one buffer
 * shared by all sequences in which each token's attention runs over every sequence's cells,
 * masked (see bench/llamacpp_dl.h). "parallel" and "kv_unified" in the JSON say which ran.
 *
 * --print-ids writes, after the warm-up repetition, each sequence's generated ids (the
 * gen-tokens ids fed to the decode steps) on stderr, one line per sequence: "seq S: id id ...".
 * Greedy decoding of sequence 0 gives the same ids whatever P (the check of the batched path
 * against the single-sequence one), with one exception seen: --kv-unified with P >= 64, where
 * the P query rows of a step share one KV buffer and ggml's CPU flash attention takes its
 * tiled kernel (64 or more query rows), whose rounding differs, so greedy ids of the random-
 * weight bench models drift apart after some steps (measured: from step 20 of 64, P = 64).
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

#define MAX_REPS     1000
#define MAX_PARALLEL 4096

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
                    int32_t n_vocab, int32_t *ids, double *prefill_tok_s, double *decode_tok_s) {
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
        ids[i] = tok;
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

/* Buffers of run_par, allocated once so that the timed loops allocate nothing. */
struct par_bufs {
    int32_t *pos;  /* (max(n_prompt, P)) positions 0, 1, 2, ... */
    int32_t *seq;  /* (max(n_prompt, P)) sequence ids of a batch */
    int32_t *tok;  /* (P) the tokens of a decode step */
    int32_t *step; /* (P) the position of a decode step, n_prompt + i for all */
    int32_t *ord;  /* (P) 0, 1, .. P-1 */
};

/*
 * One repetition of --parallel P: clears the KV cache of all sequences, prefills each
 * sequence's prompt (prompts: P rows of n_prompt ids), then decodes n_gen steps of P tokens.
 * Writes the generated ids (P rows of n_gen) and the two aggregate rates. Returns 0 or -1.
 */
static int run_par(lcpp_model *m, const int32_t *prompts, int32_t n_prompt, int32_t n_gen,
                   int32_t n_par, int32_t n_vocab, struct par_bufs *b, int32_t *ids,
                   double *prefill_tok_s, double *decode_tok_s) {
    lcpp_model_clear(m);
    double t0 = now_s();
    for (int32_t s = 0; s < n_par; s++) {
        for (int32_t i = 0; i < n_prompt; i++)
            b->seq[i] = s;
        const float *logits;
        if (lcpp_model_decode_multi(m, prompts + (size_t)s * (size_t)n_prompt, b->pos, b->seq,
                                    n_prompt, false) < 0 ||
            !(logits = lcpp_model_logits(m, -1))) {
            fprintf(stderr, "llamacpp_gen: llama_decode of sequence %d's %d-token prompt failed\n",
                    (int)s, (int)n_prompt);
            return -1;
        }
        b->tok[s] = argmax(logits, n_vocab);
    }
    double t1 = now_s();
    for (int32_t i = 0; i < n_gen; i++) {
        for (int32_t s = 0; s < n_par; s++) {
            if (i > 0) {
                const float *logits = lcpp_model_logits(m, s);
                if (!logits) {
                    fprintf(stderr, "llamacpp_gen: no logits for sequence %d\n", (int)s);
                    return -1;
                }
                b->tok[s] = argmax(logits, n_vocab);
            }
            ids[(size_t)s * (size_t)n_gen + (size_t)i] = b->tok[s];
            b->step[s] = n_prompt + i;
        }
        if (lcpp_model_decode_multi(m, b->tok, b->step, b->ord, n_par, true) < 0) {
            fprintf(stderr, "llamacpp_gen: llama_decode of %d sequences at position %d failed\n",
                    (int)n_par, (int)(n_prompt + i));
            return -1;
        }
    }
    double t2 = now_s();
    *prefill_tok_s = (double)n_par * n_prompt / (t1 - t0);
    *decode_tok_s = n_gen > 0 ? (double)n_par * n_gen / (t2 - t1) : 0.0;
    return 0;
}

/* Writes each sequence's generated ids (n_par rows of n_gen) on stderr. */
static void print_ids(const int32_t *ids, int32_t n_par, int32_t n_gen) {
    for (int32_t s = 0; s < n_par; s++) {
        fprintf(stderr, "seq %d:", (int)s);
        for (int32_t i = 0; i < n_gen; i++)
            fprintf(stderr, " %d", (int)ids[(size_t)s * (size_t)n_gen + (size_t)i]);
        fputc('\n', stderr);
    }
}

static int usage(void) {
    fprintf(stderr, "usage: llamacpp_gen -m MODEL.gguf [--prompt-tokens N] [--gen-tokens N] "
                    "[--threads N] [--reps R] [--parallel P] [--kv-unified] [--print-ids]\n");
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
    int32_t n_prompt = 256, n_gen = 64, n_threads = 1, reps = 3, n_par = 1;
    bool kv_unified = false, want_ids = false;
    const char *loras = NULL; /* --lora A,B,...: sequence s with adapter s mod count */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--kv-unified")) {
            kv_unified = true;
            continue;
        }
        if (!strcmp(a, "--print-ids")) {
            want_ids = true;
            continue;
        }
        const char *v = ++i < argc ? argv[i] : NULL;
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
        else if (!strcmp(a, "--parallel"))
            ok = ok && parse_int(v, 1, MAX_PARALLEL, &n_par);
        else if (!strcmp(a, "--lora"))
            loras = v;
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
    int rc;
    uint64_t ctx_len = (uint64_t)n_prompt + (uint64_t)n_gen;
    if (n_par == 1) {
        kv_unified = false; /* one sequence: llama.cpp's default context, as before */
        rc = lcpp_model_open_bench(&m, path, (uint32_t)ctx_len, (uint32_t)n_prompt, n_threads, err,
                                   sizeof err);
    } else if (ctx_len * (uint64_t)n_par > INT32_MAX) {
        snprintf(err, sizeof err, "%d sequences of %llu positions are too many", (int)n_par,
                 (unsigned long long)ctx_len);
        rc = -1;
    } else {
        uint32_t n_batch = (uint32_t)(n_par > n_prompt ? n_par : n_prompt);
        rc = lcpp_model_open_par(&m, path, (uint32_t)(ctx_len * (uint64_t)n_par), n_batch,
                                 (uint32_t)n_par, kv_unified, n_threads, err, sizeof err);
    }
    if (rc < 0) {
        fprintf(stderr, "llamacpp_gen: %s\n", err);
        return 1;
    }
    int32_t n_vocab = lcpp_model_n_vocab(m);
    size_t n_buf = (size_t)(n_par > n_prompt ? n_par : n_prompt);
    int32_t *prompt = malloc((size_t)n_par * (size_t)n_prompt * sizeof *prompt);
    int32_t *ids = malloc(((size_t)n_par * (size_t)n_gen + 1) * sizeof *ids);
    struct par_bufs b = {
        malloc(n_buf * sizeof *b.pos),         malloc(n_buf * sizeof *b.seq),
        malloc((size_t)n_par * sizeof *b.tok), malloc((size_t)n_par * sizeof *b.step),
        malloc((size_t)n_par * sizeof *b.ord),
    };
    double *pre = malloc((size_t)reps * sizeof *pre), *dec = malloc((size_t)reps * sizeof *dec);
    rc = 0;
    if (!prompt || !ids || !b.pos || !b.seq || !b.tok || !b.step || !b.ord || !pre || !dec ||
        n_vocab < 2) {
        fprintf(stderr, "llamacpp_gen: %s\n",
                n_vocab < 2 ? "vocabulary too small" : "out of memory");
        rc = 1;
        goto done;
    }
    for (int32_t s = 0; s < n_par; s++)
        for (int32_t i = 0; i < n_prompt; i++)
            prompt[(size_t)s * (size_t)n_prompt + (size_t)i] =
                1 + (int32_t)((((int64_t)i + 131 * (int64_t)s) * 7919) % (n_vocab - 1));
    for (size_t i = 0; i < n_buf; i++)
        b.pos[i] = (int32_t)i;
    for (int32_t s = 0; s < n_par; s++)
        b.ord[s] = s;

    /* --lora: llama.cpp applies one set of adapters to a whole batch, so the sequences of
     * each adapter (s mod count) run as a batch of their own, one group after the other; the
     * rates are the groups' tokens over their summed times. */
    char lora_list[8192] = "";
    const char *lora_files[64];
    int n_lora = 0;
    if (loras != NULL) {
        snprintf(lora_list, sizeof lora_list, "%s", loras);
        for (char *f = strtok(lora_list, ","); f != NULL && n_lora < 64; f = strtok(NULL, ","))
            lora_files[n_lora++] = f;
        if (n_lora == 0 || n_lora > n_par || n_par % n_lora != 0) {
            fprintf(stderr, "llamacpp_gen: --lora needs 1..P adapters dividing P\n");
            rc = 1;
            goto done;
        }
    }
    int32_t *group_prompt = malloc((size_t)n_par * (size_t)n_prompt * sizeof *group_prompt);
    if (group_prompt == NULL) {
        rc = 1;
        goto done;
    }
    /* The first repetition is the untimed warm-up. */
    for (int r = -1; rc == 0 && r < reps; r++) {
        double p, d;
        int e = 0;
        if (n_lora > 0) {
            const int32_t per = n_par / n_lora;
            double tp = 0, td = 0;
            for (int g = 0; g < n_lora && e == 0; g++) {
                for (int32_t j = 0; j < per; j++)
                    memcpy(group_prompt + (size_t)j * (size_t)n_prompt,
                           prompt + (size_t)(j * n_lora + g) * (size_t)n_prompt,
                           (size_t)n_prompt * sizeof *prompt);
                double gp, gd;
                if (lcpp_model_set_lora(m, lora_files[g], 1.0f, err, sizeof err) < 0) {
                    fprintf(stderr, "llamacpp_gen: %s\n", err);
                    e = -1;
                    break;
                }
                e = run_par(m, group_prompt, n_prompt, n_gen, per, n_vocab, &b, ids, &gp, &gd);
                tp += (double)per * n_prompt / gp;
                td += n_gen > 0 ? (double)per * n_gen / gd : 0;
            }
            p = (double)n_par * n_prompt / tp;
            d = n_gen > 0 ? (double)n_par * n_gen / td : 0;
        } else {
            e = n_par == 1 ? run_once(m, prompt, n_prompt, n_gen, n_vocab, ids, &p, &d)
                           : run_par(m, prompt, n_prompt, n_gen, n_par, n_vocab, &b, ids, &p, &d);
        }
        if (e < 0) {
            rc = 1;
        } else if (r < 0) {
            if (want_ids) print_ids(ids, n_par, n_gen);
        } else {
            pre[r] = p;
            dec[r] = d;
        }
    }
    if (rc == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        char variant[64], isa[80];
        lcpp_cpu_variant(variant, sizeof variant);
        snprintf(isa, sizeof isa, "llama.cpp%s%s", *variant ? ":" : "", variant);
        printf("{\"model\": ");
        json_str(stdout, path);
        printf(", \"threads\": %d, \"prompt_tokens\": %d, \"gen_tokens\": %d, "
               "\"parallel\": %d, \"kv_unified\": %s, \"adapters\": %d, "
               "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"peak_rss_mb\": %.1f, "
               "\"isa\": ",
               (int)n_threads, (int)n_prompt, (int)n_gen, (int)n_par, kv_unified ? "true" : "false",
               n_lora, median(pre, reps), median(dec, reps), (double)ru.ru_maxrss / 1024.0);
        json_str(stdout, isa);
        printf("}\n");
    }
    free(group_prompt);
done:
    free(prompt);
    free(ids);
    free(b.pos);
    free(b.seq);
    free(b.tok);
    free(b.step);
    free(b.ord);
    free(pre);
    free(dec);
    lcpp_model_free(m);
    return rc;
}
