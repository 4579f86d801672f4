/*
 * libFuzzer target for the llama2.c checkpoint and tokenizer parser (engine/llama2c.c).
 *
 *     build/fuzz_llama2c -max_total_time=60 /tmp/corpus   (a copy of tests/fuzz/corpus_llama2c)
 *
 * An input carries both files: a 4-byte little-endian length N, then N bytes of checkpoint,
 * then the tokenizer (a shorter N takes what there is). Rejected inputs must leave a message
 * naming the offset; accepted ones are written through the GGUF writer, must parse again
 * and have every tensor's data touched (so a wrong offset into the checkpoint shows up as an
 * ASan report).
 *
 * Built with -DCTN_FUZZ_MAKE_CORPUS (and without -fsanitize=fuzzer) it instead writes the
 * seed corpus: `./gen tests/fuzz/corpus_llama2c`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "llama2c.h"

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    size_t n =
        (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
    data += 4;
    size -= 4;
    if (n > size) n = size;
    /* Separate heap copies, so that ASan sees reads past the end of either file. */
    uint8_t *m = malloc(n ? n : 1), *t = malloc(size - n ? size - n : 1);
    if (m == NULL || t == NULL) __builtin_trap();
    memcpy(m, data, n);
    memcpy(t, data + n, size - n);
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    if (w == NULL) __builtin_trap();
    char err[1024] = "";
    int rc = ctn_llama2c_to_gguf(w, m, n, "fuzz.bin", t, size - n, "fuzz-tok.bin", err, sizeof err);
    if (rc < 0) {
        if (rc != CTN_EFORMAT) __builtin_trap(); /* nothing else can go wrong in memory */
        if (strstr(err, "offset") == NULL || strstr(err, "fuzz") == NULL) __builtin_trap();
    } else {
        void *img = NULL;
        size_t len = 0;
        if (ctn_gguf_writer_write_memory(w, &img, &len) != 0) __builtin_trap();
        ctn_gguf *g = NULL;
        if (ctn_gguf_open_memory(&g, img, len, "out", err, sizeof err) != 0) {
            fprintf(stderr, "converted file rejected: %s\n", err);
            __builtin_trap();
        }
        for (int64_t i = 0; i < ctn_gguf_n_tensors(g); i++) {
            const ctn_gguf_tensor *x = ctn_gguf_tensor_at(g, i);
            const uint8_t *d = x->data;
            if (x->nbytes > 0) sink += d[0] + d[x->nbytes - 1];
        }
        if (ctn_gguf_find_tensor(g, "output.weight") == NULL) __builtin_trap();
        ctn_gguf_free(g);
        free(img);
    }
    ctn_gguf_writer_free(w);
    free(m);
    free(t);
    return 0;
}

#ifdef CTN_FUZZ_MAKE_CORPUS
/* Appends an int32 or float32 in host order (llama2.c files are host order). */
static size_t put(uint8_t *p, size_t at, const void *v) {
    memcpy(p + at, v, 4);
    return at + 4;
}

/* Writes one seed: a tiny random checkpoint with header h and a tokenizer of |h[5]| pieces. */
static int seed(const char *dir, const char *name, const int32_t h[7], const char *const *pieces) {
    static uint8_t buf[8192];
    size_t at = 4;
    for (int i = 0; i < 7; i++)
        at = put(buf, at, &h[i]);
    int64_t dim = h[0], hid = h[1], L = h[2], hs = dim / h[3], kvd = hs * h[4];
    int64_t V = h[5] < 0 ? -h[5] : h[5];
    int64_t nf = V * dim + L * dim * 2 + L * dim * dim * 2 + L * kvd * dim * 2 + L * hid * dim * 3 +
                 dim + (h[6] * hs / 2) * 2 + (h[5] < 0 ? V * dim : 0);
    for (int64_t i = 0; i < nf; i++) {
        float f = (float)rand() / (float)RAND_MAX - 0.5f;
        at = put(buf, at, &f);
    }
    uint32_t mlen = (uint32_t)(at - 4);
    buf[0] = (uint8_t)mlen;
    buf[1] = (uint8_t)(mlen >> 8);
    buf[2] = (uint8_t)(mlen >> 16);
    buf[3] = (uint8_t)(mlen >> 24);
    int32_t max = 0;
    for (int64_t i = 0; i < V; i++)
        if ((int32_t)strlen(pieces[i]) > max) max = (int32_t)strlen(pieces[i]);
    at = put(buf, at, &max);
    for (int64_t i = 0; i < V; i++) {
        float s = -(float)i;
        int32_t len = (int32_t)strlen(pieces[i]);
        at = put(buf, at, &s);
        at = put(buf, at, &len);
        memcpy(buf + at, pieces[i], (size_t)len);
        at += (size_t)len;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(buf, 1, at, f) != at || fclose(f) != 0) {
        fprintf(stderr, "%s: cannot write\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    static const char *const pieces[] = {"<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", " the",
                                         "a",     "",        "<0x 1",    "b c",    "xyz"};
    srand(1);
    int rc = 0;
    rc |= seed(dir, "shared.bin", (const int32_t[7]){8, 12, 2, 2, 1, 10, 4}, pieces);
    rc |= seed(dir, "unshared.bin", (const int32_t[7]){4, 6, 1, 2, 2, -6, 2}, pieces);
    rc |= seed(dir, "mha.bin", (const int32_t[7]){6, 5, 1, 3, 3, 3, 3}, pieces);
    return rc;
}
#endif
