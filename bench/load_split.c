/*
 * catena's side of bench/run_load_split.sh: the document loaders (stdlib/loader.h) and the
 * recursive or Markdown splitter (stdlib/split.h) over a folder, timed as one pass, on one
 * thread. Its peer is bench/load_split/load_split.mjs (LangChain.js), which does the same
 * work and prints the same JSON lines.
 *
 *     load_split ROOT [--reps N] [--chunk-size N] [--chunk-overlap N] [--set NAME]...
 *                [--dump DIR]
 *
 * A pass is: list the files under ROOT (ctn_list_files), load those of the set, each with
 * the loader of its kind, into one array of documents, then split the whole array
 * (ctn_split_docs). The sets:
 *   text      .txt and .md as plain text (ctn_load_text: one document a file), .json with
 *             the selector "/" "*" "/body" and .jsonl with "/body" (one document a record),
 *             split by the recursive splitter: what LangChain's TextLoader, JSONLoader
 *             (every string of the file), JSONLinesLoader ("/body") and
 *             RecursiveCharacterTextSplitter do.
 *   markdown  .md through the Markdown loader (one document a section) and the Markdown
 *             splitter: catena's own semantics, which LangChain.js has no loader for.
 *   pdf       .pdf through poppler (one document a page), split recursively.
 * Each set gets one warm-up pass and then --reps timed passes (default 5); it prints one
 * JSON line with the median and the minimum milliseconds of a pass, the median of its loading
 * part (load_ms: listing and loading, before the split), and what the pass produced (files,
 * documents, chunks, code points of the chunks) so that the two sides can be checked for
 * doing the same work. With --dump DIR it writes DIR/SET.dump after the timing: every chunk
 * in order as "relative/path" 0x1F text 0x1E '\n', the same format as the peer's.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "loader.h"
#include "split.h"
#include "value.h"

enum { SET_TEXT, SET_MARKDOWN, SET_PDF, N_SETS };
static const char *const set_names[N_SETS] = {"text", "markdown", "pdf"};

typedef struct {
    size_t files, docs, chunks, chunk_cps;
} pass_stats;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static size_t code_points(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* The loader a file gets in a set, CTN_LOADER_NONE when the set does not take it. */
static ctn_loader_kind loader_in(int set, ctn_loader_kind k) {
    switch (set) {
    case SET_TEXT:
        if (k == CTN_LOADER_MARKDOWN) return CTN_LOADER_TEXT;
        if (k == CTN_LOADER_TEXT || k == CTN_LOADER_JSON || k == CTN_LOADER_JSONL) return k;
        return CTN_LOADER_NONE;
    case SET_MARKDOWN: return k == CTN_LOADER_MARKDOWN ? k : CTN_LOADER_NONE;
    default: return k == CTN_LOADER_PDF ? k : CTN_LOADER_NONE;
    }
}

/* One pass over root: *chunks (a new array; the caller drops it) and the counts. 0 or -1
 * with the reason on stderr. */
static int pass(const char *root, int set, const ctn_split_opts *o, ctn_val **chunks,
                pass_stats *st, double *t_loaded) {
    static const char *const no_meta[1] = {NULL};
    const ctn_json_sel json = {.text = "/*/body", .meta_fields = no_meta};
    const ctn_json_sel jsonl = {.text = "/body", .meta_fields = no_meta, .lines = true};
    char err[512];
    char **paths = NULL;
    size_t n = 0;
    int rc = ctn_list_files(root, NULL, &paths, &n, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "load_split: %s\n", err);
        return -1;
    }
    ctn_val *docs = ctn_val_arr();
    *chunks = ctn_val_arr();
    memset(st, 0, sizeof *st);
    rc = docs != NULL && *chunks != NULL ? 0 : CTN_ENOMEM;
    for (size_t i = 0; i < n && rc == 0; i++) {
        ctn_loader_kind k = loader_in(set, ctn_loader_for(paths[i]));
        if (k == CTN_LOADER_NONE) continue;
        const ctn_json_sel *sel = k == CTN_LOADER_JSON ? &json : k == CTN_LOADER_JSONL ? &jsonl
                                                                                    : NULL;
        ctn_load_ctx c = {.source = paths[i]};
        rc = ctn_load_path(&c, k, sel, paths[i], docs, err, sizeof err);
        st->files++;
    }
    *t_loaded = now_ms(); /* the loading done, the splitting next */
    if (rc == 0) {
        st->docs = ctn_val_len(docs);
        rc = ctn_split_docs(set == SET_MARKDOWN ? CTN_SPLIT_MARKDOWN : CTN_SPLIT_RECURSIVE, o,
                            docs, *chunks, err, sizeof err);
    }
    if (rc == 0) {
        st->chunks = ctn_val_len(*chunks);
        for (size_t i = 0; i < st->chunks; i++) {
            const ctn_val *t = ctn_val_at(*chunks, i)->u.doc.text;
            st->chunk_cps += code_points(t->u.str.p, t->u.str.len);
        }
    } else {
        fprintf(stderr, "load_split: %s: %s\n", ctn_strerror(rc), rc == CTN_ENOMEM ? "" : err);
    }
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
    ctn_val_unref(docs);
    if (rc < 0) {
        ctn_val_unref(*chunks);
        *chunks = NULL;
        return -1;
    }
    return 0;
}

/* Writes the chunks as described at the top; sources are made relative to root. */
static int dump(const char *dir, int set, const char *root, const ctn_val *chunks) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.dump", dir, set_names[set]);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "load_split: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t rl = strlen(root);
    for (size_t i = 0; i < ctn_val_len(chunks); i++) {
        const ctn_val *d = ctn_val_at(chunks, i);
        const ctn_val *src = ctn_val_get(d->u.doc.meta, "source");
        const char *s = src != NULL && src->kind == CTN_VSTR ? src->u.str.p : "";
        if (strncmp(s, root, rl) == 0 && s[rl] == '/') s += rl + 1;
        fprintf(f, "%s\x1f", s);
        fwrite(d->u.doc.text->u.str.p, 1, d->u.doc.text->u.str.len, f);
        fputs("\x1e\n", f);
    }
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *root = NULL, *dump_dir = NULL;
    int reps = 5;
    bool want[N_SETS] = {false};
    bool any = false;
    ctn_split_opts o = ctn_split_defaults();
    o.chunk_size = 1000;
    o.chunk_overlap = 200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--reps") && v) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--chunk-size") && v) o.chunk_size = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "--chunk-overlap") && v) o.chunk_overlap = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "--dump") && v) dump_dir = argv[++i];
        else if (!strcmp(a, "--set") && v) {
            int s = 0;
            while (s < N_SETS && strcmp(v, set_names[s])) s++;
            if (s == N_SETS) {
                fprintf(stderr, "load_split: unknown set '%s' (text, markdown, pdf)\n", v);
                return 2;
            }
            want[s] = any = true;
            i++;
        } else if (a[0] != '-' && root == NULL) root = a;
        else {
            fprintf(stderr, "usage: load_split ROOT [--reps N] [--chunk-size N] "
                            "[--chunk-overlap N] [--set text|markdown|pdf]... [--dump DIR]\n");
            return 2;
        }
    }
    if (root == NULL || reps < 1) {
        fprintf(stderr, "load_split: a folder and --reps >= 1 are needed\n");
        return 2;
    }
    char err[256];
    if (ctn_split_check(CTN_SPLIT_RECURSIVE, &o, err, sizeof err) < 0) {
        fprintf(stderr, "load_split: %s\n", err);
        return 2;
    }
    double *ms = malloc((size_t)reps * sizeof *ms), *lms = malloc((size_t)reps * sizeof *lms);
    if (ms == NULL || lms == NULL) return 1;
    for (int s = 0; s < N_SETS; s++) {
        if (any && !want[s]) continue;
        pass_stats st;
        ctn_val *chunks;
        for (int r = -1; r < reps; r++) { /* r = -1: the warm-up */
            double t0 = now_ms();
            double tl;
            if (pass(root, s, &o, &chunks, &st, &tl) < 0) return 1;
            double t1 = now_ms();
            if (r >= 0) ms[r] = t1 - t0, lms[r] = tl - t0;
            if (r + 1 < reps || dump_dir == NULL) ctn_val_unref(chunks);
        }
        if (dump_dir != NULL) {
            int rc = dump(dump_dir, s, root, chunks);
            ctn_val_unref(chunks);
            if (rc < 0) return 1;
        }
        qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
        qsort(lms, (size_t)reps, sizeof *lms, cmp_double);
        printf("{\"impl\": \"catena\", \"set\": \"%s\", \"files\": %zu, \"docs\": %zu, "
               "\"chunks\": %zu, \"chunk_chars\": %zu, \"reps\": %d, \"ms\": %.3f, "
               "\"min_ms\": %.3f, \"load_ms\": %.3f}\n",
               set_names[s], st.files, st.docs, st.chunks, st.chunk_cps, reps, ms[reps / 2],
               ms[0], lms[reps / 2]);
        fflush(stdout);
    }
    free(ms);
    free(lms);
    return 0;
}
