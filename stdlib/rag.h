/*
 * The RAG components as chain nodes (chain.h custom nodes): loaders, splitters, and adding
 * to or ingesting into a knowledge base. Their work runs on the libuv thread pool, never on
 * the loop thread; the nodes copy their input before handing it over, so the pool never
 * touches a value the chain still shares.
 *
 *     ctn_loader_node_opts lo = {.kind = CTN_LOADER_NONE, .path = "examples/docs"};
 *     ctn_node *load = ctn_loader_node(&lo, err, sizeof err);       // -> [documents]
 *     ctn_split_opts so = ctn_split_defaults();
 *     so.chunk_size = 800, so.chunk_overlap = 80;
 *     ctn_node *split = ctn_splitter_node(CTN_SPLIT_RECURSIVE, &so, NULL, err, sizeof err);
 *     ctn_node *chain = ctn_node_sequence((ctn_node *[]){load, split}, 2);
 *
 * Warnings (a loader's invalid bytes, a file skipped) go to the node's warn callback, on the
 * loop thread; NULL drops them.
 */
#ifndef CTN_RAG_H
#define CTN_RAG_H

#include <stdbool.h>
#include <stddef.h>

#include "chain.h"
#include "ingest.h"
#include "kb.h"
#include "lm.h"
#include "loader.h"
#include "retrieve.h"
#include "split.h"

typedef void (*ctn_warn_fn)(void *ud, const char *msg);

/*
 * A loader. Input: a path (string), an array of paths, or null to load o->path. Output: an
 * array of documents, in path order. A folder is listed with o->glob (ctn_list_files) and
 * each file loaded by its extension; o->kind other than CTN_LOADER_NONE loads every file
 * with that loader. A file that fails fails the node with its message, unless skip_errors:
 * then it is left out with a warning.
 */
typedef struct {
    ctn_loader_kind kind;
    const char *path; /* copied; may be NULL */
    const char *glob; /* copied; may be NULL */
    ctn_json_sel json; /* copied */
    bool skip_errors;
    ctn_warn_fn warn;
    void *warn_ud;
    void (*free_warn_ud)(void *ud);
} ctn_loader_node_opts;

ctn_node *ctn_loader_node(const ctn_loader_node_opts *o, char *err, size_t errcap);

/*
 * A splitter. Input: a document, a string, or an array of them. Output: the array of chunk
 * documents (split.h). tokens_lm (a reference is taken; may be NULL) measures lengths in
 * its tokens. The separators of o are copied.
 */
ctn_node *ctn_splitter_node(ctn_split_kind kind, const ctn_split_opts *o, ctn_lm *tokens_lm,
                            char *err, size_t errcap);

/* Where a knowledge-base node writes. Strings are copied; embed gets a reference. */
typedef struct {
    const char *path;       /* the knowledge base file */
    const char *collection; /* NULL: "default" */
    const char *const *labels; /* of a new collection */
    size_t n_labels;
    ctn_lm *embed;          /* NULL: no embeddings */
    int pooling;            /* CTN_POOL_NONE: the model's */
    ctn_kb_dtype dtype;
} ctn_kb_target;

/*
 * Adds documents. Input: a document, a string, or an array of them (chunks, as a splitter
 * gives them). Documents with the same metadata "source" become one stored document with
 * that uri (replacing one stored under it), in input order; one without a source is stored
 * under "text:" and its hash. Each is embedded with t->embed first. Output: {documents = n,
 * chunks = n}.
 */
ctn_node *ctn_kb_add_node(const ctn_kb_target *t, char *err, size_t errcap);

/*
 * Ingests files (ingest.h). Input: a path, an array of paths, or null for o->paths. Output:
 * {files, added, replaced, skipped, failed, removed, chunks, embedded, embed_tokens,
 * seconds, failures = [{path, message}]}. Failing files do not fail the node (they are in
 * failures); a database error does. The splitter settings of o are copied, its callbacks
 * and o->embed are replaced by t's.
 */
ctn_node *ctn_kb_ingest_node(const ctn_kb_target *t, const ctn_ingest_opts *o,
                             ctn_warn_fn warn, void *warn_ud, char *err, size_t errcap);

/*
 * A retriever over a collection. Input: the query (a string, or a document's text), or an
 * array of 1 to 64 queries (the versions of a question: their lists are fused, retrieve.h).
 * Output: an array of the k best chunks as documents (ctn_kb_chunk: text, the stored
 * metadata, "source"), each with metadata "score", best first. Modes (retrieve.h):
 * CTN_RETRIEVE_BM25 (keyword search, ctn_kb_bm25), CTN_RETRIEVE_VECTOR (the queries embedded
 * with t->embed, which must be the collection's model, and compared with every stored vector
 * by cosine) and CTN_RETRIEVE_HYBRID (both lists fused by reciprocal rank), with MMR on
 * request. The filter (kb.h, ctn_kb_filter_new; copied, and refused at once when malformed)
 * limits every list. The search runs on the thread pool, reading the file as it is then: a
 * document being replaced by an ingest at the same time is seen whole, before or after (its
 * write is one transaction). The collection's vectors are held in memory between queries and
 * read again when the collection has changed.
 */
typedef struct {
    ctn_search_opts search; /* its bm25.filter is not used: */
    const ctn_val *filter;  /* a filter object, or NULL */
} ctn_retriever_opts;

ctn_node *ctn_kb_retriever_node(const ctn_kb_target *t, const ctn_retriever_opts *o, char *err,
                                size_t errcap);

#endif
