/*
 * libFuzzer target for the vocabulary loader: the input is a whole GGUF image, read with
 * ctn_gguf_open_memory and handed to ctn_vocab_load.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine tests/fuzz/fuzz_vocab.c \
 *         engine/[a-z]*.c -lpcre2-8 -lcjson -lm -o /tmp/fuzz_vocab
 *     mkdir -p /tmp/corpus_vocab && cp -r tests/fuzz/corpus_vocab/. /tmp/corpus_vocab/
 *     /tmp/fuzz_vocab -max_total_time=180 /tmp/corpus_vocab
 *
 * A rejected vocabulary must come back as CTN_EFORMAT or CTN_ENOTSUP with a message naming
 * the key (or CTN_ENOMEM), never as a crash. An accepted one is used the way the engine
 * uses it: every getter on every id, then a few fixed texts (ASCII, multibyte, invalid
 * UTF-8, special-token spellings, and the file's own first token texts run together) are
 * tokenized with each add_special / parse_special combination, the ids checked to be in
 * range and decoded with ctn_detokenize and with the streaming decoder, whose output must
 * equal ctn_detokenize's (remove_special=false) unless a long run of spaces made it give up
 * exactness.
 *
 * Built with -DCTN_FUZZ_MAKE_CORPUS (and without -fsanitize=fuzzer) it instead writes the
 * seed corpus: `./gen tests/fuzz/corpus_vocab`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "vocab.h"

static volatile uint64_t sink;

/* Decodes ids through the streaming decoder and checks it against ctn_detokenize. */
static void stream_check(const ctn_vocab *v, const int32_t *ids, size_t n, bool special,
                         size_t max_piece) {
    size_t cap = 256 + max_piece;
    char *buf = malloc(cap);
    size_t total = 256;
    for (size_t i = 0; i < n; i++)
        total += (size_t)ctn_token_to_piece(v, ids[i], NULL, 0, 0, true);
    char *all = malloc(total);
    if (buf == NULL || all == NULL) abort();
    size_t o = 0;
    ctn_detok_stream s;
    ctn_detok_stream_init(&s, v, special);
    for (size_t i = 0; i < n; i++) {
        int k = ctn_detok_stream_push(&s, ids[i], buf, cap);
        if (k < 0) __builtin_trap();
        memcpy(all + o, buf, (size_t)k);
        o += (size_t)k;
    }
    int k = ctn_detok_stream_flush(&s, buf, cap);
    if (k < 0) __builtin_trap();
    memcpy(all + o, buf, (size_t)k);
    o += (size_t)k;
    ctn_detok_stream_close(&s);

    char *text;
    size_t len;
    if (ctn_detokenize(v, ids, n, false, special, &text, &len) != 0) __builtin_trap();
    /* the decoder gives up exactness only after a run of over 60 held bytes */
    if (len < 60 && (o != len || memcmp(all, text, len) != 0)) __builtin_trap();
    free(text);
    free(all);
    free(buf);
}

static void use_vocab(const ctn_vocab *v) {
    int32_t n = ctn_vocab_n_tokens(v);
    if (n <= 0) __builtin_trap();
    const char *pre = ctn_vocab_pre(v);
    if (pre == NULL) __builtin_trap();
    sink += strlen(pre) + (uint64_t)ctn_vocab_type(v) + ctn_vocab_add_bos(v) + ctn_vocab_add_eos(v);
    int32_t specials[] = {ctn_vocab_bos(v), ctn_vocab_eos(v), ctn_vocab_eot(v), ctn_vocab_unk(v),
                          ctn_vocab_pad(v)};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        if (specials[i] < CTN_TOKEN_NULL || specials[i] >= n) __builtin_trap();
    }

    size_t max_piece = 0;
    for (int32_t id = -1; id <= n; id++) {
        bool in = id >= 0 && id < n;
        sink += ctn_vocab_is_eog(v, id) + (uint64_t)ctn_vocab_token_type(v, id);
        sink += ctn_vocab_score(v, id) != 0.0f;
        size_t tlen = 0;
        const char *t = ctn_vocab_text(v, id, &tlen);
        if ((t != NULL) != in) __builtin_trap();
        if (t != NULL) {
            /* lookup finds this text (a later duplicate may own it) */
            int32_t f = ctn_vocab_lookup(v, t, tlen);
            size_t flen;
            const char *ft = ctn_vocab_text(v, f, &flen);
            if (ft == NULL || flen != tlen || memcmp(ft, t, tlen) != 0) __builtin_trap();
        }
        int k = ctn_token_to_piece(v, id, NULL, 0, 0, true);
        if (!in) {
            if (k != CTN_EINVAL) __builtin_trap();
            continue;
        }
        if (k < 0) __builtin_trap();
        char small[8];
        int k2 = ctn_token_to_piece(v, id, small, sizeof small, 1, false);
        if (k2 < 0 || k2 > k) __builtin_trap();
        if ((size_t)k > max_piece) max_piece = (size_t)k;
    }
    if (ctn_vocab_lookup(v, "\xff no such token \xfe", 18) >= n) __builtin_trap();

    /* the file's own first and last token texts run together, with a space between some */
    char own[512];
    size_t no = 0;
    for (int32_t i = 0; i < 10; i++) {
        int32_t id = i < 8 ? i : n - 1 - (i - 8);
        size_t tlen;
        const char *t = ctn_vocab_text(v, id < 0 ? 0 : id, &tlen);
        if (tlen > 40) tlen = 40;
        memcpy(own + no, t, tlen);
        no += tlen;
        if (i % 3 == 0) own[no++] = ' ';
    }
    static const char *const texts[] = {
        "Hello world, it's 2024!\n\n  tabs\tand  spaces ",
        "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\xa6\x99 \xe2\x96\x81x",
        "bad \xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf end\xe2",
        "<s>hi</s><|im_start|>user\n<|im_end|><unk> <|endoftext|><tool>",
        "",
    };
    for (size_t ti = 0; ti <= sizeof texts / sizeof texts[0]; ti++) {
        const char *text = ti < sizeof texts / sizeof texts[0] ? texts[ti] : own;
        size_t len = ti < sizeof texts / sizeof texts[0] ? strlen(text) : no;
        for (int flags = 0; flags < 4; flags++) {
            bool add_special = flags & 1, parse_special = flags & 2;
            int32_t *ids = NULL;
            size_t n_ids = 0;
            if (ctn_tokenize(v, text, len, add_special, parse_special, &ids, &n_ids) != 0) {
                __builtin_trap();
            }
            for (size_t i = 0; i < n_ids; i++) {
                if (ids[i] < 0 || ids[i] >= n) __builtin_trap();
            }
            char *out = NULL;
            size_t olen = 0;
            if (ctn_detokenize(v, ids, n_ids, add_special, parse_special, &out, &olen) != 0 ||
                out == NULL || strlen(out) > olen) {
                __builtin_trap();
            }
            free(out);
            stream_check(v, ids, n_ids, parse_special, max_piece);
            free(ids);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ctn_gguf *g = NULL;
    char err[1024];
    if (ctn_gguf_open_memory(&g, data, size, "fuzz.gguf", err, sizeof err) != 0) return 0;
    ctn_vocab *v = (ctn_vocab *)(uintptr_t)1;
    err[0] = '\0';
    int rc = ctn_vocab_load(&v, g, err, sizeof err);
    ctn_gguf_free(g); /* the vocabulary must not point into the file */
    if (rc < 0) {
        if (v != NULL) __builtin_trap();
        if (rc != CTN_EFORMAT && rc != CTN_ENOTSUP && rc != CTN_ENOMEM) {
            fprintf(stderr, "unexpected code %d: %s\n", rc, err);
            __builtin_trap();
        }
        /* a rejected file is named by its key */
        if (rc != CTN_ENOMEM && strstr(err, "tokenizer.") == NULL) {
            fprintf(stderr, "message without the key: %s\n", err);
            __builtin_trap();
        }
        return 0;
    }
    if (v == NULL) __builtin_trap();
    use_vocab(v);
    ctn_vocab_free(v);
    return 0;
}

#ifdef CTN_FUZZ_MAKE_CORPUS
/* Writes a few tiny vocabularies in both tokenizer families. */
static int save(ctn_gguf_writer *w, const char *dir, const char *name) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = ctn_gguf_writer_write(w, path, err, sizeof err);
    if (rc < 0) fprintf(stderr, "%s\n", err);
    ctn_gguf_writer_free(w);
    return rc;
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void set_tokens(ctn_gguf_writer *w, const char *const *toks, const int32_t *types,
                       size_t n) {
    float scores[64];
    for (size_t i = 0; i < n; i++)
        scores[i] = -(float)i;
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, n);
    ctn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CTN_GGUF_FLOAT32, scores, n);
    ctn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CTN_GGUF_INT32, types, n);
}

#define SP "\xe2\x96\x81" /* U+2581, SentencePiece's space */

static const char *const spm_toks[] = {
    "<unk>",    "<s>",    "</s>",
    "<0x0A>",   "<0x20>", "<0xC3>",
    "<0xA9>",   "<0xE6>", "<0x97>",
    "<0xA5>",   "<0xFF>", SP,
    SP "t",     SP "the", SP "h",
    SP "w",     SP "He",  SP "Hello",
    SP "world", "H",      "e",
    "l",        "o",      "w",
    "r",        "d",      "t",
    "h",        "ll",     "llo",
    "ello",     "or",     "orld",
    ",",        "!",      "\xc3\xa9",
    "caf",      SP "caf", "<|im_start|>",
    "\n",
};
static const int32_t spm_types[] = {
    2, 3, 3, 6, 6, 6, 6, 6, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 1,
};

/* GPT-2 alphabet: "\xc4\xa0" is the space (U+0120), "\xc4\x8a" the newline (U+010A). */
static const char *const bpe_toks[] = {
    "!",
    ",",
    "H",
    "d",
    "e",
    "h",
    "l",
    "o",
    "r",
    "t",
    "w",
    "\xc4\xa0",
    "\xc4\x8a",
    "\xc3\x83",
    "\xc2\xa9",
    "He",
    "ll",
    "llo",
    "Hello",
    "\xc4\xa0w",
    "or",
    "\xc4\xa0wor",
    "\xc4\xa0world",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool>",
    "\xc4\xa0t",
    "th",
    "\xc4\xa0th",
    "e\xc4\xa0",
};
static const int32_t bpe_types[] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 4, 1, 1, 1, 1,
};
static const char *const bpe_merges[] = {
    "H e",          "l l",           "ll o",       "He llo", "\xc4\xa0 w",  "o r",
    "\xc4\xa0w or", "\xc4\xa0wor d", "\xc4\xa0 t", "t h",    "\xc4\xa0 th", "e \xc4\xa0",
};

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    int rc = 0;
    _Static_assert(N_OF(spm_toks) == N_OF(spm_types), "spm types");
    _Static_assert(N_OF(bpe_toks) == N_OF(bpe_types), "bpe types");

    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "general.architecture", "llama");
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    set_tokens(w, spm_toks, spm_types, N_OF(spm_toks));
    rc |= save(w, dir, "spm.gguf");

    /* SPM with explicit ids and flags: no space prefix, EOS added, a padding id */
    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    set_tokens(w, spm_toks, spm_types, N_OF(spm_toks));
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    ctn_gguf_writer_set_i32(w, "tokenizer.ggml.padding_token_id", -1);
    ctn_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    ctn_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", true);
    ctn_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    rc |= save(w, dir, "spm_flags.gguf");

    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "qwen2");
    set_tokens(w, bpe_toks, bpe_types, N_OF(bpe_toks));
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", bpe_merges, N_OF(bpe_merges));
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 25);
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", 23);
    rc |= save(w, dir, "bpe_qwen2.gguf");

    /* llama3-style BPE with BOS added and the gpt-2 space clean-up on decode */
    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "general.name", "tiny");
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "llama-bpe");
    set_tokens(w, bpe_toks, bpe_types, N_OF(bpe_toks));
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", bpe_merges, N_OF(bpe_merges));
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 24);
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 23);
    ctn_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    ctn_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", true);
    rc |= save(w, dir, "bpe_llama3.gguf");

    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    set_tokens(w, bpe_toks, bpe_types, N_OF(bpe_toks));
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", bpe_merges, N_OF(bpe_merges));
    rc |= save(w, dir, "bpe_gpt2.gguf");
    return rc ? 1 : 0;
}
#endif
