/*
 * `catena perplexity`: the perplexity of a model on a text, and the KL divergence of one
 * model's next-token distributions from another's, as llama.cpp's llama-perplexity computes
 * them (its perplexity() and kl_divergence()), so the numbers can be set side by side:
 *
 *   - the text is tokenized with BOS as the vocabulary says and cut into windows of n_ctx
 *     tokens (as many whole ones as fit, or --chunks); each window runs from an empty KV
 *     cache with its first token replaced by BOS when the vocabulary adds one;
 *   - the second half of a window is scored: the logits at positions j in
 *     [n_ctx/2, n_ctx - 1) predict token j + 1, nll = -log softmax(logits_j)[tok_{j+1}]
 *     (the exponentials in float, their sum and the logarithm in double); PPL = exp(mean
 *     nll), with the uncertainty ppl * sqrt((mean nll^2 - mean nll^2) / (count - 1));
 *   - --kl-divergence-base FILE alone writes each scored position's log-probabilities to
 *     FILE in llama.cpp's format (docs/perplexity.md), which llama-perplexity reads too;
 *     with --kl-divergence the file is read back and this model is compared with it: PPL
 *     of both, ln(PPL(Q)/PPL(base)), KL(base || Q) per position, the change of the
 *     probability of the right token (Δp), and how often the most likely token is the same.
 *
 * The per-position arithmetic follows llama.cpp's definitions (KLD over the base's tokens
 * with log-probability above -16, the base's argmax taken from its stored values), so the
 * same two models give the same statistics in both programs.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "forward.h"
#include "model.h"
#include "settings.h"

#define CMD "catena perplexity: "

/* llama.cpp's default context for perplexity. */
#define DEFAULT_CTX 512
/* Tokens per forward pass: a window longer than this runs in several passes. */
#define MAX_BATCH 512
/* The base file's first bytes (llama.cpp's). */
static const char BASE_MAGIC[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};
#define BASE_HEADER_BYTES (8 + 3 * 4)

static int usage(FILE *f) {
    fprintf(f,
            "usage: catena perplexity -m MODEL.gguf -f TEXT [options]\n"
            "  Perplexity of MODEL on TEXT as llama.cpp's llama-perplexity computes it: the\n"
            "  text is tokenized with BOS and cut into windows of N tokens, each run from an\n"
            "  empty cache with its first token replaced by BOS, and the second half of each\n"
            "  window is scored. Prints the running PPL per window and the final estimate.\n"
            "  -f, --file FILE              the text (- for stdin)\n"
            "  -c, --ctx N                  tokens per window (default %d, at most the\n"
            "                               model's context)\n"
            "  -t, --threads N              threads (default: all CPUs this process may use)\n"
            "  --chunks N                   at most N windows (default: all that fit)\n"
            "  --kl-divergence-base FILE    write the log-probabilities of every scored token\n"
            "                               to FILE (llama.cpp's format); with --kl-divergence,\n"
            "                               read them instead\n"
            "  --kl-divergence              compare MODEL with the base FILE on its tokens\n"
            "                               (-f is then optional: given, its tokens must be the\n"
            "                               file's): KL divergence, Δp, same top token, PPL\n"
            "  --kv-f32                     keep the KV cache in F32 (default F16)\n"
            "  --f32-act                    exact products: F32 activations against the\n"
            "                               dequantized weights (default: activations\n"
            "                               converted to Q8_0 / Q8_K / F16, as llama.cpp does)\n"
            "  -v, --verbose                timings, and the statistics with more digits\n",
            DEFAULT_CTX);
    return f == stderr ? 2 : 0;
}

typedef struct {
    const char *model, *text_file, *base;
    bool kld, kv_f32, f32_act, verbose;
    long chunks;      /* -1: all */
    ctn_settings set; /* ctx, threads */
} options;

static const struct {
    const char *flag, *flag2, *key;
} setting_flags[] = {
    {"-c", "--ctx", "ctx"},
    {"--ctx-size", NULL, "ctx"}, /* llama.cpp's name */
    {"-t", "--threads", "threads"},
};

/* Parses argv into o; returns -1 after printing a usage error, 1 for --help, else 0. */
static int parse_args(int argc, char **argv, options *o) {
    ctn_settings_init(&o->set);
    o->chunks = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        const char *key = NULL;
        for (size_t k = 0; k < sizeof setting_flags / sizeof setting_flags[0]; k++)
            if (!strcmp(a, setting_flags[k].flag) ||
                (setting_flags[k].flag2 != NULL && !strcmp(a, setting_flags[k].flag2)))
                key = setting_flags[k].key;
        bool used = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            return 1;
        } else if (!strcmp(a, "--kl-divergence")) {
            o->kld = true, used = false;
        } else if (!strcmp(a, "--kv-f32")) {
            o->kv_f32 = true, used = false;
        } else if (!strcmp(a, "--f32-act")) {
            o->f32_act = true, used = false;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = true, used = false;
        } else if (val == NULL) {
            fprintf(stderr, CMD "unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return -1;
        } else if (key != NULL) {
            char err[512];
            if (ctn_settings_parse(&o->set, key, val, err, sizeof err) < 0) {
                fprintf(stderr, CMD "bad value '%s' for %s: %s\n", val, a, err);
                return -1;
            }
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o->model = val;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            o->text_file = val;
        } else if (!strcmp(a, "--kl-divergence-base")) {
            o->base = val;
        } else if (!strcmp(a, "--chunks")) {
            if (ctn__cli_parse_long(val, 1, INT32_MAX, &o->chunks) < 0) {
                fprintf(stderr,
                        CMD "bad value '%s' for --chunks: a whole number of windows, 1 "
                            "or more\n",
                        val);
                return -1;
            }
        } else {
            fprintf(stderr, CMD "unknown argument '%s'\n", a);
            usage(stderr);
            return -1;
        }
        if (used) i++;
    }
    if (o->model == NULL) {
        fprintf(stderr, CMD "no model given (-m MODEL.gguf)\n");
        usage(stderr);
        return -1;
    }
    if (o->kld && o->base == NULL) {
        fprintf(stderr, CMD "--kl-divergence needs the base log-probabilities "
                            "(--kl-divergence-base FILE, written by a run without "
                            "--kl-divergence)\n");
        return -1;
    }
    if (!o->kld && o->text_file == NULL) {
        fprintf(stderr, CMD "no text given (-f FILE)\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

/* ---- the base file ------------------------------------------------------------------- */

/*
 * llama.cpp's layout (llama-perplexity --kl-divergence-base), in host byte order:
 *   "_logits_", int32 n_ctx, int32 n_vocab, int32 n_chunk,
 *   int32 tokens[n_chunk * n_ctx]          the text's tokens (the first not replaced by BOS),
 *   then per window, per scored position (n_ctx - 1 - n_ctx/2 of them), a row of
 *   row_u16 = 2 * ((n_vocab + 1) / 2) + 4 uint16: float scale, float min_lp, then per token
 *   q such that its log-probability is min_lp + scale * q (0 for those more than 16 below
 *   the largest logit).
 */
typedef struct {
    const char *path;
    FILE *f;
    int32_t n_ctx, n_vocab, n_chunk;
    int32_t *tokens; /* (n_chunk * n_ctx) */
    int64_t row_u16; /* uint16 per row */
} base_file;

static int64_t rows_per_window(int64_t n_ctx) {
    return n_ctx - 1 - n_ctx / 2;
}

static int64_t row_u16_of(int64_t n_vocab) {
    return 2 * ((n_vocab + 1) / 2) + 4;
}

static void base_close(base_file *b) {
    if (b->f != NULL) fclose(b->f);
    free(b->tokens);
    b->f = NULL;
    b->tokens = NULL;
}

/*
 * Opens a base file to read, checks its header and size against the model, and reads its
 * tokens. 0, or 1 after printing what is wrong with it.
 */
static int base_open(base_file *b, const char *path, const ctn_model *m) {
    memset(b, 0, sizeof *b);
    b->path = path;
    b->f = fopen(path, "rb");
    if (b->f == NULL) {
        fprintf(stderr, CMD "opening the base %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fileno(b->f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, CMD "the base %s is not a regular file\n", path);
        goto bad;
    }
    unsigned char hdr[BASE_HEADER_BYTES];
    if (fread(hdr, 1, sizeof hdr, b->f) != sizeof hdr || memcmp(hdr, BASE_MAGIC, 8) != 0) {
        fprintf(stderr,
                CMD "%s is not a file of base log-probabilities (it does not start with "
                    "\"_logits_\"; write one with --kl-divergence-base FILE and no "
                    "--kl-divergence)\n",
                path);
        goto bad;
    }
    memcpy(&b->n_ctx, hdr + 8, 4);
    memcpy(&b->n_vocab, hdr + 12, 4);
    memcpy(&b->n_chunk, hdr + 16, 4);
    if (b->n_ctx < 3 || b->n_vocab < 1 || b->n_chunk < 1 || b->n_ctx > (1 << 24)) {
        fprintf(stderr,
                CMD "the base %s has an impossible header: windows of %" PRId32 " tokens, %" PRId32
                    " tokens in the vocabulary, %" PRId32 " windows\n",
                path, b->n_ctx, b->n_vocab, b->n_chunk);
        goto bad;
    }
    if (b->n_vocab != m->hp.n_vocab) {
        fprintf(stderr,
                CMD "the base %s holds log-probabilities over %" PRId32
                    " tokens, the model has %" PRId64 " (another vocabulary)\n",
                path, b->n_vocab, m->hp.n_vocab);
        goto bad;
    }
    b->row_u16 = row_u16_of(b->n_vocab);
    /* Sizes in double first: a hostile header must not overflow the exact sum. */
    const double approx = BASE_HEADER_BYTES + 4.0 * b->n_chunk * b->n_ctx +
                          2.0 * b->n_chunk * (double)rows_per_window(b->n_ctx) * b->row_u16;
    const uint64_t want = approx > 9e18
                              ? UINT64_MAX
                              : BASE_HEADER_BYTES + 4 * (uint64_t)b->n_chunk * (uint64_t)b->n_ctx +
                                    2 * (uint64_t)b->n_chunk * (uint64_t)rows_per_window(b->n_ctx) *
                                        (uint64_t)b->row_u16;
    if ((uint64_t)st.st_size != want) {
        fprintf(stderr,
                CMD "the base %s is %lld bytes; %" PRId32 " windows of %" PRId32
                    " tokens over a vocabulary of %" PRId32 " take %" PRIu64
                    " bytes (a truncated or damaged file)\n",
                path, (long long)st.st_size, b->n_chunk, b->n_ctx, b->n_vocab, want);
        goto bad;
    }
    const size_t n_tok = (size_t)b->n_chunk * (size_t)b->n_ctx;
    b->tokens = malloc(n_tok * sizeof *b->tokens);
    if (b->tokens == NULL) {
        fprintf(stderr, CMD "out of memory for the %zu tokens of %s\n", n_tok, path);
        goto bad;
    }
    if (fread(b->tokens, sizeof *b->tokens, n_tok, b->f) != n_tok) {
        fprintf(stderr, CMD "reading the tokens of the base %s: %s\n", path,
                ferror(b->f) ? strerror(errno) : "the file is shorter than it was");
        goto bad;
    }
    for (size_t i = 0; i < n_tok; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= b->n_vocab) {
            fprintf(stderr,
                    CMD "the base %s: token %zu is %" PRId32 ", outside the vocabulary (0..%" PRId32
                        ")\n",
                    path, i, b->tokens[i], b->n_vocab - 1);
            goto bad;
        }
    return 0;
bad:
    base_close(b);
    return 1;
}

/* ---- one position ------------------------------------------------------------------- */

typedef struct {
    float max;   /* the largest logit */
    int32_t top; /* its first index */
    double lse;  /* log sum exp(logit - max) */
} row_norm;

/* The softmax's normaliser as llama.cpp computes it: exp in float, the sum in double. */
static row_norm normalise(const float *row, int64_t n) {
    row_norm r = {row[0], 0, 0};
    for (int64_t i = 1; i < n; i++)
        if (row[i] > r.max) r.max = row[i], r.top = (int32_t)i;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += expf(row[i] - r.max);
    r.lse = log(sum);
    return r;
}

/*
 * A row's log-probabilities in the base file's form (see base_file): the logits within 16
 * of the largest are stored as 16-bit steps above that floor, rounded to nearest.
 */
static void quantize_row(const float *row, int64_t n, const row_norm *r, uint16_t *out) {
    float lo = row[0];
    for (int64_t i = 1; i < n; i++)
        if (row[i] < lo) lo = row[i];
    if (lo < r->max - 16) lo = r->max - 16;
    const float lse = (float)r->lse;
    const float min_lp = lo - r->max - lse;
    const float scale = (r->max - lo) / 65535.0f;
    memcpy(out, &scale, 4);
    memcpy(out + 2, &min_lp, 4);
    uint16_t *q = out + 4;
    if (scale == 0) {
        memset(q, 0, (size_t)n * sizeof *q);
        return;
    }
    const float inv = 1 / scale;
    for (int64_t i = 0; i < n; i++) {
        long v = row[i] > lo ? lrintf(inv * (row[i] - lo)) : 0;
        q[i] = (uint16_t)(v > 65535 ? 65535 : v);
    }
}

/* Sums over the scored positions of a comparison (llama.cpp's kl_divergence_result). */
typedef struct {
    double nll, nll2, nll_base, nll_base2, nll_nll_base;
    double kld, kld2;
    double dp, dp2, dp4;
    int64_t same_top, count;
} kl_sums;

/*
 * Compares one position: row (this model's logits) against base (a stored row) for the
 * right token tok; adds to s and returns the position's KLD and Δp.
 */
static void compare_row(const float *row, int64_t n, const uint16_t *base, int32_t tok, kl_sums *s,
                        float *kld_out, float *dp_out) {
    const row_norm r = normalise(row, n);
    float scale, min_lp;
    memcpy(&scale, base, 4);
    memcpy(&min_lp, base + 2, 4);
    const uint16_t *q = base + 4;
    const double nll = (double)r.max + r.lse - (double)row[tok];
    const double nll_base = -(double)(scale * q[tok] + min_lp);
    s->nll += nll, s->nll2 += nll * nll;
    s->nll_base += nll_base, s->nll_base2 += nll_base * nll_base;
    s->nll_nll_base += nll * nll_base;
    /* KL(base || Q) over the base's tokens that carry any weight (log p > -16). */
    const double shift = (double)r.max + r.lse;
    double kld = 0;
    int32_t top_base = 0;
    float lp_top = 0;
    for (int64_t i = 0; i < n; i++) {
        const float lp = scale * q[i] + min_lp;
        if (i == 0 || lp > lp_top) lp_top = lp, top_base = (int32_t)i;
        if (lp > -16.0f) kld += (double)expf(lp) * ((double)lp - ((double)row[i] - shift));
    }
    s->kld += kld, s->kld2 += kld * kld;
    s->count++;
    if (r.top == top_base) s->same_top++;
    const double dp = exp(-nll) - exp(-nll_base);
    s->dp += dp, s->dp2 += dp * dp, s->dp4 += dp * dp * dp * dp;
    *kld_out = (float)kld;
    *dp_out = (float)dp;
}

/* ---- statistics ---------------------------------------------------------------------- */

typedef struct {
    double mean, unc;
} estimate;

/* A mean and its standard error; no error below 11 values (as llama.cpp). */
static estimate mean_unc(double sum, double sum2, int64_t n) {
    if (n < 1) return (estimate){0, 0};
    const double m = sum / (double)n;
    const double var = sum2 / (double)n - m * m;
    return (estimate){m, var > 0 && n > 10 ? sqrt(var / (double)(n - 1)) : 0};
}

/* The covariance of two means (as llama.cpp: 0 below 10 values). */
static double mean_cov(double sa, double sb, double sab, int64_t n) {
    if (n < 10) return 0;
    return (sab / (double)n - (sa / (double)n) * (sb / (double)n)) / (double)(n - 1);
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The fraction-th value of sorted v[0..n), interpolated linearly between neighbours. */
static float percentile(const float *v, size_t n, float fraction) {
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    const size_t i = (size_t)p;
    p -= (float)i;
    return (1 - p) * v[i] + p * v[i + 1 < n ? i + 1 : n - 1];
}

static float median(const float *v, size_t n) {
    return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
}

/* One line of the per-window table, from the sums so far. */
static void print_window_line(int64_t w, const kl_sums *s) {
    const estimate lq = mean_unc(s->nll, s->nll2, s->count);
    const estimate lb = mean_unc(s->nll_base, s->nll_base2, s->count);
    const double cov = mean_cov(s->nll, s->nll_base, s->nll_nll_base, s->count);
    const double ppl = exp(lq.mean);
    const double ratio_unc = sqrt(lq.unc * lq.unc + lb.unc * lb.unc - 2 * cov);
    const estimate kl = mean_unc(s->kld, s->kld2, s->count);
    const estimate mse = mean_unc(s->dp2, s->dp4, s->count);
    const double rms = sqrt(mse.mean), rms_unc = rms > 0 ? 0.5 / rms * mse.unc : 0;
    const double top = (double)s->same_top / (double)s->count;
    const double top_unc = s->count > 1 ? sqrt(top * (1 - top) / (double)(s->count - 1)) : 0;
    printf("%4" PRId64 "    %9.4f ± %9.4f    %10.5f ± %10.5f    %10.5f ± %10.5f    %6.3f ± "
           "%6.3f %%    %6.3f ± %6.3f %%\n",
           w, ppl, ppl * lq.unc, lq.mean - lb.mean, ratio_unc, kl.mean, kl.unc, 100 * rms,
           100 * rms_unc, 100 * top, 100 * top_unc);
}

/* The closing statistics of a comparison; kld and dp are sorted here. */
static void print_kl_stats(const kl_sums *s, float *kld, float *dp, bool verbose) {
    const size_t n = (size_t)s->count;
    qsort(kld, n, sizeof *kld, cmp_float);
    qsort(dp, n, sizeof *dp, cmp_float);
    const estimate lq = mean_unc(s->nll, s->nll2, s->count);
    const estimate lb = mean_unc(s->nll_base, s->nll_base2, s->count);
    const double cov = mean_cov(s->nll, s->nll_base, s->nll_nll_base, s->count);
    const double ppl = exp(lq.mean), ppl_unc = ppl * lq.unc;
    const double ppl_b = exp(lb.mean), ppl_b_unc = ppl_b * lb.unc;
    if (n < 100)
        printf("(only %zu positions scored: llama.cpp prints no statistics below 100)\n", n);
    printf("====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f ± %10.6f\n", ppl, ppl_unc);
    printf("Mean PPL(base)                : %10.6f ± %10.6f\n", ppl_b, ppl_b_unc);
    const double cor = lq.unc * lb.unc > 0 ? cov / (lq.unc * lb.unc) : NAN;
    printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100 * cor);
    const double lr = lq.mean - lb.mean;
    const double lr_unc = sqrt(lq.unc * lq.unc + lb.unc * lb.unc - 2 * cov);
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", lr, lr_unc);
    printf("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", exp(lr), exp(lr) * lr_unc);
    const double pcov = ppl * ppl_b * cov;
    printf("Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", ppl - ppl_b,
           sqrt(ppl_unc * ppl_unc + ppl_b_unc * ppl_b_unc - 2 * pcov));
    printf("\n====== KL divergence statistics ======\n");
    const estimate kl = mean_unc(s->kld, s->kld2, s->count);
    printf("Mean    KLD: %10.6f ± %10.6f\n", kl.mean, kl.unc);
    printf("Maximum KLD: %10.6f\n", kld[n - 1]);
    static const struct {
        const char *label;
        float f;
    } kq[] = {{"99.9%", 0.999f}, {"99.0%", 0.990f}, {"95.0%", 0.950f},
              {"90.0%", 0.900f}, {NULL, 0.5f},      {"10.0%", 0.100f},
              {" 5.0%", 0.050f}, {" 1.0%", 0.010f}, {" 0.1%", 0.001f}};
    for (size_t i = 0; i < sizeof kq / sizeof *kq; i++) {
        if (kq[i].label == NULL)
            printf("Median  KLD: %10.6f\n", median(kld, n));
        else
            printf("%s   KLD: %10.6f\n", kq[i].label, percentile(kld, n, kq[i].f));
    }
    printf("Minimum KLD: %10.6f\n", kld[0]);
    printf("\n====== Token probability statistics ======\n");
    const estimate mdp = mean_unc(s->dp, s->dp2, s->count);
    printf("Mean    Δp: %6.3f ± %5.3f %%\n", 100 * mdp.mean, 100 * mdp.unc);
    printf("Maximum Δp: %6.3f%%\n", 100 * dp[n - 1]);
    static const struct {
        const char *label;
        float f;
    } pq[] = {{"99.9%", 0.999f}, {"99.0%", 0.990f}, {"95.0%", 0.950f}, {"90.0%", 0.900f},
              {"75.0%", 0.750f}, {NULL, 0.5f},      {"25.0%", 0.250f}, {"10.0%", 0.100f},
              {" 5.0%", 0.050f}, {" 1.0%", 0.010f}, {" 0.1%", 0.001f}};
    for (size_t i = 0; i < sizeof pq / sizeof *pq; i++) {
        if (pq[i].label == NULL)
            printf("Median  Δp: %6.3f%%\n", 100 * median(dp, n));
        else
            printf("%s   Δp: %6.3f%%\n", pq[i].label, 100 * percentile(dp, n, pq[i].f));
    }
    printf("Minimum Δp: %6.3f%%\n", 100 * dp[0]);
    const estimate mse = mean_unc(s->dp2, s->dp4, s->count);
    const double rms = sqrt(mse.mean);
    printf("RMS Δp    : %6.3f ± %5.3f %%\n", 100 * rms, rms > 0 ? 100 * 0.5 / rms * mse.unc : 0);
    const double top = (double)s->same_top / (double)s->count;
    printf("Same top p: %6.3f ± %5.3f %%\n", 100 * top,
           n > 1 ? 100 * sqrt(top * (1 - top) / (double)(n - 1)) : 0);
    if (verbose)
        fprintf(stderr,
                CMD "mean KLD %.9g ± %.3g, same top p %.9g, PPL(Q) %.9g, PPL(base) %.9g, "
                    "RMS dp %.9g, over %zu positions\n",
                kl.mean, kl.unc, top, ppl, ppl_b, rms, n);
}

/* ---- running the windows ------------------------------------------------------------- */

typedef struct {
    const options *o;
    const ctn_model *m;
    ctn_fwd *f;
    int64_t n_ctx, n_vocab, n_batch, n_chunk;
    int32_t bos;           /* replaces each window's first token, or -1 */
    const int32_t *tokens; /* (n_chunk * n_ctx) */
    int32_t *win;          /* (n_ctx) the window as it is run */
    float *logits;         /* (rows_cap, n_vocab) one pass's scored rows */
    int64_t rows_cap;
    uint16_t *qrows; /* (rows_per_window, row_u16) a window's stored rows */
    FILE *out;       /* the base being written, or NULL */
    base_file *in;   /* the base being read, or NULL */
    double nll, nll2;
    int64_t count;
    kl_sums kl;
    float *kld, *dp; /* (n_chunk * rows_per_window) */
} run_state;

/* Scores the row of position j of window w (logits predicting token j + 1). */
static void score_row(run_state *s, int64_t w, int64_t j, const float *row) {
    const int64_t first = s->n_ctx / 2;
    const int32_t next = s->tokens[w * s->n_ctx + j + 1];
    if (s->in != NULL) {
        const uint16_t *base = s->qrows + (size_t)(j - first) * (size_t)row_u16_of(s->n_vocab);
        const size_t k = (size_t)s->kl.count;
        compare_row(row, s->n_vocab, base, next, &s->kl, &s->kld[k], &s->dp[k]);
        return;
    }
    const row_norm r = normalise(row, s->n_vocab);
    const double nll = (double)r.max + r.lse - (double)row[next];
    s->nll += nll, s->nll2 += nll * nll;
    s->count++;
    if (s->out != NULL) {
        uint16_t *q = s->qrows + (size_t)(j - first) * (size_t)row_u16_of(s->n_vocab);
        const int64_t ru = row_u16_of(s->n_vocab);
        quantize_row(row, s->n_vocab, &r, q);
        if (ru > s->n_vocab + 4) q[ru - 1] = 0; /* the padding of an odd vocabulary */
    }
}

/* Runs window w from an empty cache, scoring its second half. 0 or 1 (printed). */
static int run_window(run_state *s, int64_t w) {
    const int64_t n_ctx = s->n_ctx, first = n_ctx / 2, rows = rows_per_window(n_ctx);
    const size_t ru = (size_t)row_u16_of(s->n_vocab);
    memcpy(s->win, s->tokens + w * n_ctx, (size_t)n_ctx * sizeof *s->win);
    if (s->bos >= 0) s->win[0] = s->bos;
    if (s->in != NULL &&
        fread(s->qrows, ru * sizeof *s->qrows, (size_t)rows, s->in->f) != (size_t)rows) {
        fprintf(stderr, CMD "reading window %" PRId64 " of the base %s: %s\n", w + 1, s->in->path,
                ferror(s->in->f) ? strerror(errno) : "the file is shorter");
        return 1;
    }
    ctn_kv_seq seq;
    if (ctn_fwd_seq_init(s->f, &seq) < 0) {
        fprintf(stderr, CMD "out of memory for the KV cache\n");
        return 1;
    }
    int status = 0;
    for (int64_t b0 = 0; b0 < n_ctx; b0 += s->n_batch) {
        const int64_t b1 = b0 + s->n_batch < n_ctx ? b0 + s->n_batch : n_ctx;
        const int64_t lo = b0 > first ? b0 : first; /* the first position wanted here */
        const int64_t n_rows = b1 > lo ? b1 - lo : 0;
        ctn_fwd_seg seg = {
            .seq = &seq, .tokens = s->win + b0, .n_tokens = b1 - b0, .n_logits = n_rows};
        const int rc = ctn_fwd_run(s->f, &seg, 1, n_rows > 0 ? s->logits : NULL);
        if (rc < 0) {
            fprintf(stderr, CMD "window %" PRId64 ": %s\n", w + 1, ctn_fwd_errmsg(s->f));
            status = 1;
            break;
        }
        /* The window's last position predicts nothing inside it. */
        for (int64_t j = lo; j < b1 && j < n_ctx - 1; j++)
            score_row(s, w, j, s->logits + (size_t)(j - lo) * (size_t)s->n_vocab);
    }
    ctn_fwd_seq_close(s->f, &seq);
    if (status == 0 && s->out != NULL &&
        fwrite(s->qrows, ru * sizeof *s->qrows, (size_t)rows, s->out) != (size_t)rows) {
        fprintf(stderr, CMD "writing the base %s: %s\n", s->o->base, strerror(errno));
        return 1;
    }
    return status;
}

/* Whether windows of n_ctx tokens can run on m; false after saying why not. */
static bool ctx_fits(int64_t n_ctx, const ctn_model *m, const char *path) {
    if (n_ctx > m->hp.n_ctx_train) {
        fprintf(stderr,
                CMD "a context of %" PRId64 " is beyond the model's %" PRId64
                    " (%s; lower --ctx)\n",
                n_ctx, m->hp.n_ctx_train, path);
        return false;
    }
    if (n_ctx < 3) {
        fprintf(stderr,
                CMD "a context of %" PRId64 " is too small: a window scores its second half, "
                    "so it needs at least 3 tokens\n",
                n_ctx);
        return false;
    }
    return true;
}

/* Reads the text and tokenizes it with BOS as the vocabulary says. 0 or 1 (printed). */
static int read_tokens(const char *path, const ctn_vocab *v, int32_t **toks, size_t *n) {
    FILE *tf = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    char *text = NULL;
    size_t len = 0;
    const int frc = tf == NULL ? CTN_EIO : ctn__cli_read_all(tf, &text, &len);
    const int open_errno = errno;
    if (tf != NULL && tf != stdin) fclose(tf);
    if (frc < 0) {
        fprintf(stderr, CMD "reading the text from %s: %s\n", path,
                tf == NULL ? strerror(open_errno) : ctn_strerror(frc));
        return 1;
    }
    if (len == 0) {
        fprintf(stderr, CMD "the text in %s is empty\n", path);
        free(text);
        return 1;
    }
    const int rc = ctn_tokenize(v, text, len, true, false, toks, n);
    free(text);
    if (rc < 0) {
        fprintf(stderr, CMD "tokenizing %s: %s\n", path, ctn_strerror(rc));
        return 1;
    }
    return 0;
}

static int perplexity(const options *o) {
    ctn_gguf *g = NULL;
    ctn_vocab *v = NULL;
    ctn_model *m = NULL;
    int32_t *text_toks = NULL;
    size_t n_text = 0;
    base_file in = {0};
    run_state s = {.o = o, .bos = -1};
    char err[512];
    int status = 1;
    bool wrote = false;

    if (ctn__cli_load_vocab("perplexity", o->model, &g, &v)) return 1;
    if (ctn_model_load(&m, g, err, sizeof err) < 0) {
        fprintf(stderr, CMD "%s\n", err);
        goto done;
    }
    s.m = m;
    s.n_vocab = m->hp.n_vocab;
    if (o->text_file != NULL && read_tokens(o->text_file, v, &text_toks, &n_text)) goto done;
    const bool ctx_given = (o->set.given >> CTN_SET_CTX) & 1;
    const int64_t n_train = m->hp.n_ctx_train;

    if (o->kld) {
        if (base_open(&in, o->base, m)) goto done;
        if (ctx_given && o->set.ctx != in.n_ctx) {
            fprintf(stderr,
                    CMD "the base %s was made with windows of %" PRId32
                        " tokens, not --ctx %" PRId64 " (leave --ctx out to use the base's)\n",
                    o->base, in.n_ctx, o->set.ctx);
            goto done;
        }
        s.n_ctx = in.n_ctx;
        s.n_chunk = o->chunks > 0 && o->chunks < in.n_chunk ? o->chunks : in.n_chunk;
        s.tokens = in.tokens;
        s.in = &in;
        if (text_toks != NULL) {
            const size_t want = (size_t)in.n_chunk * (size_t)in.n_ctx;
            if (n_text < want) {
                fprintf(stderr,
                        CMD "%s tokenizes to %zu tokens; the base %s holds %zu (%" PRId32
                            " windows of %" PRId32 "): another text\n",
                        o->text_file, n_text, o->base, want, in.n_chunk, in.n_ctx);
                goto done;
            }
            for (size_t i = 0; i < want; i++)
                if (text_toks[i] != in.tokens[i]) {
                    fprintf(stderr,
                            CMD "token %zu of %s is %" PRId32 ", the base %s has %" PRId32
                                " there (another text or tokenizer)\n",
                            i, o->text_file, text_toks[i], o->base, in.tokens[i]);
                    goto done;
                }
        }
    } else {
        s.n_ctx = ctx_given ? o->set.ctx : DEFAULT_CTX < n_train ? DEFAULT_CTX : n_train;
        if (!ctx_fits(s.n_ctx, m, o->model)) goto done;
        if ((int64_t)n_text < 2 * s.n_ctx) {
            fprintf(stderr,
                    CMD "%s tokenizes to only %zu tokens; a context of %" PRId64
                        " needs at least %" PRId64 " (give more text or a smaller --ctx)\n",
                    o->text_file, n_text, s.n_ctx, 2 * s.n_ctx);
            goto done;
        }
        s.n_chunk = (int64_t)n_text / s.n_ctx;
        if (o->chunks > 0 && o->chunks < s.n_chunk) s.n_chunk = o->chunks;
        s.tokens = text_toks;
    }
    if (o->kld && !ctx_fits(s.n_ctx, m, o->model)) goto done;
    if (ctn_vocab_add_bos(v) && ctn_vocab_bos(v) >= 0) s.bos = ctn_vocab_bos(v);

    const int64_t rows = rows_per_window(s.n_ctx);
    s.n_batch = s.n_ctx < MAX_BATCH ? s.n_ctx : MAX_BATCH;
    s.rows_cap = s.n_ctx - s.n_ctx / 2 < s.n_batch ? s.n_ctx - s.n_ctx / 2 : s.n_batch;
    s.win = malloc((size_t)s.n_ctx * sizeof *s.win);
    s.logits = malloc((size_t)s.rows_cap * (size_t)s.n_vocab * sizeof *s.logits);
    if (o->kld || o->base != NULL)
        s.qrows = malloc((size_t)rows * (size_t)row_u16_of(s.n_vocab) * sizeof *s.qrows);
    if (o->kld) {
        s.kld = malloc((size_t)(s.n_chunk * rows) * sizeof *s.kld);
        s.dp = malloc((size_t)(s.n_chunk * rows) * sizeof *s.dp);
    }
    if (s.win == NULL || s.logits == NULL || ((o->kld || o->base) && s.qrows == NULL) ||
        (o->kld && (s.kld == NULL || s.dp == NULL))) {
        fprintf(stderr, CMD "out of memory for windows of %" PRId64 " tokens\n", s.n_ctx);
        goto done;
    }
    ctn_fwd_params fp = {.n_threads = o->set.threads,
                         .n_ctx = s.n_ctx,
                         .n_batch = s.n_batch,
                         .kv_f32 = o->kv_f32,
                         .f32_act = o->f32_act};
    if (ctn_fwd_new(&s.f, m, &fp, err, sizeof err) < 0) {
        fprintf(stderr, CMD "%s\n", err);
        goto done;
    }
    if (!o->kld && o->base != NULL) {
        s.out = fopen(o->base, "wb");
        if (s.out == NULL) {
            fprintf(stderr, CMD "opening the base %s to write: %s\n", o->base, strerror(errno));
            goto done;
        }
        wrote = true;
        const int32_t hdr[3] = {(int32_t)s.n_ctx, (int32_t)s.n_vocab, (int32_t)s.n_chunk};
        const size_t n_tok = (size_t)(s.n_chunk * s.n_ctx);
        if (fwrite(BASE_MAGIC, 1, 8, s.out) != 8 || fwrite(hdr, 4, 3, s.out) != 3 ||
            fwrite(s.tokens, sizeof *s.tokens, n_tok, s.out) != n_tok) {
            fprintf(stderr, CMD "writing the base %s: %s\n", o->base, strerror(errno));
            goto done;
        }
    }
    fprintf(stderr,
            CMD "%s: %zu tokens; %" PRId64 " windows of %" PRId64 " tokens, %" PRId64
                " scored in each; %d threads\n",
            o->text_file != NULL ? o->text_file : o->base,
            o->kld ? (size_t)in.n_chunk * (size_t)in.n_ctx : n_text, s.n_chunk, s.n_ctx, rows,
            ctn_fwd_threads(s.f));
    if (o->kld)
        printf("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence  "
               "            Δp RMS            Same top p\n");
    const double t0 = ctn__cli_now_s();
    for (int64_t w = 0; w < s.n_chunk; w++) {
        if (run_window(&s, w)) goto done;
        if (w == 0 && o->verbose)
            fprintf(stderr, CMD "%.2f seconds per window\n", ctn__cli_now_s() - t0);
        if (o->kld)
            print_window_line(w + 1, &s.kl);
        else
            printf("[%" PRId64 "]%.4f,", w + 1, exp(s.nll / (double)s.count));
        fflush(stdout);
    }
    if (o->kld) {
        print_kl_stats(&s.kl, s.kld, s.dp, o->verbose);
    } else {
        printf("\n");
        const double mean = s.nll / (double)s.count, ppl = exp(mean);
        const double var = s.nll2 / (double)s.count - mean * mean;
        if (var > 0 && s.count > 1) {
            printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl,
                   ppl * sqrt(var / (double)(s.count - 1)));
        } else {
            printf("Final estimate: PPL = %.4f\n", ppl);
            fprintf(stderr, CMD "the spread of log(prob) is not positive: no uncertainty\n");
        }
    }
    if (o->verbose)
        fprintf(stderr, CMD "%" PRId64 " windows in %.2f s\n", s.n_chunk, ctn__cli_now_s() - t0);
    if (s.out != NULL) {
        const int rc = fclose(s.out);
        s.out = NULL;
        if (rc != 0) {
            fprintf(stderr, CMD "writing the base %s: %s\n", o->base, strerror(errno));
            goto done;
        }
        fprintf(stderr, CMD "wrote the base log-probabilities to %s\n", o->base);
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, CMD "writing the output: %s\n", strerror(errno));
        goto done;
    }
    status = 0;
done:
    if (s.out != NULL) fclose(s.out);
    if (status != 0 && wrote) unlink(o->base); /* no half-written base is left behind */
    ctn_fwd_free(s.f);
    free(s.win), free(s.logits), free(s.qrows), free(s.kld), free(s.dp);
    base_close(&in);
    free(text_toks);
    ctn_model_free(m);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    return status;
}

int ctn_cmd_perplexity(int argc, char **argv) {
    options o = {0};
    const int pr = parse_args(argc, argv, &o);
    if (pr == 1) return usage(stdout);
    if (pr < 0) return 2;
    return perplexity(&o);
}
