/*
 * safetensors files (Hugging Face): an 8-byte little-endian header length N, N bytes of
 * JSON ({"name": {"dtype": "F16", "shape": [r, c], "data_offsets": [begin, end]}, ...,
 * optionally "__metadata__": {"key": "value"}}), then the tensor bytes, row-major, offsets
 * relative to the end of the header.
 *
 *     ctn_st *f;
 *     if (ctn_st_open(&f, "adapter_model.safetensors", err, sizeof err) < 0) ...
 *     const ctn_st_tensor *t = ctn_st_find(f, "base_model.model.lm_head.weight");
 *     float *v = malloc(ctn_st_nelements(t) * sizeof *v);
 *     ctn_st_to_f32(t, v);
 *     ctn_st_free(f);
 *
 * The reader trusts nothing: the header length against the file size and a 100 MiB cap, the
 * JSON through cJSON (an object of objects; duplicate names refused), every dtype name, every
 * shape (non-negative, at most CTN_ST_MAX_DIMS dimensions, no overflow of the element or
 * byte count), every data_offsets pair (begin <= end, inside the data, end - begin equal to
 * the tensor's byte size), and the data covered exactly once by the tensors, with no gaps
 * and no overlaps (as the reference implementation requires). Errors name the file, the
 * tensor and the field. The file is mapped read-only; tensors point into the mapping.
 *
 * The writer builds a file from named tensors (for tests and for `catena` commands that
 * write adapters), tensors in the order added, the header padded with spaces to 8 bytes.
 */
#ifndef CTN_SAFETENSORS_H
#define CTN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define CTN_ST_MAX_DIMS 8

typedef enum {
    CTN_ST_BOOL,
    CTN_ST_U8,
    CTN_ST_I8,
    CTN_ST_F8_E4M3,
    CTN_ST_F8_E5M2,
    CTN_ST_I16,
    CTN_ST_U16,
    CTN_ST_F16,
    CTN_ST_BF16,
    CTN_ST_I32,
    CTN_ST_U32,
    CTN_ST_F32,
    CTN_ST_I64,
    CTN_ST_U64,
    CTN_ST_F64,
    CTN_ST_N_DTYPES
} ctn_st_dtype;

/* "F32", "BF16", ... (the names the format uses); "?" for anything else. */
const char *ctn_st_dtype_name(ctn_st_dtype d);
/* Bytes per element; 0 for an unknown dtype. */
size_t ctn_st_dtype_size(ctn_st_dtype d);

typedef struct {
    const char *name; /* NUL-terminated, owned by the file */
    ctn_st_dtype dtype;
    int32_t n_dims;                 /* 0 (a scalar) .. CTN_ST_MAX_DIMS */
    int64_t shape[CTN_ST_MAX_DIMS]; /* outermost first (row-major), as in the file */
    const void *data;               /* into the mapping; nbytes long */
    size_t nbytes;
} ctn_st_tensor;

typedef struct ctn_st ctn_st;

/* Opens and checks path. 0, or CTN_ENOENT / CTN_EIO / CTN_EFORMAT / CTN_ENOMEM with the
 * reason in err. */
int ctn_st_open(ctn_st **out, const char *path, char *err, size_t errcap);
/* The same over size bytes at data, which must outlive the result (not copied); name is
 * used in messages. */
int ctn_st_open_memory(ctn_st **out, const void *data, size_t size, const char *name, char *err,
                       size_t errcap);
void ctn_st_free(ctn_st *f);

/* Tensors in the order of their data offsets. */
int64_t ctn_st_n_tensors(const ctn_st *f);
const ctn_st_tensor *ctn_st_tensor_at(const ctn_st *f, int64_t i);
/* NULL when there is no tensor of that name. */
const ctn_st_tensor *ctn_st_find(const ctn_st *f, const char *name);
/* A "__metadata__" value; NULL when the key is not there. */
const char *ctn_st_metadata(const ctn_st *f, const char *key);
/* The number of "__metadata__" keys, and key i of them in strcmp order (NULL when i is out of
 * range); the strings are owned by the file. */
int64_t ctn_st_n_metadata(const ctn_st *f);
const char *ctn_st_metadata_key(const ctn_st *f, int64_t i);
int64_t ctn_st_nelements(const ctn_st_tensor *t);

/* Converts the elements of t (F32, F16 or BF16) to F32 into out (ctn_st_nelements values).
 * CTN_ENOTSUP for other dtypes. */
int ctn_st_to_f32(const ctn_st_tensor *t, float *out);

typedef struct ctn_st_writer ctn_st_writer;

ctn_st_writer *ctn_st_writer_new(void); /* NULL when out of memory */
void ctn_st_writer_free(ctn_st_writer *w);
/* The reason the last call on w failed. */
const char *ctn_st_writer_errmsg(const ctn_st_writer *w);
/* Adds a tensor; its data (the product of shape times the dtype size bytes) is copied.
 * CTN_EINVAL for a duplicate or empty name, an unknown dtype or a negative dimension. */
int ctn_st_writer_add(ctn_st_writer *w, const char *name, ctn_st_dtype dtype, int32_t n_dims,
                      const int64_t *shape, const void *data);
/* Sets a "__metadata__" string (replacing an earlier value of the key). */
int ctn_st_writer_set_metadata(ctn_st_writer *w, const char *key, const char *value);
/* Writes the file (to a temporary beside path, renamed over it when complete). */
int ctn_st_writer_write(ctn_st_writer *w, const char *path);
/* The same file image in memory: *out is malloc'd (the caller frees it), *size its length. */
int ctn_st_writer_write_memory(ctn_st_writer *w, void **out, size_t *size);

#endif
