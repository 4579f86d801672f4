/*
 * The engine's allocation wrappers, with allocation-failure injection for tests.
 *
 *     ctn__alloc_fail_after = 3;    // three more allocations succeed, then all fail
 *     rc = ctn_vocab_load(&v, g, err, sizeof err);   // must return CTN_ENOMEM, leak-free
 *     ctn__alloc_fail_after = -1;   // back to normal
 *
 * Modules whose objects own memory (gguf.c, vocab.c, vocab_tok.c, pretok.c) allocate only
 * through these, so a test can fail the N-th allocation for every N (SQLite's discipline).
 * Memory from them is released with plain free(). Not a public header.
 */
#ifndef CTN_ALLOC_H
#define CTN_ALLOC_H

#include <stddef.h>

/*
 * When >= 0, that many more allocations succeed and every later one fails, until the test
 * sets it back to -1 (the default). Not thread-safe: set it only while no other thread
 * allocates through these wrappers (at -1 it is only read).
 */
extern long ctn__alloc_fail_after;

/* malloc / calloc / realloc; a size of 0 is taken as 1 so that NULL always means failure. */
void *ctn__malloc(size_t n);
void *ctn__calloc(size_t n, size_t size);
void *ctn__realloc(void *p, size_t n);

#endif
