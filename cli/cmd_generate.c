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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"
#include "commands.h"
#include "gen.h"
#include "json_schema.h"
#include "lora.h"
#include "model.h"
#include "sampler.h"
#include "settings.h"


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
            "  --grammar GBNF         the output follows a GBNF grammar (docs/grammars.md)\n"
            "  --grammar-file FILE    the grammar from FILE\n"
            "  -j, --json-schema JSON the output is JSON valid for the schema\n"
            "  --json-schema-file FILE the schema from FILE\n"
            "  --ids                  print the generated token ids instead of text\n"
            "  --logprobs N           print each token's log-probability and its N most\n"
            "                         likely alternatives (0 to %d) to stderr, a line each\n"
            "  -v, --verbose          print timings and the seed to stderr\n",
            CTN_SETTINGS_MAX_STOP, CTN_GEN_MAX_TOP_LOGPROBS);
    return f == stderr ? 2 : 0;
}

typedef struct {
    const char *model, *prompt, *prompt_file;
    ctn_settings set; /* every request and model setting (settings.h) */
    bool seed_set, ids, kv_f32, verbose;
    int logprobs;    /* --logprobs N: the alternatives; -1: none asked for */
    char lora[4096]; /* the adapter's path, or "" */
    const char *grammar_arg, *schema_arg; /* the text or file of --grammar*, --json-schema* */
    bool grammar_file, schema_file;
    char *grammar; /* the GBNF the output follows (owned), or NULL */
} options;

/* The options that are settings, and their keys (docs/settings.md has the limits). */
static const struct {
    const char *flag, *flag2, *key;
} setting_flags[] = {
    {"-n", "--n-predict", "max_tokens"},
    {"-c", "--ctx", "ctx"},
    {"-t", "--threads", "threads"},
    {"--temp", NULL, "temperature"},
    {"--top-k", NULL, "top_k"},
    {"--top-p", NULL, "top_p"},
    {"--min-p", NULL, "min_p"},
    {"--repeat-penalty", NULL, "repeat_penalty"},
    {"--repeat-last-n", NULL, "repeat_last_n"},
    {"--frequency-penalty", NULL, "frequency_penalty"},
    {"--presence-penalty", NULL, "presence_penalty"},
    {"--seed", NULL, "seed"},
    {"-s", "--stop", "stop"},
};

/* Parses argv into o; returns -1 after printing a usage error, 1 for --help, else 0. */
static int parse_args(int argc, char **argv, options *o) {
    ctn_settings_init(&o->set);
    o->set.sampling = ctn_sampler_params_default(); /* llama.cpp's CLI's */
    o->logprobs = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool used = true;
        const char *key = NULL;
        for (size_t k = 0; k < sizeof setting_flags / sizeof setting_flags[0]; k++)
            if (!strcmp(a, setting_flags[k].flag) ||
                (setting_flags[k].flag2 != NULL && !strcmp(a, setting_flags[k].flag2)))
                key = setting_flags[k].key;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            return 1;
        } else if (!strcmp(a, "--ids")) {
            o->ids = true, used = false;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->set.ignore_eos = true, used = false;
        } else if (!strcmp(a, "--kv-f32")) {
            o->kv_f32 = true, used = false;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = true, used = false;
        } else if (val == NULL) {
            fprintf(stderr, "catena generate: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return -1;
        } else if (key != NULL) {
            char err[512];
            /* -n -1 is llama-cli's "no limit"; the setting says so too. */
            if (ctn_settings_parse(&o->set, key, val, err, sizeof err) < 0) {
                fprintf(stderr, "catena generate: bad value '%s' for %s: %s\n", val, a, err);
                return -1;
            }
            if (!strcmp(key, "seed")) o->seed_set = true;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o->model = val;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            o->prompt = val;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            o->prompt_file = val;
        } else if (!strcmp(a, "--logprobs")) {
            char *end = NULL;
            const long n = strtol(val, &end, 10);
            if (end == val || *end != '\0' || n < 0 || n > CTN_GEN_MAX_TOP_LOGPROBS) {
                fprintf(stderr,
                        "catena generate: bad value '%s' for --logprobs: the alternatives per "
                        "token, 0 to %d\n",
                        val, CTN_GEN_MAX_TOP_LOGPROBS);
                return -1;
            }
            o->logprobs = (int)n;
        } else if (!strcmp(a, "--grammar") || !strcmp(a, "--grammar-file")) {
            o->grammar_arg = val, o->grammar_file = a[9] == '-';
        } else if (!strcmp(a, "-j") || !strcmp(a, "--json-schema") ||
                   !strcmp(a, "--json-schema-file")) {
            o->schema_arg = val, o->schema_file = !strcmp(a, "--json-schema-file");
        } else if (!strcmp(a, "--lora")) {
            /* PATH[:SCALE]: a last ':' followed by a number is the scale. */
            if (strlen(val) >= sizeof o->lora) {
                fprintf(stderr, "catena generate: --lora: the path is too long\n");
                return -1;
            }
            snprintf(o->lora, sizeof o->lora, "%s", val);
            char *colon = strrchr(o->lora, ':');
            char err[512];
            struct stat st;
            /* A path that exists as given keeps its ':'; otherwise what follows the last
             * ':' must be a scale. */
            if (colon != NULL && stat(o->lora, &st) != 0) {
                if (ctn_settings_parse(&o->set, "lora_scale", colon + 1, err, sizeof err) < 0) {
                    fprintf(stderr,
                            "catena generate: --lora %s: no such path, and '%s' after its last "
                            "':' is no scale (PATH[:SCALE]): %s\n",
                            val, colon + 1, err);
                    return -1;
                }
                if (o->set.lora_scale < 0)
                    fprintf(stderr,
                            "catena generate: note: --lora scale %g is negative: the adapter's "
                            "update is subtracted\n",
                            (double)o->set.lora_scale);
                *colon = 0;
            }
        } else {
            fprintf(stderr, "catena generate: unknown argument '%s'\n", a);
            usage(stderr);
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
    if (o->grammar_arg != NULL && o->schema_arg != NULL) {
        fprintf(stderr, "catena generate: give a grammar or a JSON schema, not both\n");
        return -1;
    }
    if (!o->seed_set) o->set.sampling.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
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
    /* The grammar: GBNF as given, or the JSON schema's (engine/json_schema.h). */
    const char *garg = o.grammar_arg != NULL ? o.grammar_arg : o.schema_arg;
    const bool gfile = o.grammar_arg != NULL ? o.grammar_file : o.schema_file;
    char *gtext = NULL;
    if (garg != NULL) {
        size_t glen = strlen(garg);
        if (gfile) {
            FILE *gf = fopen(garg, "rb");
            const int grc = gf == NULL ? CTN_EIO : ctn__cli_read_all(gf, &gtext, &glen);
            if (gf != NULL) fclose(gf);
            if (grc < 0) {
                fprintf(stderr, "catena generate: reading %s: %s\n", garg,
                        gf == NULL ? strerror(errno) : ctn_strerror(grc));
                free(file_text);
                return 1;
            }
        }
        const char *g = gfile ? gtext : garg;
        char err[512];
        if (o.schema_arg != NULL) {
            if (ctn_json_schema_to_gbnf(g, glen, &o.grammar, err, sizeof err) < 0) {
                fprintf(stderr, "catena generate: the JSON schema%s%s: %s\n", gfile ? " in " : "",
                        gfile ? garg : "", err);
                free(gtext);
                free(file_text);
                return 1;
            }
        } else {
            o.grammar = gfile ? gtext : strdup(g);
            gtext = gfile ? NULL : gtext;
        }
        free(gtext);
        if (o.grammar == NULL ||
            ctn_settings_parse(&o.set, "grammar", o.grammar, err, sizeof err) < 0) {
            fprintf(stderr, "catena generate: the grammar: %s\n",
                    o.grammar == NULL ? "out of memory" : err);
            free(o.grammar);
            free(file_text);
            return 1;
        }
    }
    int status = generate(&o);
    free(o.grammar);
    free(file_text);
    return status;
}

/* What the engine's callbacks write (manual mode: this thread). */
typedef struct {
    bool ids, done;
    const ctn_vocab *v; /* for the pieces of --logprobs */
    long n_gen;
    ctn_gen_result res;
    char error[512];
    const char *write_error; /* stdout failed */
} gen_out;

static void put(gen_out *o, const char *text, size_t n) {
    if (n > 0 && o->write_error == NULL && fwrite(text, 1, n, stdout) != n)
        o->write_error = strerror(errno);
}

/* A token's id, piece (quoted; bytes outside printable ASCII, quotes and backslashes as
 * \xNN) and log-probability, to stderr. */
static void put_logprob(const ctn_vocab *v, int32_t id, double logprob) {
    char piece[256];
    int n = ctn_token_to_piece(v, id, piece, sizeof piece, 0, true);
    if (n < 0) n = 0;
    if (n > (int)sizeof piece) n = (int)sizeof piece;
    fprintf(stderr, "%d \"", (int)id);
    for (int i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)piece[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            fprintf(stderr, "\\x%02X", c);
        else
            fputc(c, stderr);
    }
    fprintf(stderr, "\" %.6f", logprob);
}

static void on_token(void *ud, const ctn_gen_token *t) {
    gen_out *o = ud;
    o->n_gen++;
    if (t->has_logprob) {
        /* One line per token: the token, then its alternatives after '|'. */
        put_logprob(o->v, t->token, t->logprob);
        fputs(" |", stderr);
        for (int i = 0; i < t->n_top; i++) {
            fputs(i > 0 ? ", " : " ", stderr);
            put_logprob(o->v, t->top[i].token, t->top[i].logprob);
        }
        fputc('\n', stderr);
    }
    if (o->ids) {
        printf(o->n_gen > 1 ? " %d" : "%d", (int)t->token);
    } else {
        put(o, t->text, t->len);
    }
    fflush(stdout);
}

static void on_done(void *ud, int64_t id, const ctn_gen_result *res) {
    (void)id;
    gen_out *o = ud;
    o->res = *res;
    if (!o->ids && res->finish != CTN_FINISH_ERROR) put(o, res->text, res->text_len);
    snprintf(o->error, sizeof o->error, "%s", res->error != NULL ? res->error : "");
    o->res.error = o->error;
    o->res.text = NULL;
    o->done = true;
}

/* The shared engine (gen.h) in manual mode, with one request: the same scheduling,
 * sampling, stop strings and detokenization as every other way into the engine. */
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
    ctn_gen *e = NULL;
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
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
    ctn_gen_params gp = {0};
    gp.fwd.n_threads = o.set.threads;
    gp.fwd.n_ctx = o.set.ctx;
    gp.fwd.kv_f32 = o.kv_f32;
    gp.max_running = 1;
    gp.manual = true;
    gp.no_prefix_cache = true; /* one request: nothing to share */
    if ((rc = ctn_gen_new(&e, m, v, &gp, err, sizeof err)) < 0) {
        fprintf(stderr, "catena generate: %s\n", err);
        goto done;
    }
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    if ((int64_t)n_prompt >= st.n_ctx) {
        fprintf(stderr,
                "catena generate: the prompt has %zu tokens; the context holds %" PRId64
                " (raise it with -c, up to the model's %" PRId64 ")\n",
                n_prompt, st.n_ctx, m->hp.n_ctx_train);
        goto done;
    }
    ctn_gen_request r = ctn_gen_request_default();
    r.prompt_ids = prompt;
    r.n_prompt_ids = (int64_t)n_prompt;
    ctn_settings_apply(&o.set, &r);
    if (lora != NULL) {
        const int32_t id = ctn_gen_lora_add(e, lora, err, sizeof err);
        lora = NULL; /* the engine's now, also when it failed */
        if (id < 0) {
            fprintf(stderr, "catena generate: --lora: %s\n", err);
            goto done;
        }
        r.adapter = id;
        r.adapter_scale = o.set.lora_scale;
    }
    gen_out out = {.ids = o.ids, .v = v};
    r.logprobs = o.logprobs >= 0;
    r.top_logprobs = o.logprobs > 0 ? o.logprobs : 0;
    r.on_token = on_token;
    r.on_done = on_done;
    r.ud = &out;
    if (o.verbose)
        fprintf(stderr,
                "catena generate: %zu prompt tokens, context %" PRId64
                ", %d threads, %s kernels, seed %" PRIu64 "\n",
                n_prompt, st.n_ctx, st.threads, ctn_backend_cpu_isa(),
                o.set.sampling.seed);
    if (ctn_gen_submit(e, &r, err, sizeof err) < 0) {
        fprintf(stderr, "catena generate: %s\n", err);
        goto done;
    }
    while (!out.done)
        ctn_gen_step(e, NULL); /* a failed step finishes the request with its reason */
    if (out.res.finish == CTN_FINISH_ERROR) {
        fflush(stdout);
        fprintf(stderr, "\ncatena generate: %s\n", out.res.error);
        goto done;
    }
    if (out.res.finish == CTN_FINISH_LENGTH &&
        (o.set.max_tokens < 0 || out.n_gen < o.set.max_tokens))
        fprintf(stderr, "catena generate: the context of %" PRId64 " tokens is full\n", st.n_ctx);
    putchar('\n');
    if (fflush(stdout) != 0 || out.write_error != NULL) {
        fprintf(stderr, "catena generate: writing the output: %s\n",
                out.write_error != NULL ? out.write_error : strerror(errno));
        goto done;
    }
    if (o.verbose) {
        const double t_pre = out.res.ttft_s, t_gen = out.res.total_s - out.res.ttft_s;
        fprintf(stderr,
                "catena generate: prompt %zu tokens in %.3f s (%.1f tok/s); generated %ld "
                "tokens in %.3f s (%.1f tok/s); stopped by %s\n",
                n_prompt, t_pre, t_pre > 0 ? (double)n_prompt / t_pre : 0.0, out.n_gen, t_gen,
                out.n_gen > 1 && t_gen > 0 ? (double)(out.n_gen - 1) / t_gen : 0.0,
                out.res.finish == CTN_FINISH_EOS    ? "eos"
                : out.res.finish == CTN_FINISH_STOP ? "stop"
                                                    : "length");
    }
    status = 0;
done:
    ctn_gen_free(e);
    free(prompt);
    ctn_lora_free(lora);
    ctn_model_free(m);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    return status;
}
