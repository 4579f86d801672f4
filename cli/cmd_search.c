/*
 * catena search: the best chunks of a knowledge base collection for a query, by keyword
 * (BM25 through FTS5, kb.h), by vector (the query embedded with the collection's model and
 * searched exactly, vsearch.h) or both fused by reciprocal rank.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cli.h"
#include "commands.h"
#include "error.h"
#include "json.h"
#include "kb.h"
#include "lm.h"
#include "retrieve.h"
#include "str.h"
#include "value.h"

static void search_usage(FILE *f) {
    fprintf(f,
            "usage: catena search --db KB.sqlite [options] [--] QUERY...\n"
            "  The best chunks of a collection for the query (its words joined by spaces;\n"
            "  after --, words that start with - too).\n"
            "  --db FILE             the knowledge base\n"
            "  --collection NAME     collection (default: default)\n"
            "  --mode bm25|vector|hybrid  keyword search, vector search, or both fused by\n"
            "                        reciprocal rank (default: hybrid with --embed, else bm25)\n"
            "  --embed MODEL.gguf    the collection's embedding model (vector and hybrid)\n"
            "  --pooling mean|cls|last  as the ingest had it (default: the model's)\n"
            "  -k N                  hits to print (default 5, at most 1000)\n"
            "  --fetch-k N           hybrid: each list's length; MMR: its candidates\n"
            "                        (default 4 k, at least 50)\n"
            "  --filter JSON         only chunks whose metadata match, e.g.\n"
            "                        '{\"source\": \"a.md\", \"page\": {\"$gte\": 2}}'\n"
            "  --mmr                 diversify the hits (maximal marginal relevance)\n"
            "  --lambda X            MMR: 1 relevance only, 0 diversity only (default 0.5)\n"
            "  --k1 X, --b X         BM25's parameters (default 1.2 and 0.75)\n"
            "  --weights V,B         hybrid: the vector and keyword lists' weights (1,1)\n"
            "  --json                one JSON array of hits\n"
            "  -t, --threads N       threads of the embedding engine\n");
}

/* ---- the query's embedding ---------------------------------------------------------------- */

typedef struct {
    float *vec;
    int dim, err;
    char msg[512];
} embed_out;

static void on_embedding(void *ud, const float *vec, int dim, int err, const char *msg) {
    embed_out *o = ud;
    o->err = err;
    if (err == 0 && (o->vec = malloc((size_t)dim * sizeof *vec)) != NULL) {
        memcpy(o->vec, vec, (size_t)dim * sizeof *vec);
        o->dim = dim;
    } else {
        o->err = err != 0 ? err : CTN_ENOMEM;
        snprintf(o->msg, sizeof o->msg, "%s", msg != NULL ? msg : "out of memory");
    }
}

/* Embeds query with the model at path, which must be the collection's; 0 or 1 (printed). */
static int embed_query(const char *path, const ctn_kb_coll *c, int threads, int pooling,
                       const char *query, embed_out *out) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512] = "";
    ctn_lm *lm = NULL;
    int status = 1;
    ctn_lm_params lp = {.threads = threads};
    if (ctn_lm_open(&loop, path, &lp, &lm, err, sizeof err) < 0) {
        fprintf(stderr, "catena search: %s\n", err);
        goto out;
    }
    char id[256];
    if (ctn_kb_model_id(ctn_lm_path(lm), ctn_lm_arch(lm), ctn_lm_embed_dim(lm), id,
                        sizeof id) < 0 ||
        strcmp(id, c->embed_model) != 0) {
        fprintf(stderr, "catena search: collection '%s' is embedded with '%s'; %s is '%s'\n",
                c->name, c->embed_model[0] ? c->embed_model : "(no model)", path, id);
        goto out;
    }
    if (pooling == CTN_POOL_NONE) pooling = ctn_lm_pooling(lm);
    if (ctn_lm_embed(lm, query, strlen(query), pooling, on_embedding, out, NULL, err,
                     sizeof err) < 0) {
        fprintf(stderr, "catena search: embedding the query: %s\n", err);
        goto out;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (out->err != 0) fprintf(stderr, "catena search: embedding the query: %s\n", out->msg);
    else status = 0;
out:
    ctn_lm_close(lm);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return status;
}

/* ---- printing ---------------------------------------------------------------------------- */

static const char *meta_str(const ctn_val *d, const char *key) {
    const ctn_val *v = ctn_val_get(d, key);
    return v != NULL && v->kind == CTN_VSTR ? v->u.str.p : NULL;
}

static int print_hits(ctn_kb *kb, const ctn_kb_coll *c, const ctn_kb_hit *hits, size_t n,
                      bool json) {
    ctn_val *arr = json ? ctn_val_arr() : NULL;
    if (json && arr == NULL) return 1;
    for (size_t i = 0; i < n; i++) {
        char err[512] = "";
        ctn_val *d = NULL;
        if (ctn_kb_chunk(kb, c, hits[i].chunk, &d, err, sizeof err) < 0) {
            fprintf(stderr, "catena search: %s\n", err);
            ctn_val_unref(arr);
            return 1;
        }
        const ctn_val *page = ctn_val_get(d, "page");
        const char *src = meta_str(d, "source"), *sec = meta_str(d, "section");
        if (json) {
            ctn_val *h = ctn_val_obj();
            int rc = h != NULL ? 0 : CTN_ENOMEM;
            if (rc == 0) rc = ctn_val_set(h, "rank", ctn_val_int((int64_t)i + 1));
            if (rc == 0) rc = ctn_val_set(h, "chunk", ctn_val_int(hits[i].chunk));
            if (rc == 0) rc = ctn_val_set(h, "score", ctn_val_num(hits[i].score));
            if (rc == 0) rc = ctn_val_set(h, "source", src ? ctn_val_cstr(src) : ctn_val_null());
            if (rc == 0)
                rc = ctn_val_set(h, "page", page ? ctn_val_ref((ctn_val *)page) : ctn_val_null());
            if (rc == 0) rc = ctn_val_set(h, "section", sec ? ctn_val_cstr(sec) : ctn_val_null());
            if (rc == 0) rc = ctn_val_set(h, "text", ctn_val_ref(d->u.doc.text));
            if (rc == 0) rc = ctn_val_set(h, "metadata", ctn_val_ref(d->u.doc.meta));
            if (rc == 0) rc = ctn_val_push(arr, h);
            else ctn_val_unref(h);
            if (rc < 0) {
                ctn_val_unref(d);
                ctn_val_unref(arr);
                fprintf(stderr, "catena search: out of memory\n");
                return 1;
            }
        } else {
            printf("%zu. %.4f  %s", i + 1, hits[i].score, src ? src : "?");
            if (page != NULL && page->kind == CTN_VINT) printf("  page %lld", (long long)page->u.i);
            if (sec != NULL && sec[0] != '\0') printf("  > %s", sec);
            printf("\n   ");
            /* The text on one line, at most 240 bytes, cut at a character boundary. */
            const ctn_val *t = d->u.doc.text;
            size_t len = t->u.str.len, cut = len > 240 ? 240 : len;
            while (cut < len && cut > 0 && ((unsigned char)t->u.str.p[cut] & 0xC0) == 0x80)
                cut--;
            for (size_t j = 0; j < cut; j++) {
                const char ch = t->u.str.p[j];
                putchar(ch == '\n' || ch == '\r' || ch == '\t' ? ' ' : ch);
            }
            printf("%s\n", cut < len ? " ..." : "");
        }
        ctn_val_unref(d);
    }
    if (json) {
        char *s = ctn_val_to_json(arr, 2);
        ctn_val_unref(arr);
        if (s == NULL) {
            fprintf(stderr, "catena search: out of memory\n");
            return 1;
        }
        printf("%s\n", s);
        free(s);
    }
    return 0;
}

int ctn_cmd_search(int argc, char **argv) {
    const char *db = NULL, *coll = "default", *embed = NULL, *filter_json = NULL;
    int mode = -1, pooling = CTN_POOL_NONE;
    long k = 5, threads = 0, fetch_k = 0;
    bool json = false;
    ctn_search_opts so = ctn_search_defaults();
    ctn_strbuf q = {0};
    bool words_only = false; /* after "--": every argument is a word of the query */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (words_only || (a[0] != '-' || a[1] == '\0')) {
            if (q.len > 0) ctn_sb_puts(&q, " ");
            ctn_sb_puts(&q, a);
            continue;
        }
        if (!strcmp(a, "--")) {
            words_only = true;
            continue;
        }
        static const char *const valued[] = {"--db",     "--collection", "--mode",  "--embed",
                                             "--pooling", "-k",          "-t",      "--threads",
                                             "--fetch-k", "--filter",    "--lambda", "--k1",
                                             "--b",       "--weights"};
        bool value = false;
        for (size_t j = 0; j < sizeof valued / sizeof valued[0]; j++)
            value = value || !strcmp(a, valued[j]);
        if (value && v == NULL) {
            fprintf(stderr, "catena search: %s needs a value\n", a);
            ctn_sb_free(&q);
            return 2;
        }
        if (value) i++;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            search_usage(stdout);
            ctn_sb_free(&q);
            return 0;
        } else if (!strcmp(a, "--db")) {
            db = v;
        } else if (!strcmp(a, "--collection")) {
            coll = v;
        } else if (!strcmp(a, "--embed")) {
            embed = v;
        } else if (!strcmp(a, "--filter")) {
            filter_json = v;
        } else if (!strcmp(a, "--mode")) {
            mode = !strcmp(v, "bm25")     ? CTN_RETRIEVE_BM25
                   : !strcmp(v, "vector") ? CTN_RETRIEVE_VECTOR
                   : !strcmp(v, "hybrid") ? CTN_RETRIEVE_HYBRID
                                          : -1;
            if (mode < 0) fprintf(stderr, "catena search: --mode: '%s' is not bm25, vector or "
                                          "hybrid\n", v), bad = 1;
        } else if (!strcmp(a, "--pooling")) {
            pooling = !strcmp(v, "mean") ? CTN_POOL_MEAN : !strcmp(v, "cls") ? CTN_POOL_CLS
                                         : !strcmp(v, "last") ? CTN_POOL_LAST : -1;
            if (pooling < 0) fprintf(stderr, "catena search: --pooling: '%s' is not mean, cls "
                                             "or last\n", v), bad = 1;
        } else if (!strcmp(a, "-k")) {
            if (ctn__cli_parse_long(v, 1, 1000, &k) < 0)
                fprintf(stderr, "catena search: -k: '%s' is not 1..1000\n", v), bad = 1;
        } else if (!strcmp(a, "--fetch-k")) {
            if (ctn__cli_parse_long(v, 1, 10000, &fetch_k) < 0)
                fprintf(stderr, "catena search: --fetch-k: '%s' is not 1..10000\n", v), bad = 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (ctn__cli_parse_long(v, 1, 1024, &threads) < 0)
                fprintf(stderr, "catena search: %s: '%s' is not 1..1024\n", a, v), bad = 1;
        } else if (!strcmp(a, "--lambda")) {
            if (ctn__cli_parse_double(v, 0, 1, &so.lambda) < 0)
                fprintf(stderr, "catena search: --lambda: '%s' is not from 0 to 1\n", v), bad = 1;
        } else if (!strcmp(a, "--k1")) {
            if (ctn__cli_parse_double(v, 0, 100, &so.bm25.k1) < 0)
                fprintf(stderr, "catena search: --k1: '%s' is not from 0 to 100\n", v), bad = 1;
        } else if (!strcmp(a, "--b")) {
            if (ctn__cli_parse_double(v, 0, 1, &so.bm25.b) < 0)
                fprintf(stderr, "catena search: --b: '%s' is not from 0 to 1\n", v), bad = 1;
        } else if (!strcmp(a, "--weights")) {
            char wv[64], *comma;
            snprintf(wv, sizeof wv, "%s", v);
            if ((comma = strchr(wv, ',')) == NULL ||
                (*comma = '\0', ctn__cli_parse_double(wv, 0, 1e6, &so.w_vector) < 0) ||
                ctn__cli_parse_double(comma + 1, 0, 1e6, &so.w_bm25) < 0 ||
                so.w_vector + so.w_bm25 <= 0)
                fprintf(stderr, "catena search: --weights: '%s' is not V,B (two numbers from 0 "
                                "to 1e6, not both 0)\n", v), bad = 1;
        } else if (!strcmp(a, "--mmr")) {
            so.mmr = true;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else {
            fprintf(stderr, "catena search: unknown option '%s' (see catena search --help; "
                            "-- before a query that starts with -)\n", a);
            bad = 1;
        }
        if (bad) {
            ctn_sb_free(&q);
            return 2;
        }
    }
    if (db == NULL || q.len == 0 || q.oom) {
        fprintf(stderr, "catena search: %s\n",
                db == NULL ? "--db KB.sqlite is required" : "give the query");
        search_usage(stderr);
        ctn_sb_free(&q);
        return 2;
    }
    if (mode < 0) mode = embed != NULL ? CTN_RETRIEVE_HYBRID : CTN_RETRIEVE_BM25;
    so.mode = (ctn_retrieve_mode)mode;
    so.k = (size_t)k;
    /* Each list fetches more than k for the fusion or MMR to choose from. */
    so.fetch_k = fetch_k > 0 ? (size_t)fetch_k : (size_t)(k * 4 > 50 ? k * 4 : 50);
    char err[512] = "";
    if (fetch_k > 0 && fetch_k < k) {
        fprintf(stderr, "catena search: --fetch-k %ld is under -k %ld\n", fetch_k, k);
        ctn_sb_free(&q);
        return 2;
    }
    if (ctn_search_check(&so, err, sizeof err) < 0) {
        fprintf(stderr, "catena search: %s\n", err);
        ctn_sb_free(&q);
        return 2;
    }
    if (mode != CTN_RETRIEVE_BM25 && embed == NULL) {
        fprintf(stderr, "catena search: --mode %s needs the collection's model: --embed "
                        "MODEL.gguf\n", mode == CTN_RETRIEVE_VECTOR ? "vector" : "hybrid");
        ctn_sb_free(&q);
        return 2;
    }
    ctn_kb_filter *filter = NULL;
    if (filter_json != NULL) {
        ctn_val *fv = NULL;
        int rc = ctn_json_parse(filter_json, strlen(filter_json), &fv, err, sizeof err);
        if (rc == 0) rc = ctn_kb_filter_new(fv, &filter, err, sizeof err);
        ctn_val_unref(fv);
        if (rc < 0) {
            fprintf(stderr, "catena search: --filter: %s\n", err);
            ctn_sb_free(&q);
            return 2;
        }
        so.bm25.filter = filter;
    }
    ctn_kb *kb = NULL;
    ctn_kb_coll c;
    int status = 1;
    embed_out eo = {0};
    ctn_kb_hit *out = malloc(so.k * sizeof *out);
    bool reading = false;
    if (out == NULL) {
        fprintf(stderr, "catena search: out of memory\n");
        goto done;
    }
    if (ctn_kb_open(db, CTN_KB_READONLY, &kb, err, sizeof err) < 0 ||
        ctn_kb_collection(kb, coll, NULL, &c, err, sizeof err) < 0) {
        fprintf(stderr, "catena search: %s\n", err);
        goto done;
    }
    if (mode != CTN_RETRIEVE_BM25 &&
        embed_query(embed, &c, (int)threads, pooling, q.p, &eo) != 0)
        goto done;
    size_t n = 0;
    const char *text = q.p;
    const size_t len = q.len;
    if (ctn_kb_read_begin(kb, err, sizeof err) < 0 ||
        (reading = true, ctn_kb_search(kb, &c, NULL, &so, 1, &text, &len, eo.vec, out, &n, err,
                                        sizeof err)) < 0) {
        fprintf(stderr, "catena search: %s\n", err);
        goto done;
    }
    status = print_hits(kb, &c, out, n, json);
done:
    if (reading) ctn_kb_read_end(kb);
    free(out);
    free(eo.vec);
    ctn_kb_close(kb);
    ctn_kb_filter_free(filter);
    ctn_sb_free(&q);
    return status;
}
