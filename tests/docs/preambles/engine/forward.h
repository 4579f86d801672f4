/* Free names of engine/forward.h's example (tests/docs/check_examples.sh). */
const ctn_model *model;
char err[256];
const int32_t *prompt;
int64_t n_prompt;
int32_t next;
float *logits;
