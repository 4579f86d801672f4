/*
 * A minimal unit-test harness: each test file is its own executable run by ctest.
 *
 *     TEST(parses_header) { CHECK(x == 1); CHECK_EQ_INT(a, b); CHECK_STR(s, "abc"); }
 *     int main(void) { RUN(parses_header); return test_summary(); }
 *
 * A failing CHECK reports file:line and the expression, marks the test failed and goes on.
 * The last line printed is "N passed, N failed".
 */
#ifndef CTN_TEST_H
#define CTN_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int test_n_pass, test_n_fail, test_n_skip, test_cur_failed, test_cur_skipped;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                                            \
    do {                                                                                     \
        test_cur_failed = 0;                                                                 \
        test_cur_skipped = 0;                                                                \
        test_##name();                                                                       \
        if (test_cur_failed) {                                                               \
            test_n_fail++;                                                                   \
            printf("FAIL %s\n", #name);                                                      \
        } else if (test_cur_skipped) {                                                       \
            test_n_skip++;                                                                   \
            printf("skip %s\n", #name);                                                      \
        } else {                                                                             \
            test_n_pass++;                                                                   \
            printf("ok   %s\n", #name);                                                      \
        }                                                                                    \
        fflush(stdout);                                                                      \
    } while (0)

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                \
            test_cur_failed = 1;                                                             \
        }                                                                                    \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                   \
    do {                                                                                     \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                \
        if (va_ != vb_) {                                                                    \
            printf("  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,   \
                   va_, vb_);                                                                \
            test_cur_failed = 1;                                                             \
        }                                                                                    \
    } while (0)

#define CHECK_STR(a, b)                                                                      \
    do {                                                                                     \
        const char *sa_ = (a), *sb_ = (b);                                                   \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) {                           \
            printf("  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a,   \
                   #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                          \
            test_cur_failed = 1;                                                             \
        }                                                                                    \
    } while (0)

/* Substring check, for error messages that must name a field, tensor or offset. */
#define CHECK_CONTAINS(hay, needle)                                                          \
    do {                                                                                     \
        const char *h_ = (hay), *n_ = (needle);                                              \
        if (h_ == NULL || strstr(h_, n_) == NULL) {                                          \
            printf("  %s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,          \
                   h_ ? h_ : "(null)", n_);                                                  \
            test_cur_failed = 1;                                                             \
        }                                                                                    \
    } while (0)

/* Ends the current test as skipped (its data is missing), saying why. */
#define SKIP(...)                                                                            \
    do {                                                                                     \
        printf("  skipped: ");                                                               \
        printf(__VA_ARGS__);                                                                 \
        printf("\n");                                                                        \
        test_cur_skipped = 1;                                                                \
        return;                                                                              \
    } while (0)

/* Exit status: 1 when a test failed, else 77 (ctest's skip) when one was skipped, else 0;
 * a test whose data is missing never counts as passed. */
static inline int test_summary(void) {
    printf("%d passed, %d failed, %d skipped\n", test_n_pass, test_n_fail, test_n_skip);
    return test_n_fail ? 1 : test_n_skip ? 77 : 0;
}

#endif
