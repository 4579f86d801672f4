/*
 * The model bridge: a GGUF model loaded once per (libuv loop, file) and shared by every
 * model node of every chain on that loop. Requests go to the model's generation engine
 * (engine/gen.h), which batches them on its own thread; their text, embeddings and ends
 * come back on the loop thread.
 *
 *     ctn_lm *lm;
 *     ctn_lm_params p = {0};                          // the defaults of `catena batch`
 *     if (ctn_lm_open(loop, "model.gguf", &p, &lm, err, sizeof err) < 0) ...
 *     ctn_lm_request r = ctn_lm_request_default();    // greedy, no limit
 *     r.prompt = "Once upon a time";
 *     r.prompt_len = strlen(r.prompt);
 *     r.set.max_tokens = 60;
 *     ctn_lm_callbacks cb = {on_text, on_done};       // both on the loop thread
 *     uint64_t h;
 *     if (ctn_lm_generate(lm, &r, &cb, ud, &h, err, sizeof err) < 0) ...
 *     uv_run(loop, UV_RUN_DEFAULT);                   // ... on_text, on_text, on_done
 *     ctn_lm_close(lm);
 *     uv_run(loop, UV_RUN_DEFAULT);                   // lets the close finish (see below)
 *
 * Threads. Every function here is called on the loop's thread (ctn_lm_get_stats and the
 * accessors may be called from any thread while the object is open). The engine thread
 * never calls the caller: it appends to a locked queue and wakes the loop with uv_async_send,
 * and the loop drains the queue; as libuv coalesces wake-ups, one drain may deliver many
 * pieces of many requests.
 *
 * Callbacks. For every successful ctn_lm_generate or ctn_lm_embed, on_done is called exactly
 * once, on the loop thread, and nothing of that request is called after it. A call that fails
 * calls nothing. Callbacks may call ctn_lm_generate, ctn_lm_embed, ctn_lm_cancel and
 * ctn_lm_close on the same object.
 *
 * Closing. ctn_lm_close drops a reference. The last one cancels every outstanding request,
 * stops the engine (joining its thread), and before it returns delivers on_done to each request
 * that had not had it yet (with the engine's finish reason, normally "cancelled"; text the
 * engine had produced and the loop not yet delivered is delivered first). No callback of the
 * object is made after ctn_lm_close returns. Its uv_async handle is then closed with uv_close,
 * and the memory is freed in the close callback: the caller must let the loop run once more
 * (uv_run until it returns, or with UV_RUN_NOWAIT until the handle is gone) before
 * uv_loop_close, which otherwise fails with UV_EBUSY and leaks the object. Called from inside
 * one of the object's own callbacks, the last close is carried out when that callback
 * returns, and the requests still outstanding get their on_done then, before the loop moves
 * on.
 */
#ifndef CTN_LM_H
#define CTN_LM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "gen.h"
#include "settings.h"

typedef struct ctn_lm ctn_lm;

/* How the engine is made. A field at 0 takes the default that `catena batch` uses: threads
 * the CPUs this process may use, n_ctx the model's (at most 4096), KV memory room for 64
 * full contexts (at most 1 GiB). */
typedef struct {
    int threads;
    int64_t kv_memory_bytes;
    int n_ctx;
    int64_t lora_budget_bytes; /* memory for LoRA adapters (0: no limit); idle ones beyond it
                                  are unloaded least recently used first, and loaded again
                                  from their path when a request names them */
} ctn_lm_params;

/*
 * Loads the model at path for loop, or returns the object already loaded there from the same
 * file (same canonical path) with one more reference; each successful open is paired with one
 * ctn_lm_close. A second open whose params differ from the first's is refused with
 * CTN_EINVAL naming the parameter (a model is loaded once, with one configuration). p may be
 * NULL (all defaults). Errors (CTN_ENOENT for a missing file, CTN_EFORMAT / CTN_EIO for a
 * file that is not a usable GGUF model, CTN_ENOMEM) name the path in err.
 */
int ctn_lm_open(uv_loop_t *loop, const char *path, const ctn_lm_params *p, ctn_lm **out, char *err,
                size_t errcap);
/* Drops a reference; the last one shuts the model down as described at the top. NULL is a
 * no-op. */
void ctn_lm_close(ctn_lm *lm);
/* One more reference to an open lm (for a node that keeps it), paired with a ctn_lm_close;
 * returns lm. NULL stays NULL. */
ctn_lm *ctn_lm_ref(ctn_lm *lm);
/* Takes lm out of its loop's registry: the next ctn_lm_open of its path starts a new engine
 * with the settings it asks for, while lm goes on serving its holders until their last
 * ctn_lm_close. Idempotent; NULL is a no-op. */
void ctn_lm_detach(ctn_lm *lm);

/* ---- generation -------------------------------------------------------------------------- */

struct ctn_lm_token_logprobs;

/*
 * A generation request. The prompt is text (prompt_len bytes, need not be NUL-terminated)
 * or, when prompt is NULL, token ids. Everything is copied by ctn_lm_generate.
 */
typedef struct {
    const char *prompt; /* UTF-8 text, tokenized as the engine does (special tokens parsed) */
    size_t prompt_len;
    const int32_t *ids; /* ... or the prompt as token ids */
    size_t n_ids;
    /* BOS before the prompt: < 0 (the default) as the model's metadata says for text and
     * never for ids (they are taken as given); 0 never; 1 always (once). */
    int add_bos;
    /* Sampling, max_tokens, stop strings, ignore_eos, and the adapter (set.lora: the name
     * of one loaded with ctn_lm_lora_load, or NULL; set.lora_scale), as the one settings
     * validator (settings.h, docs/settings.md) checked them; the strings are copied. */
    ctn_settings set;
    /* Sessions (below). session_id: an engine session of this object (ctn_lm_session_new or
     * _fork) whose history the request continues; the prompt may then be empty, and BOS is
     * added as add_bos says (0 for a session that has its BOS already). session: a
     * conversation's key (NUL-terminated, copied): the object keeps one engine session per
     * key. 0 / NULL: none; not both. */
    int64_t session_id;
    const char *session;
    /* A GBNF grammar the generated tokens follow (gen.h: grammar; compiled when submitted, so
     * a bad one is CTN_EINVAL naming its line and column), or NULL. */
    const char *grammar;
    /* Candidate token ids whose log-probabilities as the next token after the prompt come
     * in ctn_lm_result.scores (gen.h: score_ids; copied; at most CTN_GEN_MAX_SCORE_IDS, each
     * in the vocabulary). With set.max_tokens 0 nothing is generated. */
    const int32_t *score_ids;
    int n_score_ids;
    /* Log-probabilities of the generated tokens (gen.h: logprobs, top_logprobs; the raw
     * model's distribution, as vLLM's default): with logprobs, on_logprobs (loop thread, ud
     * as for the callbacks, may be NULL) gets each generated token in order, with
     * top_logprobs (0 to CTN_GEN_MAX_TOP_LOGPROBS) alternatives, before the on_text that
     * carries the token's text (which may come later: a character cut between tokens, a stop
     * string held back) and before on_done. An end-of-generation token is not one. */
    bool logprobs;
    int top_logprobs;
    void (*on_logprobs)(void *ud, const struct ctn_lm_token_logprobs *t);
} ctn_lm_request;

/* A token and its log-probability (ctn_lm_token_logprobs). Pointers are borrowed: valid
 * only during the call. */
typedef struct {
    int32_t id;
    double logprob;    /* natural log; finite */
    const char *bytes; /* the bytes the token decodes to on its own (control tokens as
                          their text), which may be part of a UTF-8 character */
    size_t n_bytes;
    const char *text; /* the same as valid UTF-8, NUL-terminated: a byte sequence that is
                         not a whole character becomes one U+FFFD (as Python's
                         errors="replace", which vLLM's token texts go through), and so
                         does a NUL byte */
} ctn_lm_logprob;

/* One generated token's log-probability and its most likely alternatives, most likely
 * first (the token itself among them only if it is one of them). */
typedef struct ctn_lm_token_logprobs {
    ctn_lm_logprob token;
    const ctn_lm_logprob *top; /* (n_top) */
    int n_top;
} ctn_lm_token_logprobs;

/* Greedy, BOS as the model says, no token limit, no stop strings; the other sampling fields
 * at llama.cpp's CLI defaults (top_k 40, top_p 0.95, min_p 0.05), which matter once
 * temperature > 0 (ctn_settings_init). */
ctn_lm_request ctn_lm_request_default(void);

/* How a request ended. Pointers are borrowed: valid only during on_done. */
typedef struct {
    ctn_finish finish;       /* CTN_FINISH_*; for a request cut short by close: CANCELLED */
    const char *finish_name; /* ctn_finish_name(finish): "stop", "length", "cancelled", ... */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t cached_tokens; /* prompt tokens found in the prefix cache or a session */
    const char *text; /* everything passed to on_text, concatenated, NUL-terminated */
    size_t text_len;
    int error;           /* 0, or a CTN_E* code when finish is CTN_FINISH_ERROR */
    const char *message; /* "" or why it failed */
    /* (n_scores) the log-probabilities of the request's score_ids, in their order; NULL
     * and 0 when it asked for none or failed before its prompt was computed */
    const double *scores;
    int n_scores;
} ctn_lm_result;

typedef struct {
    /* A piece of the output: one or more whole UTF-8 characters (bytes the model produced
     * that are not valid UTF-8 come as U+FFFD), borrowed for the call. May be NULL. */
    void (*on_text)(void *ud, const char *piece, size_t len);
    void (*on_done)(void *ud, const ctn_lm_result *r);
} ctn_lm_callbacks;

/*
 * Submits a request; *handle (may be NULL) names it for ctn_lm_cancel. 0, or CTN_EINVAL (no
 * prompt, an empty one, bad sampling parameters or stop strings, a closing object, a prompt
 * that fills the context), CTN_ENOMEM, with the reason in err; then nothing is called.
 * cb is copied; ud is passed back to every callback.
 */
int ctn_lm_generate(ctn_lm *lm, const ctn_lm_request *r, const ctn_lm_callbacks *cb, void *ud,
                    uint64_t *handle, char *err, size_t errcap);

/*
 * Cancels a request of this object (generation or embedding). After it no on_text comes;
 * on_done comes later, on the loop thread, with "cancelled" (or the reason the request had
 * already ended with). 0, or CTN_ENOENT when the handle is unknown or its on_done has been
 * called.
 */
int ctn_lm_cancel(ctn_lm *lm, uint64_t handle);

/* ---- sessions ---------------------------------------------------------------------------- */

/*
 * Engine sessions (gen.h) through the bridge, on the loop thread.
 *
 * Raw sessions: ctn_lm_session_new makes an empty one (its id > 0, or CTN_ENOMEM /
 * CTN_EINVAL for a closing object); ctn_lm_session_fork makes n (1 to 64) copies of one,
 * sharing its KV blocks, once the requests submitted on it before have ended (0, or
 * CTN_ENOENT / CTN_EINVAL / CTN_ENOMEM); ctn_lm_session_close forgets one once its requests
 * have ended (0 or CTN_ENOENT). A request with session_id continues the session: the prefill
 * of a prompt-only request (set.max_tokens 0) on a session, forked n ways, is computed once
 * for n generations. Sessions still open at the last close go with the engine.
 *
 * Keyed sessions (request.session): a chat that sends its whole history every turn. The
 * object keeps, per key, an engine session and the tokens it holds (the prompt and every
 * generated token; an end-of-text token is not kept). A request whose prompt's tokens start
 * with exactly those tokens sends only the rest, so the earlier turns are not computed
 * again (result.cached_tokens counts them); any other prompt (an edited history, a stop
 * string the next prompt no longer holds, a reply whose text tokenizes otherwise) closes
 * that session and starts a new one with the whole prompt, where the prefix cache may still
 * find its full blocks. One request runs on a key at a time: a second one submitted while
 * the first runs goes without a session. A request that fails or is cancelled ends its key's
 * session. At most CTN_LM_MAX_SESSIONS keys are kept; beyond, the least recently used idle
 * one is closed. Idle sessions hold KV blocks that the engine gives up under memory pressure
 * (their history is then recomputed).
 */
enum { CTN_LM_MAX_SESSIONS = 256 };
int64_t ctn_lm_session_new(ctn_lm *lm);
int ctn_lm_session_fork(ctn_lm *lm, int64_t session, int n, int64_t *children);
int ctn_lm_session_close(ctn_lm *lm, int64_t session);
/* Keyed sessions the object keeps now. */
int ctn_lm_session_count(const ctn_lm *lm);

/* ---- embeddings -------------------------------------------------------------------------- */

/*
 * The text's embedding (the engine's pooled final hidden states, L2-normalised), batched
 * with generations. pooling is CTN_POOL_MEAN, CTN_POOL_LAST or CTN_POOL_CLS. on_done (loop
 * thread, exactly once) gets vec (dim floats, borrowed for the call) and err 0, or vec NULL,
 * dim 0 and err a CTN_E* code (CTN_ECANCELED when cancelled) with msg saying why. Same return
 * and handle rules as ctn_lm_generate.
 */
int ctn_lm_embed(ctn_lm *lm, const char *text, size_t len, int pooling,
                 void (*on_done)(void *ud, const float *vec, int dim, int err, const char *msg),
                 void *ud, uint64_t *handle, char *err, size_t errcap);

/* ---- what the model says about itself ---------------------------------------------------- */

/* The GGUF's tokenizer.chat_template, or NULL. Owned by lm (valid while it is open). */
const char *ctn_lm_chat_template(const ctn_lm *lm);
/*
 * LoRA adapters by name (lora.h, gen.h): loads the PEFT folder or GGUF LoRA file at path
 * for this model (checked against it; ranks above max_rank refused, 0: no limit) under
 * name. Loading the same name and path again is a no-op (it reloads an adapter the budget
 * unloaded); the same name with another path is CTN_EINVAL. Loading reads the file on the
 * loop thread. 0 or a CTN_E* code with the reason (naming the adapter) in err.
 * ctn_lm_lora_unload forgets the name (requests already running finish with it).
 */
int ctn_lm_lora_load(ctn_lm *lm, const char *name, const char *path, int32_t max_rank, char *err,
                     size_t errcap);
int ctn_lm_lora_unload(ctn_lm *lm, const char *name);

/* The text of the BOS / EOS token ("<s>", "<|endoftext|>"), or NULL when there is none. */
const char *ctn_lm_bos_text(const ctn_lm *lm);
const char *ctn_lm_eos_text(const ctn_lm *lm);
/* The canonical path the model was loaded from. */
const char *ctn_lm_path(const ctn_lm *lm);
/* general.architecture ("llama", "qwen2", ...) and the width of its embeddings. */
const char *ctn_lm_arch(const ctn_lm *lm);
int ctn_lm_embed_dim(const ctn_lm *lm);
/* The pooling its GGUF asks for (<arch>.pooling_type: 1 mean, 2 CLS, 3 last, as llama.cpp
 * numbers them), else CTN_POOL_MEAN, llama.cpp's choice for a model that names none. */
int ctn_lm_pooling(const ctn_lm *lm);
/* The model's vocabulary (engine/vocab.h), for token lengths; owned by lm. Tokenizing is
 * safe from any thread while lm is open. */
const struct ctn_vocab *ctn_lm_vocab(const ctn_lm *lm);

/* ---- statistics -------------------------------------------------------------------------- */

/* Buckets of the decode batch histogram: sequences that got a token in one step. */
enum { CTN_LM_BATCH_BUCKETS = 7 }; /* 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+ */

typedef struct {
    ctn_gen_stats engine; /* ctn_gen_get_stats */
    /* steps[i]: engine steps in which the number of sequences that got a token fell in
     * bucket i. Counted from the token callbacks (see lm.c); a sequence that ended on EOS in
     * a step counts in it too. Embedding-only steps are not counted. */
    int64_t steps[CTN_LM_BATCH_BUCKETS];
    int max_batch; /* the most sequences that got a token in one step */
} ctn_lm_stats;

/* The engine's statistics and the histogram, as of now. (Named like ctn_gen_get_stats: the
 * type already takes the name ctn_lm_stats.) */
void ctn_lm_get_stats(const ctn_lm *lm, ctn_lm_stats *out);

#endif
