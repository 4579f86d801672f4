/*
 * Memory bandwidth of this machine, the bound on decoding speed (a dense model reads all its
 * weights once per token).
 *
 *   membw [--mib 1024] [--runs 7] [--threads-max 2]
 *
 * One buffer of --mib MiB (1 GiB by default, far beyond any cache), touched before timing.
 * For 1 .. threads-max threads, each thread working on its contiguous share:
 * - read: a sum of the buffer as 64-bit integers with four accumulators, plain C that
 *   compilers vectorise (integer adds need no -ffast-math); GB/s = buffer bytes / time;
 * - copy: memcpy of the first half of the buffer onto the second; GB/s = (bytes read +
 *   bytes written) / time = 2 x half / time, STREAM's convention (the bus also carries the
 *   write-allocate reads of the destination, which this does not count).
 * Each figure is the median of --runs timed runs after one untimed run; GB is 1e9 bytes.
 * Prints one JSON line:
 *   {"mib": 1024, "runs": 7, "read_gb_s": {"1": x, "2": y}, "copy_gb_s": {"1": x, "2": y}}
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64
#define MAX_RUNS    101

enum { OP_READ, OP_COPY, OP_TOUCH, OP_QUIT };

static struct {
    uint64_t *buf; /* (n_words) */
    size_t n_words;
    int n_threads;
    int op;
    pthread_barrier_t start, done;
    uint64_t sums[MAX_THREADS];
} B;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Sum of n words; four independent accumulators so that the adds pipeline. */
static uint64_t sum_words(const uint64_t *p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; i++)
        a += p[i];
    return a + b + c + d;
}

/* Thread `id` of n's share [lo, hi) of n_words words. */
static void share(int id, int n, size_t n_words, size_t *lo, size_t *hi) {
    *lo = n_words * (size_t)id / (size_t)n;
    *hi = n_words * (size_t)(id + 1) / (size_t)n;
}

static void work(int id) {
    size_t lo, hi, half = B.n_words / 2;
    switch (B.op) {
    case OP_READ:
        share(id, B.n_threads, B.n_words, &lo, &hi);
        B.sums[id] += sum_words(B.buf + lo, hi - lo);
        break;
    case OP_COPY:
        share(id, B.n_threads, half, &lo, &hi);
        memcpy(B.buf + half + lo, B.buf + lo, (hi - lo) * sizeof *B.buf);
        break;
    case OP_TOUCH:
        share(id, B.n_threads, B.n_words, &lo, &hi);
        for (size_t i = lo; i < hi; i++)
            B.buf[i] = i * 0x9e3779b97f4a7c15ull;
        break;
    }
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&B.start);
        if (B.op == OP_QUIT) return NULL;
        work(id);
        pthread_barrier_wait(&B.done);
    }
}

/* Runs op on the current threads (the caller is thread 0); returns the seconds it took. */
static double run_op(int op) {
    B.op = op;
    double t0 = now_s();
    pthread_barrier_wait(&B.start);
    work(0);
    pthread_barrier_wait(&B.done);
    return now_s() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Starts n - 1 workers, measures both ops, stops them. Returns 0 or -1. */
static int measure(int n, int runs, double *read_gb_s, double *copy_gb_s) {
    pthread_t th[MAX_THREADS];
    B.n_threads = n;
    if (pthread_barrier_init(&B.start, NULL, (unsigned)n) ||
        pthread_barrier_init(&B.done, NULL, (unsigned)n))
        return -1;
    for (int i = 1; i < n; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i)) return -1;
    double t[MAX_RUNS];
    size_t bytes = B.n_words * sizeof *B.buf;
    run_op(OP_READ);
    for (int r = 0; r < runs; r++)
        t[r] = (double)bytes / run_op(OP_READ) / 1e9;
    *read_gb_s = median(t, runs);
    run_op(OP_COPY);
    for (int r = 0; r < runs; r++)
        t[r] = (double)(B.n_words / 2 * sizeof *B.buf) * 2.0 / run_op(OP_COPY) / 1e9;
    *copy_gb_s = median(t, runs);
    B.op = OP_QUIT;
    pthread_barrier_wait(&B.start);
    for (int i = 1; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&B.start);
    pthread_barrier_destroy(&B.done);
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: membw [--mib 1024] [--runs 7] [--threads-max 2]\n");
    return 2;
}

int main(int argc, char **argv) {
    long mib = 1024, runs = 7, tmax = 2;
    for (int i = 1; i < argc; i += 2) {
        char *end;
        long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
        if (i + 1 >= argc || *end || v < 1) return usage();
        if (!strcmp(argv[i], "--mib"))
            mib = v;
        else if (!strcmp(argv[i], "--runs") && v <= MAX_RUNS)
            runs = v;
        else if (!strcmp(argv[i], "--threads-max") && v <= MAX_THREADS)
            tmax = v;
        else
            return usage();
    }
    B.n_words = (size_t)mib * 1024 * 1024 / sizeof *B.buf;
    B.buf = aligned_alloc(64, B.n_words * sizeof *B.buf);
    if (!B.buf) {
        fprintf(stderr, "membw: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    /* Fault every page in (once, on one thread) so that no timed run pays for it. */
    double rd[MAX_THREADS + 1], cp[MAX_THREADS + 1];
    for (int n = 1; n <= tmax; n++) {
        if (n == 1) {
            B.n_threads = 1;
            B.op = OP_TOUCH;
            work(0);
        }
        if (measure(n, (int)runs, &rd[n], &cp[n]) < 0) {
            fprintf(stderr, "membw: cannot start %d threads\n", n);
            return 1;
        }
    }
    uint64_t s = 0;
    for (int i = 0; i < MAX_THREADS; i++)
        s += B.sums[i];
    printf("{\"mib\": %ld, \"runs\": %ld, \"read_gb_s\": {", mib, runs);
    for (int n = 1; n <= tmax; n++)
        printf("%s\"%d\": %.2f", n > 1 ? ", " : "", n, rd[n]);
    printf("}, \"copy_gb_s\": {");
    for (int n = 1; n <= tmax; n++)
        printf("%s\"%d\": %.2f", n > 1 ? ", " : "", n, cp[n]);
    /* The checksum keeps the sums live so that the reads cannot be optimised away. */
    printf("}, \"checksum\": %llu}\n", (unsigned long long)(s & 0xffff));
    free(B.buf);
    return 0;
}
