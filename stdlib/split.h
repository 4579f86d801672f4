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
 * when the chunk is a substring, which LangChain's merging nearly always gives; otherwise
 * start_index is where LangChain's add_start_index search finds it and end_index
 * start_index plus its length). Empty and all-blank chunks are dropped.
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
 * which tokens end (ascending; the last is n), through *ends (malloc'd by the callee; the
 * caller frees it) and *count. 0, or a CTN_E* code with a message in err.
 */
typedef int (*ctn_token_ends_fn)(void *ud, const char *s, size_t n, size_t **ends,
                                 size_t *count, char *err, size_t errcap);

typedef struct {
    size_t chunk_size;                 /* > 0 */
    size_t chunk_overlap;              /* < chunk_size */
    const char *const *separators;     /* NULL: "\n\n", "\n", " ", "" */
    size_t n_separators;
    ctn_keep_sep keep_separator;       /* CTN_KEEP_START */
    bool strip_whitespace;             /* true: chunks are trimmed of white space */
    ctn_token_ends_fn tokens;          /* NULL: lengths in code points */
    void *tokens_ud;
} ctn_split_opts;

/* LangChain's defaults: 4000, 200, the four separators, CTN_KEEP_START, strip, code points. */
ctn_split_opts ctn_split_defaults(void);

/* CTN_EINVAL with a message naming the setting when o cannot work with kind (overlap not
 * below the size, the token splitter without tokens). */
int ctn_split_check(ctn_split_kind kind, const ctn_split_opts *o, char *err, size_t errcap);

/*
 * The recursive splitter on one text: *chunks (an array of strings) with *starts (byte
 * offsets of each into text, or SIZE_MAX where a chunk is not found) and *n. Arrays are
 * malloc'd, as are the strings; the caller frees them. 0, CTN_ENOMEM, or a CTN_E* code of
 * the token callback.
 */
int ctn_split_text(const ctn_split_opts *o, const char *text, size_t len, char ***chunks,
                   size_t **starts, size_t *n, char *err, size_t errcap);

/*
 * Splits each document (or string: a document without metadata) of docs (an array) with kind
 * and appends the chunk documents to out. 0, or a CTN_E* code with a message naming the
 * document (its source) and leaving out as it was.
 */
int ctn_split_docs(ctn_split_kind kind, const ctn_split_opts *o, const ctn_val *docs,
                   ctn_val *out, char *err, size_t errcap);

/* "recursive", "markdown", "page", "token"; and back (-1 for an unknown name). */
const char *ctn_split_name(ctn_split_kind k);
int ctn_split_parse(const char *name);

#endif
