-- Specs for the chain runtime as Lua users see it: composition with |, every combinator,
-- invoke / batch / stream / stream_events, the async forms, errors with node paths, and
-- exact value conversions. Runs under a stock lua5.4 with build/catena.so (busted --cpath).
local catena = require("catena")

local function add(n) return catena.lambda(function(x) return x + n end) end

describe("composition", function()
  it("pipes lambdas, functions and tables with |", function()
    local chain = add(1) | function(x) return x * 2 end | add(1)
    assert.are.equal(9, chain:invoke(3))
    -- a table in a chain is a parallel map
    local par = add(1) | { sq = function(x) return x * x end, same = catena.passthrough() }
    assert.are.same({ sq = 9, same = 3 }, par:invoke(2))
  end)

  it("flattens a | b | c into one sequence", function()
    local d = (add(1) | add(2) | add(3)):describe()
    assert.are.equal("sequence\n|-- lambda\n|-- lambda\n`-- lambda\n", d)
  end)

  it("rejects what cannot be a runnable, naming it", function()
    local ok, err = pcall(function() return add(1) | 42 end)
    assert.is_false(ok)
    assert.matches("right of |: a number is not a runnable", tostring(err))
  end)

  it("assign, pick, passthrough", function()
    local a = catena.assign{ doubled = function(x) return x.n * 2 end }
    assert.are.same({ n = 4, doubled = 8 }, a:invoke({ n = 4 }))
    assert.are.equal(4, catena.pick("n"):invoke({ n = 4, m = 1 }))
    assert.are.same({ n = 4 }, catena.pick{ "n", "zz" }:invoke({ n = 4, m = 1 }))
    assert.are.equal("x", catena.passthrough():invoke("x"))
    local ok, err = pcall(function() return a:invoke(3) end)
    assert.is_false(ok)
    assert.are.equal("assign: needs an object as input, got integer", tostring(err)) -- the node named once
  end)

  it("branch takes the first true condition, else the default", function()
    local b = catena.branch{
      { function(x) return x < 0 end, function() return "negative" end },
      { function(x) return x == 0 end, function() return "zero" end },
      function() return "positive" end,
    }
    assert.are.equal("negative", b:invoke(-3))
    assert.are.equal("zero", b:invoke(0))
    assert.are.equal("positive", b:invoke(5))
  end)

  it("router chooses by a key and names a missing route", function()
    local r = catena.router{ key = "topic", routes = {
      math = function(x) return "m:" .. x.q end,
      poem = function(x) return "p:" .. x.q end,
    } }
    assert.are.equal("m:1+1", r:invoke({ topic = "math", q = "1+1" }))
    local ok, err = pcall(function() return r:invoke({ topic = "law", q = "?" }) end)
    assert.is_false(ok)
    assert.are.equal("no route 'law' for key 'topic' (routes: math, poem)", err.message)
    assert.are.equal("router", err.path)
    -- the path names the node once: no "router: router: ..."
    assert.are.equal("router: no route 'law' for key 'topic' (routes: math, poem)", tostring(err))
    -- a route (and the default) gets the whole input
    local d = catena.router{ key = "topic", routes = { a = add(1) },
                             default = function(x) return "default for " .. x.topic end }
    assert.are.equal("default for other", d:invoke({ topic = "other" }))
  end)

  it("map applies to each element in order, at most N at once", function()
    local inflight, most = 0, 0
    local slow = catena.lambda(function(x)
      inflight = inflight + 1
      if inflight > most then most = inflight end
      catena.sleep(2)
      inflight = inflight - 1
      return x * 10
    end)
    assert.are.same({ 10, 20, 30, 40, 50 }, slow:map(2):invoke({ 1, 2, 3, 4, 5 }))
    assert.are.equal(2, most)
  end)
end)

describe("reliability", function()
  it("falls back after an error", function()
    local bad = catena.lambda(function() error("primary down") end)
    assert.are.equal("ok", bad:with_fallbacks{ function() return "ok" end }:invoke(1))
  end)

  it("retries with backoff", function()
    local calls = 0
    local flaky = catena.lambda(function(x)
      calls = calls + 1
      if calls < 3 then error("try again") end
      return x
    end)
    assert.are.equal(7, flaky:with_retry{ attempts = 3, backoff_ms = 1 }:invoke(7))
    assert.are.equal(3, calls)
    calls = -10
    local ok, err = pcall(function() return flaky:with_retry{ attempts = 2 }:invoke(1) end)
    assert.is_false(ok)
    assert.matches("try again", err.message)
  end)

  it("times out a slow node and cancels it", function()
    local finished = false
    local slow = catena.lambda(function(x) catena.sleep(2000); finished = true; return x end)
    local ok, err = pcall(function() return slow:with_timeout(20):invoke(1) end)
    assert.is_false(ok)
    assert.are.equal("timed out after 20 ms", err.message)
    assert.are.equal("timeout", err.path)
    catena.sleep(5)
    assert.is_false(finished)
  end)

  it("errors carry the node path", function()
    local retriever = catena.lambda(function() error("index missing", 0) end, "retriever")
    local rag = (catena.parallel{ context = retriever | function(d) return d end,
                                  question = catena.passthrough() }
                 | function(x) return x end):named("rag")
    local ok, err = pcall(function() return rag:invoke("q") end)
    assert.is_false(ok)
    assert.are.equal("rag > parallel.context > retriever", err.path)
    assert.are.equal("index missing", err.message)
    assert.are.equal("rag > parallel.context > retriever: index missing", tostring(err))
  end)

  it("a failing run does not disturb others", function()
    local good = add(1)
    local results = catena.lambda(function(x)
      if x == 2 then error("two") end
      return x
    end):batch({ 1, 2, 3 }, { return_exceptions = true })
    assert.are.equal(1, results[1])
    assert.matches("two", results[2].message)
    assert.are.equal(3, results[3])
    assert.are.equal(2, good:invoke(1))
  end)
end)

describe("running", function()
  it("batch keeps input order and raises the first error", function()
    assert.are.same({ 2, 3, 4 }, add(1):batch({ 1, 2, 3 }, { max_concurrency = 2 }))
    local ok, err = pcall(function()
      return catena.lambda(function(x) if x > 1 then error("big " .. x, 0) end return x end)
        :batch({ 1, 2, 3 })
    end)
    assert.is_false(ok)
    assert.are.equal("big 2", err.message)
  end)

  it("a batch with a bad input raises, naming it, and leaves nothing running", function()
    local ok, err = pcall(function()
      return catena.lambda(function(x) catena.sleep(1); return x end):batch({ 1, 2, { f = print } })
    end)
    assert.is_false(ok)
    assert.matches("input.f: a function cannot be a chain value", tostring(err))
  end)

  it("streams chunks in a generic for, and a break cancels the run", function()
    local chunks = {}
    for c in catena.lambda(function(x) return x .. "!" end):stream("hi") do chunks[#chunks + 1] = c end
    assert.are.same({ "hi!" }, chunks)
    local par = catena.parallel{ a = function(x) return x end, b = function(x) catena.sleep(1); return x end }
    local keys = {}
    for c in par:stream(5) do for k in pairs(c) do keys[#keys + 1] = k end end
    table.sort(keys)
    assert.are.same({ "a", "b" }, keys)
    for _ in catena.lambda(function(x) catena.sleep(1000); return x end):stream(1) do break end
  end)

  it("stream_events reports start, stream and end with run ids", function()
    local events = {}
    for ev in (add(1) | add(2)):named("two"):stream_events(1) do events[#events + 1] = ev end
    assert.are.equal("start", events[1].event)
    assert.are.equal("two", events[1].name)
    local last = events[#events]
    assert.are.equal("end", last.event)
    assert.are.equal("two", last.name)
    assert.are.equal(-1, last.parent_id)
    local starts = 0
    for _, e in ipairs(events) do if e.event == "start" then starts = starts + 1 end end
    assert.are.equal(4, starts) -- two (named), sequence, lambda, lambda
  end)

  it("invoke inside a lambda waits without blocking the loop", function()
    local inner = add(1) | add(1)
    local outer = catena.lambda(function(x) return inner:invoke(x) * 10 end)
    assert.are.equal(50, outer:invoke(3))
    local par = catena.parallel{ a = outer, b = outer }
    assert.are.same({ a = 50, b = 50 }, par:invoke(3))
  end)

  it("spawn, await, gather and sleep run concurrently", function()
    local t0 = os.time()
    local hs = {}
    for i = 1, 20 do hs[i] = catena.spawn(function(n) catena.sleep(50); return n * 2 end, i) end
    local got = catena.gather(hs)
    for i = 1, 20 do assert.are.equal(i * 2, got[i]) end
    assert.is_true(os.time() - t0 <= 1)
    local h = catena.spawn(function() error("spawned failure", 0) end)
    local ok, err = pcall(catena.await, h)
    assert.is_false(ok)
    assert.are.equal("spawned failure", err)
  end)

  it("config flows to lambdas as a second argument", function()
    local seen
    local probe = catena.lambda(function(x, cfg) seen = cfg; return x end)
    probe:with{ temperature = 0.5, tags = { "a" } }:invoke(1)
    assert.are.equal(0.5, seen.temperature)
    assert.are.same({ "a" }, seen.tags)
    probe:invoke(1, { tags = { "outer" } })
    assert.are.same({ "outer" }, seen.tags)
    -- a chain's own keys go under configurable (as LangChain's); others are named errors
    probe:with{ configurable = { user = "u1" } }:invoke(1)
    assert.are.equal("u1", seen.configurable.user)
    probe:invoke(1, { configurable = { user = "u2" } })
    assert.are.equal("u2", seen.configurable.user)
    local ok, err = pcall(function() return probe:with{ user = "u" } end)
    assert.is_false(ok)
    assert.matches("unknown setting 'user' %(a chain's own keys go under configurable", err)
  end)
end)

describe("config", function()
  it("run_name names the run and callbacks see every node", function()
    local c = catena.lambda(function(x) return x + 1 end, "inc") | catena.lambda(function(x) return x * 2 end, "dbl")
    local log = {}
    local out = c:invoke(1, { run_name = "math", callbacks = {
      on_start = function(ev) log[#log + 1] = "start " .. ev.name end,
      on_end = function(ev) log[#log + 1] = "end " .. ev.name end,
    } })
    assert.are.equal(4, out)
    assert.are.same({ "start math", "start sequence", "start inc", "end inc", "start dbl",
                      "end dbl", "end sequence", "end math" }, log)
    local ok, err = pcall(function()
      return catena.lambda(function() error("x", 0) end):invoke(1, { run_name = "job" })
    end)
    assert.is_false(ok)
    assert.are.equal("job", err.path)
  end)

  it("an error raised inside the loop (a callbacks table whose lookup raises) stays a Lua error", function()
    local cbs = setmetatable({}, { __index = function() error("lookup failed") end })
    local r = catena.lambda(function(x) return x + 1 end):invoke(5, { callbacks = cbs })
    assert.are.equal(6, r)
    -- the loop and the executor are intact: the next run works
    assert.are.equal(8, catena.lambda(function(x) return x * 2 end):invoke(4))
  end)

  it("a config whose fields raise when read is that error, with the input released", function()
    local cfg = setmetatable({}, { __index = function(_, k) error("no field " .. k, 0) end })
    local big = { text = string.rep("x", 1000), items = { 1, 2, 3 } }
    for _ = 1, 3 do
      local ok, err = pcall(function() return catena.passthrough():invoke(big, cfg) end)
      assert.is_false(ok)
      assert.are.equal("no field callbacks", err)
    end
    assert.are.same(big, catena.passthrough():invoke(big))
  end)

  it("a table raised in a lambda is the error's cause, not '(error object is not a string)'", function()
    local ok, err = pcall(function()
      return catena.lambda(function() error({ code = 1, why = "quota" }) end):invoke(1)
    end)
    assert.is_false(ok)
    assert.are.same({ code = 1, why = "quota" }, err.cause)
    assert.matches("a table was raised as the error", err.message)
    ok, err = pcall(function()
      return catena.lambda(function() error({ message = "over quota", retry_in = 5 }) end):invoke(1)
    end)
    assert.are.equal("over quota", err.message)
    assert.are.equal(5, err.cause.retry_in)
    local E = setmetatable({}, { __tostring = function() return "custom error" end })
    ok, err = pcall(function() return catena.lambda(function() error(E) end):invoke(1) end)
    assert.are.equal("custom error", err.message)
    -- through a sequence, and through a lambda that invokes the failing chain, it stays
    local inner = catena.lambda(function() error({ code = 7 }) end)
    ok, err = pcall(function()
      return (catena.passthrough() | catena.lambda(function(x) return inner:invoke(x) end)):invoke(1)
    end)
    assert.are.same({ code = 7 }, err.cause)
  end)

  it("an error in a lambda carries the lambda's traceback", function()
    local function parse(x) local v = x.y.z; return v end
    local ok, err = pcall(function()
      return catena.lambda(function(v) local r = parse(v); return r end):invoke({})
    end)
    assert.is_false(ok)
    assert.matches("^stack traceback %(in the lambda%):", err.traceback)
    assert.matches("in upvalue 'parse'", err.traceback)
  end)

  it("a failing callback does not fail the run", function()
    local r = catena.passthrough():invoke(5, { callbacks = { on_end = function() error("bug") end } })
    assert.are.equal(5, r)
  end)
end)

describe("values", function()
  it("convert exactly", function()
    local id = catena.passthrough()
    assert.are.equal(math.maxinteger, id:invoke(math.maxinteger))
    assert.are.equal(math.type(1.0), math.type(id:invoke(1.0)))
    assert.are.equal("a\0b", id:invoke("a\0b"))
    local v = { list = { 1, 2.5, "x", catena.null, true }, obj = { k = { z = false } } }
    local back = id:invoke(v)
    assert.are.same(v.obj, back.obj)
    assert.are.equal(5, #back.list)
    assert.are.equal(catena.null, back.list[4])
    assert.are.equal("float", math.type(back.list[2]))
    local doc = catena.document{ page_content = "text", metadata = { source = "a.md" } }
    local d2 = id:invoke(doc)
    assert.are.equal("text", d2.page_content)
    assert.are.equal("a.md", d2.metadata.source)
    assert.are.equal(getmetatable(doc), getmetatable(d2))
    assert.are.same({}, id:invoke(catena.array{}))
  end)

  it("names what cannot be converted", function()
    local ok, err = pcall(function() return catena.passthrough():invoke({ a = { 1, print } }) end)
    assert.is_false(ok)
    assert.matches("input.a%[2%]: a function cannot be a chain value", tostring(err))
    ok, err = pcall(function() return catena.passthrough():invoke({ 1, 2, x = 3 }) end)
    assert.is_false(ok)
    assert.matches("mixing integer and string keys", tostring(err))
    local bad = catena.lambda(function() return { f = print } end)
    ok, err = pcall(function() return bad:invoke(1) end)
    assert.is_false(ok)
    assert.matches("the lambda's result.f: a function cannot be a chain value", tostring(err))
  end)
end)

describe("introspection", function()
  it("describes, graphs and draws Mermaid", function()
    local c = (catena.parallel{ a = add(1), b = add(2) } | catena.pick("a")):named("demo")
    assert.matches("demo\n`%-%- sequence\n", c:describe())
    local g = c:graph()
    assert.are.equal(7, #g.nodes) -- input, demo, parallel, 2 lambdas, pick, output
    assert.matches("^flowchart TD\n", c:mermaid())
  end)
end)

describe("trace databases", function()
  it("several may be open, each records every run, and runs() counts all recorded so far", function()
    local p1, p2 = os.tmpname(), os.tmpname()
    local h1 = catena.trace.sqlite(p1)
    local c = catena.lambda(function(x) return x + 1 end)
    c:invoke(1)
    local h2 = catena.trace.sqlite(p2) -- the first stays open
    c:invoke(2)
    c:batch({ 3, 4 })
    for _ in c:stream(5) do end
    assert.are.equal(5, h1:runs()) -- right after the runs: their writes are waited for
    assert.are.equal(4, h2:runs())
    h1:close()
    c:invoke(6)
    assert.are.equal(5, h2:runs())
    local ok, err = pcall(function() return h1:runs() end)
    assert.is_false(ok)
    assert.matches("this trace database is closed", err)
    h2:close()
    os.remove(p1)
    os.remove(p2)
  end)
end)
