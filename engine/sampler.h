/*
 * The token sampler: llama.cpp's default sampling chain over one row of logits.
 *
 *     ctn_sampler_params p = ctn_sampler_params_default();   // llama.cpp's CLI defaults
 *     p.seed = 42;
 *     ctn_sampler *s;
 *     if (ctn_sampler_new(&s, &p, n_vocab, err, sizeof err) < 0) { puts(err); return; }
 *     for (i = 0; i < n_prompt; i++) ctn_sampler_accept(s, prompt[i]);   // optional
 *     for (;;) {
 *         ...                                     // logits: a forward pass
 *         int32_t tok;
 *         if (ctn_sampler_sample(s, logits, &tok) < 0) { puts(ctn_sampler_errmsg(s)); break; }
 *         ctn_sampler_accept(s, tok);
 *         ...
 *     }
 *     ctn_sampler_free(s);
 *
 * The chain is llama.cpp's common_sampler default order, without the samplers that are off
 * by default there (DRY, top-n-sigma, typical, XTC, mirostat):
 *
 *     penalties -> top_k -> top_p -> min_p -> temperature -> draw from the softmax
 *
 * so top_p and min_p see the logits before temperature, as in llama.cpp. With temp <= 0
 * the result is the argmax of the penalised logits (the filters all keep the argmax), ties
 * going to the lowest id.
 *
 * Draws use our own generator (xoshiro256** seeded through splitmix64): the same seed, the
 * same parameters, the same accepted tokens and the same logits give the same tokens on
 * every platform (the generator is exact integer arithmetic; only a libm whose expf rounds
 * differently could flip a draw, when the uniform number falls within rounding of a
 * boundary). They do not reproduce llama.cpp's mt19937 draws. One uniform number is
 * drawn per ctn_sampler_sample call with temp > 0 (none with temp <= 0).
 *
 * Memory: everything is allocated by ctn_sampler_new (8 bytes per vocabulary entry, plus 12
 * per entry and 4 per window slot when penalties are on); sampling allocates nothing. A
 * sampler is used by one thread at a time.
 *
 * Cost per call: one pass over the logits (with top_k on, through a bounded heap: O(n_vocab)
 * in practice, O(n_vocab log top_k) at worst), a pass for min_p, and for top_p without top_k
 * a histogram of the mass by logit so that only the candidates around the cut are sorted
 * (llama.cpp sorts them all when its first 256 fall short). On one core of the development
 * machine, a 152k vocabulary: about 0.3 ms with the defaults, 2 ms for top_p alone on a flat
 * distribution.
 */
#ifndef CTN_SAMPLER_H
#define CTN_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct {
    float temp;    /* temperature; <= 0: greedy (argmax, lowest id on ties). Not NaN/inf */
    int32_t top_k; /* keep the k most likely tokens; <= 0: off */
    float top_p;   /* keep the smallest most-likely set with mass >= top_p; >= 1: off; >= 0 */
    float min_p;   /* keep tokens with p >= min_p * p_max; <= 0: off; at most 1 */
    /* Repetition penalty on tokens in the window (llama.cpp): a positive logit is divided
     * by it, a negative one (or zero) multiplied. 1: off; must be > 0 and finite. */
    float repeat_penalty;
    /* Window of accepted tokens the penalties look at: the last penalty_last_n tokens;
     * 0: penalties off; -1: every token accepted since creation or the last reset. */
    int32_t penalty_last_n;
    /* OpenAI-style penalties as llama.cpp applies them, for a token seen c > 0 times in
     * the window: logit -= c * frequency_penalty + presence_penalty. 0: off; finite, may be
     * negative. */
    float frequency_penalty;
    float presence_penalty;
    uint64_t seed; /* any value; the default 0 is a fixed seed, not "random" */
} ctn_sampler_params;

typedef struct ctn_sampler ctn_sampler;

/* A candidate left after the filters, with its probability after temperature. */
typedef struct {
    int32_t id;
    float p;
} ctn_token_prob;

/*
 * llama.cpp's CLI defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1,
 * penalty_last_n 64, frequency/presence 0, seed 0.
 */
ctn_sampler_params ctn_sampler_params_default(void);

/*
 * Checks the parameters and allocates a sampler for a vocabulary of n_vocab tokens (p is
 * copied). 0, CTN_EINVAL (a bad parameter, named in err, or n_vocab < 1) or CTN_ENOMEM;
 * on failure *out is NULL.
 */
int ctn_sampler_new(ctn_sampler **out, const ctn_sampler_params *p, int32_t n_vocab, char *err,
                    size_t errlen);
void ctn_sampler_free(ctn_sampler *s);

/*
 * Picks the next token from logits (n_vocab floats, caller memory, borrowed for the call).
 * The logits are modified (penalties are applied in place). A token with logit -inf is
 * never picked. Returns 0, or CTN_ERANGE for a NaN or +inf logit (the token index is in
 * ctn_sampler_errmsg) or when every logit is -inf, CTN_EINVAL for NULL arguments. Nothing
 * is accepted: call ctn_sampler_accept with the token that is actually used.
 */
int ctn_sampler_sample(ctn_sampler *s, float *logits, int32_t *token);

/*
 * Runs the chain without the draw and returns the candidates that could be drawn, with
 * their probabilities after temperature (summing to 1; for temp <= 0 the single argmax
 * with p = 1), through *cand: n entries owned by the sampler, valid until its next call.
 * Sorted most likely first (ties by lowest id) when 0 < top_k < n_vocab; otherwise in an
 * order that depends only on the logits and parameters (id order when top_p is off). Same errors as
 * ctn_sampler_sample; draws nothing from the generator. For tests, and for reporting the
 * probabilities of alternatives (n_probs / logprobs).
 */
int ctn_sampler_candidates(ctn_sampler *s, float *logits, const ctn_token_prob **cand, int32_t *n);

/*
 * Adds a token to the penalty history. Generated tokens should be accepted after each
 * draw; prompt tokens may be accepted too (llama.cpp's server does, so the penalties then
 * cover the end of the prompt). 0, or CTN_EINVAL for an id outside [0, n_vocab) (ignored).
 */
int ctn_sampler_accept(ctn_sampler *s, int32_t token);

/* Forgets the history and restarts the generator from the seed: a reset sampler repeats
 * the draws of a new one. */
void ctn_sampler_reset(ctn_sampler *s);

/* Why the last call failed ("" if none has). */
const char *ctn_sampler_errmsg(const ctn_sampler *s);

#endif
