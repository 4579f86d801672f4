/*
 * Differential test of catena's tokenizer against llama.cpp's, both loaded in this one
 * process (llama.cpp through dlopen, bench/llamacpp_dl.c), so thousands of comparisons
 * take a second or two.
 *
 *   tokdiff [-L LIBDIR] [-v] [--strict] [--gen N] [--seed S] [--no-variants]
 *           [--variants-only] [--all-variants] [--quick-variants] [--llama-src FILE]
 *           [--keep DIR] [VOCAB.gguf | DIR]...
 *
 * DIRs are searched for ggml-vocab-*.gguf; with no arguments the defaults are
 * $CTN_SHARED/vocab (else ../shared/vocab) and $CTN_LLAMACPP_MODELS (else
 * build/peers/llama.cpp/models). A vocabulary seen twice under the same file name is
 * tested once. Vocabularies that llama.cpp reports as neither SPM nor BPE are skipped.
 *
 * For every vocabulary, every text (the built-in cases below, N generated mixtures (200;
 * raise --gen and vary --seed for a longer search by hand),
 * and the texts of VOCAB.gguf.inp when present) is tokenized with add_special on and off
 * and parse_special off and on, and the ids must be equal; the ids of the plain
 * tokenization are then detokenized by both (unparse_special off and on) and the bytes
 * must be equal. Each mismatch is printed (vocab, check, escaped text, both id lists), and
 * the last line is "N passed, N failed". Tokenizations with add_special and parse_special
 * are also detokenized with remove_special off and on.
 *
 * Then the synthetic variants (tests/compat/vocab_variants.c): copies of the real
 * vocabularies gpt-2, llama-bpe, qwen2 and llama-spm, when among those found, with one
 * thing changed, written to a temporary folder (--keep DIR keeps them there):
 *  - gpt-2 with tokenizer.ggml.pre set to each name llama.cpp's loader accepts (the list
 *    in vocab_variants.c plus any new name in --llama-src, default
 *    $CTN_LLAMACPP_MODELS/../src/llama-vocab.cpp), to "" and removed; --all-variants
 *    does the same on llama-bpe and qwen2 (a few minutes);
 *  - add_bos/add_eos/add_space_prefix combinations on all four;
 *  - tokens retyped or added: user-defined tokens with spaces, control, unknown and unused
 *    tokens, tokens that llama.cpp makes control tokens by their text, and the lstrip/rstrip
 *    attributes it sets by model name (phi-3, modern-bert, jina-v2-de).
 * Each variant is compared on the built-in texts, the base's .inp texts and texts built
 * around its edited tokens (generated texts too when --gen is given), in a child process;
 * names llama.cpp refuses (or crashes on) and names catena reports as CTN_ENOTSUP are
 * listed and skipped. --quick-variants (the ASan build) leaves out the name sweep and the
 * large bases.
 *
 * Exit status: 0 all equal, 1 a mismatch or a vocabulary catena cannot load, 2 usage,
 * 77 (ctest skip) when llama.cpp or the vocabularies are not available
 * (scripts/setup-peers.sh installs them). A vocabulary catena rejects with CTN_ENOTSUP is
 * reported and skipped, unless --strict.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf.h"
#include "llamacpp_dl.h"
#include "vocab.h"
#include "vocab_variants.h"

/* ---- texts ----------------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n;
} text;

typedef struct {
    text *v;
    size_t n, cap;
} text_list;

static void die_oom(void)
{
    fputs("tokdiff: out of memory\n", stderr);
    exit(1);
}

static void texts_add(text_list *l, const char *p, size_t n)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 512;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) die_oom();
    }
    char *c = malloc(n + 1);
    if (!c) die_oom();
    memcpy(c, p, n);
    c[n] = '\0';
    l->v[l->n++] = (text){c, n};
}

static void texts_free(text_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].p);
    free(l->v);
    *l = (text_list){0};
}

/* Literal with its exact length, so that embedded NULs count. */
#define T(s) {s, sizeof(s) - 1}

static const struct {
    const char *p;
    size_t n;
} fixed_texts[] = {
    /* empty and whitespace */
    T(""), T(" "), T("  "), T("   "), T("    "), T("\t"), T("\t\t"), T("\n"), T("\n\n"),
    T("\n\n\n"), T("\r\n"), T("\r"), T("\t\n"), T(" \n"), T("\n "), T(" \t \n \t "),
    T("\v\f"), T("\xc2\xa0"), T("\xe3\x80\x80"), T("\xe2\x80\x8b"), T("a\xc2\xa0" "b"),
    T("Hello world"), T(" Hello world"), T("Hello World"), T(" Hello World"),
    T(" Hello World!"), T("Hello, world!"), T(" Hello, world!"), T("  Hello"), T("Hello  "),
    T("Hello\n"), T("\nHello"), T("Hello\n\nworld"), T("a\tb"), T("a \t b"),
    T("   leading spaces"), T("trailing spaces   "), T("two  spaces"), T("x\n\n\n\ny"),
    T("\t\tindented\n\t\t\tmore\n"), T("line one\r\nline two\r\n"), T(" \n \n \n"),
    T("\n\t\n\t\t\n"), T("a\x00" "b"), T("\x00"),
    /* contractions and apostrophes */
    T("I'm"), T("don't"), T("we'll"), T("WE'LL"), T("they've"), T("it's"), T("'s"), T("'LL"),
    T("n't"), T("Don't you'd've"), T("can't"), T("O'Neil's"), T("'tis"), T("rock'n'roll"),
    T(" 's"), T("''"), T("'''"), T("x'y"), T("I 'M"), T("she'S"), T("you'RE we'Ve"),
    T("\xe2\x80\x99s it\xe2\x80\x99s"), T("'\n'"),
    /* numbers */
    T("1"), T("12"), T("123"), T("1234"), T("12345"), T("123456"), T("1234567"),
    T("12345678"), T("123456789"), T("1234567890"), T("12345678901234567890"),
    T("3.14159"), T("1,000,000"), T("-42"), T("+7"), T("0x1F"), T("1e10"), T("007"),
    T("2024-11-27"), T("12:30:45"), T("v1.2.3"), T("a1b2c3"), T("x = 3*4+5"),
    T("\xd9\xa1\xd9\xa2\xd9\xa3"), T("\xef\xbc\x91\xef\xbc\x92\xef\xbc\x93"),
    T("\xc2\xb2\xc2\xb3"), T("\xc2\xbd"), T("ied 4 \xc2\xbd months"), T("3333333"),
    /* punctuation runs */
    T("!!!"), T("..."), T("?!?!"), T("----"), T("===="), T("***"), T("<<>>"), T("()[]{}"),
    T("\xe2\x80\x94\xe2\x80\x93-"), T("\"quoted\""), T("\xc2\xab\xc2\xbb"), T("#!/bin/sh"),
    T("@user #tag $5 %d ^_^ &amp; ~/x"), T("a.b.c,d;e:f"), T("..."), T("!?.,;:"),
    T("\xe3\x80\x82\xe3\x80\x81\xe3\x80\x8c\xe3\x80\x8d"),
    /* languages */
    T("\xc3\x84pfel"), T("Stra\xc3\x9f" "e und Gr\xc3\xb6\xc3\x9f" "e"),
    T("Donaudampfschifffahrtsgesellschaftskapit\xc3\xa4n"),
    T("L'\xc3\xa9t\xc3\xa9 o\xc3\xb9 \xc3\xa7" "a na\xc3\xaf" "ve c\xc5\x93ur"),
    T("\xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe \xd0\xbd\xd0\xb0 \xd0\x91\xd1\x8a\xd0\xbb\xd0\xb3"
      "\xd0\xb0\xd1\x80\xd1\x81\xd0\xba\xd0\xb8"),
    T("\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, \xd0\xbc\xd0\xb8\xd1\x80!"),
    T("\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c"),
    T("\xe6\x88\x91\xe4\xbb\xac\xe7\x9a\x84\xe6\xa8\xa1\xe5\x9e\x8b\xe3\x80\x82 OK"),
    T("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9"
      "\xe3\x83\x88\xe3\x81\xa7\xe3\x81\x99"),
    T("\xea\xb0\x80\xeb\x82\x98\xeb\x8b\xa4 \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4"),
    T("\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 \xd8\xa8\xd8\xa7\xd9\x84\xd8\xb9\xd8\xa7"
      "\xd9\x84\xd9\x85"),
    T("\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d"),
    T("\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87"),
    T("\xe0\xb8\xaa\xe0\xb8\xa7\xe0\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5"),
    T("\xce\x93\xce\xb5\xce\xb9\xce\xac \xcf\x83\xce\xbf\xcf\x85"),
    T("Ti\xe1\xba\xbfng Vi\xe1\xbb\x87t"), T("e\xcc\x81" "e\xcc\x81"), T("\xe1\x84\x80\xe1\x85\xa1"),
    T("\xe1\x80\x80\xe1\x80\xad\xe1\x80\xaf"),
    /* emoji, ZWJ sequences, modifiers, flags, variation selectors */
    T("\xf0\x9f\xa6\x99"), T(" this is \xf0\x9f\xa6\x99.cpp"), T("a\xf0\x9f\xa6\x99" "b"),
    T("\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7\xe2\x80\x8d"
      "\xf0\x9f\x91\xa6"),
    T("\xf0\x9f\x8f\xb3\xef\xb8\x8f\xe2\x80\x8d\xf0\x9f\x8c\x88"),
    T("\xf0\x9f\x91\xa9\xf0\x9f\x8f\xbd\xe2\x80\x8d\xf0\x9f\x92\xbb"),
    T("\xf0\x9f\x87\xa9\xf0\x9f\x87\xaa\xf0\x9f\x87\xab\xf0\x9f\x87\xb7"),
    T("\xe2\x9d\xa4\xef\xb8\x8f"), T("\xe2\x80\x8d"), T("\xef\xb8\x8f"),
    T("\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbf"),
    T("\xf0\x9f\x9a\x80 launch \xf0\x9f\x94\xa5\xf0\x9f\x94\xa5!"),
    /* invalid UTF-8 */
    T("\xff"), T("\xc3"), T("abc\x80" "def"), T("\xe2\x82"), T("\xf0\x9f\x98"),
    T("\xc0\xaf"), T("\xed\xa0\x80"), T("\xf4\x90\x80\x80"), T("\xfe\xfe\xff"),
    T("Hello \xff world"), T("\x80\x81\x82"), T("\xe4\xbd" " \xa0\xe5"), T("\xf8\x88\x80\x80\x80"),
    T("a\xc3"), T("\xc3 a"), T("\xf0\x9f\xa6"), T("\xf0\x9f\xa6\x99\x99"),
    /* special-token text (plain text unless parse_special) */
    T("<s>"), T("</s>"), T("<unk>"), T("<s>Hello</s>"), T(" <s> Hello </s> "),
    T("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"), T("<|endoftext|>"),
    T("<|endoftext|><|endoftext|>"), T("a<|endoftext|>b"), T("<|begin_of_text|>Hi"),
    T("<|start_header_id|>system<|end_header_id|>\n\nYou are<|eot_id|>"),
    T("[INST] hi [/INST]"), T("<|im_start|"), T("< s>"), T("<s><s>"), T("<<s>>"),
    T("<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>"), T("<pad><mask>"),
    /* code */
    T("int main(void) {\n    return 0;\n}\n"),
    T("for (i = 0; i < n; i++) { a[i] += b[i] * 2; }"),
    T("#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n"),
    T("def f(x):\n    if x:\n        return [y**2 for y in range(x)]\n\treturn None\n"),
    T("print(f\"{x!r:>10}\")  # comment"), T("    \n    \n        pass\n"),
    T("{\"key\": [1, 2.5, true, null], \"s\": \"a\\\"b\"}"),
    T("<div class=\"x\"><a href='/y?a=1&b=2'>link</a></div>"),
    T("SELECT * FROM t WHERE id IN (1,2,3) AND name LIKE '%ab_';"),
    T("https://example.org/path/to/file.html?q=tokenizer&lang=en#top"),
    T("/usr/local/lib/x86_64-linux-gnu/libc.so.6"), T("C:\\Windows\\System32"),
    T("| a | b |\n|---|---:|\n| 1 | 2 |\n"), T("$ ls -la | grep '^d' > out.txt 2>&1"),
    T("x=>x+1; a&&b||!c; p->q; i++; --j; a<<=2"), T("snake_case camelCase PascalCase"),
    T("ALLCAPS WORDS AND MiXeD cAsE"), T("__init__ __main__ _private"),
    T("```python\nprint('hi')\n```"), T("regex: ^[a-z]+\\d{2,}$"),
    T("\xe4\xb8\x8a\xe6\xb5\xb7 = \"Shanghai\"  # \xe5\x9f\x8e\xe5\xb8\x82"),
};

/* splitmix64: a fixed, portable sequence for the generated texts. */
static uint64_t rng_state = 0x5eed5eed5eedULL;
static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static size_t rnd(size_t n) { return (size_t)(rng() % n); }

static const char *const frag_words[] = {
    "the", "The", "quick", "brown", "fox", "tokenizer", "engine", "and", "of", "HTTP",
    "JSON", "naïve", "café", "Größe", "über", "Äpfel", "garçon", "œuvre", "привет", "мир",
    "Москва", "你好", "世界", "的", "模型", "日本語", "カタカナ", "ひらがな", "한국어",
    "مرحبا", "العربية", "שלום", "नमस्ते", "สวัสดี", "Γειά", "Việt", "don't", "we'll",
    "I'm", "it's", "WE'VE", "O'Neil", "'s", "n't", "'ll", "'d", "'re", "x", "a", "I",
};
static const char *const frag_ws[] = {" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n",
                                      " \t", "\t ", "\n ", " \n", "\n\t", "      ", "\xc2\xa0",
                                      "\xe3\x80\x80"};
static const char *const frag_punct[] = {".", ",", "!", "?", "...", "!!", "?!", ";", ":",
                                         "-", "--", "—", "(", ")", "[", "]", "{", "}", "\"",
                                         "'", "`", "*", "**", "#", "##", "@", "$", "%", "&",
                                         "<", ">", "=", "==", "->", "/", "\\", "|", "~", "^",
                                         "_", "«", "»", "。", "、", "…", "€", "½"};
static const char *const frag_emoji[] = {
    "🦙", "😀", "👍", "👍🏽", "❤️", "🔥", "🚀", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇩🇪", "🇯🇵",
    "🤷‍♀️", "✨", "\xe2\x80\x8d", "\xef\xb8\x8f", "☕", "1️⃣", "©️",
};
static const char *const frag_special[] = {
    "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|begin_of_text|>", "<|eot_id|>", "[INST]", "<|im_start|", "<pad>",
};
static const char *const frag_code[] = {
    "int x = 0;", "return -1;", "if (a == b) {", "}", "def f(self):", "import os",
    "for i in range(10):", "x += 1", "printf(\"%d\\n\", n);", "#define N 64",
    "std::vector<int> v;", "a->b", "/* comment */", "// note", "# note", "0xDEADBEEF",
    "arr[i][j]", "self.__dict__", "lambda x: x*2", "=>", "!==", "&&", "||",
};

static void gen_fragment(char *out, size_t cap, size_t *len)
{
    char buf[512];
    size_t n = 0;
    switch (rnd(9)) {
    case 0:
    case 1:
        n = (size_t)snprintf(buf, sizeof buf, "%s", frag_words[rnd(sizeof frag_words /
                                                                    sizeof *frag_words)]);
        break;
    case 2:
        n = (size_t)snprintf(buf, sizeof buf, "%s",
                             frag_ws[rnd(sizeof frag_ws / sizeof *frag_ws)]);
        break;
    case 3: { /* a number of 1..25 digits, sometimes with separators */
        size_t d = 1 + rnd(25);
        for (size_t i = 0; i < d && n < 60; i++) {
            buf[n++] = (char)('0' + rnd(10));
            if (rnd(8) == 0) buf[n++] = ",._"[rnd(3)];
        }
        buf[n] = '\0';
        break;
    }
    case 4: {
        size_t k = 1 + rnd(4);
        for (size_t i = 0; i < k; i++) {
            const char *p = frag_punct[rnd(sizeof frag_punct / sizeof *frag_punct)];
            size_t pl = strlen(p);
            memcpy(buf + n, p, pl);
            n += pl;
        }
        break;
    }
    case 5:
        n = (size_t)snprintf(buf, sizeof buf, "%s",
                             frag_emoji[rnd(sizeof frag_emoji / sizeof *frag_emoji)]);
        break;
    case 6:
        n = (size_t)snprintf(buf, sizeof buf, "%s",
                             frag_special[rnd(sizeof frag_special / sizeof *frag_special)]);
        break;
    case 7:
        n = (size_t)snprintf(buf, sizeof buf, "%s",
                             frag_code[rnd(sizeof frag_code / sizeof *frag_code)]);
        break;
    default:
        if (rnd(3) == 0) { /* raw bytes, mostly invalid UTF-8 */
            size_t k = 1 + rnd(4);
            for (size_t i = 0; i < k; i++) buf[n++] = (char)(0x80 + rnd(0x80));
        } else { /* a random lowercase word of 1..30 letters, sometimes capitalised */
            size_t k = 1 + rnd(30);
            for (size_t i = 0; i < k; i++) buf[n++] = (char)('a' + rnd(26));
            if (rnd(4) == 0) buf[0] = (char)(buf[0] - 'a' + 'A');
        }
        break;
    }
    if (*len + n <= cap) {
        memcpy(out + *len, buf, n);
        *len += n;
    }
}

static void gen_texts(text_list *l, size_t count)
{
    char buf[8192];
    for (size_t t = 0; t < count; t++) {
        size_t len = 0, k = 1 + rnd(t < count / 2 ? 8 : 40);
        bool spaced = rnd(2);
        for (size_t i = 0; i < k; i++) {
            if (spaced && i > 0 && len < sizeof buf) buf[len++] = ' ';
            gen_fragment(buf, sizeof buf, &len);
        }
        texts_add(l, buf, len);
    }
}

/* Long runs: words, spaces, newlines, digits, CJK and emoji far past any token length. */
static void long_texts(text_list *l)
{
    static const char *const unit[] = {"a", " ", "\n", "7", "\xe7\x9a\x84", "\xf0\x9f\xa6\x99",
                                       "ab ", "\t ", "supercalifragilistic", "!", "\xff"};
    static const size_t reps[] = {1000, 1000, 300, 1000, 700, 300, 400, 300, 60, 500, 64};
    for (size_t i = 0; i < sizeof unit / sizeof *unit; i++) {
        size_t ul = strlen(unit[i]), n = ul * reps[i];
        char *b = malloc(n);
        if (!b) die_oom();
        for (size_t r = 0; r < reps[i]; r++) memcpy(b + r * ul, unit[i], ul);
        texts_add(l, b, n);
        free(b);
    }
    char b[6000]; /* one 6000-letter pseudo-word */
    for (size_t i = 0; i < sizeof b; i++) b[i] = (char)('a' + rnd(26));
    texts_add(l, b, sizeof b);
}

/* Adds the texts of a llama.cpp test file (NAME.gguf.inp): separated by a marker line. */
static void inp_texts(text_list *l, const char *gguf_path)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.inp", gguf_path);
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        b = realloc(b, cap *= 2);
    }
    fclose(f);
    if (!b) die_oom();
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t pos = 0;
    for (;;) {
        const char *next = memmem(b + pos, n - pos, sep, sizeof sep - 1);
        if (!next) {
            texts_add(l, b + pos, n - pos);
            break;
        }
        texts_add(l, b + pos, (size_t)(next - b) - pos);
        pos = (size_t)(next - b) + sizeof sep - 1;
    }
    free(b);
}

/* ---- reporting ------------------------------------------------------------------------ */

/* Length of a valid UTF-8 sequence at p (shortest form, no surrogates), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (k == 0 || k > n) return 0;
    uint32_t cp = k == 1 ? c : k == 2 ? (c & 0x1f) : k == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return k;
}

/* Prints text as a C-like string literal: valid UTF-8 as is, everything else escaped. */
static void print_escaped(const char *s, size_t n, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    putchar('"');
    size_t i = 0;
    while (i < n && i < max) {
        size_t k = utf8_len(p + i, n - i);
        if (k > 1) {
            fwrite(p + i, 1, k, stdout);
            i += k;
            continue;
        }
        unsigned c = p[i++];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f) printf("\\x%02x", c);
        else putchar((int)c);
    }
    putchar('"');
    if (n > max) printf("... (%zu bytes)", n);
}

static void print_ids(const char *label, const int32_t *ids, size_t n, size_t at)
{
    printf("    %-9s (%zu):", label, n);
    size_t from = at > 16 ? at - 16 : 0, to = n < at + 24 ? n : at + 24;
    if (from > 0) printf(" ...");
    for (size_t i = from; i < to; i++) printf(i == at ? " [%d]" : " %d", (int)ids[i]);
    if (to < n) printf(" ...");
    putchar('\n');
}

/* ---- comparing ------------------------------------------------------------------------ */

/*
 * Counters, kept in memory shared with the child process that runs each vocabulary's
 * comparisons (see run_vocab), so that they survive a crash there.
 */
typedef struct {
    bool verbose;
    size_t passed, failed;
    size_t not_compared;  /* (vocab, text) pairs on which llama.cpp aborts */
    size_t shown;         /* mismatches printed for the current vocabulary */
    size_t cur;           /* index of the text being compared */
    volatile int where;   /* IN_LLAMA or IN_CATENA while calling into either */
    int status;           /* a vocabulary's outcome (VOCAB_*), set by test_vocab */
    char why[512];        /* why it was skipped or not loaded */
} counts;

enum { IN_NEITHER, IN_LLAMA, IN_CATENA };

enum { SHOW_PER_VOCAB = 25 };

static void mismatch_head(counts *c, const char *vocab, const char *check, const text *t)
{
    c->failed++;
    if (!c->verbose && c->shown >= SHOW_PER_VOCAB) return;
    printf("MISMATCH %s %s text=", vocab, check);
    print_escaped(t->p, t->n, 300);
    putchar('\n');
}

static bool show(const counts *c) { return c->verbose || c->shown < SHOW_PER_VOCAB; }

/*
 * True when llama.cpp would abort on this text: its UTF-8 decoder accepts a 4-byte
 * sequence up to U+1FFFFF, and converting such a code point back to UTF-8 throws a C++
 * exception that llama_tokenize does not catch (std::terminate). This walks the bytes the
 * way that decoder does. Such texts are only checked not to fail in catena.
 */
static bool llama_would_abort(const text *t)
{
    const unsigned char *p = (const unsigned char *)t->p;
    size_t i = 0, n = t->n;
    while (i < n) {
        unsigned c = p[i];
        size_t k = c < 0x80 ? 1 : !(c & 0x40) ? 0 : !(c & 0x20) ? 2 : !(c & 0x10) ? 3
                 : !(c & 0x08) ? 4 : 0;
        bool ok = k > 0 && i + k <= n;
        for (size_t j = 1; ok && j < k; j++) ok = (p[i + j] & 0xc0) == 0x80;
        if (!ok) {
            i++;
            continue;
        }
        if (k == 4) {
            uint32_t cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(p[i + 1] & 0x3f) << 12 |
                          (uint32_t)(p[i + 2] & 0x3f) << 6 | (p[i + 3] & 0x3f);
            if (cp > 0x10ffff) return true;
        }
        i += k;
    }
    return false;
}

static void compare_text(counts *c, const char *vname, lcpp_vocab *ref, const ctn_vocab *cv,
                         const text *t)
{
    if (llama_would_abort(t)) {
        c->not_compared++;
        for (int mode = 0; mode < 4; mode++) {
            int32_t *b = NULL;
            size_t nb = 0;
            c->where = IN_CATENA;
            int rc = ctn_tokenize(cv, t->p, t->n, mode & 1, mode & 2, &b, &nb);
            c->where = IN_NEITHER;
            free(b);
            if (rc == 0) {
                c->passed++;
                continue;
            }
            mismatch_head(c, vname, "tokenize (llama.cpp aborts here)", t);
            if (show(c)) {
                c->shown++;
                printf("    catena    error %d (%s)\n", rc, ctn_strerror(rc));
            }
        }
        return;
    }
    int32_t *ref_ids[4] = {NULL};
    size_t n_ref_ids[4] = {0};
    for (int mode = 0; mode < 4; mode++) {
        bool add_special = mode & 1, parse_special = mode & 2;
        char check[64];
        snprintf(check, sizeof check, "tokenize(add_special=%d,parse_special=%d)",
                 add_special, parse_special);
        const int32_t *a;
        size_t na;
        c->where = IN_LLAMA;
        int lrc = lcpp_tokenize(ref, t->p, t->n, add_special, parse_special, &a, &na);
        c->where = IN_NEITHER;
        if (lrc < 0) {
            printf("NOTE %s %s: llama.cpp failed, not compared\n", vname, check);
            continue;
        }
        int32_t *b = NULL;
        size_t nb = 0;
        c->where = IN_CATENA;
        int rc = ctn_tokenize(cv, t->p, t->n, add_special, parse_special, &b, &nb);
        c->where = IN_NEITHER;
        size_t at = 0;
        while (rc == 0 && at < na && at < nb && a[at] == b[at]) at++;
        if (rc == 0 && na == nb && at == na) {
            c->passed++;
        } else {
            mismatch_head(c, vname, check, t);
            if (show(c)) {
                c->shown++;
                print_ids("llama.cpp", a, na, at);
                if (rc < 0) printf("    catena    error %d (%s)\n", rc, ctn_strerror(rc));
                else print_ids("catena", b, nb, at);
            }
        }
        ref_ids[mode] = malloc((na ? na : 1) * sizeof *ref_ids[mode]);
        if (!ref_ids[mode]) die_oom();
        memcpy(ref_ids[mode], a, na * sizeof *a);
        n_ref_ids[mode] = na;
        free(b);
    }
    /*
     * Detokenize llama.cpp's ids with both; the bytes must be equal. The plain ids with
     * unparse_special off and on; the ids with BOS/EOS and parsed control tokens
     * (add_special and parse_special) with every remove_special/unparse_special pair.
     */
    static const struct {
        int mode;
        bool remove, unparse;
    } detok[] = {{0, false, false}, {0, false, true}, {3, false, false},
                 {3, false, true},  {3, true, false}, {3, true, true}};
    for (size_t k = 0; k < sizeof detok / sizeof *detok; k++) {
        const int32_t *ids = ref_ids[detok[k].mode];
        size_t n_ids = n_ref_ids[detok[k].mode];
        bool remove = detok[k].remove, unparse = detok[k].unparse;
        if (!ids) continue;
        const char *a;
        size_t na;
        char check[96];
        snprintf(check, sizeof check, "detokenize(%s ids, remove_special=%d,unparse_special=%d)",
                 detok[k].mode ? "special" : "plain", remove, unparse);
        c->where = IN_LLAMA;
        int lrc = lcpp_detokenize(ref, ids, n_ids, remove, unparse, &a, &na);
        c->where = IN_NEITHER;
        if (lrc < 0) continue;
        char *b = NULL;
        size_t nb = 0;
        c->where = IN_CATENA;
        int rc = ctn_detokenize(cv, ids, n_ids, remove, unparse, &b, &nb);
        c->where = IN_NEITHER;
        if (rc == 0 && na == nb && memcmp(a, b, na) == 0) {
            c->passed++;
        } else {
            mismatch_head(c, vname, check, t);
            if (show(c)) {
                c->shown++;
                printf("    llama.cpp: ");
                print_escaped(a, na, 300);
                printf("\n    catena:    ");
                if (rc < 0) printf("error %d (%s)", rc, ctn_strerror(rc));
                else print_escaped(b, nb, 300);
                putchar('\n');
            }
        }
        free(b);
    }
    for (int mode = 0; mode < 4; mode++) free(ref_ids[mode]);
}

/*
 * Compares all texts on one vocabulary in a child process. llama.cpp aborts on some inputs
 * (a GGML_ASSERT in its BPE merge for gemma-4, uncaught C++ exceptions), which would end
 * the whole test; here such a text is reported, left out, and the comparison goes on in a
 * new child from the next text. A crash inside catena is a failure.
 */
static void run_vocab(counts *c, const char *vname, lcpp_vocab *ref, const ctn_vocab *cv,
                      const text_list *base, const text_list *extra)
{
    size_t total = base->n + extra->n, start = 0;
    while (start < total) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("tokdiff: fork");
            exit(1);
        }
        if (pid == 0) {
            for (size_t i = start; i < total; i++) {
                c->cur = i;
                compare_text(c, vname, ref, cv,
                             i < base->n ? &base->v[i] : &extra->v[i - base->n]);
                fflush(stdout);
            }
            _exit(0);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0) {}
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) break;
        const text *t = c->cur < base->n ? &base->v[c->cur] : &extra->v[c->cur - base->n];
        if (c->where == IN_LLAMA) {
            c->not_compared++;
            printf("LLAMA.CPP ABORTED %s (not compared) text=", vname);
        } else {
            c->failed++;
            printf("CRASH %s in %s, status 0x%x, text=", vname,
                   c->where == IN_CATENA ? "catena" : "tokdiff", (unsigned)st);
        }
        print_escaped(t->p, t->n, 300);
        putchar('\n');
        c->where = IN_NEITHER;
        start = c->cur + 1;
    }
}

/* ---- vocabularies --------------------------------------------------------------------- */

typedef struct {
    char **v;
    size_t n, cap;
} path_list;

static void paths_add(path_list *l, const char *p)
{
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    for (size_t i = 0; i < l->n; i++) { /* the same vocabulary under two folders */
        const char *b = strrchr(l->v[i], '/');
        if (strcmp(b ? b + 1 : l->v[i], base) == 0) return;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 32;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) die_oom();
    }
    l->v[l->n] = strdup(p);
    if (!l->v[l->n]) die_oom();
    l->n++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void paths_add_dir(path_list *l, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    path_list found = {0};
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "ggml-vocab-", 11) != 0 || n < 5 ||
            strcmp(e->d_name + n - 5, ".gguf") != 0)
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        paths_add(&found, p);
    }
    closedir(d);
    if (found.n) qsort(found.v, found.n, sizeof *found.v, cmp_str);
    for (size_t i = 0; i < found.n; i++) {
        paths_add(l, found.v[i]);
        free(found.v[i]);
    }
    free(found.v);
}

static void paths_add_arg(path_list *l, const char *p)
{
    struct stat st;
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) paths_add_dir(l, p);
    else if (stat(p, &st) == 0) paths_add(l, p);
    else fprintf(stderr, "tokdiff: %s: not found\n", p);
}

/* ---- one vocabulary ------------------------------------------------------------------ */

enum { VOCAB_COMPARED, VOCAB_SKIPPED, VOCAB_REFUSED, VOCAB_UNSUPPORTED, VOCAB_LOAD_FAILED };

/*
 * Loads `path` into both tokenizers, compares every text of `base`, `extra` and of the
 * .inp file next to `inp_of` (if any), and prints a summary line. The outcome goes to
 * c->status (VOCAB_*) with the reason in c->why, so that it survives when this runs in a
 * child process.
 */
static void test_vocab(counts *c, const char *path, const char *vname, const char *inp_of,
                       const text_list *base, const text_list *extra, bool strict)
{
    char err[1024];
    lcpp_vocab *ref;
    c->where = IN_LLAMA;
    int lrc = lcpp_vocab_open(&ref, path, err, sizeof err);
    c->where = IN_NEITHER;
    if (lrc < 0) {
        snprintf(c->why, sizeof c->why, "%s", err);
        c->status = VOCAB_REFUSED;
        return;
    }
    int type = lcpp_vocab_type(ref);
    if (type != LCPP_VOCAB_SPM && type != LCPP_VOCAB_BPE) {
        snprintf(c->why, sizeof c->why, "vocab type %d is neither SPM nor BPE", type);
        c->status = VOCAB_SKIPPED;
        lcpp_vocab_free(ref);
        return;
    }
    ctn_gguf *g;
    ctn_vocab *cv = NULL;
    c->where = IN_CATENA;
    int rc = ctn_gguf_open(&g, path, err, sizeof err);
    if (rc == 0) {
        rc = ctn_vocab_load(&cv, g, err, sizeof err);
        ctn_gguf_free(g);
    }
    c->where = IN_NEITHER;
    if (rc < 0) {
        snprintf(c->why, sizeof c->why, "%s (%s)", err, ctn_strerror(rc));
        c->status = rc == CTN_ENOTSUP && !strict ? VOCAB_UNSUPPORTED : VOCAB_LOAD_FAILED;
        if (c->status == VOCAB_LOAD_FAILED) c->failed++;
        lcpp_vocab_free(ref);
        return;
    }
    text_list texts = {0};
    for (size_t i = 0; i < extra->n; i++) texts_add(&texts, extra->v[i].p, extra->v[i].n);
    inp_texts(&texts, inp_of);
    size_t failed0 = c->failed, passed0 = c->passed;
    c->shown = 0;
    run_vocab(c, vname, ref, cv, base, &texts);
    printf("%-36s %s pre=%-14s %zu texts: %zu passed, %zu failed\n", vname,
           type == LCPP_VOCAB_SPM ? "SPM" : "BPE", ctn_vocab_pre(cv), base->n + texts.n,
           c->passed - passed0, c->failed - failed0);
    if (c->failed - failed0 > c->shown)
        printf("    (%zu mismatches not shown; -v shows all)\n", c->failed - failed0 - c->shown);
    fflush(stdout);
    c->status = VOCAB_COMPARED;
    texts_free(&texts);
    ctn_vocab_free(cv);
    lcpp_vocab_free(ref);
}

/* ---- synthetic variants --------------------------------------------------------------- */

typedef struct {
    tv_variant *v;
    size_t n, cap;
} variant_list;

static tv_variant *variant_add(variant_list *l, const char *base, const char *fmt, const char *arg)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) die_oom();
    }
    const char *b = strrchr(base, '/') ? strrchr(base, '/') + 1 : base;
    size_t bl = strlen(b);
    if (bl > 16 && strncmp(b, "ggml-vocab-", 11) == 0) b += 11, bl -= 16; /* "gpt-2" */
    char name[256];
    int k = snprintf(name, sizeof name, "%.*s[", (int)bl, b);
    k += snprintf(name + k, sizeof name - (size_t)k, fmt, arg);
    snprintf(name + k, sizeof name - (size_t)k, "]");
    tv_variant *v = &l->v[l->n++];
    *v = (tv_variant){.base = base, .add_bos = -1, .add_eos = -1, .add_space_prefix = -1};
    v->name = strdup(name);
    if (!v->name) die_oom();
    return v;
}

/* The vocabulary file named `file` among the paths, or NULL. */
static const char *find_vocab(const path_list *l, const char *file)
{
    for (size_t i = 0; i < l->n; i++) {
        const char *b = strrchr(l->v[i], '/');
        if (strcmp(b ? b + 1 : l->v[i], file) == 0) return l->v[i];
    }
    return NULL;
}

/*
 * The variants: every accepted tokenizer.ggml.pre name on the BPE bases (all names on
 * gpt-2, the smallest; on llama-bpe and qwen2 only with `all`, as each load there costs a
 * second), then add_bos/add_eos/add_space_prefix combinations, token types changed or
 * added (user-defined tokens with spaces, control tokens, tokens that llama.cpp turns into
 * control tokens by their text) and the by-name lstrip/rstrip attributes.
 */
static void build_variants(variant_list *l, const path_list *vocabs, char **pre, size_t n_pre,
                           bool all, bool quick)
{
    const char *spm = find_vocab(vocabs, "ggml-vocab-llama-spm.gguf");
    const char *bpe[] = {find_vocab(vocabs, "ggml-vocab-gpt-2.gguf"),
                         find_vocab(vocabs, "ggml-vocab-llama-bpe.gguf"),
                         find_vocab(vocabs, "ggml-vocab-qwen2.gguf")};
    enum { N_BPE = sizeof bpe / sizeof *bpe };
    tv_variant *v;
    for (size_t b = 0; b < N_BPE && !quick; b++) {
        if (!bpe[b] || (b > 0 && !all)) continue;
        for (size_t i = 0; i < n_pre; i++) variant_add(l, bpe[b], "pre=%s", pre[i])->pre = pre[i];
        variant_add(l, bpe[b], "pre=%s", "\"\"")->pre = "";
    }
    for (size_t b = 0; b < N_BPE; b++) {
        if (!bpe[b] || (b > 0 && quick)) continue;
        variant_add(l, bpe[b], "%s", "no pre")->drop_pre = true;
        v = variant_add(l, bpe[b], "%s", "add_bos=1");
        v->add_bos = 1;
        v = variant_add(l, bpe[b], "%s", "add_bos=0");
        v->add_bos = 0;
        v = variant_add(l, bpe[b], "%s", "add_bos=1,add_eos=1");
        v->add_bos = 1, v->add_eos = 1;
        v = variant_add(l, bpe[b], "%s", "add_bos=0,add_eos=1");
        v->add_bos = 0, v->add_eos = 1;
        v = variant_add(l, bpe[b], "%s", "user-defined and control tokens");
        v->retype[0] = (tv_token){"\xc4\xa0the", 4};                  /* "Ġthe" */
        v->append[0] = (tv_token){" hello world", 4};
        v->append[1] = (tv_token){"<ctrl>", 3};
        v->append[2] = (tv_token){"a b\tc", 4};
        v->append[3] = (tv_token){"<|eot_id|>", 1};     /* made a control token by name */
        v->append[4] = (tv_token){"<|fim_prefix|>", 1}; /* likewise */
        v->append[5] = (tv_token){"\xe2\x96\x81world", 4};
        v->append[6] = (tv_token){"\xe6\x97\xa5\xe6\x9c\xac", 4}; /* "日本" */
        v->append[7] = (tv_token){"\n\n\n", 4};
        /* llama.cpp reads add_space_prefix for every type: detokenize drops a leading space */
        v = variant_add(l, bpe[b], "%s", "add_space_prefix=1");
        v->add_space_prefix = 1;
        v = variant_add(l, bpe[b], "%s", "add_bos=1,add_space_prefix=1");
        v->add_bos = 1, v->add_space_prefix = 1;
        v = variant_add(l, bpe[b], "%s", "unknown, unused and by-name control tokens");
        v->append[0] = (tv_token){"<unk>", 2};
        v->append[1] = (tv_token){"<unused0>", 3};
        v->append[2] = (tv_token){"<unused1>", 5};
        v->append[3] = (tv_token){"<|eom_id|>", 1};
        v->append[4] = (tv_token){"[PAD]", 1};
        v->append[5] = (tv_token){"<|fim_suffix|>", 4};
        v->append[6] = (tv_token){"<end_of_turn>", 1};
        v->append[7] = (tv_token){"<|im_end|>", 1};
        v = variant_add(l, bpe[b], "%s", "add_bos=1,add_eos=1,user-defined tokens");
        v->add_bos = 1, v->add_eos = 1;
        v->append[0] = (tv_token){" hello world", 4};
        v->append[1] = (tv_token){"<ctrl>", 3};
        v->append[2] = (tv_token){"<|endoftext|>", 4};
        v->append[3] = (tv_token){"  ", 4};
    }
    if (bpe[0]) {
        v = variant_add(l, bpe[0], "%s", "pre=jina-v2-de,<mask>");
        v->pre = "jina-v2-de";
        v->append[0] = (tv_token){"<mask>", 3};
        v = variant_add(l, bpe[0], "%s", "name=modern-bert,[MASK]");
        v->gen_name = "Modern-BERT base";
        v->append[0] = (tv_token){"[MASK]", 3};
        v = variant_add(l, bpe[0], "%s", "name=phi-3");
        v->gen_name = "Phi-3 mini";
        v->append[0] = (tv_token){"</s>", 3};
        v->append[1] = (tv_token){"<s>", 3};
        v->append[2] = (tv_token){"<unk>", 2};
        v->append[3] = (tv_token){"<|user|>", 3};
        v->append[4] = (tv_token){"<|end|>", 3};
        v->append[5] = (tv_token){"<|endoftext|>", 3};
    }
    if (spm) {
        static const struct {
            const char *what;
            int bos, eos, asp;
        } flags[] = {
            {"add_space_prefix=0", -1, -1, 0},      {"add_space_prefix=1", -1, -1, 1},
            {"add_bos=0", 0, -1, -1},               {"add_eos=1", -1, 1, -1},
            {"add_bos=0,add_eos=1", 0, 1, -1},      {"add_bos=1,add_eos=1", 1, 1, 0},
            {"add_bos=0,add_space_prefix=0", 0, -1, 0},
        };
        for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
            v = variant_add(l, spm, "%s", flags[i].what);
            v->add_bos = flags[i].bos, v->add_eos = flags[i].eos;
            v->add_space_prefix = flags[i].asp;
        }
        for (int asp = 1; asp >= 0; asp--) {
            v = variant_add(l, spm, "%s", asp ? "user-defined and control tokens"
                                              : "add_space_prefix=0,user-defined tokens");
            v->add_space_prefix = asp;
            v->retype[0] = (tv_token){"\xe2\x96\x81the", 4}; /* "▁the" */
            v->retype[1] = (tv_token){"\xe2\x96\x81of", 3};
            v->append[0] = (tv_token){"<ctrl>", 3};
            v->append[1] = (tv_token){"hello world", 4};
            v->append[2] = (tv_token){"\xe2\x96\x81hello\xe2\x96\x81world", 4};
            v->append[3] = (tv_token){"<|endoftext|>", 1}; /* made a control token by name */
            v->append[4] = (tv_token){" x ", 4};
        }
        /* Gemma (1-3) style: no space prefix, whitespace and HTML user-defined tokens */
        v = variant_add(l, spm, "%s", "add_space_prefix=0,gemma-like tokens");
        v->add_space_prefix = 0;
        v->append[0] = (tv_token){"<start_of_turn>", 3};
        v->append[1] = (tv_token){"<end_of_turn>", 1};
        v->append[2] = (tv_token){"<table>", 4};
        v->append[3] = (tv_token){"\xe2\x96\x81\xe2\x96\x81", 4}; /* "▁▁" */
        v->append[4] = (tv_token){"\n\n", 4};
        v->append[5] = (tv_token){"\t\t", 4};
        v->append[6] = (tv_token){"   ", 4};
        v = variant_add(l, spm, "%s", "unknown, unused and by-name control tokens");
        v->retype[0] = (tv_token){"\xe2\x96\x81" "and", 2}; /* "▁and" as UNKNOWN */
        v->retype[1] = (tv_token){"\xe2\x96\x81is", 5};  /* UNUSED */
        v->append[0] = (tv_token){"<unused0>", 3};
        v->append[1] = (tv_token){"<unused1>", 5};
        v->append[2] = (tv_token){"<|eot_id|>", 1};
        v->append[3] = (tv_token){"<fim_prefix>", 1};
        v->append[4] = (tv_token){"<|im_end|>", 4};
        v = variant_add(l, spm, "%s", "name=phi-3");
        v->gen_name = "Phi-3-mini-4k-instruct";
        v->append[0] = (tv_token){"<|endoftext|>", 3};
        v->append[1] = (tv_token){"<|user|>", 3};
        v->append[2] = (tv_token){"<|assistant|>", 3};
        v->append[3] = (tv_token){"<|end|>", 3};
        v->append[4] = (tv_token){"<|placeholder1|>", 4};
    }
}

/* Texts around the tokens a variant adds or retypes: alone, spaced, glued, repeated. */
static void variant_texts(text_list *l, const tv_variant *v)
{
    static const char *const shapes[] = {"%s", " %s", "%s ", "  %s  ", "a%sb", "a %s b",
                                         "%s%s", "%s %s", "\n%s\n", "x%s\t%s y ", "<s>%s</s>"};
    for (size_t i = 0; i < 2 * TV_MAX_EDITS; i++) {
        const tv_token *t = i < TV_MAX_EDITS ? &v->retype[i] : &v->append[i - TV_MAX_EDITS];
        if (!t->text) continue;
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            char buf[256];
            int n = snprintf(buf, sizeof buf, shapes[s], t->text, t->text);
            texts_add(l, buf, (size_t)n);
        }
    }
    if (v->append[0].text && v->append[1].text) {
        char buf[256];
        int n = snprintf(buf, sizeof buf, "%s hi %s\n%s  there", v->append[0].text,
                         v->append[1].text, v->append[0].text);
        texts_add(l, buf, (size_t)n);
    }
}

typedef struct {
    size_t compared, failed_variants;
    path_list refused, unsupported; /* "name: reason" */
} variant_report;

static void note(path_list *l, const char *name, const char *why)
{
    char b[1024];
    snprintf(b, sizeof b, "%s: %s", name, why);
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 32;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) die_oom();
    }
    l->v[l->n] = strdup(b);
    if (!l->v[l->n]) die_oom();
    l->n++;
}

/*
 * Writes one variant to a temporary file and compares it in a child process, so that a
 * loader that aborts (llama.cpp on some names) costs only that variant.
 */
static void run_variant(counts *c, const tv_variant *v, const char *dir, bool keep,
                        const text_list *base, bool strict, variant_report *rep)
{
    char path[4096], err[1024], file[256];
    size_t k = 0;
    for (const char *p = v->name; *p && k + 1 < sizeof file; p++) /* a file name of it */
        file[k++] = strchr("[]=,\"/'\\ ", *p) ? '_' : *p;
    file[k] = '\0';
    snprintf(path, sizeof path, "%s/%s.gguf", dir, keep ? file : "variant");
    if (tv_write(v, path, err, sizeof err) < 0) {
        printf("FAIL %s: cannot write the variant: %s\n", v->name, err);
        c->failed++;
        rep->failed_variants++;
        return;
    }
    text_list extra = {0};
    variant_texts(&extra, v);
    c->status = -1;
    c->why[0] = '\0';
    size_t failed0 = c->failed;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("tokdiff: fork");
        exit(1);
    }
    if (pid == 0) {
        test_vocab(c, path, v->name, v->base, base, &extra, strict);
        fflush(stdout);
        _exit(0);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (c->where == IN_LLAMA) {
            note(&rep->refused, v->name, "llama.cpp crashes loading it");
        } else {
            printf("CRASH %s while loading, in %s, status 0x%x\n", v->name,
                   c->where == IN_CATENA ? "catena" : "tokdiff", (unsigned)st);
            c->failed++;
        }
        c->where = IN_NEITHER;
    } else if (c->status == VOCAB_REFUSED || c->status == VOCAB_SKIPPED) {
        note(&rep->refused, v->name, c->why);
    } else if (c->status == VOCAB_UNSUPPORTED) {
        note(&rep->unsupported, v->name, c->why);
    } else if (c->status == VOCAB_LOAD_FAILED) {
        printf("FAIL %s: catena cannot load it: %s\n", v->name, c->why);
    } else {
        rep->compared++;
    }
    if (c->failed > failed0) rep->failed_variants++;
    texts_free(&extra);
    if (!keep) unlink(path);
}

/* The llama.cpp source file with the list of pre-tokenizer names, next to its models. */
static void llama_src_path(char *out, size_t cap, const char *models_dir)
{
    snprintf(out, cap, "%s/../src/llama-vocab.cpp", models_dir);
}

static void usage(void)
{
    fputs("usage: tokdiff [-L LIBDIR] [-v] [--strict] [--gen N] [--seed S] [--no-variants]\n"
          "               [--variants-only] [--all-variants] [--quick-variants]\n"
          "               [--llama-src FILE] [--keep DIR]\n"
          "               [VOCAB.gguf | DIR]...\n",
          stderr);
}

int main(int argc, char **argv)
{
    const char *libdir = NULL, *llama_src = NULL, *keep = NULL;
    bool strict = false, variants = true, variants_only = false, all_variants = false;
    bool gen_given = false, quick = false;
    counts *cs = mmap(NULL, sizeof *cs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
    if (cs == MAP_FAILED) die_oom();
    counts c0 = {0};
    *cs = c0;
    path_list vocabs = {0};
    int n_args = 0;
    size_t n_gen = 200;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-L") == 0 && i + 1 < argc) libdir = argv[++i];
        else if (strcmp(argv[i], "-v") == 0) cs->verbose = true;
        else if (strcmp(argv[i], "--strict") == 0) strict = true;
        else if (strcmp(argv[i], "--gen") == 0 && i + 1 < argc) {
            n_gen = strtoul(argv[++i], NULL, 10);
            gen_given = true;
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            rng_state = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--no-variants") == 0) variants = false;
        else if (strcmp(argv[i], "--variants-only") == 0) variants_only = true;
        else if (strcmp(argv[i], "--all-variants") == 0) all_variants = true;
        else if (strcmp(argv[i], "--quick-variants") == 0) quick = true;
        else if (strcmp(argv[i], "--llama-src") == 0 && i + 1 < argc) llama_src = argv[++i];
        else if (strcmp(argv[i], "--keep") == 0 && i + 1 < argc) keep = argv[++i];
        else if (argv[i][0] == '-') {
            usage();
            return 2;
        } else {
            paths_add_arg(&vocabs, argv[i]);
            n_args++;
        }
    }
    const char *models = getenv("CTN_LLAMACPP_MODELS");
    if (!models || !*models) models = "build/peers/llama.cpp/models";
    if (n_args == 0) {
        char p[4096];
        const char *shared = getenv("CTN_SHARED");
        snprintf(p, sizeof p, "%s/vocab", shared && *shared ? shared : "../shared");
        paths_add_dir(&vocabs, p);
        paths_add_dir(&vocabs, models);
    }

    /* A llama.cpp abort would otherwise start gdb to print a backtrace. */
    setenv("GGML_NO_BACKTRACE", "1", 0);
    char err[1024];
    if (lcpp_lib_open(libdir, err, sizeof err) < 0 || vocabs.n == 0) {
        if (vocabs.n == 0)
            printf("SKIP: no ggml-vocab-*.gguf found; run scripts/setup-peers.sh\n");
        else
            printf("SKIP: llama.cpp unavailable (%s); run scripts/setup-peers.sh\n", err);
        for (size_t i = 0; i < vocabs.n; i++) free(vocabs.v[i]);
        free(vocabs.v);
        return 77;
    }

    text_list base = {0};
    for (size_t i = 0; i < sizeof fixed_texts / sizeof *fixed_texts; i++)
        texts_add(&base, fixed_texts[i].p, fixed_texts[i].n);
    /* the variants get the hand-written texts, and generated ones only when asked for */
    text_list vbase = {0};
    for (size_t i = 0; i < base.n; i++) texts_add(&vbase, base.v[i].p, base.v[i].n);
    uint64_t seed = rng_state;
    gen_texts(&base, n_gen);
    long_texts(&base);
    if (gen_given) {
        rng_state = seed;
        gen_texts(&vbase, n_gen);
    }

    size_t n_vocabs = 0, n_unsupported = 0;
    for (size_t vi = 0; vi < vocabs.n && !variants_only; vi++) {
        const char *path = vocabs.v[vi];
        const char *vname = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        text_list none = {0};
        test_vocab(cs, path, vname, path, &base, &none, strict);
        switch (cs->status) {
        case VOCAB_COMPARED: n_vocabs++; break;
        case VOCAB_REFUSED:
        case VOCAB_SKIPPED: printf("skip %s: %s\n", vname, cs->why); break;
        case VOCAB_UNSUPPORTED:
            printf("UNSUPPORTED %s: catena cannot load it: %s\n", vname, cs->why);
            n_unsupported++;
            break;
        default: printf("FAIL %s: catena cannot load it: %s\n", vname, cs->why); break;
        }
    }
    texts_free(&base);

    variant_report rep = {0};
    size_t n_variants = 0;
    if (variants || variants_only) {
        char src[4096];
        if (llama_src) snprintf(src, sizeof src, "%s", llama_src);
        else llama_src_path(src, sizeof src, models);
        char **pre;
        size_t n_pre, n_from_src;
        tv_pre_names(src, &pre, &n_pre, &n_from_src);
        variant_list vl = {0};
        build_variants(&vl, &vocabs, pre, n_pre, all_variants, quick);
        char dir[4096] = "/tmp/tokdiff-XXXXXX";
        if (keep) snprintf(dir, sizeof dir, "%s", keep);
        if (vl.n && !keep && !mkdtemp(dir)) {
            perror("tokdiff: mkdtemp");
            return 1;
        }
        printf("%zu variants (%zu tokenizer.ggml.pre names, %zu of them only in %s)\n", vl.n,
               n_pre, n_from_src, src);
        for (size_t i = 0; i < vl.n; i++)
            run_variant(cs, &vl.v[i], dir, keep != NULL, &vbase, strict, &rep);
        if (vl.n && !keep) rmdir(dir);
        for (size_t i = 0; i < rep.refused.n; i++) printf("skip %s\n", rep.refused.v[i]);
        for (size_t i = 0; i < rep.unsupported.n; i++)
            printf("UNSUPPORTED %s\n", rep.unsupported.v[i]);
        printf("%zu variants compared (%zu with mismatches), %zu refused by llama.cpp, %zu "
               "unsupported by catena\n",
               rep.compared, rep.failed_variants, rep.refused.n, rep.unsupported.n);
        n_variants = rep.compared;
        for (size_t i = 0; i < vl.n; i++) free((char *)vl.v[i].name);
        free(vl.v);
        tv_names_free(pre, n_pre);
        for (size_t i = 0; i < rep.refused.n; i++) free(rep.refused.v[i]);
        for (size_t i = 0; i < rep.unsupported.n; i++) free(rep.unsupported.v[i]);
        free(rep.refused.v);
        free(rep.unsupported.v);
    }
    texts_free(&vbase);
    for (size_t i = 0; i < vocabs.n; i++) free(vocabs.v[i]);
    free(vocabs.v);

    if (n_vocabs == 0 && n_variants == 0 && cs->failed == 0) {
        printf("SKIP: no SPM/BPE vocabulary could be compared\n");
        return 77;
    }
    printf("%zu vocabularies and %zu variants compared, %zu unsupported by catena; %zu (vocab, "
           "text) pairs not compared because llama.cpp aborts on them\n",
           n_vocabs, n_variants, n_unsupported, cs->not_compared);
    printf("%zu passed, %zu failed\n", cs->passed, cs->failed);
    int rc = cs->failed ? 1 : 0;
    munmap(cs, sizeof *cs);
    return rc;
}
