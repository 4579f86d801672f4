/* Free names of lua/batch_line.h's example (tests/docs/check_examples.sh). */
char err[256];
