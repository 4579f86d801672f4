/*
 * Traces of chain runs kept in SQLite: one row per run and one per span (chain.h's trace
 * tree), written on libuv's thread pool so the loop never waits for the disk.
 *
 *     ctn_trace_db *db;
 *     if (ctn_trace_db_open(loop, "traces.db", &db, err, sizeof err) < 0) ...
 *     ctn_trace_db_record(db, run, "rag", NULL); // after the run ended (its spans are copied)
 *     ctn_trace_db_close(db);                  // finishes pending writes, then closes
 *
 * Schema (created when missing):
 *   runs(id INTEGER PRIMARY KEY, name TEXT, started_at REAL -- Unix seconds,
 *        duration_ms REAL, status TEXT -- 'ok' or 'error', error TEXT, path TEXT)
 *   spans(run_id INTEGER, span_id INTEGER, parent_id INTEGER -- -1 for the root,
 *         label TEXT, kind TEXT, key TEXT, start_ms REAL -- from the run's start,
 *         duration_ms REAL, input TEXT, output TEXT, prompt_tokens INTEGER,
 *         completion_tokens INTEGER, error TEXT, PRIMARY KEY (run_id, span_id))
 * A file that has these tables with other columns is refused (named in the message).
 */
#ifndef CTN_TRACE_DB_H
#define CTN_TRACE_DB_H

#include <stddef.h>
#include <uv.h>

#include "chain.h"

typedef struct ctn_trace_db ctn_trace_db;

int ctn_trace_db_open(uv_loop_t *loop, const char *path, ctn_trace_db **out, char *err,
                      size_t errcap);
/* Queues the spans of an ended run (copied now) for writing; err names the run when it
 * ended with an error (NULL: it ended with a value). 0, CTN_ENOMEM, CTN_EINVAL (the run
 * has not ended or was not traced). A failed write is reported by ctn_trace_db_error. */
int ctn_trace_db_record(ctn_trace_db *db, const ctn_run *run, const char *name,
                        const ctn_chain_err *err);
/* The first write error so far (a static string owned by db), or NULL. */
const char *ctn_trace_db_error(const ctn_trace_db *db);
/* Runs written so far. */
long long ctn_trace_db_runs(const ctn_trace_db *db);
/* Runs queued and not yet written (their writes finish as the loop runs). */
int ctn_trace_db_pending(const ctn_trace_db *db);
/* Closes once pending writes are done (the loop must run for them to finish). */
void ctn_trace_db_close(ctn_trace_db *db);

#endif
