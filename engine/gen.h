/*
 * The shared generation engine: one per loaded base model. Requests from any thread (a
 * prompt as text or token ids, sampling parameters, stop strings, a token limit) are
 * turned into one forward pass per step over every scheduled token of every running
 * sequence (continuous batching over the paged KV cache, as vLLM does), and their tokens
 * stream back through callbacks.
 *
 *     ctn_gen_params p = {0};                       // defaults: see the fields
 *     ctn_gen *e;
 *     if (ctn_gen_new(&e, model, vocab, &p, err, sizeof err) < 0) ...
 *     ctn_gen_request r = ctn_gen_request_default();
 *     r.prompt = "Once upon a time";
 *     r.max_tokens = 60;
 *     r.on_token = print_piece;                     // engine thread: a ctn_gen_token
 *     r.on_done = finished;                         // engine thread, last call
 *     int64_t id = ctn_gen_submit(e, &r, err, sizeof err);   // > 0, or a CTN_E* code
 *     ...
 *     ctn_gen_cancel(e, id);                        // any time; its blocks go back at once
 *     ctn_gen_free(e);                              // cancels what is left, joins the thread
 *
 * Scheduling (each step, on the engine thread; FCFS):
 *   1. every running sequence that has its prompt computed decodes one token;
 *   2. running sequences still in their prompt get chunks of it (chunked prefill), in
 *      admission order, while the step's token budget (step_tokens, 512) lasts;
 *   3. waiting requests are admitted in arrival order while the budget lasts, fewer than
 *      max_running run, and the KV pool keeps its free-block watermark after their first
 *      chunk; the head of the queue is never skipped, so nothing starves.
 * When a sequence needs a KV block and the pool has none, the most recently admitted
 * running sequence is preempted: its blocks go back, and it returns to the waiting queue
 * (in its arrival place) to recompute its prompt and generated tokens later. Its sampler
 * keeps its state, so what it generates does not change.
 *
 * Prefix caching: full KV blocks are registered under a hash of the previous block's hash and
 * their tokens (kvcache.h); an admitted request takes every cached block of its prompt's
 * prefix instead of computing it (all but the last prompt token, whose logits it needs).
 * A request whose next uncached block is being computed right now by a running sequence's
 * prefill waits for it (the shared prefix is computed once), and a preempted sequence finds
 * its own blocks again unless they were evicted.
 *
 * Batch invariance: the kernels compute each (weight row, token) product with the same
 * arithmetic whatever the batch (kern.h), and attention runs per token over its own
 * sequence, so a request's logits, and with the same seed its tokens, are the same alone,
 * in any batch, after preemption, or in chunks of any size.
 *
 * Threads: with params.manual false (the default) the engine runs its own thread, which
 * also drives the forward pass's thread pool. Callbacks run on that thread and must not
 * call ctn_gen_free; they may submit and cancel. With manual true there is no thread: the
 * caller runs ctn_gen_step (tests of the scheduler, and single-threaded programs).
 */
#ifndef CTN_GEN_H
#define CTN_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "lora.h"
#include "model.h"
#include "sampler.h"
#include "vocab.h"

typedef struct ctn_gen ctn_gen;

/* The most candidate ids one request may score (ctn_gen_request.score_ids). */
#define CTN_GEN_MAX_SCORE_IDS 64
/* The most alternatives a generated token may report (ctn_gen_request.top_logprobs), as in
 * OpenAI's API and vLLM's default max_logprobs. */
#define CTN_GEN_MAX_TOP_LOGPROBS 20

typedef struct {
    ctn_fwd_params fwd;  /* threads, context, KV memory (0: room for max_running full
                            contexts, at most 1 GiB), KV type and block size; n_batch is
                            set from step_tokens */
    int64_t step_tokens; /* tokens per step (decodes and prefill chunks); 0: 512 */
    int max_running;     /* sequences running at once; 0: 64 */
    /* Fraction of the KV blocks an admission must leave free; < 0: none; 0: 0.01. */
    double watermark;
    bool manual;          /* no engine thread: the caller runs ctn_gen_step */
    bool no_prefix_cache; /* compute every prompt in full (the cache is on by default) */
    /* Bytes the registered LoRA adapters may hold (0: no limit). Adding one beyond it
     * unloads idle adapters (no request uses them), least recently used first. */
    size_t lora_budget;
    /* Seconds the request at the head of the queue may wait for KV blocks (or for the
     * memory of its block table) while nothing runs that could give any back; then it
     * fails with CTN_ENOMEM. 0: 5 s; < 0: wait for ever. Idle sessions' KV is given up
     * first (their history stays and is recomputed, or found in the prefix cache). */
    double admit_timeout_s;
} ctn_gen_params;

typedef enum {
    CTN_FINISH_EOS = 1,   /* an end-of-generation token (not part of the output), or a
                             grammar that can take nothing more */
    CTN_FINISH_STOP,      /* a stop string (not part of the output) */
    CTN_FINISH_LENGTH,    /* max_tokens, or the context is full */
    CTN_FINISH_CANCELLED, /* ctn_gen_cancel, or the engine was freed */
    CTN_FINISH_ERROR,     /* see error */
} ctn_finish;

/* Text of a finish reason, as OpenAI names them: "stop" (EOS or a stop string), "length",
 * "cancelled", "error". */
const char *ctn_finish_name(ctn_finish f);

typedef struct {
    ctn_finish finish;
    int code; /* CTN_FINISH_ERROR: the CTN_E* code (CTN_ENOMEM, CTN_EINVAL, CTN_ERANGE,
                 ...); 0 otherwise */
    int64_t step; /* the engine step the request ended in (0: before any step) */
    int64_t prompt_tokens;
    int64_t completion_tokens; /* tokens passed to on_token */
    int64_t cached_tokens;     /* prompt tokens whose KV was found computed when it was
                                  first admitted (the prefix cache, a session's history) */
    int64_t preemptions;       /* times the sequence was preempted and recomputed */
    double ttft_s;             /* submission to first token (0 without one) */
    double total_s;            /* submission to the end */
    const char *error;         /* CTN_FINISH_ERROR: why (valid during on_done) */
    const char *text;          /* held-back text released at the end (may be empty; valid
                                  during on_done) */
    size_t text_len;
    /* (n_scores) the log-probabilities of the request's score_ids at the position after its
     * prompt, in their order (valid during on_done); NULL and 0 when it asked for none or
     * ended before its prompt was computed. */
    const double *scores;
    int n_scores;
} ctn_gen_result;

/* A token and its log-probability (ctn_gen_token.top). */
typedef struct {
    int32_t token;
    double logprob;
} ctn_gen_logprob;

/* One generated token, as on_token sees it (valid during the call). */
typedef struct {
    int64_t id;       /* the request */
    int64_t step;     /* the engine step that sampled it: steps count from 1, and every
                         token of one step carries the same number (ctn_gen_stats.steps
                         once the step is done) */
    int32_t token;
    const char *text; /* the text it completes (stop strings held back; may be empty; NULL
                         when the engine has no vocabulary) */
    size_t len;
    /* With request.logprobs (else false, 0, NULL, 0): the token's log-probability and the
     * request's top_logprobs most likely tokens at its position, most likely first (ties:
     * lowest id first), the sampled one among them only if it is one of them. Tokens a
     * grammar forbids have probability 0 and are never listed, so n_top may be smaller. */
    bool has_logprob;
    double logprob;
    const ctn_gen_logprob *top; /* (n_top) */
    int n_top;
} ctn_gen_token;

typedef enum { CTN_POOL_NONE, CTN_POOL_MEAN, CTN_POOL_LAST, CTN_POOL_CLS } ctn_pooling;

typedef struct {
    const char *prompt;        /* text, tokenized with BOS as the model says; or NULL */
    const int32_t *prompt_ids; /* ... the prompt as token ids instead (copied) */
    int64_t n_prompt_ids;
    ctn_sampler_params sampling; /* ctn_sampler_params_default() is llama.cpp's CLI's */
    int64_t max_tokens;          /* < 0: until EOS, a stop string or the context; 0: prompt
                                    only (fills a session) */
    const char *const *stop;     /* stop strings (copied); need a vocabulary */
    size_t n_stop;
    bool ignore_eos;
    /* A session (ctn_gen_session_new) whose history the request continues: the model sees
     * the session's tokens, then this prompt (which may then be empty; BOS only on a
     * session's first request), and the session keeps everything, with its KV blocks, when
     * the request ends (not after an error, which empties it). Requests on one session run
     * one after the other in submission order. 0: none. */
    int64_t session;
    /* The LoRA adapter the request runs with: an id from ctn_gen_lora_add (0: the base
     * model), and its scale (ctn_gen_request_default: 1; 0: the base model). The pair is
     * part of the prefix-cache block hashes, so KV computed with one adapter and scale is
     * never reused for another. A session keeps the adapter and scale of its first request:
     * a later request with others is refused. */
    int32_t adapter;
    float adapter_scale;
    /* Embeddings instead of tokens: the prompt's final hidden states (after the output
     * norm) pooled over its tokens (CTN_POOL_MEAN), the last token's (LAST) or the first's
     * (CLS), L2-normalised unless embd_raw (llama.cpp's default normalisation), passed to
     * on_embedding before on_done (finish "stop", no tokens). Batched with the rest; no
     * session. */
    int pooling; /* ctn_pooling; CTN_POOL_NONE: generate */
    bool embd_raw;
    void (*on_embedding)(void *ud, int64_t id, const float *v, int64_t n);
    /* Scoring: the log-probabilities of these n_score_ids token ids (copied; at most
     * CTN_GEN_MAX_SCORE_IDS, each inside the vocabulary) as the next token after the prompt
     * (a session's history included), from the model's own distribution at that position:
     * the log-softmax over the whole vocabulary, in double, before sampling parameters or
     * penalties touch it. They come in ctn_gen_result.scores. With max_tokens 0 the request
     * computes its prompt, scores it and ends (finish "length") without generating; a prompt
     * found whole in the prefix cache or a session has its last position computed again for
     * the logits. Batched with the rest; not with pooling. */
    const int32_t *score_ids;
    int n_score_ids;
    /* A GBNF grammar (grammar.h) the generated tokens must follow, or NULL. The text is
     * compiled at submission (errors come back as CTN_EINVAL with the line, column and rule
     * in err) and the compiled form is shared with other requests that give the same text.
     * Each step the sequence's logits row gets -inf on every token the grammar cannot take
     * next, before penalties and the sampling chain; other sequences in the batch are not
     * touched. End of generation is allowed only where the grammar is complete, and when
     * it can take nothing more the request ends there (finish "stop", as for EOS). The
     * streamed text is the tokens' pieces as they are (no clean-up of spaces before
     * punctuation), so it is exactly what the grammar matched. A session's history and the
     * prompt are not matched: the grammar starts at the first generated token. Needs a
     * vocabulary; not with pooling. */
    const char *grammar;
    /* Log-probabilities of the generated tokens (ctn_gen_token.logprob, .top), as vLLM's
     * default logprobs_mode "raw_logprobs" gives them: the log-softmax, in double, of the
     * model's logits row at each position over the whole vocabulary, before penalties,
     * top-k/top-p/min-p and temperature touch it, so they do not depend on the sampling
     * parameters (a grammar's mask is applied first, as vLLM applies the structured-output
     * bitmask before its sampler: forbidden tokens get probability 0). top_logprobs (0 to
     * CTN_GEN_MAX_TOP_LOGPROBS, only with logprobs) asks for the most likely alternatives
     * too. Off, nothing is computed; on, per token, the log-sum-exp of the row (the score_ids'
     * code: its maximum, then the sum of exp in double), a pass for the top alternatives (a
     * bounded insertion, not a sort) and a copy of the row. Batch-invariant as the logits
     * are. (vLLM: --logprobs-mode, default raw_logprobs, "the values before applying any
     * logit processors".) */
    bool logprobs;
    int top_logprobs;
    /* A generated token (ctn_gen_token: request, step, id and text). Engine thread. */
    void (*on_token)(void *ud, const ctn_gen_token *t);
    /* The end of the request: always called once, last. Engine thread (or the caller of
     * ctn_gen_cancel / ctn_gen_free for a request that never started). */
    void (*on_done)(void *ud, int64_t id, const ctn_gen_result *res);
    void *ud;
} ctn_gen_request;

/* Greedy sampling, no limit, no stop strings, no callbacks, the base model (adapter 0,
 * scale 1). */
ctn_gen_request ctn_gen_request_default(void);

/*
 * LoRA adapters (lora.h) registered with the engine; requests name them by id. Any thread.
 * ctn_gen_lora_add checks a against the model (layers, every matrix's shape) and takes it
 * over, also when it fails (then it is freed); it returns the id (> 0; ids are never
 * reused) or a CTN_E* code with the reason in err. Beyond params.lora_budget it first
 * unloads idle adapters, least recently used first (their ids become unknown; a caller
 * that keeps adapters by name loads them again); when that is not enough it fails with
 * CTN_ENOMEM. ctn_gen_lora_remove stops new requests from using the adapter; it is freed
 * when the last request that uses it ends (0, or CTN_ENOENT for an unknown or removed id).
 * ctn_gen_lora_loaded says whether an id is still usable.
 */
int32_t ctn_gen_lora_add(ctn_gen *e, ctn_lora *a, char *err, size_t errlen);
int ctn_gen_lora_remove(ctn_gen *e, int32_t id);
bool ctn_gen_lora_loaded(ctn_gen *e, int32_t id);

/*
 * An engine for model m and vocabulary v (both borrowed, must outlive it; v may be NULL:
 * then prompts are ids only and there is no text, no stop strings and no EOS). 0, or
 * CTN_EINVAL / CTN_ENOTSUP / CTN_ENOMEM with the reason in err.
 */
int ctn_gen_new(ctn_gen **out, const ctn_model *m, const ctn_vocab *v, const ctn_gen_params *p,
                char *err, size_t errlen);
/* Cancels every request (each gets on_done with CTN_FINISH_CANCELLED), stops the thread. */
void ctn_gen_free(ctn_gen *e);

/*
 * Queues a request. Returns its id (> 0), or CTN_EINVAL (no prompt, an empty one, a prompt
 * that fills the context, bad sampling parameters or stop strings, stop strings without a
 * vocabulary, a grammar that does not compile or comes without a vocabulary, score ids outside the vocabulary or more than CTN_GEN_MAX_SCORE_IDS of them,
 * scores with pooling, top_logprobs outside 0 to CTN_GEN_MAX_TOP_LOGPROBS or without logprobs,
 * logprobs with pooling), CTN_ENOMEM (including a prompt that needs more KV blocks than the
 * whole pool) with the reason in err; then no callback is made.
 */
int64_t ctn_gen_submit(ctn_gen *e, const ctn_gen_request *r, char *err, size_t errlen);
/* Cancels a request: it finishes with CTN_FINISH_CANCELLED at the next step boundary and
 * its KV blocks return to the pool. 0 (also for a request that has finished already, when
 * it does nothing), CTN_ENOENT for an id this engine never returned, or CTN_ENOMEM. */
int ctn_gen_cancel(ctn_gen *e, int64_t id);

/*
 * Sessions. A session keeps a token history and its KV blocks between requests, so a chat
 * does not recompute its past. Operations are queued and take effect in submission order
 * with the session's requests: a fork or close waits for the requests submitted before it.
 *
 * ctn_gen_session_new: a new, empty session; its id (> 0) or CTN_ENOMEM.
 * ctn_gen_session_fork: n new sessions (ids into children) that start as copies of the
 *   session's history, sharing its KV blocks copy-on-write (n > 1 sampling, variants of one
 *   prompt, beams). 0, CTN_ENOENT (unknown or closed session), CTN_EINVAL (n < 1), CTN_ENOMEM.
 * ctn_gen_session_close: forgets the session once its requests are done; its blocks return.
 *   Later requests on it are refused. 0 or CTN_ENOENT.
 * A prompt-only request (max_tokens 0) fills a session without generating: then forks of it
 * each generate from the same computed prompt.
 */
int64_t ctn_gen_session_new(ctn_gen *e);
int ctn_gen_session_fork(ctn_gen *e, int64_t session, int n, int64_t *children);
int ctn_gen_session_close(ctn_gen *e, int64_t session);

/* What one step scheduled (manual mode: for tests of the scheduler). */
typedef struct {
    int n_seqs;            /* sequences in the step */
    int64_t n_tokens;      /* tokens computed */
    int n_decode;          /* of which single-token decodes */
    int n_admitted;        /* requests admitted this step */
    int n_preempted;       /* sequences preempted this step */
    const int64_t *ids;    /* (n_seqs) request ids, in batch order (valid until the next step) */
    const int64_t *tokens; /* (n_seqs) tokens each computed */
} ctn_gen_step_info;

/*
 * Manual mode: runs one step (cancellations, admission, one forward pass, sampling and the
 * callbacks). Returns the number of tokens computed (0: nothing to do), or a CTN_E* code
 * when the forward pass failed (every sequence in the step then finished with an error).
 * info may be NULL.
 */
int64_t ctn_gen_step(ctn_gen *e, ctn_gen_step_info *info);

typedef struct {
    int64_t n_ctx;         /* positions per sequence */
    int32_t kv_block_size; /* positions per KV block */
    int threads;           /* of the forward pass */
    int running, waiting;
    int32_t kv_blocks, kv_free; /* blocks in the pool, free ones */
    int64_t steps, tokens;      /* steps run, tokens computed in them */
    int64_t prefill_tokens, decode_tokens;
    int64_t finished, cancelled, preemptions;
    double ttft_mean_s; /* mean time to first token of finished requests */
    double itl_mean_s;  /* mean time between a request's tokens */
    /* KV positions filled / held by allocated blocks, summed over the steps (after each
     * step's forward pass): 1 - used / alloc is the fraction of KV memory wasted. */
    int64_t kv_slots_used, kv_slots_alloc;
    /* Prefix cache, in blocks: registered blocks (held or evictable), blocks of prompts
     * found in the cache / not found at admission, cached blocks reused for others. */
    int32_t kv_cached;
    int sessions;              /* open sessions */
    int32_t kv_session_blocks; /* blocks held by idle sessions */
    int64_t prefix_hits, prefix_misses, prefix_evictions;
    int32_t loras;     /* adapters registered (removed ones still in use included) */
    size_t lora_bytes; /* their A and B matrices */
} ctn_gen_stats;

void ctn_gen_get_stats(ctn_gen *e, ctn_gen_stats *out);

#endif
