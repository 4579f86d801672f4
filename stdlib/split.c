/*
 * Text splitters (split.h).
 *
 * The recursive splitter follows LangChain.js's RecursiveCharacterTextSplitter
 * (@langchain/textsplitters 1.0.2, text_splitter.js) step for step, but on byte ranges of
 * the one text instead of on copied strings: a piece is (start, end, length), the merge
 * window is a run of consecutive pieces, and a chunk is a range of the text unless its
 * pieces were joined with a separator that the text does not have there. So nothing is
 * copied until a chunk is made, every chunk knows where it came from, and the work is
 * linear in the text for each separator level (the recursion is at most one level deeper
 * per separator).
 *
 * Where LangChain.js measures text.length (UTF-16 units), catena measures code points, and
 * where it splits on "" into UTF-16 units, catena splits into code points (a character
 * outside the BMP stays whole). See split.h for the other differences.
 */
#include "split.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "str.h"
#include "unicode.h"

/* Writes a message, when the caller gave room for one. */
#define ERR(...)                                                                                   \
    do {                                                                                           \
        if (err != NULL && errcap > 0) ctn__errf(err, errcap, __VA_ARGS__);                        \
    } while (0)

/* The recursion goes one level deeper per separator, so the list is bounded to keep the
 * stack small on the thread pool's threads; LangChain's longest list has 28. */
#define MAX_SEPARATORS 256

static const char *const default_seps[] = {"\n\n", "\n", " ", ""};

/* ---- characters ------------------------------------------------------------------------- */

/* The length of the character at s (n >= 1 bytes left): a byte that does not begin a valid
 * character counts as one, so that every byte belongs to exactly one character. */
static size_t char_len(const char *s, size_t n) {
    if ((unsigned char)s[0] < 0x80) return 1;
    int k = ctn__utf8_char((const unsigned char *)s, n);
    return k > 0 ? (size_t)k : 1;
}

/* Code points in s[0, n), as char_len steps through them. */
static bool ascii8(const char *s) { /* the 8 bytes at s are all ASCII */
    uint64_t w;
    memcpy(&w, s, 8);
    return (w & 0x8080808080808080ull) == 0;
}

/* Code points in s[0, n) of valid UTF-8 that starts and ends at character boundaries: the
 * bytes that are not continuation bytes. */
static size_t count_cp_valid(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static size_t count_cp(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n;) {
        if (i + 8 <= n && ascii8(s + i)) {
            i += 8, c += 8;
            continue;
        }
        if ((unsigned char)s[i] < 0x80) {
            i++;
        } else {
            i += char_len(s + i, n - i);
        }
        c++;
    }
    return c;
}

/* White space as JavaScript's String.prototype.trim knows it (WhiteSpace and
 * LineTerminator), since the chunks must equal LangChain.js's. */
static bool js_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

/* The white space character at s[0, n) (n >= 1): its length, or 0 when it is another. */
static size_t space_at(const char *s, size_t n) {
    unsigned char b = (unsigned char)s[0];
    if (b < 0x80) return js_space(b) ? 1 : 0;
    if (b != 0xC2 && b != 0xE1 && b != 0xE2 && b != 0xE3 && b != 0xEF) return 0;
    uint32_t c;
    size_t k = ctn__utf8_decode((const unsigned char *)s, n, &c);
    return js_space(c) && k == char_len(s, n) ? k : 0;
}

/* Narrows [*a, *b) of t to its text without leading and trailing white space. */
static void trim_range(const char *t, size_t *a, size_t *b) {
    size_t k;
    while (*a < *b && (k = space_at(t + *a, *b - *a)) > 0)
        *a += k;
    while (*b > *a) {
        size_t p = *b - 1;
        while (p > *a && ((unsigned char)t[p] & 0xC0) == 0x80 && *b - p < 4)
            p--;
        if (space_at(t + p, *b - p) != *b - p) break;
        *b = p;
    }
}

static bool all_space(const char *t, size_t n) {
    size_t a = 0, b = n;
    trim_range(t, &a, &b);
    return a == b;
}

/* The first occurrence of sep (sl >= 1 bytes) in s[0, n), or NULL. */
static const char *find(const char *s, size_t n, const char *sep, size_t sl) {
    if (sl == 1) return memchr(s, sep[0], n);
    return memmem(s, n, sep, sl);
}

/* ---- the splitter ------------------------------------------------------------------------ */

typedef struct {
    size_t a, b; /* bytes of the text */
    size_t len;  /* in the length unit: code points, or tokens */
} piece;

/* A chunk: text[a, b) when own is NULL; otherwise own (ownlen bytes, malloc'd) is the chunk
 * and [a, b) the text it was made from. */
typedef struct {
    size_t a, b;
    char *own;
    size_t ownlen;
} chunk;

typedef struct {
    const ctn_split_opts *o;
    const char *t; /* the whole text; every offset is into it */
    size_t tn;
    const char *const *seps;
    size_t nseps;
    const char *name; /* the document, for warnings; NULL: none */

    /* The merge window (LangChain's currentDoc): pieces win[head, tail), their lengths
     * summing to total, joined by msep (msepn bytes, msepcp code points). */
    piece *win;
    size_t head, tail, wcap, total;
    const char *msep;
    size_t msepn, msepcp;

    chunk *ch;
    size_t nch, chcap;

    bool valid; /* t is valid UTF-8: code points can be counted by bytes */

    int rc; /* the first failure; once set, everything stops */
    char *err;
    size_t errcap;
} splitter;

static void fail(splitter *s, int rc, const char *msg) {
    if (s->rc < 0) return;
    s->rc = rc;
    if (msg != NULL && s->err != NULL && s->errcap > 0) ctn__errf(s->err, s->errcap, "%s", msg);
}

static void nomem(splitter *s) {
    fail(s, CTN_ENOMEM, "out of memory");
}

/* The length of text[a, b): code points, or tokens through the callback (LangChain's
 * lengthFunction, called on the piece alone). */
static size_t units(splitter *s, size_t a, size_t b) {
    if (s->rc < 0) return 0;
    if (s->o->tokens == NULL)
        return s->valid ? count_cp_valid(s->t + a, b - a) : count_cp(s->t + a, b - a);
    size_t *ends = NULL, count = 0;
    char msg[256] = "";
    int rc = s->o->tokens(s->o->tokens_ud, s->t + a, b - a, &ends, &count, msg, sizeof msg);
    free(ends);
    if (rc < 0) {
        fail(s, rc, msg[0] ? msg : "the token callback failed");
        return 0;
    }
    return count;
}

static void warn_size(splitter *s, size_t len) {
    if (s->o->warn == NULL) return;
    char msg[256];
    ctn__errf(msg, sizeof msg, "%s%sa chunk of %zu %s is longer than chunk_size %zu",
              s->name ? s->name : "", s->name ? ": " : "", len,
              s->o->tokens ? "tokens" : "code points", s->o->chunk_size);
    s->o->warn(s->o->warn_ud, msg);
}

static void add_chunk(splitter *s, chunk c) {
    if (s->rc < 0) {
        free(c.own);
        return;
    }
    if (s->nch == s->chcap) {
        size_t cap = s->chcap ? s->chcap * 2 : 16;
        chunk *q = ctn__realloc(s->ch, cap * sizeof *q);
        if (q == NULL) {
            free(c.own);
            nomem(s);
            return;
        }
        s->ch = q;
        s->chcap = cap;
    }
    s->ch[s->nch++] = c;
}

/* A chunk of text[a, b), trimmed when the options say so; nothing when that leaves "". */
static void add_range(splitter *s, size_t a, size_t b) {
    if (s->o->strip_whitespace) trim_range(s->t, &a, &b);
    if (a < b) add_chunk(s, (chunk){a, b, NULL, 0});
}

/* LangChain's joinDocs on the window: the pieces joined by the merge separator and
 * trimmed. When the text has exactly that separator between each two pieces (always, when
 * separators are kept), the result is a range of the text; otherwise it is built. */
static void emit_window(splitter *s) {
    const piece *w = s->win + s->head;
    size_t n = s->tail - s->head;
    bool contiguous = true;
    for (size_t i = 1; i < n && contiguous; i++)
        contiguous = w[i].a == w[i - 1].b + s->msepn;
    if (contiguous) {
        add_range(s, w[0].a, w[n - 1].b);
        return;
    }
    ctn_strbuf sb = {0};
    for (size_t i = 0; i < n; i++) {
        if (i > 0) ctn_sb_put(&sb, s->msep, s->msepn);
        ctn_sb_put(&sb, s->t + w[i].a, w[i].b - w[i].a);
    }
    if (sb.oom) {
        ctn_sb_free(&sb);
        nomem(s);
        return;
    }
    size_t ja = 0, jb = sb.len, a = w[0].a, b = w[n - 1].b;
    if (s->o->strip_whitespace) {
        trim_range(sb.p, &ja, &jb);
        trim_range(s->t, &a, &b);
    }
    if (ja == jb) {
        ctn_sb_free(&sb);
        return;
    }
    char *own = ctn__strndup(sb.p + ja, jb - ja);
    ctn_sb_free(&sb);
    if (own == NULL) {
        nomem(s);
        return;
    }
    add_chunk(s, (chunk){a, b, own, jb - ja});
}

static void merge_begin(splitter *s, const char *sep) {
    s->head = s->tail = 0;
    s->total = 0;
    s->msep = sep;
    s->msepn = strlen(sep);
    s->msepcp = count_cp(sep, s->msepn);
}

/*
 * One step of LangChain's mergeSplits: when the piece does not fit, the window becomes a
 * chunk and loses pieces from its front until what is left fits the overlap and leaves room
 * for the piece. The separator is counted once per piece in the window, as LangChain does
 * (currentDoc.length * separator.length, in code points even when lengths are tokens).
 */
static void merge_add(splitter *s, piece p) {
    size_t size = s->o->chunk_size, overlap = s->o->chunk_overlap;
    if (s->total + p.len + (s->tail - s->head) * s->msepcp > size) {
        if (s->total > size) warn_size(s, s->total);
        if (s->tail > s->head) {
            emit_window(s);
            while (s->head < s->tail &&
                   (s->total > overlap ||
                    (s->total + p.len + (s->tail - s->head) * s->msepcp > size && s->total > 0))) {
                s->total -= s->win[s->head].len;
                s->head++;
            }
        }
    }
    if (s->tail == s->wcap) {
        if (s->head > 0) {
            memmove(s->win, s->win + s->head, (s->tail - s->head) * sizeof *s->win);
            s->tail -= s->head;
            s->head = 0;
        } else {
            size_t cap = s->wcap ? s->wcap * 2 : 64;
            piece *q = ctn__realloc(s->win, cap * sizeof *q);
            if (q == NULL) {
                nomem(s);
                return;
            }
            s->win = q;
            s->wcap = cap;
        }
    }
    s->win[s->tail++] = p;
    s->total += p.len;
}

/* The end of mergeSplits: what is left in the window becomes the last chunk. */
static void merge_end(splitter *s) {
    if (s->rc == 0 && s->tail > s->head) emit_window(s);
    s->head = s->tail = 0;
    s->total = 0;
}

/*
 * The pieces of text[a, b) split on sep (LangChain's splitOnSeparator, empty pieces left
 * out), one at a time:
 *   kept at the start  JavaScript's split(/(?=sep)/): a cut before every occurrence but one
 *                      at the very start, overlapping occurrences included ("a\n\n\nb" on
 *                      "\n\n" gives "a", "\n", "\n\nb");
 *   kept at the end    each occurrence, left to right, ends its piece (Python LangChain's
 *                      keep_separator="end");
 *   dropped            JavaScript's split(sep): occurrences left to right, not overlapping;
 *   ""                 code points.
 */
typedef struct {
    const char *t;
    size_t pos, end;
    const char *sep;
    size_t sl;
    ctn_keep_sep keep;
    bool done;
} piece_iter;

static bool next_piece(piece_iter *it, size_t *pa, size_t *pb) {
    while (!it->done && it->pos < it->end) {
        size_t p = it->pos, left = it->end - p;
        if (it->sl == 0) {
            *pa = p;
            *pb = it->pos = p + char_len(it->t + p, left);
            return true;
        }
        if (it->keep == CTN_KEEP_START) {
            const char *q = left > 1 ? find(it->t + p + 1, left - 1, it->sep, it->sl) : NULL;
            *pa = p;
            *pb = it->pos = q ? (size_t)(q - it->t) : it->end;
            return true;
        }
        const char *q = find(it->t + p, left, it->sep, it->sl);
        size_t qa = q ? (size_t)(q - it->t) : it->end;
        if (q == NULL) it->done = true;
        *pa = p;
        *pb = it->keep == CTN_KEEP_END && q ? qa + it->sl : qa;
        it->pos = q ? qa + it->sl : it->end;
        if (*pb > *pa) return true;
    }
    return false;
}

/*
 * LangChain's _splitText on text[a, b) with the separators from level on: the first of them
 * that the text holds (or "", or failing both the last) splits it; pieces shorter than
 * chunk_size are merged, longer ones split again with the separators after the one used,
 * or kept whole when there are none. Past the last separator the text is split into code
 * points (LangChain.js recurses with an empty list there, which splits on `undefined` as
 * on "" and, when separators are dropped, then fails reading undefined.length; catena joins
 * those pieces directly, as it does when separators are kept).
 */
static void split_rec(splitter *s, size_t a, size_t b, size_t level) {
    const char *sep = "";
    size_t next = 0;
    bool deeper = false;
    if (level < s->nseps) {
        sep = s->seps[s->nseps - 1];
        for (size_t i = level; i < s->nseps; i++) {
            size_t sl = strlen(s->seps[i]);
            if (sl == 0) {
                sep = "";
                break;
            }
            if (find(s->t + a, b - a, s->seps[i], sl) != NULL) {
                sep = s->seps[i];
                next = i + 1;
                deeper = true;
                break;
            }
        }
    }
    const char *msep = s->o->keep_separator != CTN_KEEP_NONE ? "" : sep;
    merge_begin(s, msep);
    piece_iter it = {s->t, a, b, sep, strlen(sep), s->o->keep_separator, false};
    size_t pa, pb;
    while (s->rc == 0 && next_piece(&it, &pa, &pb)) {
        size_t len = units(s, pa, pb);
        if (len < s->o->chunk_size) {
            merge_add(s, (piece){pa, pb, len});
            continue;
        }
        merge_end(s);
        if (deeper) {
            split_rec(s, pa, pb, next);
            merge_begin(s, msep);
        } else {
            /* Kept as it is, untrimmed, as LangChain pushes it. */
            if (len > s->o->chunk_size) warn_size(s, len);
            add_chunk(s, (chunk){pa, pb, NULL, 0});
        }
    }
    merge_end(s);
}

static void splitter_init(splitter *s, const ctn_split_opts *o, const char *t, size_t tn, char *err,
                          size_t errcap) {
    memset(s, 0, sizeof *s);
    s->o = o;
    s->t = t;
    s->tn = tn;
    s->seps = o->separators ? o->separators : default_seps;
    s->nseps = o->separators ? o->n_separators : sizeof default_seps / sizeof *default_seps;
    s->err = err;
    s->errcap = errcap;
    s->valid = ctn__utf8_valid(t, tn) != 0;
}

static void chunks_clear(splitter *s) {
    for (size_t i = 0; i < s->nch; i++)
        free(s->ch[i].own);
    s->nch = 0;
}

static void splitter_close(splitter *s) {
    chunks_clear(s);
    free(s->ch);
    free(s->win);
}

/* ---- options ----------------------------------------------------------------------------- */

ctn_split_opts ctn_split_defaults(void) {
    return (ctn_split_opts){
        .chunk_size = 4000,
        .chunk_overlap = 200,
        .separators = NULL,
        .n_separators = 0,
        .keep_separator = CTN_KEEP_START,
        .strip_whitespace = true,
    };
}

int ctn_split_check(ctn_split_kind kind, const ctn_split_opts *o, char *err, size_t errcap) {
    if (o == NULL) {
        ERR("no splitter options");
        return CTN_EINVAL;
    }
    if ((int)kind < CTN_SPLIT_RECURSIVE || kind > CTN_SPLIT_TOKEN) {
        ERR("unknown splitter kind %d", (int)kind);
        return CTN_EINVAL;
    }
    if (o->chunk_size == 0) {
        ERR("chunk_size must be at least 1");
        return CTN_EINVAL;
    }
    if (o->chunk_overlap >= o->chunk_size) {
        ERR("chunk_overlap (%zu) must be below chunk_size (%zu)", o->chunk_overlap, o->chunk_size);
        return CTN_EINVAL;
    }
    if (o->keep_separator != CTN_KEEP_START && o->keep_separator != CTN_KEEP_END &&
        o->keep_separator != CTN_KEEP_NONE) {
        ERR("keep_separator must be start, end or none (got %d)", (int)o->keep_separator);
        return CTN_EINVAL;
    }
    if (o->separators != NULL) {
        if (o->n_separators > MAX_SEPARATORS) {
            ERR("separators: %zu given, at most %d", o->n_separators, MAX_SEPARATORS);
            return CTN_EINVAL;
        }
        /* A separator that is not UTF-8 could match inside a character and cut it. */
        for (size_t i = 0; i < o->n_separators; i++)
            if (o->separators[i] == NULL) {
                ERR("separators[%zu] is NULL", i);
                return CTN_EINVAL;
            } else if (!ctn__utf8_valid(o->separators[i], strlen(o->separators[i]))) {
                ERR("separators[%zu] is not valid UTF-8", i);
                return CTN_EINVAL;
            }
    } else if (o->n_separators != 0) {
        ERR("separators is NULL but n_separators is %zu", o->n_separators);
        return CTN_EINVAL;
    }
    if (kind == CTN_SPLIT_TOKEN && o->tokens == NULL) {
        ERR("the token splitter needs tokens (a tokenizer to count with)");
        return CTN_EINVAL;
    }
    return 0;
}

static const char *const kind_names[] = {"recursive", "markdown", "page", "token"};

const char *ctn_split_name(ctn_split_kind k) {
    return (int)k >= 0 && k <= CTN_SPLIT_TOKEN ? kind_names[k] : "unknown";
}

int ctn_split_parse(const char *name) {
    for (int i = 0; name != NULL && i <= CTN_SPLIT_TOKEN; i++)
        if (strcmp(name, kind_names[i]) == 0) return i;
    return -1;
}

/* ---- one text ---------------------------------------------------------------------------- */

int ctn_split_text(const ctn_split_opts *o, const char *text, size_t len, char ***chunks,
                   size_t **starts, size_t *n, char *err, size_t errcap) {
    *chunks = NULL;
    *starts = NULL;
    *n = 0;
    int rc = ctn_split_check(CTN_SPLIT_RECURSIVE, o, err, errcap);
    if (rc < 0) return rc;
    if (text == NULL && len > 0) {
        ERR("text is NULL");
        return CTN_EINVAL;
    }
    splitter s;
    splitter_init(&s, o, text ? text : "", len, err, errcap);
    split_rec(&s, 0, len, 0);
    char **c = NULL;
    size_t *st = NULL;
    if (s.rc == 0) {
        c = ctn__calloc(s.nch ? s.nch : 1, sizeof *c);
        st = ctn__malloc((s.nch ? s.nch : 1) * sizeof *st);
        if (c == NULL || st == NULL) nomem(&s);
    }
    for (size_t i = 0; s.rc == 0 && i < s.nch; i++) {
        chunk *k = &s.ch[i];
        if (k->own != NULL) {
            c[i] = k->own;
            k->own = NULL;
            st[i] = SIZE_MAX;
        } else {
            c[i] = ctn__strndup(s.t + k->a, k->b - k->a);
            st[i] = k->a;
            if (c[i] == NULL) nomem(&s);
        }
    }
    if (s.rc < 0) {
        for (size_t i = 0; c != NULL && i < s.nch; i++)
            free(c[i]);
        free(c);
        free(st);
        rc = s.rc;
        splitter_close(&s);
        return rc;
    }
    *chunks = c;
    *starts = st;
    *n = s.nch;
    splitter_close(&s);
    return 0;
}

/* ---- documents --------------------------------------------------------------------------- */

/* Byte offsets to code point offsets, counting on from the last one asked (chunks come in
 * order, so the whole document is counted about once). */
typedef struct {
    size_t byte, cp;
} cp_cursor;

/* The cursor stays on character boundaries, so that counting on from it counts as from the
 * start; an offset inside a character (an end a token callback put there) is counted as
 * after it. */
static size_t cp_at(const char *t, size_t tn, bool valid, cp_cursor *c, size_t off) {
    if (off < c->byte) c->byte = c->cp = 0;
    if (valid && (off >= tn || ((unsigned char)t[off] & 0xC0) != 0x80)) { /* at a boundary */
        c->cp += count_cp_valid(t + c->byte, off - c->byte);
        c->byte = off;
        return c->cp;
    }
    while (c->byte + 8 <= off && ascii8(t + c->byte))
        c->byte += 8, c->cp += 8;
    while (c->byte < off) {
        size_t k = (unsigned char)t[c->byte] < 0x80 ? 1 : char_len(t + c->byte, tn - c->byte);
        if (c->byte + k > off) return c->cp + 1;
        c->byte += k;
        c->cp++;
    }
    return c->cp;
}

/* Makes chunk documents of one document and appends them to out. */
typedef struct {
    ctn_val *out;
    ctn_val *base; /* the document's metadata less "blocks", shared by its chunks */
    const char *t;
    size_t tn;
    size_t index; /* the next chunk's "chunk" */
    cp_cursor cs, ce;
    bool valid; /* t is valid UTF-8 (the splitter's) */
} emitter;

static int emit(emitter *e, const chunk *c, int64_t page) {
    const char *text = c->own ? c->own : e->t + c->a;
    size_t len = c->own ? c->ownlen : c->b - c->a;
    if (all_space(text, len)) return 0;
    ctn_val *m = ctn_val_obj();
    if (m == NULL) return CTN_ENOMEM;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < e->base->u.obj.n; i++) {
        const ctn_val *k = e->base->u.obj.keys[i];
        rc = ctn_val_setk(m, k->u.str.p, k->u.str.len, ctn_val_ref(e->base->u.obj.vals[i]));
    }
    if (rc == 0 && page > 0) rc = ctn_val_set(m, "page", ctn_val_int(page));
    if (rc == 0) rc = ctn_val_set(m, "chunk", ctn_val_int((int64_t)e->index));
    if (rc == 0)
        rc = ctn_val_set(m, "start_index", ctn_val_int((int64_t)cp_at(e->t, e->tn, e->valid, &e->cs, c->a)));
    if (rc == 0)
        rc = ctn_val_set(m, "end_index", ctn_val_int((int64_t)cp_at(e->t, e->tn, e->valid, &e->ce, c->b)));
    if (rc < 0) {
        ctn_val_unref(m);
        return CTN_ENOMEM;
    }
    if (ctn_val_push(e->out, ctn_val_doc(text, len, m)) < 0) return CTN_ENOMEM;
    e->index++;
    return 0;
}

/* Emits the splitter's chunks (with "page" when page > 0) and forgets them. */
static void emit_all(splitter *s, emitter *e, int64_t page) {
    for (size_t i = 0; s->rc == 0 && i < s->nch; i++)
        if (emit(e, &s->ch[i], page) < 0) nomem(s);
    chunks_clear(s);
}

/* text[a, b) as one chunk when it fits chunk_size, else split recursively. */
static void fit_or_split(splitter *s, size_t a, size_t b) {
    size_t len = units(s, a, b);
    if (s->rc < 0) return;
    if (len <= s->o->chunk_size)
        add_range(s, a, b);
    else
        split_rec(s, a, b, 0);
}

/* Pages: a document that is a page already (a PDF loader's) is one; another is cut at form
 * feeds, its pieces numbered from 1 (an empty page keeps its number but gives no chunk). */
static void split_pages(splitter *s, emitter *e, bool is_page) {
    if (is_page) {
        fit_or_split(s, 0, s->tn);
        emit_all(s, e, 0);
        return;
    }
    size_t a = 0;
    for (int64_t page = 1; s->rc == 0; page++) {
        const char *q = memchr(s->t + a, '\f', s->tn - a);
        size_t b = q ? (size_t)(q - s->t) : s->tn;
        fit_or_split(s, a, b);
        emit_all(s, e, page);
        if (q == NULL) break;
        a = b + 1;
    }
}

/* LangChain's TokenTextSplitter: windows of chunk_size tokens, each starting chunk_overlap
 * tokens before the previous one ended, cut where those tokens lie in the text. */
static void split_tokens(splitter *s, emitter *e) {
    size_t *ends = NULL, count = 0;
    char msg[256] = "";
    int rc = s->o->tokens(s->o->tokens_ud, s->t, s->tn, &ends, &count, msg, sizeof msg);
    if (rc < 0) {
        free(ends);
        fail(s, rc, msg[0] ? msg : "the token callback failed");
        return;
    }
    for (size_t i = 0; i < count; i++)
        if (ends[i] > s->tn || (i > 0 && ends[i] < ends[i - 1]) ||
            (i + 1 == count && ends[i] != s->tn)) {
            free(ends);
            char m[160];
            ctn__errf(m, sizeof m,
                      "the token callback gave end %zu of %zu out of order or past the text "
                      "(%zu bytes)",
                      i, count, s->tn);
            fail(s, CTN_EINVAL, m);
            return;
        }
    size_t size = s->o->chunk_size, overlap = s->o->chunk_overlap;
    for (size_t st = 0; st < count && s->rc == 0;) {
        if (st > 0) st -= overlap;
        size_t en = st + size < count ? st + size : count;
        add_range(s, st > 0 ? ends[st - 1] : 0, ends[en - 1]);
        st = en;
    }
    free(ends);
    emit_all(s, e, 0);
}

/* ---- markdown sections ------------------------------------------------------------------- */

enum { BLOCK_CODE, BLOCK_TABLE, BLOCK_OTHER };

typedef struct {
    size_t a, b, hdr; /* bytes of the text; hdr: a table's header ends there */
    int kind;
} block;

static bool char_start(const char *t, size_t n, size_t off) {
    return off == n || ((unsigned char)t[off] & 0xC0) != 0x80;
}

static bool int_at(const ctn_val *arr, size_t i, size_t max, size_t *out) {
    const ctn_val *v = ctn_val_at(arr, i);
    if (v == NULL || v->kind != CTN_VINT || v->u.i < 0 || (uint64_t)v->u.i > max) return false;
    *out = (size_t)v->u.i;
    return true;
}

/* The loader's "blocks" ([start, end, kind] and [start, end, "table", header_end], in
 * order): *out (malloc'd) and *n; CTN_EFORMAT naming the bad entry. */
static int parse_blocks(splitter *s, const ctn_val *v, block **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (v == NULL) return 0;
    char m[200];
    if (v->kind != CTN_VARR) {
        ctn__errf(m, sizeof m, "metadata \"blocks\" is a %s, not an array",
                  ctn_vkind_name(v->kind));
        fail(s, CTN_EFORMAT, m);
        return s->rc;
    }
    size_t nb = ctn_val_len(v);
    block *bl = ctn__malloc((nb ? nb : 1) * sizeof *bl);
    if (bl == NULL) {
        nomem(s);
        return s->rc;
    }
    size_t prev = 0;
    for (size_t i = 0; i < nb; i++) {
        const ctn_val *e = ctn_val_at(v, i);
        const ctn_val *kind = ctn_val_at(e, 2);
        block b = {0, 0, 0, BLOCK_OTHER};
        bool ok = e != NULL && e->kind == CTN_VARR && int_at(e, 0, s->tn, &b.a) &&
                  int_at(e, 1, s->tn, &b.b) && kind != NULL && kind->kind == CTN_VSTR &&
                  b.a <= b.b && b.a >= prev && char_start(s->t, s->tn, b.a) &&
                  char_start(s->t, s->tn, b.b);
        if (ok && strcmp(kind->u.str.p, "code") == 0) b.kind = BLOCK_CODE;
        if (ok && strcmp(kind->u.str.p, "table") == 0) {
            b.kind = BLOCK_TABLE;
            ok = int_at(e, 3, b.b, &b.hdr) && b.hdr >= b.a && char_start(s->t, s->tn, b.hdr);
        }
        if (!ok) {
            free(bl);
            ctn__errf(m, sizeof m,
                      "metadata \"blocks\"[%zu] is not [start, end, kind] (or [start, end, "
                      "\"table\", header_end]) of byte offsets in order within the text",
                      i);
            fail(s, CTN_EFORMAT, m);
            return s->rc;
        }
        prev = b.b;
        bl[i] = b;
    }
    *out = bl;
    *n = nb;
    return 0;
}

/* The trailing white space of text[a, b) dropped, the leading kept (a code block's first
 * line keeps its indentation). */
static size_t rtrim(const char *t, size_t a, size_t b) {
    size_t aa = a;
    trim_range(t, &aa, &b);
    return aa == b ? a : b;
}

/*
 * A table longer than chunk_size as pieces of whole rows, each beginning with the header
 * (the header row and the delimiter line, text[a, hdr)); the first piece is a range of the
 * text, the others are built and come from their rows' range. Lengths add up row by row
 * (with tokens, the sum of the rows' counts).
 */
static void table_units(splitter *s, const block *bl) {
    size_t hdr = bl->hdr, b = rtrim(s->t, bl->a, bl->b);
    if (hdr < b && s->t[hdr] == '\n') hdr++;
    if (hdr >= b) {
        add_chunk(s, (chunk){bl->a, b, NULL, 0});
        return;
    }
    size_t hlen = units(s, bl->a, hdr), size = s->o->chunk_size;
    for (size_t r = hdr; r < b && s->rc == 0;) {
        size_t first = r, total = hlen, end = r;
        while (end < b) {
            const char *nl = memchr(s->t + end, '\n', b - end);
            size_t rend = nl ? (size_t)(nl - s->t) + 1 : b;
            size_t rl = units(s, end, rend);
            if (end > first && total + rl > size) break;
            total += rl;
            end = rend;
        }
        if (total > size) warn_size(s, total);
        size_t cut = rtrim(s->t, first, end);
        if (first == hdr) {
            add_chunk(s, (chunk){bl->a, cut, NULL, 0});
        } else {
            ctn_strbuf sb = {0};
            ctn_sb_put(&sb, s->t + bl->a, hdr - bl->a);
            if (hdr > bl->a && s->t[hdr - 1] != '\n') ctn_sb_put(&sb, "\n", 1);
            ctn_sb_put(&sb, s->t + first, cut - first);
            size_t n = sb.len;
            char *own = ctn_sb_take(&sb);
            if (own == NULL)
                nomem(s);
            else
                add_chunk(s, (chunk){first, cut, own, n});
        }
        r = end;
    }
}

/*
 * A section (a Markdown loader's document): one chunk when it fits; else units (the text
 * between blocks split recursively, code blocks whole, tables between rows), and then
 * consecutive units that are ranges of the text packed together while they fit.
 */
static void split_section(splitter *s, emitter *e, const ctn_val *blocks) {
    size_t len = units(s, 0, s->tn);
    if (s->rc < 0) return;
    if (len < s->o->chunk_size) {
        add_range(s, 0, s->tn);
        emit_all(s, e, 0);
        return;
    }
    block *bl;
    size_t nb;
    if (parse_blocks(s, blocks, &bl, &nb) < 0) return;
    size_t pos = 0;
    for (size_t i = 0; i <= nb && s->rc == 0; i++) {
        size_t gap_end = i < nb ? bl[i].a : s->tn;
        if (gap_end > pos) fit_or_split(s, pos, gap_end);
        if (i == nb) break;
        size_t blen = units(s, bl[i].a, bl[i].b);
        if (bl[i].kind == BLOCK_TABLE && blen > s->o->chunk_size) {
            table_units(s, &bl[i]);
        } else {
            if (blen > s->o->chunk_size) warn_size(s, blen);
            size_t b = rtrim(s->t, bl[i].a, bl[i].b);
            if (b > bl[i].a) add_chunk(s, (chunk){bl[i].a, b, NULL, 0});
        }
        pos = bl[i].b;
    }
    free(bl);
    /* Packing, in place: s->ch[0, out) are the packed chunks. */
    size_t out = 0, size = s->o->chunk_size;
    for (size_t i = 0; i < s->nch && s->rc == 0;) {
        chunk g = s->ch[i];
        size_t j = i + 1;
        if (g.own == NULL) {
            size_t glen = units(s, g.a, g.b);
            for (; j < s->nch && s->ch[j].own == NULL && s->rc == 0; j++) {
                size_t nb2 = s->ch[j].b > g.b ? s->ch[j].b : g.b;
                size_t nl =
                    s->o->tokens ? units(s, g.a, nb2) : glen + count_cp(s->t + g.b, nb2 - g.b);
                if (nl > size) break;
                glen = nl;
                g.b = nb2;
            }
        }
        s->ch[out++] = g;
        i = j;
    }
    if (s->rc < 0) return;
    s->nch = out;
    emit_all(s, e, 0);
}

/* Sectioning a plain document as Markdown needs the Markdown loader (split_md.c): the
 * sections' documents are appended to sections. */
int ctn__split_md_sections(const ctn_split_opts *o, const char *text, size_t n, const char *name,
                           ctn_val *sections, char *err, size_t errcap);

/* ---- ctn_split_docs ---------------------------------------------------------------------- */

/* The metadata of a document less "blocks", its values copied. */
static ctn_val *base_meta(const ctn_val *meta) {
    ctn_val *m = ctn_val_obj();
    for (size_t i = 0; m != NULL && meta != NULL && i < meta->u.obj.n; i++) {
        const ctn_val *k = meta->u.obj.keys[i];
        if (k->u.str.len == 6 && memcmp(k->u.str.p, "blocks", 6) == 0) continue;
        if (ctn_val_setk(m, k->u.str.p, k->u.str.len, ctn_val_copy(meta->u.obj.vals[i])) < 0) {
            ctn_val_unref(m);
            return NULL;
        }
    }
    return m;
}

/* Splits one document (text and metadata) with kind, appending to out. */
static int split_one(ctn_split_kind kind, const ctn_split_opts *o, const ctn_val *text,
                     const ctn_val *meta, const char *name, ctn_val *out, size_t *index, char *msg,
                     size_t msgcap) {
    splitter s;
    splitter_init(&s, o, text->u.str.p, text->u.str.len, msg, msgcap);
    s.name = name;
    emitter e = {out, base_meta(meta), s.t, s.tn, *index, {0, 0}, {0, 0}, s.valid};
    if (e.base == NULL) nomem(&s);
    if (s.rc == 0) switch (kind) {
        case CTN_SPLIT_RECURSIVE:
            split_rec(&s, 0, s.tn, 0);
            emit_all(&s, &e, 0);
            break;
        case CTN_SPLIT_PAGE: split_pages(&s, &e, ctn_val_get(meta, "page") != NULL); break;
        case CTN_SPLIT_TOKEN: split_tokens(&s, &e); break;
        case CTN_SPLIT_MARKDOWN: split_section(&s, &e, ctn_val_get(meta, "blocks")); break;
        }
    *index = e.index;
    ctn_val_unref(e.base);
    int rc = s.rc;
    splitter_close(&s);
    return rc;
}

/*
 * A plain document split as Markdown: sectioned by the loader, each section split as one,
 * its chunks numbered on from the last section's, so "chunk" counts through the whole
 * document. A chunk's metadata is the document's with the section's over it (a "source"
 * only when the document had one), and its offsets are into its section's text, which the
 * loader writes anew (heading lines out, the Markdown normalised).
 */
static int split_md_doc(const ctn_split_opts *o, const ctn_val *text, const ctn_val *meta,
                        const char *name, ctn_val *out, char *msg, size_t msgcap) {
    ctn_val *secs = ctn_val_arr();
    if (secs == NULL) {
        ctn__errf(msg, msgcap, "out of memory");
        return CTN_ENOMEM;
    }
    char lmsg[256] = "";
    int rc =
        ctn__split_md_sections(o, text->u.str.p, text->u.str.len, name, secs, lmsg, sizeof lmsg);
    if (rc < 0) {
        /* The loader's messages begin with the source, which the caller adds again. */
        size_t nl = strlen(name);
        const char *m = lmsg;
        if (strncmp(m, name, nl) == 0 && m[nl] == ':') m += nl + (m[nl + 1] == ' ' ? 2 : 1);
        ctn__errf(msg, msgcap, "%s", m[0] ? m : ctn_strerror(rc));
    }
    bool has_source = ctn_val_get(meta, "source") != NULL;
    size_t index = 0;
    for (size_t i = 0; rc == 0 && i < ctn_val_len(secs); i++) {
        const ctn_val *sec = ctn_val_at(secs, i);
        const ctn_val *sm = sec->u.doc.meta;
        ctn_val *m = base_meta(meta);
        for (size_t k = 0; m != NULL && k < sm->u.obj.n; k++) {
            const ctn_val *key = sm->u.obj.keys[k];
            if (!has_source && strcmp(key->u.str.p, "source") == 0) continue;
            if (ctn_val_setk(m, key->u.str.p, key->u.str.len, ctn_val_ref(sm->u.obj.vals[k])) < 0) {
                ctn_val_unref(m);
                m = NULL;
            }
        }
        if (m == NULL) {
            ctn__errf(msg, msgcap, "out of memory");
            rc = CTN_ENOMEM;
            break;
        }
        rc = split_one(CTN_SPLIT_MARKDOWN, o, sec->u.doc.text, m, name, out, &index, msg, msgcap);
        ctn_val_unref(m);
    }
    ctn_val_unref(secs);
    return rc;
}

int ctn_split_docs(ctn_split_kind kind, const ctn_split_opts *o, const ctn_val *docs, ctn_val *out,
                   char *err, size_t errcap) {
    int rc = ctn_split_check(kind, o, err, errcap);
    if (rc < 0) return rc;
    if (docs == NULL || docs->kind != CTN_VARR || out == NULL || out->kind != CTN_VARR) {
        ERR("docs and out must be arrays");
        return CTN_EINVAL;
    }
    size_t n0 = out->u.arr.n;
    char msg[256];
    for (size_t i = 0; i < docs->u.arr.n; i++) {
        const ctn_val *d = docs->u.arr.items[i];
        const ctn_val *text = d, *meta = NULL;
        char name[200];
        if (d->kind == CTN_VDOC) {
            text = d->u.doc.text;
            meta = d->u.doc.meta;
        }
        const ctn_val *src = ctn_val_get(meta, "source");
        if (src != NULL && src->kind == CTN_VSTR)
            ctn__errf(name, sizeof name, "%s", src->u.str.p);
        else
            ctn__errf(name, sizeof name, "docs[%zu]", i);
        msg[0] = '\0';
        if (d->kind != CTN_VDOC && d->kind != CTN_VSTR) {
            ctn__errf(msg, sizeof msg, "a %s is not a document or a string",
                      ctn_vkind_name(d->kind));
            rc = CTN_EINVAL;
        } else if (kind == CTN_SPLIT_MARKDOWN && ctn_val_get(meta, "section") == NULL) {
            rc = split_md_doc(o, text, meta, name, out, msg, sizeof msg);
        } else {
            size_t index = 0;
            rc = split_one(kind, o, text, meta, name, out, &index, msg, sizeof msg);
        }
        if (rc < 0) {
            while (out->u.arr.n > n0)
                ctn_val_unref(out->u.arr.items[--out->u.arr.n]);
            ERR("%s: %s", name, msg[0] ? msg : ctn_strerror(rc));
            return rc;
        }
    }
    return 0;
}
