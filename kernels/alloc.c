/*
 * Allocation wrappers with failure injection (see alloc.h). Kept out of line and tiny: the
 * injection check is one load and compare on a path that already calls malloc.
 */
#include "alloc.h"

#include <stdlib.h>

long ctn__alloc_fail_after = -1;
bool ctn__alloc_fail_once = false;
long ctn__alloc_n_failed = 0;

/* True when this allocation is to fail; counts down the allocations left otherwise. */
static int fail_now(void) {
    if (ctn__alloc_fail_after < 0) return 0;
    if (ctn__alloc_fail_after == 0) {
        if (ctn__alloc_fail_once) ctn__alloc_fail_after = -1;
        ctn__alloc_n_failed++;
        return 1;
    }
    ctn__alloc_fail_after--;
    return 0;
}

void *ctn__malloc(size_t n) {
    return fail_now() ? NULL : malloc(n ? n : 1);
}

void *ctn__calloc(size_t n, size_t size) {
    if (n == 0 || size == 0) n = size = 1;
    return fail_now() ? NULL : calloc(n, size);
}

void *ctn__realloc(void *p, size_t n) {
    return fail_now() ? NULL : realloc(p, n ? n : 1);
}
