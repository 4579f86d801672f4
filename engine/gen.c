/*
 * The shared generation engine (gen.h): requests, the FCFS scheduler with chunked prefill
 * and preemption by recomputation, and the engine thread.
 *
 * Ownership: a request becomes a `gseq` at submission. Submitted sequences sit in `incoming`
 * (under the lock) until the engine thread moves them into its own `waiting` list; from then
 * on only the engine thread touches them. Cancellations travel the same way (`cancels`,
 * under the lock). A sequence is in exactly one of incoming, waiting and running until it
 * finishes, and it is freed right after its on_done.
 */
#include "gen.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h" /* every allocation can be failed by the tests */
#include "error.h"
#include "grammar.h"
#include "stop.h"
#include "str.h"

#define PIECE_CAP 4096

typedef struct gseq gseq;
typedef struct gsess gsess;
typedef struct ggram ggram;

/* A compiled grammar, shared read-only by the requests that gave the same text (e->gram_lock
 * guards the list and refs). */
struct ggram {
    char *text;
    ctn_grammar *g;
    int refs;
    ggram *next;
};

/* A session: the lock guards id, next, used, closed and n_reqs; the rest is the engine
 * thread's. */
struct gsess {
    int64_t id;
    gsess *next;
    bool used;    /* a request was submitted (the next one has no BOS) */
    uint32_t tag; /* the prefix-cache tag (adapter and scale) of its requests, once used */
    bool closed;  /* ctn_gen_session_close was called */
    int n_reqs;   /* requests referring to it, not yet freed */
    int32_t *toks;
    int64_t n_toks;
    ctn_kv_seq kv;
    bool has_kv;
    gseq *active;       /* the request using its history (running or preempted) */
    bool awaiting_fork; /* a child whose fork has not run yet */
    bool broken;        /* its fork failed for want of memory: requests on it fail */
    uint64_t last_use;  /* e->admit_clock when a request on it last ended */
};

/* A queued session operation: fork (children) or close. */
typedef struct gcmd gcmd;
struct gcmd {
    int64_t stamp; /* from the request ids: orders it with the requests */
    gsess *sess;
    int n; /* fork: children; 0: close */
    gsess **children;
    gcmd *next;
};

struct gseq {
    int64_t id; /* arrival order */
    gseq *next; /* in incoming / waiting */
    int32_t *toks;
    int64_t n_toks, cap_toks; /* prompt, then generated tokens */
    int64_t n_prompt, n_gen, max_tokens;
    int64_t n_cached;  /* prompt positions found computed at the first admission (prefix
                        * cache, or a session's history); -1 before it */
    bool ignore_eos;
    uint32_t adapter; /* prefix-cache tag: 0 for the base model, else one per (adapter, scale) */
    int32_t lora_id;  /* the adapter's id (0: none), holding one use of it */
    const ctn_lora *lora;
    float lora_scale;
    int pooling; /* embeddings: ctn_pooling */
    bool embd_raw;
    float *embd; /* (n_embd) the pooled state being built */
    void (*on_embedding)(void *, int64_t, const float *, int64_t);
    int32_t *score_ids; /* (n_score) candidates to score after the prompt */
    double *scores;     /* (n_score) their log-probabilities, once scored */
    int n_score;
    bool scored;
    bool logprobs;    /* each token's log-probability (gen.h) */
    int top_logprobs; /* and this many alternatives */

    gsess *sess;   /* the session it continues, or NULL */
    bool joined;   /* the session's history is in toks (done at first admission) */
    ctn_kv_seq kv; /* allocated while running */
    bool has_kv;
    int64_t admitted; /* admission stamp (preemption picks the highest) */
    double t_blocked; /* when it first could not be admitted into an idle engine (0: not) */
    int64_t preemptions;
    ctn_sampler *smp;
    ggram *gram;            /* the request's grammar, or NULL */
    ctn_grammar_state *gst; /* where its generated tokens are in it */
    ctn_stop *stop;
    ctn_detok_stream ds;
    bool has_ds;
    double t_submit, t_first, t_last;
    void (*on_token)(void *, const ctn_gen_token *);
    void (*on_done)(void *, int64_t, const ctn_gen_result *);
    void *ud;
};

struct ctn_gen {
    const ctn_model *m;
    const ctn_vocab *v;
    ctn_fwd *f;
    ctn_kv_pool *kv;
    ctn_gen_params p;
    int64_t n_ctx, n_vocab;
    int32_t watermark_blocks;

    /* Adapters (lora_lock): id, the adapter, requests using it, removed. Tags name each
     * (adapter, scale) pair a request ran with, for the prefix cache. */
    pthread_mutex_t lora_lock;
    struct glora {
        int32_t id;
        ctn_lora *a;
        int users;
        bool removed;
        uint64_t used; /* lora_clock when a request last took or gave it back */
    } * loras;
    uint64_t lora_clock;
    int n_loras, cap_loras;
    int32_t next_lora_id;
    struct gtag {
        int32_t id;
        float scale;
        uint32_t tag;
    } * tags;
    int n_tags, cap_tags;

    /* Grammars (gram_lock): the vocabulary's token trie, made at the first request with a
     * grammar, and the compiled grammars in use. */
    pthread_mutex_t gram_lock;
    ctn_token_trie *trie;
    ggram *grams;

    /* Shared with submitters (lock). */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    gseq *incoming, **incoming_tail;
    int n_incoming;
    int64_t *cancels;
    int n_cancels, cap_cancels;
    int64_t next_id;
    bool stopping;
    gsess *sessions;
    int n_sessions;
    gcmd *cmds_in, **cmds_in_tail; /* queued operations, in stamp order */
    ctn_gen_stats stats;           /* copied out under the lock */
    double ttft_sum, itl_sum;
    int64_t ttft_n, itl_n;

    /* Engine thread only. */
    gcmd *cmds;    /* operations not yet done, in stamp order */
    gseq *waiting; /* sorted by id */
    int n_waiting;
    gseq **running; /* in admission order */
    gseq **order;   /* (max_running) scratch copy of running */
    int n_running;
    int64_t admit_clock;
    ctn_fwd_seg *segs;
    gseq **seg_seq;
    int64_t *info_ids, *info_tokens;
    float *logits; /* (logits_rows, n_vocab) */
    float *lp_row; /* (n_vocab) a row before sampling touches it, for logprobs */
    ctn_gen_logprob lp_top[CTN_GEN_MAX_TOP_LOGPROBS]; /* a token's alternatives */
    size_t logits_rows;
    char *piece;
    ctn_strbuf tail;  /* the text a request releases at its end */
    int64_t cur_step; /* the step being run (its number once done) */
    pthread_t thread;
    bool has_thread;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *ctn_finish_name(ctn_finish f) {
    switch (f) {
    case CTN_FINISH_EOS:
    case CTN_FINISH_STOP: return "stop";
    case CTN_FINISH_LENGTH: return "length";
    case CTN_FINISH_CANCELLED: return "cancelled";
    case CTN_FINISH_ERROR: return "error";
    }
    return "unknown";
}

ctn_gen_request ctn_gen_request_default(void) {
    ctn_gen_request r;
    memset(&r, 0, sizeof r);
    r.sampling = ctn_sampler_params_default();
    r.sampling.temp = 0.0f;
    r.max_tokens = -1;
    r.adapter_scale = 1.0f;
    return r;
}

/* ---- adapters -------------------------------------------------------------------------- */

static const ctn_gguf_tensor *lora_base(const ctn_model *m, int64_t l, int t) {
    return ctn_lora_target_weight(m, l, (ctn_lora_target)t);
}

/* Frees entry i (lora_lock held, no users). */
static void lora_drop(ctn_gen *e, int i) {
    ctn_lora_free(e->loras[i].a);
    e->loras[i] = e->loras[--e->n_loras];
}

int32_t ctn_gen_lora_add(ctn_gen *e, ctn_lora *a, char *err, size_t errlen) {
    if (e == NULL || a == NULL) {
        ctn_lora_free(a);
        ctn__errf(err, errlen, "no engine or adapter");
        return CTN_EINVAL;
    }
    const char *name = a->path != NULL ? a->path : "(adapter)";
    if (a->n_layer != e->m->hp.n_layer) {
        ctn__errf(err, errlen, "%s: adapter for %d layers, the model has %" PRId64, name,
                  (int)a->n_layer, e->m->hp.n_layer);
        ctn_lora_free(a);
        return CTN_EINVAL;
    }
    for (int64_t l = 0; l < a->n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            const ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + t];
            const ctn_gguf_tensor *w = lora_base(e->m, l, t);
            if (mt->rank == 0) continue;
            if (mt->rank < 0 || mt->rank > a->max_rank || mt->n_in != w->ne[0] ||
                mt->n_out != w->ne[1] || mt->a == NULL || mt->bt == NULL || !isfinite(mt->scale) ||
                (mt->type != CTN_TYPE_F32 && mt->type != CTN_TYPE_F16 &&
                 mt->type != CTN_TYPE_BF16)) {
                ctn__errf(err, errlen,
                          "%s: layer %" PRId64 " %s: rank %d, %" PRId64 " x %" PRId64
                          " does not fit the model's %" PRId64 " x %" PRId64,
                          name, l, ctn_lora_target_gguf((ctn_lora_target)t), (int)mt->rank,
                          mt->n_out, mt->n_in, w->ne[1], w->ne[0]);
                ctn_lora_free(a);
                return CTN_EINVAL;
            }
        }
    pthread_mutex_lock(&e->lora_lock);
    if (e->p.lora_budget > 0) {
        /* Unload idle adapters, least recently used first, until a fits. */
        size_t held = 0;
        for (int i = 0; i < e->n_loras; i++)
            held += e->loras[i].a->bytes;
        while (held + a->bytes > e->p.lora_budget) {
            int victim = -1;
            for (int i = 0; i < e->n_loras; i++)
                if (e->loras[i].users == 0 &&
                    (victim < 0 || e->loras[i].used < e->loras[victim].used))
                    victim = i;
            if (victim < 0) break;
            held -= e->loras[victim].a->bytes;
            lora_drop(e, victim);
        }
        if (held + a->bytes > e->p.lora_budget) {
            pthread_mutex_unlock(&e->lora_lock);
            ctn__errf(err, errlen,
                      "%s: %zu bytes do not fit the adapter budget of %zu bytes (%zu held by "
                      "adapters in use)",
                      name, a->bytes, e->p.lora_budget, held);
            ctn_lora_free(a);
            return CTN_ENOMEM;
        }
    }
    if (e->n_loras == e->cap_loras) {
        const int cap = e->cap_loras ? 2 * e->cap_loras : 8;
        struct glora *p = ctn__realloc(e->loras, (size_t)cap * sizeof *p);
        if (p == NULL) {
            pthread_mutex_unlock(&e->lora_lock);
            ctn_lora_free(a);
            ctn__errf(err, errlen, "out of memory");
            return CTN_ENOMEM;
        }
        e->loras = p;
        e->cap_loras = cap;
    }
    const int32_t id = ++e->next_lora_id;
    e->loras[e->n_loras++] = (struct glora){id, a, 0, false, ++e->lora_clock};
    pthread_mutex_unlock(&e->lora_lock);
    return id;
}

bool ctn_gen_lora_loaded(ctn_gen *e, int32_t id) {
    bool found = false;
    pthread_mutex_lock(&e->lora_lock);
    for (int i = 0; i < e->n_loras && !found; i++)
        found = e->loras[i].id == id && !e->loras[i].removed;
    pthread_mutex_unlock(&e->lora_lock);
    return found;
}

int ctn_gen_lora_remove(ctn_gen *e, int32_t id) {
    pthread_mutex_lock(&e->lora_lock);
    for (int i = 0; i < e->n_loras; i++)
        if (e->loras[i].id == id && !e->loras[i].removed) {
            e->loras[i].removed = true;
            if (e->loras[i].users == 0) lora_drop(e, i);
            pthread_mutex_unlock(&e->lora_lock);
            return 0;
        }
    pthread_mutex_unlock(&e->lora_lock);
    return CTN_ENOENT;
}

/* Gives s the adapter and tag of request r (one use of the adapter); 0 or CTN_EINVAL /
 * CTN_ENOMEM with the reason in err. */
static int lora_take(ctn_gen *e, gseq *s, int32_t id, float scale, char *err, size_t errlen) {
    if (!isfinite(scale)) {
        ctn__errf(err, errlen, "adapter scale %g is not a finite number", (double)scale);
        return CTN_EINVAL;
    }
    if (id == 0) return 0; /* the base model: tag 0 */
    pthread_mutex_lock(&e->lora_lock);
    int i = 0;
    while (i < e->n_loras && !(e->loras[i].id == id && !e->loras[i].removed))
        i++;
    if (i == e->n_loras) {
        pthread_mutex_unlock(&e->lora_lock);
        ctn__errf(err, errlen, "adapter %d is not loaded in this engine", (int)id);
        return CTN_EINVAL;
    }
    if (scale == 0) { /* the base model's output: share its cache */
        pthread_mutex_unlock(&e->lora_lock);
        return 0;
    }
    uint32_t tag = 0;
    for (int k = 0; k < e->n_tags && tag == 0; k++)
        if (e->tags[k].id == id && e->tags[k].scale == scale) tag = e->tags[k].tag;
    if (tag == 0) {
        if (e->n_tags == e->cap_tags) {
            const int cap = e->cap_tags ? 2 * e->cap_tags : 16;
            struct gtag *p = ctn__realloc(e->tags, (size_t)cap * sizeof *p);
            if (p == NULL) {
                pthread_mutex_unlock(&e->lora_lock);
                ctn__errf(err, errlen, "out of memory");
                return CTN_ENOMEM;
            }
            e->tags = p;
            e->cap_tags = cap;
        }
        tag = (uint32_t)e->n_tags + 1;
        e->tags[e->n_tags++] = (struct gtag){id, scale, tag};
    }
    e->loras[i].users++;
    e->loras[i].used = ++e->lora_clock;
    s->lora_id = id;
    s->lora = e->loras[i].a;
    s->lora_scale = scale;
    s->adapter = tag;
    pthread_mutex_unlock(&e->lora_lock);
    return 0;
}

/* Gives back s's use of its adapter. */
static void lora_release(ctn_gen *e, gseq *s) {
    if (s->lora_id == 0) return;
    pthread_mutex_lock(&e->lora_lock);
    for (int i = 0; i < e->n_loras; i++)
        if (e->loras[i].id == s->lora_id) {
            e->loras[i].used = ++e->lora_clock;
            if (--e->loras[i].users == 0 && e->loras[i].removed) lora_drop(e, i);
            break;
        }
    pthread_mutex_unlock(&e->lora_lock);
    s->lora_id = 0;
    s->lora = NULL;
}

/* ---- grammars --------------------------------------------------------------------------- */

/* The compiled grammar of text, shared with the requests that gave the same text; the token
 * trie is made first when the engine has none. NULL with the reason in err. */
static ggram *gram_take(ctn_gen *e, const char *text, int *rc, char *err, size_t errlen) {
    pthread_mutex_lock(&e->gram_lock);
    if (e->trie == NULL && (*rc = ctn_token_trie_from_vocab(&e->trie, e->v, err, errlen)) < 0) {
        pthread_mutex_unlock(&e->gram_lock);
        return NULL;
    }
    if (ctn_token_trie_n_tokens(e->trie) > e->n_vocab) {
        pthread_mutex_unlock(&e->gram_lock);
        *rc = CTN_EINVAL;
        ctn__errf(err, errlen,
                  "the vocabulary has %d tokens, more than the model's %" PRId64
                  " logits: no grammar can be applied",
                  (int)ctn_token_trie_n_tokens(e->trie), e->n_vocab);
        return NULL;
    }
    for (ggram *q = e->grams; q != NULL; q = q->next)
        if (strcmp(q->text, text) == 0) {
            q->refs++;
            pthread_mutex_unlock(&e->gram_lock);
            return q;
        }
    pthread_mutex_unlock(&e->gram_lock);
    ggram *q = ctn__calloc(1, sizeof *q);
    if (q == NULL || (q->text = ctn__strdup(text)) == NULL) {
        free(q);
        *rc = CTN_ENOMEM;
        ctn__errf(err, errlen, "out of memory");
        return NULL;
    }
    if ((*rc = ctn_grammar_new(&q->g, text, err, errlen)) < 0) {
        free(q->text);
        free(q);
        return NULL;
    }
    q->refs = 1;
    pthread_mutex_lock(&e->gram_lock);
    q->next = e->grams;
    e->grams = q;
    pthread_mutex_unlock(&e->gram_lock);
    return q;
}

static void gram_release(ctn_gen *e, ggram *q) {
    if (q == NULL) return;
    pthread_mutex_lock(&e->gram_lock);
    if (--q->refs == 0) {
        ggram **pp = &e->grams;
        while (*pp != q)
            pp = &(*pp)->next;
        *pp = q->next;
        ctn_grammar_free(q->g);
        free(q->text);
        free(q);
    }
    pthread_mutex_unlock(&e->gram_lock);
}

/* ---- sequences ------------------------------------------------------------------------- */

static void seq_free(ctn_gen *e, gseq *s) {
    if (s == NULL) return;
    lora_release(e, s);
    if (s->has_kv) ctn_kv_seq_close(e->kv, &s->kv);
    if (s->has_ds) ctn_detok_stream_close(&s->ds);
    ctn_stop_free(s->stop);
    ctn_sampler_free(s->smp);
    ctn_grammar_state_free(s->gst);
    gram_release(e, s->gram);
    free(s->embd);
    free(s->score_ids);
    free(s->scores);
    free(s->toks);
    free(s);
}

/* Calls on_done and frees the sequence (already out of every list). code: the CTN_E* code
 * of a CTN_FINISH_ERROR. */
static void seq_finish(ctn_gen *e, gseq *s, ctn_finish why, int code, const char *error) {
    ctn_gen_result res;
    memset(&res, 0, sizeof res);
    res.finish = why;
    res.code = why == CTN_FINISH_ERROR ? (code < 0 ? code : CTN_ECHAIN) : 0;
    res.step = e->cur_step;
    res.prompt_tokens = s->n_prompt;
    res.completion_tokens = s->n_gen;
    res.cached_tokens = s->n_cached > 0 ? s->n_cached : 0;
    res.preemptions = s->preemptions;
    res.error = error != NULL ? error : "";
    res.text = "";
    res.scores = s->scored ? s->scores : NULL;
    res.n_scores = s->scored ? s->n_score : 0;
    const double t = now_s();
    res.ttft_s = s->t_first > 0 ? s->t_first - s->t_submit : 0;
    res.total_s = t - s->t_submit;
    /* What the stop matcher and the UTF-8 decoder still hold, when no stop string hit: all
     * of it (a held-back prefix of a stop string can be as long as the longest one). When
     * it cannot be kept the request fails rather than lose text. */
    if ((why == CTN_FINISH_LENGTH || why == CTN_FINISH_EOS) && s->has_ds) {
        int n = ctn_detok_stream_flush(&s->ds, e->piece, PIECE_CAP);
        const char *out = NULL;
        size_t n_out = 0;
        e->tail.len = 0;
        e->tail.oom = false;
        bool ok = n >= 0;
        if (ok && n > 0) {
            ok = ctn_stop_feed(s->stop, e->piece, (size_t)n, &out, &n_out) >= 0;
            if (ok) ctn_sb_put(&e->tail, out, n_out);
        }
        if (ok) {
            const int rc = ctn_stop_flush(s->stop, &out, &n_out);
            ok = rc >= 0;
            if (ok && rc == 0) ctn_sb_put(&e->tail, out, n_out);
        }
        if (ok && !e->tail.oom) {
            res.text = e->tail.len > 0 ? e->tail.p : "";
            res.text_len = e->tail.len;
        } else {
            res.finish = why = CTN_FINISH_ERROR;
            res.code = CTN_ENOMEM;
            res.error = "out of memory keeping the held-back text";
        }
    }
    gsess *ss = s->sess;
    if (ss != NULL && s->joined) {
        ss->last_use = (uint64_t)++e->admit_clock;
        /* The session keeps the request's tokens and blocks (an error empties it). */
        free(ss->toks);
        ss->toks = NULL;
        ss->n_toks = 0;
        if (why != CTN_FINISH_ERROR) {
            ss->toks = s->toks;
            ss->n_toks = s->n_toks;
            s->toks = NULL;
            if (s->has_kv) {
                ss->kv = s->kv;
                ss->has_kv = true;
                s->has_kv = false;
            }
        }
        ss->active = NULL;
    }
    if (s->has_kv) {
        ctn_kv_seq_close(e->kv, &s->kv);
        s->has_kv = false;
    }
    pthread_mutex_lock(&e->lock);
    if (ss != NULL) ss->n_reqs--;
    /* The counts as of this request's end (it is out of every list), so that a caller
     * woken by on_done sees them. */
    e->stats.running = e->n_running;
    e->stats.waiting = e->n_waiting;
    e->stats.kv_free = e->kv->n_free;
    e->stats.n_ctx = e->n_ctx;
    e->stats.kv_block_size = e->kv->block_size;
    e->stats.threads = ctn_fwd_threads(e->f);
    if (why == CTN_FINISH_CANCELLED)
        e->stats.cancelled++;
    else
        e->stats.finished++;
    if (s->t_first > 0) {
        e->ttft_sum += res.ttft_s;
        e->ttft_n++;
    }
    if (s->n_gen > 1) {
        e->itl_sum += (s->t_last - s->t_first);
        e->itl_n += s->n_gen - 1;
    }
    pthread_mutex_unlock(&e->lock);
    if (s->on_done) s->on_done(s->ud, s->id, &res);
    seq_free(e, s);
}

/* A request that only computes its prompt (max_tokens 0, no embedding, no scores): it
 * leaves the last prompt position to the next request on its session. */
static bool prompt_only(const gseq *s) {
    return s->max_tokens == 0 && s->pooling == CTN_POOL_NONE && s->n_score == 0;
}

static int push_tok(gseq *s, int32_t t) {
    if (s->n_toks == s->cap_toks) {
        int64_t cap = s->cap_toks * 2;
        int32_t *p = ctn__realloc(s->toks, (size_t)cap * sizeof *p);
        if (p == NULL) return CTN_ENOMEM;
        s->toks = p;
        s->cap_toks = cap;
    }
    s->toks[s->n_toks++] = t;
    return 0;
}

/* ---- submission -------------------------------------------------------------------------- */

int64_t ctn_gen_submit(ctn_gen *e, const ctn_gen_request *r, char *err, size_t errlen) {
    if (e == NULL || r == NULL) {
        ctn__errf(err, errlen, "no engine or request");
        return CTN_EINVAL;
    }
    if (r->pooling < CTN_POOL_NONE || r->pooling > CTN_POOL_CLS ||
        (r->pooling != CTN_POOL_NONE && r->session != 0)) {
        ctn__errf(err, errlen,
                  r->session != 0 ? "embeddings cannot continue a session" : "unknown pooling %d",
                  r->pooling);
        return CTN_EINVAL;
    }

    if (r->n_score_ids < 0 || r->n_score_ids > CTN_GEN_MAX_SCORE_IDS) {
        ctn__errf(err, errlen, "n_score_ids is %d (0 to %d candidates)", r->n_score_ids,
                  CTN_GEN_MAX_SCORE_IDS);
        return CTN_EINVAL;
    }
    if (r->n_score_ids > 0 && (r->score_ids == NULL || r->pooling != CTN_POOL_NONE)) {
        ctn__errf(err, errlen, "%s",
                  r->score_ids == NULL ? "n_score_ids is set but score_ids is NULL"
                                       : "scores cannot come with an embedding (pooling)");
        return CTN_EINVAL;
    }
    for (int i = 0; i < r->n_score_ids; i++)
        if (r->score_ids[i] < 0 || r->score_ids[i] >= e->n_vocab) {
            ctn__errf(err, errlen, "score id %d is %d, outside the vocabulary of %" PRId64, i,
                      (int)r->score_ids[i], e->n_vocab);
            return CTN_EINVAL;
        }
    if (r->top_logprobs < 0 || r->top_logprobs > CTN_GEN_MAX_TOP_LOGPROBS) {
        ctn__errf(err, errlen, "top_logprobs is %d (0 to %d alternatives)", r->top_logprobs,
                  CTN_GEN_MAX_TOP_LOGPROBS);
        return CTN_EINVAL;
    }
    if ((r->top_logprobs > 0 && !r->logprobs) || (r->logprobs && r->pooling != CTN_POOL_NONE)) {
        ctn__errf(err, errlen, "%s",
                  r->logprobs ? "logprobs cannot come with an embedding (pooling)"
                              : "top_logprobs is set but logprobs is off");
        return CTN_EINVAL;
    }
    if (r->n_stop > 0 && e->v == NULL) {
        ctn__errf(err, errlen, "stop strings need a vocabulary (the engine has none)");
        return CTN_EINVAL;
    }
    if (r->grammar != NULL && (e->v == NULL || r->pooling != CTN_POOL_NONE)) {
        ctn__errf(err, errlen, "%s",
                  e->v == NULL ? "a grammar needs a vocabulary (the engine has none)"
                               : "a grammar cannot come with an embedding (pooling)");
        return CTN_EINVAL;
    }
    gseq *s = ctn__calloc(1, sizeof *s);
    if (s == NULL) {
        ctn__errf(err, errlen, "out of memory");
        return CTN_ENOMEM;
    }
    int rc = lora_take(e, s, r->adapter, r->adapter_scale, err, errlen);
    if (rc < 0) goto fail;
    bool bos = true;
    if (r->session != 0) {
        pthread_mutex_lock(&e->lock);
        gsess *ss = e->sessions;
        while (ss != NULL && ss->id != r->session)
            ss = ss->next;
        if (ss == NULL || ss->closed) {
            pthread_mutex_unlock(&e->lock);
            ctn__errf(err, errlen, "session %" PRId64 " is %s", r->session,
                      ss == NULL ? "unknown" : "closed");
            rc = CTN_EINVAL;
            goto fail;
        }
        if (ss->used && ss->tag != s->adapter) {
            pthread_mutex_unlock(&e->lock);
            ctn__errf(err, errlen,
                      "session %" PRId64 " holds KV computed with another adapter or scale; "
                      "continue it with the adapter and scale of its first request",
                      r->session);
            rc = CTN_EINVAL;
            goto fail;
        }
        bos = !ss->used;
        ss->used = true;
        ss->tag = s->adapter;
        ss->n_reqs++;
        s->sess = ss;
        pthread_mutex_unlock(&e->lock);
    }
    if (r->prompt != NULL && (r->prompt[0] != '\0' || s->sess == NULL)) {
        if (e->v == NULL) {
            ctn__errf(err, errlen, "a text prompt needs a vocabulary (the engine has none)");
            rc = CTN_EINVAL;
            goto fail;
        }
        size_t n = 0;
        rc = ctn_tokenize(e->v, r->prompt, strlen(r->prompt), bos, true, &s->toks, &n);
        if (rc < 0) {
            ctn__errf(err, errlen, "tokenizing the prompt: %s", ctn_strerror(rc));
            goto fail;
        }
        s->n_toks = (int64_t)n;
        s->cap_toks = (int64_t)n;
    } else if (r->prompt_ids != NULL && r->n_prompt_ids > 0) {
        for (int64_t i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] < 0 || r->prompt_ids[i] >= e->n_vocab) {
                ctn__errf(err, errlen,
                          "prompt token %" PRId64 " is id %d, outside the vocabulary of %" PRId64,
                          i, (int)r->prompt_ids[i], e->n_vocab);
                rc = CTN_EINVAL;
                goto fail;
            }
        s->toks = ctn__malloc((size_t)r->n_prompt_ids * sizeof *s->toks);
        if (s->toks == NULL) {
            rc = CTN_ENOMEM;
            ctn__errf(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(s->toks, r->prompt_ids, (size_t)r->n_prompt_ids * sizeof *s->toks);
        s->n_toks = s->cap_toks = r->n_prompt_ids;
    }
    if (s->n_toks == 0 && s->sess == NULL) { /* a session may have the whole prompt */
        ctn__errf(err, errlen, r->prompt != NULL ? "the prompt has no tokens" : "no prompt");
        rc = CTN_EINVAL;
        goto fail;
    }
    if (s->n_toks >= e->n_ctx) {
        ctn__errf(err, errlen, "the prompt has %" PRId64 " tokens; the context holds %" PRId64,
                  s->n_toks, e->n_ctx);
        rc = CTN_EINVAL;
        goto fail;
    }
    /* The prompt and the first generated token must fit the pool beside the watermark. */
    const int64_t bs = e->kv->block_size;
    const int64_t need = (s->n_toks + 1 + bs - 1) / bs;
    if (need > e->kv->n_blocks) {
        ctn__errf(err, errlen,
                  "the prompt needs %" PRId64 " KV blocks; the pool has %d (raise the KV memory)",
                  need, (int)e->kv->n_blocks);
        rc = CTN_ENOMEM;
        goto fail;
    }
    if ((rc = ctn_sampler_new(&s->smp, &r->sampling, (int32_t)e->n_vocab, err, errlen)) < 0)
        goto fail;
    if ((rc = ctn_stop_new(&s->stop, r->stop, NULL, r->n_stop, err, errlen)) < 0) goto fail;
    if (r->grammar != NULL) {
        if ((s->gram = gram_take(e, r->grammar, &rc, err, errlen)) == NULL) goto fail;
        if ((rc = ctn_grammar_state_new(&s->gst, s->gram->g)) < 0) {
            ctn__errf(err, errlen, "%s",
                      rc == CTN_ENOMEM ? "out of memory"
                                       : "the grammar is too ambiguous at its start (too many "
                                         "parses)");
            goto fail;
        }
    }
    if (e->v != NULL) {
        ctn_detok_stream_init(&s->ds, e->v, false);
        s->ds.first = false; /* the text continues the prompt */
        s->ds.raw = r->grammar != NULL; /* the text is what the grammar matched */
        s->has_ds = true;
    }
    /* Room for the generated tokens grows on demand; the prompt is in the penalty window as
     * llama.cpp's server puts it. */
    if (s->toks == NULL || s->cap_toks < s->n_toks + 16) {
        int32_t *p = ctn__realloc(s->toks, (size_t)(s->n_toks + 16) * sizeof *p);
        if (p == NULL) {
            rc = CTN_ENOMEM;
            ctn__errf(err, errlen, "out of memory");
            goto fail;
        }
        s->toks = p;
        s->cap_toks = s->n_toks + 16;
    }
    for (int64_t i = 0; i < s->n_toks; i++)
        ctn_sampler_accept(s->smp, s->toks[i]);
    s->n_prompt = s->n_toks;
    s->pooling = r->pooling;
    s->embd_raw = r->embd_raw;
    s->on_embedding = r->on_embedding;
    if (s->pooling != CTN_POOL_NONE) {
        s->embd = ctn__calloc((size_t)e->m->hp.n_embd, sizeof *s->embd);
        if (s->embd == NULL) {
            rc = CTN_ENOMEM;
            ctn__errf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (r->n_score_ids > 0) {
        s->score_ids = ctn__malloc((size_t)r->n_score_ids * sizeof *s->score_ids);
        s->scores = ctn__malloc((size_t)r->n_score_ids * sizeof *s->scores);
        if (s->score_ids == NULL || s->scores == NULL) {
            rc = CTN_ENOMEM;
            ctn__errf(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(s->score_ids, r->score_ids, (size_t)r->n_score_ids * sizeof *s->score_ids);
        s->n_score = r->n_score_ids;
    }
    s->max_tokens = r->max_tokens;
    s->ignore_eos = r->ignore_eos;
    s->logprobs = r->logprobs;
    s->top_logprobs = r->top_logprobs;
    s->on_token = r->on_token;
    s->on_done = r->on_done;
    s->n_cached = -1;
    s->ud = r->ud;
    s->t_submit = now_s();

    pthread_mutex_lock(&e->lock);
    if (e->stopping) {
        pthread_mutex_unlock(&e->lock);
        ctn__errf(err, errlen, "the engine is shutting down");
        rc = CTN_EINVAL;
        goto fail;
    }
    s->id = e->next_id++;
    *e->incoming_tail = s;
    e->incoming_tail = &s->next;
    e->n_incoming++;
    pthread_cond_signal(&e->wake);
    const int64_t id = s->id;
    pthread_mutex_unlock(&e->lock);
    return id;
fail:
    if (s->sess != NULL) {
        pthread_mutex_lock(&e->lock);
        s->sess->n_reqs--;
        pthread_mutex_unlock(&e->lock);
    }
    seq_free(e, s);
    return rc;
}

/* ---- sessions ------------------------------------------------------------------------------ */

static gsess *session_find(ctn_gen *e, int64_t id) { /* lock held */
    gsess *ss = e->sessions;
    while (ss != NULL && ss->id != id)
        ss = ss->next;
    return ss;
}

static gsess *session_alloc(ctn_gen *e) { /* lock held */
    gsess *ss = ctn__calloc(1, sizeof *ss);
    if (ss == NULL) return NULL;
    ss->id = e->next_id++;
    ss->next = e->sessions;
    e->sessions = ss;
    e->n_sessions++;
    return ss;
}

int64_t ctn_gen_session_new(ctn_gen *e) {
    pthread_mutex_lock(&e->lock);
    gsess *ss = e->stopping ? NULL : session_alloc(e);
    const int64_t id = ss != NULL ? ss->id : CTN_ENOMEM;
    pthread_mutex_unlock(&e->lock);
    return id;
}

static int queue_cmd(ctn_gen *e, int64_t session, int n, int64_t *children) {
    if (n < 0) return CTN_EINVAL;
    gcmd *c = ctn__calloc(1, sizeof *c);
    gsess **kids = n > 0 ? ctn__calloc((size_t)n, sizeof *kids) : NULL;
    if (c == NULL || (n > 0 && kids == NULL)) {
        free(c);
        free(kids);
        return CTN_ENOMEM;
    }
    pthread_mutex_lock(&e->lock);
    gsess *ss = session_find(e, session);
    if (ss == NULL || ss->closed || e->stopping) {
        pthread_mutex_unlock(&e->lock);
        free(c);
        free(kids);
        return CTN_ENOENT;
    }
    for (int i = 0; i < n; i++) {
        kids[i] = session_alloc(e);
        if (kids[i] == NULL) { /* the ones made stay, empty and usable */
            pthread_mutex_unlock(&e->lock);
            free(c);
            free(kids);
            return CTN_ENOMEM;
        }
        kids[i]->awaiting_fork = true;
        kids[i]->used = ss->used;
        kids[i]->tag = ss->tag;
        children[i] = kids[i]->id;
    }
    if (n == 0) ss->closed = true;
    c->stamp = e->next_id++;
    c->sess = ss;
    c->n = n;
    c->children = kids;
    ss->n_reqs++; /* the operation refers to it too */
    *e->cmds_in_tail = c;
    e->cmds_in_tail = &c->next;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    return 0;
}

int ctn_gen_session_fork(ctn_gen *e, int64_t session, int n, int64_t *children) {
    if (n < 1 || children == NULL) return CTN_EINVAL;
    return queue_cmd(e, session, n, children);
}

int ctn_gen_session_close(ctn_gen *e, int64_t session) {
    return queue_cmd(e, session, 0, NULL);
}

/* True when a queued operation on ss older than stamp is not done yet. */
static bool cmd_pending_before(const ctn_gen *e, const gsess *ss, int64_t stamp) {
    for (const gcmd *c = e->cmds; c != NULL && c->stamp < stamp; c = c->next)
        if (c->sess == ss) return true;
    return false;
}

/* True when a request on ss submitted before stamp has not finished. */
static bool request_pending_before(const ctn_gen *e, const gsess *ss, int64_t stamp) {
    if (ss->active != NULL) return true;
    for (const gseq *w = e->waiting; w != NULL && w->id < stamp; w = w->next)
        if (w->sess == ss) return true;
    return false;
}

static void session_release(ctn_gen *e, gsess *ss) {
    if (ss->has_kv) ctn_kv_seq_close(e->kv, &ss->kv);
    ss->has_kv = false;
    free(ss->toks);
    ss->toks = NULL;
    ss->n_toks = 0;
}

/* Does the queued operations whose turn has come. Engine thread. */
static void run_cmds(ctn_gen *e) {
    for (gcmd **pp = &e->cmds; *pp != NULL;) {
        gcmd *c = *pp;
        if (cmd_pending_before(e, c->sess, c->stamp) ||
            request_pending_before(e, c->sess, c->stamp)) {
            pp = &c->next;
            continue;
        }
        gsess *ss = c->sess;
        for (int i = 0; i < c->n; i++) {
            gsess *k = c->children[i];
            k->awaiting_fork = false;
            if (ss->broken) {
                k->broken = true;
                continue;
            }
            if (ss->n_toks > 0) {
                k->toks = ctn__malloc((size_t)ss->n_toks * sizeof *k->toks);
                if (k->toks == NULL) {
                    k->broken = true;
                    continue;
                }
                memcpy(k->toks, ss->toks, (size_t)ss->n_toks * sizeof *k->toks);
                k->n_toks = ss->n_toks;
            }
            if (ss->has_kv) {
                if (ctn_kv_seq_init(&k->kv, e->kv, e->n_ctx) < 0) { /* recomputed instead */
                    continue;
                }
                ctn_kv_seq_fork(e->kv, &k->kv, &ss->kv);
                k->has_kv = true;
            }
        }
        *pp = c->next;
        pthread_mutex_lock(&e->lock);
        ss->n_reqs--;
        const bool gone = c->n == 0;
        if (gone) { /* close: out of the list */
            gsess **sp = &e->sessions;
            while (*sp != ss)
                sp = &(*sp)->next;
            *sp = ss->next;
            e->n_sessions--;
        }
        pthread_mutex_unlock(&e->lock);
        if (gone) {
            session_release(e, ss);
            free(ss);
        }
        free(c->children);
        free(c);
    }
}

/*
 * At a session request's first admission: the session's history goes in front of its
 * prompt, the sampler's penalty window is rebuilt over both, and the session's KV blocks
 * become the sequence's. Returns 0, or a finish reason with *error when the request cannot
 * run.
 */
static ctn_finish join_session(ctn_gen *e, gseq *s, int *code, const char **error) {
    gsess *ss = s->sess;
    if (ss->broken) {
        *code = CTN_ENOMEM;
        *error = "the session's fork ran out of memory";
        return CTN_FINISH_ERROR;
    }
    const int64_t n = ss->n_toks + s->n_toks;
    if (n == 0) {
        *code = CTN_EINVAL;
        *error = "no prompt (and the session is empty)";
        return CTN_FINISH_ERROR;
    }
    if (n >= e->n_ctx) {
        *code = CTN_ERANGE;
        *error = "the session's history and the prompt fill the context";
        return CTN_FINISH_ERROR;
    }
    const int32_t need = (int32_t)((n + 1 + e->kv->block_size - 1) / e->kv->block_size);
    if (need > e->kv->n_blocks) {
        *code = CTN_ENOMEM;
        *error = "the session's history and the prompt need more KV blocks than the pool has";
        return CTN_FINISH_ERROR;
    }
    int32_t *t = ctn__malloc((size_t)(n + 16) * sizeof *t);
    if (t == NULL) {
        *code = CTN_ENOMEM;
        *error = "out of memory";
        return CTN_FINISH_ERROR;
    }
    if (ss->n_toks > 0) memcpy(t, ss->toks, (size_t)ss->n_toks * sizeof *t);
    if (s->n_toks > 0) memcpy(t + ss->n_toks, s->toks, (size_t)s->n_toks * sizeof *t);
    free(s->toks);
    s->toks = t;
    s->n_toks = n;
    s->cap_toks = n + 16;
    s->n_prompt = n;
    ctn_sampler_reset(s->smp);
    for (int64_t i = 0; i < n; i++)
        ctn_sampler_accept(s->smp, t[i]);
    if (ss->has_kv) {
        s->kv = ss->kv;
        s->has_kv = true;
        ss->has_kv = false;
        /* Nothing new to compute: the last position is computed again for its logits. */
        if (s->kv.n_pos >= s->n_toks && !prompt_only(s)) s->kv.n_pos = s->n_toks - 1;
    }
    free(ss->toks);
    ss->toks = NULL;
    ss->n_toks = 0;
    ss->active = s;
    s->joined = true;
    return (ctn_finish)0;
}

int ctn_gen_cancel(ctn_gen *e, int64_t id) {
    if (e == NULL || id <= 0) return CTN_ENOENT;
    pthread_mutex_lock(&e->lock);
    int rc = 0;
    if (id >= e->next_id) {
        rc = CTN_ENOENT;
    } else if (e->n_cancels == e->cap_cancels) {
        int cap = e->cap_cancels ? e->cap_cancels * 2 : 64;
        int64_t *p = ctn__realloc(e->cancels, (size_t)cap * sizeof *p);
        if (p == NULL) {
            rc = CTN_ENOMEM;
        } else {
            e->cancels = p;
            e->cap_cancels = cap;
        }
    }
    if (rc == 0) {
        e->cancels[e->n_cancels++] = id;
        pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}

/* ---- the scheduler ----------------------------------------------------------------------- */

/* Puts s into waiting at its arrival place (preempted sequences go back before later ones). */
static void waiting_insert(ctn_gen *e, gseq *s) {
    gseq **pp = &e->waiting;
    while (*pp != NULL && (*pp)->id < s->id)
        pp = &(*pp)->next;
    s->next = *pp;
    *pp = s;
    e->n_waiting++;
}

/* Moves submissions into waiting and applies cancellations. Engine thread. */
static void take_incoming(ctn_gen *e) {
    pthread_mutex_lock(&e->lock);
    gseq *in = e->incoming;
    e->incoming = NULL;
    e->incoming_tail = &e->incoming;
    e->n_incoming = 0;
    gcmd *cmds = e->cmds_in;
    e->cmds_in = NULL;
    e->cmds_in_tail = &e->cmds_in;
    int n_c = e->n_cancels;
    int64_t cbuf[64];
    int64_t *c = n_c <= 64 ? cbuf : ctn__malloc((size_t)n_c * sizeof *c);
    if (c == NULL) { /* keep them for the next step */
        n_c = 0;
    } else if (n_c > 0) {
        memcpy(c, e->cancels, (size_t)n_c * sizeof *c);
        e->n_cancels = 0;
    }
    pthread_mutex_unlock(&e->lock);
    while (in != NULL) {
        gseq *nx = in->next;
        waiting_insert(e, in);
        in = nx;
    }
    gcmd **ct = &e->cmds;
    while (*ct != NULL)
        ct = &(*ct)->next;
    *ct = cmds;
    for (int i = 0; i < n_c; i++) {
        gseq **pp = &e->waiting;
        while (*pp != NULL && (*pp)->id != c[i])
            pp = &(*pp)->next;
        if (*pp != NULL) {
            gseq *s = *pp;
            *pp = s->next;
            e->n_waiting--;
            seq_finish(e, s, CTN_FINISH_CANCELLED, 0, NULL);
            continue;
        }
        for (int j = 0; j < e->n_running; j++)
            if (e->running[j]->id == c[i]) {
                gseq *s = e->running[j];
                memmove(e->running + j, e->running + j + 1,
                        (size_t)(e->n_running - j - 1) * sizeof *e->running);
                e->n_running--;
                seq_finish(e, s, CTN_FINISH_CANCELLED, 0, NULL);
                break;
            }
    }
    if (c != cbuf) free(c);
}

static void running_remove(ctn_gen *e, gseq *s) {
    for (int j = 0; j < e->n_running; j++)
        if (e->running[j] == s) {
            memmove(e->running + j, e->running + j + 1,
                    (size_t)(e->n_running - j - 1) * sizeof *e->running);
            e->n_running--;
            return;
        }
}

/* Gives the sequence's blocks back and returns it to waiting, to recompute later. */
static void preempt(ctn_gen *e, gseq *s) {
    running_remove(e, s);
    ctn_kv_seq_close(e->kv, &s->kv);
    s->has_kv = false;
    s->preemptions++;
    if (s->embd != NULL) /* recomputed from the first token */
        memset(s->embd, 0, (size_t)e->m->hp.n_embd * sizeof *s->embd);
    waiting_insert(e, s);
}

static bool in_step(const ctn_gen *e, const gseq *s, int n_segs) {
    for (int i = 0; i < n_segs; i++)
        if (e->seg_seq[i] == s) return true;
    return false;
}

/* The running sequence admitted last that is not in the step so far, or NULL. */
static gseq *latest_not_in_step(const ctn_gen *e, int n_segs) {
    gseq *v = NULL;
    for (int i = 0; i < e->n_running; i++) {
        gseq *s = e->running[i];
        if (!in_step(e, s, n_segs) && (v == NULL || s->admitted > v->admitted)) v = s;
    }
    return v;
}

/* Positions the sequence wants computed: all its tokens, or all but the last for a
 * prompt-only request (the next request on its session computes that one; a scoring
 * request needs its logits). */
static int64_t target(const gseq *s) {
    return prompt_only(s) ? s->n_toks - 1 : s->n_toks;
}

/* The segment of s for its next n tokens: logits when they end a generating request's
 * tokens; for embeddings the hidden states its pooling needs from them. */
static ctn_fwd_seg make_seg(gseq *s, int64_t n) {
    ctn_fwd_seg g = {.seq = &s->kv,
                     .tokens = s->toks + s->kv.n_pos,
                     .n_tokens = n,
                     .lora = s->lora,
                     .lora_scale = s->lora_scale};
    const bool ends = s->kv.n_pos + n == s->n_toks;
    if (s->pooling == CTN_POOL_NONE) {
        g.logits = ends;
    } else {
        g.embd = s->embd;
        g.embd_mode = s->pooling == CTN_POOL_MEAN                      ? CTN_EMBD_SUM
                      : s->pooling == CTN_POOL_CLS && s->kv.n_pos == 0 ? CTN_EMBD_FIRST
                      : s->pooling == CTN_POOL_LAST && ends            ? CTN_EMBD_LAST
                                                                       : CTN_EMBD_NONE;
    }
    return g;
}

/* Blocks a sequence needs for n more tokens, beyond those it holds. */
static int32_t blocks_for(const ctn_gen *e, const gseq *s, int64_t n) {
    return ctn_kv_seq_blocks_needed(e->kv, &s->kv, s->kv.n_pos + n);
}

/*
 * The log of the sum of exp over a logits row of n, in double, the maximum subtracted before
 * exp so that no term overflows: logit - row_lse is the log-softmax (scores and logprobs).
 * A row with at least one finite logit gives a finite value; -inf entries add nothing.
 */
static double row_lse(const float *logits, int64_t n) {
    double mx = -INFINITY;
    for (int64_t v = 0; v < n; v++)
        if (logits[v] > mx) mx = logits[v];
    double sum = 0;
    for (int64_t v = 0; v < n; v++)
        sum += exp((double)logits[v] - mx);
    return mx + log(sum);
}

/*
 * The k most likely tokens of a logits row (k <= CTN_GEN_MAX_TOP_LOGPROBS) into top, most
 * likely first and ties by lowest id, with their log-probabilities (logit - lse); tokens at
 * -inf (a grammar's mask) are left out. One pass with an insertion into the k kept so far,
 * which a token below the k-th skips after one comparison: O(n) for a real distribution,
 * no sort of the row. Returns how many were kept.
 */
static int top_tokens(const float *logits, int64_t n, int k, double lse, ctn_gen_logprob *top) {
    float val[CTN_GEN_MAX_TOP_LOGPROBS];
    int32_t ids[CTN_GEN_MAX_TOP_LOGPROBS];
    int m = 0;
    for (int64_t v = 0; v < n && k > 0; v++) {
        const float x = logits[v];
        if (x == -INFINITY || (m == k && !(x > val[m - 1]))) continue;
        int i = m < k ? m++ : k - 1;      /* the slot freed: the end, or the k-th's */
        while (i > 0 && x > val[i - 1]) { /* strictly: an equal one found first stays ahead */
            val[i] = val[i - 1];
            ids[i] = ids[i - 1];
            i--;
        }
        val[i] = x;
        ids[i] = (int32_t)v;
    }
    for (int i = 0; i < m; i++)
        top[i] = (ctn_gen_logprob){ids[i], (double)val[i] - lse};
    return m;
}

/*
 * Samples the next token from the sequence's logits, streams it, and says whether the
 * sequence goes on (0) or how it finishes (*error for CTN_FINISH_ERROR).
 */
static ctn_finish next_token(ctn_gen *e, gseq *s, float *logits, int *code, const char **error) {
    int32_t tok;
    if (s->gst != NULL) {
        /* The grammar's mask goes on this sequence's row before the sampling chain. */
        const int64_t n = ctn_grammar_mask(s->gst, e->trie, logits);
        for (int64_t i = ctn_token_trie_n_tokens(e->trie); i < e->n_vocab; i++)
            logits[i] = -INFINITY; /* rows past the tokenizer's tokens spell nothing */
        if (n <= 0) {
            *code = n < 0 ? (int)n : CTN_ERANGE;
            *error = n == CTN_ENOMEM   ? "out of memory masking the grammar"
                     : n == CTN_ERANGE ? "the grammar is too ambiguous here (too many parses)"
                                       : "the grammar allows no token of the vocabulary here";
            return CTN_FINISH_ERROR;
        }
    }
    /* Log-probabilities come from the row as it is now (the grammar's mask on it), before
     * the sampler's penalties change it in place: the row is kept for the sampled token. */
    double lse = 0;
    int n_top = 0;
    if (s->logprobs) {
        lse = row_lse(logits, e->n_vocab);
        n_top = top_tokens(logits, e->n_vocab, s->top_logprobs, lse, e->lp_top);
        memcpy(e->lp_row, logits, (size_t)e->n_vocab * sizeof *e->lp_row);
    }
    const int src = ctn_sampler_sample(s->smp, logits, &tok);
    if (src < 0) {
        *code = src;
        *error = ctn_sampler_errmsg(s->smp);
        return CTN_FINISH_ERROR;
    }
    if (s->gst != NULL) {
        const int grc = ctn_grammar_accept_token(s->gst, e->trie, tok);
        if (grc < 0) {
            *code = grc;
            *error = grc == CTN_ENOMEM   ? "out of memory advancing the grammar"
                     : grc == CTN_ERANGE ? "the grammar is too ambiguous here (too many parses)"
                                         : "the sampled token is not allowed by the grammar";
            return CTN_FINISH_ERROR;
        }
    }
    ctn_sampler_accept(s->smp, tok);
    if (e->v != NULL && !s->ignore_eos && ctn_vocab_is_eog(e->v, tok)) return CTN_FINISH_EOS;
    if (push_tok(s, tok) < 0) {
        *code = CTN_ENOMEM;
        *error = "out of memory";
        return CTN_FINISH_ERROR;
    }
    const double t = now_s();
    s->n_gen++;
    if (s->t_first == 0) s->t_first = t;
    s->t_last = t;
    const char *out = NULL;
    size_t n_out = 0;
    bool hit = false;
    if (s->has_ds) {
        int n = ctn_detok_stream_push(&s->ds, tok, e->piece, PIECE_CAP);
        if (n < 0) {
            *code = CTN_ERANGE;
            *error = "a token's text is too long";
            return CTN_FINISH_ERROR;
        }
        int rc = ctn_stop_feed(s->stop, e->piece, (size_t)n, &out, &n_out);
        if (rc < 0) {
            *code = rc;
            *error = "out of memory";
            return CTN_FINISH_ERROR;
        }
        hit = rc == CTN_STOP_HIT;
    }
    if (s->on_token) {
        ctn_gen_token tk = {s->id, e->cur_step, tok, out, n_out, false, 0, NULL, 0};
        if (s->logprobs) {
            tk.has_logprob = true;
            tk.logprob = (double)e->lp_row[tok] - lse;
            tk.top = e->lp_top;
            tk.n_top = n_top;
        }
        s->on_token(s->ud, &tk);
    }
    if (hit) return CTN_FINISH_STOP;
    /* A grammar that can take no more characters: only an end of generation could follow. */
    if (s->gst != NULL && ctn_grammar_finished(s->gst)) return CTN_FINISH_EOS;
    if (s->max_tokens >= 0 && s->n_gen >= s->max_tokens) return CTN_FINISH_LENGTH;
    /* The context is full when the newest token has no position left to be computed at. */
    if (s->n_toks > e->n_ctx) return CTN_FINISH_LENGTH;
    return (ctn_finish)0;
}

/*
 * The log-probabilities of s's candidates from the logits row after its prompt: the
 * log-softmax over the whole row (row_lse).
 */
static void score(const ctn_gen *e, gseq *s, const float *logits) {
    const double lse = row_lse(logits, e->n_vocab);
    for (int i = 0; i < s->n_score; i++)
        s->scores[i] = (double)logits[s->score_ids[i]] - lse;
    s->scored = true;
}

/* Gives back what a failed admission took (adopted blocks, counted hits and misses). */
static void undo_admission(ctn_gen *e, gseq *s, int64_t hits, int64_t misses) {
    ctn_kv_seq_close(e->kv, &s->kv);
    s->has_kv = false;
    e->kv->hits = hits;
    e->kv->misses = misses;
}

/*
 * True when the next full block of s's prompt that the cache lacks is being computed now by
 * a running sequence in its prompt with the same tokens up to it: s then waits, and adopts
 * it once registered, instead of computing it a second time.
 */
static bool prefix_in_flight(const ctn_gen *e, const gseq *s) {
    const int64_t bs = e->kv->block_size;
    const int64_t end = s->kv.n_pos + bs; /* the block after what s adopted */
    if (end > s->n_toks - 1) return false;
    for (int j = 0; j < e->n_running; j++) {
        const gseq *r = e->running[j];
        if (r->kv.n_pos < end && r->n_toks >= end && r->kv.n_pos < r->n_prompt &&
            r->adapter == s->adapter && r->pooling == CTN_POOL_NONE &&
            memcmp(r->toks, s->toks, (size_t)end * sizeof *s->toks) == 0)
            return true;
    }
    return false;
}

/*
 * Gives up the KV blocks of idle sessions (no request of theirs admitted), least recently
 * used first, until want blocks are free or none is left. Their histories stay: the next
 * request on one finds its full blocks in the prefix cache while they are not evicted, and
 * computes the rest again. Returns the number of sessions released.
 */
static int release_idle_sessions(ctn_gen *e, int32_t want) {
    int n = 0;
    while (e->kv->n_free < want) {
        gsess *v = NULL;
        pthread_mutex_lock(&e->lock); /* the list itself is shared with submitters */
        for (gsess *ss = e->sessions; ss != NULL; ss = ss->next)
            if (ss->has_kv && ss->active == NULL && (v == NULL || ss->last_use < v->last_use))
                v = ss;
        pthread_mutex_unlock(&e->lock);
        if (v == NULL) break;
        ctn_kv_seq_close(e->kv, &v->kv);
        v->has_kv = false;
        n++;
    }
    return n;
}

/* Plans the step's segments: decodes, then prefill chunks of running sequences, preempting
 * the latest admitted when blocks run out (after idle sessions gave theirs up). Returns the
 * number of segments. */
static int plan_running(ctn_gen *e, int64_t *budget, int32_t *planned, int *n_decode,
                        int *n_preempted, gseq **order) {
    int n_segs = 0;
    const int64_t bs = e->kv->block_size;
    for (int pass = 0; pass < 2; pass++) {
        const int n_order = e->n_running;
        memcpy(order, e->running, (size_t)n_order * sizeof *order);
        for (int j = 0; j<n_order && * budget> 0; j++) {
            gseq *s = order[j];
            const int64_t left = target(s) - s->kv.n_pos;
            if (!s->has_kv || left <= 0 || (pass == 0) != (left == 1)) continue;
            int64_t n = left < *budget ? left : *budget;
            int32_t need = blocks_for(e, s, n);
            if (*planned + need > e->kv->n_free) release_idle_sessions(e, *planned + need);
            while (*planned + need > e->kv->n_free) {
                const int64_t room =
                    (int64_t)(s->kv.n_blocks + e->kv->n_free - *planned) * bs - s->kv.n_pos;
                if (pass == 1 && room > 0) { /* a shorter chunk fits */
                    n = room;
                    need = blocks_for(e, s, n);
                    continue;
                }
                gseq *victim = latest_not_in_step(e, n_segs);
                if (victim == NULL) break;
                if (victim == s && e->n_running == 1) {
                    /* Alone and still short of blocks: the whole pool holds less than it
                     * needs, so it ends here as if its context were full. */
                    running_remove(e, s);
                    seq_finish(e, s, CTN_FINISH_LENGTH, 0, NULL);
                    s = NULL;
                    break;
                }
                preempt(e, victim);
                (*n_preempted)++;
                if (victim == s) break;
            }
            if (s == NULL || !s->has_kv || *planned + need > e->kv->n_free) continue;
            *planned += need;
            e->segs[n_segs] = make_seg(s, n);
            e->seg_seq[n_segs++] = s;
            *budget -= n;
            if (left == 1) (*n_decode)++;
        }
    }
    return n_segs;
}

/* Publishes the queue lengths for ctn_gen_get_stats. */
static void publish(ctn_gen *e) {
    pthread_mutex_lock(&e->lock);
    e->stats.running = e->n_running;
    e->stats.waiting = e->n_waiting;
    e->stats.kv_free = e->kv->n_free;
    e->stats.kv_cached = e->kv->n_cached;
    e->stats.sessions = e->n_sessions;
    int32_t held = 0;
    for (const gsess *ss = e->sessions; ss != NULL; ss = ss->next)
        if (ss->has_kv) held += ss->kv.n_blocks;
    e->stats.kv_session_blocks = held;
    e->stats.prefix_hits = e->kv->hits;
    e->stats.prefix_misses = e->kv->misses;
    e->stats.prefix_evictions = e->kv->evictions;
    pthread_mutex_unlock(&e->lock);
}

static int64_t step(ctn_gen *e, ctn_gen_step_info *info);

int64_t ctn_gen_step(ctn_gen *e, ctn_gen_step_info *info) {
    const int64_t n = step(e, info);
    publish(e);
    return n;
}

/* Finishes the running prompt-only and embedding requests whose prompt is computed (an
 * embedding is pooled, normalised and handed over first). */
static void finish_prompt_only(ctn_gen *e) {
    const int64_t E = e->m->hp.n_embd;
    for (int j = 0; j < e->n_running;) {
        gseq *s = e->running[j];
        if ((s->pooling == CTN_POOL_NONE && !prompt_only(s)) || s->kv.n_pos < target(s)) {
            j++;
            continue;
        }
        running_remove(e, s);
        if (s->pooling != CTN_POOL_NONE) {
            float *v = s->embd;
            if (s->pooling == CTN_POOL_MEAN)
                for (int64_t i = 0; i < E; i++)
                    v[i] /= (float)s->n_toks;
            if (!s->embd_raw) {
                double ss = 0;
                for (int64_t i = 0; i < E; i++)
                    ss += (double)v[i] * v[i];
                const float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
                for (int64_t i = 0; i < E; i++)
                    v[i] *= inv;
            }
            if (s->on_embedding) s->on_embedding(s->ud, s->id, v, E);
            seq_finish(e, s, CTN_FINISH_STOP, 0, NULL);
        } else {
            seq_finish(e, s, CTN_FINISH_LENGTH, 0, NULL);
        }
    }
}

/*
 * The head of the queue s could not be admitted for want of what (KV blocks, or memory).
 * While something runs, it waits for that to give blocks back. Into an idle engine nothing
 * will change by itself, so it waits at most params.admit_timeout_s and then fails with
 * CTN_ENOMEM. Returns true when s was finished (it was the head: *wp moves on).
 */
static bool admission_blocked(ctn_gen *e, gseq *s, int n_segs, const char *what) {
    if (e->n_running > 0 || n_segs > 0 || e->p.admit_timeout_s < 0) {
        s->t_blocked = 0;
        return false;
    }
    const double t = now_s();
    if (s->t_blocked == 0) s->t_blocked = t;
    if (t - s->t_blocked < e->p.admit_timeout_s) return false;
    gseq **pp = &e->waiting;
    while (*pp != s)
        pp = &(*pp)->next;
    *pp = s->next;
    e->n_waiting--;
    char why[256];
    snprintf(why, sizeof why,
             "no %s for the request after %.3g s with nothing running (%d of %d KV blocks free)",
             what, t - s->t_blocked, (int)e->kv->n_free, (int)e->kv->n_blocks);
    seq_finish(e, s, CTN_FINISH_ERROR, CTN_ENOMEM, why);
    return true;
}

static int64_t step(ctn_gen *e, ctn_gen_step_info *info) {
    e->cur_step = e->stats.steps + 1; /* stats.steps is written by this thread only */
    take_incoming(e);
    run_cmds(e);
    const int64_t budget0 = e->p.step_tokens;
    int64_t budget = budget0;
    int n_decode = 0, n_admitted = 0, n_preempted = 0;
    int32_t planned = 0; /* blocks the planned segments will take */
    if (info != NULL) {
        memset(info, 0, sizeof *info);
        info->ids = e->info_ids;
        info->tokens = e->info_tokens;
    }

    /* 1 and 2: the running sequences, in admission order. */
    int n_segs = plan_running(e, &budget, &planned, &n_decode, &n_preempted, e->order);
    /* 3: admission, in arrival order. A request is passed over only while its session is
     * busy (an earlier request or operation on it); any other that does not fit ends the
     * admissions of this step, so that nothing starves. */
    gseq **wp = &e->waiting;
    while (*wp != NULL && budget > 0 && e->n_running < e->p.max_running) {
        gseq *s = *wp;
        gsess *ss = s->sess;
        if (ss != NULL && ((ss->active != NULL && ss->active != s) || ss->awaiting_fork ||
                           cmd_pending_before(e, ss, s->id))) {
            wp = &s->next;
            continue;
        }
        const char *error = NULL;
        int code = 0;
        ctn_finish fin = (ctn_finish)0;
        if (ss != NULL && !s->joined) fin = join_session(e, s, &code, &error);
        if (fin == 0 && prompt_only(s) && s->has_kv && s->kv.n_pos >= s->n_toks - 1)
            fin = CTN_FINISH_LENGTH; /* prompt only, and it is all there already */
        if (fin != 0) {
            *wp = s->next;
            e->n_waiting--;
            seq_finish(e, s, fin, code, error);
            continue;
        }
        const bool fresh = !s->has_kv; /* a session's blocks come with it */
        const int64_t hits = e->kv->hits, misses = e->kv->misses;
        if (fresh) {
            if (ctn_kv_seq_init(&s->kv, e->kv, e->n_ctx) < 0) { /* retried next step */
                if (admission_blocked(e, s, n_segs, "memory for its KV block table")) continue;
                break;
            }
            s->has_kv = true;
            if (!e->p.no_prefix_cache && s->pooling == CTN_POOL_NONE) {
                ctn_kv_prefix_adopt(e->kv, &s->kv, s->toks, s->n_toks - 1, s->adapter);
                if (prefix_in_flight(e, s)) {
                    undo_admission(e, s, hits, misses);
                    break;
                }
            }
            if (prompt_only(s) && s->kv.n_pos >= target(s)) {
                /* Prompt only, and the cache had all of it (a segment of no tokens is not a
                 * step): it ends now, holding the adopted blocks for its session. */
                *wp = s->next;
                e->n_waiting--;
                s->n_cached = s->kv.n_pos;
                seq_finish(e, s, CTN_FINISH_LENGTH, 0, NULL);
                continue;
            }
        }
        if (s->n_cached < 0) s->n_cached = s->kv.n_pos;
        const int64_t left = target(s) - s->kv.n_pos;
        int64_t n = left < budget ? left : budget;
        int32_t need = ctn_kv_seq_blocks_needed(e->kv, &s->kv, s->kv.n_pos + n);
        const bool idle = e->n_running == 0 && n_segs == 0;
        if (planned + need + e->watermark_blocks > e->kv->n_free)
            release_idle_sessions(e, planned + need + e->watermark_blocks);
        if (idle && need > e->kv->n_free) {
            /* The whole pool cannot hold this chunk (a preempted sequence that grew): a
             * shorter one, and at the pool's end it finishes as at a full context. */
            const int64_t room =
                (int64_t)(s->kv.n_blocks + e->kv->n_free) * e->kv->block_size - s->kv.n_pos;
            if (room <= 0) {
                *wp = s->next;
                e->n_waiting--;
                seq_finish(e, s, CTN_FINISH_LENGTH, 0, NULL);
                continue;
            }
            n = room < n ? room : n;
            need = ctn_kv_seq_blocks_needed(e->kv, &s->kv, s->kv.n_pos + n);
        }
        if (planned + need + e->watermark_blocks > e->kv->n_free) {
            /* Into an idle engine the head goes in whatever the watermark. */
            if (e->n_running > 0 || n_segs > 0 || planned + need > e->kv->n_free) {
                if (fresh) undo_admission(e, s, hits, misses);
                if (admission_blocked(e, s, n_segs, "KV blocks")) continue;
                break;
            }
        }
        *wp = s->next;
        e->n_waiting--;
        s->next = NULL;
        s->t_blocked = 0;
        s->admitted = ++e->admit_clock;
        e->running[e->n_running++] = s;
        planned += need;
        e->segs[n_segs] = make_seg(s, n);
        e->seg_seq[n_segs++] = s;
        budget -= n;
        n_admitted++;
    }
    if (n_segs == 0) return 0;
    /* The plan fits: no more sequences than slots, no more blocks than are free. */
    CTN_ASSERT(e->n_running <= e->p.max_running && n_segs <= e->p.max_running);
    CTN_ASSERT(planned <= e->kv->n_free && budget >= 0);

    const int rc = ctn_fwd_run(e->f, e->segs, n_segs, e->logits);
    const int64_t n_tok = budget0 - budget;
    if (info != NULL) {
        info->n_seqs = n_segs;
        info->n_tokens = n_tok;
        info->n_decode = n_decode;
        info->n_admitted = n_admitted;
        info->n_preempted = n_preempted;
        for (int i = 0; i < n_segs; i++) {
            e->info_ids[i] = e->seg_seq[i]->id;
            e->info_tokens[i] = e->segs[i].n_tokens;
        }
    }
    if (rc < 0) {
        /* Every sequence of the step fails with the forward pass's reason. */
        char why[512];
        snprintf(why, sizeof why, "%s", ctn_fwd_errmsg(e->f));
        for (int i = 0; i < n_segs; i++) {
            running_remove(e, e->seg_seq[i]);
            seq_finish(e, e->seg_seq[i], CTN_FINISH_ERROR, rc, why);
        }
        return rc;
    }
    if (!e->p.no_prefix_cache)
        for (int i = 0; i < n_segs; i++)
            ctn_kv_prefix_commit(e->kv, &e->seg_seq[i]->kv, e->seg_seq[i]->toks,
                                 e->seg_seq[i]->adapter);
    /* KV use after the pass, before finished sequences give their blocks back. */
    int64_t used = 0, alloc = 0;
    for (int j = 0; j < e->n_running; j++) {
        used += e->running[j]->kv.n_pos;
        alloc += (int64_t)e->running[j]->kv.n_blocks * e->kv->block_size;
    }
    pthread_mutex_lock(&e->lock);
    e->stats.steps++;
    e->stats.tokens += n_tok;
    e->stats.decode_tokens += n_decode;
    e->stats.prefill_tokens += n_tok - n_decode;
    e->stats.preemptions += n_preempted;
    e->stats.kv_slots_used += used;
    e->stats.kv_slots_alloc += alloc;
    pthread_mutex_unlock(&e->lock);

    finish_prompt_only(e);
    int row = 0;
    for (int i = 0; i < n_segs; i++) {
        if (!e->segs[i].logits) continue;
        gseq *s = e->seg_seq[i];
        const char *error = NULL;
        int code = 0;
        float *lg = e->logits + (size_t)row++ * (size_t)e->n_vocab;
        if (s->n_score > 0 && !s->scored) {
            score(e, s, lg);
            if (s->max_tokens == 0) {
                running_remove(e, s);
                seq_finish(e, s, CTN_FINISH_LENGTH, 0, NULL);
                continue;
            }
        }
        const ctn_finish fin = next_token(e, s, lg, &code, &error);
        if (fin != 0) {
            running_remove(e, s);
            seq_finish(e, s, fin, code, error);
        }
    }
    run_cmds(e); /* operations waiting for the requests that just ended */
    return n_tok;
}

void ctn_gen_get_stats(ctn_gen *e, ctn_gen_stats *out) {
    pthread_mutex_lock(&e->lock);
    *out = e->stats;
    out->waiting += e->n_incoming;
    out->kv_blocks = e->kv->n_blocks;
    out->ttft_mean_s = e->ttft_n > 0 ? e->ttft_sum / (double)e->ttft_n : 0;
    out->itl_mean_s = e->itl_n > 0 ? e->itl_sum / (double)e->itl_n : 0;
    pthread_mutex_unlock(&e->lock);
    pthread_mutex_lock(&e->lora_lock);
    out->loras = e->n_loras;
    out->lora_bytes = 0;
    for (int i = 0; i < e->n_loras; i++)
        out->lora_bytes += e->loras[i].a->bytes;
    pthread_mutex_unlock(&e->lora_lock);
}

/* ---- the engine thread ------------------------------------------------------------------- */

static void *engine_main(void *arg) {
    ctn_gen *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        while (!e->stopping && e->incoming == NULL && e->n_cancels == 0 && e->waiting == NULL &&
               e->n_running == 0 && e->cmds_in == NULL)
            pthread_cond_wait(&e->wake, &e->lock);
        const bool stop = e->stopping;
        pthread_mutex_unlock(&e->lock);
        if (stop) break;
        if (ctn_gen_step(e, NULL) == 0 && (e->waiting != NULL || e->cmds != NULL)) {
            /* Nothing could run (a sequence's block table could not be allocated): try
             * again shortly rather than spin. */
            const struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    return NULL;
}

int ctn_gen_new(ctn_gen **out, const ctn_model *m, const ctn_vocab *v, const ctn_gen_params *pp,
                char *err, size_t errlen) {
    *out = NULL;
    ctn_gen_params p = pp != NULL ? *pp : (ctn_gen_params){0};
    if (p.step_tokens < 0 || p.max_running < 0 || p.step_tokens > 65536 || p.max_running > 4096 ||
        isnan(p.watermark) || p.watermark >= 1 || isnan(p.admit_timeout_s)) {
        ctn__errf(err, errlen,
                  "bad engine parameters: step_tokens %" PRId64
                  " (0..65536), max_running %d (0..4096), watermark %g (below 1)",
                  p.step_tokens, p.max_running, p.watermark);
        return CTN_EINVAL;
    }
    if (p.step_tokens == 0) p.step_tokens = 512;
    if (p.max_running == 0) p.max_running = 64;
    if (p.watermark == 0) p.watermark = 0.01;
    if (p.admit_timeout_s == 0) p.admit_timeout_s = 5;
    if (p.watermark < 0) p.watermark = 0;
    ctn_gen *e = ctn__calloc(1, sizeof *e);
    if (e == NULL) {
        ctn__errf(err, errlen, "out of memory");
        return CTN_ENOMEM;
    }
    e->m = m;
    e->v = v;
    e->next_id = 1;
    e->incoming_tail = &e->incoming;
    e->cmds_in_tail = &e->cmds_in;
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->lora_lock, NULL);
    pthread_mutex_init(&e->gram_lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    p.fwd.n_batch = p.step_tokens > p.max_running ? p.step_tokens : p.max_running;
    if (p.fwd.kv_memory == 0) {
        /* Room for every running sequence at full context, capped at 1 GiB. */
        const int64_t n_ctx = p.fwd.n_ctx > 0 ? p.fwd.n_ctx
                              : m->hp.n_ctx_train > 0 && m->hp.n_ctx_train < 4096
                                  ? m->hp.n_ctx_train
                                  : 4096;
        const size_t per_pos = 2 * (size_t)m->hp.n_layer *
                               (size_t)(m->hp.n_head_kv * m->hp.head_dim) * (p.fwd.kv_f32 ? 4 : 2);
        /* Whole blocks: a context shorter than one block still needs one. */
        const int64_t bs = p.fwd.kv_block > 0 ? p.fwd.kv_block : CTN_KV_BLOCK_DEFAULT;
        const int64_t ctx_blocks = (n_ctx + bs - 1) / bs;
        double want = (double)per_pos * (double)(ctx_blocks * bs) * (double)p.max_running;
        p.fwd.kv_memory = want > (double)(1u << 30) ? (size_t)1 << 30 : (size_t)want;
    }
    int rc = ctn_fwd_new(&e->f, m, &p.fwd, err, errlen);
    if (rc < 0) goto fail;
    e->p = p;
    e->kv = ctn_fwd_kv(e->f);
    e->n_ctx = ctn_fwd_n_ctx(e->f);
    e->n_vocab = m->hp.n_vocab;
    e->watermark_blocks = (int32_t)(p.watermark * (double)e->kv->n_blocks);
    e->stats.kv_free = e->kv->n_free;
    e->stats.n_ctx = e->n_ctx;
    e->stats.kv_block_size = e->kv->block_size;
    e->stats.threads = ctn_fwd_threads(e->f);
    const size_t mr = (size_t)p.max_running;
    e->running = ctn__calloc(mr + 1, sizeof *e->running);
    e->order = ctn__calloc(mr + 1, sizeof *e->order);
    e->segs = ctn__calloc(mr, sizeof *e->segs);
    e->seg_seq = ctn__calloc(mr, sizeof *e->seg_seq);
    e->info_ids = ctn__calloc(mr, sizeof *e->info_ids);
    e->info_tokens = ctn__calloc(mr, sizeof *e->info_tokens);
    /* A step has at most one logits row per sequence and one sequence per token. */
    e->logits_rows = mr < (size_t)p.step_tokens ? mr : (size_t)p.step_tokens;
    e->logits = ctn__malloc(e->logits_rows * (size_t)e->n_vocab * sizeof *e->logits);
    e->piece = ctn__malloc(PIECE_CAP);
    e->lp_row = ctn__malloc((size_t)e->n_vocab * sizeof *e->lp_row);
    if (!e->running || !e->order || !e->segs || !e->seg_seq || !e->info_ids || !e->info_tokens ||
        !e->logits || !e->piece || !e->lp_row) {
        ctn__errf(err, errlen, "out of memory");
        rc = CTN_ENOMEM;
        goto fail;
    }
    if (!p.manual) {
        if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
            ctn__errf(err, errlen, "cannot start the engine thread");
            rc = CTN_ENOMEM;
            goto fail;
        }
        e->has_thread = true;
    }
    *out = e;
    return 0;
fail:
    ctn_gen_free(e);
    return rc;
}

void ctn_gen_free(ctn_gen *e) {
    if (e == NULL) return;
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    if (e->has_thread) pthread_join(e->thread, NULL);
    /* Everything left is cancelled, in arrival order. */
    if (e->logits != NULL) {
        take_incoming(e);
        while (e->n_running > 0 || e->waiting != NULL) {
            gseq *s;
            if (e->waiting == NULL || (e->n_running > 0 && e->running[0]->id < e->waiting->id)) {
                s = e->running[0];
                memmove(e->running, e->running + 1,
                        (size_t)(e->n_running - 1) * sizeof *e->running);
                e->n_running--;
            } else {
                s = e->waiting;
                e->waiting = s->next;
                e->n_waiting--;
            }
            seq_finish(e, s, CTN_FINISH_CANCELLED, 0, NULL);
        }
        for (gcmd *c = e->cmds; c != NULL;) {
            gcmd *nx = c->next;
            free(c->children);
            free(c);
            c = nx;
        }
        while (e->sessions != NULL) {
            gsess *ss = e->sessions;
            e->sessions = ss->next;
            session_release(e, ss);
            free(ss);
        }
    }
    ctn_fwd_free(e->f);
    free(e->running);
    free(e->order);
    free(e->segs);
    free(e->seg_seq);
    free(e->info_ids);
    free(e->info_tokens);
    free(e->logits);
    free(e->lp_row);
    free(e->piece);
    ctn_sb_free(&e->tail);
    free(e->cancels);
    for (int i = 0; i < e->n_loras; i++) /* every request has ended: no users are left */
        ctn_lora_free(e->loras[i].a);
    free(e->loras);
    free(e->tags);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->lora_lock);
    ctn_token_trie_free(e->trie); /* every request has ended: no grammar is left */
    pthread_mutex_destroy(&e->gram_lock);
    pthread_cond_destroy(&e->wake);
    free(e);
}
