/*
 * A fixed pool of worker threads that run one function on every thread at once, with a
 * spinning barrier in between the steps of that function: the shape of a forward pass,
 * where each operation (a matrix product, attention, a norm) is split over the threads and
 * every thread must finish one before any starts the next.
 *
 *     ctn_pool *p;
 *     if (ctn_pool_new(&p, 4) < 0) return CTN_ENOMEM;   // 4 threads: the caller and 3 workers
 *     ctn_pool_run(p, work, ctx);                       // work(ctx, ith, nth) on all 4
 *     ctn_pool_free(p);
 *
 *     static void work(void *ctx, int ith, int nth) {
 *         struct job *j = ctx;
 *         step_one(j, ith, nth);
 *         ctn_pool_barrier(j->pool);
 *         step_two(j, ith, nth);
 *     }
 *
 * The caller's thread is thread 0, so a pool of 1 has no workers and costs nothing. Workers
 * spin for a short while after a run (a decode step starts the next run within
 * microseconds; waking a sleeping thread costs tens) and then sleep on a condition variable.
 * A pool runs one function at a time: ctn_pool_run is called from one thread.
 */
#ifndef CTN_POOL_H
#define CTN_POOL_H

typedef struct ctn_pool ctn_pool;

typedef void (*ctn_pool_fn)(void *ctx, int ith, int nth);

/* Starts n_threads - 1 workers (n_threads 1..512). 0, CTN_EINVAL or CTN_ENOMEM. */
int ctn_pool_new(ctn_pool **out, int n_threads);
/* Stops and joins the workers. NULL is allowed. */
void ctn_pool_free(ctn_pool *p);
int ctn_pool_threads(const ctn_pool *p);

/* Runs fn(ctx, ith, nth) on every thread, ith 0 on the caller's; returns when all are done. */
void ctn_pool_run(ctn_pool *p, ctn_pool_fn fn, void *ctx);
/* Inside fn: waits until every thread of the run has reached the same barrier. */
void ctn_pool_barrier(ctn_pool *p);

/* The default thread count: the CPUs this process may run on (sched_getaffinity). */
int ctn_pool_default_threads(void);

#endif
