/*
 * AVX-512 kernels (F, BW, VL, DQ; VNNI where the CPU has it, chosen at run time). Compiled
 * with its own target flags (see opaque() about VNNI); kern.c calls in only after checking
 * the CPU.
 *
 * Every gemm is a driver that walks the output in tiles of RM weight rows by CM activation
 * columns and calls one always-inlined tile function with the tile's shape as constants.
 * The tile function gives each (row, column) pair its own accumulator and performs the same
 * instructions on it, in the same order, whatever the shape; the edge tiles are the same
 * function with R or C = 1 (C = 1 tiles take RV rows: decode). That is what makes the
 * results batch invariant. The integer parts of the quantized dot products are exact, so
 * the VNNI and non-VNNI variants give identical bits too. Q8_0 and Q4_0 (the int8 paths the
 * benchmarks hit most) work on pairs of blocks per 512-bit vector and prepare each column
 * tile's activation vectors once per block of rows (Q8_DRIVER).
 *
 * Tile shapes, measured on the 2-core Xeon (AVX-512 + VNNI) this was written on: 4 x 4 for
 * Q8_0 / Q4_0 / float, 2 x 4 for the K-quants; 8 rows (4 for K-quants) for decode.
 *
 * Q4_1, Q5_0 and Q5_1 have no kernel here (they fall back to the scalar one): no model we
 * run uses them for large matrices.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kern.h"
#include "quant.h"

#define INL static inline __attribute__((always_inline))
/* The tile loops run over constant R, C (and chunk) counts: unroll them fully so that the
 * accumulators live in registers. */
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 8")
#endif

typedef void (*gemm_fn)(int64_t n, const void *w, size_t w_stride, int64_t nr, const void *a,
                        size_t a_stride, int64_t nc, float *y, size_t ldy);

gemm_fn ctn__gemm_avx512(int wtype, int vnni);
const ctn_vec *ctn__vec_avx512(void);
void ctn__from_q8_0_avx512(const float *x, void *a, int64_t n);
void ctn__from_q8_K_avx512(const float *x, void *a, int64_t n);

/* Rows per outer block: the tile loop over columns re-reads this many weight rows, which
 * stay in L1/L2 while every column tile passes over them. */
#define RBLK 32 /* a multiple of every RM and RV */

/*
 * Matrix-vector products stream the weights once: the rows of the next tile are fetched
 * while this one is computed (each row is a stream too short for the hardware prefetcher).
 * So do products with a few activation rows (one column tile: nc < 2 * CM, as a search of
 * a handful of queries or a small decode batch makes), where each weight row is read once
 * too: without it, 4 queries over 100k x 384 F32 rows took 1.9 times one query, 1.1 with.
 */
static inline void prefetch_rows(const char *p, size_t bytes, const char *end) {
    if (p + bytes > end) bytes = p < end ? (size_t)(end - p) : 0;
    for (size_t o = 0; o < bytes; o += 64)
        _mm_prefetch(p + o, _MM_HINT_T0);
}

#define GEMM_DRIVER(name, tile, RM, CM, RV, VNNI)                                                  \
    static void name(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,    \
                     int64_t nc, float *y, size_t ldy) {                                           \
        const char *W = w, *A = a;                                                                 \
        for (int64_t r0 = 0; r0 < nr; r0 += RBLK) {                                                \
            const int64_t r1 = r0 + RBLK < nr ? r0 + RBLK : nr;                                    \
            int64_t c = 0, r;                                                                      \
            for (; c + CM <= nc; c += CM) {                                                        \
                for (r = r0; r + RM <= r1; r += RM) {                                              \
                    if (nc < 2 * CM) prefetch_rows(W + (r + RM) * ws, RM * ws, W + nr * ws);       \
                    tile(RM, CM, VNNI, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, ldy);   \
                }                                                                                  \
                for (; r < r1; r++)                                                                \
                    tile(1, CM, VNNI, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, ldy);    \
            }                                                                                      \
            for (; c < nc; c++) {                                                                  \
                for (r = r0; r + RV <= r1; r += RV) {                                              \
                    if (nc == 1) prefetch_rows(W + (r + RV) * ws, RV * ws, W + nr * ws);           \
                    tile(RV, 1, VNNI, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, ldy);    \
                }                                                                                  \
                for (; r < r1; r++)                                                                \
                    tile(1, 1, VNNI, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, ldy);     \
            }                                                                                      \
        }                                                                                          \
    }

/*
 * The file is compiled with -mavx512vnni, and clang fuses a madd followed by an add into
 * vpdpwssd on its own, which would fault on AVX-512 CPUs without VNNI. The non-VNNI paths
 * therefore pass each madd result through an empty asm (an optimisation barrier) before
 * adding it; the *_vnni gemms use the instructions directly. tests/engine/test_kern.c runs
 * both paths; `objdump -d kern_avx512.c.o` must show vpdp* only in *_vnni functions.
 */
INL __m512i opaque(__m512i v) {
    __asm__("" : "+v"(v));
    return v;
}

/* u8 x s8 dot products of 4-byte groups added to the int32 lanes of src; without VNNI the
 * pair sums go through int16 (callers keep u * s small enough not to saturate). */
INL __m512i dp_u8s8(const int vnni, __m512i src, __m512i u, __m512i s) {
    if (vnni) return _mm512_dpbusd_epi32(src, u, s);
    return _mm512_add_epi32(
        src, opaque(_mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1))));
}

/* int16 x int16 pair products added to int32 lanes. */
INL __m512i dp_s16(const int vnni, __m512i src, __m512i a, __m512i b) {
    if (vnni) return _mm512_dpwssd_epi32(src, a, b);
    return _mm512_add_epi32(src, opaque(_mm512_madd_epi16(a, b)));
}

/* Two half scales as 8 lanes each: [d0 x 8, d1 x 8]. */
INL __m512 scale_pair(uint16_t d0, uint16_t d1) {
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)(d0 | (uint32_t)d1 << 16)));
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(f));
}

/* The same from the two half scales in memory (d1 NULL: 0): word loads straight into the
 * vector (pinsrw from memory) instead of through general registers; the same bits. */
INL __m512 scale_pair_mem(const uint16_t *d0, const uint16_t *d1) {
    __m128i v = _mm_loadu_si16(d0);
    if (d1 != NULL) v = _mm_insert_epi16(v, *d1, 1);
    const __m128 f = _mm_cvtph_ps(v);
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(f));
}

INL float half(uint16_t h) {
    return _cvtsh_ss(h);
}

/* ==== Q8_0 x Q8_0 and Q4_0 x Q8_0: two blocks of 32 per vector ============================ */

INL __m512i q8_pair(const ctn_block_q8_0 *b, int64_t i, int two) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)b[i].qs);
    const __m256i hi =
        two ? _mm256_loadu_si256((const __m256i *)b[i + 1].qs) : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/*
 * What a step needs of one activation column for one pair of blocks: the codes, the
 * scales [d0 x 8, d1 x 8] and the integer correction the accumulation starts from. The
 * Q8_0 / Q4_0 drivers compute these once per column tile (they are the same bits whenever
 * they are computed) instead of once per tile of rows.
 */
typedef struct {
    __m512i av; /* codes of blocks i, i + 1 */
    __m512i an; /* correction: -128 * sum(a) (Q8_0 with VNNI), -8 * sum(a) (Q4_0), or 0 */
    __m512 ad;  /* scales */
} q8_prep;

enum { K_Q8_0, K_Q4_0 };

INL q8_prep prep_pair(const int kind, const int vnni, const ctn_block_q8_0 *b, int64_t i, int two) {
    const __m512i zero = _mm512_setzero_si512();
    q8_prep p;
    p.av = q8_pair(b, i, two);
    p.ad = scale_pair(b[i].d, two ? b[i + 1].d : 0);
    if (kind == K_Q4_0)
        p.an = _mm512_sub_epi32(zero, dp_u8s8(vnni, zero, _mm512_set1_epi8(8), p.av));
    else if (vnni)
        p.an =
            _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8((char)0x80), p.av));
    else
        p.an = zero;
    return p;
}

/* Nibbles of two Q4_0 blocks in element order: [b0 & 15, b0 >> 4, b1 & 15, b1 >> 4]. */
INL __m512i q4_pair(const ctn_block_q4_0 *b, int64_t i, int two) {
    const __m128i x0 = _mm_loadu_si128((const __m128i *)b[i].qs);
    const __m128i x1 = two ? _mm_loadu_si128((const __m128i *)b[i + 1].qs) : _mm_setzero_si128();
    __m512i v = _mm512_broadcast_i32x4(x0);
    v = _mm512_mask_broadcast_i32x4(v, 0xFF00, x1);
    v = _mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

/*
 * One step: a pair of blocks (i, i + 1; only i when two is 0, the odd last block) for every
 * (row, column) of the tile; every tile makes the same steps, so the sums are the same.
 * Q8_0 with VNNI: the signed weights are biased by 128 to make them unsigned (dpbusd
 * multiplies u8 by s8) and the bias is taken back by starting from -128 * sum(a). Without
 * VNNI the sign of each weight moves onto the activation (maddubs of |w| and a * sign(w)),
 * which cannot saturate for |w|, |a| <= 127 (or w = -128). Q4_0: (q - 8) . a = q . a -
 * 8 * sum(a), with q unsigned.
 */
/* Pairs of blocks whose activation data the drivers precompute (n <= 2048: 24 KiB of stack). */
#define PREP_MAX 32

INL void step_q8(const int R, const int C, const int kind, const int vnni, const int two,
                 const char *w, size_t ws, const q8_prep *pc[4], int64_t i, __m512 acc[8][4]) {
    const __m512i zero = _mm512_setzero_si512(), bias = _mm512_set1_epi8((char)0x80);
    UNROLL for (int r = 0; r < R; r++) {
        __m512i wu;
        __m512 wd;
        __mmask64 neg = 0;
        if (kind == K_Q4_0) {
            const ctn_block_q4_0 *b = (const ctn_block_q4_0 *)(w + r * ws);
            if (C == 1) _mm_prefetch((const char *)(b + i) + (size_t)(4 * R) * ws, _MM_HINT_T0);
            wu = q4_pair(b, i, two);
            wd = scale_pair_mem(&b[i].d, two ? &b[i + 1].d : NULL);
        } else {
            const ctn_block_q8_0 *b = (const ctn_block_q8_0 *)(w + r * ws);
            /* Matrix-vector: fetch the same place four tiles ahead (measured best of 1, 2, 4, 8),
             * which the hardware prefetcher misses (each row is a short stream of its own). */
            if (C == 1) _mm_prefetch((const char *)(b + i) + (size_t)(4 * R) * ws, _MM_HINT_T0);
            const __m512i wv = q8_pair(b, i, two);
            wd = scale_pair_mem(&b[i].d, two ? &b[i + 1].d : NULL);
            wu = vnni ? _mm512_xor_si512(wv, bias) : _mm512_abs_epi8(wv);
            if (!vnni) neg = _mm512_movepi8_mask(wv);
        }
        UNROLL for (int c = 0; c < C; c++) {
            __m512i s;
            if (kind == K_Q4_0 || vnni)
                s = dp_u8s8(vnni, pc[c]->an, wu, pc[c]->av);
            else
                s = _mm512_madd_epi16(
                    _mm512_maddubs_epi16(wu, _mm512_mask_sub_epi8(pc[c]->av, neg, zero, pc[c]->av)),
                    _mm512_set1_epi16(1));
            acc[r][c] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(wd, pc[c]->ad), acc[r][c]);
        }
    }
}

/* pre: the C columns' prepared pairs (PREP_MAX apart), or NULL to prepare them here. */
INL void tile_q8(const int R, const int C, const int kind, const int vnni, int64_t n, const char *w,
                 size_t ws, const char *a, size_t as, float *y, size_t ldy, const q8_prep *pre) {
    const int64_t nb = n / 32;
    __m512 acc[8][4];
    const q8_prep *pc[4];
    q8_prep loc[4];
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            acc[r][c] = _mm512_setzero_ps();
        }
    }
    for (int64_t i = 0; i < nb; i += 2) {
        const int two = i + 1 < nb;
        UNROLL for (int c = 0; c < C; c++) {
            if (pre) {
                pc[c] = pre + c * PREP_MAX + i / 2;
            } else {
                loc[c] = prep_pair(kind, vnni, (const ctn_block_q8_0 *)(a + c * as), i, two);
                pc[c] = &loc[c];
            }
        }
        if (two)
            step_q8(R, C, kind, vnni, 1, w, ws, pc, i, acc);
        else
            step_q8(R, C, kind, vnni, 0, w, ws, pc, i, acc);
    }
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            y[c * ldy + r] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
}

INL void prep_cols(const int C, const int kind, const int vnni, int64_t n, const char *a, size_t as,
                   q8_prep *pre) {
    const int64_t nb = n / 32;
    UNROLL for (int c = 0; c < C; c++) {
        for (int64_t i = 0; i < nb; i += 2)
            pre[c * PREP_MAX + i / 2] =
                prep_pair(kind, vnni, (const ctn_block_q8_0 *)(a + c * as), i, i + 1 < nb);
    }
}

/* As GEMM_DRIVER, preparing each column tile's activations once per block of rows. */
#define Q8_DRIVER(name, KIND, RM, CM, RV, VNNI)                                                    \
    static void name(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,    \
                     int64_t nc, float *y, size_t ldy) {                                           \
        const char *W = w, *A = a;                                                                 \
        q8_prep buf[CM * PREP_MAX];                                                                \
        const q8_prep *pre = (n / 32 + 1) / 2 <= PREP_MAX ? buf : NULL;                            \
        for (int64_t r0 = 0; r0 < nr; r0 += Q8_RBLK) {                                             \
            const int64_t r1 = r0 + Q8_RBLK < nr ? r0 + Q8_RBLK : nr;                              \
            int64_t c = 0, r;                                                                      \
            for (; c + CM <= nc; c += CM) {                                                        \
                if (pre) prep_cols(CM, KIND, VNNI, n, A + c * as, as, buf);                        \
                for (r = r0; r + RM <= r1; r += RM)                                                \
                    tile_q8(RM, CM, KIND, VNNI, n, W + r * ws, ws, A + c * as, as,                 \
                            y + c * ldy + r, ldy, pre);                                            \
                for (; r < r1; r++)                                                                \
                    tile_q8(1, CM, KIND, VNNI, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, \
                            ldy, pre);                                                             \
            }                                                                                      \
            for (; c < nc; c++) {                                                                  \
                if (pre) prep_cols(1, KIND, VNNI, n, A + c * as, as, buf);                         \
                for (r = r0; r + RV <= r1; r += RV)                                                \
                    tile_q8(RV, 1, KIND, VNNI, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, \
                            ldy, pre);                                                             \
                for (; r < r1; r++)                                                                \
                    tile_q8(1, 1, KIND, VNNI, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r,  \
                            ldy, pre);                                                             \
            }                                                                                      \
        }                                                                                          \
    }

#define Q8_RBLK 64

/* ==== K-quants x Q8_K: 64 values per vector, four vectors per super-block ================ */

/* The 8 scales (bytes) and the 8 mins (int16, each twice) of a Q4_K / Q5_K super-block. */
INL void k4_scales(const uint8_t s[12], __m512i *sc, __m256i *m) {
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    const uint32_t sc_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
    const uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 6) & 0x03030303u) << 4;
    const uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 6) & 0x03030303u) << 4;
    /* In every 128-bit lane: permutexvar then reads the scales from the low lane. */
    *sc = _mm512_broadcast_i32x4(
        _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)((uint64_t)sc_hi << 32 | sc_lo))));
    /* Each min twice, to meet the 16 bsums of the activation block directly. */
    const __m128i m8 = _mm_cvtsi64_si128((long long)((uint64_t)m_hi << 32 | m_lo));
    *m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
}

/* int16 lane t of chunk k's scale vector: sub-block 2k + t / 16 (Q4_K, Q5_K). */
INL __m512i k4_scale_idx(int k) {
    return _mm512_add_epi16(
        _mm512_set1_epi16((short)(2 * k)),
        _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                                           17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                           1, 0),
                          4));
}

/* Q6_K: sub-block 4k + t / 8. */
INL __m512i k6_scale_idx(int k) {
    return _mm512_add_epi16(
        _mm512_set1_epi16((short)(4 * k)),
        _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                                           17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                           1, 0),
                          3));
}

INL __m512i bcast256(const uint8_t *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}

/* Codes of chunk k (values 64k .. 64k + 63) of super-block b, unsigned. */
INL __m512i q4_K_chunk(const ctn_block_q4_K *b, int k) {
    const __m512i v =
        _mm512_srlv_epi64(bcast256(b->qs + 32 * k), _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0));
    return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

INL __m512i q5_K_chunk(const ctn_block_q5_K *b, int k) {
    const __m512i lo = _mm512_and_si512(
        _mm512_srlv_epi64(bcast256(b->qs + 32 * k), _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)),
        _mm512_set1_epi8(0x0F));
    /* Not _mm512_set_epi64 of run-time values: clang 14 miscompiles it (seen at -O2). */
    const __m512i shift =
        _mm512_add_epi64(_mm512_set1_epi64(2 * k), _mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0));
    const __m512i h = _mm512_srlv_epi64(bcast256(b->qh), shift);
    return _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(h, _mm512_set1_epi8(1)), 4));
}

INL __m512i q6_K_chunk(const ctn_block_q6_K *b, int k) {
    const int h = k / 2, odd = k & 1;
    __m512i l = _mm512_loadu_si512((const void *)(b->ql + 64 * h));
    if (odd) l = _mm512_srli_epi16(l, 4);
    l = _mm512_and_si512(l, _mm512_set1_epi8(0x0F));
    /* (Shift vectors built from constants only: clang 14 miscompiled a run-time
     * _mm512_set_epi64 here.) */
    const __m512i shift =
        odd ? _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4) : _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
    const __m512i hb = _mm512_srlv_epi64(bcast256(b->qh + 32 * h), shift);
    return _mm512_or_si512(l, _mm512_slli_epi16(_mm512_and_si512(hb, _mm512_set1_epi8(3)), 4));
}

/*
 * Q4_K and Q5_K: per super-block, isum = sum over chunks of sc * (q . a) (int32 lanes),
 * then acc += isum * (d * da) as a vector and summ += (dmin * da) * (m . bsum pairs) in
 * float, per column or four columns at once with the same per-lane operations. Note: clang 14 -O2
 * miscompiled an earlier version of this tile in its 1 x 4 instance (the min term went missing)
 * when the scales were expanded with permutexvar from a zero-extended 128-bit vector and the min
 * term was a vector fnmadd; gcc was right. Broadcasting the scales and a scalar min term compile
 * correctly; the batch-invariance test (every tile shape against every other) is what caught it.
 */
#define TILE_K4(NAME, BT, CHUNK)                                                                   \
    INL void NAME(const int R, const int C, const int vnni, int64_t n, const char *w, size_t ws,   \
                  const char *a, size_t as, float *y, size_t ldy) {                                \
        const int64_t nb = n / 256;                                                                \
        __m512 acc[8][4];                                                                          \
        float summ[8][4];                                                                          \
        __m128 summv[8];                                                                           \
        UNROLL for (int r = 0; r < R; r++) {                                                       \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                acc[r][c] = _mm512_setzero_ps(), summ[r][c] = 0;                                   \
            }                                                                                      \
            summv[r] = _mm_setzero_ps();                                                           \
        }                                                                                          \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            __m512i sc[8];                                                                         \
            __m256i mn[8], bp[4];                                                                  \
            float wd[8], wm[8], da[4];                                                             \
            __m512i isum[8][4];                                                                    \
            UNROLL for (int r = 0; r < R; r++) {                                                   \
                const BT *b = (const BT *)(w + r * ws) + i;                                        \
                k4_scales(b->scales, &sc[r], &mn[r]);                                              \
                wd[r] = half(b->d);                                                                \
                wm[r] = half(b->dmin);                                                             \
            }                                                                                      \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                const ctn_block_q8_K *b = (const ctn_block_q8_K *)(a + c * as) + i;                \
                da[c] = b->d;                                                                      \
                bp[c] = _mm256_loadu_si256((const __m256i *)b->bsums);                             \
                UNROLL for (int r = 0; r < R; r++) {                                               \
                    isum[r][c] = _mm512_setzero_si512();                                           \
                }                                                                                  \
            }                                                                                      \
            UNROLL for (int k = 0; k < 4; k++) {                                                   \
                __m512i av[4];                                                                     \
                UNROLL for (int c = 0; c < C; c++) {                                               \
                    av[c] = _mm512_loadu_si512(                                                    \
                        (const void *)(((const ctn_block_q8_K *)(a + c * as) + i)->qs + 64 * k));  \
                }                                                                                  \
                UNROLL for (int r = 0; r < R; r++) {                                               \
                    const __m512i q = CHUNK((const BT *)(w + r * ws) + i, k);                      \
                    const __m512i s = _mm512_permutexvar_epi16(k4_scale_idx(k), sc[r]);            \
                    UNROLL for (int c = 0; c < C; c++) {                                           \
                        isum[r][c] = dp_s16(vnni, isum[r][c], _mm512_maddubs_epi16(q, av[c]), s);  \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            UNROLL for (int r = 0; r < R; r++) {                                                   \
                UNROLL for (int c = 0; c < C; c++) {                                               \
                    acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][c]),                    \
                                                _mm512_set1_ps(wd[r] * da[c]), acc[r][c]);         \
                }                                                                                  \
                if (C == 4) {                                                                      \
                    /* The four columns' min terms at once, lane c doing exactly what the          \
                     * scalar branch does for column c. */                                         \
                    const __m256i h =                                                              \
                        _mm256_hadd_epi32(_mm256_hadd_epi32(_mm256_madd_epi16(mn[r], bp[0]),       \
                                                            _mm256_madd_epi16(mn[r], bp[1])),      \
                                          _mm256_hadd_epi32(_mm256_madd_epi16(mn[r], bp[2]),       \
                                                            _mm256_madd_epi16(mn[r], bp[3])));     \
                    const __m128i t =                                                              \
                        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));  \
                    const __m128 p = _mm_mul_ps(_mm_set1_ps(wm[r]), _mm_loadu_ps(da));             \
                    summv[r] = _mm_add_ps(summv[r], _mm_mul_ps(p, _mm_cvtepi32_ps(t)));            \
                } else {                                                                           \
                    UNROLL for (int c = 0; c < C; c++) {                                           \
                        const __m256i m8 = _mm256_madd_epi16(mn[r], bp[c]);                        \
                        __m128i mm = _mm_add_epi32(_mm256_castsi256_si128(m8),                     \
                                                   _mm256_extracti128_si256(m8, 1));               \
                        mm = _mm_add_epi32(mm, _mm_shuffle_epi32(mm, 0x4E));                       \
                        mm = _mm_add_epi32(mm, _mm_shuffle_epi32(mm, 0xB1));                       \
                        summ[r][c] += (wm[r] * da[c]) * (float)_mm_cvtsi128_si32(mm);              \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        UNROLL for (int r = 0; r < R; r++) {                                                       \
            if (C == 4) _mm_storeu_ps(summ[r], summv[r]);                                          \
        }                                                                                          \
        UNROLL for (int r = 0; r < R; r++) {                                                       \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                y[c * ldy + r] = _mm512_reduce_add_ps(acc[r][c]) - summ[r][c];                     \
            }                                                                                      \
        }                                                                                          \
    }

TILE_K4(tile_q4_K, ctn_block_q4_K, q4_K_chunk)
TILE_K4(tile_q5_K, ctn_block_q5_K, q5_K_chunk)

/*
 * Q6_K: isum = sum sc * (q . a) - 32 * sum sc * bsum (exact, in the int32 lanes), then
 * acc += isum * (d * da).
 */
INL void tile_q6_K(const int R, const int C, const int vnni, int64_t n, const char *w, size_t ws,
                   const char *a, size_t as, float *y, size_t ldy) {
    const int64_t nb = n / 256;
    __m512 acc[8][4];
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            acc[r][c] = _mm512_setzero_ps();
        }
    }
    for (int64_t i = 0; i < nb; i++) {
        __m256i sc[8], bs[4];
        float wd[8], da[4];
        __m512i isum[8][4];
        UNROLL for (int r = 0; r < R; r++) {
            const ctn_block_q6_K *b = (const ctn_block_q6_K *)(w + r * ws) + i;
            sc[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
            wd[r] = half(b->d);
        }
        UNROLL for (int c = 0; c < C; c++) {
            const ctn_block_q8_K *b = (const ctn_block_q8_K *)(a + c * as) + i;
            da[c] = b->d;
            bs[c] = _mm256_loadu_si256((const __m256i *)b->bsums);
            UNROLL for (int r = 0; r < R; r++) {
                isum[r][c] =
                    _mm512_zextsi256_si512(_mm256_slli_epi32(_mm256_madd_epi16(sc[r], bs[c]), 5));
            }
        }
        UNROLL for (int r = 0; r < R; r++) {
            UNROLL for (int c = 0; c < C; c++) {
                isum[r][c] = _mm512_sub_epi32(_mm512_setzero_si512(), isum[r][c]);
            }
        }
        UNROLL for (int k = 0; k < 4; k++) {
            __m512i av[4];
            UNROLL for (int c = 0; c < C; c++) {
                av[c] = _mm512_loadu_si512(
                    (const void *)(((const ctn_block_q8_K *)(a + c * as) + i)->qs + 64 * k));
            }
            UNROLL for (int r = 0; r < R; r++) {
                const __m512i q = q6_K_chunk((const ctn_block_q6_K *)(w + r * ws) + i, k);
                const __m512i s =
                    _mm512_permutexvar_epi16(k6_scale_idx(k), _mm512_broadcast_i64x4(sc[r]));
                UNROLL for (int c = 0; c < C; c++) {
                    isum[r][c] = dp_s16(vnni, isum[r][c], _mm512_maddubs_epi16(q, av[c]), s);
                }
            }
        }
        UNROLL for (int r = 0; r < R; r++) {
            UNROLL for (int c = 0; c < C; c++) {
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][c]),
                                            _mm512_set1_ps(wd[r] * da[c]), acc[r][c]);
            }
        }
    }
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            y[c * ldy + r] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
}

/* ==== F32, F16, BF16: 16 lanes, masked tail ================================================ */

INL __m512 ld_f32(const char *p, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

INL __m512 ld_f16(const char *p, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
}

INL __m512 ld_bf16(const char *p, int64_t i, __mmask16 m) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INL __m512 ld_float(const int kind, const char *p, int64_t i, __mmask16 m) {
    return kind == 0 ? ld_f32(p, i, m) : kind == 1 ? ld_f16(p, i, m) : ld_bf16(p, i, m);
}

/* 16 values (those of mask m) of every pair of the tile. */
INL void step_float(const int R, const int C, const int kind, const char *w, size_t ws,
                    const char *a, size_t as, int64_t i, __mmask16 m, __m512 acc[8][4]) {
    __m512 av[4];
    UNROLL for (int c = 0; c < C; c++) {
        av[c] = ld_float(kind, a + c * as, i, m);
    }
    UNROLL for (int r = 0; r < R; r++) {
        const __m512 wv = ld_float(kind, w + r * ws, i, m);
        UNROLL for (int c = 0; c < C; c++) {
            acc[r][c] = _mm512_fmadd_ps(wv, av[c], acc[r][c]);
        }
    }
}

/* Full vectors first, then one masked step for the n % 16 tail (zeros add nothing). */
INL void tile_float(const int R, const int C, const int kind, int64_t n, const char *w, size_t ws,
                    const char *a, size_t as, float *y, size_t ldy) {
    __m512 acc[8][4];
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            acc[r][c] = _mm512_setzero_ps();
        }
    }
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        step_float(R, C, kind, w, ws, a, as, i, (__mmask16)0xFFFF, acc);
    if (i < n) step_float(R, C, kind, w, ws, a, as, i, (__mmask16)((1u << (n - i)) - 1), acc);
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            y[c * ldy + r] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
}

/* The drivers pass their VNNI flag as the last constant; here it names the format. */
#define tile_f32(R, C, K, ...)  tile_float(R, C, 0, __VA_ARGS__)
#define tile_f16(R, C, K, ...)  tile_float(R, C, 1, __VA_ARGS__)
#define tile_bf16(R, C, K, ...) tile_float(R, C, 2, __VA_ARGS__)

Q8_DRIVER(gemm_q8_0_vnni, K_Q8_0, 4, 4, 8, 1)
Q8_DRIVER(gemm_q8_0, K_Q8_0, 4, 4, 8, 0)
Q8_DRIVER(gemm_q4_0_vnni, K_Q4_0, 4, 4, 8, 1)
Q8_DRIVER(gemm_q4_0, K_Q4_0, 4, 4, 8, 0)
GEMM_DRIVER(gemm_q4_K_vnni, tile_q4_K, 2, 4, 4, 1)
GEMM_DRIVER(gemm_q4_K, tile_q4_K, 2, 4, 4, 0)
GEMM_DRIVER(gemm_q5_K_vnni, tile_q5_K, 2, 4, 4, 1)
GEMM_DRIVER(gemm_q5_K, tile_q5_K, 2, 4, 4, 0)
GEMM_DRIVER(gemm_q6_K_vnni, tile_q6_K, 2, 4, 4, 1)
GEMM_DRIVER(gemm_q6_K, tile_q6_K, 2, 4, 4, 0)
GEMM_DRIVER(gemm_f32, tile_f32, 4, 4, 8, 0)
GEMM_DRIVER(gemm_f16, tile_f16, 4, 4, 8, 0)
GEMM_DRIVER(gemm_bf16, tile_bf16, 4, 4, 8, 0)

gemm_fn ctn__gemm_avx512(int wtype, int vnni) {
    switch (wtype) {
    case CTN_TYPE_F32: return gemm_f32;
    case CTN_TYPE_F16: return gemm_f16;
    case CTN_TYPE_BF16: return gemm_bf16;
    case CTN_TYPE_Q8_0: return vnni ? gemm_q8_0_vnni : gemm_q8_0;
    case CTN_TYPE_Q4_0: return vnni ? gemm_q4_0_vnni : gemm_q4_0;
    case CTN_TYPE_Q4_K: return vnni ? gemm_q4_K_vnni : gemm_q4_K;
    case CTN_TYPE_Q5_K: return vnni ? gemm_q5_K_vnni : gemm_q5_K;
    case CTN_TYPE_Q6_K: return vnni ? gemm_q6_K_vnni : gemm_q6_K;
    }
    return NULL;
}

/* ==== activation quantizers ================================================================= */

/*
 * The same bytes as kern.c's scalar quantizers (llama.cpp's reference rules), checked by
 * the tests. NaN inputs behave as there: max ignores them (vmaxps returns its second
 * operand when the first is NaN) and a NaN or infinite code converts to INT_MIN, whose low
 * byte, 0, is what the int8 pack keeps.
 */
INL float absmax(const float *x, int nv) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 m = _mm512_setzero_ps();
    for (int v = 0; v < nv; v++)
        m = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + 16 * v)), m);
    return _mm512_reduce_max_ps(m);
}

/* roundf (half away from zero) of 16 floats, as int8 (low bytes of the int32 results). */
INL __m128i round_away_i8(__m512 v) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512 av = _mm512_andnot_ps(sign, v);
    const __m512 t = _mm512_roundscale_ps(av, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(av, t), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 r = _mm512_mask_add_ps(t, up, t, _mm512_set1_ps(1.0f));
    r = _mm512_or_ps(r, _mm512_and_ps(v, sign));
    return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r));
}

void ctn__from_q8_0_avx512(const float *x, void *a, int64_t n) {
    ctn_block_q8_0 *y = a;
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        const float amax = absmax(x, 2);
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const __m512 vid = _mm512_set1_ps(id);
        _mm_storeu_si128((__m128i *)y[i].qs, round_away_i8(_mm512_mul_ps(_mm512_loadu_ps(x), vid)));
        _mm_storeu_si128((__m128i *)(y[i].qs + 16),
                         round_away_i8(_mm512_mul_ps(_mm512_loadu_ps(x + 16), vid)));
    }
}

/* Q8_K: the first value of largest magnitude sets the scale; codes round half to even. */
void ctn__from_q8_K_avx512(const float *x, void *a, int64_t n) {
    ctn_block_q8_K *y = a;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / 256; i++, x += 256) {
        const float amax = absmax(x, 16);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float max = 0;
        for (int v = 0; v < 16; v++) {
            const __mmask16 eq =
                _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + 16 * v)),
                                   _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (eq) {
                max = x[16 * v + __builtin_ctz(eq)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m512 vis = _mm512_set1_ps(iscale);
        for (int v = 0; v < 16; v++) {
            const __m512i q = _mm512_min_epi32(
                _mm512_cvtps_epi32(_mm512_mul_ps(vis, _mm512_loadu_ps(x + 16 * v))),
                _mm512_set1_epi32(127));
            const __m128i q8 = _mm512_cvtepi32_epi8(q);
            _mm_storeu_si128((__m128i *)(y[i].qs + 16 * v), q8);
            y[i].bsums[v] = (int16_t)_mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(q8));
        }
        y[i].d = 1 / iscale;
    }
}

/* ==== vector operations ==================================================================== */

INL __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

static float vdot_f32(int64_t n, const float *x, const float *y) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        acc =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static float vdot_f16(int64_t n, const uint16_t *x, const float *y) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)),
                              _mm512_maskz_loadu_ps(m, y + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static void vmad_f32(int64_t n, float *y, const float *x, float s) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512 v =
            _mm512_fmadd_ps(vs, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

static void vmad_f16(int64_t n, float *y, const uint16_t *x, float s) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512 v = _mm512_fmadd_ps(vs, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)),
                                         _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

/* Hardware rounding is to nearest even, as ctn_fp32_to_fp16; NaNs keep their payload. */
static void vto_f16(int64_t n, uint16_t *y, const float *x) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(y + i, m, h);
    }
}

/*
 * e^x for 16 floats, within 2 ulp of expf: x = n ln 2 + r with n = round(x / ln 2) and ln 2
 * in two parts (r exact to a few ulp, |r| <= ln 2 / 2), e^r by its Taylor series to r^7
 * (the first term left out is below 6e-9 relative), times 2^n by scalef (which gives 0 and
 * inf past the float range). The clamps keep NaN: max and min return their second
 * operand when either is NaN.
 */
INL __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Every element, the tail too, goes through the same vector code (masked), so a value's
 * result does not depend on where the row is split between threads. */
static void vsoftmax(int64_t n, float *x, float scale) {
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs);
        _mm512_mask_storeu_ps(x + i, m, v);
        mx = _mm512_mask_max_ps(mx, m, v, mx); /* NaN in v goes into mx */
    }
    const __m512 vmx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512 e =
            _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmx)));
        _mm512_mask_storeu_ps(x + i, m, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(
            s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    const __m512 inv = _mm512_set1_ps((float)(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(s0, s1))));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

static void vsilu_mul(int64_t n, float *g, const float *u) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        const __m512 s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

static const ctn_vec vec_avx512 = {vdot_f32, vdot_f16, vmad_f32, vmad_f16,
                                   vto_f16,  vsoftmax, vsilu_mul};

const ctn_vec *ctn__vec_avx512(void) {
    return &vec_avx512;
}
