/*
 * The Markdown loader (stdlib/loader.h, load_md.c): sections and their heading paths, the
 * text written back from the parse tree (inline markup, lists, quotes, code, tables,
 * entities, images), the "blocks" ranges, front matter, the errors (invalid UTF-8, YAML,
 * nesting), that a failure leaves docs alone, and allocation failures.
 */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "loader.h"
#include "str.h"
#include "test.h"
#include "unicode.h"
#include "value.h"

static char err[512];
static ctn_strbuf warnings;

static void on_warn(void *ud, const char *msg) {
    (void)ud;
    ctn_sb_puts(&warnings, msg);
    ctn_sb_puts(&warnings, "\n");
}

static int load_n(const char *s, size_t n, ctn_val *docs) {
    ctn_load_ctx c = {.source = "doc.md", .warn = on_warn};
    err[0] = '\0';
    return ctn_load_markdown(&c, s, n, docs, err, sizeof err);
}

/* The documents of s, or NULL (the error printed). */
static ctn_val *load(const char *s) {
    ctn_val *docs = ctn_val_arr();
    int rc = load_n(s, strlen(s), docs);
    if (rc != 0) {
        printf("  load failed (%d): %s\n", rc, err);
        ctn_val_unref(docs);
        return NULL;
    }
    return docs;
}

static const char *text(const ctn_val *docs, size_t i) {
    const ctn_val *d = ctn_val_at(docs, i);
    return d != NULL && d->kind == CTN_VDOC ? d->u.doc.text->u.str.p : NULL;
}

static const char *meta_str(const ctn_val *docs, size_t i, const char *key) {
    const ctn_val *v = ctn_val_get(ctn_val_at(docs, i), key);
    return v != NULL && v->kind == CTN_VSTR ? v->u.str.p : NULL;
}

static long long meta_int(const ctn_val *docs, size_t i, const char *key) {
    const ctn_val *v = ctn_val_get(ctn_val_at(docs, i), key);
    return v != NULL && v->kind == CTN_VINT ? (long long)v->u.i : -999;
}

/* The metadata value under key as compact JSON (malloc'd), for whole-value checks. */
static char *meta_json(const ctn_val *docs, size_t i, const char *key) {
    const ctn_val *v = ctn_val_get(ctn_val_at(docs, i), key);
    return v != NULL ? ctn_val_to_json(v, 0) : ctn__strdup("(none)");
}

#define CHECK_META_JSON(docs, i, key, want)                                                        \
    do {                                                                                           \
        char *j_ = meta_json(docs, i, key);                                                        \
        CHECK_STR(j_, want);                                                                       \
        free(j_);                                                                                  \
    } while (0)

/* Loads s as one section and checks its text. */
static void check_text(const char *s, const char *want) {
    ctn_val *docs = load(s);
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK_STR(text(docs, 0), want);
    ctn_val_unref(docs);
}

/* The bytes of the section text that blocks entry b names. */
static char *block_slice(const ctn_val *docs, size_t i, size_t b, const char **kind,
                         long long *header_end) {
    const ctn_val *e = ctn_val_at(ctn_val_get(ctn_val_at(docs, i), "blocks"), b);
    const char *t = text(docs, i);
    if (e == NULL || t == NULL || ctn_val_len(e) < 3) return NULL;
    const long long a = ctn_val_at(e, 0)->u.i, z = ctn_val_at(e, 1)->u.i;
    *kind = ctn_val_at(e, 2)->u.str.p;
    *header_end = ctn_val_len(e) > 3 ? ctn_val_at(e, 3)->u.i : -1;
    if (a < 0 || z < a || (size_t)z > strlen(t)) return NULL;
    return ctn__strndup(t + a, (size_t)(z - a));
}

TEST(sections_follow_the_heading_path) {
    ctn_val *docs = load("# Install\nintro\n\n## Linux\napt\n\n### Debian\ndeb\n\n"
                         "## macOS\nbrew\n\n# Use\nrun\n");
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 5);
    CHECK_STR(text(docs, 0), "intro");
    CHECK_STR(meta_str(docs, 0, "section"), "Install");
    CHECK_EQ_INT(meta_int(docs, 0, "level"), 1);
    CHECK_STR(text(docs, 1), "apt");
    CHECK_STR(meta_str(docs, 1, "section"), "Install > Linux");
    CHECK_META_JSON(docs, 1, "headings", "[\"Install\",\"Linux\"]");
    CHECK_EQ_INT(meta_int(docs, 1, "level"), 2);
    CHECK_STR(meta_str(docs, 2, "section"), "Install > Linux > Debian");
    CHECK_EQ_INT(meta_int(docs, 2, "level"), 3);
    /* A heading after a deeper one pops the path back to its level. */
    CHECK_STR(text(docs, 3), "brew");
    CHECK_STR(meta_str(docs, 3, "section"), "Install > macOS");
    CHECK_STR(text(docs, 4), "run");
    CHECK_META_JSON(docs, 4, "headings", "[\"Use\"]");
    CHECK_STR(meta_str(docs, 4, "source"), "doc.md");
    ctn_val_unref(docs);
}

TEST(setext_and_skipped_levels) {
    ctn_val *docs = load("Guide\n=====\n\nabout\n\nSetup *now*\n-----------\n\nsteps\n\n"
                         "#### Deep `x`\n\ndeep\n\n### Mid\n\nmid\n");
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 4);
    CHECK_STR(meta_str(docs, 0, "section"), "Guide");
    CHECK_STR(text(docs, 1), "steps");
    /* Heading text is plain: inline markup dropped, code spans keep their text. */
    CHECK_STR(meta_str(docs, 1, "section"), "Guide > Setup now");
    CHECK_STR(meta_str(docs, 2, "section"), "Guide > Setup now > Deep x");
    CHECK_EQ_INT(meta_int(docs, 2, "level"), 4);
    /* Level 3 is above the level 4 heading, below the level 2 one. */
    CHECK_STR(meta_str(docs, 3, "section"), "Guide > Setup now > Mid");
    CHECK_EQ_INT(meta_int(docs, 3, "level"), 3);
    ctn_val_unref(docs);
}

TEST(text_before_the_first_heading_and_empty_sections) {
    ctn_val *docs = load("Preamble text.\n\n# A\n\n## B\n\n# C\n\nc body\n\n# D\n");
    CHECK(docs != NULL);
    /* A and B and D have no text of their own: no documents. */
    CHECK_EQ_INT(ctn_val_len(docs), 2);
    CHECK_STR(text(docs, 0), "Preamble text.");
    CHECK_STR(meta_str(docs, 0, "section"), "");
    CHECK_META_JSON(docs, 0, "headings", "[]");
    CHECK_EQ_INT(meta_int(docs, 0, "level"), 0);
    CHECK_STR(text(docs, 1), "c body");
    CHECK_STR(meta_str(docs, 1, "section"), "C");
    /* No images, no blocks: the keys are absent. */
    CHECK(ctn_val_get(ctn_val_at(docs, 1), "images") == NULL);
    CHECK(ctn_val_get(ctn_val_at(docs, 1), "blocks") == NULL);
    ctn_val_unref(docs);

    docs = ctn_val_arr();
    CHECK_EQ_INT(load_n("", 0, docs), 0);
    CHECK_EQ_INT(load_n("\n\n   \n", 5, docs), 0);
    CHECK_EQ_INT(load_n("# Only\n## Headings\n", 19, docs), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 0);
    ctn_val_unref(docs);
}

TEST(headings_inside_quotes_and_lists_are_text) {
    ctn_val *docs = load("# Top\n\n> # Quoted\n> body\n\n- ## Item heading\n");
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK_STR(text(docs, 0), "> # Quoted\n>\n> body\n\n- ## Item heading");
    CHECK_STR(meta_str(docs, 0, "section"), "Top");
    ctn_val_unref(docs);
}

TEST(inline_markup_links_entities) {
    check_text("Some *emphasis*, **strong**, ~~gone~~ and `code *kept*`.\nNext line.",
               "Some emphasis, strong, gone and code *kept*.\nNext line.");
    check_text("See [the guide](https://example.com/g \"title\") and <https://x.org>.",
               "See the guide and https://x.org.");
    check_text("Auto www.example.com link", "Auto www.example.com link");
    check_text("&amp; &lt;b&gt; &quot;q&quot; &apos; &copy; &reg; &hellip; &mdash; &ndash; "
               "&nbsp;.",
               "& <b> \"q\" ' \xC2\xA9 \xC2\xAE \xE2\x80\xA6 \xE2\x80\x94 \xE2\x80\x93 "
               "\xC2\xA0.");
    check_text("&#65;&#x42;&#X43; &#0; &#xD800; &#x110000; &unknown; &AMP;",
               "ABC \xEF\xBF\xBD \xEF\xBF\xBD \xEF\xBF\xBD &unknown; &AMP;");
    /* Raw HTML is text, not rendered. */
    check_text("a <span class=\"x\">b</span> c", "a <span class=\"x\">b</span> c");
    check_text("<div>\n*raw*\n</div>", "<div>\n*raw*\n</div>");
    check_text("hard  \nbreak", "hard\nbreak");
    check_text("para one\n\n\n\npara two\n", "para one\n\npara two");
    check_text("---\n\nafter rule", "---\n\nafter rule");

    /* A NUL becomes U+FFFD. */
    ctn_val *docs = ctn_val_arr();
    CHECK_EQ_INT(load_n("a\0b", 3, docs), 0);
    CHECK_STR(text(docs, 0), "a\xEF\xBF\xBD"
                             "b");
    ctn_val_unref(docs);
}

TEST(images_keep_alt_text_and_go_to_metadata) {
    ctn_val *docs = load("# Pics\n\n![The *logo*](img/logo.png \"Logo\") and ![](empty.png) and "
                         "![a &amp; b](x%20y.png).\n\n# None\n\nno images\n");
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 2);
    CHECK_STR(text(docs, 0), "The logo and  and a & b.");
    CHECK_META_JSON(docs, 0, "images",
                    "[{\"alt\":\"The logo\",\"src\":\"img/logo.png\"},{\"alt\":\"\",\"src\":"
                    "\"empty.png\"},{\"alt\":\"a & b\",\"src\":\"x%20y.png\"}]");
    CHECK(ctn_val_get(ctn_val_at(docs, 1), "images") == NULL);
    ctn_val_unref(docs);
}

TEST(lists_and_quotes) {
    check_text("- one\n- two\n  - nested *a*\n  - [x] done\n  - [ ] todo\n- three",
               "- one\n- two\n  - nested a\n  - [x] done\n  - [ ] todo\n- three");
    check_text("3. three\n4. four\n\n   more four\n5. five",
               "3. three\n\n4. four\n\n   more four\n\n5. five");
    check_text("* star\n+ plus", "- star\n\n- plus");
    check_text("1. a\n   - b\n     1. c", "1. a\n   - b\n     1. c");
    check_text("- - x", "- - x");
    check_text("-\n- y", "-\n- y");
    check_text("> quote\nlazy\n>\n> > inner\n> back", "> quote\n> lazy\n>\n> > inner\n> > back");
    check_text("- > quoted item\n  more", "- > quoted item\n  > more");
    check_text("> - a\n>\n>   b", "> - a\n>\n>   b");
    check_text("Para\n\n- list\n\nafter", "Para\n\n- list\n\nafter");
}

TEST(code_blocks_are_verbatim_and_never_headings) {
    const char *src = "# Real\n\nBefore.\n\n```python title\n# not a heading\n"
                      "Not a setext\n===\n  indented *kept*\n```\n\nAfter.\n";
    ctn_val *docs = load(src);
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    const char *want_code = "```python\n# not a heading\nNot a setext\n===\n  indented *kept*\n```";
    char want[256];
    snprintf(want, sizeof want, "Before.\n\n%s\n\nAfter.", want_code);
    CHECK_STR(text(docs, 0), want);
    snprintf(want, sizeof want, "[[9,%zu,\"code\"]]", 9 + strlen(want_code));
    CHECK_META_JSON(docs, 0, "blocks", want);
    const char *kind = NULL;
    long long he = 0;
    char *slice = block_slice(docs, 0, 0, &kind, &he);
    CHECK_STR(slice, want_code);
    CHECK_STR(kind, "code");
    CHECK_EQ_INT(he, -1);
    free(slice);
    ctn_val_unref(docs);

    /* Indented code becomes a fence; a fence is longer than any run of backticks inside. */
    check_text("Text:\n\n    indented\n    ````\n\nend",
               "Text:\n\n`````\nindented\n````\n`````\n\nend");
    check_text("~~~\n```\n~~~", "````\n```\n````");
    check_text("```\n```", "```\n```");
    /* Code in a list keeps the item's indentation on every line. */
    check_text("- item\n\n  ```sh\n  make\n\n  run\n  ```",
               "- item\n\n  ```sh\n  make\n\n  run\n  ```");
    docs = load("- x\n  ```\n  a\n  ```\n");
    CHECK(docs != NULL);
    slice = block_slice(docs, 0, 0, &kind, &he);
    CHECK_STR(slice, "  ```\n  a\n  ```");
    free(slice);
    ctn_val_unref(docs);
}

TEST(tables_rows_and_blocks) {
    const char *src = "## Options\n\nThe options:\n\n| Name | Meaning |\n|:-----|----:|\n"
                      "| `-j` | jobs a\\|b |\n| **v** |\n| x | y | extra |\n\nDone.\n";
    ctn_val *docs = load(src);
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    const char *table = "| Name | Meaning |\n| :--- | ---: |\n| -j | jobs a\\|b |\n| v |  |\n"
                        "| x | y |";
    char want[512];
    snprintf(want, sizeof want, "The options:\n\n%s\n\nDone.", table);
    CHECK_STR(text(docs, 0), want);
    const char *kind = NULL;
    long long he = 0;
    char *slice = block_slice(docs, 0, 0, &kind, &he);
    CHECK_STR(slice, table);
    CHECK_STR(kind, "table");
    /* header_end: just after the delimiter line's newline. */
    const char *t = text(docs, 0);
    CHECK_EQ_INT(he, strstr(t, "| -j") - t);
    CHECK(t[he - 1] == '\n');
    free(slice);
    ctn_val_unref(docs);

    /* A table with no body: header_end is its end. */
    docs = load("| a | b |\n|---| :-: |\n");
    CHECK(docs != NULL);
    CHECK_STR(text(docs, 0), "| a | b |\n| --- | :---: |");
    CHECK_META_JSON(docs, 0, "blocks", "[[0,25,\"table\",25]]");
    ctn_val_unref(docs);

    /* Code and a table in one section, in order; a table in a list keeps its indentation. */
    docs = load("```\nx\n```\n\n- | a |\n  |---|\n  | 1 |\n");
    CHECK(docs != NULL);
    CHECK_META_JSON(docs, 0, "blocks", "[[0,9,\"code\"],[11,36,\"table\",29]]");
    slice = block_slice(docs, 0, 1, &kind, &he);
    CHECK_STR(slice, "- | a |\n  | --- |\n  | 1 |");
    free(slice);
    ctn_val_unref(docs);
}

TEST(a_big_table_is_linear) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "| k | v |\n|---|---|\n");
    for (int i = 0; i < 100000; i++) {
        char row[64];
        snprintf(row, sizeof row, "| key%d | value %d |\n", i, i);
        ctn_sb_puts(&b, row);
    }
    ctn_val *docs = ctn_val_arr();
    clock_t t0 = clock();
    CHECK_EQ_INT(load_n(b.p, b.len, docs), 0);
    const double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(secs < 5.0);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK_CONTAINS(text(docs, 0), "| key99999 | value 99999 |");
    ctn_val_unref(docs);
    ctn_sb_free(&b);

    /* Short rows padded up to a very wide header would cost more than the text. */
    ctn_sb_puts(&b, "|");
    for (int i = 0; i < 20000; i++)
        ctn_sb_puts(&b, "a|");
    ctn_sb_puts(&b, "\n|");
    for (int i = 0; i < 20000; i++)
        ctn_sb_puts(&b, "---|");
    ctn_sb_puts(&b, "\n");
    for (int i = 0; i < 2000; i++)
        ctn_sb_puts(&b, "x\n");
    docs = ctn_val_arr();
    CHECK_EQ_INT(load_n(b.p, b.len, docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "doc.md: a table after line 1 has 20000 columns");
    CHECK_EQ_INT(ctn_val_len(docs), 0);
    ctn_val_unref(docs);
    ctn_sb_free(&b);
}

TEST(front_matter_fields_on_every_section) {
    const char *src = "---\ntitle: \"FAQ: all\"\ntags: [a, b]\ncount: 42\nhex: 0x1F\noct: 0o17\n"
                      "neg: -7\nratio: 2.5\nexp: 1e3\ninf: -.inf\nyes: true\nno: False\n"
                      "nothing: ~\nempty:\nquoted: \"12\"\ntagged: !!str 13\nbig: "
                      "99999999999999999999\nwhen: 2024-05-02\nnested:\n  k: v\n  list:\n"
                      "    - 1\n    - x\n---\nintro\n\n# Q\n\nanswer\n";
    ctn_val *docs = load(src);
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 2);
    CHECK_STR(text(docs, 0), "intro");
    for (size_t i = 0; i < 2; i++) {
        CHECK_STR(meta_str(docs, i, "title"), "FAQ: all");
        CHECK_META_JSON(docs, i, "tags", "[\"a\",\"b\"]");
        CHECK_EQ_INT(meta_int(docs, i, "count"), 42);
        CHECK_STR(meta_str(docs, i, "source"), "doc.md");
    }
    CHECK_EQ_INT(meta_int(docs, 1, "hex"), 31);
    CHECK_EQ_INT(meta_int(docs, 1, "oct"), 15);
    CHECK_EQ_INT(meta_int(docs, 1, "neg"), -7);
    CHECK_META_JSON(docs, 1, "ratio", "2.5");
    CHECK_META_JSON(docs, 1, "exp", "1000.0");
    const ctn_val *inf = ctn_val_get(ctn_val_at(docs, 1), "inf");
    CHECK(inf != NULL && inf->kind == CTN_VNUM && inf->u.num < 0 && isinf(inf->u.num));
    CHECK_META_JSON(docs, 1, "yes", "true");
    CHECK_META_JSON(docs, 1, "no", "false");
    CHECK_META_JSON(docs, 1, "nothing", "null");
    CHECK_META_JSON(docs, 1, "empty", "null");
    CHECK_META_JSON(docs, 1, "quoted", "\"12\"");
    CHECK_META_JSON(docs, 1, "tagged", "\"13\"");
    CHECK_META_JSON(docs, 1, "big", "\"99999999999999999999\"");
    CHECK_META_JSON(docs, 1, "when", "\"2024-05-02\"");
    CHECK_META_JSON(docs, 1, "nested", "{\"k\":\"v\",\"list\":[1,\"x\"]}");
    CHECK_STR(meta_str(docs, 1, "section"), "Q");
    ctn_val_unref(docs);

    /* "..." also closes it; CRLF lines; an empty front matter has no fields. */
    docs = load("---\r\na: 1\r\n...\r\nbody\r\n");
    CHECK(docs != NULL);
    CHECK_EQ_INT(meta_int(docs, 0, "a"), 1);
    CHECK_STR(text(docs, 0), "body");
    ctn_val_unref(docs);
    docs = load("---\n---\nbody\n");
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(ctn_val_at(docs, 0)->u.doc.meta), 4);
    ctn_val_unref(docs);
    /* Without a closing line, "---" is Markdown. */
    check_text("---\ntitle: x\n", "---\n\ntitle: x");
}

TEST(front_matter_errors) {
    ctn_val *docs = ctn_val_arr();
    ctn_val_push(docs, ctn_val_cstr("earlier"));
    const char *bad = "---\ntitle: ok\nkey: [unclosed\nnext: 1\n---\nbody\n";
    CHECK_EQ_INT(load_n(bad, strlen(bad), docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "doc.md: front matter, line 4, column 5: did not find expected ','");
    const char *bad2 = "---\na: 1\n  b: 2\n---\n";
    CHECK_EQ_INT(load_n(bad2, strlen(bad2), docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "doc.md: front matter, line 3, column 4: mapping values are not allowed");
    const char *seq = "---\n- a\n- b\n---\nbody\n";
    CHECK_EQ_INT(load_n(seq, strlen(seq), docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "doc.md: front matter is a sequence, not a mapping");
    const char *scalar = "---\njust text\n---\nbody\n";
    CHECK_EQ_INT(load_n(scalar, strlen(scalar), docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "front matter is a scalar, not a mapping");
    const char *alias = "---\na: &x [1]\nb: *x\n---\n";
    CHECK_EQ_INT(load_n(alias, strlen(alias), docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "front matter, line 3, column 4: aliases (*x) are not supported");
    const char *cplx = "---\n? [a]\n: 1\n---\n";
    CHECK_EQ_INT(load_n(cplx, strlen(cplx), docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "line 2, column 3: a key that is not a scalar");
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "---\n");
    for (int i = 0; i < 65; i++) {
        char line[32];
        snprintf(line, sizeof line, "f%d: %d\n", i, i);
        ctn_sb_puts(&b, line);
    }
    ctn_sb_puts(&b, "---\n");
    CHECK_EQ_INT(load_n(b.p, b.len, docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "line 66: more than 64 fields");
    ctn_sb_free(&b);
    ctn_sb_puts(&b, "---\na: ");
    for (int i = 0; i < 40; i++)
        ctn_sb_puts(&b, "[");
    ctn_sb_puts(&b, "\n---\n");
    CHECK_EQ_INT(load_n(b.p, b.len, docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "nests more than 32 deep");
    ctn_sb_free(&b);
    /* Every failure left docs as it was. */
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK_STR(ctn_val_at(docs, 0)->u.str.p, "earlier");
    ctn_val_unref(docs);
}

TEST(front_matter_cannot_override_the_loaders_keys) {
    ctn_sb_free(&warnings);
    ctn_val *docs = load("---\nsource: evil.md\nsection: X\nlevel: 9\nblocks: []\nok: yes\n---\n"
                         "# Real\n\ntext\n");
    CHECK(docs != NULL);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    CHECK_STR(meta_str(docs, 0, "source"), "doc.md");
    CHECK_STR(meta_str(docs, 0, "section"), "Real");
    CHECK_EQ_INT(meta_int(docs, 0, "level"), 1);
    CHECK(ctn_val_get(ctn_val_at(docs, 0), "blocks") == NULL);
    CHECK_STR(meta_str(docs, 0, "ok"), "yes"); /* YAML 1.2: "yes" is a string */
    CHECK_CONTAINS(warnings.p, "doc.md: front matter field 'source' is set by the loader");
    CHECK_CONTAINS(warnings.p, "field 'section'");
    CHECK_CONTAINS(warnings.p, "field 'level'");
    CHECK_CONTAINS(warnings.p, "field 'blocks'");
    ctn_sb_free(&warnings);
    ctn_val_unref(docs);
}

TEST(invalid_utf8_is_replaced_and_warned_and_a_bom_stripped) {
    ctn_val *docs = ctn_val_arr();
    ctn_val_push(docs, ctn_val_cstr("earlier"));
    ctn_sb_free(&warnings);
    CHECK_EQ_INT(load_n("# T\n\nok \xC3\xA9 \xFF here", 17, docs), 0);
    CHECK_STR(text(docs, 1), "ok \xC3\xA9 \xEF\xBF\xBD here");
    CHECK_CONTAINS(warnings.p, "doc.md: invalid UTF-8 at byte 11 (1 byte replaced by U+FFFD)");
    CHECK_EQ_INT(load_n("abc\xE2\x82", 5, docs), 0); /* cut short at the end */
    CHECK_CONTAINS(warnings.p, "invalid UTF-8 at byte 3");
    CHECK_EQ_INT(load_n("\xED\xA0\x80", 3, docs), 0); /* a surrogate */
    CHECK_CONTAINS(warnings.p, "at byte 0");
    CHECK_EQ_INT(ctn_val_len(docs), 4);
    ctn_sb_free(&warnings);
    ctn_val_unref(docs);
    docs = ctn_val_arr();
    ctn_val_push(docs, ctn_val_cstr("earlier"));
    const char *bom = "\xEF\xBB\xBF---\nt: 1\n---\n# H\n\nbody";
    CHECK_EQ_INT(load_n(bom, strlen(bom), docs), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 2);
    CHECK_STR(text(docs, 1), "body");
    CHECK_EQ_INT(meta_int(docs, 1, "t"), 1);

    ctn_load_ctx c = {.source = "x.md"};
    CHECK_EQ_INT(ctn_load_markdown(&c, NULL, 1, docs, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_load_markdown(NULL, "a", 1, docs, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_load_markdown(&c, "a", 1, ctn_val_at(docs, 0), err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_val_len(docs), 2);
    ctn_val_unref(docs);
}

TEST(hostile_nesting_is_an_error_not_a_crash) {
    ctn_strbuf b = {0};
    for (int i = 0; i < 100000; i++)
        ctn_sb_puts(&b, ">");
    ctn_sb_puts(&b, " deep\n");
    ctn_val *docs = ctn_val_arr();
    CHECK_EQ_INT(load_n(b.p, b.len, docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "doc.md: block quotes and lists nest more than 32 deep");
    ctn_sb_free(&b);

    ctn_sb_puts(&b, "text\n\n");
    for (int i = 0; i < 40; i++) {
        for (int j = 0; j < i; j++)
            ctn_sb_puts(&b, "  ");
        ctn_sb_puts(&b, "- x\n");
    }
    CHECK_EQ_INT(load_n(b.p, b.len, docs), CTN_EFORMAT);
    CHECK_CONTAINS(err, "nest more than 32 deep (after line 34)");
    ctn_sb_free(&b);

    /* 32 levels are fine. */
    for (int i = 0; i < 32; i++)
        ctn_sb_puts(&b, "> ");
    ctn_sb_puts(&b, "ok\n");
    CHECK_EQ_INT(load_n(b.p, b.len, docs), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    ctn_sb_free(&b);

    /* Brackets and emphasis runs: md4c resolves them in linear time. */
    for (int i = 0; i < 200000; i++)
        ctn_sb_puts(&b, i % 2 ? "[*" : "![_");
    clock_t t0 = clock();
    CHECK_EQ_INT(load_n(b.p, b.len, docs), 0);
    CHECK((double)(clock() - t0) / CLOCKS_PER_SEC < 5.0);
    ctn_sb_free(&b);
    ctn_val_unref(docs);
}

/* Two faults of md4c 0.4.8 that the loader works around: it reads a byte past the end of
 * its input (here after a link opener that ends the text), and it can leave an image it
 * never entered. */
TEST(md4c_quirks) {
    ctn_val *docs = ctn_val_arr();
    char *exact = malloc(5); /* exactly the text: nothing after it to stop md4c */
    memcpy(exact, "x [](", 5);
    CHECK_EQ_INT(load_n(exact, 5, docs), 0);
    CHECK_STR(text(docs, 0), "x [](");
    free(exact);
    ctn_val_unref(docs);
    docs = load("a ![i](s.png) [](![)]() b\n\n![j](t.png)\n");
    CHECK(docs != NULL);
    CHECK_STR(text(docs, 0), "a i  b\n\nj");
    CHECK_META_JSON(docs, 0, "images",
                    "[{\"alt\":\"i\",\"src\":\"s.png\"},{\"alt\":\"j\",\"src\":\"t.png\"}]");
    ctn_val_unref(docs);
}

TEST(example_docs_load) {
    static const char *const files[] = {"examples/docs/install.md", "examples/docs/faq.md",
                                        "examples/docs/chains.md"};
    for (size_t f = 0; f < 3; f++) {
        FILE *fp = fopen(files[f], "rb");
        if (fp == NULL) SKIP("%s is missing (run from the source root)", files[f]);
        char buf[8192];
        const size_t n = fread(buf, 1, sizeof buf, fp);
        fclose(fp);
        ctn_val *docs = ctn_val_arr();
        ctn_load_ctx c = {.source = files[f]};
        CHECK_EQ_INT(ctn_load_markdown(&c, buf, n, docs, err, sizeof err), 0);
        CHECK(ctn_val_len(docs) >= 4);
        /* Every blocks range slices a fence or a table out of its text. */
        for (size_t i = 0; i < ctn_val_len(docs); i++) {
            const ctn_val *bl = ctn_val_get(ctn_val_at(docs, i), "blocks");
            for (size_t k = 0; k < ctn_val_len(bl); k++) {
                const char *kind = NULL;
                long long he = 0;
                char *s = block_slice(docs, i, k, &kind, &he);
                CHECK(s != NULL);
                if (s != NULL && strcmp(kind, "code") == 0)
                    CHECK(strncmp(s, "```", 3) == 0 && strcmp(s + strlen(s) - 3, "```") == 0);
                else if (s != NULL)
                    CHECK(s[0] == '|' && s[strlen(s) - 1] == '|');
                free(s);
            }
        }
        if (f == 0) {
            CHECK_STR(meta_str(docs, 1, "section"), "Install > Linux");
            CHECK_META_JSON(docs, 0, "images",
                            "[{\"alt\":\"The build: engine, chains and components link into "
                            "one command\",\"src\":\"images/build.png\"}]");
        }
        if (f == 1) CHECK_STR(meta_str(docs, 0, "title"), "Frequently asked questions");
        ctn_val_unref(docs);
    }
}

/* Fail the N-th allocation for every N, persistently and once: each failure is a clean
 * CTN_ENOMEM that leaves docs as it was (ASan checks for leaks). */
TEST(allocation_failures) {
    const char *src = "---\ntitle: T\ntags: [a, b]\nn: {x: 1}\n---\nintro &amp; *more*\n\n"
                      "# Install\n\n![logo](l.png)\n\n## Linux\n\n- a\n  - b\n\n> q\n\n"
                      "```sh\nmake\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n# End\n\nbye\n";
    for (int once = 0; once < 2; once++) {
        int done = 0, n_fail = 0;
        for (long n = 0; n < 5000 && !done; n++) {
            ctn_val *docs = ctn_val_arr();
            CHECK(docs != NULL);
            if (docs == NULL) return;
            ctn_val_push(docs, ctn_val_cstr("earlier"));
            const long failed0 = ctn__alloc_n_failed;
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            const int rc = load_n(src, strlen(src), docs);
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            const bool hit = ctn__alloc_n_failed != failed0;
            if (rc == 0) {
                CHECK_EQ_INT(ctn_val_len(docs), 5);
                CHECK_STR(text(docs, 4), "bye");
                if (!hit) done = 1;
            } else {
                n_fail++;
                CHECK_EQ_INT(rc, CTN_ENOMEM);
                CHECK_CONTAINS(err, "doc.md: out of memory");
                CHECK_EQ_INT(ctn_val_len(docs), 1);
            }
            ctn_val_unref(docs);
        }
        CHECK(done && n_fail > 0);
    }
}

int main(void) {
    RUN(sections_follow_the_heading_path);
    RUN(setext_and_skipped_levels);
    RUN(text_before_the_first_heading_and_empty_sections);
    RUN(headings_inside_quotes_and_lists_are_text);
    RUN(inline_markup_links_entities);
    RUN(images_keep_alt_text_and_go_to_metadata);
    RUN(lists_and_quotes);
    RUN(code_blocks_are_verbatim_and_never_headings);
    RUN(tables_rows_and_blocks);
    RUN(a_big_table_is_linear);
    RUN(front_matter_fields_on_every_section);
    RUN(front_matter_errors);
    RUN(front_matter_cannot_override_the_loaders_keys);
    RUN(invalid_utf8_is_replaced_and_warned_and_a_bom_stripped);
    RUN(hostile_nesting_is_an_error_not_a_crash);
    RUN(md4c_quirks);
    RUN(example_docs_load);
    RUN(allocation_failures);
    return test_summary();
}
