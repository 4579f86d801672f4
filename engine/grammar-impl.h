/*
 * The compiled form of a GBNF grammar (grammar.c), for the matcher and for tests that check
 * it against a reference recognizer. Not a public header.
 *
 * Rules are sequences of elements: alternatives separated by ALT, the last one followed by
 * END (llama.cpp's layout). A terminal is one SET element: a sorted list of disjoint,
 * non-adjacent code point ranges (negated classes and `.` are complemented at compile time,
 * surrogates removed). Groups and repetitions became rules of their own.
 */
#ifndef CTN_GRAMMAR_IMPL_H
#define CTN_GRAMMAR_IMPL_H

#include <stdint.h>

#include "grammar.h"

enum { CTN__GEL_END, CTN__GEL_ALT, CTN__GEL_REF, CTN__GEL_SET };

typedef struct {
    int32_t type; /* CTN__GEL_* */
    int32_t val;  /* REF: rule id; SET: set id */
} ctn__gel;

typedef struct {
    uint32_t lo, hi; /* inclusive */
} ctn__grange;

struct ctn_grammar {
    int32_t n_rules;
    int32_t root;
    char **names;        /* (n_rules) NUL-terminated */
    int32_t *rule_start; /* (n_rules) position of the first alternative in elems */
    int32_t *alt_off;    /* (n_rules + 1) rule r's alternatives: alts[alt_off[r] .. alt_off[r+1]) */
    int32_t *alts;       /* positions in elems where an alternative starts */
    ctn__gel *elems;     /* (n_elems) */
    int32_t n_elems;
    ctn__grange *ranges; /* set s: ranges[set_off[s] .. set_off[s+1]) */
    int32_t *set_off;    /* (n_sets + 1) */
    uint64_t *ascii;     /* (n_sets, 2) bitmap of the code points below 128 in each set */
    int32_t n_sets;
};

/* Whether set s of g holds code point c. */
static inline int ctn__gset_has(const ctn_grammar *g, int32_t s, uint32_t c) {
    if (c < 128) return (int)((g->ascii[2 * s + (c >> 6)] >> (c & 63)) & 1);
    int32_t lo = g->set_off[s], hi = g->set_off[s + 1];
    while (lo < hi) {
        const int32_t m = lo + (hi - lo) / 2;
        if (g->ranges[m].hi < c)
            lo = m + 1;
        else if (g->ranges[m].lo > c)
            hi = m;
        else
            return 1;
    }
    return 0;
}

#endif
