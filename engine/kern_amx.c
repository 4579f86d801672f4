/*
 * Q8_0 x Q8_0 matrix products on AMX tiles (Intel Sapphire Rapids and later), compiled
 * with AMX-TILE / AMX-INT8 / AVX-512 flags (CMakeLists.txt); kern.c uses them only when
 * the CPU has AMX, the OS grants the tile state (arch_prctl), and CATENA_ISA allows.
 *
 * One TDPBSSD per 32-value block multiplies up to 16 activation rows (A: 16 x 32 int8)
 * by 16 weight rows (B: the same 32 values of each row, in the VNNI layout of 4-byte
 * groups: B[k / 4][row * 4 + k % 4]) into a 16 x 16 int32 tile of block sums. Each element
 * then takes one fused multiply-add in float, acc = fma(sum, d_w * d_a, acc), block after
 * block: the same arithmetic in the same order for every element, whatever the tile shape
 * or the number of rows and columns (batch invariance, kern.h).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "amx.h"
#include "gguf.h"
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

/* Tiles for one activation row against m weight rows: A = the weight rows (m x 32 bytes,
 * straight from the matrix), B = the row's 32 codes as 8 x 4 bytes, C = m x 1 sums. */
static inline void configure_mv(int m) {
    load_config(16 + m, m, 32, 8, 4, m, 4);
}

/*
 * B for one block of up to 16 weight rows (rows past rn are zero): the 16 x 8 dwords of
 * their codes transposed to 8 x 16, bt[k4 * 16 + row] = dword k4 of the row. Two rows per
 * register, then 4 x 4 sub-blocks (permutex2var), then 128-bit chunks (shuffle_i32x4).
 */
static inline void build_b(const char *wb, size_t ws, int rn, int32_t *bt) {
    __m512i rows[8];
    for (int k = 0; k < 8; k++) {
        const int r0 = 2 * k, r1 = r0 + 1;
        const __m256i lo = r0 < rn ? _mm256_loadu_si256((const __m256i *)(wb + (size_t)r0 * ws + 2))
                                   : _mm256_setzero_si256();
        const __m256i hi = r1 < rn ? _mm256_loadu_si256((const __m256i *)(wb + (size_t)r1 * ws + 2))
                                   : _mm256_setzero_si256();
        rows[k] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    /* u[j][h]: rows 4j..4j+3, dwords 4h..4h+3, lane (k4 - 4h) * 4 + (row - 4j). rows[2j]
     * holds rows 4j, 4j+1 (dword k at lane k, 8 + k); rows[2j + 1] rows 4j+2, 4j+3 (16 +). */
    __m512i u[4][2];
    for (int h = 0; h < 2; h++) {
        int idx[16];
        for (int q = 0; q < 4; q++)
            for (int r = 0; r < 4; r++)
                idx[q * 4 + r] = (r / 2) * 16 + (r % 2) * 8 + 4 * h + q;
        const __m512i vi = _mm512_loadu_si512(idx);
        for (int j = 0; j < 4; j++)
            u[j][h] = _mm512_permutex2var_epi32(rows[2 * j], vi, rows[2 * j + 1]);
    }
    for (int k4 = 0; k4 < 8; k4++) {
        const int h = k4 / 4, q = k4 % 4;
        const int imm = q | q << 2 | q << 4 | q << 6;
        __m512i x, y;
        switch (imm) { /* shuffle_i32x4 needs an immediate */
#define SHUF(I)                                                                                    \
    case I:                                                                                        \
        x = _mm512_shuffle_i32x4(u[0][h], u[1][h], I);                                             \
        y = _mm512_shuffle_i32x4(u[2][h], u[3][h], I);                                             \
        break;
            SHUF(0x00)
            SHUF(0x55)
            SHUF(0xAA)
            SHUF(0xFF)
#undef SHUF
        default: x = y = _mm512_setzero_si512();
        }
        _mm512_store_si512(bt + k4 * 16, _mm512_shuffle_i32x4(x, y, 0x88));
    }
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
 * The one place a block's integer sums join the accumulators, for both shapes of product:
 * acc = fma(float(sum), d_w * d_a, acc), with d_a the activation block's half scale at ab.
 * Every element of every product goes through this, block after block (batch invariance).
 */
static inline __m512 add_block(__m512 acc, __m512i sums, __m512 dw, const char *ab) {
    uint16_t dah;
    memcpy(&dah, ab, 2);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums),
                           _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(dah))), acc);
}

/*
 * One slice of up to 16 weight rows against up to MAX_COLS activation rows. For each block:
 * B built in the VNNI layout once, then one tile product per 16 activation rows.
 */
static void slice(int64_t nb, const char *wr, size_t ws, int rn, const char *ar, size_t as, int cn,
                  float *y, size_t ldy) {
    _Alignas(64) int32_t bt[8 * 16];
    _Alignas(64) int32_t cs[16 * 16];
    _Alignas(64) float acc[MAX_COLS][16];
    memset(acc, 0, sizeof acc);
    const __mmask16 rmask = (__mmask16)((1u << rn) - 1);
    const __m512i rowoff = row_offsets(rn, ws);
    for (int64_t b = 0; b < nb; b++) {
        const char *wb = wr + (size_t)b * sizeof(ctn_block_q8_0);
        build_b(wb, ws, rn, bt);
        const __m512 dw = row_scales(wb, rmask, rowoff);
        configure(cn < 16 ? cn : 16);
        _tile_loadd(2, bt, 64);
        for (int c0 = 0; c0 < cn; c0 += 16) {
            const int m_n = cn - c0 < 16 ? cn - c0 : 16;
            const char *ab = ar + (size_t)c0 * as + (size_t)b * sizeof(ctn_block_q8_0);
            if (configure(m_n)) _tile_loadd(2, bt, 64);
            _tile_loadd(1, ab + 2, (long)as);
            _tile_zero(0);
            _tile_dpbssd(0, 1, 2);
            _tile_stored(0, cs, 64);
            for (int m = 0; m < m_n; m++)
                _mm512_store_ps(acc[c0 + m],
                                add_block(_mm512_load_ps(acc[c0 + m]),
                                          _mm512_load_si512(cs + m * 16), dw, ab + (size_t)m * as));
        }
    }
    for (int m = 0; m < cn; m++)
        _mm512_mask_storeu_ps(y + (size_t)m * ldy, rmask, _mm512_load_ps(acc[m]));
}

/*
 * One activation row: the weights are the A tile (no transposition), the activation's codes
 * the B tile, and each block's m x 1 sums one vector. The arithmetic per element is the
 * slice's: fma(float(sum), d_w * d_a, acc), block after block, so the bits are the same.
 */
static void gemv(int64_t nb, const char *w, size_t ws, int64_t nr, const char *a, float *y) {
    _Alignas(64) int32_t cs[16], cs2[16];
    for (int64_t r0 = 0; r0 < nr; r0 += 16) {
        const int rn = nr - r0 < 16 ? (int)(nr - r0) : 16;
        const __mmask16 rmask = (__mmask16)((1u << rn) - 1);
        const __m512i rowoff = row_offsets(rn, ws);
        const char *wr = w + (size_t)r0 * ws;
        configure_mv(rn);
        __m512 acc = _mm512_setzero_ps();
        /* Two blocks at a time in separate tiles (C 0 / 3, A 1 / 4, B 2 / 5), so that one
         * block's product overlaps the other's loads; the sums are still added in block
         * order. The rows four tiles ahead are prefetched (one line per row per two
         * blocks, 68 bytes). */
        const char *pf = r0 + 64 < nr ? wr + (size_t)64 * ws : NULL;
        int64_t b = 0;
        for (; b + 2 <= nb; b += 2) {
            const char *wb = wr + (size_t)b * sizeof(ctn_block_q8_0);
            const char *ab = a + (size_t)b * sizeof(ctn_block_q8_0);
            if (pf != NULL)
                for (int r = 0; r < rn && r0 + 64 + r < nr; r++)
                    _mm_prefetch(pf + (size_t)r * ws + (size_t)b * sizeof(ctn_block_q8_0),
                                 _MM_HINT_T0);
            _tile_loadd(1, wb + 2, (long)ws);
            _tile_loadd(2, ab + 2, 4);
            _tile_loadd(4, wb + sizeof(ctn_block_q8_0) + 2, (long)ws);
            _tile_loadd(5, ab + sizeof(ctn_block_q8_0) + 2, 4);
            _tile_zero(0);
            _tile_zero(3);
            _tile_dpbssd(0, 1, 2);
            _tile_dpbssd(3, 4, 5);
            _tile_stored(0, cs, 4);
            _tile_stored(3, cs2, 4);
            for (int k = 0; k < 2; k++) {
                const size_t off = (size_t)k * sizeof(ctn_block_q8_0);
                acc = add_block(acc, _mm512_maskz_load_epi32(rmask, k ? cs2 : cs),
                                row_scales(wb + off, rmask, rowoff), ab + off);
            }
        }
        for (; b < nb; b++) {
            const char *wb = wr + (size_t)b * sizeof(ctn_block_q8_0);
            const char *ab = a + (size_t)b * sizeof(ctn_block_q8_0);
            _tile_loadd(1, wb + 2, (long)ws);
            _tile_loadd(2, ab + 2, 4);
            _tile_zero(0);
            _tile_dpbssd(0, 1, 2);
            _tile_stored(0, cs, 4);
            acc = add_block(acc, _mm512_maskz_load_epi32(rmask, cs), row_scales(wb, rmask, rowoff),
                            ab);
        }
        _mm512_mask_storeu_ps(y + r0, rmask, acc);
    }
}

static void gemm_q8_0_amx(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,
                          int64_t nc, float *y, size_t ldy) {
    const char *W = w, *A = a;
    /* Other code on this thread (another library using AMX, such as ggml) may have its own
     * tile configuration and expect to find it again: ours is loaded on first use in each
     * call, and theirs (or none) is put back before returning. */
    tile_config saved;
    _tile_storeconfig(&saved);
    configured = 0;
    if (nc == 1) {
        gemv(n / 32, W, ws, nr, A, y);
        restore(&saved);
        return;
    }
    for (int64_t c0 = 0; c0 < nc; c0 += MAX_COLS) {
        const int cn = nc - c0 < MAX_COLS ? (int)(nc - c0) : MAX_COLS;
        for (int64_t r0 = 0; r0 < nr; r0 += 16) {
            const int rn = nr - r0 < 16 ? (int)(nr - r0) : 16;
            slice(n / 32, W + (size_t)r0 * ws, ws, rn, A + (size_t)c0 * as, as, cn,
                  y + (size_t)c0 * ldy + r0, ldy);
        }
    }
    restore(&saved);
}

typedef void (*gemm_fn)(int64_t, const void *, size_t, int64_t, const void *, size_t, int64_t,
                        float *, size_t);

gemm_fn ctn__gemm_amx(int wtype);
gemm_fn ctn__gemm_amx(int wtype) {
    return wtype == CTN_TYPE_Q8_0 ? gemm_q8_0_amx : NULL;
}
