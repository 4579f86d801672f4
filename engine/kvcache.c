/* The paged KV cache (see kvcache.h). */
#include "kvcache.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "gguf.h"

size_t ctn_kv_bytes_per_block(int64_t n_layer, int64_t kv_dim, int type, int32_t block_size) {
    const size_t elem = type == CTN_TYPE_F32 ? 4 : 2;
    return (size_t)n_layer * 2 * (size_t)block_size * (size_t)kv_dim * elem;
}

int ctn_kv_pool_new(ctn_kv_pool **out, int64_t n_layer, int64_t kv_dim, int type,
                    int32_t block_size, size_t budget, char *err, size_t errlen) {
    *out = NULL;
    if (type != CTN_TYPE_F16 && type != CTN_TYPE_F32) {
        ctn__errf(err, errlen, "KV cache type %d is not F16 or F32", type);
        return CTN_EINVAL;
    }
    if (n_layer < 1 || kv_dim < 1 || block_size < 1 || block_size > 4096 || n_layer > (1 << 16) ||
        kv_dim > (1 << 20)) {
        ctn__errf(err, errlen,
                  "bad KV cache shape: %" PRId64 " layers, %" PRId64 " values, %" PRId32
                  " positions per block",
                  n_layer, kv_dim, block_size);
        return CTN_EINVAL;
    }
    const size_t per_block = ctn_kv_bytes_per_block(n_layer, kv_dim, type, block_size);
    if (budget < per_block) {
        ctn__errf(err, errlen,
                  "a KV budget of %zu bytes holds no block (one block of %" PRId32
                  " positions needs %zu bytes)",
                  budget, block_size, per_block);
        return CTN_EINVAL;
    }
    const size_t n = budget / per_block;
    if (n > INT32_MAX / 2) {
        ctn__errf(err, errlen, "a KV budget of %zu bytes is too many blocks", budget);
        return CTN_EINVAL;
    }
    ctn_kv_pool *kv = ctn__calloc(1, sizeof *kv);
    if (kv == NULL) goto nomem;
    kv->n_layer = n_layer;
    kv->kv_dim = kv_dim;
    kv->type = type;
    kv->elem = type == CTN_TYPE_F32 ? 4 : 2;
    kv->block_size = block_size;
    kv->n_blocks = (int32_t)n;
    kv->block_bytes = (size_t)block_size * (size_t)kv_dim * kv->elem;
    /* Zeroed, so a position read before it is written holds zeros rather than garbage. */
    kv->data = ctn__calloc(n, per_block);
    kv->refs = ctn__calloc(n, sizeof *kv->refs);
    kv->free_ids = ctn__malloc(n * sizeof *kv->free_ids);
    kv->meta = ctn__malloc(n * sizeof *kv->meta);
    kv->btoks = ctn__malloc(n * (size_t)block_size * sizeof *kv->btoks);
    int32_t nbk = 16;
    while ((size_t)nbk < 2 * n && nbk < (1 << 30))
        nbk *= 2;
    kv->n_buckets = nbk;
    kv->buckets = ctn__malloc((size_t)nbk * sizeof *kv->buckets);
    if (kv->data == NULL || kv->refs == NULL || kv->free_ids == NULL || kv->meta == NULL ||
        kv->btoks == NULL || kv->buckets == NULL)
        goto nomem;
    /* Lowest ids on top of the stack: a fresh sequence gets blocks 0, 1, 2, ... */
    for (size_t i = 0; i < n; i++) {
        kv->free_ids[i] = (int32_t)(n - 1 - i);
        kv->meta[i] = (ctn_kv_meta){0, -1, -1, -1, -1, 0, 0};
    }
    for (int32_t i = 0; i < nbk; i++)
        kv->buckets[i] = -1;
    kv->lru_head = kv->lru_tail = -1;
    kv->n_empty = (int32_t)n;
    kv->n_free = (int32_t)n;
    *out = kv;
    return 0;
nomem:
    ctn_kv_pool_free(kv);
    ctn__errf(err, errlen, "out of memory for a KV cache of %zu blocks (%zu bytes)", n,
              n * per_block);
    return CTN_ENOMEM;
}

void ctn_kv_pool_free(ctn_kv_pool *kv) {
    if (kv == NULL) return;
    free(kv->data);
    free(kv->refs);
    free(kv->free_ids);
    free(kv->meta);
    free(kv->btoks);
    free(kv->buckets);
    free(kv);
}

/* ---- blocks ------------------------------------------------------------------------------ */

static void lru_unlink(ctn_kv_pool *kv, int32_t b) {
    ctn_kv_meta *m = &kv->meta[b];
    if (m->lru_prev >= 0)
        kv->meta[m->lru_prev].lru_next = m->lru_next;
    else
        kv->lru_head = m->lru_next;
    if (m->lru_next >= 0)
        kv->meta[m->lru_next].lru_prev = m->lru_prev;
    else
        kv->lru_tail = m->lru_prev;
    m->lru_prev = m->lru_next = -1;
    kv->n_evictable--;
}

static void lru_append(ctn_kv_pool *kv, int32_t b) {
    ctn_kv_meta *m = &kv->meta[b];
    m->lru_prev = kv->lru_tail;
    m->lru_next = -1;
    if (kv->lru_tail >= 0)
        kv->meta[kv->lru_tail].lru_next = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_evictable++;
}

static int32_t bucket_of(const ctn_kv_pool *kv, uint64_t h) {
    return (int32_t)(h & (uint64_t)(kv->n_buckets - 1));
}

/* Takes a block out of the hash table. */
static void uncache(ctn_kv_pool *kv, int32_t b) {
    ctn_kv_meta *m = &kv->meta[b];
    int32_t *pp = &kv->buckets[bucket_of(kv, m->hash)];
    while (*pp != b)
        pp = &kv->meta[*pp].hnext;
    *pp = m->hnext;
    m->hnext = -1;
    m->cached = 0;
    kv->n_cached--;
}

/* One block with a reference, from the empty ones first, else the least recently released
 * cached one. The caller has checked n_free. */
static int32_t take_block(ctn_kv_pool *kv) {
    int32_t b;
    if (kv->n_empty > 0) {
        b = kv->free_ids[--kv->n_empty];
    } else {
        b = kv->lru_head;
        lru_unlink(kv, b);
        uncache(kv, b);
        kv->evictions++;
    }
    CTN_ASSERT(kv->n_free > 0 && kv->refs[b] == 0);
    kv->n_free--;
    kv->refs[b] = 1;
    return b;
}

static void ref_block(ctn_kv_pool *kv, int32_t b) {
    if (kv->refs[b]++ == 0) { /* an evictable block back in use */
        lru_unlink(kv, b);
        kv->n_free--;
    }
}

static void release_block(ctn_kv_pool *kv, int32_t b) {
    CTN_ASSERT(b >= 0 && b < kv->n_blocks && kv->refs[b] > 0); /* held by whoever gives it */
    if (--kv->refs[b] > 0) return;
    if (kv->meta[b].cached)
        lru_append(kv, b);
    else
        kv->free_ids[kv->n_empty++] = b;
    kv->n_free++;
}

int ctn_kv_seq_init(ctn_kv_seq *s, const ctn_kv_pool *kv, int64_t max_pos) {
    memset(s, 0, sizeof *s);
    if (max_pos < 1 || max_pos > ((int64_t)1 << 30)) return CTN_EINVAL;
    const int64_t nb = (max_pos + kv->block_size - 1) / kv->block_size;
    s->table = ctn__malloc((size_t)nb * sizeof *s->table);
    if (s->table == NULL) return CTN_ENOMEM;
    s->max_blocks = (int32_t)nb;
    s->max_pos = max_pos;
    return 0;
}

void ctn_kv_seq_trim(ctn_kv_pool *kv, ctn_kv_seq *s, int32_t n_blocks) {
    if (n_blocks < 0) n_blocks = 0;
    while (s->n_blocks > n_blocks) {
        release_block(kv, s->table[--s->n_blocks]);
    }
    const int64_t held = (int64_t)s->n_blocks * kv->block_size;
    if (s->n_pos > held) s->n_pos = held;
    if (s->n_hashed > s->n_blocks) s->n_hashed = 0, s->hash = 0; /* recomputed on commit */
}

void ctn_kv_seq_clear(ctn_kv_pool *kv, ctn_kv_seq *s) {
    ctn_kv_seq_trim(kv, s, 0);
    s->n_pos = 0;
}

void ctn_kv_seq_close(ctn_kv_pool *kv, ctn_kv_seq *s) {
    if (s->table != NULL) ctn_kv_seq_clear(kv, s);
    free(s->table);
    memset(s, 0, sizeof *s);
}

/* True when the next write (position s->n_pos) would go into a block that the sequence holds
 * but must not change: another table shares it, or the prefix cache has registered it (a
 * sequence moved back into a full block, as a session does to recompute its last token). */
static bool shared_tail(const ctn_kv_pool *kv, const ctn_kv_seq *s) {
    const int64_t i = s->n_pos / kv->block_size;
    return i < s->n_blocks && (kv->refs[s->table[i]] > 1 || kv->meta[s->table[i]].cached);
}

int32_t ctn_kv_seq_blocks_needed(const ctn_kv_pool *kv, const ctn_kv_seq *s, int64_t n_pos) {
    const int64_t nb = (n_pos + kv->block_size - 1) / kv->block_size;
    const int32_t cow = n_pos > s->n_pos && shared_tail(kv, s) ? 1 : 0;
    return (nb > s->n_blocks ? (int32_t)(nb - s->n_blocks) : 0) + cow;
}

int ctn_kv_seq_reserve(ctn_kv_pool *kv, ctn_kv_seq *s, int64_t n_pos, char *err, size_t errlen) {
    if (n_pos > s->max_pos) {
        ctn__errf(err, errlen, "%" PRId64 " positions exceed the context length of %" PRId64, n_pos,
                  s->max_pos);
        return CTN_ERANGE;
    }
    const int32_t need = ctn_kv_seq_blocks_needed(kv, s, n_pos);
    if (need > kv->n_free) {
        ctn__errf(err, errlen,
                  "the KV cache is full: %" PRId64 " positions need %" PRId32
                  " more blocks, %" PRId32 " of %" PRId32 " are free",
                  n_pos, need, kv->n_free, kv->n_blocks);
        return CTN_ENOMEM;
    }
    if (n_pos > s->n_pos && shared_tail(kv, s)) {
        /* Copy-on-write: the partial last block gets a private copy (every layer's K and V)
         * before this sequence writes its next position into it. */
        /* (the copy of a registered block is private: it is not in the cache) */
        const int32_t i = (int32_t)(s->n_pos / kv->block_size), old = s->table[i];
        const int32_t b = take_block(kv);
        for (int64_t l = 0; l < kv->n_layer; l++) {
            const size_t lo = (size_t)l * (size_t)kv->n_blocks * 2 * kv->block_bytes;
            memcpy(kv->data + lo + (size_t)b * 2 * kv->block_bytes,
                   kv->data + lo + (size_t)old * 2 * kv->block_bytes, 2 * kv->block_bytes);
        }
        s->table[i] = b;
        release_block(kv, old);
    }
    while (s->n_blocks < (n_pos + kv->block_size - 1) / kv->block_size)
        s->table[s->n_blocks++] = take_block(kv);
    return 0;
}

int ctn_kv_seq_fork(ctn_kv_pool *kv, ctn_kv_seq *dst, const ctn_kv_seq *src) {
    if (dst->n_blocks != 0 || dst->max_blocks < src->n_blocks) return CTN_EINVAL;
    for (int32_t i = 0; i < src->n_blocks; i++) {
        ref_block(kv, src->table[i]);
        dst->table[i] = src->table[i];
    }
    dst->n_blocks = src->n_blocks;
    dst->n_pos = src->n_pos;
    dst->n_hashed = src->n_hashed;
    dst->hash = src->hash;
    return 0;
}

/* ---- prefix cache --------------------------------------------------------------------------- */

uint64_t ctn_kv_block_hash(uint64_t parent, const int32_t *t, int32_t bs, uint32_t tag) {
    uint64_t h = parent ^ (0x9E3779B97F4A7C15ull * ((uint64_t)tag + 1));
    for (int32_t i = 0; i < bs; i++) {
        h ^= (uint32_t)t[i];
        h *= 0x100000001B3ull;
        h ^= h >> 29;
    }
    h ^= h >> 32;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
}

/* The cached block with this chain (hash, parent block, tag) and these tokens, or -1. */
static int32_t lookup(const ctn_kv_pool *kv, uint64_t h, int32_t parent, uint32_t tag,
                      const int32_t *t) {
    for (int32_t b = kv->buckets[bucket_of(kv, h)]; b >= 0; b = kv->meta[b].hnext) {
        const ctn_kv_meta *m = &kv->meta[b];
        if (m->hash == h && m->parent == parent && m->tag == tag &&
            memcmp(kv->btoks + (size_t)b * (size_t)kv->block_size, t,
                   (size_t)kv->block_size * sizeof *t) == 0)
            return b;
    }
    return -1;
}

int64_t ctn_kv_prefix_adopt(ctn_kv_pool *kv, ctn_kv_seq *s, const int32_t *toks, int64_t n,
                            uint32_t tag) {
    if (s->n_blocks != 0) return 0;
    const int32_t bs = kv->block_size;
    int64_t full = n / bs;
    if (full > s->max_blocks) full = s->max_blocks;
    uint64_t h = 0;
    int32_t parent = -1, i = 0;
    for (; i < full; i++) {
        const uint64_t hi = ctn_kv_block_hash(h, toks + (size_t)i * (size_t)bs, bs, tag);
        const int32_t b = lookup(kv, hi, parent, tag, toks + (size_t)i * (size_t)bs);
        if (b < 0) break;
        ref_block(kv, b);
        s->table[s->n_blocks++] = b;
        h = hi;
        parent = b;
    }
    kv->hits += i;
    kv->misses += full - i;
    s->n_pos = (int64_t)i * bs;
    s->n_hashed = i;
    s->hash = h;
    return s->n_pos;
}

void ctn_kv_prefix_commit(ctn_kv_pool *kv, ctn_kv_seq *s, const int32_t *toks, uint32_t tag) {
    const int32_t bs = kv->block_size;
    const int32_t full = (int32_t)(s->n_pos / bs);
    for (int32_t i = s->n_hashed; i < full; i++) {
        const int32_t *t = toks + (size_t)i * (size_t)bs;
        const int32_t parent = i > 0 ? s->table[i - 1] : -1;
        const uint64_t h = ctn_kv_block_hash(s->hash, t, bs, tag);
        const int32_t b = s->table[i];
        ctn_kv_meta *m = &kv->meta[b];
        if (!m->cached && lookup(kv, h, parent, tag, t) < 0) {
            m->hash = h;
            m->parent = parent;
            m->tag = tag;
            m->cached = 1;
            memcpy(kv->btoks + (size_t)b * (size_t)bs, t, (size_t)bs * sizeof *t);
            const int32_t k = bucket_of(kv, h);
            m->hnext = kv->buckets[k];
            kv->buckets[k] = b;
            kv->n_cached++;
        }
        s->hash = h;
        s->n_hashed = i + 1;
    }
}
