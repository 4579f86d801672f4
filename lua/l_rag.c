/*
 * The RAG part of the catena Lua module: catena.loader.*, catena.splitter.* and catena.kb
 * (the nodes are in stdlib/rag.c). Loaders, splitters and the knowledge base's add and
 * ingest are runnables; kb:add, kb:ingest and their collection forms invoke them, so they
 * wait the way r:invoke does (yielding inside a chain lambda or catena.spawn). The object
 * glue is a few lines of Lua (kb_glue below) over C primitives.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "components.h"
#include "kb.h"
#include "l_catena.h"
#include "rag.h"

static void push_node(lua_State *L, ctn_node *node, const char *what, const char *msg) {
    if (node == NULL) ctn_l_error(L, "catena.%s: %s", what, msg && *msg ? msg : "out of memory");
    ctn_node **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = node;
    luaL_setmetatable(L, CTN_L_RUNNABLE);
}

static void stderr_warn(void *ud, const char *msg) {
    (void)ud;
    fprintf(stderr, "catena: warning: %s\n", msg);
}

/* The string field key of the table at idx, or NULL; raises when it is another type. */
static const char *opt_str(lua_State *L, int idx, const char *what, const char *key) {
    lua_getfield(L, idx, key);
    const char *s = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) s = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1)) ctn_l_error(L, "catena.%s: %s must be a string", what, key);
    lua_pop(L, 1); /* the string stays alive in the options table */
    return s;
}

static bool opt_bool(lua_State *L, int idx, const char *what, const char *key, bool def) {
    lua_getfield(L, idx, key);
    bool b = def;
    if (lua_isboolean(L, -1)) b = lua_toboolean(L, -1);
    else if (!lua_isnil(L, -1)) ctn_l_error(L, "catena.%s: %s must be true or false", what, key);
    lua_pop(L, 1);
    return b;
}

static lua_Integer opt_int(lua_State *L, int idx, const char *what, const char *key,
                           lua_Integer def, lua_Integer lo, lua_Integer hi) {
    lua_getfield(L, idx, key);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < lo || lua_tointeger(L, -1) > hi)
            ctn_l_error(L, "catena.%s: %s must be an integer from %I to %I", what, key, lo, hi);
        v = lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* The model behind the runnable at the top of the stack (field key of idx), or NULL. */
static ctn_lm *opt_model(lua_State *L, int idx, const char *what, const char *key) {
    lua_getfield(L, idx, key);
    ctn_lm *lm = NULL;
    if (!lua_isnil(L, -1)) {
        ctn_node **r = luaL_testudata(L, -1, CTN_L_RUNNABLE);
        lm = r != NULL ? ctn_model_node_lm(*r) : NULL;
        if (lm == NULL)
            ctn_l_error(L, "catena.%s: %s must be a model (catena.model{...})", what, key);
    }
    lua_pop(L, 1);
    return lm;
}

/* A list of strings in field key of idx: *n of them in a Lua-owned userdata array pushed on
 * the stack (popped by the caller when done). */
static const char **opt_strings(lua_State *L, int idx, const char *what, const char *key,
                                size_t *n) {
    lua_getfield(L, idx, key);
    *n = 0;
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return NULL;
    }
    if (lua_type(L, -1) == LUA_TSTRING) { /* one string stands for a list of one */
        const char **a = lua_newuserdatauv(L, sizeof *a, 0);
        a[0] = lua_tostring(L, -2);
        *n = 1;
        lua_remove(L, -2); /* the string stays alive in the options table */
        return a;
    }
    if (!lua_istable(L, -1)) ctn_l_error(L, "catena.%s: %s must be a list of strings", what, key);
    size_t len = lua_rawlen(L, -1);
    const char **a = lua_newuserdatauv(L, (len + 1) * sizeof *a, 0);
    for (size_t i = 0; i < len; i++) {
        lua_rawgeti(L, -2, (lua_Integer)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            ctn_l_error(L, "catena.%s: %s[%d] must be a string", what, key, (int)i + 1);
        a[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    lua_remove(L, -2);
    *n = len;
    return a;
}

/* ---- loaders ------------------------------------------------------------------------------ */

static int loader(lua_State *L, ctn_loader_kind kind, const char *what) {
    lua_settop(L, 1);
    if (lua_isnil(L, 1)) lua_newtable(L), lua_replace(L, 1);
    if (lua_type(L, 1) == LUA_TSTRING) { /* catena.loader.text("a.txt") */
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, 1);
        lua_setfield(L, -2, "path");
        lua_replace(L, 1);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const plain[] = {"path"};
    static const char *const json[] = {"path", "text", "meta", "lines"};
    static const char *const dir[] = {"path", "glob", "skip_errors", "text", "meta"};
    if (kind == CTN_LOADER_JSON) ctn_l_check_options(L, 1, what, json, 4);
    else if (kind == CTN_LOADER_NONE) ctn_l_check_options(L, 1, what, dir, 5);
    else ctn_l_check_options(L, 1, what, plain, 1);
    const char *w = what + strlen("catena.");
    ctn_loader_node_opts o = {.kind = kind, .warn = stderr_warn};
    o.path = opt_str(L, 1, w, "path");
    o.glob = opt_str(L, 1, w, "glob");
    o.skip_errors = opt_bool(L, 1, w, "skip_errors", kind == CTN_LOADER_NONE);
    size_t nm = 0;
    o.json.text = opt_str(L, 1, w, "text");
    o.json.meta_fields = opt_strings(L, 1, w, "meta", &nm);
    o.json.n_meta_fields = nm;
    if (kind == CTN_LOADER_JSON && opt_bool(L, 1, w, "lines", false)) {
        o.kind = CTN_LOADER_JSONL;
        o.json.lines = true;
    }
    char err[512] = "";
    ctn_node *n = ctn_loader_node(&o, err, sizeof err);
    lua_pop(L, 1); /* meta */
    push_node(L, n, w, err);
    return 1;
}

static int l_text(lua_State *L) { return loader(L, CTN_LOADER_TEXT, "catena.loader.text"); }
static int l_markdown(lua_State *L) {
    return loader(L, CTN_LOADER_MARKDOWN, "catena.loader.markdown");
}
static int l_json(lua_State *L) { return loader(L, CTN_LOADER_JSON, "catena.loader.json"); }
static int l_pdf(lua_State *L) { return loader(L, CTN_LOADER_PDF, "catena.loader.pdf"); }
static int l_dir(lua_State *L) { return loader(L, CTN_LOADER_NONE, "catena.loader.dir"); }

/* ---- splitters ---------------------------------------------------------------------------- */

/* Reads the splitter settings of the table at idx into o; a model in length (or model) gives
 * lengths in its tokens (*lm). With tokens not NULL, length may also be "tokens" (*tokens:
 * the caller's model's). */
static void split_settings(lua_State *L, int idx, const char *what, ctn_split_kind kind,
                           ctn_split_opts *o, ctn_lm **lm, bool *tokens) {
    o->chunk_size = (size_t)opt_int(L, idx, what, "chunk_size", (lua_Integer)o->chunk_size, 1,
                                    1 << 30);
    o->chunk_overlap = (size_t)opt_int(L, idx, what, "chunk_overlap",
                                       (lua_Integer)o->chunk_overlap, 0, 1 << 30);
    o->strip_whitespace = opt_bool(L, idx, what, "strip_whitespace", true);
    lua_getfield(L, idx, "keep_separator");
    if (lua_isboolean(L, -1)) o->keep_separator = lua_toboolean(L, -1) ? CTN_KEEP_START : CTN_KEEP_NONE;
    else if (lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "start"))
        o->keep_separator = CTN_KEEP_START;
    else if (lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "end"))
        o->keep_separator = CTN_KEEP_END;
    else if (!lua_isnil(L, -1))
        ctn_l_error(L, "catena.%s: keep_separator must be true, false, \"start\" or \"end\"", what);
    lua_pop(L, 1);
    *lm = NULL;
    lua_getfield(L, idx, "length");
    if (lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "chars")) {
        /* code points: the default */
    } else if (tokens != NULL && lua_type(L, -1) == LUA_TSTRING &&
               !strcmp(lua_tostring(L, -1), "tokens")) {
        *tokens = true;
    } else if (!lua_isnil(L, -1)) {
        ctn_node **r = luaL_testudata(L, -1, CTN_L_RUNNABLE);
        *lm = r != NULL ? ctn_model_node_lm(*r) : NULL;
        if (*lm == NULL)
            ctn_l_error(L, "catena.%s: length must be \"chars\" or a model (lengths in its "
                          "tokens)", what);
    }
    lua_pop(L, 1);
    if (*lm == NULL) *lm = opt_model(L, idx, what, "model");
    if (kind == CTN_SPLIT_TOKEN && *lm == NULL && tokens == NULL)
        ctn_l_error(L, "catena.%s: the token splitter needs model = a model (its tokenizer)", what);
}

static int splitter(lua_State *L, ctn_split_kind kind, const char *what) {
    lua_settop(L, 1);
    if (lua_isnil(L, 1)) lua_newtable(L), lua_replace(L, 1);
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const opts[] = {"chunk_size",     "chunk_overlap", "separators",
                                       "keep_separator", "strip_whitespace", "length",
                                       "model"};
    ctn_l_check_options(L, 1, what, opts, sizeof opts / sizeof opts[0]);
    ctn_split_opts o = ctn_split_defaults();
    ctn_lm *lm = NULL;
    split_settings(L, 1, what + 7, kind, &o, &lm, NULL);
    size_t ns = 0;
    const char **seps = opt_strings(L, 1, what + 7, "separators", &ns);
    if (seps != NULL) o.separators = seps, o.n_separators = ns;
    char err[512] = "";
    ctn_node *n = ctn_splitter_node(kind, &o, lm, err, sizeof err);
    lua_pop(L, 1);
    push_node(L, n, what + 7, err);
    return 1;
}

static int s_recursive(lua_State *L) {
    return splitter(L, CTN_SPLIT_RECURSIVE, "catena.splitter.recursive");
}
static int s_markdown(lua_State *L) {
    return splitter(L, CTN_SPLIT_MARKDOWN, "catena.splitter.markdown");
}
static int s_page(lua_State *L) { return splitter(L, CTN_SPLIT_PAGE, "catena.splitter.page"); }
static int s_token(lua_State *L) { return splitter(L, CTN_SPLIT_TOKEN, "catena.splitter.token"); }

/* ---- knowledge base primitives ----------------------------------------------------------- */

static void raise_kb(lua_State *L, int rc, const char *err, const char *what) {
    ctn_l_push_err(L, rc, err, what);
    lua_error(L);
}

static ctn_kb *open_kb(lua_State *L, const char *path, int flags, const char *what) {
    char err[512] = "";
    ctn_kb *kb = NULL;
    int rc = ctn_kb_open(path, flags, &kb, err, sizeof err);
    if (rc < 0) raise_kb(L, rc, err, what);
    return kb;
}

/* prim.fail(msg): the glue's error(), at the position of the first caller outside it. */
static int k_fail(lua_State *L) { return ctn_l_error(L, "%s", luaL_checkstring(L, 1)); }

/* prim.model_chats(x): whether the model x renders chat prompts; nil when x is not a model. */
static int k_model_chats(lua_State *L) {
    ctn_node **r = luaL_testudata(L, 1, CTN_L_RUNNABLE);
    if (r == NULL || ctn_model_node_lm(*r) == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushboolean(L, ctn_model_node_chats(*r));
    return 1;
}

/* prim.open(path): creates or migrates the file. */
static int k_open(lua_State *L) {
    ctn_kb_close(open_kb(L, luaL_checkstring(L, 1), 0, "kb.open"));
    return 0;
}

static ctn_kb_dtype parse_dtype(lua_State *L, const char *s) {
    if (s == NULL || !strcmp(s, "f32")) return CTN_KB_F32;
    if (!strcmp(s, "f16")) return CTN_KB_F16;
    if (!strcmp(s, "int8")) return CTN_KB_INT8;
    ctn_l_error(L, "catena.kb: dtype must be \"f32\", \"f16\" or \"int8\", not '%s'", s);
    return CTN_KB_F32;
}

static int parse_pooling(lua_State *L, const char *s) {
    if (s == NULL) return CTN_POOL_NONE;
    if (!strcmp(s, "mean")) return CTN_POOL_MEAN;
    if (!strcmp(s, "cls")) return CTN_POOL_CLS;
    if (!strcmp(s, "last")) return CTN_POOL_LAST;
    ctn_l_error(L, "catena.kb: pooling must be \"mean\", \"cls\" or \"last\", not '%s'", s);
    return CTN_POOL_NONE;
}

/* The target of prim.* from (path, collection options table at 2): pushes the labels
 * array (pop it when done). */
static ctn_kb_target read_target(lua_State *L, const char *what) {
    ctn_kb_target t = {.path = luaL_checkstring(L, 1)};
    luaL_checktype(L, 2, LUA_TTABLE);
    t.collection = opt_str(L, 2, what, "name");
    t.embed = opt_model(L, 2, what, "embed");
    t.dtype = parse_dtype(L, opt_str(L, 2, what, "dtype"));
    t.pooling = parse_pooling(L, opt_str(L, 2, what, "pooling"));
    t.labels = opt_strings(L, 2, what, "labels", &t.n_labels);
    return t;
}

/* prim.collection(path, {name, embed, labels, dtype, pooling}): creates the collection or
 * checks its model; returns the model identity it records ("" for none). */
static int k_collection(lua_State *L) {
    ctn_kb_target t = read_target(L, "kb:collection");
    ctn_kb *kb = open_kb(L, t.path, 0, "kb:collection");
    ctn_kb_coll_opts co = {.create = true, .labels = t.labels, .n_labels = t.n_labels};
    char model[256], err[512] = "";
    int rc = 0;
    if (t.embed != NULL) {
        rc = ctn_kb_model_id(ctn_lm_path(t.embed), ctn_lm_arch(t.embed),
                             ctn_lm_embed_dim(t.embed), model, sizeof model);
        co.embed_model = model;
        co.embed_dim = ctn_lm_embed_dim(t.embed);
    }
    ctn_kb_coll c;
    if (rc == 0) rc = ctn_kb_collection(kb, t.collection ? t.collection : "default", &co, &c, err,
                                        sizeof err);
    ctn_kb_close(kb);
    if (rc < 0) raise_kb(L, rc, err, "kb:collection");
    lua_pushstring(L, c.embed_model);
    return 1;
}

/* prim.adder(path, collection options): the kb.add runnable. */
static int k_adder(lua_State *L) {
    ctn_kb_target t = read_target(L, "kb:add");
    char err[512] = "";
    ctn_node *n = ctn_kb_add_node(&t, err, sizeof err);
    push_node(L, n, "kb:add", err);
    return 1;
}

/* prim.ingester(path, collection options, ingest options at 3): the kb.ingest runnable. */
static int k_ingester(lua_State *L) {
    ctn_kb_target t = read_target(L, "kb:ingest");
    lua_settop(L, 3);
    if (lua_isnil(L, 3)) lua_newtable(L), lua_replace(L, 3);
    luaL_checktype(L, 3, LUA_TTABLE);
    static const char *const opts[] = {"splitter",   "chunk_size", "chunk_overlap", "separators",
                                       "keep_separator", "strip_whitespace", "length",
                                       "glob",       "prune",      "text",          "meta",
                                       "collection", "embed",      "dtype",         "pooling",
                                       "labels",     "max_files",  "contextualize",
                                       "context_tokens"};
    ctn_l_check_options(L, 3, "catena.kb:ingest", opts, sizeof opts / sizeof opts[0]);
    ctn_ingest_opts o = ctn_ingest_defaults();
    const char *sp = opt_str(L, 3, "kb:ingest", "splitter");
    if (sp != NULL) {
        int k = ctn_split_parse(sp);
        if (k < 0) ctn_l_error(L, "catena.kb:ingest: splitter must be recursive, markdown, page "
                                 "or token, not '%s'", sp);
        o.splitter = (ctn_split_kind)k;
    }
    ctn_lm *lm = NULL;
    bool tokens = false; /* length = "tokens": the collection's embedding model's */
    split_settings(L, 3, "kb:ingest", o.splitter, &o.split, &lm, &tokens);
    if (lm != NULL && lm != t.embed)
        ctn_l_error(L, "catena.kb:ingest: lengths in tokens use the collection's embedding model: "
                      "give length = \"tokens\"");
    if (lm != NULL || tokens || o.splitter == CTN_SPLIT_TOKEN) {
        if (t.embed == NULL)
            ctn_l_error(L, "catena.kb:ingest: lengths in tokens need the collection's embedding "
                          "model (embed = a model)");
        o.split.tokens = ctn_split_vocab_tokens; /* the node binds it to embed's vocabulary */
    }
    size_t ns = 0, nm = 0;
    const char **seps = opt_strings(L, 3, "kb:ingest", "separators", &ns);
    if (seps != NULL) o.split.separators = seps, o.split.n_separators = ns;
    o.glob = opt_str(L, 3, "kb:ingest", "glob");
    o.prune = opt_bool(L, 3, "kb:ingest", "prune", false);
    o.max_files = (int)opt_int(L, 3, "kb:ingest", "max_files", 0, 0, 64);
    o.contextualize = opt_model(L, 3, "kb:ingest", "contextualize");
    o.context_tokens = (int)opt_int(L, 3, "kb:ingest", "context_tokens", 0, 1, 1024);
    ctn_json_sel sel = {0};
    sel.text = opt_str(L, 3, "kb:ingest", "text");
    sel.meta_fields = opt_strings(L, 3, "kb:ingest", "meta", &nm);
    sel.n_meta_fields = nm;
    if (sel.text != NULL || nm > 0) o.json = &sel;
    char err[512] = "";
    ctn_node *n = ctn_kb_ingest_node(&t, &o, stderr_warn, NULL, err, sizeof err);
    lua_pop(L, 3); /* labels, separators, meta */
    push_node(L, n, "kb:ingest", err);
    return 1;
}

static double opt_num(lua_State *L, int idx, const char *what, const char *key, double def,
                      double lo, double hi) {
    lua_getfield(L, idx, key);
    double v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isnumber(L, -1) || !(lua_tonumber(L, -1) >= lo && lua_tonumber(L, -1) <= hi)) {
            char range[64]; /* lua_pushfstring has no %g */
            snprintf(range, sizeof range, "from %g to %g", lo, hi);
            ctn_l_error(L, "catena.%s: %s must be a number %s", what, key, range);
        }
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* prim.retriever(path, collection options, {k, mode, fetch_k, filter, mmr, lambda, k1, b,
 * weights}): the retriever runnable. */
static int k_retriever(lua_State *L) {
    ctn_kb_target t = read_target(L, "kb:retriever");
    lua_settop(L, 3);
    if (lua_isnil(L, 3)) lua_newtable(L), lua_replace(L, 3);
    luaL_checktype(L, 3, LUA_TTABLE);
    static const char *const opts[] = {"k",      "mode",    "fetch_k", "filter", "mmr",
                                       "lambda", "k1",      "b",       "weights", "collection",
                                       "embed",  "dtype",   "pooling", "labels"};
    ctn_l_check_options(L, 3, "catena.kb:retriever", opts, sizeof opts / sizeof opts[0]);
    ctn_retriever_opts o = {.search = ctn_search_defaults()};
    ctn_search_opts *so = &o.search;
    so->k = (size_t)opt_int(L, 3, "kb:retriever", "k", 4, 1, 1000);
    const char *m = opt_str(L, 3, "kb:retriever", "mode");
    if (m == NULL) so->mode = t.embed != NULL ? CTN_RETRIEVE_VECTOR : CTN_RETRIEVE_BM25;
    else if (!strcmp(m, "vector")) so->mode = CTN_RETRIEVE_VECTOR;
    else if (!strcmp(m, "bm25")) so->mode = CTN_RETRIEVE_BM25;
    else if (!strcmp(m, "hybrid")) so->mode = CTN_RETRIEVE_HYBRID;
    else ctn_l_error(L, "catena.kb:retriever: mode must be \"vector\", \"bm25\" or \"hybrid\", "
                        "not '%s'", m);
    const lua_Integer fk = (lua_Integer)(so->k * 4 > 20 ? so->k * 4 : 20);
    so->fetch_k = (size_t)opt_int(L, 3, "kb:retriever", "fetch_k", fk, (lua_Integer)so->k,
                                  10000);
    so->mmr = opt_bool(L, 3, "kb:retriever", "mmr", false);
    so->lambda = opt_num(L, 3, "kb:retriever", "lambda", 0.5, 0, 1);
    so->bm25.k1 = opt_num(L, 3, "kb:retriever", "k1", 1.2, 0, 100);
    so->bm25.b = opt_num(L, 3, "kb:retriever", "b", 0.75, 0, 1);
    lua_getfield(L, 3, "weights");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            ctn_l_error(L, "catena.kb:retriever: weights must be a table {vector = w, bm25 = w}");
        static const char *const wk[] = {"vector", "bm25"};
        ctn_l_check_options(L, -1, "catena.kb:retriever weights", wk, 2);
        so->w_vector = opt_num(L, lua_gettop(L), "kb:retriever weights", "vector", 1, 0, 1e6);
        so->w_bm25 = opt_num(L, lua_gettop(L), "kb:retriever weights", "bm25", 1, 0, 1e6);
    }
    lua_pop(L, 1);
    char err[512] = "";
    ctn_val *filter = NULL;
    lua_getfield(L, 3, "filter");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            ctn_l_error(L, "catena.kb:retriever: filter must be a table of fields");
        if ((filter = ctn_l_to_val(L, -1, "filter", err, sizeof err)) == NULL)
            ctn_l_error(L, "catena.kb:retriever: %s", err);
    }
    lua_pop(L, 1);
    o.filter = filter;
    ctn_node *n = ctn_kb_retriever_node(&t, &o, err, sizeof err);
    ctn_val_unref(filter);
    push_node(L, n, "kb:retriever", err);
    return 1;
}

static int push_stats(void *ud, const ctn_kb_coll_stats *s) {
    lua_State *L = ud;
    lua_createtable(L, 0, 7);
    lua_pushstring(L, s->name), lua_setfield(L, -2, "name");
    lua_pushstring(L, s->embed_model), lua_setfield(L, -2, "embed_model");
    lua_pushinteger(L, s->embed_dim), lua_setfield(L, -2, "embed_dim");
    lua_pushinteger(L, s->documents), lua_setfield(L, -2, "documents");
    lua_pushinteger(L, s->chunks), lua_setfield(L, -2, "chunks");
    lua_pushinteger(L, s->embeddings), lua_setfield(L, -2, "embeddings");
    lua_pushinteger(L, s->text_bytes), lua_setfield(L, -2, "text_bytes");
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* prim.stats(path): a list of collections with their counts. */
static int k_stats(lua_State *L) {
    ctn_kb *kb = open_kb(L, luaL_checkstring(L, 1), CTN_KB_READONLY, "kb:stats");
    char err[512] = "";
    lua_newtable(L);
    int rc = ctn_kb_stats(kb, push_stats, L, err, sizeof err);
    ctn_kb_close(kb);
    if (rc < 0) raise_kb(L, rc, err, "kb:stats");
    return 1;
}

static int push_doc(void *ud, const char *coll, const char *uri, const char *hash,
                    int64_t chunks, const char *meta) {
    lua_State *L = ud;
    (void)meta;
    lua_createtable(L, 0, 4);
    lua_pushstring(L, coll), lua_setfield(L, -2, "collection");
    lua_pushstring(L, uri), lua_setfield(L, -2, "uri");
    lua_pushstring(L, hash), lua_setfield(L, -2, "hash");
    lua_pushinteger(L, chunks), lua_setfield(L, -2, "chunks");
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

static ctn_kb_coll find_coll(lua_State *L, ctn_kb *kb, const char *name, const char *what) {
    ctn_kb_coll c;
    char err[512] = "";
    int rc = ctn_kb_collection(kb, name, NULL, &c, err, sizeof err);
    if (rc < 0) {
        ctn_kb_close(kb);
        raise_kb(L, rc, err, what);
    }
    return c;
}

/* prim.list(path [, collection]): the documents. */
static int k_list(lua_State *L) {
    const char *name = luaL_optstring(L, 2, NULL);
    ctn_kb *kb = open_kb(L, luaL_checkstring(L, 1), CTN_KB_READONLY, "kb:list");
    ctn_kb_coll c;
    if (name != NULL) c = find_coll(L, kb, name, "kb:list");
    char err[512] = "";
    lua_newtable(L);
    int rc = ctn_kb_list(kb, name != NULL ? &c : NULL, push_doc, L, err, sizeof err);
    ctn_kb_close(kb);
    if (rc < 0) raise_kb(L, rc, err, "kb:list");
    return 1;
}

/* prim.chunks(path, collection, uri): the stored chunks as documents. */
static int k_chunks(lua_State *L) {
    const char *name = luaL_checkstring(L, 2), *uri = luaL_checkstring(L, 3);
    ctn_kb *kb = open_kb(L, luaL_checkstring(L, 1), CTN_KB_READONLY, "kb:chunks");
    ctn_kb_coll c = find_coll(L, kb, name, "kb:chunks");
    char err[512] = "";
    ctn_val *out = ctn_val_arr();
    int rc = out == NULL ? CTN_ENOMEM : ctn_kb_chunks(kb, &c, uri, out, err, sizeof err);
    ctn_kb_close(kb);
    if (rc < 0) {
        ctn_val_unref(out);
        raise_kb(L, rc, rc == CTN_ENOMEM && !err[0] ? "out of memory" : err, "kb:chunks");
    }
    ctn_l_push_val(L, out, 1);
    ctn_val_unref(out);
    return 1;
}

/* prim.remove(path, collection, uri): whether it was there. */
static int k_remove(lua_State *L) {
    const char *name = luaL_checkstring(L, 2), *uri = luaL_checkstring(L, 3);
    ctn_kb *kb = open_kb(L, luaL_checkstring(L, 1), 0, "kb:remove");
    ctn_kb_coll c = find_coll(L, kb, name, "kb:remove");
    char err[512] = "";
    int removed = 0;
    int rc = ctn_kb_remove(kb, &c, uri, &removed, err, sizeof err);
    ctn_kb_close(kb);
    if (rc < 0) raise_kb(L, rc, err, "kb:remove");
    lua_pushboolean(L, removed);
    return 1;
}

/* The objects, in Lua: a knowledge base is {path}, a collection {kb, options}; their methods
 * call the primitives, and add / ingest invoke the runnables (so they wait as invoke does). */
static const char kb_glue[] =
    "local prim, kb, catena = ...\n"
    "local KB, Coll = {}, {}\n"
    "local error = prim.fail -- raises at the user's line, not the glue's\n"
    "KB.__index, Coll.__index = KB, Coll\n"
    "KB.__name, Coll.__name = 'catena.kb', 'catena.kb.collection'\n"
    "KB.__tostring = function(k) return 'catena.kb(' .. k.path .. ')' end\n"
    "Coll.__tostring = function(c) return 'catena.kb.collection(' .. c.kb.path .. ', ' .. "
    "c.options.name .. ')' end\n"
    "local copts = {embed = true, labels = true, dtype = true, pooling = true}\n"
    "local function coll_options(name, o, where)\n"
    "  if o ~= nil and type(o) ~= 'table' then error('catena.' .. where .. ': options must be "
    "a table') end\n"
    "  local r = {name = name}\n"
    "  for k, v in pairs(o or {}) do\n"
    "    if not copts[k] then error('catena.' .. where .. \": unknown option '\" .. tostring(k) "
    ".. \"' (embed, labels, dtype, pooling)\") end\n"
    "    r[k] = v\n"
    "  end\n"
    "  return r\n"
    "end\n"
    "function kb.open(path)\n"
    "  if type(path) ~= 'string' then error('catena.kb.open: give the path of the knowledge "
    "base file') end\n"
    "  prim.open(path)\n"
    "  return setmetatable({path = path}, KB)\n"
    "end\n"
    "function KB:collection(name, o)\n"
    "  if type(name) ~= 'string' then error('catena.kb:collection: give a collection name') "
    "end\n"
    "  local c = setmetatable({kb = self, options = coll_options(name, o, 'kb:collection')}, "
    "Coll)\n"
    "  c.embed_model = prim.collection(self.path, c.options)\n"
    "  return c\n"
    "end\n"
    "function Coll:adder() return prim.adder(self.kb.path, self.options) end\n"
    "function Coll:ingester(o) return prim.ingester(self.kb.path, self.options, o) end\n"
    "function Coll:retriever(o) return prim.retriever(self.kb.path, self.options, o) end\n"
    "function Coll:add(docs) return self:adder():invoke(docs) end\n"
    "function Coll:ingest(paths, o) return self:ingester(o):invoke(paths) end\n"
    "function Coll:list() return prim.list(self.kb.path, self.options.name) end\n"
    "function Coll:chunks(uri) return prim.chunks(self.kb.path, self.options.name, uri) end\n"
    "function Coll:remove(uri) return prim.remove(self.kb.path, self.options.name, uri) end\n"
    "local function split_opts(o)\n"
    "  local c, rest = {}, {}\n"
    "  for k, v in pairs(o or {}) do if copts[k] then c[k] = v elseif k ~= 'collection' then "
    "rest[k] = v end end\n"
    "  return c, rest\n"
    "end\n"
    "function KB:add(docs, o)\n"
    "  local c = split_opts(o)\n"
    "  return self:collection((o or {}).collection or 'default', c):add(docs)\n"
    "end\n"
    "function KB:ingest(paths, o)\n"
    "  local c, rest = split_opts(o)\n"
    "  return self:collection((o or {}).collection or 'default', c):ingest(paths, rest)\n"
    "end\n"
    "function KB:retriever(o)\n"
    "  local c, rest = split_opts(o)\n"
    "  return self:collection((o or {}).collection or 'default', c):retriever(rest)\n"
    "end\n"
    "function KB:stats() return prim.stats(self.path) end\n"
    "local function doc_text(d, i, sources)\n"
    "  if type(d) == 'string' then return d end\n"
    "  if type(d) ~= 'table' or type(d.page_content) ~= 'string' then\n"
    "    error('item ' .. i .. ' is not a document or a string', 0)\n"
    "  end\n"
    "  if not sources then return d.page_content end\n"
    "  local m = d.metadata or {}\n"
    "  local where = tostring(m.source or '?')\n"
    "  if m.page ~= nil then where = where .. ', page ' .. tostring(m.page) end\n"
    "  if m.section ~= nil and m.section ~= '' then where = where .. ', ' .. m.section end\n"
    "  return '[' .. i .. '] ' .. where .. '\\n' .. d.page_content\n"
    "end\n"
    "local fopts = {separator = true, sources = true}\n"
    "function catena.format_docs(o)\n"
    "  if o ~= nil and type(o) ~= 'table' then error('catena.format_docs: options must be a "
    "table {separator =, sources =}') end\n"
    "  for k in pairs(o or {}) do\n"
    "    if not fopts[k] then error(\"catena.format_docs: unknown option '\" .. tostring(k) .. "
    "\"' (separator, sources)\") end\n"
    "  end\n"
    "  local sep = (o or {}).separator or '\\n\\n'\n"
    "  if type(sep) ~= 'string' then error('catena.format_docs: separator must be a string') end\n"
    "  local sources = (o or {}).sources == true\n"
    "  return catena.lambda(function(docs)\n"
    "    if type(docs) ~= 'table' then error('needs an array of documents', 0) end\n"
    "    local parts = {}\n"
    "    for i, d in ipairs(docs) do parts[i] = doc_text(d, i, sources) end\n"
    "    return table.concat(parts, sep)\n"
    "  end, 'format_docs')\n"
    "end\n"
    "-- catena.retriever.rerank: the retriever's hits judged by a model, as Qwen3-Reranker does.\n"
    "local judge_system = 'Judge whether the Document meets the requirements of the Query. ' ..\n"
    "  'Answer only \"yes\" or \"no\".'\n"
    "local judge_user = '<Query>: {query}\\n<Document>: {document}'\n"
    "local rropts = {retriever = true, llm = true, top_n = true, template = true}\n"
    "local function is_runnable(x)\n"
    "  local mt = getmetatable(x)\n"
    "  return type(x) == 'userdata' and type(mt) == 'table' and mt.__name == 'catena.runnable'\n"
    "end\n"
    "local function fill(tmpl, query, doc)\n"
    "  return (tmpl:gsub('{(%w+)}', function(k)\n"
    "    if k == 'query' then return query elseif k == 'document' then return doc end\n"
    "  end))\n"
    "end\n"
    "-- P(yes) / (P(yes) + P(no)) from the two log-probabilities, without overflow.\n"
    "local function yes_share(ly, ln)\n"
    "  if ly >= ln then return 1 / (1 + math.exp(ln - ly)) end\n"
    "  local e = math.exp(ly - ln)\n"
    "  return e / (1 + e)\n"
    "end\n"
    "catena.retriever = catena.retriever or {}\n"
    "function catena.retriever.rerank(o)\n"
    "  local w = 'catena.retriever.rerank'\n"
    "  if type(o) ~= 'table' then error(w .. ': give {retriever =, llm =, top_n =, template =}') end\n"
    "  for k in pairs(o) do\n"
    "    if not rropts[k] then error(w .. \": unknown option '\" .. tostring(k) ..\n"
    "      \"' (retriever, llm, top_n, template)\") end\n"
    "  end\n"
    "  if not is_runnable(o.retriever) then error(w .. ': retriever must be a runnable (kb:retriever{...})') end\n"
    "  local chats = prim.model_chats(o.llm)\n"
    "  if chats == nil then error(w .. ': llm must be a model (catena.model{...})') end\n"
    "  local top_n = o.top_n == nil and 3 or o.top_n\n"
    "  if math.type(top_n) ~= 'integer' or top_n < 1 or top_n > 1000 then\n"
    "    error(w .. ': top_n must be an integer from 1 to 1000')\n"
    "  end\n"
    "  local tmpl = o.template == nil and judge_user or o.template\n"
    "  if type(tmpl) ~= 'string' or not tmpl:find('{document}', 1, true) then\n"
    "    error(w .. ': template must be a string with {document} (and {query}) in it')\n"
    "  end\n"
    "  -- The answer's first token: after a chat template's assistant header \"yes\" / \"no\"; after\n"
    "  -- plain text \" yes\" / \" no\", or \"yes\" / \"no\" where the tokenizer puts the space in itself\n"
    "  -- (SentencePiece: then \" yes\" and \" no\" both begin with the lone space).\n"
    "  local scorer\n"
    "  if chats then\n"
    "    scorer = catena.scorer{llm = o.llm, candidates = {'yes', 'no'}}\n"
    "  else\n"
    "    local ok, s = pcall(catena.scorer, {llm = o.llm, candidates = {' yes', ' no'}})\n"
    "    scorer = ok and s or catena.scorer{llm = o.llm, candidates = {'yes', 'no'}}\n"
    "  end\n"
    "  local retriever = o.retriever\n"
    "  return catena.lambda(function(query)\n"
    "    if type(query) ~= 'string' then error('rerank needs the query as a string, got ' .. type(query), 0) end\n"
    "    local hits = retriever:invoke(query)\n"
    "    if #hits == 0 then return catena.array{} end\n"
    "    local prompts = {}\n"
    "    for i, d in ipairs(hits) do\n"
    "      if type(d) ~= 'table' or type(d.page_content) ~= 'string' then\n"
    "        error('rerank: hit ' .. i .. ' of the retriever is not a document', 0)\n"
    "      end\n"
    "      local user = fill(tmpl, query, d.page_content)\n"
    "      if chats then\n"
    "        prompts[i] = {type = 'chat', messages = {{role = 'system', content = judge_system},\n"
    "                                                 {role = 'user', content = user}}}\n"
    "      else\n"
    "        prompts[i] = judge_system .. '\\n\\n' .. user .. '\\n\\nAnswer:'\n"
    "      end\n"
    "    end\n"
    "    local scores = scorer:batch(prompts)\n"
    "    local ranked = {}\n"
    "    for i, d in ipairs(hits) do\n"
    "      d.metadata = d.metadata or {}\n"
    "      d.metadata.rerank_score = yes_share(scores[i][1], scores[i][2])\n"
    "      ranked[i] = {d = d, i = i}\n"
    "    end\n"
    "    table.sort(ranked, function(a, b)\n"
    "      local x, y = a.d.metadata.rerank_score, b.d.metadata.rerank_score\n"
    "      if x ~= y then return x > y end\n"
    "      return a.i < b.i\n"
    "    end)\n"
    "    local out = {}\n"
    "    for i = 1, math.min(top_n, #ranked) do out[i] = ranked[i].d end\n"
    "    return out\n"
    "  end, 'rerank')\n"
    "end\n"
    "function KB:list(name) return prim.list(self.path, name) end\n"
    "return kb\n";

void ctn_l_open_rag(lua_State *L) {
    static const luaL_Reg loaders[] = {{"text", l_text}, {"markdown", l_markdown},
                                       {"json", l_json}, {"pdf", l_pdf},
                                       {"dir", l_dir},   {NULL, NULL}};
    luaL_newlib(L, loaders);
    lua_setfield(L, -2, "loader");
    static const luaL_Reg splitters[] = {{"recursive", s_recursive}, {"markdown", s_markdown},
                                         {"page", s_page},           {"token", s_token},
                                         {NULL, NULL}};
    luaL_newlib(L, splitters);
    lua_setfield(L, -2, "splitter");
    static const luaL_Reg prims[] = {{"open", k_open},       {"collection", k_collection},
                                     {"adder", k_adder},     {"ingester", k_ingester},
                                     {"stats", k_stats},     {"list", k_list},
                                     {"chunks", k_chunks},   {"remove", k_remove},
                                     {"fail", k_fail},       {"retriever", k_retriever},
                                     {"model_chats", k_model_chats},
                                     {NULL, NULL}};
    if (luaL_loadbuffer(L, kb_glue, sizeof kb_glue - 1, "=catena.kb") != LUA_OK) lua_error(L);
    luaL_newlib(L, prims);
    lua_newtable(L);
    lua_pushvalue(L, -4); /* the module: the glue adds catena.format_docs to it */
    lua_call(L, 3, 1);
    lua_setfield(L, -2, "kb");
}
