/*
 * Exact k-nearest-neighbour search over vectors held in memory (the first part of the
 * retrieval issue): every stored vector is scored against every query, no approximation but
 * the storage type's. The scores come from the engine's matrix kernels (kernels/cpu/kern.h,
 * the best ISA the CPU has), with the stored vectors as the weight rows and the queries as the
 * activation rows, so several queries are scored in ONE pass over the matrix: a multi-query
 * search reads the vectors once.
 *
 *     ctn_vs *vs;
 *     if (ctn_vs_new(384, CTN_KB_F32, CTN_VS_COSINE, &vs, err, sizeof err) < 0) ...
 *     ctn_vs_add(vs, chunk_id, vec, err, sizeof err);          // copied (normalised: cosine)
 *     ctn_vs_set_threads(vs, 0, err, sizeof err);              // every CPU, for 4096 rows or more
 *     ctn_vs_hit hits[2 * 10];
 *     size_t found[2];
 *     ctn_vs_search(vs, queries, 2, 10, NULL, hits, found, err, sizeof err);
 *     // hits[q * 10 + i], i < found[q], best first
 *     ctn_vs_free(vs);
 *
 * Storage types (kb.h): CTN_KB_F32 (exact), CTN_KB_F16 (IEEE half; the queries are
 * rounded to half for the product, as the engine's F16 kernel reads them), and CTN_KB_INT8:
 * ggml's Q8_0 blocks (an int8 per element and a half scale per 32, the dimension padded with
 * zeros to a multiple of 32), scored by int8 dot products against the query quantized the
 * same way; the best max(rescore, k) candidates of each query are then scored again in f32,
 * the query against the vectors as they were given, which an INT8 index keeps beside its
 * int8 rows (the scan reads a quarter of the bytes; the memory is 1.25 times f32's), and
 * ordered by that (rescore 0: 8 * k, at least 64).
 *
 * Metrics: COSINE (vectors and queries normalised to unit length when added and searched;
 * the score is the cosine, higher is better), DOT (the inner product, higher is better), L2
 * (the squared Euclidean distance, as FAISS's IndexFlatL2 reports it; lower is better).
 * Hits are ordered best first, ties by the order the vectors were added.
 *
 * Filtering happens before scoring: allow (NULL: every vector) is a bitmap over the
 * positions of the vectors in the order they were added (bit i of allow[i / 8]); only
 * allowed rows are read and scored.
 *
 * Threads: a collection of 4096 vectors or more is split over the threads given by
 * ctn_vs_set_threads (none by default): each takes the next 256 rows as it finishes the last
 * and keeps its own candidates per query, merged at the end; the hits are the same, in the
 * same order, as on one thread.
 *
 * A ctn_vs is not locked: add, set_threads and search may not run at the same time; searches
 * may run at the same time as each other (one of them uses the threads, the others run on
 * their callers' threads).
 */
#ifndef CTN_VSEARCH_H
#define CTN_VSEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "kb.h" /* ctn_kb_dtype: the storage types are the knowledge base's */

typedef enum { CTN_VS_COSINE, CTN_VS_DOT, CTN_VS_L2 } ctn_vs_metric;

typedef struct {
    int64_t id;  /* as given to ctn_vs_add */
    size_t pos;  /* the position it was added at */
    float score; /* the cosine, the inner product, or the squared distance */
} ctn_vs_hit;

typedef struct ctn_vs ctn_vs;

/* dim from 1 to 65536. CTN_EINVAL for a bad dim, dtype or metric. */
int ctn_vs_new(int dim, ctn_kb_dtype dtype, ctn_vs_metric metric, ctn_vs **out, char *err,
               size_t errcap);
void ctn_vs_free(ctn_vs *vs);

/* Appends one vector of dim floats. A value that is not finite, or a zero vector under
 * COSINE, is CTN_EINVAL (nothing added); CTN_ENOMEM when memory runs out (nothing added). */
int ctn_vs_add(ctn_vs *vs, int64_t id, const float *vec, char *err, size_t errcap);
size_t ctn_vs_count(const ctn_vs *vs);
int ctn_vs_dim(const ctn_vs *vs);

/* Candidates the CTN_KB_INT8 search rescores per query (0: the default, 8 * k and at least 64). */
void ctn_vs_set_rescore(ctn_vs *vs, size_t rescore);

/*
 * The threads a search of a large collection uses: n from 1 (none: the caller's thread
 * alone, as a new ctn_vs has) to 512, 0 for ctn_pool_default_threads() (the CPUs this
 * process may run on). The workers are started here and kept, idle, until the next call or
 * ctn_vs_free. CTN_EINVAL for n out of range, CTN_ENOMEM when the threads cannot be started;
 * on an error the threads stay as they were.
 */
int ctn_vs_set_threads(ctn_vs *vs, int n, char *err, size_t errcap);
/* The threads set (1 when none). */
int ctn_vs_threads(const ctn_vs *vs);

/*
 * Searches nq queries (nq * dim floats, query q at queries + q * dim) for their k best
 * vectors among the allowed ones: hits[q * k + i] for i < found[q] (found[q] is k, or fewer
 * when fewer vectors are allowed). k from 1 to 10000, nq from 1 to 1024. A query that is
 * not finite, or zero under COSINE, is CTN_EINVAL naming it; CTN_ENOMEM when memory runs
 * out. Nothing is written to hits or found on an error.
 */
int ctn_vs_search(const ctn_vs *vs, const float *queries, size_t nq, size_t k,
                  const uint8_t *allow, ctn_vs_hit *hits, size_t *found, char *err,
                  size_t errcap);

#endif
