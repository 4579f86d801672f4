/* Free names of engine/mapfile.h's example (tests/docs/check_examples.sh). */
const char *path;
char err[256];
