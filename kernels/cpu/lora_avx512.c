/*
 * LoRA products with AVX-512 (lora_kern.h). Compiled with AVX-512 flags; called only when
 * the CPU has them (lora_kern.c). -ffp-contract=off: every fused multiply-add is written.
 *
 * down: tiles of 4 rows of A by 1..4 tokens, 16 lanes along n_in (a masked step for the
 *       tail), one horizontal sum per (row, token) at the end; the rows are prefetched
 *       512 bytes ahead (adapters live in L3 or DRAM, and a row is too short for the
 *       hardware prefetcher to get going).
 * up:   runs of 16 outputs: the run's contiguous rank x 16 block of Bt is widened to F32
 *       once (up to 64 ranks; beyond that each token reads it again), the block two runs
 *       ahead prefetched, then each token adds sum_r Bt[r][o..o+16] * u[r] with no
 *       horizontal sums.
 */
#include <immintrin.h>
#include <string.h>

#include "types.h"
#include "lora_kern.h"

#define INL    static inline __attribute__((always_inline))
#define UNROLL _Pragma("clang loop unroll(full)")

INL __m512 ld(const int kind, const void *p, int64_t i, __mmask16 m) {
    if (kind == 0) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (kind == 1) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INL void down_tile(const int R, const int C, const int kind, const void *a, int64_t n_in, int32_t r,
                   const float *const *xs, const int32_t *tok, float *u, int64_t ldu) {
    __m512 acc[4][4];
    UNROLL for (int i = 0; i < R; i++) {
        UNROLL for (int c = 0; c < C; c++) {
            acc[i][c] = _mm512_setzero_ps();
        }
    }
    for (int64_t k = 0; k < n_in; k += 16) {
        const __mmask16 m =
            n_in - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n_in - k)) - 1);
        __m512 xv[4];
        UNROLL for (int c = 0; c < C; c++) {
            xv[c] = _mm512_maskz_loadu_ps(m, xs[c] + k);
        }
        UNROLL for (int i = 0; i < R; i++) {
            if ((k & 31) == 0) /* one line of 64 bytes per 32 (F16) or 16 (F32) values */
                _mm_prefetch((const char *)a + ((int64_t)(r + i) * n_in + k) * (kind ? 2 : 4) + 512,
                             _MM_HINT_T0);
            if (kind == 0 && (k & 31) == 16)
                _mm_prefetch((const char *)a + ((int64_t)(r + i) * n_in + k) * 4 + 512,
                             _MM_HINT_T0);
            const __m512 w = ld(kind, a, (int64_t)(r + i) * n_in + k, m);
            UNROLL for (int c = 0; c < C; c++) {
                acc[i][c] = _mm512_fmadd_ps(w, xv[c], acc[i][c]);
            }
        }
    }
    UNROLL for (int i = 0; i < R; i++) {
        UNROLL for (int c = 0; c < C; c++) {
            u[(int64_t)tok[c] * ldu + r + i] = _mm512_reduce_add_ps(acc[i][c]);
        }
    }
}

INL void down_kind(const int kind, const void *a, int64_t n_in, int32_t r0, int32_t r1,
                   const float *x, int64_t ldx, const int32_t *idx, int g, float *u, int64_t ldu) {
    int j = 0;
    for (; j + 4 <= g; j += 4) {
        const float *xs[4];
        for (int c = 0; c < 4; c++)
            xs[c] = x + (int64_t)idx[j + c] * ldx;
        int32_t r = r0;
        for (; r + 4 <= r1; r += 4)
            down_tile(4, 4, kind, a, n_in, r, xs, idx + j, u, ldu);
        for (; r < r1; r++)
            down_tile(1, 4, kind, a, n_in, r, xs, idx + j, u, ldu);
    }
    const int rest = g - j; /* 0..3 tokens, one tile of that width */
    if (rest > 0) {
        const float *xs[4];
        for (int c = 0; c < rest; c++)
            xs[c] = x + (int64_t)idx[j + c] * ldx;
        int32_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            if (rest == 3)
                down_tile(4, 3, kind, a, n_in, r, xs, idx + j, u, ldu);
            else if (rest == 2)
                down_tile(4, 2, kind, a, n_in, r, xs, idx + j, u, ldu);
            else
                down_tile(4, 1, kind, a, n_in, r, xs, idx + j, u, ldu);
        }
        for (; r < r1; r++) {
            if (rest == 3)
                down_tile(1, 3, kind, a, n_in, r, xs, idx + j, u, ldu);
            else if (rest == 2)
                down_tile(1, 2, kind, a, n_in, r, xs, idx + j, u, ldu);
            else
                down_tile(1, 1, kind, a, n_in, r, xs, idx + j, u, ldu);
        }
    }
}

static void down(int type, const void *a, int64_t n_in, int32_t r0, int32_t r1, const float *x,
                 int64_t ldx, const int32_t *idx, int g, float *u, int64_t ldu) {
    if (type == CTN_TYPE_F32)
        down_kind(0, a, n_in, r0, r1, x, ldx, idx, g, u, ldu);
    else if (type == CTN_TYPE_F16)
        down_kind(1, a, n_in, r0, r1, x, ldx, idx, g, u, ldu);
    else
        down_kind(2, a, n_in, r0, r1, x, ldx, idx, g, u, ldu);
}

#define UP_HELD 64 /* ranks whose widened block is kept for all tokens */

INL void up_kind(const int kind, const void *bt, int64_t n_out, int32_t rank, int64_t o0,
                 int64_t o1, const float *u, int64_t ldu, float scale, const float *sc,
                 const int32_t *idx, int g, float *y, int64_t ldy) {
    (void)n_out;
    __m512 held[UP_HELD];
    const int32_t nh = rank < UP_HELD ? rank : UP_HELD;
    const size_t es = kind ? 2 : 4, block = (size_t)rank * 16 * es;
    for (int64_t o = o0; o < o1; o += 16) {
        const __mmask16 m = o1 - o >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (o1 - o)) - 1);
        /* Runs start at multiples of 16 (o0 is one): run o / 16's block. */
        const char *blk = (const char *)bt + (size_t)(o / 16) * block;
        if (o + 32 < o1)
            for (size_t off = 0; off < block; off += 64)
                _mm_prefetch(blk + 2 * block + off, _MM_HINT_T0);
        for (int32_t r = 0; r < nh; r++)
            held[r] = ld(kind, blk, (int64_t)r * 16, (__mmask16)0xFFFF);
        for (int j = 0; j < g; j++) {
            const float *ut = u + (int64_t)idx[j] * ldu;
            __m512 acc = _mm512_setzero_ps();
            int32_t r = 0;
            for (; r < nh; r++)
                acc = _mm512_fmadd_ps(held[r], _mm512_set1_ps(ut[r]), acc);
            for (; r < rank; r++)
                acc = _mm512_fmadd_ps(ld(kind, blk, (int64_t)r * 16, (__mmask16)0xFFFF),
                                      _mm512_set1_ps(ut[r]), acc);
            float *yt = y + (int64_t)idx[j] * ldy + o;
            const __m512 c = _mm512_set1_ps(scale * sc[idx[j]]);
            _mm512_mask_storeu_ps(yt, m, _mm512_fmadd_ps(c, acc, _mm512_maskz_loadu_ps(m, yt)));
        }
    }
}

static void up(int type, const void *bt, int64_t n_out, int32_t rank, int64_t o0, int64_t o1,
               const float *u, int64_t ldu, float scale, const float *sc, const int32_t *idx, int g,
               float *y, int64_t ldy) {
    if (type == CTN_TYPE_F32)
        up_kind(0, bt, n_out, rank, o0, o1, u, ldu, scale, sc, idx, g, y, ldy);
    else if (type == CTN_TYPE_F16)
        up_kind(1, bt, n_out, rank, o0, o1, u, ldu, scale, sc, idx, g, y, ldy);
    else
        up_kind(2, bt, n_out, rank, o0, o1, u, ldu, scale, sc, idx, g, y, ldy);
}

const ctn_lora_kern ctn__lora_kern_avx512 = {down, up};
