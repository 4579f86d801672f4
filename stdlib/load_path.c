/*
 * ctn_load_path (loader.h): a file read whole and handed to the loader its extension (or
 * the caller) names. Apart from the loaders so that each of them links alone.
 */
#include <stdlib.h>

#include "error.h"
#include "loader.h"

int ctn_load_data(const ctn_load_ctx *c, ctn_loader_kind k, const ctn_json_sel *sel,
                  const char *data, size_t n, ctn_val *docs, char *err, size_t errcap) {
    if (k == CTN_LOADER_NONE) k = ctn_loader_for(c->source);
    ctn_load_ctx ctx = *c;
    ctn_json_sel whole = {0};
    int rc;
    switch (k) {
    case CTN_LOADER_TEXT: rc = ctn_load_text(&ctx, data, n, docs, err, errcap); break;
    case CTN_LOADER_MARKDOWN: rc = ctn_load_markdown(&ctx, data, n, docs, err, errcap); break;
    case CTN_LOADER_JSON:
    case CTN_LOADER_JSONL:
        whole = sel != NULL ? *sel : (ctn_json_sel){0};
        whole.lines = k == CTN_LOADER_JSONL;
        rc = ctn_load_json(&ctx, &whole, data, n, docs, err, errcap);
        break;
    case CTN_LOADER_PDF: rc = ctn_load_pdf(&ctx, data, n, docs, err, errcap); break;
    default:
        ctn__errf(err, errcap, "%s: no loader for this kind of file (.txt, .md, .json, .jsonl, "
                  ".pdf)", c->source);
        rc = CTN_ENOTSUP;
        break;
    }
    return rc;
}

int ctn_load_path(const ctn_load_ctx *c, ctn_loader_kind k, const ctn_json_sel *sel,
                  const char *path, ctn_val *docs, char *err, size_t errcap) {
    ctn_load_ctx ctx = c != NULL ? *c : (ctn_load_ctx){0};
    if (ctx.source == NULL) ctx.source = path;
    if (k == CTN_LOADER_NONE && (k = ctn_loader_for(path)) == CTN_LOADER_NONE)
        return ctn_load_data(&ctx, k, sel, "", 0, docs, err, errcap);
    char *data = NULL;
    size_t n = 0;
    int rc = ctn_load_file(path, &data, &n, err, errcap);
    if (rc < 0) return rc;
    rc = ctn_load_data(&ctx, k, sel, data, n, docs, err, errcap);
    free(data);
    return rc;
}
