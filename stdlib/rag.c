/*
 * The RAG nodes (rag.h). Each task hands a private copy of its input to the thread pool and
 * gets fresh values back in the after-work callback on the loop thread; a task cancelled
 * meanwhile only marks its job, which the callback then frees.
 */
#include "rag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "error.h"
#include "str.h"

/* ---- shared pieces ----------------------------------------------------------------------- */

/* A job on the pool: the task (NULL once cancelled), its result and messages. */
typedef struct {
    uv_work_t work;
    ctn_task *t;
    const void *node_ud;
    ctn_val *in, *out;
    int rc;
    char err[512];
    ctn_strbuf warnings; /* "message\n" lines */
} pool_job;

static void job_warn(void *ud, const char *msg) {
    pool_job *j = ud;
    ctn_sb_puts(&j->warnings, msg);
    ctn_sb_puts(&j->warnings, "\n");
}

static void job_free(pool_job *j) {
    ctn_val_unref(j->in);
    ctn_val_unref(j->out);
    ctn_sb_free(&j->warnings);
    free(j);
}

static void deliver_warnings(pool_job *j, ctn_warn_fn warn, void *ud) {
    if (warn == NULL || j->warnings.len == 0 || j->warnings.oom) return;
    char *s = j->warnings.p, *nl;
    while ((nl = strchr(s, '\n')) != NULL) {
        *nl = '\0';
        warn(ud, s);
        s = nl + 1;
    }
}

static void job_cancel(ctn_task *t) {
    pool_job *j = ctn_task_data(t);
    if (j != NULL) j->t = NULL;
}

/* Queues fn for the task with a copy of input; fails the task when that cannot be done. */
static void job_start(ctn_task *t, const ctn_val *input, uv_work_cb fn, uv_after_work_cb after) {
    pool_job *j = ctn__calloc(1, sizeof *j);
    if (j == NULL || (input != NULL && (j->in = ctn_val_copy(input)) == NULL)) {
        free(j);
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    j->t = t;
    j->node_ud = ctn_node_ud(ctn_task_node(t));
    j->work.data = j;
    int r = uv_queue_work(ctn_task_loop(t), &j->work, fn, after);
    if (r < 0) {
        job_free(j);
        ctn_task_fail(t, CTN_EIO, "cannot queue work on the thread pool: %s", uv_strerror(r));
        return;
    }
    ctn_task_set_data(t, j);
}

static char *dup_or_null(const char *s, bool *oom) {
    if (s == NULL) return NULL;
    char *d = ctn__strdup(s);
    if (d == NULL) *oom = true;
    return d;
}

/* ---- loader ------------------------------------------------------------------------------ */

typedef struct {
    ctn_loader_kind kind;
    char *path, *glob, *json_text;
    char **json_meta;
    size_t n_json_meta;
    bool json_lines, skip_errors;
    ctn_warn_fn warn;
    void *warn_ud;
    void (*free_warn_ud)(void *);
} loader_ud;

static void loader_free(void *p) {
    loader_ud *u = p;
    if (u == NULL) return;
    if (u->free_warn_ud != NULL) u->free_warn_ud(u->warn_ud);
    free(u->path);
    free(u->glob);
    free(u->json_text);
    for (size_t i = 0; i < u->n_json_meta; i++) free(u->json_meta[i]);
    free(u->json_meta);
    free(u);
}

/* Loads one file into docs; with skip_errors a failure becomes a warning. */
static int load_one(pool_job *j, const loader_ud *u, const char *path, ctn_val *docs) {
    ctn_load_ctx c = {.source = path, .warn = job_warn, .warn_ud = j};
    ctn_json_sel sel = {.text = u->json_text, .meta_fields = (const char *const *)u->json_meta,
                        .n_meta_fields = u->n_json_meta, .lines = u->json_lines};
    char err[512] = "";
    int rc = ctn_load_path(&c, u->kind, &sel, path, docs, err, sizeof err);
    if (rc < 0 && u->skip_errors && rc != CTN_ENOMEM) {
        char msg[600];
        snprintf(msg, sizeof msg, "skipped: %s", err);
        job_warn(j, msg);
        return 0;
    }
    if (rc < 0) snprintf(j->err, sizeof j->err, "%s", err);
    return rc;
}

static int load_path(pool_job *j, const loader_ud *u, const char *path, ctn_val *docs) {
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return load_one(j, u, path, docs);
    char **files = NULL;
    size_t n = 0;
    int rc = ctn_list_files(path, u->glob, &files, &n, j->err, sizeof j->err);
    for (size_t i = 0; rc == 0 && i < n; i++) rc = load_one(j, u, files[i], docs);
    for (size_t i = 0; i < n; i++) free(files[i]);
    free(files);
    return rc;
}

static void loader_work(uv_work_t *w) {
    pool_job *j = w->data;
    const loader_ud *u = j->node_ud;
    ctn_val *docs = ctn_val_arr();
    if (docs == NULL) {
        j->rc = CTN_ENOMEM;
        snprintf(j->err, sizeof j->err, "out of memory");
        return;
    }
    const ctn_val *in = j->in;
    if (in == NULL || in->kind == CTN_VNULL) {
        j->rc = load_path(j, u, u->path, docs);
    } else if (in->kind == CTN_VSTR) {
        j->rc = load_path(j, u, in->u.str.p, docs);
    } else {
        for (size_t i = 0; j->rc == 0 && i < ctn_val_len(in); i++)
            j->rc = load_path(j, u, ctn_val_at(in, i)->u.str.p, docs);
    }
    if (j->rc == 0) j->out = docs;
    else ctn_val_unref(docs);
}

static void loader_after(uv_work_t *w, int status) {
    pool_job *j = w->data;
    const loader_ud *u = j->node_ud;
    if (j->t != NULL) {
        deliver_warnings(j, u->warn, u->warn_ud);
        ctn_task_set_data(j->t, NULL);
        if (status == UV_ECANCELED) ctn_task_fail(j->t, CTN_ECANCELED, "cancelled");
        else if (j->rc < 0) ctn_task_fail(j->t, j->rc, "%s", j->err);
        else ctn_task_done(j->t, j->out), j->out = NULL;
    }
    job_free(j);
}

static void loader_start(ctn_task *t, ctn_val *input) {
    const loader_ud *u = ctn_node_ud(ctn_task_node(t));
    bool ok = input == NULL || (input->kind == CTN_VNULL && u->path != NULL) ||
              input->kind == CTN_VSTR;
    if (input != NULL && input->kind == CTN_VARR) {
        ok = true;
        for (size_t i = 0; i < ctn_val_len(input) && ok; i++)
            ok = ctn_val_at(input, i)->kind == CTN_VSTR;
    }
    if (!ok || (input == NULL && u->path == NULL)) {
        ctn_task_fail(t, CTN_ETYPE, "needs a path (a string) or an array of paths as input%s, "
                      "got %s", u->path == NULL ? "" : " (or null for its own path)",
                      input != NULL ? ctn_vkind_name(input->kind) : "nothing");
        return;
    }
    job_start(t, input, loader_work, loader_after);
}

static char *loader_describe(const void *p) {
    const loader_ud *u = p;
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, ctn_loader_name(u->kind));
    if (u->path != NULL) {
        ctn_sb_puts(&b, " ");
        ctn_sb_puts(&b, u->path);
    }
    return ctn_sb_take(&b);
}

static const ctn_node_ops loader_ops = {.kind = "loader",
                                        .start = loader_start,
                                        .cancel = job_cancel,
                                        .free_ud = loader_free,
                                        .describe = loader_describe};

ctn_node *ctn_loader_node(const ctn_loader_node_opts *o, char *err, size_t errcap) {
    loader_ud *u = ctn__calloc(1, sizeof *u);
    bool oom = u == NULL;
    if (!oom) {
        u->kind = o->kind;
        u->path = dup_or_null(o->path, &oom);
        u->glob = dup_or_null(o->glob, &oom);
        u->json_text = dup_or_null(o->json.text, &oom);
        u->json_lines = o->json.lines;
        u->skip_errors = o->skip_errors;
        if (o->json.n_meta_fields > 0) {
            u->json_meta = ctn__calloc(o->json.n_meta_fields, sizeof *u->json_meta);
            oom = oom || u->json_meta == NULL;
            for (size_t i = 0; u->json_meta != NULL && i < o->json.n_meta_fields; i++) {
                u->json_meta[i] = dup_or_null(o->json.meta_fields[i], &oom);
                u->n_json_meta++;
            }
        }
    }
    ctn_node *n = oom ? NULL : ctn_node_custom(&loader_ops, u, "loader");
    if (n == NULL) {
        loader_free(u); /* without the warn ud: the caller still owns it */
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    u->warn = o->warn;
    u->warn_ud = o->warn_ud;
    u->free_warn_ud = o->free_warn_ud;
    return n;
}

/* ---- splitter ---------------------------------------------------------------------------- */

typedef struct {
    ctn_split_kind kind;
    ctn_split_opts o;
    char **seps;
    ctn_lm *lm;
} splitter_ud;

static void splitter_free(void *p) {
    splitter_ud *u = p;
    if (u == NULL) return;
    for (size_t i = 0; u->seps != NULL && i < u->o.n_separators; i++) free(u->seps[i]);
    free(u->seps);
    ctn_lm_close(u->lm);
    free(u);
}

static void splitter_work(uv_work_t *w) {
    pool_job *j = w->data;
    const splitter_ud *u = j->node_ud;
    ctn_val *arr = NULL;
    const ctn_val *docs = j->in;
    if (j->in->kind != CTN_VARR) { /* one document or string: an array of it */
        if ((arr = ctn_val_arr()) == NULL || ctn_val_push(arr, ctn_val_ref(j->in)) < 0) {
            ctn_val_unref(arr);
            j->rc = CTN_ENOMEM;
            snprintf(j->err, sizeof j->err, "out of memory");
            return;
        }
        docs = arr;
    }
    j->out = ctn_val_arr();
    j->rc = j->out == NULL ? CTN_ENOMEM
                           : ctn_split_docs(u->kind, &u->o, docs, j->out, j->err, sizeof j->err);
    if (j->out == NULL) snprintf(j->err, sizeof j->err, "out of memory");
    ctn_val_unref(arr);
}

static void splitter_after(uv_work_t *w, int status) {
    pool_job *j = w->data;
    if (j->t != NULL) {
        ctn_task_set_data(j->t, NULL);
        if (status == UV_ECANCELED) ctn_task_fail(j->t, CTN_ECANCELED, "cancelled");
        else if (j->rc < 0) ctn_task_fail(j->t, j->rc, "%s", j->err);
        else ctn_task_done(j->t, j->out), j->out = NULL;
    }
    job_free(j);
}

static bool splittable(const ctn_val *v) { return v->kind == CTN_VSTR || v->kind == CTN_VDOC; }

static void splitter_start(ctn_task *t, ctn_val *input) {
    if (input == NULL || !(splittable(input) || input->kind == CTN_VARR)) {
        ctn_task_fail(t, CTN_ETYPE, "needs a document, a string or an array of them, got %s",
                      input != NULL ? ctn_vkind_name(input->kind) : "nothing");
        return;
    }
    for (size_t i = 0; input->kind == CTN_VARR && i < ctn_val_len(input); i++) {
        if (!splittable(ctn_val_at(input, i))) {
            ctn_task_fail(t, CTN_ETYPE,
                          "needs a document, a string or an array of them; item %zu of the "
                          "array is %s (make documents with catena.document{...})",
                          i + 1, ctn_vkind_name(ctn_val_at(input, i)->kind));
            return;
        }
    }
    job_start(t, input, splitter_work, splitter_after);
}

static char *splitter_describe(const void *p) {
    const splitter_ud *u = p;
    char buf[160];
    snprintf(buf, sizeof buf, "%s %zu/%zu%s", ctn_split_name(u->kind), u->o.chunk_size,
             u->o.chunk_overlap, u->lm != NULL ? " tokens" : "");
    return ctn__strdup(buf);
}

static const ctn_node_ops splitter_ops = {.kind = "splitter",
                                          .start = splitter_start,
                                          .cancel = job_cancel,
                                          .free_ud = splitter_free,
                                          .describe = splitter_describe};

ctn_node *ctn_splitter_node(ctn_split_kind kind, const ctn_split_opts *o, ctn_lm *tokens_lm,
                            char *err, size_t errcap) {
    ctn_split_opts chk = *o;
    if (tokens_lm != NULL) chk.tokens = ctn_split_vocab_tokens;
    int rc = ctn_split_check(kind, &chk, err, errcap);
    if (rc < 0) return NULL;
    splitter_ud *u = ctn__calloc(1, sizeof *u);
    bool oom = u == NULL;
    if (!oom) {
        u->kind = kind;
        u->o = chk;
        if (o->separators != NULL && o->n_separators > 0) {
            u->seps = ctn__calloc(o->n_separators, sizeof *u->seps);
            oom = u->seps == NULL;
            u->o.n_separators = 0;
            for (size_t i = 0; !oom && i < o->n_separators; i++) {
                u->seps[i] = dup_or_null(o->separators[i], &oom);
                u->o.n_separators++;
            }
            u->o.separators = (const char *const *)u->seps;
        }
        if (tokens_lm != NULL) {
            u->lm = ctn_lm_ref(tokens_lm);
            u->o.tokens = ctn_split_vocab_tokens;
            u->o.tokens_ud = (void *)ctn_lm_vocab(tokens_lm);
        }
    }
    ctn_node *n = oom ? NULL : ctn_node_custom(&splitter_ops, u, "splitter");
    if (n == NULL) {
        splitter_free(u);
        ctn__errf(err, errcap, "out of memory");
    }
    return n;
}

/* ---- knowledge base targets -------------------------------------------------------------- */

typedef struct {
    char *path, *collection;
    char **labels;
    size_t n_labels;
    ctn_lm *embed;
    int pooling;
    ctn_kb_dtype dtype;
} target;

static void target_close(target *t) {
    free(t->path);
    free(t->collection);
    for (size_t i = 0; i < t->n_labels; i++) free(t->labels[i]);
    free(t->labels);
    ctn_lm_close(t->embed);
}

static int target_copy(target *d, const ctn_kb_target *s, char *err, size_t errcap) {
    bool oom = false;
    memset(d, 0, sizeof *d);
    if (s->path == NULL) {
        ctn__errf(err, errcap, "a knowledge base node needs the file's path");
        return CTN_EINVAL;
    }
    d->path = dup_or_null(s->path, &oom);
    d->collection = dup_or_null(s->collection != NULL ? s->collection : "default", &oom);
    if (s->n_labels > 0 && (d->labels = ctn__calloc(s->n_labels, sizeof *d->labels)) == NULL)
        oom = true;
    for (size_t i = 0; d->labels != NULL && i < s->n_labels; i++, d->n_labels++)
        d->labels[i] = dup_or_null(s->labels[i], &oom);
    d->pooling = s->pooling;
    d->dtype = s->dtype;
    if (oom) {
        target_close(d);
        ctn__errf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    d->embed = ctn_lm_ref(s->embed);
    return 0;
}

/* Opens the knowledge base and its collection (recording the embedding model). */
static int target_open(const target *t, ctn_kb **kb, ctn_kb_coll *c, char *err, size_t errcap) {
    int rc = ctn_kb_open(t->path, 0, kb, err, errcap);
    if (rc < 0) return rc;
    ctn_kb_coll_opts co = {.create = true, .labels = (const char *const *)t->labels,
                           .n_labels = t->n_labels};
    char model[256];
    if (t->embed != NULL) {
        rc = ctn_kb_model_id(ctn_lm_path(t->embed), ctn_lm_arch(t->embed),
                             ctn_lm_embed_dim(t->embed), model, sizeof model);
        co.embed_model = model;
        co.embed_dim = ctn_lm_embed_dim(t->embed);
    }
    if (rc == 0) rc = ctn_kb_collection(*kb, t->collection, &co, c, err, errcap);
    if (rc < 0) {
        ctn_kb_close(*kb);
        *kb = NULL;
    }
    return rc;
}

/* ---- kb add ------------------------------------------------------------------------------ */

/* A task of the add node: the chunks to embed on the loop, then the write on the pool. */
typedef struct {
    pool_job job; /* first: the pool callbacks get it */
    const target *tg;
    size_t n, next, done_n, in_flight;
    float *vecs;
    uint64_t *handles;
    int dim;
    int64_t documents;
    bool failed_embed, writing;
} add_job;

/* One embedding request of an add task. */
typedef struct {
    add_job *a;
    size_t i;
} add_req;

static const ctn_val *text_of(const ctn_val *v) { return v->kind == CTN_VDOC ? v->u.doc.text : v; }

static void add_write_work(uv_work_t *w) {
    add_job *a = w->data;
    pool_job *j = &a->job;
    ctn_kb *kb = NULL;
    ctn_kb_coll c;
    if ((j->rc = target_open(a->tg, &kb, &c, j->err, sizeof j->err)) < 0) return;
    /* Group by source, keeping input order: a linear scan per chunk over the groups seen is
     * fine for the few sources one add names. */
    size_t n = a->n, *order = ctn__malloc((n + 1) * sizeof *order);
    bool *taken = ctn__calloc(n + 1, sizeof *taken);
    if (order == NULL || taken == NULL) {
        j->rc = CTN_ENOMEM;
        snprintf(j->err, sizeof j->err, "out of memory");
    }
    for (size_t i = 0; j->rc == 0 && i < n; i++) {
        if (taken[i]) continue;
        const ctn_val *d = ctn_val_at(j->in, i);
        const ctn_val *src = d->kind == CTN_VDOC ? ctn_val_get(d, "source") : NULL;
        ctn_val *group = ctn_val_arr();
        size_t k = 0;
        ctn_strbuf all = {0};
        for (size_t m = i; group != NULL && m < n; m++) {
            const ctn_val *e = ctn_val_at(j->in, m);
            const ctn_val *es = e->kind == CTN_VDOC ? ctn_val_get(e, "source") : NULL;
            bool same = m == i || (src != NULL && es != NULL && src->kind == CTN_VSTR &&
                                   ctn_val_equal(src, es));
            if (!same || taken[m]) continue;
            taken[m] = true;
            order[k++] = m;
            if (ctn_val_push(group, ctn_val_ref((ctn_val *)e)) < 0) {
                ctn_val_unref(group);
                group = NULL;
            }
            ctn_sb_put(&all, text_of(e)->u.str.p, text_of(e)->u.str.len);
            if (src == NULL) break; /* a document without a source stands alone */
        }
        char hash[48], uri[64];
        ctn_kb_hash(all.p != NULL ? all.p : "", all.len, hash);
        bool oom = group == NULL || all.oom;
        ctn_sb_free(&all);
        if (oom) {
            ctn_val_unref(group);
            j->rc = CTN_ENOMEM;
            snprintf(j->err, sizeof j->err, "out of memory");
            break;
        }
        snprintf(uri, sizeof uri, "text:%s", hash + 8);
        float *vecs = NULL;
        if (a->vecs != NULL) {
            vecs = ctn__malloc(k * (size_t)a->dim * sizeof *vecs);
            for (size_t q = 0; vecs != NULL && q < k; q++)
                memcpy(vecs + q * (size_t)a->dim, a->vecs + order[q] * (size_t)a->dim,
                       (size_t)a->dim * sizeof *vecs);
            if (vecs == NULL) {
                ctn_val_unref(group);
                j->rc = CTN_ENOMEM;
                snprintf(j->err, sizeof j->err, "out of memory");
                break;
            }
        }
        ctn_kb_doc doc = {.uri = src != NULL && src->kind == CTN_VSTR ? src->u.str.p : uri,
                          .hash = hash, .size = (int64_t)0, .loader = "add"};
        ctn_kb_vectors v = {.model = c.embed_model, .dim = a->dim, .n = k, .vecs = vecs,
                            .dtype = a->tg->dtype};
        j->rc = ctn_kb_put(kb, &c, &doc, group, vecs != NULL ? &v : NULL, j->err, sizeof j->err);
        free(vecs);
        ctn_val_unref(group);
        if (j->rc == 0) a->documents++;
    }
    free(order);
    free(taken);
    ctn_kb_close(kb);
}

static void add_free(add_job *a) {
    free(a->vecs);
    free(a->handles);
    job_free(&a->job); /* frees a: the job is its first member */
}

static void add_write_after(uv_work_t *w, int status) {
    add_job *a = w->data;
    pool_job *j = &a->job;
    if (j->t != NULL) {
        ctn_task_set_data(j->t, NULL);
        if (status == UV_ECANCELED) {
            ctn_task_fail(j->t, CTN_ECANCELED, "cancelled");
        } else if (j->rc < 0) {
            ctn_task_fail(j->t, j->rc, "%s", j->err);
        } else {
            ctn_val *o = ctn_val_obj();
            if (o == NULL || ctn_val_set(o, "documents", ctn_val_int(a->documents)) < 0 ||
                ctn_val_set(o, "chunks", ctn_val_int((int64_t)a->n)) < 0) {
                ctn_val_unref(o);
                ctn_task_fail(j->t, CTN_ENOMEM, "out of memory");
            } else {
                ctn_task_done(j->t, o);
            }
        }
    }
    add_free(a);
}

static void add_queue_write(add_job *a) {
    a->writing = true;
    int r = uv_queue_work(ctn_task_loop(a->job.t), &a->job.work, add_write_work, add_write_after);
    if (r < 0) {
        ctn_task_set_data(a->job.t, NULL);
        ctn_task_fail(a->job.t, CTN_EIO, "cannot queue work: %s", uv_strerror(r));
        add_free(a);
    }
}

static void add_embed_next(add_job *a);

static void add_on_embedding(void *ud, const float *vec, int dim, int err, const char *msg) {
    add_req *r = ud;
    add_job *a = r->a;
    size_t i = r->i;
    free(r);
    a->in_flight--;
    if (err == 0 && dim == a->dim) {
        memcpy(a->vecs + i * (size_t)dim, vec, (size_t)dim * sizeof *vec);
        a->done_n++;
    } else if (!a->failed_embed) {
        a->failed_embed = true;
        a->job.rc = err != 0 ? err : CTN_EFORMAT;
        snprintf(a->job.err, sizeof a->job.err, "chunk %zu: embedding failed: %s", i + 1,
                 err != 0 ? msg : "wrong dimension");
    }
    if (a->job.t == NULL || a->failed_embed) { /* cancelled or failed: end when all are back */
        if (a->in_flight > 0) return;
        if (a->job.t != NULL) {
            ctn_task_set_data(a->job.t, NULL);
            ctn_task_fail(a->job.t, a->job.rc, "%s", a->job.err);
        }
        add_free(a);
        return;
    }
    if (a->done_n == a->n) add_queue_write(a);
    else add_embed_next(a);
}

/* Keeps up to 256 embeddings of the task in flight (the engine batches them). */
static void add_embed_next(add_job *a) {
    while (a->next < a->n && a->in_flight < 256 && !a->failed_embed) {
        size_t i = a->next++;
        add_req *ud = ctn__malloc(sizeof *ud);
        char err[256];
        int rc = CTN_ENOMEM;
        if (ud != NULL) {
            *ud = (add_req){a, i};
            const ctn_val *tx = text_of(ctn_val_at(a->job.in, i));
            int pool = a->tg->pooling != CTN_POOL_NONE ? a->tg->pooling
                                                       : ctn_lm_pooling(a->tg->embed);
            rc = ctn_lm_embed(a->tg->embed, tx->u.str.p, tx->u.str.len, pool, add_on_embedding,
                              ud, &a->handles[i], err, sizeof err);
        }
        if (rc < 0) {
            free(ud);
            a->failed_embed = true;
            a->job.rc = rc;
            snprintf(a->job.err, sizeof a->job.err, "chunk %zu: %s", i + 1,
                     rc == CTN_ENOMEM ? "out of memory" : err);
        }
        else a->in_flight++;
    }
    if (a->failed_embed && a->in_flight == 0) {
        ctn_task_set_data(a->job.t, NULL);
        ctn_task_fail(a->job.t, a->job.rc, "%s", a->job.err);
        add_free(a);
    }
}

static void add_cancel(ctn_task *t) {
    add_job *a = ctn_task_data(t);
    if (a == NULL) return;
    a->job.t = NULL;
    for (size_t i = 0; a->handles != NULL && i < a->next; i++)
        if (a->handles[i] != 0) ctn_lm_cancel(a->tg->embed, a->handles[i]);
    /* Still on the pool (the write) or with embeddings out: their callbacks free it. Neither:
     * nothing else will. */
    if (!a->writing && a->in_flight == 0) add_free(a);
}

static void add_start(ctn_task *t, ctn_val *input) {
    const target *tg = ctn_node_ud(ctn_task_node(t));
    bool ok = input != NULL && (splittable(input) || input->kind == CTN_VARR);
    for (size_t i = 0; ok && input->kind == CTN_VARR && i < ctn_val_len(input); i++)
        ok = splittable(ctn_val_at(input, i));
    if (!ok) {
        ctn_task_fail(t, CTN_ETYPE, "needs documents (a document, a string or an array of "
                      "them), got %s", input != NULL ? ctn_vkind_name(input->kind) : "nothing");
        return;
    }
    add_job *a = ctn__calloc(1, sizeof *a);
    ctn_val *arr = input->kind == CTN_VARR ? ctn_val_copy(input) : ctn_val_arr();
    if (arr != NULL && input->kind != CTN_VARR && ctn_val_push(arr, ctn_val_copy(input)) < 0)
        arr = NULL; /* push released it */
    if (a == NULL || arr == NULL) {
        free(a);
        ctn_val_unref(arr);
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    a->job.t = t;
    a->job.in = arr;
    a->job.work.data = a;
    a->tg = tg;
    a->n = ctn_val_len(arr);
    ctn_task_set_data(t, a);
    if (tg->embed == NULL || a->n == 0) {
        add_queue_write(a);
        return;
    }
    a->dim = ctn_lm_embed_dim(tg->embed);
    a->vecs = ctn__malloc(a->n * (size_t)a->dim * sizeof *a->vecs);
    a->handles = ctn__calloc(a->n, sizeof *a->handles);
    if (a->vecs == NULL || a->handles == NULL) {
        ctn_task_set_data(t, NULL);
        add_free(a);
        ctn_task_fail(t, CTN_ENOMEM, "out of memory for %zu embeddings", ctn_val_len(arr));
        return;
    }
    add_embed_next(a);
}

static void target_free(void *p) {
    if (p == NULL) return;
    target_close(p);
    free(p);
}

static char *target_describe(const void *p) {
    const target *t = p;
    char buf[600];
    snprintf(buf, sizeof buf, "%s / %s", t->path, t->collection);
    return ctn__strdup(buf);
}

static const ctn_node_ops add_ops = {.kind = "kb.add",
                                     .start = add_start,
                                     .cancel = add_cancel,
                                     .free_ud = target_free,
                                     .describe = target_describe};

static target *new_target(const ctn_kb_target *t, char *err, size_t errcap) {
    target *tg = ctn__calloc(1, sizeof *tg);
    if (tg == NULL) {
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    if (target_copy(tg, t, err, errcap) < 0) {
        free(tg);
        return NULL;
    }
    return tg;
}

ctn_node *ctn_kb_add_node(const ctn_kb_target *t, char *err, size_t errcap) {
    target *tg = new_target(t, err, errcap);
    if (tg == NULL) return NULL;
    ctn_node *n = ctn_node_custom(&add_ops, tg, "kb.add");
    if (n == NULL) {
        target_free(tg);
        ctn__errf(err, errcap, "out of memory");
    }
    return n;
}

/* ---- kb ingest --------------------------------------------------------------------------- */

typedef struct {
    target tg;
    ctn_ingest_opts o;
    char **seps;
    size_t n_seps;
    char *glob;
    char *json_text;
    char **json_meta;
    size_t n_json_meta;
    ctn_json_sel json;
    ctn_warn_fn warn;
    void *warn_ud;
} ingest_ud;

typedef struct {
    ctn_task *t; /* NULL once cancelled */
    const ingest_ud *u;
    ctn_kb *kb;
    ctn_ingest *ing;
    ctn_val *failures;
    char **paths;
    size_t n_paths;
} ingest_job;

static void ingest_file(void *ud, const char *path, const char *status, const char *msg) {
    ingest_job *g = ud;
    if (!strcmp(status, "failed")) {
        ctn_val *f = ctn_val_obj();
        if (f != NULL && ctn_val_set(f, "path", ctn_val_cstr(path)) == 0 &&
            ctn_val_set(f, "message", ctn_val_cstr(msg)) == 0)
            ctn_val_push(g->failures, f);
        else
            ctn_val_unref(f);
    } else if (!strcmp(status, "warning") && g->u->warn != NULL) {
        g->u->warn(g->u->warn_ud, msg);
    }
}

static void ingest_job_free(ingest_job *g) {
    ctn_kb_close(g->kb);
    ctn_val_unref(g->failures);
    for (size_t i = 0; i < g->n_paths; i++) free(g->paths[i]);
    free(g->paths);
    free(g);
}

static int set_int(ctn_val *o, const char *k, int64_t v) { return ctn_val_set(o, k, ctn_val_int(v)); }

static void ingest_done(void *ud, const ctn_ingest_progress *p, int rc, const char *msg) {
    ingest_job *g = ud;
    if (g->t != NULL) {
        ctn_task_set_data(g->t, NULL);
        ctn_val *o = rc == 0 ? ctn_val_obj() : NULL;
        if (rc < 0) {
            ctn_task_fail(g->t, rc, "%s", msg);
        } else if (o == NULL || set_int(o, "files", p->files_total) < 0 ||
                   set_int(o, "added", p->added) < 0 || set_int(o, "replaced", p->replaced) < 0 ||
                   set_int(o, "skipped", p->skipped) < 0 || set_int(o, "failed", p->failed) < 0 ||
                   set_int(o, "removed", p->removed) < 0 || set_int(o, "chunks", p->chunks) < 0 ||
                   set_int(o, "pages", p->pages) < 0 || set_int(o, "embedded", p->embedded) < 0 ||
                   set_int(o, "embed_tokens", p->embed_tokens) < 0 ||
                   set_int(o, "contextualized", p->contextualized) < 0 ||
                   set_int(o, "context_prefill", p->context_prefill) < 0 ||
                   set_int(o, "context_naive", p->context_naive) < 0 ||
                   set_int(o, "context_tokens", p->context_tokens) < 0 ||
                   ctn_val_set(o, "seconds", ctn_val_num(p->elapsed_s)) < 0 ||
                   ctn_val_set(o, "failures", ctn_val_ref(g->failures)) < 0) {
            ctn_val_unref(o);
            ctn_task_fail(g->t, CTN_ENOMEM, "out of memory");
        } else {
            ctn_task_done(g->t, o);
        }
    }
    ingest_job_free(g);
}

static void ingest_start(ctn_task *t, ctn_val *input) {
    const ingest_ud *u = ctn_node_ud(ctn_task_node(t));
    size_t n = input == NULL || input->kind == CTN_VNULL ? u->o.n_paths
               : input->kind == CTN_VSTR                 ? 1
                                                         : ctn_val_len(input);
    bool ok = input == NULL || input->kind == CTN_VNULL || input->kind == CTN_VSTR ||
              input->kind == CTN_VARR;
    for (size_t i = 0; ok && input != NULL && input->kind == CTN_VARR && i < n; i++)
        ok = ctn_val_at(input, i)->kind == CTN_VSTR;
    if (!ok || n == 0) {
        ctn_task_fail(t, CTN_ETYPE, "needs a path or an array of paths as input, got %s",
                      input != NULL ? ctn_vkind_name(input->kind) : "nothing");
        return;
    }
    ingest_job *g = ctn__calloc(1, sizeof *g);
    char err[512] = "";
    int rc = g == NULL || (g->failures = ctn_val_arr()) == NULL ||
                     (g->paths = ctn__calloc(n, sizeof *g->paths)) == NULL
                 ? CTN_ENOMEM
                 : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *p = input == NULL || input->kind == CTN_VNULL ? u->o.paths[i]
                        : input->kind == CTN_VSTR                 ? input->u.str.p
                                                                  : ctn_val_at(input, i)->u.str.p;
        if ((g->paths[i] = ctn__strdup(p)) == NULL) rc = CTN_ENOMEM;
        else g->n_paths++;
    }
    if (rc == CTN_ENOMEM) snprintf(err, sizeof err, "out of memory");
    ctn_kb_coll c;
    if (rc == 0) rc = target_open(&u->tg, &g->kb, &c, err, sizeof err);
    if (rc == 0) {
        g->t = t;
        g->u = u;
        ctn_ingest_opts o = u->o;
        o.paths = (const char *const *)g->paths;
        o.n_paths = g->n_paths;
        o.collection = u->tg.collection;
        o.labels = (const char *const *)u->tg.labels;
        o.n_labels = u->tg.n_labels;
        o.embed = u->tg.embed;
        o.pooling = u->tg.pooling;
        o.dtype = u->tg.dtype;
        o.on_progress = NULL;
        o.on_file = ingest_file;
        o.on_done = ingest_done;
        o.ud = g;
        rc = ctn_ingest_start(ctn_task_loop(t), g->kb, &o, &g->ing, err, sizeof err);
    }
    if (rc < 0) {
        if (g != NULL) ingest_job_free(g);
        ctn_task_fail(t, rc, "%s", err);
        return;
    }
    ctn_task_set_data(t, g);
}

static void ingest_cancel(ctn_task *t) {
    ingest_job *g = ctn_task_data(t);
    if (g == NULL) return;
    g->t = NULL;
    ctn_ingest_cancel(g->ing); /* ingest_done comes later and frees the job */
}

static void ingest_free(void *p) {
    ingest_ud *u = p;
    if (u == NULL) return;
    target_close(&u->tg);
    ctn_lm_close(u->o.contextualize);
    for (size_t i = 0; i < u->n_seps; i++) free(u->seps[i]);
    free(u->seps);
    free(u->glob);
    free(u->json_text);
    for (size_t i = 0; i < u->n_json_meta; i++) free(u->json_meta[i]);
    free(u->json_meta);
    for (size_t i = 0; u->o.paths != NULL && i < u->o.n_paths; i++) free((char *)u->o.paths[i]);
    free((void *)u->o.paths);
    free(u);
}

static char *ingest_describe(const void *p) { return target_describe(&((const ingest_ud *)p)->tg); }

static const ctn_node_ops ingest_ops = {.kind = "kb.ingest",
                                        .start = ingest_start,
                                        .cancel = ingest_cancel,
                                        .free_ud = ingest_free,
                                        .describe = ingest_describe};

ctn_node *ctn_kb_ingest_node(const ctn_kb_target *t, const ctn_ingest_opts *o, ctn_warn_fn warn,
                             void *warn_ud, char *err, size_t errcap) {
    ctn_split_opts chk = o->split;
    bool tokens = o->split.tokens != NULL;
    if (tokens && t->embed == NULL) {
        ctn__errf(err, errcap, "lengths in tokens need the embedding model's tokenizer (embed)");
        return NULL;
    }
    if (ctn_split_check(o->splitter, &chk, err, errcap) < 0) return NULL;
    ingest_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) {
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    if (target_copy(&u->tg, t, err, errcap) < 0) {
        free(u);
        return NULL;
    }
    u->o = *o;
    u->warn = warn;
    u->warn_ud = warn_ud;
    /* The node keeps its own reference to the contextualizing model. */
    u->o.contextualize = o->contextualize != NULL ? ctn_lm_ref(o->contextualize) : NULL;
    bool oom = false;
    u->o.paths = NULL;
    u->o.n_paths = 0;
    if (o->n_paths > 0) {
        char **ps = ctn__calloc(o->n_paths, sizeof *ps);
        oom = ps == NULL;
        for (size_t i = 0; ps != NULL && i < o->n_paths; i++, u->o.n_paths++)
            ps[i] = dup_or_null(o->paths[i], &oom);
        u->o.paths = (const char *const *)ps;
    }
    u->glob = dup_or_null(o->glob, &oom);
    u->o.glob = u->glob;
    if (o->split.separators != NULL && o->split.n_separators > 0) {
        u->seps = ctn__calloc(o->split.n_separators, sizeof *u->seps);
        oom = oom || u->seps == NULL;
        for (size_t i = 0; u->seps != NULL && i < o->split.n_separators; i++, u->n_seps++)
            u->seps[i] = dup_or_null(o->split.separators[i], &oom);
        u->o.split.separators = (const char *const *)u->seps;
        u->o.split.n_separators = u->n_seps;
    }
    u->o.json = NULL;
    if (o->json != NULL) {
        u->json_text = dup_or_null(o->json->text, &oom);
        if (o->json->n_meta_fields > 0) {
            u->json_meta = ctn__calloc(o->json->n_meta_fields, sizeof *u->json_meta);
            oom = oom || u->json_meta == NULL;
            for (size_t i = 0; u->json_meta != NULL && i < o->json->n_meta_fields;
                 i++, u->n_json_meta++)
                u->json_meta[i] = dup_or_null(o->json->meta_fields[i], &oom);
        }
        u->json = (ctn_json_sel){.text = u->json_text,
                                 .meta_fields = (const char *const *)u->json_meta,
                                 .n_meta_fields = u->n_json_meta};
        u->o.json = &u->json;
    }
    if (tokens) {
        u->o.split.tokens = ctn_split_vocab_tokens;
        u->o.split.tokens_ud = (void *)ctn_lm_vocab(t->embed);
    }
    ctn_node *n = oom ? NULL : ctn_node_custom(&ingest_ops, u, "kb.ingest");
    if (n == NULL) {
        ingest_free(u);
        ctn__errf(err, errcap, "out of memory");
    }
    return n;
}

/* ---- kb retriever ------------------------------------------------------------------------ */

typedef struct {
    target tg;
    ctn_search_opts o;
    ctn_kb_filter *filter;
    char *filter_json; /* for describe */
    ctn_vcache *cache;
} retriever_ud;

enum { MAX_RET_QUERIES = 64 };

/* A task of the retriever: the queries embedded on the loop (vector and hybrid), then the
 * search and the reading of the hits on the pool. */
typedef struct {
    pool_job job; /* first: the pool callbacks get it */
    const retriever_ud *u;
    size_t nq;
    char *query[MAX_RET_QUERIES];
    size_t qlen[MAX_RET_QUERIES];
    float *qvec; /* nq * dim */
    uint64_t handle[MAX_RET_QUERIES];
    bool out[MAX_RET_QUERIES]; /* that embedding is out */
    size_t pending;            /* embeddings out */
    int erc;                   /* the first embedding failure */
    char emsg[256];
} ret_job;

static void ret_free(ret_job *r) {
    for (size_t i = 0; i < r->nq; i++)
        free(r->query[i]);
    free(r->qvec);
    job_free(&r->job); /* frees r: the job is its first member */
}

static void ret_work(uv_work_t *w) {
    ret_job *r = w->data;
    pool_job *j = &r->job;
    const retriever_ud *u = r->u;
    ctn_kb *kb = NULL;
    ctn_kb_coll c;
    ctn_kb_hit *hits = ctn__malloc(u->o.k * sizeof *hits);
    size_t n = 0;
    bool reading = false; /* one snapshot for the search and the reading of its hits */
    if (hits == NULL) {
        j->rc = CTN_ENOMEM;
        snprintf(j->err, sizeof j->err, "out of memory");
        goto out;
    }
    if ((j->rc = ctn_kb_open(u->tg.path, CTN_KB_READONLY, &kb, j->err, sizeof j->err)) < 0 ||
        (j->rc = ctn_kb_collection(kb, u->tg.collection, NULL, &c, j->err, sizeof j->err)) < 0 ||
        (j->rc = ctn_kb_read_begin(kb, j->err, sizeof j->err)) < 0)
        goto out;
    reading = true;
    if (u->o.mode != CTN_RETRIEVE_BM25) { /* the query's vector must be of the stored ones' model */
        char id[256];
        ctn_kb_model_id(ctn_lm_path(u->tg.embed), ctn_lm_arch(u->tg.embed),
                        ctn_lm_embed_dim(u->tg.embed), id, sizeof id);
        if (strcmp(id, c.embed_model) != 0) {
            snprintf(j->err, sizeof j->err, "%s: collection '%s' is embedded with '%s'; the "
                     "retriever's model is '%s'", u->tg.path, c.name,
                     c.embed_model[0] ? c.embed_model : "(no model)", id);
            j->rc = CTN_EINVAL;
            goto out;
        }
    }
    ctn_search_opts o = u->o;
    o.bm25.filter = u->filter;
    if ((j->rc = ctn_kb_search(kb, &c, u->cache, &o, r->nq, (const char *const *)r->query,
                               r->qlen, r->qvec, hits, &n, j->err, sizeof j->err)) < 0)
        goto out;
    ctn_val *docs = ctn_val_arr();
    if (docs == NULL) j->rc = CTN_ENOMEM;
    for (size_t i = 0; j->rc == 0 && i < n; i++) {
        ctn_val *d = NULL;
        j->rc = ctn_kb_chunk(kb, &c, hits[i].chunk, &d, j->err, sizeof j->err);
        if (j->rc == 0 && ctn_val_set(d->u.doc.meta, "score", ctn_val_num(hits[i].score)) < 0)
            j->rc = CTN_ENOMEM;
        if (j->rc == 0) j->rc = ctn_val_push(docs, d);
        else ctn_val_unref(d);
    }
    if (j->rc == CTN_ENOMEM) snprintf(j->err, sizeof j->err, "out of memory");
    if (j->rc == 0) j->out = docs;
    else ctn_val_unref(docs);
out:
    if (reading) ctn_kb_read_end(kb);
    ctn_kb_close(kb);
    free(hits);
}

static void ret_after(uv_work_t *w, int status) {
    ret_job *r = w->data;
    pool_job *j = &r->job;
    if (j->t != NULL) {
        ctn_task_set_data(j->t, NULL);
        if (status == UV_ECANCELED) ctn_task_fail(j->t, CTN_ECANCELED, "cancelled");
        else if (j->rc < 0) ctn_task_fail(j->t, j->rc, "%s", j->err);
        else ctn_task_done(j->t, j->out), j->out = NULL;
    }
    ret_free(r);
}

static void ret_queue(ret_job *r) {
    int q = uv_queue_work(ctn_task_loop(r->job.t), &r->job.work, ret_work, ret_after);
    if (q < 0) {
        ctn_task_set_data(r->job.t, NULL);
        ctn_task_fail(r->job.t, CTN_EIO, "cannot queue work on the thread pool: %s",
                      uv_strerror(q));
        ret_free(r);
    }
}

typedef struct {
    ret_job *r;
    size_t i;
} ret_slot;

/* One query's embedding: when the last is in, the search is queued (or the task fails with
 * the first failure). */
static void ret_on_embedding(void *ud, const float *vec, int dim, int err, const char *msg) {
    ret_slot *sl = ud;
    ret_job *r = sl->r;
    const size_t i = sl->i;
    free(sl);
    r->out[i] = false;
    r->pending--;
    const int want = ctn_lm_embed_dim(r->u->tg.embed);
    if (r->erc == 0 && (err != 0 || dim != want)) {
        r->erc = err != 0 ? err : CTN_EFORMAT;
        snprintf(r->emsg, sizeof r->emsg, "%s", err != 0 ? msg : "wrong dimension");
    }
    if (r->erc == 0) memcpy(r->qvec + i * (size_t)want, vec, (size_t)want * sizeof *vec);
    if (r->pending > 0) return;
    if (r->job.t == NULL) { /* cancelled while the embeddings were out */
        ret_free(r);
        return;
    }
    if (r->erc == 0) {
        ret_queue(r);
        return;
    }
    ctn_task_set_data(r->job.t, NULL);
    ctn_task_fail(r->job.t, r->erc, "embedding the query: %s", r->emsg);
    ret_free(r);
}

static void ret_cancel(ctn_task *t) {
    ret_job *r = ctn_task_data(t);
    if (r == NULL) return;
    r->job.t = NULL;
    for (size_t i = 0; i < r->nq; i++) /* their callbacks free r with the last */
        if (r->out[i]) ctn_lm_cancel(r->u->tg.embed, r->handle[i]);
    /* On the pool: ret_after frees it. */
}

static const ctn_val *query_text(const ctn_val *v) {
    const ctn_val *q = v != NULL && v->kind == CTN_VDOC ? v->u.doc.text : v;
    return q != NULL && q->kind == CTN_VSTR ? q : NULL;
}

static void ret_start(ctn_task *t, ctn_val *input) {
    const retriever_ud *u = ctn_node_ud(ctn_task_node(t));
    const bool many = input != NULL && input->kind == CTN_VARR;
    const size_t nq = many ? ctn_val_len(input) : 1;
    if (nq < 1 || nq > MAX_RET_QUERIES) {
        ctn_task_fail(t, CTN_EINVAL, "needs from 1 to %d queries, got %zu", MAX_RET_QUERIES, nq);
        return;
    }
    for (size_t i = 0; i < nq; i++) {
        const ctn_val *v = many ? ctn_val_at(input, i) : input;
        if (query_text(v) != NULL) continue;
        const char *got = v != NULL ? ctn_vkind_name(v->kind) : "nothing";
        if (many) ctn_task_fail(t, CTN_ETYPE, "query %zu: needs a string or a document, got %s",
                                i + 1, got);
        else ctn_task_fail(t, CTN_ETYPE, "needs a query (a string or a document, or an array "
                           "of them), got %s", got);
        return;
    }
    ret_job *r = ctn__calloc(1, sizeof *r);
    if (r == NULL) {
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < nq; i++, r->nq++) {
        const ctn_val *q = query_text(many ? ctn_val_at(input, i) : input);
        if ((r->query[i] = ctn__strndup(q->u.str.p, q->u.str.len)) == NULL) break;
        r->qlen[i] = q->u.str.len;
    }
    const bool embed = u->o.mode != CTN_RETRIEVE_BM25;
    const size_t dim = embed ? (size_t)ctn_lm_embed_dim(u->tg.embed) : 0;
    if (r->nq < nq || (embed && (r->qvec = ctn__malloc(nq * dim * sizeof(float))) == NULL)) {
        ret_free(r);
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    r->u = u;
    r->job.t = t;
    r->job.work.data = r;
    ctn_task_set_data(t, r);
    if (!embed) {
        ret_queue(r);
        return;
    }
    const int pool = u->tg.pooling != CTN_POOL_NONE ? u->tg.pooling : ctn_lm_pooling(u->tg.embed);
    r->pending = 1; /* held while the requests go out, so no callback finishes r meanwhile */
    for (size_t i = 0; i < nq && r->erc == 0; i++) {
        char err[256] = "";
        ret_slot *sl = ctn__malloc(sizeof *sl);
        int rc = CTN_ENOMEM;
        if (sl != NULL) {
            *sl = (ret_slot){r, i};
            r->out[i] = true, r->pending++;
            rc = ctn_lm_embed(u->tg.embed, r->query[i], r->qlen[i], pool, ret_on_embedding, sl,
                              &r->handle[i], err, sizeof err);
            if (rc < 0) r->out[i] = false, r->pending--, free(sl);
        } else {
            snprintf(err, sizeof err, "out of memory");
        }
        if (rc < 0) {
            r->erc = rc;
            snprintf(r->emsg, sizeof r->emsg, "%s", err);
            for (size_t j = 0; j < i; j++) /* the ones out: their callbacks come back */
                if (r->out[j]) ctn_lm_cancel(u->tg.embed, r->handle[j]);
        }
    }
    if (--r->pending > 0) return;
    /* Nothing out (every request answered at once, or a failure with none out). */
    if (r->erc == 0) {
        ret_queue(r);
        return;
    }
    ctn_task_set_data(t, NULL);
    ctn_task_fail(t, r->erc, "embedding the query: %s", r->emsg);
    ret_free(r);
}

static void retriever_free(void *p) {
    retriever_ud *u = p;
    if (u == NULL) return;
    target_close(&u->tg);
    ctn_kb_filter_free(u->filter);
    free(u->filter_json);
    ctn_vcache_free(u->cache);
    free(u);
}

static char *retriever_describe(const void *p) {
    const retriever_ud *u = p;
    static const char *const modes[] = {"vector", "bm25", "hybrid"};
    char buf[900];
    snprintf(buf, sizeof buf, "%s / %s, %s%s k=%zu%s%.300s", u->tg.path, u->tg.collection,
             modes[u->o.mode], u->o.mmr ? " mmr" : "", u->o.k,
             u->filter_json != NULL ? " filter=" : "", u->filter_json ? u->filter_json : "");
    return ctn__strdup(buf);
}

static const ctn_node_ops retriever_ops = {.kind = "retriever",
                                           .start = ret_start,
                                           .cancel = ret_cancel,
                                           .free_ud = retriever_free,
                                           .describe = retriever_describe};

ctn_node *ctn_kb_retriever_node(const ctn_kb_target *t, const ctn_retriever_opts *o, char *err,
                                size_t errcap) {
    if (ctn_search_check(&o->search, err, errcap) < 0) return NULL;
    if (o->search.mode != CTN_RETRIEVE_BM25 && t->embed == NULL) {
        ctn__errf(err, errcap, "retriever: %s search needs the collection's embedding model "
                  "(embed = a model)", o->search.mode == CTN_RETRIEVE_VECTOR ? "vector"
                                                                             : "hybrid");
        return NULL;
    }
    retriever_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) {
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    if (target_copy(&u->tg, t, err, errcap) < 0) {
        free(u);
        return NULL;
    }
    u->o = o->search;
    u->o.bm25.filter = NULL;
    if (o->filter != NULL) {
        if (ctn_kb_filter_new(o->filter, &u->filter, err, errcap) < 0) {
            retriever_free(u);
            return NULL;
        }
        if ((u->filter_json = ctn_val_to_json(o->filter, 0)) == NULL) goto oom;
    }
    if ((u->cache = ctn_vcache_new()) == NULL) goto oom;
    ctn_node *n = ctn_node_custom(&retriever_ops, u, "retriever");
    if (n == NULL) goto oom;
    return n;
oom:
    retriever_free(u);
    ctn__errf(err, errcap, "out of memory");
    return NULL;
}
