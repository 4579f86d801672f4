-- Specs for structured output and tools (stdlib/components.c's JSON and enum parsers with
-- their grammars, the grammar a sequence binds from a parser to the model before it, and
-- lua/l_tools.c: with_structured_output, bind_tools, catena.tool, catena.tool_loop). The
-- model is stories260K from ../shared: it writes children's stories, never JSON, so every
-- output that parses here parses because of the grammar.
local catena = require("catena")
local SHARED = os.getenv("CTN_SHARED") or "../shared"
local MODEL = SHARED .. "/models/stories260K.gguf"

local function raised(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return type(err) == "table" and err.message or tostring(err)
end

local function const(text) return catena.lambda(function() return text end) end

local llm = catena.model{path = MODEL}
local chat = catena.model{path = MODEL, chat_template = "chatml"}

local PERSON = [[{"type": "object", "properties": {
  "name": {"type": "string", "maxLength": 12},
  "mood": {"enum": ["happy", "sad", "sleepy"]},
  "kind": {"type": "boolean"},
  "pets": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3}},
  "required": ["name", "mood", "kind"]}]]

describe("catena.parser.json with a schema", function()
  it("makes the model before it decode under the schema: every output parses and validates", function()
    local chain = llm:with{temperature = 1, max_tokens = 200} | catena.parser.json{schema = PERSON}
    for seed = 1, 12 do
      local v = chain:invoke("Once upon a time", {seed = seed})
      assert.are.equal("table", type(v))
      assert.are.equal("string", type(v.name))
      assert.truthy(utf8.len(v.name) <= 12)
      assert.truthy(v.mood == "happy" or v.mood == "sad" or v.mood == "sleepy", v.mood)
      assert.are.equal("boolean", type(v.kind))
      if v.pets ~= nil then assert.truthy(#v.pets <= 3) end
    end
  end)

  it("without the parser the same model writes a story, not JSON", function()
    local out = llm:with{max_tokens = 30}:invoke("Once upon a time")
    assert.is_nil(out:match("^%s*{"))
    assert.truthy(raised(function() return (const(out) | catena.parser.json{schema = PERSON}):invoke("x") end))
  end)

  it("streams partial values and ends with the validated one", function()
    local chain = llm:with{temperature = 1, max_tokens = 200, seed = 3} | catena.parser.json{schema = PERSON}
    local last
    for v in chain:stream("Once upon a time") do last = v end
    assert.are.same(chain:invoke("Once upon a time"), last)
  end)

  it("takes the schema as a table (keys sorted) or as JSON text (keys as written)", function()
    local t = catena.parser.json{schema = {type = "object", properties = {b = {type = "integer"}, a = {type = "boolean"}},
                                            required = {"a", "b"}}}
    local v = (llm:with{temperature = 1, max_tokens = 60, seed = 5} | t):invoke("x")
    assert.are.equal("boolean", type(v.a))
    assert.are.equal("integer", math.type(v.b))
  end)

  it("leaves a grammar the model was given itself", function()
    local chain = llm:with{grammar = 'root ::= "{\\"name\\": \\"Lily\\", \\"mood\\": \\"sad\\", \\"kind\\": true}"'}
                  | catena.parser.json{schema = PERSON}
    assert.are.same({name = "Lily", mood = "sad", kind = true}, chain:invoke("x"))
  end)

  it("checks values that do not come from a model, naming where they fail", function()
    local p = catena.parser.json{schema = PERSON}
    assert.are.same({name = "Tom", mood = "happy", kind = false},
                    (const('Here: {"name": "Tom", "mood": "happy", "kind": false} done') | p):invoke("x"))
    local msg = raised(function() return (const('{"name": "Tom", "mood": "angry", "kind": false}') | p):invoke("x") end)
    assert.truthy(msg:find("does not match the parser's schema", 1, true), msg)
    assert.truthy(msg:find("mood", 1, true), msg)
    msg = raised(function() return (const('{"name": "Tom", "mood": "sad"}') | p):invoke("x") end)
    assert.truthy(msg:find("kind", 1, true), msg)
  end)

  it("refuses a schema it cannot decode under, naming the keyword", function()
    local msg = raised(function() return catena.parser.json{schema = '{"type": "string", "not": {"const": "x"}}'} end)
    assert.truthy(msg:find("not", 1, true), msg)
    msg = raised(function() return catena.parser.json{schema = "{nope"} end)
    assert.truthy(msg:find("catena.parser.json", 1, true), msg)
    msg = raised(function() return catena.parser.json{schemas = {}} end)
    assert.truthy(msg:find("unknown option 'schemas'", 1, true), msg)
  end)

  it("without a schema still makes the model write a JSON object or array", function()
    local chain = llm:with{temperature = 1, max_tokens = 120} | catena.parser.json()
    local parsed = 0
    for seed = 1, 6 do
      local ok, v = pcall(chain.invoke, chain, "Once upon a time", {seed = seed})
      -- unbounded: a long string may run past max_tokens; what ends must be JSON
      if ok then parsed = parsed + 1; assert.are.equal("table", type(v)) end
    end
    assert.truthy(parsed >= 1)
  end)
end)

describe("with_structured_output", function()
  it("is the model followed by the schema's JSON parser", function()
    local s = llm:with{temperature = 1, max_tokens = 200}:with_structured_output(PERSON)
    for seed = 20, 25 do
      local v = s:invoke("Once upon a time", {seed = seed})
      assert.truthy(v.mood == "happy" or v.mood == "sad" or v.mood == "sleepy")
    end
    assert.truthy(raised(function() return llm:with_structured_output() end):find("give a JSON schema", 1, true))
  end)
end)

describe("catena.parser.enum", function()
  it("makes the model answer with one of its options", function()
    local chain = llm:with{temperature = 1} | catena.parser.enum{"yes", "no", "don't know"}
    local seen = {}
    for seed = 1, 16 do
      local v = chain:invoke("Is the sky blue?", {seed = seed})
      assert.truthy(v == "yes" or v == "no" or v == "don't know", v)
      seen[v] = true
    end
    assert.truthy(next(seen) ~= nil)
  end)

  it("strips white space, and names the options when the text is none of them", function()
    local p = catena.parser.enum{"red", "green"}
    assert.are.equal("green", (const("  green\n") | p):invoke("x"))
    local msg = raised(function() return (const("blue") | p):invoke("x") end)
    assert.truthy(msg:find("'blue' is not one of the options: red, green", 1, true), msg)
    assert.truthy(raised(function() return catena.parser.enum{} end):find("list of options", 1, true))
    assert.truthy(raised(function() return catena.parser.enum{"a", "a"} end):find("both", 1, true))
    assert.truthy(raised(function() return catena.parser.enum{" a"} end):find("white space", 1, true))
    assert.truthy(raised(function() return catena.parser.enum{"a", 2} end):find("option 2", 1, true))
  end)
end)

describe("format_instructions", function()
  it("tells the model the format each parser reads", function()
    local j = catena.parser.json{schema = PERSON}:format_instructions()
    assert.truthy(j:find("JSON Schema", 1, true))
    assert.truthy(j:find('"mood"', 1, true))
    assert.truthy(catena.parser.json():format_instructions():find("JSON object", 1, true))
    assert.truthy(catena.parser.list():format_instructions():find("commas", 1, true))
    assert.truthy(catena.parser.enum{"a", "b"}:format_instructions():find("a, b", 1, true))
    assert.truthy(raised(function() return catena.parser.str():format_instructions() end):find("no format instructions", 1, true))
    assert.truthy(raised(function() return llm:format_instructions() end):find("not a parser", 1, true))
  end)
end)

local weather = catena.tool{
  name = "weather", description = "The weather in a city.",
  schema = {type = "object", properties = {city = {enum = {"Paris", "Oslo", "Lima"}}, days = {type = "integer", minimum = 1, maximum = 7}},
            required = {"city", "days"}},
  fn = function(args) return args.city .. ": sunny for " .. args.days .. " days" end,
}
local add = catena.tool{
  name = "add", description = "Adds two small numbers.",
  schema = '{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}, "b": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["a", "b"]}',
  fn = function(args) return {sum = args.a + args.b} end,
}

describe("catena.tool", function()
  it("is a runnable on its arguments, checked against its schema", function()
    assert.are.equal("Oslo: sunny for 2 days", weather:invoke({city = "Oslo", days = 2}))
    assert.are.same({sum = 5}, add:invoke({a = 2, b = 3}))
    local msg = raised(function() return weather:invoke({city = "Rome", days = 2}) end)
    assert.truthy(msg:find("the arguments do not match the schema of tool weather", 1, true), msg)
    assert.truthy(raised(function() return catena.tool{name = "bad name", fn = print} end):find("must be 1 to 64", 1, true))
    assert.truthy(raised(function() return catena.tool{name = "x", fn = print, schema = {type = "string"}} end):find("describe an object", 1, true))
    assert.truthy(raised(function() return catena.tool{name = "x", fn = 5} end):find("fn must be", 1, true))
  end)
end)

describe("bind_tools", function()
  it("makes the model call a tool with arguments valid for it", function()
    local m = chat:with{temperature = 1, max_tokens = 400}:bind_tools({weather, add}, {tool_choice = "required", parallel_tool_calls = false})
    for seed = 1, 8 do
      local ai = m:invoke("What is the weather in Paris?", {seed = seed})
      assert.are.equal("ai", ai.type)
      assert.truthy(#ai.tool_calls >= 1)
      for _, c in ipairs(ai.tool_calls) do
        assert.are.equal("tool_call", c.type)
        assert.truthy(c.id:match("^call_%d+$"))
        if c.name == "weather" then
          assert.truthy(weather:invoke(c.args):find("sunny", 1, true))
        else
          assert.are.equal("add", c.name)
          assert.are.equal("number", type(add:invoke(c.args).sum))
        end
      end
    end
  end)

  it("calls the tool that tool_choice names", function()
    local m = chat:with{temperature = 1, max_tokens = 400}:bind_tools({weather, add}, {tool_choice = "add", parallel_tool_calls = false})
    for seed = 1, 4 do
      for _, c in ipairs(m:invoke("Add 2 and 3.", {seed = seed}).tool_calls) do assert.are.equal("add", c.name) end
    end
  end)

  it("refuses what it cannot bind", function()
    assert.truthy(raised(function() return chat:bind_tools({}) end):find("list of tools", 1, true))
    assert.truthy(raised(function() return chat:bind_tools({weather}, {tool_choice = "nope"}) end):find("not one of the tools", 1, true))
    assert.truthy(raised(function() return chat:bind_tools({weather, weather}) end):find("two tools", 1, true))
    assert.truthy(raised(function() return chat:bind_tools({5}) end):find("tool 1", 1, true))
    assert.truthy(raised(function() return chat:bind_tools({weather}, {choice = "auto"}) end):find("unknown option", 1, true))
  end)
end)

describe("catena.tool_loop", function()
  it("runs the tools the model calls and feeds the results back until it answers", function()
    local seen = {}
    local fake = catena.lambda(function(msgs)
      seen[#seen + 1] = msgs
      if #seen == 1 then
        return {type = "ai", content = "", tool_calls = {{type = "tool_call", id = "call_a", name = "add", args = {a = 40, b = 2}},
                                                          {type = "tool_call", id = "call_b", name = "weather", args = {city = "Lima", days = 1}}}}
      end
      return {type = "ai", content = "The sum is 42."}
    end)
    local loop = catena.tool_loop{model = fake, tools = {weather, add}}
    local out = loop:invoke("What is 40 + 2?")
    assert.are.equal("The sum is 42.", out.content)
    assert.are.equal(2, #seen)
    local second = seen[2]
    assert.are.equal("user", second[1].role)
    assert.are.equal("assistant", second[2].role)
    assert.are.equal("tool", second[3].role)
    assert.are.equal('{"sum":42}', second[3].content)
    assert.are.equal("call_a", second[3].tool_call_id)
    assert.are.equal("Lima: sunny for 1 days", second[4].content)
  end)

  it("gives a tool's error to the model and stops after max_steps", function()
    local n = 0
    local fake = catena.lambda(function(msgs)
      n = n + 1
      return {type = "ai", content = "", tool_calls = {{id = "c" .. n, name = "weather", args = {city = "Rome", days = 1}}}}
    end)
    local loop = catena.tool_loop{model = fake, tools = {weather}, max_steps = 3}
    local msg = raised(function() return loop:invoke("x") end)
    assert.truthy(msg:find("no answer after 3 steps", 1, true), msg)
    assert.are.equal(3, n)
  end)

  it("binds the tools to a model and the calls it decodes run", function()
    local ran = 0
    local t = catena.tool{name = "count", schema = {type = "object", properties = {n = {type = "integer", minimum = 0, maximum = 9}}, required = {"n"}},
                          fn = function(a) ran = ran + 1; return tostring(a.n) end}
    local loop = catena.tool_loop{model = chat:with{temperature = 1, max_tokens = 400, seed = 1}, tools = {t},
                                  tool_choice = "required", parallel_tool_calls = false, max_steps = 2}
    local msg = raised(function() return loop:invoke("Count.") end)
    assert.truthy(msg:find("no answer after 2 steps", 1, true), msg)
    assert.truthy(ran >= 2)
  end)
end)
