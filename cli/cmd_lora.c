/*
 * catena lora merge BASE.gguf ADAPTER -o MERGED.gguf [--scale S] [--max-rank R]: writes the
 * base model with the adapter (a PEFT folder or a GGUF LoRA file) merged into its weights.
 * catena lora inspect BASE.gguf ADAPTER: loads the adapter against the model and prints its
 * matrices (rank, scale) and memory.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "error.h"
#include "gguf.h"
#include "lora.h"
#include "model.h"

static int usage(FILE *f) {
    fprintf(f, "usage: catena lora merge BASE.gguf ADAPTER -o MERGED.gguf [--scale S] "
               "[--max-rank R]\n"
               "       catena lora inspect BASE.gguf ADAPTER\n"
               "  ADAPTER is a Hugging Face PEFT folder (adapter_config.json and\n"
               "  adapter_model.safetensors) or a llama.cpp GGUF LoRA file.\n"
               "  merge writes W + S * (alpha / r) * B A into each adapted matrix, in the\n"
               "  matrix's own type (quantized types are quantized again), default S 1.\n");
    return f == stderr ? 2 : 0;
}

int ctn_cmd_lora(int argc, char **argv) {
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return usage(stdout);
    const char *sub = argv[1];
    const bool merge = !strcmp(sub, "merge");
    if (!merge && strcmp(sub, "inspect") != 0) {
        fprintf(stderr, "catena lora: unknown subcommand '%s'\n", sub);
        return usage(stderr);
    }
    const char *pos[2] = {NULL, NULL}, *out = NULL;
    int n_pos = 0;
    double scale = 1.0;
    long max_rank = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") && i + 1 < argc && merge) {
            out = argv[++i];
        } else if (!strcmp(a, "--scale") && i + 1 < argc && merge) {
            char *end;
            scale = strtod(argv[++i], &end);
            if (*end != 0 || !(scale == scale)) {
                fprintf(stderr, "catena lora merge: --scale '%s' is not a number\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--max-rank") && i + 1 < argc) {
            char *end;
            max_rank = strtol(argv[++i], &end, 10);
            if (*end != 0 || max_rank < 1 || max_rank > 65536) {
                fprintf(stderr, "catena lora: --max-rank '%s' is not 1..65536\n", argv[i]);
                return 2;
            }
        } else if (a[0] == '-' && a[1] != 0) {
            fprintf(stderr, "catena lora %s: unknown option '%s'\n", sub, a);
            return usage(stderr);
        } else if (n_pos < 2) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "catena lora %s: too many arguments ('%s')\n", sub, a);
            return usage(stderr);
        }
    }
    if (n_pos != 2 || (merge && out == NULL)) return usage(stderr);
    char err[1024];
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    ctn_lora *a = NULL;
    int status = 1;
    if (ctn_gguf_open(&g, pos[0], err, sizeof err) < 0 ||
        ctn_model_load(&m, g, err, sizeof err) < 0) {
        fprintf(stderr, "catena lora %s: %s\n", sub, err);
        goto done;
    }
    if (ctn_lora_load(m, pos[1], (int32_t)max_rank, &a, err, sizeof err) < 0) {
        fprintf(stderr, "catena lora %s: %s\n", sub, err);
        goto done;
    }
    if (merge) {
        if (ctn_lora_merge(g, m, a, (float)scale, out, err, sizeof err) < 0) {
            fprintf(stderr, "catena lora merge: %s\n", err);
            goto done;
        }
        int n = 0;
        for (int64_t i = 0; i < (int64_t)a->n_layer * CTN_LORA_N; i++)
            n += a->mats[i].rank > 0;
        printf("wrote %s: %d matrices merged (scale %g)\n", out, n, scale);
    } else {
        printf("adapter %s: %d layers, max rank %d, %zu bytes\n", pos[1], (int)a->n_layer,
               (int)a->max_rank, a->bytes);
        for (int64_t l = 0; l < a->n_layer; l++)
            for (int t = 0; t < CTN_LORA_N; t++) {
                const ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + t];
                if (mt->rank > 0)
                    printf("  blk.%lld.%-12s rank %3d  %lld x %lld  scale %g  %s\n", (long long)l,
                           ctn_lora_target_gguf((ctn_lora_target)t), (int)mt->rank,
                           (long long)mt->n_out, (long long)mt->n_in, (double)mt->scale,
                           ctn_type_name(mt->type));
            }
    }
    status = 0;
done:
    ctn_lora_free(a);
    ctn_model_free(m);
    ctn_gguf_free(g);
    return status;
}
