/* Tool calling by grammar (tools.h). */
#include "tools.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json_schema.h"
#include "str.h"

int ctn_tool_check(const ctn_tool *t, char *err, size_t errcap) {
    const char *nm = t->name != NULL ? t->name : "";
    size_t n = strlen(nm);
    bool ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++) {
        const char c = nm[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-';
    }
    if (!ok) {
        ctn__errf(err, errcap,
                  "tool name '%.64s' must be 1 to 64 letters, digits, '_' or '-'", nm);
        return CTN_EINVAL;
    }
    if (t->schema == NULL) {
        ctn__errf(err, errcap, "tool %s: no schema for its arguments", nm);
        return CTN_EINVAL;
    }
    int rc = 0;
    cJSON *j = ctn__json_parse(t->schema, strlen(t->schema), true, NULL, &rc);
    if (j == NULL) {
        ctn__errf(err, errcap, rc == CTN_ENOMEM ? "out of memory"
                                                : "tool %s: its schema is not JSON", nm);
        return rc == CTN_ENOMEM ? rc : CTN_EINVAL;
    }
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(j, "type");
    const bool object = cJSON_IsObject(j) &&
                        ((cJSON_IsString(ty) && strcmp(ty->valuestring, "object") == 0) ||
                         (ty == NULL && cJSON_GetObjectItemCaseSensitive(j, "properties") != NULL));
    cJSON_Delete(j);
    if (!object) {
        ctn__errf(err, errcap,
                  "tool %s: its schema must describe an object (the arguments), with type "
                  "\"object\"",
                  nm);
        return CTN_EINVAL;
    }
    char *g = NULL, why[384] = "";
    rc = ctn_json_schema_to_gbnf(t->schema, strlen(t->schema), &g, why, sizeof why);
    free(g);
    if (rc < 0) {
        ctn__errf(err, errcap, "tool %s: %s", nm, why);
        return rc;
    }
    return 0;
}

char *ctn_tools_reply_schema(const ctn_tool *t, size_t n, bool may_answer, int max_calls) {
    ctn_strbuf b = {0};
    if (may_answer) ctn_sb_puts(&b, "{\"anyOf\":[");
    ctn_sb_puts(&b, "{\"type\":\"object\",\"properties\":{\"tool_calls\":{\"type\":\"array\","
                    "\"minItems\":1,");
    if (max_calls > 0) {
        char m[40];
        snprintf(m, sizeof m, "\"maxItems\":%d,", max_calls);
        ctn_sb_puts(&b, m);
    }
    ctn_sb_puts(&b, "\"items\":");
    if (n > 1) ctn_sb_puts(&b, "{\"anyOf\":[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0) ctn_sb_puts(&b, ",");
        /* The name first: the model picks the tool, then writes its arguments. */
        ctn_sb_puts(&b, "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"");
        ctn_sb_puts(&b, t[i].name); /* checked: no character JSON would escape */
        ctn_sb_puts(&b, "\"},\"arguments\":");
        ctn_sb_puts(&b, t[i].schema);
        ctn_sb_puts(&b, "},\"required\":[\"name\",\"arguments\"]}");
    }
    if (n > 1) ctn_sb_puts(&b, "]}");
    ctn_sb_puts(&b, "}},\"required\":[\"tool_calls\"]}");
    if (may_answer)
        ctn_sb_puts(&b, ",{\"type\":\"object\",\"properties\":{\"response\":{\"type\":\"string\"}},"
                        "\"required\":[\"response\"]}]}");
    if (b.oom) {
        ctn_sb_free(&b);
        return NULL;
    }
    return ctn_sb_take(&b);
}

char *ctn_tools_prompt(const ctn_tool *t, size_t n, bool may_answer) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "You can call these tools. Each takes a JSON object as its arguments, as "
                    "the JSON Schema after its name describes.\n");
    for (size_t i = 0; i < n; i++) {
        ctn_sb_puts(&b, "- ");
        ctn_sb_puts(&b, t[i].name);
        if (t[i].description != NULL && *t[i].description) {
            ctn_sb_puts(&b, ": ");
            ctn_sb_puts(&b, t[i].description);
        }
        ctn_sb_puts(&b, "\n  arguments: ");
        ctn_sb_puts(&b, t[i].schema);
        ctn_sb_puts(&b, "\n");
    }
    ctn_sb_puts(&b, "Reply with one JSON object and nothing else. To call tools: "
                    "{\"tool_calls\": [{\"name\": \"<tool>\", \"arguments\": {...}}]}.");
    if (may_answer) ctn_sb_puts(&b, " To answer: {\"response\": \"<your answer>\"}.");
    if (b.oom) {
        ctn_sb_free(&b);
        return NULL;
    }
    return ctn_sb_take(&b);
}

char *ctn_tools_result_text(const char *call_id, const char *content) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "Result of the tool call");
    if (call_id != NULL && *call_id) {
        ctn_sb_puts(&b, " ");
        ctn_sb_puts(&b, call_id);
    }
    ctn_sb_puts(&b, ": ");
    ctn_sb_puts(&b, content != NULL ? content : "");
    if (b.oom) {
        ctn_sb_free(&b);
        return NULL;
    }
    return ctn_sb_take(&b);
}
