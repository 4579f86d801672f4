/* Free names of engine/lora.h's example (tests/docs/check_examples.sh). */
const ctn_model *model;
char err[256];
