/*
 * The pure pieces of the remote model nodes: the Server-Sent Events parser (stdlib/sse.h),
 * which must give the same events however the stream is cut, and the readers of
 * OpenAI-shaped answers (stdlib/remote.h): streamed chunks, whole answers, usage, error
 * bodies, embeddings. The transfers themselves are tested against live servers by
 * tests/lua/remote_spec.lua.
 */
#include <stdlib.h>

#include "alloc.h"
#include "error.h"
#include "json.h"
#include "remote.h"
#include "sse.h"
#include "test.h"
#include "value.h"

/* The events of a stream as "TYPE@OFFSET=DATA|..." */
typedef struct {
    ctn_strbuf out;
    int n;
    int stop_at; /* refuse the event with this number (from 1); 0: none */
} collect;

static int on_ev(void *ud, const char *event, const char *data, size_t n, uint64_t at) {
    collect *c = ud;
    if (++c->n == c->stop_at) return CTN_ECHAIN;
    char head[96];
    snprintf(head, sizeof head, "%s@%llu=", event, (unsigned long long)at);
    ctn_sb_puts(&c->out, head);
    ctn_sb_put(&c->out, data, n);
    CHECK(data[n] == '\0');
    ctn_sb_puts(&c->out, "|");
    return 0;
}

/* Feeds s in pieces of step bytes (0: whole); returns the events (malloc'd), *rc the code. */
static char *events(const char *s, size_t len, size_t step, size_t max, int *rc, char *err,
                    size_t errcap) {
    ctn_sse p;
    ctn_sse_init(&p, max);
    collect c = {{0}, 0, 0};
    *rc = 0;
    for (size_t at = 0; at < len && *rc == 0;) {
        const size_t k = step == 0 || len - at < step ? len - at : step;
        *rc = ctn_sse_feed(&p, s + at, k, on_ev, &c, err, errcap);
        at += k;
    }
    ctn_sse_close(&p);
    return ctn_sb_take(&c.out);
}

static void check_events(const char *s, const char *want) {
    for (size_t step = 0; step <= 7; step++) {
        int rc;
        char err[200] = "";
        char *got = events(s, strlen(s), step, 1 << 20, &rc, err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        CHECK_STR(got, want);
        free(got);
    }
}

TEST(sse_fields_and_line_ends) {
    check_events("data: a\n\n", "message@0=a|");
    check_events("data: a\r\n\r\ndata:b\r\rdata:  c\n\n",
                 "message@0=a|message@11=b|message@19= c|");
    check_events("data: 1\ndata: 2\n\n", "message@0=1\n2|");
    check_events(": keep-alive\n\ndata: x\n\n", "message@14=x|");
    check_events("event: error\ndata: {}\n\n", "error@0={}|");
    check_events("id: 3\nretry: 10\nfoo: bar\ndata\n\n", "message@0=|");
    check_events("\xEF\xBB\xBF"
                 "data: bom\n\n",
                 "message@3=bom|");
    check_events("event: x\n\ndata: y\n\n", "message@10=y|"); /* an event without data */
    check_events("\n\n\ndata: z\n\n", "message@3=z|");
    /* Two bytes of a mark are text: the field is "\xEF\xBB" "data", which means nothing. */
    check_events("\xEF\xBB"
                 "data: x\n\ndata: y\n\n",
                 "message@11=y|");
    /* Unfinished: nothing dispatched, but pending. */
    ctn_sse p;
    ctn_sse_init(&p, 100);
    collect c = {{0}, 0, 0};
    char err[100];
    CHECK_EQ_INT(ctn_sse_feed(&p, "data: [DONE]\n", 13, on_ev, &c, err, sizeof err), 0);
    CHECK_EQ_INT(c.n, 0);
    CHECK(ctn_sse_pending(&p));
    CHECK_EQ_INT(ctn_sse_feed(&p, "\n", 1, on_ev, &c, err, sizeof err), 0);
    CHECK_EQ_INT(c.n, 1);
    CHECK(!ctn_sse_pending(&p));
    ctn_sse_close(&p);
    ctn_sb_free(&c.out);
}

TEST(sse_refuses_nul_and_long_events) {
    int rc;
    char err[200] = "";
    free(events("data: a\n\ndata: \0b\n\n", 19, 3, 1 << 20, &rc, err, sizeof err));
    CHECK_EQ_INT(rc, CTN_EFORMAT);
    CHECK_CONTAINS(err, "malformed SSE: a NUL byte at byte 15");
    char *got = events("data: 0123456789\n\ndata: 01234567890123456789\n\n", 46, 4, 16, &rc, err,
                       sizeof err);
    CHECK_EQ_INT(rc, CTN_ERANGE);
    CHECK_CONTAINS(err, "the event at byte 18 is longer than 16 bytes");
    CHECK_STR(got, "message@0=0123456789|");
    free(got);
    /* Two lines of one event count together. */
    free(events("data: 0123\ndata: 4567\ndata: 89ab\n\n", 35, 0, 16, &rc, err, sizeof err));
    CHECK_EQ_INT(rc, CTN_ERANGE);
    /* A refusal by the callback stops the feed and stays. */
    ctn_sse p;
    ctn_sse_init(&p, 100);
    collect c = {{0}, 0, 2};
    CHECK_EQ_INT(
        ctn_sse_feed(&p, "data: 1\n\ndata: 2\n\ndata: 3\n\n", 27, on_ev, &c, err, sizeof err),
        CTN_ECHAIN);
    CHECK_EQ_INT(c.n, 2);
    CHECK_EQ_INT(ctn_sse_feed(&p, "data: 4\n\n", 9, on_ev, &c, err, sizeof err), CTN_ECHAIN);
    CHECK_EQ_INT(c.n, 2);
    ctn_sse_close(&p);
    ctn_sb_free(&c.out);
}

/* The allocations of a feed fail cleanly at every point. */
TEST(sse_out_of_memory) {
    const char *s = "data: hello\ndata: world\n\nevent: e\ndata: 2\n\n";
    for (long n = 0; n < 20; n++) {
        ctn_sse p;
        ctn_sse_init(&p, 1000);
        collect c = {{0}, 0, 0};
        char err[100];
        ctn__alloc_fail_after = n;
        const int rc = ctn_sse_feed(&p, s, strlen(s), on_ev, &c, err, sizeof err);
        ctn__alloc_fail_after = -1;
        CHECK(rc == 0 || rc == CTN_ENOMEM);
        ctn_sse_close(&p);
        ctn_sb_free(&c.out);
    }
}

static ctn_val *J(const char *s) {
    ctn_val *v = NULL;
    char err[200];
    if (ctn_json_parse(s, strlen(s), &v, err, sizeof err) < 0)
        printf("  bad JSON %s: %s\n", s, err);
    return v;
}

TEST(reads_chunks_and_answers) {
    ctn_remote_piece p;
    char err[200];
    ctn_val *v = J("{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},"
                   "\"finish_reason\":null}]}");
    CHECK_EQ_INT(ctn_remote_read_piece(v, true, true, &p, err, sizeof err), 0);
    CHECK_EQ_INT(p.text_len, 2);
    CHECK(p.text != NULL && memcmp(p.text, "Hi", 2) == 0);
    CHECK(p.finish_reason == NULL);
    CHECK_STR(p.model, "m");
    CHECK_EQ_INT(p.prompt_tokens, -1);
    ctn_val_unref(v);
    /* A role delta, a bare finish, the usage chunk. */
    v = J("{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}");
    CHECK_EQ_INT(ctn_remote_read_piece(v, true, true, &p, err, sizeof err), 0);
    CHECK(p.text == NULL);
    ctn_val_unref(v);
    v = J("{\"choices\":[{\"index\":0,\"finish_reason\":\"length\"}]}");
    CHECK_EQ_INT(ctn_remote_read_piece(v, true, true, &p, err, sizeof err), 0);
    CHECK_STR(p.finish_reason, "length");
    ctn_val_unref(v);
    v = J("{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
          "\"prompt_tokens_details\":{\"cached_tokens\":2}}}");
    CHECK_EQ_INT(ctn_remote_read_piece(v, true, true, &p, err, sizeof err), 0);
    CHECK_EQ_INT(p.prompt_tokens, 5);
    CHECK_EQ_INT(p.completion_tokens, 7);
    CHECK_EQ_INT(p.cached_tokens, 2);
    ctn_val_unref(v);
    /* Completions: text; whole answers: message. Choice 0 among others. */
    v = J("{\"choices\":[{\"index\":1,\"text\":\"no\"},{\"index\":0,\"text\":\"yes\"}]}");
    CHECK_EQ_INT(ctn_remote_read_piece(v, false, false, &p, err, sizeof err), 0);
    CHECK(p.text_len == 3 && memcmp(p.text, "yes", 3) == 0);
    ctn_val_unref(v);
    v = J("{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},"
          "\"finish_reason\":\"stop\"}]}");
    CHECK_EQ_INT(ctn_remote_read_piece(v, true, false, &p, err, sizeof err), 0);
    CHECK(p.text_len == 2 && memcmp(p.text, "ok", 2) == 0);
    CHECK_STR(p.finish_reason, "stop");
    ctn_val_unref(v);
}

TEST(refuses_other_shapes_and_reads_errors) {
    ctn_remote_piece p;
    char err[200];
    static const struct {
        const char *json, *want;
        bool chat, stream;
        int code;
    } cases[] = {
        {"[1]", "not a JSON object", true, true, CTN_EFORMAT},
        {"{\"x\":1}", "no \"choices\" array", true, true, CTN_EFORMAT},
        {"{\"choices\":[]}", "\"choices\" is empty", true, false, CTN_EFORMAT},
        {"{\"choices\":[{\"index\":1}]}", "no choice 0", true, true, CTN_EFORMAT},
        {"{\"choices\":[{\"delta\":3}]}", "no \"delta\" object", true, true, CTN_EFORMAT},
        {"{\"choices\":[{\"delta\":{\"content\":3}}]}", "\"content\" is integer, not a string",
         true, true, CTN_EFORMAT},
        {"{\"choices\":[{\"finish_reason\":\"stop\"}]}", "no \"text\"", false, false, CTN_EFORMAT},
        {"{\"error\":{\"message\":\"boom\",\"type\":\"x\"}}", "boom", true, true, CTN_ECHAIN},
        {"{\"error\":\"plain\"}", "plain", false, false, CTN_ECHAIN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ctn_val *v = J(cases[i].json);
        err[0] = '\0';
        CHECK_EQ_INT(ctn_remote_read_piece(v, cases[i].chat, cases[i].stream, &p, err, sizeof err),
                     cases[i].code);
        CHECK_CONTAINS(err, cases[i].want);
        ctn_val_unref(v);
    }
    char m[64];
    const char *b = "{\"error\":{\"message\":\"The model 'x' does not exist\"}}";
    ctn_remote_error_text(b, strlen(b), m, sizeof m);
    CHECK_STR(m, "The model 'x' does not exist");
    ctn_remote_error_text("{\"message\":\"m\"}", 15, m, sizeof m);
    CHECK_STR(m, "m");
    ctn_remote_error_text("Bad Gateway\r\n", 13, m, sizeof m);
    CHECK_STR(m, "Bad Gateway");
    ctn_remote_error_text("", 0, m, sizeof m);
    CHECK_STR(m, "(empty body)");
    char big[300];
    memset(big, 'a', sizeof big);
    ctn_remote_error_text(big, sizeof big, m, sizeof m);
    CHECK_EQ_INT(strlen(m), 63);
}

TEST(reads_embeddings) {
    char err[200];
    ctn_val *out = NULL;
    int64_t pt = 0;
    ctn_val *v =
        J("{\"data\":[{\"index\":1,\"embedding\":[3,4]},{\"index\":0,\"embedding\":[1,2.5]}],"
          "\"usage\":{\"prompt_tokens\":4}}");
    CHECK_EQ_INT(ctn_remote_read_embeddings(v, 2, &out, &pt, err, sizeof err), 0);
    char *j = ctn_val_to_json(out, 0);
    CHECK_STR(j, "[[1,2.5],[3,4]]");
    free(j);
    CHECK_EQ_INT(pt, 4);
    ctn_val_unref(out);
    ctn_val_unref(v);
    static const struct {
        const char *json, *want;
        size_t n;
    } bad[] = {
        {"{\"data\":[{\"embedding\":[1]}]}", "an array of 2 embeddings", 2},
        {"{\"data\":[{\"index\":0,\"embedding\":[1]},{\"index\":0,\"embedding\":[2]}]}", "unused",
         2},
        {"{\"data\":[{\"index\":0,\"embedding\":[1]},{\"index\":1,\"embedding\":[2,3]}]}",
         "embedding 1 has 2 numbers, embedding 0 1", 2},
        {"{\"data\":[{\"embedding\":[\"x\"]}]}", "number 0 is string", 1},
        {"{\"data\":[{\"embedding\":[]}]}", "has 0 numbers", 1},
        {"{\"error\":{\"message\":\"no\"}}", "no", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = J(bad[i].json);
        err[0] = '\0';
        CHECK(ctn_remote_read_embeddings(v, bad[i].n, &out, &pt, err, sizeof err) < 0);
        CHECK(out == NULL);
        CHECK_CONTAINS(err, bad[i].want);
        ctn_val_unref(v);
    }
}

TEST(refuses_bad_urls_and_options) {
    char err[256];
    ctn_remote_opts o = ctn_remote_opts_default();
    o.model = "m";
    static const struct {
        const char *url, *want;
    } bad[] = {
        {"ftp://h/v1", "only http:// and https://"},
        {"not a url", "is not a URL"},
        {"http://u:p@h/v1", "must not hold credentials"},
        {"http://h/v1?x=1", "must not have a query"},
        {"http://h/v1#f", "must not have a query or a fragment"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.base_url = bad[i].url;
        err[0] = '\0';
        CHECK(ctn_remote_node(&o, err, sizeof err) == NULL);
        CHECK_CONTAINS(err, bad[i].want);
    }
    o.base_url = "http://h:8/v1/";
    o.timeout_ms = 0;
    CHECK(ctn_remote_node(&o, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "timeout_ms must be an integer from 1");
    o.timeout_ms = 1000;
    o.api_key_env = "CATENA_TEST_REMOTE_NO_SUCH_VARIABLE";
    CHECK(ctn_remote_node(&o, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "CATENA_TEST_REMOTE_NO_SUCH_VARIABLE (api_key_env) is not set");
    o.api_key_env = NULL;
    ctn_node *n = ctn_remote_node(&o, err, sizeof err);
    CHECK(n != NULL);
    char *d = ctn_node_describe(n);
    CHECK_CONTAINS(d, "chat m at http://h:8/v1/");
    free(d);
    ctn_node_unref(n);
}

int main(void) {
    RUN(sse_fields_and_line_ends);
    RUN(sse_refuses_nul_and_long_events);
    RUN(sse_out_of_memory);
    RUN(reads_chunks_and_answers);
    RUN(refuses_other_shapes_and_reads_errors);
    RUN(reads_embeddings);
    RUN(refuses_bad_urls_and_options);
    return test_summary();
}
