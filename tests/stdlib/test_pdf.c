/*
 * The PDF loader (stdlib/loader.h, ctn_load_pdf) on PDFs that tests/tools/mkpdf writes at run
 * time into a temporary folder (the tool is $MKPDF, else build/tools/mkpdf from the source
 * root; without it the tests fail), plus two made here byte by byte (no pages; a ToUnicode
 * map that yields a lone surrogate) and the committed tests/data/encrypted.pdf: page documents
 * and their metadata, the text of each page in order, table rows, two columns, images, a
 * page without text, broken and encrypted files, and allocation failures.
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "alloc.h"
#include "error.h"
#include "loader.h"
#include "mkpdf.h"
#include "test.h"
#include "unicode.h"
#include "value.h"

/* Warnings, as a loader reports them. */
typedef struct {
    char msg[8][256];
    int n;
} warnings;

static void collect(void *ud, const char *msg) {
    warnings *w = ud;
    if (w->n < 8) snprintf(w->msg[w->n], sizeof w->msg[0], "%s", msg);
    w->n++;
}

/* Loads mode's PDF as "MODE.pdf" into a new array (NULL after a failed check). */
static ctn_val *load_mode(const char *mode, warnings *w) {
    size_t n = 0;
    char *data = mkpdf_bytes(mode, &n, NULL);
    CHECK(data != NULL);
    if (data == NULL) {
        printf("  mkpdf did not make the '%s' PDF (is %s built?)\n", mode, mkpdf_path());
        return NULL;
    }
    char source[64];
    snprintf(source, sizeof source, "%s.pdf", mode);
    ctn_load_ctx c = {.source = source, .warn = w ? collect : NULL, .warn_ud = w};
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    const int rc = ctn_load_pdf(&c, data, n, docs, err, sizeof err);
    free(data);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0) {
        printf("  %s\n", err);
        ctn_val_unref(docs);
        return NULL;
    }
    return docs;
}

static const char *doc_text(const ctn_val *docs, size_t i) {
    const ctn_val *d = ctn_val_at(docs, i);
    return d != NULL && d->kind == CTN_VDOC ? d->u.doc.text->u.str.p : NULL;
}

static const ctn_val *meta(const ctn_val *docs, size_t i, const char *key) {
    const ctn_val *d = ctn_val_at(docs, i);
    return d != NULL ? ctn_val_get(d, key) : NULL;
}

static long long meta_int(const ctn_val *docs, size_t i, const char *key) {
    const ctn_val *v = meta(docs, i, key);
    return v != NULL && v->kind == CTN_VINT ? (long long)v->u.i : -999;
}

static const char *meta_str(const ctn_val *docs, size_t i, const char *key) {
    const ctn_val *v = meta(docs, i, key);
    return v != NULL && v->kind == CTN_VSTR ? v->u.str.p : NULL;
}

/* ---- PDFs made byte by byte ------------------------------------------------------------- */

/* A PDF of the n object bodies (object i + 1 is objs[i], the catalog first), with a correct
 * cross-reference table, into buf; its length. */
static size_t build_pdf(char *buf, size_t cap, const char *const *objs, int n) {
    size_t len = (size_t)snprintf(buf, cap, "%%PDF-1.4\n");
    long off[16];
    for (int i = 0; i < n; i++) {
        off[i] = (long)len;
        len += (size_t)snprintf(buf + len, cap - len, "%d 0 obj\n%s\nendobj\n", i + 1, objs[i]);
    }
    const long xref = (long)len;
    len += (size_t)snprintf(buf + len, cap - len, "xref\n0 %d\n0000000000 65535 f \n", n + 1);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%010ld 00000 n \n", off[i]);
    len += (size_t)snprintf(buf + len, cap - len,
                            "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%ld\n%%%%EOF\n", n + 1,
                            xref);
    return len;
}

/* ---- the tests ---------------------------------------------------------------------------- */

TEST(mkpdf_is_there) {
    const bool ok = access(mkpdf_path(), X_OK) == 0;
    if (!ok)
        printf("  %s is missing: build the mkpdf target or set MKPDF to the tool\n", mkpdf_path());
    CHECK(ok);
}

TEST(pages_metadata_and_text_in_order) {
    warnings w = {0};
    ctn_val *docs = load_mode("text", &w);
    if (docs == NULL) return;
    CHECK_EQ_INT(ctn_val_len(docs), 3);
    CHECK_EQ_INT(w.n, 0);
    for (size_t i = 0; i < 3; i++) {
        CHECK(ctn_val_at(docs, i)->kind == CTN_VDOC);
        CHECK_STR(meta_str(docs, i, "source"), "text.pdf");
        CHECK_EQ_INT(meta_int(docs, i, "page"), (long long)i + 1);
        CHECK_EQ_INT(meta_int(docs, i, "pages"), 3);
        CHECK_STR(meta_str(docs, i, "title"), "Catena test document");
        CHECK_STR(meta_str(docs, i, "author"), "The catena tests");
        CHECK(meta(docs, i, "images") == NULL);
        CHECK(meta(docs, i, "no_text") == NULL);
    }
    /* The heading is further from the first line than a line is high: a paragraph break. */
    CHECK_STR(doc_text(docs, 0), "Getting started\n\n"
                                 "Catena is a chain engine for language models written in C.\n"
                                 "It runs prompts, parsers and models as the nodes of a graph.\n"
                                 "Each node takes its input from the nodes before it.");
    CHECK_STR(doc_text(docs, 1), "Loading documents\n\n"
                                 "A loader turns the bytes of a file into documents.\n"
                                 "Every document carries its source and its page.");
    CHECK_STR(doc_text(docs, 2), "Splitting text\n\n"
                                 "Long documents are split into pieces that fit a prompt.\n"
                                 "The splitter keeps tables and code blocks whole.");
    ctn_val_unref(docs);
}

TEST(no_title_or_author_when_the_info_has_none) {
    ctn_val *docs = load_mode("tiny", NULL);
    if (docs == NULL) return;
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK(meta(docs, 0, "title") == NULL);
    CHECK(meta(docs, 0, "author") == NULL);
    CHECK_STR(doc_text(docs, 0), "Hi\n\n1\t2\n3\t4");
    const ctn_val *im = meta(docs, 0, "images");
    CHECK(im != NULL && ctn_val_len(im) == 1);
    ctn_val_unref(docs);
}

/* Poppler gives a row per line but glues its cells together; the gaps become tabs. */
TEST(table_rows_one_line_each_cells_in_column_order) {
    ctn_val *docs = load_mode("table", NULL);
    if (docs == NULL) return;
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK_STR(doc_text(docs, 0), "Model sizes\n\n"
                                 "Model\tLayers\tContext\tLicence\n"
                                 "stories260K\t5\t512\tMIT\n"
                                 "stories15M\t6\t256\tMIT\n"
                                 "tinyllama\t22\t2048\tApache-2.0\n"
                                 "qwen2-0.5b\t24\t32768\tApache-2.0\n"
                                 "phi-2\t32\t2048\tMIT\n\n"
                                 "Table 1: the models the tests use.");
    ctn_val_unref(docs);
}

/* Cells with spaces in them keep their spaces; only the gaps between cells become tabs. And
 * an empty line in the source text is a paragraph break in the document. */
TEST(table_cells_with_spaces_and_paragraphs) {
    ctn_val *docs = load_mode("handbook", NULL);
    if (docs == NULL) return;
    CHECK_EQ_INT(ctn_val_len(docs), 4);
    CHECK_STR(meta_str(docs, 0, "title"), "Support desk handbook");
    CHECK_CONTAINS(doc_text(docs, 0), "go straight to the engineer on call.\n\nThe desk is");
    CHECK_CONTAINS(doc_text(docs, 1), "against.\n\n"
                                      "Priority\tFirst answer\tResolution\tEscalation\n"
                                      "P1 outage\t15 minutes\t4 hours\ton-call lead\n"
                                      "P2 degraded\t1 hour\t1 day\tteam lead\n"
                                      "P3 question\t1 day\t5 days\tnone\n"
                                      "P4 request\t2 days\tnext release\tnone\n\n"
                                      "Table 1:");
    ctn_val_unref(docs);
}

/* The lines of the two columns share their baselines; poppler reads the left column to its
 * end before the right one. */
TEST(two_columns_not_interleaved) {
    ctn_val *docs = load_mode("columns", NULL);
    if (docs == NULL) return;
    CHECK_STR(doc_text(docs, 0), "Two columns\n\n"
                                 "The left column starts here and\n"
                                 "goes on for several lines about\n"
                                 "the engine, its scheduler and\n"
                                 "the caches it keeps for every\n"
                                 "sequence that is still running.\n"
                                 "Here the left column ends.\n"
                                 "The right column begins at the\n"
                                 "same height as the left one and\n"
                                 "talks about the chains, their\n"
                                 "nodes, the values between them\n"
                                 "and the traces they leave.\n"
                                 "Here the right column ends.");
    ctn_val_unref(docs);
}

static bool near(const ctn_val *o, const char *key, double want) {
    const ctn_val *v = ctn_val_get(o, key);
    const bool ok = v != NULL && v->kind == CTN_VNUM && fabs(v->u.num - want) <= 0.5;
    if (!ok) printf("  %s: want %g, got %g\n", key, want, v && v->kind == CTN_VNUM ? v->u.num : -1);
    return ok;
}

/* mkpdf paints the images at these places (points from the top left). */
TEST(images_with_their_boxes_in_drawing_order) {
    ctn_val *docs = load_mode("image", NULL);
    if (docs == NULL) return;
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK_STR(doc_text(docs, 0), "Figures\n\n"
                                 "The figure below shows two test patterns.\n\n"
                                 "Figure 1: two test patterns.");
    const ctn_val *im = meta(docs, 0, "images");
    CHECK(im != NULL && im->kind == CTN_VARR && ctn_val_len(im) == 2);
    if (im != NULL && ctn_val_len(im) == 2) {
        const ctn_val *a = ctn_val_at(im, 0), *b = ctn_val_at(im, 1);
        CHECK_EQ_INT(ctn_val_len(a), 4);
        CHECK(near(a, "x", 100) && near(a, "y", 150) && near(a, "width", 128) &&
              near(a, "height", 96));
        CHECK(near(b, "x", 300) && near(b, "y", 400) && near(b, "width", 64) &&
              near(b, "height", 64));
    }
    CHECK(meta(docs, 0, "no_text") == NULL);
    ctn_val_unref(docs);
}

/* The page between two pages of text holds only an image and a frame. */
TEST(page_without_text_is_flagged_and_warned) {
    warnings w = {0};
    ctn_val *docs = load_mode("blank", &w);
    if (docs == NULL) return;
    CHECK_EQ_INT(ctn_val_len(docs), 3);
    CHECK_STR(doc_text(docs, 0), "Before the scan\n\nThis page has text.");
    CHECK_STR(doc_text(docs, 1), "");
    CHECK_STR(doc_text(docs, 2), "After the scan\n\nThis page has text again.");
    CHECK_EQ_INT(meta_int(docs, 1, "page"), 2);
    const ctn_val *nt = meta(docs, 1, "no_text");
    CHECK(nt != NULL && nt->kind == CTN_VBOOL && nt->u.b == 1);
    CHECK(meta(docs, 0, "no_text") == NULL && meta(docs, 2, "no_text") == NULL);
    const ctn_val *im = meta(docs, 1, "images");
    CHECK(im != NULL && ctn_val_len(im) == 1);
    if (im != NULL && ctn_val_len(im) == 1) {
        const ctn_val *a = ctn_val_at(im, 0);
        CHECK(near(a, "x", 56) && near(a, "y", 56) && near(a, "width", 240) &&
              near(a, "height", 320));
    }
    CHECK_EQ_INT(w.n, 1);
    CHECK_STR(w.msg[0], "blank.pdf: page 2 has no text layer (scanned or image-only?)");
    ctn_val_unref(docs);
}

/* Checks that loading the n bytes fails with code and a message containing want, leaving
 * docs (which holds one string) as it was. */
static void check_fails(const char *source, const char *data, size_t n, int code,
                        const char *want) {
    ctn_load_ctx c = {.source = source};
    ctn_val *docs = ctn_val_arr();
    ctn_val *before = ctn_val_cstr("earlier");
    ctn_val_push(docs, ctn_val_ref(before));
    char err[256] = "";
    CHECK_EQ_INT(ctn_load_pdf(&c, data, n, docs, err, sizeof err), code);
    CHECK_STR(err, want);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK(ctn_val_at(docs, 0) == before);
    ctn_val_unref(before);
    ctn_val_unref(docs);
}

TEST(broken_files_are_format_errors) {
    size_t n = 0;
    char *data = mkpdf_bytes("text", &n, NULL);
    CHECK(data != NULL && n > 1000);
    if (data == NULL) return;
    /* Cut short: the cross-reference table and the trailer are gone. */
    check_fails("cut.pdf", data, n / 2, CTN_EFORMAT, "cut.pdf: PDF document is damaged");
    check_fails("cut.pdf", data, 100, CTN_EFORMAT, "cut.pdf: PDF document is damaged");
    free(data);
    check_fails("notes.pdf", "just some text\n", 15, CTN_EFORMAT,
                "notes.pdf: PDF document is damaged");
    check_fails("empty.pdf", NULL, 0, CTN_EFORMAT, "empty.pdf: PDF document is damaged");
}

TEST(encrypted_file_is_unsupported) {
    size_t n = 0;
    char *data = mkpdf_read("tests/data/encrypted.pdf", &n);
    CHECK(data != NULL && n > 0);
    if (data == NULL) return;
    check_fails("encrypted.pdf", data, n, CTN_ENOTSUP,
                "encrypted.pdf: encrypted (a password is needed)");
    free(data);
}

TEST(no_pages_no_documents_and_a_warning) {
    static const char *const objs[] = {"<< /Type /Catalog /Pages 2 0 R >>",
                                       "<< /Type /Pages /Kids [] /Count 0 >>"};
    char buf[1024];
    const size_t n = build_pdf(buf, sizeof buf, objs, 2);
    warnings w = {0};
    ctn_load_ctx c = {.source = "none.pdf", .warn = collect, .warn_ud = &w};
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    CHECK_EQ_INT(ctn_load_pdf(&c, buf, n, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 0);
    CHECK_EQ_INT(w.n, 1);
    CHECK_STR(w.msg[0], "none.pdf: the PDF has no pages");
    ctn_val_unref(docs);
}

/* A ToUnicode map may say anything: here 'A' maps to a lone surrogate, which UTF-8 cannot
 * hold. Poppler 22.12 writes U+FFFD for it itself (our check of its text finds nothing to
 * replace, so no warning); the text is valid UTF-8 either way. */
TEST(lone_surrogate_from_a_tounicode_map_is_fffd) {
    static const char cmap[] = "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
                               "/CMapName /Test def\n"
                               "1 begincodespacerange <00> <FF> endcodespacerange\n"
                               "2 beginbfchar <41> <D800> <42> <0042> endbfchar\n"
                               "endcmap CMapName currentdict /CMap defineresource pop end end";
    static const char content[] = "BT /F1 12 Tf 20 100 Td (ABB) Tj ET";
    char o4[512], o5[256];
    snprintf(o4, sizeof o4, "<< /Length %zu >>\nstream\n%s\nendstream", sizeof cmap - 1, cmap);
    snprintf(o5, sizeof o5, "<< /Length %zu >>\nstream\n%s\nendstream", sizeof content - 1,
             content);
    const char *const objs[] = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 5 0 R "
        "/Resources << /Font << /F1 6 0 R >> >> >>",
        o4,
        o5,
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 4 0 R >>",
    };
    char buf[2048];
    const size_t n = build_pdf(buf, sizeof buf, objs, 6);
    warnings w = {0};
    ctn_load_ctx c = {.source = "cmap.pdf", .warn = collect, .warn_ud = &w};
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    CHECK_EQ_INT(ctn_load_pdf(&c, buf, n, docs, err, sizeof err), 0);
    const char *t = doc_text(docs, 0);
    CHECK_STR(t, "\xEF\xBF\xBD"
                 "BB");
    CHECK(t != NULL && ctn__utf8_valid(t, strlen(t)));
    CHECK_EQ_INT(w.n, 0);
    ctn_val_unref(docs);
}

TEST(appends_after_what_docs_holds_and_is_repeatable) {
    size_t n = 0;
    char *data = mkpdf_bytes("blank", &n, NULL);
    CHECK(data != NULL);
    if (data == NULL) return;
    ctn_load_ctx c = {.source = "blank.pdf"};
    ctn_val *docs = ctn_val_arr(), *again = ctn_val_arr();
    ctn_val_push(docs, ctn_val_cstr("earlier"));
    char err[256] = "";
    CHECK_EQ_INT(ctn_load_pdf(&c, data, n, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_load_pdf(&c, data, n, again, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 4);
    CHECK(ctn_val_at(docs, 0)->kind == CTN_VSTR);
    for (size_t i = 0; i < 3; i++)
        CHECK(ctn_val_equal(ctn_val_at(docs, i + 1), ctn_val_at(again, i)));
    ctn_val_unref(docs);
    ctn_val_unref(again);
    free(data);
}

TEST(bad_arguments) {
    ctn_load_ctx c = {.source = "x.pdf"}, nosrc = {0};
    ctn_val *obj = ctn_val_obj(), *docs = ctn_val_arr();
    char err[256] = "";
    CHECK_EQ_INT(ctn_load_pdf(&c, "%PDF", 4, NULL, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_load_pdf(&c, "%PDF", 4, obj, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_load_pdf(&nosrc, "%PDF", 4, docs, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_load_pdf(&c, NULL, 4, docs, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_load_pdf(NULL, "%PDF", 4, docs, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_val_len(docs), 0);
    ctn_val_unref(obj);
    ctn_val_unref(docs);
}

/* The loaders run on the libuv thread pool: loads on several threads at once, from the same
 * read-only bytes, give what one load alone gives. */
typedef struct {
    const char *data;
    size_t n;
    const ctn_val *want;
    int ok;
} concurrent_job;

static void *concurrent_loads(void *arg) {
    concurrent_job *j = arg;
    j->ok = 1;
    for (int i = 0; i < 8; i++) {
        ctn_load_ctx c = {.source = "blank.pdf"};
        ctn_val *docs = ctn_val_arr();
        char err[256] = "";
        if (ctn_load_pdf(&c, j->data, j->n, docs, err, sizeof err) != 0 ||
            !ctn_val_equal(docs, j->want))
            j->ok = 0;
        ctn_val_unref(docs);
    }
    return NULL;
}

TEST(loads_on_several_threads_at_once) {
    size_t n = 0;
    char *data = mkpdf_bytes("blank", &n, NULL);
    CHECK(data != NULL);
    if (data == NULL) return;
    ctn_load_ctx c = {.source = "blank.pdf"};
    ctn_val *want = ctn_val_arr();
    char err[256] = "";
    CHECK_EQ_INT(ctn_load_pdf(&c, data, n, want, err, sizeof err), 0);
    concurrent_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (concurrent_job){.data = data, .n = n, .want = want};
        CHECK(pthread_create(&th[i], NULL, concurrent_loads, &jobs[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].ok);
    }
    ctn_val_unref(want);
    free(data);
}

/*
 * Fail the N-th of our allocations, for every N, once and for good: each failure is
 * CTN_ENOMEM with docs as it was and nothing leaked (ASan's leak check in the _asan build).
 * Poppler's own allocations are GLib's and cannot fail. The blank PDF has images and a page
 * without text, the text PDF a title and an author.
 */
static void alloc_loop(const char *mode, bool once) {
    size_t n = 0;
    char *data = mkpdf_bytes(mode, &n, NULL);
    CHECK(data != NULL);
    if (data == NULL) return;
    ctn_load_ctx c = {.source = "a.pdf"};
    int done = 0, n_fail = 0;
    for (long k = 0; !done && k < 10000; k++) {
        ctn_val *docs = ctn_val_arr(), *before = ctn_val_cstr("earlier");
        ctn_val_push(docs, ctn_val_ref(before));
        char err[256] = "";
        const long failed0 = ctn__alloc_n_failed;
        ctn__alloc_fail_once = once;
        ctn__alloc_fail_after = k;
        const int rc = ctn_load_pdf(&c, data, n, docs, err, sizeof err);
        ctn__alloc_fail_after = -1;
        ctn__alloc_fail_once = false;
        if (rc == 0) {
            /* Once: a failure that hit nothing we needed may still have happened. */
            if (ctn__alloc_n_failed == failed0) done = 1;
            CHECK(ctn_val_len(docs) == 4);
        } else {
            n_fail++;
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK_STR(err, "a.pdf: out of memory");
            CHECK_EQ_INT(ctn_val_len(docs), 1);
            CHECK(ctn_val_at(docs, 0) == before);
        }
        ctn_val_unref(before);
        ctn_val_unref(docs);
    }
    CHECK(done && n_fail > 10);
    free(data);
}

TEST(allocation_failures) {
    alloc_loop("blank", false);
    alloc_loop("blank", true);
    alloc_loop("text", false);
    alloc_loop("text", true);
}

int main(void) {
    if (mkpdf_init() != 0) return 1;
    RUN(mkpdf_is_there);
    RUN(pages_metadata_and_text_in_order);
    RUN(no_title_or_author_when_the_info_has_none);
    RUN(table_rows_one_line_each_cells_in_column_order);
    RUN(table_cells_with_spaces_and_paragraphs);
    RUN(two_columns_not_interleaved);
    RUN(images_with_their_boxes_in_drawing_order);
    RUN(page_without_text_is_flagged_and_warned);
    RUN(broken_files_are_format_errors);
    RUN(encrypted_file_is_unsupported);
    RUN(no_pages_no_documents_and_a_warning);
    RUN(lone_surrogate_from_a_tounicode_map_is_fffd);
    RUN(appends_after_what_docs_holds_and_is_repeatable);
    RUN(bad_arguments);
    RUN(loads_on_several_threads_at_once);
    RUN(allocation_failures);
    mkpdf_cleanup();
    return test_summary();
}
