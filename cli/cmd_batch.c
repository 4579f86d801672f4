/*
 * `catena batch`: many prompts, one JSON object per line, run through one shared generation
 * engine (engine/gen.h: continuous batching), with one JSON result per prompt written to
 * stdout in input order.
 *
 * The whole file is read and checked before the model is loaded, so a bad line costs
 * nothing and nothing runs. The main thread submits requests (at most --concurrency at a
 * time), waits on a condition variable, and writes each result as soon as it and every
 * result before it are done; the engine thread's callbacks fill the results.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batch_line.h"
#include "cli.h"
#include "commands.h"
#include "engine.h" /* the engine layer, through its public header */

#define MAX_RUNNING_LIMIT 4096 /* ctn_gen_new's limit on max_running */

static int usage(FILE *f) {
    fprintf(f,
            "usage: catena batch -m MODEL.gguf --prompts FILE.jsonl [options]\n"
            "  Runs every prompt of FILE (- for stdin) through one engine that batches them,\n"
            "  and prints one JSON result per prompt, in input order:\n"
            "    {\"text\", \"ids\", \"finish_reason\", \"prompt_tokens\", \"completion_tokens\"}\n"
            "  (\"error\" too when finish_reason is \"error\").\n"
            "  Each non-empty line of FILE is a JSON object:\n"
            "    \"prompt\"          string, required, not empty\n"
            "    \"max_tokens\"      integer >= 0 (default %d; null: until end of text,\n"
            "                      a stop string or the context is full)\n"
            "    \"temperature\"     number >= 0 (default 0 = greedy)\n"
            "    \"seed\"            integer >= 0 (default: random)\n"
            "    \"top_k\"           integer >= 0 (default 40; 0 = off)\n"
            "    \"top_p\"           number in 0..1 (default 0.95; 1 = off)\n"
            "    \"min_p\"           number in 0..1 (default 0.05; 0 = off)\n"
            "    \"repeat_penalty\"  number > 0 (default 1 = off)\n"
            "    \"stop\"            string or array of strings, never printed\n"
            "    \"ignore_eos\"      boolean (default false)\n"
            "    \"lora\"            string: a LoRA adapter (PEFT folder or GGUF LoRA file),\n"
            "                      loaded once per path; one batch may mix any of them\n"
            "    \"lora_scale\"      number (default 1; 0 = the base model)\n"
            "    \"grammar\"         string: a GBNF grammar the output follows\n"
            "    \"json_schema\"     object: a JSON Schema the output is valid for\n"
            "  --concurrency N        requests in the engine at once (default: 64)\n"
            "  --kv-memory SIZE       KV cache bytes, or with K, M, G (KiB, MiB, GiB)\n"
            "                         (default: a full context per running request, <= 1G)\n"
            "  -c, --ctx N            context length per request (default: the model's,\n"
            "                         at most 4096)\n"
            "  -t, --threads N        threads (default: all CPUs this process may use)\n"
            "  --step-tokens N        tokens per engine step (default 512)\n"
            "  --kv-f32               keep the KV cache in F32 (default F16)\n"
            "  A summary goes to stderr at the end. Bad lines are errors naming FILE:LINE.\n",
            CTN__BATCH_DEFAULT_MAX_TOKENS);
    return f == stderr ? 2 : 0;
}

/* ---- the prompts file ------------------------------------------------------------------ */

typedef struct {
    long line; /* 1-based line number in the file */
    ctn__batch_req req;
    int32_t adapter; /* the id of req.lora in the engine, once loaded */
} job;

static void job_close(job *j) {
    ctn__batch_req_close(&j->req);
}

/*
 * Parses every non-empty line of text (NUL-terminated; modified in place). Returns 0 with
 * the jobs in *jobs, or 1 after printing "catena batch: NAME:LINE: reason".
 */
static int parse_file(char *text, const char *name, job **jobs, size_t *n_jobs) {
    size_t n = 0, cap = 0;
    job *js = NULL;
    long line = 0;
    for (char *p = text; *p != '\0';) {
        char *nl = strchr(p, '\n');
        char *next = nl != NULL ? nl + 1 : p + strlen(p);
        if (nl != NULL) *nl = '\0';
        line++;
        if (strspn(p, " \t\r") != strlen(p)) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                job *g = realloc(js, nc * sizeof *g);
                if (g == NULL) {
                    fprintf(stderr, "catena batch: out of memory\n");
                    goto fail;
                }
                js = g, cap = nc;
            }
            char err[256];
            js[n] = (job){.line = line};
            int rc = ctn__batch_req_parse(p, &js[n].req, err, sizeof err);
            n++;
            if (rc < 0) {
                fprintf(stderr, "catena batch: %s:%ld: %s\n", name, line, err);
                goto fail;
            }
        }
        p = next;
    }
    if (n == 0) {
        fprintf(stderr, "catena batch: %s: no prompts\n", name);
        goto fail;
    }
    *jobs = js;
    *n_jobs = n;
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        job_close(&js[i]);
    free(js);
    return 1;
}

/* ---- results --------------------------------------------------------------------------- */

typedef struct batch batch;

typedef struct {
    batch *b;
    /* Written by the engine thread's callbacks until done; read by the main thread only
     * after it has seen done under the lock (which orders the two). */
    char *text;
    size_t len, cap;
    int32_t *ids;
    size_t n_ids, cap_ids;
    bool oom;
    /* Under the lock. */
    bool done;
    ctn_finish finish;
    int64_t prompt_tokens, completion_tokens;
    char *error; /* owned; CTN_FINISH_ERROR */
} result;

struct batch {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int in_flight; /* submitted, not done */
    ctn_gen *e;
};

static bool append(result *r, const char *s, size_t n) {
    if (n == 0) return true;
    if (r->len + n + 1 > r->cap) {
        size_t nc = r->cap ? r->cap : 256;
        while (nc < r->len + n + 1)
            nc *= 2;
        char *t = realloc(r->text, nc);
        if (t == NULL) return false;
        r->text = t, r->cap = nc;
    }
    memcpy(r->text + r->len, s, n);
    r->len += n;
    return true;
}

static void on_token(void *ud, const ctn_gen_token *tk) {
    const int32_t token = tk->token;
    const char *text = tk->text;
    const size_t len = tk->len;
    result *r = ud;
    if (r->oom) return;
    if (r->n_ids == r->cap_ids) {
        size_t nc = r->cap_ids ? r->cap_ids * 2 : 64;
        int32_t *t = realloc(r->ids, nc * sizeof *t);
        if (t == NULL) {
            r->oom = true;
        } else {
            r->ids = t, r->cap_ids = nc;
        }
    }
    if (!r->oom) r->ids[r->n_ids++] = token;
    if (r->oom || (text != NULL && !append(r, text, len))) {
        r->oom = true;
        ctn_gen_cancel(r->b->e, tk->id); /* callbacks may cancel */
    }
}

/* Engine thread, or the main thread inside ctn_gen_free for a request that never started. */
static void on_done(void *ud, int64_t id, const ctn_gen_result *res) {
    (void)id;
    result *r = ud;
    if (!r->oom && res->text != NULL && !append(r, res->text, res->text_len)) r->oom = true;
    char *error = NULL;
    if (r->oom)
        error = strdup("out of memory");
    else if (res->finish == CTN_FINISH_ERROR)
        error = strdup(res->error != NULL ? res->error : "unknown error");
    pthread_mutex_lock(&r->b->lock);
    r->finish = r->oom ? CTN_FINISH_ERROR : res->finish;
    r->prompt_tokens = res->prompt_tokens;
    r->completion_tokens = res->completion_tokens;
    r->error = error;
    r->done = true;
    r->b->in_flight--;
    pthread_cond_signal(&r->b->cond);
    pthread_mutex_unlock(&r->b->lock);
}

/*
 * Writes bytes as a JSON string. Quotes, backslashes and control characters are escaped;
 * bytes that are not valid UTF-8 (the model may make any bytes) become U+FFFD, one for each
 * maximal ill-formed subsequence as Unicode recommends, so the line is always valid JSON.
 */
static void json_bytes(FILE *f, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        if (c < 0x80) {
            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c == '\n')
                fputs("\\n", f);
            else if (c == '\t')
                fputs("\\t", f);
            else if (c == '\r')
                fputs("\\r", f);
            else if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc((int)c, f);
            i++;
            continue;
        }
        /* Expected length and the range of the second byte (no overlongs, surrogates or
         * code points above U+10FFFF). */
        size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        size_t k = 1;
        while (len > 0 && k < len && i + k < n) {
            unsigned b = p[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
            k++;
        }
        if (len > 0 && k == len) {
            fwrite(p + i, 1, len, f);
        } else {
            fputs("\\ufffd", f);
        }
        i += k;
    }
    fputc('"', f);
}

static void write_result(FILE *f, const result *r) {
    fputs("{\"text\":", f);
    json_bytes(f, r->text != NULL ? r->text : "", r->len);
    fputs(",\"ids\":[", f);
    for (size_t i = 0; i < r->n_ids; i++)
        fprintf(f, i ? ",%d" : "%d", (int)r->ids[i]);
    fprintf(f,
            "],\"finish_reason\":\"%s\",\"prompt_tokens\":%" PRId64
            ",\"completion_tokens\":%" PRId64,
            ctn_finish_name(r->finish), r->prompt_tokens, r->completion_tokens);
    if (r->finish == CTN_FINISH_ERROR) {
        fputs(",\"error\":", f);
        const char *e = r->error != NULL ? r->error : "out of memory";
        json_bytes(f, e, strlen(e));
    }
    fputs("}\n", f);
}

/* ---- the command ----------------------------------------------------------------------- */

typedef struct {
    const char *model, *prompts;
    long concurrency;
    ctn_settings set; /* the model's settings (docs/settings.md) */
    bool kv_f32;
} options;

/* The options that are settings, and their keys. */
static const struct {
    const char *flag, *flag2, *key;
} setting_flags[] = {
    {"-c", "--ctx", "ctx"},
    {"-t", "--threads", "threads"},
    {"--kv-memory", NULL, "kv_memory"},
    {"--step-tokens", NULL, "step_tokens"},
};

static int parse_args(int argc, char **argv, options *o) {
    ctn_settings_init(&o->set);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool bad = false;
        const char *key = NULL;
        for (size_t k = 0; k < sizeof setting_flags / sizeof setting_flags[0]; k++)
            if (!strcmp(a, setting_flags[k].flag) ||
                (setting_flags[k].flag2 != NULL && !strcmp(a, setting_flags[k].flag2)))
                key = setting_flags[k].key;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 1;
        if (!strcmp(a, "--kv-f32")) {
            o->kv_f32 = true;
            continue;
        }
        if (val == NULL) {
            fprintf(stderr, "catena batch: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return -1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o->model = val;
        } else if (!strcmp(a, "--prompts")) {
            o->prompts = val;
        } else if (!strcmp(a, "--concurrency")) {
            bad = ctn__cli_parse_long(val, 1, 1L << 30, &o->concurrency) < 0;
        } else if (key != NULL) {
            char err[512];
            if (ctn_settings_parse(&o->set, key, val, err, sizeof err) < 0) {
                fprintf(stderr, "catena batch: bad value '%s' for %s: %s\n", val, a, err);
                return -1;
            }
        } else {
            fprintf(stderr, "catena batch: unknown argument '%s'\n", a);
            usage(stderr);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "catena batch: bad value '%s' for %s\n", val, a);
            return -1;
        }
        i++;
    }
    if (o->model == NULL) {
        fprintf(stderr, "catena batch: no model given (-m MODEL.gguf)\n");
        usage(stderr);
        return -1;
    }
    if (o->prompts == NULL) {
        fprintf(stderr, "catena batch: no prompts given (--prompts FILE.jsonl)\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

static int run(const options *o, job *jobs, size_t n);

int ctn_cmd_batch(int argc, char **argv) {
    options o = {0};
    int pr = parse_args(argc, argv, &o);
    if (pr == 1) return usage(stdout);
    if (pr < 0) return 2;

    const bool is_stdin = !strcmp(o.prompts, "-");
    const char *name = is_stdin ? "<stdin>" : o.prompts;
    FILE *pf = is_stdin ? stdin : fopen(o.prompts, "rb");
    char *text = NULL;
    size_t len = 0;
    int rc = pf == NULL ? CTN_EIO : ctn__cli_read_all(pf, &text, &len);
    if (pf != NULL && !is_stdin) fclose(pf);
    if (rc < 0) {
        fprintf(stderr, "catena batch: reading %s: %s\n", name,
                pf == NULL ? strerror(errno) : ctn_strerror(rc));
        return 1;
    }
    if (strlen(text) != len) {
        long line = 1;
        for (size_t i = 0; i < strlen(text); i++)
            line += text[i] == '\n';
        fprintf(stderr, "catena batch: %s:%ld: a NUL byte\n", name, line);
        free(text);
        return 1;
    }
    job *jobs = NULL;
    size_t n = 0;
    int status = parse_file(text, name, &jobs, &n);
    free(text);
    if (status != 0) return status;
    status = run(&o, jobs, n);
    for (size_t i = 0; i < n; i++)
        job_close(&jobs[i]);
    free(jobs);
    return status;
}

static int run(const options *o, job *jobs, size_t n) {
    char err[512];
    ctn_gguf *g = NULL;
    ctn_vocab *v = NULL;
    ctn_model *m = NULL;
    result *res = NULL;
    batch b = {.in_flight = 0};
    bool have_sync = false;
    int status = 1;

    if (ctn__cli_load_vocab("batch", o->model, &g, &v)) return 1;
    if (ctn_model_load(&m, g, err, sizeof err) < 0) {
        fprintf(stderr, "catena batch: %s\n", err);
        goto done;
    }
    res = calloc(n, sizeof *res);
    if (res == NULL) {
        fprintf(stderr, "catena batch: out of memory\n");
        goto done;
    }
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);
    have_sync = true;

    /* 64 by default, as the engine: each running request holds a row of logits. */
    const size_t want_conc = o->concurrency > 0 ? (size_t)o->concurrency : 64;
    const size_t conc = want_conc < n ? want_conc : n;
    ctn_gen_params p = {0};
    p.fwd.n_threads = o->set.threads;
    p.fwd.n_ctx = o->set.ctx;
    p.fwd.kv_memory = (size_t)o->set.kv_memory;
    p.fwd.kv_f32 = o->kv_f32;
    p.fwd.kv_block = 16;
    p.step_tokens = o->set.step_tokens;
    p.max_running = conc < MAX_RUNNING_LIMIT ? (int)conc : MAX_RUNNING_LIMIT;
    if (ctn_gen_new(&b.e, m, v, &p, err, sizeof err) < 0) {
        fprintf(stderr, "catena batch: %s\n", err);
        goto done;
    }
    /* Adapters: each path loaded once, before any request runs. */
    for (size_t i = 0; i < n; i++) {
        job *j = &jobs[i];
        if (j->req.set.lora == NULL) continue;
        for (size_t k = 0; k < i && j->adapter == 0; k++)
            if (jobs[k].req.set.lora != NULL && strcmp(jobs[k].req.set.lora, j->req.set.lora) == 0)
                j->adapter = jobs[k].adapter;
        if (j->adapter != 0) continue;
        ctn_lora *a = NULL;
        if (ctn_lora_load(m, j->req.set.lora, 0, &a, err, sizeof err) < 0 ||
            (j->adapter = ctn_gen_lora_add(b.e, a, err, sizeof err)) < 0) {
            fprintf(stderr, "catena batch: %s:%ld: %s\n", o->prompts, j->line, err);
            goto done;
        }
    }
    /* Requests without a seed draw one here: different for each, random for each run. */
    const uint64_t seed0 = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    const double t0 = ctn__cli_now_s();
    size_t next_submit = 0, next_out = 0;
    bool write_failed = false;
    pthread_mutex_lock(&b.lock);
    while (next_out < n && !write_failed) {
        /* Submitting takes the engine's lock, and callbacks take ours: never both at once. */
        while (next_submit < n && (size_t)b.in_flight < conc) {
            const size_t i = next_submit++;
            const job *j = &jobs[i];
            result *r = &res[i];
            r->b = &b;
            b.in_flight++;
            pthread_mutex_unlock(&b.lock);
            ctn_gen_request q = ctn_gen_request_default();
            q.prompt = j->req.prompt;
            ctn_settings_apply(&j->req.set, &q);
            if (!ctn_settings_given(&j->req.set, CTN_SET_SEED))
                q.sampling.seed = seed0 + (uint64_t)i * 0x9E3779B97F4A7C15ull;
            q.adapter = j->adapter;
            q.adapter_scale = j->req.set.lora_scale;
            q.on_token = on_token;
            q.on_done = on_done;
            q.ud = r;
            int64_t id = ctn_gen_submit(b.e, &q, err, sizeof err);
            char *error = id < 0 ? strdup(err) : NULL;
            pthread_mutex_lock(&b.lock);
            if (id < 0) { /* no callback comes: the request fails here */
                r->finish = CTN_FINISH_ERROR;
                r->error = error;
                r->done = true;
                b.in_flight--;
            }
        }
        if (!res[next_out].done) {
            pthread_cond_wait(&b.cond, &b.lock);
            continue;
        }
        pthread_mutex_unlock(&b.lock);
        result *r = &res[next_out];
        write_result(stdout, r);
        if (fflush(stdout) != 0 || ferror(stdout)) write_failed = true;
        free(r->text), free(r->ids);
        r->text = NULL, r->ids = NULL;
        next_out++;
        pthread_mutex_lock(&b.lock);
    }
    pthread_mutex_unlock(&b.lock);
    const double wall = ctn__cli_now_s() - t0;
    if (write_failed) {
        fprintf(stderr, "catena batch: writing the results: %s\n", strerror(errno));
        goto done;
    }

    ctn_gen_stats st;
    ctn_gen_get_stats(b.e, &st);
    int64_t n_prompt = 0, n_gen = 0;
    size_t n_err = 0;
    for (size_t i = 0; i < n; i++) {
        n_prompt += res[i].prompt_tokens;
        n_gen += res[i].completion_tokens;
        if (res[i].finish == CTN_FINISH_ERROR) {
            if (n_err++ == 0)
                fprintf(stderr, "catena batch: line %ld: %s\n", jobs[i].line,
                        res[i].error != NULL ? res[i].error : "out of memory");
        }
    }
    fprintf(stderr,
            "catena batch: %zu requests, %" PRId64 " prompt tokens, %" PRId64
            " generated tokens in %.3f s (%.1f tok/s generated); mean time to first token "
            "%.3f s; %" PRId64 " steps, %" PRId64 " preemptions, %d KV blocks\n",
            n, n_prompt, n_gen, wall, wall > 0 ? (double)n_gen / wall : 0.0, st.ttft_mean_s,
            st.steps, st.preemptions, (int)st.kv_blocks);
    if (n_err > 0) {
        fprintf(stderr, "catena batch: %zu of %zu requests failed\n", n_err, n);
        goto done;
    }
    status = 0;
done:
    ctn_gen_free(b.e); /* on_done for anything left, on this thread: b's lock is free */
    if (res != NULL)
        for (size_t i = 0; i < n; i++) {
            free(res[i].text);
            free(res[i].ids);
            free(res[i].error);
        }
    free(res);
    if (have_sync) {
        pthread_mutex_destroy(&b.lock);
        pthread_cond_destroy(&b.cond);
    }
    ctn_model_free(m);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    return status;
}
