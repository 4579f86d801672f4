/*
 * `catena quantize IN.gguf OUT.gguf TYPE`: rewrites a model with its weight matrices in
 * one type, as llama.cpp's `llama-quantize --pure` does without an importance matrix.
 *
 * Which tensors change (after llama-quant.cpp): only tensors with at least two non-trivial
 * dimensions whose name ends in "weight" and is not a norm, a MoE router, a position or
 * token-type embedding or an SSM convolution; everything else (norms, biases) is copied
 * unchanged. token_embd and output are quantized to TYPE like every other matrix, which
 * is what --pure does. A row length that TYPE's block does not divide falls back as in
 * llama.cpp: Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, and a 32-block type that still does
 * not fit to F16.
 *
 * Input tensors of any supported type are dequantized to F32 first; a tensor already of
 * the target type is copied byte for byte, as llama.cpp does. The whole output is held in
 * memory before it is written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "commands.h"
#include "error.h"
#include "gguf.h"
#include "quant.h"

/* The GGUF quantization format version llama.cpp writes (GGML_QNT_VERSION). */
#define QNT_VERSION 2

static const struct {
    int type;
    uint32_t ftype; /* llama_ftype written to general.file_type */
} TARGETS[] = {
    {CTN_TYPE_F32, 0},   /* LLAMA_FTYPE_ALL_F32 */
    {CTN_TYPE_F16, 1},   /* MOSTLY_F16 */
    {CTN_TYPE_Q4_0, 2},  /* MOSTLY_Q4_0 */
    {CTN_TYPE_Q4_1, 3},  /* MOSTLY_Q4_1 */
    {CTN_TYPE_Q8_0, 7},  /* MOSTLY_Q8_0 */
    {CTN_TYPE_Q5_0, 8},  /* MOSTLY_Q5_0 */
    {CTN_TYPE_Q5_1, 9},  /* MOSTLY_Q5_1 */
    {CTN_TYPE_Q4_K, 15}, /* MOSTLY_Q4_K_M: what llama.cpp reports for an all-Q4_K file */
    {CTN_TYPE_Q5_K, 17}, /* MOSTLY_Q5_K_M: likewise for Q5_K */
    {CTN_TYPE_Q6_K, 18}, /* MOSTLY_Q6_K */
    {CTN_TYPE_BF16, 32}, /* MOSTLY_BF16 */
};
#define N_TARGETS (sizeof TARGETS / sizeof TARGETS[0])

static int usage(FILE *f) {
    fprintf(f, "usage: catena quantize IN.gguf OUT.gguf TYPE\n"
               "  Writes IN with its weight matrices in TYPE, one of Q8_0, Q5_0, Q5_1, Q4_0,\n"
               "  Q4_1, Q4_K, Q5_K, Q6_K, F16, BF16, F32. Norms and biases are kept; matrices\n"
               "  whose rows the type's block does not divide fall back to Q5_0, Q5_1, Q8_0\n"
               "  or F16.\n");
    return f == stderr ? 2 : 0;
}

static bool has_suffix(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static bool contains(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, needle, k) == 0) return true;
    return false;
}

/* The number of dimensions as ggml counts them: trailing dimensions of 1 do not count. */
static int n_dims(const ctn_gguf_tensor *t) {
    int n = 1;
    for (int i = 1; i < CTN_GGUF_MAX_DIMS; i++)
        if (t->ne[i] > 1) n = i + 1;
    return n;
}

/* Whether llama.cpp's quantizer would change this tensor's type at all. */
static bool should_quantize(const ctn_gguf_tensor *t) {
    const char *s = t->name.ptr;
    size_t n = (size_t)t->name.len;
    static const char *const KEEP[] = {"_norm.weight",     "ffn_gate_inp.weight", "ssm_conv1d",
                                       "position_embd",    "token_types",         "pos_embd",
                                       "attn_rel_b.weight"};
    if (n_dims(t) < 2 || t->ne[0] <= 0 || !has_suffix(s, n, "weight")) return false;
    for (size_t i = 0; i < sizeof KEEP / sizeof KEEP[0]; i++)
        if (contains(s, n, KEEP[i])) return false;
    return true;
}

/* The type a matrix of row length ncols gets when TYPE is asked for (llama.cpp's rules). */
static int fallback_type(int target, int64_t ncols, bool *fell_back) {
    *fell_back = false;
    if (ncols % ctn_type_block_size(target) == 0) return target;
    *fell_back = true;
    int t = target;
    if (target == CTN_TYPE_Q4_K)
        t = CTN_TYPE_Q5_0;
    else if (target == CTN_TYPE_Q5_K)
        t = CTN_TYPE_Q5_1;
    else if (target == CTN_TYPE_Q6_K)
        t = CTN_TYPE_Q8_0;
    return ncols % ctn_type_block_size(t) == 0 ? t : CTN_TYPE_F16;
}

/* Converts a tensor to `type` into a new buffer (*out, caller frees). */
static int convert(const ctn_gguf_tensor *t, int type, void **out, char *err, size_t errlen) {
    const int64_t ncols = t->ne[0], nrows = ctn_gguf_tensor_nelements(t) / t->ne[0];
    const size_t row_out = (size_t)(ncols / ctn_type_block_size(type) * ctn_type_block_bytes(type));
    const size_t row_in =
        (size_t)(ncols / ctn_type_block_size(t->type) * ctn_type_block_bytes(t->type));
    if (!ctn_quant_supported(t->type)) {
        ctn__errf(err, errlen, "tensor %.*s: cannot read type %s", (int)t->name.len, t->name.ptr,
                  ctn_type_name(t->type));
        return CTN_ENOTSUP;
    }
    uint8_t *dst = malloc(row_out * (size_t)nrows + 1);
    float *row = malloc((size_t)ncols * sizeof *row);
    if (dst == NULL || row == NULL) {
        free(dst), free(row);
        ctn__errf(err, errlen, "out of memory converting %.*s", (int)t->name.len, t->name.ptr);
        return CTN_ENOMEM;
    }
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *src = (const uint8_t *)t->data + (size_t)r * row_in;
        int rc = ctn_dequantize_row(t->type, src, row, ncols);
        if (rc == 0) rc = ctn_quantize_row(type, row, dst + (size_t)r * row_out, ncols);
        if (rc < 0) {
            free(dst), free(row);
            ctn__errf(err, errlen, "tensor %.*s: %s", (int)t->name.len, t->name.ptr,
                      ctn_strerror(rc));
            return rc;
        }
    }
    free(row);
    *out = dst;
    return 0;
}

static int parse_type(const char *s, uint32_t *ftype) {
    for (size_t i = 0; i < N_TARGETS; i++) {
        if (strcasecmp(s, ctn_type_name(TARGETS[i].type)) == 0) {
            *ftype = TARGETS[i].ftype;
            return TARGETS[i].type;
        }
    }
    return -1;
}

int ctn_cmd_quantize(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return usage(stdout);
        if (argv[i][0] == '-' || n_pos == 3) {
            fprintf(stderr, "catena quantize: unexpected argument '%s'\n", argv[i]);
            return usage(stderr);
        }
        pos[n_pos++] = argv[i];
    }
    if (n_pos != 3) return usage(stderr);
    uint32_t ftype = 0;
    const int target = parse_type(pos[2], &ftype);
    if (target < 0) {
        fprintf(stderr, "catena quantize: unknown type '%s'\n", pos[2]);
        return usage(stderr);
    }

    char err[1024];
    ctn_gguf *g = NULL;
    if (ctn_gguf_open(&g, pos[0], err, sizeof err) < 0) {
        fprintf(stderr, "catena quantize: %s\n", err);
        return 1;
    }
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    const int64_t nt = ctn_gguf_n_tensors(g);
    void **bufs = calloc((size_t)nt + 1, sizeof *bufs);
    int status = 1, rc = 0;
    if (w == NULL || bufs == NULL) {
        fprintf(stderr, "catena quantize: out of memory\n");
        goto done;
    }
    for (int64_t i = 0; i < ctn_gguf_n_kv(g) && rc == 0; i++) {
        ctn_gguf_str k = ctn_gguf_key(g, i);
        char key[512];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        rc = ctn_gguf_writer_set_value(w, key, ctn_gguf_value_at(g, i));
    }
    if (rc == 0) rc = ctn_gguf_writer_set_u32(w, "general.quantization_version", QNT_VERSION);
    if (rc == 0) rc = ctn_gguf_writer_set_u32(w, "general.file_type", ftype);
    if (rc < 0) {
        fprintf(stderr, "catena quantize: %s\n", ctn_gguf_writer_errmsg(w));
        goto done;
    }

    int n_quant = 0, n_kept = 0, n_fallback = 0;
    int as_type[64] = {0};      /* fallbacks by the type they were written as */
    long long widths[8] = {0};  /* distinct row lengths that fell back (the first 8) */
    int n_widths = 0;
    for (int64_t i = 0; i < nt; i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
        int type = t->type;
        bool fell_back = false;
        if (should_quantize(t)) type = fallback_type(target, t->ne[0], &fell_back);
        const void *data = t->data;
        if (type != (int)t->type) {
            if (convert(t, type, &bufs[i], err, sizeof err) < 0) {
                fprintf(stderr, "catena quantize: %s\n", err);
                goto done;
            }
            data = bufs[i];
        }
        if (fell_back) {
            n_fallback++;
            if (type >= 0 && type < 64) as_type[type]++;
            bool seen = false;
            for (int j = 0; j < n_widths; j++)
                seen = seen || widths[j] == (long long)t->ne[0];
            if (!seen && n_widths < 8) widths[n_widths++] = (long long)t->ne[0];
            printf("%-32.*s %-5s -> %-5s (rows of %lld do not fit %s blocks)\n", (int)t->name.len,
                   t->name.ptr, ctn_type_name(t->type), ctn_type_name(type), (long long)t->ne[0],
                   ctn_type_name(target));
        }
        if (should_quantize(t))
            n_quant++;
        else
            n_kept++;
        char name[512];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (ctn_gguf_writer_add_tensor(w, name, (ctn_type)type, t->n_dims, t->ne, data) < 0) {
            fprintf(stderr, "catena quantize: %s\n", ctn_gguf_writer_errmsg(w));
            goto done;
        }
    }
    if (ctn_gguf_writer_write(w, pos[1], err, sizeof err) < 0) {
        fprintf(stderr, "catena quantize: %s\n", err);
        goto done;
    }
    /* What happened, in numbers that add up: how many matrices became the type asked for,
     * and for the others why not and what they became instead. */
    if (n_fallback == 0) {
        printf("wrote %s: %d matrices as %s, %d tensors kept as they were\n", pos[1], n_quant,
               ctn_type_name(target), n_kept);
    } else {
        char rows[128] = "", as[256] = "";
        for (int j = 0, o = 0; j < n_widths && o < (int)sizeof rows; j++)
            o += snprintf(rows + o, sizeof rows - (size_t)o, "%s%lld", j ? ", " : "", widths[j]);
        for (int ty = 0, o = 0, k = 0; ty < 64 && o < (int)sizeof as; ty++)
            if (as_type[ty] > 0)
                o += snprintf(as + o, sizeof as - (size_t)o, "%s%s (%d)", k++ ? ", " : "",
                              ctn_type_name(ty), as_type[ty]);
        printf("wrote %s: %d of %d matrices as %s; the other %d have rows (%s values) that are "
               "not a multiple of %s's %lld, written as %s instead; %d tensors kept as they "
               "were\n",
               pos[1], n_quant - n_fallback, n_quant, ctn_type_name(target), n_fallback, rows,
               ctn_type_name(target), (long long)ctn_type_block_size(target), as, n_kept);
    }
    status = 0;
done:
    if (bufs != NULL)
        for (int64_t i = 0; i < nt; i++)
            free(bufs[i]);
    free(bufs);
    ctn_gguf_writer_free(w);
    ctn_gguf_free(g);
    return status;
}
