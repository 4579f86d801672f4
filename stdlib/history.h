/*
 * Conversation history kept in SQLite: the messages of each session, in order, as
 * LangChain's SQLChatMessageHistory keeps them for RunnableWithMessageHistory (the Lua
 * chain:with_history).
 *
 *     ctn_history *h;
 *     char err[256];
 *     if (ctn_history_open("chat.sqlite", &h, err, sizeof err) < 0) ...
 *     ctn_history_msg m[2] = {{"human", "Who wrote it?"}, {"ai", "Ada."}};
 *     if (ctn_history_add(h, "user-1", m, 2, err, sizeof err) < 0) ...
 *     ctn_val *msgs;                        // [{type = "human", content = ...}, ...]
 *     if (ctn_history_get(h, "user-1", 0, &msgs, err, sizeof err) < 0) ...
 *     ctn_val_unref(msgs);
 *     ctn_history_close(h);
 *
 * The file may be any SQLite database (a knowledge base too): the history is one table,
 * catena_messages(id, session, type 'human' | 'ai' | 'system', content, created), with an
 * index on (session, id); nothing else in the file is read or changed. WAL mode; one call
 * is one transaction, so the messages of one turn are stored all or none. A file that is
 * not SQLite, or whose catena_messages table has other columns, is an error naming it and
 * is left as it was. A session key is any non-empty UTF-8 string of at most 256 bytes;
 * contents are UTF-8 (checked). Roles are taken as LangChain's message types or the chat
 * roles they stand for ("user" is stored as "human", "assistant" as "ai").
 *
 * One connection: a ctn_history is used by one thread at a time. Every call is synchronous
 * (a local SQLite read or write of a few rows). Errors are CTN_E* codes with the reason in
 * err: CTN_EINVAL for a bad key, role or content, CTN_EFORMAT for a file that is not one,
 * CTN_EIO for SQLite failures (its message included), CTN_ENOMEM.
 */
#ifndef CTN_HISTORY_H
#define CTN_HISTORY_H

#include <stddef.h>

#include "value.h"

typedef struct ctn_history ctn_history;

typedef struct {
    const char *type; /* "human", "ai", "system" (or "user", "assistant") */
    const char *content;
} ctn_history_msg;

/* Opens (creating when missing) the history in the SQLite file at path (":memory:": one in
 * memory, gone at close). */
int ctn_history_open(const char *path, ctn_history **out, char *err, size_t errcap);
void ctn_history_close(ctn_history *h); /* NULL is a no-op */

/* Appends n messages to the session, in order, in one transaction. */
int ctn_history_add(ctn_history *h, const char *session, const ctn_history_msg *m, size_t n,
                    char *err, size_t errcap);

/* The session's messages, oldest first, as an array of {type, content} objects; the last
 * `last` of them (0: all). An unknown session has none. */
int ctn_history_get(ctn_history *h, const char *session, size_t last, ctn_val **out, char *err,
                    size_t errcap);

/* Forgets the session's messages; *removed (may be NULL) says how many there were. */
int ctn_history_clear(ctn_history *h, const char *session, size_t *removed, char *err,
                      size_t errcap);

/* The sessions that have messages, as an array of strings, in the order they began. */
int ctn_history_sessions(ctn_history *h, ctn_val **out, char *err, size_t errcap);

#endif
