/* Free names of chains/chain.h's example (tests/docs/check_examples.sh). */
extern const ctn_node_ops upper_ops;
void finished(void *ud, const ctn_val *out, const ctn_chain_err *err);
struct {
    int done;
} state;
uv_loop_t *loop;
ctn_val *input;
