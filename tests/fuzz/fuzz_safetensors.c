/*
 * libFuzzer target for the safetensors reader (and, on what it accepts, the writer).
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine -Ikernels tests/fuzz/fuzz_safetensors.c \
 *         engine/safetensors.c kernels/quant.c kernels/types.c engine/gguf.c kernels/alloc.c engine/error.c \
 *         -lcjson -lm -o /tmp/fuzz_safetensors
 *     mkdir -p /tmp/corpus && cp -r tests/fuzz/corpus_safetensors/. /tmp/corpus/
 *     /tmp/fuzz_safetensors -max_total_time=60 /tmp/corpus
 *
 * Every accepted file has each tensor's bytes, name and metadata touched, so a pointer or
 * length the reader got wrong shows up as an ASan report, and the layout it promises (the
 * tensors tile the data in offset order) is checked. F32/F16/BF16 tensors go through
 * ctn_st_to_f32. Accepted files are then copied through the writer and read back: the copy
 * must hold the same tensors, bytes and metadata. Rejected files must leave a message that
 * names the file.
 *
 * Built with -DCTN_FUZZ_MAKE_CORPUS (and without -fsanitize=fuzzer) it instead writes the
 * seed corpus: `./gen tests/fuzz/corpus_safetensors`.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "safetensors.h"

static volatile uint64_t sink;

static void touch_bytes(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    sink += s;
}

static void touch_str(const char *s) {
    touch_bytes(s, strlen(s) + 1);
}

static void converts(const ctn_st_tensor *t) {
    int64_t n = ctn_st_nelements(t);
    bool is_float = t->dtype == CTN_ST_F32 || t->dtype == CTN_ST_F16 || t->dtype == CTN_ST_BF16;
    float *out = malloc((size_t)(n > 0 ? n : 1) * sizeof *out);
    if (out == NULL) return;
    int rc = ctn_st_to_f32(t, out);
    if (rc != (is_float ? 0 : CTN_ENOTSUP)) __builtin_trap();
    if (rc == 0) touch_bytes(out, (size_t)n * sizeof *out);
    free(out);
}

/* Copies f through the writer; the copy must read back as the same tensors and metadata. */
static void roundtrip(const ctn_st *f) {
    ctn_st_writer *w = ctn_st_writer_new();
    if (w == NULL) abort();
    for (int64_t i = 0; i < ctn_st_n_metadata(f); i++) {
        const char *k = ctn_st_metadata_key(f, i);
        if (ctn_st_writer_set_metadata(w, k, ctn_st_metadata(f, k)) != 0) {
            fprintf(stderr, "set_metadata refused: %s\n", ctn_st_writer_errmsg(w));
            abort();
        }
    }
    for (int64_t i = 0; i < ctn_st_n_tensors(f); i++) {
        const ctn_st_tensor *t = ctn_st_tensor_at(f, i);
        if (ctn_st_writer_add(w, t->name, t->dtype, t->n_dims, t->shape, t->data) != 0) {
            fprintf(stderr, "add refused: %s\n", ctn_st_writer_errmsg(w));
            abort();
        }
    }
    void *mem = NULL;
    size_t size = 0;
    if (ctn_st_writer_write_memory(w, &mem, &size) != 0) {
        fprintf(stderr, "write refused: %s\n", ctn_st_writer_errmsg(w));
        abort();
    }
    ctn_st_writer_free(w);
    /* The header is padded so that the data starts at a multiple of 8 bytes. */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0 && size >= 8; i--)
        hlen = hlen << 8 | ((const uint8_t *)mem)[i];
    if (size < 8 || hlen % 8 != 0) abort();
    ctn_st *g = NULL;
    char err[1024];
    if (ctn_st_open_memory(&g, mem, size, "copy", err, sizeof err) != 0) {
        fprintf(stderr, "writer output rejected: %s\n", err);
        abort();
    }
    if (ctn_st_n_tensors(g) != ctn_st_n_tensors(f)) abort();
    if (ctn_st_n_metadata(g) != ctn_st_n_metadata(f)) abort();
    for (int64_t i = 0; i < ctn_st_n_tensors(f); i++) {
        const ctn_st_tensor *a = ctn_st_tensor_at(f, i), *b = ctn_st_tensor_at(g, i);
        if (strcmp(a->name, b->name) != 0 || a->dtype != b->dtype || a->n_dims != b->n_dims ||
            a->nbytes != b->nbytes) {
            abort();
        }
        if (memcmp(a->shape, b->shape, (size_t)a->n_dims * sizeof a->shape[0]) != 0) abort();
        if (a->nbytes > 0 && memcmp(a->data, b->data, a->nbytes) != 0) abort();
    }
    for (int64_t i = 0; i < ctn_st_n_metadata(f); i++) {
        const char *k = ctn_st_metadata_key(f, i);
        if (strcmp(k, ctn_st_metadata_key(g, i)) != 0) abort();
        if (strcmp(ctn_st_metadata(f, k), ctn_st_metadata(g, k)) != 0) abort();
    }
    ctn_st_free(g);
    free(mem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ctn_st *f = NULL;
    char err[1024];
    err[0] = '\0';
    int rc = ctn_st_open_memory(&f, data, size, "fuzz.safetensors", err, sizeof err);
    if (rc < 0) {
        if (f != NULL) __builtin_trap();
        if (err[0] == '\0' || strstr(err, "fuzz.safetensors") == NULL) __builtin_trap();
        if (rc != CTN_EFORMAT && rc != CTN_ENOMEM) __builtin_trap();
        return 0;
    }
    /* The tensors tile the data, in order, up to the end of the input. */
    const uint8_t *at = data + size;
    for (int64_t i = ctn_st_n_tensors(f) - 1; i >= 0; i--) {
        const ctn_st_tensor *t = ctn_st_tensor_at(f, i);
        const uint8_t *d = t->data;
        if (d + t->nbytes != at || d < data + 8) __builtin_trap();
        at = d;
    }
    for (int64_t i = 0; i < ctn_st_n_tensors(f); i++) {
        const ctn_st_tensor *t = ctn_st_tensor_at(f, i);
        touch_str(t->name);
        touch_bytes(t->data, t->nbytes);
        if (t->name[0] == '\0' || ctn_st_find(f, t->name) != t) __builtin_trap();
        if (t->n_dims < 0 || t->n_dims > CTN_ST_MAX_DIMS) __builtin_trap();
        int64_t n = ctn_st_nelements(t);
        if (n < 0 || (uint64_t)n * ctn_st_dtype_size(t->dtype) != t->nbytes) __builtin_trap();
        converts(t);
    }
    for (int64_t i = 0; i < ctn_st_n_metadata(f); i++) {
        const char *k = ctn_st_metadata_key(f, i);
        const char *v = ctn_st_metadata(f, k);
        if (v == NULL) __builtin_trap();
        touch_str(k);
        touch_str(v);
    }
    if (ctn_st_tensor_at(f, ctn_st_n_tensors(f)) != NULL) __builtin_trap();
    roundtrip(f);
    ctn_st_free(f);
    return 0;
}

#ifdef CTN_FUZZ_MAKE_CORPUS
static int save_writer(ctn_st_writer *w, const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = ctn_st_writer_write(w, path);
    if (rc < 0) fprintf(stderr, "%s\n", ctn_st_writer_errmsg(w));
    ctn_st_writer_free(w);
    return rc;
}

/* A file written by hand: the 8-byte header length, the header, then data_len bytes. */
static int save_raw(const char *dir, const char *name, const char *json, const void *data,
                    size_t data_len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp == NULL) return -1;
    uint64_t n = strlen(json);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)(n >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(json, 1, n, fp);
    if (data_len > 0) fwrite(data, 1, data_len, fp);
    return fclose(fp) == 0 ? 0 : -1;
}

/* Writes a few tiny valid files: every dtype, scalars, empty tensors, metadata, odd offsets. */
int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    int rc = 0;

    rc |= save_writer(ctn_st_writer_new(), dir, "empty.safetensors");

    ctn_st_writer *w = ctn_st_writer_new();
    uint8_t bytes[64];
    for (int i = 0; i < 64; i++)
        bytes[i] = (uint8_t)(i * 37 + 11);
    int64_t s2[] = {2};
    for (int d = 0; d < CTN_ST_N_DTYPES; d++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", ctn_st_dtype_name((ctn_st_dtype)d));
        ctn_st_writer_add(w, name, (ctn_st_dtype)d, 1, s2, bytes);
    }
    rc |= save_writer(w, dir, "dtypes.safetensors");

    w = ctn_st_writer_new();
    float f[6] = {1, -2, 0.5f, 3, 4, 5};
    uint16_t h[6] = {0x3C00, 0xC000, 0x3800, 0x0001, 0x7C00, 0x8000};
    int64_t s23[] = {2, 3}, s0[] = {0, 4}, s1111[] = {1, 1, 1, 1, 1, 1, 1, 2};
    ctn_st_writer_set_metadata(w, "format", "pt");
    ctn_st_writer_set_metadata(w, "note", "caf\xc3\xa9 \"q\"\n");
    ctn_st_writer_add(w, "base_model.model.layers.0.self_attn.q_proj.lora_A.weight", CTN_ST_F32, 2,
                      s23, f);
    ctn_st_writer_add(w, "empty", CTN_ST_F32, 2, s0, NULL);
    ctn_st_writer_add(w, "base_model.model.layers.0.self_attn.q_proj.lora_B.weight", CTN_ST_F16, 2,
                      s23, h);
    ctn_st_writer_add(w, "scalar", CTN_ST_BF16, 0, NULL, h);
    ctn_st_writer_add(w, "deep", CTN_ST_BF16, 8, s1111, h);
    rc |= save_writer(w, dir, "adapter.safetensors");

    /* By hand: out of offset order, unaligned F32, unknown field, whitespace padding. */
    uint8_t data[11] = {1, 2, 3, 0, 0, 0xC0, 0x3F, 0, 0, 0x80, 0xBF};
    rc |= save_raw(dir, "hand.safetensors",
                   "{\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [3, 11], "
                   "\"x\": null},\n \"__metadata__\": {\"k\": \"v\"},\n"
                   " \"a\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [0, 3]},"
                   " \"z\": {\"dtype\": \"F16\", \"shape\": [0], \"data_offsets\": [11, 11]}}  ",
                   data, sizeof data);
    rc |= save_raw(dir, "escapes.safetensors",
                   "{\"\\u00e9\\t\\\"x\\\"\": {\"dtype\": \"BF16\", \"shape\": [1e0], "
                   "\"data_offsets\": [0, 2.0]}}",
                   data, 2);
    return rc ? 1 : 0;
}
#endif
