/* Free names of stdlib/remote.h's example (tests/docs/check_examples.sh). */
uv_loop_t *loop;
ctn_val *input;
const ctn_val *config;
ctn_run_callbacks cb;
ctn_run *run;
