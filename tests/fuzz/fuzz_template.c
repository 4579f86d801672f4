/*
 * libFuzzer target for prompt templates (stdlib/template.h). The input is the template
 * source. A plain reference renderer written here, straight from the grammar, must agree
 * with the library: both reject the source or both accept it, and then both give the same
 * text for a fixed variables object (or both report the same missing variable). The
 * single-input rule is checked with a string when the template has one variable.
 *
 *   cmake --build build --target fuzz_template && build/fuzz_template tests/fuzz/corpus_template
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "template.h"
#include "value.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_template: %s failed at line %d\n", #cond, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The value of a name in the fixed variables, or NULL. */
static const char *lookup(const char *name, size_t n) {
    static const char *const kv[][2] = {{"a", "1"},  {"b", "{b}"}, {"q", "why?"},
                                        {"x.y", ""}, {"_", "}}"},  {"long-name", "L"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (strlen(kv[i][0]) == n && memcmp(kv[i][0], name, n) == 0) return kv[i][1];
    return NULL;
}

/* Renders s by the grammar: returns 0 and fills out, 1 for a bad template, 2 for a missing
 * variable. one: when not NULL, every variable's value (the single-input rule). */
static int reference(const uint8_t *s, size_t n, const char *one, char *out, size_t *len,
                     int *nvars) {
    size_t o = 0;
    *nvars = 0;
    int missing = 0;
    size_t at[2048], ln[2048]; /* distinct names as ranges of s (a name takes 3+ bytes) */
    int nn = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '}') {
            if (i + 1 < n && s[i + 1] == '}') {
                out[o++] = '}';
                i++;
                continue;
            }
            return 1;
        }
        if (s[i] != '{') {
            out[o++] = (char)s[i];
            continue;
        }
        if (i + 1 < n && s[i + 1] == '{') {
            out[o++] = '{';
            i++;
            continue;
        }
        size_t a = i + 1, b = a;
        while (b < n && s[b] != '}')
            b++;
        if (b == n || b == a) return 1;
        for (size_t k = a; k < b; k++) {
            uint8_t c = s[k];
            int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
            int more = alpha || (c >= '0' && c <= '9') || c == '.' || c == '-';
            if (k == a ? !alpha : !more) return 1;
        }
        int seen = 0;
        for (int j = 0; j < nn; j++)
            if (ln[j] == b - a && memcmp(s + at[j], s + a, b - a) == 0) seen = 1;
        if (!seen) {
            at[nn] = a;
            ln[nn++] = b - a;
            ++*nvars;
        }
        const char *v = one != NULL ? one : lookup((const char *)s + a, b - a);
        if (v == NULL) {
            missing = 1;
        } else {
            memcpy(out + o, v, strlen(v));
            o += strlen(v);
        }
        i = b;
    }
    *len = o;
    return missing ? 2 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char err[256] = "";
    ctn_tmpl *t = ctn_tmpl_parse((const char *)data, size, err, sizeof err);
    char *ref = malloc(size * 4 + 1);
    CHECK(ref != NULL);
    size_t rlen = 0;
    int nv = 0;
    int r = reference(data, size, NULL, ref, &rlen, &nv);
    CHECK((t == NULL) == (r == 1));
    if (t == NULL) {
        CHECK(strstr(err, "at byte") != NULL);
        free(ref);
        return 0;
    }
    CHECK(ctn_tmpl_nvars(t) == (size_t)nv);

    ctn_val *vars = ctn_val_obj();
    CHECK(vars != NULL);
    const char *names[] = {"a", "b", "q", "x.y", "_", "long-name"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = lookup(names[i], strlen(names[i]));
        CHECK(ctn_val_set(vars, names[i], ctn_val_cstr(v)) == 0);
    }
    char *out = NULL;
    size_t len = 0;
    int rc = ctn_tmpl_render(t, vars, &out, &len, err, sizeof err);
    if (r == 2) {
        CHECK(rc == CTN_ENOENT && out == NULL && strncmp(err, "missing variable '", 18) == 0);
    } else {
        CHECK(rc == 0 && len == rlen && memcmp(out, ref, len) == 0 && out[len] == '\0');
    }
    free(out);
    ctn_val_unref(vars);

    /* The single-input rule. */
    ctn_val *s = ctn_val_cstr("<S>");
    rc = ctn_tmpl_render(t, s, &out, &len, err, sizeof err);
    if (ctn_tmpl_nvars(t) > 1) {
        CHECK(rc == CTN_ETYPE && out == NULL);
    } else {
        CHECK(reference(data, size, "<S>", ref, &rlen, &nv) == 0);
        CHECK(rc == 0 && len == rlen && memcmp(out, ref, len) == 0);
    }
    free(out);
    ctn_val_unref(s);
    free(ref);
    ctn_tmpl_free(t);
    return 0;
}
