/*
 * Stop strings over streamed generation output.
 *
 *     const char *stops[] = {"</answer>", "\nUser:"};
 *     ctn_stop *m;
 *     if (ctn_stop_new(&m, stops, NULL, 2, err, sizeof err) < 0) { puts(err); return; }
 *     for (;;) {
 *         n = ctn_detok_stream_push(&ds, tok, piece, sizeof piece);   // text of one token
 *         const char *out; size_t n_out;
 *         int rc = ctn_stop_feed(m, piece, n, &out, &n_out);
 *         if (rc < 0) break;                        // CTN_ENOMEM
 *         fwrite(out, 1, n_out, stdout);            // text that can no longer be a stop
 *         if (rc == CTN_STOP_HIT) break;            // stop string ctn_stop_which(m)
 *         if (generation_ended) {                   // EOS, max_tokens, ...
 *             ctn_stop_flush(m, &out, &n_out);      // the text held back, now final
 *             fwrite(out, 1, n_out, stdout);
 *             break;
 *         }
 *     }
 *     ctn_stop_free(m);
 *
 * The matcher holds back the longest suffix of the text so far that is a prefix of some stop
 * string, and hands out everything before it. A stop string may span any number of pieces.
 * When one appears in full, the text before it is handed out and the stop string and
 * everything after it never are.
 *
 * Which match wins: the one that ENDS first in the text; among those ending at the same
 * byte, the one that starts first (the longest); among identical strings, the lowest index.
 * So with stops {"abcd", "bc"} the text "abcd" stops on "bc" after "a", and with
 * {"b", "ab"} the text "ab" stops on "ab" with nothing before it.
 *
 * Stop strings are any bytes (no NUL terminator needed when lens is given). When the stop
 * strings and the text are valid UTF-8, every cut falls on a character boundary.
 *
 * Cost: a byte-class Aho-Corasick automaton built by ctn_stop_new (at most
 * CTN_STOP_MAX_TOTAL bytes of stop strings in all), then O(1) per byte fed. The output
 * buffer is preallocated for the longest stop string plus a typical piece and grows
 * (geometrically) only for longer pieces. A matcher is used by one thread at a time.
 */
#ifndef CTN_STOP_H
#define CTN_STOP_H

#include <stddef.h>

#include "error.h"

#define CTN_STOP_HIT       1     /* ctn_stop_feed / _flush: a stop string was found */
#define CTN_STOP_MAX_TOTAL 16384 /* bytes of stop strings in all */

typedef struct ctn_stop ctn_stop;

/*
 * Builds a matcher for n stop strings: strs[i] of lens[i] bytes, or NUL-terminated when
 * lens is NULL (both copied into the automaton; not kept). n may be 0 (nothing ever stops,
 * nothing is held). 0, CTN_EINVAL (an empty or NULL string, named by index in err, or more
 * than CTN_STOP_MAX_TOTAL bytes in all) or CTN_ENOMEM; on failure *out is NULL.
 */
int ctn_stop_new(ctn_stop **out, const char *const *strs, const size_t *lens, size_t n, char *err,
                 size_t errlen);
void ctn_stop_free(ctn_stop *m);

/*
 * Feeds the next len bytes of output. Sets *out / *n_out to the text that can now be handed
 * out (owned by the matcher, valid until its next call; *n_out may be 0). Returns 0,
 * CTN_STOP_HIT when a stop string completed (then *out is the text before it, and every
 * later feed or flush returns CTN_STOP_HIT with nothing until ctn_stop_reset), or
 * CTN_ENOMEM when the buffer could not grow for this piece (nothing consumed; the matcher
 * is unchanged) or CTN_EINVAL for NULL arguments.
 */
int ctn_stop_feed(ctn_stop *m, const char *piece, size_t len, const char **out, size_t *n_out);

/*
 * End of generation: hands out the text held back (it did not complete a stop string) and
 * starts over with nothing held; a stop string cannot span a flush. Returns 0, or
 * CTN_STOP_HIT with nothing when a stop string has already been found.
 */
int ctn_stop_flush(ctn_stop *m, const char **out, size_t *n_out);

/* Index of the stop string that was found, or -1. */
int ctn_stop_which(const ctn_stop *m);
/* Bytes currently held back (each a prefix of some stop string). */
size_t ctn_stop_held(const ctn_stop *m);
/* Forgets the text and any match, for a new generation with the same stop strings. */
void ctn_stop_reset(ctn_stop *m);

#endif
