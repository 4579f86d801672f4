/*
 * One request line of a `catena batch` prompts file (cli/cmd_batch.c): a JSON object with
 * "prompt", request settings (engine/settings.h, "grammar" among them) and "json_schema" (a
 * JSON Schema the output follows, engine/json_schema.h), read by the one settings validator (engine/settings.h,
 * docs/settings.md) without a model, so that the whole file is checked before anything
 * loads (and a fuzzer can drive it in memory).
 *
 *     ctn__batch_req r = {0};
 *     if (ctn__batch_req_parse("{\"prompt\": \"Hi\", \"max_tokens\": 8}", &r, err, sizeof err) < 0)
 *         ...                              // err says why (no FILE:LINE prefix)
 *     ctn_gen_request q = ctn_gen_request_default();
 *     q.prompt = r.prompt;
 *     ctn_settings_apply(&r.set, &q);      // sampling, max_tokens, stop, ignore_eos
 *     ctn__batch_req_close(&r);
 */
#ifndef CTN_BATCH_LINE_H
#define CTN_BATCH_LINE_H

#include <stddef.h>

#include "settings.h"

#define CTN__BATCH_DEFAULT_MAX_TOKENS CTN_SETTINGS_DEFAULT_MAX_TOKENS

typedef struct {
    const char *prompt; /* non-empty, in json */
    ctn_settings set;   /* the line's settings over the batch defaults (greedy, 256 tokens) */
    void *json;         /* the parsed line (a cJSON, owned): the strings above live in it */
    char *schema_gbnf;  /* the grammar of the line's "json_schema" (owned), or NULL */
} ctn__batch_req;

/*
 * Reads one JSON object (text, NUL-terminated, borrowed) into r, which must start zeroed.
 * Returns 0, or -1 with the reason in err (no FILE:LINE prefix). r owns what it holds either
 * way: the caller always ends it with ctn__batch_req_close.
 */
int ctn__batch_req_parse(const char *text, ctn__batch_req *r, char *err, size_t errlen);
/* Frees what r holds (not r itself). */
void ctn__batch_req_close(ctn__batch_req *r);

#endif
