/*
 * Loading a `llama` model: hyperparameters from the metadata, weights mapped in place and
 * checked against them. See model.h for what is checked and why.
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

/* ---- metadata --------------------------------------------------------------------------- */

/* Reads the integer llama.<key>. A missing key gives `def` when def >= 0, else an error. */
static int get_dim(const ctn_gguf *g, const char *key, int64_t def, int64_t *out, char *err,
                   size_t errlen) {
    char full[128];
    snprintf(full, sizeof full, "llama.%s", key);
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

/* Reads the number llama.<key>; a missing key gives `def` when `required` is false. */
static int get_real(const ctn_gguf *g, const char *key, bool required, double def, float *out,
                    char *err, size_t errlen) {
    char full[128];
    snprintf(full, sizeof full, "llama.%s", key);
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

static int read_hparams(const ctn_gguf *g, ctn_model_hparams *hp, char *err, size_t errlen) {
    int rc;
    if ((rc = get_dim(g, "embedding_length", -1, &hp->n_embd, err, errlen)) < 0 ||
        (rc = get_dim(g, "feed_forward_length", -1, &hp->n_ff, err, errlen)) < 0 ||
        (rc = get_dim(g, "block_count", -1, &hp->n_layer, err, errlen)) < 0 ||
        (rc = get_dim(g, "context_length", -1, &hp->n_ctx_train, err, errlen)) < 0 ||
        (rc = get_dim(g, "attention.head_count", -1, &hp->n_head, err, errlen)) < 0 ||
        (rc = get_dim(g, "attention.head_count_kv", hp->n_head, &hp->n_head_kv, err, errlen)) < 0 ||
        (rc = get_real(g, "attention.layer_norm_rms_epsilon", true, 0, &hp->norm_eps, err,
                       errlen)) < 0 ||
        (rc = get_real(g, "rope.freq_base", false, 10000.0, &hp->rope_base, err, errlen)) < 0)
        return rc;
    if (hp->n_embd % hp->n_head != 0) {
        ctn__errf(err, errlen,
                  "model: llama.embedding_length %" PRId64
                  " is not a multiple of llama.attention.head_count %" PRId64,
                  hp->n_embd, hp->n_head);
        return CTN_EFORMAT;
    }
    if (hp->n_head % hp->n_head_kv != 0) {
        ctn__errf(err, errlen,
                  "model: llama.attention.head_count %" PRId64
                  " is not a multiple of llama.attention.head_count_kv %" PRId64,
                  hp->n_head, hp->n_head_kv);
        return CTN_EFORMAT;
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    /* Heads of another width than n_embd / n_head (attention.key_length) are not computed. */
    int64_t kl;
    if ((rc = get_dim(g, "attention.key_length", hp->head_dim, &kl, err, errlen)) < 0) return rc;
    int64_t vl;
    if ((rc = get_dim(g, "attention.value_length", hp->head_dim, &vl, err, errlen)) < 0) return rc;
    if (kl != hp->head_dim || vl != hp->head_dim) {
        ctn__errf(err, errlen,
                  "model: llama.attention.key_length/value_length %" PRId64 "/%" PRId64
                  " differ from embedding_length / head_count = %" PRId64 " (not supported)",
                  kl, vl, hp->head_dim);
        return CTN_ENOTSUP;
    }
    if ((rc = get_dim(g, "rope.dimension_count", hp->head_dim, &hp->n_rot, err, errlen)) < 0)
        return rc;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0) {
        ctn__errf(err, errlen,
                  "model: llama.rope.dimension_count %" PRId64
                  " must be even and at most the head dimension %" PRId64,
                  hp->n_rot, hp->head_dim);
        return CTN_EFORMAT;
    }
    const char *st;
    size_t stn;
    if (ctn_gguf_get_str(g, "llama.rope.scaling.type", &st, &stn) == 0 &&
        !(stn == 4 && memcmp(st, "none", 4) == 0)) {
        ctn__errf(err, errlen, "model: llama.rope.scaling.type \"%.*s\" is not supported", (int)stn,
                  st);
        return CTN_ENOTSUP;
    }
    /* The vocabulary size: llama.vocab_size, else the tokenizer's token count, else 0 (the
     * embedding's row count decides, see load_tensors). */
    const ctn_gguf_value *toks;
    hp->n_vocab = 0;
    if ((rc = get_dim(g, "vocab_size", 0, &hp->n_vocab, err, errlen)) < 0) return rc;
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
                  "BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K)",
                  name, tn != NULL ? tn : "?");
        return CTN_ENOTSUP;
    }
    /* Rows are a whole number of blocks: the GGUF reader rejects any other tensor. */
    return 0;
}

static int load_tensors(ctn_model *m, char *err, size_t errlen) {
    const ctn_gguf *g = m->gguf;
    ctn_model_hparams *hp = &m->hp;
    int rc;
    const ctn_gguf_tensor *te = ctn_gguf_find_tensor(g, "token_embd.weight");
    if (hp->n_vocab == 0 && te != NULL) hp->n_vocab = te->ne[1];
    if (hp->n_vocab <= 0 || hp->n_vocab > MAX_DIM) hp->n_vocab = 1; /* the shape check says why */
    const int64_t E = hp->n_embd, V = hp->n_vocab, D = hp->head_dim;
    int64_t used = 0;
    if ((rc = map_tensor(g, "token_embd.weight", E, V, false, &m->tok_embd, err, errlen)) < 0 ||
        (rc = map_tensor(g, "output_norm.weight", E, 0, false, &m->output_norm, err, errlen)) < 0 ||
        (rc = map_tensor(g, "output.weight", E, V, true, &m->output, err, errlen)) < 0 ||
        (rc = map_tensor(g, "rope_freqs.weight", hp->n_rot / 2, 0, true, &m->rope_freqs, err,
                         errlen)) < 0)
        return rc;
    used = 2 + (m->output != NULL) + (m->rope_freqs != NULL);
    if (m->output == NULL) m->output = m->tok_embd; /* tied embeddings */
    for (int64_t l = 0; l < hp->n_layer; l++) {
        ctn_model_layer *ly = &m->layers[l];
        const struct {
            const char *name;
            int64_t ne0, ne1;
            const ctn_gguf_tensor **dst;
        } spec[] = {
            {"attn_norm", E, 0, &ly->attn_norm},         {"attn_q", E, hp->n_head * D, &ly->wq},
            {"attn_k", E, hp->n_head_kv * D, &ly->wk},   {"attn_v", E, hp->n_head_kv * D, &ly->wv},
            {"attn_output", hp->n_head * D, E, &ly->wo}, {"ffn_norm", E, 0, &ly->ffn_norm},
            {"ffn_gate", E, hp->n_ff, &ly->ffn_gate},    {"ffn_down", hp->n_ff, E, &ly->ffn_down},
            {"ffn_up", E, hp->n_ff, &ly->ffn_up},
        };
        for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%" PRId64 ".%s.weight", l, spec[i].name);
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
            for (int64_t l = 0; l < hp->n_layer && !known; l++) {
                const ctn_model_layer *ly = &m->layers[l];
                known = t == ly->attn_norm || t == ly->wq || t == ly->wk || t == ly->wv ||
                        t == ly->wo || t == ly->ffn_norm || t == ly->ffn_gate ||
                        t == ly->ffn_down || t == ly->ffn_up;
            }
            if (!known) {
                ctn__errf(err, errlen,
                          "model: tensor %.*s is not part of the llama architecture this "
                          "reference computes (biases, experts and extra blocks are not "
                          "supported)",
                          (int)t->name.len, t->name.ptr);
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
    if (!(arch_len == 5 && memcmp(arch, "llama", 5) == 0)) {
        ctn__errf(err, errlen, "model: architecture \"%.*s\" is not supported (only \"llama\")",
                  (int)(arch_len > 64 ? 64 : arch_len), arch);
        return CTN_ENOTSUP;
    }
    ctn_model *m = ctn__calloc(1, sizeof *m);
    if (m == NULL) {
        ctn__errf(err, errlen, "model: out of memory");
        return CTN_ENOMEM;
    }
    m->gguf = g;
    int rc = read_hparams(g, &m->hp, err, errlen);
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
