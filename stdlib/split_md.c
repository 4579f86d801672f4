/*
 * The markdown splitter's way into the Markdown loader: a document without "section" is
 * sectioned by ctn_load_markdown first, and each section is then split as a section is.
 * Kept apart from split.c so that the rest of the splitters stands on its own.
 */
#include "split.h"

#include "error.h"
#include "loader.h"

int ctn__split_md_sections(const ctn_split_opts *o, const char *text, size_t n, const char *name,
                           ctn_val *sections, char *err, size_t errcap);

/* The loader's warnings (invalid bytes and the like) go where the splitter's go; the
 * messages already name the source. */
int ctn__split_md_sections(const ctn_split_opts *o, const char *text, size_t n, const char *name,
                           ctn_val *sections, char *err, size_t errcap) {
    ctn_load_ctx c = {.source = name, .warn = o->warn, .warn_ud = o->warn_ud};
    return ctn_load_markdown(&c, text, n, sections, err, errcap);
}
