/*
 * Ingest: files on disk into a knowledge base collection, on a libuv loop. Reading, hashing,
 * loading, splitting and every database write run on the libuv thread pool; embeddings go to
 * the shared engine (lm.h) many at a time, so its batches stay full; the loop thread only
 * moves work between them and reports.
 *
 *     ctn_ingest_opts o = ctn_ingest_defaults();
 *     o.paths = (const char *[]){"examples/docs"}, o.n_paths = 1;
 *     o.collection = "docs";
 *     o.on_done = done;                          // once, on the loop thread
 *     ctn_ingest *ing;
 *     if (ctn_ingest_start(loop, kb, &o, &ing, err, sizeof err) < 0) ...
 *     uv_run(loop, UV_RUN_DEFAULT);
 *
 * Per file: its bytes are hashed and compared with the collection's record of its path; an
 * unchanged file is skipped, a new or changed one loaded (by extension), split, embedded
 * (with o.embed) and written in one transaction (kb.h), so a run killed at any moment leaves
 * the base consistent and the next run completes it. A file that fails is reported through
 * on_file and counted, and the run goes on. With prune, documents under the folders named
 * in paths whose files are gone are removed at the end.
 *
 * The kb must not be used by the caller until on_done. The ingest frees itself after on_done
 * returns.
 */
#ifndef CTN_INGEST_H
#define CTN_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kb.h"
#include "lm.h"
#include "loader.h"
#include "split.h"

typedef struct ctn_ingest ctn_ingest;

typedef struct {
    int64_t files_total; /* found so far (all, once listing is done) */
    int64_t files_done;
    int64_t added, replaced, skipped, failed, removed;
    int64_t pages;     /* PDF pages loaded */
    int64_t chunks;    /* chunks written */
    int64_t embedded;  /* chunks embedded */
    int64_t embed_tokens; /* prompt tokens the engine computed for this ingest's embeddings */
    /* Contextual chunks (contextualize): chunks given a context, the prompt tokens the
     * engine computed for them, the prompt tokens one request per chunk with the whole
     * window in its prompt would have computed, and the context tokens written. */
    int64_t contextualized, context_prefill, context_naive, context_tokens;
    double elapsed_s;
    bool listing; /* still looking for files */
} ctn_ingest_progress;

typedef struct {
    const char *const *paths; /* files or folders */
    size_t n_paths;
    const char *glob;         /* for folders (ctn_list_files); NULL: known extensions */
    const char *collection;   /* created when missing; "default" when NULL */
    const char *const *labels; /* of a new collection */
    size_t n_labels;
    ctn_split_kind splitter;
    ctn_split_opts split;
    const ctn_json_sel *json; /* how .json / .jsonl files are read; NULL: whole records */
    ctn_lm *embed;            /* the embedding model, or NULL: no embeddings */
    /*
     * Contextual chunks (Anthropic's contextual retrieval), or NULL: this model writes, for
     * each chunk, a one-line context situating it in its document, which is put before the
     * chunk's text ("context\n\nchunk") before it is embedded and keyword-indexed, and kept
     * as metadata.context (start_index and end_index still point into the document). The
     * document is prefilled once into an engine session and every chunk's context is
     * written from a fork of it, so the document is not computed again per chunk. A document
     * too long for the model's context is cut into windows of whole consecutive chunks, each
     * prefilled once; a chunk sees its window. Greedy, at most context_tokens (0: 64)
     * tokens, ending at the first newline. The prompt is plain text, not a chat template.
     */
    ctn_lm *contextualize;
    int context_tokens;
    int pooling;              /* CTN_POOL_*; CTN_POOL_NONE: the model's (ctn_lm_pooling) */
    ctn_kb_dtype dtype;       /* how vectors are stored */
    bool prune;
    int max_files;  /* files loading or splitting at once (0: 4) */
    int max_embeds; /* embedding requests in flight (0: 256) */
    /* Progress, at most every 100 ms and at the end. May be NULL. */
    void (*on_progress)(void *ud, const ctn_ingest_progress *p);
    /* Per file: status "added", "replaced", "skipped", "failed" (msg says why), "warning"
     * (msg: a loader's warning), "removed" (pruned). May be NULL. */
    void (*on_file)(void *ud, const char *path, const char *status, const char *msg);
    /* Once, at the end: rc 0, CTN_ECANCELED, or the error that stopped the whole run (the
     * database failing; files failing do not stop it) with msg. */
    void (*on_done)(void *ud, const ctn_ingest_progress *p, int rc, const char *msg);
    void *ud;
} ctn_ingest_opts;

/* Recursive splitting at LangChain's 4000 / 200 (ctn_split_defaults), f32 vectors. */
ctn_ingest_opts ctn_ingest_defaults(void);

/*
 * Checks the options (the splitter's settings, the collection and its embedding model,
 * ctn_kb_collection) and starts; 0, or a CTN_E* code with the reason in err and nothing
 * started (no callback). Called on the loop's thread; every callback comes on it.
 */
int ctn_ingest_start(uv_loop_t *loop, ctn_kb *kb, const ctn_ingest_opts *o, ctn_ingest **out,
                     char *err, size_t errcap);

/* Stops starting new files and cancels embeddings in flight; work already on the pool
 * finishes (each file's write is whole or absent); on_done comes with CTN_ECANCELED. */
void ctn_ingest_cancel(ctn_ingest *ing);

#endif
