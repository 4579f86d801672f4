/*
 * Prompt string templates (template.h). Parsing splits the source once into literal pieces
 * (with "{{" and "}}" already turned into single braces) and variable references, so
 * rendering is only lookups and copies.
 */
#include "template.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "alloc.h"

typedef struct {
    int is_var;
    size_t off, len; /* literal: bytes of t->text */
    size_t var;      /* variable: index into t->vars */
} seg;

struct ctn_tmpl {
    char *text; /* the literal pieces, one after another */
    seg *segs;
    size_t nsegs;
    char **vars; /* distinct names, NUL-terminated */
    size_t nvars;
};

static int name_start(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int name_char(unsigned char c) {
    return name_start(c) || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

/* Writes a message, when the caller gave room for one. */
#define ERR(...)                                                                                   \
    do {                                                                                           \
        if (err != NULL && errcap > 0) ctn__errf(err, errcap, __VA_ARGS__);                        \
    } while (0)

/* Appends a segment; literal pieces next to each other are merged. */
static int add_seg(ctn_tmpl *t, size_t *cap, seg s) {
    if (!s.is_var && t->nsegs > 0 && !t->segs[t->nsegs - 1].is_var) {
        t->segs[t->nsegs - 1].len += s.len;
        return 0;
    }
    if (t->nsegs == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        seg *q = ctn__realloc(t->segs, c * sizeof *q);
        if (q == NULL) return -1;
        t->segs = q;
        *cap = c;
    }
    t->segs[t->nsegs++] = s;
    return 0;
}

/* The index of name among the variables, adding it when new; -1 when memory runs out. */
static long var_index(ctn_tmpl *t, size_t *cap, const char *name, size_t n) {
    for (size_t i = 0; i < t->nvars; i++)
        if (strlen(t->vars[i]) == n && memcmp(t->vars[i], name, n) == 0) return (long)i;
    if (t->nvars == *cap) {
        size_t c = *cap ? *cap * 2 : 4;
        char **q = ctn__realloc(t->vars, c * sizeof *q);
        if (q == NULL) return -1;
        t->vars = q;
        *cap = c;
    }
    char *s = ctn__malloc(n + 1);
    if (s == NULL) return -1;
    memcpy(s, name, n);
    s[n] = '\0';
    t->vars[t->nvars] = s;
    return (long)t->nvars++;
}

ctn_tmpl *ctn_tmpl_parse(const char *src, size_t n, char *err, size_t errcap) {
    if (src == NULL && n > 0) {
        ERR("template text is NULL");
        return NULL;
    }
    ctn_tmpl *t = ctn__calloc(1, sizeof *t);
    if (t == NULL) goto nomem;
    t->text = ctn__malloc(n + 1);
    if (t->text == NULL) goto nomem;
    size_t tlen = 0, segcap = 0, varcap = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)src[i];
        if (c == '}') {
            if (i + 1 < n && src[i + 1] == '}') {
                t->text[tlen] = '}';
                if (add_seg(t, &segcap, (seg){0, tlen++, 1, 0}) < 0) goto nomem;
                i += 2;
                continue;
            }
            ERR("unmatched '}' at byte %zu (write '}}' for a literal brace)", i);
            goto fail;
        }
        if (c != '{') {
            size_t j = i;
            while (j < n && src[j] != '{' && src[j] != '}')
                j++;
            memcpy(t->text + tlen, src + i, j - i);
            if (add_seg(t, &segcap, (seg){0, tlen, j - i, 0}) < 0) goto nomem;
            tlen += j - i;
            i = j;
            continue;
        }
        if (i + 1 < n && src[i + 1] == '{') {
            t->text[tlen] = '{';
            if (add_seg(t, &segcap, (seg){0, tlen++, 1, 0}) < 0) goto nomem;
            i += 2;
            continue;
        }
        size_t a = i + 1, b = a;
        while (b < n && src[b] != '}')
            b++;
        if (b == n) {
            ERR("unmatched '{' at byte %zu (no '}' closes it; write '{{' for a literal brace)", i);
            goto fail;
        }
        if (b == a) {
            ERR("empty variable name '{}' at byte %zu", i);
            goto fail;
        }
        for (size_t k = a; k < b; k++) {
            unsigned char d = (unsigned char)src[k];
            if (k == a ? !name_start(d) : !name_char(d)) {
                if (d >= 0x20 && d < 0x7f)
                    ERR("bad character '%c' in a variable name at byte %zu (names are "
                        "[A-Za-z_][A-Za-z0-9_.-]*)",
                        d, k);
                else
                    ERR("bad byte 0x%02X in a variable name at byte %zu (names are "
                        "[A-Za-z_][A-Za-z0-9_.-]*)",
                        d, k);
                goto fail;
            }
        }
        long vi = var_index(t, &varcap, src + a, b - a);
        if (vi < 0 || add_seg(t, &segcap, (seg){1, 0, 0, (size_t)vi}) < 0) goto nomem;
        i = b + 1;
    }
    return t;
nomem:
    ERR("out of memory");
fail:
    ctn_tmpl_free(t);
    return NULL;
}

void ctn_tmpl_free(ctn_tmpl *t) {
    if (t == NULL) return;
    for (size_t i = 0; i < t->nvars; i++)
        free(t->vars[i]);
    free(t->vars);
    free(t->segs);
    free(t->text);
    free(t);
}

size_t ctn_tmpl_nvars(const ctn_tmpl *t) {
    return t == NULL ? 0 : t->nvars;
}

const char *ctn_tmpl_var(const ctn_tmpl *t, size_t i) {
    return t == NULL || i >= t->nvars ? NULL : t->vars[i];
}

int ctn_tmpl_render(const ctn_tmpl *t, const ctn_val *vars, char **out, size_t *len, char *err,
                    size_t errcap) {
    if (out != NULL) *out = NULL;
    if (len != NULL) *len = 0;
    if (t == NULL || out == NULL) return CTN_EINVAL;
    int whole = vars != NULL && vars->kind != CTN_VOBJ && t->nvars == 1;
    if (vars != NULL && vars->kind != CTN_VOBJ && t->nvars > 1) {
        if (err != NULL && errcap > 0)
            ctn__errf(err, errcap,
                      "the template has %zu variables, so its input must be an "
                      "object, not a %s",
                      t->nvars, ctn_vkind_name(vars->kind));
        return CTN_ETYPE;
    }
    /* Each variable's text once, even when the template uses it several times. */
    char **txt = ctn__calloc(t->nvars ? t->nvars : 1, sizeof *txt);
    size_t *tl = ctn__calloc(t->nvars ? t->nvars : 1, sizeof *tl);
    int rc = 0;
    if (txt == NULL || tl == NULL) {
        rc = CTN_ENOMEM;
        goto done;
    }
    size_t total = 0;
    for (size_t i = 0; i < t->nvars; i++) {
        const ctn_val *v = whole                                    ? vars
                           : vars != NULL && vars->kind == CTN_VOBJ ? ctn_val_get(vars, t->vars[i])
                                                                    : NULL;
        if (v == NULL) {
            if (err != NULL && errcap > 0)
                ctn__errf(err, errcap, "missing variable '%s'", t->vars[i]);
            rc = CTN_ENOENT;
            goto done;
        }
        txt[i] = ctn_val_text(v, &tl[i]);
        if (txt[i] == NULL) {
            rc = CTN_ENOMEM;
            goto done;
        }
    }
    for (size_t s = 0; s < t->nsegs; s++)
        total += t->segs[s].is_var ? tl[t->segs[s].var] : t->segs[s].len;
    char *o = ctn__malloc(total + 1);
    if (o == NULL) {
        rc = CTN_ENOMEM;
        goto done;
    }
    size_t at = 0;
    for (size_t s = 0; s < t->nsegs; s++) {
        const seg *g = &t->segs[s];
        if (g->is_var) {
            memcpy(o + at, txt[g->var], tl[g->var]);
            at += tl[g->var];
        } else {
            memcpy(o + at, t->text + g->off, g->len);
            at += g->len;
        }
    }
    o[at] = '\0';
    *out = o;
    if (len != NULL) *len = at;
done:
    if (rc == CTN_ENOMEM && err != NULL && errcap > 0) ctn__errf(err, errcap, "out of memory");
    if (txt != NULL)
        for (size_t i = 0; i < t->nvars; i++)
            free(txt[i]);
    free(txt);
    free(tl);
    return rc;
}
