/*
 * Tool calling by grammar (stdlib/tools.h): tools are checked (names, object schemas that
 * catena converts), the reply schema's grammar takes exactly tool calls with arguments
 * valid for their tool (and answers when allowed), and the prompt names every tool.
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "grammar.h"
#include "json_schema.h"
#include "test.h"
#include "tools.h"

static const ctn_tool TOOLS[] = {
    {"weather", "The weather in a city.",
     "{\"type\":\"object\",\"properties\":{\"city\":{\"enum\":[\"Paris\",\"Oslo\"]},"
     "\"days\":{\"type\":\"integer\"}},\"required\":[\"city\",\"days\"]}"},
    {"now", NULL, "{\"type\":\"object\",\"properties\":{}}"},
};

/* Whether the grammar of schema takes text whole. */
static int takes(const char *schema, const char *text) {
    char *gbnf = NULL, err[512];
    if (ctn_json_schema_to_gbnf(schema, strlen(schema), &gbnf, err, sizeof err) < 0) return -1;
    ctn_grammar *g = NULL;
    ctn_grammar_state *st = NULL;
    int ok = ctn_grammar_new(&g, gbnf, err, sizeof err) == 0 && ctn_grammar_state_new(&st, g) == 0 &&
             ctn_grammar_accept(st, text, strlen(text), true) == 0 && ctn_grammar_complete(st);
    ctn_grammar_state_free(st);
    ctn_grammar_free(g);
    free(gbnf);
    return ok;
}

TEST(checks_tools) {
    char err[512];
    for (size_t i = 0; i < 2; i++)
        CHECK_EQ_INT(ctn_tool_check(&TOOLS[i], err, sizeof err), 0);
    ctn_tool t = {"bad name", NULL, "{\"type\":\"object\"}"};
    CHECK_EQ_INT(ctn_tool_check(&t, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "'bad name'");
    t = (ctn_tool){"", NULL, "{\"type\":\"object\"}"};
    CHECK_EQ_INT(ctn_tool_check(&t, err, sizeof err), CTN_EINVAL);
    t = (ctn_tool){"a", NULL, "{\"type\":\"string\"}"};
    CHECK_EQ_INT(ctn_tool_check(&t, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "must describe an object");
    t = (ctn_tool){"a", NULL, "{\"type\":"};
    CHECK_EQ_INT(ctn_tool_check(&t, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "not JSON");
    t = (ctn_tool){"a", NULL, "{\"type\":\"object\",\"not\":{}}"};
    CHECK_EQ_INT(ctn_tool_check(&t, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "tool a: ");
    CHECK_CONTAINS(err, "not");
    t = (ctn_tool){"a", NULL, NULL};
    CHECK_EQ_INT(ctn_tool_check(&t, err, sizeof err), CTN_EINVAL);
}

TEST(reply_grammar_takes_calls_valid_for_their_tool) {
    char *any = ctn_tools_reply_schema(TOOLS, 2, true, 0);
    char *calls = ctn_tools_reply_schema(TOOLS, 2, false, 0);
    CHECK(any != NULL && calls != NULL);
    if (any == NULL || calls == NULL) return;
    const char *call = "{\"tool_calls\":[{\"name\":\"weather\",\"arguments\":{\"city\":\"Oslo\",\"days\":3}}]}";
    const char *two = "{\"tool_calls\":[{\"name\":\"now\",\"arguments\":{}},{\"name\":\"weather\","
                      "\"arguments\":{\"city\":\"Paris\",\"days\":1}}]}";
    const char *answer = "{\"response\":\"It is sunny.\"}";
    CHECK_EQ_INT(takes(any, call), 1);
    CHECK_EQ_INT(takes(any, two), 1);
    CHECK_EQ_INT(takes(any, answer), 1);
    CHECK_EQ_INT(takes(calls, call), 1);
    CHECK_EQ_INT(takes(calls, answer), 0); /* required: no answer */
    /* Arguments outside the tool's schema, an unknown tool, no call at all. */
    CHECK_EQ_INT(takes(any, "{\"tool_calls\":[{\"name\":\"weather\",\"arguments\":{\"city\":\"Rome\",\"days\":3}}]}"), 0);
    CHECK_EQ_INT(takes(any, "{\"tool_calls\":[{\"name\":\"now\",\"arguments\":{\"city\":\"Oslo\",\"days\":3}}]}"), 0);
    CHECK_EQ_INT(takes(any, "{\"tool_calls\":[{\"name\":\"rain\",\"arguments\":{}}]}"), 0);
    CHECK_EQ_INT(takes(any, "{\"tool_calls\":[]}"), 0);
    CHECK_EQ_INT(takes(any, "The weather is fine."), 0);
    /* What the grammar takes, the validator takes. */
    char err[512];
    CHECK_EQ_INT(ctn_json_schema_validate(any, strlen(any), two, strlen(two), err, sizeof err), 0);
    CHECK_EQ_INT(ctn_json_schema_validate(calls, strlen(calls), answer, strlen(answer), err, sizeof err),
                 CTN_EINVAL);
    free(any);
    free(calls);
    /* One tool: its calls only. */
    char *one = ctn_tools_reply_schema(&TOOLS[1], 1, false, 1);
    CHECK_EQ_INT(takes(one, "{\"tool_calls\":[{\"name\":\"now\",\"arguments\":{}}]}"), 1);
    CHECK_EQ_INT(takes(one, "{\"tool_calls\":[{\"name\":\"now\",\"arguments\":{}},{\"name\":\"now\",\"arguments\":{}}]}"), 0);
    CHECK_EQ_INT(takes(one, call), 0);
    free(one);
}

TEST(prompt_and_results) {
    char *p = ctn_tools_prompt(TOOLS, 2, true);
    CHECK(p != NULL);
    CHECK_CONTAINS(p, "- weather: The weather in a city.");
    CHECK_CONTAINS(p, "- now\n");
    CHECK_CONTAINS(p, TOOLS[0].schema);
    CHECK_CONTAINS(p, "{\"response\"");
    free(p);
    p = ctn_tools_prompt(TOOLS, 2, false);
    CHECK(p != NULL && strstr(p, "\"response\"") == NULL);
    free(p);
    p = ctn_tools_result_text("call_1", "sunny");
    CHECK_STR(p, "Result of the tool call call_1: sunny");
    free(p);
    p = ctn_tools_result_text(NULL, "sunny");
    CHECK_STR(p, "Result of the tool call: sunny");
    free(p);
}

TEST(allocation_failures) {
    int done = 0;
    for (int n = 0; n < 200 && !done; n++) {
        ctn__alloc_fail_after = n;
        char *a = ctn_tools_reply_schema(TOOLS, 2, true, 3);
        char *b = ctn_tools_prompt(TOOLS, 2, true);
        char *c = ctn_tools_result_text("x", "y");
        ctn__alloc_fail_after = -1;
        done = a != NULL && b != NULL && c != NULL;
        free(a);
        free(b);
        free(c);
    }
    CHECK(done);
}

int main(void) {
    RUN(checks_tools);
    RUN(reply_grammar_takes_calls_valid_for_their_tool);
    RUN(prompt_and_results);
    RUN(allocation_failures);
    return test_summary();
}
