/*
 * The paged KV cache: a pool of fixed-size blocks (16 token positions each by default)
 * holding the keys and values of every layer, and per sequence a block table that maps its
 * positions to blocks, as in vLLM's PagedAttention. A sequence takes blocks only as it grows,
 * so memory goes to tokens that exist, and several sequences (the shared engine, forked
 * sessions) draw from one pool.
 *
 *     ctn_kv_pool *kv;
 *     ctn_kv_pool_new(&kv, n_layer, kv_dim, CTN_TYPE_F16, 16, 64 << 20, err, sizeof err);
 *     ctn_kv_seq seq;
 *     ctn_kv_seq_init(&seq, kv, 4096);               // at most 4096 positions
 *     ctn_kv_seq_reserve(kv, &seq, 100, err, n);     // blocks for positions 0..99
 *     uint16_t *k = ctn_kv_k(kv, layer, &seq, pos);  // kv_dim halves of position pos
 *     ctn_kv_seq_close(kv, &seq);                    // blocks back to the pool
 *     ctn_kv_pool_free(kv);
 *
 * Storage: one allocation made when the pool is created (nothing is allocated per token),
 * laid out [layer][block][K or V][position in block][kv_dim], so that one block's keys for
 * one layer are contiguous and attention streams them. Elements are F16 (the default, as
 * llama.cpp) or F32.
 *
 * Blocks carry a reference count so that a block may appear in several tables
 * (copy-on-write forks of the shared engine); a block returns to the free list when its
 * count drops to zero. A pool and its sequences are used by one thread at a time.
 */
#ifndef CTN_KVCACHE_H
#define CTN_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#define CTN_KV_BLOCK_DEFAULT 16

typedef struct {
    int64_t n_layer;
    int64_t kv_dim;     /* n_head_kv * head_dim */
    int type;           /* CTN_TYPE_F16 or CTN_TYPE_F32 */
    size_t elem;        /* bytes per element */
    int32_t block_size; /* positions per block */
    int32_t n_blocks;
    size_t block_bytes; /* bytes of K (or V) of one block of one layer */
    uint8_t *data;      /* (n_layer, n_blocks, 2, block_size, kv_dim) */
    int32_t *refs;      /* (n_blocks) references from block tables */
    int32_t *free_ids;  /* (n_blocks) stack of free block ids */
    int32_t n_free;
} ctn_kv_pool;

/* One sequence's view of the pool: lives in caller memory (init/close). */
typedef struct {
    int32_t *table;   /* (max_blocks) block id of positions [i * bs, (i + 1) * bs) */
    int32_t n_blocks; /* entries of table in use */
    int32_t max_blocks;
    int64_t n_pos;   /* positions whose K/V are filled (the forward pass advances it) */
    int64_t max_pos; /* the sequence's context limit */
} ctn_kv_seq;

/*
 * Makes a pool of as many blocks as `budget` bytes hold (at least one). Returns 0,
 * CTN_EINVAL (a bad type, size or a budget below one block; message in err) or CTN_ENOMEM.
 */
int ctn_kv_pool_new(ctn_kv_pool **out, int64_t n_layer, int64_t kv_dim, int type,
                    int32_t block_size, size_t budget, char *err, size_t errlen);
void ctn_kv_pool_free(ctn_kv_pool *kv);
/* Bytes one block costs for all layers, K and V: the unit the budget is counted in. */
size_t ctn_kv_bytes_per_block(int64_t n_layer, int64_t kv_dim, int type, int32_t block_size);

/* A sequence of at most max_pos positions; allocates its table. 0, CTN_EINVAL, CTN_ENOMEM. */
int ctn_kv_seq_init(ctn_kv_seq *s, const ctn_kv_pool *kv, int64_t max_pos);
/* Releases the sequence's blocks and its table. Harmless on a zeroed or closed sequence. */
void ctn_kv_seq_close(ctn_kv_pool *kv, ctn_kv_seq *s);
/* Drops every position (blocks back to the pool) but keeps the table for reuse. */
void ctn_kv_seq_clear(ctn_kv_pool *kv, ctn_kv_seq *s);

/*
 * Makes sure blocks exist for positions 0..n_pos-1. Returns 0; CTN_ERANGE when n_pos is
 * beyond the sequence's max_pos; CTN_ENOMEM when the pool has too few free blocks (then
 * nothing was taken). The message goes to err.
 */
int ctn_kv_seq_reserve(ctn_kv_pool *kv, ctn_kv_seq *s, int64_t n_pos, char *err, size_t errlen);

/*
 * Gives back the blocks of table entries n_blocks.. (undoing a reserve whose positions were
 * never filled); n_pos is cut to what the remaining blocks hold.
 */
void ctn_kv_seq_trim(ctn_kv_pool *kv, ctn_kv_seq *s, int32_t n_blocks);

/* Blocks a reserve of n_pos positions would still need (0 when they exist). */
int32_t ctn_kv_seq_blocks_needed(const ctn_kv_pool *kv, const ctn_kv_seq *s, int64_t n_pos);

/* Where the K (or V) vector (kv_dim elements) of a reserved position lives. */
static inline void *ctn_kv_k(const ctn_kv_pool *kv, int64_t layer, const ctn_kv_seq *s,
                             int64_t pos) {
    const int32_t b = s->table[pos / kv->block_size];
    const int64_t slot = pos % kv->block_size;
    return kv->data + ((size_t)layer * (size_t)kv->n_blocks + (size_t)b) * 2 * kv->block_bytes +
           (size_t)slot * (size_t)kv->kv_dim * kv->elem;
}
static inline void *ctn_kv_v(const ctn_kv_pool *kv, int64_t layer, const ctn_kv_seq *s,
                             int64_t pos) {
    return (uint8_t *)ctn_kv_k(kv, layer, s, pos) + kv->block_bytes;
}

#endif
