/* Free names of engine/sampler.h's example (tests/docs/check_examples.sh). */
int64_t n_vocab, n_prompt, i;
const int32_t *prompt;
float *logits;
char err[256];
