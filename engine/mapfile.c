/*
 * Read-only file mappings (mapfile.h).
 */
#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

int ctn__map_file(const char *path, void **map, size_t *len, int *fd_out, char *err,
                  size_t errcap) {
    *map = NULL;
    *len = 0;
    if (fd_out != NULL) *fd_out = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        ctn__errf(err, errcap, "%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? CTN_ENOENT : CTN_EIO;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        ctn__errf(err, errcap, "%s: cannot stat: %s", path, strerror(errno));
        rc = CTN_EIO;
    } else if (!S_ISREG(st.st_mode)) {
        ctn__errf(err, errcap, "%s: not a regular file", path);
        rc = CTN_EIO;
    } else if ((uint64_t)st.st_size > SIZE_MAX) {
        ctn__errf(err, errcap, "%s: file too large to map", path);
        rc = CTN_ENOTSUP;
    } else if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            ctn__errf(err, errcap, "%s: cannot map: %s", path, strerror(e));
            rc = e == ENOMEM ? CTN_ENOMEM : CTN_EIO;
        } else {
            *map = p;
            *len = (size_t)st.st_size;
        }
    }
    if (rc < 0 || fd_out == NULL)
        close(fd);
    else
        *fd_out = fd;
    return rc;
}

void ctn__unmap_file(void *map, size_t len) {
    if (map != NULL) munmap(map, len);
}
