/*
 * catena's allocation wrappers, with allocation-failure injection for tests. They live at
 * the bottom (kernels/) so that the kernels' thread pool and the engine above allocate
 * through the same hook.
 *
 *     ctn__alloc_fail_after = 3;    // three more allocations succeed, then all fail
 *     rc = ctn_pool_new(&p, 4);     // must return CTN_ENOMEM, leak-free
 *     ctn__alloc_fail_after = -1;   // back to normal
 *
 *     ctn__alloc_fail_once = true;  // as SQLite does, the N-th allocation fails once:
 *     ctn__alloc_fail_after = 3;    // the fourth fails, every later one succeeds again
 *
 * Modules whose objects own memory (kernels/cpu/pool.c; in engine/: gguf.c, vocab.c, vocab_tok.c, pretok.c, safetensors.c,
 * lora.c, lora_merge.c) allocate only through these, so a test can fail the N-th allocation
 * for every N, once and persistently (SQLite's discipline). Memory from them is released
 * with plain free(). Not a public header.
 */
#ifndef CTN_ALLOC_H
#define CTN_ALLOC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * When >= 0, that many more allocations succeed and every later one fails, until the test
 * sets it back to -1 (the default). Atomic: the allocations of every thread (the engine's,
 * the loop's) count down one counter, so a test may arm it while an engine thread runs;
 * which thread's allocation is the N-th then depends on timing, and every outcome must be
 * clean.
 */
extern _Atomic long ctn__alloc_fail_after;

/*
 * When true, only the one allocation ctn__alloc_fail_after points at fails: the hook then
 * sets ctn__alloc_fail_after back to -1 itself, and later allocations succeed (a transient
 * failure, which must not leave an object half built either). False (the default): every
 * allocation after it fails too. Set it before ctn__alloc_fail_after.
 */
extern _Atomic bool ctn__alloc_fail_once;

/*
 * How many allocations the hook has failed so far (it only counts up; a test reads it
 * before and after a call to know whether the failure hit anything, or whether N has run
 * past the last allocation the call makes).
 */
extern _Atomic long ctn__alloc_n_failed;

/* malloc / calloc / realloc; a size of 0 is taken as 1 so that NULL always means failure. */
void *ctn__malloc(size_t n);
void *ctn__calloc(size_t n, size_t size);
void *ctn__realloc(void *p, size_t n);

#endif
