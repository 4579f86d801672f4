/* Free names of kernels/cpu/kern.h's example (tests/docs/check_examples.sh). */
#include <quant.h> /* <>: not the preamble of the same name */
const float *x;
void *xa;
int64_t n;
const void *w;
size_t w_row_bytes, a_row_bytes;
int64_t n_rows, n_tok;
float *y;
