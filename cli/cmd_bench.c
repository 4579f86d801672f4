/*
 * `catena bench`: prefill and decode speed of the engine on a model, as one JSON line.
 *
 * The prompt is N token ids chosen without a tokenizer, id_i = 1 + (i * 7919) % (n_vocab - 1),
 * so that bench/llamacpp_gen.c feeds llama.cpp exactly the same ids. Prefill is one forward
 * pass over all N tokens up to the last token's logits; decode then generates gen-tokens
 * tokens one at a time, each fed the argmax of the previous logits. After a warm-up run that
 * is not counted, each of --reps runs starts from an empty KV cache, and the medians are
 * printed.
 *
 * --parallel P (P > 1) runs P sequences through the shared generation engine (engine/gen.h)
 * instead: sequence s gets the prompt id_i = 1 + ((i + 131 * s) * 7919) % (n_vocab - 1)
 * (s = 0 is the prompt above; bench/llamacpp_gen.c --parallel uses the same), greedy, EOS
 * ignored, gen-tokens tokens each, all P submitted at once into an engine with room for all
 * of them (max_running P, every prompt in one step, KV for P * (prompt + gen) positions, no
 * prefix cache, so each rep computes every prompt). Prefill is timed from the submission to
 * the moment every sequence has its first token; decode from then until every sequence has
 * its gen-tokens tokens. The first token of each sequence comes from prefill, so
 * decode_tok_s is the aggregate P * (gen-tokens - 1) / decode time, and prefill_tok_s is
 * P * prompt-tokens / prefill time.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend.h"
#include "cli.h"
#include "commands.h"
#include "forward.h"
#include "gen.h"
#include "lora.h"
#include "model.h"

static int usage(FILE *f) {
    fprintf(f, "usage: catena bench -m MODEL.gguf [--prompt-tokens N] [--gen-tokens N]\n"
               "                    [--threads N] [--reps R] [--parallel P] [--kv-f32]\n"
               "                    [--f32-act] [--lora A.gguf[,B.gguf...]]\n"
               "  Measures prefill (N prompt tokens in one batch, default 256) and decode\n"
               "  (default 64 tokens, greedy) and prints one JSON line with prefill_tok_s and\n"
               "  decode_tok_s (medians of R runs, default 3, after a warm-up run).\n"
               "  --parallel P (default 1) runs P sequences, each its own prompt, through the\n"
               "  batching engine; the rates are then aggregates over the P sequences (decode:\n"
               "  P * (gen - 1) tokens after every sequence has its first token).\n"
               "  --lora runs sequence s with adapter s mod count, all in the same batches, and\n"
               "  reports the adapters' load time and memory.\n"
               "  --f32-act (one sequence only) measures the exact products: F32 activations\n"
               "  against the dequantized weights (catena perplexity --f32-act).\n");
    return f == stderr ? 2 : 0;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Writes s as a JSON string (quotes, backslashes and control characters escaped). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static int32_t argmax(const float *v, int64_t n) {
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int32_t)i;
    return best;
}

/* One run: prefill then decode; the times of both. */
static int run_once(ctn_fwd *f, ctn_kv_seq *seq, const int32_t *prompt, int64_t n_prompt,
                    int64_t n_gen, float *logits, double *t_prefill, double *t_decode) {
    const int64_t n_vocab = ctn_fwd_model(f)->hp.n_vocab;
    ctn_kv_seq_clear(ctn_fwd_kv(f), seq);
    double t0 = ctn__cli_now_s();
    ctn_fwd_seg seg = {.seq = seq, .tokens = prompt, .n_tokens = n_prompt, .logits = true};
    if (ctn_fwd_run(f, &seg, 1, logits) < 0) return -1;
    double t1 = ctn__cli_now_s();
    for (int64_t i = 0; i < n_gen; i++) {
        int32_t next = argmax(logits, n_vocab);
        seg = (ctn_fwd_seg){.seq = seq, .tokens = &next, .n_tokens = 1, .logits = true};
        if (ctn_fwd_run(f, &seg, 1, logits) < 0) return -1;
    }
    double t2 = ctn__cli_now_s();
    *t_prefill = t1 - t0;
    *t_decode = t2 - t1;
    return 0;
}

/* ---- --parallel P: P sequences through the shared engine ----------------------------- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n_par;
    int64_t n_gen;
    int64_t *count;              /* (n_par) tokens each sequence has made */
    int n_first, n_full, n_done; /* sequences with a first token, all tokens, finished */
    double t_first, t_full, t_done;
    char error[256]; /* the first failure */
} par_run;

typedef struct {
    par_run *pr;
    int s;
    int32_t adapter; /* 0: the base model */
} par_seq;

static void par_token(void *ud, const ctn_gen_token *tk) {
    (void)tk;
    const par_seq *q = ud;
    par_run *pr = q->pr;
    const double t = ctn__cli_now_s();
    pthread_mutex_lock(&pr->lock);
    const int64_t c = ++pr->count[q->s];
    if (c == 1 && ++pr->n_first == pr->n_par) pr->t_first = t;
    if (c == pr->n_gen && ++pr->n_full == pr->n_par) pr->t_full = t;
    pthread_mutex_unlock(&pr->lock);
}

static void par_done(void *ud, int64_t id, const ctn_gen_result *res) {
    (void)id;
    const par_seq *q = ud;
    par_run *pr = q->pr;
    const double t = ctn__cli_now_s();
    pthread_mutex_lock(&pr->lock);
    if ((res->finish == CTN_FINISH_ERROR || res->finish == CTN_FINISH_CANCELLED ||
         pr->count[q->s] != pr->n_gen) &&
        pr->error[0] == '\0')
        snprintf(pr->error, sizeof pr->error, "sequence %d ended (%s) after %" PRId64 " tokens%s%s",
                 q->s, ctn_finish_name(res->finish), pr->count[q->s], res->error ? ": " : "",
                 res->error ? res->error : "");
    if (++pr->n_done == pr->n_par) pr->t_done = t;
    pthread_cond_signal(&pr->cond);
    pthread_mutex_unlock(&pr->lock);
}

/*
 * One run of P sequences (prompts: P rows of n_prompt ids): submits all, waits for all, and
 * gives the prefill time (until every sequence has its first token) and the decode time
 * (from then until every sequence has all n_gen). 0, or -1 with the reason in pr->error.
 */
static int run_par(ctn_gen *e, const int32_t *prompts, int64_t n_prompt, par_run *pr, par_seq *seqs,
                   double *t_prefill, double *t_decode) {
    char err[256];
    pthread_mutex_lock(&pr->lock);
    memset(pr->count, 0, (size_t)pr->n_par * sizeof *pr->count);
    pr->n_first = pr->n_full = pr->n_done = 0;
    pr->error[0] = '\0';
    pthread_mutex_unlock(&pr->lock);
    int submitted = 0;
    const double t0 = ctn__cli_now_s();
    for (int s = 0; s < pr->n_par; s++) {
        ctn_gen_request r = ctn_gen_request_default(); /* greedy */
        r.prompt_ids = prompts + (size_t)s * (size_t)n_prompt;
        r.n_prompt_ids = n_prompt;
        r.max_tokens = pr->n_gen;
        r.ignore_eos = true;
        r.adapter = seqs[s].adapter;
        r.on_token = par_token;
        r.on_done = par_done;
        r.ud = &seqs[s];
        if (ctn_gen_submit(e, &r, err, sizeof err) < 0) {
            pthread_mutex_lock(&pr->lock);
            snprintf(pr->error, sizeof pr->error, "sequence %d: %s", s, err);
            pthread_mutex_unlock(&pr->lock);
            break;
        }
        submitted++;
    }
    pthread_mutex_lock(&pr->lock);
    while (pr->n_done < submitted)
        pthread_cond_wait(&pr->cond, &pr->lock);
    const bool ok = submitted == pr->n_par && pr->error[0] == '\0';
    if (pr->n_gen == 0) {
        *t_prefill = pr->t_done - t0;
        *t_decode = 0;
    } else {
        *t_prefill = pr->t_first - t0;
        *t_decode = pr->t_full - pr->t_first;
    }
    pthread_mutex_unlock(&pr->lock);
    return ok ? 0 : -1;
}

/* bench --parallel P (P > 1): prints the JSON line; the exit status. */
static int bench_parallel(const char *path, long n_prompt, long n_gen, long threads, long reps,
                          long n_par, bool kv_f32, const char *loras) {
    char err[512];
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    ctn_gen *e = NULL;
    int32_t *prompts = NULL;
    par_seq *seqs = NULL;
    double *tp = NULL, *td = NULL;
    par_run pr = {.n_par = (int)n_par, .n_gen = n_gen};
    pthread_mutex_init(&pr.lock, NULL);
    pthread_cond_init(&pr.cond, NULL);
    int status = 1;
    if (ctn_gguf_open(&g, path, err, sizeof err) < 0 ||
        ctn_model_load(&m, g, err, sizeof err) < 0) {
        fprintf(stderr, "catena bench: %s\n", err);
        goto done;
    }
    const int64_t n_vocab = m->hp.n_vocab;
    prompts = malloc((size_t)n_par * (size_t)n_prompt * sizeof *prompts);
    seqs = calloc((size_t)n_par, sizeof *seqs);
    pr.count = calloc((size_t)n_par, sizeof *pr.count);
    tp = calloc((size_t)reps, sizeof *tp);
    td = calloc((size_t)reps, sizeof *td);
    if (prompts == NULL || seqs == NULL || pr.count == NULL || tp == NULL || td == NULL) {
        fprintf(stderr, "catena bench: out of memory\n");
        goto done;
    }
    for (long s = 0; s < n_par; s++) {
        seqs[s] = (par_seq){.pr = &pr, .s = (int)s};
        for (long i = 0; i < n_prompt; i++)
            prompts[s * n_prompt + i] =
                n_vocab > 1 ? (int32_t)(1 + ((int64_t)(i + 131 * s) * 7919) % (n_vocab - 1)) : 0;
    }
    /* Room for everything at once: every prompt in one step (up to the engine's limit),
     * every sequence running, KV blocks for P full sequences, no watermark, and no prefix
     * cache (a later rep would find its prompts cached). */
    const int64_t n_ctx = n_prompt + (n_gen > 0 ? n_gen : 1);
    const int32_t kv_block = 16;
    const size_t per_pos =
        2 * (size_t)m->hp.n_layer * (size_t)(m->hp.n_head_kv * m->hp.head_dim) * (kv_f32 ? 4 : 2);
    const int64_t seq_pos = (n_ctx + kv_block - 1) / kv_block * kv_block;
    const int64_t step = n_par * n_prompt < 65536 ? n_par * n_prompt : 65536;
    ctn_gen_params p = {0};
    p.fwd.n_threads = (int)threads;
    p.fwd.n_ctx = n_ctx;
    p.fwd.kv_f32 = kv_f32;
    p.fwd.kv_block = kv_block;
    p.fwd.kv_memory = per_pos * (size_t)seq_pos * (size_t)n_par;
    p.step_tokens = step > n_par ? step : n_par;
    p.max_running = (int)n_par;
    p.watermark = -1;
    p.no_prefix_cache = true;
    if (ctn_gen_new(&e, m, NULL, &p, err, sizeof err) < 0) {
        fprintf(stderr, "catena bench: %s\n", err);
        goto done;
    }
    /* --lora A,B,...: each loaded once (timed), sequence s runs with adapter s mod count. */
    int n_lora = 0;
    double load_ms = 0;
    size_t lora_bytes = 0;
    int32_t lora_ids[256];
    if (loras != NULL) {
        char list[8192];
        snprintf(list, sizeof list, "%s", loras);
        for (char *f = strtok(list, ","); f != NULL; f = strtok(NULL, ",")) {
            if (n_lora == 256) {
                fprintf(stderr, "catena bench: --lora: at most 256 adapters\n");
                goto done;
            }
            const double t0 = ctn__cli_now_s();
            ctn_lora *ad = NULL;
            if (ctn_lora_load(m, f, 0, &ad, err, sizeof err) < 0) {
                fprintf(stderr, "catena bench: --lora: %s\n", err);
                goto done;
            }
            load_ms += (ctn__cli_now_s() - t0) * 1e3;
            lora_bytes += ad->bytes;
            if ((lora_ids[n_lora] = ctn_gen_lora_add(e, ad, err, sizeof err)) < 0) {
                fprintf(stderr, "catena bench: --lora: %s\n", err);
                goto done;
            }
            n_lora++;
        }
        for (long s = 0; s < n_par; s++)
            seqs[s].adapter = n_lora > 0 ? lora_ids[s % n_lora] : 0;
    }
    double a, b;
    bool ok = run_par(e, prompts, n_prompt, &pr, seqs, &a, &b) == 0;
    for (long r = 0; ok && r < reps; r++) {
        ok = run_par(e, prompts, n_prompt, &pr, seqs, &a, &b) == 0;
        tp[r] = (double)n_par * (double)n_prompt / a;
        td[r] = n_gen > 1 && b > 0 ? (double)n_par * (double)(n_gen - 1) / b : 0.0;
    }
    if (!ok) {
        fprintf(stderr, "catena bench: %s\n", pr.error);
        goto done;
    }
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"model\": ");
    json_str(stdout, path);
    printf(", \"threads\": %d, \"prompt_tokens\": %ld, \"gen_tokens\": %ld, \"parallel\": %ld, "
           "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"preemptions\": %" PRId64
           ", \"peak_rss_mb\": %.1f, \"kv_type\": \"%s\", \"isa\": \"%s\", \"adapters\": %d, "
           "\"adapter_load_ms\": %.2f, \"adapter_mb\": %.2f}\n",
           st.threads, n_prompt, n_gen, n_par, median(tp, (int)reps), median(td, (int)reps),
           st.preemptions, (double)ru.ru_maxrss / 1024.0, kv_f32 ? "f32" : "f16",
           ctn_backend_cpu_isa(), n_lora, n_lora > 0 ? load_ms / n_lora : 0.0,
           n_lora > 0 ? (double)lora_bytes / n_lora / (1024.0 * 1024.0) : 0.0);
    status = 0;
done:
    ctn_gen_free(e);
    pthread_mutex_destroy(&pr.lock);
    pthread_cond_destroy(&pr.cond);
    free(pr.count);
    free(tp), free(td);
    free(seqs);
    free(prompts);
    ctn_model_free(m);
    ctn_gguf_free(g);
    return status;
}

int ctn_cmd_bench(int argc, char **argv) {
    const char *path = NULL;
    long n_prompt = 256, n_gen = 64, threads = 0, reps = 3, n_par = 1;
    bool kv_f32 = false, f32_act = false;
    const char *loras = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long *dst = NULL, lo = 1, hi = 65536;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            path = argv[++i];
            continue;
        } else if (!strcmp(a, "--kv-f32")) {
            kv_f32 = true;
            continue;
        } else if (!strcmp(a, "--f32-act")) {
            f32_act = true;
            continue;
        } else if (!strcmp(a, "--lora") && i + 1 < argc) {
            loras = argv[++i];
            continue;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            return usage(stdout);
        } else if (!strcmp(a, "--prompt-tokens") || !strcmp(a, "-p")) {
            dst = &n_prompt;
        } else if (!strcmp(a, "--gen-tokens") || !strcmp(a, "-n")) {
            dst = &n_gen, lo = 0;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            dst = &threads, hi = 512;
        } else if (!strcmp(a, "--reps") || !strcmp(a, "-r")) {
            dst = &reps, hi = 1000;
        } else if (!strcmp(a, "--parallel") || !strcmp(a, "-P")) {
            dst = &n_par, hi = 4096; /* the engine's max_running limit */
        }
        if (dst == NULL || i + 1 >= argc) {
            fprintf(stderr, "catena bench: unknown or incomplete argument '%s'\n", a);
            return usage(stderr);
        }
        if (ctn__cli_parse_long(argv[++i], lo, hi, dst) < 0) {
            fprintf(stderr, "catena bench: %s wants a whole number in %ld..%ld, not '%s'\n", a, lo,
                    hi, argv[i]);
            return 2;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "catena bench: no model given (-m MODEL.gguf)\n");
        return usage(stderr);
    }
    if ((n_par > 1 || loras != NULL) && f32_act) {
        fprintf(stderr,
                "catena bench: --f32-act measures one sequence: drop --parallel and --lora\n");
        return 2;
    }
    if (n_par > 1 || loras != NULL)
        return bench_parallel(path, n_prompt, n_gen, threads, reps, n_par, kv_f32, loras);

    char err[512];
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    ctn_fwd *f = NULL;
    ctn_kv_seq seq = {0};
    float *logits = NULL;
    int32_t *prompt = NULL;
    int status = 1, rc;
    if ((rc = ctn_gguf_open(&g, path, err, sizeof err)) < 0 ||
        (rc = ctn_model_load(&m, g, err, sizeof err)) < 0) {
        fprintf(stderr, "catena bench: %s\n", err);
        goto done;
    }
    const int64_t n_vocab = m->hp.n_vocab;
    ctn_fwd_params fp = {.n_threads = (int)threads,
                         .n_ctx = n_prompt + n_gen,
                         .n_batch = n_prompt,
                         .kv_f32 = kv_f32,
                         .f32_act = f32_act};
    if ((rc = ctn_fwd_new(&f, m, &fp, err, sizeof err)) < 0) {
        fprintf(stderr, "catena bench: %s\n", err);
        goto done;
    }
    logits = malloc((size_t)n_vocab * sizeof *logits);
    prompt = malloc((size_t)n_prompt * sizeof *prompt);
    if (logits == NULL || prompt == NULL || ctn_fwd_seq_init(f, &seq) < 0) {
        fprintf(stderr, "catena bench: out of memory\n");
        goto done;
    }
    for (long i = 0; i < n_prompt; i++)
        prompt[i] = n_vocab > 1 ? (int32_t)(1 + ((int64_t)i * 7919) % (n_vocab - 1)) : 0;

    double *tp = calloc((size_t)reps, sizeof *tp), *td = calloc((size_t)reps, sizeof *td);
    if (tp == NULL || td == NULL) {
        free(tp), free(td);
        fprintf(stderr, "catena bench: out of memory\n");
        goto done;
    }
    double a, b;
    bool ok = run_once(f, &seq, prompt, n_prompt, n_gen, logits, &a, &b) == 0;
    for (long r = 0; ok && r < reps; r++) {
        ok = run_once(f, &seq, prompt, n_prompt, n_gen, logits, &a, &b) == 0;
        tp[r] = (double)n_prompt / a;
        td[r] = n_gen > 0 ? (double)n_gen / b : 0.0;
    }
    if (!ok) {
        fprintf(stderr, "catena bench: %s\n", ctn_fwd_errmsg(f));
        free(tp), free(td);
        goto done;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"model\": ");
    json_str(stdout, path);
    printf(", \"threads\": %d, \"prompt_tokens\": %ld, \"gen_tokens\": %ld, \"parallel\": 1, "
           "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"peak_rss_mb\": %.1f, "
           "\"kv_type\": \"%s\", \"isa\": \"%s\"}\n",
           ctn_fwd_threads(f), n_prompt, n_gen, median(tp, (int)reps), median(td, (int)reps),
           (double)ru.ru_maxrss / 1024.0, kv_f32 ? "f32" : "f16", ctn_backend_cpu_isa());
    free(tp), free(td);
    status = 0;
done:
    if (f != NULL) ctn_fwd_seq_close(f, &seq);
    free(prompt);
    free(logits);
    ctn_fwd_free(f);
    ctn_model_free(m);
    ctn_gguf_free(g);
    return status;
}
