/*
 * Stop-string tests: matches spanning pieces, held-back false starts, overlapping and
 * nested stop strings (the tie rule of stop.h), UTF-8, flush and reset, binary stop
 * strings, long pieces, allocation failures, and random texts against a naive reference.
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "stop.h"
#include "test.h"

static ctn_stop *make(const char *const *strs, size_t n) {
    ctn_stop *m = NULL;
    char err[256];
    if (ctn_stop_new(&m, strs, NULL, n, err, sizeof err) != 0) printf("  ctn_stop_new: %s\n", err);
    return m;
}

/* Text handed out so far, and the last return code. */
typedef struct {
    char text[4096];
    size_t n;
    int rc;
} sink;

static int feed(ctn_stop *m, sink *k, const char *piece, size_t len) {
    const char *out;
    size_t n_out;
    k->rc = ctn_stop_feed(m, piece, len, &out, &n_out);
    if (k->rc >= 0 && k->n + n_out < sizeof k->text) {
        memcpy(k->text + k->n, out, n_out);
        k->n += n_out;
        k->text[k->n] = 0;
    }
    return k->rc;
}

static int feed_str(ctn_stop *m, sink *k, const char *piece) {
    return feed(m, k, piece, strlen(piece));
}

static int flush(ctn_stop *m, sink *k) {
    const char *out;
    size_t n_out;
    k->rc = ctn_stop_flush(m, &out, &n_out);
    if (k->rc >= 0 && k->n + n_out < sizeof k->text) {
        memcpy(k->text + k->n, out, n_out);
        k->n += n_out;
        k->text[k->n] = 0;
    }
    return k->rc;
}

/*
 * The naive rule of stop.h: the first end position at which some stop string ends; there the
 * longest; among equal strings the lowest index. Returns the match's start or -1.
 */
static long ref_find(const char *t, size_t n, const char *const *st, const size_t *sl, size_t ns,
                     int *which) {
    for (size_t e = 1; e <= n; e++) {
        int best = -1;
        for (size_t i = 0; i < ns; i++) {
            if (sl[i] <= e && memcmp(t + e - sl[i], st[i], sl[i]) == 0 &&
                (best < 0 || sl[i] > sl[best])) {
                best = (int)i;
            }
        }
        if (best >= 0) {
            *which = best;
            return (long)(e - sl[best]);
        }
    }
    *which = -1;
    return -1;
}

/* ---- tests --------------------------------------------------------------------------- */

TEST(stops_in_one_piece) {
    const char *stops[] = {"User:"};
    ctn_stop *m = make(stops, 1);
    sink k = {0};
    CHECK_EQ_INT(feed_str(m, &k, "Hello world. User: hi"), CTN_STOP_HIT);
    CHECK_STR(k.text, "Hello world. ");
    CHECK_EQ_INT(ctn_stop_which(m), 0);
    ctn_stop_free(m);
}

TEST(stop_spans_many_pieces) {
    const char *stops[] = {"\n\n", "</answer>"};
    ctn_stop *m = make(stops, 2);
    sink k = {0};
    CHECK_EQ_INT(feed_str(m, &k, "The answer is 4</"), 0);
    CHECK_STR(k.text, "The answer is 4");
    CHECK_EQ_INT(ctn_stop_held(m), 2);
    const char *parts[] = {"an", "s", "wer"};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(feed_str(m, &k, parts[i]), 0);
        CHECK_STR(k.text, "The answer is 4");
    }
    CHECK_EQ_INT(ctn_stop_held(m), 8);
    CHECK_EQ_INT(feed_str(m, &k, ">tail\n\nmore"), CTN_STOP_HIT);
    CHECK_STR(k.text, "The answer is 4");
    CHECK_EQ_INT(ctn_stop_which(m), 1);
    ctn_stop_free(m);
}

TEST(false_starts_are_released) {
    const char *stops[] = {"abc"};
    ctn_stop *m = make(stops, 1);
    sink k = {0};
    CHECK_EQ_INT(feed_str(m, &k, "xab"), 0);
    CHECK_STR(k.text, "x");
    CHECK_EQ_INT(ctn_stop_held(m), 2);
    CHECK_EQ_INT(feed_str(m, &k, "d"), 0);
    CHECK_STR(k.text, "xabd");
    CHECK_EQ_INT(ctn_stop_held(m), 0);
    CHECK_EQ_INT(feed_str(m, &k, "aab"), 0); /* "a" can go, "ab" may still start "abc" */
    CHECK_STR(k.text, "xabda");
    CHECK_EQ_INT(feed_str(m, &k, ""), 0);
    CHECK_STR(k.text, "xabda");
    CHECK_EQ_INT(flush(m, &k), 0);
    CHECK_STR(k.text, "xabdaab");
    CHECK_EQ_INT(ctn_stop_which(m), -1);
    ctn_stop_free(m);
}

TEST(overlapping_self_match) {
    const char *stops[] = {"aab"};
    ctn_stop *m = make(stops, 1);
    sink k = {0};
    const char *in = "aaab";
    const size_t held[] = {1, 2, 2};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(feed(m, &k, in + i, 1), 0);
        CHECK_EQ_INT(ctn_stop_held(m), held[i]);
    }
    CHECK_STR(k.text, "a");
    CHECK_EQ_INT(feed(m, &k, in + 3, 1), CTN_STOP_HIT);
    CHECK_STR(k.text, "a");
    ctn_stop_free(m);
}

/* The rule of stop.h: earliest end, then earliest start, then lowest index. */
TEST(nested_and_overlapping_stops) {
    struct {
        const char *stops[3];
        size_t n;
        const char *text;
        const char *out;
        int which;
    } cases[] = {
        {{"abc", "ab"}, 2, "xabc", "x", 1},  /* a prefix of another ends first */
        {{"b", "ab"}, 2, "ab", "", 1},       /* same end: the longer starts first */
        {{"ab", "b"}, 2, "ab", "", 0},       /* whatever the order given */
        {{"abcd", "bc"}, 2, "abcd", "a", 1}, /* inside another: ends first */
        {{"x", "x"}, 2, "yx", "y", 0},       /* duplicates: the lowest index */
        {{"aaa", "ab", "ba"}, 3, "aabaaa", "a", 1},
        {{"cab", "abc"}, 2, "zcabc", "z", 0}, /* overlapping each other */
        {{"abc", "b"}, 2, "zabc", "za", 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        /* in one piece and byte by byte: the same result */
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            ctn_stop *m = make(cases[c].stops, cases[c].n);
            sink k = {0};
            const char *t = cases[c].text;
            size_t len = strlen(t);
            if (bytewise) {
                for (size_t i = 0; i < len && feed(m, &k, t + i, 1) == 0; i++) {
                }
            } else {
                feed(m, &k, t, len);
            }
            if (strcmp(k.text, cases[c].out) != 0 || ctn_stop_which(m) != cases[c].which) {
                printf("  case %zu bytewise %d: out \"%s\" which %d\n", c, bytewise, k.text,
                       ctn_stop_which(m));
            }
            CHECK_EQ_INT(k.rc, CTN_STOP_HIT);
            CHECK_STR(k.text, cases[c].out);
            CHECK_EQ_INT(ctn_stop_which(m), cases[c].which);
            ctn_stop_free(m);
        }
    }
}

TEST(utf8_cuts_fall_on_characters) {
    const char *stops[] = {"\xe3\x80\x82", "\xe5\x81\x9c\xe6\xad\xa2"}; /* "。", "停止" */
    ctn_stop *m = make(stops, 2);
    sink k = {0};
    /* "你好、世界" then "。": "、" shares its first two bytes with "。" */
    const char *chars[] = {"\xe4\xbd\xa0", "\xe5\xa5\xbd", "\xe3\x80\x81", "\xe4\xb8\x96",
                           "\xe7\x95\x8c"};
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(feed_str(m, &k, chars[i]), 0);
        CHECK_EQ_INT(ctn_stop_held(m), 0);
    }
    CHECK_EQ_INT(feed_str(m, &k, "\xe3\x80\x82\xe5\x86\x8d"), CTN_STOP_HIT);
    CHECK_STR(k.text, "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x81\xe4\xb8\x96\xe7\x95\x8c");
    CHECK_EQ_INT(ctn_stop_which(m), 0);

    /* byte by byte: "停下停止" stops after "停下"; the held bytes are always whole
     * characters or the start of one */
    ctn_stop_reset(m);
    sink j = {0};
    const char *t = "\xe5\x81\x9c\xe4\xb8\x8b\xe5\x81\x9c\xe6\xad\xa2";
    size_t i = 0;
    while (i < strlen(t) && feed(m, &j, t + i, 1) == 0)
        i++;
    CHECK_EQ_INT(j.rc, CTN_STOP_HIT);
    CHECK_EQ_INT(i, 11);
    CHECK_STR(j.text, "\xe5\x81\x9c\xe4\xb8\x8b");
    CHECK_EQ_INT(ctn_stop_which(m), 1);
    ctn_stop_free(m);
}

TEST(flush_hands_out_the_held_text) {
    const char *stops[] = {"abc"};
    ctn_stop *m = make(stops, 1);
    sink k = {0};
    CHECK_EQ_INT(feed_str(m, &k, "hello ab"), 0);
    CHECK_STR(k.text, "hello ");
    CHECK_EQ_INT(flush(m, &k), 0);
    CHECK_STR(k.text, "hello ab");
    CHECK_EQ_INT(ctn_stop_held(m), 0);
    /* a stop string cannot span a flush */
    CHECK_EQ_INT(feed_str(m, &k, "c"), 0);
    CHECK_STR(k.text, "hello abc");
    CHECK_EQ_INT(flush(m, &k), 0);
    CHECK_STR(k.text, "hello abc");
    ctn_stop_free(m);
}

TEST(after_a_hit_nothing_more_until_reset) {
    const char *stops[] = {"END"};
    ctn_stop *m = make(stops, 1);
    sink k = {0};
    CHECK_EQ_INT(feed_str(m, &k, "one END two"), CTN_STOP_HIT);
    CHECK_STR(k.text, "one ");
    CHECK_EQ_INT(feed_str(m, &k, "three"), CTN_STOP_HIT);
    CHECK_EQ_INT(flush(m, &k), CTN_STOP_HIT);
    CHECK_STR(k.text, "one ");
    CHECK_EQ_INT(ctn_stop_which(m), 0);
    CHECK_EQ_INT(ctn_stop_held(m), 0);
    ctn_stop_reset(m);
    CHECK_EQ_INT(ctn_stop_which(m), -1);
    sink j = {0};
    CHECK_EQ_INT(feed_str(m, &j, "EN"), 0);
    CHECK_EQ_INT(feed_str(m, &j, "xEND"), CTN_STOP_HIT);
    CHECK_STR(j.text, "ENx");
    ctn_stop_free(m);
}

TEST(no_stop_strings_pass_everything) {
    ctn_stop *m = make(NULL, 0);
    CHECK(m != NULL);
    sink k = {0};
    CHECK_EQ_INT(feed_str(m, &k, "anything at all"), 0);
    CHECK_EQ_INT(ctn_stop_held(m), 0);
    CHECK_EQ_INT(flush(m, &k), 0);
    CHECK_STR(k.text, "anything at all");
    ctn_stop_free(m);
}

TEST(binary_stop_strings) {
    const char *stops[] = {"\0\xff", "\xff\xff"};
    const size_t lens[] = {2, 2};
    ctn_stop *m = NULL;
    char err[128];
    CHECK_EQ_INT(ctn_stop_new(&m, stops, lens, 2, err, sizeof err), 0);
    sink k = {0};
    CHECK_EQ_INT(feed(m, &k, "a\0b\0", 4), 0);
    CHECK_EQ_INT(k.n, 3);
    CHECK_EQ_INT(feed(m, &k, "\xff!", 2), CTN_STOP_HIT);
    CHECK_EQ_INT(k.n, 3);
    CHECK(memcmp(k.text, "a\0b", 3) == 0);
    CHECK_EQ_INT(ctn_stop_which(m), 0);
    ctn_stop_free(m);
}

TEST(bad_arguments) {
    ctn_stop *m = (ctn_stop *)&m;
    char err[128];
    const char *one[] = {"ok", ""};
    CHECK_EQ_INT(ctn_stop_new(&m, one, NULL, 2, err, sizeof err), CTN_EINVAL);
    CHECK(m == NULL);
    CHECK_CONTAINS(err, "string 1 is empty");
    const char *two[] = {"ok", NULL};
    CHECK_EQ_INT(ctn_stop_new(&m, two, NULL, 2, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "string 1");
    const size_t lens[] = {2, 0};
    const char *three[] = {"ok", "x"};
    CHECK_EQ_INT(ctn_stop_new(&m, three, lens, 2, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "empty");
    CHECK_EQ_INT(ctn_stop_new(&m, NULL, NULL, 1, err, sizeof err), CTN_EINVAL);

    /* more than CTN_STOP_MAX_TOTAL bytes in all; exactly that many is fine */
    char *big = malloc(CTN_STOP_MAX_TOTAL + 1);
    memset(big, 'q', CTN_STOP_MAX_TOTAL);
    big[CTN_STOP_MAX_TOTAL] = 0;
    const char *four[] = {big, "x"};
    CHECK_EQ_INT(ctn_stop_new(&m, four, NULL, 2, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "string 1");
    CHECK_EQ_INT(ctn_stop_new(&m, four, NULL, 1, err, sizeof err), 0);
    sink k = {0};
    CHECK_EQ_INT(feed_str(m, &k, "qqq"), 0);
    CHECK_EQ_INT(ctn_stop_held(m), 3);
    const char *out;
    size_t n;
    CHECK_EQ_INT(ctn_stop_feed(m, NULL, 1, &out, &n), CTN_EINVAL);
    CHECK_EQ_INT(ctn_stop_feed(m, "x", 1, NULL, &n), CTN_EINVAL);
    CHECK_EQ_INT(ctn_stop_feed(m, NULL, 0, &out, &n), 0);
    ctn_stop_free(m);
    free(big);
}

TEST(long_pieces_grow_the_buffer) {
    const char *stops[] = {"STOP"};
    ctn_stop *m = make(stops, 1);
    const size_t n = 100000;
    char *t = malloc(n + 16);
    memset(t, 'x', n);
    memcpy(t + n, "STOtail", 8);
    const char *out;
    size_t n_out;
    CHECK_EQ_INT(ctn_stop_feed(m, t, n + 3, &out, &n_out), 0);
    CHECK_EQ_INT(n_out, n);
    CHECK_EQ_INT(ctn_stop_held(m), 3);
    memcpy(t + n, "Ptail", 6);
    CHECK_EQ_INT(ctn_stop_feed(m, t + n, 5, &out, &n_out), CTN_STOP_HIT);
    CHECK_EQ_INT(n_out, 0);
    ctn_stop_free(m);
    free(t);
}

/* Every allocation of ctn_stop_new fails once, cleanly; a feed whose buffer cannot grow
 * returns ENOMEM and leaves the matcher as it was. */
TEST(allocation_failures) {
    const char *stops[] = {"abc", "bcd", "zz"};
    int done = 0, n_fail = 0;
    for (long i = 0; i < 50 && !done; i++) {
        ctn_stop *m = (ctn_stop *)&i;
        char err[128];
        ctn__alloc_fail_after = i;
        int rc = ctn_stop_new(&m, stops, NULL, 3, err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc == 0) {
            done = 1;
            ctn_stop_free(m);
        } else {
            n_fail++;
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK(m == NULL);
        }
    }
    CHECK(done && n_fail == 5);

    ctn_stop *m = make(stops, 3);
    sink k = {0};
    CHECK_EQ_INT(feed_str(m, &k, "xab"), 0);
    char big[3000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = 0;
    ctn__alloc_fail_after = 0;
    CHECK_EQ_INT(feed_str(m, &k, big), CTN_ENOMEM);
    ctn__alloc_fail_after = -1;
    CHECK_EQ_INT(ctn_stop_held(m), 2);
    CHECK_EQ_INT(feed_str(m, &k, "cd"), CTN_STOP_HIT); /* the held "ab" was kept */
    CHECK_STR(k.text, "x");
    CHECK_EQ_INT(ctn_stop_which(m), 0);
    ctn_stop_reset(m);
    sink j = {0};
    CHECK_EQ_INT(feed_str(m, &j, "xab"), 0);
    ctn__alloc_fail_after = 1; /* the growth succeeds */
    CHECK_EQ_INT(feed_str(m, &j, big), 0);
    ctn__alloc_fail_after = -1;
    CHECK_EQ_INT(j.n, 3 + sizeof big - 1);
    CHECK(memcmp(j.text, "xab", 3) == 0);
    ctn_stop_free(m);
}

/* Random stop strings over a small alphabet, random texts cut into random pieces. */
TEST(random_texts_match_the_reference) {
    uint64_t r = 0x243f6a8885a308d3ull;
#define RND(n) ((r = r * 6364136223846793005ull + 1442695040888963407ull), (int)((r >> 33) % (n)))
    int bad = 0;
    for (int round = 0; round < 5000 && bad < 5; round++) {
        char sbuf[4][8];
        const char *st[4];
        size_t sl[4];
        size_t ns = (size_t)RND(4) + (round % 7 == 0 ? 0 : 1);
        int alpha = 2 + RND(3);
        for (size_t i = 0; i < ns; i++) {
            sl[i] = (size_t)RND(5) + 1;
            for (size_t j = 0; j < sl[i]; j++)
                sbuf[i][j] = (char)('a' + RND(alpha));
            st[i] = sbuf[i];
        }
        char t[64];
        size_t n = (size_t)RND(60);
        for (size_t j = 0; j < n; j++)
            t[j] = (char)('a' + RND(alpha));
        int which;
        long cut = ref_find(t, n, st, sl, ns, &which);

        ctn_stop *m = NULL;
        char err[128];
        if (ctn_stop_new(&m, st, sl, ns, err, sizeof err) != 0) {
            bad++;
            continue;
        }
        sink k = {0};
        size_t pos = 0;
        int rc = 0;
        while (pos < n && rc == 0) {
            size_t len = (size_t)RND(6);
            if (len > n - pos) len = n - pos;
            rc = feed(m, &k, t + pos, len);
            pos += len;
        }
        if (rc == 0) rc = flush(m, &k);
        int ok = cut < 0 ? rc == 0 && k.n == n && memcmp(k.text, t, n) == 0
                         : rc == CTN_STOP_HIT && k.n == (size_t)cut &&
                               memcmp(k.text, t, (size_t)cut) == 0 && ctn_stop_which(m) == which;
        if (!ok) {
            printf("  round %d: text \"%.*s\", expected cut %ld which %d, got %zu bytes rc %d "
                   "which %d\n",
                   round, (int)n, t, cut, which, k.n, rc, ctn_stop_which(m));
            bad++;
        }
        ctn_stop_free(m);
    }
#undef RND
    CHECK_EQ_INT(bad, 0);
}

int main(void) {
    RUN(stops_in_one_piece);
    RUN(stop_spans_many_pieces);
    RUN(false_starts_are_released);
    RUN(overlapping_self_match);
    RUN(nested_and_overlapping_stops);
    RUN(utf8_cuts_fall_on_characters);
    RUN(flush_hands_out_the_held_text);
    RUN(after_a_hit_nothing_more_until_reset);
    RUN(no_stop_strings_pass_everything);
    RUN(binary_stop_strings);
    RUN(bad_arguments);
    RUN(long_pieces_grow_the_buffer);
    RUN(allocation_failures);
    RUN(random_texts_match_the_reference);
    return test_summary();
}
