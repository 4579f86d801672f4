/*
 * The chain executor (chains/chain.h) with nodes written in C: values flow through every
 * node kind, errors carry their node path, fallbacks / retry / timeout / cancellation
 * behave, streaming reaches the next step before the step before it ends, nothing runs
 * recursively on long inputs, and the trace and drawings show the graph.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "error.h"
#include "alloc.h"
#include "test.h"

/* ---- test nodes -------------------------------------------------------------------------- */

/* A node's behaviour: delay_ms < 0 ends at once (inside start), else after a timer. */
typedef struct {
    int add;        /* integer input + add */
    int fail_times; /* fail this many calls first */
    int calls;
    double delay_ms;
    int cancels; /* times its cancel hook ran */
    int in_flight, max_in_flight;
    const char *setting; /* when set: output the config's value of this key */
} fn_ud;

typedef struct {
    uv_timer_t h;
    ctn_task *t;
    fn_ud *u;
    ctn_val *in;
} pending;

static ctn_val *apply(fn_ud *u, ctn_task *t, const ctn_val *in) {
    if (u->setting != NULL) {
        const ctn_val *v = ctn_task_setting(t, u->setting);
        return v != NULL ? ctn_val_copy(v) : ctn_val_null();
    }
    if (in->kind == CTN_VINT) return ctn_val_int(in->u.i + u->add);
    return ctn_val_copy(in);
}

static void finish(fn_ud *u, ctn_task *t, const ctn_val *in) {
    u->in_flight--;
    if (u->calls <= u->fail_times) {
        ctn_task_fail(t, CTN_ECHAIN, "failure %d of %d", u->calls, u->fail_times);
        return;
    }
    ctn_task_done(t, apply(u, t, in));
}

static void closed(uv_handle_t *h) {
    pending *p = (pending *)h;
    ctn_val_unref(p->in);
    free(p);
}

static void fire(uv_timer_t *h) {
    pending *p = (pending *)h;
    ctn_task *t = p->t;
    if (t != NULL) {
        ctn_task_set_data(t, NULL);
        finish(p->u, t, p->in);
    }
    uv_close((uv_handle_t *)h, closed);
}

static void fn_start(ctn_task *t, ctn_val *in) {
    fn_ud *u = ctn_node_ud(ctn_task_node(t));
    u->calls++;
    if (++u->in_flight > u->max_in_flight) u->max_in_flight = u->in_flight;
    if (u->delay_ms < 0) {
        finish(u, t, in);
        return;
    }
    pending *p = calloc(1, sizeof *p);
    p->t = t, p->u = u, p->in = ctn_val_ref(in);
    uv_timer_init(ctn_task_loop(t), &p->h);
    uv_timer_start(&p->h, fire, (uint64_t)u->delay_ms, 0);
    ctn_task_set_data(t, p);
}

static void fn_cancel(ctn_task *t) {
    fn_ud *u = ctn_node_ud(ctn_task_node(t));
    u->cancels++;
    u->in_flight--;
    pending *p = ctn_task_data(t);
    if (p != NULL) {
        p->t = NULL;
        uv_timer_stop(&p->h);
        uv_close((uv_handle_t *)&p->h, closed);
    }
}

static const ctn_node_ops fn_ops = {
    .kind = "lambda", .start = fn_start, .cancel = fn_cancel, .free_ud = free};

static ctn_node *fn(int add, double delay_ms, const char *name) {
    fn_ud *u = calloc(1, sizeof *u);
    u->add = add;
    u->delay_ms = delay_ms;
    return ctn_node_custom(&fn_ops, u, name);
}

static fn_ud *ud_of(ctn_node *n) {
    return ctn_node_ud(n);
}

/* ---- running -------------------------------------------------------------------------------- */

typedef struct {
    int done;
    ctn_val *out;
    int code;
    char msg[512], path[256];
    ctn_val *chunks; /* array */
    int free_in_done;
    ctn_run *run;
} result;

static void on_done(void *ud, const ctn_val *out, const ctn_chain_err *err) {
    result *r = ud;
    r->done++;
    if (err != NULL) {
        r->code = err->code;
        snprintf(r->msg, sizeof r->msg, "%s", err->message);
        snprintf(r->path, sizeof r->path, "%s", err->path);
    } else {
        r->out = ctn_val_ref((ctn_val *)out);
    }
    if (r->free_in_done) {
        ctn_run_free(r->run);
        ctn_run_free(r->run); /* a second call is harmless */
        r->run = NULL;
    }
}

static void on_chunk(void *ud, const ctn_val *chunk) {
    result *r = ud;
    ctn_val_push(r->chunks, ctn_val_copy(chunk));
}

static void result_free(result *r) {
    ctn_val_unref(r->out);
    ctn_val_unref(r->chunks);
    memset(r, 0, sizeof *r);
}

/* Runs root on input (taken) to the end; returns the run (not freed) in *run if asked. */
static void run_to_end(uv_loop_t *loop, ctn_node *root, ctn_val *input, const ctn_val *config,
                       int flags, result *res, ctn_run **keep) {
    memset(res, 0, sizeof *res);
    res->chunks = ctn_val_arr();
    ctn_run_callbacks cb = {.on_done = on_done, .on_chunk = on_chunk, .ud = res};
    ctn_run *run = NULL;
    CHECK_EQ_INT(ctn_run_start(loop, root, input, config, &cb, flags, &run), 0);
    res->run = run;
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(res->done, 1);
    ctn_val_unref(input);
    if (keep != NULL)
        *keep = run;
    else if (res->run != NULL)
        ctn_run_free(run);
}

static int64_t out_int(const result *r) {
    return r->out != NULL && r->out->kind == CTN_VINT ? r->out->u.i : -999999;
}

static char *json(const ctn_val *v) {
    static char buf[4096];
    char *j = ctn_val_to_json(v, 0);
    snprintf(buf, sizeof buf, "%s", j ? j : "(null)");
    free(j);
    return buf;
}

/* ---- tests ------------------------------------------------------------------------------- */

TEST(sequence_of_sync_and_async_steps) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_node *steps[4] = {fn(1, -1, NULL), fn(10, 2, NULL), fn(100, -1, NULL), fn(1000, 0, NULL)};
    ctn_node *seq = ctn_node_sequence(steps, 4);
    result r;
    run_to_end(&loop, seq, ctn_val_int(5), NULL, 0, &r, NULL);
    CHECK_EQ_INT(out_int(&r), 1116);
    result_free(&r);
    /* The same node runs again (nodes are reusable and shared). */
    run_to_end(&loop, seq, ctn_val_int(0), NULL, 0, &r, NULL);
    CHECK_EQ_INT(out_int(&r), 1111);
    result_free(&r);
    ctn_node_unref(seq);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(parallel_assign_pick_passthrough) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* Children end in the opposite order of their keys: the keys keep the node's order. */
    const char *keys[3] = {"slow", "fast", "same"};
    ctn_node *kids[3] = {fn(1, 5, NULL), fn(2, 1, NULL), ctn_node_passthrough()};
    ctn_node *par = ctn_node_parallel(keys, kids, 3);
    result r;
    run_to_end(&loop, par, ctn_val_int(40), NULL, 0, &r, NULL);
    CHECK_STR(json(r.out), "{\"slow\":41,\"fast\":42,\"same\":40}");
    result_free(&r);
    ctn_node_unref(par);

    const char *akeys[1] = {"n2"};
    ctn_node *akids[1] = {ctn_node_pick((const char *[]){"n"}, 1, 1)};
    ctn_node *asg = ctn_node_assign(akeys, akids, 1);
    ctn_val *in = ctn_val_obj();
    ctn_val_set(in, "n", ctn_val_int(7));
    ctn_val_set(in, "s", ctn_val_cstr("x"));
    run_to_end(&loop, asg, in, NULL, 0, &r, NULL);
    CHECK_STR(json(r.out), "{\"n\":7,\"s\":\"x\",\"n2\":7}");
    result_free(&r);
    /* assign needs an object. */
    run_to_end(&loop, asg, ctn_val_int(3), NULL, 0, &r, NULL);
    CHECK_EQ_INT(r.code, CTN_ETYPE);
    CHECK_STR(r.msg, "needs an object as input, got integer"); /* the path names the node */
    result_free(&r);
    ctn_node_unref(asg);

    ctn_node *pk = ctn_node_pick((const char *[]){"b", "zz", "a"}, 3, 0);
    in = ctn_val_obj();
    ctn_val_set(in, "a", ctn_val_int(1));
    ctn_val_set(in, "b", ctn_val_int(2));
    run_to_end(&loop, pk, in, NULL, 0, &r, NULL);
    CHECK_STR(json(r.out), "{\"b\":2,\"a\":1}");
    result_free(&r);
    ctn_node_unref(pk);
    /* A parallel node with no children gives an empty object. */
    ctn_node *empty = ctn_node_parallel(NULL, NULL, 0);
    run_to_end(&loop, empty, ctn_val_int(1), NULL, 0, &r, NULL);
    CHECK_STR(json(r.out), "{}");
    result_free(&r);
    ctn_node_unref(empty);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(branch_and_router) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* Conditions: the "flag" setting of the input object, read with pick. */
    ctn_node *conds[2] = {ctn_node_pick((const char *[]){"a"}, 1, 1),
                          ctn_node_pick((const char *[]){"b"}, 1, 1)};
    ctn_node *brs[2] = {ctn_node_pick((const char *[]){"x"}, 1, 1),
                        ctn_node_pick((const char *[]){"y"}, 1, 1)};
    ctn_node *br = ctn_node_branch(conds, brs, 2, ctn_node_pick((const char *[]){"z"}, 1, 1));
    const char *cases[3][2] = {{"a", "x"}, {"b", "y"}, {"c", "z"}};
    for (int i = 0; i < 3; i++) {
        ctn_val *in = ctn_val_obj();
        ctn_val_set(in, "a", ctn_val_bool(0));
        ctn_val_set(in, cases[i][0], ctn_val_bool(1));
        ctn_val_set(in, "x", ctn_val_cstr("X"));
        ctn_val_set(in, "y", ctn_val_cstr("Y"));
        ctn_val_set(in, "z", ctn_val_cstr("Z"));
        result r;
        run_to_end(&loop, br, in, NULL, 0, &r, NULL);
        char want[8];
        snprintf(want, sizeof want, "\"%c\"", cases[i][1][0] - 'a' + 'A');
        CHECK_STR(json(r.out), want);
        result_free(&r);
    }
    ctn_node_unref(br);

    const char *names[2] = {"math", "poem"};
    ctn_node *routes[2] = {ctn_node_pick((const char *[]){"q"}, 1, 1), ctn_node_passthrough()};
    ctn_node *ro = ctn_node_router("topic", names, routes, 2, NULL);
    ctn_val *in = ctn_val_obj();
    ctn_val_set(in, "topic", ctn_val_cstr("math"));
    ctn_val_set(in, "q", ctn_val_int(12));
    result r;
    run_to_end(&loop, ro, in, NULL, 0, &r, NULL);
    CHECK_EQ_INT(out_int(&r), 12);
    result_free(&r);
    in = ctn_val_obj();
    ctn_val_set(in, "topic", ctn_val_cstr("law"));
    run_to_end(&loop, ro, in, NULL, 0, &r, NULL);
    CHECK_EQ_INT(r.code, CTN_ENOENT);
    CHECK_STR(r.msg, "no route 'law' for key 'topic' (routes: math, poem)");
    CHECK_STR(r.path, "router");
    result_free(&r);
    in = ctn_val_obj();
    ctn_val_set(in, "topic", ctn_val_int(3));
    run_to_end(&loop, ro, in, NULL, 0, &r, NULL);
    CHECK_EQ_INT(r.code, CTN_ETYPE);
    CHECK_CONTAINS(r.msg, "must be a string, got integer");
    result_free(&r);
    ctn_node_unref(ro);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(error_paths_name_the_node) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* rag = {context = retriever | format, question = passthrough} | prompt */
    ctn_node *retriever = fn(0, 1, "retriever");
    ud_of(retriever)->fail_times = 1;
    ctn_node *ctx_steps[2] = {retriever, fn(0, -1, "format_docs")};
    const char *keys[2] = {"context", "question"};
    ctn_node *kids[2] = {ctn_node_sequence(ctx_steps, 2), ctn_node_passthrough()};
    ctn_node *steps[2] = {ctn_node_parallel(keys, kids, 2), fn(0, -1, "prompt")};
    ctn_node *rag = ctn_node_named(ctn_node_sequence(steps, 2), "rag");
    result r;
    run_to_end(&loop, rag, ctn_val_cstr("q"), NULL, 0, &r, NULL);
    CHECK_EQ_INT(r.code, CTN_ECHAIN);
    CHECK_STR(r.path, "rag > parallel.context > retriever");
    CHECK_STR(r.msg, "failure 1 of 1");
    result_free(&r);
    ctn_node_unref(rag);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(fallbacks_retry_timeout) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_node *bad = fn(1, 1, "primary");
    ud_of(bad)->fail_times = 100;
    ctn_node *alt = fn(2, -1, NULL);
    ctn_node *fb = ctn_node_fallbacks(ctn_node_ref(bad), (ctn_node *[]){alt}, 1);
    result r;
    run_to_end(&loop, fb, ctn_val_int(1), NULL, 0, &r, NULL);
    CHECK_EQ_INT(out_int(&r), 3);
    result_free(&r);
    ctn_node_unref(fb);
    /* All fail: the first error comes out. */
    ctn_node *bad2 = fn(0, -1, "second");
    ud_of(bad2)->fail_times = 100;
    fb = ctn_node_fallbacks(ctn_node_ref(bad), (ctn_node *[]){bad2}, 1);
    run_to_end(&loop, fb, ctn_val_int(1), NULL, 0, &r, NULL);
    CHECK_EQ_INT(r.code, CTN_ECHAIN);
    CHECK_STR(r.path, "fallbacks > primary");
    result_free(&r);
    ctn_node_unref(fb);
    ctn_node_unref(bad);

    /* Retry: two failures, then success on the third attempt, after 4 + 8 ms of backoff. */
    ctn_node *flaky = fn(5, 0, NULL);
    ud_of(flaky)->fail_times = 2;
    ctn_node *rt = ctn_node_retry(ctn_node_ref(flaky), 3, 4);
    const uint64_t t0 = uv_hrtime();
    run_to_end(&loop, rt, ctn_val_int(1), NULL, 0, &r, NULL);
    CHECK_EQ_INT(out_int(&r), 6);
    /* libuv's clock counts whole milliseconds (uv_now truncates), so each timer may fire up
     * to 1 ms before its wait has passed in real time: 4 + 8 ms of backoff is >= 10 ms. */
    CHECK(uv_hrtime() - t0 >= 10 * 1000000ull);
    CHECK_EQ_INT(ud_of(flaky)->calls, 3);
    result_free(&r);
    /* Too few attempts: the last error. */
    ud_of(flaky)->calls = 0;
    ctn_node *rt2 = ctn_node_retry(ctn_node_ref(flaky), 2, 0);
    run_to_end(&loop, rt2, ctn_val_int(1), NULL, 0, &r, NULL);
    CHECK_STR(r.msg, "failure 2 of 2");
    result_free(&r);
    ctn_node_unref(rt2);
    ctn_node_unref(rt);
    ctn_node_unref(flaky);

    /* Timeout: the slow child is cancelled, the error names the timeout node. */
    ctn_node *slow = fn(0, 2000, "slow");
    ctn_node *to = ctn_node_timeout(ctn_node_ref(slow), 10);
    const uint64_t t1 = uv_hrtime();
    run_to_end(&loop, to, ctn_val_int(1), NULL, 0, &r, NULL);
    CHECK_EQ_INT(r.code, CTN_ETIMEDOUT);
    CHECK_STR(r.msg, "timed out after 10 ms");
    CHECK_STR(r.path, "timeout");
    CHECK_EQ_INT(ud_of(slow)->cancels, 1);
    CHECK(uv_hrtime() - t1 < 1000 * 1000000ull);
    result_free(&r);
    ctn_node_unref(to);
    /* A fast child within the limit. */
    ctn_node *fast = ctn_node_timeout(fn(1, 1, NULL), 500);
    run_to_end(&loop, fast, ctn_val_int(1), NULL, 0, &r, NULL);
    CHECK_EQ_INT(out_int(&r), 2);
    result_free(&r);
    ctn_node_unref(fast);
    ctn_node_unref(slow);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(bind_config_flows_down) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_node *reader = fn(0, -1, NULL);
    ud_of(reader)->setting = "temperature";
    ctn_val *c = ctn_val_obj();
    ctn_val_set(c, "temperature", ctn_val_num(0.25));
    ctn_node *b = ctn_node_bind(ctn_node_ref(reader), c);
    result r;
    ctn_val *base = ctn_val_obj();
    ctn_val_set(base, "temperature", ctn_val_num(0.9));
    run_to_end(&loop, b, ctn_val_int(0), base, 0, &r, NULL);
    CHECK_STR(json(r.out), "0.25");
    result_free(&r);
    /* Without the bind, the run's config. */
    run_to_end(&loop, reader, ctn_val_int(0), base, 0, &r, NULL);
    CHECK_STR(json(r.out), "0.90000000000000002");
    result_free(&r);
    ctn_node_unref(b);
    /* Tags append. */
    ctn_node *tags = fn(0, -1, NULL);
    ud_of(tags)->setting = "tags";
    ctn_val *t1 = ctn_val_obj(), *arr = ctn_val_arr();
    ctn_val_push(arr, ctn_val_cstr("inner"));
    ctn_val_set(t1, "tags", arr);
    ctn_node *bt = ctn_node_bind(tags, t1);
    ctn_val_unref(base);
    base = ctn_val_obj();
    arr = ctn_val_arr();
    ctn_val_push(arr, ctn_val_cstr("outer"));
    ctn_val_set(base, "tags", arr);
    run_to_end(&loop, bt, ctn_val_int(0), base, 0, &r, NULL);
    CHECK_STR(json(r.out), "[\"outer\",\"inner\"]");
    result_free(&r);
    ctn_node_unref(bt);
    ctn_val_unref(base);
    ctn_node_unref(reader);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(map_long_arrays_and_concurrency) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* 100,000 elements ending at once: no recursion per element. */
    ctn_node *m = ctn_node_map(fn(1, -1, NULL), 0);
    ctn_val *in = ctn_val_arr();
    for (int i = 0; i < 100000; i++)
        ctn_val_push(in, ctn_val_int(i));
    result r;
    run_to_end(&loop, m, in, NULL, 0, &r, NULL);
    CHECK_EQ_INT(ctn_val_len(r.out), 100000);
    CHECK_EQ_INT(ctn_val_at(r.out, 99999)->u.i, 100000);
    result_free(&r);
    ctn_node_unref(m);
    /* At most 3 at once, in order. */
    ctn_node *slow = fn(10, 1, NULL);
    m = ctn_node_map(ctn_node_ref(slow), 3);
    in = ctn_val_arr();
    for (int i = 0; i < 10; i++)
        ctn_val_push(in, ctn_val_int(i));
    run_to_end(&loop, m, in, NULL, 0, &r, NULL);
    CHECK_STR(json(r.out), "[10,11,12,13,14,15,16,17,18,19]");
    CHECK_EQ_INT(ud_of(slow)->max_in_flight, 3);
    result_free(&r);
    ctn_node_unref(m);
    /* The config's max_concurrency when the node has none. */
    ud_of(slow)->max_in_flight = 0;
    m = ctn_node_map(ctn_node_ref(slow), 0);
    ctn_val *cfg = ctn_val_obj();
    ctn_val_set(cfg, "max_concurrency", ctn_val_int(2));
    in = ctn_val_arr();
    for (int i = 0; i < 6; i++)
        ctn_val_push(in, ctn_val_int(i));
    run_to_end(&loop, m, in, cfg, 0, &r, NULL);
    CHECK_EQ_INT(ud_of(slow)->max_in_flight, 2);
    result_free(&r);
    ctn_val_unref(cfg);
    ctn_node_unref(m);
    ctn_node_unref(slow);
    /* A long sequence of nodes ending at once. */
    ctn_node *steps[200];
    for (int i = 0; i < 200; i++)
        steps[i] = fn(1, -1, NULL);
    ctn_node *seq = ctn_node_sequence(steps, 200);
    run_to_end(&loop, seq, ctn_val_int(0), NULL, 0, &r, NULL);
    CHECK_EQ_INT(out_int(&r), 200);
    result_free(&r);
    ctn_node_unref(seq);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(cancel_stops_every_task) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_node *a = fn(1, 500, NULL), *b = fn(2, 500, NULL);
    const char *keys[2] = {"a", "b"};
    ctn_node *par = ctn_node_parallel(keys, (ctn_node *[]){ctn_node_ref(a), ctn_node_ref(b)}, 2);
    result r;
    memset(&r, 0, sizeof r);
    ctn_run_callbacks cb = {.on_done = on_done, .ud = &r};
    ctn_run *run;
    ctn_val *one = ctn_val_int(1);
    CHECK_EQ_INT(ctn_run_start(&loop, par, one, NULL, &cb, 0, &run), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ_INT(r.done, 0);
    ctn_run_cancel(run);
    CHECK_EQ_INT(r.done, 1);
    CHECK_EQ_INT(r.code, CTN_ECANCELED);
    CHECK_EQ_INT(ud_of(a)->cancels + ud_of(b)->cancels, 2);
    ctn_run_cancel(run); /* again: nothing */
    CHECK_EQ_INT(r.done, 1);
    ctn_run_free(run);
    uv_run(&loop, UV_RUN_DEFAULT); /* the timers' close callbacks */
    result_free(&r);
    /* Freeing a run that is still going cancels it. */
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(ctn_run_start(&loop, par, one, NULL, &cb, 0, &run), 0);
    ctn_run_free(run);
    CHECK_EQ_INT(r.done, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    result_free(&r);
    /* Freeing the run from its own on_done. */
    ctn_node *quick = fn(1, -1, NULL);
    memset(&r, 0, sizeof r);
    r.free_in_done = 1;
    CHECK_EQ_INT(ctn_run_start(&loop, quick, one, NULL, &cb, 0, &r.run), 0);
    CHECK_EQ_INT(r.done, 1);
    CHECK(r.run == NULL);
    ctn_val_unref(one);
    result_free(&r);
    ctn_node_unref(quick);
    ctn_node_unref(par);
    ctn_node_unref(a);
    ctn_node_unref(b);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- streaming -------------------------------------------------------------------------- */

/* A producer that emits the characters of its string input one per timer tick. */
typedef struct {
    uv_timer_t h;
    ctn_task *t;
    char *s;
    size_t i, n;
} producer;

static void prod_closed(uv_handle_t *h) {
    producer *p = (producer *)h;
    free(p->s);
    free(p);
}

static void prod_tick(uv_timer_t *h) {
    producer *p = (producer *)h;
    if (p->t == NULL) return;
    if (p->i < p->n) {
        ctn_task_emit(p->t, ctn_val_str(p->s + p->i, 1));
        p->i++;
        return;
    }
    ctn_task *t = p->t;
    p->t = NULL;
    ctn_task_set_data(t, NULL);
    uv_timer_stop(h);
    uv_close((uv_handle_t *)h, prod_closed);
    ctn_task_done(t, ctn_val_str(p->s, p->n));
}

static void prod_start(ctn_task *t, ctn_val *in) {
    producer *p = calloc(1, sizeof *p);
    p->t = t;
    p->s = ctn_val_text(in, &p->n);
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

/* A consumer that upper-cases each chunk as it comes and records whether it saw them before
 * the producer ended (feed_end). Fails on 'x'. */
typedef struct {
    int fed, ended_with_whole;
} cons_state;

static cons_state cons_seen;

static void cons_start(ctn_task *t, ctn_val *in) {
    if (in != NULL) { /* not streamed: the whole input at once */
        char *s = ctn_val_text(in, NULL);
        for (char *c = s; *c; c++)
            *c = (char)(*c - 32);
        ctn_task_done(t, ctn_val_cstr(s));
        free(s);
    }
}

static void cons_feed(ctn_task *t, const ctn_val *chunk) {
    cons_seen.fed++;
    char c = chunk->u.str.p[0];
    if (c == 'x') {
        ctn_task_fail(t, CTN_EFORMAT, "bad chunk 'x'");
        return;
    }
    c = (char)(c - 32);
    ctn_task_emit(t, ctn_val_str(&c, 1));
}

static void cons_feed_end(ctn_task *t, const ctn_val *whole) {
    cons_seen.ended_with_whole = (int)ctn_val_len(whole);
    char *s = ctn_val_text(whole, NULL);
    for (char *c = s; *c; c++)
        *c = (char)(*c - 32);
    ctn_task_done(t, ctn_val_cstr(s));
    free(s);
}

static const ctn_node_ops cons_ops = {
    .kind = "consumer", .start = cons_start, .feed = cons_feed, .feed_end = cons_feed_end};

TEST(streaming_flows_step_to_step) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_node *steps[2] = {ctn_node_custom(&prod_ops, NULL, NULL),
                          ctn_node_custom(&cons_ops, NULL, NULL)};
    ctn_node *seq = ctn_node_sequence(steps, 2);
    result r;
    memset(&cons_seen, 0, sizeof cons_seen);
    run_to_end(&loop, seq, ctn_val_cstr("abc"), NULL, CTN_RUN_STREAM, &r, NULL);
    CHECK_STR(json(r.out), "\"ABC\"");
    CHECK_STR(json(r.chunks), "[\"A\",\"B\",\"C\"]");
    CHECK_EQ_INT(cons_seen.fed, 3);
    CHECK_EQ_INT(cons_seen.ended_with_whole, 3);
    result_free(&r);
    /* Without streaming, the consumer gets the whole input once. */
    memset(&cons_seen, 0, sizeof cons_seen);
    run_to_end(&loop, seq, ctn_val_cstr("abc"), NULL, 0, &r, NULL);
    CHECK_STR(json(r.out), "\"ABC\"");
    CHECK_EQ_INT(cons_seen.fed, 0);
    CHECK_EQ_INT(ctn_val_len(r.chunks), 0);
    result_free(&r);
    /* The consumer fails on a chunk: the producer (still emitting) is cancelled. */
    memset(&cons_seen, 0, sizeof cons_seen);
    run_to_end(&loop, seq, ctn_val_cstr("abxcd"), NULL, CTN_RUN_STREAM, &r, NULL);
    CHECK_EQ_INT(r.code, CTN_EFORMAT);
    CHECK_STR(r.path, "consumer");
    CHECK_EQ_INT(cons_seen.fed, 3);
    result_free(&r);
    /* Two streaming steps in a row: chunks flow through both as they come. */
    ctn_node *three[3] = {ctn_node_custom(&prod_ops, NULL, NULL),
                          ctn_node_custom(&cons_ops, NULL, NULL),
                          ctn_node_custom(&cons_ops, NULL, NULL)};
    ctn_node *seq3 = ctn_node_sequence(three, 3);
    memset(&cons_seen, 0, sizeof cons_seen);
    run_to_end(&loop, seq3, ctn_val_cstr("abc"), NULL, CTN_RUN_STREAM, &r, NULL);
    CHECK_STR(json(r.out), "\"!\\\"#\"");
    CHECK_EQ_INT(ctn_val_len(r.chunks), 3);
    CHECK_EQ_INT(cons_seen.fed, 6);
    result_free(&r);
    ctn_node_unref(seq3);
    /* Parallel streams {key: chunk}; a passthrough after a producer streams too. */
    ctn_node *ps[2] = {ctn_node_custom(&prod_ops, NULL, NULL), ctn_node_passthrough()};
    const char *keys[1] = {"k"};
    ctn_node *par = ctn_node_parallel(keys, (ctn_node *[]){ctn_node_sequence(ps, 2)}, 1);
    run_to_end(&loop, par, ctn_val_cstr("hi"), NULL, CTN_RUN_STREAM, &r, NULL);
    CHECK_STR(json(r.chunks), "[{\"k\":\"h\"},{\"k\":\"i\"}]");
    CHECK_STR(json(r.out), "{\"k\":\"hi\"}");
    result_free(&r);
    ctn_node_unref(par);
    ctn_node_unref(seq);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- tracing and drawings -------------------------------------------------------------- */

static int n_events[3];

static void on_event(void *ud, const ctn_event *ev) {
    (void)ud;
    n_events[ev->kind]++;
}

TEST(trace_and_drawings) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *keys[2] = {"a", "b"};
    ctn_node *par = ctn_node_parallel(keys, (ctn_node *[]){fn(1, 1, "one"), fn(2, -1, NULL)}, 2);
    ctn_node *steps[2] = {par, ctn_node_pick((const char *[]){"a"}, 1, 1)};
    ctn_node *seq = ctn_node_named(ctn_node_sequence(steps, 2), "demo");
    result r;
    memset(&r, 0, sizeof r);
    memset(n_events, 0, sizeof n_events);
    ctn_run_callbacks cb = {.on_done = on_done, .on_event = on_event, .ud = &r};
    ctn_run *run;
    ctn_val *in = ctn_val_int(3);
    CHECK_EQ_INT(ctn_run_start(&loop, seq, in, NULL, &cb, CTN_RUN_EVENTS, &run), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(out_int(&r), 4);
    size_t ns = 0;
    const ctn_span *sp = ctn_run_spans(run, &ns);
    /* demo (bind), sequence, parallel, one, lambda, pick */
    CHECK_EQ_INT(ns, 6);
    CHECK_EQ_INT(n_events[CTN_EV_START], 6);
    CHECK_EQ_INT(n_events[CTN_EV_END], 6);
    CHECK_STR(sp[0].label, "demo");
    CHECK_EQ_INT(sp[0].parent_id, -1);
    CHECK_STR(sp[3].label, "one");
    CHECK_STR(sp[3].key, "a");
    CHECK_EQ_INT(sp[3].parent_id, 2);
    CHECK_STR(sp[3].input, "3");
    CHECK_STR(sp[3].output, "4");
    char *text = ctn_run_trace_text(run);
    CHECK_CONTAINS(text, "demo (bind)");
    CHECK_CONTAINS(text, "    a: one (lambda)");
    free(text);
    ctn_run_free(run);
    ctn_val_unref(in);
    result_free(&r);

    char *d = ctn_node_describe(seq);
    CHECK_CONTAINS(d, "demo\n`-- sequence\n    |-- parallel\n    |   |-- a: one (lambda)\n");
    CHECK_CONTAINS(d, "    `-- pick: a\n");
    free(d);
    ctn_val *g = ctn_node_graph(seq);
    /* input, demo, parallel, one, lambda, pick, output */
    CHECK_EQ_INT(ctn_val_len(ctn_val_get(g, "nodes")), 7);
    /* input>demo, demo>parallel, parallel>one, parallel>lambda, one>pick, lambda>pick,
     * pick>output */
    CHECK_EQ_INT(ctn_val_len(ctn_val_get(g, "edges")), 7);
    ctn_val_unref(g);
    char *mm = ctn_node_mermaid(seq);
    CHECK_CONTAINS(mm, "flowchart TD\n    n0([\"input\"])\n");
    CHECK_CONTAINS(mm, "-->|\"a\"| n3");
    free(mm);
    ctn_node_unref(seq);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(bad_arguments) {
    CHECK(ctn_node_sequence(NULL, 0) == NULL);
    CHECK(ctn_node_retry(fn(0, -1, NULL), 0, 1) == NULL);
    CHECK(ctn_node_timeout(fn(0, -1, NULL), 0) == NULL);
    CHECK(ctn_node_pick((const char *[]){"a", "b"}, 2, 1) == NULL);
    CHECK(ctn_node_bind(fn(0, -1, NULL), ctn_val_int(1)) == NULL);
    ctn_node *ok = ctn_node_passthrough();
    /* A sequence with a NULL step releases the others. */
    CHECK(ctn_node_sequence((ctn_node *[]){ok, NULL}, 2) == NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ctn_run *run;
    ctn_node *p = ctn_node_passthrough();
    CHECK_EQ_INT(ctn_run_start(&loop, p, NULL, NULL, NULL, 0, &run), CTN_EINVAL);
    ctn_val *in = ctn_val_int(1), *bad = ctn_val_arr();
    CHECK_EQ_INT(ctn_run_start(&loop, p, in, bad, NULL, 0, &run), CTN_EINVAL);
    ctn_val_unref(in);
    ctn_val_unref(bad);
    ctn_node_unref(p);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/*
 * Allocation failures in a chain run (SQLite's discipline): for every N, the N-th allocation
 * of a run and every one after it fail, over a run with a sequence, a parallel step with a
 * timer-driven child, assign and pick, a retry and a timeout, traced and streamed. Each
 * case ends cleanly: ctn_run_start fails with CTN_ENOMEM and calls nothing, or on_done comes
 * exactly once, with the right output or CTN_ENOMEM; the loop closes (nothing left behind),
 * and the ASan copy checks that nothing leaks.
 */
TEST(allocation_failures_in_a_run) {
    const char *keys[2] = {"slow", "same"};
    ctn_node *kids[2] = {fn(1, 1, NULL), ctn_node_passthrough()};
    ctn_node *steps[4] = {fn(1, -1, NULL), ctn_node_parallel(keys, kids, 2),
                          ctn_node_pick((const char *[]){"slow"}, 1, 1),
                          ctn_node_timeout(ctn_node_retry(fn(100, -1, NULL), 2, 0), 5000)};
    ctn_node *chain = ctn_node_sequence(steps, 4);
    long n = 0;
    int start_failed = 0, run_failed = 0, ok = 0;
    for (; n < 100000; n++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        result r;
        memset(&r, 0, sizeof r);
        ctn_run_callbacks cb = {.on_done = on_done, .ud = &r};
        ctn_run *run = NULL;
        ctn__alloc_fail_after = n;
        ctn_val *in = ctn_val_int(5);
        const int rc =
            in == NULL ? CTN_ENOMEM
                       : ctn_run_start(&loop, chain, in, NULL, &cb,
                                       CTN_RUN_STREAM | CTN_RUN_TRACE, &run);
        if (rc == 0) uv_run(&loop, UV_RUN_DEFAULT);
        const bool untouched = ctn__alloc_fail_after > 0;
        ctn__alloc_fail_after = -1;
        if (rc < 0) {
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK_EQ_INT(r.done, 0);
            start_failed++;
        } else {
            CHECK_EQ_INT(r.done, 1);
            if (r.out != NULL) {
                CHECK_EQ_INT(out_int(&r), 107);
                ok++;
            } else {
                if (r.code != CTN_ENOMEM) printf("  N=%ld: %d %s\n", n, r.code, r.msg);
                CHECK_EQ_INT(r.code, CTN_ENOMEM);
                run_failed++;
            }
            ctn_run_free(run);
        }
        ctn_val_unref(in);
        ctn_val_unref(r.out);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_EQ_INT(uv_loop_close(&loop), 0);
        if (untouched) break;
    }
    printf("  %ld allocations: %d starts and %d runs failed cleanly, %d ran\n", n, start_failed,
           run_failed, ok);
    CHECK(n > 10 && n < 100000 && run_failed > 0 && ok >= 1);
    ctn_node_unref(chain);
}

int main(void) {
    RUN(allocation_failures_in_a_run);
    RUN(sequence_of_sync_and_async_steps);
    RUN(parallel_assign_pick_passthrough);
    RUN(branch_and_router);
    RUN(error_paths_name_the_node);
    RUN(fallbacks_retry_timeout);
    RUN(bind_config_flows_down);
    RUN(map_long_arrays_and_concurrency);
    RUN(cancel_stops_every_task);
    RUN(streaming_flows_step_to_step);
    RUN(trace_and_drawings);
    RUN(bad_arguments);
    return test_summary();
}
