/*
 * Internal Unicode helpers for the tokenizers: code point categories as llama.cpp assigns
 * them, UTF-8 decoding with llama.cpp's exact leniency, and the GPT-2 byte<->unicode map.
 *
 * Matching llama.cpp token for token means reproducing its quirks, not the Unicode
 * standard: its decoder accepts overlong forms and surrogates, replaces every other bad
 * byte by U+FFFD one byte at a time, and its category table is its own snapshot.
 */
#ifndef CTN_UNICODE_H
#define CTN_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Category flags, numbered as llama.cpp's unicode_cpt_flags so the tables carry over. */
enum {
    CTN__UCAT_UNDEF = 0x0001,
    CTN__UCAT_NUMBER = 0x0002, /* \p{N} */
    CTN__UCAT_LETTER = 0x0004, /* \p{L} */
    CTN__UCAT_SEPARATOR = 0x0008,
    CTN__UCAT_MARK = 0x0010,   /* \p{M} */
    CTN__UCAT_PUNCT = 0x0020,  /* \p{P} */
    CTN__UCAT_SYMBOL = 0x0040, /* \p{S} */
    CTN__UCAT_CONTROL = 0x0080,
    CTN__UCAT_MASK = 0x00FF,
    CTN__UCAT_SPACE = 0x0100, /* \s as llama.cpp's whitespace set */
};

typedef struct {
    uint32_t first;
    uint8_t flags;
} ctn__ucat_range;

extern const ctn__ucat_range ctn__ucat_ranges[];
extern const size_t ctn__ucat_n_ranges;

#define CTN__CPT_MAX     0x110000u
#define CTN__CPT_INVALID 0xFFFDu

/* Flags of a code point (CTN__UCAT_UNDEF above U+10FFFF). Thread-safe; the BMP table is
 * built once on first use. */
uint16_t ctn__ucat(uint32_t cpt);
/* Builds the lookup table now (called by ctn_vocab_load so tokenizing never waits). */
void ctn__ucat_init(void);

/*
 * Decodes one code point at s[0..n) (n >= 1) the way llama.cpp's unicode_cpt_from_utf8 does:
 * lengths from the lead byte, continuation bytes checked, overlong and surrogate forms
 * accepted; anything else yields U+FFFD and consumes one byte. Returns bytes consumed.
 */
size_t ctn__utf8_decode(const unsigned char *s, size_t n, uint32_t *cpt);
/* Encodes a code point (U+FFFD for values above U+10FFFF); returns 1..4. */
size_t ctn__utf8_encode(uint32_t cpt, char *out);
/* Byte length of a UTF-8 sequence from its lead byte, as llama.cpp's unicode_len_utf8. */
static inline size_t ctn__utf8_len(unsigned char c) {
    static const unsigned char lut[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lut[c >> 4];
}
/* Strict check of well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
int ctn__utf8_valid(const char *s, size_t n);
/*
 * The strict UTF-8 character at s (n >= 1 bytes available): its length 1..4; 0 when the
 * bytes there may begin a valid character but are cut short; -1 when the first byte cannot
 * start one here (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF).
 * The one validator of the tree: ctn__utf8_valid and every streaming decoder use it.
 */
int ctn__utf8_char(const unsigned char *s, size_t n);

/* GPT-2 byte-level BPE alphabet: byte -> code point, and back (-1 if not in the alphabet). */
uint32_t ctn__gpt2_byte_to_cpt(unsigned char b);
int ctn__gpt2_cpt_to_byte(uint32_t cpt);

#endif
