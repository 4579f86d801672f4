/*
 * Chain values (chains/value.h): kinds stay distinct (integers are not doubles), containers
 * keep order and replace in place, copies are deep, and the JSON writer escapes what JSON
 * requires and keeps doubles readable as doubles.
 */
#include <math.h>
#include <stdlib.h>

#include "error.h"
#include "test.h"
#include "value.h"

static void check_json(ctn_val *v, const char *want) {
    char *j = ctn_val_to_json(v, 0);
    CHECK_STR(j, want);
    free(j);
    ctn_val_unref(v);
}

TEST(scalars_keep_their_kind) {
    check_json(ctn_val_null(), "null");
    check_json(ctn_val_bool(7), "true");
    check_json(ctn_val_int(INT64_MAX), "9223372036854775807");
    check_json(ctn_val_int(INT64_MIN), "-9223372036854775808");
    check_json(ctn_val_num(1.0), "1.0");
    check_json(ctn_val_num(0.1), "0.10000000000000001");
    check_json(ctn_val_num(1e300), "1.0000000000000001e+300");
    check_json(ctn_val_num(NAN), "null");
    check_json(ctn_val_num(-INFINITY), "null");
    ctn_val *a = ctn_val_int(1), *b = ctn_val_num(1.0);
    CHECK(!ctn_val_equal(a, b));
    ctn_val_unref(a);
    ctn_val_unref(b);
}

TEST(strings_are_counted_and_escaped) {
    check_json(ctn_val_str("a\0b", 3), "\"a\\u0000b\"");
    check_json(ctn_val_cstr("q\"\\\n\t\r\x01"), "\"q\\\"\\\\\\n\\t\\r\\u0001\"");
    /* Valid UTF-8 passes through; a stray byte, an overlong form and a surrogate become
     * U+FFFD. */
    check_json(ctn_val_cstr("\xC3\xA9\xE2\x82\xAC"), "\"\xC3\xA9\xE2\x82\xAC\"");
    check_json(ctn_val_cstr("x\xFFy\xC0\xAFz\xED\xA0\x80"),
               "\"x\xEF\xBF\xBDy\xEF\xBF\xBD\xEF\xBF\xBDz\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
    ctn_val *s = ctn_val_str("a\0b", 3);
    CHECK_EQ_INT(ctn_val_len(s), 3);
    size_t n = 0;
    char *t = ctn_val_text(s, &n);
    CHECK_EQ_INT(n, 3);
    CHECK(t != NULL && memcmp(t, "a\0b", 3) == 0);
    free(t);
    ctn_val_unref(s);
}

TEST(objects_keep_insertion_order_and_replace_in_place) {
    ctn_val *o = ctn_val_obj();
    CHECK_EQ_INT(ctn_val_set(o, "b", ctn_val_int(1)), 0);
    CHECK_EQ_INT(ctn_val_set(o, "a", ctn_val_int(2)), 0);
    CHECK_EQ_INT(ctn_val_set(o, "b", ctn_val_cstr("x")), 0);
    CHECK_EQ_INT(ctn_val_len(o), 2);
    CHECK(ctn_val_get(o, "a") != NULL && ctn_val_get(o, "a")->u.i == 2);
    CHECK(ctn_val_get(o, "zz") == NULL);
    /* A key with a NUL in it is its own key. */
    CHECK_EQ_INT(ctn_val_setk(o, "a\0c", 3, ctn_val_null()), 0);
    CHECK_EQ_INT(ctn_val_len(o), 3);
    check_json(o, "{\"b\":\"x\",\"a\":2,\"a\\u0000c\":null}");
}

TEST(pretty_printing_and_documents) {
    ctn_val *m = ctn_val_obj();
    ctn_val_set(m, "source", ctn_val_cstr("a.md"));
    ctn_val *d = ctn_val_doc("text", 4, m);
    CHECK(d != NULL);
    CHECK(ctn_val_get(d, "source") != NULL); /* a document's get looks in its metadata */
    char *j = ctn_val_to_json(d, 2);
    CHECK_STR(j, "{\n  \"page_content\": \"text\",\n  \"metadata\": {\n    \"source\": \"a.md\"\n  "
                 "}\n}");
    free(j);
    size_t n = 0;
    char *t = ctn_val_text(d, &n);
    CHECK_STR(t, "text");
    free(t);
    ctn_val *a = ctn_val_arr();
    ctn_val_push(a, d);
    ctn_val_push(a, ctn_val_arr());
    check_json(a, "[{\"page_content\":\"text\",\"metadata\":{\"source\":\"a.md\"}},[]]");
    /* A document's metadata must be an object. */
    CHECK(ctn_val_doc("x", 1, ctn_val_int(3)) == NULL);
}

TEST(copies_are_deep_and_equal) {
    ctn_val *o = ctn_val_obj();
    ctn_val *a = ctn_val_arr();
    ctn_val_push(a, ctn_val_num(2.5));
    ctn_val_push(a, ctn_val_doc("d", 1, NULL));
    ctn_val_set(o, "list", a);
    ctn_val_set(o, "n", ctn_val_int(-3));
    ctn_val *c = ctn_val_copy(o);
    CHECK(ctn_val_equal(o, c));
    ctn_val_push(ctn_val_get(c, "list"), ctn_val_null());
    CHECK(!ctn_val_equal(o, c));
    CHECK_EQ_INT(ctn_val_len(ctn_val_get(o, "list")), 2);
    /* Key order does not count for equality. */
    ctn_val *p = ctn_val_obj(), *q = ctn_val_obj();
    ctn_val_set(p, "x", ctn_val_int(1));
    ctn_val_set(p, "y", ctn_val_int(2));
    ctn_val_set(q, "y", ctn_val_int(2));
    ctn_val_set(q, "x", ctn_val_int(1));
    CHECK(ctn_val_equal(p, q));
    ctn_val_unref(p);
    ctn_val_unref(q);
    ctn_val_unref(o);
    ctn_val_unref(c);
}

TEST(bad_calls_release_what_they_took) {
    /* Pushing into a non-array, setting on a non-object or pushing NULL fail cleanly and
     * release the value (ASan's leak check would see it otherwise). */
    ctn_val *n = ctn_val_int(1);
    CHECK_EQ_INT(ctn_val_push(n, ctn_val_cstr("x")), CTN_EINVAL);
    CHECK_EQ_INT(ctn_val_set(n, "k", ctn_val_cstr("x")), CTN_EINVAL);
    ctn_val *a = ctn_val_arr();
    CHECK_EQ_INT(ctn_val_push(a, NULL), CTN_ENOMEM);
    CHECK_EQ_INT(ctn_val_len(a), 0);
    CHECK(ctn_val_at(a, 0) == NULL);
    CHECK(ctn_val_get(a, "k") == NULL);
    ctn_val_unref(a);
    ctn_val_unref(n);
    /* Shared references: the value lives until the last one goes. */
    ctn_val *s = ctn_val_cstr("shared");
    ctn_val *o = ctn_val_obj();
    ctn_val_set(o, "s", ctn_val_ref(s));
    ctn_val_unref(o);
    CHECK_STR(s->u.str.p, "shared");
    ctn_val_unref(s);
}

int main(void) {
    RUN(scalars_keep_their_kind);
    RUN(strings_are_counted_and_escaped);
    RUN(objects_keep_insertion_order_and_replace_in_place);
    RUN(pretty_printing_and_documents);
    RUN(copies_are_deep_and_equal);
    RUN(bad_calls_release_what_they_took);
    return test_summary();
}
