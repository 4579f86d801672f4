/*
 * List and regex output parsers (stdlib/textparse.h): every list form, introductions and
 * trailing prose, the streaming parser's timing and its agreement with the one-shot parse
 * at every split point, and the regex parser's keys, named groups, unset groups and errors.
 */
#include <stdlib.h>

#include "error.h"
#include "test.h"
#include "textparse.h"
#include "value.h"

/* Parses t and compares the array's compact JSON with want. */
static void check_list(const char *t, const char *want) {
    ctn_val *v = NULL;
    CHECK_EQ_INT(ctn_list_parse(t, strlen(t), &v), 0);
    char *j = ctn_val_to_json(v, 0);
    CHECK_STR(j, want);
    free(j);
    ctn_val_unref(v);
}

TEST(list_forms) {
    check_list("1. red\n2. green\n3) blue\n", "[\"red\",\"green\",\"blue\"]");
    check_list("- a\n* b\n+ c\n\xE2\x80\xA2 d", "[\"a\",\"b\",\"c\",\"d\"]");
    check_list("  10.  spaced out  \r\n  11.\ttabbed\r\n", "[\"spaced out\",\"tabbed\"]");
    check_list("red\ngreen\n\n  blue  \n", "[\"red\",\"green\",\"blue\"]");
    check_list("red, green ,blue", "[\"red\",\"green\",\"blue\"]");
    check_list("a, b,\nc, d", "[\"a\",\"b\",\"c\",\"d\"]");
    check_list("a,, b, ", "[\"a\",\"b\"]");
    check_list("single item", "[\"single item\"]");
    check_list("", "[]");
    check_list(" \n\n \t", "[]");
    /* Not markers: a number without '.' or ')', a bullet glued to its word, a decimal. */
    check_list("2024 was a year\n-5 degrees\n**bold**\n1.5 cups",
               "[\"2024 was a year\",\"-5 degrees\",\"**bold**\",\"1.5 cups\"]");
    /* A marker with nothing after it is an empty item. */
    check_list("1.\n2. x\n-", "[\"x\"]");
}

TEST(list_introductions_and_prose) {
    check_list("Here are three colors:\n1. red\n2. green\n3. blue\n\nLet me know if you need "
               "more.",
               "[\"red\",\"green\",\"blue\"]");
    check_list("Sure, here they are:\n\n- a\n  wrapped line\n- b", "[\"a\",\"b\"]");
    check_list("Colors:\nred\ngreen", "[\"red\",\"green\"]");
    check_list("Colors:\nred, green", "[\"red\",\"green\"]");
    check_list("Only an intro:", "[]");
    /* In the one-per-line form a later marked line loses its marker. */
    check_list("red\n- green\n2. blue", "[\"red\",\"green\",\"blue\"]");
    /* In the one-per-line form commas stay inside items. */
    check_list("Paris\nNew York, NY", "[\"Paris\",\"New York, NY\"]");
}

/* Streams t cut at the given points; returns 1 when every feed's new items extend the list
 * reported so far as a prefix of the one-shot parse, and the finish gives exactly it. */
static int stream_cuts(const char *t, size_t n, const size_t *cuts, size_t ncuts) {
    ctn_val *want = NULL;
    if (ctn_list_parse(t, n, &want) != 0) return 0;
    ctn_list_stream *s = ctn_list_stream_new();
    size_t at = 0, seen = 0;
    int ok = 1;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t to = k < ncuts ? cuts[k] : n, nnew = 99;
        if (ctn_list_stream_feed(s, t + at, to - at, &nnew) != 0) ok = 0;
        at = to;
        const ctn_val *items = ctn_list_stream_items(s);
        if (ctn_val_len(items) != seen + nnew) ok = 0;
        seen += nnew;
        /* Items reported so far are the first items of the final list. */
        for (size_t i = 0; i < seen; i++)
            if (!ctn_val_equal(ctn_val_at(items, i), ctn_val_at(want, i))) ok = 0;
    }
    ctn_val *out = NULL;
    size_t nnew = 99;
    if (ctn_list_stream_finish(s, &out, &nnew) != 0) ok = 0;
    if (ctn_val_len(out) != seen + nnew || !ctn_val_equal(out, want)) ok = 0;
    ctn_val_unref(out);
    ctn_val_unref(want);
    ctn_list_stream_free(s);
    return ok;
}

static void check_stream(const char *t) {
    size_t n = strlen(t);
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            size_t c[2] = {i, j};
            if (!stream_cuts(t, n, c, 2)) {
                printf("  list stream of \"%s\" cut at %zu, %zu disagrees\n", t, i, j);
                test_cur_failed = 1;
            }
        }
    }
    size_t *all = malloc((n + 1) * sizeof *all);
    for (size_t i = 0; i < n; i++)
        all[i] = i + 1;
    if (!stream_cuts(t, n, all, n ? n - 1 : 0)) {
        printf("  list stream of \"%s\" one byte at a time disagrees\n", t);
        test_cur_failed = 1;
    }
    free(all);
}

TEST(list_stream_agrees_for_every_chunking) {
    check_stream("Here are three colors:\n1. red\n2) green\n- blue\nThanks!");
    check_stream("red, green,\nblue ,, cyan");
    check_stream("a\n\nb\r\n\xE2\x80\xA2 c\n");
    check_stream("Intro:\nx, y");
    check_stream("one");
    check_stream("");
}

TEST(list_stream_reports_items_when_their_separator_arrives) {
    ctn_list_stream *s = ctn_list_stream_new();
    size_t nnew = 99;
    CHECK_EQ_INT(ctn_list_stream_feed(s, "Colors:\n1. re", 13, &nnew), 0);
    CHECK_EQ_INT(nnew, 0);
    CHECK_EQ_INT(ctn_list_stream_feed(s, "d\n2. gr", 7, &nnew), 0);
    CHECK_EQ_INT(nnew, 1);
    CHECK_STR(ctn_val_at(ctn_list_stream_items(s), 0)->u.str.p, "red");
    CHECK_EQ_INT(ctn_list_stream_feed(s, "een", 3, &nnew), 0);
    CHECK_EQ_INT(nnew, 0);
    ctn_val *out = NULL;
    CHECK_EQ_INT(ctn_list_stream_finish(s, &out, &nnew), 0);
    CHECK_EQ_INT(nnew, 1);
    CHECK_EQ_INT(ctn_val_len(out), 2);
    ctn_val_unref(out);
    CHECK_EQ_INT(ctn_list_stream_finish(s, &out, &nnew), 0);
    CHECK_EQ_INT(nnew, 0);
    CHECK_EQ_INT(ctn_val_len(out), 2);
    ctn_val_unref(out);
    CHECK_EQ_INT(ctn_list_stream_feed(s, "x", 1, &nnew), CTN_EINVAL);
    ctn_list_stream_free(s);

    /* Comma form: the first line reports at its end, later items at each comma. */
    s = ctn_list_stream_new();
    CHECK_EQ_INT(ctn_list_stream_feed(s, "a, b, c", 7, &nnew), 0);
    CHECK_EQ_INT(nnew, 0);
    CHECK_EQ_INT(ctn_list_stream_feed(s, "\nd", 2, &nnew), 0);
    CHECK_EQ_INT(nnew, 3);
    CHECK_EQ_INT(ctn_list_stream_feed(s, ", e", 3, &nnew), 0);
    CHECK_EQ_INT(nnew, 1);
    CHECK_EQ_INT(ctn_list_stream_finish(s, &out, &nnew), 0);
    CHECK_EQ_INT(nnew, 1);
    char *j = ctn_val_to_json(out, 0);
    CHECK_STR(j, "[\"a\",\"b\",\"c\",\"d\",\"e\"]");
    free(j);
    ctn_val_unref(out);
    ctn_list_stream_free(s);
    ctn_list_stream_free(NULL);
    CHECK_EQ_INT(ctn_list_parse(NULL, 1, &out), CTN_EINVAL);
}

/* ---- regex ---------------------------------------------------------------------------- */

static void check_obj(ctn_val *v, const char *want) {
    char *j = ctn_val_to_json(v, 0);
    CHECK_STR(j, want);
    free(j);
    ctn_val_unref(v);
}

TEST(regex_with_keys) {
    const char *keys[] = {"answer", "confidence"};
    char err[200] = "";
    ctn_regex *re = ctn_regex_new("Answer:\\s*(\\w+)\\s*\\((\\d+)%\\)", keys, 2, err, sizeof err);
    CHECK(re != NULL);
    const char *t = "Let me think.\nAnswer: Paris (90%)\nAnswer: Rome (5%)";
    ctn_val *v = NULL;
    CHECK_EQ_INT(ctn_regex_parse(re, t, strlen(t), &v, err, sizeof err), 0);
    check_obj(v, "{\"answer\":\"Paris\",\"confidence\":\"90\"}");
    v = (ctn_val *)1;
    CHECK_EQ_INT(ctn_regex_parse(re, "nothing", 7, &v, err, sizeof err), CTN_ENOENT);
    CHECK(v == NULL);
    CHECK_STR(err, "no match for pattern 'Answer:\\s*(\\w+)\\s*\\((\\d+)%\\)'");
    /* The subject is counted: a match past n is not seen, and a NUL is a byte. */
    CHECK_EQ_INT(ctn_regex_parse(re, "Answer: X (1%)", 12, &v, err, sizeof err), CTN_ENOENT);
    ctn_regex_free(re);
    /* Fewer keys than groups is fine; more is not. */
    re = ctn_regex_new("(a)(b)(c)", keys, 1, err, sizeof err);
    CHECK(re != NULL);
    CHECK_EQ_INT(ctn_regex_parse(re, "xabc", 4, &v, err, sizeof err), 0);
    check_obj(v, "{\"answer\":\"a\"}");
    ctn_regex_free(re);
    CHECK(ctn_regex_new("(a)", keys, 2, err, sizeof err) == NULL);
    CHECK_STR(err, "2 keys but the pattern has 1 capture group");
}

TEST(regex_named_groups_and_unset_groups) {
    char err[200] = "";
    ctn_regex *re =
        ctn_regex_new("(?<zeta>\\d+)(?:-(?<alpha>\\d+))?(?<mid>x)?", NULL, 0, err, sizeof err);
    CHECK(re != NULL);
    ctn_val *v = NULL;
    CHECK_EQ_INT(ctn_regex_parse(re, "id 12-34", 8, &v, err, sizeof err), 0);
    /* Keys in the order of the groups, not of the names; an unset group is null. */
    check_obj(v, "{\"zeta\":\"12\",\"alpha\":\"34\",\"mid\":null}");
    CHECK_EQ_INT(ctn_regex_parse(re, "7x", 2, &v, err, sizeof err), 0);
    check_obj(v, "{\"zeta\":\"7\",\"alpha\":null,\"mid\":\"x\"}");
    ctn_regex_free(re);
    /* UTF-8 patterns and subjects; invalid UTF-8 in the subject does not fail the match. */
    re = ctn_regex_new("(?<w>\\p{L}+)$", NULL, 0, err, sizeof err);
    CHECK(re != NULL);
    CHECK_EQ_INT(ctn_regex_parse(re, "\xFF caf\xC3\xA9", 7, &v, err, sizeof err), 0);
    check_obj(v, "{\"w\":\"caf\xC3\xA9\"}");
    ctn_regex_free(re);
    ctn_regex_free(NULL);
}

TEST(regex_errors) {
    char err[200] = "";
    CHECK(ctn_regex_new("abc(", NULL, 0, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "bad pattern at offset 4: missing closing parenthesis");
    CHECK(ctn_regex_new("a[b", NULL, 0, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "bad pattern at offset 3");
    CHECK(ctn_regex_new("(a)", NULL, 0, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "no named groups");
    CHECK(ctn_regex_new(NULL, NULL, 0, err, sizeof err) == NULL);
    const char *keys[] = {"a", NULL};
    CHECK(ctn_regex_new("(a)(b)", keys, 2, err, sizeof err) == NULL);
    CHECK_STR(err, "key 1 is NULL");
    /* Catastrophic backtracking stops at PCRE2's limit with an error, not a hang. */
    const char *k1[] = {"x"};
    ctn_regex *re = ctn_regex_new("^((a+)+)+$", k1, 1, err, sizeof err);
    CHECK(re != NULL);
    char subject[64];
    memset(subject, 'a', 40);
    subject[40] = 'b';
    ctn_val *v = (ctn_val *)1;
    int rc = ctn_regex_parse(re, subject, 41, &v, err, sizeof err);
    CHECK(rc == CTN_ERANGE || rc == CTN_ENOENT);
    CHECK(v == NULL);
    ctn_regex_free(re);
}

int main(void) {
    RUN(list_forms);
    RUN(list_introductions_and_prose);
    RUN(list_stream_agrees_for_every_chunking);
    RUN(list_stream_reports_items_when_their_separator_arrives);
    RUN(regex_with_keys);
    RUN(regex_named_groups_and_unset_groups);
    RUN(regex_errors);
    return test_summary();
}
