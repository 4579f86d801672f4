-- Specs for the components: prompts (string and chat), the model node on the shared engine
-- (stories260K from ../shared), and the output parsers, one-shot and streaming.
local catena = require("catena")
local SHARED = os.getenv("CTN_SHARED") or "../shared"
local MODEL = SHARED .. "/models/stories260K.gguf"

describe("prompt", function()
  it("fills variables and escapes braces", function()
    local p = catena.prompt("Tell {who} about {{braces}} and {topic}.")
    assert.are.equal("Tell Ann about {braces} and RoPE.", p:invoke({ who = "Ann", topic = "RoPE" }))
  end)

  it("takes a single value for a single variable", function()
    assert.are.equal("Q: why?", catena.prompt("Q: {q}"):invoke("why?"))
  end)

  it("names a missing variable and the node", function()
    local chain = (catena.prompt("Hi {name}") | catena.parser.str()):named("greet")
    local ok, err = pcall(function() return chain:invoke({ nam = "x" }) end)
    assert.is_false(ok)
    assert.are.equal("missing variable 'name'", err.message)
    assert.are.equal("greet > prompt", err.path)
  end)

  it("rejects a bad template when built", function()
    local ok, err = pcall(catena.prompt, "unclosed {brace")
    assert.is_false(ok)
    assert.matches("prompt: ", tostring(err))
  end)

  it("builds chat values with placeholders", function()
    local chat = catena.prompt.chat{
      { "system", "You are {persona}." },
      { "placeholder", "history" },
      { "user", "{question}" },
    }
    local v = chat:invoke({ persona = "brief", question = "Why?",
                            history = { { role = "user", content = "Hi" }, { "assistant", "Hello" } } })
    assert.are.equal("chat", v.type)
    assert.are.same({ role = "system", content = "You are brief." }, v.messages[1])
    assert.are.same({ role = "assistant", content = "Hello" }, v.messages[3])
    assert.are.same({ role = "user", content = "Why?" }, v.messages[4])
    local ok, err = pcall(catena.prompt.chat, { { "wizard", "x" } })
    assert.is_false(ok)
    assert.matches("unknown role 'wizard'", tostring(err))
  end)
end)

describe("parsers", function()
  it("str passes text through", function()
    assert.are.equal("abc", catena.parser.str():invoke("abc"))
  end)

  it("json finds the JSON in an answer", function()
    local v = catena.parser.json():invoke('Here you go:\n```json\n{"name": "x", "n": [1, 2.5]}\n```')
    assert.are.equal("x", v.name)
    assert.are.equal(1, v.n[1])
    assert.are.equal("float", math.type(v.n[2]))
    local ok, err = pcall(function() return catena.parser.json():invoke("no json here") end)
    assert.is_false(ok)
    assert.matches("no JSON", err.message)
  end)

  it("json says where bad JSON goes wrong: line, column and byte of the whole text", function()
    local ok, err = pcall(function() return catena.parser.json():invoke('{"a": 1,, "b": 2}') end)
    assert.is_false(ok)
    assert.matches("line 1, column 9 %(byte 8%)", err.message)
    ok, err = pcall(function()
      return catena.parser.json():invoke('The answer:\n\n  {"a": [1, 2}\n')
    end)
    assert.is_false(ok)
    assert.matches("line 3, column 14 %(byte 26%)", err.message)
    ok, err = pcall(function() return catena.parser.json():invoke('Sure: {"a": 1') end)
    assert.is_false(ok)
    assert.matches("line 1, column 14 %(byte 13%)", err.message)
    ok, err = pcall(function() return catena.parser.json():invoke("no json here") end)
    assert.matches("no JSON value found in the text %(12 bytes, no '{' or '%['%)", err.message)
  end)

  it("json streams partial objects as members complete", function()
    local pieces = { 'Sure: {"a', '": 1, "b": [t', 'rue, 2', '], "c": "x"}' }
    local gen = catena.lambda(function(_)
      return table.concat(pieces)
    end)
    -- a producer that streams: a lambda cannot stream yet, so feed through a passthrough of
    -- a streamed input using the model-free path: parse one-shot and compare
    local whole = catena.parser.json():invoke(table.concat(pieces))
    assert.are.same({ a = 1, b = { true, 2 }, c = "x" }, whole)
    local seen = {}
    for snap in (gen | catena.parser.json()):stream("x") do seen[#seen + 1] = snap end
    assert.are.same({ a = 1, b = { true, 2 }, c = "x" }, seen[#seen])
  end)

  it("list parses numbered, bulleted and comma lists", function()
    assert.are.same({ "a", "b", "c" }, catena.parser.list():invoke("1. a\n2. b\n3. c"))
    assert.are.same({ "x", "y" }, catena.parser.list():invoke("- x\n- y"))
    assert.are.same({ "red", "green", "blue" }, catena.parser.list():invoke("red, green, blue"))
  end)

  it("regex names its captures", function()
    local p = catena.parser.regex{ pattern = "Answer: (\\w+) \\((\\d+)%\\)", keys = { "answer", "confidence" } }
    assert.are.same({ answer = "yes", confidence = "90" }, p:invoke("Answer: yes (90%)"))
    local ok, err = pcall(function() return p:invoke("nothing") end)
    assert.is_false(ok)
    assert.matches("no match", err.message)
    ok, err = pcall(catena.parser.regex, { pattern = "(unclosed" })
    assert.is_false(ok)
  end)
end)

describe("model", function()
  local llm = catena.model{ path = MODEL }

  it("loads once per path", function()
    local again = catena.model{ path = MODEL }
    assert.is_truthy(again)
    -- different settings for a loaded model are refused, naming the setting
    local ok, err = pcall(catena.model, { path = MODEL, threads = 1, ctx = 64 })
    assert.is_false(ok)
    assert.matches("ctx 64 was asked, but .* is already loaded with the default ctx", err.message)
  end)

  it("names unknown options and settings, and the nearest known one", function()
    local ok, err = pcall(catena.model, { path = MODEL, ctxx = 64 })
    assert.is_false(ok)
    assert.matches("catena.model: unknown option 'ctxx' %(did you mean 'ctx'%?%)", err)
    ok, err = pcall(catena.model, { path = MODEL, zzz = 1 })
    assert.matches("unknown option 'zzz' %(options: path, ctx, threads, kv_memory", err)
    ok, err = pcall(function() return llm:with{ max_token = 3 } end)
    assert.is_false(ok)
    assert.matches("with{...}: unknown setting 'max_token' %(did you mean 'max_tokens'%?%)", err)
    ok, err = pcall(function() return llm:with{ temprature = 0 } end)
    assert.matches("did you mean 'temperature'", err)
    ok, err = pcall(function() return llm:with{ ctx = 64 } end)
    assert.matches("setting 'ctx' is the model's, not one run's", err)
    ok, err = pcall(function() return llm:with{ user_id = 7 } end)
    assert.matches("unknown setting 'user_id' %(a chain's own keys go under configurable", err)
    ok, err = pcall(function() return llm:invoke("Once", { max_tokenz = 3 }) end)
    assert.matches("config: unknown setting 'max_tokenz' %(did you mean 'max_tokens'%?%)", err)
    ok, err = pcall(function() return llm:batch({ "a" }, { max_concurency = 2 }) end)
    assert.matches("batch: unknown option 'max_concurency' %(did you mean 'max_concurrency'%?%)", err)
    ok, err = pcall(function() return llm:with_retry{ attempt = 2 } end)
    assert.matches("with_retry: unknown option 'attempt' %(did you mean 'attempts'%?%)", err)
    ok, err = pcall(catena.parser.regex, { patern = "x" })
    assert.matches("parser.regex: unknown option 'patern' %(did you mean 'pattern'%?%)", err)
    ok, err = pcall(catena.router, { key = "k", routes = {}, defualt = llm })
    assert.matches("unknown option 'defualt' %(did you mean 'default'%?%)", err)
    ok, err = pcall(catena.document, { page_content = "x", metdata = {} })
    assert.matches("document{...}: unknown option 'metdata' %(did you mean 'metadata'%?%)", err)
  end)

  it("config.callbacks.on_stream sees the model's tokens under invoke and batch too", function()
    local n = 0
    local cb = { on_stream = function(ev) if ev.name == "model" then n = n + 1 end end }
    local m4 = llm:with{ max_tokens = 4, ignore_eos = true }
    local out = m4:invoke("Once", { callbacks = cb })
    assert.are.equal(4, n)
    assert.are.equal(m4:invoke("Once"), out) -- the same output as without callbacks
    n = 0
    llm:with{ max_tokens = 3, ignore_eos = true }:batch({ "Once", "Lily" }, nil, { callbacks = cb })
    assert.are.equal(6, n)
  end)

  it("assign streams as parallel: the input's keys first, then each branch's chunks", function()
    local a = catena.assign{
      story = catena.prompt("Once {q}") | llm:with{ max_tokens = 6, ignore_eos = true } | catena.parser.str(),
      n = function(x) return #x.q end,
    }
    local chunks, merged = {}, {}
    for ch in a:stream({ q = "upon", keep = 1 }) do
      chunks[#chunks + 1] = ch
      for k, v in pairs(ch) do merged[k] = type(v) == "string" and (merged[k] or "") .. v or v end
    end
    assert.are.same({ q = "upon", keep = 1 }, chunks[1])
    assert.is_true(#chunks >= 1 + 6) -- one chunk per token of the story, not one for it all
    assert.are.same(a:invoke({ q = "upon", keep = 1 }), merged)
  end)

  it("traces put every node of an assign's model branch under its real parent", function()
    local a = catena.assign{
      story = catena.pick("q") | llm:with{ max_tokens = 2 } | catena.parser.str(),
      n = function(x) return #x.q end,
    }
    local name, parent = {}, {}
    for ev in a:stream_events({ q = "Once" }) do
      if ev.event == "start" then name[ev.run_id], parent[ev.run_id] = ev.name, ev.parent_id end
    end
    local function parent_of(n)
      for id, nm in pairs(name) do if nm == n then return name[parent[id]] end end
    end
    assert.are.equal("assign", parent_of("lambda"))
    assert.are.equal("assign", parent_of("sequence"))
    assert.are.equal("sequence", parent_of("parser")) -- not the lambda branch
    assert.are.equal("sequence", parent_of("bind"))
    assert.are.equal("bind", parent_of("model"))
  end)

  it("checks a history's roles where the prompt renders, and counts messages from 1", function()
    local p = catena.prompt.chat{ { "system", "be brief" }, { "placeholder", "history" }, { "user", "{q}" } }
    local ok, err = pcall(function()
      return p:invoke({ q = "hi", history = { { role = "user", content = "a" }, { role = "wizard", content = "b" } } })
    end)
    assert.is_false(ok)
    assert.are.equal("placeholder 'history', message 2: unknown role 'wizard' (system, user or assistant)",
                     err.message)
    -- a chat value given to the model directly: its template names the message from 1 too
    local chat = { type = "chat", messages = { { role = "user", content = "a" }, { role = "x", content = "b" } } }
    local chatml = catena.model{ path = MODEL, chat_template = "chatml" }
    ok, err = pcall(function() return chatml:with{ max_tokens = 1 }:invoke(chat) end)
    assert.is_false(ok)
    assert.matches("message 2 has role 'x'", err.message)
  end)

  it("output = 'message' carries finish reason and token usage; parsers still give text", function()
    local mm = catena.model{ path = MODEL, output = "message" }
    local p = string.rep("Once upon a time there was a girl. ", 6)
    local m3 = mm:with{ max_tokens = 3, ignore_eos = true }
    local a = m3:invoke(p)
    assert.are.equal("ai", a.type)
    assert.are.equal("length", a.response_metadata.finish_reason)
    assert.are.equal("stories260K.gguf", a.response_metadata.model_name)
    assert.are.equal(3, a.usage_metadata.output_tokens)
    assert.is_true(a.usage_metadata.input_tokens > 32)
    assert.are.equal(a.usage_metadata.input_tokens + 3, a.usage_metadata.total_tokens)
    local b = m3:invoke(p) -- the same prompt again: its full blocks come from the prefix cache
    assert.is_true(b.usage_metadata.input_token_details.cache_read >= 16)
    -- the text model's text, and parsers give plain text
    assert.are.equal(llm:with{ max_tokens = 3, ignore_eos = true }:invoke(p), a.content)
    assert.are.equal(a.content, (m3 | catena.parser.str()):invoke(p))
    -- an answer goes back into a chat history as it came
    local chat = catena.prompt.chat{ { "placeholder", "history" }, { "user", "{q}" } }
    local msgs = chat:invoke({ q = "more", history = { { type = "human", content = "hi" }, a } }).messages
    assert.are.same({ role = "user", content = "hi" }, msgs[1])
    assert.are.same({ role = "assistant", content = a.content }, msgs[2])
    local ok, err = pcall(catena.model, { path = MODEL, output = "json" })
    assert.is_false(ok)
    assert.matches('output must be "text"', err)
  end)

  it("out-of-range settings give the real range", function()
    for _, c in ipairs{
      { { temperature = -1 }, "'temperature' must be a number from 0 to 100, not %-1" },
      { { top_p = 2 }, "'top_p' must be a number from 0 to 1, not 2" },
      { { top_k = -3 }, "'top_k' must be an integer from 0 to 2147483647, not %-3" },
      { { min_p = -0.5 }, "'min_p' must be a number from 0 to 1, not %-0.5" },
      { { temperature = 1e308 }, "'temperature' must be a number from 0 to 100, not 1e%+308" },
    } do
      local ok, err = pcall(function() return llm:with(c[1]):invoke("Once") end)
      assert.is_false(ok)
      assert.matches(c[2], err.message)
    end
  end)

  it("generates at most 256 tokens when max_tokens is not set (as catena batch)", function()
    local s0 = catena.stats(llm)
    llm:with{ ignore_eos = true }:invoke("Once")
    local s1 = catena.stats(llm)
    -- the first token comes with the prefill step, the other 255 from decode steps
    assert.are.equal(255, s1.decode_tokens - s0.decode_tokens)
    llm:with{ ignore_eos = true, max_tokens = -1 }:invoke("Once") -- no limit: the context
    local s2 = catena.stats(llm)
    assert.is_true(s2.decode_tokens - s1.decode_tokens > 1000)
  end)

  it("says what is wrong with a file once, without repeated prefixes", function()
    local path = SHARED .. "/vocab/ggml-vocab-llama-bpe.gguf" -- a vocabulary, no weights
    local ok, err = pcall(catena.model, { path = path })
    assert.is_false(ok)
    assert.are.equal("model: " .. path .. ": tensor token_embd.weight is missing", tostring(err))
  end)

  it("names a missing file", function()
    local ok, err = pcall(catena.model, { path = "/nonexistent/m.gguf" })
    assert.is_false(ok)
    assert.matches("/nonexistent/m.gguf", err.message)
  end)

  it("generates greedily, the same invoked, streamed or batched", function()
    local chain = catena.prompt("Once upon a time, {who}") | llm:with{ max_tokens = 12 } | catena.parser.str()
    local a = chain:invoke({ who = "a cat" })
    assert.is_true(#a > 0)
    local s = {}
    for piece in chain:stream({ who = "a cat" }) do s[#s + 1] = piece end
    assert.are.equal(a, table.concat(s))
    local many = chain:batch({ { who = "a cat" }, { who = "a dog" }, { who = "a cat" } })
    assert.are.equal(a, many[1])
    assert.are.equal(a, many[3])
  end)

  it("honours stop strings and max_tokens from with{}", function()
    local base = (llm:with{ max_tokens = 30 }):invoke("Once upon a time")
    local cut = base:find("%.")
    if cut then
      local stopped = (llm:with{ max_tokens = 30, stop = "." }):invoke("Once upon a time")
      assert.are.equal(base:sub(1, cut - 1), stopped)
    end
    local ok, err = pcall(function() return (llm:with{ max_tokens = "many" }):invoke("x") end)
    assert.is_false(ok)
    assert.matches("max_tokens", err.message)
  end)

  it("checks settings with the one table of limits (docs/settings.md)", function()
    local ok, err = pcall(function() return (llm:with{ top_p = 2 }):invoke("x") end)
    assert.is_false(ok)
    assert.matches("setting 'top_p' must be a number from 0 to 1, not 2", err.message, 1, true)
    ok, err = pcall(function() return (llm:with{ stop = { "a", 3 } }):invoke("x") end)
    assert.is_false(ok)
    assert.matches("item 2 is an integer", err.message, 1, true)
    -- max_tokens 0 is the prompt only, as everywhere else: no text
    assert.are.equal("", (llm:with{ max_tokens = 0 }):invoke("Once upon a time"))
    ok, err = pcall(catena.model, { path = MODEL, threads = 0 })
    assert.is_false(ok)
    assert.matches("setting 'threads' must be an integer from 1 to 1024, not 0", tostring(err.message or err), 1, true)
    ok, err = pcall(catena.model, { path = MODEL, kv_memory = "lots" })
    assert.is_false(ok)
    assert.matches("setting 'kv_memory' must be a size in bytes", tostring(err.message or err), 1, true)
  end)

  it("renders chat prompts with a named template, and says when there is none", function()
    local chat = catena.prompt.chat{ { "user", "{q}" } }
    local ok, err = pcall(function() return (chat | llm:with{ max_tokens = 3 }):invoke({ q = "hi" }) end)
    assert.is_false(ok)
    assert.matches("no chat template catena recognises", err.message)
    local ml = catena.model{ path = MODEL, chat_template = function(msgs)
      return "Once upon a time, " .. msgs[#msgs].content
    end }
    local out = (chat | ml:with{ max_tokens = 8 }):invoke({ q = "a cat" })
    local direct = (llm:with{ max_tokens = 8 }):invoke("Once upon a time, a cat")
    assert.are.equal(direct, out)
  end)

  it("a timeout cancels the generation", function()
    local ok, err = pcall(function()
      return (llm:with{ max_tokens = 100000 }):with_timeout(1):invoke("Once upon a time")
    end)
    assert.is_false(ok)
    assert.are.equal("timed out after 1 ms", err.message)
  end)

  it("reports the engine's batching", function()
    local st = catena.stats(llm)
    assert.is_true(st.steps > 0)
    assert.is_true(st.max_batch >= 1)
    -- a cancelled request leaves the engine at its next step
    for _ = 1, 200 do
      if catena.stats(llm).running == 0 then break end
      catena.sleep(10)
    end
    assert.are.equal(0, catena.stats(llm).running)
  end)
end)
