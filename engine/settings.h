/*
 * Request and model settings: one type, one validator and one table of limits for every
 * way in (`catena generate` and `catena batch`, the chain's model node and catena.model,
 * the loop bridge, and the HTTP server). Each front end turns its own values (a command
 * line word, a JSON value, a chain value, a Lua value) into a ctn_setting_value and hands
 * it over by key; the limits and the error messages are the same everywhere. The table is
 * in docs/settings.md.
 *
 *     ctn_settings s;
 *     ctn_settings_init(&s);
 *     ctn_setting_value v = {.kind = CTN_SET_NUM, .d = 0.7};
 *     if (ctn_settings_set(&s, "temperature", &v, err, sizeof err) < 0) ...  // names the key
 *     if (ctn_settings_parse(&s, "max_tokens", "64", err, sizeof err) < 0) ... // text
 *     ctn_gen_request r = ctn_gen_request_default();
 *     ctn_settings_apply(&s, &r);        // sampling, max_tokens, stop, ignore_eos
 *
 * Strings (stop strings, the adapter's name) are borrowed from the values: they must
 * outlive the settings' use.
 */
#ifndef CTN_SETTINGS_H
#define CTN_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gen.h"
#include "sampler.h"

#define CTN_SETTINGS_MAX_STOP 16 /* stop strings per request (CTN_STOP_MAX_TOTAL bytes) */

/* The settings, by key. */
typedef enum {
    /* of a request */
    CTN_SET_MAX_TOKENS,
    CTN_SET_TEMPERATURE,
    CTN_SET_TOP_K,
    CTN_SET_TOP_P,
    CTN_SET_MIN_P,
    CTN_SET_REPEAT_PENALTY,
    CTN_SET_REPEAT_LAST_N,
    CTN_SET_FREQUENCY_PENALTY,
    CTN_SET_PRESENCE_PENALTY,
    CTN_SET_SEED,
    CTN_SET_STOP,
    CTN_SET_IGNORE_EOS,
    CTN_SET_LORA,
    CTN_SET_LORA_SCALE,
    CTN_SET_GRAMMAR,
    /* of a model (its engine) */
    CTN_SET_THREADS,
    CTN_SET_CTX,
    CTN_SET_KV_MEMORY,
    CTN_SET_LORA_BUDGET,
    CTN_SET_STEP_TOKENS,
    CTN_SET_MAX_RUNNING,
    CTN_SET_N_KEYS
} ctn_setting_key;

/* What a setting holds (also the kind of a value handed over). */
typedef enum {
    CTN_SET_NULL, /* a value only: JSON null, Lua nil given explicitly: "none" */
    CTN_SET_BOOL,
    CTN_SET_INT,
    CTN_SET_NUM, /* a number; an integer value is accepted too */
    CTN_SET_STR,
    CTN_SET_LIST, /* of strings (stop) */
    CTN_SET_SIZE, /* bytes: an integer, or a string like "512M" (ctn_parse_size) */
    CTN_SET_OBJ,  /* a value only: something no setting takes (an object, a function) */
} ctn_setting_kind;

typedef struct ctn_setting_value {
    ctn_setting_kind kind; /* NULL, BOOL, INT, NUM, STR or LIST */
    bool b;
    int64_t i;
    double d;
    const char *s; /* STR: NUL-terminated, borrowed */
    const struct ctn_setting_value *items; /* LIST: n values (each should be a STR) */
    size_t n;
} ctn_setting_value;

/* One row of the table of limits. */
typedef struct {
    const char *key;
    ctn_setting_kind kind;
    bool model;      /* a model's setting, not a request's */
    bool nullable;   /* null means "none" (max_tokens: no limit; lora: the base model) */
    double lo, hi;   /* the range of an INT, NUM or SIZE (inclusive unless lo_open) */
    bool lo_open;    /* lo itself is out (repeat_penalty > 0) */
    const char *doc; /* what it means, with its default */
} ctn_setting_info;

/* The table, indexed by ctn_setting_key (CTN_SET_N_KEYS rows). */
const ctn_setting_info *ctn_settings_table(void);

typedef struct {
    int64_t max_tokens; /* -1: no limit */
    ctn_sampler_params sampling;
    bool ignore_eos;
    const char *stop[CTN_SETTINGS_MAX_STOP];
    size_t n_stop;
    const char *lora; /* NULL: the base model */
    const char *grammar; /* GBNF text the output follows (gen.h: grammar); NULL: none */
    float lora_scale;
    int threads;        /* 0: the default (all CPUs this process may use) */
    int64_t ctx;        /* 0: the model's, at most 4096 */
    int64_t kv_memory;  /* bytes; 0: the engine's default */
    int64_t lora_budget; /* bytes; 0: no limit */
    int64_t step_tokens, max_running; /* 0: the engine's defaults */
    uint32_t given; /* bit k: key k was set */
} ctn_settings;

/*
 * Defaults: a request's are the engine's (greedy, no limit, no stop strings, the base
 * model at scale 1: ctn_gen_request_default); the sampling defaults can be changed first
 * by the caller (`catena generate` starts from llama.cpp's CLI's).
 */
void ctn_settings_init(ctn_settings *s);

/* The key named name, or -1. */
int ctn_settings_key(const char *name);

/*
 * Sets one setting from a value. 0, or with the reason in err (which names the key and
 * what it must be): CTN_ENOENT for an unknown key (with the nearest known one suggested),
 * CTN_ETYPE for a value of the wrong kind, CTN_ERANGE for one out of range. Nothing is
 * changed on failure.
 */
int ctn_settings_set(ctn_settings *s, const char *key, const ctn_setting_value *v, char *err,
                     size_t errlen);

/*
 * Sets one setting from text, read by the key's kind (a command-line word): integers and
 * numbers in full (no trailing bytes), true/false, sizes as ctn_parse_size reads them,
 * "none" for a nullable setting, a string as it is; a LIST setting takes one more string
 * each call. Errors as ctn_settings_set.
 */
int ctn_settings_parse(ctn_settings *s, const char *key, const char *text, char *err,
                       size_t errlen);

/*
 * Sets one setting from a JSON value (a cJSON: a prompts-file line, an HTTP request body):
 * numbers, true/false, null, strings and arrays of strings are handed to ctn_settings_set;
 * objects are refused by kind. Strings are borrowed from json. Errors as ctn_settings_set.
 */
struct cJSON;
int ctn_settings_set_json(ctn_settings *s, const char *key, const struct cJSON *json, char *err,
                          size_t errlen);

/* True when key k was set. */
bool ctn_settings_given(const ctn_settings *s, ctn_setting_key k);

/* max_tokens where a front end sets none: catena batch's lines and the chains' model node
 * (-1 or null asks for no limit: until end of text, a stop string or the full context). */
#define CTN_SETTINGS_DEFAULT_MAX_TOKENS 256

/*
 * Whether key may be a setting of one run (a chain's config, r:with{...}): a request
 * setting of the table, or one of the n names of extra (the executor's own, such as tags).
 * 0; or CTN_EINVAL for a model setting ("setting 'ctx' is the model's, not one run's ...");
 * or CTN_ENOENT, "unknown setting 'max_token' (did you mean 'max_tokens'?)", the nearest
 * name of both lists suggested.
 */
int ctn_settings_check_run_key(const char *key, const char *const *extra, size_t n, char *err,
                               size_t errlen);

/* Copies a request's settings into r: sampling, max_tokens, stop strings, ignore_eos (the
 * adapter is the caller's: it names it in its own registry). */
void ctn_settings_apply(const ctn_settings *s, ctn_gen_request *r);

/*
 * A size in bytes: a whole number, or a number (may have a fraction) followed by K, M, G or
 * T (binary multiples: 1024), optionally followed by B or iB ("512M", "1.5GiB", "64KB").
 * 0, or CTN_EINVAL for anything else, zero, or more than 2^50 bytes.
 */
int ctn_parse_size(const char *text, int64_t *out);

#endif
