/*
 * libFuzzer target for the `catena batch` prompts file (cli/batch_line.h): the input is split
 * into lines as `catena batch` splits its file (at '\n', up to a NUL), and every line that is
 * not blank goes through ctn__batch_req_parse. Each must be refused with a reason, or give a
 * request whose settings are in the settings table's ranges; never crash, leak or hit
 * undefined behaviour. No model is needed: the vocabulary and the engine come later.
 *
 *     build/fuzz_batch_jsonl -max_total_time=600 build/fuzz-corpus/batch_jsonl
 *
 * The seed corpus (tests/fuzz/corpus_batch_jsonl/) was written by hand from the request
 * lines of tests/cli/batch.sh (one.jsonl, crlf.jsonl, ignore_eos.jsonl, and mixed.jsonl, its
 * six-line file: `sed -n 70,75p tests/cli/batch.sh`; stop_bad, twice and trailing are three
 * of its bad_line cases) and the keys README.md describes (stops.jsonl: null max_tokens, a
 * stop array, the largest seed; lora.jsonl: "lora" and "lora_scale").
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch_line.h"
#include "stop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a request that parsed must hold: the settings table's ranges (docs/settings.md). */
static void check_req(const ctn__batch_req *r) {
    const ctn_settings *s = &r->set;
    if (r->prompt == NULL || r->prompt[0] == '\0') __builtin_trap();
    if (s->max_tokens < -1 || s->max_tokens > (1 << 30)) __builtin_trap();
    if (!(s->sampling.temp >= 0 && s->sampling.temp <= 100)) __builtin_trap();
    if (s->sampling.top_k < 0) __builtin_trap();
    if (!(s->sampling.top_p >= 0 && s->sampling.top_p <= 1)) __builtin_trap();
    if (!(s->sampling.min_p >= 0 && s->sampling.min_p <= 1)) __builtin_trap();
    if (!(s->sampling.repeat_penalty > 0 && s->sampling.repeat_penalty <= 100)) __builtin_trap();
    if (!isfinite(s->lora_scale)) __builtin_trap();
    if (s->lora != NULL && s->lora[0] == '\0') __builtin_trap();
    if (s->n_stop > CTN_SETTINGS_MAX_STOP) __builtin_trap();
    size_t total = 0;
    for (size_t i = 0; i < s->n_stop; i++) {
        if (s->stop[i] == NULL || s->stop[i][0] == '\0') __builtin_trap();
        total += strlen(s->stop[i]);
    }
    if (total > CTN_STOP_MAX_TOTAL) __builtin_trap();
    /* A line never changes the model. */
    const ctn_setting_info *t = ctn_settings_table();
    for (int k = 0; k < CTN_SET_N_KEYS; k++)
        if (t[k].model && ctn_settings_given(s, (ctn_setting_key)k)) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0; /* keep runs short */
    /* NUL-terminated, as `catena batch` reads its file (ctn__cli_read_all). */
    char *text = malloc(size + 1);
    if (text == NULL) __builtin_trap();
    memcpy(text, data, size);
    text[size] = '\0';
    for (char *p = text; *p != '\0';) {
        char *nl = strchr(p, '\n');
        char *next = nl != NULL ? nl + 1 : p + strlen(p);
        if (nl != NULL) *nl = '\0';
        if (strspn(p, " \t\r") != strlen(p)) {
            char err[256] = "";
            ctn__batch_req r = {0};
            if (ctn__batch_req_parse(p, &r, err, sizeof err) < 0) {
                if (err[0] == '\0') __builtin_trap();
            } else {
                check_req(&r);
            }
            ctn__batch_req_close(&r);
        }
        p = next;
    }
    free(text);
    return 0;
}
