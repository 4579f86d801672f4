/* Free names of engine/alloc.h's example (tests/docs/check_examples.sh). */
#include <vocab.h> /* <>: not the preamble of the same name */
int rc;
ctn_vocab *v;
ctn_gguf *g;
char err[256];
