/* Free names of tests/ref/ref_forward.h's example (tests/docs/check_examples.sh). */
#include <error.h> /* <>: not the preamble of the same name */
const ctn_model *model;
const int32_t *ids;
int64_t n;
float *logits;
