/* Free names of stdlib/split.h's example (tests/docs/check_examples.sh). */
#include <split.h>
extern ctn_val *docs;
