/*
 * libFuzzer target for keyword search (stdlib/kb.h, ctn_kb_bm25): the input is the query
 * text, searched in a small knowledge base made once (English, Korean and Chinese chunks).
 * Checked on every input: the search never fails (any text is a valid query: no FTS5
 * syntax error), finds at most k chunks, each a chunk of the collection, best first; the
 * MATCH expression is made only of quoted words joined by OR, and searching again gives the
 * same hits.
 *
 *   cmake --build build --target fuzz_kb_query && build/fuzz_kb_query tests/fuzz/corpus_kb_query
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "kb.h"
#include "value.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_kb_query: %s failed at line %d\n", #cond, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static ctn_kb *kb;
static ctn_kb_coll coll;
static int64_t first_id, n_chunks;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char path[] = "/tmp/ctn_fuzz_kb_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path);
    char err[256] = "";
    CHECK(ctn_kb_open(path, 0, &kb, err, sizeof err) == 0);
    ctn_kb_coll_opts co = {.create = true};
    CHECK(ctn_kb_collection(kb, "c", &co, &coll, err, sizeof err) == 0);
    static const char *const texts[] = {
        "Install catena on Debian with make demo.", "AND OR NOT NEAR are words here: \"quoted\".",
        "설치 방법은 데비안에서 make demo 명령을 실행하는 것입니다.", "知识库把文档切成块并保存在数据库里。",
        "punctuation: (a) [b] {c} *d* ^e -f +g 'h' \"i\" text:j", "café naïve résumé",
    };
    ctn_val *ch = ctn_val_arr();
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        ctn_val *m = ctn_val_obj();
        ctn_val_set(m, "chunk", ctn_val_int((int64_t)i));
        ctn_val_push(ch, ctn_val_doc(texts[i], strlen(texts[i]), m));
    }
    ctn_kb_doc d = {.uri = "a", .hash = "h"};
    CHECK(ctn_kb_put(kb, &coll, &d, ch, NULL, err, sizeof err) == 0);
    ctn_val_unref(ch);
    n_chunks = (int64_t)(sizeof texts / sizeof texts[0]);
    /* The chunks' ids, in insert order, run on from the first. */
    ctn_kb_hit h[1];
    size_t f = 0;
    CHECK(ctn_kb_bm25(kb, &coll, "Install", 7, NULL, 1, h, &f, err, sizeof err) == 0 && f == 1);
    first_id = h[0].chunk;
    unlink(path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *q = (const char *)data;
    char err[512] = "";
    ctn_kb_hit h[4], again[4];
    size_t f = 99, f2 = 99;
    const int rc = ctn_kb_bm25(kb, &coll, q, size, NULL, 4, h, &f, err, sizeof err);
    if (rc != 0) fprintf(stderr, "fuzz_kb_query: %s\n", err);
    CHECK(rc == 0);
    CHECK(f <= 4);
    for (size_t i = 0; i < f; i++) {
        CHECK(h[i].chunk >= first_id && h[i].chunk < first_id + n_chunks);
        if (i > 0) CHECK(h[i - 1].score >= h[i].score);
    }
    CHECK(ctn_kb_bm25(kb, &coll, q, size, NULL, 4, again, &f2, err, sizeof err) == 0 && f2 == f);
    for (size_t i = 0; i < f; i++)
        CHECK(again[i].chunk == h[i].chunk && again[i].score == h[i].score);
    for (int tri = 0; tri < 2; tri++) {
        char *m = ctn_kb_fts_query(q, size, tri, NULL);
        CHECK(m != NULL);
        /* "w1" OR "w2" ...: quotes balanced, none inside a word. */
        size_t quotes = 0;
        for (const char *p = m; *p; p++)
            quotes += *p == '"';
        CHECK(quotes % 2 == 0);
        free(m);
    }
    return 0;
}
