/*
 * HTTP request framing over http-parser (serve_http.h). The parser calls back with pieces
 * of the URL, the header names and values and the body; they are gathered here, and the
 * parser is paused at the end of each message so that pipelined requests wait their turn.
 */
#include "serve_http.h"

#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "str.h"

enum { H_NONE, H_AUTH, H_CTYPE, H_ACCEPT, H_SESSION, H_TE, H_OTHER, H_N };

struct ctn_http_conn {
    http_parser p;
    http_parser_settings s;
    ctn_http_limits lim;
    ctn_http_on_request on_request;
    void *ud;

    /* The request being read. */
    ctn_strbuf url, body;
    ctn_strbuf field;       /* the header name being read */
    ctn_strbuf val[H_N];    /* the values kept, by kind */
    int cur;                /* the kind of the header whose value is being read */
    bool in_value;          /* the last piece was a value (a new name starts a header) */
    size_t head_bytes;      /* request line and headers so far */
    bool complete;          /* on_message_complete came: the request waits to be delivered */
    bool busy;              /* delivered, not yet resumed */
    int status;             /* the error status a callback decided on */
    char err[256];

    ctn_strbuf pending; /* bytes after the delivered request */
    size_t pending_off;
};

static ctn_http_conn *of(http_parser *p) { return p->data; }

static int fail(ctn_http_conn *c, int status, const char *msg) {
    c->status = status;
    snprintf(c->err, sizeof c->err, "%s", msg);
    return 1; /* stops the parser */
}

static void reset_request(ctn_http_conn *c) {
    c->url.len = c->body.len = c->field.len = 0;
    for (int i = 0; i < H_N; i++)
        c->val[i].len = 0;
    c->cur = H_NONE;
    c->in_value = false;
    c->head_bytes = 0;
    c->complete = false;
}

static int count_head(ctn_http_conn *c, size_t n) {
    c->head_bytes += n;
    if (c->head_bytes > c->lim.max_header_bytes) {
        char m[96];
        snprintf(m, sizeof m, "the request line and headers pass %zu bytes",
                 c->lim.max_header_bytes);
        return fail(c, 431, m);
    }
    return 0;
}

static int on_begin(http_parser *p) {
    reset_request(of(p));
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
    ctn_http_conn *c = of(p);
    if (count_head(c, n)) return 1;
    ctn_sb_put(&c->url, at, n);
    return c->url.oom ? fail(c, 500, "out of memory") : 0;
}

static int kind_of(const ctn_strbuf *name) {
    static const struct {
        const char *n;
        int k;
    } known[] = {{"authorization", H_AUTH},
                 {"content-type", H_CTYPE},
                 {"accept", H_ACCEPT},
                 {"x-session-id", H_SESSION},
                 {"transfer-encoding", H_TE}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (name->len == strlen(known[i].n) && strncasecmp(name->p, known[i].n, name->len) == 0)
            return known[i].k;
    return H_OTHER;
}

static int on_field(http_parser *p, const char *at, size_t n) {
    ctn_http_conn *c = of(p);
    if (count_head(c, n)) return 1;
    if (c->in_value || c->cur == H_NONE) { /* a new header */
        c->field.len = 0;
        c->in_value = false;
        c->cur = H_OTHER;
    }
    ctn_sb_put(&c->field, at, n);
    return c->field.oom ? fail(c, 500, "out of memory") : 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
    ctn_http_conn *c = of(p);
    if (count_head(c, n)) return 1;
    if (!c->in_value) { /* the name is whole: a repeated header keeps the last value */
        c->cur = kind_of(&c->field);
        c->in_value = true;
        if (c->cur != H_OTHER) c->val[c->cur].len = 0;
    }
    if (c->cur == H_OTHER) return 0;
    ctn_sb_put(&c->val[c->cur], at, n);
    return c->val[c->cur].oom ? fail(c, 500, "out of memory") : 0;
}

static int on_headers_complete(http_parser *p) {
    ctn_http_conn *c = of(p);
    /* http-parser decodes chunked bodies; other codings (gzip, ...) are not read. */
    const ctn_strbuf *te = &c->val[H_TE];
    if (te->len > 0 && !(te->len == 7 && strncasecmp(te->p, "chunked", 7) == 0))
        return fail(c, 501, "only the chunked transfer coding is read");
    if (p->content_length != UINT64_MAX && p->content_length > c->lim.max_body_bytes) {
        char m[96];
        snprintf(m, sizeof m, "the body passes %zu bytes", c->lim.max_body_bytes);
        return fail(c, 413, m);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
    ctn_http_conn *c = of(p);
    if (c->body.len + n > c->lim.max_body_bytes) {
        char m[96];
        snprintf(m, sizeof m, "the body passes %zu bytes", c->lim.max_body_bytes);
        return fail(c, 413, m);
    }
    ctn_sb_put(&c->body, at, n);
    return c->body.oom ? fail(c, 500, "out of memory") : 0;
}

static int on_complete(http_parser *p) {
    ctn_http_conn *c = of(p);
    c->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

ctn_http_conn *ctn_http_new(const ctn_http_limits *lim, ctn_http_on_request on_request,
                            void *ud) {
    ctn_http_conn *c = ctn__calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->lim.max_header_bytes = lim && lim->max_header_bytes ? lim->max_header_bytes : 16384;
    c->lim.max_body_bytes = lim && lim->max_body_bytes ? lim->max_body_bytes : 8u << 20;
    c->on_request = on_request;
    c->ud = ud;
    http_parser_init(&c->p, HTTP_REQUEST);
    c->p.data = c;
    http_parser_settings_init(&c->s);
    c->s.on_message_begin = on_begin;
    c->s.on_url = on_url;
    c->s.on_header_field = on_field;
    c->s.on_header_value = on_value;
    c->s.on_headers_complete = on_headers_complete;
    c->s.on_body = on_body;
    c->s.on_message_complete = on_complete;
    return c;
}

void ctn_http_free(ctn_http_conn *c) {
    if (c == NULL) return;
    ctn_sb_free(&c->url);
    ctn_sb_free(&c->body);
    ctn_sb_free(&c->field);
    for (int i = 0; i < H_N; i++)
        ctn_sb_free(&c->val[i]);
    ctn_sb_free(&c->pending);
    free(c);
}

static const char *val_or_null(ctn_http_conn *c, int k) {
    if (c->val[k].len == 0) return NULL;
    ctn_sb_put(&c->val[k], "", 0); /* NUL-terminates */
    return c->val[k].p;
}

/* Hands the complete request to the caller. */
static int deliver(ctn_http_conn *c) {
    ctn_sb_put(&c->url, "", 0);
    ctn_sb_put(&c->body, "", 0);
    if (c->url.oom || c->body.oom) return -1;
    char *q = c->url.p != NULL ? strchr(c->url.p, '?') : NULL;
    if (q != NULL) *q = '\0';
    ctn_http_req r = {
        .method = http_method_str((enum http_method)c->p.method),
        .path = c->url.p != NULL ? c->url.p : "/",
        .query = q != NULL ? q + 1 : "",
        .authorization = val_or_null(c, H_AUTH),
        .content_type = val_or_null(c, H_CTYPE),
        .accept = val_or_null(c, H_ACCEPT),
        .session = val_or_null(c, H_SESSION),
        .body = c->body.p != NULL ? c->body.p : "",
        .body_len = c->body.len,
        .keep_alive = http_should_keep_alive(&c->p) != 0,
        .http_minor = c->p.http_minor,
    };
    c->busy = true;
    c->complete = false;
    c->on_request(c->ud, &r);
    return 0;
}

/* Runs the parser over data; keeps what follows a finished request. */
static int run(ctn_http_conn *c, const char *data, size_t n) {
    const size_t used = http_parser_execute(&c->p, &c->s, data, n);
    const enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (c->status != 0) return c->status;
    if (e == HPE_PAUSED && c->complete) {
        if (used < n) {
            /* Kept for later; data may point into pending itself (resume). */
            ctn_strbuf keep = {0};
            ctn_sb_put(&keep, data + used, n - used);
            if (keep.oom) return -1;
            ctn_sb_free(&c->pending);
            c->pending = keep;
        } else {
            c->pending.len = 0;
        }
        c->pending_off = 0;
        return deliver(c);
    }
    if (e != HPE_OK) {
        snprintf(c->err, sizeof c->err, "malformed request: %s", http_errno_description(e));
        return 400;
    }
    if (c->p.upgrade) {
        snprintf(c->err, sizeof c->err, "protocol upgrades are not served");
        return 400;
    }
    return 0;
}

int ctn_http_feed(ctn_http_conn *c, const char *data, size_t n) {
    if (c->status != 0) return c->status;
    if (c->busy) { /* a request is out: keep the bytes */
        ctn_sb_put(&c->pending, data, n);
        return c->pending.oom ? -1 : 0;
    }
    return run(c, data, n);
}

int ctn_http_resume(ctn_http_conn *c) {
    if (!c->busy) return 0;
    c->busy = false;
    http_parser_pause(&c->p, 0);
    if (c->pending.len == 0) return 0;
    /* The kept bytes move out first: run may keep a rest of them again. */
    ctn_strbuf mine = c->pending;
    c->pending = (ctn_strbuf){0};
    const int rc = run(c, mine.p, mine.len);
    ctn_sb_free(&mine);
    return rc;
}

bool ctn_http_busy(const ctn_http_conn *c) { return c->busy; }

bool ctn_http_partial(const ctn_http_conn *c) {
    return c->head_bytes > 0 || c->pending.len > 0;
}

const char *ctn_http_error(const ctn_http_conn *c) { return c->err; }

const char *ctn_http_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}
