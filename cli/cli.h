/* Small helpers shared by the subcommands of the `catena` command. */
#ifndef CTN_CLI_H
#define CTN_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "gguf.h"
#include "vocab.h"

/* Reads a whole stream into a malloc'd, NUL-terminated buffer; 0 or a CTN_E* code. */
int ctn__cli_read_all(FILE *f, char **out, size_t *len);

/*
 * Opens a GGUF and loads its vocabulary, printing "catena CMD: <reason>" on failure.
 * Returns 0 or 1 (the exit status to use). On success the caller frees both.
 */
int ctn__cli_load_vocab(const char *cmd, const char *path, ctn_gguf **g, ctn_vocab **v);

/* Seconds on a monotonic clock. */
double ctn__cli_now_s(void);

/* A whole decimal number in lo..hi into *out; 0, or -1 (nothing written) otherwise. */
int ctn__cli_parse_long(const char *s, long lo, long hi, long *out);
/* A whole finite decimal number in lo..hi into *out; 0, or -1 (nothing written) otherwise. */
int ctn__cli_parse_double(const char *s, double lo, double hi, double *out);

#endif
