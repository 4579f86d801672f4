/*
 * Retrieval over a collection (stdlib/retrieve.h, with kb.h's filters and BM25 options):
 * metadata filters against a reference evaluation in the test, refused filters naming what
 * is wrong, BM25 with k1 and b against the formula computed here (and FTS5's own bm25()),
 * filtered vector search against brute force, MMR, the in-memory vectors kept and renewed
 * as the collection changes, several queries fused, hybrid weights, the schema migration
 * from version 1, and clean failures when allocations fail.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "json.h"
#include "kb.h"
#include "retrieve.h"
#include "test.h"
#include "value.h"

enum { DIM = 8, NDOC = 3, PER = 6, N = NDOC * PER };

static char dir[64];
static char path[128];

/* The corpus: chunk i of document d has words from a small vocabulary, page d*10 + i,
 * section "S<i % 3>", metadata year 2018 + i, lang "en"/"ko" alternating, labels on some. */
static const char *const vocab[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta",
                                    "eta", "theta"};
static char texts[N][128];
static float vecs[N][DIM];
static int64_t ids[N]; /* the stored chunk ids, in insertion order */

static uint32_t rng = 12345;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xFFFF) / 65536.0f - 0.5f;
}

static const char *uri_of(int d) {
    static const char *const u[] = {"docs/a.md", "docs/b.md", "notes/c.txt"};
    return u[d];
}

static ctn_val *chunk_doc(int d, int i) {
    const int g = d * PER + i;
    ctn_val *m = ctn_val_obj();
    ctn_val_set(m, "chunk", ctn_val_int(i));
    ctn_val_set(m, "page", ctn_val_int(d * 10 + i));
    ctn_val_set(m, "section", ctn_val_str(i % 3 == 0 ? "S0" : i % 3 == 1 ? "S1" : "S2", 2));
    ctn_val_set(m, "year", ctn_val_int(2018 + i));
    ctn_val_set(m, "lang", ctn_val_cstr(g % 2 ? "ko" : "en"));
    if (i == 2) ctn_val_set(m, "labels", ctn_val_cstr("internal"));
    if (i == 3) {
        ctn_val *l = ctn_val_arr();
        ctn_val_push(l, ctn_val_cstr("public"));
        ctn_val_push(l, ctn_val_cstr("internal"));
        ctn_val_set(m, "labels", l);
    }
    ctn_val *author = ctn_val_obj();
    ctn_val_set(author, "name", ctn_val_cstr(i % 2 ? "kim" : "lee"));
    ctn_val_set(m, "author", author);
    if (i != 5) ctn_val_set(m, "score_hint", ctn_val_num(0.5 * i));
    return ctn_val_doc(texts[g], strlen(texts[g]), m);
}

static void make_corpus(void) {
    for (int g = 0; g < N; g++) {
        char *t = texts[g];
        t[0] = '\0';
        const int words = 3 + g % 5;
        for (int w = 0; w < words; w++) {
            strcat(t, vocab[(g * 7 + w * 3 + (w * w) % 5) % 8]);
            strcat(t, w + 1 < words ? " " : "");
        }
        for (int j = 0; j < DIM; j++)
            vecs[g][j] = frand();
    }
}

/* Document d stored in the collection (its metadata: team, labels of document 1). */
static int put_doc(ctn_kb *kb, const ctn_kb_coll *c, int d, const char *hash) {
    char err[256] = "";
    ctn_val *ch = ctn_val_arr();
    for (int i = 0; i < PER; i++)
        ctn_val_push(ch, chunk_doc(d, i));
    ctn_val *meta = ctn_val_obj();
    ctn_val_set(meta, "team", ctn_val_cstr(d == 2 ? "ops" : "dev"));
    if (d == 1) ctn_val_set(meta, "labels", ctn_val_cstr("secret"));
    ctn_kb_vectors v = {.model = "m:x:8", .dim = DIM, .n = PER, .vecs = vecs[d * PER],
                        .dtype = CTN_KB_F32};
    ctn_kb_doc doc = {.uri = uri_of(d), .hash = hash, .meta = meta};
    const int rc = ctn_kb_put(kb, c, &doc, ch, &v, err, sizeof err);
    if (rc < 0) printf("  put failed: %s\n", err);
    ctn_val_unref(ch);
    ctn_val_unref(meta);
    return rc;
}

static ctn_kb *build(ctn_kb_coll *c) {
    char err[256] = "";
    ctn_kb *kb = NULL;
    unlink(path);
    if (ctn_kb_open(path, 0, &kb, err, sizeof err) < 0) {
        printf("  open: %s\n", err);
        return NULL;
    }
    const char *labels[] = {"corpus"};
    ctn_kb_coll_opts o = {.create = true, .embed_model = "m:x:8", .embed_dim = DIM,
                          .labels = labels, .n_labels = 1};
    if (ctn_kb_collection(kb, "docs", &o, c, err, sizeof err) < 0) printf("  coll: %s\n", err);
    for (int d = 0; d < NDOC; d++)
        put_doc(kb, c, d, "h1");
    sqlite3 *db;
    sqlite3_open(path, &db);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT k.id FROM chunks k JOIN documents d ON d.id = k.document"
                           " ORDER BY d.uri, k.idx", -1, &st, NULL);
    for (int g = 0; g < N && sqlite3_step(st) == SQLITE_ROW; g++)
        ids[g] = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return kb;
}

static int index_of(int64_t id) {
    for (int g = 0; g < N; g++)
        if (ids[g] == id) return g;
    return -1;
}

/* ---- filters --------------------------------------------------------------------------- */

/* The filter (JSON) run through ctn_kb_filter_chunks, as a bitmask of corpus positions. */
static long filtered(ctn_kb *kb, const ctn_kb_coll *c, const char *json, char *err,
                     size_t errcap) {
    ctn_val *spec = NULL;
    if (ctn_json_parse(json, strlen(json), &spec, err, errcap) < 0) return -100;
    ctn_kb_filter *f = NULL;
    int rc = ctn_kb_filter_new(spec, &f, err, errcap);
    ctn_val_unref(spec);
    if (rc < 0) return rc;
    int64_t *got = NULL;
    size_t n = 0;
    rc = ctn_kb_filter_chunks(kb, c, f, &got, &n, err, errcap);
    ctn_kb_filter_free(f);
    if (rc < 0) return rc;
    long mask = 0;
    for (size_t i = 0; i < n; i++)
        mask |= 1L << index_of(got[i]);
    for (size_t i = 1; i < n; i++)
        if (got[i] <= got[i - 1]) mask = -200; /* ascending */
    free(got);
    return mask;
}

/* The reference: which corpus positions a predicate on (d, i) keeps. */
static long ref(int (*keep)(int d, int i)) {
    long m = 0;
    for (int d = 0; d < NDOC; d++)
        for (int i = 0; i < PER; i++)
            if (keep(d, i)) m |= 1L << (d * PER + i);
    return m;
}

static int k_source(int d, int i) { return (void)i, d == 1; }
static int k_page(int d, int i) { return d * 10 + i >= 3 && d * 10 + i < 12; }
static int k_section_in(int d, int i) { return (void)d, i % 3 != 1; }
static int k_lang_ne(int d, int i) { return (d * PER + i) % 2 == 0; }
static int k_or(int d, int i) { return d == 2 || 2018 + i > 2021; }
static int k_not(int d, int i) { return (void)i, d != 0; }
static int k_labels_internal(int d, int i) { return (void)d, i == 2 || i == 3; }
static int k_labels_secret(int d, int i) { return (void)i, d == 1; }
static int k_labels_nin(int d, int i) { return !(i == 3 || d == 1); }
static int k_author(int d, int i) { return (void)d, i % 2 == 1; }
static int k_team(int d, int i) { return (void)i, d == 2; }
static int k_missing(int d, int i) { return (void)d, i == 5; }
static int k_hint_ne(int d, int i) { return (void)d, i != 2; } /* 0.5 * 2 = 1.0; i 5 lacks it */
static int k_all(int d, int i) { return (void)d, (void)i, 1; }
static int k_chunk_nin(int d, int i) { return (void)d, i != 0 && i != 1; }

TEST(filters_select_what_a_reference_selects) {
    char err[256] = "";
    ctn_kb_coll c;
    ctn_kb *kb = build(&c);
    CHECK(kb != NULL);
    struct {
        const char *json;
        int (*keep)(int, int);
    } cases[] = {
        {"{\"source\": \"docs/b.md\"}", k_source},
        {"{\"page\": {\"$gte\": 3, \"$lt\": 12}}", k_page},
        {"{\"section\": [\"S0\", \"S2\"]}", k_section_in},
        {"{\"lang\": {\"$ne\": \"ko\"}}", k_lang_ne},
        {"{\"$or\": [{\"team\": \"ops\"}, {\"year\": {\"$gt\": 2021}}]}", k_or},
        {"{\"$not\": {\"source\": {\"$eq\": \"docs/a.md\"}}}", k_not},
        {"{\"labels\": \"internal\"}", k_labels_internal},
        {"{\"labels\": {\"$in\": [\"secret\"]}}", k_labels_secret},
        {"{\"labels\": {\"$nin\": [\"public\", \"secret\"]}}", k_labels_nin},
        {"{\"labels\": \"corpus\"}", k_all}, /* the collection's own label */
        {"{\"author.name\": \"kim\"}", k_author},
        {"{\"team\": \"ops\", \"lang\": {\"$in\": [\"en\", \"ko\"]}}", k_team},
        {"{\"score_hint\": {\"$exists\": false}}", k_missing},
        {"{\"score_hint\": {\"$ne\": 1.0}}", k_hint_ne},
        {"{\"chunk\": {\"$nin\": [0, 1]}}", k_chunk_nin},
        {"{}", k_all},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const long got = filtered(kb, &c, cases[i].json, err, sizeof err);
        if (got != ref(cases[i].keep)) printf("  filter %s: %lx, want %lx (%s)\n", cases[i].json,
                                              (unsigned long)got,
                                              (unsigned long)ref(cases[i].keep), err);
        CHECK(got == ref(cases[i].keep));
    }
    /* A value with quotes and SQL in it is a value, never SQL. */
    CHECK_EQ_INT(filtered(kb, &c, "{\"source\": \"x' OR 1=1 --\"}", err, sizeof err), 0);
    ctn_kb_close(kb);
}

TEST(bad_filters_are_refused_naming_the_problem) {
    char err[256] = "";
    struct {
        const char *json, *msg;
    } cases[] = {
        {"{\"page\": {\"$gtx\": 3}}", "unknown operator '$gtx'"},
        {"{\"page\": {\"$gt\": [1]}}", "'page': $gt needs a number or a string"},
        {"{\"page\": {\"$in\": []}}", "'page': $in needs a non-empty array"},
        {"{\"page\": {\"$in\": [1, {\"a\": 2}]}}", "'page': $in needs a string"},
        {"{\"$xor\": []}", "unknown operator '$xor'"},
        {"{\"$or\": {\"a\": 1}}", "$or needs a non-empty array"},
        {"{\"a\\\"b\": 1}", "may not hold quotes"},
        {"{\"a..b\": 1}", "an empty part"},
        {"{\"\": 1}", "1 to 128 bytes"},
        {"{\"labels\": {\"$gt\": \"a\"}}", "'labels' takes $eq"},
        {"{\"x\": {\"$exists\": 1}}", "'x': $exists needs true or false"},
        {"{\"x\": {}}", "an empty object of operators"},
        {"[1]", "a filter is an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ctn_val *spec = NULL;
        CHECK_EQ_INT(ctn_json_parse(cases[i].json, strlen(cases[i].json), &spec, err,
                                    sizeof err), 0);
        ctn_kb_filter *f = (ctn_kb_filter *)1;
        err[0] = '\0';
        CHECK_EQ_INT(ctn_kb_filter_new(spec, &f, err, sizeof err), CTN_EINVAL);
        CHECK(f == NULL);
        CHECK_CONTAINS(err, cases[i].msg);
        ctn_val_unref(spec);
    }
    /* Nested past the limit. */
    char deep[2048] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "{\"$not\": ");
    strcat(deep, "{\"a\": 1}");
    for (int i = 0; i < 40; i++)
        strcat(deep, "}");
    ctn_val *spec = NULL;
    CHECK_EQ_INT(ctn_json_parse(deep, strlen(deep), &spec, err, sizeof err), 0);
    ctn_kb_filter *f = NULL;
    CHECK_EQ_INT(ctn_kb_filter_new(spec, &f, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "nested more than 32 deep");
    ctn_val_unref(spec);
    /* Every allocation failing in turn: CTN_ENOMEM, nothing leaked (ASan). */
    const char *j = "{\"$or\": [{\"page\": {\"$in\": [1, 2, 3]}}, {\"author.name\": \"kim\"}],"
                    " \"labels\": {\"$nin\": [\"a\"]}}";
    CHECK_EQ_INT(ctn_json_parse(j, strlen(j), &spec, err, sizeof err), 0);
    for (long n = 0;; n++) {
        ctn__alloc_fail_after = n;
        const int rc = ctn_kb_filter_new(spec, &f, err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc == 0) {
            ctn_kb_filter_free(f);
            CHECK(n > 3);
            break;
        }
        CHECK_EQ_INT(rc, CTN_ENOMEM);
        CHECK(f == NULL);
        if (n > 2000) break;
    }
    ctn_val_unref(spec);
}

/* ---- BM25 ---------------------------------------------------------------------------- */

static int words_in(const char *t, const char *w, int *len) {
    int n = 0, l = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", t);
    for (char *s = strtok(buf, " "); s != NULL; s = strtok(NULL, " "))
        l++, n += strcmp(s, w) == 0;
    *len = l;
    return n;
}

/* BM25 of corpus chunk g for the words, as FTS5 defines it (over every row of the index). */
static double bm25_ref(int g, const char *const *q, int nq, double k1, double b) {
    double total = 0;
    int len;
    for (int i = 0; i < N; i++)
        words_in(texts[i], "", &len), total += len;
    const double avgdl = total / N;
    double s = 0;
    for (int j = 0; j < nq; j++) {
        int df = 0;
        for (int i = 0; i < N; i++)
            df += words_in(texts[i], q[j], &len) > 0;
        double idf = log((N - df + 0.5) / (df + 0.5));
        if (idf <= 0) idf = 1e-6;
        const int f = words_in(texts[g], q[j], &len);
        if (f > 0) s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len / avgdl));
    }
    return s;
}

TEST(bm25_takes_k1_and_b) {
    char err[256] = "";
    ctn_kb_coll c;
    ctn_kb *kb = build(&c);
    CHECK(kb != NULL);
    const char *const q[] = {"alpha", "zeta"};
    const double params[][2] = {{1.2, 0.75}, {2.0, 0.3}, {0.0, 0.5}, {1.2, 0.0}, {5, 1}};
    for (size_t p = 0; p < sizeof params / sizeof params[0]; p++) {
        ctn_kb_bm25_opts o = {.k1 = params[p][0], .b = params[p][1]};
        ctn_kb_hit h[N];
        size_t found = 0;
        CHECK_EQ_INT(ctn_kb_bm25(kb, &c, "alpha zeta", 10, &o, N, h, &found, err, sizeof err),
                     0);
        size_t want = 0;
        for (int g = 0; g < N; g++)
            want += bm25_ref(g, q, 2, 1, 0) > 0;
        CHECK(found == want && found > 3);
        for (size_t i = 0; i < found; i++) {
            const int g = index_of(h[i].chunk);
            const double r = bm25_ref(g, q, 2, o.k1, o.b);
            if (fabs(h[i].score - r) > 1e-9 * (1 + fabs(r)))
                printf("  k1 %g b %g chunk %d: %.12g, want %.12g\n", o.k1, o.b, g, h[i].score,
                       r);
            CHECK(fabs(h[i].score - r) <= 1e-9 * (1 + fabs(r)));
            if (i > 0) CHECK(h[i].score <= h[i - 1].score);
        }
    }
    /* A filter applies inside the keyword query. */
    ctn_val *spec = NULL;
    CHECK_EQ_INT(ctn_json_parse("{\"source\": \"docs/b.md\"}", 23, &spec, err, sizeof err), 0);
    ctn_kb_filter *f = NULL;
    CHECK_EQ_INT(ctn_kb_filter_new(spec, &f, err, sizeof err), 0);
    ctn_kb_bm25_opts o = ctn_kb_bm25_defaults();
    o.filter = f;
    ctn_kb_hit h[N];
    size_t found = 0;
    CHECK_EQ_INT(ctn_kb_bm25(kb, &c, "alpha zeta", 10, &o, N, h, &found, err, sizeof err), 0);
    CHECK(found > 0);
    for (size_t i = 0; i < found; i++)
        CHECK(index_of(h[i].chunk) / PER == 1);
    o.k1 = -1;
    CHECK_EQ_INT(ctn_kb_bm25(kb, &c, "alpha", 5, &o, N, h, &found, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "k1 must be from 0 to 100");
    ctn_kb_filter_free(f);
    ctn_val_unref(spec);
    ctn_kb_close(kb);
}

/* ---- vectors ---------------------------------------------------------------------------- */

static double cosine(const float *a, const float *b) {
    double ab = 0, aa = 0, bb = 0;
    for (int j = 0; j < DIM; j++)
        ab += (double)a[j] * b[j], aa += (double)a[j] * a[j], bb += (double)b[j] * b[j];
    return ab / sqrt(aa * bb);
}

/* The k best allowed corpus positions for q by cosine, brute force. */
static size_t brute(const float *q, long allow, size_t k, int *out) {
    size_t n = 0;
    int used[N] = {0};
    while (n < k) {
        int best = -1;
        for (int g = 0; g < N; g++)
            if ((allow >> g & 1) && !used[g] &&
                (best < 0 || cosine(q, vecs[g]) > cosine(q, vecs[best])))
                best = g;
        if (best < 0) break;
        used[best] = 1, out[n++] = best;
    }
    return n;
}

static int search(ctn_kb *kb, const ctn_kb_coll *c, ctn_vcache *vc, const ctn_search_opts *o,
                  size_t nq, const char *const *t, const float *qv, ctn_kb_hit *h, size_t *n,
                  char *err) {
    size_t lens[8];
    for (size_t i = 0; i < nq && t != NULL; i++)
        lens[i] = strlen(t[i]);
    return ctn_kb_search(kb, c, vc, o, nq, t, t != NULL ? lens : NULL, qv, h, n, err, 256);
}

TEST(vector_search_with_a_filter_equals_brute_force) {
    char err[256] = "";
    ctn_kb_coll c;
    ctn_kb *kb = build(&c);
    CHECK(kb != NULL);
    ctn_vcache *vc = ctn_vcache_new();
    const char *filters[] = {NULL, "{\"page\": {\"$gte\": 3, \"$lt\": 12}}",
                             "{\"labels\": \"internal\"}", "{\"source\": \"nowhere\"}"};
    int (*keeps[])(int, int) = {k_all, k_page, k_labels_internal, NULL};
    for (int round = 0; round < 2; round++) /* the second from the cache */
        for (size_t fi = 0; fi < 4; fi++) {
            ctn_kb_filter *f = NULL;
            if (filters[fi] != NULL) {
                ctn_val *spec = NULL;
                ctn_json_parse(filters[fi], strlen(filters[fi]), &spec, err, sizeof err);
                CHECK_EQ_INT(ctn_kb_filter_new(spec, &f, err, sizeof err), 0);
                ctn_val_unref(spec);
            }
            for (int t = 0; t < 5; t++) {
                float q[DIM];
                for (int j = 0; j < DIM; j++)
                    q[j] = frand();
                ctn_search_opts o = ctn_search_defaults();
                o.k = 5, o.bm25.filter = f;
                ctn_kb_hit h[5];
                size_t n = 0;
                CHECK_EQ_INT(search(kb, &c, vc, &o, 1, NULL, q, h, &n, err), 0);
                int want[5];
                const size_t wn = brute(q, keeps[fi] ? ref(keeps[fi]) : 0, 5, want);
                CHECK(n == wn);
                for (size_t i = 0; i < n && i < wn; i++) {
                    CHECK(index_of(h[i].chunk) == want[i]);
                    CHECK(fabs(h[i].score - cosine(q, vecs[want[i]])) < 1e-5);
                }
            }
            ctn_kb_filter_free(f);
        }
    ctn_vcache_free(vc);
    ctn_kb_close(kb);
}

TEST(mmr_diversifies) {
    char err[256] = "";
    ctn_kb_coll c;
    make_corpus();
    /* The query between the first two axes; chunks 0 and 1 nearly the same (1 the nearer),
     * chunk 2 a little less near but on the other side of the query; the rest away. */
    for (int g = 0; g < N; g++)
        for (int j = 0; j < DIM; j++)
            vecs[g][j] = g >= 3 ? (j < 2 ? -1.0f : 0.0f) + 0.1f * frand() : 0.0f;
    vecs[0][0] = 1, vecs[0][1] = 0.25f;
    vecs[1][0] = 1, vecs[1][1] = 0.26f;
    vecs[2][0] = 0.24f, vecs[2][1] = 1;
    ctn_kb *kb = build(&c);
    CHECK(kb != NULL);
    float q[DIM] = {1, 1};
    ctn_search_opts o = ctn_search_defaults();
    o.k = 2;
    ctn_kb_hit h[4];
    size_t n = 0;
    CHECK_EQ_INT(search(kb, &c, NULL, &o, 1, NULL, q, h, &n, err), 0);
    CHECK(n == 2 && index_of(h[0].chunk) == 1 && index_of(h[1].chunk) == 0);
    o.mmr = true, o.fetch_k = 10;
    CHECK_EQ_INT(search(kb, &c, NULL, &o, 1, NULL, q, h, &n, err), 0);
    CHECK(n == 2 && index_of(h[0].chunk) == 1 && index_of(h[1].chunk) == 2);
    CHECK(fabs(h[1].score - cosine(q, vecs[2])) < 1e-6); /* the score: its relevance */
    o.lambda = 1; /* relevance only: the plain order */
    CHECK_EQ_INT(search(kb, &c, NULL, &o, 1, NULL, q, h, &n, err), 0);
    CHECK(n == 2 && index_of(h[0].chunk) == 1 && index_of(h[1].chunk) == 0);
    o.mode = CTN_RETRIEVE_BM25;
    const char *t = "alpha";
    CHECK_EQ_INT(search(kb, &c, NULL, &o, 1, &t, NULL, h, &n, err), CTN_EINVAL);
    CHECK_CONTAINS(err, "mmr compares the chunks' vectors");
    ctn_kb_close(kb);
    make_corpus();
}

TEST(cached_vectors_follow_the_collection) {
    char err[256] = "";
    ctn_kb_coll c;
    ctn_kb *kb = build(&c);
    CHECK(kb != NULL);
    ctn_vcache *vc = ctn_vcache_new();
    float q[DIM];
    memcpy(q, vecs[4], sizeof q);
    ctn_search_opts o = ctn_search_defaults();
    o.k = 1;
    ctn_kb_hit h[1];
    size_t n = 0;
    CHECK_EQ_INT(search(kb, &c, vc, &o, 1, NULL, q, h, &n, err), 0);
    CHECK(n == 1 && index_of(h[0].chunk) == 4);
    /* Document 0 replaced with its chunk 4 pointing elsewhere: the cache must not answer
     * from the old vectors. */
    float keep[DIM];
    memcpy(keep, vecs[4], sizeof keep);
    for (int j = 0; j < DIM; j++)
        vecs[4][j] = -keep[j];
    CHECK_EQ_INT(put_doc(kb, &c, 0, "h2"), 0);
    CHECK_EQ_INT(search(kb, &c, vc, &o, 1, NULL, q, h, &n, err), 0);
    CHECK(n == 1);
    double best = -2;
    int bi = -1;
    for (int g = 0; g < N; g++)
        if (cosine(q, vecs[g]) > best) best = cosine(q, vecs[g]), bi = g;
    /* The stored ids of document 0 changed: compare by vector. */
    float got[DIM];
    CHECK_EQ_INT(ctn_kb_vector(kb, &c, h[0].chunk, got, err, sizeof err), 0);
    CHECK(fabs(cosine(q, got) - best) < 1e-6 && bi != 4);
    /* A read transaction that began before a change keeps seeing its state. */
    ctn_kb *r = NULL;
    CHECK_EQ_INT(ctn_kb_open(path, CTN_KB_READONLY, &r, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_kb_read_begin(r, err, sizeof err), 0);
    int64_t uid0, gen0, uid1, gen1;
    CHECK_EQ_INT(ctn_kb_generation(r, &c, &uid0, &gen0, err, sizeof err), 0);
    memcpy(vecs[4], keep, sizeof keep);
    CHECK_EQ_INT(put_doc(kb, &c, 0, "h3"), 0);
    CHECK_EQ_INT(ctn_kb_generation(r, &c, &uid1, &gen1, err, sizeof err), 0);
    CHECK(uid0 == uid1 && gen0 == gen1);
    ctn_kb_read_end(r);
    CHECK_EQ_INT(ctn_kb_generation(r, &c, &uid1, &gen1, err, sizeof err), 0);
    CHECK(uid0 == uid1 && gen1 == gen0 + 1);
    ctn_kb_close(r);
    CHECK_EQ_INT(search(kb, &c, vc, &o, 1, NULL, q, h, &n, err), 0);
    CHECK_EQ_INT(ctn_kb_vector(kb, &c, h[0].chunk, got, err, sizeof err), 0);
    CHECK(fabs(cosine(q, got) - 1) < 1e-6);
    ctn_vcache_free(vc);
    ctn_kb_close(kb);
}

TEST(several_queries_fuse_and_weights_apply) {
    char err[256] = "";
    ctn_kb_coll c;
    ctn_kb *kb = build(&c);
    CHECK(kb != NULL);
    float q2[2 * DIM];
    memcpy(q2, vecs[1], DIM * sizeof(float));
    memcpy(q2 + DIM, vecs[9], DIM * sizeof(float));
    ctn_search_opts o = ctn_search_defaults();
    o.k = 6, o.fetch_k = 10;
    /* Each query alone (fetch_k long, as the fusion reads them), then fused here. */
    ctn_kb_hit a[10], b[10], want[6], got[6];
    size_t na = 0, nb = 0, n = 0;
    ctn_search_opts one = o;
    one.k = 10;
    CHECK_EQ_INT(search(kb, &c, NULL, &one, 1, NULL, q2, a, &na, err), 0);
    CHECK_EQ_INT(search(kb, &c, NULL, &one, 1, NULL, q2 + DIM, b, &nb, err), 0);
    const ctn_kb_hit *lists[] = {a, b};
    const size_t ns[] = {na, nb};
    const double w[] = {1, 1};
    const long m = ctn_kb_rrf(lists, ns, w, 2, want, 6);
    CHECK(m == 6);
    CHECK_EQ_INT(search(kb, &c, NULL, &o, 2, NULL, q2, got, &n, err), 0);
    CHECK(n == 6);
    for (size_t i = 0; i < n; i++)
        CHECK(got[i].chunk == want[i].chunk && fabs(got[i].score - want[i].score) < 1e-12);
    /* Both queries' own best chunks come first (each is first in one list). */
    CHECK((index_of(got[0].chunk) == 1 || index_of(got[0].chunk) == 9) &&
          (index_of(got[1].chunk) == 1 || index_of(got[1].chunk) == 9));
    /* Hybrid with the keyword list weighing nothing orders as the vector list does. */
    const char *t = "alpha zeta";
    o.mode = CTN_RETRIEVE_HYBRID, o.w_bm25 = 0, o.k = 5;
    CHECK_EQ_INT(search(kb, &c, NULL, &o, 1, &t, q2, got, &n, err), 0);
    for (size_t i = 0; i < 5 && i < n; i++)
        CHECK(got[i].chunk == a[i].chunk);
    o.w_bm25 = 1, o.w_vector = 0; /* and the other way round */
    ctn_kb_hit kw[5];
    size_t nk = 0;
    CHECK_EQ_INT(ctn_kb_bm25(kb, &c, t, strlen(t), NULL, 10, b, &nk, err, sizeof err), 0);
    CHECK_EQ_INT(search(kb, &c, NULL, &o, 1, &t, q2, kw, &n, err), 0);
    for (size_t i = 0; i < 5 && i < n && i < nk; i++)
        CHECK(kw[i].chunk == b[i].chunk);
    o.w_vector = 0, o.w_bm25 = 0;
    CHECK_EQ_INT(search(kb, &c, NULL, &o, 1, &t, q2, kw, &n, err), CTN_EINVAL);
    CHECK_CONTAINS(err, "not both 0");
    ctn_kb_close(kb);
}

TEST(version_1_files_migrate) {
    char err[256] = "";
    ctn_kb_coll c;
    ctn_kb *kb = build(&c);
    CHECK(kb != NULL);
    ctn_kb_close(kb);
    /* Back to version 1's collections table (what a file of that version has). */
    sqlite3 *db;
    sqlite3_open(path, &db);
    CHECK(sqlite3_exec(db, "ALTER TABLE collections DROP COLUMN generation;"
                           "ALTER TABLE collections DROP COLUMN uid; PRAGMA user_version = 1",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK(ctn_kb_open(path, CTN_KB_READONLY, &kb, err, sizeof err) == CTN_ENOTSUP);
    CHECK_CONTAINS(err, "needs migrating to 2");
    CHECK_EQ_INT(ctn_kb_open(path, 0, &kb, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_kb_collection(kb, "docs", NULL, &c, err, sizeof err), 0);
    int64_t uid = 0, gen = -1;
    CHECK_EQ_INT(ctn_kb_generation(kb, &c, &uid, &gen, err, sizeof err), 0);
    CHECK(gen == 0 && uid != 0);
    CHECK_EQ_INT(put_doc(kb, &c, 1, "h9"), 0);
    int64_t uid2 = 0, gen2 = 0;
    CHECK_EQ_INT(ctn_kb_generation(kb, &c, &uid2, &gen2, err, sizeof err), 0);
    CHECK(uid2 == uid && gen2 == 1);
    ctn_kb_close(kb);
}

TEST(allocation_failures_in_a_search_are_clean) {
    char err[256] = "";
    ctn_kb_coll c;
    ctn_kb *kb = build(&c);
    CHECK(kb != NULL);
    ctn_val *spec = NULL;
    ctn_json_parse("{\"year\": {\"$gte\": 2020}}", 23, &spec, err, sizeof err);
    ctn_kb_filter *f = NULL;
    CHECK_EQ_INT(ctn_kb_filter_new(spec, &f, err, sizeof err), 0);
    ctn_val_unref(spec);
    const char *t = "alpha beta";
    for (int mmr = 0; mmr <= 1; mmr++) {
        ctn_search_opts o = ctn_search_defaults();
        o.mode = CTN_RETRIEVE_HYBRID, o.k = 4, o.fetch_k = 8, o.bm25.filter = f, o.mmr = mmr;
        ctn_kb_hit want[4], got[4];
        size_t wn = 0, n = 0;
        CHECK_EQ_INT(search(kb, &c, NULL, &o, 1, &t, vecs[3], want, &wn, err), 0);
        CHECK(wn == 4);
        for (long k = 0;; k++) {
            ctn_vcache *vc = ctn_vcache_new();
            ctn__alloc_fail_after = k;
            const int rc = search(kb, &c, vc, &o, 1, &t, vecs[3], got, &n, err);
            ctn__alloc_fail_after = -1;
            ctn_vcache_free(vc);
            if (rc == 0) {
                CHECK(n == wn && memcmp(got, want, n * sizeof *got) == 0);
                break;
            }
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            if (k > 5000) break;
        }
    }
    ctn_kb_filter_free(f);
    ctn_kb_close(kb);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ctn_retr_XXXXXX");
    if (mkdtemp(dir) == NULL) return 1;
    snprintf(path, sizeof path, "%s/r.sqlite", dir);
    make_corpus();
    RUN(filters_select_what_a_reference_selects);
    RUN(bad_filters_are_refused_naming_the_problem);
    RUN(bm25_takes_k1_and_b);
    RUN(vector_search_with_a_filter_equals_brute_force);
    RUN(mmr_diversifies);
    RUN(cached_vectors_follow_the_collection);
    RUN(several_queries_fuse_and_weights_apply);
    RUN(version_1_files_migrate);
    RUN(allocation_failures_in_a_search_are_clean);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
