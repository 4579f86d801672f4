/* Free names of stdlib/loader.h's example (tests/docs/check_examples.sh). */
#include <loader.h>
extern const char *data;
extern size_t n;
