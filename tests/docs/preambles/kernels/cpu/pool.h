/* Free names of kernels/cpu/pool.h's example (tests/docs/check_examples.sh). */
#include <base.h> /* CTN_ENOMEM */
struct job {
    ctn_pool *pool;
};
void step_one(struct job *j, int ith, int nth);
void step_two(struct job *j, int ith, int nth);
struct job *ctx;
