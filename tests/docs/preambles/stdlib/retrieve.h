/* Free names of stdlib/retrieve.h's example (tests/docs/check_examples.sh). */
#include <retrieve.h>
extern ctn_kb *kb;
extern ctn_kb_coll coll;
extern ctn_vcache *cache;
extern const char *query;
extern size_t qlen;
extern const float *qvec;
extern char err[256];
extern int rc;
