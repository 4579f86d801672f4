/*
 * Internals shared by the loaders (load_text.c, load_json.c and the loaders of other
 * formats): the checks every loader makes on its arguments, warnings, the "source"
 * metadata and the rollback that keeps docs as it was when a loader fails. Not a public
 * header.
 */
#ifndef CTN_LOADER_IMPL_H
#define CTN_LOADER_IMPL_H

#include <stddef.h>

#include "loader.h"
#include "value.h"

/* Writes a message, when the caller gave room for one (err and errcap in scope). */
#define CTN__LOAD_ERR(...)                                                                         \
    do {                                                                                           \
        if (err != NULL && errcap > 0) ctn__errf(err, errcap, __VA_ARGS__);                        \
    } while (0)

/* CTN_EINVAL with a message when c, its source, data or docs cannot be used (a NULL data
 * is fine when n is 0); else 0. */
int ctn__load_check(const ctn_load_ctx *c, const char *data, size_t n, const ctn_val *docs,
                    char *err, size_t errcap);

/* Sends "<source>: <message>" to c->warn, when there is one. The message is formatted on the
 * stack (no allocation), so warnings still arrive when memory runs out; a very long one is
 * cut. */
void ctn__load_warn(const ctn_load_ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* A new metadata object holding "source", or NULL when memory runs out. */
ctn_val *ctn__load_meta(const ctn_load_ctx *c);

/* Drops the elements of the array docs from index n on: a failing loader appends as it
 * goes and calls this with the length docs had on entry. */
void ctn__load_rollback(ctn_val *docs, size_t n);

#endif
