/*
 * catena ingest: files into a knowledge base (stdlib/ingest.h), with a progress bar on a
 * terminal and a one-line summary; catena kb: statistics, listing, removal and a check of
 * a knowledge base file.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "cli.h"
#include "commands.h"
#include "error.h"
#include "ingest.h"
#include "kb.h"
#include "lm.h"

enum { MAX_PATHS = 4096, MAX_LABELS = 16, MAX_META = 16 };

static void ingest_usage(FILE *f) {
    fprintf(f,
            "usage: catena ingest PATH... --db KB.sqlite [options]\n"
            "  Loads files (.md .txt .json .jsonl .pdf; folders recursively), splits them,\n"
            "  embeds the chunks and keeps them in the knowledge base; unchanged files are\n"
            "  skipped, changed ones replaced.\n"
            "  --db FILE             the knowledge base (created when missing)\n"
            "  --collection NAME     collection (default: default)\n"
            "  --embed MODEL.gguf    embed every chunk with this model (else: text only)\n"
            "  --pooling mean|cls|last  override the model's pooling\n"
            "  --dtype f32|f16|int8  how vectors are stored (default f32)\n"
            "  --splitter recursive|markdown|page|token  (default recursive)\n"
            "  --chunk-size N        (default 4000; in tokens for --length tokens)\n"
            "  --chunk-overlap N     (default 200)\n"
            "  --length chars|tokens chunk lengths in code points or in the --embed model's\n"
            "                        tokens (default chars; the token splitter uses tokens)\n"
            "  --glob PATTERN        files of folders to take (default: known extensions)\n"
            "  --json-text POINTER   the text of each JSON record (/body, /items/*/text)\n"
            "  --json-meta POINTER   a field kept as metadata (repeatable)\n"
            "  --prune               remove documents of the named folders whose files are gone\n"
            "  --label LABEL         label of a new collection (repeatable)\n"
            "  --contextualize MODEL.gguf  a model writes each chunk a one-line context in its\n"
            "                        document, put before the chunk for embedding and search\n"
            "                        (the document is prefilled once, each chunk from a fork)\n"
            "  --context-tokens N    at most N tokens per context (default 64)\n"
            "  -t, --threads N       threads of the embedding engine\n"
            "  -q, --quiet           no per-file lines or progress bar\n");
}

typedef struct {
    bool tty, quiet;
    double t0;
    int drawn; /* a progress line is on the terminal */
    ctn_ingest *ing;
    int rc;
    char msg[512];
    ctn_ingest_progress final;
    uv_signal_t sig;
    bool interrupted;
} ingest_ui;

static void clear_bar(ingest_ui *u) {
    if (u->drawn) fprintf(stderr, "\r\033[K");
    u->drawn = 0;
}

static void on_progress(void *ud, const ctn_ingest_progress *p) {
    ingest_ui *u = ud;
    if (!u->tty || u->quiet) return;
    double tps = p->elapsed_s > 0 ? (double)p->embed_tokens / p->elapsed_s : 0;
    char eta[32] = "";
    if (!p->listing && p->files_done > 0 && p->files_done < p->files_total) {
        double left = p->elapsed_s * (double)(p->files_total - p->files_done) /
                      (double)p->files_done;
        snprintf(eta, sizeof eta, "  ETA %d:%02d", (int)left / 60, (int)left % 60);
    }
    fprintf(stderr, "\r\033[Kfiles %lld/%lld%s  pages %lld  chunks %lld  embedded %lld  %.0f tok/s%s",
            (long long)p->files_done, (long long)p->files_total, p->listing ? "+" : "",
            (long long)p->pages, (long long)p->chunks, (long long)p->embedded, tps, eta);
    u->drawn = 1;
}

static void on_file(void *ud, const char *path, const char *status, const char *msg) {
    ingest_ui *u = ud;
    bool bad = strcmp(status, "failed") == 0 || strcmp(status, "warning") == 0;
    if (u->quiet && !bad) return;
    clear_bar(u);
    if (bad) fprintf(stderr, "%s: %s\n", status, msg[0] ? msg : path);
    else if (strcmp(status, "skipped") != 0) fprintf(stderr, "%s %s\n", status, path);
}

static void on_done(void *ud, const ctn_ingest_progress *p, int rc, const char *msg) {
    ingest_ui *u = ud;
    clear_bar(u);
    u->final = *p;
    u->rc = rc;
    snprintf(u->msg, sizeof u->msg, "%s", msg);
    u->ing = NULL;
    uv_close((uv_handle_t *)&u->sig, NULL);
}

static void on_sigint(uv_signal_t *s, int signum) {
    ingest_ui *u = s->data;
    (void)signum;
    u->interrupted = true;
    if (u->ing != NULL) ctn_ingest_cancel(u->ing);
}

static int parse_pooling(const char *s) {
    if (!strcmp(s, "mean")) return CTN_POOL_MEAN;
    if (!strcmp(s, "cls")) return CTN_POOL_CLS;
    if (!strcmp(s, "last")) return CTN_POOL_LAST;
    return -1;
}

/* Runs the loop until the ingest is over, then lets the model close. */
static int run_ingest(ctn_kb *kb, ctn_ingest_opts *o, const char *embed_path,
                      const char *ctx_path, int threads, bool tokens, bool quiet) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512] = "";
    ctn_lm *lm = NULL, *cm = NULL;
    int status = 1;
    ctn_lm_params lp = {.threads = threads};
    if (embed_path != NULL) {
        if (ctn_lm_open(&loop, embed_path, &lp, &lm, err, sizeof err) < 0) {
            fprintf(stderr, "catena ingest: %s\n", err);
            goto out;
        }
        o->embed = lm;
    }
    /* The same file is the same engine (one model per loop and file). */
    if (ctx_path != NULL) {
        if (ctn_lm_open(&loop, ctx_path, &lp, &cm, err, sizeof err) < 0) {
            fprintf(stderr, "catena ingest: --contextualize: %s\n", err);
            goto out;
        }
        o->contextualize = cm;
    }
    if (tokens) {
        if (lm == NULL) {
            fprintf(stderr, "catena ingest: lengths in tokens need a tokenizer: name the model "
                            "with --embed\n");
            goto out;
        }
        o->split.tokens = ctn_split_vocab_tokens;
        o->split.tokens_ud = (void *)ctn_lm_vocab(lm);
    }
    ingest_ui u = {.tty = isatty(2) != 0, .quiet = quiet};
    o->on_progress = on_progress;
    o->on_file = on_file;
    o->on_done = on_done;
    o->ud = &u;
    uv_signal_init(&loop, &u.sig);
    u.sig.data = &u;
    uv_signal_start(&u.sig, on_sigint, SIGINT);
    if (ctn_ingest_start(&loop, kb, o, &u.ing, err, sizeof err) < 0) {
        fprintf(stderr, "catena ingest: %s\n", err);
        uv_close((uv_handle_t *)&u.sig, NULL);
        goto out;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    const ctn_ingest_progress *p = &u.final;
    double tps = p->elapsed_s > 0 ? (double)p->embed_tokens / p->elapsed_s : 0;
    printf("ingest: %lld files: %lld added, %lld replaced, %lld skipped, %lld failed, %lld "
           "removed; %lld chunks",
           (long long)p->files_total, (long long)p->added, (long long)p->replaced,
           (long long)p->skipped, (long long)p->failed, (long long)p->removed,
           (long long)p->chunks);
    if (lm != NULL)
        printf(", %lld embedded (%lld tokens, %.0f tokens/s)", (long long)p->embedded,
               (long long)p->embed_tokens, tps);
    printf(" in %.2f s\n", p->elapsed_s);
    if (cm != NULL)
        printf("contexts: %lld chunks, %lld tokens written; prefill %lld tokens computed, "
               "%lld one request per chunk would compute (%.1fx fewer)\n",
               (long long)p->contextualized, (long long)p->context_tokens,
               (long long)p->context_prefill, (long long)p->context_naive,
               p->context_prefill > 0 ? (double)p->context_naive / (double)p->context_prefill
                                      : 0.0);
    fflush(stdout);
    if (u.rc < 0 && u.rc != CTN_ECANCELED) fprintf(stderr, "catena ingest: %s\n", u.msg);
    status = u.interrupted ? 130 : u.rc < 0 || p->failed > 0 ? 1 : 0;
out:
    ctn_lm_close(lm);
    ctn_lm_close(cm);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return status;
}

int ctn_cmd_ingest(int argc, char **argv) {
    static const char *paths[MAX_PATHS], *labels[MAX_LABELS], *meta[MAX_META];
    size_t np = 0, nl = 0, nm = 0;
    const char *db = NULL, *embed = NULL, *ctx_model = NULL;
    bool tokens = false, quiet = false, length_set = false;
    long threads = 0;
    ctn_ingest_opts o = ctn_ingest_defaults();
    ctn_json_sel sel = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
#define NEED_VALUE                                                                           \
    if (v == NULL) {                                                                         \
        fprintf(stderr, "catena ingest: %s needs a value\n", a);                            \
        return 2;                                                                            \
    }                                                                                        \
    i++
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            ingest_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--db")) {
            NEED_VALUE;
            db = v;
        } else if (!strcmp(a, "--collection")) {
            NEED_VALUE;
            o.collection = v;
        } else if (!strcmp(a, "--embed")) {
            NEED_VALUE;
            embed = v;
        } else if (!strcmp(a, "--pooling")) {
            NEED_VALUE;
            if ((o.pooling = parse_pooling(v)) < 0) {
                fprintf(stderr, "catena ingest: --pooling: '%s' is not mean, cls or last\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--dtype")) {
            NEED_VALUE;
            if (!strcmp(v, "f32")) o.dtype = CTN_KB_F32;
            else if (!strcmp(v, "f16")) o.dtype = CTN_KB_F16;
            else if (!strcmp(v, "int8")) o.dtype = CTN_KB_INT8;
            else {
                fprintf(stderr, "catena ingest: --dtype: '%s' is not f32, f16 or int8\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--splitter")) {
            NEED_VALUE;
            int k = ctn_split_parse(v);
            if (k < 0) {
                fprintf(stderr, "catena ingest: --splitter: '%s' is not recursive, markdown, "
                                "page or token\n", v);
                return 2;
            }
            o.splitter = (ctn_split_kind)k;
        } else if (!strcmp(a, "--chunk-size") || !strcmp(a, "--chunk-overlap")) {
            NEED_VALUE;
            if (ctn__cli_parse_long(v, 0, 1L << 30, &n) < 0) {
                fprintf(stderr, "catena ingest: %s: '%s' is not a whole number >= 0\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--chunk-size")) o.split.chunk_size = (size_t)n;
            else o.split.chunk_overlap = (size_t)n;
        } else if (!strcmp(a, "--length")) {
            NEED_VALUE;
            if (strcmp(v, "chars") && strcmp(v, "tokens")) {
                fprintf(stderr, "catena ingest: --length: '%s' is not chars or tokens\n", v);
                return 2;
            }
            tokens = !strcmp(v, "tokens");
            length_set = true;
        } else if (!strcmp(a, "--glob")) {
            NEED_VALUE;
            o.glob = v;
        } else if (!strcmp(a, "--json-text")) {
            NEED_VALUE;
            sel.text = v;
            o.json = &sel;
        } else if (!strcmp(a, "--json-meta")) {
            NEED_VALUE;
            if (nm == MAX_META) {
                fprintf(stderr, "catena ingest: at most %d --json-meta\n", MAX_META);
                return 2;
            }
            meta[nm++] = v;
            o.json = &sel;
        } else if (!strcmp(a, "--label")) {
            NEED_VALUE;
            if (nl == MAX_LABELS) {
                fprintf(stderr, "catena ingest: at most %d labels\n", MAX_LABELS);
                return 2;
            }
            labels[nl++] = v;
        } else if (!strcmp(a, "--prune")) {
            o.prune = true;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NEED_VALUE;
            if (ctn__cli_parse_long(v, 1, 1024, &threads) < 0) {
                fprintf(stderr, "catena ingest: %s: '%s' is not 1..1024\n", a, v);
                return 2;
            }
        } else if (!strcmp(a, "--contextualize")) {
            NEED_VALUE;
            ctx_model = v;
        } else if (!strcmp(a, "--context-tokens")) {
            NEED_VALUE;
            long ct;
            if (ctn__cli_parse_long(v, 1, 1024, &ct) < 0) {
                fprintf(stderr, "catena ingest: %s: '%s' is not 1..1024\n", a, v);
                return 2;
            }
            o.context_tokens = (int)ct;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = true;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "catena ingest: unknown option '%s' (see catena ingest --help)\n", a);
            return 2;
        } else {
            if (np == MAX_PATHS) {
                fprintf(stderr, "catena ingest: at most %d paths (name their folder)\n",
                        MAX_PATHS);
                return 2;
            }
            paths[np++] = a;
        }
#undef NEED_VALUE
    }
    if (db == NULL || np == 0) {
        fprintf(stderr, "catena ingest: %s\n", db == NULL ? "--db KB.sqlite is required"
                                                          : "name files or folders to ingest");
        ingest_usage(stderr);
        return 2;
    }
    if (o.splitter == CTN_SPLIT_TOKEN && !length_set) tokens = true;
    if (o.splitter == CTN_SPLIT_TOKEN && !tokens) {
        fprintf(stderr, "catena ingest: the token splitter measures in tokens (--length "
                        "tokens)\n");
        return 2;
    }
    o.paths = paths;
    o.n_paths = np;
    o.labels = labels;
    o.n_labels = nl;
    sel.meta_fields = meta;
    sel.n_meta_fields = nm;
    char err[512];
    /* Settings are checked before the model loads (a typo costs no load time); the token
     * callback is not set yet, so the token splitter's need for one is checked later. */
    ctn_split_opts chk = o.split;
    if (tokens) chk.tokens = ctn_split_vocab_tokens;
    if (ctn_split_check(o.splitter, &chk, err, sizeof err) < 0) {
        fprintf(stderr, "catena ingest: %s\n", err);
        return 2;
    }
    ctn_kb *kb;
    if (ctn_kb_open(db, 0, &kb, err, sizeof err) < 0) {
        fprintf(stderr, "catena ingest: %s\n", err);
        return 1;
    }
    int status = run_ingest(kb, &o, embed, ctx_model, (int)threads, tokens, quiet);
    ctn_kb_close(kb);
    return status;
}

/* ---- catena kb ---------------------------------------------------------------------------- */

static void kb_usage(FILE *f) {
    fprintf(f, "usage: catena kb stats|list|remove|check --db KB.sqlite [--collection NAME] "
               "[URI...]\n"
               "  stats    collections with their documents, chunks, embeddings and model\n"
               "  list     documents (uri, chunks, hash) of a collection or of all\n"
               "  remove   remove the documents named by URI from --collection (default:\n"
               "           default)\n"
               "  check    SQLite's integrity check and the full-text indexes' check\n");
}

static int print_stats(void *ud, const ctn_kb_coll_stats *s) {
    (void)ud;
    printf("%s: %lld documents, %lld chunks, %lld embeddings, %lld bytes of text", s->name,
           (long long)s->documents, (long long)s->chunks, (long long)s->embeddings,
           (long long)s->text_bytes);
    if (s->embed_model[0]) printf(", model %s (dimension %d)", s->embed_model, s->embed_dim);
    printf("\n");
    return 0;
}

static int print_doc(void *ud, const char *coll, const char *uri, const char *hash,
                     int64_t chunks, const char *meta) {
    (void)ud, (void)meta;
    printf("%s\t%s\t%lld chunks\t%s\n", coll, uri, (long long)chunks, hash);
    return 0;
}

int ctn_cmd_kb(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        kb_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1], *db = NULL, *coll = NULL;
    const char *uris[MAX_PATHS];
    size_t nu = 0;
    if (strcmp(sub, "stats") && strcmp(sub, "list") && strcmp(sub, "remove") &&
        strcmp(sub, "check")) {
        fprintf(stderr, "catena kb: unknown subcommand '%s'\n", sub);
        kb_usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if ((!strcmp(argv[i], "--db") || !strcmp(argv[i], "--collection")) && i + 1 < argc) {
            if (!strcmp(argv[i], "--db")) db = argv[++i];
            else coll = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "catena kb: unknown option or missing value: '%s'\n", argv[i]);
            return 2;
        } else if (!strcmp(sub, "remove") && nu < MAX_PATHS) {
            uris[nu++] = argv[i];
        } else {
            fprintf(stderr, "catena kb %s: unexpected argument '%s'\n", sub, argv[i]);
            return 2;
        }
    }
    if (db == NULL) {
        fprintf(stderr, "catena kb %s: --db KB.sqlite is required\n", sub);
        return 2;
    }
    if (!strcmp(sub, "remove") && nu == 0) {
        fprintf(stderr, "catena kb remove: name the documents (their URIs, as kb list shows)\n");
        return 2;
    }
    char err[512];
    ctn_kb *kb;
    bool writes = !strcmp(sub, "remove") || !strcmp(sub, "check"); /* FTS5 checks are commands */
    if (access(db, F_OK) != 0) {
        fprintf(stderr, "catena kb %s: %s: no such file\n", sub, db);
        return 1;
    }
    if (ctn_kb_open(db, writes ? 0 : CTN_KB_READONLY, &kb, err, sizeof err) < 0) {
        fprintf(stderr, "catena kb %s: %s\n", sub, err);
        return 1;
    }
    int rc = 0, status = 0;
    ctn_kb_coll c;
    if (!strcmp(sub, "stats")) {
        rc = ctn_kb_stats(kb, print_stats, NULL, err, sizeof err);
    } else if (!strcmp(sub, "list")) {
        if (coll != NULL) rc = ctn_kb_collection(kb, coll, NULL, &c, err, sizeof err);
        if (rc == 0) rc = ctn_kb_list(kb, coll != NULL ? &c : NULL, print_doc, NULL, err, sizeof err);
    } else if (!strcmp(sub, "check")) {
        rc = ctn_kb_check(kb, err, sizeof err);
        if (rc == 0) printf("%s: ok\n", db);
    } else {
        rc = ctn_kb_collection(kb, coll != NULL ? coll : "default", NULL, &c, err, sizeof err);
        for (size_t i = 0; rc == 0 && i < nu; i++) {
            int removed = 0;
            rc = ctn_kb_remove(kb, &c, uris[i], &removed, err, sizeof err);
            if (rc == 0 && removed) printf("removed %s\n", uris[i]);
            else if (rc == 0) {
                fprintf(stderr, "catena kb remove: %s: not in collection '%s'\n", uris[i],
                        c.name);
                status = 1;
            }
        }
    }
    if (rc < 0) {
        fprintf(stderr, "catena kb %s: %s\n", sub, err);
        status = 1;
    }
    ctn_kb_close(kb);
    return status;
}
