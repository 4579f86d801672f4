/* Free names of engine/error.h's example (tests/docs/check_examples.sh). */
#include <gguf.h> /* <>: not the preamble of the same name */
ctn_gguf *g;
const char *path;
char err[256];
