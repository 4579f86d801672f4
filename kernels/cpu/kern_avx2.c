/*
 * AVX2 + FMA + F16C kernels. Compiled with its own target flags; kern.c calls in only after
 * checking the CPU.
 *
 * As in kern_avx512.c, every gemm walks the output in RM x CM tiles of one always-inlined
 * tile function, edges included (R or C = 1), and each (row, column) pair gets its own
 * accumulator updated by the same instructions in the same order: batch invariance.
 *
 * Q4_1, Q5_0 and Q5_1 have no kernel here (they fall back to the scalar one): no model we
 * run uses them for large matrices.
 */
#include <immintrin.h>
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

gemm_fn ctn__gemm_avx2(int wtype);
const ctn_vec *ctn__vec_avx2(void);
void ctn__from_q8_0_avx2(const float *x, void *a, int64_t n);
void ctn__from_q8_K_avx2(const float *x, void *a, int64_t n);

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

#define GEMM_DRIVER(name, tile, RM, CM, RV)                                                        \
    static void name(int64_t n, const void *w, size_t ws, int64_t nr, const void *a, size_t as,    \
                     int64_t nc, float *y, size_t ldy) {                                           \
        const char *W = w, *A = a;                                                                 \
        for (int64_t r0 = 0; r0 < nr; r0 += RBLK) {                                                \
            const int64_t r1 = r0 + RBLK < nr ? r0 + RBLK : nr;                                    \
            int64_t c = 0, r;                                                                      \
            for (; c + CM <= nc; c += CM) {                                                        \
                for (r = r0; r + RM <= r1; r += RM) {                                              \
                    if (nc < 2 * CM) prefetch_rows(W + (r + RM) * ws, RM * ws, W + nr * ws);       \
                    tile(RM, CM, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, ldy);         \
                }                                                                                  \
                for (; r < r1; r++)                                                                \
                    tile(1, CM, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, ldy);          \
            }                                                                                      \
            for (; c < nc; c++) {                                                                  \
                for (r = r0; r + RV <= r1; r += RV) {                                              \
                    if (nc == 1) prefetch_rows(W + (r + RV) * ws, RV * ws, W + nr * ws);           \
                    tile(RV, 1, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, ldy);          \
                }                                                                                  \
                for (; r < r1; r++)                                                                \
                    tile(1, 1, n, W + r * ws, ws, A + c * as, as, y + c * ldy + r, ldy);           \
            }                                                                                      \
        }                                                                                          \
    }

/* The same fixed summation order for every output. */
INL float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INL float half(uint16_t h) {
    return _cvtsh_ss(h);
}

INL __m256i madd1(__m256i v) {
    return _mm256_madd_epi16(v, _mm256_set1_epi16(1));
}

/* ==== Q8_0 and Q4_0 x Q8_0: one block per vector ============================================ */

/* sign(w) moves onto a so that maddubs multiplies |w| (u8) by a * sign(w) (s8). */
INL void tile_q8_0(const int R, const int C, int64_t n, const char *w, size_t ws, const char *a,
                   size_t as, float *y, size_t ldy) {
    const int64_t nb = n / 32;
    __m256 acc[8][4];
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            acc[r][c] = _mm256_setzero_ps();
        }
    }
    for (int64_t i = 0; i < nb; i++) {
        __m256i av[4];
        float ad[4];
        UNROLL for (int c = 0; c < C; c++) {
            const ctn_block_q8_0 *b = (const ctn_block_q8_0 *)(a + c * as) + i;
            av[c] = _mm256_loadu_si256((const __m256i *)b->qs);
            ad[c] = half(b->d);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const ctn_block_q8_0 *b = (const ctn_block_q8_0 *)(w + r * ws) + i;
            const __m256i wv = _mm256_loadu_si256((const __m256i *)b->qs);
            const __m256i wa = _mm256_sign_epi8(wv, wv);
            const float wd = half(b->d);
            UNROLL for (int c = 0; c < C; c++) {
                const __m256i s = madd1(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(av[c], wv)));
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(wd * ad[c]), acc[r][c]);
            }
        }
    }
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            y[c * ldy + r] = hsum(acc[r][c]);
        }
    }
}

/* (q - 8) . a = q . a - 8 * sum(a), both through maddubs (no saturation for q <= 15). */
INL void tile_q4_0(const int R, const int C, int64_t n, const char *w, size_t ws, const char *a,
                   size_t as, float *y, size_t ldy) {
    const int64_t nb = n / 32;
    const __m256i lo4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
    __m256 acc[8][4];
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            acc[r][c] = _mm256_setzero_ps();
        }
    }
    for (int64_t i = 0; i < nb; i++) {
        __m256i av[4], corr[4];
        float ad[4];
        UNROLL for (int c = 0; c < C; c++) {
            const ctn_block_q8_0 *b = (const ctn_block_q8_0 *)(a + c * as) + i;
            av[c] = _mm256_loadu_si256((const __m256i *)b->qs);
            corr[c] = _mm256_maddubs_epi16(eight, av[c]);
            ad[c] = half(b->d);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const ctn_block_q4_0 *b = (const ctn_block_q4_0 *)(w + r * ws) + i;
            const __m128i x = _mm_loadu_si128((const __m128i *)b->qs);
            const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), lo4);
            const float wd = half(b->d);
            UNROLL for (int c = 0; c < C; c++) {
                const __m256i s = madd1(_mm256_sub_epi16(_mm256_maddubs_epi16(q, av[c]), corr[c]));
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(wd * ad[c]), acc[r][c]);
            }
        }
    }
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            y[c * ldy + r] = hsum(acc[r][c]);
        }
    }
}

/* ==== K-quants x Q8_K: 32 values per vector ================================================= */

/* The 8 scales and 8 mins of a Q4_K / Q5_K super-block. */
INL void k4_scales(const uint8_t s[12], uint8_t sc[8], __m128i *m) {
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    const uint32_t sc_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
    const uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 6) & 0x03030303u) << 4;
    const uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 6) & 0x03030303u) << 4;
    memcpy(sc, &sc_lo, 4);
    memcpy(sc + 4, &sc_hi, 4);
    *m = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)((uint64_t)m_hi << 32 | m_lo)));
}

INL __m256i q4_K_chunk(const ctn_block_q4_K *b, int j) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (j / 2)));
    return _mm256_and_si256(_mm256_srli_epi16(v, 4 * (j & 1)), _mm256_set1_epi8(0x0F));
}

INL __m256i q5_K_chunk(const ctn_block_q5_K *b, int j) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (j / 2)));
    const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(v, 4 * (j & 1)), _mm256_set1_epi8(0x0F));
    const __m256i h = _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)b->qh), j);
    return _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(1)), 4));
}

/* Chunk j (values 32j .. 32j + 31) of a Q6_K super-block: half j / 4, quarter j % 4. */
INL __m256i q6_K_chunk(const ctn_block_q6_K *b, int j) {
    const int h = j / 4, t = j % 4;
    __m256i l = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (t & 1)));
    l = _mm256_and_si256(_mm256_srli_epi16(l, 4 * (t >> 1)), _mm256_set1_epi8(0x0F));
    const __m256i hb =
        _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)), 2 * t);
    return _mm256_or_si256(l, _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(3)), 4));
}

#define TILE_K4(NAME, BT, CHUNK)                                                                   \
    INL void NAME(const int R, const int C, int64_t n, const char *w, size_t ws, const char *a,    \
                  size_t as, float *y, size_t ldy) {                                               \
        const int64_t nb = n / 256;                                                                \
        __m256 acc[8][4];                                                                          \
        UNROLL for (int r = 0; r < R; r++) {                                                       \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                acc[r][c] = _mm256_setzero_ps();                                                   \
            }                                                                                      \
        }                                                                                          \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            uint8_t sc[8][8];                                                                      \
            __m128i mn[8], bp[4];                                                                  \
            float wd[8], wm[8], da[4];                                                             \
            __m256i isum[8][4];                                                                    \
            UNROLL for (int r = 0; r < R; r++) {                                                   \
                const BT *b = (const BT *)(w + r * ws) + i;                                        \
                k4_scales(b->scales, sc[r], &mn[r]);                                               \
                wd[r] = half(b->d);                                                                \
                wm[r] = half(b->dmin);                                                             \
            }                                                                                      \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                const ctn_block_q8_K *b = (const ctn_block_q8_K *)(a + c * as) + i;                \
                da[c] = b->d;                                                                      \
                bp[c] = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)b->bsums),                 \
                                       _mm_loadu_si128((const __m128i *)(b->bsums + 8)));          \
                UNROLL for (int r = 0; r < R; r++) {                                               \
                    isum[r][c] = _mm256_setzero_si256();                                           \
                }                                                                                  \
            }                                                                                      \
            UNROLL for (int j = 0; j < 8; j++) {                                                   \
                __m256i av[4];                                                                     \
                UNROLL for (int c = 0; c < C; c++) {                                               \
                    av[c] = _mm256_loadu_si256(                                                    \
                        (const __m256i *)(((const ctn_block_q8_K *)(a + c * as) + i)->qs +         \
                                          32 * j));                                                \
                }                                                                                  \
                UNROLL for (int r = 0; r < R; r++) {                                               \
                    const __m256i q = CHUNK((const BT *)(w + r * ws) + i, j);                      \
                    const __m256i s = _mm256_set1_epi16(sc[r][j]);                                 \
                    UNROLL for (int c = 0; c < C; c++) {                                           \
                        isum[r][c] = _mm256_add_epi32(                                             \
                            isum[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(q, av[c]), s));     \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            UNROLL for (int r = 0; r < R; r++) {                                                   \
                UNROLL for (int c = 0; c < C; c++) {                                               \
                    const __m256i mm = _mm256_zextsi128_si256(_mm_madd_epi16(mn[r], bp[c]));       \
                    acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r][c]),                    \
                                                _mm256_set1_ps(wd[r] * da[c]), acc[r][c]);         \
                    acc[r][c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mm),                           \
                                                 _mm256_set1_ps(wm[r] * da[c]), acc[r][c]);        \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        UNROLL for (int r = 0; r < R; r++) {                                                       \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                y[c * ldy + r] = hsum(acc[r][c]);                                                  \
            }                                                                                      \
        }                                                                                          \
    }

TILE_K4(tile_q4_K, ctn_block_q4_K, q4_K_chunk)
TILE_K4(tile_q5_K, ctn_block_q5_K, q5_K_chunk)

INL void tile_q6_K(const int R, const int C, int64_t n, const char *w, size_t ws, const char *a,
                   size_t as, float *y, size_t ldy) {
    const int64_t nb = n / 256;
    __m256 acc[8][4];
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            acc[r][c] = _mm256_setzero_ps();
        }
    }
    for (int64_t i = 0; i < nb; i++) {
        __m256i sc16[8];
        const int8_t *sc[8];
        float wd[8], da[4];
        __m256i isum[8][4];
        UNROLL for (int r = 0; r < R; r++) {
            const ctn_block_q6_K *b = (const ctn_block_q6_K *)(w + r * ws) + i;
            sc[r] = b->scales;
            sc16[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
            wd[r] = half(b->d);
        }
        UNROLL for (int c = 0; c < C; c++) {
            const ctn_block_q8_K *b = (const ctn_block_q8_K *)(a + c * as) + i;
            da[c] = b->d;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)b->bsums);
            UNROLL for (int r = 0; r < R; r++) {
                isum[r][c] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                              _mm256_slli_epi32(_mm256_madd_epi16(sc16[r], bs), 5));
            }
        }
        UNROLL for (int j = 0; j < 8; j++) {
            __m256i av[4];
            UNROLL for (int c = 0; c < C; c++) {
                av[c] = _mm256_loadu_si256(
                    (const __m256i *)(((const ctn_block_q8_K *)(a + c * as) + i)->qs + 32 * j));
            }
            UNROLL for (int r = 0; r < R; r++) {
                const __m256i q = q6_K_chunk((const ctn_block_q6_K *)(w + r * ws) + i, j);
                const __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[r][2 * j + 1]),
                                                   _mm_set1_epi16(sc[r][2 * j]));
                UNROLL for (int c = 0; c < C; c++) {
                    isum[r][c] = _mm256_add_epi32(
                        isum[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(q, av[c]), s));
                }
            }
        }
        UNROLL for (int r = 0; r < R; r++) {
            UNROLL for (int c = 0; c < C; c++) {
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r][c]),
                                            _mm256_set1_ps(wd[r] * da[c]), acc[r][c]);
            }
        }
    }
    UNROLL for (int r = 0; r < R; r++) {
        UNROLL for (int c = 0; c < C; c++) {
            y[c * ldy + r] = hsum(acc[r][c]);
        }
    }
}

/* ==== F32, F16, BF16: 8 lanes, then a scalar tail added after the horizontal sum ========= */

INL __m256 ld_f32(const char *p, int64_t i) {
    return _mm256_loadu_ps((const float *)p + i);
}

INL __m256 ld_f16(const char *p, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}

INL __m256 ld_bf16(const char *p, int64_t i) {
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INL float el_f32(const char *p, int64_t i) {
    return ((const float *)p)[i];
}

INL float el_f16(const char *p, int64_t i) {
    return half(((const uint16_t *)p)[i]);
}

INL float el_bf16(const char *p, int64_t i) {
    const uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#define TILE_FLOAT(NAME, LD, EL)                                                                   \
    INL void NAME(const int R, const int C, int64_t n, const char *w, size_t ws, const char *a,    \
                  size_t as, float *y, size_t ldy) {                                               \
        const int64_t n8 = n & ~(int64_t)7;                                                        \
        __m256 acc[8][4];                                                                          \
        UNROLL for (int r = 0; r < R; r++) {                                                       \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                acc[r][c] = _mm256_setzero_ps();                                                   \
            }                                                                                      \
        }                                                                                          \
        for (int64_t i = 0; i < n8; i += 8) {                                                      \
            __m256 av[4];                                                                          \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                av[c] = LD(a + c * as, i);                                                         \
            }                                                                                      \
            UNROLL for (int r = 0; r < R; r++) {                                                   \
                const __m256 wv = LD(w + r * ws, i);                                               \
                UNROLL for (int c = 0; c < C; c++) {                                               \
                    acc[r][c] = _mm256_fmadd_ps(wv, av[c], acc[r][c]);                             \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        UNROLL for (int r = 0; r < R; r++) {                                                       \
            UNROLL for (int c = 0; c < C; c++) {                                                   \
                float s = hsum(acc[r][c]);                                                         \
                for (int64_t i = n8; i < n; i++)                                                   \
                    s += EL(w + r * ws, i) * EL(a + c * as, i);                                    \
                y[c * ldy + r] = s;                                                                \
            }                                                                                      \
        }                                                                                          \
    }

TILE_FLOAT(tile_f32, ld_f32, el_f32)
TILE_FLOAT(tile_f16, ld_f16, el_f16)
TILE_FLOAT(tile_bf16, ld_bf16, el_bf16)

GEMM_DRIVER(gemm_q8_0, tile_q8_0, 4, 2, 8)
GEMM_DRIVER(gemm_q4_0, tile_q4_0, 4, 2, 8)
GEMM_DRIVER(gemm_q4_K, tile_q4_K, 2, 2, 8)
GEMM_DRIVER(gemm_q5_K, tile_q5_K, 2, 2, 8)
GEMM_DRIVER(gemm_q6_K, tile_q6_K, 2, 2, 8)
GEMM_DRIVER(gemm_f32, tile_f32, 3, 4, 8)
GEMM_DRIVER(gemm_f16, tile_f16, 3, 4, 8)
GEMM_DRIVER(gemm_bf16, tile_bf16, 3, 4, 8)

gemm_fn ctn__gemm_avx2(int wtype) {
    switch (wtype) {
    case CTN_TYPE_F32: return gemm_f32;
    case CTN_TYPE_F16: return gemm_f16;
    case CTN_TYPE_BF16: return gemm_bf16;
    case CTN_TYPE_Q8_0: return gemm_q8_0;
    case CTN_TYPE_Q4_0: return gemm_q4_0;
    case CTN_TYPE_Q4_K: return gemm_q4_K;
    case CTN_TYPE_Q5_K: return gemm_q5_K;
    case CTN_TYPE_Q6_K: return gemm_q6_K;
    }
    return NULL;
}

/* ==== activation quantizers ================================================================= */

/*
 * The same bytes as kern.c's scalar quantizers (llama.cpp's reference rules), checked by
 * the tests. NaN inputs behave as there: max ignores them (vmaxps returns its second
 * operand when the first is NaN) and a NaN code converts to INT_MIN, whose low byte (0) is
 * what the scalar code keeps; it is zeroed before the saturating packs.
 */
INL float absmax(const float *x, int nv) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int v = 0; v < nv; v++)
        m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * v)), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* roundf (half away from zero) of 8 floats, as int32 (INT_MIN for NaN made 0). */
INL __m256i round_away_i32(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 av = _mm256_andnot_ps(sign, v);
    const __m256 t = _mm256_round_ps(av, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(_mm256_sub_ps(av, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 r = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_set1_ps(1.0f)));
    r = _mm256_or_ps(r, _mm256_and_ps(v, sign));
    const __m256i q = _mm256_cvttps_epi32(r);
    return _mm256_andnot_si256(_mm256_cmpeq_epi32(q, _mm256_set1_epi32(INT32_MIN)), q);
}

/* 32 int32 codes in [-128, 127] to 32 bytes in order. */
INL __m256i pack_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void ctn__from_q8_0_avx2(const float *x, void *a, int64_t n) {
    ctn_block_q8_0 *y = a;
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        const float amax = absmax(x, 4);
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int v = 0; v < 4; v++)
            q[v] = round_away_i32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * v), vid));
        _mm256_storeu_si256((__m256i *)y[i].qs, pack_i8(q[0], q[1], q[2], q[3]));
    }
}

/* Q8_K: the first value of largest magnitude sets the scale; codes round half to even. */
void ctn__from_q8_K_avx2(const float *x, void *a, int64_t n) {
    ctn_block_q8_K *y = a;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / 256; i++, x += 256) {
        const float amax = absmax(x, 32);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float max = 0;
        for (int v = 0; v < 32; v++) {
            const int eq =
                _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * v)),
                                                 _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (eq) {
                max = x[8 * v + __builtin_ctz((unsigned)eq)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vis = _mm256_set1_ps(iscale);
        for (int g = 0; g < 8; g++) {
            __m256i q[4];
            for (int v = 0; v < 4; v++) {
                const __m256i t = _mm256_min_epi32(
                    _mm256_cvtps_epi32(_mm256_mul_ps(vis, _mm256_loadu_ps(x + 32 * g + 8 * v))),
                    _mm256_set1_epi32(127));
                q[v] = _mm256_andnot_si256(_mm256_cmpeq_epi32(t, _mm256_set1_epi32(INT32_MIN)), t);
            }
            _mm256_storeu_si256((__m256i *)(y[i].qs + 32 * g), pack_i8(q[0], q[1], q[2], q[3]));
            for (int h = 0; h < 2; h++) {
                const __m256i s = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
                __m128i t =
                    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
                t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
                y[i].bsums[2 * g + h] = (int16_t)_mm_cvtsi128_si32(t);
            }
        }
        y[i].d = 1 / iscale;
    }
}

/* ==== vector operations ==================================================================== */

static float vdot_f32(int64_t n, const float *x, const float *y) {
    const int64_t n8 = n & ~(int64_t)7;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n8; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc);
    float s = hsum(acc);
    for (int64_t i = n8; i < n; i++)
        s += x[i] * y[i];
    return s;
}

static float vdot_f16(int64_t n, const uint16_t *x, const float *y) {
    const int64_t n8 = n & ~(int64_t)7;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n8; i += 8)
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                              _mm256_loadu_ps(y + i), acc);
    float s = hsum(acc);
    for (int64_t i = n8; i < n; i++)
        s += half(x[i]) * y[i];
    return s;
}

static void vmad_f32(int64_t n, float *y, const float *x, float s) {
    const int64_t n8 = n & ~(int64_t)7;
    const __m256 vs = _mm256_set1_ps(s);
    for (int64_t i = 0; i < n8; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(vs, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (int64_t i = n8; i < n; i++)
        y[i] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(s), _mm_set_ss(x[i]), _mm_set_ss(y[i])));
}

static void vmad_f16(int64_t n, float *y, const uint16_t *x, float s) {
    const int64_t n8 = n & ~(int64_t)7;
    const __m256 vs = _mm256_set1_ps(s);
    for (int64_t i = 0; i < n8; i += 8)
        _mm256_storeu_ps(
            y + i, _mm256_fmadd_ps(vs, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                   _mm256_loadu_ps(y + i)));
    for (int64_t i = n8; i < n; i++)
        y[i] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(s), _mm_set_ss(half(x[i])), _mm_set_ss(y[i])));
}

static void vto_f16(int64_t n, uint16_t *y, const float *x) {
    const int64_t n8 = n & ~(int64_t)7;
    for (int64_t i = 0; i < n8; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (int64_t i = n8; i < n; i++)
        y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

/* softmax and silu_mul: the scalar ones (kern.c fills them in). */
static const ctn_vec vec_avx2 = {vdot_f32, vdot_f16, vmad_f32, vmad_f16, vto_f16, NULL, NULL};

const ctn_vec *ctn__vec_avx2(void) {
    return &vec_avx2;
}
