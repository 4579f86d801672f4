/* Free names of stdlib/history.h's example (tests/docs/check_examples.sh). */
#include <history.h>
