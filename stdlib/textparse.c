/*
 * List and regex output parsers (textparse.h). The list parser is a stream at heart: the
 * one-shot parse feeds it the whole text, so the two cannot disagree. The stream keeps
 * only the current line (or, in a comma-separated list, the current item).
 */
#include "textparse.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "str.h"
#include "alloc.h"

/* ---- lists ------------------------------------------------------------------------- */

enum { M_UNDECIDED, M_LIST, M_LINES, M_COMMA };

struct ctn_list_stream {
    int mode;
    int done;  /* finish was called */
    int oom;   /* an allocation failed; the stream is unusable */
    char *cur; /* the current line, or the current item in a comma-separated list */
    size_t len, cap;
    ctn_val *items;
};

static int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static void trim(const char **p, size_t *n) {
    while (*n > 0 && is_ws((unsigned char)**p)) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && is_ws((unsigned char)(*p)[*n - 1]))
        (*n)--;
}

/* The length of the list marker that opens the trimmed line p[0, n), with the whitespace
 * after it, or 0 when the line has none. */
static size_t marker(const char *p, size_t n) {
    size_t k = 0;
    if (n >= 3 && (unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x80 &&
        (unsigned char)p[2] == 0xA2) {
        k = 3; /* U+2022 BULLET */
    } else if (n >= 1 && (p[0] == '-' || p[0] == '*' || p[0] == '+')) {
        k = 1;
    } else {
        while (k < n && p[k] >= '0' && p[k] <= '9')
            k++;
        if (k == 0 || k >= n || (p[k] != '.' && p[k] != ')')) return 0;
        k++;
    }
    if (k < n && !is_ws((unsigned char)p[k])) return 0;
    return k;
}

/* Adds the trimmed p[0, n) as an item unless it is empty. */
static int emit(ctn_list_stream *s, const char *p, size_t n, size_t *nnew) {
    trim(&p, &n);
    if (n == 0) return 0;
    if (ctn_val_push(s->items, ctn_val_str(p, n)) < 0) return -1;
    (*nnew)++;
    return 0;
}

/* A whole line (without its '\n') in the list, line or undecided form. */
static int take_line(ctn_list_stream *s, const char *p, size_t n, size_t *nnew) {
    trim(&p, &n);
    if (n == 0) return 0;
    size_t m = marker(p, n);
    switch (s->mode) {
    case M_UNDECIDED:
        if (m > 0) {
            s->mode = M_LIST;
            return emit(s, p + m, n - m, nnew);
        }
        if (p[n - 1] == ':') return 0; /* an introduction */
        if (memchr(p, ',', n) != NULL) {
            s->mode = M_COMMA;
            for (;;) {
                const char *c = memchr(p, ',', n);
                size_t k = c ? (size_t)(c - p) : n;
                if (emit(s, p, k, nnew) < 0) return -1;
                if (c == NULL) return 0;
                p += k + 1;
                n -= k + 1;
            }
        }
        s->mode = M_LINES;
        return emit(s, p, n, nnew);
    case M_LIST: return m > 0 ? emit(s, p + m, n - m, nnew) : 0;
    default: return emit(s, p + m, n - m, nnew);
    }
}

static int put_byte(ctn_list_stream *s, char c) {
    if (s->len == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        char *q = ctn__realloc(s->cur, cap);
        if (q == NULL) return -1;
        s->cur = q;
        s->cap = cap;
    }
    s->cur[s->len++] = c;
    return 0;
}

ctn_list_stream *ctn_list_stream_new(void) {
    ctn_list_stream *s = ctn__calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->items = ctn_val_arr();
    if (s->items == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void ctn_list_stream_free(ctn_list_stream *s) {
    if (s == NULL) return;
    ctn_val_unref(s->items);
    free(s->cur);
    free(s);
}

int ctn_list_stream_feed(ctn_list_stream *s, const char *chunk, size_t n, size_t *nnew) {
    size_t got = 0;
    if (nnew != NULL) *nnew = 0;
    if (s == NULL || (chunk == NULL && n > 0) || s->done) return CTN_EINVAL;
    if (s->oom) return CTN_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        char c = chunk[i];
        int rc;
        if (s->mode == M_COMMA && (c == ',' || c == '\n')) {
            rc = emit(s, s->cur, s->len, &got);
            s->len = 0;
        } else if (s->mode != M_COMMA && c == '\n') {
            rc = take_line(s, s->cur, s->len, &got);
            s->len = 0;
        } else {
            rc = put_byte(s, c);
        }
        if (rc < 0) {
            s->oom = 1;
            return CTN_ENOMEM;
        }
    }
    if (nnew != NULL) *nnew = got;
    return 0;
}

const ctn_val *ctn_list_stream_items(const ctn_list_stream *s) {
    return s == NULL ? NULL : s->items;
}

int ctn_list_stream_finish(ctn_list_stream *s, ctn_val **out, size_t *nnew) {
    size_t got = 0;
    if (out != NULL) *out = NULL;
    if (nnew != NULL) *nnew = 0;
    if (s == NULL || out == NULL) return CTN_EINVAL;
    if (s->oom) return CTN_ENOMEM;
    if (!s->done) {
        int rc =
            s->mode == M_COMMA ? emit(s, s->cur, s->len, &got) : take_line(s, s->cur, s->len, &got);
        if (rc < 0) {
            s->oom = 1;
            return CTN_ENOMEM;
        }
        s->len = 0;
        s->done = 1;
    }
    if (nnew != NULL) *nnew = got;
    *out = ctn_val_ref(s->items);
    return 0;
}

int ctn_list_parse(const char *text, size_t n, ctn_val **out) {
    if (out == NULL) return CTN_EINVAL;
    *out = NULL;
    if (text == NULL && n > 0) return CTN_EINVAL;
    ctn_list_stream *s = ctn_list_stream_new();
    if (s == NULL) return CTN_ENOMEM;
    int rc = ctn_list_stream_feed(s, text, n, NULL);
    if (rc == 0) rc = ctn_list_stream_finish(s, out, NULL);
    ctn_list_stream_free(s);
    return rc;
}

/* ---- regex ------------------------------------------------------------------------- */

struct ctn_regex {
    pcre2_code *code;
    char *pattern; /* for messages */
    char **keys;
    uint32_t *groups; /* the group number of each key */
    size_t nkeys;
};

#define ERR(...)                                                                                   \
    do {                                                                                           \
        if (err != NULL && errcap > 0) ctn__errf(err, errcap, __VA_ARGS__);                        \
    } while (0)


void ctn_regex_free(ctn_regex *re) {
    if (re == NULL) return;
    pcre2_code_free(re->code);
    if (re->keys != NULL)
        for (size_t i = 0; i < re->nkeys; i++)
            free(re->keys[i]);
    free(re->keys);
    free(re->groups);
    free(re->pattern);
    free(re);
}

ctn_regex *ctn_regex_new(const char *pattern, const char *const *keys, size_t nkeys, char *err,
                         size_t errcap) {
    if (pattern == NULL) {
        ERR("no pattern given");
        return NULL;
    }
    if (keys == NULL && nkeys > 0) {
        ERR("keys is NULL but nkeys is %zu", nkeys);
        return NULL;
    }
    ctn_regex *re = ctn__calloc(1, sizeof *re);
    if (re == NULL || (re->pattern = ctn__strdup(pattern)) == NULL) goto nomem;
    int code;
    PCRE2_SIZE at;
    re->code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &code, &at, NULL);
    if (re->code == NULL) {
        PCRE2_UCHAR msg[160];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0) strcpy((char *)msg, "?");
        ERR("bad pattern at offset %zu: %s", (size_t)at, (const char *)msg);
        ctn_regex_free(re);
        return NULL;
    }
    uint32_t ngroups = 0, nnames = 0, esize = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(re->code, PCRE2_INFO_CAPTURECOUNT, &ngroups);
    if (keys != NULL) {
        if (nkeys > ngroups) {
            ERR("%zu keys but the pattern has %u capture group%s", nkeys, (unsigned)ngroups,
                ngroups == 1 ? "" : "s");
            ctn_regex_free(re);
            return NULL;
        }
    } else {
        pcre2_pattern_info(re->code, PCRE2_INFO_NAMECOUNT, &nnames);
        pcre2_pattern_info(re->code, PCRE2_INFO_NAMEENTRYSIZE, &esize);
        pcre2_pattern_info(re->code, PCRE2_INFO_NAMETABLE, &table);
        if (nnames == 0) {
            ERR("the pattern has no named groups ((?<name>...)) and no keys were given");
            ctn_regex_free(re);
            return NULL;
        }
        nkeys = nnames;
    }
    re->keys = ctn__calloc(nkeys ? nkeys : 1, sizeof *re->keys);
    re->groups = ctn__calloc(nkeys ? nkeys : 1, sizeof *re->groups);
    if (re->keys == NULL || re->groups == NULL) goto nomem;
    re->nkeys = nkeys;
    if (keys != NULL) {
        for (size_t i = 0; i < nkeys; i++) {
            re->groups[i] = (uint32_t)(i + 1);
            if (keys[i] == NULL) {
                ERR("key %zu is NULL", i);
                ctn_regex_free(re);
                return NULL;
            }
            if ((re->keys[i] = ctn__strdup(keys[i])) == NULL) goto nomem;
        }
        return re;
    }
    /* The name table is sorted by name; the keys follow the groups' order instead, which is
     * the order a reader of the pattern sees. Each entry: the group number (2 bytes, big
     * end first), then the NUL-terminated name. Insertion sort: there are few names. */
    for (uint32_t i = 0; i < nnames; i++) {
        PCRE2_SPTR e = table + (size_t)i * esize;
        uint32_t g = ((uint32_t)e[0] << 8) | e[1];
        char *name = ctn__strdup((const char *)e + 2);
        if (name == NULL) goto nomem;
        size_t k = i;
        while (k > 0 && re->groups[k - 1] > g) {
            re->groups[k] = re->groups[k - 1];
            re->keys[k] = re->keys[k - 1];
            k--;
        }
        re->groups[k] = g;
        re->keys[k] = name;
    }
    return re;
nomem:
    ERR("out of memory");
    ctn_regex_free(re);
    return NULL;
}

int ctn_regex_parse(const ctn_regex *re, const char *text, size_t n, ctn_val **out, char *err,
                    size_t errcap) {
    if (out != NULL) *out = NULL;
    if (re == NULL || out == NULL || (text == NULL && n > 0)) return CTN_EINVAL;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    if (md == NULL) {
        ERR("out of memory");
        return CTN_ENOMEM;
    }
    int rc = pcre2_match(re->code, (PCRE2_SPTR)(text ? text : ""), n, 0, 0, md, NULL);
    if (rc < 0) {
        pcre2_match_data_free(md);
        if (rc == PCRE2_ERROR_NOMATCH) {
            size_t pl = strlen(re->pattern);
            ERR("no match for pattern '%.60s%s'", re->pattern, pl > 60 ? "..." : "");
            return CTN_ENOENT;
        }
        if (rc == PCRE2_ERROR_NOMEMORY) {
            ERR("out of memory");
            return CTN_ENOMEM;
        }
        PCRE2_UCHAR msg[160];
        if (pcre2_get_error_message(rc, msg, sizeof msg) < 0) strcpy((char *)msg, "?");
        ERR("matching pattern '%.60s' failed: %s", re->pattern, (const char *)msg);
        return CTN_ERANGE;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t npairs = pcre2_get_ovector_count(md);
    ctn_val *o = ctn_val_obj();
    int status = o == NULL ? CTN_ENOMEM : 0;
    for (size_t i = 0; status == 0 && i < re->nkeys; i++) {
        uint32_t g = re->groups[i];
        ctn_val *v;
        if (g >= npairs || ov[2 * g] == PCRE2_UNSET)
            v = ctn_val_null();
        else if (ov[2 * g + 1] < ov[2 * g]) /* \K can end a match before its start */
            v = ctn_val_str("", 0);
        else
            v = ctn_val_str(text + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
        if (ctn_val_set(o, re->keys[i], v) < 0) status = CTN_ENOMEM;
    }
    pcre2_match_data_free(md);
    if (status < 0) {
        ctn_val_unref(o);
        ERR("out of memory");
        return status;
    }
    *out = o;
    return 0;
}
