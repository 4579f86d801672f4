/*
 * Differential test of catena's reference forward pass (engine/ref_forward.c) against
 * llama.cpp's CPU backend, both loaded in this one process (llama.cpp through dlopen,
 * bench/llamacpp_dl.c), on the same GGUF files.
 *
 *   fwddiff [-v]
 *
 * 1. stories260K ($CTN_SHARED/models, else ../shared/models): the prompt "Once upon a time"
 *    (with BOS) is fed token by token to both and the logits compared at each position,
 *    then both decode 40 tokens greedily and the ids must be equal.
 * 2. Random-weight llama, qwen2 and qwen3 models (tests/randmodel.h) written with the GGUF
 *    writer from a fixed seed, in many shapes (width, MHA / GQA / MQA, head widths 8 to 128, odd
 * feed-forward widths, 1 to 3 layers, tied and untied output, vocabularies of 64 to 300 tokens,
 * several RoPE bases and RMSNorm epsilons) and weight types (F32, F16, BF16, Q8_0, Q4_0, Q4_K,
 * Q6_K, made with ctn_quantize_row). A fixed random sequence of 16 tokens is fed to both and the
 *    logits compared at each position; then both decode 16 tokens greedily.
 *
 * Each model is run twice on catena's side: by the scalar reference forward pass, and by the
 * engine (engine/forward.c: SIMD kernels, paged F32 KV cache, 2 threads; rows "TYPE e"),
 * whose greedy ids must match llama.cpp's for every type. Rows "TYPE d" run both with their
 * defaults instead (F16 KV caches, llama.cpp with flash attention, 2 threads each, the
 * sequence prefilled as one batch): greedy ids must match for F32/F16/BF16; for quantized
 * types the F16 rounding of keys and values may flip a near tie, so they are printed.
 *
 * The error measure is ggml's normalised error: max |catena - llama.cpp| over the logits
 * divided by max |llama.cpp|, the worst over all positions. The tolerances (TOL_* below)
 * are stated with the errors measured when they were set. llama.cpp multiplies F16 and
 * BF16 weights with activations rounded to F16 / BF16 and quantized weights with
 * activations quantized to Q8 (Q8_0 or Q8_K); catena's reference keeps activations in F32,
 * so those types differ by that rounding. The greedy ids must be equal for F32, F16 and
 * BF16 (and stories260K); for quantized types they are printed but not required, as the
 * activation rounding may legitimately flip a near tie.
 *
 * Exit status: 0 all passed, 1 a failure, 77 (ctest skip) when llama.cpp is not installed
 * (scripts/setup-peers.sh installs it). Prints a table and "N passed, N failed".
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "gguf.h"
#include "llamacpp_dl.h"
#include "model.h"
#include "quant.h"
#include "randmodel.h"
#include "ref_forward.h"
#include "vocab.h"

/*
 * Normalised-error tolerances by weight type, with the worst error measured over the models
 * below when they were set (x86-64, the libggml-cpu variant ggml picks for the host, one thread).
 * The F32 twins of the non-F32 models (TYPE/f32 rows) measured at most 1.0e-6, which shows that
 * what the looser rows allow is llama.cpp's activation rounding and nothing in catena.
 */
#define TOL_F32  1e-5   /* measured 1.1e-6 (stories260K), 7.9e-7 (random) */
#define TOL_F16  3e-3   /* 7.2e-4: activations rounded to F16 */
#define TOL_BF16 1.5e-2 /* 3.9e-3: activations rounded to BF16 */
#define TOL_Q8_0 5e-2   /* 2.1e-2: activations quantized to Q8_0 */
#define TOL_Q4_0 5e-2   /* 2.1e-2: activations quantized to Q8_0 */
#define TOL_QK   5e-2   /* Q4_K 2.4e-2, Q6_K 1.7e-2: activations quantized to Q8_K */

#define N_SEQ    16 /* random tokens fed to each random model */
#define N_GREEDY 16
#define N_CTX    64

static bool verbose;
static int n_pass, n_fail;

static double tolerance(int type) {
    switch (type) {
    case CTN_TYPE_F32: return TOL_F32;
    case CTN_TYPE_F16: return TOL_F16;
    case CTN_TYPE_BF16: return TOL_BF16;
    case CTN_TYPE_Q8_0: return TOL_Q8_0;
    case CTN_TYPE_Q4_0: return TOL_Q4_0;
    default: return TOL_QK;
    }
}

/*
 * The engine (engine/forward.c, "TYPE e" rows) rounds activations as llama.cpp does (F16,
 * BF16, Q8_0, Q8_K before the dot products), so only summation order separates the two.
 * Measured when set: see the comments.
 */
static double engine_tolerance(int type) {
    switch (type) {
    case CTN_TYPE_F32: return 1e-5;
    case CTN_TYPE_F16: return 1e-3;
    case CTN_TYPE_BF16: return 5e-3;
    default: return 2e-2;
    }
}

/* "TYPE d" rows: both sides' defaults (F16 KV caches; llama.cpp also uses flash attention,
 * which accumulates values in F16), so the KV rounding adds to the engine's tolerance. */
static double defaults_tolerance(int type) {
    return engine_tolerance(type) + 2e-3; /* F32 measured 9.5e-5 .. 4.7e-4 */
}

/* Types whose greedy ids must match exactly. */
static bool exact_greedy(int type) {
    return type == CTN_TYPE_F32 || type == CTN_TYPE_F16 || type == CTN_TYPE_BF16;
}

static int32_t argmax(const float *v, int64_t n) {
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int32_t)i;
    return best;
}

/* max |a - b| / max |b| */
static double norm_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || d != d) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

/* ---- running both ----------------------------------------------------------------------- */

typedef struct {
    double max_err;
    int err_pos;     /* position of the worst error */
    bool greedy_ok;  /* greedy ids equal */
    int greedy_diff; /* first differing step, or -1 */
    bool failed;     /* a load or decode failed */
    char msg[600];
} outcome;

/*
 * Feeds `seq` (n_seq tokens) to both, then n_gen greedy steps to each on its own, and fills
 * o. The catena model m and the llama.cpp model lm are borrowed.
 */
static void compare(const ctn_model *m, lcpp_model *lm, const int32_t *seq, int n_seq, int n_gen,
                    bool engine, int32_t *gen_c, int32_t *gen_l, outcome *o) {
    memset(o, 0, sizeof *o);
    o->greedy_diff = -1;
    int64_t nv = m->hp.n_vocab;
    if (lcpp_model_n_vocab(lm) != nv) {
        snprintf(o->msg, sizeof o->msg, "n_vocab %lld vs llama.cpp %d", (long long)nv,
                 (int)lcpp_model_n_vocab(lm));
        o->failed = true;
        return;
    }
    ctn_ref_state s;
    ctn_fwd *f = NULL;
    ctn_kv_seq kseq = {0};
    char ferr[512] = "";
    float *lc = malloc((size_t)nv * sizeof *lc);
    if (!lc || ctn_ref_state_init(&s, m, N_CTX) < 0 ||
        (engine &&
         (ctn_fwd_new(&f, m, &(ctn_fwd_params){.n_threads = 2, .n_ctx = N_CTX, .kv_f32 = true},
                      ferr, sizeof ferr) < 0 ||
          ctn_fwd_seq_init(f, &kseq) < 0))) {
        snprintf(o->msg, sizeof o->msg, "setting up: %s", ferr[0] ? ferr : "out of memory");
        o->failed = true;
        free(lc);
        ctn_fwd_free(f);
        return;
    }
    lcpp_model_clear(lm);
    int32_t tc = 0, tl = 0;
    int pos = 0;
    for (; pos < n_seq + n_gen; pos++) {
        bool fed = pos < n_seq;
        int32_t in_c = fed ? seq[pos] : tc, in_l = fed ? seq[pos] : tl;
        const float *ll;
        if (engine) {
            ctn_fwd_seg seg = {.seq = &kseq, .tokens = &in_c, .n_tokens = 1, .logits = true};
            if (ctn_fwd_run(f, &seg, 1, lc) < 0) {
                snprintf(o->msg, sizeof o->msg, "catena engine: %s", ctn_fwd_errmsg(f));
                o->failed = true;
                break;
            }
        } else if (ctn_ref_forward(m, &s, in_c, pos, lc) < 0) {
            snprintf(o->msg, sizeof o->msg, "catena: %s", ctn_ref_state_errmsg(&s));
            o->failed = true;
            break;
        }
        if (lcpp_model_decode(lm, in_l, pos, &ll) < 0) {
            snprintf(o->msg, sizeof o->msg, "llama_decode failed at %d", pos);
            o->failed = true;
            break;
        }
        /* Logits are compared while both have seen the same tokens. */
        if (o->greedy_diff < 0) {
            double e = norm_err(lc, ll, nv);
            if (e > o->max_err || e != e) {
                o->max_err = e;
                o->err_pos = pos;
            }
            if (verbose) printf("    pos %2d  token %5d  err %.3g\n", pos, in_c, e);
        }
        tc = argmax(lc, nv);
        tl = argmax(ll, nv);
        if (pos >= n_seq - 1 && pos < n_seq + n_gen - 1) {
            int k = pos - (n_seq - 1);
            gen_c[k] = tc;
            gen_l[k] = tl;
            if (tc != tl && o->greedy_diff < 0) o->greedy_diff = k;
        }
    }
    o->greedy_ok = !o->failed && o->greedy_diff < 0;
    if (f != NULL) ctn_fwd_seq_close(f, &kseq);
    ctn_fwd_free(f);
    ctn_ref_state_close(&s);
    free(lc);
}

/*
 * Both sides with their defaults, as a user runs them: the engine with its F16 KV cache and
 * llama.cpp with its own (F16 KV, flash attention on the CPU backend), 2 threads each; the
 * sequence is prefilled as one batch, then n_gen greedy steps. The error is that of the
 * last prompt token's logits; the greedy ids are compared step by step.
 */
static void compare_defaults(const ctn_model *m, const char *path, const int32_t *seq, int n_seq,
                             int n_gen, int32_t *gen_c, int32_t *gen_l, outcome *o) {
    memset(o, 0, sizeof *o);
    o->greedy_diff = -1;
    const int64_t nv = m->hp.n_vocab;
    char err[512] = "";
    ctn_fwd *f = NULL;
    ctn_kv_seq kseq = {0};
    lcpp_model *lm = NULL;
    float *lc = malloc((size_t)nv * sizeof *lc);
    if (lc == NULL ||
        ctn_fwd_new(&f, m, &(ctn_fwd_params){.n_threads = 2, .n_ctx = N_CTX}, err, sizeof err) <
            0 ||
        ctn_fwd_seq_init(f, &kseq) < 0 ||
        lcpp_model_open_bench(&lm, path, N_CTX, N_CTX, 2, err, sizeof err) < 0) {
        snprintf(o->msg, sizeof o->msg, "setting up: %s", err[0] ? err : "out of memory");
        o->failed = true;
        goto done;
    }
    ctn_fwd_seg seg = {.seq = &kseq, .tokens = seq, .n_tokens = n_seq, .logits = true};
    const float *ll;
    if (ctn_fwd_run(f, &seg, 1, lc) < 0 || lcpp_model_decode_batch(lm, seq, n_seq, 0, &ll) < 0) {
        snprintf(o->msg, sizeof o->msg, "prefill failed: %s", ctn_fwd_errmsg(f));
        o->failed = true;
        goto done;
    }
    o->max_err = norm_err(lc, ll, nv);
    o->err_pos = n_seq - 1;
    for (int k = 0; k < n_gen; k++) {
        int32_t tc = argmax(lc, nv), tl = argmax(ll, nv);
        gen_c[k] = tc;
        gen_l[k] = tl;
        if (tc != tl && o->greedy_diff < 0) o->greedy_diff = k;
        if (k + 1 == n_gen) break;
        seg = (ctn_fwd_seg){.seq = &kseq, .tokens = &tc, .n_tokens = 1, .logits = true};
        if (ctn_fwd_run(f, &seg, 1, lc) < 0 ||
            lcpp_model_decode_batch(lm, &tl, 1, n_seq + k, &ll) < 0) {
            snprintf(o->msg, sizeof o->msg, "decode failed at step %d", k);
            o->failed = true;
            break;
        }
    }
    o->greedy_ok = !o->failed && o->greedy_diff < 0;
done:
    if (f != NULL) ctn_fwd_seq_close(f, &kseq);
    ctn_fwd_free(f);
    lcpp_model_free(lm);
    free(lc);
}

static void report(const char *name, const char *type, const outcome *o, double tol,
                   bool need_greedy, const int32_t *gen_c, const int32_t *gen_l, int n_gen) {
    bool ok = !o->failed && o->max_err <= tol && (o->greedy_ok || !need_greedy);
    printf("%-46s %-6s %10.3g %9.0e  %-5s%s %s\n", name, type, o->max_err, tol,
           o->greedy_ok ? "yes" : "NO", need_greedy ? "" : "*", ok ? "ok" : "FAIL");
    if (o->failed) printf("    %s\n", o->msg);
    if (!ok && o->max_err > tol) printf("    worst error at position %d\n", o->err_pos);
    if (!o->greedy_ok && !o->failed) {
        printf("    greedy ids differ from step %d:\n      catena:", o->greedy_diff);
        for (int i = 0; i < n_gen; i++)
            printf(" %d", gen_c[i]);
        printf("\n      llama: ");
        for (int i = 0; i < n_gen; i++)
            printf(" %d", gen_l[i]);
        printf("\n");
    }
    if (ok)
        n_pass++;
    else
        n_fail++;
}

/* ---- stories260K ------------------------------------------------------------------------ */

static void test_stories(void) {
    const char *sh = getenv("CTN_SHARED");
    char path[4096], err[512] = "";
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", sh && *sh ? sh : "../shared");
    if (access(path, R_OK) != 0) {
        printf("%-46s skipped: %s not found (set CTN_SHARED)\n", "stories260K", path);
        return;
    }
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    ctn_vocab *v = NULL;
    lcpp_model *lm = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    outcome o = {0};
    enum { N_GEN = 40 };
    int32_t gen_c[N_GEN], gen_l[N_GEN];
    if (ctn_gguf_open(&g, path, err, sizeof err) < 0 ||
        ctn_model_load(&m, g, err, sizeof err) < 0 || ctn_vocab_load(&v, g, err, sizeof err) < 0 ||
        lcpp_model_open(&lm, path, N_CTX, err, sizeof err) < 0) {
        o.failed = true;
        snprintf(o.msg, sizeof o.msg, "%s", err);
    } else if (ctn_tokenize(v, "Once upon a time", 16, true, false, &ids, &n_ids) < 0 ||
               n_ids + N_GEN > N_CTX) {
        o.failed = true;
        snprintf(o.msg, sizeof o.msg, "tokenize failed");
    } else {
        compare(m, lm, ids, (int)n_ids, N_GEN, false, gen_c, gen_l, &o);
    }
    report("stories260K \"Once upon a time\"", "F32", &o, TOL_F32, true, gen_c, gen_l, N_GEN);
    if (!o.failed) {
        compare(m, lm, ids, (int)n_ids, N_GEN, true, gen_c, gen_l, &o);
        report("stories260K \"Once upon a time\"", "F32 e", &o, engine_tolerance(CTN_TYPE_F32),
               true, gen_c, gen_l, N_GEN);
    }
    free(ids);
    lcpp_model_free(lm);
    ctn_vocab_free(v);
    ctn_model_free(m);
    ctn_gguf_free(g);
}

/* ---- random models ---------------------------------------------------------------------- */

static const randmodel_shape SHAPES[] = {
    /* F32: head widths 8..64, MHA, GQA 2:1 and 4:1, MQA, odd ff, 1-3 layers. */
    {CTN_TYPE_F32, 32, 4, 4, 50, 1, true, 64, 10000, 1e-5f, 1, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 48, 3, 1, 97, 2, false, 100, 500000, 1e-6f, 2, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 64, 4, 2, 171, 2, true, 300, 10000, 1e-5f, 3, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 64, 8, 2, 128, 3, false, 200, 1000000, 1e-5f, 4, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 96, 3, 3, 257, 1, false, 150, 100, 1e-6f, 5, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 128, 2, 1, 200, 2, true, 256, 10000, 1e-5f, 6, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 128, 8, 2, 384, 2, false, 300, 10000, 1e-5f, 7, RANDMODEL_LLAMA, 0},
    /* F16 / BF16: any row length. */
    {CTN_TYPE_F16, 48, 3, 1, 97, 2, false, 100, 500000, 1e-6f, 8, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F16, 64, 4, 2, 171, 2, true, 300, 10000, 1e-5f, 9, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F16, 128, 2, 1, 200, 2, false, 256, 10000, 1e-5f, 10, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_BF16, 64, 4, 2, 171, 2, true, 300, 10000, 1e-5f, 11, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_BF16, 96, 3, 3, 257, 1, false, 150, 100, 1e-6f, 12, RANDMODEL_LLAMA, 0},
    /* Q8_0 / Q4_0: rows a multiple of 32. */
    {CTN_TYPE_Q8_0, 64, 4, 2, 192, 2, false, 200, 10000, 1e-5f, 13, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q8_0, 96, 3, 1, 160, 1, true, 150, 1000000, 1e-5f, 14, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q8_0, 128, 2, 2, 256, 2, true, 256, 10000, 1e-6f, 15, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_0, 64, 8, 2, 128, 3, false, 200, 10000, 1e-5f, 16, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_0, 128, 4, 1, 320, 1, true, 300, 500000, 1e-5f, 17, RANDMODEL_LLAMA, 0},
    /* K-quants: rows a multiple of 256. */
    {CTN_TYPE_Q4_K, 256, 4, 2, 512, 2, false, 300, 10000, 1e-5f, 18, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_K, 256, 8, 1, 256, 1, true, 128, 1000000, 1e-5f, 19, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q6_K, 256, 4, 4, 512, 1, false, 300, 10000, 1e-5f, 20, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q6_K, 256, 2, 1, 768, 2, true, 200, 500000, 1e-6f, 21, RANDMODEL_LLAMA, 0},
    /* qwen2 (Q/K/V biases, NeoX RoPE) and qwen3 (Q/K norms, heads wider than dim / n_head). */
    {CTN_TYPE_F32, 64, 4, 2, 128, 2, false, 200, 1000000, 1e-6f, 31, RANDMODEL_QWEN2, 0},
    {CTN_TYPE_F16, 96, 3, 1, 160, 1, true, 150, 10000, 1e-6f, 32, RANDMODEL_QWEN2, 0},
    {CTN_TYPE_Q8_0, 128, 4, 2, 256, 2, true, 150, 1000000, 1e-6f, 33, RANDMODEL_QWEN2, 0},
    {CTN_TYPE_F32, 64, 4, 2, 96, 2, false, 200, 1000000, 1e-6f, 34, RANDMODEL_QWEN3, 24},
    {CTN_TYPE_BF16, 64, 2, 1, 128, 2, true, 120, 10000, 1e-6f, 35, RANDMODEL_QWEN3, 48},
    {CTN_TYPE_Q4_K, 256, 4, 2, 512, 1, false, 200, 1000000, 1e-6f, 36, RANDMODEL_QWEN3, 128},
};

/*
 * Compares catena on the model of shape sh with llama.cpp on the same file, or with twin on
 * its F32 twin (the same weight values dequantized, see add_random), which takes llama.cpp's
 * activation rounding out of the comparison and holds catena's handling of the quantized
 * type to the F32 tolerance.
 */
static void test_random(const randmodel_shape *sh, const char *dir, bool twin, int engine) {
    char name[96], path[4096], tpath[4096], type[16], err[512] = "";
    int hd = sh->dim / sh->n_head;
    static const char *const arch[] = {"", "qwen2 ", "qwen3 "};
    if (sh->head_dim > 0) hd = sh->head_dim;
    snprintf(name, sizeof name, "%sd%d h%d/%d hd%d ff%d L%d V%d %s b%g", arch[sh->arch], sh->dim,
             sh->n_head, sh->n_kv, hd, sh->ff, sh->n_layer, sh->n_vocab,
             sh->tied ? "tied" : "untied", (double)sh->rope_base);
    snprintf(path, sizeof path, "%s/fwddiff-%d-%llu.gguf", dir, (int)getpid(),
             (unsigned long long)sh->seed);
    snprintf(tpath, sizeof tpath, "%s/fwddiff-%d-%llu-f32.gguf", dir, (int)getpid(),
             (unsigned long long)sh->seed);
    snprintf(type, sizeof type, "%s%s%s", ctn_type_name(sh->type), twin ? "/f32" : "",
             engine == 2 ? " d"
             : engine    ? " e"
                         : "");
    outcome o = {0};
    int32_t gen_c[N_GREEDY], gen_l[N_GREEDY], seq[N_SEQ];
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    lcpp_model *lm = NULL;
    uint64_t rng = sh->seed * 104729 + 17;
    seq[0] = 1; /* BOS */
    for (int i = 1; i < N_SEQ; i++)
        seq[i] = 4 + (int32_t)(rng_next(&rng) % (uint64_t)(sh->n_vocab - 4));
    if (randmodel_write(sh, false, path, err, sizeof err) < 0 ||
        (twin && randmodel_write(sh, true, tpath, err, sizeof err) < 0) ||
        ctn_gguf_open(&g, path, err, sizeof err) < 0 ||
        ctn_model_load(&m, g, err, sizeof err) < 0 ||
        (engine != 2 && lcpp_model_open(&lm, twin ? tpath : path, N_CTX, err, sizeof err) < 0)) {
        o.failed = true;
        snprintf(o.msg, sizeof o.msg, "%s", err);
    } else {
        if (engine == 2)
            compare_defaults(m, path, seq, N_SEQ, N_GREEDY, gen_c, gen_l, &o);
        else
            compare(m, lm, seq, N_SEQ, N_GREEDY, engine, gen_c, gen_l, &o);
    }
    double tol = engine == 2 ? defaults_tolerance(sh->type)
                 : engine    ? engine_tolerance(sh->type)
                 : twin      ? TOL_F32
                             : tolerance(sh->type);
    /* Greedy ids must match: always for F32/F16/BF16 and for the F32 twins; for quantized
     * types with the engine's own KV cache (F32, as llama.cpp's here), but not with both
     * sides' F16 defaults, where KV rounding may flip a near tie. */
    bool need = twin || exact_greedy(sh->type) || engine == 1;
    report(name, type, &o, tol, need, gen_c, gen_l, N_GREEDY);
    lcpp_model_free(lm);
    ctn_model_free(m);
    ctn_gguf_free(g);
    unlink(path);
    if (twin) unlink(tpath);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0) {
            verbose = true;
        } else {
            fprintf(stderr, "usage: fwddiff [-v]\n");
            return 2;
        }
    }
    char err[512];
    if (lcpp_lib_open(NULL, err, sizeof err) < 0) {
        printf("fwddiff: llama.cpp not available (%s); skipped\n", err);
        return 77;
    }
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    printf("%-46s %-6s %10s %9s  %-6s %s\n", "model", "type", "max err", "tol", "greedy", "result");
    test_stories();
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++) {
        test_random(&SHAPES[i], tmp, false, false);
        if (SHAPES[i].type != CTN_TYPE_F32) test_random(&SHAPES[i], tmp, true, false);
        test_random(&SHAPES[i], tmp, false, 1);
        test_random(&SHAPES[i], tmp, false, 2);
    }
    printf("(TYPE/f32: llama.cpp runs the F32 twin of the same weights; * greedy ids not "
           "required)\n");
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
