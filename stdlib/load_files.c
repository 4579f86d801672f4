/*
 * Files for the loaders (loader.h): the loader for a path, reading a whole file, and the
 * listing of a folder tree. The only code of the loaders that touches the file system.
 *
 * Choices of the listing:
 *   - Only regular files are listed, and symbolic links to them; links to folders are not
 *     followed (a tree cannot loop then), and broken links, devices, pipes and sockets are
 *     passed over. The root itself is followed when it is a link: the caller named it.
 *   - Names starting with '.' (and the folders they name) are hidden: without a glob they
 *     are skipped; with one, a segment matches them only when it starts with '.' itself
 *     (FNM_PERIOD: "**" and "*" never take ".git"; the segments ".*" and ".git" do).
 *   - A glob is matched segment by segment against the path relative to the root ("a/b.md"),
 *     each segment with fnmatch (FNM_PATHNAME | FNM_PERIOD). A segment "**" takes any number
 *     of folders, none included, so "**" "/" "*.md" lists a.md and x/y/a.md; a trailing
 *     "**" takes everything inside its folder (not a file of that name). Empty segments
 *     ("a//b", a leading '/') are dropped. Folders that no match can lie under are not read.
 *   - Paths are the root, a '/' (unless the root ends with one) and the relative path;
 *     they are sorted by their bytes (strcmp).
 *   - A root that is not a folder is listed as itself, whatever the glob: the caller named
 *     that file.
 *   - An error (a folder that cannot be read, a name that cannot be checked) ends the
 *     listing with CTN_EIO naming that path; nothing is returned then.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "loader-impl.h"
#include "loader.h"
#include "str.h"

/* strerror_r, because strerror may share a buffer between the threads that load. */
static const char *why(int e, char *buf, size_t cap) {
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(e, buf, cap);
#else
    return strerror_r(e, buf, cap) == 0 ? buf : "unknown error";
#endif
}

/* ---- loaders by extension --------------------------------------------------------------- */

static const struct {
    const char *ext;
    ctn_loader_kind kind;
} by_ext[] = {
    {"txt", CTN_LOADER_TEXT},          {"text", CTN_LOADER_TEXT}, {"md", CTN_LOADER_MARKDOWN},
    {"markdown", CTN_LOADER_MARKDOWN}, {"json", CTN_LOADER_JSON}, {"jsonl", CTN_LOADER_JSONL},
    {"ndjson", CTN_LOADER_JSONL},      {"pdf", CTN_LOADER_PDF},
};

/* ASCII case-insensitive equality, not strcasecmp: that one follows the locale. */
static bool ascii_eq_nocase(const char *a, const char *b) {
    for (; *a != '\0' && *b != '\0'; a++, b++) {
        const unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
        if ((x >= 'A' && x <= 'Z' ? x + 32 : x) != (y >= 'A' && y <= 'Z' ? y + 32 : y))
            return false;
    }
    return *a == *b;
}

/* The extension is what follows the last '.' of the file name; a name's leading '.' (as in
 * ".json") starts no extension. */
ctn_loader_kind ctn_loader_for(const char *path) {
    if (path == NULL) return CTN_LOADER_NONE;
    const char *name = strrchr(path, '/');
    name = name != NULL ? name + 1 : path;
    const char *dot = strrchr(name, '.');
    if (dot == NULL || dot == name) return CTN_LOADER_NONE;
    for (size_t i = 0; i < sizeof by_ext / sizeof by_ext[0]; i++)
        if (ascii_eq_nocase(dot + 1, by_ext[i].ext)) return by_ext[i].kind;
    return CTN_LOADER_NONE;
}

const char *ctn_loader_name(ctn_loader_kind k) {
    switch (k) {
    case CTN_LOADER_TEXT: return "text";
    case CTN_LOADER_MARKDOWN: return "markdown";
    case CTN_LOADER_JSON: return "json";
    case CTN_LOADER_JSONL: return "jsonl";
    case CTN_LOADER_PDF: return "pdf";
    default: return "none";
    }
}

/* ---- reading a file --------------------------------------------------------------------- */

/* Room for need bytes and the NUL in *buf: doubles *cap (or more); false when memory ran
 * out or the size would overflow (then *buf is freed). */
static bool grow(char **buf, size_t *cap, size_t need) {
    size_t c = *cap <= SIZE_MAX / 2 ? *cap * 2 : SIZE_MAX;
    if (c <= need) c = need < SIZE_MAX ? need + 1 : 0;
    char *q = c > need ? ctn__realloc(*buf, c) : NULL;
    if (q == NULL) {
        free(*buf);
        *buf = NULL;
        return false;
    }
    *buf = q;
    *cap = c;
    return true;
}

/*
 * Reads fd to its end into a buffer sized from fstat's size (a hint only: the file may
 * change, and some files report 0), with room for the NUL. Once the buffer is full, a read
 * into a small probe finds the end without growing it, so a file that kept its size is
 * read with one allocation.
 */
static int read_all(int fd, size_t hint, const char *path, char **data, size_t *n, char *err,
                    size_t errcap) {
    size_t cap = hint < SIZE_MAX ? hint + 1 : hint, len = 0;
    char *buf = ctn__malloc(cap);
    while (buf != NULL) {
        char probe[4096];
        const bool full = len + 1 == cap;
        const ssize_t r = read(fd, full ? probe : buf + len, full ? sizeof probe : cap - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            char b[128];
            CTN__LOAD_ERR("%s: cannot read: %s", path, why(errno, b, sizeof b));
            free(buf);
            return CTN_EIO;
        }
        if (r == 0) {
            buf[len] = '\0';
            *data = buf;
            *n = len;
            return 0;
        }
        if (full && grow(&buf, &cap, len + (size_t)r)) memcpy(buf + len, probe, (size_t)r);
        len += (size_t)r;
    }
    CTN__LOAD_ERR("%s: out of memory", path);
    return CTN_ENOMEM;
}

int ctn_load_file(const char *path, char **data, size_t *n, char *err, size_t errcap) {
    if (data != NULL) *data = NULL;
    if (n != NULL) *n = 0;
    if (path == NULL || data == NULL || n == NULL) {
        CTN__LOAD_ERR("ctn_load_file: NULL argument");
        return CTN_EINVAL;
    }
    char b[128];
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        CTN__LOAD_ERR("%s: cannot open: %s", path, why(errno, b, sizeof b));
        return CTN_EIO;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        CTN__LOAD_ERR("%s: cannot stat: %s", path, why(errno, b, sizeof b));
        rc = CTN_EIO;
    } else if (S_ISDIR(st.st_mode)) {
        CTN__LOAD_ERR("%s: is a folder, not a file", path);
        rc = CTN_EIO;
    } else {
        const size_t hint =
            S_ISREG(st.st_mode) && (uintmax_t)st.st_size < SIZE_MAX ? (size_t)st.st_size : 0;
        rc = read_all(fd, hint, path, data, n, err, errcap);
    }
    close(fd);
    return rc;
}

/* ---- listing ---------------------------------------------------------------------------- */

typedef struct {
    char **segs; /* the glob's segments, NUL-terminated; NULL: no glob */
    size_t n_segs;
    char *block;  /* the storage of segs */
    char **names; /* the relative path being visited, one name per level (borrowed) */
    size_t depth, names_cap;
    ctn_strbuf path; /* the full path being visited */
    char **out;
    size_t n_out, out_cap;
    char *err;
    size_t errcap;
} lister;

/* Splits the glob at '/', dropping empty segments. 0, CTN_EINVAL (nothing left), ENOMEM. */
static int glob_init(lister *l, const char *glob) {
    const size_t len = strlen(glob);
    l->block = ctn__malloc(len + 1);
    l->segs = ctn__malloc((len / 2 + 1) * sizeof *l->segs);
    if (l->block == NULL || l->segs == NULL) return CTN_ENOMEM;
    memcpy(l->block, glob, len + 1);
    for (char *s = l->block; *s != '\0';) {
        char *slash = strchr(s, '/');
        if (slash != NULL) *slash = '\0';
        if (*s != '\0') l->segs[l->n_segs++] = s;
        s = slash != NULL ? slash + 1 : s + strlen(s);
    }
    return l->n_segs > 0 ? 0 : CTN_EINVAL;
}

static bool hidden(const char *name) {
    return name[0] == '.';
}

/*
 * Whether names[si, n) matches glob segments [pi, end). With prefix, names is a folder and
 * the question is whether a file under it may match: some segments must be left for it.
 * A "**" first tries taking no name, then takes one (never a hidden one) and goes on.
 */
static bool match(const lister *l, size_t pi, const char *const *names, size_t si, size_t n,
                  bool prefix) {
    for (;;) {
        if (si == n) return prefix ? pi < l->n_segs : pi == l->n_segs;
        if (pi == l->n_segs) return false;
        const char *p = l->segs[pi];
        if (strcmp(p, "**") == 0) {
            if (pi + 1 < l->n_segs && match(l, pi + 1, names, si, n, prefix)) return true;
            if (hidden(names[si])) return false;
            si++;
            if (pi + 1 == l->n_segs && si == n) return true; /* a trailing one took the rest */
            continue;
        }
        if (fnmatch(p, names[si], FNM_PATHNAME | FNM_PERIOD) != 0) return false;
        pi++;
        si++;
    }
}

/* Whether the entry at names[0, depth] (a file or, with dir, a folder) is wanted. */
static bool wanted(const lister *l, bool dir) {
    const char *name = l->names[l->depth];
    if (l->segs == NULL) /* no glob: visible files of a known kind, in visible folders */
        return !hidden(name) && (dir || ctn_loader_for(name) != CTN_LOADER_NONE);
    return match(l, 0, (const char *const *)l->names, 0, l->depth + 1, dir);
}

static int add_path(lister *l, const char *path) {
    if (l->n_out == l->out_cap) {
        const size_t cap = l->out_cap ? l->out_cap * 2 : 16;
        char **q = ctn__realloc(l->out, cap * sizeof *q);
        if (q == NULL) return CTN_ENOMEM;
        l->out = q;
        l->out_cap = cap;
    }
    char *s = ctn__strdup(path);
    if (s == NULL) return CTN_ENOMEM;
    l->out[l->n_out++] = s;
    return 0;
}

static void free_strings(char **v, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* The names in the folder at l->path (without "." and ".."), read in full and closed before
 * any is visited, so that a deep tree holds one folder open at a time. */
static int read_names(lister *l, char ***names, size_t *n) {
    char *err = l->err;
    const size_t errcap = l->errcap;
    char b[128];
    *names = NULL;
    *n = 0;
    DIR *d = opendir(l->path.p);
    if (d == NULL) {
        CTN__LOAD_ERR("%s: cannot read the folder: %s", l->path.p, why(errno, b, sizeof b));
        return CTN_EIO;
    }
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        const struct dirent *e = readdir(d);
        if (e == NULL) {
            if (errno != 0) {
                CTN__LOAD_ERR("%s: cannot read the folder: %s", l->path.p, why(errno, b, sizeof b));
                rc = CTN_EIO;
            }
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **q = ctn__realloc(*names, cap * sizeof *q);
            if (q == NULL) {
                rc = CTN_ENOMEM;
                break;
            }
            *names = q;
        }
        if (((*names)[*n] = ctn__strdup(e->d_name)) == NULL) {
            rc = CTN_ENOMEM;
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (rc < 0) {
        free_strings(*names, *n);
        *names = NULL;
        *n = 0;
    }
    return rc;
}

/* What the entry at l->path is: 'f' a file to consider, 'd' a folder to go into, 0 neither.
 * A link counts as a file when it leads to one, and never as a folder. */
static int entry_kind(lister *l, char *kind) {
    struct stat st;
    *kind = 0;
    if (lstat(l->path.p, &st) != 0) {
        if (errno == ENOENT) return 0; /* gone since the folder was read */
        char *err = l->err, b[128];
        const size_t errcap = l->errcap;
        CTN__LOAD_ERR("%s: cannot check: %s", l->path.p, why(errno, b, sizeof b));
        return CTN_EIO;
    }
    const bool link = S_ISLNK(st.st_mode);
    if (link && stat(l->path.p, &st) != 0) return 0; /* a broken link */
    if (S_ISREG(st.st_mode)) *kind = 'f';
    if (S_ISDIR(st.st_mode) && !link) *kind = 'd';
    return 0;
}

static int walk_dir(lister *l);

/* Visits one name of the folder at l->path: l->path gets "/name" while it is visited. */
static int visit_name(lister *l, char *name) {
    const size_t mark = l->path.len;
    if (mark == 0 || l->path.p[mark - 1] != '/') ctn_sb_put(&l->path, "/", 1);
    ctn_sb_puts(&l->path, name);
    if (l->path.oom) return CTN_ENOMEM;
    char kind;
    int rc = entry_kind(l, &kind);
    l->names[l->depth] = name;
    if (rc == 0 && kind == 'f' && wanted(l, false)) rc = add_path(l, l->path.p);
    if (rc == 0 && kind == 'd' && wanted(l, true)) {
        l->depth++;
        rc = walk_dir(l);
        l->depth--;
    }
    l->path.len = mark;
    l->path.p[mark] = '\0';
    return rc;
}

/* Lists the folder at l->path, whose relative path is names[0, depth). */
static int walk_dir(lister *l) {
    if (l->depth + 1 > l->names_cap) {
        const size_t cap = l->names_cap ? l->names_cap * 2 : 8;
        char **q = ctn__realloc(l->names, cap * sizeof *q);
        if (q == NULL) return CTN_ENOMEM;
        l->names = q;
        l->names_cap = cap;
    }
    char **names;
    size_t n;
    int rc = read_names(l, &names, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = visit_name(l, names[i]);
    free_strings(names, n);
    return rc;
}

static int by_bytes(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The root: a folder is walked, anything else is listed as itself. */
static int list_root(lister *l, const char *root) {
    char *err = l->err, b[128];
    const size_t errcap = l->errcap;
    struct stat st;
    if (stat(root, &st) != 0) {
        CTN__LOAD_ERR("%s: cannot open: %s", root, why(errno, b, sizeof b));
        return CTN_EIO;
    }
    if (!S_ISDIR(st.st_mode)) return add_path(l, root);
    ctn_sb_puts(&l->path, root);
    if (l->path.oom) return CTN_ENOMEM;
    const int rc = walk_dir(l);
    if (rc == 0 && l->n_out > 1) qsort(l->out, l->n_out, sizeof *l->out, by_bytes);
    return rc;
}

int ctn_list_files(const char *root, const char *glob, char ***paths, size_t *n, char *err,
                   size_t errcap) {
    if (paths != NULL) *paths = NULL;
    if (n != NULL) *n = 0;
    if (root == NULL || paths == NULL || n == NULL || root[0] == '\0') {
        CTN__LOAD_ERR("ctn_list_files: no root or no place for the result");
        return CTN_EINVAL;
    }
    lister l = {.err = err, .errcap = errcap};
    int rc = glob != NULL ? glob_init(&l, glob) : 0;
    if (rc == CTN_EINVAL) CTN__LOAD_ERR("%s: the glob \"%s\" is empty", root, glob);
    if (rc == 0) rc = list_root(&l, root);
    if (rc == CTN_ENOMEM) CTN__LOAD_ERR("%s: out of memory", root);
    free(l.segs);
    free(l.block);
    free(l.names);
    ctn_sb_free(&l.path);
    if (rc < 0) {
        free_strings(l.out, l.n_out);
        return rc;
    }
    *paths = l.out;
    *n = l.n_out;
    return 0;
}
