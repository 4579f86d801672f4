/* Free names of engine/settings.h's example (tests/docs/check_examples.sh). */
char err[256];
