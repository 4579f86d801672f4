/*
 * The model bridge (lm.h): one ctn_gen engine per (loop, model file), whose engine-thread
 * callbacks are turned into loop-thread callbacks through a locked queue and a uv_async.
 *
 * Each request owns a byte buffer that the engine thread appends token text to, under the
 * object's lock, with the end offset of each token's piece, queueing the request on a ready
 * list the first time; the loop's async callback takes each ready request's bytes and
 * offsets (swapping buffers, so the engine thread never waits on the caller) and delivers
 * them one piece per token, cut at UTF-8 character boundaries: however many tokens one
 * wake-up finds, each is its own on_text, in order. A request's end is a flag plus a copy of
 * the engine's result on the same request, so the order of its text and its end is the
 * order the engine produced them in. Nothing here asks the engine for its state: each token
 * and each end carry the step they belong to (the batch histogram).
 */
#define _POSIX_C_SOURCE 200809L

#include "lm.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "model.h"
#include "vocab.h"
#include "str.h"
#include "unicode.h"
#include "alloc.h"

/* ---- types ------------------------------------------------------------------------------- */

typedef struct lm_req lm_req;

/* A token's log-probabilities as the engine thread queues them. */
typedef struct {
    size_t before; /* pieces queued before the token's own (it comes before the next one) */
    int32_t token;
    int n_top;
    double logprob;
    ctn_gen_logprob top[CTN_GEN_MAX_TOP_LOGPROBS];
} lp_rec;

struct lm_req {
    ctn_lm *lm;
    uint64_t handle; /* the engine's request id */
    bool embed;
    ctn_lm_callbacks cb;
    void (*on_embd)(void *ud, const float *vec, int dim, int err, const char *msg);
    void *ud;
    lm_req *prev, *next; /* lm->reqs, in submission order (loop thread) */

    /* Shared with the engine thread, under lm->lock. */
    ctn_strbuf pend; /* token text not yet taken by the loop */
    size_t *ends; /* (n_ends) end offsets in pend of the pieces (one per token) */
    size_t n_ends, cap_ends;
    bool queued; /* on lm->ready */
    lm_req *qnext;
    bool done; /* the engine's on_done came; the fields below are set */
    bool oom;  /* the engine thread could not keep text or the embedding */
    ctn_finish finish;
    int code; /* the engine's CTN_E* code of an error */
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    char errmsg[256];
    float *vec; /* (dim) the embedding */
    int dim;
    /* A keyed session's request: the tokens the session will hold once it ends well (the
     * whole prompt, then each generated token, appended by the engine thread). */
    struct lm_sess *ks;
    int32_t *ks_toks;
    size_t ks_n, ks_cap;
    double *scores; /* (n_score_ids) allocated at submission; n_scores of them came */
    int n_score_ids, n_scores;
    lp_rec *lps; /* (n_lps) tokens' log-probabilities not yet taken by the loop */
    size_t n_lps, cap_lps;

    /* Loop thread only. */
    ctn_strbuf work; /* the buffer swapped out of pend, being delivered */
    size_t *work_ends; /* and its piece ends */
    size_t cap_work_ends;
    lp_rec *work_lps; /* the log-probabilities swapped out of lps */
    size_t cap_work_lps;
    void (*on_lp)(void *ud, const ctn_lm_token_logprobs *t);
    ctn_strbuf lp_text;    /* the bytes and texts of one token's log-probabilities */
    ctn_strbuf text;       /* everything delivered, NUL-terminated */
    unsigned char hold[4]; /* the start of a UTF-8 character whose rest has not come yet */
    size_t n_hold;
    bool text_oom;  /* the loop could not keep the text: the request fails */
    bool cancelled; /* ctn_lm_cancel: no more on_text */
    bool delivered; /* on_done has been called */
};

struct ctn_lm {
    uv_loop_t *loop;
    char *path; /* canonical */
    ctn_lm_params params;
    int refs;
    ctn_lm *reg_next; /* the (loop, path) registry */

    ctn_gguf *g; /* owns the mmapped weights the model points into */
    ctn_vocab *v;
    ctn_model *m;
    ctn_gen *e;
    char *chat_template, *bos_text, *eos_text;

    uv_async_t async;
    int outstanding; /* requests without on_done; the async is referenced while > 0 */
    lm_req *reqs, *reqs_tail;

    /* Reentrancy: callbacks in progress, a last close asked for inside one of them, the
     * last close under way (no new requests, no further closes). */
    int in_cb;
    bool close_deferred;
    bool closing;

    pthread_mutex_t lock;
    lm_req *ready, **ready_tail; /* requests with something to deliver */
    /* Decode batch histogram: the step the engine thread last saw a token in, the tokens
     * of that step so far, and the finished steps' buckets. */
    int64_t cur_step;
    int cur_count;
    int64_t hist[CTN_LM_BATCH_BUCKETS];
    int max_batch;

    /* LoRA adapters by name (loop thread). */
    struct lm_adapter {
        char *name, *path;
        int32_t max_rank;
        int32_t id; /* in the engine; reloaded when the budget unloaded it */
        struct lm_adapter *next;
    } * adapters;

    /* Keyed sessions (loop thread), most recently used first. */
    struct lm_sess {
        char *key;
        int64_t sid;   /* the engine session; 0: none yet */
        int32_t *toks; /* the tokens it holds */
        size_t n_toks;
        bool busy; /* a request runs on it */
        int32_t adapter; /* and scale: its first request's (gen.h) */
        float scale;
        struct lm_sess *next;
    } * sessions;
    int n_sessions;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ctn_lm *registry;

/* ---- small helpers ----------------------------------------------------------------------- */


static int bucket_of(int n) {
    int b = 0;
    while (n > 1 && b < CTN_LM_BATCH_BUCKETS - 1) {
        n >>= 1;
        b++;
    }
    return b;
}

/* ---- the engine thread's side ------------------------------------------------------------ */

/* Counts a sequence that got a token (or ended on EOS) in engine step `step` (the engine
 * numbers them; the callbacks of one step come together). Lock held. */
static void count_in_step(ctn_lm *lm, int64_t step) {
    if (step != lm->cur_step) {
        if (lm->cur_count > 0) lm->hist[bucket_of(lm->cur_count)]++;
        lm->cur_step = step;
        lm->cur_count = 0;
    }
    lm->cur_count++;
    if (lm->cur_count > lm->max_batch) lm->max_batch = lm->cur_count;
}

/* Queues r for the loop (lock held). */
static void make_ready(ctn_lm *lm, lm_req *r) {
    if (r->queued) return;
    r->queued = true;
    r->qnext = NULL;
    *lm->ready_tail = r;
    lm->ready_tail = &r->qnext;
}

/* Takes r off the ready list (lock held). */
static void unqueue(ctn_lm *lm, lm_req *r) {
    lm_req **pp = &lm->ready;
    while (*pp != NULL && *pp != r)
        pp = &(*pp)->qnext;
    if (*pp == NULL) return;
    *pp = r->qnext;
    if (lm->ready_tail == &r->qnext) lm->ready_tail = pp;
    r->queued = false;
    r->qnext = NULL;
}

/* Appends one piece of text (lock held). */
static void append_pend(lm_req *r, const char *s, size_t n) {
    if (n == 0 || r->oom) return;
    if (!ctn_sb_reserve(&r->pend, n)) {
        r->oom = true;
        return;
    }
    if (r->n_ends == r->cap_ends) {
        const size_t c = r->cap_ends ? 2 * r->cap_ends : 16;
        size_t *p = c < SIZE_MAX / sizeof *p ? ctn__realloc(r->ends, c * sizeof *p) : NULL;
        if (p == NULL) {
            r->oom = true;
            return;
        }
        r->ends = p;
        r->cap_ends = c;
    }
    ctn_sb_put(&r->pend, s, n);
    r->ends[r->n_ends++] = r->pend.len;
}

static void engine_on_token(void *ud, const ctn_gen_token *tk) {
    lm_req *r = ud;
    ctn_lm *lm = r->lm;
    pthread_mutex_lock(&lm->lock);
    count_in_step(lm, tk->step);
    const size_t before = r->n_ends;
    if (tk->text != NULL) append_pend(r, tk->text, tk->len);
    if (tk->has_logprob && !r->oom) {
        if (r->n_lps == r->cap_lps) {
            const size_t c = r->cap_lps ? 2 * r->cap_lps : 8;
            lp_rec *p = ctn__realloc(r->lps, c * sizeof *p);
            if (p != NULL) r->lps = p, r->cap_lps = c;
        }
        if (r->n_lps < r->cap_lps) {
            lp_rec *x = &r->lps[r->n_lps++];
            x->before = before;
            x->token = tk->token;
            x->logprob = tk->logprob;
            x->n_top = tk->n_top;
            memcpy(x->top, tk->top, (size_t)tk->n_top * sizeof *x->top);
        } else {
            r->oom = true;
        }
    }
    if (r->ks != NULL && r->ks_toks != NULL) {
        if (r->ks_n == r->ks_cap) {
            const size_t c = 2 * r->ks_cap + 16;
            int32_t *p = ctn__realloc(r->ks_toks, c * sizeof *p);
            if (p == NULL) {
                free(r->ks_toks); /* the session cannot be followed: it is ended at the end */
                r->ks_toks = NULL;
            } else {
                r->ks_toks = p;
                r->ks_cap = c;
            }
        }
        if (r->ks_toks != NULL) r->ks_toks[r->ks_n++] = tk->token;
    }
    make_ready(lm, r);
    pthread_mutex_unlock(&lm->lock);
    uv_async_send(&lm->async);
}

static void engine_on_embedding(void *ud, int64_t id, const float *v, int64_t n) {
    (void)id;
    lm_req *r = ud;
    float *copy = n > 0 && n <= INT_MAX ? ctn__malloc((size_t)n * sizeof *copy) : NULL;
    if (copy != NULL) memcpy(copy, v, (size_t)n * sizeof *copy);
    pthread_mutex_lock(&r->lm->lock);
    free(r->vec);
    r->vec = copy;
    r->dim = copy != NULL ? (int)n : 0;
    if (copy == NULL) r->oom = true;
    pthread_mutex_unlock(&r->lm->lock);
}

static void engine_on_done(void *ud, int64_t id, const ctn_gen_result *res) {
    (void)id;
    lm_req *r = ud;
    ctn_lm *lm = r->lm;
    pthread_mutex_lock(&lm->lock);
    /* A sequence that ends on EOS was in the step's batch but passes no token. */
    if (res->finish == CTN_FINISH_EOS && !r->embed) count_in_step(lm, res->step);
    if (res->text != NULL) append_pend(r, res->text, res->text_len);
    r->finish = res->finish;
    r->code = res->code;
    r->prompt_tokens = res->prompt_tokens;
    r->completion_tokens = res->completion_tokens;
    r->cached_tokens = res->cached_tokens;
    snprintf(r->errmsg, sizeof r->errmsg, "%s", res->error != NULL ? res->error : "");
    if (res->scores != NULL && res->n_scores == r->n_score_ids) {
        memcpy(r->scores, res->scores, (size_t)res->n_scores * sizeof *r->scores);
        r->n_scores = res->n_scores;
    }
    r->done = true;
    make_ready(lm, r);
    pthread_mutex_unlock(&lm->lock);
    uv_async_send(&lm->async);
}

/* ---- the loop thread's side -------------------------------------------------------------- */

static void add_text(lm_req *r, const void *s, size_t n) {
    if (r->text_oom) return;
    ctn_sb_put(&r->text, s, n);
    if (r->text.oom) r->text_oom = true;
}

/*
 * Appends the held bytes and then data to r->text as valid UTF-8: bytes that cannot be part
 * of a character become U+FFFD, and the start of a character cut short at the end is held
 * for the next call (or, at the end of the stream, becomes U+FFFD).
 */
static void take_utf8(lm_req *r, const char *data, size_t n, bool final) {
    static const char replacement[] = "\xEF\xBF\xBD";
    size_t i = 0;
    if (data == NULL) data = ""; /* a buffer never grown: nothing came yet */
    if (r->n_hold > 0) {
        /* First complete the held character from the start of data. The held bytes are a
         * lead byte and valid continuation bytes, so the outcome is what reading them
         * together with data would give: the whole character, or (when it turns out
         * invalid, or the stream ends) one U+FFFD per held byte, each a byte that starts no
         * character, and data read from its start. */
        unsigned char buf[8];
        size_t k = r->n_hold;
        memcpy(buf, r->hold, k);
        while (k < 4 && i < n)
            buf[k++] = (unsigned char)data[i++];
        const int len = ctn__utf8_char(buf, k);
        if (len > 0) {
            add_text(r, buf, (size_t)len);
            i = (size_t)len - r->n_hold;
        } else if (len == 0 && !final) {
            memcpy(r->hold, buf, k);
            r->n_hold = k;
            return;
        } else {
            const size_t bad = len == 0 ? k : r->n_hold;
            for (size_t j = 0; j < bad; j++)
                add_text(r, replacement, 3);
            i = len == 0 ? n : 0;
        }
        r->n_hold = 0;
    }
    size_t start = i; /* a run of valid bytes is copied at once */
    while (i < n) {
        const int len = ctn__utf8_char((const unsigned char *)data + i, n - i);
        if (len > 0) {
            i += (size_t)len;
            continue;
        }
        add_text(r, data + start, i - start);
        if (len == 0 && !final) {
            memcpy(r->hold, data + i, n - i);
            r->n_hold = n - i;
            return;
        }
        add_text(r, replacement, 3);
        i++;
        start = i;
    }
    add_text(r, data + start, n - start);
}

/* The request's failure, as a CTN_E* code: the bridge's own out-of-memory, or the
 * engine's code. */
static int error_code(const lm_req *r) {
    if (r->oom || r->text_oom) return CTN_ENOMEM;
    return r->code < 0 ? r->code : CTN_ECHAIN;
}

static void unlink_req(ctn_lm *lm, lm_req *r) {
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        lm->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        lm->reqs_tail = r->prev;
    r->prev = r->next = NULL;
}

static void free_req(lm_req *r) {
    free(r->ks_toks);
    ctn_sb_free(&r->pend);
    free(r->ends);
    ctn_sb_free(&r->work);
    free(r->work_ends);
    free(r->lps);
    free(r->work_lps);
    ctn_sb_free(&r->lp_text);
    ctn_sb_free(&r->text);
    free(r->vec);
    free(r->scores);
    free(r);
}

/* Ends a keyed session: its engine session is closed, its tokens forgotten. */
static void session_reset(ctn_lm *lm, struct lm_sess *ks) {
    if (ks->sid > 0 && lm->e != NULL) ctn_gen_session_close(lm->e, ks->sid);
    ks->sid = 0;
    free(ks->toks);
    ks->toks = NULL;
    ks->n_toks = 0;
}

/* A keyed session's request has ended: the session holds its tokens, or (after a failure,
 * a cancellation, or tokens the bridge could not follow) is ended. */
static void session_settle(ctn_lm *lm, lm_req *r, bool failed) {
    struct lm_sess *ks = r->ks;
    r->ks = NULL;
    ks->busy = false;
    if (failed || r->finish == CTN_FINISH_CANCELLED || r->ks_toks == NULL) {
        session_reset(lm, ks);
        return;
    }
    free(ks->toks);
    ks->toks = r->ks_toks;
    ks->n_toks = r->ks_n;
    r->ks_toks = NULL;
}

/* Calls r's on_done (loop thread). The request is freed afterwards, except while the last
 * close is under way: then the close callback frees every request at once, so that nothing
 * a caller's callback can do leaves a dangling request behind. */
static void finish_req(ctn_lm *lm, lm_req *r) {
    r->delivered = true;
    if (--lm->outstanding == 0 && !lm->closing) uv_unref((uv_handle_t *)&lm->async);
    const bool failed = r->finish == CTN_FINISH_ERROR || r->oom || r->text_oom;
    if (r->ks != NULL) session_settle(lm, r, failed);
    lm->in_cb++;
    if (r->embed) {
        if (r->on_embd != NULL) {
            if (failed)
                r->on_embd(r->ud, NULL, 0, error_code(r),
                           r->errmsg[0] ? r->errmsg : "out of memory keeping the embedding");
            else if (r->finish == CTN_FINISH_CANCELLED)
                r->on_embd(r->ud, NULL, 0, CTN_ECANCELED, "the embedding was cancelled");
            else if (r->vec == NULL)
                r->on_embd(r->ud, NULL, 0, CTN_ECHAIN, "the engine returned no embedding");
            else
                r->on_embd(r->ud, r->vec, r->dim, 0, "");
        }
    } else if (r->cb.on_done != NULL) {
        ctn_lm_result res;
        memset(&res, 0, sizeof res);
        res.finish = failed ? CTN_FINISH_ERROR : r->finish;
        res.finish_name = ctn_finish_name(res.finish);
        res.prompt_tokens = r->prompt_tokens;
        res.completion_tokens = r->completion_tokens;
        res.cached_tokens = r->cached_tokens;
        res.text = r->text.p != NULL && !r->text_oom ? r->text.p : "";
        res.text_len = r->text.p != NULL && !r->text_oom ? r->text.len : 0;
        res.error = failed ? error_code(r) : 0;
        res.message = failed ? (r->errmsg[0] ? r->errmsg : "out of memory keeping the output") : "";
        res.scores = r->n_scores > 0 && !failed ? r->scores : NULL;
        res.n_scores = r->n_scores > 0 && !failed ? r->n_scores : 0;
        r->cb.on_done(r->ud, &res);
    }
    lm->in_cb--;
    if (!lm->closing) {
        unlink_req(lm, r);
        free_req(r);
    }
}

/* Nothing more is delivered to r now: an embedding, a cancelled request, a close asked for
 * from a callback. */
static bool stopped(const ctn_lm *lm, const lm_req *r) {
    return r->embed || r->cancelled || (lm->close_deferred && !lm->closing);
}

/*
 * Appends s to b as valid UTF-8 without NULs: each character as it is, and each maximal run
 * of bytes that begins a character but is not one (Unicode's "maximal subpart", as Python's
 * errors="replace" reads it), a byte that begins none, or a NUL (which would end the C
 * string), as one U+FFFD.
 */
static void put_utf8_replaced(ctn_strbuf *b, const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        const unsigned char *u = (const unsigned char *)s + i;
        const int len = s[i] == '\0' ? -1 : ctn__utf8_char(u, n - i);
        if (len > 0) {
            ctn_sb_put(b, s + i, (size_t)len);
            i += (size_t)len;
            continue;
        }
        size_t bad = 1; /* the longest prefix that is the start of a character */
        while (bad < 3 && i + bad < n && ctn__utf8_char(u, bad + 1) == 0)
            bad++;
        ctn_sb_put(b, "\xEF\xBF\xBD", 3);
        i += bad;
    }
}

/* A token's bytes (as ctn_token_to_piece gives them, control tokens as their text), a NUL,
 * its text as valid UTF-8 and a NUL, appended to b; *n_bytes is the bytes' length. */
static void put_token(const ctn_lm *lm, ctn_strbuf *b, int32_t id, size_t *n_bytes) {
    char tmp[128];
    int len = ctn_token_to_piece(lm->v, id, tmp, sizeof tmp, 0, true);
    const size_t at = b->len;
    if (len < 0) len = 0;
    if ((size_t)len <= sizeof tmp) {
        ctn_sb_put(b, tmp, (size_t)len);
    } else if (ctn_sb_reserve(b, (size_t)len)) {
        ctn_token_to_piece(lm->v, id, b->p + b->len, (size_t)len, 0, true);
        b->len += (size_t)len;
    }
    ctn_sb_put(b, "", 1);
    *n_bytes = (size_t)len;
    /* The text is at most 3 bytes per byte: with that room, b->p stays where it is. */
    if (ctn_sb_reserve(b, 3 * (size_t)len + 1)) put_utf8_replaced(b, b->p + at, (size_t)len);
    ctn_sb_put(b, "", 1);
}

/* Calls r's on_logprobs with one queued token and its alternatives, their bytes and texts
 * rendered from the vocabulary here on the loop thread. */
static void give_logprobs(ctn_lm *lm, lm_req *r, const lp_rec *x) {
    if (r->on_lp == NULL) return;
    ctn_lm_logprob lp[1 + CTN_GEN_MAX_TOP_LOGPROBS];
    size_t off[1 + CTN_GEN_MAX_TOP_LOGPROBS];
    ctn_strbuf *b = &r->lp_text;
    b->len = 0;
    for (int i = 0; i <= x->n_top; i++) {
        lp[i].id = i == 0 ? x->token : x->top[i - 1].token;
        lp[i].logprob = i == 0 ? x->logprob : x->top[i - 1].logprob;
        off[i] = b->len;
        put_token(lm, b, lp[i].id, &lp[i].n_bytes);
    }
    if (b->oom) {
        r->text_oom = true; /* the request fails as when its text cannot be kept */
        if (!r->done && lm->e != NULL) ctn_gen_cancel(lm->e, (int64_t)r->handle);
        return;
    }
    for (int i = 0; i <= x->n_top; i++) {
        lp[i].bytes = b->p + off[i];
        lp[i].text = lp[i].bytes + lp[i].n_bytes + 1;
    }
    const ctn_lm_token_logprobs t = {lp[0], lp + 1, x->n_top};
    lm->in_cb++;
    r->on_lp(r->ud, &t);
    lm->in_cb--;
}

/*
 * Delivers what the engine has produced for r: its new text (whole characters) and, when it
 * has ended, the rest of its text and its on_done. Stops early when a callback asked for the
 * last close (the close finishes r).
 */
static void deliver(ctn_lm *lm, lm_req *r) {
    if (r->delivered) return;
    pthread_mutex_lock(&lm->lock);
    const ctn_strbuf t = r->work;
    r->work = r->pend;
    r->pend = t;
    r->pend.len = 0;
    size_t *te = r->work_ends;
    size_t tec = r->cap_work_ends;
    r->work_ends = r->ends;
    r->cap_work_ends = r->cap_ends;
    const size_t n_pieces = r->n_ends;
    r->ends = te;
    r->cap_ends = tec;
    r->n_ends = 0;
    lp_rec *tl = r->work_lps;
    const size_t tlc = r->cap_work_lps;
    r->work_lps = r->lps;
    r->cap_work_lps = r->cap_lps;
    const size_t n_lps = r->n_lps;
    r->lps = tl;
    r->cap_lps = tlc;
    r->n_lps = 0;
    const bool done = r->done;
    /* The end may have come, and queued r again, since on_async took r off the ready list:
     * r is finished and freed below, so it must not stay there. */
    if (done && r->queued) unqueue(lm, r);
    pthread_mutex_unlock(&lm->lock);

    /* One on_text per piece, each token's log-probabilities before its piece; a callback
     * may cancel r or close the model in between. */
    size_t start = 0, k = 0;
    for (size_t i = 0; i < n_pieces || (i == 0 && done); i++) {
        while (k < n_lps && r->work_lps[k].before <= i && !stopped(lm, r) && !r->text_oom)
            give_logprobs(lm, r, &r->work_lps[k++]);
        if (stopped(lm, r) || r->text_oom) break;
        const size_t end = i < n_pieces ? r->work_ends[i] : 0;
        const size_t before = r->text.len;
        take_utf8(r, r->work.p != NULL ? r->work.p + start : NULL, end - start,
                  done && i + 1 >= n_pieces);
        start = end;
        if (r->text.len > before && !r->text_oom && r->cb.on_text != NULL) {
            lm->in_cb++;
            r->cb.on_text(r->ud, r->text.p + before, r->text.len - before);
            lm->in_cb--;
        }
        if (r->text_oom) {
            if (!done && lm->e != NULL) ctn_gen_cancel(lm->e, (int64_t)r->handle);
            break;
        }
    }
    while (k < n_lps && !stopped(lm, r) && !r->text_oom) /* tokens after the last piece */
        give_logprobs(lm, r, &r->work_lps[k++]);
    if (lm->close_deferred && !lm->closing) return;
    if (done) finish_req(lm, r);
}

static void last_close(ctn_lm *lm);

static void on_async(uv_async_t *h) {
    ctn_lm *lm = h->data;
    while (!lm->closing && !lm->close_deferred) {
        pthread_mutex_lock(&lm->lock);
        lm_req *r = lm->ready;
        if (r != NULL) {
            lm->ready = r->qnext;
            if (lm->ready == NULL) lm->ready_tail = &lm->ready;
            r->queued = false;
        }
        pthread_mutex_unlock(&lm->lock);
        if (r == NULL) break;
        deliver(lm, r);
    }
    if (lm->close_deferred && !lm->closing) last_close(lm);
}

/* ---- loading and closing ----------------------------------------------------------------- */

static void free_parts(ctn_lm *lm) {
    for (struct lm_sess *ks = lm->sessions; ks != NULL;) {
        struct lm_sess *n = ks->next;
        free(ks->key);
        free(ks->toks);
        free(ks);
        ks = n;
    }
    for (struct lm_adapter *a = lm->adapters; a != NULL;) {
        struct lm_adapter *n = a->next;
        free(a->name);
        free(a->path);
        free(a);
        a = n;
    }
    ctn_gen_free(lm->e);
    ctn_model_free(lm->m);
    ctn_vocab_free(lm->v);
    ctn_gguf_free(lm->g);
    free(lm->chat_template);
    free(lm->bos_text);
    free(lm->eos_text);
    free(lm->path);
    pthread_mutex_destroy(&lm->lock);
    free(lm);
}

static void on_closed(uv_handle_t *h) {
    ctn_lm *lm = h->data;
    while (lm->reqs != NULL) {
        lm_req *r = lm->reqs;
        unlink_req(lm, r);
        free_req(r);
    }
    free_parts(lm);
}

static void unregister(ctn_lm *lm) {
    pthread_mutex_lock(&registry_lock);
    for (ctn_lm **pp = &registry; *pp != NULL; pp = &(*pp)->reg_next)
        if (*pp == lm) {
            *pp = lm->reg_next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
}

/*
 * Stops the engine (its free cancels what is left and joins the thread; the cancelled
 * requests' ends come through engine_on_done on this thread), delivers every request's
 * remaining text and on_done in submission order, and closes the async handle; on_closed
 * frees the memory.
 */
static void last_close(ctn_lm *lm) {
    lm->closing = true;
    ctn_gen_free(lm->e);
    lm->e = NULL;
    for (lm_req *r = lm->reqs; r != NULL; r = r->next) {
        if (r->delivered) continue;
        if (!r->done) {
            /* The engine ends every request it accepted; this is only a safety net. */
            r->done = true;
            r->finish = CTN_FINISH_CANCELLED;
        }
        deliver(lm, r);
    }
    lm->ready = NULL;
    lm->ready_tail = &lm->ready;
    uv_close((uv_handle_t *)&lm->async, on_closed);
}

ctn_lm *ctn_lm_ref(ctn_lm *lm) {
    if (lm == NULL) return NULL;
    pthread_mutex_lock(&registry_lock);
    lm->refs++;
    pthread_mutex_unlock(&registry_lock);
    return lm;
}

void ctn_lm_detach(ctn_lm *lm) {
    if (lm != NULL) unregister(lm);
}

void ctn_lm_close(ctn_lm *lm) {
    if (lm == NULL || lm->closing || lm->close_deferred || lm->refs <= 0) return;
    pthread_mutex_lock(&registry_lock);
    const int refs = --lm->refs;
    pthread_mutex_unlock(&registry_lock);
    if (refs > 0) return;
    unregister(lm);
    if (lm->in_cb > 0)
        lm->close_deferred = true; /* on_async finishes it when the callback returns */
    else
        last_close(lm);
}

/* The model settings, by the one table of limits (settings.h); 0 is each one's default. */
static int check_params(const ctn_lm_params *p, const char *path, char *err, size_t errcap) {
    const struct {
        const char *key;
        int64_t v;
    } f[] = {{"threads", p->threads},
             {"ctx", p->n_ctx},
             {"kv_memory", p->kv_memory_bytes},
             {"lora_budget", p->lora_budget_bytes}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].v == 0) continue;
        ctn_settings s;
        ctn_settings_init(&s);
        const ctn_setting_value v = {.kind = CTN_SET_INT, .i = f[i].v};
        char msg[256];
        if (ctn_settings_set(&s, f[i].key, &v, msg, sizeof msg) < 0) {
            ctn__errf(err, errcap, "%s: %s (0: the default)", path, msg);
            return CTN_EINVAL;
        }
    }
    return 0;
}

/* A model setting as the user gave it: "ctx 256", "kv_memory 1048576 bytes", "the default
 * ctx" (0). */
static void setting_words(char *buf, size_t cap, const char *key, int64_t v, bool bytes) {
    if (v == 0)
        snprintf(buf, cap, "the default %s", key);
    else
        snprintf(buf, cap, "%s %lld%s", key, (long long)v, bytes ? " bytes" : "");
}

/* Names the first setting of b that differs from the loaded model's a, in the words of
 * catena.model{...}, or returns 0. */
static int check_same(const ctn_lm_params *a, const ctn_lm_params *b, const char *path, char *err,
                      size_t errcap) {
    const struct {
        const char *key;
        int64_t had, asked;
        bool bytes;
    } f[] = {{"ctx", a->n_ctx, b->n_ctx, false},
             {"threads", a->threads, b->threads, false},
             {"kv_memory", a->kv_memory_bytes, b->kv_memory_bytes, true},
             {"lora_budget", a->lora_budget_bytes, b->lora_budget_bytes, true}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].had == f[i].asked) continue;
        char had[64], asked[64];
        setting_words(had, sizeof had, f[i].key, f[i].had, f[i].bytes);
        setting_words(asked, sizeof asked, f[i].key, f[i].asked, f[i].bytes);
        ctn__errf(err, errcap,
                  "%s was asked, but %s is already loaded with %s: one engine serves a model "
                  "file, so ask for the same settings, or catena.unload the loaded one first",
                  asked, path, had);
        return CTN_EINVAL;
    }
    return 0;
}

/* An engine error message, prefixed with the path unless it already names it. */
static void name_path(char *err, size_t errcap, const char *path, const char *what,
                      const char *msg) {
    if (strstr(msg, path) != NULL)
        ctn__errf(err, errcap, "%s%s", what, msg);
    else
        ctn__errf(err, errcap, "%s: %s%s", path, what, msg);
}

static char *token_text(const ctn_vocab *v, int32_t id) {
    if (id == CTN_TOKEN_NULL) return NULL;
    size_t n = 0;
    const char *s = ctn_vocab_text(v, id, &n);
    return s != NULL ? ctn__strndup(s, n) : NULL;
}

/* Loads the model files and starts the engine; lm->path is set. */
static int load(ctn_lm *lm, const char *path, char *err, size_t errcap) {
    char msg[1024];
    int rc = ctn_gguf_open(&lm->g, lm->path, msg, sizeof msg);
    if (rc < 0) {
        name_path(err, errcap, path, "", msg);
        return rc;
    }
    rc = ctn_vocab_load(&lm->v, lm->g, msg, sizeof msg);
    if (rc < 0) {
        name_path(err, errcap, path, "the vocabulary: ", msg);
        return rc;
    }
    rc = ctn_model_load(&lm->m, lm->g, msg, sizeof msg);
    if (rc < 0) {
        /* Its messages start with "model: ", which the model node's path says already. */
        name_path(err, errcap, path, "", strncmp(msg, "model: ", 7) == 0 ? msg + 7 : msg);
        return rc;
    }
    /* As `catena batch` makes its engine: 16-position KV blocks, 64 running sequences. */
    ctn_gen_params gp;
    memset(&gp, 0, sizeof gp);
    gp.fwd.n_threads = lm->params.threads;
    gp.fwd.n_ctx = lm->params.n_ctx;
    gp.fwd.kv_memory = (size_t)lm->params.kv_memory_bytes;
    gp.fwd.kv_block = 16;
    gp.lora_budget = (size_t)lm->params.lora_budget_bytes;
    rc = ctn_gen_new(&lm->e, lm->m, lm->v, &gp, msg, sizeof msg);
    if (rc < 0) {
        name_path(err, errcap, path, "the engine: ", msg);
        return rc;
    }
    const char *tpl = NULL;
    size_t n_tpl = 0;
    if (ctn_gguf_get_str(lm->g, "tokenizer.chat_template", &tpl, &n_tpl) == 0 &&
        (lm->chat_template = ctn__strndup(tpl, n_tpl)) == NULL)
        goto oom;
    const int32_t bos = ctn_vocab_bos(lm->v), eos = ctn_vocab_eos(lm->v);
    if (bos != CTN_TOKEN_NULL && (lm->bos_text = token_text(lm->v, bos)) == NULL) goto oom;
    if (eos != CTN_TOKEN_NULL && (lm->eos_text = token_text(lm->v, eos)) == NULL) goto oom;
    return 0;
oom:
    ctn__errf(err, errcap, "%s: out of memory", path);
    return CTN_ENOMEM;
}

int ctn_lm_open(uv_loop_t *loop, const char *path, const ctn_lm_params *p, ctn_lm **out, char *err,
                size_t errcap) {
    if (out != NULL) *out = NULL;
    if (loop == NULL || path == NULL || out == NULL || path[0] == '\0') {
        ctn__errf(err, errcap, "ctn_lm_open: %s",
                  loop == NULL  ? "no loop"
                  : out == NULL ? "no output pointer"
                                : "no model path");
        return CTN_EINVAL;
    }
    ctn_lm_params params;
    memset(&params, 0, sizeof params);
    if (p != NULL) params = *p;
    int rc = check_params(&params, path, err, errcap);
    if (rc < 0) return rc;
    char *canon = realpath(path, NULL);
    if (canon == NULL) {
        const int e = errno;
        ctn__errf(err, errcap, "%s: %s", path,
                  e == ENOENT   ? "no such file"
                  : e == ENOMEM ? "out of memory"
                                : strerror(e));
        return e == ENOENT ? CTN_ENOENT : e == ENOMEM ? CTN_ENOMEM : CTN_EIO;
    }

    /* The registry lock is held while loading, so that two loops opening one file at once
     * cannot both miss the registry; loading maps the file and does not take long. */
    pthread_mutex_lock(&registry_lock);
    for (ctn_lm *l = registry; l != NULL; l = l->reg_next) {
        if (l->loop != loop || strcmp(l->path, canon) != 0) continue;
        rc = check_same(&l->params, &params, path, err, errcap);
        if (rc == 0) {
            l->refs++;
            *out = l;
        }
        pthread_mutex_unlock(&registry_lock);
        free(canon);
        return rc;
    }
    ctn_lm *lm = ctn__calloc(1, sizeof *lm);
    if (lm == NULL) {
        pthread_mutex_unlock(&registry_lock);
        free(canon);
        ctn__errf(err, errcap, "%s: out of memory", path);
        return CTN_ENOMEM;
    }
    lm->loop = loop;
    lm->path = canon;
    lm->params = params;
    lm->refs = 1;
    lm->ready_tail = &lm->ready;
    lm->cur_step = -1;
    pthread_mutex_init(&lm->lock, NULL);
    rc = load(lm, path, err, errcap);
    if (rc == 0) {
        const int uvrc = uv_async_init(loop, &lm->async, on_async);
        if (uvrc < 0) {
            ctn__errf(err, errcap, "%s: cannot make the loop's async handle: %s", path,
                      uv_strerror(uvrc));
            rc = uvrc == UV_ENOMEM ? CTN_ENOMEM : CTN_EIO;
        }
    }
    if (rc < 0) {
        pthread_mutex_unlock(&registry_lock);
        free_parts(lm);
        return rc;
    }
    lm->async.data = lm;
    /* Idle, the model does not keep the loop running; a request in flight does. */
    uv_unref((uv_handle_t *)&lm->async);
    lm->reg_next = registry;
    registry = lm;
    pthread_mutex_unlock(&registry_lock);
    *out = lm;
    return 0;
}

/* ---- requests ---------------------------------------------------------------------------- */

ctn_lm_request ctn_lm_request_default(void) {
    ctn_lm_request r;
    memset(&r, 0, sizeof r);
    r.add_bos = -1;
    ctn_settings_init(&r.set);
    return r;
}

/* ---- LoRA adapters ------------------------------------------------------------------------- */

static struct lm_adapter *adapter_find(ctn_lm *lm, const char *name) {
    for (struct lm_adapter *a = lm->adapters; a != NULL; a = a->next)
        if (strcmp(a->name, name) == 0) return a;
    return NULL;
}

/* Loads ad's file into the engine (again); 0 or a CTN_E* code. */
static int adapter_register(ctn_lm *lm, struct lm_adapter *ad, char *err, size_t errcap) {
    ctn_lora *l = NULL;
    int rc = ctn_lora_load(lm->m, ad->path, ad->max_rank, &l, err, errcap);
    if (rc < 0) return rc;
    const int32_t id = ctn_gen_lora_add(lm->e, l, err, errcap);
    if (id < 0) return id;
    ad->id = id;
    return 0;
}

int ctn_lm_lora_load(ctn_lm *lm, const char *name, const char *path, int32_t max_rank, char *err,
                     size_t errcap) {
    if (lm == NULL || name == NULL || path == NULL || *name == 0 || max_rank < 0) {
        ctn__errf(err, errcap, "ctn_lm_lora_load: a model, a name and a path are needed");
        return CTN_EINVAL;
    }
    struct lm_adapter *ad = adapter_find(lm, name);
    if (ad != NULL) {
        if (strcmp(ad->path, path) != 0) {
            ctn__errf(err, errcap, "adapter '%s' is already loaded from %s (not %s)", name,
                      ad->path, path);
            return CTN_EINVAL;
        }
        return ctn_gen_lora_loaded(lm->e, ad->id) ? 0 : adapter_register(lm, ad, err, errcap);
    }
    ad = ctn__calloc(1, sizeof *ad);
    if (ad == NULL || (ad->name = ctn__strndup(name, strlen(name))) == NULL ||
        (ad->path = ctn__strndup(path, strlen(path))) == NULL) {
        if (ad != NULL) free(ad->name);
        free(ad);
        ctn__errf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    ad->max_rank = max_rank;
    const int rc = adapter_register(lm, ad, err, errcap);
    if (rc < 0) {
        free(ad->name);
        free(ad->path);
        free(ad);
        return rc;
    }
    ad->next = lm->adapters;
    lm->adapters = ad;
    return 0;
}

int ctn_lm_lora_unload(ctn_lm *lm, const char *name) {
    for (struct lm_adapter **p = &lm->adapters; *p != NULL; p = &(*p)->next)
        if (strcmp((*p)->name, name) == 0) {
            struct lm_adapter *ad = *p;
            *p = ad->next;
            ctn_gen_lora_remove(lm->e, ad->id); /* unknown when the budget unloaded it */
            free(ad->name);
            free(ad->path);
            free(ad);
            return 0;
        }
    return CTN_ENOENT;
}

/* Submits g for a new request r (filled in by the caller) and links it. */
static int submit(ctn_lm *lm, lm_req *r, ctn_gen_request *g, uint64_t *handle, char *err,
                  size_t errcap) {
    g->ud = r;
    g->on_token = engine_on_token;
    g->on_done = engine_on_done;
    g->on_embedding = r->embed ? engine_on_embedding : NULL;
    char msg[512];
    const int64_t id = ctn_gen_submit(lm->e, g, msg, sizeof msg);
    if (id < 0) {
        ctn__errf(err, errcap, "%s: %s", lm->path, msg);
        return (int)id;
    }
    /* The engine thread may already be calling back; it touches only the locked fields. */
    r->handle = (uint64_t)id;
    r->prev = lm->reqs_tail;
    if (lm->reqs_tail != NULL)
        lm->reqs_tail->next = r;
    else
        lm->reqs = r;
    lm->reqs_tail = r;
    if (lm->outstanding++ == 0) uv_ref((uv_handle_t *)&lm->async);
    if (handle != NULL) *handle = r->handle;
    return 0;
}

/* The prompt's token ids as the request asks for BOS (*ids malloc'd). */
static int session_join(ctn_lm *lm, const char *key, lm_req *q, ctn_gen_request *g,
                        const int32_t *ids, size_t n, char *err, size_t errcap);

static int prompt_ids(const ctn_lm *lm, const ctn_lm_request *r, int32_t **ids, size_t *n,
                      char *err, size_t errcap) {
    *ids = NULL;
    *n = 0;
    const int32_t bos = ctn_vocab_bos(lm->v);
    const bool want_bos = r->add_bos > 0 && bos != CTN_TOKEN_NULL;
    int32_t *t = NULL;
    size_t nt = 0;
    if (r->prompt != NULL) {
        /* The engine's own tokenization: BOS as the metadata says, special tokens parsed. */
        const int rc = ctn_tokenize(lm->v, r->prompt, r->prompt_len, r->add_bos < 0, true, &t, &nt);
        if (rc < 0) {
            ctn__errf(err, errcap, "%s: tokenizing the prompt: %s", lm->path, ctn_strerror(rc));
            return rc;
        }
        if (!want_bos || (nt > 0 && t[0] == bos)) {
            *ids = t;
            *n = nt;
            return 0;
        }
    } else {
        t = (int32_t *)r->ids;
        nt = r->n_ids;
    }
    const size_t extra = want_bos && !(nt > 0 && t[0] == bos) ? 1 : 0;
    int32_t *o = ctn__malloc((nt + extra) * sizeof *o);
    if (o == NULL) {
        if (r->prompt != NULL) free(t);
        ctn__errf(err, errcap, "%s: out of memory", lm->path);
        return CTN_ENOMEM;
    }
    if (extra) o[0] = bos;
    if (nt > 0) memcpy(o + extra, t, nt * sizeof *o);
    if (r->prompt != NULL) free(t);
    *ids = o;
    *n = nt + extra;
    return 0;
}

int ctn_lm_generate(ctn_lm *lm, const ctn_lm_request *r, const ctn_lm_callbacks *cb, void *ud,
                    uint64_t *handle, char *err, size_t errcap) {
    if (lm == NULL || r == NULL || lm->closing || lm->close_deferred) {
        ctn__errf(err, errcap, "ctn_lm_generate: %s",
                  lm == NULL  ? "no model"
                  : r == NULL ? "no request"
                              : "the model is being closed");
        return CTN_EINVAL;
    }
    if (r->session_id != 0 && r->session != NULL) {
        ctn__errf(err, errcap, "%s: a request continues a session id or a keyed session, not both",
                  lm->path);
        return CTN_EINVAL;
    }
    if (r->session != NULL && r->session[0] == '\0') {
        ctn__errf(err, errcap, "%s: the session key is empty", lm->path);
        return CTN_EINVAL;
    }
    /* A request on a session may bring no prompt: the session's history is one. */
    const bool no_prompt = (r->prompt == NULL && (r->ids == NULL || r->n_ids == 0)) ||
                           (r->prompt != NULL && r->prompt_len == 0);
    if (no_prompt && r->session_id == 0) {
        ctn__errf(err, errcap, "%s: the request has no prompt (neither text nor ids)", lm->path);
        return CTN_EINVAL;
    }
    if (r->set.n_stop > CTN_SETTINGS_MAX_STOP) {
        ctn__errf(err, errcap, "%s: n_stop is %zu (at most %d)", lm->path, r->set.n_stop,
                  CTN_SETTINGS_MAX_STOP);
        return CTN_EINVAL;
    }
    if (r->n_ids > (size_t)INT64_MAX / sizeof(int32_t)) {
        ctn__errf(err, errcap, "%s: n_ids %zu is too large", lm->path, r->n_ids);
        return CTN_EINVAL;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 0;
    if (!no_prompt) {
        rc = prompt_ids(lm, r, &ids, &n_ids, err, errcap);
        if (rc < 0) return rc;
    }
    lm_req *q = ctn__calloc(1, sizeof *q);
    if (q == NULL) {
        free(ids);
        ctn__errf(err, errcap, "%s: out of memory", lm->path);
        return CTN_ENOMEM;
    }
    q->lm = lm;
    if (cb != NULL) q->cb = *cb;
    q->ud = ud;
    ctn_gen_request g = ctn_gen_request_default();
    g.prompt_ids = ids;
    g.n_prompt_ids = (int64_t)n_ids;
    ctn_settings_apply(&r->set, &g);
    /* The engine checks the candidates; their scores need a place the engine thread can
     * copy them to without allocating. */
    g.score_ids = r->score_ids;
    g.n_score_ids = r->n_score_ids;
    if (r->n_score_ids > 0 && r->n_score_ids <= CTN_GEN_MAX_SCORE_IDS) {
        q->scores = ctn__malloc((size_t)r->n_score_ids * sizeof *q->scores);
        if (q->scores == NULL) {
            free(ids);
            free_req(q);
            ctn__errf(err, errcap, "%s: out of memory", lm->path);
            return CTN_ENOMEM;
        }
        q->n_score_ids = r->n_score_ids;
    }
    if (r->set.lora != NULL) {
        struct lm_adapter *ad = adapter_find(lm, r->set.lora);
        if (ad == NULL) {
            free(ids);
            free_req(q);
            ctn__errf(err, errcap, "adapter '%s' is not loaded for %s (load it first)",
                      r->set.lora, lm->path);
            return CTN_EINVAL;
        }
        if (!ctn_gen_lora_loaded(lm->e, ad->id) &&
            (rc = adapter_register(lm, ad, err, errcap)) < 0) {
            free(ids);
            free_req(q);
            return rc;
        }
        g.adapter = ad->id;
        g.adapter_scale = r->set.lora_scale;
    }
    if (n_ids == 0) {
        /* A text prompt that tokenized to nothing: the engine names that (on a session,
         * the session's history is the prompt). */
        g.prompt_ids = NULL;
        g.prompt = "";
    }
    g.session = r->session_id;
    if (r->grammar != NULL) g.grammar = r->grammar; /* else the settings' (applied above) */
    g.logprobs = r->logprobs;
    g.top_logprobs = r->top_logprobs;
    q->on_lp = r->on_logprobs;
    struct lm_sess *ks = NULL;
    if (r->session != NULL && (rc = session_join(lm, r->session, q, &g, ids, n_ids, err,
                                                 errcap)) < 0) {
        free(ids);
        free_req(q);
        return rc;
    }
    ks = q->ks;
    rc = submit(lm, q, &g, handle, err, errcap);
    free(ids);
    if (rc < 0) {
        if (ks != NULL) {
            ks->busy = false;
            session_reset(lm, ks);
        }
        free_req(q);
    }
    return rc;
}

/* ---- sessions ---------------------------------------------------------------------------- */

int64_t ctn_lm_session_new(ctn_lm *lm) {
    if (lm == NULL || lm->closing || lm->close_deferred || lm->e == NULL) return CTN_EINVAL;
    return ctn_gen_session_new(lm->e);
}

int ctn_lm_session_fork(ctn_lm *lm, int64_t session, int n, int64_t *children) {
    if (lm == NULL || lm->closing || lm->close_deferred || lm->e == NULL || children == NULL ||
        n < 1 || n > 64)
        return CTN_EINVAL;
    return ctn_gen_session_fork(lm->e, session, n, children);
}

int ctn_lm_session_close(ctn_lm *lm, int64_t session) {
    if (lm == NULL || lm->e == NULL) return CTN_ENOENT;
    return ctn_gen_session_close(lm->e, session);
}

int ctn_lm_session_count(const ctn_lm *lm) {
    return lm != NULL ? lm->n_sessions : 0;
}

/*
 * Puts request q (prompt ids[0..n), g to be submitted) on the keyed session `key`: when the
 * session holds a prefix of the prompt, g continues it with the rest; otherwise a new engine
 * session takes the whole prompt. A key whose session is busy leaves g without one. The
 * tokens the session will hold are copied into q. 0 or CTN_ENOMEM.
 */
static int session_join(ctn_lm *lm, const char *key, lm_req *q, ctn_gen_request *g,
                        const int32_t *ids, size_t n, char *err, size_t errcap) {
    struct lm_sess **pp = &lm->sessions, *ks = NULL;
    for (; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->key, key) == 0) {
            ks = *pp;
            *pp = ks->next; /* moved to the front below */
            lm->n_sessions--;
            break;
        }
    if (ks == NULL) {
        ks = ctn__calloc(1, sizeof *ks);
        if (ks == NULL || (ks->key = ctn__strndup(key, strlen(key))) == NULL) {
            free(ks);
            ctn__errf(err, errcap, "%s: out of memory", lm->path);
            return CTN_ENOMEM;
        }
    }
    ks->next = lm->sessions;
    lm->sessions = ks;
    lm->n_sessions++;
    /* Beyond the limit, the least recently used idle session goes. */
    if (lm->n_sessions > CTN_LM_MAX_SESSIONS) {
        struct lm_sess **victim = NULL;
        for (struct lm_sess **tp = &ks->next; *tp != NULL; tp = &(*tp)->next)
            if (!(*tp)->busy) victim = tp;
        if (victim != NULL) {
            struct lm_sess *t = *victim;
            *victim = t->next;
            session_reset(lm, t);
            free(t->key);
            free(t);
            lm->n_sessions--;
        }
    }
    /* A session keeps the adapter of its first request (gen.h): another one starts anew. */
    if (ks->sid > 0 && (ks->adapter != g->adapter || ks->scale != g->adapter_scale))
        session_reset(lm, ks);
    if (ks->busy) return 0;
    q->ks_cap = n + 64;
    q->ks_toks = ctn__malloc(q->ks_cap * sizeof *q->ks_toks);
    if (q->ks_toks == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", lm->path);
        return CTN_ENOMEM;
    }
    memcpy(q->ks_toks, ids, n * sizeof *ids);
    q->ks_n = n;
    if (ks->sid > 0 && ks->n_toks > 0 && ks->n_toks < n &&
        memcmp(ks->toks, ids, ks->n_toks * sizeof *ids) == 0) {
        g->prompt_ids = ids + ks->n_toks;
        g->n_prompt_ids = (int64_t)(n - ks->n_toks);
    } else {
        session_reset(lm, ks);
        const int64_t sid = ctn_gen_session_new(lm->e);
        if (sid < 0) {
            free(q->ks_toks);
            q->ks_toks = NULL;
            return 0; /* no session to be had: the request goes without one */
        }
        ks->sid = sid;
    }
    g->session = ks->sid;
    ks->adapter = g->adapter;
    ks->scale = g->adapter_scale;
    ks->busy = true;
    q->ks = ks;
    return 0;
}

int ctn_lm_embed(ctn_lm *lm, const char *text, size_t len, int pooling,
                 void (*on_done)(void *ud, const float *vec, int dim, int err, const char *msg),
                 void *ud, uint64_t *handle, char *err, size_t errcap) {
    if (lm == NULL || lm->closing || lm->close_deferred) {
        ctn__errf(err, errcap, "ctn_lm_embed: %s",
                  lm == NULL ? "no model" : "the model is being closed");
        return CTN_EINVAL;
    }
    if (text == NULL || len == 0) {
        ctn__errf(err, errcap, "%s: nothing to embed (empty text)", lm->path);
        return CTN_EINVAL;
    }
    if (pooling != CTN_POOL_MEAN && pooling != CTN_POOL_LAST && pooling != CTN_POOL_CLS) {
        ctn__errf(err, errcap, "%s: pooling %d is not mean (%d), last (%d) or cls (%d)", lm->path,
                  pooling, CTN_POOL_MEAN, CTN_POOL_LAST, CTN_POOL_CLS);
        return CTN_EINVAL;
    }
    ctn_lm_request r = ctn_lm_request_default();
    r.prompt = text;
    r.prompt_len = len;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = prompt_ids(lm, &r, &ids, &n_ids, err, errcap);
    if (rc < 0) return rc;
    lm_req *q = ctn__calloc(1, sizeof *q);
    if (q == NULL) {
        free(ids);
        ctn__errf(err, errcap, "%s: out of memory", lm->path);
        return CTN_ENOMEM;
    }
    q->lm = lm;
    q->embed = true;
    q->on_embd = on_done;
    q->ud = ud;
    ctn_gen_request g = ctn_gen_request_default();
    g.prompt_ids = ids;
    g.n_prompt_ids = (int64_t)n_ids;
    g.pooling = pooling;
    if (n_ids == 0) {
        g.prompt_ids = NULL;
        g.prompt = "";
    }
    rc = submit(lm, q, &g, handle, err, errcap);
    free(ids);
    if (rc < 0) free_req(q);
    return rc;
}

int ctn_lm_cancel(ctn_lm *lm, uint64_t handle) {
    if (lm == NULL) return CTN_ENOENT;
    lm_req *r = lm->reqs;
    while (r != NULL && (r->handle != handle || r->delivered))
        r = r->next;
    if (r == NULL) return CTN_ENOENT;
    if (r->cancelled || lm->e == NULL) return 0;
    const int rc = ctn_gen_cancel(lm->e, (int64_t)handle);
    /* CTN_ENOENT: the engine has ended it already; its on_done is on the way. */
    if (rc < 0 && rc != CTN_ENOENT) return rc;
    r->cancelled = true;
    return 0;
}

/* ---- accessors and statistics ------------------------------------------------------------ */

const char *ctn_lm_chat_template(const ctn_lm *lm) {
    return lm != NULL ? lm->chat_template : NULL;
}

const char *ctn_lm_bos_text(const ctn_lm *lm) {
    return lm != NULL ? lm->bos_text : NULL;
}

const char *ctn_lm_eos_text(const ctn_lm *lm) {
    return lm != NULL ? lm->eos_text : NULL;
}

const char *ctn_lm_path(const ctn_lm *lm) {
    return lm != NULL ? lm->path : NULL;
}

const char *ctn_lm_arch(const ctn_lm *lm) { return lm->m->arch->name; }

int ctn_lm_embed_dim(const ctn_lm *lm) { return (int)lm->m->hp.n_embd; }

int ctn_lm_pooling(const ctn_lm *lm) {
    char key[96];
    int64_t t = 0;
    snprintf(key, sizeof key, "%s.pooling_type", lm->m->arch->name);
    if (ctn_gguf_get_int(lm->g, key, &t) == 0) {
        if (t == 2) return CTN_POOL_CLS;
        if (t == 3) return CTN_POOL_LAST;
    }
    return CTN_POOL_MEAN;
}

const struct ctn_vocab *ctn_lm_vocab(const ctn_lm *lm) { return lm->v; }

void ctn_lm_get_stats(const ctn_lm *lm, ctn_lm_stats *out) {
    memset(out, 0, sizeof *out);
    if (lm == NULL) return;
    if (lm->e != NULL) ctn_gen_get_stats(lm->e, &out->engine);
    /* The lock is the object's own; the const is the caller's promise not to change it. */
    pthread_mutex_t *lock = (pthread_mutex_t *)&lm->lock;
    pthread_mutex_lock(lock);
    memcpy(out->steps, lm->hist, sizeof out->steps);
    /* The step the engine is in (or ran last) counts as it stands. */
    if (lm->cur_count > 0) out->steps[bucket_of(lm->cur_count)]++;
    out->max_batch = lm->max_batch;
    pthread_mutex_unlock(lock);
}
