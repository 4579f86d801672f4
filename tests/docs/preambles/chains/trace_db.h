/* Free names of chains/trace_db.h's example (tests/docs/check_examples.sh). */
uv_loop_t *loop;
char err[256];
ctn_run *run;
