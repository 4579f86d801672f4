/*
 * Metadata filters of the knowledge base (kb.h, ctn_kb_filter_new): a filter object made
 * into one SQL condition over a chunk (k) and its document (d), its values bound as
 * parameters, never pasted into the SQL. The grammar is the one LangChain's vector stores
 * take (Chroma's and MongoDB's operators).
 */
#include "kb-filter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "str.h"

enum { MAX_DEPTH = 32, MAX_VALUES = 2000, MAX_FIELD = 128 };

struct ctn_kb_filter {
    char *sql;
    ctn_val **vals; /* parameter CTN_KB_FILTER_PARAM + i is vals[i] (references) */
    size_t n, cap;
};

typedef struct {
    ctn_kb_filter *f;
    ctn_strbuf sb;
    char *err;
    size_t errcap;
    int rc;
} comp;

static int fail(comp *c, int rc, const char *fmt, const char *a, const char *b) {
    if (c->rc == 0) {
        char msg[256];
        snprintf(msg, sizeof msg, fmt, a, b);
        ctn__errf(c->err, c->errcap, "filter: %s", msg);
        c->rc = rc;
    }
    return c->rc;
}

/* Adds v as the next parameter and writes its placeholder. */
static int param(comp *c, ctn_val *v) {
    ctn_kb_filter *f = c->f;
    if (f->n >= MAX_VALUES) return fail(c, CTN_EINVAL, "more than %s values", "2000", "");
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        ctn_val **p = ctn__realloc(f->vals, cap * sizeof *p);
        if (p == NULL) return fail(c, CTN_ENOMEM, "out of %s", "memory", "");
        f->vals = p, f->cap = cap;
    }
    f->vals[f->n++] = ctn_val_ref(v);
    char ph[16];
    snprintf(ph, sizeof ph, "?%zu", (size_t)CTN_KB_FILTER_PARAM + f->n - 1);
    ctn_sb_puts(&c->sb, ph);
    return 0;
}

static bool is_scalar(const ctn_val *v) {
    return v->kind == CTN_VSTR || v->kind == CTN_VINT || v->kind == CTN_VNUM ||
           v->kind == CTN_VBOOL;
}

/* A value compared with a field: a string, a finite number or a boolean. */
static int scalar(comp *c, const char *field, const char *op, const ctn_val *v) {
    if (!is_scalar(v))
        return fail(c, CTN_EINVAL, "'%s': %s needs a string, a number or a boolean", field, op);
    if (v->kind == CTN_VNUM && !isfinite(v->u.num))
        return fail(c, CTN_EINVAL, "'%s': %s needs a finite number", field, op);
    return 0;
}

/* The SQL expression of a field's value ("source", the chunk columns, or a metadata field
 * of the chunk or else of its document, a dotted name reaching into nested objects). */
static int field_expr(comp *c, const char *name) {
    static const char *const cols[][2] = {
        {"page", "k.page"},           {"section", "k.section"},
        {"start_index", "k.start_index"}, {"end_index", "k.end_index"},
        {"chunk", "k.idx"},
    };
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (strcmp(name, cols[i][0]) == 0) {
            ctn_sb_puts(&c->sb, cols[i][1]);
            return 0;
        }
    if (strcmp(name, "source") == 0) { /* as a hit shows it: its own, else the document's uri */
        ctn_sb_puts(&c->sb, "coalesce(json_extract(k.metadata, '$.source'), d.uri)");
        return 0;
    }
    ctn_strbuf path = {0};
    ctn_sb_puts(&path, "$");
    for (const char *p = name; *p != '\0';) {
        const char *e = strchr(p, '.');
        size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
        ctn_sb_puts(&path, ".\"");
        ctn_sb_put(&path, p, n);
        ctn_sb_puts(&path, "\"");
        p += n + (e != NULL);
    }
    char *s = ctn_sb_take(&path);
    ctn_val *pv = s != NULL ? ctn_val_cstr(s) : NULL;
    free(s);
    if (pv == NULL) return fail(c, CTN_ENOMEM, "out of %s", "memory", "");
    const size_t before = c->f->n;
    ctn_sb_puts(&c->sb, "coalesce(json_extract(k.metadata, ");
    int rc = param(c, pv);
    ctn_sb_puts(&c->sb, "), json_extract(d.metadata, ");
    char ph[16];
    snprintf(ph, sizeof ph, "?%zu", (size_t)CTN_KB_FILTER_PARAM + before);
    ctn_sb_puts(&c->sb, ph); /* the same path again */
    ctn_sb_puts(&c->sb, "))");
    ctn_val_unref(pv);
    return rc;
}

static int check_field(comp *c, const char *name, size_t n) {
    if (n == 0 || n > MAX_FIELD)
        return fail(c, CTN_EINVAL, "a field name must have 1 to 128 bytes%s%s", "", "");
    for (size_t i = 0; i < n; i++) {
        const unsigned char ch = (unsigned char)name[i];
        if (ch < 0x20 || ch == '"' || ch == '\\' || ch == 0x7f)
            return fail(c, CTN_EINVAL, "field '%s': a name may not hold quotes, backslashes or "
                        "control characters%s", name, "");
    }
    if (name[0] == '.' || name[n - 1] == '.' || strstr(name, "..") != NULL)
        return fail(c, CTN_EINVAL, "field '%s': an empty part in a dotted name%s", name, "");
    return 0;
}

/* "(?a, ?b, ...)" of a non-empty array of scalars. */
static int value_list(comp *c, const char *field, const char *op, const ctn_val *arr) {
    if (arr->kind != CTN_VARR || ctn_val_len(arr) == 0)
        return fail(c, CTN_EINVAL, "'%s': %s needs a non-empty array of values", field, op);
    ctn_sb_puts(&c->sb, "(");
    for (size_t i = 0; c->rc == 0 && i < ctn_val_len(arr); i++) {
        ctn_val *v = ctn_val_at(arr, i);
        if (scalar(c, field, op, v) < 0) break;
        if (i > 0) ctn_sb_puts(&c->sb, ", ");
        param(c, v);
    }
    ctn_sb_puts(&c->sb, ")");
    return c->rc;
}

/* labels: whether any label of the chunk, its document or its collection is among vals. */
static int labels_in(comp *c, const ctn_val *vals, bool negate) {
    static const char *const src[] = {
        "SELECT 1 FROM json_each(k.metadata, '$.labels') WHERE value IN ",
        "SELECT 1 FROM json_each(d.metadata, '$.labels') WHERE value IN ",
        ("SELECT 1 FROM collections cl, json_each(cl.labels) WHERE cl.id = d.collection AND"
         " value IN "),
    };
    ctn_sb_puts(&c->sb, negate ? "NOT (" : "(");
    for (int i = 0; i < 3 && c->rc == 0; i++) {
        ctn_sb_puts(&c->sb, i > 0 ? " OR EXISTS(" : "EXISTS(");
        ctn_sb_puts(&c->sb, src[i]);
        value_list(c, "labels", negate ? "$nin" : "$in", vals);
        ctn_sb_puts(&c->sb, ")");
    }
    ctn_sb_puts(&c->sb, ")");
    return c->rc;
}

static int labels_term(comp *c, const char *op, const ctn_val *v) {
    const bool eq = !strcmp(op, "$eq"), ne = !strcmp(op, "$ne");
    if (eq || ne) {
        if (scalar(c, "labels", op, v) < 0) return c->rc;
        ctn_val *a = ctn_val_arr();
        if (a == NULL || ctn_val_push(a, ctn_val_ref((ctn_val *)v)) < 0) {
            ctn_val_unref(a);
            return fail(c, CTN_ENOMEM, "out of %s", "memory", "");
        }
        labels_in(c, a, ne);
        ctn_val_unref(a);
        return c->rc;
    }
    if (!strcmp(op, "$in") || !strcmp(op, "$nin")) return labels_in(c, v, op[1] == 'n');
    return fail(c, CTN_EINVAL, "'labels' takes $eq, $ne, $in and $nin, not %s%s", op, "");
}

/* One operator on a field. */
static int op_term(comp *c, const char *field, const char *op, const ctn_val *v) {
    if (strcmp(field, "labels") == 0) return labels_term(c, op, v);
    static const char *const cmp[][2] = {{"$gt", " > "}, {"$gte", " >= "}, {"$lt", " < "},
                                         {"$lte", " <= "}};
    ctn_sb_puts(&c->sb, "(");
    if (!strcmp(op, "$eq") || !strcmp(op, "$ne")) {
        const bool ne = op[1] == 'n';
        if (v->kind == CTN_VNULL) {
            field_expr(c, field);
            ctn_sb_puts(&c->sb, ne ? " IS NOT NULL" : " IS NULL");
        } else if (scalar(c, field, op, v) == 0) {
            field_expr(c, field);
            ctn_sb_puts(&c->sb, ne ? " IS NOT " : " = "); /* $ne: a missing field too */
            param(c, (ctn_val *)v);
        }
    } else if (!strcmp(op, "$in")) {
        field_expr(c, field);
        ctn_sb_puts(&c->sb, " IN ");
        value_list(c, field, op, v);
    } else if (!strcmp(op, "$nin")) {
        field_expr(c, field);
        ctn_sb_puts(&c->sb, " IS NULL OR ");
        field_expr(c, field);
        ctn_sb_puts(&c->sb, " NOT IN ");
        value_list(c, field, op, v);
    } else if (!strcmp(op, "$exists")) {
        if (v->kind != CTN_VBOOL) return fail(c, CTN_EINVAL, "'%s': %s needs true or false",
                                              field, op);
        field_expr(c, field);
        ctn_sb_puts(&c->sb, v->u.b ? " IS NOT NULL" : " IS NULL");
    } else {
        size_t i = 0;
        while (i < 4 && strcmp(op, cmp[i][0]) != 0)
            i++;
        if (i == 4)
            return fail(c, CTN_EINVAL, "'%s': unknown operator '%s' (known: $eq $ne $gt $gte "
                        "$lt $lte $in $nin $exists)", field, op);
        if (v->kind != CTN_VINT && v->kind != CTN_VNUM && v->kind != CTN_VSTR)
            return fail(c, CTN_EINVAL, "'%s': %s needs a number or a string", field, op);
        if (scalar(c, field, op, v) == 0) {
            field_expr(c, field);
            ctn_sb_puts(&c->sb, cmp[i][1]);
            param(c, (ctn_val *)v);
        }
    }
    ctn_sb_puts(&c->sb, ")");
    return c->rc;
}

static int object(comp *c, const ctn_val *o, int depth);

/* $and / $or: a non-empty array of filter objects. */
static int logical(comp *c, const char *op, const ctn_val *v, int depth) {
    if (v->kind != CTN_VARR || ctn_val_len(v) == 0)
        return fail(c, CTN_EINVAL, "%s needs a non-empty array of filters%s", op, "");
    ctn_sb_puts(&c->sb, "(");
    for (size_t i = 0; c->rc == 0 && i < ctn_val_len(v); i++) {
        if (i > 0) ctn_sb_puts(&c->sb, op[1] == 'a' ? " AND " : " OR ");
        object(c, ctn_val_at(v, i), depth + 1);
    }
    ctn_sb_puts(&c->sb, ")");
    return c->rc;
}

static int object(comp *c, const ctn_val *o, int depth) {
    if (depth > MAX_DEPTH) return fail(c, CTN_EINVAL, "nested more than %s deep%s", "32", "");
    if (o->kind == CTN_VARR && ctn_val_len(o) == 0) { /* an empty Lua table */
        ctn_sb_puts(&c->sb, "1");
        return 0;
    }
    if (o->kind != CTN_VOBJ)
        return fail(c, CTN_EINVAL, "a filter is an object of fields, got %s%s",
                    ctn_vkind_name(o->kind), "");
    if (o->u.obj.n == 0) {
        ctn_sb_puts(&c->sb, "1");
        return 0;
    }
    ctn_sb_puts(&c->sb, "(");
    for (size_t i = 0; c->rc == 0 && i < o->u.obj.n; i++) {
        const ctn_val *key = o->u.obj.keys[i], *v = o->u.obj.vals[i];
        const char *k = key->u.str.p;
        if (i > 0) ctn_sb_puts(&c->sb, " AND ");
        if (k[0] == '$') {
            if (!strcmp(k, "$and") || !strcmp(k, "$or")) {
                logical(c, k, v, depth);
            } else if (!strcmp(k, "$not")) {
                ctn_sb_puts(&c->sb, "NOT ");
                object(c, v, depth + 1);
            } else {
                fail(c, CTN_EINVAL, "unknown operator '%s' (known at the top: $and $or $not)%s",
                     k, "");
            }
            continue;
        }
        if (check_field(c, k, key->u.str.len) < 0) break;
        if (v->kind == CTN_VOBJ) { /* operators, all of them holding */
            if (v->u.obj.n == 0) fail(c, CTN_EINVAL, "'%s': an empty object of operators%s", k,
                                      "");
            ctn_sb_puts(&c->sb, "(");
            for (size_t j = 0; c->rc == 0 && j < v->u.obj.n; j++) {
                if (j > 0) ctn_sb_puts(&c->sb, " AND ");
                op_term(c, k, v->u.obj.keys[j]->u.str.p, v->u.obj.vals[j]);
            }
            ctn_sb_puts(&c->sb, ")");
        } else {
            op_term(c, k, v->kind == CTN_VARR ? "$in" : "$eq", v); /* an array: any of them */
        }
    }
    ctn_sb_puts(&c->sb, ")");
    return c->rc;
}

int ctn_kb_filter_new(const ctn_val *spec, ctn_kb_filter **out, char *err, size_t errcap) {
    *out = NULL;
    ctn_kb_filter *f = ctn__calloc(1, sizeof *f);
    if (f == NULL) {
        ctn__errf(err, errcap, "filter: out of memory");
        return CTN_ENOMEM;
    }
    comp c = {.f = f, .err = err, .errcap = errcap};
    if (spec == NULL) ctn_sb_puts(&c.sb, "1");
    else object(&c, spec, 0);
    f->sql = ctn_sb_take(&c.sb);
    if (c.rc == 0 && f->sql == NULL) fail(&c, CTN_ENOMEM, "out of %s", "memory", "");
    if (c.rc < 0) {
        ctn_kb_filter_free(f);
        return c.rc;
    }
    *out = f;
    return 0;
}

void ctn_kb_filter_free(ctn_kb_filter *f) {
    if (f == NULL) return;
    for (size_t i = 0; i < f->n; i++)
        ctn_val_unref(f->vals[i]);
    free(f->vals);
    free(f->sql);
    free(f);
}

const char *ctn__kb_filter_sql(const ctn_kb_filter *f) { return f->sql; }

int ctn__kb_filter_bind(const ctn_kb_filter *f, sqlite3_stmt *st) {
    for (size_t i = 0; i < f->n; i++) {
        const int at = CTN_KB_FILTER_PARAM + (int)i;
        const ctn_val *v = f->vals[i];
        int rc = SQLITE_OK;
        switch (v->kind) {
        case CTN_VSTR: rc = sqlite3_bind_text(st, at, v->u.str.p, (int)v->u.str.len,
                                              SQLITE_STATIC); break;
        case CTN_VINT: rc = sqlite3_bind_int64(st, at, v->u.i); break;
        case CTN_VNUM: rc = sqlite3_bind_double(st, at, v->u.num); break;
        case CTN_VBOOL: rc = sqlite3_bind_int(st, at, v->u.b); break;
        default: rc = SQLITE_MISUSE; break;
        }
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}
