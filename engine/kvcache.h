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
 *     ctn_kv_seq_reserve(kv, &seq, 100, err, sizeof err); // blocks for positions 0..99
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
 * (copy-on-write forks, prefix-cache hits); a block returns to the pool when its count
 * drops to zero (to the evictable list when the prefix cache knows it). A pool and its
 * sequences are used by one thread at a time.
 */
#ifndef CTN_KVCACHE_H
#define CTN_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#define CTN_KV_BLOCK_DEFAULT 16

/* What the pool knows of each block for prefix caching. */
typedef struct {
    uint64_t hash;    /* chain hash: the parent's hash, the block's tokens, the tag */
    int32_t parent;   /* the block before it in its chain, -1 for a first block */
    int32_t hnext;    /* next block in the hash bucket, -1 */
    int32_t lru_prev; /* evictable list neighbours (cached, no references), -1 */
    int32_t lru_next;
    uint32_t tag; /* adapter id the K/V were computed with (0: the base model) */
    int cached;   /* 1: in the hash table (full, immutable) */
} ctn_kv_meta;

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
    int32_t *free_ids;  /* (n_blocks) stack of empty block ids */
    int32_t n_empty;    /* entries of free_ids */
    /* Blocks a reservation can take: the empty ones plus the evictable ones (cached
     * blocks no sequence holds, reused least-recently-released first). */
    int32_t n_free;
    /* Prefix cache. */
    ctn_kv_meta *meta; /* (n_blocks) */
    int32_t *btoks;    /* (n_blocks, block_size) tokens of cached blocks */
    int32_t *buckets;  /* (n_buckets) first block of each hash chain, -1 */
    int32_t n_buckets; /* a power of two */
    int32_t lru_head, lru_tail;
    int32_t n_evictable, n_cached;
    int64_t hits, misses, evictions; /* in blocks */
} ctn_kv_pool;

/* One sequence's view of the pool: lives in caller memory (init/close). */
typedef struct {
    int32_t *table;   /* (max_blocks) block id of positions [i * bs, (i + 1) * bs) */
    int32_t n_blocks; /* entries of table in use */
    int32_t max_blocks;
    int64_t n_pos;    /* positions whose K/V are filled (the forward pass advances it) */
    int64_t max_pos;  /* the sequence's context limit */
    int32_t n_hashed; /* leading blocks whose chain hash is known (committed or adopted) */
    uint64_t hash;    /* chain hash of block n_hashed - 1 */
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

/*
 * Prefix caching (vLLM's automatic prefix caching). A full block is identified by its chain
 * hash (the previous block's hash, its tokens and a tag such as the adapter id); blocks are
 * also compared token for token and by their parent block, so a hash collision cannot hand
 * out wrong K/V. Once registered (commit), a block outlives its sequences: when the last
 * reference goes it becomes evictable, and a reservation reuses evictable blocks least
 * recently released first (counted in n_free).
 *
 * ctn_kv_prefix_adopt: for a sequence holding no blocks, takes the cached blocks that hold
 * the first full blocks of toks[0..n) (n: the positions that may be adopted; leave the last
 * prompt token out so that it is computed) and sets n_pos past them. Returns the positions
 * adopted; counts hits (blocks adopted) and misses (full blocks of toks[0..n) not found).
 *
 * ctn_kv_prefix_commit: registers the sequence's full blocks below n_pos that are not yet
 * known (toks: the sequence's tokens from position 0). A block whose identical twin is
 * already cached stays private (it is released as any other).
 */
int64_t ctn_kv_prefix_adopt(ctn_kv_pool *kv, ctn_kv_seq *s, const int32_t *toks, int64_t n,
                            uint32_t tag);
void ctn_kv_prefix_commit(ctn_kv_pool *kv, ctn_kv_seq *s, const int32_t *toks, uint32_t tag);
/* The chain hash of block i of toks given the hash of block i - 1 (0 for i = 0). */
uint64_t ctn_kv_block_hash(uint64_t parent, const int32_t *block_toks, int32_t block_size,
                           uint32_t tag);

/*
 * Makes a sequence that shares every block of src (copy-on-write: the shared partial last
 * block is copied when either writes to it). dst must be initialised and empty. 0, or
 * CTN_EINVAL when dst holds blocks or is shorter than src.
 */
int ctn_kv_seq_fork(ctn_kv_pool *kv, ctn_kv_seq *dst, const ctn_kv_seq *src);

/* Blocks a reserve of n_pos positions would still need (0 when they exist), counting the copy
 * of a shared partial last block that would be written. */
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
