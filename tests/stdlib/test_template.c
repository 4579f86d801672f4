/*
 * Prompt templates (stdlib/template.h): variables and escaped braces, the parse errors with
 * their byte offsets, variable order, rendering of every kind of value, the single-input
 * rule, and missing variables.
 */
#include <stdlib.h>

#include "error.h"
#include "template.h"
#include "test.h"
#include "value.h"

static ctn_tmpl *parse(const char *s) {
    char err[160] = "";
    ctn_tmpl *t = ctn_tmpl_parse(s, strlen(s), err, sizeof err);
    if (t == NULL) printf("  parse of \"%s\" failed: %s\n", s, err);
    return t;
}

static void check_render(const char *src, const ctn_val *vars, const char *want) {
    ctn_tmpl *t = parse(src);
    CHECK(t != NULL);
    char *out = NULL, err[160] = "";
    size_t len = 99;
    int rc = ctn_tmpl_render(t, vars, &out, &len, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    CHECK_STR(out, want);
    CHECK_EQ_INT(len, strlen(want));
    free(out);
    ctn_tmpl_free(t);
}

static void check_parse_err(const char *src, const char *want) {
    char err[160] = "";
    ctn_tmpl *t = ctn_tmpl_parse(src, strlen(src), err, sizeof err);
    CHECK(t == NULL);
    CHECK_CONTAINS(err, want);
    ctn_tmpl_free(t);
}

TEST(variables_and_literal_braces) {
    ctn_val *v = ctn_val_obj();
    ctn_val_set(v, "q", ctn_val_cstr("What is RoPE?"));
    ctn_val_set(v, "ctx_1", ctn_val_cstr("docs"));
    ctn_val_set(v, "a.b-c", ctn_val_cstr("dotted"));
    check_render("Q: {q}\nContext: {ctx_1}", v, "Q: What is RoPE?\nContext: docs");
    check_render("{q}{q}", v, "What is RoPE?What is RoPE?");
    check_render("{{q}} is {q}", v, "{q} is What is RoPE?");
    check_render("{{{q}}}", v, "{What is RoPE?}");
    check_render("}}{{", v, "}{");
    check_render("{a.b-c}", v, "dotted");
    check_render("", v, "");
    check_render("no variables", v, "no variables");
    check_render("{{\"json\": 1}}", v, "{\"json\": 1}");
    ctn_val_unref(v);
}

TEST(variable_names_in_order_of_first_use) {
    ctn_tmpl *t = parse("{b} {a} {b} {_c9} {{d}}");
    CHECK(t != NULL);
    CHECK_EQ_INT(ctn_tmpl_nvars(t), 3);
    CHECK_STR(ctn_tmpl_var(t, 0), "b");
    CHECK_STR(ctn_tmpl_var(t, 1), "a");
    CHECK_STR(ctn_tmpl_var(t, 2), "_c9");
    CHECK(ctn_tmpl_var(t, 3) == NULL);
    ctn_tmpl_free(t);
    CHECK_EQ_INT(ctn_tmpl_nvars(NULL), 0);
    ctn_tmpl_free(NULL);
}

TEST(parse_errors_name_the_byte) {
    check_parse_err("abc {name", "unmatched '{' at byte 4");
    check_parse_err("{", "unmatched '{' at byte 0");
    check_parse_err("a } b", "unmatched '}' at byte 2 (write '}}'");
    check_parse_err("{a}}", "unmatched '}' at byte 3");
    check_parse_err("x{}", "empty variable name '{}' at byte 1");
    check_parse_err("{a b}", "bad character ' ' in a variable name at byte 2");
    check_parse_err("{ a}", "bad character ' ' in a variable name at byte 1");
    check_parse_err("{9a}", "bad character '9' in a variable name at byte 1");
    check_parse_err("{x:>5}", "bad character ':' in a variable name at byte 2");
    check_parse_err("{x!r}", "bad character '!'");
    check_parse_err("{a{b}", "bad character '{' in a variable name at byte 2");
    check_parse_err("{\xC3\xA9}", "bad byte 0xC3 in a variable name at byte 1");
    /* A NUL inside the counted text is a byte like any other. */
    char err[160] = "";
    ctn_tmpl *t = ctn_tmpl_parse("a\0{b}", 5, err, sizeof err);
    CHECK(t != NULL && ctn_tmpl_nvars(t) == 1);
    ctn_val *v = ctn_val_cstr("B");
    char *out = NULL;
    size_t len = 0;
    CHECK_EQ_INT(ctn_tmpl_render(t, v, &out, &len, err, sizeof err), 0);
    CHECK(len == 3 && out != NULL && memcmp(out, "a\0B", 3) == 0);
    free(out);
    ctn_val_unref(v);
    ctn_tmpl_free(t);
}

TEST(values_render_as_text) {
    ctn_val *v = ctn_val_obj();
    ctn_val_set(v, "i", ctn_val_int(-7));
    ctn_val_set(v, "d", ctn_val_num(2.5));
    ctn_val_set(v, "b", ctn_val_bool(1));
    ctn_val_set(v, "n", ctn_val_null());
    ctn_val *arr = ctn_val_arr();
    ctn_val_push(arr, ctn_val_int(1));
    ctn_val_push(arr, ctn_val_cstr("x"));
    ctn_val_set(v, "a", arr);
    ctn_val_set(v, "doc", ctn_val_doc("page text", 9, NULL));
    check_render("{i}|{d}|{b}|{n}|{a}|{doc}", v, "-7|2.5|true|null|[1,\"x\"]|page text");
    ctn_val_unref(v);
}

TEST(single_variable_takes_a_non_object_input) {
    ctn_val *s = ctn_val_cstr("hello");
    check_render("Say: {text}!", s, "Say: hello!");
    check_render("{x} and {x}", s, "hello and hello");
    check_render("nothing to fill", s, "nothing to fill");
    ctn_val *d = ctn_val_doc("doc body", 8, NULL);
    check_render("<{page}>", d, "<doc body>");
    ctn_val_unref(d);
    /* Two variables need an object. */
    ctn_tmpl *t = parse("{a} {b}");
    char *out = (char *)1, err[160] = "";
    size_t len;
    CHECK_EQ_INT(ctn_tmpl_render(t, s, &out, &len, err, sizeof err), CTN_ETYPE);
    CHECK(out == NULL);
    CHECK_CONTAINS(err, "has 2 variables, so its input must be an object, not a string");
    ctn_tmpl_free(t);
    ctn_val_unref(s);
    /* An object input with one variable is looked up, not filled whole. */
    ctn_val *o = ctn_val_obj();
    ctn_val_set(o, "other", ctn_val_int(1));
    t = parse("{text}");
    CHECK_EQ_INT(ctn_tmpl_render(t, o, &out, &len, err, sizeof err), CTN_ENOENT);
    CHECK_STR(err, "missing variable 'text'");
    ctn_tmpl_free(t);
    ctn_val_unref(o);
}

TEST(missing_variables) {
    ctn_val *v = ctn_val_obj();
    ctn_val_set(v, "a", ctn_val_cstr("A"));
    ctn_tmpl *t = parse("{a} then {b} then {c}");
    char *out = (char *)1, err[160] = "";
    size_t len = 5;
    CHECK_EQ_INT(ctn_tmpl_render(t, v, &out, &len, err, sizeof err), CTN_ENOENT);
    CHECK_STR(err, "missing variable 'b'");
    CHECK(out == NULL && len == 0);
    CHECK_EQ_INT(ctn_tmpl_render(t, NULL, &out, &len, err, sizeof err), CTN_ENOENT);
    CHECK_STR(err, "missing variable 'a'");
    CHECK_EQ_INT(ctn_tmpl_render(NULL, v, &out, &len, err, sizeof err), CTN_EINVAL);
    ctn_tmpl_free(t);
    ctn_val_unref(v);
}

int main(void) {
    RUN(variables_and_literal_braces);
    RUN(variable_names_in_order_of_first_use);
    RUN(parse_errors_name_the_byte);
    RUN(values_render_as_text);
    RUN(single_variable_takes_a_non_object_input);
    RUN(missing_variables);
    return test_summary();
}
