/*
 * LoRA adapters (lora.h): llama.cpp GGUF LoRA files, checked against the base model.
 *
 * A GGUF LoRA file (general.type = "adapter", adapter.type = "lora") holds, for each
 * adapted matrix "blk.N.<name>.weight" of the base model, "blk.N.<name>.weight.lora_a" with
 * ne = {n_in, rank} (rank rows of n_in values: A) and "...lora_b" with ne = {rank, n_out}
 * (n_out rows of rank values: B), in the GGUF orientation already, so no permutation is
 * needed. The scale of a pair is adapter.lora.alpha / rank, or 1 when the file has no
 * alpha (as llama.cpp does).
 *
 * Hugging Face PEFT folders are not read yet (they need the safetensors reader): loading
 * one is an error that says so.
 */
#include "lora.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "gguf.h"
#include "quant.h"

static const char *const HF[CTN_LORA_N] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                           "gate_proj", "up_proj", "down_proj"};
static const char *const GGUF[CTN_LORA_N] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                             "ffn_gate", "ffn_up", "ffn_down"};

const char *ctn_lora_target_hf(ctn_lora_target t) {
    return t >= 0 && t < CTN_LORA_N ? HF[t] : "?";
}

const char *ctn_lora_target_gguf(ctn_lora_target t) {
    return t >= 0 && t < CTN_LORA_N ? GGUF[t] : "?";
}

void ctn_lora_free(ctn_lora *a) {
    if (a == NULL) return;
    if (a->mats != NULL)
        for (int64_t i = 0; i < (int64_t)a->n_layer * CTN_LORA_N; i++) {
            free(a->mats[i].a);
            free(a->mats[i].b);
        }
    free(a->mats);
    free(a->path);
    free(a);
}

static const ctn_gguf_tensor *base_of(const ctn_model *m, int64_t l, int t) {
    const ctn_model_layer *ly = &m->layers[l];
    const ctn_gguf_tensor *w[CTN_LORA_N] = {ly->wq,       ly->wk,     ly->wv,      ly->wo,
                                            ly->ffn_gate, ly->ffn_up, ly->ffn_down};
    return w[t];
}

/* "blk.N.<target>.weight.lora_a|b" -> layer, target, is_b; -1 when it is not such a name. */
static int parse_name(const char *s, size_t n, int64_t n_layer, int64_t *layer, int *target,
                      int *is_b) {
    char name[256];
    if (n >= sizeof name) return -1;
    memcpy(name, s, n);
    name[n] = 0;
    const size_t k = strlen(".weight.lora_a");
    if (n <= k + 4 || strncmp(name, "blk.", 4) != 0) return -1;
    if (strcmp(name + n - k, ".weight.lora_a") == 0)
        *is_b = 0;
    else if (strcmp(name + n - k, ".weight.lora_b") == 0)
        *is_b = 1;
    else
        return -1;
    name[n - k] = 0;
    char *end;
    errno = 0;
    const long long l = strtoll(name + 4, &end, 10);
    if (end == name + 4 || *end != '.' || errno != 0 || l < 0 || l >= n_layer) return -1;
    for (int t = 0; t < CTN_LORA_N; t++)
        if (strcmp(end + 1, GGUF[t]) == 0) {
            *layer = l;
            *target = t;
            return 0;
        }
    return -1;
}

/* The elements of t (any type the dequantizer knows) as rows x cols floats. */
static float *to_f32(const ctn_gguf_tensor *t, int64_t rows, int64_t cols) {
    if (!ctn_quant_supported(t->type)) return NULL;
    if (cols % ctn_type_block_size(t->type) != 0) return NULL;
    float *out = malloc((size_t)rows * (size_t)cols * sizeof *out);
    if (out == NULL) return NULL;
    const size_t row_bytes =
        (size_t)(cols / ctn_type_block_size(t->type)) * ctn_type_block_bytes(t->type);
    for (int64_t r = 0; r < rows; r++)
        if (ctn_dequantize_row(t->type, (const char *)t->data + (size_t)r * row_bytes,
                               out + (size_t)r * (size_t)cols, cols) < 0) {
            free(out);
            return NULL;
        }
    return out;
}

static int load_gguf(const ctn_model *m, const char *path, int32_t max_rank, ctn_lora *a, char *err,
                     size_t errcap) {
    ctn_gguf *g = NULL;
    int rc = ctn_gguf_open(&g, path, err, errcap);
    if (rc < 0) return rc;
    const char *s;
    size_t sl;
    if (ctn_gguf_get_str(g, "general.type", &s, &sl) < 0 || sl != 7 || memcmp(s, "adapter", 7)) {
        ctn__errf(err, errcap, "%s: not a LoRA adapter (general.type is not \"adapter\")", path);
        rc = CTN_EFORMAT;
        goto out;
    }
    if (ctn_gguf_get_str(g, "adapter.type", &s, &sl) == 0 && (sl != 4 || memcmp(s, "lora", 4))) {
        ctn__errf(err, errcap, "%s: adapter.type is \"%.*s\", not \"lora\"", path, (int)sl, s);
        rc = CTN_ENOTSUP;
        goto out;
    }
    if (ctn_gguf_get_str(g, "general.architecture", &s, &sl) < 0 || strlen(m->arch->name) != sl ||
        memcmp(s, m->arch->name, sl) != 0) {
        ctn__errf(err, errcap, "%s: an adapter for architecture \"%.*s\", the model is \"%s\"",
                  path, (int)(s ? sl : 0), s ? s : "", m->arch->name);
        rc = CTN_EFORMAT;
        goto out;
    }
    double alpha = 0;
    if (ctn_gguf_get_float(g, "adapter.lora.alpha", &alpha) < 0) alpha = 0;
    const int64_t n_layer = m->hp.n_layer;
    const ctn_gguf_tensor **ta = calloc((size_t)n_layer * CTN_LORA_N, sizeof *ta);
    const ctn_gguf_tensor **tb = calloc((size_t)n_layer * CTN_LORA_N, sizeof *tb);
    if (ta == NULL || tb == NULL) {
        free(ta), free(tb);
        ctn__errf(err, errcap, "out of memory");
        rc = CTN_ENOMEM;
        goto out;
    }
    for (int64_t i = 0; i < ctn_gguf_n_tensors(g) && rc == 0; i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
        int64_t l;
        int k, is_b;
        if (parse_name(t->name.ptr, t->name.len, n_layer, &l, &k, &is_b) < 0) {
            ctn__errf(err, errcap,
                      "%s: tensor '%.*s' is not the lora_a / lora_b of a matrix catena adapts "
                      "(blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}."
                      "weight, N < %lld)",
                      path, (int)t->name.len, t->name.ptr, (long long)n_layer);
            rc = CTN_ENOTSUP;
            break;
        }
        const ctn_gguf_tensor **slot = is_b ? &tb[l * CTN_LORA_N + k] : &ta[l * CTN_LORA_N + k];
        *slot = t;
    }
    a->n_layer = (int32_t)n_layer;
    a->mats = rc == 0 ? calloc((size_t)n_layer * CTN_LORA_N, sizeof *a->mats) : NULL;
    if (rc == 0 && a->mats == NULL) {
        ctn__errf(err, errcap, "out of memory");
        rc = CTN_ENOMEM;
    }
    for (int64_t l = 0; rc == 0 && l < n_layer; l++)
        for (int k = 0; rc == 0 && k < CTN_LORA_N; k++) {
            const ctn_gguf_tensor *A = ta[l * CTN_LORA_N + k], *B = tb[l * CTN_LORA_N + k];
            if (A == NULL && B == NULL) continue;
            if (A == NULL || B == NULL) {
                ctn__errf(err, errcap, "%s: blk.%lld.%s.weight has lora_%s but no lora_%s", path,
                          (long long)l, GGUF[k], A ? "a" : "b", A ? "b" : "a");
                rc = CTN_EFORMAT;
                break;
            }
            const ctn_gguf_tensor *w = base_of(m, l, k);
            const int64_t n_in = w->ne[0], n_out = w->ne[1], rank = A->ne[1];
            if (A->n_dims != 2 || B->n_dims != 2 || A->ne[0] != n_in || B->ne[1] != n_out ||
                B->ne[0] != rank || rank < 1) {
                ctn__errf(err, errcap,
                          "%s: blk.%lld.%s.weight: lora_a is {%lld, %lld} and lora_b {%lld, %lld}; "
                          "the model's matrix {%lld, %lld} needs {%lld, r} and {r, %lld}",
                          path, (long long)l, GGUF[k], (long long)A->ne[0], (long long)A->ne[1],
                          (long long)B->ne[0], (long long)B->ne[1], (long long)n_in,
                          (long long)n_out, (long long)n_in, (long long)n_out);
                rc = CTN_EFORMAT;
                break;
            }
            if (max_rank > 0 && rank > max_rank) {
                ctn__errf(err, errcap, "%s: blk.%lld.%s.weight has rank %lld, above the limit %d",
                          path, (long long)l, GGUF[k], (long long)rank, (int)max_rank);
                rc = CTN_ERANGE;
                break;
            }
            ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + k];
            mt->rank = (int32_t)rank;
            mt->n_in = n_in;
            mt->n_out = n_out;
            mt->scale = alpha != 0 ? (float)(alpha / (double)rank) : 1.0f;
            mt->a = to_f32(A, rank, n_in);
            mt->b = to_f32(B, n_out, rank);
            if (mt->a == NULL || mt->b == NULL) {
                ctn__errf(err, errcap, "%s: blk.%lld.%s.weight: lora tensors of type %s/%s %s",
                          path, (long long)l, GGUF[k], ctn_type_name(A->type),
                          ctn_type_name(B->type),
                          "cannot be read (F32, F16, BF16 and the quantized types are)");
                rc = CTN_ENOTSUP;
                break;
            }
            a->bytes += (size_t)(rank * n_in + n_out * rank) * sizeof(float);
            if (rank > a->max_rank) a->max_rank = (int32_t)rank;
        }
    if (rc == 0 && a->max_rank == 0) {
        ctn__errf(err, errcap, "%s: the adapter has no lora_a / lora_b tensors", path);
        rc = CTN_EFORMAT;
    }
    free(ta), free(tb);
out:
    ctn_gguf_free(g);
    return rc;
}

int ctn_lora_load(const ctn_model *m, const char *path, int32_t max_rank, ctn_lora **out, char *err,
                  size_t errcap) {
    if (m == NULL || path == NULL || out == NULL || max_rank < 0) {
        ctn__errf(err, errcap, "ctn_lora_load: a model, a path and an output are needed");
        return CTN_EINVAL;
    }
    *out = NULL;
    struct stat st;
    if (stat(path, &st) < 0) {
        ctn__errf(err, errcap, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? CTN_ENOENT : CTN_EIO;
    }
    if (S_ISDIR(st.st_mode)) {
        ctn__errf(err, errcap,
                  "%s: Hugging Face PEFT folders are not read yet (a GGUF LoRA file is: "
                  "convert with llama.cpp's convert_lora_to_gguf.py)",
                  path);
        return CTN_ENOTSUP;
    }
    ctn_lora *a = calloc(1, sizeof *a);
    if (a == NULL || (a->path = strdup(path)) == NULL) {
        free(a);
        ctn__errf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    const int rc = load_gguf(m, path, max_rank, a, err, errcap);
    if (rc < 0) {
        ctn_lora_free(a);
        return rc;
    }
    *out = a;
    return 0;
}
