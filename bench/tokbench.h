/*
 * Timing harness shared by the two tokenizer benchmarks (bench/bench_tokenize.c for
 * catena, bench/llamacpp_tok.c for llama.cpp), so that both do exactly the same work:
 *
 *   - the file is read into memory once, before any timing;
 *   - by default it is cut into lines, each chunk keeping its trailing '\n', and every
 *     line is tokenized by a separate call (prompts are lines or paragraphs, not
 *     megabytes); with --whole the entire file is one call;
 *   - add_special and parse_special are false (no BOS, special-token text is plain text);
 *   - one untimed warm-up pass, then `runs` timed passes; the median pass is reported as
 *     MB/s (10^6 bytes of input per second) in one JSON line on stdout.
 *
 * Header-only (static functions) because it is compiled into two small programs.
 */
#ifndef CTN_BENCH_TOKBENCH_H
#define CTN_BENCH_TOKBENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Tokenizes one chunk and adds the number of tokens to *n_tokens; 0 or negative. */
typedef int (*tb_tokenize_fn)(void *ctx, const char *text, size_t len, size_t *n_tokens);

static int tb_read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int bad = !b || ferror(f);
    if (f != stdin) fclose(f);
    if (bad) {
        free(b);
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

static double tb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int tb_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *tb_basename(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* One pass over the text; returns the token count or (size_t)-1 on failure. */
static size_t tb_pass(const char *text, size_t len, bool whole, tb_tokenize_fn fn, void *ctx)
{
    size_t n_tokens = 0;
    if (whole) return fn(ctx, text, len, &n_tokens) < 0 ? (size_t)-1 : n_tokens;
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) + 1 : len;
        if (fn(ctx, text + i, end - i, &n_tokens) < 0) return (size_t)-1;
        i = end;
    }
    return n_tokens;
}

/* Parses "--runs N" and "--whole" from argv[first..]; returns -1 on an unknown option. */
static int tb_parse_opts(int argc, char **argv, int first, int *runs, bool *whole)
{
    *runs = 5;
    *whole = false;
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            *runs = atoi(argv[++i]);
            if (*runs < 1 || *runs > 1000) return -1;
        } else if (strcmp(argv[i], "--whole") == 0) {
            *whole = true;
        } else {
            return -1;
        }
    }
    return 0;
}

/* Runs the benchmark and prints its JSON line. Returns 0, or 1 after printing an error. */
static int tb_run(const char *impl, const char *model, const char *path, int runs, bool whole,
                  tb_tokenize_fn fn, void *ctx)
{
    char *text;
    size_t len;
    if (tb_read_file(path, &text, &len) < 0) {
        fprintf(stderr, "%s: cannot read %s\n", impl, path);
        return 1;
    }
    size_t chunks = 0;
    for (size_t i = 0; i < len; i++) chunks += text[i] == '\n';
    if (whole) chunks = 1;
    else if (len > 0 && text[len - 1] != '\n') chunks++;

    size_t tokens = tb_pass(text, len, whole, fn, ctx); /* warm-up, untimed */
    if (tokens == (size_t)-1) {
        fprintf(stderr, "%s: tokenization failed\n", impl);
        free(text);
        return 1;
    }
    double *t = malloc(sizeof *t * (size_t)runs);
    if (!t) {
        free(text);
        return 1;
    }
    for (int r = 0; r < runs; r++) {
        double t0 = tb_now();
        size_t n = tb_pass(text, len, whole, fn, ctx);
        t[r] = tb_now() - t0;
        if (n != tokens) {
            fprintf(stderr, "%s: token count changed between runs\n", impl);
            free(t);
            free(text);
            return 1;
        }
    }
    qsort(t, (size_t)runs, sizeof *t, tb_cmp_double);
    double med = runs % 2 ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]);
    printf("{\"impl\":\"%s\",\"model\":\"%s\",\"file\":\"%s\",\"mode\":\"%s\",\"bytes\":%zu,"
           "\"chunks\":%zu,\"tokens\":%zu,\"runs\":%d,\"median_s\":%.6f,\"min_s\":%.6f,"
           "\"mb_s\":%.3f,\"threads\":1}\n",
           impl, tb_basename(model), tb_basename(path), whole ? "whole" : "lines", len, chunks,
           tokens, runs, med, t[0], med > 0 ? (double)len / med / 1e6 : 0.0);
    fflush(stdout);
    free(t);
    free(text);
    return 0;
}

#endif
