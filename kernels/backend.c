/* What this build has for compute, and freeing a backend (backend.h). */
#include "backend.h"

#include <stdio.h>

#ifdef CTN_HAVE_CUDA
#include "kernels.h"
#endif

bool ctn_backend_cuda_built(void) {
#ifdef CTN_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

int ctn_backend_cuda_devices(void) {
#ifdef CTN_HAVE_CUDA
    return ctn_cuda_device_count();
#else
    return 0;
#endif
}

void ctn_backend_describe(char *buf, size_t cap) {
#ifdef CTN_HAVE_CUDA
    int n = ctn_cuda_device_count();
    if (n > 0) {
        char dev[160] = "";
        ctn_cuda_device_describe(0, dev, sizeof dev);
        snprintf(buf, cap, "CPU: on; CUDA: on (%d device%s, first: %s)", n, n == 1 ? "" : "s",
                 dev);
    } else {
        snprintf(buf, cap, "CPU: on; CUDA: built, but no CUDA device is available");
    }
#else
    snprintf(buf, cap, "CPU: on; CUDA: off (this build has no CUDA backend)");
#endif
}

void ctn_backend_free(ctn_backend *be) {
    if (be != NULL) be->vt->free(be);
}
