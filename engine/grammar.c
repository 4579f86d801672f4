/*
 * GBNF grammars (grammar.h): the parser and compiler, the token trie, and the matcher that
 * masks a vocabulary by walking the trie against a set of persistent, hash-consed stacks.
 */
#include "grammar.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h" /* every allocation can be failed by the tests */
#include "grammar-impl.h"
#include "unicode.h"

/* Limits that keep hostile grammars from eating the machine. */
#define MAX_ELEMS   (1 << 20) /* elements of the compiled grammar */
#define MAX_NESTING 200       /* ( ) inside each other */

/* ---- growable arrays ------------------------------------------------------------------- */

/* Makes room for need items of size sz in *p (capacity *cap); false when memory ran out. */
static bool grow(void *pp, int32_t *cap, int64_t need, size_t sz) {
    void **p = pp;
    if (need <= *cap) return true;
    if (need > INT32_MAX / 2) return false;
    int64_t c = *cap > 0 ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = ctn__realloc(*p, (size_t)c * sz);
    if (q == NULL) return false;
    *p = q;
    *cap = (int32_t)c;
    return true;
}

/* ======================================================================================== */
/* ---- parsing ---------------------------------------------------------------------------- */

typedef struct {
    char *name;
    ctn__gel *el; /* alternatives, ALT-separated, END last once done */
    int32_t n, cap;
    bool defined;
    size_t def_at;    /* offset of its name where defined (written rules) */
    size_t use_at;    /* offset of its first reference */
    int32_t use_rule; /* the written rule that first referenced it */
    int32_t top;      /* the written rule it was made for (itself when written) */
    int32_t n_gen;    /* rules generated for it so far (written rules) */
} prule;

typedef struct {
    const char *s;
    size_t n;
    char *err;
    size_t errlen;
    int rc;
    prule *rules;
    int32_t n_rules, cap_rules;
    int32_t *user; /* the written rules' ids */
    int32_t n_user, cap_user;
    ctn__grange *ranges; /* every set's ranges, set after set */
    int32_t n_ranges, cap_ranges;
    int32_t *set_off; /* (n_sets + 1) */
    int32_t n_sets, cap_sets;
    int64_t n_elems;  /* over every rule */
    int32_t top;      /* the written rule being parsed, for messages; -1 before one */
    ctn__grange *cls; /* a class being built */
    int32_t n_cls, cap_cls;
    ctn__gel *copy; /* a repeated symbol */
    int32_t cap_copy;
} gparse;

/* Records the first error, with the line, column and rule of offset at. */
static void perr(gparse *P, size_t at, const char *fmt, ...) {
    if (P->rc < 0) return;
    P->rc = CTN_EINVAL;
    if (P->err == NULL || P->errlen == 0) return;
    int line = 1;
    size_t col0 = 0;
    if (at > P->n) at = P->n;
    for (size_t i = 0; i < at; i++)
        if (P->s[i] == '\n') line++, col0 = i + 1;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (P->top >= 0)
        ctn__errf(P->err, P->errlen, "grammar line %d, column %zu (rule '%s'): %s", line,
                  at - col0 + 1, P->rules[P->top].name, msg);
    else
        ctn__errf(P->err, P->errlen, "grammar line %d, column %zu: %s", line, at - col0 + 1, msg);
}

static void poom(gparse *P) {
    if (P->rc < 0) return;
    P->rc = CTN_ENOMEM;
    ctn__errf(P->err, P->errlen, "out of memory compiling the grammar");
}

static bool word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

static char at(const gparse *P, size_t i) {
    return i < P->n ? P->s[i] : '\0';
}

/* Skips blanks and comments, and newlines too when newline_ok. */
static size_t skip_space(const gparse *P, size_t i, bool newline_ok) {
    while (i < P->n) {
        const char c = P->s[i];
        if (c == ' ' || c == '\t' || (newline_ok && (c == '\r' || c == '\n'))) {
            i++;
        } else if (c == '#') {
            while (i < P->n && P->s[i] != '\n' && P->s[i] != '\r')
                i++;
        } else {
            break;
        }
    }
    return i;
}

/* The rule named s[i, i+len), made (undefined) when new; -1 when memory ran out. */
static int32_t add_rule(gparse *P, const char *name, size_t len) {
    if (!grow(&P->rules, &P->cap_rules, (int64_t)P->n_rules + 1, sizeof *P->rules)) return -1;
    prule *r = &P->rules[P->n_rules];
    memset(r, 0, sizeof *r);
    r->name = ctn__malloc(len + 1);
    if (r->name == NULL) return -1;
    memcpy(r->name, name, len);
    r->name[len] = '\0';
    r->top = P->n_rules;
    r->use_rule = -1;
    return P->n_rules++;
}

/* The written rule named name[0, len), made (undefined) when new; -1 when memory ran out.
 * Only written rules are searched (their names cannot contain the '_' of made ones). */
static int32_t rule_id(gparse *P, const char *name, size_t len) {
    for (int32_t k = 0; k < P->n_user; k++) {
        const int32_t r = P->user[k];
        if (strlen(P->rules[r].name) == len && memcmp(P->rules[r].name, name, len) == 0) return r;
    }
    if (!grow(&P->user, &P->cap_user, (int64_t)P->n_user + 1, sizeof *P->user)) return -1;
    const int32_t r = add_rule(P, name, len);
    if (r >= 0) P->user[P->n_user++] = r;
    return r;
}

/* A new rule for a group or repetition inside the written rule P->top: "name_N". */
static int32_t gen_rule(gparse *P) {
    prule *t = &P->rules[P->top];
    char name[128];
    const int len = snprintf(name, sizeof name, "%.80s_%d", t->name, (int)++t->n_gen);
    const int32_t r = add_rule(P, name, (size_t)len);
    if (r < 0) return -1;
    P->rules[r].defined = true;
    P->rules[r].top = P->top;
    return r;
}

static bool emit(gparse *P, int32_t r, int32_t type, int32_t val) {
    if (P->n_elems >= MAX_ELEMS) {
        perr(P, P->n, "the grammar is too large (over %d elements once compiled)", MAX_ELEMS);
        return false;
    }
    prule *R = &P->rules[r];
    if (!grow(&R->el, &R->cap, (int64_t)R->n + 1, sizeof *R->el)) {
        poom(P);
        return false;
    }
    R->el[R->n++] = (ctn__gel){type, val};
    P->n_elems++;
    return true;
}

static int cmp_range(const void *a, const void *b) {
    const ctn__grange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo ? 1 : 0;
}

/* Turns the class in P->cls into a set (sorted, merged, complemented when negated,
 * surrogates removed) and returns its id, or -1. */
static int32_t make_set(gparse *P, bool negate) {
    if (P->n_cls > 1) qsort(P->cls, (size_t)P->n_cls, sizeof *P->cls, cmp_range);
    int32_t m = 0;
    for (int32_t i = 0; i < P->n_cls; i++) {
        if (m > 0 && P->cls[i].lo <= P->cls[m - 1].hi + 1) {
            if (P->cls[i].hi > P->cls[m - 1].hi) P->cls[m - 1].hi = P->cls[i].hi;
        } else {
            P->cls[m++] = P->cls[i];
        }
    }
    /* The set's ranges go at the end of P->ranges: complemented, and without surrogates. */
    ctn__grange tmp[2];
    const int32_t start = P->n_ranges;
    uint32_t next = 0; /* complement: first code point not yet covered */
    for (int32_t i = 0; i <= m; i++) {
        int nt = 0;
        ctn__grange r;
        if (negate) {
            if (i < m) {
                if (P->cls[i].lo == 0) {
                    next = P->cls[i].hi + 1;
                    continue;
                }
                r = (ctn__grange){next, P->cls[i].lo - 1};
                next = P->cls[i].hi + 1;
            } else {
                if (next > 0x10FFFF) break;
                r = (ctn__grange){next, 0x10FFFF};
            }
            if (r.lo > r.hi) continue;
        } else {
            if (i == m) break;
            r = P->cls[i];
        }
        if (r.lo <= 0xDFFF && r.hi >= 0xD800) { /* cut the surrogates out */
            if (r.lo < 0xD800) tmp[nt++] = (ctn__grange){r.lo, 0xD7FF};
            if (r.hi > 0xDFFF) tmp[nt++] = (ctn__grange){0xE000, r.hi};
        } else {
            tmp[nt++] = r;
        }
        for (int k = 0; k < nt; k++) {
            if (!grow(&P->ranges, &P->cap_ranges, (int64_t)P->n_ranges + 1, sizeof *P->ranges)) {
                poom(P);
                return -1;
            }
            P->ranges[P->n_ranges++] = tmp[k];
        }
    }
    if (!grow(&P->set_off, &P->cap_sets, (int64_t)P->n_sets + 2, sizeof *P->set_off)) {
        poom(P);
        return -1;
    }
    P->set_off[P->n_sets] = start;
    P->set_off[P->n_sets + 1] = P->n_ranges;
    return P->n_sets++;
}

static bool cls_add(gparse *P, uint32_t lo, uint32_t hi) {
    if (!grow(&P->cls, &P->cap_cls, (int64_t)P->n_cls + 1, sizeof *P->cls)) {
        poom(P);
        return false;
    }
    P->cls[P->n_cls++] = (ctn__grange){lo, hi};
    return true;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One character of a literal or class at *i (an escape or a UTF-8 character): its code
 * point, or -1 after an error. */
static int64_t parse_char(gparse *P, size_t *i) {
    const size_t s = *i;
    if (s >= P->n) {
        perr(P, s, "unexpected end of the grammar");
        return -1;
    }
    const unsigned char c = (unsigned char)P->s[s];
    if (c == '\\') {
        const char e = at(P, s + 1);
        int digits = 0;
        switch (e) {
        case 'n': *i = s + 2; return '\n';
        case 't': *i = s + 2; return '\t';
        case 'r': *i = s + 2; return '\r';
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-': *i = s + 2; return e;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (s + 1 >= P->n)
                perr(P, s, "unexpected end of the grammar after '\\'");
            else
                perr(P, s, "unknown escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
            return -1;
        }
        uint32_t v = 0;
        for (int k = 0; k < digits; k++) {
            const int h = hexval(at(P, s + 2 + (size_t)k));
            if (h < 0) {
                perr(P, s + 2 + (size_t)k, "expected %d hex digits after '\\%c'", digits, e);
                return -1;
            }
            v = v * 16 + (uint32_t)h;
        }
        if (v > 0x10FFFF) {
            perr(P, s, "code point U+%X is past U+10FFFF", (unsigned)v);
            return -1;
        }
        *i = s + 2 + (size_t)digits;
        return v;
    }
    if (c == '\0') {
        perr(P, s, "a NUL byte in the grammar");
        return -1;
    }
    const int len = ctn__utf8_char((const unsigned char *)P->s + s, P->n - s);
    if (len <= 0) {
        perr(P, s, "invalid UTF-8");
        return -1;
    }
    uint32_t cp;
    ctn__utf8_decode((const unsigned char *)P->s + s, (size_t)len, &cp);
    *i = s + (size_t)len;
    return cp;
}

/* Replaces the symbol r.el[from ..] by its repetition {lo, hi} (hi < 0: unbounded), with
 * llama.cpp's expansion: lo copies, then `x_N ::= sym x_N |` or nested optionals. */
static bool repeat(gparse *P, int32_t r, int32_t from, int64_t lo, int64_t hi) {
    prule *R = &P->rules[r];
    const int32_t len = R->n - from;
    if (len == 0) return true; /* "" repeated is still "" */
    if (!grow(&P->copy, &P->cap_copy, len, sizeof *P->copy)) {
        poom(P);
        return false;
    }
    memcpy(P->copy, R->el + from, (size_t)len * sizeof *P->copy);
    P->n_elems -= len;
    R->n = from;
    for (int64_t k = 0; k < lo; k++)
        for (int32_t j = 0; j < len; j++)
            if (!emit(P, r, P->copy[j].type, P->copy[j].val)) return false;
    if (hi == lo) return true;
    int32_t last = -1;
    const int64_t n_opt = hi < 0 ? 1 : hi - lo;
    for (int64_t k = 0; k < n_opt; k++) {
        const int32_t g = gen_rule(P);
        if (g < 0) {
            poom(P);
            return false;
        }
        for (int32_t j = 0; j < len; j++)
            if (!emit(P, g, P->copy[j].type, P->copy[j].val)) return false;
        if (hi < 0) {
            if (!emit(P, g, CTN__GEL_REF, g)) return false;
        } else if (last >= 0) {
            if (!emit(P, g, CTN__GEL_REF, last)) return false;
        }
        if (!emit(P, g, CTN__GEL_ALT, 0) || !emit(P, g, CTN__GEL_END, 0)) return false;
        last = g;
    }
    return emit(P, r, CTN__GEL_REF, last);
}

/* A decimal count at *i for {m,n}; -1 after an error. */
static int64_t parse_count(gparse *P, size_t *i) {
    size_t k = *i;
    int64_t v = 0;
    if (at(P, k) < '0' || at(P, k) > '9') {
        perr(P, k, "expected a number in { }");
        return -1;
    }
    while (at(P, k) >= '0' && at(P, k) <= '9') {
        v = v * 10 + (at(P, k) - '0');
        if (v > CTN_GRAMMAR_MAX_REPEAT) {
            perr(P, *i, "a repetition count over %d", CTN_GRAMMAR_MAX_REPEAT);
            return -1;
        }
        k++;
    }
    *i = k;
    return v;
}

static size_t parse_alternates(gparse *P, size_t i, int32_t r, bool nested, int depth);

/* A sequence of elements into rule r; returns the offset after it. */
static size_t parse_sequence(gparse *P, size_t i, int32_t r, bool nested, int depth) {
    int32_t sym = -1; /* where the last symbol starts in the rule's elements (-1: none) */
    while (P->rc == 0 && i < P->n) {
        const char c = P->s[i];
        if (c == '"') {
            const size_t open = i++;
            sym = P->rules[r].n;
            while (P->rc == 0 && at(P, i) != '"') {
                if (i >= P->n) {
                    perr(P, open, "a string that is never closed (expected '\"')");
                    return i;
                }
                const int64_t cp = parse_char(P, &i);
                if (cp < 0) return i;
                P->n_cls = 0;
                if (!cls_add(P, (uint32_t)cp, (uint32_t)cp)) return i;
                const int32_t s = make_set(P, false);
                if (s < 0 || !emit(P, r, CTN__GEL_SET, s)) return i;
            }
            i = skip_space(P, i + 1, nested);
        } else if (c == '[') {
            const size_t open = i++;
            sym = P->rules[r].n;
            bool neg = false;
            if (at(P, i) == '^') neg = true, i++;
            P->n_cls = 0;
            while (P->rc == 0 && at(P, i) != ']') {
                if (i >= P->n) {
                    perr(P, open, "a character class that is never closed (expected ']')");
                    return i;
                }
                const int64_t lo = parse_char(P, &i);
                if (lo < 0) return i;
                int64_t hi = lo;
                if (at(P, i) == '-' && i + 1 < P->n && P->s[i + 1] != ']') {
                    const size_t dash = i++;
                    hi = parse_char(P, &i);
                    if (hi < 0) return i;
                    if (hi < lo) {
                        perr(P, dash, "a range whose end U+%04X is below its start U+%04X",
                             (unsigned)hi, (unsigned)lo);
                        return i;
                    }
                }
                if (!cls_add(P, (uint32_t)lo, (uint32_t)hi)) return i;
            }
            if (P->rc < 0) return i;
            if (P->n_cls == 0 && !neg) {
                perr(P, open, "an empty character class");
                return i;
            }
            const int32_t s = make_set(P, neg);
            if (s < 0 || !emit(P, r, CTN__GEL_SET, s)) return i;
            i = skip_space(P, i + 1, nested);
        } else if (c == '.') {
            sym = P->rules[r].n;
            P->n_cls = 0;
            const int32_t s = make_set(P, true);
            if (s < 0 || !emit(P, r, CTN__GEL_SET, s)) return i;
            i = skip_space(P, i + 1, nested);
        } else if (word_char(c)) {
            const size_t b = i;
            while (word_char(at(P, i)))
                i++;
            const int32_t ref = rule_id(P, P->s + b, i - b);
            if (ref < 0) {
                poom(P);
                return i;
            }
            if (P->rules[ref].use_rule < 0) {
                P->rules[ref].use_at = b;
                P->rules[ref].use_rule = P->top;
            }
            sym = P->rules[r].n;
            if (!emit(P, r, CTN__GEL_REF, ref)) return i;
            i = skip_space(P, i, nested);
        } else if (c == '(') {
            if (depth >= MAX_NESTING) {
                perr(P, i, "groups nested deeper than %d", MAX_NESTING);
                return i;
            }
            const size_t open = i;
            const int32_t g = gen_rule(P);
            if (g < 0) {
                poom(P);
                return i;
            }
            i = parse_alternates(P, skip_space(P, i + 1, true), g, true, depth + 1);
            if (P->rc < 0) return i;
            if (at(P, i) != ')') {
                perr(P, i >= P->n ? open : i, "expected ')'%s",
                     i >= P->n ? " to close this group" : "");
                return i;
            }
            if (!emit(P, g, CTN__GEL_END, 0)) return i;
            sym = P->rules[r].n;
            if (!emit(P, r, CTN__GEL_REF, g)) return i;
            i = skip_space(P, i + 1, nested);
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (sym < 0) {
                perr(P, i, "'%c' with nothing before it to repeat", c);
                return i;
            }
            int64_t lo, hi;
            if (c == '{') {
                size_t k = skip_space(P, i + 1, false);
                lo = parse_count(P, &k);
                if (lo < 0) return k;
                k = skip_space(P, k, false);
                hi = lo;
                if (at(P, k) == ',') {
                    k = skip_space(P, k + 1, false);
                    if (at(P, k) == '}') {
                        hi = -1;
                    } else {
                        hi = parse_count(P, &k);
                        if (hi < 0) return k;
                        if (hi < lo) {
                            perr(P, i, "{%d,%d}: the maximum is below the minimum", (int)lo,
                                 (int)hi);
                            return k;
                        }
                    }
                    k = skip_space(P, k, false);
                }
                if (at(P, k) != '}') {
                    perr(P, k, "expected '}'");
                    return k;
                }
                i = k + 1;
            } else {
                lo = c == '+' ? 1 : 0;
                hi = c == '?' ? 1 : -1;
                i++;
            }
            if (!repeat(P, r, sym, lo, hi)) return i;
            i = skip_space(P, i, nested);
        } else {
            break;
        }
    }
    return i;
}

static size_t parse_alternates(gparse *P, size_t i, int32_t r, bool nested, int depth) {
    i = parse_sequence(P, i, r, nested, depth);
    while (P->rc == 0 && at(P, i) == '|') {
        if (!emit(P, r, CTN__GEL_ALT, 0)) return i;
        i = parse_sequence(P, skip_space(P, i + 1, true), r, nested, depth);
    }
    return i;
}

/* One rule `name ::= alternatives` at i (after leading space); returns the offset after it
 * and its newline. */
static size_t parse_rule(gparse *P, size_t i) {
    const size_t b = i;
    while (word_char(at(P, i)))
        i++;
    if (i == b) {
        P->top = -1;
        perr(P, b, "expected a rule name");
        return i;
    }
    const int32_t r = rule_id(P, P->s + b, i - b);
    if (r < 0) {
        poom(P);
        return i;
    }
    P->top = r;
    if (P->rules[r].defined) {
        int line = 1;
        for (size_t k = 0; k < P->rules[r].def_at; k++)
            line += P->s[k] == '\n';
        perr(P, b, "the rule is defined twice (first on line %d)", line);
        return i;
    }
    P->rules[r].defined = true;
    P->rules[r].def_at = b;
    i = skip_space(P, i, false);
    if (at(P, i) != ':' || at(P, i + 1) != ':' || at(P, i + 2) != '=') {
        perr(P, i, "expected '::='");
        return i;
    }
    i = parse_alternates(P, skip_space(P, i + 3, true), r, false, 0);
    if (P->rc < 0) return i;
    if (!emit(P, r, CTN__GEL_END, 0)) return i;
    if (at(P, i) == '\r') i++;
    if (at(P, i) == '\n') {
        i++;
    } else if (i < P->n) {
        const char c = P->s[i];
        if (c == ')')
            perr(P, i, "')' without a '(' before it");
        else if (c == ']')
            perr(P, i, "']' without a '[' before it");
        else if (c == ':' && at(P, i + 1) == ':')
            perr(P, i, "'::=' inside a rule (a rule ends at a newline)");
        else
            perr(P, i, "unexpected '%c' (expected an element, '|' or the end of the line)",
                 c >= 0x20 && c < 0x7f ? c : '?');
    }
    return i;
}

/* ---- checks after parsing ------------------------------------------------------------------ */

/* Offset of rule r's name where it is defined, or where its written rule is. */
static size_t rule_at(const gparse *P, int32_t r) {
    return P->rules[P->rules[r].top].def_at;
}

/*
 * Refuses left recursion: a rule that can reach itself through references at the start of
 * an alternative, where everything before them can match the empty string. The matcher
 * expands references before it consumes anything, so such a rule would expand for ever.
 */
static void check_left_recursion(gparse *P) {
    const int32_t R = P->n_rules;
    bool *nullable = ctn__calloc((size_t)R, sizeof *nullable);
    int32_t *adj_off = ctn__calloc((size_t)R + 1, sizeof *adj_off);
    int32_t *color = ctn__calloc((size_t)R, sizeof *color);
    int32_t *stk = ctn__malloc((size_t)R * 2 * sizeof *stk);
    int32_t *adj = NULL, n_adj = 0, cap_adj = 0;
    if (!nullable || !adj_off || !color || !stk) goto oom;
    /* nullable: a fixpoint over the alternatives */
    for (bool changed = true; changed;) {
        changed = false;
        for (int32_t r = 0; r < R; r++) {
            if (nullable[r]) continue;
            const prule *x = &P->rules[r];
            bool alt_ok = true;
            for (int32_t k = 0; k < x->n; k++) {
                const ctn__gel e = x->el[k];
                if (e.type == CTN__GEL_ALT || e.type == CTN__GEL_END) {
                    if (alt_ok) {
                        nullable[r] = changed = true;
                        break;
                    }
                    alt_ok = true;
                } else if (e.type == CTN__GEL_SET || !nullable[e.val]) {
                    alt_ok = false;
                }
            }
        }
    }
    /* edges r -> s: s can come first in r */
    for (int32_t r = 0; r < R; r++) {
        adj_off[r] = n_adj;
        const prule *x = &P->rules[r];
        bool start = true;
        for (int32_t k = 0; k < x->n; k++) {
            const ctn__gel e = x->el[k];
            if (e.type == CTN__GEL_ALT || e.type == CTN__GEL_END) {
                start = true;
            } else if (start && e.type == CTN__GEL_REF) {
                if (!grow(&adj, &cap_adj, (int64_t)n_adj + 1, sizeof *adj)) goto oom;
                adj[n_adj++] = e.val;
                if (!nullable[e.val]) start = false;
            } else {
                start = false;
            }
        }
    }
    adj_off[R] = n_adj;
    /* a depth-first search with an explicit stack of (rule, next edge) */
    for (int32_t s0 = 0; s0 < R && P->rc == 0; s0++) {
        if (color[s0]) continue;
        int32_t sp = 0;
        stk[sp++] = s0, stk[sp++] = adj_off[s0];
        color[s0] = 1;
        while (sp > 0 && P->rc == 0) {
            const int32_t r = stk[sp - 2], k = stk[sp - 1];
            if (k == adj_off[r + 1]) {
                color[r] = 2;
                sp -= 2;
                continue;
            }
            stk[sp - 1]++;
            const int32_t t = adj[k];
            if (color[t] == 1) {
                const int32_t top = P->rules[t].top;
                P->top = top;
                if (P->rules[t].top == t)
                    perr(P, rule_at(P, t),
                         "left recursion: '%s' can begin with '%s' (write it "
                         "as a repetition)",
                         P->rules[t].name, P->rules[t].name);
                else
                    perr(P, rule_at(P, t),
                         "left recursion in a group or repetition of '%s' (a repetition of "
                         "something that can match nothing, or a group that begins with "
                         "itself)",
                         P->rules[top].name);
            } else if (color[t] == 0) {
                color[t] = 1;
                stk[sp++] = t, stk[sp++] = adj_off[t];
            }
        }
    }
    goto done;
oom:
    poom(P);
done:
    free(nullable);
    free(adj_off);
    free(color);
    free(stk);
    free(adj);
}

void ctn_grammar_free(ctn_grammar *g) {
    if (g == NULL) return;
    if (g->names != NULL)
        for (int32_t r = 0; r < g->n_rules; r++)
            free(g->names[r]);
    free(g->names);
    free(g->rule_start);
    free(g->alt_off);
    free(g->alts);
    free(g->elems);
    free(g->ranges);
    free(g->set_off);
    free(g->ascii);
    free(g);
}

int32_t ctn_grammar_n_rules(const ctn_grammar *g) {
    return g->n_rules;
}

/* Lays the parsed rules out as one ctn_grammar. */
static ctn_grammar *flatten(gparse *P) {
    ctn_grammar *g = ctn__calloc(1, sizeof *g);
    if (g == NULL) return NULL;
    const int32_t R = P->n_rules;
    int64_t n_alts = 0;
    for (int32_t r = 0; r < R; r++)
        for (int32_t k = 0; k < P->rules[r].n; k++)
            n_alts += P->rules[r].el[k].type == CTN__GEL_ALT;
    n_alts += R;
    g->n_rules = R;
    g->names = ctn__calloc((size_t)R, sizeof *g->names);
    g->rule_start = ctn__malloc((size_t)R * sizeof *g->rule_start);
    g->alt_off = ctn__malloc((size_t)(R + 1) * sizeof *g->alt_off);
    g->alts = ctn__malloc((size_t)n_alts * sizeof *g->alts);
    g->elems = ctn__malloc((size_t)(P->n_elems > 0 ? P->n_elems : 1) * sizeof *g->elems);
    g->n_sets = P->n_sets;
    g->ranges = ctn__malloc((size_t)(P->n_ranges > 0 ? P->n_ranges : 1) * sizeof *g->ranges);
    g->set_off = ctn__malloc((size_t)(P->n_sets + 1) * sizeof *g->set_off);
    g->ascii = ctn__calloc((size_t)(P->n_sets > 0 ? P->n_sets : 1) * 2, sizeof *g->ascii);
    if (!g->names || !g->rule_start || !g->alt_off || !g->alts || !g->elems || !g->ranges ||
        !g->set_off || !g->ascii) {
        ctn_grammar_free(g);
        return NULL;
    }
    int32_t n = 0, a = 0;
    for (int32_t r = 0; r < R; r++) {
        prule *x = &P->rules[r];
        g->names[r] = x->name;
        x->name = NULL;
        g->rule_start[r] = n;
        g->alt_off[r] = a;
        g->alts[a++] = n;
        for (int32_t k = 0; k < x->n; k++) {
            g->elems[n++] = x->el[k];
            if (x->el[k].type == CTN__GEL_ALT) g->alts[a++] = n;
        }
    }
    g->alt_off[R] = a;
    g->n_elems = n;
    if (P->n_ranges > 0) memcpy(g->ranges, P->ranges, (size_t)P->n_ranges * sizeof *g->ranges);
    if (P->n_sets > 0) memcpy(g->set_off, P->set_off, (size_t)P->n_sets * sizeof *g->set_off);
    g->set_off[P->n_sets] = P->n_ranges;
    for (int32_t s = 0; s < P->n_sets; s++)
        for (int32_t k = g->set_off[s]; k < g->set_off[s + 1]; k++)
            for (uint32_t c = g->ranges[k].lo; c <= g->ranges[k].hi && c < 128; c++)
                g->ascii[2 * s + (c >> 6)] |= 1ull << (c & 63);
    return g;
}

int ctn_grammar_new_n(ctn_grammar **out, const char *text, size_t n, char *err, size_t errlen) {
    if (out != NULL) *out = NULL;
    if (out == NULL || (text == NULL && n > 0)) {
        ctn__errf(err, errlen, "grammar: no text");
        return CTN_EINVAL;
    }
    gparse P;
    memset(&P, 0, sizeof P);
    P.s = text;
    P.n = n;
    P.err = err;
    P.errlen = errlen;
    P.top = -1;
    size_t i = skip_space(&P, 0, true);
    while (P.rc == 0 && i < P.n) {
        i = parse_rule(&P, i);
        i = skip_space(&P, i, true);
    }
    P.top = -1;
    for (int32_t r = 0; P.rc == 0 && r < P.n_rules; r++) {
        if (P.rules[r].defined) continue;
        P.top = P.rules[r].use_rule;
        perr(&P, P.rules[r].use_at, "undefined rule '%s'", P.rules[r].name);
    }
    int32_t root = -1;
    for (int32_t r = 0; P.rc == 0 && r < P.n_rules; r++)
        if (strcmp(P.rules[r].name, "root") == 0) root = r;
    if (P.rc == 0 && root < 0) {
        P.rc = CTN_EINVAL;
        ctn__errf(err, errlen, "grammar: no rule 'root' (the start rule)");
    }
    if (P.rc == 0) check_left_recursion(&P);
    ctn_grammar *g = NULL;
    if (P.rc == 0) {
        g = flatten(&P);
        if (g == NULL)
            poom(&P);
        else
            g->root = root;
    }
    for (int32_t r = 0; r < P.n_rules; r++) {
        free(P.rules[r].name);
        free(P.rules[r].el);
    }
    free(P.rules);
    free(P.user);
    free(P.ranges);
    free(P.set_off);
    free(P.cls);
    free(P.copy);
    if (P.rc < 0) return P.rc;
    *out = g;
    return 0;
}

int ctn_grammar_new(ctn_grammar **out, const char *text, char *err, size_t errlen) {
    return ctn_grammar_new_n(out, text, text != NULL ? strlen(text) : 0, err, errlen);
}

/* ======================================================================================== */
/* ---- the token trie --------------------------------------------------------------------- */

struct ctn_token_trie {
    uint64_t serial; /* unique per trie made in this process: the key of masks cached for it */
    int32_t n_tokens;
    int32_t n_nodes;   /* node 0 is the root (no byte) */
    uint8_t *byte;     /* (n_nodes) the byte on the edge into the node */
    int32_t *depth;    /* (n_nodes) bytes from the root */
    int32_t *skip;     /* (n_nodes) the first node after the node's subtree (preorder) */
    int32_t *tok_off;  /* (n_nodes + 1) tokens ending at node i: toks[tok_off[i] ..] */
    int32_t *toks;     /* token ids in trie order */
    int32_t max_depth; /* the longest piece */
    int32_t *eog;      /* end-of-generation tokens */
    int32_t n_eog;
    uint8_t *is_eog;    /* (n_tokens) */
    char *bytes;        /* every piece, one after the other */
    int64_t *piece_off; /* (n_tokens + 1) */
};

typedef struct {
    const char *p;
    int32_t len, id;
} tpiece;

static int cmp_piece(const void *a, const void *b) {
    const tpiece *x = a, *y = b;
    const int32_t n = x->len < y->len ? x->len : y->len;
    const int c = memcmp(x->p, y->p, (size_t)n);
    if (c != 0) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void ctn_token_trie_free(ctn_token_trie *t) {
    if (t == NULL) return;
    free(t->byte);
    free(t->depth);
    free(t->skip);
    free(t->tok_off);
    free(t->toks);
    free(t->eog);
    free(t->is_eog);
    free(t->bytes);
    free(t->piece_off);
    free(t);
}

int32_t ctn_token_trie_n_tokens(const ctn_token_trie *t) {
    return t->n_tokens;
}

int64_t ctn_token_trie_n_nodes(const ctn_token_trie *t) {
    return t->n_nodes;
}

int ctn_token_trie_new(ctn_token_trie **out, int32_t n_tokens, const char *const *pieces,
                       const size_t *lens, const bool *eog, char *err, size_t errlen) {
    if (out != NULL) *out = NULL;
    if (out == NULL || n_tokens < 1 || pieces == NULL || lens == NULL) {
        ctn__errf(err, errlen, "token trie: no tokens");
        return CTN_EINVAL;
    }
    int64_t total = 0;
    for (int32_t i = 0; i < n_tokens; i++) {
        if (lens[i] > 0 && pieces[i] == NULL) {
            ctn__errf(err, errlen, "token trie: token %d has no bytes", (int)i);
            return CTN_EINVAL;
        }
        if (lens[i] > (1u << 20)) {
            ctn__errf(err, errlen, "token trie: token %d is %zu bytes long", (int)i, lens[i]);
            return CTN_EINVAL;
        }
        total += (int64_t)lens[i];
    }
    if (total >= INT32_MAX / 2) {
        ctn__errf(err, errlen, "token trie: the pieces add up to %lld bytes", (long long)total);
        return CTN_EINVAL;
    }
    ctn_token_trie *t = ctn__calloc(1, sizeof *t);
    tpiece *ord = ctn__malloc((size_t)n_tokens * sizeof *ord);
    int32_t *path = NULL;
    if (t == NULL || ord == NULL) goto oom;
    static _Atomic uint64_t serials;
    t->serial = ++serials;
    t->n_tokens = n_tokens;
    const size_t nn = (size_t)total + 1;
    t->byte = ctn__malloc(nn);
    t->depth = ctn__malloc(nn * sizeof *t->depth);
    t->skip = ctn__malloc(nn * sizeof *t->skip);
    t->tok_off = ctn__malloc((nn + 1) * sizeof *t->tok_off);
    t->toks = ctn__malloc((size_t)n_tokens * sizeof *t->toks);
    t->eog = ctn__malloc((size_t)n_tokens * sizeof *t->eog);
    t->is_eog = ctn__calloc((size_t)n_tokens, 1);
    t->bytes = ctn__malloc((size_t)total + 1);
    t->piece_off = ctn__malloc(((size_t)n_tokens + 1) * sizeof *t->piece_off);
    if (!t->byte || !t->depth || !t->skip || !t->tok_off || !t->toks || !t->eog || !t->is_eog ||
        !t->bytes || !t->piece_off)
        goto oom;
    int32_t n_ord = 0, max_len = 0;
    int64_t off = 0;
    for (int32_t i = 0; i < n_tokens; i++) {
        t->piece_off[i] = off;
        if (lens[i] > 0) memcpy(t->bytes + off, pieces[i], lens[i]);
        const int32_t len = (int32_t)lens[i];
        if (eog != NULL && eog[i]) {
            t->is_eog[i] = 1;
            t->eog[t->n_eog++] = i;
        } else if (len > 0) {
            ord[n_ord++] = (tpiece){t->bytes + off, len, i};
            if (len > max_len) max_len = len;
        }
        off += len;
    }
    t->piece_off[n_tokens] = off;
    t->max_depth = max_len;
    qsort(ord, (size_t)n_ord, sizeof *ord, cmp_piece);
    path = ctn__malloc(((size_t)max_len + 1) * sizeof *path);
    if (path == NULL) goto oom;
    /* Preorder from the sorted pieces: a piece shares its longest common prefix with the one
     * before it; the nodes past it are closed (their subtree ends here) and new ones made. */
    int32_t n = 1, n_toks = 0, cur = 0;
    t->byte[0] = 0;
    t->depth[0] = 0;
    t->tok_off[0] = 0;
    path[0] = 0;
    for (int32_t k = 0; k < n_ord; k++) {
        int32_t lcp = 0;
        if (k > 0) {
            const int32_t m = cur < ord[k].len ? cur : ord[k].len;
            while (lcp < m && ord[k - 1].p[lcp] == ord[k].p[lcp])
                lcp++;
        }
        for (int32_t d = cur; d > lcp; d--)
            t->skip[path[d]] = n;
        for (int32_t d = lcp + 1; d <= ord[k].len; d++) {
            t->byte[n] = (uint8_t)ord[k].p[d - 1];
            t->depth[n] = d;
            t->tok_off[n] = n_toks;
            path[d] = n++;
        }
        cur = ord[k].len;
        t->toks[n_toks++] = ord[k].id;
    }
    for (int32_t d = cur; d >= 0; d--)
        t->skip[path[d]] = n;
    t->tok_off[n] = n_toks;
    t->n_nodes = n;
    free(ord);
    free(path);
    *out = t;
    return 0;
oom:
    free(ord);
    free(path);
    ctn_token_trie_free(t);
    ctn__errf(err, errlen, "out of memory building the token trie");
    return CTN_ENOMEM;
}

int ctn_token_trie_from_vocab(ctn_token_trie **out, const ctn_vocab *v, char *err, size_t errlen) {
    if (out != NULL) *out = NULL;
    if (out == NULL || v == NULL) {
        ctn__errf(err, errlen, "token trie: no vocabulary");
        return CTN_EINVAL;
    }
    const int32_t n = ctn_vocab_n_tokens(v);
    char **pieces = ctn__calloc((size_t)n, sizeof *pieces);
    size_t *lens = ctn__calloc((size_t)n, sizeof *lens);
    bool *eog = ctn__calloc((size_t)n, sizeof *eog);
    int rc = 0;
    if (pieces == NULL || lens == NULL || eog == NULL) rc = CTN_ENOMEM;
    char buf[256];
    for (int32_t i = 0; rc == 0 && i < n; i++) {
        eog[i] = ctn_vocab_is_eog(v, i);
        int len = ctn_token_to_piece(v, i, buf, sizeof buf, 0, false);
        if (len < 0) {
            rc = len;
            break;
        }
        pieces[i] = ctn__malloc((size_t)len + 1);
        if (pieces[i] == NULL) {
            rc = CTN_ENOMEM;
            break;
        }
        if ((size_t)len <= sizeof buf)
            memcpy(pieces[i], buf, (size_t)len);
        else
            ctn_token_to_piece(v, i, pieces[i], (size_t)len, 0, false);
        lens[i] = (size_t)len;
    }
    if (rc == 0)
        rc = ctn_token_trie_new(out, n, (const char *const *)pieces, lens, eog, err, errlen);
    else
        ctn__errf(err, errlen, "%s",
                  rc == CTN_ENOMEM ? "out of memory building the token trie"
                                   : "token trie: a token has no piece");
    if (pieces != NULL)
        for (int32_t i = 0; i < n; i++)
            free(pieces[i]);
    free(pieces);
    free(lens);
    free(eog);
    return rc;
}

/* ======================================================================================== */
/* ---- the matcher -------------------------------------------------------------------------- */

typedef struct {
    int32_t *p;
    int32_t n, cap;
} ivec;

static bool ivec_push(ivec *v, int32_t x) {
    if (v->n == v->cap && !grow(&v->p, &v->cap, (int64_t)v->n + 1, sizeof *v->p)) return false;
    v->p[v->n++] = x;
    return true;
}

typedef struct {
    int32_t off, n; /* the set: lv[off .. off + n) */
    uint8_t part[4];
    int32_t n_part;
} glevel;

/*
 * A state's mask, kept for the next time the state is the same: the same set of stacks
 * (node ids, sorted) and the same pending bytes, with the same trie. A grammar that loops,
 * as a JSON string does ([^"\\]* and the like), comes back to the same stacks after every
 * character, so most tokens of such output find their mask here instead of walking the
 * trie. Tokens are kept as allowed ones or, when fewer, as the refused ones.
 */
#define MASK_SLOTS 8
typedef struct {
    uint64_t serial; /* the trie's; 0: an empty slot */
    uint64_t hash;
    int32_t *ids; /* (n_ids) the set, sorted */
    int32_t n_ids, cap_ids;
    uint8_t part[4];
    int32_t n_part;
    bool refused;  /* toks are the tokens the state refuses (all others are allowed) */
    int32_t *toks; /* (n_toks) allowed ones in trie order, or refused ones by id */
    int32_t n_toks, cap_toks;
    int64_t n_allowed;
} mask_slot;

/* A level state of the walk: the set lsets[off .. off + n) (hash sh) and pending bytes. */
typedef struct {
    int32_t off, n;
    uint64_t sh;
    uint8_t part[4];
    int32_t n_part;
    int32_t next; /* the next in its hash chain, or -1 */
} lstate;
#define LS_UNKNOWN (INT32_MIN + 1) /* apart from every CTN_E* code */
#define LS_DEAD    INT32_MIN
/* Level states one walk may memoise (their rows of ltrans take 1 KiB each, so a state holds
 * at most 1 MiB of them); past this the memo starts again from the current path. */
#define LS_MAX 1024

struct ctn_grammar_state {
    const ctn_grammar *g;
    /* Stack nodes (the top's position in g->elems, the rest's node), hash-consed; node 0 is
     * the empty stack. */
    int32_t *npos, *npar, *nnext;
    /* Per node: its successors (what the stack becomes once its terminal has taken a
     * character, which does not depend on the character) are mres[soff .. soff + scnt),
     * soff -1 until needed; valid until the nodes are compacted. */
    int32_t *soff, *scnt;
    uint32_t *mark_a, *mark_b; /* per node: stamps for deduplicating sets */
    int32_t n_nodes, cap_nodes;
    uint32_t stamp_a, stamp_b;
    int32_t *bucket;
    int32_t n_bucket; /* a power of two */
    /* The state: a set of stacks, each topped by a terminal (or empty), and the bytes of a
     * character begun but not finished. */
    ivec cur;
    uint8_t part[4];
    int32_t n_part;
    ivec mres;
    /* scratch */
    ivec work, nxt, acc, lv, allowed, tmp;
    int32_t cap_levels;
    float *saved;
    int32_t cap_saved;
    /* Masks of states met before (mask_slot), newest first over MASK_SLOTS slots; emptied
     * whenever the node ids change (compact, state_init). */
    mask_slot slots[MASK_SLOTS];
    int32_t next_slot;
    ivec key; /* scratch: the current set, sorted */
    /* The walk's memo (walk_step): the distinct level states it met (a set of stacks, by
     * content, and pending bytes), and for each the level state each byte leads to. */
    lstate *ls;
    int32_t n_ls, cap_ls;
    ivec lsets;      /* the sets of ls */
    int32_t *ltrans; /* (cap_ls, 256) LS_UNKNOWN, LS_DEAD, or a level state */
    int32_t *lbucket, n_lbucket;
    int32_t *lpath; /* (cap_levels) the level state at each depth of the walk */
};

static uint32_t hash2(int32_t a, int32_t b) {
    uint64_t h = (uint64_t)(uint32_t)a * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uint32_t)b;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return (uint32_t)(h >> 32);
}

static bool rehash(ctn_grammar_state *st, int32_t nb) {
    int32_t *b = ctn__malloc((size_t)nb * sizeof *b);
    if (b == NULL) return false;
    for (int32_t i = 0; i < nb; i++)
        b[i] = -1;
    for (int32_t k = 1; k < st->n_nodes; k++) {
        const uint32_t h = hash2(st->npos[k], st->npar[k]) & (uint32_t)(nb - 1);
        st->nnext[k] = b[h];
        b[h] = k;
    }
    free(st->bucket);
    st->bucket = b;
    st->n_bucket = nb;
    return true;
}

static bool grow_nodes(ctn_grammar_state *st) {
    const int32_t c = st->cap_nodes * 2;
    int32_t *p;
    uint32_t *u;
    if ((p = ctn__realloc(st->npos, (size_t)c * sizeof *p)) == NULL) return false;
    st->npos = p;
    if ((p = ctn__realloc(st->npar, (size_t)c * sizeof *p)) == NULL) return false;
    st->npar = p;
    if ((p = ctn__realloc(st->nnext, (size_t)c * sizeof *p)) == NULL) return false;
    st->nnext = p;
    if ((p = ctn__realloc(st->soff, (size_t)c * sizeof *p)) == NULL) return false;
    st->soff = p;
    if ((p = ctn__realloc(st->scnt, (size_t)c * sizeof *p)) == NULL) return false;
    st->scnt = p;
    if ((u = ctn__realloc(st->mark_a, (size_t)c * sizeof *u)) == NULL) return false;
    st->mark_a = u;
    memset(u + st->cap_nodes, 0, (size_t)(c - st->cap_nodes) * sizeof *u);
    if ((u = ctn__realloc(st->mark_b, (size_t)c * sizeof *u)) == NULL) return false;
    st->mark_b = u;
    memset(u + st->cap_nodes, 0, (size_t)(c - st->cap_nodes) * sizeof *u);
    st->cap_nodes = c;
    return true;
}

/* The stack (pos on top of par); -1 when memory ran out. */
static int32_t intern(ctn_grammar_state *st, int32_t pos, int32_t par) {
    const uint32_t h = hash2(pos, par) & (uint32_t)(st->n_bucket - 1);
    for (int32_t k = st->bucket[h]; k >= 0; k = st->nnext[k])
        if (st->npos[k] == pos && st->npar[k] == par) return k;
    if (st->n_nodes == st->cap_nodes && !grow_nodes(st)) return -1;
    const int32_t id = st->n_nodes++;
    st->npos[id] = pos;
    st->npar[id] = par;
    st->soff[id] = -1;
    st->nnext[id] = st->bucket[h];
    st->bucket[h] = id;
    if (st->n_nodes > 2 * st->n_bucket && st->n_bucket < (1 << 28))
        (void)rehash(st, st->n_bucket * 2); /* when it fails, chains are longer; still right */
    return id;
}

static uint32_t next_stamp(uint32_t *stamp, uint32_t *marks, int32_t n) {
    if (++*stamp == 0) {
        memset(marks, 0, (size_t)n * sizeof *marks);
        *stamp = 1;
    }
    return *stamp;
}

static bool is_seq_end(const ctn_grammar *g, int32_t pos) {
    return g->elems[pos].type == CTN__GEL_END || g->elems[pos].type == CTN__GEL_ALT;
}

/* Pushes, for each alternative of rule r, the stack that begins it on top of cont. */
static bool push_alts(ctn_grammar_state *st, int32_t r, int32_t cont) {
    const ctn_grammar *g = st->g;
    for (int32_t a = g->alt_off[r]; a < g->alt_off[r + 1]; a++) {
        const int32_t pos = g->alts[a];
        int32_t s = cont;
        if (!is_seq_end(g, pos) && (s = intern(st, pos, cont)) < 0) return false;
        if (!ivec_push(&st->work, s)) return false;
    }
    return true;
}

/* Expands the stacks on the work list until each has a terminal on top (or is empty), and
 * appends those to out, each once. A stack met twice is expanded once (its expansion depends
 * on nothing else), so rules with many ways to the same place cost no more than one. 0,
 * CTN_ENOMEM, or CTN_ERANGE past the limits on stacks. */
static int drain(ctn_grammar_state *st, ivec *out) {
    const ctn_grammar *g = st->g;
    const uint32_t stamp = next_stamp(&st->stamp_b, st->mark_b, st->cap_nodes);
    const int32_t start = out->n;
    int32_t visits = 0;
    while (st->work.n > 0) {
        const int32_t s = st->work.p[--st->work.n];
        if (st->mark_b[s] == stamp) continue;
        st->mark_b[s] = stamp;
        if (++visits > CTN_GRAMMAR_MAX_STACKS * 16) return CTN_ERANGE;
        const int32_t pos = s == 0 ? -1 : st->npos[s];
        if (s == 0 || g->elems[pos].type == CTN__GEL_SET) {
            if (out->n - start >= CTN_GRAMMAR_MAX_STACKS) return CTN_ERANGE;
            if (!ivec_push(out, s)) return CTN_ENOMEM;
            continue;
        }
        /* a reference: the rest of this sequence goes under each alternative */
        int32_t cont = st->npar[s];
        if (!is_seq_end(g, pos + 1) && (cont = intern(st, pos + 1, cont)) < 0) return CTN_ENOMEM;
        if (!push_alts(st, g->elems[pos].val, cont)) return CTN_ENOMEM;
    }
    return 0;
}

/* Makes the successors of stack s (whose terminal has taken a character) known: 0, or
 * drain's errors. */
static int successors(ctn_grammar_state *st, int32_t s) {
    const int32_t pos = st->npos[s];
    int32_t cont = st->npar[s];
    if (!is_seq_end(st->g, pos + 1) && (cont = intern(st, pos + 1, cont)) < 0) return CTN_ENOMEM;
    const int32_t off = st->mres.n;
    st->work.n = 0;
    const int rc = ivec_push(&st->work, cont) ? drain(st, &st->mres) : CTN_ENOMEM;
    if (rc < 0) {
        st->mres.n = off;
        return rc;
    }
    st->soff[s] = off;
    st->scnt[s] = st->mres.n - off;
    return 0;
}

/* st->nxt = the set in[0, n) after code point cp. 0, CTN_ENOMEM or CTN_ERANGE (too many
 * stacks). in must not point into nxt or mres. */
static int step_cp(ctn_grammar_state *st, const int32_t *in, int32_t n, uint32_t cp) {
    const ctn_grammar *g = st->g;
    st->nxt.n = 0;
    uint32_t stamp = next_stamp(&st->stamp_a, st->mark_a, st->cap_nodes);
    for (int32_t k = 0; k < n; k++) {
        const int32_t s = in[k];
        if (s == 0 || !ctn__gset_has(g, g->elems[st->npos[s]].val, cp)) continue;
        if (st->soff[s] < 0) {
            const int rc = successors(st, s);
            if (rc < 0) return rc;
        }
        const int32_t off = st->soff[s], cnt = st->scnt[s];
        for (int32_t j = 0; j < cnt; j++) {
            const int32_t id = st->mres.p[off + j];
            if (st->mark_a[id] == stamp) continue;
            st->mark_a[id] = stamp;
            if (st->nxt.n >= CTN_GRAMMAR_MAX_STACKS) return CTN_ERANGE;
            if (!ivec_push(&st->nxt, id)) return CTN_ENOMEM;
        }
    }
    return 0;
}

/* Whether some stack of in[0, n) can take a character whose UTF-8 form begins with the k
 * bytes b (a valid, unfinished prefix). */
static bool completable(const ctn_grammar_state *st, const int32_t *in, int32_t n, const uint8_t *b,
                        int32_t k) {
    const int len = (int)ctn__utf8_len(b[0]);
    uint32_t lo = b[0] & (0x7Fu >> len), hi = lo;
    for (int i = 1; i < len; i++) {
        const uint32_t c = i < k ? (uint32_t)(b[i] & 0x3F) : 0;
        lo = lo << 6 | c;
        hi = hi << 6 | (i < k ? c : 0x3F);
    }
    static const uint32_t min_of[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (lo < min_of[len]) lo = min_of[len];
    if (hi > 0x10FFFF) hi = 0x10FFFF;
    const ctn_grammar *g = st->g;
    for (int32_t j = 0; j < n; j++) {
        if (in[j] == 0) continue;
        const int32_t s = g->elems[st->npos[in[j]]].val;
        int32_t a = g->set_off[s], z = g->set_off[s + 1];
        while (a < z) { /* the first range that ends at or after lo */
            const int32_t m = a + (z - a) / 2;
            if (g->ranges[m].hi < lo)
                a = m + 1;
            else
                z = m;
        }
        if (a < g->set_off[s + 1] && g->ranges[a].lo <= hi) return true;
    }
    return false;
}

/*
 * One byte on top of a level (its set in[0, n) and its pending bytes): 1 with *out set (its
 * stacks in st->nxt when *fresh, else the same set as before), 0 when no stack can take it,
 * CTN_ENOMEM.
 */
static int step_byte(ctn_grammar_state *st, const int32_t *in, int32_t n, const uint8_t *part,
                     int32_t n_part, uint8_t byte, glevel *out, bool *fresh) {
    uint8_t buf[4];
    if (n_part > 0) memcpy(buf, part, (size_t)n_part);
    buf[n_part] = byte;
    const int32_t k = n_part + 1;
    const int len = ctn__utf8_char(buf, (size_t)k);
    if (len < 0) return 0;
    if (len == 0) {
        if (!completable(st, in, n, buf, k)) return 0;
        memcpy(out->part, buf, (size_t)k);
        out->n_part = k;
        *fresh = false;
        return 1;
    }
    uint32_t cp;
    ctn__utf8_decode(buf, (size_t)len, &cp);
    const int rc = step_cp(st, in, n, cp);
    if (rc < 0) return rc;
    out->n_part = 0;
    *fresh = true;
    return st->nxt.n > 0;
}

/* Forgets the cached masks (the node ids they are keyed by are about to change). */
static void slots_clear(ctn_grammar_state *st) {
    for (int i = 0; i < MASK_SLOTS; i++)
        st->slots[i].serial = 0;
}

static int32_t live_depth(const ctn_grammar_state *st) {
    int32_t d = 0;
    for (int32_t k = 0; k < st->cur.n; k++)
        for (int32_t s = st->cur.p[k]; s != 0; s = st->npar[s])
            d++;
    return d;
}

/* Starts the node arena afresh with only the current stacks in it, when the garbage left by
 * earlier tokens has grown past a bound; the known successors go with it. */
static void compact(ctn_grammar_state *st, bool force) {
    const int32_t live = live_depth(st);
    if (!force && st->n_nodes < 8192 + 8 * live && st->mres.n < (1 << 20)) return;
    st->tmp.n = 0;
    for (int32_t k = 0; k < st->cur.n; k++) {
        const int32_t at0 = st->tmp.n;
        if (!ivec_push(&st->tmp, 0)) return;
        for (int32_t s = st->cur.p[k]; s != 0; s = st->npar[s])
            if (!ivec_push(&st->tmp, st->npos[s])) return;
        st->tmp.p[at0] = st->tmp.n - at0 - 1;
    }
    st->n_nodes = 1;
    for (int32_t i = 0; i < st->n_bucket; i++)
        st->bucket[i] = -1;
    st->mres.n = 0;
    slots_clear(st);
    int32_t i = 0;
    for (int32_t k = 0; k < st->cur.n; k++) {
        const int32_t len = st->tmp.p[i];
        int32_t s = 0;
        for (int32_t j = len; j >= 1; j--)       /* bottom first */
            s = intern(st, st->tmp.p[i + j], s); /* cannot fail: fewer nodes than before */
        st->cur.p[k] = s;
        i += len + 1;
    }
}

static int state_init(ctn_grammar_state *st) {
    slots_clear(st);
    st->n_nodes = 1;
    for (int32_t i = 0; i < st->n_bucket; i++)
        st->bucket[i] = -1;
    st->mres.n = 0;
    st->cur.n = 0;
    st->n_part = 0;
    st->work.n = 0;
    if (!push_alts(st, st->g->root, 0)) return CTN_ENOMEM;
    return drain(st, &st->cur);
}

void ctn_grammar_state_free(ctn_grammar_state *st) {
    if (st == NULL) return;
    free(st->npos);
    free(st->npar);
    free(st->nnext);
    free(st->soff);
    free(st->scnt);
    free(st->mark_a);
    free(st->mark_b);
    free(st->bucket);
    free(st->cur.p);
    free(st->mres.p);
    free(st->work.p);
    free(st->nxt.p);
    free(st->acc.p);
    free(st->lv.p);
    free(st->allowed.p);
    free(st->tmp.p);
    free(st->saved);
    for (int i = 0; i < MASK_SLOTS; i++) {
        free(st->slots[i].ids);
        free(st->slots[i].toks);
    }
    free(st->key.p);
    free(st->ls);
    free(st->lsets.p);
    free(st->ltrans);
    free(st->lbucket);
    free(st->lpath);
    free(st);
}

int ctn_grammar_state_new(ctn_grammar_state **out, const ctn_grammar *g) {
    if (out == NULL || g == NULL) return CTN_EINVAL;
    *out = NULL;
    ctn_grammar_state *st = ctn__calloc(1, sizeof *st);
    if (st == NULL) return CTN_ENOMEM;
    st->g = g;
    st->cap_nodes = 256;
    st->n_bucket = 128;
    st->npos = ctn__malloc((size_t)st->cap_nodes * sizeof *st->npos);
    st->npar = ctn__malloc((size_t)st->cap_nodes * sizeof *st->npar);
    st->nnext = ctn__malloc((size_t)st->cap_nodes * sizeof *st->nnext);
    st->soff = ctn__malloc((size_t)st->cap_nodes * sizeof *st->soff);
    st->scnt = ctn__malloc((size_t)st->cap_nodes * sizeof *st->scnt);
    st->mark_a = ctn__calloc((size_t)st->cap_nodes, sizeof *st->mark_a);
    st->mark_b = ctn__calloc((size_t)st->cap_nodes, sizeof *st->mark_b);
    st->bucket = ctn__malloc((size_t)st->n_bucket * sizeof *st->bucket);
    if (!st->npos || !st->npar || !st->nnext || !st->soff || !st->scnt || !st->mark_a ||
        !st->mark_b || !st->bucket) {
        ctn_grammar_state_free(st);
        return CTN_ENOMEM;
    }
    st->npos[0] = st->npar[0] = st->soff[0] = -1;
    const int rc = state_init(st);
    if (rc < 0) {
        ctn_grammar_state_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

void ctn_grammar_state_reset(ctn_grammar_state *st) {
    /* The buffers already hold the start state once, so this cannot run out of memory. */
    if (state_init(st) < 0) st->cur.n = 0;
}

bool ctn_grammar_complete(const ctn_grammar_state *st) {
    if (st->n_part > 0) return false;
    for (int32_t k = 0; k < st->cur.n; k++)
        if (st->cur.p[k] == 0) return true;
    return false;
}

bool ctn_grammar_finished(const ctn_grammar_state *st) {
    return st->n_part == 0 && st->cur.n == 1 && st->cur.p[0] == 0;
}

int ctn_grammar_accept(ctn_grammar_state *st, const char *bytes, size_t n, bool commit) {
    if (st == NULL || (bytes == NULL && n > 0)) return CTN_EINVAL;
    st->acc.n = 0;
    for (int32_t k = 0; k < st->cur.n; k++)
        if (!ivec_push(&st->acc, st->cur.p[k])) return CTN_ENOMEM;
    glevel L;
    memcpy(L.part, st->part, sizeof L.part);
    L.n_part = st->n_part;
    for (size_t i = 0; i < n; i++) {
        bool fresh;
        glevel nl;
        const int rc =
            step_byte(st, st->acc.p, st->acc.n, L.part, L.n_part, (uint8_t)bytes[i], &nl, &fresh);
        if (rc <= 0) return rc < 0 ? rc : CTN_EINVAL;
        if (fresh) {
            const ivec t = st->acc;
            st->acc = st->nxt;
            st->nxt = t;
        }
        memcpy(L.part, nl.part, sizeof L.part);
        L.n_part = nl.n_part;
    }
    if (!commit) return 0;
    const ivec t = st->cur;
    st->cur = st->acc;
    st->acc = t;
    memcpy(st->part, L.part, sizeof st->part);
    st->n_part = L.n_part;
    compact(st, false);
    return 0;
}

int ctn_grammar_accept_token(ctn_grammar_state *st, const ctn_token_trie *t, int32_t tok) {
    if (st == NULL || t == NULL || tok < 0 || tok >= t->n_tokens) return CTN_EINVAL;
    if (t->is_eog[tok]) return ctn_grammar_complete(st) ? 0 : CTN_EINVAL;
    const int64_t off = t->piece_off[tok], len = t->piece_off[tok + 1] - off;
    if (len == 0) return CTN_EINVAL;
    return ctn_grammar_accept(st, t->bytes + off, (size_t)len, true);
}

static uint64_t set_hash(const int32_t *set, int32_t n) {
    uint64_t h = 0xCBF29CE484222325ull ^ (uint64_t)n;
    for (int32_t k = 0; k < n; k++)
        h = (h ^ (uint32_t)set[k]) * 0x100000001B3ull;
    return h;
}

static uint64_t ls_hash(uint64_t sh, const uint8_t *part, int32_t n_part) {
    uint64_t h = sh ^ ((uint64_t)n_part << 56);
    for (int32_t k = 0; k < n_part; k++)
        h = (h ^ part[k]) * 0x100000001B3ull;
    h ^= h >> 29;
    return h;
}

/* Empties the walk's memo. */
static void ls_reset(ctn_grammar_state *st) {
    st->n_ls = 0;
    st->lsets.n = 0;
    for (int32_t i = 0; i < st->n_lbucket; i++)
        st->lbucket[i] = -1;
}

/*
 * The level state of the set (n stacks at set, hash sh; share >= 0: the set is already
 * lsets[share ..], as for a level that only added a pending byte) with pending bytes part:
 * its index, made if new; -1 when memory ran out.
 */
static int32_t ls_intern(ctn_grammar_state *st, const int32_t *set, int32_t n, uint64_t sh,
                         int32_t share, const uint8_t *part, int32_t n_part) {
    const uint64_t h = ls_hash(sh, part, n_part);
    const uint32_t b = (uint32_t)h & (uint32_t)(st->n_lbucket - 1);
    for (int32_t k = st->lbucket[b]; k >= 0; k = st->ls[k].next) {
        const lstate *L = &st->ls[k];
        if (L->sh == sh && L->n == n && L->n_part == n_part &&
            memcmp(L->part, part, (size_t)n_part) == 0 &&
            (share == L->off || memcmp(st->lsets.p + L->off, set, (size_t)n * sizeof *set) == 0))
            return k;
    }
    if (st->n_ls == st->cap_ls) {
        const int32_t c = st->cap_ls ? st->cap_ls * 2 : 64;
        lstate *l = ctn__realloc(st->ls, (size_t)c * sizeof *l);
        if (l == NULL) return -1;
        st->ls = l;
        int32_t *tr = ctn__realloc(st->ltrans, (size_t)c * 256 * sizeof *tr);
        if (tr == NULL) return -1;
        st->ltrans = tr;
        st->cap_ls = c;
    }
    int32_t off = share;
    if (off < 0) {
        off = st->lsets.n;
        if (!grow(&st->lsets.p, &st->lsets.cap, (int64_t)off + (n > 0 ? n : 1),
                  sizeof *st->lsets.p))
            return -1;
        memcpy(st->lsets.p + off, set, (size_t)n * sizeof *set);
        st->lsets.n += n;
    }
    const int32_t id = st->n_ls++;
    lstate *L = &st->ls[id];
    L->off = off;
    L->n = n;
    L->sh = sh;
    memcpy(L->part, part, (size_t)n_part);
    L->n_part = n_part;
    L->next = st->lbucket[b];
    st->lbucket[b] = id;
    int32_t *row = st->ltrans + (size_t)id * 256;
    for (int i = 0; i < 256; i++)
        row[i] = LS_UNKNOWN;
    return id;
}

/*
 * Starts the memo again keeping only the level states of the walk's path (depths 0 .. d-1),
 * when it has grown to LS_MAX. 0 or CTN_ENOMEM.
 */
static int ls_restart(ctn_grammar_state *st, int32_t d) {
    /* The path's sets, copied out first: st->tmp holds n, n_part, part bytes, then the set. */
    st->tmp.n = 0;
    for (int32_t k = 0; k < d; k++) {
        const lstate *L = &st->ls[st->lpath[k]];
        if (!grow(&st->tmp.p, &st->tmp.cap, (int64_t)st->tmp.n + 6 + L->n, sizeof *st->tmp.p))
            return CTN_ENOMEM;
        int32_t *o = st->tmp.p + st->tmp.n;
        o[0] = L->n;
        o[1] = L->n_part;
        for (int i = 0; i < 4; i++)
            o[2 + i] = L->part[i];
        memcpy(o + 6, st->lsets.p + L->off, (size_t)L->n * sizeof *o);
        st->tmp.n += 6 + L->n;
    }
    ls_reset(st);
    int32_t at = 0;
    for (int32_t k = 0; k < d; k++) {
        const int32_t *o = st->tmp.p + at;
        uint8_t part[4];
        for (int i = 0; i < 4; i++)
            part[i] = (uint8_t)o[2 + i];
        const int32_t id = ls_intern(st, o + 6, o[0], set_hash(o + 6, o[0]), -1, part, o[1]);
        if (id < 0) return CTN_ENOMEM;
        st->lpath[k] = id;
        at += 6 + o[0];
    }
    return 0;
}

/* What byte does to level state p: a level state, LS_DEAD, or CTN_ENOMEM / CTN_ERANGE. */
static int32_t walk_step(ctn_grammar_state *st, int32_t p, uint8_t byte) {
    const lstate L = st->ls[p]; /* a copy: interning may move st->ls */
    glevel C;
    bool fresh;
    const int rc = step_byte(st, st->lsets.p + L.off, L.n, L.part, L.n_part, byte, &C, &fresh);
    if (rc < 0) return rc;
    int32_t c = LS_DEAD;
    if (rc > 0) {
        c = fresh
                ? ls_intern(st, st->nxt.p, st->nxt.n, set_hash(st->nxt.p, st->nxt.n), -1, C.part, 0)
                : ls_intern(st, st->lsets.p + L.off, L.n, L.sh, L.off, C.part, C.n_part);
        if (c < 0) return CTN_ENOMEM;
    }
    st->ltrans[(size_t)p * 256 + byte] = c;
    return c;
}

/*
 * The trie walk: st->allowed gets the tokens the state allows, in trie order. Their number,
 * or CTN_ENOMEM / CTN_ERANGE. Each trie node is one byte on top of its parent's level
 * state; what a byte does to a level state is worked out once per walk (walk_step) and
 * looked up after, since the same few states (inside a string: one) meet the same bytes at
 * most of the trie's nodes.
 */
static int64_t walk(ctn_grammar_state *st, const ctn_token_trie *t) {
    st->allowed.n = 0;
    if (st->cap_levels < t->max_depth + 1) {
        int32_t *l = ctn__realloc(st->lpath, ((size_t)t->max_depth + 1) * sizeof *l);
        if (l == NULL) return CTN_ENOMEM;
        st->lpath = l;
        st->cap_levels = t->max_depth + 1;
    }
    if (st->n_lbucket == 0) {
        st->lbucket = ctn__malloc(2 * LS_MAX * sizeof *st->lbucket);
        if (st->lbucket == NULL) return CTN_ENOMEM;
        st->n_lbucket = 2 * LS_MAX;
    }
    ls_reset(st);
    const int32_t root = ls_intern(st, st->cur.p, st->cur.n, set_hash(st->cur.p, st->cur.n), -1,
                                   st->part, st->n_part);
    if (root < 0) return CTN_ENOMEM;
    st->lpath[0] = root;
    const int32_t N = t->n_nodes;
    for (int32_t i = 1; i < N;) {
        const int32_t d = t->depth[i];
        int32_t c = st->ltrans[(size_t)st->lpath[d - 1] * 256 + t->byte[i]];
        if (c == LS_UNKNOWN) {
            if (st->n_ls >= LS_MAX) {
                const int rc = ls_restart(st, d);
                if (rc < 0) return rc;
            }
            c = walk_step(st, st->lpath[d - 1], t->byte[i]);
            if (c < 0 && c != LS_DEAD) return c;
        }
        if (c == LS_DEAD) {
            i = t->skip[i];
            continue;
        }
        st->lpath[d] = c;
        for (int32_t k = t->tok_off[i]; k < t->tok_off[i + 1]; k++)
            if (!ivec_push(&st->allowed, t->toks[k])) return CTN_ENOMEM;
        i++;
    }
    if (ctn_grammar_complete(st))
        for (int32_t k = 0; k < t->n_eog; k++)
            if (!ivec_push(&st->allowed, t->eog[k])) return CTN_ENOMEM;
    return st->allowed.n;
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* The key of the current state in st->key (its set, sorted) and its hash; false when
 * memory ran out. */
static bool state_key(ctn_grammar_state *st, uint64_t *hash) {
    st->key.n = 0;
    if (!grow(&st->key.p, &st->key.cap, st->cur.n > 0 ? st->cur.n : 1, sizeof *st->key.p))
        return false;
    memcpy(st->key.p, st->cur.p, (size_t)st->cur.n * sizeof *st->key.p);
    st->key.n = st->cur.n;
    qsort(st->key.p, (size_t)st->key.n, sizeof *st->key.p, cmp_i32);
    uint64_t h = 0xCBF29CE484222325ull ^ (uint64_t)st->n_part;
    for (int32_t k = 0; k < st->key.n; k++)
        h = (h ^ (uint32_t)st->key.p[k]) * 0x100000001B3ull;
    for (int32_t k = 0; k < st->n_part; k++)
        h = (h ^ st->part[k]) * 0x100000001B3ull;
    *hash = h;
    return true;
}

/* The cached mask of the current state for t, or NULL. */
static const mask_slot *slot_find(const ctn_grammar_state *st, const ctn_token_trie *t,
                                  uint64_t hash) {
    for (int i = 0; i < MASK_SLOTS; i++) {
        const mask_slot *m = &st->slots[i];
        if (m->serial == t->serial && m->hash == hash && m->n_ids == st->key.n &&
            m->n_part == st->n_part && memcmp(m->part, st->part, (size_t)st->n_part) == 0 &&
            memcmp(m->ids, st->key.p, (size_t)st->key.n * sizeof *m->ids) == 0)
            return m;
    }
    return NULL;
}

/* Keeps the walk's result (st->allowed) for the current state; false when memory ran out
 * (the slot is then empty). */
static bool slot_store(ctn_grammar_state *st, const ctn_token_trie *t, uint64_t hash) {
    mask_slot *m = &st->slots[st->next_slot];
    m->serial = 0;
    const int64_t n = st->allowed.n;
    const bool refused = n > t->n_tokens / 2;
    const int64_t nt = refused ? t->n_tokens - n : n;
    if (!grow(&m->ids, &m->cap_ids, st->key.n > 0 ? st->key.n : 1, sizeof *m->ids) ||
        !grow(&m->toks, &m->cap_toks, nt > 0 ? nt : 1, sizeof *m->toks))
        return false;
    if (refused) {
        /* The complement, by id: mark the allowed ones in a scratch of n_tokens bytes. */
        if (!grow(&st->tmp.p, &st->tmp.cap, t->n_tokens, sizeof *st->tmp.p)) return false;
        int32_t *mark = st->tmp.p;
        memset(mark, 0, (size_t)t->n_tokens * sizeof *mark);
        for (int64_t k = 0; k < n; k++)
            mark[st->allowed.p[k]] = 1;
        int32_t o = 0;
        for (int32_t i = 0; i < t->n_tokens; i++)
            if (!mark[i]) m->toks[o++] = i;
        m->n_toks = o;
    } else {
        memcpy(m->toks, st->allowed.p, (size_t)n * sizeof *m->toks);
        m->n_toks = (int32_t)n;
    }
    memcpy(m->ids, st->key.p, (size_t)st->key.n * sizeof *m->ids);
    m->n_ids = st->key.n;
    memcpy(m->part, st->part, sizeof m->part);
    m->n_part = st->n_part;
    m->refused = refused;
    m->n_allowed = n;
    m->hash = hash;
    m->serial = t->serial;
    st->next_slot = (st->next_slot + 1) % MASK_SLOTS;
    return true;
}

/* The mask of the current state: a cached slot (*slot set), or the walk's result in
 * st->allowed (*slot NULL; then it is cached). The count, CTN_ENOMEM or CTN_ERANGE. */
static int64_t mask_of(ctn_grammar_state *st, const ctn_token_trie *t, const mask_slot **slot) {
    *slot = NULL;
    uint64_t hash = 0;
    if (!state_key(st, &hash)) return CTN_ENOMEM;
    if ((*slot = slot_find(st, t, hash)) != NULL) return (*slot)->n_allowed;
    const int64_t n = walk(st, t);
    if (n >= 0 && !slot_store(st, t, hash)) return CTN_ENOMEM;
    return n;
}

int64_t ctn_grammar_allowed(ctn_grammar_state *st, const ctn_token_trie *t, const int32_t **ids) {
    if (st == NULL || t == NULL) return CTN_EINVAL;
    if (ids != NULL) *ids = NULL;
    const mask_slot *m;
    const int64_t n = mask_of(st, t, &m);
    if (n < 0) return n;
    if (m != NULL && !m->refused) {
        if (ids != NULL) *ids = m->toks;
        return n;
    }
    /* A slot of refused tokens does not give the trie order: walk for the list. */
    const int64_t w = m != NULL ? walk(st, t) : n;
    if (w < 0) return w;
    if (ids != NULL) *ids = st->allowed.p;
    return w;
}

int64_t ctn_grammar_mask(ctn_grammar_state *st, const ctn_token_trie *t, float *logits) {
    if (st == NULL || t == NULL || logits == NULL) return CTN_EINVAL;
    const mask_slot *m;
    const int64_t n = mask_of(st, t, &m);
    if (n < 0) return n;
    if (m != NULL && m->refused) {
        for (int32_t k = 0; k < m->n_toks; k++)
            logits[m->toks[k]] = -INFINITY;
        return n;
    }
    const int32_t *ids = m != NULL ? m->toks : st->allowed.p;
    if (n > st->cap_saved) {
        float *p = ctn__realloc(st->saved, (size_t)n * sizeof *p);
        if (p == NULL) return CTN_ENOMEM;
        st->saved = p;
        st->cap_saved = (int32_t)n;
    }
    for (int64_t k = 0; k < n; k++)
        st->saved[k] = logits[ids[k]];
    for (int32_t i = 0; i < t->n_tokens; i++)
        logits[i] = -INFINITY;
    for (int64_t k = 0; k < n; k++)
        logits[ids[k]] = st->saved[k];
    return n;
}
