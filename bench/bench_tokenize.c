/*
 * Times catena's tokenizer exactly as bench/llamacpp_tok.c times llama.cpp's (the shared
 * harness in bench/tokbench.h: same file, same chunks, same flags, median of N passes).
 *
 *   bench_tokenize MODEL.gguf FILE [--runs N] [--whole]
 *
 * Prints one JSON line. bench/run_tokenize.sh alternates it with llama.cpp.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gguf.h"
#include "tokbench.h"
#include "vocab.h"

/* ctn_tokenize returns malloc'd ids; freeing them is part of the cost a caller pays. */
static int bench_fn(void *ctx, const char *text, size_t len, size_t *n_tokens)
{
    int32_t *ids;
    size_t n;
    if (ctn_tokenize(ctx, text, len, false, false, &ids, &n) < 0) return -1;
    free(ids);
    *n_tokens += n;
    return 0;
}

int main(int argc, char **argv)
{
    int runs;
    bool whole;
    if (argc < 3 || tb_parse_opts(argc, argv, 3, &runs, &whole) < 0) {
        fputs("usage: bench_tokenize MODEL.gguf FILE [--runs N] [--whole]\n", stderr);
        return 2;
    }
    char err[1024];
    ctn_gguf *g;
    ctn_vocab *v;
    if (ctn_gguf_open(&g, argv[1], err, sizeof err) < 0) {
        fprintf(stderr, "bench_tokenize: %s\n", err);
        return 1;
    }
    int rc = ctn_vocab_load(&v, g, err, sizeof err);
    ctn_gguf_free(g);
    if (rc < 0) {
        fprintf(stderr, "bench_tokenize: %s\n", err);
        return 1;
    }
    rc = tb_run("catena", argv[1], argv[2], runs, whole, bench_fn, v);
    ctn_vocab_free(v);
    return rc;
}
