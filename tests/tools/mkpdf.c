/*
 * Writes the PDFs that the PDF loader's tests, its fuzz corpus and examples/docs/ read, with
 * cairo's PDF surface, so that the tests make their input instead of committing binaries
 * (only the encrypted fixture is committed: cairo cannot encrypt).
 *
 *     mkpdf OUT.pdf MODE
 *
 * Pages are A4 (595 x 842 points), text in cairo's "sans-serif" at 11 points unless said.
 * Modes (tests/stdlib/test_pdf.c knows the exact text of each):
 *   text      three pages of short paragraphs; title and author in the document info.
 *   table     a heading, a table of 4 columns x 6 rows (a header row and five rows) drawn
 *             as text cells with ruled lines, and a caption.
 *   columns   a heading across the page, then two columns of six lines each whose lines
 *             share their baselines (what trips a layout that reads line by line).
 *   image     a heading, two raster images (painted image surfaces) and a caption.
 *   blank     three pages; the second has only an image and a drawing, no text.
 *   korean    one page of Hangul; exit 77 when no installed font has Hangul glyphs.
 *   tiny      one page with a line, a grid of 2 x 2 digits and an image (a small seed for
 *             the fuzz corpus).
 *   handbook  a four-page handbook with a table, for examples/docs/.
 *
 * Exit status: 0 written, 1 cairo failed, 2 bad usage, 77 this machine cannot make the mode.
 */
#include <cairo-pdf.h>
#include <cairo.h>
#include <stdio.h>
#include <string.h>

#define PAGE_W 595.0
#define PAGE_H 842.0

static void font(cairo_t *cr, double size, int bold) {
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

static void text_at(cairo_t *cr, double x, double y, const char *s) {
    cairo_move_to(cr, x, y);
    cairo_show_text(cr, s);
}

/* A heading at the top of the page, then the NULL-terminated lines below it, 16 points apart;
 * returns the baseline after the last line. */
static double paragraph(cairo_t *cr, const char *heading, const char *const *lines) {
    double y = 72;
    if (heading != NULL) {
        font(cr, 18, 1);
        text_at(cr, 56, y, heading);
        y += 32;
    }
    font(cr, 11, 0);
    for (; *lines != NULL; lines++, y += 16)
        text_at(cr, 56, y, *lines);
    return y;
}

/* A w x h pixel test pattern (a gradient with a diagonal) painted as a raster image at (x, y)
 * from the top left, scaled to sw x sh points, so that the PDF holds an image XObject. */
static void image_at(cairo_t *cr, int w, int h, double x, double y, double sw, double sh) {
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    cairo_surface_flush(img);
    unsigned char *px = cairo_image_surface_get_data(img);
    const int stride = cairo_image_surface_get_stride(img);
    for (int r = 0; r < h; r++)
        for (int c = 0; c < w; c++) {
            unsigned char *p = px + r * stride + c * 4;
            p[0] = (unsigned char)(255 * c / w);
            p[1] = (unsigned char)(255 * r / h);
            p[2] = (r == c * h / w) ? 255 : 64;
            p[3] = 255;
        }
    cairo_surface_mark_dirty(img);
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_scale(cr, sw / w, sh / h);
    cairo_set_source_surface(cr, img, 0, 0);
    /* Nearest-neighbour keeps cairo from drawing the image through a smoothing pattern. */
    cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
    cairo_rectangle(cr, 0, 0, w, h);
    cairo_fill(cr);
    cairo_restore(cr);
    cairo_surface_destroy(img);
}

static void mode_text(cairo_t *cr) {
    static const char *const p1[] = {"Catena is a chain engine for language models written in C.",
                                     "It runs prompts, parsers and models as the nodes of a graph.",
                                     "Each node takes its input from the nodes before it.", NULL};
    static const char *const p2[] = {"A loader turns the bytes of a file into documents.",
                                     "Every document carries its source and its page.", NULL};
    static const char *const p3[] = {"Long documents are split into pieces that fit a prompt.",
                                     "The splitter keeps tables and code blocks whole.", NULL};
    paragraph(cr, "Getting started", p1);
    cairo_show_page(cr);
    paragraph(cr, "Loading documents", p2);
    cairo_show_page(cr);
    paragraph(cr, "Splitting text", p3);
    cairo_show_page(cr);
}

/* The table of the table and handbook modes: rows of 4 cells, 120 x 22 points each, from
 * (56, top), ruled; returns the bottom edge. */
static double table(cairo_t *cr, double top, const char *const (*rows)[4], int n_rows) {
    const double x0 = 56, cw = 120, rh = 22;
    for (int r = 0; r < n_rows; r++) {
        font(cr, 11, r == 0);
        for (int c = 0; c < 4; c++)
            text_at(cr, x0 + c * cw + 6, top + r * rh + 15, rows[r][c]);
    }
    cairo_set_line_width(cr, 0.8);
    for (int r = 0; r <= n_rows; r++) {
        cairo_move_to(cr, x0, top + r * rh);
        cairo_line_to(cr, x0 + 4 * cw, top + r * rh);
    }
    for (int c = 0; c <= 4; c++) {
        cairo_move_to(cr, x0 + c * cw, top);
        cairo_line_to(cr, x0 + c * cw, top + n_rows * rh);
    }
    cairo_stroke(cr);
    return top + n_rows * rh;
}

static void mode_table(cairo_t *cr) {
    static const char *const rows[6][4] = {
        {"Model", "Layers", "Context", "Licence"},   {"stories260K", "5", "512", "MIT"},
        {"stories15M", "6", "256", "MIT"},           {"tinyllama", "22", "2048", "Apache-2.0"},
        {"qwen2-0.5b", "24", "32768", "Apache-2.0"}, {"phi-2", "32", "2048", "MIT"},
    };
    static const char *const none[] = {NULL};
    paragraph(cr, "Model sizes", none);
    const double bottom = table(cr, 100, rows, 6);
    font(cr, 11, 0);
    text_at(cr, 56, bottom + 24, "Table 1: the models the tests use.");
    cairo_show_page(cr);
}

static void mode_columns(cairo_t *cr) {
    static const char *const left[] = {
        "The left column starts here and", "goes on for several lines about",
        "the engine, its scheduler and",   "the caches it keeps for every",
        "sequence that is still running.", "Here the left column ends.",
    };
    static const char *const right[] = {
        "The right column begins at the", "same height as the left one and",
        "talks about the chains, their",  "nodes, the values between them",
        "and the traces they leave.",     "Here the right column ends.",
    };
    font(cr, 18, 1);
    text_at(cr, 56, 72, "Two columns");
    font(cr, 11, 0);
    for (int i = 0; i < 6; i++) {
        text_at(cr, 56, 110 + 16 * i, left[i]);
        text_at(cr, 320, 110 + 16 * i, right[i]);
    }
    cairo_show_page(cr);
}

static void mode_image(cairo_t *cr) {
    static const char *const lines[] = {"The figure below shows two test patterns.", NULL};
    paragraph(cr, "Figures", lines);
    image_at(cr, 32, 24, 100, 150, 128, 96);
    image_at(cr, 16, 16, 300, 400, 64, 64);
    font(cr, 11, 0);
    text_at(cr, 100, 270, "Figure 1: two test patterns.");
    cairo_show_page(cr);
}

static void mode_blank(cairo_t *cr) {
    static const char *const p1[] = {"This page has text.", NULL};
    static const char *const p3[] = {"This page has text again.", NULL};
    paragraph(cr, "Before the scan", p1);
    cairo_show_page(cr);
    /* A page as a scanner makes it: an image and some drawing, no text. */
    image_at(cr, 24, 32, 56, 56, 240, 320);
    cairo_set_line_width(cr, 2);
    cairo_rectangle(cr, 50, 50, 252, 332);
    cairo_stroke(cr);
    cairo_show_page(cr);
    paragraph(cr, "After the scan", p3);
    cairo_show_page(cr);
}

/*
 * Hangul through cairo's toy font API, which takes one font per family and no fallback per
 * glyph: try the families that ship Hangul (Debian: fonts-noto-cjk, fonts-nanum,
 * fonts-unfonts-core, fonts-baekmuk) and use the first whose glyphs for the text are all
 * there (glyph 0 is the missing glyph). Returns 77 when none is installed.
 */
static int mode_korean(cairo_t *cr) {
    static const char *const families[] = {"Noto Sans CJK KR", "Noto Sans KR",  "NanumGothic",
                                           "UnDotum",          "Baekmuk Gulim", "sans-serif"};
    static const char *const lines[] = {"한국어 문서입니다.", "체인 엔진이 페이지를 읽습니다.",
                                        NULL};
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        cairo_select_font_face(cr, families[f], CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
        cairo_set_font_size(cr, 14);
        int complete = 1;
        for (int i = 0; lines[i] != NULL && complete; i++) {
            cairo_glyph_t *g = NULL;
            int ng = 0;
            if (cairo_scaled_font_text_to_glyphs(cairo_get_scaled_font(cr), 0, 0, lines[i], -1, &g,
                                                 &ng, NULL, NULL, NULL) != CAIRO_STATUS_SUCCESS)
                complete = 0;
            for (int k = 0; k < ng && complete; k++)
                if (g[k].index == 0) complete = 0;
            cairo_glyph_free(g);
        }
        if (!complete) continue;
        for (int i = 0; lines[i] != NULL; i++)
            text_at(cr, 56, 72 + 24 * i, lines[i]);
        cairo_show_page(cr);
        return 0;
    }
    fprintf(stderr, "mkpdf: no installed font has Hangul glyphs (fc-list :lang=ko is empty; "
                    "Debian's fonts-noto-cjk or fonts-nanum has them)\n");
    return 77;
}

/* Small enough for the fuzz corpus, yet with a line, a grid of cells and an image. */
static void mode_tiny(cairo_t *cr) {
    font(cr, 11, 0);
    text_at(cr, 56, 72, "Hi");
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 2; c++) {
            const char cell[2] = {(char)('1' + 2 * r + c), '\0'};
            text_at(cr, 56 + 120 * c, 100 + 22 * r, cell);
        }
    image_at(cr, 8, 8, 56, 150, 32, 32);
    cairo_show_page(cr);
}

static void mode_handbook(cairo_t *cr) {
    static const char *const p1[] = {
        "This handbook describes how the team runs the support desk.",
        "Requests arrive by mail and through the web form. Each one gets",
        "a ticket number within five minutes and a first answer within",
        "one working day. Urgent requests (an outage, a security report)",
        "go straight to the engineer on call.",
        "",
        "The desk is staffed from 08:00 to 18:00 on working days. Outside",
        "those hours the on-call engineer answers urgent requests only.",
        NULL};
    static const char *const p2[] = {
        "Every ticket has a priority that decides how fast it is answered.",
        "The table below gives the targets the desk is measured against.", NULL};
    static const char *const rows[5][4] = {
        {"Priority", "First answer", "Resolution", "Escalation"},
        {"P1 outage", "15 minutes", "4 hours", "on-call lead"},
        {"P2 degraded", "1 hour", "1 day", "team lead"},
        {"P3 question", "1 day", "5 days", "none"},
        {"P4 request", "2 days", "next release", "none"},
    };
    static const char *const p3[] = {
        "A ticket is escalated when its first answer is late or when the",
        "customer asks for it. The escalation contact takes the ticket over",
        "and tells the customer who is now working on it.",
        "",
        "Security reports are never discussed in the public tracker. They",
        "are copied to the security list and answered from there.",
        NULL};
    static const char *const p4[] = {
        "At the end of each week the desk lead writes a short report: the",
        "number of tickets opened and closed, the ones that missed their",
        "targets and why, and what the team will change.",
        "",
        "Reports are kept for two years in the shared folder.",
        NULL};
    paragraph(cr, "1. The support desk", p1);
    cairo_show_page(cr);
    const double y = paragraph(cr, "2. Priorities", p2);
    const double bottom = table(cr, y + 4, rows, 5);
    font(cr, 11, 0);
    text_at(cr, 56, bottom + 24, "Table 1: answer and resolution targets by priority.");
    cairo_show_page(cr);
    paragraph(cr, "3. Escalation", p3);
    cairo_show_page(cr);
    paragraph(cr, "4. Weekly report", p4);
    cairo_show_page(cr);
}

int main(int argc, char **argv) {
    static const char *const modes[] = {"text",  "table",  "columns", "image",
                                        "blank", "korean", "tiny",    "handbook"};
    if (argc != 3) {
        fprintf(stderr, "usage: mkpdf OUT.pdf text|table|columns|image|blank|korean|tiny|"
                        "handbook\n");
        return 2;
    }
    int m = -1;
    for (int i = 0; i < (int)(sizeof modes / sizeof modes[0]); i++)
        if (strcmp(argv[2], modes[i]) == 0) m = i;
    if (m < 0) {
        fprintf(stderr, "mkpdf: unknown mode '%s'\n", argv[2]);
        return 2;
    }
    cairo_surface_t *s = cairo_pdf_surface_create(argv[1], PAGE_W, PAGE_H);
    if (m == 0) {
        cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_TITLE, "Catena test document");
        cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_AUTHOR, "The catena tests");
    } else if (m == 7) {
        cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_TITLE, "Support desk handbook");
        cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_AUTHOR, "Operations team");
    }
    cairo_t *cr = cairo_create(s);
    int rc = 0;
    switch (m) {
    case 0: mode_text(cr); break;
    case 1: mode_table(cr); break;
    case 2: mode_columns(cr); break;
    case 3: mode_image(cr); break;
    case 4: mode_blank(cr); break;
    case 5: rc = mode_korean(cr); break;
    case 6: mode_tiny(cr); break;
    default: mode_handbook(cr); break;
    }
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_finish(s);
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(s);
    cairo_surface_destroy(s);
    if (st != CAIRO_STATUS_SUCCESS) {
        fprintf(stderr, "mkpdf: %s: %s\n", argv[1], cairo_status_to_string(st));
        return 1;
    }
    if (rc != 0) remove(argv[1]);
    return rc;
}
