/* Free names of stdlib/vsearch.h's example (tests/docs/check_examples.sh). */
#include <vsearch.h>
static char err[256];
static const float *vec, *queries; /* dim floats; two queries of dim floats */
static int64_t chunk_id;
