/*
 * JSON Schema (engine/json_schema.c): each feature of the subset becomes a grammar
 * (engine/grammar.c) that accepts and rejects the texts it should, checked by feeding bytes
 * through a grammar state; integer bounds are checked on every integer of a range; the
 * validator agrees with the grammar on every case and names the path and keyword of what
 * fails; refusals name the schema path and the keyword; allocation failures anywhere in
 * converting and validating are clean. The correctness point of issue 20: on a
 * random-weight model (whose unconstrained output is noise) every generation under each of
 * a suite of schemas, sampled at temperature 1 with several seeds, ends, parses with cJSON
 * and validates.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "gen.h"
#include "grammar.h"
#include "json_schema.h"
#include "model.h"
#include "randmodel.h"
#include "str.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- helpers ------------------------------------------------------------------------------ */

/* The compiled grammar of a schema, or NULL (having said why). */
static ctn_grammar *grammar_of(const char *schema) {
    char *gbnf = NULL, err[512];
    if (ctn_json_schema_to_gbnf(schema, strlen(schema), &gbnf, err, sizeof err) != 0) {
        printf("  %s\n    %s\n", schema, err);
        return NULL;
    }
    ctn_grammar *g = NULL;
    if (ctn_grammar_new(&g, gbnf, err, sizeof err) != 0)
        printf("  %s\n    %s\n%s", schema, err, gbnf);
    free(gbnf);
    return g;
}

/* Whether the grammar takes text whole. */
static int accepts(const ctn_grammar *g, const char *text) {
    ctn_grammar_state *st;
    if (ctn_grammar_state_new(&st, g) != 0) return -1;
    const int rc = ctn_grammar_accept(st, text, strlen(text), true);
    const int ok = rc == 0 && ctn_grammar_complete(st);
    ctn_grammar_state_free(st);
    return ok;
}

static int validate(const char *schema, const char *text, char *err, size_t errlen) {
    return ctn_json_schema_validate(schema, strlen(schema), text, strlen(text), err, errlen);
}

typedef struct {
    const char *schema, *text;
    int ok; /* 1: accepted; 0: rejected; 2: rejected by the grammar, which is stricter here,
             * and valid for the validator (as JSON Schema has it) */
} gcase;

/* Each text is accepted by the schema's grammar exactly when ok is 1; every accepted text
 * also validates, and every rejected one does not unless ok is 2. */
static void check_cases(const gcase *cs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ctn_grammar *g = grammar_of(cs[i].schema);
        CHECK(g != NULL);
        if (g == NULL) continue;
        const int a = accepts(g, cs[i].text);
        char err[300] = "";
        const int v = validate(cs[i].schema, cs[i].text, err, sizeof err);
        if (a != (cs[i].ok == 1) || (v == 0) != (cs[i].ok != 0)) {
            char *gbnf = NULL;
            ctn_json_schema_to_gbnf(cs[i].schema, strlen(cs[i].schema), &gbnf, err + 150, 150);
            printf("  case %zu: %s\n    text %s: grammar %d, validator %d (%s), expected %d\n%s", i,
                   cs[i].schema, cs[i].text, a, v, err, cs[i].ok, gbnf ? gbnf : "");
            free(gbnf);
            CHECK(0);
        }
        ctn_grammar_free(g);
    }
}

/* ---- the converter, feature by feature ------------------------------------------------------ */

TEST(anyof_oneof_are_alternatives) {
    static const gcase cs[] = {
        {"{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}", "\"x\"", 1},
        {"{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}", "null", 1},
        {"{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}", "1", 0},
        {"{\"oneOf\":[{\"type\":\"integer\",\"maximum\":3},{\"const\":\"k\"}],\"title\":\"t\"}",
         "3", 1},
        {"{\"oneOf\":[{\"type\":\"integer\",\"maximum\":3},{\"const\":\"k\"}]}", "\"k\"", 1},
        {"{\"oneOf\":[{\"type\":\"integer\",\"maximum\":3},{\"const\":\"k\"}]}", "4", 0},
        {"{\"type\":\"object\",\"properties\":{\"v\":{\"anyOf\":[{\"type\":\"boolean\"},"
         "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"maxItems\":1}]}},"
         "\"required\":[\"v\"]}",
         "{\"v\": [7]}", 1},
        {"{\"type\":\"object\",\"properties\":{\"v\":{\"anyOf\":[{\"type\":\"boolean\"},"
         "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"maxItems\":1}]}},"
         "\"required\":[\"v\"]}",
         "{\"v\": [7, 8]}", 0},
    };
    check_cases(cs, sizeof cs / sizeof *cs);
}

TEST(allof_merges_object_schemas) {
    static const char *const S =
        "{\"$defs\":{\"base\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":"
        "\"integer\"}},\"required\":[\"id\"]}},"
        "\"allOf\":[{\"$ref\":\"#/$defs/base\"},{\"properties\":{\"tag\":{\"type\":\"string\"}}"
        ",\"required\":[\"tag\"]},{\"properties\":{\"note\":{\"type\":\"null\"}}}]}";
    static const gcase cs[] = {
        {S, "{\"id\": 1, \"tag\": \"a\"}", 1},
        {S, "{\"id\": 1, \"tag\": \"a\", \"note\": null}", 1},
        {S, "{\"id\": 1}", 0},
        {S, "{\"tag\": \"a\"}", 0},
        {S, "{\"id\": 1, \"tag\": \"a\", \"x\": 2}", 0},
        {"{\"properties\":{\"a\":{\"type\":\"boolean\"}},\"allOf\":[{\"required\":[\"a\"]}]}",
         "{\"a\": true}", 1},
        {"{\"properties\":{\"a\":{\"type\":\"boolean\"}},\"allOf\":[{\"required\":[\"a\"]}]}", "{}",
         0},
    };
    check_cases(cs, sizeof cs / sizeof *cs);
}

TEST(refs_to_defs_definitions_and_the_root) {
    static const char *const TREE =
        "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
        "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},"
        "\"required\":[\"v\"]}},\"$ref\":\"#/$defs/node\"}";
    static const char *const LIST =
        "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"},\"next\":{\"anyOf\":"
        "[{\"$ref\":\"#\"},{\"type\":\"null\"}]}},\"required\":[\"n\",\"next\"]}";
    static const gcase cs[] = {
        {TREE, "{\"v\": 1}", 1},
        {TREE, "{\"v\": 1, \"kids\": [{\"v\": 2, \"kids\": [{\"v\": 3}]}, {\"v\": 4}]}", 1},
        {TREE, "{\"v\": 1, \"kids\": [{\"kids\": []}]}", 0},
        {LIST, "{\"n\": 1, \"next\": {\"n\": 2, \"next\": null}}", 1},
        {LIST, "{\"n\": 1, \"next\": {\"n\": 2}}", 0},
        {"{\"definitions\":{\"a~b/c\":{\"enum\":[1,2]}},\"type\":\"array\",\"items\":"
         "{\"$ref\":\"#/definitions/a~0b~1c\"}}",
         "[1, 2, 1]", 1},
        {"{\"definitions\":{\"a~b/c\":{\"enum\":[1,2]}},\"type\":\"array\",\"items\":"
         "{\"$ref\":\"#/definitions/a~0b~1c\"}}",
         "[3]", 0},
        {"{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"type\":\"boolean\"}},"
         "\"$ref\":\"#/$defs/a\"}",
         "false", 1},
    };
    check_cases(cs, sizeof cs / sizeof *cs);
}

TEST(patterns_are_matched_whole) {
#define P(re) "{\"type\":\"string\",\"pattern\":\"" re "\"}"
    static const gcase cs[] = {
        {P("^[0-9]{3}-[0-9]{4}$"), "\"555-1234\"", 1},
        {P("^[0-9]{3}-[0-9]{4}$"), "\"555-12345\"", 0},
        {P("^[0-9]{3}-[0-9]{4}$"), "\"55-1234\"", 0},
        {P("^(foo|ba[rz])+$"), "\"foobazbar\"", 1},
        {P("^(foo|ba[rz])+$"), "\"\"", 0},
        {P("^(foo|ba[rz])+$"), "\"bax\"", 0},
        {P("(?:ab)?c*"), "\"abccc\"", 1}, /* no anchors: matched whole all the same */
        {P("(?:ab)?c*"), "\"xabc\"", 0},
        {P("^a.c$"),
         "\"a\xce\xb1"
         "c\"",
         1},
        {P("^a.c$"), "\"a\\nc\"", 0},
        {P("^a\\\\.b$"), "\"a.b\"", 1},
        {P("^a\\\\.b$"), "\"axb\"", 0},
        {P("^q\\\"\\\\\\\\$"), "\"q\\\"\\\\\"", 1}, /* a quote and a backslash: escaped */
        {P("^\\\\d\\\\w\\\\s?[^a-z]$"), "\"7_ Q\"", 1},
        {P("^\\\\d\\\\w\\\\s?[^a-z]$"), "\"7_q\"", 0},
        {P("^[\\\\u03b1-\\\\u03c9]{2}\\\\x41$"),
         "\"\xce\xb2\xce\xb3"
         "A\"",
         1},
        {P("^[\\\\u03b1-\\\\u03c9]{2}\\\\x41$"), "\"ab\"", 0},
        {P("^x{2,}y{0,1}z{1}$"), "\"xxxxz\"", 1},
        {P("^x{2,}y{0,1}z{1}$"), "\"xz\"", 0},
        {P("^[a\\\\-]+\\\\$$"), "\"a-a$\"", 1},
        {P("^(a|)b$"), "\"b\"", 1},
        {P("^$"), "\"\"", 1},
        {P("^$"), "\"a\"", 0},
        {P("^[^\\\"]{1,2}$"), "\"\\\\\"", 1}, /* [^"] takes a backslash, written \\ */
        {P("^\\t$"), "\"\\t\"", 1},
    };
#undef P
    check_cases(cs, sizeof cs / sizeof *cs);
}

/* A string as JSON writes it here: raw, but for the short escapes of '"', '\\', \\n, \\t. */
static void json_quote(const char *s, char *out, size_t cap) {
    size_t k = 0;
    out[k++] = '"';
    for (; *s && k + 4 < cap; s++) {
        const char *e = *s == '"'    ? "\\\""
                        : *s == '\\' ? "\\\\"
                        : *s == '\n' ? "\\n"
                        : *s == '\t' ? "\\t"
                                     : NULL;
        if (e != NULL) {
            memcpy(out + k, e, 2);
            k += 2;
        } else {
            out[k++] = *s;
        }
    }
    out[k++] = '"';
    out[k] = 0;
}

/* On random strings over an alphabet that JSON writes raw or by a short escape, the grammar
 * of a pattern accepts exactly the strings that PCRE2 (through the validator) matches whole. */
TEST(patterns_agree_with_pcre2_on_random_strings) {
    static const char *const PATS[] = {
        "^[0-9]{3}-[0-9]{4}$",
        "^(foo|ba[rz])+$",
        "(?:ab)?c*",
        "^a.c$",
        "^a\\\\.b$",
        "^\\\\d\\\\w\\\\s?[^a-z]$",
        "^x{2,}y{0,1}z{1}$",
        "^[a\\\\-]+\\\\$$",
        "^(a|)b$",
        "^[^\\\"]{1,2}$",
        "^(a|b)*?c$",
        "^[\xce\xb1-\xcf\x89]+a?$",
        "^\\\\D\\\\S\\\\W$",
        "^(?:a|b|)(?:c|)$",
        "^[\\\\\\\\\\\"]+$",
        "^.{2,3}$",
        "^(ab|a)(bc|c)?$",
        "^[^\\\\d\\\\s]*$",
        "^\\\\t?\\\\n[\\\\x20-\\\\x22]$",
        "^(x|y{2})+z?$",
    };
    static const char *const ALPHA[] = {
        "a",  "b",  "c", "x",  "y",  "z", "f", "o",        "r",        "1",        "7", "-", ".",
        "\"", "\\", " ", "\n", "\t", "_", "Z", "\xce\xb1", "\xcf\x89", "\xc3\xa9", "$", "!", "#"};
    uint64_t rng = 5;
    int total = 0, matched = 0;
    for (size_t k = 0; k < sizeof PATS / sizeof *PATS; k++) {
        char schema[200];
        snprintf(schema, sizeof schema, "{\"type\":\"string\",\"pattern\":\"%s\"}", PATS[k]);
        ctn_grammar *g = grammar_of(schema);
        CHECK(g != NULL);
        if (g == NULL) continue;
        int bad = 0;
        for (int t = 0; t < 3000 && bad < 3; t++) {
            char s[64] = "", q[160], err[300];
            const int len = (int)(rng_next(&rng) % 7);
            for (int i = 0; i < len; i++)
                strcat(s, ALPHA[rng_next(&rng) % (sizeof ALPHA / sizeof *ALPHA)]);
            json_quote(s, q, sizeof q);
            const int a = accepts(g, q);
            const int v = validate(schema, q, err, sizeof err) == 0;
            total++;
            matched += a;
            if (a != v) {
                printf("  %s on %s: grammar %d, validator %d (%s)\n", PATS[k], q, a, v, err);
                bad++;
                CHECK(0);
            }
        }
        ctn_grammar_free(g);
    }
    printf("  %d random strings against %zu patterns, %d matched, the grammar and PCRE2 agree\n",
           total, sizeof PATS / sizeof *PATS, matched);
    CHECK(matched > 200);
}

TEST(formats_date_time_datetime_uuid) {
#define F(f) "{\"type\":\"string\",\"format\":\"" f "\"}"
    static const gcase cs[] = {
        {F("date"), "\"2024-02-29\"", 1},
        {F("date"), "\"2024-13-01\"", 0},
        {F("date"), "\"2024-1-01\"", 0},
        {F("time"), "\"23:59:60Z\"", 0},
        {F("time"), "\"23:59:59Z\"", 1},
        {F("time"), "\"08:30:00.123+02:00\"", 1},
        {F("time"), "\"08:30:00\"", 0},
        {F("date-time"), "\"2024-05-06T07:08:09Z\"", 1},
        {F("date-time"), "\"2024-05-06 07:08:09Z\"", 0},
        {F("uuid"), "\"123e4567-e89b-12d3-a456-426614174000\"", 1},
        {F("uuid"), "\"123e4567-e89b-12d3-a456-42661417400\"", 0},
        {"{\"format\":\"uuid\"}", "\"00000000-0000-0000-0000-00000000000A\"", 1},
    };
#undef F
    check_cases(cs, sizeof cs / sizeof *cs);
}

/* Every integer of [-1500, 1500] and some far ones, against each set of bounds. */
TEST(integer_bounds_on_every_integer) {
    static const struct {
        const char *kw;
        double lo, hi; /* the integers allowed: lo..hi (+-1e18: none) */
    } B[] = {
        {"\"minimum\":0", 0, 1e18},
        {"\"minimum\":1", 1, 1e18},
        {"\"minimum\":7", 7, 1e18},
        {"\"minimum\":10", 10, 1e18},
        {"\"minimum\":42", 42, 1e18},
        {"\"minimum\":999", 999, 1e18},
        {"\"minimum\":-1", -1, 1e18},
        {"\"minimum\":-37", -37, 1e18},
        {"\"maximum\":0", -1e18, 0},
        {"\"maximum\":9", -1e18, 9},
        {"\"maximum\":305", -1e18, 305},
        {"\"maximum\":-1", -1e18, -1},
        {"\"maximum\":-120", -1e18, -120},
        {"\"minimum\":0,\"maximum\":9", 0, 9},
        {"\"minimum\":3,\"maximum\":3", 3, 3},
        {"\"minimum\":5,\"maximum\":1234", 5, 1234},
        {"\"minimum\":-250,\"maximum\":1234", -250, 1234},
        {"\"minimum\":-1000,\"maximum\":-10", -1000, -10},
        {"\"minimum\":-9,\"maximum\":0", -9, 0},
        {"\"minimum\":100,\"maximum\":199", 100, 199},
        {"\"minimum\":101,\"maximum\":1099", 101, 1099},
        {"\"exclusiveMinimum\":0,\"exclusiveMaximum\":100", 1, 99},
        {"\"exclusiveMinimum\":-1.5,\"maximum\":2.5", -1, 2},
        {"\"minimum\":0.5,\"exclusiveMaximum\":7", 1, 6},
        {"\"minimum\":2,\"exclusiveMinimum\":5", 6, 1e18},
    };
    int checked = 0;
    for (size_t k = 0; k < sizeof B / sizeof *B; k++) {
        char schema[200];
        snprintf(schema, sizeof schema, "{\"type\":\"integer\",%s}", B[k].kw);
        ctn_grammar *g = grammar_of(schema);
        CHECK(g != NULL);
        if (g == NULL) continue;
        int bad = 0;
        static const long long far[] = {
            9999, 10000, 123456, 999999999999999LL, -99999, -1000000000000000LL};
        for (int i = -1500; i <= 1500 + (int)(sizeof far / sizeof *far) && bad < 3; i++) {
            const long long v = i <= 1500 ? i : far[i - 1501];
            char text[40], err[200];
            snprintf(text, sizeof text, "%lld", v);
            const int want = (double)v >= B[k].lo && (double)v <= B[k].hi;
            const int a = accepts(g, text);
            const int val = validate(schema, text, err, sizeof err) == 0;
            if (a != want || val != want) {
                printf("  %s: %s: grammar %d, validator %d, expected %d\n", schema, text, a, val,
                       want);
                bad++;
                CHECK(0);
            }
            checked++;
        }
        CHECK_EQ_INT(accepts(g, "-0"), 0); /* the digit ranges never write -0 */
        CHECK_EQ_INT(accepts(g, "007"), 0);
        CHECK_EQ_INT(accepts(g, "1.0"), 0);
        ctn_grammar_free(g);
    }
    printf("  %d integers checked against %zu sets of bounds\n", checked, sizeof B / sizeof *B);
}

TEST(additional_properties_after_the_declared_ones) {
    static const char *const S =
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"ab\":{\"type\":"
        "\"boolean\"}},\"required\":[\"a\"],\"additionalProperties\":{\"type\":\"string\"}}";
    static const gcase cs[] = {
        {S, "{\"a\": 1}", 1},
        {S, "{\"a\": 1, \"x\": \"s\", \"y\": \"t\"}", 1},
        {S, "{\"a\": 1, \"ab\": true, \"abc\": \"s\"}", 1},
        {S, "{\"a\": 1, \"\": \"s\"}", 1},
        {S, "{\"a\": 1, \"x\": 2}", 0},
        {S, "{\"a\": 1, \"ab\": \"s\"}", 0}, /* a declared name takes its own schema */
        {"{\"type\":\"object\",\"additionalProperties\":{\"enum\":[1,2]}}", "{\"k\": 2, \"j\": 1}",
         1},
        {"{\"type\":\"object\",\"additionalProperties\":{\"enum\":[1,2]}}", "{\"k\": 3}", 0},
        {"{\"properties\":{\"p\":{\"type\":\"null\"}},\"additionalProperties\":true}",
         "{\"p\": null, \"q\": [1, {\"r\": \"s\"}]}", 1},
        {"{\"properties\":{\"p\":{\"type\":\"null\"}},\"additionalProperties\":true}", "{\"p\": 1}",
         0},
        {"{\"properties\":{\"p\":{\"type\":\"null\"}},\"additionalProperties\":false}",
         "{\"p\": null, \"q\": 1}", 0},
        {"{\"type\":\"object\",\"additionalProperties\":false}", "{}", 1},
        {"{\"type\":\"object\",\"additionalProperties\":false}", "{\"a\": 1}", 0},
    };
    check_cases(cs, sizeof cs / sizeof *cs);
}

TEST(prefix_items_are_tuples) {
    static const char *const T3 =
        "{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"},"
        "{\"type\":\"boolean\"}]}";
    static const char *const TI =
        "{\"type\":\"array\",\"prefixItems\":[{\"const\":\"x\"}],\"items\":{\"type\":"
        "\"integer\"},\"minItems\":2,\"maxItems\":4}";
    static const gcase cs[] = {
        {T3, "[\"a\", 1, true]", 1},
        {T3, "[\"a\", 1]", 2}, /* as long as its prefixItems, as llama.cpp writes tuples */
        {T3, "[1, \"a\", true]", 0},
        {TI, "[\"x\", 1]", 1},
        {TI, "[\"x\", 1, 2, 3]", 1},
        {TI, "[\"x\"]", 0},
        {TI, "[\"x\", 1, 2, 3, 4]", 0},
        {TI, "[\"y\", 1]", 0},
        {"{\"prefixItems\":[{\"type\":\"null\"},{\"type\":\"boolean\"}],\"minItems\":0}", "[]", 1},
        {"{\"prefixItems\":[{\"type\":\"null\"},{\"type\":\"boolean\"}],\"minItems\":0}", "[null]",
         1},
        {"{\"prefixItems\":[{\"type\":\"null\"},{\"type\":\"boolean\"}],\"minItems\":0}",
         "[null, true]", 1},
        {"{\"prefixItems\":[{\"type\":\"null\"}],\"items\":false,\"minItems\":1}", "[null]", 1},
        {"{\"prefixItems\":[{\"type\":\"null\"}],\"items\":false,\"minItems\":1}", "[null, 1]", 0},
        {"{\"prefixItems\":[{\"type\":\"null\"}],\"maxItems\":3}", "[null, 1, \"a\"]", 1},
        {"{\"prefixItems\":[{\"type\":\"null\"},{\"type\":\"null\"}],\"maxItems\":1}", "[null]", 1},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2}", "[1, 2, 3]", 1},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2}", "[1]", 0},
    };
    check_cases(cs, sizeof cs / sizeof *cs);
}

/* A type beside enum or const narrows the values (JSON Schema checks both); nothing else may
 * stand beside them. */
TEST(enum_values_of_the_type_beside_them) {
    static const gcase cs[] = {
        {"{\"type\":\"string\",\"enum\":[\"a\",1,null]}", "\"a\"", 1},
        {"{\"type\":\"string\",\"enum\":[\"a\",1,null]}", "1", 0},
        {"{\"type\":[\"integer\",\"null\"],\"enum\":[1.5,2,null,\"x\"]}", "2", 1},
        {"{\"type\":[\"integer\",\"null\"],\"enum\":[1.5,2,null,\"x\"]}", "null", 1},
        {"{\"type\":[\"integer\",\"null\"],\"enum\":[1.5,2,null,\"x\"]}", "1.5", 0},
        {"{\"const\":[1],\"type\":\"array\",\"title\":\"t\"}", "[1]", 1},
    };
    check_cases(cs, sizeof cs / sizeof *cs);
    char err[300];
    CHECK_EQ_INT(validate("{\"type\":\"string\",\"enum\":[\"a\",1]}", "1", err, sizeof err),
                 CTN_EINVAL);
    CHECK_STR(err, "at /: 1 is a number, not string");
}

TEST(string_lengths_count_characters) {
    static const gcase cs[] = {
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"\xc3\xa9\xe4\xb8\xad\"", 1},
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"\\u00e9\\n\\\"\"", 1},
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"\xf0\x9f\x98\x80\"", 0},
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"abcd\"", 0},
    };
    check_cases(cs, sizeof cs / sizeof *cs);
}

/* ---- the validator ------------------------------------------------------------------------ */

TEST(validator_names_the_path_and_keyword) {
    static const char *const S =
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":3},"
        "\"age\":{\"type\":\"integer\",\"minimum\":18},\"tags\":{\"type\":\"array\",\"items\":"
        "{\"enum\":[\"a\",\"b\"]},\"maxItems\":2},\"when\":{\"type\":\"string\",\"format\":"
        "\"date\"},\"code\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}$\"}},"
        "\"required\":[\"name\"]}";
    static const struct {
        const char *schema, *json, *msg;
    } cs[] = {
        {S, "{\"name\":\"Al\",\"age\":17}", "at /age: 17 is less than the minimum 18"},
        {S, "{\"name\":\"Al\",\"age\":18.5}", "at /age: 18.5 is not an integer"},
        {S, "{\"name\":\"Alice\"}",
         "at /name: the string of 5 characters is longer than the maxLength 3"},
        {S, "{\"age\":20}", "at /: the required property 'name' is missing"},
        {S, "{\"name\":\"Al\",\"x\":1}",
         "at /: the property 'x' is not allowed (no 'additionalProperties')"},
        {S, "{\"name\":\"Al\",\"tags\":[\"a\",\"c\"]}",
         "at /tags/1: \"c\" is not one of the enum's values"},
        {S, "{\"name\":\"Al\",\"tags\":[\"a\",\"b\",\"a\"]}",
         "at /tags: 3 items are more than the maxItems 2"},
        {S, "{\"name\":\"Al\",\"when\":\"2024-02-30x\"}",
         "at /when: \"2024-02-30x\" is not a date (format)"},
        {S, "{\"name\":\"Al\",\"code\":\"abc\"}",
         "at /code: \"abc\" does not match the pattern ^[A-Z]{2}$"},
        {S, "[1]", "at /: [1] is an array, not object"},
        {S, "{\"name\":\"Al\",}", "not JSON at byte 13: near '}'"},
        {S, "{\"name\":", "not JSON at byte 7: near ':'"},
        {"{\"type\":\"integer\",\"exclusiveMaximum\":5}", "5",
         "at /: 5 is not less than the exclusive maximum 5"},
        {"{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}", "1",
         "at /: no alternative of 'anyOf' matches (the first: at /: 1 is a number, not string)"},
        {"{\"const\":{\"a\":[1]}}", "{\"a\":[2]}", "at /: the value is not the const {\"a\":[1]}"},
        {"{\"prefixItems\":[true],\"items\":false}", "[1,2]",
         "at /1: no item may come here ('items' is false)"},
        {"{\"properties\":{\"a/b~\":{\"type\":\"null\"}}}", "{\"a/b~\":0}",
         "at /a~1b~0: 0 is a number, not null"},
        {"{\"type\":\"strin\"}", "1", "schema at /: unknown type 'strin'"},
        {"{\"minimum\":1}", "1", "schema at /: 'minimum' needs 'type' \"integer\""},
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        char err[300] = "";
        const int rc = validate(cs[i].schema, cs[i].json, err, sizeof err);
        CHECK_EQ_INT(rc, CTN_EINVAL);
        if (strcmp(err, cs[i].msg) != 0) {
            printf("  case %zu:\n    got  %s\n    want %s\n", i, err, cs[i].msg);
            CHECK(0);
        }
    }
    char err[200];
    CHECK_EQ_INT(validate(S,
                          "{\"name\":\"Al\",\"age\":18,\"tags\":[\"b\"],\"when\":\"2000-01-01\","
                          "\"code\":\"QQ\"}",
                          err, sizeof err),
                 0);
    CHECK_EQ_INT(validate("true", "[1,{}]", err, sizeof err), 0);
    CHECK_EQ_INT(ctn_json_schema_validate("{}", 2, "1 x", 3, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_json_schema_validate("{}", 2, "\"\xff\"", 3, err, sizeof err), CTN_EINVAL);
    CHECK_STR(err, "not JSON: not valid UTF-8");
}

/* ---- refusals ------------------------------------------------------------------------------ */

TEST(refusals_name_the_path_and_keyword) {
    static const struct {
        const char *schema, *msg;
    } bad[] = {
        {"{\"$ref\":\"https://example.com/s.json\"}",
         "schema at /: '$ref' to 'https://example.com/s.json' (another document) is not "
         "supported; only '#', '#/$defs/NAME' and '#/definitions/NAME'"},
        {"{\"$ref\":\"#/properties/a\"}",
         "schema at /: '$ref' '#/properties/a' is not supported; only '#', '#/$defs/NAME' and "
         "'#/definitions/NAME'"},
        {"{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":\"null\"}]}},"
         "\"$ref\":\"#/$defs/a\"}",
         "schema at /$defs/a/anyOf/0: '$ref' '#/$defs/a' refers to itself with no object or "
         "array between (left recursion)"},
        {"{\"anyOf\":[{\"$ref\":\"#\"}]}",
         "schema at /anyOf/0: '$ref' '#' refers to itself with no object or array between "
         "(left recursion)"},
        {"{\"$ref\":\"#/$defs/a\",\"type\":\"object\",\"$defs\":{\"a\":{}}}",
         "schema at /: '$ref' beside 'type' is not supported"},
        {"{\"type\":\"string\",\"anyOf\":[{\"maxLength\":2}]}",
         "schema at /: 'anyOf' beside 'type' is not supported"},
        {"{\"anyOf\":[]}", "schema at /: 'anyOf' must be a non-empty array"},
        {"{\"allOf\":[{\"type\":\"string\"}]}",
         "schema at /allOf/0: 'allOf' can only merge object schemas (properties, required): "
         "'type' is not supported in it"},
        {"{\"allOf\":[{\"properties\":{\"a\":{\"type\":\"string\"}}},{\"properties\":{\"a\":"
         "{\"type\":\"integer\"}}}]}",
         "schema at /allOf/1: 'allOf' gives property 'a' two different schemas"},
        {"{\"type\":\"string\",\"pattern\":\"^a(?=b)$\"}",
         "schema at /: 'pattern' at byte 2: lookaround, named groups and flags ('(?') are not "
         "supported"},
        {"{\"type\":\"string\",\"pattern\":\"^(a)\\\\1$\"}",
         "schema at /: 'pattern' at byte 4: the escape '\\1' is not supported"},
        {"{\"type\":\"string\",\"pattern\":\"^a|^b$\"}",
         "schema at /: 'pattern' at byte 3: an anchor inside the pattern (only a leading '^' "
         "and a final '$')"},
        {"{\"type\":\"string\",\"pattern\":\"[a-\"}",
         "schema at /: 'pattern' at byte 0: a character class that is never closed"},
        {"{\"type\":\"string\",\"pattern\":\"(a\"}",
         "schema at /: 'pattern' at byte 0: a '(' that is never closed"},
        {"{\"type\":\"string\",\"pattern\":\"a)\"}",
         "schema at /: 'pattern' at byte 1: a ')' with no '(' before it"},
        {"{\"type\":\"string\",\"pattern\":\"(a?)*\"}",
         "schema at /: 'pattern' at byte 0: a repetition of something that can match the "
         "empty string"},
        {"{\"type\":\"string\",\"pattern\":\"a{3,1}\"}",
         "schema at /: 'pattern' at byte 1: a repetition {3,1} whose maximum is below its "
         "minimum"},
        {"{\"type\":\"string\",\"pattern\":\"a++\"}",
         "schema at /: 'pattern' at byte 2: possessive repetition is not supported"},
        {"{\"type\":\"string\",\"pattern\":\"[z-a]\"}",
         "schema at /: 'pattern' at byte 1: a range that runs backwards"},
        {"{\"type\":\"string\",\"pattern\":\"\\\\bx\"}",
         "schema at /: 'pattern' at byte 0: the escape '\\b' is not supported"},
        {"{\"type\":\"string\",\"pattern\":\"^a$\",\"minLength\":1}",
         "schema at /: 'pattern' beside 'minLength' is not supported"},
        {"{\"type\":\"string\",\"format\":\"email\"}",
         "schema at /: 'format' \"email\" is not supported (only date, time, date-time, uuid)"},
        {"{\"type\":\"integer\",\"format\":\"int32\"}",
         "schema at /: 'format' \"int32\" is not supported (only date, time, date-time, uuid)"},
        {"{\"type\":\"number\",\"maximum\":1.5}",
         "schema at /: 'maximum' on type \"number\" is not supported (bounds are for type "
         "\"integer\")"},
        {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}",
         "schema at /: no integer lies between the lower bound 5 and the upper bound 4"},
        {"{\"type\":\"integer\",\"minimum\":1e16}",
         "schema at /: 'minimum' must be within -1e15 to 1e15 for an integer"},
        {"{\"type\":\"integer\",\"exclusiveMinimum\":true}",
         "schema at /: 'exclusiveMinimum' must be a number (the boolean form of draft 4 is not "
         "supported)"},
        {"{\"type\":\"array\",\"prefixItems\":[{},{}],\"items\":false,\"minItems\":3}",
         "schema at /: 'minItems' 3 is more than the 2 elements the array may have"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"prefixItems\":"
         "[{\"type\":\"strin\"}]}}}",
         "schema at /properties/a/prefixItems/0: unknown type 'strin'"},
        {"{\"type\":\"object\",\"additionalProperties\":{\"uniqueItems\":true}}",
         "schema at /additionalProperties: 'uniqueItems' is not supported"},
        {"{\"$defs\":{\"x\":{\"type\":\"wrong\"}},\"properties\":{\"p\":{\"$ref\":"
         "\"#/$defs/x\"}}}",
         "schema at /$defs/x: unknown type 'wrong'"},
        {"{\"$defs\":3}", "schema at /: '$defs' must be an object"},
        /* found by fuzz_json_validate: the grammar took both, the validator the first */
        {"{\"properties\":{\"c\":{\"type\":\"null\"},\"c\":{\"type\":\"integer\"}}}",
         "schema at /: 'properties' names 'c' twice"},
        {"{\"enum\":[\"ab\"],\"minLength\":2}",
         "schema at /: 'enum' beside 'minLength' is not supported"},
        {"{\"const\":1,\"enum\":[1]}", "schema at /: 'const' beside 'enum' is not supported"},
        {"{\"type\":[\"null\",\"nul\"],\"enum\":[null]}", "schema at /: unknown type 'nul'"},
        {"{\"type\":[],\"enum\":[null]}",
         "schema at /: 'type' must be a type name or a non-empty list of them"},
        {"{\"type\":\"string\",\"const\":1}",
         "schema at /: no value of 'const' is of the 'type' beside it"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *gbnf = (char *)"x", err[300] = "";
        const int rc =
            ctn_json_schema_to_gbnf(bad[i].schema, strlen(bad[i].schema), &gbnf, err, sizeof err);
        CHECK_EQ_INT(rc, CTN_EINVAL);
        CHECK(gbnf == NULL);
        if (strcmp(err, bad[i].msg) != 0) {
            printf("  case %zu:\n    got  %s\n    want %s\n", i, err, bad[i].msg);
            CHECK(0);
        }
        /* the validator refuses the schema with the same words */
        char verr[300] = "";
        CHECK_EQ_INT(validate(bad[i].schema, "null", verr, sizeof verr), CTN_EINVAL);
        CHECK_STR(verr, bad[i].msg);
    }
}

/* The repetitions a grammar expands are counted across the schema: past the budget the schema
 * is refused by the keyword that crossed it, below it the grammar compiles (grammar.c takes
 * a million elements). */
TEST(repetition_budget) {
    for (int n = 49; n <= 51; n += 2) {
        ctn_strbuf b = {0};
        ctn_sb_puts(&b, "{\"type\":\"object\",\"properties\":{");
        for (int i = 0; i < n; i++) {
            char t[80];
            snprintf(t, sizeof t, "%s\"p%d\":{\"type\":\"string\",\"maxLength\":2000}",
                     i ? "," : "", i);
            ctn_sb_puts(&b, t);
        }
        ctn_sb_puts(&b, "}}");
        char *schema = ctn_sb_take(&b), *gbnf = NULL, err[300] = "";
        CHECK(schema != NULL);
        if (schema == NULL) return;
        const int rc = ctn_json_schema_to_gbnf(schema, strlen(schema), &gbnf, err, sizeof err);
        if (n == 49) {
            CHECK_EQ_INT(rc, 0);
            ctn_grammar *g = NULL;
            CHECK(gbnf != NULL && ctn_grammar_new(&g, gbnf, err, sizeof err) == 0);
            ctn_grammar_free(g);
        } else {
            CHECK_EQ_INT(rc, CTN_EINVAL);
            CHECK_STR(err, "schema at /properties/p50: 'maxLength' makes the grammar too large "
                           "once repetitions are expanded (over 100000)");
        }
        free(gbnf);
        free(schema);
    }
}

/* An enumeration of thousands of values is a prefix tree: its grammar starts within the
 * matcher's limit of ways to parse, and takes exactly its values (each once, however often
 * written). */
TEST(long_enums_are_prefix_trees) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "{\"enum\":[");
    for (int i = 0; i < 3000; i++) {
        char v[40];
        snprintf(v, sizeof v, "%s%d,\"k%d\"", i ? "," : "", i * 7, i % 500);
        ctn_sb_puts(&b, v);
    }
    ctn_sb_puts(&b, ",\"\",\"\xce\xb1\",\"\xce\xb2\",\"k\"]}");
    char *schema = ctn_sb_take(&b);
    CHECK(schema != NULL);
    if (schema == NULL) return;
    ctn_grammar *g = grammar_of(schema);
    CHECK(g != NULL);
    if (g != NULL) {
        static const struct {
            const char *text;
            int ok;
        } cs[] = {{"0", 1},
                  {"7", 1},
                  {"20993", 1},
                  {"20994", 0},
                  {"8", 0},
                  {"\"k499\"", 1},
                  {"\"k500\"", 0},
                  {"\"k\"", 1},
                  {"\"\"", 1},
                  {"\"\xce\xb1\"", 1},
                  {"\"\xce\xb3\"", 0},
                  {"\"k4\"", 1},
                  {"70", 1},
                  {"71", 0}};
        for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
            char err[200];
            CHECK_EQ_INT(accepts(g, cs[i].text), cs[i].ok);
            CHECK_EQ_INT(validate(schema, cs[i].text, err, sizeof err) == 0, cs[i].ok);
        }
    }
    ctn_grammar_free(g);
    free(schema);
    /* a type named again is one alternative */
    const char *tl = "{\"type\":[\"null\",\"null\",\"boolean\",\"null\"]}";
    char *gbnf = NULL, err[200];
    CHECK_EQ_INT(ctn_json_schema_to_gbnf(tl, strlen(tl), &gbnf, err, sizeof err), 0);
    CHECK(gbnf != NULL && strncmp(gbnf, "root ::= null | boolean\n", 24) == 0);
    free(gbnf);
}

/* ---- allocation failures -------------------------------------------------------------------- */

static const char *const RICH =
    "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\","
    "\"minimum\":-5,\"maximum\":300},\"k\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"},"
    "\"maxItems\":2}},\"required\":[\"v\"],\"additionalProperties\":{\"type\":\"string\","
    "\"pattern\":\"^[a-c]+(x|\\\\d{2})?$\"}}},"
    "\"type\":\"object\",\"properties\":{\"root\":{\"$ref\":\"#/$defs/n\"},\"when\":{\"format\":"
    "\"date-time\"},\"t\":{\"prefixItems\":[{\"type\":\"null\"},{\"enum\":[1,\"a\"]}]},"
    "\"u\":{\"anyOf\":[{\"type\":\"boolean\"},{\"allOf\":[{\"properties\":{\"q\":{}}}]}]}},"
    "\"required\":[\"root\",\"when\"]}";
static const char *const RICH_OK =
    "{\"root\": {\"v\": 3, \"k\": [{\"v\": -5, \"ab\": \"ccx\"}], \"zz\": \"a12\"}, "
    "\"when\": \"2020-01-02T03:04:05.678-01:00\", \"t\": [null, \"a\"], \"u\": {\"q\": 1}}";

TEST(allocation_failures_in_converting_and_validating) {
    char *want = NULL, err[300];
    CHECK_EQ_INT(ctn_json_schema_to_gbnf(RICH, strlen(RICH), &want, err, sizeof err), 0);
    CHECK_EQ_INT(validate(RICH, RICH_OK, err, sizeof err), 0);
    ctn_grammar *g = grammar_of(RICH);
    CHECK(g != NULL && accepts(g, RICH_OK) == 1);
    ctn_grammar_free(g);
    if (want == NULL) return;
    int hits[2] = {0, 0};
    for (int once = 0; once < 2; once++)
        for (int what = 0; what < 2; what++)
            for (long n = 0; n < 100000; n++) {
                const long before = ctn__alloc_n_failed;
                ctn__alloc_fail_once = once;
                ctn__alloc_fail_after = n;
                char *gbnf = NULL;
                const int rc =
                    what == 0 ? ctn_json_schema_to_gbnf(RICH, strlen(RICH), &gbnf, err, sizeof err)
                              : validate(RICH, RICH_OK, err, sizeof err);
                ctn__alloc_fail_after = -1;
                ctn__alloc_fail_once = false;
                const bool hit = ctn__alloc_n_failed != before;
                if (!hit) {
                    CHECK_EQ_INT(rc, 0);
                    if (what == 0) CHECK(gbnf != NULL && strcmp(gbnf, want) == 0);
                    free(gbnf);
                    break;
                }
                hits[what]++;
                if (rc != CTN_ENOMEM && !(once && rc == 0)) {
                    printf("  %s, allocation %ld failed%s: rc %d (%s)\n",
                           what ? "validating" : "converting", n, once ? " once" : "", rc, err);
                    CHECK(0);
                }
                if (rc == CTN_ENOMEM) CHECK(gbnf == NULL);
                if (rc == 0 && what == 0 && (gbnf == NULL || strcmp(gbnf, want) != 0)) {
                    printf("  allocation %ld failed once: a different grammar\n%s", n,
                           gbnf ? gbnf : "(none)\n");
                    CHECK(0);
                }
                free(gbnf);
            }
    printf("  %d failed allocations converting, %d validating\n", hits[0], hits[1]);
    CHECK(hits[0] > 20 && hits[1] > 20);
    free(want);
}

/* ---- generations on a random-weight model --------------------------------------------------- */

/* Schemas whose sentences are bounded or end with high probability at each step, so that a
 * generation of random tokens under them ends well inside max_tokens. */
static const char *const SUITE[] = {
    /* 0 nested objects, integer bounds, lengths */
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},\"address\":{\"type\":"
    "\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":6},"
    "\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},\"required\":[\"city\"]}},"
    "\"required\":[\"name\",\"age\"]}",
    /* 1 enum */
    "{\"enum\":[\"red\",\"green\",\"blue\",null,42]}",
    /* 2 array of objects */
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":"
    "\"integer\",\"minimum\":1,\"maximum\":999},\"ok\":{\"type\":\"boolean\"}},\"required\":"
    "[\"id\"]},\"maxItems\":3}",
    /* 3 anyOf */
    "{\"anyOf\":[{\"type\":\"string\",\"maxLength\":5},{\"type\":\"null\"},{\"type\":"
    "\"boolean\"}]}",
    /* 4 oneOf of integer ranges */
    "{\"oneOf\":[{\"type\":\"integer\",\"minimum\":-5,\"maximum\":-1},{\"type\":\"integer\","
    "\"minimum\":10,\"maximum\":20}]}",
    /* 5 allOf */
    "{\"allOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":0,"
    "\"maximum\":9}},\"required\":[\"a\"]},{\"properties\":{\"b\":{\"enum\":[\"x\",\"y\"]}}}]}",
    /* 6 refs to $defs */
    "{\"$defs\":{\"pt\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\","
    "\"minimum\":-10,\"maximum\":10},\"y\":{\"type\":\"integer\",\"minimum\":-10,\"maximum\":10}"
    "},\"required\":[\"x\",\"y\"]}},\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/pt\"},"
    "\"minItems\":1,\"maxItems\":3}",
    /* 7 refs to definitions */
    "{\"definitions\":{\"flag\":{\"type\":\"boolean\"}},\"type\":\"object\",\"properties\":"
    "{\"on\":{\"$ref\":\"#/definitions/flag\"},\"off\":{\"$ref\":\"#/definitions/flag\"}},"
    "\"required\":[\"on\",\"off\"]}",
    /* 8 a recursive tree */
    "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\","
    "\"minimum\":0,\"maximum\":9},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":"
    "\"#/$defs/node\"},\"maxItems\":1}},\"required\":[\"v\"]}},\"$ref\":\"#/$defs/node\"}",
    /* 9 a list through the root */
    "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":"
    "3},\"next\":{\"anyOf\":[{\"type\":\"null\"},{\"$ref\":\"#\"}]}},\"required\":[\"n\","
    "\"next\"]}",
    /* 10 pattern: a phone number */
    "{\"type\":\"string\",\"pattern\":\"^[0-9]{3}-[0-9]{4}$\"}",
    /* 11 pattern: groups, alternation, + */
    "{\"type\":\"string\",\"pattern\":\"^(foo|ba[rz])+(-[A-Z]{2})?$\"}",
    /* 12 pattern: escapes, dot, a quote and a backslash */
    "{\"type\":\"string\",\"pattern\":\"^a\\\\.b.{0,3}\\\"\\\\\\\\x?$\"}",
    /* 13 pattern: \\d \\w \\s and a negated class */
    "{\"type\":\"string\",\"pattern\":\"^\\\\d{2}\\\\w{1,3}\\\\s?[^a-z]{1,2}$\"}",
    /* 14..17 formats */
    "{\"type\":\"string\",\"format\":\"date\"}",
    "{\"type\":\"string\",\"format\":\"time\"}",
    "{\"type\":\"object\",\"properties\":{\"at\":{\"type\":\"string\",\"format\":\"date-time\"}},"
    "\"required\":[\"at\"]}",
    "{\"type\":\"array\",\"items\":{\"type\":\"string\",\"format\":\"uuid\"},\"minItems\":1,"
    "\"maxItems\":2}",
    /* 18..21 integer bounds */
    "{\"type\":\"integer\",\"minimum\":-250,\"maximum\":1234}",
    "{\"type\":\"integer\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":100}",
    "{\"type\":\"integer\",\"minimum\":42}",
    "{\"type\":\"integer\",\"maximum\":-7}",
    /* 22..24 tuples */
    "{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\",\"maxLength\":3},{\"type\":"
    "\"integer\",\"minimum\":0,\"maximum\":5},{\"type\":\"boolean\"}]}",
    "{\"type\":\"array\",\"prefixItems\":[{\"const\":\"x\"}],\"items\":{\"type\":\"integer\","
    "\"minimum\":0,\"maximum\":9},\"minItems\":2,\"maxItems\":4}",
    "{\"prefixItems\":[{\"type\":\"null\"},{\"type\":\"boolean\"}],\"minItems\":0}",
    /* 25..27 additionalProperties */
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":"
    "99}},\"additionalProperties\":{\"type\":\"boolean\"}}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"null\"},\"ab\":{\"type\":\"null\"}},"
    "\"required\":[\"a\"],\"additionalProperties\":{\"enum\":[1,2,3]}}",
    "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\",\"minimum\":0,"
    "\"maximum\":1}}",
    /* 28 const and a mixed enum */
    "{\"type\":\"object\",\"properties\":{\"v\":{\"const\":{\"k\":[1,true]}},\"w\":{\"enum\":"
    "[[1],{\"a\":null},\"s\",1.5]}},\"required\":[\"v\",\"w\"]}",
    /* 29 a type list with bounds */
    "{\"type\":[\"integer\",\"null\"],\"minimum\":1,\"maximum\":3}",
    /* 30 a discriminated union of objects */
    "{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"a\"},\"x\":{\"type\":"
    "\"integer\",\"minimum\":0,\"maximum\":9}},\"required\":[\"kind\",\"x\"]},{\"type\":"
    "\"object\",\"properties\":{\"kind\":{\"const\":\"b\"},\"s\":{\"type\":\"string\","
    "\"maxLength\":4}},\"required\":[\"kind\"]}]}",
    /* 31 characters, not bytes */
    "{\"type\":\"string\",\"minLength\":2,\"maxLength\":4}",
    /* 32 a class of Greek letters */
    "{\"type\":\"string\",\"pattern\":\"^[\\u03b1-\\u03c9]{1,3}$\"}",
    /* 33 allOf through a reference */
    "{\"$defs\":{\"base\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\","
    "\"minimum\":0,\"maximum\":9}},\"required\":[\"id\"]}},\"allOf\":[{\"$ref\":"
    "\"#/$defs/base\"},{\"properties\":{\"tag\":{\"type\":\"string\",\"maxLength\":3}},"
    "\"required\":[\"tag\"]}]}",
    /* 34 an array of enums */
    "{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",null,1.5]},\"minItems\":2,"
    "\"maxItems\":5}",
    /* 35 optional properties only */
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"boolean\"},\"b\":{\"type\":\"null\"},"
    "\"c\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":1},\"d\":{\"type\":\"string\","
    "\"maxLength\":2}}}",
};
#define N_SUITE ((int)(sizeof SUITE / sizeof *SUITE))

/* Vocabulary pieces beside the 256 byte tokens: JSON's punctuation in runs, words, and
 * characters of two to four bytes (with pieces that split them). */
static const char *const FRAGS[] = {
    "{\"",
    "\"}",
    "\":",
    "\",",
    ",\xe2\x96\x81\"",
    "\xe2\x96\x81",
    "[",
    "]",
    "true",
    "false",
    "null",
    "12",
    "-1",
    "0.",
    "e5",
    "\\\"",
    "\\n",
    "\\u00",
    "ab",
    "foo",
    "bar",
    "T0",
    ":00",
    "20",
    "-0",
    "\xc3\xa9",
    "\xce\xb1",
    "\xce\xb2\xce\xb3",
    "\xe4\xb8\xad",
    "\xf0\x9f\x98\x80",
    "\xf0\x9f",
    "\x98\x80",
    "\xce",
    "id",
    "kind",
    "\"a\"",
    "\"x\"",
};
#define N_FRAGS ((int)(sizeof FRAGS / sizeof *FRAGS))

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    ctn_vocab *v;
    char path[256];
    const char *texts[256 + N_FRAGS];
    char bytes[256][8];
} smodel;

static int smodel_load(smodel *L, uint64_t seed) {
    char err[512];
    memset(L, 0, sizeof *L);
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if (b == 0x0A) continue; /* the model's own <0x0A> */
        snprintf(L->bytes[b], sizeof L->bytes[b], "<0x%02X>", b);
        L->texts[n++] = L->bytes[b];
    }
    for (int i = 0; i < N_FRAGS; i++)
        L->texts[n++] = FRAGS[i];
    randmodel_shape sh = {CTN_TYPE_F32,    64, 4, 2, 128, 2, false, 4 + n, 10000, 1e-5f, seed,
                          RANDMODEL_LLAMA, 0};
    const char *tmp = getenv("TMPDIR");
    snprintf(L->path, sizeof L->path, "%s/test_json_schema-%d.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    if (randmodel_write_tokens(&sh, L->texts, false, L->path, err, sizeof err) < 0 ||
        ctn_gguf_open(&L->g, L->path, err, sizeof err) < 0 ||
        ctn_model_load(&L->m, L->g, err, sizeof err) < 0 ||
        ctn_vocab_load(&L->v, L->g, err, sizeof err) < 0) {
        printf("  %s: %s\n", L->path, err);
        return -1;
    }
    return 0;
}

static void smodel_free(smodel *L) {
    ctn_vocab_free(L->v);
    ctn_model_free(L->m);
    ctn_gguf_free(L->g);
    unlink(L->path);
}

#define MAX_TOKENS 4000

typedef struct {
    char text[8 * MAX_TOKENS]; /* pieces of at most a few bytes each */
    size_t len;
    int n_tokens, done, code;
    ctn_finish finish;
    char error[200];
} sout;

static void s_on_token(void *ud, const ctn_gen_token *t) {
    sout *o = ud;
    o->n_tokens++;
    if (t->text != NULL && o->len + t->len < sizeof o->text) {
        memcpy(o->text + o->len, t->text, t->len);
        o->len += t->len;
    }
}

static void s_on_done(void *ud, int64_t id, const ctn_gen_result *r) {
    (void)id;
    sout *o = ud;
    o->done++;
    o->finish = r->finish;
    o->code = r->code;
    snprintf(o->error, sizeof o->error, "%s", r->error ? r->error : "");
    if (o->len + r->text_len < sizeof o->text) {
        memcpy(o->text + o->len, r->text, r->text_len);
        o->len += r->text_len;
    }
}

static int n_seeds(void) {
    const char *e = getenv("CTN_SCHEMA_SEEDS");
    if (e != NULL && atoi(e) > 0) return atoi(e);
    return UNDER_ASAN ? 8 : 16;
}

TEST(random_model_generations_parse_and_validate) {
    smodel L;
    if (smodel_load(&L, 91) < 0) {
        CHECK(0);
        return;
    }
    const int seeds = n_seeds();
    enum { MAX_SEEDS = 64 };
    static sout out[MAX_SEEDS];
    int runs = 0, good = 0, tokens = 0, longest = 0, longest_at = -1;
    for (int k = 0; k < N_SUITE; k++) {
        char *gbnf = NULL, err[300];
        const int crc = ctn_json_schema_to_gbnf(SUITE[k], strlen(SUITE[k]), &gbnf, err, sizeof err);
        if (crc != 0) printf("  schema %d: %s\n", k, err);
        CHECK_EQ_INT(crc, 0);
        if (gbnf == NULL) continue;
        ctn_gen_params p = {0};
        p.fwd.n_threads = 1;
        p.fwd.n_ctx = MAX_TOKENS + 16;
        p.manual = true;
        ctn_gen *e = NULL;
        if (ctn_gen_new(&e, L.m, L.v, &p, err, sizeof err) < 0) {
            printf("  engine: %s\n", err);
            CHECK(0);
            free(gbnf);
            break;
        }
        const int ns = seeds < MAX_SEEDS ? seeds : MAX_SEEDS;
        for (int i = 0; i < ns; i++) {
            ctn_gen_request r = ctn_gen_request_default();
            int32_t prompt[8];
            uint64_t rng = 1000 * (uint64_t)k + (uint64_t)i;
            const int np = 1 + (int)(rng_next(&rng) % 8);
            prompt[0] = 1;
            for (int j = 1; j < np; j++)
                prompt[j] = 4 + (int32_t)(rng_next(&rng) % 250);
            r.prompt_ids = prompt;
            r.n_prompt_ids = np;
            r.max_tokens = MAX_TOKENS;
            r.sampling.temp = 1.0f;
            r.sampling.top_k = 0;
            r.sampling.top_p = 1.0f;
            r.sampling.min_p = 0.0f;
            r.sampling.seed = 7919 * (uint64_t)k + (uint64_t)i + 1;
            r.grammar = gbnf;
            r.on_token = s_on_token;
            r.on_done = s_on_done;
            r.ud = &out[i];
            memset(&out[i], 0, sizeof out[i]);
            if (ctn_gen_submit(e, &r, err, sizeof err) < 0) {
                printf("  schema %d: submit: %s\n", k, err);
                CHECK(0);
            }
        }
        for (int s = 0; s < 100000 && ctn_gen_step(e, NULL) > 0; s++) {
        }
        for (int i = 0; i < ns; i++) {
            sout *o = &out[i];
            runs++;
            tokens += o->n_tokens;
            if (o->n_tokens > longest) {
                longest = o->n_tokens;
                longest_at = k;
            }
            const bool ended =
                o->done == 1 && (o->finish == CTN_FINISH_EOS || o->finish == CTN_FINISH_STOP);
            cJSON *j = ended ? cJSON_ParseWithLength(o->text, o->len) : NULL;
            const int vrc = j ? ctn_json_schema_validate(SUITE[k], strlen(SUITE[k]), o->text,
                                                         o->len, err, sizeof err)
                              : -1;
            if (vrc == 0) {
                good++;
                const char *dump = getenv("CTN_SCHEMA_DUMP"); /* seeds for fuzz_json_validate */
                FILE *f = NULL;
                if (dump != NULL) {
                    char fn[512];
                    snprintf(fn, sizeof fn, "%s/gen-%02d-%02d", dump, k, i);
                    f = fopen(fn, "wb");
                }
                if (f != NULL) {
                    fwrite(SUITE[k], 1, strlen(SUITE[k]) + 1, f); /* with its NUL */
                    fwrite(o->text, 1, o->len, f);
                    fclose(f);
                }
                if (getenv("CTN_SCHEMA_SHOW") != NULL)
                    printf("  %d/%d: %.*s%s\n", k, i, (int)(o->len > 160 ? 160 : o->len), o->text,
                           o->len > 160 ? "..." : "");
            } else {
                printf("  schema %d, seed %d: %s after %d tokens: \"%.*s\"%s%s\n", k, i,
                       !ended
                           ? (o->finish == CTN_FINISH_LENGTH ? "stopped at max_tokens" : o->error)
                       : j == NULL ? "not JSON"
                                   : err,
                       o->n_tokens, (int)(o->len > 300 ? 300 : o->len), o->text,
                       o->len > 300 ? "..." : "", "");
                CHECK(0);
            }
            cJSON_Delete(j);
        }
        ctn_gen_free(e);
        free(gbnf);
    }
    printf("  %d schemas x %d seeds: %d of %d generations (temperature 1) ended, parse and "
           "validate; %d tokens, the longest %d (schema %d; max_tokens %d)\n",
           N_SUITE, seeds, good, runs, tokens, longest, longest_at, MAX_TOKENS);
    CHECK(N_SUITE >= 30);
    CHECK_EQ_INT(good, runs);
    smodel_free(&L);
}

int main(void) {
    RUN(anyof_oneof_are_alternatives);
    RUN(allof_merges_object_schemas);
    RUN(refs_to_defs_definitions_and_the_root);
    RUN(patterns_are_matched_whole);
    RUN(patterns_agree_with_pcre2_on_random_strings);
    RUN(formats_date_time_datetime_uuid);
    RUN(integer_bounds_on_every_integer);
    RUN(additional_properties_after_the_declared_ones);
    RUN(prefix_items_are_tuples);
    RUN(enum_values_of_the_type_beside_them);
    RUN(string_lengths_count_characters);
    RUN(validator_names_the_path_and_keyword);
    RUN(refusals_name_the_path_and_keyword);
    RUN(repetition_budget);
    RUN(long_enums_are_prefix_trees);
    RUN(allocation_failures_in_converting_and_validating);
    RUN(random_model_generations_parse_and_validate);
    return test_summary();
}
