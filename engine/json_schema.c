/*
 * JSON Schema to GBNF (json_schema.h): a walk over the schema tree that writes one rule per
 * object, array, property and enumeration, and the primitive rules of llama.cpp's
 * json-schema-to-grammar on demand.
 */
#include "json_schema.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "str.h"
#include "unicode.h"

/* The primitive rules, as llama.cpp writes them (with {m,n} bounds kept as they are). */
static const struct {
    const char *name, *body, *deps;
} PRIMS[] = {
    {"space", "| \" \" | \"\\n\"{1,2} [ \\t]{0,20}", ""},
    {"boolean", "(\"true\" | \"false\") space", "space"},
    {"null", "\"null\" space", "space"},
    {"decimal-part", "[0-9]{1,16}", ""},
    {"integral-part", "[0] | [1-9] [0-9]{0,15}", ""},
    {"number", "(\"-\"? integral-part) (\".\" decimal-part)? ([eE] [-+]? integral-part)? space",
     "integral-part decimal-part space"},
    {"integer", "(\"-\"? integral-part) space", "integral-part space"},
    {"char", "[^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\bfnrt/] | \"u\" [0-9a-fA-F]{4})", ""},
    {"string", "\"\\\"\" char* \"\\\"\" space", "char space"},
    {"object",
     "\"{\" space ( string \":\" space value (\",\" space string \":\" space value)* )? "
     "\"}\" space",
     "string space value"},
    {"array", "\"[\" space ( value (\",\" space value)* )? \"]\" space", "space value"},
    {"value", "object | array | string | number | boolean | null",
     "object array string number boolean null"},
};
#define N_PRIMS ((int)(sizeof PRIMS / sizeof *PRIMS))

typedef struct {
    char **names, **bodies;
    int n, cap;
    bool prim[N_PRIMS];
    char *err;
    size_t errlen;
    int rc;
    int depth;      /* schemas inside each other */
    char path[512]; /* JSON pointer of the schema being converted */
} conv;

#define MAX_DEPTH 64

static void fail(conv *C, const char *fmt, ...) {
    if (C->rc < 0) return;
    C->rc = CTN_EINVAL;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctn__errf(C->err, C->errlen, "schema at %s: %s", C->path[0] ? C->path : "/", msg);
}

static void oom(conv *C) {
    if (C->rc < 0) return;
    C->rc = CTN_ENOMEM;
    ctn__errf(C->err, C->errlen, "out of memory converting the schema");
}

/* Marks primitive `name` (and what it uses) as needed; returns name. */
static const char *prim(conv *C, const char *name) {
    for (int i = 0; i < N_PRIMS; i++) {
        if (strcmp(PRIMS[i].name, name) != 0 || C->prim[i]) continue;
        C->prim[i] = true;
        const char *d = PRIMS[i].deps;
        while (*d) {
            char dep[32];
            size_t k = strcspn(d, " ");
            snprintf(dep, sizeof dep, "%.*s", (int)k, d);
            prim(C, dep);
            d += k;
            while (*d == ' ')
                d++;
        }
    }
    return name;
}

/* Adds rule name ::= body (body taken over) under a name made unique; returns the name
 * (owned by C) or NULL. An equal rule already there is reused. */
static const char *add_rule(conv *C, const char *base, char *body) {
    if (body == NULL) {
        oom(C);
        return NULL;
    }
    char name[160];
    snprintf(name, 120, "%s", base); /* room for a number after it */
    for (int k = 1;; k++) {
        int found = -1;
        for (int i = 0; i < C->n; i++)
            if (strcmp(C->names[i], name) == 0) found = i;
        if (found < 0) break;
        if (strcmp(C->bodies[found], body) == 0) {
            free(body);
            return C->names[found];
        }
        snprintf(name, sizeof name, "%.119s%d", base, k);
    }
    if (C->n == C->cap) {
        const int cap = C->cap ? C->cap * 2 : 16;
        char **a = ctn__realloc(C->names, (size_t)cap * sizeof *a);
        if (a == NULL) goto nomem;
        C->names = a;
        char **b = ctn__realloc(C->bodies, (size_t)cap * sizeof *b);
        if (b == NULL) goto nomem;
        C->bodies = b;
        C->cap = cap;
    }
    char *nm = ctn__strdup(name);
    if (nm == NULL) goto nomem;
    C->names[C->n] = nm;
    C->bodies[C->n++] = body;
    return nm;
nomem:
    free(body);
    oom(C);
    return NULL;
}

/* Appends s as a GBNF string literal. */
static void put_literal(ctn_strbuf *b, const char *s) {
    ctn_sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\')
            e[0] = '\\', e[1] = (char)*p, e[2] = 0;
        else if (*p == '\n')
            strcpy(e, "\\n");
        else if (*p == '\r')
            strcpy(e, "\\r");
        else if (*p == '\t')
            strcpy(e, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            snprintf(e, sizeof e, "\\x%02X", *p);
        else
            e[0] = (char)*p, e[1] = 0;
        ctn_sb_puts(b, e);
    }
    ctn_sb_puts(b, "\"");
}

/* Appends the GBNF literal of a JSON value as cJSON writes it. */
static void put_json_literal(conv *C, ctn_strbuf *b, const cJSON *v) {
    char *j = cJSON_PrintUnformatted(v);
    if (j == NULL) {
        oom(C);
        return;
    }
    put_literal(b, j);
    cJSON_free(j);
}

/* Sanitised rule-name piece of s: letters and digits, anything else '-'. */
static void name_piece(char *out, size_t cap, const char *s) {
    size_t k = 0;
    for (; *s && k + 1 < cap; s++)
        out[k++] =
            ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9'))
                ? *s
                : '-';
    out[k] = 0;
}

static const char *visit(conv *C, const cJSON *s, const char *name);

/* A non-negative integer keyword (minItems, ...) or -1 when absent; -2 after an error. */
static double count_kw(conv *C, const cJSON *s, const char *kw) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, kw);
    if (v == NULL) return -1;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble > 2000) {
        fail(C, "'%s' must be a whole number from 0 to 2000", kw);
        return -2;
    }
    return v->valuedouble;
}

/* Appends "{lo,hi}" for a repetition (hi < 0: unbounded). */
static void put_bounds(ctn_strbuf *b, int lo, int hi) {
    char t[48];
    if (hi < 0)
        snprintf(t, sizeof t, "{%d,}", lo);
    else if (lo == hi)
        snprintf(t, sizeof t, "{%d}", lo);
    else
        snprintf(t, sizeof t, "{%d,%d}", lo, hi);
    ctn_sb_puts(b, t);
}

static const char *object_rule(conv *C, const cJSON *s, const char *name) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (ap != NULL && !cJSON_IsFalse(ap)) {
        fail(C, "'additionalProperties' other than false is not supported");
        return NULL;
    }
    if (props == NULL && req == NULL) return prim(C, "object");
    if (props != NULL && !cJSON_IsObject(props)) {
        fail(C, "'properties' must be an object");
        return NULL;
    }
    if (req != NULL && !cJSON_IsArray(req)) {
        fail(C, "'required' must be an array of property names");
        return NULL;
    }
    for (const cJSON *r = req ? req->child : NULL; r != NULL; r = r->next) {
        if (!cJSON_IsString(r)) {
            fail(C, "'required' must be an array of property names");
            return NULL;
        }
        if (props == NULL || cJSON_GetObjectItemCaseSensitive(props, r->valuestring) == NULL) {
            fail(C, "required property '%s' is not in 'properties'", r->valuestring);
            return NULL;
        }
    }
    /* one kv rule per property, in the order written */
    int n = 0;
    for (const cJSON *p = props ? props->child : NULL; p != NULL; p = p->next)
        n++;
    const char **kv = ctn__calloc((size_t)(n > 0 ? n : 1), sizeof *kv);
    bool *is_req = ctn__calloc((size_t)(n > 0 ? n : 1), sizeof *is_req);
    if (kv == NULL || is_req == NULL) {
        free(kv);
        free(is_req);
        oom(C);
        return NULL;
    }
    int i = 0;
    const size_t plen = strlen(C->path);
    for (const cJSON *p = props ? props->child : NULL; p != NULL && C->rc == 0; p = p->next, i++) {
        for (const cJSON *r = req ? req->child : NULL; r != NULL; r = r->next)
            if (strcmp(r->valuestring, p->string) == 0) is_req[i] = true;
        char piece[64], vname[200];
        name_piece(piece, sizeof piece, p->string);
        snprintf(vname, sizeof vname, "%s-%s", name, piece);
        snprintf(C->path + plen, sizeof C->path - plen, "/properties/%s", p->string);
        const char *v = visit(C, p, vname);
        C->path[plen] = 0;
        if (v == NULL) break;
        ctn_strbuf b = {0};
        cJSON *key = cJSON_CreateString(p->string);
        if (key == NULL) {
            oom(C);
            break;
        }
        put_json_literal(C, &b, key);
        cJSON_Delete(key);
        ctn_sb_puts(&b, " space \":\" space ");
        ctn_sb_puts(&b, v);
        char kname[220];
        snprintf(kname, sizeof kname, "%s-kv", vname);
        kv[i] = add_rule(C, kname, ctn_sb_take(&b));
        prim(C, "space");
    }
    const char *out = NULL;
    if (C->rc == 0) {
        /* The braces use space even when there are no properties ({"properties": {}}). */
        prim(C, "space");
        /* required properties in order, then the optional ones: each may come or not, in
         * order, commas between (llama.cpp's get_recursive_refs) */
        ctn_strbuf b = {0};
        ctn_sb_puts(&b, "\"{\" space");
        int n_req = 0;
        for (int k = 0; k < n; k++)
            if (is_req[k]) {
                ctn_sb_puts(&b, n_req++ ? " \",\" space " : " ");
                ctn_sb_puts(&b, kv[k]);
            }
        int n_opt = 0;
        for (int k = 0; k < n; k++)
            n_opt += !is_req[k];
        if (n_opt > 0) {
            ctn_sb_puts(&b, n_req ? " ( \",\" space ( " : " ( ");
            bool first_alt = true;
            for (int k = 0; k < n && C->rc == 0; k++) {
                if (is_req[k]) continue;
                /* the alternative that starts with optional property k */
                if (!first_alt) ctn_sb_puts(&b, " | ");
                first_alt = false;
                ctn_sb_puts(&b, kv[k]);
                for (int j = k + 1; j < n; j++)
                    if (!is_req[j]) {
                        ctn_sb_puts(&b, " ( \",\" space ");
                        ctn_sb_puts(&b, kv[j]);
                        ctn_sb_puts(&b, " )?");
                    }
            }
            ctn_sb_puts(&b, n_req ? " ) )?" : " )?");
        }
        ctn_sb_puts(&b, " \"}\" space");
        out = add_rule(C, name, ctn_sb_take(&b));
    }
    free(kv);
    free(is_req);
    return out;
}

static const char *array_rule(conv *C, const cJSON *s, const char *name) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const double lo_d = count_kw(C, s, "minItems"), hi_d = count_kw(C, s, "maxItems");
    if (lo_d < -1 || hi_d < -1) return NULL;
    const int lo = lo_d < 0 ? 0 : (int)lo_d, hi = (int)hi_d;
    if (hi >= 0 && hi < lo) {
        fail(C, "'maxItems' %d is below 'minItems' %d", hi, lo);
        return NULL;
    }
    if (items != NULL && cJSON_IsArray(items)) {
        fail(C, "'items' as a list (tuples, prefixItems) is not supported");
        return NULL;
    }
    const char *item;
    if (items == NULL) {
        item = prim(C, "value");
    } else {
        char iname[200];
        snprintf(iname, sizeof iname, "%s-item", name);
        const size_t plen = strlen(C->path);
        snprintf(C->path + plen, sizeof C->path - plen, "/items");
        item = visit(C, items, iname);
        C->path[plen] = 0;
        if (item == NULL) return NULL;
    }
    prim(C, "space");
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "\"[\" space");
    if (hi != 0) {
        ctn_sb_puts(&b, lo == 0 ? " ( " : " ");
        ctn_sb_puts(&b, item);
        if (hi != 1) {
            ctn_sb_puts(&b, " ( \",\" space ");
            ctn_sb_puts(&b, item);
            ctn_sb_puts(&b, " )");
            put_bounds(&b, lo > 0 ? lo - 1 : 0, hi < 0 ? -1 : hi - 1);
        }
        if (lo == 0) ctn_sb_puts(&b, " )?");
    }
    ctn_sb_puts(&b, " \"]\" space");
    return add_rule(C, name, ctn_sb_take(&b));
}

static const char *string_rule(conv *C, const cJSON *s, const char *name) {
    const double lo_d = count_kw(C, s, "minLength"), hi_d = count_kw(C, s, "maxLength");
    if (lo_d < -1 || hi_d < -1) return NULL;
    if (lo_d < 0 && hi_d < 0) return prim(C, "string");
    const int lo = lo_d < 0 ? 0 : (int)lo_d, hi = (int)hi_d;
    if (hi >= 0 && hi < lo) {
        fail(C, "'maxLength' %d is below 'minLength' %d", hi, lo);
        return NULL;
    }
    prim(C, "char");
    prim(C, "space");
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "\"\\\"\" char");
    put_bounds(&b, lo, hi);
    ctn_sb_puts(&b, " \"\\\"\" space");
    return add_rule(C, name, ctn_sb_take(&b));
}

/* The rule for one type name. */
static const char *type_rule(conv *C, const cJSON *s, const char *type, const char *name) {
    if (strcmp(type, "object") == 0) return object_rule(C, s, name);
    if (strcmp(type, "array") == 0) return array_rule(C, s, name);
    if (strcmp(type, "string") == 0) return string_rule(C, s, name);
    static const char *const simple[] = {"number", "integer", "boolean", "null"};
    for (int i = 0; i < 4; i++)
        if (strcmp(type, simple[i]) == 0) return prim(C, simple[i]);
    fail(C, "unknown type '%s'", type);
    return NULL;
}

static const char *const KNOWN[] = {
    "type",        "properties", "required", "additionalProperties",
    "items",       "minItems",   "maxItems", "minLength",
    "maxLength",   "enum",       "const",    "title",
    "description", "default",    "examples", "$schema",
    "$id",         "$comment",
};

static const char *visit_in(conv *C, const cJSON *s, const char *name);

static const char *visit(conv *C, const cJSON *s, const char *name) {
    if (C->rc < 0) return NULL;
    if (C->depth >= MAX_DEPTH) {
        fail(C, "the schema nests deeper than %d", MAX_DEPTH);
        return NULL;
    }
    C->depth++;
    const char *r = visit_in(C, s, name);
    C->depth--;
    return r;
}

static const char *visit_in(conv *C, const cJSON *s, const char *name) {
    if (cJSON_IsTrue(s)) return prim(C, "value");
    if (!cJSON_IsObject(s)) {
        fail(C, cJSON_IsFalse(s) ? "the schema false matches nothing"
                                 : "a schema must be an object or a boolean");
        return NULL;
    }
    for (const cJSON *k = s->child; k != NULL; k = k->next) {
        bool known = false;
        for (size_t i = 0; i < sizeof KNOWN / sizeof *KNOWN; i++)
            known = known || strcmp(k->string, KNOWN[i]) == 0;
        if (!known) {
            fail(C, "'%s' is not supported", k->string);
            return NULL;
        }
    }
    const cJSON *cst = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (cst != NULL || en != NULL) {
        if (en != NULL && (!cJSON_IsArray(en) || en->child == NULL)) {
            fail(C, "'enum' must be a non-empty array");
            return NULL;
        }
        ctn_strbuf b = {0};
        ctn_sb_puts(&b, "(");
        if (cst != NULL) {
            put_json_literal(C, &b, cst);
        } else {
            for (const cJSON *v = en->child; v != NULL; v = v->next) {
                ctn_sb_puts(&b, v == en->child ? " " : " | ");
                put_json_literal(C, &b, v);
            }
        }
        ctn_sb_puts(&b, " ) space");
        prim(C, "space");
        if (C->rc < 0) {
            ctn_sb_free(&b);
            return NULL;
        }
        return add_rule(C, name, ctn_sb_take(&b));
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (type == NULL) {
        if (cJSON_GetObjectItemCaseSensitive(s, "properties") != NULL ||
            cJSON_GetObjectItemCaseSensitive(s, "required") != NULL)
            return type_rule(C, s, "object", name);
        if (cJSON_GetObjectItemCaseSensitive(s, "items") != NULL ||
            cJSON_GetObjectItemCaseSensitive(s, "minItems") != NULL ||
            cJSON_GetObjectItemCaseSensitive(s, "maxItems") != NULL)
            return type_rule(C, s, "array", name);
        if (cJSON_GetObjectItemCaseSensitive(s, "minLength") != NULL ||
            cJSON_GetObjectItemCaseSensitive(s, "maxLength") != NULL)
            return type_rule(C, s, "string", name);
        return prim(C, "value");
    }
    if (cJSON_IsString(type)) return type_rule(C, s, type->valuestring, name);
    if (!cJSON_IsArray(type) || type->child == NULL) {
        fail(C, "'type' must be a type name or a non-empty list of them");
        return NULL;
    }
    ctn_strbuf b = {0};
    int k = 0;
    for (const cJSON *t = type->child; t != NULL; t = t->next, k++) {
        if (!cJSON_IsString(t)) {
            fail(C, "'type' must be a type name or a non-empty list of them");
            break;
        }
        char tname[200];
        snprintf(tname, sizeof tname, "%s-%s", name, t->valuestring);
        const char *r = type_rule(C, s, t->valuestring, tname);
        if (r == NULL) break;
        ctn_sb_puts(&b, k ? " | " : "");
        ctn_sb_puts(&b, r);
    }
    if (C->rc < 0) {
        ctn_sb_free(&b);
        return NULL;
    }
    return add_rule(C, name, ctn_sb_take(&b));
}

int ctn_json_schema_to_gbnf(const char *schema, size_t n, char **gbnf, char *err, size_t errlen) {
    if (gbnf != NULL) *gbnf = NULL;
    if (gbnf == NULL || (schema == NULL && n > 0)) {
        ctn__errf(err, errlen, "schema: no text");
        return CTN_EINVAL;
    }
    if (!ctn__utf8_valid(schema, n)) { /* cJSON would pass bad bytes into the literals */
        ctn__errf(err, errlen, "schema: not valid UTF-8");
        return CTN_EINVAL;
    }
    int rc = 0;
    const char *end = NULL;
    cJSON *root = ctn__json_parse(schema, n, true, &end, &rc);
    if (root == NULL) {
        if (rc == CTN_ENOMEM)
            ctn__errf(err, errlen, "out of memory reading the schema");
        else
            ctn__errf(err, errlen, "schema: not valid JSON (near byte %lld)",
                      (long long)(end != NULL && end >= schema ? end - schema : 0));
        return rc == CTN_ENOMEM ? CTN_ENOMEM : CTN_EINVAL;
    }
    conv C;
    memset(&C, 0, sizeof C);
    C.err = err;
    C.errlen = errlen;
    const char *top = visit(&C, root, "root");
    ctn_strbuf out = {0};
    if (C.rc == 0 && top != NULL) {
        /* root first: the schema's own rule, or a reference to a primitive */
        int ri = -1;
        for (int i = 0; i < C.n; i++)
            if (strcmp(C.names[i], "root") == 0) ri = i;
        ctn_sb_puts(&out, "root ::= ");
        ctn_sb_puts(&out, ri >= 0 ? C.bodies[ri] : top);
        ctn_sb_puts(&out, "\n");
        for (int i = 0; i < C.n; i++) {
            if (i == ri) continue;
            ctn_sb_puts(&out, C.names[i]);
            ctn_sb_puts(&out, " ::= ");
            ctn_sb_puts(&out, C.bodies[i]);
            ctn_sb_puts(&out, "\n");
        }
        for (int i = 0; i < N_PRIMS; i++)
            if (C.prim[i]) {
                ctn_sb_puts(&out, PRIMS[i].name);
                ctn_sb_puts(&out, " ::= ");
                ctn_sb_puts(&out, PRIMS[i].body);
                ctn_sb_puts(&out, "\n");
            }
        *gbnf = ctn_sb_take(&out);
        if (*gbnf == NULL) oom(&C);
    } else if (C.rc == 0) {
        oom(&C);
    }
    for (int i = 0; i < C.n; i++) {
        free(C.names[i]);
        free(C.bodies[i]);
    }
    free(C.names);
    free(C.bodies);
    cJSON_Delete(root);
    return C.rc;
}
