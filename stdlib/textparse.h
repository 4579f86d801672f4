/*
 * Output parsers for model text: a list parser (one-shot and streaming) and a regex parser
 * over PCRE2.
 *
 *     ctn_val *items;
 *     ctn_list_parse("Colors:\n1. red\n2. blue\n", 23, &items);   // ["red", "blue"]
 *
 *     ctn_regex *re = ctn_regex_new("Answer: (\\w+) \\((\\d+)%\\)", keys, 2, err, sizeof err);
 *     ctn_val *o;
 *     if (ctn_regex_parse(re, text, n, &o, err, sizeof err) == 0) ...   // {"answer": ..}
 *     ctn_regex_free(re);
 *
 * The list grammar. The text is read line by line (a line ends at '\n'; a '\r' before it
 * is whitespace). Items are trimmed of whitespace and empty items are dropped. A line is
 * "marked" when, after its indentation, it opens with a number and '.' or ')' ("1. a",
 * "2) b") or a bullet '-', '*', '+' or '•' ("- a"), followed by whitespace or the line's
 * end; the marker is not part of the item. The first non-blank line decides the form:
 *   - it is marked: a bulleted or numbered list; every marked line is an item and unmarked
 *     lines (prose after the list, a wrapped line) are left out;
 *   - it ends with ':' ("Here are five colors:"): an introduction, left out; the next
 *     non-blank line decides;
 *   - it holds a ',': a comma-separated list; every ',' and line end ends an item, on this
 *     line and the following ones ("a, b, c");
 *   - otherwise: one item per non-blank line (markers, if a later line has one, removed).
 *
 * Streaming: an item is reported once the separator after it (the line end, or a ',' in a
 * comma-separated list) has arrived, except on the first deciding line, whose items are
 * reported when that line ends (until then it may still turn out to be an introduction).
 * Any cutting of the text into chunks gives the same items, in the same order, as
 * ctn_list_parse of the whole text, and the one-shot parse is the stream fed at once.
 */
#ifndef CTN_TEXTPARSE_H
#define CTN_TEXTPARSE_H

#include <stddef.h>

#include "value.h"

/* Parses text[0, n) as a list: *out gets a new array of strings (the caller unrefs it).
 * 0 or CTN_ENOMEM (then *out is NULL). Text with no items gives an empty array. */
int ctn_list_parse(const char *text, size_t n, ctn_val **out);

typedef struct ctn_list_stream ctn_list_stream;

ctn_list_stream *ctn_list_stream_new(void); /* NULL when memory runs out */
void ctn_list_stream_free(ctn_list_stream *s);

/* Feeds n bytes (borrowed). *nnew (when not NULL) gets the number of items completed by
 * them; they are the last *nnew elements of ctn_list_stream_items. 0 or CTN_ENOMEM (the
 * stream is then unusable: every later call returns CTN_ENOMEM). */
int ctn_list_stream_feed(ctn_list_stream *s, const char *chunk, size_t n, size_t *nnew);

/* The items completed so far: an array owned by the stream, valid until the next call on
 * it (take ctn_val_ref of an element to keep it). */
const ctn_val *ctn_list_stream_items(const ctn_list_stream *s);

/* Ends the text: the items still open complete (*nnew counts them) and *out gets a new
 * reference to the final array, equal to ctn_list_parse of everything fed. Calling it again
 * gives the same array; feeding after it is CTN_EINVAL. */
int ctn_list_stream_finish(ctn_list_stream *s, ctn_val **out, size_t *nnew);

typedef struct ctn_regex ctn_regex;

/* Compiles pattern (NUL-terminated, PCRE2 syntax, UTF-8 mode; invalid UTF-8 in a subject
 * never matches a character but does not fail the match). keys name capture groups 1..nkeys
 * (copied; there must be at least nkeys groups); with keys NULL the pattern's named groups
 * give the keys, in the order of their groups. NULL on error, with a message: a compile
 * error names its offset in the pattern; too few groups; no named groups and no keys. */
ctn_regex *ctn_regex_new(const char *pattern, const char *const *keys, size_t nkeys, char *err,
                         size_t errcap);
void ctn_regex_free(ctn_regex *re);

/* Matches text[0, n) (the first match anywhere) and makes an object key -> captured string,
 * or null for a group that took no part in the match. 0; CTN_ENOENT "no match for pattern
 * '...'"; CTN_ERANGE when PCRE2 gives up (match or depth limit); CTN_ENOMEM. A ctn_regex may
 * be used from several threads at once. */
int ctn_regex_parse(const ctn_regex *re, const char *text, size_t n, ctn_val **out, char *err,
                    size_t errcap);

#endif
