/*
 * SQLite trace store (trace_db.h). Writes run on libuv's thread pool, one transaction per
 * run, serialised by a mutex (one connection; the loop thread never touches it after
 * opening). The loop thread owns the object's bookkeeping (pending count, closing).
 */
#include "trace_db.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "str.h"
#include "alloc.h"

struct ctn_trace_db {
    uv_loop_t *loop;
    sqlite3 *db;
    uv_mutex_t mu;
    int pending, closing;
    long long runs;
    char error[256]; /* the first write error, "" if none */
};

/* One run's copy, written by a worker. */
typedef struct {
    uv_work_t req;
    ctn_trace_db *db;
    char *name, *status, *error, *path;
    double started_at, duration_ms;
    ctn_span *spans; /* copies: strings owned here */
    size_t n;
} job;


static const char *schema =
    "CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, name TEXT, started_at REAL, "
    "duration_ms REAL, status TEXT, error TEXT, path TEXT);"
    "CREATE TABLE IF NOT EXISTS spans(run_id INTEGER, span_id INTEGER, parent_id INTEGER, "
    "label TEXT, kind TEXT, key TEXT, start_ms REAL, duration_ms REAL, input TEXT, output TEXT, "
    "prompt_tokens INTEGER, completion_tokens INTEGER, error TEXT, PRIMARY KEY(run_id, span_id));";

int ctn_trace_db_open(uv_loop_t *loop, const char *path, ctn_trace_db **out, char *err,
                      size_t errcap) {
    if (loop == NULL || path == NULL || out == NULL) return CTN_EINVAL;
    ctn_trace_db *t = ctn__calloc(1, sizeof *t);
    if (t == NULL) return CTN_ENOMEM;
    t->loop = loop;
    if (sqlite3_open_v2(path, &t->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        ctn__errf(err, errcap, "%s: cannot open a trace database: %s", path,
                  t->db ? sqlite3_errmsg(t->db) : "out of memory");
        sqlite3_close(t->db);
        free(t);
        return CTN_EIO;
    }
    char *msg = NULL;
    sqlite3_busy_timeout(t->db, 5000);
    if (sqlite3_exec(t->db, "PRAGMA journal_mode=WAL;", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(t->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        ctn__errf(err, errcap, "%s: not usable as a trace database: %s", path,
                  msg ? msg : sqlite3_errmsg(t->db));
        sqlite3_free(msg);
        sqlite3_close(t->db);
        free(t);
        return CTN_EFORMAT;
    }
    /* Tables of the same names made by something else: check the columns we write. */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(
            t->db,
            "SELECT id, name, started_at, duration_ms, status, error, path FROM runs "
            "LIMIT 0; ",
            -1, &st, NULL) != SQLITE_OK) {
        ctn__errf(err, errcap, "%s: table runs has other columns than a trace database's (%s)",
                  path, sqlite3_errmsg(t->db));
        sqlite3_close(t->db);
        free(t);
        return CTN_EFORMAT;
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(t->db,
                           "SELECT run_id, span_id, parent_id, label, kind, key, start_ms, "
                           "duration_ms, input, output, prompt_tokens, completion_tokens, error "
                           "FROM spans LIMIT 0",
                           -1, &st, NULL) != SQLITE_OK) {
        ctn__errf(err, errcap, "%s: table spans has other columns than a trace database's (%s)",
                  path, sqlite3_errmsg(t->db));
        sqlite3_close(t->db);
        free(t);
        return CTN_EFORMAT;
    }
    sqlite3_finalize(st);
    uv_mutex_init(&t->mu);
    *out = t;
    return 0;
}

static void job_free(job *j) {
    for (size_t i = 0; i < j->n; i++) {
        free((char *)j->spans[i].label);
        free((char *)j->spans[i].kind);
        free((char *)j->spans[i].key);
        free(j->spans[i].input);
        free(j->spans[i].output);
        free(j->spans[i].err_message);
    }
    free(j->spans);
    free(j->name);
    free(j->status);
    free(j->error);
    free(j->path);
    free(j);
}

static void set_error(ctn_trace_db *t, const char *what) {
    if (t->error[0] == 0) snprintf(t->error, sizeof t->error, "%s", what);
}

static void bind_text(sqlite3_stmt *st, int i, const char *s) {
    if (s != NULL)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void work(uv_work_t *req) {
    job *j = req->data;
    ctn_trace_db *t = j->db;
    uv_mutex_lock(&t->mu);
    sqlite3 *db = t->db;
    sqlite3_stmt *r = NULL, *s = NULL;
    int ok = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
    ok = ok && sqlite3_prepare_v2(db,
                                  "INSERT INTO runs(name, started_at, duration_ms, status, error, "
                                  "path) VALUES (?,?,?,?,?,?)",
                                  -1, &r, NULL) == SQLITE_OK;
    if (ok) {
        bind_text(r, 1, j->name);
        sqlite3_bind_double(r, 2, j->started_at);
        sqlite3_bind_double(r, 3, j->duration_ms);
        bind_text(r, 4, j->status);
        bind_text(r, 5, j->error);
        bind_text(r, 6, j->path);
        ok = sqlite3_step(r) == SQLITE_DONE;
    }
    const sqlite3_int64 run_id = sqlite3_last_insert_rowid(db);
    ok = ok && sqlite3_prepare_v2(db, "INSERT INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", -1,
                                  &s, NULL) == SQLITE_OK;
    const uint64_t t0 = j->n > 0 ? j->spans[0].start_ns : 0;
    for (size_t i = 0; ok && i < j->n; i++) {
        const ctn_span *p = &j->spans[i];
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, run_id);
        sqlite3_bind_int64(s, 2, p->id);
        sqlite3_bind_int64(s, 3, p->parent_id);
        bind_text(s, 4, p->label);
        bind_text(s, 5, p->kind);
        bind_text(s, 6, p->key);
        sqlite3_bind_double(s, 7, (double)(p->start_ns - t0) / 1e6);
        if (p->end_ns != 0)
            sqlite3_bind_double(s, 8, (double)(p->end_ns - p->start_ns) / 1e6);
        else
            sqlite3_bind_null(s, 8);
        bind_text(s, 9, p->input);
        bind_text(s, 10, p->output);
        sqlite3_bind_int64(s, 11, p->prompt_tokens);
        sqlite3_bind_int64(s, 12, p->completion_tokens);
        bind_text(s, 13, p->err_code != 0 ? (p->err_message ? p->err_message : "error") : NULL);
        ok = sqlite3_step(s) == SQLITE_DONE;
    }
    if (ok) ok = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) {
        char what[256];
        snprintf(what, sizeof what, "writing a trace: %s", sqlite3_errmsg(db));
        set_error(t, what);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    } else {
        t->runs++;
    }
    sqlite3_finalize(r);
    sqlite3_finalize(s);
    uv_mutex_unlock(&t->mu);
}

static void db_free(ctn_trace_db *t) {
    sqlite3_close(t->db);
    uv_mutex_destroy(&t->mu);
    free(t);
}

static void after(uv_work_t *req, int status) {
    (void)status;
    job *j = req->data;
    ctn_trace_db *t = j->db;
    job_free(j);
    if (--t->pending == 0 && t->closing) db_free(t);
}

int ctn_trace_db_record(ctn_trace_db *t, const ctn_run *run, const char *name,
                        const ctn_chain_err *err) {
    if (t == NULL || run == NULL || t->closing || !ctn_run_ended(run)) return CTN_EINVAL;
    size_t n = 0;
    const ctn_span *sp = ctn_run_spans(run, &n);
    if (n == 0) return CTN_EINVAL;
    job *j = ctn__calloc(1, sizeof *j);
    if (j == NULL) return CTN_ENOMEM;
    j->db = t;
    j->req.data = j;
    j->spans = ctn__calloc(n, sizeof *j->spans);
    int oom = j->spans == NULL;
    for (size_t i = 0; !oom && i < n; i++) {
        ctn_span *c = &j->spans[i];
        *c = sp[i];
        c->label = ctn__strdup(sp[i].label);
        c->kind = ctn__strdup(sp[i].kind);
        c->key = ctn__strdup(sp[i].key);
        c->input = ctn__strdup(sp[i].input);
        c->output = ctn__strdup(sp[i].output);
        c->err_message = ctn__strdup(sp[i].err_message);
        j->n = i + 1;
        oom = c->label == NULL || c->kind == NULL;
    }
    const ctn_span *root = &sp[0];
    j->name = ctn__strdup(name != NULL ? name : root->label);
    j->status = ctn__strdup(err != NULL ? "error" : "ok");
    j->error = err != NULL ? ctn__strdup(err->message) : NULL;
    j->path = err != NULL ? ctn__strdup(err->path) : NULL;
    /* The wall-clock start: now minus the time since the root span started. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    j->started_at = now - (double)(uv_hrtime() - root->start_ns) / 1e9;
    j->duration_ms = root->end_ns ? (double)(root->end_ns - root->start_ns) / 1e6 : 0;
    if (oom || j->name == NULL || j->status == NULL) {
        job_free(j);
        return CTN_ENOMEM;
    }
    if (uv_queue_work(t->loop, &j->req, work, after) != 0) {
        job_free(j);
        return CTN_ENOMEM;
    }
    t->pending++;
    return 0;
}

const char *ctn_trace_db_error(const ctn_trace_db *t) {
    ctn_trace_db *m = (ctn_trace_db *)t; /* the lock changes, the data does not */
    uv_mutex_lock(&m->mu);
    const char *e = t->error[0] ? t->error : NULL;
    uv_mutex_unlock(&m->mu);
    return e;
}

int ctn_trace_db_pending(const ctn_trace_db *t) {
    return t != NULL ? t->pending : 0; /* the loop thread's count */
}

long long ctn_trace_db_runs(const ctn_trace_db *t) {
    ctn_trace_db *m = (ctn_trace_db *)t;
    uv_mutex_lock(&m->mu);
    const long long n = t->runs;
    uv_mutex_unlock(&m->mu);
    return n;
}

void ctn_trace_db_close(ctn_trace_db *t) {
    if (t == NULL || t->closing) return;
    t->closing = 1;
    if (t->pending == 0) db_free(t);
}
