/*
 * An incremental parser of Server-Sent Events (the WHATWG event-stream format), for the
 * streamed answers of OpenAI-compatible servers. Bytes go in as they arrive, cut anywhere;
 * each complete event (its data lines joined by "\n", dispatched at a blank line) comes out
 * through a callback, with the byte offset in the stream where the event began.
 *
 *     ctn_sse s;
 *     ctn_sse_init(&s, 1 << 20);                   // events of at most 1 MiB
 *     while (more(&p, &n))
 *         if ((rc = ctn_sse_feed(&s, p, n, on_event, ud, err, sizeof err)) < 0) break;
 *     ctn_sse_close(&s);
 *
 * The format's choices: lines end with CRLF, LF or CR (a CRLF cut between two feeds is one
 * line end); a UTF-8 byte-order mark at the very start is skipped; a line beginning with
 * ':' is a comment; a field name without ':' has an empty value; one space after the ':' is
 * dropped; "data" appends to the event's data, "event" sets its type, "id" and "retry" and
 * unknown fields are ignored; a blank line with no data line before it dispatches nothing.
 * Text after the last blank line is an unfinished event (ctn_sse_pending says so), not
 * dispatched. What the format itself cannot hold is refused: a NUL byte, and an event whose
 * lines pass the limit (CTN_ERANGE).
 */
#ifndef CTN_SSE_H
#define CTN_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "str.h"

typedef struct {
    ctn_strbuf line;  /* the line being read */
    ctn_strbuf data;  /* the data of the event being read */
    char event[64];   /* its type ("" when none was given: "message") */
    bool has_data;    /* a data line came (the data may be empty) */
    bool in_event;    /* a line of the event came */
    bool after_cr;    /* the last byte fed was a CR */
    bool bom_checked; /* the first bytes were looked at */
    int bom_n;        /* bytes of a byte-order mark seen at the start */
    uint64_t fed;     /* bytes fed */
    uint64_t start;   /* where the event being read began */
    uint64_t line_at; /* where the line being read began */
    size_t max_event; /* bytes of lines an event may have */
    int err;          /* the first error (then every feed returns it) */
} ctn_sse;

/*
 * One event: its type (borrowed, NUL-terminated; "message" when none was given), its data
 * (borrowed for the call, NUL-terminated at data[n]) and the offset of its first byte in
 * the stream. Returns 0 to go on, or a negative code that stops the feed and is returned
 * by it.
 */
typedef int (*ctn_sse_fn)(void *ud, const char *event, const char *data, size_t n, uint64_t offset);

void ctn_sse_init(ctn_sse *s, size_t max_event);
void ctn_sse_close(ctn_sse *s);

/*
 * Feeds n bytes (borrowed), calling fn for every event they complete. 0, or: CTN_EFORMAT
 * (a NUL byte; err names its offset), CTN_ERANGE (an event past the limit; err names where
 * it began), CTN_ENOMEM, or what fn returned (err is not written then: the reason is fn's).
 * After an error the parser stays failed.
 */
int ctn_sse_feed(ctn_sse *s, const char *p, size_t n, ctn_sse_fn fn, void *ud, char *err,
                 size_t errcap);

/* Whether bytes of an event that has not been dispatched were fed (a stream cut short). */
bool ctn_sse_pending(const ctn_sse *s);

#endif
