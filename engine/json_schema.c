/*
 * JSON Schema to GBNF, and the validator of the same subset (json_schema.h). The converter
 * is a walk over the schema tree that writes one rule per object, array, property,
 * enumeration, pattern and reference, and the primitive rules of llama.cpp's
 * json-schema-to-grammar on demand. The validator first runs the converter (so a schema is
 * refused by both with the same message), then walks the instance beside the schema with
 * the converter's reading of each keyword, so that every text the grammar accepts validates.
 */
#include "json_schema.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "alloc.h"
#include "str.h"
#include "unicode.h"

/* The primitive rules, as llama.cpp writes them (with {m,n} bounds kept as they are), but
 * for two changes that keep every sentence valid JSON that cJSON reads back as written:
 * `char` takes no \u escape of a surrogate (a lone one is not a character) or of U+0000
 * (which would end the decoded C string), and object keys beside declared properties
 * (`key-char`) are written without escapes, so that they are told apart from the declared
 * names by their bytes. */
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
    {"char",
     "[^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\bfnrt/] | \"u\" ([1-9a-cA-CeEfF] [0-9a-fA-F]{3} "
     "| [dD] [0-7] [0-9a-fA-F]{2} | \"0\" ([1-9a-fA-F] [0-9a-fA-F]{2} | \"0\" ([1-9a-fA-F] "
     "[0-9a-fA-F] | \"0\" [1-9a-fA-F]))))",
     ""},
    {"key-char", "[^\"\\\\\\x7F\\x00-\\x1F]", ""},
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

/* The formats, as regular expressions of the pattern subset; each becomes a grammar as a
 * pattern does (the rules of llama.cpp's STRING_FORMAT_RULES) and is checked by the
 * validator with the same expression. */
static const struct {
    const char *name, *re;
} FORMATS[] = {
    {"date", "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"},
    {"time", "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{3})?"
             "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"},
    {"date-time", "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T"
                  "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{3})?"
                  "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"},
    {"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"},
};
#define N_FORMATS ((int)(sizeof FORMATS / sizeof *FORMATS))

/* Types as a set. */
enum { T_OBJ = 1, T_ARR = 2, T_STR = 4, T_NUM = 8, T_INT = 16, T_BOOL = 32, T_NULL = 64 };
#define T_ANY 127

static int type_bit(const char *t) {
    static const char *const NAMES[] = {"object",  "array",   "string", "number",
                                        "integer", "boolean", "null"};
    for (int i = 0; i < 7; i++)
        if (strcmp(t, NAMES[i]) == 0) return 1 << i;
    return 0;
}

/* The types `type` names (a name or a list), T_ANY without it, 0 after an unknown name. */
static int type_mask(const cJSON *s) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (type == NULL) return T_ANY;
    if (cJSON_IsString(type)) return type_bit(type->valuestring);
    int mask = 0;
    for (const cJSON *t = cJSON_IsArray(type) ? type->child : NULL; t != NULL; t = t->next) {
        const int b = cJSON_IsString(t) ? type_bit(t->valuestring) : 0;
        if (b == 0) return 0;
        mask |= b;
    }
    return mask;
}

/* Whether the value x is of one of the types in mask. */
static bool fits(int mask, const cJSON *x) {
    const bool integral = cJSON_IsNumber(x) && x->valuedouble == floor(x->valuedouble);
    return (cJSON_IsObject(x) && (mask & T_OBJ)) || (cJSON_IsArray(x) && (mask & T_ARR)) ||
           (cJSON_IsString(x) && (mask & T_STR)) ||
           (cJSON_IsNumber(x) && ((mask & T_NUM) || (integral && (mask & T_INT)))) ||
           (cJSON_IsBool(x) && (mask & T_BOOL)) || (cJSON_IsNull(x) && (mask & T_NULL));
}

typedef struct {
    const char *ref; /* the $ref text (borrowed from the schema) */
    int rule;        /* index of its rule in names/bodies */
    int guard;       /* conv.consume when its resolution began */
    bool busy;       /* being resolved (a use now is recursion) */
} ref_entry;

typedef struct {
    char **names, **bodies; /* rules; a body is NULL while its rule is reserved */
    int n, cap;
    bool prim[N_PRIMS];
    char *err;
    size_t errlen;
    int rc;
    int depth;   /* schemas inside each other */
    int consume; /* object values and array elements entered (what recursion must pass) */
    int fill;    /* the reserved rule the next add_rule of its name fills, or -1 */
    long size;   /* repetitions the grammar expands (patterns, items, lengths), together */
    const cJSON *root;
    ref_entry *refs;
    int n_refs, cap_refs;
    cJSON **owned;        /* allOf merges, freed with the converter */
    const cJSON **merged; /* the schema each was merged from */
    int n_owned, cap_owned;
    char path[512]; /* JSON pointer of the schema being converted */
} conv;

#define MAX_DEPTH         64
#define MAX_PATTERN_DEPTH 32
/* grammar.c expands x{m,n} into about three elements per repetition and takes a million */
#define MAX_SIZE      100000
#define MAX_INT_BOUND 1e15
#define MAX_KEY       256 /* bytes of a property name that other keys are told apart from */

static void fail(conv *C, const char *fmt, ...) {
    if (C->rc < 0) return;
    C->rc = CTN_EINVAL;
    char msg[300];
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

/* Appends "/piece" (JSON-pointer escaped) to a path of capacity cap; returns the old length
 * to cut it back to. */
static size_t path_push(char *path, size_t cap, const char *piece) {
    const size_t len = strlen(path);
    size_t k = len;
    if (k + 1 < cap) path[k++] = '/';
    for (const char *p = piece; *p && k + 2 < cap; p++) {
        if (*p == '~' || *p == '/') {
            path[k++] = '~';
            path[k++] = *p == '~' ? '0' : '1';
        } else {
            path[k++] = *p;
        }
    }
    path[k] = 0;
    return len;
}

static size_t path_push_index(char *path, size_t cap, int i) {
    char t[16];
    snprintf(t, sizeof t, "%d", i);
    return path_push(path, cap, t);
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

static bool grow_rules(conv *C) {
    if (C->n < C->cap) return true;
    const int cap = C->cap ? C->cap * 2 : 16;
    char **a = ctn__realloc(C->names, (size_t)cap * sizeof *a);
    if (a == NULL) return false;
    C->names = a;
    char **b = ctn__realloc(C->bodies, (size_t)cap * sizeof *b);
    if (b == NULL) return false;
    C->bodies = b;
    C->cap = cap;
    return true;
}

/* A name made from base that no rule has yet (base, base1, base2, ...); *found gets the
 * index of a rule named base-or-variant whose body equals body (reuse), else -1. */
static void unique_name(conv *C, const char *base, const char *body, char *name, size_t cap,
                        int *found) {
    *found = -1;
    snprintf(name, cap < 120 ? cap : 120, "%s", base); /* room for a number after it */
    for (int k = 1;; k++) {
        int at = -1;
        for (int i = 0; i < C->n && at < 0; i++)
            if (strcmp(C->names[i], name) == 0) at = i;
        if (at < 0) return;
        if (body != NULL && ((at == C->fill && C->bodies[at] == NULL) ||
                             (C->bodies[at] != NULL && strcmp(C->bodies[at], body) == 0))) {
            *found = at;
            return;
        }
        snprintf(name, cap, "%.119s%d", base, k);
    }
}

/* Adds rule name ::= body (body taken over) under a name made unique; returns the name
 * (owned by C) or NULL. An equal rule already there is reused; the rule reserved for the
 * reference being resolved (C->fill) is filled when its name comes. */
static const char *add_rule(conv *C, const char *base, char *body) {
    if (body == NULL) {
        oom(C);
        return NULL;
    }
    char name[160];
    int found;
    unique_name(C, base, body, name, sizeof name, &found);
    if (found >= 0) {
        if (C->bodies[found] == NULL) {
            C->bodies[found] = body;
            C->fill = -1;
        } else {
            free(body);
        }
        return C->names[found];
    }
    char *nm = grow_rules(C) ? ctn__strdup(name) : NULL;
    if (nm == NULL) {
        free(body);
        oom(C);
        return NULL;
    }
    C->names[C->n] = nm;
    C->bodies[C->n++] = body;
    return nm;
}

/* Reserves a rule named after base with no body yet; its index, or -1. */
static int reserve_rule(conv *C, const char *base) {
    char name[160];
    int found;
    unique_name(C, base, NULL, name, sizeof name, &found);
    char *nm = grow_rules(C) ? ctn__strdup(name) : NULL;
    if (nm == NULL) {
        oom(C);
        return -1;
    }
    C->names[C->n] = nm;
    C->bodies[C->n] = NULL;
    return C->n++;
}

/* Appends the n bytes at s as a GBNF string literal. */
static void put_literal_n(ctn_strbuf *b, const char *s, size_t n) {
    ctn_sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; p < (const unsigned char *)s + n; p++) {
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

static void put_literal(ctn_strbuf *b, const char *s) {
    put_literal_n(b, s, strlen(s));
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

/* Appends a code point as it may stand inside a GBNF character class. */
static void put_class_cp(ctn_strbuf *b, uint32_t c) {
    char t[16];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        snprintf(t, sizeof t, "%c", (char)c);
    else if (c < 0x100)
        snprintf(t, sizeof t, "\\x%02X", (unsigned)c);
    else if (c < 0x10000)
        snprintf(t, sizeof t, "\\u%04X", (unsigned)c);
    else
        snprintf(t, sizeof t, "\\U%08X", (unsigned)c);
    ctn_sb_puts(b, t);
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

/* Keeps j, the merge of src, until the converter is closed. */
static bool keep(conv *C, cJSON *j, const cJSON *src) {
    if (j == NULL) {
        oom(C);
        return false;
    }
    if (C->n_owned == C->cap_owned) {
        const int cap = C->cap_owned ? C->cap_owned * 2 : 4;
        cJSON **a = ctn__realloc(C->owned, (size_t)cap * sizeof *a);
        if (a != NULL) C->owned = a;
        const cJSON **m = a ? ctn__realloc(C->merged, (size_t)cap * sizeof *m) : NULL;
        if (m != NULL) C->merged = m;
        if (m == NULL) {
            cJSON_Delete(j);
            oom(C);
            return false;
        }
        C->cap_owned = cap;
    }
    C->merged[C->n_owned] = src;
    C->owned[C->n_owned++] = j;
    return true;
}

/* ---- patterns: a regular-expression subset to GBNF ---------------------------------------- */

/* A set of code points as sorted, disjoint ranges. */
typedef struct {
    uint32_t (*r)[2];
    int n, cap;
    bool oom;
} cset;

static void cset_add(cset *s, uint32_t lo, uint32_t hi) {
    if (s->n == s->cap) {
        const int cap = s->cap ? s->cap * 2 : 8;
        uint32_t(*a)[2] = ctn__realloc(s->r, (size_t)cap * sizeof *a);
        if (a == NULL) {
            s->oom = true;
            return;
        }
        s->r = a;
        s->cap = cap;
    }
    s->r[s->n][0] = lo;
    s->r[s->n++][1] = hi;
}

static int cmp_range(const void *a, const void *b) {
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

static void cset_norm(cset *s) {
    if (s->n == 0) return;
    qsort(s->r, (size_t)s->n, sizeof *s->r, cmp_range);
    int k = 0;
    for (int i = 1; i < s->n; i++) {
        if (s->r[i][0] <= s->r[k][1] + 1) {
            if (s->r[i][1] > s->r[k][1]) s->r[k][1] = s->r[i][1];
        } else {
            s->r[++k][0] = s->r[i][0];
            s->r[k][1] = s->r[i][1];
        }
    }
    s->n = k + 1;
}

/* The complement within U+0000..U+10FFFF, added to out. */
static void cset_add_complement(cset *out, cset *s) {
    cset_norm(s);
    uint32_t next = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->r[i][0] > next) cset_add(out, next, s->r[i][0] - 1);
        next = s->r[i][1] + 1;
    }
    if (next <= 0x10FFFF) cset_add(out, next, 0x10FFFF);
}

static void cset_free(cset *s) {
    free(s->r);
    memset(s, 0, sizeof *s);
}

/* What the classes \d \w \s stand for (ASCII, as PCRE2 reads them without UCP). */
static void cset_add_class(cset *s, char k) {
    cset t = {0};
    cset *d = (k >= 'a') ? s : &t;
    switch (k | 0x20) {
    case 'd': cset_add(d, '0', '9'); break;
    case 'w':
        cset_add(d, '0', '9');
        cset_add(d, 'A', 'Z');
        cset_add(d, '_', '_');
        cset_add(d, 'a', 'z');
        break;
    default: /* s */
        cset_add(d, '\t', '\r');
        cset_add(d, ' ', ' ');
        break;
    }
    if (d == &t) {
        cset_add_complement(s, &t);
        s->oom |= t.oom;
        cset_free(&t);
    }
}

typedef struct {
    conv *C;
    const char *p; /* the pattern as written */
    size_t i, end; /* position; end of the part matched (before a final '$') */
    long size;     /* grammar elements once repetitions are expanded */
} rxp;

static void rx_fail(rxp *R, size_t at, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail(R->C, "'pattern' at byte %zu: %s", at, msg);
}

/* The code point at R->i (the schema is valid UTF-8), advancing past it. */
static uint32_t rx_char(rxp *R) {
    const unsigned char *s = (const unsigned char *)R->p + R->i;
    const int len = ctn__utf8_char(s, R->end - R->i);
    uint32_t cp = 0xFFFD;
    if (len > 0) ctn__utf8_decode(s, (size_t)len, &cp);
    R->i += len > 0 ? (size_t)len : 1;
    return cp;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* An escape at R->i (the backslash): 1 with *cp for one character, 2 with the class added to
 * s, 0 after an error. in_class: inside [...] (where \b is a backspace). */
static int rx_escape(rxp *R, bool in_class, cset *s, uint32_t *cp) {
    const size_t at = R->i;
    if (R->i + 1 >= R->end) {
        rx_fail(R, at, "a '\\' at the end");
        return 0;
    }
    const char c = R->p[R->i + 1];
    R->i += 2;
    switch (c) {
    case 'd':
    case 'D':
    case 'w':
    case 'W':
    case 's':
    case 'S': cset_add_class(s, c); return 2;
    case 'n': *cp = '\n'; return 1;
    case 't': *cp = '\t'; return 1;
    case 'r': *cp = '\r'; return 1;
    case 'f': *cp = '\f'; return 1;
    case 'x':
    case 'u': {
        const int nd = c == 'x' ? 2 : 4;
        uint32_t v = 0;
        for (int k = 0; k < nd; k++) {
            const int h = R->i < R->end ? hexval(R->p[R->i]) : -1;
            if (h < 0) {
                rx_fail(R, at, "'\\%c' takes exactly %d hexadecimal digits", c, nd);
                return 0;
            }
            v = v * 16 + (uint32_t)h;
            R->i++;
        }
        if (v >= 0xD800 && v <= 0xDFFF) {
            rx_fail(R, at, "'\\u%04X' is a surrogate, not a character", (unsigned)v);
            return 0;
        }
        *cp = v;
        return 1;
    }
    case 'b':
        if (in_class) {
            *cp = '\b';
            return 1;
        }
        break;
    default:
        if ((unsigned char)c >= 0x21 && (unsigned char)c < 0x7F && !(c >= '0' && c <= '9') &&
            !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z')) {
            *cp = (uint32_t)c;
            return 1;
        }
    }
    if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7F)
        rx_fail(R, at, "an unsupported escape");
    else
        rx_fail(R, at, "the escape '\\%c' is not supported", c);
    return 0;
}

/* Appends the GBNF of one character of the set as it appears inside a JSON string: raw where
 * JSON lets it stand, an escape for '"', '\\' and the controls with short escapes; other
 * controls and U+007F are never written. Returns false (after an error) for a set of which
 * nothing can be written. */
static bool rx_emit_set(rxp *R, ctn_strbuf *b, cset *s, size_t at) {
    static const uint32_t SAFE[][2] = {
        {0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x7E}, {0x80, 0xD7FF}, {0xE000, 0x10FFFF}};
    static const struct {
        uint32_t cp;
        const char *gbnf;
    } ESC[] = {{'"', "\"\\\\\\\"\""}, {'\\', "\"\\\\\\\\\""}, {'\n', "\"\\\\n\""},
               {'\t', "\"\\\\t\""},   {'\r', "\"\\\\r\""},    {'\b', "\"\\\\b\""},
               {'\f', "\"\\\\f\""}};
    if (s->oom) {
        oom(R->C);
        return false;
    }
    cset_norm(s);
    ctn_strbuf cls = {0};
    int n_alt = 0, n_raw = 0;
    for (int i = 0; i < s->n; i++)
        for (size_t k = 0; k < sizeof SAFE / sizeof *SAFE; k++) {
            const uint32_t lo = s->r[i][0] > SAFE[k][0] ? s->r[i][0] : SAFE[k][0];
            const uint32_t hi = s->r[i][1] < SAFE[k][1] ? s->r[i][1] : SAFE[k][1];
            if (lo > hi) continue;
            put_class_cp(&cls, lo);
            if (hi > lo) {
                ctn_sb_puts(&cls, "-");
                put_class_cp(&cls, hi);
            }
            n_raw++;
        }
    bool has[sizeof ESC / sizeof *ESC] = {0};
    for (size_t k = 0; k < sizeof ESC / sizeof *ESC; k++) {
        for (int i = 0; i < s->n; i++)
            has[k] = has[k] || (s->r[i][0] <= ESC[k].cp && ESC[k].cp <= s->r[i][1]);
        n_alt += has[k];
    }
    n_alt += n_raw > 0;
    if (n_alt == 0) {
        ctn_sb_free(&cls);
        rx_fail(R, at, "no character that this matches can be written in a JSON string here");
        return false;
    }
    if (n_alt > 1) ctn_sb_puts(b, "( ");
    bool first = true;
    if (n_raw > 0) {
        char *t = ctn_sb_take(&cls);
        ctn_sb_puts(b, "[");
        ctn_sb_puts(b, t ? t : "");
        ctn_sb_puts(b, "]");
        if (t == NULL) b->oom = true;
        free(t);
        first = false;
    }
    ctn_sb_free(&cls);
    for (size_t k = 0; k < sizeof ESC / sizeof *ESC; k++)
        if (has[k]) {
            ctn_sb_puts(b, first ? "" : " | ");
            ctn_sb_puts(b, ESC[k].gbnf);
            first = false;
        }
    if (n_alt > 1) ctn_sb_puts(b, " )");
    if (s->oom) b->oom = true;
    return true;
}

/* A character class at R->i (the '['), into s. */
static bool rx_class(rxp *R, cset *s) {
    const size_t open = R->i++;
    const bool neg = R->i < R->end && R->p[R->i] == '^';
    if (neg) R->i++;
    if (R->i < R->end && R->p[R->i] == ']') {
        rx_fail(R, open, "an empty character class ('[]' and '[^]' differ between regex dialects)");
        return false;
    }
    cset t = {0};
    while (R->i < R->end && R->p[R->i] != ']' && R->C->rc == 0) {
        uint32_t lo;
        const size_t at = R->i;
        if (R->p[R->i] == '[') {
            rx_fail(R, at, "a '[' inside a character class (escape it)");
            break;
        }
        if (R->p[R->i] == '\\') {
            const int k = rx_escape(R, true, &t, &lo);
            if (k == 2 && R->i + 1 < R->end && R->p[R->i] == '-' && R->p[R->i + 1] != ']')
                rx_fail(R, at, "a range that begins with a class escape");
            if (k != 1) continue; /* a class (added), or an error */
        } else {
            lo = rx_char(R);
        }
        uint32_t hi = lo;
        if (R->i + 1 < R->end && R->p[R->i] == '-' && R->p[R->i + 1] != ']') {
            R->i++;
            if (R->p[R->i] == '\\') {
                cset dummy = {0};
                const int k = rx_escape(R, true, &dummy, &hi);
                cset_free(&dummy);
                if (k == 2) rx_fail(R, at, "a range that ends in a class escape");
                if (k != 1) break;
            } else {
                hi = rx_char(R);
            }
            if (hi < lo) {
                rx_fail(R, at, "a range that runs backwards");
                break;
            }
        }
        cset_add(&t, lo, hi);
    }
    if (R->C->rc == 0 && R->i >= R->end) rx_fail(R, open, "a character class that is never closed");
    R->i++;
    if (neg)
        cset_add_complement(s, &t);
    else
        for (int i = 0; i < t.n; i++)
            cset_add(s, t.r[i][0], t.r[i][1]);
    s->oom |= t.oom;
    cset_free(&t);
    if (s->oom) oom(R->C);
    return R->C->rc == 0;
}

/* A quantifier at R->i, if one is there: true with lo, hi (-1: unbounded). */
static bool rx_quant(rxp *R, int *lo, int *hi) {
    if (R->i >= R->end) return false;
    const size_t at = R->i;
    const char c = R->p[R->i];
    if (c == '*' || c == '+' || c == '?') {
        *lo = c == '+';
        *hi = c == '?' ? 1 : -1;
        R->i++;
    } else if (c == '{') {
        size_t j = R->i + 1;
        long m = -1, n = -1;
        bool comma = false;
        for (; j < R->end && R->p[j] >= '0' && R->p[j] <= '9'; j++)
            m = (m < 0 ? 0 : m) * 10 + (R->p[j] - '0'), m = m > 100000 ? 100000 : m;
        if (j < R->end && R->p[j] == ',') {
            comma = true;
            for (j++; j < R->end && R->p[j] >= '0' && R->p[j] <= '9'; j++)
                n = (n < 0 ? 0 : n) * 10 + (R->p[j] - '0'), n = n > 100000 ? 100000 : n;
        }
        if (m < 0 || j >= R->end || R->p[j] != '}') {
            rx_fail(R, at, "a '{' that is not a repetition {m}, {m,} or {m,n} (escape it)");
            return false;
        }
        if (!comma) n = m;
        if (m > 2000 || n > 2000) {
            rx_fail(R, at, "a repetition over 2000");
            return false;
        }
        if (n >= 0 && n < m) {
            rx_fail(R, at, "a repetition {%ld,%ld} whose maximum is below its minimum", m, n);
            return false;
        }
        *lo = (int)m;
        *hi = (int)n;
        R->i = j + 1;
    } else {
        return false;
    }
    if (R->i < R->end && R->p[R->i] == '?') {
        R->i++; /* lazy: the same strings match the whole pattern */
    } else if (R->i < R->end && R->p[R->i] == '+') {
        rx_fail(R, R->i, "possessive repetition is not supported");
        return false;
    }
    return true;
}

static bool rx_alt(rxp *R, ctn_strbuf *b, int depth, bool *nullable);

static void rx_flush(ctn_strbuf *b, ctn_strbuf *lit, bool *any) {
    if (lit->oom) b->oom = true;
    if (lit->len == 0) return;
    char *t = ctn_sb_take(lit);
    if (t == NULL) {
        b->oom = true;
        return;
    }
    ctn_sb_puts(b, *any ? " \"" : "\"");
    ctn_sb_puts(b, t);
    ctn_sb_puts(b, "\"");
    free(t);
    *any = true;
}

/* A sequence: up to '|', ')' or the end. */
static bool rx_seq(rxp *R, ctn_strbuf *b, int depth, bool *nullable) {
    ctn_strbuf lit = {0};
    bool any = false;
    *nullable = true;
    while (R->i < R->end && R->C->rc == 0) {
        const size_t at = R->i;
        const char c = R->p[at];
        if (c == '|' || c == ')') break;
        ctn_strbuf a = {0};
        bool a_null = false;
        uint32_t single = UINT32_MAX; /* the character of a one-character literal */
        cset s = {0};
        bool is_set = false;
        if (c == '(') {
            R->i++;
            if (R->i < R->end && R->p[R->i] == '?') {
                if (R->i + 1 < R->end && R->p[R->i + 1] == ':') {
                    R->i += 2;
                } else {
                    rx_fail(R, at, "lookaround, named groups and flags ('(?') are not supported");
                    break;
                }
            }
            if (depth >= MAX_PATTERN_DEPTH) {
                rx_fail(R, at, "groups nested deeper than %d", MAX_PATTERN_DEPTH);
                break;
            }
            ctn_sb_puts(&a, "( ");
            if (!rx_alt(R, &a, depth + 1, &a_null)) {
                ctn_sb_free(&a);
                break;
            }
            if (R->i >= R->end || R->p[R->i] != ')') {
                rx_fail(R, at, "a '(' that is never closed");
                ctn_sb_free(&a);
                break;
            }
            R->i++;
            ctn_sb_puts(&a, " )");
        } else if (c == '[') {
            is_set = rx_class(R, &s);
            if (!is_set) {
                cset_free(&s);
                break;
            }
        } else if (c == '.') {
            R->i++;
            cset_add(&s, 0, '\n' - 1);
            cset_add(&s, '\n' + 1, '\r' - 1);
            cset_add(&s, '\r' + 1, 0x10FFFF);
            is_set = true;
        } else if (c == '\\') {
            uint32_t cp;
            const int k = rx_escape(R, false, &s, &cp);
            if (k == 0) {
                cset_free(&s);
                break;
            }
            if (k == 1) single = cp;
            is_set = true;
        } else if (c == '^' || c == '$') {
            rx_fail(R, at, "an anchor inside the pattern (only a leading '^' and a final '$')");
            break;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            rx_fail(R, at, "a repetition with nothing before it");
            break;
        } else if (c == ']' || c == '}') {
            rx_fail(R, at, "an unescaped '%c'", c);
            break;
        } else {
            single = rx_char(R);
            is_set = true;
        }
        if (single != UINT32_MAX) cset_add(&s, single, single);
        /* a one-character literal that JSON writes as itself joins the literal run */
        const bool raw = single != UINT32_MAX && single >= 0x20 && single != '"' &&
                         single != '\\' && single != 0x7F &&
                         !(single >= 0xD800 && single <= 0xDFFF);
        if (is_set && !raw && !rx_emit_set(R, &a, &s, at)) {
            cset_free(&s);
            ctn_sb_free(&a);
            break;
        }
        if (s.oom) oom(R->C);
        cset_free(&s);
        int lo, hi;
        const bool q = rx_quant(R, &lo, &hi);
        if (R->C->rc < 0) {
            ctn_sb_free(&a);
            break;
        }
        if (q && a_null && (hi < 0 || hi > 1)) {
            rx_fail(R, at, "a repetition of something that can match the empty string");
            ctn_sb_free(&a);
            break;
        }
        if (raw && !q) {
            char u[8];
            const size_t k = ctn__utf8_encode(single, u);
            ctn_sb_put(&lit, u, k);
            R->size++;
            *nullable = false;
            continue;
        }
        rx_flush(b, &lit, &any);
        if (raw) {
            char u[8] = "";
            ctn__utf8_encode(single, u);
            ctn_sb_puts(&a, "\"");
            ctn_sb_puts(&a, u);
            ctn_sb_puts(&a, "\"");
        }
        char *t = ctn_sb_take(&a);
        if (t == NULL) {
            oom(R->C);
            break;
        }
        ctn_sb_puts(b, any ? " " : "");
        ctn_sb_puts(b, t);
        free(t);
        any = true;
        if (q) {
            if (lo == 0 && hi == 1)
                ctn_sb_puts(b, "?");
            else if (lo == 0 && hi < 0)
                ctn_sb_puts(b, "*");
            else if (lo == 1 && hi < 0)
                ctn_sb_puts(b, "+");
            else
                put_bounds(b, lo, hi);
            R->size += hi < 0 ? lo + 1 : hi;
            *nullable = *nullable && (lo == 0 || a_null);
        } else {
            R->size++;
            *nullable = *nullable && a_null;
        }
    }
    rx_flush(b, &lit, &any);
    ctn_sb_free(&lit);
    if (!any) ctn_sb_puts(b, "\"\"");
    return R->C->rc == 0;
}

/* Alternatives: sequences separated by '|'. */
static bool rx_alt(rxp *R, ctn_strbuf *b, int depth, bool *nullable) {
    *nullable = false;
    for (;;) {
        bool n;
        if (!rx_seq(R, b, depth, &n)) return false;
        *nullable = *nullable || n;
        if (R->i >= R->end || R->p[R->i] != '|') return true;
        R->i++;
        ctn_sb_puts(b, " | ");
    }
}

/* Where the part of a pattern that is matched begins and ends: a leading '^' and a final
 * (unescaped) '$' are dropped, since the whole string is matched either way. */
static void pattern_span(const char *p, size_t *start, size_t *end) {
    const size_t n = strlen(p);
    *start = n > 0 && p[0] == '^';
    *end = n;
    if (n > *start && p[n - 1] == '$') {
        size_t bs = 0;
        while (n - 1 - bs > *start && p[n - 2 - bs] == '\\')
            bs++;
        if (bs % 2 == 0) *end = n - 1;
    }
}

/* The rule of a string that the regular expression p matches whole. */
static const char *pattern_rule(conv *C, const char *p, const char *name) {
    rxp R = {C, p, 0, 0, 0};
    pattern_span(p, &R.i, &R.end);
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "\"\\\"\" ( ");
    bool nullable;
    if (rx_alt(&R, &b, 0, &nullable) && R.i < R.end)
        rx_fail(&R, R.i, "a ')' with no '(' before it");
    C->size += R.size;
    if (C->rc == 0 && C->size > MAX_SIZE)
        fail(C, "'pattern' makes the grammar too large once repetitions are expanded (over %d)",
             MAX_SIZE);
    if (C->rc < 0) {
        ctn_sb_free(&b);
        return NULL;
    }
    ctn_sb_puts(&b, " ) \"\\\"\" space");
    prim(C, "space");
    return add_rule(C, name, ctn_sb_take(&b));
}

/* ---- integers with bounds: digit ranges -------------------------------------------------- */

static bool all_digit(const char *s, size_t n, char d) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != d) return false;
    return true;
}

/* n digits, any of them. */
static void put_any_digits(ctn_strbuf *b, size_t n) {
    if (n == 0) return;
    ctn_sb_puts(b, "[0-9]");
    if (n > 1) put_bounds(b, (int)n, (int)n);
}

/* The digit strings of length n from a to b (a <= b; leading zeros taken as digits). */
static void put_digit_range(ctn_strbuf *b, const char *lo, const char *hi, size_t n) {
    char t[16];
    if (lo[0] == hi[0]) {
        snprintf(t, sizeof t, "[%c]", lo[0]);
        ctn_sb_puts(b, t);
        if (n > 1) {
            ctn_sb_puts(b, " ");
            put_digit_range(b, lo + 1, hi + 1, n - 1);
        }
        return;
    }
    if (n == 1 || (all_digit(lo + 1, n - 1, '0') && all_digit(hi + 1, n - 1, '9'))) {
        snprintf(t, sizeof t, "[%c-%c]", lo[0], hi[0]);
        ctn_sb_puts(b, t);
        if (n > 1) ctn_sb_puts(b, " ");
        put_any_digits(b, n - 1);
        return;
    }
    /* lo[0] rest-from-lo | the whole digits between | hi[0] rest-up-to-hi */
    char nines[20], zeros[20];
    memset(nines, '9', n - 1);
    memset(zeros, '0', n - 1);
    char first = lo[0], last = hi[0];
    ctn_sb_puts(b, "( ");
    bool alt = false;
    if (!all_digit(lo + 1, n - 1, '0')) {
        snprintf(t, sizeof t, "[%c] ", lo[0]);
        ctn_sb_puts(b, t);
        ctn_sb_puts(b, "( ");
        put_digit_range(b, lo + 1, nines, n - 1);
        ctn_sb_puts(b, " )");
        first++;
        alt = true;
    }
    bool hi_whole = all_digit(hi + 1, n - 1, '9');
    if (!hi_whole) last--;
    if (first <= last) {
        ctn_sb_puts(b, alt ? " | " : "");
        if (first == last)
            snprintf(t, sizeof t, "[%c] ", first);
        else
            snprintf(t, sizeof t, "[%c-%c] ", first, last);
        ctn_sb_puts(b, t);
        put_any_digits(b, n - 1);
        alt = true;
    }
    if (!hi_whole) {
        ctn_sb_puts(b, alt ? " | " : "");
        snprintf(t, sizeof t, "[%c] ( ", hi[0]);
        ctn_sb_puts(b, t);
        put_digit_range(b, zeros, hi + 1, n - 1);
        ctn_sb_puts(b, " )");
    }
    ctn_sb_puts(b, " )");
}

/* The decimal numbers (no sign, no leading zero) from lo to hi (0 <= lo <= hi; hi < 0:
 * unbounded, up to the 16 digits of integral-part). */
static void put_uint_range(ctn_strbuf *b, int64_t lo, int64_t hi) {
    char ls[24], hs[24], z[24];
    const int nl = snprintf(ls, sizeof ls, "%lld", (long long)lo);
    const int nh = hi < 0 ? 16 : snprintf(hs, sizeof hs, "%lld", (long long)hi);
    ctn_sb_puts(b, "( ");
    /* the numbers as long as lo */
    if (nl == nh && hi >= 0) {
        put_digit_range(b, ls, hs, (size_t)nl);
    } else {
        memset(z, '9', (size_t)nl);
        put_digit_range(b, ls, z, (size_t)nl);
    }
    /* every number of the lengths between */
    const int top = hi < 0 ? 16 : nh - 1;
    if (top > nl) {
        ctn_sb_puts(b, " | [1-9] [0-9]");
        put_bounds(b, nl, top - 1);
    }
    /* the numbers as long as hi */
    if (hi >= 0 && nh > nl) {
        z[0] = '1';
        memset(z + 1, '0', (size_t)nh - 1);
        ctn_sb_puts(b, " | ");
        put_digit_range(b, z, hs, (size_t)nh);
    }
    ctn_sb_puts(b, " )");
}

/* The integers from lo to hi (has_lo / has_hi: whether each is there), as GBNF. */
static void put_int_range(ctn_strbuf *b, bool has_lo, int64_t lo, bool has_hi, int64_t hi) {
    if (has_lo && has_hi) {
        if (hi < 0) {
            ctn_sb_puts(b, "\"-\" ");
            put_uint_range(b, -hi, -lo);
        } else if (lo < 0) {
            ctn_sb_puts(b, "\"-\" ");
            put_uint_range(b, 1, -lo);
            ctn_sb_puts(b, " | ");
            put_uint_range(b, 0, hi);
        } else {
            put_uint_range(b, lo, hi);
        }
    } else if (has_lo) {
        if (lo < 0) {
            ctn_sb_puts(b, "\"-\" ");
            put_uint_range(b, 1, -lo);
            ctn_sb_puts(b, " | ");
            put_uint_range(b, 0, -1);
        } else {
            put_uint_range(b, lo, -1);
        }
    } else {
        if (hi < 0) {
            ctn_sb_puts(b, "\"-\" ");
            put_uint_range(b, -hi, -1);
        } else {
            ctn_sb_puts(b, "\"-\" ");
            put_uint_range(b, 1, -1);
            ctn_sb_puts(b, " | ");
            put_uint_range(b, 0, hi);
        }
    }
}

/*
 * The integer bounds of s: minimum / exclusiveMinimum (the larger, as the least integer
 * allowed) and maximum / exclusiveMaximum. Returns false after an error.
 */
static bool int_bounds(conv *C, const cJSON *s, bool *has_lo, int64_t *lo, bool *has_hi,
                       int64_t *hi) {
    static const char *const KW[] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    *has_lo = *has_hi = false;
    *lo = *hi = 0;
    for (int k = 0; k < 4; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, KW[k]);
        if (v == NULL) continue;
        if (!cJSON_IsNumber(v)) {
            fail(C, "'%s' must be a number%s", KW[k],
                 cJSON_IsBool(v) ? " (the boolean form of draft 4 is not supported)" : "");
            return false;
        }
        const double d = v->valuedouble;
        if (!(fabs(d) <= MAX_INT_BOUND)) {
            fail(C, "'%s' must be within -1e15 to 1e15 for an integer", KW[k]);
            return false;
        }
        if (k < 2) {
            const int64_t e = (int64_t)(k == 0 ? ceil(d) : floor(d) + 1);
            if (!*has_lo || e > *lo) *lo = e;
            *has_lo = true;
        } else {
            const int64_t e = (int64_t)(k == 2 ? floor(d) : ceil(d) - 1);
            if (!*has_hi || e < *hi) *hi = e;
            *has_hi = true;
        }
    }
    if (*has_lo && *has_hi && *lo > *hi) {
        fail(C, "no integer lies between the lower bound %lld and the upper bound %lld",
             (long long)*lo, (long long)*hi);
        return false;
    }
    return true;
}

static bool has_num_bounds(const cJSON *s, const char **kw) {
    static const char *const KW[] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    for (int k = 0; k < 4; k++)
        if (cJSON_GetObjectItemCaseSensitive(s, KW[k]) != NULL) {
            *kw = KW[k];
            return true;
        }
    return false;
}

/* ---- references, allOf ------------------------------------------------------------------- */

static const char *const ANNOTATIONS[] = {"title",    "description", "default",
                                          "examples", "$schema",     "$id",
                                          "$comment", "$defs",       "definitions"};

static bool is_annotation(const char *k) {
    for (size_t i = 0; i < sizeof ANNOTATIONS / sizeof *ANNOTATIONS; i++)
        if (strcmp(k, ANNOTATIONS[i]) == 0) return true;
    return false;
}

/* Refuses any keyword beside kw but annotations (kw's meaning would drop them). */
static bool alone_with(conv *C, const cJSON *s, const char *kw) {
    for (const cJSON *k = s->child; k != NULL; k = k->next)
        if (strcmp(k->string, kw) != 0 && !is_annotation(k->string)) {
            fail(C, "'%s' beside '%s' is not supported", kw, k->string);
            return false;
        }
    return true;
}

/* The schema that a $ref names: the root ("#"), or a member of the root's $defs or
 * definitions; NULL after an error. *ptr gets its JSON pointer (for messages). */
static const cJSON *ref_target(conv *C, const cJSON *refv, char *ptr, size_t cap) {
    if (!cJSON_IsString(refv)) {
        fail(C, "'$ref' must be a string");
        return NULL;
    }
    const char *ref = refv->valuestring;
    snprintf(ptr, cap, "%s", "");
    if (strcmp(ref, "#") == 0) return C->root;
    if (ref[0] != '#') {
        fail(C,
             "'$ref' to '%.100s' (another document) is not supported; only '#', "
             "'#/$defs/NAME' and '#/definitions/NAME'",
             ref);
        return NULL;
    }
    const char *kw = NULL, *name = NULL;
    if (strncmp(ref, "#/$defs/", 8) == 0)
        kw = "$defs", name = ref + 8;
    else if (strncmp(ref, "#/definitions/", 14) == 0)
        kw = "definitions", name = ref + 14;
    char key[256];
    size_t k = 0;
    bool ok = kw != NULL;
    for (const char *p = name; ok && *p; p++) {
        if (*p == '/' || k + 1 >= sizeof key)
            ok = false;
        else if (*p == '~' && (p[1] == '0' || p[1] == '1'))
            key[k++] = *++p == '0' ? '~' : '/';
        else
            key[k++] = *p;
    }
    if (!ok) {
        fail(C,
             "'$ref' '%.100s' is not supported; only '#', '#/$defs/NAME' and "
             "'#/definitions/NAME'",
             ref);
        return NULL;
    }
    key[k] = 0;
    const cJSON *defs = cJSON_GetObjectItemCaseSensitive(C->root, kw);
    const cJSON *t = cJSON_IsObject(defs) ? cJSON_GetObjectItemCaseSensitive(defs, key) : NULL;
    if (t == NULL) {
        fail(C, "'$ref' '%.100s' names no definition", ref);
        return NULL;
    }
    snprintf(ptr, cap, "/%s", kw);
    path_push(ptr, cap, key);
    return t;
}

static const char *visit(conv *C, const cJSON *s, const char *name);

/* The rule of a reference: one per $ref text, made at its first use; a use while it is being
 * made is recursion, which GBNF allows as long as an object or array is entered first (else
 * it is left recursion, which grammar.c refuses). */
static const char *ref_rule(conv *C, const cJSON *refv) {
    for (int i = 0; i < C->n_refs; i++) {
        ref_entry *e = &C->refs[i];
        if (!cJSON_IsString(refv) || strcmp(e->ref, refv->valuestring) != 0) continue;
        if (e->busy && e->guard == C->consume) {
            fail(C,
                 "'$ref' '%.100s' refers to itself with no object or array between (left "
                 "recursion)",
                 e->ref);
            return NULL;
        }
        return e->rule < 0 ? "root" : C->names[e->rule];
    }
    char ptr[512];
    const cJSON *t = ref_target(C, refv, ptr, sizeof ptr);
    if (t == NULL) return NULL;
    if (C->n_refs == C->cap_refs) {
        const int cap = C->cap_refs ? C->cap_refs * 2 : 8;
        ref_entry *a = ctn__realloc(C->refs, (size_t)cap * sizeof *a);
        if (a == NULL) {
            oom(C);
            return NULL;
        }
        C->refs = a;
        C->cap_refs = cap;
    }
    const char *slash = strrchr(refv->valuestring, '/');
    char piece[64], base[80];
    name_piece(piece, sizeof piece, slash ? slash + 1 : refv->valuestring);
    snprintf(base, sizeof base, "ref-%s", piece);
    const int idx = reserve_rule(C, base);
    if (idx < 0) return NULL;
    const int me = C->n_refs++;
    C->refs[me] = (ref_entry){refv->valuestring, idx, C->consume, true};
    char saved[sizeof C->path];
    memcpy(saved, C->path, sizeof saved);
    snprintf(C->path, sizeof C->path, "%s", ptr);
    const int fill = C->fill;
    C->fill = idx;
    const char *r = visit(C, t, C->names[idx]);
    C->fill = fill;
    memcpy(C->path, saved, sizeof saved);
    C->refs[me].busy = false;
    if (r == NULL) return NULL;
    if (C->bodies[idx] == NULL && (C->bodies[idx] = ctn__strdup(r)) == NULL) {
        oom(C);
        return NULL;
    }
    return C->names[idx];
}

/* Follows $ref while s is a reference; NULL after an error. */
static const cJSON *deref(conv *C, const cJSON *s) {
    for (int hops = 0; cJSON_IsObject(s); hops++) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(s, "$ref");
        if (r == NULL) return s;
        if (hops >= 32) {
            fail(C, "'$ref' chains past 32 references (a loop?)");
            return NULL;
        }
        if (!alone_with(C, s, "$ref")) return NULL;
        char ptr[512];
        s = ref_target(C, r, ptr, sizeof ptr);
    }
    return s;
}

static const char *const MERGEABLE[] = {"type", "properties", "required", "additionalProperties",
                                        "allOf"};

/*
 * allOf as llama.cpp reads it: the object schemas it lists (through references, and the
 * schema's own properties beside it) merged into one, their properties in order and their
 * required names together. A component that is not an object schema, or a property that two
 * components give different schemas, is refused. The merge is kept in C (freed with it).
 */
static const cJSON *merge_all_of(conv *C, const cJSON *s) {
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(s, "allOf");
    if (!cJSON_IsArray(all) || all->child == NULL) {
        fail(C, "'allOf' must be a non-empty array");
        return NULL;
    }
    if (C->depth >= MAX_DEPTH) {
        fail(C, "the schema nests deeper than %d", MAX_DEPTH);
        return NULL;
    }
    for (int i = 0; i < C->n_owned; i++) /* merged before (the validator comes back) */
        if (C->merged[i] == s) return C->owned[i];
    cJSON *out = cJSON_CreateObject();
    if (!keep(C, out, s)) return NULL;
    cJSON *props = cJSON_AddObjectToObject(out, "properties");
    cJSON *req = cJSON_AddArrayToObject(out, "required");
    if (props == NULL || req == NULL || cJSON_AddStringToObject(out, "type", "object") == NULL) {
        oom(C);
        return NULL;
    }
    const size_t plen = strlen(C->path);
    const cJSON *it = NULL;
    for (int i = -1; C->rc == 0; i++) {
        const cJSON *c = s;
        if (i >= 0) {
            it = it ? it->next : all->child;
            if (it == NULL) break;
            path_push(C->path, sizeof C->path, "allOf");
            path_push_index(C->path, sizeof C->path, i);
            c = deref(C, it);
        }
        if (c != NULL && c != s && cJSON_IsObject(c) &&
            cJSON_GetObjectItemCaseSensitive(c, "allOf") != NULL) {
            C->depth++;
            c = merge_all_of(C, c);
            C->depth--;
        }
        if (c == NULL || cJSON_IsTrue(c)) goto next;
        if (!cJSON_IsObject(c)) {
            fail(C, "'allOf' can only merge object schemas");
            break;
        }
        for (const cJSON *k = c->child; k != NULL && C->rc == 0; k = k->next) {
            bool ok = is_annotation(k->string);
            for (size_t m = 0; m < sizeof MERGEABLE / sizeof *MERGEABLE; m++)
                ok = ok || strcmp(k->string, MERGEABLE[m]) == 0;
            if (strcmp(k->string, "type") == 0)
                ok = cJSON_IsString(k) && strcmp(k->valuestring, "object") == 0;
            if (strcmp(k->string, "additionalProperties") == 0) ok = cJSON_IsFalse(k);
            if (!ok)
                fail(C,
                     "'allOf' can only merge object schemas (properties, required): '%s' "
                     "is not supported in it",
                     k->string);
        }
        const cJSON *cp = cJSON_GetObjectItemCaseSensitive(c, "properties");
        const cJSON *cr = cJSON_GetObjectItemCaseSensitive(c, "required");
        if (C->rc == 0 &&
            ((cp != NULL && !cJSON_IsObject(cp)) || (cr != NULL && !cJSON_IsArray(cr))))
            fail(C, "'properties' must be an object and 'required' an array");
        for (const cJSON *p = cp ? cp->child : NULL; p != NULL && C->rc == 0; p = p->next) {
            const cJSON *have = cJSON_GetObjectItemCaseSensitive(props, p->string);
            if (have != NULL) {
                if (!cJSON_Compare(have, p, true))
                    fail(C, "'allOf' gives property '%.100s' two different schemas", p->string);
                continue;
            }
            cJSON *d = cJSON_Duplicate(p, true);
            if (d == NULL || !cJSON_AddItemToObject(props, p->string, d)) {
                cJSON_Delete(d);
                oom(C);
            }
        }
        for (const cJSON *r = cr ? cr->child : NULL; r != NULL && C->rc == 0; r = r->next) {
            if (!cJSON_IsString(r)) {
                fail(C, "'required' must be an array of property names");
                break;
            }
            bool have = false;
            for (const cJSON *x = req->child; x != NULL; x = x->next)
                have = have || strcmp(x->valuestring, r->valuestring) == 0;
            cJSON *v = have ? NULL : cJSON_CreateString(r->valuestring);
            if (!have && (v == NULL || !cJSON_AddItemToArray(req, v))) {
                cJSON_Delete(v);
                oom(C);
            }
        }
    next:
        C->path[plen] = 0;
    }
    return C->rc == 0 ? out : NULL;
}

/* ---- objects, arrays, strings ------------------------------------------------------------- */

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

/* Whether the key-char alphabet (no escapes) can spell name. */
static bool spellable_key(const char *name) {
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == '"' || *p == '\\' || *p == 0x7F) return false;
    return true;
}

/*
 * The rest of an object key after its first `off` bytes, which the names set[0..k) share,
 * such that the whole key is none of them (llama.cpp's _not_strings, over code points); a
 * sub-rule per level keeps the nesting of parentheses flat.
 */
static void put_keys_rest(conv *C, ctn_strbuf *b, const char **set, int k, size_t off,
                          const char *base) {
    bool ends = false;
    uint32_t *seen = ctn__calloc((size_t)k + 1, sizeof *seen);
    int n_seen = 0;
    ctn_strbuf rej = {0};
    if (seen == NULL) {
        oom(C);
        return;
    }
    ctn_sb_puts(b, "( ");
    for (int i = 0; i < k && C->rc == 0; i++) {
        const size_t len = strlen(set[i]);
        if (len == off) {
            ends = true;
            continue;
        }
        const int cl = ctn__utf8_char((const unsigned char *)set[i] + off, len - off);
        uint32_t cp;
        ctn__utf8_decode((const unsigned char *)set[i] + off, cl > 0 ? (size_t)cl : 1, &cp);
        bool dup = false;
        for (int j = 0; j < n_seen; j++)
            dup = dup || seen[j] == cp;
        if (dup) continue;
        seen[n_seen++] = cp;
        /* the names that go on with cp */
        const char **sub = ctn__calloc((size_t)k, sizeof *sub);
        if (sub == NULL) {
            oom(C);
            break;
        }
        int n_sub = 0;
        bool longer = false;
        const size_t off2 = off + (size_t)(cl > 0 ? cl : 1);
        for (int j = 0; j < k; j++) {
            const size_t lj = strlen(set[j]);
            if (lj > off && strncmp(set[j] + off, set[i] + off, off2 - off) == 0) {
                sub[n_sub++] = set[j];
                longer = longer || lj > off2;
            }
        }
        ctn_sb_puts(b, n_seen > 1 ? " | [" : "[");
        put_class_cp(b, cp);
        put_class_cp(&rej, cp);
        ctn_sb_puts(b, "] ");
        if (!longer) {
            ctn_sb_puts(b, prim(C, "key-char"));
            ctn_sb_puts(b, "+");
        } else {
            ctn_strbuf r = {0};
            put_keys_rest(C, &r, sub, n_sub, off2, base);
            const char *nm = C->rc == 0 ? add_rule(C, base, ctn_sb_take(&r)) : NULL;
            if (nm == NULL) ctn_sb_free(&r);
            ctn_sb_puts(b, nm ? nm : "");
        }
        free(sub);
    }
    char *t = ctn_sb_take(&rej);
    ctn_sb_puts(b, n_seen ? " | [^\"\\\\\\x7F\\x00-\\x1F" : "[^\"\\\\\\x7F\\x00-\\x1F");
    ctn_sb_puts(b, t ? t : "");
    ctn_sb_puts(b, "] ");
    ctn_sb_puts(b, prim(C, "key-char"));
    ctn_sb_puts(b, "*");
    ctn_sb_puts(b, ends ? " )" : " )?");
    if (t == NULL) oom(C);
    free(t);
    free(seen);
}

static const char *object_rule(conv *C, const cJSON *s, const char *name) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    const bool any_ap = ap == NULL || cJSON_IsTrue(ap) || (cJSON_IsObject(ap) && ap->child == NULL);
    if (props == NULL && req == NULL && any_ap) return prim(C, "object");
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
    /* one kv rule per property, in the order written, then the one of other keys */
    int n = 0;
    for (const cJSON *p = props ? props->child : NULL; p != NULL; p = p->next, n++)
        for (const cJSON *q = props->child; q != p; q = q->next)
            if (strcmp(q->string, p->string) == 0) { /* cJSON keeps both; which would count? */
                fail(C, "'properties' names '%.100s' twice", p->string);
                return NULL;
            }
    const char **kv = ctn__calloc((size_t)n + 1, sizeof *kv);
    bool *is_req = ctn__calloc((size_t)n + 1, sizeof *is_req);
    const char **names = ctn__calloc((size_t)n + 1, sizeof *names);
    if (kv == NULL || is_req == NULL || names == NULL) {
        free(kv);
        free(is_req);
        free(names);
        oom(C);
        return NULL;
    }
    int i = 0;
    const size_t plen = strlen(C->path);
    prim(C, "space");
    C->consume++;
    for (const cJSON *p = props ? props->child : NULL; p != NULL && C->rc == 0; p = p->next, i++) {
        for (const cJSON *r = req ? req->child : NULL; r != NULL; r = r->next)
            if (strcmp(r->valuestring, p->string) == 0) is_req[i] = true;
        char piece[64], vname[200];
        name_piece(piece, sizeof piece, p->string);
        snprintf(vname, sizeof vname, "%s-%s", name, piece);
        path_push(C->path, sizeof C->path, "properties");
        path_push(C->path, sizeof C->path, p->string);
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
    }
    const char *star = NULL; /* the rule of one other key and its value */
    if (C->rc == 0 && !cJSON_IsFalse(ap) && ap != NULL) {
        char vname[200], kname[220];
        snprintf(vname, sizeof vname, "%s-additional", name);
        path_push(C->path, sizeof C->path, "additionalProperties");
        const char *v = any_ap ? prim(C, "value") : visit(C, ap, vname);
        C->path[plen] = 0;
        const char *key = n > 0 ? NULL : prim(C, "string");
        if (n > 0 && v != NULL) {
            int k = 0;
            for (const cJSON *p = props->child; p != NULL && C->rc == 0; p = p->next) {
                if (strlen(p->string) > MAX_KEY)
                    fail(C,
                         "'additionalProperties' beside a property name over %d bytes is not "
                         "supported",
                         MAX_KEY);
                if (spellable_key(p->string)) names[k++] = p->string;
            }
            ctn_strbuf kb = {0};
            ctn_sb_puts(&kb, "\"\\\"\" ");
            char rest[240];
            snprintf(kname, sizeof kname, "%s-k", vname);
            snprintf(rest, sizeof rest, "%s-rest", kname);
            put_keys_rest(C, &kb, names, k, 0, rest);
            ctn_sb_puts(&kb, " \"\\\"\" space");
            key = C->rc == 0 ? add_rule(C, kname, ctn_sb_take(&kb)) : NULL;
            if (key == NULL) ctn_sb_free(&kb);
        }
        if (v != NULL && key != NULL) {
            ctn_strbuf b = {0};
            ctn_sb_puts(&b, key);
            ctn_sb_puts(&b, " \":\" space ");
            ctn_sb_puts(&b, v);
            snprintf(kname, sizeof kname, "%s-kv", vname);
            star = add_rule(C, kname, ctn_sb_take(&b));
        }
    }
    C->consume--;
    const char *out = NULL;
    if (C->rc == 0) {
        /* required properties in order, then the optional ones (and other keys, as many as
         * come): each may come or not, in order, commas between (llama.cpp's
         * get_recursive_refs) */
        if (star != NULL) kv[n] = star;
        const int m = n + (star != NULL);
        ctn_strbuf b = {0};
        ctn_sb_puts(&b, "\"{\" space");
        int n_req = 0;
        for (int k = 0; k < n; k++)
            if (is_req[k]) {
                ctn_sb_puts(&b, n_req++ ? " \",\" space " : " ");
                ctn_sb_puts(&b, kv[k]);
            }
        int n_opt = 0;
        for (int k = 0; k < m; k++)
            n_opt += !is_req[k];
        if (n_opt > 0) {
            ctn_sb_puts(&b, n_req ? " ( \",\" space ( " : " ( ");
            bool first_alt = true;
            for (int k = 0; k < m; k++) {
                if (is_req[k]) continue;
                /* the alternative that starts with optional entry k */
                if (!first_alt) ctn_sb_puts(&b, " | ");
                first_alt = false;
                ctn_sb_puts(&b, kv[k]);
                if (k == n) {
                    ctn_sb_puts(&b, " ( \",\" space ");
                    ctn_sb_puts(&b, star);
                    ctn_sb_puts(&b, " )*");
                }
                for (int j = k + 1; j < m; j++)
                    if (!is_req[j]) {
                        ctn_sb_puts(&b, " ( \",\" space ");
                        ctn_sb_puts(&b, kv[j]);
                        ctn_sb_puts(&b, j == n ? " )*" : " )?");
                    }
            }
            ctn_sb_puts(&b, n_req ? " ) )?" : " )?");
        }
        ctn_sb_puts(&b, " \"}\" space");
        out = add_rule(C, name, ctn_sb_take(&b));
    }
    free(kv);
    free(is_req);
    free(names);
    return out;
}

/* The elements from index i on, i having come before, for lengths lo..hi (hi < 0: any). */
static void put_elements(conv *C, ctn_strbuf *b, const char *const *prefix, int np,
                         const char *item, int i, int lo, int hi) {
    if (hi >= 0 && i >= hi) return;
    if (i < np) {
        if (i >= lo) ctn_sb_puts(b, "( ");
        if (i > 0) ctn_sb_puts(b, "\",\" space ");
        ctn_sb_puts(b, prefix[i]);
        if ((hi < 0 || i + 1 < hi) && (i + 1 < np || item != NULL)) ctn_sb_puts(b, " ");
        put_elements(C, b, prefix, np, item, i + 1, lo, hi);
        if (i >= lo) ctn_sb_puts(b, " )?");
        return;
    }
    if (item == NULL) return;
    const int a = lo > i ? lo - i : 0, z = hi < 0 ? -1 : hi - i;
    if (i == 0) {
        ctn_sb_puts(b, a == 0 ? "( " : "");
        ctn_sb_puts(b, item);
        if (z != 1) {
            ctn_sb_puts(b, " ( \",\" space ");
            ctn_sb_puts(b, item);
            ctn_sb_puts(b, " )");
            put_bounds(b, a > 0 ? a - 1 : 0, z < 0 ? -1 : z - 1);
        }
        if (a == 0) ctn_sb_puts(b, " )?");
    } else {
        ctn_sb_puts(b, "( \",\" space ");
        ctn_sb_puts(b, item);
        ctn_sb_puts(b, " )");
        put_bounds(b, a, z);
    }
}

static const char *array_rule(conv *C, const cJSON *s, const char *name) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(s, "prefixItems");
    const double lo_d = count_kw(C, s, "minItems"), hi_d = count_kw(C, s, "maxItems");
    if (lo_d < -1 || hi_d < -1) return NULL;
    if (items != NULL && cJSON_IsArray(items)) {
        fail(C, "'items' as a list (draft 4 tuples) is not supported; use 'prefixItems'");
        return NULL;
    }
    if (pre != NULL && (!cJSON_IsArray(pre) || cJSON_GetArraySize(pre) > 2000)) {
        fail(C, "'prefixItems' must be an array of at most 2000 schemas");
        return NULL;
    }
    const int np = pre ? cJSON_GetArraySize(pre) : 0;
    /* a tuple is as long as its prefixItems unless minItems / maxItems say otherwise, or
     * items lets more come (as llama.cpp writes it, and within what JSON Schema allows) */
    const bool no_more = cJSON_IsFalse(items) || (pre != NULL && items == NULL && hi_d < 0);
    int hi = (int)hi_d;
    if (no_more && (hi < 0 || hi > np)) hi = np;
    const int lo = lo_d >= 0 ? (int)lo_d : (hi >= 0 && hi < np ? hi : np);
    if (hi >= 0 && hi < lo) {
        if (lo_d >= 0 && hi_d >= 0)
            fail(C, "'maxItems' %d is below 'minItems' %d", (int)hi_d, (int)lo_d);
        else
            fail(C, "'minItems' %d is more than the %d elements the array may have", lo, hi);
        return NULL;
    }
    const char **prefix = ctn__calloc((size_t)np + 1, sizeof *prefix);
    if (prefix == NULL) {
        oom(C);
        return NULL;
    }
    const size_t plen = strlen(C->path);
    C->consume++;
    int i = 0;
    for (const cJSON *p = pre ? pre->child : NULL; p != NULL && C->rc == 0; p = p->next, i++) {
        char iname[200];
        snprintf(iname, sizeof iname, "%s-tuple-%d", name, i);
        path_push(C->path, sizeof C->path, "prefixItems");
        path_push_index(C->path, sizeof C->path, i);
        prefix[i] = visit(C, p, iname);
        C->path[plen] = 0;
    }
    const char *item = NULL;
    if (C->rc == 0 && !cJSON_IsFalse(items)) {
        if (items == NULL) {
            item = prim(C, "value");
        } else {
            char iname[200];
            snprintf(iname, sizeof iname, "%s-item", name);
            path_push(C->path, sizeof C->path, "items");
            item = visit(C, items, iname);
            C->path[plen] = 0;
        }
    }
    C->consume--;
    C->size += np + (hi >= 0 ? hi : lo + 1);
    if (C->rc == 0 && C->size > MAX_SIZE)
        fail(C, "'maxItems' makes the grammar too large once repetitions are expanded (over %d)",
             MAX_SIZE);
    const char *out = NULL;
    if (C->rc == 0) {
        prim(C, "space");
        ctn_strbuf b = {0};
        ctn_sb_puts(&b, "\"[\" space ");
        put_elements(C, &b, prefix, np, item, 0, lo, hi);
        ctn_sb_puts(&b, " \"]\" space");
        out = add_rule(C, name, ctn_sb_take(&b));
    }
    free(prefix);
    return out;
}

static const char *string_rule(conv *C, const cJSON *s, const char *name) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(s, "format");
    const double lo_d = count_kw(C, s, "minLength"), hi_d = count_kw(C, s, "maxLength");
    if (lo_d < -1 || hi_d < -1) return NULL;
    const char *len_kw = lo_d >= 0 ? "minLength" : hi_d >= 0 ? "maxLength" : NULL;
    if (pat != NULL && (fmt != NULL || len_kw != NULL)) {
        fail(C, "'pattern' beside '%s' is not supported", fmt ? "format" : len_kw);
        return NULL;
    }
    if (fmt != NULL && len_kw != NULL) {
        fail(C, "'format' beside '%s' is not supported", len_kw);
        return NULL;
    }
    if (pat != NULL) {
        if (!cJSON_IsString(pat)) {
            fail(C, "'pattern' must be a string");
            return NULL;
        }
        return pattern_rule(C, pat->valuestring, name);
    }
    if (fmt != NULL) { /* visit_in has checked that it is one of FORMATS */
        for (int i = 0; i < N_FORMATS; i++)
            if (strcmp(fmt->valuestring, FORMATS[i].name) == 0) {
                char fname[64];
                snprintf(fname, sizeof fname, "%s-string", FORMATS[i].name);
                return pattern_rule(C, FORMATS[i].re, fname);
            }
    }
    if (lo_d < 0 && hi_d < 0) return prim(C, "string");
    const int lo = lo_d < 0 ? 0 : (int)lo_d, hi = (int)hi_d;
    if (hi >= 0 && hi < lo) {
        fail(C, "'maxLength' %d is below 'minLength' %d", hi, lo);
        return NULL;
    }
    C->size += hi >= 0 ? hi : lo + 1;
    if (C->size > MAX_SIZE) {
        fail(C, "'%s' makes the grammar too large once repetitions are expanded (over %d)", len_kw,
             MAX_SIZE);
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

static const char *integer_rule(conv *C, const cJSON *s, const char *name) {
    bool has_lo, has_hi;
    int64_t lo, hi;
    if (!int_bounds(C, s, &has_lo, &lo, &has_hi, &hi)) return NULL;
    if (!has_lo && !has_hi) return prim(C, "integer");
    prim(C, "space");
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "( ");
    put_int_range(&b, has_lo, lo, has_hi, hi);
    ctn_sb_puts(&b, " ) space");
    return add_rule(C, name, ctn_sb_take(&b));
}

/* The rule for one type name. */
static const char *type_rule(conv *C, const cJSON *s, const char *type, const char *name) {
    if (strcmp(type, "object") == 0) return object_rule(C, s, name);
    if (strcmp(type, "array") == 0) return array_rule(C, s, name);
    if (strcmp(type, "string") == 0) return string_rule(C, s, name);
    if (strcmp(type, "integer") == 0) return integer_rule(C, s, name);
    const char *kw;
    if (strcmp(type, "number") == 0 && has_num_bounds(s, &kw)) {
        fail(C, "'%s' on type \"number\" is not supported (bounds are for type \"integer\")", kw);
        return NULL;
    }
    static const char *const simple[] = {"number", "boolean", "null"};
    for (int i = 0; i < 3; i++)
        if (strcmp(type, simple[i]) == 0) return prim(C, simple[i]);
    fail(C, "unknown type '%s'", type);
    return NULL;
}

/* The type a schema without `type` has from its keywords (as llama.cpp infers it), NULL for
 * any value; *err after an error. */
static const char *implied_type(conv *C, const cJSON *s) {
    static const struct {
        const char *kw, *type;
    } BY[] = {
        {"properties", "object"}, {"required", "object"},   {"additionalProperties", "object"},
        {"items", "array"},       {"prefixItems", "array"}, {"minItems", "array"},
        {"maxItems", "array"},    {"minLength", "string"},  {"maxLength", "string"},
        {"pattern", "string"},    {"format", "string"}};
    for (size_t i = 0; i < sizeof BY / sizeof *BY; i++)
        if (cJSON_GetObjectItemCaseSensitive(s, BY[i].kw) != NULL) return BY[i].type;
    const char *kw;
    if (has_num_bounds(s, &kw)) fail(C, "'%s' needs 'type' \"integer\"", kw);
    return NULL;
}

static const char *const KNOWN[] = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
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

/* The checks of a schema's keywords that do not depend on the instance's type; false after
 * an error. */
static bool check_keywords(conv *C, const cJSON *s) {
    if (!cJSON_IsObject(s)) {
        fail(C, cJSON_IsFalse(s) ? "the schema false matches nothing"
                                 : "a schema must be an object or a boolean");
        return false;
    }
    for (const cJSON *k = s->child; k != NULL; k = k->next) {
        bool known = is_annotation(k->string);
        for (size_t i = 0; i < sizeof KNOWN / sizeof *KNOWN; i++)
            known = known || strcmp(k->string, KNOWN[i]) == 0;
        if (!known) {
            fail(C, "'%s' is not supported", k->string);
            return false;
        }
    }
    static const char *const DEFS[] = {"$defs", "definitions"};
    for (int i = 0; i < 2; i++) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(s, DEFS[i]);
        if (d != NULL && !cJSON_IsObject(d)) {
            fail(C, "'%s' must be an object", DEFS[i]);
            return false;
        }
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(s, "format");
    if (fmt != NULL) {
        bool ok = false;
        for (int i = 0; i < N_FORMATS && cJSON_IsString(fmt); i++)
            ok = ok || strcmp(fmt->valuestring, FORMATS[i].name) == 0;
        if (!ok) {
            if (cJSON_IsString(fmt))
                fail(C, "'format' \"%.60s\" is not supported (only date, time, date-time, uuid)",
                     fmt->valuestring);
            else
                fail(C, "'format' must be a string");
            return false;
        }
    }
    const bool any = cJSON_GetObjectItemCaseSensitive(s, "anyOf") != NULL;
    const bool one = cJSON_GetObjectItemCaseSensitive(s, "oneOf") != NULL;
    if (any && one) {
        fail(C, "'anyOf' beside 'oneOf' is not supported");
        return false;
    }
    if (any || one) {
        const char *kw = any ? "anyOf" : "oneOf";
        const cJSON *alts = cJSON_GetObjectItemCaseSensitive(s, kw);
        if (!cJSON_IsArray(alts) || alts->child == NULL) {
            fail(C, "'%s' must be a non-empty array", kw);
            return false;
        }
        return alone_with(C, s, kw);
    }
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (en != NULL && (!cJSON_IsArray(en) || en->child == NULL)) {
        fail(C, "'enum' must be a non-empty array");
        return false;
    }
    const cJSON *cst = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (cst != NULL || en != NULL) {
        /* the values are the grammar; only a type beside them can narrow them */
        const char *kw = cst ? "const" : "enum";
        for (const cJSON *k = s->child; k != NULL; k = k->next)
            if (strcmp(k->string, "const") != 0 && strcmp(k->string, "enum") != 0 &&
                strcmp(k->string, "type") != 0 && !is_annotation(k->string)) {
                fail(C, "'%s' beside '%s' is not supported", kw, k->string);
                return false;
            }
        if (cst != NULL && en != NULL) {
            fail(C, "'const' beside 'enum' is not supported");
            return false;
        }
    }
    if (cJSON_GetObjectItemCaseSensitive(s, "$ref") != NULL) return alone_with(C, s, "$ref");
    return true;
}

static int cmp_text(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Appends the sorted, distinct texts t[0..n), which share their first off bytes, as a
 * prefix tree of alternatives: one branch per next character, so that an enumeration of
 * many values begins with a few ways to parse, not one per value (grammar.c stops at
 * CTN_GRAMMAR_MAX_STACKS). Every 32 levels the rest goes into a rule of its own, to keep
 * parentheses from nesting deep.
 */
static void put_text_tree(conv *C, ctn_strbuf *b, char **t, int n, size_t off, int level,
                          const char *name) {
    bool first = true;
    int i = 0;
    if (t[0][off] == 0) { /* sorted: a text that ends here comes first */
        ctn_sb_puts(b, "\"\"");
        first = false;
        i = 1;
    }
    while (i < n && C->rc == 0) {
        const size_t cl = ctn__utf8_len((unsigned char)t[i][off]);
        int j = i + 1;
        while (j < n && strncmp(t[j] + off, t[i] + off, cl) == 0)
            j++;
        size_t p = off + cl;
        if (j - i == 1) {
            p = strlen(t[i]);
        } else {
            for (bool same = true; same && t[i][p] != 0;) {
                const size_t c2 = ctn__utf8_len((unsigned char)t[i][p]);
                for (int k = i + 1; k < j && same; k++)
                    same = strncmp(t[k] + p, t[i] + p, c2) == 0;
                if (same) p += c2;
            }
        }
        ctn_sb_puts(b, first ? "" : " | ");
        first = false;
        put_literal_n(b, t[i] + off, p - off);
        if (j - i > 1) {
            if ((level + 1) % 32 == 0) {
                ctn_strbuf r = {0};
                put_text_tree(C, &r, t + i, j - i, p, level + 1, name);
                const char *nm = C->rc == 0 ? add_rule(C, name, ctn_sb_take(&r)) : NULL;
                if (nm == NULL) ctn_sb_free(&r);
                ctn_sb_puts(b, " ");
                ctn_sb_puts(b, nm ? nm : "");
            } else {
                ctn_sb_puts(b, " ( ");
                put_text_tree(C, b, t + i, j - i, p, level + 1, name);
                ctn_sb_puts(b, " )");
            }
        }
        i = j;
    }
}

/* The rule of const or enum (en, an array, or the one value cst): the values as cJSON
 * writes them. */
static const char *enum_rule(conv *C, const cJSON *s, const cJSON *cst, const cJSON *en,
                             const char *name) {
    const int mask = type_mask(s);
    if (mask == 0) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
        const cJSON *bad = cJSON_IsArray(type) ? type->child : type;
        while (bad != NULL && cJSON_IsString(bad) && type_bit(bad->valuestring) != 0)
            bad = bad->next;
        if (bad != NULL && cJSON_IsString(bad))
            fail(C, "unknown type '%s'", bad->valuestring);
        else
            fail(C, "'type' must be a type name or a non-empty list of them");
        return NULL;
    }
    int n = cst ? 1 : cJSON_GetArraySize(en);
    char **t = ctn__calloc((size_t)n, sizeof *t);
    if (t == NULL) {
        oom(C);
        return NULL;
    }
    int k = 0;
    for (const cJSON *v = cst ? cst : en->child; v != NULL && k < n; v = v->next) {
        if (!fits(mask, v)) continue; /* a value of another type is not valid */
        if ((t[k] = cJSON_PrintUnformatted(v)) == NULL) {
            oom(C);
            break;
        }
        k++;
    }
    n = k;
    if (C->rc == 0 && n == 0)
        fail(C, "no value of '%s' is of the 'type' beside it", cst ? "const" : "enum");
    const char *out = NULL;
    if (C->rc == 0) {
        qsort(t, (size_t)n, sizeof *t, cmp_text);
        int m = 0; /* distinct */
        for (int i = 0; i < n; i++) {
            if (m > 0 && strcmp(t[m - 1], t[i]) == 0) {
                cJSON_free(t[i]);
                continue;
            }
            t[m++] = t[i];
        }
        k = m;
        char sub[200];
        snprintf(sub, sizeof sub, "%s-rest", name);
        ctn_strbuf b = {0};
        ctn_sb_puts(&b, "( ");
        put_text_tree(C, &b, t, m, 0, 0, sub);
        ctn_sb_puts(&b, " ) space");
        prim(C, "space");
        if (C->rc == 0)
            out = add_rule(C, name, ctn_sb_take(&b));
        else
            ctn_sb_free(&b);
    }
    for (int i = 0; i < k; i++)
        cJSON_free(t[i]);
    free(t);
    return out;
}

static const char *visit_in(conv *C, const cJSON *s, const char *name) {
    if (cJSON_IsTrue(s)) return prim(C, "value");
    if (!check_keywords(C, s)) return NULL;
    const cJSON *refv = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (refv != NULL) return ref_rule(C, refv);
    const char *alt_kw = cJSON_GetObjectItemCaseSensitive(s, "anyOf")   ? "anyOf"
                         : cJSON_GetObjectItemCaseSensitive(s, "oneOf") ? "oneOf"
                                                                        : NULL;
    if (alt_kw != NULL) {
        /* oneOf as anyOf, as llama.cpp writes it: alternatives */
        const cJSON *alts = cJSON_GetObjectItemCaseSensitive(s, alt_kw);
        const char **alts_seen = ctn__calloc((size_t)cJSON_GetArraySize(alts), sizeof *alts_seen);
        if (alts_seen == NULL) {
            oom(C);
            return NULL;
        }
        int n_alts = 0;
        ctn_strbuf b = {0};
        const size_t plen = strlen(C->path);
        int i = 0;
        for (const cJSON *a = alts->child; a != NULL && C->rc == 0; a = a->next, i++) {
            char aname[200];
            snprintf(aname, sizeof aname, "%s-%d", name, i);
            path_push(C->path, sizeof C->path, alt_kw);
            path_push_index(C->path, sizeof C->path, i);
            const char *r = visit(C, a, aname);
            C->path[plen] = 0;
            bool again = false; /* the same rule twice is one alternative */
            for (int j = 0; j < n_alts && r != NULL; j++)
                again = again || strcmp(alts_seen[j], r) == 0;
            if (r != NULL && !again) {
                ctn_sb_puts(&b, n_alts ? " | " : "");
                ctn_sb_puts(&b, r);
                alts_seen[n_alts++] = r;
            }
        }
        free(alts_seen);
        if (C->rc < 0) {
            ctn_sb_free(&b);
            return NULL;
        }
        return add_rule(C, name, ctn_sb_take(&b));
    }
    if (cJSON_GetObjectItemCaseSensitive(s, "allOf") != NULL) {
        const cJSON *m = merge_all_of(C, s);
        return m ? visit(C, m, name) : NULL;
    }
    const cJSON *cst = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (cst != NULL || en != NULL) return enum_rule(C, s, cst, en, name);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (type == NULL) {
        const char *t = implied_type(C, s);
        if (C->rc < 0) return NULL;
        return t ? type_rule(C, s, t, name) : prim(C, "value");
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
        bool again = false; /* a type named twice is one alternative */
        for (const cJSON *u = type->child; u != t; u = u->next)
            again = again || strcmp(u->valuestring, t->valuestring) == 0;
        if (again) continue;
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

/* ---- the converter's entry ----------------------------------------------------------------- */

static void conv_close(conv *C) {
    for (int i = 0; i < C->n; i++) {
        free(C->names[i]);
        free(C->bodies[i]);
    }
    free(C->names);
    free(C->bodies);
    free(C->refs);
    for (int i = 0; i < C->n_owned; i++)
        cJSON_Delete(C->owned[i]);
    free(C->owned);
    free(C->merged);
}

/* Parses the schema text into *root (0, or CTN_EINVAL / CTN_ENOMEM with err). */
static int parse_schema(const char *schema, size_t n, cJSON **root, char *err, size_t errlen) {
    *root = NULL;
    if (schema == NULL && n > 0) {
        ctn__errf(err, errlen, "schema: no text");
        return CTN_EINVAL;
    }
    if (!ctn__utf8_valid(schema, n)) { /* cJSON would pass bad bytes into the literals */
        ctn__errf(err, errlen, "schema: not valid UTF-8");
        return CTN_EINVAL;
    }
    int rc = 0;
    const char *end = NULL;
    *root = ctn__json_parse(schema, n, true, &end, &rc);
    if (*root != NULL) return 0;
    if (rc == CTN_ENOMEM) {
        ctn__errf(err, errlen, "out of memory reading the schema");
        return CTN_ENOMEM;
    }
    ctn__errf(err, errlen, "schema: not valid JSON (near byte %lld)",
              (long long)(end != NULL && end >= schema ? end - schema : 0));
    return CTN_EINVAL;
}

/* Converts root in C (which the caller closes); *gbnf (may be NULL: only check) gets the
 * grammar. Returns C->rc. */
static int convert(conv *C, const cJSON *root, char **gbnf, char *err, size_t errlen) {
    memset(C, 0, sizeof *C);
    C->err = err;
    C->errlen = errlen;
    C->fill = -1;
    C->root = root;
    C->refs = ctn__malloc(8 * sizeof *C->refs);
    if (C->refs == NULL) {
        oom(C);
        return C->rc;
    }
    C->cap_refs = 8;
    C->refs[C->n_refs++] = (ref_entry){"#", -1, 0, true}; /* the root is rule root */
    const char *top = visit(C, root, "root");
    if (C->rc == 0 && top == NULL) oom(C);
    if (C->rc < 0 || gbnf == NULL) return C->rc;
    ctn_strbuf out = {0};
    /* root first: the schema's own rule, or a reference to a primitive */
    int ri = -1;
    for (int i = 0; i < C->n; i++)
        if (strcmp(C->names[i], "root") == 0) ri = i;
    ctn_sb_puts(&out, "root ::= ");
    ctn_sb_puts(&out, ri >= 0 ? C->bodies[ri] : top);
    ctn_sb_puts(&out, "\n");
    for (int i = 0; i < C->n; i++) {
        if (i == ri) continue;
        ctn_sb_puts(&out, C->names[i]);
        ctn_sb_puts(&out, " ::= ");
        ctn_sb_puts(&out, C->bodies[i]);
        ctn_sb_puts(&out, "\n");
    }
    for (int i = 0; i < N_PRIMS; i++)
        if (C->prim[i]) {
            ctn_sb_puts(&out, PRIMS[i].name);
            ctn_sb_puts(&out, " ::= ");
            ctn_sb_puts(&out, PRIMS[i].body);
            ctn_sb_puts(&out, "\n");
        }
    *gbnf = ctn_sb_take(&out);
    if (*gbnf == NULL) oom(C);
    return C->rc;
}

int ctn_json_schema_to_gbnf(const char *schema, size_t n, char **gbnf, char *err, size_t errlen) {
    if (gbnf != NULL) *gbnf = NULL;
    if (gbnf == NULL) {
        ctn__errf(err, errlen, "schema: no text");
        return CTN_EINVAL;
    }
    cJSON *root;
    int rc = parse_schema(schema, n, &root, err, errlen);
    if (rc < 0) return rc;
    conv C;
    rc = convert(&C, root, gbnf, err, errlen);
    conv_close(&C);
    cJSON_Delete(root);
    if (rc < 0 && *gbnf != NULL) {
        free(*gbnf);
        *gbnf = NULL;
    }
    return rc;
}

/* ---- the validator ---------------------------------------------------------------------- */

typedef struct {
    const void *key; /* the pattern text it was compiled from */
    pcre2_code *re;
} re_entry;

typedef struct {
    conv *C; /* the converted schema: references, merges */
    char *err;
    size_t errlen;
    int rc;
    int depth;
    char path[512];    /* JSON pointer in the instance */
    char scratch[200]; /* complaints of alternatives past the first */
    pcre2_general_context *gctx;
    pcre2_compile_context *cctx;
    pcre2_match_context *mctx;
    re_entry *res;
    int n_res, cap_res;
} vstate;

#define MAX_VDEPTH 2048

static void vfail(vstate *V, const char *fmt, ...) {
    if (V->rc < 0) return;
    V->rc = CTN_EINVAL;
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctn__errf(V->err, V->errlen, "at %s: %s", V->path[0] ? V->path : "/", msg);
}

static void voom(vstate *V) {
    if (V->rc == CTN_ENOMEM) return;
    V->rc = CTN_ENOMEM;
    ctn__errf(V->err, V->errlen, "out of memory validating the JSON");
}

static void *pcre_alloc(size_t n, void *ud) {
    (void)ud;
    return ctn__malloc(n);
}

static void pcre_free(void *p, void *ud) {
    (void)ud;
    free(p);
}

/* A number as the messages write it. */
static void num_text(char *out, size_t cap, double d) {
    if (d == floor(d) && fabs(d) < 1e15)
        snprintf(out, cap, "%lld", (long long)d);
    else
        snprintf(out, cap, "%.17g", d);
}

/* A short form of a value for messages. */
static void value_text(vstate *V, char *out, size_t cap, const cJSON *x) {
    char *j = cJSON_PrintUnformatted(x);
    if (j == NULL) {
        voom(V);
        snprintf(out, cap, "the value");
        return;
    }
    if (strlen(j) > 40)
        snprintf(out, cap, "%.37s...", j);
    else
        snprintf(out, cap, "%s", j);
    cJSON_free(j);
}

/* Whether s (NUL-terminated, valid UTF-8) matches the regular expression re[0..n) whole;
 * -1 after an error. The compiled form is kept per key. */
static int v_match(vstate *V, const void *key, const char *re, size_t n, const char *s) {
    pcre2_code *code = NULL;
    for (int i = 0; i < V->n_res && code == NULL; i++)
        if (V->res[i].key == key) code = V->res[i].re;
    if (code == NULL) {
        if (V->gctx == NULL) {
            V->gctx = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
            V->cctx = V->gctx ? pcre2_compile_context_create(V->gctx) : NULL;
            V->mctx = V->gctx ? pcre2_match_context_create(V->gctx) : NULL;
            if (V->mctx == NULL || V->cctx == NULL) {
                voom(V);
                return -1;
            }
            pcre2_set_newline(V->cctx, PCRE2_NEWLINE_LF);
            pcre2_set_match_limit(V->mctx, 1000000);
        }
        if (V->n_res == V->cap_res) {
            const int cap = V->cap_res ? V->cap_res * 2 : 4;
            re_entry *a = ctn__realloc(V->res, (size_t)cap * sizeof *a);
            if (a == NULL) {
                voom(V);
                return -1;
            }
            V->res = a;
            V->cap_res = cap;
        }
        int ec;
        PCRE2_SIZE eo;
        code = pcre2_compile((PCRE2_SPTR)re, n,
                             PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_DOLLAR_ENDONLY |
                                 PCRE2_ALT_BSUX | PCRE2_NEVER_BACKSLASH_C,
                             &ec, &eo, V->cctx);
        if (code == NULL) {
            if (ec == PCRE2_ERROR_HEAP_FAILED) {
                voom(V);
                return -1;
            }
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(ec, msg, sizeof msg);
            /* the converter's subset is within PCRE2's syntax; this would be a defect */
            if (V->rc == 0) {
                V->rc = CTN_EINVAL;
                ctn__errf(V->err, V->errlen,
                          "schema: 'pattern' %.*s is refused by PCRE2 at byte %d: %s",
                          (int)(n > 60 ? 60 : n), re, (int)eo, (const char *)msg);
            }
            return -1;
        }
        V->res[V->n_res++] = (re_entry){key, code};
    }
    pcre2_match_data *md = pcre2_match_data_create(1, V->gctx);
    if (md == NULL) {
        voom(V);
        return -1;
    }
    const int rc = pcre2_match(code, (PCRE2_SPTR)s, strlen(s), 0, 0, md, V->mctx);
    pcre2_match_data_free(md);
    if (rc >= 0) return 1;
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc == PCRE2_ERROR_NOMEMORY || rc == PCRE2_ERROR_HEAPLIMIT) {
        voom(V);
        return -1;
    }
    vfail(V, "the string could not be matched against its pattern (PCRE2 error %d)", rc);
    return -1;
}

static int count_chars(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static bool v_visit(vstate *V, const cJSON *s, const cJSON *x);

static const char *type_of(const cJSON *x) {
    if (cJSON_IsObject(x)) return "an object";
    if (cJSON_IsArray(x)) return "an array";
    if (cJSON_IsString(x)) return "a string";
    if (cJSON_IsNumber(x)) return "a number";
    if (cJSON_IsBool(x)) return "a boolean";
    return "null";
}

static bool v_string(vstate *V, const cJSON *s, const cJSON *x) {
    const char *str = x->valuestring;
    const int n = count_chars(str);
    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(s, "minLength");
    const cJSON *hi = cJSON_GetObjectItemCaseSensitive(s, "maxLength");
    if (lo != NULL && n < lo->valueint) {
        vfail(V, "the string of %d characters is shorter than the minLength %d", n, lo->valueint);
        return false;
    }
    if (hi != NULL && n > hi->valueint) {
        vfail(V, "the string of %d characters is longer than the maxLength %d", n, hi->valueint);
        return false;
    }
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    if (pat != NULL) {
        size_t a, b;
        pattern_span(pat->valuestring, &a, &b);
        const int m = v_match(V, pat, pat->valuestring + a, b - a, str);
        if (m == 0) {
            char t[64];
            value_text(V, t, sizeof t, x);
            vfail(V, "%s does not match the pattern %.80s", t, pat->valuestring);
        }
        if (m <= 0) return false;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(s, "format");
    for (int i = 0; fmt != NULL && i < N_FORMATS; i++) {
        if (strcmp(fmt->valuestring, FORMATS[i].name) != 0) continue;
        const int m = v_match(V, FORMATS[i].re, FORMATS[i].re, strlen(FORMATS[i].re), str);
        if (m == 0) {
            char t[64];
            value_text(V, t, sizeof t, x);
            vfail(V, "%s is not a %s (format)", t, FORMATS[i].name);
        }
        if (m <= 0) return false;
    }
    return true;
}

static bool v_number(vstate *V, const cJSON *s, const cJSON *x) {
    static const struct {
        const char *kw, *msg;
        int cmp; /* the instance must be: 1 >=, 2 >, -1 <=, -2 < */
    } B[] = {{"minimum", "less than the minimum", 1},
             {"exclusiveMinimum", "not greater than the exclusive minimum", 2},
             {"maximum", "greater than the maximum", -1},
             {"exclusiveMaximum", "not less than the exclusive maximum", -2}};
    const double d = x->valuedouble;
    for (int i = 0; i < 4; i++) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(s, B[i].kw);
        if (b == NULL) continue;
        const double e = b->valuedouble;
        const bool ok = B[i].cmp == 1    ? d >= e
                        : B[i].cmp == 2  ? d > e
                        : B[i].cmp == -1 ? d <= e
                                         : d < e;
        if (!ok) {
            char t1[40], t2[40];
            num_text(t1, sizeof t1, d);
            num_text(t2, sizeof t2, e);
            vfail(V, "%s is %s %s", t1, B[i].msg, t2);
            return false;
        }
    }
    return true;
}

static bool v_object(vstate *V, const cJSON *s, const cJSON *x) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    /* as the grammar reads it: with properties or required, no other keys unless
     * additionalProperties says so */
    const bool closed =
        (props != NULL || req != NULL) ? (ap == NULL || cJSON_IsFalse(ap)) : cJSON_IsFalse(ap);
    for (const cJSON *r = req ? req->child : NULL; r != NULL; r = r->next)
        if (cJSON_GetObjectItemCaseSensitive(x, r->valuestring) == NULL) {
            vfail(V, "the required property '%.80s' is missing", r->valuestring);
            return false;
        }
    const size_t plen = strlen(V->path);
    for (const cJSON *m = x->child; m != NULL && V->rc == 0; m = m->next) {
        const cJSON *ps = props ? cJSON_GetObjectItemCaseSensitive(props, m->string) : NULL;
        if (ps == NULL && closed) {
            vfail(V, "the property '%.80s' is not allowed (no 'additionalProperties')", m->string);
            return false;
        }
        const cJSON *sub = ps ? ps : ap;
        if (sub == NULL) continue;
        path_push(V->path, sizeof V->path, m->string);
        v_visit(V, sub, m);
        if (V->rc == 0) V->path[plen] = 0;
    }
    return V->rc == 0;
}

static bool v_array(vstate *V, const cJSON *s, const cJSON *x) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(s, "prefixItems");
    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(s, "minItems");
    const cJSON *hi = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
    const int n = cJSON_GetArraySize(x);
    if (lo != NULL && n < lo->valueint) {
        vfail(V, "%d items are fewer than the minItems %d", n, lo->valueint);
        return false;
    }
    if (hi != NULL && n > hi->valueint) {
        vfail(V, "%d items are more than the maxItems %d", n, hi->valueint);
        return false;
    }
    const cJSON *p = pre ? pre->child : NULL;
    const size_t plen = strlen(V->path);
    int i = 0;
    for (const cJSON *e = x->child; e != NULL && V->rc == 0; e = e->next, i++) {
        const cJSON *sub = p ? p : items;
        if (p != NULL) p = p->next;
        if (sub == NULL) continue;
        path_push_index(V->path, sizeof V->path, i);
        if (cJSON_IsFalse(sub))
            vfail(V, "no item may come here ('items' is false)");
        else
            v_visit(V, sub, e);
        if (V->rc == 0) V->path[plen] = 0;
    }
    return V->rc == 0;
}

static bool v_visit_in(vstate *V, const cJSON *s, const cJSON *x) {
    conv *C = V->C;
    if (cJSON_IsTrue(s)) return true;
    const cJSON *refv = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (refv != NULL) {
        char ptr[512];
        const cJSON *t = ref_target(C, refv, ptr, sizeof ptr);
        return t != NULL && v_visit(V, t, x);
    }
    const char *alt_kw = cJSON_GetObjectItemCaseSensitive(s, "anyOf")   ? "anyOf"
                         : cJSON_GetObjectItemCaseSensitive(s, "oneOf") ? "oneOf"
                                                                        : NULL;
    if (alt_kw != NULL) {
        /* oneOf as anyOf, as the grammar takes it; the first alternative's complaint is
         * kept for the message */
        char first[200] = "";
        char *err = V->err;
        const size_t errlen = V->errlen, plen = strlen(V->path);
        int i = 0;
        for (const cJSON *a = cJSON_GetObjectItemCaseSensitive(s, alt_kw)->child; a != NULL;
             a = a->next, i++) {
            V->err = i == 0 ? first : V->scratch;
            V->errlen = i == 0 ? sizeof first : sizeof V->scratch;
            const bool ok = v_visit(V, a, x);
            V->err = err;
            V->errlen = errlen;
            V->path[plen] = 0;
            if (ok) return true;
            if (V->rc == CTN_ENOMEM) {
                ctn__errf(err, errlen, "out of memory validating the JSON");
                return false;
            }
            V->rc = 0;
        }
        vfail(V, "no alternative of '%s' matches (the first: %s)", alt_kw, first);
        return false;
    }
    if (cJSON_GetObjectItemCaseSensitive(s, "allOf") != NULL) {
        const cJSON *m = merge_all_of(C, s);
        if (m == NULL) {
            voom(V); /* the converter merged it once already: only memory can fail */
            return false;
        }
        return v_visit(V, m, x);
    }
    const cJSON *cst = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (cst != NULL && !cJSON_Compare(cst, x, true)) {
        char t[64];
        value_text(V, t, sizeof t, cst);
        vfail(V, "the value is not the const %s", t);
        return false;
    }
    if (en != NULL) {
        bool in = false;
        for (const cJSON *v = en->child; v != NULL && !in; v = v->next)
            in = cJSON_Compare(v, x, true);
        if (!in) {
            char t[64];
            value_text(V, t, sizeof t, x);
            vfail(V, "%s is not one of the enum's values", t);
            return false;
        }
    }
    int mask = type_mask(s);
    if (mask == T_ANY && cst == NULL && en == NULL &&
        cJSON_GetObjectItemCaseSensitive(s, "type") == NULL) {
        const char *t = implied_type(C, s);
        mask = t ? type_bit(t) : T_ANY;
    }
    if (!fits(mask, x)) {
        char want[80] = "";
        static const char *const NAMES[] = {"object",  "array",   "string", "number",
                                            "integer", "boolean", "null"};
        for (int i = 0; i < 7; i++)
            if (mask & (1 << i)) {
                if (want[0]) strcat(want, " or ");
                strcat(want, NAMES[i]);
            }
        char t[64];
        value_text(V, t, sizeof t, x);
        if (cJSON_IsNumber(x) && (mask & T_INT))
            vfail(V, "%s is not an integer", t);
        else
            vfail(V, "%s is %s, not %s", t, type_of(x), want);
        return false;
    }
    if (cst != NULL || en != NULL) return true; /* nothing else beside them */
    if (cJSON_IsString(x)) return v_string(V, s, x);
    if (cJSON_IsNumber(x)) return v_number(V, s, x);
    if (cJSON_IsObject(x)) return v_object(V, s, x);
    if (cJSON_IsArray(x)) return v_array(V, s, x);
    return true;
}

static bool v_visit(vstate *V, const cJSON *s, const cJSON *x) {
    if (V->rc < 0) return false;
    if (V->depth >= MAX_VDEPTH) {
        vfail(V, "the JSON nests too deeply for its schema");
        return false;
    }
    V->depth++;
    const bool ok = v_visit_in(V, s, x);
    V->depth--;
    if (!ok && V->rc == 0) vfail(V, "does not validate");
    return ok && V->rc == 0;
}

int ctn_json_schema_validate(const char *schema, size_t n, const char *json, size_t jn, char *err,
                             size_t errlen) {
    cJSON *root;
    int rc = parse_schema(schema, n, &root, err, errlen);
    if (rc < 0) return rc;
    conv C;
    rc = convert(&C, root, NULL, err, errlen);
    cJSON *inst = NULL;
    if (json == NULL && jn == 0) json = "";
    if (rc == 0 && json == NULL) {
        ctn__errf(err, errlen, "not JSON: no text");
        rc = CTN_EINVAL;
    } else if (rc == 0 && !ctn__utf8_valid(json, jn)) {
        ctn__errf(err, errlen, "not JSON: not valid UTF-8");
        rc = CTN_EINVAL;
    } else if (rc == 0) {
        const char *end = NULL;
        int prc = 0;
        inst = ctn__json_parse(json, jn, true, &end, &prc);
        if (inst == NULL && prc == CTN_ENOMEM) {
            ctn__errf(err, errlen, "out of memory reading the JSON");
            rc = CTN_ENOMEM;
        } else if (inst == NULL) {
            const size_t at =
                end != NULL && end >= json && end <= json + jn ? (size_t)(end - json) : 0;
            char near[24];
            size_t k = 0;
            for (size_t i = at; i < jn && k + 1 < sizeof near && i < at + 16; i++)
                near[k++] = json[i] >= 0x20 && json[i] < 0x7F ? json[i] : '?';
            near[k] = 0;
            ctn__errf(err, errlen, "not JSON at byte %zu: %s%s%s", at,
                      k ? "near '" : "the text ends there", near, k ? "'" : "");
            rc = CTN_EINVAL;
        }
    }
    if (rc == 0) {
        vstate V;
        memset(&V, 0, sizeof V);
        V.C = &C;
        V.err = err;
        V.errlen = errlen;
        v_visit(&V, root, inst);
        rc = V.rc;
        for (int i = 0; i < V.n_res; i++)
            pcre2_code_free(V.res[i].re);
        free(V.res);
        pcre2_match_context_free(V.mctx);
        pcre2_compile_context_free(V.cctx);
        pcre2_general_context_free(V.gctx);
    }
    cJSON_Delete(inst);
    conv_close(&C);
    cJSON_Delete(root);
    return rc;
}
