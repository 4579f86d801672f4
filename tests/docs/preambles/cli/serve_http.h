/* Free names of cli/serve_http.h's example (tests/docs/check_examples.sh). */
#include <serve_http.h>
extern ctn_http_limits limits;
extern void on_request(void *ud, const ctn_http_req *r);
extern void *ud;
extern const char *bytes;
extern size_t n;
