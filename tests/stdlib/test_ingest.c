/*
 * Ingest (stdlib/ingest.c) and the RAG nodes (stdlib/rag.c) from C: a run over a copy of
 * examples/docs with and without embeddings (stories260K from ../shared), the second run
 * skipping everything, and allocation-failure loops: with the N-th allocation failing once
 * (on whichever thread makes it: the loop, the pool or the engine), every run ends exactly
 * once, with success or a clean out-of-memory error, the knowledge base passes its check, and
 * a normal run afterwards completes it (every file stored, every chunk embedded).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "alloc.h"
#include "chain.h"
#include "error.h"
#include "ingest.h"
#include "kb.h"
#include "lm.h"
#include "rag.h"
#include "test.h"

static char dir[64], corpus[128], model_path[1024];

static bool have_model(void) {
    FILE *f = fopen(model_path, "rb");
    if (f == NULL) return false;
    fclose(f);
    return true;
}

static int sh(const char *fmt, const char *a, const char *b) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    return system(cmd);
}

/* ---- ingest through its C interface -------------------------------------------------------- */

typedef struct {
    int n_done, rc, n_failed_files, n_oom_files;
    ctn_ingest_progress p;
    char msg[512];
} outcome;

static void on_file(void *ud, const char *path, const char *status, const char *msg) {
    outcome *o = ud;
    (void)path;
    if (strcmp(status, "failed") == 0) {
        o->n_failed_files++;
        if (msg != NULL && strstr(msg, "out of memory") != NULL) o->n_oom_files++;
    }
}

static void on_done(void *ud, const ctn_ingest_progress *p, int rc, const char *msg) {
    outcome *o = ud;
    o->n_done++;
    o->rc = rc;
    o->p = *p;
    snprintf(o->msg, sizeof o->msg, "%s", msg != NULL ? msg : "");
}

/* One ingest of the corpus into db (collection "docs"), with lm's embeddings when not NULL.
 * Returns ctn_ingest_start's code; the run's end is in *o. */
static int ingest(uv_loop_t *loop, const char *db, ctn_lm *lm, outcome *o) {
    memset(o, 0, sizeof *o);
    char err[512] = "";
    ctn_kb *kb = NULL;
    int rc = ctn_kb_open(db, 0, &kb, err, sizeof err);
    if (rc < 0) return rc;
    const char *paths[] = {corpus};
    ctn_ingest_opts io = ctn_ingest_defaults();
    io.paths = paths, io.n_paths = 1;
    io.collection = "docs";
    io.splitter = CTN_SPLIT_MARKDOWN;
    io.split.chunk_size = 300, io.split.chunk_overlap = 30;
    io.embed = lm;
    io.prune = true;
    io.on_file = on_file, io.on_done = on_done, io.ud = o;
    ctn_ingest *ing = NULL;
    rc = ctn_ingest_start(loop, kb, &io, &ing, err, sizeof err);
    if (rc == 0) uv_run(loop, UV_RUN_DEFAULT);
    else snprintf(o->msg, sizeof o->msg, "%s", err);
    ctn_kb_close(kb);
    return rc;
}

static int collect_stats(void *ud, const ctn_kb_coll_stats *s) {
    ctn_kb_coll_stats *out = ud;
    if (strcmp(s->name, "docs") == 0) *out = *s;
    return 0;
}

static ctn_kb_coll_stats counts(const char *db) {
    ctn_kb_coll_stats s = {0};
    char err[512] = "";
    ctn_kb *kb = NULL;
    CHECK_EQ_INT(ctn_kb_open(db, 0, &kb, err, sizeof err), 0);
    if (kb == NULL) return s;
    if (ctn_kb_check(kb, err, sizeof err) != 0) printf("  check: %s\n", err);
    CHECK_EQ_INT(ctn_kb_check(kb, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_kb_stats(kb, collect_stats, &s, err, sizeof err), 0);
    ctn_kb_close(kb);
    return s;
}

static ctn_lm *open_lm(uv_loop_t *loop) {
    ctn_lm_params p = {.threads = 1};
    ctn_lm *lm = NULL;
    char err[512] = "";
    CHECK_EQ_INT(ctn_lm_open(loop, model_path, &p, &lm, err, sizeof err), 0);
    return lm;
}

static void close_lm(uv_loop_t *loop, ctn_lm *lm) {
    ctn_lm_close(lm);
    uv_run(loop, UV_RUN_DEFAULT);
}

TEST(ingest_with_and_without_embeddings) {
    char db[160];
    snprintf(db, sizeof db, "%s/plain.sqlite", dir);
    uv_loop_t loop;
    uv_loop_init(&loop);
    outcome o;
    CHECK_EQ_INT(ingest(&loop, db, NULL, &o), 0);
    CHECK_EQ_INT(o.n_done, 1);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_INT(o.p.added, 4);
    CHECK_EQ_INT(o.p.failed, 0);
    CHECK(o.p.chunks > 10 && o.p.embedded == 0 && o.p.pages == 4);
    const int64_t chunks = o.p.chunks;
    CHECK_EQ_INT(ingest(&loop, db, NULL, &o), 0);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_INT(o.p.skipped, 4);
    CHECK_EQ_INT(o.p.added + o.p.replaced + o.p.chunks, 0);
    ctn_kb_coll_stats s = counts(db);
    CHECK_EQ_INT(s.documents, 4);
    CHECK_EQ_INT(s.chunks, chunks);
    CHECK_EQ_INT(s.embeddings, 0);

    {
        snprintf(db, sizeof db, "%s/emb.sqlite", dir);
        ctn_lm *lm = open_lm(&loop);
        CHECK_EQ_INT(ingest(&loop, db, lm, &o), 0);
        CHECK_EQ_INT(o.rc, 0);
        CHECK_EQ_INT(o.p.added, 4);
        CHECK_EQ_INT(o.p.embedded, o.p.chunks);
        CHECK(o.p.embed_tokens > o.p.chunks);
        s = counts(db);
        CHECK_EQ_INT(s.embeddings, s.chunks);
        CHECK_STR(s.embed_model, "stories260K.gguf:llama:64");
        /* A plain run into the embedded collection is refused before it starts. */
        CHECK_EQ_INT(ingest(&loop, db, NULL, &o), CTN_EINVAL);
        CHECK_EQ_INT(o.n_done, 0);
        printf("  refused: %s\n", o.msg);
        close_lm(&loop, lm);
    }
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/*
 * The loop: run i makes allocation i fail once (after a fresh copy of the corpus and a
 * database holding a first, partial state: the run must replace and complete it), until a
 * run touches no failing allocation. Each run ends once; a run that failed to start left no
 * callback; the base is consistent after each; one normal run then completes it.
 */
static void alloc_loop(bool embed) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = embed ? open_lm(&loop) : NULL;
    char db[160];
    snprintf(db, sizeof db, "%s/alloc.sqlite", dir);
    /* The reference: a clean run. */
    sh("rm -f '%s' '%s-wal'", db, db);
    outcome ref;
    CHECK_EQ_INT(ingest(&loop, db, lm, &ref), 0);
    CHECK_EQ_INT(ref.rc, 0);
    const ctn_kb_coll_stats want = counts(db);
    int runs = 0, started_fail = 0, run_fail = 0, file_fail = 0, whole = 0;
    for (long n = 0; n < 100000; n += 1 + n / 4) {
        char shm[192];
        snprintf(shm, sizeof shm, "%s-shm", db);
        sh("rm -f '%s' '%s-wal'", db, db);
        remove(shm);
        outcome o;
        const long before = ctn__alloc_n_failed;
        ctn__alloc_fail_once = true;
        ctn__alloc_fail_after = n;
        const int rc = ingest(&loop, db, lm, &o);
        ctn__alloc_fail_after = -1;
        ctn__alloc_fail_once = false;
        const bool touched = ctn__alloc_n_failed > before;
        runs++;
        if (rc < 0) {
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK_EQ_INT(o.n_done, 0);
            started_fail++;
        } else {
            CHECK_EQ_INT(o.n_done, 1);
            if (o.rc != 0) {
                CHECK_EQ_INT(o.rc, CTN_ENOMEM);
                CHECK(strstr(o.msg, "out of memory") != NULL);
                run_fail++;
            } else if (o.p.failed > 0) {
                /* A file that ran out of memory is reported as failed, the rest stored. */
                CHECK_EQ_INT(o.n_failed_files, o.p.failed);
                CHECK_EQ_INT(o.n_oom_files, o.p.failed);
                CHECK_EQ_INT(o.p.added + o.p.failed, 4);
                file_fail++;
            } else {
                CHECK_EQ_INT(o.p.added, 4);
                CHECK_EQ_INT(o.p.chunks, ref.p.chunks);
                whole++;
            }
        }
        /* Consistent now, and one more run completes it. */
        FILE *f = fopen(db, "rb");
        if (f != NULL) {
            fclose(f);
            (void)counts(db);
        }
        outcome fix;
        CHECK_EQ_INT(ingest(&loop, db, lm, &fix), 0);
        CHECK_EQ_INT(fix.rc, 0);
        CHECK_EQ_INT(fix.p.failed, 0);
        const ctn_kb_coll_stats got = counts(db);
        CHECK_EQ_INT(got.documents, want.documents);
        CHECK_EQ_INT(got.chunks, want.chunks);
        CHECK_EQ_INT(got.embeddings, want.embeddings);
        CHECK_EQ_INT(got.text_bytes, want.text_bytes);
        if (!touched) break;
    }
    printf("  %s: %d runs: %d refused at start, %d failed whole, %d with a failed file, "
           "%d complete\n",
           embed ? "with embeddings" : "without embeddings", runs, started_fail, run_fail,
           file_fail, whole);
    CHECK(runs > 5 && started_fail + run_fail + file_fail > 0 && whole > 0);
    if (lm != NULL) close_lm(&loop, lm);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(ingest_allocation_failures) { alloc_loop(false); }

TEST(ingest_allocation_failures_with_embeddings) { alloc_loop(true); }

/* ---- the RAG nodes: loader | splitter | kb.add ------------------------------------------ */

typedef struct {
    int n_done, code;
    ctn_val *out;
    char msg[512];
} node_out;

static void node_done(void *ud, const ctn_val *out, const ctn_chain_err *err) {
    node_out *r = ud;
    r->n_done++;
    if (err != NULL) {
        r->code = err->code;
        snprintf(r->msg, sizeof r->msg, "%s", err->message);
    } else {
        r->out = ctn_val_ref((ctn_val *)out);
    }
}

/* loader | splitter | kb.add over the corpus, into db. Returns ctn_run_start's code (or
 * CTN_ENOMEM when a node could not be built). */
static int run_nodes(const char *db, node_out *r) {
    memset(r, 0, sizeof *r);
    char err[512] = "";
    ctn_loader_node_opts lo = {.kind = CTN_LOADER_NONE, .path = corpus};
    ctn_split_opts so = ctn_split_defaults();
    so.chunk_size = 300, so.chunk_overlap = 30;
    ctn_kb_target t = {.path = db, .collection = "nodes"};
    ctn_node *steps[3] = {ctn_loader_node(&lo, err, sizeof err),
                          ctn_splitter_node(CTN_SPLIT_MARKDOWN, &so, NULL, err, sizeof err),
                          ctn_kb_add_node(&t, err, sizeof err)};
    if (steps[0] == NULL || steps[1] == NULL || steps[2] == NULL) {
        for (int i = 0; i < 3; i++)
            ctn_node_unref(steps[i]);
        return CTN_ENOMEM;
    }
    ctn_node *chain = ctn_node_sequence(steps, 3);
    if (chain == NULL) return CTN_ENOMEM;
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_run_callbacks cb = {.on_done = node_done, .ud = r};
    ctn_run *run = NULL;
    ctn_val *in = ctn_val_null();
    int rc = in == NULL ? CTN_ENOMEM : ctn_run_start(&loop, chain, in, NULL, &cb, 0, &run);
    if (rc == 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
        ctn_run_free(run);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    ctn_val_unref(in);
    ctn_node_unref(chain);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    return rc;
}

static int64_t get_int(const ctn_val *o, const char *key) {
    const ctn_val *v = o != NULL ? ctn_val_get(o, key) : NULL;
    return v != NULL && v->kind == CTN_VINT ? v->u.i : -1;
}

TEST(rag_nodes_allocation_failures) {
    char db[160];
    snprintf(db, sizeof db, "%s/nodes.sqlite", dir);
    node_out ref;
    CHECK_EQ_INT(run_nodes(db, &ref), 0);
    CHECK_EQ_INT(ref.n_done, 1);
    CHECK(ref.out != NULL);
    const int64_t docs = get_int(ref.out, "documents"), chunks = get_int(ref.out, "chunks");
    CHECK_EQ_INT(docs, 4);
    CHECK(chunks > 10);
    ctn_val_unref(ref.out);
    int runs = 0, failed = 0, ok = 0;
    for (long n = 0; n < 100000; n += 1 + n / 4) {
        sh("rm -f '%s' '%s-wal'", db, db);
        node_out r;
        const long before = ctn__alloc_n_failed;
        ctn__alloc_fail_once = true;
        ctn__alloc_fail_after = n;
        const int rc = run_nodes(db, &r);
        ctn__alloc_fail_after = -1;
        ctn__alloc_fail_once = false;
        const bool touched = ctn__alloc_n_failed > before;
        runs++;
        if (rc < 0) {
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK_EQ_INT(r.n_done, 0);
            failed++;
        } else {
            CHECK_EQ_INT(r.n_done, 1);
            if (r.out == NULL) {
                CHECK_EQ_INT(r.code, CTN_ENOMEM);
                failed++;
            } else {
                if (get_int(r.out, "documents") != docs) {
                    char *j = ctn_val_to_json(r.out, 0);
                    printf("  n=%ld: %s\n", n, j);
                    free(j);
                }
                CHECK_EQ_INT(get_int(r.out, "documents"), docs);
                CHECK_EQ_INT(get_int(r.out, "chunks"), chunks);
                ok++;
            }
            ctn_val_unref(r.out);
        }
        /* Whatever happened, the file is consistent and a clean run fills it. */
        node_out again;
        CHECK_EQ_INT(run_nodes(db, &again), 0);
        CHECK_EQ_INT(get_int(again.out, "chunks"), chunks);
        ctn_val_unref(again.out);
        ctn_kb_coll_stats s = {0};
        char err[512] = "";
        ctn_kb *kb = NULL;
        CHECK_EQ_INT(ctn_kb_open(db, 0, &kb, err, sizeof err), 0);
        if (ctn_kb_check(kb, err, sizeof err) != 0) printf("  check: %s\n", err);
        CHECK_EQ_INT(ctn_kb_check(kb, err, sizeof err), 0);
        ctn_kb_close(kb);
        (void)s;
        if (!touched) break;
    }
    printf("  %d runs: %d failed cleanly, %d complete\n", runs, failed, ok);
    CHECK(runs > 5 && failed > 0 && ok > 0);
}


/* The retriever: hybrid (the query embedded, both lists, the hits read) under failing
 * allocations: each run ends once, with the reference hits or a clean error. */
TEST(retriever_allocation_failures) {
    char db[160];
    snprintf(db, sizeof db, "%s/retr.sqlite", dir);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_lm *lm = open_lm(&loop);
    outcome o;
    CHECK_EQ_INT(ingest(&loop, db, lm, &o), 0);
    CHECK_EQ_INT(o.rc, 0);
    char err[512] = "";
    ctn_kb_target t = {.path = db, .collection = "docs", .embed = lm};
    ctn_retriever_opts ro = {.search = ctn_search_defaults()};
    ro.search.k = 4, ro.search.mode = CTN_RETRIEVE_HYBRID, ro.search.fetch_k = 20;
    ctn_node *node = ctn_kb_retriever_node(&t, &ro, err, sizeof err);
    CHECK(node != NULL);
    ctn_val *q = ctn_val_cstr("How do I install it on Debian?");
    char want[4096] = "";
    int runs = 0, failed = 0, same = 0;
    for (long n = -1; n < 100000; n += 1 + (n > 0 ? n / 4 : 0)) {
        node_out r;
        memset(&r, 0, sizeof r);
        ctn_run_callbacks cb = {.on_done = node_done, .ud = &r};
        ctn_run *run = NULL;
        const long before = ctn__alloc_n_failed;
        if (n >= 0) {
            ctn__alloc_fail_once = true;
            ctn__alloc_fail_after = n;
        }
        int rc = ctn_run_start(&loop, node, q, NULL, &cb, 0, &run);
        if (rc == 0) uv_run(&loop, UV_RUN_DEFAULT);
        ctn__alloc_fail_after = -1;
        ctn__alloc_fail_once = false;
        const bool touched = ctn__alloc_n_failed > before;
        if (rc == 0) {
            ctn_run_free(run);
            uv_run(&loop, UV_RUN_DEFAULT);
            CHECK_EQ_INT(r.n_done, 1);
        }
        runs++;
        if (r.out != NULL) {
            char *j = ctn_val_to_json(r.out, 0);
            CHECK(j != NULL);
            if (n < 0) {
                CHECK_EQ_INT(ctn_val_len(r.out), 4);
                snprintf(want, sizeof want, "%s", j ? j : "");
            } else {
                CHECK_STR(j ? j : "", want);
                same++;
            }
            free(j);
            ctn_val_unref(r.out);
        } else {
            if (!(rc == CTN_ENOMEM || r.code == CTN_ENOMEM))
                printf("  n=%ld: %d %d %s\n", n, rc, r.code, r.msg);
            CHECK(rc == CTN_ENOMEM || r.code == CTN_ENOMEM);
            failed++;
        }
        if (n >= 0 && !touched) break;
    }
    printf("  %d runs: %d failed cleanly, %d gave the same hits\n", runs, failed, same);
    CHECK(runs > 5 && failed > 0 && same > 0);
    ctn_val_unref(q);
    ctn_node_unref(node);
    close_lm(&loop, lm);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void) {
    const char *shared = getenv("CTN_SHARED");
    snprintf(model_path, sizeof model_path, "%s/models/stories260K.gguf",
             shared && *shared ? shared : "../shared");
    if (!have_model()) {
        fprintf(stderr, "test_ingest: no model at %s (set CTN_SHARED)\n", model_path);
        return 77;
    }
    snprintf(dir, sizeof dir, "/tmp/ctn_ingest_XXXXXX");
    if (mkdtemp(dir) == NULL) return 1;
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    if (sh("cp -r examples/docs '%s'%s", corpus, "") != 0) return 1;
    RUN(ingest_with_and_without_embeddings);
    RUN(ingest_allocation_failures);
    RUN(ingest_allocation_failures_with_embeddings);
    RUN(rag_nodes_allocation_failures);
    RUN(retriever_allocation_failures);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
