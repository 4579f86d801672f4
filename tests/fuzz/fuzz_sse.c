/*
 * libFuzzer target for the Server-Sent Events parser (stdlib/sse.h) and the readers of the
 * remote model node's answers (stdlib/remote.h). Byte 0 seeds the piece sizes, byte 1 picks
 * the event size limit and how chunks are read (chat or completion, streamed or whole); the
 * rest is the stream. Checked on every input:
 *   - fed in random pieces, the parser gives the same events (type, data, offset), the same
 *     code and the same message as fed in one piece;
 *   - when it succeeds, the events are those of a plain reference parser over the whole
 *     text (lines split at CRLF, LF, CR; fields as the format says);
 *   - it fails with CTN_EFORMAT exactly when the text holds a NUL byte that comes before any
 *     event passes the limit, naming that byte's offset;
 *   - each event's data is NUL-terminated, holds no NUL, and its offset grows;
 *   - every event's data that parses as JSON goes through ctn_remote_read_piece and
 *     ctn_remote_read_embeddings without harm, and what they return lies inside the value.
 *
 *   cmake --build build --target fuzz_sse && build/fuzz_sse tests/fuzz/corpus_sse
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "remote.h"
#include "sse.h"
#include "str.h"
#include "value.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_sse: %s failed at line %d\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    ctn_strbuf log; /* "type\x01offset\x01data\x02" per event */
    uint64_t last;
    int n;
    uint8_t mode;
} sink;

static void read_answer(const char *data, size_t n, uint8_t mode) {
    ctn_val *v = NULL;
    char err[256];
    if (ctn_json_parse(data, n, &v, err, sizeof err) < 0) return;
    ctn_remote_piece p;
    const int rc = ctn_remote_read_piece(v, mode & 1, (mode & 2) != 0, &p, err, sizeof err);
    if (rc == 0 && p.text != NULL) CHECK(p.text[p.text_len] == '\0');
    CHECK(rc == 0 || rc == CTN_EFORMAT || rc == CTN_ECHAIN);
    ctn_val *vecs = NULL;
    int64_t pt;
    const size_t k = 1 + (mode >> 2 & 3);
    const int erc = ctn_remote_read_embeddings(v, k, &vecs, &pt, err, sizeof err);
    CHECK((erc == 0) == (vecs != NULL));
    if (vecs != NULL) CHECK(ctn_val_len(vecs) == k);
    ctn_val_unref(vecs);
    ctn_val_unref(v);
}

static int on_ev(void *ud, const char *event, const char *data, size_t n, uint64_t at) {
    sink *s = ud;
    CHECK(data[n] == '\0' && strlen(data) == n);
    CHECK(s->n == 0 || at > s->last);
    s->last = at;
    s->n++;
    char head[96];
    snprintf(head, sizeof head, "%s\x01%llu\x01", event, (unsigned long long)at);
    ctn_sb_puts(&s->log, head);
    ctn_sb_put(&s->log, data, n);
    ctn_sb_put(&s->log, "\x02", 1);
    read_answer(data, n, s->mode);
    return 0;
}

/* The reference: the whole text at once, split into lines first. */
static char *reference(const char *t, size_t n) {
    ctn_strbuf log = {0}, data = {0};
    char event[64] = "";
    bool has_data = false, in_event = false;
    uint64_t start = 0;
    size_t i = n >= 3 && memcmp(t, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    size_t line_at = i;
    while (i < n) {
        size_t j = i;
        while (j < n && t[j] != '\r' && t[j] != '\n')
            j++;
        if (j == n) break; /* an unfinished line */
        const char *l = t + i;
        const size_t len = j - i;
        if (len == 0) {
            if (has_data) {
                char head[96];
                snprintf(head, sizeof head, "%s\x01%llu\x01", event[0] ? event : "message",
                         (unsigned long long)start);
                ctn_sb_puts(&log, head);
                ctn_sb_put(&log, data.p != NULL ? data.p : "", data.len);
                ctn_sb_put(&log, "\x02", 1);
            }
            data.len = 0;
            event[0] = '\0';
            has_data = in_event = false;
        } else if (l[0] != ':') {
            if (!in_event) in_event = true, start = line_at;
            const char *c = memchr(l, ':', len);
            const size_t fl = c != NULL ? (size_t)(c - l) : len;
            const char *v = c != NULL ? c + 1 : l + len;
            if (v < l + len && *v == ' ') v++;
            const size_t vl = (size_t)(l + len - v);
            if (fl == 4 && memcmp(l, "data", 4) == 0) {
                if (has_data) ctn_sb_put(&data, "\n", 1);
                ctn_sb_put(&data, v, vl);
                has_data = true;
            } else if (fl == 5 && memcmp(l, "event", 5) == 0) {
                const size_t k = vl < sizeof event - 1 ? vl : sizeof event - 1;
                memcpy(event, v, k);
                event[k] = '\0';
            }
        }
        i = j + 1;
        if (t[j] == '\r' && i < n && t[i] == '\n') i++;
        line_at = i;
    }
    ctn_sb_free(&data);
    return ctn_sb_take(&log);
}

static int run(const char *t, size_t n, uint32_t seed, size_t max, uint8_t mode, char **log,
               char *err, size_t errcap) {
    ctn_sse p;
    ctn_sse_init(&p, max);
    sink s = {{0}, 0, 0, mode};
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0;) {
        size_t k = n - at;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            k = 1 + (seed >> 16) % 13;
            if (k > n - at) k = n - at;
        }
        rc = ctn_sse_feed(&p, t + at, k, on_ev, &s, err, errcap);
        at += k;
    }
    ctn_sse_close(&p);
    *log = ctn_sb_take(&s.log);
    CHECK(*log != NULL);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const uint32_t seed = data[0];
    const size_t max = (data[1] & 0x0f) == 0 ? (size_t)1 << 20 : (size_t)(data[1] & 0x0f) * 8;
    const uint8_t mode = data[1] >> 4;
    const char *t = (const char *)data + 2;
    const size_t n = size - 2;
    char e1[256] = "", e2[256] = "";
    char *whole = NULL, *cut = NULL;
    const int rc1 = run(t, n, 0, max, mode, &whole, e1, sizeof e1);
    const int rc2 = run(t, n, seed | 1, max, mode, &cut, e2, sizeof e2);
    CHECK(rc1 == rc2);
    CHECK(strcmp(whole, cut) == 0);
    if (rc1 < 0) CHECK(strcmp(e1, e2) == 0);
    CHECK(rc1 == 0 || rc1 == CTN_EFORMAT || rc1 == CTN_ERANGE);
    const char *nul = memchr(t, 0, n);
    if (rc1 == 0) {
        CHECK(nul == NULL);
        char *ref = reference(t, n);
        CHECK(ref != NULL && strcmp(ref, whole) == 0);
        free(ref);
    }
    if (rc1 == CTN_EFORMAT) {
        CHECK(nul != NULL);
        char want[64];
        snprintf(want, sizeof want, "a NUL byte at byte %zu", (size_t)(nul - t));
        CHECK(strstr(e1, want) != NULL);
    }
    free(whole);
    free(cut);
    return 0;
}
