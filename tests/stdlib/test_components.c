/*
 * The component nodes (stdlib/components.h) inside chains: a parser after a producer that
 * streams gets the text as it comes and emits partial results (JSON snapshots, list items)
 * before the producer ends, with the same final value as parsing the whole text; prompts
 * report missing variables; chat prompts expand placeholders.
 */
#include <stdlib.h>
#include <string.h>

#include "components.h"
#include "error.h"
#include "test.h"

/* A producer: emits the pieces of its input (an array of strings) one per timer tick, then
 * ends with their concatenation. */
typedef struct {
    uv_timer_t h;
    ctn_task *t;
    const ctn_val *pieces;
    size_t i;
    int emitted_before_end; /* chunks the run received before the producer ended */
} producer;

static int chunks_seen;

static void prod_closed(uv_handle_t *h) {
    free(h);
}

static void prod_tick(uv_timer_t *h) {
    producer *p = (producer *)h;
    if (p->t == NULL) return;
    if (p->i < ctn_val_len(p->pieces)) {
        ctn_task_emit(p->t, ctn_val_ref(ctn_val_at(p->pieces, p->i++)));
        return;
    }
    size_t n = 0;
    char *all = malloc(4096);
    all[0] = 0;
    for (size_t i = 0; i < ctn_val_len(p->pieces); i++) {
        const ctn_val *s = ctn_val_at(p->pieces, i);
        memcpy(all + n, s->u.str.p, s->u.str.len);
        n += s->u.str.len;
    }
    ctn_task *t = p->t;
    p->t = NULL;
    ctn_task_set_data(t, NULL);
    uv_timer_stop(h);
    uv_close((uv_handle_t *)h, prod_closed);
    ctn_task_done(t, ctn_val_str(all, n));
    free(all);
}

static void prod_start(ctn_task *t, ctn_val *in) {
    producer *p = calloc(1, sizeof *p);
    p->t = t;
    p->pieces = in;
    uv_timer_init(ctn_task_loop(t), &p->h);
    uv_timer_start(&p->h, prod_tick, 1, 1);
    ctn_task_set_data(t, p);
}

static void prod_cancel(ctn_task *t) {
    producer *p = ctn_task_data(t);
    if (p == NULL) return;
    p->t = NULL;
    uv_timer_stop(&p->h);
    uv_close((uv_handle_t *)&p->h, prod_closed);
}

static const ctn_node_ops prod_ops = {
    .kind = "producer", .start = prod_start, .cancel = prod_cancel};

typedef struct {
    ctn_val *chunks, *out;
    int code;
    char msg[256], path[128];
} result;

static void on_chunk(void *ud, const ctn_val *c) {
    result *r = ud;
    ctn_val_push(r->chunks, ctn_val_copy(c));
    chunks_seen++;
}

static void on_done(void *ud, const ctn_val *out, const ctn_chain_err *err) {
    result *r = ud;
    if (err != NULL) {
        r->code = err->code;
        snprintf(r->msg, sizeof r->msg, "%s", err->message);
        snprintf(r->path, sizeof r->path, "%s", err->path);
    } else {
        r->out = ctn_val_ref((ctn_val *)out);
    }
}

static void run(ctn_node *root, ctn_val *in, int flags, result *r) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    memset(r, 0, sizeof *r);
    r->chunks = ctn_val_arr();
    ctn_run_callbacks cb = {.on_chunk = on_chunk, .on_done = on_done, .ud = r};
    ctn_run *run = NULL;
    CHECK_EQ_INT(ctn_run_start(&loop, root, in, NULL, &cb, flags, &run), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ctn_run_free(run);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static ctn_val *pieces(const char *const *p, size_t n) {
    ctn_val *a = ctn_val_arr();
    for (size_t i = 0; i < n; i++)
        ctn_val_push(a, ctn_val_cstr(p[i]));
    return a;
}

static char *json(const ctn_val *v) {
    static char buf[2048];
    char *j = ctn_val_to_json(v, 0);
    snprintf(buf, sizeof buf, "%s", j ? j : "(null)");
    free(j);
    return buf;
}

TEST(json_parser_streams_partial_values) {
    static const char *p[] = {"Sure: {\"a", "\": 1, \"b\": [t", "rue, 2", "], \"c\": \"x\"} bye"};
    char err[256];
    ctn_node *steps[2] = {ctn_node_custom(&prod_ops, NULL, NULL),
                          ctn_parser_node(CTN_PARSER_JSON, NULL, NULL, 0, err, sizeof err)};
    ctn_node *chain = ctn_node_sequence(steps, 2);
    ctn_val *in = pieces(p, 4);
    result r;
    run(chain, in, CTN_RUN_STREAM, &r);
    CHECK_STR(json(r.out), "{\"a\":1,\"b\":[true,2],\"c\":\"x\"}");
    /* Snapshots grow: {} or {"a":1} first, the whole value last. */
    CHECK(ctn_val_len(r.chunks) >= 3);
    CHECK_STR(json(ctn_val_at(r.chunks, ctn_val_len(r.chunks) - 1)),
              "{\"a\":1,\"b\":[true,2],\"c\":\"x\"}");
    CHECK_STR(json(ctn_val_at(r.chunks, 1)), "{\"a\":1,\"b\":[]}");
    ctn_val_unref(r.chunks);
    ctn_val_unref(r.out);
    /* Without streaming: the same value, parsed once. */
    run(chain, in, 0, &r);
    CHECK_STR(json(r.out), "{\"a\":1,\"b\":[true,2],\"c\":\"x\"}");
    CHECK_EQ_INT(ctn_val_len(r.chunks), 0);
    ctn_val_unref(r.chunks);
    ctn_val_unref(r.out);
    /* Bad JSON inside the value is an error naming the parser. */
    static const char *bad[] = {"{\"a\": 1,", " ]"};
    ctn_val *in2 = pieces(bad, 2);
    run(chain, in2, CTN_RUN_STREAM, &r);
    CHECK_EQ_INT(r.code, CTN_EFORMAT);
    CHECK_STR(r.path, "parser");
    ctn_val_unref(r.chunks);
    ctn_val_unref(in2);
    ctn_val_unref(in);
    ctn_node_unref(chain);
}

TEST(list_parser_streams_items) {
    static const char *p[] = {"1. app", "les\n2. pe", "ars\n3. figs"};
    char err[256];
    ctn_node *steps[2] = {ctn_node_custom(&prod_ops, NULL, NULL),
                          ctn_parser_node(CTN_PARSER_LIST, NULL, NULL, 0, err, sizeof err)};
    ctn_node *chain = ctn_node_sequence(steps, 2);
    ctn_val *in = pieces(p, 3);
    result r;
    run(chain, in, CTN_RUN_STREAM, &r);
    CHECK_STR(json(r.out), "[\"apples\",\"pears\",\"figs\"]");
    CHECK_STR(json(r.chunks), "[\"apples\",\"pears\",\"figs\"]");
    ctn_val_unref(r.chunks);
    ctn_val_unref(r.out);
    ctn_val_unref(in);
    ctn_node_unref(chain);
}

TEST(str_parser_passes_chunks_on) {
    static const char *p[] = {"a", "b", "c"};
    char err[256];
    ctn_node *steps[2] = {ctn_node_custom(&prod_ops, NULL, NULL),
                          ctn_parser_node(CTN_PARSER_STR, NULL, NULL, 0, err, sizeof err)};
    ctn_node *chain = ctn_node_sequence(steps, 2);
    ctn_val *in = pieces(p, 3);
    result r;
    run(chain, in, CTN_RUN_STREAM, &r);
    CHECK_STR(json(r.out), "\"abc\"");
    CHECK_STR(json(r.chunks), "[\"a\",\"b\",\"c\"]");
    ctn_val_unref(r.chunks);
    ctn_val_unref(r.out);
    ctn_val_unref(in);
    ctn_node_unref(chain);
}

TEST(prompts) {
    char err[256];
    ctn_node *p = ctn_prompt_node("Hi {name}, {{x}}", 16, err, sizeof err);
    ctn_val *in = ctn_val_obj();
    ctn_val_set(in, "name", ctn_val_cstr("Ann"));
    result r;
    run(p, in, 0, &r);
    CHECK_STR(json(r.out), "\"Hi Ann, {x}\"");
    ctn_val_unref(r.chunks);
    ctn_val_unref(r.out);
    ctn_val_unref(in);
    in = ctn_val_obj();
    run(p, in, 0, &r);
    CHECK_EQ_INT(r.code, CTN_ENOENT);
    CHECK_STR(r.msg, "missing variable 'name'");
    ctn_val_unref(r.chunks);
    ctn_val_unref(in);
    ctn_node_unref(p);
    CHECK(ctn_prompt_node("{oops", 5, err, sizeof err) == NULL);
    ctn_chat_entry e[3] = {{"system", "Be {tone}."}, {"placeholder", "history"}, {"user", "{q}"}};
    ctn_node *c = ctn_chat_prompt_node(e, 3, err, sizeof err);
    in = ctn_val_obj();
    ctn_val_set(in, "tone", ctn_val_cstr("brief"));
    ctn_val_set(in, "q", ctn_val_cstr("why"));
    ctn_val *h = ctn_val_arr(), *m = ctn_val_arr();
    ctn_val_push(m, ctn_val_cstr("assistant"));
    ctn_val_push(m, ctn_val_cstr("hello"));
    ctn_val_push(h, m);
    ctn_val_set(in, "history", h);
    run(c, in, 0, &r);
    CHECK_STR(json(r.out), "{\"type\":\"chat\",\"messages\":[{\"role\":\"system\",\"content\":\"Be "
                           "brief.\"},{\"role\":\"assistant\",\"content\":\"hello\"},{\"role\":"
                           "\"user\",\"content\":\"why\"}]}");
    ctn_val_unref(r.chunks);
    ctn_val_unref(r.out);
    ctn_val_unref(in);
    ctn_node_unref(c);
    ctn_chat_entry bad[1] = {{"wizard", "x"}};
    CHECK(ctn_chat_prompt_node(bad, 1, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "unknown role 'wizard'");
}

/* The JSON parser with a schema: the streamed and the whole text both end validated; a
 * value outside the schema fails naming where; a bad schema is refused naming it. */
TEST(json_parser_with_a_schema) {
    const char *schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"},"
                         "\"tag\":{\"enum\":[\"a\",\"b\"]}},\"required\":[\"n\",\"tag\"]}";
    char err[512] = "";
    ctn_node *p = ctn_json_parser_node(schema, strlen(schema), err, sizeof err);
    CHECK(p != NULL);
    if (p == NULL) return;
    CHECK(ctn_parser_node_grammar(p) != NULL);
    CHECK_CONTAINS(ctn_parser_node_grammar(p), "root ::=");
    static const char *good[] = {"{\"n\": 4", "2, \"tag\"", ": \"b\"}"};
    ctn_node *prod = ctn_node_custom(&prod_ops, NULL, "producer");
    ctn_node *seq = ctn_node_sequence((ctn_node *[]){prod, ctn_node_ref(p)}, 2);
    result r;
    ctn_val *in = pieces(good, 3);
    run(seq, in, 0, &r);
    CHECK_EQ_INT(r.code, 0);
    CHECK_STR(json(r.out), "{\"n\":42,\"tag\":\"b\"}");
    ctn_val_unref(r.out);
    ctn_val_unref(r.chunks);
    ctn_val_unref(in);
    static const char *wrong[] = {"{\"n\": 1, \"tag\": \"c\"}"};
    in = pieces(wrong, 1);
    run(seq, in, 0, &r);
    CHECK_EQ_INT(r.code, CTN_EFORMAT);
    CHECK_CONTAINS(r.msg, "does not match the parser's schema");
    CHECK_CONTAINS(r.msg, "tag");
    ctn_val_unref(r.chunks);
    ctn_val_unref(in);
    ctn_node_unref(seq);
    /* The whole text (not streamed): a bare JSON value, then one inside prose. */
    ctn_val *v = ctn_val_cstr("  {\"tag\": \"a\", \"n\": -3}\n");
    run(p, v, 0, &r);
    CHECK_EQ_INT(r.code, 0);
    CHECK_STR(json(r.out), "{\"tag\":\"a\",\"n\":-3}");
    ctn_val_unref(r.out);
    ctn_val_unref(r.chunks);
    ctn_val_unref(v);
    v = ctn_val_cstr("Sure: {\"n\": 1.5, \"tag\": \"a\"} ok");
    run(p, v, 0, &r);
    CHECK_EQ_INT(r.code, CTN_EFORMAT);
    CHECK_CONTAINS(r.msg, "/n");
    ctn_val_unref(r.chunks);
    ctn_val_unref(v);
    char *fi = ctn_parser_format_instructions(p, err, sizeof err);
    CHECK(fi != NULL && strstr(fi, "JSON Schema") != NULL && strstr(fi, "\"tag\"") != NULL);
    free(fi);
    ctn_node_unref(p);
    const char *unsup = "{\"type\":\"string\",\"not\":{}}";
    CHECK(ctn_json_parser_node(unsup, strlen(unsup), err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "not");
    CHECK(ctn_json_parser_node("{nope", 5, err, sizeof err) == NULL);
    CHECK(err[0] != 0);
}

TEST(enum_parser) {
    const char *opts[] = {"red", "dark green", "\xc3\xa9t\xc3\xa9"};
    char err[512] = "";
    ctn_node *p = ctn_enum_parser_node(opts, 3, err, sizeof err);
    CHECK(p != NULL);
    if (p == NULL) return;
    CHECK_STR(ctn_parser_node_grammar(p), "root ::= \"red\" | \"dark green\" | \"\\xC3\\xA9t\\xC3\\xA9\"\n");
    result r;
    ctn_val *v = ctn_val_cstr(" dark green\n");
    run(p, v, 0, &r);
    CHECK_EQ_INT(r.code, 0);
    CHECK_STR(json(r.out), "\"dark green\"");
    ctn_val_unref(r.out);
    ctn_val_unref(r.chunks);
    ctn_val_unref(v);
    v = ctn_val_cstr("blue");
    run(p, v, 0, &r);
    CHECK_EQ_INT(r.code, CTN_EFORMAT);
    CHECK_CONTAINS(r.msg, "'blue' is not one of the options: red, dark green, ");
    ctn_val_unref(r.chunks);
    ctn_val_unref(v);
    char *fi = ctn_parser_format_instructions(p, err, sizeof err);
    CHECK(fi != NULL && strstr(fi, "red, dark green") != NULL);
    free(fi);
    ctn_node_unref(p);
    CHECK(ctn_enum_parser_node(opts, 0, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "1 to 1024");
    const char *dup[] = {"a", "b", "a"};
    CHECK(ctn_enum_parser_node(dup, 3, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "options 1 and 3");
    const char *bad[] = {"a", "\xff"};
    CHECK(ctn_enum_parser_node(bad, 2, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "option 2");
    /* The str and regex parsers have no format instructions; the list parser has. */
    ctn_node *s = ctn_parser_node(CTN_PARSER_STR, NULL, NULL, 0, err, sizeof err);
    CHECK(ctn_parser_format_instructions(s, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "no format instructions");
    CHECK(ctn_parser_node_grammar(s) == NULL);
    ctn_node_unref(s);
    s = ctn_parser_node(CTN_PARSER_LIST, NULL, NULL, 0, err, sizeof err);
    fi = ctn_parser_format_instructions(s, err, sizeof err);
    CHECK(fi != NULL && strstr(fi, "commas") != NULL);
    free(fi);
    ctn_node_unref(s);
    /* A sequence without a model is left as it is. */
    ctn_node *steps[2] = {ctn_node_passthrough(), ctn_json_parser_node(NULL, 0, err, sizeof err)};
    ctn_node *before = steps[0];
    CHECK_EQ_INT(ctn_sequence_bind_grammars(steps, 2), 0);
    CHECK(steps[0] == before);
    ctn_node_unref(steps[0]);
    ctn_node_unref(steps[1]);
}

int main(void) {
    RUN(json_parser_with_a_schema);
    RUN(enum_parser);
    RUN(json_parser_streams_partial_values);
    RUN(list_parser_streams_items);
    RUN(str_parser_passes_chunks_on);
    RUN(prompts);
    return test_summary();
}
