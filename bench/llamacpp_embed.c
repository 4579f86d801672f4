/*
 * llama.cpp's side of bench/run_embed.sh: embeddings of a load_split dump's chunks, batched
 * as llama.cpp's embedding example batches them (embedbench.h says what both sides share).
 *
 *     llamacpp_embed -m MODEL --chunks FILE [--threads N] [--ctx N] [--seqs N]
 *                    [--kv-unified 0|1] [--limit N] [--vectors FILE] [--n-vectors K]
 *
 * Each chunk is tokenized with add_special and parse_special (BOS as the vocabulary says,
 * as the example and catena both do); chunks are packed into one batch while their tokens
 * fit --ctx (default 2048) and there are fewer than --seqs sequences (default 64), each
 * batch is one llama_decode from an empty cache with mean pooling, and each vector is
 * L2-normalised. A chunk longer than --ctx tokens is an error: both sides must do the same
 * work. The warm-up is one batch of the first chunks.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedbench.h"
#include "llamacpp_dl.h"

int main(int argc, char **argv)
{
    const char *model = NULL, *chunks_path = NULL, *vec_path = NULL;
    int threads = 2, ctx = 2048, seqs = 64, unified = 1;
    size_t limit = 0, n_vec = 8;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "llamacpp_embed: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--chunks")) chunks_path = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--ctx")) ctx = atoi(v);
        else if (!strcmp(a, "--seqs")) seqs = atoi(v);
        else if (!strcmp(a, "--kv-unified")) unified = atoi(v);
        else if (!strcmp(a, "--limit")) limit = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--vectors")) vec_path = v;
        else if (!strcmp(a, "--n-vectors")) n_vec = strtoul(v, NULL, 10);
        else {
            fprintf(stderr, "llamacpp_embed: unknown option %s\n", a);
            return 2;
        }
    }
    if (!model || !chunks_path || threads < 1 || ctx < 1 || seqs < 1) {
        fprintf(stderr, "usage: llamacpp_embed -m MODEL --chunks FILE [--threads N] [--ctx N] "
                        "[--seqs N] [--kv-unified 0|1] [--limit N] [--vectors FILE]\n");
        return 2;
    }
    char err[512];
    if (lcpp_lib_open(NULL, err, sizeof err) < 0) {
        fprintf(stderr, "llamacpp_embed: %s\n", err);
        return 77;
    }
    eb_chunks c;
    if (eb_chunks_read(&c, chunks_path, limit) < 0 || c.n == 0) return 1;
    lcpp_vocab *voc;
    lcpp_model *m;
    if (lcpp_vocab_open(&voc, model, err, sizeof err) < 0 ||
        lcpp_model_open_embed(&m, model, (uint32_t)ctx, (uint32_t)seqs, unified != 0, threads,
                              err, sizeof err) < 0) {
        fprintf(stderr, "llamacpp_embed: %s\n", err);
        return 1;
    }
    int dim = lcpp_model_n_embd(m);
    /* Token copies of the chunks of the batch being built, and the output vectors. */
    int32_t *ids = malloc((size_t)ctx * sizeof *ids);
    const int32_t **seq = malloc((size_t)seqs * sizeof *seq);
    int32_t *lens = malloc((size_t)seqs * sizeof *lens);
    float *out = malloc((size_t)seqs * (size_t)dim * sizeof *out);
    size_t keep = n_vec < c.n ? n_vec : c.n;
    float *vecs = calloc(keep ? keep : 1, (size_t)dim * sizeof *vecs);
    if (!ids || !seq || !lens || !out || !vecs || dim < 1) {
        fprintf(stderr, "llamacpp_embed: out of memory\n");
        return 1;
    }

    size_t total_tokens = 0, batches = 0, max_tokens = 0;
    double t0 = 0, t1 = 0;
    for (int pass = 0; pass < 2; pass++) { /* pass 0: the warm-up, one batch */
        int32_t used = 0, ns = 0;
        size_t first = 0; /* the chunk index of seq[0] */
        total_tokens = batches = 0;
        t0 = eb_now();
        for (size_t k = 0; k <= c.n; k++) {
            const int32_t *t = NULL;
            size_t nt = 0;
            if (k < c.n && lcpp_tokenize(voc, c.text[k], c.len[k], true, true, &t, &nt) < 0) {
                fprintf(stderr, "llamacpp_embed: chunk %zu: tokenize failed\n", k);
                return 1;
            }
            if (nt > (size_t)ctx) {
                fprintf(stderr, "llamacpp_embed: chunk %zu has %zu tokens, more than --ctx %d\n",
                        k, nt, ctx);
                return 1;
            }
            if (k == c.n || used + (int32_t)nt > ctx || ns == seqs) {
                if (lcpp_model_embed_batch(m, seq, lens, ns, out) < 0) {
                    fprintf(stderr, "llamacpp_embed: llama_decode of %d sequences failed\n", ns);
                    return 1;
                }
                batches++;
                for (int32_t s = 0; s < ns; s++) {
                    eb_normalise(out + (size_t)s * dim, dim);
                    if (first + s < keep)
                        memcpy(vecs + (first + s) * dim, out + (size_t)s * dim,
                               (size_t)dim * sizeof *out);
                }
                if (pass == 0 || k == c.n) break;
                first = k;
                used = ns = 0;
            }
            memcpy(ids + used, t, nt * sizeof *t);
            seq[ns] = ids + used;
            lens[ns++] = (int32_t)nt;
            used += (int32_t)nt;
            total_tokens += nt;
            if (nt > max_tokens) max_tokens = nt;
        }
        t1 = eb_now();
    }
    char variant[64];
    lcpp_cpu_variant(variant, sizeof variant);
    double s = t1 - t0;
    printf("{\"impl\": \"llama.cpp\", \"chunks\": %zu, \"tokens\": %zu, \"max_chunk_tokens\": %zu, "
           "\"batches\": %zu, \"dim\": %d, \"threads\": %d, \"seconds\": %.4f, \"tok_s\": %.1f, "
           "\"chunks_s\": %.1f, \"isa\": \"llama.cpp:%s\"}\n",
           c.n, total_tokens, max_tokens, batches, dim, threads, s, total_tokens / s, c.n / s,
           variant);
    if (vec_path && eb_vectors_write(vec_path, vecs, keep, dim) < 0) return 1;
    free(ids);
    free(seq);
    free(lens);
    free(out);
    free(vecs);
    lcpp_model_free(m);
    lcpp_vocab_free(voc);
    eb_chunks_free(&c);
    return 0;
}
