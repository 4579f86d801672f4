/*
 * `catena serve`: an OpenAI-compatible HTTP server for one model and its LoRA adapters, on
 * the libuv loop. Requests are framed by serve_http.c (http-parser), every generation and
 * embedding goes to the model's one shared engine (stdlib/lm.h), which batches all of them,
 * and responses are written as they come: whole JSON bodies, or Server-Sent Events in a
 * chunked body for stream = true.
 *
 * Routes: GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions,
 * POST /v1/embeddings, POST /tokenize, POST /detokenize, GET /metrics, and with
 * --allow-lora-loading POST /v1/load_lora_adapter and /v1/unload_lora_adapter. Errors have OpenAI's
 * shape {"error": {"message", "type", "param", "code"}} and the status that fits.
 *
 * Connections: keep-alive with pipelined requests answered in order; a client that sends
 * part of a request and stalls is answered 408 after --header-timeout seconds; an idle
 * keep-alive connection is closed after 30 s; a client that goes away cancels its
 * generation (its KV blocks return at once). At most --max-concurrency requests are held;
 * more get 503 with Retry-After. SIGINT / SIGTERM: stop accepting, let what runs finish
 * for up to --shutdown-timeout seconds, cancel the rest, exit.
 */
#define _POSIX_C_SOURCE 200809L

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include <lua.h>

#include "alloc.h"
#include "chain.h"
#include "chat.h"
#include "cli.h"
#include "commands.h"
#include "error.h"
#include "json.h"
#include "json_schema.h"
#include "l_catena.h"
#include "lm.h"
#include "serve_http.h"
#include "settings.h"
#include "str.h"
#include "tools.h"

enum { MAX_LORAS = 32, MAX_CHAINS = 32, IDLE_TIMEOUT_MS = 30000 };

typedef struct server server;
typedef struct conn conn;
typedef struct job job;

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening;
    uv_signal_t sigint, sigterm;
    uv_timer_t drain;
    ctn_lm *lm;
    const char *model_id; /* the name clients use */
    ctn_chat_family family;
    char *api_key;
    ctn_http_limits lim;
    int max_concurrency;
    double header_timeout_s, shutdown_timeout_s;
    char *lora_names[MAX_LORAS]; /* adapters clients may name (owned) */
    int n_loras;
    bool allow_lora_loading; /* /v1/load_lora_adapter and /v1/unload_lora_adapter */
    /* Chains served the LangServe way: a Lua state whose loop the server runs on. */
    lua_State *L;
    struct served {
        char *name;
        ctn_node *node;
    } chains[MAX_CHAINS];
    int n_chains;
    bool quiet;

    conn *conns;
    int n_jobs; /* requests held (generations and embeddings in flight) */
    bool stopping, stopped;
    time_t started;
    /* Counters for /metrics. */
    int64_t requests_total, requests_rejected, prompt_tokens, completion_tokens;
    int64_t status_count[6]; /* 1xx..5xx */
    uint64_t next_id;
    struct hist {
        int64_t count[16]; /* per bucket, the last one +Inf */
        int64_t n;
        double sum;
    } ttft, itl; /* time to first token, time between a request's tokens */
};

/* Upper bounds of the histograms' buckets, in seconds (then +Inf). */
static const double TTFT_LE[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double ITL_LE[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};

static void observe(struct hist *h, const double *le, int n_le, double v) {
    int b = 0;
    while (b < n_le && v > le[b])
        b++;
    h->count[b]++;
    h->n++;
    h->sum += v;
}

struct conn {
    uv_tcp_t tcp;
    server *s;
    conn *prev, *next;
    ctn_http_conn *http;
    uv_timer_t timer;
    int writes;       /* uv_write requests in flight */
    int handles;      /* handles not yet closed (the socket and the timer) */
    bool close_after; /* close once the writes are done */
    bool closing;
    bool keep_alive;  /* of the request being answered */
    bool chunked;     /* its body is chunked (SSE over HTTP/1.1) */
    job *job;         /* its work in flight, or NULL */
    char peer[64];
    /* For the access log line. */
    char method[12], path[96];
    double t0;
    int status;
    size_t bytes;
};

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct {
    uv_write_t req;
    conn *c;
    char *buf;
} wreq;

static void conn_close(conn *c);

static void on_written(uv_write_t *w, int status) {
    wreq *r = (wreq *)w;
    conn *c = r->c;
    free(r->buf);
    free(r);
    c->writes--;
    if (c->closing) return; /* cancelled by the close */
    if (status < 0) c->close_after = true;
    if (c->writes == 0 && c->close_after) conn_close(c);
}

/* Queues n bytes (copied) on the socket. */
static void put(conn *c, const char *data, size_t n) {
    if (c->closing || n == 0) return;
    wreq *r = ctn__malloc(sizeof *r);
    char *b = ctn__malloc(n);
    if (r == NULL || b == NULL) {
        free(r);
        free(b);
        c->close_after = true;
        if (c->writes == 0) conn_close(c);
        return;
    }
    memcpy(b, data, n);
    r->c = c;
    r->buf = b;
    uv_buf_t ub = uv_buf_init(b, (unsigned)n);
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written) < 0) {
        free(b);
        free(r);
        c->close_after = true;
        if (c->writes == 0) conn_close(c);
        return;
    }
    c->writes++;
    c->bytes += n;
}

static void head(conn *c, int status, const char *ctype, long long length, const char *extra) {
    char h[512];
    c->status = status;
    c->chunked = length < 0 && c->keep_alive;
    int n = snprintf(h, sizeof h, "HTTP/1.1 %d %s\r\nServer: catena\r\nContent-Type: %s\r\n", status,
                     ctn_http_reason(status), ctype);
    if (length >= 0) n += snprintf(h + n, sizeof h - (size_t)n, "Content-Length: %lld\r\n", length);
    else if (c->chunked) n += snprintf(h + n, sizeof h - (size_t)n, "Transfer-Encoding: chunked\r\n");
    if (length < 0) n += snprintf(h + n, sizeof h - (size_t)n, "Cache-Control: no-cache\r\n");
    n += snprintf(h + n, sizeof h - (size_t)n, "Connection: %s\r\n%s\r\n",
                  c->keep_alive ? "keep-alive" : "close", extra ? extra : "");
    put(c, h, (size_t)n);
}

/* One piece of a streamed body (a chunk when chunked). */
static void body_piece(conn *c, const char *s, size_t n) {
    if (!c->chunked) {
        put(c, s, n);
        return;
    }
    ctn_strbuf b = {0};
    char len[24];
    snprintf(len, sizeof len, "%zx\r\n", n);
    ctn_sb_puts(&b, len);
    ctn_sb_put(&b, s, n);
    ctn_sb_puts(&b, "\r\n");
    if (!b.oom) put(c, b.p, b.len);
    ctn_sb_free(&b);
}

static void log_request(conn *c) {
    server *s = c->s;
    s->requests_total++;
    if (c->status >= 100 && c->status < 600) s->status_count[c->status / 100]++;
    if (s->quiet) return;
    fprintf(stderr, "serve: %s %s %s %d %zu B %.3f s\n", c->peer, c->method, c->path, c->status,
            c->bytes, ctn__cli_now_s() - c->t0);
}

static void arm_idle(conn *c);

/* The response is complete: log it, then the next request or the close. */
static void finish(conn *c) {
    if (c->chunked) put(c, "0\r\n\r\n", 5);
    log_request(c);
    c->chunked = false;
    if (!c->keep_alive || c->s->stopping) {
        c->close_after = true;
        if (c->writes == 0) conn_close(c);
        return;
    }
    const int rc = ctn_http_resume(c->http);
    if (rc != 0 && !c->closing) {
        /* A pipelined request that is bad: answered by the read path's rules. */
        c->close_after = true;
        if (c->writes == 0) conn_close(c);
        return;
    }
    if (!ctn_http_busy(c->http)) arm_idle(c);
}

static void send_json(conn *c, int status, cJSON *j, const char *extra) {
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (text == NULL) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                                  "\"param\":null,\"code\":null}}";
        head(c, 500, "application/json", (long long)strlen(oom), NULL);
        put(c, oom, strlen(oom));
    } else {
        head(c, status, "application/json", (long long)strlen(text), extra);
        put(c, text, strlen(text));
        free(text);
    }
    finish(c);
}

static cJSON *error_obj(const char *message, const char *type, const char *param,
                        const char *code) {
    cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    cJSON_AddItemToObject(o, "error", e);
    return o;
}

static void send_error(conn *c, int status, const char *param, const char *code, const char *fmt,
                       ...) __attribute__((format(printf, 5, 6)));
static void send_error(conn *c, int status, const char *param, const char *code, const char *fmt,
                       ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = status == 401   ? "authentication_error"
                       : status == 404 ? "not_found_error"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    send_json(c, status, error_obj(msg, type, param, code),
              status == 503 ? "Retry-After: 1\r\n" : NULL);
}

/* ---- connections -------------------------------------------------------------------------- */

static void job_detach(job *j);

static void stop_now(server *s);

static void on_closed(uv_handle_t *h) {
    conn *c = h->data;
    if (--c->handles > 0) return;
    ctn_http_free(c->http);
    free(c);
}

static void conn_close(conn *c) {
    if (c->closing) return;
    c->closing = true;
    server *s = c->s;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->job != NULL) job_detach(c->job); /* the client went: its work is cancelled */
    c->job = NULL;
    /* Two handles close; the memory goes with the second. */
    c->handles = 2;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    /* Shutting down and nothing left: the loop may end. */
    if (s->stopping && s->conns == NULL) stop_now(s);
}

static void on_timer(uv_timer_t *t) {
    conn *c = t->data;
    if (c->closing || c->job != NULL || ctn_http_busy(c->http)) return;
    if (ctn_http_partial(c->http)) {
        /* Part of a request and then nothing: a slow client does not hold the connection. */
        c->keep_alive = false;
        snprintf(c->method, sizeof c->method, "-");
        snprintf(c->path, sizeof c->path, "-");
        c->t0 = ctn__cli_now_s();
        c->bytes = 0;
        send_error(c, 408, NULL, NULL, "the request did not come within %.0f s",
                   c->s->header_timeout_s);
        return;
    }
    conn_close(c);
}

static void arm_idle(conn *c) {
    if (c->closing) return;
    const double ms = ctn_http_partial(c->http) ? c->s->header_timeout_s * 1000 : IDLE_TIMEOUT_MS;
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t want, uv_buf_t *buf) {
    (void)h;
    (void)want;
    static char slab[65536];
    *buf = uv_buf_init(slab, sizeof slab);
}

static void route(conn *c, const ctn_http_req *r);

static void on_request(void *ud, const ctn_http_req *r) {
    conn *c = ud;
    uv_timer_stop(&c->timer);
    c->keep_alive = r->keep_alive;
    c->t0 = ctn__cli_now_s();
    c->bytes = 0;
    c->status = 0;
    snprintf(c->method, sizeof c->method, "%s", r->method);
    snprintf(c->path, sizeof c->path, "%s", r->path);
    route(c, r);
}

/* A request the framing refused: answered, then the connection closes. */
static void refuse(conn *c, int rc) {
    c->keep_alive = false;
    snprintf(c->method, sizeof c->method, "-");
    snprintf(c->path, sizeof c->path, "-");
    c->t0 = ctn__cli_now_s();
    c->bytes = 0;
    if (rc < 0) send_error(c, 500, NULL, NULL, "out of memory");
    else send_error(c, rc, NULL, NULL, "%s", ctn_http_error(c->http));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    conn *c = st->data;
    if (c->closing) return;
    if (n < 0) { /* EOF or an error: the client is gone (its work is cancelled) */
        conn_close(c);
        return;
    }
    if (n == 0) return;
    if (c->close_after) return; /* answering a refused request: the rest is not read */
    const int rc = ctn_http_feed(c->http, buf->base, (size_t)n);
    if (rc != 0) {
        if (c->job != NULL || ctn_http_busy(c->http)) {
            /* A bad request pipelined behind one being answered: close after it. */
            c->keep_alive = false;
            return;
        }
        refuse(c, rc);
        return;
    }
    if (!c->closing && !ctn_http_busy(c->http)) arm_idle(c);
}

static void on_connection(uv_stream_t *l, int status) {
    server *s = l->data;
    if (status < 0 || s->stopping) return;
    conn *c = ctn__calloc(1, sizeof *c);
    if (c == NULL) return;
    c->s = s;
    c->http = ctn_http_new(&s->lim, on_request, c);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    if (c->http == NULL || uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(c->peer, sizeof c->peer, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        char ip[48] = "";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    arm_idle(c);
}

/* ---- jobs: generations and embeddings ------------------------------------------------------ */

enum { JOB_COMPLETION, JOB_CHAT, JOB_EMBED, JOB_CHAIN };
enum { CH_INVOKE, CH_BATCH, CH_STREAM, CH_EVENTS };

struct job {
    server *s;
    conn *c; /* NULL once the client is gone */
    int kind;
    bool stream, include_usage, sent_role;
    bool tools; /* decoded under a tools grammar (tools.h): replies are tool calls or answers */
    char id[48];
    long long created;
    char model[128];
    double t0; /* when it was submitted */
    /* Generations: n choices. With n > 1 the prompt is computed once, by a prompt-only
     * request on a new engine session (part 0), which is forked n ways (parts 1..n); with
     * n = 1 part 1 is the one request. */
    int n;
    struct choice {
        job *j;
        int index; /* -1: the prefill */
        uint64_t handle;
        bool live, sent_role;
        double t_last; /* when its last piece came (0: none yet) */
        char *text;
        ctn_finish finish;
        int64_t completion_tokens;
        cJSON *lp;       /* logprobs not yet sent (streams) or all of them (the route's shape) */
        size_t lp_chars; /* completions' text_offset: characters of the tokens so far */
    } *ch;
    bool logprobs; /* the request asked for them */
    int pending;
    int64_t prompt_tokens, cached_tokens;
    /* Chains: the runs (one, or one per input of a batch), their outputs. */
    int mode;
    size_t n_runs, runs_done;
    ctn_run **runs;
    ctn_val **outs;
    struct runref {
        job *j;
        size_t i;
    } *refs; /* each run's callbacks' ud */
    const struct served *chain;
    int64_t *parent; /* stream_events: each span's parent, as their starts came */
    size_t n_parent, cap_parent;
    bool detaching;
    int err_status;
    /* Embeddings: one handle per input, the vectors, the base64 flag and the token count. */
    size_t n_inputs, n_done;
    uint64_t *handles;
    float **vecs;
    int dim;
    bool base64;
    int64_t tokens;
    int err;
    char errmsg[256];
};

static void job_free(job *j) {
    for (size_t i = 0; j->runs != NULL && i < j->n_runs; i++) {
        ctn_run_free(j->runs[i]);
        ctn_val_unref(j->outs[i]);
    }
    free(j->runs);
    free(j->outs);
    free(j->refs);
    free(j->parent);
    for (int i = 0; j->ch != NULL && i <= j->n; i++) {
        free(j->ch[i].text);
        cJSON_Delete(j->ch[i].lp);
    }
    free(j->ch);
    for (size_t i = 0; j->vecs != NULL && i < j->n_inputs; i++)
        free(j->vecs[i]);
    free(j->vecs);
    free(j->handles);
    free(j);
}

/* The client went: the engine's work for it is cancelled; the job frees itself at its end. */
static void job_end(job *j);

static void job_detach(job *j) {
    j->c = NULL;
    if (j->kind == JOB_CHAIN) {
        /* Each cancel ends its run from inside the call (ctn_run_cancel): the job is freed
         * once the loop is over. */
        j->detaching = true;
        for (size_t i = 0; i < j->n_runs; i++)
            if (j->runs[i] != NULL && !ctn_run_ended(j->runs[i])) ctn_run_cancel(j->runs[i]);
        j->detaching = false;
        if (j->runs_done == j->n_runs) job_end(j);
        return;
    }
    if (j->kind == JOB_EMBED) {
        for (size_t i = 0; i < j->n_inputs; i++)
            if (j->handles[i] != 0) ctn_lm_cancel(j->s->lm, j->handles[i]);
    } else {
        for (int i = 0; i <= j->n; i++)
            if (j->ch[i].live) ctn_lm_cancel(j->s->lm, j->ch[i].handle);
    }
}

static void job_end(job *j) {
    j->s->n_jobs--;
    if (j->c != NULL) j->c->job = NULL;
    job_free(j);
}

static void sse(conn *c, cJSON *j) {
    char *t = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (t == NULL) return;
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "data: ");
    ctn_sb_puts(&b, t);
    ctn_sb_puts(&b, "\n\n");
    free(t);
    if (!b.oom) body_piece(c, b.p, b.len);
    ctn_sb_free(&b);
}

static cJSON *chunk_base(const job *j) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object",
                            j->kind == JOB_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->model);
    return o;
}

/* ---- logprobs ----------------------------------------------------------------------------- */

/* An empty logprobs value: chat's content array, or the completions' parallel lists. */
static cJSON *lp_new(int kind) {
    if (kind == JOB_CHAT) return cJSON_CreateArray();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON_AddArrayToObject(o, "text_offset");
    return o;
}

/* Chat's {token, logprob, bytes}: the token's text (valid UTF-8) and its own bytes. */
static cJSON *lp_item(const ctn_lm_logprob *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "token", t->text);
    cJSON_AddNumberToObject(o, "logprob", t->logprob);
    cJSON *b = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; i < t->n_bytes; i++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)t->bytes[i]));
    return o;
}

/* One generated token's logprobs (bridge, loop thread), kept in the choice's shape until its
 * chunk or the response takes them. */
static void gen_logprobs(void *ud, const ctn_lm_token_logprobs *t) {
    struct choice *cc = ud;
    if (cc->index < 0) return;
    if (cc->lp == NULL && (cc->lp = lp_new(cc->j->kind)) == NULL) return;
    if (cc->j->kind == JOB_CHAT) {
        cJSON *e = lp_item(&t->token), *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int i = 0; i < t->n_top; i++)
            cJSON_AddItemToArray(top, lp_item(&t->top[i]));
        cJSON_AddItemToArray(cc->lp, e);
        return;
    }
    /* The legacy shape: per token its text, value, {text: value} of the alternatives and the
     * sampled token (up to logprobs + 1 of them; a text two ids share is listed once, with
     * the more likely), and the offset of its text in characters. */
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(cc->lp, "tokens"),
                         cJSON_CreateString(t->token.text));
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(cc->lp, "token_logprobs"),
                         cJSON_CreateNumber(t->token.logprob));
    cJSON *top = cJSON_CreateObject();
    for (int i = 0; i <= t->n_top; i++) {
        const ctn_lm_logprob *a = i < t->n_top ? &t->top[i] : &t->token;
        if (!cJSON_HasObjectItem(top, a->text)) cJSON_AddNumberToObject(top, a->text, a->logprob);
    }
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(cc->lp, "top_logprobs"), top);
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(cc->lp, "text_offset"),
                         cJSON_CreateNumber((double)cc->lp_chars));
    for (const char *p = t->token.text; *p; p++)
        cc->lp_chars += ((unsigned char)*p & 0xC0) != 0x80;
}

/* The choice's logprobs field: null when not asked for (or, in a stream, when no token came
 * since the last chunk); else what came, which moves into ch. */
static void add_logprobs(cJSON *ch, const job *j, struct choice *cc) {
    if (!j->logprobs || (j->stream && cc->lp == NULL)) {
        cJSON_AddNullToObject(ch, "logprobs");
        return;
    }
    cJSON *lp = cc->lp != NULL ? cc->lp : lp_new(j->kind);
    cc->lp = NULL;
    if (j->kind == JOB_CHAT) {
        cJSON *o = cJSON_AddObjectToObject(ch, "logprobs");
        cJSON_AddItemToObject(o, "content", lp);
    } else {
        cJSON_AddItemToObject(ch, "logprobs", lp);
    }
}

/* One streamed choice: a delta (chat) or text (completions); finish NULL while it runs. */
static void stream_choice(job *j, struct choice *cc, const char *text, size_t n,
                          const char *finish) {
    cJSON *o = chunk_base(j), *arr = cJSON_AddArrayToObject(o, "choices"), *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", cc->index);
    char *t = ctn__strndup(text != NULL ? text : "", n);
    if (j->kind == JOB_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (!cc->sent_role) {
            cJSON_AddStringToObject(d, "role", "assistant");
            cc->sent_role = true;
        }
        if (text != NULL && t != NULL) cJSON_AddStringToObject(d, "content", t);
    } else {
        cJSON_AddStringToObject(ch, "text", t != NULL ? t : "");
    }
    free(t);
    add_logprobs(ch, j, cc);
    if (finish) cJSON_AddStringToObject(ch, "finish_reason", finish);
    else cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(arr, ch);
    sse(j->c, o);
}

static cJSON *usage_obj(int64_t prompt, int64_t completion, int64_t cached) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
    if (cached >= 0) {
        cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
        cJSON_AddNumberToObject(d, "cached_tokens", (double)cached);
    }
    return u;
}

static void gen_text(void *ud, const char *piece, size_t len) {
    struct choice *cc = ud;
    job *j = cc->j;
    /* One piece per token (whole characters): the latency histograms. */
    const double now = ctn__cli_now_s();
    if (cc->t_last == 0)
        observe(&j->s->ttft, TTFT_LE, (int)(sizeof TTFT_LE / sizeof TTFT_LE[0]), now - j->t0);
    else
        observe(&j->s->itl, ITL_LE, (int)(sizeof ITL_LE / sizeof ITL_LE[0]), now - cc->t_last);
    cc->t_last = now;
    if (j->c == NULL || !j->stream || cc->index < 0 || j->tools) return;
    stream_choice(j, cc, piece, len, NULL);
}

static const char *finish_reason(ctn_finish f) {
    return f == CTN_FINISH_LENGTH ? "length" : "stop";
}

/*
 * A reply decoded under a tools grammar into OpenAI's message fields on m (a message, or a
 * stream's delta with each call's index): tool_calls with content null, or the answer as
 * content: REPLY_CALLS or REPLY_ANSWER; REPLY_NONE when the text is not such a reply
 * (max_tokens cut it), and then nothing is set.
 */
enum { REPLY_NONE, REPLY_ANSWER, REPLY_CALLS };
static int tool_reply(const job *j, const struct choice *cc, cJSON *m, bool delta) {
    const char *text = cc->text != NULL ? cc->text : "";
    cJSON *r = cJSON_Parse(text);
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(r, "tool_calls");
    const cJSON *answer = cJSON_GetObjectItemCaseSensitive(r, "response");
    if (!cJSON_IsArray(calls) && !cJSON_IsString(answer)) {
        cJSON_Delete(r);
        return REPLY_NONE;
    }
    if (cJSON_IsString(answer)) {
        cJSON_AddStringToObject(m, "content", answer->valuestring);
        cJSON_Delete(r);
        return REPLY_ANSWER;
    }
    if (!delta) cJSON_AddNullToObject(m, "content");
    cJSON *out = cJSON_AddArrayToObject(m, "tool_calls");
    const cJSON *call;
    int k = 0;
    cJSON_ArrayForEach(call, calls) {
        cJSON *o = cJSON_CreateObject(), *f;
        char id[96];
        snprintf(id, sizeof id, "call_%s_%d_%d", j->id, cc->index, k);
        if (delta) cJSON_AddNumberToObject(o, "index", k);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "type", "function");
        f = cJSON_AddObjectToObject(o, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(call, "name");
        cJSON_AddStringToObject(f, "name", cJSON_IsString(nm) ? nm->valuestring : "");
        char *args = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(call, "arguments"));
        cJSON_AddStringToObject(f, "arguments", args != NULL ? args : "{}");
        cJSON_free(args);
        cJSON_AddItemToArray(out, o);
        k++;
    }
    cJSON_Delete(r);
    return REPLY_CALLS;
}

static const char *choice_finish(const struct choice *cc, int reply) {
    return reply == REPLY_CALLS ? "tool_calls" : finish_reason(cc->finish);
}

/* Every part has ended: the response (or the end of the stream). */
static void gen_finish(job *j) {
    conn *c = j->c;
    server *s = j->s;
    int64_t completion = 0;
    for (int i = 1; i <= j->n; i++)
        completion += j->ch[i].completion_tokens;
    s->prompt_tokens += j->prompt_tokens;
    s->completion_tokens += completion;
    if (c == NULL) {
        job_end(j);
        return;
    }
    if (j->stream) {
        if (j->err != 0) {
            sse(c, error_obj(j->errmsg, "server_error", NULL, NULL));
        } else if (j->include_usage) {
            cJSON *o = chunk_base(j);
            cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToObject(o, "usage", usage_obj(j->prompt_tokens, completion,
                                                        j->cached_tokens));
            sse(c, o);
        }
        body_piece(c, "data: [DONE]\n\n", 14);
        job_end(j);
        finish(c);
        return;
    }
    if (j->err != 0) {
        char m[256];
        snprintf(m, sizeof m, "%s", j->errmsg);
        const int st = j->err == CTN_ECANCELED ? 503 : j->err == CTN_EINVAL ? 400 : 500;
        job_end(j);
        send_error(c, st, NULL, NULL, "%s", m);
        return;
    }
    cJSON *o = cJSON_CreateObject(), *arr;
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", j->kind == JOB_CHAT ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->model);
    arr = cJSON_AddArrayToObject(o, "choices");
    for (int i = 1; i <= j->n; i++) {
        struct choice *cc = &j->ch[i];
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", cc->index);
        int reply = REPLY_NONE;
        if (j->kind == JOB_CHAT) {
            cJSON *m = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            if (j->tools) reply = tool_reply(j, cc, m, false);
            if (reply == REPLY_NONE)
                cJSON_AddStringToObject(m, "content", cc->text != NULL ? cc->text : "");
        } else {
            cJSON_AddStringToObject(ch, "text", cc->text != NULL ? cc->text : "");
        }
        add_logprobs(ch, j, cc);
        cJSON_AddStringToObject(ch, "finish_reason", choice_finish(cc, reply));
        cJSON_AddItemToArray(arr, ch);
    }
    cJSON_AddItemToObject(o, "usage", usage_obj(j->prompt_tokens, completion, j->cached_tokens));
    job_end(j);
    send_json(c, 200, o, NULL);
}

static void gen_done(void *ud, const ctn_lm_result *r) {
    struct choice *cc = ud;
    job *j = cc->j;
    cc->live = false;
    const bool failed = r->finish == CTN_FINISH_ERROR || r->finish == CTN_FINISH_CANCELLED;
    if (failed && j->err == 0) {
        j->err = r->finish == CTN_FINISH_CANCELLED ? CTN_ECANCELED : r->error < 0 ? r->error : CTN_ECHAIN;
        snprintf(j->errmsg, sizeof j->errmsg, "%s",
                 r->finish == CTN_FINISH_CANCELLED ? "the generation was cancelled" : r->message);
        for (int i = 0; i <= j->n; i++) /* the other choices are of no use now */
            if (j->ch[i].live) ctn_lm_cancel(j->s->lm, j->ch[i].handle);
    }
    if (!failed) {
        if (cc->index < 0 || j->n == 1) { /* the prompt's counts: the prefill's, or the one request's */
            j->prompt_tokens = r->prompt_tokens;
            j->cached_tokens = r->cached_tokens;
        }
        if (cc->index >= 0) {
            cc->finish = r->finish;
            cc->completion_tokens = r->completion_tokens;
            cc->text = ctn__strndup(r->text, r->text_len);
            if (j->c != NULL && j->stream && j->err == 0) {
                int reply = REPLY_NONE;
                if (j->tools) { /* the reply whole, in one delta, as it could not stream */
                    cJSON *o = chunk_base(j), *arr = cJSON_AddArrayToObject(o, "choices");
                    cJSON *ch = cJSON_CreateObject(), *d;
                    cJSON_AddNumberToObject(ch, "index", cc->index);
                    d = cJSON_AddObjectToObject(ch, "delta");
                    cJSON_AddStringToObject(d, "role", "assistant");
                    cc->sent_role = true;
                    reply = tool_reply(j, cc, d, true);
                    if (reply == REPLY_NONE) cJSON_AddStringToObject(d, "content", cc->text != NULL ? cc->text : "");
                    add_logprobs(ch, j, cc);
                    cJSON_AddNullToObject(ch, "finish_reason");
                    cJSON_AddItemToArray(arr, ch);
                    sse(j->c, o);
                }
                stream_choice(j, cc, NULL, 0, choice_finish(cc, reply));
            }
        }
    }
    if (--j->pending == 0) gen_finish(j);
}

/* ---- request bodies ----------------------------------------------------------------------- */

/* The body as a JSON object, or NULL after answering 400. */
static cJSON *parse_body(conn *c, const ctn_http_req *r) {
    const char *end = NULL, *nul = memchr(r->body, 0, r->body_len);
    if (nul != NULL) {
        send_error(c, 400, NULL, NULL, "the body holds a NUL byte (at byte %ld): it is not JSON text",
                   (long)(nul - r->body));
        return NULL;
    }
    int rc = 0;
    /* Strict: only white space may follow the value. */
    cJSON *j = ctn__json_parse(r->body, r->body_len, true, &end, &rc);
    if (j == NULL) {
        const long at = end != NULL ? (long)(end - r->body) : 0;
        if (rc == CTN_ENOMEM)
            send_error(c, 503, NULL, NULL, "out of memory reading the body");
        else
            send_error(c, 400, NULL, NULL,
                       r->body_len == 0 ? "the request has no body (a JSON object is expected)"
                                        : "the body is not valid JSON (near byte %ld)",
                       at);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        send_error(c, 400, NULL, NULL, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* The model the request names (NULL: the base), or false after answering 404 / 400. */
static bool pick_model(conn *c, cJSON *body, const char **lora, char *name, size_t cap) {
    server *s = c->s;
    *lora = NULL;
    snprintf(name, cap, "%s", s->model_id);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(body, "model");
    if (m == NULL || cJSON_IsNull(m)) return true;
    if (!cJSON_IsString(m)) {
        send_error(c, 400, "model", NULL, "'model' must be a string");
        return false;
    }
    if (strcmp(m->valuestring, s->model_id) == 0) return true;
    for (int i = 0; i < s->n_loras; i++)
        if (strcmp(m->valuestring, s->lora_names[i]) == 0) {
            *lora = s->lora_names[i];
            snprintf(name, cap, "%s", s->lora_names[i]);
            return true;
        }
    send_error(c, 404, "model", "model_not_found", "The model '%s' does not exist (served: %s%s)",
               m->valuestring, s->model_id, s->n_loras > 0 ? " and its adapters" : "");
    return false;
}

/* x is an integer from lo to hi. */
static bool int_in(const cJSON *x, int lo, int hi) {
    return cJSON_IsNumber(x) && x->valuedouble >= lo && x->valuedouble <= hi &&
           x->valuedouble == (int)x->valuedouble;
}

/*
 * Log-probabilities: chat's boolean logprobs with top_logprobs (0 to 20; above 0 only with
 * logprobs true, as OpenAI and vLLM check), the legacy completions' integer logprobs (the
 * alternatives per token: 0 to 20, vLLM's default max_logprobs; OpenAI's own stops at 5).
 * false after answering 400 naming the field.
 */
static bool read_logprobs(conn *c, cJSON *body, ctn_lm_request *r, bool chat) {
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(body, "logprobs");
    const cJSON *top = cJSON_GetObjectItemCaseSensitive(body, "top_logprobs");
    const bool has_lp = lp != NULL && !cJSON_IsNull(lp),
               has_top = top != NULL && !cJSON_IsNull(top);
    if (!chat) {
        if (has_top) {
            send_error(c, 400, "top_logprobs", NULL,
                       "'top_logprobs' is a chat field: /v1/completions takes 'logprobs': N");
            return false;
        }
        if (has_lp && !cJSON_IsFalse(lp) && !int_in(lp, 0, CTN_GEN_MAX_TOP_LOGPROBS)) {
            send_error(c, 400, "logprobs", NULL,
                       "'logprobs' must be an integer from 0 to %d (alternatives per token)",
                       CTN_GEN_MAX_TOP_LOGPROBS);
            return false;
        }
        r->logprobs = has_lp && !cJSON_IsFalse(lp);
        r->top_logprobs = r->logprobs ? (int)lp->valuedouble : 0;
        return true;
    }
    if (has_lp && !cJSON_IsBool(lp)) {
        send_error(c, 400, "logprobs", NULL, "'logprobs' must be a boolean");
        return false;
    }
    r->logprobs = cJSON_IsTrue(lp);
    if (has_top && !int_in(top, 0, CTN_GEN_MAX_TOP_LOGPROBS)) {
        send_error(c, 400, "top_logprobs", NULL, "'top_logprobs' must be an integer from 0 to %d",
                   CTN_GEN_MAX_TOP_LOGPROBS);
        return false;
    }
    if (has_top && top->valuedouble > 0 && !r->logprobs) {
        send_error(c, 400, "top_logprobs", NULL, "'top_logprobs' needs 'logprobs' to be true");
        return false;
    }
    r->top_logprobs = has_top ? (int)top->valuedouble : 0;
    return true;
}

/*
 * The sampling fields of an OpenAI request into r->set through the one settings validator:
 * OpenAI's defaults first (temperature 1, top_p 1, no top_k or min_p), then the request's.
 * Fields that would change the answer and are not served are refused by name. false after
 * answering 400.
 */
static bool read_settings(conn *c, cJSON *body, ctn_lm_request *r, bool chat) {
    static const char *const unsupported[] = {"echo", "best_of", "suffix", "functions",
                                              "function_call", "logit_bias"};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(body, unsupported[i]);
        if (x == NULL || cJSON_IsNull(x) || cJSON_IsFalse(x)) continue;
        if (cJSON_IsObject(x) && x->child == NULL) continue; /* logit_bias {} */
        if (cJSON_IsArray(x) && x->child == NULL) continue;  /* tools [] */
        if (!strcmp(unsupported[i], "best_of") && cJSON_IsNumber(x) && x->valuedouble == 1) continue;
        send_error(c, 400, unsupported[i], "unsupported_parameter",
                   "'%s' is not supported by catena serve yet", unsupported[i]);
        return false;
    }
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(body, "n");
    if (n != NULL && !cJSON_IsNull(n) &&
        !(cJSON_IsNumber(n) && n->valuedouble >= 1 && n->valuedouble <= 16 &&
          n->valuedouble == (int)n->valuedouble)) {
        send_error(c, 400, "n", NULL, "'n' must be an integer from 1 to 16");
        return false;
    }
    ctn_settings_init(&r->set);
    r->set.max_tokens = chat ? -1 : 16; /* OpenAI's: the context for chat, 16 for completions */
    r->set.sampling.temp = 1.0f;
    r->set.sampling.top_p = 1.0f;
    r->set.sampling.top_k = 0;
    r->set.sampling.min_p = 0;
    static const struct {
        const char *field, *key;
    } map[] = {{"temperature", "temperature"},
               {"top_p", "top_p"},
               {"seed", "seed"},
               {"stop", "stop"},
               {"max_tokens", "max_tokens"},
               {"max_completion_tokens", "max_tokens"},
               {"presence_penalty", "presence_penalty"},
               {"frequency_penalty", "frequency_penalty"},
               /* vLLM's extra sampling fields */
               {"top_k", "top_k"},
               {"min_p", "min_p"},
               {"repetition_penalty", "repeat_penalty"},
               {"ignore_eos", "ignore_eos"},
               /* llama.cpp's server: a GBNF grammar */
               {"grammar", "grammar"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(body, map[i].field);
        if (x == NULL || cJSON_IsNull(x)) continue;
        if (!strcmp(map[i].key, "top_k") && cJSON_IsNumber(x) && x->valuedouble == -1) continue;
        char err[256];
        if (ctn_settings_set_json(&r->set, map[i].key, x, err, sizeof err) < 0) {
            send_error(c, 400, map[i].field, NULL, "'%s': %s", map[i].field, err);
            return false;
        }
    }
    return read_logprobs(c, body, r, chat);
}

static int n_of(cJSON *body) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(body, "n");
    return cJSON_IsNumber(n) ? (int)n->valuedouble : 1;
}

static bool flag(cJSON *body, const char *k) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, k));
}

static job *new_job(conn *c, int kind, const char *model, cJSON *body) {
    job *j = ctn__calloc(1, sizeof *j);
    if (j == NULL) return NULL;
    j->s = c->s;
    j->c = c;
    j->kind = kind;
    j->created = (long long)time(NULL);
    j->t0 = ctn__cli_now_s();
    snprintf(j->model, sizeof j->model, "%s", model);
    snprintf(j->id, sizeof j->id, "%s-%016" PRIx64,
             kind == JOB_CHAT ? "chatcmpl" : kind == JOB_COMPLETION ? "cmpl" : "emb",
             ++c->s->next_id ^ ((uint64_t)j->created << 20));
    if (body != NULL) {
        j->stream = flag(body, "stream");
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
        j->include_usage = so != NULL && flag((cJSON *)so, "include_usage");
    }
    return j;
}

/*
 * Submits the n choices of request r for the connection's request; answers the errors.
 * n > 1: the prompt fills a new engine session once (a prompt-only request), forks of it
 * take choice i with seed + i, as the model node's n does (stdlib/components.c).
 */
static void start_generation(conn *c, job *j, ctn_lm_request *r, int n) {
    server *s = c->s;
    char err[512] = "";
    const ctn_lm_callbacks cb = {gen_text, gen_done};
    j->n = n;
    j->logprobs = r->logprobs;
    r->on_logprobs = gen_logprobs;
    j->ch = ctn__calloc((size_t)n + 1, sizeof *j->ch);
    if (j->ch == NULL) {
        job_free(j);
        send_error(c, 500, NULL, NULL, "out of memory");
        return;
    }
    for (int i = 0; i <= n; i++)
        j->ch[i] = (struct choice){.j = j, .index = i - 1};
    int rc;
    if (n == 1) {
        rc = ctn_lm_generate(s->lm, r, &cb, &j->ch[1], &j->ch[1].handle, err, sizeof err);
        if (rc == 0) j->ch[1].live = true, j->pending = 1;
    } else {
        const int64_t sid = ctn_lm_session_new(s->lm);
        rc = sid < 0 ? (int)sid : 0;
        if (rc < 0) snprintf(err, sizeof err, "cannot make an engine session");
        ctn_lm_request pre = *r;
        pre.session = NULL;
        pre.session_id = sid;
        pre.set.max_tokens = 0;
        if (rc == 0)
            rc = ctn_lm_generate(s->lm, &pre, &cb, &j->ch[0], &j->ch[0].handle, err, sizeof err);
        if (rc == 0) j->ch[0].live = true, j->pending = 1;
        int64_t kids[64];
        const int frc = rc == 0 ? ctn_lm_session_fork(s->lm, sid, n, kids) : -1;
        if (sid > 0) ctn_lm_session_close(s->lm, sid);
        if (rc == 0 && frc < 0) {
            rc = frc;
            snprintf(err, sizeof err, "cannot fork the engine session");
            ctn_lm_cancel(s->lm, j->ch[0].handle);
        }
        for (int i = 0; rc == 0 && i < n; i++) {
            ctn_lm_request k = *r;
            k.prompt = NULL;
            k.prompt_len = 0;
            k.ids = NULL;
            k.n_ids = 0;
            k.session = NULL;
            k.session_id = kids[i];
            k.set.sampling.seed = r->set.sampling.seed + (uint64_t)i;
            rc = ctn_lm_generate(s->lm, &k, &cb, &j->ch[i + 1], &j->ch[i + 1].handle, err,
                                 sizeof err);
            if (rc == 0) j->ch[i + 1].live = true, j->pending++;
            else for (int m = i; m < n; m++) ctn_lm_session_close(s->lm, kids[m]);
            if (rc == 0) ctn_lm_session_close(s->lm, kids[i]); /* once its request has ended */
        }
        if (rc < 0 && j->pending > 0) {
            /* What was submitted is cancelled; its ends answer the request. */
            j->err = rc;
            snprintf(j->errmsg, sizeof j->errmsg, "%s", err);
            for (int i = 0; i <= n; i++)
                if (j->ch[i].live) ctn_lm_cancel(s->lm, j->ch[i].handle);
            s->n_jobs++;
            c->job = j;
            if (j->stream) head(c, 200, "text/event-stream", -1, NULL);
            return;
        }
    }
    if (rc < 0) {
        job_free(j);
        send_error(c, rc == CTN_ENOMEM ? 503 : 400, NULL, NULL, "%s", err);
        return;
    }
    s->n_jobs++;
    c->job = j;
    if (j->stream) head(c, 200, "text/event-stream", -1, NULL);
}

static bool room(conn *c) {
    if (c->s->n_jobs < c->s->max_concurrency) return true;
    c->s->requests_rejected++;
    send_error(c, 503, NULL, NULL, "the server holds %d requests already; retry later",
               c->s->max_concurrency);
    return false;
}

/* Frees what structured() made. */
struct structured {
    char *gbnf;   /* the grammar the reply is decoded under, or NULL */
    char *system; /* the tools' system text, or NULL */
    bool tools;
};

static void structured_free(struct structured *st) {
    free(st->gbnf);
    free(st->system);
}

/* A copy of cJSON's text (cJSON's allocator) through the hook, for free(). */
static char *json_text(const cJSON *x) {
    char *t = cJSON_PrintUnformatted(x);
    char *c = t != NULL ? ctn__strdup(t) : NULL;
    cJSON_free(t);
    return c;
}

/*
 * response_format ({"type": "text" | "json_object" | "json_schema", "json_schema": {"name",
 * "schema", "strict"}}) and, for chat, tools ([{"type": "function", "function": {"name",
 * "description", "parameters"}}]) with tool_choice ("auto", "none", "required", or
 * {"type": "function", "function": {"name"}}): the grammar of the reply, and the system
 * text that tells the model its tools. false after answering 400.
 */
static bool structured(conn *c, cJSON *body, bool chat, struct structured *st) {
    *st = (struct structured){0};
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(body, "response_format");
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(body, "tools");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(body, "tool_choice");
    char *schema = NULL, err[512] = "";
    const char *param = "response_format";
    if (rf != NULL && !cJSON_IsNull(rf)) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rf, "type");
        const char *t = cJSON_IsString(ty) ? ty->valuestring : NULL;
        if (t == NULL || (strcmp(t, "text") && strcmp(t, "json_object") && strcmp(t, "json_schema"))) {
            send_error(c, 400, "response_format", NULL,
                       "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"");
            return false;
        }
        if (!strcmp(t, "json_object")) schema = ctn__strdup("{\"type\":\"object\"}");
        if (!strcmp(t, "json_schema")) {
            const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
            const cJSON *sc = cJSON_GetObjectItemCaseSensitive(js, "schema");
            if (!cJSON_IsObject(js) || !(cJSON_IsObject(sc) || cJSON_IsBool(sc) || sc == NULL)) {
                send_error(c, 400, "response_format", NULL,
                           "'response_format.json_schema' must be an object whose 'schema' is a "
                           "JSON Schema (an object)");
                return false;
            }
            schema = sc != NULL ? json_text(sc) : ctn__strdup("{}");
        }
        if (!strcmp(t, "text")) rf = NULL;
        else if (schema == NULL) goto oom;
    }
    const bool has_tools = cJSON_IsArray(tl) && tl->child != NULL;
    if (tl != NULL && !cJSON_IsNull(tl) && !cJSON_IsArray(tl)) {
        free(schema);
        send_error(c, 400, "tools", NULL, "'tools' must be an array of {type: \"function\", function: {...}}");
        return false;
    }
    if (!chat && has_tools) {
        free(schema);
        send_error(c, 400, "tools", "unsupported_parameter", "'tools' is for /v1/chat/completions");
        return false;
    }
    /* tool_choice: "auto" (the default), "none", "required", or one function by name. */
    const char *only = NULL;
    bool may_answer = true, none = false;
    if (tc != NULL && !cJSON_IsNull(tc)) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "none")) none = true;
        else if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "required")) may_answer = false;
        else if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "auto")) {
        } else if (cJSON_IsObject(tc) && cJSON_IsString(fn)) only = fn->valuestring, may_answer = false;
        else {
            free(schema);
            send_error(c, 400, "tool_choice", NULL,
                       "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": "
                       "\"function\", \"function\": {\"name\": ...}}");
            return false;
        }
        if (!has_tools && !none) {
            free(schema);
            send_error(c, 400, "tool_choice", NULL, "'tool_choice' needs 'tools'");
            return false;
        }
    }
    if (has_tools && !none) {
        param = "tools";
        if (schema != NULL) {
            free(schema);
            send_error(c, 400, "response_format", "unsupported_parameter",
                       "'response_format' together with 'tools' is not served: the reply is "
                       "decoded under the tools' grammar");
            return false;
        }
        const int nt = cJSON_GetArraySize(tl);
        ctn_tool *t = ctn__calloc((size_t)nt, sizeof *t);
        char **params = ctn__calloc((size_t)nt, sizeof *params);
        int n = 0, bad = -1;
        const cJSON *e;
        if (t == NULL || params == NULL) bad = -2;
        cJSON_ArrayForEach(e, tl) {
            if (bad != -1) break;
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(e, "type");
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "function");
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(f, "name");
            const cJSON *de = cJSON_GetObjectItemCaseSensitive(f, "description");
            const cJSON *pa = cJSON_GetObjectItemCaseSensitive(f, "parameters");
            const int at = n;
            if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "function") || !cJSON_IsString(nm)) {
                snprintf(err, sizeof err, "tools[%d] must be {type: \"function\", function: {name, "
                         "description, parameters}}", at);
                bad = at;
                break;
            }
            for (int k = 0; k < n; k++)
                if (!strcmp(t[k].name, nm->valuestring)) {
                    snprintf(err, sizeof err, "tools[%d] and tools[%d] are both named '%.64s'", k,
                             at, nm->valuestring);
                    bad = at;
                }
            if (bad >= 0) break;
            params[n] = pa != NULL && !cJSON_IsNull(pa) ? json_text(pa)
                                                         : ctn__strdup("{\"type\":\"object\",\"properties\":{}}");
            if (params[n] == NULL) {
                bad = -2;
                break;
            }
            t[n] = (ctn_tool){nm->valuestring, cJSON_IsString(de) ? de->valuestring : NULL, params[n]};
            char why[448];
            if (ctn_tool_check(&t[n], why, sizeof why) < 0) {
                snprintf(err, sizeof err, "tools[%d]: %s", at, why);
                n++;
                bad = at;
                break;
            }
            n++;
        }
        int sel = 0, nsel = n;
        if (bad == -1 && only != NULL) {
            for (sel = 0; sel < n && strcmp(t[sel].name, only); sel++) {
            }
            if (sel == n) {
                snprintf(err, sizeof err, "'tool_choice' names '%.64s', which is not one of the tools", only);
                bad = n;
            }
            nsel = 1;
        }
        if (bad == -1) {
            const cJSON *par = cJSON_GetObjectItemCaseSensitive(body, "parallel_tool_calls");
            schema = ctn_tools_reply_schema(t + sel, (size_t)nsel, may_answer,
                                            cJSON_IsFalse(par) || only != NULL ? 1 : 0);
            st->system = ctn_tools_prompt(t + sel, (size_t)nsel, may_answer);
            st->tools = true;
        }
        for (int k = 0; params != NULL && k < nt; k++)
            free(params[k]);
        free(params);
        free(t);
        if (bad >= 0) {
            free(schema);
            structured_free(st);
            send_error(c, 400, bad == n && only != NULL ? "tool_choice" : "tools", NULL, "%s", err);
            return false;
        }
        if (bad == -2 || schema == NULL || st->system == NULL) goto oom;
    }
    const cJSON *gr = cJSON_GetObjectItemCaseSensitive(body, "grammar");
    if (schema != NULL && gr != NULL && !cJSON_IsNull(gr)) {
        free(schema);
        structured_free(st);
        send_error(c, 400, "grammar", NULL, "give 'grammar' or '%s', not both", param);
        return false;
    }
    if (schema != NULL) {
        const int rc = ctn_json_schema_to_gbnf(schema, strlen(schema), &st->gbnf, err, sizeof err);
        free(schema);
        schema = NULL;
        if (rc == CTN_ENOMEM) goto oom;
        if (rc < 0) {
            structured_free(st);
            send_error(c, 400, param, NULL, "'%s': %s", param, err);
            return false;
        }
    }
    return true;
oom:
    free(schema);
    structured_free(st);
    send_error(c, 500, NULL, NULL, "out of memory");
    return false;
}

static void completions(conn *c, const ctn_http_req *rq) {
    cJSON *body = parse_body(c, rq);
    if (body == NULL) return;
    const char *lora;
    char model[128];
    ctn_lm_request r = ctn_lm_request_default();
    if (!pick_model(c, body, &lora, model, sizeof model) || !read_settings(c, body, &r, false)) {
        cJSON_Delete(body);
        return;
    }
    r.set.lora = lora;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(body, "prompt");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child)) p = p->child;
    if (!cJSON_IsString(p)) {
        cJSON_Delete(body);
        send_error(c, 400, "prompt", NULL,
                   "'prompt' must be a string (or an array of one string)");
        return;
    }
    if (p->valuestring[0] == '\0') {
        cJSON_Delete(body);
        send_error(c, 400, "prompt", NULL, "'prompt' is empty");
        return;
    }
    struct structured st;
    if (!structured(c, body, false, &st)) {
        cJSON_Delete(body);
        return;
    }
    r.prompt = p->valuestring;
    r.prompt_len = strlen(p->valuestring);
    r.session = rq->session;
    r.grammar = st.gbnf;
    job *j = room(c) ? new_job(c, JOB_COMPLETION, model, body) : NULL;
    if (j != NULL) start_generation(c, j, &r, n_of(body));
    else if (c->status == 0) send_error(c, 500, NULL, NULL, "out of memory");
    structured_free(&st);
    cJSON_Delete(body);
}

/* The text of a message's content: a string, or an array of {type: "text", text} parts. */
static char *content_text(const cJSON *content, char *why, size_t cap) {
    if (cJSON_IsString(content)) return ctn__strdup(content->valuestring);
    if (cJSON_IsNull(content) || content == NULL) return ctn__strdup("");
    if (!cJSON_IsArray(content)) {
        snprintf(why, cap, "content must be a string or an array of text parts");
        return NULL;
    }
    ctn_strbuf b = {0};
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") != 0 || !cJSON_IsString(x)) {
            ctn_sb_free(&b);
            snprintf(why, cap, "only text parts are served (got a part of type '%s')",
                     cJSON_IsString(t) ? t->valuestring : "?");
            return NULL;
        }
        ctn_sb_puts(&b, x->valuestring);
    }
    return ctn_sb_take(&b);
}

/* An assistant message's tool_calls as the text the model wrote for them (tools.h's reply
 * form), or NULL with why. */
static char *calls_text(const cJSON *calls, char *why, size_t cap) {
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "tool_calls");
    const cJSON *call;
    int k = 0;
    cJSON_ArrayForEach(call, calls) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(call, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *ar = cJSON_GetObjectItemCaseSensitive(f, "arguments");
        int prc = 0;
        cJSON *args = cJSON_IsString(ar)
                          ? ctn__json_parse(ar->valuestring, strlen(ar->valuestring), true, NULL, &prc)
                          : NULL;
        if (!cJSON_IsString(nm) || args == NULL) {
            cJSON_Delete(args);
            cJSON_Delete(o);
            snprintf(why, cap, "tool_calls[%d] needs function.name and function.arguments (a JSON "
                     "text)", k);
            return NULL;
        }
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "name", nm->valuestring);
        cJSON_AddItemToObject(x, "arguments", args);
        cJSON_AddItemToArray(arr, x);
        k++;
    }
    char *t = json_text(o);
    cJSON_Delete(o);
    if (t == NULL) snprintf(why, cap, "out of memory");
    return t;
}

static void chat_completions(conn *c, const ctn_http_req *rq) {
    server *s = c->s;
    cJSON *body = parse_body(c, rq);
    if (body == NULL) return;
    const char *lora;
    char model[128];
    ctn_lm_request r = ctn_lm_request_default();
    if (!pick_model(c, body, &lora, model, sizeof model) || !read_settings(c, body, &r, true)) {
        cJSON_Delete(body);
        return;
    }
    r.set.lora = lora;
    struct structured st;
    if (s->family == CTN_CHAT_UNKNOWN) {
        cJSON_Delete(body);
        send_error(c, 400, "messages", NULL,
                   "%s has no chat template catena recognises: start catena serve with "
                   "--chat-template NAME (chatml, llama2, llama3, mistral, phi3, gemma, ...)",
                   s->model_id);
        return;
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    const int nm = cJSON_IsArray(msgs) ? cJSON_GetArraySize(msgs) : 0;
    if (nm == 0) {
        cJSON_Delete(body);
        send_error(c, 400, "messages", NULL, "'messages' must be a non-empty array");
        return;
    }
    if (!structured(c, body, true, &st)) {
        cJSON_Delete(body);
        return;
    }
    /* One more: the tools' system message, when the request has none to add them to. */
    ctn_chat_msg *m = ctn__calloc((size_t)nm + 1, sizeof *m);
    char **texts = ctn__calloc((size_t)nm + 1, sizeof *texts);
    char why[256] = "";
    int bad = -1;
    const cJSON *e;
    int i = 0, at = 0;
    if (m != NULL && texts != NULL && st.system != NULL) {
        const cJSON *r0 = cJSON_GetObjectItemCaseSensitive(msgs->child, "role");
        if (!cJSON_IsString(r0) || (strcmp(r0->valuestring, "system") && strcmp(r0->valuestring, "developer"))) {
            texts[0] = ctn__strdup(st.system);
            if (texts[0] != NULL) m[0] = (ctn_chat_msg){"system", 6, texts[0], strlen(texts[0])};
            else bad = 0, snprintf(why, sizeof why, "out of memory");
            i = 1;
        }
    }
    cJSON_ArrayForEach(e, msgs) {
        if (m == NULL || texts == NULL || bad >= 0) break;
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(e, "role");
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(e, "tool_calls");
        const char *ro = cJSON_IsString(role) ? role->valuestring : NULL;
        if (ro != NULL && !strcmp(ro, "developer")) ro = "system";
        const bool tool = ro != NULL && !strcmp(ro, "tool");
        if (ro == NULL || (!tool && !ctn_chat_role_known(ro, strlen(ro)))) {
            snprintf(why, sizeof why, "role must be system, user, assistant or tool");
            bad = at;
            break;
        }
        if (!strcmp(ro, "assistant") && cJSON_IsArray(calls) && calls->child != NULL) {
            texts[i] = calls_text(calls, why, sizeof why);
        } else {
            texts[i] = content_text(cJSON_GetObjectItemCaseSensitive(e, "content"), why, sizeof why);
            if (texts[i] != NULL && tool) { /* a tool's result: a user turn that says so */
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "tool_call_id");
                char *t = ctn_tools_result_text(cJSON_IsString(id) ? id->valuestring : NULL, texts[i]);
                free(texts[i]);
                texts[i] = t;
                ro = "user";
            }
            if (texts[i] != NULL && at == 0 && i == 0 && st.system != NULL && !strcmp(ro, "system")) {
                ctn_strbuf b = {0}; /* the request's system message, then the tools */
                ctn_sb_puts(&b, texts[i]);
                ctn_sb_puts(&b, "\n\n");
                ctn_sb_puts(&b, st.system);
                free(texts[i]);
                texts[i] = b.oom ? NULL : ctn_sb_take(&b);
                if (texts[i] == NULL) ctn_sb_free(&b);
            }
        }
        if (texts[i] == NULL) {
            if (!why[0]) snprintf(why, sizeof why, "out of memory");
            bad = at;
            break;
        }
        m[i] = (ctn_chat_msg){ro, strlen(ro), texts[i], strlen(texts[i])};
        i++, at++;
    }
    char *prompt = NULL;
    size_t plen = 0;
    char err[256] = "";
    int rc = m == NULL || texts == NULL ? CTN_ENOMEM : 0;
    if (rc == 0 && bad < 0)
        rc = ctn_chat_render(s->family, m, (size_t)i, 1, ctn_lm_bos_text(s->lm),
                             ctn_lm_eos_text(s->lm), &prompt, &plen, err, sizeof err);
    for (int k = 0; texts != NULL && k <= nm; k++)
        free(texts[k]);
    free(texts);
    free(m);
    if (bad >= 0 || rc < 0) {
        cJSON_Delete(body);
        structured_free(&st);
        free(prompt);
        if (bad >= 0) send_error(c, 400, "messages", NULL, "messages[%d]: %s", bad, why);
        else send_error(c, rc == CTN_ENOMEM ? 500 : 400, "messages", NULL, "chat template: %s", err);
        return;
    }
    r.prompt = prompt;
    r.prompt_len = plen;
    /* A template that writes BOS itself: the tokenizer must not add another. */
    const char *bos = ctn_lm_bos_text(s->lm);
    if (bos != NULL && *bos && plen >= strlen(bos) && memcmp(prompt, bos, strlen(bos)) == 0)
        r.add_bos = 0;
    r.session = rq->session;
    r.grammar = st.gbnf;
    job *j = room(c) ? new_job(c, JOB_CHAT, model, body) : NULL;
    if (j != NULL) j->tools = st.tools;
    if (j != NULL) start_generation(c, j, &r, n_of(body));
    else if (c->status == 0) send_error(c, 500, NULL, NULL, "out of memory");
    structured_free(&st);
    free(prompt);
    cJSON_Delete(body);
}

/* ---- embeddings --------------------------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64(const unsigned char *p, size_t n) {
    char *o = ctn__malloc((n + 2) / 3 * 4 + 1);
    if (o == NULL) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        const unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                           (i + 2 < n ? p[i + 2] : 0);
        o[k++] = B64[v >> 18 & 63];
        o[k++] = B64[v >> 12 & 63];
        o[k++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        o[k++] = i + 2 < n ? B64[v & 63] : '=';
    }
    o[k] = '\0';
    return o;
}

typedef struct {
    job *j;
    size_t i;
} emb_part;

static void emb_done(void *ud, const float *vec, int dim, int err, const char *msg) {
    emb_part *p = ud;
    job *j = p->j;
    const size_t i = p->i;
    free(p);
    j->handles[i] = 0;
    if (err == 0 && vec != NULL) {
        j->vecs[i] = ctn__malloc((size_t)dim * sizeof *vec);
        if (j->vecs[i] != NULL) memcpy(j->vecs[i], vec, (size_t)dim * sizeof *vec);
        else err = CTN_ENOMEM, msg = "out of memory";
        j->dim = dim;
    }
    if (err != 0 && j->err == 0) {
        j->err = err;
        snprintf(j->errmsg, sizeof j->errmsg, "input %zu: %s", i, msg);
    }
    if (++j->n_done < j->n_inputs) return;
    conn *c = j->c;
    if (c == NULL) {
        job_end(j);
        return;
    }
    if (j->err != 0) {
        const int st = j->err == CTN_ECANCELED ? 503 : j->err == CTN_EINVAL ? 400 : 500;
        char m[256];
        snprintf(m, sizeof m, "%s", j->errmsg);
        job_end(j);
        send_error(c, st, "input", NULL, "%s", m);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    for (size_t k = 0; k < j->n_inputs; k++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "object", "embedding");
        cJSON_AddNumberToObject(e, "index", (double)k);
        if (j->base64) {
            char *b = base64((const unsigned char *)j->vecs[k], (size_t)j->dim * sizeof(float));
            cJSON_AddStringToObject(e, "embedding", b != NULL ? b : "");
            free(b);
        } else {
            cJSON *v = cJSON_AddArrayToObject(e, "embedding");
            for (int d = 0; d < j->dim; d++)
                cJSON_AddItemToArray(v, cJSON_CreateNumber((double)j->vecs[k][d]));
        }
        cJSON_AddItemToArray(data, e);
    }
    cJSON_AddStringToObject(o, "model", j->model);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)j->tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)j->tokens);
    j->s->prompt_tokens += j->tokens;
    job_end(j);
    send_json(c, 200, o, NULL);
}

static void embeddings(conn *c, const ctn_http_req *rq) {
    server *s = c->s;
    cJSON *body = parse_body(c, rq);
    if (body == NULL) return;
    const char *lora;
    char model[128];
    if (!pick_model(c, body, &lora, model, sizeof model)) {
        cJSON_Delete(body);
        return;
    }
    if (lora != NULL) {
        cJSON_Delete(body);
        send_error(c, 400, "model", NULL, "embeddings come from the base model, not an adapter");
        return;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(body, "encoding_format");
    bool b64 = false;
    if (fmt != NULL && !cJSON_IsNull(fmt)) {
        if (!cJSON_IsString(fmt) ||
            (strcmp(fmt->valuestring, "float") != 0 && strcmp(fmt->valuestring, "base64") != 0)) {
            cJSON_Delete(body);
            send_error(c, 400, "encoding_format", NULL, "'encoding_format' must be float or base64");
            return;
        }
        b64 = !strcmp(fmt->valuestring, "base64");
    }
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(body, "dimensions");
    if (dims != NULL && !cJSON_IsNull(dims) &&
        !(cJSON_IsNumber(dims) && dims->valuedouble == ctn_lm_embed_dim(s->lm))) {
        cJSON_Delete(body);
        send_error(c, 400, "dimensions", NULL, "the model's embeddings have %d dimensions",
                   ctn_lm_embed_dim(s->lm));
        return;
    }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(body, "input");
    size_t n = cJSON_IsString(in) ? 1 : cJSON_IsArray(in) ? (size_t)cJSON_GetArraySize(in) : 0;
    const cJSON *x;
    bool ok = n > 0 && n <= 2048;
    if (cJSON_IsArray(in))
        cJSON_ArrayForEach(x, in) ok = ok && cJSON_IsString(x) && x->valuestring[0] != '\0';
    else ok = ok && in->valuestring[0] != '\0';
    if (!ok) {
        cJSON_Delete(body);
        send_error(c, 400, "input", NULL,
                   "'input' must be a non-empty string or an array of 1 to 2048 non-empty strings");
        return;
    }
    if (!room(c)) {
        cJSON_Delete(body);
        return;
    }
    job *j = new_job(c, JOB_EMBED, model, NULL);
    if (j != NULL) {
        j->n_inputs = n;
        j->base64 = b64;
        j->handles = ctn__calloc(n, sizeof *j->handles);
        j->vecs = ctn__calloc(n, sizeof *j->vecs);
    }
    if (j == NULL || j->handles == NULL || j->vecs == NULL) {
        if (j != NULL) job_free(j);
        cJSON_Delete(body);
        send_error(c, 500, NULL, NULL, "out of memory");
        return;
    }
    s->n_jobs++;
    c->job = j;
    size_t i = 0, submitted = 0;
    const cJSON *one = cJSON_IsString(in) ? in : in->child;
    char err[512] = "";
    int rc = 0;
    for (; one != NULL && i < n; one = cJSON_IsString(in) ? NULL : one->next, i++) {
        int32_t *ids = NULL;
        size_t nt = 0;
        if (ctn_tokenize(ctn_lm_vocab(s->lm), one->valuestring, strlen(one->valuestring), true,
                         false, &ids, &nt) == 0)
            j->tokens += (int64_t)nt;
        free(ids);
        emb_part *p = ctn__malloc(sizeof *p);
        rc = p == NULL ? CTN_ENOMEM : 0;
        if (p != NULL) {
            *p = (emb_part){j, i};
            rc = ctn_lm_embed(s->lm, one->valuestring, strlen(one->valuestring),
                              ctn_lm_pooling(s->lm), emb_done, p, &j->handles[i], err, sizeof err);
            if (rc < 0) free(p);
        }
        if (rc < 0) break;
        submitted++;
    }
    cJSON_Delete(body);
    if (rc < 0) {
        /* What was submitted still ends through emb_done; the rest counts as failed now. */
        j->err = rc;
        snprintf(j->errmsg, sizeof j->errmsg, "input %zu: %s", i, err[0] ? err : "out of memory");
        j->n_done += n - submitted;
        for (size_t k = 0; k < submitted; k++)
            if (j->handles[k] != 0) ctn_lm_cancel(s->lm, j->handles[k]);
        if (submitted == 0) {
            const int st = rc == CTN_EINVAL ? 400 : 503;
            char m[256];
            snprintf(m, sizeof m, "%s", j->errmsg);
            job_end(j);
            send_error(c, st, "input", NULL, "%s", m);
        }
    }
}

/* ---- small routes ------------------------------------------------------------------------- */

static void models(conn *c) {
    server *s = c->s;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    for (int i = -1; i < s->n_loras; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", i < 0 ? s->model_id : s->lora_names[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", (double)s->started);
        cJSON_AddStringToObject(m, "owned_by", "catena");
        cJSON_AddStringToObject(m, "root", s->model_id);
        if (i < 0) cJSON_AddNullToObject(m, "parent");
        else cJSON_AddStringToObject(m, "parent", s->model_id);
        cJSON_AddItemToArray(data, m);
    }
    send_json(c, 200, o, NULL);
}

static void tokenize(conn *c, const ctn_http_req *rq) {
    cJSON *body = parse_body(c, rq);
    if (body == NULL) return;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "prompt");
    if (t == NULL) t = cJSON_GetObjectItemCaseSensitive(body, "content"); /* llama.cpp's name */
    if (!cJSON_IsString(t)) {
        cJSON_Delete(body);
        send_error(c, 400, "prompt", NULL, "'prompt' (or 'content') must be a string");
        return;
    }
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(body, "add_special_tokens");
    const bool add = sp == NULL || !cJSON_IsFalse(sp);
    int32_t *ids = NULL;
    size_t n = 0;
    const int rc = ctn_tokenize(ctn_lm_vocab(c->s->lm), t->valuestring, strlen(t->valuestring),
                                add, true, &ids, &n);
    cJSON_Delete(body);
    if (rc < 0) {
        send_error(c, 500, NULL, NULL, "tokenizing failed: %s", ctn_strerror(rc));
        return;
    }
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "tokens");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    free(ids);
    cJSON_AddNumberToObject(o, "count", (double)n);
    ctn_lm_stats st;
    ctn_lm_get_stats(c->s->lm, &st);
    cJSON_AddNumberToObject(o, "max_model_len", (double)st.engine.n_ctx);
    send_json(c, 200, o, NULL);
}

static void detokenize(conn *c, const ctn_http_req *rq) {
    cJSON *body = parse_body(c, rq);
    if (body == NULL) return;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "tokens");
    const int n = cJSON_IsArray(t) ? cJSON_GetArraySize(t) : -1;
    const int32_t nv = ctn_vocab_n_tokens(ctn_lm_vocab(c->s->lm));
    int32_t *ids = n > 0 ? ctn__malloc((size_t)n * sizeof *ids) : NULL;
    int k = 0;
    const cJSON *x;
    if (n > 0 && ids != NULL)
        cJSON_ArrayForEach(x, t) {
            if (!cJSON_IsNumber(x) || x->valuedouble != (double)(int32_t)x->valuedouble ||
                x->valuedouble < 0 || x->valuedouble >= nv)
                break;
            ids[k++] = (int32_t)x->valuedouble;
        }
    if (n < 0 || k < n || (n > 0 && ids == NULL)) {
        free(ids);
        cJSON_Delete(body);
        if (n > 0 && ids == NULL) send_error(c, 500, NULL, NULL, "out of memory");
        else send_error(c, 400, "tokens", NULL,
                        "'tokens' must be an array of token ids from 0 to %d (item %d is not)",
                        nv - 1, k);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    const int rc = n == 0 ? 0
                          : ctn_detokenize(ctn_lm_vocab(c->s->lm), ids, (size_t)n, false, false,
                                           &text, &len);
    free(ids);
    cJSON_Delete(body);
    if (rc < 0) {
        send_error(c, 500, NULL, NULL, "detokenizing failed: %s", ctn_strerror(rc));
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", text != NULL ? text : "");
    cJSON_AddStringToObject(o, "content", text != NULL ? text : "");
    free(text);
    send_json(c, 200, o, NULL);
}

static void metrics(conn *c) {
    server *s = c->s;
    ctn_lm_stats st;
    ctn_lm_get_stats(s->lm, &st);
    const ctn_gen_stats *e = &st.engine;
    ctn_strbuf b = {0};
    char line[256];
#define METRIC(type, name, help, fmt, v)                                                           \
    do {                                                                                           \
        snprintf(line, sizeof line, "# HELP catena_%s %s\n# TYPE catena_%s %s\ncatena_%s " fmt "\n", \
                 name, help, name, type, name, v);                                                 \
        ctn_sb_puts(&b, line);                                                                     \
    } while (0)
    METRIC("gauge", "requests_running", "sequences the engine runs", "%d", e->running);
    METRIC("gauge", "requests_waiting", "sequences waiting for KV blocks or a slot", "%d",
           e->waiting);
    METRIC("gauge", "requests_held", "requests the server holds", "%d", s->n_jobs);
    METRIC("counter", "http_requests_total", "HTTP requests answered", "%" PRId64,
           s->requests_total);
    METRIC("counter", "http_requests_rejected_total", "requests refused with 503 (full)",
           "%" PRId64, s->requests_rejected);
    METRIC("counter", "prompt_tokens_total", "prompt tokens of answered requests", "%" PRId64,
           s->prompt_tokens);
    METRIC("counter", "generation_tokens_total", "tokens generated for answered requests",
           "%" PRId64, s->completion_tokens);
    METRIC("counter", "requests_cancelled_total",
           "requests the engine cancelled (a client gone, a shutdown)", "%" PRId64, e->cancelled);
    METRIC("counter", "engine_prefill_tokens_total", "prompt tokens the engine computed",
           "%" PRId64, e->prefill_tokens);
    METRIC("counter", "engine_decode_tokens_total", "tokens the engine decoded", "%" PRId64,
           e->decode_tokens);
    METRIC("gauge", "kv_blocks", "KV cache blocks in the pool", "%d", (int)e->kv_blocks);
    METRIC("gauge", "kv_blocks_used", "KV cache blocks in use", "%d",
           (int)(e->kv_blocks - e->kv_free));
    METRIC("counter", "prefix_cache_hits_total", "prompt blocks found in the prefix cache",
           "%" PRId64, e->prefix_hits);
    METRIC("counter", "prefix_cache_misses_total", "prompt blocks the prefix cache lacked",
           "%" PRId64, e->prefix_misses);
    METRIC("gauge", "time_to_first_token_mean_seconds", "mean time to the first token", "%.6f",
           e->ttft_mean_s);
    METRIC("gauge", "inter_token_mean_seconds", "mean time between a request's tokens", "%.6f",
           e->itl_mean_s);
#undef METRIC
    const struct {
        const char *name, *help;
        const struct hist *h;
        const double *le;
        int n_le;
    } hs[] = {{"time_to_first_token_seconds", "from a request's arrival to its first token",
               &s->ttft, TTFT_LE, (int)(sizeof TTFT_LE / sizeof TTFT_LE[0])},
              {"inter_token_seconds", "between one token of a request and the next", &s->itl,
               ITL_LE, (int)(sizeof ITL_LE / sizeof ITL_LE[0])}};
    for (size_t k = 0; k < sizeof hs / sizeof hs[0]; k++) {
        snprintf(line, sizeof line, "# HELP catena_%s %s\n# TYPE catena_%s histogram\n",
                 hs[k].name, hs[k].help, hs[k].name);
        ctn_sb_puts(&b, line);
        int64_t cum = 0;
        for (int i = 0; i <= hs[k].n_le; i++) {
            cum += hs[k].h->count[i];
            if (i < hs[k].n_le)
                snprintf(line, sizeof line, "catena_%s_bucket{le=\"%g\"} %" PRId64 "\n",
                         hs[k].name, hs[k].le[i], cum);
            else
                snprintf(line, sizeof line, "catena_%s_bucket{le=\"+Inf\"} %" PRId64 "\n",
                         hs[k].name, cum);
            ctn_sb_puts(&b, line);
        }
        snprintf(line, sizeof line, "catena_%s_sum %.6f\ncatena_%s_count %" PRId64 "\n",
                 hs[k].name, hs[k].h->sum, hs[k].name, hs[k].h->n);
        ctn_sb_puts(&b, line);
    }
    if (b.oom) {
        ctn_sb_free(&b);
        send_error(c, 500, NULL, NULL, "out of memory");
        return;
    }
    head(c, 200, "text/plain; version=0.0.4", (long long)b.len, NULL);
    put(c, b.p, b.len);
    ctn_sb_free(&b);
    finish(c);
}

/*
 * vLLM's runtime adapter API: {"lora_name", "lora_path"} loads an adapter clients may then
 * name as their model; {"lora_name"} unloads one (requests running with it finish). Only
 * with --allow-lora-loading, as vLLM asks VLLM_ALLOW_RUNTIME_LORA_UPDATING.
 */
static void lora_route(conn *c, const ctn_http_req *rq, bool load) {
    server *s = c->s;
    if (!s->allow_lora_loading) {
        send_error(c, 404, NULL, NULL,
                   "adapters are not loaded at run time: start catena serve with "
                   "--allow-lora-loading");
        return;
    }
    cJSON *body = parse_body(c, rq);
    if (body == NULL) return;
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(body, "lora_name");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(body, "lora_path");
    if (!cJSON_IsString(nm) || nm->valuestring[0] == '\0' || strlen(nm->valuestring) > 120 ||
        (load && (!cJSON_IsString(path) || path->valuestring[0] == '\0'))) {
        cJSON_Delete(body);
        send_error(c, 400, load ? "lora_path" : "lora_name", NULL,
                   load ? "give {\"lora_name\": NAME, \"lora_path\": PATH}"
                        : "give {\"lora_name\": NAME}");
        return;
    }
    const char *name = nm->valuestring;
    int at = -1;
    for (int i = 0; i < s->n_loras; i++)
        if (strcmp(s->lora_names[i], name) == 0) at = i;
    char err[512] = "", msg[256];
    if (load) {
        if (at >= 0 || strcmp(name, s->model_id) == 0) {
            snprintf(msg, sizeof msg, "the adapter '%s' is already loaded", name);
            cJSON_Delete(body);
            send_error(c, 400, "lora_name", NULL, "%s", msg);
            return;
        }
        if (s->n_loras == MAX_LORAS) {
            cJSON_Delete(body);
            send_error(c, 400, "lora_name", NULL, "at most %d adapters are served", MAX_LORAS);
            return;
        }
        char *own = ctn__strdup(name);
        const int rc = own == NULL ? CTN_ENOMEM
                                   : ctn_lm_lora_load(s->lm, name, path->valuestring, 0, err,
                                                      sizeof err);
        if (rc < 0) {
            free(own);
            cJSON_Delete(body);
            send_error(c, rc == CTN_ENOMEM ? 500 : 400, "lora_path", NULL, "%s",
                       err[0] ? err : "out of memory");
            return;
        }
        s->lora_names[s->n_loras++] = own;
        snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' added successfully.", name);
    } else {
        if (at < 0) {
            snprintf(msg, sizeof msg, "no adapter '%s' is loaded", name);
            cJSON_Delete(body);
            send_error(c, 404, "lora_name", NULL, "%s", msg);
            return;
        }
        ctn_lm_lora_unload(s->lm, name);
        free(s->lora_names[at]);
        s->lora_names[at] = s->lora_names[--s->n_loras];
        snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' removed successfully.", name);
    }
    cJSON_Delete(body);
    head(c, 200, "text/plain; charset=utf-8", (long long)strlen(msg), NULL);
    put(c, msg, strlen(msg));
    finish(c);
}


/* ---- chains, the LangServe way ------------------------------------------------------------ */

/* A cJSON item as a chain value (through the text: one JSON reader for chain values). */
static ctn_val *to_val(const cJSON *x) {
    char *t = cJSON_PrintUnformatted(x);
    if (t == NULL) return NULL;
    ctn_val *v = NULL;
    char err[128];
    if (ctn_json_parse(t, strlen(t), &v, err, sizeof err) < 0) v = NULL;
    free(t);
    return v;
}

static cJSON *to_cjson(const ctn_val *v) {
    char *t = v != NULL ? ctn_val_to_json(v, 0) : NULL;
    cJSON *j = t != NULL ? cJSON_Parse(t) : NULL;
    free(t);
    return j != NULL ? j : cJSON_CreateNull();
}

/*
 * LangServe's config as a run's config: tags, metadata, configurable, max_concurrency and
 * the request settings of engine/settings.h are kept (a bad setting is an error); other keys
 * (run_name, recursion_limit, callbacks, ...) are dropped, as LangServe drops the keys a
 * route does not take. NULL with *why on an error.
 */
static ctn_val *run_config(const cJSON *cfg, char *why, size_t cap) {
    cJSON *keep = cJSON_CreateObject();
    const cJSON *x;
    if (cfg != NULL && !cJSON_IsNull(cfg) && !cJSON_IsObject(cfg)) {
        snprintf(why, cap, "'config' must be an object");
        cJSON_Delete(keep);
        return NULL;
    }
    if (cfg != NULL && cJSON_IsObject(cfg))
        cJSON_ArrayForEach(x, cfg) {
            const char *k = x->string;
            static const char *const own[] = {"tags", "metadata", "configurable",
                                              "max_concurrency"};
            bool take = false;
            for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
                take = take || !strcmp(k, own[i]);
            char err[256];
            if (!take && ctn_settings_check_run_key(k, NULL, 0, err, sizeof err) == 0) {
                ctn_settings probe;
                ctn_settings_init(&probe);
                if (ctn_settings_set_json(&probe, k, x, err, sizeof err) < 0) {
                    snprintf(why, cap, "config.%s: %s", k, err);
                    cJSON_Delete(keep);
                    return NULL;
                }
                take = true;
            }
            if (take) cJSON_AddItemToObject(keep, k, cJSON_Duplicate(x, 1));
        }
    ctn_val *v = to_val(keep);
    cJSON_Delete(keep);
    if (v == NULL) snprintf(why, cap, "out of memory");
    return v;
}

static void chain_error(conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void chain_error(conn *c, int status, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "detail", msg);
    send_json(c, status, o, NULL);
}

static int status_of(int code) {
    return code == CTN_ECANCELED ? 503 : code == CTN_ETYPE || code == CTN_EINVAL ? 422 : 500;
}

/* One SSE message of LangServe's streams: event NAME, data JSON (or none). */
static void sse_event(conn *c, const char *event, cJSON *data) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "event: ");
    ctn_sb_puts(&b, event);
    ctn_sb_puts(&b, "\n");
    if (data != NULL) {
        char *t = cJSON_PrintUnformatted(data);
        cJSON_Delete(data);
        if (t != NULL) {
            ctn_sb_puts(&b, "data: ");
            ctn_sb_puts(&b, t);
            ctn_sb_puts(&b, "\n");
            free(t);
        }
    }
    ctn_sb_puts(&b, "\n");
    if (!b.oom) body_piece(c, b.p, b.len);
    ctn_sb_free(&b);
}

static void chain_chunk(void *ud, const ctn_val *chunk) {
    job *j = ((struct runref *)ud)->j;
    if (j->c == NULL || j->mode != CH_STREAM) return;
    sse_event(j->c, "data", to_cjson(chunk));
}

/* LangChain's name for a node kind in stream_events (on_<kind>_start ...). */
static const char *event_kind(const char *k) {
    if (k == NULL) return "chain";
    if (!strcmp(k, "model")) return "chat_model";
    if (!strcmp(k, "retriever") || !strcmp(k, "prompt") || !strcmp(k, "parser")) return k;
    return "chain";
}

/* A span's summary as JSON when it is whole, else as the text it is. */
static cJSON *summary_json(const char *s) {
    if (s == NULL) return cJSON_CreateNull();
    cJSON *j = cJSON_Parse(s);
    return j != NULL ? j : cJSON_CreateString(s);
}

static void chain_event(void *ud, const ctn_event *ev) {
    job *j = ((struct runref *)ud)->j;
    if (j->c == NULL || j->mode != CH_EVENTS) return;
    const ctn_span *sp = ev->span;
    const char *phase = ev->kind == CTN_EV_START ? "start" : ev->kind == CTN_EV_STREAM ? "stream" : "end";
    char name[64], rid[96];
    snprintf(name, sizeof name, "on_%s_%s", event_kind(sp->kind), phase);
    snprintf(rid, sizeof rid, "%s-%" PRId64, j->id, sp->id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", name);
    cJSON_AddStringToObject(o, "name", sp->parent_id < 0 ? j->chain->name : sp->label ? sp->label : "");
    cJSON_AddStringToObject(o, "run_id", rid);
    /* Spans are numbered from 0 in start order: a start records its parent. */
    if (ev->kind == CTN_EV_START && sp->id >= 0 && (size_t)sp->id == j->n_parent) {
        if (j->n_parent == j->cap_parent) {
            const size_t cap = j->cap_parent ? 2 * j->cap_parent : 16;
            int64_t *np = ctn__realloc(j->parent, cap * sizeof *np);
            if (np != NULL) j->parent = np, j->cap_parent = cap;
        }
        if (j->n_parent < j->cap_parent) j->parent[j->n_parent++] = sp->parent_id;
    }
    cJSON *parents = cJSON_AddArrayToObject(o, "parent_ids");
    for (int64_t p = sp->parent_id, guard = 0; p >= 0 && guard < 1000; guard++) {
        char pid[96];
        snprintf(pid, sizeof pid, "%s-%" PRId64, j->id, p);
        cJSON_AddItemToArray(parents, cJSON_CreateString(pid));
        p = (size_t)p < j->n_parent ? j->parent[p] : -1;
    }
    cJSON_AddArrayToObject(o, "tags");
    cJSON_AddObjectToObject(o, "metadata");
    cJSON *d = cJSON_AddObjectToObject(o, "data");
    if (ev->kind == CTN_EV_START) cJSON_AddItemToObject(d, "input", summary_json(sp->input));
    else if (ev->kind == CTN_EV_STREAM) cJSON_AddItemToObject(d, "chunk", to_cjson(ev->chunk));
    else if (sp->err_code == 0) cJSON_AddItemToObject(d, "output", summary_json(sp->output));
    sse_event(j->c, "data", o);
}

static void chain_done(void *ud, const ctn_val *out, const ctn_chain_err *err);

/* The run of input i; false after answering (or failing the stream). */
static bool chain_start(conn *c, job *j, size_t i, ctn_val *input, const ctn_val *cfg) {
    const int flags = j->mode == CH_STREAM   ? CTN_RUN_STREAM
                      : j->mode == CH_EVENTS ? CTN_RUN_STREAM | CTN_RUN_EVENTS
                                             : 0;
    j->refs[i] = (struct runref){j, i};
    const ctn_run_callbacks cb = {chain_chunk, chain_event, chain_done, &j->refs[i]};
    return ctn_run_start(c->s->loop, j->chain->node, input, cfg, &cb, flags, &j->runs[i]) == 0;
}

static void chain_all_done(job *j);

static void chain_done(void *ud, const ctn_val *out, const ctn_chain_err *err) {
    job *j = ((struct runref *)ud)->j;
    const size_t i = ((struct runref *)ud)->i;
    if (err != NULL && j->err == 0) {
        j->err = err->code != 0 ? err->code : CTN_ECHAIN;
        snprintf(j->errmsg, sizeof j->errmsg, "%s%s%s", err->path && *err->path ? err->path : "",
                 err->path && *err->path ? ": " : "", err->message ? err->message : "failed");
    }
    j->outs[i] = out != NULL ? ctn_val_ref((ctn_val *)out) : ctn_val_null();
    if (++j->runs_done == j->n_runs) chain_all_done(j);
}

/* Every run has ended: the response, or the end of the stream (not while runs are being
 * started or cancelled: the caller calls it after). */
static void chain_all_done(job *j) {
    if (j->detaching) return;
    conn *c = j->c;
    if (c == NULL) {
        job_end(j);
        return;
    }
    if (j->mode == CH_STREAM || j->mode == CH_EVENTS) {
        if (j->err != 0) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "status_code", status_of(j->err));
            cJSON_AddStringToObject(e, "message", j->errmsg);
            sse_event(c, "error", e);
        }
        sse_event(c, "end", NULL);
        job_end(j);
        finish(c);
        return;
    }
    if (j->err != 0) {
        char m[256];
        snprintf(m, sizeof m, "%s", j->errmsg);
        const int st = status_of(j->err);
        job_end(j);
        chain_error(c, st, "%s", m);
        return;
    }
    cJSON *o = cJSON_CreateObject(), *meta;
    if (j->mode == CH_BATCH) {
        cJSON *a = cJSON_AddArrayToObject(o, "output");
        for (size_t k = 0; k < j->n_runs; k++)
            cJSON_AddItemToArray(a, to_cjson(j->outs[k]));
        meta = cJSON_AddObjectToObject(o, "metadata");
        cJSON *ids = cJSON_AddArrayToObject(meta, "run_ids");
        for (size_t k = 0; k < j->n_runs; k++) {
            char rid[96];
            snprintf(rid, sizeof rid, "%s-r%zu", j->id, k);
            cJSON_AddItemToArray(ids, cJSON_CreateString(rid));
        }
    } else {
        cJSON_AddItemToObject(o, "output", to_cjson(j->outs[0]));
        meta = cJSON_AddObjectToObject(o, "metadata");
        cJSON_AddStringToObject(meta, "run_id", j->id);
        cJSON_AddArrayToObject(meta, "feedback_tokens");
    }
    job_end(j);
    send_json(c, 200, o, NULL);
}

static void chain_route(conn *c, const ctn_http_req *rq, const struct served *ch, const char *what) {
    server *s = c->s;
    if (!strcmp(what, "input_schema") || !strcmp(what, "output_schema") ||
        !strcmp(what, "config_schema")) {
        if (strcmp(rq->method, "GET") != 0) {
            send_json(c, 405, error_obj("schemas are read with GET", "invalid_request_error", NULL, NULL),
                      "Allow: GET\r\n");
            return;
        }
        /* A chain's values are any JSON: the schemas say so, as LangServe's do for Any. */
        char title[160];
        snprintf(title, sizeof title, "%s%s", ch->name,
                 what[0] == 'i' ? "Input" : what[0] == 'o' ? "Output" : "Config");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "title", title);
        if (what[0] == 'c') {
            cJSON_AddStringToObject(o, "type", "object");
            cJSON *p = cJSON_AddObjectToObject(o, "properties");
            cJSON *cf = cJSON_AddObjectToObject(p, "configurable");
            cJSON_AddStringToObject(cf, "type", "object");
        }
        send_json(c, 200, o, NULL);
        return;
    }
    int mode = !strcmp(what, "invoke")          ? CH_INVOKE
               : !strcmp(what, "batch")         ? CH_BATCH
               : !strcmp(what, "stream")        ? CH_STREAM
               : !strcmp(what, "stream_events") ? CH_EVENTS
                                                : -1;
    if (mode < 0) {
        send_error(c, 404, NULL, NULL, "no route %s /%s/%s (invoke, batch, stream, stream_events, "
                   "input_schema, output_schema, config_schema)", rq->method, ch->name, what);
        return;
    }
    if (strcmp(rq->method, "POST") != 0) {
        send_json(c, 405, error_obj("this route takes POST", "invalid_request_error", NULL, NULL),
                  "Allow: POST\r\n");
        return;
    }
    if (s->stopping) {
        send_error(c, 503, NULL, NULL, "the server is shutting down");
        return;
    }
    cJSON *body = parse_body(c, rq);
    if (body == NULL) return;
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(body, mode == CH_BATCH ? "inputs" : "input");
    if (in == NULL || (mode == CH_BATCH && (!cJSON_IsArray(in) || cJSON_GetArraySize(in) == 0 ||
                                            cJSON_GetArraySize(in) > 1024))) {
        cJSON_Delete(body);
        chain_error(c, 422, mode == CH_BATCH ? "'inputs' must be an array of 1 to 1024 inputs"
                                             : "the body needs 'input'");
        return;
    }
    if (!room(c)) {
        cJSON_Delete(body);
        return;
    }
    const size_t n = mode == CH_BATCH ? (size_t)cJSON_GetArraySize(in) : 1;
    job *j = new_job(c, JOB_CHAIN, ch->name, NULL);
    if (j != NULL) {
        j->mode = mode;
        j->chain = ch;
        j->n_runs = n;
        j->runs = ctn__calloc(n, sizeof *j->runs);
        j->outs = ctn__calloc(n, sizeof *j->outs);
        j->refs = ctn__calloc(n, sizeof *j->refs);
        snprintf(j->id, sizeof j->id, "run-%016" PRIx64, ++s->next_id ^ ((uint64_t)j->created << 20));
    }
    if (j == NULL || j->runs == NULL || j->outs == NULL || j->refs == NULL) {
        if (j != NULL) job_free(j);
        cJSON_Delete(body);
        send_error(c, 500, NULL, NULL, "out of memory");
        return;
    }
    /* The inputs and configs (a batch may give one config, or one per input). */
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(body, "config");
    ctn_val **ins = ctn__calloc(n, sizeof *ins), **cfgs = ctn__calloc(n, sizeof *cfgs);
    char why[300] = "";
    const cJSON *x = mode == CH_BATCH ? in->child : in;
    for (size_t i = 0; ins != NULL && cfgs != NULL && i < n && !why[0]; i++, x = x ? x->next : NULL) {
        const cJSON *ci = cJSON_IsArray(cfg) ? cJSON_GetArrayItem(cfg, (int)i) : cfg;
        if ((ins[i] = to_val(x)) == NULL) snprintf(why, sizeof why, "out of memory");
        else if ((cfgs[i] = run_config(ci, why, sizeof why)) == NULL && !why[0])
            snprintf(why, sizeof why, "out of memory");
    }
    cJSON_Delete(body);
    if (ins == NULL || cfgs == NULL || why[0]) {
        for (size_t i = 0; ins != NULL && cfgs != NULL && i < n; i++)
            ctn_val_unref(ins[i]), ctn_val_unref(cfgs[i]);
        free(ins);
        free(cfgs);
        job_free(j);
        chain_error(c, why[0] && strcmp(why, "out of memory") != 0 ? 422 : 500, "%s",
                    why[0] ? why : "out of memory");
        return;
    }
    s->n_jobs++;
    c->job = j;
    if (mode == CH_STREAM || mode == CH_EVENTS) {
        head(c, 200, "text/event-stream", -1, NULL);
        if (mode == CH_STREAM) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "run_id", j->id);
            sse_event(c, "metadata", m);
        }
    }
    /* A run may end inside ctn_run_start (a chain that does not wait); the job ends with
     * the last one, so it is held until every run has been started. */
    j->runs_done = 0;
    size_t started = 0;
    j->detaching = true; /* chain_all_done waits for the loop below */
    for (size_t i = 0; i < n; i++) {
        if (!chain_start(c, j, i, ins[i], cfgs[i])) break;
        started++;
    }
    for (size_t i = 0; i < n; i++)
        ctn_val_unref(ins[i]), ctn_val_unref(cfgs[i]);
    free(ins);
    free(cfgs);
    j->detaching = false;
    if (started < n) {
        /* The rest could not start: they count as failed, and what runs is cancelled. */
        if (j->err == 0) {
            j->err = CTN_ENOMEM;
            snprintf(j->errmsg, sizeof j->errmsg, "out of memory starting the runs");
        }
        for (size_t k = started; k < n; k++)
            j->outs[k] = ctn_val_null();
        j->runs_done += n - started;
        j->detaching = true;
        for (size_t k = 0; k < started; k++)
            if (!ctn_run_ended(j->runs[k])) ctn_run_cancel(j->runs[k]);
        j->detaching = false;
    }
    if (j->runs_done == j->n_runs) chain_all_done(j);
}

/* Compares without stopping at the first difference. */
static bool same_secret(const char *a, const char *b) {
    const size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < na; i++)
        d |= (unsigned char)(a[i] ^ b[i < nb ? i : 0]);
    return d == 0;
}

static void route(conn *c, const ctn_http_req *r) {
    server *s = c->s;
    const char *p = r->path;
    const bool get = !strcmp(r->method, "GET"), post = !strcmp(r->method, "POST");
    if (!strcmp(p, "/health") && get) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "status", s->stopping ? "stopping" : "ok");
        send_json(c, s->stopping ? 503 : 200, o, NULL);
        return;
    }
    if (s->api_key != NULL) {
        const char *a = r->authorization;
        if (a == NULL || strncasecmp(a, "Bearer ", 7) != 0 || !same_secret(a + 7, s->api_key)) {
            send_error(c, 401, NULL, "invalid_api_key",
                       a == NULL ? "no API key: send Authorization: Bearer KEY"
                                 : "Incorrect API key provided");
            return;
        }
    }
    static const struct {
        const char *path;
        bool post;
    } known[] = {{"/v1/models", false},          {"/metrics", false},
                 {"/v1/completions", true},      {"/v1/chat/completions", true},
                 {"/v1/embeddings", true},       {"/tokenize", true},
                 {"/detokenize", true},          {"/v1/load_lora_adapter", true},
                 {"/v1/unload_lora_adapter", true}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(p, known[i].path) != 0) continue;
        if (known[i].post ? !post : !get) {
            char allow[32];
            snprintf(allow, sizeof allow, "Allow: %s\r\n", known[i].post ? "POST" : "GET");
            char msg[160];
            snprintf(msg, sizeof msg, "%s takes %s, not %s", p, known[i].post ? "POST" : "GET",
                     r->method);
            send_json(c, 405, error_obj(msg, "invalid_request_error", NULL, NULL), allow);
            return;
        }
        if (s->stopping && known[i].post) {
            send_error(c, 503, NULL, NULL, "the server is shutting down");
            return;
        }
        switch (i) {
        case 0: models(c); return;
        case 1: metrics(c); return;
        case 2: completions(c, r); return;
        case 3: chat_completions(c, r); return;
        case 4: embeddings(c, r); return;
        case 5: tokenize(c, r); return;
        case 6: detokenize(c, r); return;
        default: lora_route(c, r, i == 7); return;
        }
    }
    /* /NAME/ACTION of a served chain. */
    for (int i = 0; i < s->n_chains; i++) {
        const size_t nl = strlen(s->chains[i].name);
        if (p[0] == '/' && strncmp(p + 1, s->chains[i].name, nl) == 0 && p[1 + nl] == '/') {
            chain_route(c, r, &s->chains[i], p + 2 + nl);
            return;
        }
    }
    send_error(c, 404, NULL, NULL, "no route %s %s", r->method, p);
}

/* ---- start and stop ----------------------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h) { (void)h; }
static void stop_now(server *s) {
    if (s->stopped) return;
    s->stopped = true;
    /* Whatever still runs is cancelled; its connection is closed. */
    for (conn *c = s->conns, *n; c != NULL; c = n) {
        n = c->next;
        conn_close(c);
    }
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->drain, NULL);
}

static void on_deadline(uv_timer_t *t) { stop_now(t->data); }

static void on_signal(uv_signal_t *h, int sig) {
    server *s = h->data;
    if (s->stopping) { /* a second signal: stop at once */
        stop_now(s);
        return;
    }
    s->stopping = true;
    if (!s->quiet) fprintf(stderr, "serve: signal %d: no new connections; finishing what runs\n", sig);
    if (s->listening) uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    s->listening = false;
    /* Idle connections go now; busy ones close after their response (finish sees stopping). */
    for (conn *c = s->conns, *n; c != NULL; c = n) {
        n = c->next;
        if (c->job == NULL && !ctn_http_busy(c->http) && c->writes == 0) conn_close(c);
    }
    if (s->conns == NULL) stop_now(s);
    else uv_timer_start(&s->drain, on_deadline, (uint64_t)(s->shutdown_timeout_s * 1000), 0);
}

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: catena serve -m MODEL.gguf [options]\n"
            "  An OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions,\n"
            "  /v1/embeddings, /v1/models, /tokenize, /detokenize, /health, /metrics.\n"
            "  --host ADDR            address to bind (default 127.0.0.1)\n"
            "  --port N               port (default 8080; 0: any free one, printed)\n"
            "  --model-name NAME      the model's id for clients (default: the file's name)\n"
            "  --lora NAME=PATH       an adapter clients name as their model (repeatable)\n"
            "  --allow-lora-loading   serve /v1/load_lora_adapter and /v1/unload_lora_adapter\n"
            "  --chain NAME=FILE.lua  serve the runnable FILE returns the LangServe way:\n"
            "                         /NAME/invoke, /batch, /stream, /stream_events, schemas\n"
            "  --chat-template NAME   chatml, llama2, llama3, mistral, phi3, gemma, zephyr,\n"
            "                         deepseek, deepseek3 (default: the GGUF's, when known)\n"
            "  --api-key KEY          require Authorization: Bearer KEY (also --api-key-file F)\n"
            "  --max-body SIZE        largest request body (default 8M)\n"
            "  --max-header SIZE      largest request line and headers (default 16K)\n"
            "  --max-concurrency N    requests held at once; more get 503 (default 256)\n"
            "  --header-timeout S     seconds a started request may take to arrive (default 10)\n"
            "  --shutdown-timeout S   seconds to finish running requests on SIGTERM (default 10)\n"
            "  -t, --threads N        threads of the engine\n"
            "  --ctx N                context length\n"
            "  --kv-memory SIZE       KV cache memory\n"
            "  -q, --quiet            no access log\n");
}

/* Reads the first line of path as the key. */
static char *read_key(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = NULL;
    size_t n = 0;
    const int rc = ctn__cli_read_all(f, &buf, &n);
    fclose(f);
    if (rc < 0) return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf;
}

int ctn_cmd_serve(int argc, char **argv) {
    const char *model = NULL, *host = "127.0.0.1", *name = NULL, *tmpl = NULL;
    const char *lora_specs[MAX_LORAS], *chain_specs[MAX_CHAINS];
    int n_lora = 0, n_chain = 0;
    long port = 8080, conc = 256, threads = 0, ctx = 0;
    double header_timeout = 10, shutdown_timeout = 10;
    int64_t max_body = 8 << 20, max_header = 16384, kv = 0;
    char *key = NULL;
    bool quiet = false, allow_lora = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEED_VALUE                                                                                 \
    if (i + 1 >= argc) {                                                                           \
        fprintf(stderr, "catena serve: %s needs a value\n", a);                                   \
        free(key);                                                                                 \
        return 2;                                                                                  \
    }                                                                                              \
    const char *v = argv[++i]
#define BAD(what)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "catena serve: %s: '%s' is not %s\n", a, v, what);                        \
        free(key);                                                                                 \
        return 2;                                                                                  \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            serve_usage(stdout);
            free(key);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEED_VALUE;
            model = v;
        } else if (!strcmp(a, "--host")) {
            NEED_VALUE;
            host = v;
        } else if (!strcmp(a, "--port")) {
            NEED_VALUE;
            if (ctn__cli_parse_long(v, 0, 65535, &port) < 0) BAD("a port (0 to 65535)");
        } else if (!strcmp(a, "--model-name")) {
            NEED_VALUE;
            name = v;
        } else if (!strcmp(a, "--lora")) {
            NEED_VALUE;
            if (strchr(v, '=') == NULL || v[0] == '=') BAD("NAME=PATH");
            if (n_lora == MAX_LORAS) BAD("within the 32 adapters allowed");
            lora_specs[n_lora++] = v;
        } else if (!strcmp(a, "--chat-template")) {
            NEED_VALUE;
            if (ctn_chat_family_from_name(v) == CTN_CHAT_UNKNOWN) BAD("a chat template family");
            tmpl = v;
        } else if (!strcmp(a, "--api-key")) {
            NEED_VALUE;
            free(key);
            key = ctn__strdup(v);
        } else if (!strcmp(a, "--api-key-file")) {
            NEED_VALUE;
            free(key);
            key = read_key(v);
            if (key == NULL || key[0] == '\0') BAD("a readable file with a key on its first line");
        } else if (!strcmp(a, "--max-body")) {
            NEED_VALUE;
            if (ctn_parse_size(v, &max_body) < 0) BAD("a size (like 8M)");
        } else if (!strcmp(a, "--max-header")) {
            NEED_VALUE;
            if (ctn_parse_size(v, &max_header) < 0 || max_header < 256) BAD("a size of 256 or more");
        } else if (!strcmp(a, "--max-concurrency")) {
            NEED_VALUE;
            if (ctn__cli_parse_long(v, 1, 65536, &conc) < 0) BAD("1..65536");
        } else if (!strcmp(a, "--header-timeout")) {
            NEED_VALUE;
            if (ctn__cli_parse_double(v, 0.05, 3600, &header_timeout) < 0) BAD("0.05..3600 seconds");
        } else if (!strcmp(a, "--shutdown-timeout")) {
            NEED_VALUE;
            if (ctn__cli_parse_double(v, 0, 3600, &shutdown_timeout) < 0) BAD("0..3600 seconds");
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NEED_VALUE;
            if (ctn__cli_parse_long(v, 1, 1024, &threads) < 0) BAD("1..1024");
        } else if (!strcmp(a, "--ctx")) {
            NEED_VALUE;
            if (ctn__cli_parse_long(v, 1, 1 << 24, &ctx) < 0) BAD("1..16777216");
        } else if (!strcmp(a, "--kv-memory")) {
            NEED_VALUE;
            if (ctn_parse_size(v, &kv) < 0) BAD("a size (like 512M)");
        } else if (!strcmp(a, "--chain")) {
            NEED_VALUE;
            const char *eq = strchr(v, '=');
            if (eq == NULL || eq == v || eq[1] == '\0' || memchr(v, '/', (size_t)(eq - v)) != NULL)
                BAD("NAME=FILE.lua (a name without '/')");
            if (n_chain == MAX_CHAINS) BAD("within the 32 chains allowed");
            chain_specs[n_chain++] = v;
        } else if (!strcmp(a, "--allow-lora-loading")) {
            allow_lora = true;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = true;
        } else {
            fprintf(stderr, "catena serve: unknown option '%s' (see catena serve --help)\n", a);
            free(key);
            return 2;
        }
#undef NEED_VALUE
#undef BAD
    }
    if (model == NULL) {
        fprintf(stderr, "catena serve: -m MODEL.gguf is required\n");
        serve_usage(stderr);
        free(key);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t own;
    uv_loop_t *loopp = &own;
    static server s;
    memset(&s, 0, sizeof s);
    char err[1024];
    int status = 1;
    bool own_loop = false;
    /* Chains: a Lua state with the catena module; the server runs on the module's loop, so
     * the chains' lambdas and models work as under catena run. */
    if (n_chain > 0) {
        s.L = ctn_l_new_state();
        if (s.L == NULL) {
            fprintf(stderr, "catena serve: out of memory\n");
            free(key);
            return 1;
        }
        loopp = ctn_l_loop(s.L);
        for (int i = 0; i < n_chain; i++) {
            const char *eq = strchr(chain_specs[i], '=');
            char *nm = ctn__strndup(chain_specs[i], (size_t)(eq - chain_specs[i]));
            ctn_node *node = NULL;
            if (nm == NULL || ctn_l_load_chain(s.L, eq + 1, NULL, 0, &node, err, sizeof err) < 0) {
                fprintf(stderr, "catena serve: --chain %s: %s\n", chain_specs[i],
                        nm == NULL ? "out of memory" : err);
                free(nm);
                goto out;
            }
            s.chains[s.n_chains++] = (struct served){nm, node};
        }
    } else {
        uv_loop_init(&own);
        own_loop = true;
    }
    s.loop = loopp;
    s.api_key = key;
    s.lim.max_body_bytes = (size_t)max_body;
    s.lim.max_header_bytes = (size_t)max_header;
    s.max_concurrency = (int)conc;
    s.header_timeout_s = header_timeout;
    s.shutdown_timeout_s = shutdown_timeout;
    s.quiet = quiet;
    s.allow_lora_loading = allow_lora;
    s.started = time(NULL);
    ctn_lm_params lp = {.threads = (int)threads, .n_ctx = (int)ctx, .kv_memory_bytes = kv};
    /* A chain file that loads the same model with other settings has it already: the
     * server then shares that engine (one model per loop and file). */
    if (ctn_lm_open(loopp, model, n_chain > 0 && !threads && !ctx && !kv ? NULL : &lp, &s.lm,
                    err, sizeof err) < 0) {
        fprintf(stderr, "catena serve: %s\n", err);
        goto out;
    }
    for (int i = 0; i < n_lora; i++) {
        const char *eq = strchr(lora_specs[i], '=');
        char *nm = ctn__strndup(lora_specs[i], (size_t)(eq - lora_specs[i]));
        if (nm == NULL || ctn_lm_lora_load(s.lm, nm, eq + 1, 0, err, sizeof err) < 0) {
            fprintf(stderr, "catena serve: --lora %s: %s\n", lora_specs[i],
                    nm == NULL ? "out of memory" : err);
            free(nm);
            goto out;
        }
        s.lora_names[s.n_loras++] = nm;
    }
    const char *base = strrchr(model, '/');
    s.model_id = name != NULL ? name : base != NULL ? base + 1 : model;
    s.family = tmpl != NULL ? ctn_chat_family_from_name(tmpl)
                            : ctn_chat_detect(ctn_lm_chat_template(s.lm));
    struct sockaddr_storage addr;
    int rc = strchr(host, ':') != NULL
                 ? uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr)
                 : uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr);
    if (rc < 0) {
        fprintf(stderr, "catena serve: --host: '%s' is not an IP address\n", host);
        status = 2;
        goto out;
    }
    uv_tcp_init(loopp, &s.listener);
    s.listener.data = &s;
    if ((rc = uv_tcp_bind(&s.listener, (struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&s.listener, 511, on_connection)) < 0) {
        fprintf(stderr, "catena serve: cannot listen on %s:%ld: %s\n", host, port, uv_strerror(rc));
        uv_close((uv_handle_t *)&s.listener, NULL);
        goto out;
    }
    s.listening = true;
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&s.listener, (struct sockaddr *)&bound, &blen);
    const int real_port = bound.ss_family == AF_INET6
                              ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                              : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    uv_signal_init(loopp, &s.sigint);
    uv_signal_init(loopp, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_timer_init(loopp, &s.drain);
    s.drain.data = &s;
    fprintf(stderr, "catena serve: listening on http://%s:%d (model %s%s%s%s%d chain%s)\n", host,
            real_port, s.model_id, s.family != CTN_CHAT_UNKNOWN ? ", chat template " : "",
            s.family != CTN_CHAT_UNKNOWN ? ctn_chat_family_name(s.family) : "", ", ",
            s.n_chains, s.n_chains == 1 ? "" : "s");
    fflush(stderr);
    uv_run(loopp, UV_RUN_DEFAULT);
    status = 0;
out:
    ctn_lm_close(s.lm);
    for (int i = 0; i < s.n_chains; i++) {
        ctn_node_unref(s.chains[i].node);
        free(s.chains[i].name);
    }
    if (loopp != NULL) uv_run(loopp, UV_RUN_DEFAULT);
    if (own_loop) uv_loop_close(&own);
    if (s.L != NULL) lua_close(s.L); /* closes the module and its loop */
    for (int i = 0; i < s.n_loras; i++)
        free(s.lora_names[i]);
    free(key);
    return status;
}
