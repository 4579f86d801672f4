/*
 * The Server-Sent Events parser (sse.h): lines are gathered across feeds, fields are read
 * at each line end, an event is dispatched at each blank line.
 */
#include "sse.h"

#include <inttypes.h>
#include <string.h>

#include "error.h"

void ctn_sse_init(ctn_sse *s, size_t max_event) {
    memset(s, 0, sizeof *s);
    s->max_event = max_event;
}

void ctn_sse_close(ctn_sse *s) {
    ctn_sb_free(&s->line);
    ctn_sb_free(&s->data);
}

static void sb_clear(ctn_strbuf *b) {
    b->len = 0;
    if (b->p != NULL) b->p[0] = '\0';
}

static int fail(ctn_sse *s, int code, char *err, size_t errcap, const char *what, uint64_t at) {
    if (code == CTN_ERANGE)
        ctn__errf(err, errcap,
                  "malformed SSE: the event at byte %" PRIu64 " is longer than %zu "
                  "bytes",
                  at, s->max_event);
    else if (code == CTN_ENOMEM)
        ctn__errf(err, errcap, "out of memory reading the event stream");
    else
        ctn__errf(err, errcap, "malformed SSE: %s at byte %" PRIu64, what, at);
    s->err = code;
    return code;
}

/* A whole line has been read (without its line end): a field, a comment, or the blank line
 * that ends an event. */
static int line_end(ctn_sse *s, ctn_sse_fn fn, void *ud) {
    const char *l = s->line.p != NULL ? s->line.p : "";
    const size_t n = s->line.len;
    if (n == 0) {
        int rc = 0;
        if (s->has_data)
            rc = fn(ud, s->event[0] ? s->event : "message", s->data.p != NULL ? s->data.p : "",
                    s->data.len, s->start);
        sb_clear(&s->data);
        s->event[0] = '\0';
        s->has_data = s->in_event = false;
        return rc;
    }
    if (l[0] == ':') return 0; /* a comment (servers send them to keep a connection alive) */
    if (!s->in_event) s->in_event = true, s->start = s->line_at;
    const char *colon = memchr(l, ':', n);
    const size_t flen = colon != NULL ? (size_t)(colon - l) : n;
    const char *v = colon != NULL ? colon + 1 : l + n;
    if (v < l + n && *v == ' ') v++;
    const size_t vlen = (size_t)(l + n - v);
    if (flen == 4 && memcmp(l, "data", 4) == 0) {
        if (s->has_data) ctn_sb_put(&s->data, "\n", 1);
        ctn_sb_put(&s->data, v, vlen);
        if (s->data.p == NULL) ctn_sb_put(&s->data, "", 0);
        s->has_data = true;
        if (s->data.oom) return CTN_ENOMEM;
    } else if (flen == 5 && memcmp(l, "event", 5) == 0) {
        const size_t k = vlen < sizeof s->event - 1 ? vlen : sizeof s->event - 1;
        memcpy(s->event, v, k);
        s->event[k] = '\0';
    }
    return 0;
}

int ctn_sse_feed(ctn_sse *s, const char *p, size_t n, ctn_sse_fn fn, void *ud, char *err,
                 size_t errcap) {
    if (s->err < 0) {
        ctn__errf(err, errcap, "the event stream failed before");
        return s->err;
    }
    static const char bom[3] = {'\xEF', '\xBB', '\xBF'};
    size_t i = 0;
    /* A byte-order mark at the very start is dropped; bytes that only began one are text. */
    while (!s->bom_checked && i < n) {
        if (p[i] == bom[s->bom_n]) {
            i++, s->fed++;
            if (++s->bom_n == 3) s->bom_checked = true, s->line_at = s->fed;
            continue;
        }
        s->bom_checked = true;
        ctn_sb_put(&s->line, bom, s->bom_n);
        if (s->line.oom) return fail(s, CTN_ENOMEM, err, errcap, "", s->fed);
    }
    while (i < n) {
        const char c = p[i];
        if (s->after_cr) {
            s->after_cr = false;
            if (c == '\n') { /* the second byte of a CRLF */
                i++, s->fed++, s->line_at = s->fed;
                continue;
            }
        }
        if (c == '\0') return fail(s, CTN_EFORMAT, err, errcap, "a NUL byte", s->fed);
        if (c == '\r' || c == '\n') {
            const int rc = line_end(s, fn, ud);
            sb_clear(&s->line);
            s->after_cr = c == '\r';
            i++, s->fed++, s->line_at = s->fed;
            if (rc == CTN_ENOMEM) return fail(s, rc, err, errcap, "", s->fed);
            if (rc < 0) { /* fn's own refusal: its reason is fn's to keep */
                s->err = rc;
                return rc;
            }
            continue;
        }
        size_t j = i;
        while (j < n && p[j] != '\r' && p[j] != '\n' && p[j] != '\0')
            j++;
        if (s->line.len + (j - i) + s->data.len > s->max_event)
            return fail(s, CTN_ERANGE, err, errcap, "", s->in_event ? s->start : s->line_at);
        ctn_sb_put(&s->line, p + i, j - i);
        if (s->line.oom) return fail(s, CTN_ENOMEM, err, errcap, "", s->fed);
        s->fed += j - i;
        i = j;
    }
    return 0;
}

bool ctn_sse_pending(const ctn_sse *s) {
    return s->in_event || s->line.len > 0 || (!s->bom_checked && s->bom_n > 0);
}
