/*
 * The components of the catena Lua module: catena.prompt, catena.prompt.chat, catena.model
 * and catena.parser.* (the nodes themselves are in stdlib/components.c).
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "components.h"
#include "error.h"
#include "l_catena.h"
#include "str.h"

/* Pushes a runnable for node (taken); raises with msg when node is NULL. */
static void push_node(lua_State *L, ctn_node *node, const char *what, const char *msg) {
    if (node == NULL) luaL_error(L, "catena: %s: %s", what, msg && *msg ? msg : "out of memory");
    ctn_node **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = node;
    luaL_setmetatable(L, CTN_L_RUNNABLE);
}

/* catena.prompt("... {name} ...") */
static int m_prompt(lua_State *L) {
    /* Called as catena.prompt(...) through the table's __call: argument 1 is the table. */
    size_t n = 0;
    const char *s = luaL_checklstring(L, 2, &n);
    char err[512] = "";
    push_node(L, ctn_prompt_node(s, n, err, sizeof err), "prompt", err);
    return 1;
}

/* catena.prompt.chat{ {"system", "..."}, {"user", "..."}, {"placeholder", "history"} } */
static int m_chat(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    const size_t n = lua_rawlen(L, 1);
    if (n == 0) luaL_argerror(L, 1, "give a list of {role, content} messages");
    ctn_chat_entry *e = calloc(n, sizeof *e);
    if (e == NULL) luaL_error(L, "catena: out of memory");
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        if (!lua_istable(L, -1)) {
            free(e);
            luaL_error(L, "catena: prompt.chat: message %d must be {role, content}", (int)i + 1);
        }
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
            free(e);
            luaL_error(L, "catena: prompt.chat: message %d must be {role, content} with strings",
                       (int)i + 1);
        }
        e[i].role = lua_tostring(L, -2);
        e[i].content = lua_tostring(L, -1);
        lua_pop(L, 3); /* the strings stay alive in the message tables */
    }
    char err[512] = "";
    ctn_node *node = ctn_chat_prompt_node(e, n, err, sizeof err);
    free(e);
    push_node(L, node, "prompt.chat", err);
    return 1;
}

/* ---- models ---- */

typedef struct {
    lua_State *L;
    int fn; /* registry reference to the renderer */
} lua_renderer;

typedef struct {
    int fn;
    const ctn_val *messages;
    char *out;
    size_t len;
} render_args;

/* Under ctn_l_protect: fn(messages), checked to be a string and copied. */
static int render_p(lua_State *L, void *ud, char *err, size_t errcap) {
    render_args *a = ud;
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->fn);
    ctn_l_push_val(L, a->messages, 1);
    lua_call(L, 1, 1);
    size_t n = 0;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (s == NULL) {
        snprintf(err, errcap, "the chat_template function must return a string, got %s",
                 luaL_typename(L, -1));
        return CTN_ETYPE;
    }
    if ((a->out = ctn__malloc(n + 1)) == NULL) {
        snprintf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    memcpy(a->out, s, n + 1);
    a->len = n;
    return 0;
}

/* A chat template written in Lua: fn(messages) -> prompt text (called on the loop thread,
 * not in a coroutine: it must not wait). */
static int render_lua(void *ud, const ctn_val *messages, char **out, size_t *len, char *err,
                      size_t errcap) {
    lua_renderer *r = ud;
    render_args a = {.fn = r->fn, .messages = messages};
    char why[512];
    int rc = ctn_l_protect(r->L, render_p, &a, why, sizeof why);
    if (rc == CTN_ECHAIN) {
        snprintf(err, errcap, "the chat_template function failed: %s", why);
    } else if (rc < 0) {
        snprintf(err, errcap, "%s", why);
    } else {
        *out = a.out;
        *len = a.len;
    }
    return rc;
}

static void free_renderer(void *ud) {
    lua_renderer *r = ud;
    luaL_unref(r->L, LUA_REGISTRYINDEX, r->fn);
    free(r);
}

/* Sets key of s from the Lua value at idx, through the one validator (settings.h); raises
 * its message. */
static void lua_setting(lua_State *L, int idx, const char *key, ctn_settings *s) {
    ctn_setting_value v = {.kind = CTN_SET_OBJ};
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: v.kind = CTN_SET_BOOL, v.b = lua_toboolean(L, idx); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            v.kind = CTN_SET_INT, v.i = (int64_t)lua_tointeger(L, idx);
        else
            v.kind = CTN_SET_NUM, v.d = lua_tonumber(L, idx);
        break;
    case LUA_TSTRING: v.kind = CTN_SET_STR, v.s = lua_tostring(L, idx); break;
    default: break;
    }
    char err[256];
    if (ctn_settings_set(s, key, &v, err, sizeof err) < 0) luaL_error(L, "catena.model: %s", err);
}

/* catena.model{path = ..., threads = N, kv_memory = SIZE, lora_budget = SIZE, ctx = N,
 * chat_template = name or function}; the limits are docs/settings.md's. */
static int m_model(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const opts[] = {"path",        "ctx",           "threads", "kv_memory",
                                       "lora_budget", "chat_template", "output"};
    ctn_l_check_options(L, 1, "catena.model", opts, sizeof opts / sizeof opts[0]);
    lua_getfield(L, 1, "path");
    const char *path = lua_tostring(L, -1);
    if (path == NULL) luaL_error(L, "catena.model: path must name a GGUF model file");
    ctn_settings set;
    ctn_settings_init(&set);
    static const char *const keys[] = {"threads", "kv_memory", "lora_budget", "ctx"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        lua_getfield(L, 1, keys[i]);
        if (!lua_isnil(L, -1)) lua_setting(L, -1, keys[i], &set);
        lua_pop(L, 1);
    }
    bool message = false;
    lua_getfield(L, 1, "output");
    if (lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "message"))
        message = true;
    else if (!lua_isnil(L, -1) &&
             (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "text") != 0))
        luaL_error(L, "catena.model: output must be \"text\" (the default: the generated text) "
                      "or \"message\" (an AI message with finish reason and token usage)");
    lua_pop(L, 1);
    ctn_lm_params p = {0};
    p.threads = set.threads;
    p.kv_memory_bytes = set.kv_memory;
    p.lora_budget_bytes = set.lora_budget;
    p.n_ctx = (int)set.ctx;
    ctn_chat_family fam = CTN_CHAT_UNKNOWN;
    lua_renderer *r = NULL;
    lua_getfield(L, 1, "chat_template");
    if (lua_type(L, -1) == LUA_TSTRING) {
        fam = ctn_chat_family_from_name(lua_tostring(L, -1));
        if (fam == CTN_CHAT_UNKNOWN)
            luaL_error(L,
                       "catena.model: unknown chat_template '%s' (chatml, llama2, llama3, mistral, "
                       "phi3, gemma, zephyr, deepseek, deepseek3, or a function)",
                       lua_tostring(L, -1));
    } else if (lua_isfunction(L, -1)) {
        r = malloc(sizeof *r);
        if (r == NULL) luaL_error(L, "catena: out of memory");
        lua_pushvalue(L, -1);
        r->fn = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
        r->L = lua_tothread(L, -1);
        lua_pop(L, 1);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "catena.model: chat_template must be a family name or a function");
    }
    char err[512] = "";
    ctn_lm *lm = NULL;
    const int rc = ctn_l_open_model(L, path, &p, &lm, err, sizeof err);
    if (rc < 0) {
        if (r != NULL) free_renderer(r);
        ctn_l_push_err(L, rc, err, "model");
        return lua_error(L);
    }
    ctn_node *node = ctn_model_node(lm, fam, r ? render_lua : NULL, r, r ? free_renderer : NULL);
    if (node == NULL) {
        ctn_lm_close(lm);
        if (r != NULL) free_renderer(r);
    } else if (message) {
        ctn_model_node_set_message(node, true);
    }
    push_node(L, node, "model", NULL);
    return 1;
}

/* catena.scorer{llm = model, candidates = {"yes", "no"}}: a runnable whose output is the
 * log-probability of each candidate's first token after its input (ctn_scorer_node). */
static int m_scorer(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const opts[] = {"llm", "candidates"};
    ctn_l_check_options(L, 1, "catena.scorer", opts, 2);
    lua_getfield(L, 1, "llm");
    ctn_node **m = luaL_testudata(L, -1, CTN_L_RUNNABLE);
    if (m == NULL || ctn_model_node_lm(*m) == NULL)
        ctn_l_error(L, "catena.scorer: llm must be a model (catena.model{...})");
    lua_getfield(L, 1, "candidates");
    if (!lua_istable(L, -1))
        ctn_l_error(L, "catena.scorer: candidates must be a list of strings, such as {\"yes\", "
                       "\"no\"}");
    const size_t n = lua_rawlen(L, -1);
    if (n < 1 || n > CTN_GEN_MAX_SCORE_IDS)
        ctn_l_error(L, "catena.scorer: %d candidates (1 to %d)", (int)n, CTN_GEN_MAX_SCORE_IDS);
    const char *c[CTN_GEN_MAX_SCORE_IDS];
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            ctn_l_error(L, "catena.scorer: candidates[%d] must be a string, not %s", (int)i + 1,
                        luaL_typename(L, -1));
        c[i] = lua_tostring(L, -1); /* it stays alive in the table */
        lua_pop(L, 1);
    }
    char err[512] = "";
    ctn_node *node = ctn_scorer_node(*m, c, n, err, sizeof err);
    if (node == NULL) ctn_l_error(L, "catena.scorer: %s", err[0] ? err : "out of memory");
    push_node(L, node, "scorer", err);
    return 1;
}

/* ---- parsers ---- */

static int parser(lua_State *L, ctn_parser_kind k) {
    char err[256] = "";
    push_node(L, ctn_parser_node(k, NULL, NULL, 0, err, sizeof err), "parser", err);
    return 1;
}

static int p_str(lua_State *L) {
    return parser(L, CTN_PARSER_STR);
}

/* A copy of v with every object's keys in byte order (a Lua table's keys have no order of
 * their own: sorted, the schema and its grammar are the same on every run). */
static int key_cmp(const void *a, const void *b) {
    const ctn_val *x = *(ctn_val *const *)a, *y = *(ctn_val *const *)b;
    const size_t n = x->u.str.len < y->u.str.len ? x->u.str.len : y->u.str.len;
    const int c = memcmp(x->u.str.p, y->u.str.p, n);
    return c != 0 ? c : (x->u.str.len > y->u.str.len) - (x->u.str.len < y->u.str.len);
}

static ctn_val *sorted_copy(const ctn_val *v) {
    if (v->kind == CTN_VARR) {
        ctn_val *a = ctn_val_arr();
        for (size_t i = 0; a != NULL && i < v->u.arr.n; i++) {
            ctn_val *e = sorted_copy(v->u.arr.items[i]);
            if (e == NULL || ctn_val_push(a, e) < 0) {
                ctn_val_unref(a);
                a = NULL;
            }
        }
        return a;
    }
    if (v->kind != CTN_VOBJ) return ctn_val_ref((ctn_val *)v);
    const size_t n = v->u.obj.n;
    ctn_val **keys = malloc((n + 1) * sizeof *keys);
    ctn_val *o = keys != NULL ? ctn_val_obj() : NULL;
    if (o != NULL) {
        memcpy(keys, v->u.obj.keys, n * sizeof *keys);
        qsort(keys, n, sizeof *keys, key_cmp);
        for (size_t i = 0; i < n; i++) {
            const ctn_val *k = keys[i];
            ctn_val *e = sorted_copy(ctn_val_getk(v, k->u.str.p, k->u.str.len));
            if (e == NULL || ctn_val_setk(o, k->u.str.p, k->u.str.len, e) < 0) {
                ctn_val_unref(o);
                o = NULL;
                break;
            }
        }
    }
    free(keys);
    return o;
}

char *ctn_l_schema_text(lua_State *L, int idx, const char *where) {
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        char *c = ctn__strdup(s);
        if (c == NULL) luaL_error(L, "catena: out of memory");
        return c;
    }
    if (!lua_istable(L, idx))
        ctn_l_error(L, "%s: schema must be a table or JSON text, not a %s", where,
                    luaL_typename(L, idx));
    char err[256] = "";
    ctn_val *v = ctn_l_to_val(L, idx, "schema", err, sizeof err);
    if (v == NULL) ctn_l_error(L, "%s: %s", where, err);
    ctn_val *sv = sorted_copy(v);
    ctn_val_unref(v);
    char *j = sv != NULL ? ctn_val_to_json(sv, 0) : NULL;
    ctn_val_unref(sv);
    if (j == NULL) luaL_error(L, "catena: out of memory");
    return j;
}

/* catena.parser.json() or catena.parser.json{schema = table or JSON text} */
static int p_json(lua_State *L) {
    if (lua_isnoneornil(L, 1)) return parser(L, CTN_PARSER_JSON);
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const opts[] = {"schema"};
    ctn_l_check_options(L, 1, "catena.parser.json", opts, 1);
    lua_getfield(L, 1, "schema");
    if (lua_isnil(L, -1)) return parser(L, CTN_PARSER_JSON);
    char *schema = ctn_l_schema_text(L, -1, "catena.parser.json");
    char err[512] = "";
    ctn_node *n = ctn_json_parser_node(schema, strlen(schema), err, sizeof err);
    free(schema);
    if (n == NULL) ctn_l_error(L, "catena.parser.json: %s", err[0] ? err : "out of memory");
    push_node(L, n, "parser.json", err);
    return 1;
}

/* catena.parser.enum{"a", "b", ...} */
static int p_enum(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    const size_t n = lua_rawlen(L, 1);
    lua_pushnil(L);
    size_t count = 0;
    while (lua_next(L, 1) != 0) {
        lua_pop(L, 1);
        count++;
    }
    if (n == 0 || count != n)
        ctn_l_error(L, "catena.parser.enum: give a list of options (strings), as {\"a\", \"b\"}");
    const char **v = calloc(n, sizeof *v);
    if (v == NULL) luaL_error(L, "catena: out of memory");
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        v[i] = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 1); /* the string stays alive in the table */
        if (v[i] == NULL) {
            free(v);
            ctn_l_error(L, "catena.parser.enum: option %d is not a string", (int)i + 1);
        }
    }
    char err[512] = "";
    ctn_node *node = ctn_enum_parser_node(v, n, err, sizeof err);
    free(v);
    if (node == NULL) ctn_l_error(L, "catena.parser.enum: %s", err[0] ? err : "out of memory");
    push_node(L, node, "parser.enum", err);
    return 1;
}

static int p_list(lua_State *L) {
    return parser(L, CTN_PARSER_LIST);
}

/* catena.parser.regex{pattern = "...", keys = {...}} or catena.parser.regex("pattern") */
static int p_regex(lua_State *L) {
    const char *pattern = NULL;
    const char **keys = NULL;
    size_t nkeys = 0;
    if (lua_type(L, 1) == LUA_TSTRING) {
        pattern = lua_tostring(L, 1);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        static const char *const opts[] = {"pattern", "keys"};
        ctn_l_check_options(L, 1, "catena.parser.regex", opts, 2);
        lua_getfield(L, 1, "pattern");
        pattern = lua_tostring(L, -1);
        if (pattern == NULL) luaL_error(L, "catena.parser.regex: pattern must be a string");
        lua_getfield(L, 1, "keys");
        if (lua_istable(L, -1)) {
            nkeys = lua_rawlen(L, -1);
            keys = calloc(nkeys + 1, sizeof *keys);
            if (keys == NULL) luaL_error(L, "catena: out of memory");
            for (size_t i = 0; i < nkeys; i++) {
                lua_rawgeti(L, -1, (lua_Integer)i + 1);
                keys[i] = lua_tostring(L, -1);
                lua_pop(L, 1);
                if (keys[i] == NULL) {
                    free(keys);
                    luaL_error(L, "catena.parser.regex: key %d is not a string", (int)i + 1);
                }
            }
        } else if (!lua_isnil(L, -1)) {
            luaL_error(L, "catena.parser.regex: keys must be a list of names");
        }
    }
    char err[512] = "";
    ctn_node *n = ctn_parser_node(CTN_PARSER_REGEX, pattern, keys, nkeys, err, sizeof err);
    free(keys);
    push_node(L, n, "parser.regex", err);
    return 1;
}

/* parser:format_instructions(): what to tell the model about the format the parser reads. */
static int r_format_instructions(lua_State *L) {
    ctn_node **r = luaL_checkudata(L, 1, CTN_L_RUNNABLE);
    char err[256] = "";
    char *s = ctn_parser_format_instructions(*r, err, sizeof err);
    if (s == NULL) ctn_l_error(L, "format_instructions: %s", err);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

/* catena.stats(model runnable): the shared engine's statistics, with how many sequences
 * decoded together per step (decode_batches: bucket -> steps). */
static int m_stats(lua_State *L) {
    ctn_node **r = luaL_checkudata(L, 1, CTN_L_RUNNABLE);
    ctn_lm *lm = ctn_model_node_lm(*r);
    if (lm == NULL) luaL_argerror(L, 1, "not a model (catena.model{...}, or one with :with{...})");
    ctn_lm_stats st;
    ctn_lm_get_stats(lm, &st);
    lua_createtable(L, 0, 16);
#define F(name, v)                                                                                 \
    lua_pushinteger(L, (lua_Integer)(v));                                                          \
    lua_setfield(L, -2, name)
    F("running", st.engine.running);
    F("waiting", st.engine.waiting);
    F("steps", st.engine.steps);
    F("tokens", st.engine.tokens);
    F("prefill_tokens", st.engine.prefill_tokens);
    F("decode_tokens", st.engine.decode_tokens);
    F("finished", st.engine.finished);
    F("cancelled", st.engine.cancelled);
    F("preemptions", st.engine.preemptions);
    F("kv_blocks", st.engine.kv_blocks);
    F("kv_free", st.engine.kv_free);
    F("prefix_hits", st.engine.prefix_hits);
    F("prefix_misses", st.engine.prefix_misses);
    F("max_batch", st.max_batch);
    F("loras", st.engine.loras);
    F("lora_bytes", st.engine.lora_bytes);
#undef F
    static const char *buckets[CTN_LM_BATCH_BUCKETS] = {"1",     "2-3",   "4-7", "8-15",
                                                        "16-31", "32-63", "64+"};
    lua_createtable(L, 0, CTN_LM_BATCH_BUCKETS);
    for (int i = 0; i < CTN_LM_BATCH_BUCKETS; i++) {
        lua_pushinteger(L, (lua_Integer)st.steps[i]);
        lua_setfield(L, -2, buckets[i]);
    }
    lua_setfield(L, -2, "decode_batches");
    return 1;
}

/* catena.unload(llm): the model's file is loaded afresh by the next catena.model{...} (with
 * the settings that asks for); runnables made from llm keep working until collected. */
static int m_unload(lua_State *L) {
    ctn_node **r = luaL_checkudata(L, 1, CTN_L_RUNNABLE);
    ctn_lm *lm = ctn_model_node_lm(*r);
    if (lm == NULL) luaL_argerror(L, 1, "not a model (catena.model{...})");
    ctn_lm_detach(lm);
    return 0;
}

/* catena.lora.load(llm, name, path [, {max_rank = N}]): the adapter at path (a PEFT folder
 * or a GGUF LoRA file) for llm's model, under name (llm:with{lora = name}). */
static int m_lora_load(lua_State *L) {
    ctn_node **r = luaL_checkudata(L, 1, CTN_L_RUNNABLE);
    ctn_lm *lm = ctn_model_node_lm(*r);
    if (lm == NULL) luaL_argerror(L, 1, "not a model (catena.model{...})");
    const char *name = luaL_checkstring(L, 2);
    const char *path = luaL_checkstring(L, 3);
    lua_Integer max_rank = 0;
    if (lua_istable(L, 4)) {
        static const char *const opts[] = {"max_rank"};
        ctn_l_check_options(L, 4, "catena.lora.load", opts, 1);
        lua_getfield(L, 4, "max_rank");
        if (!lua_isnil(L, -1)) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 4096)
                luaL_error(L, "catena.lora.load: max_rank must be an integer from 1 to 4096");
            max_rank = lua_tointeger(L, -1);
        }
        lua_pop(L, 1);
    }
    char err[512] = "";
    const int rc = ctn_lm_lora_load(lm, name, path, (int32_t)max_rank, err, sizeof err);
    if (rc < 0) {
        ctn_l_push_err(L, rc, err, "lora.load");
        return lua_error(L);
    }
    return 0;
}

static int m_lora_unload(lua_State *L) {
    ctn_node **r = luaL_checkudata(L, 1, CTN_L_RUNNABLE);
    ctn_lm *lm = ctn_model_node_lm(*r);
    if (lm == NULL) luaL_argerror(L, 1, "not a model (catena.model{...})");
    lua_pushboolean(L, ctn_lm_lora_unload(lm, luaL_checkstring(L, 2)) == 0);
    return 1;
}

void ctn_l_open_components(lua_State *L) {
    luaL_getmetatable(L, CTN_L_RUNNABLE);
    lua_getfield(L, -1, "__index");
    lua_pushcfunction(L, r_format_instructions);
    lua_setfield(L, -2, "format_instructions");
    lua_pop(L, 2);
    static const luaL_Reg lora[] = {{"load", m_lora_load}, {"unload", m_lora_unload}, {NULL, NULL}};
    luaL_newlib(L, lora);
    lua_setfield(L, -2, "lora");
    lua_pushcfunction(L, m_stats);
    lua_setfield(L, -2, "stats");
    /* catena.prompt: callable, with .chat */
    lua_newtable(L);
    lua_pushcfunction(L, m_chat);
    lua_setfield(L, -2, "chat");
    lua_newtable(L);
    lua_pushcfunction(L, m_prompt);
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "prompt");
    lua_pushcfunction(L, m_model);
    lua_setfield(L, -2, "model");
    lua_pushcfunction(L, m_unload);
    lua_setfield(L, -2, "unload");
    lua_pushcfunction(L, m_scorer);
    lua_setfield(L, -2, "scorer");
    static const luaL_Reg parsers[] = {
        {"str", p_str},     {"json", p_json}, {"list", p_list},
        {"regex", p_regex}, {"enum", p_enum}, {NULL, NULL}};
    luaL_newlib(L, parsers);
    lua_setfield(L, -2, "parser");
}
