/*
 * Writes a model with a LoRA adapter merged into its weights (lora.h ctn_lora_merge):
 * W' = W + scale * s * B A for every matrix the adapter updates, in the tensor's own type
 * (quantized types are dequantized, updated and quantized again), everything else copied.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h" /* the merged tensors go through ctn__malloc (failure tests) */
#include "error.h"
#include "gguf.h"
#include "lora.h"
#include "quant.h"

/* The layer and target of t in m, or -1. */
static int find_target(const ctn_model *m, const ctn_gguf_tensor *t, int64_t *layer) {
    for (int64_t l = 0; l < m->hp.n_layer; l++) {
        for (int k = 0; k < CTN_LORA_N; k++)
            if (ctn_lora_target_weight(m, l, (ctn_lora_target)k) == t) {
                *layer = l;
                return k;
            }
    }
    return -1;
}

/* The merged copy of t (malloc'd into *out). */
static int merge_tensor(const ctn_gguf_tensor *t, const ctn_lora_mat *mt, float scale, void **out,
                        char *err, size_t errcap) {
    const int64_t n_in = t->ne[0], n_out = t->ne[1];
    const size_t row_bytes =
        (size_t)(n_in / ctn_type_block_size(t->type)) * ctn_type_block_bytes(t->type);
    char *dst = ctn__malloc(row_bytes * (size_t)n_out);
    float *row = ctn__malloc((size_t)n_in * sizeof *row);
    float *fa = ctn__malloc((size_t)(mt->rank * n_in) * sizeof *fa); /* A widened to F32 */
    if (dst == NULL || row == NULL || fa == NULL) {
        free(dst), free(row), free(fa);
        ctn__errf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    for (int32_t r = 0; r < mt->rank; r++)
        for (int64_t i = 0; i < n_in; i++)
            fa[r * n_in + i] = ctn_lora_a_at(mt, r, i);
    const float s = scale * mt->scale;
    for (int64_t o = 0; o < n_out; o++) {
        const char *src = (const char *)t->data + (size_t)o * row_bytes;
        int rc = ctn_dequantize_row(t->type, src, row, n_in);
        if (rc == 0) {
            for (int32_t r = 0; r < mt->rank; r++) {
                const float c = s * ctn_lora_b_at(mt, o, r);
                const float *a = fa + (size_t)r * (size_t)n_in;
                for (int64_t i = 0; i < n_in; i++)
                    row[i] += c * a[i];
            }
            rc = ctn_quantize_row(t->type, row, dst + (size_t)o * row_bytes, n_in);
        }
        if (rc < 0) {
            free(dst), free(row), free(fa);
            ctn__errf(err, errcap, "tensor '%.*s': type %s cannot be merged into", (int)t->name.len,
                      t->name.ptr, ctn_type_name(t->type));
            return rc;
        }
    }
    free(row), free(fa);
    *out = dst;
    return 0;
}

int ctn_lora_merge(const ctn_gguf *g, const ctn_model *m, const ctn_lora *a, float scale,
                   const char *out_path, char *err, size_t errcap) {
    if (g == NULL || m == NULL || a == NULL || out_path == NULL || a->n_layer != m->hp.n_layer) {
        ctn__errf(err, errcap, "ctn_lora_merge: the adapter does not fit the model");
        return CTN_EINVAL;
    }
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    const int64_t nt = ctn_gguf_n_tensors(g);
    void **bufs = ctn__calloc((size_t)nt + 1, sizeof *bufs);
    int rc = w == NULL || bufs == NULL ? CTN_ENOMEM : 0;
    if (rc < 0) ctn__errf(err, errcap, "out of memory");
    for (int64_t i = 0; rc == 0 && i < ctn_gguf_n_kv(g); i++) {
        ctn_gguf_str k = ctn_gguf_key(g, i);
        char key[512];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        rc = ctn_gguf_writer_set_value(w, key, ctn_gguf_value_at(g, i));
        if (rc < 0) ctn__errf(err, errcap, "%s", ctn_gguf_writer_errmsg(w));
    }
    for (int64_t i = 0; rc == 0 && i < nt; i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
        const void *data = t->data;
        int64_t layer = 0;
        const int k = find_target(m, t, &layer);
        const ctn_lora_mat *mt = k >= 0 ? &a->mats[layer * CTN_LORA_N + k] : NULL;
        if (mt != NULL && mt->rank > 0 && scale != 0) {
            rc = merge_tensor(t, mt, scale, &bufs[i], err, errcap);
            data = bufs[i];
        }
        char name[512];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (rc == 0 &&
            (rc = ctn_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, data)) < 0)
            ctn__errf(err, errcap, "%s", ctn_gguf_writer_errmsg(w)); /* CTN_ENOMEM, CTN_EINVAL */
    }
    if (rc == 0) rc = ctn_gguf_writer_write(w, out_path, err, errcap);
    if (bufs != NULL)
        for (int64_t i = 0; i < nt; i++)
            free(bufs[i]);
    free(bufs);
    ctn_gguf_writer_free(w);
    return rc;
}
