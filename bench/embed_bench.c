/*
 * catena's side of bench/run_embed.sh: embeddings of a load_split dump's chunks through the
 * shared engine (stdlib/lm.h ctn_lm_embed), kept --in-flight at a time on a libuv loop as
 * catena ingest does (stdlib/ingest.c: up to 256). embedbench.h says what both sides share.
 *
 *     embed_bench -m MODEL --chunks FILE [--threads N] [--in-flight N] [--limit N]
 *                 [--vectors FILE] [--n-vectors K]
 *
 * Mean pooling, L2-normalised by the engine. The warm-up embeds the first 16 chunks with
 * "Warm-up. " in front, so that no block of theirs is in the engine's prefix cache when the
 * same chunks come again; the prefix-cache hits of the timed pass are reported (they should
 * be 0: every chunk starts with BOS and its own text). Tokens are the engine's prefill tokens
 * over the timed pass (ctn_lm_get_stats), BOS included.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "embedbench.h"
#include "error.h"
#include "lm.h"

typedef struct {
    ctn_lm *lm;
    const eb_chunks *c;
    size_t next, done, keep, n_items;
    const char **text; /* what is submitted: the chunks, or the warm-up texts */
    size_t *len;
    int in_flight, limit;
    float *vecs; /* (keep, dim) */
    int dim, failed;
} run_state;

typedef struct {
    run_state *st;
    size_t i;
} req;

static void submit_more(run_state *st);

static void on_vec(void *ud, const float *vec, int dim, int err, const char *msg)
{
    req *r = ud;
    run_state *st = r->st;
    st->in_flight--;
    st->done++;
    if (err != 0) {
        fprintf(stderr, "embed_bench: chunk %zu: %s (%s)\n", r->i, ctn_strerror(err), msg);
        st->failed = 1;
    } else if (r->i < st->keep && dim == st->dim) {
        memcpy(st->vecs + r->i * (size_t)dim, vec, (size_t)dim * sizeof *vec);
    }
    free(r);
    submit_more(st);
}

static void submit_more(run_state *st)
{
    while (!st->failed && st->next < st->n_items && st->in_flight < st->limit) {
        req *r = malloc(sizeof *r);
        char err[512];
        if (r == NULL) {
            st->failed = 1;
            return;
        }
        *r = (req){st, st->next};
        int rc = ctn_lm_embed(st->lm, st->text[st->next], st->len[st->next], CTN_POOL_MEAN,
                              on_vec, r, NULL, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "embed_bench: chunk %zu: %s\n", st->next, err);
            free(r);
            st->failed = 1;
            return;
        }
        st->next++;
        st->in_flight++;
    }
}

/* Embeds n texts; every callback has come when it returns. 0 or -1. */
static int embed_all(uv_loop_t *loop, run_state *st, const char **text, size_t *len, size_t n)
{
    st->text = text;
    st->len = len;
    st->n_items = n;
    st->next = st->done = 0;
    submit_more(st);
    uv_run(loop, UV_RUN_DEFAULT);
    return st->failed || st->done != n ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *chunks_path = NULL, *vec_path = NULL;
    int threads = 2, limit_flight = 256;
    size_t limit = 0, n_vec = 8;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "embed_bench: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--chunks")) chunks_path = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--in-flight")) limit_flight = atoi(v);
        else if (!strcmp(a, "--limit")) limit = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--vectors")) vec_path = v;
        else if (!strcmp(a, "--n-vectors")) n_vec = strtoul(v, NULL, 10);
        else {
            fprintf(stderr, "embed_bench: unknown option %s\n", a);
            return 2;
        }
    }
    if (!model || !chunks_path || threads < 1 || limit_flight < 1) {
        fprintf(stderr, "usage: embed_bench -m MODEL --chunks FILE [--threads N] "
                        "[--in-flight N] [--limit N] [--vectors FILE] [--n-vectors K]\n");
        return 2;
    }
    eb_chunks c;
    if (eb_chunks_read(&c, chunks_path, limit) < 0 || c.n == 0) return 1;

    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm;
    ctn_lm_params p = {.threads = threads};
    char err[512];
    if (ctn_lm_open(&loop, model, &p, &lm, err, sizeof err) < 0) {
        fprintf(stderr, "embed_bench: %s\n", err);
        return 1;
    }
    run_state st = {.lm = lm, .c = &c, .limit = limit_flight, .dim = ctn_lm_embed_dim(lm)};
    st.keep = n_vec < c.n ? n_vec : c.n;
    st.vecs = calloc(st.keep ? st.keep : 1, (size_t)st.dim * sizeof *st.vecs);

    /* The warm-up texts: "Warm-up. " and one of the first chunks. */
    enum { N_WARM = 16 };
    size_t nw = c.n < N_WARM ? c.n : N_WARM;
    char *warm[N_WARM];
    const char *wtext[N_WARM];
    size_t wlen[N_WARM];
    for (size_t i = 0; i < nw; i++) {
        size_t n = c.len[i] < 400 ? c.len[i] : 400;
        /* Cut back to a character boundary, so that the text stays valid UTF-8. */
        while (n > 0 && ((unsigned char)c.text[i][n] & 0xC0) == 0x80) n--;
        warm[i] = malloc(n + 9);
        if (!warm[i]) return 1;
        memcpy(warm[i], "Warm-up. ", 9);
        memcpy(warm[i] + 9, c.text[i], n);
        wtext[i] = warm[i];
        wlen[i] = 9 + n;
    }
    size_t keep = st.keep;
    st.keep = 0; /* no vectors kept from the warm-up */
    if (st.vecs == NULL || embed_all(&loop, &st, wtext, wlen, nw) < 0) return 1;
    st.keep = keep;

    ctn_lm_stats s0, s1;
    ctn_lm_get_stats(lm, &s0);
    double t0 = eb_now();
    int rc = embed_all(&loop, &st, c.text, c.len, c.n);
    double t1 = eb_now();
    ctn_lm_get_stats(lm, &s1);
    if (rc < 0) return 1;
    long long tokens = (long long)(s1.engine.prefill_tokens - s0.engine.prefill_tokens);
    double sec = t1 - t0;
    printf("{\"impl\": \"catena\", \"chunks\": %zu, \"tokens\": %lld, \"prefix_hits\": %lld, "
           "\"steps\": %lld, \"dim\": %d, \"threads\": %d, \"in_flight\": %d, \"seconds\": %.4f, "
           "\"tok_s\": %.1f, \"chunks_s\": %.1f}\n",
           c.n, tokens, (long long)(s1.engine.prefix_hits - s0.engine.prefix_hits),
           (long long)(s1.engine.steps - s0.engine.steps), st.dim, threads, limit_flight, sec,
           tokens / sec, c.n / sec);
    if (vec_path && eb_vectors_write(vec_path, st.vecs, st.keep, st.dim) < 0) return 1;

    for (size_t i = 0; i < nw; i++) free(warm[i]);
    free(st.vecs);
    ctn_lm_close(lm);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    eb_chunks_free(&c);
    return 0;
}
