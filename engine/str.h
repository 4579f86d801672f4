/*
 * Strings for every layer: one duplicator and one growing string, both allocating through
 * the allocation hook (alloc.h), so that the failure loops reach them.
 *
 *     char *name = ctn__strndup(p, n);           // NUL-terminated copy, or NULL
 *     ctn_strbuf b = {0};
 *     ctn_sb_puts(&b, "flowchart TD\n");
 *     ctn_sb_put(&b, name, n);
 *     char *s = ctn_sb_take(&b);                 // malloc'd, or NULL: out of memory
 *     free(name), free(s);
 *
 * A growing string never fails loudly: running out of memory sets oom, later appends do
 * nothing, and ctn_sb_take then returns NULL, so a writer checks once at the end. Memory
 * from both is released with free(). Not a public header.
 */
#ifndef CTN_STR_H
#define CTN_STR_H

#include <stdbool.h>
#include <stddef.h>

/* A copy of the n bytes at s with a NUL after them, or NULL (out of memory). */
char *ctn__strndup(const char *s, size_t n);
/* A copy of s, or NULL when s is NULL or memory runs out. */
char *ctn__strdup(const char *s);

typedef struct {
    char *p; /* NUL-terminated once anything was added */
    size_t len, cap;
    bool oom;
} ctn_strbuf;

void ctn_sb_put(ctn_strbuf *b, const char *s, size_t n);
void ctn_sb_puts(ctn_strbuf *b, const char *s);
/* Room for need more bytes (and the NUL) without growing again: false when memory ran out
 * (then oom is set). */
bool ctn_sb_reserve(ctn_strbuf *b, size_t need);
/* The string (the caller frees it), or NULL when memory ran out (then nothing is left to
 * free). An empty buffer gives "". */
char *ctn_sb_take(ctn_strbuf *b);
/* Frees what b holds and empties it. */
void ctn_sb_free(ctn_strbuf *b);

/*
 * JSON through cJSON with its allocations on the hook (cJSON_InitHooks, set once per process
 * by the first call): the tree of the n bytes at s (NUL-terminated or not), or NULL with *rc
 * CTN_ENOMEM (memory ran out while parsing) or CTN_EFORMAT (not valid JSON; *end, when end
 * is not NULL, then points near the fault). When strict, only white space (and a last NUL)
 * may follow the value. Free the tree with cJSON_Delete.
 */
struct cJSON;
struct cJSON *ctn__json_parse(const char *s, size_t n, bool strict, const char **end, int *rc);
/* Sets cJSON's allocator to the hook (once); for code that builds JSON trees. */
void ctn__json_init(void);

/*
 * For "did you mean" messages. ctn_str_distance: the edit distance of a and b (insertions,
 * deletions, substitutions, adjacent swaps), capped at 9. ctn_str_suggest: of the n
 * candidates (NULL entries skipped), the nearest to key when it is close enough to be
 * what was meant (at most a third of key's letters off, plus one), else NULL.
 *
 *     static const char *const opts[] = {"path", "ctx", "threads"};
 *     const char *near = ctn_str_suggest("ctxx", opts, 3);   // "ctx"
 */
int ctn_str_distance(const char *a, const char *b);
const char *ctn_str_suggest(const char *key, const char *const *cands, size_t n);

#endif
