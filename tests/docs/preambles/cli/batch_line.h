/* Free names of cli/batch_line.h's example (tests/docs/check_examples.sh). */
char err[256];
