/*
 * Conversations in the catena Lua module: catena.history.sqlite (stdlib/history.h),
 * r:with_history (LangChain's RunnableWithMessageHistory), and the retrievers that use a
 * model: catena.retriever.multi_query and catena.retriever.history_aware. The store is a
 * userdata over one open connection; the rest is Lua (glue below) over runnables, so it
 * waits as invoke does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "history.h"
#include "l_catena.h"

#define HISTORY_MT "catena.history.db"

static ctn_history **check_db(lua_State *L, int idx) {
    ctn_history **h = luaL_checkudata(L, idx, HISTORY_MT);
    if (*h == NULL) ctn_l_error(L, "catena.history: the store is closed");
    return h;
}

static void raise_h(lua_State *L, int rc, const char *err, const char *what) {
    ctn_l_push_err(L, rc, err, what);
    lua_error(L);
}

/* prim.open(path): the store's connection, as a userdata. */
static int h_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ctn_history **h = lua_newuserdatauv(L, sizeof *h, 0);
    *h = NULL;
    luaL_setmetatable(L, HISTORY_MT);
    char err[512] = "";
    const int rc = ctn_history_open(path, h, err, sizeof err);
    if (rc < 0) raise_h(L, rc, err, "catena.history.sqlite");
    return 1;
}

static int h_gc(lua_State *L) {
    ctn_history **h = luaL_checkudata(L, 1, HISTORY_MT);
    ctn_history_close(*h);
    *h = NULL;
    return 0;
}

/* prim.add(db, session, {{type, content}, ...}): the glue has checked the shapes. */
static int h_add(lua_State *L) {
    ctn_history **h = check_db(L, 1);
    const char *session = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    const lua_Integer n = luaL_len(L, 3);
    if (n < 0 || n > 4096) return ctn_l_error(L, "catena.history: at most 4096 messages at once");
    ctn_history_msg *m = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *m, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 3, i);
        lua_getfield(L, -1, "type");
        lua_getfield(L, -2, "content");
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            return ctn_l_error(L, "catena.history: message %d needs a type and a content string",
                               (int)i);
        /* The strings stay alive in the messages table. */
        m[i - 1] = (ctn_history_msg){lua_tostring(L, -2), lua_tostring(L, -1)};
        if (strlen(m[i - 1].content) != lua_rawlen(L, -1))
            return ctn_l_error(L, "catena.history: message %d: content holds a NUL byte", (int)i);
        lua_pop(L, 3);
    }
    char err[512] = "";
    const int rc = ctn_history_add(*h, session, m, (size_t)n, err, sizeof err);
    if (rc < 0) raise_h(L, rc, err, "history:add");
    return 0;
}

/* prim.get(db, session, last): the messages, oldest first. */
static int h_get(lua_State *L) {
    ctn_history **h = check_db(L, 1);
    const char *session = luaL_checkstring(L, 2);
    const lua_Integer last = luaL_optinteger(L, 3, 0);
    if (last < 0) return ctn_l_error(L, "history:messages: last must be 0 or more");
    ctn_val *v = NULL;
    char err[512] = "";
    const int rc = ctn_history_get(*h, session, (size_t)last, &v, err, sizeof err);
    if (rc < 0) raise_h(L, rc, err, "history:messages");
    ctn_l_push_val(L, v, 1);
    ctn_val_unref(v);
    return 1;
}

static int h_clear(lua_State *L) {
    ctn_history **h = check_db(L, 1);
    size_t removed = 0;
    char err[512] = "";
    const int rc = ctn_history_clear(*h, luaL_checkstring(L, 2), &removed, err, sizeof err);
    if (rc < 0) raise_h(L, rc, err, "history:clear");
    lua_pushinteger(L, (lua_Integer)removed);
    return 1;
}

static int h_sessions(lua_State *L) {
    ctn_history **h = check_db(L, 1);
    ctn_val *v = NULL;
    char err[512] = "";
    const int rc = ctn_history_sessions(*h, &v, err, sizeof err);
    if (rc < 0) raise_h(L, rc, err, "history:sessions");
    ctn_l_push_val(L, v, 1);
    ctn_val_unref(v);
    return 1;
}

static int h_fail(lua_State *L) { return ctn_l_error(L, "%s", luaL_checkstring(L, 1)); }

static const char glue[] =
    "local prim, catena, R = ...\n"
    "local error = prim.fail -- raises at the user's line, not the glue's\n"
    "local H = {}\n"
    "H.__index, H.__name = H, 'catena.history'\n"
    "H.__tostring = function(h) return 'catena.history(' .. h.path .. ')' end\n"
    "local function check_opts(o, allowed, where)\n"
    "  if type(o) ~= 'table' then error(where .. ': options must be a table') end\n"
    "  for k in pairs(o) do\n"
    "    if not allowed[k] then\n"
    "      local names = {}\n"
    "      for n in pairs(allowed) do names[#names + 1] = n end\n"
    "      table.sort(names)\n"
    "      error(where .. \": unknown option '\" .. tostring(k) .. \"' (\" .. table.concat(names, "
    "', ') .. ')')\n"
    "    end\n"
    "  end\n"
    "end\n"
    "catena.history = catena.history or {}\n"
    "function catena.history.sqlite(path)\n"
    "  if type(path) ~= 'string' or path == '' then error('catena.history.sqlite: give the path "
    "of a SQLite file') end\n"
    "  return setmetatable({path = path, db = prim.open(path)}, H)\n"
    "end\n"
    "local kinds = {human = 'human', user = 'human', ai = 'ai', assistant = 'ai', system = "
    "'system'}\n"
    "-- A message as the store keeps it: {type =, content =} from a message, a {role =, "
    "content =} table or a {role, content} pair.\n"
    "local function as_msg(m, i, where)\n"
    "  if type(m) ~= 'table' then error(where .. ': message ' .. i .. ' is a ' .. type(m) .. ', "
    "not a message') end\n"
    "  local t, c = m.type or m.role or m[1], m.content or m[2]\n"
    "  if type(t) ~= 'string' or not kinds[t] then error(where .. ': message ' .. i .. ': its "
    "type or role must be human, ai, system, user or assistant') end\n"
    "  if type(c) ~= 'string' then error(where .. ': message ' .. i .. ': its content must be "
    "a string') end\n"
    "  return {type = kinds[t], content = c}\n"
    "end\n"
    "local function check_session(s, where)\n"
    "  if type(s) ~= 'string' or s == '' then error(where .. ': the session id must be a "
    "non-empty string') end\n"
    "end\n"
    "function H:messages(session, last)\n"
    "  check_session(session, 'history:messages')\n"
    "  if last ~= nil and math.type(last) ~= 'integer' then error('history:messages: last must "
    "be an integer') end\n"
    "  return prim.get(self.db, session, last)\n"
    "end\n"
    "function H:add(session, msgs)\n"
    "  check_session(session, 'history:add')\n"
    "  if type(msgs) ~= 'table' then error('history:add: give an array of messages') end\n"
    "  if msgs.content ~= nil or type(msgs[1]) == 'string' then msgs = {msgs} end\n"
    "  local t = {}\n"
    "  for i, m in ipairs(msgs) do t[i] = as_msg(m, i, 'history:add') end\n"
    "  prim.add(self.db, session, t)\n"
    "end\n"
    "function H:clear(session)\n"
    "  check_session(session, 'history:clear')\n"
    "  return prim.clear(self.db, session)\n"
    "end\n"
    "function H:sessions() return prim.sessions(self.db) end\n"
    "-- The text of an answer: a string, a message's content, or a table's output_key.\n"
    "local function answer_text(out, key)\n"
    "  if key ~= nil then\n"
    "    if type(out) ~= 'table' then error('the output is a ' .. type(out) .. ', with no key ' .. "
    "key, 0) end\n"
    "    out = out[key]\n"
    "  end\n"
    "  if type(out) == 'string' then return out end\n"
    "  if type(out) == 'table' and type(out.content) == 'string' then return out.content end\n"
    "  error('the answer must be a string or a message' .. (key == nil and ' (give output_key "
    "for a table)' or ' (output.' .. tostring(key) .. ')'), 0)\n"
    "end\n"
    "local hopts = {store = true, session_key = true, input_key = true, history_key = true, "
    "output_key = true, max_messages = true}\n"
    "function R.with_history(self, o)\n"
    "  local where = 'with_history'\n"
    "  check_opts(o, hopts, where)\n"
    "  local store = o.store\n"
    "  if type(store) == 'string' then store = catena.history.sqlite(store) end\n"
    "  if getmetatable(store) ~= H then error(where .. ': store must be a catena.history (or "
    "the path of one)') end\n"
    "  local skey = o.session_key or 'session_id'\n"
    "  local ikey, hkey = o.input_key or 'input', o.history_key or 'history'\n"
    "  for _, k in ipairs({'session_key', 'input_key', 'history_key', 'output_key'}) do\n"
    "    if o[k] ~= nil and (type(o[k]) ~= 'string' or o[k] == '') then error(where .. ': ' .. "
    "k .. ' must be a non-empty string') end\n"
    "  end\n"
    "  local last = o.max_messages or 0\n"
    "  if math.type(last) ~= 'integer' or last < 0 then error(where .. ': max_messages must be "
    "an integer, 0 or more (0: all)') end\n"
    "  local inner, okey = self, o.output_key\n"
    "  return catena.lambda(function(input, config)\n"
    "    local cf = config and config.configurable\n"
    "    local sid = type(cf) == 'table' and cf[skey] or nil\n"
    "    if type(sid) ~= 'string' or sid == '' then\n"
    "      error('no session: give the run config = {configurable = {' .. skey .. ' = \"...\"}}', "
    "0)\n"
    "    end\n"
    "    local question, inp\n"
    "    if type(input) == 'string' then\n"
    "      question, inp = input, {[ikey] = input}\n"
    "    elseif type(input) == 'table' and type(input[ikey]) == 'string' then\n"
    "      question, inp = input[ikey], {}\n"
    "      for k, v in pairs(input) do inp[k] = v end\n"
    "    else\n"
    "      error('the input must be a string or a table with a string ' .. ikey, 0)\n"
    "    end\n"
    "    inp[hkey] = store:messages(sid, last)\n"
    "    local cfg = {}\n"
    "    for k, v in pairs(config or {}) do if k ~= 'callbacks' and k ~= 'run_name' then cfg[k] "
    "= v end end\n"
    "    if cfg.session == nil and #sid <= 200 then cfg.session = 'history:' .. sid end\n"
    "    local out = inner:invoke(inp, cfg)\n"
    "    store:add(sid, {{type = 'human', content = question}, {type = 'ai', content = "
    "answer_text(out, okey)}})\n"
    "    return out\n"
    "  end, 'with_history')\n"
    "end\n"
    "catena.retriever = catena.retriever or {}\n"
    "local RMT = getmetatable(catena.passthrough())\n"
    "local function is_runnable(x) return getmetatable(x) == RMT end\n"
    "-- The run's config without its session: a rewriting model's prompt is new every turn.\n"
    "local function no_session(config)\n"
    "  if config == nil or config.session == nil then return config end\n"
    "  local c = {}\n"
    "  for k, v in pairs(config) do if k ~= 'session' then c[k] = v end end\n"
    "  return c\n"
    "end\n"
    "local function template(p, where)\n"
    "  if type(p) ~= 'string' then error(where .. ': prompt must be a string template') end\n"
    "  return p\n"
    "end\n"
    "local function fill(t, vars)\n"
    "  return (t:gsub('{(%w+)}', function(k) return vars[k] end))\n"
    "end\n"
    "local function query_of(q)\n"
    "  if type(q) == 'string' then return q end\n"
    "  if type(q) == 'table' and type(q.page_content) == 'string' then return q.page_content "
    "end\n"
    "  error('the input must be a question (a string)', 0)\n"
    "end\n"
    "-- One version of the question from a model's reply: its first line, without numbering "
    "or quotes.\n"
    "local function clean(s)\n"
    "  if type(s) == 'table' then s = s.content end\n"
    "  if type(s) ~= 'string' then return nil end\n"
    "  s = s:match('^%s*([^\\n]*)') or ''\n"
    "  s = s:gsub('^%d+[%.%)]%s*', ''):gsub('^[-*]%s+', '')\n"
    "  s = s:gsub('^[\"\\']+', ''):gsub('[\"\\']+%s*$', ''):gsub('%s+$', '')\n"
    "  if s == '' then return nil end\n"
    "  return s\n"
    "end\n"
    "local MQ_PROMPT = 'You help a search engine find documents. Write one other way to ask the "
    "question below, with other words, on one line.\\n\\nQuestion: {question}\\nOther "
    "question:'\n"
    "local mqopts = {retriever = true, llm = true, n = true, prompt = true, include_original = "
    "true, temperature = true, max_tokens = true}\n"
    "function catena.retriever.multi_query(o)\n"
    "  local where = 'catena.retriever.multi_query'\n"
    "  check_opts(o, mqopts, where)\n"
    "  if not is_runnable(o.retriever) then error(where .. ': retriever must be a runnable') "
    "end\n"
    "  if not is_runnable(o.llm) then error(where .. ': llm must be a model (catena.model)') end\n"
    "  local n = o.n or 3\n"
    "  if math.type(n) ~= 'integer' or n < 1 or n > 16 then error(where .. ': n must be an "
    "integer from 1 to 16') end\n"
    "  local tpl = template(o.prompt or MQ_PROMPT, where)\n"
    "  if not tpl:find('{question}', 1, true) then error(where .. ': prompt must hold "
    "{question}') end\n"
    "  local orig = o.include_original ~= false\n"
    "  local temp = o.temperature or 0.8\n"
    "  local maxt = o.max_tokens or 48\n"
    "  local gen = o.llm:with{n = n, temperature = temp, max_tokens = maxt, stop = {'\\n'}}\n"
    "  local ret = o.retriever\n"
    "  return catena.lambda(function(q, config)\n"
    "    local question = query_of(q)\n"
    "    local outs = gen:invoke(fill(tpl, {question = question}), no_session(config))\n"
    "    if type(outs) ~= 'table' or outs.content ~= nil then outs = {outs} end\n"
    "    local qs, seen = {}, {}\n"
    "    if orig then qs[1], seen[question:lower()] = question, true end\n"
    "    for _, v in ipairs(outs) do\n"
    "      local s = clean(v)\n"
    "      if s ~= nil and not seen[s:lower()] then qs[#qs + 1], seen[s:lower()] = s, true end\n"
    "    end\n"
    "    if #qs == 0 then qs[1] = question end\n"
    "    return ret:invoke(qs, config)\n"
    "  end, 'multi_query')\n"
    "end\n"
    "local HA_PROMPT = 'Rewrite the last question of this conversation so that it can be "
    "understood without the conversation. Write only the question.\\n\\n{history}\\nQuestion: "
    "{question}\\nStandalone question:'\n"
    "local haopts = {retriever = true, llm = true, prompt = true, input_key = true, history_key "
    "= true, max_tokens = true}\n"
    "local names = {human = 'User', ai = 'Assistant', system = 'System'}\n"
    "function catena.retriever.history_aware(o)\n"
    "  local where = 'catena.retriever.history_aware'\n"
    "  check_opts(o, haopts, where)\n"
    "  if not is_runnable(o.retriever) then error(where .. ': retriever must be a runnable') "
    "end\n"
    "  if not is_runnable(o.llm) then error(where .. ': llm must be a runnable') end\n"
    "  local tpl = template(o.prompt or HA_PROMPT, where)\n"
    "  local ikey, hkey = o.input_key or 'input', o.history_key or 'history'\n"
    "  local gen = o.llm:with{max_tokens = o.max_tokens or 64, stop = {'\\n'}}\n"
    "  local ret = o.retriever\n"
    "  return catena.lambda(function(x, config)\n"
    "    local question, hist\n"
    "    if type(x) == 'string' then question = x\n"
    "    elseif type(x) == 'table' then question, hist = x[ikey], x[hkey] end\n"
    "    if type(question) ~= 'string' then error('the input must be a string or a table with a "
    "string ' .. ikey, 0) end\n"
    "    if hist == nil or #hist == 0 then return ret:invoke(question, config) end\n"
    "    local lines = {}\n"
    "    for i, m in ipairs(hist) do\n"
    "      local mm = as_msg(m, i, 'history')\n"
    "      lines[i] = names[mm.type] .. ': ' .. mm.content\n"
    "    end\n"
    "    local s = clean(gen:invoke(fill(tpl, {history = table.concat(lines, '\\n'), question = "
    "question}), no_session(config))) or question\n"
    "    return ret:invoke(s, config)\n"
    "  end, 'history_aware')\n"
    "end\n";

void ctn_l_open_history(lua_State *L) {
    if (luaL_newmetatable(L, HISTORY_MT)) {
        lua_pushcfunction(L, h_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg prims[] = {{"open", h_open},         {"add", h_add},
                                     {"get", h_get},           {"clear", h_clear},
                                     {"sessions", h_sessions}, {"fail", h_fail},
                                     {NULL, NULL}};
    ctn_l_run_glue(L, glue, sizeof glue - 1, "=catena.history", prims);
}
