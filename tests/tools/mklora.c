/*
 * Writes a llama.cpp-format GGUF LoRA adapter with seeded random A and B for a model, for
 * tests and benchmarks (an adapter's cost does not depend on what it learned).
 *
 *     mklora MODEL.gguf -o ADAPTER.gguf [--rank R] [--targets q,k,v,o,gate,up,down]
 *            [--alpha A] [--seed S] [--std D] [--f16] [--peft DIR]
 *
 * Defaults: rank 16, targets q,k,v,o, alpha = rank, seed 1, F32 matrices. A and B are
 * normal with standard deviation D (default 0.05 / sqrt(rank), so that the update stays
 * small; tests that want a visible change give more).
 *
 * --peft DIR also writes the same adapter as a Hugging Face PEFT folder (adapter_config.json
 * and adapter_model.safetensors, F32, or F16 with --f16), laid out as save_pretrained does
 * for the Hugging Face form of the model: for llama the rows of q_proj / k_proj's B in the
 * order GGUF conversion undoes (per head, row (i, half) of the GGUF file is row (half, i)
 * there), so loading DIR and ADAPTER.gguf must give the same matrices.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "gguf.h"
#include "lora.h"
#include "model.h"
#include "quant.h"
#include "safetensors.h"

static uint64_t rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float normal(uint64_t *s) {
    const double u = ((double)(rng(s) >> 11) + 0.5) / 9007199254740992.0;
    const double v = ((double)(rng(s) >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* Adds A (rank x n_in floats) and B (n_out x rank, GGUF row order) of layer l, target k to the
 * PEFT file, B's rows put back in the Hugging Face order where GGUF reordered them. */
static int peft_add(ctn_st_writer *w, const ctn_model *m, int64_t l, int k, int64_t rank,
                    int64_t n_in, int64_t n_out, const float *a, const float *b, int f16) {
    float *hb = malloc((size_t)(n_out * rank) * sizeof *hb);
    uint16_t *h = malloc((size_t)(rank * (n_in > n_out ? n_in : n_out)) * sizeof *h);
    if (hb == NULL || h == NULL) return free(hb), free(h), -1;
    const int reorder = m->arch->rope == CTN_ROPE_NORM && (k == CTN_LORA_Q || k == CTN_LORA_K);
    const int64_t nh = k == CTN_LORA_Q ? m->hp.n_head : m->hp.n_head_kv;
    const int64_t hd = n_out / nh, half = hd / 2;
    for (int64_t o = 0; o < n_out; o++) {
        int64_t src = o; /* GGUF row of Hugging Face row o */
        if (reorder) {
            const int64_t hh = o / hd, s = (o % hd) / half, i = o % half;
            src = hh * hd + 2 * i + s;
        }
        memcpy(hb + o * rank, b + src * rank, (size_t)rank * sizeof *hb);
    }
    char name[160];
    int rc = 0;
    for (int which = 0; which < 2 && rc == 0; which++) {
        const float *v = which ? hb : a;
        const int64_t n = rank * (which ? n_out : n_in);
        const int64_t shape[2] = {which ? n_out : rank, which ? rank : n_in};
        snprintf(name, sizeof name, "base_model.model.model.layers.%lld.%s.lora_%c.weight",
                 (long long)l, ctn_lora_target_hf_module((ctn_lora_target)k), which ? 'B' : 'A');
        if (f16) {
            for (int64_t i = 0; i < n; i++)
                h[i] = ctn_fp32_to_fp16(v[i]);
            rc = ctn_st_writer_add(w, name, CTN_ST_F16, 2, shape, h);
        } else {
            rc = ctn_st_writer_add(w, name, CTN_ST_F32, 2, shape, v);
        }
    }
    free(hb), free(h);
    return rc;
}

static int usage(void) {
    fprintf(stderr, "usage: mklora MODEL.gguf -o ADAPTER.gguf [--rank R] "
                    "[--targets q,k,v,o,gate,up,down] [--alpha A] [--seed S] [--std D] [--f16] "
                    "[--peft DIR]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *targets = "q,k,v,o";
    long rank = 16;
    double alpha = -1, std = -1;
    unsigned long long seed = 1;
    int f16 = 0;
    const char *peft = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-o") && v)
            out = v, i++;
        else if (!strcmp(a, "--rank") && v)
            rank = strtol(v, NULL, 10), i++;
        else if (!strcmp(a, "--targets") && v)
            targets = v, i++;
        else if (!strcmp(a, "--alpha") && v)
            alpha = strtod(v, NULL), i++;
        else if (!strcmp(a, "--seed") && v)
            seed = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--std") && v)
            std = strtod(v, NULL), i++;
        else if (!strcmp(a, "--f16"))
            f16 = 1;
        else if (!strcmp(a, "--peft") && v)
            peft = v, i++;
        else if (a[0] != '-' && model == NULL)
            model = a;
        else
            return usage();
    }
    if (model == NULL || out == NULL || rank < 1 || rank > 4096) return usage();
    static const char *names[CTN_LORA_N] = {"q", "k", "v", "o", "gate", "up", "down"};
    unsigned mask = 0;
    char tl[256];
    snprintf(tl, sizeof tl, "%s", targets);
    for (char *t = strtok(tl, ","); t != NULL; t = strtok(NULL, ",")) {
        int found = 0;
        for (int k = 0; k < CTN_LORA_N; k++)
            if (!strcmp(t, names[k])) mask |= 1u << k, found = 1;
        if (!found) {
            fprintf(stderr, "mklora: unknown target '%s'\n", t);
            return 2;
        }
    }
    char err[512];
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    if (ctn_gguf_open(&g, model, err, sizeof err) < 0 ||
        ctn_model_load(&m, g, err, sizeof err) < 0) {
        fprintf(stderr, "mklora: %s\n", err);
        return 1;
    }
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "general.type", "adapter");
    ctn_gguf_writer_set_str(w, "general.architecture", m->arch->name);
    ctn_gguf_writer_set_str(w, "adapter.type", "lora");
    ctn_gguf_writer_set_f32(w, "adapter.lora.alpha", (float)(alpha > 0 ? alpha : (double)rank));
    void **keep = calloc((size_t)m->hp.n_layer * CTN_LORA_N, sizeof *keep);
    ctn_st_writer *pw = peft != NULL ? ctn_st_writer_new() : NULL;
    int status = 0;
    int nk = 0;
    uint64_t s = seed;
    const float sd = std > 0 ? (float)std : 0.05f / sqrtf((float)rank);
    for (int64_t l = 0; l < m->hp.n_layer; l++) {
        for (int k = 0; k < CTN_LORA_N; k++) {
            if (!(mask & (1u << k))) continue;
            const ctn_gguf_tensor *base = ctn_lora_target_weight(m, l, (ctn_lora_target)k);
            const int64_t n_in = base->ne[0], n_out = base->ne[1];
            const int64_t na = rank * n_in, nb = n_out * rank;
            float *f = malloc((size_t)(na + nb) * sizeof *f);
            for (int64_t i = 0; i < na + nb; i++)
                f[i] = sd * normal(&s);
            if (pw != NULL && peft_add(pw, m, l, k, rank, n_in, n_out, f, f + na, f16) < 0) {
                fprintf(stderr, "mklora: %s\n", ctn_st_writer_errmsg(pw));
                status = 1;
            }
            void *data = f;
            if (f16) {
                data = malloc((size_t)(na + nb) * 2);
                ctn_quantize_row(CTN_TYPE_F16, f, data, na + nb);
                free(f);
            }
            keep[nk++] = data;
            const size_t es = f16 ? 2 : 4;
            const int64_t nea[2] = {n_in, rank}, neb[2] = {rank, n_out};
            char name[128];
            const char *gg = ctn_lora_target_gguf((ctn_lora_target)k);
            snprintf(name, sizeof name, "blk.%lld.%s.weight.lora_a", (long long)l, gg);
            ctn_gguf_writer_add_tensor(w, name, f16 ? CTN_TYPE_F16 : CTN_TYPE_F32, 2, nea, data);
            snprintf(name, sizeof name, "blk.%lld.%s.weight.lora_b", (long long)l, gg);
            ctn_gguf_writer_add_tensor(w, name, f16 ? CTN_TYPE_F16 : CTN_TYPE_F32, 2, neb,
                                       (char *)data + (size_t)na * es);
        }
    }
    if (ctn_gguf_writer_write(w, out, err, sizeof err) < 0) {
        fprintf(stderr, "mklora: %s\n", err);
        status = 1;
    }
    if (pw != NULL && status == 0) {
        char path[1024];
        mkdir(peft, 0755);
        snprintf(path, sizeof path, "%s/adapter_config.json", peft);
        FILE *cf = fopen(path, "w");
        if (cf != NULL) {
            fprintf(cf,
                    "{\"peft_type\": \"LORA\", \"task_type\": \"CAUSAL_LM\", \"r\": %ld, "
                    "\"lora_alpha\": %g, \"lora_dropout\": 0.0, \"fan_in_fan_out\": false, "
                    "\"bias\": \"none\", \"use_rslora\": false, \"modules_to_save\": null, "
                    "\"target_modules\": [",
                    rank, alpha > 0 ? alpha : (double)rank);
            int first = 1;
            for (int k = 0; k < CTN_LORA_N; k++)
                if (mask & (1u << k)) {
                    fprintf(cf, "%s\"%s\"", first ? "" : ", ",
                            ctn_lora_target_hf((ctn_lora_target)k));
                    first = 0;
                }
            fprintf(cf, "]}\n");
        }
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", peft);
        if (cf == NULL || fclose(cf) != 0 || ctn_st_writer_write(pw, path) < 0) {
            fprintf(stderr, "mklora: %s: %s\n", peft,
                    cf == NULL ? "cannot write adapter_config.json" : ctn_st_writer_errmsg(pw));
            status = 1;
        }
    }
    ctn_st_writer_free(pw);
    for (int i = 0; i < nk; i++)
        free(keep[i]);
    free(keep);
    ctn_gguf_writer_free(w);
    ctn_model_free(m);
    ctn_gguf_free(g);
    return status;
}
