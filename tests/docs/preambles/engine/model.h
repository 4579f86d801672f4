/* Free names of engine/model.h's example (tests/docs/check_examples.sh). */
const ctn_gguf *g;
