/*
 * Remote model nodes (remote.h): the node, its requests on libcurl's multi interface over the
 * task's libuv loop, and the readers of OpenAI-shaped answers.
 *
 * One request is one curl multi handle with one easy handle, owned by the request: its
 * sockets are uv_poll_t handles made and dropped as curl asks (CURLMOPT_SOCKETFUNCTION), its
 * timeouts one uv_timer_t (CURLMOPT_TIMERFUNCTION), and a second timer waits before a retry.
 * Ending the request (done, failed or cancelled) removes the easy handle and cleans up the
 * multi handle, which closes its connections then and there; the request's memory goes with
 * the close callback of its last uv handle. curl is never re-entered from its own callbacks:
 * what a callback finds (an error, a cancellation from a chunk's consumer) is acted on once
 * curl_multi_socket_action has returned.
 */
#include "remote.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "alloc.h"
#include "components.h"
#include "error.h"
#include "json.h"
#include "settings.h"
#include "sse.h"
#include "str.h"

/* ==== reading answers ====================================================================== */

static const ctn_val *get_kind(const ctn_val *o, const char *key, ctn_vkind kind) {
    const ctn_val *v = ctn_val_get(o, key);
    return v != NULL && v->kind == kind ? v : NULL;
}

static int64_t get_count(const ctn_val *o, const char *key) {
    const ctn_val *v = ctn_val_get(o, key);
    if (v != NULL && v->kind == CTN_VINT && v->u.i >= 0) return v->u.i;
    if (v != NULL && v->kind == CTN_VNUM && v->u.num >= 0 && v->u.num < 9e15)
        return (int64_t)v->u.num;
    return -1;
}

/* The server's message of an error object, or NULL when v is none. */
static const char *error_message(const ctn_val *v) {
    if (v == NULL || v->kind != CTN_VOBJ) return NULL;
    const ctn_val *e = ctn_val_get(v, "error");
    if (e == NULL || e->kind == CTN_VNULL) return NULL;
    if (e->kind == CTN_VSTR) return e->u.str.p;
    const ctn_val *m = e->kind == CTN_VOBJ ? get_kind(e, "message", CTN_VSTR) : NULL;
    return m != NULL ? m->u.str.p : "an error without a message";
}

/* 0 when v is an answer's object; CTN_EFORMAT for another value, CTN_ECHAIN for an error
 * object (the server's message in err). */
static int answer_check(const ctn_val *v, char *err, size_t errcap) {
    if (v == NULL || v->kind != CTN_VOBJ) {
        ctn__errf(err, errcap, "the answer is %s, not a JSON object",
                  v != NULL ? ctn_vkind_name(v->kind) : "missing");
        return CTN_EFORMAT;
    }
    const char *em = error_message(v);
    if (em != NULL) {
        ctn__errf(err, errcap, "%s", em);
        return CTN_ECHAIN;
    }
    return 0;
}

int ctn_remote_read_piece(const ctn_val *v, bool chat, bool stream, ctn_remote_piece *out,
                          char *err, size_t errcap) {
    memset(out, 0, sizeof *out);
    out->prompt_tokens = out->completion_tokens = out->cached_tokens = -1;
    const int rc = answer_check(v, err, errcap);
    if (rc < 0) return rc;
    const ctn_val *model = get_kind(v, "model", CTN_VSTR);
    if (model != NULL) out->model = model->u.str.p;
    const ctn_val *usage = get_kind(v, "usage", CTN_VOBJ);
    if (usage != NULL) {
        out->prompt_tokens = get_count(usage, "prompt_tokens");
        out->completion_tokens = get_count(usage, "completion_tokens");
        const ctn_val *d = get_kind(usage, "prompt_tokens_details", CTN_VOBJ);
        if (d != NULL) out->cached_tokens = get_count(d, "cached_tokens");
    }
    const ctn_val *choices = get_kind(v, "choices", CTN_VARR);
    if (choices == NULL) {
        ctn__errf(err, errcap, "the answer has no \"choices\" array");
        return CTN_EFORMAT;
    }
    if (choices->u.arr.n == 0) {
        if (stream && usage != NULL) return 0; /* the usage chunk */
        ctn__errf(err, errcap, "the answer's \"choices\" is empty");
        return CTN_EFORMAT;
    }
    /* The first choice (n is 1): the one of index 0, or the first when none says. */
    const ctn_val *c = NULL;
    for (size_t i = 0; i < choices->u.arr.n && c == NULL; i++) {
        const ctn_val *ci = choices->u.arr.items[i];
        const ctn_val *ix = ci->kind == CTN_VOBJ ? ctn_val_get(ci, "index") : NULL;
        if (ix == NULL || (ix->kind == CTN_VINT && ix->u.i == 0)) c = ci;
    }
    if (c == NULL || c->kind != CTN_VOBJ) {
        ctn__errf(err, errcap, "the answer's \"choices\" has no choice 0 (an object)");
        return CTN_EFORMAT;
    }
    const ctn_val *fr = get_kind(c, "finish_reason", CTN_VSTR);
    if (fr != NULL) out->finish_reason = fr->u.str.p;
    const ctn_val *holder = c, *text;
    const char *field = "text";
    if (chat) {
        const char *mk = stream ? "delta" : "message";
        holder = ctn_val_get(c, mk);
        if (holder == NULL || holder->kind != CTN_VOBJ) {
            if (stream && holder == NULL && fr != NULL) return 0; /* a bare finish */
            ctn__errf(err, errcap, "choice 0 has no \"%s\" object", mk);
            return CTN_EFORMAT;
        }
        field = "content";
    }
    text = ctn_val_get(holder, field);
    if (text != NULL && text->kind == CTN_VSTR) {
        out->text = text->u.str.p;
        out->text_len = text->u.str.len;
    } else if (text != NULL && text->kind != CTN_VNULL) {
        ctn__errf(err, errcap, "choice 0's \"%s\" is %s, not a string", field,
                  ctn_vkind_name(text->kind));
        return CTN_EFORMAT;
    } else if (!stream && !chat) {
        ctn__errf(err, errcap, "choice 0 has no \"text\"");
        return CTN_EFORMAT;
    }
    return 0;
}

int ctn_remote_read_embeddings(const ctn_val *v, size_t n, ctn_val **out, int64_t *prompt_tokens,
                               char *err, size_t errcap) {
    *out = NULL;
    *prompt_tokens = -1;
    int rc = answer_check(v, err, errcap);
    if (rc < 0) return rc;
    const ctn_val *usage = get_kind(v, "usage", CTN_VOBJ);
    if (usage != NULL) *prompt_tokens = get_count(usage, "prompt_tokens");
    const ctn_val *data = get_kind(v, "data", CTN_VARR);
    if (data == NULL || data->u.arr.n != n) {
        ctn__errf(err, errcap, "the answer's \"data\" should be an array of %zu embeddings, got %s",
                  n, data == NULL ? "none" : "another count");
        return CTN_EFORMAT;
    }
    const ctn_val **slot = ctn__calloc(n + 1, sizeof *slot);
    if (slot == NULL) return CTN_ENOMEM;
    size_t dim = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const ctn_val *d = data->u.arr.items[i];
        const ctn_val *ix = d->kind == CTN_VOBJ ? ctn_val_get(d, "index") : NULL;
        const ctn_val *e = d->kind == CTN_VOBJ ? get_kind(d, "embedding", CTN_VARR) : NULL;
        const int64_t k = ix == NULL ? (int64_t)i : ix->kind == CTN_VINT ? ix->u.i : -1;
        if (e == NULL || k < 0 || (size_t)k >= n || slot[k] != NULL) {
            ctn__errf(
                err, errcap,
                "embedding %zu: needs an \"embedding\" array and an unused \"index\" below %zu", i,
                n);
            rc = CTN_EFORMAT;
            break;
        }
        if (i == 0) dim = e->u.arr.n;
        if (e->u.arr.n != dim || dim == 0) {
            ctn__errf(err, errcap, "embedding %zu has %zu numbers, embedding 0 %zu", i, e->u.arr.n,
                      dim);
            rc = CTN_EFORMAT;
            break;
        }
        for (size_t j = 0; j < dim; j++)
            if (e->u.arr.items[j]->kind != CTN_VNUM && e->u.arr.items[j]->kind != CTN_VINT) {
                ctn__errf(err, errcap, "embedding %zu, number %zu is %s", i, j,
                          ctn_vkind_name(e->u.arr.items[j]->kind));
                rc = CTN_EFORMAT;
                break;
            }
        slot[k] = e;
    }
    ctn_val *a = rc == 0 ? ctn_val_arr() : NULL;
    if (rc == 0 && a == NULL) rc = CTN_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ctn_val_push(a, ctn_val_ref((ctn_val *)slot[i])) < 0) rc = CTN_ENOMEM;
    free(slot);
    if (rc < 0) {
        ctn_val_unref(a);
        if (rc == CTN_ENOMEM) ctn__errf(err, errcap, "out of memory");
        return rc;
    }
    *out = a;
    return 0;
}

void ctn_remote_error_text(const char *body, size_t n, char *out, size_t cap) {
    if (cap == 0) return;
    ctn_val *v = NULL;
    char jerr[64];
    const char *m = NULL;
    if (n > 0 && ctn_json_parse(body, n, &v, jerr, sizeof jerr) == 0) {
        m = error_message(v);
        const ctn_val *s =
            m == NULL && v->kind == CTN_VOBJ ? get_kind(v, "message", CTN_VSTR) : NULL;
        if (s != NULL) m = s->u.str.p;
    }
    if (m != NULL) {
        snprintf(out, cap, "%s", m);
    } else if (n == 0) {
        snprintf(out, cap, "(empty body)");
    } else {
        size_t k = n < 200 ? n : 200;
        if (k > cap - 1) k = cap - 1;
        for (size_t i = 0; i < k; i++) {
            const unsigned char c = (unsigned char)body[i];
            out[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        }
        while (k > 0 && out[k - 1] == ' ')
            k--;
        out[k] = '\0';
    }
    ctn_val_unref(v);
}

/* ==== the node ============================================================================ */

typedef struct {
    ctn_remote_kind kind;
    bool message;
    char *url;  /* the endpoint */
    char *base; /* base_url as given, for describe */
    char *model;
    char *key_env;
    int64_t timeout_ms, max_bytes;
    int retries;
    double backoff_ms;
} remote_ud;

ctn_remote_opts ctn_remote_opts_default(void) {
    return (ctn_remote_opts){.kind = CTN_REMOTE_CHAT,
                             .timeout_ms = CTN_REMOTE_DEFAULT_TIMEOUT_MS,
                             .max_retries = CTN_REMOTE_DEFAULT_RETRIES,
                             .max_response_bytes = CTN_REMOTE_DEFAULT_MAX_BYTES,
                             .backoff_ms = 250};
}

static uv_once_t curl_once = UV_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init(void) {
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- one request --------------------------------------------------------------------- */

typedef struct rq rq;
typedef struct rsock {
    uv_poll_t poll;
    curl_socket_t fd;
    rq *q;
    struct rsock *next;
} rsock;

struct rq {
    ctn_task *t;        /* NULL once the task is gone */
    const remote_ud *u; /* the node's (only read while t is set) */
    uv_loop_t *loop;
    CURLM *multi;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body;       /* the request's JSON */
    size_t n_inputs;  /* embeddings: how many texts; 0: one string */
    uv_timer_t timer; /* curl's timeouts */
    uv_timer_t wait;  /* the wait before a retry */
    rsock *socks;
    int handles;  /* uv handles not yet closed */
    bool in_curl; /* inside curl_multi_socket_action */
    bool closed;
    uint64_t deadline; /* uv_hrtime, ns */
    int attempts;      /* made so far */
    char curl_err[CURL_ERROR_SIZE];
    /* of the attempt */
    long status;
    bool status_read, sse;
    int64_t retry_after; /* seconds; -1: none */
    uint64_t got;        /* body bytes received */
    ctn_strbuf raw;      /* a whole (or an error) body */
    ctn_sse events;
    bool saw_done;
    /* of the answer */
    bool emitted; /* a chunk went out: no retry after that */
    ctn_strbuf text;
    char finish[32];
    char model_name[128];
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    int err; /* a failure a callback found */
    char why[600];
};

static void rq_unref_handle(uv_handle_t *h) {
    rq *q = h->data;
    if (--q->handles == 0) free(q);
}

static void sock_closed(uv_handle_t *h) {
    rsock *s = h->data;
    rq *q = s->q;
    free(s);
    if (--q->handles == 0) free(q);
}

static void sock_drop(rq *q, rsock *s) {
    for (rsock **p = &q->socks; *p != NULL; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    uv_poll_stop(&s->poll);
    s->poll.data = s;
    uv_close((uv_handle_t *)&s->poll, sock_closed);
}

/* Ends the transfer and frees what the request holds; its memory goes with its handles. */
static void rq_close(rq *q) {
    if (q->closed) return;
    q->closed = true;
    if (q->easy != NULL) {
        if (q->multi != NULL) curl_multi_remove_handle(q->multi, q->easy);
        curl_easy_cleanup(q->easy);
    }
    if (q->multi != NULL) curl_multi_cleanup(q->multi);
    q->easy = NULL;
    q->multi = NULL;
    while (q->socks != NULL)
        sock_drop(q, q->socks);
    curl_slist_free_all(q->hdrs);
    free(q->body);
    ctn_sb_free(&q->raw);
    ctn_sb_free(&q->text);
    ctn_sse_close(&q->events);
    uv_close((uv_handle_t *)&q->timer, rq_unref_handle);
    uv_close((uv_handle_t *)&q->wait, rq_unref_handle);
}

/* Fails the task (when it is still there) and ends the request. */
static void rq_fail(rq *q, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rq_fail(rq *q, int code, const char *fmt, ...) {
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctn_task *t = q->t;
    q->t = NULL;
    if (t != NULL) {
        ctn_task_set_data(t, NULL);
        if (q->prompt_tokens > 0 || q->completion_tokens > 0)
            ctn_task_add_tokens(t, q->prompt_tokens > 0 ? q->prompt_tokens : 0,
                                q->completion_tokens > 0 ? q->completion_tokens : 0);
    }
    const char *url = q->u->url;
    rq_close(q);
    if (t != NULL) ctn_task_fail(t, code, "remote %s: %s", url, msg);
}

/* Notes a failure found in a callback (the first one counts); curl is then told to stop. */
static void note(rq *q, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(rq *q, int code, const char *fmt, ...) {
    if (q->err < 0) return;
    q->err = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->why, sizeof q->why, fmt, ap);
    va_end(ap);
}

/* ---- the answer's pieces -------------------------------------------------------------- */

static void take_piece(rq *q, const ctn_remote_piece *p) {
    if (p->finish_reason != NULL) snprintf(q->finish, sizeof q->finish, "%s", p->finish_reason);
    if (p->model != NULL) snprintf(q->model_name, sizeof q->model_name, "%s", p->model);
    if (p->prompt_tokens >= 0) q->prompt_tokens = p->prompt_tokens;
    if (p->completion_tokens >= 0) q->completion_tokens = p->completion_tokens;
    if (p->cached_tokens >= 0) q->cached_tokens = p->cached_tokens;
}

/* One event of the stream. */
static int on_event(void *ud, const char *event, const char *data, size_t n, uint64_t at) {
    rq *q = ud;
    /* A consumer of the last chunk cancelled the task (the node may be gone with its run). */
    if (q->t == NULL) return CTN_ECANCELED;
    if (q->saw_done) return 0; /* nothing counts after the end */
    if (n == 6 && memcmp(data, "[DONE]", 6) == 0) {
        q->saw_done = true;
        return 0;
    }
    ctn_val *v = NULL;
    char jerr[256], perr[300];
    if (ctn_json_parse(data, n, &v, jerr, sizeof jerr) < 0) {
        note(q, CTN_EFORMAT,
             "malformed JSON in the SSE event at byte %" PRIu64 " of the stream: %s", at, jerr);
        return CTN_EFORMAT;
    }
    ctn_remote_piece p;
    const int rc =
        ctn_remote_read_piece(v, q->u->kind == CTN_REMOTE_CHAT, true, &p, perr, sizeof perr);
    if (rc == CTN_ECHAIN || (rc == 0 && strcmp(event, "error") == 0)) {
        note(q, CTN_ECHAIN, "the stream reported an error: %s", rc < 0 ? perr : data);
    } else if (rc < 0) {
        note(q, rc, "malformed SSE event at byte %" PRIu64 " of the stream: %s", at, perr);
    } else {
        take_piece(q, &p);
        if (p.text_len > 0) {
            ctn_sb_put(&q->text, p.text, p.text_len);
            if (q->text.oom) note(q, CTN_ENOMEM, "out of memory");
            ctn_val *chunk = ctn_val_str(p.text, p.text_len);
            if (chunk == NULL) note(q, CTN_ENOMEM, "out of memory");
            q->emitted = true;
            /* The consumer may cancel the task from here: then t is NULL afterwards. */
            if (q->t != NULL && chunk != NULL)
                ctn_task_emit(q->t, chunk);
            else
                ctn_val_unref(chunk);
        }
    }
    ctn_val_unref(v);
    return q->err < 0 ? q->err : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    rq *q = ud;
    const size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) { /* a new response (after a 1xx) */
        q->retry_after = -1;
        q->sse = false;
    } else if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
        char buf[32];
        size_t k = len - 12 < sizeof buf - 1 ? len - 12 : sizeof buf - 1;
        memcpy(buf, p + 12, k);
        buf[k] = '\0';
        char *end;
        const long long s = strtoll(buf, &end, 10);
        while (*end == ' ' || *end == '\r' || *end == '\n' || *end == '\t')
            end++;
        /* Seconds only: an HTTP date is not read (the backoff applies then). */
        if (end != buf && *end == '\0' && s >= 0) q->retry_after = s;
    } else if (len > 13 && strncasecmp(p, "content-type:", 13) == 0) {
        const char *v = p + 13;
        while (v < p + len && *v == ' ')
            v++;
        q->sse = (size_t)(p + len - v) >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    rq *q = ud;
    const size_t len = size * n;
    if (q->t == NULL || q->err < 0) return 0; /* cancelled, or failed: stop the transfer */
    if (!q->status_read) {
        q->status_read = true;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->status);
    }
    q->got += len;
    if (q->got > (uint64_t)q->u->max_bytes) {
        note(q, CTN_ERANGE, "the answer is larger than max_response_bytes (%" PRId64 " bytes)",
             q->u->max_bytes);
        return 0;
    }
    if (q->status == 200 && q->sse && q->u->kind != CTN_REMOTE_EMBEDDINGS) {
        char err[300] = "";
        const int rc = ctn_sse_feed(&q->events, p, len, on_event, q, err, sizeof err);
        if (rc < 0 && q->err == 0 && q->t != NULL) note(q, rc, "%s", err);
        return q->err < 0 || q->t == NULL ? 0 : len;
    }
    /* A whole answer, or an error's body: only its start is needed for an error. */
    if (q->status == 200 || q->raw.len < 65536) ctn_sb_put(&q->raw, p, len);
    if (q->raw.oom) {
        note(q, CTN_ENOMEM, "out of memory");
        return 0;
    }
    return len;
}

/* ---- driving curl from the loop -------------------------------------------------------- */

static void check_done(rq *q);

static void drive(rq *q, curl_socket_t fd, int flags) {
    int running = 0;
    q->in_curl = true;
    curl_multi_socket_action(q->multi, fd, flags, &running);
    q->in_curl = false;
    if (q->t == NULL) { /* cancelled from a callback (a chunk's consumer) */
        rq_close(q);
        return;
    }
    check_done(q);
}

static void on_poll(uv_poll_t *h, int status, int events) {
    rsock *s = h->data;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    drive(s->q, s->fd, flags);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp) {
    (void)e;
    rq *q = ud;
    rsock *s = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) sock_drop(q, s);
        if (!q->closed) curl_multi_assign(q->multi, fd, NULL);
        return 0;
    }
    if (s == NULL) {
        s = ctn__calloc(1, sizeof *s);
        if (s == NULL) return -1;
        if (uv_poll_init_socket(q->loop, &s->poll, fd) < 0) {
            free(s);
            return -1;
        }
        s->fd = fd;
        s->q = q;
        s->poll.data = s;
        s->next = q->socks;
        q->socks = s;
        q->handles++;
        curl_multi_assign(q->multi, fd, s);
    }
    const int ev =
        (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    return uv_poll_start(&s->poll, ev, on_poll) < 0 ? -1 : 0;
}

static void on_timer_fire(uv_timer_t *h) {
    drive(h->data, CURL_SOCKET_TIMEOUT, 0);
}

static int on_timer(CURLM *m, long ms, void *ud) {
    (void)m;
    rq *q = ud;
    if (ms < 0) return uv_timer_stop(&q->timer) < 0 ? -1 : 0;
    return uv_timer_start(&q->timer, on_timer_fire, (uint64_t)ms, 0) < 0 ? -1 : 0;
}

/* ---- attempts, retries and the end ---------------------------------------------------- */

static int64_t ms_left(const rq *q) {
    const uint64_t now = uv_hrtime();
    return now >= q->deadline ? 0 : (int64_t)((q->deadline - now) / 1000000);
}

/* Starts (again) the transfer; false after failing the request. */
static bool attempt(rq *q) {
    const int64_t left = ms_left(q);
    if (left <= 0) {
        rq_fail(q, CTN_ETIMEDOUT, "no answer within timeout_ms (%" PRId64 " ms, %d attempts)",
                q->u->timeout_ms, q->attempts);
        return false;
    }
    q->attempts++;
    q->status = 0;
    q->status_read = q->sse = q->saw_done = false;
    q->retry_after = -1;
    q->got = 0;
    q->curl_err[0] = '\0';
    ctn_sb_free(&q->raw);
    ctn_sse_close(&q->events);
    ctn_sse_init(&q->events, (size_t)q->u->max_bytes);
    curl_easy_setopt(q->easy, CURLOPT_TIMEOUT_MS, (long)left);
    curl_easy_setopt(q->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)left);
    const CURLMcode mc = curl_multi_add_handle(q->multi, q->easy);
    if (mc != CURLM_OK) {
        rq_fail(q, CTN_EIO, "cannot start the request: %s", curl_multi_strerror(mc));
        return false;
    }
    return true;
}

static void on_wait(uv_timer_t *h) {
    rq *q = h->data;
    if (q->t != NULL) attempt(q);
}

/* A failed attempt that may be tried again: after the backoff or Retry-After, when there
 * are tries and time left; else the failure. */
static void retry_or_fail(rq *q, int code, const char *why) {
    if (q->attempts > q->u->retries || q->emitted) {
        if (q->attempts > 1)
            rq_fail(q, code, "%s (%d attempts)", why, q->attempts);
        else
            rq_fail(q, code, "%s", why);
        return;
    }
    double wait = q->u->backoff_ms * pow(2, q->attempts - 1);
    if (q->retry_after >= 0) wait = (double)q->retry_after * 1000;
    if (wait >= (double)ms_left(q)) {
        rq_fail(q, code, "%s (%d attempt%s; no time left in timeout_ms for a wait of %.0f ms)", why,
                q->attempts, q->attempts > 1 ? "s" : "", wait);
        return;
    }
    curl_multi_remove_handle(q->multi, q->easy);
    uv_timer_start(&q->wait, on_wait, (uint64_t)wait, 0);
}

/* {type = "ai", content, response_metadata, usage_metadata}, as the local model node's. */
static ctn_val *message_of(const rq *q, ctn_val *text) {
    ctn_val *m = ctn_val_obj(), *meta = ctn_val_obj(), *usage = ctn_val_obj();
    int rc = m != NULL && meta != NULL && usage != NULL ? 0 : CTN_ENOMEM;
    if (rc == 0) rc = ctn_val_set(m, "type", ctn_val_cstr("ai"));
    if (rc == 0) rc = ctn_val_set(m, "content", text), text = NULL;
    if (rc == 0)
        rc = ctn_val_set(meta, "finish_reason",
                         q->finish[0] ? ctn_val_cstr(q->finish) : ctn_val_null());
    if (rc == 0)
        rc = ctn_val_set(meta, "model_name",
                         ctn_val_cstr(q->model_name[0] ? q->model_name : q->u->model));
    if (rc == 0 && q->prompt_tokens >= 0 && q->completion_tokens >= 0) {
        rc = ctn_val_set(usage, "input_tokens", ctn_val_int(q->prompt_tokens));
        if (rc == 0) rc = ctn_val_set(usage, "output_tokens", ctn_val_int(q->completion_tokens));
        if (rc == 0)
            rc = ctn_val_set(usage, "total_tokens",
                             ctn_val_int(q->prompt_tokens + q->completion_tokens));
        if (rc == 0 && q->cached_tokens >= 0) {
            ctn_val *d = ctn_val_obj();
            rc = d != NULL ? ctn_val_set(d, "cache_read", ctn_val_int(q->cached_tokens))
                           : CTN_ENOMEM;
            if (rc == 0)
                rc = ctn_val_set(usage, "input_token_details", d);
            else
                ctn_val_unref(d);
        }
    }
    if (rc == 0) rc = ctn_val_set(m, "response_metadata", meta), meta = NULL;
    if (rc == 0) rc = ctn_val_set(m, "usage_metadata", usage), usage = NULL;
    ctn_val_unref(text), ctn_val_unref(meta), ctn_val_unref(usage);
    if (rc < 0) {
        ctn_val_unref(m);
        return NULL;
    }
    return m;
}

/* The whole body received as JSON into *v; 0 or the parser's code with its reason. */
static int parse_raw(const rq *q, ctn_val **v, char *err, size_t errcap) {
    char jerr[256];
    const int rc =
        ctn_json_parse(q->raw.p != NULL ? q->raw.p : "", q->raw.len, v, jerr, sizeof jerr);
    if (rc < 0) ctn__errf(err, errcap, "malformed JSON in the answer: %s", jerr);
    return rc;
}

/* The task's output, once the answer is complete. */
static void rq_finish(rq *q) {
    ctn_task *t = q->t;
    ctn_val *out = NULL;
    int rc = 0;
    char err[600] = "out of memory";
    if (q->u->kind == CTN_REMOTE_EMBEDDINGS) {
        ctn_val *v = NULL, *vecs = NULL;
        const size_t n = q->n_inputs > 0 ? q->n_inputs : 1;
        char jerr[256];
        rc = parse_raw(q, &v, err, sizeof err);
        if (rc == 0) {
            int64_t pt = -1;
            rc = ctn_remote_read_embeddings(v, n, &vecs, &pt, jerr, sizeof jerr);
            if (rc < 0)
                snprintf(err, sizeof err, "%s%s",
                         rc == CTN_ECHAIN ? "" : "malformed answer: ", jerr);
            q->prompt_tokens = pt;
            if (rc == 0 && q->n_inputs == 0) {
                out = ctn_val_ref(ctn_val_at(vecs, 0));
                ctn_val_unref(vecs);
            } else {
                out = vecs;
            }
        }
        ctn_val_unref(v);
        q->completion_tokens = 0;
    } else {
        if (!q->sse) { /* a server that answered with one JSON body */
            ctn_val *v = NULL;
            char jerr[256];
            rc = parse_raw(q, &v, err, sizeof err);
            if (rc == 0) {
                ctn_remote_piece p;
                rc = ctn_remote_read_piece(v, q->u->kind == CTN_REMOTE_CHAT, false, &p, jerr,
                                           sizeof jerr);
                if (rc < 0) snprintf(err, sizeof err, "malformed answer: %s", jerr);
                if (rc == 0) {
                    take_piece(q, &p);
                    ctn_sb_put(&q->text, p.text != NULL ? p.text : "", p.text_len);
                    if (p.text_len > 0 && q->t != NULL)
                        ctn_task_emit(q->t, ctn_val_str(p.text, p.text_len));
                }
            }
            ctn_val_unref(v);
        }
        if (rc == 0 && q->t != NULL) {
            ctn_val *text = ctn_val_str(q->text.p != NULL ? q->text.p : "", q->text.len);
            out = q->u->message ? message_of(q, text) : text;
            if (out == NULL) rc = CTN_ENOMEM;
        }
    }
    if (q->t == NULL) { /* cancelled by the emit above */
        ctn_val_unref(out);
        rq_close(q);
        return;
    }
    if (rc < 0) {
        ctn_val_unref(out);
        rq_fail(q,
                rc == CTN_ENOMEM   ? CTN_ENOMEM
                : rc == CTN_ECHAIN ? CTN_ECHAIN
                                   : CTN_EFORMAT,
                "%s", err);
        return;
    }
    q->t = NULL;
    ctn_task_set_data(t, NULL);
    if (q->prompt_tokens >= 0 || q->completion_tokens >= 0)
        ctn_task_add_tokens(t, q->prompt_tokens > 0 ? q->prompt_tokens : 0,
                            q->completion_tokens > 0 ? q->completion_tokens : 0);
    rq_close(q);
    ctn_task_done(t, out);
}

/* What curl's end of the transfer means. */
static void transfer_done(rq *q, CURLcode res) {
    char why[700];
    if (q->err < 0) { /* found in a callback: final */
        rq_fail(q, q->err, "%s", q->why);
        return;
    }
    if (!q->status_read && res == CURLE_OK)
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->status);
    if (res == CURLE_OPERATION_TIMEDOUT) {
        rq_fail(q, CTN_ETIMEDOUT, "%s within timeout_ms (%" PRId64 " ms%s)",
                q->got == 0 ? "no answer" : "the answer did not end", q->u->timeout_ms,
                q->attempts > 1 ? ", retries included" : "");
        return;
    }
    if (res == CURLE_FILESIZE_EXCEEDED) {
        rq_fail(q, CTN_ERANGE, "the answer is larger than max_response_bytes (%" PRId64 " bytes)",
                q->u->max_bytes);
        return;
    }
    if (res != CURLE_OK) {
        /* curl's own words for this transfer when it has them, else those of the code. */
        snprintf(why, sizeof why, "%s", q->curl_err[0] ? q->curl_err : curl_easy_strerror(res));
        if (q->got == 0 && !q->emitted) {
            retry_or_fail(q, CTN_EIO, why);
        } else {
            char w2[800];
            snprintf(w2, sizeof w2,
                     "the connection failed after %" PRIu64 " bytes of the answer: %s", q->got,
                     why);
            rq_fail(q, CTN_EIO, "%s", w2);
        }
        return;
    }
    if (q->status == 200) {
        if (q->u->kind != CTN_REMOTE_EMBEDDINGS && q->sse) {
            if (!q->saw_done) {
                rq_fail(q, CTN_EFORMAT,
                        "the stream ended after %" PRIu64 " bytes without data: [DONE]%s", q->got,
                        ctn_sse_pending(&q->events) ? " (in the middle of an event)" : "");
                return;
            }
        }
        rq_finish(q);
        return;
    }
    char msg[400];
    ctn_remote_error_text(q->raw.p, q->raw.len, msg, sizeof msg);
    snprintf(why, sizeof why, "%ld: %s", q->status, msg);
    if (q->status == 429 || q->status >= 500)
        retry_or_fail(q, CTN_ECHAIN, why);
    else
        rq_fail(q, q->status == 400 || q->status == 422 ? CTN_EINVAL : CTN_ECHAIN, "%s", why);
}

static void check_done(rq *q) {
    CURLMsg *m;
    int left;
    while (!q->closed && q->multi != NULL && (m = curl_multi_info_read(q->multi, &left)) != NULL)
        if (m->msg == CURLMSG_DONE) {
            transfer_done(q, m->data.result);
            return;
        }
}

/* ---- the request body ------------------------------------------------------------------- */

/* Keys of the settings table and the body's field for each (NULL: refused). */
static const struct {
    const char *key, *field;
} body_fields[] = {
    {"temperature", "temperature"},
    {"top_p", "top_p"},
    {"seed", "seed"},
    {"stop", "stop"},
    {"presence_penalty", "presence_penalty"},
    {"frequency_penalty", "frequency_penalty"},
    {"top_k", "top_k"}, /* vLLM's and llama.cpp's extra sampling fields */
    {"min_p", "min_p"},
    {"repeat_penalty", "repetition_penalty"},
    {"ignore_eos", "ignore_eos"},
    {"repeat_last_n", NULL},
    {"lora", NULL},
    {"lora_scale", NULL},
};

/* {role, content} of two strings (borrowed), or NULL when memory runs out. */
static ctn_val *msg_obj(const ctn_val *role, const ctn_val *content) {
    ctn_val *m = ctn_val_obj();
    if (m == NULL || ctn_val_set(m, "role", ctn_val_ref((ctn_val *)role)) < 0 ||
        ctn_val_set(m, "content", ctn_val_ref((ctn_val *)content)) < 0) {
        ctn_val_unref(m);
        return NULL;
    }
    return m;
}

/* The request's body for the task's input and settings into *out (a new object). 0, or -1
 * after failing the task. */
static int make_body(ctn_task *t, const remote_ud *u, const ctn_val *input, ctn_val **out,
                     size_t *n_inputs) {
    ctn_val *b = ctn_val_obj();
    *out = NULL;
    *n_inputs = 0;
    if (b == NULL || ctn_val_set(b, "model", ctn_val_cstr(u->model)) < 0) goto nomem;
    if (u->kind == CTN_REMOTE_EMBEDDINGS) {
        if (input->kind == CTN_VARR) {
            if (input->u.arr.n == 0) {
                ctn_val_unref(b);
                ctn_task_fail(t, CTN_EINVAL, "needs a string or a non-empty list of strings");
                return -1;
            }
            for (size_t i = 0; i < input->u.arr.n; i++)
                if (input->u.arr.items[i]->kind != CTN_VSTR) {
                    ctn_val_unref(b);
                    ctn_task_fail(t, CTN_ETYPE, "input %zu is %s, not a string", i + 1,
                                  ctn_vkind_name(input->u.arr.items[i]->kind));
                    return -1;
                }
            *n_inputs = input->u.arr.n;
        } else if (input->kind != CTN_VSTR) {
            ctn_val_unref(b);
            ctn_task_fail(t, CTN_ETYPE, "needs a string or a list of strings as input, got %s",
                          ctn_vkind_name(input->kind));
            return -1;
        }
        if (ctn_val_set(b, "input", ctn_val_ref((ctn_val *)input)) < 0) goto nomem;
        *out = b;
        return 0;
    }
    /* The prompt. */
    const ctn_val *ty = ctn_val_get(input, "type");
    const bool chat_in = input->kind == CTN_VOBJ && ty != NULL && ty->kind == CTN_VSTR &&
                         strcmp(ty->u.str.p, "chat") == 0 && ctn_val_get(input, "messages") != NULL;
    if (input->kind != CTN_VSTR && !chat_in) {
        ctn_val_unref(b);
        ctn_task_fail(t, CTN_ETYPE, "needs a string or a chat prompt as input, got %s",
                      ctn_vkind_name(input->kind));
        return -1;
    }
    if (u->kind == CTN_REMOTE_COMPLETION) {
        if (chat_in) {
            ctn_val_unref(b);
            ctn_task_fail(t, CTN_ETYPE,
                          "a completion model (kind = \"completion\") takes a string prompt; a "
                          "chat prompt needs kind = \"chat\"");
            return -1;
        }
        if (ctn_val_set(b, "prompt", ctn_val_ref((ctn_val *)input)) < 0) goto nomem;
    } else {
        ctn_val *msgs = ctn_val_arr();
        if (msgs == NULL || ctn_val_set(b, "messages", msgs) < 0) goto nomem;
        if (!chat_in) {
            ctn_val *role = ctn_val_cstr("user");
            ctn_val *m = role != NULL ? msg_obj(role, input) : NULL;
            ctn_val_unref(role);
            if (m == NULL || ctn_val_push(msgs, m) < 0) goto nomem;
        } else {
            const ctn_val *list = ctn_val_get(input, "messages");
            if (list->kind != CTN_VARR) {
                ctn_val_unref(b);
                ctn_task_fail(t, CTN_ETYPE, "the chat prompt's messages are %s, not a list",
                              ctn_vkind_name(list->kind));
                return -1;
            }
            for (size_t i = 0; i < list->u.arr.n; i++) {
                const ctn_val *e = list->u.arr.items[i];
                const ctn_val *ro = ctn_val_get(e, "role"), *co = ctn_val_get(e, "content");
                if (ro == NULL || co == NULL || ro->kind != CTN_VSTR || co->kind != CTN_VSTR) {
                    ctn_val_unref(b);
                    ctn_task_fail(t, CTN_ETYPE, "message %zu: needs string role and content",
                                  i + 1);
                    return -1;
                }
                ctn_val *m = msg_obj(ro, co);
                if (m == NULL || ctn_val_push(msgs, m) < 0) goto nomem;
            }
        }
    }
    /* The settings: checked by the validator (the same keys and limits as the local model
     * node), then written as the run gave them. */
    ctn_settings set;
    ctn_settings_init(&set);
    if (ctn_task_settings(t, &set) < 0) {
        ctn_val_unref(b);
        return -1;
    }
    for (size_t i = 0; i < sizeof body_fields / sizeof body_fields[0]; i++) {
        const ctn_val *sv = ctn_task_setting(t, body_fields[i].key);
        if (sv == NULL) continue;
        if (body_fields[i].field == NULL) {
            ctn_val_unref(b);
            ctn_task_fail(t, CTN_ENOTSUP, "setting '%s' does not apply to a remote model%s",
                          body_fields[i].key,
                          body_fields[i].key[0] == 'l' ? " (name the adapter as its model = ...)"
                                                       : "");
            return -1;
        }
        if (sv->kind == CTN_VNULL) continue; /* stop = null: none */
        if (ctn_val_set(b, body_fields[i].field, ctn_val_ref((ctn_val *)sv)) < 0) goto nomem;
    }
    static const char *const refused[] = {"grammar", "n"};
    for (size_t i = 0; i < 2; i++) {
        const ctn_val *sv = ctn_task_setting(t, refused[i]);
        if (sv == NULL || sv->kind == CTN_VNULL || (i == 1 && sv->kind == CTN_VINT && sv->u.i == 1))
            continue;
        ctn_val_unref(b);
        ctn_task_fail(t, CTN_ENOTSUP, "setting '%s' is not supported by catena.remote", refused[i]);
        return -1;
    }
    /* max_tokens: 256 when not given, as the local model node; -1 or null: the server's. */
    if (!ctn_settings_given(&set, CTN_SET_MAX_TOKENS))
        set.max_tokens = CTN_SETTINGS_DEFAULT_MAX_TOKENS;
    if (set.max_tokens >= 0 && ctn_val_set(b, "max_tokens", ctn_val_int(set.max_tokens)) < 0)
        goto nomem;
    if (ctn_val_set(b, "stream", ctn_val_bool(1)) < 0) goto nomem;
    ctn_val *so = ctn_val_obj();
    if (so == NULL || ctn_val_set(so, "include_usage", ctn_val_bool(1)) < 0) {
        ctn_val_unref(so);
        goto nomem;
    }
    if (ctn_val_set(b, "stream_options", so) < 0) goto nomem;
    *out = b;
    return 0;
nomem:
    ctn_val_unref(b);
    ctn_task_fail(t, CTN_ENOMEM, "out of memory");
    return -1;
}

/* ---- the node's operations --------------------------------------------------------------- */

static void remote_start(ctn_task *t, ctn_val *input) {
    const remote_ud *u = ctn_node_ud(ctn_task_node(t));
    const char *key = NULL;
    if (u->key_env != NULL) {
        key = getenv(u->key_env);
        if (key == NULL || *key == '\0') {
            ctn_task_fail(t, CTN_EINVAL,
                          "remote %s: the environment variable %s (api_key_env) "
                          "is not set",
                          u->url, u->key_env);
            return;
        }
    }
    ctn_val *body = NULL;
    size_t n_inputs = 0;
    if (make_body(t, u, input, &body, &n_inputs) < 0) return;
    char *json = ctn_val_to_json(body, 0);
    ctn_val_unref(body);
    uv_once(&curl_once, curl_init);
    rq *q = json != NULL ? ctn__calloc(1, sizeof *q) : NULL;
    if (q == NULL || curl_init_rc != CURLE_OK) {
        free(json);
        free(q);
        ctn_task_fail(t, q == NULL ? CTN_ENOMEM : CTN_EIO, "remote %s: %s", u->url,
                      q == NULL ? "out of memory" : "libcurl did not start");
        return;
    }
    q->t = t;
    q->u = u;
    q->loop = ctn_task_loop(t);
    q->body = json;
    q->n_inputs = n_inputs;
    q->prompt_tokens = q->completion_tokens = q->cached_tokens = -1;
    q->deadline = uv_hrtime() + (uint64_t)u->timeout_ms * 1000000u;
    uv_timer_init(ctn_task_loop(t), &q->timer);
    uv_timer_init(ctn_task_loop(t), &q->wait);
    q->timer.data = q->wait.data = q;
    q->handles = 2;
    q->multi = curl_multi_init();
    q->easy = curl_easy_init();
    ctn_sse_init(&q->events, (size_t)u->max_bytes);
    ctn_task_set_data(t, q);
    if (q->multi == NULL || q->easy == NULL) {
        rq_fail(q, CTN_ENOMEM, "out of memory");
        return;
    }
    curl_multi_setopt(q->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(q->multi, CURLMOPT_SOCKETDATA, q);
    curl_multi_setopt(q->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(q->multi, CURLMOPT_TIMERDATA, q);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h != NULL) q->hdrs = h;
    if (h != NULL) h = curl_slist_append(q->hdrs, "Expect:");
    if (h != NULL && u->kind != CTN_REMOTE_EMBEDDINGS)
        h = curl_slist_append(q->hdrs, "Accept: text/event-stream");
    if (h != NULL && key != NULL) {
        ctn_strbuf a = {0};
        ctn_sb_puts(&a, "Authorization: Bearer ");
        ctn_sb_puts(&a, key);
        h = a.oom ? NULL : curl_slist_append(q->hdrs, a.p);
        ctn_sb_free(&a);
    }
    if (h == NULL) {
        rq_fail(q, CTN_ENOMEM, "out of memory");
        return;
    }
    CURL *e = q->easy;
    curl_easy_setopt(e, CURLOPT_URL, u->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->hdrs);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(q->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, q);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->curl_err);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)u->max_bytes);
    /* A server that sends nothing for a while fails the request before its deadline: no byte
     * for the whole timeout (in seconds, at least 1) is a stalled connection. */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                     (long)(u->timeout_ms / 1000 > 0 ? u->timeout_ms / 1000 : 1));
    curl_easy_setopt(e, CURLOPT_USERAGENT, "catena");
    attempt(q);
}

static void remote_cancel(ctn_task *t) {
    rq *q = ctn_task_data(t);
    if (q == NULL) return;
    q->t = NULL;
    if (!q->in_curl) rq_close(q); /* else drive closes it once curl has returned */
}

static void remote_free(void *p) {
    remote_ud *u = p;
    free(u->url);
    free(u->base);
    free(u->model);
    free(u->key_env);
    free(u);
}

static char *remote_describe(const void *p) {
    const remote_ud *u = p;
    static const char *const kinds[] = {"chat", "completion", "embeddings"};
    char buf[600];
    snprintf(buf, sizeof buf, "%s %s at %s", kinds[u->kind], u->model, u->base);
    return ctn__strdup(buf);
}

static const ctn_node_ops remote_ops = {.kind = "remote",
                                        .start = remote_start,
                                        .cancel = remote_cancel,
                                        .free_ud = remote_free,
                                        .describe = remote_describe};

static const ctn_node_ops remote_embed_ops = {.kind = "remote_embeddings",
                                              .start = remote_start,
                                              .cancel = remote_cancel,
                                              .free_ud = remote_free,
                                              .describe = remote_describe};

/* The endpoint's URL from base_url, through libcurl's URL parser. */
static int endpoint_url(const char *base, ctn_remote_kind kind, char **out, char *err,
                        size_t errcap) {
    static const char *const tails[] = {"/chat/completions", "/completions", "/embeddings"};
    *out = NULL;
    uv_once(&curl_once, curl_init);
    CURLU *h = curl_url();
    if (h == NULL) return CTN_ENOMEM;
    char *scheme = NULL, *host = NULL, *path = NULL, *user = NULL, *query = NULL, *frag = NULL;
    int rc = 0;
    const CURLUcode uc = curl_url_set(h, CURLUPART_URL, base, 0);
    if (uc != CURLUE_OK) {
        ctn__errf(err, errcap, "base_url '%.200s' is not a URL (%s)", base, curl_url_strerror(uc));
        rc = CTN_EINVAL;
        goto out;
    }
    curl_url_get(h, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(h, CURLUPART_HOST, &host, 0);
    curl_url_get(h, CURLUPART_PATH, &path, 0);
    curl_url_get(h, CURLUPART_USER, &user, 0);
    curl_url_get(h, CURLUPART_QUERY, &query, 0);
    curl_url_get(h, CURLUPART_FRAGMENT, &frag, 0);
    if (scheme == NULL || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        ctn__errf(err, errcap, "base_url '%.200s': only http:// and https:// URLs are taken", base);
        rc = CTN_EINVAL;
    } else if (host == NULL || *host == '\0') {
        ctn__errf(err, errcap, "base_url '%.200s' has no host", base);
        rc = CTN_EINVAL;
    } else if (user != NULL) {
        ctn__errf(err, errcap, "base_url must not hold credentials: give the key with api_key_env");
        rc = CTN_EINVAL;
    } else if (query != NULL || frag != NULL) {
        ctn__errf(err, errcap, "base_url '%.200s' must not have a query or a fragment", base);
        rc = CTN_EINVAL;
    }
    if (rc < 0) goto out;
    ctn_strbuf p = {0};
    size_t pl = path != NULL ? strlen(path) : 0;
    while (pl > 0 && path[pl - 1] == '/')
        pl--;
    ctn_sb_put(&p, pl > 0 ? path : "/v1", pl > 0 ? pl : 3);
    ctn_sb_puts(&p, tails[kind]);
    char *np = ctn_sb_take(&p);
    char *full = NULL;
    if (np == NULL || curl_url_set(h, CURLUPART_PATH, np, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_URL, &full, 0) != CURLUE_OK) {
        rc = CTN_ENOMEM;
    } else {
        *out = ctn__strdup(full);
        if (*out == NULL) rc = CTN_ENOMEM;
    }
    free(np);
    curl_free(full);
out:
    curl_free(scheme), curl_free(host), curl_free(path), curl_free(user), curl_free(query),
        curl_free(frag);
    curl_url_cleanup(h);
    if (rc == CTN_ENOMEM) ctn__errf(err, errcap, "out of memory");
    return rc;
}

ctn_node *ctn_remote_node(const ctn_remote_opts *o, char *err, size_t errcap) {
    if (o->base_url == NULL) {
        ctn__errf(err, errcap, "base_url is needed (an http:// or https:// URL)");
        return NULL;
    }
    if (o->model == NULL || *o->model == '\0') {
        ctn__errf(err, errcap, "model is needed (the name the server knows the model by)");
        return NULL;
    }
    if (o->timeout_ms < 1 || o->timeout_ms > 86400000) {
        ctn__errf(err, errcap, "timeout_ms must be an integer from 1 to 86400000, not %" PRId64,
                  o->timeout_ms);
        return NULL;
    }
    if (o->max_retries < 0 || o->max_retries > CTN_REMOTE_MAX_RETRIES) {
        ctn__errf(err, errcap, "max_retries must be an integer from 0 to %d, not %d",
                  CTN_REMOTE_MAX_RETRIES, o->max_retries);
        return NULL;
    }
    if (o->max_response_bytes < 1 || o->max_response_bytes > ((int64_t)1 << 40)) {
        ctn__errf(err, errcap, "max_response_bytes must be from 1 byte to 1 TiB");
        return NULL;
    }
    if (!(o->backoff_ms >= 0 && o->backoff_ms <= 600000)) {
        ctn__errf(err, errcap, "backoff_ms must be from 0 to 600000");
        return NULL;
    }
    if (o->api_key_env != NULL) {
        const char *k = getenv(o->api_key_env);
        if (*o->api_key_env == '\0' || strchr(o->api_key_env, '=') != NULL) {
            ctn__errf(err, errcap, "api_key_env must name an environment variable");
            return NULL;
        }
        if (k == NULL || *k == '\0') {
            ctn__errf(err, errcap, "the environment variable %.100s (api_key_env) is not set",
                      o->api_key_env);
            return NULL;
        }
    }
    remote_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) {
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    if (endpoint_url(o->base_url, o->kind, &u->url, err, errcap) < 0) {
        remote_free(u);
        return NULL;
    }
    u->kind = o->kind;
    u->message = o->message;
    u->timeout_ms = o->timeout_ms;
    u->retries = o->max_retries;
    u->max_bytes = o->max_response_bytes;
    u->backoff_ms = o->backoff_ms;
    u->base = ctn__strdup(o->base_url);
    u->model = ctn__strdup(o->model);
    u->key_env = o->api_key_env != NULL ? ctn__strdup(o->api_key_env) : NULL;
    if (u->base == NULL || u->model == NULL || (o->api_key_env != NULL && u->key_env == NULL)) {
        remote_free(u);
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    ctn_node *n = ctn_node_custom(
        o->kind == CTN_REMOTE_EMBEDDINGS ? &remote_embed_ops : &remote_ops, u, NULL);
    if (n == NULL) {
        remote_free(u);
        ctn__errf(err, errcap, "out of memory");
    }
    return n;
}
