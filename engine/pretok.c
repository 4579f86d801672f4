/*
 * Pre-tokenizers of byte-level BPE vocabularies: the regex sets llama.cpp attaches to each
 * tokenizer.ggml.pre value, run the way its unicode_regex_split runs them.
 *
 * llama.cpp is the reference, not the Hugging Face regexes, so this reproduces its two
 * mechanisms rather than running the HF patterns under PCRE2 with Unicode properties:
 *  - the common patterns (GPT-2, Llama 3, Qwen2, Qwen3.5, newline split) are hand-written
 *    scanners in llama.cpp with their own corner cases (e.g. \s+(?!\S), the ' ?' before a
 *    punctuation run, the case-insensitive contractions); they are re-implemented here as
 *    scanners with the same behaviour, which is also the fast path;
 *  - every other pattern goes through std::regex in llama.cpp after "collapsing" the text:
 *    each non-ASCII code point becomes one byte standing for its category (0xD1 number,
 *    0xD2 letter, 0xD3 punctuation, 0xD4 mark, 0xD5 symbol, 0x0B whitespace, 0xD0 other)
 *    and each \p{..} in the pattern becomes a class of that byte plus its ASCII members.
 *    Patterns without \p{..} run on code points with non-ASCII whitespace turned into 0x0B.
 *    We do the same transformation and run the result with PCRE2 (JIT): without UCP in
 *    both cases, in byte mode for collapsed text and in UTF mode for the code point case,
 *    because std::regex's \s, \d, \w and classes are ASCII-only there too.
 * Each step splits every piece the previous step produced (never across piece ends).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode.h"
#include "vocab-impl.h"

enum {
    STEP_REGEX,
    STEP_GPT2,
    STEP_LLAMA3,
    STEP_QWEN2,
    STEP_QWEN35,
    STEP_NEWLINES,
    STEP_KIMI_K2,
    STEP_DIGITS3,
};

struct ctn__pretok_step {
    int kind;
    bool collapsed; /* STEP_REGEX: runs on collapsed bytes (else on UTF-8 code points) */
    pcre2_code *re;
};

/* ---- the regexes, as llama.cpp writes them per pre-tokenizer type -------------------- */

#define RE_GPT2     "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_CONTRACT "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3                                                                                  \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"       \
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                   \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"            \
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN35                                                                                  \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+"        \
                "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_NEWLINES "[^\\n]+|[\\n]+"
/* Not regexes run as such: llama.cpp recognises these strings and runs its Kimi-K2 scanner
 * and its digit grouper (used by afmoe, and by tiny_aya in place of its lookahead regex). */
#define RE_KIMI_K2      "\\p{Han}+"
#define RE_AFMOE_DIGITS "\\p{AFMoE_digits}"
#define RE_AYA_DIGITS   "\\d{1,3}(?=(?:\\d{3})*\\b)"
/* afmoe's CJK and Asian scripts class, byte for byte as llama.cpp's source has it (its
 * third range starts at U+8C48, the canonical form of U+F900, not at U+F900). */
#define RE_AFMOE_CJK                                                                               \
    "[\xe4\xb8\x80-\xe9\xbf\xbf\xe3\x90\x80-\xe4\xb6\xbf\xe8\xb1\x88-\xef\xab\xbf"                 \
    "\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf\xef\xbd\xa5-\xef\xbe\x9f"                  \
    "\xe2\xbc\x80-\xe2\xbf\x9f\xe0\xb9\x80-\xe0\xb9\xbf\xe0\xba\x80-\xe0\xbb\xbf"                  \
    "\xe1\x9e\x80-\xe1\x9f\xbf\xe1\x80\x80-\xe1\x82\x9f\xea\xa9\xa0-\xea\xa9\xbf"                  \
    "\xea\xa7\xa0-\xea\xa7\xbf\xea\xb0\x80-\xed\x9e\xaf\xe1\x84\x80-\xe1\x87\xbf]+"
#define RE_BLOOM                                                                                   \
    " ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+"
#define RE_DS3_MAIN                                                                                \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"             \
    "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK_KANA                                                                                \
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f"                                          \
    "\xe3\x82\xa0-\xe3\x83\xbf]+"
#define RE_UPPER_LOWER  "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
#define RE_UPPER_LOWER2 "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"

/* deepseek-llm's letter class lists many scripts literally; kept byte for byte. */
static const char re_deepseek_letters[] =
    "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf"
    "\xc7\x84-\xca\x93\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd\xcd\xbf"
    "\xce\x86\xce\x88-\xce\x8a\xce\x8c\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-\xd2\x81\xd2\x8a-"
    "\xd4\xaf\xd4\xb1-\xd5\x96\xe1\x82\xa0-\xe1\x83\x85\xe1\x8e\xa0-\xe1\x8f\xb5\xe1\x8f\xb8-\xe1"
    "\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba\xe1\xb2\xbd-\xe1\xb2\xbf\xe1\xb4\x80-\xe1\xb4\xab\xe1\xb5"
    "\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a\xe1\xb8\x80-\xe1\xbc\x95\xe1\xbc\x98-\xe1\xbc\x9d"
    "\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d\xe1\xbd\x90-\xe1\xbd\x97\xe1\xbd\x99\xe1"
    "\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1\xbd\xbd\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe"
    "\xbc\xe1\xbe\xbe\xe1\xbf\x82-\xe1\xbf\x84\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93"
    "\xe1\xbf\x96-\xe1\xbf\x9b\xe1\xbf\xa0-\xe1\xbf\xac\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1"
    "\xbf\xbc\xe2\x84\x82\xe2\x84\x87\xe2\x84\x8a-\xe2\x84\x93\xe2\x84\x95\xe2\x84\x99-\xe2\x84"
    "\x9d\xe2\x84\xa4\xe2\x84\xa6\xe2\x84\xa8\xe2\x84\xaa-\xe2\x84\xad\xe2\x84\xaf-\xe2\x84\xb4"
    "\xe2\x84\xb9\xe2\x84\xbc-\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89\xe2\x85\x8e\xe2\x86\x83\xe2"
    "\x86\x84\xe2\xb0\x80-\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae\xe2\xb3"
    "\xb2\xe2\xb3\xb3\xea\x99\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf"
    "\xea\x9d\xb1-\xea\x9e\x87\xea\x9e\x8b-\xea\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef"
    "\xac\x86\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a\xf0\x90"
    "\x90\x80-\xf0\x90\x91\x8f\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-\xf0\x90\x93\xbb"
    "\xf0\x90\xb2\x80-\xf0\x90\xb2\xb2\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-\xf0\x91"
    "\xa3\x9f\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83]+";

#define RE_DS_PUNCT                                                                                \
    "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f"       \
    "\xe3\x80\x80-\xe3\x80\x82]+"
#define RE_DS_CJK "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+"

enum {
    PRE_DEFAULT,
    PRE_LLAMA3,
    PRE_JAIS2,
    PRE_DEEPSEEK_LLM,
    PRE_DEEPSEEK3,
    PRE_SPARK,
    PRE_YOUTU,
    PRE_DEEPSEEK_CODER,
    PRE_FALCON,
    PRE_STARCODER,
    PRE_GPT2,
    PRE_QWEN2,
    PRE_QWEN35,
    PRE_BLOOM,
    PRE_VIKING,
    PRE_TEKKEN,
    PRE_CHAMELEON,
    PRE_GPT4O,
    PRE_GRANITE_EMB,
    PRE_SUPERBPE,
    PRE_BAILING,
    PRE_SEED_CODER,
    PRE_UFAKZEKA,
    PRE_LAGUNA,
    PRE_EXAONE_MOE,
    PRE_NEWLINES,
    PRE_MINICPM5,
    PRE_WHITESPACE,
    PRE_TINY_AYA,
    PRE_KIMI_K2,
    PRE_AFMOE,
};

static const char *const presets[][CTN__PRETOK_MAX_STEPS] = {
    [PRE_DEFAULT] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"},
    [PRE_LLAMA3] = {RE_LLAMA3},
    [PRE_JAIS2] = {RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
                               "[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}"
                               "(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|"
                               "\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}"},
    [PRE_DEEPSEEK_LLM] = {"[\r\n]", re_deepseek_letters, RE_DS_PUNCT, "\\s+$", RE_DS_CJK,
                          "\\p{N}+"},
    [PRE_DEEPSEEK3] = {"\\p{N}{1,3}", RE_CJK_KANA, RE_DS3_MAIN},
    [PRE_SPARK] =
        {"\\p{N}{1,3}", RE_CJK_KANA,
         "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
         "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
         "\\p{N}"},
    [PRE_YOUTU] = {"[\xea\xb0\x80-\xed\x9e\xa3\xe3\x84\xb1-\xe3\x86\x8e]+|[\xef\xbc\x81\xe2\x80"
                   "\xa6\xe2\x80\x9c\xe2\x80\x9d\xe2\x80\x98\xe2\x80\x99\xe2\x80\x94\xef\xbc\x9a"
                   "\xef\xbc\x9b\xef\xbc\x8c\xe3\x80\x81-\xe3\x80\xbf\xef\xb8\xb0-\xef\xb9\x8f]+|"
                   "[\xe3\x84\x85-\xe3\x84\xaf]+|" RE_CJK_KANA,
                   "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}"
                   "\\p{Lo}\\p{M}]+" RE_CONTRACT "?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}"
                   "\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" RE_CONTRACT "?|\\p{N}| ?[^\\s"
                   "\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_DEEPSEEK_CODER] = {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_DS_CJK, "\\p{N}"},
    [PRE_FALCON] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"},
    [PRE_STARCODER] = {"\\p{N}", RE_GPT2},
    [PRE_GPT2] = {RE_GPT2},
    [PRE_QWEN2] = {RE_QWEN2},
    [PRE_QWEN35] = {RE_QWEN35},
    [PRE_BLOOM] = {RE_BLOOM},
    [PRE_VIKING] = {RE_BLOOM, "\\p{N}"},
    [PRE_TEKKEN] = {RE_UPPER_LOWER "|" RE_UPPER_LOWER2 "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|"
                                   "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_CHAMELEON] = {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                       "([\\t\\n]|    |  )", "\\p{N}", "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2},
    [PRE_GPT4O] = {RE_UPPER_LOWER RE_CONTRACT
                   "?|" RE_UPPER_LOWER2 RE_CONTRACT
                   "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_GRANITE_EMB] = {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])"
                         "([^A-Z]))+" RE_CONTRACT "?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])"
                         "([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*" RE_CONTRACT "?|\\p{N}{1,3}| ?"
                         "[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_SUPERBPE] = {"\\p{N}+", "(?=(\\d{3})+(?!\\d))"},
    [PRE_BAILING] = {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                     "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
    [PRE_SEED_CODER] = {RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}"
                                    "\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_UFAKZEKA] = {"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_LAGUNA] = {RE_NEWLINES, RE_QWEN2},
    [PRE_EXAONE_MOE] = {RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|"
                                    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|"
                                    "\\s+(?!\\S)|\\s+"},
    [PRE_NEWLINES] = {RE_NEWLINES},
    [PRE_MINICPM5] = {"\\p{N}{1,3}", RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s"
                                                 "\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
                                                 "\\s+(?!\\S)|\\s+"},
    [PRE_WHITESPACE] = {"\\S+"},
    [PRE_TINY_AYA] =
        {RE_AYA_DIGITS,
         "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}"
         "\\p{M}]+" RE_CONTRACT "?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}"
         "\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" RE_CONTRACT "?|\\p{N}{1,3}| ?[^\\s"
         "\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_KIMI_K2] = {RE_KIMI_K2},
    [PRE_AFMOE] = {RE_AFMOE_DIGITS, RE_AFMOE_CJK,
                   "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}"
                   "\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|"
                   "\\s+"},
};

enum {
    F_NOCLEAN = 1,    /* clean_spaces = false */
    F_IGNORE = 2,     /* ignore_merges = true */
    F_BOS = 4,        /* add_bos = true */
    F_NOBOS = 8,      /* default BOS id cleared */
    F_ESCAPE = 16,    /* escape_whitespaces = true, raw UTF-8 (no byte encoding) */
    F_GEMMA4 = 32,    /* LLAMA_VOCAB_PRE_TYPE_GEMMA4: add_bos forced, newline runs kept whole */
    F_RAW = 64,       /* raw UTF-8 (no byte encoding) without escape_whitespaces */
    F_NOMERGES = 128, /* tokenizer.ggml.merges may be absent (Kimi-K2) */
};

/* tokenizer.ggml.pre values llama.cpp accepts, with the settings its loader attaches. */
static const struct {
    const char *name;
    int preset;
    int flags;
} pre_names[] = {
    {"default", PRE_DEFAULT, 0},
    {"minicpm5", PRE_MINICPM5, F_IGNORE},
    {"llama3", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"llama-v3", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"llama-bpe", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"falcon3", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"falcon-h1", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"pixtral", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"midm-2.0", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"lfm2", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"jina-v5-nano", PRE_LLAMA3, F_IGNORE | F_BOS},
    {"deepseek-llm", PRE_DEEPSEEK_LLM, F_NOCLEAN},
    {"deepseek-coder", PRE_DEEPSEEK_CODER, F_NOCLEAN},
    {"deepseek-v3", PRE_DEEPSEEK3, F_NOCLEAN},
    {"spark2_5", PRE_SPARK, F_NOCLEAN},
    {"youtu", PRE_YOUTU, F_NOCLEAN | F_IGNORE},
    {"falcon", PRE_FALCON, 0},
    {"mpt", PRE_GPT2, 0},
    {"starcoder", PRE_STARCODER, 0},
    {"gpt-2", PRE_GPT2, 0},
    {"phi-2", PRE_GPT2, 0},
    {"jina-es", PRE_GPT2, 0},
    {"jina-de", PRE_GPT2, 0},
    {"gigachat", PRE_GPT2, 0},
    {"jina-v2-es", PRE_GPT2, 0},
    {"jina-v2-de", PRE_GPT2, 0},
    {"a.x-4.0", PRE_GPT2, 0},
    {"mellum", PRE_GPT2, 0},
    {"modern-bert", PRE_GPT2, 0},
    {"jais-2", PRE_JAIS2, 0},
    {"gemma4", PRE_NEWLINES, F_ESCAPE | F_GEMMA4},
    {"granite-embed-multi-311m", PRE_NEWLINES, F_ESCAPE | F_GEMMA4},
    {"sarvam-moe", PRE_NEWLINES, F_ESCAPE | F_NOCLEAN},
    {"jina-v1-en", PRE_GPT2, 0},
    {"jina-v2-code", PRE_GPT2, 0},
    {"roberta-bpe", PRE_GPT2, 0},
    {"whitespace", PRE_WHITESPACE, F_RAW},
    {"refact", PRE_STARCODER, 0},
    {"command-r", PRE_STARCODER, F_NOCLEAN},
    {"qwen2", PRE_QWEN2, F_NOCLEAN},
    {"deepseek-r1-qwen", PRE_QWEN2, F_NOCLEAN},
    {"kormo", PRE_QWEN2, F_NOCLEAN},
    {"f2llmv2", PRE_QWEN2, F_NOCLEAN},
    {"qwen35", PRE_QWEN35, F_NOCLEAN},
    {"stablelm2", PRE_QWEN2, 0},
    {"olmo", PRE_GPT2, 0},
    {"dbrx", PRE_LLAMA3, 0},
    {"smaug-bpe", PRE_LLAMA3, 0},
    {"poro-chat", PRE_BLOOM, F_NOCLEAN},
    {"glm4", PRE_LLAMA3, F_NOBOS},
    {"chatglm-bpe", PRE_LLAMA3, F_NOBOS},
    {"viking", PRE_VIKING, F_NOCLEAN},
    {"jais", PRE_GPT2, 0},
    {"tekken", PRE_TEKKEN, F_NOCLEAN | F_IGNORE | F_BOS},
    {"smollm", PRE_STARCODER, F_NOCLEAN},
    {"codeshell", PRE_STARCODER, 0},
    {"bloom", PRE_BLOOM, 0},
    {"gpt3-finnish", PRE_BLOOM, 0},
    {"exaone", PRE_STARCODER, 0},
    {"exaone4", PRE_GPT2, 0},
    {"exaone-moe", PRE_EXAONE_MOE, 0},
    {"chameleon", PRE_CHAMELEON, F_BOS | F_NOCLEAN},
    {"minerva-7b", PRE_STARCODER, 0},
    {"megrez", PRE_QWEN2, 0},
    {"gpt-4o", PRE_GPT4O, F_NOCLEAN},
    {"llama4", PRE_GPT4O, F_NOCLEAN},
    {"kanana2", PRE_GPT4O, F_NOCLEAN},
    {"talkie", PRE_GPT4O, F_NOCLEAN},
    {"granite-embed-multi-97m", PRE_GRANITE_EMB, F_NOCLEAN | F_IGNORE},
    {"tiny_aya", PRE_TINY_AYA, F_NOCLEAN},
    {"cohere2moe", PRE_TINY_AYA, F_NOCLEAN},
    {"superbpe", PRE_SUPERBPE, F_NOCLEAN},
    {"trillion", PRE_GPT2, F_NOCLEAN},
    {"granite-docling", PRE_GPT2, F_NOCLEAN},
    {"bailingmoe", PRE_BAILING, F_NOCLEAN},
    {"bailingmoe2", PRE_BAILING, F_NOCLEAN},
    {"llada-moe", PRE_BAILING, F_NOCLEAN},
    {"seed-coder", PRE_SEED_CODER, F_NOCLEAN},
    {"hunyuan", PRE_QWEN2, F_NOCLEAN},
    {"hunyuan-dense", PRE_DEEPSEEK3, F_NOCLEAN},
    {"hy_v4", PRE_DEEPSEEK3, F_NOCLEAN},
    {"joyai-llm", PRE_DEEPSEEK3, F_NOCLEAN},
    {"kimi-k2", PRE_KIMI_K2, F_NOCLEAN | F_NOMERGES},
    {"ufakzeka", PRE_UFAKZEKA, F_NOCLEAN},
    {"grok-2", PRE_QWEN2, F_NOCLEAN},
    {"afmoe", PRE_AFMOE, F_NOCLEAN},
    {"laguna", PRE_LAGUNA, F_NOCLEAN},
    {"minimax-m2", PRE_GPT4O, F_NOCLEAN},
    {"solar-open", PRE_QWEN2, F_NOCLEAN},
    {"mellum2", PRE_STARCODER, 0},
};

/* ---- the collapsed form of a regex (llama.cpp's translation of \p{..} classes) ------- */

static const struct {
    const char *prop;
    char byte;
    const char *ascii;
} ucat_props[] = {
    {"\\p{N}", '\xD1', "0-9"},
    {"\\p{L}", '\xD2', "A-Za-z"},
    {"\\p{P}", '\xD3', "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"},
    {"\\p{M}", '\xD4', ""},
    {"\\p{S}", '\xD5', "\\$\\+<->^`\\|\\~"},
    {"\\p{Lu}", '\xD2', "A-Za-z"},
    {"\\p{Ll}", '\xD2', "A-Za-z"},
    {"\\p{Lt}", '\xD2', "A-Za-z"},
    {"\\p{Lm}", '\xD2', "A-Za-z"},
    {"\\p{Lo}", '\xD2', "A-Za-z"},
};

static bool uses_ucat(const char *re) {
    for (size_t i = 0; i < sizeof ucat_props / sizeof ucat_props[0]; i++) {
        if (strstr(re, ucat_props[i].prop)) {
            return true;
        }
    }
    return false;
}

/* Writes the collapsed regex into out (cap bytes); returns its length or -1. */
static long collapse_regex(const char *re, char *out, size_t cap) {
    size_t n = strlen(re), o = 0;
    bool inside = false;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (o + 1 >= cap) return -1;                                                               \
        out[o++] = (c);                                                                            \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        if (re[i] == '[' && (i == 0 || re[i - 1] != '\\')) {
            PUT('[');
            inside = true;
            continue;
        }
        if (inside && re[i] == ']' && re[i - 1] != '\\') {
            PUT(']');
            inside = false;
            continue;
        }
        if (re[i] == '\\' && i + 3 < n && re[i + 1] == 'p' && re[i + 2] == '{') {
            const char *close = strchr(re + i + 3, '}');
            if (close && (size_t)(close - re) <= i + 10) {
                size_t plen = (size_t)(close - re) - i + 1;
                size_t k;
                for (k = 0; k < sizeof ucat_props / sizeof ucat_props[0]; k++) {
                    if (strlen(ucat_props[k].prop) == plen &&
                        memcmp(ucat_props[k].prop, re + i, plen) == 0) {
                        break;
                    }
                }
                if (k < sizeof ucat_props / sizeof ucat_props[0]) {
                    if (!inside) PUT('[');
                    PUT(ucat_props[k].byte);
                    for (const char *a = ucat_props[k].ascii; *a; a++)
                        PUT(*a);
                    if (!inside) PUT(']');
                    i += plen - 1;
                    continue;
                }
            }
        }
        PUT(re[i]);
    }
#undef PUT
    out[o] = 0;
    return (long)o;
}

/* PCRE2 allocates through alloc.h too, so tests can fail its allocations like ours. (The
 * JIT's executable memory is mmapped by PCRE2 itself; a failed JIT compile only means the
 * interpreter runs, with the same results.) */
static void *pcre_alloc(size_t n, void *ud) {
    (void)ud;
    return ctn__malloc(n);
}

static void pcre_free(void *ptr, void *ud) {
    (void)ud;
    free(ptr);
}

static int compile_step(ctn__pretok_step *st, const char *re, pcre2_compile_context *cctx,
                        char *err, size_t errlen) {
    /* Patterns that llama.cpp itself runs with hand-written code get scanners that
     * reproduce that code; every other pattern goes to PCRE2. */
    static const struct {
        const char *re;
        int kind;
    } scanners[] = {
        {RE_GPT2, STEP_GPT2},         {RE_LLAMA3, STEP_LLAMA3},
        {RE_QWEN2, STEP_QWEN2},       {RE_QWEN35, STEP_QWEN35},
        {RE_NEWLINES, STEP_NEWLINES}, {RE_KIMI_K2, STEP_KIMI_K2},
        {RE_AFMOE_DIGITS, STEP_DIGITS3}, {RE_AYA_DIGITS, STEP_DIGITS3},
    };
    for (size_t i = 0; i < sizeof scanners / sizeof scanners[0]; i++) {
        if (strcmp(re, scanners[i].re) == 0) {
            st->kind = scanners[i].kind;
            return 0;
        }
    }
    st->kind = STEP_REGEX;
    st->collapsed = uses_ucat(re);
    char buf[4096];
    const char *pat = re;
    uint32_t opts = PCRE2_DOLLAR_ENDONLY; /* ECMAScript $: end of subject only */
    if (st->collapsed) {
        if (collapse_regex(re, buf, sizeof buf) < 0) {
            ctn__errf(err, errlen, "pre-tokenizer regex too long: %.60s", re);
            return CTN_EINVAL;
        }
        pat = buf;
    } else {
        opts |= PCRE2_UTF;
    }
    int ec;
    PCRE2_SIZE eo;
    st->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, cctx);
    if (!st->re && ec == PCRE2_ERROR_HEAP_FAILED) return CTN_ENOMEM;
    if (!st->re) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(ec, msg, sizeof msg);
        ctn__errf(err, errlen, "pre-tokenizer regex %.60s: %s at %zu", re, (char *)msg, (size_t)eo);
        return CTN_EINVAL;
    }
    /* JIT is an optimisation: if it is unavailable the interpreter gives the same result. */
    (void)pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE);
    return 0;
}

int ctn__pretok_init(ctn__pretok *p, const char *name, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    int preset = -1, flags = 0;
    for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0]; i++) {
        if (strcmp(pre_names[i].name, name) == 0) {
            preset = pre_names[i].preset;
            flags = pre_names[i].flags;
            break;
        }
    }
    if (preset < 0) {
        ctn__errf(err, errlen, "tokenizer.ggml.pre: unknown pre-tokenizer type '%s'", name);
        return CTN_EFORMAT;
    }
    p->byte_encode = !(flags & (F_ESCAPE | F_RAW));
    p->merges_optional = (flags & F_NOMERGES) != 0;
    p->escape_ws = (flags & F_ESCAPE) != 0;
    p->clean_spaces = !(flags & F_NOCLEAN);
    p->ignore_merges = (flags & F_IGNORE) != 0;
    p->add_bos = (flags & F_BOS) != 0;
    p->no_bos = (flags & F_NOBOS) != 0;
    p->gemma4 = (flags & F_GEMMA4) != 0;
    int n = 0;
    while (n < CTN__PRETOK_MAX_STEPS && presets[preset][n]) {
        n++;
    }
    p->gctx = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
    pcre2_compile_context *cctx = p->gctx ? pcre2_compile_context_create(p->gctx) : NULL;
    p->steps = cctx ? ctn__calloc((size_t)n, sizeof *p->steps) : NULL;
    if (!p->steps) {
        pcre2_compile_context_free(cctx);
        ctn__pretok_free(p);
        return CTN_ENOMEM;
    }
    p->n_steps = n;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        rc = compile_step(&p->steps[i], presets[preset][i], cctx, err, errlen);
    }
    pcre2_compile_context_free(cctx);
    if (rc < 0) ctn__pretok_free(p);
    return rc;
}

void ctn__pretok_free(ctn__pretok *p) {
    for (int i = 0; i < p->n_steps; i++) {
        pcre2_code_free(p->steps[i].re);
    }
    free(p->steps);
    pcre2_general_context_free(p->gctx);
    p->steps = NULL;
    p->n_steps = 0;
    p->gctx = NULL;
}

void ctn__pretok_scratch_free(ctn__pretok_scratch *s) {
    free(s->tmp.v);
    free(s->sub);
    free(s->b2c);
    pcre2_match_data_free(s->md);
    memset(s, 0, sizeof *s);
}

int ctn__u32vec_reserve(ctn__u32vec *a, size_t cap) {
    if (cap <= a->cap) {
        return 0;
    }
    size_t nc = a->cap ? a->cap : 64;
    while (nc < cap) {
        nc *= 2;
    }
    uint32_t *nv = ctn__realloc(a->v, nc * sizeof *nv);
    if (!nv) {
        return CTN_ENOMEM;
    }
    a->v = nv;
    a->cap = nc;
    return 0;
}

int ctn__u32vec_push(ctn__u32vec *a, uint32_t x) {
    if (a->n == a->cap && ctn__u32vec_reserve(a, a->n + 1) < 0) {
        return CTN_ENOMEM;
    }
    a->v[a->n++] = x;
    return 0;
}

/* ---- hand-written scanners (llama.cpp's custom splitters) ---------------------------- */

enum { WS = CTN__UCAT_SPACE, L = CTN__UCAT_LETTER, N = CTN__UCAT_NUMBER, M = CTN__UCAT_MARK };

/* One chunk [ini, end) of code points; flags outside the chunk read as 0, as in llama.cpp. */
typedef struct {
    const uint32_t *cpt;
    const uint16_t *fl;
    size_t ini, end, prev;
    ctn__u32vec *out;
    int oom;
} scan;

static inline uint16_t F(const scan *s, size_t p) {
    return p < s->end ? s->fl[p] : 0;
}

static inline uint32_t C(const scan *s, size_t p) {
    return p < s->end ? s->cpt[p] : 0xFFFFFFFFu;
}

/* Ends the current piece at `end` (empty pieces are dropped) and returns `end`. */
static inline size_t emit(scan *s, size_t end) {
    if (end > s->prev && ctn__u32vec_push(s->out, (uint32_t)(end - s->prev)) < 0) {
        s->oom = 1;
    }
    s->prev = end;
    return end;
}

static inline uint32_t lower_ascii(uint32_t c) {
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* 's 't 're 've 'm 'll 'd at pos (case-insensitive when ci); returns the length or 0. */
static size_t contraction(const scan *s, size_t pos, bool ci) {
    if (s->cpt[pos] != '\'' || pos + 1 >= s->end) {
        return 0;
    }
    uint32_t a = s->cpt[pos + 1];
    if (ci) a = lower_ascii(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return 2;
    }
    if (pos + 2 < s->end) {
        uint32_t b = s->cpt[pos + 2];
        if (ci) b = lower_ascii(b);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
            return 3;
        }
    }
    return 0;
}

/* The whitespace tail shared by the scanners: \s+(?!\S) | \s+ (and \s*[\r\n]+ when rn). */
static size_t whitespace_run(scan *s, size_t pos, bool rn) {
    size_t nws = 0, last_rn = 0;
    while (F(s, pos + nws) & WS) {
        uint32_t c = C(s, pos + nws);
        if (c == '\r' || c == '\n') {
            last_rn = pos + nws + 1;
        }
        nws++;
    }
    if (rn && last_rn > 0) {
        return emit(s, last_rn);
    }
    if (nws > 1 && pos + nws < s->end) {
        return emit(s, pos + nws - 1);
    }
    if (nws > 0) {
        return emit(s, pos + nws);
    }
    return emit(s, pos + 1);
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
static void scan_gpt2(scan *s) {
    size_t pos = s->ini;
    while (pos < s->end && !s->oom) {
        uint32_t c = s->cpt[pos];
        size_t k = contraction(s, pos, false);
        if (k) {
            pos = emit(s, pos + k);
            continue;
        }
        uint16_t f2 = c == ' ' ? F(s, pos + 1) : s->fl[pos];
        size_t p = pos + (c == ' ');
        if (f2 & L) {
            while (F(s, p) & L)
                p++;
            pos = emit(s, p);
            continue;
        }
        if (f2 & N) {
            while (F(s, p) & N)
                p++;
            pos = emit(s, p);
            continue;
        }
        if (!(f2 & (WS | L | N)) && f2) {
            while (!(F(s, p) & (WS | L | N)) && F(s, p))
                p++;
            pos = emit(s, p);
            continue;
        }
        pos = whitespace_run(s, pos, false);
    }
}

/*
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+ — and its Qwen2 (\p{N} one at a time) and Qwen3.5 (\p{M} counted
 * with letters) variants. `digits` is the most digits per piece.
 */
static void scan_llama3(scan *s, size_t digits, uint16_t letter) {
    size_t pos = s->ini;
    while (pos < s->end && !s->oom) {
        uint32_t c = s->cpt[pos];
        uint16_t f = s->fl[pos];
        size_t k = contraction(s, pos, true);
        if (k) {
            pos = emit(s, pos + k);
            continue;
        }
        if (!(c == '\r' || c == '\n' || (f & N))) {
            if ((f & letter) || (F(s, pos + 1) & letter)) {
                size_t p = pos + 1;
                while (F(s, p) & letter)
                    p++;
                pos = emit(s, p);
                continue;
            }
        }
        if (f & N) {
            size_t p = pos, run = pos;
            while ((F(s, p) & N)) {
                p++;
                if (p - run >= digits) {
                    emit(s, p);
                    run = p;
                }
            }
            pos = emit(s, p);
            continue;
        }
        uint16_t f2 = c == ' ' ? F(s, pos + 1) : f;
        uint16_t stop = WS | N | letter;
        if (!(f2 & stop) && f) {
            size_t p = pos + (c == ' ');
            while (!(F(s, p) & stop) && F(s, p))
                p++;
            while (C(s, p) == '\r' || C(s, p) == '\n')
                p++;
            pos = emit(s, p);
            continue;
        }
        pos = whitespace_run(s, pos, true);
    }
}

static void scan_newlines(scan *s) {
    size_t pos = s->ini;
    while (pos < s->end && !s->oom) {
        bool nl = s->cpt[pos] == '\n';
        while (pos < s->end && (s->cpt[pos] == '\n') == nl)
            pos++;
        pos = emit(s, pos);
    }
}

/* Han code points as llama.cpp's unicode_cpt_is_han lists them (CJK ideograph blocks). */
static bool is_han(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2EBEF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/*
 * Kimi-K2: [\p{Han}]+ | the GPT-4o style letter words with Han excluded from the letters and
 * an optional case-insensitive contraction after them | \p{N}{1,3} | ?[^\s\p{L}\p{N}]+[\r\n]* |
 * \s*[\r\n]+ | \s+(?!\S) | \s+. There is no contraction alternative of its own: a lone 's is a
 * leading character and a letter. Marks are not letters here (llama.cpp's scanner only
 * tests is_letter), and its lowercasing only maps A-Z onto the contraction letters.
 */
static void scan_kimi_k2(scan *s) {
    size_t pos = s->ini;
    while (pos < s->end && !s->oom) {
        uint32_t c = s->cpt[pos];
        uint16_t f = s->fl[pos];
        if (is_han(c)) {
            while (is_han(C(s, pos)))
                pos++;
            pos = emit(s, pos);
            continue;
        }
        bool lead = !(c == '\r' || c == '\n' || (f & (L | N)));
        if ((f & L) || (lead && (F(s, pos + 1) & L) && !is_han(C(s, pos + 1)))) {
            size_t p = pos + lead;
            while ((F(s, p) & L) && !is_han(C(s, p)))
                p++;
            if (C(s, p) == '\'') p += contraction(s, p, true);
            pos = emit(s, p);
            continue;
        }
        if (f & N) {
            size_t p = pos, run = pos;
            while (F(s, p) & N) {
                p++;
                if (p - run >= 3) {
                    emit(s, p);
                    run = p;
                }
            }
            pos = emit(s, p);
            continue;
        }
        uint16_t f2 = c == ' ' ? F(s, pos + 1) : f;
        if (!(f2 & (WS | L | N)) && f2) {
            size_t p = pos + (c == ' ');
            while (!(F(s, p) & (WS | L | N)) && F(s, p))
                p++;
            while (C(s, p) == '\r' || C(s, p) == '\n')
                p++;
            pos = emit(s, p);
            continue;
        }
        pos = whitespace_run(s, pos, true);
    }
}

/*
 * llama.cpp's afmoe digit grouper (also its stand-in for tiny_aya's \d{1,3}(?=(?:\d{3})*\b)):
 * each run of \p{N} is cut into groups of three from the right. Only those cuts are made, so
 * the text before a run stays joined to the run's first group ("ab1234" -> "ab1", "234"),
 * and the text after the last run is one piece.
 */
static void scan_digits3(scan *s) {
    size_t pos = s->ini;
    while (pos < s->end && !s->oom) {
        if (!(s->fl[pos] & N)) {
            pos++;
            continue;
        }
        size_t run = pos;
        while (F(s, pos) & N)
            pos++;
        size_t cur = run + (pos - run) % 3;
        if (cur > run) emit(s, cur);
        for (; cur < pos; cur += 3)
            emit(s, cur + 3);
    }
    emit(s, s->end);
}

/* ---- regex steps via PCRE2 ------------------------------------------------------------ */

/*
 * Builds the subject for a PCRE2 step over all n code points: one category byte per code
 * point (collapsed) or UTF-8 (with non-ASCII whitespace as 0x0B and unencodable code points
 * as U+FFFD). s->b2c maps byte offsets back to code point indices.
 */
static int build_subject(ctn__pretok_scratch *s, const uint32_t *cpts, const uint16_t *fl, size_t n,
                         bool collapsed) {
    size_t need = collapsed ? n + 1 : 4 * n + 1;
    if (need > s->sub_cap) {
        char *ns = ctn__realloc(s->sub, need);
        if (!ns) return CTN_ENOMEM;
        s->sub = ns;
        s->sub_cap = need;
    }
    if (need > s->b2c_cap) {
        uint32_t *nb = ctn__realloc(s->b2c, need * sizeof *nb);
        if (!nb) return CTN_ENOMEM;
        s->b2c = nb;
        s->b2c_cap = need;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cpts[i];
        if (collapsed) {
            char b;
            if (c < 128) {
                b = (char)c;
            } else if (fl[i] & WS) {
                b = 0x0B;
            } else {
                switch (fl[i] & CTN__UCAT_MASK) {
                case CTN__UCAT_NUMBER: b = '\xD1'; break;
                case CTN__UCAT_LETTER: b = '\xD2'; break;
                case CTN__UCAT_PUNCT: b = '\xD3'; break;
                case CTN__UCAT_MARK: b = '\xD4'; break;
                case CTN__UCAT_SYMBOL: b = '\xD5'; break;
                default: b = '\xD0'; break;
                }
            }
            s->b2c[o] = (uint32_t)i;
            s->sub[o++] = b;
        } else {
            if (c > 0x7F && (fl[i] & WS)) {
                c = 0x0B;
            } else if ((c >= 0xD800 && c <= 0xDFFF) || c >= CTN__CPT_MAX) {
                c = CTN__CPT_INVALID;
            }
            size_t k = ctn__utf8_encode(c, s->sub + o);
            for (size_t j = 0; j < k; j++) {
                s->b2c[o + j] = (uint32_t)i;
            }
            o += k;
        }
    }
    s->b2c[o] = (uint32_t)n;
    s->sub[o] = 0;
    s->sub_len = o;
    return 0;
}

/* Byte offset in the subject of code point index i (b2c is monotonic). */
static size_t cpt_to_byte(const ctn__pretok_scratch *s, size_t total, size_t i) {
    size_t lo = 0, hi = total; /* first byte with b2c >= i */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->b2c[mid] < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int match_once(const ctn__pretok_step *st, ctn__pretok_scratch *s, const char *subj,
                      size_t len, size_t start, uint32_t opts) {
    /* the subject is valid UTF-8 by construction; PCRE2 would otherwise re-check the whole
     * piece on every call, which is quadratic in the piece length */
    if (!st->collapsed) opts |= PCRE2_NO_UTF_CHECK;
    int rc = pcre2_match(st->re, (PCRE2_SPTR)subj, len, start, opts, s->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        /* Deep backtracking (very long runs): the interpreter keeps its frames on the heap. */
        rc = pcre2_match(st->re, (PCRE2_SPTR)subj, len, start, opts | PCRE2_NO_JIT, s->md, NULL);
    }
    return rc;
}

/* Runs one regex over each piece like std::regex_iterator: matches and the gaps between
 * them become pieces; an empty match is retried as non-empty, then skips one character. */
static int regex_step(const ctn__pretok *p, const ctn__pretok_step *st, ctn__pretok_scratch *s,
                      const uint32_t *cpts, const uint16_t *fl, size_t n, const ctn__u32vec *in,
                      ctn__u32vec *out) {
    int rc = build_subject(s, cpts, fl, n, st->collapsed);
    if (rc < 0) return rc;
    size_t total = s->sub_len;
    if (!s->md) {
        s->md = pcre2_match_data_create(8, p->gctx);
        if (!s->md) return CTN_ENOMEM;
    }
    size_t cstart = 0;
    for (size_t k = 0; k < in->n; k++) {
        size_t clen = in->v[k];
        size_t b0 = st->collapsed ? cstart : cpt_to_byte(s, total, cstart);
        size_t b1 = st->collapsed ? cstart + clen : cpt_to_byte(s, total, cstart + clen);
        const char *subj = s->sub + b0;
        size_t len = b1 - b0;
        size_t pos = 0, last = 0;
        uint32_t opts = 0;
        for (;;) {
            int m = match_once(st, s, subj, len, pos, opts);
            if (m == PCRE2_ERROR_NOMEMORY) return CTN_ENOMEM; /* the interpreter's frames */
            if (m < 0) {
                if (m == PCRE2_ERROR_NOMATCH && opts) {
                    /* no non-empty match here: step over one character and search on */
                    opts = 0;
                    pos++;
                    if (!st->collapsed) {
                        while (pos < len && ((unsigned char)subj[pos] & 0xC0) == 0x80)
                            pos++;
                    }
                    if (pos > len) break;
                    continue;
                }
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
            size_t ms = ov[0], me = ov[1];
            size_t cms = st->collapsed ? ms : s->b2c[b0 + ms] - cstart;
            size_t cme = st->collapsed ? me : s->b2c[b0 + me] - cstart;
            size_t clast = st->collapsed ? last : s->b2c[b0 + last] - cstart;
            if (cms > clast && ctn__u32vec_push(out, (uint32_t)(cms - clast)) < 0) {
                return CTN_ENOMEM;
            }
            if (ctn__u32vec_push(out, (uint32_t)(cme - cms)) < 0) {
                return CTN_ENOMEM;
            }
            last = me;
            pos = me;
            if (me == ms) {
                if (me >= len) break;
                opts = PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
            } else {
                opts = 0;
            }
        }
        size_t clast = st->collapsed ? last : s->b2c[b0 + last] - cstart;
        if (clast < clen && ctn__u32vec_push(out, (uint32_t)(clen - clast)) < 0) {
            return CTN_ENOMEM;
        }
        cstart += clen;
    }
    return 0;
}

int ctn__pretok_split(const ctn__pretok *p, ctn__pretok_scratch *s, const uint32_t *cpts,
                      const uint16_t *flags, size_t n, ctn__u32vec *lens) {
    lens->n = 0;
    if (n > UINT32_MAX - 1) {
        return CTN_ERANGE;
    }
    if (ctn__u32vec_push(lens, (uint32_t)n) < 0) {
        return CTN_ENOMEM;
    }
    for (int i = 0; i < p->n_steps; i++) {
        const ctn__pretok_step *st = &p->steps[i];
        s->tmp.n = 0;
        if (st->kind == STEP_REGEX) {
            int rc = regex_step(p, st, s, cpts, flags, n, lens, &s->tmp);
            if (rc < 0) return rc;
        } else {
            scan sc = {.cpt = cpts, .fl = flags, .out = &s->tmp};
            size_t start = 0;
            for (size_t k = 0; k < lens->n; k++) {
                sc.ini = sc.prev = start;
                sc.end = start + lens->v[k];
                switch (st->kind) {
                case STEP_GPT2: scan_gpt2(&sc); break;
                case STEP_LLAMA3: scan_llama3(&sc, 3, L); break;
                case STEP_QWEN2: scan_llama3(&sc, 1, L); break;
                case STEP_QWEN35: scan_llama3(&sc, 1, L | M); break;
                case STEP_KIMI_K2: scan_kimi_k2(&sc); break;
                case STEP_DIGITS3: scan_digits3(&sc); break;
                default: scan_newlines(&sc); break;
                }
                if (sc.oom) return CTN_ENOMEM;
                start = sc.end;
            }
        }
        ctn__u32vec t = *lens;
        *lens = s->tmp;
        s->tmp = t;
    }
    return 0;
}
