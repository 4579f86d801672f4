/*
 * Ingest (ingest.h). Each file moves through:
 *   prepare (pool)  read, hash, compare with the stored hash; load and split when it changed;
 *                   without embeddings, also write it;
 *   embed   (loop)  one ctn_lm_embed per chunk, at most max_embeds in flight over all files;
 *   write   (pool)  the document, chunks and vectors in one transaction.
 * The kb connection is used by one pool thread at a time (db_lock). Counters and lists are
 * touched on the loop thread only.
 */
#include "ingest.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "error.h"
#include "str.h"
#include "vocab.h"

typedef struct ing_file ing_file;

struct ctn_ingest {
    uv_loop_t *loop;
    ctn_kb *kb;
    ctn_kb_coll coll;
    ctn_ingest_opts o;
    pthread_mutex_t db_lock;

    /* Copies of what the options point at, owned here. */
    char **paths;
    char *glob;

    uv_work_t list_work;
    char **files; /* every file found, in order */
    size_t n_files;
    int list_rc;
    char list_err[512];
    ctn_strbuf list_failures; /* "path\tmessage\n" lines of inputs that could not be listed */

    size_t next;      /* the next file to start */
    int files_active; /* between prepare and the end of write */
    int embeds_active;
    ing_file *embed_queue, *embed_tail; /* files whose chunks wait for a slot */
    ing_file *all;                      /* files started and not yet freed */

    ctn_ingest_progress p;
    int64_t prefill0;
    uint64_t t0, last_report;
    bool cancelled, done, pruning, settling;
    /* The end is reached inside callbacks of many kinds (and inside ctn_ingest_cancel), so
     * it is carried out from this timer, on a clean stack, where freeing is safe. */
    uv_timer_t settle;
    uv_work_t prune_work;
    int prune_rc;
    char prune_err[512];
    char **removed;
    size_t n_removed;
    int fatal_rc;
    char fatal_err[512];
    int64_t ctx_n_ctx; /* the contextualizing model's context length */
};

struct ing_file {
    ctn_ingest *ing;
    ing_file *next_all, *prev_all, *next_embed;
    char *path;
    uv_work_t work;
    int stage; /* 0 prepare, 1 embedding, 2 write */
    int rc;
    bool db_failed; /* rc came from the database: the run stops */
    char err[512];
    ctn_strbuf warnings; /* "message\n" lines from the loader */
    ctn_kb_state state;
    char hash[48];
    int64_t mtime, size, pages;
    ctn_loader_kind loader;
    ctn_val *docs, *chunks;
    float *vecs;
    size_t n_chunks, next_chunk, n_embedded;
    int in_flight;
    uint64_t *handles;
    /* Contextual chunks: the windows' prompts, the window of each chunk, the contexts
     * written, and the context requests (window prefills, then one per chunk). */
    char **win;
    size_t n_win;
    size_t *win_of;
    char **ctx;
    struct ctx_req *creqs;
    size_t n_creqs;
    int ctx_pending;
};

/* One contextualizing request: a window's prefill (chunk SIZE_MAX) or a chunk's context. */
typedef struct ctx_req {
    ing_file *f;
    size_t chunk;
    uint64_t handle;
    bool live;
} ctx_req;

ctn_ingest_opts ctn_ingest_defaults(void) {
    ctn_ingest_opts o = {0};
    o.splitter = CTN_SPLIT_RECURSIVE;
    o.split = ctn_split_defaults();
    o.dtype = CTN_KB_F32;
    return o;
}

static void pump(ctn_ingest *ing);

/* ---- pool stages ------------------------------------------------------------------------- */

static void file_warn(void *ud, const char *msg) {
    ing_file *f = ud;
    ctn_sb_puts(&f->warnings, msg);
    ctn_sb_puts(&f->warnings, "\n");
}

static void write_file(ing_file *f) {
    ctn_ingest *ing = f->ing;
    ctn_kb_doc d = {.uri = f->path, .hash = f->hash, .mtime = f->mtime, .size = f->size,
                    .loader = ctn_loader_name(f->loader)};
    ctn_val *meta = ctn_val_obj();
    if (meta == NULL) {
        ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
        f->rc = CTN_ENOMEM;
        return;
    }
    /* The document's own metadata: what its first loaded document says of the whole file
     * (title, author, pages), less what is per section or page. */
    const ctn_val *first = ctn_val_at(f->docs, 0);
    static const char *const whole[] = {"title", "author", "pages", "source"};
    for (size_t i = 0; first != NULL && i < sizeof whole / sizeof whole[0]; i++) {
        ctn_val *v = ctn_val_get(first, whole[i]);
        if (v != NULL && ctn_val_set(meta, whole[i], ctn_val_ref(v)) < 0) f->rc = CTN_ENOMEM;
    }
    d.meta = meta;
    ctn_kb_vectors v = {.model = ing->coll.embed_model, .dim = ing->coll.embed_dim,
                        .n = f->n_chunks, .vecs = f->vecs, .dtype = ing->o.dtype};
    if (f->rc == 0) {
        pthread_mutex_lock(&ing->db_lock);
        f->rc = ctn_kb_put(ing->kb, &ing->coll, &d, f->chunks, f->vecs != NULL ? &v : NULL,
                           f->err, sizeof f->err);
        pthread_mutex_unlock(&ing->db_lock);
        f->db_failed = f->rc < 0 && f->rc != CTN_ENOMEM;
    } else {
        ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
    }
    ctn_val_unref(meta);
}


/* ---- contextual chunks --------------------------------------------------------------------- */

static const char WIN_HEAD[] = "<document>\n", WIN_TAIL[] = "\n</document>\n";
static const char CHUNK_HEAD[] = "Here is a passage of that document:\n<passage>\n";
static const char CHUNK_TAIL[] =
    "\n</passage>\nIn one short sentence, say where this passage stands in the document and "
    "what it is about, so that a search finds it. Write only that sentence.\nContext:";

static const ctn_val *chunk_text(const ing_file *f, size_t i) {
    const ctn_val *ch = ctn_val_at(f->chunks, i);
    return ch->kind == CTN_VDOC ? ch->u.doc.text : ch;
}

/* Tokens of text as the engine would take it (BOS when bos), or a CTN_E* code. */
static int64_t count_tokens(const ctn_vocab *v, const char *text, size_t len, bool bos) {
    int32_t *ids = NULL;
    size_t n = 0;
    const int rc = ctn_tokenize(v, text, len, bos, true, &ids, &n);
    free(ids);
    return rc < 0 ? rc : (int64_t)n;
}

static char *wrap(const char *head, const char *body, size_t len, const char *tail) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, head);
    ctn_sb_put(&b, body, len);
    ctn_sb_puts(&b, tail);
    return ctn_sb_take(&b);
}

/* A window's prompt of the chunks [from, to), their texts joined by newlines. */
static char *chunks_window(const ing_file *f, size_t from, size_t to) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, WIN_HEAD);
    for (size_t i = from; i < to; i++) {
        const ctn_val *t = chunk_text(f, i);
        if (i > from) ctn_sb_puts(&b, "\n");
        ctn_sb_put(&b, t->u.str.p, t->u.str.len);
    }
    ctn_sb_puts(&b, WIN_TAIL);
    return ctn_sb_take(&b);
}

/*
 * The windows of f's document (pool thread): the whole document when it fits the model's
 * context beside its longest chunk's prompt and the context written; else runs of whole
 * consecutive chunks that do.
 */
static int plan_windows(ing_file *f) {
    ctn_ingest *ing = f->ing;
    const ctn_vocab *v = ctn_lm_vocab(ing->o.contextualize);
    const int64_t out_toks = ing->o.context_tokens > 0 ? ing->o.context_tokens : 64;
    f->win_of = ctn__calloc(f->n_chunks, sizeof *f->win_of);
    f->win = ctn__calloc(f->n_chunks, sizeof *f->win);
    f->ctx = ctn__calloc(f->n_chunks, sizeof *f->ctx);
    int64_t *ct = ctn__calloc(f->n_chunks, sizeof *ct);
    int rc = f->win_of == NULL || f->win == NULL || f->ctx == NULL || ct == NULL ? CTN_ENOMEM : 0;
    int64_t max_ct = 0;
    for (size_t i = 0; rc == 0 && i < f->n_chunks; i++) {
        const ctn_val *t = chunk_text(f, i);
        char *p = wrap(CHUNK_HEAD, t->u.str.p, t->u.str.len, CHUNK_TAIL);
        const int64_t n = p == NULL ? CTN_ENOMEM : count_tokens(v, p, strlen(p), false);
        free(p);
        if (n < 0) rc = (int)n;
        else ct[i] = n;
        if (n > max_ct) max_ct = n;
    }
    /* The room a window has: the context less the longest chunk prompt, the context
     * written, and the token the engine samples first. */
    const int64_t room = ing->ctx_n_ctx - max_ct - out_toks - 2;
    if (rc == 0 && room < 16) {
        ctn__errf(f->err, sizeof f->err,
                  "%s: a chunk's prompt has %" PRId64 " tokens: too long to contextualize "
                  "within the model's context of %" PRId64 " (smaller chunks, or fewer "
                  "context tokens)",
                  f->path, max_ct, ing->ctx_n_ctx);
        free(ct);
        return CTN_EINVAL;
    }
    if (rc == 0) {
        /* The whole document, when it fits. */
        ctn_strbuf b = {0};
        ctn_sb_puts(&b, WIN_HEAD);
        for (size_t i = 0; i < ctn_val_len(f->docs); i++) {
            const ctn_val *d = ctn_val_at(f->docs, i);
            const ctn_val *t = d->kind == CTN_VDOC ? d->u.doc.text : d;
            if (t->kind != CTN_VSTR) continue;
            if (i > 0) ctn_sb_puts(&b, "\n\n");
            ctn_sb_put(&b, t->u.str.p, t->u.str.len);
        }
        ctn_sb_puts(&b, WIN_TAIL);
        char *whole = ctn_sb_take(&b);
        const int64_t n = whole == NULL ? CTN_ENOMEM : count_tokens(v, whole, strlen(whole), true);
        if (n < 0) {
            rc = (int)n;
            free(whole);
        } else if (n <= room) {
            f->win[0] = whole;
            f->n_win = 1;
        } else {
            free(whole);
        }
    }
    for (size_t from = 0; rc == 0 && f->n_win == 0 && from < f->n_chunks;) {
        /* The longest run from `from` whose window fits (at least the one chunk). */
        size_t to = from + 1;
        char *best = NULL;
        while (rc == 0) {
            char *w = chunks_window(f, from, to);
            const int64_t n = w == NULL ? CTN_ENOMEM : count_tokens(v, w, strlen(w), true);
            if (n < 0) {
                rc = (int)n;
                free(w);
                break;
            }
            if (n > room && to > from + 1) {
                free(w);
                to--;
                break;
            }
            free(best);
            best = w;
            if (n > room || to == f->n_chunks) break; /* a lone chunk too long: cut below */
            to++;
        }
        if (rc < 0) {
            free(best);
            break;
        }
        f->win[f->n_win] = best;
        for (size_t i = from; i < to; i++)
            f->win_of[i] = f->n_win;
        f->n_win++;
        from = to;
    }
    free(ct);
    if (rc == CTN_ENOMEM) ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
    else if (rc < 0) ctn__errf(f->err, sizeof f->err, "%s: tokenizing for contexts failed", f->path);
    return rc;
}

static void prepare_work(uv_work_t *w) {
    ing_file *f = w->data;
    ctn_ingest *ing = f->ing;
    char *data = NULL;
    size_t n = 0;
    struct stat sb;
    if (stat(f->path, &sb) == 0) f->mtime = (int64_t)sb.st_mtime;
    f->rc = ctn_load_file(f->path, &data, &n, f->err, sizeof f->err);
    if (f->rc < 0) return;
    f->size = (int64_t)n;
    ctn_kb_hash(data, n, f->hash);
    pthread_mutex_lock(&ing->db_lock);
    f->rc = ctn_kb_doc_state(ing->kb, &ing->coll, f->path, f->hash, &f->state, f->err,
                             sizeof f->err);
    pthread_mutex_unlock(&ing->db_lock);
    if (f->rc < 0) f->db_failed = true;
    if (f->rc < 0 || f->state == CTN_KB_SAME) goto out;

    f->loader = ctn_loader_for(f->path);
    ctn_load_ctx c = {.source = f->path, .warn = file_warn, .warn_ud = f};
    f->docs = ctn_val_arr();
    f->chunks = ctn_val_arr();
    if (f->docs == NULL || f->chunks == NULL) {
        ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
        f->rc = CTN_ENOMEM;
        goto out;
    }
    f->rc = ctn_load_data(&c, f->loader, ing->o.json, data, n, f->docs, f->err, sizeof f->err);
    if (f->rc < 0) goto out;
    for (size_t i = 0; f->loader == CTN_LOADER_PDF && i < ctn_val_len(f->docs); i++) f->pages++;
    f->rc = ctn_split_docs(ing->o.splitter, &ing->o.split, f->docs, f->chunks, f->err,
                           sizeof f->err);
    if (f->rc < 0) goto out;
    f->n_chunks = ctn_val_len(f->chunks);
    if (ing->o.contextualize != NULL && f->n_chunks > 0) {
        f->rc = plan_windows(f);
        if (f->rc < 0) goto out;
    }
    if (ing->o.embed == NULL && ing->o.contextualize == NULL) write_file(f);
out:
    free(data);
}

static void write_work(uv_work_t *w) { write_file(w->data); }

/* ---- the loop side ----------------------------------------------------------------------- */

static void report(ctn_ingest *ing, bool force) {
    uv_update_time(ing->loop);
    uint64_t now = uv_now(ing->loop);
    ing->p.elapsed_s = (double)(now - ing->t0) / 1000.0;
    if (ing->o.embed != NULL) {
        ctn_lm_stats s;
        ctn_lm_get_stats(ing->o.embed, &s);
        ing->p.embed_tokens = s.engine.prefill_tokens - ing->prefill0;
    }
    /* The same model contextualizing: its context prefill is not the embeddings'. */
    if (ing->o.embed != NULL && ing->o.embed == ing->o.contextualize)
        ing->p.embed_tokens -= ing->p.context_prefill;
    if (ing->o.on_progress == NULL || (!force && now - ing->last_report < 100)) return;
    ing->last_report = now;
    ing->o.on_progress(ing->o.ud, &ing->p);
}

static void file_msg(ctn_ingest *ing, const char *path, const char *status, const char *msg) {
    if (ing->o.on_file != NULL) ing->o.on_file(ing->o.ud, path, status, msg);
}

static void free_file(ing_file *f) {
    ctn_ingest *ing = f->ing;
    if (f->prev_all != NULL) f->prev_all->next_all = f->next_all;
    else ing->all = f->next_all;
    if (f->next_all != NULL) f->next_all->prev_all = f->prev_all;
    ctn_val_unref(f->docs);
    ctn_val_unref(f->chunks);
    ctn_sb_free(&f->warnings);
    free(f->vecs);
    free(f->handles);
    for (size_t i = 0; f->win != NULL && i < f->n_win; i++) free(f->win[i]);
    free(f->win);
    free(f->win_of);
    for (size_t i = 0; f->ctx != NULL && i < f->n_chunks; i++) free(f->ctx[i]);
    free(f->ctx);
    free(f->creqs);
    free(f);
}

/* A file is finished: report it, count it, free it, and start what can start. */
static void file_done(ing_file *f) {
    ctn_ingest *ing = f->ing;
    if (f->warnings.len > 0 && !f->warnings.oom) {
        char *s = f->warnings.p, *nl;
        while ((nl = strchr(s, '\n')) != NULL) {
            *nl = '\0';
            file_msg(ing, f->path, "warning", s);
            s = nl + 1;
        }
    }
    ing->p.files_done++;
    if (f->rc < 0) {
        ing->p.failed++;
        file_msg(ing, f->path, "failed", f->err);
        if (f->db_failed && ing->fatal_rc == 0) {
            ing->fatal_rc = f->rc;
            snprintf(ing->fatal_err, sizeof ing->fatal_err, "%s", f->err);
            ing->cancelled = true;
        }
    } else if (f->state == CTN_KB_SAME) {
        ing->p.skipped++;
        file_msg(ing, f->path, "skipped", "");
    } else {
        if (f->state == CTN_KB_NEW) ing->p.added++;
        else ing->p.replaced++;
        ing->p.chunks += (int64_t)f->n_chunks;
        ing->p.pages += f->pages;
        file_msg(ing, f->path, f->state == CTN_KB_NEW ? "added" : "replaced", "");
    }
    ing->files_active--;
    free_file(f);
    report(ing, false);
    pump(ing);
}

static void write_after(uv_work_t *w, int status) {
    ing_file *f = w->data;
    if (status == UV_ECANCELED && f->rc == 0) {
        ctn__errf(f->err, sizeof f->err, "%s: cancelled before it was written", f->path);
        f->rc = CTN_ECANCELED;
    }
    file_done(f);
}

static void start_write(ing_file *f) {
    f->stage = 2;
    f->work.data = f;
    int r = uv_queue_work(f->ing->loop, &f->work, write_work, write_after);
    if (r < 0) {
        ctn__errf(f->err, sizeof f->err, "%s: cannot queue the write: %s", f->path,
                  uv_strerror(r));
        f->rc = CTN_EIO;
        file_done(f);
    }
}

typedef struct {
    ing_file *f;
    size_t i;
} embed_req;

static void embed_fill(ctn_ingest *ing);

static void on_embedding(void *ud, const float *vec, int dim, int err, const char *msg) {
    embed_req *r = ud;
    ing_file *f = r->f;
    ctn_ingest *ing = f->ing;
    size_t i = r->i;
    free(r);
    ing->embeds_active--;
    f->in_flight--;
    if (err == 0 && dim == ing->coll.embed_dim) {
        memcpy(f->vecs + i * (size_t)dim, vec, (size_t)dim * sizeof *vec);
        f->n_embedded++;
        ing->p.embedded++;
    } else if (f->rc == 0) {
        f->rc = err != 0 ? err : CTN_EFORMAT;
        if (err != 0)
            ctn__errf(f->err, sizeof f->err, "%s: chunk %zu: embedding failed: %s", f->path, i,
                      msg);
        else
            ctn__errf(f->err, sizeof f->err, "%s: chunk %zu: embedding of dimension %d, the "
                      "collection's is %d", f->path, i, dim, ing->coll.embed_dim);
    }
    if (f->in_flight == 0 && (f->rc < 0 || f->n_embedded == f->n_chunks)) {
        if (f->rc < 0) file_done(f);
        else start_write(f);
    }
    embed_fill(ing);
    report(ing, false);
}

/* Submits embeddings of queued files while slots are free. */
static void embed_fill(ctn_ingest *ing) {
    int limit = ing->o.max_embeds > 0 ? ing->o.max_embeds : 256;
    while (ing->embed_queue != NULL && ing->embeds_active < limit) {
        ing_file *f = ing->embed_queue;
        if (f->rc < 0 || ing->cancelled || f->next_chunk == f->n_chunks) {
            ing->embed_queue = f->next_embed;
            if (ing->embed_queue == NULL) ing->embed_tail = NULL;
            if (f->rc == 0 && ing->cancelled && f->next_chunk < f->n_chunks) {
                ctn__errf(f->err, sizeof f->err, "%s: cancelled", f->path);
                f->rc = CTN_ECANCELED;
            }
            /* A file with nothing in flight is finished here; otherwise on_embedding
             * finishes it when its last request returns. */
            if (f->in_flight == 0 && f->rc < 0) file_done(f);
            continue;
        }
        size_t i = f->next_chunk++;
        const ctn_val *ch = ctn_val_at(f->chunks, i);
        const ctn_val *text = ch->kind == CTN_VDOC ? ch->u.doc.text : ch;
        embed_req *r = ctn__malloc(sizeof *r);
        int rc = r == NULL ? CTN_ENOMEM : 0;
        if (r != NULL) {
            *r = (embed_req){f, i};
            int pool = ing->o.pooling != CTN_POOL_NONE ? ing->o.pooling
                                                        : ctn_lm_pooling(ing->o.embed);
            rc = ctn_lm_embed(ing->o.embed, text->u.str.p, text->u.str.len, pool, on_embedding,
                              r, &f->handles[i], f->err, sizeof f->err);
        }
        if (rc < 0) {
            free(r);
            if (rc == CTN_ENOMEM) ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
            f->rc = rc;
            continue;
        }
        ing->embeds_active++;
        f->in_flight++;
    }
}

static void to_embed(ing_file *f);
static void start_contexts(ing_file *f);

static void prepare_after(uv_work_t *w, int status) {
    ing_file *f = w->data;
    ctn_ingest *ing = f->ing;
    if (status == UV_ECANCELED) {
        ctn__errf(f->err, sizeof f->err, "%s: cancelled", f->path);
        f->rc = CTN_ECANCELED;
    }
    if (f->rc < 0 || f->state == CTN_KB_SAME ||
        (ing->o.embed == NULL && ing->o.contextualize == NULL)) {
        file_done(f);
        return;
    }
    if (f->n_chunks == 0) { /* nothing to embed: write the empty document */
        start_write(f);
        return;
    }
    if (ing->o.contextualize != NULL) start_contexts(f);
    else to_embed(f);
}

/* ---- contexts (loop) ----------------------------------------------------------------------- */

/* Every context has come: each chunk becomes "context\n\ntext" with metadata.context. */
static void contexts_done(ing_file *f) {
    ctn_ingest *ing = f->ing;
    for (size_t i = 0; f->rc == 0 && i < f->n_chunks; i++) {
        const char *c = f->ctx[i];
        if (c == NULL || *c == '\0') continue;
        ctn_val *old = f->chunks->u.arr.items[i];
        const ctn_val *t = old->kind == CTN_VDOC ? old->u.doc.text : old;
        ctn_val *meta = old->kind == CTN_VDOC ? ctn_val_copy(old->u.doc.meta) : ctn_val_obj();
        char *text = wrap(c, "\n\n", 2, "");
        char *full = text != NULL ? wrap(text, t->u.str.p, t->u.str.len, "") : NULL;
        ctn_val *nd = NULL;
        if (meta != NULL && full != NULL && ctn_val_set(meta, "context", ctn_val_cstr(c)) == 0) {
            nd = ctn_val_doc(full, strlen(full), meta);
            meta = NULL;
        }
        ctn_val_unref(meta);
        free(text);
        free(full);
        if (nd == NULL) {
            ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
            f->rc = CTN_ENOMEM;
            break;
        }
        ctn_val_unref(old);
        f->chunks->u.arr.items[i] = nd;
        ing->p.contextualized++;
    }
    if (f->rc < 0) file_done(f);
    else if (ing->o.embed != NULL) to_embed(f);
    else start_write(f);
}

static void ctx_on_done(void *ud, const ctn_lm_result *r) {
    ctx_req *q = ud;
    ing_file *f = q->f;
    ctn_ingest *ing = f->ing;
    q->live = false;
    ing->p.context_prefill += r->prompt_tokens - r->cached_tokens;
    if (q->chunk != SIZE_MAX) {
        ing->p.context_naive += r->prompt_tokens;
        ing->p.context_tokens += r->completion_tokens;
    }
    if (r->finish == CTN_FINISH_ERROR || r->finish == CTN_FINISH_CANCELLED) {
        if (f->rc == 0) {
            f->rc = r->finish == CTN_FINISH_CANCELLED ? CTN_ECANCELED
                                                      : (r->error < 0 ? r->error : CTN_ECHAIN);
            if (q->chunk == SIZE_MAX)
                ctn__errf(f->err, sizeof f->err, "%s: contextualizing: %s", f->path,
                          r->finish == CTN_FINISH_CANCELLED ? "cancelled" : r->message);
            else
                ctn__errf(f->err, sizeof f->err, "%s: chunk %zu: its context: %s", f->path,
                          q->chunk, r->finish == CTN_FINISH_CANCELLED ? "cancelled" : r->message);
            for (size_t i = 0; i < f->n_creqs; i++)
                if (f->creqs[i].live) ctn_lm_cancel(ing->o.contextualize, f->creqs[i].handle);
        }
    } else if (q->chunk != SIZE_MAX) {
        /* One line, spaces trimmed. */
        size_t a = 0, b = r->text_len;
        while (a < b && (r->text[a] == ' ' || r->text[a] == '\t' || r->text[a] == '\n')) a++;
        while (b > a && (r->text[b - 1] == ' ' || r->text[b - 1] == '\t' ||
                         r->text[b - 1] == '\n' || r->text[b - 1] == '\r'))
            b--;
        f->ctx[q->chunk] = ctn__strndup(r->text + a, b - a);
        if (f->ctx[q->chunk] == NULL && f->rc == 0) {
            ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
            f->rc = CTN_ENOMEM;
        }
    }
    if (--f->ctx_pending == 0) {
        if (f->rc < 0) file_done(f);
        else contexts_done(f);
        report(ing, false);
    }
}

/*
 * Each window is prefilled once into a new engine session (a prompt-only request), forked
 * once per chunk of it, and each fork writes its chunk's context. Everything is submitted
 * at once; the engine orders a session's requests and forks as they were submitted.
 */
static void start_contexts(ing_file *f) {
    ctn_ingest *ing = f->ing;
    ctn_lm *lm = ing->o.contextualize;
    f->stage = 1;
    f->creqs = ctn__calloc(f->n_win + f->n_chunks, sizeof *f->creqs);
    int64_t *kids = ctn__calloc(f->n_chunks, sizeof *kids);
    int rc = f->creqs == NULL || kids == NULL ? CTN_ENOMEM : 0;
    if (rc < 0) ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
    const ctn_lm_callbacks cb = {NULL, ctx_on_done};
    for (size_t w = 0; rc == 0 && w < f->n_win; w++) {
        size_t n = 0;
        for (size_t i = 0; i < f->n_chunks; i++) n += f->win_of[i] == w;
        if (n == 0) continue;
        const int64_t sid = ctn_lm_session_new(lm);
        if (sid < 0) {
            rc = (int)sid;
            ctn__errf(f->err, sizeof f->err, "%s: cannot make an engine session", f->path);
            break;
        }
        ctn_lm_request pre = ctn_lm_request_default();
        pre.prompt = f->win[w];
        pre.prompt_len = strlen(f->win[w]);
        pre.set.max_tokens = 0;
        pre.session_id = sid;
        ctx_req *q = &f->creqs[f->n_creqs];
        *q = (ctx_req){f, SIZE_MAX, 0, true};
        rc = ctn_lm_generate(lm, &pre, &cb, q, &q->handle, f->err, sizeof f->err);
        if (rc < 0) {
            q->live = false;
            ctn_lm_session_close(lm, sid);
            break;
        }
        f->n_creqs++;
        f->ctx_pending++;
        /* Forks in batches of at most 64 (the bridge's limit per call). */
        size_t done = 0;
        while (rc == 0 && done < n) {
            const int k = n - done > 64 ? 64 : (int)(n - done);
            rc = ctn_lm_session_fork(lm, sid, k, kids + done);
            if (rc < 0) ctn__errf(f->err, sizeof f->err, "%s: cannot fork the engine session",
                                  f->path);
            else done += (size_t)k;
        }
        ctn_lm_session_close(lm, sid);
        size_t j = 0;
        for (size_t i = 0; i < f->n_chunks; i++) {
            if (f->win_of[i] != w) continue;
            if (rc < 0 || j >= done) {
                if (j < done) ctn_lm_session_close(lm, kids[j]);
                j++;
                continue;
            }
            const ctn_val *t = chunk_text(f, i);
            char *p = wrap(CHUNK_HEAD, t->u.str.p, t->u.str.len, CHUNK_TAIL);
            ctn_lm_request r = ctn_lm_request_default();
            r.prompt = p;
            r.prompt_len = p != NULL ? strlen(p) : 0;
            r.add_bos = 0; /* the window has it */
            r.set.max_tokens = ing->o.context_tokens > 0 ? ing->o.context_tokens : 64;
            static const char *const nl = "\n";
            r.set.stop[0] = nl;
            r.set.n_stop = 1;
            r.session_id = kids[j];
            q = &f->creqs[f->n_creqs];
            *q = (ctx_req){f, i, 0, true};
            rc = p == NULL ? CTN_ENOMEM
                           : ctn_lm_generate(lm, &r, &cb, q, &q->handle, f->err, sizeof f->err);
            if (p == NULL) ctn__errf(f->err, sizeof f->err, "%s: out of memory", f->path);
            free(p);
            if (rc < 0) q->live = false;
            else f->n_creqs++, f->ctx_pending++;
            ctn_lm_session_close(lm, kids[j]);
            j++;
        }
    }
    free(kids);
    if (rc < 0) {
        f->rc = rc;
        for (size_t i = 0; i < f->n_creqs; i++)
            if (f->creqs[i].live) ctn_lm_cancel(lm, f->creqs[i].handle);
        if (f->ctx_pending == 0) file_done(f);
    }
}

/* The file's chunks go to the embedding queue. */
static void to_embed(ing_file *f) {
    ctn_ingest *ing = f->ing;
    f->stage = 1;
    f->vecs = ctn__malloc(f->n_chunks * (size_t)ing->coll.embed_dim * sizeof *f->vecs);
    f->handles = ctn__calloc(f->n_chunks, sizeof *f->handles);
    if (f->vecs == NULL || f->handles == NULL) {
        ctn__errf(f->err, sizeof f->err, "%s: out of memory for %zu embeddings", f->path,
                  f->n_chunks);
        f->rc = CTN_ENOMEM;
        file_done(f);
        return;
    }
    if (ing->embed_tail != NULL) ing->embed_tail->next_embed = f;
    else ing->embed_queue = f;
    ing->embed_tail = f;
    embed_fill(ing);
}

static void finish(ctn_ingest *ing);
static void prune_after(uv_work_t *w, int status);

static void prune_work(uv_work_t *w) {
    ctn_ingest *ing = w->data;
    const char **prefixes = ctn__calloc(ing->o.n_paths + 1, sizeof *prefixes);
    char **owned = ctn__calloc(ing->o.n_paths + 1, sizeof *owned);
    size_t np = 0;
    ing->prune_rc = prefixes == NULL || owned == NULL ? CTN_ENOMEM : 0;
    for (size_t i = 0; ing->prune_rc == 0 && i < ing->o.n_paths; i++) {
        struct stat sb;
        const char *p = ing->paths[i];
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        size_t len = strlen(p);
        bool slash = len > 0 && p[len - 1] == '/';
        owned[np] = ctn__malloc(len + 2);
        if (owned[np] == NULL) {
            ing->prune_rc = CTN_ENOMEM;
            break;
        }
        snprintf(owned[np], len + 2, "%s%s", p, slash ? "" : "/");
        prefixes[np] = owned[np];
        np++;
    }
    if (ing->prune_rc == CTN_ENOMEM)
        ctn__errf(ing->prune_err, sizeof ing->prune_err, "prune: out of memory");
    int64_t removed = 0;
    if (ing->prune_rc == 0 && np > 0) {
        pthread_mutex_lock(&ing->db_lock);
        ing->prune_rc = ctn_kb_prune(ing->kb, &ing->coll, prefixes, np,
                                     (const char *const *)ing->files, ing->n_files, &removed,
                                     ing->prune_err, sizeof ing->prune_err);
        pthread_mutex_unlock(&ing->db_lock);
    }
    ing->p.removed = removed;
    for (size_t i = 0; owned != NULL && i < np; i++) free(owned[i]);
    free(owned);
    free(prefixes);
}

static void prune_after(uv_work_t *w, int status) {
    ctn_ingest *ing = w->data;
    if (status == UV_ECANCELED && ing->prune_rc == 0) {
        ing->prune_rc = CTN_ECANCELED;
        snprintf(ing->prune_err, sizeof ing->prune_err, "prune: cancelled");
    }
    if (ing->prune_rc < 0 && ing->fatal_rc == 0) {
        ing->fatal_rc = ing->prune_rc;
        snprintf(ing->fatal_err, sizeof ing->fatal_err, "%s", ing->prune_err);
    }
    finish(ing);
}

static void free_ingest(ctn_ingest *ing) {
    for (size_t i = 0; ing->paths != NULL && i < ing->o.n_paths; i++) free(ing->paths[i]);
    free(ing->paths);
    for (size_t i = 0; i < ing->n_files; i++) free(ing->files[i]);
    free(ing->files);
    free(ing->glob);
    ctn_sb_free(&ing->list_failures);
    pthread_mutex_destroy(&ing->db_lock);
    free(ing);
}

static void settle_closed(uv_handle_t *h) { free_ingest(h->data); }

static void finish(ctn_ingest *ing) {
    ing->done = true;
    report(ing, true);
    int rc = ing->fatal_rc != 0 ? ing->fatal_rc : ing->cancelled ? CTN_ECANCELED : 0;
    const char *msg = ing->fatal_rc != 0 ? ing->fatal_err : ing->cancelled ? "cancelled" : "";
    if (ing->o.on_done != NULL) ing->o.on_done(ing->o.ud, &ing->p, rc, msg);
    uv_close((uv_handle_t *)&ing->settle, settle_closed);
}

/* Every file is finished: prune when asked (and not cancelled), then finish. */
static void settle_cb(uv_timer_t *t) {
    ctn_ingest *ing = t->data;
    if (ing->o.prune && !ing->cancelled) {
        ing->pruning = true;
        ing->prune_work.data = ing;
        if (uv_queue_work(ing->loop, &ing->prune_work, prune_work, prune_after) == 0) return;
        ing->fatal_rc = CTN_EIO;
        snprintf(ing->fatal_err, sizeof ing->fatal_err, "prune: cannot queue the work");
    }
    finish(ing);
}

/* Starts files while there is room; when none is left running, arranges the end. */
static void pump(ctn_ingest *ing) {
    if (ing->done || ing->settling || ing->p.listing) return;
    int limit = ing->o.max_files > 0 ? ing->o.max_files : 4;
    while (!ing->cancelled && ing->next < ing->n_files && ing->files_active < limit) {
        ing_file *f = ctn__calloc(1, sizeof *f);
        if (f == NULL) {
            ing->fatal_rc = CTN_ENOMEM;
            snprintf(ing->fatal_err, sizeof ing->fatal_err, "out of memory");
            ing->cancelled = true;
            break;
        }
        f->ing = ing;
        f->path = ing->files[ing->next++];
        f->work.data = f;
        f->next_all = ing->all;
        if (ing->all != NULL) ing->all->prev_all = f;
        ing->all = f;
        ing->files_active++;
        int r = uv_queue_work(ing->loop, &f->work, prepare_work, prepare_after);
        if (r < 0) {
            ctn__errf(f->err, sizeof f->err, "%s: cannot queue: %s", f->path, uv_strerror(r));
            f->rc = CTN_EIO;
            file_done(f);
            return; /* file_done pumped again */
        }
    }
    if (ing->files_active > 0) return;
    ing->settling = true;
    uv_timer_start(&ing->settle, settle_cb, 0, 0);
}

/* ---- listing ----------------------------------------------------------------------------- */

static void list_work(uv_work_t *w) {
    ctn_ingest *ing = w->data;
    for (size_t i = 0; i < ing->o.n_paths; i++) {
        char **paths = NULL, err[512] = "";
        size_t n = 0;
        int rc = ctn_list_files(ing->paths[i], ing->glob, &paths, &n, err, sizeof err);
        if (rc < 0) {
            if (rc == CTN_ENOMEM) {
                ing->list_rc = rc;
                snprintf(ing->list_err, sizeof ing->list_err, "%s", err);
                return;
            }
            ctn_sb_puts(&ing->list_failures, ing->paths[i]);
            ctn_sb_puts(&ing->list_failures, "\t");
            ctn_sb_puts(&ing->list_failures, err);
            ctn_sb_puts(&ing->list_failures, "\n");
            continue;
        }
        char **g = n > 0 ? ctn__realloc(ing->files, (ing->n_files + n) * sizeof *g) : ing->files;
        if (n > 0 && g == NULL) {
            for (size_t j = 0; j < n; j++) free(paths[j]);
            free(paths);
            ing->list_rc = CTN_ENOMEM;
            snprintf(ing->list_err, sizeof ing->list_err, "listing: out of memory");
            return;
        }
        ing->files = g;
        /* A file named twice (a folder and a file in it) is ingested once. */
        for (size_t j = 0; j < n; j++) {
            bool dup = false;
            for (size_t k = 0; k < ing->n_files && !dup; k++)
                dup = strcmp(ing->files[k], paths[j]) == 0;
            if (dup) free(paths[j]);
            else ing->files[ing->n_files++] = paths[j];
        }
        free(paths);
    }
    if (ing->list_failures.oom) {
        ing->list_rc = CTN_ENOMEM;
        snprintf(ing->list_err, sizeof ing->list_err, "listing: out of memory");
    }
}

static void list_after(uv_work_t *w, int status) {
    ctn_ingest *ing = w->data;
    ing->p.listing = false;
    if (status == UV_ECANCELED || ing->list_rc < 0) {
        ing->fatal_rc = ing->list_rc < 0 ? ing->list_rc : CTN_ECANCELED;
        snprintf(ing->fatal_err, sizeof ing->fatal_err, "%s",
                 ing->list_rc < 0 ? ing->list_err : "cancelled");
        ing->cancelled = true;
        pump(ing);
        return;
    }
    ing->p.files_total = (int64_t)ing->n_files;
    /* Inputs that could not be listed count as failed files. */
    if (ing->list_failures.len > 0) {
        char *s = ing->list_failures.p, *nl;
        while ((nl = strchr(s, '\n')) != NULL) {
            *nl = '\0';
            char *tab = strchr(s, '\t');
            if (tab != NULL) *tab = '\0';
            ing->p.files_total++;
            ing->p.files_done++;
            ing->p.failed++;
            file_msg(ing, s, "failed", tab != NULL ? tab + 1 : "");
            s = nl + 1;
        }
    }
    report(ing, true);
    pump(ing);
}

/* ---- start and cancel -------------------------------------------------------------------- */

int ctn_ingest_start(uv_loop_t *loop, ctn_kb *kb, const ctn_ingest_opts *o, ctn_ingest **out,
                     char *err, size_t errcap) {
    *out = NULL;
    if (o->n_paths == 0) {
        ctn__errf(err, errcap, "ingest: no files or folders named");
        return CTN_EINVAL;
    }
    int rc = ctn_split_check(o->splitter, &o->split, err, errcap);
    if (rc < 0) return rc;
    ctn_ingest *ing = ctn__calloc(1, sizeof *ing);
    if (ing == NULL) goto oom;
    ing->loop = loop;
    ing->kb = kb;
    ing->o = *o;
    pthread_mutex_init(&ing->db_lock, NULL);
    ing->paths = ctn__calloc(o->n_paths, sizeof *ing->paths);
    if (ing->paths == NULL) {
        ing->o.n_paths = 0;
        goto oom_free;
    }
    for (size_t i = 0; i < o->n_paths; i++)
        if ((ing->paths[i] = ctn__strdup(o->paths[i])) == NULL) goto oom_free;
    if (o->glob != NULL && (ing->glob = ctn__strdup(o->glob)) == NULL) goto oom_free;
    ing->o.glob = ing->glob;
    ing->o.paths = NULL; /* the copies above are used */

    ctn_kb_coll_opts co = {.create = true, .labels = o->labels, .n_labels = o->n_labels};
    char model[256];
    if (o->embed != NULL) {
        rc = ctn_kb_model_id(ctn_lm_path(o->embed), ctn_lm_arch(o->embed),
                             ctn_lm_embed_dim(o->embed), model, sizeof model);
        if (rc < 0) {
            ctn__errf(err, errcap, "ingest: the embedding model's name is too long");
            free_ingest(ing);
            return rc;
        }
        co.embed_model = model;
        co.embed_dim = ctn_lm_embed_dim(o->embed);
        ctn_lm_stats s;
        ctn_lm_get_stats(o->embed, &s);
        ing->prefill0 = s.engine.prefill_tokens;
    }
    if (o->contextualize != NULL) {
        if (o->context_tokens < 0 || o->context_tokens > 1024) {
            ctn__errf(err, errcap, "ingest: context_tokens is %d (0 to 1024; 0: 64)",
                      o->context_tokens);
            free_ingest(ing);
            return CTN_EINVAL;
        }
        ctn_lm_stats s;
        ctn_lm_get_stats(o->contextualize, &s);
        ing->ctx_n_ctx = s.engine.n_ctx;
    }
    rc = ctn_kb_collection(kb, o->collection != NULL ? o->collection : "default", &co,
                           &ing->coll, err, errcap);
    if (rc == 0 && o->embed == NULL && ing->coll.embed_model[0] != '\0') {
        ctn__errf(err, errcap, "collection '%s' is embedded with '%s': ingest into it with that "
                  "model (--embed, or embed = in Lua)", ing->coll.name, ing->coll.embed_model);
        rc = CTN_EINVAL;
    }
    if (rc < 0) {
        free_ingest(ing);
        return rc;
    }
    ing->t0 = ing->last_report = uv_now(loop);
    ing->p.listing = true;
    ing->list_work.data = ing;
    int r = uv_queue_work(loop, &ing->list_work, list_work, list_after);
    if (r < 0) {
        ctn__errf(err, errcap, "ingest: cannot queue work: %s", uv_strerror(r));
        free_ingest(ing);
        return CTN_EIO;
    }
    uv_timer_init(loop, &ing->settle);
    ing->settle.data = ing;
    *out = ing;
    return 0;
oom_free:
    free_ingest(ing);
oom:
    ctn__errf(err, errcap, "ingest: out of memory");
    return CTN_ENOMEM;
}

void ctn_ingest_cancel(ctn_ingest *ing) {
    if (ing == NULL || ing->done || ing->cancelled) return;
    ing->cancelled = true;
    /* Embeddings in flight: their on_done comes back with CTN_ECANCELED and finishes the
     * file; queued files are failed by embed_fill. */
    for (ing_file *f = ing->all; f != NULL; f = f->next_all)
    {
        for (size_t i = 0; f->stage == 1 && f->handles != NULL && i < f->next_chunk; i++)
            if (f->handles[i] != 0) ctn_lm_cancel(ing->o.embed, f->handles[i]);
        /* Contexts being written: their on_done fails the file. */
        for (size_t i = 0; f->creqs != NULL && i < f->n_creqs; i++)
            if (f->creqs[i].live) ctn_lm_cancel(ing->o.contextualize, f->creqs[i].handle);
    }
    embed_fill(ing);
}
