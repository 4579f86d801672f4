/* Free names of engine/grammar.h's example (tests/docs/check_examples.sh). */
#include <vocab.h>
const ctn_vocab *vocab;
float *logits;
int32_t tok;
char err[256];
