/*
 * libFuzzer target for the stop-string matcher. The input holds the stop strings and the
 * text; the text is fed in pieces of varying size and every step is checked against a
 * naive matcher:
 *   - what was handed out, plus what is held back, is exactly the text fed so far, and the
 *     held part is the longest suffix that is a proper prefix of some stop string;
 *   - a stop happens iff some stop string occurs in the text, at its first occurrence by
 *     end position (then the longest, then the lowest index), and the text handed out is
 *     exactly what comes before it;
 *   - without a stop, the text handed out after the flush is the whole input.
 *
 * Input: byte 0 = number of stop strings (low 3 bits, mod 5) and alphabet (bits 3-4: raw
 * bytes, or 2..4 letters so that matches and overlaps are frequent); byte 1 = seed of the
 * piece sizes; then per stop string a length byte (1 + b % 8) and its bytes; the rest is
 * the text.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine -Ikernels tests/fuzz/fuzz_stop.c \
 *       engine/stop.c kernels/alloc.c engine/error.c -o /tmp/fuzz_stop && /tmp/fuzz_stop
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stop.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_stop: %s failed at line %d\n", #cond, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Earliest end, then longest, then lowest index (stop.h); the match's start or -1. */
static long ref_find(const uint8_t *t, size_t n, uint8_t st[][8], const size_t *sl, int ns,
                     int *which) {
    for (size_t e = 1; e <= n; e++) {
        int best = -1;
        for (int i = 0; i < ns; i++) {
            if (sl[i] <= e && memcmp(t + e - sl[i], st[i], sl[i]) == 0 &&
                (best < 0 || sl[i] > sl[best])) {
                best = i;
            }
        }
        if (best >= 0) {
            *which = best;
            return (long)(e - sl[best]);
        }
    }
    *which = -1;
    return -1;
}

/* Longest suffix of t[0, n) that is a proper prefix of some stop string. */
static size_t ref_held(const uint8_t *t, size_t n, uint8_t st[][8], const size_t *sl, int ns) {
    size_t best = 0;
    for (int i = 0; i < ns; i++) {
        for (size_t k = sl[i] - 1; k > best; k--) {
            if (k <= n && memcmp(t + n - k, st[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int ns = (data[0] & 7) % 5;
    int alpha = (data[0] >> 3) & 3; /* 0: raw bytes; else 1 + alpha letters */
    uint32_t seed = data[1];
    size_t pos = 2;
    uint8_t st[4][8];
    size_t sl[4];
    const char *strs[4];
    int got = 0;
    for (; got < ns && pos < size; got++) {
        sl[got] = 1 + data[pos++] % 8;
        for (size_t j = 0; j < sl[got]; j++) {
            uint8_t b = pos < size ? data[pos++] : 0;
            st[got][j] = alpha ? (uint8_t)('a' + b % (alpha + 1)) : b;
        }
        strs[got] = (const char *)st[got];
    }
    ns = got;
    size_t n = size - pos;
    uint8_t *t = malloc(n ? n : 1);
    CHECK(t != NULL);
    for (size_t j = 0; j < n; j++) {
        t[j] = alpha ? (uint8_t)('a' + data[pos + j] % (alpha + 1)) : data[pos + j];
    }

    ctn_stop *m;
    char err[128];
    CHECK(ctn_stop_new(&m, strs, sl, (size_t)ns, err, sizeof err) == 0);
    uint8_t *outbuf = malloc(n + 1);
    CHECK(outbuf != NULL);
    size_t n_out = 0, fed = 0;
    int rc = 0;
    while (fed < n && rc == 0) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % 9;
        if ((seed >> 8) % 17 == 0) len = 64 + (seed >> 20) % 400; /* sometimes a long piece */
        if (len > n - fed) len = n - fed;
        const char *out;
        size_t k;
        rc = ctn_stop_feed(m, (const char *)t + fed, len, &out, &k);
        CHECK(rc == 0 || rc == CTN_STOP_HIT);
        CHECK(n_out + k <= n);
        memcpy(outbuf + n_out, out, k);
        n_out += k;
        fed += len;
        CHECK(memcmp(outbuf, t, n_out) == 0);
        if (rc == 0) {
            size_t held = ctn_stop_held(m);
            CHECK(n_out + held == fed);
            CHECK(held == ref_held(t, fed, st, sl, ns));
        }
    }
    if (rc == 0) {
        const char *out;
        size_t k;
        rc = ctn_stop_flush(m, &out, &k);
        CHECK(rc == 0 && n_out + k <= n);
        memcpy(outbuf + n_out, out, k);
        n_out += k;
    }

    int which;
    long cut = ref_find(t, n, st, sl, ns, &which);
    if (cut < 0) {
        CHECK(rc == 0 && ctn_stop_which(m) == -1);
        CHECK(n_out == n && memcmp(outbuf, t, n) == 0);
    } else {
        CHECK(rc == CTN_STOP_HIT);
        CHECK(ctn_stop_which(m) == which);
        CHECK(n_out == (size_t)cut && memcmp(outbuf, t, n_out) == 0);
        /* handed-out text + the stop string is a prefix of the input */
        CHECK(n_out + sl[which] <= n && memcmp(t + n_out, st[which], sl[which]) == 0);
    }
    ctn_stop_free(m);
    free(outbuf);
    free(t);
    return 0;
}
