/*
 * JSON reading into chain values: a strict one-shot parser, a finder for the JSON value in
 * a model's answer, and a streaming parser that shows the value as it grows.
 *
 *     char err[256];
 *     ctn_val *v;
 *     size_t a, b;
 *     if (ctn_json_find(answer, n, &a, &b) == 0 &&
 *         ctn_json_parse(answer + a, b - a, &v, err, sizeof err) == 0) { ...; ctn_val_unref(v); }
 *
 *     ctn_json_stream *s = ctn_json_stream_new();
 *     while (next_chunk(&chunk, &len)) {          // each chunk as it comes
 *         int changed;
 *         if (ctn_json_stream_feed(s, chunk, len, &changed) < 0) break;
 *         if (changed) {
 *             ctn_val *partial = ctn_json_stream_snapshot(s);
 *             ...;
 *             ctn_val_unref(partial);
 *         }
 *     }
 *     rc = ctn_json_stream_finish(s, &v, err, sizeof err);
 *     ctn_json_stream_free(s);
 *
 * The grammar is RFC 8259 with these choices: an integer literal (no fraction, no exponent)
 * that fits int64 becomes CTN_VINT and every other number CTN_VNUM; a number too large for a
 * double (it would become an infinity, which JSON cannot write back) is an error; strings
 * must be valid UTF-8 and \u escapes must pair surrogates; when an object repeats a key the
 * last value wins, in the place of the first; nesting deeper than CTN_JSON_MAX_DEPTH
 * containers is an error. Error messages name the position of the offending byte as
 * "line L, column C (byte B)": lines and columns count from 1, columns count bytes, and B
 * counts bytes from 0 from the start of the text (for a stream, of everything fed).
 */
#ifndef CTN_JSON_H
#define CTN_JSON_H

#include <stddef.h>

#include "value.h"

#define CTN_JSON_MAX_DEPTH 512

/* Parses s[0, n) as exactly one JSON value with optional whitespace around it. On success
 * *out gets a new value (the caller unrefs it) and 0 is returned; otherwise *out is NULL,
 * err gets a message with the position and what was expected, and the result is
 * CTN_EFORMAT (bad text) or CTN_ENOMEM. s need not be NUL-terminated. */
int ctn_json_parse(const char *s, size_t n, ctn_val **out, char *err, size_t errcap);

/* Finds the JSON value in a model's answer: the content of the first ```json (or bare ```)
 * fenced block when that content parses, otherwise the first '{' or '[' from which a
 * complete value parses (to the end of that value). Returns 0 with the byte range
 * [*start, *end) of text, or CTN_ENOENT when there is none. The range holds no surrounding
 * whitespace, so ctn_json_parse of it succeeds. */
int ctn_json_find(const char *text, size_t n, size_t *start, size_t *end);

/* A streaming parser for model output arriving in chunks. Text before the value is skipped
 * up to the first '{' or '[' (prose, a ``` fence opener); text after the value's end is
 * ignored. So the final value equals ctn_json_parse of the text from that first bracket to
 * the value's end, however the text was cut into chunks. (ctn_json_find may pick another
 * range when a fenced block follows prose holding brackets.) State is O(bytes fed). */
typedef struct ctn_json_stream ctn_json_stream;

ctn_json_stream *ctn_json_stream_new(void); /* NULL when memory runs out */
void ctn_json_stream_free(ctn_json_stream *s);

/* Feeds n bytes (borrowed). *changed (when not NULL) is set to 1 when the snapshot now
 * differs from the one after the previous feed (a member or element completed, or a
 * container opened), else 0. Returns 0, CTN_EFORMAT for bad JSON inside the value (then
 * every later feed returns the same code and ctn_json_stream_errmsg says where), or
 * CTN_ENOMEM. Bytes after the end of the value are ignored. */
int ctn_json_stream_feed(ctn_json_stream *s, const char *chunk, size_t n, int *changed);

/* The value so far: a new reference to a deep copy that nobody changes (the caller unrefs
 * it), or NULL before the value's first bracket arrived (or when memory runs out). It holds
 * every complete scalar and every opened container with its complete members; a string or
 * number still being read is not in it, nor is an object key whose value has not started.
 * Successive snapshots form a growing sequence: each is the previous one with members
 * added at its open containers (unless the text repeats an object key). */
ctn_val *ctn_json_stream_snapshot(ctn_json_stream *s);

/* Ends the input. On success *out gets the complete value (a new reference). Otherwise *out
 * is NULL and: CTN_ENOENT when no '{' or '[' ever arrived, CTN_EFORMAT when the value is
 * bad or unfinished (err says where and what was expected), CTN_ENOMEM. Calling it again
 * gives the same answer. */
int ctn_json_stream_finish(ctn_json_stream *s, ctn_val **out, char *err, size_t errcap);

/* The message of the stream's error, or "" when it has none (owned by the stream). */
const char *ctn_json_stream_errmsg(const ctn_json_stream *s);

#endif
