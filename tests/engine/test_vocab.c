/*
 * Tokenizer tests: llama.cpp's own test vectors (every text of NAME.gguf.inp must give the
 * ids of NAME.gguf.out) for the vocabularies in the shared folder and, when
 * CTN_LLAMACPP_MODELS names a llama.cpp models/ folder, for every vocabulary there; then
 * special tokens, BOS/EOS, decoding round trips, the streaming decoder and hostile metadata.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "test.h"
#include "vocab.h"

static const char *shared_dir(void) {
    const char *s = getenv("CTN_SHARED");
    return s && *s ? s : "../shared";
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        *len = (size_t)n;
    }
    return b;
}

static ctn_vocab *load_vocab(const char *path, ctn_gguf **gout) {
    char err[512];
    ctn_gguf *g;
    if (ctn_gguf_open(&g, path, err, sizeof err) < 0) {
        printf("  cannot open %s: %s\n", path, err);
        return NULL;
    }
    ctn_vocab *v;
    int rc = ctn_vocab_load(&v, g, err, sizeof err);
    if (gout)
        *gout = g;
    else
        ctn_gguf_free(g);
    if (rc < 0) {
        printf("  cannot load %s: %s (%s)\n", path, err, ctn_strerror(rc));
        return NULL;
    }
    return v;
}

/* Runs one NAME.gguf with its .inp/.out; returns the number of failing texts (-1: skipped). */
static int run_vectors(const char *gguf_path, int *n_texts) {
    char path[1200];
    size_t ilen, olen;
    snprintf(path, sizeof path, "%s.inp", gguf_path);
    char *inp = read_file(path, &ilen);
    snprintf(path, sizeof path, "%s.out", gguf_path);
    char *outp = read_file(path, &olen);
    *n_texts = 0;
    if (!inp || !outp) {
        free(inp);
        free(outp);
        return -1;
    }
    char err[512];
    ctn_gguf *g;
    if (ctn_gguf_open(&g, gguf_path, err, sizeof err) < 0) {
        printf("  cannot open %s: %s\n", gguf_path, err);
        free(inp);
        free(outp);
        return 1;
    }
    ctn_vocab *v;
    int rc = ctn_vocab_load(&v, g, err, sizeof err);
    ctn_gguf_free(g);
    if (rc == CTN_ENOTSUP) {
        printf("  skip %s: %s\n", gguf_path, err);
        free(inp);
        free(outp);
        return -1;
    }
    if (rc < 0) {
        printf("  cannot load %s: %s\n", gguf_path, err);
        free(inp);
        free(outp);
        return 1;
    }
    /* texts are separated by "\n__ggml_vocab_test__\n" (as test-tokenizer-0.cpp splits) */
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep);
    int fails = 0;
    size_t pos = 0;
    char *oline = outp;
    while (pos < ilen) {
        char *next = memmem(inp + pos, ilen - pos, sep, seplen);
        size_t tlen = next ? (size_t)(next - (inp + pos)) : ilen - pos;
        char *eol = strchr(oline, '\n');
        if (eol) *eol = 0;
        int32_t expect[4096];
        size_t ne = 0;
        for (char *p = oline; *p;) {
            char *endp;
            long x = strtol(p, &endp, 10);
            if (endp == p) break;
            if (ne < 4096) expect[ne++] = (int32_t)x;
            p = endp;
        }
        int32_t *ids;
        size_t n;
        rc = ctn_tokenize(v, inp + pos, tlen, false, false, &ids, &n);
        bool ok = rc == 0 && n == ne && (n == 0 || memcmp(ids, expect, n * sizeof *ids) == 0);
        if (!ok) {
            fails++;
            if (fails <= 3) {
                printf("  %s text %d \"%.*s\": got", gguf_path, *n_texts,
                       (int)(tlen > 60 ? 60 : tlen), inp + pos);
                for (size_t i = 0; i < n && i < 24; i++)
                    printf(" %d", ids[i]);
                printf("\n    expected %s\n", oline);
            }
        }
        free(ids);
        (*n_texts)++;
        oline = eol ? eol + 1 : oline + strlen(oline);
        if (!next) break;
        pos = (size_t)(next - inp) + seplen;
    }
    ctn_vocab_free(v);
    free(inp);
    free(outp);
    return fails;
}

static int run_dir(const char *dir, int *total_texts, int *total_vocabs) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    char *names[256];
    int nn = 0;
    while ((e = readdir(d)) && nn < 256) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "ggml-vocab-", 11) == 0 && l > 5 &&
            strcmp(e->d_name + l - 5, ".gguf") == 0) {
            names[nn++] = strdup(e->d_name);
        }
    }
    closedir(d);
    int fails = 0;
    for (int i = 0; i < nn; i++) {
        char path[1024];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= sizeof path) continue;
        int nt;
        int f = run_vectors(path, &nt);
        if (f >= 0) {
            printf("  %-40s %d/%d texts match\n", names[i], nt - f, nt);
            fails += f;
            *total_texts += nt;
            (*total_vocabs)++;
        }
        free(names[i]);
    }
    return fails;
}

TEST(shared_vectors) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/vocab", shared_dir());
    int texts = 0, vocabs = 0;
    int f = run_dir(dir, &texts, &vocabs);
    if (f < 0) SKIP("no vocabularies in %s (set CTN_SHARED)", dir);
    CHECK(vocabs >= 4);
    CHECK_EQ_INT(f, 0);
}

TEST(llamacpp_vectors) {
    const char *dir = getenv("CTN_LLAMACPP_MODELS");
    if (!dir || !*dir) SKIP("CTN_LLAMACPP_MODELS not set (a llama.cpp models/ folder)");
    int texts = 0, vocabs = 0;
    int f = run_dir(dir, &texts, &vocabs);
    if (f < 0) SKIP("cannot read %s (run scripts/setup-peers.sh)", dir);
    printf("  %d vocabularies, %d texts\n", vocabs, texts);
    CHECK_EQ_INT(f, 0);
}

static ctn_vocab *shared_vocab(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", shared_dir(), name);
    return load_vocab(path, NULL);
}

static bool ids_eq(const int32_t *a, size_t n, const int32_t *b, size_t m) {
    return n == m && (n == 0 || memcmp(a, b, n * sizeof *a) == 0);
}

TEST(add_special_bos) {
    ctn_vocab *v = shared_vocab("llama-spm");
    if (!v) return;
    int32_t *a, *b;
    size_t na, nb;
    CHECK_EQ_INT(ctn_tokenize(v, "Hello world", 11, true, false, &a, &na), 0);
    CHECK_EQ_INT(ctn_tokenize(v, "Hello world", 11, false, false, &b, &nb), 0);
    CHECK(ctn_vocab_add_bos(v));
    CHECK_EQ_INT(na, nb + 1);
    CHECK_EQ_INT(a[0], ctn_vocab_bos(v));
    CHECK_EQ_INT(a[0], 1);
    CHECK(ids_eq(a + 1, na - 1, b, nb));
    free(a);
    free(b);
    /* empty text: only the BOS with add_special */
    CHECK_EQ_INT(ctn_tokenize(v, "", 0, true, false, &a, &na), 0);
    CHECK_EQ_INT(na, 1);
    free(a);
    CHECK_EQ_INT(ctn_tokenize(v, "", 0, false, false, &a, &na), 0);
    CHECK_EQ_INT(na, 0);
    free(a);
    ctn_vocab_free(v);

    v = shared_vocab("llama-bpe"); /* llama3: add_bos from metadata/pre-tokenizer */
    if (!v) return;
    CHECK(ctn_vocab_add_bos(v));
    CHECK_EQ_INT(ctn_tokenize(v, "Hi", 2, true, false, &a, &na), 0);
    CHECK(na >= 2 && a[0] == 128000);
    free(a);
    ctn_vocab_free(v);

    v = shared_vocab("qwen2"); /* no add_bos_token: nothing added */
    if (!v) return;
    CHECK(!ctn_vocab_add_bos(v));
    CHECK_EQ_INT(ctn_tokenize(v, "Hi", 2, true, false, &a, &na), 0);
    CHECK_EQ_INT(ctn_tokenize(v, "Hi", 2, false, false, &b, &nb), 0);
    CHECK(ids_eq(a, na, b, nb));
    free(a);
    free(b);
    ctn_vocab_free(v);
}

TEST(parse_special) {
    ctn_vocab *v = shared_vocab("qwen2");
    if (!v) return;
    const char *t = "<|im_start|>user\nhi<|im_end|>";
    int32_t im_start = ctn_vocab_lookup(v, "<|im_start|>", 12);
    int32_t im_end = ctn_vocab_lookup(v, "<|im_end|>", 10);
    CHECK(im_start >= 0 && im_end >= 0);
    int32_t *a;
    size_t na;
    CHECK_EQ_INT(ctn_tokenize(v, t, strlen(t), false, true, &a, &na), 0);
    CHECK(na >= 3 && a[0] == im_start && a[na - 1] == im_end);
    free(a);
    CHECK_EQ_INT(ctn_tokenize(v, t, strlen(t), false, false, &a, &na), 0);
    bool found = false;
    for (size_t i = 0; i < na; i++)
        found |= a[i] == im_start || a[i] == im_end;
    CHECK(!found);
    CHECK(na > 6);
    /* rendered back, the plain tokenization spells the markers out */
    char *s;
    size_t sl;
    CHECK_EQ_INT(ctn_detokenize(v, a, na, false, false, &s, &sl), 0);
    CHECK_STR(s, t);
    free(s);
    free(a);
    CHECK(ctn_vocab_is_eog(v, im_end));
    ctn_vocab_free(v);

    v = shared_vocab("llama-spm");
    if (!v) return;
    CHECK_EQ_INT(ctn_tokenize(v, "<s>Hi", 5, false, true, &a, &na), 0);
    CHECK(na >= 2 && a[0] == 1);
    /* after a special token SPM adds the space prefix again: "Hi" -> "▁Hi" */
    int32_t *b;
    size_t nb;
    CHECK_EQ_INT(ctn_tokenize(v, "Hi", 2, false, false, &b, &nb), 0);
    CHECK(ids_eq(a + 1, na - 1, b, nb));
    free(b);
    free(a);
    CHECK_EQ_INT(ctn_tokenize(v, "<s>Hi", 5, false, false, &a, &na), 0);
    CHECK(na > 2 && a[0] != 1);
    free(a);
    ctn_vocab_free(v);
}

static void roundtrip(ctn_vocab *v, const char *t) {
    int32_t *a;
    size_t na;
    CHECK_EQ_INT(ctn_tokenize(v, t, strlen(t), false, false, &a, &na), 0);
    char *s;
    size_t sl;
    CHECK_EQ_INT(ctn_detokenize(v, a, na, false, false, &s, &sl), 0);
    CHECK_STR(s, t);
    free(s);
    free(a);
    /* with BOS, llama.cpp's detokenize drops the BOS but keeps the SPM prefix space */
    CHECK_EQ_INT(ctn_tokenize(v, t, strlen(t), true, false, &a, &na), 0);
    CHECK_EQ_INT(ctn_detokenize(v, a, na, true, false, &s, &sl), 0);
    if (ctn_vocab_type(v) == CTN_VOCAB_SPM) {
        CHECK(sl == strlen(t) + 1 && s[0] == ' ' && strcmp(s + 1, t) == 0);
    } else {
        CHECK_STR(s, t);
    }
    free(s);
    free(a);
}

TEST(detokenize_roundtrip) {
    const char *names[] = {"llama-spm", "llama-bpe", "qwen2", "gpt-2"};
    const char *texts[] = {"Hello world", "  leading spaces\tand\ttabs\n\nnew lines",
                           "caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\xa6\x99 emoji",
                           "code: for (int i = 0; i < n; i++) { x[i] = 3.14159; }"};
    for (size_t k = 0; k < 4; k++) {
        ctn_vocab *v = shared_vocab(names[k]);
        if (!v) continue;
        for (size_t i = 0; i < 4; i++)
            roundtrip(v, texts[i]);
        ctn_vocab_free(v);
    }
}

TEST(token_to_piece) {
    ctn_vocab *v = shared_vocab("llama-spm");
    if (!v) return;
    char buf[64];
    int32_t id = ctn_vocab_lookup(v, "\xe2\x96\x81the", 6);
    CHECK(id >= 0);
    CHECK_EQ_INT(ctn_token_to_piece(v, id, buf, sizeof buf, 0, false), 4);
    CHECK(memcmp(buf, " the", 4) == 0);
    CHECK_EQ_INT(ctn_token_to_piece(v, id, buf, sizeof buf, 1, false), 3);
    CHECK_EQ_INT(ctn_token_to_piece(v, 1, buf, sizeof buf, 0, false), 0); /* <s> control */
    CHECK_EQ_INT(ctn_token_to_piece(v, 1, buf, sizeof buf, 0, true), 3);
    CHECK_EQ_INT(ctn_token_to_piece(v, id, buf, 2, 0, false), 4); /* too small: full length */
    CHECK(ctn_token_to_piece(v, -1, buf, sizeof buf, 0, false) < 0);
    CHECK(ctn_token_to_piece(v, ctn_vocab_n_tokens(v), buf, sizeof buf, 0, false) < 0);
    ctn_vocab_free(v);
}

static void stream_check(ctn_vocab *v, const char *t) {
    int32_t *a;
    size_t na;
    CHECK_EQ_INT(ctn_tokenize(v, t, strlen(t), false, false, &a, &na), 0);
    char *whole;
    size_t wl;
    CHECK_EQ_INT(ctn_detokenize(v, a, na, false, false, &whole, &wl), 0);
    ctn_detok_stream s;
    ctn_detok_stream_init(&s, v, false);
    char acc[4096], buf[1024];
    size_t al = 0;
    for (size_t i = 0; i < na; i++) {
        int k = ctn_detok_stream_push(&s, a[i], buf, sizeof buf);
        CHECK(k >= 0);
        if (k > 0) {
            /* every chunk is complete UTF-8 */
            buf[k] = 0;
            memcpy(acc + al, buf, (size_t)k);
            al += (size_t)k;
        }
    }
    int k = ctn_detok_stream_flush(&s, buf, sizeof buf);
    CHECK(k >= 0);
    if (k > 0) {
        memcpy(acc + al, buf, (size_t)k);
        al += (size_t)k;
    }
    ctn_detok_stream_close(&s);
    acc[al] = 0;
    CHECK_STR(acc, whole);
    free(whole);
    free(a);
}

TEST(stream_decoder) {
    ctn_vocab *v = shared_vocab("llama-spm");
    if (!v) return;
    /* 🦙 is not in the SPM vocabulary: four <0xNN> byte tokens */
    const char *t = "llama \xf0\x9f\xa6\x99 emoji";
    int32_t *a;
    size_t na;
    CHECK_EQ_INT(ctn_tokenize(v, t, strlen(t), false, false, &a, &na), 0);
    size_t nbytes = 0;
    for (size_t i = 0; i < na; i++)
        nbytes += ctn_vocab_token_type(v, a[i]) == CTN_TOKEN_BYTE;
    CHECK(nbytes == 4);
    ctn_detok_stream s;
    ctn_detok_stream_init(&s, v, false);
    char buf[512];
    int emitted_mid = 0;
    for (size_t i = 0; i < na; i++) {
        int k = ctn_detok_stream_push(&s, a[i], buf, sizeof buf);
        CHECK(k >= 0);
        if (ctn_vocab_token_type(v, a[i]) == CTN_TOKEN_BYTE) {
            /* bytes of the emoji are held until the last one arrives */
            if (k > 0) {
                emitted_mid++;
                CHECK_EQ_INT(k, 4);
                CHECK(memcmp(buf, "\xf0\x9f\xa6\x99", 4) == 0);
            }
        }
    }
    CHECK_EQ_INT(emitted_mid, 1);
    free(a);
    /* invalid bytes pass once they cannot complete: 0xF0 followed by 'A' */
    ctn_detok_stream_init(&s, v, false);
    int32_t f0 = ctn_vocab_lookup(v, "<0xF0>", 6), bA = ctn_vocab_lookup(v, "<0x41>", 6);
    CHECK(f0 >= 0 && bA >= 0);
    CHECK_EQ_INT(ctn_detok_stream_push(&s, f0, buf, sizeof buf), 0);
    CHECK_EQ_INT(ctn_detok_stream_push(&s, bA, buf, sizeof buf), 2);
    CHECK_EQ_INT(ctn_detok_stream_push(&s, f0, buf, sizeof buf), 0);
    CHECK_EQ_INT(ctn_detok_stream_flush(&s, buf, sizeof buf), 1);
    ctn_vocab_free(v);

    const char *names[] = {"llama-spm", "llama-bpe", "qwen2", "gpt-2"};
    const char *texts[] = {
        "Hello , world ! It 's fine , isn ' t it ? I 've  seen 're .",
        "\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x81 ?",
        " ' ' ' x 's 'm",
        /* found by the fuzzer: cascades of the clean-up passes */
        "(<  ' \xc2\xb5   >  '      ' m   ' x  (/",
        "x                                                                   !", "a re"};
    for (size_t n = 0; n < 4; n++) {
        v = shared_vocab(names[n]);
        if (!v) continue;
        for (size_t i = 0; i < 3; i++)
            stream_check(v, texts[i]);
        ctn_vocab_free(v);
    }
}

TEST(invalid_utf8) {
    const char *names[] = {"llama-spm", "llama-bpe", "qwen2", "gpt-2"};
    const char t[] = "ok \xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 \xc0\x80 end\xf0\x9f";
    for (size_t n = 0; n < 4; n++) {
        ctn_vocab *v = shared_vocab(names[n]);
        if (!v) continue;
        int32_t *a;
        size_t na;
        CHECK_EQ_INT(ctn_tokenize(v, t, sizeof t - 1, false, true, &a, &na), 0);
        CHECK(na > 3);
        for (size_t i = 0; i < na; i++)
            CHECK(a[i] >= 0 && a[i] < ctn_vocab_n_tokens(v));
        char *s;
        size_t sl;
        CHECK_EQ_INT(ctn_detokenize(v, a, na, false, false, &s, &sl), 0);
        CHECK(sl > 0 && strncmp(s, "ok ", 3) == 0);
        free(s);
        free(a);
        if (ctn_vocab_type(v) == CTN_VOCAB_SPM) {
            /* SPM keeps raw bytes through byte fallback (a bad lead byte can swallow the
             * next bytes into one symbol, so keep it away from spaces here) */
            CHECK_EQ_INT(ctn_tokenize(v, "a\xff\xc3(", 4, false, false, &a, &na), 0);
            CHECK_EQ_INT(ctn_detokenize(v, a, na, false, false, &s, &sl), 0);
            CHECK(sl == 4 && memcmp(s, "a\xff\xc3(", 4) == 0);
            free(s);
            free(a);
        }
        ctn_vocab_free(v);
    }
}

/* ---- hostile metadata ------------------------------------------------------------------ */

static int load_from_writer(ctn_gguf_writer *w, char *err, size_t errlen) {
    void *mem;
    size_t size;
    int rc = ctn_gguf_writer_write_memory(w, &mem, &size);
    if (rc < 0) return rc;
    ctn_gguf *g;
    rc = ctn_gguf_open_memory(&g, mem, size, "mem", err, errlen);
    if (rc == 0) {
        ctn_vocab *v;
        rc = ctn_vocab_load(&v, g, err, errlen);
        if (rc == 0) ctn_vocab_free(v);
        ctn_gguf_free(g);
    }
    free(mem);
    return rc;
}

static ctn_gguf_writer *tiny_bpe(void) {
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    const char *toks[] = {"a", "b", "ab", "\xc4\xa0"};
    const char *merges[] = {"a b"};
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    return w;
}

TEST(hostile_metadata) {
    char err[512];
    ctn_gguf_writer *w = tiny_bpe();
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), 0);
    ctn_gguf_writer_free(w);

    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.tokens");
    ctn_gguf_writer_free(w);

    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", NULL, 0);
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "empty");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    float sc[2] = {0, 1};
    ctn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CTN_GGUF_FLOAT32, sc, 2);
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.scores");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.scores", "x");
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.scores");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    float ty[4] = {1, 1, 1, 1};
    ctn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CTN_GGUF_FLOAT32, ty, 4);
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.token_type");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    const char *bad_merges[] = {"a b", "a zz"};
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", bad_merges, 2);
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.merges[1]");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    const char *nospace[] = {"ab"};
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", nospace, 1);
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.merges[0]");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 99);
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.bos_token_id");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 4);
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "eos_token_id");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre");
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "no-such-pre");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_ENOTSUP);
    CHECK_CONTAINS(err, "bert");
    ctn_gguf_writer_free(w);

    w = tiny_bpe();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.tokens", "x");
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    ctn_gguf_writer_free(w);

    /* tiny vocabulary actually tokenizes: "ab" merges, "abb" -> ab b */
    w = tiny_bpe();
    void *mem;
    size_t size;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(w, &mem, &size), 0);
    ctn_gguf *g;
    CHECK_EQ_INT(ctn_gguf_open_memory(&g, mem, size, "mem", err, sizeof err), 0);
    ctn_vocab *v;
    CHECK_EQ_INT(ctn_vocab_load(&v, g, err, sizeof err), 0);
    int32_t *ids;
    size_t n;
    CHECK_EQ_INT(ctn_tokenize(v, "abb c", 5, false, false, &ids, &n), 0);
    /* ' c' has no tokens: "Ġ" is token 3, "c" is not in the vocabulary */
    int32_t want[] = {2, 1, 3};
    CHECK(ids_eq(ids, n, want, 3));
    free(ids);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    free(mem);
    ctn_gguf_writer_free(w);
}

/* ---- loader flags set by the pre-tokenizer name (found by tokdiff's variants) --------- */

static ctn_vocab *vocab_from_writer(ctn_gguf_writer *w, void **mem) {
    size_t size;
    char err[512];
    ctn_gguf *g;
    ctn_vocab *v = NULL;
    if (ctn_gguf_writer_write_memory(w, mem, &size) < 0) return NULL;
    if (ctn_gguf_open_memory(&g, *mem, size, "mem", err, sizeof err) < 0) return NULL;
    if (ctn_vocab_load(&v, g, err, sizeof err) < 0) v = NULL;
    ctn_gguf_free(g);
    return v;
}

TEST(pre_name_flags) {
    /* An empty tokenizer.ggml.pre is a missing one: llama.cpp uses "default". */
    ctn_gguf_writer *w = tiny_bpe();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "");
    void *mem = NULL;
    ctn_vocab *v = vocab_from_writer(w, &mem);
    CHECK(v != NULL);
    if (v) CHECK_STR(ctn_vocab_pre(v), "default");
    ctn_vocab_free(v);
    free(mem);
    ctn_gguf_writer_free(w);

    /* The Gemma 4 pre-tokenizer type forces add_bos also under model gpt2, for both of its
     * names, even when add_bos_token says false. */
    const char *names[] = {"gemma4", "granite-embed-multi-311m"};
    for (size_t i = 0; i < 2; i++) {
        w = tiny_bpe();
        ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", names[i]);
        ctn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 0);
        ctn_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
        mem = NULL;
        v = vocab_from_writer(w, &mem);
        CHECK(v != NULL);
        if (v) {
            CHECK(ctn_vocab_add_bos(v));
            int32_t *ids;
            size_t n;
            CHECK_EQ_INT(ctn_tokenize(v, "ab", 2, true, false, &ids, &n), 0);
            int32_t want[] = {0, 2};
            CHECK(ids_eq(ids, n, want, 2));
            free(ids);
        }
        ctn_vocab_free(v);
        free(mem);
        ctn_gguf_writer_free(w);
    }
    /* sarvam-moe shares the regex but not the type: no forced BOS */
    w = tiny_bpe();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "sarvam-moe");
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 0);
    mem = NULL;
    v = vocab_from_writer(w, &mem);
    CHECK(v != NULL);
    if (v) CHECK(!ctn_vocab_add_bos(v));
    ctn_vocab_free(v);
    free(mem);
    ctn_gguf_writer_free(w);
}

/* ---- pre-tokenizers with llama.cpp's own scanners -------------------------------------- */

/* Tokenizes text with a vocabulary from w (with pre set to `pre`) and compares the ids. */
static bool tokenizes_to(ctn_gguf_writer *w, const char *pre, const char *text, const int32_t *want,
                         size_t n_want) {
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    void *mem = NULL;
    ctn_vocab *v = vocab_from_writer(w, &mem);
    bool ok = false;
    int32_t *ids = NULL;
    size_t n;
    if (v && ctn_tokenize(v, text, strlen(text), false, false, &ids, &n) == 0) {
        ok = ids_eq(ids, n, want, n_want);
    }
    free(ids);
    ctn_vocab_free(v);
    free(mem);
    return ok;
}

TEST(pre_custom_scanners) {
    /* Digits whose merges tell the pieces apart: one piece "1234" gives 12 34, the pieces
     * "1" "234" give 1 234, and "123" "4" give 12 3 4. */
    const char *toks[] = {"1", "2", "3", "4", "12", "23", "234", "34", "a", "b", "ab", "b1"};
    const char *merges[] = {"b 1", "1 2", "2 3", "23 4", "3 4", "a b"};
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 12);
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 6);
    int32_t whole[] = {4, 7}, right3[] = {0, 6}, left3[] = {4, 2, 3};
    CHECK(tokenizes_to(w, "gpt-2", "1234", whole, 2));
    /* afmoe and tiny_aya (cohere2moe) group digits by three from the right */
    CHECK(tokenizes_to(w, "afmoe", "1234", right3, 2));
    CHECK(tokenizes_to(w, "tiny_aya", "1234", right3, 2));
    CHECK(tokenizes_to(w, "cohere2moe", "1234", right3, 2));
    /* kimi-k2 takes \p{N}{1,3} from the left */
    CHECK(tokenizes_to(w, "kimi-k2", "1234", left3, 3));
    /* whitespace: \S+ keeps "ab1" one piece (so "b 1" merges first), where gpt-2 splits
     * "ab" "1"; the space, raw UTF-8 with no token or <0x20>, is dropped in both. */
    int32_t ws[] = {8, 11, 10}, gpt2[] = {10, 0, 10};
    CHECK(tokenizes_to(w, "whitespace", "ab1 ab", ws, 3));
    CHECK(tokenizes_to(w, "gpt-2", "ab1 ab", gpt2, 3));
    ctn_gguf_writer_free(w);

    /* Kimi-K2 vocabularies may have no merges at all (llama.cpp skips them); others may not. */
    w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 12);
    int32_t chars[] = {8, 9, 0};
    CHECK(tokenizes_to(w, "kimi-k2", "ab1", chars, 3));
    char err[512];
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", "afmoe");
    CHECK_EQ_INT(load_from_writer(w, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "tokenizer.ggml.merges");
    ctn_gguf_writer_free(w);
}

/* ---- many threads on one vocabulary --------------------------------------------------- */

typedef struct {
    const ctn_vocab *v;
    const char *text;
    const int32_t *want;
    size_t n_want;
    int ok;
} thread_arg;

static void *tok_thread(void *p) {
    thread_arg *a = p;
    a->ok = 1;
    for (int r = 0; r < 20; r++) {
        int32_t *ids;
        size_t n;
        if (ctn_tokenize(a->v, a->text, strlen(a->text), true, true, &ids, &n) != 0 ||
            !ids_eq(ids, n, a->want, a->n_want)) {
            a->ok = 0;
        }
        free(ids);
    }
    return NULL;
}

TEST(threads) {
    const char *names[] = {"qwen2", "llama-spm"};
    const char *t =
        "<|im_start|>user\nThread safety: caf\xc3\xa9, 123456, \xe4\xbd\xa0\xe5\xa5\xbd "
        "\xf0\x9f\xa6\x99 it's   spaced\n\n<|im_end|>";
    for (size_t k = 0; k < 2; k++) {
        ctn_vocab *v = shared_vocab(names[k]);
        if (!v) continue;
        int32_t *want;
        size_t nw;
        CHECK_EQ_INT(ctn_tokenize(v, t, strlen(t), true, true, &want, &nw), 0);
        pthread_t th[8];
        thread_arg args[8];
        for (int i = 0; i < 8; i++) {
            args[i] = (thread_arg){v, t, want, nw, 0};
            CHECK_EQ_INT(pthread_create(&th[i], NULL, tok_thread, &args[i]), 0);
        }
        for (int i = 0; i < 8; i++) {
            pthread_join(th[i], NULL);
            CHECK(args[i].ok);
        }
        free(want);
        ctn_vocab_free(v);
    }
}

int main(void) {
    RUN(shared_vectors);
    RUN(llamacpp_vectors);
    RUN(add_special_bos);
    RUN(parse_special);
    RUN(detokenize_roundtrip);
    RUN(token_to_piece);
    RUN(stream_decoder);
    RUN(invalid_utf8);
    RUN(hostile_metadata);
    RUN(pre_name_flags);
    RUN(pre_custom_scanners);
    RUN(threads);
    return test_summary();
}
