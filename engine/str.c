/* The one string duplicator and growing string (str.h). */
#include "str.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "base.h"

char *ctn__strndup(const char *s, size_t n) {
    if (n == SIZE_MAX) return NULL;
    char *d = ctn__malloc(n + 1);
    if (d == NULL) return NULL;
    if (n > 0) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ctn__strdup(const char *s) {
    return s != NULL ? ctn__strndup(s, strlen(s)) : NULL;
}

bool ctn_sb_reserve(ctn_strbuf *b, size_t need) {
    if (b->oom) return false;
    if (need >= SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return false;
    }
    if (b->len + need + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 128;
    while (cap < b->len + need + 1)
        cap *= 2;
    char *q = ctn__realloc(b->p, cap);
    if (q == NULL) {
        b->oom = true;
        return false;
    }
    /* The buffer is a string from the first byte on, so that ctn_sb_take right after a
     * reserve (nothing added) gives "" rather than uninitialised memory. */
    if (b->p == NULL) q[0] = '\0';
    b->p = q;
    b->cap = cap;
    return true;
}

void ctn_sb_put(ctn_strbuf *b, const char *s, size_t n) {
    if (!ctn_sb_reserve(b, n)) return;
    if (n > 0) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void ctn_sb_puts(ctn_strbuf *b, const char *s) {
    ctn_sb_put(b, s, strlen(s));
}

char *ctn_sb_take(ctn_strbuf *b) {
    if (!b->oom && b->p == NULL) ctn_sb_put(b, "", 0);
    if (b->oom) {
        ctn_sb_free(b);
        return NULL;
    }
    char *p = b->p;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void ctn_sb_free(ctn_strbuf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}

/* ---- cJSON on the allocation hook ---- */

/* Set when an allocation of this thread's cJSON call failed. */
static _Thread_local bool json_oom;

static void *json_malloc(size_t n) {
    void *p = ctn__malloc(n);
    if (p == NULL) json_oom = true;
    return p;
}

static void json_hooks(void) {
    cJSON_InitHooks(&(cJSON_Hooks){.malloc_fn = json_malloc, .free_fn = free});
}

void ctn__json_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, json_hooks);
}

cJSON *ctn__json_parse(const char *s, size_t n, bool strict, const char **end, int *rc) {
    ctn__json_init();
    json_oom = false;
    const char *e = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &e, 0);
    if (j != NULL && strict) { /* only white space may follow the value */
        const char *p = e, *lim = s + n;
        while (p < lim && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p < lim && !(*p == '\0' && p + 1 == lim)) {
            cJSON_Delete(j);
            j = NULL;
            e = p;
        }
    }
    if (end != NULL) *end = e;
    *rc = j != NULL ? 0 : json_oom ? CTN_ENOMEM : CTN_EFORMAT;
    if (j != NULL && json_oom) { /* a tree cJSON built around a failed allocation */
        cJSON_Delete(j);
        j = NULL;
        *rc = CTN_ENOMEM;
    }
    return j;
}

int ctn_str_distance(const char *a, const char *b) {
    const size_t na = strlen(a), nb = strlen(b);
    if (na > 30 || nb > 30) return 9;
    int d[32][32];
    for (size_t i = 0; i <= na; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= nb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= na; i++)
        for (size_t j = 1; j <= nb; j++) {
            int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[na][nb] < 9 ? d[na][nb] : 9;
}

const char *ctn_str_suggest(const char *key, const char *const *cands, size_t n) {
    if (key == NULL) return NULL;
    const char *best = NULL;
    int bd = 9;
    for (size_t i = 0; i < n; i++) {
        if (cands[i] == NULL) continue;
        const int d = ctn_str_distance(key, cands[i]);
        if (d < bd) best = cands[i], bd = d;
    }
    return best != NULL && bd <= 1 + (int)strlen(key) / 3 ? best : NULL;
}
