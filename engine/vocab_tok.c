/*
 * Text to token ids: special-token partition, then SentencePiece BPE (SPM) or byte-level
 * BPE on each stretch of plain text, reproducing llama.cpp's llama_tokenize.
 *
 * All working memory of one call lives in a `work` struct whose buffers grow as needed and
 * are reused for every fragment and word, so a call does a handful of allocations however
 * long the text is. The vocabulary is only read, so calls may run in parallel.
 */
#include <stdlib.h>
#include <string.h>

#include "unicode.h"
#include "vocab-impl.h"

typedef struct {
    int32_t tok; /* special token id, or -1 for raw text */
    size_t off, len;
} frag;

typedef struct {
    size_t pos;
    uint32_t sidx; /* index into v->special (priority order) */
} occ;

typedef struct {
    int32_t id; /* token id of the symbol's text, -1 if none */
    uint32_t start, len;
    int32_t prev, next;
} sym;

typedef struct {
    float score;  /* SPM: higher first */
    int32_t rank; /* BPE: lower first */
    int32_t left, right;
    uint32_t size;
} bigram;

typedef struct {
    int32_t *ids;
    size_t n_ids, cap_ids;
    frag *frags, *frags2;
    size_t n_frags, cap_frags, cap_frags2;
    occ *occs;
    size_t n_occs, cap_occs;
    char *text; /* SPM escaped text / BPE normalised text / encoded word */
    size_t cap_text;
    char *word;
    size_t cap_word;
    char *esc;
    size_t cap_esc;
    uint32_t *cpts;
    uint16_t *flags;
    uint32_t *boff;
    size_t cap_cpts;
    sym *syms;
    size_t cap_syms;
    bigram *heap;
    size_t n_heap, cap_heap;
    int32_t *pair_rank; /* BPE small-word path: rank of (i, next(i)) */
    int32_t *pair_res;
    size_t cap_pairs;
    ctn__u32vec lens;
    ctn__pretok_scratch pre;
} work;

#define GROW(ptr, cap, need)                                                                       \
    do {                                                                                           \
        if ((need) > (cap)) {                                                                      \
            size_t nc_ = (cap) ? (cap) : 16;                                                       \
            while (nc_ < (need))                                                                   \
                nc_ *= 2;                                                                          \
            void *np_ = ctn__realloc((ptr), nc_ * sizeof *(ptr));                                  \
            if (!np_) return CTN_ENOMEM;                                                           \
            (ptr) = np_;                                                                           \
            (cap) = nc_;                                                                           \
        }                                                                                          \
    } while (0)

static void work_free(work *w) {
    free(w->frags);
    free(w->frags2);
    free(w->occs);
    free(w->text);
    free(w->word);
    free(w->esc);
    free(w->cpts);
    free(w->flags);
    free(w->boff);
    free(w->syms);
    free(w->heap);
    free(w->pair_rank);
    free(w->pair_res);
    free(w->lens.v);
    ctn__pretok_scratch_free(&w->pre);
}

static int out_push(work *w, int32_t id) {
    GROW(w->ids, w->cap_ids, w->n_ids + 1);
    w->ids[w->n_ids++] = id;
    return 0;
}

/* ---- special tokens ---------------------------------------------------------------- */

static inline bool c_isspace(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static int cmp_occ(const void *pa, const void *pb) {
    const occ *a = pa, *b = pb;
    if (a->sidx != b->sidx) return a->sidx < b->sidx ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

static int frag_push(frag **arr, size_t *n, size_t *cap, frag f) {
    GROW(*arr, *cap, *n + 1);
    (*arr)[(*n)++] = f;
    return 0;
}

/*
 * Splits the text into raw stretches and special tokens exactly like llama.cpp's
 * tokenizer_st_partition: special tokens are taken one at a time, longest text first, and
 * each cuts every remaining raw stretch at its leftmost non-overlapping occurrences,
 * trimming whitespace next to it when it has lstrip/rstrip. Instead of searching the text
 * once per special token we find all occurrences of all of them in one pass over a trie,
 * then replay the same sequence of cuts on those positions only.
 */
static int partition(const ctn_vocab *v, work *w, const char *text, size_t len,
                     bool parse_special) {
    w->n_frags = 0;
    if (len == 0) return 0;
    int rc = frag_push(&w->frags, &w->n_frags, &w->cap_frags, (frag){-1, 0, len});
    if (rc < 0 || v->n_special == 0) return rc;
    const unsigned char *t = (const unsigned char *)text;
    w->n_occs = 0;
    for (size_t p = 0; p < len; p++) {
        uint32_t node = v->trie_root[t[p]];
        size_t k = p + 1;
        while (node) {
            int32_t si = v->trie[node].token;
            if (si >= 0) {
                uint16_t a = v->attrs[v->special[si]];
                if (parse_special || !(a & (CTN__ATTR_CONTROL | CTN__ATTR_UNKNOWN))) {
                    GROW(w->occs, w->cap_occs, w->n_occs + 1);
                    w->occs[w->n_occs++] = (occ){p, (uint32_t)si};
                }
            }
            if (k >= len) break;
            uint32_t ch = v->trie[node].first_child;
            while (ch && v->trie[ch].byte != t[k])
                ch = v->trie[ch].next_sibling;
            node = ch;
            k++;
        }
    }
    if (w->n_occs == 0) return 0;
    qsort(w->occs, w->n_occs, sizeof *w->occs, cmp_occ);

    for (size_t g = 0; g < w->n_occs;) {
        size_t ge = g;
        while (ge < w->n_occs && w->occs[ge].sidx == w->occs[g].sidx)
            ge++;
        int32_t id = v->special[w->occs[g].sidx];
        size_t tlen = v->text_off[id + 1] - v->text_off[id] - 1;
        uint16_t attr = v->attrs[id];
        size_t n2 = 0, j = g;
        for (size_t f = 0; f < w->n_frags; f++) {
            frag fr = w->frags[f];
            if (fr.tok >= 0) {
                if ((rc = frag_push(&w->frags2, &n2, &w->cap_frags2, fr)) < 0) return rc;
                continue;
            }
            size_t base = fr.off, end = fr.off + fr.len;
            bool matched = false;
            for (;;) {
                while (j < ge && w->occs[j].pos < base)
                    j++;
                if (j >= ge || w->occs[j].pos + tlen > end) break;
                size_t m = w->occs[j].pos;
                matched = true;
                if (m > base) {
                    size_t ll = m - base;
                    if (attr & CTN__ATTR_LSTRIP) {
                        while (ll > 0 && c_isspace(t[base + ll - 1]))
                            ll--;
                    }
                    if (ll > 0 && (rc = frag_push(&w->frags2, &n2, &w->cap_frags2,
                                                  (frag){-1, base, ll})) < 0) {
                        return rc;
                    }
                }
                if ((rc = frag_push(&w->frags2, &n2, &w->cap_frags2, (frag){id, 0, 0})) < 0) {
                    return rc;
                }
                base = m + tlen;
                if (base >= end) break;
                if (attr & CTN__ATTR_RSTRIP) {
                    while (base < end && c_isspace(t[base]))
                        base++;
                }
            }
            if (!matched) {
                if ((rc = frag_push(&w->frags2, &n2, &w->cap_frags2, fr)) < 0) return rc;
            } else if (base < end) {
                if ((rc = frag_push(&w->frags2, &n2, &w->cap_frags2,
                                    (frag){-1, base, end - base})) < 0) {
                    return rc;
                }
            }
        }
        frag *tmp = w->frags;
        size_t tcap = w->cap_frags;
        w->frags = w->frags2;
        w->cap_frags = w->cap_frags2;
        w->n_frags = n2;
        w->frags2 = tmp;
        w->cap_frags2 = tcap;
        g = ge;
    }
    return 0;
}

/* ---- priority queue of bigrams --------------------------------------------------------- */

/* SPM: best = highest score, then leftmost; BPE: lowest rank, then leftmost. */
static inline bool better(const bigram *a, const bigram *b, bool spm) {
    if (spm) {
        return a->score > b->score || (a->score == b->score && a->left < b->left);
    }
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(work *w, bigram b, bool spm) {
    GROW(w->heap, w->cap_heap, w->n_heap + 1);
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!better(&b, &w->heap[p], spm)) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
    return 0;
}

static bigram heap_pop(work *w, bool spm) {
    bigram top = w->heap[0];
    bigram last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && better(&w->heap[c + 1], &w->heap[c], spm)) c++;
        if (!better(&w->heap[c], &last, spm)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* ---- SentencePiece BPE (llm_tokenizer_spm) ------------------------------------------- */

static int spm_try_bigram(const ctn_vocab *v, work *w, const char *txt, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    const sym *a = &w->syms[l], *b = &w->syms[r];
    int32_t id = ctn__vocab_find(v, txt + a->start, a->len + b->len);
    if (id < 0) return 0;
    return heap_push(w, (bigram){v->scores[id], 0, l, r, a->len + b->len}, true);
}

static int spm_tokenize(const ctn_vocab *v, work *w, const char *txt, size_t n) {
    int rc;
    size_t ns = 0;
    GROW(w->syms, w->cap_syms, n);
    for (size_t off = 0; off < n;) {
        size_t k = ctn__utf8_len((unsigned char)txt[off]);
        if (k > n - off) k = n - off;
        w->syms[ns] = (sym){-1, (uint32_t)off, (uint32_t)k, (int32_t)ns - 1,
                            off + k == n ? -1 : (int32_t)ns + 1};
        ns++;
        off += k;
    }
    w->n_heap = 0;
    for (size_t i = 1; i < ns; i++) {
        if ((rc = spm_try_bigram(v, w, txt, (int32_t)i - 1, (int32_t)i)) < 0) return rc;
    }
    while (w->n_heap) {
        bigram b = heap_pop(w, true);
        sym *l = &w->syms[b.left], *r = &w->syms[b.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != b.size) continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) w->syms[r->next].prev = b.left;
        if ((rc = spm_try_bigram(v, w, txt, l->prev, b.left)) < 0) return rc;
        if ((rc = spm_try_bigram(v, w, txt, b.left, l->next)) < 0) return rc;
    }
    for (int32_t i = ns ? 0 : -1; i != -1; i = w->syms[i].next) {
        const sym *s = &w->syms[i];
        int32_t id = ctn__vocab_find(v, txt + s->start, s->len);
        if (id >= 0) {
            if ((rc = out_push(w, id)) < 0) return rc;
            continue;
        }
        /* not a token: byte fallback. Merged symbols are always tokens, so this is one
         * character. (llama.cpp throws when a byte has no token; we use <unk> then.) */
        for (uint32_t k = 0; k < s->len; k++) {
            int32_t bt = v->byte_tok[(unsigned char)txt[s->start + k]];
            if (bt < 0) bt = v->unk;
            if (bt >= 0 && (rc = out_push(w, bt)) < 0) return rc;
        }
    }
    return 0;
}

static int spm_fragment(const ctn_vocab *v, work *w, const char *src, size_t n, bool prefix) {
    size_t need = 3 * n + 4;
    GROW(w->text, w->cap_text, need);
    size_t o = 0;
    if (prefix) {
        memcpy(w->text, "\xe2\x96\x81", 3);
        o = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (src[i] == ' ') {
            memcpy(w->text + o, "\xe2\x96\x81", 3);
            o += 3;
        } else {
            w->text[o++] = src[i];
        }
    }
    if (!v->spm_word_split) return spm_tokenize(v, w, w->text, o);
    /*
     * Split only at character starts as llama.cpp segments the text: it takes a lead byte's
     * length on trust, so an invalid byte such as 0xFF swallows the "▁" after it and the
     * two must stay in one word ("Hello \xff world" ends in four byte tokens there).
     */
    int rc;
    size_t seg = 0;
    for (size_t i = 0; i < o;) {
        size_t cl = ctn__utf8_len((unsigned char)w->text[i]);
        if (cl > o - i) cl = o - i;
        if (i > 0 && cl == 3 && memcmp(w->text + i, "\xe2\x96\x81", 3) == 0 &&
            w->text[i - 1] != '\x81') {
            if ((rc = spm_tokenize(v, w, w->text + seg, i - seg)) < 0) return rc;
            seg = i;
        }
        i += cl;
    }
    return spm_tokenize(v, w, w->text + seg, o - seg);
}

/* ---- byte-level BPE (llm_tokenizer_bpe) ------------------------------------------------ */

static inline const ctn__merge_slot *merge_find(const ctn_vocab *v, int32_t a, int32_t b) {
    if (a < 0 || b < 0) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    for (size_t i = (size_t)h & v->merge_mask;; i = (i + 1) & v->merge_mask) {
        const ctn__merge_slot *s = &v->merges[i];
        if (s->rank < 0) return NULL;
        if (s->key == key) return s;
    }
}

static int bpe_emit_symbol(const ctn_vocab *v, work *w, const sym *s, const char *word) {
    int rc;
    if (s->id >= 0) return out_push(w, s->id);
    for (uint32_t k = 0; k < s->len; k++) {
        unsigned char b = (unsigned char)word[s->start + k];
        if (v->pretok.byte_encode) {
            /* llama.cpp looks up each byte of the symbol's alphabet text on its own */
            for (int j = 0; j < 2; j++) {
                int32_t id = v->gpt2_byte_fb[b][j];
                if (id >= 0 && (rc = out_push(w, id)) < 0) return rc;
            }
        } else if (v->byte_tok[b] >= 0) {
            if ((rc = out_push(w, v->byte_tok[b])) < 0) return rc;
        }
    }
    return 0;
}

/*
 * Merges one pre-tokenized word. Symbols carry the id of their text, so a merge is a lookup
 * of the id pair. The best pair (lowest rank, then leftmost) is merged until none is left —
 * the result llama.cpp's priority queue produces; short words use a scan over cached pair
 * ranks, long ones a heap.
 */
static int bpe_word(const ctn_vocab *v, work *w, const char *word, size_t n) {
    int rc;
    const bool enc = v->pretok.byte_encode;
    if (v->ignore_merges || (v->gemma4 && n > 0 && strspn(word, "\n") >= n)) {
        /* a word that is a token as a whole is taken as is (llama3, tekken, ...) */
        size_t el = n;
        const char *et = word;
        if (enc) {
            GROW(w->text, w->cap_text, 2 * n + 1);
            el = 0;
            for (size_t i = 0; i < n; i++) {
                el += ctn__utf8_encode(ctn__gpt2_byte_to_cpt((unsigned char)word[i]), w->text + el);
            }
            et = w->text;
        }
        int32_t id = ctn__vocab_find(v, et, el);
        if (id >= 0) return out_push(w, id);
    }
    GROW(w->syms, w->cap_syms, n + 1);
    size_t ns = 0;
    for (size_t off = 0; off < n;) {
        size_t k = 1;
        int32_t id;
        if (enc) {
            id = v->gpt2_char_tok[(unsigned char)word[off]];
        } else {
            k = ctn__utf8_len((unsigned char)word[off]);
            if (k > n - off) k = n - off;
            id = ctn__vocab_find(v, word + off, k);
        }
        w->syms[ns] = (sym){id, (uint32_t)off, (uint32_t)k, (int32_t)ns - 1,
                            off + k == n ? -1 : (int32_t)ns + 1};
        ns++;
        off += k;
    }
    if (ns == 0) return 0;
    if (ns <= 96) {
        GROW(w->pair_rank, w->cap_pairs, ns);
        if (w->cap_pairs > 0) {
            int32_t *np = ctn__realloc(w->pair_res, w->cap_pairs * sizeof *np);
            if (!np) return CTN_ENOMEM;
            w->pair_res = np;
        }
        for (size_t i = 0; i + 1 < ns; i++) {
            const ctn__merge_slot *m = merge_find(v, w->syms[i].id, w->syms[i + 1].id);
            w->pair_rank[i] = m ? m->rank : -1;
            w->pair_res[i] = m ? m->result : -1;
        }
        w->pair_rank[ns - 1] = -1;
        for (;;) {
            int32_t best = -1, br = INT32_MAX;
            for (int32_t i = 0; i != -1; i = w->syms[i].next) {
                if (w->pair_rank[i] >= 0 && w->pair_rank[i] < br) {
                    br = w->pair_rank[i];
                    best = i;
                }
            }
            if (best < 0) break;
            sym *l = &w->syms[best];
            sym *r = &w->syms[l->next];
            l->len += r->len;
            l->id = w->pair_res[best];
            r->len = 0;
            l->next = r->next;
            if (r->next >= 0) w->syms[r->next].prev = best;
            if (l->prev >= 0) {
                const ctn__merge_slot *m = merge_find(v, w->syms[l->prev].id, l->id);
                w->pair_rank[l->prev] = m ? m->rank : -1;
                w->pair_res[l->prev] = m ? m->result : -1;
            }
            if (l->next >= 0) {
                const ctn__merge_slot *m = merge_find(v, l->id, w->syms[l->next].id);
                w->pair_rank[best] = m ? m->rank : -1;
                w->pair_res[best] = m ? m->result : -1;
            } else {
                w->pair_rank[best] = -1;
            }
        }
    } else {
        w->n_heap = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            const ctn__merge_slot *m = merge_find(v, w->syms[i].id, w->syms[i + 1].id);
            if (m && (rc = heap_push(w,
                                     (bigram){0, m->rank, (int32_t)i, (int32_t)i + 1,
                                              w->syms[i].len + w->syms[i + 1].len},
                                     false)) < 0) {
                return rc;
            }
        }
        while (w->n_heap) {
            bigram b = heap_pop(w, false);
            sym *l = &w->syms[b.left], *r = &w->syms[b.right];
            if (l->len == 0 || r->len == 0 || l->len + r->len != b.size) continue;
            const ctn__merge_slot *m = merge_find(v, l->id, r->id);
            l->len += r->len;
            l->id = m ? m->result : -1;
            r->len = 0;
            l->next = r->next;
            if (r->next >= 0) w->syms[r->next].prev = b.left;
            if (l->prev >= 0) {
                sym *p = &w->syms[l->prev];
                const ctn__merge_slot *pm = merge_find(v, p->id, l->id);
                if (pm &&
                    (rc = heap_push(w, (bigram){0, pm->rank, l->prev, b.left, p->len + l->len},
                                    false)) < 0) {
                    return rc;
                }
            }
            if (l->next >= 0) {
                sym *q = &w->syms[l->next];
                const ctn__merge_slot *nm = merge_find(v, l->id, q->id);
                if (nm &&
                    (rc = heap_push(w, (bigram){0, nm->rank, b.left, l->next, l->len + q->len},
                                    false)) < 0) {
                    return rc;
                }
            }
        }
    }
    for (int32_t i = 0; i != -1; i = w->syms[i].next) {
        if ((rc = bpe_emit_symbol(v, w, &w->syms[i], word)) < 0) return rc;
    }
    return 0;
}

static int bpe_fragment(const ctn_vocab *v, work *w, const char *src, size_t n) {
    int rc;
    if (v->escape_ws) {
        /* SPM-style BPE (Gemma 4): spaces become U+2581 before anything else */
        GROW(w->esc, w->cap_esc, 3 * n + 1);
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (src[i] == ' ') {
                memcpy(w->esc + o, "\xe2\x96\x81", 3);
                o += 3;
            } else {
                w->esc[o++] = src[i];
            }
        }
        src = w->esc;
        n = o;
    }
    /* decode to code points like llama.cpp; the words are re-encoded from them, so invalid
     * bytes become U+FFFD and overlong forms their shortest encoding */
    GROW(w->cpts, w->cap_cpts, n + 1);
    uint16_t *fl = ctn__realloc(w->flags, w->cap_cpts * sizeof *fl);
    if (!fl) return CTN_ENOMEM;
    w->flags = fl;
    uint32_t *bo = ctn__realloc(w->boff, w->cap_cpts * sizeof *bo);
    if (!bo) return CTN_ENOMEM;
    w->boff = bo;
    size_t nc = 0, need = 0;
    for (size_t i = 0; i < n; nc++) {
        uint32_t c;
        i += ctn__utf8_decode((const unsigned char *)src + i, n - i, &c);
        w->cpts[nc] = c;
        w->flags[nc] = ctn__ucat(c);
        need += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : c < CTN__CPT_MAX ? 4 : 3;
    }
    GROW(w->text, w->cap_text, need + 1);
    char *norm = w->text;
    size_t o = 0;
    for (size_t i = 0; i < nc; i++) {
        w->boff[i] = (uint32_t)o;
        o += ctn__utf8_encode(w->cpts[i], norm + o);
    }
    w->boff[nc] = (uint32_t)o;
    if ((rc = ctn__pretok_split(&v->pretok, &w->pre, w->cpts, w->flags, nc, &w->lens)) < 0) {
        return rc;
    }
    /* bpe_word may reuse w->text for the encoded word; keep the normalised text apart */
    GROW(w->word, w->cap_word, o + 1);
    memcpy(w->word, norm, o);
    size_t start = 0;
    for (size_t k = 0; k < w->lens.n; k++) {
        size_t a = start, b = start + w->lens.v[k];
        start = b;
        if (b == a) continue;
        if ((rc = bpe_word(v, w, w->word + w->boff[a], w->boff[b] - w->boff[a])) < 0) return rc;
    }
    return 0;
}

/* ---- entry point ------------------------------------------------------------------ */

int ctn_tokenize(const ctn_vocab *v, const char *text, size_t len, bool add_special,
                 bool parse_special, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (!v || (!text && len)) return CTN_EINVAL;
    work w;
    memset(&w, 0, sizeof w);
    int rc = partition(v, &w, text, len, parse_special);
    if (rc < 0) goto done;
    if (add_special && v->add_bos && v->bos >= 0 && (rc = out_push(&w, v->bos)) < 0) goto done;
    bool prev_special = true; /* SPM: the first fragment gets the space prefix too */
    for (size_t f = 0; f < w.n_frags; f++) {
        frag fr = w.frags[f];
        if (fr.tok >= 0) {
            if ((rc = out_push(&w, fr.tok)) < 0) goto done;
            prev_special = true;
            continue;
        }
        if (v->kind == CTN_VOCAB_SPM) {
            rc = spm_fragment(v, &w, text + fr.off, fr.len, v->add_space_prefix && prev_special);
        } else {
            rc = bpe_fragment(v, &w, text + fr.off, fr.len);
        }
        if (rc < 0) goto done;
        prev_special = false;
    }
    if (add_special && v->add_eos && v->eos >= 0 && (rc = out_push(&w, v->eos)) < 0) goto done;
    *ids = w.ids;
    *n_ids = w.n_ids;
    w.ids = NULL;
done:
    free(w.ids);
    work_free(&w);
    return rc < 0 ? rc : 0;
}
