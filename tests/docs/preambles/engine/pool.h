/* Free names of engine/pool.h's example (tests/docs/check_examples.sh). */
#include <error.h> /* <>: not the preamble of the same name */
struct job {
    ctn_pool *pool;
};
void step_one(struct job *j, int ith, int nth);
void step_two(struct job *j, int ith, int nth);
struct job *ctx;
