/*
 * safetensors reader and writer (see safetensors.h for the format and the API).
 *
 * The header is JSON, parsed by cJSON, and cJSON is more lenient than the format: it takes
 * any byte below 0x20 as whitespace, raw control characters and bytes that are not UTF-8
 * inside strings, "\u0000" (which cuts a C string short), duplicate keys, and numbers of
 * any kind. So the reader checks the header text once more itself (check_text), then every
 * member of the tree, then the layout of the data. Everything the object keeps (names,
 * metadata, the tensor table and a name index) is copied out of the tree, which is freed
 * before open returns; the tensor data stays in the mapping.
 */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h" /* the object's own tables go through ctn__malloc (failure injection) */
#include "error.h"
#include "mapfile.h"
#include "quant.h"
#include "str.h"
#include "unicode.h"

/* The largest header the reader accepts (the reference implementation's limit). */
#define MAX_HEADER ((uint64_t)100 << 20)
/*
 * Shapes and offsets must be below 2^53: a JSON number reaches cJSON as a double, and from
 * 2^53 on a double no longer tells neighbouring integers apart.
 */
#define MAX_JSON_INT 9007199254740992.0

#define METADATA_KEY "__metadata__"

/* ---- dtypes ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    uint8_t size;
} DTYPES[CTN_ST_N_DTYPES] = {
    [CTN_ST_BOOL] = {"BOOL", 1},       [CTN_ST_U8] = {"U8", 1},
    [CTN_ST_I8] = {"I8", 1},           [CTN_ST_F8_E4M3] = {"F8_E4M3", 1},
    [CTN_ST_F8_E5M2] = {"F8_E5M2", 1}, [CTN_ST_I16] = {"I16", 2},
    [CTN_ST_U16] = {"U16", 2},         [CTN_ST_F16] = {"F16", 2},
    [CTN_ST_BF16] = {"BF16", 2},       [CTN_ST_I32] = {"I32", 4},
    [CTN_ST_U32] = {"U32", 4},         [CTN_ST_F32] = {"F32", 4},
    [CTN_ST_I64] = {"I64", 8},         [CTN_ST_U64] = {"U64", 8},
    [CTN_ST_F64] = {"F64", 8},
};

const char *ctn_st_dtype_name(ctn_st_dtype d) {
    return (unsigned)d < CTN_ST_N_DTYPES ? DTYPES[d].name : "?";
}

size_t ctn_st_dtype_size(ctn_st_dtype d) {
    return (unsigned)d < CTN_ST_N_DTYPES ? DTYPES[d].size : 0;
}

static int dtype_from_name(const char *s) {
    for (int d = 0; d < CTN_ST_N_DTYPES; d++) {
        if (strcmp(DTYPES[d].name, s) == 0) return d;
    }
    return -1;
}

/* ---- small helpers ----------------------------------------------------------------- */

static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}

/* Element count of a shape; false when it overflows int64 or a dimension is negative. */
static bool shape_elements(int32_t n_dims, const int64_t *shape, uint64_t *out) {
    uint64_t n = 1;
    for (int32_t i = 0; i < n_dims; i++) {
        if (shape[i] < 0 || !mul_u64(n, (uint64_t)shape[i], &n) || n > (uint64_t)INT64_MAX) {
            return false;
        }
    }
    *out = n;
    return true;
}

static bool json_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool utf8_valid(const char *s) {
    return ctn__utf8_valid(s, strlen(s));
}

/*
 * Writes a name from the file into dst for a message: printable ASCII as is, every other
 * byte as \xNN, cut after 80 bytes. Names come from hostile files and end up in terminals.
 */
static void quote(char *dst, size_t cap, const char *s) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    if (s == NULL) s = "";
    for (; s[i] != '\0' && i < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            if (o + 1 >= cap) break;
            dst[o++] = (char)c;
        } else {
            if (o + 4 >= cap) break;
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    if (s[i] != '\0' && o + 3 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    if (cap > 0) dst[o < cap ? o : cap - 1] = '\0';
}

/* ---- the object -------------------------------------------------------------------- */

typedef struct {
    const char *key, *value;
} meta_entry;

struct ctn_st {
    char *path;          /* file name (or the caller's name) for messages */
    void *map;           /* the mapping to unmap, or NULL (open_memory, empty file) */
    size_t map_len;      /* bytes mapped */
    int64_t n_tensors;   /* entries of the header other than __metadata__ */
    ctn_st_tensor *t;    /* (n_tensors) in the order of their data offsets */
    ctn_st_tensor **idx; /* (n_tensors) sorted by name, for ctn_st_find */
    int64_t n_meta;      /* __metadata__ keys */
    meta_entry *meta;    /* (n_meta) sorted by key */
    char *strings;       /* every name, key and value, NUL-terminated, back to back */
};

void ctn_st_free(ctn_st *f) {
    if (f == NULL) return;
    ctn__unmap_file(f->map, f->map_len);
    free(f->t);
    free(f->idx);
    free(f->meta);
    free(f->strings);
    free(f->path);
    free(f);
}

static ctn_st *st_new(const char *name) {
    ctn_st *f = ctn__calloc(1, sizeof *f);
    if (f == NULL) return NULL;
    if (name == NULL) name = "<memory>";
    size_t n = strlen(name);
    f->path = ctn__malloc(n + 1);
    if (f->path == NULL) {
        free(f);
        return NULL;
    }
    memcpy(f->path, name, n + 1);
    return f;
}

/* ---- parsing ----------------------------------------------------------------------- */

/* One header entry while it is checked. */
typedef struct {
    const char *name; /* in the cJSON tree */
    ctn_st_dtype dtype;
    int32_t n_dims;
    int64_t shape[CTN_ST_MAX_DIMS];
    uint64_t begin, end; /* data_offsets */
    int64_t order;       /* position in the header, to keep sorts deterministic */
} entry;

typedef struct {
    ctn_st *f;
    const uint8_t *base; /* the whole file */
    uint64_t size;
    const char *json;  /* the header, base + 8 */
    uint64_t json_len; /* N */
    uint64_t data_size;
    char *err;
    size_t errcap;
} parser;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int
fail(parser *p, int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctn__errf(p->err, p->errcap, "%s: %s", p->f->path, msg);
    return code;
}

/* "tensor 'name'" (or "__metadata__") for a message about a header member. */
static void member_label(char *dst, size_t cap, const char *name) {
    char q[400];
    if (name != NULL && strcmp(name, METADATA_KEY) == 0) {
        snprintf(dst, cap, "%s", METADATA_KEY);
        return;
    }
    quote(q, sizeof q, name);
    snprintf(dst, cap, "tensor '%s'", q);
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int
fail_member(parser *p, const char *name, const char *field, const char *fmt, ...) {
    char msg[512], label[440];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    member_label(label, sizeof label, name);
    return fail(p, CTN_EFORMAT, "%s: %s: %s", label, field, msg);
}

static const char *json_kind(const cJSON *v) {
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "an unknown value";
}

/* An exact non-negative integer below 2^53. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < MAX_JSON_INT)) return false; /* NaN fails too */
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return false;
    *out = u;
    return true;
}

static const cJSON *root_member(const cJSON *root, int64_t i) {
    const cJSON *c = root->child;
    for (; c != NULL && i > 0; i--)
        c = c->next;
    return c;
}

/*
 * Length of the JSON number at s, or 0 when the characters cJSON would take as one (it hands
 * any run of [-+.eE0-9] to strtod) do not follow the JSON grammar: "+1", "01", ".5" and "1."
 * are refused, as the reference implementation refuses them.
 */
static size_t json_number_len(const uint8_t *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    } else {
        return 0;
    }
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d) return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d) return 0;
    }
    /* What cJSON would still count as part of the number must not follow. */
    if (i < n && (s[i] == '+' || s[i] == '-' || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
                  (s[i] >= '0' && s[i] <= '9'))) {
        return 0;
    }
    return i;
}

/*
 * Walks the header text cJSON accepted (json_end bytes of it) for what cJSON lets through
 * and the format does not: a control byte between tokens, and strings that hold a NUL
 * (raw or as \u0000), a raw control character or bytes that are not UTF-8, and numbers
 * outside the JSON grammar. A NUL would cut the C string cJSON hands back, so two different
 * names could compare equal. The fault is reported against the root member it is in:
 * members are counted as their keys go by, in the same order cJSON keeps them as children.
 */
static int check_text(parser *p, const cJSON *root, size_t json_end) {
    const uint8_t *s = (const uint8_t *)p->json;
    size_t n = json_end;
    int depth = 0;
    int64_t member = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '{' || c == '[') {
            depth++;
            continue;
        }
        if (c == '}' || c == ']') {
            depth--;
            continue;
        }
        if (c < 0x20 && !json_space(c)) {
            const cJSON *m = member >= 0 ? root_member(root, member) : NULL;
            if (m == NULL) {
                return fail(p, CTN_EFORMAT, "header: control byte 0x%02x at header offset %zu", c,
                            i);
            }
            return fail_member(p, m->string, "header text", "control byte 0x%02x at offset %zu", c,
                               i);
        }
        if (c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9')) {
            size_t k = json_number_len(s + i, n - i);
            if (k == 0) {
                const cJSON *m = member >= 0 ? root_member(root, member) : NULL;
                if (m == NULL) {
                    return fail(p, CTN_EFORMAT, "header: malformed number at header offset %zu", i);
                }
                return fail_member(p, m->string, "header text",
                                   "malformed JSON number at offset %zu", i);
            }
            i += k - 1;
            continue;
        }
        if (c != '"') continue;
        const char *bad = NULL;
        size_t j = i + 1;
        while (j < n && s[j] != '"') {
            if (s[j] == '\\') {
                if (bad == NULL && j + 5 < n && s[j + 1] == 'u' &&
                    memcmp(s + j + 2, "0000", 4) == 0)
                    bad = "a NUL character (\\u0000)";
                j += 2; /* the escaped character cannot end the string */
                continue;
            }
            if (s[j] < 0x20) {
                if (bad == NULL) bad = s[j] == 0 ? "a NUL byte" : "a raw control character";
                j++;
            } else if (s[j] >= 0x80) {
                const int k = ctn__utf8_char(s + j, n - j);
                if (k <= 0 && bad == NULL) bad = "bytes that are not UTF-8";
                j += k > 0 ? (size_t)k : 1;
            } else {
                j++;
            }
        }
        bool is_key = false;
        if (depth == 1) {
            size_t k = j + 1;
            while (k < n && json_space(s[k]))
                k++;
            is_key = k < n && s[k] == ':';
        }
        if (is_key) member++;
        if (bad != NULL) {
            const cJSON *m = member >= 0 ? root_member(root, member) : NULL;
            if (m == NULL) return fail(p, CTN_EFORMAT, "header: a string holds %s", bad);
            if (is_key) {
                return fail_member(p, m->string, "name",
                                   "the name (member %" PRId64 " of the header) holds %s", member,
                                   bad);
            }
            return fail_member(p, m->string, "header text", "a string at offset %zu holds %s", i,
                               bad);
        }
        i = j; /* the closing quote */
    }
    return 0;
}

/* Checks one tensor entry of the header and fills e. */
static int parse_entry(parser *p, const cJSON *item, entry *e) {
    const char *name = item->string;
    e->name = name;
    if (name[0] == '\0') return fail_member(p, name, "name", "empty tensor name");
    if (!cJSON_IsObject(item)) {
        return fail_member(p, name, "entry", "is %s, not an object", json_kind(item));
    }
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *c = item->child; c != NULL; c = c->next) {
        const cJSON **slot = NULL;
        if (c->string == NULL) continue;
        if (strcmp(c->string, "dtype") == 0) slot = &dtype;
        if (strcmp(c->string, "shape") == 0) slot = &shape;
        if (strcmp(c->string, "data_offsets") == 0) slot = &offs;
        if (slot == NULL) continue; /* other fields are ignored, as the reference does */
        if (*slot != NULL) return fail_member(p, name, c->string, "given twice");
        *slot = c;
    }

    if (dtype == NULL) return fail_member(p, name, "dtype", "missing");
    if (!cJSON_IsString(dtype)) {
        return fail_member(p, name, "dtype", "is %s, not a string", json_kind(dtype));
    }
    int d = dtype_from_name(dtype->valuestring);
    if (d < 0) {
        char q[200];
        quote(q, sizeof q, dtype->valuestring);
        return fail_member(p, name, "dtype", "unknown dtype '%s'", q);
    }
    e->dtype = (ctn_st_dtype)d;

    if (shape == NULL) return fail_member(p, name, "shape", "missing");
    if (!cJSON_IsArray(shape)) {
        return fail_member(p, name, "shape", "is %s, not an array", json_kind(shape));
    }
    e->n_dims = 0;
    for (const cJSON *c = shape->child; c != NULL; c = c->next) {
        if (e->n_dims == CTN_ST_MAX_DIMS) {
            return fail_member(p, name, "shape", "more than %d dimensions", CTN_ST_MAX_DIMS);
        }
        uint64_t v;
        if (!json_uint(c, &v)) {
            return fail_member(p, name, "shape",
                               "dimension %d is not a non-negative integer below 2^53",
                               (int)e->n_dims);
        }
        e->shape[e->n_dims++] = (int64_t)v;
    }
    uint64_t nel, nbytes;
    if (!shape_elements(e->n_dims, e->shape, &nel)) {
        return fail_member(p, name, "shape", "the element count overflows int64");
    }
    if (!mul_u64(nel, DTYPES[d].size, &nbytes)) {
        return fail_member(p, name, "shape", "the byte count overflows");
    }

    if (offs == NULL) return fail_member(p, name, "data_offsets", "missing");
    if (!cJSON_IsArray(offs)) {
        return fail_member(p, name, "data_offsets", "is %s, not an array", json_kind(offs));
    }
    const cJSON *b = offs->child, *en = b != NULL ? b->next : NULL;
    if (b == NULL || en == NULL || en->next != NULL) {
        return fail_member(p, name, "data_offsets", "must hold exactly 2 numbers");
    }
    if (!json_uint(b, &e->begin) || !json_uint(en, &e->end)) {
        return fail_member(p, name, "data_offsets",
                           "begin and end must be non-negative integers below 2^53");
    }
    if (e->begin > e->end) {
        return fail_member(p, name, "data_offsets", "begin %" PRIu64 " > end %" PRIu64, e->begin,
                           e->end);
    }
    if (e->end > p->data_size) {
        return fail_member(p, name, "data_offsets",
                           "end %" PRIu64 " is past the %" PRIu64 " bytes of data", e->end,
                           p->data_size);
    }
    if (e->end - e->begin != nbytes) {
        return fail_member(p, name, "data_offsets",
                           "[%" PRIu64 ", %" PRIu64 "] holds %" PRIu64 " bytes but %s%s of %" PRIu64
                           " elements needs %" PRIu64,
                           e->begin, e->end, e->end - e->begin, e->n_dims ? "" : "a scalar ",
                           DTYPES[d].name, nel, nbytes);
    }
    return 0;
}

static int cmp_entry_name(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0) return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int cmp_entry_offset(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const meta_entry *)a)->key, ((const meta_entry *)b)->key);
}

static int cmp_tensor_ptr(const void *a, const void *b) {
    const ctn_st_tensor *x = *(const ctn_st_tensor *const *)a;
    const ctn_st_tensor *y = *(const ctn_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/*
 * The tensors sorted by offset must tile the data exactly, as the reference requires: each
 * one begins where the one before ended, and the last ends at the end of the file. A
 * zero-byte tensor therefore sits at a boundary, never inside another tensor.
 */
static int check_layout(parser *p, const entry *e, int64_t n) {
    uint64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (e[i].begin > at) {
            return fail_member(p, e[i].name, "data_offsets",
                               "[%" PRIu64 ", %" PRIu64 "] leaves bytes %" PRIu64 "..%" PRIu64
                               " of the data unused",
                               e[i].begin, e[i].end, at, e[i].begin);
        }
        if (e[i].begin < at) {
            char other[440];
            member_label(other, sizeof other, e[i - 1].name);
            return fail_member(p, e[i].name, "data_offsets",
                               "[%" PRIu64 ", %" PRIu64 "] overlaps %s ([%" PRIu64 ", %" PRIu64
                               "])",
                               e[i].begin, e[i].end, other, e[i - 1].begin, e[i - 1].end);
        }
        at = e[i].end;
    }
    if (at != p->data_size) {
        if (n == 0) {
            return fail(p, CTN_EFORMAT, "data: %" PRIu64 " bytes of data but no tensors",
                        p->data_size);
        }
        return fail_member(p, e[n - 1].name, "data_offsets",
                           "the last tensor ends at %" PRIu64 " but the data holds %" PRIu64
                           " bytes (%" PRIu64 " unused at the end)",
                           at, p->data_size, p->data_size - at);
    }
    return 0;
}

/* Copies s into the string block at *pos; returns the copy. */
static const char *put_str(char *block, size_t *pos, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = block + *pos;
    memcpy(d, s, n);
    *pos += n;
    return d;
}

/* Checks the tree under root and builds the object's tables. */
static int parse_tree(parser *p, const cJSON *root, entry *ent) {
    ctn_st *f = p->f;
    const cJSON *meta = NULL;
    size_t str_bytes = 0;
    int64_t k = 0, order = 0;
    for (const cJSON *c = root->child; c != NULL; c = c->next, order++) {
        str_bytes += strlen(c->string) + 1;
        if (strcmp(c->string, METADATA_KEY) == 0) {
            if (meta != NULL) return fail_member(p, METADATA_KEY, "entry", "given twice");
            meta = c;
            continue;
        }
        int rc = parse_entry(p, c, &ent[k]);
        if (rc < 0) return rc;
        ent[k++].order = order;
    }
    if (meta != NULL) {
        if (!cJSON_IsObject(meta)) {
            return fail_member(p, METADATA_KEY, "entry", "is %s, not an object", json_kind(meta));
        }
        for (const cJSON *c = meta->child; c != NULL; c = c->next) {
            if (!cJSON_IsString(c)) {
                char q[200];
                quote(q, sizeof q, c->string);
                return fail_member(p, METADATA_KEY, "value", "key '%s' is %s, not a string", q,
                                   json_kind(c));
            }
            str_bytes += strlen(c->string) + strlen(c->valuestring) + 2;
            f->n_meta++;
        }
    }
    f->n_tensors = k;

    /* Duplicate names: cJSON keeps every copy of a key as a child of its own. */
    qsort(ent, (size_t)k, sizeof *ent, cmp_entry_name);
    for (int64_t i = 1; i < k; i++) {
        if (strcmp(ent[i - 1].name, ent[i].name) == 0) {
            return fail_member(p, ent[i].name, "name", "given twice in the header");
        }
    }
    qsort(ent, (size_t)k, sizeof *ent, cmp_entry_offset);
    int rc = check_layout(p, ent, k);
    if (rc < 0) return rc;

    f->t = ctn__calloc((size_t)(k ? k : 1), sizeof *f->t);
    f->idx = ctn__malloc((size_t)(k ? k : 1) * sizeof *f->idx);
    f->meta = ctn__malloc((size_t)(f->n_meta ? f->n_meta : 1) * sizeof *f->meta);
    f->strings = ctn__malloc(str_bytes ? str_bytes : 1);
    if (f->t == NULL || f->idx == NULL || f->meta == NULL || f->strings == NULL) {
        return fail(p, CTN_ENOMEM, "out of memory for %" PRId64 " tensors", k);
    }
    size_t pos = 0;
    const uint8_t *data = p->base + 8 + p->json_len;
    for (int64_t i = 0; i < k; i++) {
        ctn_st_tensor *t = &f->t[i];
        t->name = put_str(f->strings, &pos, ent[i].name);
        t->dtype = ent[i].dtype;
        t->n_dims = ent[i].n_dims;
        memcpy(t->shape, ent[i].shape, sizeof t->shape);
        t->data = data + ent[i].begin;
        t->nbytes = (size_t)(ent[i].end - ent[i].begin);
        f->idx[i] = t;
    }
    qsort(f->idx, (size_t)k, sizeof *f->idx, cmp_tensor_ptr);
    int64_t m = 0;
    if (meta != NULL) {
        for (const cJSON *c = meta->child; c != NULL; c = c->next, m++) {
            f->meta[m].key = put_str(f->strings, &pos, c->string);
            f->meta[m].value = put_str(f->strings, &pos, c->valuestring);
        }
        qsort(f->meta, (size_t)m, sizeof *f->meta, cmp_meta);
        for (int64_t i = 1; i < m; i++) {
            if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0) {
                char q[200];
                quote(q, sizeof q, f->meta[i].key);
                return fail_member(p, METADATA_KEY, "key", "'%s' given twice", q);
            }
        }
    }
    return 0;
}

static int parse(parser *p) {
    if (p->size < 8) {
        return fail(p, CTN_EFORMAT,
                    "header length: the file is %" PRIu64
                    " bytes, shorter than the 8-byte header length",
                    p->size);
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | p->base[i];
    if (n == 0) return fail(p, CTN_EFORMAT, "header length: 0 (the header must hold '{}')");
    if (n > MAX_HEADER) {
        return fail(p, CTN_EFORMAT,
                    "header length: %" PRIu64 " bytes is over the %" PRIu64 " MiB limit", n,
                    MAX_HEADER >> 20);
    }
    if (n > p->size - 8) {
        return fail(p, CTN_EFORMAT,
                    "header length: %" PRIu64 " bytes but only %" PRIu64
                    " bytes follow the length (the file is truncated or not safetensors)",
                    n, p->size - 8);
    }
    p->json = (const char *)p->base + 8;
    p->json_len = n;
    p->data_size = p->size - 8 - n;

    const char *end = NULL;
    int jrc;
    cJSON *root = ctn__json_parse(p->json, (size_t)n, false, &end, &jrc);
    if (root == NULL) {
        if (jrc == CTN_ENOMEM) return fail(p, CTN_ENOMEM, "header: out of memory parsing its JSON");
        size_t at = end != NULL && end >= p->json ? (size_t)(end - p->json) : 0;
        return fail(p, CTN_EFORMAT, "header: not valid JSON (near header offset %zu)", at);
    }
    int rc = 0;
    entry *ent = NULL;
    size_t json_end = (size_t)(end - p->json);
    if (!cJSON_IsObject(root)) {
        rc = fail(p, CTN_EFORMAT, "header: the JSON is %s, not an object", json_kind(root));
        goto done;
    }
    for (size_t i = json_end; i < n; i++) {
        if (!json_space((uint8_t)p->json[i])) {
            rc = fail(p, CTN_EFORMAT,
                      "header: byte 0x%02x at header offset %zu after the JSON object (only "
                      "whitespace may pad the header)",
                      (uint8_t)p->json[i], i);
            goto done;
        }
    }
    rc = check_text(p, root, json_end);
    if (rc < 0) goto done;
    int64_t n_members = 0;
    for (const cJSON *c = root->child; c != NULL; c = c->next)
        n_members++;
    ent = ctn__calloc((size_t)(n_members ? n_members : 1), sizeof *ent);
    if (ent == NULL) {
        rc = fail(p, CTN_ENOMEM, "out of memory for %" PRId64 " header entries", n_members);
        goto done;
    }
    rc = parse_tree(p, root, ent);
done:
    free(ent);
    cJSON_Delete(root);
    return rc;
}

int ctn_st_open_memory(ctn_st **out, const void *data, size_t size, const char *name, char *err,
                       size_t errcap) {
    if (out == NULL) return CTN_EINVAL;
    *out = NULL;
    if (data == NULL && size > 0) return CTN_EINVAL;
    ctn_st *f = st_new(name);
    if (f == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", name ? name : "<memory>");
        return CTN_ENOMEM;
    }
    static const uint8_t empty[1] = {0};
    parser p = {.f = f, .base = data ? data : empty, .size = size, .err = err, .errcap = errcap};
    int rc = parse(&p);
    if (rc < 0) {
        ctn_st_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

/*
 * Maps the file read-only and parses it in place. A file truncated by another process while
 * mapped raises SIGBUS on access; that is the price of not copying weights.
 */
int ctn_st_open(ctn_st **out, const char *path, char *err, size_t errcap) {
    if (out == NULL || path == NULL) return CTN_EINVAL;
    *out = NULL;
    void *map;
    size_t len;
    int rc = ctn__map_file(path, &map, &len, NULL, err, errcap);
    if (rc < 0) return rc;
    ctn_st *f = st_new(path);
    if (f == NULL) {
        ctn__unmap_file(map, len);
        ctn__errf(err, errcap, "%s: out of memory", path);
        return CTN_ENOMEM;
    }
    f->map = map;
    f->map_len = len;
    static const uint8_t empty[1] = {0};
    parser p = {
        .f = f, .base = map != NULL ? map : empty, .size = len, .err = err, .errcap = errcap};
    rc = parse(&p);
    if (rc < 0) {
        ctn_st_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

/* ---- reader accessors -------------------------------------------------------------- */

int64_t ctn_st_n_tensors(const ctn_st *f) {
    return f != NULL ? f->n_tensors : 0;
}

const ctn_st_tensor *ctn_st_tensor_at(const ctn_st *f, int64_t i) {
    if (f == NULL || i < 0 || i >= f->n_tensors) return NULL;
    return &f->t[i];
}

static int cmp_find(const void *key, const void *elem) {
    return strcmp(key, (*(const ctn_st_tensor *const *)elem)->name);
}

const ctn_st_tensor *ctn_st_find(const ctn_st *f, const char *name) {
    if (f == NULL || name == NULL || f->n_tensors == 0) return NULL;
    ctn_st_tensor *const *hit =
        bsearch(name, f->idx, (size_t)f->n_tensors, sizeof *f->idx, cmp_find);
    return hit != NULL ? *hit : NULL;
}

static int cmp_find_meta(const void *key, const void *elem) {
    return strcmp(key, ((const meta_entry *)elem)->key);
}

const char *ctn_st_metadata(const ctn_st *f, const char *key) {
    if (f == NULL || key == NULL || f->n_meta == 0) return NULL;
    const meta_entry *hit =
        bsearch(key, f->meta, (size_t)f->n_meta, sizeof *f->meta, cmp_find_meta);
    return hit != NULL ? hit->value : NULL;
}

int64_t ctn_st_n_metadata(const ctn_st *f) {
    return f != NULL ? f->n_meta : 0;
}

const char *ctn_st_metadata_key(const ctn_st *f, int64_t i) {
    if (f == NULL || i < 0 || i >= f->n_meta) return NULL;
    return f->meta[i].key;
}

int64_t ctn_st_nelements(const ctn_st_tensor *t) {
    uint64_t n;
    if (t == NULL || t->n_dims < 0 || t->n_dims > CTN_ST_MAX_DIMS) return -1;
    if (!shape_elements(t->n_dims, t->shape, &n)) return -1;
    return (int64_t)n;
}

/* Little-endian loads from possibly unaligned bytes. */
static uint16_t load_le16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

int ctn_st_to_f32(const ctn_st_tensor *t, float *out) {
    if (t == NULL || (out == NULL && t->nbytes > 0)) return CTN_EINVAL;
    if (t->dtype != CTN_ST_F32 && t->dtype != CTN_ST_F16 && t->dtype != CTN_ST_BF16) {
        return CTN_ENOTSUP;
    }
    int64_t n = ctn_st_nelements(t);
    size_t esz = DTYPES[t->dtype].size;
    if (n < 0 || (uint64_t)n != t->nbytes / esz || t->nbytes % esz != 0) return CTN_EINVAL;
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case CTN_ST_F32: {
        const uint16_t probe = 1;
        if (*(const uint8_t *)&probe == 1) {
            if (n > 0) memcpy(out, p, t->nbytes); /* the data need not be 4-byte aligned */
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *q = p + 4 * i;
            uint32_t u =
                (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
            memcpy(&out[i], &u, 4);
        }
        break;
    }
    case CTN_ST_F16:
        for (int64_t i = 0; i < n; i++)
            out[i] = ctn_fp16_to_fp32(load_le16(p + 2 * i));
        break;
    default:
        for (int64_t i = 0; i < n; i++)
            out[i] = ctn_bf16_to_fp32(load_le16(p + 2 * i));
        break;
    }
    return 0;
}

/* ---- writer ------------------------------------------------------------------------ */

typedef struct {
    char *name;
    ctn_st_dtype dtype;
    int32_t n_dims;
    int64_t shape[CTN_ST_MAX_DIMS];
    uint8_t *data; /* a copy, nbytes long; NULL when nbytes is 0 */
    size_t nbytes;
} wtensor;

typedef struct {
    char *key, *value;
} wmeta;

struct ctn_st_writer {
    wtensor *t; /* (n_t) in the order added */
    size_t n_t, cap_t;
    wmeta *m; /* (n_m) in the order first set */
    size_t n_m, cap_m;
    char err[512];
};

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int
werr(ctn_st_writer *w, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    return code;
}


ctn_st_writer *ctn_st_writer_new(void) {
    return ctn__calloc(1, sizeof(ctn_st_writer));
}

void ctn_st_writer_free(ctn_st_writer *w) {
    if (w == NULL) return;
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    for (size_t i = 0; i < w->n_m; i++) {
        free(w->m[i].key);
        free(w->m[i].value);
    }
    free(w->t);
    free(w->m);
    free(w);
}

const char *ctn_st_writer_errmsg(const ctn_st_writer *w) {
    return w != NULL ? w->err : "no writer";
}

int ctn_st_writer_add(ctn_st_writer *w, const char *name, ctn_st_dtype dtype, int32_t n_dims,
                      const int64_t *shape, const void *data) {
    if (w == NULL) return CTN_EINVAL;
    if (name == NULL || name[0] == '\0') return werr(w, CTN_EINVAL, "empty tensor name");
    char q[400];
    quote(q, sizeof q, name);
    if (strcmp(name, METADATA_KEY) == 0) {
        return werr(w, CTN_EINVAL, "'%s' is reserved for the metadata", METADATA_KEY);
    }
    if (!utf8_valid(name)) return werr(w, CTN_EINVAL, "tensor '%s': name is not UTF-8", q);
    for (size_t i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            return werr(w, CTN_EINVAL, "tensor '%s' already added", q);
        }
    }
    if ((unsigned)dtype >= CTN_ST_N_DTYPES) {
        return werr(w, CTN_EINVAL, "tensor '%s': unknown dtype %d", q, (int)dtype);
    }
    if (n_dims < 0 || n_dims > CTN_ST_MAX_DIMS || (n_dims > 0 && shape == NULL)) {
        return werr(w, CTN_EINVAL, "tensor '%s': n_dims %d not in 0..%d", q, (int)n_dims,
                    CTN_ST_MAX_DIMS);
    }
    wtensor t = {.dtype = dtype, .n_dims = n_dims};
    for (int32_t d = 0; d < n_dims; d++) {
        if (shape[d] < 0) {
            return werr(w, CTN_EINVAL, "tensor '%s': dimension %d is negative", q, (int)d);
        }
        /* Readers see shapes as JSON numbers, exact only below 2^53. */
        if ((double)shape[d] >= MAX_JSON_INT) {
            return werr(w, CTN_EINVAL, "tensor '%s': dimension %d is 2^53 or more", q, (int)d);
        }
        t.shape[d] = shape[d];
    }
    uint64_t nel, nbytes;
    if (!shape_elements(n_dims, t.shape, &nel) || !mul_u64(nel, DTYPES[dtype].size, &nbytes) ||
        (double)nbytes >= MAX_JSON_INT || nbytes > SIZE_MAX) {
        return werr(w, CTN_EINVAL, "tensor '%s': too many elements", q);
    }
    if (nbytes > 0 && data == NULL) return werr(w, CTN_EINVAL, "tensor '%s': NULL data", q);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *nt = ctn__realloc(w->t, cap * sizeof *nt);
        if (nt == NULL) return werr(w, CTN_ENOMEM, "tensor '%s': out of memory", q);
        w->t = nt;
        w->cap_t = cap;
    }
    t.nbytes = (size_t)nbytes;
    t.name = ctn__strdup(name);
    if (t.name == NULL) return werr(w, CTN_ENOMEM, "tensor '%s': out of memory", q);
    if (nbytes > 0) {
        t.data = ctn__malloc(t.nbytes);
        if (t.data == NULL) {
            free(t.name);
            return werr(w, CTN_ENOMEM, "tensor '%s': out of memory for %zu bytes", q, t.nbytes);
        }
        memcpy(t.data, data, t.nbytes);
    }
    w->t[w->n_t++] = t;
    return 0;
}

int ctn_st_writer_set_metadata(ctn_st_writer *w, const char *key, const char *value) {
    if (w == NULL) return CTN_EINVAL;
    if (key == NULL || value == NULL) return werr(w, CTN_EINVAL, "metadata: NULL key or value");
    char q[400];
    quote(q, sizeof q, key);
    if (!utf8_valid(key) || !utf8_valid(value)) {
        return werr(w, CTN_EINVAL, "metadata '%s': key or value is not UTF-8", q);
    }
    char *v = ctn__strdup(value);
    if (v == NULL) return werr(w, CTN_ENOMEM, "metadata '%s': out of memory", q);
    for (size_t i = 0; i < w->n_m; i++) {
        if (strcmp(w->m[i].key, key) == 0) {
            free(w->m[i].value);
            w->m[i].value = v;
            return 0;
        }
    }
    if (w->n_m == w->cap_m) {
        size_t cap = w->cap_m ? w->cap_m * 2 : 8;
        wmeta *nm = ctn__realloc(w->m, cap * sizeof *nm);
        if (nm == NULL) {
            free(v);
            return werr(w, CTN_ENOMEM, "metadata '%s': out of memory", q);
        }
        w->m = nm;
        w->cap_m = cap;
    }
    char *k = ctn__strdup(key);
    if (k == NULL) {
        free(v);
        return werr(w, CTN_ENOMEM, "metadata '%s': out of memory", q);
    }
    w->m[w->n_m++] = (wmeta){k, v};
    return 0;
}

/* Appends an integer written out in full (cJSON would print 1e+15 for large doubles). */
static bool add_int(cJSON *arr, uint64_t v) {
    char num[32];
    snprintf(num, sizeof num, "%" PRIu64, v);
    cJSON *r = cJSON_CreateRaw(num);
    if (r == NULL) return false;
    if (!cJSON_AddItemToArray(arr, r)) {
        cJSON_Delete(r);
        return false;
    }
    return true;
}

/*
 * Builds the header: the JSON (metadata first, then the tensors in the order added, each
 * right after the one before in the data), padded with spaces so that the data starts at a
 * multiple of 8 bytes. *json is malloc'd, *len bytes long with the padding.
 */
static int build_header(ctn_st_writer *w, char **json, size_t *len, uint64_t *data_size) {
    *json = NULL;
    ctn__json_init();
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && w->n_m > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, METADATA_KEY);
        ok = m != NULL;
        for (size_t i = 0; ok && i < w->n_m; i++)
            ok = cJSON_AddStringToObject(m, w->m[i].key, w->m[i].value) != NULL;
    }
    uint64_t off = 0;
    for (size_t i = 0; ok && i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = NULL, *offs = NULL;
        ok = o != NULL && cJSON_AddStringToObject(o, "dtype", DTYPES[t->dtype].name) != NULL &&
             (shape = cJSON_AddArrayToObject(o, "shape")) != NULL;
        for (int32_t d = 0; ok && d < t->n_dims; d++)
            ok = add_int(shape, (uint64_t)t->shape[d]);
        ok = ok && (offs = cJSON_AddArrayToObject(o, "data_offsets")) != NULL &&
             add_int(offs, off) && add_int(offs, off + t->nbytes);
        off += t->nbytes;
        if ((double)off >= MAX_JSON_INT) {
            cJSON_Delete(root);
            return werr(w, CTN_ERANGE, "tensor data of 2^53 bytes or more");
        }
    }
    char *s = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (s == NULL) return werr(w, CTN_ENOMEM, "out of memory building the header");
    size_t n = strlen(s);
    size_t padded = (n + 7) / 8 * 8;
    if (padded > MAX_HEADER) {
        cJSON_free(s);
        return werr(w, CTN_ERANGE, "header of %zu bytes is over the %d MiB readers accept", padded,
                    (int)(MAX_HEADER >> 20));
    }
    char *h = ctn__malloc(padded);
    if (h == NULL) {
        cJSON_free(s);
        return werr(w, CTN_ENOMEM, "out of memory building the header");
    }
    memcpy(h, s, n);
    memset(h + n, ' ', padded - n);
    cJSON_free(s);
    *json = h;
    *len = padded;
    *data_size = off;
    return 0;
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int ctn_st_writer_write_memory(ctn_st_writer *w, void **out, size_t *size) {
    if (w == NULL || out == NULL || size == NULL) return CTN_EINVAL;
    *out = NULL;
    *size = 0;
    char *h;
    size_t hlen;
    uint64_t data_size;
    int rc = build_header(w, &h, &hlen, &data_size);
    if (rc < 0) return rc;
    if (data_size > SIZE_MAX - 8 - hlen) {
        free(h);
        return werr(w, CTN_ERANGE, "file of more than SIZE_MAX bytes");
    }
    size_t total = 8 + hlen + (size_t)data_size;
    uint8_t *mem = ctn__malloc(total);
    if (mem == NULL) {
        free(h);
        return werr(w, CTN_ENOMEM, "out of memory for a %zu-byte file", total);
    }
    put_le64(mem, hlen);
    memcpy(mem + 8, h, hlen);
    free(h);
    size_t pos = 8 + hlen;
    for (size_t i = 0; i < w->n_t; i++) {
        if (w->t[i].nbytes > 0) memcpy(mem + pos, w->t[i].data, w->t[i].nbytes);
        pos += w->t[i].nbytes;
    }
    *out = mem;
    *size = total;
    return 0;
}

/*
 * Writes to path.tmp and renames it over path once the bytes are on disk, so a reader never
 * sees half a file and a failed write leaves the old file in place.
 */
int ctn_st_writer_write(ctn_st_writer *w, const char *path) {
    if (w == NULL) return CTN_EINVAL;
    if (path == NULL || path[0] == '\0') return werr(w, CTN_EINVAL, "empty path");
    char *h;
    size_t hlen;
    uint64_t data_size;
    int rc = build_header(w, &h, &hlen, &data_size);
    if (rc < 0) return rc;
    size_t plen = strlen(path);
    char *tmp = ctn__malloc(plen + 5);
    if (tmp == NULL) {
        free(h);
        return werr(w, CTN_ENOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *fp = fopen(tmp, "wb");
    if (fp == NULL) {
        rc = werr(w, CTN_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        free(h);
        free(tmp);
        return rc;
    }
    uint8_t len8[8];
    put_le64(len8, hlen);
    bool ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(h, 1, hlen, fp) == hlen;
    free(h);
    for (size_t i = 0; ok && i < w->n_t; i++) {
        if (w->t[i].nbytes > 0) ok = fwrite(w->t[i].data, 1, w->t[i].nbytes, fp) == w->t[i].nbytes;
    }
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int e = errno;
    if (fclose(fp) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        remove(tmp);
        rc = werr(w, CTN_EIO, "%s: write failed: %s", path, strerror(e));
        free(tmp);
        return rc;
    }
    free(tmp);
    return 0;
}
