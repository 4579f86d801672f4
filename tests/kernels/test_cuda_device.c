/*
 * The CUDA backend's device discovery. Built only when the toolkit is found; exits 77 (a
 * ctest skip) on a machine with the toolkit but no GPU, such as CI.
 */
#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "test.h"

TEST(describes_every_device) {
    int n = ctn_cuda_device_count();
    CHECK(n > 0);
    for (int i = 0; i < n; i++) {
        char buf[256] = "";
        CHECK_EQ_INT(ctn_cuda_device_describe(i, buf, sizeof buf), 0);
        CHECK_CONTAINS(buf, "MiB");
        printf("  device %d: %s\n", i, buf);
    }
}

TEST(rejects_a_device_that_is_not_there) {
    char buf[64] = "";
    CHECK(ctn_cuda_device_describe(ctn_cuda_device_count() + 3, buf, sizeof buf) < 0);
    CHECK(ctn_cuda_device_describe(-1, buf, sizeof buf) < 0);
}

int main(void) {
    if (ctn_cuda_device_count() == 0) {
        printf("skip: CUDA is built but no CUDA device is available\n");
        return 77;
    }
    RUN(describes_every_device);
    RUN(rejects_a_device_that_is_not_there);
    return test_summary();
}
