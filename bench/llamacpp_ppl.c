/*
 * llama.cpp's side of bench/run_kld.sh: a model evaluated by llama.cpp on the windows of a
 * base file of `catena perplexity --kl-divergence-base` (llama-perplexity's format, see
 * docs/perplexity.md), compared with the base or written as a base of its own.
 *
 *   llamacpp_ppl -m MODEL.gguf --base FILE [-t N] [--chunks N] [-f TEXT] [--write OUT]
 *
 * The windows are the base's: n_chunk windows of n_ctx of its tokens, each decoded by
 * llama.cpp from an empty KV cache with its first token replaced by BOS when the vocabulary
 * adds one, in batches of n_ctx tokens, logits asked for every token; the positions j in
 * [n_ctx/2, n_ctx - 1) are scored, as llama-perplexity does. The context is llama.cpp's
 * default apart from its size and threads (F16 KV cache, flash attention AUTO:
 * lcpp_model_open_bench), as a llama-perplexity run gets it.
 *
 * Without --write, prints one line on stdout with the definitions of llama-perplexity
 * --kl-divergence (the same as `catena perplexity --kl-divergence -v` prints on stderr):
 *   llamacpp_ppl: mean KLD K ± U, same top p T, PPL(Q) P, PPL(base) B, RMS dp R, over N positions
 * With --write OUT, writes llama.cpp's log-probabilities for the base's tokens to OUT in the
 * same format and prints "Final estimate: PPL = X +/- Y". -f TEXT checks first that
 * llama.cpp's tokenizer gives the base's tokens for TEXT (with BOS, no special parsing).
 *
 * The per-position arithmetic is written here again rather than shared with
 * cli/cmd_perplexity.c, so that the two programs check each other's statistics.
 *
 * llama.cpp libraries: $CATENA_LLAMA_LIBDIR or bench/node_modules (scripts/setup-peers.sh).
 * Exit status 0, 1 on a failure, 2 on bad usage, 77 when llama.cpp is not installed.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llamacpp_dl.h"

static int usage(void) {
    fprintf(stderr, "usage: llamacpp_ppl -m MODEL.gguf --base FILE [-t N] [--chunks N] "
                    "[-f TEXT] [--write OUT]\n");
    return 2;
}

/* The base file: header, tokens; the rows are read window by window. */
typedef struct {
    FILE *f;
    int32_t n_ctx, n_vocab, n_chunk;
    int32_t *tokens;
} base;

static int base_read(base *b, const char *path) {
    memset(b, 0, sizeof *b);
    b->f = fopen(path, "rb");
    char magic[8];
    int32_t h[3];
    if (!b->f || fread(magic, 1, 8, b->f) != 8 || memcmp(magic, "_logits_", 8) != 0 ||
        fread(h, 4, 3, b->f) != 3) {
        fprintf(stderr, "llamacpp_ppl: %s is not a base file\n", path);
        return -1;
    }
    b->n_ctx = h[0], b->n_vocab = h[1], b->n_chunk = h[2];
    if (b->n_ctx < 3 || b->n_ctx > (1 << 20) || b->n_vocab < 1 || b->n_chunk < 1 ||
        b->n_chunk > (1 << 20)) {
        fprintf(stderr, "llamacpp_ppl: %s has a bad header\n", path);
        return -1;
    }
    const size_t n = (size_t)b->n_ctx * (size_t)b->n_chunk;
    b->tokens = malloc(n * sizeof *b->tokens);
    if (!b->tokens || fread(b->tokens, 4, n, b->f) != n) {
        fprintf(stderr, "llamacpp_ppl: %s: cannot read its %zu tokens\n", path, n);
        return -1;
    }
    return 0;
}

/* Largest logit (its first index) and log sum exp(logit - max): exp in float, sum in double. */
static void norm(const float *x, int32_t n, float *max, int32_t *top, double *lse) {
    *max = x[0], *top = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > *max) *max = x[i], *top = i;
    double s = 0;
    for (int32_t i = 0; i < n; i++)
        s += expf(x[i] - *max);
    *lse = log(s);
}

/* One stored row (2 floats then n uint16) of logits x: llama-perplexity's quantization. */
static void store_row(const float *x, int32_t n, uint16_t *row) {
    float max, lo = x[0];
    int32_t top;
    double lse;
    norm(x, n, &max, &top, &lse);
    for (int32_t i = 1; i < n; i++)
        lo = x[i] < lo ? x[i] : lo;
    lo = lo > max - 16 ? lo : max - 16;
    const float scale = (max - lo) / 65535.0f, min_lp = lo - max - (float)lse;
    memcpy(row, &scale, 4);
    memcpy(row + 2, &min_lp, 4);
    for (int32_t i = 0; i < n; i++) {
        const long q = scale > 0 && x[i] > lo ? lrintf((x[i] - lo) * (1 / scale)) : 0;
        row[4 + i] = (uint16_t)(q > 65535 ? 65535 : q);
    }
}

typedef struct {
    double nll, nll2, nll_b, nll_b2, kld, kld2, dp2, dp4;
    long same, n;
} sums;

static void compare(const float *x, int32_t n, const uint16_t *row, int32_t tok, sums *s) {
    float max, scale, min_lp;
    int32_t top;
    double lse;
    norm(x, n, &max, &top, &lse);
    memcpy(&scale, row, 4);
    memcpy(&min_lp, row + 2, 4);
    const uint16_t *q = row + 4;
    const double nll = max + lse - x[tok], nll_b = -(double)(scale * q[tok] + min_lp);
    double kld = 0, shift = max + lse;
    int32_t top_b = 0;
    float best = 0;
    for (int32_t i = 0; i < n; i++) {
        const float lp = scale * q[i] + min_lp;
        if (i == 0 || lp > best) best = lp, top_b = i;
        if (lp > -16.0f) kld += (double)expf(lp) * (lp - (x[i] - shift));
    }
    const double dp = exp(-nll) - exp(-nll_b);
    s->nll += nll, s->nll2 += nll * nll, s->nll_b += nll_b, s->nll_b2 += nll_b * nll_b;
    s->kld += kld, s->kld2 += kld * kld, s->dp2 += dp * dp, s->dp4 += dp * dp * dp * dp;
    s->same += top == top_b;
    s->n++;
}

/* Mean and standard error (none below 11 values), as llama-perplexity. */
static void mean_unc(double sum, double sum2, long n, double *m, double *u) {
    *m = sum / (double)n;
    const double var = sum2 / (double)n - *m * *m;
    *u = var > 0 && n > 10 ? sqrt(var / (double)(n - 1)) : 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *base_path = NULL, *text = NULL, *out_path = NULL;
    long threads = 1, chunks = -1;
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(a, "-m"))
            model = v;
        else if (!strcmp(a, "--base"))
            base_path = v;
        else if (!strcmp(a, "-f"))
            text = v;
        else if (!strcmp(a, "--write"))
            out_path = v;
        else if (!strcmp(a, "-t"))
            threads = strtol(v, NULL, 10);
        else if (!strcmp(a, "--chunks"))
            chunks = strtol(v, NULL, 10);
        else
            return usage();
    }
    if (!model || !base_path || threads < 1 || threads > 512) return usage();
    char err[512];
    if (lcpp_lib_open(NULL, err, sizeof err) < 0) {
        fprintf(stderr, "llamacpp_ppl: llama.cpp unavailable: %s\n", err);
        return 77;
    }
    base b;
    if (base_read(&b, base_path) < 0) return 1;
    const int32_t n_ctx = b.n_ctx, first = n_ctx / 2, rows = n_ctx - 1 - first;
    const int32_t n_chunk = chunks > 0 && chunks < b.n_chunk ? (int32_t)chunks : b.n_chunk;
    const size_t ru = 2 * (((size_t)b.n_vocab + 1) / 2) + 4; /* uint16 per row */

    if (text) {
        FILE *tf = fopen(text, "rb");
        char *buf = NULL;
        long len = -1;
        if (tf && fseek(tf, 0, SEEK_END) == 0) len = ftell(tf);
        if (len >= 0 && (buf = malloc((size_t)len + 1)) && fseek(tf, 0, SEEK_SET) == 0 &&
            fread(buf, 1, (size_t)len, tf) != (size_t)len)
            len = -1;
        if (tf) fclose(tf);
        lcpp_vocab *voc;
        const int32_t *ids;
        size_t n_ids;
        if (len < 0 || lcpp_vocab_open(&voc, model, err, sizeof err) < 0 ||
            lcpp_tokenize(voc, buf, (size_t)len, true, false, &ids, &n_ids) < 0) {
            fprintf(stderr, "llamacpp_ppl: cannot tokenize %s: %s\n", text,
                    len < 0 ? strerror(errno) : err);
            return 1;
        }
        const size_t want = (size_t)b.n_ctx * (size_t)b.n_chunk;
        for (size_t i = 0; i < want; i++)
            if (i >= n_ids || ids[i] != b.tokens[i]) {
                fprintf(stderr, "llamacpp_ppl: llama.cpp's token %zu of %s is not the base's\n", i,
                        text);
                return 1;
            }
        fprintf(stderr, "llamacpp_ppl: llama.cpp tokenizes %s to the base's %zu tokens\n", text,
                want);
        lcpp_vocab_free(voc);
        free(buf);
    }

    lcpp_model *m;
    if (lcpp_model_open_bench(&m, model, (uint32_t)n_ctx, (uint32_t)n_ctx, (int32_t)threads, err,
                              sizeof err) < 0) {
        fprintf(stderr, "llamacpp_ppl: %s\n", err);
        return 1;
    }
    if (lcpp_model_n_vocab(m) != b.n_vocab) {
        fprintf(stderr, "llamacpp_ppl: the model has %d tokens, the base %d\n",
                (int)lcpp_model_n_vocab(m), (int)b.n_vocab);
        return 1;
    }
    char variant[64];
    lcpp_cpu_variant(variant, sizeof variant);
    fprintf(stderr, "llamacpp_ppl: CPU backend llama.cpp:%s\n", variant);
    const int32_t bos = lcpp_model_window_bos(m);
    FILE *out = NULL;
    if (out_path) {
        const int32_t h[3] = {n_ctx, b.n_vocab, n_chunk};
        out = fopen(out_path, "wb");
        if (!out || fwrite("_logits_", 1, 8, out) != 8 || fwrite(h, 4, 3, out) != 3 ||
            fwrite(b.tokens, 4, (size_t)n_ctx * (size_t)n_chunk, out) !=
                (size_t)n_ctx * (size_t)n_chunk) {
            fprintf(stderr, "llamacpp_ppl: cannot write %s: %s\n", out_path, strerror(errno));
            return 1;
        }
    }
    int32_t *win = malloc((size_t)n_ctx * sizeof *win), *pos = malloc((size_t)n_ctx * sizeof *pos);
    int32_t *seq = calloc((size_t)n_ctx, sizeof *seq);
    uint16_t *qrows = malloc((size_t)rows * ru * sizeof *qrows);
    if (!win || !pos || !seq || !qrows) {
        fprintf(stderr, "llamacpp_ppl: out of memory\n");
        return 1;
    }
    sums s = {0};
    double nll = 0, nll2 = 0;
    long count = 0;
    for (int32_t w = 0; w < n_chunk; w++) {
        memcpy(win, b.tokens + (size_t)w * (size_t)n_ctx, (size_t)n_ctx * sizeof *win);
        if (bos >= 0) win[0] = bos;
        for (int32_t j = 0; j < n_ctx; j++)
            pos[j] = j;
        if (!out && fread(qrows, ru * sizeof *qrows, (size_t)rows, b.f) != (size_t)rows) {
            fprintf(stderr, "llamacpp_ppl: %s is shorter than its header says\n", base_path);
            return 1;
        }
        lcpp_model_clear(m);
        if (lcpp_model_decode_multi(m, win, pos, seq, n_ctx, true) < 0) {
            fprintf(stderr, "llamacpp_ppl: llama_decode failed on window %d\n", (int)w + 1);
            return 1;
        }
        for (int32_t j = first; j < n_ctx - 1; j++) {
            const float *x = lcpp_model_logits(m, j);
            const int32_t next = b.tokens[(size_t)w * (size_t)n_ctx + (size_t)j + 1];
            uint16_t *row = qrows + (size_t)(j - first) * ru;
            if (!x) {
                fprintf(stderr, "llamacpp_ppl: no logits for position %d\n", (int)j);
                return 1;
            }
            if (out) {
                float max;
                int32_t top;
                double lse;
                norm(x, b.n_vocab, &max, &top, &lse);
                const double v = max + lse - x[next];
                nll += v, nll2 += v * v, count++;
                memset(row, 0, ru * sizeof *row);
                store_row(x, b.n_vocab, row);
            } else {
                compare(x, b.n_vocab, row, next, &s);
            }
        }
        if (out && fwrite(qrows, ru * sizeof *qrows, (size_t)rows, out) != (size_t)rows) {
            fprintf(stderr, "llamacpp_ppl: cannot write %s: %s\n", out_path, strerror(errno));
            return 1;
        }
    }
    if (out) {
        if (fclose(out) != 0) {
            fprintf(stderr, "llamacpp_ppl: cannot write %s: %s\n", out_path, strerror(errno));
            return 1;
        }
        double mean, unc;
        mean_unc(nll, nll2, count, &mean, &unc);
        printf("Final estimate: PPL = %.4f +/- %.5f\n", exp(mean), exp(mean) * unc);
    } else {
        double kl, kl_u, lq, lq_u, lb, lb_u, mse, mse_u;
        mean_unc(s.kld, s.kld2, s.n, &kl, &kl_u);
        mean_unc(s.nll, s.nll2, s.n, &lq, &lq_u);
        mean_unc(s.nll_b, s.nll_b2, s.n, &lb, &lb_u);
        mean_unc(s.dp2, s.dp4, s.n, &mse, &mse_u);
        printf("llamacpp_ppl: mean KLD %.9g ± %.3g, same top p %.9g, PPL(Q) %.9g, PPL(base) "
               "%.9g, RMS dp %.9g, over %ld positions\n",
               kl, kl_u, (double)s.same / (double)s.n, exp(lq), exp(lb), sqrt(mse), s.n);
    }
    lcpp_model_free(m);
    fclose(b.f);
    free(b.tokens), free(win), free(pos), free(seq), free(qrows);
    return 0;
}
