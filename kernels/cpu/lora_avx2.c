/*
 * LoRA products with AVX2 + FMA + F16C (lora_kern.h), the same tiling as
 * engine/lora_avx512.c with 8 lanes: down in tiles of 4 rows of A by 1..4 tokens along n_in
 * (the n_in % 8 tail widened through a zero-padded buffer), up in runs of 16 outputs (two
 * vectors per run). Compiled with AVX2 flags; called only when the CPU has them.
 * -ffp-contract=off: every fused multiply-add is written.
 */
#include <immintrin.h>
#include <string.h>

#include "types.h"
#include "lora_kern.h"
#include "quant.h"

#define INL    static inline __attribute__((always_inline))
#define UNROLL _Pragma("clang loop unroll(full)")

/* 8 values of kind (0 F32, 1 F16, 2 BF16) at element i of p. */
INL __m256 ld8(const int kind, const void *p, int64_t i) {
    if (kind == 0) return _mm256_loadu_ps((const float *)p + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    if (kind == 1) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The last n < 8 values, zeros after them. */
INL __m256 ld8_tail(const int kind, const void *p, int64_t i, int64_t n) {
    float t[8] = {0};
    for (int64_t k = 0; k < n; k++) {
        if (kind == 0) {
            t[k] = ((const float *)p)[i + k];
        } else {
            uint16_t h;
            memcpy(&h, (const char *)p + (i + k) * 2, 2);
            t[k] = kind == 1 ? ctn_fp16_to_fp32(h) : ctn_bf16_to_fp32(h);
        }
    }
    return _mm256_loadu_ps(t);
}

INL float hsum8(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 d = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
}

INL void down_tile(const int R, const int C, const int kind, const void *a, int64_t n_in, int32_t r,
                   const float *const *xs, const int32_t *tok, float *u, int64_t ldu) {
    __m256 acc[4][4];
    UNROLL for (int i = 0; i < R; i++) {
        UNROLL for (int c = 0; c < C; c++) {
            acc[i][c] = _mm256_setzero_ps();
        }
    }
    int64_t k = 0;
    for (; k + 8 <= n_in; k += 8) {
        __m256 xv[4];
        UNROLL for (int c = 0; c < C; c++) {
            xv[c] = _mm256_loadu_ps(xs[c] + k);
        }
        UNROLL for (int i = 0; i < R; i++) {
            if ((k & 31) == 0)
                _mm_prefetch((const char *)a + ((int64_t)(r + i) * n_in + k) * (kind ? 2 : 4) + 512,
                             _MM_HINT_T0);
            const __m256 w = ld8(kind, a, (int64_t)(r + i) * n_in + k);
            UNROLL for (int c = 0; c < C; c++) {
                acc[i][c] = _mm256_fmadd_ps(w, xv[c], acc[i][c]);
            }
        }
    }
    if (k < n_in) {
        __m256 xv[4];
        UNROLL for (int c = 0; c < C; c++) {
            xv[c] = ld8_tail(0, xs[c], k, n_in - k);
        }
        UNROLL for (int i = 0; i < R; i++) {
            const __m256 w = ld8_tail(kind, a, (int64_t)(r + i) * n_in + k, n_in - k);
            UNROLL for (int c = 0; c < C; c++) {
                acc[i][c] = _mm256_fmadd_ps(w, xv[c], acc[i][c]);
            }
        }
    }
    UNROLL for (int i = 0; i < R; i++) {
        UNROLL for (int c = 0; c < C; c++) {
            u[(int64_t)tok[c] * ldu + r + i] = hsum8(acc[i][c]);
        }
    }
}

INL void down_kind(const int kind, const void *a, int64_t n_in, int32_t r0, int32_t r1,
                   const float *x, int64_t ldx, const int32_t *idx, int g, float *u, int64_t ldu) {
    for (int j = 0; j < g; j += 4) {
        const int cols = g - j < 4 ? g - j : 4;
        const float *xs[4];
        for (int c = 0; c < cols; c++)
            xs[c] = x + (int64_t)idx[j + c] * ldx;
        int32_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            if (cols == 4)
                down_tile(4, 4, kind, a, n_in, r, xs, idx + j, u, ldu);
            else if (cols == 3)
                down_tile(4, 3, kind, a, n_in, r, xs, idx + j, u, ldu);
            else if (cols == 2)
                down_tile(4, 2, kind, a, n_in, r, xs, idx + j, u, ldu);
            else
                down_tile(4, 1, kind, a, n_in, r, xs, idx + j, u, ldu);
        }
        for (; r < r1; r++) {
            if (cols == 4)
                down_tile(1, 4, kind, a, n_in, r, xs, idx + j, u, ldu);
            else if (cols == 3)
                down_tile(1, 3, kind, a, n_in, r, xs, idx + j, u, ldu);
            else if (cols == 2)
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

#define UP_HELD 32 /* ranks whose widened run is kept for all tokens */

INL void up_kind(const int kind, const void *bt, int32_t rank, int64_t o0, int64_t o1,
                 const float *u, int64_t ldu, float scale, const float *sc, const int32_t *idx,
                 int g, float *y, int64_t ldy) {
    float held[UP_HELD][16];
    const int32_t nh = rank < UP_HELD ? rank : UP_HELD;
    const size_t es = kind ? 2 : 4, block = (size_t)rank * 16 * es;
    for (int64_t o = o0; o < o1; o += 16) {
        const int64_t n = o1 - o < 16 ? o1 - o : 16;
        const char *blk = (const char *)bt + (size_t)(o / 16) * block;
        if (o + 32 < o1)
            for (size_t off = 0; off < block; off += 64)
                _mm_prefetch(blk + 2 * block + off, _MM_HINT_T0);
        for (int32_t r = 0; r < nh; r++) {
            _mm256_storeu_ps(held[r], ld8(kind, blk, (int64_t)r * 16));
            _mm256_storeu_ps(held[r] + 8, ld8(kind, blk, (int64_t)r * 16 + 8));
        }
        for (int j = 0; j < g; j++) {
            const float *ut = u + (int64_t)idx[j] * ldu;
            __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
            for (int32_t r = 0; r < rank; r++) {
                const __m256 ur = _mm256_set1_ps(ut[r]);
                const __m256 wl =
                    r < nh ? _mm256_loadu_ps(held[r]) : ld8(kind, blk, (int64_t)r * 16);
                const __m256 wh =
                    r < nh ? _mm256_loadu_ps(held[r] + 8) : ld8(kind, blk, (int64_t)r * 16 + 8);
                lo = _mm256_fmadd_ps(wl, ur, lo);
                hi = _mm256_fmadd_ps(wh, ur, hi);
            }
            const __m256 c = _mm256_set1_ps(scale * sc[idx[j]]);
            float *yt = y + (int64_t)idx[j] * ldy + o;
            if (n == 16) {
                _mm256_storeu_ps(yt, _mm256_fmadd_ps(c, lo, _mm256_loadu_ps(yt)));
                _mm256_storeu_ps(yt + 8, _mm256_fmadd_ps(c, hi, _mm256_loadu_ps(yt + 8)));
            } else { /* the last, partial run: the same arithmetic through a buffer */
                float t[16] = {0};
                memcpy(t, yt, (size_t)n * sizeof *t);
                _mm256_storeu_ps(t, _mm256_fmadd_ps(c, lo, _mm256_loadu_ps(t)));
                _mm256_storeu_ps(t + 8, _mm256_fmadd_ps(c, hi, _mm256_loadu_ps(t + 8)));
                memcpy(yt, t, (size_t)n * sizeof *t);
            }
        }
    }
}

static void up(int type, const void *bt, int64_t n_out, int32_t rank, int64_t o0, int64_t o1,
               const float *u, int64_t ldu, float scale, const float *sc, const int32_t *idx, int g,
               float *y, int64_t ldy) {
    (void)n_out;
    if (type == CTN_TYPE_F32)
        up_kind(0, bt, rank, o0, o1, u, ldu, scale, sc, idx, g, y, ldy);
    else if (type == CTN_TYPE_F16)
        up_kind(1, bt, rank, o0, o1, u, ldu, scale, sc, idx, g, y, ldy);
    else
        up_kind(2, bt, rank, o0, o1, u, ldu, scale, sc, idx, g, y, ldy);
}

const ctn_lora_kern ctn__lora_kern_avx2 = {down, up};
