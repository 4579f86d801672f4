/*
 * Allocation wrappers with failure injection (see alloc.h). Kept out of line and tiny: the
 * injection check is one load and compare on a path that already calls malloc.
 */
#include "alloc.h"

#include <stdlib.h>

_Atomic long ctn__alloc_fail_after = -1;
_Atomic bool ctn__alloc_fail_once = false;
_Atomic long ctn__alloc_n_failed = 0;

/* True when this allocation is to fail; counts down the allocations left otherwise. One
 * relaxed load when disarmed; a compare-and-swap loop when armed, so that concurrent
 * allocations each take one step of the count. */
static int fail_now(void) {
    long n = atomic_load_explicit(&ctn__alloc_fail_after, memory_order_relaxed);
    for (;;) {
        if (n < 0) return 0;
        const long next = n > 0 ? n - 1 : atomic_load(&ctn__alloc_fail_once) ? -1 : 0;
        if (atomic_compare_exchange_weak(&ctn__alloc_fail_after, &n, next)) break;
    }
    if (n > 0) return 0;
    atomic_fetch_add(&ctn__alloc_n_failed, 1);
    return 1;
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
