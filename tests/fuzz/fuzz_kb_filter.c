/*
 * libFuzzer target for metadata filters (stdlib/kb.h, ctn_kb_filter_new): the input is a
 * filter as JSON, run against a small knowledge base made once. Checked on every input
 * that parses: the filter is either refused with CTN_EINVAL and a message, or made into SQL
 * that runs without an SQL error (values are bound, never pasted, so no input can break the
 * statement), finds chunks of the collection only, ascending, and finds the same again;
 * a keyword search with it finds a subset of them.
 *
 *   cmake --build build --target fuzz_kb_filter && build/fuzz_kb_filter tests/fuzz/corpus_kb_filter
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "json.h"
#include "kb.h"
#include "value.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_kb_filter: %s failed at line %d\n", #cond, __LINE__);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static ctn_kb *kb;
static ctn_kb_coll coll;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char path[] = "/tmp/ctn_fuzz_kbf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path);
    char err[256] = "";
    CHECK(ctn_kb_open(path, 0, &kb, err, sizeof err) == 0);
    const char *labels[] = {"internal"};
    ctn_kb_coll_opts co = {.create = true, .labels = labels, .n_labels = 1};
    CHECK(ctn_kb_collection(kb, "c", &co, &coll, err, sizeof err) == 0);
    static const char *const texts[] = {"Install catena on Debian.", "Refunds take a week.",
                                        "설치 방법", "page three text", "labels and more"};
    ctn_val *ch = ctn_val_arr();
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        ctn_val *m = ctn_val_obj();
        ctn_val_set(m, "chunk", ctn_val_int((int64_t)i));
        ctn_val_set(m, "page", ctn_val_int((int64_t)i + 1));
        ctn_val_set(m, "section", ctn_val_cstr(i % 2 ? "Intro" : "Usage"));
        ctn_val_set(m, "year", ctn_val_num(2020.5 + (double)i));
        ctn_val_set(m, "ok", ctn_val_bool(i % 2));
        ctn_val *a = ctn_val_obj();
        ctn_val_set(a, "name", ctn_val_cstr(i ? "kim" : "lee"));
        ctn_val_set(m, "author", a);
        if (i == 4) ctn_val_set(m, "labels", ctn_val_cstr("public"));
        ctn_val_push(ch, ctn_val_doc(texts[i], strlen(texts[i]), m));
    }
    ctn_val *dm = ctn_val_obj();
    ctn_val_set(dm, "team", ctn_val_cstr("dev"));
    ctn_kb_doc d = {.uri = "docs/a.md", .hash = "h", .meta = dm};
    CHECK(ctn_kb_put(kb, &coll, &d, ch, NULL, err, sizeof err) == 0);
    ctn_val_unref(ch);
    ctn_val_unref(dm);
    unlink(path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512] = "";
    ctn_val *spec = NULL;
    if (ctn_json_parse((const char *)data, size, &spec, err, sizeof err) < 0) return 0;
    ctn_kb_filter *f = NULL;
    const int rc = ctn_kb_filter_new(spec, &f, err, sizeof err);
    ctn_val_unref(spec);
    if (rc < 0) {
        CHECK(rc == CTN_EINVAL && f == NULL && strncmp(err, "filter: ", 8) == 0);
        return 0;
    }
    int64_t *ids = NULL, *again = NULL;
    size_t n = 0, n2 = 0;
    const int r1 = ctn_kb_filter_chunks(kb, &coll, f, &ids, &n, err, sizeof err);
    if (r1 != 0) fprintf(stderr, "fuzz_kb_filter: %s\n", err);
    CHECK(r1 == 0 && n <= 5);
    for (size_t i = 1; i < n; i++)
        CHECK(ids[i] > ids[i - 1]);
    CHECK(ctn_kb_filter_chunks(kb, &coll, f, &again, &n2, err, sizeof err) == 0 && n2 == n);
    CHECK(n == 0 || memcmp(ids, again, n * sizeof *ids) == 0);
    ctn_kb_bm25_opts o = ctn_kb_bm25_defaults();
    o.filter = f;
    ctn_kb_hit h[5];
    size_t nh = 0;
    static const char q[] = "install refunds page labels 설치";
    CHECK(ctn_kb_bm25(kb, &coll, q, sizeof q - 1, &o, 5, h, &nh, err, sizeof err) == 0);
    for (size_t i = 0; i < nh; i++) {
        size_t j = 0;
        while (j < n && ids[j] != h[i].chunk)
            j++;
        CHECK(j < n);
    }
    free(ids);
    free(again);
    ctn_kb_filter_free(f);
    return 0;
}
