/*
 * A growing string for the chains layer's writers (the JSON writer, graph drawings, chat
 * templates). Appends never fail loudly: running out of memory sets oom, later appends do
 * nothing, and ctn_sb_take then returns NULL, so a writer checks once at the end.
 *
 *     ctn_strbuf b = {0};
 *     ctn_sb_puts(&b, "flowchart TD\n");
 *     char *s = ctn_sb_take(&b);   // malloc'd and NUL-terminated, or NULL: out of memory
 */
#ifndef CTN_STRBUF_H
#define CTN_STRBUF_H

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p; /* NUL-terminated once anything was added */
    size_t len, cap;
    int oom;
} ctn_strbuf;

static inline void ctn_sb_put(ctn_strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (q == NULL) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n > 0) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static inline void ctn_sb_puts(ctn_strbuf *b, const char *s) {
    ctn_sb_put(b, s, strlen(s));
}

/* The string (the caller frees it), or NULL when memory ran out (then nothing is left to
 * free). An empty buffer gives "". */
static inline char *ctn_sb_take(ctn_strbuf *b) {
    if (!b->oom && b->p == NULL) ctn_sb_put(b, "", 0);
    if (b->oom) {
        free(b->p);
        b->p = NULL;
        return NULL;
    }
    char *p = b->p;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

#endif
