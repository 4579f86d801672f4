/*
 * Error codes shared by every layer of catena.
 *
 *     int rc = ctn_gguf_open(&g, path, err, sizeof err);
 *     if (rc < 0) fprintf(stderr, "%s: %s\n", ctn_strerror(rc), err);
 *
 * Library functions return 0 (CTN_OK) or a negative CTN_E* code, never exit or abort.
 * The detailed message (file, field, offset, node) goes to a caller-supplied buffer or
 * to the object that failed; the code says only the kind of failure.
 */
#ifndef CTN_ERROR_H
#define CTN_ERROR_H

#include <stddef.h>

/* The codes themselves (CTN_OK, CTN_ENOMEM, ...) live at the bottom, in kernels/base.h, so
 * the kernels return the same codes without including this header. */
#include "base.h"

/*
 * Internal invariants (SQLite's ALWAYS/NEVER, libuv's assert): what the code relies on and
 * no input can break. Checked in debug builds (CTN_DEBUG: CMAKE_BUILD_TYPE=Debug and every
 * sanitizer build), where a broken one prints the expression and its place and aborts;
 * compiled out otherwise, so they cost nothing in the engine. Bad input is never an
 * assertion: it gets a CTN_E* code and a message.
 */
#ifdef CTN_DEBUG
#define CTN_ASSERT(x) ((x) ? (void)0 : ctn__assert_fail(#x, __FILE__, __LINE__))
#else
#define CTN_ASSERT(x) ((void)sizeof(!(x))) /* type-checked, never evaluated */
#endif
void ctn__assert_fail(const char *expr, const char *file, int line)
#if defined(__GNUC__)
    __attribute__((noreturn))
#endif
    ;

/* A short static description of an error code; never NULL. */
const char *ctn_strerror(int code);

/* Formats a message into buf (truncating safely); used by every layer for its messages. */
void ctn__errf(char *buf, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
