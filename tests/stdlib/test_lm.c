/*
 * The model bridge (stdlib/lm.h) on the real stories260K model: text through the loop equals
 * the engine's own, concurrent requests are batched and unchanged, one model per (loop,
 * file), cancel and close end every request with exactly one on_done and nothing after it,
 * load errors name the path, every piece of text is whole UTF-8, and log-probabilities come
 * per token with the vocabulary's bytes.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "alloc.h"
#include "error.h"
#include "gen.h"
#include "gguf.h"
#include "lm.h"
#include "model.h"
#include "test.h"
#include "vocab.h"

static char model_path[1024];

static const char *shared_dir(void) {
    const char *s = getenv("CTN_SHARED");
    return s && *s ? s : "../shared";
}

static bool have_model(void) {
    FILE *f = fopen(model_path, "rb");
    if (f == NULL) return false;
    fclose(f);
    return true;
}

/* ---- a reference run straight through ctn_gen (manual mode, this thread) ---------------- */

typedef struct {
    char *text;
    size_t n, cap;
    int n_pieces; /* non-empty pieces (tokens' and the held-back end) */
    bool done;
    ctn_finish finish;
} direct_out;

static void direct_add(direct_out *o, const char *s, size_t n) {
    if (n == 0) return;
    o->n_pieces++;
    if (o->n + n + 1 > o->cap) {
        o->cap = (o->n + n + 1) * 2;
        o->text = realloc(o->text, o->cap);
    }
    memcpy(o->text + o->n, s, n);
    o->n += n;
    o->text[o->n] = '\0';
}

static void direct_token(void *ud, const ctn_gen_token *tk) {
    if (tk->text != NULL) direct_add(ud, tk->text, tk->len);
}

static void direct_done(void *ud, int64_t id, const ctn_gen_result *res) {
    (void)id;
    direct_out *o = ud;
    direct_add(o, res->text, res->text_len);
    o->done = true;
    o->finish = res->finish;
}

static int direct_pieces; /* of the last direct_run */

/* The engine's raw output bytes (not made valid UTF-8; may hold NULs) for a request,
 * malloc'd and NUL-terminated, their count in *n (may be NULL). */
static char *direct_run(const char *prompt, float temp, uint64_t seed, int max_tokens, size_t *n) {
    char err[512];
    ctn_gguf *g = NULL;
    ctn_vocab *v = NULL;
    ctn_model *m = NULL;
    ctn_gen *e = NULL;
    direct_out o = {0};
    if (ctn_gguf_open(&g, model_path, err, sizeof err) < 0 ||
        ctn_vocab_load(&v, g, err, sizeof err) < 0 || ctn_model_load(&m, g, err, sizeof err) < 0) {
        printf("  loading: %s\n", err);
        goto done;
    }
    ctn_gen_params p = {0};
    p.manual = true;
    p.fwd.kv_block = 16;
    if (ctn_gen_new(&e, m, v, &p, err, sizeof err) < 0) {
        printf("  engine: %s\n", err);
        goto done;
    }
    ctn_gen_request r = ctn_gen_request_default();
    r.prompt = prompt;
    r.sampling.temp = temp;
    r.sampling.top_k = 0;
    r.sampling.top_p = 1.0f;
    r.sampling.min_p = 0;
    r.sampling.seed = seed;
    r.max_tokens = max_tokens;
    r.on_token = direct_token;
    r.on_done = direct_done;
    r.ud = &o;
    if (ctn_gen_submit(e, &r, err, sizeof err) < 0) {
        printf("  submit: %s\n", err);
        goto done;
    }
    while (!o.done)
        if (ctn_gen_step(e, NULL) < 0) break;
done:
    ctn_gen_free(e);
    ctn_model_free(m);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    if (o.text == NULL) o.text = calloc(1, 1);
    if (n != NULL) *n = o.n;
    direct_pieces = o.n_pieces;
    return o.text;
}

/* ---- collecting a request's callbacks on the loop ---------------------------------------- */

typedef struct {
    char text[8192]; /* on_text pieces, concatenated */
    size_t n;
    int n_pieces;
    int n_done;
    bool after_done;     /* a callback came after on_done */
    bool bad_piece;      /* a piece that was not valid UTF-8 on its own */
    bool result_matches; /* on_done's text equals the pieces */
    char finish[16];
    int64_t completion_tokens;
    int64_t prompt_tokens, cached_tokens;
    /* cancel (through lm, with handle) after this many pieces; 0: never */
    int cancel_after;
    ctn_lm *lm;
    uint64_t handle;
    bool text_after_cancel;
    bool cancelled;
    int *done_counter;  /* shared count of on_done calls, or NULL */
    bool close_in_text; /* ctn_lm_close(lm) from the first on_text */
    int sleep_first_ms; /* the first on_text sleeps this long (a slow loop) */
    bool quiet;         /* a failed request is not printed */
    int error;          /* on_done's error code */
} collect;

/* Checks s is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF); written
 * apart from lm.c's decoder so that the two check each other. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 1, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + need >= n) return false;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const unsigned min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += need + 1;
    }
    return true;
}

static void on_text(void *ud, const char *piece, size_t len) {
    collect *c = ud;
    if (c->n_done > 0) c->after_done = true;
    if (c->cancelled) c->text_after_cancel = true;
    if (len == 0 || !valid_utf8((const unsigned char *)piece, len)) c->bad_piece = true;
    if (c->n + len < sizeof c->text) {
        memcpy(c->text + c->n, piece, len);
        c->n += len;
    }
    c->n_pieces++;
    if (c->sleep_first_ms > 0 && c->n_pieces == 1) {
        const struct timespec ts = {0, c->sleep_first_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (c->cancel_after > 0 && c->n_pieces == c->cancel_after) {
        CHECK_EQ_INT(ctn_lm_cancel(c->lm, c->handle), 0);
        c->cancelled = true;
    }
    if (c->close_in_text && c->n_pieces == 1) ctn_lm_close(c->lm);
}

static void on_done(void *ud, const ctn_lm_result *r) {
    collect *c = ud;
    if (c->n_done > 0) c->after_done = true;
    c->n_done++;
    if (c->done_counter != NULL) (*c->done_counter)++;
    snprintf(c->finish, sizeof c->finish, "%s", r->finish_name);
    c->completion_tokens = r->completion_tokens;
    c->prompt_tokens = r->prompt_tokens;
    c->cached_tokens = r->cached_tokens;
    c->result_matches =
        r->text_len == c->n && memcmp(r->text, c->text, c->n) == 0 && r->text[r->text_len] == 0;
    CHECK_STR(r->finish_name, ctn_finish_name(r->finish));
    c->error = r->error;
    if (r->finish == CTN_FINISH_ERROR && !c->quiet) printf("  request failed: %s\n", r->message);
}

static const ctn_lm_callbacks callbacks = {on_text, on_done};

/* A request for prompt sampled from the whole distribution at temp (0: greedy). */
static ctn_lm_request sampled(const char *prompt, float temp, uint64_t seed, int max_tokens) {
    ctn_lm_request r = ctn_lm_request_default();
    r.prompt = prompt;
    r.prompt_len = strlen(prompt);
    r.set.sampling.temp = temp;
    r.set.sampling.top_k = 0;
    r.set.sampling.top_p = 1.0f;
    r.set.sampling.min_p = 0;
    r.set.sampling.seed = seed;
    r.set.max_tokens = max_tokens;
    return r;
}

static int submit(ctn_lm *lm, collect *c, const char *prompt, float temp, uint64_t seed,
                  int max_tokens) {
    const ctn_lm_request r = sampled(prompt, temp, seed, max_tokens);
    char err[512] = "";
    c->lm = lm;
    const int rc = ctn_lm_generate(lm, &r, &callbacks, c, &c->handle, err, sizeof err);
    if (rc < 0) printf("  generate: %s\n", err);
    return rc;
}

static ctn_lm *open_model(uv_loop_t *loop) {
    char err[1024];
    ctn_lm *lm = NULL;
    ctn_lm_params p = {0};
    if (ctn_lm_open(loop, model_path, &p, &lm, err, sizeof err) < 0) printf("  open: %s\n", err);
    return lm;
}

/* Closes lm and the loop; the loop must close cleanly (nothing left behind). */
static void close_all(uv_loop_t *loop, ctn_lm *lm) {
    ctn_lm_close(lm);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(loop), 0);
}

/* ---- tests ------------------------------------------------------------------------------- */

static const char *const prompts[] = {
    "Once upon a time", "Lily liked",  "The dog ran",   "One day, Tom",
    "The sun was",      "Ben and Mia", "A little bird", "There was a big tree",
};
enum { N_PROMPTS = sizeof prompts / sizeof prompts[0] };

TEST(greedy_text_equals_the_engines) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    collect *c = calloc(1, sizeof *c);
    CHECK_EQ_INT(submit(lm, c, "Once upon a time", 0, 0, 60), 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once no request is in flight */
    CHECK_EQ_INT(c->n_done, 1);
    CHECK(c->result_matches);
    CHECK(!c->after_done && !c->bad_piece);
    CHECK_STR(c->finish, "length");
    CHECK_EQ_INT(c->completion_tokens, 60);
    c->text[c->n] = '\0';
    char *want = direct_run("Once upon a time", 0, 0, 60, NULL);
    CHECK_STR(c->text, want);
    /* The model's README gives the greedy continuation. */
    CHECK(strncmp(c->text, ", there was a little girl named Lily.", 37) == 0);
    free(want);
    CHECK(ctn_lm_chat_template(lm) == NULL); /* stories260K has none */
    CHECK_STR(ctn_lm_bos_text(lm), "<s>");
    CHECK_STR(ctn_lm_eos_text(lm), "</s>");
    CHECK(strstr(ctn_lm_path(lm), "stories260K.gguf") != NULL && ctn_lm_path(lm)[0] == '/');
    /* A finished request cannot be cancelled. */
    CHECK_EQ_INT(ctn_lm_cancel(lm, c->handle), CTN_ENOENT);
    /* Stop strings end the text before them. */
    memset(c, 0, sizeof *c);
    ctn_lm_request r = ctn_lm_request_default();
    r.prompt = "Once upon a time";
    r.prompt_len = 16;
    const char *const stop[] = {"Lily"};
    r.set.stop[0] = stop[0];
    r.set.n_stop = 1;
    char err[256];
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, c, NULL, err, sizeof err), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(c->n_done, 1);
    CHECK_STR(c->finish, "stop");
    c->text[c->n] = '\0';
    CHECK_STR(c->text, ", there was a little girl named ");
    free(c);
    close_all(&loop, lm);
}

TEST(concurrent_requests_are_batched_and_unchanged) {
    enum { N = 64 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    /* Each prompt alone first, one after the other. */
    collect *alone = calloc(N_PROMPTS, sizeof *alone);
    for (int i = 0; i < N_PROMPTS; i++) {
        CHECK_EQ_INT(submit(lm, &alone[i], prompts[i], i % 2 ? 0.8f : 0, 100 + i, 48), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_EQ_INT(alone[i].n_done, 1);
    }
    ctn_lm_stats before;
    ctn_lm_get_stats(lm, &before);
    collect *c = calloc(N, sizeof *c);
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(
            submit(lm, &c[i], prompts[i % N_PROMPTS], i % 2 ? 0.8f : 0, 100 + i % N_PROMPTS, 48),
            0);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++) {
        const collect *a = &alone[i % N_PROMPTS];
        CHECK_EQ_INT(c[i].n_done, 1);
        CHECK(c[i].result_matches && !c[i].after_done && !c[i].bad_piece);
        CHECK(c[i].n == a->n && memcmp(c[i].text, a->text, a->n) == 0);
        CHECK_STR(c[i].finish, a->finish);
    }
    ctn_lm_stats st;
    ctn_lm_get_stats(lm, &st);
    int64_t steps = 0;
    for (int b = 0; b < CTN_LM_BATCH_BUCKETS; b++)
        steps += st.steps[b] - before.steps[b];
    printf("  batch histogram 1/2-3/4-7/8-15/16-31/32-63/64+: %lld %lld %lld %lld %lld %lld %lld,"
           " max %d, %lld engine steps\n",
           (long long)st.steps[0], (long long)st.steps[1], (long long)st.steps[2],
           (long long)st.steps[3], (long long)st.steps[4], (long long)st.steps[5],
           (long long)st.steps[6], st.max_batch, (long long)st.engine.steps);
    CHECK(st.max_batch > 1);
    CHECK(steps > 0);
    /* Alone, every step held one sequence: the 8 x 48 tokens are in bucket 1. */
    CHECK(before.steps[0] >= N_PROMPTS * 40 && before.max_batch == 1);
    /* 64 x 48 tokens in far fewer steps than one per token. */
    CHECK(steps < N * 48 / 4);
    CHECK_EQ_INT(st.engine.finished, N + N_PROMPTS);
    free(c);
    free(alone);
    close_all(&loop, lm);
}

TEST(many_short_requests) {
    /* Requests of one to three tokens end while the loop is still delivering their text, so
     * a request's end often arrives after the loop took it off the ready list and before it
     * looked at it: each must still end exactly once (ASan sees a request used after it was
     * freed). */
    enum { N = 512 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    collect *c = calloc(N, sizeof *c);
    for (int round = 0; round < 4; round++) {
        memset(c, 0, N * sizeof *c);
        for (int i = 0; i < N; i++)
            CHECK_EQ_INT(submit(lm, &c[i], prompts[i % N_PROMPTS], 0, 0, 1 + i % 3), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        for (int i = 0; i < N; i++) {
            CHECK_EQ_INT(c[i].n_done, 1);
            CHECK(!c[i].after_done && c[i].result_matches);
            CHECK_EQ_INT(c[i].completion_tokens, 1 + i % 3);
        }
    }
    free(c);
    close_all(&loop, lm);
}

TEST(one_model_per_loop_and_file) {
    uv_loop_t loop, other;
    uv_loop_init(&loop);
    uv_loop_init(&other);
    ctn_lm *a = open_model(&loop);
    CHECK(a != NULL);
    if (a == NULL) {
        uv_loop_close(&loop);
        uv_loop_close(&other);
        return;
    }
    /* Another spelling of the same file is the same model. */
    char path2[1100];
    snprintf(path2, sizeof path2, "%s/models/../models/./stories260K.gguf", shared_dir());
    char err[1024] = "";
    ctn_lm *b = NULL;
    ctn_lm_params p = {0};
    CHECK_EQ_INT(ctn_lm_open(&loop, path2, &p, &b, err, sizeof err), 0);
    CHECK(b == a);
    ctn_lm *c = NULL;
    CHECK_EQ_INT(ctn_lm_open(&loop, model_path, NULL, &c, err, sizeof err), 0);
    CHECK(c == a);
    /* A different configuration is refused, naming the parameter. */
    ctn_lm *d = (ctn_lm *)1;
    p.threads = 1;
    CHECK_EQ_INT(ctn_lm_open(&loop, model_path, &p, &d, err, sizeof err), CTN_EINVAL);
    CHECK(d == NULL);
    CHECK_CONTAINS(err, "threads");
    CHECK_CONTAINS(err, "stories260K.gguf");
    p.threads = 0;
    p.n_ctx = 128;
    CHECK_EQ_INT(ctn_lm_open(&loop, model_path, &p, &d, err, sizeof err), CTN_EINVAL);
    /* In catena.model's words, not the struct's (n_ctx 0 for "the default"). */
    CHECK_CONTAINS(err, "ctx 128 was asked, but ");
    CHECK_CONTAINS(err, "is already loaded with the default ctx");
    p.n_ctx = 0;
    p.kv_memory_bytes = 1 << 20;
    CHECK_EQ_INT(ctn_lm_open(&loop, model_path, &p, &d, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "kv_memory 1048576 bytes was asked");
    /* Another loop gets its own. */
    ctn_lm *o = open_model(&other);
    CHECK(o != NULL && o != a);
    /* Two of three references dropped: still usable. */
    ctn_lm_close(b);
    ctn_lm_close(c);
    collect *k = calloc(1, sizeof *k);
    CHECK_EQ_INT(submit(a, k, "Lily liked", 0, 0, 8), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(k->n_done, 1);
    free(k);
    close_all(&loop, a);
    close_all(&other, o);
    /* After the last close the file loads afresh, and with other params. */
    uv_loop_init(&loop);
    p.kv_memory_bytes = 0;
    p.threads = 1;
    CHECK_EQ_INT(ctn_lm_open(&loop, model_path, &p, &a, err, sizeof err), 0);
    close_all(&loop, a);
}

TEST(cancel_gives_one_done_and_nothing_after) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    /* In the middle: from the third piece's callback. The request could run to the end of
     * the context (hundreds of tokens); the cancel lands long before. */
    collect *mid = calloc(1, sizeof *mid);
    mid->cancel_after = 3;
    /* At once, before the loop has run. */
    collect *now = calloc(1, sizeof *now);
    /* A bystander that must be unaffected. */
    collect *by = calloc(1, sizeof *by);
    CHECK_EQ_INT(submit(lm, mid, "Once upon a time", 1.0f, 7, -1), 0);
    CHECK_EQ_INT(submit(lm, now, "The dog ran", 1.0f, 8, -1), 0);
    CHECK_EQ_INT(submit(lm, by, "Lily liked", 0, 0, 30), 0);
    CHECK_EQ_INT(ctn_lm_cancel(lm, now->handle), 0);
    now->cancelled = true;
    CHECK_EQ_INT(ctn_lm_cancel(lm, 987654321), CTN_ENOENT);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(mid->n_done, 1);
    CHECK_EQ_INT(mid->n_pieces, 3);
    CHECK(!mid->after_done && !mid->text_after_cancel && mid->result_matches);
    CHECK_STR(mid->finish, "cancelled");
    /* Left alone, the request goes on well past where it was cut. */
    size_t n_whole = 0;
    free(direct_run("Once upon a time", 1.0f, 7, -1, &n_whole));
    printf("  cancelled after %lld tokens (%zu bytes) of %zu bytes\n",
           (long long)mid->completion_tokens, mid->n, n_whole);
    CHECK(n_whole > mid->n + 100);
    CHECK_EQ_INT(now->n_done, 1);
    CHECK(!now->after_done && !now->text_after_cancel && now->n == 0);
    CHECK_STR(now->finish, "cancelled");
    CHECK_EQ_INT(by->n_done, 1);
    CHECK_STR(by->finish, "length");
    /* The loop goes on running: nothing more arrives for the cancelled ones. */
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ_INT(mid->n_done + now->n_done, 2);
    CHECK_EQ_INT(ctn_lm_cancel(lm, mid->handle), CTN_ENOENT);
    free(mid);
    free(now);
    free(by);
    close_all(&loop, lm);
}

TEST(close_with_requests_in_flight) {
    enum { N = 16 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    int dones = 0;
    collect *c = calloc(N, sizeof *c);
    for (int i = 0; i < N; i++) {
        c[i].done_counter = &dones;
        CHECK_EQ_INT(submit(lm, &c[i], prompts[i % N_PROMPTS], 1.0f, (uint64_t)i, -1), 0);
    }
    /* Let some text arrive, then cancel half and close with everything in flight. */
    while (c[0].n_pieces == 0 && c[0].n_done == 0)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < N; i += 2)
        CHECK_EQ_INT(ctn_lm_cancel(lm, c[i].handle), 0);
    ctn_lm_close(lm);
    /* Every request had its on_done inside the close, exactly once. */
    CHECK_EQ_INT(dones, N);
    int pieces = 0;
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(c[i].n_done, 1);
        CHECK(!c[i].after_done && !c[i].bad_piece && c[i].result_matches);
        pieces += c[i].n_pieces;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    int pieces2 = 0;
    for (int i = 0; i < N; i++)
        pieces2 += c[i].n_pieces;
    CHECK_EQ_INT(pieces2, pieces);
    CHECK_EQ_INT(dones, N);
    free(c);
}

TEST(close_from_a_callback) {
    enum { N = 8 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    int dones = 0;
    collect *c = calloc(N, sizeof *c);
    for (int i = 0; i < N; i++) {
        c[i].done_counter = &dones;
        CHECK_EQ_INT(submit(lm, &c[i], prompts[i], 1.0f, (uint64_t)i, -1), 0);
    }
    c[0].close_in_text = true;
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    CHECK_EQ_INT(dones, N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(c[i].n_done, 1);
        CHECK(!c[i].after_done && c[i].result_matches);
    }
    CHECK(c[0].n_pieces >= 1); /* and what the engine had made by the close */
    free(c);
}

TEST(load_errors_name_the_path) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[1024] = "";
    ctn_lm *lm = (ctn_lm *)1;
    CHECK_EQ_INT(ctn_lm_open(&loop, "no/such/model.gguf", NULL, &lm, err, sizeof err), CTN_ENOENT);
    CHECK(lm == NULL);
    CHECK_CONTAINS(err, "no/such/model.gguf");
    printf("  %s\n", err);
    /* Not a GGUF at all, and a real one cut short. */
    const char *tmp = getenv("TMPDIR");
    char bad[512], cut[512];
    snprintf(bad, sizeof bad, "%s/test_lm_bad_%d.gguf", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    snprintf(cut, sizeof cut, "%s/test_lm_cut_%d.gguf", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    FILE *f = fopen(bad, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs("this is not a model\n", f);
        fclose(f);
        CHECK(ctn_lm_open(&loop, bad, NULL, &lm, err, sizeof err) < 0);
        CHECK(lm == NULL);
        CHECK_CONTAINS(err, bad);
        printf("  %s\n", err);
        remove(bad);
    }
    FILE *in = fopen(model_path, "rb");
    f = fopen(cut, "wb");
    CHECK(in != NULL && f != NULL);
    if (in != NULL && f != NULL) {
        char buf[4096];
        size_t n = fread(buf, 1, sizeof buf, in);
        fwrite(buf, 1, n, f);
        fclose(f);
        f = NULL;
        CHECK(ctn_lm_open(&loop, cut, NULL, &lm, err, sizeof err) < 0);
        CHECK(lm == NULL);
        CHECK_CONTAINS(err, cut);
        printf("  %s\n", err);
        remove(cut);
    }
    if (in != NULL) fclose(in);
    if (f != NULL) fclose(f);
    /* Bad parameters and arguments. */
    ctn_lm_params p = {.threads = -1};
    CHECK_EQ_INT(ctn_lm_open(&loop, model_path, &p, &lm, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "threads");
    CHECK_EQ_INT(ctn_lm_open(&loop, "", NULL, &lm, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(bad_requests_call_nothing) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    collect *c = calloc(1, sizeof *c);
    char err[512] = "";
    ctn_lm_request r = ctn_lm_request_default();
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, c, NULL, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "no prompt");
    r.prompt = "Hello";
    r.prompt_len = 5;
    r.set.sampling.temp = NAN;
    CHECK(ctn_lm_generate(lm, &r, &callbacks, c, NULL, err, sizeof err) < 0);
    r.set.sampling.temp = 0;
    const int32_t ids[] = {1, 9999};
    r.prompt = NULL;
    r.ids = ids;
    r.n_ids = 2;
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, c, NULL, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "9999");
    CHECK_EQ_INT(ctn_lm_embed(lm, "x", 1, CTN_POOL_NONE, NULL, NULL, NULL, err, sizeof err),
                 CTN_EINVAL);
    CHECK_CONTAINS(err, "pooling");
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(c->n_done + c->n_pieces, 0);
    /* Ids with BOS added give what the text prompt gives. */
    int32_t *t = NULL;
    size_t nt = 0;
    ctn_gguf *g = NULL;
    ctn_vocab *v = NULL;
    CHECK(ctn_gguf_open(&g, model_path, err, sizeof err) == 0 &&
          ctn_vocab_load(&v, g, err, sizeof err) == 0 &&
          ctn_tokenize(v, "Lily liked", 10, false, true, &t, &nt) == 0);
    collect *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    CHECK_EQ_INT(submit(lm, a, "Lily liked", 0, 0, 20), 0);
    r.ids = t;
    r.n_ids = nt;
    r.add_bos = 1;
    r.set.max_tokens = 20;
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, b, NULL, err, sizeof err), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(a->n_done == 1 && b->n_done == 1 && a->n > 0);
    CHECK(a->n == b->n && memcmp(a->text, b->text, a->n) == 0);
    free(t);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    free(a);
    free(b);
    free(c);
    close_all(&loop, lm);
}

/* U+FFFD for every byte that starts no valid character: what lm.c promises for the model's
 * raw bytes. */
static char *make_valid(const char *s, size_t n, size_t *out_n) {
    char *o = malloc(n * 3 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 0;
        for (size_t l = 1; l <= 4 && i + l <= n; l++)
            if (valid_utf8((const unsigned char *)s + i, l)) {
                len = l;
                break;
            }
        if (len > 0) {
            memcpy(o + k, s + i, len);
            k += len;
            i += len;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    o[k] = '\0';
    *out_n = k;
    return o;
}

TEST(pieces_are_whole_utf8) {
    /* At a temperature this high sampling is nearly uniform, and half of this model's 512
     * tokens are single bytes, so characters split across tokens, and bytes that complete
     * nothing, are common. */
    enum { N = 24 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    collect *c = calloc(N, sizeof *c);
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(submit(lm, &c[i], "Once upon a time", 50.0f, 1000 + (uint64_t)i, 120), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    int multibyte = 0, pieces = 0;
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(c[i].n_done, 1);
        CHECK(!c[i].bad_piece && c[i].result_matches);
        pieces += c[i].n_pieces;
        /* The same tokens straight from the engine, made valid the same way. */
        size_t n_raw = 0, n_want = 0;
        char *raw = direct_run("Once upon a time", 50.0f, 1000 + (uint64_t)i, 120, &n_raw);
        char *want = make_valid(raw, n_raw, &n_want);
        CHECK(c[i].n == n_want && memcmp(c[i].text, want, n_want) == 0);
        for (size_t k = 0; k < c[i].n; k++) {
            const unsigned char b = (unsigned char)c[i].text[k];
            if (b >= 0xC2 && b <= 0xF4 && memcmp(c[i].text + k, "\xEF\xBF\xBD", 3) != 0)
                multibyte++;
        }
        free(raw);
        free(want);
    }
    printf("  %d pieces, %d multi-byte characters other than U+FFFD\n", pieces, multibyte);
    /* The test means something only if characters were really split across tokens. */
    CHECK(multibyte > 0);
    free(c);
    close_all(&loop, lm);
}

typedef struct {
    float vec[512];
    int dim, err, n_done;
    char msg[256];
} embd_out;

static void on_embd(void *ud, const float *vec, int dim, int err, const char *msg) {
    embd_out *o = ud;
    o->n_done++;
    o->dim = dim;
    o->err = err;
    snprintf(o->msg, sizeof o->msg, "%s", msg);
    if (vec != NULL && dim > 0 && dim <= 512) memcpy(o->vec, vec, (size_t)dim * sizeof *vec);
}

TEST(embeddings_through_the_same_engine) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    embd_out *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *x = calloc(1, sizeof *x);
    collect *g = calloc(1, sizeof *g);
    char err[512];
    CHECK_EQ_INT(
        ctn_lm_embed(lm, "The dog ran", 11, CTN_POOL_MEAN, on_embd, a, NULL, err, sizeof err), 0);
    CHECK_EQ_INT(submit(lm, g, "Once upon a time", 0, 0, 20), 0);
    CHECK_EQ_INT(
        ctn_lm_embed(lm, "The dog ran", 11, CTN_POOL_LAST, on_embd, b, NULL, err, sizeof err), 0);
    uint64_t h = 0;
    CHECK_EQ_INT(
        ctn_lm_embed(lm, "A little bird", 13, CTN_POOL_MEAN, on_embd, x, &h, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_lm_cancel(lm, h), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(a->n_done, 1);
    CHECK_EQ_INT(b->n_done, 1);
    CHECK_EQ_INT(x->n_done, 1);
    CHECK_EQ_INT(g->n_done, 1);
    CHECK_EQ_INT(a->err, 0);
    CHECK_EQ_INT(a->dim, 64); /* stories260K's n_embd */
    CHECK_EQ_INT(b->dim, 64);
    double na = 0, diff = 0;
    for (int i = 0; i < a->dim; i++) {
        na += (double)a->vec[i] * a->vec[i];
        diff += fabs((double)a->vec[i] - b->vec[i]);
    }
    CHECK(fabs(na - 1.0) < 1e-4); /* L2-normalised */
    CHECK(diff > 1e-3);           /* mean and last pooling differ */
    /* Cancelled at once: normally before the engine computed it; an embedding is one short
     * step, so the engine may have finished it first, and then it comes whole. */
    CHECK((x->err == CTN_ECANCELED && x->dim == 0) || (x->err == 0 && x->dim == 64));
    printf("  the cancelled embedding: %s\n", x->err ? x->msg : "finished first");
    free(a);
    free(b);
    free(x);
    free(g);
    close_all(&loop, lm);
}

/*
 * A stream is one piece per token whatever the timing: a loop that is slow to take the
 * first piece (the engine meanwhile makes the rest, so they reach the loop in one wake-up)
 * still gets each token's text as its own on_text, in order.
 */
TEST(one_piece_per_token_however_slow_the_loop) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    char *want = direct_run("Once upon a time", 0, 0, 60, NULL);
    const int want_pieces = direct_pieces;
    for (int sleep_ms = 0; sleep_ms <= 200; sleep_ms += 200) {
        collect *c = calloc(1, sizeof *c);
        c->sleep_first_ms = sleep_ms;
        CHECK_EQ_INT(submit(lm, c, "Once upon a time", 0, 0, 60), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_EQ_INT(c->n_done, 1);
        CHECK_EQ_INT(c->completion_tokens, 60);
        CHECK_EQ_INT(c->n_pieces, want_pieces);
        CHECK(want_pieces >= 55); /* stories260K's greedy tokens nearly all have text */
        c->text[c->n] = '\0';
        CHECK_STR(c->text, want);
        CHECK(!c->bad_piece && c->result_matches);
        free(c);
    }
    free(want);
    close_all(&loop, lm);
}

/*
 * Allocation failures through the bridge while its engine thread runs (SQLite's discipline):
 * for every N, the N-th allocation after a request is made (on the loop's thread or the
 * engine's: the hook counts both) fails, once or from then on. Each request ends cleanly: the
 * call fails with CTN_ENOMEM and calls nothing, or on_done comes exactly once, with the
 * engine's own text or an out-of-memory error; the loop then closes.
 */
TEST(allocation_failures_through_the_bridge) {
    char *want = direct_run("Once upon a time", 0, 0, 12, NULL);
    for (int once = 1; once >= 0; once--) {
        long n = 0;
        int ok = 0, failed = 0;
        for (; n < 20000; n++) {
            uv_loop_t loop;
            uv_loop_init(&loop);
            ctn_lm *lm = open_model(&loop);
            CHECK(lm != NULL);
            if (lm == NULL) break;
            collect *c = calloc(1, sizeof *c);
            c->quiet = true;
            const long before = ctn__alloc_n_failed;
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            ctn_lm_request r = ctn_lm_request_default();
            r.prompt = "Once upon a time";
            r.prompt_len = strlen(r.prompt);
            r.set.sampling.temp = 0;
            r.set.max_tokens = 12;
            char err[256] = "";
            const int rc = ctn_lm_generate(lm, &r, &callbacks, c, NULL, err, sizeof err);
            if (rc == 0) uv_run(&loop, UV_RUN_DEFAULT);
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            const bool touched = ctn__alloc_n_failed > before;
            if (rc < 0) {
                CHECK_EQ_INT(rc, CTN_ENOMEM);
                CHECK_EQ_INT(c->n_done, 0);
                failed++;
            } else {
                CHECK_EQ_INT(c->n_done, 1);
                CHECK(!c->after_done && !c->bad_piece);
                c->text[c->n] = '\0';
                if (!strcmp(c->finish, "length")) {
                    CHECK_STR(c->text, want);
                    ok++;
                } else {
                    CHECK_STR(c->finish, "error");
                    CHECK_EQ_INT(c->error, CTN_ENOMEM);
                    failed++;
                }
            }
            if (!touched) CHECK(rc == 0 && !strcmp(c->finish, "length"));
            free(c);
            close_all(&loop, lm);
            if (!touched) break;
        }
        printf("  %s: %ld allocations, %d requests failed cleanly, %d gave the text\n",
               once ? "each failing once" : "failing from then on", n, failed, ok);
        CHECK(n > 2 && n < 20000 && failed > 0 && ok > 0);
    }
    free(want);
}

/* ---- scores ------------------------------------------------------------------------------- */

typedef struct {
    int n_done;
    int n_scores;
    double scores[CTN_GEN_MAX_SCORE_IDS];
    int64_t completion_tokens;
    ctn_finish finish;
} score_out;

static void score_done(void *ud, const ctn_lm_result *r) {
    score_out *o = ud;
    o->n_done++;
    o->finish = r->finish;
    o->n_scores = r->n_scores;
    o->completion_tokens = r->completion_tokens;
    for (int i = 0; i < r->n_scores && i < CTN_GEN_MAX_SCORE_IDS; i++)
        o->scores[i] = r->scores[i];
    if (r->finish == CTN_FINISH_ERROR) printf("  request failed: %s\n", r->message);
}

/*
 * The whole vocabulary of stories260K (512 ids) scored after one prompt by 8 concurrent
 * requests of 64 candidates each: the probabilities sum to 1; a request that also generates
 * gets the same scores; one without candidates gets none; bad candidates are refused,
 * naming the id, with no callback.
 */
TEST(scores_through_the_bridge) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    enum { CH = CTN_GEN_MAX_SCORE_IDS, NCH = 512 / CH };
    static int32_t ids[512];
    for (int i = 0; i < 512; i++)
        ids[i] = i;
    static score_out outs[NCH + 2];
    memset(outs, 0, sizeof outs);
    const ctn_lm_callbacks cb = {NULL, score_done};
    char err[512] = "";
    for (int k = 0; k < NCH + 2; k++) {
        ctn_lm_request r = ctn_lm_request_default();
        r.prompt = "Once upon a time";
        r.prompt_len = strlen(r.prompt);
        r.set.max_tokens = k < NCH ? 0 : 3;
        r.score_ids = k <= NCH ? ids + (k % NCH) * CH : NULL;
        r.n_score_ids = k <= NCH ? CH : 0;
        CHECK_EQ_INT(ctn_lm_generate(lm, &r, &cb, &outs[k], NULL, err, sizeof err), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    double sum = 0, best = -INFINITY;
    for (int k = 0; k < NCH; k++) {
        CHECK_EQ_INT(outs[k].n_done, 1);
        CHECK_EQ_INT(outs[k].n_scores, CH);
        CHECK_EQ_INT(outs[k].completion_tokens, 0);
        CHECK_EQ_INT(outs[k].finish, CTN_FINISH_LENGTH);
        for (int i = 0; i < CH; i++) {
            CHECK(outs[k].scores[i] <= 0);
            sum += exp(outs[k].scores[i]);
            if (outs[k].scores[i] > best) best = outs[k].scores[i];
        }
    }
    if (!(fabs(sum - 1) < 1e-9)) printf("  the probabilities sum to %.17g\n", sum);
    CHECK(fabs(sum - 1) < 1e-9);
    CHECK(best > log(1.0 / 512)); /* a trained model is not uniform */
    CHECK_EQ_INT(outs[NCH].n_scores, CH);
    CHECK_EQ_INT(outs[NCH].completion_tokens, 3);
    for (int i = 0; i < CH; i++)
        CHECK(outs[NCH].scores[i] == outs[0].scores[i]);
    CHECK_EQ_INT(outs[NCH + 1].n_done, 1);
    CHECK_EQ_INT(outs[NCH + 1].n_scores, 0);
    /* Refused, naming the id; nothing is called. */
    score_out bad = {0};
    ctn_lm_request r = ctn_lm_request_default();
    r.prompt = "Once upon a time";
    r.prompt_len = strlen(r.prompt);
    const int32_t outside[2] = {3, 512};
    r.score_ids = outside;
    r.n_score_ids = 2;
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &cb, &bad, NULL, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "score id 1 is 512, outside the vocabulary of 512");
    r.score_ids = ids;
    r.n_score_ids = CH + 1;
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &cb, &bad, NULL, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "n_score_ids is 65");
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(bad.n_done, 0);
    close_all(&loop, lm);
}

/* ---- log-probabilities -------------------------------------------------------------------- */

typedef struct {
    collect c; /* the text and the end */
    int n_lp;
    int n_top_seen;
    char bytes[8192]; /* every token's bytes, concatenated */
    size_t n_bytes;
    bool bad;           /* a value, an order, a text or bytes that are wrong */
    int lp_before_text; /* on_text calls that had a token's logprobs before them */
    int split;          /* tokens whose bytes are not whole UTF-8 */
    const ctn_vocab *v;
    double first_lp, first_top0;
    int32_t first_id, first_top0_id;
} lp_out;

/* A token's bytes and text are the vocabulary's and valid UTF-8 (written apart from lm.c). */
static bool token_ok(const lp_out *o, const ctn_lm_logprob *t) {
    char buf[512];
    const int n = ctn_token_to_piece(o->v, t->id, buf, sizeof buf, 0, true);
    if (n < 0 || (size_t)n != t->n_bytes || memcmp(buf, t->bytes, t->n_bytes) != 0) return false;
    if (!(t->logprob <= 0) || !isfinite(t->logprob)) return false;
    const size_t tl = strlen(t->text);
    if (!valid_utf8((const unsigned char *)t->text, tl)) return false;
    /* Whole characters are kept; anything else is U+FFFD. */
    if (valid_utf8((const unsigned char *)t->bytes, t->n_bytes) &&
        memchr(t->bytes, 0, t->n_bytes) == NULL)
        return tl == t->n_bytes && memcmp(t->text, t->bytes, tl) == 0;
    return strstr(t->text, "\xEF\xBF\xBD") != NULL;
}

static void lp_token(void *ud, const ctn_lm_token_logprobs *t) {
    lp_out *o = ud;
    if (o->c.n_done > 0) o->c.after_done = true;
    if (!token_ok(o, &t->token)) o->bad = true;
    for (int i = 0; i < t->n_top; i++) {
        if (!token_ok(o, &t->top[i])) o->bad = true;
        if (i > 0 && t->top[i].logprob > t->top[i - 1].logprob) o->bad = true;
    }
    if (t->n_top > 0 && t->token.logprob > t->top[t->n_top - 1].logprob) {
        bool in = false; /* at least as likely as the last one listed: listed */
        for (int i = 0; i < t->n_top; i++)
            in |= t->top[i].id == t->token.id && t->top[i].logprob == t->token.logprob;
        if (!in) o->bad = true;
    }
    if (o->n_lp == 0) {
        o->first_id = t->token.id;
        o->first_lp = t->token.logprob;
        o->first_top0_id = t->n_top > 0 ? t->top[0].id : -1;
        o->first_top0 = t->n_top > 0 ? t->top[0].logprob : 0;
    }
    if (!valid_utf8((const unsigned char *)t->token.bytes, t->token.n_bytes)) o->split++;
    /* The text has control tokens as nothing, the bytes as their text. */
    char plain[512];
    const int n = ctn_token_to_piece(o->v, t->token.id, plain, sizeof plain, 0, false);
    if (n >= 0 && n <= (int)sizeof plain && o->n_bytes + (size_t)n < sizeof o->bytes) {
        memcpy(o->bytes + o->n_bytes, plain, (size_t)n);
        o->n_bytes += (size_t)n;
    }
    o->n_lp++;
    o->n_top_seen = t->n_top;
}

static void lp_text(void *ud, const char *piece, size_t len) {
    lp_out *o = ud;
    if (o->n_lp > 0) o->lp_before_text++;
    on_text(&o->c, piece, len);
}

static void lp_done(void *ud, const ctn_lm_result *r) {
    on_done(&((lp_out *)ud)->c, r);
}

static int submit_lp(ctn_lm *lm, lp_out *o, const char *prompt, float temp, uint64_t seed,
                     int max_tokens, bool logprobs, int top) {
    ctn_lm_request r = sampled(prompt, temp, seed, max_tokens);
    r.logprobs = logprobs;
    r.top_logprobs = top;
    r.on_logprobs = lp_token;
    o->v = ctn_lm_vocab(lm);
    static const ctn_lm_callbacks cb = {lp_text, lp_done};
    char err[512] = "";
    const int rc = ctn_lm_generate(lm, &r, &cb, o, &o->c.handle, err, sizeof err);
    if (rc < 0) printf("  generate: %s\n", err);
    return rc;
}

/*
 * Log-probabilities through the bridge, on concurrent requests sampled hot enough to split
 * characters across tokens: one per generated token, before the text it carries; each
 * token's bytes are the vocabulary's (control tokens as their text), its text valid UTF-8;
 * the alternatives sorted; the tokens' pieces, made valid, are the text; the same text as
 * without them; the greedy token is the most likely alternative; top_logprobs out of range
 * is refused, naming it.
 */
TEST(logprobs_through_the_bridge) {
    enum { N = 8, T = 80 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    lp_out *o = calloc(2 * N + 1, sizeof *o);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(submit_lp(lm, &o[i], "Once upon a time", 50.0f, 7 + (uint64_t)i, T, true,
                               i % 3 == 0 ? 0 : 20 - i),
                     0);
        CHECK_EQ_INT(
            submit_lp(lm, &o[N + i], "Once upon a time", 50.0f, 7 + (uint64_t)i, T, false, 0), 0);
    }
    CHECK_EQ_INT(submit_lp(lm, &o[2 * N], "Once upon a time", 0, 0, 20, true, 3), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    int split = 0;
    for (int i = 0; i < N; i++) {
        lp_out *a = &o[i], *b = &o[N + i];
        CHECK_EQ_INT(a->c.n_done, 1);
        CHECK(!a->bad && !a->c.after_done && !a->c.bad_piece && a->c.result_matches);
        CHECK_EQ_INT(a->n_lp, (int)a->c.completion_tokens);
        CHECK_EQ_INT(a->n_top_seen, i % 3 == 0 ? 0 : 20 - i);
        CHECK_EQ_INT(a->lp_before_text, a->c.n_pieces);
        /* The same text as without them, and none came there. */
        CHECK(a->c.n == b->c.n && memcmp(a->c.text, b->c.text, a->c.n) == 0);
        CHECK_EQ_INT(b->n_lp, 0);
        size_t n_want = 0;
        char *want = make_valid(a->bytes, a->n_bytes, &n_want);
        CHECK(a->c.n == n_want && memcmp(a->c.text, want, n_want) == 0);
        free(want);
        split += a->split;
    }
    printf("  %d tokens that are not whole UTF-8\n", split);
    CHECK(split > 0);
    lp_out *g = &o[2 * N];
    CHECK_EQ_INT(g->n_lp, 20);
    CHECK(!g->bad);
    CHECK_EQ_INT(g->first_id, g->first_top0_id);
    CHECK(g->first_lp == g->first_top0);
    /* Refused with a reason; nothing is called. */
    lp_out bad = {0};
    ctn_lm_request r = ctn_lm_request_default();
    r.prompt = "Once upon a time";
    r.prompt_len = strlen(r.prompt);
    r.logprobs = true;
    r.top_logprobs = 21;
    char err[512] = "";
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, &bad, NULL, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "top_logprobs is 21");
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(bad.c.n_done, 0);
    free(o);
    close_all(&loop, lm);
}

/* ---- sessions ---------------------------------------------------------------------------- */

/* One keyed request: prompt, greedy, max_tokens; 0 or the error. */
static int submit_keyed(ctn_lm *lm, collect *c, const char *key, const char *prompt,
                        int max_tokens) {
    ctn_lm_request r = ctn_lm_request_default();
    r.prompt = prompt;
    r.prompt_len = strlen(prompt);
    r.set.max_tokens = max_tokens;
    r.session = key;
    char err[512] = "";
    c->lm = lm;
    const int rc = ctn_lm_generate(lm, &r, &callbacks, c, &c->handle, err, sizeof err);
    if (rc < 0) printf("  generate: %s\n", err);
    return rc;
}

/*
 * A chat that sends its whole history every turn: with a keyed session each turn computes
 * only what is new (the earlier turns are found in the session, all but the last generated
 * token, whose KV nothing has computed yet), and the text is what a plain request for the
 * same prompt gives.
 */
TEST(keyed_sessions_compute_only_the_new_turn) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    collect *c = calloc(1, sizeof *c);
    char prompt[4096] = "Once upon a time";
    int64_t held = 0; /* tokens the session holds after the last turn */
    for (int turn = 0; turn < 4; turn++) {
        memset(c, 0, sizeof *c);
        CHECK_EQ_INT(submit_keyed(lm, c, "chat-1", prompt, 9), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_EQ_INT(c->n_done, 1);
        CHECK_STR(c->finish, "length");
        c->text[c->n] = '\0';
        char *want = direct_run(prompt, 0, 0, 9, NULL);
        CHECK_STR(c->text, want);
        free(want);
        if (turn == 0) CHECK_EQ_INT(c->cached_tokens, 0);
        else CHECK_EQ_INT(c->cached_tokens, held - 1);
        held = c->prompt_tokens + c->completion_tokens;
        CHECK_EQ_INT(ctn_lm_session_count(lm), 1);
        /* The next turn: the reply as it came, and more. */
        strncat(prompt, c->text, sizeof prompt - strlen(prompt) - 40);
        strcat(prompt, " Then the dog");
    }
    /* Another prompt on the key (a history that changed) starts the session again. */
    memset(c, 0, sizeof *c);
    CHECK_EQ_INT(submit_keyed(lm, c, "chat-1", "Lily liked", 5), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(c->n_done, 1);
    c->text[c->n] = '\0';
    char *want = direct_run("Lily liked", 0, 0, 5, NULL);
    CHECK_STR(c->text, want);
    free(want);
    /* Keys are kept apart, and an empty key or both kinds of session are refused. */
    memset(c, 0, sizeof *c);
    CHECK_EQ_INT(submit_keyed(lm, c, "chat-2", "Lily liked", 5), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(ctn_lm_session_count(lm), 2);
    ctn_lm_request r = ctn_lm_request_default();
    r.prompt = "x";
    r.prompt_len = 1;
    r.session = "";
    char err[256] = "";
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, c, NULL, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "session key is empty") != NULL);
    r.session = "k";
    r.session_id = 5;
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, c, NULL, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "not both") != NULL);
    /* Without a session, an empty prompt is still refused. */
    r = ctn_lm_request_default();
    r.prompt = "";
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, c, NULL, err, sizeof err), CTN_EINVAL);
    free(c);
    close_all(&loop, lm);
}

/* Beyond CTN_LM_MAX_SESSIONS keys, the least recently used one goes. */
TEST(keyed_sessions_are_bounded) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    /* Rounds of 64 keys at once (one engine batch each); each round's keys are idle when
     * the next comes, so the last round's three new keys close the three oldest. */
    enum { N_KEYS = CTN_LM_MAX_SESSIONS + 3, ROUND = 64 };
    collect *cs = calloc(ROUND, sizeof *cs);
    char key[32], next[256] = "";
    for (int i = 0; i < N_KEYS; i += ROUND) {
        const int m = N_KEYS - i < ROUND ? N_KEYS - i : ROUND;
        memset(cs, 0, ROUND * sizeof *cs);
        for (int k = 0; k < m; k++) {
            snprintf(key, sizeof key, "k%d", i + k);
            CHECK_EQ_INT(submit_keyed(lm, &cs[k], key, "The dog ran", 1), 0);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        for (int k = 0; k < m; k++)
            CHECK_EQ_INT(cs[k].n_done, 1);
        if (i == 0) {
            cs[0].text[cs[0].n] = '\0';
            snprintf(next, sizeof next, "The dog ran%s and ran", cs[0].text);
        }
    }
    free(cs);
    collect *c = calloc(1, sizeof *c);
    CHECK_EQ_INT(ctn_lm_session_count(lm), CTN_LM_MAX_SESSIONS);
    /* k0 went (least recently used): its next turn finds nothing (the prompt is shorter than
     * a KV block, so the prefix cache has none of it); the newest key still has its turn. */
    memset(c, 0, sizeof *c);
    CHECK_EQ_INT(submit_keyed(lm, c, "k0", next, 1), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(c->cached_tokens, 0);
    snprintf(key, sizeof key, "k%d", CTN_LM_MAX_SESSIONS + 2);
    memset(c, 0, sizeof *c);
    CHECK_EQ_INT(submit_keyed(lm, c, key, next, 1), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(c->cached_tokens > 0);
    CHECK_EQ_INT(ctn_lm_session_count(lm), CTN_LM_MAX_SESSIONS);
    free(c);
    close_all(&loop, lm);
}

/* A prompt-only request fills a raw session; forks of it sample as plain requests do with
 * the same prompt and seed, and the prompt is computed once. */
TEST(forks_of_a_filled_session) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_model(&loop);
    CHECK(lm != NULL);
    if (lm == NULL) {
        uv_loop_close(&loop);
        return;
    }
    collect *c = calloc(5, sizeof *c);
    const char *prompt = "One day, Tom went to the park with his";
    const int64_t sid = ctn_lm_session_new(lm);
    CHECK(sid > 0);
    ctn_lm_request r = ctn_lm_request_default();
    r.prompt = prompt;
    r.prompt_len = strlen(prompt);
    r.set.max_tokens = 0;
    r.session_id = sid;
    char err[256] = "";
    c[0].lm = lm;
    CHECK_EQ_INT(ctn_lm_generate(lm, &r, &callbacks, &c[0], NULL, err, sizeof err), 0);
    int64_t kids[4];
    CHECK_EQ_INT(ctn_lm_session_fork(lm, sid, 4, kids), 0);
    CHECK_EQ_INT(ctn_lm_session_fork(lm, sid, 0, kids), CTN_EINVAL);
    CHECK_EQ_INT(ctn_lm_session_close(lm, sid), 0);
    for (int i = 0; i < 4; i++) {
        ctn_lm_request k = ctn_lm_request_default();
        k.session_id = kids[i];
        k.set.max_tokens = 12;
        k.set.sampling.temp = 0.9f;
        k.set.sampling.top_k = 0;
        k.set.sampling.top_p = 1.0f;
        k.set.sampling.min_p = 0;
        k.set.sampling.seed = 100 + (uint64_t)i;
        c[i + 1].lm = lm;
        CHECK_EQ_INT(ctn_lm_generate(lm, &k, &callbacks, &c[i + 1], NULL, err, sizeof err), 0);
        CHECK_EQ_INT(ctn_lm_session_close(lm, kids[i]), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(c[0].n_done, 1);
    CHECK_EQ_INT(c[0].completion_tokens, 0);
    const int64_t n_prompt = c[0].prompt_tokens;
    CHECK(n_prompt > 5);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(c[i + 1].n_done, 1);
        CHECK_EQ_INT(c[i + 1].prompt_tokens, n_prompt);
        CHECK_EQ_INT(c[i + 1].cached_tokens, n_prompt - 1); /* only the last is computed again */
        c[i + 1].text[c[i + 1].n] = '\0';
        char *want = direct_run(prompt, 0.9f, 100 + (uint64_t)i, 12, NULL);
        CHECK_STR(c[i + 1].text, want);
        free(want);
    }
    CHECK_EQ_INT(ctn_lm_session_close(lm, sid), CTN_ENOENT);
    free(c);
    close_all(&loop, lm);
}

int main(void) {
    snprintf(model_path, sizeof model_path, "%s/models/stories260K.gguf", shared_dir());
    if (!have_model()) {
        printf("skip: %s is missing (set CTN_SHARED to the shared folder)\n", model_path);
        return 77;
    }
    RUN(greedy_text_equals_the_engines);
    RUN(concurrent_requests_are_batched_and_unchanged);
    RUN(many_short_requests);
    RUN(one_model_per_loop_and_file);
    RUN(cancel_gives_one_done_and_nothing_after);
    RUN(close_with_requests_in_flight);
    RUN(close_from_a_callback);
    RUN(load_errors_name_the_path);
    RUN(bad_requests_call_nothing);
    RUN(pieces_are_whole_utf8);
    RUN(embeddings_through_the_same_engine);
    RUN(one_piece_per_token_however_slow_the_loop);
    RUN(allocation_failures_through_the_bridge);
    RUN(keyed_sessions_compute_only_the_new_turn);
    RUN(keyed_sessions_are_bounded);
    RUN(forks_of_a_filled_session);
    RUN(scores_through_the_bridge);
    RUN(logprobs_through_the_bridge);
    return test_summary();
}
