/*
 * `catena convert llama2c MODEL.bin TOKENIZER.bin -o OUT.gguf`: converts a model from
 * another format to GGUF. llama2.c checkpoints are the one source format so far; the
 * conversion itself is engine/llama2c.c.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "error.h"
#include "llama2c.h"

static int usage(FILE *f) {
    fprintf(f, "usage: catena convert llama2c MODEL.bin TOKENIZER.bin -o OUT.gguf\n"
               "  Converts a llama2.c checkpoint and its tokenizer.bin to a GGUF file with\n"
               "  the metadata, vocabulary and tensors llama.cpp's converter writes.\n");
    return f == stderr ? 2 : 0;
}

int ctn_cmd_convert(int argc, char **argv) {
    const char *pos[3] = {NULL, NULL, NULL}, *out = NULL;
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            return usage(stdout);
        } else if (argv[i][0] != '-' && n_pos < 3) {
            pos[n_pos++] = argv[i];
        } else {
            fprintf(stderr, "catena convert: unknown or incomplete argument '%s'\n", argv[i]);
            return usage(stderr);
        }
    }
    if (n_pos == 0) {
        fprintf(stderr, "catena convert: no source format given\n");
        return usage(stderr);
    }
    if (strcmp(pos[0], "llama2c") != 0) {
        fprintf(stderr, "catena convert: unknown source format '%s' (known: llama2c)\n", pos[0]);
        return usage(stderr);
    }
    if (n_pos != 3) {
        fprintf(stderr, "catena convert: llama2c needs MODEL.bin and TOKENIZER.bin\n");
        return usage(stderr);
    }
    if (out == NULL) {
        fprintf(stderr, "catena convert: no output file given (-o OUT.gguf)\n");
        return usage(stderr);
    }
    char err[1024];
    int rc = ctn_llama2c_convert(pos[1], pos[2], out, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "catena convert: %s\n", err);
        return 1;
    }
    printf("wrote %s\n", out);
    return 0;
}
