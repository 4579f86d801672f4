/*
 * GGUF v2/v3 reader and writer.
 *
 *     char err[512];
 *     ctn_gguf *g;
 *     if (ctn_gguf_open(&g, "model.gguf", err, sizeof err) < 0) { puts(err); return; }
 *     const char *arch; size_t n;
 *     if (ctn_gguf_get_str(g, "general.architecture", &arch, &n) == 0)
 *         printf("%.*s\n", (int)n, arch);
 *     const ctn_gguf_tensor *t = ctn_gguf_find_tensor(g, "token_embd.weight");
 *     ctn_gguf_free(g);
 *
 * The file is mmapped read-only. Strings and tensor data point into the mapping and stay
 * valid until ctn_gguf_free(); nothing is copied that need not be. Strings in the file are
 * NOT NUL-terminated: every string is (pointer, length). Every field is validated on open
 * (sizes, offsets, types, UTF-8-free byte strings, duplicate keys/tensors, dimension
 * overflow, data past end of file); a hostile file gives CTN_EFORMAT and a message naming
 * the file, the field or tensor, and the byte offset.
 */
#ifndef CTN_GGUF_H
#define CTN_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "types.h"

#define CTN_GGUF_MAGIC             "GGUF"
#define CTN_GGUF_DEFAULT_ALIGNMENT 32
#define CTN_GGUF_MAX_DIMS          4
/*
 * Deepest nesting of arrays the reader accepts (an array of arrays is depth 2). Real files
 * use depth 1; the cap keeps the recursive parser's stack bounded on hostile input.
 */
#define CTN_GGUF_MAX_DEPTH 16

/* Metadata value types, numbered as in the GGUF specification. */
typedef enum {
    CTN_GGUF_UINT8 = 0,
    CTN_GGUF_INT8 = 1,
    CTN_GGUF_UINT16 = 2,
    CTN_GGUF_INT16 = 3,
    CTN_GGUF_UINT32 = 4,
    CTN_GGUF_INT32 = 5,
    CTN_GGUF_FLOAT32 = 6,
    CTN_GGUF_BOOL = 7,
    CTN_GGUF_STRING = 8,
    CTN_GGUF_ARRAY = 9,
    CTN_GGUF_UINT64 = 10,
    CTN_GGUF_INT64 = 11,
    CTN_GGUF_FLOAT64 = 12,
    CTN_GGUF_TYPE_COUNT
} ctn_gguf_type;

/* Tensor element types (ctn_type, CTN_TYPE_*) and their block sizes: kernels/types.h. */

/* A byte string inside the mapping (not NUL-terminated). */
typedef struct {
    const char *ptr;
    uint64_t len;
} ctn_gguf_str;

/*
 * One metadata value. For arrays of numbers or bools, arr.data points at the packed
 * little-endian elements inside the mapping (possibly unaligned: read them with
 * ctn_gguf_arr_int / ctn_gguf_arr_float). For arrays of strings arr.data is a
 * `const ctn_gguf_str *` table, for arrays of arrays a `const ctn_gguf_value *` table,
 * both owned by the ctn_gguf object.
 */
typedef struct ctn_gguf_value {
    ctn_gguf_type type;
    union {
        uint64_t u64; /* UINT8/16/32/64 */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32/64 */
        bool b;       /* BOOL */
        ctn_gguf_str str;
        struct {
            ctn_gguf_type type; /* element type */
            uint64_t n;         /* element count */
            const void *data;
        } arr;
    } v;
} ctn_gguf_value;

typedef struct {
    ctn_gguf_str name;
    uint32_t n_dims; /* 0..4; 0 (a single element) is accepted because llama.cpp accepts it */
    int64_t ne[CTN_GGUF_MAX_DIMS]; /* ggml order: ne[0] varies fastest; unused dims are 1 */
    ctn_type type;
    uint64_t offset;  /* relative to the start of the data section */
    uint64_t nbytes;  /* size of the data in bytes */
    const void *data; /* into the mapping; aligned to the file's alignment */
} ctn_gguf_tensor;

typedef struct ctn_gguf ctn_gguf;

/* ---- element types ---------------------------------------------------------------- */

/* ctn_type_name, ctn_type_block_size, ctn_type_block_bytes: kernels/types.h. */
/* Name of a metadata value type ("uint32", "string", ...) or NULL. */
const char *ctn_gguf_type_name(int type);

/* ---- reading ---------------------------------------------------------------------- */

/*
 * Opens and maps a file. On failure *out is NULL and err holds the reason: CTN_EFORMAT for
 * a malformed file, CTN_ENOTSUP for GGUF v1, unknown future versions, big-endian files and
 * retired tensor types, CTN_ENOENT / CTN_EIO when the file cannot be opened or mapped.
 * Limits: arrays nest at most CTN_GGUF_MAX_DEPTH deep; general.alignment must be a uint32
 * power of two; tensor data must be aligned, inside the file and not overlapping.
 */
int ctn_gguf_open(ctn_gguf **out, const char *path, char *err, size_t errlen);
/*
 * Parses a GGUF image already in memory (borrowed: it must outlive the object).
 * `name` is used in error messages in place of a file name. Used by the fuzzer.
 */
int ctn_gguf_open_memory(ctn_gguf **out, const void *data, size_t size, const char *name, char *err,
                         size_t errlen);
void ctn_gguf_free(ctn_gguf *g);

const char *ctn_gguf_path(const ctn_gguf *g);
/*
 * The file descriptor of a ctn_gguf_open'd file (owned by g, open until ctn_gguf_free), or
 * -1 for ctn_gguf_open_memory. For pread of data that should not be mapped into the
 * process, such as scattered rows of a large embedding table.
 */
int ctn_gguf_fd(const ctn_gguf *g);
uint32_t ctn_gguf_version(const ctn_gguf *g);
uint64_t ctn_gguf_alignment(const ctn_gguf *g);
uint64_t ctn_gguf_data_offset(const ctn_gguf *g); /* file offset of the data section */
uint64_t ctn_gguf_file_size(const ctn_gguf *g);

int64_t ctn_gguf_n_kv(const ctn_gguf *g);
ctn_gguf_str ctn_gguf_key(const ctn_gguf *g, int64_t i);
const ctn_gguf_value *ctn_gguf_value_at(const ctn_gguf *g, int64_t i);
/* Index of a key, or -1. */
int64_t ctn_gguf_find_key(const ctn_gguf *g, const char *key);
const ctn_gguf_value *ctn_gguf_get(const ctn_gguf *g, const char *key);

/*
 * Typed getters. 0 on success; CTN_ENOENT when the key is missing; CTN_ETYPE when it has
 * an incompatible type (get_int accepts every integer type and bool, get_float every
 * number type; get_int fails with CTN_ERANGE for a uint64 above INT64_MAX).
 */
int ctn_gguf_get_int(const ctn_gguf *g, const char *key, int64_t *out);
int ctn_gguf_get_float(const ctn_gguf *g, const char *key, double *out);
int ctn_gguf_get_bool(const ctn_gguf *g, const char *key, bool *out);
int ctn_gguf_get_str(const ctn_gguf *g, const char *key, const char **ptr, size_t *len);
/* An array value; *out points at the value (type CTN_GGUF_ARRAY). */
int ctn_gguf_get_arr(const ctn_gguf *g, const char *key, const ctn_gguf_value **out);

/* Element access for array values (i < arr.n, matching element type, else 0/empty). */
int64_t ctn_gguf_arr_int(const ctn_gguf_value *arr, uint64_t i);
double ctn_gguf_arr_float(const ctn_gguf_value *arr, uint64_t i);
ctn_gguf_str ctn_gguf_arr_str(const ctn_gguf_value *arr, uint64_t i);

int64_t ctn_gguf_n_tensors(const ctn_gguf *g);
const ctn_gguf_tensor *ctn_gguf_tensor_at(const ctn_gguf *g, int64_t i);
const ctn_gguf_tensor *ctn_gguf_find_tensor(const ctn_gguf *g, const char *name);

/* File offsets of key/value pair i and of tensor info i (for dumps and messages). */
uint64_t ctn_gguf_key_offset(const ctn_gguf *g, int64_t i);
uint64_t ctn_gguf_tensor_info_offset(const ctn_gguf *g, int64_t i);
/* Number of elements of a tensor (product of ne). */
int64_t ctn_gguf_tensor_nelements(const ctn_gguf_tensor *t);

/* ---- writing ---------------------------------------------------------------------- */

/*
 * Builds a GGUF file in memory and writes it (always version 3, little-endian).
 *
 *     ctn_gguf_writer *w = ctn_gguf_writer_new();
 *     ctn_gguf_writer_set_str(w, "general.architecture", "llama");
 *     ctn_gguf_writer_add_tensor(w, "tok.weight", CTN_TYPE_F32, 2, ne, data);
 *     int rc = ctn_gguf_writer_write(w, "out.gguf", err, sizeof err);
 *     ctn_gguf_writer_free(w);
 *
 * Keys and strings are copied. Tensor data is borrowed until write (must stay valid); NULL
 * data writes zeros. The alignment is the general.alignment key (set_alignment sets it).
 * Setting an existing key replaces its value; adding a tensor with an existing name, a bad
 * type or shape fails with an error kept on the writer (ctn_gguf_writer_errmsg).
 */
typedef struct ctn_gguf_writer ctn_gguf_writer;

ctn_gguf_writer *ctn_gguf_writer_new(void);
void ctn_gguf_writer_free(ctn_gguf_writer *w);
const char *ctn_gguf_writer_errmsg(const ctn_gguf_writer *w);
int ctn_gguf_writer_set_alignment(ctn_gguf_writer *w, uint32_t alignment); /* power of 2 */

int ctn_gguf_writer_set_u8(ctn_gguf_writer *w, const char *key, uint8_t v);
int ctn_gguf_writer_set_i8(ctn_gguf_writer *w, const char *key, int8_t v);
int ctn_gguf_writer_set_u16(ctn_gguf_writer *w, const char *key, uint16_t v);
int ctn_gguf_writer_set_i16(ctn_gguf_writer *w, const char *key, int16_t v);
int ctn_gguf_writer_set_u32(ctn_gguf_writer *w, const char *key, uint32_t v);
int ctn_gguf_writer_set_i32(ctn_gguf_writer *w, const char *key, int32_t v);
int ctn_gguf_writer_set_u64(ctn_gguf_writer *w, const char *key, uint64_t v);
int ctn_gguf_writer_set_i64(ctn_gguf_writer *w, const char *key, int64_t v);
int ctn_gguf_writer_set_f32(ctn_gguf_writer *w, const char *key, float v);
int ctn_gguf_writer_set_f64(ctn_gguf_writer *w, const char *key, double v);
int ctn_gguf_writer_set_bool(ctn_gguf_writer *w, const char *key, bool v);
int ctn_gguf_writer_set_str(ctn_gguf_writer *w, const char *key, const char *v);
int ctn_gguf_writer_set_strn(ctn_gguf_writer *w, const char *key, const char *v, size_t n);
/* Array of numbers/bools: `data` holds n packed host-order elements of `type`. */
int ctn_gguf_writer_set_arr(ctn_gguf_writer *w, const char *key, ctn_gguf_type type,
                            const void *data, uint64_t n);
int ctn_gguf_writer_set_arr_str(ctn_gguf_writer *w, const char *key, const char *const *v,
                                uint64_t n);
/* Copies any value (including nested arrays) read from another file. */
int ctn_gguf_writer_set_value(ctn_gguf_writer *w, const char *key, const ctn_gguf_value *v);

int ctn_gguf_writer_add_tensor(ctn_gguf_writer *w, const char *name, ctn_type type, uint32_t n_dims,
                               const int64_t *ne, const void *data);

/* Serialises the whole file to memory (*out malloc'd, caller frees) or to a path. */
int ctn_gguf_writer_write_memory(ctn_gguf_writer *w, void **out, size_t *size);
int ctn_gguf_writer_write(ctn_gguf_writer *w, const char *path, char *err, size_t errlen);

#endif
