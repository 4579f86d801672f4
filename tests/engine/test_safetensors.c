/*
 * Tests for the safetensors reader and writer: round trips through a file and through
 * memory, a file written byte by byte (unaligned data included), exact F16/BF16 conversion,
 * one test per check the reader makes on hostile input (each asserting the code and that the
 * message names the tensor and the field), every truncation of a valid file, and allocation
 * failure at every step of open and of the writer.
 */
#include "alloc.h"
#include "error.h"
#include "safetensors.h"
#include "test.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char err[1024];

/* ---- helpers ----------------------------------------------------------------------- */

static void wr_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/*
 * A file image: the 8-byte length of the header, the header (json_len bytes, with every '
 * turned into " so that tests can write JSON without a wall of backslashes), then data_len
 * bytes of data (zeros when data is NULL). The caller frees it.
 */
static uint8_t *make_file(const char *json, size_t json_len, const void *data, size_t data_len,
                          size_t *size) {
    *size = 8 + json_len + data_len;
    uint8_t *img = calloc(1, *size);
    wr_u64(img, json_len);
    for (size_t i = 0; i < json_len; i++)
        img[8 + i] = json[i] == '\'' ? '"' : (uint8_t)json[i];
    if (data != NULL) memcpy(img + 8 + json_len, data, data_len);
    return img;
}

/* The buffer behind the object opened last by open_img (it borrows the buffer). */
static uint8_t *img_copy;

/*
 * Opens a heap copy of exactly size bytes placed at an odd address, so ASan sees any
 * overread and no read can lean on the alignment of the buffer.
 */
static int open_img(ctn_st **f, const uint8_t *img, size_t size) {
    img_copy = malloc(size + 1);
    memcpy(img_copy + 1, img, size);
    err[0] = '\0';
    *f = (ctn_st *)(uintptr_t)1; /* open must set it on every path */
    return ctn_st_open_memory(f, img_copy + 1, size, "t.safetensors", err, sizeof err);
}

static void close_img(ctn_st *f) {
    ctn_st_free(f);
    free(img_copy);
    img_copy = NULL;
}

#define JSON_FILE(json, data, data_len, size)                                                      \
    make_file(json, sizeof(json) - 1, data, data_len, size)

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char path[256];
    if (tmpdir[0] == '\0') {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/ctn_test_st_XXXXXX");
        if (mkdtemp(tmpdir) == NULL) abort();
    }
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- dtypes ------------------------------------------------------------------------ */

TEST(dtype_table) {
    static const struct {
        ctn_st_dtype d;
        const char *name;
        size_t size;
    } want[] = {
        {CTN_ST_BOOL, "BOOL", 1},       {CTN_ST_U8, "U8", 1},           {CTN_ST_I8, "I8", 1},
        {CTN_ST_F8_E4M3, "F8_E4M3", 1}, {CTN_ST_F8_E5M2, "F8_E5M2", 1}, {CTN_ST_I16, "I16", 2},
        {CTN_ST_U16, "U16", 2},         {CTN_ST_F16, "F16", 2},         {CTN_ST_BF16, "BF16", 2},
        {CTN_ST_I32, "I32", 4},         {CTN_ST_U32, "U32", 4},         {CTN_ST_F32, "F32", 4},
        {CTN_ST_I64, "I64", 8},         {CTN_ST_U64, "U64", 8},         {CTN_ST_F64, "F64", 8},
    };
    CHECK_EQ_INT(sizeof want / sizeof want[0], CTN_ST_N_DTYPES);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_STR(ctn_st_dtype_name(want[i].d), want[i].name);
        CHECK_EQ_INT(ctn_st_dtype_size(want[i].d), want[i].size);
    }
    CHECK_STR(ctn_st_dtype_name(CTN_ST_N_DTYPES), "?");
    CHECK_STR(ctn_st_dtype_name((ctn_st_dtype)-1), "?");
    CHECK_EQ_INT(ctn_st_dtype_size(CTN_ST_N_DTYPES), 0);
}

/* ---- round trips ------------------------------------------------------------------- */

static const float RT_F32[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-20f, -65504.0f};
static const uint16_t RT_F16[4] = {0x3C00, 0xC000, 0x0001, 0x7BFF}; /* 1, -2, 2^-24, 65504 */
static const uint16_t RT_BF16[3] = {0x3F80, 0xC040, 0x4049};        /* 1, -3, 3.140625 */
static const int64_t RT_I64[2] = {INT64_MIN, 1234567890123LL};
static const float RT_SCALAR = 42.5f;

/* The writer used by the round-trip tests: every dtype the engine reads, a scalar, an empty
 * tensor between two others, and metadata with a replaced value. */
static ctn_st_writer *rt_writer(void) {
    ctn_st_writer *w = ctn_st_writer_new();
    int64_t s23[] = {2, 3}, s4[] = {4}, s3[] = {3}, s2[] = {2}, s05[] = {0, 5};
    CHECK_EQ_INT(ctn_st_writer_add(w, "w.f32", CTN_ST_F32, 2, s23, RT_F32), 0);
    CHECK_EQ_INT(ctn_st_writer_add(w, "w.f16", CTN_ST_F16, 1, s4, RT_F16), 0);
    CHECK_EQ_INT(ctn_st_writer_add(w, "w.empty", CTN_ST_F32, 2, s05, NULL), 0);
    CHECK_EQ_INT(ctn_st_writer_add(w, "w.bf16", CTN_ST_BF16, 1, s3, RT_BF16), 0);
    CHECK_EQ_INT(ctn_st_writer_add(w, "w.i64", CTN_ST_I64, 1, s2, RT_I64), 0);
    CHECK_EQ_INT(ctn_st_writer_add(w, "w.scalar", CTN_ST_F32, 0, NULL, &RT_SCALAR), 0);
    CHECK_EQ_INT(ctn_st_writer_set_metadata(w, "format", "np"), 0);
    CHECK_EQ_INT(ctn_st_writer_set_metadata(w, "note", "with \"quotes\" and \\ and \n"), 0);
    CHECK_EQ_INT(ctn_st_writer_set_metadata(w, "format", "pt"), 0); /* replaces */
    CHECK_EQ_INT(ctn_st_writer_set_metadata(w, "empty", ""), 0);
    return w;
}

static void check_rt(const ctn_st *f) {
    CHECK_EQ_INT(ctn_st_n_tensors(f), 6);
    /* Offset order is the order added; the empty tensor sits between two others. */
    const char *order[] = {"w.f32", "w.f16", "w.empty", "w.bf16", "w.i64", "w.scalar"};
    for (int i = 0; i < 6; i++) {
        const ctn_st_tensor *t = ctn_st_tensor_at(f, i);
        CHECK(t != NULL);
        if (t == NULL) return;
        CHECK_STR(t->name, order[i]);
        CHECK(ctn_st_find(f, order[i]) == t);
    }
    CHECK(ctn_st_tensor_at(f, 6) == NULL);
    CHECK(ctn_st_tensor_at(f, -1) == NULL);
    CHECK(ctn_st_find(f, "w.none") == NULL);
    CHECK(ctn_st_find(f, "") == NULL);

    const ctn_st_tensor *t = ctn_st_find(f, "w.f32");
    CHECK_EQ_INT(t->dtype, CTN_ST_F32);
    CHECK_EQ_INT(t->n_dims, 2);
    CHECK_EQ_INT(t->shape[0], 2);
    CHECK_EQ_INT(t->shape[1], 3);
    CHECK_EQ_INT(t->nbytes, sizeof RT_F32);
    CHECK_EQ_INT(ctn_st_nelements(t), 6);
    CHECK(memcmp(t->data, RT_F32, sizeof RT_F32) == 0);
    float out[6];
    CHECK_EQ_INT(ctn_st_to_f32(t, out), 0);
    CHECK(memcmp(out, RT_F32, sizeof out) == 0);

    t = ctn_st_find(f, "w.f16");
    CHECK_EQ_INT(t->dtype, CTN_ST_F16);
    CHECK_EQ_INT(t->nbytes, 8);
    CHECK(memcmp(t->data, RT_F16, 8) == 0);
    CHECK_EQ_INT(ctn_st_to_f32(t, out), 0);
    CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == ldexpf(1.0f, -24) && out[3] == 65504.0f);

    t = ctn_st_find(f, "w.bf16");
    CHECK_EQ_INT(t->dtype, CTN_ST_BF16);
    CHECK(memcmp(t->data, RT_BF16, 6) == 0);
    CHECK_EQ_INT(ctn_st_to_f32(t, out), 0);
    CHECK(out[0] == 1.0f && out[1] == -3.0f && out[2] == 3.140625f);

    t = ctn_st_find(f, "w.i64");
    CHECK_EQ_INT(t->dtype, CTN_ST_I64);
    CHECK_EQ_INT(t->nbytes, 16);
    CHECK(memcmp(t->data, RT_I64, 16) == 0);
    CHECK_EQ_INT(ctn_st_to_f32(t, out), CTN_ENOTSUP);

    t = ctn_st_find(f, "w.empty");
    CHECK_EQ_INT(t->n_dims, 2);
    CHECK_EQ_INT(t->shape[0], 0);
    CHECK_EQ_INT(t->shape[1], 5);
    CHECK_EQ_INT(t->nbytes, 0);
    CHECK_EQ_INT(ctn_st_nelements(t), 0);
    CHECK_EQ_INT(ctn_st_to_f32(t, out), 0);

    t = ctn_st_find(f, "w.scalar");
    CHECK_EQ_INT(t->n_dims, 0);
    CHECK_EQ_INT(ctn_st_nelements(t), 1);
    CHECK_EQ_INT(t->nbytes, 4);
    out[0] = 0;
    CHECK_EQ_INT(ctn_st_to_f32(t, out), 0);
    CHECK(out[0] == 42.5f);

    CHECK_STR(ctn_st_metadata(f, "format"), "pt");
    CHECK_STR(ctn_st_metadata(f, "note"), "with \"quotes\" and \\ and \n");
    CHECK_STR(ctn_st_metadata(f, "empty"), "");
    CHECK(ctn_st_metadata(f, "none") == NULL);
    CHECK_EQ_INT(ctn_st_n_metadata(f), 3);
    CHECK_STR(ctn_st_metadata_key(f, 0), "empty"); /* keys in strcmp order */
    CHECK_STR(ctn_st_metadata_key(f, 1), "format");
    CHECK_STR(ctn_st_metadata_key(f, 2), "note");
    CHECK(ctn_st_metadata_key(f, 3) == NULL);
}

TEST(roundtrip_file) {
    ctn_st_writer *w = rt_writer();
    const char *path = tmp_path("rt.safetensors");
    CHECK_EQ_INT(ctn_st_writer_write(w, path), 0);
    ctn_st_writer_free(w);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(!file_exists(tmp));

    /* The header is padded with spaces so that the data starts at a multiple of 8. */
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    if (fp == NULL) return;
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    CHECK_EQ_INT((8 + hlen) % 8, 0);
    CHECK(hlen < n);
    CHECK_EQ_INT(buf[8], '{');
    CHECK_EQ_INT(n, 8 + hlen + sizeof RT_F32 + 8 + 6 + 16 + 4);

    ctn_st *f = NULL;
    int rc = ctn_st_open(&f, path, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0) {
        printf("  %s\n", err);
        return;
    }
    check_rt(f);
    ctn_st_free(f);
    remove(path);
}

TEST(roundtrip_memory) {
    ctn_st_writer *w = rt_writer();
    void *mem = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_st_writer_write_memory(w, &mem, &size), 0);
    /* The file and the memory image are the same bytes. */
    const char *path = tmp_path("rt2.safetensors");
    CHECK_EQ_INT(ctn_st_writer_write(w, path), 0);
    ctn_st_writer_free(w);
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    uint8_t *buf = malloc(size + 16);
    size_t n = fp ? fread(buf, 1, size + 16, fp) : 0;
    if (fp) fclose(fp);
    CHECK_EQ_INT(n, size);
    CHECK(n == size && memcmp(buf, mem, size) == 0);
    free(buf);
    remove(path);

    ctn_st *f = NULL;
    int rc = open_img(&f, mem, size);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) check_rt(f);
    close_img(f);
    free(mem);
}

TEST(writer_overwrites_and_empty) {
    const char *path = tmp_path("over.safetensors");
    ctn_st_writer *w = rt_writer();
    CHECK_EQ_INT(ctn_st_writer_write(w, path), 0);
    ctn_st_writer_free(w);
    /* An empty writer gives "{}" padded to 8 bytes, and replaces the earlier file. */
    w = ctn_st_writer_new();
    CHECK_EQ_INT(ctn_st_writer_write(w, path), 0);
    ctn_st_writer_free(w);
    ctn_st *f = NULL;
    CHECK_EQ_INT(ctn_st_open(&f, path, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_st_n_tensors(f), 0);
    CHECK_EQ_INT(ctn_st_n_metadata(f), 0);
    CHECK(ctn_st_find(f, "w.f32") == NULL);
    CHECK(ctn_st_metadata(f, "format") == NULL);
    ctn_st_free(f);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 16);
    remove(path);
}

/* Hundreds of tensors (an adapter's worth), found by name through the index. */
TEST(find_many) {
    ctn_st_writer *w = ctn_st_writer_new();
    char name[64];
    int64_t s1[] = {1};
    for (int i = 0; i < 500; i++) {
        /* Added in an order unlike strcmp order. */
        snprintf(name, sizeof name, "layers.%d.lora_%c.weight", (i * 7919) % 500, "AB"[i & 1]);
        float v = (float)i;
        CHECK_EQ_INT(ctn_st_writer_add(w, name, CTN_ST_F32, 1, s1, &v), 0);
    }
    void *mem = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_st_writer_write_memory(w, &mem, &size), 0);
    ctn_st_writer_free(w);
    ctn_st *f = NULL;
    CHECK_EQ_INT(open_img(&f, mem, size), 0);
    CHECK_EQ_INT(ctn_st_n_tensors(f), 500);
    for (int i = 0; i < 500 && f != NULL; i++) {
        snprintf(name, sizeof name, "layers.%d.lora_%c.weight", (i * 7919) % 500, "AB"[i & 1]);
        const ctn_st_tensor *t = ctn_st_find(f, name);
        CHECK(t != NULL && t == ctn_st_tensor_at(f, i));
        float v = -1;
        if (t != NULL) ctn_st_to_f32(t, &v);
        CHECK(v == (float)i);
    }
    CHECK(f == NULL || ctn_st_find(f, "layers.0.lora_C.weight") == NULL);
    close_img(f);
    free(mem);
}

/* ---- a file written by hand -------------------------------------------------------- */

/*
 * Tensors listed out of offset order, a U8 tensor of 3 bytes first so that the F32 tensor
 * after it starts at an odd offset, a zero-byte tensor at the very end, unknown fields that
 * are ignored, whitespace in and after the JSON, and metadata.
 */
TEST(hand_written) {
    static const char json[] =
        "{ 'b': {'dtype': 'F32', 'shape': [2], 'data_offsets': [3, 11], 'extra': [1]},\n"
        "  '__metadata__': {'format': 'pt', 'k': 'v'},\n"
        "  'a': {'shape': [3], 'dtype': 'U8', 'data_offsets': [0, 3]},\n"
        "  'z': {'dtype': 'BF16', 'shape': [0], 'data_offsets': [11, 11]}\t}\r\n   ";
    uint8_t data[11] = {7, 8, 9};
    float fv[2] = {1.5f, -0.125f};
    memcpy(data + 3, fv, 8); /* the test assumes a little-endian host, as the engine does */
    size_t size;
    uint8_t *img = JSON_FILE(json, data, sizeof data, &size);
    ctn_st *f = NULL;
    int rc = open_img(&f, img, size);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0) {
        printf("  %s\n", err);
        close_img(f);
        free(img);
        return;
    }
    CHECK_EQ_INT(ctn_st_n_tensors(f), 3);
    CHECK_STR(ctn_st_tensor_at(f, 0)->name, "a");
    CHECK_STR(ctn_st_tensor_at(f, 1)->name, "b");
    CHECK_STR(ctn_st_tensor_at(f, 2)->name, "z");
    const ctn_st_tensor *a = ctn_st_find(f, "a"), *b = ctn_st_find(f, "b"),
                        *z = ctn_st_find(f, "z");
    CHECK_EQ_INT(a->dtype, CTN_ST_U8);
    CHECK_EQ_INT(a->nbytes, 3);
    CHECK(memcmp(a->data, "\x07\x08\x09", 3) == 0);
    const uint8_t *data0 = img_copy + 1 + 8 + sizeof json - 1;
    CHECK(a->data == data0);
    CHECK(b->data == data0 + 3);
    CHECK(z->data == data0 + 11);
    CHECK_EQ_INT(z->nbytes, 0);
    CHECK_EQ_INT(z->dtype, CTN_ST_BF16);
    float out[2] = {0, 0};
    CHECK_EQ_INT(ctn_st_to_f32(b, out), 0);
    CHECK(out[0] == 1.5f && out[1] == -0.125f);
    CHECK_EQ_INT(ctn_st_to_f32(a, out), CTN_ENOTSUP);
    CHECK_STR(ctn_st_metadata(f, "format"), "pt");
    CHECK_STR(ctn_st_metadata(f, "k"), "v");
    close_img(f);
    free(img);
}

/* Exact F16 and BF16 values, read from odd offsets. */
TEST(to_f32_exact) {
    static const char json[] = "{'h': {'dtype': 'F16', 'shape': [8], 'data_offsets': [1, 17]},"
                               "'p': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]},"
                               "'g': {'dtype': 'BF16', 'shape': [2, 3], 'data_offsets': [17, 29]}}";
    static const uint16_t h[8] = {0x3C00, 0xC000, 0x3555, 0x0001, 0x7C00, 0x8000, 0x0400, 0xFBFF};
    static const float hv[8] = {1.0f,     -2.0f, 0.333251953125f, 5.9604644775390625e-8f,
                                INFINITY, -0.0f, 6.103515625e-5f, -65504.0f};
    static const uint16_t g[6] = {0x3F80, 0xC040, 0x4049, 0x0001, 0xFF80, 0x7F7F};
    float gv[6] = {1.0f, -3.0f, 3.140625f, ldexpf(1.0f, -133), -INFINITY, 0};
    uint32_t maxbits = 0x7F7F0000;
    memcpy(&gv[5], &maxbits, 4);
    uint8_t data[29] = {0xAA};
    for (int i = 0; i < 8; i++) {
        data[1 + 2 * i] = (uint8_t)h[i];
        data[2 + 2 * i] = (uint8_t)(h[i] >> 8);
    }
    for (int i = 0; i < 6; i++) {
        data[17 + 2 * i] = (uint8_t)g[i];
        data[18 + 2 * i] = (uint8_t)(g[i] >> 8);
    }
    size_t size;
    uint8_t *img = JSON_FILE(json, data, sizeof data, &size);
    ctn_st *f = NULL;
    int rc = open_img(&f, img, size);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        float out[8];
        CHECK_EQ_INT(ctn_st_to_f32(ctn_st_find(f, "h"), out), 0);
        for (int i = 0; i < 8; i++) {
            CHECK(memcmp(&out[i], &hv[i], 4) == 0); /* bit-exact: -0 stays -0 */
        }
        CHECK_EQ_INT(ctn_st_nelements(ctn_st_find(f, "g")), 6);
        CHECK_EQ_INT(ctn_st_to_f32(ctn_st_find(f, "g"), out), 0);
        for (int i = 0; i < 6; i++)
            CHECK(memcmp(&out[i], &gv[i], 4) == 0);
        CHECK_EQ_INT(ctn_st_to_f32(ctn_st_find(f, "p"), out), CTN_ENOTSUP);
    } else {
        printf("  %s\n", err);
    }
    close_img(f);
    free(img);
}

TEST(accepts_edge_cases) {
    /* An empty object; metadata alone; 0-d and empty tensors at the start; integers written
     * with an exponent or a zero fraction are the same numbers to JSON. */
    static const char *ok[] = {
        "{}",
        "{'__metadata__': {}}",
        ("{'e': {'dtype': 'I8', 'shape': [0], 'data_offsets': [0, 0]},"
         " 's': {'dtype': 'F32', 'shape': [], 'data_offsets': [0, 4]}}"),
        "{'s': {'dtype': 'F32', 'shape': [1e0, 4.0], 'data_offsets': [-0, 1.6E+1]}}",
        "{'u': {'dtype': 'U8', 'shape': [4], 'data_offsets': [0, 4]}}  \n\t\r",
        "{'\\u00e9t\\u00e9 \\\"x\\\"': {'dtype': 'U8', 'shape': [4], 'data_offsets': [0, 4]}}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t size;
        uint8_t data[16] = {0};
        size_t dlen = i == 0 || i == 1 ? 0 : i == 3 ? 16 : 4;
        uint8_t *img = make_file(ok[i], strlen(ok[i]), data, dlen, &size);
        ctn_st *f = NULL;
        int rc = open_img(&f, img, size);
        if (rc != 0) printf("  case %zu: %s\n", i, err);
        CHECK_EQ_INT(rc, 0);
        if (i == 5) CHECK(ctn_st_find(f, "\xc3\xa9t\xc3\xa9 \"x\"") != NULL);
        close_img(f);
        free(img);
    }
}

/* ---- hostile files: one test per check --------------------------------------------- */

/* Opens json + data_len zero bytes; it must fail with code and a message holding needles. */
static void refuse(const char *json, size_t json_len, size_t data_len, int code, const char *n1,
                   const char *n2) {
    size_t size;
    uint8_t *img = make_file(json, json_len, NULL, data_len, &size);
    ctn_st *f = NULL;
    int rc = open_img(&f, img, size);
    CHECK_EQ_INT(rc, code);
    CHECK(f == NULL);
    CHECK_CONTAINS(err, "t.safetensors");
    CHECK_CONTAINS(err, n1);
    if (n2 != NULL) CHECK_CONTAINS(err, n2);
    close_img(rc == 0 ? f : NULL);
    free(img);
}

#define REFUSE(json, data_len, n1, n2) refuse(json, sizeof(json) - 1, data_len, CTN_EFORMAT, n1, n2)
#define HOSTILE(name, json, data_len, n1, n2)                                                      \
    TEST(name) {                                                                                   \
        REFUSE(json, data_len, n1, n2);                                                            \
    }

TEST(refuses_short_file) {
    uint8_t img[8] = {2, 0, 0, 0, 0, 0, 0, 0};
    for (size_t n = 0; n < 8; n++) {
        ctn_st *f = NULL;
        int rc = open_img(&f, img, n);
        CHECK_EQ_INT(rc, CTN_EFORMAT);
        CHECK(f == NULL);
        CHECK_CONTAINS(err, "t.safetensors");
        CHECK_CONTAINS(err, "header length");
        CHECK_CONTAINS(err, "shorter than the 8-byte");
        close_img(NULL);
    }
}

TEST(refuses_zero_header_length) {
    uint8_t img[16] = {0};
    ctn_st *f = NULL;
    CHECK_EQ_INT(open_img(&f, img, sizeof img), CTN_EFORMAT);
    CHECK_CONTAINS(err, "t.safetensors");
    CHECK_CONTAINS(err, "header length: 0");
    close_img(NULL);
}

TEST(refuses_header_past_end) {
    size_t size;
    uint8_t *img = JSON_FILE("{}", NULL, 0, &size);
    wr_u64(img, 3); /* one byte more than the file holds */
    ctn_st *f = NULL;
    CHECK_EQ_INT(open_img(&f, img, size), CTN_EFORMAT);
    CHECK_CONTAINS(err, "header length: 3 bytes but only 2");
    close_img(NULL);
    wr_u64(img, UINT64_MAX); /* must not overflow any sum */
    CHECK_EQ_INT(open_img(&f, img, size), CTN_EFORMAT);
    CHECK_CONTAINS(err, "header length");
    close_img(NULL);
    free(img);
}

TEST(refuses_header_over_100_mib) {
    size_t size;
    uint8_t *img = JSON_FILE("{}", NULL, 0, &size);
    wr_u64(img, (100u << 20) + 1);
    ctn_st *f = NULL;
    CHECK_EQ_INT(open_img(&f, img, size), CTN_EFORMAT);
    CHECK_CONTAINS(err, "header length");
    CHECK_CONTAINS(err, "100 MiB");
    close_img(NULL);
    free(img);
}

HOSTILE(refuses_bad_json, "{'a': {'dtype': 'F32',", 0, "header", "not valid JSON")
HOSTILE(refuses_json_array, "[1, 2]", 0, "header", "an array, not an object")
HOSTILE(refuses_json_string, "'abc'", 0, "header", "not an object")
HOSTILE(refuses_trailing_bytes, "{} x", 0, "header", "after the JSON object")
HOSTILE(refuses_trailing_nul, "{}  \0", 0, "header", "byte 0x00")
HOSTILE(refuses_control_byte, "{'a':\x01{'dtype': 'U8', 'shape': [], 'data_offsets': [0, 1]}}", 1,
        "tensor 'a'", "control byte 0x01")
HOSTILE(refuses_leading_control_byte, "\x02{}", 0, "header", "control byte 0x02")
HOSTILE(refuses_entry_not_object, "{'w': 3}", 0, "tensor 'w'", "a number, not an object")
HOSTILE(refuses_missing_dtype, "{'w': {'shape': [1], 'data_offsets': [0, 1]}}", 1, "tensor 'w'",
        "dtype: missing")
HOSTILE(refuses_dtype_not_string, "{'w': {'dtype': 4, 'shape': [1], 'data_offsets': [0, 4]}}", 4,
        "tensor 'w'", "dtype: is a number")
HOSTILE(refuses_unknown_dtype, "{'w': {'dtype': 'F17', 'shape': [1], 'data_offsets': [0, 4]}}", 4,
        "tensor 'w'", "dtype: unknown dtype 'F17'")
HOSTILE(refuses_lowercase_dtype, "{'w': {'dtype': 'f32', 'shape': [1], 'data_offsets': [0, 4]}}", 4,
        "tensor 'w'", "unknown dtype 'f32'")
HOSTILE(refuses_duplicate_field,
        "{'w': {'dtype': 'U8', 'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]}}", 1,
        "tensor 'w'", "dtype: given twice")
HOSTILE(refuses_missing_shape, "{'w': {'dtype': 'U8', 'data_offsets': [0, 1]}}", 1, "tensor 'w'",
        "shape: missing")
HOSTILE(refuses_shape_not_array, "{'w': {'dtype': 'U8', 'shape': 1, 'data_offsets': [0, 1]}}", 1,
        "tensor 'w'", "shape: is a number, not an array")
HOSTILE(refuses_too_many_dims,
        "{'w': {'dtype': 'U8', 'shape': [1,1,1,1,1,1,1,1,1], 'data_offsets': [0, 1]}}", 1,
        "tensor 'w'", "shape: more than 8 dimensions")
HOSTILE(refuses_negative_dim, "{'w': {'dtype': 'U8', 'shape': [2, -1], 'data_offsets': [0, 0]}}", 0,
        "tensor 'w'", "shape: dimension 1 is not a non-negative integer")
HOSTILE(refuses_fractional_dim, "{'w': {'dtype': 'U8', 'shape': [1.5], 'data_offsets': [0, 1]}}", 1,
        "tensor 'w'", "shape: dimension 0")
HOSTILE(refuses_plus_sign_number, "{'w': {'dtype': 'U8', 'shape': [+1], 'data_offsets': [0, 1]}}",
        1, "header", "not valid JSON")
HOSTILE(refuses_leading_zero_number,
        "{'w': {'dtype': 'U8', 'shape': [01], 'data_offsets': [0, 1]}}", 1, "tensor 'w'",
        "malformed JSON number")
HOSTILE(refuses_bare_fraction_number,
        "{'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1.]}}", 1, "tensor 'w'",
        "malformed JSON number")
HOSTILE(refuses_leading_dot_number, "{'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': [.0, 1]}}",
        1, "header", "not valid JSON")
HOSTILE(refuses_string_dim, "{'w': {'dtype': 'U8', 'shape': ['1'], 'data_offsets': [0, 1]}}", 1,
        "tensor 'w'", "shape: dimension 0")
HOSTILE(refuses_dim_of_2_53,
        "{'w': {'dtype': 'U8', 'shape': [0, 9007199254740992], 'data_offsets': [0, 0]}}", 0,
        "tensor 'w'", "below 2^53")
HOSTILE(refuses_element_overflow,
        "{'w': {'dtype': 'U8', 'shape': [4503599627370496, 4503599627370496], "
        "'data_offsets': [0, 0]}}",
        0, "tensor 'w'", "shape: the element count overflows")
HOSTILE(refuses_byte_overflow,
        "{'w': {'dtype': 'F64', 'shape': [2147483648, 2147483648], 'data_offsets': [0, 0]}}", 0,
        "tensor 'w'", "shape: the byte count overflows")
HOSTILE(refuses_missing_offsets, "{'w': {'dtype': 'U8', 'shape': [1]}}", 1, "tensor 'w'",
        "data_offsets: missing")
HOSTILE(refuses_offsets_not_array, "{'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': {'a': 0}}}",
        1, "tensor 'w'", "data_offsets: is an object, not an array")
HOSTILE(refuses_one_offset, "{'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0]}}", 1,
        "tensor 'w'", "data_offsets: must hold exactly 2")
HOSTILE(refuses_three_offsets, "{'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1, 2]}}", 1,
        "tensor 'w'", "data_offsets: must hold exactly 2")
HOSTILE(refuses_negative_offset, "{'w': {'dtype': 'U8', 'shape': [0], 'data_offsets': [-1, -1]}}",
        0, "tensor 'w'", "data_offsets: begin and end must be non-negative integers")
HOSTILE(refuses_fractional_offset, "{'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1.5]}}",
        2, "tensor 'w'", "data_offsets: begin and end")
HOSTILE(refuses_begin_after_end, "{'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': [2, 1]}}", 2,
        "tensor 'w'", "data_offsets: begin 2 > end 1")
HOSTILE(refuses_end_past_data, "{'w': {'dtype': 'U8', 'shape': [4], 'data_offsets': [0, 4]}}", 3,
        "tensor 'w'", "data_offsets: end 4 is past the 3 bytes")
HOSTILE(refuses_size_mismatch, "{'w': {'dtype': 'F16', 'shape': [3], 'data_offsets': [0, 4]}}", 4,
        "tensor 'w'", "holds 4 bytes but F16 of 3 elements needs 6")
HOSTILE(refuses_scalar_size_mismatch,
        "{'w': {'dtype': 'F32', 'shape': [], 'data_offsets': [0, 0]}}", 0, "tensor 'w'",
        "a scalar F32")
HOSTILE(refuses_duplicate_tensor,
        "{'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]},"
        " 'w': {'dtype': 'U8', 'shape': [1], 'data_offsets': [1, 2]}}",
        2, "tensor 'w'", "name: given twice")
HOSTILE(refuses_empty_name, "{'': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]}}", 1,
        "tensor ''", "empty tensor name")
HOSTILE(refuses_escaped_nul_in_name,
        "{'ab\\u0000cd': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]}}", 1, "tensor 'ab'",
        "name: the name (member 0 of the header) holds a NUL character")
HOSTILE(refuses_raw_nul_in_name,
        "{'x': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]},"
        " 'ab\0cd': {'dtype': 'U8', 'shape': [1], 'data_offsets': [1, 2]}}",
        2, "tensor 'ab'", "(member 1 of the header) holds a NUL byte")
HOSTILE(refuses_nul_in_dtype,
        "{'w': {'dtype': 'U8\\u0000x', 'shape': [1], 'data_offsets': [0, 1]}}", 1, "tensor 'w'",
        "holds a NUL character")
HOSTILE(refuses_raw_control_in_name,
        "{'a\nb': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]}}", 1, "tensor 'a\\x0ab'",
        "holds a raw control character")
HOSTILE(refuses_bad_utf8_name, "{'a\xc3(': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]}}",
        1, "tensor 'a\\xc3('", "not UTF-8")
HOSTILE(refuses_overlong_utf8,
        "{'\xc0\xaf': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]}}", 1,
        "tensor '\\xc0\\xaf'", "not UTF-8")
HOSTILE(refuses_surrogate_utf8,
        "{'\xed\xa0\x80': {'dtype': 'U8', 'shape': [1], 'data_offsets': [0, 1]}}", 1, "tensor",
        "not UTF-8")
HOSTILE(refuses_metadata_not_object, "{'__metadata__': ['a']}", 0, "__metadata__",
        "an array, not an object")
HOSTILE(refuses_metadata_value_not_string, "{'__metadata__': {'k': 'v', 'n': 1}}", 0,
        "__metadata__", "key 'n' is a number, not a string")
HOSTILE(refuses_metadata_duplicate_key, "{'__metadata__': {'k': 'v', 'j': 'x', 'k': 'w'}}", 0,
        "__metadata__", "'k' given twice")
HOSTILE(refuses_metadata_twice, "{'__metadata__': {}, '__metadata__': {}}", 0, "__metadata__",
        "given twice")
HOSTILE(refuses_metadata_nul, "{'__metadata__': {'k': 'a\\u0000b'}}", 0, "__metadata__",
        "holds a NUL character")
HOSTILE(refuses_gap,
        "{'a': {'dtype': 'U8', 'shape': [2], 'data_offsets': [0, 2]},"
        " 'b': {'dtype': 'U8', 'shape': [2], 'data_offsets': [3, 5]}}",
        5, "tensor 'b'", "data_offsets: [3, 5] leaves bytes 2..3 of the data unused")
HOSTILE(refuses_gap_at_start, "{'b': {'dtype': 'U8', 'shape': [2], 'data_offsets': [1, 3]}}", 3,
        "tensor 'b'", "leaves bytes 0..1")
HOSTILE(refuses_overlap,
        "{'a': {'dtype': 'U8', 'shape': [3], 'data_offsets': [0, 3]},"
        " 'b': {'dtype': 'U8', 'shape': [2], 'data_offsets': [2, 4]}}",
        4, "tensor 'b'", "overlaps tensor 'a' ([0, 3])")
HOSTILE(refuses_same_range,
        "{'a': {'dtype': 'U8', 'shape': [2], 'data_offsets': [0, 2]},"
        " 'b': {'dtype': 'I16', 'shape': [1], 'data_offsets': [0, 2]}}",
        2, "tensor 'b'", "overlaps tensor 'a'")
HOSTILE(refuses_empty_tensor_inside_another,
        "{'a': {'dtype': 'U8', 'shape': [4], 'data_offsets': [0, 4]},"
        " 'z': {'dtype': 'U8', 'shape': [0], 'data_offsets': [2, 2]}}",
        4, "tensor 'z'", "overlaps tensor 'a'")
HOSTILE(refuses_unused_tail, "{'a': {'dtype': 'U8', 'shape': [2], 'data_offsets': [0, 2]}}", 5,
        "tensor 'a'", "3 unused at the end")
HOSTILE(refuses_data_without_tensors, "{'__metadata__': {'k': 'v'}}", 4, "data",
        "4 bytes of data but no tensors")

/* Every proper prefix of a valid file is refused, with a message, and never read past. */
TEST(refuses_every_truncation) {
    ctn_st_writer *w = ctn_st_writer_new();
    int64_t s[] = {3};
    uint16_t h[3] = {1, 2, 3};
    CHECK_EQ_INT(ctn_st_writer_set_metadata(w, "format", "pt"), 0);
    CHECK_EQ_INT(ctn_st_writer_add(w, "a", CTN_ST_F16, 1, s, h), 0);
    CHECK_EQ_INT(ctn_st_writer_add(w, "b", CTN_ST_BF16, 1, s, h), 0);
    void *mem = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_st_writer_write_memory(w, &mem, &size), 0);
    ctn_st_writer_free(w);
    ctn_st *f = NULL;
    CHECK_EQ_INT(open_img(&f, mem, size), 0);
    close_img(f);
    for (size_t n = 0; n < size; n++) {
        int rc = open_img(&f, mem, n);
        if (rc != CTN_EFORMAT) printf("  prefix %zu: rc %d\n", n, rc);
        CHECK_EQ_INT(rc, CTN_EFORMAT);
        CHECK(f == NULL);
        CHECK(strlen(err) > 0);
        close_img(NULL);
    }
    free(mem);
}

/* ---- files on disk ----------------------------------------------------------------- */

TEST(open_errors) {
    ctn_st *f = (ctn_st *)(uintptr_t)1;
    CHECK_EQ_INT(ctn_st_open(&f, tmp_path("does-not-exist"), err, sizeof err), CTN_ENOENT);
    CHECK(f == NULL);
    CHECK_CONTAINS(err, "does-not-exist");
    CHECK_EQ_INT(ctn_st_open(&f, tmpdir, err, sizeof err), CTN_EIO);
    CHECK_CONTAINS(err, "not a regular file");
    const char *path = tmp_path("empty.safetensors");
    FILE *fp = fopen(path, "wb");
    fclose(fp);
    CHECK_EQ_INT(ctn_st_open(&f, path, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, "empty.safetensors");
    CHECK_CONTAINS(err, "header length");
    remove(path);
    CHECK_EQ_INT(ctn_st_open(NULL, path, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_st_open_memory(&f, NULL, 4, "x", err, sizeof err), CTN_EINVAL);
}

/* ---- the writer's own checks ------------------------------------------------------- */

TEST(writer_refuses) {
    ctn_st_writer *w = ctn_st_writer_new();
    int64_t s[] = {2}, neg[] = {2, -1}, big[] = {0, INT64_C(1) << 53};
    float v[2] = {1, 2};
    CHECK_EQ_INT(ctn_st_writer_add(w, "x", CTN_ST_F32, 1, s, v), 0);
    CHECK_EQ_INT(ctn_st_writer_add(w, "x", CTN_ST_F32, 1, s, v), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "'x' already added");
    CHECK_EQ_INT(ctn_st_writer_add(w, "", CTN_ST_F32, 1, s, v), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "empty tensor name");
    CHECK_EQ_INT(ctn_st_writer_add(w, NULL, CTN_ST_F32, 1, s, v), CTN_EINVAL);
    CHECK_EQ_INT(ctn_st_writer_add(w, "__metadata__", CTN_ST_F32, 1, s, v), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "reserved");
    CHECK_EQ_INT(ctn_st_writer_add(w, "d", CTN_ST_N_DTYPES, 1, s, v), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "tensor 'd': unknown dtype");
    CHECK_EQ_INT(ctn_st_writer_add(w, "n", CTN_ST_F32, 2, neg, v), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "tensor 'n': dimension 1 is negative");
    CHECK_EQ_INT(ctn_st_writer_add(w, "b", CTN_ST_F32, 2, big, v), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "tensor 'b'");
    CHECK_EQ_INT(ctn_st_writer_add(w, "m", CTN_ST_F32, 9, s, v), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "n_dims 9");
    CHECK_EQ_INT(ctn_st_writer_add(w, "m", CTN_ST_F32, -1, s, v), CTN_EINVAL);
    CHECK_EQ_INT(ctn_st_writer_add(w, "p", CTN_ST_F32, 1, NULL, v), CTN_EINVAL);
    CHECK_EQ_INT(ctn_st_writer_add(w, "q", CTN_ST_F32, 1, s, NULL), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "tensor 'q': NULL data");
    CHECK_EQ_INT(ctn_st_writer_add(w, "bad\xff", CTN_ST_F32, 1, s, v), CTN_EINVAL);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "not UTF-8");
    CHECK_EQ_INT(ctn_st_writer_set_metadata(w, "k", NULL), CTN_EINVAL);
    CHECK_EQ_INT(ctn_st_writer_set_metadata(w, "k", "\xc0\x80"), CTN_EINVAL);
    CHECK_EQ_INT(ctn_st_writer_write(w, "/nonexistent-dir/x.safetensors"), CTN_EIO);
    CHECK_CONTAINS(ctn_st_writer_errmsg(w), "/nonexistent-dir/x.safetensors");
    /* The failed calls left the writer as it was: one tensor. */
    void *mem = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_st_writer_write_memory(w, &mem, &size), 0);
    ctn_st *f = NULL;
    CHECK_EQ_INT(open_img(&f, mem, size), 0);
    CHECK_EQ_INT(ctn_st_n_tensors(f), 1);
    close_img(f);
    free(mem);
    ctn_st_writer_free(w);
}

/* ---- allocation failure ------------------------------------------------------------ */

/* Every allocation of open and of the writer fails in turn: a clean CTN_ENOMEM, no leak. */
TEST(alloc_failure) {
    ctn_st_writer *w0 = rt_writer();
    void *mem = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_st_writer_write_memory(w0, &mem, &size), 0);
    ctn_st_writer_free(w0);
    int ok_at = -1;
    for (long k = 0; k < 1000 && ok_at < 0; k++) {
        ctn_st *f = NULL;
        ctn__alloc_fail_after = k;
        int rc = ctn_st_open_memory(&f, mem, size, "t.safetensors", err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc == 0) {
            ok_at = (int)k;
            check_rt(f);
        } else {
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK(f == NULL);
            CHECK_CONTAINS(err, "out of memory");
        }
        ctn_st_free(f);
    }
    CHECK(ok_at > 0);

    ok_at = -1;
    for (long k = 0; k < 1000 && ok_at < 0; k++) {
        ctn__alloc_fail_after = k;
        ctn_st_writer *w = ctn_st_writer_new();
        int rc = w == NULL ? CTN_ENOMEM : 0;
        int64_t s[] = {2};
        float v[2] = {1, 2};
        if (rc == 0) rc = ctn_st_writer_add(w, "a", CTN_ST_F32, 1, s, v);
        if (rc == 0) rc = ctn_st_writer_add(w, "b", CTN_ST_F32, 1, s, v);
        if (rc == 0) rc = ctn_st_writer_set_metadata(w, "k", "v");
        if (rc == 0) rc = ctn_st_writer_set_metadata(w, "k", "w");
        void *m2 = NULL;
        size_t n2 = 0;
        if (rc == 0) rc = ctn_st_writer_write_memory(w, &m2, &n2);
        ctn__alloc_fail_after = -1;
        if (rc == 0) {
            ok_at = (int)k;
            ctn_st *f = NULL;
            CHECK_EQ_INT(open_img(&f, m2, n2), 0);
            CHECK_EQ_INT(ctn_st_n_tensors(f), 2);
            CHECK_STR(ctn_st_metadata(f, "k"), "w");
            close_img(f);
        } else {
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            if (w != NULL) CHECK_CONTAINS(ctn_st_writer_errmsg(w), "out of memory");
        }
        free(m2);
        ctn_st_writer_free(w);
    }
    CHECK(ok_at > 0);
    free(mem);
}

int main(void) {
    RUN(dtype_table);
    RUN(roundtrip_file);
    RUN(roundtrip_memory);
    RUN(writer_overwrites_and_empty);
    RUN(find_many);
    RUN(hand_written);
    RUN(to_f32_exact);
    RUN(accepts_edge_cases);
    RUN(refuses_short_file);
    RUN(refuses_zero_header_length);
    RUN(refuses_header_past_end);
    RUN(refuses_header_over_100_mib);
    RUN(refuses_bad_json);
    RUN(refuses_json_array);
    RUN(refuses_json_string);
    RUN(refuses_trailing_bytes);
    RUN(refuses_trailing_nul);
    RUN(refuses_control_byte);
    RUN(refuses_leading_control_byte);
    RUN(refuses_entry_not_object);
    RUN(refuses_missing_dtype);
    RUN(refuses_dtype_not_string);
    RUN(refuses_unknown_dtype);
    RUN(refuses_lowercase_dtype);
    RUN(refuses_duplicate_field);
    RUN(refuses_missing_shape);
    RUN(refuses_shape_not_array);
    RUN(refuses_too_many_dims);
    RUN(refuses_negative_dim);
    RUN(refuses_fractional_dim);
    RUN(refuses_plus_sign_number);
    RUN(refuses_leading_zero_number);
    RUN(refuses_bare_fraction_number);
    RUN(refuses_leading_dot_number);
    RUN(refuses_string_dim);
    RUN(refuses_dim_of_2_53);
    RUN(refuses_element_overflow);
    RUN(refuses_byte_overflow);
    RUN(refuses_missing_offsets);
    RUN(refuses_offsets_not_array);
    RUN(refuses_one_offset);
    RUN(refuses_three_offsets);
    RUN(refuses_negative_offset);
    RUN(refuses_fractional_offset);
    RUN(refuses_begin_after_end);
    RUN(refuses_end_past_data);
    RUN(refuses_size_mismatch);
    RUN(refuses_scalar_size_mismatch);
    RUN(refuses_duplicate_tensor);
    RUN(refuses_empty_name);
    RUN(refuses_escaped_nul_in_name);
    RUN(refuses_raw_nul_in_name);
    RUN(refuses_nul_in_dtype);
    RUN(refuses_raw_control_in_name);
    RUN(refuses_bad_utf8_name);
    RUN(refuses_overlong_utf8);
    RUN(refuses_surrogate_utf8);
    RUN(refuses_metadata_not_object);
    RUN(refuses_metadata_value_not_string);
    RUN(refuses_metadata_duplicate_key);
    RUN(refuses_metadata_twice);
    RUN(refuses_metadata_nul);
    RUN(refuses_gap);
    RUN(refuses_gap_at_start);
    RUN(refuses_overlap);
    RUN(refuses_same_range);
    RUN(refuses_empty_tensor_inside_another);
    RUN(refuses_unused_tail);
    RUN(refuses_data_without_tensors);
    RUN(refuses_every_truncation);
    RUN(open_errors);
    RUN(writer_refuses);
    RUN(alloc_failure);
    if (tmpdir[0] != '\0') rmdir(tmpdir);
    return test_summary();
}
