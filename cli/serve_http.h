/*
 * HTTP/1.1 request framing for `catena serve`, apart from any socket: bytes go in with
 * ctn_http_feed, whole requests come out through a callback. Parsing is Node's http-parser
 * (Debian's libhttp-parser), not ours; this file keeps the limits, the headers the server
 * reads and the body, and says what status a bad request gets.
 *
 *     ctn_http_conn *c = ctn_http_new(&limits, on_request, ud);
 *     ctn_http_feed(c, bytes, n);          // on_request(ud, req) per whole request
 *     ...                                  // the response is written elsewhere
 *     ctn_http_resume(c);                  // then the next pipelined request, if any
 *     ctn_http_free(c);
 *
 * One request at a time: after on_request the connection holds further bytes (pipelined
 * requests) until ctn_http_resume. A request that cannot be served (bad syntax, headers
 * beyond max_header_bytes, a body beyond max_body_bytes, an unsupported transfer encoding)
 * makes ctn_http_feed return its status (400, 413, 431, 501) with a message in
 * ctn_http_error; the connection must then answer it and close. Chunked request bodies are
 * decoded by the parser.
 */
#ifndef CTN_SERVE_HTTP_H
#define CTN_SERVE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    size_t max_header_bytes; /* the request line and headers; 0: 16 KiB */
    size_t max_body_bytes;   /* 0: 8 MiB */
} ctn_http_limits;

typedef struct {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* the target before '?', as sent (NUL-terminated) */
    const char *query;  /* after '?', or "" */
    /* The headers the server reads (NULL when absent; a repeated one keeps the last). */
    const char *authorization, *content_type, *accept, *session;
    const char *body; /* body_len bytes, NUL-terminated */
    size_t body_len;
    bool keep_alive; /* HTTP/1.1 without "Connection: close", or 1.0 with keep-alive */
    int http_minor;
} ctn_http_req;

typedef struct ctn_http_conn ctn_http_conn;

typedef void (*ctn_http_on_request)(void *ud, const ctn_http_req *r);

/* NULL when memory runs out. */
ctn_http_conn *ctn_http_new(const ctn_http_limits *lim, ctn_http_on_request on_request,
                            void *ud);
void ctn_http_free(ctn_http_conn *c);

/*
 * Parses n bytes. 0: go on (a whole request may have been delivered); an HTTP status >= 400
 * when the request is bad (ctn_http_error says why); -1 when out of memory. Bytes fed while
 * a request is out are kept for ctn_http_resume.
 */
int ctn_http_feed(ctn_http_conn *c, const char *data, size_t n);
/* The response to the request out is done: parses what was kept. Same returns. */
int ctn_http_resume(ctn_http_conn *c);
/* Whether a request is out (delivered, not yet resumed). */
bool ctn_http_busy(const ctn_http_conn *c);
/* Whether bytes of a next request have come (the client is not idle). */
bool ctn_http_partial(const ctn_http_conn *c);
const char *ctn_http_error(const ctn_http_conn *c);

/* The reason phrase of a status ("Not Found"), or "Unknown". */
const char *ctn_http_reason(int status);

#endif
