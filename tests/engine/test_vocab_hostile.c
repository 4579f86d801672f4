/*
 * The vocabulary loader and tokenizer against hostile files and failing allocations:
 * reproducers of what fuzz_vocab found, and SQLite-style allocation-failure loops (fail
 * every allocation from the N-th on, for N = 0, 1, 2, ... until the call succeeds) over
 * ctn_vocab_load, ctn_tokenize and ctn_detokenize on the shared vocabularies. Each failure
 * must be a clean CTN_ENOMEM; leaks show up in the ASan build (LeakSanitizer).
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "gguf.h"
#include "test.h"
#include "vocab.h"

static char err[512];

static const char *shared_dir(void) {
    const char *s = getenv("CTN_SHARED");
    return s && *s ? s : "../shared";
}

static ctn_gguf *open_shared(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", shared_dir(), name);
    ctn_gguf *g = NULL;
    if (ctn_gguf_open(&g, path, err, sizeof err) < 0) {
        printf("  cannot open %s: %s\n", path, err);
        return NULL;
    }
    return g;
}

/* Loads the vocabulary the writer describes; returns the code (and frees what it made). */
static int load_from_writer(ctn_gguf_writer *w) {
    void *mem = NULL;
    size_t size = 0;
    err[0] = 0;
    if (ctn_gguf_writer_write_memory(w, &mem, &size) != 0) return 1;
    ctn_gguf *g = NULL;
    int rc = ctn_gguf_open_memory(&g, mem, size, "mem", err, sizeof err);
    if (rc == 0) {
        ctn_vocab *v = NULL;
        rc = ctn_vocab_load(&v, g, err, sizeof err);
        if ((rc == 0) != (v != NULL)) rc = 2;
        ctn_vocab_free(v);
    }
    ctn_gguf_free(g);
    free(mem);
    return rc;
}

/* ---- hostile files -------------------------------------------------------------------- */

/*
 * A GPT-2 token made of characters outside the byte alphabet decodes, as in llama.cpp, to
 * "[UNK_BYTE_0x..<whole token>]" per character: quadratic. A 90 KB token used to ask for
 * n * (n + 32) bytes of scratch (8 GB) and would have built a piece of 2.7 GB; now the
 * pieces are measured first and the excess over the texts capped.
 */
TEST(quadratic_unk_byte_piece) {
    size_t n_chars = 30000;
    char *big = malloc(3 * n_chars + 1);
    CHECK(big != NULL);
    if (!big) return;
    for (size_t i = 0; i < n_chars; i++)
        memcpy(big + 3 * i, "\xe4\xb8\xad", 3); /* U+4E2D, not in the GPT-2 alphabet */
    big[3 * n_chars] = 0;
    const char *toks[] = {"a", "b", big};
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", NULL, 0);
    CHECK_EQ_INT(load_from_writer(w), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.tokens[2]");
    ctn_gguf_writer_free(w);

    /* a short one still decodes the way llama.cpp spells it */
    const char *toks2[] = {"a", "\xe4\xb8\xad"};
    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks2, 2);
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", NULL, 0);
    void *mem = NULL;
    size_t size = 0;
    ctn_gguf *g = NULL;
    ctn_vocab *v = NULL;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(w, &mem, &size), 0);
    CHECK_EQ_INT(ctn_gguf_open_memory(&g, mem, size, "mem", err, sizeof err), 0);
    CHECK_EQ_INT(ctn_vocab_load(&v, g, err, sizeof err), 0);
    if (v) {
        char buf[64];
        int k = ctn_token_to_piece(v, 1, buf, sizeof buf, 0, true);
        CHECK(k > 0 && (size_t)k < sizeof buf);
        if (k > 0 && (size_t)k < sizeof buf) {
            buf[k] = 0;
            CHECK_STR(buf, "[UNK_BYTE_0xe4b8ad\xe4\xb8\xad]");
        }
    }
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    free(mem);
    ctn_gguf_writer_free(w);
    free(big);
}

/* ---- allocation failures -------------------------------------------------------------- */

/* Fails every allocation from the n-th on while loading; returns the load's code. */
static int load_failing(const ctn_gguf *g, long n, ctn_vocab **v) {
    ctn__alloc_fail_after = n;
    int rc = ctn_vocab_load(v, g, err, sizeof err);
    ctn__alloc_fail_after = -1;
    return rc;
}

/*
 * PCRE2's compile and match memory comes through the same hook (a pcre2_general_context);
 * only the JIT's executable pages are mmapped by PCRE2 itself, and a failed JIT compile
 * leaves the interpreter, which gives the same results.
 */
static void load_loop(const char *name) {
    ctn_gguf *g = open_shared(name);
    CHECK(g != NULL);
    if (!g) return;
    long n;
    int ok = 0;
    for (n = 0; n < 10000 && !ok; n++) {
        ctn_vocab *v = (ctn_vocab *)&ok; /* must be reset to NULL on failure */
        int rc = load_failing(g, n, &v);
        if (rc == 0) {
            ok = 1;
            CHECK(v != NULL && ctn_vocab_n_tokens(v) > 1000);
            ctn_vocab_free(v);
        } else {
            if (rc != CTN_ENOMEM) printf("  %s: N=%ld: %d %s\n", name, n, rc, err);
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK(v == NULL);
        }
    }
    CHECK(ok);
    CHECK(n > 5); /* the hook is really on the load path */
    ctn_gguf_free(g);
}

TEST(alloc_fail_load_spm) {
    load_loop("llama-spm");
}

TEST(alloc_fail_load_bpe) {
    load_loop("qwen2");
}

static const char *const alloc_texts[] = {
    "<|im_start|>user\nHello world, it's 2024! caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
    "\xf0\x9f\xa6\x99<|im_end|>",
    "<s> bad \xff\xfe\xc3 spaces    \n\n\ttabs 12345678 ",
};

/* Tokenizes and detokenizes with every allocation from the n-th on failing, for each n. */
static void tokenize_loop(const char *name) {
    ctn_gguf *g = open_shared(name);
    CHECK(g != NULL);
    if (!g) return;
    ctn_vocab *v = NULL;
    CHECK_EQ_INT(ctn_vocab_load(&v, g, err, sizeof err), 0);
    ctn_gguf_free(g);
    if (!v) return;
    for (size_t t = 0; t < sizeof alloc_texts / sizeof alloc_texts[0]; t++) {
        const char *text = alloc_texts[t];
        int32_t *want = NULL;
        size_t n_want = 0;
        CHECK_EQ_INT(ctn_tokenize(v, text, strlen(text), true, true, &want, &n_want), 0);
        CHECK(n_want > 5);
        int ok = 0;
        long n;
        for (n = 0; n < 10000 && !ok; n++) {
            int32_t *ids = (int32_t *)&ok;
            size_t n_ids = 99;
            ctn__alloc_fail_after = n;
            int rc = ctn_tokenize(v, text, strlen(text), true, true, &ids, &n_ids);
            ctn__alloc_fail_after = -1;
            if (rc == 0) {
                ok = 1;
                CHECK(n_ids == n_want && memcmp(ids, want, n_want * sizeof *ids) == 0);
                free(ids);
            } else {
                CHECK_EQ_INT(rc, CTN_ENOMEM);
                CHECK(ids == NULL && n_ids == 0);
            }
        }
        CHECK(ok && n > 1);

        char *want_text = NULL;
        CHECK_EQ_INT(ctn_detokenize(v, want, n_want, false, true, &want_text, NULL), 0);
        ok = 0;
        for (n = 0; n < 100 && !ok; n++) {
            char *out = (char *)&ok;
            size_t len = 99;
            ctn__alloc_fail_after = n;
            int rc = ctn_detokenize(v, want, n_want, false, true, &out, &len);
            ctn__alloc_fail_after = -1;
            if (rc == 0) {
                ok = 1;
                CHECK(want_text && out && strcmp(out, want_text) == 0 && len == strlen(out));
                free(out);
            } else {
                CHECK_EQ_INT(rc, CTN_ENOMEM);
                CHECK(out == NULL && len == 0);
            }
        }
        CHECK(ok && n > 1);
        free(want_text);
        free(want);
    }
    ctn_vocab_free(v);
}

TEST(alloc_fail_tokenize_spm) {
    tokenize_loop("llama-spm");
}

TEST(alloc_fail_tokenize_bpe) {
    tokenize_loop("qwen2");
}

int main(void) {
    RUN(quadratic_unk_byte_piece);
    RUN(alloc_fail_load_spm);
    RUN(alloc_fail_load_bpe);
    RUN(alloc_fail_tokenize_spm);
    RUN(alloc_fail_tokenize_bpe);
    return test_summary();
}
