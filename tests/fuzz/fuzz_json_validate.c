/*
 * libFuzzer target for the JSON Schema validator (engine/json_schema.c): the input is a
 * schema, a NUL byte, and a JSON text (without a NUL, the whole input is the schema and the
 * text is "null"). Any input is answered with 0 or CTN_EINVAL and a message that says which
 * side is at fault; and where the schema converts and its grammar (engine/grammar.c) accepts
 * the text whole, the text must validate: the validator agrees with the grammar.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "json_schema.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_json_validate: %s failed at line %d\n", #cond, __LINE__);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 8192) return 0;
    const char *schema = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    const size_t n = nul ? (size_t)(nul - data) : size;
    const char *json = nul ? (const char *)nul + 1 : "null";
    const size_t jn = nul ? size - n - 1 : 4;
    char err[300] = "";
    const int rc = ctn_json_schema_validate(schema, n, json, jn, err, sizeof err);
    CHECK(rc == 0 || rc == CTN_EINVAL);
    if (rc < 0)
        CHECK(strncmp(err, "at /", 4) == 0 || strncmp(err, "not JSON", 8) == 0 ||
              strncmp(err, "schema", 6) == 0);
    /* the grammar's sentences validate */
    char *gbnf = NULL, gerr[300];
    if (ctn_json_schema_to_gbnf(schema, n, &gbnf, gerr, sizeof gerr) != 0) {
        CHECK(rc == CTN_EINVAL && strcmp(err, gerr) == 0); /* refused with the same words */
        return 0;
    }
    ctn_grammar *g = NULL;
    CHECK(ctn_grammar_new(&g, gbnf, gerr, sizeof gerr) == 0);
    ctn_grammar_state *st;
    CHECK(ctn_grammar_state_new(&st, g) == 0);
    const int arc = ctn_grammar_accept(st, json, jn, true);
    if (arc == 0 && ctn_grammar_complete(st)) {
        if (rc != 0) fprintf(stderr, "grammar accepts, validator says: %s\n%s", err, gbnf);
        CHECK(rc == 0);
    }
    ctn_grammar_state_free(st);
    ctn_grammar_free(g);
    free(gbnf);
    return 0;
}
