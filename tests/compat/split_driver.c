/*
 * The catena side of the differential test against LangChain.js's text splitters
 * (split_langchain.sh): splits one text with each setting of a list and prints the chunks.
 *
 *   split_driver TEXT SETTINGS    SETTINGS: JSON Lines, one setting a line:
 *       {"size": 100, "overlap": 10, "keep": "start"|"end"|"none", "seps": [..] | null,
 *        "strip": true, "tokens": "words" | null}
 *     prints a line for each: {"chunks": [...], "starts": [code point offset | null, ...]}
 *   split_driver --time TEXT SIZE OVERLAP [REPEAT]
 *     prints the seconds ctn_split_text took (the best of REPEAT runs) and the chunk count.
 *
 * "tokens": "words" measures lengths in made-up tokens, a run of ASCII letters, digits and
 * '_' being one and every other code point one, as the JavaScript side's lengthFunction
 * does, so the token path is compared too.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "split.h"
#include "str.h"
#include "value.h"

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t k;
    while (b != NULL && (k = fread(b + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) {
            char *q = realloc(b, cap *= 2);
            if (q == NULL) free(b);
            b = q;
        }
    }
    fclose(f);
    *n = len;
    return b;
}

static int word_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* The made-up tokenizer described above. */
static int word_tokens(void *ud, const char *s, size_t n, size_t **ends, size_t *count, char *err,
                       size_t errcap) {
    (void)ud, (void)err, (void)errcap;
    size_t *e = malloc((n ? n : 1) * sizeof *e), c = 0;
    if (e == NULL) return CTN_ENOMEM;
    for (size_t i = 0; i < n;) {
        if (word_char((unsigned char)s[i])) {
            while (i < n && word_char((unsigned char)s[i]))
                i++;
        } else {
            i++;
            while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80)
                i++;
        }
        e[c++] = i;
    }
    *ends = e;
    *count = c;
    return 0;
}

static size_t cp_count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static int run_setting(const char *text, size_t len, const char *line) {
    int rc = 0;
    cJSON *j = ctn__json_parse(line, strlen(line), true, NULL, &rc);
    if (j == NULL) {
        fprintf(stderr, "bad setting line: %s\n", line);
        return 1;
    }
    ctn_split_opts o = ctn_split_defaults();
    o.chunk_size = (size_t)cJSON_GetObjectItem(j, "size")->valuedouble;
    o.chunk_overlap = (size_t)cJSON_GetObjectItem(j, "overlap")->valuedouble;
    const cJSON *keep = cJSON_GetObjectItem(j, "keep");
    if (cJSON_IsString(keep))
        o.keep_separator = strcmp(keep->valuestring, "end") == 0    ? CTN_KEEP_END
                           : strcmp(keep->valuestring, "none") == 0 ? CTN_KEEP_NONE
                                                                    : CTN_KEEP_START;
    const cJSON *strip = cJSON_GetObjectItem(j, "strip");
    if (cJSON_IsBool(strip)) o.strip_whitespace = cJSON_IsTrue(strip);
    const cJSON *toks = cJSON_GetObjectItem(j, "tokens");
    if (cJSON_IsString(toks)) o.tokens = word_tokens;
    const cJSON *seps = cJSON_GetObjectItem(j, "seps");
    const char *sv[64];
    if (cJSON_IsArray(seps)) {
        size_t n = 0;
        for (const cJSON *s = seps->child; s != NULL && n < 64; s = s->next)
            sv[n++] = s->valuestring;
        o.separators = sv;
        o.n_separators = n;
    }
    char **chunks = NULL, err[256] = "";
    size_t *starts = NULL, n = 0;
    rc = ctn_split_text(&o, text, len, &chunks, &starts, &n, err, sizeof err);
    cJSON_Delete(j);
    if (rc < 0) {
        printf("{\"error\":\"%s\"}\n", ctn_strerror(rc));
        fprintf(stderr, "split: %s\n", err);
        return 0;
    }
    ctn_val *out = ctn_val_obj(), *cs = ctn_val_arr(), *ss = ctn_val_arr();
    size_t at = 0, cp = 0;
    for (size_t i = 0; i < n; i++) {
        ctn_val_push(cs, ctn_val_cstr(chunks[i]));
        if (starts[i] == SIZE_MAX) {
            ctn_val_push(ss, ctn_val_null());
        } else {
            if (starts[i] < at) at = cp = 0;
            cp += cp_count(text + at, starts[i] - at);
            at = starts[i];
            ctn_val_push(ss, ctn_val_int((int64_t)cp));
        }
        free(chunks[i]);
    }
    free(chunks);
    free(starts);
    ctn_val_set(out, "chunks", cs);
    ctn_val_set(out, "starts", ss);
    char *js = ctn_val_to_json(out, 0);
    if (js == NULL) return 1;
    fputs(js, stdout);
    fputc('\n', stdout);
    free(js);
    ctn_val_unref(out);
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc >= 5 && strcmp(argv[1], "--time") == 0) {
        size_t len;
        char *text = read_all(argv[2], &len);
        if (text == NULL) {
            perror(argv[2]);
            return 1;
        }
        ctn_split_opts o = ctn_split_defaults();
        o.chunk_size = (size_t)atol(argv[3]);
        o.chunk_overlap = (size_t)atol(argv[4]);
        int repeat = argc > 5 ? atoi(argv[5]) : 3;
        double best = 1e9;
        size_t n = 0;
        for (int r = 0; r < repeat; r++) {
            char **chunks, err[256];
            size_t *starts;
            double t0 = now();
            if (ctn_split_text(&o, text, len, &chunks, &starts, &n, err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
            double t = now() - t0;
            if (t < best) best = t;
            for (size_t i = 0; i < n; i++)
                free(chunks[i]);
            free(chunks);
            free(starts);
        }
        printf("%zu bytes, chunk_size %zu, overlap %zu: %zu chunks in %.3f s\n", len, o.chunk_size,
               o.chunk_overlap, n, best);
        free(text);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: split_driver TEXT SETTINGS | --time TEXT SIZE OVERLAP\n");
        return 2;
    }
    size_t len, slen;
    char *text = read_all(argv[1], &len), *settings = read_all(argv[2], &slen);
    if (text == NULL || settings == NULL) {
        fprintf(stderr, "cannot read %s or %s\n", argv[1], argv[2]);
        return 1;
    }
    char *sp = settings, *end = settings + slen;
    int status = 0;
    while (sp < end && status == 0) {
        char *nl = memchr(sp, '\n', (size_t)(end - sp));
        if (nl == NULL) nl = end;
        *nl = '\0';
        if (nl > sp) status = run_setting(text, len, sp);
        sp = nl + 1;
    }
    free(text);
    free(settings);
    return status;
}
