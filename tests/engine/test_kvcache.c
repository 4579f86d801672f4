/*
 * The paged KV cache (engine/kvcache.c) and the thread pool (kernels/cpu/pool.c): blocks come
 * from the pool as sequences grow and all go back; positions map through the block table;
 * bad shapes and budgets are errors; the pool runs every thread and its barrier holds.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "gguf.h"
#include "kvcache.h"
#include "pool.h"
#include "test.h"

TEST(pool_sizes_and_errors) {
    char err[256];
    ctn_kv_pool *kv;
    size_t per = ctn_kv_bytes_per_block(2, 8, CTN_TYPE_F16, 16);
    CHECK(per == 2 * 2 * 16 * 8 * 2);
    CHECK(ctn_kv_pool_new(&kv, 2, 8, CTN_TYPE_F16, 16, per * 5 + per / 2, err, sizeof err) == 0);
    CHECK(kv->n_blocks == 5 && kv->n_free == 5);
    ctn_kv_pool_free(kv);
    CHECK(ctn_kv_pool_new(&kv, 2, 8, CTN_TYPE_Q8_0, 16, per * 5, err, sizeof err) == CTN_EINVAL);
    CHECK(kv == NULL);
    CHECK(ctn_kv_pool_new(&kv, 2, 8, CTN_TYPE_F32, 16, per, err, sizeof err) == CTN_EINVAL);
    CHECK(strstr(err, "holds no block") != NULL);
    CHECK(ctn_kv_pool_new(&kv, 0, 8, CTN_TYPE_F32, 16, per * 4, err, sizeof err) == CTN_EINVAL);
    CHECK(ctn_kv_pool_new(&kv, 2, 8, CTN_TYPE_F32, 0, per * 4, err, sizeof err) == CTN_EINVAL);
}

TEST(blocks_follow_the_sequences) {
    char err[256];
    ctn_kv_pool *kv;
    const size_t per = ctn_kv_bytes_per_block(3, 4, CTN_TYPE_F32, 4);
    CHECK(ctn_kv_pool_new(&kv, 3, 4, CTN_TYPE_F32, 4, per * 6, err, sizeof err) == 0);
    ctn_kv_seq a, b;
    CHECK(ctn_kv_seq_init(&a, kv, 20) == 0);
    CHECK(ctn_kv_seq_init(&b, kv, 9) == 0);
    CHECK(a.max_blocks == 5 && b.max_blocks == 3);
    CHECK(ctn_kv_seq_blocks_needed(kv, &a, 5) == 2);
    CHECK(ctn_kv_seq_reserve(kv, &a, 5, err, sizeof err) == 0);
    CHECK(a.n_blocks == 2 && kv->n_free == 4);
    CHECK(ctn_kv_seq_reserve(kv, &a, 8, err, sizeof err) == 0); /* still two blocks */
    CHECK(a.n_blocks == 2);
    CHECK(ctn_kv_seq_reserve(kv, &b, 10, err, sizeof err) == CTN_ERANGE);
    CHECK(strstr(err, "context length of 9") != NULL);
    CHECK(ctn_kv_seq_reserve(kv, &b, 9, err, sizeof err) == 0);
    CHECK(kv->n_free == 1);
    CHECK(ctn_kv_seq_reserve(kv, &a, 16, err, sizeof err) == CTN_ENOMEM); /* needs 2 */
    CHECK(strstr(err, "KV cache is full") != NULL);
    CHECK(a.n_blocks == 2 && kv->n_free == 1); /* nothing taken */

    /* Distinct blocks; K and V of every (layer, position) at distinct, in-range places. */
    CHECK(a.table[0] != a.table[1] && a.table[0] != b.table[0]);
    uint8_t *seen = calloc(kv->n_blocks * 3 * 2 * 4 * 4 * 4, 1);
    size_t total = (size_t)kv->n_blocks * per;
    int overlap = 0, outside = 0;
    for (int l = 0; l < 3; l++)
        for (int s = 0; s < 2; s++) {
            ctn_kv_seq *q = s ? &b : &a;
            for (int64_t pos = 0; pos < (s ? 9 : 8); pos++)
                for (int kvsel = 0; kvsel < 2; kvsel++) {
                    uint8_t *p = kvsel ? ctn_kv_v(kv, l, q, pos) : ctn_kv_k(kv, l, q, pos);
                    size_t off = (size_t)(p - kv->data);
                    if (off + 16 > total) {
                        outside++;
                        continue;
                    }
                    for (int i = 0; i < 16; i++)
                        overlap += seen[off + i]++ != 0;
                }
        }
    CHECK(overlap == 0 && outside == 0);
    free(seen);

    /* Trim gives back the tail; clear and close give back everything. */
    ctn_kv_seq_trim(kv, &b, 1);
    CHECK(b.n_blocks == 1 && kv->n_free == 3);
    ctn_kv_seq_clear(kv, &a);
    CHECK(a.n_blocks == 0 && a.n_pos == 0 && kv->n_free == 5);
    ctn_kv_seq_close(kv, &a);
    ctn_kv_seq_close(kv, &b);
    ctn_kv_seq_close(kv, &b); /* twice is harmless */
    CHECK(kv->n_free == 6);
    ctn_kv_pool_free(kv);
}

TEST(alloc_failures) {
    char err[256];
    int ok = 0;
    for (long n = 0; n < 10 && !ok; n++) {
        ctn_kv_pool *kv = NULL;
        ctn__alloc_fail_after = n;
        int rc = ctn_kv_pool_new(&kv, 2, 8, CTN_TYPE_F16, 16, 1 << 16, err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc == 0) {
            ok = 1;
            ctn_kv_pool_free(kv);
        } else {
            CHECK(rc == CTN_ENOMEM && kv == NULL);
        }
    }
    CHECK(ok);
}

typedef struct {
    ctn_pool *pool;
    _Atomic int phase_count[3];
    int bad;
    int hits[64];
} pool_job;

static void job(void *ctx, int ith, int nth) {
    pool_job *j = ctx;
    j->hits[ith]++;
    for (int phase = 0; phase < 3; phase++) {
        atomic_fetch_add(&j->phase_count[phase], 1);
        ctn_pool_barrier(j->pool);
        /* After the barrier every thread has counted this phase. */
        if (atomic_load(&j->phase_count[phase]) != nth) j->bad = 1;
        ctn_pool_barrier(j->pool);
    }
}

TEST(thread_pool) {
    for (int n = 1; n <= 5; n++) {
        pool_job j;
        memset(&j, 0, sizeof j);
        CHECK(ctn_pool_new(&j.pool, n) == 0);
        CHECK(ctn_pool_threads(j.pool) == n);
        for (int r = 0; r < 200; r++) {
            for (int p = 0; p < 3; p++)
                atomic_store(&j.phase_count[p], 0);
            ctn_pool_run(j.pool, job, &j);
        }
        CHECK(!j.bad);
        for (int i = 0; i < n; i++)
            CHECK(j.hits[i] == 200);
        ctn_pool_free(j.pool);
    }
    ctn_pool *p;
    CHECK(ctn_pool_new(&p, 0) == CTN_EINVAL);
    CHECK(ctn_pool_new(&p, 513) == CTN_EINVAL);
    CHECK(ctn_pool_default_threads() >= 1);
    ctn_pool_free(NULL);
}

/* Fills positions [from, to) of every layer's K and V with a value derived from (layer,
 * position, salt), so copies and sharing can be checked. */
static void fill_pos(ctn_kv_pool *kv, ctn_kv_seq *s, int64_t from, int64_t to, int salt) {
    for (int64_t l = 0; l < kv->n_layer; l++)
        for (int64_t p = from; p < to; p++) {
            float *k = ctn_kv_k(kv, l, s, p), *v = ctn_kv_v(kv, l, s, p);
            for (int64_t i = 0; i < kv->kv_dim; i++)
                k[i] = (float)(l * 1000 + p * 10 + salt), v[i] = -k[i];
        }
    s->n_pos = to;
}

static int check_pos(ctn_kv_pool *kv, const ctn_kv_seq *s, int64_t from, int64_t to, int salt) {
    int bad = 0;
    for (int64_t l = 0; l < kv->n_layer; l++)
        for (int64_t p = from; p < to; p++) {
            const float *k = ctn_kv_k(kv, l, s, p), *v = ctn_kv_v(kv, l, s, p);
            for (int64_t i = 0; i < kv->kv_dim; i++)
                bad += k[i] != (float)(l * 1000 + p * 10 + salt) || v[i] != -k[i];
        }
    return bad;
}

/* Full blocks registered by one sequence are adopted by the next with the same tokens (up to
 * the first difference), survive as evictable blocks, and are evicted least recently
 * released first when the pool runs out. */
TEST(prefix_cache) {
    char err[256];
    ctn_kv_pool *kv;
    CHECK(ctn_kv_pool_new(&kv, 2, 4, CTN_TYPE_F32, 4, 6 * ctn_kv_bytes_per_block(2, 4, CTN_TYPE_F32, 4),
                          err, sizeof err) == 0);
    int32_t toks[24];
    for (int i = 0; i < 24; i++)
        toks[i] = 100 + i;
    ctn_kv_seq a, b, c;
    CHECK(ctn_kv_seq_init(&a, kv, 24) == 0 && ctn_kv_seq_init(&b, kv, 24) == 0 &&
          ctn_kv_seq_init(&c, kv, 24) == 0);
    CHECK(ctn_kv_prefix_adopt(kv, &a, toks, 13, 0) == 0); /* empty cache: 3 misses */
    CHECK(kv->misses == 3 && kv->hits == 0);
    CHECK(ctn_kv_seq_reserve(kv, &a, 14, err, sizeof err) == 0);
    fill_pos(kv, &a, 0, 14, 1);
    ctn_kv_prefix_commit(kv, &a, toks, 0);
    CHECK_EQ_INT(kv->n_cached, 3); /* blocks of positions 0-3, 4-7, 8-11 */
    ctn_kv_seq_close(kv, &a);
    CHECK_EQ_INT(kv->n_free, 6);
    CHECK_EQ_INT(kv->n_evictable, 3);
    /* Same tokens: the three full blocks come back with their K/V. */
    CHECK(ctn_kv_seq_init(&a, kv, 24) == 0);
    CHECK(ctn_kv_prefix_adopt(kv, &a, toks, 13, 0) == 12);
    CHECK(kv->hits == 3 && a.n_pos == 12 && kv->n_free == 3 && kv->n_evictable == 0);
    CHECK_EQ_INT(check_pos(kv, &a, 0, 12, 1), 0);
    /* A different token in block 1, or another tag: only what precedes it. */
    int32_t t2[24];
    memcpy(t2, toks, sizeof t2);
    t2[5] = 7;
    CHECK(ctn_kv_prefix_adopt(kv, &b, t2, 13, 0) == 4);
    CHECK(ctn_kv_prefix_adopt(kv, &c, toks, 13, 9) == 0);
    ctn_kv_seq_clear(kv, &b);
    /* n stops short: at most the blocks below n. */
    CHECK(ctn_kv_prefix_adopt(kv, &b, toks, 11, 0) == 8);
    CHECK_EQ_INT(kv->refs[b.table[0]], 2);
    ctn_kv_seq_close(kv, &a);
    ctn_kv_seq_close(kv, &b);
    CHECK(kv->n_free == 6 && kv->n_evictable == 3);
    /* A sequence that needs every block evicts the cached ones. */
    CHECK(ctn_kv_seq_reserve(kv, &c, 24, err, sizeof err) == 0);
    CHECK(kv->evictions == 3 && kv->n_cached == 0 && kv->n_free == 0);
    CHECK(ctn_kv_seq_reserve(kv, &c, 25, err, sizeof err) == CTN_ERANGE);
    ctn_kv_seq_close(kv, &c);
    CHECK(ctn_kv_seq_init(&a, kv, 24) == 0);
    CHECK(ctn_kv_prefix_adopt(kv, &a, toks, 13, 0) == 0);
    ctn_kv_seq_close(kv, &a);
    CHECK_EQ_INT(kv->n_free, 6);
    ctn_kv_pool_free(kv);
}

/* A fork shares every block; the first write into the shared partial block copies it. */
TEST(fork_copy_on_write) {
    char err[256];
    ctn_kv_pool *kv;
    CHECK(ctn_kv_pool_new(&kv, 3, 4, CTN_TYPE_F32, 4, 8 * ctn_kv_bytes_per_block(3, 4, CTN_TYPE_F32, 4),
                          err, sizeof err) == 0);
    ctn_kv_seq a, b;
    CHECK(ctn_kv_seq_init(&a, kv, 32) == 0 && ctn_kv_seq_init(&b, kv, 32) == 0);
    CHECK(ctn_kv_seq_reserve(kv, &a, 6, err, sizeof err) == 0);
    fill_pos(kv, &a, 0, 6, 1);
    CHECK(ctn_kv_seq_fork(kv, &b, &a) == 0);
    CHECK(b.n_pos == 6 && b.n_blocks == 2 && kv->refs[a.table[1]] == 2 && kv->n_free == 6);
    CHECK_EQ_INT(ctn_kv_seq_blocks_needed(kv, &b, 7), 1); /* the copy */
    CHECK_EQ_INT(ctn_kv_seq_blocks_needed(kv, &b, 9), 2);
    CHECK(ctn_kv_seq_reserve(kv, &b, 7, err, sizeof err) == 0);
    CHECK(b.table[0] == a.table[0] && b.table[1] != a.table[1] && kv->n_free == 5);
    CHECK_EQ_INT(check_pos(kv, &b, 0, 6, 1), 0); /* copied */
    fill_pos(kv, &b, 6, 7, 2);
    CHECK_EQ_INT(check_pos(kv, &a, 0, 6, 1), 0); /* a untouched */
    /* a writes too: its block is no longer shared, so no copy. */
    CHECK_EQ_INT(ctn_kv_seq_blocks_needed(kv, &a, 7), 0);
    ctn_kv_seq_close(kv, &a);
    ctn_kv_seq_close(kv, &b);
    CHECK_EQ_INT(kv->n_free, 8);
    CHECK(ctn_kv_seq_init(&a, kv, 32) == 0);
    CHECK(ctn_kv_seq_reserve(kv, &a, 4, err, sizeof err) == 0);
    CHECK(ctn_kv_seq_init(&b, kv, 2) == 0);
    CHECK_EQ_INT(ctn_kv_seq_fork(kv, &b, &a), 0); /* one block fits b's table of one */
    ctn_kv_seq_close(kv, &b);
    CHECK(ctn_kv_seq_reserve(kv, &a, 8, err, sizeof err) == 0);
    CHECK(ctn_kv_seq_init(&b, kv, 2) == 0);
    CHECK_EQ_INT(ctn_kv_seq_fork(kv, &b, &a), CTN_EINVAL); /* two blocks do not */
    ctn_kv_seq_close(kv, &a);
    ctn_kv_seq_close(kv, &b);
    ctn_kv_pool_free(kv);
}

int main(void) {
    RUN(pool_sizes_and_errors);
    RUN(blocks_follow_the_sequences);
    RUN(alloc_failures);
    RUN(prefix_cache);
    RUN(fork_copy_on_write);
    RUN(thread_pool);
    return test_summary();
}
