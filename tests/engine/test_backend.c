/*
 * The backend interface (kernels/backend.h) on the CPU backend, without a model: ops against
 * plain C loops, the same bits whatever the thread count (the planner's barriers hold), the
 * errors of weight_new and reserve, and allocation failures in every step of set-up.
 */
#include <math.h>
#include <stdlib.h>

#include "alloc.h"
#include "backend.h"
#include "base.h"
#include "test.h"
#include "types.h"

enum { T = 7, N_IN = 64, N_MID = 48 };

static float frand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

typedef struct {
    ctn_backend *be;
    ctn_be_weight *w1, *w2;
    float *x, *xn, *y, *z;
} rig;

static float W1[N_MID * N_IN], W2[N_IN * N_MID], BIAS[N_MID], NORM[N_IN];

static int rig_new(rig *r, int threads, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    int rc = ctn_backend_cpu_new(&r->be, threads, err, errlen);
    if (rc < 0) return rc;
    const ctn_backend_vt *vt = r->be->vt;
    const ctn_be_weight_desc d1 = {.name = "w1", .type = CTN_TYPE_F32, .n_in = N_IN,
                                   .n_out = N_MID, .data = W1, .row_bytes = N_IN * 4, .fd = -1};
    const ctn_be_weight_desc d2 = {.name = "w2", .type = CTN_TYPE_F32, .n_in = N_MID,
                                   .n_out = N_IN, .data = W2, .row_bytes = N_MID * 4, .fd = -1};
    const ctn_be_sizes sz = {.n_batch = T, .n_ctx = 4, .n_embd = N_IN, .n_head = 2,
                             .n_head_kv = 1, .head_dim = 32, .max_ops = 8,
                             .kv_type = CTN_TYPE_F16};
    if ((rc = vt->weight_new(r->be, &d1, &r->w1, err, errlen)) < 0 ||
        (rc = vt->weight_new(r->be, &d2, &r->w2, err, errlen)) < 0 ||
        (rc = vt->reserve(r->be, &sz, err, errlen)) < 0)
        return rc;
    float **bufs[] = {&r->x, &r->xn, &r->y, &r->z};
    for (int i = 0; i < 4; i++)
        if ((rc = vt->buf_new(r->be, T * N_IN * sizeof(float), (void **)bufs[i])) < 0) return rc;
    return 0;
}

static void rig_free(rig *r) {
    if (r->be == NULL) return;
    const ctn_backend_vt *vt = r->be->vt;
    float *bufs[] = {r->x, r->xn, r->y, r->z};
    for (int i = 0; i < 4; i++)
        if (bufs[i] != NULL) vt->buf_free(r->be, bufs[i]);
    vt->weight_free(r->be, r->w1);
    vt->weight_free(r->be, r->w2);
    ctn_backend_free(r->be);
}

/* xn = norm(x); y = W1 xn + bias; z = W2 y, added into x; y2 = silu(y) * (W1 xn) ... */
static int run(rig *r, const float *x0) {
    memcpy(r->x, x0, sizeof(float) * T * N_IN);
    const ctn_be_rows x = {r->x, N_IN, 1}, xn = {r->xn, N_IN, 2}, y = {r->y, N_MID, 3},
                      z = {r->z, N_IN, 4}, u = {r->z + 0, N_MID, 4};
    const ctn_be_op ops[] = {
        {.kind = CTN_OP_RMS_NORM,
         .rms = {.src = x, .dst = xn, .n_rows = T, .n_grp = 1, .width = N_IN, .w = NORM,
                 .eps = 1e-5f}},
        {.kind = CTN_OP_MATMUL,
         .mm = {.w = r->w1, .src = xn, .dst = y, .n_rows = T, .lora_slot = -1,
                .epi = CTN_EPI_BIAS, .bias = BIAS}},
        {.kind = CTN_OP_MATMUL,
         .mm = {.w = r->w2, .src = y, .dst = z, .n_rows = T, .lora_slot = -1,
                .epi = CTN_EPI_ADD, .aux = x}},
        {.kind = CTN_OP_RMS_NORM,
         .rms = {.src = x, .dst = xn, .n_rows = T, .n_grp = 2, .width = N_IN / 2, .w = NORM,
                 .eps = 1e-5f}},
        {.kind = CTN_OP_MATMUL,
         .mm = {.w = r->w1, .src = xn, .dst = u, .n_rows = T, .lora_slot = -1,
                .epi = CTN_EPI_SILU_MUL, .aux = y}},
    };
    int rc = r->be->vt->compute(r->be, &(ctn_be_graph){.ops = ops, .n_ops = 5, .n_tok = T});
    r->be->vt->sync(r->be);
    return rc;
}

static void norm_ref(const float *x, int64_t n, float *y) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)(x[i] * x[i]);
    const float sc = 1.0f / sqrtf((float)(s / (double)n) + 1e-5f);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * sc * NORM[i];
}

static void setup(float *x0) {
    uint32_t s = 7;
    for (int i = 0; i < N_MID * N_IN; i++)
        W1[i] = frand(&s) * 0.2f, W2[i] = frand(&s) * 0.2f;
    for (int i = 0; i < N_MID; i++)
        BIAS[i] = frand(&s);
    for (int i = 0; i < N_IN; i++)
        NORM[i] = 1.0f + 0.5f * frand(&s);
    for (int i = 0; i < T * N_IN; i++)
        x0[i] = frand(&s) * 3.0f;
}

TEST(ops_match_plain_loops) {
    float x0[T * N_IN];
    setup(x0);
    char err[160];
    rig r;
    CHECK(rig_new(&r, 1, err, sizeof err) == 0);
    CHECK(run(&r, x0) == 0);
    /* The same steps in plain loops (double sums: the kernels' order differs slightly). */
    float xn[N_IN], y[T][N_MID], x[T][N_IN], u[N_MID];
    double worst = 0;
    for (int t = 0; t < T; t++) {
        norm_ref(x0 + t * N_IN, N_IN, xn);
        for (int o = 0; o < N_MID; o++) {
            double s = 0;
            for (int i = 0; i < N_IN; i++)
                s += (double)W1[o * N_IN + i] * xn[i];
            y[t][o] = (float)s + BIAS[o];
        }
        for (int o = 0; o < N_IN; o++) {
            double s = 0;
            for (int i = 0; i < N_MID; i++)
                s += (double)W2[o * N_MID + i] * y[t][i];
            x[t][o] = x0[t * N_IN + o] + (float)s;
        }
        norm_ref(x[t], N_IN / 2, xn);
        norm_ref(x[t] + N_IN / 2, N_IN / 2, xn + N_IN / 2);
        for (int o = 0; o < N_MID; o++) {
            double s = 0;
            for (int i = 0; i < N_IN; i++)
                s += (double)W1[o * N_IN + i] * xn[i];
            u[o] = y[t][o] / (1.0f + expf(-y[t][o])) * (float)s;
        }
        for (int o = 0; o < N_IN; o++)
            worst = fmax(worst, fabs(x[t][o] - r.x[t * N_IN + o]));
        for (int o = 0; o < N_MID; o++)
            worst = fmax(worst, fabs(u[o] - r.y[t * N_MID + o]));
    }
    CHECK(worst < 1e-4);
    if (worst >= 1e-4) printf("  largest difference %g\n", worst);
    rig_free(&r);
}

/* Every thread count gives the bits one thread gives: the planner's barriers order each op
 * after the ones whose output its threads read. */
TEST(same_bits_on_any_thread_count) {
    float x0[T * N_IN];
    setup(x0);
    char err[160];
    rig one;
    CHECK(rig_new(&one, 1, err, sizeof err) == 0);
    CHECK(run(&one, x0) == 0);
    for (int th = 2; th <= 5; th++) {
        rig r;
        CHECK(rig_new(&r, th, err, sizeof err) == 0);
        for (int rep = 0; rep < 20; rep++) {
            CHECK(run(&r, x0) == 0);
            CHECK(memcmp(r.x, one.x, sizeof(float) * T * N_IN) == 0);
            CHECK(memcmp(r.y, one.y, sizeof(float) * T * N_MID) == 0);
        }
        rig_free(&r);
    }
    rig_free(&one);
}

TEST(weight_and_reserve_errors_name_the_problem) {
    char err[160];
    ctn_backend *be;
    CHECK(ctn_backend_cpu_new(&be, 513, err, sizeof err) == CTN_EINVAL);
    CHECK(strstr(err, "513") != NULL);
    CHECK(ctn_backend_cpu_new(&be, 1, err, sizeof err) == 0);
    ctn_be_weight *w = NULL;
    static uint8_t blob[34 * 4];
    ctn_be_weight_desc d = {.name = "blk.0.attn_q.weight", .type = CTN_TYPE_Q8_0, .n_in = 40,
                            .n_out = 2, .data = blob, .row_bytes = 68, .fd = -1};
    CHECK(be->vt->weight_new(be, &d, &w, err, sizeof err) == CTN_ENOTSUP);
    CHECK(w == NULL);
    CHECK(strstr(err, "blk.0.attn_q.weight") != NULL && strstr(err, "40") != NULL);
    const ctn_be_sizes bad = {.n_batch = 1, .n_ctx = 1, .n_head = 3, .n_head_kv = 2,
                              .head_dim = 32, .max_ops = 1, .kv_type = CTN_TYPE_F16};
    CHECK(be->vt->reserve(be, &bad, err, sizeof err) == CTN_ENOTSUP);
    CHECK(strstr(err, "3 heads over 2") != NULL);
    /* compute before reserve is refused, not run on missing scratch */
    CHECK(be->vt->compute(be, &(ctn_be_graph){.n_ops = 0}) == CTN_EINVAL);
    ctn_backend_free(be);
}

/* As SQLite does: the N-th allocation fails (once, then persistently) for every N that set-up
 * makes; each gives CTN_ENOMEM and frees what it had (LeakSanitizer in the asan build). */
TEST(allocation_failures_in_set_up) {
    char err[160];
    for (int once = 1; once >= 0; once--) {
        bool reached_end = false;
        for (long n = 0; n < 200 && !reached_end; n++) {
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            const long failed = ctn__alloc_n_failed;
            rig r;
            const int rc = rig_new(&r, 2, err, sizeof err);
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            if (ctn__alloc_n_failed == failed) {
                CHECK(rc == 0);
                reached_end = true;
            } else {
                CHECK(rc == CTN_ENOMEM);
            }
            rig_free(&r);
        }
        CHECK(reached_end);
    }
}

int main(void) {
    RUN(ops_match_plain_loops);
    RUN(same_bits_on_any_thread_count);
    RUN(weight_and_reserve_errors_name_the_problem);
    RUN(allocation_failures_in_set_up);
    return test_summary();
}
