/*
 * `catena inspect FILE.gguf [--json]`: prints a GGUF file's header, metadata and tensor
 * table, in the spirit of gguf-py's gguf_dump.py. Text output abbreviates long arrays and
 * strings for reading; --json prints everything, in full, as one JSON object.
 */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "commands.h"
#include "gguf.h"
#include "str.h"

#define TEXT_MAX_CHARS 60 /* longer strings are cut to 57 characters and "..." */
#define TEXT_MAX_ELEMS 6  /* longer arrays show this many elements and "..." */

static int usage(FILE *f) {
    fprintf(f, "usage: catena inspect FILE.gguf [--json]\n"
               "  Prints the header, the metadata and the tensor table of a GGUF file.\n"
               "  --json prints one JSON object with every value in full.\n");
    return f == stderr ? 2 : 0;
}

/* ---- UTF-8 ------------------------------------------------------------------------- */

/*
 * Length of the well-formed UTF-8 sequence at p (at most n bytes), or 0 if the bytes there
 * are not one (overlong forms, surrogates and code points past U+10FFFF are rejected).
 */
static size_t utf8_seq(const unsigned char *p, uint64_t n) {
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n < len) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return len;
}

/* ---- text output ------------------------------------------------------------------- */

/*
 * Prints a string quoted and escaped for a terminal: C escapes for quotes, backslashes and
 * control bytes, \xNN for bytes that are not valid UTF-8, valid UTF-8 as is. At most
 * `max` characters are shown (0: all); a longer string is cut to max-3 and "...".
 */
static void print_quoted(FILE *f, const char *s, uint64_t n, size_t max) {
    const unsigned char *p = (const unsigned char *)s;
    size_t chars = 0, total = 0;
    for (uint64_t i = 0; i < n; total++) {
        size_t k = utf8_seq(p + i, n - i);
        i += k ? k : 1;
    }
    size_t limit = max && total > max ? max - 3 : SIZE_MAX;
    fputc('"', f);
    for (uint64_t i = 0; i < n && chars < limit; chars++) {
        unsigned char c = p[i];
        size_t k = utf8_seq(p + i, n - i);
        if (k > 1) {
            fwrite(p + i, 1, k, f);
            i += k;
            continue;
        }
        i++;
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20 || c >= 0x7f)
                fprintf(f, "\\x%02x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
    if (limit != SIZE_MAX) fputs("...", f);
}

/* The shortest decimal form that reads back as the same float (or double). */
static void fmt_float(char *buf, size_t cap, double v, bool is_f32) {
    if (isnan(v)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, cap, v < 0 ? "-inf" : "inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (is_f32 ? (float)back == (float)v : back == v) break;
    }
    /* Keep it recognisably a float ("1" -> "1.0") unless it has an exponent or point. */
    if (strpbrk(buf, ".e") == NULL && strlen(buf) + 2 < cap) strcat(buf, ".0");
}

/* Prints one element of a number array, or one scalar. */
static void print_number(FILE *f, ctn_gguf_type t, const ctn_gguf_value *v) {
    char buf[40];
    switch (t) {
    case CTN_GGUF_UINT8:
    case CTN_GGUF_UINT16:
    case CTN_GGUF_UINT32:
    case CTN_GGUF_UINT64: fprintf(f, "%" PRIu64, v->v.u64); break;
    case CTN_GGUF_INT8:
    case CTN_GGUF_INT16:
    case CTN_GGUF_INT32:
    case CTN_GGUF_INT64: fprintf(f, "%" PRId64, v->v.i64); break;
    case CTN_GGUF_FLOAT32:
    case CTN_GGUF_FLOAT64:
        fmt_float(buf, sizeof buf, v->v.f64, t == CTN_GGUF_FLOAT32);
        fputs(buf, f);
        break;
    case CTN_GGUF_BOOL: fputs(v->v.b ? "true" : "false", f); break;
    default: break;
    }
}

/* Element i of a number/bool array as a scalar value (the reader keeps them packed). */
static ctn_gguf_value arr_scalar(const ctn_gguf_value *arr, uint64_t i) {
    ctn_gguf_value e = {.type = arr->v.arr.type};
    switch (e.type) {
    case CTN_GGUF_FLOAT32:
    case CTN_GGUF_FLOAT64: e.v.f64 = ctn_gguf_arr_float(arr, i); break;
    case CTN_GGUF_BOOL: e.v.b = ctn_gguf_arr_int(arr, i) != 0; break;
    case CTN_GGUF_UINT64: {
        /* arr_int clamps above INT64_MAX; read the raw little-endian bytes instead. */
        const unsigned char *p = (const unsigned char *)arr->v.arr.data + i * 8;
        uint64_t u = 0;
        for (int k = 7; k >= 0; k--)
            u = (u << 8) | p[k];
        e.v.u64 = u;
        break;
    }
    case CTN_GGUF_UINT8:
    case CTN_GGUF_UINT16:
    case CTN_GGUF_UINT32: e.v.u64 = (uint64_t)ctn_gguf_arr_int(arr, i); break;
    default: e.v.i64 = ctn_gguf_arr_int(arr, i); break;
    }
    return e;
}

static void print_value(FILE *f, const ctn_gguf_value *v) {
    if (v->type == CTN_GGUF_STRING) {
        print_quoted(f, v->v.str.ptr, v->v.str.len, TEXT_MAX_CHARS);
        return;
    }
    if (v->type != CTN_GGUF_ARRAY) {
        print_number(f, v->type, v);
        return;
    }
    uint64_t n = v->v.arr.n;
    fputc('[', f);
    for (uint64_t i = 0; i < n && i < TEXT_MAX_ELEMS; i++) {
        if (i) fputs(", ", f);
        if (v->v.arr.type == CTN_GGUF_STRING) {
            ctn_gguf_str s = ctn_gguf_arr_str(v, i);
            print_quoted(f, s.ptr, s.len, TEXT_MAX_CHARS);
        } else if (v->v.arr.type == CTN_GGUF_ARRAY) {
            print_value(f, &((const ctn_gguf_value *)v->v.arr.data)[i]);
        } else {
            ctn_gguf_value e = arr_scalar(v, i);
            print_number(f, e.type, &e);
        }
    }
    if (n > TEXT_MAX_ELEMS) fputs(", ...", f);
    fputc(']', f);
}

/* "uint32", "[string]", "[[int32]]" (nested types follow the first element). */
static void fmt_type(char *buf, size_t cap, const ctn_gguf_value *v) {
    int depth = 0;
    const char *leaf = "?";
    while (v != NULL && v->type == CTN_GGUF_ARRAY) {
        depth++;
        if (v->v.arr.type != CTN_GGUF_ARRAY) {
            leaf = ctn_gguf_type_name(v->v.arr.type);
            break;
        }
        v = v->v.arr.n > 0 ? v->v.arr.data : NULL;
    }
    if (depth == 0) leaf = ctn_gguf_type_name(v->type);
    /* The reader caps nesting at CTN_GGUF_MAX_DEPTH (16), so the brackets always fit. */
    static const char opens[] = "[[[[[[[[[[[[[[[[", closes[] = "]]]]]]]]]]]]]]]]";
    if (depth > (int)sizeof opens - 1) depth = (int)sizeof opens - 1;
    snprintf(buf, cap, "%.*s%s%.*s", depth, opens, leaf ? leaf : "?", depth, closes);
}

/* Names print bare like gguf_dump prints them, unless they need quoting and escaping. */
static void print_name(FILE *f, ctn_gguf_str s) {
    bool plain = s.len > 0;
    for (uint64_t j = 0; j < s.len && plain; j++) {
        unsigned char c = (unsigned char)s.ptr[j];
        plain = c > 0x20 && c < 0x7f && c != '"' && c != '\\';
    }
    if (plain)
        fwrite(s.ptr, 1, (size_t)s.len, f);
    else
        print_quoted(f, s.ptr, s.len, 0);
}

static void print_text(const ctn_gguf *g) {
    FILE *f = stdout;
    fprintf(f, "* file: %s\n", ctn_gguf_path(g));
    fprintf(f, "* version: %" PRIu32 " (little-endian)\n", ctn_gguf_version(g));
    fprintf(f, "* alignment: %" PRIu64 "\n", ctn_gguf_alignment(g));
    fprintf(f, "* n_kv: %" PRId64 "\n", ctn_gguf_n_kv(g));
    fprintf(f, "* n_tensors: %" PRId64 "\n", ctn_gguf_n_tensors(g));
    fprintf(f, "* data offset: %" PRIu64 " (file size %" PRIu64 ")\n", ctn_gguf_data_offset(g),
            ctn_gguf_file_size(g));

    fprintf(f, "\n* metadata: %" PRId64 " key/value pair(s)\n", ctn_gguf_n_kv(g));
    fprintf(f, "  %5s: %-10s | %8s | %s\n", "index", "type", "count", "key = value");
    for (int64_t i = 0; i < ctn_gguf_n_kv(g); i++) {
        const ctn_gguf_value *v = ctn_gguf_value_at(g, i);
        ctn_gguf_str k = ctn_gguf_key(g, i);
        char type[64];
        fmt_type(type, sizeof type, v);
        uint64_t count = v->type == CTN_GGUF_ARRAY ? v->v.arr.n : 1;
        fprintf(f, "  %5" PRId64 ": %-10s | %8" PRIu64 " | ", i + 1, type, count);
        print_name(f, k);
        fputs(" = ", f);
        print_value(f, v);
        fputc('\n', f);
    }

    fprintf(f, "\n* tensors: %" PRId64 " tensor(s)\n", ctn_gguf_n_tensors(g));
    fprintf(f, "  %5s: %12s | %-26s | %-7s | %12s | %s\n", "index", "elements", "shape", "type",
            "offset", "name");
    for (int64_t i = 0; i < ctn_gguf_n_tensors(g); i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
        char shape[128];
        snprintf(shape, sizeof shape, "%5" PRId64 ", %5" PRId64 ", %5" PRId64 ", %5" PRId64,
                 t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
        const char *tn = ctn_type_name(t->type);
        fprintf(f, "  %5" PRId64 ": %12" PRId64 " | %-26s | %-7s | %12" PRIu64 " | ", i + 1,
                ctn_gguf_tensor_nelements(t), shape, tn ? tn : "?", t->offset);
        print_name(f, t->name);
        fputc('\n', f);
    }
}

/* ---- JSON output ------------------------------------------------------------------- */

/*
 * A JSON string literal (with quotes) for bytes from the file, for cJSON_CreateRaw: GGUF
 * strings are byte strings that may hold NUL or invalid UTF-8, which cJSON's own strings
 * cannot carry. Valid UTF-8 is copied, control characters (NUL included) become \u00XX,
 * and each byte that is not part of valid UTF-8 becomes U+FFFD, the replacement character:
 * JSON text must be UTF-8, and a reader should see that something was lost rather than a
 * different valid character. Returns a malloc'd string or NULL.
 */
static char *json_literal(const char *s, uint64_t n) {
    const unsigned char *p = (const unsigned char *)s;
    if (n > (SIZE_MAX - 3) / 6) return NULL;
    char *out = malloc((size_t)n * 6 + 3), *o = out; /* worst case: \u00XX per byte */
    if (out == NULL) return NULL;
    *o++ = '"';
    for (uint64_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0) {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else if (k > 1) {
            memcpy(o, p + i, k);
            o += k;
            i += k;
        } else {
            i++;
            if (c == '"' || c == '\\') {
                *o++ = '\\';
                *o++ = (char)c;
            } else if (c == '\n') {
                memcpy(o, "\\n", 2);
                o += 2;
            } else if (c == '\t') {
                memcpy(o, "\\t", 2);
                o += 2;
            } else if (c < 0x20 || c == 0x7f) {
                o += sprintf(o, "\\u%04x", c);
            } else {
                *o++ = (char)c;
            }
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

/* A NUL-terminated, valid UTF-8 copy of a name, for cJSON object keys (same rules, with
 * NUL also replaced, since cJSON keys are C strings). */
static char *json_key(const char *s, uint64_t n) {
    const unsigned char *p = (const unsigned char *)s;
    if (n > (SIZE_MAX - 1) / 3) return NULL;
    char *out = malloc((size_t)n * 3 + 1), *o = out;
    if (out == NULL) return NULL;
    for (uint64_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0 || p[i] == 0) {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(o, p + i, k);
            o += k;
            i += k;
        }
    }
    *o = '\0';
    return out;
}

static cJSON *json_string(const char *s, uint64_t n) {
    char *lit = json_literal(s, n);
    if (lit == NULL) return NULL;
    cJSON *j = cJSON_CreateRaw(lit);
    free(lit);
    return j;
}

/* Integers go out as raw text: cJSON numbers are doubles and would round int64 values. */
static cJSON *json_int(bool is_unsigned, uint64_t u, int64_t i) {
    char buf[32];
    if (is_unsigned)
        snprintf(buf, sizeof buf, "%" PRIu64, u);
    else
        snprintf(buf, sizeof buf, "%" PRId64, i);
    return cJSON_CreateRaw(buf);
}

/* Floats as their shortest exact decimal; NaN and infinities have no JSON form: null. */
static cJSON *json_float(double v, bool is_f32) {
    if (!isfinite(v)) return cJSON_CreateNull();
    char buf[40];
    fmt_float(buf, sizeof buf, v, is_f32);
    return cJSON_CreateRaw(buf);
}

static cJSON *json_scalar(const ctn_gguf_value *v) {
    switch (v->type) {
    case CTN_GGUF_UINT8:
    case CTN_GGUF_UINT16:
    case CTN_GGUF_UINT32:
    case CTN_GGUF_UINT64: return json_int(true, v->v.u64, 0);
    case CTN_GGUF_INT8:
    case CTN_GGUF_INT16:
    case CTN_GGUF_INT32:
    case CTN_GGUF_INT64: return json_int(false, 0, v->v.i64);
    case CTN_GGUF_FLOAT32: return json_float(v->v.f64, true);
    case CTN_GGUF_FLOAT64: return json_float(v->v.f64, false);
    case CTN_GGUF_BOOL: return cJSON_CreateBool(v->v.b);
    case CTN_GGUF_STRING: return json_string(v->v.str.ptr, v->v.str.len);
    default: return NULL;
    }
}

/* Appends item to an array, taking ownership of item; false (item freed) on failure. */
static bool push(cJSON *arr, cJSON *item) {
    if (item == NULL) return false;
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

static cJSON *json_value(const ctn_gguf_value *v) {
    if (v->type != CTN_GGUF_ARRAY) return json_scalar(v);
    cJSON *a = cJSON_CreateArray();
    if (a == NULL) return NULL;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        cJSON *e;
        if (v->v.arr.type == CTN_GGUF_STRING) {
            ctn_gguf_str s = ctn_gguf_arr_str(v, i);
            e = json_string(s.ptr, s.len);
        } else if (v->v.arr.type == CTN_GGUF_ARRAY) {
            e = json_value(&((const ctn_gguf_value *)v->v.arr.data)[i]);
        } else {
            ctn_gguf_value s = arr_scalar(v, i);
            e = json_scalar(&s);
        }
        if (!push(a, e)) {
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

/* Adds item under key to obj, taking ownership of item; false (item freed) on failure. */
static bool add(cJSON *obj, const char *key, cJSON *item) {
    if (item == NULL) return false;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

static bool add_u64(cJSON *obj, const char *key, uint64_t v) {
    return add(obj, key, json_int(true, v, 0));
}

static bool add_i64(cJSON *obj, const char *key, int64_t v) {
    return add(obj, key, json_int(false, 0, v));
}

static cJSON *json_kv(const ctn_gguf *g, int64_t i) {
    const ctn_gguf_value *v = ctn_gguf_value_at(g, i);
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return NULL;
    bool ok = add_i64(o, "index", i) &&
              add(o, "type", cJSON_CreateString(ctn_gguf_type_name(v->type))) &&
              add_u64(o, "offset", ctn_gguf_key_offset(g, i));
    if (ok && v->type == CTN_GGUF_ARRAY) {
        /* As gguf_dump: the element types down the nesting, following the first element. */
        cJSON *types = cJSON_CreateArray();
        ok = add(o, "array_types", types);
        for (const ctn_gguf_value *a = v; ok && a != NULL && a->type == CTN_GGUF_ARRAY;) {
            ok = push(types, cJSON_CreateString(ctn_gguf_type_name(a->v.arr.type)));
            a = a->v.arr.type == CTN_GGUF_ARRAY && a->v.arr.n > 0 ? a->v.arr.data : NULL;
        }
        ok = ok && add_u64(o, "count", v->v.arr.n);
    }
    ok = ok && add(o, "value", json_value(v));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *json_tensor(const ctn_gguf *g, int64_t i) {
    const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
    cJSON *o = cJSON_CreateObject(), *shape = cJSON_CreateArray();
    if (o == NULL || shape == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(shape);
        return NULL;
    }
    bool ok = add_i64(o, "index", i) && add(o, "shape", shape);
    if (!ok) cJSON_Delete(shape);
    for (uint32_t d = 0; ok && d < t->n_dims; d++)
        ok = push(shape, json_int(false, 0, t->ne[d]));
    const char *tn = ctn_type_name(t->type);
    ok = ok && add(o, "type", cJSON_CreateString(tn ? tn : "?")) &&
         add_i64(o, "n_elements", ctn_gguf_tensor_nelements(t)) &&
         add_u64(o, "nbytes", t->nbytes) && add_u64(o, "offset", t->offset) &&
         add_u64(o, "file_offset", ctn_gguf_data_offset(g) + t->offset) &&
         add_u64(o, "info_offset", ctn_gguf_tensor_info_offset(g, i));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Builds the whole JSON document; NULL when out of memory. */
static cJSON *json_doc(const ctn_gguf *g) {
    ctn__json_init();
    cJSON *root = cJSON_CreateObject();
    if (root == NULL) return NULL;
    cJSON *meta = cJSON_CreateObject(), *tensors = cJSON_CreateObject();
    char *path = json_key(ctn_gguf_path(g), strlen(ctn_gguf_path(g)));
    bool ok = path != NULL && add(root, "file", cJSON_CreateString(path)) &&
              add(root, "endian", cJSON_CreateString("LITTLE")) &&
              add_u64(root, "version", ctn_gguf_version(g)) &&
              add_u64(root, "alignment", ctn_gguf_alignment(g)) &&
              add_i64(root, "n_kv", ctn_gguf_n_kv(g)) &&
              add_i64(root, "n_tensors", ctn_gguf_n_tensors(g)) &&
              add_u64(root, "data_offset", ctn_gguf_data_offset(g)) &&
              add_u64(root, "file_size", ctn_gguf_file_size(g));
    free(path);
    if (ok)
        ok = add(root, "metadata", meta);
    else
        cJSON_Delete(meta);
    if (ok)
        ok = add(root, "tensors", tensors);
    else
        cJSON_Delete(tensors);
    for (int64_t i = 0; ok && i < ctn_gguf_n_kv(g); i++) {
        ctn_gguf_str k = ctn_gguf_key(g, i);
        char *key = json_key(k.ptr, k.len);
        ok = key != NULL && add(meta, key, json_kv(g, i));
        free(key);
    }
    for (int64_t i = 0; ok && i < ctn_gguf_n_tensors(g); i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
        char *name = json_key(t->name.ptr, t->name.len);
        ok = name != NULL && add(tensors, name, json_tensor(g, i));
        free(name);
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ---- the command ------------------------------------------------------------------- */

int ctn_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            return usage(stdout);
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "catena inspect: unknown option '%s'\n", argv[i]);
            return usage(stderr);
        } else if (path == NULL) {
            path = argv[i];
        } else {
            fprintf(stderr, "catena inspect: more than one file given ('%s')\n", argv[i]);
            return usage(stderr);
        }
    }
    if (path == NULL) {
        fprintf(stderr, "catena inspect: no file given\n");
        return usage(stderr);
    }

    char err[1024];
    ctn_gguf *g = NULL;
    int rc = ctn_gguf_open(&g, path, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "catena inspect: %s\n", err);
        return 1;
    }
    int status = 0;
    if (json) {
        cJSON *doc = json_doc(g);
        char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
        if (text == NULL) {
            fprintf(stderr, "catena inspect: %s: out of memory building the JSON\n", path);
            status = 1;
        } else {
            fputs(text, stdout);
            fputc('\n', stdout);
        }
        free(text);
        cJSON_Delete(doc);
    } else {
        print_text(g);
    }
    ctn_gguf_free(g);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "catena inspect: error writing the output\n");
        status = 1;
    }
    return status;
}
