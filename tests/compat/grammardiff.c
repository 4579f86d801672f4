/*
 * Differential test of catena's grammar-constrained greedy decoding (engine/grammar.c through
 * ctn_gen_request.grammar) against llama.cpp's grammar sampler (llama_sampler_init_grammar,
 * then greedy, in a sampler chain; bench/llamacpp_dl.c), both in this one process on the same
 * random-weight GGUF models and the same GBNF texts.
 *
 *   grammardiff [-v]
 *
 * Models: build/tools/mkmodel ($MKMODEL) writes small random llama models (dim 64, 2 layers,
 * F32) with the real vocabularies of $CTN_SHARED/vocab (llama-spm, 32k tokens; qwen2, 152k
 * byte-level BPE tokens), so that the grammars can be spelled.
 * Grammars: every .gbnf file of build/peers/llama.cpp/grammars (scripts/setup-peers.sh clones that
 * tree; read at run time, never copied here), and a suite of JSON schemas converted once by
 * catena's ctn_json_schema_to_gbnf: both engines get the same GBNF text, so what is compared
 * is the samplers, not the converters.
 *
 * For each model, grammar and prompt (BOS and random ids), catena's engine and llama.cpp
 * each greedy-decode up to N_GEN tokens (24 on qwen2). At every step where both have
 * produced the same tokens, the set of tokens each grammar allows next is compared over the
 * whole vocabulary (catena's by a ctn_grammar_state of its own, advanced with the same
 * tokens; llama.cpp's by llama_sampler_apply of the chain's grammar sampler), leaving out
 * the known differences, each recognised by its own rule and counted (QUIRK below: control
 * tokens, whose special text llama.cpp matches; bytes that are not well-formed UTF-8, which
 * llama.cpp takes; pieces that begin with a NUL and partial characters under negated
 * classes, which llama.cpp refuses); any other difference fails. Then the
 * token sequences, and where and how they end (llama.cpp samples an end-of-generation token
 * where the grammar is complete; catena ends there with finish "stop"), must be equal.
 *
 * Near ties: greedy argmax may differ when the two best allowed logits are closer than the
 * engines' forward passes agree (different float summation). At the first divergence the test
 * recomputes catena's logits there (ctn_fwd with the same F32 KV cache, which must reproduce
 * catena's choice), takes llama.cpp's logits of the same step, and calls it a tie only when
 * both tokens are allowed by both grammars, the logits agree within TIE_TOL (normalised
 * error) and each engine's gap between the two tokens is within twice the largest logit
 * difference. Any other divergence fails. Ties are counted apart from exact matches.
 *
 * A case whose tokens diverge only because one side took a token of such a known difference
 * is counted apart ("known"), with the kind. Measured when written: 60 cases (8 grammars and
 * 12 schemas, 2 prompts on llama-spm and 1 on qwen2), all exact, no tie; the known kinds
 * changed no case's tokens.
 *
 * Exit status: 0 all matched, tied or known, 1 a failure, 77 (ctest skip) when llama.cpp, its
 * grammars or the shared vocabularies are missing (scripts/setup-peers.sh, CTN_SHARED).
 */
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "forward.h"
#include "gen.h"
#include "gguf.h"
#include "grammar.h"
#include "json_schema.h"
#include "llamacpp_dl.h"
#include "model.h"
#include "randmodel.h"
#include "vocab.h"

#define N_GEN    32 /* greedy steps per case, at most (model.n_gen) */
#define N_PROMPT 6  /* prompt ids after BOS */
#define N_CTX    64
#define TIE_TOL  1e-4 /* normalised logit error allowed at a tie (F32 measured ~1e-6) */
#define GRAMMARS "build/peers/llama.cpp/grammars"

/* JSON schemas of the suite: the core subset ctn_json_schema_to_gbnf takes (docs/grammars.md). */
static const char *const SCHEMAS[] = {
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
    "\"integer\"}},\"required\":[\"name\",\"age\"]}",
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"tags\":{\"type\":"
    "\"array\",\"items\":{\"type\":\"string\"}},\"ok\":{\"type\":\"boolean\"}}}",
    "{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"minItems\":2,\"maxItems\":5}",
    "{\"enum\":[\"red\",\"green\",\"blue\",42,null,true]}",
    "{\"type\":\"string\",\"minLength\":3,\"maxLength\":8}",
    "{\"type\":\"object\",\"properties\":{\"user\":{\"type\":\"object\",\"properties\":{"
    "\"first\":{\"type\":\"string\"},\"last\":{\"type\":\"string\"}},\"required\":[\"first\"]},"
    "\"role\":{\"enum\":[\"admin\",\"guest\"]}},\"required\":[\"user\",\"role\"],"
    "\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"type\":"
    "\"object\",\"properties\":{\"sku\":{\"type\":\"string\"},\"qty\":{\"type\":\"integer\"}},"
    "\"required\":[\"sku\",\"qty\"]},\"minItems\":1}},\"required\":[\"items\"]}",
    "{\"type\":[\"string\",\"null\"]}",
    "{\"const\":{\"k\":[1,2]}}",
    "{}",
    "{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},\"maxItems\":3}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\"},\"b\":{\"type\":\"null\"},"
    "\"c\":{\"type\":\"string\",\"maxLength\":4}},\"required\":[\"c\"]}",
};

static bool verbose;
static int n_exact, n_tie, n_fail, n_refused, n_quirky;

/* ---- one model -------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int n_prompts; /* prompts per grammar */
    int n_gen;     /* greedy steps per case (<= N_GEN) */
    char path[4096];
    ctn_gguf *g;
    ctn_model *m;
    ctn_vocab *v;
    ctn_gen *e;
    ctn_token_trie *trie;
    lcpp_model *lm;
    lcpp_vocab *lv;
    int32_t n_vocab;
    bool *ctrl;  /* (n_vocab) tokens whose llama.cpp text (special) is not catena's piece */
    float *buf;  /* (n_vocab) catena's recomputed logits at a divergence */
    float *lraw; /* (N_GEN + 1, n_vocab) llama.cpp's logits at each step */
    float *lmsk; /* (N_GEN + 1, n_vocab) the same after its grammar's mask */
} model;

/* Runs mkmodel; 0 or -1. */
static int make_model(const char *mkmodel, const char *vocab, const char *out) {
    char cmd[12288];
    snprintf(cmd, sizeof cmd,
             "'%s' -o '%s' --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128 --type f32 "
             "--std 0.05 --seed 7 --ctx %d --vocab '%s' >/dev/null",
             mkmodel, out, N_CTX, vocab);
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

static void model_close(model *M) {
    ctn_gen_free(M->e);
    ctn_token_trie_free(M->trie);
    ctn_vocab_free(M->v);
    ctn_model_free(M->m);
    ctn_gguf_free(M->g);
    lcpp_model_free(M->lm);
    lcpp_vocab_free(M->lv);
    free(M->ctrl);
    free(M->buf);
    free(M->lraw);
    free(M->lmsk);
    unlink(M->path);
}

static int model_open(model *M, char *err, size_t errlen) {
    ctn_gen_params p = {0};
    p.manual = true;
    p.fwd = (ctn_fwd_params){.n_threads = 2, .n_ctx = N_CTX, .kv_f32 = true};
    if (ctn_gguf_open(&M->g, M->path, err, errlen) < 0 ||
        ctn_model_load(&M->m, M->g, err, errlen) < 0 ||
        ctn_vocab_load(&M->v, M->g, err, errlen) < 0 ||
        ctn_gen_new(&M->e, M->m, M->v, &p, err, errlen) < 0 ||
        ctn_token_trie_from_vocab(&M->trie, M->v, err, errlen) < 0 ||
        lcpp_model_open(&M->lm, M->path, N_CTX, err, errlen) < 0 ||
        lcpp_vocab_open(&M->lv, M->path, err, errlen) < 0)
        return -1;
    M->n_vocab = ctn_vocab_n_tokens(M->v);
    if (lcpp_model_n_vocab(M->lm) != M->n_vocab || M->m->hp.n_vocab != M->n_vocab) {
        snprintf(err, errlen, "vocabulary sizes differ");
        return -1;
    }
    size_t nv = (size_t)M->n_vocab;
    M->ctrl = calloc(nv, sizeof *M->ctrl);
    M->buf = malloc(nv * sizeof *M->buf);
    M->lraw = malloc((N_GEN + 1) * nv * sizeof *M->lraw);
    M->lmsk = malloc((N_GEN + 1) * nv * sizeof *M->lmsk);
    if (!M->ctrl || !M->buf || !M->lraw || !M->lmsk) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int n_ctrl = 0;
    for (int32_t i = 0; i < M->n_vocab; i++) {
        char a[256], b[256];
        int na = ctn_token_to_piece(M->v, i, a, sizeof a, 0, false);
        int nb = lcpp_token_to_piece(M->lv, i, b, sizeof b, 0, true);
        if (ctn_vocab_is_eog(M->v, i) != lcpp_model_is_eog(M->lm, i)) {
            snprintf(err, errlen, "token %d: end of generation for one engine only", (int)i);
            return -1;
        }
        if (ctn_vocab_is_eog(M->v, i)) continue;
        if (na != nb || (na > 0 && na <= (int)sizeof a && memcmp(a, b, (size_t)na) != 0)) {
            M->ctrl[i] = true;
            n_ctrl++;
        }
    }
    printf("%s: %d tokens, %d control tokens whose llama.cpp text catena does not match\n", M->name,
           (int)M->n_vocab, n_ctrl);
    return 0;
}

/* ---- catena's side ---------------------------------------------------------------------- */

typedef struct {
    int32_t toks[N_GEN + 1];
    int n;
    bool done;
    ctn_finish finish;
    char error[256];
} cside;

static void on_token(void *ud, const ctn_gen_token *t) {
    cside *c = ud;
    if (c->n < N_GEN + 1) c->toks[c->n++] = t->token;
}

static void on_done(void *ud, int64_t id, const ctn_gen_result *res) {
    (void)id;
    cside *c = ud;
    c->done = true;
    c->finish = res->finish;
    if (res->error) snprintf(c->error, sizeof c->error, "%s", res->error);
}

/* Catena's greedy generation under gbnf; 0, or CTN_EINVAL when it refuses the grammar. */
static int run_catena(model *M, const char *gbnf, const int32_t *prompt, int n_prompt, cside *c,
                      char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    ctn_gen_request r = ctn_gen_request_default();
    r.prompt_ids = prompt;
    r.n_prompt_ids = n_prompt;
    r.max_tokens = M->n_gen;
    r.grammar = gbnf;
    r.on_token = on_token;
    r.on_done = on_done;
    r.ud = c;
    int64_t id = ctn_gen_submit(M->e, &r, err, errlen);
    if (id < 0) return (int)id;
    while (!c->done && ctn_gen_step(M->e, NULL) >= 0) {
    }
    return c->done ? 0 : -1;
}

/* ---- llama.cpp's side ------------------------------------------------------------------- */

typedef struct {
    int32_t toks[N_GEN + 1];
    int n;        /* tokens before the end */
    bool eog;     /* ended by an end-of-generation token (not in toks) */
    int32_t eogt; /* that token */
} lside;

/* llama.cpp's greedy generation under gbnf, keeping each step's raw and masked logits.
 * 0, 1 when llama.cpp refuses the grammar, -1 on a failure. */
static int run_llama(model *M, const char *gbnf, const int32_t *prompt, int n_prompt, lside *l,
                     char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    lcpp_sampler *s;
    if (lcpp_sampler_new(&s, M->lm, gbnf, err, errlen) < 0) return 1;
    lcpp_model_clear(M->lm);
    const float *lg = NULL;
    int pos = 0;
    for (; pos < n_prompt; pos++)
        if (lcpp_model_decode(M->lm, prompt[pos], pos, &lg) < 0) goto fail;
    size_t nv = (size_t)M->n_vocab;
    for (int k = 0; k < M->n_gen; k++) {
        memcpy(M->lraw + k * nv, lg, nv * sizeof *lg);
        if (lcpp_sampler_mask(s, lg, M->n_vocab, M->lmsk + k * nv) < 0) goto fail;
        int32_t t = lcpp_sampler_sample(s, M->lm);
        if (t < 0 || t >= M->n_vocab) goto fail;
        if (lcpp_model_is_eog(M->lm, t)) {
            l->eog = true;
            l->eogt = t;
            break;
        }
        l->toks[l->n++] = t;
        if (lcpp_model_decode(M->lm, t, pos++, &lg) < 0) goto fail;
    }
    lcpp_sampler_free(s);
    return 0;
fail:
    snprintf(err, errlen, "llama.cpp decode or sampling failed");
    lcpp_sampler_free(s);
    return -1;
}

/* ---- comparing -------------------------------------------------------------------------- */

static void piece(const model *M, int32_t t, char *out, size_t cap) {
    char b[64];
    int n = ctn_token_to_piece(M->v, t, b, sizeof b, 0, false);
    size_t o = 0;
    out[o++] = '\'';
    for (int i = 0; i < n && i < (int)sizeof b && o + 6 < cap; i++) {
        unsigned char ch = (unsigned char)b[i];
        if (ch < 32 || ch == '\'' || ch == '\\')
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
        else
            out[o++] = (char)ch;
    }
    snprintf(out + o, cap - o, "'");
}

/*
 * Catena's grammar state after toks[0..n) (its own state, from the engine's trie), the set it
 * allows written into allow (n_vocab bools). 0, or -1 with why in err.
 */
static int catena_allowed(model *M, const ctn_grammar *g, const int32_t *toks, int n, bool *allow,
                          bool *complete, char *err, size_t errlen) {
    ctn_grammar_state *st;
    if (ctn_grammar_state_new(&st, g) < 0) {
        snprintf(err, errlen, "grammar state: out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (ctn_grammar_accept_token(st, M->trie, toks[i]) < 0) {
            snprintf(err, errlen, "catena's grammar refuses its own token %d at step %d",
                     (int)toks[i], i);
            ctn_grammar_state_free(st);
            return -1;
        }
    const int32_t *ids;
    int64_t na = ctn_grammar_allowed(st, M->trie, &ids);
    *complete = ctn_grammar_complete(st);
    if (na < 0) {
        snprintf(err, errlen, "ctn_grammar_allowed: %d", (int)na);
        ctn_grammar_state_free(st);
        return -1;
    }
    memset(allow, 0, (size_t)M->n_vocab * sizeof *allow);
    for (int64_t i = 0; i < na; i++) /* ids belong to st */
        allow[ids[i]] = true;
    ctn_grammar_state_free(st);
    return 0;
}

/* Catena's logits after prompt then toks[0..n) (the engine's forward pass, F32 KV) into out. */
static int catena_logits(model *M, const int32_t *prompt, int n_prompt, const int32_t *toks, int n,
                         float *out, char *err, size_t errlen) {
    ctn_fwd *f = NULL;
    ctn_kv_seq kseq = {0};
    int rc = -1;
    if (ctn_fwd_new(&f, M->m, &(ctn_fwd_params){.n_threads = 2, .n_ctx = N_CTX, .kv_f32 = true},
                    err, errlen) < 0 ||
        ctn_fwd_seq_init(f, &kseq) < 0)
        goto done;
    ctn_fwd_seg seg = {.seq = &kseq, .tokens = prompt, .n_tokens = n_prompt, .logits = true};
    if (ctn_fwd_run(f, &seg, 1, out) < 0) goto done;
    for (int i = 0; i < n; i++) {
        seg = (ctn_fwd_seg){.seq = &kseq, .tokens = &toks[i], .n_tokens = 1, .logits = true};
        if (ctn_fwd_run(f, &seg, 1, out) < 0) goto done;
    }
    rc = 0;
done:
    if (rc < 0 && f) snprintf(err, errlen, "catena forward: %s", ctn_fwd_errmsg(f));
    if (f) ctn_fwd_seq_close(f, &kseq);
    ctn_fwd_free(f);
    return rc;
}

/*
 * Whether bytes[0..n) are well-formed UTF-8 or a beginning of it (a last character may be
 * cut short, but only where some well-formed character begins that way): no bytes C0, C1,
 * F5..FF, no overlong forms, no surrogates, nothing past U+10FFFF (RFC 3629's table).
 */
static bool utf8_prefix_ok(const unsigned char *b, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = b[i];
        int len = c < 0x80                 ? 1
                  : c >= 0xC2 && c <= 0xDF ? 2
                  : c >= 0xE0 && c <= 0xEF ? 3
                  : c >= 0xF0 && c <= 0xF4 ? 4
                                           : 0;
        if (len == 0) return false;
        for (int j = 1; j < len; j++) {
            if (i + (size_t)j >= n) return true; /* cut short after valid bytes */
            unsigned d = b[i + (size_t)j];
            unsigned lo = 0x80, hi = 0xBF;
            if (j == 1) {
                if (c == 0xE0) lo = 0xA0;
                if (c == 0xED) hi = 0x9F;
                if (c == 0xF0) lo = 0x90;
                if (c == 0xF4) hi = 0x8F;
            }
            if (d < lo || d > hi) return false;
        }
        i += (size_t)len;
    }
    return true;
}

/* Whether bytes[0..n), a well-formed prefix, ends inside a character. */
static bool utf8_cut(const unsigned char *b, size_t n) {
    size_t i = n;
    int back = 0;
    while (i > 0 && back < 4 && (b[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0) return false;
    unsigned c = b[i - 1];
    int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return len > back + 1;
}

/* The known differences between the two grammar samplers, by kind. */
enum { Q_NONE, Q_CONTROL, Q_BAD_UTF8, Q_NUL, Q_PARTIAL, Q_KINDS };
static const char *const QUIRK[Q_KINDS] = {
    "",
    "a control token: llama.cpp matches its special text (\"<s>\"), catena never lets one in",
    "llama.cpp takes bytes that no well-formed UTF-8 has (its decoder reads any lead byte, "
    "and its classes hold surrogates and code points past U+10FFFF)",
    "a piece that begins with a NUL byte: llama.cpp refuses every such token",
    "a token that ends inside a character: llama.cpp refuses it under a negated class when "
    "any completion is excluded, catena when none is allowed",
};
static long n_quirk_steps[Q_KINDS]; /* steps whose allowed sets differed so */
static int n_quirk_cases[Q_KINDS];  /* cases whose tokens diverged so */

/*
 * Why token t, allowed by one side only (by llama.cpp when l_only) after the generated bytes
 * hist[0..nh), is a known difference, or Q_NONE when it is not one.
 */
static int quirk(const model *M, int32_t t, bool l_only, const unsigned char *hist, size_t nh) {
    if (M->ctrl[t]) return Q_CONTROL;
    unsigned char b[512];
    if (nh > sizeof b - 256) return Q_NONE;
    memcpy(b, hist, nh);
    int n = ctn_token_to_piece(M->v, t, (char *)b + nh, 256, 0, false);
    if (n < 0 || n > 256) return Q_NONE;
    size_t all = nh + (size_t)n;
    if (l_only) return utf8_prefix_ok(b, all) ? Q_NONE : Q_BAD_UTF8;
    if (n > 0 && b[nh] == 0) return Q_NUL;
    return utf8_prefix_ok(b, all) && utf8_cut(b, all) ? Q_PARTIAL : Q_NONE;
}

/* The bytes of toks[0..n) as catena decodes them, into out (cap bytes); the length. */
static size_t hist_bytes(const model *M, const int32_t *toks, int n, unsigned char *out,
                         size_t cap) {
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        char b[256];
        int k = ctn_token_to_piece(M->v, toks[i], b, sizeof b, 0, false);
        if (k < 0 || k > (int)sizeof b || o + (size_t)k > cap) return cap + 1;
        memcpy(out + o, b, (size_t)k);
        o += (size_t)k;
    }
    return o;
}

/*
 * Compares one case; prints a line; counts it. gbnf is the text both got, g catena's compiled
 * form of it.
 */
static void compare(model *M, const char *name, const char *gbnf, const ctn_grammar *g,
                    const int32_t *prompt, int n_prompt) {
    char err[1024] = "", lerr[512] = "";
    cside c;
    lside l;
    int crc = run_catena(M, gbnf, prompt, n_prompt, &c, err, sizeof err);
    int lrc = run_llama(M, gbnf, prompt, n_prompt, &l, lerr, sizeof lerr);
    const size_t nv = (size_t)M->n_vocab;
    printf("  %-28s ", name);
    if (crc < 0 || lrc != 0) {
        printf("FAIL: %s%s%s\n", crc < 0 ? err : "", crc < 0 && lrc ? "; " : "",
               lrc ? (lrc == 1 ? "llama.cpp refused the grammar" : lerr) : "");
        n_fail++;
        return;
    }
    if (c.finish == CTN_FINISH_ERROR) {
        printf("FAIL: catena ended with an error: %s\n", c.error);
        n_fail++;
        return;
    }
    /* The steps both reached with the same tokens: the allowed sets must agree there. */
    bool *allow = malloc(nv * sizeof *allow);
    if (!allow) {
        printf("FAIL: out of memory\n");
        n_fail++;
        return;
    }
    int k = 0; /* the first step where the tokens differ, or where one side ended */
    while (k < c.n && k < l.n && c.toks[k] == l.toks[k])
        k++;
    bool c_ended = k == c.n, l_ended = k == l.n;
    /* Steps 0..k were masked by llama.cpp with the same history (step k only if it sampled
     * there: it did unless it stopped at n_gen). */
    int last = k < M->n_gen ? k : M->n_gen - 1;
    for (int s = 0; s <= last; s++) {
        bool complete;
        if (catena_allowed(M, g, c.toks, s, allow, &complete, err, sizeof err) < 0) {
            printf("FAIL: %s\n", err);
            n_fail++;
            free(allow);
            return;
        }
        const float *lm = M->lmsk + (size_t)s * nv;
        unsigned char hist[256];
        size_t nh = hist_bytes(M, c.toks, s, hist, sizeof hist);
        bool seen[Q_KINDS] = {false};
        for (int32_t t = 0; t < M->n_vocab; t++) {
            bool la = lm[t] != -INFINITY;
            if (la == allow[t]) continue;
            int q = quirk(M, t, la, hist, nh);
            if (q != Q_NONE) {
                seen[q] = true;
                continue;
            }
            char p[160];
            piece(M, t, p, sizeof p);
            printf("FAIL: at step %d token %d %s is allowed by %s only\n", s, (int)t, p,
                   la ? "llama.cpp" : "catena");
            n_fail++;
            free(allow);
            return;
        }
        for (int q = 1; q < Q_KINDS; q++)
            n_quirk_steps[q] += seen[q];
    }
    if (c_ended && l_ended) {
        /* The same tokens; the same end? */
        bool same_end = (c.finish == CTN_FINISH_EOS) == l.eog &&
                        (c.finish == CTN_FINISH_LENGTH) == (!l.eog && l.n == M->n_gen);
        if (same_end) {
            printf("exact  %2d tokens, %s\n", c.n,
                   c.finish == CTN_FINISH_EOS ? "end of generation" : "length");
            n_exact++;
        } else {
            printf("FAIL: same %d tokens, but catena ends with '%s' and llama.cpp %s\n", c.n,
                   ctn_finish_name(c.finish), l.eog ? "samples end of generation" : "goes on");
            n_fail++;
        }
        free(allow);
        return;
    }
    /* A divergence at step k: catena's token (or its end) against llama.cpp's. */
    int32_t eos = -1;
    for (int32_t t = 0; t < M->n_vocab && eos < 0; t++)
        if (ctn_vocab_is_eog(M->v, t)) eos = t;
    int32_t tc = c_ended ? (c.finish == CTN_FINISH_EOS ? eos : -1) : c.toks[k];
    int32_t tl = l_ended ? (l.eog ? l.eogt : -1) : l.toks[k];
    char pc[160] = "(length)", pl[160] = "(length)";
    if (tc >= 0) piece(M, tc, pc, sizeof pc);
    if (tl >= 0) piece(M, tl, pl, sizeof pl);
    bool complete;
    float *lc = M->buf;
    const float *lr = M->lraw + (size_t)k * nv, *lm = M->lmsk + (size_t)k * nv;
    bool tie = false;
    char why[512] = "";
    if (tc < 0 || tl < 0) {
        snprintf(why, sizeof why, "one side stopped at the token limit");
    } else if (catena_allowed(M, g, c.toks, k, allow, &complete, err, sizeof err) < 0 ||
               catena_logits(M, prompt, n_prompt, c.toks, k, lc, err, sizeof err) < 0) {
        snprintf(why, sizeof why, "%s", err);
    } else if (!allow[tl] || lm[tc] == -INFINITY) {
        unsigned char hist[256];
        size_t nh = hist_bytes(M, c.toks, k, hist, sizeof hist);
        int q = !allow[tl] ? quirk(M, tl, true, hist, nh) : quirk(M, tc, false, hist, nh);
        if (q != Q_NONE) {
            printf("known  at step %d: catena %d %s, llama.cpp %d %s: %s\n", k, (int)tc, pc,
                   (int)tl, pl, QUIRK[q]);
            n_quirky++;
            n_quirk_cases[q]++;
            free(allow);
            return;
        }
        snprintf(why, sizeof why, "%s's token is not allowed by %s's grammar",
                 !allow[tl] ? "llama.cpp" : "catena", !allow[tl] ? "catena" : "llama.cpp");
    } else {
        /* Catena's choice, reproduced from the recomputed logits. */
        int32_t best = -1;
        for (int32_t t = 0; t < M->n_vocab; t++)
            if (allow[t] && (best < 0 || lc[t] > lc[best])) best = t;
        double d = 0, scale = 0;
        for (int32_t t = 0; t < M->n_vocab; t++) {
            d = fmax(d, fabs((double)lc[t] - lr[t]));
            scale = fmax(scale, fabs((double)lr[t]));
        }
        double gap_c = (double)lc[tc] - lc[tl], gap_l = (double)lr[tl] - lr[tc];
        if (c_ended && tc == eos) best = allow[eos] && lc[eos] >= lc[best] ? eos : best;
        if (best != tc)
            snprintf(why, sizeof why, "catena's recomputed logits pick %d, not %d", (int)best,
                     (int)tc);
        else if (d > TIE_TOL * scale)
            snprintf(why, sizeof why, "logits differ by %.3g (normalised %.3g > %g)", d, d / scale,
                     TIE_TOL);
        else if (gap_c > 2 * d || gap_l > 2 * d)
            snprintf(why, sizeof why, "not a tie: gaps %.3g (catena) %.3g (llama.cpp), error %.3g",
                     gap_c, gap_l, d);
        else {
            tie = true;
            snprintf(why, sizeof why, "gaps %.2g / %.2g within logit error %.2g", gap_c, gap_l, d);
        }
    }
    if (tie) {
        printf("tie    at step %d: catena %d %s, llama.cpp %d %s (%s)\n", k, (int)tc, pc, (int)tl,
               pl, why);
        n_tie++;
    } else {
        printf("FAIL: at step %d catena %d %s, llama.cpp %d %s: %s\n", k, (int)tc, pc, (int)tl, pl,
               why);
        n_fail++;
    }
    if (verbose || !tie) {
        printf("    catena:   ");
        for (int i = 0; i < c.n; i++)
            printf(" %d", (int)c.toks[i]);
        printf(" [%s]\n    llama.cpp:", ctn_finish_name(c.finish));
        for (int i = 0; i < l.n; i++)
            printf(" %d", (int)l.toks[i]);
        printf(" [%s]\n", l.eog ? "eog" : "-");
    }
    free(allow);
}

/* Every case of one grammar: M->n_prompts prompts. */
static void run_grammar(model *M, const char *name, const char *gbnf) {
    char err[1024];
    ctn_grammar *g;
    if (ctn_grammar_new(&g, gbnf, err, sizeof err) < 0) {
        printf("  %-28s refused by catena: %s\n", name, err);
        n_refused++;
        return;
    }
    for (int p = 0; p < M->n_prompts; p++) {
        int32_t prompt[N_PROMPT + 1];
        uint64_t rng = 1000003u * (uint64_t)(p + 1) + strlen(gbnf);
        prompt[0] = ctn_vocab_bos(M->v);
        for (int i = 1; i <= N_PROMPT; i++)
            prompt[i] = 3 + (int32_t)(rng_next(&rng) % (uint64_t)(M->n_vocab - 3));
        char cname[96];
        snprintf(cname, sizeof cname, "%s #%d", name, p + 1);
        compare(M, cname, gbnf, g, prompt, N_PROMPT + 1);
    }
    ctn_grammar_free(g);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = NULL;
    size_t n = 0, cap = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF) {
        if (n + 2 > cap) {
            cap = cap ? 2 * cap : 4096;
            char *t = realloc(s, cap);
            if (!t) {
                free(s);
                fclose(f);
                return NULL;
            }
            s = t;
        }
        s[n++] = (char)ch;
    }
    fclose(f);
    if (s) s[n] = '\0';
    return s;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_model(model *M, char **files, int n_files) {
    printf("%s\n", M->name);
    for (int i = 0; i < n_files; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", GRAMMARS, files[i]);
        char *text = slurp(path);
        if (!text) {
            printf("  %-28s FAIL: cannot read %s\n", files[i], path);
            n_fail++;
            continue;
        }
        run_grammar(M, files[i], text);
        free(text);
    }
    for (size_t i = 0; i < sizeof SCHEMAS / sizeof SCHEMAS[0]; i++) {
        char *gbnf = NULL, err[512], name[32];
        snprintf(name, sizeof name, "schema %zu", i + 1);
        if (ctn_json_schema_to_gbnf(SCHEMAS[i], strlen(SCHEMAS[i]), &gbnf, err, sizeof err) < 0) {
            printf("  %-28s FAIL: catena's converter refused it: %s\n", name, err);
            n_fail++;
            continue;
        }
        if (verbose) printf("  %s: %s\n%s\n", name, SCHEMAS[i], gbnf);
        run_grammar(M, name, gbnf);
        free(gbnf);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0) {
            verbose = true;
        } else {
            fprintf(stderr, "usage: grammardiff [-v]\n");
            return 2;
        }
    }
    char err[1024];
    if (lcpp_lib_open(NULL, err, sizeof err) < 0) {
        printf("grammardiff: llama.cpp not available (%s); skipped\n", err);
        return 77;
    }
    DIR *d = opendir(GRAMMARS);
    if (!d) {
        printf("grammardiff: no %s (scripts/setup-peers.sh clones it); skipped\n", GRAMMARS);
        return 77;
    }
    char *files[64];
    int n_files = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n_files < 64) {
        size_t n = strlen(de->d_name);
        if (n > 5 && strcmp(de->d_name + n - 5, ".gbnf") == 0)
            files[n_files++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(files, (size_t)n_files, sizeof *files, cmp_str);
    if (n_files == 0) {
        printf("grammardiff: no .gbnf in %s; skipped\n", GRAMMARS);
        return 77;
    }
    const char *sh = getenv("CTN_SHARED");
    if (!sh || !*sh) sh = "../shared";
    const char *mk = getenv("MKMODEL");
    if (!mk || !*mk) mk = "build/tools/mkmodel";
    if (access(mk, X_OK) != 0) {
        printf("grammardiff: mkmodel not found at %s (set MKMODEL)\n", mk);
        return 1;
    }
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    /* qwen2's 152k tokens make llama.cpp's grammar sampler about six times slower than on
     * llama-spm's 32k: fewer cases there keep the test near half a minute on two cores. */
    static const char *const VOCABS[] = {"llama-spm", "qwen2"};
    static const int PROMPTS[] = {2, 1}, GEN[] = {N_GEN, 24};
    int n_models = 0;
    for (size_t vi = 0; vi < sizeof VOCABS / sizeof VOCABS[0]; vi++) {
        char vpath[4096];
        snprintf(vpath, sizeof vpath, "%s/vocab/ggml-vocab-%s.gguf", sh, VOCABS[vi]);
        if (access(vpath, R_OK) != 0) {
            printf("%s: %s not found (set CTN_SHARED); left out\n", VOCABS[vi], vpath);
            continue;
        }
        model M = {.name = VOCABS[vi], .n_prompts = PROMPTS[vi], .n_gen = GEN[vi]};
        snprintf(M.path, sizeof M.path, "%s/grammardiff-%d-%s.gguf", tmp, (int)getpid(),
                 VOCABS[vi]);
        if (make_model(mk, vpath, M.path) < 0 || model_open(&M, err, sizeof err) < 0) {
            printf("%s: FAIL: %s\n", VOCABS[vi], err[0] ? err : "mkmodel failed");
            n_fail++;
            model_close(&M);
            continue;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        run_model(&M, files, n_files);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("%s: %.1f s\n", VOCABS[vi],
               (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
        model_close(&M);
        n_models++;
    }
    for (int i = 0; i < n_files; i++)
        free(files[i]);
    if (n_models == 0 && n_fail == 0) {
        printf("grammardiff: no shared vocabulary found; skipped\n");
        return 77;
    }
    printf("known differences of the allowed sets (steps; cases whose tokens they changed):\n");
    for (int q = 1; q < Q_KINDS; q++)
        printf("  %5ld; %d  %s\n", n_quirk_steps[q], n_quirk_cases[q], QUIRK[q]);
    printf("%d cases: %d exact, %d ties, %d diverged by a known difference, %d failed; "
           "%d grammars refused by catena\n",
           n_exact + n_tie + n_quirky + n_fail, n_exact, n_tie, n_quirky, n_fail, n_refused);
    return n_fail || n_refused ? 1 : 0;
}
