/*
 * libFuzzer target for the JSON reader (stdlib/json.h). Byte 0 seeds the chunk sizes; the
 * rest is the text. Checked on every input:
 *   - the stream parser gives the same result (code, value, message) under random chunking
 *     as fed in one piece, and its last snapshot is the final value;
 *   - the stream agrees with the strict parse of the text from its first '{' or '[': when
 *     that parse succeeds the stream gives the same value; when the stream succeeds and
 *     the parse fails, the parse failed only on text after the value; when the stream
 *     fails, so does the parse;
 *   - a parsed value written with ctn_val_to_json reads back equal;
 *   - a range from ctn_json_find parses.
 *
 *   cmake --build build --target fuzz_json && build/fuzz_json tests/fuzz/corpus_json
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "value.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_json: %s failed at line %d\n", #cond, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Streams t in pieces whose sizes come from seed (seed 0: one piece). */
static int stream(const char *t, size_t n, uint32_t seed, ctn_val **out, char *err, size_t errcap) {
    ctn_json_stream *s = ctn_json_stream_new();
    CHECK(s != NULL);
    size_t at = 0;
    int rc = 0;
    ctn_val *last = NULL;
    while (at < n && rc == 0) {
        size_t len = n - at;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            len = 1 + (seed >> 16) % 7;
            if ((seed >> 8) % 13 == 0) len = 32 + (seed >> 20) % 200;
            if (len > n - at) len = n - at;
        }
        int changed = -1;
        rc = ctn_json_stream_feed(s, t + at, len, &changed);
        CHECK(changed == 0 || changed == 1);
        at += len;
        if (changed) {
            ctn_val_unref(last);
            last = ctn_json_stream_snapshot(s);
            CHECK(last != NULL);
        }
    }
    int frc = ctn_json_stream_finish(s, out, err, errcap);
    CHECK(rc == 0 || frc == rc);
    if (frc == 0) CHECK(ctn_val_equal(*out, last));
    ctn_val_unref(last);
    ctn_json_stream_free(s);
    return frc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint32_t seed = data[0] | 1u;
    const char *t = (const char *)data + 1;
    size_t n = size - 1;

    char e1[256] = "", e2[256] = "", e3[256] = "";
    ctn_val *whole = NULL, *chunked = NULL, *parsed = NULL;
    int r1 = stream(t, n, 0, &whole, e1, sizeof e1);
    int r2 = stream(t, n, seed, &chunked, e2, sizeof e2);
    CHECK(r1 == r2);
    CHECK(r1 == 0 || r1 == CTN_EFORMAT || r1 == CTN_ENOENT);
    if (r1 == 0)
        CHECK(ctn_val_equal(whole, chunked));
    else
        CHECK(strcmp(e1, e2) == 0);

    size_t i = 0;
    while (i < n && t[i] != '{' && t[i] != '[')
        i++;
    CHECK((r1 == CTN_ENOENT) == (i == n));
    if (i < n) {
        int r3 = ctn_json_parse(t + i, n - i, &parsed, e3, sizeof e3);
        CHECK(r3 == 0 || r3 == CTN_EFORMAT);
        if (r3 == 0) CHECK(r1 == 0 && ctn_val_equal(parsed, whole));
        if (r1 == 0 && r3 != 0) CHECK(strstr(e3, "after the JSON value") != NULL);
        if (r1 != 0) CHECK(r3 != 0);
    }
    ctn_val_unref(parsed);
    parsed = NULL;

    /* The strict parse of the whole text, written back and read again. */
    if (ctn_json_parse(t, n, &parsed, e3, sizeof e3) == 0) {
        char *j = ctn_val_to_json(parsed, (data[0] & 1) ? 2 : 0);
        CHECK(j != NULL);
        ctn_val *again = NULL;
        CHECK(ctn_json_parse(j, strlen(j), &again, e3, sizeof e3) == 0);
        CHECK(ctn_val_equal(parsed, again));
        ctn_val_unref(again);
        free(j);
    }
    ctn_val_unref(parsed);

    size_t a, b;
    if (ctn_json_find(t, n, &a, &b) == 0) {
        CHECK(a <= b && b <= n);
        ctn_val *v = NULL;
        CHECK(ctn_json_parse(t + a, b - a, &v, e3, sizeof e3) == 0);
        ctn_val_unref(v);
    }
    ctn_val_unref(whole);
    ctn_val_unref(chunked);
    return 0;
}
