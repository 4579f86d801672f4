/*
 * Text splitters (stdlib/split.h): the recursive splitter on cases checked by hand against
 * LangChain.js 1.0.2 (overlap, the three ways of keeping separators, trimming, code points,
 * Korean, characters outside the BMP), lengths in tokens, the token, page and markdown
 * kinds, the chunk documents' metadata and offsets, the errors, and allocation failures.
 * tests/compat/split_langchain.sh compares the recursive splitter with LangChain.js at
 * scale.
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "gguf.h"
#include "split.h"
#include "test.h"
#include "value.h"
#include "vocab.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static ctn_split_opts opts(size_t size, size_t overlap) {
    ctn_split_opts o = ctn_split_defaults();
    o.chunk_size = size;
    o.chunk_overlap = overlap;
    return o;
}

/* Splits text and checks the chunks against want (NULL-terminated), and that each chunk
 * with a start is the text at that start. */
static void check_split(const ctn_split_opts *o, const char *text, const char *const *want) {
    char **c = NULL, err[256] = "";
    size_t *st = NULL, n = 99;
    int rc = ctn_split_text(o, text, strlen(text), &c, &st, &n, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc < 0) {
        printf("  %s\n", err);
        return;
    }
    size_t nw = 0;
    while (want[nw] != NULL)
        nw++;
    CHECK_EQ_INT(n, nw);
    for (size_t i = 0; i < n && i < nw; i++) {
        CHECK_STR(c[i], want[i]);
        if (st[i] != SIZE_MAX) CHECK(strncmp(text + st[i], c[i], strlen(c[i])) == 0);
    }
    for (size_t i = 0; i < n; i++)
        free(c[i]);
    free(c);
    free(st);
}

#define CHUNKS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NO_CHUNKS   ((const char *const[]){NULL})

static const char *const seps_comma[] = {","};
static const char *const seps_para[] = {"\n\n", "\n"};
static const char *const seps_space[] = {" "};
static const char *const seps_nl[] = {"\n"};

/* A made-up tokenizer: a run of ASCII letters or digits is one token, any other character
 * one. Counts its calls, and fails on the text "FAIL". */
static int tok_calls;
static int word_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
static int word_tokens(void *ud, const char *s, size_t n, size_t **ends, size_t *count, char *err,
                       size_t errcap) {
    (void)ud;
    tok_calls++;
    if (n >= 4 && memmem(s, n, "FAIL", 4) != NULL) {
        ctn__errf(err, errcap, "the tokenizer refuses FAIL");
        return CTN_EFORMAT;
    }
    size_t *e = malloc((n ? n : 1) * sizeof *e), c = 0;
    if (e == NULL) return CTN_ENOMEM;
    for (size_t i = 0; i < n;) {
        if (word_char((unsigned char)s[i])) {
            while (i < n && word_char((unsigned char)s[i]))
                i++;
        } else {
            i++;
            while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80)
                i++;
        }
        e[c++] = i;
    }
    *ends = e;
    *count = c;
    return 0;
}

static char warned[512];
static int n_warned;
static void on_warn(void *ud, const char *msg) {
    (void)ud;
    n_warned++;
    snprintf(warned, sizeof warned, "%s", msg);
}

static ctn_val *doc(const char *text, const char *source) {
    ctn_val *m = ctn_val_obj();
    if (source != NULL) ctn_val_set(m, "source", ctn_val_cstr(source));
    return ctn_val_doc(text, strlen(text), m);
}

static int64_t meta_int(const ctn_val *d, const char *key) {
    const ctn_val *v = ctn_val_get(d, key);
    return v != NULL && v->kind == CTN_VINT ? v->u.i : -1;
}

static const char *doc_text(const ctn_val *d) {
    return d != NULL && d->kind == CTN_VDOC ? d->u.doc.text->u.str.p : NULL;
}

/* Code point offset to a byte offset in s. */
static size_t cp_to_byte(const char *s, int64_t cp) {
    size_t i = 0;
    for (int64_t k = 0; s[i] != '\0'; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80 && k++ == cp) return i;
    return i;
}

/* Every chunk of out whose text is a substring at its offsets is exactly that slice. */
static void check_offsets(const ctn_val *out, const char *text) {
    for (size_t i = 0; i < ctn_val_len(out); i++) {
        const ctn_val *d = ctn_val_at(out, i);
        size_t a = cp_to_byte(text, meta_int(d, "start_index"));
        size_t b = cp_to_byte(text, meta_int(d, "end_index"));
        CHECK(b >= a);
        CHECK_EQ_INT(b - a, strlen(doc_text(d)));
        CHECK(strncmp(text + a, doc_text(d), b - a) == 0);
    }
}

/* ---- options ----------------------------------------------------------------------------- */

TEST(defaults_and_names) {
    ctn_split_opts o = ctn_split_defaults();
    CHECK_EQ_INT(o.chunk_size, 4000);
    CHECK_EQ_INT(o.chunk_overlap, 200);
    CHECK(o.separators == NULL && o.tokens == NULL && o.warn == NULL);
    CHECK(o.keep_separator == CTN_KEEP_START && o.strip_whitespace);
    for (int k = CTN_SPLIT_RECURSIVE; k <= CTN_SPLIT_TOKEN; k++)
        CHECK_EQ_INT(ctn_split_parse(ctn_split_name((ctn_split_kind)k)), k);
    CHECK_STR(ctn_split_name(CTN_SPLIT_MARKDOWN), "markdown");
    CHECK_EQ_INT(ctn_split_parse("sentences"), -1);
    CHECK_EQ_INT(ctn_split_parse(NULL), -1);
}

TEST(check_names_the_setting) {
    char err[256];
    ctn_split_opts o = opts(0, 0);
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_RECURSIVE, &o, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "chunk_size");
    o = opts(5, 5);
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_PAGE, &o, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "chunk_overlap (5) must be below chunk_size (5)");
    o = opts(5, 9);
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_RECURSIVE, &o, err, sizeof err), CTN_EINVAL);
    o = opts(5, 1);
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_RECURSIVE, &o, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_TOKEN, &o, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "token splitter needs tokens");
    o.tokens = word_tokens;
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_TOKEN, &o, err, sizeof err), 0);
    const char *bad[] = {"\n", NULL};
    o.separators = bad;
    o.n_separators = 2;
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_RECURSIVE, &o, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "separators[1] is NULL");
    const char *cut[] = {"\n", "\x98\x80"};
    o.separators = cut;
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_RECURSIVE, &o, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "separators[1] is not valid UTF-8");
    o = opts(5, 1);
    o.keep_separator = (ctn_keep_sep)7;
    CHECK_EQ_INT(ctn_split_check(CTN_SPLIT_RECURSIVE, &o, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "keep_separator");
    o = opts(5, 1);
    CHECK_EQ_INT(ctn_split_check((ctn_split_kind)9, &o, err, sizeof err), CTN_EINVAL);
    /* ctn_split_text and ctn_split_docs check too, and touch nothing. */
    o = opts(3, 3);
    char **c = (char **)1;
    size_t *st = (size_t *)1, n = 5;
    CHECK_EQ_INT(ctn_split_text(&o, "abc", 3, &c, &st, &n, err, sizeof err), CTN_EINVAL);
    CHECK(c == NULL && st == NULL && n == 0);
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    ctn_val_push(docs, ctn_val_cstr("abc"));
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_RECURSIVE, &o, docs, out, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "chunk_overlap");
    CHECK_EQ_INT(ctn_val_len(out), 0);
    ctn_val_unref(docs);
    ctn_val_unref(out);
}

/* ---- the recursive splitter -------------------------------------------------------------- */

TEST(recursive_words_and_paragraphs) {
    ctn_split_opts o = opts(10, 0);
    check_split(&o, "Hello world, this is a test of the splitter.",
                CHUNKS("Hello", "world,", "this is a", "test of", "the", "splitter."));
    o = opts(20, 0);
    check_split(&o, "para one is here.\n\npara two is a bit longer than that.\n\nthree",
                CHUNKS("para one is here.", "para two is a bit", "longer than that.", "three"));
    o = opts(100, 0);
    check_split(&o, "", NO_CHUNKS);
    check_split(&o, "   \n\n  ", NO_CHUNKS);
    check_split(&o, "  lead and trail  \n\n  x  ", CHUNKS("lead and trail  \n\n  x"));
}

TEST(recursive_overlap) {
    ctn_split_opts o = opts(12, 5);
    check_split(&o, "Hello world, this is a test of the splitter.",
                CHUNKS("Hello world,", "this is a", "is a test", "test of the", "splitter."));
    o = opts(3, 1);
    check_split(&o, "abcdefghij", CHUNKS("abc", "cde", "efg", "ghi", "ij"));
    o = opts(3, 1);
    check_split(&o, "one two three four five six",
                CHUNKS("one", "tw", "wo", "th", "hre", "ee", "fo", "our", "fi", "ive", "si", "ix"));
}

TEST(recursive_keep_separator) {
    /* Kept at the start (LangChain.js's keepSeparator: true). */
    ctn_split_opts o = opts(3, 0);
    o.separators = seps_comma;
    o.n_separators = 1;
    check_split(&o, "a,b,,c,dd,eee", CHUNKS("a,b", ",,c", ",dd", ",ee", "e"));
    /* At the end (Python LangChain's "end"). */
    o.keep_separator = CTN_KEEP_END;
    check_split(&o, "a,b,,c,dd,eee", CHUNKS("a,", "b,,", "c,", "dd,", "eee"));
    /* Dropped, and put back between merged pieces; past the last separator the too long
     * piece is cut into characters joined directly (LangChain.js fails there). */
    o.keep_separator = CTN_KEEP_NONE;
    check_split(&o, "a,b,,c,dd,eee", CHUNKS("a,b", "c", "dd", "eee"));
    check_split(&o, "a,b,,c,dd,eeee", CHUNKS("a,b", "c", "dd", "eee", "e"));
    o = opts(10, 4);
    o.keep_separator = CTN_KEEP_NONE;
    check_split(&o, "one two three four five six seven",
                CHUNKS("one two", "two three", "four five", "five six", "six seven"));
    /* A run of dropped separators collapses to one: the chunk is no substring. */
    o = opts(3, 0);
    o.keep_separator = CTN_KEEP_NONE;
    char **c, err[128];
    size_t *st, n;
    CHECK_EQ_INT(ctn_split_text(&o, "a  b   c", 8, &c, &st, &n, err, sizeof err), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_STR(c[0], "a b");
        CHECK(st[0] == SIZE_MAX);
        CHECK_STR(c[1], "c");
        CHECK_EQ_INT(st[1], 7);
        free(c[0]), free(c[1]);
    }
    free(c);
    free(st);
}

TEST(recursive_overlapping_separators) {
    /* JavaScript's split(/(?=\n\n)/) cuts before each of overlapping occurrences. */
    ctn_split_opts o = opts(2, 0);
    o.separators = seps_para;
    o.n_separators = 2;
    check_split(&o, "a\n\n\nb\n\nccc", CHUNKS("a", "b", "c", "cc"));
    /* A piece no separator can split is kept whole and untrimmed, with a warning. */
    o = opts(4, 0);
    o.separators = seps_nl;
    o.n_separators = 1;
    o.warn = on_warn;
    n_warned = 0;
    check_split(&o, " abcdefghij", CHUNKS(" abcdefghij"));
    CHECK_EQ_INT(n_warned, 1);
    CHECK_CONTAINS(warned, "a chunk of 11 code points is longer than chunk_size 4");
    /* One that was split on the last separator is cut into characters. */
    o = opts(3, 0);
    o.separators = seps_space;
    o.n_separators = 1;
    check_split(&o, "aaaaaaa bb", CHUNKS("aaa", "aaa", "a", "bb"));
    /* No separators at all: code points. */
    o.separators = seps_space;
    o.n_separators = 0;
    check_split(&o, "abcdefg", CHUNKS("abc", "def", "g"));
}

TEST(recursive_repeated_text_offsets) {
    /* "ab" occurs at 3 too, but the last chunk is the one at 9. */
    ctn_split_opts o = opts(8, 0);
    char **c, err[128];
    size_t *st, n;
    CHECK_EQ_INT(ctn_split_text(&o, "ab ab ab ab", 11, &c, &st, &n, err, sizeof err), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_STR(c[0], "ab ab ab");
        CHECK_EQ_INT(st[0], 0);
        CHECK_STR(c[1], "ab");
        CHECK_EQ_INT(st[1], 9);
        free(c[0]), free(c[1]);
    }
    free(c);
    free(st);
}

TEST(recursive_strip_off) {
    ctn_split_opts o = opts(8, 0);
    o.strip_whitespace = false;
    check_split(&o, "one two three four", CHUNKS("one two", " three", " four"));
    o.keep_separator = CTN_KEEP_END;
    check_split(&o, "one two three four", CHUNKS("one two ", "three ", "four"));
    o.keep_separator = CTN_KEEP_START;
    check_split(&o, "  \n\n  ", CHUNKS("  \n\n  "));
}

TEST(recursive_unicode) {
    /* Code points: a character outside the BMP is one (LangChain.js would cut it into
     * surrogate halves), and Korean is measured as it reads. */
    ctn_split_opts o = opts(2, 0);
    check_split(&o, "😀😀😀😀😀", CHUNKS("😀😀", "😀😀", "😀"));
    o = opts(10, 2);
    check_split(
        &o, "한국어 텍스트를 나누는 시험입니다. 두 번째 문장도 있습니다.",
        CHUNKS("한국어 텍스트를", "나누는", "시험입니다. 두", "두 번째 문장도", "있습니다."));
    /* JavaScript's white space, NBSP and ideographic space included, is trimmed. */
    o = opts(100, 0);
    check_split(&o, "\xc2\xa0\xe3\x80\x80 x \xe3\x80\x80", CHUNKS("x"));
    check_split(&o, "\xe2\x80\x8bx\xe2\x80\x8b", CHUNKS("\xe2\x80\x8bx\xe2\x80\x8b"));
}

TEST(recursive_token_lengths) {
    /* "alpha beta gamma delta": 7 tokens (4 words, 3 spaces). */
    ctn_split_opts o = opts(3, 0);
    o.tokens = word_tokens;
    tok_calls = 0;
    check_split(&o, "alpha beta gamma delta", CHUNKS("alpha beta", "gamma", "delta"));
    CHECK(tok_calls > 0);
    o = opts(5, 2);
    o.tokens = word_tokens;
    check_split(&o, "alpha beta gamma delta", CHUNKS("alpha beta gamma", "gamma delta"));
    /* A failing tokenizer's code and message come back. */
    char **c, err[128] = "";
    size_t *st, n;
    CHECK_EQ_INT(ctn_split_text(&o, "alpha FAIL", 10, &c, &st, &n, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "refuses FAIL");
    CHECK(c == NULL && n == 0);
}

/* ---- documents --------------------------------------------------------------------------- */

TEST(docs_metadata_and_offsets) {
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    ctn_val_push(out, ctn_val_cstr("already there"));
    const char *text = "한국어 텍스트를 나누는 시험입니다. 두 번째 문장도 있습니다.";
    ctn_val_push(docs, ctn_val_cstr("alpha beta"));
    ctn_val *d = doc(text, "ko.txt");
    ctn_val_set(d->u.doc.meta, "lang", ctn_val_cstr("ko"));
    ctn_val_set(d->u.doc.meta, "blocks", ctn_val_arr());
    ctn_val_push(docs, d);
    ctn_split_opts o = opts(10, 2);
    char err[256];
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_RECURSIVE, &o, docs, out, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(out), 1 + 1 + 5);
    const ctn_val *c0 = ctn_val_at(out, 1);
    CHECK_STR(doc_text(c0), "alpha beta");
    CHECK_EQ_INT(meta_int(c0, "chunk"), 0);
    CHECK_EQ_INT(meta_int(c0, "start_index"), 0);
    CHECK_EQ_INT(meta_int(c0, "end_index"), 10);
    CHECK_EQ_INT(ctn_val_len(c0->u.doc.meta), 3);
    const ctn_val *c3 = ctn_val_at(out, 4);
    CHECK_STR(doc_text(c3), "시험입니다. 두");
    CHECK_EQ_INT(meta_int(c3, "chunk"), 2);
    CHECK_EQ_INT(meta_int(c3, "start_index"), 13);
    CHECK_EQ_INT(meta_int(c3, "end_index"), 21);
    CHECK_STR(ctn_val_get(c3, "source")->u.str.p, "ko.txt");
    CHECK_STR(ctn_val_get(c3, "lang")->u.str.p, "ko");
    CHECK(ctn_val_get(c3, "blocks") == NULL);
    ctn_val *chunks = ctn_val_arr();
    for (size_t i = 2; i < ctn_val_len(out); i++)
        ctn_val_push(chunks, ctn_val_ref(ctn_val_at(out, i)));
    check_offsets(chunks, text);
    ctn_val_unref(chunks);
    ctn_val_unref(docs);
    ctn_val_unref(out);
}

TEST(docs_errors_leave_out_as_it_was) {
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    ctn_val_push(out, ctn_val_cstr("keep me"));
    ctn_val_push(docs, ctn_val_cstr("one two three"));
    ctn_val_push(docs, ctn_val_int(7));
    ctn_split_opts o = opts(5, 0);
    char err[256];
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_RECURSIVE, &o, docs, out, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "docs[1]: a integer is not a document or a string");
    CHECK_EQ_INT(ctn_val_len(out), 1);
    ctn_val_unref(docs);
    /* The tokenizer fails on the second document: named by its source. */
    docs = ctn_val_arr();
    ctn_val_push(docs, doc("alpha beta gamma", "a.txt"));
    ctn_val_push(docs, doc("alpha FAIL gamma", "notes/b.md"));
    o.tokens = word_tokens;
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_TOKEN, &o, docs, out, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "notes/b.md: the tokenizer refuses FAIL");
    CHECK_EQ_INT(ctn_val_len(out), 1);
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_RECURSIVE, &o, docs, out, err, sizeof err), CTN_EFORMAT);
    CHECK_EQ_INT(ctn_val_len(out), 1);
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_RECURSIVE, &o, out, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_RECURSIVE, &o, docs, NULL, err, sizeof err), CTN_EINVAL);
    ctn_val_unref(docs);
    ctn_val_unref(out);
}

TEST(token_splitter) {
    /* Tokens: aa ' ' bb ' ' cc ' ' dd ' ' ee, windows of 4 moving by 3. */
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    const char *text = "aa bb cc dd ee";
    ctn_val_push(docs, doc(text, "t.txt"));
    ctn_split_opts o = opts(4, 1);
    o.tokens = word_tokens;
    char err[256];
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_TOKEN, &o, docs, out, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(out), 3);
    CHECK_STR(doc_text(ctn_val_at(out, 0)), "aa bb");
    CHECK_STR(doc_text(ctn_val_at(out, 1)), "cc dd");
    CHECK_STR(doc_text(ctn_val_at(out, 2)), "dd ee");
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 1), "start_index"), 6);
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 2), "start_index"), 9);
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 2), "chunk"), 2);
    check_offsets(out, text);
    ctn_val_unref(out);
    /* Untrimmed windows when asked. */
    out = ctn_val_arr();
    o.strip_whitespace = false;
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_TOKEN, &o, docs, out, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(out), 3);
    CHECK_STR(doc_text(ctn_val_at(out, 0)), "aa bb ");
    CHECK_STR(doc_text(ctn_val_at(out, 1)), " cc dd");
    ctn_val_unref(out);
    ctn_val_unref(docs);
}

/* Token ends that go back: the token splitter says so. */
static int bad_tokens(void *ud, const char *s, size_t n, size_t **ends, size_t *count, char *err,
                      size_t errcap) {
    (void)ud, (void)s, (void)err, (void)errcap;
    size_t *e = malloc(2 * sizeof *e);
    if (e == NULL) return CTN_ENOMEM;
    e[0] = n, e[1] = n / 2;
    *ends = e;
    *count = 2;
    return 0;
}

TEST(token_splitter_checks_the_callback) {
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    ctn_val_push(docs, ctn_val_cstr("some text"));
    ctn_split_opts o = opts(4, 1);
    o.tokens = bad_tokens;
    char err[256];
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_TOKEN, &o, docs, out, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "docs[0]: the token callback gave end 1 of 2 out of order");
    CHECK_EQ_INT(ctn_val_len(out), 0);
    ctn_val_unref(docs);
    ctn_val_unref(out);
}

TEST(page_splitter) {
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    const char *text = "page one\fpage two\f\fpage four\f";
    ctn_val_push(docs, doc(text, "book.txt"));
    ctn_val *p = doc("a pdf page that is a good deal longer than ten", "b.pdf");
    ctn_val_set(p->u.doc.meta, "page", ctn_val_int(7));
    ctn_val_push(docs, p);
    ctn_split_opts o = opts(10, 0);
    char err[256];
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_PAGE, &o, docs, out, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(out), 3 + 5);
    CHECK_STR(doc_text(ctn_val_at(out, 0)), "page one");
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 0), "page"), 1);
    CHECK_STR(doc_text(ctn_val_at(out, 1)), "page two");
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 1), "page"), 2);
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 1), "start_index"), 9);
    CHECK_STR(doc_text(ctn_val_at(out, 2)), "page four");
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 2), "page"), 4);
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 2), "start_index"), 19);
    CHECK_EQ_INT(meta_int(ctn_val_at(out, 2), "chunk"), 2);
    /* The PDF page is too long: cut recursively, every piece on page 7. */
    CHECK_STR(doc_text(ctn_val_at(out, 3)), "a pdf page");
    CHECK_STR(doc_text(ctn_val_at(out, 7)), "than ten");
    for (size_t i = 3; i < 8; i++) {
        CHECK_EQ_INT(meta_int(ctn_val_at(out, i), "page"), 7);
        CHECK_EQ_INT(meta_int(ctn_val_at(out, i), "chunk"), (int64_t)i - 3);
    }
    ctn_val_unref(out);
    ctn_val_unref(docs);
}

/* ---- markdown sections ------------------------------------------------------------------- */

static const char md_text[] = "Intro text here.\n\n"
                              "```\ncode line 1\ncode line 2\n```\n\n"
                              "| h1 | h2 |\n|----|----|\n| a | 1 |\n| b | 2 |\n| c | 3 |\n\n"
                              "Outro words.";

static ctn_val *block(size_t a, size_t b, const char *kind, size_t hdr) {
    ctn_val *v = ctn_val_arr();
    ctn_val_push(v, ctn_val_int((int64_t)a));
    ctn_val_push(v, ctn_val_int((int64_t)b));
    ctn_val_push(v, ctn_val_cstr(kind));
    if (hdr > 0) ctn_val_push(v, ctn_val_int((int64_t)hdr));
    return v;
}

static ctn_val *md_section(void) {
    ctn_val *d = doc(md_text, "guide.md");
    ctn_val *m = d->u.doc.meta;
    ctn_val_set(m, "section", ctn_val_cstr("Guide > Install"));
    size_t ca = (size_t)(strstr(md_text, "```") - md_text);
    size_t cb = (size_t)(strstr(md_text + ca + 3, "```") - md_text) + 4;
    size_t ta = (size_t)(strstr(md_text, "| h1") - md_text);
    size_t th = (size_t)(strstr(md_text, "| a") - md_text);
    size_t tb = (size_t)(strstr(md_text, "| c | 3 |\n") - md_text) + 10;
    ctn_val *bl = ctn_val_arr();
    ctn_val_push(bl, block(ca, cb, "code", 0));
    ctn_val_push(bl, block(ta, tb, "table", th));
    ctn_val_set(m, "blocks", bl);
    return d;
}

static ctn_val *split_md(size_t size, ctn_val *d) {
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    ctn_val_push(docs, d);
    ctn_split_opts o = opts(size, 0);
    o.warn = on_warn;
    char err[256] = "";
    int rc = ctn_split_docs(CTN_SPLIT_MARKDOWN, &o, docs, out, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc < 0) printf("  %s\n", err);
    ctn_val_unref(docs);
    return out;
}

TEST(markdown_section_fits) {
    ctn_val *out = split_md(1000, md_section());
    CHECK_EQ_INT(ctn_val_len(out), 1);
    CHECK_STR(doc_text(ctn_val_at(out, 0)), md_text);
    CHECK_STR(ctn_val_get(ctn_val_at(out, 0), "section")->u.str.p, "Guide > Install");
    CHECK(ctn_val_get(ctn_val_at(out, 0), "blocks") == NULL);
    ctn_val_unref(out);
}

TEST(markdown_tables_between_rows_code_whole) {
    n_warned = 0;
    ctn_val *out = split_md(40, md_section());
    const char *want[] = {
        "Intro text here.",
        "```\ncode line 1\ncode line 2\n```",
        "| h1 | h2 |\n|----|----|\n| a | 1 |",
        "| h1 | h2 |\n|----|----|\n| b | 2 |",
        "| h1 | h2 |\n|----|----|\n| c | 3 |",
        "Outro words.",
    };
    CHECK_EQ_INT(ctn_val_len(out), 6);
    for (size_t i = 0; i < 6 && i < ctn_val_len(out); i++) {
        CHECK_STR(doc_text(ctn_val_at(out, i)), want[i]);
        CHECK_EQ_INT(meta_int(ctn_val_at(out, i), "chunk"), (int64_t)i);
    }
    CHECK_EQ_INT(n_warned, 0);
    /* The later table pieces repeat the header: their offsets are their rows'. */
    const ctn_val *t2 = ctn_val_at(out, 3);
    size_t rb = (size_t)(strstr(md_text, "| b") - md_text);
    CHECK_EQ_INT(meta_int(t2, "start_index"), (int64_t)rb);
    CHECK_EQ_INT(meta_int(t2, "end_index"), (int64_t)rb + 9);
    ctn_val_unref(out);
    /* Small units are packed; a code block longer than chunk_size stays whole. */
    out = split_md(60, md_section());
    CHECK_EQ_INT(ctn_val_len(out), 3);
    CHECK_STR(doc_text(ctn_val_at(out, 0)),
              "Intro text here.\n\n```\ncode line 1\ncode line 2\n```");
    CHECK_STR(doc_text(ctn_val_at(out, 1)),
              "| h1 | h2 |\n|----|----|\n| a | 1 |\n| b | 2 |\n| c | 3 |");
    CHECK_STR(doc_text(ctn_val_at(out, 2)), "Outro words.");
    ctn_val_unref(out);
    out = split_md(20, md_section());
    CHECK_STR(doc_text(ctn_val_at(out, 1)), "```\ncode line 1\ncode line 2\n```");
    CHECK(n_warned > 0);
    CHECK_CONTAINS(warned, "guide.md: a chunk of");
    ctn_val_unref(out);
}

TEST(markdown_bad_blocks) {
    ctn_val *d = md_section();
    ctn_val_set(d->u.doc.meta, "blocks", ctn_val_cstr("nope"));
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    ctn_val_push(docs, d);
    ctn_split_opts o = opts(40, 0);
    char err[256];
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_MARKDOWN, &o, docs, out, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "guide.md: metadata \"blocks\" is a string");
    ctn_val *bl = ctn_val_arr();
    ctn_val_push(bl, block(10, 5, "code", 0));
    ctn_val_set(d->u.doc.meta, "blocks", bl);
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_MARKDOWN, &o, docs, out, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "\"blocks\"[0]");
    CHECK_EQ_INT(ctn_val_len(out), 0);
    ctn_val_unref(docs);
    ctn_val_unref(out);
}

TEST(markdown_plain_document_is_sectioned) {
    /* The Markdown loader sections it first; its metadata joins the document's. */
    static const char md[] = "# Guide\n\nIntro words here.\n\n## Table\n\n"
                             "| k | v |\n|---|---|\n| a | 1 |\n| b | 2 |\n| c | 3 |\n";
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    ctn_val *d = doc(md, "guide.md");
    ctn_val_set(d->u.doc.meta, "tag", ctn_val_int(5));
    ctn_val_push(docs, d);
    ctn_val_push(docs, ctn_val_cstr("no source here, one section"));
    ctn_split_opts o = opts(30, 0);
    char err[256] = "";
    int rc = ctn_split_docs(CTN_SPLIT_MARKDOWN, &o, docs, out, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc < 0) printf("  %s\n", err);
    const char *want[] = {
        "Intro words here.",
        "| k | v |\n| --- | --- |\n| a | 1 |",
        "| k | v |\n| --- | --- |\n| b | 2 |",
        "| k | v |\n| --- | --- |\n| c | 3 |",
        "no source here, one section",
    };
    CHECK_EQ_INT(ctn_val_len(out), 5);
    for (size_t i = 0; i < 5 && i < ctn_val_len(out); i++) {
        const ctn_val *c = ctn_val_at(out, i);
        CHECK_STR(doc_text(c), want[i]);
        CHECK_EQ_INT(meta_int(c, "chunk"), i < 4 ? (int64_t)i : 0);
        CHECK(ctn_val_get(c, "blocks") == NULL);
        CHECK(ctn_val_get(c, "section") != NULL);
    }
    if (ctn_val_len(out) == 5) {
        const ctn_val *c1 = ctn_val_at(out, 1);
        CHECK_STR(ctn_val_get(c1, "section")->u.str.p, "Guide > Table");
        CHECK_STR(ctn_val_get(c1, "source")->u.str.p, "guide.md");
        CHECK_EQ_INT(meta_int(c1, "tag"), 5);
        CHECK_EQ_INT(meta_int(c1, "level"), 2);
        /* A document without a source gets none from the loader. */
        CHECK(ctn_val_get(ctn_val_at(out, 4), "source") == NULL);
    }
    ctn_val_unref(out);
    ctn_val_unref(docs);
    /* Invalid bytes in a plain string are decoded as the loaders decode them (U+FFFD). */
    docs = ctn_val_arr();
    out = ctn_val_arr();
    ctn_val_push(docs, ctn_val_str("ab\xff", 3));
    CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_MARKDOWN, &o, docs, out, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(out), 1);
    ctn_val_unref(out);
    ctn_val_unref(docs);
}

/* ---- tokens from a vocabulary ------------------------------------------------------------ */

static ctn_vocab *shared_vocab(const char *name) {
    const char *dir = getenv("CTN_SHARED");
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", dir && *dir ? dir : "../shared",
             name);
    ctn_gguf *g;
    if (ctn_gguf_open(&g, path, err, sizeof err) < 0) return NULL;
    ctn_vocab *v = NULL;
    if (ctn_vocab_load(&v, g, err, sizeof err) < 0) v = NULL;
    ctn_gguf_free(g);
    return v;
}

TEST(vocab_token_ends) {
    static const char *const names[] = {"llama-spm", "llama-bpe", "gpt-2"};
    static const char *const texts[] = {"Hello world", " two  spaces\n\nand a line",
                                        "한국어 😀 텍스트 𠜎 ok", "<s>not special</s>", ""};
    int found = 0;
    for (size_t k = 0; k < 3; k++) {
        ctn_vocab *v = shared_vocab(names[k]);
        if (v == NULL) continue;
        found++;
        for (size_t t = 0; t < sizeof texts / sizeof *texts; t++) {
            const char *s = texts[t];
            size_t n = strlen(s), *ends = NULL, count = 0;
            char err[128];
            CHECK_EQ_INT(ctn_split_vocab_tokens(v, s, n, &ends, &count, err, sizeof err), 0);
            int32_t *ids;
            size_t nid;
            CHECK_EQ_INT(ctn_tokenize(v, s, n, false, false, &ids, &nid), 0);
            CHECK_EQ_INT(count, nid);
            free(ids);
            for (size_t i = 0; i < count; i++) {
                CHECK(ends[i] <= n && (i == 0 || ends[i] >= ends[i - 1]));
                CHECK(ends[i] == n || ((unsigned char)s[ends[i]] & 0xC0) != 0x80);
            }
            if (count > 0) CHECK_EQ_INT(ends[count - 1], n);
            free(ends);
        }
        /* "Hello world" is two tokens in each: "Hello" and " world". */
        size_t *ends, count;
        char err[128];
        CHECK_EQ_INT(ctn_split_vocab_tokens(v, "Hello world", 11, &ends, &count, err, sizeof err),
                     0);
        CHECK_EQ_INT(count, 2);
        if (count == 2) CHECK_EQ_INT(ends[0], 5);
        free(ends);
        /* The token splitter with a model's tokenizer: chunks are slices of the text. */
        ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
        const char *text = "The quick brown fox jumps over the lazy dog. 한국어 문장 😀 끝.";
        ctn_val_push(docs, ctn_val_cstr(text));
        ctn_split_opts o = opts(5, 2);
        o.tokens = ctn_split_vocab_tokens;
        o.tokens_ud = v;
        CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_TOKEN, &o, docs, out, err, sizeof err), 0);
        CHECK(ctn_val_len(out) > 3);
        check_offsets(out, text);
        ctn_val_unref(out);
        out = ctn_val_arr();
        CHECK_EQ_INT(ctn_split_docs(CTN_SPLIT_RECURSIVE, &o, docs, out, err, sizeof err), 0);
        CHECK(ctn_val_len(out) > 2);
        check_offsets(out, text);
        ctn_val_unref(out);
        ctn_val_unref(docs);
        ctn_vocab_free(v);
    }
    if (found == 0) SKIP("no vocabularies under $CTN_SHARED/vocab");
}

/* ---- scale and allocation failures ------------------------------------------------------- */

TEST(long_text_linear) {
    /* 4 MB of words and paragraphs, and 1 MB without a single separator: both are one pass
     * per separator level (a quadratic rescan would take minutes here, under ASan). */
    size_t n = 4 << 20;
    char *t = malloc(n + 1);
    CHECK(t != NULL);
    if (t == NULL) return;
    for (size_t i = 0; i < n; i++)
        t[i] = i % 997 == 996 ? '\n' : i % 7 == 6 ? ' ' : (char)('a' + i % 26);
    t[n] = '\0';
    ctn_split_opts o = opts(1000, 100);
    char **c, err[128];
    size_t *st, nc;
    CHECK_EQ_INT(ctn_split_text(&o, t, n, &c, &st, &nc, err, sizeof err), 0);
    CHECK(nc > n / 1000);
    for (size_t i = 0; i < nc; i++) {
        CHECK(st[i] != SIZE_MAX && strlen(c[i]) <= 1000);
        free(c[i]);
    }
    free(c);
    free(st);
    memset(t, 'x', 1 << 20);
    o = opts(500, 499);
    CHECK_EQ_INT(ctn_split_text(&o, t, 1 << 20, &c, &st, &nc, err, sizeof err), 0);
    CHECK_EQ_INT(nc, (1 << 20) - 499);
    for (size_t i = 0; i < nc; i++)
        free(c[i]);
    free(c);
    free(st);
    free(t);
}

/* Every kind over documents that reach every allocation: the N-th allocation fails, once
 * and for good, and each time a call either succeeds with the full result or fails with
 * CTN_ENOMEM leaving out as it was, without a leak (the ASan build checks). */
static int split_checked(ctn_split_kind kind, const ctn_split_opts *o, ctn_val *docs,
                         ctn_val *out) {
    char err[256];
    size_t before = ctn_val_len(out);
    int rc = ctn_split_docs(kind, o, docs, out, err, sizeof err);
    if (rc < 0) {
        CHECK_EQ_INT(rc, CTN_ENOMEM);
        CHECK_EQ_INT(ctn_val_len(out), before);
        CHECK_CONTAINS(err, "out of memory");
    }
    return rc;
}

static int split_all(ctn_val *docs, ctn_val *md, ctn_val *out) {
    ctn_split_opts o = opts(12, 4);
    o.tokens = word_tokens;
    int rc = split_checked(CTN_SPLIT_RECURSIVE, &o, docs, out);
    o.keep_separator = CTN_KEEP_NONE;
    if (rc == 0) rc = split_checked(CTN_SPLIT_PAGE, &o, docs, out);
    if (rc == 0) rc = split_checked(CTN_SPLIT_TOKEN, &o, docs, out);
    o = opts(40, 0);
    if (rc == 0) rc = split_checked(CTN_SPLIT_MARKDOWN, &o, md, out);
    if (rc < 0) return rc;
    char **c = NULL, err[256];
    size_t *st = NULL, n = 0;
    o = opts(7, 3);
    o.keep_separator = CTN_KEEP_NONE;
    rc = ctn_split_text(&o, "a  b   c dd\n\neee f", 18, &c, &st, &n, err, sizeof err);
    if (rc == 0) {
        CHECK_EQ_INT(n, 3);
        if (n == 3) CHECK_STR(c[1], "b c dd");
    } else {
        CHECK_EQ_INT(rc, CTN_ENOMEM);
        CHECK(c == NULL && st == NULL && n == 0);
    }
    for (size_t i = 0; i < n; i++)
        free(c[i]);
    free(c);
    free(st);
    return rc;
}

TEST(allocation_failures) {
    ctn_val *docs = ctn_val_arr(), *md = ctn_val_arr(), *want = ctn_val_arr();
    ctn_val_push(docs, ctn_val_cstr("one two  three four\ffive six seven eight nine"));
    ctn_val_push(docs, md_section());
    ctn_val_push(md, md_section());
    ctn_val_push(md,
                 doc("# A\n\ntext one two three\n\n## B\n\n```\ncode\n```\n\nmore words", "a.md"));
    CHECK_EQ_INT(split_all(docs, md, want), 0);
    CHECK(ctn_val_len(want) > 20);
    for (int once = 0; once < 2; once++) {
        int done = 0, n_fail = 0;
        for (long n = 0; !done && !test_cur_failed && n < 20000; n++) {
            ctn_val *out = ctn_val_arr();
            ctn_val_push(out, ctn_val_cstr("before"));
            long failed = ctn__alloc_n_failed;
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            int rc = split_all(docs, md, out);
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            if (rc == 0) {
                /* A failure no call reported would be a swallowed one. */
                CHECK_EQ_INT(ctn__alloc_n_failed, failed);
                done = 1;
                CHECK_EQ_INT(ctn_val_len(out), ctn_val_len(want) + 1);
                for (size_t i = 1; i < ctn_val_len(out); i++)
                    CHECK(ctn_val_equal(ctn_val_at(out, i), ctn_val_at(want, i - 1)));
            } else {
                n_fail++;
            }
            ctn_val_unref(out);
        }
        CHECK(done);
        CHECK(n_fail > 50);
    }
    ctn_val_unref(want);
    ctn_val_unref(docs);
    ctn_val_unref(md);
}

int main(void) {
    RUN(defaults_and_names);
    RUN(check_names_the_setting);
    RUN(recursive_words_and_paragraphs);
    RUN(recursive_overlap);
    RUN(recursive_keep_separator);
    RUN(recursive_overlapping_separators);
    RUN(recursive_repeated_text_offsets);
    RUN(recursive_strip_off);
    RUN(recursive_unicode);
    RUN(recursive_token_lengths);
    RUN(docs_metadata_and_offsets);
    RUN(docs_errors_leave_out_as_it_was);
    RUN(token_splitter);
    RUN(token_splitter_checks_the_callback);
    RUN(page_splitter);
    RUN(markdown_section_fits);
    RUN(markdown_tables_between_rows_code_whole);
    RUN(markdown_bad_blocks);
    RUN(markdown_plain_document_is_sectioned);
    RUN(vocab_token_ends);
    RUN(long_text_linear);
    RUN(allocation_failures);
    return test_summary();
}
