/* Free names of stdlib/ingest.h's example (tests/docs/check_examples.sh). */
#include <ingest.h>
extern uv_loop_t *loop;
extern ctn_kb *kb;
extern char err[256];
void done(void *ud, const ctn_ingest_progress *p, int rc, const char *msg);
