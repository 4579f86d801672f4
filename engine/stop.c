/*
 * Stop strings over streamed text (see stop.h): an Aho-Corasick automaton compiled to a
 * full transition table, so feeding costs one table lookup per byte.
 *
 * A state of the automaton is the longest suffix of the text that is a prefix of some stop
 * string: exactly the text to hold back, so the held length is the state's depth and no
 * other bookkeeping is needed. Each state also records the longest stop string that is a
 * suffix of it; the first byte whose state has one is the earliest end of a match, and that
 * longest string is the one starting first, which is the tie rule stop.h promises.
 *
 * Bytes are mapped to classes first (class 0: every byte in no stop string), so the table
 * has (1 + distinct bytes) columns rather than 256; with CTN_STOP_MAX_TOTAL bytes of stop
 * strings the states fit in 16 bits.
 */
#include "stop.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define FIRST_PIECE 256 /* room for a piece beyond the held bytes, before any growth */

typedef struct {
    uint16_t depth;   /* length of the prefix this state stands for */
    uint16_t out_len; /* longest stop string that is a suffix of it; 0: none */
    int32_t out_idx;  /* index of that stop string (the lowest among equal strings) */
} node;

struct ctn_stop {
    uint16_t cls[256]; /* byte -> column of delta */
    int n_cls;
    uint16_t *delta; /* (n_nodes, n_cls) next state */
    node *nodes;     /* (n_nodes) */
    int n_nodes;

    uint16_t state; /* current state; its depth is the number of bytes held */
    int which;      /* matched stop string, -1 */
    char *buf;      /* held bytes at buf[off, off + depth), then the last output before it */
    size_t cap, off;
};

void ctn_stop_free(ctn_stop *m) {
    if (m == NULL) return;
    free(m->delta);
    free(m->nodes);
    free(m->buf);
    free(m);
}

static int nomem(ctn_stop *m, char *err, size_t errlen) {
    ctn_stop_free(m);
    ctn__errf(err, errlen, "stop strings: out of memory");
    return CTN_ENOMEM;
}

/* The trie of the stop strings, then breadth-first: failure links, each state's longest
 * stop-string suffix, and the missing transitions filled in from the failure links. */
static int build(ctn_stop *m, const char *const *strs, const size_t *lens, size_t n) {
    const int nc = m->n_cls;
    uint16_t *fail = ctn__malloc((size_t)m->n_nodes * 2 * sizeof *fail);
    if (fail == NULL) return CTN_ENOMEM;
    uint16_t *queue = fail + m->n_nodes;

    const uint16_t NONE = UINT16_MAX; /* never a state: n_nodes <= CTN_STOP_MAX_TOTAL + 1 */
    int used = 1;
    memset(m->delta, 0xff, (size_t)nc * sizeof *m->delta);
    m->nodes[0] = (node){0, 0, -1};
    for (size_t i = 0; i < n; i++) {
        const unsigned char *s = (const unsigned char *)strs[i];
        size_t len = lens ? lens[i] : strlen(strs[i]);
        int u = 0;
        for (size_t j = 0; j < len; j++) {
            uint16_t *next = &m->delta[(size_t)u * nc + m->cls[s[j]]];
            if (*next == NONE) {
                memset(&m->delta[(size_t)used * nc], 0xff, (size_t)nc * sizeof *m->delta);
                m->nodes[used] = (node){(uint16_t)(j + 1), 0, -1};
                *next = (uint16_t)used++;
            }
            u = *next;
        }
        if (m->nodes[u].out_len == 0) {
            m->nodes[u].out_len = (uint16_t)len;
            m->nodes[u].out_idx = (int32_t)i;
        }
    }
    m->n_nodes = used;

    int head = 0, tail = 0;
    for (int c = 0; c < nc; c++) {
        uint16_t v = m->delta[c];
        if (v == NONE) {
            m->delta[c] = 0;
        } else {
            fail[v] = 0;
            queue[tail++] = v;
        }
    }
    while (head < tail) {
        int u = queue[head++];
        const uint16_t *fu = &m->delta[(size_t)fail[u] * nc];
        if (m->nodes[u].out_len == 0) {
            m->nodes[u].out_len = m->nodes[fail[u]].out_len;
            m->nodes[u].out_idx = m->nodes[fail[u]].out_idx;
        }
        uint16_t *du = &m->delta[(size_t)u * nc];
        for (int c = 0; c < nc; c++) {
            if (du[c] == NONE) {
                du[c] = fu[c];
            } else {
                fail[du[c]] = fu[c];
                queue[tail++] = du[c];
            }
        }
    }
    free(fail);
    return 0;
}

int ctn_stop_new(ctn_stop **out, const char *const *strs, const size_t *lens, size_t n, char *err,
                 size_t errlen) {
    if (out == NULL || (n > 0 && strs == NULL)) {
        ctn__errf(err, errlen, "stop strings: NULL argument");
        return CTN_EINVAL;
    }
    *out = NULL;
    size_t total = 0, longest = 0;
    for (size_t i = 0; i < n; i++) {
        if (strs[i] == NULL) {
            ctn__errf(err, errlen, "stop strings: string %zu is NULL", i);
            return CTN_EINVAL;
        }
        size_t len = lens ? lens[i] : strlen(strs[i]);
        if (len == 0) {
            ctn__errf(err, errlen, "stop strings: string %zu is empty", i);
            return CTN_EINVAL;
        }
        if (len > CTN_STOP_MAX_TOTAL - total) {
            ctn__errf(err, errlen, "stop strings: more than %d bytes in all (at string %zu)",
                      CTN_STOP_MAX_TOTAL, i);
            return CTN_EINVAL;
        }
        total += len;
        if (len > longest) longest = len;
    }

    ctn_stop *m = ctn__calloc(1, sizeof *m);
    if (m == NULL) return nomem(m, err, errlen);
    m->n_cls = 1;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *s = (const unsigned char *)strs[i];
        size_t len = lens ? lens[i] : strlen(strs[i]);
        for (size_t j = 0; j < len; j++) {
            if (m->cls[s[j]] == 0) m->cls[s[j]] = (uint16_t)m->n_cls++;
        }
    }
    m->n_nodes = (int)total + 1; /* at most: one state per byte, plus the root */
    m->delta = ctn__malloc((size_t)m->n_nodes * (size_t)m->n_cls * sizeof *m->delta);
    m->nodes = ctn__malloc((size_t)m->n_nodes * sizeof *m->nodes);
    m->cap = longest + FIRST_PIECE;
    m->buf = ctn__malloc(m->cap);
    if (m->delta == NULL || m->nodes == NULL || m->buf == NULL) return nomem(m, err, errlen);
    if (build(m, strs, lens, n) < 0) return nomem(m, err, errlen);
    ctn_stop_reset(m);
    *out = m;
    return 0;
}

void ctn_stop_reset(ctn_stop *m) {
    m->state = 0;
    m->which = -1;
    m->off = 0;
}

int ctn_stop_which(const ctn_stop *m) {
    return m->which;
}

size_t ctn_stop_held(const ctn_stop *m) {
    return m->which >= 0 ? 0 : m->nodes[m->state].depth;
}

int ctn_stop_feed(ctn_stop *m, const char *piece, size_t len, const char **out, size_t *n_out) {
    if (m == NULL || out == NULL || n_out == NULL || (len > 0 && piece == NULL)) {
        return CTN_EINVAL;
    }
    *out = m->buf;
    *n_out = 0;
    if (m->which >= 0) return CTN_STOP_HIT;

    size_t held = m->nodes[m->state].depth;
    if (len > m->cap - held) {
        size_t cap = m->cap;
        while (len > cap - held) {
            if (cap > SIZE_MAX / 2) return CTN_ENOMEM;
            cap *= 2;
        }
        /* The held bytes move to the front first, so a failed realloc leaves them intact. */
        memmove(m->buf, m->buf + m->off, held);
        m->off = 0;
        char *b = ctn__realloc(m->buf, cap);
        if (b == NULL) return CTN_ENOMEM;
        m->buf = b;
        m->cap = cap;
        *out = b;
    }
    memmove(m->buf, m->buf + m->off, held);
    if (len > 0) memcpy(m->buf + held, piece, len); /* piece may be NULL when len is 0 */
    m->off = 0;

    const unsigned char *t = (const unsigned char *)m->buf;
    const size_t total = held + len;
    const int nc = m->n_cls;
    uint16_t st = m->state;
    for (size_t i = held; i < total; i++) {
        st = m->delta[(size_t)st * nc + m->cls[t[i]]];
        if (m->nodes[st].out_len) {
            m->which = m->nodes[st].out_idx;
            m->state = 0;
            *n_out = i + 1 - m->nodes[st].out_len;
            return CTN_STOP_HIT;
        }
    }
    m->state = st;
    *n_out = total - m->nodes[st].depth;
    m->off = *n_out;
    return 0;
}

int ctn_stop_flush(ctn_stop *m, const char **out, size_t *n_out) {
    if (m == NULL || out == NULL || n_out == NULL) return CTN_EINVAL;
    *out = m->buf;
    *n_out = 0;
    if (m->which >= 0) return CTN_STOP_HIT;
    *out = m->buf + m->off;
    *n_out = m->nodes[m->state].depth;
    m->off = 0; /* nothing held any more; the bytes stay in place for the caller */
    m->state = 0;
    return 0;
}
