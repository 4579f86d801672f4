/*
 * libcatena: catena's chains embedded in a C program. A runtime owns a libuv loop on a
 * thread of its own, where the Lua chains and the chain executor run; models and chain files
 * are loaded into it, and calls are submitted to it from any thread.
 *
 *     ctn_runtime *rt;
 *     ctn_chain *story;
 *     if (ctn_runtime_new(&rt) < 0) ...                      // ctn_last_error() says why
 *     if (ctn_runtime_load_model(rt, "stories260K.gguf", NULL) < 0) ...
 *     if (ctn_runtime_load_chain(rt, "story.lua", &story) < 0) ...  // it returns a runnable
 *     char *out;                                             // the output JSON, or the error:
 *     if (ctn_invoke_sync(story, "{\"who\": \"Lily\"}", NULL, &out) == CTN_OK) puts(out);
 *     free(out);
 *     uint64_t id;
 *     ctn_invoke(story, "{\"who\": \"Tim\"}", "{\"max_tokens\": 8}", on_done, NULL, &id);
 *     ctn_cancel(rt, id);                                    // on_done gets CTN_ECANCELED
 *     ctn_runtime_free(rt);                                  // cancels what still runs
 *
 * Values cross the API as JSON text (UTF-8, NUL-terminated): inputs, configs, outputs and
 * stream chunks. A config is a JSON object of a run's settings: tags, metadata, configurable,
 * max_concurrency, session, n, grammar and the request settings of docs/settings.md
 * (temperature, max_tokens, stop, seed, ...); an unknown key is an error naming it.
 *
 * Errors. Every function returns CTN_OK (0) or a negative CTN_E* code; ctn_strerror names
 * the code and ctn_last_error() gives the message of the calling thread's last failed call
 * (naming the file, line, position or node at fault). A function that fails calls no
 * callback.
 *
 * Threads. Every function may be called from any thread, except where it says otherwise.
 * Callbacks run on the runtime's loop thread, one at a time; a callback may submit more calls
 * (ctn_invoke, ctn_stream, ctn_batch, ctn_cancel) but not wait for one (ctn_invoke_sync and
 * the loaders refuse with CTN_EINVAL there), since the loop would wait for itself.
 *
 * Ownership. Strings passed in are borrowed for the call (copied when needed later). Strings
 * passed to a callback are borrowed for the callback. Strings a function returns through a
 * char ** are the caller's, freed with free(). A ctn_chain belongs to its runtime and lives
 * until ctn_runtime_free; ctn_last_error's and ctn_strerror's strings belong to the library.
 */
#ifndef CATENA_H
#define CATENA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CTN_API __attribute__((visibility("default")))
#else
#define CTN_API
#endif

/* The error codes (the same as catena's own, kernels/base.h). */
#ifndef CTN_BASE_H
enum {
    CTN_OK = 0,
    CTN_ENOMEM = -1,     /* an allocation failed */
    CTN_EINVAL = -2,     /* a bad argument, or a call made where it may not be */
    CTN_EIO = -3,        /* the operating system refused a read, write, open or map */
    CTN_EFORMAT = -4,    /* malformed input: a model file, JSON text (the message says where) */
    CTN_ENOENT = -5,     /* a file, key or call that is not there */
    CTN_ETYPE = -6,      /* a value of the wrong type (a chain file that returns no runnable) */
    CTN_ENOTSUP = -7,    /* valid input that this build does not support */
    CTN_ERANGE = -8,     /* a value out of range */
    CTN_ETIMEDOUT = -9,  /* a time limit ran out (a chain's timeout node) */
    CTN_ECANCELED = -10, /* the call was cancelled (ctn_cancel, ctn_runtime_free) */
    CTN_ECHAIN = -11,    /* a chain failed for a reason of its own (a Lua error, a parser's) */
};
#endif

typedef struct ctn_runtime ctn_runtime;
typedef struct ctn_chain ctn_chain;

/*
 * The end of a call, exactly once per call that was submitted: status CTN_OK and text the
 * output as JSON, or a CTN_E* code and text the error message ("node path: cause"). text is
 * borrowed for the call.
 */
typedef void (*ctn_done_fn)(int status, const char *text, void *ud);
/* One chunk of a streamed call's output, as JSON (borrowed for the call). */
typedef void (*ctn_chunk_fn)(const char *chunk_json, void *ud);

/* ---- errors and the library ------------------------------------------------------------------ */

/* A short static description of a code ("cancelled"); never NULL. */
CTN_API const char *ctn_strerror(int code);
/* The message of the calling thread's last failed call ("" when none has failed); valid
 * until the thread's next call into the library. */
CTN_API const char *ctn_last_error(void);
/* The library's version ("0.1.0"). */
CTN_API const char *ctn_version(void);

/* ---- the runtime ----------------------------------------------------------------------------- */

/* A runtime with its loop thread started. 0 and *out, or CTN_ENOMEM / CTN_EIO. */
CTN_API int ctn_runtime_new(ctn_runtime **out);
/*
 * Stops the runtime and frees it with its models and chains. Calls still in flight are
 * cancelled: each one's callback comes (CTN_ECANCELED, or the end it had already reached)
 * before this returns, and none after. No other thread may be using rt. CTN_EINVAL, and
 * nothing is done, when called on the loop thread (from a callback). NULL is a no-op.
 */
CTN_API int ctn_runtime_free(ctn_runtime *rt);

/*
 * Loads the GGUF model at path into the runtime, where it stays until ctn_runtime_free;
 * blocks until it is loaded. A chain file's catena.model{path = ...} naming the same file
 * with the same settings shares the loaded engine, and chain files loaded later get the
 * paths of the loaded models as the arguments of their main chunk (...), in load order.
 * options_json: NULL or an object of the model's settings threads, ctx, kv_memory (bytes)
 * and lora_budget (bytes). CTN_ENOENT for a missing file, CTN_EFORMAT / CTN_EIO for a file
 * that is not a usable model, CTN_EINVAL for a bad option or on the loop thread.
 */
CTN_API int ctn_runtime_load_model(ctn_runtime *rt, const char *path, const char *options_json);
/*
 * Runs the Lua chain file at path (as catena serve --chain does: the file returns a
 * runnable) and gives that chain in *out (owned by rt); blocks until it is loaded.
 * CTN_ENOENT (no file), CTN_ECHAIN (a syntax or runtime error; the message names the file and
 * line), CTN_ETYPE (the file returned no runnable), CTN_EINVAL on the loop thread.
 */
CTN_API int ctn_runtime_load_chain(ctn_runtime *rt, const char *path, ctn_chain **out);

/* ---- calls ----------------------------------------------------------------------------------- */

/*
 * Submits a run of chain on input_json (any JSON value) with config_json (an object, or
 * NULL). done is called once, on the loop thread, with the output. *id (when id is not NULL)
 * names the call for ctn_cancel. 0, or CTN_EFORMAT for JSON that does not parse (the message
 * names input or config and the line, column and byte), CTN_ETYPE for a config that is not
 * an object, CTN_ENOENT / CTN_EINVAL for a config key that is not a run's setting,
 * CTN_EINVAL for a runtime that is being freed; then nothing is called.
 */
CTN_API int ctn_invoke(ctn_chain *chain, const char *input_json, const char *config_json,
                       ctn_done_fn done, void *ud, uint64_t *id);
/* ctn_invoke, streamed: chunk gets each output chunk as it comes (the model's tokens
 * through the parsers), then done gets the whole output or the error. */
CTN_API int ctn_stream(ctn_chain *chain, const char *input_json, const char *config_json,
                       ctn_chunk_fn chunk, ctn_done_fn done, void *ud, uint64_t *id);
/*
 * Runs chain on each element of inputs_json (a non-empty JSON array), at most the config's
 * max_concurrency at once (absent or 0: all), the engine batching them; done gets the
 * outputs as a JSON array in input order, or the first error ("inputs[i]: ...", the other
 * runs then cancelled). The errors of ctn_invoke, and CTN_ETYPE for inputs that are not an
 * array or an empty one.
 */
CTN_API int ctn_batch(ctn_chain *chain, const char *inputs_json, const char *config_json,
                      ctn_done_fn done, void *ud, uint64_t *id);
/*
 * Cancels the call id of rt: its done comes with CTN_ECANCELED (or with the end it reached
 * before the cancellation did). 0, or CTN_ENOENT when no call id is in flight (it ended, or
 * never was).
 */
CTN_API int ctn_cancel(ctn_runtime *rt, uint64_t id);
/*
 * ctn_invoke, waiting for the end: returns the call's status and gives in *out (the
 * caller's, freed with free()) the output JSON, or the error message (also when the call
 * could not be submitted; ctn_last_error has it too). *out is NULL only when out is NULL,
 * memory ran out, or it was called on the loop thread (CTN_EINVAL).
 */
CTN_API int ctn_invoke_sync(ctn_chain *chain, const char *input_json, const char *config_json,
                            char **out);

#ifdef __cplusplus
}
#endif

#endif
