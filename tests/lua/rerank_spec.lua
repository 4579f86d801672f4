-- Specs for scoring and reranking (lua/l_components.c: catena.scorer over stdlib/components.c's
-- scorer node; lua/l_rag.c: catena.retriever.rerank): log-probabilities that are a
-- distribution, batched scoring equal to one by one, a reranked list sorted by
-- P(yes) / (P(yes) + P(no)) as the scorer computes it, and the errors of bad options. The
-- model is stories260K from ../shared (no chat template: the plain-text judging prompt).
local catena = require("catena")
local SHARED = os.getenv("CTN_SHARED") or "../shared"
local MODEL = SHARED .. "/models/stories260K.gguf"

local tmp = os.tmpname()
os.remove(tmp)
assert(os.execute("mkdir -p '" .. tmp .. "'"))

local function raised(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function message(err) return type(err) == "table" and err.message or tostring(err) end

local llm = catena.model{ path = MODEL }

-- The corpus: stories and a few unrelated lines, all of which BM25 finds for "cat".
local texts = {
  "The cat sat on the mat and purred all day.",
  "Lily saw a big cat in the garden. The cat was orange.",
  "A cat and a dog played with a red ball.",
  "Tom liked his little cat very much.",
  "The cat ran after the bird, but the bird flew away.",
  "One day the cat found a fish by the river.",
}

local kb = catena.kb.open(tmp .. "/rerank.sqlite")
local docs = kb:collection("docs")
local items = {}
for i, t in ipairs(texts) do items[i] = catena.document{ page_content = t, metadata = { source = "s" .. i } } end
docs:add(items)
local retriever = docs:retriever{ k = 6, mode = "bm25" }

describe("catena.scorer", function()
  it("gives log-probabilities of the candidates' first tokens", function()
    local s = catena.scorer{ llm = llm, candidates = { "yes", "no", "cat", "Once" } }
    local lp = s:invoke("Once upon a time, there was a")
    assert.are.equal(4, #lp)
    local total = 0
    for _, v in ipairs(lp) do
      assert.is_true(v <= 0)
      total = total + math.exp(v)
    end
    assert.is_true(total > 0 and total < 1)
    -- batched through the engine, the same as one by one
    local prompts = { "Once upon a time", "The cat", "Lily and Tom went to the park. They" }
    local b = s:batch(prompts)
    for i, p in ipairs(prompts) do assert.are.same(s:invoke(p), b[i]) end
  end)

  it("yields inside a lambda", function()
    local s = catena.scorer{ llm = llm, candidates = { "yes", "no" } }
    local chain = catena.lambda(function(x)
      local a = s:invoke(x)
      return a[1] - a[2]
    end)
    local direct = s:invoke("The cat is happy.")
    assert.are.equal(direct[1] - direct[2], chain:invoke("The cat is happy."))
  end)

  it("refuses bad candidates, naming them", function()
    -- stories260K's SentencePiece tokenizer writes " yes" and " no" as the lone space first
    local err = raised(function() return catena.scorer{ llm = llm, candidates = { " yes", " no" } } end)
    assert.matches('candidates 1 (" yes") and 2 (" no") both begin with token', message(err), 1, true)
    err = raised(function() return catena.scorer{ llm = llm, candidates = { "yes", "" } } end)
    assert.matches('candidate 2 ("") has no tokens', message(err), 1, true)
    err = raised(function() return catena.scorer{ llm = llm, candidates = {} } end)
    assert.matches("0 candidates (1 to 64)", message(err), 1, true)
    err = raised(function() return catena.scorer{ llm = llm, candidates = { "yes", 2 } } end)
    assert.matches("candidates[2] must be a string", message(err), 1, true)
    err = raised(function() return catena.scorer{ llm = retriever, candidates = { "yes" } } end)
    assert.matches("llm must be a model", message(err), 1, true)
    err = raised(function() return catena.scorer{ llm = llm, candidate = { "yes" } } end)
    assert.matches("unknown option 'candidate'", message(err), 1, true)
  end)
end)

describe("catena.retriever.rerank", function()
  local judge = 'Judge whether the Document meets the requirements of the Query. ' ..
    'Answer only "yes" or "no".'

  it("returns the top_n hits sorted by P(yes) / (P(yes) + P(no)), the retriever's score kept", function()
    local rr = catena.retriever.rerank{ retriever = retriever, llm = llm, top_n = 4 }
    local query = "Where is the cat?"
    local out = rr:invoke(query)
    assert.are.equal(4, #out)
    local seen = {}
    for i, d in ipairs(out) do
      local s = d.metadata.rerank_score
      assert.are.equal("number", type(s))
      assert.is_true(s >= 0 and s <= 1)
      assert.are.equal("number", type(d.metadata.score)) -- BM25's
      if i > 1 then assert.is_true(out[i - 1].metadata.rerank_score >= s) end
      assert.is_nil(seen[d.metadata.source])
      seen[d.metadata.source] = true
    end
    -- the best hit's score as the scorer gives it on the judging prompt
    local s = catena.scorer{ llm = llm, candidates = { "yes", "no" } }
    local lp = s:invoke(judge .. "\n\n<Query>: " .. query .. "\n<Document>: " ..
      out[1].page_content .. "\n\nAnswer:")
    local want = math.exp(lp[1]) / (math.exp(lp[1]) + math.exp(lp[2]))
    assert.is_true(math.abs(out[1].metadata.rerank_score - want) < 1e-12)
    -- every hit was scored: a top_n as large as the retriever's k gives them all, and the
    -- first four are the same
    local all = catena.retriever.rerank{ retriever = retriever, llm = llm, top_n = 10 }:invoke(query)
    assert.are.equal(6, #all)
    for i = 1, 4 do assert.are.equal(out[i].page_content, all[i].page_content) end
    -- the scores differ between documents: the model reads them
    assert.is_true(all[1].metadata.rerank_score > all[6].metadata.rerank_score)
  end)

  it("scores every hit in one batch through the engine", function()
    local kb2 = catena.kb.open(tmp .. "/many.sqlite")
    local many = kb2:collection("many")
    local t = {}
    for i = 1, 12 do t[i] = "The cat number " .. i .. " sat on the mat and looked at the bird." end
    many:add(t)
    local rr = catena.retriever.rerank{ retriever = many:retriever{ k = 12, mode = "bm25" },
                                        llm = llm, top_n = 12 }
    local before = catena.stats(llm)
    local out = rr:invoke("cat")
    local after = catena.stats(llm)
    assert.are.equal(12, #out)
    assert.are.equal(12, after.finished - before.finished)
    -- one at a time would take a step (at least) each; together they share steps (the
    -- judging prefix computed once, in the prefix cache)
    assert.is_true(after.steps - before.steps <= 6, "steps: " .. (after.steps - before.steps))
    assert.is_true(after.prefix_hits > before.prefix_hits)
  end)

  it("passes the scorer's settings on to the engine", function()
    local s = catena.scorer{ llm = llm, candidates = { "yes", "no" } }:with{ lora = "nowhere" }
    local err = raised(function() return s:invoke("The cat") end)
    assert.matches("adapter 'nowhere' is not loaded", message(err), 1, true)
  end)

  it("takes a template of its own and runs inside a chain", function()
    local t = "Question: {query}\nPassage: {document}"
    local rr = catena.retriever.rerank{ retriever = retriever, llm = llm, top_n = 2, template = t }
    local chain = catena.lambda(function(q) return q .. "?" end) | rr
      | catena.lambda(function(ds) return ds[1].metadata.rerank_score end)
    local top = chain:invoke("cat")
    local s = catena.scorer{ llm = llm, candidates = { "yes", "no" } }
    local d1 = rr:invoke("cat?")[1]
    local lp = s:invoke(judge .. "\n\nQuestion: cat?\nPassage: " .. d1.page_content .. "\n\nAnswer:")
    assert.is_true(math.abs(top - math.exp(lp[1]) / (math.exp(lp[1]) + math.exp(lp[2]))) < 1e-12)
    -- no hits: an empty list
    local none = catena.retriever.rerank{ retriever = docs:retriever{ mode = "bm25" }, llm = llm }
    assert.are.same({}, none:invoke("zebra"))
  end)

  it("judges with the chat template when the model has one", function()
    -- the same file with a chat template given: the judging prompt becomes system and user
    -- messages, the assistant's turn opened, and the answer "yes" / "no" follows it
    local chat = catena.model{ path = MODEL, chat_template = "chatml" }
    local rr = catena.retriever.rerank{ retriever = retriever, llm = chat, top_n = 2 }
    local out = rr:invoke("Where is the cat?")
    assert.are.equal(2, #out)
    local s = catena.scorer{ llm = chat, candidates = { "yes", "no" } }
    local lp = s:invoke{ type = "chat", messages = {
      { role = "system", content = judge },
      { role = "user", content = "<Query>: Where is the cat?\n<Document>: " .. out[1].page_content } } }
    local want = math.exp(lp[1]) / (math.exp(lp[1]) + math.exp(lp[2]))
    assert.is_true(math.abs(out[1].metadata.rerank_score - want) < 1e-12)
    -- not the plain-text prompt's score
    local plain = catena.retriever.rerank{ retriever = retriever, llm = llm, top_n = 6 }:invoke("Where is the cat?")
    for _, d in ipairs(plain) do
      if d.page_content == out[1].page_content then
        assert.are_not.equal(d.metadata.rerank_score, out[1].metadata.rerank_score)
      end
    end
    -- a chat prompt given to a scorer whose model has no template fails, naming the fix
    local err = raised(function()
      return catena.scorer{ llm = llm, candidates = { "yes" } }:invoke{ type = "chat",
        messages = { { role = "user", content = "hi" } } }
    end)
    assert.matches("no chat template catena recognises", message(err), 1, true)
  end)

  it("refuses bad options with a clear error", function()
    local rerank = catena.retriever.rerank
    local err = raised(function() return rerank{ retriever = retriever, llm = llm, top = 3 } end)
    assert.matches("unknown option 'top'", message(err), 1, true)
    err = raised(function() return rerank{ retriever = "docs", llm = llm } end)
    assert.matches("retriever must be a runnable", message(err), 1, true)
    err = raised(function() return rerank{ retriever = retriever, llm = retriever } end)
    assert.matches("llm must be a model", message(err), 1, true)
    err = raised(function() return rerank{ retriever = retriever } end)
    assert.matches("llm must be a model", message(err), 1, true)
    err = raised(function() return rerank{ retriever = retriever, llm = llm, top_n = 0 } end)
    assert.matches("top_n must be an integer from 1 to 1000", message(err), 1, true)
    err = raised(function() return rerank{ retriever = retriever, llm = llm, top_n = 2.5 } end)
    assert.matches("top_n must be an integer", message(err), 1, true)
    err = raised(function() return rerank{ retriever = retriever, llm = llm, template = "{query}" } end)
    assert.matches("template must be a string with {document}", message(err), 1, true)
    err = raised(function() return rerank("x") end)
    assert.matches("give {retriever =, llm =, top_n =, template =}", message(err), 1, true)
    err = raised(function() return rerank{ retriever = retriever, llm = llm }:invoke(42) end)
    assert.matches("rerank needs the query as a string", message(err), 1, true)
    local strings = catena.lambda(function() return { "not a document" } end)
    err = raised(function() return rerank{ retriever = strings, llm = llm }:invoke("cat") end)
    assert.matches("rerank: hit 1 of the retriever is not a document", message(err), 1, true)
  end)
end)
