/*
 * GGUF v2/v3 reader and writer (see gguf.h for the API and ownership rules).
 *
 * The reader treats every file as hostile: each read is bounds-checked against the bytes
 * left, every count is bounded by the bytes left before anything is allocated for it, and
 * all size arithmetic is checked for overflow. The only allocations are one table per
 * key/value list, tensor list, string array and array of arrays, all taken from a small
 * arena owned by the ctn_gguf object, so a 150k-token vocabulary costs one allocation.
 */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h" /* every allocation goes through ctn__malloc/ctn__realloc */
#include "mapfile.h"
#include "str.h"

/* ---- checked arithmetic ------------------------------------------------------------ */

static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}

static bool add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (b > UINT64_MAX - a) return false;
    *out = a + b;
    return true;
}

/* Rounds up to a multiple of a power of two; false on overflow. */
static bool pad_u64(uint64_t x, uint64_t align, uint64_t *out) {
    uint64_t r;
    if (!add_u64(x, align - 1, &r)) return false;
    *out = r & ~(align - 1);
    return true;
}

/* ---- element types ----------------------------------------------------------------- */

/* The block geometry of each type: kernels/types.c (the one table). */
typedef struct {
    const char *name;
    unsigned block; /* elements per block */
    unsigned bytes; /* bytes per block */
} type_info;

static type_info type_of(int type) {
    return (type_info){ctn_type_name(type), (unsigned)ctn_type_block_size(type),
                       (unsigned)ctn_type_block_bytes(type)};
}

/* Numbers ggml once used and retired; named only so the error can say what they were. */
static const char *removed_type_name(uint32_t t) {
    switch (t) {
    case 4: return "Q4_2";
    case 5: return "Q4_3";
    case 31: return "Q4_0_4_4";
    case 32: return "Q4_0_4_8";
    case 33: return "Q4_0_8_8";
    case 36: return "IQ4_NL_4_4";
    case 37: return "IQ4_NL_4_8";
    case 38: return "IQ4_NL_8_8";
    default: return NULL;
    }
}


static const char *const VALUE_TYPE_NAMES[CTN_GGUF_TYPE_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

/* Encoded size of a fixed-size value type; 0 for string and array. */
static const uint8_t VALUE_SIZE[CTN_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *ctn_gguf_type_name(int type) {
    if (type < 0 || type >= CTN_GGUF_TYPE_COUNT) return NULL;
    return VALUE_TYPE_NAMES[type];
}

/* ---- little-endian encoding -------------------------------------------------------- */

/* Byte-wise decoding: the mapping gives no alignment guarantee and the host may be BE. */
static uint64_t get_le(const uint8_t *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n) {
    for (unsigned i = 0; i < n; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static bool host_is_le(void) {
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Sign-extends the low n bytes of v. */
static int64_t sext(uint64_t v, unsigned n) {
    if (n >= 8) return v > (uint64_t)INT64_MAX ? -(int64_t)(~v) - 1 : (int64_t)v;
    uint64_t sign = (uint64_t)1 << (n * 8 - 1);
    if (v & sign) return -(int64_t)(((sign << 1) - v));
    return (int64_t)v;
}

/* Decodes one fixed-size element of `type` from p into the value union. */
static void decode_scalar(ctn_gguf_value *v, ctn_gguf_type type, const uint8_t *p) {
    unsigned n = VALUE_SIZE[type];
    uint64_t raw = get_le(p, n);
    v->type = type;
    switch (type) {
    case CTN_GGUF_UINT8:
    case CTN_GGUF_UINT16:
    case CTN_GGUF_UINT32:
    case CTN_GGUF_UINT64: v->v.u64 = raw; break;
    case CTN_GGUF_INT8:
    case CTN_GGUF_INT16:
    case CTN_GGUF_INT32:
    case CTN_GGUF_INT64: v->v.i64 = sext(raw, n); break;
    case CTN_GGUF_FLOAT32: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, 4);
        v->v.f64 = f;
        break;
    }
    case CTN_GGUF_FLOAT64: {
        double d;
        memcpy(&d, &raw, 8);
        v->v.f64 = d;
        break;
    }
    /* The spec says 0 or 1; like llama.cpp we read any nonzero byte as true. */
    case CTN_GGUF_BOOL: v->v.b = raw != 0; break;
    default: break;
    }
}

/* ---- arena ------------------------------------------------------------------------- */

/*
 * The reader's tables live in a bump arena freed in one sweep, so no value needs its own
 * free path and a failed parse releases everything by freeing the arena.
 */
typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    max_align_t data[];
} chunk;

#define ARENA_MIN_CHUNK ((size_t)16 * 1024)

static void *arena_alloc(chunk **arena, size_t n) {
    const size_t al = alignof(max_align_t);
    if (n > SIZE_MAX - al) return NULL;
    n = (n + al - 1) & ~(al - 1);
    chunk *c = *arena;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > ARENA_MIN_CHUNK ? n : ARENA_MIN_CHUNK;
        if (cap > SIZE_MAX - sizeof(chunk)) return NULL;
        chunk *nc = ctn__malloc(sizeof(chunk) + cap);
        if (nc == NULL) return NULL;
        nc->cap = cap;
        nc->used = 0;
        /* A big table gets its own chunk behind the current one, keeping the current
         * chunk's free tail usable for the small tables that follow. */
        if (c != NULL && n > ARENA_MIN_CHUNK) {
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            *arena = nc;
        }
        c = nc;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(chunk *c) {
    while (c != NULL) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* Allocates count*size bytes from the arena, failing cleanly on overflow. */
static void *arena_array(chunk **arena, uint64_t count, size_t size) {
    uint64_t bytes;
    if (!mul_u64(count, size, &bytes) || bytes > SIZE_MAX) return NULL;
    return arena_alloc(arena, (size_t)bytes);
}

/* ---- reader ------------------------------------------------------------------------ */

typedef struct {
    ctn_gguf_str key;
    uint64_t offset; /* file offset of the key's length field */
    ctn_gguf_value val;
} kv_entry;

typedef struct {
    ctn_gguf_tensor t;
    uint64_t info_offset; /* file offset of the tensor info's name length field */
} tensor_entry;

struct ctn_gguf {
    char *path;          /* file name (or caller's name) used in messages */
    const uint8_t *base; /* the whole file */
    uint64_t size;       /* bytes at base */
    void *map;           /* mmap'd region to unmap, or NULL for open_memory */
    size_t map_len;
    int fd; /* the open file (ctn_gguf_open), or -1 */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset; /* file offset of the data section */
    int64_t n_kv, n_tensors;
    kv_entry *kv;                  /* (n_kv) in file order */
    kv_entry **kv_sorted;          /* (n_kv) sorted by key, for lookup and duplicate checks */
    tensor_entry *tensors;         /* (n_tensors) in file order */
    tensor_entry **tensors_sorted; /* (n_tensors) sorted by name */
    chunk *arena;
};

typedef struct {
    ctn_gguf *g;
    const uint8_t *base;
    uint64_t size, pos;
    char *err;
    size_t errlen;
    char field[420]; /* what is being read: "header", "key 'x'", "tensor 'y'" */
} reader;

/*
 * Writes a name from the file into dst, quoted-safe: printable ASCII as is, everything else
 * as \xNN, cut after 80 bytes. Names come from hostile files and end up in terminals.
 */
static void quote(char *dst, size_t cap, const char *s, uint64_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    const uint64_t max = 80;
    for (uint64_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            if (o + 1 >= cap) break;
            dst[o++] = (char)c;
        } else {
            if (o + 4 >= cap) break;
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    if (n > max && o + 3 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    if (cap > 0) dst[o < cap ? o : cap - 1] = '\0';
}

static void set_field(reader *r, const char *kind, ctn_gguf_str name) {
    char q[400];
    quote(q, sizeof q, name.ptr, name.len);
    snprintf(r->field, sizeof r->field, "%s '%s'", kind, q);
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int
fail(reader *r, int code, uint64_t off, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctn__errf(r->err, r->errlen, "%s: %s (at offset %" PRIu64 "): %s", r->g->path, r->field, off,
              msg);
    return code;
}

static int fail_nomem(reader *r, uint64_t off, const char *what) {
    return fail(r, CTN_ENOMEM, off, "out of memory allocating %s", what);
}

/* Takes n bytes at the read position. */
static int take(reader *r, uint64_t n, const char *what, const uint8_t **out) {
    if (n > r->size - r->pos) {
        return fail(r, CTN_EFORMAT, r->pos,
                    "%s (%" PRIu64 " bytes) extends past end of file (size %" PRIu64 ")", what, n,
                    r->size);
    }
    *out = r->base + r->pos;
    r->pos += n;
    return 0;
}

static int rd_u32(reader *r, const char *what, uint32_t *v) {
    const uint8_t *p = NULL;
    int rc = take(r, 4, what, &p);
    /* Set even on failure, so no path can read an indeterminate value. */
    *v = rc == 0 ? (uint32_t)get_le(p, 4) : 0;
    return rc;
}

static int rd_u64(reader *r, const char *what, uint64_t *v) {
    const uint8_t *p = NULL;
    int rc = take(r, 8, what, &p);
    *v = rc == 0 ? get_le(p, 8) : 0;
    return rc;
}

static int rd_str(reader *r, const char *what, ctn_gguf_str *s) {
    uint64_t at = r->pos, len;
    s->ptr = "";
    s->len = 0;
    int rc = rd_u64(r, what, &len);
    if (rc < 0) return rc;
    if (len > r->size - r->pos) {
        return fail(r, CTN_EFORMAT, at,
                    "%s of length %" PRIu64 " extends past end of file (size %" PRIu64 ")", what,
                    len, r->size);
    }
    s->ptr = (const char *)r->base + r->pos;
    s->len = len;
    r->pos += len;
    return 0;
}

/*
 * Parses the body of an array value (element type, count, elements) at nesting depth
 * `depth` (1 for a key's own array). Each element needs at least one byte of file, so the
 * count is checked against the bytes left before its table is allocated.
 */
static int parse_array(reader *r, ctn_gguf_value *v, int depth) {
    uint64_t at = r->pos, n;
    uint32_t et;
    int rc = rd_u32(r, "array element type", &et);
    if (rc < 0) return rc;
    if (et >= CTN_GGUF_TYPE_COUNT) {
        return fail(r, CTN_EFORMAT, at, "unknown array element type %" PRIu32, et);
    }
    if (et == CTN_GGUF_ARRAY && depth >= CTN_GGUF_MAX_DEPTH) {
        return fail(r, CTN_EFORMAT, at, "arrays nested deeper than %d levels", CTN_GGUF_MAX_DEPTH);
    }
    uint64_t n_at = r->pos;
    rc = rd_u64(r, "array length", &n);
    if (rc < 0) return rc;
    uint64_t left = r->size - r->pos;
    v->type = CTN_GGUF_ARRAY;
    v->v.arr.type = (ctn_gguf_type)et;
    v->v.arr.n = n;
    v->v.arr.data = NULL;

    /* Smallest encoding of one element: strings are a length, arrays a type and a count. */
    uint64_t min = et == CTN_GGUF_STRING ? 8 : et == CTN_GGUF_ARRAY ? 12 : VALUE_SIZE[et];
    if (n > left / min) {
        return fail(r, CTN_EFORMAT, n_at,
                    "array of %" PRIu64 " %s elements (at least %" PRIu64
                    " bytes each) extends past end of file (size %" PRIu64 ")",
                    n, VALUE_TYPE_NAMES[et], min, r->size);
    }
    if (et == CTN_GGUF_STRING) {
        ctn_gguf_str *tab = arena_array(&r->g->arena, n, sizeof *tab);
        if (tab == NULL) return fail_nomem(r, at, "a string array");
        for (uint64_t i = 0; i < n; i++) {
            rc = rd_str(r, "string array element", &tab[i]);
            if (rc < 0) return rc;
        }
        v->v.arr.data = tab;
    } else if (et == CTN_GGUF_ARRAY) {
        ctn_gguf_value *tab = arena_array(&r->g->arena, n, sizeof *tab);
        if (tab == NULL) return fail_nomem(r, at, "an array of arrays");
        for (uint64_t i = 0; i < n; i++) {
            rc = parse_array(r, &tab[i], depth + 1);
            if (rc < 0) return rc;
        }
        v->v.arr.data = tab;
    } else {
        v->v.arr.data = r->base + r->pos;
        r->pos += n * min; /* cannot overflow or pass the end: n <= left / min */
    }
    return 0;
}

static int parse_value(reader *r, ctn_gguf_value *v, uint32_t type, uint64_t type_at) {
    if (type >= CTN_GGUF_TYPE_COUNT) {
        return fail(r, CTN_EFORMAT, type_at, "unknown value type %" PRIu32, type);
    }
    if (type == CTN_GGUF_STRING) {
        v->type = CTN_GGUF_STRING;
        return rd_str(r, "string value", &v->v.str);
    }
    if (type == CTN_GGUF_ARRAY) return parse_array(r, v, 1);
    const uint8_t *p = NULL;
    int rc = take(r, VALUE_SIZE[type], VALUE_TYPE_NAMES[type], &p);
    if (rc < 0) return rc;
    decode_scalar(v, (ctn_gguf_type)type, p);
    return 0;
}

static int cmp_str(const char *a, uint64_t na, const char *b, uint64_t nb) {
    uint64_t n = na < nb ? na : nb;
    int c = n ? memcmp(a, b, (size_t)n) : 0;
    if (c != 0) return c;
    return na < nb ? -1 : na > nb ? 1 : 0;
}

static int cmp_kv(const void *a, const void *b) {
    const kv_entry *x = *(kv_entry *const *)a, *y = *(kv_entry *const *)b;
    int c = cmp_str(x->key.ptr, x->key.len, y->key.ptr, y->key.len);
    if (c != 0) return c;
    /* Equal keys order by position so the later one is reported as the duplicate. */
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_tensor(const void *a, const void *b) {
    const tensor_entry *x = *(tensor_entry *const *)a, *y = *(tensor_entry *const *)b;
    int c = cmp_str(x->t.name.ptr, x->t.name.len, y->t.name.ptr, y->t.name.len);
    if (c != 0) return c;
    return x->info_offset < y->info_offset ? -1 : x->info_offset > y->info_offset;
}

typedef struct {
    uint64_t begin, end;
    int64_t idx;
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int parse_header(reader *r) {
    ctn_gguf *g = r->g;
    snprintf(r->field, sizeof r->field, "header");
    if (r->size < 4) {
        return fail(r, CTN_EFORMAT, 0, "file is %" PRIu64 " bytes, too short for the magic",
                    r->size);
    }
    if (memcmp(r->base, CTN_GGUF_MAGIC, 4) != 0) {
        char q[40];
        quote(q, sizeof q, (const char *)r->base, 4);
        return fail(r, CTN_EFORMAT, 0, "bad magic '%s', not a GGUF file", q);
    }
    r->pos = 4;
    uint32_t ver;
    int rc = rd_u32(r, "version", &ver);
    if (rc < 0) return rc;
    /* A big-endian writer stores the small version number byte-swapped; the magic is
     * written as bytes and looks the same either way. */
    uint32_t swapped = (ver >> 24) | ((ver >> 8) & 0xff00) | ((ver << 8) & 0xff0000) | (ver << 24);
    if ((ver & 0xffff) == 0 && swapped >= 1 && swapped <= 3) {
        return fail(r, CTN_ENOTSUP, 4,
                    "big-endian GGUF is not supported (version field 0x%08" PRIx32 ")", ver);
    }
    if (ver == 0) return fail(r, CTN_EFORMAT, 4, "invalid version 0");
    if (ver == 1) {
        return fail(r, CTN_ENOTSUP, 4,
                    "unsupported version 1 (GGUF v1 used 32-bit counts; only versions 2 "
                    "and 3 are supported)");
    }
    if (ver > 3) {
        return fail(r, CTN_ENOTSUP, 4,
                    "unsupported version %" PRIu32 " (only versions 2 and 3 are supported)", ver);
    }
    g->version = ver;

    uint64_t nt, nkv;
    if ((rc = rd_u64(r, "n_tensors", &nt)) < 0) return rc;
    if ((rc = rd_u64(r, "n_kv", &nkv)) < 0) return rc;
    /* Smallest encodings: a tensor info is name length + n_dims + type + offset (24 bytes),
     * a key/value pair is key length + type + a 1-byte value (13 bytes). */
    uint64_t left = r->size - r->pos;
    if (nt > left / 24) {
        return fail(r, CTN_EFORMAT, 8,
                    "n_tensors %" PRIu64 " cannot fit in the %" PRIu64
                    " bytes left (each tensor info takes at least 24)",
                    nt, left);
    }
    if (nkv > left / 13) {
        return fail(r, CTN_EFORMAT, 16,
                    "n_kv %" PRIu64 " cannot fit in the %" PRIu64
                    " bytes left (each key/value pair takes at least 13)",
                    nkv, left);
    }
    g->n_tensors = (int64_t)nt;
    g->n_kv = (int64_t)nkv;
    return 0;
}

static int parse_kvs(reader *r) {
    ctn_gguf *g = r->g;
    int rc;
    g->kv = arena_array(&g->arena, (uint64_t)g->n_kv, sizeof *g->kv);
    g->kv_sorted = arena_array(&g->arena, (uint64_t)g->n_kv, sizeof *g->kv_sorted);
    if (g->kv == NULL || g->kv_sorted == NULL) return fail_nomem(r, 16, "the key/value table");
    for (int64_t i = 0; i < g->n_kv; i++) {
        kv_entry *e = &g->kv[i];
        e->offset = r->pos;
        snprintf(r->field, sizeof r->field, "key #%" PRId64, i);
        if ((rc = rd_str(r, "key", &e->key)) < 0) return rc;
        if (e->key.len == 0) return fail(r, CTN_EFORMAT, e->offset, "empty key");
        set_field(r, "key", e->key);
        uint64_t type_at = r->pos;
        uint32_t type;
        if ((rc = rd_u32(r, "value type", &type)) < 0) return rc;
        if ((rc = parse_value(r, &e->val, type, type_at)) < 0) return rc;
        g->kv_sorted[i] = e;
    }
    if (g->n_kv > 1) qsort(g->kv_sorted, (size_t)g->n_kv, sizeof *g->kv_sorted, cmp_kv);
    for (int64_t i = 1; i < g->n_kv; i++) {
        const kv_entry *a = g->kv_sorted[i - 1], *b = g->kv_sorted[i];
        if (cmp_str(a->key.ptr, a->key.len, b->key.ptr, b->key.len) == 0) {
            set_field(r, "key", b->key);
            return fail(r, CTN_EFORMAT, b->offset,
                        "duplicate key (first defined at offset %" PRIu64 ")", a->offset);
        }
    }

    g->alignment = CTN_GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = ctn_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        const kv_entry *e = &g->kv[ai];
        snprintf(r->field, sizeof r->field, "key 'general.alignment'");
        if (e->val.type != CTN_GGUF_UINT32) {
            return fail(r, CTN_EFORMAT, e->offset, "alignment must be a uint32, not %s",
                        VALUE_TYPE_NAMES[e->val.type]);
        }
        uint64_t a = e->val.v.u64;
        if (a == 0 || (a & (a - 1)) != 0) {
            return fail(r, CTN_EFORMAT, e->offset,
                        "alignment %" PRIu64 " is not a nonzero power of two", a);
        }
        g->alignment = a;
    }
    return 0;
}

/* Reads one tensor info and checks its shape and type (its data is checked later). */
static int parse_tensor_info(reader *r, tensor_entry *e, int64_t i) {
    int rc;
    ctn_gguf_tensor *t = &e->t;
    e->info_offset = r->pos;
    snprintf(r->field, sizeof r->field, "tensor #%" PRId64, i);
    if ((rc = rd_str(r, "tensor name", &t->name)) < 0) return rc;
    set_field(r, "tensor", t->name);

    uint64_t at = r->pos;
    if ((rc = rd_u32(r, "n_dims", &t->n_dims)) < 0) return rc;
    /* llama.cpp accepts 0 dimensions (a one-element tensor), so we do too. */
    if (t->n_dims > CTN_GGUF_MAX_DIMS) {
        return fail(r, CTN_EFORMAT, at, "n_dims %" PRIu32 " is more than %d", t->n_dims,
                    CTN_GGUF_MAX_DIMS);
    }
    uint64_t nel = 1;
    for (uint32_t d = 0; d < CTN_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) continue;
        at = r->pos;
        uint64_t raw;
        if ((rc = rd_u64(r, "dimension", &raw)) < 0) return rc;
        if (raw > (uint64_t)INT64_MAX) {
            return fail(r, CTN_EFORMAT, at, "dimension %" PRIu32 " is negative (%" PRId64 ")", d,
                        sext(raw, 8));
        }
        t->ne[d] = (int64_t)raw;
    }
    /* The product of the nonzero dimensions must fit in int64, so that every partial
     * product does too, whatever order a caller multiplies them in. */
    bool zero = false;
    for (uint32_t d = 0; d < CTN_GGUF_MAX_DIMS; d++) {
        if (t->ne[d] == 0) {
            zero = true;
            continue;
        }
        if (!mul_u64(nel, (uint64_t)t->ne[d], &nel) || nel > (uint64_t)INT64_MAX) {
            return fail(r, CTN_EFORMAT, e->info_offset,
                        "shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                        "] has more than INT64_MAX elements",
                        t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
        }
    }
    if (zero) nel = 0;

    at = r->pos;
    uint32_t type;
    if ((rc = rd_u32(r, "tensor type", &type)) < 0) return rc;
    if (type >= CTN_TYPE_COUNT || ctn_type_block_size((int)type) == 0) {
        const char *old = removed_type_name(type);
        if (old != NULL) {
            return fail(r, CTN_ENOTSUP, at,
                        "tensor type %" PRIu32 " (%s) was removed from ggml and is not "
                        "supported",
                        type, old);
        }
        return fail(r, CTN_EFORMAT, at, "unknown tensor type %" PRIu32, type);
    }
    t->type = (ctn_type)type;
    const type_info tinfo = type_of(type), *ti = &tinfo;
    if (t->ne[0] % ti->block != 0) {
        return fail(r, CTN_EFORMAT, at,
                    "row of %" PRId64 " elements is not a multiple of the %s block size %u",
                    t->ne[0], ti->name, ti->block);
    }
    if (!mul_u64(nel / ti->block, ti->bytes, &t->nbytes)) {
        return fail(r, CTN_EFORMAT, at, "size in bytes of %" PRIu64 " %s elements overflows", nel,
                    ti->name);
    }
    if ((rc = rd_u64(r, "tensor data offset", &t->offset)) < 0) return rc;
    return 0;
}

static int parse_tensors(reader *r) {
    ctn_gguf *g = r->g;
    int rc;
    int64_t n = g->n_tensors;
    g->tensors = arena_array(&g->arena, (uint64_t)n, sizeof *g->tensors);
    g->tensors_sorted = arena_array(&g->arena, (uint64_t)n, sizeof *g->tensors_sorted);
    if (g->tensors == NULL || g->tensors_sorted == NULL) {
        snprintf(r->field, sizeof r->field, "header");
        return fail_nomem(r, 8, "the tensor table");
    }
    for (int64_t i = 0; i < n; i++) {
        if ((rc = parse_tensor_info(r, &g->tensors[i], i)) < 0) return rc;
        g->tensors_sorted[i] = &g->tensors[i];
    }
    if (n > 1) qsort(g->tensors_sorted, (size_t)n, sizeof *g->tensors_sorted, cmp_tensor);
    for (int64_t i = 1; i < n; i++) {
        const tensor_entry *a = g->tensors_sorted[i - 1], *b = g->tensors_sorted[i];
        if (cmp_str(a->t.name.ptr, a->t.name.len, b->t.name.ptr, b->t.name.len) == 0) {
            set_field(r, "tensor", b->t.name);
            return fail(r, CTN_EFORMAT, b->info_offset,
                        "duplicate tensor name (first defined at offset %" PRIu64 ")",
                        a->info_offset);
        }
    }

    /* The data section starts at the next multiple of the alignment after the infos. */
    uint64_t data_off;
    if (!pad_u64(r->pos, g->alignment, &data_off) || data_off > r->size) {
        if (n > 0) {
            snprintf(r->field, sizeof r->field, "header");
            return fail(r, CTN_EFORMAT, r->pos,
                        "data section (aligned to %" PRIu64 ") starts past end of file "
                        "(size %" PRIu64 ")",
                        g->alignment, r->size);
        }
        data_off = r->pos; /* no tensors: a file may end right after its metadata */
    }
    g->data_offset = data_off;
    uint64_t data_size = r->size - data_off;

    for (int64_t i = 0; i < n; i++) {
        tensor_entry *e = &g->tensors[i];
        ctn_gguf_tensor *t = &e->t;
        char q[400];
        if (t->offset % g->alignment != 0 || t->offset > data_size ||
            t->nbytes > data_size - t->offset) {
            quote(q, sizeof q, t->name.ptr, t->name.len);
        }
        if (t->offset % g->alignment != 0) {
            ctn__errf(r->err, r->errlen,
                      "%s: tensor '%s' (info at offset %" PRIu64 "): data offset %" PRIu64
                      " is not a multiple of the alignment %" PRIu64,
                      g->path, q, e->info_offset, t->offset, g->alignment);
            return CTN_EFORMAT;
        }
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            uint64_t b, end;
            bool ok = add_u64(data_off, t->offset, &b) && add_u64(b, t->nbytes, &end);
            if (ok) {
                ctn__errf(r->err, r->errlen,
                          "%s: tensor '%s' (info at offset %" PRIu64 "): data [%" PRIu64
                          ", %" PRIu64 ") extends past end of file (size %" PRIu64 ")",
                          g->path, q, e->info_offset, b, end, r->size);
            } else {
                ctn__errf(r->err, r->errlen,
                          "%s: tensor '%s' (info at offset %" PRIu64 "): data at offset %" PRIu64
                          " + %" PRIu64 " of %" PRIu64 " bytes extends past end of file "
                          "(size %" PRIu64 ")",
                          g->path, q, e->info_offset, data_off, t->offset, t->nbytes, r->size);
            }
            return CTN_EFORMAT;
        }
        t->data = r->base + data_off + t->offset;
    }

    /* Overlap check: sort the nonempty ranges by start; neighbours must not intersect. */
    if (n > 1) {
        range *rs = ctn__malloc((size_t)n * sizeof *rs);
        if (rs == NULL) {
            snprintf(r->field, sizeof r->field, "header");
            return fail_nomem(r, 8, "the tensor overlap check");
        }
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++) {
            const ctn_gguf_tensor *t = &g->tensors[i].t;
            if (t->nbytes == 0) continue;
            rs[m].begin = t->offset;
            rs[m].end = t->offset + t->nbytes;
            rs[m].idx = i;
            m++;
        }
        qsort(rs, (size_t)m, sizeof *rs, cmp_range);
        for (int64_t k = 1; k < m; k++) {
            if (rs[k].begin < rs[k - 1].end) {
                const tensor_entry *a = &g->tensors[rs[k - 1].idx], *b = &g->tensors[rs[k].idx];
                char qa[400], qb[400];
                quote(qa, sizeof qa, a->t.name.ptr, a->t.name.len);
                quote(qb, sizeof qb, b->t.name.ptr, b->t.name.len);
                ctn__errf(r->err, r->errlen,
                          "%s: tensor '%s' (info at offset %" PRIu64 "): data [%" PRIu64
                          ", %" PRIu64 ") overlaps tensor '%s' data [%" PRIu64 ", %" PRIu64 ")",
                          g->path, qb, b->info_offset, data_off + rs[k].begin, data_off + rs[k].end,
                          qa, data_off + rs[k - 1].begin, data_off + rs[k - 1].end);
                free(rs);
                return CTN_EFORMAT;
            }
        }
        free(rs);
    }
    return 0;
}

static int parse(ctn_gguf *g, char *err, size_t errlen) {
    reader r = {.g = g, .base = g->base, .size = g->size, .err = err, .errlen = errlen};
    int rc = parse_header(&r);
    if (rc == 0) rc = parse_kvs(&r);
    if (rc == 0) rc = parse_tensors(&r);
    return rc;
}

static ctn_gguf *gguf_new(const char *name) {
    ctn_gguf *g = ctn__malloc(sizeof *g);
    if (g == NULL) return NULL;
    memset(g, 0, sizeof *g);
    g->fd = -1;
    const char *n = name ? name : "<memory>";
    g->path = ctn__strndup(n, strlen(n));
    if (g->path == NULL) {
        free(g);
        return NULL;
    }
    return g;
}

int ctn_gguf_fd(const ctn_gguf *g) {
    return g->fd;
}

void ctn_gguf_free(ctn_gguf *g) {
    if (g == NULL) return;
    ctn__unmap_file(g->map, g->map_len);
    if (g->fd >= 0) close(g->fd);
    arena_free(g->arena);
    free(g->path);
    free(g);
}

int ctn_gguf_open_memory(ctn_gguf **out, const void *data, size_t size, const char *name, char *err,
                         size_t errlen) {
    if (out == NULL) return CTN_EINVAL;
    *out = NULL;
    if (data == NULL && size > 0) return CTN_EINVAL;
    ctn_gguf *g = gguf_new(name);
    if (g == NULL) {
        ctn__errf(err, errlen, "%s: out of memory", name ? name : "<memory>");
        return CTN_ENOMEM;
    }
    g->base = data;
    g->size = size;
    int rc = parse(g, err, errlen);
    if (rc < 0) {
        ctn_gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

/*
 * Maps the file read-only and parses it in place. A file truncated by another process while
 * mapped raises SIGBUS on access; that is the price of not copying weights.
 */
int ctn_gguf_open(ctn_gguf **out, const char *path, char *err, size_t errlen) {
    if (out == NULL || path == NULL) return CTN_EINVAL;
    *out = NULL;
    void *map;
    size_t len;
    int fd;
    int rc = ctn__map_file(path, &map, &len, &fd, err, errlen);
    if (rc < 0) return rc;
    ctn_gguf *g = gguf_new(path);
    if (g == NULL) {
        ctn__unmap_file(map, len);
        close(fd);
        ctn__errf(err, errlen, "%s: out of memory", path);
        return CTN_ENOMEM;
    }
    /* Kept open for ctn_gguf_fd (reads that should not map pages); closed by ctn_gguf_free. */
    g->fd = fd;
    g->map = map;
    g->map_len = len;
    static const uint8_t empty[1] = {0};
    g->base = map != NULL ? map : empty;
    g->size = len;
    rc = parse(g, err, errlen);
    if (rc < 0) {
        ctn_gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

/* ---- reader accessors -------------------------------------------------------------- */

const char *ctn_gguf_path(const ctn_gguf *g) {
    return g->path;
}
uint32_t ctn_gguf_version(const ctn_gguf *g) {
    return g->version;
}
uint64_t ctn_gguf_alignment(const ctn_gguf *g) {
    return g->alignment;
}
uint64_t ctn_gguf_data_offset(const ctn_gguf *g) {
    return g->data_offset;
}
uint64_t ctn_gguf_file_size(const ctn_gguf *g) {
    return g->size;
}
int64_t ctn_gguf_n_kv(const ctn_gguf *g) {
    return g->n_kv;
}
int64_t ctn_gguf_n_tensors(const ctn_gguf *g) {
    return g->n_tensors;
}

ctn_gguf_str ctn_gguf_key(const ctn_gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_kv) return (ctn_gguf_str){"", 0};
    return g->kv[i].key;
}

const ctn_gguf_value *ctn_gguf_value_at(const ctn_gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_kv) return NULL;
    return &g->kv[i].val;
}

uint64_t ctn_gguf_key_offset(const ctn_gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_kv) return 0;
    return g->kv[i].offset;
}

int64_t ctn_gguf_find_key(const ctn_gguf *g, const char *key) {
    if (key == NULL) return -1;
    size_t n = strlen(key);
    int64_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        const kv_entry *e = g->kv_sorted[mid];
        int c = cmp_str(e->key.ptr, e->key.len, key, n);
        if (c == 0) return e - g->kv;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

const ctn_gguf_value *ctn_gguf_get(const ctn_gguf *g, const char *key) {
    int64_t i = ctn_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i].val;
}

static bool is_int_type(ctn_gguf_type t) {
    return t == CTN_GGUF_UINT8 || t == CTN_GGUF_INT8 || t == CTN_GGUF_UINT16 ||
           t == CTN_GGUF_INT16 || t == CTN_GGUF_UINT32 || t == CTN_GGUF_INT32 ||
           t == CTN_GGUF_UINT64 || t == CTN_GGUF_INT64;
}

static bool is_unsigned_type(ctn_gguf_type t) {
    return t == CTN_GGUF_UINT8 || t == CTN_GGUF_UINT16 || t == CTN_GGUF_UINT32 ||
           t == CTN_GGUF_UINT64;
}

int ctn_gguf_get_int(const ctn_gguf *g, const char *key, int64_t *out) {
    const ctn_gguf_value *v = ctn_gguf_get(g, key);
    if (v == NULL) return CTN_ENOENT;
    if (v->type == CTN_GGUF_BOOL) {
        *out = v->v.b;
        return 0;
    }
    if (!is_int_type(v->type)) return CTN_ETYPE;
    if (is_unsigned_type(v->type)) {
        if (v->v.u64 > (uint64_t)INT64_MAX) return CTN_ERANGE;
        *out = (int64_t)v->v.u64;
    } else {
        *out = v->v.i64;
    }
    return 0;
}

int ctn_gguf_get_float(const ctn_gguf *g, const char *key, double *out) {
    const ctn_gguf_value *v = ctn_gguf_get(g, key);
    if (v == NULL) return CTN_ENOENT;
    if (v->type == CTN_GGUF_FLOAT32 || v->type == CTN_GGUF_FLOAT64)
        *out = v->v.f64;
    else if (is_unsigned_type(v->type))
        *out = (double)v->v.u64;
    else if (is_int_type(v->type))
        *out = (double)v->v.i64;
    else
        return CTN_ETYPE;
    return 0;
}

int ctn_gguf_get_bool(const ctn_gguf *g, const char *key, bool *out) {
    const ctn_gguf_value *v = ctn_gguf_get(g, key);
    if (v == NULL) return CTN_ENOENT;
    if (v->type != CTN_GGUF_BOOL) return CTN_ETYPE;
    *out = v->v.b;
    return 0;
}

int ctn_gguf_get_str(const ctn_gguf *g, const char *key, const char **ptr, size_t *len) {
    const ctn_gguf_value *v = ctn_gguf_get(g, key);
    if (v == NULL) return CTN_ENOENT;
    if (v->type != CTN_GGUF_STRING) return CTN_ETYPE;
    *ptr = v->v.str.ptr;
    *len = (size_t)v->v.str.len; /* fits: the string lies inside the mapping */
    return 0;
}

int ctn_gguf_get_arr(const ctn_gguf *g, const char *key, const ctn_gguf_value **out) {
    const ctn_gguf_value *v = ctn_gguf_get(g, key);
    if (v == NULL) return CTN_ENOENT;
    if (v->type != CTN_GGUF_ARRAY) return CTN_ETYPE;
    *out = v;
    return 0;
}

/* Decodes element i of a packed number array, or returns false. */
static bool arr_elem(const ctn_gguf_value *arr, uint64_t i, ctn_gguf_value *out) {
    if (arr == NULL || arr->type != CTN_GGUF_ARRAY || i >= arr->v.arr.n) return false;
    ctn_gguf_type et = arr->v.arr.type;
    if (et >= CTN_GGUF_TYPE_COUNT || VALUE_SIZE[et] == 0) return false;
    decode_scalar(out, et, (const uint8_t *)arr->v.arr.data + i * VALUE_SIZE[et]);
    return true;
}

int64_t ctn_gguf_arr_int(const ctn_gguf_value *arr, uint64_t i) {
    ctn_gguf_value e;
    if (!arr_elem(arr, i, &e)) return 0;
    if (e.type == CTN_GGUF_BOOL) return e.v.b;
    if (is_unsigned_type(e.type)) {
        return e.v.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)e.v.u64;
    }
    if (is_int_type(e.type)) return e.v.i64;
    return 0;
}

double ctn_gguf_arr_float(const ctn_gguf_value *arr, uint64_t i) {
    ctn_gguf_value e;
    if (!arr_elem(arr, i, &e)) return 0;
    if (e.type == CTN_GGUF_FLOAT32 || e.type == CTN_GGUF_FLOAT64) return e.v.f64;
    if (is_unsigned_type(e.type)) return (double)e.v.u64;
    if (is_int_type(e.type)) return (double)e.v.i64;
    return 0;
}

ctn_gguf_str ctn_gguf_arr_str(const ctn_gguf_value *arr, uint64_t i) {
    if (arr == NULL || arr->type != CTN_GGUF_ARRAY || arr->v.arr.type != CTN_GGUF_STRING ||
        i >= arr->v.arr.n) {
        return (ctn_gguf_str){"", 0};
    }
    return ((const ctn_gguf_str *)arr->v.arr.data)[i];
}

const ctn_gguf_tensor *ctn_gguf_tensor_at(const ctn_gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_tensors) return NULL;
    return &g->tensors[i].t;
}

uint64_t ctn_gguf_tensor_info_offset(const ctn_gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_tensors) return 0;
    return g->tensors[i].info_offset;
}

const ctn_gguf_tensor *ctn_gguf_find_tensor(const ctn_gguf *g, const char *name) {
    if (name == NULL) return NULL;
    size_t n = strlen(name);
    int64_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        const tensor_entry *e = g->tensors_sorted[mid];
        int c = cmp_str(e->t.name.ptr, e->t.name.len, name, n);
        if (c == 0) return &e->t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int64_t ctn_gguf_tensor_nelements(const ctn_gguf_tensor *t) {
    /* The reader checked that the nonzero dimensions multiply within int64. */
    int64_t n = 1;
    for (int d = 0; d < CTN_GGUF_MAX_DIMS; d++) {
        if (t->ne[d] == 0) return 0;
    }
    for (int d = 0; d < CTN_GGUF_MAX_DIMS; d++)
        n *= t->ne[d];
    return n;
}

/* ---- writer ------------------------------------------------------------------------ */

/* A growable byte buffer; `failed` makes a run of appends report one ENOMEM at the end. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
    bool failed;
} buf;

static void buf_put(buf *b, const void *src, size_t n) {
    if (b->failed || n == 0) return;
    if (n > SIZE_MAX - b->n) {
        b->failed = true;
        return;
    }
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2) {
                cap = b->n + n;
                break;
            }
            cap *= 2;
        }
        uint8_t *np = ctn__realloc(b->p, cap);
        if (np == NULL) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void buf_u32(buf *b, uint32_t v) {
    uint8_t t[4];
    put_le(t, v, 4);
    buf_put(b, t, 4);
}

static void buf_u64(buf *b, uint64_t v) {
    uint8_t t[8];
    put_le(t, v, 8);
    buf_put(b, t, 8);
}

static void buf_str(buf *b, const char *s, uint64_t n) {
    buf_u64(b, n);
    if (n > SIZE_MAX)
        b->failed = true;
    else
        buf_put(b, s, (size_t)n);
}

typedef struct {
    char *key; /* NUL-terminated copy */
    size_t keylen;
    uint8_t *blob; /* value type + encoded value, ready to write */
    size_t bloblen;
} wkv;

typedef struct {
    char *name;
    size_t namelen;
    ctn_type type;
    uint32_t n_dims;
    int64_t ne[CTN_GGUF_MAX_DIMS];
    const void *data; /* borrowed; NULL writes zeros */
    uint64_t nbytes;
    uint64_t offset; /* assigned on write */
} wtensor;

struct ctn_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    char err[256];
};

ctn_gguf_writer *ctn_gguf_writer_new(void) {
    ctn_gguf_writer *w = ctn__malloc(sizeof *w);
    if (w == NULL) return NULL;
    memset(w, 0, sizeof *w);
    return w;
}

void ctn_gguf_writer_free(ctn_gguf_writer *w) {
    if (w == NULL) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].blob);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

const char *ctn_gguf_writer_errmsg(const ctn_gguf_writer *w) {
    return w ? w->err : "";
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int
werr(ctn_gguf_writer *w, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    return code;
}

/* Stores an encoded value under key, taking ownership of the blob in every case. */
static int put_kv(ctn_gguf_writer *w, const char *key, buf *b) {
    if (b->failed) {
        free(b->p);
        return werr(w, CTN_ENOMEM, "key '%s': out of memory", key);
    }
    size_t klen = strlen(key);
    for (size_t i = 0; i < w->n_kv; i++) {
        if (w->kv[i].keylen == klen && memcmp(w->kv[i].key, key, klen) == 0) {
            free(w->kv[i].blob);
            w->kv[i].blob = b->p;
            w->kv[i].bloblen = b->n;
            return 0;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *nk = ctn__realloc(w->kv, cap * sizeof *nk);
        if (nk == NULL) {
            free(b->p);
            return werr(w, CTN_ENOMEM, "key '%s': out of memory", key);
        }
        w->kv = nk;
        w->cap_kv = cap;
    }
    char *k = ctn__strndup(key, klen);
    if (k == NULL) {
        free(b->p);
        return werr(w, CTN_ENOMEM, "key '%s': out of memory", key);
    }
    w->kv[w->n_kv++] = (wkv){k, klen, b->p, b->n};
    return 0;
}

static int check_key(ctn_gguf_writer *w, const char *key) {
    if (w == NULL) return CTN_EINVAL;
    if (key == NULL || key[0] == '\0') return werr(w, CTN_EINVAL, "empty key");
    return 0;
}

/* Encodes a fixed-size scalar (held in a uint64 bit pattern) and stores it. */
static int set_scalar(ctn_gguf_writer *w, const char *key, ctn_gguf_type type, uint64_t bits) {
    int rc = check_key(w, key);
    if (rc < 0) return rc;
    buf b = {0};
    uint8_t t[8];
    buf_u32(&b, type);
    put_le(t, bits, VALUE_SIZE[type]);
    buf_put(&b, t, VALUE_SIZE[type]);
    return put_kv(w, key, &b);
}

int ctn_gguf_writer_set_u8(ctn_gguf_writer *w, const char *key, uint8_t v) {
    return set_scalar(w, key, CTN_GGUF_UINT8, v);
}
int ctn_gguf_writer_set_i8(ctn_gguf_writer *w, const char *key, int8_t v) {
    return set_scalar(w, key, CTN_GGUF_INT8, (uint64_t)(int64_t)v);
}
int ctn_gguf_writer_set_u16(ctn_gguf_writer *w, const char *key, uint16_t v) {
    return set_scalar(w, key, CTN_GGUF_UINT16, v);
}
int ctn_gguf_writer_set_i16(ctn_gguf_writer *w, const char *key, int16_t v) {
    return set_scalar(w, key, CTN_GGUF_INT16, (uint64_t)(int64_t)v);
}
int ctn_gguf_writer_set_u32(ctn_gguf_writer *w, const char *key, uint32_t v) {
    return set_scalar(w, key, CTN_GGUF_UINT32, v);
}
int ctn_gguf_writer_set_i32(ctn_gguf_writer *w, const char *key, int32_t v) {
    return set_scalar(w, key, CTN_GGUF_INT32, (uint64_t)(int64_t)v);
}
int ctn_gguf_writer_set_u64(ctn_gguf_writer *w, const char *key, uint64_t v) {
    return set_scalar(w, key, CTN_GGUF_UINT64, v);
}
int ctn_gguf_writer_set_i64(ctn_gguf_writer *w, const char *key, int64_t v) {
    return set_scalar(w, key, CTN_GGUF_INT64, (uint64_t)v);
}
int ctn_gguf_writer_set_f32(ctn_gguf_writer *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return set_scalar(w, key, CTN_GGUF_FLOAT32, bits);
}
int ctn_gguf_writer_set_f64(ctn_gguf_writer *w, const char *key, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    return set_scalar(w, key, CTN_GGUF_FLOAT64, bits);
}
int ctn_gguf_writer_set_bool(ctn_gguf_writer *w, const char *key, bool v) {
    return set_scalar(w, key, CTN_GGUF_BOOL, v ? 1 : 0);
}

int ctn_gguf_writer_set_strn(ctn_gguf_writer *w, const char *key, const char *v, size_t n) {
    int rc = check_key(w, key);
    if (rc < 0) return rc;
    if (v == NULL && n > 0) return werr(w, CTN_EINVAL, "key '%s': NULL string", key);
    buf b = {0};
    buf_u32(&b, CTN_GGUF_STRING);
    buf_str(&b, v, n);
    return put_kv(w, key, &b);
}

int ctn_gguf_writer_set_str(ctn_gguf_writer *w, const char *key, const char *v) {
    int rc = check_key(w, key);
    if (rc < 0) return rc;
    if (v == NULL) return werr(w, CTN_EINVAL, "key '%s': NULL string", key);
    return ctn_gguf_writer_set_strn(w, key, v, strlen(v));
}

/* Appends n packed elements of esz bytes; `le` says whether src is already little-endian. */
static void buf_elems(buf *b, const void *src, uint64_t n, unsigned esz, bool le) {
    uint64_t bytes;
    if (!mul_u64(n, esz, &bytes) || bytes > SIZE_MAX) {
        b->failed = true;
        return;
    }
    if (le || esz == 1 || host_is_le()) {
        buf_put(b, src, (size_t)bytes);
        return;
    }
    const uint8_t *s = src;
    for (uint64_t i = 0; i < n; i++) {
        uint8_t t[8];
        for (unsigned k = 0; k < esz; k++)
            t[k] = s[i * esz + esz - 1 - k];
        buf_put(b, t, esz);
    }
}

int ctn_gguf_writer_set_arr(ctn_gguf_writer *w, const char *key, ctn_gguf_type type,
                            const void *data, uint64_t n) {
    int rc = check_key(w, key);
    if (rc < 0) return rc;
    if ((unsigned)type >= CTN_GGUF_TYPE_COUNT || VALUE_SIZE[type] == 0) {
        return werr(w, CTN_EINVAL, "key '%s': set_arr takes a number or bool type, not %d", key,
                    (int)type);
    }
    if (data == NULL && n > 0) return werr(w, CTN_EINVAL, "key '%s': NULL array data", key);
    buf b = {0};
    buf_u32(&b, CTN_GGUF_ARRAY);
    buf_u32(&b, type);
    buf_u64(&b, n);
    if (type == CTN_GGUF_BOOL) {
        /* Host bools may be wider than a byte; the file wants 0/1 bytes. */
        const bool *bv = data;
        for (uint64_t i = 0; i < n && !b.failed; i++) {
            uint8_t c = bv[i] ? 1 : 0;
            buf_put(&b, &c, 1);
        }
    } else {
        buf_elems(&b, data, n, VALUE_SIZE[type], false);
    }
    return put_kv(w, key, &b);
}

int ctn_gguf_writer_set_arr_str(ctn_gguf_writer *w, const char *key, const char *const *v,
                                uint64_t n) {
    int rc = check_key(w, key);
    if (rc < 0) return rc;
    if (v == NULL && n > 0) return werr(w, CTN_EINVAL, "key '%s': NULL array", key);
    for (uint64_t i = 0; i < n; i++) {
        if (v[i] == NULL) {
            return werr(w, CTN_EINVAL, "key '%s': element %" PRIu64 " is NULL", key, i);
        }
    }
    buf b = {0};
    buf_u32(&b, CTN_GGUF_ARRAY);
    buf_u32(&b, CTN_GGUF_STRING);
    buf_u64(&b, n);
    for (uint64_t i = 0; i < n && !b.failed; i++)
        buf_str(&b, v[i], strlen(v[i]));
    return put_kv(w, key, &b);
}

/*
 * Encodes an array body (element type, count, elements) from a reader-style value. Values
 * may be built by hand, so types and depth are checked rather than trusted.
 */
static int encode_array(buf *b, const ctn_gguf_value *v, int depth) {
    ctn_gguf_type et = v->v.arr.type;
    uint64_t n = v->v.arr.n;
    if ((unsigned)et >= CTN_GGUF_TYPE_COUNT) return CTN_EINVAL;
    if (et == CTN_GGUF_ARRAY && depth >= CTN_GGUF_MAX_DEPTH) return CTN_ERANGE;
    if (n > 0 && v->v.arr.data == NULL) return CTN_EINVAL;
    buf_u32(b, et);
    buf_u64(b, n);
    if (et == CTN_GGUF_STRING) {
        const ctn_gguf_str *s = v->v.arr.data;
        for (uint64_t i = 0; i < n && !b->failed; i++) {
            if (s[i].ptr == NULL && s[i].len > 0) return CTN_EINVAL;
            buf_str(b, s[i].ptr, s[i].len);
        }
    } else if (et == CTN_GGUF_ARRAY) {
        const ctn_gguf_value *a = v->v.arr.data;
        for (uint64_t i = 0; i < n && !b->failed; i++) {
            if (a[i].type != CTN_GGUF_ARRAY) return CTN_EINVAL;
            int rc = encode_array(b, &a[i], depth + 1);
            if (rc < 0) return rc;
        }
    } else {
        /* Reader arrays point at little-endian file bytes: copy them as they are. */
        buf_elems(b, v->v.arr.data, n, VALUE_SIZE[et], true);
    }
    return b->failed ? CTN_ENOMEM : 0;
}

int ctn_gguf_writer_set_value(ctn_gguf_writer *w, const char *key, const ctn_gguf_value *v) {
    int rc = check_key(w, key);
    if (rc < 0) return rc;
    if (v == NULL || (unsigned)v->type >= CTN_GGUF_TYPE_COUNT) {
        return werr(w, CTN_EINVAL, "key '%s': invalid value", key);
    }
    uint64_t bits = 0;
    switch (v->type) {
    case CTN_GGUF_STRING:
        if (v->v.str.ptr == NULL && v->v.str.len > 0) {
            return werr(w, CTN_EINVAL, "key '%s': NULL string", key);
        }
        if (v->v.str.len > SIZE_MAX) return werr(w, CTN_EINVAL, "key '%s': string too long", key);
        return ctn_gguf_writer_set_strn(w, key, v->v.str.ptr, (size_t)v->v.str.len);
    case CTN_GGUF_ARRAY: {
        buf b = {0};
        buf_u32(&b, CTN_GGUF_ARRAY);
        rc = encode_array(&b, v, 1);
        if (rc < 0 && rc != CTN_ENOMEM) {
            free(b.p);
            return werr(w, rc,
                        "key '%s': invalid array value (bad type, NULL data or nested "
                        "deeper than %d)",
                        key, CTN_GGUF_MAX_DEPTH);
        }
        return put_kv(w, key, &b);
    }
    case CTN_GGUF_FLOAT32: {
        float f = (float)v->v.f64;
        uint32_t fb;
        memcpy(&fb, &f, 4);
        bits = fb;
        break;
    }
    case CTN_GGUF_FLOAT64: memcpy(&bits, &v->v.f64, 8); break;
    case CTN_GGUF_BOOL: bits = v->v.b ? 1 : 0; break;
    case CTN_GGUF_INT8:
    case CTN_GGUF_INT16:
    case CTN_GGUF_INT32:
    case CTN_GGUF_INT64: bits = (uint64_t)v->v.i64; break;
    default: bits = v->v.u64; break;
    }
    return set_scalar(w, key, v->type, bits);
}

int ctn_gguf_writer_set_alignment(ctn_gguf_writer *w, uint32_t alignment) {
    if (w == NULL) return CTN_EINVAL;
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        return werr(w, CTN_EINVAL, "alignment %" PRIu32 " is not a power of two", alignment);
    }
    /* The key is the single source of truth: the reader takes the alignment from it. */
    return ctn_gguf_writer_set_u32(w, "general.alignment", alignment);
}

int ctn_gguf_writer_add_tensor(ctn_gguf_writer *w, const char *name, ctn_type type, uint32_t n_dims,
                               const int64_t *ne, const void *data) {
    if (w == NULL) return CTN_EINVAL;
    if (name == NULL || name[0] == '\0') return werr(w, CTN_EINVAL, "empty tensor name");
    size_t nlen = strlen(name);
    for (size_t i = 0; i < w->n_t; i++) {
        if (w->t[i].namelen == nlen && memcmp(w->t[i].name, name, nlen) == 0) {
            return werr(w, CTN_EINVAL, "tensor '%s' already added", name);
        }
    }
    if ((unsigned)type >= CTN_TYPE_COUNT || ctn_type_block_size((int)type) == 0) {
        return werr(w, CTN_EINVAL, "tensor '%s': unknown type %d", name, (int)type);
    }
    if (n_dims == 0 || n_dims > CTN_GGUF_MAX_DIMS || ne == NULL) {
        return werr(w, CTN_EINVAL, "tensor '%s': n_dims %" PRIu32 " not in 1..%d", name, n_dims,
                    CTN_GGUF_MAX_DIMS);
    }
    wtensor t = {.type = type, .n_dims = n_dims, .data = data};
    uint64_t nel = 1;
    for (uint32_t d = 0; d < CTN_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0) {
            return werr(w, CTN_EINVAL, "tensor '%s': dimension %" PRIu32 " is negative", name, d);
        }
        if (!mul_u64(nel, (uint64_t)t.ne[d], &nel) || nel > (uint64_t)INT64_MAX) {
            return werr(w, CTN_EINVAL, "tensor '%s': too many elements", name);
        }
    }
    const type_info tinfo = type_of(type), *ti = &tinfo;
    if (t.ne[0] % ti->block != 0) {
        return werr(w, CTN_EINVAL,
                    "tensor '%s': row of %" PRId64 " is not a multiple of the %s "
                    "block size %u",
                    name, t.ne[0], ti->name, ti->block);
    }
    if (!mul_u64(nel / ti->block, ti->bytes, &t.nbytes)) {
        return werr(w, CTN_EINVAL, "tensor '%s': size in bytes overflows", name);
    }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *nt = ctn__realloc(w->t, cap * sizeof *nt);
        if (nt == NULL) return werr(w, CTN_ENOMEM, "tensor '%s': out of memory", name);
        w->t = nt;
        w->cap_t = cap;
    }
    t.name = ctn__strndup(name, nlen);
    if (t.name == NULL) return werr(w, CTN_ENOMEM, "tensor '%s': out of memory", name);
    t.namelen = nlen;
    w->t[w->n_t++] = t;
    return 0;
}

/* The alignment the file will declare, from the general.alignment key if set. */
static int writer_alignment(ctn_gguf_writer *w, uint64_t *out) {
    *out = CTN_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        const wkv *k = &w->kv[i];
        uint64_t a = k->bloblen == 8 ? get_le(k->blob + 4, 4) : 0;
        if (get_le(k->blob, 4) != CTN_GGUF_UINT32 || a == 0 || (a & (a - 1)) != 0) {
            return werr(w, CTN_EINVAL, "general.alignment must be a uint32 power of two");
        }
        *out = a;
    }
    return 0;
}

/* Builds the header and metadata (everything before the data section, padding included). */
static int writer_meta(ctn_gguf_writer *w, buf *b, uint64_t *data_size) {
    uint64_t align;
    int rc = writer_alignment(w, &align);
    if (rc < 0) return rc;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        if (!pad_u64(w->t[i].nbytes, align, &off) || !add_u64(w->t[i].offset, off, &off)) {
            return werr(w, CTN_ERANGE, "tensor data larger than 2^64 bytes");
        }
    }
    *data_size = off;
    buf_put(b, CTN_GGUF_MAGIC, 4);
    buf_u32(b, 3);
    buf_u64(b, w->n_t);
    buf_u64(b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        buf_str(b, w->kv[i].key, w->kv[i].keylen);
        buf_put(b, w->kv[i].blob, w->kv[i].bloblen);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        buf_str(b, t->name, t->namelen);
        buf_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            buf_u64(b, (uint64_t)t->ne[d]);
        buf_u32(b, (uint32_t)t->type);
        buf_u64(b, t->offset);
    }
    static const uint8_t zeros[256];
    uint64_t padded = b->n;
    if (!pad_u64(b->n, align, &padded)) b->failed = true;
    for (uint64_t left = padded - b->n; left > 0 && !b->failed;) {
        size_t k = left < sizeof zeros ? (size_t)left : sizeof zeros;
        buf_put(b, zeros, k);
        left -= k;
    }
    if (b->failed) return werr(w, CTN_ENOMEM, "out of memory building the metadata");
    return 0;
}

/* Tensor data and padding go through this, to memory or to a FILE. */
typedef struct {
    uint8_t *mem;
    size_t pos;
    FILE *f;
} sink;

static bool sink_put(sink *s, const void *p, size_t n, size_t zero_n) {
    static const uint8_t zeros[4096];
    if (s->f != NULL) {
        if (p != NULL && fwrite(p, 1, n, s->f) != n) return false;
        while (zero_n > 0) {
            size_t k = zero_n < sizeof zeros ? zero_n : sizeof zeros;
            if (fwrite(zeros, 1, k, s->f) != k) return false;
            zero_n -= k;
        }
        return true;
    }
    if (p != NULL) memcpy(s->mem + s->pos, p, n);
    s->pos += n;
    memset(s->mem + s->pos, 0, zero_n);
    s->pos += zero_n;
    return true;
}

static bool writer_data(const ctn_gguf_writer *w, sink *s, uint64_t data_size) {
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t end = i + 1 < w->n_t ? w->t[i + 1].offset : data_size;
        size_t pad = (size_t)(end - t->offset - t->nbytes);
        bool ok = t->data != NULL ? sink_put(s, t->data, (size_t)t->nbytes, pad)
                                  : sink_put(s, NULL, 0, (size_t)t->nbytes + pad);
        if (!ok) return false;
    }
    return true;
}

int ctn_gguf_writer_write_memory(ctn_gguf_writer *w, void **out, size_t *size) {
    if (w == NULL || out == NULL || size == NULL) return CTN_EINVAL;
    *out = NULL;
    *size = 0;
    buf b = {0};
    uint64_t data_size;
    int rc = writer_meta(w, &b, &data_size);
    if (rc < 0) {
        free(b.p);
        return rc;
    }
    uint64_t total;
    if (!add_u64(b.n, data_size, &total) || total > SIZE_MAX) {
        free(b.p);
        return werr(w, CTN_ERANGE, "file of more than SIZE_MAX bytes");
    }
    uint8_t *mem = ctn__malloc((size_t)total);
    if (mem == NULL) {
        free(b.p);
        return werr(w, CTN_ENOMEM, "out of memory for a %" PRIu64 "-byte file", total);
    }
    memcpy(mem, b.p, b.n);
    sink s = {.mem = mem, .pos = b.n};
    free(b.p);
    writer_data(w, &s, data_size);
    *out = mem;
    *size = (size_t)total;
    return 0;
}

int ctn_gguf_writer_write(ctn_gguf_writer *w, const char *path, char *err, size_t errlen) {
    if (w == NULL || path == NULL) return CTN_EINVAL;
    buf b = {0};
    uint64_t data_size;
    int rc = writer_meta(w, &b, &data_size);
    if (rc < 0) {
        free(b.p);
        ctn__errf(err, errlen, "%s: %s", path, w->err);
        return rc;
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        free(b.p);
        ctn__errf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return CTN_EIO;
    }
    sink s = {.f = f};
    bool ok = sink_put(&s, b.p, b.n, 0) && writer_data(w, &s, data_size);
    free(b.p);
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        ctn__errf(err, errlen, "%s: write failed: %s", path, strerror(e));
        remove(path); /* a half-written model would only fail later, further from the cause */
        return CTN_EIO;
    }
    return 0;
}
