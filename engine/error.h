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

enum {
    CTN_OK = 0,
    CTN_ENOMEM = -1,     /* an allocation failed */
    CTN_EINVAL = -2,     /* a bad argument from the caller */
    CTN_EIO = -3,        /* the operating system refused a read, write, open or map */
    CTN_EFORMAT = -4,    /* input data is malformed (file, field, offset in the message) */
    CTN_ENOENT = -5,     /* a key, tensor, token or file is not there */
    CTN_ETYPE = -6,      /* a value exists but has the wrong type */
    CTN_ENOTSUP = -7,    /* valid input that this build does not support */
    CTN_ERANGE = -8,     /* a value or size is out of the allowed range / buffer too small */
    CTN_ETIMEDOUT = -9,  /* a time limit ran out (a chain node's timeout) */
    CTN_ECANCELED = -10, /* the work was cancelled */
    CTN_ECHAIN = -11,    /* a chain node failed for a reason of its own (a Lua error, a parser's) */
};

/* A short static description of an error code; never NULL. */
const char *ctn_strerror(int code);

/* Formats a message into buf (truncating safely); used by every layer for its messages. */
void ctn__errf(char *buf, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
