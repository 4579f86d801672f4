/*
 * What the two embedding benchmarks share (bench/embed_bench.c for catena,
 * bench/llamacpp_embed.c for llama.cpp; bench/run_embed.sh runs them), so that they read the
 * same chunks and report the same way:
 *
 *   - the chunks come from a dump of bench/load_split (--dump: records "source" 0x1F text
 *     0x1E '\n'), read into memory before any timing; --limit N takes the first N;
 *   - the timed pass embeds every chunk once, text in, normalised vector out (tokenizing
 *     included, as a caller of either library pays for it), after an untimed warm-up;
 *   - one JSON line on stdout: chunks, tokens (BOS included), seconds, tokens/s, chunks/s;
 *   - --vectors FILE writes the first --n-vectors vectors (default 8) as little-endian
 *     float32, dim each, in chunk order, for run_embed.sh to compare the two sides.
 *
 * Header-only (static inline functions) because it is compiled into two small programs.
 */
#ifndef CTN_BENCH_EMBEDBENCH_H
#define CTN_BENCH_EMBEDBENCH_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *buf;          /* the whole dump; the texts point into it, NUL-terminated in place */
    const char **text;  /* (n) */
    size_t *len;        /* (n) bytes */
    size_t n;
} eb_chunks;

/* Reads path into c; at most limit chunks (0: all). 0, or -1 with the reason on stderr. */
static inline int eb_chunks_read(eb_chunks *c, const char *path, size_t limit)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    c->buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (!c->buf || fread(c->buf, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "%s: cannot read\n", path);
        fclose(f);
        return -1;
    }
    fclose(f);
    c->buf[size] = '\0';
    size_t cap = 0;
    for (long i = 0; i < size; i++) cap += c->buf[i] == 0x1e;
    c->text = malloc((cap + 1) * sizeof *c->text);
    c->len = malloc((cap + 1) * sizeof *c->len);
    if (!c->text || !c->len) return -1;
    char *p = c->buf, *end = c->buf + size;
    while (p < end && (limit == 0 || c->n < limit)) {
        char *us = memchr(p, 0x1f, (size_t)(end - p));
        char *rs = us ? memchr(us, 0x1e, (size_t)(end - us)) : NULL;
        if (!rs) {
            fprintf(stderr, "%s: not a load_split dump (record %zu)\n", path, c->n);
            return -1;
        }
        *rs = '\0';
        c->text[c->n] = us + 1;
        c->len[c->n++] = (size_t)(rs - us - 1);
        p = rs + 2; /* past 0x1E '\n' */
    }
    return 0;
}

static inline void eb_chunks_free(eb_chunks *c)
{
    free(c->buf);
    free(c->text);
    free(c->len);
}

static inline double eb_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* v /= |v| (llama.cpp's embedding example's default, Euclidean, in double). */
static inline void eb_normalise(float *v, int dim)
{
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)v[i] * v[i];
    double k = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
    for (int i = 0; i < dim; i++) v[i] = (float)(v[i] * k);
}

/* Writes n vectors of dim floats. 0 or -1. */
static inline int eb_vectors_write(const char *path, const float *v, size_t n, int dim)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t k = n * (size_t)dim;
    int ok = fwrite(v, sizeof *v, k, f) == k;
    return fclose(f) == 0 && ok ? 0 : -1;
}

#endif
