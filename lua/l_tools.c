/*
 * Structured output and tools in the catena Lua module: runnable:with_structured_output,
 * runnable:bind_tools, catena.tool and catena.tool_loop. The glue below is Lua; its
 * primitives (schema text, grammar, validation, JSON) are the C of engine/json_schema.h and
 * chains/value.h.
 */
#include <stdlib.h>
#include <string.h>

#include "components.h"
#include "error.h"
#include "json.h"
#include "json_schema.h"
#include "l_catena.h"
#include "tools.h"

static int t_fail(lua_State *L) { return ctn_l_error(L, "%s", luaL_checkstring(L, 1)); }

/* prim.schema_text(table or JSON text, where) */
static int t_schema_text(lua_State *L) {
    char *s = ctn_l_schema_text(L, 1, luaL_optstring(L, 2, "schema"));
    lua_pushstring(L, s);
    free(s);
    return 1;
}

/* prim.gbnf(schema JSON, where): the grammar of the schema; raises with the converter's
 * message. */
static int t_gbnf(lua_State *L) {
    size_t n = 0;
    const char *s = luaL_checklstring(L, 1, &n);
    char *g = NULL, err[512] = "";
    if (ctn_json_schema_to_gbnf(s, n, &g, err, sizeof err) < 0)
        return ctn_l_error(L, "%s: %s", luaL_optstring(L, 2, "schema"), err);
    lua_pushstring(L, g);
    free(g);
    return 1;
}

/* prim.validate(schema JSON, JSON text): true, or false and why. */
static int t_validate(lua_State *L) {
    size_t n = 0, jn = 0;
    const char *s = luaL_checklstring(L, 1, &n), *j = luaL_checklstring(L, 2, &jn);
    char err[512] = "";
    const int rc = ctn_json_schema_validate(s, n, j, jn, err, sizeof err);
    if (rc == CTN_ENOMEM) return luaL_error(L, "catena: out of memory");
    lua_pushboolean(L, rc == 0);
    if (rc == 0) return 1;
    lua_pushstring(L, err);
    return 2;
}

/* prim.encode(value): its JSON text. */
static int t_encode(lua_State *L) {
    char err[256] = "";
    ctn_val *v = ctn_l_to_val(L, 1, "value", err, sizeof err);
    if (v == NULL) return ctn_l_error(L, "%s", err);
    char *j = ctn_val_to_json(v, 0);
    ctn_val_unref(v);
    if (j == NULL) return luaL_error(L, "catena: out of memory");
    lua_pushstring(L, j);
    free(j);
    return 1;
}

/* prim.decode(JSON text): the value; raises naming where the text goes wrong. */
static int t_decode(lua_State *L) {
    size_t n = 0;
    const char *s = luaL_checklstring(L, 1, &n);
    ctn_val *v = NULL;
    char err[512] = "";
    if (ctn_json_parse(s, n, &v, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    ctn_l_push_val(L, v, 1);
    ctn_val_unref(v);
    return 1;
}

/* prim.is_model(runnable): whether it is a model node (through binds). */
static int t_is_model(lua_State *L) {
    ctn_node **r = luaL_testudata(L, 1, CTN_L_RUNNABLE);
    lua_pushboolean(L, r != NULL && ctn_model_node_lm(*r) != NULL);
    return 1;
}

/* prim.tool_check(name, description or nil, schema JSON, where): raises naming what is wrong. */
static int t_tool_check(lua_State *L) {
    const ctn_tool t = {luaL_checkstring(L, 1), luaL_optstring(L, 2, NULL), luaL_checkstring(L, 3)};
    char err[512] = "";
    if (ctn_tool_check(&t, err, sizeof err) < 0)
        return ctn_l_error(L, "%s: %s", luaL_optstring(L, 4, "tool"), err);
    return 0;
}

/* The tools of the list at idx ({name, description, schema} tables, checked before);
 * malloc'd, their strings borrowed from the tables (which the caller keeps). */
static ctn_tool *tools_of(lua_State *L, int idx, size_t *n) {
    *n = lua_rawlen(L, idx);
    ctn_tool *t = calloc(*n + 1, sizeof *t);
    if (t == NULL) luaL_error(L, "catena: out of memory");
    for (size_t i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        lua_getfield(L, -1, "name");
        lua_getfield(L, -2, "description");
        lua_getfield(L, -3, "schema");
        t[i] = (ctn_tool){lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1)};
        lua_pop(L, 4);
        if (t[i].name == NULL || t[i].schema == NULL) {
            free(t);
            luaL_error(L, "catena: tool %d has no name or schema", (int)i + 1);
        }
    }
    return t;
}

/* prim.reply_schema(tools, may_answer, max_calls) and prim.tools_prompt(tools, may_answer) */
static int tools_text(lua_State *L, bool schema) {
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t n = 0;
    ctn_tool *t = tools_of(L, 1, &n);
    char *s = schema ? ctn_tools_reply_schema(t, n, lua_toboolean(L, 2), (int)luaL_optinteger(L, 3, 0))
                     : ctn_tools_prompt(t, n, lua_toboolean(L, 2));
    free(t);
    if (s == NULL) return luaL_error(L, "catena: out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int t_reply_schema(lua_State *L) { return tools_text(L, true); }
static int t_tools_prompt(lua_State *L) { return tools_text(L, false); }

/* prim.result_text(call id or nil, content) */
static int t_result_text(lua_State *L) {
    char *s = ctn_tools_result_text(luaL_optstring(L, 1, NULL), luaL_checkstring(L, 2));
    if (s == NULL) return luaL_error(L, "catena: out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static const char glue[] =
    "local prim, catena, R = ...\n"
    "local error = prim.fail -- raises at the user's line, not the glue's\n"
    "local RMT = getmetatable(catena.passthrough())\n"
    "local function is_runnable(x) return getmetatable(x) == RMT end\n"
    "local function check_opts(o, allowed, where)\n"
    "  if type(o) ~= 'table' then error(where .. ': options must be a table') end\n"
    "  for k in pairs(o) do\n"
    "    if not allowed[k] then\n"
    "      local names = {}\n"
    "      for n in pairs(allowed) do names[#names + 1] = n end\n"
    "      table.sort(names)\n"
    "      error(where .. \": unknown option '\" .. tostring(k) .. \"' (\" .. table.concat(names, ', ') .. ')')\n"
    "    end\n"
    "  end\n"
    "end\n"
    "\n"
    "-- An arguments object as JSON (an empty Lua table is the empty object).\n"
    "local function args_json(a)\n"
    "  if a == nil or (type(a) == 'table' and next(a) == nil) then return '{}' end\n"
    "  return prim.encode(a)\n"
    "end\n"
    "\n"
    "-- llm:with_structured_output(schema): the model decodes under the schema's grammar and\n"
    "-- the output is the parsed, validated value.\n"
    "function R.with_structured_output(self, schema)\n"
    "  if schema == nil then error('with_structured_output: give a JSON schema (a table or JSON text)') end\n"
    "  return self | catena.parser.json{schema = schema}\n"
    "end\n"
    "\n"
    "-- Tools: a runnable on an arguments object, with a name, a description and a schema.\n"
    "local TOOLS = setmetatable({}, {__mode = 'k'})\n"
    "local topts = {name = true, description = true, schema = true, fn = true}\n"
    "function catena.tool(o)\n"
    "  local where = 'catena.tool'\n"
    "  check_opts(o, topts, where)\n"
    "  local name = o.name\n"
    "  if type(name) ~= 'string' then error(where .. ': name must be a string') end\n"
    "  if o.description ~= nil and type(o.description) ~= 'string' then error(where .. ': description must be a string') end\n"
    "  if type(o.fn) ~= 'function' and not is_runnable(o.fn) then error(where .. ': fn must be a function or a runnable') end\n"
    "  local schema = prim.schema_text(o.schema or '{\"type\":\"object\"}', where .. ' ' .. name)\n"
    "  prim.tool_check(name, o.description, schema, where) -- its name, and a schema catena decodes under\n"
    "  local fn = o.fn\n"
    "  local r = catena.lambda(function(args, config)\n"
    "    local ok, why = prim.validate(schema, args_json(args))\n"
    "    if not ok then error('the arguments do not match the schema of tool ' .. name .. ': ' .. why, 0) end\n"
    "    if is_runnable(fn) then return fn:invoke(args, config) end\n"
    "    return fn(args, config)\n"
    "  end, name)\n"
    "  TOOLS[r] = {name = name, description = o.description or '', schema = schema}\n"
    "  return r\n"
    "end\n"
    "\n"
    "local function tool_spec(t, i, where)\n"
    "  local s = TOOLS[t]\n"
    "  if s ~= nil then return s end\n"
    "  if type(t) == 'table' and type(t.name) == 'string' then\n"
    "    -- a description without a function: {name =, description =, schema =}\n"
    "    local ok, r = pcall(catena.tool, {name = t.name, description = t.description, schema = t.schema, fn = function() end})\n"
    "    if not ok then error(where .. ': tool ' .. i .. ': ' .. tostring(r)) end\n"
    "    return TOOLS[r]\n"
    "  end\n"
    "  error(where .. ': tool ' .. i .. ' is not a catena.tool (nor a {name, description, schema} table)')\n"
    "end\n"
    "\n"
    "local kinds = {human = 'user', user = 'user', ai = 'assistant', assistant = 'assistant', system = 'system', tool = 'tool'}\n"
    "-- The JSON a model writes for tool calls, from a message's tool_calls.\n"
    "local function calls_json(calls)\n"
    "  local parts = {}\n"
    "  for i, c in ipairs(calls) do\n"
    "    parts[i] = '{\"name\":' .. prim.encode(c.name) .. ',\"arguments\":' .. args_json(c.args or c.arguments) .. '}'\n"
    "  end\n"
    "  return '{\"tool_calls\":[' .. table.concat(parts, ',') .. ']}'\n"
    "end\n"
    "-- Chat messages {role, content} for the model from the input: a string, a chat prompt's\n"
    "-- value, or a list of messages (LangChain's {type, content}, {role, content}, or pairs);\n"
    "-- an AI message's tool calls and tool results become text the model reads.\n"
    "local function as_chat(input, where)\n"
    "  local msgs\n"
    "  if type(input) == 'string' then return {{role = 'user', content = input}} end\n"
    "  if type(input) ~= 'table' then error('the input must be a string, a chat prompt or a list of messages', 0) end\n"
    "  if input.type == 'chat' and type(input.messages) == 'table' then msgs = input.messages\n"
    "  elseif input.content ~= nil then msgs = {input}\n"
    "  else msgs = input end\n"
    "  local out = {}\n"
    "  for i, m in ipairs(msgs) do\n"
    "    if type(m) ~= 'table' then error('message ' .. i .. ' is a ' .. type(m), 0) end\n"
    "    local t, c = m.type or m.role or m[1], m.content or m[2]\n"
    "    local role = kinds[t]\n"
    "    if role == nil then error('message ' .. i .. ': its type or role must be human, ai, system, tool, user or assistant', 0) end\n"
    "    if c == nil then c = '' end\n"
    "    if type(c) ~= 'string' then error('message ' .. i .. ': its content must be a string', 0) end\n"
    "    if role == 'assistant' and type(m.tool_calls) == 'table' and #m.tool_calls > 0 then\n"
    "      c = calls_json(m.tool_calls)\n"
    "    elseif role == 'tool' then\n"
    "      role, c = 'user', prim.result_text(m.tool_call_id, c)\n"
    "    end\n"
    "    out[#out + 1] = {role = role, content = c}\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "\n"
    "local bopts = {tool_choice = true, parallel_tool_calls = true}\n"
    "local ncall = 0\n"
    "function R.bind_tools(self, tools, o)\n"
    "  local where = 'bind_tools'\n"
    "  if type(tools) ~= 'table' or #tools == 0 then error(where .. ': give a list of tools (catena.tool{...})') end\n"
    "  o = o or {}\n"
    "  check_opts(o, bopts, where)\n"
    "  local specs, by_name = {}, {}\n"
    "  for i, t in ipairs(tools) do\n"
    "    local s = tool_spec(t, i, where)\n"
    "    if by_name[s.name] then error(where .. ': two tools are named ' .. s.name) end\n"
    "    specs[i], by_name[s.name] = s, s\n"
    "  end\n"
    "  local choice = o.tool_choice or 'auto'\n"
    "  if choice == 'any' then choice = 'required' end\n"
    "  if type(choice) ~= 'string' then error(where .. ': tool_choice must be \"auto\", \"required\", \"none\" or a tool\\'s name') end\n"
    "  if choice ~= 'auto' and choice ~= 'required' and choice ~= 'none' then\n"
    "    if by_name[choice] == nil then error(where .. \": tool_choice '\" .. choice .. \"' is not one of the tools\") end\n"
    "    specs = {by_name[choice]}\n"
    "  end\n"
    "  local model = self\n"
    "  if choice == 'none' then\n"
    "    return catena.lambda(function(input, config)\n"
    "      local out = model:invoke({type = 'chat', messages = as_chat(input, where)}, config)\n"
    "      if type(out) == 'string' then out = {type = 'ai', content = out} end\n"
    "      out.tool_calls = {}\n"
    "      return out\n"
    "    end, 'bind_tools')\n"
    "  end\n"
    "  if o.parallel_tool_calls ~= nil and type(o.parallel_tool_calls) ~= 'boolean' then error(where .. ': parallel_tool_calls must be true or false') end\n"
    "  local schema = prim.reply_schema(specs, choice == 'auto', (o.parallel_tool_calls == false or choice ~= 'auto' and choice ~= 'required') and 1 or 0)\n"
    "  local gen = model:with{grammar = prim.gbnf(schema, where)}\n"
    "  local sys = prim.tools_prompt(specs, choice == 'auto')\n"
    "  return catena.lambda(function(input, config)\n"
    "    local msgs = as_chat(input, where)\n"
    "    if msgs[1].role == 'system' then\n"
    "      msgs[1] = {role = 'system', content = msgs[1].content .. '\\n\\n' .. sys}\n"
    "    else\n"
    "      table.insert(msgs, 1, {role = 'system', content = sys})\n"
    "    end\n"
    "    local out = gen:invoke({type = 'chat', messages = msgs}, config)\n"
    "    local msg = type(out) == 'table' and out or {type = 'ai', content = out}\n"
    "    local text = msg.content\n"
    "    if type(text) ~= 'string' then error('the model gave no text', 0) end\n"
    "    local ok, v = pcall(prim.decode, text)\n"
    "    if not ok then\n"
    "      local meta = msg.response_metadata\n"
    "      if type(meta) == 'table' and meta.finish_reason == 'length' then\n"
    "        error('the reply ended at max_tokens before its JSON did; give the model a larger max_tokens', 0)\n"
    "      end\n"
    "      error('the reply is not JSON: ' .. tostring(v) .. ' (it ends with: ' .. text:sub(-60) .. ')', 0)\n"
    "    end\n"
    "    local okv, why = prim.validate(schema, text)\n"
    "    if not okv then error('the reply does not match the tools: ' .. why, 0) end\n"
    "    local res = {type = 'ai', content = '', tool_calls = {}, response_metadata = msg.response_metadata, usage_metadata = msg.usage_metadata}\n"
    "    if v.response ~= nil then\n"
    "      res.content = v.response\n"
    "    else\n"
    "      for i, c in ipairs(v.tool_calls) do\n"
    "        ncall = ncall + 1\n"
    "        res.tool_calls[i] = {type = 'tool_call', name = c.name, args = c.arguments, id = 'call_' .. ncall}\n"
    "      end\n"
    "    end\n"
    "    return res\n"
    "  end, 'bind_tools')\n"
    "end\n"
    "\n"
    "-- A loop that runs the tools the model calls and gives it their results, until it answers.\n"
    "local lopts = {model = true, tools = true, max_steps = true, tool_choice = true, parallel_tool_calls = true}\n"
    "function catena.tool_loop(o)\n"
    "  local where = 'catena.tool_loop'\n"
    "  check_opts(o, lopts, where)\n"
    "  if not is_runnable(o.model) then error(where .. ': model must be a runnable (a model, or one with bind_tools)') end\n"
    "  if type(o.tools) ~= 'table' or #o.tools == 0 then error(where .. ': give tools, a list of catena.tool{...}') end\n"
    "  local by_name = {}\n"
    "  for i, t in ipairs(o.tools) do\n"
    "    local s = TOOLS[t]\n"
    "    if s == nil then error(where .. ': tool ' .. i .. ' is not a catena.tool') end\n"
    "    by_name[s.name] = t\n"
    "  end\n"
    "  local steps = o.max_steps or 8\n"
    "  if math.type(steps) ~= 'integer' or steps < 1 or steps > 64 then error(where .. ': max_steps must be an integer from 1 to 64') end\n"
    "  -- a model node gets the tools bound here; a runnable that already answers with tool calls is used as it is\n"
    "  local model = o.model\n"
    "  if prim.is_model(model) then model = model:bind_tools(o.tools, {tool_choice = o.tool_choice, parallel_tool_calls = o.parallel_tool_calls}) end\n"
    "  return catena.lambda(function(input, config)\n"
    "    local msgs = as_chat(input, where)\n"
    "    for _ = 1, steps do\n"
    "      local ai = model:invoke(msgs, config)\n"
    "      if type(ai) == 'string' then return {type = 'ai', content = ai} end\n"
    "      if type(ai) ~= 'table' then error('the model gave a ' .. type(ai) .. ', not a message', 0) end\n"
    "      if type(ai.tool_calls) ~= 'table' or #ai.tool_calls == 0 then return ai end\n"
    "      msgs[#msgs + 1] = {role = 'assistant', content = '', tool_calls = ai.tool_calls}\n"
    "      for _, c in ipairs(ai.tool_calls) do\n"
    "        local t = by_name[c.name]\n"
    "        local content\n"
    "        if t == nil then\n"
    "          content = 'error: there is no tool ' .. tostring(c.name)\n"
    "        else\n"
    "          local ok, r = pcall(t.invoke, t, c.args or c.arguments or {}, config)\n"
    "          if ok then content = type(r) == 'string' and r or prim.encode(r)\n"
    "          else content = 'error: ' .. tostring(r) end\n"
    "        end\n"
    "        msgs[#msgs + 1] = {role = 'tool', content = content, tool_call_id = c.id, name = c.name}\n"
    "      end\n"
    "    end\n"
    "    error('no answer after ' .. steps .. ' steps (max_steps)', 0)\n"
    "  end, 'tool_loop')\n"
    "end\n"
    "\n";

void ctn_l_open_tools(lua_State *L) {
    static const luaL_Reg prims[] = {{"fail", t_fail},         {"schema_text", t_schema_text},
                                     {"gbnf", t_gbnf},         {"validate", t_validate},
                                     {"encode", t_encode},     {"decode", t_decode},
                                     {"is_model", t_is_model}, {"tool_check", t_tool_check},
                                     {"reply_schema", t_reply_schema},
                                     {"tools_prompt", t_tools_prompt},
                                     {"result_text", t_result_text},
                                     {NULL, NULL}};
    ctn_l_run_glue(L, glue, sizeof glue - 1, "=catena.tools", prims);
}
