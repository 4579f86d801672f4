/*
 * libFuzzer target for the JSON Schema to GBNF converter (engine/json_schema.c): any input is
 * refused with CTN_EINVAL and a message (which the validator gives too), or converted to a
 * grammar that compiles (engine/grammar.c) and has a state to start from.
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
            fprintf(stderr, "fuzz_json_schema: %s failed at line %d\n", #cond, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 8192) return 0;
    char *gbnf = NULL, err[300] = "";
    const int rc = ctn_json_schema_to_gbnf((const char *)data, size, &gbnf, err, sizeof err);
    char verr[300] = "";
    const int vrc =
        ctn_json_schema_validate((const char *)data, size, "null", 4, verr, sizeof verr);
    if (rc < 0) {
        CHECK(rc == CTN_EINVAL && gbnf == NULL && strncmp(err, "schema", 6) == 0);
        CHECK(vrc == CTN_EINVAL && strcmp(err, verr) == 0);
        return 0;
    }
    CHECK(vrc == 0 || (vrc == CTN_EINVAL && strncmp(verr, "at /", 4) == 0));
    ctn_grammar *g = NULL;
    const int grc = ctn_grammar_new(&g, gbnf, err, sizeof err);
    if (grc != 0) fprintf(stderr, "%s\n%s", err, gbnf);
    CHECK(grc == 0);
    ctn_grammar_state *st;
    CHECK(ctn_grammar_state_new(&st, g) == 0);
    ctn_grammar_state_free(st);
    ctn_grammar_free(g);
    free(gbnf);
    return 0;
}
