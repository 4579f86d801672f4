/*
 * Document loaders: the bytes of a file in, chain documents (value.h, CTN_VDOC) out, each
 * with its metadata. Text, Markdown (md4c, GFM tables; YAML front matter through libyaml),
 * JSON and JSON Lines (records chosen by a path), PDF (poppler).
 *
 *     ctn_val *docs = ctn_val_arr();
 *     ctn_load_ctx c = {.source = "notes/install.md"};
 *     char err[256];
 *     int rc = ctn_load_markdown(&c, data, n, docs, err, sizeof err);
 *     if (rc < 0) fprintf(stderr, "%s\n", err);   // names the file and where in it
 *     ctn_val_unref(docs);
 *
 * A loader appends its documents to docs (an array) and returns 0, or returns a CTN_E* code
 * with a message naming the source and the place (byte offset, line, page, record) and
 * leaves docs as it was. The functions are pure: no file access, no globals, safe to call on
 * any thread (the chain nodes and the ingest run them on the libuv thread pool); reading
 * the file is ctn_load_file's job, choosing a loader by extension ctn_loader_for's.
 *
 * Text is decoded by ctn_text_decode first (every loader but PDF, whose text comes from
 * poppler as UTF-8 and is checked by the page): UTF-8 with or without a BOM, UTF-16 LE/BE
 * with a BOM (the BOM dropped); each maximal run of bytes that are not valid (strict UTF-8;
 * unpaired surrogates and an odd last byte in UTF-16) becomes one U+FFFD and one warning,
 * "notes/a.txt: invalid UTF-8 at byte 1234 (3 bytes replaced by U+FFFD)", the offset
 * counting the file's bytes from 0. Document text is always valid UTF-8; a NUL is valid and
 * kept.
 *
 * Metadata every loader sets: "source" (c->source). Then, by loader:
 *   text      one document.
 *   markdown  one document per section, as LangChain's MarkdownHeaderTextSplitter cuts them:
 *             every heading (ATX or setext) outside quotes and lists starts one, up to
 *             the next heading of any level; the heading line itself is not in the text
 *             (LangChain's strip_headers), and a section without text gives no document.
 *             Metadata: "section" (the path of enclosing headings, "Install > Linux"; ""
 *             before the first heading), "headings" (the path as an array of plain-text
 *             headings), "level" (the heading's, 1-6; 0 before the first heading); the
 *             front matter's fields; "images" (an array of {alt, src}) when the section
 *             has images, whose alt text stays in the text; "blocks", when the section has
 *             code or tables: an array of byte ranges of the text that a splitter must
 *             treat as units, [start, end, "code"] (the whole fenced block: never split
 *             inside) and [start, end, "table", header_end] (split only between rows, and
 *             repeat text[start, header_end), the header row and its delimiter line, in
 *             every piece; header_end is where the first body row starts, end when there
 *             is none). Ranges begin at a line's start and end after the block's last
 *             byte, before its newline.
 *             The text is the parse tree written back as plain Markdown: paragraphs apart
 *             by a blank line, emphasis markers dropped (code spans keep their text),
 *             links as their text, images as their alt text, "- " / "1. " items indented
 *             by nesting, "> " quotes, code as ``` fences with the language, tables as
 *             "| a | b |" rows under a "| --- | --- |" line ('|' in a cell as "\|"),
 *             HTML kept as written; entities decoded (numeric ones and amp lt gt quot apos
 *             nbsp copy reg hellip mdash ndash; others stay as written).
 *             Front matter: a first line "---" up to a line "---" or "...", read by
 *             libyaml; it must be one mapping (at most 64 fields, 64 KiB, no aliases)
 *             whose plain scalars resolve by the YAML 1.2 core schema (null, booleans,
 *             64-bit integers, doubles; everything else, quoted or tagged, a string).
 *             Fields named like the loader's own keys are dropped with a warning. Errors
 *             (CTN_EFORMAT): invalid YAML (line and column of the file), front matter that
 *             is not a mapping, quotes and lists nested more than 32 deep.
 *   json      one document per chosen value; "pointer" (its JSON Pointer, "/items/3/body"),
 *             "line" (from 1) for JSON Lines, and the fields named in meta_fields.
 *   pdf       one document per page, "page" (from 1), "pages", "title" and "author" when
 *             the document info has them, "images" (an array of {x, y, width, height} in
 *             points from the top left) when the page has images; a page without a text
 *             layer gets "no_text": true, an empty text and a warning naming the page (it
 *             keeps its place, so document i is page i + 1); a PDF without pages gives no
 *             documents and a warning. The text is in poppler's reading order (columns one
 *             after the other), a table row on one line with a tab between its cells, an
 *             empty line where a gap wider than a line separates two lines (stdlib/load_pdf.c
 *             says exactly how).
 */
#ifndef CTN_LOADER_H
#define CTN_LOADER_H

#include <stdbool.h>
#include <stddef.h>

#include "value.h"

typedef struct {
    const char *source; /* path or name, for "source" and every message; not NULL */
    /* Warnings (invalid bytes, an empty page): the message names the source and the place.
     * NULL: they are dropped. Called on the loader's thread. */
    void (*warn)(void *ud, const char *msg);
    void *warn_ud;
} ctn_load_ctx;

/*
 * Decodes n bytes to UTF-8 as described above: *out (malloc'd, NUL-terminated; the caller
 * frees it) and *outlen. 0, CTN_ENOMEM, or CTN_EINVAL (c, its source, out or outlen NULL).
 * A UTF-16 text of odd length has its last byte reported and replaced.
 */
int ctn_text_decode(const ctn_load_ctx *c, const char *data, size_t n, char **out,
                    size_t *outlen);

int ctn_load_text(const ctn_load_ctx *c, const char *data, size_t n, ctn_val *docs, char *err,
                  size_t errcap);
int ctn_load_markdown(const ctn_load_ctx *c, const char *data, size_t n, ctn_val *docs,
                      char *err, size_t errcap);

/*
 * Which part of each JSON record is the text, as a JSON Pointer (RFC 6901: "/items/0/body",
 * "" for the whole record, "~1" and "~0" for '/' and '~') in which a segment "*" takes
 * every element of an array (or member of an object), so "/items/" "*" "/body" gives one
 * document per item ("*" over an empty one gives none). A string is the text as it is;
 * another value its compact JSON. A meta field is a pointer without "*"; a record that
 * lacks it gets no such key, and its name may not be "source", "pointer" or "line", nor
 * that of another field (CTN_EINVAL).
 */
typedef struct {
    const char *text;               /* NULL: "" (the whole record) */
    const char *const *meta_fields; /* pointers, each stored under its last segment's name */
    size_t n_meta_fields;
    bool lines; /* JSON Lines: one value per line (blank lines skipped), each a record */
} ctn_json_sel;

/*
 * JSON (one value, one record) or JSON Lines (each line a record; lines of white space
 * skipped). A pointer that matches nothing in a record is an error naming the record (its
 * line for JSON Lines) and the first segment that did not match (CTN_ENOENT, or CTN_ETYPE
 * where the value is not a container): "data.jsonl: line 7: /items/" "*" "/body: no member
 * \"body\" in /items/2"; a malformed value is CTN_EFORMAT with its line and column. One bad
 * record fails the whole file. meta_fields are resolved against the value that holds the
 * text's last segment (for "/items/" "*" "/body", each item), else against the record.
 */
int ctn_load_json(const ctn_load_ctx *c, const ctn_json_sel *sel, const char *data, size_t n,
                  ctn_val *docs, char *err, size_t errcap);

/* PDF through poppler: CTN_EFORMAT for a broken file (with poppler's reason), CTN_ENOTSUP for
 * an encrypted one that needs a password ("x.pdf: encrypted (a password is needed)"). The
 * bytes are read in place (borrowed for the call). Poppler and GLib abort when their own
 * memory runs out; only ours gives CTN_ENOMEM. */
int ctn_load_pdf(const ctn_load_ctx *c, const char *data, size_t n, ctn_val *docs, char *err,
                 size_t errcap);

/* ---- files -------------------------------------------------------------------------------- */

typedef enum {
    CTN_LOADER_NONE,
    CTN_LOADER_TEXT,
    CTN_LOADER_MARKDOWN,
    CTN_LOADER_JSON,
    CTN_LOADER_JSONL,
    CTN_LOADER_PDF,
} ctn_loader_kind;

/* The loader for a path by its extension (.txt .text .md .markdown .json .jsonl .ndjson .pdf,
 * any case); CTN_LOADER_NONE for others. */
ctn_loader_kind ctn_loader_for(const char *path);
/* "text", "markdown", "json", "jsonl", "pdf", "none". */
const char *ctn_loader_name(ctn_loader_kind k);

/* The whole file at path: *data (malloc'd, with a NUL after it) and *n. CTN_EIO with a
 * message naming the path and the system's reason, also for a folder. */
int ctn_load_file(const char *path, char **data, size_t *n, char *err, size_t errcap);

/* Loads n bytes with loader k (CTN_LOADER_NONE: by c->source's extension; sel for JSON, NULL
 * for whole records). CTN_ENOTSUP naming the source when no loader fits. */
int ctn_load_data(const ctn_load_ctx *c, ctn_loader_kind k, const ctn_json_sel *sel,
                  const char *data, size_t n, ctn_val *docs, char *err, size_t errcap);

/* Loads the file at path with loader k (CTN_LOADER_NONE: by extension; sel for JSON, NULL
 * for the whole record). */
int ctn_load_path(const ctn_load_ctx *c, ctn_loader_kind k, const ctn_json_sel *sel,
                  const char *path, ctn_val *docs, char *err, size_t errcap);

/*
 * The files under root (a root that is a file is itself, whatever the glob) whose path
 * relative to root matches glob (fnmatch with FNM_PATHNAME, a segment "**" matching any
 * number of folders, none included; NULL: every file with a known extension), each as root
 * "/" relative path, sorted by bytes, symbolic links to folders not followed. Names starting
 * with '.' are skipped unless a glob segment starting with '.' names them. *paths (a
 * malloc'd array of malloc'd strings, NULL when there are none; free each and it) and *n.
 * CTN_EIO naming what could not be read; CTN_EINVAL for an empty glob.
 */
int ctn_list_files(const char *root, const char *glob, char ***paths, size_t *n, char *err,
                   size_t errcap);

#endif
