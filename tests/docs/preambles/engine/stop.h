/* Free names of engine/stop.h's example (tests/docs/check_examples.sh). */
#include <vocab.h> /* <>: not the preamble of the same name */
char err[256];
ctn_detok_stream ds;
int32_t tok;
char piece[64];
int n;
bool generation_ended;
