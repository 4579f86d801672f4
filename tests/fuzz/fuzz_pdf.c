/*
 * libFuzzer target for the PDF loader (stdlib/loader.h, ctn_load_pdf): hostile bytes through
 * poppler (not instrumented; what is fuzzed is our wrapper around it). Byte 0 picks an
 * allocation to fail in a second load; the rest is the file. Checked on every input:
 *   - the code is 0, CTN_EFORMAT or CTN_ENOTSUP, and a failure leaves docs as it was with a
 *     message naming the source;
 *   - on success there is one document per page, numbered from 1, each with "pages", valid
 *     UTF-8 text without form feeds, carriage returns or trailing white space on a line,
 *     "no_text" exactly when the text is empty, and images of four finite-or-null numbers;
 *   - the same load with one of our allocations failing gives CTN_ENOMEM with docs as it
 *     was, or the same documents (when the failed allocation came after the last one).
 *
 *   cmake --build build --target fuzz_pdf && build/fuzz_pdf -rss_limit_mb=2048
 * tests/fuzz/corpus_pdf
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
            fprintf(stderr, "fuzz_pdf: %s failed at line %d\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void ignore(void *ud, const char *msg) {
    (void)ud;
    CHECK(strncmp(msg, "f.pdf: ", 7) == 0);
}

/* Loads the n bytes into a fresh array holding one marker, with the allocation fail_at
 * failing once (-1: none); the code, and *docs. */
static int load(const char *data, size_t n, long fail_at, ctn_val **docs, ctn_val *marker) {
    ctn_load_ctx c = {.source = "f.pdf", .warn = ignore};
    *docs = ctn_val_arr();
    CHECK(*docs != NULL && ctn_val_push(*docs, ctn_val_ref(marker)) == 0);
    char err[256] = "";
    ctn__alloc_fail_once = true;
    ctn__alloc_fail_after = fail_at;
    const int rc = ctn_load_pdf(&c, data, n, *docs, err, sizeof err);
    ctn__alloc_fail_after = -1;
    ctn__alloc_fail_once = false;
    if (rc != 0) {
        CHECK(strncmp(err, "f.pdf: ", 7) == 0);
        CHECK(ctn_val_len(*docs) == 1 && ctn_val_at(*docs, 0) == marker);
    }
    return rc;
}

static void check_doc(const ctn_val *d, size_t page, size_t pages) {
    CHECK(d->kind == CTN_VDOC);
    const char *t = d->u.doc.text->u.str.p;
    const size_t len = d->u.doc.text->u.str.len;
    CHECK(ctn__utf8_valid(t, len));
    CHECK(strlen(t) == len);
    for (size_t i = 0; i < len; i++) {
        CHECK(t[i] != '\f' && t[i] != '\r' && t[i] != '\v');
        if (t[i] == '\n' || i + 1 == len) {
            const char last = t[i] == '\n' ? (i > 0 ? t[i - 1] : 'x') : t[i];
            CHECK(last != ' ' && last != '\t');
        }
    }
    CHECK(len == 0 || (t[0] != '\n' && t[len - 1] != '\n'));
    const ctn_val *p = ctn_val_get(d, "page"), *ps = ctn_val_get(d, "pages");
    CHECK(p != NULL && p->kind == CTN_VINT && p->u.i == (int64_t)page);
    CHECK(ps != NULL && ps->kind == CTN_VINT && ps->u.i == (int64_t)pages);
    const ctn_val *nt = ctn_val_get(d, "no_text");
    CHECK((nt != NULL) == (len == 0));
    const ctn_val *im = ctn_val_get(d, "images");
    if (im != NULL) {
        CHECK(im->kind == CTN_VARR && ctn_val_len(im) > 0);
        for (size_t i = 0; i < ctn_val_len(im); i++) {
            const ctn_val *o = ctn_val_at(im, i);
            CHECK(o->kind == CTN_VOBJ && ctn_val_len(o) == 4);
            CHECK(ctn_val_get(o, "x") != NULL && ctn_val_get(o, "height") != NULL);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const long fail_at = data[0];
    const char *pdf = (const char *)data + 1;
    const size_t n = size - 1;
    ctn_val *marker = ctn_val_cstr("marker");
    CHECK(marker != NULL);

    ctn_val *docs = NULL;
    const int rc = load(pdf, n, -1, &docs, marker);
    CHECK(rc == 0 || rc == CTN_EFORMAT || rc == CTN_ENOTSUP);
    if (rc == 0) {
        const size_t pages = ctn_val_len(docs) - 1;
        for (size_t i = 0; i < pages; i++)
            check_doc(ctn_val_at(docs, i + 1), i + 1, pages);
    }

    ctn_val *again = NULL;
    const long failed0 = ctn__alloc_n_failed;
    const int rc2 = load(pdf, n, fail_at, &again, marker);
    if (ctn__alloc_n_failed == failed0) {
        CHECK(rc2 == rc);
        if (rc == 0) CHECK(ctn_val_equal(docs, again));
    } else {
        CHECK(rc2 == CTN_ENOMEM);
    }
    ctn_val_unref(again);
    ctn_val_unref(docs);
    ctn_val_unref(marker);
    return 0;
}
