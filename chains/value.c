/*
 * Chain values (value.h): constructors, reference counting, containers, equality, and the
 * JSON writer.
 */
#include "value.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "str.h"
#include "unicode.h"
#include "alloc.h"

static ctn_val *alloc_val(ctn_vkind k) {
    ctn_val *v = ctn__calloc(1, sizeof *v);
    if (v == NULL) return NULL;
    v->kind = k;
    v->refs = 1;
    return v;
}

ctn_val *ctn_val_null(void) {
    return alloc_val(CTN_VNULL);
}

ctn_val *ctn_val_bool(int b) {
    ctn_val *v = alloc_val(CTN_VBOOL);
    if (v != NULL) v->u.b = b != 0;
    return v;
}

ctn_val *ctn_val_int(int64_t i) {
    ctn_val *v = alloc_val(CTN_VINT);
    if (v != NULL) v->u.i = i;
    return v;
}

ctn_val *ctn_val_num(double d) {
    ctn_val *v = alloc_val(CTN_VNUM);
    if (v != NULL) v->u.num = d;
    return v;
}

ctn_val *ctn_val_str(const char *s, size_t len) {
    if (s == NULL && len > 0) return NULL;
    ctn_val *v = alloc_val(CTN_VSTR);
    if (v == NULL) return NULL;
    v->u.str.p = ctn__malloc(len + 1);
    if (v->u.str.p == NULL) {
        free(v);
        return NULL;
    }
    if (len > 0) memcpy(v->u.str.p, s, len);
    v->u.str.p[len] = 0;
    v->u.str.len = len;
    return v;
}

ctn_val *ctn_val_cstr(const char *s) {
    return s == NULL ? NULL : ctn_val_str(s, strlen(s));
}

ctn_val *ctn_val_arr(void) {
    return alloc_val(CTN_VARR);
}

ctn_val *ctn_val_obj(void) {
    return alloc_val(CTN_VOBJ);
}

ctn_val *ctn_val_doc(const char *text, size_t len, ctn_val *meta) {
    if (meta != NULL && meta->kind != CTN_VOBJ) {
        ctn_val_unref(meta);
        return NULL;
    }
    ctn_val *v = alloc_val(CTN_VDOC);
    ctn_val *t = ctn_val_str(text, len);
    if (meta == NULL) meta = ctn_val_obj();
    if (v == NULL || t == NULL || meta == NULL) {
        free(v);
        ctn_val_unref(t);
        ctn_val_unref(meta);
        return NULL;
    }
    v->u.doc.text = t;
    v->u.doc.meta = meta;
    return v;
}

ctn_val *ctn_val_ref(ctn_val *v) {
    if (v != NULL) v->refs++;
    return v;
}

void ctn_val_unref(ctn_val *v) {
    CTN_ASSERT(v == NULL || v->refs > 0); /* a value is released once per reference */
    if (v == NULL || --v->refs > 0) return;
    switch (v->kind) {
    case CTN_VSTR: free(v->u.str.p); break;
    case CTN_VARR:
        for (size_t i = 0; i < v->u.arr.n; i++)
            ctn_val_unref(v->u.arr.items[i]);
        free(v->u.arr.items);
        break;
    case CTN_VOBJ:
        for (size_t i = 0; i < v->u.obj.n; i++) {
            ctn_val_unref(v->u.obj.keys[i]);
            ctn_val_unref(v->u.obj.vals[i]);
        }
        free(v->u.obj.keys);
        free(v->u.obj.vals);
        break;
    case CTN_VDOC:
        ctn_val_unref(v->u.doc.text);
        ctn_val_unref(v->u.doc.meta);
        break;
    default: break;
    }
    free(v);
}

int ctn_val_push(ctn_val *a, ctn_val *v) {
    if (v == NULL) return a == NULL || a->kind != CTN_VARR ? CTN_EINVAL : CTN_ENOMEM;
    if (a == NULL || a->kind != CTN_VARR) {
        ctn_val_unref(v);
        return CTN_EINVAL;
    }
    if (a->u.arr.n == a->u.arr.cap) {
        const size_t cap = a->u.arr.cap ? 2 * a->u.arr.cap : 4;
        ctn_val **p = ctn__realloc(a->u.arr.items, cap * sizeof *p);
        if (p == NULL) {
            ctn_val_unref(v);
            return CTN_ENOMEM;
        }
        a->u.arr.items = p;
        a->u.arr.cap = cap;
    }
    a->u.arr.items[a->u.arr.n++] = v;
    return 0;
}

static ptrdiff_t find_key(const ctn_val *o, const char *key, size_t klen) {
    for (size_t i = 0; i < o->u.obj.n; i++) {
        const ctn_val *k = o->u.obj.keys[i];
        if (k->u.str.len == klen && (klen == 0 || memcmp(k->u.str.p, key, klen) == 0))
            return (ptrdiff_t)i;
    }
    return -1;
}

int ctn_val_setk(ctn_val *o, const char *key, size_t klen, ctn_val *v) {
    if (v == NULL) return o == NULL || o->kind != CTN_VOBJ ? CTN_EINVAL : CTN_ENOMEM;
    if (o == NULL || o->kind != CTN_VOBJ || (key == NULL && klen > 0)) {
        ctn_val_unref(v);
        return CTN_EINVAL;
    }
    const ptrdiff_t at = find_key(o, key, klen);
    if (at >= 0) {
        ctn_val_unref(o->u.obj.vals[at]);
        o->u.obj.vals[at] = v;
        return 0;
    }
    if (o->u.obj.n == o->u.obj.cap) {
        const size_t cap = o->u.obj.cap ? 2 * o->u.obj.cap : 4;
        ctn_val **k = ctn__realloc(o->u.obj.keys, cap * sizeof *k);
        if (k == NULL) {
            ctn_val_unref(v);
            return CTN_ENOMEM;
        }
        o->u.obj.keys = k;
        ctn_val **p = ctn__realloc(o->u.obj.vals, cap * sizeof *p);
        if (p == NULL) {
            ctn_val_unref(v);
            return CTN_ENOMEM;
        }
        o->u.obj.vals = p;
        o->u.obj.cap = cap;
    }
    ctn_val *k = ctn_val_str(key, klen);
    if (k == NULL) {
        ctn_val_unref(v);
        return CTN_ENOMEM;
    }
    o->u.obj.keys[o->u.obj.n] = k;
    o->u.obj.vals[o->u.obj.n] = v;
    o->u.obj.n++;
    return 0;
}

int ctn_val_set(ctn_val *o, const char *key, ctn_val *v) {
    if (key == NULL) {
        ctn_val_unref(v);
        return CTN_EINVAL;
    }
    return ctn_val_setk(o, key, strlen(key), v);
}

ctn_val *ctn_val_at(const ctn_val *a, size_t i) {
    if (a == NULL || a->kind != CTN_VARR || i >= a->u.arr.n) return NULL;
    return a->u.arr.items[i];
}

ctn_val *ctn_val_getk(const ctn_val *o, const char *key, size_t klen) {
    if (o != NULL && o->kind == CTN_VDOC) o = o->u.doc.meta;
    if (o == NULL || o->kind != CTN_VOBJ || (key == NULL && klen > 0)) return NULL;
    const ptrdiff_t at = find_key(o, key, klen);
    return at < 0 ? NULL : o->u.obj.vals[at];
}

ctn_val *ctn_val_get(const ctn_val *o, const char *key) {
    return key == NULL ? NULL : ctn_val_getk(o, key, strlen(key));
}

size_t ctn_val_len(const ctn_val *v) {
    if (v == NULL) return 0;
    switch (v->kind) {
    case CTN_VSTR: return v->u.str.len;
    case CTN_VARR: return v->u.arr.n;
    case CTN_VOBJ: return v->u.obj.n;
    default: return 0;
    }
}

ctn_val *ctn_val_copy(const ctn_val *v) {
    if (v == NULL) return NULL;
    switch (v->kind) {
    case CTN_VNULL: return ctn_val_null();
    case CTN_VBOOL: return ctn_val_bool(v->u.b);
    case CTN_VINT: return ctn_val_int(v->u.i);
    case CTN_VNUM: return ctn_val_num(v->u.num);
    case CTN_VSTR: return ctn_val_str(v->u.str.p, v->u.str.len);
    case CTN_VARR: {
        ctn_val *a = ctn_val_arr();
        for (size_t i = 0; a != NULL && i < v->u.arr.n; i++)
            if (ctn_val_push(a, ctn_val_copy(v->u.arr.items[i])) < 0) {
                ctn_val_unref(a);
                a = NULL;
            }
        return a;
    }
    case CTN_VOBJ: {
        ctn_val *o = ctn_val_obj();
        for (size_t i = 0; o != NULL && i < v->u.obj.n; i++) {
            const ctn_val *k = v->u.obj.keys[i];
            if (ctn_val_setk(o, k->u.str.p, k->u.str.len, ctn_val_copy(v->u.obj.vals[i])) < 0) {
                ctn_val_unref(o);
                o = NULL;
            }
        }
        return o;
    }
    case CTN_VDOC: {
        /* ctn_val_doc takes a NULL meta for an empty one: a copy that ran out of memory
         * must not pass for that. */
        ctn_val *m = ctn_val_copy(v->u.doc.meta);
        if (m == NULL && v->u.doc.meta != NULL) return NULL;
        return ctn_val_doc(v->u.doc.text->u.str.p, v->u.doc.text->u.str.len, m);
    }
    }
    return NULL;
}

int ctn_val_equal(const ctn_val *a, const ctn_val *b) {
    if (a == b) return 1;
    if (a == NULL || b == NULL || a->kind != b->kind) return 0;
    switch (a->kind) {
    case CTN_VNULL: return 1;
    case CTN_VBOOL: return a->u.b == b->u.b;
    case CTN_VINT: return a->u.i == b->u.i;
    case CTN_VNUM: return a->u.num == b->u.num || (isnan(a->u.num) && isnan(b->u.num));
    case CTN_VSTR:
        return a->u.str.len == b->u.str.len &&
               (a->u.str.len == 0 || memcmp(a->u.str.p, b->u.str.p, a->u.str.len) == 0);
    case CTN_VARR:
        if (a->u.arr.n != b->u.arr.n) return 0;
        for (size_t i = 0; i < a->u.arr.n; i++)
            if (!ctn_val_equal(a->u.arr.items[i], b->u.arr.items[i])) return 0;
        return 1;
    case CTN_VOBJ:
        if (a->u.obj.n != b->u.obj.n) return 0;
        for (size_t i = 0; i < a->u.obj.n; i++) {
            const ctn_val *k = a->u.obj.keys[i];
            if (!ctn_val_equal(a->u.obj.vals[i], ctn_val_getk(b, k->u.str.p, k->u.str.len)))
                return 0;
        }
        return 1;
    case CTN_VDOC:
        return ctn_val_equal(a->u.doc.text, b->u.doc.text) &&
               ctn_val_equal(a->u.doc.meta, b->u.doc.meta);
    }
    return 0;
}

const char *ctn_vkind_name(ctn_vkind k) {
    switch (k) {
    case CTN_VNULL: return "null";
    case CTN_VBOOL: return "boolean";
    case CTN_VINT: return "integer";
    case CTN_VNUM: return "number";
    case CTN_VSTR: return "string";
    case CTN_VARR: return "array";
    case CTN_VOBJ: return "object";
    case CTN_VDOC: return "document";
    }
    return "?";
}

/* ==== JSON writer ========================================================================= */

static void put_str(ctn_strbuf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    ctn_sb_put(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        const unsigned char c = u[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            ctn_sb_put(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            const char *named = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
            if (named != NULL) {
                ctn_sb_put(b, named, 2);
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                ctn_sb_put(b, esc, 6);
            }
            i++;
        } else {
            const int len = ctn__utf8_char(u + i, n - i);
            if (len <= 0) {
                ctn_sb_put(b, "\xEF\xBF\xBD", 3); /* U+FFFD for a byte that is not UTF-8 */
                i++;
            } else {
                ctn_sb_put(b, s + i, (size_t)len);
                i += (size_t)len;
            }
        }
    }
    ctn_sb_put(b, "\"", 1);
}

static void newline(ctn_strbuf *b, int indent, int depth) {
    if (indent <= 0) return;
    ctn_sb_put(b, "\n", 1);
    for (int i = 0; i < indent * depth; i++)
        ctn_sb_put(b, " ", 1);
}

static void put_val(ctn_strbuf *b, const ctn_val *v, int indent, int depth) {
    char num[40];
    switch (v->kind) {
    case CTN_VNULL: ctn_sb_puts(b, "null"); break;
    case CTN_VBOOL: ctn_sb_puts(b, v->u.b ? "true" : "false"); break;
    case CTN_VINT:
        snprintf(num, sizeof num, "%lld", (long long)v->u.i);
        ctn_sb_puts(b, num);
        break;
    case CTN_VNUM:
        if (!isfinite(v->u.num)) {
            ctn_sb_puts(b, "null");
        } else {
            snprintf(num, sizeof num, "%.17g", v->u.num);
            if (strpbrk(num, ".eE") == NULL) strcat(num, ".0");
            ctn_sb_puts(b, num);
        }
        break;
    case CTN_VSTR: put_str(b, v->u.str.p, v->u.str.len); break;
    case CTN_VARR:
        ctn_sb_put(b, "[", 1);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i > 0) ctn_sb_put(b, ",", 1);
            newline(b, indent, depth + 1);
            put_val(b, v->u.arr.items[i], indent, depth + 1);
        }
        if (v->u.arr.n > 0) newline(b, indent, depth);
        ctn_sb_put(b, "]", 1);
        break;
    case CTN_VOBJ:
        ctn_sb_put(b, "{", 1);
        for (size_t i = 0; i < v->u.obj.n; i++) {
            if (i > 0) ctn_sb_put(b, ",", 1);
            newline(b, indent, depth + 1);
            put_str(b, v->u.obj.keys[i]->u.str.p, v->u.obj.keys[i]->u.str.len);
            ctn_sb_put(b, indent > 0 ? ": " : ":", indent > 0 ? 2 : 1);
            put_val(b, v->u.obj.vals[i], indent, depth + 1);
        }
        if (v->u.obj.n > 0) newline(b, indent, depth);
        ctn_sb_put(b, "}", 1);
        break;
    case CTN_VDOC:
        ctn_sb_put(b, "{", 1);
        newline(b, indent, depth + 1);
        ctn_sb_puts(b, indent > 0 ? "\"page_content\": " : "\"page_content\":");
        put_val(b, v->u.doc.text, indent, depth + 1);
        ctn_sb_put(b, ",", 1);
        newline(b, indent, depth + 1);
        ctn_sb_puts(b, indent > 0 ? "\"metadata\": " : "\"metadata\":");
        put_val(b, v->u.doc.meta, indent, depth + 1);
        newline(b, indent, depth);
        ctn_sb_put(b, "}", 1);
        break;
    }
}

char *ctn_val_to_json(const ctn_val *v, int indent) {
    if (v == NULL) return NULL;
    ctn_strbuf b = {0};
    put_val(&b, v, indent, 0);
    return ctn_sb_take(&b);
}

char *ctn_val_text(const ctn_val *v, size_t *len) {
    if (v == NULL) return NULL;
    const ctn_val *s = v->kind == CTN_VDOC ? v->u.doc.text : v;
    if (s->kind == CTN_VSTR) {
        char *p = ctn__malloc(s->u.str.len + 1);
        if (p == NULL) return NULL;
        memcpy(p, s->u.str.p, s->u.str.len + 1);
        if (len != NULL) *len = s->u.str.len;
        return p;
    }
    char *j = ctn_val_to_json(v, 0);
    if (j != NULL && len != NULL) *len = strlen(j);
    return j;
}
