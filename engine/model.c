/*
 * Loading a `llama`, `qwen2` or `qwen3` model: hyperparameters from the metadata, weights mapped in
 * place and checked against them. See model.h for what is checked and why.
 */
#include "model.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "quant.h"

/*
 * Upper bound on every size hyperparameter. Far above any real model, and small enough
 * that the product of two of them (a matrix) fits an int64_t without further checks.
 */
#define MAX_DIM ((int64_t)1 << 24)

/* ---- architectures ---------------------------------------------------------------------- */

/* From llama.cpp's llm_build_llama, llm_build_qwen2 and llm_build_qwen3 and their tensor lists. */
static const ctn_model_arch ARCHS[] = {
    {.name = "llama", .rope = CTN_ROPE_NORM, .rope_freqs = true},
    {.name = "qwen2", .rope = CTN_ROPE_NEOX, .qkv_bias = true},
    {.name = "qwen3", .rope = CTN_ROPE_NEOX, .qk_norm = true, .head_dim_from_keys = true},
};

/* ---- metadata --------------------------------------------------------------------------- */

/* Reads the integer <arch>.<key>. A missing key gives `def` when def >= 0, else an error. */
static int get_dim(const ctn_gguf *g, const char *arch, const char *key, int64_t def, int64_t *out,
                   char *err, size_t errlen) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = ctn_gguf_get_int(g, full, out);
    if (rc == CTN_ENOENT && def >= 0) {
        *out = def;
        return 0;
    }
    if (rc == CTN_ENOENT) {
        ctn__errf(err, errlen, "model: required key %s is missing", full);
        return CTN_EFORMAT;
    }
    if (rc < 0) {
        const ctn_gguf_value *v = ctn_gguf_get(g, full);
        ctn__errf(err, errlen, "model: key %s is a %s, expected an integer", full,
                  v != NULL ? ctn_gguf_type_name(v->type) : "?");
        return CTN_EFORMAT;
    }
    if (*out <= 0 || *out > MAX_DIM) {
        ctn__errf(err, errlen, "model: key %s is %" PRId64 ", expected 1..%" PRId64, full, *out,
                  MAX_DIM);
        return CTN_EFORMAT;
    }
    return 0;
}

/* Reads the number <arch>.<key>; a missing key gives `def` when `required` is false. */
static int get_real(const ctn_gguf *g, const char *arch, const char *key, bool required, double def,
                    float *out, char *err, size_t errlen) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    double d;
    int rc = ctn_gguf_get_float(g, full, &d);
    if (rc == CTN_ENOENT && !required)
        d = def;
    else if (rc == CTN_ENOENT) {
        ctn__errf(err, errlen, "model: required key %s is missing", full);
        return CTN_EFORMAT;
    } else if (rc < 0) {
        ctn__errf(err, errlen, "model: key %s is not a number", full);
        return CTN_EFORMAT;
    }
    if (!(d > 0.0) || d > 1e30) {
        ctn__errf(err, errlen, "model: key %s is %g, expected a positive number", full, d);
        return CTN_EFORMAT;
    }
    *out = (float)d;
    return 0;
}

/* Whether the metadata has <arch>.<key> at all (of any type). */
static bool has_key(const ctn_gguf *g, const char *arch, const char *key) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    return ctn_gguf_get(g, full) != NULL;
}

/*
 * The width of a head. Where the architecture allows it (qwen3), attention.key_length sets
 * it and value_length must match (llama.cpp asserts as much); elsewhere it is
 * n_embd / n_head and the two keys, when present, must say the same.
 */
static int read_head_dim(const ctn_gguf *g, const ctn_model_arch *a, ctn_model_hparams *hp,
                         char *err, size_t errlen) {
    const char *an = a->name;
    const bool own = a->head_dim_from_keys && has_key(g, an, "attention.key_length");
    int rc;
    if (!own && hp->n_embd % hp->n_head != 0) {
        ctn__errf(err, errlen,
                  "model: %s.embedding_length %" PRId64
                  " is not a multiple of %s.attention.head_count %" PRId64,
                  an, hp->n_embd, an, hp->n_head);
        return CTN_EFORMAT;
    }
    const int64_t split = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : 0;
    int64_t kl, vl;
    if ((rc = get_dim(g, an, "attention.key_length", split, &kl, err, errlen)) < 0 ||
        (rc = get_dim(g, an, "attention.value_length", kl, &vl, err, errlen)) < 0)
        return rc;
    if (own && vl != kl) {
        ctn__errf(err, errlen,
                  "model: %s.attention.value_length %" PRId64
                  " differs from %s.attention.key_length %" PRId64 " (not supported)",
                  an, vl, an, kl);
        return CTN_ENOTSUP;
    }
    if (!own && (kl != split || vl != split)) {
        ctn__errf(err, errlen,
                  "model: %s.attention.key_length/value_length %" PRId64 "/%" PRId64
                  " differ from embedding_length / head_count = %" PRId64 " (not supported)",
                  an, kl, vl, split);
        return CTN_ENOTSUP;
    }
    /* Keeps every matrix (n_embd by n_head * head_dim) within the bound of model.c. */
    if (kl > MAX_DIM / hp->n_head) {
        ctn__errf(err, errlen,
                  "model: %s.attention.key_length %" PRId64 " times head_count %" PRId64
                  " exceeds %" PRId64,
                  an, kl, hp->n_head, MAX_DIM);
        return CTN_EFORMAT;
    }
    hp->head_dim = kl;
    return 0;
}

static int read_hparams(const ctn_gguf *g, const ctn_model_arch *a, ctn_model_hparams *hp,
                        char *err, size_t errlen) {
    const char *an = a->name;
    int rc;
    if ((rc = get_dim(g, an, "embedding_length", -1, &hp->n_embd, err, errlen)) < 0 ||
        (rc = get_dim(g, an, "feed_forward_length", -1, &hp->n_ff, err, errlen)) < 0 ||
        (rc = get_dim(g, an, "block_count", -1, &hp->n_layer, err, errlen)) < 0 ||
        (rc = get_dim(g, an, "context_length", -1, &hp->n_ctx_train, err, errlen)) < 0 ||
        (rc = get_dim(g, an, "attention.head_count", -1, &hp->n_head, err, errlen)) < 0 ||
        (rc = get_dim(g, an, "attention.head_count_kv", hp->n_head, &hp->n_head_kv, err, errlen)) <
            0 ||
        (rc = get_real(g, an, "attention.layer_norm_rms_epsilon", true, 0, &hp->norm_eps, err,
                       errlen)) < 0 ||
        (rc = get_real(g, an, "rope.freq_base", false, 10000.0, &hp->rope_base, err, errlen)) < 0)
        return rc;
    if ((rc = read_head_dim(g, a, hp, err, errlen)) < 0) return rc;
    if (hp->n_head % hp->n_head_kv != 0) {
        ctn__errf(err, errlen,
                  "model: %s.attention.head_count %" PRId64
                  " is not a multiple of %s.attention.head_count_kv %" PRId64,
                  an, hp->n_head, an, hp->n_head_kv);
        return CTN_EFORMAT;
    }
    if ((rc = get_dim(g, an, "rope.dimension_count", hp->head_dim, &hp->n_rot, err, errlen)) < 0)
        return rc;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0) {
        ctn__errf(err, errlen,
                  "model: %s.rope.dimension_count %" PRId64
                  " must be even and at most the head dimension %" PRId64,
                  an, hp->n_rot, hp->head_dim);
        return CTN_EFORMAT;
    }
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", an);
    const char *st;
    size_t stn;
    if (ctn_gguf_get_str(g, key, &st, &stn) == 0 && !(stn == 4 && memcmp(st, "none", 4) == 0)) {
        ctn__errf(err, errlen, "model: %s \"%.*s\" is not supported", key, (int)stn, st);
        return CTN_ENOTSUP;
    }
    /* The vocabulary size: <arch>.vocab_size, else the tokenizer's token count, else 0 (the
     * embedding's row count decides, see load_tensors). */
    const ctn_gguf_value *toks;
    hp->n_vocab = 0;
    if ((rc = get_dim(g, an, "vocab_size", 0, &hp->n_vocab, err, errlen)) < 0) return rc;
    if (hp->n_vocab == 0 && ctn_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks) == 0)
        hp->n_vocab = (int64_t)toks->v.arr.n;
    return 0;
}

/* ---- tensors ---------------------------------------------------------------------------- */

static void format_shape(char *buf, size_t cap, const int64_t *ne, int n) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? ", %" PRId64 : "%" PRId64, ne[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/*
 * Finds tensor `name` and checks that its shape is exactly {ne0} (ne1 == 0) or {ne0, ne1}
 * and that its type can be dequantized. A missing optional tensor gives 0 and *out NULL.
 */
static int map_tensor(const ctn_gguf *g, const char *name, int64_t ne0, int64_t ne1, bool optional,
                      const ctn_gguf_tensor **out, char *err, size_t errlen) {
    const ctn_gguf_tensor *t = ctn_gguf_find_tensor(g, name);
    *out = t;
    if (t == NULL) {
        if (optional) return 0;
        ctn__errf(err, errlen, "model: tensor %s is missing", name);
        return CTN_EFORMAT;
    }
    const int64_t want[CTN_GGUF_MAX_DIMS] = {ne0, ne1 > 0 ? ne1 : 1, 1, 1};
    if (memcmp(t->ne, want, sizeof want) != 0) {
        char got[96], exp[64];
        format_shape(got, sizeof got, t->ne, t->n_dims > 0 ? (int)t->n_dims : 1);
        format_shape(exp, sizeof exp, want, ne1 > 0 ? 2 : 1);
        ctn__errf(err, errlen, "model: tensor %s has shape %s, expected %s", name, got, exp);
        return CTN_EFORMAT;
    }
    if (!ctn_quant_supported(t->type)) {
        const char *tn = ctn_type_name(t->type);
        ctn__errf(err, errlen,
                  "model: tensor %s has type %s, which has no dequantizer (expected F32, F16, "
                  "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K)",
                  name, tn != NULL ? tn : "?");
        return CTN_ENOTSUP;
    }
    /* Rows are a whole number of blocks: the GGUF reader rejects any other tensor. */
    return 0;
}

/* Whether t is one of the tensors mapped into layer ly. */
static bool in_layer(const ctn_model_layer *ly, const ctn_gguf_tensor *t) {
    const ctn_gguf_tensor *all[] = {ly->attn_norm, ly->wq,       ly->wk,       ly->wv,     ly->bq,
                                    ly->bk,        ly->bv,       ly->q_norm,   ly->k_norm, ly->wo,
                                    ly->ffn_norm,  ly->ffn_gate, ly->ffn_down, ly->ffn_up};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i] == t) return true;
    return false;
}

static int load_tensors(ctn_model *m, char *err, size_t errlen) {
    const ctn_gguf *g = m->gguf;
    const ctn_model_arch *a = m->arch;
    ctn_model_hparams *hp = &m->hp;
    int rc;
    const ctn_gguf_tensor *te = ctn_gguf_find_tensor(g, "token_embd.weight");
    if (hp->n_vocab == 0 && te != NULL) hp->n_vocab = te->ne[1];
    if (hp->n_vocab <= 0 || hp->n_vocab > MAX_DIM) hp->n_vocab = 1; /* the shape check says why */
    const int64_t E = hp->n_embd, V = hp->n_vocab, D = hp->head_dim;
    const int64_t QD = hp->n_head * D, KD = hp->n_head_kv * D;
    int64_t used = 0;
    if ((rc = map_tensor(g, "token_embd.weight", E, V, false, &m->tok_embd, err, errlen)) < 0 ||
        (rc = map_tensor(g, "output_norm.weight", E, 0, false, &m->output_norm, err, errlen)) < 0 ||
        (rc = map_tensor(g, "output.weight", E, V, true, &m->output, err, errlen)) < 0)
        return rc;
    if (a->rope_freqs && (rc = map_tensor(g, "rope_freqs.weight", hp->n_rot / 2, 0, true,
                                          &m->rope_freqs, err, errlen)) < 0)
        return rc;
    used = 2 + (m->output != NULL) + (m->rope_freqs != NULL);
    if (m->output == NULL) m->output = m->tok_embd; /* tied embeddings */
    for (int64_t l = 0; l < hp->n_layer; l++) {
        ctn_model_layer *ly = &m->layers[l];
        const struct {
            const char *name;
            int64_t ne0, ne1;
            const ctn_gguf_tensor **dst;
            bool wanted; /* part of this architecture */
        } spec[] = {
            {"attn_norm.weight", E, 0, &ly->attn_norm, true},
            {"attn_q.weight", E, QD, &ly->wq, true},
            {"attn_k.weight", E, KD, &ly->wk, true},
            {"attn_v.weight", E, KD, &ly->wv, true},
            {"attn_q.bias", QD, 0, &ly->bq, a->qkv_bias},
            {"attn_k.bias", KD, 0, &ly->bk, a->qkv_bias},
            {"attn_v.bias", KD, 0, &ly->bv, a->qkv_bias},
            {"attn_q_norm.weight", D, 0, &ly->q_norm, a->qk_norm},
            {"attn_k_norm.weight", D, 0, &ly->k_norm, a->qk_norm},
            {"attn_output.weight", QD, E, &ly->wo, true},
            {"ffn_norm.weight", E, 0, &ly->ffn_norm, true},
            {"ffn_gate.weight", E, hp->n_ff, &ly->ffn_gate, true},
            {"ffn_down.weight", hp->n_ff, E, &ly->ffn_down, true},
            {"ffn_up.weight", E, hp->n_ff, &ly->ffn_up, true},
        };
        for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
            if (!spec[i].wanted) continue;
            char name[96];
            snprintf(name, sizeof name, "blk.%" PRId64 ".%s", l, spec[i].name);
            rc = map_tensor(g, name, spec[i].ne0, spec[i].ne1, false, spec[i].dst, err, errlen);
            if (rc < 0) return rc;
            used++;
        }
    }
    /* Every tensor was found by name once, so a count mismatch means a leftover tensor. */
    if (used != ctn_gguf_n_tensors(g)) {
        for (int64_t i = 0; i < ctn_gguf_n_tensors(g); i++) {
            const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
            bool known =
                t == m->tok_embd || t == m->output_norm || t == m->output || t == m->rope_freqs;
            for (int64_t l = 0; l < hp->n_layer && !known; l++)
                known = in_layer(&m->layers[l], t);
            if (!known) {
                ctn__errf(err, errlen,
                          "model: tensor %.*s is not part of the %s architecture this "
                          "reference computes (biases, experts and extra blocks are not "
                          "supported)",
                          (int)t->name.len, t->name.ptr, a->name);
                return CTN_ENOTSUP;
            }
        }
    }
    return 0;
}

/* ---- loading ---------------------------------------------------------------------------- */

int ctn_model_load(ctn_model **out, const ctn_gguf *g, char *err, size_t errlen) {
    *out = NULL;
    const char *arch;
    size_t arch_len;
    if (ctn_gguf_get_str(g, "general.architecture", &arch, &arch_len) < 0) {
        ctn__errf(err, errlen, "model: general.architecture is missing or not a string");
        return CTN_EFORMAT;
    }
    const ctn_model_arch *a = NULL;
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0] && a == NULL; i++)
        if (arch_len == strlen(ARCHS[i].name) && memcmp(arch, ARCHS[i].name, arch_len) == 0)
            a = &ARCHS[i];
    if (a == NULL) {
        ctn__errf(err, errlen,
                  "model: architecture \"%.*s\" is not supported (only llama, qwen2, qwen3)",
                  (int)(arch_len > 64 ? 64 : arch_len), arch);
        return CTN_ENOTSUP;
    }
    ctn_model *m = ctn__calloc(1, sizeof *m);
    if (m == NULL) {
        ctn__errf(err, errlen, "model: out of memory");
        return CTN_ENOMEM;
    }
    m->gguf = g;
    m->arch = a;
    int rc = read_hparams(g, a, &m->hp, err, errlen);
    if (rc == 0) {
        m->layers = ctn__calloc((size_t)m->hp.n_layer, sizeof *m->layers);
        if (m->layers == NULL) {
            ctn__errf(err, errlen, "model: out of memory");
            rc = CTN_ENOMEM;
        }
    }
    if (rc == 0) rc = load_tensors(m, err, errlen);
    if (rc < 0) {
        ctn_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void ctn_model_free(ctn_model *m) {
    if (m == NULL) return;
    free(m->layers);
    free(m);
}
