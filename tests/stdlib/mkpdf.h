/*
 * The PDFs of the PDF loader's tests, made at run time by tests/tools/mkpdf in a temporary
 * folder (header-only; one folder per test program).
 *
 *     if (mkpdf_init() != 0) return 1;
 *     size_t n; int st;
 *     char *pdf = mkpdf_bytes("table", &n, &st);   // malloc'd; NULL: st is mkpdf's status
 *     free(pdf);
 *     mkpdf_cleanup();
 *
 * The tool is $MKPDF (ctest sets it), else build/tools/mkpdf from the source root, where
 * the tests run. Status 77 from the tool means this machine cannot make that mode.
 */
#ifndef CTN_TEST_MKPDF_H
#define CTN_TEST_MKPDF_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char mkpdf_dir[64];
static const char *mkpdf_made[16];
static size_t mkpdf_n_made;

static inline const char *mkpdf_path(void) {
    const char *p = getenv("MKPDF");
    return p != NULL && *p != '\0' ? p : "build/tools/mkpdf";
}

/* Makes the temporary folder: 0, or -1 (said on stdout). */
static inline int mkpdf_init(void) {
    const char *t = getenv("TMPDIR");
    snprintf(mkpdf_dir, sizeof mkpdf_dir, "%s/ctn_pdf_XXXXXX",
             t != NULL && *t != '\0' && strlen(t) < 40 ? t : "/tmp");
    if (mkdtemp(mkpdf_dir) != NULL) return 0;
    printf("cannot make a temporary folder %s\n", mkpdf_dir);
    return -1;
}

/* Runs mkpdf OUT MODE; its exit status, or -1 when it did not exit normally. */
static inline int mkpdf_run(const char *out, const char *mode) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execl(mkpdf_path(), "mkpdf", out, mode, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

/* The whole file at path (malloc'd) and *n, or NULL. */
static inline char *mkpdf_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 65536;
            char *q = realloc(buf, cap);
            if (q == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = q;
        }
        const size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    fclose(f);
    *n = len;
    return buf;
}

/* The bytes of mode's PDF (malloc'd), made on first use; NULL when mkpdf did not make it,
 * with its exit status in *status when status is not NULL (127: the tool is missing). */
static inline char *mkpdf_bytes(const char *mode, size_t *n, int *status) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s.pdf", mkpdf_dir, mode);
    if (access(path, R_OK) != 0) {
        const int st = mkpdf_run(path, mode);
        if (status != NULL) *status = st;
        if (st != 0) return NULL;
        if (mkpdf_n_made < sizeof mkpdf_made / sizeof mkpdf_made[0])
            mkpdf_made[mkpdf_n_made++] = mode;
    }
    return mkpdf_read(path, n);
}

/* Removes what mkpdf_bytes made and the folder. */
static inline void mkpdf_cleanup(void) {
    for (size_t i = 0; i < mkpdf_n_made; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s.pdf", mkpdf_dir, mkpdf_made[i]);
        remove(path);
    }
    rmdir(mkpdf_dir);
}

#endif
