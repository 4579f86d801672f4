/* Free names of stdlib/components.h's example (tests/docs/check_examples.sh). */
char err[256];
ctn_lm *lm;
