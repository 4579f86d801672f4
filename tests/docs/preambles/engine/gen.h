/* Free names of engine/gen.h's example (tests/docs/check_examples.sh). */
const ctn_model *model;
const ctn_vocab *vocab;
char err[256];
void print_piece(void *ud, const ctn_gen_token *t);
void finished(void *ud, int64_t id, const ctn_gen_result *res);
