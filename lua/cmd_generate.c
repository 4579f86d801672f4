/*
 * `catena generate`: text generation from a prompt on the command line, printing only the
 * continuation as it is generated (or, with --ids, the generated token ids on one line).
 * The options follow llama.cpp's llama-cli where they overlap (-m, -p, -n, -c, -t, --temp,
 * --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n, --seed).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "forward.h"
#include "kern.h"
#include "lora.h"
#include "model.h"
#include "sampler.h"
#include "stop.h"

#define MAX_STOPS 16

static int usage(FILE *f) {
    fprintf(f,
            "usage: catena generate -m MODEL.gguf (-p PROMPT | -f FILE) [options]\n"
            "  Prints the continuation of PROMPT (tokenized with BOS as the model says).\n"
            "  -f, --file FILE        read the prompt from FILE (- for stdin)\n"
            "  -n, --n-predict N      tokens to generate (default -1: until end of text or\n"
            "                         the context is full)\n"
            "  --temp T               temperature (default 0.8; 0 = greedy)\n"
            "  --top-k K              (default 40; 0 = off)\n"
            "  --top-p P              (default 0.95; 1 = off)\n"
            "  --min-p P              (default 0.05; 0 = off)\n"
            "  --repeat-penalty R     (default 1.0 = off)   --repeat-last-n N (default 64)\n"
            "  --frequency-penalty F  --presence-penalty P  (default 0 = off)\n"
            "  --seed S               sampling seed (default: random, printed with -v)\n"
            "  -s, --stop TEXT        stop before TEXT (repeatable, up to %d)\n"
            "  --ignore-eos           keep going past end-of-text tokens\n"
            "  -c, --ctx N            context length (default: the model's, at most 4096)\n"
            "  -t, --threads N        threads (default: all CPUs this process may use)\n"
            "  --kv-f32               keep the KV cache in F32 (default F16)\n"
            "  --lora PATH[:SCALE]    run with a LoRA adapter (PEFT folder or GGUF LoRA\n"
            "                         file), scaled by SCALE (default 1)\n"
            "  --ids                  print the generated token ids instead of text\n"
            "  -v, --verbose          print timings and the seed to stderr\n",
            MAX_STOPS);
    return f == stderr ? 2 : 0;
}

static int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0 || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0) return -1;
    *out = v;
    return 0;
}

typedef struct {
    const char *model, *prompt, *prompt_file;
    long n_predict, n_ctx, threads;
    ctn_sampler_params sp;
    bool seed_set, ids, ignore_eos, kv_f32, verbose;
    const char *stops[MAX_STOPS];
    size_t n_stops;
    char lora[4096]; /* the adapter's path, or "" */
    float lora_scale;
} options;

/* Parses argv into o; returns -1 after printing a usage error, 1 for --help, else 0. */
static int parse_args(int argc, char **argv, options *o) {
    o->n_predict = -1;
    o->sp = ctn_sampler_params_default();
    o->lora_scale = 1.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool bad = false, used = true;
        long lv;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            return 1;
        } else if (!strcmp(a, "--ids")) {
            o->ids = true, used = false;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true, used = false;
        } else if (!strcmp(a, "--kv-f32")) {
            o->kv_f32 = true, used = false;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = true, used = false;
        } else if (val == NULL) {
            fprintf(stderr, "catena generate: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return -1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o->model = val;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            o->prompt = val;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            o->prompt_file = val;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            bad = ctn__cli_parse_long(val, -1, 1 << 24, &o->n_predict) < 0;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            bad = ctn__cli_parse_long(val, 1, 1 << 24, &o->n_ctx) < 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            bad = ctn__cli_parse_long(val, 1, 512, &o->threads) < 0;
        } else if (!strcmp(a, "--temp")) {
            bad = parse_float(val, &o->sp.temp) < 0;
        } else if (!strcmp(a, "--top-k")) {
            bad = ctn__cli_parse_long(val, 0, INT32_MAX, &lv) < 0;
            o->sp.top_k = (int32_t)lv;
        } else if (!strcmp(a, "--top-p")) {
            bad = parse_float(val, &o->sp.top_p) < 0;
        } else if (!strcmp(a, "--min-p")) {
            bad = parse_float(val, &o->sp.min_p) < 0;
        } else if (!strcmp(a, "--repeat-penalty")) {
            bad = parse_float(val, &o->sp.repeat_penalty) < 0;
        } else if (!strcmp(a, "--repeat-last-n")) {
            bad = ctn__cli_parse_long(val, -1, INT32_MAX, &lv) < 0;
            o->sp.penalty_last_n = (int32_t)lv;
        } else if (!strcmp(a, "--frequency-penalty")) {
            bad = parse_float(val, &o->sp.frequency_penalty) < 0;
        } else if (!strcmp(a, "--presence-penalty")) {
            bad = parse_float(val, &o->sp.presence_penalty) < 0;
        } else if (!strcmp(a, "--lora")) {
            /* PATH[:SCALE]: a last ':' followed by a number is the scale. */
            bad = val == NULL || strlen(val) >= sizeof o->lora;
            if (!bad) {
                snprintf(o->lora, sizeof o->lora, "%s", val);
                char *colon = strrchr(o->lora, ':');
                if (colon != NULL) {
                    char *end;
                    const float sc = strtof(colon + 1, &end);
                    if (end != colon + 1 && *end == 0 && sc == sc) {
                        o->lora_scale = sc;
                        *colon = 0;
                    }
                }
            }
        } else if (!strcmp(a, "--seed")) {
            bad = parse_u64(val, &o->sp.seed) < 0;
            o->seed_set = true;
        } else if (!strcmp(a, "-s") || !strcmp(a, "--stop")) {
            if (o->n_stops == MAX_STOPS) {
                fprintf(stderr, "catena generate: at most %d stop strings\n", MAX_STOPS);
                return -1;
            }
            o->stops[o->n_stops++] = val;
        } else {
            fprintf(stderr, "catena generate: unknown argument '%s'\n", a);
            usage(stderr);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "catena generate: bad value '%s' for %s\n", val, a);
            return -1;
        }
        if (used) i++;
    }
    if (o->model == NULL) {
        fprintf(stderr, "catena generate: no model given (-m MODEL.gguf)\n");
        usage(stderr);
        return -1;
    }
    if (o->prompt != NULL && o->prompt_file != NULL) {
        fprintf(stderr, "catena generate: give the prompt with -p or -f, not both\n");
        return -1;
    }
    if (o->prompt == NULL && o->prompt_file == NULL) {
        fprintf(stderr, "catena generate: no prompt given (-p PROMPT or -f FILE)\n");
        usage(stderr);
        return -1;
    }
    if (!o->seed_set) o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

static int generate(options *op);

int ctn_cmd_generate(int argc, char **argv) {
    options o = {0};
    int pr = parse_args(argc, argv, &o);
    if (pr == 1) return usage(stdout);
    if (pr < 0) return 2;
    char *file_text = NULL;
    if (o.prompt_file != NULL) {
        FILE *pf = strcmp(o.prompt_file, "-") ? fopen(o.prompt_file, "rb") : stdin;
        size_t flen = 0;
        int frc = pf == NULL ? CTN_EIO : ctn__cli_read_all(pf, &file_text, &flen);
        if (pf != NULL && pf != stdin) fclose(pf);
        if (frc < 0) {
            fprintf(stderr, "catena generate: reading the prompt from %s: %s\n", o.prompt_file,
                    pf == NULL ? strerror(errno) : ctn_strerror(frc));
            return 1;
        }
        if (strlen(file_text) != flen) {
            fprintf(stderr, "catena generate: %s holds a NUL byte at offset %zu\n", o.prompt_file,
                    strlen(file_text));
            free(file_text);
            return 1;
        }
        o.prompt = file_text;
    }
    int status = generate(&o);
    free(file_text);
    return status;
}

static int generate(options *op) {
    options o = *op;
    if (o.prompt[0] == '\0') {
        fprintf(stderr, "catena generate: the prompt is empty (-p \"...\")\n");
        return 1;
    }

    char err[512];
    ctn_gguf *g = NULL;
    ctn_vocab *v = NULL;
    ctn_model *m = NULL;
    ctn_lora *lora = NULL;
    ctn_fwd *f = NULL;
    ctn_sampler *smp = NULL;
    ctn_stop *stop = NULL;
    ctn_kv_seq seq = {0};
    bool have_seq = false, have_ds = false;
    ctn_detok_stream ds;
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    float *logits = NULL;
    char *piece = NULL;
    int status = 1, rc;

    if (ctn__cli_load_vocab("generate", o.model, &g, &v)) return 1;
    if ((rc = ctn_model_load(&m, g, err, sizeof err)) < 0) {
        fprintf(stderr, "catena generate: %s\n", err);
        goto done;
    }
    if (o.lora[0] && (rc = ctn_lora_load(m, o.lora, 0, &lora, err, sizeof err)) < 0) {
        fprintf(stderr, "catena generate: --lora: %s\n", err);
        goto done;
    }
    rc = ctn_tokenize(v, o.prompt, strlen(o.prompt), true, true, &prompt, &n_prompt);
    if (rc < 0) {
        fprintf(stderr, "catena generate: tokenizing the prompt: %s\n", ctn_strerror(rc));
        goto done;
    }
    if (n_prompt == 0) {
        fprintf(stderr, "catena generate: the prompt has no tokens\n");
        goto done;
    }
    ctn_fwd_params fp = {.n_threads = (int)o.threads, .n_ctx = o.n_ctx, .kv_f32 = o.kv_f32};
    if ((rc = ctn_fwd_new(&f, m, &fp, err, sizeof err)) < 0) {
        fprintf(stderr, "catena generate: %s\n", err);
        goto done;
    }
    const int64_t n_ctx = ctn_fwd_n_ctx(f), n_batch = ctn_fwd_n_batch(f);
    if ((int64_t)n_prompt >= n_ctx) {
        fprintf(stderr,
                "catena generate: the prompt has %zu tokens; the context holds %" PRId64
                " (raise it with -c, up to the model's %" PRId64 ")\n",
                n_prompt, n_ctx, m->hp.n_ctx_train);
        goto done;
    }
    if ((rc = ctn_sampler_new(&smp, &o.sp, (int32_t)m->hp.n_vocab, err, sizeof err)) < 0) {
        fprintf(stderr, "catena generate: %s\n", err);
        goto done;
    }
    if ((rc = ctn_stop_new(&stop, o.stops, NULL, o.n_stops, err, sizeof err)) < 0) {
        fprintf(stderr, "catena generate: --stop: %s\n", err);
        goto done;
    }
    const size_t piece_cap = 4096;
    logits = malloc((size_t)m->hp.n_vocab * sizeof *logits);
    piece = malloc(piece_cap);
    if (logits == NULL || piece == NULL || ctn_fwd_seq_init(f, &seq) < 0) {
        fprintf(stderr, "catena generate: out of memory\n");
        goto done;
    }
    have_seq = true;
    if (o.verbose)
        fprintf(stderr,
                "catena generate: %zu prompt tokens, context %" PRId64
                ", %d threads, %s kernels, seed %" PRIu64 "\n",
                n_prompt, n_ctx, ctn_fwd_threads(f), ctn_isa_name(ctn_kern_isa()), o.sp.seed);

    /* Prefill in batches; the last one asks for logits. */
    double t0 = ctn__cli_now_s();
    for (size_t i = 0; i < n_prompt; i += (size_t)n_batch) {
        size_t k = n_prompt - i < (size_t)n_batch ? n_prompt - i : (size_t)n_batch;
        ctn_fwd_seg seg = {.seq = &seq,
                           .tokens = prompt + i,
                           .n_tokens = (int64_t)k,
                           .logits = i + k == n_prompt,
                           .lora = lora,
                           .lora_scale = o.lora_scale};
        if (ctn_fwd_run(f, &seg, 1, logits) < 0) {
            fprintf(stderr, "catena generate: %s\n", ctn_fwd_errmsg(f));
            goto done;
        }
    }
    for (size_t i = 0; i < n_prompt; i++)
        ctn_sampler_accept(smp, prompt[i]);
    double t1 = ctn__cli_now_s();

    /* Pieces are streamed as if the prompt came before them (no leading-space strip). */
    ctn_detok_stream_init(&ds, v, false);
    ds.first = false;
    have_ds = true;
    long n_gen = 0;
    const char *reason = "length";
    bool stopped = false;
    while (o.n_predict < 0 || n_gen < o.n_predict) {
        int32_t tok;
        if (ctn_sampler_sample(smp, logits, &tok) < 0) {
            fprintf(stderr, "catena generate: sampling: %s\n", ctn_sampler_errmsg(smp));
            goto done;
        }
        ctn_sampler_accept(smp, tok);
        if (!o.ignore_eos && ctn_vocab_is_eog(v, tok)) {
            reason = "eos";
            break;
        }
        n_gen++;
        if (o.ids) {
            printf(n_gen > 1 ? " %d" : "%d", (int)tok);
        }
        int n = ctn_detok_stream_push(&ds, tok, piece, piece_cap);
        if (n < 0) {
            fprintf(stderr, "catena generate: token %d: %s\n", (int)tok, ctn_strerror(n));
            goto done;
        }
        const char *out;
        size_t n_out;
        rc = ctn_stop_feed(stop, piece, (size_t)n, &out, &n_out);
        if (rc < 0) {
            fprintf(stderr, "catena generate: %s\n", ctn_strerror(rc));
            goto done;
        }
        if (!o.ids) fwrite(out, 1, n_out, stdout);
        fflush(stdout);
        if (rc == CTN_STOP_HIT) {
            reason = "stop";
            stopped = true;
            break;
        }
        if (o.n_predict >= 0 && n_gen >= o.n_predict) break;
        if (seq.n_pos >= n_ctx) {
            fprintf(stderr, "catena generate: the context of %" PRId64 " tokens is full\n", n_ctx);
            break;
        }
        ctn_fwd_seg seg = {.seq = &seq,
                           .tokens = &tok,
                           .n_tokens = 1,
                           .logits = true,
                           .lora = lora,
                           .lora_scale = o.lora_scale};
        if (ctn_fwd_run(f, &seg, 1, logits) < 0) {
            fprintf(stderr, "catena generate: %s\n", ctn_fwd_errmsg(f));
            goto done;
        }
    }
    double t2 = ctn__cli_now_s();
    if (!stopped) {
        /* The held-back tail: bytes of an unfinished character, then a partial stop. */
        int n = ctn_detok_stream_flush(&ds, piece, piece_cap);
        const char *out;
        size_t n_out;
        if (n > 0 && ctn_stop_feed(stop, piece, (size_t)n, &out, &n_out) >= 0 && !o.ids)
            fwrite(out, 1, n_out, stdout);
        if (ctn_stop_flush(stop, &out, &n_out) >= 0 && !o.ids) fwrite(out, 1, n_out, stdout);
    }
    putchar('\n');
    if (fflush(stdout) != 0) goto done;
    if (o.verbose)
        fprintf(stderr,
                "catena generate: prompt %zu tokens in %.3f s (%.1f tok/s); generated %ld "
                "tokens in %.3f s (%.1f tok/s); stopped by %s\n",
                n_prompt, t1 - t0, (double)n_prompt / (t1 - t0), n_gen, t2 - t1,
                n_gen > 0 ? (double)n_gen / (t2 - t1) : 0.0, reason);
    status = 0;
done:
    if (have_ds) ctn_detok_stream_close(&ds);
    if (have_seq) ctn_fwd_seq_close(f, &seq);
    free(piece);
    free(logits);
    free(prompt);
    ctn_stop_free(stop);
    ctn_sampler_free(smp);
    ctn_fwd_free(f);
    ctn_lora_free(lora);
    ctn_model_free(m);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    return status;
}
