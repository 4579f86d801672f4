/*
 * dlopen() binding of llama.cpp's tokenizer; see llamacpp_dl.h. Nothing here is taken from
 * llama.cpp: the prototypes below are written from the ABI of its public header.
 */
#include "llamacpp_dl.h"

#include <dirent.h>
#include <dlfcn.h>
#include <link.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the ABI we rely on ----------------------------------------------------------- */

/*
 * struct llama_model_params of libllama.v0.5.0 (x86-64: 80 bytes). We only set
 * vocab_only, but the struct travels by value so the layout must be exact.
 */
struct lcpp_model_params {
    void *devices;
    const void *tensor_buft_overrides;
    int32_t n_gpu_layers;
    int split_mode; /* enum */
    int load_mode;  /* enum */
    int lazy_mode;  /* enum */
    int32_t main_gpu;
    const float *tensor_split;
    bool (*progress_callback)(float progress, void *user_data);
    void *progress_callback_user_data;
    const void *kv_overrides;
    bool vocab_only;
    bool check_tensors;
    bool use_extra_bufts;
    bool no_host;
    bool no_alloc;
    bool load_mtp;
};
_Static_assert(sizeof(void *) != 8 || sizeof(struct lcpp_model_params) == 80,
               "llama_model_params layout");

/*
 * struct llama_context_params of the same version (x86-64: 160 bytes, type_k at 104, the
 * booleans at 128). Travels by value, so every field is declared.
 */
struct lcpp_context_params {
    uint32_t n_ctx;
    uint32_t n_batch;
    uint32_t n_ubatch;
    uint32_t n_seq_max;
    uint32_t n_rs_seq;
    uint32_t n_outputs_max;
    uint32_t n_outputs_max_per_seq;
    int32_t n_threads;
    int32_t n_threads_batch;
    int ctx_type;          /* enum */
    int rope_scaling_type; /* enum */
    int pooling_type;      /* enum */
    int attention_type;    /* enum */
    int flash_attn_type;   /* enum: -1 auto, 0 disabled, 1 enabled */
    float rope_freq_base;
    float rope_freq_scale;
    float yarn_ext_factor;
    float yarn_attn_factor;
    float yarn_beta_fast;
    float yarn_beta_slow;
    uint32_t yarn_orig_ctx;
    float defrag_thold;
    void *cb_eval;
    void *cb_eval_user_data;
    int type_k; /* enum ggml_type: 0 is F32 */
    int type_v;
    void *abort_callback;
    void *abort_callback_data;
    bool embeddings;
    bool offload_kqv;
    bool no_perf;
    bool op_offload;
    bool swa_full;
    bool kv_unified;
    void *samplers;
    size_t n_samplers;
    void *ctx_other;
};
_Static_assert(sizeof(void *) != 8 || sizeof(struct lcpp_context_params) == 160,
               "llama_context_params layout");
_Static_assert(sizeof(void *) != 8 || offsetof(struct lcpp_context_params, type_k) == 104,
               "llama_context_params layout");
_Static_assert(sizeof(void *) != 8 || offsetof(struct lcpp_context_params, samplers) == 136,
               "llama_context_params layout");

/* struct llama_batch (x86-64: 56 bytes), passed by value to llama_decode. */
struct lcpp_batch {
    int32_t n_tokens;
    int32_t *token;
    float *embd;
    int32_t *pos;
    int32_t *n_seq_id;
    int32_t **seq_id;
    int8_t *logits;
};
_Static_assert(sizeof(void *) != 8 || sizeof(struct lcpp_batch) == 56, "llama_batch layout");

typedef void (*lcpp_log_fn)(int level, const char *text, void *user_data);

static struct {
    bool open;
    void *h_base, *h_ggml, *h_llama;
    void (*backend_init)(void);
    void (*log_set)(lcpp_log_fn fn, void *ud);
    struct lcpp_model_params (*model_default_params)(void);
    void *(*model_load_from_file)(const char *path, struct lcpp_model_params p);
    void (*model_free)(void *model);
    const void *(*model_get_vocab)(const void *model);
    int (*vocab_type)(const void *vocab);
    int32_t (*vocab_n_tokens)(const void *vocab);
    int32_t (*tokenize)(const void *vocab, const char *text, int32_t text_len, int32_t *tokens,
                        int32_t n_tokens_max, bool add_special, bool parse_special);
    int32_t (*token_to_piece)(const void *vocab, int32_t token, char *buf, int32_t length,
                              int32_t lstrip, bool special);
    int32_t (*detokenize)(const void *vocab, const int32_t *tokens, int32_t n_tokens,
                          char *text, int32_t text_len_max, bool remove_special,
                          bool unparse_special);
    /* Full inference, resolved by lcpp_model_open. */
    bool infer;
    char dir[4096];
    struct lcpp_context_params (*context_default_params)(void);
    void *(*init_from_model)(void *model, struct lcpp_context_params p);
    void (*free_ctx)(void *ctx);
    int32_t (*decode)(void *ctx, struct lcpp_batch b);
    float *(*get_logits_ith)(void *ctx, int32_t i);
    void *(*get_memory)(const void *ctx);
    void (*memory_clear)(void *mem, bool data);
} L;

struct lcpp_vocab {
    void *model;
    const void *vocab;
    int32_t *ids; /* (cap_ids) */
    size_t cap_ids;
    char *text; /* (cap_text) */
    size_t cap_text;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* llama.cpp logs every metadata key on load; keep only errors. */
static void quiet_log(int level, const char *text, void *ud)
{
    (void)ud;
    if (level == 4 /* GGML_LOG_LEVEL_ERROR */) fputs(text, stderr);
}

/*
 * Finds the file in dir whose name starts with prefix and ends in ".so" and whose next
 * character after the prefix is one of `next` ("." for "libllama.v0.5.0.so", so that
 * "libllama-common.so" is not taken for libllama). Writes the full path into out.
 */
static int find_lib(const char *dir, const char *prefix, const char *next, char *out,
                    size_t cap)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    size_t pl = strlen(prefix);
    int found = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t nl = strlen(n);
        if (nl < pl + 3 || strncmp(n, prefix, pl) != 0 || strcmp(n + nl - 3, ".so") != 0)
            continue;
        if (!strchr(next, n[pl])) continue;
        if ((size_t)snprintf(out, cap, "%s/%s", dir, n) >= cap) continue;
        found = 0;
        break;
    }
    closedir(d);
    return found;
}

static void *sym(void *h, const char *name, int *missing, char *err, size_t errlen)
{
    void *p = dlsym(h, name);
    if (!p && !*missing) {
        seterr(err, errlen, "llama.cpp library lacks %s", name);
        *missing = 1;
    }
    return p;
}

int lcpp_lib_open(const char *dir, char *err, size_t errlen)
{
    if (L.open) return 0;
    if (!dir) dir = getenv(LCPP_LIBDIR_ENV);
    if (!dir || !*dir) dir = LCPP_DEFAULT_LIBDIR;

    char base[4096], ggml[4096], llama[4096];
    if (find_lib(dir, "libggml-base", ".", base, sizeof base) < 0 ||
        find_lib(dir, "libggml", ".", ggml, sizeof ggml) < 0 ||
        find_lib(dir, "libllama", ".", llama, sizeof llama) < 0) {
        seterr(err, errlen, "no libggml-base/libggml/libllama .so in %s", dir);
        return -1;
    }
    /* Dependency order, global so that each finds the symbols of the one before. */
    L.h_base = dlopen(base, RTLD_NOW | RTLD_GLOBAL);
    L.h_ggml = L.h_base ? dlopen(ggml, RTLD_NOW | RTLD_GLOBAL) : NULL;
    L.h_llama = L.h_ggml ? dlopen(llama, RTLD_NOW | RTLD_GLOBAL) : NULL;
    if (!L.h_llama) {
        seterr(err, errlen, "dlopen: %s", dlerror());
        return -1;
    }
    int miss = 0;
    void *h = L.h_llama;
    /* Casts through a union-free pointer conversion, as POSIX allows for dlsym. */
    *(void **)&L.backend_init = sym(h, "llama_backend_init", &miss, err, errlen);
    *(void **)&L.log_set = sym(h, "llama_log_set", &miss, err, errlen);
    *(void **)&L.model_default_params = sym(h, "llama_model_default_params", &miss, err, errlen);
    *(void **)&L.model_load_from_file = sym(h, "llama_model_load_from_file", &miss, err, errlen);
    *(void **)&L.model_free = sym(h, "llama_model_free", &miss, err, errlen);
    *(void **)&L.model_get_vocab = sym(h, "llama_model_get_vocab", &miss, err, errlen);
    *(void **)&L.vocab_type = sym(h, "llama_vocab_type", &miss, err, errlen);
    *(void **)&L.vocab_n_tokens = sym(h, "llama_vocab_n_tokens", &miss, err, errlen);
    *(void **)&L.tokenize = sym(h, "llama_tokenize", &miss, err, errlen);
    *(void **)&L.token_to_piece = sym(h, "llama_token_to_piece", &miss, err, errlen);
    *(void **)&L.detokenize = sym(h, "llama_detokenize", &miss, err, errlen);
    if (miss) return -1;
    snprintf(L.dir, sizeof L.dir, "%s", dir);
    L.log_set(quiet_log, NULL);
    L.backend_init();
    L.open = true;
    return 0;
}

int lcpp_vocab_open(lcpp_vocab **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    if (!L.open) {
        seterr(err, errlen, "llama.cpp library not loaded");
        return -1;
    }
    lcpp_vocab *v = calloc(1, sizeof *v);
    if (!v) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    struct lcpp_model_params p = L.model_default_params();
    p.vocab_only = true;
    v->model = L.model_load_from_file(path, p);
    if (!v->model) {
        seterr(err, errlen, "llama.cpp could not load %s", path);
        free(v);
        return -1;
    }
    v->vocab = L.model_get_vocab(v->model);
    *out = v;
    return 0;
}

void lcpp_vocab_free(lcpp_vocab *v)
{
    if (!v) return;
    L.model_free(v->model);
    free(v->ids);
    free(v->text);
    free(v);
}

int lcpp_vocab_type(const lcpp_vocab *v) { return L.vocab_type(v->vocab); }

int32_t lcpp_vocab_n_tokens(const lcpp_vocab *v) { return L.vocab_n_tokens(v->vocab); }

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *p = realloc(*buf, c * elem);
    if (!p) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

int lcpp_tokenize(lcpp_vocab *v, const char *text, size_t len, bool add_special,
                  bool parse_special, const int32_t **ids, size_t *n_ids)
{
    if (len > INT32_MAX) return -1;
    /* At most one token per byte, plus BOS/EOS and a prefix space: one call suffices. */
    if (grow((void **)&v->ids, &v->cap_ids, len + 8, sizeof *v->ids) < 0) return -1;
    int32_t n = L.tokenize(v->vocab, text, (int32_t)len, v->ids, (int32_t)v->cap_ids,
                           add_special, parse_special);
    if (n < 0) {
        if (n == INT32_MIN) return -1;
        if (grow((void **)&v->ids, &v->cap_ids, (size_t)-n, sizeof *v->ids) < 0) return -1;
        n = L.tokenize(v->vocab, text, (int32_t)len, v->ids, (int32_t)v->cap_ids, add_special,
                       parse_special);
        if (n < 0) return -1;
    }
    *ids = v->ids;
    *n_ids = (size_t)n;
    return 0;
}

int lcpp_detokenize(lcpp_vocab *v, const int32_t *ids, size_t n, bool remove_special,
                    bool unparse_special, const char **text, size_t *len)
{
    if (n > INT32_MAX) return -1;
    if (grow((void **)&v->text, &v->cap_text, 64 + n * 8, 1) < 0) return -1;
    int32_t r = L.detokenize(v->vocab, ids, (int32_t)n, v->text, (int32_t)v->cap_text - 1,
                             remove_special, unparse_special);
    if (r < 0) {
        if (r == INT32_MIN) return -1;
        if (grow((void **)&v->text, &v->cap_text, (size_t)-r + 1, 1) < 0) return -1;
        r = L.detokenize(v->vocab, ids, (int32_t)n, v->text, (int32_t)v->cap_text - 1,
                         remove_special, unparse_special);
        if (r < 0) return -1;
    }
    v->text[r] = '\0';
    *text = v->text;
    *len = (size_t)r;
    return 0;
}

int lcpp_token_to_piece(const lcpp_vocab *v, int32_t id, char *buf, size_t cap, int lstrip,
                        bool special)
{
    int32_t c = cap > INT32_MAX ? INT32_MAX : (int32_t)cap;
    int32_t r = L.token_to_piece(v->vocab, id, buf, c, lstrip, special);
    return r < 0 ? -r : r;
}

/* ---- full models ------------------------------------------------------------------------ */

struct lcpp_model {
    void *model;
    void *ctx;
    const void *vocab;
    /* Batch buffers of lcpp_model_open_bench, each of cap entries (NULL otherwise). */
    int32_t cap;
    int32_t *token, *pos, *n_seq_id; /* (cap) */
    int32_t *seq;                    /* (cap) the one sequence id of each token */
    int32_t **seq_id;                /* (cap) seq_id[i] = &seq[i] */
    int8_t *want;                    /* (cap) */
    /* LoRA adapters loaded so far (lcpp_model_set_lora), by path. */
    int n_lora;
    char *lora_path[64];
    void *lora[64];
};

/* Resolves the inference entry points and loads the CPU backends, once. */
static int infer_open(char *err, size_t errlen)
{
    if (L.infer) return 0;
    int miss = 0;
    void *h = L.h_llama;
    *(void **)&L.context_default_params =
        sym(h, "llama_context_default_params", &miss, err, errlen);
    *(void **)&L.init_from_model = sym(h, "llama_init_from_model", &miss, err, errlen);
    *(void **)&L.free_ctx = sym(h, "llama_free", &miss, err, errlen);
    *(void **)&L.decode = sym(h, "llama_decode", &miss, err, errlen);
    *(void **)&L.get_logits_ith = sym(h, "llama_get_logits_ith", &miss, err, errlen);
    *(void **)&L.get_memory = sym(h, "llama_get_memory", &miss, err, errlen);
    *(void **)&L.memory_clear = sym(h, "llama_memory_clear", &miss, err, errlen);
    void (*load_all)(const char *dir);
    *(void **)&load_all = sym(L.h_ggml, "ggml_backend_load_all_from_path", &miss, err, errlen);
    if (miss) return -1;
    load_all(L.dir);
    L.infer = true;
    return 0;
}

/* Loads path on the CPU into a new *out and fills *cp with llama.cpp's default context
 * parameters, for the caller to adjust before context_make. 0 or -1 (err). */
static int model_open(lcpp_model **out, const char *path, struct lcpp_context_params *cp,
                      char *err, size_t errlen)
{
    *out = NULL;
    if (!L.open) {
        seterr(err, errlen, "llama.cpp library not loaded");
        return -1;
    }
    if (infer_open(err, errlen) < 0) return -1;
    lcpp_model *m = calloc(1, sizeof *m);
    if (!m) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    struct lcpp_model_params mp = L.model_default_params();
    mp.n_gpu_layers = 0;
    m->model = L.model_load_from_file(path, mp);
    if (!m->model) {
        seterr(err, errlen, "llama.cpp could not load %s", path);
        free(m);
        return -1;
    }
    *cp = L.context_default_params();
    *out = m;
    return 0;
}

/* Makes m's context from cp, or frees m. 0 or -1 (err). */
static int context_make(lcpp_model *m, const char *path, struct lcpp_context_params cp,
                        char *err, size_t errlen)
{
    m->ctx = L.init_from_model(m->model, cp);
    if (!m->ctx) {
        seterr(err, errlen, "llama.cpp could not make a context for %s", path);
        lcpp_model_free(m);
        return -1;
    }
    m->vocab = L.model_get_vocab(m->model);
    return 0;
}

int lcpp_model_open(lcpp_model **out, const char *path, uint32_t n_ctx, char *err,
                    size_t errlen)
{
    struct lcpp_context_params cp;
    lcpp_model *m;
    if (model_open(&m, path, &cp, err, errlen) < 0) return -1;
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.flash_attn_type = 0;
    cp.type_k = 0;
    cp.type_v = 0;
    cp.no_perf = true;
    if (context_make(m, path, cp, err, errlen) < 0) return -1;
    *out = m;
    return 0;
}

/*
 * The common part of lcpp_model_open_bench and lcpp_model_open_par. kv_unified is only
 * written when set_unified, so that the single-sequence context keeps llama.cpp's default.
 */
static int open_timed(lcpp_model **out, const char *path, uint32_t n_ctx, uint32_t n_batch,
                      uint32_t n_seq_max, bool set_unified, bool kv_unified, int32_t n_threads,
                      bool embed, char *err, size_t errlen)
{
    *out = NULL;
    if (n_batch == 0 || n_batch > INT32_MAX || n_threads < 1 || n_seq_max == 0) {
        seterr(err, errlen, "bad n_batch %u, n_seq_max %u or n_threads %d", n_batch, n_seq_max,
               (int)n_threads);
        return -1;
    }
    struct lcpp_context_params cp;
    lcpp_model *m;
    if (model_open(&m, path, &cp, err, errlen) < 0) return -1;
    size_t n = n_batch;
    m->cap = (int32_t)n_batch;
    m->token = malloc(n * sizeof *m->token);
    m->pos = malloc(n * sizeof *m->pos);
    m->n_seq_id = malloc(n * sizeof *m->n_seq_id);
    m->seq = calloc(n, sizeof *m->seq);
    m->seq_id = malloc(n * sizeof *m->seq_id);
    m->want = malloc(n * sizeof *m->want);
    if (!m->token || !m->pos || !m->n_seq_id || !m->seq || !m->seq_id || !m->want) {
        seterr(err, errlen, "out of memory");
        lcpp_model_free(m);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        m->n_seq_id[i] = 1;
        m->seq_id[i] = &m->seq[i];
    }
    /* Defaults kept on purpose: type_k/type_v F16, flash_attn_type AUTO (see the header). */
    cp.n_ctx = n_ctx;
    cp.n_batch = n_batch;
    cp.n_ubatch = n_batch;
    cp.n_seq_max = n_seq_max;
    if (set_unified) cp.kv_unified = kv_unified;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.no_perf = true;
    if (embed) {
        cp.embeddings = true;
        cp.pooling_type = 1; /* LLAMA_POOLING_TYPE_MEAN */
    }
    if (context_make(m, path, cp, err, errlen) < 0) return -1;
    *out = m;
    return 0;
}

int lcpp_model_open_bench(lcpp_model **out, const char *path, uint32_t n_ctx, uint32_t n_batch,
                          int32_t n_threads, char *err, size_t errlen)
{
    return open_timed(out, path, n_ctx, n_batch, 1, false, false, n_threads, false, err, errlen);
}

int lcpp_model_open_par(lcpp_model **out, const char *path, uint32_t n_ctx, uint32_t n_batch,
                        uint32_t n_seq_max, bool kv_unified, int32_t n_threads, char *err,
                        size_t errlen)
{
    return open_timed(out, path, n_ctx, n_batch, n_seq_max, true, kv_unified, n_threads, false,
                      err, errlen);
}

void lcpp_model_free(lcpp_model *m)
{
    if (!m) return;
    if (m->ctx) L.free_ctx(m->ctx);
    L.model_free(m->model);
    free(m->token);
    free(m->pos);
    free(m->n_seq_id);
    free(m->seq);
    free(m->seq_id);
    free(m->want);
    for (int i = 0; i < m->n_lora; i++) /* the adapters go with the model */
        free(m->lora_path[i]);
    free(m);
}

int32_t lcpp_model_n_vocab(const lcpp_model *m) { return L.vocab_n_tokens(m->vocab); }

int lcpp_model_decode(lcpp_model *m, int32_t token, int32_t pos, const float **logits)
{
    int32_t seq = 0, n_seq = 1;
    int32_t *seqs = &seq;
    int8_t want = 1;
    struct lcpp_batch b = {1, &token, NULL, &pos, &n_seq, &seqs, &want};
    if (L.decode(m->ctx, b) != 0) return -1;
    *logits = L.get_logits_ith(m->ctx, -1);
    return *logits ? 0 : -1;
}

void lcpp_model_clear(lcpp_model *m) { L.memory_clear(L.get_memory(m->ctx), true); }

int lcpp_model_decode_batch(lcpp_model *m, const int32_t *tokens, int32_t n, int32_t pos0,
                            const float **logits)
{
    if (n < 1 || n > m->cap) return -1;
    for (int32_t i = 0; i < n; i++) {
        m->token[i] = tokens[i];
        m->pos[i] = pos0 + i;
        m->seq[i] = 0;
        m->want[i] = i == n - 1;
    }
    struct lcpp_batch b = {n, m->token, NULL, m->pos, m->n_seq_id, m->seq_id, m->want};
    if (L.decode(m->ctx, b) != 0) return -1;
    *logits = L.get_logits_ith(m->ctx, -1);
    return *logits ? 0 : -1;
}

int lcpp_model_decode_multi(lcpp_model *m, const int32_t *tokens, const int32_t *pos,
                            const int32_t *seq_ids, int32_t n, bool all_logits)
{
    if (n < 1 || n > m->cap) return -1;
    for (int32_t i = 0; i < n; i++) {
        m->token[i] = tokens[i];
        m->pos[i] = pos[i];
        m->seq[i] = seq_ids[i];
        m->want[i] = all_logits || i == n - 1;
    }
    struct lcpp_batch b = {n, m->token, NULL, m->pos, m->n_seq_id, m->seq_id, m->want};
    return L.decode(m->ctx, b) == 0 ? 0 : -1;
}

const float *lcpp_model_logits(lcpp_model *m, int32_t i) { return L.get_logits_ith(m->ctx, i); }

int32_t lcpp_model_window_bos(const lcpp_model *m)
{
    static int32_t (*vocab_bos)(const void *vocab);
    static bool (*get_add_bos)(const void *vocab);
    if (!vocab_bos || !get_add_bos) {
        int miss = 0;
        *(void **)&vocab_bos = sym(L.h_llama, "llama_vocab_bos", &miss, NULL, 0);
        *(void **)&get_add_bos = sym(L.h_llama, "llama_vocab_get_add_bos", &miss, NULL, 0);
        if (miss) return -1;
    }
    return get_add_bos(m->vocab) ? vocab_bos(m->vocab) : -1;
}

/* Where find_cpu_variant writes. */
struct variant_out {
    char *buf;
    size_t cap;
};

/* dl_iterate_phdr callback: copies the variant of the first libggml-cpu-*.so it meets. */
static int find_cpu_variant(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct variant_out *out = data;
    const char *slash = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    const char *name = slash ? slash + 1 : info->dlpi_name;
    static const char prefix[] = "libggml-cpu-";
    if (!name || strncmp(name, prefix, sizeof prefix - 1) != 0) return 0;
    const char *v = name + sizeof prefix - 1;
    snprintf(out->buf, out->cap, "%.*s", (int)strcspn(v, "."), v);
    return 1;
}

void lcpp_cpu_variant(char *buf, size_t cap)
{
    if (!buf || cap == 0) return;
    buf[0] = '\0';
    struct variant_out out = {buf, cap};
    dl_iterate_phdr(find_cpu_variant, &out);
}

int lcpp_model_set_lora(lcpp_model *m, const char *path, float scale, char *err, size_t errlen)
{
    static void *(*adapter_init)(void *model, const char *path);
    static int32_t (*set_adapters)(void *ctx, void **adapters, size_t n, float *scales);
    if (!adapter_init || !set_adapters) {
        int miss = 0;
        *(void **)&adapter_init = sym(L.h_llama, "llama_adapter_lora_init", &miss, err, errlen);
        *(void **)&set_adapters = sym(L.h_llama, "llama_set_adapters_lora", &miss, err, errlen);
        if (miss) return -1;
    }
    if (path == NULL) return set_adapters(m->ctx, NULL, 0, NULL) == 0 ? 0 : -1;
    void *a = NULL;
    for (int i = 0; i < m->n_lora && !a; i++)
        if (!strcmp(m->lora_path[i], path)) a = m->lora[i];
    if (!a) {
        if (m->n_lora == 64) {
            seterr(err, errlen, "at most 64 adapters");
            return -1;
        }
        a = adapter_init(m->model, path);
        if (!a) {
            seterr(err, errlen, "llama.cpp could not load the adapter %s", path);
            return -1;
        }
        m->lora_path[m->n_lora] = strdup(path);
        m->lora[m->n_lora++] = a;
    }
    float sc = scale;
    if (set_adapters(m->ctx, &a, 1, &sc) != 0) {
        seterr(err, errlen, "llama_set_adapters_lora failed for %s", path);
        return -1;
    }
    return 0;
}

/* ---- embeddings ------------------------------------------------------------------------- */

int lcpp_model_open_embed(lcpp_model **out, const char *path, uint32_t n_ctx, uint32_t n_seq_max,
                          bool kv_unified, int32_t n_threads, char *err, size_t errlen)
{
    return open_timed(out, path, n_ctx, n_ctx, n_seq_max, true, kv_unified, n_threads, true, err,
                      errlen);
}

int32_t lcpp_model_n_embd(const lcpp_model *m)
{
    static int32_t (*n_embd)(const void *model);
    if (!n_embd) {
        int miss = 0;
        *(void **)&n_embd = sym(L.h_llama, "llama_model_n_embd", &miss, NULL, 0);
        if (miss) return -1;
    }
    return n_embd(m->model);
}

int lcpp_model_embed_batch(lcpp_model *m, const int32_t *const *seqs, const int32_t *lens,
                           int32_t n_seq, float *out)
{
    static float *(*get_seq)(void *ctx, int32_t seq_id);
    if (!get_seq) {
        int miss = 0;
        *(void **)&get_seq = sym(L.h_llama, "llama_get_embeddings_seq", &miss, NULL, 0);
        if (miss) return -1;
    }
    int32_t dim = lcpp_model_n_embd(m), n = 0;
    if (dim < 1 || n_seq < 1) return -1;
    for (int32_t s = 0; s < n_seq; s++) {
        if (lens[s] < 1 || lens[s] > m->cap - n) return -1;
        for (int32_t i = 0; i < lens[s]; i++, n++) {
            m->token[n] = seqs[s][i];
            m->pos[n] = i;
            m->seq[n] = s;
            m->want[n] = 1;
        }
    }
    /* Each batch starts from an empty cache: the sequence ids are reused. */
    L.memory_clear(L.get_memory(m->ctx), true);
    struct lcpp_batch b = {n, m->token, NULL, m->pos, m->n_seq_id, m->seq_id, m->want};
    if (L.decode(m->ctx, b) != 0) return -1;
    for (int32_t s = 0; s < n_seq; s++) {
        const float *e = get_seq(m->ctx, s);
        if (!e) return -1;
        memcpy(out + (size_t)s * dim, e, (size_t)dim * sizeof *out);
    }
    return 0;
}

/* ---- samplers --------------------------------------------------------------------------- */

/* struct llama_token_data and llama_token_data_array of the same version. */
struct lcpp_token_data {
    int32_t id;
    float logit;
    float p;
};
struct lcpp_token_data_array {
    struct lcpp_token_data *data;
    size_t size;
    int64_t selected;
    bool sorted;
};
/* struct llama_sampler_chain_params: one bool, passed by value. */
struct lcpp_chain_params {
    bool no_perf;
};

struct lcpp_sampler {
    void *chain;   /* the chain: [grammar,] greedy */
    void *grammar; /* the chain's grammar sampler (owned by the chain), or NULL */
    struct lcpp_token_data *cand; /* (n_cand) candidates of lcpp_sampler_mask */
    size_t n_cand;
};

static struct {
    bool open;
    struct lcpp_chain_params (*chain_default_params)(void);
    void *(*chain_init)(struct lcpp_chain_params p);
    void (*chain_add)(void *chain, void *smpl);
    void *(*init_greedy)(void);
    void *(*init_grammar)(const void *vocab, const char *str, const char *root);
    int32_t (*sample)(void *smpl, void *ctx, int32_t idx);
    void (*apply)(void *smpl, struct lcpp_token_data_array *cur);
    void (*free)(void *smpl);
    bool (*is_eog)(const void *vocab, int32_t tok);
} S;

static int sampler_syms(char *err, size_t errlen)
{
    if (S.open) return 0;
    int miss = 0;
    void *h = L.h_llama;
    *(void **)&S.chain_default_params =
        sym(h, "llama_sampler_chain_default_params", &miss, err, errlen);
    *(void **)&S.chain_init = sym(h, "llama_sampler_chain_init", &miss, err, errlen);
    *(void **)&S.chain_add = sym(h, "llama_sampler_chain_add", &miss, err, errlen);
    *(void **)&S.init_greedy = sym(h, "llama_sampler_init_greedy", &miss, err, errlen);
    *(void **)&S.init_grammar = sym(h, "llama_sampler_init_grammar", &miss, err, errlen);
    *(void **)&S.sample = sym(h, "llama_sampler_sample", &miss, err, errlen);
    *(void **)&S.apply = sym(h, "llama_sampler_apply", &miss, err, errlen);
    *(void **)&S.free = sym(h, "llama_sampler_free", &miss, err, errlen);
    *(void **)&S.is_eog = sym(h, "llama_vocab_is_eog", &miss, err, errlen);
    if (miss) return -1;
    S.open = true;
    return 0;
}

int lcpp_sampler_new(lcpp_sampler **out, const lcpp_model *m, const char *gbnf, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (sampler_syms(err, errlen) < 0) return -1;
    lcpp_sampler *s = calloc(1, sizeof *s);
    if (!s) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    struct lcpp_chain_params cp = S.chain_default_params();
    cp.no_perf = true;
    s->chain = S.chain_init(cp);
    if (!s->chain) {
        seterr(err, errlen, "llama_sampler_chain_init failed");
        free(s);
        return -1;
    }
    if (gbnf != NULL) {
        s->grammar = S.init_grammar(m->vocab, gbnf, "root");
        if (!s->grammar) {
            seterr(err, errlen, "llama.cpp refused the grammar");
            S.free(s->chain);
            free(s);
            return -1;
        }
        S.chain_add(s->chain, s->grammar); /* the chain owns it now */
    }
    S.chain_add(s->chain, S.init_greedy());
    *out = s;
    return 0;
}

void lcpp_sampler_free(lcpp_sampler *s)
{
    if (!s) return;
    S.free(s->chain);
    free(s->cand);
    free(s);
}

int32_t lcpp_sampler_sample(lcpp_sampler *s, lcpp_model *m)
{
    return S.sample(s->chain, m->ctx, -1);
}

int lcpp_sampler_mask(lcpp_sampler *s, const float *logits, int32_t n, float *out)
{
    if (n < 1) return -1;
    if (s->n_cand < (size_t)n) {
        struct lcpp_token_data *c = realloc(s->cand, (size_t)n * sizeof *c);
        if (!c) return -1;
        s->cand = c;
        s->n_cand = (size_t)n;
    }
    for (int32_t i = 0; i < n; i++)
        s->cand[i] = (struct lcpp_token_data){i, logits[i], 0.0f};
    struct lcpp_token_data_array a = {s->cand, (size_t)n, -1, false};
    if (s->grammar) S.apply(s->grammar, &a);
    /* A sampler may reorder or shrink the array; what it keeps carries its id. */
    for (int32_t i = 0; i < n; i++)
        out[i] = -INFINITY;
    for (size_t i = 0; i < a.size; i++)
        if (a.data[i].id >= 0 && a.data[i].id < n) out[a.data[i].id] = a.data[i].logit;
    return 0;
}

bool lcpp_model_is_eog(const lcpp_model *m, int32_t tok)
{
    if (sampler_syms(NULL, 0) < 0) return false;
    return S.is_eog(m->vocab, tok);
}
