// Device discovery for the CUDA backend. A machine with the toolkit but no GPU (CI) must
// report zero devices, not fail, so every runtime error maps to "no device".
#include "kernels.h"

#include "base.h"

#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int ctn_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky error so later calls start clean
        return 0;
    }
    return n;
}

extern "C" int ctn_cuda_device_describe(int i, char *buf, size_t cap) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
        cudaGetLastError();
        return CTN_EINVAL; // no such device
    }
    snprintf(buf, cap, "%s (cc %d.%d, %zu MiB)", p.name, p.major, p.minor,
             (size_t)(p.totalGlobalMem >> 20));
    return 0;
}
