-- Specs for the remote model nodes (catena.remote, catena.remote_embeddings; stdlib/remote.c):
-- against `catena serve` on 127.0.0.1 (the same text as the local model node for the same
-- prompt and settings, streamed chunks, usage, message mode, settings errors), and against
-- a fault-injecting server (tests/tools/fault_server.mjs: slow first byte, a connection
-- dropped mid-stream, 500s, 429 with Retry-After, malformed SSE, oversized bodies, a
-- cancelled run's connection). Every server is started here and killed in teardown; every
-- wait is bounded.
local catena = require("catena")
local SHARED = os.getenv("CTN_SHARED") or "../shared"
local MODEL = SHARED .. "/models/stories260K.gguf"
local CATENA = os.getenv("CATENA") or "build/catena"

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Wall-clock seconds (os.clock counts CPU time).
local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

local function sleep(s) os.execute("sleep " .. s) end

-- Starts cmd in the background with its output in log; returns its pid and the port of the
-- first "listening on http://127.0.0.1:PORT" line (waits at most 10 s).
local function start(cmd, log)
  local p = io.popen(cmd .. " >" .. sh_quote(log) .. " 2>&1 & echo $!")
  local pid = p:read("l")
  p:close()
  for _ = 1, 200 do
    local f = io.open(log)
    local text = f and f:read("a") or ""
    if f then f:close() end
    local port = text:match("listening on http://127%.0%.0%.1:(%d+)")
    if port then return pid, port end
    sleep(0.05)
  end
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
  error("did not start: " .. cmd)
end

local function get(url)
  local p = io.popen("curl -s --max-time 5 " .. sh_quote(url))
  local body = p:read("a")
  p:close()
  return body
end

local function have(tool) return os.execute("command -v " .. tool .. " >/dev/null 2>&1") end

local function failure(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected a failure")
  return err
end

describe("catena.remote against catena serve", function()
  local pid, base, llm
  local tmp = os.tmpname()

  setup(function()
    assert(io.open(MODEL), "missing " .. MODEL)
    assert(have("curl"), "curl is needed (scripts/setup.sh)")
    pid, port = start("timeout 300 " .. sh_quote(CATENA) .. " serve -m " .. sh_quote(MODEL) ..
                      " --chat-template chatml --port 0", tmp)
    base = "http://127.0.0.1:" .. port .. "/v1"
    llm = catena.model{ path = MODEL, chat_template = "chatml" }
  end)

  teardown(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    os.remove(tmp)
  end)

  local greedy = { temperature = 0, max_tokens = 24 }

  it("gives the local model's greedy completion", function()
    local want = llm:with(greedy):invoke("Once upon a time")
    local r = catena.remote{ base_url = base, model = "stories260K.gguf", kind = "completion" }
    assert.are.equal(want, r:with(greedy):invoke("Once upon a time"))
    assert.is_true(#want > 0)
  end)

  it("gives the local model's greedy chat answer (the same chat template)", function()
    local chat = catena.prompt.chat{ { "system", "You tell stories." }, { "user", "{q}" } }
    local want = (chat | llm:with(greedy)):invoke({ q = "Tell me about a cat." })
    local r = catena.remote{ base_url = base, model = "stories260K.gguf" }
    assert.are.equal(want, (chat | r:with(greedy)):invoke({ q = "Tell me about a cat." }))
    -- A plain string is one user message.
    local one = catena.prompt.chat{ { "user", "Hi" } }
    assert.are.equal((one | llm:with(greedy)):invoke({}), r:with(greedy):invoke("Hi"))
  end)

  it("streams the same text as chunks", function()
    local r = catena.remote{ base_url = base, model = "stories260K.gguf", kind = "completion" }
    local want = llm:with(greedy):invoke("Once upon a time")
    local parts = {}
    for chunk in r:with(greedy):stream("Once upon a time") do parts[#parts + 1] = chunk end
    assert.is_true(#parts > 3, "only " .. #parts .. " chunks")
    assert.are.equal(want, table.concat(parts))
  end)

  it("runs a batch at once, each answer the local model's", function()
    local r = catena.remote{ base_url = base, model = "stories260K.gguf", kind = "completion" }
    local prompts = { "Once upon a time", "The cat", "Lily went", "One day" }
    local got = r:with(greedy):batch(prompts, { max_concurrency = 4 })
    for i, p in ipairs(prompts) do assert.are.equal(llm:with(greedy):invoke(p), got[i]) end
  end)

  it("gives a message with finish reason and usage, and counts tokens in the trace", function()
    local local_m = catena.model{ path = MODEL, chat_template = "chatml", output = "message" }
    local want = local_m:with(greedy):invoke("Once upon a time")
    local r = catena.remote{ base_url = base, model = "stories260K.gguf", kind = "completion",
                             output = "message" }
    local m = r:with(greedy):invoke("Once upon a time")
    assert.are.equal("ai", m.type)
    assert.are.equal(want.content, m.content)
    assert.are.equal("length", m.response_metadata.finish_reason)
    assert.are.equal("stories260K.gguf", m.response_metadata.model_name)
    assert.are.equal(want.usage_metadata.input_tokens, m.usage_metadata.input_tokens)
    assert.are.equal(24, m.usage_metadata.output_tokens)
    assert.are.equal(m.usage_metadata.input_tokens + 24, m.usage_metadata.total_tokens)
    -- Parsers read the message's content.
    assert.are.equal(want.content, (r:with(greedy) | catena.parser.str()):invoke("Once upon a time"))
    local ended
    for ev in r:with(greedy):stream_events("Once upon a time") do
      if ev.event == "end" and ev.kind == "remote" then ended = ev end
    end
    assert.is_not_nil(ended)
    assert.are.equal(24, ended.completion_tokens)
    assert.are.equal(m.usage_metadata.input_tokens, ended.prompt_tokens)
  end)

  it("checks settings with the local model's validator", function()
    local r = catena.remote{ base_url = base, model = "stories260K.gguf" }
    local lerr = failure(function() return llm:with{ temperature = "hot" }:invoke("x") end)
    local rerr = failure(function() return r:with{ temperature = "hot" }:invoke("x") end)
    assert.are.equal(lerr.message, rerr.message)
    assert.matches("setting 'temperature' must be a number", rerr.message)
    assert.matches("top_p' must be a number from 0 to 1",
                   failure(function() return r:invoke("x", { top_p = 2 }) end).message)
    assert.matches("setting 'lora' does not apply to a remote model",
                   failure(function() return r:with{ lora = "a" }:invoke("x") end).message)
    assert.matches("unknown setting 'max_token'", tostring(failure(function()
      return r:with{ max_token = 3 }
    end)))
  end)

  it("names the endpoint, the status and the server's message", function()
    local r = catena.remote{ base_url = base, model = "stories260K.gguf" }
    local e = failure(function() return r:with{ max_tokens = 4 }:invoke(catena.array{}) end)
    assert.matches("needs a string or a chat prompt", e.message)
    local c = catena.remote{ base_url = base, model = "stories260K.gguf", kind = "completion" }
    e = failure(function()
      return c:invoke({ type = "chat", messages = { { role = "user", content = "x" } } })
    end)
    assert.matches('a chat prompt needs kind = "chat"', e.message)
    local nope = catena.remote{ base_url = base, model = "no-such-model", max_retries = 0 }
    e = failure(function() return nope:invoke("x") end)
    local head = "remote " .. base .. "/chat/completions: 404: "
    assert.are.equal(head, e.message:sub(1, #head))
    assert.matches("no%-such%-model", e.message:sub(#head + 1))
  end)
end)

describe("catena.remote against a faulty server", function()
  local pid, port, root
  local tmp = os.tmpname()
  local node = have("node")

  local function R(mode, o)
    o = o or {}
    o.base_url = root .. mode .. "/v1"
    o.model = "m"
    return catena.remote(o)
  end
  local function count(mode) return tonumber(get(root .. "_count/" .. mode)) end
  -- Whether the server records what (such as "stall closed") within 2 s.
  local function saw(what)
    for _ = 1, 40 do
      if get(root .. "_events"):find(what, 1, true) then return true end
      sleep(0.05)
    end
    return false
  end

  setup(function()
    if not node then return end
    assert(have("curl"), "curl is needed (scripts/setup.sh)")
    pid, port = start("node tests/tools/fault_server.mjs", tmp)
    root = "http://127.0.0.1:" .. port .. "/"
  end)

  teardown(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    os.remove(tmp)
  end)

  before_each(function()
    if not node then pending("node is not installed: the fault server cannot run") end
  end)

  it("reads a stream with comments, CRLF lines, a role delta and the usage chunk", function()
    local m = R("ok", { output = "message" }):invoke("hi")
    assert.are.equal("Hello, world!", m.content)
    assert.are.equal("stop", m.response_metadata.finish_reason)
    assert.are.equal("fault", m.response_metadata.model_name)
    assert.are.same({ input_tokens = 7, output_tokens = 3, total_tokens = 10 }, m.usage_metadata)
    assert.are.equal("Hello, world!", R("ok", { kind = "completion" }):invoke("hi"))
    assert.are.equal("whole", R("json"):invoke("hi"))
  end)

  it("sends the settings and the key, and keeps the key out of describe and errors", function()
    local r = R("echo", { api_key_env = "HOME" })
    local got = catena.parser.json():invoke(r:with{ temperature = 0.5, stop = "\n", seed = 3,
                                                   max_tokens = 5, repeat_penalty = 1.1 }
                                            :invoke("hi"))
    local b = got.body
    assert.are.equal("m", b.model)
    assert.are.same({ { role = "user", content = "hi" } }, b.messages)
    assert.are.equal(0.5, b.temperature)
    assert.are.equal("\n", b.stop)
    assert.are.equal(3, b.seed)
    assert.are.equal(5, b.max_tokens)
    assert.are.equal(1.1, b.repetition_penalty)
    assert.is_true(b.stream)
    assert.is_true(b.stream_options.include_usage)
    assert.are.equal("Bearer " .. os.getenv("HOME"), got.auth)
    -- max_tokens is 256 unless given, as the local model node's; -1 leaves it to the server.
    assert.are.equal(256, catena.parser.json():invoke(R("echo"):invoke("x")).body.max_tokens)
    assert.is_nil(catena.parser.json():invoke(R("echo"):with{ max_tokens = -1 }:invoke("x")).body.max_tokens)
    assert.are.equal(catena.null, catena.parser.json():invoke(R("echo"):invoke("x")).auth)
    assert.is_nil(r:describe():find(os.getenv("HOME"), 1, true))
    local bad = failure(function() return R("bad400", { api_key_env = "HOME" }):invoke("x") end)
    assert.is_nil(tostring(bad):find(os.getenv("HOME"), 1, true))
    local n = 0
    for ev in R("ok", { api_key_env = "HOME" }):stream_events("hi") do
      for _, k in ipairs{ "input", "output", "name", "chunk" } do
        if type(ev[k]) == "string" then
          n = n + 1
          assert.is_nil(ev[k]:find(os.getenv("HOME"), 1, true))
        end
      end
    end
    assert.is_true(n > 3)
    local e = failure(function()
      return R("x", { api_key_env = "CATENA_REMOTE_SPEC_UNSET" })
    end)
    assert.matches("environment variable CATENA_REMOTE_SPEC_UNSET %(api_key_env%) is not set",
                   tostring(e))
  end)

  it("fails a first byte that comes after timeout_ms, without hanging", function()
    local t0 = now()
    local e = failure(function() return R("slow", { timeout_ms = 300 }):invoke("hi") end)
    assert.is_true(now() - t0 < 3, "took " .. (now() - t0) .. " s")
    assert.matches("no answer within timeout_ms %(300 ms", e.message)
    assert.are.equal("timed out", e.kind)
  end)

  it("fails a connection dropped mid-stream, after the chunks that came", function()
    local parts = {}
    local ok, e = pcall(function()
      for chunk in R("drop"):stream("hi") do parts[#parts + 1] = chunk end
    end)
    assert.is_false(ok)
    assert.are.equal("Hello, wor", table.concat(parts))
    assert.matches("the connection failed after %d+ bytes of the answer", e.message)
    local before = count("drop")
    failure(function() return R("drop"):invoke("hi") end)
    assert.are.equal(before + 1, count("drop")) -- no retry once the answer had begun
    e = failure(function() return R("noend"):invoke("hi") end)
    assert.matches("the stream ended after %d+ bytes without data: %[DONE%]", e.message)
  end)

  it("retries 500s with backoff, at most max_retries times", function()
    get(root .. "_reset")
    assert.are.equal("Hello, world!", R("flaky", { backoff_ms = 20 }):invoke("hi"))
    assert.are.equal(3, count("flaky"))
    local e = failure(function() return R("down", { backoff_ms = 10, max_retries = 3 }):invoke("hi") end)
    assert.are.equal(4, count("down"))
    assert.matches("^remote http://127%.0%.0%.1:%d+/down/v1/chat/completions: 500: always down %(4 attempts%)$",
                   e.message)
    get(root .. "_reset")
    failure(function() return R("flaky", { max_retries = 0 }):invoke("hi") end)
    assert.are.equal(1, count("flaky"))
    e = failure(function() return R("bad400"):invoke("hi") end)
    assert.matches("/bad400/v1/chat/completions: 400: 'temperature' must be a number from 0 to 2$",
                   e.message)
    assert.are.equal(1, count("bad400")) -- a 400 is not tried again
  end)

  it("retries a connection that is refused, then names the failure", function()
    -- Port 1 of 127.0.0.1: nothing listens there (a privileged port no test binds).
    local r = catena.remote{ base_url = "http://127.0.0.1:1/v1", model = "m", backoff_ms = 10 }
    local t0 = now()
    local e = failure(function() return r:invoke("hi") end)
    assert.matches("^remote http://127%.0%.0%.1:1/v1/chat/completions: .*connect.* %(3 attempts%)$",
                   e.message)
    assert.are.equal("input/output error", e.kind)
    assert.is_true(now() - t0 < 3)
  end)

  it("waits for Retry-After on a 429, within timeout_ms", function()
    get(root .. "_reset")
    local t0 = now()
    assert.are.equal("Hello, world!", R("busy", { backoff_ms = 1 }):invoke("hi"))
    local took = now() - t0
    assert.is_true(took >= 0.95 and took < 5, "took " .. took .. " s")
    assert.are.equal(2, count("busy"))
    get(root .. "_reset")
    t0 = now()
    local e = failure(function() return R("busy", { timeout_ms = 500 }):invoke("hi") end)
    assert.is_true(now() - t0 < 0.9)
    assert.matches("429: slow down %(1 attempt; no time left in timeout_ms", e.message)
  end)

  it("names malformed SSE with its byte offset", function()
    local e = failure(function() return R("malformed"):invoke("hi") end)
    assert.matches("malformed JSON in the SSE event at byte 124 of the stream: line 1, column 16",
                   e.message)
    assert.are.equal("malformed input", e.kind)
  end)

  it("refuses answers larger than max_response_bytes", function()
    local e = failure(function() return R("big", { max_response_bytes = "1M" }):invoke("hi") end)
    assert.matches("the answer is larger than max_response_bytes %(1048576 bytes%)", e.message)
    e = failure(function() return R("bigjson"):invoke("hi") end) -- 100 MiB declared
    assert.matches("larger than max_response_bytes %(67108864 bytes%)", e.message)
    -- Under the limit, the same 3 MiB stream is read whole.
    local text = R("big", { max_response_bytes = "8M" }):invoke("hi")
    assert.is_true(#text > 2500000, #text)
  end)

  it("closes the connection when the run is cancelled", function()
    get(root .. "_reset")
    local t0 = now()
    local e = failure(function() return R("stall"):with_timeout(300):invoke("hi") end)
    assert.are.equal("timed out", e.kind)
    local closed = saw("stall closed")
    assert.is_true(closed, "the server did not see the connection close")
    assert.is_true(now() - t0 < 3)
    -- Leaving a stream early cancels it too.
    get(root .. "_reset")
    for _ in R("stall"):stream("hi") do break end
    closed = saw("stall closed")
    assert.is_true(closed, "the server did not see the stream's connection close")
  end)

  it("stops when the consumer of a chunk fails", function()
    get(root .. "_reset")
    local chain = R("badjson") | catena.parser.json()
    local t0 = now()
    local ok, e = pcall(function()
      for _ in chain:stream("hi") do end
    end)
    assert.is_false(ok)
    assert.is_true(now() - t0 < 3)
    assert.matches("parser", tostring(e))
    local closed = saw("badjson closed")
    assert.is_true(closed, "the server did not see the connection close")
  end)

  it("refuses bad options, naming them", function()
    assert.matches("only http:// and https:// URLs", tostring(failure(function()
      return catena.remote{ base_url = "ftp://127.0.0.1/v1", model = "m" }
    end)))
    assert.matches("is not a URL", tostring(failure(function()
      return catena.remote{ base_url = "http://", model = "m" }
    end)))
    assert.matches("must not hold credentials", tostring(failure(function()
      return catena.remote{ base_url = "http://u:p@127.0.0.1/v1", model = "m" }
    end)))
    assert.matches("unknown option 'timeout' %(did you mean 'timeout_ms'%?%)", tostring(failure(function()
      return catena.remote{ base_url = root, model = "m", timeout = 3 }
    end)))
    assert.matches('kind must be "chat"', tostring(failure(function()
      return catena.remote{ base_url = root, model = "m", kind = "embed" }
    end)))
    assert.matches("max_retries must be an integer from 0 to 10", tostring(failure(function()
      return catena.remote{ base_url = root, model = "m", max_retries = 11 }
    end)))
    -- A URL without a path gets /v1.
    assert.matches("/v1/chat/completions: ", failure(function()
      return catena.remote{ base_url = root, model = "m", max_retries = 0 }:invoke("x")
    end).message)
  end)

  it("maps texts to vectors through /embeddings", function()
    local e = catena.remote_embeddings{ base_url = root .. "embed/v1", model = "m" }
    assert.are.same({ { 0, 1, 0.5 }, { 1, 3, 0.5 } }, e:invoke({ "a", "bbb" }))
    assert.are.same({ 0, 4, 0.5 }, e:invoke("abcd"))
    local ended
    for ev in e:stream_events({ "a", "b", "c" }) do
      if ev.event == "end" and ev.kind == "remote_embeddings" then ended = ev end
    end
    assert.are.equal(6, ended.prompt_tokens)
    assert.matches("input 2 is integer, not a string", failure(function()
      return e:invoke({ "a", 3 })
    end).message)
  end)
end)
