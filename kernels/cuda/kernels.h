/*
 * The CUDA backend's C interface, called by engine/ only through the backend layer.
 * Every function returns 0 or a negative CTN_E* code; CUDA errors never abort.
 */
#ifndef CTN_KERNELS_H
#define CTN_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices (0 when the driver or a device is missing). */
int ctn_cuda_device_count(void);
/* Writes "NAME (cc X.Y, N MiB)" of device i into buf; 0 or a negative error. */
int ctn_cuda_device_describe(int i, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
