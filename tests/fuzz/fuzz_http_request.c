/*
 * libFuzzer target for the request path of `catena serve` (cli/serve_http.h): the input is
 * fed to one connection in pieces whose sizes come from its first bytes, as a socket would
 * deliver them; each whole request is checked (method, path and body as the framing
 * promises) and its body, when it parses as JSON, is walked; then the connection resumes,
 * as after a response, so pipelined requests are read too. A refused request must come with
 * a status of 400 to 501 and a message. Never a crash, a leak or undefined behaviour.
 *
 *     build/fuzz_http_request -max_total_time=600 build/fuzz-corpus/http_request
 *
 * The seed corpus (tests/fuzz/corpus_http_request/) holds requests like the ones
 * tests/cli/serve.sh sends: a GET, a JSON POST, a chunked POST with a Bearer key, two
 * pipelined requests and an HTTP/1.0 request with a session header.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int requests;

static void walk(const cJSON *j, int depth) {
    if (depth > 64) return;
    for (const cJSON *c = j->child; c != NULL; c = c->next) {
        if (cJSON_IsString(c) && strlen(c->valuestring) > (size_t)1 << 30) __builtin_trap();
        walk(c, depth + 1);
    }
}

static void on_request(void *ud, const ctn_http_req *r) {
    (void)ud;
    requests++;
    if (r->method == NULL || r->path == NULL || r->query == NULL || r->body == NULL)
        __builtin_trap();
    if (r->body[r->body_len] != '\0') __builtin_trap();
    if (r->body_len > 65536) __builtin_trap(); /* the limit set below */
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    if (j != NULL) walk(j, 0);
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const size_t step = 1 + (size_t)(data[0] % 64);
    data++, size--;
    ctn_http_limits lim = {.max_header_bytes = 4096, .max_body_bytes = 65536};
    ctn_http_conn *c = ctn_http_new(&lim, on_request, NULL);
    if (c == NULL) return 0;
    requests = 0;
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += step) {
        const size_t n = size - off < step ? size - off : step;
        rc = ctn_http_feed(c, (const char *)data + off, n);
        /* Answer every request delivered (pipelined ones come one after the other). */
        for (int guard = 0; rc == 0 && ctn_http_busy(c) && guard < 10000; guard++)
            rc = ctn_http_resume(c);
    }
    if (rc > 0 && (rc < 400 || rc > 501 || ctn_http_error(c)[0] == '\0')) __builtin_trap();
    ctn_http_free(c);
    return 0;
}
