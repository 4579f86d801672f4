/*
 * Remote model nodes: chat and completion models, and embeddings, on any OpenAI-compatible
 * HTTP endpoint (vLLM, llama.cpp's server, catena serve, hosted APIs). Requests go through
 * libcurl's multi interface driven by the task's libuv loop (its sockets on uv_poll_t, its
 * timeouts on a uv_timer_t): no thread per request, nothing blocks the loop.
 *
 *     ctn_remote_opts o = ctn_remote_opts_default();
 *     o.base_url = "http://127.0.0.1:8080/v1";
 *     o.model = "stories260K.gguf";
 *     char err[256];
 *     ctn_node *llm = ctn_remote_node(&o, err, sizeof err);   // NULL: err says why
 *     if (llm != NULL) ctn_run_start(loop, llm, input, config, &cb, CTN_RUN_STREAM, &run);
 *
 * Chat and completion requests are streamed ("stream": true, with the usage chunk asked
 * for): each piece of text the server sends is a chunk of the node's stream, and the
 * output is the whole text (or, with message set, an AI message as the local model node
 * makes: components.h). The request settings of the run's config (temperature, top_p,
 * max_tokens, stop, seed, the penalties; engine/settings.h's validator and limits) go into
 * the request body. Failures: the server's HTTP status and its OpenAI-shaped error
 * message; a stream cut short, malformed SSE or JSON (named as such, with the byte offset);
 * a body over max_response_bytes; the deadline. 429, 5xx and connections that fail before
 * any byte of the answer are tried again, at most max_retries times, after an exponential
 * backoff or the server's Retry-After. Cancelling the task removes its transfer and closes
 * its connection at once.
 */
#ifndef CTN_REMOTE_H
#define CTN_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chain.h"
#include "value.h"

typedef enum {
    CTN_REMOTE_CHAT,       /* /chat/completions */
    CTN_REMOTE_COMPLETION, /* /completions */
    CTN_REMOTE_EMBEDDINGS, /* /embeddings */
} ctn_remote_kind;

typedef struct {
    /* http:// or https:// URL of the API: the endpoints are its path + "/chat/completions",
     * "/completions", "/embeddings"; a URL without a path gets "/v1". Copied. */
    const char *base_url;
    const char *model;       /* the "model" field of every request. Copied */
    const char *api_key_env; /* an environment variable holding the key (a Bearer token), read
                              * for each request; NULL: no key. Copied */
    ctn_remote_kind kind;
    bool message;               /* chat/completion: output an AI message, not the text */
    int64_t timeout_ms;         /* the whole request's deadline, retries included */
    int max_retries;            /* tries after the first */
    int64_t max_response_bytes; /* a larger answer is refused */
    double backoff_ms;          /* the wait before retry k (from 1): backoff_ms * 2^(k-1) */
} ctn_remote_opts;

#define CTN_REMOTE_DEFAULT_TIMEOUT_MS 60000
#define CTN_REMOTE_DEFAULT_RETRIES    2
#define CTN_REMOTE_DEFAULT_MAX_BYTES  ((int64_t)64 << 20)
#define CTN_REMOTE_MAX_RETRIES        10

/* Chat, text output, the defaults above, a backoff of 250 ms, no URL, model or key. */
ctn_remote_opts ctn_remote_opts_default(void);

/*
 * A remote chat or completion node (o->kind) or an embeddings node. Input of a chat or
 * completion node: a string (the prompt; for chat, one user message) or a chat value
 * {type = "chat", messages = {{role, content}, ...}} (chat only). Input of an embeddings
 * node: a string (output: its vector, an array of numbers) or an array of strings (output:
 * an array of vectors, in order). NULL with the reason in err: a URL that libcurl's URL
 * parser refuses, another scheme than http or https, a URL with credentials, a query or a
 * fragment, an empty model, an api_key_env that is not set, options out of range.
 */
ctn_node *ctn_remote_node(const ctn_remote_opts *o, char *err, size_t errcap);

/* ---- reading answers (pure functions, for the node and its tests) ------------------------ */

/* What one answer (or one streamed chunk) of a chat or completion endpoint holds. Strings
 * are borrowed from the value read. */
typedef struct {
    const char *text; /* the delta's content, the message's content, or the choice's text */
    size_t text_len;  /* (NULL, 0 when there is none) */
    const char *finish_reason;                               /* NULL while the answer goes on */
    const char *model;                                       /* the server's model name, or NULL */
    int64_t prompt_tokens, completion_tokens, cached_tokens; /* -1: not given */
} ctn_remote_piece;

/*
 * Reads v, a streamed chunk (stream) or a whole response, of a chat (chat) or completion
 * endpoint: the first choice's text and finish reason, and usage when it is there (a
 * stream's last chunk has no choices and the usage). 0; CTN_ECHAIN when v is an error
 * object ({"error": {"message": ...}}; err gets the server's message); CTN_EFORMAT for
 * another shape (err names what is missing or of the wrong kind).
 */
int ctn_remote_read_piece(const ctn_val *v, bool chat, bool stream, ctn_remote_piece *out,
                          char *err, size_t errcap);

/*
 * Reads an embeddings response for n inputs: *out gets a new array of n vectors (arrays
 * of numbers) in input order (by each item's index), *prompt_tokens the usage's (or -1).
 * 0, CTN_ECHAIN for an error object (the server's message in err), CTN_EFORMAT for another
 * shape, missing or repeated indexes, or vectors of different lengths, CTN_ENOMEM.
 */
int ctn_remote_read_embeddings(const ctn_val *v, size_t n, ctn_val **out, int64_t *prompt_tokens,
                               char *err, size_t errcap);

/*
 * The message of an error body (an HTTP error's): the "message" of an OpenAI-shaped
 * {"error": {"message": ...}}, an "error" or "message" string, or else the body's text
 * itself (its first 200 bytes, control bytes as spaces); "(empty body)" for none. Written
 * into out (NUL-terminated, cut to cap).
 */
void ctn_remote_error_text(const char *body, size_t n, char *out, size_t cap);

#endif
