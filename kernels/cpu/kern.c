/*
 * CPU kernels: ISA detection and dispatch, the activation quantizers (shared by every ISA:
 * they must give the same bytes everywhere) and the scalar reference dot products.
 *
 * Each ISA file (kern_avx2.c, kern_avx512.c) exports one function that returns its gemm
 * for a weight type, or NULL when it has none; the type then falls back to the scalar
 * gemm on that ISA. Both also have Q8_0 and Q8_K quantizers that write the same bytes as
 * the scalar ones here. The ctn_kern structs are filled here, once per ISA change.
 */
#include "kern.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CTN_X86 1
#endif

typedef void (*ctn__gemm_fn)(int64_t n, const void *w, size_t w_stride, int64_t nr, const void *a,
                             size_t a_stride, int64_t nc, float *y, size_t ldy);

/* Exported by the ISA files (declared here rather than in a header: nothing else uses them). */
#ifdef CTN_X86
ctn__gemm_fn ctn__gemm_avx2(int wtype);
const ctn_vec *ctn__vec_avx2(void);
ctn__gemm_fn ctn__gemm_avx512(int wtype, int vnni);
const ctn_vec *ctn__vec_avx512(void);
void ctn__from_q8_0_avx512(const float *x, void *a, int64_t n);
void ctn__from_q8_K_avx512(const float *x, void *a, int64_t n);
void ctn__from_q8_0_avx2(const float *x, void *a, int64_t n);
void ctn__from_q8_K_avx2(const float *x, void *a, int64_t n);
ctn__gemm_fn ctn__gemm_amx(int wtype);
ctn__gemm_fn ctn__gemm_amx_k(int wtype);
int ctn__amx_request(void);
#endif

/* ==== activation quantizers ============================================================== */

/* These are the reference; the AVX2 / AVX-512 Q8_0 and Q8_K versions must match them byte for byte
 * (tests/engine/test_kern.c compares both with llama.cpp's rules on every ISA). */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/*
 * C's roundf (half away from zero) followed by the int8 conversion x86-64 compiles ggml's
 * `y = roundf(x)` to: values outside int range (and NaN) give INT_MIN, whose low byte is 0.
 * |v| <= 127 whenever the input is finite, so the general case never wraps.
 */
static inline int8_t round_i8(float v) {
    if (!(v > -2147483904.0f && v < 2147483648.0f)) return 0;
    const float r = roundf(v);
    if (!(r > -2147483904.0f && r < 2147483648.0f)) return 0;
    return (int8_t)(uint8_t)((uint32_t)(int32_t)r & 0xFFu);
}

/* Round to nearest even via 1.5 * 2^23 (ggml's nearest_int; |v| < 2^22). */
static inline int nearest_int(float v) {
    const float t = v + 12582912.f;
    return (int)(f32_bits(t) & 0x007fffffu) - 0x00400000;
}

static void from_f32(const float *x, void *a, int64_t n) {
    memcpy(a, x, (size_t)n * sizeof(float));
}

/* The ISA's to_f16 (F16C where present, as llama.cpp): NaNs may keep their payload. */
static void from_f16(const float *x, void *a, int64_t n) {
    ctn_vec_get()->to_f16(n, a, x);
}

static void from_bf16(const float *x, void *a, int64_t n) {
    uint16_t *y = a;
    for (int64_t i = 0; i < n; i++)
        y[i] = ctn_fp32_to_bf16(x[i]);
}

/* quantize_row_q8_0_ref: d = max|x| / 127, q = roundf(x / d). */
static void from_q8_0(const float *x, void *a, int64_t n) {
    ctn_block_q8_0 *y = a;
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float v = fabsf(x[j]);
            amax = v > amax ? v : amax;
        }
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ctn_fp32_to_fp16(d);
        for (int j = 0; j < 32; j++)
            y[i].qs[j] = round_i8(x[j] * id);
    }
}

/* quantize_row_q8_1_ref: as Q8_0, plus s = half(d * sum of the int8 codes). */
static void from_q8_1(const float *x, void *a, int64_t n) {
    ctn_block_q8_1 *y = a;
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float v = fabsf(x[j]);
            amax = v > amax ? v : amax;
        }
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ctn_fp32_to_fp16(d);
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            y[i].qs[j] = round_i8(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = ctn_fp32_to_fp16((float)sum * d);
    }
}

/*
 * quantize_row_q8_K_ref: the scale comes from the value of largest magnitude (first one
 * wins, with its sign), iscale = -127 / max, q = min(127, nearest_int(iscale * x)), d = 1 /
 * iscale; an all-zero block gets d = 0 and zero codes (and zero bsums).
 */
static void from_q8_K(const float *x, void *a, int64_t n) {
    ctn_block_q8_K *y = a;
    for (int64_t i = 0; i < n / 256; i++, x += 256) {
        float max = 0, amax = 0;
        for (int j = 0; j < 256; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < 256; j++) {
            const int v = nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int k = 0; k < 16; k++)
                sum += y[i].qs[16 * j + k];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* ==== scalar dot products ================================================================ */

/*
 * Each quantized dot product sums the integer products of one block exactly, then adds
 * (float)isum * (dw * da) to a float accumulator, block after block.
 */

#define H2F ctn_fp16_to_fp32

static float dot_f32(int64_t n, const void *w, const void *a) {
    const float *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

static float dot_f16(int64_t n, const void *w, const void *a) {
    const uint16_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n; i++)
        s += H2F(x[i]) * H2F(y[i]);
    return s;
}

static float dot_bf16(int64_t n, const void *w, const void *a) {
    const uint16_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n; i++)
        s += ctn_bf16_to_fp32(x[i]) * ctn_bf16_to_fp32(y[i]);
    return s;
}

static float dot_q8_0(int64_t n, const void *w, const void *a) {
    const ctn_block_q8_0 *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        int isum = 0;
        for (int j = 0; j < 32; j++)
            isum += x[i].qs[j] * y[i].qs[j];
        s += (float)isum * (H2F(x[i].d) * H2F(y[i].d));
    }
    return s;
}

static float dot_q4_0(int64_t n, const void *w, const void *a) {
    const ctn_block_q4_0 *x = w;
    const ctn_block_q8_0 *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += ((x[i].qs[j] & 0xF) - 8) * y[i].qs[j];
            isum += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        }
        s += (float)isum * (H2F(x[i].d) * H2F(y[i].d));
    }
    return s;
}

static float dot_q4_1(int64_t n, const void *w, const void *a) {
    const ctn_block_q4_1 *x = w;
    const ctn_block_q8_1 *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += (x[i].qs[j] & 0xF) * y[i].qs[j];
            isum += (x[i].qs[j] >> 4) * y[i].qs[j + 16];
        }
        s += (float)isum * (H2F(x[i].d) * H2F(y[i].d)) + H2F(x[i].m) * H2F(y[i].s);
    }
    return s;
}

static inline uint32_t qh32(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static float dot_q5_0(int64_t n, const void *w, const void *a) {
    const ctn_block_q5_0 *x = w;
    const ctn_block_q8_0 *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        const uint32_t h = qh32(x[i].qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            const int q0 = (x[i].qs[j] & 0xF) | (int)((h >> j) & 1) << 4;
            const int q1 = (x[i].qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
            isum += (q0 - 16) * y[i].qs[j] + (q1 - 16) * y[i].qs[j + 16];
        }
        s += (float)isum * (H2F(x[i].d) * H2F(y[i].d));
    }
    return s;
}

static float dot_q5_1(int64_t n, const void *w, const void *a) {
    const ctn_block_q5_1 *x = w;
    const ctn_block_q8_1 *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        const uint32_t h = qh32(x[i].qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            const int q0 = (x[i].qs[j] & 0xF) | (int)((h >> j) & 1) << 4;
            const int q1 = (x[i].qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
            isum += q0 * y[i].qs[j] + q1 * y[i].qs[j + 16];
        }
        s += (float)isum * (H2F(x[i].d) * H2F(y[i].d)) + H2F(x[i].m) * H2F(y[i].s);
    }
    return s;
}

/* The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block. */
static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K / Q5_K: d * da * sum_j sc[j] * (q_j . a_j) - dmin * da * sum_j m[j] * bsum_j. */
static float dot_q4_K(int64_t n, const void *w, const void *a) {
    const ctn_block_q4_K *x = w;
    const ctn_block_q8_K *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 256; i++) {
        int isum = 0, imin = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min_k4(j, x[i].scales, &sc, &m);
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int8_t *ya = y[i].qs + 32 * j;
            int d = 0;
            for (int l = 0; l < 32; l++)
                d += ((j & 1) ? q[l] >> 4 : q[l] & 0xF) * ya[l];
            isum += sc * d;
            imin += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        }
        s += (float)isum * (H2F(x[i].d) * y[i].d) - (float)imin * (H2F(x[i].dmin) * y[i].d);
    }
    return s;
}

static float dot_q5_K(int64_t n, const void *w, const void *a) {
    const ctn_block_q5_K *x = w;
    const ctn_block_q8_K *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 256; i++) {
        int isum = 0, imin = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min_k4(j, x[i].scales, &sc, &m);
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int8_t *ya = y[i].qs + 32 * j;
            int d = 0;
            for (int l = 0; l < 32; l++) {
                const int lo = (j & 1) ? q[l] >> 4 : q[l] & 0xF;
                d += (lo | ((x[i].qh[l] >> j) & 1) << 4) * ya[l];
            }
            isum += sc * d;
            imin += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        }
        s += (float)isum * (H2F(x[i].d) * y[i].d) - (float)imin * (H2F(x[i].dmin) * y[i].d);
    }
    return s;
}

/* Q6_K: d * da * sum_j sc[j] * ((q_j - 32) . a_j) over 16 sub-blocks of 16. */
static float dot_q6_K(int64_t n, const void *w, const void *a) {
    const ctn_block_q6_K *x = w;
    const ctn_block_q8_K *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 256; i++) {
        int8_t q[256];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            int8_t *o = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                o[l] = (int8_t)((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4);
                o[l + 32] = (int8_t)((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4);
                o[l + 64] = (int8_t)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
                o[l + 96] = (int8_t)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
            }
        }
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int d = 0;
            for (int l = 0; l < 16; l++)
                d += (q[16 * j + l] - 32) * y[i].qs[16 * j + l];
            isum += x[i].scales[j] * d;
        }
        s += (float)isum * (H2F(x[i].d) * y[i].d);
    }
    return s;
}

#define SCALAR_GEMM(name, dot)                                                                     \
    static void name(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,    \
                     int64_t nc, float *y, size_t ldy) {                                           \
        for (int64_t c = 0; c < nc; c++)                                                           \
            for (int64_t r = 0; r < nr; r++)                                                       \
                y[c * (int64_t)ldy + r] =                                                          \
                    dot(n, (const char *)w + r * ws, (const char *)a + c * as);                    \
    }

SCALAR_GEMM(gemm_f32, dot_f32)
SCALAR_GEMM(gemm_f16, dot_f16)
SCALAR_GEMM(gemm_bf16, dot_bf16)
SCALAR_GEMM(gemm_q8_0, dot_q8_0)
SCALAR_GEMM(gemm_q4_0, dot_q4_0)
SCALAR_GEMM(gemm_q4_1, dot_q4_1)
SCALAR_GEMM(gemm_q5_0, dot_q5_0)
SCALAR_GEMM(gemm_q5_1, dot_q5_1)
SCALAR_GEMM(gemm_q4_K, dot_q4_K)
SCALAR_GEMM(gemm_q5_K, dot_q5_K)
SCALAR_GEMM(gemm_q6_K, dot_q6_K)

/* ==== scalar vector operations =========================================================== */

static float vdot_f32(int64_t n, const float *x, const float *y) {
    float s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

static float vdot_f16(int64_t n, const uint16_t *x, const float *y) {
    float s = 0;
    for (int64_t i = 0; i < n; i++)
        s += H2F(x[i]) * y[i];
    return s;
}

static void vmad_f32(int64_t n, float *y, const float *x, float s) {
    for (int64_t i = 0; i < n; i++)
        y[i] += s * x[i];
}

static void vmad_f16(int64_t n, float *y, const uint16_t *x, float s) {
    for (int64_t i = 0; i < n; i++)
        y[i] += s * H2F(x[i]);
}

static void vto_f16(int64_t n, uint16_t *y, const float *x) {
    for (int64_t i = 0; i < n; i++)
        y[i] = ctn_fp32_to_fp16(x[i]);
}

static void vsoftmax(int64_t n, float *x, float scale) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        x[i] *= scale;
        if (x[i] > mx) mx = x[i];
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

static void vsilu_mul(int64_t n, float *g, const float *u) {
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static const ctn_vec vec_scalar = {vdot_f32, vdot_f16, vmad_f32, vmad_f16,
                                   vto_f16,  vsoftmax, vsilu_mul};
/* The chosen ISA's operations, the scalar ones where it has none. */
static ctn_vec vec_chosen;

/* ==== dispatch =========================================================================== */

typedef struct {
    int wtype, atype;
    int64_t block;
    void (*from_float)(const float *x, void *a, int64_t n);
    ctn__gemm_fn scalar;
} kern_desc;

static const kern_desc descs[] = {
    {CTN_TYPE_F32, CTN_TYPE_F32, 1, from_f32, gemm_f32},
    {CTN_TYPE_F16, CTN_TYPE_F16, 1, from_f16, gemm_f16},
    {CTN_TYPE_BF16, CTN_TYPE_BF16, 1, from_bf16, gemm_bf16},
    {CTN_TYPE_Q8_0, CTN_TYPE_Q8_0, 32, from_q8_0, gemm_q8_0},
    {CTN_TYPE_Q4_0, CTN_TYPE_Q8_0, 32, from_q8_0, gemm_q4_0},
    {CTN_TYPE_Q4_1, CTN_TYPE_Q8_1, 32, from_q8_1, gemm_q4_1},
    {CTN_TYPE_Q5_0, CTN_TYPE_Q8_0, 32, from_q8_0, gemm_q5_0},
    {CTN_TYPE_Q5_1, CTN_TYPE_Q8_1, 32, from_q8_1, gemm_q5_1},
    {CTN_TYPE_Q4_K, CTN_TYPE_Q8_K, 256, from_q8_K, gemm_q4_K},
    {CTN_TYPE_Q5_K, CTN_TYPE_Q8_K, 256, from_q8_K, gemm_q5_K},
    {CTN_TYPE_Q6_K, CTN_TYPE_Q8_K, 256, from_q8_K, gemm_q6_K},
};
#define N_DESCS (int)(sizeof descs / sizeof descs[0])

static struct {
    int have_avx2, have_avx512, have_vnni, have_amx;
    ctn_isa isa;
    ctn_kern kerns[N_DESCS];
    ctn_kern exact[N_DESCS]; /* ctn_kern_get_f32act's */
    ctn__gemm_fn f32_gemm;   /* the F32 kernel the exact ones multiply with */
    const ctn_vec *vec;
} st;

/*
 * The exact products (ctn_kern_get_f32act). A tile of EXACT_ROWS weight rows is dequantized
 * EXACT_CHUNK values at a time to F32 (ctn_dequantize_row: ggml's to_float, exact for every
 * block format) and multiplied with the F32 activations by the ISA's F32 kernel; the chunks'
 * dot products of one (row, column) pair are added in chunk order. The F32 kernel's result
 * for a pair does not depend on the tile, so these are batch invariant as it is.
 */
enum { EXACT_ROWS = 8, EXACT_CHUNK = 1024, EXACT_COLS = 64 };

static void gemm_exact(int wtype, int64_t n, const void *w, size_t w_stride, int64_t nr,
                       const void *a, size_t a_stride, int64_t nc, float *y, size_t ldy) {
    float buf[EXACT_ROWS * EXACT_CHUNK], part[EXACT_COLS * EXACT_ROWS];
    const int64_t bs = ctn_type_block_size(wtype), bb = ctn_type_block_bytes(wtype);
    for (int64_t r0 = 0; r0 < nr; r0 += EXACT_ROWS) {
        const int64_t rn = nr - r0 < EXACT_ROWS ? nr - r0 : EXACT_ROWS;
        for (int64_t off = 0; off < n; off += EXACT_CHUNK) {
            const int64_t len = n - off < EXACT_CHUNK ? n - off : EXACT_CHUNK;
            for (int64_t r = 0; r < rn; r++)
                ctn_dequantize_row(wtype,
                                   (const uint8_t *)w + (size_t)(r0 + r) * w_stride +
                                       (size_t)(off / bs * bb),
                                   buf + r * EXACT_CHUNK, len);
            for (int64_t c0 = 0; c0 < nc; c0 += EXACT_COLS) {
                const int64_t m = nc - c0 < EXACT_COLS ? nc - c0 : EXACT_COLS;
                st.f32_gemm(len, buf, EXACT_CHUNK * sizeof(float), rn,
                            (const uint8_t *)a + (size_t)c0 * a_stride + (size_t)off * 4, a_stride,
                            m, part, EXACT_ROWS);
                for (int64_t c = 0; c < m; c++)
                    for (int64_t r = 0; r < rn; r++) {
                        float *o = y + (size_t)(c0 + c) * ldy + r0 + r;
                        *o = off == 0 ? part[c * EXACT_ROWS + r] : *o + part[c * EXACT_ROWS + r];
                    }
            }
        }
    }
}

#define EXACT(T)                                                                                   \
    static void gemm_exact_##T(int64_t n, const void *w, size_t ws, int64_t nr, const void *a,     \
                               size_t as, int64_t nc, float *y, size_t ldy) {                      \
        gemm_exact(CTN_TYPE_##T, n, w, ws, nr, a, as, nc, y, ldy);                                 \
    }
EXACT(F16)
EXACT(BF16)
EXACT(Q8_0)
EXACT(Q4_0)
EXACT(Q4_1)
EXACT(Q5_0)
EXACT(Q5_1)
EXACT(Q4_K)
EXACT(Q5_K)
EXACT(Q6_K)
#undef EXACT

/* The exact product of each type of descs[], in its order (F32's is the F32 kernel). */
static const ctn__gemm_fn exact_fns[N_DESCS] = {
    NULL,
    gemm_exact_F16,
    gemm_exact_BF16,
    gemm_exact_Q8_0,
    gemm_exact_Q4_0,
    gemm_exact_Q4_1,
    gemm_exact_Q5_0,
    gemm_exact_Q5_1,
    gemm_exact_Q4_K,
    gemm_exact_Q5_K,
    gemm_exact_Q6_K,
};

#ifdef CTN_X86
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}
#endif

/* Reads the CPU's features: AVX2 needs AVX2, FMA, F16C and OS support for YMM state;
 * AVX-512 needs F, BW, VL, DQ and OS support for ZMM / opmask state. */
static void detect(void) {
#ifdef CTN_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    const int f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    const uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 6) != 6) return;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    const int avx2 = (b >> 5) & 1;
    st.have_avx2 = avx2 && fma && f16c;
    const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    st.have_avx512 = st.have_avx2 && f && dq && bw && vl && (xcr0 & 0xE6) == 0xE6;
    st.have_vnni = st.have_avx512 && ((c >> 11) & 1);
    /* AMX: TILE and INT8 (CPUID.7.0:EDX bits 24, 25), the OS saving tile state (XCR0 bits
     * 17, 18) and the kernel granting it to this process. */
    const int amx = ((d >> 24) & 1) && ((d >> 25) & 1) && (xcr0 & 0x60000) == 0x60000;
    st.have_amx = st.have_vnni && amx && ctn__amx_request() == 0;
#endif
}

static void build(void) {
    const ctn_vec *v = &vec_scalar;
#ifdef CTN_X86
    if (st.isa == CTN_ISA_AVX2) v = ctn__vec_avx2();
    if (st.isa >= CTN_ISA_AVX512) v = ctn__vec_avx512();
#endif
    vec_chosen = *v;
    if (vec_chosen.softmax == NULL) vec_chosen.softmax = vsoftmax;
    if (vec_chosen.silu_mul == NULL) vec_chosen.silu_mul = vsilu_mul;
    st.vec = &vec_chosen;
    for (int i = 0; i < N_DESCS; i++) {
        ctn__gemm_fn g = NULL;
#ifdef CTN_X86
        if (st.isa == CTN_ISA_AVX2) g = ctn__gemm_avx2(descs[i].wtype);
        if (st.isa == CTN_ISA_AMX) g = ctn__gemm_amx(descs[i].wtype);
        if (st.isa == CTN_ISA_AMX && g == NULL) g = ctn__gemm_amx_k(descs[i].wtype);
        if (st.isa >= CTN_ISA_AVX512 && g == NULL)
            g = ctn__gemm_avx512(descs[i].wtype, st.have_vnni);
#endif
        void (*ff)(const float *, void *, int64_t) = descs[i].from_float;
#ifdef CTN_X86
        if (st.isa == CTN_ISA_AVX2 && descs[i].atype == CTN_TYPE_Q8_0) ff = ctn__from_q8_0_avx2;
        if (st.isa == CTN_ISA_AVX2 && descs[i].atype == CTN_TYPE_Q8_K) ff = ctn__from_q8_K_avx2;
        if (st.isa >= CTN_ISA_AVX512 && descs[i].atype == CTN_TYPE_Q8_0) ff = ctn__from_q8_0_avx512;
        if (st.isa >= CTN_ISA_AVX512 && descs[i].atype == CTN_TYPE_Q8_K) ff = ctn__from_q8_K_avx512;
#endif
        st.kerns[i] =
            (ctn_kern){descs[i].wtype, descs[i].atype, descs[i].block, ff, g ? g : descs[i].scalar};
    }
    st.f32_gemm = st.kerns[0].gemm; /* descs[0] is F32 */
    for (int i = 0; i < N_DESCS; i++) {
        const int64_t bs = ctn_type_block_size(descs[i].wtype);
        st.exact[i] = i == 0 ? st.kerns[0]
                             : (ctn_kern){descs[i].wtype, CTN_TYPE_F32, bs, st.kerns[0].from_float,
                                          exact_fns[i]};
    }
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static int supported(ctn_isa isa) {
    switch (isa) {
    case CTN_ISA_SCALAR: return 1;
    case CTN_ISA_AVX2: return st.have_avx2;
    case CTN_ISA_AVX512: return st.have_avx512;
    case CTN_ISA_AMX: return st.have_amx;
    }
    return 0;
}

static void init_run(void) {
    detect();
    st.isa = st.have_amx      ? CTN_ISA_AMX
             : st.have_avx512 ? CTN_ISA_AVX512
             : st.have_avx2   ? CTN_ISA_AVX2
                              : CTN_ISA_SCALAR;
    const char *env = getenv("CATENA_ISA");
    if (env) {
        for (int i = CTN_ISA_SCALAR; i <= CTN_ISA_AMX; i++)
            if (strcmp(env, ctn_isa_name((ctn_isa)i)) == 0 && supported((ctn_isa)i))
                st.isa = (ctn_isa)i;
    }
    build();
}

/* Detection runs once, whichever thread asks first. */
static void init(void) {
    pthread_once(&init_once, init_run);
}

int ctn_isa_supported(ctn_isa isa) {
    init();
    return supported(isa);
}

const char *ctn_isa_name(ctn_isa isa) {
    switch (isa) {
    case CTN_ISA_SCALAR: return "scalar";
    case CTN_ISA_AVX2: return "avx2";
    case CTN_ISA_AVX512: return "avx512";
    case CTN_ISA_AMX: return "amx";
    }
    return "unknown";
}

ctn_isa ctn_kern_isa(void) {
    init();
    return st.isa;
}

int ctn_kern_set_isa(ctn_isa isa) {
    init();
    if ((int)isa < CTN_ISA_SCALAR || (int)isa > CTN_ISA_AMX || !ctn_isa_supported(isa))
        return CTN_ENOTSUP;
    st.isa = isa;
    build();
    return 0;
}

const ctn_kern *ctn_kern_get(int wtype) {
    init();
    for (int i = 0; i < N_DESCS; i++)
        if (st.kerns[i].wtype == wtype) return &st.kerns[i];
    return NULL;
}

const ctn_kern *ctn_kern_get_f32act(int wtype) {
    init();
    for (int i = 0; i < N_DESCS; i++)
        if (st.exact[i].wtype == wtype) return &st.exact[i];
    return NULL;
}

const ctn_vec *ctn_vec_get(void) {
    init();
    return st.vec;
}

size_t ctn_kern_act_bytes(int atype, int64_t n) {
    switch (atype) {
    case CTN_TYPE_F32: return (size_t)n * 4;
    case CTN_TYPE_F16:
    case CTN_TYPE_BF16: return (size_t)n * 2;
    case CTN_TYPE_Q8_0: return (size_t)(n / 32) * sizeof(ctn_block_q8_0);
    case CTN_TYPE_Q8_1: return (size_t)(n / 32) * sizeof(ctn_block_q8_1);
    case CTN_TYPE_Q8_K: return (size_t)(n / 256) * sizeof(ctn_block_q8_K);
    }
    return 0;
}
