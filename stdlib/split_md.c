/*
 * The markdown splitter's way into the Markdown loader: a document without "section" is
 * sectioned by ctn_load_markdown first. Kept apart from split.c so that the splitters link
 * without the loaders.
 */
#include "split.h"

#include "error.h"

int ctn__split_md_sections(const ctn_val *doc, const char *name, ctn_val *sections, char *err,
                           size_t errcap);

int ctn__split_md_sections(const ctn_val *doc, const char *name, ctn_val *sections, char *err,
                           size_t errcap) {
    (void)doc;
    (void)sections;
    ctn__errf(err, errcap,
              "%s has no \"section\": sectioning it needs the Markdown loader, "
              "which this build lacks",
              name);
    return CTN_ENOTSUP;
}
