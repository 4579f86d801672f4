/*
 * Prompts, chat prompts, the model node, the scorer node and the output parsers as chain
 * nodes (components.h).
 */
#include "components.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "json_schema.h"
#include "template.h"
#include "textparse.h"
#include "str.h"
#include "alloc.h"
#include "unicode.h"
#include "vocab.h"

/* ==== prompt ================================================================================ */

typedef struct {
    ctn_tmpl *t;
    char *src;
} prompt_ud;

static void prompt_start(ctn_task *t, ctn_val *input) {
    prompt_ud *u = ctn_node_ud(ctn_task_node(t));
    char *out = NULL, err[512];
    size_t len = 0;
    const int rc = ctn_tmpl_render(u->t, input, &out, &len, err, sizeof err);
    if (rc < 0) {
        ctn_task_fail(t, rc, "%s", err);
        return;
    }
    ctn_val *v = ctn_val_str(out, len);
    free(out);
    ctn_task_done(t, v);
}

static void prompt_free(void *p) {
    prompt_ud *u = p;
    ctn_tmpl_free(u->t);
    free(u->src);
    free(u);
}

static char *prompt_describe(const void *p) {
    const prompt_ud *u = p;
    const size_t n = strlen(u->src);
    char *d = ctn__malloc(n > 60 ? 68 : n + 3);
    if (d == NULL) return NULL;
    if (n > 60)
        snprintf(d, 68, "\"%.57s...\"", u->src);
    else
        snprintf(d, n + 3, "\"%s\"", u->src);
    for (char *c = d; *c; c++)
        if (*c == '\n') *c = ' ';
    return d;
}

static const ctn_node_ops prompt_ops = {
    .kind = "prompt", .start = prompt_start, .free_ud = prompt_free, .describe = prompt_describe};

ctn_node *ctn_prompt_node(const char *tmpl, size_t n, char *err, size_t errcap) {
    prompt_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) return NULL;
    u->t = ctn_tmpl_parse(tmpl, n, err, errcap);
    u->src = ctn__strndup(tmpl, n);
    if (u->t == NULL || u->src == NULL) {
        prompt_free(u);
        return NULL;
    }
    ctn_node *node = ctn_node_custom(&prompt_ops, u, NULL);
    if (node == NULL) prompt_free(u);
    return node;
}

/* ==== chat prompt ========================================================================== */

typedef struct {
    size_t n;
    char **roles;
    ctn_tmpl **tmpls; /* NULL for a placeholder */
    char **vars;      /* a placeholder's variable */
} chat_ud;

static void chat_free(void *p) {
    chat_ud *u = p;
    for (size_t i = 0; i < u->n; i++) {
        free(u->roles[i]);
        ctn_tmpl_free(u->tmpls[i]);
        free(u->vars[i]);
    }
    free(u->roles);
    free(u->tmpls);
    free(u->vars);
    free(u);
}

static int push_msg(ctn_val *msgs, const char *role, size_t rl, const char *content, size_t cl) {
    ctn_val *m = ctn_val_obj();
    if (m == NULL) return CTN_ENOMEM;
    if (ctn_val_set(m, "role", ctn_val_str(role, rl)) < 0 ||
        ctn_val_set(m, "content", ctn_val_str(content, cl)) < 0) {
        ctn_val_unref(m);
        return CTN_ENOMEM;
    }
    return ctn_val_push(msgs, m);
}

static void chat_start(ctn_task *t, ctn_val *input) {
    chat_ud *u = ctn_node_ud(ctn_task_node(t));
    ctn_val *msgs = ctn_val_arr();
    char err[512];
    for (size_t i = 0; msgs != NULL && i < u->n; i++) {
        if (u->tmpls[i] != NULL) {
            char *out = NULL;
            size_t len = 0;
            const int rc = ctn_tmpl_render(u->tmpls[i], input, &out, &len, err, sizeof err);
            if (rc < 0) {
                ctn_val_unref(msgs);
                ctn_task_fail(t, rc, "message %zu (%s): %s", i + 1, u->roles[i], err);
                return;
            }
            const int pr = push_msg(msgs, u->roles[i], strlen(u->roles[i]), out, len);
            free(out);
            if (pr < 0) break;
            continue;
        }
        /* A placeholder: a list of messages from the input. */
        const ctn_val *list = ctn_val_get(input, u->vars[i]);
        if (list == NULL || list->kind == CTN_VNULL) continue; /* an empty history */
        if (list->kind != CTN_VARR) {
            ctn_val_unref(msgs);
            ctn_task_fail(t, CTN_ETYPE, "placeholder '%s' must be a list of messages, got %s",
                          u->vars[i], ctn_vkind_name(list->kind));
            return;
        }
        for (size_t j = 0; j < list->u.arr.n; j++) {
            const ctn_val *m = list->u.arr.items[j];
            const ctn_val *r = NULL, *c = NULL;
            const char *rp = NULL; /* the role */
            size_t rl = 0;
            if (m->kind == CTN_VOBJ) {
                r = ctn_val_get(m, "role");
                c = ctn_val_get(m, "content");
                /* A model's message ({type = "ai", content}), so that an answer goes back into
                 * the history as it came: its type names the role. */
                if (r == NULL && ctn_message_content(m) != NULL) {
                    const char t0 = ctn_val_get(m, "type")->u.str.p[0];
                    rp = t0 == 'a' ? "assistant" : t0 == 'h' ? "user" : "system";
                    rl = strlen(rp);
                }
            } else if (m->kind == CTN_VARR && m->u.arr.n == 2) {
                r = m->u.arr.items[0];
                c = m->u.arr.items[1];
            }
            if (rp == NULL && r != NULL && r->kind == CTN_VSTR) rp = r->u.str.p, rl = r->u.str.len;
            if (rp == NULL || c == NULL || c->kind != CTN_VSTR) {
                ctn_val_unref(msgs);
                ctn_task_fail(t, CTN_ETYPE,
                              "placeholder '%s', message %zu: expected {role = ..., content = ...} "
                              "or {role, content} with strings",
                              u->vars[i], j + 1);
                return;
            }
            /* Checked here, where the prompt renders, not when a model's template meets it. */
            if (!ctn_chat_role_known(rp, rl)) {
                ctn_val_unref(msgs);
                ctn_task_fail(t, CTN_EINVAL,
                              "placeholder '%s', message %zu: unknown role '%.*s' (system, user "
                              "or assistant)",
                              u->vars[i], j + 1, (int)(rl > 40 ? 40 : rl), rp);
                return;
            }
            if (push_msg(msgs, rp, rl, c->u.str.p, c->u.str.len) < 0) {
                ctn_val_unref(msgs);
                msgs = NULL;
                break;
            }
        }
    }
    ctn_val *o = msgs != NULL ? ctn_val_obj() : NULL;
    if (o == NULL || ctn_val_set(o, "type", ctn_val_cstr("chat")) < 0 ||
        ctn_val_set(o, "messages", msgs) < 0) {
        if (o == NULL) ctn_val_unref(msgs);
        ctn_val_unref(o);
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    ctn_task_done(t, o);
}

static char *chat_describe(const void *p) {
    const chat_ud *u = p;
    char buf[200];
    size_t len = 0;
    buf[0] = 0;
    for (size_t i = 0; i < u->n && len + 20 < sizeof buf; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? ", " : "",
                                u->tmpls[i] ? u->roles[i] : u->vars[i]);
    return ctn__strndup(buf, strlen(buf));
}

static const ctn_node_ops chat_ops = {
    .kind = "chat_prompt", .start = chat_start, .free_ud = chat_free, .describe = chat_describe};

ctn_node *ctn_chat_prompt_node(const ctn_chat_entry *e, size_t n, char *err, size_t errcap) {
    chat_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) return NULL;
    u->roles = ctn__calloc(n + 1, sizeof *u->roles);
    u->tmpls = ctn__calloc(n + 1, sizeof *u->tmpls);
    u->vars = ctn__calloc(n + 1, sizeof *u->vars);
    u->n = n;
    if (u->roles == NULL || u->tmpls == NULL || u->vars == NULL) {
        chat_free(u);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (e[i].role == NULL || e[i].content == NULL) {
            ctn__errf(err, errcap, "message %zu: needs a role and a content", i + 1);
            chat_free(u);
            return NULL;
        }
        u->roles[i] = ctn__strndup(e[i].role, strlen(e[i].role));
        if (strcmp(e[i].role, "placeholder") == 0) {
            u->vars[i] = ctn__strndup(e[i].content, strlen(e[i].content));
            if (u->roles[i] == NULL || u->vars[i] == NULL) {
                chat_free(u);
                return NULL;
            }
            continue;
        }
        if (strcmp(e[i].role, "system") != 0 && strcmp(e[i].role, "user") != 0 &&
            strcmp(e[i].role, "assistant") != 0) {
            ctn__errf(err, errcap,
                      "message %zu: unknown role '%s' (system, user, assistant or placeholder)",
                      i + 1, e[i].role);
            chat_free(u);
            return NULL;
        }
        char terr[256];
        u->tmpls[i] = ctn_tmpl_parse(e[i].content, strlen(e[i].content), terr, sizeof terr);
        if (u->tmpls[i] == NULL || u->roles[i] == NULL) {
            ctn__errf(err, errcap, "message %zu (%s): %s", i + 1, e[i].role, terr);
            chat_free(u);
            return NULL;
        }
    }
    ctn_node *node = ctn_node_custom(&chat_ops, u, NULL);
    if (node == NULL) chat_free(u);
    return node;
}

/* ==== model ================================================================================= */

typedef struct {
    ctn_lm *lm;
    ctn_chat_family family;
    ctn_chat_renderer render;
    void *render_ud;
    void (*free_render_ud)(void *);
    bool message; /* output an AI message with its metadata, not the bare text */
} model_ud;

/* {type = "ai", content, response_metadata, usage_metadata}, as LangChain's AIMessage. */
static ctn_val *ai_message(const model_ud *u, const ctn_lm_result *r) {
    const char *path = ctn_lm_path(u->lm), *slash = path != NULL ? strrchr(path, '/') : NULL;
    ctn_val *m = ctn_val_obj(), *meta = ctn_val_obj(), *usage = ctn_val_obj(),
            *details = ctn_val_obj();
    if (m == NULL || meta == NULL || usage == NULL || details == NULL) goto nomem;
    if (ctn_val_set(meta, "finish_reason", ctn_val_cstr(r->finish_name)) < 0 ||
        ctn_val_set(meta, "model_name", ctn_val_cstr(slash ? slash + 1 : path ? path : "")) < 0 ||
        ctn_val_set(details, "cache_read", ctn_val_int(r->cached_tokens)) < 0 ||
        ctn_val_set(usage, "input_tokens", ctn_val_int(r->prompt_tokens)) < 0 ||
        ctn_val_set(usage, "output_tokens", ctn_val_int(r->completion_tokens)) < 0 ||
        ctn_val_set(usage, "total_tokens", ctn_val_int(r->prompt_tokens + r->completion_tokens)) <
            0)
        goto nomem;
    ctn_val *d = details;
    details = NULL;
    if (ctn_val_set(usage, "input_token_details", d) < 0) goto nomem;
    if (ctn_val_set(m, "type", ctn_val_cstr("ai")) < 0 ||
        ctn_val_set(m, "content", ctn_val_str(r->text, r->text_len)) < 0)
        goto nomem;
    ctn_val *x = meta;
    meta = NULL;
    if (ctn_val_set(m, "response_metadata", x) < 0) goto nomem;
    x = usage;
    usage = NULL;
    if (ctn_val_set(m, "usage_metadata", x) < 0) goto nomem;
    return m;
nomem:
    ctn_val_unref(m), ctn_val_unref(meta), ctn_val_unref(usage), ctn_val_unref(details);
    return NULL;
}

const ctn_val *ctn_message_content(const ctn_val *v) {
    if (v == NULL || v->kind != CTN_VOBJ) return NULL;
    const ctn_val *ty = ctn_val_get(v, "type"), *c = ctn_val_get(v, "content");
    if (ty == NULL || ty->kind != CTN_VSTR || c == NULL || c->kind != CTN_VSTR) return NULL;
    static const char *const types[] = {"ai", "human", "system"};
    for (int i = 0; i < 3; i++)
        if (ty->u.str.len == strlen(types[i]) && memcmp(ty->u.str.p, types[i], ty->u.str.len) == 0)
            return c;
    return NULL;
}

/* One generation in flight; outlives its task when the task is cancelled (the engine's
 * on_done still comes). */
typedef struct fan_req fan_req;
typedef struct {
    ctn_task *t; /* NULL once the task is gone */
    uint64_t handle;
    fan_req *fan; /* n > 1: the task's data is this gen_req with only fan set */
} gen_req;

/*
 * n completions of one prompt (the run's setting n > 1, as OpenAI's n): the prompt is
 * computed once, by a prompt-only request on a new engine session, which is forked n ways;
 * each fork samples its own completion with seed + i. The output is the array of the n
 * texts (or messages), in order; nothing is streamed. Outlives its task when the task is
 * cancelled: the last on_done frees it.
 */
typedef struct {
    fan_req *f;
    int i; /* -1: the prefill */
    uint64_t handle;
    bool live; /* submitted, on_done not yet come */
} fan_part;

struct fan_req {
    ctn_task *t; /* NULL once the task is gone */
    const model_ud *u;
    gen_req holder; /* the task's data */
    int n, pending;
    fan_part *parts; /* (n + 1) the prefill, then the forks */
    ctn_val **outs;  /* (n) */
    int code;        /* the first failure */
    char why[256];
    int64_t prompt_tokens, completion_tokens;
};

static void gen_text(void *ud, const char *piece, size_t len) {
    gen_req *g = ud;
    if (g->t != NULL) ctn_task_emit(g->t, ctn_val_str(piece, len));
}

static void gen_done(void *ud, const ctn_lm_result *r) {
    gen_req *g = ud;
    ctn_task *t = g->t;
    free(g);
    if (t == NULL) return;
    ctn_task_set_data(t, NULL);
    ctn_task_add_tokens(t, r->prompt_tokens, r->completion_tokens);
    if (r->finish == CTN_FINISH_ERROR) {
        ctn_task_fail(t, r->error < 0 ? r->error : CTN_ECHAIN, "%s",
                      r->message && *r->message ? r->message : "generation failed");
    } else if (r->finish == CTN_FINISH_CANCELLED) {
        ctn_task_fail(t, CTN_ECANCELED, "the generation was cancelled");
    } else if (((const model_ud *)ctn_node_ud(ctn_task_node(t)))->message) {
        ctn_val *m = ai_message(ctn_node_ud(ctn_task_node(t)), r);
        if (m == NULL)
            ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        else
            ctn_task_done(t, m);
    } else {
        ctn_task_done(t, ctn_val_str(r->text, r->text_len));
    }
}

static void fan_free(fan_req *f) {
    for (int i = 0; f->outs != NULL && i < f->n; i++)
        ctn_val_unref(f->outs[i]);
    free(f->outs);
    free(f->parts);
    free(f);
}

/* The end of the task, once every part has ended. */
static void fan_finish(fan_req *f) {
    ctn_task *t = f->t;
    if (t != NULL) {
        ctn_task_set_data(t, NULL);
        ctn_task_add_tokens(t, f->prompt_tokens, f->completion_tokens);
        if (f->code < 0) {
            ctn_task_fail(t, f->code, "%s", f->why);
        } else {
            ctn_val *a = ctn_val_arr();
            for (int i = 0; a != NULL && i < f->n; i++) {
                if (ctn_val_push(a, f->outs[i]) < 0) {
                    ctn_val_unref(a);
                    a = NULL;
                }
                f->outs[i] = NULL;
            }
            if (a == NULL)
                ctn_task_fail(t, CTN_ENOMEM, "out of memory");
            else
                ctn_task_done(t, a);
        }
    }
    fan_free(f);
}

static void fan_fail(fan_req *f, int code, const char *why) {
    if (f->code < 0) return;
    f->code = code;
    snprintf(f->why, sizeof f->why, "%s", why);
}

static void fan_done(void *ud, const ctn_lm_result *r) {
    fan_part *p = ud;
    fan_req *f = p->f;
    p->live = false;
    if (r->finish == CTN_FINISH_ERROR) {
        fan_fail(f, r->error < 0 ? r->error : CTN_ECHAIN,
                 r->message && *r->message ? r->message : "generation failed");
    } else if (r->finish == CTN_FINISH_CANCELLED) {
        fan_fail(f, CTN_ECANCELED, "the generation was cancelled");
    } else if (p->i < 0) {
        f->prompt_tokens = r->prompt_tokens;
    } else {
        f->completion_tokens += r->completion_tokens;
        ctn_val *v = f->u->message ? ai_message(f->u, r) : ctn_val_str(r->text, r->text_len);
        if (v == NULL) fan_fail(f, CTN_ENOMEM, "out of memory");
        f->outs[p->i] = v;
    }
    if (f->code < 0 && f->t != NULL) /* the rest is of no use */
        for (int i = 0; i <= f->n; i++)
            if (f->parts[i].live) ctn_lm_cancel(f->u->lm, f->parts[i].handle);
    if (--f->pending == 0) fan_finish(f);
}

static void fan_cancel(fan_req *f) {
    f->t = NULL;
    for (int i = 0; i <= f->n; i++)
        if (f->parts[i].live) ctn_lm_cancel(f->u->lm, f->parts[i].handle);
}

/* Submits the prefill and the n forks of request r (its prompt set) for task t. */
static void fan_start(ctn_task *t, const model_ud *u, const ctn_lm_request *r, int n) {
    char err[512];
    fan_req *f = ctn__calloc(1, sizeof *f);
    if (f == NULL || (f->parts = ctn__calloc((size_t)n + 1, sizeof *f->parts)) == NULL ||
        (f->outs = ctn__calloc((size_t)n, sizeof *f->outs)) == NULL) {
        if (f != NULL) free(f->parts);
        free(f);
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    f->t = t;
    f->u = u;
    f->n = n;
    f->holder.fan = f;
    const int64_t sid = ctn_lm_session_new(u->lm);
    if (sid < 0) {
        fan_free(f);
        ctn_task_fail(t, sid, "cannot make an engine session for n = %d", n);
        return;
    }
    ctn_lm_request pre = *r;
    pre.session_id = sid;
    pre.set.max_tokens = 0;
    f->parts[0] = (fan_part){f, -1, 0, true};
    ctn_lm_callbacks cb = {NULL, fan_done};
    int rc = ctn_lm_generate(u->lm, &pre, &cb, &f->parts[0], &f->parts[0].handle, err, sizeof err);
    if (rc < 0) {
        ctn_lm_session_close(u->lm, sid);
        fan_free(f);
        ctn_task_fail(t, rc, "%s", err);
        return;
    }
    f->pending = 1;
    /* Queued after the prefill: the forks copy the session once it is filled. */
    int64_t kids[16];
    rc = ctn_lm_session_fork(u->lm, sid, n, kids);
    ctn_lm_session_close(u->lm, sid);
    if (rc < 0) {
        fan_fail(f, rc, "cannot fork the engine session");
        ctn_lm_cancel(u->lm, f->parts[0].handle);
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        ctn_lm_request k = *r;
        k.prompt = NULL;
        k.prompt_len = 0;
        k.ids = NULL;
        k.n_ids = 0;
        k.session_id = kids[i];
        k.set.sampling.seed = r->set.sampling.seed + (uint64_t)i;
        f->parts[i + 1] = (fan_part){f, i, 0, true};
        rc = ctn_lm_generate(u->lm, &k, &cb, &f->parts[i + 1], &f->parts[i + 1].handle, err,
                             sizeof err);
        if (rc < 0) {
            f->parts[i + 1].live = false;
            fan_fail(f, rc, err);
            for (int j = 0; j <= i; j++)
                if (f->parts[j].live) ctn_lm_cancel(u->lm, f->parts[j].handle);
            for (int j = i; j < n; j++)
                ctn_lm_session_close(u->lm, kids[j]);
            break;
        }
        f->pending++;
        ctn_lm_session_close(u->lm, kids[i]); /* once its request has ended */
    }
    ctn_task_set_data(t, &f->holder);
}

/*
 * A chain value as a setting's value (settings.h). A list longer than cap items is passed
 * on with its length, so that the validator names the limit; its items are not read.
 */
static void setting_of_val(const ctn_val *x, ctn_setting_value *v, ctn_setting_value *items,
                           size_t cap) {
    memset(v, 0, sizeof *v);
    switch (x->kind) {
    case CTN_VNULL: v->kind = CTN_SET_NULL; break;
    case CTN_VBOOL: v->kind = CTN_SET_BOOL, v->b = x->u.b != 0; break;
    case CTN_VINT: v->kind = CTN_SET_INT, v->i = x->u.i; break;
    case CTN_VNUM: v->kind = CTN_SET_NUM, v->d = x->u.num; break;
    case CTN_VSTR: v->kind = CTN_SET_STR, v->s = x->u.str.p; break;
    case CTN_VARR:
        v->kind = CTN_SET_LIST;
        v->n = x->u.arr.n;
        v->items = items;
        for (size_t i = 0; i < x->u.arr.n && x->u.arr.n <= cap; i++) {
            ctn_setting_value *it = &items[i];
            const ctn_val *e = x->u.arr.items[i];
            memset(it, 0, sizeof *it);
            it->kind = e->kind == CTN_VSTR ? CTN_SET_STR : e->kind == CTN_VINT ? CTN_SET_INT
                       : e->kind == CTN_VNUM                                  ? CTN_SET_NUM
                       : e->kind == CTN_VBOOL                                 ? CTN_SET_BOOL
                       : e->kind == CTN_VNULL                                 ? CTN_SET_NULL
                                                                              : CTN_SET_OBJ;
            if (e->kind == CTN_VSTR) it->s = e->u.str.p;
        }
        break;
    default: v->kind = CTN_SET_OBJ; break;
    }
}

/*
 * The prompt of a model node's input (a string, or a chat prompt rendered with the node's
 * chat template, the assistant's turn opened) into r; *text holds a rendered prompt (the
 * caller frees it). 0, or -1 when it failed the task.
 */
static int model_prompt(ctn_task *t, const model_ud *u, const ctn_val *input, ctn_lm_request *r,
                        char **text) {
    char err[512];
    size_t len = 0;
    *text = NULL;
    if (input->kind == CTN_VSTR) {
        r->prompt = input->u.str.p;
        r->prompt_len = input->u.str.len;
    } else if (input->kind == CTN_VOBJ && ctn_val_get(input, "messages") != NULL &&
               ctn_val_get(input, "type") != NULL && ctn_val_get(input, "type")->kind == CTN_VSTR &&
               strcmp(ctn_val_get(input, "type")->u.str.p, "chat") == 0) {
        const ctn_val *msgs = ctn_val_get(input, "messages");
        int rc;
        if (u->render != NULL) {
            rc = u->render(u->render_ud, msgs, text, &len, err, sizeof err);
        } else {
            ctn_chat_family f = u->family;
            if (f == CTN_CHAT_UNKNOWN && ctn_lm_chat_template(u->lm) != NULL)
                f = ctn_chat_detect(ctn_lm_chat_template(u->lm));
            if (f == CTN_CHAT_UNKNOWN) {
                ctn_task_fail(
                    t, CTN_ENOTSUP,
                    "%s has no chat template catena recognises (tokenizer.chat_template): "
                    "give the model chat_template = \"chatml\" (or another family) or a "
                    "function",
                    ctn_lm_path(u->lm));
                return -1;
            }
            const size_t n = ctn_val_len(msgs);
            ctn_chat_msg *m = ctn__calloc(n + 1, sizeof *m);
            if (m == NULL) {
                ctn_task_fail(t, CTN_ENOMEM, "out of memory");
                return -1;
            }
            for (size_t i = 0; i < n; i++) {
                const ctn_val *e = ctn_val_at(msgs, i);
                const ctn_val *ro = ctn_val_get(e, "role"), *co = ctn_val_get(e, "content");
                if (ro == NULL || co == NULL || ro->kind != CTN_VSTR || co->kind != CTN_VSTR) {
                    free(m);
                    ctn_task_fail(t, CTN_ETYPE, "message %zu: needs string role and content",
                                  i + 1);
                    return -1;
                }
                m[i] = (ctn_chat_msg){ro->u.str.p, ro->u.str.len, co->u.str.p, co->u.str.len};
            }
            rc = ctn_chat_render(f, m, n, 1, ctn_lm_bos_text(u->lm), ctn_lm_eos_text(u->lm), text,
                                 &len, err, sizeof err);
            free(m);
        }
        if (rc < 0) {
            ctn_task_fail(t, rc, "chat template: %s", err);
            return -1;
        }
        r->prompt = *text;
        r->prompt_len = len;
        /* A template that writes BOS itself: the tokenizer must not add another. */
        const char *bos = ctn_lm_bos_text(u->lm);
        if (bos != NULL && *bos && len >= strlen(bos) && memcmp(*text, bos, strlen(bos)) == 0)
            r->add_bos = 0;
    } else {
        ctn_task_fail(t, CTN_ETYPE, "needs a string or a chat prompt as input, got %s",
                      ctn_vkind_name(input->kind));
        return -1;
    }
    return 0;
}

int ctn_task_settings(ctn_task *t, ctn_settings *set) {
    char err[512];
    /* Every request setting the node is given goes through the one validator. */
    const ctn_setting_info *tab = ctn_settings_table();
    ctn_setting_value items[CTN_SETTINGS_MAX_STOP + 1];
    for (int k = 0; k < CTN_SET_N_KEYS; k++) {
        const ctn_val *sv = tab[k].model ? NULL : ctn_task_setting(t, tab[k].key);
        if (sv == NULL) continue;
        ctn_setting_value v;
        setting_of_val(sv, &v, items, sizeof items / sizeof items[0]);
        const int rc = ctn_settings_set(set, tab[k].key, &v, err, sizeof err);
        if (rc < 0) {
            ctn_task_fail(t, rc, "%s", err);
            return -1;
        }
    }
    return 0;
}

static void model_start(ctn_task *t, ctn_val *input) {
    model_ud *u = ctn_node_ud(ctn_task_node(t));
    ctn_lm_request r = ctn_lm_request_default();
    r.set.max_tokens = CTN_SETTINGS_DEFAULT_MAX_TOKENS; /* as catena batch; a setting replaces it */
    char *text = NULL, err[512];
    if (model_prompt(t, u, input, &r, &text) < 0 || ctn_task_settings(t, &r.set) < 0) goto out;
    /* The run's session (a conversation's key): this node's engine session for it. */
    const ctn_val *sv = ctn_task_setting(t, "session");
    char key[320];
    if (sv != NULL && sv->kind != CTN_VNULL) {
        if (sv->kind != CTN_VSTR || sv->u.str.len == 0 || sv->u.str.len > 256 ||
            memchr(sv->u.str.p, 0, sv->u.str.len) != NULL) {
            ctn_task_fail(t, CTN_EINVAL,
                          "setting 'session' must be a conversation's key: a string of 1 to 256 "
                          "bytes without NUL, got %s",
                          sv->kind == CTN_VSTR ? "another string" : ctn_vkind_name(sv->kind));
            goto out;
        }
        snprintf(key, sizeof key, "%p:%.*s", (void *)u, (int)sv->u.str.len, sv->u.str.p);
        r.session = key;
    }
    const ctn_val *nv = ctn_task_setting(t, "n");
    if (nv != NULL && nv->kind != CTN_VNULL && (nv->kind != CTN_VINT || nv->u.i < 1 || nv->u.i > 16)) {
        ctn_task_fail(t, CTN_EINVAL, "setting 'n' must be an integer from 1 to 16 (completions of one prompt)");
        goto out;
    }
    if (nv != NULL && nv->kind == CTN_VINT && nv->u.i > 1) {
        r.session = NULL; /* the n completions fork a session of their own */
        fan_start(t, u, &r, (int)nv->u.i);
        goto out;
    }
    {
        gen_req *g = ctn__calloc(1, sizeof *g);
        if (g == NULL) {
            ctn_task_fail(t, CTN_ENOMEM, "out of memory");
            goto out;
        }
        g->t = t;
        ctn_lm_callbacks cb = {gen_text, gen_done};
        if (ctn_lm_generate(u->lm, &r, &cb, g, &g->handle, err, sizeof err) < 0) {
            free(g);
            ctn_task_fail(t, CTN_EINVAL, "%s", err);
            goto out;
        }
        ctn_task_set_data(t, g);
    }
out:
    free(text);
}

static void model_cancel(ctn_task *t) {
    model_ud *u = ctn_node_ud(ctn_task_node(t));
    gen_req *g = ctn_task_data(t);
    if (g == NULL) return;
    if (g->fan != NULL) {
        fan_cancel(g->fan);
        return;
    }
    g->t = NULL; /* its on_done frees it */
    ctn_lm_cancel(u->lm, g->handle);
}

static void model_free(void *p) {
    model_ud *u = p;
    ctn_lm_close(u->lm);
    if (u->free_render_ud != NULL) u->free_render_ud(u->render_ud);
    free(u);
}

static char *model_describe(const void *p) {
    const model_ud *u = p;
    const char *path = ctn_lm_path(u->lm);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return ctn__strndup(base, strlen(base));
}

static const ctn_node_ops model_ops = {.kind = "model",
                                       .start = model_start,
                                       .cancel = model_cancel,
                                       .free_ud = model_free,
                                       .describe = model_describe};

ctn_node *ctn_model_node(ctn_lm *lm, ctn_chat_family family, ctn_chat_renderer render,
                         void *render_ud, void (*free_render_ud)(void *)) {
    model_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) return NULL;
    u->lm = lm;
    u->family = family;
    u->render = render;
    u->render_ud = render_ud;
    u->free_render_ud = free_render_ud;
    ctn_node *n = ctn_node_custom(&model_ops, u, NULL);
    if (n == NULL) free(u);
    return n;
}

int ctn_model_node_set_message(ctn_node *n, bool message) {
    if (n == NULL || ctn_node_get_kind(n) != CTN_NODE_CUSTOM || !ctn_node_is_custom(n, &model_ops))
        return CTN_EINVAL;
    ((model_ud *)ctn_node_ud(n))->message = message;
    return 0;
}

/* The model node n is or wraps (through binds and names), or NULL. */
static ctn_node *model_node_of(ctn_node *n) {
    while (n != NULL && ctn_node_get_kind(n) == CTN_NODE_BIND)
        n = ctn_node_kid(n, 0);
    if (n == NULL || ctn_node_get_kind(n) != CTN_NODE_CUSTOM) return NULL;
    return ctn_node_is_custom(n, &model_ops) ? n : NULL;
}

ctn_lm *ctn_model_node_lm(const ctn_node *n) {
    const ctn_node *m = model_node_of((ctn_node *)n);
    return m != NULL ? ((const model_ud *)ctn_node_ud(m))->lm : NULL;
}

bool ctn_model_node_chats(const ctn_node *n) {
    const ctn_node *m = model_node_of((ctn_node *)n);
    if (m == NULL) return false;
    const model_ud *u = ctn_node_ud(m);
    const char *tmpl = ctn_lm_chat_template(u->lm);
    return u->render != NULL || u->family != CTN_CHAT_UNKNOWN ||
           (tmpl != NULL && ctn_chat_detect(tmpl) != CTN_CHAT_UNKNOWN);
}

/* ==== scorer ================================================================================ */

typedef struct {
    ctn_node *model; /* a reference: the model, its chat template */
    int32_t ids[CTN_GEN_MAX_SCORE_IDS];
    int n;
    char *desc;
} scorer_ud;

static void score_done(void *ud, const ctn_lm_result *r) {
    gen_req *g = ud;
    ctn_task *t = g->t;
    free(g);
    if (t == NULL) return;
    ctn_task_set_data(t, NULL);
    ctn_task_add_tokens(t, r->prompt_tokens, 0);
    const scorer_ud *u = ctn_node_ud(ctn_task_node(t));
    if (r->finish == CTN_FINISH_ERROR) {
        ctn_task_fail(t, r->error < 0 ? r->error : CTN_ECHAIN, "%s",
                      r->message && *r->message ? r->message : "scoring failed");
        return;
    }
    if (r->finish == CTN_FINISH_CANCELLED) {
        ctn_task_fail(t, CTN_ECANCELED, "the scoring was cancelled");
        return;
    }
    if (r->n_scores != u->n) {
        ctn_task_fail(t, CTN_ECHAIN, "the engine returned %d scores for %d candidates", r->n_scores,
                      u->n);
        return;
    }
    ctn_val *a = ctn_val_arr();
    for (int i = 0; a != NULL && i < u->n; i++)
        if (ctn_val_push(a, ctn_val_num(r->scores[i])) < 0) {
            ctn_val_unref(a);
            a = NULL;
        }
    if (a == NULL)
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
    else
        ctn_task_done(t, a);
}

static void scorer_start(ctn_task *t, ctn_val *input) {
    const scorer_ud *u = ctn_node_ud(ctn_task_node(t));
    const model_ud *mu = ctn_node_ud(u->model);
    ctn_lm_request r = ctn_lm_request_default();
    char *text = NULL, err[512];
    if (model_prompt(t, mu, input, &r, &text) < 0 || ctn_task_settings(t, &r.set) < 0) goto out;
    r.set.max_tokens = 0; /* the prompt, scored; nothing generated */
    r.score_ids = u->ids;
    r.n_score_ids = u->n;
    gen_req *g = ctn__calloc(1, sizeof *g);
    if (g == NULL) {
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        goto out;
    }
    g->t = t;
    const ctn_lm_callbacks cb = {NULL, score_done};
    if (ctn_lm_generate(mu->lm, &r, &cb, g, &g->handle, err, sizeof err) < 0) {
        free(g);
        ctn_task_fail(t, CTN_EINVAL, "%s", err);
        goto out;
    }
    ctn_task_set_data(t, g);
out:
    free(text);
}

static void scorer_cancel(ctn_task *t) {
    const scorer_ud *u = ctn_node_ud(ctn_task_node(t));
    gen_req *g = ctn_task_data(t);
    if (g == NULL) return;
    g->t = NULL; /* its on_done frees it */
    ctn_lm_cancel(((const model_ud *)ctn_node_ud(u->model))->lm, g->handle);
}

static void scorer_free(void *p) {
    scorer_ud *u = p;
    ctn_node_unref(u->model);
    free(u->desc);
    free(u);
}

static char *scorer_describe(const void *p) {
    const scorer_ud *u = p;
    return u->desc != NULL ? ctn__strndup(u->desc, strlen(u->desc)) : NULL;
}

static const ctn_node_ops scorer_ops = {.kind = "scorer",
                                        .start = scorer_start,
                                        .cancel = scorer_cancel,
                                        .free_ud = scorer_free,
                                        .describe = scorer_describe};

ctn_node *ctn_scorer_node(ctn_node *model, const char *const *cands, size_t n, char *err,
                          size_t errcap) {
    ctn_node *m = model_node_of(model);
    if (m == NULL) {
        ctn__errf(err, errcap, "the scorer's model is not a model node (catena.model{...})");
        return NULL;
    }
    if (n < 1 || n > CTN_GEN_MAX_SCORE_IDS) {
        ctn__errf(err, errcap, "%zu candidates (1 to %d)", n, CTN_GEN_MAX_SCORE_IDS);
        return NULL;
    }
    const ctn_vocab *v = ctn_lm_vocab(((const model_ud *)ctn_node_ud(m))->lm);
    scorer_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) {
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    ctn_strbuf d = {0};
    ctn_sb_puts(&d, "[");
    for (size_t i = 0; i < n; i++) {
        int32_t *toks = NULL;
        size_t nt = 0;
        /* As the text would be written in a prompt: no BOS, special tokens parsed. */
        const int rc = ctn_tokenize(v, cands[i], strlen(cands[i]), false, true, &toks, &nt);
        const int32_t first = rc == 0 && nt > 0 ? toks[0] : -1;
        free(toks);
        if (rc < 0 || first < 0) {
            ctn__errf(err, errcap, "candidate %zu (\"%s\") %s", i + 1, cands[i],
                      rc < 0 ? ctn_strerror(rc) : "has no tokens");
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (u->ids[j] == first) {
                char piece[64];
                const int pn = ctn_token_to_piece(v, first, piece, sizeof piece - 1, 0, true);
                piece[pn >= 0 && pn < (int)sizeof piece ? pn : 0] = '\0';
                ctn__errf(err, errcap,
                          "candidates %zu (\"%s\") and %zu (\"%s\") both begin with token %d "
                          "(\"%s\"): only a candidate's first token is scored",
                          j + 1, cands[j], i + 1, cands[i], (int)first, piece);
                goto fail;
            }
        u->ids[u->n++] = first;
        ctn_sb_puts(&d, i > 0 ? ", \"" : "\"");
        ctn_sb_puts(&d, cands[i]);
        ctn_sb_puts(&d, "\"");
    }
    ctn_sb_puts(&d, "]");
    u->desc = ctn_sb_take(&d);
    if (u->desc == NULL) {
        ctn__errf(err, errcap, "out of memory");
        goto fail;
    }
    u->model = ctn_node_ref(m);
    ctn_node *node = ctn_node_custom(&scorer_ops, u, NULL);
    if (node == NULL) {
        ctn__errf(err, errcap, "out of memory");
        scorer_free(u);
    }
    return node;
fail:
    ctn_sb_free(&d);
    free(u);
    return NULL;
}

/* ==== parsers =============================================================================== */

typedef struct {
    ctn_parser_kind kind;
    ctn_regex *re;
    char *pattern;
    char *schema;   /* JSON: the schema of the JSON parser's output, or NULL */
    char *gbnf;     /* the grammar the model before the parser decodes under, or NULL */
    char **values;  /* the enum parser's options */
    size_t nvalues;
} parser_ud;

/* Streaming state per task. */
typedef struct {
    ctn_json_stream *js;
    ctn_list_stream *ls;
} parse_state;

static void parser_free(void *p) {
    parser_ud *u = p;
    ctn_regex_free(u->re);
    free(u->pattern);
    free(u->schema);
    free(u->gbnf);
    for (size_t i = 0; i < u->nvalues; i++)
        free(u->values[i]);
    free(u->values);
    free(u);
}

static void state_free(ctn_task *t) {
    parse_state *s = ctn_task_data(t);
    if (s == NULL) return;
    ctn_task_set_data(t, NULL);
    ctn_json_stream_free(s->js);
    ctn_list_stream_free(s->ls);
    free(s);
}

/* Why the text holds no JSON value: where the value that its first '{' or '[' starts goes
 * wrong (the stream parser's line, column and byte, counted over the whole text), or that
 * no bracket starts one. */
static void json_not_found(const char *text, size_t n, char *err, size_t cap) {
    if (memchr(text, '{', n) == NULL && memchr(text, '[', n) == NULL) {
        snprintf(err, cap, "no JSON value found in the text (%zu bytes, no '{' or '[')", n);
        return;
    }
    char why[320] = "";
    ctn_json_stream *s = ctn_json_stream_new();
    ctn_val *v = NULL;
    if (s != NULL) {
        (void)ctn_json_stream_feed(s, text, n, NULL); /* an error stays for finish to say */
        (void)ctn_json_stream_finish(s, &v, why, sizeof why);
    }
    ctn_val_unref(v);
    ctn_json_stream_free(s);
    snprintf(err, cap, "no JSON value found in the text (%zu bytes)%s%s", n, *why ? ": " : "", why);
}

/* Narrows [*a, *b) of s to leave out the white space (space, tab, CR, LF) at its ends. */
static void trim_space(const char *s, size_t *a, size_t *b) {
#define SPACE(c) ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')
    while (*a < *b && SPACE(s[*a]))
        (*a)++;
    while (*b > *a && SPACE(s[*b - 1]))
        (*b)--;
#undef SPACE
}

/* Whether the JSON parser's output v satisfies its schema: 0, or CTN_EFORMAT (err says
 * where and why) or CTN_ENOMEM. */
static int check_schema(const parser_ud *u, const ctn_val *v, char *err, size_t cap) {
    if (u->schema == NULL) return 0;
    char *json = ctn_val_to_json(v, 0);
    if (json == NULL) return CTN_ENOMEM;
    char why[400] = "";
    const int rc =
        ctn_json_schema_validate(u->schema, strlen(u->schema), json, strlen(json), why, sizeof why);
    free(json);
    if (rc == CTN_ENOMEM) return rc;
    if (rc < 0) {
        snprintf(err, cap, "the JSON does not match the parser's schema: %s", why);
        return CTN_EFORMAT;
    }
    return 0;
}

/* The JSON value of text: the whole text when it is one (as a model decoding under the
 * parser's grammar writes it), else the value its first bracket starts. */
static int json_of_text(const parser_ud *u, const char *text, size_t n, ctn_val **out, char *err,
                        size_t cap) {
    size_t a = 0, b = n;
    trim_space(text, &a, &b);
    char ignored[8];
    if (u->schema != NULL && a < b && ctn_json_parse(text + a, b - a, out, ignored, sizeof ignored) == 0)
        return 0;
    if (ctn_json_find(text, n, &a, &b) < 0) {
        json_not_found(text, n, err, cap);
        return CTN_EFORMAT;
    }
    return ctn_json_parse(text + a, b - a, out, err, cap);
}

/* The enum parser: the text without surrounding white space must be one of the options. */
static int enum_parse(const parser_ud *u, const char *text, size_t n, ctn_val **out, char *err,
                      size_t cap) {
    size_t a = 0, b = n;
    trim_space(text, &a, &b);
    for (size_t i = 0; i < u->nvalues; i++)
        if (strlen(u->values[i]) == b - a && memcmp(u->values[i], text + a, b - a) == 0) {
            *out = ctn_val_str(text + a, b - a);
            return *out != NULL ? 0 : CTN_ENOMEM;
        }
    ctn_strbuf m = {0};
    ctn_sb_puts(&m, "'");
    ctn_sb_put(&m, text + a, b - a > 80 ? 80 : b - a);
    ctn_sb_puts(&m, b - a > 80 ? "...' is not one of the options: " : "' is not one of the options: ");
    for (size_t i = 0; i < u->nvalues; i++) {
        if (i > 0) ctn_sb_puts(&m, ", ");
        ctn_sb_puts(&m, u->values[i]);
    }
    snprintf(err, cap, "%s", m.p != NULL && !m.oom ? m.p : "not one of the options");
    ctn_sb_free(&m);
    return CTN_EFORMAT;
}

/* The whole text: parse and end the task. */
static void parse_whole(ctn_task *t, const ctn_val *input) {
    parser_ud *u = ctn_node_ud(ctn_task_node(t));
    const ctn_val *content = ctn_message_content(input); /* a model's message: its text */
    if (content != NULL) input = content;
    size_t n = 0;
    char *text = ctn_val_text(input, &n);
    if (text == NULL) {
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    ctn_val *out = NULL;
    char err[512] = "";
    int rc = 0;
    switch (u->kind) {
    case CTN_PARSER_STR: out = ctn_val_str(text, n); break;
    case CTN_PARSER_JSON:
        rc = json_of_text(u, text, n, &out, err, sizeof err);
        if (rc == 0) rc = check_schema(u, out, err, sizeof err);
        break;
    case CTN_PARSER_LIST: rc = ctn_list_parse(text, n, &out); break;
    case CTN_PARSER_REGEX: rc = ctn_regex_parse(u->re, text, n, &out, err, sizeof err); break;
    case CTN_PARSER_ENUM: rc = enum_parse(u, text, n, &out, err, sizeof err); break;
    }
    free(text);
    if (rc < 0) {
        ctn_val_unref(out);
        out = NULL;
    }
    if (rc < 0) {
        ctn_task_fail(t, rc, "%s", *err ? err : ctn_strerror(rc));
        return;
    }
    ctn_task_done(t, out);
}

static void parser_start(ctn_task *t, ctn_val *input) {
    parser_ud *u = ctn_node_ud(ctn_task_node(t));
    if (input != NULL) {
        parse_whole(t, input);
        return;
    }
    /* Streamed input follows. */
    parse_state *s = ctn__calloc(1, sizeof *s);
    if (s == NULL) {
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    if (u->kind == CTN_PARSER_JSON) s->js = ctn_json_stream_new();
    if (u->kind == CTN_PARSER_LIST) s->ls = ctn_list_stream_new();
    ctn_task_set_data(t, s);
    if ((u->kind == CTN_PARSER_JSON && s->js == NULL) ||
        (u->kind == CTN_PARSER_LIST && s->ls == NULL)) {
        state_free(t);
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
    }
}

static void parser_feed(ctn_task *t, const ctn_val *chunk) {
    parser_ud *u = ctn_node_ud(ctn_task_node(t));
    parse_state *s = ctn_task_data(t);
    if (s == NULL) return;
    size_t n = 0;
    char *text = ctn_val_text(chunk, &n);
    if (text == NULL) {
        state_free(t);
        ctn_task_fail(t, CTN_ENOMEM, "out of memory");
        return;
    }
    if (u->kind == CTN_PARSER_STR) {
        ctn_task_emit(t, ctn_val_str(text, n));
    } else if (u->kind == CTN_PARSER_JSON) {
        int changed = 0;
        if (ctn_json_stream_feed(s->js, text, n, &changed) < 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ctn_json_stream_errmsg(s->js));
            state_free(t);
            free(text);
            ctn_task_fail(t, CTN_EFORMAT, "%s", msg);
            return;
        }
        if (changed) {
            ctn_val *snap = ctn_json_stream_snapshot(s->js);
            if (snap != NULL) ctn_task_emit(t, snap);
        }
    } else if (u->kind == CTN_PARSER_LIST) {
        size_t nnew = 0;
        if (ctn_list_stream_feed(s->ls, text, n, &nnew) < 0) {
            state_free(t);
            free(text);
            ctn_task_fail(t, CTN_ENOMEM, "out of memory");
            return;
        }
        const ctn_val *items = ctn_list_stream_items(s->ls);
        const size_t have = ctn_val_len(items);
        for (size_t i = have - nnew; i < have; i++)
            ctn_task_emit(t, ctn_val_ref(ctn_val_at(items, i)));
    }
    free(text);
}

static void parser_feed_end(ctn_task *t, const ctn_val *whole) {
    parser_ud *u = ctn_node_ud(ctn_task_node(t));
    parse_state *s = ctn_task_data(t);
    if (u->kind == CTN_PARSER_JSON && s != NULL) {
        ctn_val *out = NULL;
        char err[512];
        int rc = ctn_json_stream_finish(s->js, &out, err, sizeof err);
        if (rc == 0) rc = check_schema(u, out, err, sizeof err);
        state_free(t);
        if (rc < 0) {
            ctn_val_unref(out);
            ctn_task_fail(t, rc, "%s", rc == CTN_ENOMEM ? "out of memory" : err);
        } else {
            ctn_task_done(t, out);
        }
        return;
    }
    if (u->kind == CTN_PARSER_LIST && s != NULL) {
        ctn_val *out = NULL;
        size_t nnew = 0;
        const int rc = ctn_list_stream_finish(s->ls, &out, &nnew);
        if (rc == 0)
            for (size_t i = ctn_val_len(out) - nnew; i < ctn_val_len(out); i++)
                ctn_task_emit(t, ctn_val_ref(ctn_val_at(out, i)));
        state_free(t);
        if (rc < 0)
            ctn_task_fail(t, rc, "%s", ctn_strerror(rc));
        else
            ctn_task_done(t, out);
        return;
    }
    state_free(t);
    parse_whole(t, whole);
}

static void parser_cancel(ctn_task *t) {
    state_free(t);
}

static char *parser_describe(const void *p) {
    const parser_ud *u = p;
    static const char *names[] = {"str", "json", "list", "regex", "enum"};
    char buf[160];
    if (u->kind == CTN_PARSER_REGEX)
        snprintf(buf, sizeof buf, "regex /%.100s/", u->pattern);
    else if (u->kind == CTN_PARSER_JSON && u->schema != NULL)
        snprintf(buf, sizeof buf, "json, schema %.100s%s", u->schema,
                 strlen(u->schema) > 100 ? "..." : "");
    else if (u->kind == CTN_PARSER_ENUM)
        snprintf(buf, sizeof buf, "enum of %zu", u->nvalues);
    else
        snprintf(buf, sizeof buf, "%s", names[u->kind]);
    return ctn__strndup(buf, strlen(buf));
}

static const ctn_node_ops parser_stream_ops = {.kind = "parser",
                                               .start = parser_start,
                                               .feed = parser_feed,
                                               .feed_end = parser_feed_end,
                                               .cancel = parser_cancel,
                                               .free_ud = parser_free,
                                               .describe = parser_describe};

static const ctn_node_ops parser_whole_ops = {.kind = "parser",
                                              .start = parser_start,
                                              .cancel = parser_cancel,
                                              .free_ud = parser_free,
                                              .describe = parser_describe};

ctn_node *ctn_parser_node(ctn_parser_kind kind, const char *pattern, const char *const *keys,
                          size_t nkeys, char *err, size_t errcap) {
    parser_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) return NULL;
    u->kind = kind;
    if (kind == CTN_PARSER_ENUM) {
        ctn__errf(err, errcap, "the enum parser is made by ctn_enum_parser_node");
        free(u);
        return NULL;
    }
    if (kind == CTN_PARSER_JSON) {
        /* Without a schema: any object or array, the values ctn_json_find looks for. */
        static const char any[] = "{\"type\":[\"object\",\"array\"]}";
        if (ctn_json_schema_to_gbnf(any, sizeof any - 1, &u->gbnf, err, errcap) < 0) {
            free(u);
            return NULL;
        }
    }
    if (kind == CTN_PARSER_REGEX) {
        if (pattern == NULL) {
            ctn__errf(err, errcap, "the regex parser needs a pattern");
            free(u);
            return NULL;
        }
        u->re = ctn_regex_new(pattern, keys, nkeys, err, errcap);
        u->pattern = ctn__strndup(pattern, strlen(pattern));
        if (u->re == NULL || u->pattern == NULL) {
            parser_free(u);
            return NULL;
        }
    }
    ctn_node *n =
        ctn_node_custom(kind == CTN_PARSER_REGEX ? &parser_whole_ops : &parser_stream_ops, u, NULL);
    if (n == NULL) parser_free(u);
    return n;
}

ctn_node *ctn_json_parser_node(const char *schema, size_t n, char *err, size_t errcap) {
    if (schema == NULL) return ctn_parser_node(CTN_PARSER_JSON, NULL, NULL, 0, err, errcap);
    parser_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL) {
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    u->kind = CTN_PARSER_JSON;
    u->schema = ctn__strndup(schema, n);
    if (u->schema == NULL) {
        ctn__errf(err, errcap, "out of memory");
        parser_free(u);
        return NULL;
    }
    if (ctn_json_schema_to_gbnf(schema, n, &u->gbnf, err, errcap) < 0) {
        parser_free(u);
        return NULL;
    }
    ctn_node *node = ctn_node_custom(&parser_stream_ops, u, NULL);
    if (node == NULL) {
        ctn__errf(err, errcap, "out of memory");
        parser_free(u);
    }
    return node;
}

/* Appends s as a GBNF string literal (every byte that is not printable ASCII escaped). */
static void gbnf_literal(ctn_strbuf *b, const char *s) {
    ctn_sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\' || *p == '[' || *p == ']')
            e[0] = '\\', e[1] = (char)*p, e[2] = 0;
        else if (*p < 0x20 || *p >= 0x7f)
            snprintf(e, sizeof e, "\\x%02X", *p);
        else
            e[0] = (char)*p, e[1] = 0;
        ctn_sb_puts(b, e);
    }
    ctn_sb_puts(b, "\"");
}

ctn_node *ctn_enum_parser_node(const char *const *values, size_t n, char *err, size_t errcap) {
    if (n == 0 || n > 1024) {
        ctn__errf(err, errcap, "the enum parser needs 1 to 1024 options, got %zu", n);
        return NULL;
    }
    parser_ud *u = ctn__calloc(1, sizeof *u);
    if (u == NULL || (u->values = ctn__calloc(n, sizeof *u->values)) == NULL) {
        free(u);
        ctn__errf(err, errcap, "out of memory");
        return NULL;
    }
    u->kind = CTN_PARSER_ENUM;
    ctn_strbuf g = {0};
    ctn_sb_puts(&g, "root ::= ");
    for (size_t i = 0; i < n; i++) {
        const size_t len = values[i] != NULL ? strlen(values[i]) : 0;
        if (len == 0 || len > 4096 || !ctn__utf8_valid(values[i], len)) {
            ctn__errf(err, errcap, "enum option %zu must be non-empty UTF-8 text of at most 4096 bytes",
                      i + 1);
            goto fail;
        }
        size_t a = 0, b = len;
        trim_space(values[i], &a, &b);
        if (a != 0 || b != len) {
            ctn__errf(err, errcap,
                      "enum option %zu (\"%.40s\") begins or ends with white space, which the "
                      "parser strips from the text",
                      i + 1, values[i]);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(values[j], values[i]) == 0) {
                ctn__errf(err, errcap, "enum options %zu and %zu are both \"%.40s\"", j + 1, i + 1,
                          values[i]);
                goto fail;
            }
        if ((u->values[i] = ctn__strdup(values[i])) == NULL) goto oom;
        u->nvalues = i + 1;
        if (i > 0) ctn_sb_puts(&g, " | ");
        gbnf_literal(&g, values[i]);
    }
    ctn_sb_puts(&g, "\n");
    if (g.oom || (u->gbnf = ctn_sb_take(&g)) == NULL) goto oom;
    ctn_node *node = ctn_node_custom(&parser_whole_ops, u, NULL);
    if (node == NULL) {
        parser_free(u);
        ctn__errf(err, errcap, "out of memory");
    }
    return node;
oom:
    ctn__errf(err, errcap, "out of memory");
fail:
    ctn_sb_free(&g);
    parser_free(u);
    return NULL;
}

/* The parser_ud of n when n is a parser node, else NULL. */
static parser_ud *parser_of(const ctn_node *n) {
    if (n == NULL || ctn_node_get_kind(n) != CTN_NODE_CUSTOM) return NULL;
    if (!ctn_node_is_custom(n, &parser_stream_ops) && !ctn_node_is_custom(n, &parser_whole_ops))
        return NULL;
    return ctn_node_ud(n);
}

const char *ctn_parser_node_grammar(const ctn_node *n) {
    const parser_ud *u = parser_of(n);
    return u != NULL ? u->gbnf : NULL;
}

char *ctn_parser_format_instructions(const ctn_node *n, char *err, size_t errcap) {
    const parser_ud *u = parser_of(n);
    if (u == NULL) {
        ctn__errf(err, errcap, "not a parser (catena.parser.*)");
        return NULL;
    }
    ctn_strbuf b = {0};
    switch (u->kind) {
    case CTN_PARSER_JSON:
        if (u->schema == NULL) {
            ctn_sb_puts(&b, "Answer with one JSON object (or array) and nothing else: no text "
                            "before or after it, no code fence.");
            break;
        }
        ctn_sb_puts(&b, "Answer with one JSON value that satisfies the JSON Schema below, and "
                        "nothing else: no text before or after it, no code fence. The schema "
                        "describes the value; it is not an example of it.\n\nSchema:\n");
        ctn_sb_puts(&b, u->schema);
        break;
    case CTN_PARSER_LIST:
        ctn_sb_puts(&b, "Answer with a list of values separated by commas, such as: red, green, "
                        "blue");
        break;
    case CTN_PARSER_ENUM:
        ctn_sb_puts(&b, "Answer with exactly one of these options, and nothing else: ");
        for (size_t i = 0; i < u->nvalues; i++) {
            if (i > 0) ctn_sb_puts(&b, ", ");
            ctn_sb_puts(&b, u->values[i]);
        }
        break;
    case CTN_PARSER_STR:
    case CTN_PARSER_REGEX:
        ctn__errf(err, errcap, "the %s parser has no format instructions",
                  u->kind == CTN_PARSER_STR ? "str" : "regex");
        return NULL;
    }
    char *s = b.oom ? NULL : ctn_sb_take(&b);
    if (s == NULL) {
        ctn_sb_free(&b);
        ctn__errf(err, errcap, "out of memory");
    }
    return s;
}

int ctn_sequence_bind_grammars(ctn_node **steps, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        const char *g = ctn_parser_node_grammar(steps[i + 1]);
        if (g == NULL || model_node_of(steps[i]) == NULL) continue;
        ctn_val *cfg = ctn_val_obj();
        if (cfg == NULL || ctn_val_set(cfg, "grammar", ctn_val_cstr(g)) < 0) {
            ctn_val_unref(cfg);
            return CTN_ENOMEM;
        }
        ctn_node *b = ctn_node_bind(ctn_node_ref(steps[i]), cfg);
        if (b == NULL) return CTN_ENOMEM;
        ctn_node_unref(steps[i]);
        steps[i] = b;
    }
    return 0;
}
