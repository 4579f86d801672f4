/* Free names of engine/kvcache.h's example (tests/docs/check_examples.sh). */
#include <quant.h> /* <>: not the preamble of the same name */
int64_t n_layer, kv_dim, layer, pos;
char err[256];
