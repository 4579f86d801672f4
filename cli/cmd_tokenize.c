/*
 * `catena tokenize` and `catena detokenize`: the tokenizer on the command line, in the
 * same format as llama.cpp's test vectors (ids on one line, separated by single spaces).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static int usage_tok(FILE *f) {
    fprintf(f, "usage: catena tokenize -m MODEL.gguf [--no-bos] [--parse-special] < TEXT\n"
               "  Prints the token ids of stdin on one line. By default special tokens (BOS,\n"
               "  EOS) are added as the model's metadata says; --no-bos adds none.\n"
               "  --parse-special matches control tokens written in the text (<s>, ...).\n");
    return f == stderr ? 2 : 0;
}

int ctn_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL;
    bool add_special = true, parse_special = false;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--no-bos")) {
            add_special = false;
        } else if (!strcmp(argv[i], "--parse-special")) {
            parse_special = true;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            return usage_tok(stdout);
        } else {
            fprintf(stderr, "catena tokenize: unknown or incomplete argument '%s'\n", argv[i]);
            return usage_tok(stderr);
        }
    }
    if (model == NULL) {
        fprintf(stderr, "catena tokenize: no model given (-m MODEL.gguf)\n");
        return usage_tok(stderr);
    }
    ctn_gguf *g;
    ctn_vocab *v;
    if (ctn__cli_load_vocab("tokenize", model, &g, &v)) return 1;

    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    int status = 1;
    int rc = ctn__cli_read_all(stdin, &text, &len);
    if (rc < 0) {
        fprintf(stderr, "catena tokenize: reading stdin: %s\n", ctn_strerror(rc));
        goto done;
    }
    rc = ctn_tokenize(v, text, len, add_special, parse_special, &ids, &n);
    if (rc < 0) {
        fprintf(stderr, "catena tokenize: %s\n", ctn_strerror(rc));
        goto done;
    }
    /* One buffered write keeps a 1M-token output fast. */
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
    status = fflush(stdout) == 0 ? 0 : 1;
done:
    free(ids);
    free(text);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    return status;
}

static int usage_detok(FILE *f) {
    fprintf(f, "usage: catena detokenize -m MODEL.gguf [--special] [--keep-bos] < IDS\n"
               "  Reads token ids separated by whitespace and prints their text.\n"
               "  --special renders control tokens (<s>, <|im_end|>, ...) as text;\n"
               "  --keep-bos keeps a leading BOS / trailing EOS that the model adds.\n");
    return f == stderr ? 2 : 0;
}

int ctn_cmd_detokenize(int argc, char **argv) {
    const char *model = NULL;
    bool special = false, remove_special = true;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--special")) {
            special = true;
        } else if (!strcmp(argv[i], "--keep-bos")) {
            remove_special = false;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            return usage_detok(stdout);
        } else {
            fprintf(stderr, "catena detokenize: unknown or incomplete argument '%s'\n", argv[i]);
            return usage_detok(stderr);
        }
    }
    if (model == NULL) {
        fprintf(stderr, "catena detokenize: no model given (-m MODEL.gguf)\n");
        return usage_detok(stderr);
    }
    ctn_gguf *g;
    ctn_vocab *v;
    if (ctn__cli_load_vocab("detokenize", model, &g, &v)) return 1;

    char *in = NULL, *text = NULL;
    size_t len = 0, n = 0, cap = 0, tlen = 0;
    int32_t *ids = NULL;
    int status = 1;
    int rc = ctn__cli_read_all(stdin, &in, &len);
    if (rc < 0) {
        fprintf(stderr, "catena detokenize: reading stdin: %s\n", ctn_strerror(rc));
        goto done;
    }
    const int32_t n_vocab = ctn_vocab_n_tokens(v);
    for (char *p = in;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
        if (*p == '\0') break;
        char *end;
        errno = 0;
        long long id = strtoll(p, &end, 10);
        if (end == p || errno != 0 || (*end && !strchr(" \t\r\n,", *end))) {
            int w = 0;
            while (p[w] && !strchr(" \t\r\n,", p[w]) && w < 40) w++;
            fprintf(stderr, "catena detokenize: input byte %zu: '%.*s' is not a token id\n",
                    (size_t)(p - in), w, p);
            goto done;
        }
        if (id < 0 || id >= n_vocab) {
            fprintf(stderr,
                    "catena detokenize: input byte %zu: token id %lld is out of range "
                    "(the vocabulary has %d tokens)\n",
                    (size_t)(p - in), id, (int)n_vocab);
            goto done;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            int32_t *ni = realloc(ids, cap * sizeof *ids);
            if (ni == NULL) {
                fprintf(stderr, "catena detokenize: out of memory\n");
                goto done;
            }
            ids = ni;
        }
        ids[n++] = (int32_t)id;
        p = end;
    }
    /*
     * llama_detokenize strips the space that add_space_prefix put before the first word
     * only when the first id is not a BOS it removed, so [BOS, "▁Hello"] decodes to
     * " Hello". The command is the reverse of `catena tokenize`, so it removes the BOS and
     * EOS that the model adds itself and asks the library to remove nothing more: then the
     * first word's space is stripped and text -> ids -> the same text.
     */
    size_t first = 0, end = n;
    if (remove_special && end > first && ctn_vocab_add_bos(v) && ids[first] == ctn_vocab_bos(v))
        first++;
    if (remove_special && end > first && ctn_vocab_add_eos(v) && ids[end - 1] == ctn_vocab_eos(v))
        end--;
    rc = ctn_detokenize(v, ids + first, end - first, false, special, &text, &tlen);
    if (rc < 0) {
        fprintf(stderr, "catena detokenize: %s\n", ctn_strerror(rc));
        goto done;
    }
    fwrite(text, 1, tlen, stdout);
    status = fflush(stdout) == 0 ? 0 : 1;
done:
    free(text);
    free(ids);
    free(in);
    ctn_vocab_free(v);
    ctn_gguf_free(g);
    return status;
}
