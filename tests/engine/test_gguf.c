/*
 * Tests for the GGUF reader and writer: round trips of every value type, the real
 * stories260K model, and a table of hostile mutations of a small valid file, each of which
 * must fail with the right code and a message naming the field and the offset.
 */
#include "alloc.h"
#include "gguf.h"
#include "test.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[1024];

/* ---- helpers ----------------------------------------------------------------------- */

static void wr_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void wr_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static bool str_eq(ctn_gguf_str s, const char *c) {
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

/* The buffer behind the object opened last by open_copy (it borrows the buffer). */
static void *copy_buf;

/* Opens a private heap copy of exactly `size` bytes, so ASan sees any overread. */
static int open_copy(ctn_gguf **g, const void *data, size_t size) {
    copy_buf = malloc(size ? size : 1);
    memcpy(copy_buf, data, size);
    err[0] = '\0';
    return ctn_gguf_open_memory(g, copy_buf, size, "t.gguf", err, sizeof err);
}

static void close_copy(ctn_gguf *g) {
    ctn_gguf_free(g);
    free(copy_buf);
    copy_buf = NULL;
}

/* ---- the small valid file every hostile test mutates -------------------------------- */

static const float T0_DATA[4 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
static const float T1_DATA[8] = {0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f, 6.5f, 7.5f};

/*
 * Builds: general.alignment=32, a string, a string array, a nested array, a u32 array, two
 * keys of equal length (for the duplicate test), and tensors "t.a" [4,3] F32 and "t.b" [8]
 * F32. The last tensor is 32 bytes, so the file ends exactly at its data: every proper
 * prefix is a truncated file.
 */
static void *small_file(size_t *size) {
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_alignment(w, 32);
    ctn_gguf_writer_set_str(w, "general.architecture", "llama");
    const char *toks[] = {"<s>", "a", "bc"};
    ctn_gguf_writer_set_arr_str(w, "tok.list", toks, 3);
    uint32_t nums[] = {7, 8, 9};
    ctn_gguf_writer_set_arr(w, "num.list", CTN_GGUF_UINT32, nums, 3);
    int32_t in0[] = {1, 2}, in1[] = {3};
    ctn_gguf_value inner[2] = {
        {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_INT32, 2, in0}},
        {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_INT32, 1, in1}},
    };
    ctn_gguf_value outer = {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_ARRAY, 2, inner}};
    ctn_gguf_writer_set_value(w, "nest.list", &outer);
    ctn_gguf_writer_set_u32(w, "dup.aaa", 1);
    ctn_gguf_writer_set_u32(w, "dup.bbb", 2);
    int64_t ne0[] = {4, 3}, ne1[] = {8};
    ctn_gguf_writer_add_tensor(w, "t.a", CTN_TYPE_F32, 2, ne0, T0_DATA);
    ctn_gguf_writer_add_tensor(w, "t.b", CTN_TYPE_F32, 1, ne1, T1_DATA);
    void *mem = NULL;
    int rc = ctn_gguf_writer_write_memory(w, &mem, size);
    ctn_gguf_writer_free(w);
    return rc == 0 ? mem : NULL;
}

/* ---- tests ------------------------------------------------------------------------- */

TEST(type_table) {
    CHECK_STR(ctn_type_name(CTN_TYPE_F32), "F32");
    CHECK_STR(ctn_type_name(CTN_TYPE_Q4_K), "Q4_K");
    CHECK_STR(ctn_type_name(CTN_TYPE_MXFP4), "MXFP4");
    CHECK(ctn_type_name(4) == NULL);
    CHECK(ctn_type_name(31) == NULL);
    CHECK(ctn_type_name(-1) == NULL);
    CHECK(ctn_type_name(CTN_TYPE_COUNT) == NULL);
    struct {
        int type;
        int64_t block, bytes;
    } want[] = {
        {CTN_TYPE_F32, 1, 4},        {CTN_TYPE_F16, 1, 2},        {CTN_TYPE_BF16, 1, 2},
        {CTN_TYPE_Q4_0, 32, 18},     {CTN_TYPE_Q4_1, 32, 20},     {CTN_TYPE_Q5_0, 32, 22},
        {CTN_TYPE_Q5_1, 32, 24},     {CTN_TYPE_Q8_0, 32, 34},     {CTN_TYPE_Q8_1, 32, 36},
        {CTN_TYPE_Q2_K, 256, 84},    {CTN_TYPE_Q3_K, 256, 110},   {CTN_TYPE_Q4_K, 256, 144},
        {CTN_TYPE_Q5_K, 256, 176},   {CTN_TYPE_Q6_K, 256, 210},   {CTN_TYPE_Q8_K, 256, 292},
        {CTN_TYPE_IQ2_XXS, 256, 66}, {CTN_TYPE_IQ2_XS, 256, 74},  {CTN_TYPE_IQ3_XXS, 256, 98},
        {CTN_TYPE_IQ1_S, 256, 50},   {CTN_TYPE_IQ4_NL, 32, 18},   {CTN_TYPE_IQ3_S, 256, 110},
        {CTN_TYPE_IQ2_S, 256, 82},   {CTN_TYPE_IQ4_XS, 256, 136}, {CTN_TYPE_I8, 1, 1},
        {CTN_TYPE_I16, 1, 2},        {CTN_TYPE_I32, 1, 4},        {CTN_TYPE_I64, 1, 8},
        {CTN_TYPE_F64, 1, 8},        {CTN_TYPE_IQ1_M, 256, 56},   {CTN_TYPE_TQ1_0, 256, 54},
        {CTN_TYPE_TQ2_0, 256, 66},   {CTN_TYPE_MXFP4, 32, 17},    {CTN_TYPE_NVFP4, 64, 36},
        {CTN_TYPE_Q1_0, 128, 18},    {CTN_TYPE_Q2_0, 64, 18},
    };
    int n_known = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_EQ_INT(ctn_type_block_size(want[i].type), want[i].block);
        CHECK_EQ_INT(ctn_type_block_bytes(want[i].type), want[i].bytes);
        CHECK(ctn_type_name(want[i].type) != NULL);
    }
    for (int t = 0; t < CTN_TYPE_COUNT; t++)
        n_known += ctn_type_name(t) != NULL;
    CHECK_EQ_INT(n_known, (long long)(sizeof want / sizeof want[0]));
    CHECK_EQ_INT(ctn_type_block_size(5), 0);
    CHECK_STR(ctn_gguf_type_name(CTN_GGUF_UINT32), "uint32");
    CHECK_STR(ctn_gguf_type_name(CTN_GGUF_FLOAT64), "float64");
    CHECK(ctn_gguf_type_name(CTN_GGUF_TYPE_COUNT) == NULL);
}

TEST(roundtrip_values) {
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    CHECK(w != NULL);
    CHECK_EQ_INT(ctn_gguf_writer_set_u8(w, "v.u8", 250), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_i8(w, "v.i8", -128), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_u16(w, "v.u16", 65535), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_i16(w, "v.i16", -32768), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_u32(w, "v.u32", 4000000000u), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_i32(w, "v.i32", INT32_MIN), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_u64(w, "v.u64", UINT64_MAX), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_i64(w, "v.i64", INT64_MIN), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_f32(w, "v.f32", 1.5f), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_f64(w, "v.f64", -2.25e300), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_bool(w, "v.bool", true), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_str(w, "v.str", "hello"), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_strn(w, "v.nul", "a\0b", 3), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_str(w, "v.empty", ""), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_u32(w, "v.replaced", 1), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_u32(w, "v.replaced", 2), 0);

    uint8_t a_u8[] = {0, 255};
    int8_t a_i8[] = {-1, 127};
    uint16_t a_u16[] = {1, 65535};
    int16_t a_i16[] = {-300, 300};
    uint32_t a_u32[] = {0, 0xdeadbeef};
    int32_t a_i32[] = {-5, 5, INT32_MAX};
    uint64_t a_u64[] = {UINT64_MAX};
    int64_t a_i64[] = {INT64_MIN, -1};
    float a_f32[] = {0.25f, -8.0f};
    double a_f64[] = {3.5, -1e-300};
    bool a_bool[] = {true, false, true};
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.u8", CTN_GGUF_UINT8, a_u8, 2), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.i8", CTN_GGUF_INT8, a_i8, 2), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.u16", CTN_GGUF_UINT16, a_u16, 2), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.i16", CTN_GGUF_INT16, a_i16, 2), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.u32", CTN_GGUF_UINT32, a_u32, 2), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.i32", CTN_GGUF_INT32, a_i32, 3), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.u64", CTN_GGUF_UINT64, a_u64, 1), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.i64", CTN_GGUF_INT64, a_i64, 2), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.f32", CTN_GGUF_FLOAT32, a_f32, 2), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.f64", CTN_GGUF_FLOAT64, a_f64, 2), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.bool", CTN_GGUF_BOOL, a_bool, 3), 0);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "a.empty", CTN_GGUF_UINT8, NULL, 0), 0);
    const char *strs[] = {"x", "", "yz"};
    CHECK_EQ_INT(ctn_gguf_writer_set_arr_str(w, "a.str", strs, 3), 0);

    /* [[["p"], []], [["q", "r"]]]: arrays of arrays of arrays of strings, depth 3. */
    ctn_gguf_str s_p[] = {{"p", 1}}, s_qr[] = {{"q", 1}, {"r", 1}};
    ctn_gguf_value lvl2a[] = {
        {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_STRING, 1, s_p}},
        {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_STRING, 0, NULL}},
    };
    ctn_gguf_value lvl2b[] = {{.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_STRING, 2, s_qr}}};
    ctn_gguf_value lvl1[] = {
        {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_ARRAY, 2, lvl2a}},
        {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_ARRAY, 1, lvl2b}},
    };
    ctn_gguf_value nested = {.type = CTN_GGUF_ARRAY, .v.arr = {CTN_GGUF_ARRAY, 2, lvl1}};
    CHECK_EQ_INT(ctn_gguf_writer_set_value(w, "a.nested", &nested), 0);

    void *mem = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(w, &mem, &size), 0);
    ctn_gguf_writer_free(w);

    ctn_gguf *g = NULL;
    CHECK_EQ_INT(ctn_gguf_open_memory(&g, mem, size, "rt.gguf", err, sizeof err), 0);
    if (g == NULL) {
        printf("  %s\n", err);
        free(mem);
        return;
    }
    CHECK_EQ_INT(ctn_gguf_version(g), 3);
    CHECK_EQ_INT(ctn_gguf_alignment(g), 32);
    CHECK_EQ_INT(ctn_gguf_n_kv(g), 29);
    CHECK_EQ_INT(ctn_gguf_n_tensors(g), 0);
    CHECK(str_eq(ctn_gguf_key(g, 0), "v.u8"));

    int64_t i;
    double f;
    bool b;
    const char *s;
    size_t n;
    CHECK(ctn_gguf_get_int(g, "v.u8", &i) == 0 && i == 250);
    CHECK(ctn_gguf_get_int(g, "v.i8", &i) == 0 && i == -128);
    CHECK(ctn_gguf_get_int(g, "v.u16", &i) == 0 && i == 65535);
    CHECK(ctn_gguf_get_int(g, "v.i16", &i) == 0 && i == -32768);
    CHECK(ctn_gguf_get_int(g, "v.u32", &i) == 0 && i == 4000000000LL);
    CHECK(ctn_gguf_get_int(g, "v.i32", &i) == 0 && i == INT32_MIN);
    CHECK_EQ_INT(ctn_gguf_get_int(g, "v.u64", &i), CTN_ERANGE);
    CHECK_EQ_INT(ctn_gguf_get(g, "v.u64")->v.u64 == UINT64_MAX, 1);
    CHECK(ctn_gguf_get_int(g, "v.i64", &i) == 0 && i == INT64_MIN);
    CHECK(ctn_gguf_get_float(g, "v.f32", &f) == 0 && f == 1.5);
    CHECK(ctn_gguf_get_float(g, "v.f64", &f) == 0 && f == -2.25e300);
    CHECK(ctn_gguf_get_float(g, "v.i32", &f) == 0 && f == (double)INT32_MIN);
    CHECK(ctn_gguf_get_bool(g, "v.bool", &b) == 0 && b);
    CHECK(ctn_gguf_get_int(g, "v.bool", &i) == 0 && i == 1);
    CHECK(ctn_gguf_get_str(g, "v.str", &s, &n) == 0 && n == 5 && memcmp(s, "hello", 5) == 0);
    CHECK(ctn_gguf_get_str(g, "v.nul", &s, &n) == 0 && n == 3 && memcmp(s, "a\0b", 3) == 0);
    CHECK(ctn_gguf_get_str(g, "v.empty", &s, &n) == 0 && n == 0);
    CHECK(ctn_gguf_get_int(g, "v.replaced", &i) == 0 && i == 2);
    CHECK_EQ_INT(ctn_gguf_get_str(g, "v.u8", &s, &n), CTN_ETYPE);
    CHECK_EQ_INT(ctn_gguf_get_int(g, "v.str", &i), CTN_ETYPE);
    CHECK_EQ_INT(ctn_gguf_get_bool(g, "v.u8", &b), CTN_ETYPE);
    CHECK_EQ_INT(ctn_gguf_get_float(g, "v.str", &f), CTN_ETYPE);
    CHECK_EQ_INT(ctn_gguf_get_int(g, "missing", &i), CTN_ENOENT);
    CHECK_EQ_INT(ctn_gguf_find_key(g, "v.st"), -1);
    CHECK_EQ_INT(ctn_gguf_find_key(g, "v.strx"), -1);

    const ctn_gguf_value *a = NULL;
    CHECK(ctn_gguf_get_arr(g, "a.u8", &a) == 0 && a->v.arr.type == CTN_GGUF_UINT8);
    CHECK(ctn_gguf_arr_int(a, 1) == 255 && ctn_gguf_arr_int(a, 2) == 0);
    CHECK(ctn_gguf_get_arr(g, "a.i8", &a) == 0 && ctn_gguf_arr_int(a, 0) == -1);
    CHECK(ctn_gguf_get_arr(g, "a.u16", &a) == 0 && ctn_gguf_arr_int(a, 1) == 65535);
    CHECK(ctn_gguf_get_arr(g, "a.i16", &a) == 0 && ctn_gguf_arr_int(a, 0) == -300);
    CHECK(ctn_gguf_get_arr(g, "a.u32", &a) == 0 && ctn_gguf_arr_int(a, 1) == 0xdeadbeef);
    CHECK(ctn_gguf_get_arr(g, "a.i32", &a) == 0 && a->v.arr.n == 3 &&
          ctn_gguf_arr_int(a, 2) == INT32_MAX && ctn_gguf_arr_int(a, 0) == -5);
    CHECK(ctn_gguf_get_arr(g, "a.u64", &a) == 0 && ctn_gguf_arr_int(a, 0) == INT64_MAX);
    CHECK(ctn_gguf_get_arr(g, "a.i64", &a) == 0 && ctn_gguf_arr_int(a, 0) == INT64_MIN);
    CHECK(ctn_gguf_get_arr(g, "a.f32", &a) == 0 && ctn_gguf_arr_float(a, 1) == -8.0);
    CHECK(ctn_gguf_get_arr(g, "a.f64", &a) == 0 && ctn_gguf_arr_float(a, 1) == -1e-300);
    CHECK(ctn_gguf_get_arr(g, "a.bool", &a) == 0 && a->v.arr.n == 3 &&
          ctn_gguf_arr_int(a, 0) == 1 && ctn_gguf_arr_int(a, 1) == 0);
    CHECK(ctn_gguf_get_arr(g, "a.empty", &a) == 0 && a->v.arr.n == 0);
    CHECK(ctn_gguf_get_arr(g, "a.str", &a) == 0 && a->v.arr.n == 3);
    CHECK(str_eq(ctn_gguf_arr_str(a, 0), "x") && str_eq(ctn_gguf_arr_str(a, 1), ""));
    CHECK(str_eq(ctn_gguf_arr_str(a, 2), "yz") && ctn_gguf_arr_str(a, 3).len == 0);
    CHECK_EQ_INT(ctn_gguf_get_arr(g, "v.u8", &a), CTN_ETYPE);

    CHECK(ctn_gguf_get_arr(g, "a.nested", &a) == 0 && a->v.arr.type == CTN_GGUF_ARRAY);
    if (a != NULL && a->v.arr.type == CTN_GGUF_ARRAY && a->v.arr.n == 2) {
        const ctn_gguf_value *l1 = a->v.arr.data;
        CHECK(l1[0].v.arr.type == CTN_GGUF_ARRAY && l1[0].v.arr.n == 2);
        CHECK(l1[1].v.arr.type == CTN_GGUF_ARRAY && l1[1].v.arr.n == 1);
        const ctn_gguf_value *l2a = l1[0].v.arr.data, *l2b = l1[1].v.arr.data;
        CHECK(str_eq(ctn_gguf_arr_str(&l2a[0], 0), "p") && l2a[1].v.arr.n == 0);
        CHECK(str_eq(ctn_gguf_arr_str(&l2b[0], 1), "r"));
    } else {
        CHECK(0);
    }
    ctn_gguf_free(g);
    free(mem);
}

TEST(roundtrip_tensors) {
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    CHECK_EQ_INT(ctn_gguf_writer_set_alignment(w, 64), 0);
    float f[6] = {1, 2, 3, 4, 5, 6};
    uint8_t q8[2 * 34];
    for (size_t k = 0; k < sizeof q8; k++)
        q8[k] = (uint8_t)k;
    uint8_t q4k[144];
    memset(q4k, 0xab, sizeof q4k);
    int64_t ne_f[] = {3, 2}, ne_q8[] = {64}, ne_q4k[] = {256, 1, 1, 1}, ne_z[] = {0, 5};
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "f", CTN_TYPE_F32, 2, ne_f, f), 0);
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "q8", CTN_TYPE_Q8_0, 1, ne_q8, q8), 0);
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "q4k", CTN_TYPE_Q4_K, 4, ne_q4k, q4k), 0);
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "empty", CTN_TYPE_F16, 2, ne_z, NULL), 0);
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "zeros", CTN_TYPE_F32, 1, ne_f, NULL), 0);

    /* Writer refusals, each with the tensor named in the message. */
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "f", CTN_TYPE_F32, 2, ne_f, f), CTN_EINVAL);
    CHECK_CONTAINS(ctn_gguf_writer_errmsg(w), "'f'");
    int64_t ne_bad[] = {33};
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "bad", CTN_TYPE_Q8_0, 1, ne_bad, q8), CTN_EINVAL);
    CHECK_CONTAINS(ctn_gguf_writer_errmsg(w), "block size");
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "bad", (ctn_type)4, 1, ne_f, f), CTN_EINVAL);
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "bad", CTN_TYPE_F32, 5, ne_q4k, f), CTN_EINVAL);
    int64_t ne_neg[] = {-1};
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "bad", CTN_TYPE_F32, 1, ne_neg, f), CTN_EINVAL);
    int64_t ne_big[] = {INT64_MAX, 2};
    CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, "bad", CTN_TYPE_F32, 2, ne_big, f), CTN_EINVAL);
    CHECK_EQ_INT(ctn_gguf_writer_set_alignment(w, 48), CTN_EINVAL);
    CHECK_EQ_INT(ctn_gguf_writer_set_arr(w, "k", CTN_GGUF_STRING, f, 1), CTN_EINVAL);
    CHECK_EQ_INT(ctn_gguf_writer_set_u8(w, "", 1), CTN_EINVAL);

    void *mem = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(w, &mem, &size), 0);
    ctn_gguf_writer_free(w);

    ctn_gguf *g = NULL;
    CHECK_EQ_INT(ctn_gguf_open_memory(&g, mem, size, "rt.gguf", err, sizeof err), 0);
    if (g == NULL) {
        printf("  %s\n", err);
        free(mem);
        return;
    }
    CHECK_EQ_INT(ctn_gguf_alignment(g), 64);
    CHECK_EQ_INT(ctn_gguf_data_offset(g) % 64, 0);
    CHECK_EQ_INT(ctn_gguf_n_tensors(g), 5);
    for (int64_t k = 0; k < ctn_gguf_n_tensors(g); k++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, k);
        CHECK_EQ_INT(t->offset % 64, 0);
        CHECK_EQ_INT(((const uint8_t *)t->data - (const uint8_t *)mem) % 64, 0);
    }
    const ctn_gguf_tensor *t = ctn_gguf_find_tensor(g, "f");
    CHECK(t != NULL && t->type == CTN_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 3 &&
          t->ne[1] == 2 && t->ne[2] == 1 && t->nbytes == 24);
    CHECK(t != NULL && memcmp(t->data, f, sizeof f) == 0);
    t = ctn_gguf_find_tensor(g, "q8");
    CHECK(t != NULL && t->type == CTN_TYPE_Q8_0 && t->nbytes == 68 && memcmp(t->data, q8, 68) == 0);
    t = ctn_gguf_find_tensor(g, "q4k");
    CHECK(t != NULL && t->n_dims == 4 && t->nbytes == 144 && memcmp(t->data, q4k, 144) == 0);
    t = ctn_gguf_find_tensor(g, "empty");
    CHECK(t != NULL && t->nbytes == 0 && ctn_gguf_tensor_nelements(t) == 0);
    t = ctn_gguf_find_tensor(g, "zeros");
    /* added with ne_f but n_dims 1: shape [3] */
    CHECK(t != NULL && t->nbytes == 12 && ((const float *)t->data)[2] == 0.0f);
    CHECK(t != NULL && ctn_gguf_tensor_nelements(t) == 3);
    CHECK(ctn_gguf_find_tensor(g, "nope") == NULL);
    CHECK(ctn_gguf_find_tensor(g, "q") == NULL);
    ctn_gguf_free(g);
    free(mem);
}

/* A file copied key by key with set_value and tensor by tensor is byte-identical. */
TEST(copy_with_set_value) {
    size_t size;
    void *orig = small_file(&size);
    CHECK(orig != NULL);
    ctn_gguf *g = NULL;
    CHECK_EQ_INT(ctn_gguf_open_memory(&g, orig, size, "orig.gguf", err, sizeof err), 0);
    if (g == NULL) {
        free(orig);
        return;
    }
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    for (int64_t i = 0; i < ctn_gguf_n_kv(g); i++) {
        ctn_gguf_str k = ctn_gguf_key(g, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        CHECK_EQ_INT(ctn_gguf_writer_set_value(w, key, ctn_gguf_value_at(g, i)), 0);
    }
    for (int64_t i = 0; i < ctn_gguf_n_tensors(g); i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        CHECK_EQ_INT(ctn_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data), 0);
    }
    void *copy = NULL;
    size_t csize = 0;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(w, &copy, &csize), 0);
    CHECK_EQ_INT(csize, size);
    CHECK(copy != NULL && csize == size && memcmp(copy, orig, size) == 0);

    /* The same through a file on disk and ctn_gguf_open (mmap). */
    /* Per-process names: ctest may run the plain and the ASan build at the same time. */
    char path[64];
    snprintf(path, sizeof path, "/tmp/ctn_test_gguf_copy_%ld.gguf", (long)getpid());
    CHECK_EQ_INT(ctn_gguf_writer_write(w, path, err, sizeof err), 0);
    ctn_gguf *g2 = NULL;
    CHECK_EQ_INT(ctn_gguf_open(&g2, path, err, sizeof err), 0);
    if (g2 != NULL) {
        CHECK_STR(ctn_gguf_path(g2), path);
        CHECK_EQ_INT(ctn_gguf_file_size(g2), size);
        const ctn_gguf_tensor *t = ctn_gguf_find_tensor(g2, "t.b");
        CHECK(t != NULL && memcmp(t->data, T1_DATA, sizeof T1_DATA) == 0);
        ctn_gguf_free(g2);
    }
    remove(path);
    CHECK_EQ_INT(ctn_gguf_writer_write(w, "/nonexistent-dir/x.gguf", err, sizeof err), CTN_EIO);
    CHECK_CONTAINS(err, "/nonexistent-dir/x.gguf");
    ctn_gguf_writer_free(w);
    free(copy);
    ctn_gguf_free(g);
    free(orig);
}

/* GGUF v2 has v3's layout (v3 only added big-endian files), so the reader takes both. */
TEST(reads_version_2) {
    size_t size = 0;
    uint8_t *f = small_file(&size);
    CHECK(f != NULL);
    if (f == NULL) return;
    wr_u32(f + 4, 2);
    ctn_gguf *g = NULL;
    CHECK_EQ_INT(open_copy(&g, f, size), 0);
    if (g != NULL) {
        CHECK_EQ_INT(ctn_gguf_version(g), 2);
        const char *arch = NULL;
        size_t n = 0;
        CHECK(ctn_gguf_get_str(g, "general.architecture", &arch, &n) == 0 && n == 5 &&
              memcmp(arch, "llama", 5) == 0);
        const ctn_gguf_tensor *t = ctn_gguf_find_tensor(g, "t.b");
        CHECK(t != NULL && t->nbytes == sizeof T1_DATA &&
              memcmp(t->data, T1_DATA, sizeof T1_DATA) == 0);
    }
    close_copy(g);
    free(f);
}

TEST(open_errors) {
    ctn_gguf *g = (ctn_gguf *)1;
    CHECK_EQ_INT(ctn_gguf_open(&g, "/nonexistent/model.gguf", err, sizeof err), CTN_ENOENT);
    CHECK(g == NULL);
    CHECK_CONTAINS(err, "/nonexistent/model.gguf");
    CHECK_EQ_INT(ctn_gguf_open(&g, "/tmp", err, sizeof err), CTN_EIO);
    char path[64];
    snprintf(path, sizeof path, "/tmp/ctn_test_gguf_empty_%ld.gguf", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (f != NULL) fclose(f);
    CHECK_EQ_INT(ctn_gguf_open(&g, path, err, sizeof err), CTN_EFORMAT);
    CHECK_CONTAINS(err, path);
    CHECK_CONTAINS(err, "offset 0");
    remove(path);
}

static const char *shared_dir(void) {
    const char *s = getenv("CTN_SHARED");
    return s != NULL ? s : "../shared";
}

TEST(real_model_stories260k) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared_dir());
    ctn_gguf *g = NULL;
    int rc = ctn_gguf_open(&g, path, err, sizeof err);
    if (rc == CTN_ENOENT) SKIP("%s not found (set CTN_SHARED)", path);
    CHECK_EQ_INT(rc, 0);
    if (g == NULL) {
        printf("  %s\n", err);
        return;
    }
    const char *s;
    size_t n;
    int64_t i;
    CHECK(ctn_gguf_get_str(g, "general.architecture", &s, &n) == 0 && n == 5 &&
          memcmp(s, "llama", 5) == 0);
    CHECK(ctn_gguf_get_int(g, "llama.embedding_length", &i) == 0 && i == 64);
    CHECK(ctn_gguf_get_int(g, "llama.block_count", &i) == 0 && i == 5);
    const ctn_gguf_value *toks = NULL;
    CHECK(ctn_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks) == 0);
    CHECK(toks != NULL && toks->v.arr.type == CTN_GGUF_STRING && toks->v.arr.n == 512);
    const ctn_gguf_tensor *t = ctn_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t != NULL && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512);
    CHECK(t != NULL && (uintptr_t)t->data % ctn_gguf_alignment(g) == 0);
    CHECK(ctn_gguf_version(g) == 2 || ctn_gguf_version(g) == 3);
    CHECK(ctn_gguf_n_tensors(g) > 5);
    ctn_gguf_free(g);
}

/* Every proper prefix of a valid file fails cleanly, with an offset in the message. */
TEST(truncation_everywhere) {
    size_t size;
    uint8_t *file = small_file(&size);
    CHECK(file != NULL);
    if (file == NULL) return;
    ctn_gguf *g = NULL;
    CHECK_EQ_INT(open_copy(&g, file, size), 0);
    close_copy(g);
    int bad = 0;
    for (size_t len = 0; len < size; len++) {
        g = NULL;
        int rc = open_copy(&g, file, len);
        if (rc != CTN_EFORMAT || g != NULL || strstr(err, "offset") == NULL ||
            strstr(err, "t.gguf: ") != err) {
            if (bad++ < 5) printf("  prefix %zu: rc %d: %s\n", len, rc, err);
        }
        close_copy(g);
    }
    CHECK_EQ_INT(bad, 0);
    free(file);
}

/* Offsets inside the small file, found with the reader itself. */
typedef struct {
    size_t key_type[16]; /* offset of each key's value type */
    size_t tinfo[2];     /* offset of each tensor info */
} layout;

static layout small_layout(const uint8_t *file, size_t size) {
    layout l = {{0}, {0}};
    ctn_gguf *g = NULL;
    if (ctn_gguf_open_memory(&g, file, size, "t", err, sizeof err) != 0) return l;
    for (int64_t i = 0; i < ctn_gguf_n_kv(g) && i < 16; i++) {
        l.key_type[i] = (size_t)(ctn_gguf_key_offset(g, i) + 8 + ctn_gguf_key(g, i).len);
    }
    for (int64_t i = 0; i < 2; i++)
        l.tinfo[i] = (size_t)ctn_gguf_tensor_info_offset(g, i);
    ctn_gguf_free(g);
    return l;
}

enum { K_ALIGN, K_ARCH, K_TOK, K_NUM, K_NEST, K_DUPA, K_DUPB };

typedef struct {
    const char *name;
    int code;
    const char *needle1, *needle2;
} mutation;

/* Applies mutation m to the file; each case knows the layout of small_file. */
static void mutate(int m, uint8_t *f, const layout *l) {
    /* tensor info: name len (8) + name (3) + n_dims (4) + ne (8 each) + type (4) + offset */
    size_t t0 = l->tinfo[0], t1 = l->tinfo[1];
    size_t t0_ndims = t0 + 11, t0_ne0 = t0 + 15, t0_type = t0 + 31, t0_off = t0 + 35;
    size_t t1_type = t1 + 23, t1_off = t1 + 27;
    switch (m) {
    case 0: memcpy(f, "GGUX", 4); break;
    case 1: wr_u32(f + 4, 1); break;
    case 2: wr_u32(f + 4, 0); break;
    case 3: wr_u32(f + 4, 7); break;
    case 4: wr_u32(f + 4, 0x03000000); break; /* big-endian version 3 */
    case 5: wr_u64(f + 8, (uint64_t)1 << 63); break;
    case 6: wr_u64(f + 16, UINT64_MAX); break;
    case 7: wr_u64(f + 16, 8); break;                 /* one key more than present */
    case 8: wr_u64(f + 24, (uint64_t)1 << 63); break; /* first key's length */
    case 9: wr_u64(f + 24, 0); break;
    case 10: wr_u32(f + l->key_type[K_ARCH], 13); break;
    case 11: wr_u64(f + l->key_type[K_ARCH] + 4, 1u << 30); break; /* string length */
    case 12: wr_u32(f + l->key_type[K_TOK] + 4, 99); break;        /* array element type */
    case 13: wr_u64(f + l->key_type[K_TOK] + 8, (uint64_t)1 << 63); break;
    case 14: wr_u64(f + l->key_type[K_NUM] + 8, UINT64_MAX / 2); break;
    /* nest.list: type, element type, count, then the first inner array at +16 */
    case 15: wr_u64(f + l->key_type[K_NEST] + 20, UINT64_MAX); break; /* inner count */
    case 16: wr_u32(f + l->key_type[K_NEST] + 16, 42); break;         /* inner element type */
    case 17: memcpy(f + l->key_type[K_DUPB] - 3, "aaa", 3); break;
    case 18: wr_u32(f + l->key_type[K_ALIGN] + 4, 48); break;
    case 19: wr_u32(f + l->key_type[K_ALIGN] + 4, 0); break;
    case 20: wr_u32(f + l->key_type[K_ALIGN], CTN_GGUF_INT32); break;
    case 21: memcpy(f + t1 + 8, "t.a", 3); break;
    case 22: wr_u32(f + t0_ndims, 5); break;
    case 23: wr_u64(f + t0_ne0, (uint64_t)-4); break;
    case 24: /* 2^32 * 2^32 elements */
        wr_u64(f + t0_ne0, (uint64_t)1 << 32);
        wr_u64(f + t0_ne0 + 8, (uint64_t)1 << 32);
        break;
    case 25: /* 2^62 F32 elements: the count fits, the byte size does not */
        wr_u64(f + t0_ne0, (uint64_t)1 << 62);
        wr_u64(f + t0_ne0 + 8, 1);
        break;
    case 26: wr_u32(f + t0_type, 99); break;
    case 27: wr_u32(f + t0_type, 31); break;
    case 28: wr_u32(f + t0_type, CTN_TYPE_Q8_0); break; /* 4 is not a multiple of 32 */
    case 29: wr_u64(f + t1_off, 4096); break;
    case 30: wr_u64(f + t1_off, 33); break;
    case 31: wr_u64(f + t1_off, UINT64_MAX & ~(uint64_t)31); break;
    case 32: wr_u64(f + t1_off, 0); break;             /* overlaps t.a */
    case 33: wr_u64(f + t0_off, 32); break;            /* t.a now overlaps t.b at 64 */
    case 34: wr_u32(f + t1_type, CTN_TYPE_F64); break; /* t.b grows past the end */
    case 35: wr_u64(f + 8, 3); break;                  /* one tensor more than present */
    default: break;
    }
}

static const mutation MUTATIONS[] = {
    {"bad magic", CTN_EFORMAT, "header", "magic"},
    {"version 1", CTN_ENOTSUP, "header", "unsupported version 1"},
    {"version 0", CTN_EFORMAT, "header", "version 0"},
    {"version 7", CTN_ENOTSUP, "header", "unsupported version 7"},
    {"big endian", CTN_ENOTSUP, "header", "big-endian GGUF is not supported"},
    {"huge n_tensors", CTN_EFORMAT, "header", "n_tensors"},
    {"huge n_kv", CTN_EFORMAT, "header", "n_kv"},
    {"n_kv one too many", CTN_EFORMAT, "(at offset", "past end"},
    {"huge key length", CTN_EFORMAT, "key #0", "past end of file"},
    {"empty key", CTN_EFORMAT, "key #0", "empty key"},
    {"unknown value type", CTN_EFORMAT, "key 'general.architecture'", "unknown value type 13"},
    {"string past end", CTN_EFORMAT, "key 'general.architecture'", "past end of file"},
    {"unknown array element type", CTN_EFORMAT, "key 'tok.list'", "element type 99"},
    {"huge string array", CTN_EFORMAT, "key 'tok.list'", "past end of file"},
    {"huge number array", CTN_EFORMAT, "key 'num.list'", "past end of file"},
    {"huge inner array", CTN_EFORMAT, "key 'nest.list'", "past end of file"},
    {"unknown inner type", CTN_EFORMAT, "key 'nest.list'", "element type 42"},
    {"duplicate key", CTN_EFORMAT, "key 'dup.aaa'", "duplicate key"},
    {"alignment 48", CTN_EFORMAT, "key 'general.alignment'", "power of two"},
    {"alignment 0", CTN_EFORMAT, "key 'general.alignment'", "power of two"},
    {"alignment int32", CTN_EFORMAT, "key 'general.alignment'", "uint32"},
    {"duplicate tensor", CTN_EFORMAT, "tensor 't.a'", "duplicate tensor name"},
    {"n_dims 5", CTN_EFORMAT, "tensor 't.a'", "n_dims 5"},
    {"negative dim", CTN_EFORMAT, "tensor 't.a'", "negative"},
    {"element count overflow", CTN_EFORMAT, "tensor 't.a'", "INT64_MAX"},
    {"byte size overflow", CTN_EFORMAT, "tensor 't.a'", "overflows"},
    {"unknown tensor type", CTN_EFORMAT, "tensor 't.a'", "unknown tensor type 99"},
    {"removed tensor type", CTN_ENOTSUP, "tensor 't.a'", "Q4_0_4_4"},
    {"row not whole blocks", CTN_EFORMAT, "tensor 't.a'", "block size"},
    {"offset past end", CTN_EFORMAT, "tensor 't.b' (info at offset", "past end of file"},
    {"offset unaligned", CTN_EFORMAT, "tensor 't.b' (info at offset", "alignment"},
    {"offset near 2^64", CTN_EFORMAT, "tensor 't.b' (info at offset", "past end of file"},
    {"overlap", CTN_EFORMAT, "(info at offset", "overlaps tensor"},
    {"overlap forward", CTN_EFORMAT, "(info at offset", "overlaps tensor"},
    {"data grows past end", CTN_EFORMAT, "tensor 't.b' (info at offset", "past end of file"},
    {"n_tensors one too many", CTN_EFORMAT, "tensor ", "past end"},
};

TEST(hostile_mutations) {
    size_t size;
    uint8_t *file = small_file(&size);
    CHECK(file != NULL);
    if (file == NULL) return;
    layout l = small_layout(file, size);
    CHECK(l.tinfo[1] > l.tinfo[0] && l.key_type[K_DUPB] > 0);
    uint8_t *m = malloc(size);
    for (size_t k = 0; k < sizeof MUTATIONS / sizeof MUTATIONS[0]; k++) {
        const mutation *mu = &MUTATIONS[k];
        memcpy(m, file, size);
        mutate((int)k, m, &l);
        ctn_gguf *g = NULL;
        int rc = open_copy(&g, m, size);
        bool ok = rc == mu->code && g == NULL && strstr(err, mu->needle1) != NULL &&
                  strstr(err, mu->needle2) != NULL && strstr(err, "offset") != NULL &&
                  strncmp(err, "t.gguf: ", 8) == 0;
        if (!ok) {
            printf("  mutation '%s': rc %d (want %d): %s\n", mu->name, rc, mu->code, err);
            test_cur_failed = 1;
        }
        close_copy(g);
    }
    free(m);
    free(file);
}

/* Builds a file with one key holding `depth` nested arrays around an empty u8 array. */
static uint8_t *nested_file(int depth, size_t *size) {
    size_t cap = 64 + 12 * (size_t)depth;
    uint8_t *f = calloc(1, cap), *p = f;
    memcpy(p, "GGUF", 4);
    wr_u32(p + 4, 3);
    wr_u64(p + 8, 0);
    wr_u64(p + 16, 1);
    p += 24;
    wr_u64(p, 1);
    p[8] = 'k';
    wr_u32(p + 9, CTN_GGUF_ARRAY);
    p += 13;
    for (int d = 1; d < depth; d++) {
        wr_u32(p, CTN_GGUF_ARRAY);
        wr_u64(p + 4, 1);
        p += 12;
    }
    wr_u32(p, CTN_GGUF_UINT8);
    wr_u64(p + 4, 0);
    p += 12;
    *size = (size_t)(p - f);
    return f;
}

TEST(nesting_depth_cap) {
    size_t size;
    uint8_t *f = nested_file(CTN_GGUF_MAX_DEPTH, &size);
    ctn_gguf *g = NULL;
    CHECK_EQ_INT(open_copy(&g, f, size), 0);
    if (g != NULL) {
        const ctn_gguf_value *v = ctn_gguf_get(g, "k");
        int depth = 0;
        while (v != NULL && v->type == CTN_GGUF_ARRAY) {
            depth++;
            v = v->v.arr.type == CTN_GGUF_ARRAY && v->v.arr.n == 1 ? v->v.arr.data : NULL;
        }
        CHECK_EQ_INT(depth, CTN_GGUF_MAX_DEPTH);
    }
    close_copy(g);
    free(f);

    f = nested_file(CTN_GGUF_MAX_DEPTH + 1, &size);
    g = NULL;
    CHECK_EQ_INT(open_copy(&g, f, size), CTN_EFORMAT);
    CHECK_CONTAINS(err, "key 'k'");
    CHECK_CONTAINS(err, "nested deeper than 16");
    CHECK_CONTAINS(err, "offset");
    close_copy(g);
    free(f);

    /* The writer refuses to build what the reader would refuse. */
    ctn_gguf_value vals[CTN_GGUF_MAX_DEPTH + 1];
    for (int d = 0; d <= CTN_GGUF_MAX_DEPTH; d++) {
        vals[d].type = CTN_GGUF_ARRAY;
        vals[d].v.arr.type = d == CTN_GGUF_MAX_DEPTH ? CTN_GGUF_UINT8 : CTN_GGUF_ARRAY;
        vals[d].v.arr.n = d == CTN_GGUF_MAX_DEPTH ? 0 : 1;
        vals[d].v.arr.data = d == CTN_GGUF_MAX_DEPTH ? NULL : &vals[d + 1];
    }
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    CHECK_EQ_INT(ctn_gguf_writer_set_value(w, "deep", &vals[0]), CTN_ERANGE);
    CHECK_EQ_INT(ctn_gguf_writer_set_value(w, "ok", &vals[1]), 0);
    ctn_gguf_writer_free(w);
}

/* A 150k-token vocabulary is one table: opening it takes a handful of allocations. */
TEST(big_string_array_allocates_once) {
    enum { N = 150000 };
    const char **toks = malloc(N * sizeof *toks);
    char *pool = malloc((size_t)N * 16);
    for (int i = 0; i < N; i++) {
        snprintf(pool + 16 * i, 16, "t%d", i);
        toks[i] = pool + 16 * i;
    }
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    CHECK_EQ_INT(ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, N), 0);
    void *mem = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(w, &mem, &size), 0);
    ctn_gguf_writer_free(w);

    ctn_gguf *g = NULL;
    ctn__alloc_fail_after = 1000000;
    CHECK_EQ_INT(ctn_gguf_open_memory(&g, mem, size, "big.gguf", err, sizeof err), 0);
    long used = 1000000 - ctn__alloc_fail_after;
    ctn__alloc_fail_after = -1;
    CHECK(used <= 6);
    const ctn_gguf_value *a = NULL;
    CHECK(g != NULL && ctn_gguf_get_arr(g, "tokenizer.ggml.tokens", &a) == 0);
    CHECK(a != NULL && a->v.arr.n == N && str_eq(ctn_gguf_arr_str(a, 149999), "t149999"));
    ctn_gguf_free(g);
    free(mem);
    free(pool);
    free(toks);
}

/* Fail the N-th allocation for every N: each failure is clean (ENOMEM, no leak). */
TEST(allocation_failures) {
    size_t size;
    uint8_t *file = small_file(&size);
    CHECK(file != NULL);
    if (file == NULL) return;
    int n_fail = 0, done = 0;
    for (long n = 0; n < 1000 && !done; n++) {
        ctn_gguf *g = NULL;
        ctn__alloc_fail_after = n;
        int rc = ctn_gguf_open_memory(&g, file, size, "t.gguf", err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc == 0) {
            done = 1;
            CHECK(g != NULL && ctn_gguf_n_tensors(g) == 2);
            ctn_gguf_free(g);
        } else {
            n_fail++;
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK(g == NULL);
        }
    }
    CHECK(done && n_fail > 0);

    /* The writer: every set/add/write either works or returns ENOMEM and leaves the writer
     * usable and leak-free. */
    done = 0;
    for (long n = 0; n < 1000 && !done; n++) {
        ctn__alloc_fail_after = n;
        ctn_gguf_writer *w = ctn_gguf_writer_new();
        int rc = w == NULL ? CTN_ENOMEM : 0;
        const char *toks[] = {"a", "b"};
        int64_t ne[] = {8};
        if (rc == 0) rc = ctn_gguf_writer_set_str(w, "general.architecture", "llama");
        if (rc == 0) rc = ctn_gguf_writer_set_arr_str(w, "tok", toks, 2);
        if (rc == 0) rc = ctn_gguf_writer_add_tensor(w, "t.b", CTN_TYPE_F32, 1, ne, T1_DATA);
        void *mem = NULL;
        size_t msize = 0;
        if (rc == 0) rc = ctn_gguf_writer_write_memory(w, &mem, &msize);
        ctn__alloc_fail_after = -1;
        if (rc == 0)
            done = 1;
        else
            CHECK_EQ_INT(rc, CTN_ENOMEM);
        free(mem);
        ctn_gguf_writer_free(w);
    }
    CHECK(done);
    free(file);
}

int main(void) {
    RUN(type_table);
    RUN(roundtrip_values);
    RUN(roundtrip_tensors);
    RUN(copy_with_set_value);
    RUN(reads_version_2);
    RUN(open_errors);
    RUN(real_model_stories260k);
    RUN(truncation_everywhere);
    RUN(hostile_mutations);
    RUN(nesting_depth_cap);
    RUN(big_string_array_allocates_once);
    RUN(allocation_failures);
    return test_summary();
}
