/* Free names of engine/str.h's example (tests/docs/check_examples.sh). */
const char *p;
size_t n;
