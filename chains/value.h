/*
 * The values that flow between the nodes of a chain: JSON-shaped (null, booleans, 64-bit
 * integers, doubles, byte strings, arrays, objects with keys in insertion order) plus
 * documents (text + a metadata object).
 *
 *     ctn_val *o = ctn_val_obj();
 *     if (o == NULL || ctn_val_set(o, "question", ctn_val_str("What is RoPE?", 13)) < 0) ...
 *     char *json = ctn_val_to_json(o, 0);     // {"question":"What is RoPE?"}
 *     free(json);
 *     ctn_val_unref(o);
 *
 * Integers and doubles are distinct kinds, so a Lua integer comes back as the same integer
 * and 1.0 stays a float (conversions to and from Lua are exact). Strings are counted bytes:
 * they may hold NULs and need not be UTF-8 (the JSON writer escapes what JSON requires and
 * writes invalid UTF-8 as U+FFFD).
 *
 * Ownership: values are reference counted. A constructor returns a value with one reference
 * owned by the caller. Functions that take a value as "v" (push, set, the document
 * constructor) take over the caller's reference, even when they fail (then they release
 * it), so a caller can nest constructors without checking each one:
 *     ctn_val_push(arr, ctn_val_int(7));     // a NULL from ctn_val_int makes push fail
 * Getters return borrowed pointers, valid while the container lives. A value reachable from
 * more than one place must not be changed: build it, then share it (ctn_val_ref). Only one
 * thread touches a value at a time (the loop thread, in a running chain).
 */
#ifndef CTN_VALUE_H
#define CTN_VALUE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CTN_VNULL,
    CTN_VBOOL,
    CTN_VINT,
    CTN_VNUM,
    CTN_VSTR,
    CTN_VARR,
    CTN_VOBJ,
    CTN_VDOC,
} ctn_vkind;

typedef struct ctn_val ctn_val;

struct ctn_val {
    ctn_vkind kind;
    int refs;
    union {
        int b;      /* CTN_VBOOL: 0 or 1 */
        int64_t i;  /* CTN_VINT */
        double num; /* CTN_VNUM */
        struct {
            char *p; /* len bytes and a terminating NUL (not counted) */
            size_t len;
        } str;
        struct {
            ctn_val **items;
            size_t n, cap;
        } arr;
        struct {
            ctn_val **keys; /* CTN_VSTR values, in insertion order */
            ctn_val **vals;
            size_t n, cap;
        } obj;
        struct {
            ctn_val *text; /* CTN_VSTR */
            ctn_val *meta; /* CTN_VOBJ */
        } doc;
    } u;
};

/* Constructors: a new value with one reference, or NULL when memory runs out. */
ctn_val *ctn_val_null(void);
ctn_val *ctn_val_bool(int b);
ctn_val *ctn_val_int(int64_t i);
ctn_val *ctn_val_num(double d);
ctn_val *ctn_val_str(const char *s, size_t len); /* copies s */
ctn_val *ctn_val_cstr(const char *s);            /* copies the NUL-terminated s */
ctn_val *ctn_val_arr(void);
ctn_val *ctn_val_obj(void);
/* A document: its text (copied) and metadata (an object, taken over; NULL: an empty one). */
ctn_val *ctn_val_doc(const char *text, size_t len, ctn_val *meta);

ctn_val *ctn_val_ref(ctn_val *v); /* adds a reference; returns v (NULL stays NULL) */
void ctn_val_unref(ctn_val *v);   /* drops one; the last frees the value and its children */

/* Appends v to the array a (takes v). 0, CTN_ENOMEM, or CTN_EINVAL (v NULL, a not an
 * array). */
int ctn_val_push(ctn_val *a, ctn_val *v);
/* Sets key (klen bytes) of object o to v, replacing an earlier value in its place (takes
 * v). 0, CTN_ENOMEM or CTN_EINVAL. */
int ctn_val_setk(ctn_val *o, const char *key, size_t klen, ctn_val *v);
int ctn_val_set(ctn_val *o, const char *key, ctn_val *v); /* key NUL-terminated */

/* Element i of an array, or NULL when out of range or not an array (borrowed). */
ctn_val *ctn_val_at(const ctn_val *a, size_t i);
/* The value under key in an object (or a document's metadata), or NULL (borrowed). */
ctn_val *ctn_val_getk(const ctn_val *o, const char *key, size_t klen);
ctn_val *ctn_val_get(const ctn_val *o, const char *key);
/* Elements of an array, entries of an object, bytes of a string; 0 for other kinds. */
size_t ctn_val_len(const ctn_val *v);

/* A deep copy that may be changed freely; NULL when memory runs out. */
ctn_val *ctn_val_copy(const ctn_val *v);
/* Deep equality; integers and doubles are different kinds (1 != 1.0), as are documents and
 * objects. Object key order does not count. */
int ctn_val_equal(const ctn_val *a, const ctn_val *b);

/* The name of a kind ("null", "boolean", "integer", "number", "string", "array", "object",
 * "document"). */
const char *ctn_vkind_name(ctn_vkind k);

/* JSON text of v (malloc'd, NUL-terminated; the caller frees it), or NULL when memory runs
 * out. indent > 0 pretty-prints with that many spaces. Documents are written as
 * {"page_content": text, "metadata": {...}}; doubles with 17 significant digits (they read
 * back to the same double) and always with a '.' or exponent, so they stay doubles; NaN and
 * infinities as null (JSON has neither). */
char *ctn_val_to_json(const ctn_val *v, int indent);

/* The text a chain shows for a value where a string is wanted (a prompt variable, the
 * string parser): a string as it is, a document's text, anything else as compact JSON.
 * malloc'd; *len (when not NULL) gets its length; NULL when memory runs out. */
char *ctn_val_text(const ctn_val *v, size_t *len);

#endif
