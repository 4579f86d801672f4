/*
 * One request line of a `catena batch` prompts file (batch_line.h). The keys, kinds and
 * limits are the settings table's; this file only knows "prompt" and that a line may not
 * change the model.
 */
#include "batch_line.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json_schema.h"
#include "str.h"

void ctn__batch_req_close(ctn__batch_req *r) {
    cJSON_Delete(r->json);
    r->json = NULL;
    free(r->schema_gbnf);
    r->schema_gbnf = NULL;
    r->prompt = NULL;
}

int ctn__batch_req_parse(const char *text, ctn__batch_req *r, char *err, size_t errlen) {
    const char *end = NULL;
    int jrc;
    cJSON *o = ctn__json_parse(text, strlen(text), true, &end, &jrc);
    if (o == NULL) {
        if (jrc == CTN_ENOMEM)
            snprintf(err, errlen, "out of memory parsing the line");
        else
            snprintf(err, errlen, "not valid JSON (at column %ld)",
                     end != NULL ? (long)(end - text) + 1 : 1L);
        return -1;
    }
    r->json = o;
    if (!cJSON_IsObject(o)) {
        snprintf(err, errlen, "not a JSON object");
        return -1;
    }
    ctn_settings_init(&r->set);
    r->set.max_tokens = CTN__BATCH_DEFAULT_MAX_TOKENS;
    const ctn_setting_info *table = ctn_settings_table();
    for (const cJSON *it = o->child; it != NULL; it = it->next) {
        const char *k = it->string;
        /* A key given twice: cJSON keeps both; the second would silently win. */
        for (const cJSON *p = o->child; p != it; p = p->next)
            if (!strcmp(p->string, k)) {
                snprintf(err, errlen, "\"%s\" given twice", k);
                return -1;
            }
        if (!strcmp(k, "prompt")) {
            if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
                snprintf(err, errlen, "\"prompt\" must be a non-empty string");
                return -1;
            }
            r->prompt = it->valuestring;
            continue;
        }
        if (!strcmp(k, "json_schema")) {
            if (!cJSON_IsObject(it) && !cJSON_IsBool(it)) {
                snprintf(err, errlen, "\"json_schema\" must be a JSON Schema (an object)");
                return -1;
            }
            char *stext = cJSON_PrintUnformatted(it), why[400] = "";
            const int rc = stext == NULL ? CTN_ENOMEM
                                        : ctn_json_schema_to_gbnf(stext, strlen(stext),
                                                                  &r->schema_gbnf, why, sizeof why);
            cJSON_free(stext);
            if (rc < 0) {
                snprintf(err, errlen, "\"json_schema\": %s", rc == CTN_ENOMEM ? "out of memory" : why);
                return -1;
            }
            continue;
        }
        const int key = ctn_settings_key(k);
        if (key >= 0 && table[key].model) {
            snprintf(err, errlen,
                     "setting '%s' is the model's, not one request's: give it to catena batch "
                     "on the command line",
                     k);
            return -1;
        }
        if (ctn_settings_set_json(&r->set, k, it, err, errlen) < 0) return -1;
    }
    if (r->prompt == NULL) {
        snprintf(err, errlen, "no \"prompt\"");
        return -1;
    }
    if (r->schema_gbnf != NULL) {
        if (ctn_settings_given(&r->set, CTN_SET_GRAMMAR)) {
            snprintf(err, errlen, "give \"grammar\" or \"json_schema\", not both");
            return -1;
        }
        r->set.grammar = r->schema_gbnf;
    }
    return 0;
}
