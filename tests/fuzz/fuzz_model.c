/*
 * libFuzzer target for a model file as the engine takes it: GGUF parse, ctn_model_load,
 * then (on what loads) the forward pass over a few tokens and sampling. A hostile file must
 * give a clear error at load, or run; a run may fail only with the forward pass's own
 * errors (NaN or infinite logits), never crash, read out of bounds or hit undefined
 * behaviour.
 *
 *     build/fuzz_model -max_total_time=600 build/fuzz-corpus/model
 *
 * The last 4 bytes of an input, when there are more than 8, choose the tokens fed (taken
 * modulo the vocabulary), so the fuzzer can steer the embedding rows and positions.
 *
 * Built with -DCTN_FUZZ_MAKE_CORPUS (and without -fsanitize=fuzzer) it instead writes the
 * seed corpus of small random models (tests/randmodel.h): `./gen tests/fuzz/corpus_model`.
 * (No K-quant seed: its rows are 256 wide, and the smallest such model is 250 KB.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "gguf.h"
#include "model.h"
#include "sampler.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 22)) return 0; /* keep runs short */
    /* A heap copy of exactly `size` bytes, so that ASan sees any read past the end. */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL) __builtin_trap();
    memcpy(copy, data, size);
    char err[1024] = "";
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    ctn_fwd *f = NULL;
    ctn_sampler *s = NULL;
    float *logits = NULL;
    if (ctn_gguf_open_memory(&g, copy, size, "fuzz.gguf", err, sizeof err) < 0) goto done;
    int rc = ctn_model_load(&m, g, err, sizeof err);
    if (rc < 0) {
        if (m != NULL || err[0] == '\0') __builtin_trap();
        goto done;
    }
    /* Hostile shapes may ask for more memory than a fuzz run has: skip those. */
    const ctn_model_hparams *hp = &m->hp;
    if (hp->n_vocab > 100000 || hp->n_embd > 4096 || hp->n_ff > 16384 || hp->n_layer > 64 ||
        hp->n_head * hp->head_dim > 8192)
        goto done;
    rc = ctn_fwd_new(&f, m, &(ctn_fwd_params){.n_threads = 2, .n_ctx = 8, .n_batch = 4}, err,
                     sizeof err);
    if (rc < 0) {
        if (f != NULL || err[0] == '\0') __builtin_trap();
        goto done;
    }
    ctn_sampler_params sp = ctn_sampler_params_default();
    if (ctn_sampler_new(&s, &sp, (int32_t)hp->n_vocab, err, sizeof err) < 0) __builtin_trap();
    logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    if (logits == NULL) __builtin_trap();
    ctn_kv_seq seq;
    if (ctn_fwd_seq_init(f, &seq) < 0) __builtin_trap();
    uint32_t pick = 0;
    if (size > 8) memcpy(&pick, data + size - 4, 4);
    int32_t toks[3];
    for (int i = 0; i < 3; i++)
        toks[i] = (int32_t)((pick >> (8 * i)) % (uint32_t)hp->n_vocab);
    ctn_fwd_seg seg = {.seq = &seq, .tokens = toks, .n_tokens = 3, .logits = true};
    rc = ctn_fwd_run(f, &seg, 1, logits);
    if (rc == 0) {
        int32_t next;
        if (ctn_sampler_sample(s, logits, &next) == 0) {
            seg = (ctn_fwd_seg){.seq = &seq, .tokens = &next, .n_tokens = 1, .logits = true};
            rc = ctn_fwd_run(f, &seg, 1, logits);
        }
    }
    if (rc < 0 && rc != CTN_ERANGE) __builtin_trap(); /* only NaN/inf logits may fail */
    ctn_fwd_seq_close(f, &seq);
done:
    free(logits);
    ctn_sampler_free(s);
    ctn_fwd_free(f);
    ctn_model_free(m);
    ctn_gguf_free(g);
    free(copy);
    return 0;
}

#ifdef CTN_FUZZ_MAKE_CORPUS
#include "randmodel.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen DIR\n");
        return 2;
    }
    static const randmodel_shape shapes[] = {
        {CTN_TYPE_F32, 16, 2, 1, 24, 1, true, 12, 10000, 1e-5f, 1, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_F16, 32, 4, 2, 40, 1, false, 12, 10000, 1e-5f, 2, RANDMODEL_QWEN2, 0},
        {CTN_TYPE_Q8_0, 32, 2, 1, 64, 1, true, 10, 1000000, 1e-6f, 3, RANDMODEL_QWEN3, 32},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        char path[4096], err[512];
        snprintf(path, sizeof path, "%s/seed%zu.gguf", argv[1], i);
        if (randmodel_write(&shapes[i], false, path, err, sizeof err) < 0) {
            fprintf(stderr, "%s: %s\n", path, err);
            return 1;
        }
    }
    return 0;
}
#endif
