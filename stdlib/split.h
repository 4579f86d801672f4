/*
 * Text splitters: documents in, chunks out, each chunk a document that keeps its source's
 * metadata and says where in that document it lies.
 *
 *     ctn_split_opts o = ctn_split_defaults();          // LangChain's: 4000 / 200
 *     o.chunk_size = 500, o.chunk_overlap = 50;
 *     ctn_val *chunks = ctn_val_arr();
 *     char err[256];
 *     if (ctn_split_docs(CTN_SPLIT_RECURSIVE, &o, docs, chunks, err, sizeof err) < 0) ...
 *     ctn_val_unref(chunks);
 *
 * Kinds:
 *   recursive  LangChain's RecursiveCharacterTextSplitter: separators tried in order ("\n\n",
 *              "\n", " ", ""), pieces merged up to chunk_size with chunk_overlap carried
 *              over, the same chunks as LangChain.js's @langchain/textsplitters on the same
 *              text and settings (lengths in code points, or in tokens with a length
 *              function).
 *   markdown   by heading (a document the Markdown loader made is already one section; any
 *              other is sectioned as Markdown first), then sections longer than chunk_size
 *              are cut between the loader's blocks: code blocks never inside, tables between
 *              rows with the header repeated in each piece, other text recursively.
 *   page       one chunk per page (a PDF loader's document, or the text between form feeds
 *              '\f' of another), a page longer than chunk_size cut recursively.
 *   token      windows of chunk_size tokens moving by chunk_size - chunk_overlap (LangChain's
 *              TokenTextSplitter), cut at token boundaries in the text; needs tokens.
 *
 * Every chunk is a document whose metadata is its document's (less the loader's "blocks")
 * plus "chunk" (its index within the document, from 0) and "start_index" / "end_index"
 * (code point offsets into the document's text: text[start_index, end_index) is the chunk
 * when the chunk is a substring of the text where it was taken from, which it always is
 * when separators are kept; otherwise, for pieces joined by a dropped separator where the
 * text had a run of them, and for a table's later pieces, which repeat its header, they
 * bound the text it was made from, trimmed). The offsets are tracked, not searched for, so
 * a chunk that also occurs earlier in the text still gets its own place. Empty and
 * all-blank chunks are dropped.
 *
 * Where catena differs from LangChain.js 1.0.2, on purpose:
 *   - lengths are code points (LangChain.js: UTF-16 units, text.length), and splitting on ""
 *     gives code points, so a character outside the BMP is never cut in two;
 *   - CTN_KEEP_END puts the separator at the end of the piece before it, as Python
 *     LangChain's keep_separator="end" does (LangChain.js's keepSeparator is a boolean, and
 *     "end" there acts as true);
 *   - past the last separator, when a piece is still too long, LangChain.js splits it into
 *     characters, and with keep_separator=false then fails (it reads undefined.length);
 *     catena joins those characters directly, as LangChain.js does when separators are
 *     kept;
 *   - strip_whitespace=false is Python LangChain's option (LangChain.js always trims); the
 *     trimmed white space is JavaScript's (String.prototype.trim) either way.
 * Still as LangChain.js: a separator counts its code points in the merge even when lengths
 * are tokens (currentDoc.length * separator.length), overlapping occurrences of a kept
 * separator each start a piece ("a\n\n\nb" on "\n\n" gives "a", "\n", "\n\nb"), and a
 * piece that cannot be split further is kept whole and untrimmed.
 */
#ifndef CTN_SPLIT_H
#define CTN_SPLIT_H

#include <stdbool.h>
#include <stddef.h>

#include "value.h"

typedef enum {
    CTN_SPLIT_RECURSIVE,
    CTN_SPLIT_MARKDOWN,
    CTN_SPLIT_PAGE,
    CTN_SPLIT_TOKEN,
} ctn_split_kind;

typedef enum {
    CTN_KEEP_START, /* the separator begins the next piece (LangChain's keep_separator=true) */
    CTN_KEEP_END,   /* it ends the previous piece (keep_separator="end") */
    CTN_KEEP_NONE,  /* dropped, and put back between merged pieces (keep_separator=false) */
} ctn_keep_sep;

/*
 * Tokens, for lengths in tokens and for the token splitter: the byte offsets in s[0, n) at
 * which tokens end (non-decreasing, since byte tokens of one character end at the same
 * character boundary; the last is n), through *ends (malloc'd by the callee; the caller
 * frees it) and *count. 0, or a CTN_E* code with a message in err.
 */
typedef int (*ctn_token_ends_fn)(void *ud, const char *s, size_t n, size_t **ends, size_t *count,
                                 char *err, size_t errcap);

/*
 * A ctn_token_ends_fn over a ctn_vocab (engine/vocab.h; pass the vocabulary as ud): the text
 * tokenized without BOS/EOS and without parsing special tokens, each token's end recovered
 * from the pieces the ids decode to and moved to the end of the character it falls in.
 * Thread-safe as the vocabulary is.
 */
int ctn_split_vocab_tokens(void *vocab, const char *s, size_t n, size_t **ends, size_t *count,
                           char *err, size_t errcap);

typedef struct {
    size_t chunk_size;             /* > 0 */
    size_t chunk_overlap;          /* < chunk_size */
    const char *const *separators; /* NULL: "\n\n", "\n", " ", "" */
    size_t n_separators;
    ctn_keep_sep keep_separator; /* CTN_KEEP_START */
    bool strip_whitespace;       /* true: chunks are trimmed of white space */
    ctn_token_ends_fn tokens;    /* NULL: lengths in code points */
    void *tokens_ud;
    /* A chunk longer than chunk_size (LangChain's console.warn; here also a piece that no
     * separator can split, an oversized code block or table row): the message names the
     * document and both lengths. NULL: dropped. Called on the splitter's thread. */
    void (*warn)(void *ud, const char *msg);
    void *warn_ud;
} ctn_split_opts;

/* LangChain's defaults: 4000, 200, the four separators, CTN_KEEP_START, strip, code points. */
ctn_split_opts ctn_split_defaults(void);

/* CTN_EINVAL with a message naming the setting when o cannot work with kind (chunk_size 0,
 * overlap not below the size, the token splitter without tokens, a NULL separator or one
 * that is not UTF-8, more than 256 separators: the recursion goes one level deeper per separator).
 */
int ctn_split_check(ctn_split_kind kind, const ctn_split_opts *o, char *err, size_t errcap);

/*
 * The recursive splitter on one text: *chunks (an array of strings) with *starts (byte
 * offsets of each into text, or SIZE_MAX where a chunk is not a substring of the text where
 * it was taken from) and *n. These are LangChain.js's splitText chunks, blank ones included
 * (a piece that cannot be split further is kept as it is). Arrays are malloc'd, as are the
 * strings; the caller frees them. 0, CTN_EINVAL (the options), CTN_ENOMEM, or a CTN_E* code
 * of the token callback.
 */
int ctn_split_text(const ctn_split_opts *o, const char *text, size_t len, char ***chunks,
                   size_t **starts, size_t *n, char *err, size_t errcap);

/*
 * Splits each document (or string: a document without metadata) of docs (an array) with kind
 * and appends the chunk documents to out. 0, or a CTN_E* code with a message naming the
 * document (its "source", else its index: "docs[3]") and leaving out as it was.
 *
 * page      "page" (from 1) is added to the pieces between form feeds; a document that has
 *           "page" keeps it and is not cut at form feeds.
 * markdown  a document with "section" is one section, cut between its "blocks" as above:
 *           the text between blocks split recursively, a code block (or a block of a kind
 *           it does not know) kept whole however long, a table longer than chunk_size cut
 *           into pieces of whole rows, each starting with text[start, header_end); then
 *           consecutive pieces that are ranges of the text are packed while they fit. A
 *           table's rows are measured one by one (in tokens, the sum of the rows' counts).
 *           A malformed "blocks" is CTN_EFORMAT. A document without "section" is sectioned
 *           by ctn_load_markdown first: its chunks carry its metadata with the section's
 *           over it (a "source" only when it had one), "chunk" counts through all its
 *           sections, and the offsets are into the section's text, which the loader
 *           writes anew (heading lines out, the Markdown normalised).
 * token     chunks are trimmed when strip_whitespace is set (LangChain's never are).
 */
int ctn_split_docs(ctn_split_kind kind, const ctn_split_opts *o, const ctn_val *docs, ctn_val *out,
                   char *err, size_t errcap);

/* "recursive", "markdown", "page", "token"; and back (-1 for an unknown name). */
const char *ctn_split_name(ctn_split_kind k);
int ctn_split_parse(const char *name);

#endif
