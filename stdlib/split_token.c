/*
 * Token boundaries from a vocabulary (split.h's ctn_split_vocab_tokens), for lengths in
 * tokens and the token splitter.
 *
 * The tokenizer gives ids, not offsets, so the boundaries are recovered from the pieces the
 * ids decode to (ctn_token_to_piece). Their concatenation is the text itself for byte-level
 * BPE, and the text after one space for SentencePiece vocabularies that add a space prefix;
 * in both cases each token ends where its piece ends. Anything else (an <unk> piece, " ⁇ ",
 * standing for a character the vocabulary lacks) is aligned token by token: a piece that
 * matches the text at the cursor moves it by its length, one that does not by one
 * character. Ends inside a character (byte tokens) move to the character's end, so every
 * range between ends is valid UTF-8.
 */
#include "split.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "unicode.h"
#include "vocab.h"

/* The piece of id in buf (cap bytes) or, when longer, in a malloc'd *big: its bytes and
 * length, or NULL (out of memory, or an id out of range). */
static const char *piece_of(const ctn_vocab *v, int32_t id, char *buf, size_t cap, char **big,
                            size_t *len) {
    int n = ctn_token_to_piece(v, id, buf, cap, 0, false);
    if (n < 0) return NULL;
    *len = (size_t)n;
    if ((size_t)n <= cap) return buf;
    free(*big);
    *big = ctn__malloc((size_t)n);
    if (*big == NULL) return NULL;
    if (ctn_token_to_piece(v, id, *big, (size_t)n, 0, false) != n) return NULL;
    return *big;
}

int ctn_split_vocab_tokens(void *vocab, const char *s, size_t n, size_t **ends, size_t *count,
                           char *err, size_t errcap) {
    const ctn_vocab *v = vocab;
    *ends = NULL;
    *count = 0;
    int32_t *ids = NULL;
    size_t nid = 0;
    int rc = ctn_tokenize(v, s, n, false, false, &ids, &nid);
    if (rc < 0) {
        if (err != NULL && errcap > 0)
            ctn__errf(err, errcap, "tokenizing %zu bytes failed: %s", n, ctn_strerror(rc));
        free(ids);
        return rc;
    }
    size_t *e = ctn__malloc((nid ? nid : 1) * sizeof *e);
    char buf[256], *big = NULL;
    if (e == NULL) goto nomem;
    /* First pass: does the stream of pieces equal the text, or a space and the text? */
    size_t total = 0;
    bool eq0 = true, eq1 = true;
    for (size_t i = 0; i < nid; i++) {
        size_t len;
        const char *p = piece_of(v, ids[i], buf, sizeof buf, &big, &len);
        if (p == NULL) goto nomem;
        for (size_t k = 0; k < len && (eq0 || eq1); k++) {
            size_t at = total + k;
            if (eq0 && (at >= n || s[at] != p[k])) eq0 = false;
            if (eq1 && (at == 0 ? p[k] != ' ' : at - 1 >= n || s[at - 1] != p[k])) eq1 = false;
        }
        total += len;
        e[i] = total;
    }
    if (eq0 && total == n) {
        /* e[] is right as it is. */
    } else if (eq1 && total == n + 1) {
        for (size_t i = 0; i < nid; i++)
            e[i] = e[i] > 0 ? e[i] - 1 : 0;
    } else {
        size_t c = 0;
        for (size_t i = 0; i < nid; i++) {
            size_t len;
            const char *p = piece_of(v, ids[i], buf, sizeof buf, &big, &len);
            if (p == NULL) goto nomem;
            if (len > 0 && len <= n - c && memcmp(s + c, p, len) == 0) {
                c += len;
            } else if (i == 0 && len > 1 && p[0] == ' ' && len - 1 <= n - c &&
                       memcmp(s + c, p + 1, len - 1) == 0) {
                c += len - 1;
            } else if (c < n) {
                int k = ctn__utf8_char((const unsigned char *)s + c, n - c);
                c += k > 0 ? (size_t)k : 1;
            }
            e[i] = c;
        }
    }
    /* Ends on character boundaries, in order, the last at the end of the text. */
    for (size_t i = 0; i < nid; i++) {
        size_t x = e[i] < n ? e[i] : n;
        while (x < n && ((unsigned char)s[x] & 0xC0) == 0x80)
            x++;
        if (i > 0 && x < e[i - 1]) x = e[i - 1];
        e[i] = x;
    }
    if (nid > 0) e[nid - 1] = n;
    free(big);
    free(ids);
    *ends = e;
    *count = nid;
    return 0;
nomem:
    free(big);
    free(ids);
    free(e);
    if (err != NULL && errcap > 0) ctn__errf(err, errcap, "out of memory");
    return CTN_ENOMEM;
}
