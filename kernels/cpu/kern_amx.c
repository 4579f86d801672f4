/*
 * Q8_0 x Q8_0 and Q4_0 x Q8_0 matrix products on AMX tiles (Intel Sapphire Rapids and
 * later), compiled with AMX-TILE / AMX-INT8 / AVX-512 (VNNI) flags (CMakeLists.txt); kern.c
 * uses them only when the CPU has AMX, the OS grants the tile state (arch_prctl), and
 * CATENA_ISA allows.
 *
 * One TDPBSSD per 32-value block multiplies up to 16 activation rows (A: 16 x 32 int8)
 * by 16 weight rows (B: the same 32 values of each row, in the VNNI layout of 4-byte
 * groups: B[k / 4][row * 4 + k % 4]; Q4_0 nibbles are widened to int8 q - 8 first) into a
 * 16 x 16 int32 tile of block sums. Each element then takes one fused multiply-add in
 * float, acc = fma(sum, d_w * d_a, acc), block after block. A single activation row
 * (decode) computes the same exact block sums with AVX-512 VNNI (gemv) and adds them the
 * same way: the same arithmetic in the same order for every element, whatever the shape
 * or the number of rows and columns (batch invariance, kern.h).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "amx.h"
#include "types.h"
#include "kern.h"
#include "quant.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA  18

/* Asks the kernel for the AMX tile data state; 0 when granted. */
int ctn__amx_request(void);
int ctn__amx_request(void) {
    return (int)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 0 : -1;
}

/* Columns (activation rows) per call that the accumulators are kept for (forward.c sends
 * at most 64; more are done in slices of this many). */
#define MAX_COLS 64

/* Tiles for m activation rows (1..16) against 16 weight rows: a product of fewer rows reads
 * and writes only those rows, with no padding. */
static inline int configure(int m) {
    return load_config(m, m, 32, 8, 64, m, 64);
}

/*
 * B for one block of up to 16 weight rows (rows past rn are zero; row r's 32 codes at codes +
 * r * cstride): the 16 x 8 dwords of
 * their codes transposed to 8 x 16, bt[k4 * 16 + row] = dword k4 of the row. Two rows per
 * register, then 4 x 4 sub-blocks (permutex2var), then 128-bit chunks (shuffle_i32x4).
 */
static inline void build_b(const char *codes, size_t cstride, int rn, int32_t *bt) {
    __m512i t[8];
    transpose_16x8(codes, cstride, rn, t);
    for (int k4 = 0; k4 < 8; k4++)
        _mm512_store_si512(bt + k4 * 16, t[k4]);
}

/* Byte offsets of up to 16 weight rows (lanes past rn are 0 and masked off). */
static inline __m512i row_offsets(int rn, size_t ws) {
    return _mm512_mask_mullo_epi32(
        _mm512_setzero_si512(), (__mmask16)((1u << rn) - 1),
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32((int)ws));
}

/* The half scales of one block of up to 16 rows (the low half of each gathered dword). */
static inline __m512 row_scales(const char *wb, __mmask16 rmask, __m512i rowoff) {
    const __m512i d = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rmask, rowoff, wb, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d));
}

/*
 * The one place a block's integer sums join the accumulators, for every shape of product:
 * acc = fma(float(sum), d_w * d_a, acc), with d_a the activation block's scale (its half,
 * converted exactly to float beforehand: act_scales). Every element of every product goes
 * through this, block after block (batch invariance).
 */
static inline __m512 add_block(__m512 acc, __m512i sums, __m512 dw, float da) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(dw, _mm512_set1_ps(da)), acc);
}

/* The scales (exactly, as float) and the sums of the codes of nbk blocks of one activation
 * row from block b0 (sums NULL: not wanted). */
static inline void act_blocks(const char *arow, int64_t b0, int nbk, float *da, int32_t *sums) {
    for (int i = 0; i < nbk; i++) {
        const char *ab = arow + (size_t)(b0 + i) * sizeof(ctn_block_q8_0);
        uint16_t h;
        memcpy(&h, ab, 2);
        da[i] = _cvtsh_ss(h);
        if (sums != NULL) {
            const int8_t *q = (const int8_t *)(ab + 2);
            int32_t t = 0;
            for (int k = 0; k < 32; k++)
                t += q[k];
            sums[i] = t;
        }
    }
}

/* The weight formats: Q8_0 (codes used as they are) and Q4_0 (nibbles widened to int8). */
enum { K_Q8_0, K_Q4_0 };

#define INL static inline __attribute__((always_inline))

INL size_t block_bytes(const int kind) {
    return kind == K_Q4_0 ? sizeof(ctn_block_q4_0) : sizeof(ctn_block_q8_0);
}

/*
 * The int8 codes of one Q4_0 block of up to 16 rows (rows past rn untouched) as 32 bytes
 * per row at out (stride 32), in element order: q[i] & 15 for elements 0..15, q[i] >> 4
 * for 16..31, minus 8. Four rows per vector.
 */
INL void widen_q4_0(const char *wb, size_t ws, int rn, int8_t *out) {
    const __m512i mask = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    const __m512i i0 = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i i1 = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    for (int r = 0; r < rn; r += 4) {
        const char *q = wb + 2 + (size_t)r * ws;
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)q));
        if (r + 1 < rn) v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(q + ws)), 1);
        if (r + 2 < rn)
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(q + 2 * ws)), 2);
        if (r + 3 < rn)
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(q + 3 * ws)), 3);
        const __m512i lo = _mm512_and_si512(v, mask);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
        const __m512i o0 = _mm512_sub_epi8(_mm512_permutex2var_epi64(lo, i0, hi), eight);
        const __m512i o1 = _mm512_sub_epi8(_mm512_permutex2var_epi64(lo, i1, hi), eight);
        _mm512_store_si512(out + (size_t)r * 32, o0);
        if (r + 2 < rn) _mm512_store_si512(out + (size_t)r * 32 + 64, o1);
    }
}

/* Blocks per pass of the tile product (the activation scales of MAX_COLS rows for them are
 * converted once per pass: 16 KiB of stack; a slice builds their B: 32 KiB). */
#define DA_CHUNK 64

/* Blocks whose tile products go to the store and then through the epilogue together. */
#define SLICE_G 4

/* The tile products of block g of a group of SLICE_G into cs[g] (tiles 0, 1, 2 for even g, 3,
 * 4, 5 for odd, so that consecutive products do not wait on each other's tiles). */
#define SLICE_PRODUCT(TC, TA, TB)                                                                  \
    do {                                                                                           \
        _tile_loadd(TB, bt[b + g], 64);                                                            \
        _tile_loadd(TA, ab + 2, (long)as);                                                         \
        _tile_zero(TC);                                                                            \
        _tile_dpbssd(TC, TA, TB);                                                                  \
        _tile_stored(TC, cs[par][g], 64);                                                          \
    } while (0)

/* The columns of one group of m_n <= 16 activation rows (at ar) of a slice over nbk blocks,
 * with their sums in registers. */
INL void slice_cols(const int kind, const int m_n, int nbk, const int32_t (*bt)[8 * 16],
                    const __m512 *dw, const char *ar, size_t as, const float *da, int resume,
                    const char *pf, size_t ws, __mmask16 rmask, float *y, size_t ldy) {
    /* Two sets of buffers, used in turn: the stores of one group's products need not wait
     * for the loads of the previous group's epilogue. */
    _Alignas(64) int32_t cs[2][SLICE_G][16 * 16];
    __m512 acc[16];
    /* Loops over 16 with m < m_n inside unroll fully, so the sums stay in registers. */
#pragma clang loop unroll(full)
    for (int m = 0; m < 16; m++)
        if (m < m_n)
            acc[m] =
                resume ? _mm512_maskz_loadu_ps(rmask, y + (size_t)m * ldy) : _mm512_setzero_ps();
    configure(m_n);
    for (int b = 0, par = 0; b < nbk; b += SLICE_G, par ^= 1) {
        const int gn = nbk - b < SLICE_G ? nbk - b : SLICE_G;
        if (pf != NULL)
            for (int g = 0; g < gn; g += 2) {
                const char *q = pf + (size_t)(b + g) * block_bytes(kind);
                for (int r = 0; r < 16; r++, q += ws)
                    _mm_prefetch(q, _MM_HINT_T0);
            }
        for (int g = 0; g < gn; g++) {
            const char *ab = ar + (size_t)(b + g) * sizeof(ctn_block_q8_0);
            if ((g & 1) == 0)
                SLICE_PRODUCT(0, 1, 2);
            else
                SLICE_PRODUCT(3, 4, 5);
        }
        for (int g = 0; g < gn; g++)
#pragma clang loop unroll(full)
            for (int m = 0; m < 16; m++)
                if (m < m_n)
                    acc[m] = add_block(acc[m], _mm512_load_si512(cs[par][g] + m * 16), dw[b + g],
                                       da[(size_t)m * DA_CHUNK + b + g]);
    }
#pragma clang loop unroll(full)
    for (int m = 0; m < 16; m++)
        if (m < m_n) _mm512_mask_storeu_ps(y + (size_t)m * ldy, rmask, acc[m]);
}
#undef SLICE_PRODUCT

/* B of nbk blocks of rn weight rows in the VNNI layout, and their scales. */
INL void slice_b(const int kind, const int rn, int nbk, const char *wr, size_t ws,
                 int32_t (*bt)[8 * 16], __m512 *dw, __mmask16 rmask, __m512i rowoff) {
    _Alignas(64) int8_t wide[16 * 32];
    const size_t bb = block_bytes(kind);
    for (int b = 0; b < nbk; b++) {
        const char *wb = wr + (size_t)b * bb;
        if (kind == K_Q4_0) {
            widen_q4_0(wb, ws, rn, wide);
            build_b((const char *)wide, 32, rn, bt[b]);
        } else {
            build_b(wb + 2, ws, rn, bt[b]);
        }
        dw[b] = row_scales(wb, rmask, rowoff);
    }
}

/*
 * One slice of up to 16 weight rows against up to MAX_COLS activation rows over nbk <=
 * DA_CHUNK blocks (da: the activation scales, row m's at da + m * DA_CHUNK; resume: start
 * from the sums in y, as a later pass does). B of every block is built in the VNNI layout
 * first, then each group of 16 activation rows goes through all blocks with its sums in
 * registers: SLICE_G blocks' tile products, stored, then their epilogue, every element
 * added with add_block block after block. (One block at a time, product then epilogue,
 * went no faster for 16 rows than for 2: each step waited on the one before, stores into a
 * tile load and a tile store into vector loads.) pf, when not NULL, is the next slice's
 * weights: the first group of columns prefetches them, a line per row per two blocks, as it
 * goes (without it the tile products waited on the weights whenever they were not in the
 * cache).
 */
INL void slice(const int kind, int nbk, const char *wr, size_t ws, int rn, const char *ar,
               size_t as, int cn, const float *da, int resume, const char *pf, float *y,
               size_t ldy) {
    _Alignas(64) int32_t bt[DA_CHUNK][8 * 16];
    __m512 dw[DA_CHUNK];
    const __mmask16 rmask = (__mmask16)((1u << rn) - 1);
    const __m512i rowoff = row_offsets(rn, ws);
    if (rn == 16) /* the row count a constant: no per-row checks */
        slice_b(kind, 16, nbk, wr, ws, bt, dw, rmask, rowoff);
    else
        slice_b(kind, rn, nbk, wr, ws, bt, dw, rmask, rowoff);
    for (int c0 = 0; c0 < cn; c0 += 16) {
        const char *a0 = ar + (size_t)c0 * as;
        const float *d0 = da + (size_t)c0 * DA_CHUNK;
        float *y0 = y + (size_t)c0 * ldy;
        const char *p0 = c0 == 0 ? pf : NULL;
        if (cn - c0 >= 16) /* the row count a constant: the sums stay in registers */
            slice_cols(kind, 16, nbk, bt, dw, a0, as, d0, resume, p0, ws, rmask, y0, ldy);
        else
            slice_cols(kind, cn - c0, nbk, bt, dw, a0, as, d0, resume, p0, ws, rmask, y0, ldy);
    }
}

/*
 * The matrix-vector product (one activation row: decode) does not use tiles: loading the
 * weights as A tiles (16 rows of 32 bytes from 16 lines) measured 100+ cycles per tile, far
 * from what a stream of vector loads reaches. It uses AVX-512 VNNI instead and produces the
 * same numbers as the slice: each (row, block) sum is computed exactly in int32, then added
 * with add_block, block after block.
 *
 * Sixteen rows at a time. Q8_0: two rows per vector: vector j holds rows (j, j + 4) for
 * j < 4 and (j + 4, j + 8) for j >= 4, each row's 32 codes in one 256-bit half; dpbusd
 * against the activation block leaves 8 partial sums per row, and reduce16 folds the 8
 * vectors into one vector of 16 row sums, lane r = row r. Q4_0: four rows per vector, one
 * per 128-bit lane (block_sums), which needs half the shuffles.
 */

/* Blocks whose integer corrections and scales gemv computes at once (its stack: 8 KiB). */
#define MV_CHUNK 1024
/* Rows ahead that gemv prefetches (the same blocks, one line per row per two blocks).
 * Measured (1 thread, ~110M model, decode): 32 rows ahead beat 16, 48 and 64, and beat
 * fetching the next rows' contiguous range line by line in order. */
#define MV_PF 32

/* s[0..7] -> lane r = the sum of row r's 8 dwords (row p of vector j in 128-bit lanes 0, 1
 * and row q in 2, 3). */
INL __m512i reduce16(const __m512i s[8]) {
    __m512i t[4], u[2];
    for (int k = 0; k < 4; k++)
        t[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2 * k], s[2 * k + 1]),
                                _mm512_unpackhi_epi32(s[2 * k], s[2 * k + 1]));
    /* u[m], 128-bit lane L: [s(4m), s(4m + 1), s(4m + 2), s(4m + 3)] summed over lane L. */
    for (int m = 0; m < 2; m++)
        u[m] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * m], t[2 * m + 1]),
                                _mm512_unpackhi_epi64(t[2 * m], t[2 * m + 1]));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], 0x88),
                            _mm512_shuffle_i32x4(u[0], u[1], 0xDD));
}

/* The row pair of vector j (see above). */
INL int pair_row(int j, int hi) {
    return j < 4 ? j + 4 * hi : j + 4 + 4 * hi;
}

/* Loads 32 bytes at p when its row is below rn, else zeros. */
INL __m256i load_row256(const char *p, int row, int rn) {
    return row < rn ? _mm256_loadu_si256((const __m256i *)p) : _mm256_setzero_si256();
}

INL __m128i load_row128(const char *p, int row, int rn) {
    return row < rn ? _mm_loadu_si128((const __m128i *)p) : _mm_setzero_si128();
}

/*
 * The exact sums of 16 rows (rows past rn count as zero) with activation block ab, lane r =
 * row r: Q8_0 as sum((w + 128) * a) - 128 * sum(a) (dpbusd multiplies unsigned by signed),
 * Q4_0 as sum(q * a) - 8 * sum(a); corr is the 128 * sum(a) or 8 * sum(a) of the block.
 */
INL __m512i block_sums(const int kind, const char *wb, size_t ws, int rn, const char *ab,
                       int32_t corr) {
    const __m512i zero = _mm512_setzero_si512();
    if (kind == K_Q4_0) {
        /* Four rows per vector, one per 128-bit lane (vector k: rows k, 4 + k, 8 + k,
         * 12 + k): their low nibbles against a0..15 and high nibbles against a16..31, so
         * each lane ends with 4 partial sums of one row and two levels of adds finish. */
        const __m512i alo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(ab + 2)));
        const __m512i ahi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(ab + 18)));
        const __m512i m4 = _mm512_set1_epi8(0x0F);
        __m512i s4[4];
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_castsi128_si512(load_row128(wb + (size_t)k * ws + 2, k, rn));
            for (int l = 1; l < 4; l++) {
                const int r = 4 * l + k;
                const __m128i x = load_row128(wb + (size_t)r * ws + 2, r, rn);
                v = l == 1   ? _mm512_inserti32x4(v, x, 1)
                    : l == 2 ? _mm512_inserti32x4(v, x, 2)
                             : _mm512_inserti32x4(v, x, 3);
            }
            const __m512i lo = _mm512_and_si512(v, m4);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            s4[k] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, alo), hi, ahi);
        }
        const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(s4[0], s4[1]),
                                            _mm512_unpackhi_epi32(s4[0], s4[1]));
        const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(s4[2], s4[3]),
                                            _mm512_unpackhi_epi32(s4[2], s4[3]));
        const __m512i u =
            _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
        return _mm512_sub_epi32(u, _mm512_set1_epi32(corr));
    }
    __m512i s[8];
    const __m512i av = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(ab + 2)));
    for (int j = 0; j < 8; j++) {
        const int p = pair_row(j, 0), q = pair_row(j, 1);
        __m512i wv =
            _mm512_inserti64x4(_mm512_castsi256_si512(load_row256(wb + (size_t)p * ws + 2, p, rn)),
                               load_row256(wb + (size_t)q * ws + 2, q, rn), 1);
        wv = _mm512_xor_si512(wv, _mm512_set1_epi8((char)0x80));
        s[j] = _mm512_dpbusd_epi32(zero, wv, av);
    }
    return _mm512_sub_epi32(reduce16(s), _mm512_set1_epi32(corr));
}

/* The blocks of one group of rn rows (wr) against the chunk's activation blocks (ac),
 * prefetching the rows MV_PF ahead (pf, or NULL) one line per row per two blocks. */
INL __m512 mv_rows(const int kind, const int rn, int nbk, const char *wr, size_t ws, const char *ac,
                   const int32_t *corr, const float *da, const char *pf, __mmask16 rmask,
                   __m512i rowoff, __m512 acc) {
    const size_t bb = block_bytes(kind);
    for (int i = 0; i < nbk; i++) {
        const char *wb = wr + (size_t)i * bb;
        const char *ab = ac + (size_t)i * sizeof(ctn_block_q8_0);
        if (pf != NULL && (i & 1) == 0) {
            const char *q = pf + (size_t)i * bb;
            for (int r = 0; r < 16; r++, q += ws)
                _mm_prefetch(q, _MM_HINT_T0);
        }
        acc = add_block(acc, block_sums(kind, wb, ws, rn, ab, corr[i]),
                        row_scales(wb, rmask, rowoff), da[i]);
    }
    return acc;
}

INL void gemv(const int kind, int64_t nb, const char *w, size_t ws, int64_t nr, const char *a,
              float *y) {
    int32_t corr[MV_CHUNK];
    float da[MV_CHUNK];
    const size_t bb = block_bytes(kind);
    for (int64_t c0 = 0; c0 < nb; c0 += MV_CHUNK) {
        const int nbk = nb - c0 < MV_CHUNK ? (int)(nb - c0) : MV_CHUNK;
        act_blocks(a, c0, nbk, da, corr);
        for (int i = 0; i < nbk; i++)
            corr[i] *= kind == K_Q4_0 ? 8 : 128;
        for (int64_t r0 = 0; r0 < nr; r0 += 16) {
            const int rn = nr - r0 < 16 ? (int)(nr - r0) : 16;
            const __mmask16 rmask = (__mmask16)((1u << rn) - 1);
            const __m512i rowoff = row_offsets(rn, ws);
            const char *wr = w + (size_t)r0 * ws + (size_t)c0 * bb;
            const char *pf = r0 + MV_PF + 16 <= nr ? wr + (size_t)MV_PF * ws : NULL;
            /* A chunk after the first resumes the sums kept in y. */
            __m512 acc = c0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rmask, y + r0);
            const char *ac = a + (size_t)c0 * sizeof(ctn_block_q8_0);
            if (rn == 16) /* the row count a constant: no per-row checks */
                acc = mv_rows(kind, 16, nbk, wr, ws, ac, corr, da, pf, rmask, rowoff, acc);
            else
                acc = mv_rows(kind, rn, nbk, wr, ws, ac, corr, da, pf, rmask, rowoff, acc);
            _mm512_mask_storeu_ps(y + r0, rmask, acc);
        }
    }
}

/*
 * A few activation rows (2..FEW_MAX: the decode step of a few sequences) go neither through
 * the tiles, whose store / load round trips make a product of up to 16 rows cost about as
 * much as 16 rows, nor through gemv once per row, which would read and reduce the weights
 * once per row. Each block of 16 weight rows is transposed once into the VNNI layout the
 * tiles use (vector k4, lane r = dword k4 of row r), made unsigned (Q8_0: w + 128, Q4_0:
 * the nibbles as they are), and then every activation row takes 8 dpbusd against its
 * broadcast dwords (Q4_0: 4 for the low nibbles, 4 for the high), which leaves lane r with
 * the row's exact block sum, with no reduction; the correction (128 or 8 times the sum of
 * the activation block) starts the sum. Then add_block, as everywhere.
 */
#define FEW_MAX 8
/* Blocks whose corrections and scales few computes at once (its stack: 2 x FEW_MAX x
 * FEW_CHUNK dwords). */
#define FEW_CHUNK 256

/* Q4_0: the 16 bytes of nibbles of 16 rows transposed, out[k] lane r = dword k of row r
 * (rows past rn zero): four rows per vector, one per 128-bit lane, then a 4 x 4 transpose
 * within each lane. */
INL void transpose_16x4(const char *q, size_t ws, int rn, __m512i out[4]) {
    __m512i v[4];
    for (int k = 0; k < 4; k++) {
        v[k] = _mm512_castsi128_si512(load_row128(q + (size_t)(4 * 0 + k) * ws, k, rn));
        v[k] = _mm512_inserti32x4(v[k], load_row128(q + (size_t)(4 + k) * ws, 4 + k, rn), 1);
        v[k] = _mm512_inserti32x4(v[k], load_row128(q + (size_t)(8 + k) * ws, 8 + k, rn), 2);
        v[k] = _mm512_inserti32x4(v[k], load_row128(q + (size_t)(12 + k) * ws, 12 + k, rn), 3);
    }
    /* v[k], lane L: row 4L + k's dwords 0..3. */
    const __m512i t0 = _mm512_unpacklo_epi32(v[0], v[1]), t1 = _mm512_unpackhi_epi32(v[0], v[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(v[2], v[3]), t3 = _mm512_unpackhi_epi32(v[2], v[3]);
    out[0] = _mm512_unpacklo_epi64(t0, t2);
    out[1] = _mm512_unpackhi_epi64(t0, t2);
    out[2] = _mm512_unpacklo_epi64(t1, t3);
    out[3] = _mm512_unpackhi_epi64(t1, t3);
}

INL void few_rows(const int kind, const int cn, const int rn, int nbk, const char *wr, size_t ws,
                  const char *ac, size_t as, const int32_t (*corr)[FEW_CHUNK],
                  const float (*da)[FEW_CHUNK], const char *pf, __mmask16 rmask, __m512i rowoff,
                  __m512 acc[FEW_MAX]) {
    const size_t bb = block_bytes(kind);
    for (int i = 0; i < nbk; i++) {
        const char *wb = wr + (size_t)i * bb;
        if (pf != NULL && (i & 1) == 0) {
            const char *q = pf + (size_t)i * bb;
            for (int r = 0; r < 16; r++, q += ws)
                _mm_prefetch(q, _MM_HINT_T0);
        }
        __m512i t[8];
        if (kind == K_Q4_0) {
            __m512i u[4];
            transpose_16x4(wb + 2, ws, rn, u);
            const __m512i m4 = _mm512_set1_epi8(0x0F);
            for (int k = 0; k < 4; k++) {
                t[k] = _mm512_and_si512(u[k], m4);
                t[4 + k] = _mm512_and_si512(_mm512_srli_epi16(u[k], 4), m4);
            }
        } else {
            transpose_16x8(wb + 2, ws, rn, t);
            for (int k = 0; k < 8; k++)
                t[k] = _mm512_xor_si512(t[k], _mm512_set1_epi8((char)0x80));
        }
        const __m512 dw = row_scales(wb, rmask, rowoff);
        for (int m = 0; m < cn; m++) {
            const char *ab = ac + (size_t)m * as + (size_t)i * sizeof(ctn_block_q8_0);
            __m512i sum = _mm512_set1_epi32(-corr[m][i]);
            for (int k = 0; k < 8; k++) {
                int32_t d;
                memcpy(&d, ab + 2 + 4 * k, 4);
                sum = _mm512_dpbusd_epi32(sum, t[k], _mm512_set1_epi32(d));
            }
            acc[m] = add_block(acc[m], sum, dw, da[m][i]);
        }
    }
}

INL void few_cols(const int kind, const int cn, int64_t nb, const char *w, size_t ws, int64_t nr,
                  const char *a, size_t as, float *y, size_t ldy) {
    int32_t corr[FEW_MAX][FEW_CHUNK];
    float da[FEW_MAX][FEW_CHUNK];
    const size_t bb = block_bytes(kind);
    for (int64_t c0 = 0; c0 < nb; c0 += FEW_CHUNK) {
        const int nbk = nb - c0 < FEW_CHUNK ? (int)(nb - c0) : FEW_CHUNK;
        for (int m = 0; m < cn; m++) {
            act_blocks(a + (size_t)m * as, c0, nbk, da[m], corr[m]);
            for (int i = 0; i < nbk; i++)
                corr[m][i] *= kind == K_Q4_0 ? 8 : 128;
        }
        for (int64_t r0 = 0; r0 < nr; r0 += 16) {
            const int rn = nr - r0 < 16 ? (int)(nr - r0) : 16;
            const __mmask16 rmask = (__mmask16)((1u << rn) - 1);
            const __m512i rowoff = row_offsets(rn, ws);
            const char *wr = w + (size_t)r0 * ws + (size_t)c0 * bb;
            const char *pf = r0 + MV_PF + 16 <= nr ? wr + (size_t)MV_PF * ws : NULL;
            __m512 acc[FEW_MAX];
            /* A chunk after the first resumes the sums kept in y. */
            for (int m = 0; m < cn; m++)
                acc[m] = c0 == 0 ? _mm512_setzero_ps()
                                 : _mm512_maskz_loadu_ps(rmask, y + (size_t)m * ldy + r0);
            const char *ac = a + (size_t)c0 * sizeof(ctn_block_q8_0);
            if (rn == 16)
                few_rows(kind, cn, 16, nbk, wr, ws, ac, as, corr, da, pf, rmask, rowoff, acc);
            else
                few_rows(kind, cn, rn, nbk, wr, ws, ac, as, corr, da, pf, rmask, rowoff, acc);
            for (int m = 0; m < cn; m++)
                _mm512_mask_storeu_ps(y + (size_t)m * ldy + r0, rmask, acc[m]);
        }
    }
}

/* few_cols with the column count a constant. */
INL void few(const int kind, int cn, int64_t nb, const char *w, size_t ws, int64_t nr,
             const char *a, size_t as, float *y, size_t ldy) {
    switch (cn) {
#define FEW(C)                                                                                     \
    case C: few_cols(kind, C, nb, w, ws, nr, a, as, y, ldy); break;
        FEW(2)
        FEW(3)
        FEW(4) FEW(5) FEW(6) FEW(7) FEW(8)
#undef FEW
            default : break;
    }
}

INL void gemm_amx(const int kind, int64_t n, const void *w, size_t ws, int64_t nr, const void *a,
                  size_t as, int64_t nc, float *y, size_t ldy) {
    const char *W = w, *A = a;
    /* Other code on this thread (another library using AMX, such as ggml) may have its own
     * tile configuration and expect to find it again: ours is loaded on first use in each
     * call, and theirs (or none) is put back before returning. */
    tile_config saved;
    _tile_storeconfig(&saved);
    configured = 0;
    if (nc == 1) {
        gemv(kind, n / 32, W, ws, nr, A, y);
        restore(&saved);
        return;
    }
    if (nc <= FEW_MAX) {
        few(kind, (int)nc, n / 32, W, ws, nr, A, as, y, ldy);
        restore(&saved);
        return;
    }
    float da[MAX_COLS * DA_CHUNK];
    const int64_t nb = n / 32;
    const size_t bb = block_bytes(kind);
    for (int64_t c0 = 0; c0 < nc; c0 += MAX_COLS) {
        const int cn = nc - c0 < MAX_COLS ? (int)(nc - c0) : MAX_COLS;
        for (int64_t b0 = 0; b0 < nb; b0 += DA_CHUNK) {
            const int nbk = nb - b0 < DA_CHUNK ? (int)(nb - b0) : DA_CHUNK;
            for (int m = 0; m < cn; m++)
                act_blocks(A + (size_t)(c0 + m) * as, b0, nbk, da + (size_t)m * DA_CHUNK, NULL);
            for (int64_t r0 = 0; r0 < nr; r0 += 16) {
                const int rn = nr - r0 < 16 ? (int)(nr - r0) : 16;
                const char *wr = W + (size_t)r0 * ws + (size_t)b0 * bb;
                slice(kind, nbk, wr, ws, rn,
                      A + (size_t)c0 * as + (size_t)b0 * sizeof(ctn_block_q8_0), as, cn, da, b0 > 0,
                      r0 + 32 <= nr ? wr + 16 * ws : NULL, y + (size_t)c0 * ldy + r0, ldy);
            }
        }
    }
    restore(&saved);
}

static void gemm_q8_0_amx(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,
                          int64_t nc, float *y, size_t ldy) {
    gemm_amx(K_Q8_0, n, w, ws, nr, a, as, nc, y, ldy);
}

static void gemm_q4_0_amx(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,
                          int64_t nc, float *y, size_t ldy) {
    gemm_amx(K_Q4_0, n, w, ws, nr, a, as, nc, y, ldy);
}

typedef void (*gemm_fn)(int64_t, const void *, size_t, int64_t, const void *, size_t, int64_t,
                        float *, size_t);

gemm_fn ctn__gemm_amx(int wtype);
gemm_fn ctn__gemm_amx(int wtype) {
    switch (wtype) {
    case CTN_TYPE_Q8_0: return gemm_q8_0_amx;
    case CTN_TYPE_Q4_0: return gemm_q4_0_amx;
    default: return NULL;
    }
}
