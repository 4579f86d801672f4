/*
 * The bottom of catena: the error codes every layer returns, kernels included.
 *
 *     #include "base.h"
 *     int rc = CTN_ENOMEM;             // 0 (CTN_OK) or a negative CTN_E* code
 *
 * engine/error.h includes this header and adds ctn_strerror, ctn__errf and CTN_ASSERT;
 * nothing under kernels/ includes a header of engine/ (ARCHITECTURE.md, "Layers").
 */
#ifndef CTN_BASE_H
#define CTN_BASE_H

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

#endif
