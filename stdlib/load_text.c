/*
 * Text decoding for every loader, the plain text loader (loader.h) and the helpers the
 * loaders share (loader-impl.h).
 *
 * Decoding choices, which every loader inherits:
 *   - The encoding comes from the BOM alone: EF BB BF is UTF-8, FF FE UTF-16 LE, FE FF
 *     UTF-16 BE; anything else is UTF-8 without a BOM. The BOM is dropped.
 *   - A maximal run of bytes that cannot be decoded becomes one U+FFFD and one warning
 *     ("<source>: invalid UTF-8 at byte 1234 (3 bytes replaced by U+FFFD)"), the offset
 *     counting the file's bytes from 0, BOM included. One replacement per run rather than
 *     per byte keeps a binary blob in a text file from turning into pages of U+FFFD.
 *   - UTF-8 is checked strictly by ctn__utf8_char: overlong forms, encoded surrogates, code
 *     points past U+10FFFF, stray continuation bytes and a sequence cut short (also at the
 *     end of the text) are invalid.
 *   - In UTF-16, surrogate pairs are combined; unpaired surrogates and the last byte of an
 *     odd-length text are the invalid runs ("invalid UTF-16 at byte ...").
 *   - NUL (a 0 byte, or U+0000 in UTF-16) is valid UTF-8 and is kept: document text is a
 *     counted string, and dropping bytes silently would shift every offset after them.
 * Every step looks at each input byte a bounded number of times, so decoding is linear.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "loader-impl.h"
#include "loader.h"
#include "str.h"
#include "unicode.h"

static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

/* ---- shared by the loaders ------------------------------------------------------------- */

int ctn__load_check(const ctn_load_ctx *c, const char *data, size_t n, const ctn_val *docs,
                    char *err, size_t errcap) {
    if (c == NULL || c->source == NULL) {
        CTN__LOAD_ERR("loader: no context or no source name");
        return CTN_EINVAL;
    }
    if (data == NULL && n > 0) {
        CTN__LOAD_ERR("%s: no data (NULL)", c->source);
        return CTN_EINVAL;
    }
    if (docs == NULL || docs->kind != CTN_VARR) {
        CTN__LOAD_ERR("%s: docs must be an array", c->source);
        return CTN_EINVAL;
    }
    return 0;
}

void ctn__load_warn(const ctn_load_ctx *c, const char *fmt, ...) {
    if (c->warn == NULL) return;
    char msg[1024];
    int k = snprintf(msg, sizeof msg, "%s: ", c->source);
    if (k < 0 || (size_t)k >= sizeof msg) k = 0; /* a source too long to show in full */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    c->warn(c->warn_ud, msg);
}

ctn_val *ctn__load_meta(const ctn_load_ctx *c) {
    ctn_val *m = ctn_val_obj();
    if (m == NULL) return NULL;
    if (ctn_val_set(m, "source", ctn_val_cstr(c->source)) < 0) {
        ctn_val_unref(m);
        return NULL;
    }
    return m;
}

void ctn__load_rollback(ctn_val *docs, size_t n) {
    while (docs->u.arr.n > n)
        ctn_val_unref(docs->u.arr.items[--docs->u.arr.n]);
}

/* ---- decoding -------------------------------------------------------------------------- */

/* Ends a run of undecodable bytes: one U+FFFD in the text and one warning. at is the run's
 * first byte in the file. */
static void replace_run(const ctn_load_ctx *c, ctn_strbuf *b, const char *enc, size_t at,
                        size_t len) {
    ctn_sb_put(b, replacement, sizeof replacement);
    ctn__load_warn(c, "invalid %s at byte %zu (%zu byte%s replaced by U+FFFD)", enc, at, len,
                   len == 1 ? "" : "s");
}

/*
 * UTF-8: valid stretches are copied in one piece; at a byte where no valid character
 * starts, the run goes on for as long as no valid character starts, so each byte is looked
 * at by ctn__utf8_char once (which reads at most four). base is the offset of s in the file.
 */
static void decode_utf8(const ctn_load_ctx *c, const unsigned char *s, size_t n, size_t base,
                        ctn_strbuf *b) {
    ctn_sb_reserve(b, n);
    size_t i = 0, from = 0; /* s[from, i) is valid and not yet copied */
    while (i < n && !b->oom) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        const int k = ctn__utf8_char(s + i, n - i);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        ctn_sb_put(b, (const char *)s + from, i - from);
        const size_t start = i++;
        while (i < n && s[i] >= 0x80 && ctn__utf8_char(s + i, n - i) <= 0)
            i++;
        replace_run(c, b, "UTF-8", base + start, i - start);
        from = i;
    }
    ctn_sb_put(b, (const char *)s + from, i - from);
}

/* The 16-bit unit at s in the given byte order. */
static unsigned unit16(const unsigned char *s, bool be) {
    return be ? (unsigned)s[0] << 8 | s[1] : (unsigned)s[1] << 8 | s[0];
}

/*
 * UTF-16 after its BOM (s is at file offset 2). The output never needs more than 3 bytes
 * per 2 input bytes (a pair gives 4 for 4), so one reservation covers it. A run of unpaired
 * surrogates, with an odd last byte after them, is one replacement.
 */
static void decode_utf16(const ctn_load_ctx *c, const unsigned char *s, size_t n, bool be,
                         ctn_strbuf *b) {
    if (!ctn_sb_reserve(b, n / 2 * 3 + sizeof replacement)) return;
    size_t i = 0, run = SIZE_MAX; /* run: where the current invalid run began */
    while (i + 1 < n) {
        const unsigned u = unit16(s + i, be);
        uint32_t cp = u;
        size_t used = 2;
        if (u >= 0xD800 && u <= 0xDFFF) {
            const unsigned lo = i + 3 < n ? unit16(s + i + 2, be) : 0;
            if (u > 0xDBFF || lo < 0xDC00 || lo > 0xDFFF) { /* unpaired */
                if (run == SIZE_MAX) run = i;
                i += 2;
                continue;
            }
            cp = 0x10000 + ((uint32_t)(u - 0xD800) << 10) + (lo - 0xDC00);
            used = 4;
        }
        if (run != SIZE_MAX) replace_run(c, b, "UTF-16", 2 + run, i - run);
        run = SIZE_MAX;
        char enc[4];
        ctn_sb_put(b, enc, ctn__utf8_encode(cp, enc));
        i += used;
    }
    if (i < n && run == SIZE_MAX) run = i; /* the odd last byte */
    if (run != SIZE_MAX) replace_run(c, b, "UTF-16", 2 + run, n - run);
}

int ctn_text_decode(const ctn_load_ctx *c, const char *data, size_t n, char **out, size_t *outlen) {
    if (out != NULL) *out = NULL;
    if (outlen != NULL) *outlen = 0;
    if (c == NULL || c->source == NULL || out == NULL || outlen == NULL || (data == NULL && n > 0))
        return CTN_EINVAL;
    const unsigned char *s = (const unsigned char *)data;
    ctn_strbuf b = {0};
    if (n >= 2 && s[0] == 0xFF && s[1] == 0xFE) {
        decode_utf16(c, s + 2, n - 2, false, &b);
    } else if (n >= 2 && s[0] == 0xFE && s[1] == 0xFF) {
        decode_utf16(c, s + 2, n - 2, true, &b);
    } else {
        const size_t bom = n >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF ? 3 : 0;
        decode_utf8(c, s + bom, n - bom, bom, &b);
    }
    /* ctn_sb_reserve alone leaves the buffer without its NUL (an empty UTF-16 text). */
    ctn_sb_put(&b, "", 0);
    const size_t len = b.len;
    char *p = ctn_sb_take(&b);
    if (p == NULL) return CTN_ENOMEM;
    *out = p;
    *outlen = len;
    return 0;
}

/* ---- the text loader ------------------------------------------------------------------- */

int ctn_load_text(const ctn_load_ctx *c, const char *data, size_t n, ctn_val *docs, char *err,
                  size_t errcap) {
    int rc = ctn__load_check(c, data, n, docs, err, errcap);
    if (rc < 0) return rc;
    char *text = NULL;
    size_t len = 0;
    rc = ctn_text_decode(c, data, n, &text, &len);
    if (rc == 0) {
        /* The metadata is checked first: ctn_val_doc takes a NULL one for an empty one. */
        ctn_val *meta = ctn__load_meta(c);
        rc = ctn_val_push(docs, meta != NULL ? ctn_val_doc(text, len, meta) : NULL);
    }
    free(text);
    if (rc < 0) CTN__LOAD_ERR("%s: out of memory", c->source);
    return rc;
}
