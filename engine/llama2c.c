/*
 * llama2.c checkpoint + tokenizer -> GGUF. See llama2c.h for both input formats.
 *
 * The output reproduces llama.cpp's examples/convert-llama2c-to-ggml: the same keys in the
 * same order, the same token texts and types, the same tensor names, shapes and order, and
 * the weights copied verbatim (llama2.c's row-major (out, in) matrices are ggml's (in, out)
 * tensors byte for byte). Two values differ on purpose; see the comments at
 * llama.context_length and llama.rope.dimension_count.
 */
#include "llama2c.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "mapfile.h"

#define HEADER_BYTES 28 /* 7 int32 */

/* Ids llama.cpp's converter gives the special tokens of every llama2.c vocabulary. */
#define UNK_ID 0
#define BOS_ID 1
#define EOS_ID 2

/* llama.cpp's token types (LLAMA_TOKEN_TYPE_*). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_BYTE = 6 };

static const char *const HEADER_FIELDS[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                             "n_kv_heads", "vocab_size", "seq_len"};

/* The float32 arrays of a checkpoint, in file order. */
enum {
    F_TOKEN_EMBEDDING, /* (vocab, dim) */
    F_RMS_ATT,         /* (layer, dim) */
    F_WQ,              /* (layer, dim, dim) */
    F_WK,              /* (layer, kv_dim, dim) */
    F_WV,              /* (layer, kv_dim, dim) */
    F_WO,              /* (layer, dim, dim) */
    F_RMS_FFN,         /* (layer, dim) */
    F_W1,              /* (layer, hidden, dim) */
    F_W2,              /* (layer, dim, hidden) */
    F_W3,              /* (layer, hidden, dim) */
    F_RMS_FINAL,       /* (dim) */
    F_FREQ_REAL,       /* (seq_len * head_size / 2), unused */
    F_FREQ_IMAG,       /* (seq_len * head_size / 2), unused */
    F_WCLS,            /* (vocab, dim), only when vocab_size < 0 */
    F_COUNT
};

static const char *const FIELD_NAMES[F_COUNT] = {
    "token_embedding", "rms_att", "wq", "wk", "wv",        "wo",
    "rms_ffn",         "w1",      "w2", "w3", "rms_final", "freq_cis_real",
    "freq_cis_imag",   "wcls"};

typedef struct {
    int64_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
    bool shared; /* the classifier is the token embedding (vocab_size > 0) */
    int64_t head_size, kv_dim;
    uint64_t off[F_COUNT]; /* file offset of each array (wcls: only when !shared) */
} config;

static int32_t rd_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static int fail(char *err, size_t errlen, const char *file, const char *field, uint64_t off,
                const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

/* Formats "FILE: FIELD (at offset N): reason" and returns CTN_EFORMAT. */
static int fail(char *err, size_t errlen, const char *file, const char *field, uint64_t off,
                const char *fmt, ...) {
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    ctn__errf(err, errlen, "%s: %s (at offset %" PRIu64 "): %s", file, field, off, why);
    return CTN_EFORMAT;
}

/* ---- checkpoint ---------------------------------------------------------------------- */

/*
 * Reads and checks the header, then lays out every array and checks that the file holds
 * exactly them. Products are computed with overflow checks: each dimension fits in an int32
 * but three of them multiplied need not fit in 64 bits.
 */
static int parse_checkpoint(config *c, const uint8_t *p, size_t size, const char *name, char *err,
                            size_t errlen) {
    int32_t h[7];
    for (int i = 0; i < 7; i++) {
        uint64_t off = (uint64_t)i * 4;
        if (size < off + 4) {
            return fail(err, errlen, name, HEADER_FIELDS[i], off,
                        "truncated header: the file has %zu bytes, the header needs %d", size,
                        HEADER_BYTES);
        }
        h[i] = rd_i32(p + off);
    }
    for (int i = 0; i < 7; i++) {
        bool bad = i == 5 ? (h[i] == 0 || h[i] == INT32_MIN) : h[i] <= 0;
        if (bad) {
            return fail(err, errlen, name, HEADER_FIELDS[i], (uint64_t)i * 4, "%s %" PRId32,
                        i == 5 ? "must be non-zero, got" : "must be positive, got", h[i]);
        }
    }
    c->dim = h[0];
    c->hidden = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->shared = h[5] > 0;
    c->vocab = h[5] > 0 ? h[5] : -(int64_t)h[5];
    c->seq_len = h[6];
    if (c->dim % c->n_heads != 0) {
        return fail(err, errlen, name, "n_heads", 12,
                    "%" PRId64 " heads do not divide dim %" PRId64, c->n_heads, c->dim);
    }
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0) {
        return fail(err, errlen, name, "n_kv_heads", 16,
                    "%" PRId64 " kv heads do not divide n_heads %" PRId64, c->n_kv_heads,
                    c->n_heads);
    }
    c->head_size = c->dim / c->n_heads;
    c->kv_dim = c->head_size * c->n_kv_heads;

    /* Element counts as products of up to three factors; freq_cis as llama2.c computes it. */
    uint64_t L = (uint64_t)c->n_layers, D = (uint64_t)c->dim, V = (uint64_t)c->vocab;
    uint64_t F[F_COUNT][3] = {
        [F_TOKEN_EMBEDDING] = {V, D, 1},
        [F_RMS_ATT] = {L, D, 1},
        [F_WQ] = {L, D, D},
        [F_WK] = {L, (uint64_t)c->kv_dim, D},
        [F_WV] = {L, (uint64_t)c->kv_dim, D},
        [F_WO] = {L, D, D},
        [F_RMS_FFN] = {L, D, 1},
        [F_W1] = {L, (uint64_t)c->hidden, D},
        [F_W2] = {L, D, (uint64_t)c->hidden},
        [F_W3] = {L, (uint64_t)c->hidden, D},
        [F_RMS_FINAL] = {D, 1, 1},
        [F_FREQ_REAL] = {(uint64_t)(c->seq_len * c->head_size / 2), 1, 1},
        [F_FREQ_IMAG] = {(uint64_t)(c->seq_len * c->head_size / 2), 1, 1},
        [F_WCLS] = {c->shared ? 0 : V, D, 1},
    };
    /* All sizes first, so that absurd dimensions read as such rather than as truncation. */
    uint64_t off = HEADER_BYTES, bytes[F_COUNT];
    for (int f = 0; f < F_COUNT; f++) {
        uint64_t n, end;
        if (__builtin_mul_overflow(F[f][0], F[f][1], &n) ||
            __builtin_mul_overflow(n, F[f][2], &n) || __builtin_mul_overflow(n, 4, &bytes[f]) ||
            __builtin_add_overflow(off, bytes[f], &end)) {
            return fail(err, errlen, name, FIELD_NAMES[f], off,
                        "size overflows: the header's dimensions are absurd");
        }
        c->off[f] = off;
        off = end;
    }
    for (int f = 0; f < F_COUNT; f++) {
        if (c->off[f] + bytes[f] > size) {
            return fail(err, errlen, name, FIELD_NAMES[f], c->off[f],
                        "truncated: needs %" PRIu64 " bytes, the file has %zu in all (%s)",
                        bytes[f], size,
                        f == F_WCLS ? "a negative vocab_size says the classifier follows"
                                    : "the header does not describe this file");
        }
    }
    if (off != size) {
        return fail(err, errlen, name, "end of data", off,
                    "%" PRIu64 " trailing bytes after the last array: the header does not "
                    "describe this file",
                    (uint64_t)size - off);
    }
    return 0;
}

/* ---- tokenizer ----------------------------------------------------------------------- */

/*
 * Whether llama.cpp's converter takes a piece for a byte token: it tests
 * sscanf(text, "<0x%02hhX>") == 1, which after "<0x" skips white space, takes an optional
 * sign (counted in the width of 2) and needs one hex digit; the closing '>' is not checked.
 * The C string stops at a NUL byte, which no test below accepts.
 */
static bool is_byte_piece(const uint8_t *s, size_t n) {
    if (n < 4 || memcmp(s, "<0x", 3) != 0) return false;
    size_t i = 3;
    while (i < n && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r')))
        i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    if (i >= n) return false;
    uint8_t d = s[i];
    return (d >= '0' && d <= '9') || (d >= 'a' && d <= 'f') || (d >= 'A' && d <= 'F');
}

static int token_type(int64_t id, const uint8_t *s, size_t n) {
    if (id == UNK_ID) return TT_UNKNOWN;
    if (id == BOS_ID || id == EOS_ID) return TT_CONTROL;
    if (n == 0) return TT_CONTROL;
    if (is_byte_piece(s, n)) return TT_BYTE;
    return TT_NORMAL;
}

/* The text llama.cpp writes for special ids (llama2.c stores "\n<s>\n" and "\n</s>\n"). */
static const char *special_text(int64_t id) {
    return id == UNK_ID ? "<unk>" : id == BOS_ID ? "<s>" : id == EOS_ID ? "</s>" : NULL;
}

/* Length of a piece after llama.cpp's escaping of ' ' as U+2581 (3 bytes). */
static size_t escaped_len(int64_t id, const uint8_t *s, size_t n) {
    const char *sp = special_text(id);
    if (sp != NULL) return strlen(sp);
    size_t len = n;
    for (size_t i = 0; i < n; i++)
        len += s[i] == ' ' ? 2 : 0;
    return len;
}

/*
 * One pass over the tokenizer: checks every field and, when `out` is given, fills the
 * token strings (into `text`), scores and types. Returns 0 or CTN_EFORMAT; *text_len gets
 * the bytes the escaped texts need.
 */
static int walk_tokenizer(const uint8_t *p, size_t size, int64_t vocab, const char *name, char *err,
                          size_t errlen, size_t *text_len, ctn_gguf_str *strs, char *text,
                          float *scores, int32_t *types) {
    if (size < 4) {
        return fail(err, errlen, name, "max_token_length", 0, "truncated: the file has %zu bytes",
                    size);
    }
    int32_t max_len = rd_i32(p);
    if (max_len < 0) {
        return fail(err, errlen, name, "max_token_length", 0, "negative (%" PRId32 ")", max_len);
    }
    size_t pos = 4, total = 0;
    char field[64];
    for (int64_t id = 0; id < vocab; id++) {
        if (size - pos < 8) {
            snprintf(field, sizeof field, "token %" PRId64 " %s", id,
                     size - pos < 4 ? "score" : "length");
            return fail(err, errlen, name, field, size - pos < 4 ? pos : pos + 4,
                        "truncated: the file ends at %zu, the checkpoint's vocab_size is "
                        "%" PRId64,
                        size, vocab);
        }
        int32_t len = rd_i32(p + pos + 4);
        if (len < 0 || len > max_len) {
            snprintf(field, sizeof field, "token %" PRId64 " length", id);
            return fail(err, errlen, name, field, pos + 4,
                        "%" PRId32 " is not in 0..max_token_length (%" PRId32 ")", len, max_len);
        }
        if (size - pos - 8 < (size_t)len) {
            snprintf(field, sizeof field, "token %" PRId64 " text", id);
            return fail(err, errlen, name, field, pos + 8,
                        "truncated: needs %" PRId32 " bytes, the file ends at %zu", len, size);
        }
        const uint8_t *s = p + pos + 8;
        size_t elen = escaped_len(id, s, (size_t)len);
        if (strs != NULL) {
            const char *sp = special_text(id);
            char *dst = text + total;
            if (sp != NULL) {
                memcpy(dst, sp, elen);
            } else {
                size_t k = 0;
                for (int32_t i = 0; i < len; i++) {
                    if (s[i] == ' ') {
                        memcpy(dst + k, "\xe2\x96\x81", 3);
                        k += 3;
                    } else {
                        dst[k++] = (char)s[i];
                    }
                }
            }
            strs[id].ptr = dst;
            strs[id].len = elen;
            memcpy(&scores[id], p + pos, 4);
            types[id] = token_type(id, s, (size_t)len);
        }
        total += elen;
        pos += 8 + (size_t)len;
    }
    if (pos != size) {
        return fail(err, errlen, name, "end of tokens", pos,
                    "%zu trailing bytes after token %" PRId64 ": the tokenizer has more tokens "
                    "than the checkpoint's vocab_size %" PRId64,
                    size - pos, vocab - 1, vocab);
    }
    *text_len = total;
    return 0;
}

/* ---- GGUF ---------------------------------------------------------------------------- */

static int werr(ctn_gguf_writer *w, int rc, char *err, size_t errlen) {
    ctn__errf(err, errlen, "gguf writer: %s", ctn_gguf_writer_errmsg(w));
    return rc;
}

static int add_tokenizer(ctn_gguf_writer *w, const uint8_t *tok, size_t tok_size, int64_t vocab,
                         const char *name, char *err, size_t errlen) {
    size_t text_len = 0;
    int rc =
        walk_tokenizer(tok, tok_size, vocab, name, err, errlen, &text_len, NULL, NULL, NULL, NULL);
    if (rc < 0) return rc;
    /* vocab is bounded by the file now (at least 8 bytes a token), so these sizes fit. */
    size_t n = (size_t)vocab;
    ctn_gguf_str *strs = ctn__malloc(n * sizeof *strs);
    char *text = ctn__malloc(text_len);
    float *scores = ctn__malloc(n * sizeof *scores);
    int32_t *types = ctn__malloc(n * sizeof *types);
    if (strs == NULL || text == NULL || scores == NULL || types == NULL) {
        ctn__errf(err, errlen, "%s: out of memory for %zu tokens", name, n);
        rc = CTN_ENOMEM;
        goto done;
    }
    rc = walk_tokenizer(tok, tok_size, vocab, name, err, errlen, &text_len, strs, text, scores,
                        types);
    if (rc < 0) goto done;
    ctn_gguf_value tokens = {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_STRING, n, strs}};
    if ((rc = ctn_gguf_writer_set_value(w, "tokenizer.ggml.tokens", &tokens)) < 0 ||
        (rc = ctn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CTN_GGUF_FLOAT32, scores, n)) <
            0 ||
        (rc = ctn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CTN_GGUF_INT32, types, n)) <
            0) {
        rc = werr(w, rc, err, errlen);
    }
done:
    free(strs);
    free(text);
    free(scores);
    free(types);
    return rc;
}

static int add_metadata(ctn_gguf_writer *w, const config *c, char *err, size_t errlen) {
    int rc;
    /* Same keys, values and order as llama.cpp's save_as_llama_model(). */
    if ((rc = ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) < 0 ||
        (rc = ctn_gguf_writer_set_str(w, "general.architecture", "llama")) < 0 ||
        (rc = ctn_gguf_writer_set_str(w, "general.name", "llama")) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", UNK_ID)) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", BOS_ID)) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", EOS_ID)) < 0 ||
        /* LLAMA_TOKEN_NULL (-1) stored as a uint32, as llama.cpp does; "seperator" sic. */
        (rc = ctn_gguf_writer_set_u32(w, "tokenizer.ggml.seperator_token_id", UINT32_MAX)) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", UINT32_MAX)) < 0 ||
        /*
         * llama.cpp writes its own n_ctx parameter here (128 by default, not settable from its
         * command line), not the checkpoint's seq_len; the model was trained at seq_len, so
         * that is what we write.
         */
        (rc = ctn_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)c->seq_len)) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)c->dim)) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)c->hidden)) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads)) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "llama.attention.head_count_kv",
                                      (uint32_t)c->n_kv_heads)) < 0 ||
        (rc = ctn_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)c->n_layers)) < 0 ||
        /*
         * llama.cpp writes min(64, head_size) (its n_rotmax default); llama2.c rotates the
         * whole head, so we write head_size. The two agree for every head_size up to 64.
         */
        (rc = ctn_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_size)) <
            0 ||
        (rc = ctn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) < 0) {
        return werr(w, rc, err, errlen);
    }
    return 0;
}

static int add_tensor(ctn_gguf_writer *w, const char *name, int64_t ne0, int64_t ne1,
                      const uint8_t *data, char *err, size_t errlen) {
    int64_t ne[2] = {ne0, ne1};
    int rc = ctn_gguf_writer_add_tensor(w, name, CTN_TYPE_F32, ne1 > 0 ? 2 : 1, ne, data);
    return rc < 0 ? werr(w, rc, err, errlen) : 0;
}

/* Tensors in llama.cpp's order; layer l of array f starts at off[f] + l * per-layer bytes. */
static int add_tensors(ctn_gguf_writer *w, const config *c, const uint8_t *p, char *err,
                       size_t errlen) {
    int64_t D = c->dim, H = c->hidden, KV = c->kv_dim;
    int rc;
    if ((rc = add_tensor(w, "token_embd.weight", D, c->vocab, p + c->off[F_TOKEN_EMBEDDING], err,
                         errlen)) < 0 ||
        (rc = add_tensor(w, "output_norm.weight", D, 0, p + c->off[F_RMS_FINAL], err, errlen)) <
            0 ||
        (rc = add_tensor(w, "output.weight", D, c->vocab,
                         p + c->off[c->shared ? F_TOKEN_EMBEDDING : F_WCLS], err, errlen)) < 0) {
        return rc;
    }
    static const struct {
        const char *suffix;
        int field;
        int rows; /* 0: dim, 1: kv_dim, 2: hidden, -1: a vector of dim */
        int cols; /* 0: dim, 2: hidden */
    } L[] = {
        {"attn_q", F_WQ, 0, 0},          {"attn_k", F_WK, 1, 0},
        {"attn_v", F_WV, 1, 0},          {"attn_output", F_WO, 0, 0},
        {"attn_norm", F_RMS_ATT, -1, 0}, {"ffn_gate", F_W1, 2, 0},
        {"ffn_down", F_W2, 0, 2},        {"ffn_up", F_W3, 2, 0},
        {"ffn_norm", F_RMS_FFN, -1, 0},
    };
    for (int64_t l = 0; l < c->n_layers; l++) {
        for (size_t k = 0; k < sizeof L / sizeof L[0]; k++) {
            int64_t cols = L[k].cols == 2 ? H : D;
            int64_t rows = L[k].rows == 1 ? KV : L[k].rows == 2 ? H : L[k].rows == 0 ? D : 0;
            int64_t per_layer = cols * (rows > 0 ? rows : 1) * 4;
            char name[64];
            snprintf(name, sizeof name, "blk.%" PRId64 ".%s.weight", l, L[k].suffix);
            rc = add_tensor(w, name, cols, rows, p + c->off[L[k].field] + (uint64_t)(l * per_layer),
                            err, errlen);
            if (rc < 0) return rc;
        }
    }
    return 0;
}

int ctn_llama2c_to_gguf(ctn_gguf_writer *w, const void *model, size_t model_size,
                        const char *model_name, const void *tok, size_t tok_size,
                        const char *tok_name, char *err, size_t errlen) {
    if (w == NULL || (model == NULL && model_size > 0) || (tok == NULL && tok_size > 0)) {
        ctn__errf(err, errlen, "ctn_llama2c_to_gguf: bad arguments");
        return CTN_EINVAL;
    }
    if (model_name == NULL) model_name = "checkpoint";
    if (tok_name == NULL) tok_name = "tokenizer";
    config c;
    int rc = parse_checkpoint(&c, model, model_size, model_name, err, errlen);
    if (rc < 0) return rc;
    if ((rc = add_tokenizer(w, tok, tok_size, c.vocab, tok_name, err, errlen)) < 0) return rc;
    if ((rc = add_metadata(w, &c, err, errlen)) < 0) return rc;
    return add_tensors(w, &c, model, err, errlen);
}

/* ---- files --------------------------------------------------------------------------- */

typedef struct {
    void *p;
    size_t n;
} mapping;

static int map_file(mapping *m, const char *path, char *err, size_t errlen) {
    return ctn__map_file(path, &m->p, &m->n, NULL, err, errlen);
}

static void unmap_file(mapping *m) {
    ctn__unmap_file(m->p, m->n);
}

int ctn_llama2c_convert(const char *model_path, const char *tok_path, const char *out_path,
                        char *err, size_t errlen) {
    if (model_path == NULL || tok_path == NULL || out_path == NULL) return CTN_EINVAL;
    mapping m, t = {0};
    int rc = map_file(&m, model_path, err, errlen);
    if (rc < 0) return rc;
    if ((rc = map_file(&t, tok_path, err, errlen)) < 0) {
        unmap_file(&m);
        return rc;
    }
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    if (w == NULL) {
        ctn__errf(err, errlen, "%s: out of memory", out_path);
        rc = CTN_ENOMEM;
    } else {
        rc = ctn_llama2c_to_gguf(w, m.p, m.n, model_path, t.p, t.n, tok_path, err, errlen);
        if (rc == 0) rc = ctn_gguf_writer_write(w, out_path, err, errlen);
        ctn_gguf_writer_free(w);
    }
    unmap_file(&t);
    unmap_file(&m);
    return rc;
}
