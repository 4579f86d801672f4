/*
 * The PDF loader (loader.h): one document per page, through poppler's GLib binding.
 *
 * Text. poppler_page_get_text gives the page in poppler's reading order: text blocks are
 * grouped into flows, so the columns of a multi-column page come one after the other, not
 * interleaved line by line, and a table that poppler recognises comes row by row, one line
 * per row. Its physical layout mode (pdftotext -layout) is not in the GLib API, and would
 * interleave columns anyway. Two things poppler's text lacks are put back from the box of
 * every character (poppler_page_get_text_layout, one box per character of that text):
 *   - the cells of a table row come glued together ("Model" "Layers" as "ModelLayers"),
 *     because poppler joins the blocks of a row without a separator; so a gap between two
 *     characters of one line that is wider than the line is high becomes a tab (whether
 *     poppler put a space there or nothing), and a narrower gap with nothing in it (more
 *     than a fifth of the height) a space;
 *   - paragraphs are not separated; so a line whose top is more than its own height below
 *     the bottom of the line before it gets an empty line before it, where splitters that
 *     cut at blank lines find it. A line that starts higher up (the next column) does not.
 * When the boxes do not match the text one to one (poppler's text for some fonts), the text
 * is taken as it is, without either. Then: lines lose their trailing white space, form
 * feeds, carriage returns and vertical tabs are dropped, blank lines at the start and end
 * go, and bytes that are not valid UTF-8 become U+FFFD, reported through warn with the page
 * (poppler 22.12 already writes U+FFFD for what a broken ToUnicode map says that UTF-8
 * cannot hold, such as a lone surrogate; the check stays because our text must be valid
 * whatever poppler's version does). A ToUnicode map that says U+0000 ends the page's text
 * there: poppler's text is a C string, and the GLib API has no other.
 *
 * A page without text (none, or only white space) still gives a document, with "no_text":
 * true and an empty text, so that a page's document is always at the same index as its
 * number; a warning names the page. Images are the boxes poppler's image mapping reports,
 * in the order the page draws them, in points from the top left of the page as poppler
 * shows it, rounded to 1/100 point.
 *
 * Memory. Our allocations (values, the text being built) go through the allocation hook and
 * fail cleanly; poppler and GLib allocate with g_malloc, which aborts when memory runs out
 * (GLib's policy), and cannot be made to fail.
 *
 * Threads and global state. Each call opens its own PopplerDocument from the caller's bytes
 * (a static GBytes: no copy, released before the call returns) and shares nothing with
 * other calls, so calls on several threads at once are safe. Poppler's own process-wide
 * state is its GlobalParams, created by the first open document and freed with the last,
 * under poppler's lock, and the font library its image pass loads once. Poppler reports
 * problems in a file through g_log in the "Poppler" domain at the INFO level, which GLib's
 * default handler prints only when G_MESSAGES_DEBUG names the domain; we install no handler
 * (GLib's handlers are process-wide, and the application may have its own), so an
 * application that logs GLib's INFO messages sees them.
 */
#include <glib.h>
#include <math.h>
#include <poppler.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "loader.h"
#include "str.h"
#include "unicode.h"
#include "value.h"

static void warnf(const ctn_load_ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Warnings are formatted on the stack, so that reporting one never allocates. */
static void warnf(const ctn_load_ctx *c, const char *fmt, ...) {
    if (c->warn == NULL) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->warn(c->warn_ud, msg);
}

static bool is_blank(unsigned char ch) {
    return ch == ' ' || ch == '\t' || ch == '\f' || ch == '\r' || ch == '\v';
}

/*
 * The length of the character at p (left bytes there). With boxes, it is counted as poppler
 * counts characters, by the lead byte, so that the n-th character meets the n-th box even
 * where its bytes are not valid; without, it is the strict length, or one byte.
 */
static size_t char_len(const unsigned char *p, size_t left, bool by_lead) {
    if (by_lead) {
        size_t u = ctn__utf8_len(*p);
        return u > left ? left : u;
    }
    int r = ctn__utf8_char(p, left);
    return r > 0 ? (size_t)r : 1;
}

static size_t count_chars(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; k++)
        i += char_len((const unsigned char *)s + i, n - i, true);
    return k;
}

/* The character at p (u bytes) if it is valid UTF-8, else a U+FFFD for each of its bytes. */
static void put_char(ctn_strbuf *b, const char *p, size_t u, size_t *n_bad) {
    if (ctn__utf8_char((const unsigned char *)p, u) == (int)u) {
        ctn_sb_put(b, p, u);
        return;
    }
    for (size_t j = 0; j < u; j++)
        ctn_sb_put(b, "\xEF\xBF\xBD", 3);
    *n_bad += u;
}

/*
 * Writes the n bytes of poppler's text s to b as the file comment says: r is the box of each
 * character (NULL: none are used). *n_bad counts the bytes replaced by U+FFFD.
 */
static void normalise(ctn_strbuf *b, const char *s, size_t n, const PopplerRectangle *r,
                      size_t *n_bad) {
    bool any = false;        /* something visible was written */
    size_t n_nl = 0;         /* line breaks waiting for the next visible character */
    size_t ws0 = 0, ws1 = 0; /* white space waiting on this line: bytes [ws0, ws1) of s */
    bool on_line = false;    /* the current line has a visible character; prev is its last */
    size_t prev = 0;
    bool have_above = false; /* above: the bottom of the last line that had text */
    double above = 0, bottom = 0;
    for (size_t i = 0, k = 0; i < n; k++) {
        const unsigned char ch = (unsigned char)s[i];
        if (ch == '\n') {
            if (on_line) have_above = true, above = bottom;
            on_line = false;
            ws0 = ws1 = 0;
            n_nl++, i++;
            continue;
        }
        if (is_blank(ch)) {
            if (ws1 != i) ws0 = i;
            ws1 = i + 1;
            i++;
            continue;
        }
        const size_t u = char_len((const unsigned char *)s + i, n - i, r != NULL);
        const double h = r != NULL ? r[k].y2 - r[k].y1 : 0;
        if (any && n_nl > 0) {
            for (size_t j = 0; j < n_nl; j++)
                ctn_sb_put(b, "\n", 1);
            if (n_nl == 1 && have_above && h > 0 && r[k].y1 - above > h) ctn_sb_put(b, "\n", 1);
        }
        n_nl = 0;
        const double gap = on_line && r != NULL ? r[k].x1 - r[prev].x2 : 0;
        if (h > 0 && gap > h) {
            ctn_sb_put(b, "\t", 1);
        } else if (ws1 > ws0) {
            for (size_t j = ws0; j < ws1; j++)
                if (s[j] == ' ' || s[j] == '\t') ctn_sb_put(b, s + j, 1);
        } else if (h > 0 && gap > 0.2 * h) {
            ctn_sb_put(b, " ", 1);
        }
        ws0 = ws1 = 0;
        put_char(b, s + i, u, n_bad);
        if (r != NULL) bottom = on_line && bottom > r[k].y2 ? bottom : r[k].y2;
        on_line = any = true;
        prev = k;
        i += u;
    }
}

/* Title or author: trimmed, valid UTF-8, or NULL when empty; *rc CTN_ENOMEM on failure. */
static ctn_val *info_string(gchar *g, size_t *n_bad, int *rc) {
    if (g == NULL) return NULL;
    const char *s = g;
    size_t n = strlen(s);
    while (n > 0 && (is_blank((unsigned char)*s) || *s == '\n'))
        s++, n--;
    while (n > 0 && (is_blank((unsigned char)s[n - 1]) || s[n - 1] == '\n'))
        n--;
    ctn_val *v = NULL;
    if (n > 0) {
        ctn_strbuf b = {0};
        for (size_t i = 0; i < n;) {
            const size_t u = char_len((const unsigned char *)s + i, n - i, false);
            put_char(&b, s + i, u, n_bad);
            i += u;
        }
        char *t = ctn_sb_take(&b);
        v = t != NULL ? ctn_val_cstr(t) : NULL;
        free(t);
        if (v == NULL) *rc = CTN_ENOMEM;
    }
    g_free(g);
    return v;
}

static double round2(double x) {
    return round(x * 100) / 100;
}

static int by_image_id(const void *a, const void *b) {
    const PopplerImageMapping *x = *(PopplerImageMapping *const *)a;
    const PopplerImageMapping *y = *(PopplerImageMapping *const *)b;
    return (x->image_id > y->image_id) - (x->image_id < y->image_id);
}

/* The page's images as an array of {x, y, width, height}, or NULL in *out when it has none.
 * 0 or CTN_ENOMEM. */
static int page_images(PopplerPage *page, ctn_val **out) {
    *out = NULL;
    GList *list = poppler_page_get_image_mapping(page);
    const guint n = g_list_length(list);
    if (n == 0) {
        poppler_page_free_image_mapping(list);
        return 0;
    }
    /* Poppler lists the images last drawn first; sorted by id, they come in drawing order. */
    PopplerImageMapping **m = g_new(PopplerImageMapping *, n);
    guint i = 0;
    for (GList *l = list; l != NULL; l = l->next)
        m[i++] = l->data;
    qsort(m, n, sizeof *m, by_image_id);
    ctn_val *arr = ctn_val_arr();
    int rc = arr != NULL ? 0 : CTN_ENOMEM;
    for (i = 0; i < n && rc == 0; i++) {
        const PopplerRectangle *a = &m[i]->area;
        ctn_val *o = ctn_val_obj();
        rc = o != NULL ? 0 : CTN_ENOMEM;
        if (rc == 0) rc = ctn_val_set(o, "x", ctn_val_num(round2(fmin(a->x1, a->x2))));
        if (rc == 0) rc = ctn_val_set(o, "y", ctn_val_num(round2(fmin(a->y1, a->y2))));
        if (rc == 0) rc = ctn_val_set(o, "width", ctn_val_num(round2(fabs(a->x2 - a->x1))));
        if (rc == 0) rc = ctn_val_set(o, "height", ctn_val_num(round2(fabs(a->y2 - a->y1))));
        if (rc == 0)
            rc = ctn_val_push(arr, o);
        else
            ctn_val_unref(o);
    }
    g_free(m);
    poppler_page_free_image_mapping(list);
    if (rc < 0) {
        ctn_val_unref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/* The text of page (1-based number no) into *text (malloc'd) and *len. 0 or CTN_ENOMEM. */
static int page_text(const ctn_load_ctx *c, PopplerPage *page, int no, char **text, size_t *len) {
    gchar *s = poppler_page_get_text(page);
    const size_t n = s != NULL ? strlen(s) : 0;
    PopplerRectangle *r = NULL;
    guint nr = 0;
    if (n > 0 && poppler_page_get_text_layout(page, &r, &nr) && count_chars(s, n) != nr) {
        g_free(r);
        r = NULL;
    }
    ctn_strbuf b = {0};
    size_t n_bad = 0;
    normalise(&b, s != NULL ? s : "", n, r, &n_bad);
    g_free(r);
    g_free(s);
    *len = b.len;
    *text = ctn_sb_take(&b);
    if (*text == NULL) return CTN_ENOMEM;
    if (n_bad > 0)
        warnf(c, "%s: page %d: %zu bytes of poppler's text were not valid UTF-8 (now U+FFFD)",
              c->source, no, n_bad);
    return 0;
}

/* The document of page index i (0-based) of pages, with the metadata loader.h lists. */
static int page_doc(const ctn_load_ctx *c, PopplerDocument *pdf, int i, int pages, ctn_val *title,
                    ctn_val *author, ctn_val **out, char *err, size_t errcap) {
    PopplerPage *page = poppler_document_get_page(pdf, i);
    if (page == NULL) {
        ctn__errf(err, errcap, "%s: page %d of %d cannot be read", c->source, i + 1, pages);
        return CTN_EFORMAT;
    }
    char *text = NULL;
    size_t len = 0;
    ctn_val *images = NULL;
    int rc = page_text(c, page, i + 1, &text, &len);
    if (rc == 0) rc = page_images(page, &images);
    g_object_unref(page);
    ctn_val *meta = rc == 0 ? ctn_val_obj() : NULL;
    if (rc == 0 && meta == NULL) rc = CTN_ENOMEM;
    if (rc == 0) rc = ctn_val_set(meta, "source", ctn_val_cstr(c->source));
    if (rc == 0) rc = ctn_val_set(meta, "page", ctn_val_int(i + 1));
    if (rc == 0) rc = ctn_val_set(meta, "pages", ctn_val_int(pages));
    if (rc == 0 && title != NULL) rc = ctn_val_set(meta, "title", ctn_val_ref(title));
    if (rc == 0 && author != NULL) rc = ctn_val_set(meta, "author", ctn_val_ref(author));
    if (rc == 0 && images != NULL) {
        rc = ctn_val_set(meta, "images", images);
        images = NULL;
    }
    if (rc == 0 && len == 0) rc = ctn_val_set(meta, "no_text", ctn_val_bool(1));
    if (rc == 0) {
        *out = ctn_val_doc(text, len, meta);
        meta = NULL;
        if (*out == NULL) rc = CTN_ENOMEM;
    }
    if (rc == 0 && len == 0)
        warnf(c, "%s: page %d has no text layer (scanned or image-only?)", c->source, i + 1);
    ctn_val_unref(images);
    ctn_val_unref(meta);
    free(text);
    if (rc == CTN_ENOMEM) ctn__errf(err, errcap, "%s: out of memory", c->source);
    return rc;
}

/* Appends every element of src to docs, or none of them (then CTN_ENOMEM). */
static int append_all(ctn_val *docs, const ctn_val *src) {
    const size_t n0 = docs->u.arr.n;
    for (size_t i = 0; i < src->u.arr.n; i++) {
        if (ctn_val_push(docs, ctn_val_ref(src->u.arr.items[i])) < 0) {
            while (docs->u.arr.n > n0)
                ctn_val_unref(docs->u.arr.items[--docs->u.arr.n]);
            return CTN_ENOMEM;
        }
    }
    return 0;
}

int ctn_load_pdf(const ctn_load_ctx *c, const char *data, size_t n, ctn_val *docs, char *err,
                 size_t errcap) {
    if (c == NULL || c->source == NULL || docs == NULL || docs->kind != CTN_VARR ||
        (data == NULL && n > 0)) {
        ctn__errf(err, errcap, "ctn_load_pdf: needs a context with a source, bytes and an array");
        return CTN_EINVAL;
    }
    /* Static: poppler reads the caller's bytes in place; the document is gone before we
     * return, and with it poppler's reference. */
    GBytes *bytes = g_bytes_new_static(n > 0 ? data : "", n);
    GError *ge = NULL;
    PopplerDocument *pdf = poppler_document_new_from_bytes(bytes, NULL, &ge);
    if (pdf == NULL) {
        int rc = CTN_EFORMAT;
        if (ge != NULL && ge->domain == POPPLER_ERROR && ge->code == POPPLER_ERROR_ENCRYPTED) {
            rc = CTN_ENOTSUP;
            ctn__errf(err, errcap, "%s: encrypted (a password is needed)", c->source);
        } else {
            ctn__errf(err, errcap, "%s: %s", c->source,
                      ge != NULL ? ge->message : "poppler cannot read it");
        }
        g_clear_error(&ge);
        g_bytes_unref(bytes);
        return rc;
    }
    const int pages = poppler_document_get_n_pages(pdf);
    int rc = 0;
    size_t n_bad = 0;
    ctn_val *title = info_string(poppler_document_get_title(pdf), &n_bad, &rc);
    ctn_val *author = info_string(poppler_document_get_author(pdf), &n_bad, &rc);
    if (n_bad > 0)
        warnf(c, "%s: %zu bytes of the title or author were not valid UTF-8 (now U+FFFD)",
              c->source, n_bad);
    ctn_val *out = rc == 0 ? ctn_val_arr() : NULL;
    if (out == NULL) rc = CTN_ENOMEM;
    if (rc == CTN_ENOMEM) ctn__errf(err, errcap, "%s: out of memory", c->source);
    for (int i = 0; i < pages && rc == 0; i++) {
        ctn_val *d = NULL;
        rc = page_doc(c, pdf, i, pages, title, author, &d, err, errcap);
        if (rc == 0) rc = ctn_val_push(out, d);
        if (rc == CTN_ENOMEM) ctn__errf(err, errcap, "%s: out of memory", c->source);
    }
    ctn_val_unref(title);
    ctn_val_unref(author);
    g_object_unref(pdf);
    g_bytes_unref(bytes);
    if (rc == 0 && pages == 0) warnf(c, "%s: the PDF has no pages", c->source);
    if (rc == 0) {
        rc = append_all(docs, out);
        if (rc < 0) ctn__errf(err, errcap, "%s: out of memory", c->source);
    }
    ctn_val_unref(out);
    return rc;
}
