/* Free names of stdlib/lm.h's example (tests/docs/check_examples.sh). */
uv_loop_t *loop;
char err[256];
void on_text(void *ud, const char *piece, size_t len);
void on_done(void *ud, const ctn_lm_result *r);
void *ud;
