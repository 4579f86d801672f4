/*
 * The worker pool (see pool.h). A run is published by bumping `generation`; workers spin on
 * it, then fall back to a condition variable. The barrier is a counter plus a phase bit
 * (sense reversal), all in C11 atomics.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "alloc.h"
#include "base.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spins before sleeping: about 100 µs of pause instructions. */
#define SPIN_LIMIT 20000
/* Spins at a barrier before yielding the CPU between checks (a few µs). */
#define BARRIER_SPINS 2000

typedef struct {
    ctn_pool *pool;
    int ith;
    pthread_t thread;
} worker;

struct ctn_pool {
    int n_threads;
    worker *workers; /* (n_threads - 1) */
    int n_started;

    /* The current run. */
    ctn_pool_fn fn;
    void *ctx;
    _Atomic unsigned generation; /* bumped to start a run */
    _Atomic int n_done;          /* workers finished with the current run */
    _Atomic int stop;

    /* Barrier: threads arrived at the current phase, and the phase counter. */
    _Atomic int n_arrived;
    _Atomic unsigned phase;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when generation or stop changes */
    _Atomic int n_sleeping;
};

static void *worker_main(void *arg) {
    worker *w = arg;
    ctn_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire)) {
            if (++spins < SPIN_LIMIT) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        seen = gen;
        p->fn(p->ctx, w->ith, p->n_threads);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_acq_rel);
    }
}

int ctn_pool_new(ctn_pool **out, int n_threads) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 512) return CTN_EINVAL;
    ctn_pool *p = ctn__calloc(1, sizeof *p);
    if (p == NULL) return CTN_ENOMEM;
    p->n_threads = n_threads;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return CTN_ENOMEM;
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return CTN_ENOMEM;
    }
    if (n_threads > 1) {
        p->workers = ctn__calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (p->workers == NULL) {
            ctn_pool_free(p);
            return CTN_ENOMEM;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            p->workers[i].pool = p;
            p->workers[i].ith = i + 1;
            if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
                ctn_pool_free(p);
                return CTN_ENOMEM;
            }
            p->n_started++;
        }
    }
    *out = p;
    return 0;
}

void ctn_pool_free(ctn_pool *p) {
    if (p == NULL) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i].thread, NULL);
    free(p->workers);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int ctn_pool_threads(const ctn_pool *p) {
    return p->n_threads;
}

void ctn_pool_run(ctn_pool *p, ctn_pool_fn fn, void *ctx) {
    if (p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: pairs with n_sleeping */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n_threads);
    for (int spins = 0;
         atomic_load_explicit(&p->n_done, memory_order_acquire) < p->n_threads - 1;) {
        if (++spins < BARRIER_SPINS)
            cpu_relax();
        else
            sched_yield();
    }
}

void ctn_pool_barrier(ctn_pool *p) {
    if (p->n_threads == 1) return;
    const unsigned phase = atomic_load_explicit(&p->phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->n_arrived, 1, memory_order_acq_rel) == p->n_threads - 1) {
        atomic_store_explicit(&p->n_arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->phase, 1, memory_order_acq_rel);
        return;
    }
    /* Spin; when another thread is slow to arrive (descheduled on a busy machine), give the
     * CPU away between checks instead of burning the slice it needs. */
    for (int spins = 0; atomic_load_explicit(&p->phase, memory_order_acquire) == phase;) {
        if (++spins < BARRIER_SPINS)
            cpu_relax();
        else
            sched_yield();
    }
}

int ctn_pool_default_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n > 512 ? 512 : n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (n > 512 ? 512 : (int)n) : 1;
}
