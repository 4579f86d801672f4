/*
 * Which compute backends this build has. The CPU backend is always present and is the
 * reference; CUDA is compiled in only when the toolkit was found at build time, and is
 * usable only when a device is present at run time.
 */
#ifndef CTN_BACKEND_H
#define CTN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

/* True when the CUDA backend was compiled in. */
bool ctn_backend_cuda_built(void);
/* Number of CUDA devices usable now (0 without CUDA or without a GPU). */
int ctn_backend_cuda_devices(void);
/* One human-readable line, e.g. "CPU: on; CUDA: off (this build has no CUDA backend)". */
void ctn_backend_describe(char *buf, size_t cap);

#endif
