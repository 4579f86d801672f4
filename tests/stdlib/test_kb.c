/*
 * The knowledge base (stdlib/kb.h): schema creation and versions, foreign files refused,
 * collections and their embedding model, documents added, replaced, removed and pruned with
 * their chunks, embeddings and full-text entries (unicode61 and trigram), stored vector
 * forms, chunk round trips, and clean failures when our allocations fail.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "kb.h"
#include "test.h"
#include "value.h"

static char dir[64];

static const char *tmp_path(const char *name) {
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* A chunk document as the splitters make them. */
static ctn_val *chunk(const char *text, int64_t idx, int64_t page, const char *section) {
    ctn_val *m = ctn_val_obj();
    ctn_val_set(m, "source", ctn_val_cstr("a.md"));
    ctn_val_set(m, "chunk", ctn_val_int(idx));
    if (page > 0) ctn_val_set(m, "page", ctn_val_int(page));
    if (section != NULL) ctn_val_set(m, "section", ctn_val_cstr(section));
    ctn_val_set(m, "start_index", ctn_val_int(idx * 100));
    ctn_val_set(m, "end_index", ctn_val_int(idx * 100 + (int64_t)strlen(text)));
    ctn_val_set(m, "lang", ctn_val_cstr("en"));
    return ctn_val_doc(text, strlen(text), m);
}

static int64_t count(const char *path, const char *sql) {
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    } else {
        printf("  sql failed: %s: %s\n", sql, sqlite3_errmsg(db));
    }
    sqlite3_close(db);
    return n;
}

static ctn_kb *open_new(const char *name) {
    char err[256] = "";
    ctn_kb *kb = NULL;
    unlink(tmp_path(name));
    int rc = ctn_kb_open(tmp_path(name), 0, &kb, err, sizeof err);
    if (rc < 0) printf("  open failed: %s\n", err);
    return kb;
}

TEST(schema_and_versions) {
    char err[256] = "";
    ctn_kb *kb = open_new("v.sqlite");
    CHECK(kb != NULL);
    ctn_kb_close(kb);
    const char *p = tmp_path("v.sqlite");
    CHECK_EQ_INT(count(p, "PRAGMA user_version"), CTN_KB_SCHEMA_VERSION);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM sqlite_schema WHERE name IN ('collections',"
                          " 'documents', 'chunks', 'embeddings', 'chunks_fts', 'chunks_tri')"),
                 6);
    /* WAL is a property of the file: a fresh connection sees it. */
    sqlite3 *db;
    sqlite3_open(p, &db);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    /* A newer schema is refused, naming both versions. */
    sqlite3_exec(db, "PRAGMA user_version = 9", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK_EQ_INT(ctn_kb_open(p, 0, &kb, err, sizeof err), CTN_ENOTSUP);
    CHECK(kb == NULL);
    CHECK_CONTAINS(err, "schema 9 is newer");
    /* Another program's SQLite file gains no tables. */
    const char *q = tmp_path("other.sqlite");
    unlink(q);
    sqlite3_open(q, &db);
    sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK_EQ_INT(ctn_kb_open(q, 0, &kb, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "not a catena knowledge base");
    CHECK_EQ_INT(count(q, "SELECT count(*) FROM sqlite_schema"), 1);
    /* Not a database at all. */
    const char *r = tmp_path("junk.sqlite");
    FILE *f = fopen(r, "w");
    fputs("this is not a database, just text that is long enough to be a header...", f);
    fclose(f);
    CHECK_EQ_INT(ctn_kb_open(r, 0, &kb, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "junk.sqlite");
    /* Read-only on a missing file. */
    CHECK(ctn_kb_open(tmp_path("missing.sqlite"), CTN_KB_READONLY, &kb, err, sizeof err) < 0);
    CHECK_CONTAINS(err, "missing.sqlite");
}

TEST(collections_record_their_model) {
    char err[256] = "";
    ctn_kb *kb = open_new("c.sqlite");
    ctn_kb_coll c;
    CHECK_EQ_INT(ctn_kb_collection(kb, "docs", NULL, &c, err, sizeof err), CTN_ENOENT);
    CHECK_CONTAINS(err, "no collection 'docs'");
    const char *labels[] = {"internal", "confidential"};
    ctn_kb_coll_opts o = {.create = true, .labels = labels, .n_labels = 2};
    CHECK_EQ_INT(ctn_kb_collection(kb, "docs", &o, &c, err, sizeof err), 0);
    CHECK(c.id > 0);
    CHECK_STR(c.embed_model, "");
    /* A collection without a model takes the first one asked for ... */
    ctn_kb_coll_opts m = {.embed_model = "stories260K.gguf:llama:64", .embed_dim = 64};
    CHECK_EQ_INT(ctn_kb_collection(kb, "docs", &m, &c, err, sizeof err), 0);
    CHECK_STR(c.embed_model, "stories260K.gguf:llama:64");
    CHECK_EQ_INT(c.embed_dim, 64);
    /* ... and then refuses another. */
    ctn_kb_coll_opts other = {.embed_model = "bge-small.gguf:bert:384", .embed_dim = 384};
    CHECK_EQ_INT(ctn_kb_collection(kb, "docs", &other, &c, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "is embedded with 'stories260K.gguf:llama:64'");
    CHECK_CONTAINS(err, "'bge-small.gguf:bert:384'");
    ctn_kb_close(kb);
    CHECK_EQ_INT(count(tmp_path("c.sqlite"),
                       "SELECT count(*) FROM collections WHERE labels = "
                       "'[\"internal\",\"confidential\"]'"),
                 1);
    char id[64];
    CHECK_EQ_INT(ctn_kb_model_id("/m/stories260K.gguf", "llama", 64, id, sizeof id), 0);
    CHECK_STR(id, "stories260K.gguf:llama:64");
    CHECK_EQ_INT(ctn_kb_collection(kb = open_new("c2.sqlite"), "", NULL, &c, err, sizeof err),
                 CTN_EINVAL);
    ctn_kb_close(kb);
}

static ctn_val *chunks3(const char *a, const char *b, const char *c) {
    ctn_val *arr = ctn_val_arr();
    ctn_val_push(arr, chunk(a, 0, 1, "Install > Linux"));
    ctn_val_push(arr, chunk(b, 1, 2, NULL));
    if (c != NULL) ctn_val_push(arr, chunk(c, 2, 0, "FAQ"));
    return arr;
}

TEST(documents_replace_remove_prune) {
    char err[256] = "", h1[48], h2[48];
    ctn_kb *kb = open_new("d.sqlite");
    const char *p = tmp_path("d.sqlite");
    ctn_kb_coll c;
    ctn_kb_coll_opts o = {.create = true, .embed_model = "m:llama:4", .embed_dim = 4};
    CHECK_EQ_INT(ctn_kb_collection(kb, "docs", &o, &c, err, sizeof err), 0);
    ctn_kb_hash("one", 3, h1);
    ctn_kb_hash("two", 3, h2);
    CHECK(strncmp(h1, "fnv1a64:", 8) == 0);
    CHECK(strcmp(h1, h2) != 0);
    ctn_kb_state s;
    CHECK_EQ_INT(ctn_kb_doc_state(kb, &c, "docs/a.md", h1, &s, err, sizeof err), 0);
    CHECK_EQ_INT(s, CTN_KB_NEW);

    ctn_val *ch = chunks3("RoPE rotates query and key vectors.", "Paged attention keeps blocks.",
                          "한국어 문서 검색은 트라이그램 색인으로 합니다.");
    float vecs[12] = {1, 0, 0, 0, 0.5f, -0.5f, 0.25f, 0, -1, 2, 3, 0.1f};
    ctn_kb_vectors v = {.model = "m:llama:4", .dim = 4, .n = 3, .vecs = vecs};
    ctn_val *meta = ctn_val_obj();
    ctn_val_set(meta, "title", ctn_val_cstr("Install"));
    ctn_kb_doc d = {.uri = "docs/a.md", .hash = h1, .mtime = 7, .size = 3, .loader = "markdown",
                    .meta = meta};
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch, &v, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_kb_doc_state(kb, &c, "docs/a.md", h1, &s, err, sizeof err), 0);
    CHECK_EQ_INT(s, CTN_KB_SAME);
    CHECK_EQ_INT(ctn_kb_doc_state(kb, &c, "docs/a.md", h2, &s, err, sizeof err), 0);
    CHECK_EQ_INT(s, CTN_KB_CHANGED);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks"), 3);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM embeddings"), 3);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'rotates'"),
                 1);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks_tri WHERE chunks_tri MATCH '트라이'"), 1);
    CHECK_EQ_INT(count(p, "SELECT page FROM chunks WHERE idx = 1"), 2);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks WHERE section = 'Install > Linux'"), 1);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM documents WHERE json_extract(metadata,"
                          " '$.title') = 'Install'"),
                 1);

    /* Round trip: the columns come back as the metadata the splitter gave. */
    ctn_val *back = ctn_val_arr();
    CHECK_EQ_INT(ctn_kb_chunks(kb, &c, "docs/a.md", back, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(back), 3);
    for (size_t i = 0; i < 3; i++) CHECK(ctn_val_equal(ctn_val_at(back, i), ctn_val_at(ch, i)));
    ctn_val_unref(back);

    /* Embeddings of another model or count are refused before anything is written. */
    ctn_kb_vectors bad = v;
    bad.n = 2;
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch, &bad, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "2 embeddings");
    bad = v;
    bad.model = "x:bert:4";
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch, &bad, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "collection 'docs' of 'm:llama:4'");
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks"), 3);

    /* Replacing: old chunks, vectors and index entries are gone. */
    ctn_val *ch2 = chunks3("Sliding windows free blocks early.", "Nothing about rotation.", NULL);
    d.hash = h2;
    v.n = 2;
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch2, &v, err, sizeof err), 0);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM documents"), 1);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks"), 2);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM embeddings"), 2);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'rotates'"),
                 0);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'sliding'"),
                 1);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks_tri WHERE chunks_tri MATCH '트라이'"), 0);
    CHECK_EQ_INT(ctn_kb_check(kb, err, sizeof err), 0);

    /* Chunks without vectors do not go into a collection that has a model. */
    d.uri = "docs/b.md";
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch2, NULL, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "need embeddings of that model");
    /* Prune: under docs/, only b.md is still there; other/ is untouched. */
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch2, &v, err, sizeof err), 0);
    d.uri = "other/c.md";
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch2, &v, err, sizeof err), 0);
    const char *pre[] = {"docs/"}, *keep[] = {"docs/b.md"};
    int64_t removed = -1;
    CHECK_EQ_INT(ctn_kb_prune(kb, &c, pre, 1, keep, 1, &removed, err, sizeof err), 0);
    CHECK_EQ_INT(removed, 1);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM documents"), 2);
    int r = -1;
    CHECK_EQ_INT(ctn_kb_remove(kb, &c, "other/c.md", &r, err, sizeof err), 0);
    CHECK_EQ_INT(r, 1);
    CHECK_EQ_INT(ctn_kb_remove(kb, &c, "other/c.md", &r, err, sizeof err), 0);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks"), 2);
    CHECK_EQ_INT(count(p, "SELECT count(*) FROM embeddings"), 2);
    CHECK_EQ_INT(ctn_kb_check(kb, err, sizeof err), 0);
    ctn_val_unref(ch);
    ctn_val_unref(ch2);
    ctn_val_unref(meta);
    ctn_kb_close(kb);
}

/* Reads the stored vector of chunk idx back as floats. */
static void stored(const char *p, int idx, float *out, int dim) {
    sqlite3 *db;
    sqlite3_stmt *st;
    sqlite3_open(p, &db);
    sqlite3_prepare_v2(db,
                       "SELECT dtype, scale, vector FROM embeddings e JOIN chunks k ON"
                       " k.id = e.chunk WHERE k.idx = ?1",
                       -1, &st, NULL);
    sqlite3_bind_int(st, 1, idx);
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        double scale = sqlite3_column_double(st, 1);
        const void *b = sqlite3_column_blob(st, 2);
        for (int i = 0; i < dim; i++) {
            if (strcmp(t, "f32") == 0) {
                memcpy(&out[i], (const char *)b + 4 * i, 4);
            } else if (strcmp(t, "int8") == 0) {
                out[i] = (float)(((const int8_t *)b)[i] * scale);
            } else { /* f16 */
                uint16_t h;
                memcpy(&h, (const char *)b + 2 * i, 2);
                int e = (h >> 10) & 31, m = h & 1023;
                float f = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 1024), e - 25);
                out[i] = (h & 0x8000) ? -f : f;
            }
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

TEST(vector_forms) {
    char err[256] = "";
    float v[8] = {0.1f, -0.2f, 0.3f, -0.4f, 1e-6f, 65504.f, -3.0f, 0.0f};
    for (int t = CTN_KB_F32; t <= CTN_KB_INT8; t++) {
        ctn_kb *kb = open_new("vec.sqlite");
        ctn_kb_coll c;
        ctn_kb_coll_opts o = {.create = true, .embed_model = "m:x:8", .embed_dim = 8};
        CHECK_EQ_INT(ctn_kb_collection(kb, "v", &o, &c, err, sizeof err), 0);
        ctn_val *ch = ctn_val_arr();
        ctn_val_push(ch, chunk("x", 0, 0, NULL));
        ctn_kb_vectors vv = {.model = "m:x:8", .dim = 8, .n = 1, .vecs = v,
                             .dtype = (ctn_kb_dtype)t};
        ctn_kb_doc d = {.uri = "x", .hash = "h"};
        CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch, &vv, err, sizeof err), 0);
        ctn_kb_close(kb);
        float back[8] = {0};
        stored(tmp_path("vec.sqlite"), 0, back, 8);
        for (int i = 0; i < 8; i++) {
            /* f32 exact; f16 to half a unit in its last place; int8 to half a step. */
            float tol = t == CTN_KB_F32 ? 0 : t == CTN_KB_F16 ? fabsf(v[i]) / 2048 + 6e-8f
                                                              : 65504.f / 127 / 2 + 1e-3f;
            if (fabsf(back[i] - v[i]) > tol) {
                printf("  dtype %d element %d: %g stored as %g\n", t, i, v[i], back[i]);
                CHECK(0);
            }
        }
        ctn_val_unref(ch);
    }
}

/* Every one of our allocations in a put failing, once and for good: a clean CTN_ENOMEM,
 * the file as it was (SQLite's own allocations are not on the hook). */
TEST(allocation_failures_leave_the_file_as_it_was) {
    char err[256] = "", h[48];
    ctn_kb *kb = open_new("oom.sqlite");
    const char *p = tmp_path("oom.sqlite");
    ctn_kb_coll c;
    ctn_kb_coll_opts o = {.create = true, .embed_model = "m:x:4", .embed_dim = 4};
    CHECK_EQ_INT(ctn_kb_collection(kb, "docs", &o, &c, err, sizeof err), 0);
    ctn_val *ch = chunks3("alpha beta", "gamma delta", "epsilon");
    float vecs[12] = {0};
    ctn_kb_vectors v = {.model = "m:x:4", .dim = 4, .n = 3, .vecs = vecs,
                        .dtype = CTN_KB_INT8};
    ctn_kb_hash("x", 1, h);
    ctn_kb_doc d = {.uri = "a", .hash = h};
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch, &v, err, sizeof err), 0);
    for (int once = 0; once <= 1; once++) {
        for (long n = 0;; n++) {
            ctn_kb_doc d2 = {.uri = "a", .hash = "new"};
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            int rc = ctn_kb_put(kb, &c, &d2, ch, &v, err, sizeof err);
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            if (rc == 0) {
                CHECK(n > 2);
                break;
            }
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK_EQ_INT(count(p, "SELECT count(*) FROM documents WHERE hash = 'new'"), 0);
            CHECK_EQ_INT(count(p, "SELECT count(*) FROM chunks"), 3);
            if (n > 1000) break;
        }
        /* Put the first version back for the next round. */
        CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch, &v, err, sizeof err), 0);
    }
    CHECK_EQ_INT(ctn_kb_check(kb, err, sizeof err), 0);
    ctn_val_unref(ch);
    ctn_kb_close(kb);
}


/* Chunk ids of the hits, for comparing with what was stored. */
static size_t search(ctn_kb *kb, const ctn_kb_coll *c, const char *q, ctn_kb_hit *h, size_t k) {
    char err[256] = "";
    size_t found = 99;
    const int rc = ctn_kb_bm25(kb, c, q, strlen(q), NULL, k, h, &found, err, sizeof err);
    if (rc != 0) printf("  query <%s> failed: %s\n", q, err);
    CHECK_EQ_INT(rc, 0);
    return rc == 0 ? found : 0;
}

TEST(keyword_search_takes_any_text) {
    char err[256] = "";
    ctn_kb *kb = open_new("bm25.sqlite");
    ctn_kb_coll c, other;
    ctn_kb_coll_opts co = {.create = true};
    CHECK_EQ_INT(ctn_kb_collection(kb, "docs", &co, &c, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_kb_collection(kb, "other", &co, &other, err, sizeof err), 0);
    static const char *const texts[] = {
        "Install catena on Debian with make demo.",
        "The knowledge base keeps chunks in SQLite with FTS5 indexes.",
        "Vector search scores every chunk against the query.",
        "설치 방법은 데비안에서 make demo 명령을 실행하는 것입니다.",
        "知识库把文档切成块并保存在数据库里。",
        "Quotes \"like this\" and operators AND OR NOT NEAR are plain words here.",
    };
    ctn_val *ch = ctn_val_arr();
    for (int i = 0; i < 6; i++)
        ctn_val_push(ch, chunk(texts[i], i, 0, NULL));
    ctn_kb_doc d = {.uri = "a.md", .hash = "h"};
    CHECK_EQ_INT(ctn_kb_put(kb, &c, &d, ch, NULL, err, sizeof err), 0);
    ctn_val *och = ctn_val_arr();
    ctn_val_push(och, chunk("Install elsewhere: another collection entirely.", 0, 0, NULL));
    CHECK_EQ_INT(ctn_kb_put(kb, &other, &d, och, NULL, err, sizeof err), 0);
    ctn_kb_hit h[10];
    /* Plain words: OR semantics, ranked by BM25, only this collection. */
    size_t n = search(kb, &c, "install debian", h, 10);
    CHECK(n >= 1);
    const int64_t first = h[0].chunk;
    n = search(kb, &c, "Install", h, 10);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(h[0].chunk, first);
    n = search(kb, &c, "chunks query", h, 10); /* no stemming: "chunks" is not "chunk" */
    CHECK(n >= 2 && h[0].score >= h[1].score);
    /* Hostile text: never an FTS5 syntax error. */
    static const char *const hostile[] = {
        "\"", "\"unbalanced", "a\"b\"c", "AND", "OR OR", "NOT install", "install NOT",
        "NEAR(install debian, 2)", "text:install", "-install", "+install", "^install",
        "inst*", "*", "(", "())(", "{text}: x", "a AND (b OR", "'", "''", "\\", "%", "_",
        "install; DROP TABLE chunks; --", "\x01\x02", "\xff\xfe invalid", "", "   ",
        "?!.,;:", "NEAR", "\"\"", "col:\"x\"", "🙂", "a\tb\nc",
    };
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++)
        (void)search(kb, &c, hostile[i], h, 10);
    CHECK_EQ_INT(search(kb, &c, "?!.,;:", h, 10), 0);
    CHECK_EQ_INT(search(kb, &c, "AND", h, 10), 1); /* the word, in the quotes chunk */
    CHECK_EQ_INT(search(kb, &c, "NOT install", h, 10), 2);
    /* Korean and Chinese: the trigram index finds substrings of 3 characters or more. */
    n = search(kb, &c, "데비안에서 설치하는 방법은?", h, 10);
    CHECK(n >= 1);
    CHECK_EQ_INT(h[0].chunk, first + 3);
    n = search(kb, &c, "文档切成块", h, 10);
    CHECK(n >= 1);
    CHECK_EQ_INT(h[0].chunk, first + 4);
    /* The query expression itself. */
    char *q = ctn_kb_fts_query("say \"NOT\" x:y", 14, false, NULL);
    CHECK_STR(q, "\"say\" OR \"NOT\" OR \"x\" OR \"y\"");
    free(q);
    bool cjk = false;
    q = ctn_kb_fts_query("설치 방법은", strlen("설치 방법은"), true, &cjk);
    CHECK_STR(q, "\"방법은\"");
    CHECK(cjk);
    free(q);
    CHECK_EQ_INT(ctn_kb_bm25(kb, &c, "x", 1, NULL, 0, h, &n, err, sizeof err), CTN_EINVAL);
    ctn_val_unref(ch);
    ctn_val_unref(och);
    ctn_kb_close(kb);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ctn_kb_XXXXXX");
    if (mkdtemp(dir) == NULL) return 1;
    RUN(schema_and_versions);
    RUN(collections_record_their_model);
    RUN(documents_replace_remove_prune);
    RUN(vector_forms);
    RUN(allocation_failures_leave_the_file_as_it_was);
    RUN(keyword_search_takes_any_text);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
