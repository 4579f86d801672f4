/*
 * JSON reading (stdlib/json.h): the strict grammar and its error positions, numbers and
 * strings at their edges, the finder, and the streaming parser, which must give the same
 * value as the one-shot parse for every way of cutting the text, with snapshots that only
 * grow.
 */
#include <math.h>
#include <stdlib.h>

#include "error.h"
#include "json.h"
#include "test.h"
#include "value.h"

/* Parses s and returns its compact JSON text (malloc'd), or NULL after checking the
 * failure. */
static char *rt(const char *s) {
    ctn_val *v = NULL;
    char err[256] = "";
    int rc = ctn_json_parse(s, strlen(s), &v, err, sizeof err);
    if (rc != 0) {
        printf("  parse of %s failed: %s\n", s, err);
        return NULL;
    }
    char *j = ctn_val_to_json(v, 0);
    ctn_val_unref(v);
    return j;
}

static void check_rt(const char *s, const char *want) {
    char *j = rt(s);
    CHECK_STR(j, want);
    free(j);
}

/* Checks that s (n bytes) fails with CTN_EFORMAT and a message containing want. */
static void check_errn(const char *s, size_t n, const char *want) {
    ctn_val *v = (ctn_val *)1;
    char err[256] = "";
    int rc = ctn_json_parse(s, n, &v, err, sizeof err);
    CHECK_EQ_INT(rc, CTN_EFORMAT);
    CHECK(v == NULL);
    CHECK_CONTAINS(err, want);
}

static void check_err(const char *s, const char *want) {
    check_errn(s, strlen(s), want);
}

static ctn_val *parse(const char *s) {
    ctn_val *v = NULL;
    CHECK_EQ_INT(ctn_json_parse(s, strlen(s), &v, NULL, 0), 0);
    return v;
}

TEST(scalars_and_number_kinds) {
    check_rt("null", "null");
    check_rt(" true ", "true");
    check_rt("\t\r\nfalse\n", "false");
    check_rt("0", "0");
    check_rt("-0", "0");
    check_rt("42", "42");
    check_rt("9223372036854775807", "9223372036854775807");
    check_rt("-9223372036854775808", "-9223372036854775808");
    /* One past int64 either way becomes a double. */
    check_rt("9223372036854775808", "9.2233720368547758e+18");
    check_rt("-9223372036854775809", "-9.2233720368547758e+18");
    check_rt("1.0", "1.0");
    check_rt("-0.5", "-0.5");
    check_rt("1e2", "100.0");
    check_rt("1E+2", "100.0");
    check_rt("25e-1", "2.5");
    check_rt("0.1", "0.10000000000000001");
    check_rt("1e-400", "0.0");
    ctn_val *v = parse("12");
    CHECK(v != NULL && v->kind == CTN_VINT && v->u.i == 12);
    ctn_val_unref(v);
    v = parse("12.0");
    CHECK(v != NULL && v->kind == CTN_VNUM && v->u.num == 12.0);
    ctn_val_unref(v);
    v = parse("-0.0");
    CHECK(v != NULL && v->kind == CTN_VNUM && v->u.num == 0.0 && signbit(v->u.num));
    ctn_val_unref(v);
}

TEST(number_grammar_errors) {
    check_err("01", "line 1, column 2 (byte 1): a number may not have a leading zero");
    check_err("-01", "leading zero");
    check_err("-",
              "line 1, column 2 (byte 1): unexpected end of input, expected a digit after '-'");
    check_err("-a", "line 1, column 2 (byte 1): expected a digit after '-' in a number");
    check_err("1.", "unexpected end of input, expected a digit after '.' in a number");
    check_err("1.e5", "column 3 (byte 2): expected a digit after '.'");
    check_err(".5", "column 1 (byte 0): expected a JSON value, found '.'");
    check_err("+1", "expected a JSON value, found '+'");
    check_err("1e", "unexpected end of input, expected a sign or digit in the exponent");
    check_err("1e+", "unexpected end of input, expected a digit in the exponent");
    check_err("1e+x", "column 4 (byte 3): expected a digit in a number's exponent");
    check_err("1x", "column 2 (byte 1): unexpected 'x' after the JSON value");
    check_err("0x10", "unexpected 'x' after the JSON value");
    check_err("1 2", "column 3 (byte 2): unexpected '2' after the JSON value");
    check_err("Infinity", "expected a JSON value, found 'I'");
    check_err("NaN", "found 'N'");
    check_err("[1e400]", "line 1, column 2 (byte 1): number 1e400 is too large for a double");
    check_err("-1e309", "too large for a double");
}

TEST(literal_and_structure_errors) {
    check_err("", "line 1, column 1 (byte 0): unexpected end of input, expected a JSON value");
    check_err("   ", "column 4 (byte 3): unexpected end of input");
    check_err("tru", "unexpected end of input, expected the rest of a literal");
    check_err("trUe", "column 3 (byte 2): invalid literal: expected 'true', found 'U'");
    check_err("nul", "unexpected end of input");
    check_err("True", "found 'T'");
    check_err("[1,]", "column 4 (byte 3): expected a value after ',' in an array, found ']' (a "
                      "trailing comma");
    check_err("{\"a\":1,}", "expected a string key after ',' in an object, found '}' (a trailing");
    check_err("[1 2]", "column 4 (byte 3): expected ',' or ']' after an array element, found '2'");
    check_err("{\"a\" 1}", "expected ':' after an object key, found '1'");
    check_err("{a:1}", "column 2 (byte 1): expected a string key or '}', found 'a'");
    check_err("{\"a\":}", "expected a value after ':', found '}'");
    check_err("{\"a\":1 \"b\":2}", "expected ',' or '}' after an object member, found '\"'");
    check_err("[", "unexpected end of input, expected a value or ']'");
    check_err("{", "unexpected end of input, expected a string key or '}'");
    check_err("[1", "unexpected end of input, expected ',' or ']' after an array element");
    check_err("]", "expected a JSON value, found ']'");
    check_err("[1]]", "unexpected ']' after the JSON value");
    check_errn("[1]\0", 4, "column 4 (byte 3): unexpected byte 0x00 after the JSON value");
    /* Lines and columns: the error is at the third line's seventh byte. */
    check_err("{\n  \"a\": 1,\n  \"b\" 2\n}",
              "line 3, column 7 (byte 18): expected ':' after an object key, found '2'");
    check_err("{\"k\": [1,\n2 3]}", "line 2, column 3 (byte 12): expected ',' or ']'");
    check_err("[\n\n", "line 3, column 1 (byte 3): unexpected end of input");
}

TEST(containers_and_duplicate_keys) {
    check_rt("[]", "[]");
    check_rt("{}", "{}");
    check_rt(" [ 1 , \"a\" , [ ] , { } , null ] ", "[1,\"a\",[],{},null]");
    check_rt("{\"a\":{\"b\":[true,false]},\"c\":-1.5}", "{\"a\":{\"b\":[true,false]},\"c\":-1.5}");
    /* The last value wins, in the first one's place. */
    check_rt("{\"a\":1,\"b\":2,\"a\":3}", "{\"a\":3,\"b\":2}");
    check_rt("{\"a\":[1],\"a\":{\"x\":[2]}}", "{\"a\":{\"x\":[2]}}");
    /* A key may hold a NUL. */
    ctn_val *v = parse("{\"a\\u0000b\":1,\"a\":2}");
    CHECK(v != NULL && ctn_val_len(v) == 2 && ctn_val_getk(v, "a\0b", 3) != NULL);
    ctn_val_unref(v);
}

TEST(nesting_limit) {
    char buf[2 * 600 + 1];
    for (int depth = 511; depth <= 513; depth++) {
        for (int i = 0; i < depth; i++) {
            buf[i] = '[';
            buf[2 * depth - 1 - i] = ']';
        }
        buf[2 * depth] = '\0';
        ctn_val *v = NULL;
        char err[256] = "";
        int rc = ctn_json_parse(buf, 2 * (size_t)depth, &v, err, sizeof err);
        if (depth <= 512) {
            CHECK_EQ_INT(rc, 0);
            ctn_val_unref(v);
        } else {
            CHECK_EQ_INT(rc, CTN_EFORMAT);
            CHECK_CONTAINS(err, "column 513 (byte 512): nesting deeper than 512");
        }
    }
    /* Deep objects too, and a very deep unclosed input fails without recursion. */
    size_t n = 100000;
    char *deep = malloc(n);
    memset(deep, '[', n);
    check_errn(deep, n, "nesting deeper than 512");
    for (size_t i = 0; i + 5 <= n; i += 5)
        memcpy(deep + i, "{\"a\":", 5);
    check_errn(deep, n, "byte 2560): nesting deeper than 512");
    free(deep);
}

TEST(strings_escapes_and_utf8) {
    check_rt("\"\"", "\"\"");
    check_rt("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "\"a\\\"b\\\\c/d\\u0008\\u000c\\n\\r\\t\"");
    check_rt("\"\\u0041\\u00e9\\u20AC\"", "\"A\xC3\xA9\xE2\x82\xAC\"");
    check_rt("\"\\ud83d\\ude00\"", "\"\xF0\x9F\x98\x80\"");
    check_rt("\"\\uDBFF\\uDFFF\"", "\"\xF4\x8F\xBF\xBF\"");
    check_rt("\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF\"",
             "\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF\"");
    ctn_val *v = parse("\"a\\u0000b\"");
    CHECK(v != NULL && v->kind == CTN_VSTR && v->u.str.len == 3 &&
          memcmp(v->u.str.p, "a\0b", 3) == 0);
    ctn_val_unref(v);
    check_err("\"abc", "column 5 (byte 4): unexpected end of input, expected the closing '\"'");
    check_err("\"a\nb\"", "column 3 (byte 2): raw control character 0x0A in a string");
    check_err("\"\t\"", "raw control character 0x09");
    check_errn("\"\0\"", 3, "raw control character 0x00");
    check_err("\"\\x\"", "column 3 (byte 2): invalid escape: 'x' after '\\' in a string");
    check_err("\"\\u12G4\"", "column 6 (byte 5): expected a hex digit in a \\u escape, found 'G'");
    check_err("\"\\u12", "unexpected end of input, expected 4 hex digits after \\u");
    check_err("\"\\uD800\"", "column 8 (byte 7): lone surrogate \\uD800 in a string");
    check_err("\"\\uD800\\n\"", "lone surrogate \\uD800");
    check_err("\"\\uD800\\u0041\"", "lone surrogate \\uD800 in a string (\\u0041 is not a low");
    check_err("\"\\uDC00\"", "lone surrogate \\uDC00 in a string (a low half");
    check_err("\"\\uD800", "unexpected end of input, expected a \\u escape of a low surrogate");
    check_err("\"\xFF\"", "column 2 (byte 1): invalid UTF-8 byte 0xFF in a string");
    check_err("\"\xC0\xAF\"", "invalid UTF-8 byte 0xC0"); /* overlong '/' */
    check_err("\"\xE0\x80\xAF\"", "column 3 (byte 2): invalid UTF-8 sequence in a string (byte "
                                  "0x80)");
    check_err("\"\xED\xA0\x80\"", "invalid UTF-8 sequence");     /* an encoded surrogate */
    check_err("\"\xF4\x90\x80\x80\"", "invalid UTF-8 sequence"); /* past U+10FFFF */
    check_err("\"\xF5\x80\x80\x80\"", "invalid UTF-8 byte 0xF5");
    check_err("\"\xC3\"", "invalid UTF-8 sequence in a string (byte 0x22)"); /* cut short */
    check_err("\"\x80\"", "invalid UTF-8 byte 0x80");
    check_err("'a'", "column 1 (byte 0): expected a JSON value, found '''");
}

TEST(find_in_model_answers) {
    size_t a = 0, b = 0;
    const char *t = "Sure! Here it is:\n```json\n{\"a\": [1, 2]}\n```\nAnything else?";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), 0);
    CHECK(b > a && b - a == strlen("{\"a\": [1, 2]}") && memcmp(t + a, "{\"a\"", 4) == 0);
    /* A bare fence, with a scalar (the fence content need not be a container). */
    t = "```\n  42 \n```";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), 0);
    CHECK(b - a == 2 && memcmp(t + a, "42", 2) == 0);
    /* JSON in upper case names the same language. */
    t = "```JSON\n[true]\n```";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), 0);
    CHECK(b - a == 6 && memcmp(t + a, "[true]", 6) == 0);
    /* Another language's block is passed over; the json block after it is used. */
    t = "```python\nx = [1, 2]\n```\n```json\n{\"k\": null}\n```";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), 0);
    CHECK(b - a == 11 && memcmp(t + a, "{\"k\": null}", 11) == 0);
    /* A json block that does not parse: the first complete value in the text wins. */
    t = "```json\n{oops}\n```\nthen [1, {\"x\": 2}] and {\"y\": 3}";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), 0);
    CHECK(b - a == 13 && memcmp(t + a, "[1, {\"x\": 2}]", 13) == 0);
    /* No fence: brackets in prose that start no value are skipped. */
    t = "The set {a, b} is [x] but {\"ok\": true} is JSON.";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), 0);
    CHECK(b - a == 12 && memcmp(t + a, "{\"ok\": true}", 12) == 0);
    /* An unterminated fence still has content. */
    t = "```json\n{\"a\":1}";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), 0);
    CHECK(b - a == 7);
    t = "no json here {";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), CTN_ENOENT);
    CHECK_EQ_INT(ctn_json_find("", 0, &a, &b), CTN_ENOENT);
    t = "[1, 2";
    CHECK_EQ_INT(ctn_json_find(t, strlen(t), &a, &b), CTN_ENOENT);
}

/* ---- streaming ------------------------------------------------------------------------ */

/* Whether snapshot a is a "prefix" of b: equal except that the last member of each
 * container may have grown. */
static int is_prefix(const ctn_val *a, const ctn_val *b) {
    if (a == NULL) return 1;
    if (b == NULL || a->kind != b->kind) return 0;
    if (a->kind == CTN_VARR) {
        size_t n = a->u.arr.n;
        if (n > b->u.arr.n) return 0;
        for (size_t i = 0; i < n; i++) {
            int last = i + 1 == n;
            if (last ? !is_prefix(a->u.arr.items[i], b->u.arr.items[i])
                     : !ctn_val_equal(a->u.arr.items[i], b->u.arr.items[i]))
                return 0;
        }
        return 1;
    }
    if (a->kind == CTN_VOBJ) {
        size_t n = a->u.obj.n;
        if (n > b->u.obj.n) return 0;
        for (size_t i = 0; i < n; i++) {
            if (!ctn_val_equal(a->u.obj.keys[i], b->u.obj.keys[i])) return 0;
            int last = i + 1 == n;
            if (last ? !is_prefix(a->u.obj.vals[i], b->u.obj.vals[i])
                     : !ctn_val_equal(a->u.obj.vals[i], b->u.obj.vals[i]))
                return 0;
        }
        return 1;
    }
    return ctn_val_equal(a, b);
}

/* Streams t cut at the given split points (sorted) and checks every snapshot against the
 * previous one and the final value against want (NULL: an error containing want_err). */
static int stream_cuts(const char *t, size_t n, const size_t *cuts, size_t ncuts,
                       const ctn_val *want, const char *want_err) {
    ctn_json_stream *s = ctn_json_stream_new();
    ctn_val *prev = NULL;
    int ok = 1, rc = 0;
    size_t at = 0;
    for (size_t k = 0; k <= ncuts && rc == 0; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        int changed = -1;
        rc = ctn_json_stream_feed(s, t + at, to - at, &changed);
        at = to;
        ctn_val *snap = ctn_json_stream_snapshot(s);
        if (rc == 0 && changed != !ctn_val_equal(prev, snap) && !(prev == NULL && snap == NULL))
            ok = 0;
        if (!is_prefix(prev, snap)) ok = 0;
        ctn_val_unref(prev);
        prev = snap;
    }
    ctn_val *v = NULL;
    char err[256] = "";
    int frc = ctn_json_stream_finish(s, &v, err, sizeof err);
    if (want != NULL) {
        if (frc != 0 || !ctn_val_equal(v, want) || !ctn_val_equal(prev, want)) ok = 0;
    } else if (frc == 0 || strstr(err, want_err) == NULL ||
               strcmp(err, ctn_json_stream_errmsg(s)) != 0) {
        ok = 0;
    }
    ctn_val_unref(v);
    ctn_val_unref(prev);
    ctn_json_stream_free(s);
    return ok;
}

/* Every single split point, every pair of split points, and one byte at a time. */
static void check_stream(const char *t, const char *value_text, const char *want_err) {
    size_t n = strlen(t);
    ctn_val *want = NULL;
    if (value_text != NULL)
        CHECK_EQ_INT(ctn_json_parse(value_text, strlen(value_text), &want, NULL, 0), 0);
    for (size_t i = 0; i <= n; i++) {
        size_t c[1] = {i};
        if (!stream_cuts(t, n, c, 1, want, want_err)) {
            printf("  stream of %s cut at %zu disagrees\n", t, i);
            test_cur_failed = 1;
        }
        for (size_t j = i; j <= n && n <= 80; j++) {
            size_t c2[2] = {i, j};
            if (!stream_cuts(t, n, c2, 2, want, want_err)) {
                printf("  stream of %s cut at %zu, %zu disagrees\n", t, i, j);
                test_cur_failed = 1;
            }
        }
    }
    size_t *all = malloc((n + 1) * sizeof *all);
    for (size_t i = 0; i < n; i++)
        all[i] = i + 1;
    if (!stream_cuts(t, n, all, n ? n - 1 : 0, want, want_err)) {
        printf("  stream of %s one byte at a time disagrees\n", t);
        test_cur_failed = 1;
    }
    free(all);
    ctn_val_unref(want);
}

TEST(stream_agrees_with_parse_for_every_chunking) {
    check_stream("{\"a\": 1, \"b\": [true, null, -2.5e3, \"x\\u00e9\\ud83d\\ude00\"], \"c\": {}}",
                 "{\"a\": 1, \"b\": [true, null, -2.5e3, \"x\\u00e9\\ud83d\\ude00\"], \"c\": {}}",
                 NULL);
    check_stream("Here you go:\n```json\n[1, [2, [3, {\"k\": \"v\"}]], 10]\n```\nDone. {\"z\":1}",
                 "[1, [2, [3, {\"k\": \"v\"}]], 10]", NULL);
    check_stream("[12345678901234567890, 0, -0, 1.5]", "[12345678901234567890, 0, -0, 1.5]", NULL);
    check_stream("{\"caf\xC3\xA9\": \"\xE2\x82\xAC\"}", "{\"caf\xC3\xA9\": \"\xE2\x82\xAC\"}",
                 NULL);
    check_stream("x [1, 2,] y", NULL, "line 1, column 9 (byte 8): expected a value after ','");
    check_stream("note\n{\"a\": 01}", NULL, "line 2, column 8 (byte 12): a number may not have");
    check_stream("{\"a\": [1, 2", NULL, "unexpected end of input, expected ',' or ']'");
    check_stream("{\"a\": 1", NULL, "unexpected end of input");
    check_stream("no value at all", NULL, "no JSON value in the text");
}

TEST(stream_snapshots_show_complete_members_only) {
    ctn_json_stream *s = ctn_json_stream_new();
    int changed = -1;
    CHECK_EQ_INT(ctn_json_stream_feed(s, "Sure: ```json\n", 14, &changed), 0);
    CHECK_EQ_INT(changed, 0);
    CHECK(ctn_json_stream_snapshot(s) == NULL);
    const char *steps[][2] = {
        {"{\"na", "{}"},
        {"me\": \"Ad", "{}"},
        {"a\", \"age\": 3", "{\"name\":\"Ada\"}"},
        {"6", "{\"name\":\"Ada\"}"},
        {", \"tags\": [", "{\"name\":\"Ada\",\"age\":36,\"tags\":[]}"},
        {"\"x\", tr", "{\"name\":\"Ada\",\"age\":36,\"tags\":[\"x\"]}"},
        {"ue", "{\"name\":\"Ada\",\"age\":36,\"tags\":[\"x\",true]}"},
        {"], \"o\": {\"p\": 1.5}}",
         "{\"name\":\"Ada\",\"age\":36,\"tags\":[\"x\",true],\"o\":{\"p\":1.5}}"},
        {"\n```\nHope that helps! [1]",
         "{\"name\":\"Ada\",\"age\":36,\"tags\":[\"x\",true],\"o\":{\"p\":1.5}}"},
    };
    const char *prev = NULL;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        CHECK_EQ_INT(ctn_json_stream_feed(s, steps[i][0], strlen(steps[i][0]), &changed), 0);
        CHECK_EQ_INT(changed, prev == NULL || strcmp(prev, steps[i][1]) != 0);
        ctn_val *snap = ctn_json_stream_snapshot(s);
        char *j = ctn_val_to_json(snap, 0);
        CHECK_STR(j, steps[i][1]);
        free(j);
        /* A snapshot is not changed by later input. */
        ctn_val *again = ctn_json_stream_snapshot(s);
        CHECK(again == snap);
        ctn_val_unref(again);
        ctn_val_unref(snap);
        prev = steps[i][1];
    }
    ctn_val *v = NULL;
    char err[128];
    CHECK_EQ_INT(ctn_json_stream_finish(s, &v, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(v), 4);
    ctn_val_unref(v);
    CHECK_EQ_INT(ctn_json_stream_finish(s, &v, err, sizeof err), 0);
    ctn_val_unref(v);
    ctn_json_stream_free(s);
}

TEST(stream_errors_are_sticky) {
    ctn_json_stream *s = ctn_json_stream_new();
    int changed;
    CHECK_EQ_INT(ctn_json_stream_feed(s, "{\"a\": [1, 2]", 12, &changed), 0);
    CHECK_EQ_INT(ctn_json_stream_feed(s, " x", 2, &changed), CTN_EFORMAT);
    CHECK_CONTAINS(ctn_json_stream_errmsg(s),
                   "line 1, column 14 (byte 13): expected ',' or '}' after an object member");
    CHECK_EQ_INT(ctn_json_stream_feed(s, "}", 1, &changed), CTN_EFORMAT);
    CHECK_EQ_INT(changed, 0);
    /* The snapshot still shows what was complete before the error. */
    ctn_val *snap = ctn_json_stream_snapshot(s);
    char *j = ctn_val_to_json(snap, 0);
    CHECK_STR(j, "{\"a\":[1,2]}");
    free(j);
    ctn_val_unref(snap);
    ctn_val *v = (ctn_val *)1;
    char err[128];
    CHECK_EQ_INT(ctn_json_stream_finish(s, &v, err, sizeof err), CTN_EFORMAT);
    CHECK(v == NULL);
    CHECK_CONTAINS(err, "byte 13");
    ctn_json_stream_free(s);

    s = ctn_json_stream_new();
    CHECK_EQ_INT(ctn_json_stream_finish(s, &v, err, sizeof err), CTN_ENOENT);
    CHECK_CONTAINS(err, "no JSON value");
    CHECK_STR(ctn_json_stream_errmsg(s), err);
    ctn_json_stream_free(s);
    ctn_json_stream_free(NULL);
    CHECK_EQ_INT(ctn_json_stream_feed(NULL, "x", 1, NULL), CTN_EINVAL);
}

int main(void) {
    RUN(scalars_and_number_kinds);
    RUN(number_grammar_errors);
    RUN(literal_and_structure_errors);
    RUN(containers_and_duplicate_keys);
    RUN(nesting_limit);
    RUN(strings_escapes_and_utf8);
    RUN(find_in_model_answers);
    RUN(stream_agrees_with_parse_for_every_chunking);
    RUN(stream_snapshots_show_complete_members_only);
    RUN(stream_errors_are_sticky);
    return test_summary();
}
