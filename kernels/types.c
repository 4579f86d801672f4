/* The table of tensor element types (see types.h). */
#include "types.h"

#include <stddef.h>

typedef struct {
    const char *name;
    uint16_t block; /* elements per block */
    uint16_t bytes; /* bytes per block */
} type_info;

/*
 * Block geometry of each ggml type. The byte counts are the sizes of ggml's block structs
 * (ggml-common.h); K-quants and most IQ types use 256-element super-blocks.
 */
static const type_info TYPES[CTN_TYPE_COUNT] = {
    [CTN_TYPE_F32] = {"F32", 1, 4},
    [CTN_TYPE_F16] = {"F16", 1, 2},
    [CTN_TYPE_Q4_0] = {"Q4_0", 32, 18},
    [CTN_TYPE_Q4_1] = {"Q4_1", 32, 20},
    [CTN_TYPE_Q5_0] = {"Q5_0", 32, 22},
    [CTN_TYPE_Q5_1] = {"Q5_1", 32, 24},
    [CTN_TYPE_Q8_0] = {"Q8_0", 32, 34},
    [CTN_TYPE_Q8_1] = {"Q8_1", 32, 36},
    [CTN_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [CTN_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [CTN_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [CTN_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [CTN_TYPE_Q6_K] = {"Q6_K", 256, 210},
    [CTN_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [CTN_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [CTN_TYPE_IQ2_XS] = {"IQ2_XS", 256, 74},
    [CTN_TYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [CTN_TYPE_IQ1_S] = {"IQ1_S", 256, 50},
    [CTN_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18},
    [CTN_TYPE_IQ3_S] = {"IQ3_S", 256, 110},
    [CTN_TYPE_IQ2_S] = {"IQ2_S", 256, 82},
    [CTN_TYPE_IQ4_XS] = {"IQ4_XS", 256, 136},
    [CTN_TYPE_I8] = {"I8", 1, 1},
    [CTN_TYPE_I16] = {"I16", 1, 2},
    [CTN_TYPE_I32] = {"I32", 1, 4},
    [CTN_TYPE_I64] = {"I64", 1, 8},
    [CTN_TYPE_F64] = {"F64", 1, 8},
    [CTN_TYPE_IQ1_M] = {"IQ1_M", 256, 56},
    [CTN_TYPE_BF16] = {"BF16", 1, 2},
    [CTN_TYPE_TQ1_0] = {"TQ1_0", 256, 54},
    [CTN_TYPE_TQ2_0] = {"TQ2_0", 256, 66},
    [CTN_TYPE_MXFP4] = {"MXFP4", 32, 17},
    [CTN_TYPE_NVFP4] = {"NVFP4", 64, 36},
    [CTN_TYPE_Q1_0] = {"Q1_0", 128, 18},
    [CTN_TYPE_Q2_0] = {"Q2_0", 64, 18},
};

const char *ctn_type_name(int type) {
    if (type < 0 || type >= CTN_TYPE_COUNT) return NULL;
    return TYPES[type].name;
}

int64_t ctn_type_block_size(int type) {
    if (type < 0 || type >= CTN_TYPE_COUNT) return 0;
    return TYPES[type].block;
}

int64_t ctn_type_block_bytes(int type) {
    if (type < 0 || type >= CTN_TYPE_COUNT) return 0;
    return TYPES[type].bytes;
}
