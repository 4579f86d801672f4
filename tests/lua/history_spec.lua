-- Specs for conversations (lua/l_history.c over stdlib/history.h and the model node's
-- session and n settings): catena.history.sqlite, r:with_history, n completions of one
-- prompt from forks of one engine session, the engine session kept across turns, and the
-- retrievers that use a model, catena.retriever.multi_query and .history_aware. The model
-- is stories260K from ../shared; files go to a temporary folder.
local catena = require("catena")
local SHARED = os.getenv("CTN_SHARED") or "../shared"
local MODEL = SHARED .. "/models/stories260K.gguf"

local tmp = os.tmpname()
os.remove(tmp)
assert(os.execute("mkdir -p '" .. tmp .. "'"))

local function raised(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return type(err) == "table" and err.message or tostring(err)
end

local function flat(msgs)
  local t = {}
  for i, m in ipairs(msgs) do t[i] = m.type .. ":" .. m.content end
  return table.concat(t, "|")
end

describe("catena.history.sqlite", function()
  it("keeps each session's messages in order", function()
    local h = catena.history.sqlite(tmp .. "/h1.sqlite")
    h:add("u1", {{type = "human", content = "Who is Lily?"}, {role = "assistant", content = "A girl."}})
    h:add("u2", {"system", "Be brief."})
    h:add("u1", {{"user", "And Tom?"}, {"ai", "Her brother."}})
    assert.are.equal("human:Who is Lily?|ai:A girl.|human:And Tom?|ai:Her brother.",
                     flat(h:messages("u1")))
    assert.are.equal("ai:A girl.|human:And Tom?|ai:Her brother.", flat(h:messages("u1", 3)))
    assert.are.same({"u1", "u2"}, h:sessions())
    assert.are.equal(0, #h:messages("nobody"))
    -- Another store on the same file sees them.
    assert.are.equal("system:Be brief.", flat(catena.history.sqlite(tmp .. "/h1.sqlite"):messages("u2")))
    assert.are.equal(4, h:clear("u1"))
    assert.are.equal(0, #h:messages("u1"))
  end)

  it("refuses bad messages, keys and files, storing nothing", function()
    local h = catena.history.sqlite(tmp .. "/h2.sqlite")
    assert.truthy(raised(h.add, h, "s", {{"human", "fine"}, {"wizard", "no"}}):find("message 2", 1, true))
    assert.truthy(raised(h.add, h, "s", {{"human", 5}}):find("content must be a string", 1, true))
    assert.truthy(raised(h.add, h, "s", {{"ai", "bad \xC3\x28"}}):find("not valid UTF-8", 1, true))
    assert.truthy(raised(h.add, h, "", {{"human", "x"}}):find("non-empty string", 1, true))
    assert.truthy(raised(h.messages, h, 7):find("non-empty string", 1, true))
    assert.are.equal(0, #h:messages("s"))
    local f = assert(io.open(tmp .. "/notes.txt", "wb"))
    f:write(string.rep("not a database at all. ", 10))
    f:close()
    assert.truthy(raised(catena.history.sqlite, tmp .. "/notes.txt"):find("notes.txt", 1, true))
    f = assert(io.open(tmp .. "/notes.txt", "rb"))
    assert.are.equal(string.rep("not a database at all. ", 10), f:read("a"))
    f:close()
    assert.truthy(raised(catena.history.sqlite, 42):find("path of a SQLite file", 1, true))
  end)
end)

describe("r:with_history", function()
  it("gives the chain the session's history and stores each turn", function()
    local seen = {}
    local echo = catena.lambda(function(x)
      seen[#seen + 1] = #x.history
      return "answer to " .. x.question
    end)
    local store = catena.history.sqlite(tmp .. "/h3.sqlite")
    local chat = echo:with_history{store = store, input_key = "question", max_messages = 2}
    local c1 = {configurable = {session_id = "a"}}
    assert.are.equal("answer to q1", chat:invoke({question = "q1"}, c1))
    assert.are.equal("answer to q2", chat:invoke({question = "q2"}, c1))
    assert.are.equal("answer to q3", chat:invoke({question = "q3"}, c1))
    assert.are.equal("answer to z", chat:invoke({question = "z"}, {configurable = {session_id = "b"}}))
    assert.are.same({0, 2, 2, 0}, seen)
    assert.are.equal("human:q1|ai:answer to q1|human:q2|ai:answer to q2|human:q3|ai:answer to q3",
                     flat(store:messages("a")))
    -- A string input is the question under input_key.
    local chat2 = echo:with_history{store = store, input_key = "question"}
    assert.are.equal("answer to hi", chat2:invoke("hi", {configurable = {session_id = "c"}}))
  end)

  it("reads the answer from output_key, and says what is missing", function()
    local store = catena.history.sqlite(tmp .. "/h4.sqlite")
    local rag = catena.lambda(function(x) return {answer = "A " .. x.input, context = {}} end)
    local chat = rag:with_history{store = store, output_key = "answer", session_key = "user"}
    chat:invoke("q", {configurable = {user = "u"}})
    assert.are.equal("human:q|ai:A q", flat(store:messages("u")))
    assert.truthy(raised(chat.invoke, chat, "q"):find("configurable = {user", 1, true))
    local bare = rag:with_history{store = store}
    assert.truthy(raised(bare.invoke, bare, "q", {configurable = {session_id = "v"}})
                  :find("give output_key", 1, true))
    assert.are.equal(0, #store:messages("v")) -- a failed turn stores nothing
    assert.truthy(raised(rag.with_history, rag, {store = store, sesion_key = "x"})
                  :find("unknown option 'sesion_key'", 1, true))
    assert.truthy(raised(rag.with_history, rag, {store = 5}):find("catena.history", 1, true))
    assert.truthy(raised(rag.with_history, rag, {store = store, max_messages = -1})
                  :find("max_messages", 1, true))
  end)

  it("keeps the model's engine session across turns, so earlier turns are not computed again", function()
    local llm = catena.model{path = MODEL, output = "message", chat_template = "chatml"}
    local prompt = catena.prompt.chat{{"system", "You tell stories."}, {"placeholder", "history"},
                                      {"user", "{input}"}}
    local store = catena.history.sqlite(tmp .. "/h5.sqlite")
    local chain = prompt | llm:with{max_tokens = 8}
    local chat = chain:with_history{store = store}
    local cfg = {configurable = {session_id = "s1"}}
    local held = 0
    for turn = 1, 4 do
      local m = chat:invoke("Tell me about Lily, part " .. turn, cfg)
      local u = m.usage_metadata
      if turn > 1 then
        -- Everything the session held but the last generated token (whose KV nothing has
        -- computed yet); the prefix cache alone finds whole 16-token blocks only.
        assert.are.equal(held - 1, u.input_token_details.cache_read)
      end
      held = u.input_tokens + u.output_tokens
      -- The answer is the one the same prompt gives without a session.
      local all, hist = store:messages("s1"), {}
      for i = 1, #all - 2 do hist[i] = all[i] end
      local plain = chain:invoke({input = "Tell me about Lily, part " .. turn, history = catena.array(hist)})
      assert.are.equal(plain.content, m.content)
    end
    assert.truthy(raised(llm.invoke, llm, "x", {session = 5}):find("conversation's key", 1, true))
  end)
end)

describe("the model's n", function()
  it("samples n completions of one prompt from forks of one session", function()
    local llm = catena.model{path = MODEL}
    local outs = llm:with{n = 3, temperature = 0.9, seed = 11, max_tokens = 10}:invoke("Once upon a time")
    assert.are.equal(3, #outs)
    for i = 1, 3 do
      local one = llm:with{temperature = 0.9, seed = 11 + i - 1, max_tokens = 10}:invoke("Once upon a time")
      assert.are.equal(one, outs[i])
    end
    local m = catena.model{path = MODEL, output = "message"}
    local ms = m:with{n = 2, max_tokens = 4}:invoke("Lily liked")
    assert.are.equal("ai", ms[2].type)
    assert.are.equal(ms[1].content, ms[2].content) -- greedy: the same twice
    -- Cancelled while the forks run (a timeout): an error, and the engine goes on.
    assert.truthy(raised(function()
      return llm:with{n = 3, max_tokens = 400}:with_timeout(2):invoke("Once upon")
    end):find("timed out", 1, true))
    assert.are.equal(2, #llm:with{n = 2, max_tokens = 3}:invoke("Once upon"))
    -- A prompt found whole in the prefix cache is forked as well.
    local p = "Once upon a time there was a little girl named Lily who lived in a house"
    assert.are.same(llm:with{n = 2, max_tokens = 3}:invoke(p), llm:with{n = 2, max_tokens = 3}:invoke(p))
    assert.truthy(raised(llm.invoke, llm, "x", {n = 0}):find("from 1 to 16", 1, true))
    assert.truthy(raised(llm.invoke, llm, "x", {n = 17}):find("from 1 to 16", 1, true))
  end)
end)

describe("catena.retriever.multi_query", function()
  it("searches the question and the model's versions of it together", function()
    local got
    local ret = catena.lambda(function(qs) got = qs; return {catena.document{page_content = "d"}} end)
    local llm = catena.model{path = MODEL}
    local mq = catena.retriever.multi_query{retriever = ret, llm = llm, n = 3, temperature = 0.9}
    local docs = mq:invoke("Where is the dog?")
    assert.are.equal("d", docs[1].page_content)
    assert.are.equal("Where is the dog?", got[1])
    assert.truthy(#got >= 2 and #got <= 4)
    -- The versions are the forks' completions (seed 0, 1, 2 for n = 3), first lines.
    local p = "You help a search engine find documents. Write one other way to ask the "
      .. "question below, with other words, on one line.\n\nQuestion: Where is the dog?\nOther question:"
    local want = {}
    for i = 0, 2 do
      want[#want + 1] = llm:with{temperature = 0.9, seed = i, max_tokens = 48, stop = {"\n"}}:invoke(p)
    end
    -- Each version is one of them, trimmed of spaces, numbering and quotes.
    for i = 2, #got do
      local found = false
      for _, w in ipairs(want) do found = found or w:find(got[i], 1, true) ~= nil end
      assert.is_true(found, got[i])
    end
  end)

  it("checks its options", function()
    local ret = catena.lambda(function(q) return {} end)
    local llm = catena.model{path = MODEL}
    assert.truthy(raised(catena.retriever.multi_query, {retriever = ret, llm = llm, n = 0}):find("n must be", 1, true))
    assert.truthy(raised(catena.retriever.multi_query, {retriever = 5, llm = llm}):find("retriever must be", 1, true))
    assert.truthy(raised(catena.retriever.multi_query, {retriever = ret, llm = llm, prompt = "no slot"})
                  :find("{question}", 1, true))
    assert.truthy(raised(catena.retriever.multi_query, {retriever = ret, llm = llm, k = 3})
                  :find("unknown option 'k'", 1, true))
  end)
end)

describe("catena.retriever.history_aware", function()
  it("rewrites a follow-up question with the history before searching", function()
    local got
    local ret = catena.lambda(function(q) got = q; return {} end)
    local rewriter = catena.lambda(function(p) return "  1. standalone: " .. #p .. "\nmore" end)
    local ha = catena.retriever.history_aware{retriever = ret, llm = rewriter, input_key = "question",
                                              prompt = "{history}\n{question}"}
    ha:invoke({question = "and the cat?", history = {}})
    assert.are.equal("and the cat?", got)
    ha:invoke("just this")
    assert.are.equal("just this", got)
    ha:invoke({question = "and the cat?", history = {{"user", "Where is the dog?"}, {"ai", "Out."}}})
    local filled = "User: Where is the dog?\nAssistant: Out.\nand the cat?"
    assert.are.equal("standalone: " .. #filled, got)
    assert.truthy(raised(ha.invoke, ha, {history = {}}):find("string question", 1, true))
    assert.truthy(raised(catena.retriever.history_aware, {retriever = ret}):find("llm must be", 1, true))
  end)
end)

describe("traces of a retriever", function()
  it("show the query and every hit's source and score", function()
    local kb = catena.kb.open(tmp .. "/tr.sqlite")
    local docs = {}
    for i = 1, 6 do
      docs[i] = catena.document{page_content = string.rep("The dog ran in the park number " .. i .. ". ", 12),
                                metadata = {source = "doc" .. i .. ".md"}}
    end
    kb:add(docs)
    local ret = kb:retriever{k = 6, mode = "bm25"}
    local start, out
    for ev in ret:stream_events("dog park") do
      if ev.event == "start" then start = ev.input end
      if ev.event == "end" then out = ev.output end
    end
    assert.are.equal('"dog park"', start)
    for i = 1, 6 do assert.truthy(out:find('"source":"doc' .. i .. '.md"', 1, true), out) end
    local _, scores = out:gsub('"score":', "")
    assert.are.equal(6, scores)
    assert.is_true(#out <= 2003)
  end)
end)


describe("the model's grammar", function()
  it("makes every completion follow a GBNF grammar, batched with others", function()
    local llm = catena.model{path = MODEL}
    local g = 'root ::= ("yes" | "no" | "maybe so") "."'
    local seen = {}
    local outs = llm:with{grammar = g, temperature = 1, max_tokens = 10}:batch({"Is it?", "Really?", "And?", "Sure?"})
    for _, o in ipairs(outs) do
      assert.truthy(o == "yes." or o == "no." or o == "maybe so.", o)
      seen[o] = true
    end
    -- A neighbour without a grammar is what it is alone.
    local alone = llm:with{max_tokens = 8}:invoke("Once upon a time")
    local both = catena.parallel{
      a = llm:with{grammar = g, max_tokens = 10},
      b = llm:with{max_tokens = 8},
    }:invoke("Once upon a time")
    assert.are.equal(alone, both.b)
    assert.truthy(both.a == "yes." or both.a == "no." or both.a == "maybe so.", both.a)
    -- n completions follow it too.
    for _, o in ipairs(llm:with{grammar = 'root ::= [0-9]{3}', n = 3, temperature = 1}:invoke("x")) do
      assert.truthy(o:match("^%d%d%d$"), o)
    end
    assert.truthy(raised(function() return llm:with{grammar = 'root ::= "a'}:invoke("x") end)
                  :find("line 1, column 10", 1, true))
    assert.truthy(raised(function() return llm:with{grammar = 5}:invoke("x") end)
                  :find("setting 'grammar' must be a non-empty string", 1, true))
  end)
end)
