/*
 * libFuzzer target for the Markdown loader (stdlib/loader.h, load_md.c). The input is the
 * file. Checked on every input:
 *   - it loads or fails with CTN_EFORMAT (a message naming the source), and a failure
 *     leaves docs as it was; bytes that are not UTF-8 (without a UTF-16 BOM) always give a
 *     warning naming the source and "invalid UTF-8", and never reach a document;
 *   - every document has non-empty valid UTF-8 text without trailing blank lines, and
 *     metadata that agrees with itself: "section" is "headings" joined by " > ", "level" is
 *     0 exactly when there are no headings, at most 6, and the path at most 6 deep;
 *   - every "blocks" range lies in the text, in order, starts a line, and slices a fence
 *     (ending in '`') or a table (ending in '|', its header_end inside it at a line start);
 *   - every image is {alt, src} with strings;
 *   - loading again gives equal documents, and with one allocation failing (chosen from the
 *     input) the load either gives the same documents or CTN_ENOMEM with docs untouched.
 *
 *   cmake --build build --target fuzz_markdown && build/fuzz_markdown tests/fuzz/corpus_markdown
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "loader.h"
#include "unicode.h"
#include "value.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_markdown: %s failed at line %d\n", #cond, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *str_of(const ctn_val *v) {
    CHECK(v != NULL && v->kind == CTN_VSTR);
    return v->u.str.p;
}

static void check_doc(const ctn_val *d) {
    CHECK(d->kind == CTN_VDOC);
    const char *t = d->u.doc.text->u.str.p;
    const size_t n = d->u.doc.text->u.str.len;
    CHECK(n > 0 && t[n - 1] != '\n' && t[n - 1] != ' ');
    CHECK(ctn__utf8_valid(t, n));
    CHECK(strcmp(str_of(ctn_val_get(d, "source")), "fuzz.md") == 0);

    const ctn_val *hs = ctn_val_get(d, "headings");
    CHECK(hs != NULL && hs->kind == CTN_VARR && ctn_val_len(hs) <= 6);
    const ctn_val *lv = ctn_val_get(d, "level");
    CHECK(lv != NULL && lv->kind == CTN_VINT && lv->u.i >= 0 && lv->u.i <= 6);
    CHECK((lv->u.i == 0) == (ctn_val_len(hs) == 0));
    const ctn_val *sec = ctn_val_get(d, "section");
    const char *s = str_of(sec);
    size_t at = 0;
    for (size_t i = 0; i < ctn_val_len(hs); i++) {
        const ctn_val *h = ctn_val_at(hs, i);
        str_of(h);
        if (i > 0) {
            CHECK(at + 3 <= sec->u.str.len && memcmp(s + at, " > ", 3) == 0);
            at += 3;
        }
        CHECK(at + h->u.str.len <= sec->u.str.len);
        CHECK(memcmp(s + at, h->u.str.p, h->u.str.len) == 0);
        at += h->u.str.len;
    }
    CHECK(at == sec->u.str.len);

    const ctn_val *bl = ctn_val_get(d, "blocks");
    if (bl != NULL) {
        CHECK(bl->kind == CTN_VARR && ctn_val_len(bl) > 0);
        int64_t prev = 0;
        for (size_t i = 0; i < ctn_val_len(bl); i++) {
            const ctn_val *e = ctn_val_at(bl, i);
            CHECK(e->kind == CTN_VARR && ctn_val_len(e) >= 3);
            const int64_t a = ctn_val_at(e, 0)->u.i, z = ctn_val_at(e, 1)->u.i;
            CHECK(prev <= a && a < z && (size_t)z <= n);
            CHECK(a == 0 || t[a - 1] == '\n');
            prev = z;
            const char *kind = str_of(ctn_val_at(e, 2));
            if (strcmp(kind, "code") == 0) {
                CHECK(ctn_val_len(e) == 3 && t[z - 1] == '`');
            } else {
                CHECK(strcmp(kind, "table") == 0 && ctn_val_len(e) == 4 && t[z - 1] == '|');
                const int64_t he = ctn_val_at(e, 3)->u.i;
                CHECK(a < he && he <= z && (he == z || t[he - 1] == '\n'));
            }
        }
    }
    const ctn_val *im = ctn_val_get(d, "images");
    if (im != NULL) {
        CHECK(im->kind == CTN_VARR && ctn_val_len(im) > 0);
        for (size_t i = 0; i < ctn_val_len(im); i++) {
            str_of(ctn_val_get(ctn_val_at(im, i), "alt"));
            str_of(ctn_val_get(ctn_val_at(im, i), "src"));
        }
    }
}

/* Warnings: how many, and whether one named invalid UTF-8 in this source. */
static int n_warn, n_bad_utf8;
static void on_warn(void *ud, const char *msg) {
    (void)ud;
    CHECK(strncmp(msg, "fuzz.md: ", 9) == 0);
    n_warn++;
    if (strstr(msg, "invalid UTF-8") != NULL) n_bad_utf8++;
}

/* A docs array holding one earlier value, which every load must keep first. */
static ctn_val *fresh(void) {
    ctn_val *docs = ctn_val_arr();
    CHECK(docs != NULL && ctn_val_push(docs, ctn_val_cstr("earlier")) == 0);
    return docs;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *t = (const char *)data;
    const ctn_load_ctx c = {.source = "fuzz.md", .warn = on_warn};
    char err[512] = "";
    ctn_val *docs = fresh();
    n_warn = n_bad_utf8 = 0;
    const int rc = ctn_load_markdown(&c, t, size, docs, err, sizeof err);
    const size_t bom = size >= 3 && memcmp(t, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    const int utf16 = size >= 2 && (((uint8_t)t[0] == 0xFF && (uint8_t)t[1] == 0xFE) ||
                                    ((uint8_t)t[0] == 0xFE && (uint8_t)t[1] == 0xFF));
    const int utf8 = ctn__utf8_valid(t + bom, size - bom);
    CHECK(rc == 0 || rc == CTN_EFORMAT);
    if (!utf8 && !utf16) CHECK(n_bad_utf8 > 0);
    if (utf8) CHECK(n_bad_utf8 == 0);
    if (rc != 0) {
        CHECK(strncmp(err, "fuzz.md: ", 9) == 0);
        CHECK(ctn_val_len(docs) == 1);
    } else {
        for (size_t i = 1; i < ctn_val_len(docs); i++)
            check_doc(ctn_val_at(docs, i));
        ctn_val *again = fresh();
        CHECK(ctn_load_markdown(&c, t, size, again, err, sizeof err) == 0);
        CHECK(ctn_val_equal(docs, again));
        ctn_val_unref(again);
    }

    /* One allocation fails, chosen by the input's length and first byte. */
    if (size < 4096) {
        ctn_val *failed = fresh();
        ctn__alloc_fail_once = true;
        ctn__alloc_fail_after = (long)((size * 31u + (size ? data[0] : 0u)) % 200u);
        const int frc = ctn_load_markdown(&c, t, size, failed, err, sizeof err);
        ctn__alloc_fail_after = -1;
        ctn__alloc_fail_once = false;
        if (frc == CTN_ENOMEM)
            CHECK(ctn_val_len(failed) == 1);
        else
            CHECK(frc == rc && (rc != 0 || ctn_val_equal(docs, failed)));
        ctn_val_unref(failed);
    }
    ctn_val_unref(docs);
    return 0;
}
