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

#endif
