/*
 * The C API (include/catena.h) through its public header only: loading errors (a missing
 * model, chain files that fail or return no runnable), JSON errors with their positions,
 * invoke / stream / batch, cancellation, the calls refused on the loop thread, many submits
 * from four threads, and freeing a runtime while calls are in flight (they are cancelled).
 * The chains are Lua lambdas written to a temporary folder; the model tests use stories260K
 * from CTN_SHARED and are skipped without it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catena.h"
#include "test.h"

static char dir[] = "/tmp/ctn-capi-XXXXXX";

/* Writes a chain file of the temporary folder; returns its path (static: one at a time). */
static const char *chain_file(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

static const char *model_path(void) {
    static char path[512];
    const char *shared = getenv("CTN_SHARED");
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    return access(path, R_OK) == 0 ? path : NULL;
}

/* Upper-cases strings after a wait of a millisecond; {fail = true} raises; {ms = N} sleeps
 * N ms and returns the input. */
static const char *const LAMBDA =
    "local catena = require('catena')\n"
    "return catena.lambda(function(x)\n"
    "  if type(x) == 'table' and x.fail then error('asked to fail') end\n"
    "  if type(x) == 'table' and x.ms then catena.sleep(x.ms) return x end\n"
    "  catena.sleep(1)\n"
    "  return type(x) == 'string' and x:upper() or x\n"
    "end, 'upper')\n";

/* ---- waiting for callbacks ------------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;         /* done callbacks so far */
    int status;        /* of the last one */
    char text[4096];   /* its text */
    char chunks[4096]; /* the chunks of a stream, concatenated */
    int n_chunks;
    int bad; /* outputs that were not what they should be */
    /* what callbacks on the loop thread got back from the calls refused there */
    int sync_rc, load_rc, free_rc;
    char sync_msg[512];
    ctn_chain *chain;
    ctn_runtime *rt;
} waiter;

static void waiter_init(waiter *w) {
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void waiter_close(waiter *w) {
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void on_done(int status, const char *text, void *ud) {
    waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    snprintf(w->text, sizeof w->text, "%s", text);
    w->calls++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void on_chunk(const char *chunk, void *ud) {
    waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    const size_t n = strlen(w->chunks);
    snprintf(w->chunks + n, sizeof w->chunks - n, "%s", chunk);
    w->n_chunks++;
    pthread_mutex_unlock(&w->mu);
}

/* Waits until n done callbacks have come (at most 60 s: a hang fails the test, not ctest). */
static int wait_calls(waiter *w, int n) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (w->calls < n && rc == 0)
        rc = pthread_cond_timedwait(&w->cv, &w->mu, &until);
    const int got = w->calls;
    pthread_mutex_unlock(&w->mu);
    return got >= n;
}

/* A runtime with the lambda chain loaded. */
static ctn_runtime *runtime_with(const char *name, const char *text, ctn_chain **chain) {
    ctn_runtime *rt = NULL;
    if (ctn_runtime_new(&rt) < 0) return NULL;
    const char *path = chain_file(name, text);
    if (path == NULL || ctn_runtime_load_chain(rt, path, chain) < 0) {
        printf("  cannot load %s: %s\n", name, ctn_last_error());
        ctn_runtime_free(rt);
        return NULL;
    }
    return rt;
}

/* A waiter and a runtime with the lambda chain, for a test (NULL: it failed), and their end. */
static ctn_runtime *lambda_runtime(waiter *w, ctn_chain **chain) {
    waiter_init(w);
    ctn_runtime *rt = runtime_with("upper.lua", LAMBDA, chain);
    CHECK(rt != NULL);
    if (rt == NULL) waiter_close(w);
    return rt;
}

static void lambda_runtime_free(ctn_runtime *rt, waiter *w) {
    CHECK_EQ_INT(ctn_runtime_free(rt), CTN_OK);
    waiter_close(w);
}

/* ---- loading --------------------------------------------------------------------------------- */

TEST(bad_model_path) {
    ctn_runtime *rt;
    CHECK_EQ_INT(ctn_runtime_new(&rt), CTN_OK);
    CHECK_EQ_INT(ctn_runtime_load_model(rt, "/nonexistent/model.gguf", NULL), CTN_ENOENT);
    CHECK_CONTAINS(ctn_last_error(), "/nonexistent/model.gguf");
    /* A file that is not a GGUF model: this test's own chain folder has one. */
    const char *path = chain_file("notamodel.gguf", "this is not a GGUF file\n");
    const int rc = ctn_runtime_load_model(rt, path, NULL);
    CHECK(rc == CTN_EFORMAT || rc == CTN_EIO);
    CHECK_CONTAINS(ctn_last_error(), "notamodel.gguf");
    /* Options: the JSON, the keys and their values are checked before anything loads. */
    CHECK_EQ_INT(ctn_runtime_load_model(rt, "/nonexistent/model.gguf", "{\"ctxx\": 64}"),
                 CTN_EINVAL);
    CHECK_CONTAINS(ctn_last_error(), "unknown key 'ctxx'");
    CHECK_EQ_INT(ctn_runtime_load_model(rt, "/nonexistent/model.gguf", "{\"threads\": \"two\"}"),
                 CTN_EINVAL);
    CHECK_CONTAINS(ctn_last_error(), "options.threads");
    CHECK_EQ_INT(ctn_runtime_load_model(rt, "/nonexistent/model.gguf", "{\"threads\": 100000}"),
                 CTN_EINVAL);
    CHECK_CONTAINS(ctn_last_error(), "threads");
    CHECK_EQ_INT(ctn_runtime_load_model(rt, "/nonexistent/model.gguf", "{\"ctx\": 64,}"),
                 CTN_EFORMAT);
    CHECK_CONTAINS(ctn_last_error(), "options: line 1, column 12");
    CHECK_EQ_INT(ctn_runtime_free(rt), CTN_OK);
}

TEST(chain_file_errors) {
    ctn_runtime *rt;
    ctn_chain *ch = (ctn_chain *)1;
    CHECK_EQ_INT(ctn_runtime_new(&rt), CTN_OK);
    CHECK_EQ_INT(ctn_runtime_load_chain(rt, "/nonexistent/chain.lua", &ch), CTN_ENOENT);
    CHECK_CONTAINS(ctn_last_error(), "/nonexistent/chain.lua");
    CHECK(ch == NULL);
    CHECK_EQ_INT(ctn_runtime_load_chain(rt, chain_file("number.lua", "return 42\n"), &ch),
                 CTN_ETYPE);
    CHECK_CONTAINS(ctn_last_error(), "number.lua: the file must return a runnable");
    CHECK_CONTAINS(ctn_last_error(), "not number");
    CHECK_EQ_INT(
        ctn_runtime_load_chain(
            rt, chain_file("syntax.lua", "local catena = require('catena')\nlocal x = = 1\n"), &ch),
        CTN_ECHAIN);
    CHECK_CONTAINS(ctn_last_error(), "syntax.lua:2:");
    CHECK_EQ_INT(
        ctn_runtime_load_chain(rt, chain_file("raise.lua", "\n\nerror('no chain today')\n"), &ch),
        CTN_ECHAIN);
    CHECK_CONTAINS(ctn_last_error(), "raise.lua:3: no chain today");
    /* A chain file that waits at load time gets an error, not a loop run inside the loop. */
    CHECK_EQ_INT(ctn_runtime_load_chain(
                     rt,
                     chain_file("wait.lua", "local catena = require('catena')\n"
                                            "catena.sleep(1)\nreturn catena.passthrough()\n"),
                     &ch),
                 CTN_ECHAIN);
    CHECK_CONTAINS(ctn_last_error(), "cannot wait here");
    CHECK_EQ_INT(ctn_runtime_load_chain(rt, NULL, &ch), CTN_EINVAL);
    CHECK_EQ_INT(ctn_runtime_free(rt), CTN_OK);
}

/* ---- calls ----------------------------------------------------------------------------------- */

TEST(bad_json) {
    waiter w;
    ctn_chain *ch;
    ctn_runtime *rt = lambda_runtime(&w, &ch);
    if (rt == NULL) return;
    uint64_t id = 99;
    CHECK_EQ_INT(ctn_invoke(ch, "{\"a\": tru}", NULL, on_done, &w, &id), CTN_EFORMAT);
    CHECK_CONTAINS(ctn_last_error(), "input: line 1, column 10 (byte 9)");
    CHECK_EQ_INT(id, 0);
    CHECK_EQ_INT(ctn_invoke(ch, "\"x\"", "[1]", on_done, &w, NULL), CTN_ETYPE);
    CHECK_CONTAINS(ctn_last_error(), "config: must be a JSON object, not array");
    CHECK_EQ_INT(ctn_invoke(ch, "\"x\"", "{\"temprature\": 0}", on_done, &w, NULL), CTN_ENOENT);
    CHECK_CONTAINS(ctn_last_error(), "temperature");
    CHECK_EQ_INT(ctn_invoke(ch, "\"x\"", "{\"ctx\": 64}", on_done, &w, NULL), CTN_EINVAL);
    CHECK_CONTAINS(ctn_last_error(), "ctx");
    CHECK_EQ_INT(ctn_invoke(ch, "\"x\"", "{\n  \"tags\": [\"a\"\n}", on_done, &w, NULL),
                 CTN_EFORMAT);
    CHECK_CONTAINS(ctn_last_error(), "config: line 3, column 1");
    CHECK_EQ_INT(ctn_batch(ch, "{\"a\": 1}", NULL, on_done, &w, NULL), CTN_ETYPE);
    CHECK_CONTAINS(ctn_last_error(), "inputs: must be a non-empty JSON array, not object");
    CHECK_EQ_INT(ctn_batch(ch, "[]", NULL, on_done, &w, NULL), CTN_ETYPE);
    CHECK_EQ_INT(ctn_stream(ch, "\"x\"", NULL, NULL, on_done, &w, NULL), CTN_EINVAL);
    char *out = (char *)1;
    CHECK_EQ_INT(ctn_invoke_sync(ch, "nul", NULL, &out), CTN_EFORMAT);
    CHECK_CONTAINS(out, "input: line 1, column 4");
    free(out);
    /* Nothing was called for any of them. */
    CHECK_EQ_INT(w.calls, 0);
    lambda_runtime_free(rt, &w);
}

TEST(invoke_stream_batch) {
    waiter w;
    ctn_chain *ch;
    ctn_runtime *rt = lambda_runtime(&w, &ch);
    if (rt == NULL) return;
    uint64_t id = 0;
    CHECK_EQ_INT(ctn_invoke(ch, "\"hello\"", "{\"tags\": [\"t\"]}", on_done, &w, &id), CTN_OK);
    CHECK(id != 0);
    CHECK(wait_calls(&w, 1));
    CHECK_EQ_INT(w.status, CTN_OK);
    CHECK_STR(w.text, "\"HELLO\"");
    CHECK_EQ_INT(ctn_stream(ch, "\"str\\u00e9am\"", NULL, on_chunk, on_done, &w, NULL), CTN_OK);
    CHECK(wait_calls(&w, 2));
    CHECK_STR(w.text, "\"STRéAM\"");
    CHECK_STR(w.chunks, "\"STRéAM\""); /* a lambda's output is its one chunk */
    CHECK_EQ_INT(
        ctn_batch(ch, "[\"a\", {\"k\": 1}, \"c\"]", "{\"max_concurrency\": 1}", on_done, &w, NULL),
        CTN_OK);
    CHECK(wait_calls(&w, 3));
    CHECK_EQ_INT(w.status, CTN_OK);
    CHECK_STR(w.text, "[\"A\",{\"k\":1},\"C\"]");
    CHECK_EQ_INT(ctn_batch(ch, "[\"a\", {\"fail\": true}]", NULL, on_done, &w, NULL), CTN_OK);
    CHECK(wait_calls(&w, 4));
    CHECK_EQ_INT(w.status, CTN_ECHAIN);
    CHECK_CONTAINS(w.text, "inputs[1]: upper: ");
    CHECK_CONTAINS(w.text, "asked to fail");
    char *out = NULL;
    CHECK_EQ_INT(ctn_invoke_sync(ch, "{\"fail\": true}", NULL, &out), CTN_ECHAIN);
    CHECK_CONTAINS(out, "asked to fail");
    CHECK_CONTAINS(ctn_last_error(), "asked to fail");
    free(out);
    CHECK_EQ_INT(ctn_invoke_sync(ch, "[1, 2.5, null]", NULL, &out), CTN_OK);
    CHECK_STR(out, "[1,2.5,null]");
    free(out);
    lambda_runtime_free(rt, &w);
}

TEST(cancel) {
    waiter w;
    ctn_chain *ch;
    ctn_runtime *rt = lambda_runtime(&w, &ch);
    if (rt == NULL) return;
    uint64_t id = 0;
    CHECK_EQ_INT(ctn_invoke(ch, "{\"ms\": 60000}", NULL, on_done, &w, &id), CTN_OK);
    CHECK_EQ_INT(ctn_cancel(rt, id), CTN_OK);
    CHECK(wait_calls(&w, 1)); /* long before the minute is up */
    CHECK_EQ_INT(w.status, CTN_ECANCELED);
    CHECK_CONTAINS(w.text, "cancelled");
    CHECK_EQ_INT(ctn_cancel(rt, id), CTN_ENOENT); /* it has ended */
    CHECK_EQ_INT(ctn_cancel(rt, 123456), CTN_ENOENT);
    CHECK_CONTAINS(ctn_last_error(), "no call 123456");
    /* A batch: every run stops. */
    CHECK_EQ_INT(ctn_batch(ch, "[{\"ms\": 60000}, {\"ms\": 60000}, {\"ms\": 60000}]",
                           "{\"max_concurrency\": 2}", on_done, &w, &id),
                 CTN_OK);
    CHECK_EQ_INT(ctn_cancel(rt, id), CTN_OK);
    CHECK(wait_calls(&w, 2));
    CHECK_EQ_INT(w.status, CTN_ECANCELED);
    /* A call that has ended is not changed by a cancel that comes after. */
    CHECK_EQ_INT(ctn_invoke(ch, "\"done\"", NULL, on_done, &w, &id), CTN_OK);
    CHECK(wait_calls(&w, 3));
    CHECK_EQ_INT(ctn_cancel(rt, id), CTN_ENOENT);
    CHECK_EQ_INT(w.status, CTN_OK);
    lambda_runtime_free(rt, &w);
}

/* A done callback that tries what must not be done on the loop thread. */
static void on_done_try_waits(int status, const char *text, void *ud) {
    waiter *w = ud;
    char *out = (char *)1;
    ctn_chain *ch = NULL;
    w->sync_rc = ctn_invoke_sync(w->chain, "\"x\"", NULL, &out);
    snprintf(w->sync_msg, sizeof w->sync_msg, "%s%s", ctn_last_error(),
             out == NULL ? "" : " (out set)");
    w->load_rc = ctn_runtime_load_chain(w->rt, "/nonexistent.lua", &ch);
    w->free_rc = ctn_runtime_free(w->rt);
    /* Submitting from here is allowed: the next call is the one waited for. */
    if (ctn_invoke(w->chain, "\"again\"", NULL, on_done, w, NULL) < 0) w->bad++;
    (void)status, (void)text;
}

TEST(waits_refused_on_loop_thread) {
    waiter w;
    ctn_chain *ch;
    ctn_runtime *rt = lambda_runtime(&w, &ch);
    if (rt == NULL) return;
    w.chain = ch;
    w.rt = rt;
    CHECK_EQ_INT(ctn_invoke(ch, "\"x\"", NULL, on_done_try_waits, &w, NULL), CTN_OK);
    CHECK(wait_calls(&w, 1));
    CHECK_EQ_INT(w.sync_rc, CTN_EINVAL);
    CHECK_CONTAINS(w.sync_msg, "ctn_invoke_sync: called on the runtime's loop thread");
    CHECK(strstr(w.sync_msg, "(out set)") == NULL);
    CHECK_EQ_INT(w.load_rc, CTN_EINVAL);
    CHECK_EQ_INT(w.free_rc, CTN_EINVAL);
    CHECK_EQ_INT(w.bad, 0);
    CHECK_STR(w.text, "\"AGAIN\"");
    lambda_runtime_free(rt, &w);
}

/* ---- threads --------------------------------------------------------------------------------- */

#define SUBMITTERS 4
#define PER_THREAD 250

typedef struct {
    waiter *w;
    ctn_chain *chain;
    int k;
} submitter;

/* Checks each output against its input: "t<k>-<i>" comes back upper-cased. */
typedef struct {
    waiter *w;
    char want[32];
} expect;

static void on_done_expect(int status, const char *text, void *ud) {
    expect *e = ud;
    waiter *w = e->w;
    pthread_mutex_lock(&w->mu);
    if (status != CTN_OK || strcmp(text, e->want) != 0) w->bad++;
    w->calls++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *submit_many(void *arg) {
    submitter *s = arg;
    static expect ex[SUBMITTERS][PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++) {
        char in[32];
        snprintf(in, sizeof in, "\"t%d-%d\"", s->k, i);
        ex[s->k][i].w = s->w;
        snprintf(ex[s->k][i].want, sizeof ex[s->k][i].want, "\"T%d-%d\"", s->k, i);
        if (ctn_invoke(s->chain, in, NULL, on_done_expect, &ex[s->k][i], NULL) < 0) {
            pthread_mutex_lock(&s->w->mu);
            s->w->bad++;
            s->w->calls++; /* counted, so the wait ends */
            pthread_mutex_unlock(&s->w->mu);
        }
    }
    return NULL;
}

TEST(submits_from_four_threads) {
    waiter w;
    ctn_chain *ch;
    ctn_runtime *rt = lambda_runtime(&w, &ch);
    if (rt == NULL) return;
    pthread_t t[SUBMITTERS];
    submitter s[SUBMITTERS];
    for (int k = 0; k < SUBMITTERS; k++) {
        s[k] = (submitter){&w, ch, k};
        pthread_create(&t[k], NULL, submit_many, &s[k]);
    }
    for (int k = 0; k < SUBMITTERS; k++)
        pthread_join(t[k], NULL);
    CHECK(wait_calls(&w, SUBMITTERS * PER_THREAD));
    CHECK_EQ_INT(w.calls, SUBMITTERS * PER_THREAD);
    CHECK_EQ_INT(w.bad, 0);
    lambda_runtime_free(rt, &w);
}

/* Freeing a runtime with calls in flight cancels them: every callback has come, with
 * CTN_ECANCELED, when ctn_runtime_free returns. */
TEST(free_cancels_calls_in_flight) {
    waiter w;
    ctn_chain *ch;
    ctn_runtime *rt = lambda_runtime(&w, &ch);
    if (rt == NULL) return;
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(ctn_invoke(ch, "{\"ms\": 60000}", NULL, on_done, &w, NULL), CTN_OK);
    CHECK_EQ_INT(ctn_batch(ch, "[{\"ms\": 60000}, {\"ms\": 60000}]", NULL, on_done, &w, NULL),
                 CTN_OK);
    CHECK_EQ_INT(ctn_runtime_free(rt), CTN_OK);
    CHECK_EQ_INT(w.calls, 9);
    CHECK_EQ_INT(w.status, CTN_ECANCELED);
    CHECK_CONTAINS(w.text, "the runtime is being freed");
    waiter_close(&w);
}

/* ---- a model --------------------------------------------------------------------------------- */

TEST(model_chain) {
    const char *m = model_path();
    if (m == NULL) SKIP("stories260K.gguf is not in CTN_SHARED/models");
    ctn_runtime *rt;
    ctn_chain *ch;
    CHECK_EQ_INT(ctn_runtime_new(&rt), CTN_OK);
    CHECK_EQ_INT(ctn_runtime_load_model(rt, m, NULL), CTN_OK);
    /* The chain gets the model's path as its argument and shares the loaded engine. */
    const char *path =
        chain_file("story.lua", "local catena = require('catena')\n"
                                "local path = assert(..., 'the model path is the argument')\n"
                                "return catena.prompt('Once upon a time, {who}')\n"
                                "  | catena.model{ path = path }:with{ temperature = 0 }\n"
                                "  | catena.parser.str()\n");
    CHECK_EQ_INT(ctn_runtime_load_chain(rt, path, &ch), CTN_OK);
    if (ch == NULL) {
        printf("  %s\n", ctn_last_error());
        ctn_runtime_free(rt);
        return;
    }
    /* The run's settings come in the config. */
    const char *const cfg = "{\"max_tokens\": 12}";
    char *out = NULL;
    CHECK_EQ_INT(ctn_invoke_sync(ch, "{\"who\": \"Lily\"}", cfg, &out), CTN_OK);
    CHECK(out != NULL && out[0] == '"' && strlen(out) > 2);
    waiter w;
    waiter_init(&w);
    CHECK_EQ_INT(ctn_stream(ch, "{\"who\": \"Lily\"}", cfg, on_chunk, on_done, &w, NULL), CTN_OK);
    CHECK(wait_calls(&w, 1));
    CHECK_STR(w.text, out);
    CHECK(w.n_chunks > 1); /* the model's pieces, one by one */
    /* One token is shorter. */
    char *one = NULL;
    CHECK_EQ_INT(ctn_invoke_sync(ch, "{\"who\": \"Lily\"}", "{\"max_tokens\": 1}", &one), CTN_OK);
    CHECK(one != NULL && out != NULL && strlen(one) < strlen(out));
    free(one);
    /* A bad setting's value fails the run, naming the setting. */
    CHECK(ctn_invoke_sync(ch, "{\"who\": \"Lily\"}", "{\"top_k\": \"many\"}", &one) < 0);
    CHECK_CONTAINS(one, "top_k");
    free(one);
    /* Batch: the same greedy text for each input. */
    CHECK_EQ_INT(
        ctn_batch(ch, "[{\"who\": \"Lily\"}, {\"who\": \"Lily\"}]", cfg, on_done, &w, NULL),
        CTN_OK);
    CHECK(wait_calls(&w, 2));
    char want[8192];
    snprintf(want, sizeof want, "[%s,%s]", out ? out : "", out ? out : "");
    CHECK_STR(w.text, want);
    /* A generation in flight is cancelled. */
    uint64_t id;
    CHECK_EQ_INT(ctn_invoke(ch, "{\"who\": \"Tim\"}", "{\"max_tokens\": 100000}", on_done, &w, &id),
                 CTN_OK);
    const int c = ctn_cancel(rt, id);
    CHECK(c == CTN_OK || c == CTN_ENOENT);
    CHECK(wait_calls(&w, 3));
    CHECK(c != CTN_OK || w.status == CTN_ECANCELED || w.status == CTN_OK);
    free(out);
    lambda_runtime_free(rt, &w);
    /* Options load the model with those settings; a chain that asks for other ones is told
     * which, one that asks for the same shares the engine. */
    CHECK_EQ_INT(ctn_runtime_new(&rt), CTN_OK);
    CHECK_EQ_INT(ctn_runtime_load_model(rt, m, "{\"ctx\": 64, \"threads\": 1}"), CTN_OK);
    CHECK_EQ_INT(ctn_runtime_load_chain(rt, path, &ch), CTN_ECHAIN);
    CHECK_CONTAINS(ctn_last_error(), "the default ctx was asked, but");
    CHECK_CONTAINS(ctn_last_error(), "ctx 64");
    path = chain_file(
        "story64.lua",
        "local catena = require('catena')\n"
        "return catena.model{ path = ..., ctx = 64, threads = 1 }:with{ max_tokens = 4 }\n"
        "  | catena.parser.str()\n");
    CHECK_EQ_INT(ctn_runtime_load_chain(rt, path, &ch), CTN_OK);
    CHECK_EQ_INT(ctn_invoke_sync(ch, "\"Once upon a time\"", NULL, &out), CTN_OK);
    CHECK(out != NULL && strlen(out) > 2);
    free(out);
    CHECK_EQ_INT(ctn_runtime_free(rt), CTN_OK);
}

TEST(strerror_and_version) {
    /* The header's codes are catena's own (kernels/base.h): each has its own words. */
    static const struct {
        int code;
        const char *words;
    } codes[] = {{CTN_OK, "success"},
                 {CTN_ENOMEM, "out of memory"},
                 {CTN_EINVAL, "invalid argument"},
                 {CTN_EIO, "input/output error"},
                 {CTN_EFORMAT, "malformed input"},
                 {CTN_ENOENT, "not found"},
                 {CTN_ETYPE, "wrong type"},
                 {CTN_ENOTSUP, "not supported"},
                 {CTN_ERANGE, "out of range"},
                 {CTN_ETIMEDOUT, "timed out"},
                 {CTN_ECANCELED, "cancelled"},
                 {CTN_ECHAIN, "chain node failed"}};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        CHECK_STR(ctn_strerror(codes[i].code), codes[i].words);
    CHECK(strlen(ctn_version()) > 0);
}

int main(void) {
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(strerror_and_version);
    RUN(bad_model_path);
    RUN(chain_file_errors);
    RUN(bad_json);
    RUN(invoke_stream_batch);
    RUN(cancel);
    RUN(waits_refused_on_loop_thread);
    RUN(submits_from_four_threads);
    RUN(free_cancels_calls_in_flight);
    RUN(model_chain);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("could not remove %s\n", dir);
    return test_summary();
}
