/* Free names of include/catena.h's example (tests/docs/check_examples.sh). */
void on_done(int status, const char *text, void *ud);
