/*
 * Tensor element types, numbered as ggml numbers them, and their block geometry: the one
 * table of types in catena. GGUF files (engine/gguf.h), the block formats (quant.h) and
 * the kernels all use it.
 *
 *     int64_t n = 4096;                                   // a row of Q8_0 values
 *     int64_t bytes = n / ctn_type_block_size(CTN_TYPE_Q8_0) * ctn_type_block_bytes(CTN_TYPE_Q8_0);
 *     printf("%s\n", ctn_type_name(CTN_TYPE_Q4_K));      // "Q4_K"
 */
#ifndef CTN_TYPES_H
#define CTN_TYPES_H

#include <stdint.h>

/* Tensor element types, numbered as ggml numbers them (GGML_TYPE_*). */
typedef enum {
    CTN_TYPE_F32 = 0,
    CTN_TYPE_F16 = 1,
    CTN_TYPE_Q4_0 = 2,
    CTN_TYPE_Q4_1 = 3,
    CTN_TYPE_Q5_0 = 6,
    CTN_TYPE_Q5_1 = 7,
    CTN_TYPE_Q8_0 = 8,
    CTN_TYPE_Q8_1 = 9,
    CTN_TYPE_Q2_K = 10,
    CTN_TYPE_Q3_K = 11,
    CTN_TYPE_Q4_K = 12,
    CTN_TYPE_Q5_K = 13,
    CTN_TYPE_Q6_K = 14,
    CTN_TYPE_Q8_K = 15,
    CTN_TYPE_IQ2_XXS = 16,
    CTN_TYPE_IQ2_XS = 17,
    CTN_TYPE_IQ3_XXS = 18,
    CTN_TYPE_IQ1_S = 19,
    CTN_TYPE_IQ4_NL = 20,
    CTN_TYPE_IQ3_S = 21,
    CTN_TYPE_IQ2_S = 22,
    CTN_TYPE_IQ4_XS = 23,
    CTN_TYPE_I8 = 24,
    CTN_TYPE_I16 = 25,
    CTN_TYPE_I32 = 26,
    CTN_TYPE_I64 = 27,
    CTN_TYPE_F64 = 28,
    CTN_TYPE_IQ1_M = 29,
    CTN_TYPE_BF16 = 30,
    CTN_TYPE_TQ1_0 = 34,
    CTN_TYPE_TQ2_0 = 35,
    CTN_TYPE_MXFP4 = 39,
    CTN_TYPE_NVFP4 = 40,
    CTN_TYPE_Q1_0 = 41,
    CTN_TYPE_Q2_0 = 42,
    CTN_TYPE_COUNT = 43
} ctn_type;

/* Name of a tensor type ("F32", "Q4_K", ...) or NULL for an unknown number. */
const char *ctn_type_name(int type);
/* Elements per block and bytes per block; 0 for unknown/removed types. */
int64_t ctn_type_block_size(int type);
int64_t ctn_type_block_bytes(int type);

#endif
