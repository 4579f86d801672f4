/*
 * libFuzzer target for the GBNF parser and the matcher (engine/grammar.c). The input is a
 * grammar; a compiled one is then walked for a few tokens over a small fixed vocabulary
 * (every byte, and pieces with whole and split UTF-8 characters), checking at each state that
 * the trie's mask equals a token-by-token check (ctn_grammar_allowed and ctn_grammar_mask) and
 * that an allowed token is accepted.
 * Failures must be CTN_EINVAL with a message naming the grammar, never a crash; a grammar
 * ambiguous past CTN_GRAMMAR_MAX_STACKS stops with CTN_ERANGE.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine -Ikernels tests/fuzz/fuzz_gbnf.c \
 *       engine/grammar.c engine/unicode.c engine/unicode_data.c engine/vocab*.c ... (or build
 *       the fuzz_gbnf target with CMake)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_gbnf: %s failed at line %d\n", #cond, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const PIECES[] = {
    "a",
    "b",
    "ab",
    "abc",
    "x",
    "yes",
    "no",
    " ",
    "\n",
    "{",
    "}",
    "\"",
    ":",
    ",",
    "[",
    "]",
    "1",
    "23",
    "-",
    "\xc3\xa9",
    "\xc3",
    "\xa9",
    "\xe2\x82\xac",
    "\xe2\x82",
    "\xac",
    "\xf0\x9f\x98\x80",
    "\xf0",
    "\x9f\x98",
    "\x80",
    "aa",
    "ba",
    "true",
    "null",
    "\\",
    "#",
    "(",
    ")",
    "|",
    "*",
};
#define N_PIECES ((int)(sizeof PIECES / sizeof *PIECES))
#define N_TOK    (256 + N_PIECES + 1)

static ctn_token_trie *TRIE;
static char BYTES[256];
static const char *P[N_TOK];
static size_t L[N_TOK];
static bool EOG[N_TOK];

static void setup(void) {
    for (int i = 0; i < 256; i++) {
        BYTES[i] = (char)i;
        P[i] = &BYTES[i];
        L[i] = 1;
    }
    for (int i = 0; i < N_PIECES; i++) {
        P[256 + i] = PIECES[i];
        L[256 + i] = strlen(PIECES[i]);
    }
    P[N_TOK - 1] = "";
    EOG[N_TOK - 1] = true;
    char err[128];
    CHECK(ctn_token_trie_new(&TRIE, N_TOK, P, L, EOG, err, sizeof err) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (TRIE == NULL) setup();
    if (size > 4096) return 0;
    char err[300] = "";
    ctn_grammar *g = NULL;
    const int rc = ctn_grammar_new_n(&g, (const char *)data, size, err, sizeof err);
    if (rc < 0) {
        CHECK(rc == CTN_EINVAL && g == NULL);
        CHECK(strncmp(err, "grammar", 7) == 0);
        return 0;
    }
    CHECK(g != NULL && ctn_grammar_n_rules(g) > 0);
    ctn_grammar_state *st;
    const int src = ctn_grammar_state_new(&st, g);
    CHECK(src == 0 || src == CTN_ERANGE); /* ERANGE: too ambiguous (CTN_GRAMMAR_MAX_STACKS) */
    if (src != 0) {
        ctn_grammar_free(g);
        return 0;
    }
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    uint8_t mark[N_TOK];
    for (int step = 0; step < 12; step++) {
        const int32_t *ids;
        const int64_t n = ctn_grammar_allowed(st, TRIE, &ids);
        CHECK(n >= 0 || n == CTN_ERANGE);
        if (n < 0) break;
        memset(mark, 0, sizeof mark);
        for (int64_t k = 0; k < n; k++) {
            CHECK(ids[k] >= 0 && ids[k] < N_TOK && !mark[ids[k]]);
            mark[ids[k]] = 1;
        }
        for (int i = 0; i < N_TOK; i++) {
            /* the walk took every token's path, so none reaches the limit here */
            const int rc = EOG[i] ? (ctn_grammar_complete(st) ? 0 : CTN_EINVAL)
                                  : ctn_grammar_accept(st, P[i], L[i], false);
            CHECK(rc == 0 || rc == CTN_EINVAL);
            CHECK((rc == 0) == mark[i]);
        }
        if (n == 0) break;
        h = h * 1103515245u + 12345u;
        const int32_t tok = ids[(h >> 8) % (uint64_t)n];
        /* The engine's path: ctn_grammar_mask (its cached masks, as allowed or as refused
         * tokens) leaves exactly the marked tokens, twice in a row. */
        for (int rep = 0; rep < 2; rep++) {
            float logits[N_TOK];
            for (int i = 0; i < N_TOK; i++)
                logits[i] = 1.0f;
            CHECK(ctn_grammar_mask(st, TRIE, logits) == n);
            for (int i = 0; i < N_TOK; i++)
                CHECK((logits[i] == 1.0f) == mark[i]);
        }
        if (EOG[tok]) break;
        CHECK(ctn_grammar_accept_token(st, TRIE, tok) == 0);
    }
    ctn_grammar_state_free(st);
    ctn_grammar_free(g);
    return 0;
}
