/*
 * The SQLite trace store (chains/trace_db.h): a traced run's spans land in the spans table
 * with their tree, an error run records its error and path, writes finish on close, and a
 * file that is not a trace database is refused with its name.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "error.h"
#include "test.h"
#include "trace_db.h"

static void done_cb(void *ud, const ctn_val *out, const ctn_chain_err *err) {
    (void)out;
    *(int *)ud = err != NULL ? err->code : 1;
}

static ctn_run *run_one(uv_loop_t *loop, ctn_node *root, int *status) {
    ctn_run_callbacks cb = {.on_done = done_cb, .ud = status};
    ctn_run *r = NULL;
    ctn_val *in = ctn_val_obj();
    ctn_val_set(in, "k", ctn_val_cstr("v"));
    CHECK_EQ_INT(ctn_run_start(loop, root, in, NULL, &cb, CTN_RUN_TRACE, &r), 0);
    uv_run(loop, UV_RUN_DEFAULT);
    ctn_val_unref(in);
    return r;
}

static long long count(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    long long n = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

TEST(runs_and_spans_are_written) {
    char path[] = "/tmp/catena-trace-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256] = "";
    ctn_trace_db *db = NULL;
    CHECK_EQ_INT(ctn_trace_db_open(&loop, path, &db, err, sizeof err), 0);
    const char *keys[2] = {"a", "b"};
    ctn_node *par = ctn_node_parallel(
        keys, (ctn_node *[]){ctn_node_passthrough(), ctn_node_pick((const char *[]){"k"}, 1, 1)},
        2);
    ctn_node *root = ctn_node_named(par, "demo");
    int status = 0;
    ctn_run *r = run_one(&loop, root, &status);
    CHECK_EQ_INT(status, 1);
    CHECK_EQ_INT(ctn_trace_db_record(db, r, NULL, NULL), 0);
    ctn_run_free(r);
    /* An error run: pick on a string input fails. */
    ctn_node *pk = ctn_node_pick((const char *[]){"k"}, 1, 1);
    ctn_run_callbacks cb = {.on_done = done_cb, .ud = &status};
    ctn_val *s = ctn_val_cstr("not an object");
    CHECK_EQ_INT(ctn_run_start(&loop, pk, s, NULL, &cb, CTN_RUN_TRACE, &r), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(status, CTN_ETYPE);
    ctn_chain_err e = {CTN_ETYPE, "pick needs an object as input, got string", "pick", NULL};
    CHECK_EQ_INT(ctn_trace_db_record(db, r, "picker", &e), 0);
    ctn_run_free(r);
    ctn_val_unref(s);
    ctn_trace_db_close(db);
    uv_run(&loop, UV_RUN_DEFAULT); /* the writes finish, then the database closes */
    CHECK_EQ_INT(uv_loop_close(&loop), 0);

    sqlite3 *q = NULL;
    CHECK_EQ_INT(sqlite3_open(path, &q), SQLITE_OK);
    CHECK_EQ_INT(count(q, "SELECT count(*) FROM runs"), 2);
    CHECK_EQ_INT(count(q, "SELECT count(*) FROM spans WHERE run_id = 1"), 4);
    CHECK_EQ_INT(count(q, "SELECT count(*) FROM spans WHERE run_id = 1 AND parent_id = 1"), 2);
    CHECK_EQ_INT(count(q, "SELECT count(*) FROM spans WHERE key = 'b' AND output = '\"v\"'"), 1);
    CHECK_EQ_INT(count(q, "SELECT count(*) FROM runs WHERE name = 'picker' AND status = 'error' "
                          "AND path = 'pick'"),
                 1);
    CHECK_EQ_INT(count(q, "SELECT count(*) FROM runs WHERE name = 'demo' AND status = 'ok'"), 1);
    sqlite3_close(q);
    ctn_node_unref(root);
    ctn_node_unref(pk);
    unlink(path);
    char wal[64];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path);
    unlink(wal);
}

TEST(foreign_files_are_refused) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    char path[] = "/tmp/catena-trace-XXXXXX";
    int fd = mkstemp(path);
    CHECK(write(fd, "this is not sqlite at all, just some text that is long enough......", 68) ==
          68);
    close(fd);
    char err[256] = "";
    ctn_trace_db *db = NULL;
    CHECK(ctn_trace_db_open(&loop, path, &db, err, sizeof err) < 0);
    CHECK_CONTAINS(err, path);
    unlink(path);
    /* A database whose runs table has other columns. */
    char path2[] = "/tmp/catena-trace-XXXXXX";
    fd = mkstemp(path2);
    close(fd);
    sqlite3 *q = NULL;
    sqlite3_open(path2, &q);
    sqlite3_exec(q, "CREATE TABLE runs(x INTEGER)", NULL, NULL, NULL);
    sqlite3_close(q);
    err[0] = 0;
    CHECK_EQ_INT(ctn_trace_db_open(&loop, path2, &db, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "table runs has other columns");
    unlink(path2);
    CHECK_EQ_INT(ctn_trace_db_open(&loop, "/nonexistent-dir/x.db", &db, err, sizeof err), CTN_EIO);
    CHECK_CONTAINS(err, "/nonexistent-dir/x.db");
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void) {
    RUN(runs_and_spans_are_written);
    RUN(foreign_files_are_refused);
    return test_summary();
}
