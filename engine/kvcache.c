/* The paged KV cache (see kvcache.h). */
#include "kvcache.h"

#include <inttypes.h>
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
    if (kv->data == NULL || kv->refs == NULL || kv->free_ids == NULL) goto nomem;
    /* Lowest ids on top of the stack: a fresh sequence gets blocks 0, 1, 2, ... */
    for (size_t i = 0; i < n; i++)
        kv->free_ids[i] = (int32_t)(n - 1 - i);
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
    free(kv);
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
        const int32_t b = s->table[--s->n_blocks];
        if (--kv->refs[b] == 0) kv->free_ids[kv->n_free++] = b;
    }
    const int64_t held = (int64_t)s->n_blocks * kv->block_size;
    if (s->n_pos > held) s->n_pos = held;
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

int32_t ctn_kv_seq_blocks_needed(const ctn_kv_pool *kv, const ctn_kv_seq *s, int64_t n_pos) {
    const int64_t nb = (n_pos + kv->block_size - 1) / kv->block_size;
    return nb > s->n_blocks ? (int32_t)(nb - s->n_blocks) : 0;
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
    for (int32_t i = 0; i < need; i++) {
        const int32_t b = kv->free_ids[--kv->n_free];
        kv->refs[b] = 1;
        s->table[s->n_blocks++] = b;
    }
    return 0;
}
