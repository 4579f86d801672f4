/* Free names of stdlib/json.h's example (tests/docs/check_examples.sh). */
const char *answer, *chunk;
size_t n, len;
int rc;
bool next_chunk(const char **chunk, size_t *len);
