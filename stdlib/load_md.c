/*
 * The Markdown loader (loader.h): md4c parses GitHub-flavoured Markdown and calls back for
 * every block, span and run of text; the callbacks render the tree as plain Markdown-ish
 * text, one document per section, and libyaml reads the front matter.
 *
 * md4c reports nesting as enter/leave pairs, not as a tree, so nothing here recurses: the
 * renderer keeps its own stack of open block quotes and lists, bounded by MAX_DEPTH (each
 * line of text repeats the prefix of every open container, so an unbounded depth would make
 * the output grow with depth times lines). The loader allocates through the hook
 * (alloc.h); md4c and libyaml allocate with plain malloc, which the failure tests cannot
 * reach, and their own failures still come back as CTN_ENOMEM.
 *
 * Until ctn_text_decode joins the tree, ctn_load_markdown takes UTF-8 only: it strips a BOM
 * and rejects invalid bytes with their offset, then hands the text to load_text, which is
 * the part that stays when the decoder is put in front.
 */
#include <math.h>
#include <md4c.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "alloc.h"
#include "error.h"
#include "loader.h"
#include "str.h"
#include "unicode.h"

/* Block quotes and list items open at once, at most (each adds to every line's prefix). The
 * stack also holds the lists, at most one more than the items. */
#define MAX_DEPTH 32
#define MAX_STACK (2 * MAX_DEPTH + 2)
/* Images inside the alt text of images, at most. */
#define MAX_IMAGES 32
/* Front matter is metadata: its size, its top-level fields (copied onto every section) and
 * its nesting are bounded so that hostile front matter cannot cost more than the text. */
#define FM_MAX_BYTES  (64 * 1024)
#define FM_MAX_FIELDS 64
#define FM_MAX_DEPTH  32
/* md4c pads short table rows with empty cells up to the header's width; a table may have
 * this many cells per byte of the text (plus a constant), which no real table reaches. */
#define TABLE_CELLS_PER_BYTE 8

#define ERR(...)                                                                                   \
    do {                                                                                           \
        if (err != NULL && errcap > 0) ctn__errf(err, errcap, __VA_ARGS__);                        \
    } while (0)
/* The same inside the renderer, whose state holds the buffer. */
#define RERR(r, ...)                                                                               \
    do {                                                                                           \
        if ((r)->err != NULL && (r)->errcap > 0) ctn__errf((r)->err, (r)->errcap, __VA_ARGS__);    \
    } while (0)

/* The metadata keys the loader sets itself; front matter cannot override them. */
static const char *const reserved[] = {"source", "section", "headings",
                                       "level",  "images",  "blocks"};

static bool is_reserved(const char *k, size_t n) {
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strlen(reserved[i]) == n && memcmp(reserved[i], k, n) == 0) return true;
    return false;
}

static void warn(const ctn_load_ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- entities ----------------------------------------------------------------------------- */

/* md4c hands entities over verbatim and has no table of names; these are the ones that
 * documentation uses. Any other name stays as it was written. */
static const struct {
    const char *name;
    const char *utf8;
} named_entities[] = {
    {"amp", "&"},
    {"lt", "<"},
    {"gt", ">"},
    {"quot", "\""},
    {"apos", "'"},
    {"nbsp", "\xC2\xA0"},
    {"copy", "\xC2\xA9"},
    {"reg", "\xC2\xAE"},
    {"hellip", "\xE2\x80\xA6"},
    {"mdash", "\xE2\x80\x94"},
    {"ndash", "\xE2\x80\x93"},
};

/*
 * The UTF-8 text of the entity at s (n bytes, "&...;" as md4c reports it) into out (at
 * least 4 bytes); its length, or 0 when the name is unknown (the caller keeps it verbatim).
 * Numeric references to nothing (0, surrogates, past U+10FFFF) become U+FFFD as CommonMark
 * says.
 */
static size_t decode_entity(const char *s, size_t n, char *out) {
    if (n < 3 || s[0] != '&' || s[n - 1] != ';') return 0;
    const char *p = s + 1;
    const size_t m = n - 2;
    if (p[0] == '#') {
        uint32_t v = 0;
        size_t i = 1;
        const bool hex = m > 1 && (p[1] == 'x' || p[1] == 'X');
        if (hex) i = 2;
        if (i >= m || m - i > (hex ? 6 : 7)) return 0;
        for (; i < m; i++) {
            const unsigned char ch = (unsigned char)p[i];
            unsigned d;
            if (ch >= '0' && ch <= '9')
                d = ch - '0';
            else if (hex && ch >= 'a' && ch <= 'f')
                d = ch - 'a' + 10;
            else if (hex && ch >= 'A' && ch <= 'F')
                d = ch - 'A' + 10;
            else
                return 0;
            v = v * (hex ? 16 : 10) + d;
        }
        if (v == 0 || (v >= 0xD800 && v <= 0xDFFF) || v >= CTN__CPT_MAX) v = CTN__CPT_INVALID;
        return ctn__utf8_encode(v, out);
    }
    for (size_t i = 0; i < sizeof named_entities / sizeof named_entities[0]; i++) {
        const char *name = named_entities[i].name;
        if (strlen(name) == m && memcmp(name, p, m) == 0) {
            const size_t k = strlen(named_entities[i].utf8);
            memcpy(out, named_entities[i].utf8, k);
            return k;
        }
    }
    return 0;
}

/* An attribute of md4c (a link target, an image source, a code block's language): its
 * pieces with entities decoded and NULs replaced. */
static void put_attr(ctn_strbuf *b, const MD_ATTRIBUTE *a) {
    if (a->text == NULL || a->size == 0) return;
    for (size_t i = 0; a->substr_offsets[i] < a->size; i++) {
        const char *s = a->text + a->substr_offsets[i];
        const size_t n = a->substr_offsets[i + 1] - a->substr_offsets[i];
        char tmp[4];
        size_t k;
        switch (a->substr_types[i]) {
        case MD_TEXT_NULLCHAR: ctn_sb_puts(b, "\xEF\xBF\xBD"); break;
        case MD_TEXT_ENTITY:
            k = decode_entity(s, n, tmp);
            if (k > 0)
                ctn_sb_put(b, tmp, k);
            else
                ctn_sb_put(b, s, n);
            break;
        default: ctn_sb_put(b, s, n); break;
        }
    }
}

/* ---- the renderer's state ------------------------------------------------------------------ */

typedef enum { C_QUOTE, C_UL, C_OL, C_LI } ckind;

/* An open block quote, list or list item. */
typedef struct {
    ckind kind;
    bool tight;      /* C_UL, C_OL: md4c reports no paragraphs in a tight list */
    unsigned next;   /* C_OL: the number of its next item */
    char marker[24]; /* C_LI: "- ", "12. ", "- [x] " */
    unsigned width;  /* C_LI: how far its continuation lines are indented */
    bool marked;     /* C_LI: its marker has been written */
} container;

/* What kind of leaf block the text goes to. */
typedef enum {
    L_NONE,
    L_PARA,     /* a paragraph, a nested heading, an HTML block */
    L_IMPLICIT, /* the text of an item of a tight list, which has no paragraph block */
    L_HEAD,     /* a heading inside a container: one line, written "## text" */
    L_CODE,     /* a code block: text goes to code, written out when it closes */
    L_CELL,     /* a table cell: '|' escaped, one line */
} leaf;

/* A unit of a section's text that a splitter must respect (the "blocks" metadata). */
typedef struct {
    size_t start, end, header_end;
    bool table;
} range;

typedef struct {
    unsigned level;
    char *text;
    size_t len;
} heading;

typedef struct {
    const ctn_load_ctx *c;
    char *err;
    size_t errcap;
    int rc; /* the first failure, which stops the parse */

    const char *text; /* the whole text, for line numbers in messages */
    size_t len;
    const char *body; /* the Markdown after the front matter */
    size_t body_len;
    const char *last; /* the end of the last run of text md4c reported from the input */

    ctn_val *fm;   /* the front matter (an object), or NULL */
    ctn_val *docs; /* the documents so far (an array) */

    heading path[6]; /* the enclosing headings, outermost first */
    size_t npath;

    /* The section being written. */
    ctn_strbuf out;
    unsigned level;
    ctn_val *images; /* an array, created with its first image */
    range *ranges;
    size_t nranges, capranges;

    /* Lines: the prefix of the open containers is written before a line's first byte. */
    size_t line_begin;
    int line_state;  /* 0: nothing on the line yet, 1: only its prefix, 2: text */
    bool need_blank; /* a block ended: the next one starts after a blank line */
    container stack[MAX_STACK];
    size_t depth;
    size_t nest; /* the block quotes and items on the stack */
    leaf leaf;

    bool in_heading; /* a top-level heading: its text goes to head, not out */
    ctn_strbuf head;

    ctn_strbuf code; /* the code block's text */
    ctn_strbuf lang;
    size_t block_start;

    ctn_strbuf aligns; /* one MD_ALIGN per header cell of the open table */
    unsigned col;
    size_t table_start, header_end;

    ctn_strbuf alt; /* the alt text of the open images */
    struct {
        size_t alt_start;
        ctn_val *src;
    } img[MAX_IMAGES];
    size_t nimg;
} md_state;

/* The 1-based line of the text that p points into (or just past). */
static size_t line_of(const md_state *r, const char *p) {
    size_t line = 1;
    for (const char *q = r->text; q < p && q < r->text + r->len; q++)
        line += *q == '\n';
    return line;
}

static int fail(md_state *r, int rc) {
    if (r->rc == 0) r->rc = rc;
    return 1;
}

/* Fails the parse when an allocation failed in any buffer since the last check. */
static int check(md_state *r) {
    if (r->rc == 0 &&
        (r->out.oom || r->head.oom || r->code.oom || r->lang.oom || r->aligns.oom || r->alt.oom))
        r->rc = CTN_ENOMEM;
    return r->rc != 0;
}

/* ---- writing lines ------------------------------------------------------------------------- */

static void put(md_state *r, const char *s, size_t n) {
    ctn_sb_put(&r->out, s, n);
}

/* The prefix of a line with text: "> " per block quote, then each item's marker the first
 * time, its indentation after that. */
static void write_prefix(md_state *r) {
    for (size_t i = 0; i < r->depth; i++) {
        container *k = &r->stack[i];
        if (k->kind == C_QUOTE) {
            put(r, "> ", 2);
        } else if (k->kind == C_LI) {
            if (k->marked) {
                static const char spaces[] = "                        ";
                put(r, spaces, k->width < sizeof spaces - 1 ? k->width : sizeof spaces - 1);
            } else {
                put(r, k->marker, strlen(k->marker));
                k->marked = true;
            }
        }
    }
    r->line_state = 1;
}

/* Ends the line. A line with no text keeps only its block quotes' '>' (a blank line inside
 * a quote) and never consumes an item's marker; trailing spaces of a prefix are dropped. */
static void newline(md_state *r) {
    if (r->line_state == 0)
        for (size_t i = 0; i < r->depth; i++)
            if (r->stack[i].kind == C_QUOTE) put(r, "> ", 2);
    if (r->line_state < 2 && r->out.p != NULL && !r->out.oom) {
        while (r->out.len > r->line_begin && r->out.p[r->out.len - 1] == ' ')
            r->out.len--;
        r->out.p[r->out.len] = '\0';
    }
    put(r, "\n", 1);
    r->line_begin = r->out.len;
    r->line_state = 0;
}

static void end_line(md_state *r) {
    if (r->line_state != 0) newline(r);
}

/* Writes text that may hold newlines (code, HTML), prefixing every line; in a table cell
 * '|' is escaped so the row keeps its columns. */
static void emit(md_state *r, const char *s, size_t n, bool cell) {
    while (n > 0) {
        size_t k = 0;
        while (k < n && s[k] != '\n' && !(cell && s[k] == '|'))
            k++;
        if (k > 0 || (k < n && s[k] == '|')) {
            if (r->line_state == 0) write_prefix(r);
            put(r, s, k);
            r->line_state = 2;
        }
        if (k == n) break;
        if (s[k] == '|')
            put(r, "\\|", 2);
        else
            newline(r);
        s += k + 1;
        n -= k + 1;
    }
}

static void emits(md_state *r, const char *s) {
    emit(r, s, strlen(s), false);
}

/* Whether blocks here follow each other without blank lines: inside an item of a tight
 * list, up to the nearest block quote. */
static bool tight(const md_state *r) {
    for (size_t i = r->depth; i-- > 0;) {
        if (r->stack[i].kind == C_QUOTE) return false;
        if (r->stack[i].kind == C_UL || r->stack[i].kind == C_OL) return r->stack[i].tight;
    }
    return false;
}

static void end_implicit(md_state *r) {
    if (r->leaf == L_IMPLICIT) {
        end_line(r);
        r->leaf = L_NONE;
        r->need_blank = true;
    }
}

/* Before a block: ends the text of a tight item, then the blank line that separates
 * blocks, unless in a tight list or at the start of the section. */
static void block_open(md_state *r, bool tight_here) {
    end_implicit(r);
    end_line(r);
    if (r->need_blank && r->out.len > 0 && !tight_here) newline(r);
    r->need_blank = false;
}

static void block_close(md_state *r) {
    end_line(r);
    r->leaf = L_NONE;
    r->need_blank = true;
}

static int add_range(md_state *r, range s) {
    if (r->nranges == r->capranges) {
        const size_t cap = r->capranges ? 2 * r->capranges : 8;
        range *p = ctn__realloc(r->ranges, cap * sizeof *p);
        if (p == NULL) return fail(r, CTN_ENOMEM);
        r->ranges = p;
        r->capranges = cap;
    }
    r->ranges[r->nranges++] = s;
    return 0;
}

/* ---- sections ------------------------------------------------------------------------------ */

/* The metadata of the section: source, the heading path, the front matter, images, blocks. */
static ctn_val *section_meta(md_state *r) {
    ctn_val *m = ctn_val_obj();
    ctn_val *hs = ctn_val_arr();
    ctn_strbuf sec = {0};
    int rc = m != NULL && hs != NULL ? 0 : CTN_ENOMEM;
    for (size_t i = 0; rc == 0 && i < r->npath; i++) {
        if (i > 0) ctn_sb_puts(&sec, " > ");
        ctn_sb_put(&sec, r->path[i].text, r->path[i].len);
        rc = ctn_val_push(hs, ctn_val_str(r->path[i].text, r->path[i].len));
    }
    if (rc == 0) rc = ctn_val_set(m, "source", ctn_val_cstr(r->c->source));
    if (rc == 0 && sec.oom) rc = CTN_ENOMEM;
    if (rc == 0) rc = ctn_val_set(m, "section", ctn_val_str(sec.p ? sec.p : "", sec.len));
    if (rc == 0) {
        rc = ctn_val_set(m, "headings", hs);
        hs = NULL;
    }
    if (rc == 0) rc = ctn_val_set(m, "level", ctn_val_int(r->level));
    /* The front matter's values are shared by every section: they are built once and never
     * changed (value.h allows sharing then). */
    for (size_t i = 0; rc == 0 && r->fm != NULL && i < r->fm->u.obj.n; i++) {
        const ctn_val *k = r->fm->u.obj.keys[i];
        if (is_reserved(k->u.str.p, k->u.str.len)) continue;
        rc = ctn_val_setk(m, k->u.str.p, k->u.str.len, ctn_val_ref(r->fm->u.obj.vals[i]));
    }
    if (rc == 0 && r->images != NULL) {
        rc = ctn_val_set(m, "images", r->images);
        r->images = NULL;
    }
    if (rc == 0 && r->nranges > 0) {
        ctn_val *bl = ctn_val_arr();
        rc = bl != NULL ? 0 : CTN_ENOMEM;
        for (size_t i = 0; rc == 0 && i < r->nranges; i++) {
            const range *s = &r->ranges[i];
            ctn_val *e = ctn_val_arr();
            rc = e != NULL ? 0 : CTN_ENOMEM;
            if (rc == 0) rc = ctn_val_push(e, ctn_val_int((int64_t)s->start));
            if (rc == 0) rc = ctn_val_push(e, ctn_val_int((int64_t)s->end));
            if (rc == 0) rc = ctn_val_push(e, ctn_val_cstr(s->table ? "table" : "code"));
            if (rc == 0 && s->table) rc = ctn_val_push(e, ctn_val_int((int64_t)s->header_end));
            if (rc == 0)
                rc = ctn_val_push(bl, e);
            else
                ctn_val_unref(e);
        }
        if (rc == 0)
            rc = ctn_val_set(m, "blocks", bl);
        else
            ctn_val_unref(bl);
    }
    ctn_sb_free(&sec);
    ctn_val_unref(hs);
    if (rc != 0) {
        ctn_val_unref(m);
        return NULL;
    }
    return m;
}

/* Ends the section: a document when it has text (trailing blank lines and spaces dropped),
 * and an empty buffer for the next one. */
static int flush_section(md_state *r) {
    end_implicit(r);
    end_line(r);
    if (check(r)) return 1;
    size_t n = r->out.len;
    while (n > 0 && (r->out.p[n - 1] == '\n' || r->out.p[n - 1] == ' '))
        n--;
    if (n > 0) {
        for (size_t i = 0; i < r->nranges; i++)
            CTN_ASSERT(r->ranges[i].end <= n && r->ranges[i].header_end <= r->ranges[i].end);
        ctn_val *m = section_meta(r);
        if (m == NULL || ctn_val_push(r->docs, ctn_val_doc(r->out.p, n, m)) < 0)
            return fail(r, CTN_ENOMEM);
    }
    r->out.len = 0;
    if (r->out.p != NULL) r->out.p[0] = '\0';
    r->line_begin = 0;
    r->line_state = 0;
    r->need_blank = false;
    r->nranges = 0;
    ctn_val_unref(r->images);
    r->images = NULL;
    return 0;
}

/* A top-level heading closed: it replaces the headings of its level and deeper in the path
 * and starts the next section. */
static int push_heading(md_state *r, unsigned level) {
    if (level < 1 || level > 6) level = level < 1 ? 1 : 6; /* md4c's are 1-6; the path has 6 */
    size_t a = 0, b = r->head.len;
    while (a < b && r->head.p[a] == ' ')
        a++;
    while (b > a && r->head.p[b - 1] == ' ')
        b--;
    char *t = ctn__strndup(r->head.p ? r->head.p + a : "", b - a);
    if (t == NULL) return fail(r, CTN_ENOMEM);
    while (r->npath > 0 && r->path[r->npath - 1].level >= level)
        free(r->path[--r->npath].text);
    r->path[r->npath++] = (heading){level, t, b - a};
    r->level = level;
    r->head.len = 0;
    return 0;
}

/* ---- md4c callbacks ----------------------------------------------------------------------- */

static int push_container(md_state *r, container k) {
    const bool deeper = k.kind == C_QUOTE || k.kind == C_LI;
    if ((deeper && r->nest == MAX_DEPTH) || r->depth == MAX_STACK) {
        const size_t line = line_of(r, r->last != NULL ? r->last : r->body);
        RERR(r, "%s: block quotes and lists nest more than %d deep (after line %zu)", r->c->source,
             MAX_DEPTH, line);
        return fail(r, CTN_EFORMAT);
    }
    r->stack[r->depth++] = k;
    r->nest += deeper;
    return 0;
}

static int enter_block(MD_BLOCKTYPE type, void *detail, void *ud) {
    md_state *r = ud;
    if (check(r)) return 1;
    switch (type) {
    case MD_BLOCK_DOC: break;
    case MD_BLOCK_QUOTE:
        block_open(r, tight(r));
        return push_container(r, (container){.kind = C_QUOTE});
    case MD_BLOCK_UL:
    case MD_BLOCK_OL: {
        block_open(r, tight(r));
        container k = {.kind = type == MD_BLOCK_UL ? C_UL : C_OL};
        if (type == MD_BLOCK_UL) {
            k.tight = ((const MD_BLOCK_UL_DETAIL *)detail)->is_tight;
        } else {
            k.tight = ((const MD_BLOCK_OL_DETAIL *)detail)->is_tight;
            k.next = ((const MD_BLOCK_OL_DETAIL *)detail)->start;
        }
        return push_container(r, k);
    }
    case MD_BLOCK_LI: {
        /* Items of a loose list are separated by blank lines, of a tight one not. An item
         * outside a list (md4c never sends one) is taken as in a tight bullet list. */
        static const container no_list = {.kind = C_UL, .tight = true};
        container *list = r->depth > 0 ? &r->stack[r->depth - 1] : NULL;
        if (list != NULL && list->kind != C_UL && list->kind != C_OL) list = NULL;
        container bullets = no_list;
        if (list == NULL) list = &bullets;
        block_open(r, list->tight);
        const MD_BLOCK_LI_DETAIL *d = detail;
        container k = {.kind = C_LI};
        if (list->kind == C_OL) {
            snprintf(k.marker, sizeof k.marker, "%u. ", list->next++);
        } else {
            memcpy(k.marker, "- ", 3);
        }
        k.width = (unsigned)strlen(k.marker);
        if (d->is_task) strcat(k.marker, d->task_mark == ' ' ? "[ ] " : "[x] ");
        return push_container(r, k);
    }
    case MD_BLOCK_HR:
        block_open(r, tight(r));
        emits(r, "---");
        block_close(r);
        break;
    case MD_BLOCK_H:
        if (r->depth == 0) {
            if (flush_section(r)) return 1;
            r->in_heading = true;
            r->head.len = 0;
        } else {
            block_open(r, tight(r));
            static const char hashes[] = "###### ";
            const unsigned lv = ((const MD_BLOCK_H_DETAIL *)detail)->level;
            emits(r, hashes + 6 - (lv >= 1 && lv <= 6 ? lv : 1));
            r->leaf = L_HEAD;
        }
        break;
    case MD_BLOCK_CODE: {
        block_open(r, tight(r));
        const MD_BLOCK_CODE_DETAIL *d = detail;
        r->leaf = L_CODE;
        r->block_start = r->out.len;
        r->code.len = 0;
        r->lang.len = 0;
        put_attr(&r->lang, &d->lang);
        break;
    }
    case MD_BLOCK_HTML:
    case MD_BLOCK_P:
        block_open(r, tight(r));
        r->leaf = L_PARA;
        break;
    case MD_BLOCK_TABLE: {
        const MD_BLOCK_TABLE_DETAIL *d = detail;
        const double cells = (double)d->col_count * (d->head_row_count + d->body_row_count);
        if (cells > (double)TABLE_CELLS_PER_BYTE * (double)r->body_len + 65536.0) {
            const size_t line = line_of(r, r->last != NULL ? r->last : r->body);
            RERR(r,
                 "%s: a table after line %zu has %u columns and %u rows, too many cells "
                 "for the text's size",
                 r->c->source, line, d->col_count, d->head_row_count + d->body_row_count);
            return fail(r, CTN_EFORMAT);
        }
        block_open(r, tight(r));
        r->table_start = r->out.len;
        r->header_end = SIZE_MAX;
        r->aligns.len = 0;
        break;
    }
    case MD_BLOCK_THEAD:
    case MD_BLOCK_TBODY: break;
    case MD_BLOCK_TR: r->col = 0; break;
    case MD_BLOCK_TH:
    case MD_BLOCK_TD:
        if (type == MD_BLOCK_TH) {
            const char a = (char)((const MD_BLOCK_TD_DETAIL *)detail)->align;
            ctn_sb_put(&r->aligns, &a, 1);
        }
        emits(r, r->col == 0 ? "| " : " ");
        r->leaf = L_CELL;
        break;
    }
    return check(r);
}

/* The fence of a code block: one backtick longer than the longest run in its text. */
static size_t fence_len(const ctn_strbuf *code) {
    size_t best = 0, run = 0;
    for (size_t i = 0; i < code->len; i++) {
        run = code->p[i] == '`' ? run + 1 : 0;
        if (run > best) best = run;
    }
    return best + 1 > 3 ? best + 1 : 3;
}

static void put_fence(md_state *r, size_t n) {
    static const char ticks[] = "````````````````";
    while (n > 0) {
        const size_t k = n < sizeof ticks - 1 ? n : sizeof ticks - 1;
        emit(r, ticks, k, false);
        n -= k;
    }
}

static int leave_block(MD_BLOCKTYPE type, void *detail, void *ud) {
    md_state *r = ud;
    (void)detail;
    if (check(r)) return 1;
    switch (type) {
    case MD_BLOCK_DOC:
    case MD_BLOCK_HR: break;
    case MD_BLOCK_QUOTE:
    case MD_BLOCK_UL:
    case MD_BLOCK_OL:
        end_implicit(r);
        end_line(r);
        /* md4c's events are not always balanced (0.4.8 can leave an image twice), so a
         * leave that does not match the open container is ignored rather than trusted. */
        if (r->depth > 0 && r->stack[r->depth - 1].kind == (type == MD_BLOCK_QUOTE ? C_QUOTE
                                                            : type == MD_BLOCK_UL  ? C_UL
                                                                                   : C_OL))
            r->nest -= r->stack[--r->depth].kind == C_QUOTE;
        r->need_blank = true;
        break;
    case MD_BLOCK_LI: {
        end_implicit(r);
        end_line(r);
        if (r->depth == 0 || r->stack[r->depth - 1].kind != C_LI) break;
        /* An empty item still shows its marker. */
        if (!r->stack[r->depth - 1].marked) {
            write_prefix(r);
            newline(r);
        }
        r->depth--;
        r->nest--;
        r->need_blank = true;
        break;
    }
    case MD_BLOCK_H:
        if (r->in_heading) {
            r->in_heading = false;
            if (check(r)) return 1;
            return push_heading(r, ((const MD_BLOCK_H_DETAIL *)detail)->level);
        }
        block_close(r);
        break;
    case MD_BLOCK_CODE: {
        /* A fenced block whatever the source used (indented code too), its text verbatim;
         * the fence is longer than any run of backticks inside, so it stays one block. */
        const size_t f = fence_len(&r->code);
        put_fence(r, f);
        for (size_t i = 0; i < r->lang.len; i++)
            if (r->lang.p[i] != '`' && r->lang.p[i] != '\n') emit(r, r->lang.p + i, 1, false);
        newline(r);
        emit(r, r->code.p != NULL ? r->code.p : "", r->code.len, false);
        end_line(r);
        put_fence(r, f);
        const size_t end = r->out.len;
        block_close(r);
        if (!r->out.oom) add_range(r, (range){r->block_start, end, end, false});
        break;
    }
    case MD_BLOCK_HTML:
    case MD_BLOCK_P: block_close(r); break;
    case MD_BLOCK_TABLE: {
        end_line(r);
        const size_t end = r->out.len > r->table_start ? r->out.len - 1 : r->table_start;
        const size_t he = r->header_end < end ? r->header_end : end;
        block_close(r);
        if (!r->out.oom) add_range(r, (range){r->table_start, end, he, true});
        break;
    }
    case MD_BLOCK_THEAD:
        /* The delimiter line, with the columns' alignment. */
        for (size_t i = 0; i < r->aligns.len; i++) {
            static const char *const delim[] = {" --- |", " :--- |", " :---: |", " ---: |"};
            const unsigned a = (unsigned char)r->aligns.p[i];
            if (i == 0) emits(r, "|");
            emits(r, delim[a < 4 ? a : 0]);
        }
        end_line(r);
        r->header_end = r->out.len;
        break;
    case MD_BLOCK_TBODY: break;
    case MD_BLOCK_TR: end_line(r); break;
    case MD_BLOCK_TH:
    case MD_BLOCK_TD:
        emits(r, " |");
        r->leaf = L_NONE;
        r->col++;
        break;
    }
    return check(r);
}

static int enter_span(MD_SPANTYPE type, void *detail, void *ud) {
    md_state *r = ud;
    if (type != MD_SPAN_IMG) return check(r);
    if (r->nimg == MAX_IMAGES) {
        const size_t line = line_of(r, r->last != NULL ? r->last : r->body);
        RERR(r, "%s: images nest more than %d deep in alt text (line %zu)", r->c->source,
             MAX_IMAGES, line);
        return fail(r, CTN_EFORMAT);
    }
    ctn_strbuf src = {0};
    put_attr(&src, &((const MD_SPAN_IMG_DETAIL *)detail)->src);
    ctn_val *v = src.oom ? NULL : ctn_val_str(src.p ? src.p : "", src.len);
    ctn_sb_free(&src);
    if (v == NULL) return fail(r, CTN_ENOMEM);
    r->img[r->nimg].alt_start = r->alt.len;
    r->img[r->nimg].src = v;
    r->nimg++;
    return check(r);
}

static int leave_span(MD_SPANTYPE type, void *detail, void *ud) {
    md_state *r = ud;
    (void)detail;
    if (type != MD_SPAN_IMG) return check(r);
    if (check(r)) return 1;
    if (r->nimg == 0) return 0; /* md4c 0.4.8 sometimes leaves an image twice */
    r->nimg--;
    ctn_val *src = r->img[r->nimg].src;
    const size_t a = r->img[r->nimg].alt_start;
    if (r->images == NULL && (r->images = ctn_val_arr()) == NULL) {
        ctn_val_unref(src);
        return fail(r, CTN_ENOMEM);
    }
    ctn_val *o = ctn_val_obj();
    int rc = o != NULL ? 0 : CTN_ENOMEM;
    if (rc == 0)
        rc = ctn_val_set(o, "alt", ctn_val_str(r->alt.p ? r->alt.p + a : "", r->alt.len - a));
    if (rc == 0)
        rc = ctn_val_set(o, "src", src);
    else
        ctn_val_unref(src);
    if (rc == 0)
        rc = ctn_val_push(r->images, o);
    else
        ctn_val_unref(o);
    if (r->nimg == 0) r->alt.len = 0;
    return rc != 0 ? fail(r, rc) : 0;
}

static int on_text(MD_TEXTTYPE type, const MD_CHAR *s, MD_SIZE size, void *ud) {
    md_state *r = ud;
    if (check(r)) return 1;
    if (s >= r->body && s + size <= r->body + r->body_len) r->last = s + size;
    char tmp[4];
    size_t n = size;
    switch (type) {
    case MD_TEXT_NULLCHAR:
        s = "\xEF\xBF\xBD";
        n = 3;
        break;
    case MD_TEXT_BR:
    case MD_TEXT_SOFTBR:
        /* A line break stays a line break in a paragraph, and is a space where the text
         * must stay on one line (headings, cells, alt text). */
        s = r->in_heading || r->leaf == L_HEAD || r->leaf == L_CELL ? " " : "\n";
        n = 1;
        break;
    case MD_TEXT_ENTITY: {
        const size_t k = decode_entity(s, size, tmp);
        if (k > 0) {
            s = tmp;
            n = k;
        }
        break;
    }
    default: break;
    }
    if (r->nimg > 0) ctn_sb_put(&r->alt, *s == '\n' && n == 1 ? " " : s, n);
    if (r->in_heading) {
        ctn_sb_put(&r->head, s, n);
    } else if (r->leaf == L_CODE) {
        ctn_sb_put(&r->code, s, n);
    } else {
        if (r->leaf == L_NONE) {
            /* Text straight in an item of a tight list: a paragraph without the block. */
            block_open(r, true);
            r->leaf = L_IMPLICIT;
        }
        emit(r, s, n, r->leaf == L_CELL);
    }
    return check(r);
}

/* ---- front matter -------------------------------------------------------------------------- */

static bool all_of(const char *s, size_t n, const char *set) {
    for (size_t i = 0; i < n; i++)
        if (strchr(set, s[i]) == NULL || s[i] == '\0') return false;
    return true;
}

static bool is_one_of(const char *s, size_t n, const char *const *words) {
    for (; *words != NULL; words++)
        if (strlen(*words) == n && memcmp(*words, s, n) == 0) return true;
    return false;
}

/*
 * A plain scalar resolved by the YAML 1.2 core schema: null, booleans, integers (decimal,
 * 0o octal, 0x hex) that fit 64 bits, floats (with .inf and .nan); anything else, and every
 * quoted or explicitly tagged scalar, is a string. An integer past 64 bits stays a string
 * rather than lose digits as a double.
 */
static ctn_val *scalar_value(const char *s, size_t n, bool plain) {
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    static const char *const infs[] = {".inf", ".Inf", ".INF", NULL};
    static const char *const nans[] = {".nan", ".NaN", ".NAN", NULL};
    if (!plain) return ctn_val_str(s, n);
    if (is_one_of(s, n, nulls)) return ctn_val_null();
    if (is_one_of(s, n, trues)) return ctn_val_bool(1);
    if (is_one_of(s, n, falses)) return ctn_val_bool(0);
    if (is_one_of(s, n, nans)) return ctn_val_num(NAN);
    if (n > 1 && (s[0] == '-' || s[0] == '+') && is_one_of(s + 1, n - 1, infs))
        return ctn_val_num(s[0] == '-' ? -INFINITY : INFINITY);
    if (is_one_of(s, n, infs)) return ctn_val_num(INFINITY);
    if (n > 64) return ctn_val_str(s, n);
    char buf[72];
    memcpy(buf, s, n);
    buf[n] = '\0';
    const char *digits = buf;
    int base = 10;
    bool neg = false;
    if (n > 2 && buf[0] == '0' && buf[1] == 'o' && all_of(buf + 2, n - 2, "01234567")) {
        base = 8;
        digits = buf + 2;
    } else if (n > 2 && buf[0] == '0' && buf[1] == 'x' &&
               all_of(buf + 2, n - 2, "0123456789abcdefABCDEF")) {
        base = 16;
        digits = buf + 2;
    } else {
        size_t i = buf[0] == '-' || buf[0] == '+' ? 1 : 0;
        if (i < n && all_of(buf + i, n - i, "0123456789")) {
            neg = buf[0] == '-';
            digits = buf + i;
        } else {
            digits = NULL;
        }
    }
    if (digits != NULL) {
        uint64_t v = 0;
        bool over = false;
        for (const char *p = digits; *p; p++) {
            const unsigned d =
                *p <= '9' ? (unsigned)(*p - '0') : (unsigned)((*p | 0x20) - 'a' + 10);
            if (v > (UINT64_MAX - d) / (unsigned)base) over = true;
            v = v * (unsigned)base + d;
        }
        if (!over && (neg ? v <= (uint64_t)INT64_MAX + 1 : v <= (uint64_t)INT64_MAX))
            return ctn_val_int(neg ? (int64_t)(0 - v) : (int64_t)v);
        return ctn_val_str(s, n);
    }
    /* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
    size_t i = buf[0] == '-' || buf[0] == '+' ? 1 : 0, mant = 0;
    while (i < n && buf[i] >= '0' && buf[i] <= '9')
        i++, mant++;
    if (i < n && buf[i] == '.') {
        i++;
        size_t frac = 0;
        while (i < n && buf[i] >= '0' && buf[i] <= '9')
            i++, frac++;
        if (mant == 0 && frac == 0) return ctn_val_str(s, n);
        mant += frac;
    }
    if (mant == 0) return ctn_val_str(s, n);
    if (i < n && (buf[i] == 'e' || buf[i] == 'E')) {
        i++;
        if (i < n && (buf[i] == '-' || buf[i] == '+')) i++;
        size_t e = 0;
        while (i < n && buf[i] >= '0' && buf[i] <= '9')
            i++, e++;
        if (e == 0) return ctn_val_str(s, n);
    }
    if (i != n) return ctn_val_str(s, n);
    return ctn_val_num(strtod(buf, NULL));
}

/* One open mapping or sequence of the front matter. */
typedef struct {
    ctn_val *v;
    ctn_val *key; /* a mapping's key waiting for its value */
} fm_frame;

/*
 * The front matter (n bytes at s, from the file's line 2) as an object through libyaml's
 * event parser, with an explicit stack instead of recursion. Aliases are refused rather than
 * expanded (an alias can point back at its own ancestor, and nested aliases grow
 * exponentially); the front matter must be one mapping, or nothing.
 */
static int parse_front_matter(md_state *r, const char *s, size_t n) {
    char *err = r->err;
    const size_t errcap = r->errcap;
    const char *src = r->c->source;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return CTN_ENOMEM;
    yaml_parser_set_input_string(&p, (const unsigned char *)s, n);
    fm_frame st[FM_MAX_DEPTH];
    size_t depth = 0, ndocs = 0;
    ctn_val *root = NULL;
    int rc = 0;
    bool done = false;
    while (rc == 0 && !done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            if (p.error == YAML_MEMORY_ERROR) {
                rc = CTN_ENOMEM;
            } else if (p.error == YAML_READER_ERROR) {
                ERR("%s: front matter: %s at byte %zu", src, p.problem ? p.problem : "bad input",
                    (size_t)(s - r->text) + p.problem_offset);
                rc = CTN_EFORMAT;
            } else {
                ERR("%s: front matter, line %zu, column %zu: %s%s%s", src,
                    (size_t)p.problem_mark.line + 2, (size_t)p.problem_mark.column + 1,
                    p.problem ? p.problem : "invalid YAML", p.context ? " " : "",
                    p.context ? p.context : "");
                rc = CTN_EFORMAT;
            }
            break;
        }
        const size_t line = (size_t)ev.start_mark.line + 2, col = (size_t)ev.start_mark.column + 1;
        ctn_val *v = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_DOCUMENT_START_EVENT:
            if (++ndocs > 1) {
                ERR("%s: front matter, line %zu: more than one YAML document", src, line);
                rc = CTN_EFORMAT;
            }
            break;
        case YAML_ALIAS_EVENT:
            ERR("%s: front matter, line %zu, column %zu: aliases (*%s) are not supported", src,
                line, col, (const char *)ev.data.alias.anchor);
            rc = CTN_EFORMAT;
            break;
        case YAML_SCALAR_EVENT: {
            const char *t = (const char *)ev.data.scalar.value;
            const size_t tn = ev.data.scalar.length;
            if (depth > 0 && st[depth - 1].v->kind == CTN_VOBJ && st[depth - 1].key == NULL) {
                if ((st[depth - 1].key = ctn_val_str(t, tn)) == NULL) rc = CTN_ENOMEM;
                break;
            }
            const bool plain = ev.data.scalar.tag == NULL && ev.data.scalar.plain_implicit &&
                               ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            if ((v = scalar_value(t, tn, plain)) == NULL) rc = CTN_ENOMEM;
            break;
        }
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (depth > 0 && st[depth - 1].v->kind == CTN_VOBJ && st[depth - 1].key == NULL) {
                ERR("%s: front matter, line %zu, column %zu: a key that is not a scalar", src, line,
                    col);
                rc = CTN_EFORMAT;
            } else if (depth == FM_MAX_DEPTH) {
                ERR("%s: front matter, line %zu: nests more than %d deep", src, line, FM_MAX_DEPTH);
                rc = CTN_EFORMAT;
            } else {
                ctn_val *k = ev.type == YAML_MAPPING_START_EVENT ? ctn_val_obj() : ctn_val_arr();
                if (k == NULL)
                    rc = CTN_ENOMEM;
                else
                    st[depth++] = (fm_frame){k, NULL};
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth == 0) break; /* libyaml pairs them; a stray end changes nothing */
            v = st[--depth].v;
            ctn_val_unref(st[depth].key);
            break;
        default: break;
        }
        /* A complete value joins its container, or is the root. */
        if (v != NULL && rc == 0) {
            if (depth == 0) {
                root = v;
            } else if (st[depth - 1].v->kind == CTN_VARR) {
                rc = ctn_val_push(st[depth - 1].v, v);
            } else {
                ctn_val *k = st[depth - 1].key;
                st[depth - 1].key = NULL;
                rc = ctn_val_setk(st[depth - 1].v, k->u.str.p, k->u.str.len, v);
                ctn_val_unref(k);
                if (rc == 0 && depth == 1 && ctn_val_len(st[0].v) > FM_MAX_FIELDS) {
                    ERR("%s: front matter, line %zu: more than %d fields", src, line,
                        FM_MAX_FIELDS);
                    rc = CTN_EFORMAT;
                }
            }
        } else if (v != NULL) {
            ctn_val_unref(v);
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    while (depth > 0) {
        depth--;
        ctn_val_unref(st[depth].v);
        ctn_val_unref(st[depth].key);
    }
    if (rc == 0 && root != NULL && root->kind != CTN_VOBJ) {
        ERR("%s: front matter is %s, not a mapping of fields", src,
            root->kind == CTN_VARR ? "a sequence" : "a scalar");
        rc = CTN_EFORMAT;
    }
    if (rc != 0) {
        ctn_val_unref(root);
        return rc;
    }
    r->fm = root;
    for (size_t i = 0; root != NULL && i < root->u.obj.n; i++) {
        const ctn_val *k = root->u.obj.keys[i];
        if (is_reserved(k->u.str.p, k->u.str.len))
            warn(r->c, "%s: front matter field '%s' is set by the loader; its own value is kept",
                 src, k->u.str.p);
    }
    return 0;
}

/* Whether the line at s (up to n bytes) is exactly word, ending with "\n", "\r\n" or the
 * text; *next gets the offset after it. */
static bool line_is(const char *s, size_t n, const char *word, size_t *next) {
    const size_t w = strlen(word);
    if (n < w || memcmp(s, word, w) != 0) return false;
    size_t i = w;
    if (i < n && s[i] == '\r') i++;
    if (i < n && s[i] == '\n')
        i++;
    else if (i != n)
        return false;
    *next = i;
    return true;
}

/*
 * The front matter at the start of text: a first line "---", up to a line "---" or "...".
 * *body gets the offset of the Markdown after it (0 when there is none: without its closing
 * line, a first "---" is Markdown, a thematic break).
 */
static int front_matter(md_state *r, size_t *body) {
    size_t at;
    *body = 0;
    if (!line_is(r->text, r->len, "---", &at)) return 0;
    const size_t start = at;
    while (at < r->len) {
        size_t next;
        if (line_is(r->text + at, r->len - at, "---", &next) ||
            line_is(r->text + at, r->len - at, "...", &next)) {
            char *err = r->err;
            const size_t errcap = r->errcap;
            if (at - start > FM_MAX_BYTES) {
                ERR("%s: front matter is longer than %d KiB", r->c->source, FM_MAX_BYTES / 1024);
                return CTN_EFORMAT;
            }
            const int rc = parse_front_matter(r, r->text + start, at - start);
            if (rc == 0) *body = at + next;
            return rc;
        }
        const char *nl = memchr(r->text + at, '\n', r->len - at);
        if (nl == NULL) break;
        at = (size_t)(nl - r->text) + 1;
    }
    return 0;
}

/* ---- the loader ---------------------------------------------------------------------------- */

static void warn(const ctn_load_ctx *c, const char *fmt, ...) {
    if (c->warn == NULL) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->warn(c->warn_ud, msg);
}

/* Puts the documents at the end of docs, all or none. */
static int append_all(ctn_val *docs, ctn_val *add) {
    const size_t n0 = docs->u.arr.n;
    for (size_t i = 0; i < add->u.arr.n; i++)
        if (ctn_val_push(docs, ctn_val_ref(add->u.arr.items[i])) < 0) {
            while (docs->u.arr.n > n0)
                ctn_val_unref(docs->u.arr.items[--docs->u.arr.n]);
            return CTN_ENOMEM;
        }
    return 0;
}

/*
 * The loader proper, on text that is already valid UTF-8 without a BOM (len bytes). When
 * ctn_text_decode joins the tree, ctn_load_markdown decodes with it and calls this on its
 * output instead of checking the bytes itself.
 */
static int load_text(const ctn_load_ctx *c, const char *text, size_t len, ctn_val *docs, char *err,
                     size_t errcap) {
    /* md4c 0.4.8 reads a byte past the end of its input in places (a link opener at the
     * end, a container mark; fixed in 0.5), and what it finds there can stretch the last
     * run of text past the end. It reads a copy with a NUL after it, which ends every
     * construct it might probe. */
    char *copy = ctn__strndup(text, len);
    md_state r = {.c = c, .err = err, .errcap = errcap, .text = copy, .len = len};
    r.docs = copy != NULL ? ctn_val_arr() : NULL;
    if (r.docs == NULL) {
        free(copy);
        ERR("%s: out of memory", c->source);
        return CTN_ENOMEM;
    }
    size_t body = 0;
    int rc = front_matter(&r, &body);
    if (rc == 0) {
        r.body = copy + body;
        r.body_len = len - body;
        static const MD_PARSER parser = {
            .flags = MD_DIALECT_GITHUB,
            .enter_block = enter_block,
            .leave_block = leave_block,
            .enter_span = enter_span,
            .leave_span = leave_span,
            .text = on_text,
        };
        const int mrc = md_parse(r.body, (MD_SIZE)r.body_len, &parser, &r);
        if (r.rc == 0 && mrc != 0) r.rc = CTN_ENOMEM; /* md4c's own malloc failed */
        if (r.rc == 0) flush_section(&r);
        rc = r.rc;
    }
    if (rc == 0) rc = append_all(docs, r.docs);
    if (rc == CTN_ENOMEM) ERR("%s: out of memory", c->source);
    for (size_t i = 0; i < r.npath; i++)
        free(r.path[i].text);
    for (size_t i = 0; i < r.nimg; i++)
        ctn_val_unref(r.img[i].src);
    ctn_sb_free(&r.out);
    ctn_sb_free(&r.head);
    ctn_sb_free(&r.code);
    ctn_sb_free(&r.lang);
    ctn_sb_free(&r.aligns);
    ctn_sb_free(&r.alt);
    free(r.ranges);
    ctn_val_unref(r.images);
    ctn_val_unref(r.fm);
    ctn_val_unref(r.docs);
    free(copy);
    return rc;
}

int ctn_load_markdown(const ctn_load_ctx *c, const char *data, size_t n, ctn_val *docs, char *err,
                      size_t errcap) {
    if (c == NULL || c->source == NULL || docs == NULL || docs->kind != CTN_VARR ||
        (data == NULL && n > 0)) {
        ERR("ctn_load_markdown: needs a context with a source, the data and an array");
        return CTN_EINVAL;
    }
    if (n > UINT32_MAX) {
        ERR("%s: %zu bytes is more than the Markdown parser takes (4 GiB)", c->source, n);
        return CTN_ERANGE;
    }
    /* The bytes are decoded as every loader's are (BOM, UTF-16, invalid runs as U+FFFD
     * with a warning each), so md4c only ever sees valid UTF-8. */
    char *text = NULL;
    size_t len = 0;
    int rc = ctn_text_decode(c, data, n, &text, &len);
    if (rc < 0) {
        ERR("%s: out of memory", c->source);
        return rc;
    }
    rc = load_text(c, text, len, docs, err, errcap);
    free(text);
    return rc;
}
