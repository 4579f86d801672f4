/*
 * A small service built on libcatena: each line of stdin is one input of a chain, as JSON;
 * four worker threads take the lines and call the chain at once (the engine batches their
 * generations), and the answers are printed in input order, one output JSON per line.
 *
 *   cc -o service examples/service.c $(pkg-config --cflags --libs catena) -lpthread
 *   printf '{"who": "Lily"}\n{"who": "Tim"}\n' | ./service MODEL.gguf tests/cli/chains/story.lua
 *
 * A line whose call fails prints "error: MESSAGE" in its place; the exit status is then 1.
 */
#include <catena.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKERS 4

typedef struct {
    ctn_chain *chain;
    char **inputs, **answers; /* one per line */
    int *status;
    size_t n, next; /* lines in all, the next one to take */
    pthread_mutex_t mu;
} service;

/* A worker: takes the next line until none is left, and waits for its answer. Any thread may
 * call into the runtime; ctn_invoke_sync blocks this one only. */
static void *worker(void *arg) {
    service *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        const size_t i = s->next < s->n ? s->next++ : s->n;
        pthread_mutex_unlock(&s->mu);
        if (i == s->n) return NULL;
        s->status[i] = ctn_invoke_sync(s->chain, s->inputs[i], NULL, &s->answers[i]);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: service MODEL.gguf CHAIN.lua < inputs (one JSON value a line)\n");
        return 2;
    }
    service s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    size_t cap = 0;
    char *line = NULL, **grown;
    size_t len = 0;
    while (getline(&line, &len, stdin) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (s.n == cap) {
            cap = cap ? 2 * cap : 16;
            if ((grown = realloc(s.inputs, cap * sizeof *grown)) == NULL) return 1;
            s.inputs = grown;
        }
        if ((s.inputs[s.n++] = strdup(line)) == NULL) return 1; /* out of memory */
    }
    free(line);
    s.answers = calloc(s.n + 1, sizeof *s.answers);
    s.status = calloc(s.n + 1, sizeof *s.status);
    ctn_runtime *rt;
    if (s.answers == NULL || s.status == NULL || ctn_runtime_new(&rt) < 0 ||
        ctn_runtime_load_model(rt, argv[1], NULL) < 0 ||
        ctn_runtime_load_chain(rt, argv[2], &s.chain) < 0) {
        fprintf(stderr, "service: %s\n", ctn_last_error());
        return 1;
    }
    pthread_t t[WORKERS];
    for (int k = 0; k < WORKERS; k++)
        pthread_create(&t[k], NULL, worker, &s);
    for (int k = 0; k < WORKERS; k++)
        pthread_join(t[k], NULL);
    int rc = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.status[i] == CTN_OK) {
            printf("%s\n", s.answers[i]);
        } else {
            printf("error: %s\n", s.answers[i] ? s.answers[i] : ctn_strerror(s.status[i]));
            rc = 1;
        }
        free(s.answers[i]);
        free(s.inputs[i]);
    }
    ctn_runtime_free(rt);
    free(s.inputs), free(s.answers), free(s.status);
    return rc;
}
