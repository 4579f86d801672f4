/*
 * libFuzzer target for text decoding and the JSON / JSON Lines loader (stdlib/loader.h).
 * Byte 0 picks a text pointer (bits 0-2), JSON Lines (bit 3) and a set of meta fields (bits
 * 4-5); the rest is the file. Checked on every input:
 *   - decoding gives valid UTF-8 with a NUL after it, each warning names the source, and
 *     decoding the result again changes nothing and warns of nothing (unless the result
 *     starts with a BOM of its own, which the second pass drops);
 *   - the loader returns 0, CTN_EFORMAT, CTN_ENOENT or CTN_ETYPE; on failure docs is as it
 *     was and the message names the source; on success every new document has valid UTF-8
 *     text, "source", a string "pointer" and, for JSON Lines, a "line" from 1 that never
 *     goes down, and a JSON file with the pointer "" gives exactly one document;
 *   - a decoded text without a newline loads the same documents as JSON Lines and as JSON.
 *
 *   cmake --build build --target fuzz_json_select && build/fuzz_json_select
 * tests/fuzz/corpus_json_select
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "loader.h"
#include "unicode.h"
#include "value.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_json_select: %s failed at line %d\n", #cond, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const pointers[8] = {
    "", "/*", "/items/*/body", "/*/*", "/a~1b/0", "/*/0/*", "/x/*/y/*", "/0",
};
static const char *const fields_1[] = {"/id"};
static const char *const fields_3[] = {"/id", "/t", "/0"};

static const char source[] = "fz.json";

static void on_warn(void *ud, const char *msg) {
    CHECK(strncmp(msg, "fz.json: ", 9) == 0);
    (*(size_t *)ud)++;
}

/* Decodes t twice; returns the first result (malloc'd) and its length. */
static char *check_decode(const char *t, size_t n, size_t *len) {
    size_t warned = 0, len2 = 0;
    const ctn_load_ctx c = {.source = source, .warn = on_warn, .warn_ud = &warned};
    char *out = NULL, *again = NULL;
    CHECK(ctn_text_decode(&c, t, n, &out, len) == 0);
    CHECK(out != NULL && out[*len] == '\0' && ctn__utf8_valid(out, *len));
    const size_t first = warned;
    CHECK(ctn_text_decode(&c, out, *len, &again, &len2) == 0);
    CHECK(warned == first);
    const size_t bom = *len >= 3 && memcmp(out, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    CHECK(len2 == *len - bom && memcmp(again, out + bom, len2) == 0);
    free(again);
    return out;
}

/* Loads t; checks the outcome; returns the code, with the documents in *docs. */
static int load(const ctn_json_sel *sel, const char *t, size_t n, ctn_val **docs) {
    const ctn_load_ctx c = {.source = source};
    *docs = ctn_val_arr();
    CHECK(*docs != NULL && ctn_val_push(*docs, ctn_val_null()) == 0);
    char err[256] = "";
    const int rc = ctn_load_json(&c, sel, t, n, *docs, err, sizeof err);
    CHECK(rc == 0 || rc == CTN_EFORMAT || rc == CTN_ENOENT || rc == CTN_ETYPE);
    if (rc < 0) {
        CHECK(ctn_val_len(*docs) == 1 && strncmp(err, "fz.json: ", 9) == 0);
        return rc;
    }
    int64_t last_line = 0;
    for (size_t i = 1; i < ctn_val_len(*docs); i++) {
        const ctn_val *d = ctn_val_at(*docs, i);
        CHECK(d->kind == CTN_VDOC);
        CHECK(ctn__utf8_valid(d->u.doc.text->u.str.p, d->u.doc.text->u.str.len));
        const ctn_val *s = ctn_val_get(d, "source"), *p = ctn_val_get(d, "pointer");
        CHECK(s != NULL && s->kind == CTN_VSTR && strcmp(s->u.str.p, source) == 0);
        CHECK(p != NULL && p->kind == CTN_VSTR);
        const ctn_val *l = ctn_val_get(d, "line");
        CHECK(sel->lines ? l != NULL && l->kind == CTN_VINT && l->u.i >= last_line && l->u.i >= 1
                         : l == NULL);
        if (l != NULL) last_line = l->u.i;
    }
    if (!sel->lines && sel->text[0] == '\0') CHECK(ctn_val_len(*docs) == 2);
    return rc;
}

/* The texts and pointers of two loads' documents agree. */
static bool same_docs(const ctn_val *a, const ctn_val *b) {
    if (ctn_val_len(a) != ctn_val_len(b)) return false;
    for (size_t i = 1; i < ctn_val_len(a); i++) {
        const ctn_val *x = ctn_val_at(a, i), *y = ctn_val_at(b, i);
        if (!ctn_val_equal(x->u.doc.text, y->u.doc.text) ||
            !ctn_val_equal(ctn_val_get(x, "pointer"), ctn_val_get(y, "pointer")))
            return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const unsigned pick = data[0];
    const char *t = (const char *)data + 1;
    const size_t n = size - 1;
    size_t ulen = 0;
    char *u = check_decode(t, n, &ulen);

    ctn_json_sel sel = {.text = pointers[pick & 7], .lines = (pick >> 3) & 1};
    const unsigned f = (pick >> 4) & 3;
    sel.meta_fields = f == 1 ? fields_1 : f >= 2 ? fields_3 : NULL;
    sel.n_meta_fields = f == 1 ? 1 : f >= 2 ? 3 : 0;
    ctn_val *docs = NULL;
    load(&sel, t, n, &docs);
    ctn_val_unref(docs);

    /* The decoded text decodes to itself (it has no BOM then): without a newline, a
     * non-blank one is one record either way. */
    bool blank = true;
    for (size_t i = 0; i < ulen && blank; i++)
        blank = u[i] == ' ' || u[i] == '\t' || u[i] == '\r';
    const bool bom = ulen >= 3 && memcmp(u, "\xEF\xBB\xBF", 3) == 0;
    if (!blank && !bom && memchr(u, '\n', ulen) == NULL) {
        ctn_val *a = NULL, *b = NULL;
        sel.lines = false;
        const int ra = load(&sel, u, ulen, &a);
        sel.lines = true;
        const int rb = load(&sel, u, ulen, &b);
        CHECK(ra == rb);
        if (ra == 0) CHECK(same_docs(a, b));
        ctn_val_unref(a);
        ctn_val_unref(b);
    }
    free(u);
    return 0;
}
