/* Free names of stdlib/sse.h's example (tests/docs/check_examples.sh). */
const char *p;
size_t n;
int rc;
char err[256];
void *ud;
int more(const char **, size_t *);
int on_event(void *, const char *, const char *, size_t, uint64_t);
