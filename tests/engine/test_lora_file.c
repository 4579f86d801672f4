/*
 * GGUF LoRA files (lora.h ctn_lora_load) and merging (ctn_lora_merge): a file written here
 * with seeded random A and B loads to exactly those matrices and alpha / rank; F16 files
 * load converted; every malformed file is an error naming the adapter and the tensor; and
 * generating with the adapter equals generating with the merged model (greedy ids
 * identical, logits within 1e-4 normalised error for an F32 base; a Q8_0 base is merged
 * and quantized again, and stays within 5e-2).
 *
 * PEFT folders (adapter_config.json + adapter_model.safetensors, written here the way
 * save_pretrained lays them out) load to the same matrices as the GGUF file llama.cpp's
 * converter makes of them: for llama the rows of q_proj / k_proj's B reordered per head,
 * which is checked by its meaning as well (attention scores with Hugging Face's rotate-half
 * RoPE on the PEFT rows equal those with GGUF's adjacent-pair RoPE on the loaded rows);
 * qwen2 (whose GGUF keeps the order) loads them as they are; r, lora_alpha, use_rslora,
 * rank_pattern and alpha_pattern set each pair's rank and scale; every setting catena cannot
 * serve is refused naming the folder and the module or key.
 *
 * The in-memory loaders (ctn_lora_load_gguf_memory, ctn_lora_load_peft_memory) give exactly
 * what the file loaders give. Failing the N-th allocation, once and persistently, for every
 * N, during a GGUF load, a PEFT load (rank_pattern and alpha_pattern, so PCRE2's memory too)
 * and ctn_lora_merge returns CTN_ENOMEM with a reason, or the same result as without the
 * failure; never a crash, and no leak (the ASan copy runs under LeakSanitizer).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "forward.h"
#include "gguf.h"
#include "lora.h"
#include "lorarand.h"
#include "model.h"
#include "quant.h"
#include "randmodel.h"
#include "safetensors.h"
#include "test.h"

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    char path[256];
} loaded;

static int load_path(loaded *L, const char *path) {
    char err[512];
    memset(L, 0, sizeof *L);
    snprintf(L->path, sizeof L->path, "%s", path);
    if (ctn_gguf_open(&L->g, path, err, sizeof err) < 0 ||
        ctn_model_load(&L->m, L->g, err, sizeof err) < 0) {
        printf("  %s: %s\n", path, err);
        return -1;
    }
    return 0;
}

static void unload(loaded *L, bool remove) {
    ctn_model_free(L->m);
    ctn_gguf_free(L->g);
    if (remove) unlink(L->path);
}

/* A random model (dim 64, 4 heads, 2 KV heads, feed-forward 96) of the given weight type,
 * architecture (RANDMODEL_*) and layer count, written and loaded. */
static int make_model_of(loaded *L, int type, int arch, int n_layer, uint64_t seed) {
    char path[256], err[256];
    snprintf(path, sizeof path, "/tmp/test_lora_file-%d-%llu.gguf", (int)getpid(),
             (unsigned long long)seed);
    randmodel_shape sh = {type, 64, 4, 2, 96, n_layer, false, 300, 10000, 1e-5f, seed, arch, 0};
    if (randmodel_write(&sh, false, path, err, sizeof err) < 0) {
        printf("  %s\n", err);
        return -1;
    }
    return load_path(L, path);
}

static int make_model(loaded *L, int type, uint64_t seed) {
    return make_model_of(L, type, RANDMODEL_LLAMA, 2, seed);
}

/* What a test adapter file is made of. */
typedef struct {
    int rank;
    unsigned mask; /* targets */
    float alpha;   /* 0: no adapter.lora.alpha key */
    int type;      /* of lora_a / lora_b: F32 or F16 */
    const char *arch, *gtype;
    bool drop_b;       /* leave out one lora_b */
    bool bad_shape;    /* lora_a one column short */
    bool stray_tensor; /* a token_embd lora */
    bool huge;         /* layer 0's first A value 1e6 (beyond F16's range) */
    uint64_t seed;
} spec;

static const char *TGT[CTN_LORA_N] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                      "ffn_gate", "ffn_up", "ffn_down"};

/* Writes the adapter; the float values of A and B (before any F16 rounding) go to vals in
 * file order when vals is not NULL. */
static int write_adapter(const ctn_model *m, const spec *sp, const char *path, float **vals,
                         size_t *n_vals) {
    char err[256];
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "general.type", sp->gtype ? sp->gtype : "adapter");
    ctn_gguf_writer_set_str(w, "general.architecture", sp->arch ? sp->arch : m->arch->name);
    ctn_gguf_writer_set_str(w, "adapter.type", "lora");
    if (sp->alpha != 0) ctn_gguf_writer_set_f32(w, "adapter.lora.alpha", sp->alpha);
    uint64_t seed = sp->seed;
    void *keep[64];
    int nk = 0;
    size_t total = 0;
    float *all = NULL;
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            if (!(sp->mask & (1u << t))) continue;
            const ctn_gguf_tensor *bw = lorarand_base(m, l, t);
            const int64_t n_in = bw->ne[0] - (sp->bad_shape && l == 1 ? 1 : 0), n_out = bw->ne[1];
            const int64_t na = sp->rank * n_in, nb = n_out * sp->rank;
            float *f = malloc((size_t)(na + nb) * sizeof *f);
            for (int64_t i = 0; i < na + nb; i++)
                f[i] = 0.1f * rng_normal(&seed);
            if (sp->huge && l == 0 && t == 0) f[0] = 1e6f;
            all = realloc(all, (total + (size_t)(na + nb)) * sizeof *all);
            memcpy(all + total, f, (size_t)(na + nb) * sizeof *f);
            total += (size_t)(na + nb);
            void *da = f, *db = f + na;
            if (sp->type == CTN_TYPE_F16) {
                void *h = malloc((size_t)(na + nb) * 2);
                ctn_quantize_row(CTN_TYPE_F16, f, h, na + nb);
                free(f);
                f = h;
                da = h;
                db = (char *)h + (size_t)na * 2;
            }
            keep[nk++] = f;
            char name[128];
            const int64_t nea[2] = {n_in, sp->rank}, neb[2] = {sp->rank, n_out};
            snprintf(name, sizeof name, "blk.%lld.%s.weight.lora_a", (long long)l, TGT[t]);
            ctn_gguf_writer_add_tensor(w, name, (ctn_type)sp->type, 2, nea, da);
            if (!(sp->drop_b && l == 1)) {
                snprintf(name, sizeof name, "blk.%lld.%s.weight.lora_b", (long long)l, TGT[t]);
                ctn_gguf_writer_add_tensor(w, name, (ctn_type)sp->type, 2, neb, db);
            }
        }
    static float stray[64 * 4];
    if (sp->stray_tensor) {
        const int64_t ne[2] = {64, 4};
        ctn_gguf_writer_add_tensor(w, "token_embd.weight.lora_a", CTN_TYPE_F32, 2, ne, stray);
    }
    const int rc = ctn_gguf_writer_write(w, path, err, sizeof err);
    if (rc < 0) printf("  write: %s\n", err);
    ctn_gguf_writer_free(w);
    for (int i = 0; i < nk; i++)
        free(keep[i]);
    if (vals != NULL) {
        *vals = all;
        *n_vals = total;
    } else {
        free(all);
    }
    return rc;
}

/* Whether mt's A (rank x n_in) / B (n_out x rank) differ from the row-major floats given. */
static bool a_differs(const ctn_lora_mat *mt, const float *a) {
    for (int64_t r = 0; r < mt->rank; r++)
        for (int64_t i = 0; i < mt->n_in; i++)
            if (ctn_lora_a_at(mt, r, i) != a[r * mt->n_in + i]) return true;
    return false;
}

static bool b_differs(const ctn_lora_mat *mt, const float *b) {
    for (int64_t o = 0; o < mt->n_out; o++)
        for (int64_t r = 0; r < mt->rank; r++)
            if (ctn_lora_b_at(mt, o, r) != b[o * mt->rank + r]) return true;
    return false;
}

/* B of mt as row-major floats (malloc'd). */
static float *b_rows(const ctn_lora_mat *mt) {
    float *b = malloc((size_t)(mt->n_out * mt->rank) * sizeof *b);
    for (int64_t o = 0; o < mt->n_out; o++)
        for (int64_t r = 0; r < mt->rank; r++)
            b[o * mt->rank + r] = ctn_lora_b_at(mt, o, r);
    return b;
}

static char tmp_path[256];
static const char *adapter_path(const char *what) {
    snprintf(tmp_path, sizeof tmp_path, "/tmp/test_lora_file-%d-%s.gguf", (int)getpid(), what);
    return tmp_path;
}

TEST(loads_what_was_written) {
    loaded L;
    if (make_model(&L, CTN_TYPE_F32, 3) < 0) {
        CHECK(0);
        return;
    }
    char err[512];
    const spec sp = {.rank = 4,
                     .mask = (1u << CTN_LORA_Q) | (1u << CTN_LORA_V) | (1u << CTN_LORA_DOWN),
                     .alpha = 8,
                     .type = CTN_TYPE_F32,
                     .seed = 5};
    const char *p = adapter_path("ok");
    float *vals = NULL;
    size_t n_vals = 0;
    CHECK(write_adapter(L.m, &sp, p, &vals, &n_vals) == 0);
    ctn_lora *a = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &a, err, sizeof err), 0);
    if (a != NULL) {
        CHECK_EQ_INT(a->max_rank, 4);
        size_t off = 0, bad = 0;
        for (int64_t l = 0; l < a->n_layer; l++)
            for (int t = 0; t < CTN_LORA_N; t++) {
                const ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + t];
                if (!(sp.mask & (1u << t))) {
                    CHECK_EQ_INT(mt->rank, 0);
                    continue;
                }
                CHECK_EQ_INT(mt->rank, 4);
                CHECK(mt->scale == 2.0f); /* alpha 8 / rank 4 */
                const size_t na = (size_t)(mt->rank * mt->n_in),
                             nb = (size_t)(mt->n_out * mt->rank);
                bad += mt->type != CTN_TYPE_F32 || a_differs(mt, vals + off);
                bad += b_differs(mt, vals + off + na);
                off += na + nb;
            }
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(off, n_vals);
        CHECK_STR(a->path, p);
    }
    ctn_lora_free(a);
    free(vals);
    unlink(p);
    /* F16 matrices, no alpha (scale 1), a rank limit. */
    const spec sp16 = {.rank = 8, .mask = 0x7Fu, .type = CTN_TYPE_F16, .seed = 6};
    CHECK(write_adapter(L.m, &sp16, p, NULL, NULL) == 0);
    CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &a, err, sizeof err), 0);
    if (a != NULL)
        CHECK(a->mats[0].scale == 1.0f && a->mats[0].rank == 8 && a->mats[0].type == CTN_TYPE_F16);
    ctn_lora_free(a);
    CHECK_EQ_INT(ctn_lora_load(L.m, p, 4, &a, err, sizeof err), CTN_ERANGE);
    CHECK_CONTAINS(err, "blk.0.attn_q.weight has rank 8, above the limit 4");
    unlink(p);
    unload(&L, true);
    /* Beside a BF16 base, F32 matrices are held in BF16 (rounded), F16 ones as they are;
     * a value beyond F16's range keeps an F16 base's pair in F32. */
    const int bases[2] = {CTN_TYPE_BF16, CTN_TYPE_F16};
    for (int bi = 0; bi < 2; bi++) {
        if (make_model(&L, bases[bi], 30 + (uint64_t)bi) < 0) {
            CHECK(0);
            return;
        }
        const spec s32 = {.rank = 2, .mask = 0x3u, .alpha = 2, .type = CTN_TYPE_F32, .seed = 8};
        CHECK(write_adapter(L.m, &s32, p, &vals, &n_vals) == 0);
        CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &a, err, sizeof err), 0);
        if (a != NULL) {
            const ctn_lora_mat *mt = &a->mats[0];
            CHECK_EQ_INT(mt->type, bases[bi]);
            const float want = bases[bi] == CTN_TYPE_BF16
                                   ? ctn_bf16_to_fp32(ctn_fp32_to_bf16(vals[0]))
                                   : ctn_fp16_to_fp32(ctn_fp32_to_fp16(vals[0]));
            CHECK(ctn_lora_a_at(mt, 0, 0) == want);
        }
        ctn_lora_free(a);
        free(vals);
        unlink(p);
        const spec s16 = {.rank = 2, .mask = 0x1u, .type = CTN_TYPE_F16, .seed = 9};
        CHECK(write_adapter(L.m, &s16, p, NULL, NULL) == 0);
        CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &a, err, sizeof err), 0);
        if (a != NULL) CHECK_EQ_INT(a->mats[0].type, CTN_TYPE_F16);
        ctn_lora_free(a);
        unlink(p);
        const spec sbig = {.rank = 2, .mask = 0x3u, .type = CTN_TYPE_F32, .huge = true, .seed = 10};
        CHECK(write_adapter(L.m, &sbig, p, NULL, NULL) == 0);
        CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &a, err, sizeof err), 0);
        if (a != NULL) { /* layer 0's q pair has the big value; layer 0's k pair does not */
            CHECK_EQ_INT(a->mats[0].type, bases[bi] == CTN_TYPE_F16 ? CTN_TYPE_F32 : CTN_TYPE_BF16);
            CHECK_EQ_INT(a->mats[1].type, bases[bi]);
            CHECK(ctn_lora_a_at(&a->mats[0], 0, 0) == 1e6f || bases[bi] == CTN_TYPE_BF16);
        }
        ctn_lora_free(a);
        unlink(p);
        unload(&L, true);
    }
}

TEST(malformed_adapters_are_named) {
    loaded L;
    if (make_model(&L, CTN_TYPE_F32, 4) < 0) {
        CHECK(0);
        return;
    }
    char err[512];
    ctn_lora *a = NULL;
    const char *p = adapter_path("bad");
    const struct {
        spec sp;
        int code;
        const char *msg;
    } cases[] = {
        {{.rank = 2, .mask = 1, .type = CTN_TYPE_F32, .arch = "qwen2"},
         CTN_EFORMAT,
         "an adapter for architecture \"qwen2\", the model is \"llama\""},
        {{.rank = 2, .mask = 1, .type = CTN_TYPE_F32, .gtype = "model"},
         CTN_EFORMAT,
         "not a LoRA adapter"},
        {{.rank = 2, .mask = 1, .type = CTN_TYPE_F32, .drop_b = true},
         CTN_EFORMAT,
         "blk.1.attn_q.weight has lora_a but no lora_b"},
        {{.rank = 2, .mask = 1, .type = CTN_TYPE_F32, .bad_shape = true},
         CTN_EFORMAT,
         "blk.1.attn_q.weight: lora_a is {63, 2}"},
        {{.rank = 2, .mask = 1, .type = CTN_TYPE_F32, .stray_tensor = true},
         CTN_ENOTSUP,
         "tensor 'token_embd.weight.lora_a' is not the lora_a / lora_b"},
        {{.rank = 2, .mask = 0, .type = CTN_TYPE_F32},
         CTN_EFORMAT,
         "has no lora_a / lora_b tensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(write_adapter(L.m, &cases[i].sp, p, NULL, NULL) == 0);
        err[0] = 0;
        CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &a, err, sizeof err), cases[i].code);
        CHECK_CONTAINS(err, cases[i].msg);
        CHECK_CONTAINS(err, p);
        CHECK(a == NULL);
    }
    unlink(p);
    CHECK_EQ_INT(ctn_lora_load(L.m, "/nonexistent/adapter.gguf", 0, &a, err, sizeof err),
                 CTN_ENOENT);
    CHECK_CONTAINS(err, "/nonexistent/adapter.gguf");
    /* A file that is not GGUF at all. */
    FILE *f = fopen(p, "wb");
    fputs("not a gguf file at all", f);
    fclose(f);
    CHECK(ctn_lora_load(L.m, p, 0, &a, err, sizeof err) < 0);
    CHECK_CONTAINS(err, p);
    unlink(p);
    unload(&L, true);
}

/* ---- PEFT folders ---------------------------------------------------------------------- */

static const char *HFMOD[CTN_LORA_N] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                        "mlp.down_proj"};

typedef struct {
    int rank, down_rank; /* down_rank: rank of down_proj (set by rank_pattern when not 0) */
    unsigned mask;
    float alpha;
    ctn_st_dtype dtype;
    const char *config; /* JSON members put first in adapter_config.json (so that they win
                           over the usual ones: cJSON finds the first of a duplicate key),
                           with a leading ", " */
    const char *stray;  /* an extra tensor of shape [2, 2] */
    bool drop_b, bad_shape, no_weights, pickle;
    uint64_t seed;
} peft_spec;

/* Rounds v as dtype stores it. */
static float st_round(ctn_st_dtype d, float v) {
    if (d == CTN_ST_F16) return ctn_fp16_to_fp32(ctn_fp32_to_fp16(v));
    if (d == CTN_ST_BF16) return ctn_bf16_to_fp32(ctn_fp32_to_bf16(v));
    return v;
}

/* Writes a PEFT folder at dir; A and B of layer l, target t (Hugging Face row order, as
 * stored) go to hfa / hfb[l * CTN_LORA_N + t] when they are not NULL (caller frees). */
static int write_peft(const ctn_model *m, const peft_spec *sp, const char *dir, float **hfa,
                      float **hfb) {
    mkdir(dir, 0755);
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL) return -1;
    fprintf(f,
            "{%s%s\"base_model_name_or_path\": \"test\", \"peft_type\": \"LORA\", \"task_type\": "
            "\"CAUSAL_LM\", \"r\": %d, \"lora_alpha\": %g, \"lora_dropout\": 0.1, "
            "\"fan_in_fan_out\": false, \"bias\": \"none\", \"modules_to_save\": null, "
            "\"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", "
            "\"up_proj\", \"down_proj\"], \"use_rslora\": false, \"rank_pattern\": {%s}}\n",
            sp->config ? sp->config + 2 : "", sp->config ? ", " : "", sp->rank, (double)sp->alpha,
            sp->down_rank ? "\"down_proj\": 2" : "");
    fclose(f);
    snprintf(path, sizeof path, "%s/adapter_model.%s", dir, sp->pickle ? "bin" : "safetensors");
    if (sp->no_weights || sp->pickle) {
        if (sp->pickle) {
            f = fopen(path, "w");
            fputs("PK", f);
            fclose(f);
        }
        return 0;
    }
    ctn_st_writer *w = ctn_st_writer_new();
    uint64_t seed = sp->seed;
    const size_t es = ctn_st_dtype_size(sp->dtype);
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            if (!(sp->mask & (1u << t))) continue;
            const ctn_gguf_tensor *bw = lorarand_base(m, l, t);
            const int64_t r = t == CTN_LORA_DOWN && sp->down_rank ? sp->down_rank : sp->rank;
            const int64_t n_in = bw->ne[0] - (sp->bad_shape && l == 1 ? 1 : 0), n_out = bw->ne[1];
            const int64_t sa[2] = {r, n_in}, sb[2] = {n_out, r};
            for (int which = 0; which < 2; which++) {
                const int64_t n = which ? n_out * r : r * n_in;
                float *v = malloc((size_t)n * sizeof *v);
                void *raw = malloc((size_t)n * es);
                for (int64_t i = 0; i < n; i++) {
                    v[i] = st_round(sp->dtype, 0.1f * rng_normal(&seed));
                    if (sp->dtype == CTN_ST_F32)
                        memcpy((char *)raw + i * 4, &v[i], 4);
                    else {
                        const uint16_t h = sp->dtype == CTN_ST_F16 ? ctn_fp32_to_fp16(v[i])
                                                                   : ctn_fp32_to_bf16(v[i]);
                        memcpy((char *)raw + i * 2, &h, 2);
                    }
                }
                char name[256];
                snprintf(name, sizeof name, "base_model.model.model.layers.%lld.%s.lora_%c.weight",
                         (long long)l, HFMOD[t], which ? 'B' : 'A');
                if (!(which && sp->drop_b && l == 1))
                    CHECK_EQ_INT(ctn_st_writer_add(w, name, sp->dtype, 2, which ? sb : sa, raw), 0);
                free(raw);
                float **keepv = which ? hfb : hfa;
                if (keepv != NULL)
                    keepv[l * CTN_LORA_N + t] = v;
                else
                    free(v);
            }
        }
    if (sp->stray != NULL) {
        const float z[4] = {0};
        const int64_t sh[2] = {2, 2};
        CHECK_EQ_INT(ctn_st_writer_add(w, sp->stray, CTN_ST_F32, 2, sh, z), 0);
    }
    ctn_st_writer_set_metadata(w, "format", "pt");
    const int rc = ctn_st_writer_write(w, path);
    if (rc < 0) printf("  write %s: %s\n", path, ctn_st_writer_errmsg(w));
    ctn_st_writer_free(w);
    return rc;
}

/* B of a llama q_proj / k_proj as llama.cpp's converter writes it: numpy's
 * b.reshape(n_head, 2, out / n_head / 2, r).swapaxes(1, 2).reshape(out, r). */
static float *convert_permute(const float *b, int64_t n_out, int64_t r, int64_t n_head) {
    float *o = malloc((size_t)(n_out * r) * sizeof *o);
    const int64_t d2 = n_out / n_head / 2;
    /* o[h][x][y][c] (shape n_head, d2, 2, r) = b[h][y][x][c] (shape n_head, 2, d2, r) */
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t x = 0; x < d2; x++)
            for (int64_t y = 0; y < 2; y++)
                for (int64_t c = 0; c < r; c++)
                    o[((h * d2 + x) * 2 + y) * r + c] = b[((h * 2 + y) * d2 + x) * r + c];
    return o;
}

/* The GGUF LoRA file llama.cpp's convert_lora_to_gguf.py makes of the PEFT adapter whose
 * matrices are hfa / hfb with ranks rank[] (every pair's scale alpha / its rank). */
static int write_converted(const ctn_model *m, float **hfa, float **hfb, const int64_t *rank,
                           float alpha, const char *path) {
    char err[256];
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "general.type", "adapter");
    ctn_gguf_writer_set_str(w, "general.architecture", m->arch->name);
    ctn_gguf_writer_set_str(w, "adapter.type", "lora");
    ctn_gguf_writer_set_f32(w, "adapter.lora.alpha", alpha);
    const int64_t n = m->hp.n_layer * CTN_LORA_N;
    float **perm = calloc((size_t)n, sizeof *perm);
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            const int64_t i = l * CTN_LORA_N + t;
            if (hfa[i] == NULL) continue;
            const ctn_gguf_tensor *bw = lorarand_base(m, l, t);
            const int64_t n_in = bw->ne[0], n_out = bw->ne[1], r = rank[i];
            const float *b = hfb[i];
            if (m->arch->rope == CTN_ROPE_NORM && (t == CTN_LORA_Q || t == CTN_LORA_K))
                b = perm[i] = convert_permute(hfb[i], n_out, r,
                                              t == CTN_LORA_Q ? m->hp.n_head : m->hp.n_head_kv);
            const int64_t nea[2] = {n_in, r}, neb[2] = {r, n_out};
            char name[128];
            snprintf(name, sizeof name, "blk.%lld.%s.weight.lora_a", (long long)l, TGT[t]);
            ctn_gguf_writer_add_tensor(w, name, CTN_TYPE_F32, 2, nea, hfa[i]);
            snprintf(name, sizeof name, "blk.%lld.%s.weight.lora_b", (long long)l, TGT[t]);
            ctn_gguf_writer_add_tensor(w, name, CTN_TYPE_F32, 2, neb, b);
        }
    const int rc = ctn_gguf_writer_write(w, path, err, sizeof err);
    if (rc < 0) printf("  write: %s\n", err);
    ctn_gguf_writer_free(w);
    for (int64_t i = 0; i < n; i++)
        free(perm[i]);
    free(perm);
    return rc;
}

static char peft_dir[256];
static const char *peft_path(const char *what) {
    snprintf(peft_dir, sizeof peft_dir, "/tmp/test_lora_file-%d-peft-%s", (int)getpid(), what);
    return peft_dir;
}

static void rm_peft(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/adapter_model.bin", dir);
    unlink(p);
    rmdir(dir);
}

static void free_mats(float **v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A PEFT folder and the GGUF file converted from it load to the same matrices and scales
 * (rank_pattern gives down_proj rank 2; alpha_pattern one module its own alpha). */
static void peft_equals_converted(int arch) {
    char err[512];
    loaded L;
    if (make_model_of(&L, CTN_TYPE_F32, arch, 2, 11 + (uint64_t)arch) < 0) {
        CHECK(0);
        return;
    }
    const int64_t n = L.m->hp.n_layer * CTN_LORA_N;
    float **hfa = calloc((size_t)n, sizeof *hfa), **hfb = calloc((size_t)n, sizeof *hfb);
    int64_t *rank = calloc((size_t)n, sizeof *rank);
    const peft_spec sp = {.rank = 4,
                          .down_rank = 2,
                          .mask = 0x7Fu,
                          .alpha = 8,
                          .dtype = CTN_ST_F32,
                          .config = ", \"alpha_pattern\": {\"model.layers.1.self_attn.v_proj\": 3}",
                          .seed = 12};
    const char *dir = peft_path("eq");
    CHECK_EQ_INT(write_peft(L.m, &sp, dir, hfa, hfb), 0);
    for (int64_t i = 0; i < n; i++)
        rank[i] = i % CTN_LORA_N == CTN_LORA_DOWN ? 2 : 4;
    const char *gp = adapter_path("converted");
    CHECK_EQ_INT(write_converted(L.m, hfa, hfb, rank, 8, gp), 0);
    ctn_lora *pa = NULL, *ga = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &pa, err, sizeof err), 0);
    if (pa == NULL) printf("  %s\n", err);
    CHECK_EQ_INT(ctn_lora_load(L.m, gp, 0, &ga, err, sizeof err), 0);
    if (pa != NULL && ga != NULL) {
        CHECK_EQ_INT(pa->max_rank, 4);
        CHECK(pa->bytes == ga->bytes);
        int bad = 0, permuted = 0;
        for (int64_t i = 0; i < n; i++) {
            const ctn_lora_mat *p = &pa->mats[i], *g = &ga->mats[i];
            bad += p->rank != g->rank || p->n_in != g->n_in || p->n_out != g->n_out;
            if (bad) continue;
            bad += memcmp(p->a, g->a, (size_t)(p->rank * p->n_in) * 4) != 0;
            bad += p->type != g->type ||
                   memcmp(p->bt, g->bt, (size_t)ctn_lora_bt_len(p->rank, p->n_out) * 4) != 0;
            permuted += b_differs(p, hfb[i]);
            const float want = i == 1 * CTN_LORA_N + CTN_LORA_V ? 3.0f / 4 : g->scale;
            bad += p->scale != want;
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(ga->mats[CTN_LORA_DOWN].rank, 2);
        CHECK(pa->mats[CTN_LORA_DOWN].scale == 4.0f); /* alpha 8 / rank 2 */
        /* llama: the q and k pairs of both layers are reordered; qwen2: nothing is. */
        CHECK_EQ_INT(permuted, arch == RANDMODEL_LLAMA ? 4 : 0);
    }
    ctn_lora_free(pa);
    ctn_lora_free(ga);
    free_mats(hfa, n);
    free_mats(hfb, n);
    free(rank);
    rm_peft(dir);
    unlink(gp);
    unload(&L, true);
}

TEST(peft_folder_equals_converted_gguf) {
    peft_equals_converted(RANDMODEL_LLAMA);
    peft_equals_converted(RANDMODEL_QWEN2);
}

/* Rotates head vector x (hd values) by position pos: neox pairs (j, j + hd/2) as Hugging
 * Face's rotate_half does, else adjacent pairs (2j, 2j + 1) as GGUF's llama does. */
static void rope(float *x, int64_t hd, int64_t pos, bool neox, float base) {
    for (int64_t j = 0; j < hd / 2; j++) {
        const double th = (double)pos * pow((double)base, -2.0 * (double)j / (double)hd);
        const int64_t i0 = neox ? j : 2 * j, i1 = neox ? j + hd / 2 : 2 * j + 1;
        const double a = x[i0], b = x[i1];
        x[i0] = (float)(a * cos(th) - b * sin(th));
        x[i1] = (float)(a * sin(th) + b * cos(th));
    }
}

/* B u for the n_out x r matrix b. */
static void bmul(const float *b, int64_t n_out, int64_t r, const float *u, float *out) {
    for (int64_t o = 0; o < n_out; o++) {
        double s = 0;
        for (int64_t c = 0; c < r; c++)
            s += (double)b[o * r + c] * u[c];
        out[o] = (float)s;
    }
}

/* What the reordering is for: query-key scores of the PEFT rows under Hugging Face's RoPE
 * equal those of the loaded rows under the model's adjacent-pair RoPE. */
TEST(peft_q_k_rows_follow_the_rope_layout) {
    char err[512];
    loaded L;
    if (make_model_of(&L, CTN_TYPE_F32, RANDMODEL_LLAMA, 1, 13) < 0) {
        CHECK(0);
        return;
    }
    const int64_t n = L.m->hp.n_layer * CTN_LORA_N;
    float **hfa = calloc((size_t)n, sizeof *hfa), **hfb = calloc((size_t)n, sizeof *hfb);
    const peft_spec sp = {.rank = 4,
                          .mask = (1u << CTN_LORA_Q) | (1u << CTN_LORA_K),
                          .alpha = 4,
                          .dtype = CTN_ST_F32,
                          .seed = 14};
    const char *dir = peft_path("rope");
    CHECK_EQ_INT(write_peft(L.m, &sp, dir, hfa, hfb), 0);
    ctn_lora *a = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &a, err, sizeof err), 0);
    if (a != NULL) {
        const int64_t nh = L.m->hp.n_head, nkv = L.m->hp.n_head_kv, hd = L.m->hp.head_dim;
        float qh[64], kh[32], qg[64], kg[32], u[4], v[4];
        uint64_t seed = 99;
        double worst = 0, moved = 0;
        for (int trial = 0; trial < 4; trial++) {
            for (int c = 0; c < 4; c++)
                u[c] = rng_normal(&seed), v[c] = rng_normal(&seed);
            bmul(hfb[CTN_LORA_Q], nh * hd, 4, u, qh);
            bmul(hfb[CTN_LORA_K], nkv * hd, 4, v, kh);
            float *lbq = b_rows(&a->mats[CTN_LORA_Q]), *lbk = b_rows(&a->mats[CTN_LORA_K]);
            bmul(lbq, nh * hd, 4, u, qg);
            bmul(lbk, nkv * hd, 4, v, kg);
            free(lbq), free(lbk);
            const int64_t pq = 7 + trial * 5, pk = 3 + trial;
            float qn[64];
            memcpy(qn, qh, sizeof qn); /* the unreordered rows under the model's RoPE */
            for (int64_t h = 0; h < nh; h++) {
                rope(qh + h * hd, hd, pq, true, 10000);
                rope(qg + h * hd, hd, pq, false, 10000);
                rope(qn + h * hd, hd, pq, false, 10000);
            }
            float kn[32];
            bmul(hfb[CTN_LORA_K], nkv * hd, 4, v, kn);
            for (int64_t h = 0; h < nkv; h++) {
                rope(kh + h * hd, hd, pk, true, 10000);
                rope(kg + h * hd, hd, pk, false, 10000);
                rope(kn + h * hd, hd, pk, false, 10000);
            }
            for (int64_t h = 0; h < nh; h++) {
                const int64_t g = h / (nh / nkv);
                double sh_ = 0, sg = 0, sn = 0;
                for (int64_t i = 0; i < hd; i++) {
                    sh_ += (double)qh[h * hd + i] * kh[g * hd + i];
                    sg += (double)qg[h * hd + i] * kg[g * hd + i];
                    sn += (double)qn[h * hd + i] * kn[g * hd + i];
                }
                worst = fmax(worst, fabs(sh_ - sg) / (fabs(sh_) + 1e-3));
                moved = fmax(moved, fabs(sh_ - sn) / (fabs(sh_) + 1e-3));
            }
        }
        printf("  scores: loaded rows vs Hugging Face %.2g; rows left as stored %.2g\n", worst,
               moved);
        CHECK(worst < 1e-4);
        CHECK(moved > 1e-2); /* the check can tell the orders apart */
    }
    ctn_lora_free(a);
    free_mats(hfa, n);
    free_mats(hfb, n);
    rm_peft(dir);
    unload(&L, true);
}

/* F16 / BF16 matrices load converted; use_rslora scales by alpha / sqrt(r); a rank limit. */
TEST(peft_dtypes_and_scales) {
    loaded L;
    if (make_model(&L, CTN_TYPE_F32, 15) < 0) {
        CHECK(0);
        return;
    }
    char err[512];
    const int64_t n = L.m->hp.n_layer * CTN_LORA_N;
    const ctn_st_dtype types[2] = {CTN_ST_F16, CTN_ST_BF16};
    for (int ti = 0; ti < 2; ti++) {
        float **hfa = calloc((size_t)n, sizeof *hfa), **hfb = calloc((size_t)n, sizeof *hfb);
        const peft_spec sp = {.rank = 4,
                              .mask = (1u << CTN_LORA_V) | (1u << CTN_LORA_UP),
                              .alpha = 16,
                              .dtype = types[ti],
                              .config = ", \"use_rslora\": true",
                              .seed = 16};
        const char *dir = peft_path("dtype");
        CHECK_EQ_INT(write_peft(L.m, &sp, dir, hfa, hfb), 0);
        ctn_lora *a = NULL;
        CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &a, err, sizeof err), 0);
        if (a != NULL) {
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                const ctn_lora_mat *mt = &a->mats[i];
                if (hfa[i] == NULL) {
                    bad += mt->rank != 0;
                    continue;
                }
                bad += mt->rank != 4 || mt->scale != 8.0f; /* 16 / sqrt(4) */
                bad += a_differs(mt, hfa[i]) ||
                       mt->type != (types[ti] == CTN_ST_F16 ? CTN_TYPE_F16 : CTN_TYPE_BF16);
                bad += b_differs(mt, hfb[i]);
            }
            CHECK_EQ_INT(bad, 0);
        }
        ctn_lora_free(a);
        CHECK_EQ_INT(ctn_lora_load(L.m, dir, 2, &a, err, sizeof err), CTN_ERANGE);
        CHECK_CONTAINS(err, "model.layers.0.self_attn.v_proj has rank 4, above the limit 2");
        free_mats(hfa, n);
        free_mats(hfb, n);
        rm_peft(dir);
    }
    unload(&L, true);
}

TEST(peft_settings_catena_cannot_serve_are_named) {
    loaded L;
    if (make_model(&L, CTN_TYPE_F32, 17) < 0) {
        CHECK(0);
        return;
    }
    char err[512];
    const struct {
        peft_spec sp;
        int code;
        const char *msg;
    } cases[] = {
        {{.config = ", \"fan_in_fan_out\": true"}, CTN_ENOTSUP, "fan_in_fan_out is true"},
        {{.config = ", \"modules_to_save\": [\"lm_head\"]"},
         CTN_ENOTSUP,
         "modules_to_save (\"lm_head\", ...)"},
        {{.config = ", \"use_dora\": true"}, CTN_ENOTSUP, "use_dora is true"},
        {{.config = ", \"peft_type\": \"IA3\""}, CTN_ENOTSUP, "peft_type is \"IA3\""},
        {{.config = ", \"target_modules\": [\"q_proj\", \"lm_head\"]"},
         CTN_ENOTSUP,
         "target module \"lm_head\" has no counterpart"},
        {{.config = ", \"r\": 0"}, CTN_EFORMAT, "r is not a positive integer"},
        {{.config = ", \"rank_pattern\": {\"q_proj(\": 2}"},
         CTN_EFORMAT,
         "rank_pattern key \"q_proj(\" is not a pattern"},
        {{.config = ", \"r\": 8"},
         CTN_EFORMAT,
         "model.layers.0.self_attn.q_proj has rank 4, but adapter_config.json gives it r = 8"},
        {{.drop_b = true}, CTN_EFORMAT, "model.layers.1.self_attn.q_proj has lora_A but no lora_B"},
        {{.bad_shape = true},
         CTN_EFORMAT,
         "model.layers.1.self_attn.q_proj: lora_A is [4, 63] and lora_B [64, 4]"},
        {{.stray = "base_model.model.lm_head.lora_A.weight"},
         CTN_ENOTSUP,
         "tensor 'base_model.model.lm_head.lora_A.weight' is not the lora_A / lora_B"},
        {{.stray = "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight"},
         CTN_ENOTSUP,
         "tensor 'base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight' is not"},
        {{.no_weights = true}, CTN_EFORMAT, "no adapter_model.safetensors"},
        {{.pickle = true}, CTN_ENOTSUP, "adapter_model.bin is a pickle checkpoint"},
        {{.mask = 0}, CTN_EFORMAT, "has no lora_A / lora_B tensors"},
    };
    const char *dir = peft_path("bad");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        peft_spec sp = cases[i].sp;
        sp.rank = 4;
        sp.alpha = 8;
        sp.dtype = CTN_ST_F32;
        if (sp.mask == 0 && !(i == sizeof cases / sizeof cases[0] - 1)) sp.mask = 1;
        sp.seed = 18;
        CHECK_EQ_INT(write_peft(L.m, &sp, dir, NULL, NULL), 0);
        ctn_lora *a = NULL;
        err[0] = 0;
        CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &a, err, sizeof err), cases[i].code);
        CHECK_CONTAINS(err, cases[i].msg);
        CHECK_CONTAINS(err, dir);
        CHECK(a == NULL);
        rm_peft(dir);
    }
    /* A folder without adapter_config.json; a config that is not JSON. */
    mkdir(dir, 0755);
    ctn_lora *a = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &a, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "adapter_config.json");
    char p[512];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"r\": 4,", f);
    fclose(f);
    CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &a, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "adapter_config.json: not valid JSON");
    rm_peft(dir);
    unload(&L, true);
}

static void generate(const ctn_model *m, const ctn_lora *a, float scale, int n, int32_t *ids,
                     float *lg) {
    char err[256];
    ctn_fwd *f = NULL;
    ctn_fwd_params fp = {.n_threads = 2, .n_ctx = 64, .kv_f32 = true};
    CHECK(ctn_fwd_new(&f, m, &fp, err, sizeof err) == 0);
    ctn_kv_seq s;
    CHECK(ctn_fwd_seq_init(f, &s) == 0);
    const int32_t prompt[5] = {1, 33, 70, 5, 212};
    const int64_t nv = m->hp.n_vocab;
    ctn_fwd_seg seg = {
        .seq = &s, .tokens = prompt, .n_tokens = 5, .logits = true, .lora = a, .lora_scale = scale};
    for (int i = 0; i < n; i++) {
        CHECK(ctn_fwd_run(f, &seg, 1, lg + (size_t)i * (size_t)nv) == 0);
        ids[i] = lorarand_argmax(lg + (size_t)i * (size_t)nv, nv);
        seg.tokens = &ids[i];
        seg.n_tokens = 1;
    }
    ctn_fwd_seq_close(f, &s);
    ctn_fwd_free(f);
}

static void merge_case(int type, double tol, bool need_same_ids) {
    loaded L;
    if (make_model(&L, type, 7) < 0) {
        CHECK(0);
        return;
    }
    char err[512];
    const spec sp = {.rank = 4, .mask = 0x7Fu, .alpha = 6, .type = CTN_TYPE_F32, .seed = 9};
    const char *p = adapter_path("merge");
    CHECK(write_adapter(L.m, &sp, p, NULL, NULL) == 0);
    ctn_lora *a = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &a, err, sizeof err), 0);
    /* F32 matrices are held in F32 beside an F32 base, in F16 beside a quantized one. */
    if (a != NULL)
        CHECK_EQ_INT(a->mats[0].type, type == CTN_TYPE_F32 ? CTN_TYPE_F32 : CTN_TYPE_F16);
    char out[256];
    snprintf(out, sizeof out, "/tmp/test_lora_file-%d-merged.gguf", (int)getpid());
    CHECK_EQ_INT(ctn_lora_merge(L.g, L.m, a, 0.75f, out, err, sizeof err), 0);
    loaded M;
    CHECK(load_path(&M, out) == 0);
    const int n = 12;
    const int64_t nv = L.m->hp.n_vocab;
    int32_t ia[12], im[12];
    float *la = malloc((size_t)n * (size_t)nv * sizeof(float));
    float *lm = malloc((size_t)n * (size_t)nv * sizeof(float));
    generate(L.m, a, 0.75f, n, ia, la);
    generate(M.m, NULL, 0, n, im, lm);
    const double e = lorarand_norm_err(la, lm, (int64_t)n * nv);
    printf("  %s base: adapter vs merged model: greedy ids %s, max normalised logit error %.2g\n",
           ctn_type_name(type), memcmp(ia, im, sizeof ia) == 0 ? "identical" : "differ", e);
    if (need_same_ids) CHECK(memcmp(ia, im, sizeof ia) == 0);
    CHECK(e < tol);
    free(la), free(lm);
    unload(&M, true);
    ctn_lora_free(a);
    unlink(p);
    unload(&L, true);
}

TEST(adapter_equals_merged_file) {
    merge_case(CTN_TYPE_F32, 1e-4, true);
    merge_case(CTN_TYPE_Q8_0, 5e-2, false);
}

/* An alpha that makes no finite F32 scale (NaN in a GGUF file, or 1e39 from alpha_pattern)
 * is refused: the forward pass would turn every logit into NaN. */
TEST(non_finite_scales_are_refused) {
    loaded L;
    if (make_model(&L, CTN_TYPE_F32, 35) < 0) {
        CHECK(0);
        return;
    }
    char err[512];
    const spec sp = {
        .rank = 2, .mask = 1u << CTN_LORA_V, .alpha = NAN, .type = CTN_TYPE_F32, .seed = 36};
    const char *p = adapter_path("nan");
    CHECK(write_adapter(L.m, &sp, p, NULL, NULL) == 0);
    ctn_lora *a = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &a, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "blk.0.attn_v.weight: adapter.lora.alpha nan / rank 2 is not a finite");
    CHECK(a == NULL);
    unlink(p);
    const peft_spec ps = {.rank = 2,
                          .mask = 1u << CTN_LORA_UP,
                          .alpha = 4,
                          .dtype = CTN_ST_F32,
                          .config = ", \"alpha_pattern\": {\"layers.1.mlp.up_proj\": 1e39}",
                          .seed = 37};
    const char *dir = peft_path("inf");
    CHECK_EQ_INT(write_peft(L.m, &ps, dir, NULL, NULL), 0);
    CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &a, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "model.layers.1.mlp.up_proj: lora_alpha 1e+39 / 2 is not a finite scale");
    CHECK(a == NULL);
    rm_peft(dir);
    unload(&L, true);
}

/* ---- in-memory loaders and allocation failures ------------------------------------------ */

/* Whether two adapters hold the same matrices (shapes, scales, types and bytes). */
static bool same_adapter(const ctn_lora *x, const ctn_lora *y) {
    if (x->n_layer != y->n_layer || x->max_rank != y->max_rank || x->bytes != y->bytes)
        return false;
    for (int64_t i = 0; i < (int64_t)x->n_layer * CTN_LORA_N; i++) {
        const ctn_lora_mat *a = &x->mats[i], *b = &y->mats[i];
        if (a->rank != b->rank) return false;
        if (a->rank == 0) continue;
        const size_t es = ctn_lora_type_size(a->type);
        if (a->n_in != b->n_in || a->n_out != b->n_out || a->scale != b->scale ||
            a->type != b->type || memcmp(a->a, b->a, (size_t)(a->rank * a->n_in) * es) != 0 ||
            memcmp(a->bt, b->bt, (size_t)ctn_lora_bt_len(a->rank, a->n_out) * es) != 0)
            return false;
    }
    return true;
}

/* The whole file at path (malloc'd, *len bytes), or NULL. */
static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(n > 0 ? (size_t)n : 1);
    if (p != NULL && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* A PEFT adapter whose load compiles rank_pattern and alpha_pattern keys for every module
 * (PCRE2's allocations) and reorders q_proj / k_proj rows (llama). */
static const peft_spec PATTERNED = {.rank = 4,
                                    .down_rank = 2,
                                    .mask = 0x7Fu,
                                    .alpha = 8,
                                    .dtype = CTN_ST_F32,
                                    .config = ", \"alpha_pattern\": {\"q_proj|v_proj\": 16}",
                                    .seed = 31};

TEST(memory_loaders_equal_file_loaders) {
    loaded L;
    if (make_model(&L, CTN_TYPE_F16, 30) < 0) {
        CHECK(0);
        return;
    }
    char err[512];
    /* GGUF: F32 matrices, held in F16 beside the F16 base. */
    const spec sp = {.rank = 3, .mask = 0x7Fu, .alpha = 6, .type = CTN_TYPE_F32, .seed = 32};
    const char *p = adapter_path("mem");
    CHECK(write_adapter(L.m, &sp, p, NULL, NULL) == 0);
    ctn_lora *fa = NULL, *ma = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &fa, err, sizeof err), 0);
    size_t len = 0;
    void *img = read_file(p, &len);
    CHECK(img != NULL);
    CHECK_EQ_INT(ctn_lora_load_gguf_memory(L.m, img, len, "mem.gguf", 0, &ma, err, sizeof err), 0);
    CHECK(fa != NULL && ma != NULL && same_adapter(fa, ma));
    if (ma != NULL) CHECK_STR(ma->path, "mem.gguf");
    /* Its errors are the file loader's, naming the name given. */
    ctn_lora *bad = (ctn_lora *)&L;
    CHECK_EQ_INT(ctn_lora_load_gguf_memory(L.m, img, len, "mem.gguf", 2, &bad, err, sizeof err),
                 CTN_ERANGE);
    CHECK(bad == NULL);
    CHECK_CONTAINS(err, "mem.gguf: blk.0.attn_q.weight has rank 3, above the limit 2");
    ctn_lora_free(fa), ctn_lora_free(ma);
    free(img);
    unlink(p);

    /* PEFT: the folder's two files. */
    const char *dir = peft_path("mem");
    CHECK_EQ_INT(write_peft(L.m, &PATTERNED, dir, NULL, NULL), 0);
    fa = ma = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &fa, err, sizeof err), 0);
    char cp[512], sp_[512];
    snprintf(cp, sizeof cp, "%s/adapter_config.json", dir);
    snprintf(sp_, sizeof sp_, "%s/adapter_model.safetensors", dir);
    size_t cl = 0, sl = 0;
    char *cfg = read_file(cp, &cl);
    void *st = read_file(sp_, &sl);
    CHECK(cfg != NULL && st != NULL);
    CHECK_EQ_INT(
        ctn_lora_load_peft_memory(L.m, cfg, cl, st, sl, "mem-peft", 0, &ma, err, sizeof err), 0);
    CHECK(fa != NULL && ma != NULL && same_adapter(fa, ma));
    if (fa != NULL) CHECK(fa->mats[CTN_LORA_Q].scale == 4.0f); /* alpha_pattern: 16 / 4 */
    if (fa != NULL) CHECK(fa->mats[CTN_LORA_DOWN].rank == 2);  /* rank_pattern */
    ctn_lora_free(ma);
    ma = NULL;
    /* A config that is bad, or cut at a NUL, is the file loader's error on it. */
    CHECK_EQ_INT(ctn_lora_load_peft_memory(L.m, "{\"r\": 4,", 8, st, sl, "mem-peft", 0, &ma, err,
                                           sizeof err),
                 CTN_EFORMAT);
    CHECK_CONTAINS(err, "mem-peft/adapter_config.json: not valid JSON");
    CHECK_EQ_INT(
        ctn_lora_load_peft_memory(L.m, "{}\0{", 4, st, sl, "mem-peft", 0, &ma, err, sizeof err),
        CTN_EFORMAT);
    CHECK_CONTAINS(err, "mem-peft: model.layers.0.self_attn.q_proj has rank 4, but "
                        "adapter_config.json gives it r = 8");
    CHECK_EQ_INT(ctn_lora_load_peft_memory(L.m, cfg, cl, st, sl > 8 ? sl - 8 : 0, "mem-peft", 0,
                                           &ma, err, sizeof err),
                 CTN_EFORMAT);
    CHECK_CONTAINS(err, "mem-peft/adapter_model.safetensors");
    CHECK(ma == NULL);
    ctn_lora_free(fa);
    free(cfg), free(st);
    rm_peft(dir);
    unload(&L, true);
}

/* One call under allocation failures: returns 0 or a CTN_E* code and frees what it made. */
typedef int (*alloc_call)(void *ud, char *err, size_t errcap);

/*
 * Runs call with the n-th allocation failing, once and then persistently, for n = 0, 1, ...
 * until a run makes no allocation fail. Every run must return 0 or CTN_ENOMEM (with a reason
 * in err); call itself checks that a success is the same as without failures. Returns how
 * many runs gave CTN_ENOMEM.
 */
static long alloc_fail_loop(const char *what, alloc_call call, void *ud) {
    long n_nomem = 0;
    for (int once = 0; once < 2; once++) {
        long n = 0, nomem = 0, ok = 0;
        for (;; n++) {
            char err[512] = "";
            const long before = ctn__alloc_n_failed;
            ctn__alloc_fail_once = once != 0;
            ctn__alloc_fail_after = n;
            const int rc = call(ud, err, sizeof err);
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            if (ctn__alloc_n_failed == before) { /* past the last allocation: a normal run */
                CHECK_EQ_INT(rc, 0);
                break;
            }
            if (rc == CTN_ENOMEM) {
                nomem++;
                if (err[0] == '\0') {
                    printf("  %s: allocation %ld failed with no reason given\n", what, n);
                    CHECK(0);
                }
            } else if (rc == 0) {
                ok++;
            } else {
                printf("  %s: allocation %ld failed %s: %s (%s)\n", what, n,
                       once ? "once" : "for good", ctn_strerror(rc), err);
                CHECK(0);
                break;
            }
            if (n > 100000) { /* a call that never stops allocating */
                CHECK(0);
                break;
            }
        }
        printf("  %s, failing allocation N %s: %ld allocations; %ld runs CTN_ENOMEM, %ld "
               "succeeded\n",
               what, once ? "once" : "and all later ones", n, nomem, ok);
        CHECK(n > 0 && nomem > 0);
        if (!once) CHECK_EQ_INT(ok, 0); /* with every later allocation failing, nothing works */
        n_nomem += nomem;
    }
    return n_nomem;
}

typedef struct {
    const ctn_model *m;
    const ctn_gguf *g;
    const char *path, *out;
    const char *config; /* PEFT in memory */
    size_t config_len;
    const void *st;
    size_t st_len;
    const ctn_lora *want;  /* what a load must give */
    const void *want_file; /* what a merge must write */
    size_t want_len;
} alloc_case;

static int load_file_case(void *ud, char *err, size_t errcap) {
    const alloc_case *c = ud;
    ctn_lora *a = NULL;
    const int rc = ctn_lora_load(c->m, c->path, 0, &a, err, errcap);
    CHECK(rc == 0 ? a != NULL && same_adapter(a, c->want) : a == NULL);
    ctn_lora_free(a);
    return rc;
}

static int load_peft_memory_case(void *ud, char *err, size_t errcap) {
    const alloc_case *c = ud;
    ctn_lora *a = NULL;
    const int rc = ctn_lora_load_peft_memory(c->m, c->config, c->config_len, c->st, c->st_len,
                                             "oom-peft", 0, &a, err, errcap);
    CHECK(rc == 0 ? a != NULL && same_adapter(a, c->want) : a == NULL);
    ctn_lora_free(a);
    return rc;
}

static int merge_case_oom(void *ud, char *err, size_t errcap) {
    const alloc_case *c = ud;
    unlink(c->out);
    const int rc = ctn_lora_merge(c->g, c->m, c->want, 0.5f, c->out, err, errcap);
    size_t len = 0;
    void *got = read_file(c->out, &len);
    if (rc == 0)
        CHECK(got != NULL && len == c->want_len && memcmp(got, c->want_file, len) == 0);
    else
        CHECK(got == NULL); /* no half-written model left behind */
    free(got);
    return rc;
}

TEST(allocation_failures_are_clean) {
    loaded L;
    if (make_model(&L, CTN_TYPE_F16, 33) < 0) {
        CHECK(0);
        return;
    }
    char err[512];
    /* GGUF: F32 matrices held in F16 beside the F16 base (the narrowing allocates too). */
    const spec sp = {.rank = 2, .mask = 0x7Fu, .alpha = 4, .type = CTN_TYPE_F32, .seed = 34};
    const char *p = adapter_path("oom");
    CHECK(write_adapter(L.m, &sp, p, NULL, NULL) == 0);
    ctn_lora *want = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, p, 0, &want, err, sizeof err), 0);
    if (want != NULL) {
        alloc_case c = {.m = L.m, .path = p, .want = want};
        alloc_fail_loop("GGUF LoRA load", load_file_case, &c);
        /* ctn_lora_merge, with the output it writes without failures as the reference. */
        char out[256];
        snprintf(out, sizeof out, "/tmp/test_lora_file-%d-oom-merged.gguf", (int)getpid());
        CHECK_EQ_INT(ctn_lora_merge(L.g, L.m, want, 0.5f, out, err, sizeof err), 0);
        c.g = L.g;
        c.out = out;
        c.want_file = read_file(out, &c.want_len);
        CHECK(c.want_file != NULL);
        if (c.want_file != NULL) alloc_fail_loop("ctn_lora_merge", merge_case_oom, &c);
        free((void *)c.want_file);
        unlink(out);
    }
    ctn_lora_free(want);
    unlink(p);

    /* PEFT, from the folder and from memory. */
    const char *dir = peft_path("oom");
    CHECK_EQ_INT(write_peft(L.m, &PATTERNED, dir, NULL, NULL), 0);
    want = NULL;
    CHECK_EQ_INT(ctn_lora_load(L.m, dir, 0, &want, err, sizeof err), 0);
    if (want != NULL) {
        alloc_case c = {.m = L.m, .path = dir, .want = want};
        alloc_fail_loop("PEFT folder load", load_file_case, &c);
        char cp[512], stp[512];
        snprintf(cp, sizeof cp, "%s/adapter_config.json", dir);
        snprintf(stp, sizeof stp, "%s/adapter_model.safetensors", dir);
        void *cfg = read_file(cp, &c.config_len), *st = read_file(stp, &c.st_len);
        c.config = cfg;
        c.st = st;
        CHECK(cfg != NULL && st != NULL);
        if (cfg != NULL && st != NULL)
            alloc_fail_loop("PEFT load in memory", load_peft_memory_case, &c);
        free(cfg), free(st);
    }
    ctn_lora_free(want);
    rm_peft(dir);
    unload(&L, true);
}

int main(void) {
    RUN(loads_what_was_written);
    RUN(malformed_adapters_are_named);
    RUN(adapter_equals_merged_file);
    RUN(peft_folder_equals_converted_gguf);
    RUN(peft_q_k_rows_follow_the_rope_layout);
    RUN(peft_dtypes_and_scales);
    RUN(peft_settings_catena_cannot_serve_are_named);
    RUN(non_finite_scales_are_refused);
    RUN(memory_loaders_equal_file_loaders);
    RUN(allocation_failures_are_clean);
    return test_summary();
}
