/* Free names of stdlib/kb.h's example (tests/docs/check_examples.sh). */
#include <kb.h>
extern ctn_val *chunks;
