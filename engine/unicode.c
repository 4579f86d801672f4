/*
 * Unicode helpers for the tokenizers; see unicode.h for why they follow llama.cpp's quirks.
 */
#include "unicode.h"

#include <pthread.h>

/* Flags for the whole BMP, where nearly all text lives; higher planes use a binary search. */
static uint16_t bmp_flags[0x10000];
static pthread_once_t bmp_once = PTHREAD_ONCE_INIT;

/* llama.cpp's whitespace set (White_Space property), which sets \s apart from \p{Z}. */
static const uint32_t whitespace[] = {
    0x0009, 0x000A, 0x000B, 0x000C, 0x000D, 0x0020, 0x0085, 0x00A0, 0x1680,
    0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008,
    0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
};

static void build_bmp(void) {
    for (size_t i = 0; i + 1 < ctn__ucat_n_ranges; i++) {
        uint32_t lo = ctn__ucat_ranges[i].first, hi = ctn__ucat_ranges[i + 1].first;
        if (lo >= 0x10000) {
            break;
        }
        if (hi > 0x10000) {
            hi = 0x10000;
        }
        for (uint32_t c = lo; c < hi; c++) {
            bmp_flags[c] = ctn__ucat_ranges[i].flags;
        }
    }
    for (size_t i = 0; i < sizeof whitespace / sizeof whitespace[0]; i++) {
        bmp_flags[whitespace[i]] |= CTN__UCAT_SPACE;
    }
}

void ctn__ucat_init(void) {
    pthread_once(&bmp_once, build_bmp);
}

uint16_t ctn__ucat(uint32_t cpt) {
    if (cpt < 0x10000) {
        pthread_once(&bmp_once, build_bmp);
        return bmp_flags[cpt];
    }
    if (cpt >= CTN__CPT_MAX) {
        return CTN__UCAT_UNDEF;
    }
    size_t lo = 0, hi = ctn__ucat_n_ranges; /* last entry with first <= cpt */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (ctn__ucat_ranges[mid].first <= cpt) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return ctn__ucat_ranges[lo].flags; /* no whitespace lies above the BMP */
}

size_t ctn__utf8_decode(const unsigned char *s, size_t n, uint32_t *cpt) {
    unsigned char c = s[0];
    if (c < 0x80) {
        *cpt = c;
        return 1;
    }
    size_t len = (c & 0x40) == 0   ? 0
                 : (c & 0x20) == 0 ? 2
                 : (c & 0x10) == 0 ? 3
                 : (c & 0x08) == 0 ? 4
                                   : 0;
    if (len == 0 || len > n) {
        *cpt = CTN__CPT_INVALID;
        return 1;
    }
    uint32_t v = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cpt = CTN__CPT_INVALID;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cpt = v;
    return len;
}

size_t ctn__utf8_encode(uint32_t cpt, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cpt < 0x80) {
        o[0] = (unsigned char)cpt;
        return 1;
    }
    if (cpt < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cpt >> 6));
        o[1] = (unsigned char)(0x80 | (cpt & 0x3F));
        return 2;
    }
    if (cpt >= CTN__CPT_MAX) {
        cpt = CTN__CPT_INVALID;
    }
    if (cpt < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cpt >> 12));
        o[1] = (unsigned char)(0x80 | ((cpt >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cpt & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cpt >> 18));
    o[1] = (unsigned char)(0x80 | ((cpt >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cpt >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cpt & 0x3F));
    return 4;
}

int ctn__utf8_char(const unsigned char *s, size_t n) {
    const unsigned char c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned char lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0; /* overlong below */
        if (c == 0xED) hi = 0x9F; /* surrogates above */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90; /* overlong below */
        if (c == 0xF4) hi = 0x8F; /* past U+10FFFF above */
    } else {
        return -1;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        const unsigned char lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
        if (s[i] < lo_i || s[i] > hi_i) return -1;
    }
    return len;
}

int ctn__utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        const int k = ctn__utf8_char(s + i, n - i);
        if (k <= 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

/* Printable Latin-1 bytes stand for themselves; the other 68 are moved to U+0100.. in order. */
static int gpt2_self(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t ctn__gpt2_byte_to_cpt(unsigned char b) {
    if (gpt2_self(b)) {
        return b;
    }
    uint32_t n = 0;
    for (unsigned k = 0; k < b; k++) {
        n += !gpt2_self(k);
    }
    return 256 + n;
}

int ctn__gpt2_cpt_to_byte(uint32_t cpt) {
    if (cpt < 256) {
        return gpt2_self(cpt) ? (int)cpt : -1;
    }
    if (cpt >= 256 + 68) {
        return -1;
    }
    uint32_t n = 0;
    for (unsigned b = 0; b < 256; b++) {
        if (!gpt2_self(b) && n++ == cpt - 256) {
            return (int)b;
        }
    }
    return -1;
}
