/*
 * Decode speed under a grammar: catena's engine (ctn_gen_request.grammar) or llama.cpp's
 * sampler chain (llama_sampler_init_grammar + greedy, through bench/llamacpp_dl.c), with and
 * without the grammar, on one model; and catena's mask cost per token. bench/run_grammar.sh
 * runs it in alternation and writes the table of bench/RESULTS.md.
 *
 *   grammar_bench decode --engine catena|llama -m MODEL.gguf [--grammar FILE.gbnf]
 *                 [--schema FILE.json] [--prompt-tokens 64] [--gen-tokens 256] [--reps 3]
 *                 [--threads 2]
 *   grammar_bench mask --vocab VOCAB.gguf (--grammar FILE.gbnf | --schema FILE.json)
 *                 [--steps 256] [--seed 1] [--start TEXT] [--cold]
 *
 * decode: each repetition (after one warm-up) prefills a prompt of ids
 * 1 + ((i + 131 r) * 7919) % (n_vocab - 1) (r the repetition) as one batch, then decodes
 * greedily up to --gen-tokens tokens, one per step, under the grammar if one is given; the
 * grammar may end a repetition sooner (its sentence is complete and EOS wins, or it can
 * take nothing more). Decode tok/s is (tokens - 1) / (time from the first generated token to
 * the last): one forward pass of one token, the mask and the sampling per token, no
 * prefill. Prints one JSON line: the median over the repetitions and the tokens per
 * repetition. --schema converts a JSON schema with ctn_json_schema_to_gbnf; both engines
 * get the same GBNF text. catena: ctn_gen in manual mode, F16 KV cache (its default), the
 * trie built before timing; llama.cpp: lcpp_model_open_bench (its defaults).
 *
 * mask: catena's ctn_grammar_mask alone on the vocabulary's token trie along a path of
 * --steps tokens, each drawn at random (--seed) among the tokens the grammar allows at that
 * step (end of generation only when nothing else is); --start TEXT is accepted first
 * (e.g. "\"" to start inside a string). Prints the median, 90th percentile and worst
 * microseconds per mask and the mean number of tokens allowed. A state keeps the masks of
 * states it was in before (grammar.c), so along a path that loops most masks are found, not
 * walked; --cold times every mask on a new state brought to the same place (the start
 * text and the path's bytes accepted, untimed), so that each is a whole trie walk.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gen.h"
#include "gguf.h"
#include "grammar.h"
#include "json_schema.h"
#include "llamacpp_dl.h"
#include "model.h"
#include "vocab.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) {
        s[n] = '\0';
        if (len) *len = (size_t)n;
    }
    return s;
}

/* The GBNF text of --grammar or --schema (malloc'd), NULL for none; exits on errors. */
static char *load_grammar(const char *gfile, const char *sfile) {
    if (gfile) {
        char *g = slurp(gfile, NULL);
        if (!g) {
            fprintf(stderr, "grammar_bench: cannot read %s\n", gfile);
            exit(1);
        }
        return g;
    }
    if (!sfile) return NULL;
    size_t n;
    char *s = slurp(sfile, &n), *g = NULL, err[512];
    if (!s) {
        fprintf(stderr, "grammar_bench: cannot read %s\n", sfile);
        exit(1);
    }
    if (ctn_json_schema_to_gbnf(s, n, &g, err, sizeof err) < 0) {
        fprintf(stderr, "grammar_bench: %s: %s\n", sfile, err);
        exit(1);
    }
    free(s);
    return g;
}

/* ---- decode ----------------------------------------------------------------------------- */

typedef struct {
    int n;
    double t_first, t_last;
    bool done;
    ctn_finish finish;
    char error[256];
} run_state;

static void on_token(void *ud, const ctn_gen_token *t) {
    (void)t;
    run_state *s = ud;
    double now = now_s();
    if (s->n++ == 0) s->t_first = now;
    s->t_last = now;
}

static void on_done(void *ud, int64_t id, const ctn_gen_result *res) {
    (void)id;
    run_state *s = ud;
    s->done = true;
    s->finish = res->finish;
    if (res->error) snprintf(s->error, sizeof s->error, "%s", res->error);
}

static void make_prompt(int32_t *p, int n, int32_t n_vocab, int r) {
    for (int i = 0; i < n; i++)
        p[i] = 1 + (int32_t)(((int64_t)(i + 131 * r) * 7919) % (n_vocab - 1));
}

static int decode_catena(const char *path, const char *gbnf, int n_prompt, int n_gen, int reps,
                         int threads, double *tps, int *ntok) {
    char err[1024];
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    ctn_vocab *v = NULL;
    ctn_gen *e = NULL;
    ctn_gen_params p = {0};
    p.manual = true;
    p.fwd.n_threads = threads;
    p.fwd.n_ctx = n_prompt + n_gen + 8;
    if (ctn_gguf_open(&g, path, err, sizeof err) < 0 ||
        ctn_model_load(&m, g, err, sizeof err) < 0 || ctn_vocab_load(&v, g, err, sizeof err) < 0 ||
        ctn_gen_new(&e, m, v, &p, err, sizeof err) < 0) {
        fprintf(stderr, "grammar_bench: %s\n", err);
        return -1;
    }
    int32_t nv = ctn_vocab_n_tokens(v);
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    int rc = 0;
    for (int r = -1; r < reps && rc == 0; r++) { /* r = -1: warm-up (builds the trie) */
        make_prompt(prompt, n_prompt, nv, r < 0 ? reps : r);
        run_state st = {0};
        ctn_gen_request q = ctn_gen_request_default();
        q.prompt_ids = prompt;
        q.n_prompt_ids = n_prompt;
        q.max_tokens = n_gen;
        q.grammar = gbnf;
        q.ignore_eos = gbnf == NULL; /* unconstrained: all n_gen tokens */
        q.on_token = on_token;
        q.on_done = on_done;
        q.ud = &st;
        if (ctn_gen_submit(e, &q, err, sizeof err) < 0) {
            fprintf(stderr, "grammar_bench: %s\n", err);
            rc = -1;
            break;
        }
        while (!st.done && ctn_gen_step(e, NULL) >= 0) {
        }
        if (st.finish == CTN_FINISH_ERROR) {
            fprintf(stderr, "grammar_bench: catena: %s\n", st.error);
            rc = -1;
        } else if (r >= 0) {
            ntok[r] = st.n;
            tps[r] = st.n > 1 ? (st.n - 1) / (st.t_last - st.t_first) : 0;
        }
    }
    free(prompt);
    ctn_gen_free(e);
    ctn_vocab_free(v);
    ctn_model_free(m);
    ctn_gguf_free(g);
    return rc;
}

static int decode_llama(const char *path, const char *gbnf, int n_prompt, int n_gen, int reps,
                        int threads, double *tps, int *ntok) {
    char err[1024];
    if (lcpp_lib_open(NULL, err, sizeof err) < 0) {
        fprintf(stderr, "grammar_bench: llama.cpp not available: %s\n", err);
        return 77;
    }
    lcpp_model *m;
    if (lcpp_model_open_bench(&m, path, (uint32_t)(n_prompt + n_gen + 8), (uint32_t)n_prompt,
                              threads, err, sizeof err) < 0) {
        fprintf(stderr, "grammar_bench: %s\n", err);
        return -1;
    }
    int32_t nv = lcpp_model_n_vocab(m);
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    int rc = 0;
    for (int r = -1; r < reps && rc == 0; r++) {
        make_prompt(prompt, n_prompt, nv, r < 0 ? reps : r);
        lcpp_sampler *s;
        if (lcpp_sampler_new(&s, m, gbnf, err, sizeof err) < 0) {
            fprintf(stderr, "grammar_bench: %s\n", err);
            rc = -1;
            break;
        }
        lcpp_model_clear(m);
        const float *lg;
        if (lcpp_model_decode_batch(m, prompt, n_prompt, 0, &lg) < 0) rc = -1;
        int n = 0;
        double t_first = 0, t_last = 0;
        for (int k = 0; k < n_gen && rc == 0; k++) {
            int32_t t = lcpp_sampler_sample(s, m);
            double now = now_s();
            if (gbnf && lcpp_model_is_eog(m, t)) break;
            if (n++ == 0) t_first = now;
            t_last = now;
            if (k + 1 < n_gen && lcpp_model_decode_batch(m, &t, 1, n_prompt + k, &lg) < 0) rc = -1;
        }
        lcpp_sampler_free(s);
        if (rc < 0) fprintf(stderr, "grammar_bench: llama.cpp decode failed\n");
        if (r >= 0) {
            ntok[r] = n;
            tps[r] = n > 1 ? (n - 1) / (t_last - t_first) : 0;
        }
    }
    free(prompt);
    lcpp_model_free(m);
    return rc;
}

/* ---- mask ------------------------------------------------------------------------------- */

static int mask_cost(const char *vpath, const char *gbnf, int steps, uint64_t seed,
                     const char *start, bool cold) {
    char err[1024];
    ctn_gguf *g = NULL;
    ctn_vocab *v = NULL;
    ctn_token_trie *t = NULL;
    ctn_grammar *gr = NULL;
    ctn_grammar_state *st = NULL;
    if (ctn_gguf_open(&g, vpath, err, sizeof err) < 0 ||
        ctn_vocab_load(&v, g, err, sizeof err) < 0 ||
        ctn_token_trie_from_vocab(&t, v, err, sizeof err) < 0 ||
        ctn_grammar_new(&gr, gbnf, err, sizeof err) < 0) {
        fprintf(stderr, "grammar_bench: %s\n", err);
        return -1;
    }
    if (ctn_grammar_state_new(&st, gr) < 0 ||
        (start && ctn_grammar_accept(st, start, strlen(start), true) < 0)) {
        fprintf(stderr, "grammar_bench: the grammar does not take the start text\n");
        return -1;
    }
    int32_t nv = ctn_token_trie_n_tokens(t);
    float *logits = malloc((size_t)nv * sizeof *logits);
    double *us = malloc((size_t)steps * sizeof *us);
    int32_t *ids = malloc((size_t)nv * sizeof *ids);
    double allowed = 0;
    int n = 0;
    char *hist = malloc(1 << 20); /* the path's bytes */
    size_t n_hist = 0;
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    for (; n < steps; n++) {
        for (int32_t i = 0; i < nv; i++)
            logits[i] = 0;
        ctn_grammar_state *ms = st;
        if (cold && (ctn_grammar_state_new(&ms, gr) < 0 ||
                     (start && ctn_grammar_accept(ms, start, strlen(start), true) < 0) ||
                     ctn_grammar_accept(ms, hist, n_hist, true) < 0)) {
            fprintf(stderr, "grammar_bench: cannot bring a new state to step %d\n", n);
            return -1;
        }
        double t0 = now_s();
        int64_t na = ctn_grammar_mask(ms, t, logits);
        us[n] = (now_s() - t0) * 1e6;
        if (cold) ctn_grammar_state_free(ms);
        if (na <= 0) break;
        allowed += (double)na;
        /* A random allowed token, preferring any over end of generation. */
        int64_t k = 0;
        for (int32_t i = 0; i < nv; i++)
            if (logits[i] == 0 && !ctn_vocab_is_eog(v, i)) ids[k++] = i;
        if (k == 0) {
            n++;
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        const int32_t tok = ids[rng % (uint64_t)k];
        if (ctn_grammar_accept_token(st, t, tok) < 0) {
            fprintf(stderr, "grammar_bench: an allowed token was refused\n");
            return -1;
        }
        char piece[256];
        int np = ctn_token_to_piece(v, tok, piece, sizeof piece, 0, false);
        if (np > 0 && np <= (int)sizeof piece && n_hist + (size_t)np < (1 << 20)) {
            memcpy(hist + n_hist, piece, (size_t)np);
            n_hist += (size_t)np;
        }
    }
    double *sorted = malloc((size_t)n * sizeof *sorted);
    memcpy(sorted, us, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_d);
    printf("{\"vocab_tokens\": %d, \"steps\": %d, \"mask_us_median\": %.1f, \"mask_us_p90\": %.1f, "
           "\"mask_us_max\": %.1f, \"mask_us_first\": %.1f, \"allowed_mean\": %.0f}\n",
           (int)nv, n, n ? sorted[n / 2] : 0.0, n ? sorted[(n * 9) / 10] : 0.0,
           n ? sorted[n - 1] : 0.0, n ? us[0] : 0.0, n ? allowed / n : 0.0);
    free(sorted);
    free(hist);
    free(us);
    free(ids);
    free(logits);
    ctn_grammar_state_free(st);
    ctn_grammar_free(gr);
    ctn_token_trie_free(t);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: grammar_bench decode --engine catena|llama -m MODEL.gguf [--grammar F.gbnf]\n"
            "                     [--schema F.json] [--prompt-tokens 64] [--gen-tokens 256]\n"
            "                     [--reps 3] [--threads 2]\n"
            "       grammar_bench mask --vocab VOCAB.gguf (--grammar F.gbnf | --schema F.json)\n"
            "                     [--steps 256] [--seed 1] [--start TEXT] [--cold]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *mode = argv[1], *engine = NULL, *model = NULL, *gfile = NULL, *sfile = NULL,
               *vocab = NULL, *start = NULL;
    int n_prompt = 64, n_gen = 256, reps = 3, threads = 2, steps = 256;
    uint64_t seed = 1;
    bool cold = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--cold")) {
            cold = true;
            continue;
        }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--engine"))
            engine = v;
        else if (!strcmp(a, "-m"))
            model = v;
        else if (!strcmp(a, "--grammar"))
            gfile = v;
        else if (!strcmp(a, "--schema"))
            sfile = v;
        else if (!strcmp(a, "--vocab"))
            vocab = v;
        else if (!strcmp(a, "--start"))
            start = v;
        else if (!strcmp(a, "--prompt-tokens"))
            n_prompt = atoi(v);
        else if (!strcmp(a, "--gen-tokens"))
            n_gen = atoi(v);
        else if (!strcmp(a, "--reps"))
            reps = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--steps"))
            steps = atoi(v);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else
            usage();
    }
    char *gbnf = load_grammar(gfile, sfile);
    if (!strcmp(mode, "mask")) {
        if (!vocab || !gbnf || steps < 1) usage();
        int rc = mask_cost(vocab, gbnf, steps, seed, start, cold);
        free(gbnf);
        return rc < 0 ? 1 : 0;
    }
    if (strcmp(mode, "decode") || !engine || !model || n_prompt < 1 || n_gen < 2 || reps < 1 ||
        reps > 1000 || threads < 1)
        usage();
    double tps[1000];
    int ntok[1000];
    int rc = 0;
    if (!strcmp(engine, "catena"))
        rc = decode_catena(model, gbnf, n_prompt, n_gen, reps, threads, tps, ntok);
    else if (!strcmp(engine, "llama"))
        rc = decode_llama(model, gbnf, n_prompt, n_gen, reps, threads, tps, ntok);
    else
        usage();
    free(gbnf);
    if (rc != 0) return rc == 77 ? 77 : 1;
    char toks[4096];
    size_t o = 0;
    for (int r = 0; r < reps && o + 16 < sizeof toks; r++)
        o += (size_t)snprintf(toks + o, sizeof toks - o, "%s%d", r ? ", " : "", ntok[r]);
    printf("{\"engine\": \"%s\", \"grammar\": %s, \"decode_tok_s\": %.2f, \"tokens\": [%s]}\n",
           engine, gfile || sfile ? "true" : "false", median(tps, reps), toks);
    return 0;
}
