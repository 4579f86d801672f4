/*
 * JSON reading (json.h). One byte-at-a-time state machine serves the strict parser, the
 * streaming parser and the finder, so that they cannot disagree about the grammar: the
 * one-shot parse is the machine fed the whole text at once. Containers are built in place
 * as they open, and a scalar joins its container only when it is complete, which is what
 * makes a copy of the tree at any moment a valid snapshot of the value so far. An explicit
 * stack of open containers replaces recursion, so depth costs no C stack.
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "str.h"
#include "unicode.h"
#include "alloc.h"

/* Where the machine is between bytes. */
enum {
    S_SKIP,       /* stream: prose before the first '{' or '[' */
    S_VALUE_TOP,  /* strict: the value at the top */
    S_VALUE_MEM,  /* a member's value, after ':' */
    S_VALUE_ELEM, /* an array element, after ',' */
    S_ARR_FIRST,  /* after '[': an element or ']' */
    S_ARR_NEXT,   /* after an element: ',' or ']' */
    S_OBJ_FIRST,  /* after '{': a key or '}' */
    S_OBJ_KEY,    /* after ',' in an object: a key */
    S_OBJ_COLON,  /* after a key: ':' */
    S_OBJ_NEXT,   /* after a member: ',' or '}' */
    S_STRING,     /* inside a string (sub says where) */
    S_NUMBER,     /* inside a number (sub says where) */
    S_LITERAL,    /* inside true, false or null */
    S_DONE,       /* the value is complete */
    S_ERROR,
};

/* Inside a string. */
enum { ST_CHAR, ST_UTF, ST_ESC, ST_U, ST_LOW_BS, ST_LOW_U };

/* Inside a number: after '-', after a leading '0', in the integer digits, after '.', in the
 * fraction, after 'e', after the exponent's sign, in the exponent. */
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

typedef ctn_strbuf buf; /* the one growing string (str.h) */

typedef struct {
    int stream; /* skip prose before the value and ignore text after it */
    int state;
    int sub;
    int is_key;         /* the string being read is an object key */
    int is_float;       /* the number has a fraction or exponent */
    int in_arr_open;    /* S_VALUE_* came from S_ARR_FIRST (for messages) */
    const char *lit;    /* "true", "false" or "null" */
    size_t lit_i;       /* bytes of lit matched */
    uint32_t u_acc;     /* \u escape being read */
    int u_n;            /* its hex digits so far */
    uint32_t hi;        /* a high surrogate waiting for its low half, else 0 */
    int utf_need;       /* UTF-8 continuation bytes still expected */
    unsigned char lo_b; /* range of the next continuation byte */
    unsigned char hi_b;
    buf tok; /* the string's bytes or the number's text */
    buf key; /* the key of the member whose value is being read */
    ctn_val *root;
    ctn_val *stack[CTN_JSON_MAX_DEPTH]; /* open containers, borrowed from root */
    int depth;
    size_t off, line, col; /* position of the next byte */
    size_t end_off;        /* just past the value's end */
    unsigned long version; /* counts changes to the tree */
    int rc;
    char msg[256];
} parser;

struct ctn_json_stream {
    parser p;
    unsigned long fed_version; /* version after the previous feed */
    unsigned long snap_version;
    ctn_val *snap; /* the last snapshot handed out, reused while nothing changed */
};

static void parser_init(parser *p, int stream) {
    memset(p, 0, offsetof(parser, stack));
    p->stream = stream;
    p->state = stream ? S_SKIP : S_VALUE_TOP;
    p->depth = 0;
    p->off = 0;
    p->line = 1;
    p->col = 1;
    p->end_off = 0;
    p->version = 0;
    p->rc = 0;
    p->msg[0] = '\0';
}

static void parser_close(parser *p) {
    free(p->tok.p);
    free(p->key.p);
    ctn_val_unref(p->root);
    p->tok.p = p->key.p = NULL;
    p->root = NULL;
}

/* Records an error at the current position; returns -1 so callers can "return fail(...)". */
static int fail(parser *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int fail(parser *p, const char *fmt, ...) {
    char what[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(p->msg, sizeof p->msg, "line %zu, column %zu (byte %zu): %s", p->line, p->col, p->off,
             what);
    p->rc = CTN_EFORMAT;
    p->state = S_ERROR;
    return -1;
}

static int oom(parser *p) {
    snprintf(p->msg, sizeof p->msg, "out of memory while parsing JSON at byte %zu", p->off);
    p->rc = CTN_ENOMEM;
    p->state = S_ERROR;
    return -1;
}

/* Appends bytes to b, keeping a NUL after them (strtod reads the number's text); -1 when
 * memory ran out. */
static int buf_put(buf *b, const char *s, size_t n) {
    ctn_sb_put(b, s, n);
    return b->oom ? -1 : 0;
}

/* What the machine wants next, for "expected ..." and "unexpected end of input" messages. */
static const char *expectation(const parser *p) {
    switch (p->state) {
    case S_VALUE_TOP: return "expected a JSON value";
    case S_VALUE_MEM: return "expected a value after ':'";
    case S_VALUE_ELEM: return "expected a value after ',' in an array";
    case S_ARR_FIRST: return "expected a value or ']'";
    case S_ARR_NEXT: return "expected ',' or ']' after an array element";
    case S_OBJ_FIRST: return "expected a string key or '}'";
    case S_OBJ_KEY: return "expected a string key after ',' in an object";
    case S_OBJ_COLON: return "expected ':' after an object key";
    case S_OBJ_NEXT: return "expected ',' or '}' after an object member";
    case S_STRING:
        switch (p->sub) {
        case ST_UTF: return "expected a UTF-8 continuation byte in a string";
        case ST_ESC: return "expected an escape character after '\\'";
        case ST_U: return "expected 4 hex digits after \\u";
        case ST_LOW_BS:
        case ST_LOW_U: return "expected a \\u escape of a low surrogate";
        default: return "expected the closing '\"' of a string";
        }
    case S_NUMBER:
        switch (p->sub) {
        case N_MINUS: return "expected a digit after '-'";
        case N_DOT: return "expected a digit after '.' in a number";
        case N_E: return "expected a sign or digit in the exponent";
        case N_ESIGN: return "expected a digit in the exponent";
        default: return "expected the rest of a number";
        }
    case S_LITERAL: return "expected the rest of a literal (true, false or null)";
    case S_DONE: return "expected nothing after the JSON value";
    default: return "expected a JSON value";
    }
}

/* Describes byte c for a message: 'x' when printable, else its hex code. */
static const char *show(unsigned char c, char *b, size_t cap) {
    if (c >= 0x20 && c < 0x7f)
        snprintf(b, cap, "'%c'", c);
    else
        snprintf(b, cap, "byte 0x%02X", c);
    return b;
}

static int unexpected(parser *p, unsigned char c) {
    char b[16];
    const char *e = expectation(p);
    if (c == ']' && p->state == S_VALUE_ELEM)
        return fail(p, "%s, found ']' (a trailing comma is not JSON)", e);
    if (c == '}' && p->state == S_OBJ_KEY)
        return fail(p, "%s, found '}' (a trailing comma is not JSON)", e);
    return fail(p, "%s, found %s", e, show(c, b, sizeof b));
}

/* After a value completed at depth p->depth: what comes next. */
static void value_done(parser *p) {
    if (p->depth == 0)
        p->state = S_DONE;
    else
        p->state = p->stack[p->depth - 1]->kind == CTN_VARR ? S_ARR_NEXT : S_OBJ_NEXT;
}

/* Puts v (owned) into the open container, under the pending key for an object, or makes it
 * the root. */
static int attach(parser *p, ctn_val *v) {
    if (v == NULL) return oom(p);
    p->version++;
    if (p->depth == 0) {
        p->root = v;
        return 0;
    }
    ctn_val *top = p->stack[p->depth - 1];
    int rc = top->kind == CTN_VARR ? ctn_val_push(top, v)
                                   : ctn_val_setk(top, p->key.p ? p->key.p : "", p->key.len, v);
    return rc < 0 ? oom(p) : 0;
}

static int open_container(parser *p, int is_obj) {
    if (p->depth == CTN_JSON_MAX_DEPTH)
        return fail(p, "nesting deeper than %d arrays and objects", CTN_JSON_MAX_DEPTH);
    ctn_val *v = is_obj ? ctn_val_obj() : ctn_val_arr();
    if (attach(p, v) < 0) return -1;
    p->stack[p->depth++] = v;
    p->state = is_obj ? S_OBJ_FIRST : S_ARR_FIRST;
    return 0;
}

static int close_container(parser *p) {
    p->depth--;
    value_done(p);
    if (p->state == S_DONE) p->end_off = p->off + 1;
    return 0;
}

/* The number in p->tok is complete (the byte after it is not part of it). */
static int finish_number(parser *p) {
    const char *t = p->tok.p;
    ctn_val *v = NULL;
    if (!p->is_float) {
        int neg = t[0] == '-';
        uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, x = 0;
        int fits = 1;
        for (const char *q = t + neg; *q; q++) {
            unsigned d = (unsigned)(*q - '0');
            if (x > (limit - d) / 10) {
                fits = 0;
                break;
            }
            x = x * 10 + d;
        }
        if (fits) {
            int64_t i = neg ? (x == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)x) : (int64_t)x;
            v = ctn_val_int(i);
            if (attach(p, v) < 0) return -1;
            value_done(p);
            if (p->state == S_DONE) p->end_off = p->off;
            return 0;
        }
    }
    double d = strtod(t, NULL);
    if (isinf(d)) {
        /* Name the number's start: the current position is the byte after it. */
        size_t len = p->tok.len;
        p->off -= len;
        p->col -= len;
        return fail(p, "number %.40s%s is too large for a double", t, len > 40 ? "..." : "");
    }
    v = ctn_val_num(d);
    if (attach(p, v) < 0) return -1;
    value_done(p);
    if (p->state == S_DONE) p->end_off = p->off;
    return 0;
}

static int put_utf8(parser *p, uint32_t cp) {
    char b[4];
    const size_t n = ctn__utf8_encode(cp, b); /* cp is at most U+10FFFF here */
    return buf_put(&p->tok, b, n) < 0 ? oom(p) : 0;
}

static int finish_string(parser *p) {
    if (p->is_key) {
        p->key.len = 0;
        if (buf_put(&p->key, p->tok.p ? p->tok.p : "", p->tok.len) < 0) return oom(p);
        p->state = S_OBJ_COLON;
        return 0;
    }
    if (attach(p, ctn_val_str(p->tok.p ? p->tok.p : "", p->tok.len)) < 0) return -1;
    value_done(p);
    if (p->state == S_DONE) p->end_off = p->off + 1;
    return 0;
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One byte inside a string. */
static int step_string(parser *p, unsigned char c) {
    char b[16];
    switch (p->sub) {
    case ST_CHAR:
        if (c == '"') return finish_string(p);
        if (c == '\\') {
            p->sub = ST_ESC;
            return 0;
        }
        if (c < 0x20)
            return fail(p, "raw control character 0x%02X in a string (it must be escaped)", c);
        if (c >= 0x80) {
            /* The first continuation byte's range excludes overlong forms, surrogates and
             * code points past U+10FFFF; later ones are plain continuation bytes. */
            p->lo_b = 0x80;
            p->hi_b = 0xBF;
            if (c >= 0xC2 && c <= 0xDF) {
                p->utf_need = 1;
            } else if (c >= 0xE0 && c <= 0xEF) {
                p->utf_need = 2;
                if (c == 0xE0) p->lo_b = 0xA0;
                if (c == 0xED) p->hi_b = 0x9F;
            } else if (c >= 0xF0 && c <= 0xF4) {
                p->utf_need = 3;
                if (c == 0xF0) p->lo_b = 0x90;
                if (c == 0xF4) p->hi_b = 0x8F;
            } else {
                return fail(p, "invalid UTF-8 byte 0x%02X in a string", c);
            }
            p->sub = ST_UTF;
        }
        return buf_put(&p->tok, (const char *)&c, 1) < 0 ? oom(p) : 0;
    case ST_UTF:
        if (c < p->lo_b || c > p->hi_b)
            return fail(p, "invalid UTF-8 sequence in a string (byte 0x%02X)", c);
        p->lo_b = 0x80;
        p->hi_b = 0xBF;
        if (--p->utf_need == 0) p->sub = ST_CHAR;
        return buf_put(&p->tok, (const char *)&c, 1) < 0 ? oom(p) : 0;
    case ST_ESC: {
        char e;
        switch (c) {
        case '"': e = '"'; break;
        case '\\': e = '\\'; break;
        case '/': e = '/'; break;
        case 'b': e = '\b'; break;
        case 'f': e = '\f'; break;
        case 'n': e = '\n'; break;
        case 'r': e = '\r'; break;
        case 't': e = '\t'; break;
        case 'u':
            p->sub = ST_U;
            p->u_n = 0;
            p->u_acc = 0;
            return 0;
        default: return fail(p, "invalid escape: %s after '\\' in a string", show(c, b, sizeof b));
        }
        p->sub = ST_CHAR;
        return buf_put(&p->tok, &e, 1) < 0 ? oom(p) : 0;
    }
    case ST_U: {
        int h = hexval(c);
        if (h < 0) return fail(p, "expected a hex digit in a \\u escape, found %s", show(c, b, 16));
        p->u_acc = p->u_acc * 16 + (uint32_t)h;
        if (++p->u_n < 4) return 0;
        uint32_t u = p->u_acc;
        if (p->hi != 0) {
            if (u < 0xDC00 || u > 0xDFFF)
                return fail(p,
                            "lone surrogate \\u%04X in a string (\\u%04X is not a low surrogate)",
                            (unsigned)p->hi, (unsigned)u);
            uint32_t cp = 0x10000 + ((p->hi - 0xD800) << 10) + (u - 0xDC00);
            p->hi = 0;
            p->sub = ST_CHAR;
            return put_utf8(p, cp);
        }
        if (u >= 0xDC00 && u <= 0xDFFF)
            return fail(p, "lone surrogate \\u%04X in a string (a low half with no high half)",
                        (unsigned)u);
        if (u >= 0xD800 && u <= 0xDBFF) {
            p->hi = u;
            p->sub = ST_LOW_BS;
            return 0;
        }
        p->sub = ST_CHAR;
        return put_utf8(p, u);
    }
    case ST_LOW_BS:
    case ST_LOW_U:
        if (c == (p->sub == ST_LOW_BS ? '\\' : 'u')) {
            p->sub = p->sub == ST_LOW_BS ? ST_LOW_U : ST_U;
            p->u_n = 0;
            p->u_acc = 0;
            return 0;
        }
        return fail(p, "lone surrogate \\u%04X in a string (no \\u escape of a low half follows)",
                    (unsigned)p->hi);
    }
    return 0;
}

/* One byte inside a number. Returns 1 when the number ended before c (c is then read
 * again in the new state), 0 when c was part of it, -1 on error. */
static int step_number(parser *p, unsigned char c) {
    int digit = c >= '0' && c <= '9';
    int next = -1;
    switch (p->sub) {
    case N_MINUS:
        if (!digit) return fail(p, "expected a digit after '-' in a number");
        next = c == '0' ? N_ZERO : N_INT;
        break;
    case N_ZERO:
        if (digit) return fail(p, "a number may not have a leading zero");
        /* fall through */
    case N_INT:
        if (digit)
            next = N_INT;
        else if (c == '.')
            next = N_DOT;
        else if (c == 'e' || c == 'E')
            next = N_E;
        break;
    case N_DOT:
        if (!digit) return fail(p, "expected a digit after '.' in a number");
        next = N_FRAC;
        break;
    case N_FRAC:
        if (digit)
            next = N_FRAC;
        else if (c == 'e' || c == 'E')
            next = N_E;
        break;
    case N_E:
        if (c == '+' || c == '-')
            next = N_ESIGN;
        else if (digit)
            next = N_EXP;
        else
            return fail(p, "expected a sign or digit in a number's exponent");
        break;
    case N_ESIGN:
        if (!digit) return fail(p, "expected a digit in a number's exponent");
        next = N_EXP;
        break;
    case N_EXP:
        if (digit) next = N_EXP;
        break;
    }
    if (next < 0) return finish_number(p) < 0 ? -1 : 1;
    if (next == N_DOT || next == N_E) p->is_float = 1;
    p->sub = next;
    return buf_put(&p->tok, (const char *)&c, 1) < 0 ? oom(p) : 0;
}

static int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The first byte of a value. */
static int begin_value(parser *p, unsigned char c) {
    switch (c) {
    case '{': return open_container(p, 1);
    case '[': return open_container(p, 0);
    case '"':
        p->state = S_STRING;
        p->sub = ST_CHAR;
        p->is_key = 0;
        p->hi = 0;
        p->tok.len = 0;
        return 0;
    case 't':
    case 'f':
    case 'n':
        p->state = S_LITERAL;
        p->lit = c == 't' ? "true" : c == 'f' ? "false" : "null";
        p->lit_i = 1;
        return 0;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            p->state = S_NUMBER;
            p->sub = c == '-' ? N_MINUS : c == '0' ? N_ZERO : N_INT;
            p->is_float = 0;
            p->tok.len = 0;
            return buf_put(&p->tok, (const char *)&c, 1) < 0 ? oom(p) : 0;
        }
        return unexpected(p, c);
    }
}

static int begin_key(parser *p, unsigned char c) {
    if (c != '"') return unexpected(p, c);
    p->state = S_STRING;
    p->sub = ST_CHAR;
    p->is_key = 1;
    p->hi = 0;
    p->tok.len = 0;
    return 0;
}

/* Runs one byte through the machine. Returns 0 when it was consumed, 1 when it must be
 * read again (it ended a number), -1 on error. */
static int step(parser *p, unsigned char c) {
    switch (p->state) {
    case S_SKIP:
        if (c == '{' || c == '[') return begin_value(p, c);
        return 0;
    case S_VALUE_TOP:
    case S_VALUE_MEM:
    case S_VALUE_ELEM:
        if (is_ws(c)) return 0;
        return begin_value(p, c);
    case S_ARR_FIRST:
        if (is_ws(c)) return 0;
        if (c == ']') return close_container(p);
        return begin_value(p, c);
    case S_ARR_NEXT:
        if (is_ws(c)) return 0;
        if (c == ',') {
            p->state = S_VALUE_ELEM;
            return 0;
        }
        if (c == ']') return close_container(p);
        return unexpected(p, c);
    case S_OBJ_FIRST:
        if (is_ws(c)) return 0;
        if (c == '}') return close_container(p);
        return begin_key(p, c);
    case S_OBJ_KEY:
        if (is_ws(c)) return 0;
        return begin_key(p, c);
    case S_OBJ_COLON:
        if (is_ws(c)) return 0;
        if (c != ':') return unexpected(p, c);
        p->state = S_VALUE_MEM;
        return 0;
    case S_OBJ_NEXT:
        if (is_ws(c)) return 0;
        if (c == ',') {
            p->state = S_OBJ_KEY;
            return 0;
        }
        if (c == '}') return close_container(p);
        return unexpected(p, c);
    case S_STRING: return step_string(p, c);
    case S_NUMBER: return step_number(p, c);
    case S_LITERAL:
        if ((unsigned char)p->lit[p->lit_i] != c) {
            char b[16];
            return fail(p, "invalid literal: expected '%s', found %s", p->lit, show(c, b, 16));
        }
        if (p->lit[++p->lit_i] == '\0') {
            ctn_val *v = p->lit[0] == 'n' ? ctn_val_null() : ctn_val_bool(p->lit[0] == 't');
            if (attach(p, v) < 0) return -1;
            value_done(p);
            if (p->state == S_DONE) p->end_off = p->off + 1;
        }
        return 0;
    case S_DONE:
        if (p->stream || is_ws(c)) return 0;
        char b[16];
        return fail(p, "unexpected %s after the JSON value", show(c, b, sizeof b));
    default: return -1;
    }
}

/* Feeds bytes until they run out, the value ends (stream) or an error. */
static int feed(parser *p, const char *s, size_t n) {
    if (p->state == S_ERROR) return p->rc;
    for (size_t i = 0; i < n;) {
        if (p->stream && p->state == S_DONE) return 0;
        if (p->state == S_STRING && p->sub == ST_CHAR) {
            /* A run of plain ASCII in a string (no quote, backslash, control byte or
             * newline): what step_string does one byte at a time, in one append. */
            size_t j = i;
            while (j < n && (unsigned char)s[j] >= 0x20 && (unsigned char)s[j] < 0x80 &&
                   s[j] != '"' && s[j] != '\\')
                j++;
            if (j > i) {
                if (buf_put(&p->tok, s + i, j - i) < 0) return oom(p), p->rc;
                p->off += j - i;
                p->col += j - i;
                i = j;
                continue;
            }
        }
        unsigned char c = (unsigned char)s[i];
        int r = step(p, c);
        if (r < 0) return p->rc;
        if (r == 1) continue; /* a number ended before c: read c again */
        i++;
        p->off++;
        if (c == '\n') {
            p->line++;
            p->col = 1;
        } else {
            p->col++;
        }
    }
    return 0;
}

/* The end of the input: a number at the top may end here; anything else unfinished is an
 * error. */
static int finish(parser *p) {
    if (p->state == S_ERROR) return p->rc;
    if (p->state == S_NUMBER &&
        (p->sub == N_ZERO || p->sub == N_INT || p->sub == N_FRAC || p->sub == N_EXP)) {
        if (finish_number(p) < 0) return p->rc;
    }
    if (p->state == S_DONE) return 0;
    if (p->state == S_SKIP) {
        snprintf(p->msg, sizeof p->msg, "no JSON value in the text (no '{' or '[')");
        p->rc = CTN_ENOENT;
        p->state = S_ERROR;
        return p->rc;
    }
    fail(p, "unexpected end of input, %s", expectation(p));
    return p->rc;
}

static void put_err(char *err, size_t errcap, const char *msg) {
    if (err != NULL && errcap > 0) ctn__errf(err, errcap, "%s", msg);
}

int ctn_json_parse(const char *s, size_t n, ctn_val **out, char *err, size_t errcap) {
    if (out == NULL) return CTN_EINVAL;
    *out = NULL;
    if (s == NULL && n > 0) {
        put_err(err, errcap, "no text to parse (NULL)");
        return CTN_EINVAL;
    }
    parser *p = ctn__malloc(sizeof *p);
    if (p == NULL) {
        put_err(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    parser_init(p, 0);
    int rc = feed(p, s, n);
    if (rc == 0) rc = finish(p);
    if (rc == 0) {
        *out = p->root;
        p->root = NULL;
    } else {
        put_err(err, errcap, p->msg);
    }
    parser_close(p);
    free(p);
    return rc;
}

/* ---- the finder -------------------------------------------------------------------- */

/* The end of the value that starts at text[at] ('{' or '['), or 0 when no complete value
 * starts there. */
static size_t value_end(parser *p, const char *text, size_t n, size_t at) {
    parser_init(p, 1);
    size_t end = 0;
    if (feed(p, text + at, n - at) == 0 && p->state == S_DONE) end = at + p->end_off;
    parser_close(p);
    return end;
}

static int trimmed_parses(const char *t, size_t a, size_t b, size_t *start, size_t *end) {
    while (a < b && is_ws((unsigned char)t[a]))
        a++;
    while (b > a && is_ws((unsigned char)t[b - 1]))
        b--;
    ctn_val *v;
    if (ctn_json_parse(t + a, b - a, &v, NULL, 0) != 0) return 0;
    ctn_val_unref(v);
    *start = a;
    *end = b;
    return 1;
}

static const char *find3(const char *t, size_t n, size_t from) {
    for (size_t i = from; i + 3 <= n; i++)
        if (t[i] == '`' && t[i + 1] == '`' && t[i + 2] == '`') return t + i;
    return NULL;
}

/* The first ```json or bare ``` block: its content range, or 0 when there is none. A fence
 * with another language tag (```python) is passed over with its block. */
static int fenced_block(const char *t, size_t n, size_t *a, size_t *b) {
    size_t from = 0;
    for (;;) {
        const char *f = find3(t, n, from);
        if (f == NULL) return 0;
        size_t i = (size_t)(f - t) + 3, tag = i;
        while (i < n && t[i] != '\n')
            i++;
        size_t tag_end = i;
        while (tag_end > tag && is_ws((unsigned char)t[tag_end - 1]))
            tag_end--;
        while (tag < tag_end && is_ws((unsigned char)t[tag]))
            tag++;
        size_t content = i < n ? i + 1 : n;
        const char *close = find3(t, n, content);
        size_t cend = close ? (size_t)(close - t) : n;
        size_t tl = tag_end - tag;
        int json = tl == 0 || (tl == 4 && (t[tag] | 32) == 'j' && (t[tag + 1] | 32) == 's' &&
                               (t[tag + 2] | 32) == 'o' && (t[tag + 3] | 32) == 'n');
        if (json) {
            *a = content;
            *b = cend;
            return 1;
        }
        if (close == NULL) return 0;
        from = cend + 3;
    }
}

int ctn_json_find(const char *text, size_t n, size_t *start, size_t *end) {
    if (text == NULL || start == NULL || end == NULL) return CTN_EINVAL;
    size_t a, b;
    if (fenced_block(text, n, &a, &b) && trimmed_parses(text, a, b, start, end)) return 0;
    parser *p = ctn__malloc(sizeof *p);
    if (p == NULL) return CTN_ENOMEM;
    int rc = CTN_ENOENT;
    for (size_t i = 0; i < n; i++) {
        if (text[i] != '{' && text[i] != '[') continue;
        size_t e = value_end(p, text, n, i);
        if (e > 0) {
            *start = i;
            *end = e;
            rc = 0;
            break;
        }
    }
    free(p);
    return rc;
}

/* ---- the stream -------------------------------------------------------------------- */

ctn_json_stream *ctn_json_stream_new(void) {
    ctn_json_stream *s = ctn__malloc(sizeof *s);
    if (s == NULL) return NULL;
    parser_init(&s->p, 1);
    s->fed_version = 0;
    s->snap_version = 0;
    s->snap = NULL;
    return s;
}

void ctn_json_stream_free(ctn_json_stream *s) {
    if (s == NULL) return;
    parser_close(&s->p);
    ctn_val_unref(s->snap);
    free(s);
}

int ctn_json_stream_feed(ctn_json_stream *s, const char *chunk, size_t n, int *changed) {
    if (changed != NULL) *changed = 0;
    if (s == NULL || (chunk == NULL && n > 0)) return CTN_EINVAL;
    int rc = feed(&s->p, chunk, n);
    if (changed != NULL) *changed = s->p.version != s->fed_version;
    s->fed_version = s->p.version;
    return rc;
}

ctn_val *ctn_json_stream_snapshot(ctn_json_stream *s) {
    if (s == NULL || s->p.root == NULL) return NULL;
    if (s->snap == NULL || s->snap_version != s->p.version) {
        ctn_val *c = ctn_val_copy(s->p.root);
        if (c == NULL) return NULL;
        ctn_val_unref(s->snap);
        s->snap = c;
        s->snap_version = s->p.version;
    }
    return ctn_val_ref(s->snap);
}

int ctn_json_stream_finish(ctn_json_stream *s, ctn_val **out, char *err, size_t errcap) {
    if (out != NULL) *out = NULL;
    if (s == NULL || out == NULL) return CTN_EINVAL;
    int rc = finish(&s->p);
    if (rc < 0) {
        put_err(err, errcap, s->p.msg);
        return rc;
    }
    *out = ctn_val_ref(s->p.root);
    return 0;
}

const char *ctn_json_stream_errmsg(const ctn_json_stream *s) {
    return s == NULL ? "" : s->p.msg;
}
