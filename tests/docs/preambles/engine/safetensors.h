/* Free names of engine/safetensors.h's example (tests/docs/check_examples.sh). */
char err[256];
