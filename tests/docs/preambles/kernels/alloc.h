/* Free names of kernels/alloc.h's example (tests/docs/check_examples.sh). */
#include <pool.h> /* <>: not the preamble of the same name */
int rc;
ctn_pool *p;
