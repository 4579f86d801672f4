/*
 * CTN_ASSERT (error.h): in a debug build (the sanitizer copies of the tests are one) a broken
 * invariant prints the expression and where it is, and aborts; in a release build it is
 * compiled out. Run in a child process so the abort can be observed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "test.h"

static int evaluated;

static int side_effect(void) {
    evaluated++;
    return 0;
}

TEST(broken_invariant) {
    fflush(stdout);
    const pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid < 0) return;
    if (pid == 0) {
        CTN_ASSERT(side_effect() == 1);
        _exit(evaluated == 0 ? 3 : 4); /* reached only when assertions are off */
    }
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
#ifdef CTN_DEBUG
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    printf("  debug build: the child aborted\n");
#else
    (void)side_effect; /* referenced only inside the compiled-out assertion */
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3); /* not even evaluated */
    printf("  release build: compiled out\n");
#endif
}

TEST(kept_invariant) {
    CTN_ASSERT(1 + 1 == 2);
    CHECK(1);
}

int main(void) {
    RUN(broken_invariant);
    RUN(kept_invariant);
    return test_summary();
}
