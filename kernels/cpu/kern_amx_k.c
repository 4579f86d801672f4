/*
 * Q4_K and Q5_K x Q8_K matrix products on AMX tiles (prefill), with an AVX-512 VNNI
 * matrix-vector form (decode) that gives the same bits. Compiled with AMX-TILE / AMX-INT8 /
 * AVX-512 (VNNI) flags (CMakeLists.txt); kern.c uses it only when the CPU has AMX (and VNNI:
 * have_amx requires it), the OS grants the tile state, and CATENA_ISA allows.
 *
 * Per super-block of 256 values and each (weight row, activation row) pair, both forms
 * compute two exact integers,
 *
 *     S = sum_j sc_j * (q_j . a_j)                 (8 sub-blocks of 32, 6-bit scales sc_j)
 *     M = sum_j m_j * (bsums[2j] + bsums[2j + 1])  (6-bit mins m_j, Q8_K block sums)
 *
 * and then take the same float steps (add_super): acc = fma(S, d * da, acc), then
 * acc = fnmadd(M, dmin * da, acc), super-block after super-block. Integer sums are exact in
 * any order, so the shape of the product cannot change the result (batch invariance,
 * kern.h).
 *
 * The tile form folds the scales into the weights: sc = 8 * hi + lo with hi, lo in 0..7, so
 * q * lo and q * hi fit a byte (at most 105 for Q4_K's 4-bit q, 217 for Q5_K's 5-bit q: the
 * weights are the unsigned operand, TDPBSUD). Each 16-row group of weights is widened once
 * per super-block into two B tiles per 64 values (lo and hi, VNNI layout), reused for up to
 * MAX_COLS activation rows (the A tiles, straight from the Q8_K blocks); one TDPBSUD per 64
 * values and variant accumulates the whole super-block in two C tiles, S = 8 * C_hi + C_lo,
 * and M takes eight vpdpwssd per activation row. The matrix-vector form runs AVX-512 VNNI dot
 * products as kern_avx512.c does and reduces each row's int32 lanes to S, 16 rows at once.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "amx.h"
#include "types.h"
#include "kern.h"
#include "quant.h"

#define INL static inline __attribute__((always_inline))

/* Columns (activation rows) per slice, as kern_amx.c (forward.c sends at most 64). */
#define MAX_COLS 64
/* Fewer activation rows than this take the matrix-vector form once per row: widening the
 * weights for the tiles costs more than it saves. */
#define MIN_TILE_COLS 2

/* The weight formats. Both start with d, dmin and the 12 bytes of packed scales. */
enum { K_Q4_K, K_Q5_K };

#define OFF_SCALES 4

INL size_t block_bytes(const int kind) {
    return kind == K_Q5_K ? sizeof(ctn_block_q5_K) : sizeof(ctn_block_q4_K);
}

/* Offset of the low nibbles qs (Q5_K: after the fifth bits qh, at offset 16). */
INL size_t off_qs(const int kind) {
    return kind == K_Q5_K ? 48 : 16;
}

/* ==== per super-block data of 16 weight rows (lane r: row r) ============================= */

typedef struct {
    __m512 d, dmin; /* the half scales as floats */
    __m512i mn[8];  /* m_j in both int16 halves of each dword (for vpdpwssd with bsums) */
    __m512i lo[8];  /* sc_j & 7 in both int16 halves (multipliers of the codes) */
    __m512i hi[8];  /* sc_j >> 3, likewise */
} rows_info;

/* Byte offsets of up to 16 weight rows (lanes past rn are 0 and masked off). */
INL __m512i row_offsets(int rn, size_t ws) {
    return _mm512_mask_mullo_epi32(
        _mm512_setzero_si512(), (__mmask16)((1u << rn) - 1),
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32((int)ws));
}

/* pshufb control taking byte j (0..3) of every dword into both of its int16 halves. */
INL __m512i pick(int j) {
    return _mm512_add_epi32(_mm512_set1_epi32((int)(0x80008000u | (uint32_t)j * 0x00010001u)),
                            _mm512_set4_epi32(0x000C000C, 0x00080008, 0x00040004, 0));
}

/*
 * Gathers block wb of 16 rows (rows past rmask read nothing and get zeros) and unpacks the
 * scales and mins as kern_avx512.c's k4_scales does, one row per lane. With split, also the
 * lo / hi multipliers the tile form needs.
 */
INL void load_rows_info(const char *wb, __mmask16 rmask, __m512i rowoff, const int split,
                        rows_info *ri) {
    const __m512i z = _mm512_setzero_si512();
    const __m512i dd = _mm512_mask_i32gather_epi32(z, rmask, rowoff, wb, 1);
    const __m512i u0 = _mm512_mask_i32gather_epi32(z, rmask, rowoff, wb + OFF_SCALES, 1);
    const __m512i u1 = _mm512_mask_i32gather_epi32(z, rmask, rowoff, wb + OFF_SCALES + 4, 1);
    const __m512i u2 = _mm512_mask_i32gather_epi32(z, rmask, rowoff, wb + OFF_SCALES + 8, 1);
    ri->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
    ri->dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
    const __m512i m6 = _mm512_set1_epi32(0x3f3f3f3f), m4 = _mm512_set1_epi32(0x0f0f0f0f);
    const __m512i m2 = _mm512_set1_epi32(0x03030303);
    __m512i sc[2], mn[2];
    sc[0] = _mm512_and_si512(u0, m6);
    mn[0] = _mm512_and_si512(u1, m6);
    sc[1] = _mm512_or_si512(_mm512_and_si512(u2, m4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), m2), 4));
    mn[1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), m2), 4));
    for (int j = 0; j < 8; j++)
        ri->mn[j] = _mm512_shuffle_epi8(mn[j / 4], pick(j % 4));
    if (!split) return;
    const __m512i m3 = _mm512_set1_epi32(0x07070707);
    for (int h = 0; h < 2; h++) {
        const __m512i l = _mm512_and_si512(sc[h], m3);
        const __m512i u = _mm512_and_si512(_mm512_srli_epi32(sc[h], 3), m3);
        for (int j = 0; j < 4; j++) {
            ri->lo[4 * h + j] = _mm512_shuffle_epi8(l, pick(j));
            ri->hi[4 * h + j] = _mm512_shuffle_epi8(u, pick(j));
        }
    }
}

/* M of one activation block against 16 rows: sum_j m_j * (bsums[2j] + bsums[2j + 1]). */
INL __m512i min_sums(const rows_info *ri, const ctn_block_q8_K *ab) {
    int32_t bp[8];
    memcpy(bp, ab->bsums, sizeof bp);
    __m512i m0 = _mm512_setzero_si512(), m1 = _mm512_setzero_si512();
    for (int j = 0; j < 8; j += 2) {
        m0 = _mm512_dpwssd_epi32(m0, ri->mn[j], _mm512_set1_epi32(bp[j]));
        m1 = _mm512_dpwssd_epi32(m1, ri->mn[j + 1], _mm512_set1_epi32(bp[j + 1]));
    }
    return _mm512_add_epi32(m0, m1);
}

/*
 * The one place a super-block joins the accumulators, for both forms: the same float
 * operations, in the same order, for every (weight row, activation row) pair.
 */
INL __m512 add_super(__m512 acc, __m512i s, __m512i m, const rows_info *ri, float da) {
    const __m512 vda = _mm512_set1_ps(da);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(ri->d, vda), acc);
    return _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(ri->dmin, vda), acc);
}

/* ==== tile form: up to 16 weight rows x up to MAX_COLS activation rows ==================== */

/*
 * Tiles for m activation rows (1..16): A 1 / 4 (m x 64 codes), B 2 / 5 (16 x 64: 64 values
 * of 16 weight rows in the VNNI layout) and two pairs of C (m x 16 int32, lo and hi), 0 / 3
 * and 6 / 7, used by alternate groups of 16 activation rows so that one group's products
 * run while the previous group's sums go through the epilogue. (amx.h's load_config knows
 * only six tiles.)
 */
INL void configure(int m) {
    if (configured == m) return;
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        const int b = t == 2 || t == 5;
        c.rows[t] = (uint8_t)(b ? 16 : m);
        c.colsb[t] = 64;
    }
    _tile_loadconfig(&c);
    configured = m;
}

/*
 * The B tiles of one super-block of 16 rows: bt[g][0] the lo variant of values
 * 64g .. 64g + 63, bt[g][1] the hi one. Value 64g + 4k + i (k < 8) is the low nibble of
 * qs[32g + 4k + i], value 64g + 32 + 4k + i its high nibble, so B row k and B row 8 + k
 * both come from dword k of the 32 bytes. The codes (0..15) times a multiplier (0..7) stay
 * within each byte, so one int16 multiply scales all four bytes of a dword.
 */
INL void build_bt(const int kind, const char *wb, size_t ws, int rn, const rows_info *ri,
                  int8_t bt[4][2][16 * 64]) {
    const __m512i mask = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
    __m512i th[8];
    if (kind == K_Q5_K) transpose_16x8(wb + 16, ws, rn, th);
    for (int g = 0; g < 4; g++) {
        __m512i t[8];
        transpose_16x8(wb + off_qs(kind) + 32 * g, ws, rn, t);
        for (int k = 0; k < 8; k++) {
            __m512i lo = _mm512_and_si512(t[k], mask);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(t[k], 4), mask);
            if (kind == K_Q5_K) {
                /* Bit 2g of qh[l]: the fifth bit of value l of sub-block 2g; 2g + 1: of 2g + 1. */
                const __m512i h0 = _mm512_and_si512(_mm512_srli_epi16(th[k], 2 * g), one);
                const __m512i h1 = _mm512_and_si512(_mm512_srli_epi16(th[k], 2 * g + 1), one);
                lo = _mm512_or_si512(lo, _mm512_slli_epi16(h0, 4));
                hi = _mm512_or_si512(hi, _mm512_slli_epi16(h1, 4));
            }
            _mm512_store_si512(bt[g][0] + 64 * k, _mm512_mullo_epi16(lo, ri->lo[2 * g]));
            _mm512_store_si512(bt[g][0] + 64 * (k + 8), _mm512_mullo_epi16(hi, ri->lo[2 * g + 1]));
            _mm512_store_si512(bt[g][1] + 64 * k, _mm512_mullo_epi16(lo, ri->hi[2 * g]));
            _mm512_store_si512(bt[g][1] + 64 * (k + 8), _mm512_mullo_epi16(hi, ri->hi[2 * g + 1]));
        }
    }
}

/* One 64-value step of the product: codes of the m activation rows into A tile T, then both
 * variants' products into C tiles L and H. */
#define STEP(T, L, H, g)                                                                           \
    do {                                                                                           \
        _tile_loadd(T, ab + offsetof(ctn_block_q8_K, qs) + 64 * (g), (long)as);                    \
        _tile_loadd(2, bt[g][0], 64);                                                              \
        _tile_loadd(5, bt[g][1], 64);                                                              \
        _tile_dpbsud(L, T, 2);                                                                     \
        _tile_dpbsud(H, T, 5);                                                                     \
    } while (0)

/* The whole super-block for one group of activation rows at ab, into cs[0] (lo) and cs[1]. */
#define GROUP(L, H)                                                                                \
    do {                                                                                           \
        _tile_zero(L);                                                                             \
        _tile_zero(H);                                                                             \
        STEP(1, L, H, 0);                                                                          \
        STEP(4, L, H, 1);                                                                          \
        STEP(1, L, H, 2);                                                                          \
        STEP(4, L, H, 3);                                                                          \
        _tile_stored(L, cs[0], 64);                                                                \
        _tile_stored(H, cs[1], 64);                                                                \
    } while (0)

/* The epilogue of a group of m_n activation rows (acc: theirs) from its C tiles in cs. */
INL void finish_group(const int32_t cs[2][256], int m_n, const char *ab, size_t as,
                      const rows_info *ri, float (*acc)[16]) {
    for (int m = 0; m < m_n; m++) {
        const ctn_block_q8_K *qb = (const ctn_block_q8_K *)(ab + (size_t)m * as);
        const __m512i s = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(cs[1] + 16 * m), 3),
                                           _mm512_load_si512(cs[0] + 16 * m));
        _mm512_store_ps(acc[m], add_super(_mm512_load_ps(acc[m]), s, min_sums(ri, qb), ri, qb->d));
    }
}

INL void slice(const int kind, int64_t nb, const char *wr, size_t ws, int rn, const char *ar,
               size_t as, int cn, float *y, size_t ldy) {
    _Alignas(64) int8_t bt[4][2][16 * 64];
    _Alignas(64) int32_t cbuf[2][2][256];
    _Alignas(64) float acc[MAX_COLS][16];
    memset(acc, 0, (size_t)cn * sizeof acc[0]);
    const __mmask16 rmask = (__mmask16)((1u << rn) - 1);
    const __m512i rowoff = row_offsets(rn, ws);
    const int ng = (cn + 15) / 16;
    for (int64_t b = 0; b < nb; b++) {
        const char *wb = wr + (size_t)b * block_bytes(kind);
        const char *ab0 = ar + (size_t)b * sizeof(ctn_block_q8_K);
        rows_info ri;
        load_rows_info(wb, rmask, rowoff, 1, &ri);
        build_bt(kind, wb, ws, rn, &ri, bt);
        /* Group i's products are issued before group i - 1's epilogue. */
        for (int i = 0; i <= ng; i++) {
            if (i < ng) {
                const int c0 = 16 * i, m_n = cn - c0 < 16 ? cn - c0 : 16;
                const char *ab = ab0 + (size_t)c0 * as;
                int32_t(*cs)[256] = cbuf[i & 1];
                configure(m_n);
                if (i & 1)
                    GROUP(6, 7);
                else
                    GROUP(0, 3);
            }
            if (i > 0) {
                const int c0 = 16 * (i - 1), m_n = cn - c0 < 16 ? cn - c0 : 16;
                finish_group((const int32_t(*)[256])cbuf[(i - 1) & 1], m_n, ab0 + (size_t)c0 * as,
                             as, &ri, acc + c0);
            }
        }
    }
    for (int m = 0; m < cn; m++)
        _mm512_mask_storeu_ps(y + (size_t)m * ldy, rmask, _mm512_load_ps(acc[m]));
}

/* ==== matrix-vector form: AVX-512 VNNI, 16 rows at a time ================================= */

/* The 8 scales of a super-block as int16, in every 128-bit lane (kern_avx512.c's k4_scales). */
INL __m512i row_scales(const uint8_t *s) {
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    const uint32_t sc_lo = u0 & 0x3f3f3f3fu;
    const uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 6) & 0x03030303u) << 4;
    return _mm512_broadcast_i32x4(
        _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)((uint64_t)sc_hi << 32 | sc_lo))));
}

/* int16 lane t of chunk k's scale vector: sub-block 2k + t / 16. */
INL __m512i scale_idx(int k) {
    return _mm512_add_epi16(
        _mm512_set1_epi16((short)(2 * k)),
        _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                                           17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                           1, 0),
                          4));
}

/* Per 128-bit lane, the sums of that lane's dwords of a, b, c, d (in that order). */
INL __m512i reduce4(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/* Lane 4q + i: the sum over the four 128-bit lanes of v[q]'s dword i. */
INL __m512i reduce16(const __m512i v[4]) {
    const __m512i a = _mm512_add_epi32(_mm512_shuffle_i32x4(v[0], v[1], 0x88),
                                       _mm512_shuffle_i32x4(v[0], v[1], 0xDD));
    const __m512i b = _mm512_add_epi32(_mm512_shuffle_i32x4(v[2], v[3], 0x88),
                                       _mm512_shuffle_i32x4(v[2], v[3], 0xDD));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xDD));
}

/* S of super-block b of one row against the activation codes av: int32 lanes to reduce. */
INL __m512i row_dot(const int kind, const char *row, int64_t b, const __m512i av[4]) {
    const char *wb = row + (size_t)b * block_bytes(kind);
    const __m512i sc = row_scales((const uint8_t *)wb + OFF_SCALES);
    const __m512i mask = _mm512_set1_epi8(0x0F);
    __m512i isum = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++) {
        const __m512i raw = _mm512_broadcast_i64x4(
            _mm256_loadu_si256((const __m256i *)(wb + off_qs(kind) + 32 * k)));
        __m512i q = _mm512_and_si512(
            _mm512_srlv_epi64(raw, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)), mask);
        if (kind == K_Q5_K) {
            /* As kern_avx512.c's q5_K_chunk (shift vectors from constants only). */
            const __m512i shift = _mm512_add_epi64(_mm512_set1_epi64(2 * k),
                                                   _mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0));
            const __m512i h = _mm512_srlv_epi64(
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wb + 16))), shift);
            q = _mm512_or_si512(q, _mm512_slli_epi16(_mm512_and_si512(h, _mm512_set1_epi8(1)), 4));
        }
        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q, av[k]),
                                   _mm512_permutexvar_epi16(scale_idx(k), sc));
    }
    return isum;
}

/* One activation row against every weight row, 16 rows per pass, super-block by super-block
 * (so that the float steps are add_super's, as in the tile form). */
INL void gemv(const int kind, int64_t nb, const char *w, size_t ws, int64_t nr, const char *a,
              float *y) {
    for (int64_t r0 = 0; r0 < nr; r0 += 16) {
        const int rn = nr - r0 < 16 ? (int)(nr - r0) : 16;
        const __mmask16 rmask = (__mmask16)((1u << rn) - 1);
        const __m512i rowoff = row_offsets(rn, ws);
        const char *wr = w + (size_t)r0 * ws;
        /* Rows past rn compute row 0 again (never stored): no branch per row. */
        const char *rp[16];
        for (int r = 0; r < 16; r++)
            rp[r] = wr + (r < rn ? (size_t)r * ws : 0);
        const char *pf = r0 + 16 < nr ? wr + (size_t)16 * ws : NULL;
        const int pn = nr - r0 - 16 < 16 ? (int)(nr - r0 - 16) : 16;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const ctn_block_q8_K *ab = (const ctn_block_q8_K *)a + b;
            if (pf != NULL)
                for (int r = 0; r < pn; r++) {
                    const char *p = pf + (size_t)r * ws + (size_t)b * block_bytes(kind);
                    _mm_prefetch(p, _MM_HINT_T0);
                    _mm_prefetch(p + 64, _MM_HINT_T0);
                    _mm_prefetch(p + block_bytes(kind) - 1, _MM_HINT_T0);
                }
            rows_info ri;
            load_rows_info(wr + (size_t)b * block_bytes(kind), rmask, rowoff, 0, &ri);
            __m512i av[4];
            for (int k = 0; k < 4; k++)
                av[k] = _mm512_loadu_si512((const void *)(ab->qs + 64 * k));
            __m512i v[4];
            for (int q = 0; q < 4; q++)
                v[q] = reduce4(row_dot(kind, rp[4 * q], b, av), row_dot(kind, rp[4 * q + 1], b, av),
                               row_dot(kind, rp[4 * q + 2], b, av),
                               row_dot(kind, rp[4 * q + 3], b, av));
            acc = add_super(acc, reduce16(v), min_sums(&ri, ab), &ri, ab->d);
        }
        _mm512_mask_storeu_ps(y + r0, rmask, acc);
    }
}

/* ==== driver ================================================================================ */

INL void gemm_amx(const int kind, int64_t n, const void *w, size_t ws, int64_t nr, const void *a,
                  size_t as, int64_t nc, float *y, size_t ldy) {
    const char *W = w, *A = a;
    const int64_t nb = n / 256;
    if (nc < MIN_TILE_COLS) {
        for (int64_t c = 0; c < nc; c++)
            gemv(kind, nb, W, ws, nr, A + (size_t)c * as, y + (size_t)c * ldy);
        return;
    }
    /* Other code on this thread (ggml) may have its own tile configuration: ours is loaded
     * on first use and theirs (or none) put back before returning (amx.h). */
    tile_config saved;
    _tile_storeconfig(&saved);
    configured = 0;
    for (int64_t c0 = 0; c0 < nc; c0 += MAX_COLS) {
        const int cn = nc - c0 < MAX_COLS ? (int)(nc - c0) : MAX_COLS;
        for (int64_t r0 = 0; r0 < nr; r0 += 16) {
            const int rn = nr - r0 < 16 ? (int)(nr - r0) : 16;
            slice(kind, nb, W + (size_t)r0 * ws, ws, rn, A + (size_t)c0 * as, as, cn,
                  y + (size_t)c0 * ldy + r0, ldy);
        }
    }
    restore(&saved);
}

static void gemm_q4_K_amx(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,
                          int64_t nc, float *y, size_t ldy) {
    gemm_amx(K_Q4_K, n, w, ws, nr, a, as, nc, y, ldy);
}

static void gemm_q5_K_amx(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,
                          int64_t nc, float *y, size_t ldy) {
    gemm_amx(K_Q5_K, n, w, ws, nr, a, as, nc, y, ldy);
}

typedef void (*gemm_fn)(int64_t, const void *, size_t, int64_t, const void *, size_t, int64_t,
                        float *, size_t);

gemm_fn ctn__gemm_amx_k(int wtype);
gemm_fn ctn__gemm_amx_k(int wtype) {
    switch (wtype) {
    case CTN_TYPE_Q4_K: return gemm_q4_K_amx;
    case CTN_TYPE_Q5_K: return gemm_q5_K_amx;
    default: return NULL;
    }
}
