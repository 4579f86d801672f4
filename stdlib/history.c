/*
 * Conversation history in SQLite (history.h): one table, one transaction per call.
 */
#define _POSIX_C_SOURCE 200809L

#include "history.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "str.h"
#include "unicode.h"

struct ctn_history {
    sqlite3 *db;
    char *path;
};

enum { KEY_MAX = 256 };

static int sqlerr(ctn_history *h, const char *what, char *err, size_t errcap) {
    const int code = sqlite3_errcode(h->db);
    ctn__errf(err, errcap, "%s: %s: %s", h->path, what, sqlite3_errmsg(h->db));
    if (code == SQLITE_NOMEM) return CTN_ENOMEM;
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) return CTN_EFORMAT;
    return CTN_EIO;
}

static int exec(ctn_history *h, const char *sql, const char *what, char *err, size_t errcap) {
    if (sqlite3_exec(h->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sqlerr(h, what, err, errcap);
    return 0;
}

static int prepare(ctn_history *h, const char *sql, sqlite3_stmt **st, char *err, size_t errcap) {
    if (sqlite3_prepare_v2(h->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return sqlerr(h, "prepare", err, errcap);
    }
    return 0;
}

/* The table as this file has it: 1 when it is ours, 0 when missing, CTN_EFORMAT when a
 * table of that name has other columns. */
static int table_state(ctn_history *h, char *err, size_t errcap) {
    static const char *const cols[] = {"id", "session", "type", "content", "created"};
    sqlite3_stmt *st;
    int rc = prepare(h, "SELECT name FROM pragma_table_info('catena_messages') ORDER BY cid", &st,
                     err, errcap);
    if (rc < 0) return rc;
    int n = 0;
    bool same = true;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *c = (const char *)sqlite3_column_text(st, 0);
        if (n >= 5 || c == NULL || strcmp(c, cols[n]) != 0) same = false;
        n++;
    }
    if (s != SQLITE_DONE) rc = sqlerr(h, "reading the schema", err, errcap);
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    if (n == 0) return 0;
    if (!same || n != 5) {
        ctn__errf(err, errcap,
                  "%s: its table catena_messages is not a catena message history (other columns)",
                  h->path);
        return CTN_EFORMAT;
    }
    return 1;
}

int ctn_history_open(const char *path, ctn_history **out, char *err, size_t errcap) {
    *out = NULL;
    if (path == NULL || *path == '\0') {
        ctn__errf(err, errcap, "ctn_history_open: no path");
        return CTN_EINVAL;
    }
    ctn_history *h = ctn__calloc(1, sizeof *h);
    if (h == NULL || (h->path = ctn__strdup(path)) == NULL) {
        free(h);
        ctn__errf(err, errcap, "%s: out of memory", path);
        return CTN_ENOMEM;
    }
    int rc = 0;
    if (sqlite3_open_v2(path, &h->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        if (h->db == NULL) {
            ctn__errf(err, errcap, "%s: out of memory", path);
            rc = CTN_ENOMEM;
        } else {
            rc = sqlerr(h, "open", err, errcap);
            if (sqlite3_errcode(h->db) == SQLITE_CANTOPEN) rc = CTN_EIO;
        }
        goto fail;
    }
    sqlite3_extended_result_codes(h->db, 0);
    sqlite3_busy_timeout(h->db, 10000);
    /* The schema read finds out whether this is a database at all (SQLITE_NOTADB) before
     * anything is written to it. */
    if ((rc = table_state(h, err, errcap)) < 0) goto fail;
    if (strcmp(path, ":memory:") != 0 &&
        (rc = exec(h, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL",
                   "setting WAL mode", err, errcap)) < 0)
        goto fail;
    if ((rc = exec(h,
                   "CREATE TABLE IF NOT EXISTS catena_messages("
                   " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                   " session TEXT NOT NULL,"
                   " type TEXT NOT NULL CHECK (type IN ('human', 'ai', 'system')),"
                   " content TEXT NOT NULL,"
                   " created REAL NOT NULL);"
                   "CREATE INDEX IF NOT EXISTS catena_messages_session"
                   " ON catena_messages(session, id)",
                   "creating the message table", err, errcap)) < 0)
        goto fail;
    *out = h;
    return 0;
fail:
    ctn_history_close(h);
    return rc;
}

void ctn_history_close(ctn_history *h) {
    if (h == NULL) return;
    sqlite3_close(h->db);
    free(h->path);
    free(h);
}

static int check_key(const ctn_history *h, const char *session, char *err, size_t errcap) {
    const size_t n = session != NULL ? strlen(session) : 0;
    if (n == 0 || n > KEY_MAX || !ctn__utf8_valid(session, n)) {
        ctn__errf(err, errcap,
                  "%s: a session key is a UTF-8 string of 1 to %d bytes (got %s)", h->path,
                  KEY_MAX,
                  n == 0 ? "an empty one" : n > KEY_MAX ? "a longer one" : "invalid UTF-8");
        return CTN_EINVAL;
    }
    return 0;
}

/* The stored type of a role, or NULL. */
static const char *stored_type(const char *t) {
    if (t == NULL) return NULL;
    if (!strcmp(t, "human") || !strcmp(t, "user")) return "human";
    if (!strcmp(t, "ai") || !strcmp(t, "assistant")) return "ai";
    if (!strcmp(t, "system")) return "system";
    return NULL;
}

int ctn_history_add(ctn_history *h, const char *session, const ctn_history_msg *m, size_t n,
                    char *err, size_t errcap) {
    int rc = check_key(h, session, err, errcap);
    if (rc < 0) return rc;
    for (size_t i = 0; i < n; i++) {
        if (stored_type(m[i].type) == NULL) {
            ctn__errf(err, errcap,
                      "%s: message %zu of session '%s': type '%s' is not human, ai or system "
                      "(or user, assistant)",
                      h->path, i + 1, session, m[i].type ? m[i].type : "(none)");
            return CTN_EINVAL;
        }
        if (m[i].content == NULL || !ctn__utf8_valid(m[i].content, strlen(m[i].content))) {
            ctn__errf(err, errcap, "%s: message %zu of session '%s': content %s", h->path, i + 1,
                      session, m[i].content == NULL ? "is missing" : "is not valid UTF-8");
            return CTN_EINVAL;
        }
    }
    if (n == 0) return 0;
    if ((rc = exec(h, "BEGIN IMMEDIATE", "starting a transaction", err, errcap)) < 0) return rc;
    sqlite3_stmt *st;
    rc = prepare(h,
                 "INSERT INTO catena_messages(session, type, content, created)"
                 " VALUES (?1, ?2, ?3, ?4)",
                 &st, err, errcap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, stored_type(m[i].type), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, m[i].content, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 4, now);
        if (sqlite3_step(st) != SQLITE_DONE) rc = sqlerr(h, "storing a message", err, errcap);
    }
    sqlite3_finalize(st);
    if (rc == 0 && sqlite3_exec(h->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = sqlerr(h, "commit", err, errcap);
    if (rc < 0) sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int ctn_history_get(ctn_history *h, const char *session, size_t last, ctn_val **out, char *err,
                    size_t errcap) {
    *out = NULL;
    int rc = check_key(h, session, err, errcap);
    if (rc < 0) return rc;
    sqlite3_stmt *st;
    /* The last `last` rows, read newest first and put back in order. */
    rc = prepare(h,
                 "SELECT type, content FROM (SELECT id, type, content FROM catena_messages"
                 " WHERE session = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
                 &st, err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, last == 0 || (uint64_t)last > (uint64_t)INT64_MAX ? -1 : (sqlite3_int64)last);
    ctn_val *a = ctn_val_arr();
    int s = SQLITE_DONE;
    while (a != NULL && (s = sqlite3_step(st)) == SQLITE_ROW) {
        ctn_val *o = ctn_val_obj();
        if (o == NULL ||
            ctn_val_set(o, "type", ctn_val_cstr((const char *)sqlite3_column_text(st, 0))) < 0 ||
            ctn_val_set(o, "content",
                        ctn_val_str((const char *)sqlite3_column_text(st, 1),
                                    (size_t)sqlite3_column_bytes(st, 1))) < 0) {
            ctn_val_unref(o);
            o = NULL;
        }
        if (o == NULL || ctn_val_push(a, o) < 0) { /* push takes o, also when it fails */
            ctn_val_unref(a);
            a = NULL;
        }
    }
    if (a == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", h->path);
        rc = CTN_ENOMEM;
    } else if (s != SQLITE_DONE) {
        rc = sqlerr(h, "reading messages", err, errcap);
        ctn_val_unref(a);
    } else {
        *out = a;
    }
    sqlite3_finalize(st);
    return rc;
}

int ctn_history_clear(ctn_history *h, const char *session, size_t *removed, char *err,
                      size_t errcap) {
    if (removed != NULL) *removed = 0;
    int rc = check_key(h, session, err, errcap);
    if (rc < 0) return rc;
    sqlite3_stmt *st;
    if ((rc = prepare(h, "DELETE FROM catena_messages WHERE session = ?1", &st, err, errcap)) < 0)
        return rc;
    sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = sqlerr(h, "removing messages", err, errcap);
    else if (removed != NULL)
        *removed = (size_t)sqlite3_changes(h->db);
    sqlite3_finalize(st);
    return rc;
}

int ctn_history_sessions(ctn_history *h, ctn_val **out, char *err, size_t errcap) {
    *out = NULL;
    sqlite3_stmt *st;
    int rc = prepare(h,
                     "SELECT session FROM catena_messages GROUP BY session ORDER BY min(id)", &st,
                     err, errcap);
    if (rc < 0) return rc;
    ctn_val *a = ctn_val_arr();
    int s = SQLITE_DONE;
    while (a != NULL && (s = sqlite3_step(st)) == SQLITE_ROW)
        if (ctn_val_push(a, ctn_val_cstr((const char *)sqlite3_column_text(st, 0))) < 0) {
            ctn_val_unref(a);
            a = NULL;
        }
    if (a == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", h->path);
        rc = CTN_ENOMEM;
    } else if (s != SQLITE_DONE) {
        rc = sqlerr(h, "reading sessions", err, errcap);
        ctn_val_unref(a);
    } else {
        *out = a;
    }
    sqlite3_finalize(st);
    return rc;
}
