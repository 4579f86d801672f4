/*
 * libFuzzer target for the GGUF reader (and, on what it accepts, the writer).
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine tests/fuzz/fuzz_gguf.c \
 *         engine/gguf.c engine/error.c -o /tmp/fuzz_gguf
 *     mkdir -p /tmp/corpus && cp -r tests/fuzz/corpus_gguf/. /tmp/corpus/
 *     /tmp/fuzz_gguf -max_total_time=60 /tmp/corpus
 *
 * Every accepted file has each parsed value and tensor touched, so a pointer or length the
 * reader got wrong shows up as an ASan report. Accepted files are then copied through the
 * writer and must parse again: the writer has to be able to reproduce anything the reader
 * takes. Rejected files must leave a message naming the offset.
 *
 * Built with -DCTN_FUZZ_MAKE_CORPUS (and without -fsanitize=fuzzer) it instead writes the
 * seed corpus: `./gen tests/fuzz/corpus_gguf`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

static volatile uint64_t sink;

static void touch_bytes(const void *p, uint64_t n) {
    const uint8_t *b = p;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++)
        s += b[i];
    sink += s;
}

static void touch_value(const ctn_gguf_value *v) {
    switch (v->type) {
    case CTN_GGUF_STRING: touch_bytes(v->v.str.ptr, v->v.str.len); break;
    case CTN_GGUF_ARRAY:
        for (uint64_t i = 0; i < v->v.arr.n; i++) {
            switch (v->v.arr.type) {
            case CTN_GGUF_STRING: {
                ctn_gguf_str s = ctn_gguf_arr_str(v, i);
                touch_bytes(s.ptr, s.len);
                break;
            }
            case CTN_GGUF_ARRAY: touch_value(&((const ctn_gguf_value *)v->v.arr.data)[i]); break;
            case CTN_GGUF_FLOAT32:
            case CTN_GGUF_FLOAT64: sink += (uint64_t)(ctn_gguf_arr_float(v, i) != 0); break;
            default: sink += (uint64_t)ctn_gguf_arr_int(v, i); break;
            }
        }
        break;
    default: sink += v->v.u64; break;
    }
}

/* A NUL-terminated copy of a name, or false when it holds a NUL or is too long. */
static int cstr(char *dst, size_t cap, ctn_gguf_str s) {
    if (s.len == 0 || s.len >= cap || memchr(s.ptr, '\0', s.len) != NULL) return 0;
    memcpy(dst, s.ptr, s.len);
    dst[s.len] = '\0';
    return 1;
}

/* Copies g through the writer; the result must open again with the same counts. */
static void roundtrip(const ctn_gguf *g) {
    /* A huge declared alignment makes the writer emit that much padding; skip those. */
    if (ctn_gguf_alignment(g) > 4096) return;
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    if (w == NULL) return;
    char name[512];
    int64_t n_kv = 0, n_t = 0;
    for (int64_t i = 0; i < ctn_gguf_n_kv(g); i++) {
        if (!cstr(name, sizeof name, ctn_gguf_key(g, i))) continue;
        if (ctn_gguf_writer_set_value(w, name, ctn_gguf_value_at(g, i)) != 0) __builtin_trap();
        n_kv++;
    }
    for (int64_t i = 0; i < ctn_gguf_n_tensors(g); i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
        if (!cstr(name, sizeof name, t->name)) continue;
        uint32_t nd = t->n_dims ? t->n_dims : 1; /* the writer wants at least one dim */
        if (ctn_gguf_writer_add_tensor(w, name, t->type, nd, t->ne, t->data) != 0) {
            __builtin_trap();
        }
        n_t++;
    }
    void *mem = NULL;
    size_t size = 0;
    if (ctn_gguf_writer_write_memory(w, &mem, &size) == 0) {
        ctn_gguf *g2 = NULL;
        char err[512];
        if (ctn_gguf_open_memory(&g2, mem, size, "copy", err, sizeof err) != 0) {
            fprintf(stderr, "writer output rejected: %s\n", err);
            __builtin_trap();
        }
        if (ctn_gguf_n_kv(g2) != n_kv || ctn_gguf_n_tensors(g2) != n_t) __builtin_trap();
        ctn_gguf_free(g2);
    }
    free(mem);
    ctn_gguf_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ctn_gguf *g = NULL;
    char err[1024];
    err[0] = '\0';
    int rc = ctn_gguf_open_memory(&g, data, size, "fuzz.gguf", err, sizeof err);
    if (rc < 0) {
        if (g != NULL) __builtin_trap();
        /* Format errors must say where; other codes (ENOTSUP, ENOMEM) must say something. */
        if (rc == CTN_EFORMAT && strstr(err, "offset") == NULL) __builtin_trap();
        if (err[0] == '\0') __builtin_trap();
        return 0;
    }
    char name[512] = "";
    sink += ctn_gguf_version(g) + ctn_gguf_alignment(g) + ctn_gguf_data_offset(g);
    for (int64_t i = 0; i < ctn_gguf_n_kv(g); i++) {
        ctn_gguf_str k = ctn_gguf_key(g, i);
        touch_bytes(k.ptr, k.len);
        touch_value(ctn_gguf_value_at(g, i));
        if (cstr(name, sizeof name, k)) {
            if (ctn_gguf_find_key(g, name) != i) __builtin_trap();
            int64_t iv;
            double dv;
            ctn_gguf_get_int(g, name, &iv);
            ctn_gguf_get_float(g, name, &dv);
        }
    }
    for (int64_t i = 0; i < ctn_gguf_n_tensors(g); i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
        touch_bytes(t->name.ptr, t->name.len);
        if (t->nbytes > 0) {
            const uint8_t *d = t->data;
            sink += d[0] + d[t->nbytes - 1];
        }
        if ((uintptr_t)((const uint8_t *)t->data - data) % ctn_gguf_alignment(g) != 0) {
            __builtin_trap();
        }
        if (ctn_gguf_tensor_nelements(t) < 0) __builtin_trap();
        if (cstr(name, sizeof name, t->name) && ctn_gguf_find_tensor(g, name) != t) {
            __builtin_trap();
        }
    }
    roundtrip(g);
    ctn_gguf_free(g);
    return 0;
}

#ifdef CTN_FUZZ_MAKE_CORPUS
/* Writes a few tiny valid files covering every value type, nesting and tensor layout. */
static int save(ctn_gguf_writer *w, const char *dir, const char *name) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = ctn_gguf_writer_write(w, path, err, sizeof err);
    if (rc < 0) fprintf(stderr, "%s\n", err);
    ctn_gguf_writer_free(w);
    return rc;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    int rc = 0;

    ctn_gguf_writer *w = ctn_gguf_writer_new();
    rc |= save(w, dir, "empty.gguf");

    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_u8(w, "u8", 1);
    ctn_gguf_writer_set_i8(w, "i8", -1);
    ctn_gguf_writer_set_u16(w, "u16", 2);
    ctn_gguf_writer_set_i16(w, "i16", -2);
    ctn_gguf_writer_set_u32(w, "u32", 3);
    ctn_gguf_writer_set_i32(w, "i32", -3);
    ctn_gguf_writer_set_u64(w, "u64", 4);
    ctn_gguf_writer_set_i64(w, "i64", -4);
    ctn_gguf_writer_set_f32(w, "f32", 0.5f);
    ctn_gguf_writer_set_f64(w, "f64", 0.25);
    ctn_gguf_writer_set_bool(w, "b", 1);
    ctn_gguf_writer_set_str(w, "s", "str");
    rc |= save(w, dir, "scalars.gguf");

    w = ctn_gguf_writer_new();
    const char *toks[] = {"<s>", "</s>", "a", "b"};
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    float scores[] = {0, 0, -1, -2};
    ctn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CTN_GGUF_FLOAT32, scores, 4);
    int32_t types[] = {3, 3, 1, 1};
    ctn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CTN_GGUF_INT32, types, 4);
    int32_t in0[] = {1, 2};
    ctn_gguf_str sv[] = {{"x", 1}};
    ctn_gguf_value inner[] = {
        {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_INT32, 2, in0}},
        {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_STRING, 1, sv}},
    };
    ctn_gguf_value outer = {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_ARRAY, 2, inner}};
    ctn_gguf_writer_set_value(w, "nested", &outer);
    rc |= save(w, dir, "arrays.gguf");

    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "general.architecture", "llama");
    ctn_gguf_writer_set_alignment(w, 16);
    float f[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t q[34] = {0};
    int64_t ne2[] = {4, 2}, ne1[] = {32}, ne4[] = {1, 1, 2, 1};
    ctn_gguf_writer_add_tensor(w, "a.weight", CTN_TYPE_F32, 2, ne2, f);
    ctn_gguf_writer_add_tensor(w, "b.weight", CTN_TYPE_Q8_0, 1, ne1, q);
    ctn_gguf_writer_add_tensor(w, "c.weight", CTN_TYPE_F16, 4, ne4, f);
    rc |= save(w, dir, "tensors.gguf");
    return rc ? 1 : 0;
}
#endif
