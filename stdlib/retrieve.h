/*
 * Retrieval over a knowledge-base collection: one function for every way of searching it
 * (keyword, vector, both fused, MMR-diversified, one query or several), shared by the
 * retriever nodes (rag.h) and `catena search`.
 *
 *     ctn_search_opts o = ctn_search_defaults();
 *     o.mode = CTN_RETRIEVE_HYBRID, o.k = 5;
 *     ctn_kb_hit hits[5];
 *     size_t found;
 *     ctn_kb_read_begin(kb, err, sizeof err);                  // one snapshot for all of it
 *     rc = ctn_kb_search(kb, &coll, cache, &o, 1, &query, &qlen, qvec, hits, &found, err,
 *                        sizeof err);
 *     ctn_val *doc;
 *     for (size_t i = 0; rc == 0 && i < found; i++)              // the hits as documents
 *         if (ctn_kb_chunk(kb, &coll, hits[i].chunk, &doc, err, sizeof err) == 0)
 *             ctn_val_unref(doc);
 *     ctn_kb_read_end(kb);
 *
 * The vectors of the collection are read into an exact in-memory index (vsearch.h, f32,
 * cosine) for the search. With a ctn_vcache the index is kept between searches and read
 * again only when the collection has changed (its uid and generation, kb.h): a search in a
 * read transaction after an ingest committed sees the new vectors, one before sees the old.
 */
#ifndef CTN_RETRIEVE_H
#define CTN_RETRIEVE_H

#include <stdbool.h>
#include <stddef.h>

#include "kb.h"

typedef enum { CTN_RETRIEVE_VECTOR, CTN_RETRIEVE_BM25, CTN_RETRIEVE_HYBRID } ctn_retrieve_mode;

typedef struct {
    ctn_retrieve_mode mode;
    size_t k;       /* the hits wanted, 1 to 1000 */
    size_t fetch_k; /* each list's length before fusion, and MMR's candidates: k to 10000 */
    ctn_kb_bm25_opts bm25;       /* k1, b and the filter (which applies to vectors too) */
    double w_vector, w_bm25;     /* hybrid: the lists' weights in the fusion (>= 0, one > 0) */
    bool mmr;                    /* maximal marginal relevance over fetch_k vector candidates */
    double lambda;               /* MMR: 1 relevance only, 0 diversity only */
} ctn_search_opts;

/* mode vector, k 4, fetch_k 20, BM25's defaults, weights 1 and 1, no MMR, lambda 0.5 (as
 * LangChain's). */
ctn_search_opts ctn_search_defaults(void);

/* CTN_EINVAL with a message naming the setting when o is out of range (mmr with the bm25
 * mode included: MMR compares vectors). */
int ctn_search_check(const ctn_search_opts *o, char *err, size_t errcap);

/* The vectors of one collection kept in memory between searches; shared by threads (a
 * search takes a reference to the index it uses, so a rebuild never frees one in use). */
typedef struct ctn_vcache ctn_vcache;
ctn_vcache *ctn_vcache_new(void); /* NULL: out of memory */
void ctn_vcache_free(ctn_vcache *vc);

/*
 * Searches c for nq queries (1 to 64; texts and lens: the keyword queries; qvecs: nq *
 * c->embed_dim floats, the query vectors, for the vector and hybrid modes; NULL for bm25).
 * Each query gives its list of the mode (hybrid: vector and keyword lists of fetch_k fused
 * by reciprocal rank with the weights); several queries' lists are fused again by
 * reciprocal rank into one (a chunk found by several versions of a question rises), their
 * vectors scored in one pass over the index. MMR then picks k of the fused candidates: each
 * next the one with the best lambda * cosine(query, chunk) - (1 - lambda) * max cosine(chunk,
 * picked), against the first query. The best k into hits (room for k), *found of them, best
 * first; scores: BM25's, the cosine, the fused one, or MMR's cosine to the query.
 * cache may be NULL. The caller may hold a read transaction (ctn_kb_read_begin) so that the
 * search and the reading of its hits see one state of the file.
 */
int ctn_kb_search(ctn_kb *kb, const ctn_kb_coll *c, ctn_vcache *cache, const ctn_search_opts *o,
                  size_t nq, const char *const *texts, const size_t *lens, const float *qvecs,
                  ctn_kb_hit *hits, size_t *found, char *err, size_t errcap);

#endif
