/*
 * The settings validator (settings.h): one table of limits, one set of messages.
 */
#include "settings.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "stop.h"
#include "str.h"

#define SIZE_MAX_BYTES 1125899906842624.0 /* 2^50 */

static const ctn_setting_info table[CTN_SET_N_KEYS] = {
    [CTN_SET_MAX_TOKENS] = {"max_tokens", CTN_SET_INT, false, true, -1, 1 << 30, false,
                            "tokens to generate; -1 or null: until end of text, a stop "
                            "string or the full context; 0: the prompt only"},
    [CTN_SET_TEMPERATURE] = {"temperature", CTN_SET_NUM, false, false, 0, 100, false,
                             "sampling temperature; 0: greedy"},
    [CTN_SET_TOP_K] = {"top_k", CTN_SET_INT, false, false, 0, INT32_MAX, false,
                       "keep the k most likely tokens; 0: off"},
    [CTN_SET_TOP_P] = {"top_p", CTN_SET_NUM, false, false, 0, 1, false,
                       "nucleus sampling mass; 1: off"},
    [CTN_SET_MIN_P] = {"min_p", CTN_SET_NUM, false, false, 0, 1, false,
                       "keep tokens with p >= min_p * p_max; 0: off"},
    [CTN_SET_REPEAT_PENALTY] = {"repeat_penalty", CTN_SET_NUM, false, false, 0, 100, true,
                                "llama.cpp's repetition penalty; 1: off"},
    [CTN_SET_REPEAT_LAST_N] = {"repeat_last_n", CTN_SET_INT, false, false, -1, INT32_MAX, false,
                               "tokens the penalties look back at; -1: all; 0: off"},
    [CTN_SET_FREQUENCY_PENALTY] = {"frequency_penalty", CTN_SET_NUM, false, false, -2, 2, false,
                                   "OpenAI's frequency penalty; 0: off"},
    [CTN_SET_PRESENCE_PENALTY] = {"presence_penalty", CTN_SET_NUM, false, false, -2, 2, false,
                                  "OpenAI's presence penalty; 0: off"},
    [CTN_SET_SEED] = {"seed", CTN_SET_INT, false, false, 0, 18446744073709551615.0, false,
                      "sampling seed (the same seed gives the same tokens)"},
    [CTN_SET_STOP] = {"stop", CTN_SET_LIST, false, true, 0, CTN_SETTINGS_MAX_STOP, false,
                      "stop strings (a string or a list), not part of the output"},
    [CTN_SET_IGNORE_EOS] = {"ignore_eos", CTN_SET_BOOL, false, false, 0, 0, false,
                            "go on past end-of-text tokens"},
    [CTN_SET_LORA] = {"lora", CTN_SET_STR, false, true, 0, 0, false,
                      "the LoRA adapter (its name, or a path where a path is taken); null: "
                      "the base model"},
    [CTN_SET_LORA_SCALE] = {"lora_scale", CTN_SET_NUM, false, false, -100, 100, false,
                            "the adapter's scale; 0: the base model's output"},
    [CTN_SET_GRAMMAR] = {"grammar", CTN_SET_STR, false, true, 0, 0, false,
                         "a GBNF grammar the output follows (docs/grammars.md); null: none"},
    [CTN_SET_THREADS] = {"threads", CTN_SET_INT, true, false, 1, 1024, false,
                         "threads of the forward pass (default: the CPUs this process may use)"},
    [CTN_SET_CTX] = {"ctx", CTN_SET_INT, true, false, 1, 1 << 24, false,
                     "context length (default: the model's, at most 4096)"},
    [CTN_SET_KV_MEMORY] = {"kv_memory", CTN_SET_SIZE, true, false, 1, SIZE_MAX_BYTES, false,
                           "KV cache memory (default: room for every running sequence's "
                           "full context, at most 1 GiB)"},
    [CTN_SET_LORA_BUDGET] = {"lora_budget", CTN_SET_SIZE, true, false, 1, SIZE_MAX_BYTES, false,
                             "memory the loaded adapters may hold (default: no limit)"},
    [CTN_SET_STEP_TOKENS] = {"step_tokens", CTN_SET_INT, true, false, 1, 65536, false,
                             "tokens per engine step (default 512)"},
    [CTN_SET_MAX_RUNNING] = {"max_running", CTN_SET_INT, true, false, 1, 4096, false,
                             "sequences running at once (default 64)"},
};

const ctn_setting_info *ctn_settings_table(void) {
    return table;
}

void ctn_settings_init(ctn_settings *s) {
    memset(s, 0, sizeof *s);
    const ctn_gen_request r = ctn_gen_request_default();
    s->max_tokens = r.max_tokens;
    s->sampling = r.sampling;
    s->lora_scale = r.adapter_scale;
}

int ctn_settings_key(const char *name) {
    for (int k = 0; k < CTN_SET_N_KEYS && name != NULL; k++)
        if (strcmp(table[k].key, name) == 0) return k;
    return -1;
}

int ctn_settings_check_run_key(const char *key, const char *const *extra, size_t n, char *err,
                               size_t errlen) {
    if (key == NULL) key = "(null)";
    for (size_t i = 0; i < n; i++)
        if (extra[i] != NULL && strcmp(extra[i], key) == 0) return 0;
    const int k = ctn_settings_key(key);
    if (k >= 0 && !table[k].model) return 0;
    if (k >= 0) {
        ctn__errf(err, errlen,
                  "setting '%s' is the model's, not one run's: give it where the model is "
                  "loaded",
                  key);
        return CTN_EINVAL;
    }
    const char *names[CTN_SET_N_KEYS + 16];
    size_t m = 0;
    for (int j = 0; j < CTN_SET_N_KEYS; j++)
        if (!table[j].model) names[m++] = table[j].key;
    for (size_t i = 0; i < n && m < sizeof names / sizeof names[0]; i++)
        names[m++] = extra[i];
    const char *near = ctn_str_suggest(key, names, m);
    if (near != NULL)
        ctn__errf(err, errlen, "unknown setting '%s' (did you mean '%s'?)", key, near);
    else
        ctn__errf(err, errlen, "unknown setting '%s'", key);
    return CTN_ENOENT;
}

bool ctn_settings_given(const ctn_settings *s, ctn_setting_key k) {
    return (unsigned)k < CTN_SET_N_KEYS && (s->given >> k & 1u);
}

static void unknown_key(const char *key, char *err, size_t errlen) {
    const char *names[CTN_SET_N_KEYS];
    for (int k = 0; k < CTN_SET_N_KEYS; k++)
        names[k] = table[k].key;
    const char *near = ctn_str_suggest(key, names, CTN_SET_N_KEYS);
    if (near != NULL)
        ctn__errf(err, errlen, "unknown setting '%s' (did you mean '%s'?)", key, near);
    else
        ctn__errf(err, errlen, "unknown setting '%s'", key);
}

/* "a number from 0 to 1" and the like, for messages. */
static void describe(const ctn_setting_info *in, char *buf, size_t cap) {
    switch (in->kind) {
    case CTN_SET_BOOL: snprintf(buf, cap, "true or false"); break;
    case CTN_SET_STR: snprintf(buf, cap, "a non-empty string"); break;
    case CTN_SET_LIST:
        snprintf(buf, cap, "a non-empty string or a list of at most %d of them (%d bytes in all)",
                 CTN_SETTINGS_MAX_STOP, CTN_STOP_MAX_TOTAL);
        break;
    case CTN_SET_SIZE:
        snprintf(buf, cap, "a size in bytes: a whole number, or a string like \"512M\" "
                           "(K, M, G, T)");
        break;
    case CTN_SET_INT:
        if (in->hi >= 18446744073709551615.0)
            snprintf(buf, cap, "an integer from %.0f", in->lo);
        else
            snprintf(buf, cap, "an integer from %.0f to %.0f", in->lo, in->hi);
        break;
    default:
        snprintf(buf, cap, in->lo_open ? "a number above %g, at most %g" : "a number from %g to %g",
                 in->lo, in->hi);
        break;
    }
    if (in->nullable) {
        const size_t n = strlen(buf);
        snprintf(buf + n, cap - n, ", or null");
    }
}

static int bad(const ctn_setting_info *in, int code, const char *got, char *err, size_t errlen) {
    char want[160];
    describe(in, want, sizeof want);
    ctn__errf(err, errlen, "setting '%s' must be %s%s%s", in->key, want, got[0] ? ", not " : "",
              got);
    return code;
}

static const char *kind_name(ctn_setting_kind k) {
    switch (k) {
    case CTN_SET_NULL: return "null";
    case CTN_SET_BOOL: return "a boolean";
    case CTN_SET_INT: return "an integer";
    case CTN_SET_NUM: return "a number";
    case CTN_SET_STR: return "a string";
    case CTN_SET_LIST: return "a list";
    case CTN_SET_SIZE: return "a size";
    case CTN_SET_OBJ: return "an object";
    }
    return "a value";
}

int ctn_parse_size(const char *text, int64_t *out) {
    if (text == NULL || !((*text >= '0' && *text <= '9') || *text == '.')) return CTN_EINVAL;
    char *end;
    errno = 0;
    const double v = strtod(text, &end);
    if (end == text || errno != 0 || !isfinite(v) || v <= 0) return CTN_EINVAL;
    double mul = 1;
    const char u = *end;
    if (u == 'K' || u == 'k') mul = 1024.0;
    if (u == 'M' || u == 'm') mul = 1024.0 * 1024;
    if (u == 'G' || u == 'g') mul = 1024.0 * 1024 * 1024;
    if (u == 'T' || u == 't') mul = 1024.0 * 1024 * 1024 * 1024;
    if (mul > 1) {
        end++;
        if (*end == 'i' && end[1] == 'B') end++;
        if (*end == 'B') end++;
    } else if (*end == 'B') {
        end++;
    }
    if (*end != '\0') return CTN_EINVAL;
    const double bytes = floor(v * mul);
    if (bytes < 1 || bytes > SIZE_MAX_BYTES) return CTN_EINVAL;
    if (mul == 1 && bytes != v) return CTN_EINVAL; /* a fraction of a byte */
    *out = (int64_t)bytes;
    return 0;
}

int ctn_settings_set(ctn_settings *s, const char *key, const ctn_setting_value *v, char *err,
                     size_t errlen) {
    const int k = ctn_settings_key(key);
    if (k < 0) {
        unknown_key(key != NULL ? key : "(null)", err, errlen);
        return CTN_ENOENT;
    }
    const ctn_setting_info *in = &table[k];
    char got[96];
    got[0] = '\0';
    if (v == NULL) return bad(in, CTN_EINVAL, "nothing", err, errlen);
    int64_t iv = 0;
    double dv = 0;
    if (v->kind == CTN_SET_NULL) {
        if (!in->nullable) return bad(in, CTN_ETYPE, "null", err, errlen);
    } else if (in->kind == CTN_SET_INT || in->kind == CTN_SET_NUM) {
        if (v->kind == CTN_SET_INT) {
            iv = v->i;
            dv = (double)v->i;
        } else if (v->kind == CTN_SET_NUM) {
            dv = v->d;
            if (in->kind == CTN_SET_INT) {
                /* A whole number in a float (JSON, Lua 5.4 floats) is an integer. */
                if (!isfinite(dv) || dv != floor(dv) || fabs(dv) > 9007199254740992.0) {
                    snprintf(got, sizeof got, "%g", dv);
                    return bad(in, CTN_ETYPE, got, err, errlen);
                }
                iv = (int64_t)dv;
            }
        } else {
            return bad(in, CTN_ETYPE, kind_name(v->kind), err, errlen);
        }
        if (in->kind == CTN_SET_INT)
            snprintf(got, sizeof got, "%" PRId64, iv);
        else
            snprintf(got, sizeof got, "%g", dv);
        if (!isfinite(dv) || dv < in->lo || dv > in->hi || (in->lo_open && dv <= in->lo))
            return bad(in, isfinite(dv) ? CTN_ERANGE : CTN_ETYPE, got, err, errlen);
    } else if (in->kind == CTN_SET_SIZE) {
        if (v->kind == CTN_SET_INT || (v->kind == CTN_SET_NUM && v->d == floor(v->d))) {
            const double b = v->kind == CTN_SET_INT ? (double)v->i : v->d;
            if (!(b >= in->lo && b <= in->hi)) {
                snprintf(got, sizeof got, "%.0f", b);
                return bad(in, CTN_ERANGE, got, err, errlen);
            }
            iv = (int64_t)b;
        } else if (v->kind == CTN_SET_STR) {
            if (ctn_parse_size(v->s, &iv) < 0) {
                snprintf(got, sizeof got, "\"%.60s\"", v->s != NULL ? v->s : "");
                return bad(in, CTN_ERANGE, got, err, errlen);
            }
        } else {
            return bad(in, CTN_ETYPE, kind_name(v->kind), err, errlen);
        }
    } else if (in->kind == CTN_SET_BOOL) {
        if (v->kind != CTN_SET_BOOL) return bad(in, CTN_ETYPE, kind_name(v->kind), err, errlen);
    } else if (in->kind == CTN_SET_STR) {
        if (v->kind != CTN_SET_STR) return bad(in, CTN_ETYPE, kind_name(v->kind), err, errlen);
        if (v->s == NULL || v->s[0] == '\0') return bad(in, CTN_ERANGE, "\"\"", err, errlen);
    } else { /* LIST: stop strings */
        const ctn_setting_value *items = v->kind == CTN_SET_STR ? v : v->items;
        const size_t n = v->kind == CTN_SET_STR ? 1 : v->n;
        if (v->kind != CTN_SET_STR && v->kind != CTN_SET_LIST)
            return bad(in, CTN_ETYPE, kind_name(v->kind), err, errlen);
        if (n > CTN_SETTINGS_MAX_STOP) {
            snprintf(got, sizeof got, "%zu of them", n);
            return bad(in, CTN_ERANGE, got, err, errlen);
        }
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
            if (items[i].kind != CTN_SET_STR || items[i].s == NULL || items[i].s[0] == '\0') {
                snprintf(got, sizeof got, "item %zu is %s", i + 1,
                         items[i].kind != CTN_SET_STR ? kind_name(items[i].kind) : "empty");
                return bad(in, items[i].kind != CTN_SET_STR ? CTN_ETYPE : CTN_ERANGE, got, err,
                           errlen);
            }
            total += strlen(items[i].s);
        }
        if (total > CTN_STOP_MAX_TOTAL) {
            snprintf(got, sizeof got, "%zu bytes", total);
            return bad(in, CTN_ERANGE, got, err, errlen);
        }
        for (size_t i = 0; i < n; i++)
            s->stop[i] = items[i].s;
        s->n_stop = n;
        s->given |= 1u << k;
        return 0;
    }

    const bool null = v->kind == CTN_SET_NULL;
    switch ((ctn_setting_key)k) {
    case CTN_SET_MAX_TOKENS: s->max_tokens = null ? -1 : iv; break;
    case CTN_SET_TEMPERATURE: s->sampling.temp = (float)dv; break;
    case CTN_SET_TOP_K: s->sampling.top_k = (int32_t)iv; break;
    case CTN_SET_TOP_P: s->sampling.top_p = (float)dv; break;
    case CTN_SET_MIN_P: s->sampling.min_p = (float)dv; break;
    case CTN_SET_REPEAT_PENALTY: s->sampling.repeat_penalty = (float)dv; break;
    case CTN_SET_REPEAT_LAST_N: s->sampling.penalty_last_n = (int32_t)iv; break;
    case CTN_SET_FREQUENCY_PENALTY: s->sampling.frequency_penalty = (float)dv; break;
    case CTN_SET_PRESENCE_PENALTY: s->sampling.presence_penalty = (float)dv; break;
    case CTN_SET_SEED: s->sampling.seed = (uint64_t)iv; break;
    case CTN_SET_IGNORE_EOS: s->ignore_eos = v->b; break;
    case CTN_SET_LORA: s->lora = null ? NULL : v->s; break;
    case CTN_SET_LORA_SCALE: s->lora_scale = (float)dv; break;
    case CTN_SET_GRAMMAR: s->grammar = null ? NULL : v->s; break;
    case CTN_SET_THREADS: s->threads = (int)iv; break;
    case CTN_SET_CTX: s->ctx = iv; break;
    case CTN_SET_KV_MEMORY: s->kv_memory = iv; break;
    case CTN_SET_LORA_BUDGET: s->lora_budget = iv; break;
    case CTN_SET_STEP_TOKENS: s->step_tokens = iv; break;
    case CTN_SET_MAX_RUNNING: s->max_running = iv; break;
    case CTN_SET_STOP: /* above */
    case CTN_SET_N_KEYS: break;
    }
    s->given |= 1u << k;
    return 0;
}

/* The value of one JSON scalar (not an array). */
static ctn_setting_value json_value(const cJSON *j) {
    ctn_setting_value v = {.kind = CTN_SET_OBJ};
    if (cJSON_IsNull(j)) {
        v.kind = CTN_SET_NULL;
    } else if (cJSON_IsBool(j)) {
        v.kind = CTN_SET_BOOL, v.b = cJSON_IsTrue(j);
    } else if (cJSON_IsNumber(j)) {
        v.kind = CTN_SET_NUM, v.d = j->valuedouble;
    } else if (cJSON_IsString(j)) {
        v.kind = CTN_SET_STR, v.s = j->valuestring;
    } else if (cJSON_IsArray(j)) {
        v.kind = CTN_SET_LIST;
    }
    return v;
}

int ctn_settings_set_json(ctn_settings *s, const char *key, const cJSON *json, char *err,
                          size_t errlen) {
    if (json == NULL) return ctn_settings_set(s, key, NULL, err, errlen);
    ctn_setting_value v = json_value(json);
    ctn_setting_value items[CTN_SETTINGS_MAX_STOP];
    if (v.kind == CTN_SET_LIST) {
        /* More items than a list may hold are refused by count before any item is read. */
        size_t n = 0;
        for (const cJSON *e = json->child; e != NULL; e = e->next, n++)
            if (n < CTN_SETTINGS_MAX_STOP) items[n] = json_value(e);
        v.items = items;
        v.n = n;
    }
    return ctn_settings_set(s, key, &v, err, errlen);
}

int ctn_settings_parse(ctn_settings *s, const char *key, const char *text, char *err,
                       size_t errlen) {
    const int k = ctn_settings_key(key);
    if (k < 0) {
        unknown_key(key != NULL ? key : "(null)", err, errlen);
        return CTN_ENOENT;
    }
    const ctn_setting_info *in = &table[k];
    if (text == NULL) text = "";
    ctn_setting_value v = {.kind = CTN_SET_STR, .s = text};
    char got[96];
    snprintf(got, sizeof got, "'%.60s'", text);
    if (in->nullable && strcmp(text, "none") == 0 && in->kind != CTN_SET_STR) {
        v.kind = CTN_SET_NULL;
    } else if (in->kind == CTN_SET_INT) {
        char *end;
        errno = 0;
        if (k == CTN_SET_SEED) { /* any uint64 (a value can only hold int64's range) */
            const unsigned long long u = strtoull(text, &end, 10);
            if (text[0] < '0' || text[0] > '9' || *end != '\0' || errno != 0)
                return bad(in, errno == ERANGE ? CTN_ERANGE : CTN_ETYPE, got, err, errlen);
            s->sampling.seed = (uint64_t)u;
            s->given |= 1u << k;
            return 0;
        }
        v.i = strtoll(text, &end, 10);
        if (text[0] == '\0' || *end != '\0' || errno != 0)
            return bad(in, errno == ERANGE ? CTN_ERANGE : CTN_ETYPE, got, err, errlen);
        v.kind = CTN_SET_INT;
    } else if (in->kind == CTN_SET_NUM) {
        char *end;
        errno = 0;
        v.d = strtod(text, &end);
        if (text[0] == '\0' || *end != '\0' || errno != 0 || !isfinite(v.d))
            return bad(in, CTN_ETYPE, got, err, errlen);
        v.kind = CTN_SET_NUM;
    } else if (in->kind == CTN_SET_BOOL) {
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
            v.kind = CTN_SET_BOOL, v.b = true;
        } else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
            v.kind = CTN_SET_BOOL, v.b = false;
        } else {
            return bad(in, CTN_ETYPE, got, err, errlen);
        }
    } else if (in->kind == CTN_SET_LIST) {
        /* One more stop string. */
        if (s->n_stop >= CTN_SETTINGS_MAX_STOP) {
            snprintf(got, sizeof got, "%d of them", CTN_SETTINGS_MAX_STOP + 1);
            return bad(in, CTN_ERANGE, got, err, errlen);
        }
        ctn_setting_value items[CTN_SETTINGS_MAX_STOP];
        for (size_t i = 0; i < s->n_stop; i++)
            items[i] = (ctn_setting_value){.kind = CTN_SET_STR, .s = s->stop[i]};
        items[s->n_stop] = v;
        const ctn_setting_value list = {.kind = CTN_SET_LIST, .items = items, .n = s->n_stop + 1};
        return ctn_settings_set(s, key, &list, err, errlen);
    }
    return ctn_settings_set(s, key, &v, err, errlen);
}

void ctn_settings_apply(const ctn_settings *s, ctn_gen_request *r) {
    r->sampling = s->sampling;
    r->max_tokens = s->max_tokens;
    r->stop = s->n_stop > 0 ? s->stop : NULL;
    r->n_stop = s->n_stop;
    r->ignore_eos = s->ignore_eos;
    r->grammar = s->grammar;
}
