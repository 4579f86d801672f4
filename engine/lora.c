/*
 * LoRA adapters (lora.h): llama.cpp GGUF LoRA files and Hugging Face PEFT folders, checked
 * against the base model.
 *
 * A GGUF LoRA file (general.type = "adapter", adapter.type = "lora") holds, for each
 * adapted matrix "blk.N.<name>.weight" of the base model, "blk.N.<name>.weight.lora_a" with
 * ne = {n_in, rank} (rank rows of n_in values: A) and "...lora_b" with ne = {rank, n_out}
 * (n_out rows of rank values: B), in the GGUF orientation already, so no permutation is
 * needed. The scale of a pair is adapter.lora.alpha / rank, or 1 when the file has no
 * alpha (as llama.cpp does).
 *
 * A PEFT folder (what LoraModel.save_pretrained writes) holds adapter_config.json and
 * adapter_model.safetensors with "base_model.model.<module>.lora_A.weight" of shape
 * [r, in] and "...lora_B.weight" of shape [out, r] for each adapted nn.Linear, <module>
 * being the Hugging Face path ("model.layers.3.self_attn.q_proj"). Its rows are in the
 * Hugging Face order: where the model's RoPE pairs adjacent dimensions (llama's GGUF
 * layout), GGUF conversion reordered the rows of q_proj and k_proj within each head from
 * (half, i) to (i, half) (convert_hf_to_gguf.py's permute), and B of those modules is
 * reordered the same way here. The scale is alpha / r (alpha / sqrt(r) with use_rslora),
 * alpha and r per module from alpha_pattern / rank_pattern when they name it.
 */
#include "lora.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h" /* every allocation of an adapter goes through ctn__malloc (failure tests) */
#include "error.h"
#include "gguf.h"
#include "quant.h"
#include "safetensors.h"
#include "str.h"

/* The targets, in ctn_lora_target order: every name of one and the layer's weight it updates. */
static const struct {
    const char *hf, *hf_module, *gguf;
    size_t weight; /* offset of the base tensor's pointer in ctn_model_layer */
} TARGETS[CTN_LORA_N] = {
    {"q_proj", "self_attn.q_proj", "attn_q", offsetof(ctn_model_layer, wq)},
    {"k_proj", "self_attn.k_proj", "attn_k", offsetof(ctn_model_layer, wk)},
    {"v_proj", "self_attn.v_proj", "attn_v", offsetof(ctn_model_layer, wv)},
    {"o_proj", "self_attn.o_proj", "attn_output", offsetof(ctn_model_layer, wo)},
    {"gate_proj", "mlp.gate_proj", "ffn_gate", offsetof(ctn_model_layer, ffn_gate)},
    {"up_proj", "mlp.up_proj", "ffn_up", offsetof(ctn_model_layer, ffn_up)},
    {"down_proj", "mlp.down_proj", "ffn_down", offsetof(ctn_model_layer, ffn_down)},
};

const char *ctn_lora_target_hf(ctn_lora_target t) {
    return t >= 0 && t < CTN_LORA_N ? TARGETS[t].hf : "?";
}

const char *ctn_lora_target_hf_module(ctn_lora_target t) {
    return t >= 0 && t < CTN_LORA_N ? TARGETS[t].hf_module : "?";
}

const char *ctn_lora_target_gguf(ctn_lora_target t) {
    return t >= 0 && t < CTN_LORA_N ? TARGETS[t].gguf : "?";
}

const ctn_gguf_tensor *ctn_lora_target_weight(const ctn_model *m, int64_t l, ctn_lora_target t) {
    if (t < 0 || t >= CTN_LORA_N || l < 0 || l >= m->hp.n_layer) return NULL;
    const ctn_gguf_tensor *w;
    memcpy(&w, (const char *)&m->layers[l] + TARGETS[t].weight, sizeof w);
    return w;
}

size_t ctn_lora_type_size(int type) {
    return type == CTN_TYPE_F32 ? 4 : 2;
}

static float value_at(int type, const void *p, size_t i) {
    if (type == CTN_TYPE_F32) {
        float v;
        memcpy(&v, (const char *)p + i * 4, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, (const char *)p + i * 2, 2);
    return type == CTN_TYPE_F16 ? ctn_fp16_to_fp32(h) : ctn_bf16_to_fp32(h);
}

float ctn_lora_a_at(const ctn_lora_mat *m, int64_t r, int64_t i) {
    return value_at(m->type, m->a, (size_t)(r * m->n_in + i));
}

float ctn_lora_b_at(const ctn_lora_mat *m, int64_t o, int64_t r) {
    return value_at(m->type, m->bt, (size_t)ctn_lora_bt_index(m->rank, o, r));
}

/* dst (bt layout, lora.h) = B (n_out rows of rank elements of es bytes, at src), source row
 * o going to output map[o] (o itself when map is NULL). */
static void to_bt(void *dst, const void *src, int64_t n_out, int64_t rank, size_t es,
                  const int64_t *map) {
    memset(dst, 0, (size_t)ctn_lora_bt_len(rank, n_out) * es);
    for (int64_t o = 0; o < n_out; o++) {
        const int64_t d = map != NULL ? map[o] : o;
        for (int64_t r = 0; r < rank; r++)
            memcpy((char *)dst + (size_t)ctn_lora_bt_index(rank, d, r) * es,
                   (const char *)src + ((size_t)(o * rank + r)) * es, es);
    }
}

/* Rewrites the F32 matrices of mt as `to` (F16 or BF16) values. Nothing changes when a
 * value would not fit F16 (the pair stays F32). CTN_ENOMEM or 0. */
static int narrow_pair(ctn_lora_mat *mt, int to) {
    const int64_t na = mt->rank * mt->n_in, nb = ctn_lora_bt_len(mt->rank, mt->n_out);
    const float *fa = mt->a, *fb = mt->bt;
    if (to == CTN_TYPE_F16)
        for (int64_t i = 0; i < na + nb; i++) {
            const float v = i < na ? fa[i] : fb[i - na];
            if (!(fabsf(v) <= 65504.0f)) return 0;
        }
    uint16_t *ha = ctn__malloc((size_t)na * 2), *hb = ctn__malloc((size_t)nb * 2);
    if (ha == NULL || hb == NULL) {
        free(ha), free(hb);
        return CTN_ENOMEM;
    }
    for (int64_t i = 0; i < na; i++)
        ha[i] = to == CTN_TYPE_F16 ? ctn_fp32_to_fp16(fa[i]) : ctn_fp32_to_bf16(fa[i]);
    for (int64_t i = 0; i < nb; i++)
        hb[i] = to == CTN_TYPE_F16 ? ctn_fp32_to_fp16(fb[i]) : ctn_fp32_to_bf16(fb[i]);
    free(mt->a), free(mt->bt);
    mt->a = ha, mt->bt = hb, mt->type = to;
    return 0;
}

/* The precision an F32 pair is held in beside base matrix w: F32 for an F32 base, BF16 for a
 * BF16 one, F16 for F16 and quantized ones (as vLLM holds adapters in the model's dtype: the
 * base's own rounding is coarser, and each step then reads half the bytes). */
static int held_type(const ctn_gguf_tensor *w) {
    return w->type == CTN_TYPE_F32    ? CTN_TYPE_F32
           : w->type == CTN_TYPE_BF16 ? CTN_TYPE_BF16
                                      : CTN_TYPE_F16;
}

/* Fills mt's A and B^T from A (rank x n_in) and B (n_out x rank) held as `type` values
 * (F32, F16 or BF16) at pa / pb, B's rows reordered by map (or not), in the precision
 * held_type gives beside base matrix w, and counts it into a's bytes and max_rank (mt's
 * rank, n_in and n_out set already). CTN_ENOMEM or 0. */
static int set_pair(ctn_lora *a, ctn_lora_mat *mt, const ctn_gguf_tensor *w, int type,
                    const void *pa, const void *pb, const int64_t *map) {
    const size_t es = ctn_lora_type_size(type);
    mt->type = type;
    mt->a = ctn__malloc((size_t)(mt->rank * mt->n_in) * es);
    mt->bt = ctn__malloc((size_t)ctn_lora_bt_len(mt->rank, mt->n_out) * es);
    if (mt->a == NULL || mt->bt == NULL) return CTN_ENOMEM;
    memcpy(mt->a, pa, (size_t)(mt->rank * mt->n_in) * es);
    to_bt(mt->bt, pb, mt->n_out, mt->rank, es, map);
    if (type == CTN_TYPE_F32 && held_type(w) != CTN_TYPE_F32 && narrow_pair(mt, held_type(w)) < 0)
        return CTN_ENOMEM;
    a->bytes += (size_t)(mt->rank * mt->n_in + ctn_lora_bt_len(mt->rank, mt->n_out)) *
                ctn_lora_type_size(mt->type);
    if (mt->rank > a->max_rank) a->max_rank = mt->rank;
    return 0;
}

void ctn_lora_free(ctn_lora *a) {
    if (a == NULL) return;
    if (a->mats != NULL)
        for (int64_t i = 0; i < (int64_t)a->n_layer * CTN_LORA_N; i++) {
            free(a->mats[i].a);
            free(a->mats[i].bt);
        }
    free(a->mats);
    free(a->path);
    free(a);
}

static const ctn_gguf_tensor *base_of(const ctn_model *m, int64_t l, int t) {
    return ctn_lora_target_weight(m, l, (ctn_lora_target)t);
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
        if (strcmp(end + 1, TARGETS[t].gguf) == 0) {
            *layer = l;
            *target = t;
            return 0;
        }
    return -1;
}

/* The elements of t (any type the dequantizer knows) as rows x cols floats, malloc'd into
 * *out: 0, CTN_ENOTSUP (a type or row length it cannot read) or CTN_ENOMEM. */
static int to_f32(const ctn_gguf_tensor *t, int64_t rows, int64_t cols, float **out) {
    *out = NULL;
    if (!ctn_quant_supported(t->type)) return CTN_ENOTSUP;
    if (cols % ctn_type_block_size(t->type) != 0) return CTN_ENOTSUP;
    float *f = ctn__malloc((size_t)rows * (size_t)cols * sizeof *f);
    if (f == NULL) return CTN_ENOMEM;
    const size_t row_bytes =
        (size_t)(cols / ctn_type_block_size(t->type)) * ctn_type_block_bytes(t->type);
    for (int64_t r = 0; r < rows; r++)
        if (ctn_dequantize_row(t->type, (const char *)t->data + (size_t)r * row_bytes,
                               f + (size_t)r * (size_t)cols, cols) < 0) {
            free(f);
            return CTN_ENOTSUP;
        }
    *out = f;
    return 0;
}

/* Reads the adapter in g (path names it in messages; g stays the caller's) into a. */
static int from_gguf(const ctn_model *m, const ctn_gguf *g, const char *path, int32_t max_rank,
                     ctn_lora *a, char *err, size_t errcap) {
    int rc = 0;
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
    const ctn_gguf_tensor **ta = ctn__calloc((size_t)n_layer * CTN_LORA_N, sizeof *ta);
    const ctn_gguf_tensor **tb = ctn__calloc((size_t)n_layer * CTN_LORA_N, sizeof *tb);
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
    a->mats = rc == 0 ? ctn__calloc((size_t)n_layer * CTN_LORA_N, sizeof *a->mats) : NULL;
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
                          (long long)l, TARGETS[k].gguf, A ? "a" : "b", A ? "b" : "a");
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
                          path, (long long)l, TARGETS[k].gguf, (long long)A->ne[0],
                          (long long)A->ne[1], (long long)B->ne[0], (long long)B->ne[1],
                          (long long)n_in, (long long)n_out, (long long)n_in, (long long)n_out);
                rc = CTN_EFORMAT;
                break;
            }
            if (max_rank > 0 && rank > max_rank) {
                ctn__errf(err, errcap, "%s: blk.%lld.%s.weight has rank %lld, above the limit %d",
                          path, (long long)l, TARGETS[k].gguf, (long long)rank, (int)max_rank);
                rc = CTN_ERANGE;
                break;
            }
            ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + k];
            mt->rank = (int32_t)rank;
            mt->n_in = n_in;
            mt->n_out = n_out;
            mt->scale = alpha != 0 ? (float)(alpha / (double)rank) : 1.0f;
            if (!isfinite(mt->scale)) { /* a NaN or huge adapter.lora.alpha */
                ctn__errf(err, errcap,
                          "%s: blk.%lld.%s.weight: adapter.lora.alpha %g / rank %lld is not a "
                          "finite scale",
                          path, (long long)l, TARGETS[k].gguf, alpha, (long long)rank);
                rc = CTN_EFORMAT;
                break;
            }
            /* F32, F16 and BF16 are kept as they are; other types are widened to F32. */
            const bool keep =
                A->type == B->type &&
                (A->type == CTN_TYPE_F32 || A->type == CTN_TYPE_F16 || A->type == CTN_TYPE_BF16);
            float *fa = NULL, *fb = NULL;
            if (!keep && (rc = to_f32(A, rank, n_in, &fa)) == 0) rc = to_f32(B, n_out, rank, &fb);
            if (rc < 0) {
                free(fa), free(fb);
                if (rc == CTN_ENOMEM)
                    ctn__errf(err, errcap, "out of memory");
                else
                    ctn__errf(err, errcap, "%s: blk.%lld.%s.weight: lora tensors of type %s/%s %s",
                              path, (long long)l, TARGETS[k].gguf, ctn_type_name(A->type),
                              ctn_type_name(B->type),
                              "cannot be read (F32, F16, BF16 and the quantized types are)");
                break;
            }
            rc = keep ? set_pair(a, mt, w, A->type, A->data, B->data, NULL)
                      : set_pair(a, mt, w, CTN_TYPE_F32, fa, fb, NULL);
            free(fa), free(fb);
            if (rc < 0) {
                ctn__errf(err, errcap, "out of memory");
                break;
            }
        }
    if (rc == 0 && a->max_rank == 0) {
        ctn__errf(err, errcap, "%s: the adapter has no lora_a / lora_b tensors", path);
        rc = CTN_EFORMAT;
    }
    free(ta), free(tb);
out:
    return rc;
}

/* ---- Hugging Face PEFT folders ---- */

#define PEFT_PREFIX     "base_model.model."
#define PEFT_CONFIG_MAX ((size_t)1 << 20) /* bytes of adapter_config.json */

/* The contents of a small file, NUL-terminated, or NULL with the reason in err. */
static char *read_small(const char *path, size_t cap, int *rc, char *err, size_t errcap) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        ctn__errf(err, errcap, "%s: %s", path, strerror(errno));
        *rc = errno == ENOENT ? CTN_ENOENT : CTN_EIO;
        return NULL;
    }
    char *buf = ctn__malloc(cap + 1);
    size_t n = buf != NULL ? fread(buf, 1, cap + 1, f) : 0;
    const bool bad = buf != NULL && ferror(f);
    fclose(f);
    if (buf == NULL || bad || n > cap) {
        ctn__errf(err, errcap,
                  buf == NULL ? "out of memory"
                  : bad       ? "%s: read failed"
                              : "%s: larger than %zu bytes",
                  path, cap);
        *rc = buf == NULL ? CTN_ENOMEM : bad ? CTN_EIO : CTN_EFORMAT;
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* PCRE2's memory goes through the failure-injecting wrappers too. */
static void *pcre_alloc(size_t n, void *ud) {
    (void)ud;
    return ctn__malloc(n);
}

static void pcre_free(void *p, void *ud) {
    (void)ud;
    free(p);
}

/* Steps one key of a pattern may take against one module name: PEFT's patterns are names
 * or simple alternations, and this keeps a pathological key (catastrophic backtracking) from
 * stalling the load; such a key is an error, not a silent miss. */
#define PATTERN_MATCH_LIMIT 100000

/* The value of the first key of pattern (an object of numbers, PEFT's rank_pattern or
 * alpha_pattern) that matches module as Python's re.match(r"(^|.*\.)(KEY)$") does. 1 with
 * *out set, 0 when none matches, or a negative code (a key that is not a valid pattern, or
 * CTN_ENOMEM). */
static int pattern_value(const cJSON *pattern, const char *what, const char *module,
                         const char *path, double *out, char *err, size_t errcap) {
    if (pattern == NULL) return 0;
    pcre2_general_context *gc = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
    pcre2_compile_context *cc = gc != NULL ? pcre2_compile_context_create(gc) : NULL;
    pcre2_match_context *mc = cc != NULL ? pcre2_match_context_create(gc) : NULL;
    char *re_src = NULL;
    pcre2_code *re = NULL;
    pcre2_match_data *md = NULL;
    int rc = 0;
    if (mc == NULL) goto nomem;
    pcre2_set_match_limit(mc, PATTERN_MATCH_LIMIT);
    for (const cJSON *e = pattern->child; e != NULL && rc == 0; e = e->next) {
        if (!cJSON_IsNumber(e) || e->string == NULL) {
            ctn__errf(err, errcap, "%s: adapter_config.json: %s[\"%s\"] is not a number", path,
                      what, e->string ? e->string : "");
            rc = CTN_EFORMAT;
            break;
        }
        if (strcmp(e->string, module) == 0) {
            *out = e->valuedouble;
            rc = 1;
            break;
        }
        const size_t kl = strlen(e->string);
        if ((re_src = ctn__malloc(kl + 32)) == NULL) goto nomem;
        snprintf(re_src, kl + 32, "^(?:|.*\\.)(?:%s)$", e->string);
        int ec;
        PCRE2_SIZE eo;
        re = pcre2_compile((PCRE2_SPTR)re_src, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, cc);
        free(re_src);
        re_src = NULL;
        if (re == NULL) {
            if (ec == PCRE2_ERROR_HEAP_FAILED) goto nomem;
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof msg);
            ctn__errf(err, errcap, "%s: adapter_config.json: %s key \"%s\" is not a pattern: %s",
                      path, what, e->string, (const char *)msg);
            rc = CTN_EFORMAT;
            break;
        }
        if ((md = pcre2_match_data_create_from_pattern(re, gc)) == NULL) goto nomem;
        const int hit = pcre2_match(re, (PCRE2_SPTR)module, PCRE2_ZERO_TERMINATED, 0, 0, md, mc);
        pcre2_match_data_free(md);
        pcre2_code_free(re);
        md = NULL, re = NULL;
        if (hit == PCRE2_ERROR_NOMEMORY) goto nomem;
        if (hit >= 0) {
            *out = e->valuedouble;
            rc = 1;
        } else if (hit != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(hit, msg, sizeof msg);
            ctn__errf(err, errcap,
                      "%s: adapter_config.json: %s key \"%s\" cannot be matched against %s: %s",
                      path, what, e->string, module, (const char *)msg);
            rc = CTN_EFORMAT;
        }
    }
    goto done;
nomem:
    ctn__errf(err, errcap, "out of memory");
    rc = CTN_ENOMEM;
done:
    free(re_src);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    pcre2_match_context_free(mc);
    pcre2_compile_context_free(cc);
    pcre2_general_context_free(gc);
    return rc;
}

/* "[base_model.model.]<...>layers.N.{self_attn,mlp}.<module>.lora_{A,B}.weight" -> layer,
 * target, is_b, and the module's name without the prefix (for the patterns). -1 otherwise. */
static int parse_peft_name(const char *name, int64_t n_layer, int64_t *layer, int *target,
                           int *is_b, char *module, size_t modcap) {
    const char *s =
        strncmp(name, PEFT_PREFIX, strlen(PEFT_PREFIX)) == 0 ? name + strlen(PEFT_PREFIX) : name;
    const size_t n = strlen(s), k = strlen(".lora_A.weight");
    if (n <= k || n - k >= modcap) return -1;
    if (strcmp(s + n - k, ".lora_A.weight") == 0)
        *is_b = 0;
    else if (strcmp(s + n - k, ".lora_B.weight") == 0)
        *is_b = 1;
    else
        return -1;
    memcpy(module, s, n - k);
    module[n - k] = 0;
    const char *p = module;
    for (;;) { /* the last "layers." that starts a path component */
        const char *q = strstr(p, "layers.");
        if (q == NULL) break;
        if (q == module || q[-1] == '.') s = q;
        p = q + 1;
    }
    if (s < module || s >= module + (n - k)) return -1;
    s += strlen("layers.");
    if (*s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    const long long l = strtoll(s, &end, 10);
    if (errno != 0 || *end != '.' || l < 0 || l >= n_layer) return -1;
    static const char *const PARENT[CTN_LORA_N] = {
        "self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp"};
    for (int t = 0; t < CTN_LORA_N; t++) {
        const size_t pl = strlen(PARENT[t]);
        if (strncmp(end + 1, PARENT[t], pl) == 0 && end[1 + pl] == '.' &&
            strcmp(end + 2 + pl, TARGETS[t].hf) == 0) {
            *layer = l;
            *target = t;
            return 0;
        }
    }
    return -1;
}

/* Where GGUF conversion puts each of the n_out rows of llama's q_proj / k_proj (n_head heads):
 * within a head, Hugging Face's row (half, i) becomes row (i, half). */
static void rope_rows(int64_t *map, int64_t n_out, int64_t n_head) {
    const int64_t hd = n_out / n_head, half = hd / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t s = 0; s < 2; s++)
            for (int64_t i = 0; i < half; i++)
                map[h * hd + s * half + i] = h * hd + i * 2 + s;
}

/* Reads r, lora_alpha and use_rslora from adapter_config.json (PEFT's defaults when absent)
 * and refuses the settings catena cannot serve, naming them. */
static int peft_config(const cJSON *cfg, const char *path, int64_t *r, double *alpha, bool *rslora,
                       char *err, size_t errcap) {
    const cJSON *v;
    if (!cJSON_IsObject(cfg)) {
        ctn__errf(err, errcap, "%s: adapter_config.json is not a JSON object", path);
        return CTN_EFORMAT;
    }
    v = cJSON_GetObjectItemCaseSensitive(cfg, "peft_type");
    if (v != NULL && (!cJSON_IsString(v) || strcmp(v->valuestring, "LORA") != 0)) {
        ctn__errf(
            err, errcap, "%s: adapter_config.json: peft_type is %s%s%s, only \"LORA\" is served",
            path, cJSON_IsString(v) ? "\"" : "",
            cJSON_IsString(v) ? v->valuestring : "not a string", cJSON_IsString(v) ? "\"" : "");
        return CTN_ENOTSUP;
    }
    *r = 8; /* PEFT's defaults */
    *alpha = 8;
    *rslora = false;
    v = cJSON_GetObjectItemCaseSensitive(cfg, "r");
    if (v != NULL) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65536 ||
            v->valuedouble != (double)(int64_t)v->valuedouble) {
            ctn__errf(err, errcap, "%s: adapter_config.json: r is not a positive integer", path);
            return CTN_EFORMAT;
        }
        *r = (int64_t)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(cfg, "lora_alpha");
    if (v != NULL) {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
            ctn__errf(err, errcap, "%s: adapter_config.json: lora_alpha is not a number", path);
            return CTN_EFORMAT;
        }
        *alpha = v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(cfg, "use_rslora");
    if (v != NULL && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) {
            ctn__errf(err, errcap, "%s: adapter_config.json: use_rslora is not true or false",
                      path);
            return CTN_EFORMAT;
        }
        *rslora = cJSON_IsTrue(v);
    }
    v = cJSON_GetObjectItemCaseSensitive(cfg, "fan_in_fan_out");
    if (cJSON_IsTrue(v)) {
        ctn__errf(err, errcap,
                  "%s: adapter_config.json: fan_in_fan_out is true (an adapter for Conv1D "
                  "layers, GPT-2 style); these architectures have nn.Linear layers",
                  path);
        return CTN_ENOTSUP;
    }
    v = cJSON_GetObjectItemCaseSensitive(cfg, "use_dora");
    if (cJSON_IsTrue(v)) {
        ctn__errf(err, errcap, "%s: adapter_config.json: use_dora is true; DoRA is not served",
                  path);
        return CTN_ENOTSUP;
    }
    v = cJSON_GetObjectItemCaseSensitive(cfg, "modules_to_save");
    if (v != NULL && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0)) {
        const cJSON *first = cJSON_IsArray(v) ? v->child : NULL;
        ctn__errf(err, errcap,
                  "%s: adapter_config.json: modules_to_save (%s%s%s) holds whole trained "
                  "modules, which catena does not swap per request",
                  path, cJSON_IsString(first) ? "\"" : "",
                  cJSON_IsString(first) ? first->valuestring : "...",
                  cJSON_IsString(first) ? "\", ..." : "");
        return CTN_ENOTSUP;
    }
    v = cJSON_GetObjectItemCaseSensitive(cfg, "target_modules");
    if (cJSON_IsArray(v)) {
        for (const cJSON *e = v->child; e != NULL; e = e->next) {
            if (!cJSON_IsString(e)) {
                ctn__errf(err, errcap, "%s: adapter_config.json: target_modules holds a non-string",
                          path);
                return CTN_EFORMAT;
            }
            const char *dot = strrchr(e->valuestring, '.');
            const char *last = dot ? dot + 1 : e->valuestring;
            bool known = false;
            for (int t = 0; t < CTN_LORA_N; t++)
                known |= strcmp(last, TARGETS[t].hf) == 0;
            if (!known) {
                ctn__errf(err, errcap,
                          "%s: adapter_config.json: target module \"%s\" has no counterpart "
                          "in the GGUF model (catena adapts q_proj, k_proj, v_proj, o_proj, "
                          "gate_proj, up_proj, down_proj)",
                          path, e->valuestring);
                return CTN_ENOTSUP;
            }
        }
    } else if (v != NULL && !cJSON_IsString(v) && !cJSON_IsNull(v)) {
        /* A string is a regular expression over module names: the tensors say what it hit. */
        ctn__errf(err, errcap,
                  "%s: adapter_config.json: target_modules is neither a list nor a string", path);
        return CTN_EFORMAT;
    }
    for (int i = 0; i < 2; i++) {
        v = cJSON_GetObjectItemCaseSensitive(cfg, i ? "alpha_pattern" : "rank_pattern");
        if (v != NULL && !cJSON_IsNull(v) && !cJSON_IsObject(v)) {
            ctn__errf(err, errcap, "%s: adapter_config.json: %s is not an object", path,
                      i ? "alpha_pattern" : "rank_pattern");
            return CTN_EFORMAT;
        }
    }
    return 0;
}

/* What adapter_config.json says, once checked (peft_config). */
typedef struct {
    cJSON *json; /* owned */
    int64_t r;
    double alpha;
    bool rslora;
} peft_cfg;

/* Parses adapter_config.json (text, NUL-terminated; path names it in messages, dir the
 * adapter) into c, checking its settings. c->json is the caller's to delete either way. */
static int peft_parse(const char *text, const char *path, const char *dir, peft_cfg *c, char *err,
                      size_t errcap) {
    int rc;
    c->json = ctn__json_parse(text, strlen(text), false, NULL, &rc);
    if (c->json == NULL) {
        ctn__errf(err, errcap, "%s: %s", path,
                  rc == CTN_ENOMEM ? "out of memory parsing it" : "not valid JSON");
        return rc;
    }
    return peft_config(c->json, dir, &c->r, &c->alpha, &c->rslora, err, errcap);
}

/* Reads the tensors of adapter_model.safetensors (f) into a, as c says (dir names the
 * adapter in messages). */
static int from_peft(const ctn_model *m, const peft_cfg *c, const ctn_st *f, const char *dir,
                     int32_t max_rank, ctn_lora *a, char *err, size_t errcap) {
    const int64_t r = c->r;
    const double alpha = c->alpha;
    const bool rslora = c->rslora;
    const cJSON *rank_pat = cJSON_GetObjectItemCaseSensitive(c->json, "rank_pattern");
    const cJSON *alpha_pat = cJSON_GetObjectItemCaseSensitive(c->json, "alpha_pattern");
    const int64_t n_layer = m->hp.n_layer;
    const ctn_st_tensor **ta = NULL, **tb = NULL;
    char(*mod)[192] = NULL;
    int rc = 0;
    ta = ctn__calloc((size_t)n_layer * CTN_LORA_N, sizeof *ta);
    tb = ctn__calloc((size_t)n_layer * CTN_LORA_N, sizeof *tb);
    mod = ctn__calloc((size_t)n_layer * CTN_LORA_N, sizeof *mod);
    a->n_layer = (int32_t)n_layer;
    a->mats = ctn__calloc((size_t)n_layer * CTN_LORA_N, sizeof *a->mats);
    if (ta == NULL || tb == NULL || mod == NULL || a->mats == NULL) {
        ctn__errf(err, errcap, "out of memory");
        rc = CTN_ENOMEM;
    }
    for (int64_t i = 0; rc == 0 && i < ctn_st_n_tensors(f); i++) {
        const ctn_st_tensor *t = ctn_st_tensor_at(f, i);
        int64_t l;
        int k, is_b;
        char module[192];
        if (parse_peft_name(t->name, n_layer, &l, &k, &is_b, module, sizeof module) < 0) {
            ctn__errf(err, errcap,
                      "%s: tensor '%s' is not the lora_A / lora_B of a module catena adapts "
                      "(layers.N.self_attn.{q,k,v,o}_proj, layers.N.mlp.{gate,up,down}_proj, "
                      "N < %lld)",
                      dir, t->name, (long long)n_layer);
            rc = CTN_ENOTSUP;
            break;
        }
        const ctn_st_tensor **slot = is_b ? &tb[l * CTN_LORA_N + k] : &ta[l * CTN_LORA_N + k];
        if (*slot != NULL) {
            ctn__errf(err, errcap, "%s: tensors '%s' and '%s' both update %s of layer %lld", dir,
                      (*slot)->name, t->name, TARGETS[k].hf, (long long)l);
            rc = CTN_EFORMAT;
            break;
        }
        *slot = t;
        memcpy(mod[l * CTN_LORA_N + k], module, strlen(module) + 1);
    }
    for (int64_t l = 0; rc == 0 && l < n_layer; l++)
        for (int k = 0; rc == 0 && k < CTN_LORA_N; k++) {
            const ctn_st_tensor *A = ta[l * CTN_LORA_N + k], *B = tb[l * CTN_LORA_N + k];
            if (A == NULL && B == NULL) continue;
            const char *name = mod[l * CTN_LORA_N + k];
            if (A == NULL || B == NULL) {
                ctn__errf(err, errcap, "%s: %s has lora_%s but no lora_%s", dir, name,
                          A ? "A" : "B", A ? "B" : "A");
                rc = CTN_EFORMAT;
                break;
            }
            const ctn_gguf_tensor *w = base_of(m, l, k);
            const int64_t n_in = w->ne[0], n_out = w->ne[1];
            const int64_t rank = A->n_dims == 2 ? A->shape[0] : 0;
            if (A->n_dims != 2 || B->n_dims != 2 || A->shape[1] != n_in || B->shape[0] != n_out ||
                B->shape[1] != rank || rank < 1) {
                ctn__errf(err, errcap,
                          "%s: %s: lora_A is [%lld, %lld] and lora_B [%lld, %lld]; the model's "
                          "matrix (%lld in, %lld out) needs [r, %lld] and [%lld, r]",
                          dir, name, A->n_dims > 0 ? (long long)A->shape[0] : -1LL,
                          A->n_dims > 1 ? (long long)A->shape[1] : -1LL,
                          B->n_dims > 0 ? (long long)B->shape[0] : -1LL,
                          B->n_dims > 1 ? (long long)B->shape[1] : -1LL, (long long)n_in,
                          (long long)n_out, (long long)n_in, (long long)n_out);
                rc = CTN_EFORMAT;
                break;
            }
            double want_r = (double)r, al = alpha;
            if ((rc = pattern_value(rank_pat, "rank_pattern", name, dir, &want_r, err, errcap)) <
                    0 ||
                (rc = pattern_value(alpha_pat, "alpha_pattern", name, dir, &al, err, errcap)) < 0)
                break;
            rc = 0;
            if ((double)rank != want_r) {
                ctn__errf(err, errcap,
                          "%s: %s has rank %lld, but adapter_config.json gives it r = %g", dir,
                          name, (long long)rank, want_r);
                rc = CTN_EFORMAT;
                break;
            }
            if (max_rank > 0 && rank > max_rank) {
                ctn__errf(err, errcap, "%s: %s has rank %lld, above the limit %d", dir, name,
                          (long long)rank, (int)max_rank);
                rc = CTN_ERANGE;
                break;
            }
            ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + k];
            mt->rank = (int32_t)rank;
            mt->n_in = n_in;
            mt->n_out = n_out;
            mt->scale = (float)(al / (rslora ? sqrt((double)rank) : (double)rank));
            if (!isfinite(mt->scale)) { /* an alpha beyond F32's range (or alpha_pattern's) */
                ctn__errf(err, errcap, "%s: %s: lora_alpha %g / %s%lld%s is not a finite scale",
                          dir, name, al, rslora ? "sqrt(" : "", (long long)rank, rslora ? ")" : "");
                rc = CTN_EFORMAT;
                break;
            }
            const int type = A->dtype == CTN_ST_F32    ? CTN_TYPE_F32
                             : A->dtype == CTN_ST_F16  ? CTN_TYPE_F16
                             : A->dtype == CTN_ST_BF16 ? CTN_TYPE_BF16
                                                       : -1;
            if (type < 0 || B->dtype != A->dtype) {
                ctn__errf(err, errcap,
                          "%s: %s: lora tensors of dtype %s/%s cannot be read (F32, F16 and "
                          "BF16 are, both of one dtype)",
                          dir, name, ctn_st_dtype_name(A->dtype), ctn_st_dtype_name(B->dtype));
                rc = CTN_ENOTSUP;
                break;
            }
            /* llama's GGUF has q_proj / k_proj rows per head in (i, half) order. */
            const bool reorder =
                m->arch->rope == CTN_ROPE_NORM && (k == CTN_LORA_Q || k == CTN_LORA_K);
            int64_t *map = NULL;
            if (reorder) {
                const int64_t nh = k == CTN_LORA_Q ? m->hp.n_head : m->hp.n_head_kv;
                if (nh < 1 || n_out % nh != 0 || (n_out / nh) % 2 != 0) {
                    ctn__errf(err, errcap,
                              "%s: %s: cannot reorder %lld rows into RoPE pairs of %lld heads", dir,
                              name, (long long)n_out, (long long)nh);
                    rc = CTN_EFORMAT;
                    break;
                }
                map = ctn__malloc((size_t)n_out * sizeof *map);
                if (map != NULL) rope_rows(map, n_out, nh);
            }
            if ((reorder && map == NULL) || set_pair(a, mt, w, type, A->data, B->data, map) < 0) {
                free(map);
                ctn__errf(err, errcap, "out of memory");
                rc = CTN_ENOMEM;
                break;
            }
            free(map);
        }
    if (rc == 0 && a->max_rank == 0) {
        ctn__errf(err, errcap, "%s: adapter_model.safetensors has no lora_A / lora_B tensors", dir);
        rc = CTN_EFORMAT;
    }
    free(ta), free(tb), free(mod);
    return rc;
}

/* The PEFT folder dir. */
static int load_peft(const ctn_model *m, const char *dir, int32_t max_rank, ctn_lora *a, char *err,
                     size_t errcap) {
    const size_t dl = strlen(dir);
    char *path = ctn__malloc(dl + 64);
    if (path == NULL) {
        ctn__errf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    int rc = 0;
    snprintf(path, dl + 64, "%s/adapter_config.json", dir);
    char *text = read_small(path, PEFT_CONFIG_MAX, &rc, err, errcap);
    if (text == NULL) {
        free(path);
        return rc == CTN_ENOENT ? CTN_EFORMAT : rc;
    }
    peft_cfg c;
    rc = peft_parse(text, path, dir, &c, err, errcap);
    free(text);
    ctn_st *f = NULL;
    if (rc == 0) {
        snprintf(path, dl + 64, "%s/adapter_model.safetensors", dir);
        struct stat st;
        if (stat(path, &st) < 0 && errno == ENOENT) {
            snprintf(path, dl + 64, "%s/adapter_model.bin", dir);
            const bool pickle = stat(path, &st) == 0;
            ctn__errf(err, errcap,
                      pickle ? "%s: adapter_model.bin is a pickle checkpoint, which catena does "
                               "not read: save the adapter with safe_serialization=True"
                             : "%s: no adapter_model.safetensors",
                      dir);
            rc = pickle ? CTN_ENOTSUP : CTN_EFORMAT;
        } else {
            rc = ctn_st_open(&f, path, err, errcap);
        }
    }
    if (rc == 0) rc = from_peft(m, &c, f, dir, max_rank, a, err, errcap);
    ctn_st_free(f);
    cJSON_Delete(c.json);
    free(path);
    return rc;
}

/* A new, empty adapter named name (copied), or NULL (out of memory, said in err). */
static ctn_lora *lora_new(const char *name, char *err, size_t errcap) {
    const size_t n = strlen(name);
    ctn_lora *a = ctn__calloc(1, sizeof *a);
    if (a == NULL || (a->path = ctn__malloc(n + 1)) == NULL) {
        free(a);
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    memcpy(a->path, name, n + 1);
    return a;
}

/* Hands a over in *out when rc is 0, frees it otherwise; returns rc. */
static int lora_finish(ctn_lora *a, int rc, ctn_lora **out) {
    if (rc < 0) {
        ctn_lora_free(a);
        return rc;
    }
    *out = a;
    return 0;
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
    ctn_lora *a = lora_new(path, err, errcap);
    if (a == NULL) return CTN_ENOMEM;
    int rc;
    if (S_ISDIR(st.st_mode)) {
        rc = load_peft(m, path, max_rank, a, err, errcap);
    } else {
        ctn_gguf *g = NULL;
        rc = ctn_gguf_open(&g, path, err, errcap);
        if (rc == 0) rc = from_gguf(m, g, path, max_rank, a, err, errcap);
        ctn_gguf_free(g);
    }
    return lora_finish(a, rc, out);
}

int ctn_lora_load_gguf_memory(const ctn_model *m, const void *data, size_t size, const char *name,
                              int32_t max_rank, ctn_lora **out, char *err, size_t errcap) {
    if (m == NULL || (data == NULL && size > 0) || name == NULL || out == NULL || max_rank < 0) {
        ctn__errf(err, errcap,
                  "ctn_lora_load_gguf_memory: a model, the data, a name and an output are needed");
        return CTN_EINVAL;
    }
    *out = NULL;
    ctn_lora *a = lora_new(name, err, errcap);
    if (a == NULL) return CTN_ENOMEM;
    ctn_gguf *g = NULL;
    int rc = ctn_gguf_open_memory(&g, data, size, name, err, errcap);
    if (rc == 0) rc = from_gguf(m, g, name, max_rank, a, err, errcap);
    ctn_gguf_free(g);
    return lora_finish(a, rc, out);
}

int ctn_lora_load_peft_memory(const ctn_model *m, const char *config, size_t config_len,
                              const void *st, size_t st_len, const char *name, int32_t max_rank,
                              ctn_lora **out, char *err, size_t errcap) {
    if (m == NULL || (config == NULL && config_len > 0) || (st == NULL && st_len > 0) ||
        name == NULL || out == NULL || max_rank < 0) {
        ctn__errf(err, errcap,
                  "ctn_lora_load_peft_memory: a model, the two files, a name and an output are "
                  "needed");
        return CTN_EINVAL;
    }
    *out = NULL;
    ctn_lora *a = lora_new(name, err, errcap);
    if (a == NULL) return CTN_ENOMEM;
    const size_t nl = strlen(name);
    char *path = ctn__malloc(nl + 64), *text = NULL;
    int rc = 0;
    peft_cfg c = {0};
    ctn_st *f = NULL;
    if (path == NULL) goto nomem;
    snprintf(path, nl + 64, "%s/adapter_config.json", name);
    if (config_len > PEFT_CONFIG_MAX) {
        ctn__errf(err, errcap, "%s: larger than %zu bytes", path, PEFT_CONFIG_MAX);
        rc = CTN_EFORMAT;
        goto done;
    }
    if ((text = ctn__malloc(config_len + 1)) == NULL) goto nomem;
    /* The file loader reads the config as a C string: so is this one, up to a NUL in it. */
    if (config_len > 0) memcpy(text, config, config_len);
    text[config_len] = 0;
    rc = peft_parse(text, path, name, &c, err, errcap);
    if (rc == 0) {
        snprintf(path, nl + 64, "%s/adapter_model.safetensors", name);
        rc = ctn_st_open_memory(&f, st, st_len, path, err, errcap);
    }
    if (rc == 0) rc = from_peft(m, &c, f, name, max_rank, a, err, errcap);
    goto done;
nomem:
    ctn__errf(err, errcap, "out of memory");
    rc = CTN_ENOMEM;
done:
    ctn_st_free(f);
    cJSON_Delete(c.json);
    free(text);
    free(path);
    return lora_finish(a, rc, out);
}
