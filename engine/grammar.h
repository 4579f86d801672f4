/*
 * Grammar-constrained decoding: llama.cpp's GBNF grammars, compiled once, matched per
 * sequence, and turned into a mask over the vocabulary by one walk of a token trie.
 *
 *     ctn_grammar *g;
 *     if (ctn_grammar_new(&g, "root ::= \"yes\" | \"no\"", err, sizeof err) < 0) puts(err);
 *     ctn_token_trie *t;                     // once per vocabulary, shared read-only
 *     if (ctn_token_trie_from_vocab(&t, vocab, err, sizeof err) < 0) puts(err);
 *     ctn_grammar_state *st;                 // one per sequence
 *     if (ctn_grammar_state_new(&st, g) < 0) ...
 *     int64_t n = ctn_grammar_mask(st, t, logits);    // -inf on every token it cannot take
 *     ...                                             // sample tok from logits
 *     ctn_grammar_accept_token(st, t, tok);           // advance by the token's bytes
 *     ctn_grammar_state_free(st);
 *     ctn_token_trie_free(t);
 *     ctn_grammar_free(g);
 *
 * The format (llama.cpp's grammars/README.md):
 *
 *     root  ::= item ("," ws item)*          # a rule: name ::= alternatives
 *     item  ::= [a-z]+ | "\"" [^"\n]* "\""  # | separates alternatives
 *     ws    ::= [ \t\n]{0,4}
 *
 *   - Rule names are letters, digits and '-'. `root` is the start rule. A rule may be used
 *     before it is defined; a rule defined twice is an error.
 *   - A rule ends at a newline, unless the newline follows `|` or `::=`, or is inside
 *     parentheses. `#` starts a comment that runs to the end of the line.
 *   - Terminals: string literals "..." and character classes [...] ([^...] negated, ranges
 *     a-z), `.` for any character. Escapes in both: \n \t \r \\ \" \[ \] \- , \xHH,
 *     \uHHHH, \UHHHHHHHH. Everything is matched by Unicode code point on well-formed UTF-8
 *     (surrogates, which have no UTF-8 form, are never matched).
 *   - Grouping ( ... ), repetition * + ? and {m} {m,} {m,n} (at most 2000) on the element
 *     before them (a literal repeats whole, as in llama.cpp).
 *   - Left recursion (a rule that can reach itself before consuming a character, as in
 *     `expr ::= expr "+" term`, or `("a"?)*`) is refused, as llama.cpp refuses it: write
 *     it as repetition (`expr ::= term ("+" term)*`).
 *   Not supported: llama.cpp's token references (<[id]>, <name>).
 *
 * Errors name the place: "grammar line 3, column 12 (rule 'value'): a character class that
 * is never closed (expected ']')", "grammar line 2, column 9 (rule 'root'): undefined rule
 * 'vlaue'", "grammar: no rule 'root' (the start rule)", "grammar line 4, column 1 (rule
 * 'expr'): left recursion: 'expr' can begin with 'expr' (write it as a repetition)".
 * Columns count bytes from 1. A grammar over a million elements once repetitions are
 * expanded is refused as too large.
 *
 * Matching follows llama.cpp: the state is a set of stacks over the compiled elements, each
 * stack the rest of one way to parse what came so far; a code point advances every stack
 * whose next terminal takes it. Stacks are persistent (a node is a position and a parent)
 * and hash-consed, so equal stacks are one id and sets deduplicate by id; what a stack
 * becomes once its terminal has taken a character (which does not depend on the character)
 * is worked out once per stack and kept, across tokens, until the node store is compacted
 * (when garbage from earlier tokens outgrows the live stacks). A token whose bytes end
 * inside a UTF-8 character is allowed when some stack can take a character that begins with
 * those bytes; the bytes are carried into the next token, as llama.cpp carries its
 * partial_utf8.
 *
 * The mask: the vocabulary's decoded token bytes (special=false pieces) are stored once in a
 * byte trie, laid out in preorder. ctn_grammar_mask walks it against the state, advancing
 * by one byte per edge and skipping every subtree whose prefix no stack can take, instead
 * of matching each token; what a byte does to each set of stacks (with its pending bytes) is
 * worked out once per walk and looked up at the other nodes. A state also keeps the masks of
 * the last 8 states it was in (the same stacks, pending bytes and trie), so a grammar that
 * loops, as a JSON string does, finds most of its masks instead of walking. End-of-generation
 * tokens are allowed exactly when some stack is complete (and no partial character is
 * pending); other tokens with no bytes (control tokens) never are.
 *
 * Ownership and threads: a ctn_grammar and a ctn_token_trie are immutable once made and may
 * be shared by any number of states and threads. A ctn_grammar_state borrows its grammar
 * (which must outlive it) and is used by one thread at a time. Every allocation goes
 * through the allocation hook (alloc.h); states grow their buffers on demand and keep them,
 * so the token loop allocates only while a state is still finding its size.
 */
#ifndef CTN_GRAMMAR_H
#define CTN_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "vocab.h"

typedef struct ctn_grammar ctn_grammar;
typedef struct ctn_grammar_state ctn_grammar_state;
typedef struct ctn_token_trie ctn_token_trie;

/* The most repetitions {m,n} may ask for (llama.cpp's threshold). */
#define CTN_GRAMMAR_MAX_REPEAT 2000
/* The most stacks (ways to parse what came so far) a state may hold. A highly ambiguous
 * grammar ("x"+)+ ... multiplies them with each character; past this the matcher stops with
 * CTN_ERANGE instead of running out of time, as llama.cpp's would. */
#define CTN_GRAMMAR_MAX_STACKS 1024

/*
 * Compiles the GBNF text (NUL-terminated, borrowed for the call). 0, CTN_EINVAL with the
 * line, column and rule in err, or CTN_ENOMEM. On failure *out is NULL.
 */
int ctn_grammar_new(ctn_grammar **out, const char *text, char *err, size_t errlen);
/* The same for n bytes that need not end in a NUL (a NUL inside is an error). */
int ctn_grammar_new_n(ctn_grammar **out, const char *text, size_t n, char *err, size_t errlen);
void ctn_grammar_free(ctn_grammar *g);
/* Rules after compilation (the written ones, then those made for groups and repetitions). */
int32_t ctn_grammar_n_rules(const ctn_grammar *g);

/*
 * The trie of a vocabulary: pieces[i] (lens[i] bytes, borrowed for the call) is what token
 * i decodes to; eog[i] (eog may be NULL) marks end-of-generation tokens. 0, CTN_EINVAL or
 * CTN_ENOMEM.
 */
int ctn_token_trie_new(ctn_token_trie **out, int32_t n_tokens, const char *const *pieces,
                       const size_t *lens, const bool *eog, char *err, size_t errlen);
/* The trie of a loaded vocabulary: each token's ctn_token_to_piece(special=false) bytes,
 * and ctn_vocab_is_eog. */
int ctn_token_trie_from_vocab(ctn_token_trie **out, const ctn_vocab *v, char *err, size_t errlen);
void ctn_token_trie_free(ctn_token_trie *t);
int32_t ctn_token_trie_n_tokens(const ctn_token_trie *t);
int64_t ctn_token_trie_n_nodes(const ctn_token_trie *t);

/* A state at the start of g's root rule. 0, CTN_ENOMEM, or CTN_ERANGE (the start alone
 * already has more than CTN_GRAMMAR_MAX_STACKS stacks). */
int ctn_grammar_state_new(ctn_grammar_state **out, const ctn_grammar *g);
void ctn_grammar_state_free(ctn_grammar_state *st);
/* Back to the start of the root rule (keeps the buffers). */
void ctn_grammar_state_reset(ctn_grammar_state *st);

/*
 * Advances the state by n bytes of UTF-8 (a token's piece; it may begin or end inside a
 * character). 0; CTN_EINVAL when the grammar cannot take them (the state is then
 * unchanged); CTN_ENOMEM or CTN_ERANGE (past CTN_GRAMMAR_MAX_STACKS; the state is unchanged
 * too). With commit false only checks.
 */
int ctn_grammar_accept(ctn_grammar_state *st, const char *bytes, size_t n, bool commit);
/* ctn_grammar_accept of token tok's piece in t; for an end-of-generation token, 0 when the
 * state is complete and CTN_EINVAL otherwise (nothing changes). */
int ctn_grammar_accept_token(ctn_grammar_state *st, const ctn_token_trie *t, int32_t tok);
/* Whether what was accepted so far is a whole sentence of the grammar (EOS may come). */
bool ctn_grammar_complete(const ctn_grammar_state *st);
/* Whether no more characters can come (every stack is complete). */
bool ctn_grammar_finished(const ctn_grammar_state *st);

/*
 * The tokens of t the state can take next: *ids (owned by the state, valid until its next
 * call) gets them in trie order, and the count is returned (0: none), or CTN_ENOMEM or
 * CTN_ERANGE (past CTN_GRAMMAR_MAX_STACKS somewhere in the walk).
 */
int64_t ctn_grammar_allowed(ctn_grammar_state *st, const ctn_token_trie *t, const int32_t **ids);
/*
 * Sets logits[i] to -inf for every token i (of t's n_tokens) the state cannot take; the
 * others are left as they are. Returns the number allowed (0: none), or ctn_grammar_allowed's
 * errors (the logits are then untouched).
 */
int64_t ctn_grammar_mask(ctn_grammar_state *st, const ctn_token_trie *t, float *logits);

#endif
