/*
 * The text, JSON and file parts of the loaders (stdlib/loader.h): decoding (BOMs, UTF-16
 * with pairs, odd lengths and unpaired surrogates, invalid UTF-8 with the exact warnings
 * and offsets), the text loader, JSON pointers with escapes and "*", meta fields, JSON
 * Lines, every error leaving docs as it was, loaders by extension, reading files, listing
 * folder trees with globs, and allocation failures (once and persistent) on each loader.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "loader.h"
#include "test.h"
#include "value.h"

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct {
    char msgs[8][160];
    int n; /* every warning counts; the first 8 are kept */
} warnings;

static void on_warn(void *ud, const char *msg) {
    warnings *w = ud;
    if (w->n < 8) snprintf(w->msgs[w->n], sizeof w->msgs[0], "%s", msg);
    w->n++;
}

static ctn_load_ctx ctx(const char *source, warnings *w) {
    memset(w, 0, sizeof *w);
    return (ctn_load_ctx){.source = source, .warn = on_warn, .warn_ud = w};
}

/* Decodes n bytes as t.txt and checks the text and the one warning (NULL: none). */
static void check_decode(const char *in, size_t n, const char *want, size_t want_len,
                         const char *warning) {
    warnings w;
    const ctn_load_ctx c = ctx("t.txt", &w);
    char *out = NULL;
    size_t len = 99;
    CHECK_EQ_INT(ctn_text_decode(&c, in, n, &out, &len), 0);
    CHECK_EQ_INT(len, want_len);
    CHECK(out != NULL && memcmp(out, want, want_len) == 0 && out[want_len] == '\0');
    CHECK_EQ_INT(w.n, warning != NULL ? 1 : 0);
    if (warning != NULL) CHECK_STR(w.msgs[0], warning);
    free(out);
}

#define DECODE(in, want, warning) check_decode(in, sizeof in - 1, want, sizeof want - 1, warning)

/* An array holding one sentinel document, so that a test sees whether a failure left it
 * as it was. */
static ctn_val *sentinel_docs(void) {
    ctn_val *docs = ctn_val_arr();
    CHECK(docs != NULL && ctn_val_push(docs, ctn_val_doc("sentinel", 8, NULL)) == 0);
    return docs;
}

static bool only_sentinel(const ctn_val *docs) {
    const ctn_val *d = ctn_val_at(docs, 0);
    return ctn_val_len(docs) == 1 && d != NULL && d->kind == CTN_VDOC &&
           strcmp(d->u.doc.text->u.str.p, "sentinel") == 0;
}

static const char *text_of(const ctn_val *docs, size_t i) {
    const ctn_val *d = ctn_val_at(docs, i);
    return d != NULL && d->kind == CTN_VDOC ? d->u.doc.text->u.str.p : "(no document)";
}

static const char *meta_str(const ctn_val *docs, size_t i, const char *key) {
    const ctn_val *v = ctn_val_get(ctn_val_at(docs, i), key);
    return v != NULL && v->kind == CTN_VSTR ? v->u.str.p : "(no string)";
}

static const ctn_val *meta(const ctn_val *docs, size_t i, const char *key) {
    return ctn_val_get(ctn_val_at(docs, i), key);
}

/* Loads JSON text s as data.json (or data.jsonl with lines) into docs. */
static int load_json(const char *s, const char *text, const char *const *fields, size_t nf,
                     bool lines, ctn_val *docs, char *err, size_t errcap) {
    warnings w;
    const ctn_load_ctx c = ctx(lines ? "data.jsonl" : "data.json", &w);
    const ctn_json_sel sel = {
        .text = text, .meta_fields = fields, .n_meta_fields = nf, .lines = lines};
    return ctn_load_json(&c, &sel, s, strlen(s), docs, err, errcap);
}

/* Checks that loading fails with code and exactly the message want, leaving docs alone. */
static void check_json_err(const char *s, const char *text, const char *const *fields, size_t nf,
                           bool lines, int code, const char *want) {
    ctn_val *docs = sentinel_docs();
    char err[256] = "";
    CHECK_EQ_INT(load_json(s, text, fields, nf, lines, docs, err, sizeof err), code);
    CHECK_STR(err, want);
    CHECK(only_sentinel(docs));
    ctn_val_unref(docs);
}

/* ---- decoding --------------------------------------------------------------------------- */

TEST(decode_utf8_with_and_without_bom) {
    DECODE("\xEF\xBB\xBFhello", "hello", NULL);
    DECODE("h\xC3\xA9llo \xF0\x9F\x98\x80", "h\xC3\xA9llo \xF0\x9F\x98\x80", NULL);
    DECODE("\xEF\xBB\xBF", "", NULL);
    DECODE("", "", NULL);
    DECODE("\xEF\xBB", "\xEF\xBF\xBD",
           "t.txt: invalid UTF-8 at byte 0 (2 bytes replaced by U+FFFD)");
    DECODE("a\0b", "a\0b", NULL); /* NUL is kept */
}

TEST(decode_utf16_with_a_pair) {
    /* "A", U+1F600 (D83D DE00), U+00E9 */
    DECODE("\xFF\xFE"
           "A\0\x3D\xD8\x00\xDE\xE9\0",
           "A\xF0\x9F\x98\x80\xC3\xA9", NULL);
    DECODE("\xFE\xFF\0A\xD8\x3D\xDE\x00\0\xE9", "A\xF0\x9F\x98\x80\xC3\xA9", NULL);
    DECODE("\xFF\xFE", "", NULL);
    DECODE("\xFE\xFF\0\0\0z", "\0z", NULL); /* U+0000 is kept */
}

TEST(decode_utf16_unpaired_and_odd) {
    DECODE("\xFF\xFE"
           "A\0\x00\xD8"
           "B\0",
           "A\xEF\xBF\xBD"
           "B",
           "t.txt: invalid UTF-16 at byte 4 (2 bytes replaced by U+FFFD)");
    DECODE("\xFF\xFE"
           "A\0B",
           "A\xEF\xBF\xBD", "t.txt: invalid UTF-16 at byte 4 (1 byte replaced by U+FFFD)");
    /* A lone low surrogate and the odd byte after it are one run. */
    DECODE("\xFF\xFE"
           "A\0\x00\xDCz",
           "A\xEF\xBF\xBD", "t.txt: invalid UTF-16 at byte 4 (3 bytes replaced by U+FFFD)");
    /* A high surrogate followed by a pair: only the first is unpaired. */
    DECODE("\xFE\xFF\xD8\x00\xD8\x3D\xDE\x00", "\xEF\xBF\xBD\xF0\x9F\x98\x80",
           "t.txt: invalid UTF-16 at byte 2 (2 bytes replaced by U+FFFD)");
    DECODE("\xFE\xFF\xD8\x00", "\xEF\xBF\xBD",
           "t.txt: invalid UTF-16 at byte 2 (2 bytes replaced by U+FFFD)");

    /* Two runs, two warnings. */
    warnings w;
    const ctn_load_ctx c = ctx("t.txt", &w);
    const char in[] = "\xFF\xFE\x00\xDC"
                      "a\0\x00\xDC";
    char *out = NULL;
    size_t len = 0;
    CHECK_EQ_INT(ctn_text_decode(&c, in, sizeof in - 1, &out, &len), 0);
    CHECK_STR(out, "\xEF\xBF\xBD"
                   "a\xEF\xBF\xBD");
    CHECK_EQ_INT(w.n, 2);
    CHECK_STR(w.msgs[0], "t.txt: invalid UTF-16 at byte 2 (2 bytes replaced by U+FFFD)");
    CHECK_STR(w.msgs[1], "t.txt: invalid UTF-16 at byte 6 (2 bytes replaced by U+FFFD)");
    free(out);
}

TEST(decode_invalid_utf8) {
    DECODE("a\xC0\xAF"
           "b",
           "a\xEF\xBF\xBD"
           "b",
           "t.txt: invalid UTF-8 at byte 1 (2 bytes replaced by U+FFFD)"); /* overlong '/' */
    DECODE("\x80x", "\xEF\xBF\xBDx",
           "t.txt: invalid UTF-8 at byte 0 (1 byte replaced by U+FFFD)"); /* stray */
    DECODE("ab\xE2\x82", "ab\xEF\xBF\xBD",
           "t.txt: invalid UTF-8 at byte 2 (2 bytes replaced by U+FFFD)"); /* cut at the end */
    DECODE("\xED\xA0\x80z", "\xEF\xBF\xBDz",
           "t.txt: invalid UTF-8 at byte 0 (3 bytes replaced by U+FFFD)"); /* U+D800 */
    DECODE("\xF4\x90\x80\x80", "\xEF\xBF\xBD",
           "t.txt: invalid UTF-8 at byte 0 (4 bytes replaced by U+FFFD)"); /* past U+10FFFF */
    /* The run ends where a valid character starts, even one that is not ASCII. */
    DECODE("\x80\xE2\x82\xAC", "\xEF\xBF\xBD\xE2\x82\xAC",
           "t.txt: invalid UTF-8 at byte 0 (1 byte replaced by U+FFFD)");
    /* Offsets count the file's bytes, the BOM included. */
    DECODE("\xEF\xBB\xBFok\xFF", "ok\xEF\xBF\xBD",
           "t.txt: invalid UTF-8 at byte 5 (1 byte replaced by U+FFFD)");

    warnings w;
    const ctn_load_ctx c = ctx("notes/a.txt", &w);
    char *out = NULL;
    size_t len = 0;
    CHECK_EQ_INT(ctn_text_decode(&c, "\x80\xC3\xA9\xFE\xFE", 5, &out, &len), 0);
    CHECK_STR(out, "\xEF\xBF\xBD\xC3\xA9\xEF\xBF\xBD");
    CHECK_EQ_INT(w.n, 2);
    CHECK_STR(w.msgs[0], "notes/a.txt: invalid UTF-8 at byte 0 (1 byte replaced by U+FFFD)");
    CHECK_STR(w.msgs[1], "notes/a.txt: invalid UTF-8 at byte 3 (2 bytes replaced by U+FFFD)");
    free(out);

    /* No warn callback: the same text, nothing called. */
    const ctn_load_ctx quiet = {.source = "q.txt"};
    CHECK_EQ_INT(ctn_text_decode(&quiet, "\x80", 1, &out, &len), 0);
    CHECK_STR(out, "\xEF\xBF\xBD");
    free(out);
    CHECK_EQ_INT(ctn_text_decode(NULL, "", 0, &out, &len), CTN_EINVAL);
    CHECK(out == NULL);
}

/* A long run is one replacement and one warning, and a long text decodes in linear time
 * (4 MiB of each kind here; a quadratic step would not finish under the sanitizers). */
TEST(decode_long_runs) {
    const size_t n = (size_t)4 << 20;
    char *in = malloc(n);
    CHECK(in != NULL);
    if (in == NULL) return;
    for (size_t i = 0; i < n; i += 2)
        in[i] = '\xE2', in[i + 1] = '\x82'; /* every lead cut short by the next one */
    warnings w;
    const ctn_load_ctx c = ctx("big.bin", &w);
    char *out = NULL;
    size_t len = 0;
    CHECK_EQ_INT(ctn_text_decode(&c, in, n, &out, &len), 0);
    CHECK_EQ_INT(len, 3);
    CHECK_EQ_INT(w.n, 1);
    CHECK_STR(w.msgs[0], "big.bin: invalid UTF-8 at byte 0 (4194304 bytes replaced by U+FFFD)");
    free(out);
    for (size_t i = 0; i + 3 <= n; i += 3)
        memcpy(in + i, "\xE2\x82\xAC", 3);
    const size_t m = n / 3 * 3;
    CHECK_EQ_INT(ctn_text_decode(&c, in, m, &out, &len), 0);
    CHECK(len == m && memcmp(out, in, m) == 0);
    CHECK_EQ_INT(w.n, 1);
    free(out);
    free(in);
}

/* ---- text ------------------------------------------------------------------------------- */

TEST(text_loader) {
    warnings w;
    const ctn_load_ctx c = ctx("notes/a.txt", &w);
    ctn_val *docs = sentinel_docs();
    char err[128] = "";
    CHECK_EQ_INT(ctn_load_text(&c, "\xEF\xBB\xBFline\n\x80", 9, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 2);
    CHECK_STR(text_of(docs, 1), "line\n\xEF\xBF\xBD");
    CHECK_STR(meta_str(docs, 1, "source"), "notes/a.txt");
    CHECK_EQ_INT(ctn_val_len(ctn_val_at(docs, 1)->u.doc.meta), 1);
    CHECK_EQ_INT(w.n, 1);
    CHECK_STR(w.msgs[0], "notes/a.txt: invalid UTF-8 at byte 8 (1 byte replaced by U+FFFD)");

    CHECK_EQ_INT(ctn_load_text(&c, "", 0, docs, err, sizeof err), 0); /* empty: one document */
    CHECK_EQ_INT(ctn_val_len(docs), 3);
    CHECK_STR(text_of(docs, 2), "");

    ctn_val *obj = ctn_val_obj();
    CHECK_EQ_INT(ctn_load_text(&c, "x", 1, obj, err, sizeof err), CTN_EINVAL);
    CHECK_STR(err, "notes/a.txt: docs must be an array");
    CHECK_EQ_INT(ctn_load_text(&c, NULL, 1, docs, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_val_len(docs), 3);
    ctn_val_unref(obj);
    ctn_val_unref(docs);
}

/* ---- JSON ------------------------------------------------------------------------------- */

TEST(json_pointer_with_escapes) {
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    const char *s = "{\"a/b\": {\"m~n\": \"x\", \"\": \"empty key\"}, \"arr\": [10, 11, \"z\"]}";
    CHECK_EQ_INT(load_json(s, "/a~1b/m~0n", NULL, 0, false, docs, err, sizeof err), 0);
    CHECK_EQ_INT(load_json(s, "/a~1b/", NULL, 0, false, docs, err, sizeof err), 0);
    CHECK_EQ_INT(load_json(s, "/arr/2", NULL, 0, false, docs, err, sizeof err), 0);
    CHECK_EQ_INT(load_json(s, NULL, NULL, 0, false, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 4);
    CHECK_STR(text_of(docs, 0), "x");
    CHECK_STR(meta_str(docs, 0, "pointer"), "/a~1b/m~0n");
    CHECK_STR(meta_str(docs, 0, "source"), "data.json");
    CHECK(meta(docs, 0, "line") == NULL); /* only JSON Lines has lines */
    CHECK_STR(text_of(docs, 1), "empty key");
    CHECK_STR(meta_str(docs, 1, "pointer"), "/a~1b/");
    CHECK_STR(text_of(docs, 2), "z");
    CHECK_STR(meta_str(docs, 2, "pointer"), "/arr/2");
    CHECK_STR(text_of(docs, 3),
              "{\"a/b\":{\"m~n\":\"x\",\"\":\"empty key\"},\"arr\":[10,11,\"z\"]}");
    CHECK_STR(meta_str(docs, 3, "pointer"), "");
    ctn_val_unref(docs);
}

TEST(json_star_over_arrays_and_objects) {
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    CHECK_EQ_INT(load_json("{\"items\": [{\"body\": \"one\"}, {\"body\": \"two\"}]}",
                           "/items/*/body", NULL, 0, false, docs, err, sizeof err),
                 0);
    CHECK_EQ_INT(load_json("{\"by\": {\"x\": {\"t\": \"X\"}, \"y/z~\": {\"t\": \"Y\"}}}", "/by/*/t",
                           NULL, 0, false, docs, err, sizeof err),
                 0);
    /* Nested: every element of every group's list, in document order. */
    CHECK_EQ_INT(load_json("{\"g\": [{\"p\": [\"a\", \"b\"]}, {\"p\": []}, {\"p\": [\"c\"]}]}",
                           "/g/*/p/*", NULL, 0, false, docs, err, sizeof err),
                 0);
    CHECK_EQ_INT(load_json("[\"top\", \"level\"]", "/*", NULL, 0, false, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 9);
    const char *texts[] = {"one", "two", "X", "Y", "a", "b", "c", "top", "level"};
    const char *ptrs[] = {"/items/0/body",
                          "/items/1/body",
                          "/by/x/t",
                          "/by/y~1z~0/t",
                          "/g/0/p/0",
                          "/g/0/p/1",
                          "/g/2/p/0",
                          "/0",
                          "/1"};
    for (size_t i = 0; i < 9; i++) {
        CHECK_STR(text_of(docs, i), texts[i]);
        CHECK_STR(meta_str(docs, i, "pointer"), ptrs[i]);
    }
    /* "*" over an empty container: nothing, and no error. */
    CHECK_EQ_INT(load_json("{\"items\": {}}", "/items/*", NULL, 0, false, docs, err, sizeof err),
                 0);
    CHECK_EQ_INT(ctn_val_len(docs), 9);
    ctn_val_unref(docs);
}

TEST(json_meta_fields) {
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    const char *s = "{\"title\": \"T\", \"id\": \"record\", \"items\": ["
                    "{\"body\": \"one\", \"id\": 9007199254740993, \"info\": {\"author\": \"A\"},"
                    " \"tags\": [\"x\", {\"y\": null}], \"w\": 1.0},"
                    "{\"body\": \"two\", \"w\": -2.5e3, \"ok\": true}]}";
    const char *fields[] = {"/id", "/title", "/info/author", "/tags", "/w", "/ok", "/missing"};
    CHECK_EQ_INT(load_json(s, "/items/*/body", fields, 7, false, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 2);
    /* From the item first, then from the record. */
    const ctn_val *id = meta(docs, 0, "id");
    CHECK(id != NULL && id->kind == CTN_VINT && id->u.i == 9007199254740993LL);
    CHECK_STR(meta_str(docs, 1, "id"), "record");
    CHECK_STR(meta_str(docs, 0, "title"), "T");
    CHECK_STR(meta_str(docs, 0, "author"), "A");
    CHECK(meta(docs, 1, "author") == NULL);
    char *tags = ctn_val_to_json(meta(docs, 0, "tags"), 0);
    CHECK_STR(tags, "[\"x\",{\"y\":null}]");
    free(tags);
    const ctn_val *w0 = meta(docs, 0, "w"), *w1 = meta(docs, 1, "w");
    CHECK(w0 != NULL && w0->kind == CTN_VNUM && w0->u.num == 1.0);
    CHECK(w1 != NULL && w1->kind == CTN_VNUM && w1->u.num == -2500.0);
    const ctn_val *ok = meta(docs, 1, "ok");
    CHECK(ok != NULL && ok->kind == CTN_VBOOL && ok->u.b == 1);
    CHECK(meta(docs, 0, "missing") == NULL && meta(docs, 0, "ok") == NULL);
    /* source, pointer, title, id, author, tags, w */
    CHECK_EQ_INT(ctn_val_len(ctn_val_at(docs, 0)->u.doc.meta), 7);
    ctn_val_unref(docs);
}

TEST(json_non_string_text) {
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    const char *s = "{\"v\": [42, 1.5, true, null, {\"k\": [1, \"\\u00e9\"]}, -0.0, 1e300]}";
    CHECK_EQ_INT(load_json(s, "/v/*", NULL, 0, false, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 7);
    const char *want[] = {"42", "1.5", "true", "null", "{\"k\":[1,\"\xC3\xA9\"]}"};
    for (size_t i = 0; i < 5; i++)
        CHECK_STR(text_of(docs, i), want[i]);
    CHECK_CONTAINS(text_of(docs, 6), "e+300");
    ctn_val_unref(docs);
}

TEST(json_lines) {
    ctn_val *docs = sentinel_docs();
    char err[256] = "";
    const char *s = "{\"t\": \"a\", \"n\": 1}\n\n  \t\r\n{\"t\": \"b\"}\r\n\n";
    const char *fields[] = {"/n"};
    CHECK_EQ_INT(load_json(s, "/t", fields, 1, true, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 3);
    CHECK_STR(text_of(docs, 1), "a");
    CHECK_STR(text_of(docs, 2), "b");
    const ctn_val *l1 = meta(docs, 1, "line"), *l2 = meta(docs, 2, "line");
    CHECK(l1 != NULL && l1->kind == CTN_VINT && l1->u.i == 1);
    CHECK(l2 != NULL && l2->kind == CTN_VINT && l2->u.i == 4);
    CHECK_STR(meta_str(docs, 2, "source"), "data.jsonl");
    ctn_val_unref(docs);

    /* ["c"] on line 6 has no member "t": the whole file fails, naming the line. */
    check_json_err("{\"t\": \"a\", \"n\": 1}\n\n  \t\r\n{\"t\": \"b\"}\r\n\n[\"c\"]", "/t", NULL, 0,
                   true, CTN_ENOENT,
                   "data.jsonl: line 6: /t: \"t\" is not an index, and the record is an array");
    /* The whole record, per line; an empty file gives nothing. */
    docs = ctn_val_arr();
    CHECK_EQ_INT(load_json("1\n\"two\"\n", NULL, NULL, 0, true, docs, err, sizeof err), 0);
    CHECK_EQ_INT(load_json("", NULL, NULL, 0, true, docs, err, sizeof err), 0);
    CHECK_EQ_INT(load_json("\n \n", NULL, NULL, 0, true, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 2);
    CHECK_STR(text_of(docs, 0), "1");
    CHECK_STR(text_of(docs, 1), "two");
    ctn_val_unref(docs);
}

TEST(json_lines_errors_name_the_line) {
    const char *s = "{\"items\": [{\"body\": \"a\"}]}\n"
                    "\n"
                    "{\"items\": []}\n"
                    "\n"
                    "\n"
                    "{\"items\": [{\"body\": \"b\"}]}\n"
                    "{\"items\": [{\"body\": \"c\"}, {\"body\": \"d\"}, {\"title\": \"e\"}]}\n";
    check_json_err(s, "/items/*/body", NULL, 0, true, CTN_ENOENT,
                   "data.jsonl: line 7: /items/*/body: no member \"body\" in /items/2");
    check_json_err("{\"t\": 1}\n\n{\"t\": }\n{\"t\": 2}\n", "/t", NULL, 0, true, CTN_EFORMAT,
                   "data.jsonl: line 3, column 7: expected a value after ':', found '}'");
    check_json_err("{\"t\": 1} {\"t\": 2}\n", "/t", NULL, 0, true, CTN_EFORMAT,
                   "data.jsonl: line 1, column 10: unexpected '{' after the JSON value");
}

TEST(json_errors_leave_docs_alone) {
    const char *s = "{\"a\": {\"b\": \"s\"}, \"arr\": [1, 2, 3], \"n\": 5}";
    check_json_err(s, "/a/c", NULL, 0, false, CTN_ENOENT, "data.json: /a/c: no member \"c\" in /a");
    check_json_err(s, "/x/y", NULL, 0, false, CTN_ENOENT,
                   "data.json: /x/y: no member \"x\" in the record");
    check_json_err(s, "/arr/3", NULL, 0, false, CTN_ENOENT,
                   "data.json: /arr/3: no element 3 in /arr (an array of 3)");
    check_json_err(s, "/arr/01", NULL, 0, false, CTN_ENOENT,
                   "data.json: /arr/01: \"01\" is not an index, and /arr is an array");
    check_json_err(s, "/arr/-", NULL, 0, false, CTN_ENOENT,
                   "data.json: /arr/-: \"-\" is not an index, and /arr is an array");
    check_json_err(s, "/n/x", NULL, 0, false, CTN_ETYPE,
                   "data.json: /n/x: no member \"x\" in /n, which is an integer");
    check_json_err(s, "/a/b/*", NULL, 0, false, CTN_ETYPE,
                   "data.json: /a/b/*: \"*\" needs an array or object, and /a/b is a string");
    /* A later item failing takes back the documents of the earlier ones. */
    check_json_err("[{\"t\": \"a\"}, {\"t\": \"b\"}, {}]", "/*/t", NULL, 0, false, CTN_ENOENT,
                   "data.json: /*/t: no member \"t\" in /2");
    check_json_err("{\"a\": 1,\n  \"b\": ]}", "", NULL, 0, false, CTN_EFORMAT,
                   "data.json: line 2, column 8: expected a value after ':', found ']'");
    check_json_err("", "", NULL, 0, false, CTN_EFORMAT,
                   "data.json: line 1, column 1: unexpected end of input, expected a JSON value");

    /* Bad selections fail before anything is read. */
    check_json_err(s, "a/b", NULL, 0, false, CTN_EINVAL,
                   "data.json: text pointer \"a/b\": a pointer must be empty or start with '/'");
    check_json_err(s, "/a~2", NULL, 0, false, CTN_EINVAL,
                   "data.json: text pointer \"/a~2\": '~' must be followed by 0 or 1");
    check_json_err(s, "/a~", NULL, 0, false, CTN_EINVAL,
                   "data.json: text pointer \"/a~\": '~' must be followed by 0 or 1");
    const char *reserved[] = {"/n", "/x/source"};
    check_json_err(s, "", reserved, 2, false, CTN_EINVAL,
                   "data.json: meta field \"/x/source\": its name is one the loader sets itself "
                   "(source, pointer, line)");
    const char *twice[] = {"/a/n", "/n"};
    check_json_err(s, "", twice, 2, false, CTN_EINVAL,
                   "data.json: meta field \"/n\": another meta field has the same name");
    const char *star[] = {"/arr/*"};
    check_json_err(s, "", star, 1, false, CTN_EINVAL,
                   "data.json: meta field \"/arr/*\": \"*\" is not allowed in a meta field");
    const char *empty[] = {""};
    check_json_err(s, "", empty, 1, false, CTN_EINVAL,
                   "data.json: meta field \"\": a meta field needs at least one segment (its "
                   "name)");
    const char *null_field[] = {"/n", NULL};
    check_json_err(s, "", null_field, 2, false, CTN_EINVAL, "data.json: meta field 1 is NULL");
}

/* Decoding comes first: a UTF-16 JSON Lines file, with an invalid run reported. */
TEST(json_after_decoding) {
    const char in[] = "\xFF\xFE{\0\"\0t\0\"\0:\0\"\0\x00\xD8\"\0}\0\n\0";
    warnings w;
    const ctn_load_ctx c = ctx("u16.jsonl", &w);
    const ctn_json_sel sel = {.text = "/t", .lines = true};
    ctn_val *docs = ctn_val_arr();
    char err[128] = "";
    CHECK_EQ_INT(ctn_load_json(&c, &sel, in, sizeof in - 1, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK_STR(text_of(docs, 0), "\xEF\xBF\xBD");
    CHECK_EQ_INT(w.n, 1);
    CHECK_STR(w.msgs[0], "u16.jsonl: invalid UTF-16 at byte 14 (2 bytes replaced by U+FFFD)");
    ctn_val_unref(docs);
}

/* ---- files ------------------------------------------------------------------------------ */

TEST(loader_for_and_name) {
    CHECK_EQ_INT(ctn_loader_for("a.txt"), CTN_LOADER_TEXT);
    CHECK_EQ_INT(ctn_loader_for("dir/b.TEXT"), CTN_LOADER_TEXT);
    CHECK_EQ_INT(ctn_loader_for("x/y/README.Md"), CTN_LOADER_MARKDOWN);
    CHECK_EQ_INT(ctn_loader_for("n.markdown"), CTN_LOADER_MARKDOWN);
    CHECK_EQ_INT(ctn_loader_for("d.json"), CTN_LOADER_JSON);
    CHECK_EQ_INT(ctn_loader_for("d.JSONL"), CTN_LOADER_JSONL);
    CHECK_EQ_INT(ctn_loader_for("d.ndjson"), CTN_LOADER_JSONL);
    CHECK_EQ_INT(ctn_loader_for("paper.pdf"), CTN_LOADER_PDF);
    CHECK_EQ_INT(ctn_loader_for("a.tar.gz"), CTN_LOADER_NONE);
    CHECK_EQ_INT(ctn_loader_for(".json"), CTN_LOADER_NONE);
    CHECK_EQ_INT(ctn_loader_for("notes.md/file"), CTN_LOADER_NONE);
    CHECK_EQ_INT(ctn_loader_for("md"), CTN_LOADER_NONE);
    CHECK_EQ_INT(ctn_loader_for("a.mdx"), CTN_LOADER_NONE);
    CHECK_EQ_INT(ctn_loader_for(NULL), CTN_LOADER_NONE);
    CHECK_STR(ctn_loader_name(CTN_LOADER_TEXT), "text");
    CHECK_STR(ctn_loader_name(CTN_LOADER_MARKDOWN), "markdown");
    CHECK_STR(ctn_loader_name(CTN_LOADER_JSON), "json");
    CHECK_STR(ctn_loader_name(CTN_LOADER_JSONL), "jsonl");
    CHECK_STR(ctn_loader_name(CTN_LOADER_PDF), "pdf");
    CHECK_STR(ctn_loader_name(CTN_LOADER_NONE), "none");
}

static char tmp_root[64];

static void put_file(const char *rel, const char *content) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmp_root, rel);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (f == NULL) return;
    fputs(content, f);
    fclose(f);
}

static void put_dir(const char *rel) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmp_root, rel);
    CHECK_EQ_INT(mkdir(p, 0755), 0);
}

/*
 *   a.md  b.txt  c.xyz  .hidden.md  link.md -> a.md  broken.md -> nowhere
 *   docs/x.md  docs/sub/y.md  docs/sub/z.json  docs/dir.md/  (a folder named like a file)
 *   .git/h.md  linkdir -> docs
 */
static void make_tree(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/ctn_loaders_XXXXXX");
    CHECK(mkdtemp(tmp_root) != NULL);
    CHECK_EQ_INT(chmod(tmp_root, 0755), 0);
    put_file("a.md", "# A\n");
    put_file("b.txt", "b");
    put_file("c.xyz", "c");
    put_file(".hidden.md", "h");
    put_dir("docs");
    put_dir("docs/sub");
    put_dir("docs/dir.md");
    put_dir(".git");
    put_file("docs/x.md", "x");
    put_file("docs/sub/y.md", "y");
    put_file("docs/sub/z.json", "{}");
    put_file(".git/h.md", "h");
    char p[256];
    snprintf(p, sizeof p, "%s/link.md", tmp_root);
    CHECK_EQ_INT(symlink("a.md", p), 0);
    snprintf(p, sizeof p, "%s/broken.md", tmp_root);
    CHECK_EQ_INT(symlink("nowhere.md", p), 0);
    snprintf(p, sizeof p, "%s/linkdir", tmp_root);
    CHECK_EQ_INT(symlink("docs", p), 0);
}

static void remove_tree(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    CHECK_EQ_INT(system(cmd), 0);
}

/* Lists with glob and compares with want, a list of paths relative to the root joined by
 * spaces. */
static void check_list(const char *glob, const char *want) {
    char **paths = NULL, err[256] = "", got[1024] = "";
    size_t n = 0;
    const int rc = ctn_list_files(tmp_root, glob, &paths, &n, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc < 0) printf("  %s\n", err);
    const size_t skip = strlen(tmp_root) + 1;
    for (size_t i = 0; i < n; i++) {
        CHECK(strncmp(paths[i], tmp_root, skip - 1) == 0 && paths[i][skip - 1] == '/');
        const size_t at = strlen(got);
        snprintf(got + at, sizeof got - at, "%s%s", i ? " " : "", paths[i] + skip);
        free(paths[i]);
    }
    free(paths);
    CHECK_STR(got, want);
}

TEST(list_files) {
    make_tree();
    check_list("*.md", "a.md link.md");
    check_list("**/*.md", "a.md docs/sub/y.md docs/x.md link.md");
    check_list("docs/**", "docs/sub/y.md docs/sub/z.json docs/x.md");
    check_list("docs/*", "docs/x.md");
    check_list("docs/**/*.json", "docs/sub/z.json");
    check_list("**", "a.md b.txt c.xyz docs/sub/y.md docs/sub/z.json docs/x.md link.md");
    check_list(NULL, "a.md b.txt docs/sub/y.md docs/sub/z.json docs/x.md link.md");
    check_list(".*", ".hidden.md");
    check_list(".git/*", ".git/h.md");
    check_list("**/.git/*.md", ".git/h.md");
    check_list("docs", ""); /* a folder is not a file */
    check_list("/docs//x.md", "docs/x.md");
    check_list("*.pdf", "");

    /* A root with a trailing '/', and a root that is a file. */
    char root[128], **paths = NULL, err[256] = "";
    size_t n = 0;
    snprintf(root, sizeof root, "%s/docs/", tmp_root);
    CHECK_EQ_INT(ctn_list_files(root, "*.md", &paths, &n, err, sizeof err), 0);
    char want[160];
    snprintf(want, sizeof want, "%s/docs/x.md", tmp_root);
    CHECK(n == 1 && paths != NULL && strcmp(paths[0], want) == 0);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    CHECK_EQ_INT(ctn_list_files(want, "*.txt", &paths, &n, err, sizeof err), 0);
    CHECK(n == 1 && paths != NULL && strcmp(paths[0], want) == 0);
    if (n == 1) free(paths[0]);
    free(paths);

    snprintf(root, sizeof root, "%s/missing", tmp_root);
    CHECK_EQ_INT(ctn_list_files(root, NULL, &paths, &n, err, sizeof err), CTN_EIO);
    CHECK(paths == NULL && n == 0);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", root);
    CHECK_STR(err, want);
    CHECK_EQ_INT(ctn_list_files(tmp_root, "", &paths, &n, err, sizeof err), CTN_EINVAL);
    remove_tree();
}

/* A folder that cannot be read fails the listing and is named. Root reads every folder, so
 * then the listing runs in a child that has become nobody. */
TEST(list_files_unreadable_folder) {
    make_tree();
    char sub[128];
    snprintf(sub, sizeof sub, "%s/docs/sub", tmp_root);
    CHECK_EQ_INT(chmod(sub, 0), 0);
    int fds[2];
    CHECK_EQ_INT(pipe(fds), 0);
    const pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        char err[256] = "";
        int rc = 1;
        if (geteuid() != 0 || (setgid(65534) == 0 && setuid(65534) == 0)) {
            char **paths = NULL;
            size_t n = 0;
            rc = ctn_list_files(tmp_root, "**/*.md", &paths, &n, err, sizeof err);
        } else {
            snprintf(err, sizeof err, "skip");
        }
        if (write(fds[1], err, strlen(err)) < 0) _exit(3);
        _exit(rc == CTN_EIO ? 0 : 2);
    }
    close(fds[1]);
    char got[256] = "";
    const ssize_t k = read(fds[0], got, sizeof got - 1);
    got[k > 0 ? k : 0] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_EQ_INT(chmod(sub, 0755), 0);
    remove_tree();
    if (strcmp(got, "skip") == 0) SKIP("cannot become another user to lose read access");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char want[200];
    snprintf(want, sizeof want, "%s: cannot read the folder: Permission denied", sub);
    CHECK_STR(got, want);
}

TEST(load_file) {
    make_tree();
    char p[128], err[256] = "", want[200], *data = NULL;
    size_t n = 99;
    snprintf(p, sizeof p, "%s/docs/sub/z.json", tmp_root);
    CHECK_EQ_INT(ctn_load_file(p, &data, &n, err, sizeof err), 0);
    CHECK(n == 2 && data != NULL && strcmp(data, "{}") == 0);
    free(data);
    snprintf(p, sizeof p, "%s/empty.txt", tmp_root);
    put_file("empty.txt", "");
    CHECK_EQ_INT(ctn_load_file(p, &data, &n, err, sizeof err), 0);
    CHECK(n == 0 && data != NULL && data[0] == '\0');
    free(data);

    /* A file larger than the first read, and one whose size stat does not know. */
    char *big = malloc(100001);
    CHECK(big != NULL);
    if (big != NULL) {
        for (size_t i = 0; i < 100000; i++)
            big[i] = (char)('a' + i % 26);
        big[100000] = '\0';
        put_file("big.txt", big);
        snprintf(p, sizeof p, "%s/big.txt", tmp_root);
        CHECK_EQ_INT(ctn_load_file(p, &data, &n, err, sizeof err), 0);
        CHECK(n == 100000 && data != NULL && strcmp(data, big) == 0);
        free(data);
        free(big);
    }
    if (access("/proc/self/status", R_OK) == 0) {
        CHECK_EQ_INT(ctn_load_file("/proc/self/status", &data, &n, err, sizeof err), 0);
        CHECK(data != NULL && n == strlen(data) && strncmp(data, "Name:", 5) == 0);
        free(data);
    }

    snprintf(p, sizeof p, "%s/missing.txt", tmp_root);
    CHECK_EQ_INT(ctn_load_file(p, &data, &n, err, sizeof err), CTN_EIO);
    CHECK(data == NULL && n == 0);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", p);
    CHECK_STR(err, want);
    snprintf(p, sizeof p, "%s/docs", tmp_root);
    CHECK_EQ_INT(ctn_load_file(p, &data, &n, err, sizeof err), CTN_EIO);
    snprintf(want, sizeof want, "%s: is a folder, not a file", p);
    CHECK_STR(err, want);
    CHECK(data == NULL);
    remove_tree();
}

/* ---- allocation failures ---------------------------------------------------------------- */

/*
 * Runs one load for every N, failing the N-th allocation once or from then on, until a run
 * sees no failure. A run that met one must return CTN_ENOMEM with a message and leave docs
 * as it was (the ASan build checks that nothing leaks); the run without one must give
 * n_want documents after the sentinel.
 */
static void alloc_loop(int (*load)(ctn_val *docs, char *err, size_t errcap), size_t n_want) {
    for (int once = 0; once < 2; once++) {
        bool done = false;
        long failures = 0;
        for (long n = 0; n < 100000 && !done; n++) {
            ctn_val *docs = sentinel_docs();
            char err[256] = "";
            const long before = ctn__alloc_n_failed;
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            const int rc = load(docs, err, sizeof err);
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            if (ctn__alloc_n_failed > before) {
                failures++;
                CHECK_EQ_INT(rc, CTN_ENOMEM);
                CHECK_CONTAINS(err, "out of memory");
                CHECK(only_sentinel(docs));
            } else {
                done = true;
                CHECK_EQ_INT(rc, 0);
                CHECK_EQ_INT(ctn_val_len(docs), 1 + n_want);
            }
            ctn_val_unref(docs);
        }
        CHECK(done && failures > 0);
    }
}

static int load_jsonl_sample(ctn_val *docs, char *err, size_t errcap) {
    static const char s[] =
        "{\"title\": \"T\", \"items\": [{\"body\": \"one\", \"id\": 1, \"tags\": [\"x\"]},"
        " {\"body\": {\"k\": [1, 2.5]}, \"id\": 2}]}\n"
        "\n"
        "{\"title\": \"U\", \"items\": []}\n"
        "{\"title\": \"V\", \"items\": [{\"body\": \"three\xFF\", \"id\": 3}]}\n";
    static const char *const fields[] = {"/id", "/title", "/tags"};
    warnings w;
    const ctn_load_ctx c = ctx("data.jsonl", &w);
    const ctn_json_sel sel = {
        .text = "/items/*/body", .meta_fields = fields, .n_meta_fields = 3, .lines = true};
    return ctn_load_json(&c, &sel, s, sizeof s - 1, docs, err, errcap);
}

static int load_text_sample(ctn_val *docs, char *err, size_t errcap) {
    warnings w;
    const ctn_load_ctx c = ctx("t.txt", &w);
    return ctn_load_text(&c,
                         "\xFF\xFE"
                         "a\0\x00\xD8",
                         6, docs, err, errcap);
}

TEST(allocation_failures) {
    alloc_loop(load_jsonl_sample, 3);
    alloc_loop(load_text_sample, 1);

    /* The sample once more, checked in full. */
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    CHECK_EQ_INT(load_jsonl_sample(docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 3);
    CHECK_STR(text_of(docs, 0), "one");
    CHECK_STR(text_of(docs, 1), "{\"k\":[1,2.5]}");
    CHECK_STR(text_of(docs, 2), "three\xEF\xBF\xBD");
    CHECK_STR(meta_str(docs, 2, "title"), "V");
    CHECK_STR(meta_str(docs, 1, "pointer"), "/items/1/body");
    const ctn_val *line = meta(docs, 2, "line");
    CHECK(line != NULL && line->kind == CTN_VINT && line->u.i == 4);
    ctn_val_unref(docs);
}

/* Listing and reading: every failure is CTN_ENOMEM with nothing returned. */
TEST(allocation_failures_files) {
    make_tree();
    for (int once = 0; once < 2; once++) {
        bool done = false;
        for (long n = 0; n < 10000 && !done; n++) {
            char **paths = NULL, err[256] = "", *data = NULL, p[128];
            size_t np = 0, nd = 0;
            const long before = ctn__alloc_n_failed;
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            const int r1 = ctn_list_files(tmp_root, "**/*.md", &paths, &np, err, sizeof err);
            snprintf(p, sizeof p, "%s/docs/x.md", tmp_root);
            const int r2 = ctn_load_file(p, &data, &nd, err, sizeof err);
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            CHECK(r1 == 0 || (r1 == CTN_ENOMEM && paths == NULL && np == 0));
            CHECK(r2 == 0 || (r2 == CTN_ENOMEM && data == NULL));
            if (ctn__alloc_n_failed == before) {
                done = true;
                CHECK(r1 == 0 && np == 4 && r2 == 0 && nd == 1);
            } else {
                CHECK(r1 < 0 || r2 < 0);
            }
            for (size_t i = 0; i < np; i++)
                free(paths[i]);
            free(paths);
            free(data);
        }
        CHECK(done);
    }
    remove_tree();
}

int main(void) {
    RUN(decode_utf8_with_and_without_bom);
    RUN(decode_utf16_with_a_pair);
    RUN(decode_utf16_unpaired_and_odd);
    RUN(decode_invalid_utf8);
    RUN(decode_long_runs);
    RUN(text_loader);
    RUN(json_pointer_with_escapes);
    RUN(json_star_over_arrays_and_objects);
    RUN(json_meta_fields);
    RUN(json_non_string_text);
    RUN(json_lines);
    RUN(json_lines_errors_name_the_line);
    RUN(json_errors_leave_docs_alone);
    RUN(json_after_decoding);
    RUN(loader_for_and_name);
    RUN(list_files);
    RUN(list_files_unreadable_folder);
    RUN(load_file);
    RUN(allocation_failures);
    RUN(allocation_failures_files);
    return test_summary();
}
