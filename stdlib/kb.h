/*
 * The knowledge base: one SQLite file holding collections of documents, their chunks, the
 * chunks' embeddings and full-text indexes over the chunk text.
 *
 *     ctn_kb *kb;
 *     char err[256];
 *     if (ctn_kb_open("kb.sqlite", 0, &kb, err, sizeof err) < 0) ...
 *     ctn_kb_coll c;
 *     if (ctn_kb_collection(kb, "docs", &(ctn_kb_coll_opts){.create = true}, &c, err,
 *                           sizeof err) < 0) ...
 *     ctn_kb_doc d = {.uri = "docs/install.md", .hash = "fnv1a64:...", .size = 1234};
 *     if (ctn_kb_put(kb, &c, &d, chunks, NULL, err, sizeof err) < 0) ...
 *     ctn_kb_close(kb);
 *
 * Schema (PRAGMA user_version is its version; ctn_kb_open migrates an older file in one
 * transaction and refuses a newer one):
 *   collections(id, name UNIQUE, embed_model, embed_dim, labels JSON, created, generation
 *               (one more for every transaction that changed the collection's documents),
 *               uid (random, made with the collection))
 *   documents(id, collection, uri, hash, mtime, size, loader, metadata JSON, ingested,
 *             UNIQUE(collection, uri))
 *   chunks(id, document, idx, text, page, section, start_index, end_index, metadata JSON,
 *          UNIQUE(document, idx))
 *   embeddings(chunk, model, dtype 'f32' | 'f16' | 'int8', dim, scale, vector BLOB,
 *              PRIMARY KEY(chunk, model))
 *   chunks_fts (FTS5, unicode61 without diacritics) and chunks_tri (FTS5 trigram, for
 *   Korean, Chinese and Japanese), external-content indexes over chunks.text kept by
 *   triggers.
 * The file is in WAL mode. Every change to a document (its row, chunks, embeddings and
 * index entries) is one transaction, so a process killed at any moment leaves each document
 * either as it was or wholly replaced; the next ingest sees by the stored hash what is
 * missing or stale and completes it.
 *
 * Threads: a ctn_kb is one SQLite connection, used by one thread at a time (the ingest runs
 * its writes on the libuv thread pool, one at a time). Errors are CTN_E* codes with a message
 * in err naming the file and what failed (SQLite's own message included); CTN_EFORMAT for a
 * file that is not a catena knowledge base, CTN_ENOTSUP for one from a newer catena.
 */
#ifndef CTN_KB_H
#define CTN_KB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "value.h"

typedef struct ctn_kb ctn_kb;

enum { CTN_KB_SCHEMA_VERSION = 2 };

enum {
    CTN_KB_READONLY = 1, /* open an existing file for reading only */
};

/* Opens (creating when missing, unless CTN_KB_READONLY) the knowledge base at path. */
int ctn_kb_open(const char *path, int flags, ctn_kb **out, char *err, size_t errcap);
void ctn_kb_close(ctn_kb *kb); /* NULL is a no-op */
/* The path it was opened with (owned by kb). */
const char *ctn_kb_path(const ctn_kb *kb);

/* ---- collections ------------------------------------------------------------------------ */

typedef enum { CTN_KB_F32, CTN_KB_F16, CTN_KB_INT8 } ctn_kb_dtype;

typedef struct {
    bool create;             /* make it when missing (else CTN_ENOENT) */
    const char *embed_model; /* the embedding model's identity (ctn_kb_model_id), or NULL */
    int embed_dim;           /* its dimension (with embed_model) */
    const char *const *labels; /* labels of a new collection (data labels for routing) */
    size_t n_labels;
} ctn_kb_coll_opts;

typedef struct {
    int64_t id;
    char name[128];
    char embed_model[256]; /* "" when none is recorded */
    int embed_dim;
} ctn_kb_coll;

/*
 * Finds (or with o->create makes) the collection name. With o->embed_model, the collection
 * must record that model: one without a model takes it only while it holds no chunks (chunks
 * stored without vectors would stay unfindable by vector; CTN_EINVAL says so);
 * one with another model is CTN_EINVAL naming both ("collection 'docs' is embedded with
 * 'bge-small:384'; 'stories:64' was asked for"), so vectors of two models never mix.
 */
int ctn_kb_collection(ctn_kb *kb, const char *name, const ctn_kb_coll_opts *o, ctn_kb_coll *out,
                      char *err, size_t errcap);

/* The identity a collection records for an embedding model: its file's base name, its
 * architecture and dimension ("stories260K.gguf:llama:64"). */
int ctn_kb_model_id(const char *path, const char *arch, int dim, char *out, size_t cap);

/* ---- documents -------------------------------------------------------------------------- */

typedef struct {
    const char *uri;    /* a path or name, unique in the collection */
    const char *hash;   /* content hash (ctn_kb_hash) */
    int64_t mtime;      /* seconds, or 0 */
    int64_t size;       /* bytes */
    const char *loader; /* "markdown", ... or NULL */
    const ctn_val *meta; /* document metadata (an object) or NULL */
} ctn_kb_doc;

/* The content hash stored with a document: "fnv1a64:" and 16 hex digits of the bytes, then
 * ":" and their count. out needs 48 bytes. */
void ctn_kb_hash(const void *data, size_t n, char out[48]);

typedef enum { CTN_KB_NEW, CTN_KB_SAME, CTN_KB_CHANGED } ctn_kb_state;

/* Whether the collection holds uri with this hash (SAME), with another (CHANGED) or not at
 * all (NEW). */
int ctn_kb_doc_state(ctn_kb *kb, const ctn_kb_coll *c, const char *uri, const char *hash,
                     ctn_kb_state *state, char *err, size_t errcap);

/*
 * Adds the document, or replaces the one with its uri, with its chunks (an array of chunk
 * documents as the splitters make them: "chunk", "page", "section", "start_index",
 * "end_index" are stored in their columns, the rest in the chunk's metadata) and, when emb is
 * not NULL, one embedding per chunk (emb->n == number of chunks), all in one transaction.
 * With emb, the collection must record emb->model (ctn_kb_collection).
 */
typedef struct {
    const char *model;  /* the collection's embed_model */
    int dim;
    size_t n;           /* rows */
    const float *vecs;  /* n * dim floats, row-major */
    ctn_kb_dtype dtype; /* how they are stored */
} ctn_kb_vectors;

int ctn_kb_put(ctn_kb *kb, const ctn_kb_coll *c, const ctn_kb_doc *d, const ctn_val *chunks,
               const ctn_kb_vectors *emb, char *err, size_t errcap);

/* Removes the document uri (and its chunks, embeddings, index entries); *removed gets 1 or
 * 0 when it was not there. */
int ctn_kb_remove(ctn_kb *kb, const ctn_kb_coll *c, const char *uri, int *removed, char *err,
                  size_t errcap);

/*
 * Prune: removes, in one transaction, every document of the collection whose uri starts with
 * one of the n prefixes (a folder ingested again) but is not among the keep uris (the files
 * found there now). *removed gets the count.
 */
int ctn_kb_prune(ctn_kb *kb, const ctn_kb_coll *c, const char *const *prefixes, size_t n,
                 const char *const *keep, size_t n_keep, int64_t *removed, char *err,
                 size_t errcap);

/* ---- reading ---------------------------------------------------------------------------- */

typedef struct {
    char name[128];
    char embed_model[256];
    int embed_dim;
    int64_t documents, chunks, embeddings;
    int64_t text_bytes; /* of the chunks */
} ctn_kb_coll_stats;

/* Statistics of every collection, in name order: fn is called once per collection; a
 * non-zero return stops and is returned. */
int ctn_kb_stats(ctn_kb *kb, int (*fn)(void *ud, const ctn_kb_coll_stats *s), void *ud,
                 char *err, size_t errcap);

/* The documents of a collection (all when c is NULL), in uri order: fn gets the collection
 * name, uri, hash, number of chunks and the stored metadata JSON. */
int ctn_kb_list(ctn_kb *kb, const ctn_kb_coll *c,
                int (*fn)(void *ud, const char *coll, const char *uri, const char *hash,
                          int64_t chunks, const char *meta_json),
                void *ud, char *err, size_t errcap);

/*
 * The chunks of a document as chunk documents (text and metadata as ctn_kb_put took them:
 * the columns put back as metadata fields), appended to out in index order. For showing a
 * hit in place and for the tests' round trips.
 */
int ctn_kb_chunks(ctn_kb *kb, const ctn_kb_coll *c, const char *uri, ctn_val *out, char *err,
                  size_t errcap);

/* A read transaction: every read between these sees the file as it was at the first one,
 * whatever other connections commit meanwhile (WAL), so a search and the reading of its
 * hits agree. */
int ctn_kb_read_begin(ctn_kb *kb, char *err, size_t errcap);
void ctn_kb_read_end(ctn_kb *kb);

/* One chunk of c by id as a document (*out, the caller's), its metadata as ctn_kb_chunks
 * gives it plus "source" (the document's uri) when it has none; CTN_ENOENT when c has no
 * such chunk. */
int ctn_kb_chunk(ctn_kb *kb, const ctn_kb_coll *c, int64_t chunk, ctn_val **out, char *err,
                 size_t errcap);

/* Calls fn for every vector of c's embedding model, in chunk order, decoded to floats (dim:
 * the collection's); fn's nonzero return stops the walk and is returned. A collection
 * without a model is CTN_EINVAL; a stored vector of the wrong size CTN_EFORMAT naming its
 * chunk. */
int ctn_kb_each_vector(ctn_kb *kb, const ctn_kb_coll *c,
                       int (*fn)(void *ud, int64_t chunk, const float *vec, int dim), void *ud,
                       char *err, size_t errcap);
/* The vector of one chunk of c, decoded into vec (the collection's dim floats); CTN_ENOENT
 * when the chunk has none. */
int ctn_kb_vector(ctn_kb *kb, const ctn_kb_coll *c, int64_t chunk, float *vec, char *err,
                  size_t errcap);

/* The collection's random identity and change count (schema): the same pair read in two
 * transactions means the same documents, chunks and vectors, so what a reader built from
 * them may be kept. */
int ctn_kb_generation(ctn_kb *kb, const ctn_kb_coll *c, int64_t *uid, int64_t *gen, char *err,
                      size_t errcap);

/* ---- metadata filters --------------------------------------------------------------------- */

/*
 * A filter on the chunks (LangChain's vector-store filters, with Chroma's and MongoDB's
 * operators), made from an object:
 *     {source = "docs/a.md", page = {["$gte"] = 2, ["$lt"] = 5}, section = {"Install", "Use"},
 *      lang = {["$ne"] = "ko"}, ["$or"] = {{labels = "public"}, {year = {["$gt"] = 2020}}}}
 * Every field of the object must hold (AND). A field's value is a string, number or boolean
 * (equal), null (missing), an array (any of them: $in) or an object of operators, all of
 * which must hold: $eq $ne $gt $gte $lt $lte $in $nin $exists. $ne and $nin also match a
 * chunk without the field (as MongoDB's do). $and and $or take arrays of filters, $not one.
 * Fields: "source" (the chunk's, else its document's uri), "page", "section",
 * "start_index", "end_index", "chunk" (its index in the document), "labels" (any label of
 * the chunk's metadata, its document's metadata or its collection: $eq $ne $in $nin) and
 * any other name: the chunk's metadata field, else its document's (a dotted name reaches
 * into nested objects: "author.name"). Values are bound as SQL parameters, never pasted.
 * A malformed filter is CTN_EINVAL naming the field and operator; nothing is searched.
 */
typedef struct ctn_kb_filter ctn_kb_filter;

int ctn_kb_filter_new(const ctn_val *spec, ctn_kb_filter **out, char *err, size_t errcap);
void ctn_kb_filter_free(ctn_kb_filter *f); /* NULL is a no-op */

/* The ids of c's chunks that pass f, ascending, into *ids (malloc'd; NULL when none). */
int ctn_kb_filter_chunks(ctn_kb *kb, const ctn_kb_coll *c, const ctn_kb_filter *f,
                         int64_t **ids, size_t *n, char *err, size_t errcap);

/* ---- keyword search ----------------------------------------------------------------------- */

typedef struct {
    int64_t chunk; /* the chunk's id */
    double score;  /* higher is better */
} ctn_kb_hit;

typedef struct {
    double k1, b;                /* BM25's: k1 from 0 to 100, b from 0 to 1 */
    const ctn_kb_filter *filter; /* NULL: every chunk */
} ctn_kb_bm25_opts;

/* k1 1.2, b 0.75 (FTS5's, Lucene's and rank_bm25's), no filter. */
ctn_kb_bm25_opts ctn_kb_bm25_defaults(void);

/*
 * BM25 over the collection's chunks through FTS5 with o's k1 and b (NULL: the defaults;
 * FTS5's own bm25() then, a ranking function of the same formula otherwise) over the
 * chunks that pass o->filter, applied inside the query: the best k
 * (1 to 10000) in hits, *found of them, best first (ties by chunk id). Any text is a valid
 * query: it is cut into words at ASCII spaces, punctuation and invalid UTF-8, each word
 * searched as a quoted phrase, any of them matching (OR), so quotes, operators (AND, NOT,
 * NEAR, *, ^), column filters and parentheses in it are words or separators, never FTS5
 * syntax. A query with Hangul, CJK or kana is also searched in the trigram index (its words
 * of 3 characters or more: a shorter one matches nothing there) and both lists are fused by
 * reciprocal rank (k = 60; the scores are then the fused ones). A query without words finds
 * nothing (0, *found = 0).
 */
int ctn_kb_bm25(ctn_kb *kb, const ctn_kb_coll *c, const char *query, size_t n,
                const ctn_kb_bm25_opts *o, size_t k, ctn_kb_hit *hits, size_t *found, char *err,
                size_t errcap);
/* Reciprocal-rank fusion (k = 60, as LangChain's EnsembleRetriever and most hybrid search)
 * of m ranked lists (lists[l], ns[l] hits, best first) with weights w[l]: each chunk scores
 * the sum of w / (60 + rank) over the lists it is in, rank from 1; the best k into out (ties
 * by chunk id; out may be one of the lists). Returns how many, or CTN_ENOMEM. */
long ctn_kb_rrf(const ctn_kb_hit *const *lists, const size_t *ns, const double *w, size_t m,
                ctn_kb_hit *out, size_t k);
/* The FTS5 MATCH expression ctn_kb_bm25 makes of query (malloc'd; "" when it has no words;
 * NULL: out of memory); trigram drops the words under 3 characters; *cjk (may be NULL): the
 * query has Hangul, CJK or kana. */
char *ctn_kb_fts_query(const char *query, size_t n, bool trigram, bool *cjk);

/* Runs SQLite's integrity_check and the FTS5 indexes' integrity-check: 0 when the file is
 * sound, CTN_EFORMAT with the first problem otherwise. The FTS5 check needs kb opened for
 * writing (CTN_EINVAL on a CTN_KB_READONLY one), though it changes nothing. */
int ctn_kb_check(ctn_kb *kb, char *err, size_t errcap);

#endif
