#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int ctn__cli_read_all(FILE *f, char **out, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) return CTN_ENOMEM;
    for (;;) {
        if (cap - n < 4096) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                return CTN_ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return CTN_EIO;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int ctn__cli_load_vocab(const char *cmd, const char *path, ctn_gguf **g, ctn_vocab **v) {
    char err[1024];
    *g = NULL;
    *v = NULL;
    if (ctn_gguf_open(g, path, err, sizeof err) < 0) {
        fprintf(stderr, "catena %s: %s\n", cmd, err);
        return 1;
    }
    if (ctn_vocab_load(v, *g, err, sizeof err) < 0) {
        fprintf(stderr, "catena %s: %s: %s\n", cmd, path, err);
        ctn_gguf_free(*g);
        *g = NULL;
        return 1;
    }
    return 0;
}

double ctn__cli_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int ctn__cli_parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int ctn__cli_parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0 || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}
