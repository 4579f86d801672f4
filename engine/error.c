#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void ctn__assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "catena: internal invariant broken at %s:%d: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}

const char *ctn_strerror(int code) {
    switch (code) {
    case CTN_OK: return "success";
    case CTN_ENOMEM: return "out of memory";
    case CTN_EINVAL: return "invalid argument";
    case CTN_EIO: return "input/output error";
    case CTN_EFORMAT: return "malformed input";
    case CTN_ENOENT: return "not found";
    case CTN_ETYPE: return "wrong type";
    case CTN_ENOTSUP: return "not supported";
    case CTN_ERANGE: return "out of range";
    case CTN_ETIMEDOUT: return "timed out";
    case CTN_ECANCELED: return "cancelled";
    case CTN_ECHAIN: return "chain node failed";
    default: return "unknown error";
    }
}

void ctn__errf(char *buf, size_t cap, const char *fmt, ...) {
    if (buf == NULL || cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}
