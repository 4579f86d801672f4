/*
 * GGUF LoRA files (lora.h ctn_lora_load) and merging (ctn_lora_merge): a file written here
 * with seeded random A and B loads to exactly those matrices and alpha / rank; F16 files
 * load converted; every malformed file is an error naming the adapter and the tensor; and
 * generating with the adapter equals generating with the merged model (greedy ids
 * identical, logits within 1e-4 normalised error for an F32 base; a Q8_0 base is merged
 * and quantized again, and stays within 5e-2).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "forward.h"
#include "gguf.h"
#include "lora.h"
#include "lorarand.h"
#include "model.h"
#include "quant.h"
#include "randmodel.h"
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

static int make_model(loaded *L, int type, uint64_t seed) {
    char path[256], err[256];
    snprintf(path, sizeof path, "/tmp/test_lora_file-%d-%llu.gguf", (int)getpid(),
             (unsigned long long)seed);
    randmodel_shape sh = {type, 64, 4, 2, 96, 2, false, 300, 10000, 1e-5f, seed, 0, 0};
    if (randmodel_write(&sh, false, path, err, sizeof err) < 0) {
        printf("  %s\n", err);
        return -1;
    }
    return load_path(L, path);
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
                bad += memcmp(mt->a, vals + off, na * sizeof(float)) != 0;
                bad += memcmp(mt->b, vals + off + na, nb * sizeof(float)) != 0;
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
    if (a != NULL) CHECK(a->mats[0].scale == 1.0f && a->mats[0].rank == 8);
    ctn_lora_free(a);
    CHECK_EQ_INT(ctn_lora_load(L.m, p, 4, &a, err, sizeof err), CTN_ERANGE);
    CHECK_CONTAINS(err, "blk.0.attn_q.weight has rank 8, above the limit 4");
    unlink(p);
    unload(&L, true);
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
    CHECK_EQ_INT(ctn_lora_load(L.m, "/tmp", 0, &a, err, sizeof err), CTN_ENOTSUP);
    CHECK_CONTAINS(err, "PEFT folders are not read yet");
    /* A file that is not GGUF at all. */
    FILE *f = fopen(p, "wb");
    fputs("not a gguf file at all", f);
    fclose(f);
    CHECK(ctn_lora_load(L.m, p, 0, &a, err, sizeof err) < 0);
    CHECK_CONTAINS(err, p);
    unlink(p);
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

int main(void) {
    RUN(loads_what_was_written);
    RUN(malformed_adapters_are_named);
    RUN(adapter_equals_merged_file);
    return test_summary();
}
