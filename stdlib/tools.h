/*
 * Tool calling by grammar: what a model is told about its tools, and the JSON Schema its
 * reply is decoded under, so that every reply is either tool calls, each naming a tool with
 * arguments valid for that tool's schema, or (when the model may answer) an answer. The Lua
 * module's bind_tools and catena serve's `tools` both use these, so a chain and the server
 * prompt and parse alike.
 *
 *     ctn_tool t = {"weather", "The weather in a city.",
 *                   "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
 *                   "\"required\":[\"city\"]}"};
 *     char err[256];
 *     if (ctn_tool_check(&t, err, sizeof err) < 0) puts(err);
 *     char *schema = ctn_tools_reply_schema(&t, 1, true, 0);   // decode under its grammar
 *     char *system = ctn_tools_prompt(&t, 1, true);         // a system message's text
 *     free(schema), free(system);
 *
 * The reply is one JSON object: {"tool_calls": [{"name": NAME, "arguments": {...}}, ...]}
 * (one call or more), or, when the model may answer, {"response": "text"}. Strings are
 * malloc'd through the allocation hook; NULL when memory runs out.
 */
#ifndef CTN_TOOLS_H
#define CTN_TOOLS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *name;        /* 1 to 64 letters, digits, '_' or '-' (the OpenAI API's rule) */
    const char *description; /* may be NULL */
    const char *schema;      /* JSON Schema of the arguments: an object schema */
} ctn_tool;

/* 0, or CTN_EINVAL naming what is wrong with t (its name, or a schema that is not JSON, not
 * an object schema, or one catena cannot decode under: the converter's message). */
int ctn_tool_check(const ctn_tool *t, char *err, size_t errcap);
/* The schema of a reply to the n tools (checked), answers allowed when may_answer, at most
 * max_calls calls in one reply (0: no limit; 1: OpenAI's parallel_tool_calls false). */
char *ctn_tools_reply_schema(const ctn_tool *t, size_t n, bool may_answer, int max_calls);
/* The system text that names the tools, their arguments' schemas and the reply's form. */
char *ctn_tools_prompt(const ctn_tool *t, size_t n, bool may_answer);
/* The user-turn text that gives the model a tool's result (call_id may be NULL). */
char *ctn_tools_result_text(const char *call_id, const char *content);

#endif
