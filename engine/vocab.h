/*
 * Tokenizers read from GGUF metadata: SentencePiece BPE (`tokenizer.ggml.model = llama`)
 * and byte-level BPE (`gpt2`) with the pre-tokenizer named by `tokenizer.ggml.pre`.
 * Results match llama.cpp's llama_tokenize / llama_token_to_piece / llama_detokenize.
 *
 *     ctn_vocab *v;
 *     if (ctn_vocab_load(&v, g, err, sizeof err) < 0) { puts(err); return; }
 *     int32_t *ids; size_t n;
 *     ctn_tokenize(v, text, strlen(text), true, false, &ids, &n);   // malloc'd ids
 *     free(ids);
 *     ctn_vocab_free(v);
 *
 * A loaded vocabulary is immutable and copies what it keeps out of the GGUF (the ctn_gguf
 * may be freed afterwards). All functions taking a const ctn_vocab * are safe to call from
 * several threads at once.
 */
#ifndef CTN_VOCAB_H
#define CTN_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gguf.h"

typedef struct ctn_vocab ctn_vocab;

typedef enum {
    CTN_VOCAB_SPM = 1, /* tokenizer.ggml.model = llama */
    CTN_VOCAB_BPE = 2, /* tokenizer.ggml.model = gpt2 */
} ctn_vocab_kind;

/* Token types as stored in tokenizer.ggml.token_type. */
typedef enum {
    CTN_TOKEN_UNDEFINED = 0,
    CTN_TOKEN_NORMAL = 1,
    CTN_TOKEN_UNKNOWN = 2,
    CTN_TOKEN_CONTROL = 3,
    CTN_TOKEN_USER_DEFINED = 4,
    CTN_TOKEN_UNUSED = 5,
    CTN_TOKEN_BYTE = 6,
} ctn_token_type;

#define CTN_TOKEN_NULL (-1)

int ctn_vocab_load(ctn_vocab **out, const ctn_gguf *g, char *err, size_t errlen);
void ctn_vocab_free(ctn_vocab *v);

ctn_vocab_kind ctn_vocab_type(const ctn_vocab *v);
const char *ctn_vocab_pre(const ctn_vocab *v); /* pre-tokenizer name, "default" if none */
int32_t ctn_vocab_n_tokens(const ctn_vocab *v);
/* Special token ids, CTN_TOKEN_NULL when the vocabulary has none. */
int32_t ctn_vocab_bos(const ctn_vocab *v);
int32_t ctn_vocab_eos(const ctn_vocab *v);
int32_t ctn_vocab_eot(const ctn_vocab *v);
int32_t ctn_vocab_unk(const ctn_vocab *v);
int32_t ctn_vocab_pad(const ctn_vocab *v);
bool ctn_vocab_add_bos(const ctn_vocab *v);
bool ctn_vocab_add_eos(const ctn_vocab *v);
/* True for EOS, EOT and every other end-of-generation token the vocabulary names. */
bool ctn_vocab_is_eog(const ctn_vocab *v, int32_t id);
ctn_token_type ctn_vocab_token_type(const ctn_vocab *v, int32_t id);
/* Raw vocabulary text of a token (as stored, e.g. "▁the" or "Ġthe"); NULL if out of range. */
const char *ctn_vocab_text(const ctn_vocab *v, int32_t id, size_t *len);
float ctn_vocab_score(const ctn_vocab *v, int32_t id);
/* Id of an exact vocabulary text, or CTN_TOKEN_NULL. */
int32_t ctn_vocab_lookup(const ctn_vocab *v, const char *text, size_t len);

/*
 * Tokenizes `len` bytes of UTF-8 text. add_special adds BOS/EOS as the metadata says
 * (llama.cpp's add_special); parse_special matches control tokens such as <s> or
 * <|im_start|> written in the text (user-defined added tokens are always matched, as in
 * llama.cpp). *ids is malloc'd (caller frees), possibly NULL when *n_ids is 0.
 * Invalid UTF-8 is tokenized as llama.cpp does, never rejected. (Where llama.cpp would
 * abort — add_bos with no BOS id, a byte with no byte token — BOS is left out and <unk>
 * used instead.)
 */
int ctn_tokenize(const ctn_vocab *v, const char *text, size_t len, bool add_special,
                 bool parse_special, int32_t **ids, size_t *n_ids);

/*
 * Bytes that token `id` decodes to (llama_token_to_piece): writes up to cap bytes into buf
 * and returns the full length (call again with a bigger buffer if it exceeds cap), or
 * CTN_EINVAL for an id out of range. With special=false control tokens give "".
 * lstrip removes up to that many leading spaces (llama.cpp's lstrip argument).
 */
int ctn_token_to_piece(const ctn_vocab *v, int32_t id, char *buf, size_t cap, int lstrip,
                       bool special);

/*
 * Decodes ids to text (llama_detokenize): remove_special drops a leading BOS and trailing
 * EOS when the vocabulary adds them; unparse_special renders control tokens as their text.
 * As in llama.cpp, SPM drops the space that add_space_prefix put before the first token,
 * but only when no BOS was dropped ([BOS, "▁Hi"] decodes to " Hi"), and BPE vocabularies
 * with clean_up_tokenization_spaces (gpt-2, llama3, ...) turn " ," into "," and the like.
 * *text is malloc'd and NUL-terminated (caller frees). CTN_EINVAL for an id out of range.
 */
int ctn_detokenize(const ctn_vocab *v, const int32_t *ids, size_t n, bool remove_special,
                   bool unparse_special, char **text, size_t *len);

/*
 * Streaming decoder: feed ids one at a time, get back only complete UTF-8 text. Bytes of
 * a character split across tokens are held until the character is complete; invalid
 * sequences are passed through once it is clear they cannot complete. For vocabularies
 * that clean up spaces, a short tail that the next token could change is held too, so the
 * concatenated output equals ctn_detokenize(ids, remove_special=false, unparse_special=
 * special) (except after a run of over 60 bytes of spaces-before-punctuation/apostrophes).
 * Lives in caller memory (init/close pair).
 */
typedef struct {
    const ctn_vocab *vocab;
    bool special; /* render control tokens as text */
    bool first;   /* no piece emitted yet (SPM strips the leading space) */
    /* Set after init: no clean-up of spaces, the pieces exactly as ctn_token_to_piece gives
     * them (a request under a grammar: its text is then the bytes the grammar matched). */
    bool raw;
    /* pending bytes: an incomplete UTF-8 character, and for vocabularies that clean up
     * spaces on decode (" ," -> ","), a short tail that the next token could still change */
    unsigned char hold[64];
    size_t n_hold;
} ctn_detok_stream;

void ctn_detok_stream_init(ctn_detok_stream *s, const ctn_vocab *v, bool special);
/*
 * Appends the text completed by `id` to buf (up to cap bytes; returns the number of bytes
 * written, or CTN_ERANGE if cap is too small — pass at least 256 + the longest token).
 */
int ctn_detok_stream_push(ctn_detok_stream *s, int32_t id, char *buf, size_t cap);
/* Flushes held bytes (an incomplete character at end of stream) and returns their count. */
int ctn_detok_stream_flush(ctn_detok_stream *s, char *buf, size_t cap);
void ctn_detok_stream_close(ctn_detok_stream *s);

#endif
