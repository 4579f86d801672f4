/*
 * The JSON and JSON Lines loader (loader.h).
 *
 * Records are parsed by ctn_json_parse (stdlib/json.h) straight into chain values, which
 * keeps what a detour through cJSON would lose: an integer literal that fits int64 stays an
 * exact CTN_VINT (cJSON holds every number as a double), 1.0 stays a CTN_VNUM, and strings
 * may hold NUL (\u0000). Its messages give a line and a column, which are rewritten here to
 * name the source and, for JSON Lines, the file's line.
 *
 * Choices the header leaves open:
 *   - A segment "*" always takes every element or member; RFC 6901 has no escape for '*',
 *     so a member named "*" cannot be chosen by name. "*" over an empty array or object
 *     gives no document and is not an error (an item list may be empty); over anything
 *     else that is not a container it is an error.
 *   - Array indexes are RFC 6901's: "0" or digits without a leading zero ("-" names no
 *     element).
 *   - A meta field is a plain pointer (no "*") with at least one segment; it is looked up
 *     in the value that holds the text's last segment, then in the record, and left out
 *     of the metadata when neither has it (fields are often optional). Its name may not be
 *     "source", "pointer" or "line" (the loader's own keys), and two fields may not share a
 *     name: both are CTN_EINVAL before anything is read.
 *   - Field values are shared with the record (ctn_val_ref), not copied: values are built,
 *     then shared, and never changed afterwards (value.h).
 *   - A JSON Lines file with one bad line fails as a whole (docs is left as it was): a
 *     partial load would go unnoticed in a knowledge base. Lines end at '\n'; a '\r'
 *     before it is white space to the parser; lines of only white space are skipped.
 *   - Codes: CTN_EFORMAT for a malformed value, CTN_ENOENT for a pointer segment that
 *     names nothing, CTN_ETYPE for a segment over a value that is not a container.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "json.h"
#include "loader-impl.h"
#include "loader.h"
#include "str.h"

/* ---- JSON pointers ---------------------------------------------------------------------- */

typedef struct {
    const char *name; /* unescaped ("~1" is '/'), NUL-terminated; len bytes */
    size_t len;
    bool star; /* the segment is "*" */
} seg;

typedef struct {
    seg *segs;
    size_t n;
    char *names; /* one block holding the names of every segment */
} jptr;

static void jptr_free(jptr *p) {
    free(p->segs);
    free(p->names);
    p->segs = NULL;
    p->names = NULL;
    p->n = 0;
}

/*
 * Splits a pointer into unescaped segments. 0; CTN_EINVAL with *why when it is not a JSON
 * Pointer; CTN_ENOMEM. The names fit in a block as long as the pointer: each takes its
 * bytes less its escapes and its '/', plus a NUL.
 */
static int jptr_parse(const char *s, jptr *p, const char **why) {
    memset(p, 0, sizeof *p);
    const size_t len = strlen(s);
    if (len == 0) return 0;
    if (s[0] != '/') {
        *why = "a pointer must be empty or start with '/'";
        return CTN_EINVAL;
    }
    size_t nseg = 0;
    for (size_t i = 0; i < len; i++)
        nseg += s[i] == '/';
    p->segs = ctn__malloc(nseg * sizeof *p->segs);
    p->names = ctn__malloc(len + 1);
    if (p->segs == NULL || p->names == NULL) {
        jptr_free(p);
        return CTN_ENOMEM;
    }
    char *w = p->names;
    for (size_t i = 1; i <= len; i++) { /* s[i - 1] is the '/' before a segment */
        seg *g = &p->segs[p->n++];
        g->name = w;
        for (; i < len && s[i] != '/'; i++) {
            if (s[i] != '~') {
                *w++ = s[i];
                continue;
            }
            const char next = i + 1 < len ? s[i + 1] : '\0';
            if (next != '0' && next != '1') {
                *why = "'~' must be followed by 0 or 1";
                jptr_free(p);
                return CTN_EINVAL;
            }
            *w++ = next == '0' ? '~' : '/';
            i++;
        }
        g->len = (size_t)(w - g->name);
        g->star = g->len == 1 && g->name[0] == '*';
        *w++ = '\0';
    }
    return 0;
}

/* The array index a segment names: "0" or digits without a leading zero, below SIZE_MAX. */
static bool seg_index(const seg *g, size_t *out) {
    if (g->len == 0 || (g->len > 1 && g->name[0] == '0')) return false;
    size_t v = 0;
    for (size_t i = 0; i < g->len; i++) {
        const unsigned d = (unsigned)(unsigned char)g->name[i] - '0';
        if (d > 9 || v > (SIZE_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* The value a pointer without "*" names in v, or NULL when it names nothing. */
static ctn_val *resolve(ctn_val *v, const jptr *p) {
    for (size_t i = 0; i < p->n && v != NULL; i++) {
        const seg *g = &p->segs[i];
        size_t k;
        if (v->kind == CTN_VOBJ)
            v = ctn_val_getk(v, g->name, g->len);
        else if (v->kind == CTN_VARR && seg_index(g, &k))
            v = ctn_val_at(v, k);
        else
            v = NULL;
    }
    return v;
}

/* ---- the selection ---------------------------------------------------------------------- */

typedef struct {
    const char *text_src; /* the text pointer as the caller wrote it, for messages */
    jptr text;
    jptr *meta; /* n_meta compiled meta fields */
    size_t n_meta;
} selection;

static void selection_free(selection *s) {
    jptr_free(&s->text);
    for (size_t i = 0; i < s->n_meta; i++)
        jptr_free(&s->meta[i]);
    free(s->meta);
    s->meta = NULL;
    s->n_meta = 0;
}

static bool seg_is(const seg *g, const char *name) {
    return g->len == strlen(name) && memcmp(g->name, name, g->len) == 0;
}

/* Why meta field f (compiled into s->meta[i]) cannot be used, or NULL. */
static const char *field_problem(const selection *s, size_t i) {
    const jptr *f = &s->meta[i];
    if (f->n == 0) return "a meta field needs at least one segment (its name)";
    for (size_t k = 0; k < f->n; k++)
        if (f->segs[k].star) return "\"*\" is not allowed in a meta field";
    const seg *last = &f->segs[f->n - 1];
    if (seg_is(last, "source") || seg_is(last, "pointer") || seg_is(last, "line"))
        return "its name is one the loader sets itself (source, pointer, line)";
    for (size_t j = 0; j < i; j++) {
        const seg *o = &s->meta[j].segs[s->meta[j].n - 1];
        if (o->len == last->len && memcmp(o->name, last->name, o->len) == 0)
            return "another meta field has the same name";
    }
    return NULL;
}

/* Compiles the caller's selection (NULL: the whole record) and checks its meta fields, so
 * that a bad one fails before any byte is read. */
static int selection_init(selection *s, const ctn_json_sel *sel, const char *source, char *err,
                          size_t errcap) {
    memset(s, 0, sizeof *s);
    s->text_src = sel != NULL && sel->text != NULL ? sel->text : "";
    const char *why = NULL;
    int rc = jptr_parse(s->text_src, &s->text, &why);
    if (rc == CTN_EINVAL) CTN__LOAD_ERR("%s: text pointer \"%s\": %s", source, s->text_src, why);
    const size_t m = sel != NULL ? sel->n_meta_fields : 0;
    if (rc == 0 && m > 0) {
        s->meta = ctn__calloc(m, sizeof *s->meta);
        rc = s->meta == NULL ? CTN_ENOMEM : 0;
    }
    for (size_t i = 0; rc == 0 && i < m; i++) {
        const char *f = sel->meta_fields != NULL ? sel->meta_fields[i] : NULL;
        if (f == NULL) {
            CTN__LOAD_ERR("%s: meta field %zu is NULL", source, i);
            rc = CTN_EINVAL;
            break;
        }
        rc = jptr_parse(f, &s->meta[i], &why);
        s->n_meta = i + 1; /* s->meta[i] is empty when the parse failed */
        if (rc == 0 && (why = field_problem(s, i)) != NULL) rc = CTN_EINVAL;
        if (rc == CTN_EINVAL) CTN__LOAD_ERR("%s: meta field \"%s\": %s", source, f, why);
    }
    if (rc == CTN_ENOMEM) CTN__LOAD_ERR("%s: out of memory", source);
    if (rc < 0) selection_free(s);
    return rc;
}

/* ---- walking a record ------------------------------------------------------------------- */

typedef struct {
    const ctn_load_ctx *c;
    const selection *sel;
    ctn_val *record;
    size_t line; /* JSON Lines: the record's line, from 1; 0 for a JSON file */
    ctn_val *docs;
    ctn_strbuf path; /* the concrete pointer (escaped) of the value being visited */
    char *err;
    size_t errcap;
} walk;

/* Appends "/" and a member name escaped per RFC 6901 ('~' as "~0", '/' as "~1"). */
static void path_push_key(ctn_strbuf *b, const char *k, size_t n) {
    ctn_sb_put(b, "/", 1);
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] != '~' && k[i] != '/') continue;
        ctn_sb_put(b, k + from, i - from);
        ctn_sb_put(b, k[i] == '~' ? "~0" : "~1", 2);
        from = i + 1;
    }
    ctn_sb_put(b, k + from, n - from);
}

static void path_push_index(ctn_strbuf *b, size_t i) {
    char t[32];
    const int k = snprintf(t, sizeof t, "/%zu", i);
    ctn_sb_put(b, t, (size_t)k);
}

/* Back to the first len bytes, after visiting a child. */
static void path_pop(ctn_strbuf *b, size_t len) {
    b->len = len;
    if (b->p != NULL) b->p[len] = '\0';
}

/* Where the walk is, for a message: the concrete pointer, or "the record" at the top. */
static const char *where(const walk *w) {
    return w->path.len > 0 ? w->path.p : "the record";
}

static const char *a_kind(const ctn_val *v) {
    switch (v->kind) {
    case CTN_VNULL: return "null";
    case CTN_VBOOL: return "a boolean";
    case CTN_VINT: return "an integer";
    case CTN_VNUM: return "a number";
    case CTN_VSTR: return "a string";
    case CTN_VARR: return "an array";
    default: return "an object";
    }
}

/* Returns code with "<source>: [line L: ]<pointer>: <what>", naming the record and the
 * text pointer as the caller wrote it. */
static int fail(walk *w, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail(walk *w, int code, const char *fmt, ...) {
    char *err = w->err;
    const size_t errcap = w->errcap;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (w->line > 0)
        CTN__LOAD_ERR("%s: line %zu: %s: %s", w->c->source, w->line, w->sel->text_src, what);
    else
        CTN__LOAD_ERR("%s: %s: %s", w->c->source, w->sel->text_src, what);
    return code;
}

static int oom(walk *w) {
    char *err = w->err;
    const size_t errcap = w->errcap;
    CTN__LOAD_ERR("%s: out of memory", w->c->source);
    return CTN_ENOMEM;
}

/* Stores meta field f under its last segment's name, when the text's parent or else the
 * record has it. */
static int add_field(walk *w, ctn_val *meta, const jptr *f, ctn_val *parent) {
    ctn_val *v = parent != NULL ? resolve(parent, f) : NULL;
    if (v == NULL) v = resolve(w->record, f);
    if (v == NULL) return 0;
    const seg *last = &f->segs[f->n - 1];
    return ctn_val_setk(meta, last->name, last->len, ctn_val_ref(v));
}

/* Appends the document for the chosen value v; parent holds v (NULL: v is the record). */
static int emit(walk *w, ctn_val *v, ctn_val *parent) {
    ctn_val *meta = ctn__load_meta(w->c);
    int rc = meta != NULL ? 0 : CTN_ENOMEM;
    if (rc == 0 && w->line > 0) rc = ctn_val_set(meta, "line", ctn_val_int((int64_t)w->line));
    if (rc == 0) rc = ctn_val_set(meta, "pointer", ctn_val_str(w->path.p, w->path.len));
    for (size_t k = 0; rc == 0 && k < w->sel->n_meta; k++)
        rc = add_field(w, meta, &w->sel->meta[k], parent);
    size_t len = 0;
    char *text = rc == 0 ? ctn_val_text(v, &len) : NULL;
    if (rc == 0 && text == NULL) rc = CTN_ENOMEM;
    if (rc == 0) {
        rc = ctn_val_push(w->docs, ctn_val_doc(text, len, meta)); /* both take meta */
        meta = NULL;
    }
    ctn_val_unref(meta);
    free(text);
    return rc < 0 ? oom(w) : 0;
}

static int visit(walk *w, ctn_val *v, ctn_val *parent, size_t i);

/* Segment i is "*": every element or member of v, in order. */
static int visit_all(walk *w, ctn_val *v, size_t i) {
    const size_t mark = w->path.len;
    int rc = 0;
    if (v->kind == CTN_VARR) {
        for (size_t k = 0; k < v->u.arr.n && rc == 0; k++) {
            path_push_index(&w->path, k);
            rc = visit(w, v->u.arr.items[k], v, i + 1);
            path_pop(&w->path, mark);
        }
    } else if (v->kind == CTN_VOBJ) {
        for (size_t k = 0; k < v->u.obj.n && rc == 0; k++) {
            const ctn_val *key = v->u.obj.keys[k];
            path_push_key(&w->path, key->u.str.p, key->u.str.len);
            rc = visit(w, v->u.obj.vals[k], v, i + 1);
            path_pop(&w->path, mark);
        }
    } else {
        rc =
            fail(w, CTN_ETYPE, "\"*\" needs an array or object, and %s is %s", where(w), a_kind(v));
    }
    return rc;
}

/* Segment i names one member or element of v. */
static int visit_one(walk *w, ctn_val *v, size_t i) {
    const seg *g = &w->sel->text.segs[i];
    const size_t mark = w->path.len;
    ctn_val *child;
    size_t k;
    if (v->kind == CTN_VOBJ) {
        child = ctn_val_getk(v, g->name, g->len);
        if (child == NULL) return fail(w, CTN_ENOENT, "no member \"%s\" in %s", g->name, where(w));
        path_push_key(&w->path, g->name, g->len);
    } else if (v->kind == CTN_VARR) {
        if (!seg_index(g, &k))
            return fail(w, CTN_ENOENT, "\"%s\" is not an index, and %s is an array", g->name,
                        where(w));
        if (k >= v->u.arr.n)
            return fail(w, CTN_ENOENT, "no element %zu in %s (an array of %zu)", k, where(w),
                        v->u.arr.n);
        child = v->u.arr.items[k];
        path_push_index(&w->path, k);
    } else {
        return fail(w, CTN_ETYPE, "no member \"%s\" in %s, which is %s", g->name, where(w),
                    a_kind(v));
    }
    const int rc = visit(w, child, v, i + 1);
    path_pop(&w->path, mark);
    return rc;
}

/* Follows the text pointer from segment i at v; at its end, v is a chosen value. */
static int visit(walk *w, ctn_val *v, ctn_val *parent, size_t i) {
    if (w->path.oom) return oom(w);
    if (i == w->sel->text.n) return emit(w, v, parent);
    return w->sel->text.segs[i].star ? visit_all(w, v, i) : visit_one(w, v, i);
}

/* ---- records ---------------------------------------------------------------------------- */

/*
 * A parse error from ctn_json_parse ("line L, column C (byte B): what") as
 * "<source>: line L, column C: what", where L is the file's line for JSON Lines (the parser
 * saw one line, so its L is 1) and the byte, an offset into the decoded text, is left out.
 */
static int parse_error(walk *w, int rc, const char *msg) {
    if (rc == CTN_ENOMEM) return oom(w);
    char *err = w->err;
    const size_t errcap = w->errcap;
    size_t line = 0, col = 0, byte = 0;
    int at = 0;
    const char *src = w->c->source;
    if (sscanf(msg, "line %zu, column %zu (byte %zu): %n", &line, &col, &byte, &at) == 3 && at > 0)
        CTN__LOAD_ERR("%s: line %zu, column %zu: %s", src, w->line > 0 ? w->line : line, col,
                      msg + at);
    else if (w->line > 0)
        CTN__LOAD_ERR("%s: line %zu: %s", src, w->line, msg);
    else
        CTN__LOAD_ERR("%s: %s", src, msg);
    return rc;
}

/* Parses one record (the whole text, or one line) and appends its documents. */
static int load_record(walk *w, const char *s, size_t n) {
    char msg[256] = "";
    ctn_val *rec = NULL;
    int rc = ctn_json_parse(s, n, &rec, msg, sizeof msg);
    if (rc < 0) return parse_error(w, rc, msg);
    w->record = rec;
    path_pop(&w->path, 0);
    rc = visit(w, rec, NULL, 0);
    w->record = NULL;
    ctn_val_unref(rec);
    return rc;
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

/* JSON Lines: each line that is not blank is a record; the first bad one ends the load. */
static int load_lines(walk *w, const char *text, size_t len) {
    size_t at = 0;
    for (size_t line = 1; at < len; line++) {
        const char *nl = memchr(text + at, '\n', len - at);
        const size_t end = nl != NULL ? (size_t)(nl - text) : len;
        w->line = line;
        if (!blank(text + at, end - at)) {
            const int rc = load_record(w, text + at, end - at);
            if (rc < 0) return rc;
        }
        at = end + 1;
    }
    return 0;
}

int ctn_load_json(const ctn_load_ctx *c, const ctn_json_sel *sel, const char *data, size_t n,
                  ctn_val *docs, char *err, size_t errcap) {
    int rc = ctn__load_check(c, data, n, docs, err, errcap);
    if (rc < 0) return rc;
    selection s;
    rc = selection_init(&s, sel, c->source, err, errcap);
    if (rc < 0) return rc;
    char *text = NULL;
    size_t len = 0;
    rc = ctn_text_decode(c, data, n, &text, &len);
    walk w = {.c = c, .sel = &s, .docs = docs, .err = err, .errcap = errcap};
    const size_t n0 = docs->u.arr.n;
    if (rc < 0)
        rc = oom(&w);
    else if (sel != NULL && sel->lines)
        rc = load_lines(&w, text, len);
    else
        rc = load_record(&w, text, len);
    if (rc < 0) ctn__load_rollback(docs, n0);
    ctn_sb_free(&w.path);
    free(text);
    selection_free(&s);
    return rc;
}
