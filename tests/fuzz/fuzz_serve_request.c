/*
 * libFuzzer target for catena serve's request handling past the framing: the server runs
 * for real (ctn_cmd_serve on stories260K, on a thread of this process, on 127.0.0.1), and
 * each input is one HTTP request sent to it over a socket: its first byte picks the route
 * (the OpenAI routes, tokenize / detokenize, and a served chain's LangServe routes), the
 * rest is the JSON body. Every request must get a whole response with a status of 200,
 * 400, 404, 413, 422 or 503 (never a 500 for what a client sent, but for a chain that
 * raises, as LangServe answers; never silence), an error
 * in OpenAI's JSON shape ({"error": {"message": ...}}) or LangServe's ({"detail": ...}),
 * and the server must go on answering. The fields' validation (sampling settings, n,
 * messages and their roles, tools, response_format, logprobs, embeddings inputs) runs
 * under ASan and UBSan; the context is 128 tokens, so a valid request ends soon.
 *
 *     CTN_SHARED=../shared build/fuzz_serve_request -max_total_time=600 build/fuzz-corpus/serve_request
 *
 * Without the model (CTN_SHARED/models/stories260K.gguf) it exits 77.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ROUTES[] = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize",
    "/upper/invoke",        "/upper/batch",    "/upper/stream",  "/v1/models",
};
enum { N_ROUTES = sizeof ROUTES / sizeof ROUTES[0] };

static char model[4096], chain[4200], port_s[16];
static int port;

static void *serve_thread(void *arg) {
    (void)arg;
    char *av[] = {"serve", "-m", model, "--port", port_s, "--chat-template", "chatml",
                  "--ctx", "128", "--max-concurrency", "8", "--header-timeout", "5",
                  "--chain", chain, getenv("FUZZ_SERVE_LOG") != NULL ? NULL : "-q", NULL};
    int ac = 0;
    while (av[ac] != NULL)
        ac++;
    const int rc = ctn_cmd_serve(ac, av);
    fprintf(stderr, "fuzz_serve_request: catena serve ended with %d\n", rc);
    abort(); /* it must not end while the fuzzer runs */
}

/* A connected socket to the server with a receive timeout, or -1. */
static int dial(void) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* A signal (libFuzzer's timer) may cut connect short; the connection goes on. */
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    for (int i = 0; rc < 0 && (errno == EINTR || errno == EALREADY) && i < 2000; i++) {
        nanosleep(&(struct timespec){0, 1000000}, NULL);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (rc < 0 && errno == EISCONN) rc = 0;
    }
    if (rc < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends all n bytes (again after a signal); false when the peer closed. */
static bool send_all(int fd, const void *p, size_t n) {
    const char *b = p;
    while (n > 0) {
        const ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        b += w, n -= (size_t)w;
    }
    return true;
}

/* A free port of 127.0.0.1 (the kernel's pick; it is released for the server to take). */
static int free_port(void) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *shared = getenv("CTN_SHARED") != NULL ? getenv("CTN_SHARED") : "../shared";
    snprintf(model, sizeof model, "%s/models/stories260K.gguf", shared);
    if (access(model, R_OK) != 0) {
        fprintf(stderr, "fuzz_serve_request: skip: %s is missing\n", model);
        exit(77);
    }
    snprintf(chain, sizeof chain, "upper=tests/cli/chains/upper.lua");
    port = free_port();
    if (port <= 0) abort();
    snprintf(port_s, sizeof port_s, "%d", port);
    pthread_t t;
    if (pthread_create(&t, NULL, serve_thread, NULL) != 0) abort();
    pthread_detach(t);
    for (int i = 0; i < 300; i++) { /* up to 30 s for the model to load */
        const int fd = dial();
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    fprintf(stderr, "fuzz_serve_request: the server did not start\n");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 60000) return 0;
    const char *route = ROUTES[data[0] % N_ROUTES];
    const char *method = strcmp(route, "/v1/models") == 0 ? "GET" : "POST";
    char head[256];
    const int hn = snprintf(head, sizeof head,
                            "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                            "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                            method, route, size - 1);
    const int fd = dial();
    if (fd < 0) abort(); /* the server stopped answering */
    if (!send_all(fd, head, (size_t)hn) || !send_all(fd, data + 1, size - 1)) {
        close(fd);
        return 0; /* it answered early and closed the connection */
    }
    static char resp[1 << 20];
    size_t got = 0;
    int why = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        const ssize_t r = recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (r < 0 && errno == EINTR) continue; /* libFuzzer's timer (SIGALRM) */
        if (r < 0) why = errno;
        if (r <= 0) break;
        got += (size_t)r;
        if (got == sizeof resp - 1) break;
    }
    close(fd);
    resp[got] = '\0';
    int status = 0;
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        fprintf(stderr, "fuzz_serve_request: no response to %s (%zu bytes back after %.3f s: %s)\n",
                route, got, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
                why != 0 ? strerror(why) : "closed");
        abort();
    }
    /* A served chain that raises answers 500 with its {"detail": ...}, as LangServe does. */
    const bool chain_error = status == 500 && strncmp(route, "/upper/", 7) == 0 &&
                             strstr(resp, "\"detail\"") != NULL;
    if (status != 200 && status != 400 && status != 404 && status != 413 && status != 422 &&
        status != 503 && !chain_error) {
        fprintf(stderr, "fuzz_serve_request: status %d for %s:\n%.2000s\n", status, route, resp);
        abort();
    }
    if (status != 200 && strstr(resp, "\"error\"") == NULL && strstr(resp, "\"detail\"") == NULL) {
        fprintf(stderr, "fuzz_serve_request: a %d without a message:\n%.2000s\n", status, resp);
        abort();
    }
    return 0;
}
