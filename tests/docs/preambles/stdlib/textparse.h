/* Free names of stdlib/textparse.h's example (tests/docs/check_examples.sh). */
const char *const keys[2] = {"answer", "confidence"};
char err[256];
const char *text;
size_t n;
