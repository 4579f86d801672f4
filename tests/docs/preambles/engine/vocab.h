/* Free names of engine/vocab.h's example (tests/docs/check_examples.sh). */
const ctn_gguf *g;
const char *text;
char err[256];
