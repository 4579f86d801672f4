/*
 * The `catena` command: one binary for every user-facing job. Subcommands live in
 * cli/cmd_*.c; this file only dispatches.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "commands.h"

#ifndef CTN_VERSION
#define CTN_VERSION "dev"
#endif

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"inspect", ctn_cmd_inspect, "print a GGUF file's metadata and tensor table [--json]"},
    {"tokenize", ctn_cmd_tokenize, "print the token ids of stdin (-m MODEL.gguf [--no-bos])"},
    {"detokenize", ctn_cmd_detokenize, "print the text of token ids on stdin (-m MODEL.gguf)"},
    {"convert", ctn_cmd_convert, "convert llama2.c files to GGUF (llama2c M.bin T.bin -o O.gguf)"},
    {"quantize", ctn_cmd_quantize,
     "rewrite a GGUF model with its weights in one type (IN OUT TYPE)"},
    {"generate", ctn_cmd_generate, "continue a prompt (-m MODEL.gguf -p PROMPT [-n N] ...)"},
    {"batch", ctn_cmd_batch,
     "run a JSONL file of prompts through one batching engine (-m M --prompts F.jsonl)"},
    {"perplexity", ctn_cmd_perplexity,
     "perplexity and KL divergence as llama-perplexity (-m MODEL.gguf -f TEXT ...)"},
    {"lora", ctn_cmd_lora, "merge a LoRA adapter into a model, or inspect one (merge|inspect ...)"},
    {"ingest", ctn_cmd_ingest,
     "load, split and embed files into a knowledge base (PATH... --db KB.sqlite ...)"},
    {"search", ctn_cmd_search, "the best chunks of a knowledge base for a query (bm25|vector|hybrid)"},
    {"kb", ctn_cmd_kb, "a knowledge base's statistics, documents and checks (stats|list|...)"},
    {"serve", ctn_cmd_serve, "an OpenAI-compatible HTTP server for a model (-m MODEL.gguf [--port N])"},
    {"run", ctn_cmd_run, "run a Lua chain script ([--trace] SCRIPT.lua [ARGS...])"},
    {"repl", ctn_cmd_repl, "an interactive Lua session with the chain library (also: bare catena)"},
    {"bench", ctn_cmd_bench, "measure prefill and decode speed (-m MODEL.gguf), one JSON line"},
};

static int usage(FILE *f) {
    fprintf(f, "usage: catena COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "  %-12s %s\n", "version", "print the version and the compute backends");
    fprintf(f, "\nRun 'catena COMMAND --help' for a command's options.\n");
    return f == stderr ? 2 : 0;
}

int main(int argc, char **argv) {
    /* Bare `catena` on a terminal is the REPL; elsewhere (a pipe, a script) the usage. */
    if (argc < 2) return isatty(0) && isatty(1) ? ctn_cmd_repl(argc, argv) : usage(stderr);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) return usage(stdout);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        char info[256];
        ctn_backend_describe(info, sizeof info);
        printf("catena %s\n%s\nCPU kernels: %s (set CATENA_ISA=scalar|avx2|avx512|amx to choose)\n",
               CTN_VERSION, info, ctn_backend_cpu_isa());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "catena: unknown command '%s'\n", cmd);
    return usage(stderr);
}
