/*
 * The built-in components as chain nodes (chain.h custom nodes): prompts, chat prompts, the
 * model node over the shared engine (lm.h), the scorer node (candidate tokens' log-
 * probabilities after a prompt, through the same engine), and the output parsers. The Lua
 * module builds them; a C service can too.
 *
 *     ctn_node *p = ctn_prompt_node("Tell me about {topic}.", 22, err, sizeof err);
 *     ctn_node *m = ctn_model_node(lm, CTN_CHAT_UNKNOWN, NULL, NULL, NULL); // takes a reference
 *     ctn_node *s = ctn_parser_node(CTN_PARSER_STR, NULL, NULL, 0, err, sizeof err);
 *     ctn_node *chain = ctn_node_sequence((ctn_node *[]){p, m, s}, 3);
 *
 * Chat prompts produce a chat value: {"type": "chat", "messages": [{"role": r, "content":
 * c}, ...]}. The model node renders it with its chat template (the GGUF's, recognised by
 * family, a named family, or a caller's renderer) and generates; a string input is a plain
 * completion prompt.
 */
#ifndef CTN_COMPONENTS_H
#define CTN_COMPONENTS_H

#include <stdbool.h>
#include <stddef.h>

#include "chain.h"
#include "chat.h"
#include "lm.h"

/* A prompt from a template ({name} variables, {{ and }} for braces): its input is an object
 * of the variables (or, with one variable, any value). NULL with a message naming the
 * position when the template is bad. */
ctn_node *ctn_prompt_node(const char *tmpl, size_t n, char *err, size_t errcap);

/* One entry of a chat prompt: a role with a content template, or (role "placeholder") the
 * name of an input variable that holds a list of messages ({role, content} objects or
 * [role, content] pairs). */
typedef struct {
    const char *role;
    const char *content; /* template, or the placeholder's variable */
} ctn_chat_entry;

ctn_node *ctn_chat_prompt_node(const ctn_chat_entry *entries, size_t n, char *err, size_t errcap);

/* Renders messages (an array of {role, content}) into prompt text; returns 0 and a malloc'd
 * *out, or a CTN_E* code with a message. */
typedef int (*ctn_chat_renderer)(void *ud, const ctn_val *messages, char **out, size_t *len,
                                 char *err, size_t errcap);

/*
 * The model node: generates with lm (a reference is taken; released with the node) using the
 * settings of its config: temperature, top_p, top_k, min_p, seed, max_tokens, stop (a string
 * or an array of them). Chat inputs are rendered with render (when not NULL), else with
 * family, else with the family recognised in the GGUF's chat template. Streams the text as it
 * is generated; the output is the whole text. free_render_ud (may be NULL) releases
 * render_ud with the node.
 */
ctn_node *ctn_model_node(ctn_lm *lm, ctn_chat_family family, ctn_chat_renderer render,
                         void *render_ud, void (*free_render_ud)(void *));

/*
 * The request settings a task is given (its config's keys of engine/settings.h's table:
 * temperature, max_tokens, stop, ...) set into set through the one validator, as the model
 * node reads them; set may hold defaults first. 0, or -1 after failing the task with the
 * validator's message (which names the key). For every node that takes model settings
 * (the local model node, the remote one).
 */
int ctn_task_settings(ctn_task *t, ctn_settings *set);

/* The model of a model node, looking through binds and names (llm:with{...}); NULL when n is
 * not one. Borrowed. */
ctn_lm *ctn_model_node_lm(const ctn_node *n);
/* Whether the model node n (through binds and names) renders chat prompts: it has a
 * renderer, a family, or a GGUF chat template catena recognises. */
bool ctn_model_node_chats(const ctn_node *n);

/*
 * The scorer node: how likely each of n candidate continuations is as the next token after
 * its input, by the model of the model node `model` (looked up through binds and names; a
 * reference to that node is kept). Each candidate is tokenized as prompt text is (no BOS,
 * special tokens parsed) and only its FIRST token is scored; a candidate with no tokens, or
 * two whose first tokens coincide, are refused naming them (as are n outside 1..64). Input:
 * a string or a chat prompt, rendered as the model node renders it (the assistant's turn
 * opened). Output: an array of n log-probabilities (the model's log-softmax at the position
 * after the prompt, before any sampling setting), in the candidates' order. The prompt is
 * computed through the shared engine with max_tokens 0, so concurrent scorings are batched
 * with everything else; the model's adapter settings (lora, lora_scale) apply. NULL with the
 * reason in err.
 */
ctn_node *ctn_scorer_node(ctn_node *model, const char *const *candidates, size_t n, char *err,
                          size_t errcap);

/*
 * What a model node outputs: its text (the default), or, set here before it runs, a message
 * as LangChain's AIMessage: {type = "ai", content = text, response_metadata =
 * {finish_reason, model_name}, usage_metadata = {input_tokens, output_tokens, total_tokens,
 * input_token_details = {cache_read}}}. It streams the text either way. 0, or CTN_EINVAL
 * when n is not a model node made by ctn_model_node.
 */
int ctn_model_node_set_message(ctn_node *n, bool message);

/* The content of a message value ({type = "ai" / "human" / "system", content = text}), or
 * NULL when v is not one. The parsers read a message as its content. Borrowed. */
const ctn_val *ctn_message_content(const ctn_val *v);

typedef enum {
    CTN_PARSER_STR,   /* the text itself (streams as it comes) */
    CTN_PARSER_JSON,  /* the JSON value found in the text (streams partial values) */
    CTN_PARSER_LIST,  /* a list of items (numbered, bulleted, one per line or comma
                         separated); streams each item as it completes */
    CTN_PARSER_REGEX, /* an object of the captures of a pattern (not streaming) */
    CTN_PARSER_ENUM,  /* one of a list of options (ctn_enum_parser_node; not streaming) */
} ctn_parser_kind;

/* A parser node; for CTN_PARSER_REGEX, pattern and keys (NULL: the named groups). Not for
 * CTN_PARSER_ENUM. The JSON parser's grammar is any JSON object or array. */
ctn_node *ctn_parser_node(ctn_parser_kind kind, const char *pattern, const char *const *keys,
                          size_t nkeys, char *err, size_t errcap);

/*
 * The JSON parser with a schema (the n bytes of JSON at schema, copied; NULL: none, as
 * ctn_parser_node(CTN_PARSER_JSON)). Its output is the JSON value of the text (the whole
 * text, else the value its first bracket starts) and must satisfy the schema
 * (ctn_json_schema_validate), else the run fails with CTN_EFORMAT naming where; its grammar
 * is the schema's (ctn_json_schema_to_gbnf). NULL with the converter's message (the
 * schema's path and keyword) when the schema is bad or outside what catena converts.
 */
ctn_node *ctn_json_parser_node(const char *schema, size_t n, char *err, size_t errcap);
/* The enum parser: the text, without white space around it, must be one of values[0..n)
 * (copied; non-empty UTF-8, distinct, with no white space at their ends; 1..1024 of them);
 * its grammar allows exactly those. */
ctn_node *ctn_enum_parser_node(const char *const *values, size_t n, char *err, size_t errcap);

/* The GBNF grammar a model decodes under to give parser node n text it accepts (JSON, JSON
 * with a schema, enum), or NULL (no grammar, or not a parser). Borrowed from the node. */
const char *ctn_parser_node_grammar(const ctn_node *n);
/* What to tell a model about the format parser n reads, as LangChain's
 * get_format_instructions (malloc'd); NULL with the reason in err for the str and regex
 * parsers, which have none, and for nodes that are not parsers. */
char *ctn_parser_format_instructions(const ctn_node *n, char *err, size_t errcap);
/* In the steps of a sequence, each model node (through binds) directly followed by a parser
 * with a grammar is replaced by that model bound to {grammar = the parser's} (a bind inside,
 * such as model:with{grammar = ...}, still wins). The references are swapped in place. 0 or
 * CTN_ENOMEM (steps then unchanged from the one that failed on). */
int ctn_sequence_bind_grammars(ctn_node **steps, size_t n);

#endif
