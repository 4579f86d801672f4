/*
 * Read-only file mappings for the readers of outside files (GGUF, safetensors, llama2.c):
 * weights are used in place, not copied.
 *
 *     void *map; size_t len;
 *     if (ctn__map_file(path, &map, &len, NULL, err, sizeof err) < 0) ...
 *     ...
 *     ctn__unmap_file(map, len);
 *
 * A file truncated by another process while mapped raises SIGBUS on access; that is the
 * price of not copying weights.
 */
#ifndef CTN_MAPFILE_H
#define CTN_MAPFILE_H

#include <stddef.h>

/* Maps the regular file at path (*map NULL for an empty file). With fd not NULL the open
 * descriptor is returned there for the caller to close; otherwise it is closed (the mapping
 * keeps the file). Errors name the path: CTN_ENOENT, CTN_EIO (not a regular file, or open,
 * stat or mmap failed), CTN_ENOTSUP (larger than the address space), CTN_ENOMEM. */
int ctn__map_file(const char *path, void **map, size_t *len, int *fd, char *err, size_t errcap);
void ctn__unmap_file(void *map, size_t len);

#endif
