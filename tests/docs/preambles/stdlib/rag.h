/* Free names of stdlib/rag.h's example (tests/docs/check_examples.sh). */
#include <rag.h>
extern char err[256];
