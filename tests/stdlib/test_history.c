/*
 * Conversation history (stdlib/history.h): messages kept per session in order, the last N,
 * clearing, sessions listed, files shared with other tables, foreign files and bad input
 * refused with nothing stored, and clean failures when our allocations fail.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "history.h"
#include "test.h"
#include "value.h"

static char dir[64];

static const char *tmp_path(const char *name) {
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* "type:content|type:content..." of an array of messages, for comparisons. */
static void flat(const ctn_val *a, char *out, size_t cap) {
    out[0] = '\0';
    for (size_t i = 0; a != NULL && i < ctn_val_len(a); i++) {
        const ctn_val *m = ctn_val_at(a, i);
        const ctn_val *t = ctn_val_get(m, "type"), *c = ctn_val_get(m, "content");
        char one[256];
        snprintf(one, sizeof one, "%s%s:%s", i ? "|" : "", t ? t->u.str.p : "?",
                 c ? c->u.str.p : "?");
        strncat(out, one, cap - strlen(out) - 1);
    }
}

static int64_t rows(const char *path) {
    sqlite3 *db;
    int64_t n = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM catena_messages", -1, &st, NULL) ==
            SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return n;
}

TEST(messages_in_order_per_session) {
    const char *path = tmp_path("h.sqlite");
    ctn_history *h = NULL;
    char err[512] = "", got[2048];
    CHECK_EQ_INT(ctn_history_open(path, &h, err, sizeof err), 0);
    ctn_history_msg t1[] = {{"human", "Who is Lily?"}, {"ai", "A girl."}};
    ctn_history_msg t2[] = {{"user", "And Tom?"}, {"assistant", "Her brother."}};
    ctn_history_msg o1[] = {{"system", "Be brief."}};
    CHECK_EQ_INT(ctn_history_add(h, "u1", t1, 2, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_history_add(h, "u2", o1, 1, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_history_add(h, "u1", t2, 2, err, sizeof err), 0);
    ctn_val *a = NULL;
    CHECK_EQ_INT(ctn_history_get(h, "u1", 0, &a, err, sizeof err), 0);
    flat(a, got, sizeof got);
    CHECK_STR(got, "human:Who is Lily?|ai:A girl.|human:And Tom?|ai:Her brother.");
    ctn_val_unref(a);
    CHECK_EQ_INT(ctn_history_get(h, "u1", 3, &a, err, sizeof err), 0);
    flat(a, got, sizeof got);
    CHECK_STR(got, "ai:A girl.|human:And Tom?|ai:Her brother.");
    ctn_val_unref(a);
    CHECK_EQ_INT(ctn_history_get(h, "nobody", 0, &a, err, sizeof err), 0);
    CHECK_EQ_INT((int)ctn_val_len(a), 0);
    ctn_val_unref(a);
    CHECK_EQ_INT(ctn_history_sessions(h, &a, err, sizeof err), 0);
    CHECK_EQ_INT((int)ctn_val_len(a), 2);
    CHECK_STR(ctn_val_at(a, 0)->u.str.p, "u1");
    CHECK_STR(ctn_val_at(a, 1)->u.str.p, "u2");
    ctn_val_unref(a);
    /* Kept across opens. */
    ctn_history_close(h);
    CHECK_EQ_INT(ctn_history_open(path, &h, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_history_get(h, "u2", 0, &a, err, sizeof err), 0);
    flat(a, got, sizeof got);
    CHECK_STR(got, "system:Be brief.");
    ctn_val_unref(a);
    size_t removed = 0;
    CHECK_EQ_INT(ctn_history_clear(h, "u1", &removed, err, sizeof err), 0);
    CHECK_EQ_INT((int)removed, 4);
    CHECK_EQ_INT(ctn_history_clear(h, "u1", &removed, err, sizeof err), 0);
    CHECK_EQ_INT((int)removed, 0);
    ctn_history_close(h);
    CHECK_EQ_INT((int)rows(path), 1);
    /* In memory. */
    CHECK_EQ_INT(ctn_history_open(":memory:", &h, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_history_add(h, "m", t1, 2, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_history_get(h, "m", 0, &a, err, sizeof err), 0);
    CHECK_EQ_INT((int)ctn_val_len(a), 2);
    ctn_val_unref(a);
    ctn_history_close(h);
}

TEST(bad_input_stores_nothing) {
    const char *path = tmp_path("bad.sqlite");
    ctn_history *h = NULL;
    char err[512] = "";
    CHECK_EQ_INT(ctn_history_open(path, &h, err, sizeof err), 0);
    ctn_history_msg bad_type[] = {{"human", "fine"}, {"robot", "no"}};
    CHECK_EQ_INT(ctn_history_add(h, "s", bad_type, 2, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "message 2") != NULL && strstr(err, "'robot'") != NULL);
    ctn_history_msg bad_utf8[] = {{"human", "fine"}, {"ai", "\xC3\x28"}};
    CHECK_EQ_INT(ctn_history_add(h, "s", bad_utf8, 2, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "not valid UTF-8") != NULL);
    ctn_history_msg none[] = {{"ai", NULL}};
    CHECK_EQ_INT(ctn_history_add(h, "s", none, 1, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "missing") != NULL);
    ctn_history_msg ok[] = {{"human", "fine"}};
    CHECK_EQ_INT(ctn_history_add(h, "", ok, 1, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "empty") != NULL);
    char longkey[300];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    CHECK_EQ_INT(ctn_history_add(h, longkey, ok, 1, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_history_add(h, "\xFF", ok, 1, err, sizeof err), CTN_EINVAL);
    ctn_val *a = NULL;
    CHECK_EQ_INT(ctn_history_get(h, "", 0, &a, err, sizeof err), CTN_EINVAL);
    CHECK(a == NULL);
    ctn_history_close(h);
    CHECK_EQ_INT((int)rows(path), 0);
}

TEST(foreign_files_are_refused_and_left_alone) {
    /* Not SQLite. */
    const char *path = tmp_path("notes.txt");
    FILE *f = fopen(path, "wb");
    const char text[] = "these are my notes, not a database, and they are long enough\n";
    fwrite(text, 1, sizeof text - 1, f);
    fclose(f);
    ctn_history *h = NULL;
    char err[512] = "";
    CHECK_EQ_INT(ctn_history_open(path, &h, err, sizeof err), CTN_EFORMAT);
    CHECK(h == NULL && strstr(err, path) != NULL);
    f = fopen(path, "rb");
    char back[256] = "";
    const size_t n = fread(back, 1, sizeof back, f);
    fclose(f);
    CHECK(n == sizeof text - 1 && memcmp(back, text, n) == 0);
    /* SQLite with a table of that name that is someone else's. */
    const char *other = tmp_path("other.sqlite");
    sqlite3 *db;
    CHECK(sqlite3_open(other, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "CREATE TABLE catena_messages(a, b)", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_EQ_INT(ctn_history_open(other, &h, err, sizeof err), CTN_EFORMAT);
    CHECK(strstr(err, "other columns") != NULL);
    /* A file with other tables (a knowledge base, say) keeps them. */
    const char *shared = tmp_path("shared.sqlite");
    CHECK(sqlite3_open(shared, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "CREATE TABLE mine(x); INSERT INTO mine VALUES (42)", NULL, NULL,
                       NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_EQ_INT(ctn_history_open(shared, &h, err, sizeof err), 0);
    ctn_history_msg ok[] = {{"human", "hi"}};
    CHECK_EQ_INT(ctn_history_add(h, "s", ok, 1, err, sizeof err), 0);
    ctn_history_close(h);
    CHECK(sqlite3_open(shared, &db) == SQLITE_OK);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(db, "SELECT x FROM mine", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 42);
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* A directory that does not exist. */
    CHECK(ctn_history_open("/nonexistent-dir/h.sqlite", &h, err, sizeof err) < 0);
    CHECK(strstr(err, "/nonexistent-dir/h.sqlite") != NULL);
}

TEST(allocation_failures_fail_cleanly) {
    const char *path = tmp_path("alloc.sqlite");
    char err[512];
    int ok_runs = 0;
    /* SQLite allocates through our allocator too: every count up to the first run that
     * succeeds, then a step. */
    for (int n = 0; n < 5000 && ok_runs == 0; n++) {
        ctn_history *h = NULL;
        /* The session starts empty (a failed get leaves the stored turn behind). */
        if (ctn_history_open(path, &h, err, sizeof err) == 0)
            CHECK_EQ_INT(ctn_history_clear(h, "s", NULL, err, sizeof err), 0);
        ctn_history_close(h);
        h = NULL;
        ctn__alloc_fail_after = n;
        int rc = ctn_history_open(path, &h, err, sizeof err);
        ctn_val *a = NULL;
        if (rc == 0) {
            ctn_history_msg m[] = {{"human", "q"}, {"ai", "a"}};
            rc = ctn_history_add(h, "s", m, 2, err, sizeof err);
            if (rc == 0) rc = ctn_history_get(h, "s", 0, &a, err, sizeof err);
        }
        ctn__alloc_fail_after = -1;
        CHECK(rc == 0 || rc == CTN_ENOMEM);
        if (rc == 0) {
            CHECK(a != NULL);
            ok_runs++;
        }
        ctn_val_unref(a);
        ctn_history_close(h);
    }
    CHECK(ok_runs > 0);
    CHECK_EQ_INT((int)rows(path), 2);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ctn_hist_XXXXXX");
    if (mkdtemp(dir) == NULL) return 1;
    RUN(messages_in_order_per_session);
    RUN(bad_input_stores_nothing);
    RUN(foreign_files_are_refused_and_left_alone);
    RUN(allocation_failures_fail_cleanly);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
