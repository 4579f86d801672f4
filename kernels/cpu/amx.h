/*
 * What the AMX kernel files share (compiled only into files built with -mamx-tile and
 * -mamx-int8): the tile configuration, loaded lazily per thread, and the save / restore of
 * a foreign one. Each call into an AMX kernel saves the configuration it finds
 * (_tile_storeconfig), sets configured = 0, uses load_config as it goes, and puts the saved
 * one back with restore before returning, so other AMX users on the thread (ggml) keep
 * theirs.
 */
#ifndef CTN_AMX_H
#define CTN_AMX_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* The 64-byte tile configuration of palette 1. */
typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* The current configuration of this thread's tiles: 0 none, else a key of the kernel file's
 * choosing (kern_amx.c: 1..16 the product of up to 16 activation rows, 17..32 the
 * matrix-vector form for 1..16 weight rows). */
static _Thread_local int configured;

/* Tiles 0 (C: rc x cc bytes), 1 (A: ra x ca) and 2 (B: rb x cb), repeated as 3, 4, 5 for a
 * second product in flight; returns 1 when it loaded (which zeroes every tile). */
static inline int load_config(int key, int ra, int ca, int rb, int cb, int rc, int cc) {
    if (configured == key) return 0;
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 6; t += 3) {
        c.rows[t + 0] = (uint8_t)rc, c.colsb[t + 0] = (uint16_t)cc;
        c.rows[t + 1] = (uint8_t)ra, c.colsb[t + 1] = (uint16_t)ca;
        c.rows[t + 2] = (uint8_t)rb, c.colsb[t + 2] = (uint16_t)cb;
    }
    _tile_loadconfig(&c);
    configured = key;
    return 1;
}

/* Puts back a configuration saved by _tile_storeconfig (palette 0: tiles were not in use). */
static inline void restore(const tile_config *saved) {
    if (saved->palette != 0)
        _tile_loadconfig(saved);
    else
        _tile_release();
    configured = 0;
}

/*
 * The 16 x 8 dwords at codes (row stride cstride; rows past rn read as zeros) transposed:
 * out[k][row] = dword k of the row. Two rows per register, 4 x 4
 * sub-blocks (permutex2var), then 128-bit chunks (shuffle_i32x4).
 */
static inline __attribute__((always_inline)) void transpose_16x8(const char *codes, size_t cstride,
                                                                 int rn, __m512i out[8]) {
    __m512i rows[8];
    for (int k = 0; k < 8; k++) {
        const int r0 = 2 * k, r1 = r0 + 1;
        const __m256i lo = r0 < rn
                               ? _mm256_loadu_si256((const __m256i *)(codes + (size_t)r0 * cstride))
                               : _mm256_setzero_si256();
        const __m256i hi = r1 < rn
                               ? _mm256_loadu_si256((const __m256i *)(codes + (size_t)r1 * cstride))
                               : _mm256_setzero_si256();
        rows[k] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
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
        __m512i x, y;
        switch (q) { /* shuffle_i32x4 needs an immediate */
#define SHUF(Q, I)                                                                                 \
    case Q:                                                                                        \
        x = _mm512_shuffle_i32x4(u[0][h], u[1][h], I);                                             \
        y = _mm512_shuffle_i32x4(u[2][h], u[3][h], I);                                             \
        break;
            SHUF(0, 0x00)
            SHUF(1, 0x55)
            SHUF(2, 0xAA)
            SHUF(3, 0xFF)
#undef SHUF
        default: x = y = _mm512_setzero_si512();
        }
        out[k4] = _mm512_shuffle_i32x4(x, y, 0x88);
    }
}

#endif
