/*
 * llama.cpp's tokenizer as a command, the reference that catena's tokenizer is compared
 * with and timed against. libllama is loaded with dlopen() (bench/llamacpp_dl.c), so this
 * builds without the peer.
 *
 *   llamacpp_tok [-L LIBDIR] tokenize MODEL.gguf [--no-bos] [--parse-special] < text
 *       prints the ids on one line, separated by single spaces (as `catena tokenize`)
 *   llamacpp_tok [-L LIBDIR] detokenize MODEL.gguf [--remove-special] [--unparse-special]
 *       reads whitespace-separated ids from stdin and writes the text (raw bytes)
 *   llamacpp_tok [-L LIBDIR] bench MODEL.gguf FILE [--runs N] [--whole]
 *       times tokenization of FILE (see bench/tokbench.h) and prints one JSON line
 *
 * LIBDIR defaults to $CATENA_LLAMA_LIBDIR, else LCPP_DEFAULT_LIBDIR (relative to the
 * repository root). Exit status: 0 ok, 1 error, 2 usage, 77 llama.cpp unavailable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llamacpp_dl.h"
#include "tokbench.h"

static int usage(void)
{
    fputs("usage: llamacpp_tok [-L LIBDIR] tokenize MODEL [--no-bos] [--parse-special]\n"
          "       llamacpp_tok [-L LIBDIR] detokenize MODEL [--remove-special] "
          "[--unparse-special]\n"
          "       llamacpp_tok [-L LIBDIR] bench MODEL FILE [--runs N] [--whole]\n",
          stderr);
    return 2;
}

static int cmd_tokenize(lcpp_vocab *v, int argc, char **argv)
{
    bool add_special = true, parse_special = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--no-bos") == 0) add_special = false;
        else if (strcmp(argv[i], "--parse-special") == 0) parse_special = true;
        else return usage();
    }
    char *text;
    size_t len;
    if (tb_read_file("-", &text, &len) < 0) {
        fputs("llamacpp_tok: cannot read stdin\n", stderr);
        return 1;
    }
    const int32_t *ids;
    size_t n;
    int rc = lcpp_tokenize(v, text, len, add_special, parse_special, &ids, &n);
    free(text);
    if (rc < 0) {
        fputs("llamacpp_tok: llama_tokenize failed\n", stderr);
        return 1;
    }
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
    return 0;
}

static int cmd_detokenize(lcpp_vocab *v, int argc, char **argv)
{
    bool remove_special = false, unparse_special = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--remove-special") == 0) remove_special = true;
        else if (strcmp(argv[i], "--unparse-special") == 0) unparse_special = true;
        else return usage();
    }
    size_t n = 0, cap = 256;
    int32_t *ids = malloc(cap * sizeof *ids);
    long id;
    int32_t n_vocab = lcpp_vocab_n_tokens(v);
    while (ids && scanf("%ld", &id) == 1) {
        /* llama.cpp throws (and aborts) on an id out of range; refuse it here. */
        if (id < 0 || id >= n_vocab) {
            fprintf(stderr, "llamacpp_tok: token id %ld out of range\n", id);
            free(ids);
            return 1;
        }
        if (n == cap) {
            int32_t *p = realloc(ids, 2 * cap * sizeof *ids);
            if (!p) break;
            ids = p;
            cap *= 2;
        }
        ids[n++] = (int32_t)id;
    }
    const char *text;
    size_t len;
    int rc = ids ? lcpp_detokenize(v, ids, n, remove_special, unparse_special, &text, &len) : -1;
    free(ids);
    if (rc < 0) {
        fputs("llamacpp_tok: llama_detokenize failed\n", stderr);
        return 1;
    }
    fwrite(text, 1, len, stdout);
    return 0;
}

static int bench_fn(void *ctx, const char *text, size_t len, size_t *n_tokens)
{
    const int32_t *ids;
    size_t n;
    if (lcpp_tokenize(ctx, text, len, false, false, &ids, &n) < 0) return -1;
    *n_tokens += n;
    return 0;
}

int main(int argc, char **argv)
{
    const char *libdir = NULL;
    int a = 1;
    if (a + 1 < argc && strcmp(argv[a], "-L") == 0) {
        libdir = argv[a + 1];
        a += 2;
    }
    if (argc - a < 2) return usage();
    const char *cmd = argv[a], *model = argv[a + 1];
    a += 2;

    char err[1024];
    if (lcpp_lib_open(libdir, err, sizeof err) < 0) {
        fprintf(stderr, "llamacpp_tok: llama.cpp unavailable: %s\n", err);
        return 77;
    }
    lcpp_vocab *v;
    if (lcpp_vocab_open(&v, model, err, sizeof err) < 0) {
        fprintf(stderr, "llamacpp_tok: %s\n", err);
        return 1;
    }
    int rc;
    if (strcmp(cmd, "tokenize") == 0) {
        rc = cmd_tokenize(v, argc - a, argv + a);
    } else if (strcmp(cmd, "detokenize") == 0) {
        rc = cmd_detokenize(v, argc - a, argv + a);
    } else if (strcmp(cmd, "bench") == 0 && a < argc) {
        int runs;
        bool whole;
        if (tb_parse_opts(argc, argv, a + 1, &runs, &whole) < 0) rc = usage();
        else rc = tb_run("llama.cpp", model, argv[a], runs, whole, bench_fn, v);
    } else {
        rc = usage();
    }
    lcpp_vocab_free(v);
    return rc;
}
