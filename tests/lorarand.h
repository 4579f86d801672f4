/*
 * Random LoRA adapters in memory for the engine's tests (lora.h layout, malloc'd as
 * ctn_lora_free expects), and the comparisons those tests make. Header-only.
 *
 *     ctn_lora *a = lorarand_make(model, 4, 0x7Fu, seed, 0.05f);   // rank 4, every target
 */
#ifndef CTN_TESTS_LORARAND_H
#define CTN_TESTS_LORARAND_H

#include <math.h>
#include <stdlib.h>

#include "lora.h"
#include "model.h"
#include "quant.h"
#include "randmodel.h"

/* The base matrix of target t in layer l. */
static inline const ctn_gguf_tensor *lorarand_base(const ctn_model *m, int64_t l, int t) {
    const ctn_model_layer *ly = &m->layers[l];
    const ctn_gguf_tensor *w[CTN_LORA_N] = {ly->wq,       ly->wk,     ly->wv,      ly->wo,
                                            ly->ffn_gate, ly->ffn_up, ly->ffn_down};
    return w[t];
}

/* Rounds v to what a matrix of this type holds, and stores it at element i of p. */
static inline void lorarand_put(int type, void *p, int64_t i, float v) {
    if (type == CTN_TYPE_F32)
        ((float *)p)[i] = v;
    else
        ((uint16_t *)p)[i] = type == CTN_TYPE_F16 ? ctn_fp32_to_fp16(v) : ctn_fp32_to_bf16(v);
}

/* An adapter of the given rank on the targets whose bit is set in mask, A and B normal with
 * standard deviation sd, pair scale 2 / rank, held as type (F32, F16 or BF16). */
static inline ctn_lora *lorarand_make_typed(const ctn_model *m, int32_t rank, unsigned mask,
                                            uint64_t seed, float sd, int type) {
    ctn_lora *a = calloc(1, sizeof *a);
    a->n_layer = (int32_t)m->hp.n_layer;
    a->mats = calloc((size_t)a->n_layer * CTN_LORA_N, sizeof *a->mats);
    a->max_rank = rank;
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            if (!(mask & (1u << t))) continue;
            const ctn_gguf_tensor *w = lorarand_base(m, l, t);
            ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + t];
            mt->rank = rank;
            mt->n_in = w->ne[0];
            mt->n_out = w->ne[1];
            mt->scale = 2.0f / (float)rank;
            mt->type = type;
            const size_t es = type == CTN_TYPE_F32 ? 4 : 2;
            void *pa = malloc((size_t)rank * (size_t)mt->n_in * es);
            void *pbt = calloc((size_t)ctn_lora_bt_len(rank, mt->n_out), es);
            for (int64_t i = 0; i < rank * mt->n_in; i++)
                lorarand_put(type, pa, i, sd * rng_normal(&seed));
            for (int64_t o = 0; o < mt->n_out; o++) /* B row by row, stored transposed */
                for (int64_t r = 0; r < rank; r++)
                    lorarand_put(type, pbt, ctn_lora_bt_index(rank, o, r), sd * rng_normal(&seed));
            mt->a = pa;
            mt->bt = pbt;
            a->bytes += (size_t)(rank * mt->n_in + ctn_lora_bt_len(rank, mt->n_out)) * es;
        }
    return a;
}

static inline ctn_lora *lorarand_make(const ctn_model *m, int32_t rank, unsigned mask,
                                      uint64_t seed, float sd) {
    return lorarand_make_typed(m, rank, mask, seed, sd, CTN_TYPE_F32);
}

static inline int32_t lorarand_argmax(const float *v, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = (int32_t)i;
    return b;
}

/* ggml's normalised error: max |a - b| / max |b|. */
static inline double lorarand_norm_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || d != d) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

#endif
