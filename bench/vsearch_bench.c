/*
 * catena's side of bench/run_vsearch.sh: exact kNN (stdlib/vsearch.h) over a file of vectors
 * and queries that the peers (bench/vsearch/sqlite_vec.mjs, bench/faiss_knn.cc) read too, and
 * BM25 and hybrid retrieval over a knowledge base of synthetic chunks (stdlib/kb.h,
 * stdlib/retrieve.h).
 *
 *     vsearch_bench gen FILE [--n 100000] [--dim 384] [--queries 200] [--seed 1]
 *     vsearch_bench knn FILE --config DTYPE:THREADS:BATCH ... [--k 10] [--reps 3] [--ids OUT]
 *     vsearch_bench kb FILE --db PATH [--chunks 100000] [--queries 200] [--seed 1]
 *
 * The file (little-endian): "CTNVEC01", then uint32 n, dim, nq and 0, then n * dim floats
 * (the vectors, row 0 first) and nq * dim floats (the queries). gen writes unit vectors of
 * Gaussian directions from a seeded xorshift64.
 *
 * knn builds one index per storage type named (f32, f16, int8; inner product, which on unit
 * vectors is the cosine and is what FAISS's IndexFlatIP computes; id = row), then for each
 * --config searches every query in calls of BATCH queries on THREADS threads
 * (ctn_vs_set_threads), after an untimed pass; each of --reps timed passes gives ms per
 * query and per call, the median is printed, one JSON line per config:
 *   {"impl":"catena","dtype":"f32","threads":1,"batch":1,"ms_query":..,"ms_call":..,
 *    "cpu_ms_call":..,"matrix_bytes":..,"gb_s":..}
 * (cpu_ms_call: the process's CPU time per call, all threads, median over the passes).
 * where matrix_bytes is what one call reads of the stored rows and gb_s that over ms_call.
 * --ids PREFIX writes the hits of each storage type's first config, nq * k int64 ids, to
 * PREFIX.f32, PREFIX.f16, PREFIX.int8, for the recall check.
 *
 * kb writes a new knowledge base at PATH: chunks in documents of 100, each of 30 to 80 words
 * drawn from a Zipf(1) distribution over 20,000 made-up words (seeded), with the file's
 * vectors as their embeddings (the chunk count must not exceed n). Then queries of 2 to 5
 * words from the same distribution, with the file's queries as their vectors: BM25 and
 * hybrid (k 10, fetch_k 20, vectors through a ctn_vcache) alternately, one query of each
 * in turn; one JSON line with the build time, the first hybrid search (it reads the vectors
 * into memory) and p50 / p99 of each.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "kb.h"
#include "retrieve.h"
#include "vsearch.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* CPU time of the process (every thread): on a shared machine it counts what the work took
 * even when the scheduler gave the cores to someone else for a while. */
static double cpu_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static uint64_t rng;
static uint64_t next_u64(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static double uniform(void) { return ((next_u64() >> 11) + 0.5) / 9007199254740992.0; }
static double gauss(void) {
    return sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform());
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* The q-quantile (0..1) of n values, nearest rank; sorts v. */
static double quantile(double *v, size_t n, double q) {
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)ceil(q * (double)n);
    return v[i > 0 ? i - 1 : 0];
}

static void die(const char *msg) {
    fprintf(stderr, "vsearch_bench: %s\n", msg);
    exit(1);
}

/* ---- the shared file --------------------------------------------------------------------- */

typedef struct {
    uint32_t n, dim, nq;
    float *x; /* (n, dim) */
    float *q; /* (nq, dim) */
} dataset;

static void unit(float *v, uint32_t dim) {
    double s = 0;
    for (uint32_t j = 0; j < dim; j++) {
        v[j] = (float)gauss();
        s += (double)v[j] * v[j];
    }
    for (uint32_t j = 0; j < dim; j++)
        v[j] = (float)(v[j] / sqrt(s));
}

static int cmd_gen(const char *path, uint32_t n, uint32_t dim, uint32_t nq, uint64_t seed) {
    rng = seed * 0x9E3779B97F4A7C15ull | 1;
    FILE *f = fopen(path, "wb");
    if (f == NULL) die("cannot write the vector file");
    const uint32_t head[4] = {n, dim, nq, 0};
    float *v = malloc(dim * sizeof *v);
    int ok = v != NULL && fwrite("CTNVEC01", 1, 8, f) == 8 && fwrite(head, 4, 4, f) == 4;
    for (uint64_t i = 0; ok && i < (uint64_t)n + nq; i++) {
        unit(v, dim);
        ok = fwrite(v, sizeof *v, dim, f) == dim;
    }
    free(v);
    if (fclose(f) != 0 || !ok) die("writing the vector file failed");
    return 0;
}

static void load(const char *path, dataset *d) {
    FILE *f = fopen(path, "rb");
    char magic[8];
    uint32_t head[4];
    if (f == NULL) die("cannot open the vector file");
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "CTNVEC01", 8) != 0 ||
        fread(head, 4, 4, f) != 4 || head[0] == 0 || head[1] == 0 || head[2] == 0)
        die("not a vector file of vsearch_bench gen (CTNVEC01)");
    d->n = head[0], d->dim = head[1], d->nq = head[2];
    const size_t nx = (size_t)d->n * d->dim, nqf = (size_t)d->nq * d->dim;
    d->x = malloc(nx * sizeof *d->x);
    d->q = malloc(nqf * sizeof *d->q);
    if (d->x == NULL || d->q == NULL) die("out of memory");
    if (fread(d->x, sizeof *d->x, nx, f) != nx || fread(d->q, sizeof *d->q, nqf, f) != nqf)
        die("the vector file is shorter than its header says");
    fclose(f);
}

/* ---- knn ----------------------------------------------------------------------------------- */

static const char *const dtype_names[] = {"f32", "f16", "int8"};

/* Bytes of one stored row: vsearch.c pads to the kernel's block and stores F32, F16 or Q8_0
 * blocks (32 int8 and a half scale). */
static size_t row_bytes(ctn_kb_dtype t, uint32_t dim) {
    const size_t pad = (dim + 31) / 32 * 32;
    return t == CTN_KB_F32 ? pad * 4 : t == CTN_KB_F16 ? pad * 2 : pad / 32 * 34;
}

static ctn_vs *build_index(const dataset *d, ctn_kb_dtype t) {
    char err[256];
    ctn_vs *vs;
    if (ctn_vs_new((int)d->dim, t, CTN_VS_DOT, &vs, err, sizeof err) < 0) die(err);
    for (uint32_t i = 0; i < d->n; i++)
        if (ctn_vs_add(vs, i, d->x + (size_t)i * d->dim, err, sizeof err) < 0) die(err);
    return vs;
}

/* One pass over every query in calls of batch; ms of the pass, and its CPU ms into *cpu.
 * ids (nq * k) may be NULL. */
static double pass(const ctn_vs *vs, const dataset *d, size_t batch, size_t k, ctn_vs_hit *hits,
                   size_t *found, int64_t *ids, double *cpu) {
    char err[256];
    const double t0 = now_ms(), c0 = cpu_ms();
    for (size_t q0 = 0; q0 < d->nq; q0 += batch) {
        const size_t nb = q0 + batch <= d->nq ? batch : d->nq - q0;
        if (ctn_vs_search(vs, d->q + q0 * d->dim, nb, k, NULL, hits, found, err, sizeof err) < 0)
            die(err);
        for (size_t c = 0; ids != NULL && c < nb; c++)
            for (size_t i = 0; i < k; i++)
                ids[(q0 + c) * k + i] = i < found[c] ? hits[c * k + i].id : -1;
    }
    *cpu = cpu_ms() - c0;
    return now_ms() - t0;
}

static void write_ids(const char *prefix, const char *dtype, const int64_t *ids, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, dtype);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(ids, sizeof *ids, n, f) != n || fclose(f) != 0)
        die("cannot write --ids");
}

static int cmd_knn(const char *path, char **configs, int nconf, size_t k, int reps,
                   const char *ids_path) {
    dataset d;
    load(path, &d);
    ctn_vs *idx[3] = {NULL, NULL, NULL};
    ctn_vs_hit *hits = malloc(1024 * k * sizeof *hits);
    size_t found[1024];
    int64_t *ids = ids_path ? malloc((size_t)d.nq * k * sizeof *ids) : NULL;
    double *ms = malloc((size_t)reps * sizeof *ms), *cpu = malloc((size_t)reps * sizeof *cpu);
    if (hits == NULL || ms == NULL || cpu == NULL || (ids_path && ids == NULL)) die("out of memory");
    for (int c = 0; c < nconf; c++) {
        char name[16];
        int threads, batch;
        if (sscanf(configs[c], "%15[^:]:%d:%d", name, &threads, &batch) != 3 || batch < 1 ||
            batch > 1024)
            die("--config is DTYPE:THREADS:BATCH (f32:1:1, int8:0:4; batch 1 to 1024)");
        int t = 0;
        while (t < 3 && strcmp(name, dtype_names[t]) != 0)
            t++;
        if (t == 3) die("--config: the storage type is f32, f16 or int8");
        const bool first = idx[t] == NULL;
        if (first) idx[t] = build_index(&d, (ctn_kb_dtype)t);
        char err[256];
        if (ctn_vs_set_threads(idx[t], threads, err, sizeof err) < 0) die(err);
        pass(idx[t], &d, (size_t)batch, k, hits, found, first ? ids : NULL, cpu); /* warm-up */
        if (first && ids) write_ids(ids_path, dtype_names[t], ids, (size_t)d.nq * k);
        for (int r = 0; r < reps; r++)
            ms[r] = pass(idx[t], &d, (size_t)batch, k, hits, found, NULL, &cpu[r]);
        const double med = quantile(ms, (size_t)reps, 0.5);
        const double calls = (d.nq + batch - 1) / batch;
        const double per_q = med / d.nq, per_call = med / calls;
        const double bytes = (double)row_bytes((ctn_kb_dtype)t, d.dim) * d.n;
        printf("{\"impl\":\"catena\",\"dtype\":\"%s\",\"threads\":%d,\"batch\":%d,\"n\":%u,"
               "\"dim\":%u,\"nq\":%u,\"k\":%zu,\"ms_query\":%.4f,\"ms_call\":%.4f,"
               "\"cpu_ms_call\":%.4f,\"matrix_bytes\":%.0f,\"gb_s\":%.2f}\n",
               dtype_names[t], ctn_vs_threads(idx[t]), batch, d.n, d.dim, d.nq, k, per_q,
               per_call, quantile(cpu, (size_t)reps, 0.5) / calls, bytes,
               bytes / (per_call * 1e6));
        fflush(stdout);
    }
    for (int t = 0; t < 3; t++)
        ctn_vs_free(idx[t]);
    free(hits);
    free(ids);
    free(ms);
    free(cpu);
    free(d.x);
    free(d.q);
    return 0;
}

/* ---- kb: BM25 and hybrid ------------------------------------------------------------------ */

enum { VOCAB = 20000, PER_DOC = 100 };

typedef struct {
    char (*words)[12]; /* (VOCAB) made-up words, NUL-terminated */
    double *cdf;       /* (VOCAB) Zipf(1) */
} lexicon;

static void make_lexicon(lexicon *lx) {
    static const char *const syl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "an",
                                      "el", "or", "un", "pe", "di", "ba", "zo"};
    lx->words = malloc(VOCAB * sizeof *lx->words);
    lx->cdf = malloc(VOCAB * sizeof *lx->cdf);
    if (lx->words == NULL || lx->cdf == NULL) die("out of memory");
    double s = 0;
    for (int i = 0; i < VOCAB; i++) {
        /* 2 to 5 syllables; the rank in the last two syllables keeps the words distinct. */
        char *w = lx->words[i];
        const int ns = 2 + (int)(next_u64() % 2);
        w[0] = '\0';
        for (int j = 0; j < ns; j++)
            strcat(w, syl[next_u64() % 16]);
        strcat(w, syl[i / 16 % 16]);
        if (i >= 256) strcat(w, syl[i / 256 % 16]);
        if (i >= 4096) strcat(w, syl[i / 4096]);
        s += 1.0 / (i + 1);
        lx->cdf[i] = s;
    }
    for (int i = 0; i < VOCAB; i++)
        lx->cdf[i] /= s;
}

static const char *draw(const lexicon *lx) {
    const double u = uniform();
    int lo = 0, hi = VOCAB - 1;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (lx->cdf[mid] < u) lo = mid + 1;
        else hi = mid;
    }
    return lx->words[lo];
}

/* Words from lx, lo to hi of them, separated by spaces, into buf (cap bytes). */
static size_t sentence(const lexicon *lx, int lo, int hi, char *buf, size_t cap) {
    const int n = lo + (int)(next_u64() % (uint64_t)(hi - lo + 1));
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        const char *w = draw(lx);
        const size_t wl = strlen(w);
        if (len + wl + 2 > cap) break;
        if (i > 0) buf[len++] = ' ';
        memcpy(buf + len, w, wl);
        len += wl;
    }
    buf[len] = '\0';
    return len;
}

static int cmd_kb(const char *path, const char *db, size_t nchunks, size_t nqueries,
                  uint64_t seed) {
    dataset d;
    load(path, &d);
    if (nchunks == 0 || nchunks > d.n) die("--chunks must be from 1 to the file's vectors");
    if (nqueries == 0 || nqueries > d.nq) die("--queries must be from 1 to the file's queries");
    rng = seed * 0x9E3779B97F4A7C15ull | 1;
    lexicon lx;
    make_lexicon(&lx);
    char err[512];
    ctn_kb *kb;
    unlink(db);
    if (ctn_kb_open(db, 0, &kb, err, sizeof err) < 0) die(err);
    char model[64];
    snprintf(model, sizeof model, "synthetic:none:%u", d.dim);
    ctn_kb_coll_opts o = {.create = true, .embed_model = model, .embed_dim = (int)d.dim};
    ctn_kb_coll c;
    if (ctn_kb_collection(kb, "bench", &o, &c, err, sizeof err) < 0) die(err);
    char text[1024];
    const double t0 = now_ms();
    for (size_t d0 = 0; d0 < nchunks; d0 += PER_DOC) {
        const size_t nd = d0 + PER_DOC <= nchunks ? PER_DOC : nchunks - d0;
        ctn_val *ch = ctn_val_arr();
        if (ch == NULL) die("out of memory");
        for (size_t i = 0; i < nd; i++) {
            const size_t len = sentence(&lx, 30, 80, text, sizeof text);
            ctn_val *m = ctn_val_obj();
            if (m == NULL || ctn_val_set(m, "chunk", ctn_val_int((int64_t)i)) < 0 ||
                ctn_val_push(ch, ctn_val_doc(text, len, m)) < 0)
                die("out of memory");
        }
        char uri[64], hash[48];
        snprintf(uri, sizeof uri, "doc/%06zu.txt", d0 / PER_DOC);
        ctn_kb_hash(uri, strlen(uri), hash);
        ctn_kb_doc doc = {.uri = uri, .hash = hash, .size = 1};
        ctn_kb_vectors v = {.model = model, .dim = (int)d.dim, .n = nd,
                            .vecs = d.x + d0 * d.dim, .dtype = CTN_KB_F32};
        if (ctn_kb_put(kb, &c, &doc, ch, &v, err, sizeof err) < 0) die(err);
        ctn_val_unref(ch);
    }
    const double build_s = (now_ms() - t0) / 1e3;

    ctn_vcache *vc = ctn_vcache_new();
    double *tb = malloc(nqueries * sizeof *tb), *th = malloc(nqueries * sizeof *th);
    if (vc == NULL || tb == NULL || th == NULL) die("out of memory");
    ctn_search_opts ob = ctn_search_defaults(), oh = ctn_search_defaults();
    ob.mode = CTN_RETRIEVE_BM25, ob.k = 10;
    oh.mode = CTN_RETRIEVE_HYBRID, oh.k = 10;
    ctn_kb_hit hits[10];
    size_t found, nb_found = 0, nh_found = 0;
    double first_hybrid = 0;
    for (size_t i = 0; i <= nqueries; i++) { /* i = 0: the untimed first round */
        const size_t len = sentence(&lx, 2, 5, text, sizeof text);
        const char *tp = text;
        const float *qv = d.q + (i ? i - 1 : 0) * d.dim;
        double a = now_ms();
        if (ctn_kb_search(kb, &c, vc, &ob, 1, &tp, &len, NULL, hits, &found, err, sizeof err) < 0)
            die(err);
        double b = now_ms();
        if (i) tb[i - 1] = b - a, nb_found += found;
        if (ctn_kb_search(kb, &c, vc, &oh, 1, &tp, &len, qv, hits, &found, err, sizeof err) < 0)
            die(err);
        a = now_ms();
        if (i) th[i - 1] = a - b, nh_found += found;
        else first_hybrid = a - b;
    }
    printf("{\"impl\":\"catena\",\"chunks\":%zu,\"queries\":%zu,\"dim\":%u,\"build_s\":%.1f,"
           "\"first_hybrid_ms\":%.1f,\"bm25_p50_ms\":%.3f,"
           "\"bm25_p99_ms\":%.3f,\"hybrid_p50_ms\":%.3f,\"hybrid_p99_ms\":%.3f,"
           "\"bm25_mean_hits\":%.2f,\"hybrid_mean_hits\":%.2f}\n",
           nchunks, nqueries, d.dim, build_s, first_hybrid, quantile(tb, nqueries, 0.5),
           quantile(tb, nqueries, 0.99), quantile(th, nqueries, 0.5),
           quantile(th, nqueries, 0.99), (double)nb_found / nqueries,
           (double)nh_found / nqueries);
    ctn_vcache_free(vc);
    ctn_kb_close(kb);
    free(tb);
    free(th);
    free(lx.words);
    free(lx.cdf);
    free(d.x);
    free(d.q);
    return 0;
}

/* ---- arguments ----------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: vsearch_bench gen FILE [--n N] [--dim D] [--queries Q] [--seed S]\n"
            "       vsearch_bench knn FILE --config DTYPE:THREADS:BATCH ... [--k K] [--reps R] "
            "[--ids OUT]\n"
            "       vsearch_bench kb FILE --db PATH [--chunks N] [--queries Q] [--seed S]\n");
    exit(2);
}

/* A whole number from lo to hi, or exit naming the option. */
static long num(const char *opt, const char *s, long lo, long hi) {
    char *end;
    const long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "vsearch_bench: %s wants a number from %ld to %ld, not '%s'\n", opt, lo,
                hi, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    const char *cmd = argv[1], *file = argv[2], *ids = NULL, *db = NULL;
    long n = 100000, dim = 384, nq = 200, seed = 1, k = 10, reps = 3, chunks = 100000;
    char *configs[32];
    int nconf = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (strcmp(a, "--n") == 0) n = num(a, v, 1, 10000000);
        else if (strcmp(a, "--dim") == 0) dim = num(a, v, 1, 65536);
        else if (strcmp(a, "--queries") == 0) nq = num(a, v, 1, 100000);
        else if (strcmp(a, "--seed") == 0) seed = num(a, v, 0, 1L << 40);
        else if (strcmp(a, "--k") == 0) k = num(a, v, 1, 10000);
        else if (strcmp(a, "--reps") == 0) reps = num(a, v, 1, 1000);
        else if (strcmp(a, "--chunks") == 0) chunks = num(a, v, 1, 10000000);
        else if (strcmp(a, "--ids") == 0) ids = v;
        else if (strcmp(a, "--db") == 0) db = v;
        else if (strcmp(a, "--config") == 0 && nconf < 32) configs[nconf++] = (char *)v;
        else usage();
    }
    if (strcmp(cmd, "gen") == 0)
        return cmd_gen(file, (uint32_t)n, (uint32_t)dim, (uint32_t)nq, (uint64_t)seed);
    if (strcmp(cmd, "knn") == 0) {
        if (nconf == 0) usage();
        return cmd_knn(file, configs, nconf, (size_t)k, (int)reps, ids);
    }
    if (strcmp(cmd, "kb") == 0) {
        if (db == NULL) usage();
        return cmd_kb(file, db, (size_t)chunks, (size_t)nq, (uint64_t)seed);
    }
    usage();
}
