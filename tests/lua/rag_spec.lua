-- Specs for the RAG part of the Lua API: catena.loader.*, catena.splitter.* and catena.kb
-- (lua/l_rag.c over stdlib/loader.h, split.h, kb.h, ingest.h), with the errors a bad option
-- or a bad file gives. Files are written to a temporary folder; the model is stories260K
-- from ../shared, and examples/docs is the corpus for ingest.
local catena = require("catena")
local SHARED = os.getenv("CTN_SHARED") or "../shared"
local MODEL = SHARED .. "/models/stories260K.gguf"

local tmp = os.tmpname()
os.remove(tmp)
assert(os.execute("mkdir -p '" .. tmp .. "'"))

local function write(name, bytes)
  local path = tmp .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
  return path
end

-- The error a call raises (a catena error table or a string), asserting that it raises.
local function raised(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function message(err) return type(err) == "table" and err.message or tostring(err) end

-- The code points [from, to) of s (0-based, end exclusive, as start_index/end_index count).
local function cp_sub(s, from, to)
  local a = utf8.offset(s, from + 1)
  local b = utf8.offset(s, to + 1)
  return s:sub(a, b - 1)
end

describe("catena.loader", function()
  it("loads a text file as one document with its source", function()
    local path = write("a.txt", "\xEF\xBB\xBFhello\nworld\n")
    local docs = catena.loader.text(path):invoke()
    assert.are.equal(1, #docs)
    assert.are.equal("hello\nworld\n", docs[1].page_content)
    assert.are.equal(path, docs[1].metadata.source)
    -- a loader without a path loads the path it is given
    assert.are.same(docs, catena.loader.text():invoke(path))
  end)

  it("decodes UTF-16 with a BOM and replaces invalid UTF-8 by U+FFFD", function()
    local p16 = write("u16.txt", "\xFF\xFEh\0i\0")
    assert.are.equal("hi", catena.loader.text(p16):invoke()[1].page_content)
    local bad = write("bad.txt", "ok \xC3\x28 end")
    assert.are.equal("ok \u{FFFD}( end", catena.loader.text(bad):invoke()[1].page_content)
  end)

  it("fails on a missing file, naming it and the node", function()
    local err = raised(function() return catena.loader.text(tmp .. "/nope.txt"):invoke() end)
    assert.matches("nope.txt: cannot open", err.message, 1, true)
    assert.are.equal("loader", err.path)
  end)

  it("cuts Markdown into sections with their heading path, front matter and blocks", function()
    local path = write("a.md", table.concat({
      "---", "title: Guide", "tags: [a, b]", "---", "intro", "",
      "# Install", "", "## Linux", "", "run ![logo](l.png) it", "",
      "```sh", "make", "```", "", "| a | b |", "|---|---|", "| 1 | 2 |", "",
    }, "\n"))
    local docs = catena.loader.markdown(path):invoke()
    assert.are.equal(2, #docs)
    assert.are.equal("intro", docs[1].page_content)
    assert.are.equal(0, docs[1].metadata.level)
    local m = docs[2].metadata
    assert.are.equal("Install > Linux", m.section)
    assert.are.same({ "Install", "Linux" }, m.headings)
    assert.are.equal(2, m.level)
    assert.are.equal("Guide", m.title)
    assert.are.same({ "a", "b" }, m.tags)
    assert.are.same({ { alt = "logo", src = "l.png" } }, m.images)
    local text = docs[2].page_content
    assert.matches("^run logo it\n", text)
    local code, tab = m.blocks[1], m.blocks[2]
    assert.are.equal("code", code[3])
    assert.are.equal("```sh\nmake\n```", text:sub(code[1] + 1, code[2]))
    assert.are.equal("table", tab[3])
    assert.are.equal("| a | b |\n| --- | --- |\n| 1 | 2 |", text:sub(tab[1] + 1, tab[2]))
  end)

  it("chooses JSON text by pointer, with fields as metadata", function()
    local path = write("a.json", '{"items": [{"id": 1, "body": "first"}, {"id": 2, "body": "second"}]}')
    local docs = catena.loader.json{ path = path, text = "/items/*/body", meta = { "/id" } }:invoke()
    assert.are.equal(2, #docs)
    assert.are.equal("second", docs[2].page_content)
    local lines = write("a.jsonl", '{"q": "one"}\n{"q": "two"}\n')
    local l = catena.loader.json{ path = lines, text = "/q", lines = true }:invoke()
    assert.are.same({ "one", "two" }, { l[1].page_content, l[2].page_content })
    assert.are.equal(2, l[2].metadata.line)
  end)

  it("names the line and column of broken JSON", function()
    local path = write("broken.json", '{"a": 1,\n  "b": }\n')
    local err = raised(function() return catena.loader.json{ path = path, text = "/a" }:invoke() end)
    assert.matches("broken.json", err.message, 1, true)
    assert.matches("line 2", err.message, 1, true)
  end)

  it("reads PDF pages with the document's title and author", function()
    local docs = catena.loader.pdf("examples/docs/handbook.pdf"):invoke()
    assert.are.equal(4, #docs)
    for i, d in ipairs(docs) do
      assert.are.equal(i, d.metadata.page)
      assert.are.equal(4, d.metadata.pages)
      assert.is_true(#d.page_content > 0)
    end
    assert.are.equal("Support desk handbook", docs[1].metadata.title)
    local err = raised(function() return catena.loader.pdf("tests/data/encrypted.pdf"):invoke() end)
    assert.matches("encrypted.pdf", err.message, 1, true)
    assert.matches("encrypted", err.message:gsub("encrypted%.pdf", ""), 1, true)
  end)

  it("loads a folder by glob, each file by its extension, and skips a failing one", function()
    assert(os.execute("mkdir -p '" .. tmp .. "/dir/sub'"))
    write("dir/one.md", "# One\n\ntext one\n")
    write("dir/sub/two.txt", "text two\n")
    write("dir/bad.json", "{not json")
    local docs = catena.loader.dir{ path = tmp .. "/dir", glob = "*.md" }:invoke()
    assert.are.equal(1, #docs)
    assert.are.equal("One", docs[1].metadata.section)
    local all = catena.loader.dir{ path = tmp .. "/dir" }:invoke() -- bad.json: a warning
    assert.are.equal(2, #all)
    local err = raised(function()
      return catena.loader.dir{ path = tmp .. "/dir", skip_errors = false }:invoke()
    end)
    assert.matches("bad.json", err.message, 1, true)
  end)

  it("refuses bad options when built, at the caller's line", function()
    local err = raised(catena.loader.json, { path = "x", txt = "/a" })
    assert.matches("unknown option 'txt' (did you mean 'text'?)", message(err), 1, true)
    err = raised(function() catena.loader.text{ path = 3 } end)
    assert.matches("rag_spec.lua:%d+: catena.loader.text: path must be a string", message(err))
    err = raised(function() return catena.loader.dir{ skip_errors = "yes" } end)
    assert.matches("skip_errors must be true or false", message(err), 1, true)
  end)
end)

describe("catena.splitter", function()
  it("splits like LangChain's recursive splitter, with offsets in code points", function()
    local text = "안녕하세요 여러분 반갑습니다 오늘은 날씨가 좋네요"
    local doc = catena.document{ page_content = text, metadata = { source = "ko" } }
    local chunks = catena.splitter.recursive{ chunk_size = 10, chunk_overlap = 3 }:invoke(doc)
    assert.is_true(#chunks >= 3)
    for i, c in ipairs(chunks) do
      assert.are.equal(i - 1, c.metadata.chunk)
      assert.are.equal("ko", c.metadata.source)
      assert.is_true(utf8.len(c.page_content) <= 10)
      assert.are.equal(c.page_content, cp_sub(text, c.metadata.start_index, c.metadata.end_index))
    end
    local plain = catena.splitter.recursive{ chunk_size = 10, chunk_overlap = 0 }
      :invoke("hello there my friends")
    assert.are.same({ "hello", "there my", "friends" },
      { plain[1].page_content, plain[2].page_content, plain[3].page_content })
  end)

  it("keeps a Markdown code block whole and repeats a table's header", function()
    local rows = {}
    for i = 1, 12 do rows[#rows + 1] = ("| row %02d | value %02d |"):format(i, i) end
    local path = write("t.md", "# T\n\n| name | value |\n|---|---|\n" .. table.concat(rows, "\n")
      .. "\n\n```\n" .. ("code line\n"):rep(8) .. "```\n")
    local chunks = (catena.loader.markdown(path) | catena.splitter.markdown{ chunk_size = 120,
      chunk_overlap = 0 }):invoke()
    local fences, tables = 0, 0
    for _, c in ipairs(chunks) do
      local t = c.page_content
      if t:find("```", 1, true) then
        fences = fences + 1
        assert.matches("^```\n.*\n```$", t)
      elseif t:find("| row", 1, true) then
        tables = tables + 1
        assert.matches("^| name | value |\n| %-%-%- | %-%-%- |\n", t)
      end
      assert.are.equal("T", c.metadata.section)
    end
    assert.are.equal(1, fences)
    assert.is_true(tables >= 2)
  end)

  it("measures chunks in a model's tokens", function()
    local llm = catena.model{ path = MODEL }
    local text = ("Once upon a time there was a little dog. "):rep(20)
    local chunks = catena.splitter.token{ model = llm, chunk_size = 16, chunk_overlap = 4 }:invoke(text)
    assert.is_true(#chunks > 5)
    local by_chars = catena.splitter.recursive{ chunk_size = 16, chunk_overlap = 0 }:invoke(text)
    local by_tokens = catena.splitter.recursive{ chunk_size = 16, chunk_overlap = 0, length = llm }
      :invoke(text)
    assert.is_true(#by_tokens < #by_chars)
  end)

  it("refuses bad settings and bad input, naming them", function()
    assert.matches("chunk_size must be an integer from 1",
      message(raised(catena.splitter.recursive, { chunk_size = 0 })), 1, true)
    assert.matches("chunk_overlap (20) must be below chunk_size (10)",
      message(raised(catena.splitter.recursive, { chunk_size = 10, chunk_overlap = 20 })), 1, true)
    assert.matches("did you mean 'chunk_size'",
      message(raised(catena.splitter.recursive, { chunk_sise = 10 })), 1, true)
    assert.matches("keep_separator must be",
      message(raised(catena.splitter.recursive, { keep_separator = "middle" })), 1, true)
    assert.matches("length must be \"chars\" or a model",
      message(raised(catena.splitter.recursive, { length = "words" })), 1, true)
    assert.matches("needs model = a model", message(raised(catena.splitter.token, {})), 1, true)
    local err = raised(function()
      return catena.splitter.recursive{}:invoke({ "fine", { page_content = "a table, not a document" } })
    end)
    assert.matches("item 2 of the array is object", err.message, 1, true)
  end)
end)

describe("catena.kb", function()
  local llm = catena.model{ path = MODEL }

  it("adds documents, lists, reads back and removes them", function()
    local kb = catena.kb.open(tmp .. "/plain.sqlite")
    local notes = kb:collection("notes")
    local r = notes:add({ catena.document{ page_content = "one two", metadata = { source = "s1", n = 1 } },
      "a bare string" })
    assert.are.same({ documents = 2, chunks = 2 }, r)
    local st = kb:stats()
    assert.are.equal(1, #st)
    assert.are.same({ "notes", 2, 2, 0, "" },
      { st[1].name, st[1].documents, st[1].chunks, st[1].embeddings, st[1].embed_model })
    local uris = {}
    for _, d in ipairs(notes:list()) do uris[#uris + 1] = d.uri end
    table.sort(uris)
    assert.are.equal("s1", uris[1])
    local back = notes:chunks("s1")
    assert.are.equal("one two", back[1].page_content)
    assert.are.equal(1, back[1].metadata.n)
    assert.is_true(notes:remove("s1"))
    assert.is_false(notes:remove("s1"))
    assert.are.equal(1, kb:stats()[1].documents)
  end)

  it("records the embedding model and refuses another or a late one", function()
    local kb = catena.kb.open(tmp .. "/emb.sqlite")
    local docs = kb:collection("docs", { embed = llm })
    assert.are.equal("stories260K.gguf:llama:64", docs.embed_model)
    local err = raised(function() return kb:collection("docs"):add({ "no vectors" }) end)
    assert.matches("need embeddings of that model", err.message, 1, true)
    kb:collection("plain"):add({ "text without vectors" })
    err = raised(function() return kb:collection("plain", { embed = llm }) end)
    assert.matches("has no embedding model and holds 1 chunks", err.message, 1, true)
  end)

  it("ingests a folder with embeddings, skips what is unchanged, replaces and prunes", function()
    assert(os.execute("rm -rf '" .. tmp .. "/corpus' && cp -r examples/docs '" .. tmp .. "/corpus'"))
    local kb = catena.kb.open(tmp .. "/ingest.sqlite")
    local docs = kb:collection("docs", { embed = llm, labels = { "internal" } })
    local opts = { splitter = "markdown", chunk_size = 300, chunk_overlap = 30 }
    local r = docs:ingest({ tmp .. "/corpus" }, opts)
    assert.are.equal(0, r.failed)
    assert.is_true(r.added >= 4)
    assert.are.equal(r.chunks, r.embedded)
    assert.is_true(r.embed_tokens > 0)
    local again = docs:ingest({ tmp .. "/corpus" }, opts)
    assert.are.same({ 0, r.added, 0 }, { again.added, again.skipped, again.embedded })
    write("corpus/faq.md", "# Changed\n\nNew answer.\n")
    os.remove(tmp .. "/corpus/install.md")
    write("corpus/broken.json", "{")
    opts.prune = true
    local third = docs:ingest({ tmp .. "/corpus" }, opts)
    assert.are.same({ 1, 1, 1 }, { third.replaced, third.removed, third.failed })
    assert.matches("broken.json", third.failures[1].path, 1, true)
    local st = kb:stats()[1]
    assert.are.equal(st.chunks, st.embeddings)
    assert.are.equal(r.added - 1, st.documents)
  end)

  it("retrieves by keyword, by vector and by both, as a runnable", function()
    assert(os.execute("rm -rf '" .. tmp .. "/rcorpus' && cp -r examples/docs '" .. tmp .. "/rcorpus'"))
    write("rcorpus/boats.txt", "The quiet harbour keeps seven blue boats.\n")
    local kb = catena.kb.open(tmp .. "/retrieve.sqlite")
    local docs = kb:collection("docs", { embed = llm })
    docs:ingest({ tmp .. "/rcorpus" }, { splitter = "markdown", chunk_size = 400, chunk_overlap = 0 })
    local hits = docs:retriever{ k = 3, mode = "bm25" }:invoke("how do I install on Debian?")
    assert.are.equal(3, #hits)
    assert.are.equal("Install > Linux", hits[1].metadata.section)
    assert.is_true(hits[1].metadata.score >= hits[2].metadata.score)
    -- a chunk's own text is its own nearest vector
    local v = docs:retriever{ k = 2 }:invoke("The quiet harbour keeps seven blue boats.")
    assert.matches("boats.txt$", v[1].metadata.source)
    assert.is_true(v[1].metadata.score > 0.999)
    local h = docs:retriever{ k = 5, mode = "hybrid" }
    local batch = h:batch{ "refunds", "install" }
    assert.are.same({ 5, 5 }, { #batch[1], #batch[2] })
    local chain = catena.lambda(function(q) return q .. " on Debian" end) | h
      | catena.lambda(function(ds) return ds[1].metadata.source end)
    assert.matches("%.%a+$", chain:invoke("install"))
    -- errors
    local err = raised(function() kb:collection("docs"):retriever{ mode = "vector" } end)
    assert.matches("vector search needs the collection's embedding model", message(err), 1, true)
    err = raised(function() docs:retriever{ mode = "fuzzy" } end)
    assert.matches("rag_spec.lua:%d+: catena.kb:retriever: mode must be", message(err))
    err = raised(function() docs:retriever{ kk = 1 } end)
    assert.matches("unknown option 'kk' (did you mean 'k'?)", message(err), 1, true)
    err = raised(function() return docs:retriever{ mode = "bm25" }:invoke(42) end)
    assert.matches("needs a query", err.message, 1, true)
    assert.are.same({}, kb:collection("empty"):retriever{ mode = "bm25" }:invoke("install"))
  end)

  it("filters, diversifies and fuses what it retrieves", function()
    local kb = catena.kb.open(tmp .. "/retrieve.sqlite") -- the one the test above made
    local docs = kb:collection("docs", { embed = llm })
    local err = raised(function()
      return docs:retriever{ k = 10, mode = "bm25", filter = { source = { ["$in"] = {} } } }
    end)
    assert.matches("'source': $in needs a non-empty array", message(err), 1, true)
    local boats = tmp .. "/rcorpus/boats.txt"
    local f = docs:retriever{ k = 10, mode = "hybrid", filter = { source = boats } }
    local hits = f:invoke("install on Debian")
    assert.is_true(#hits >= 1)
    for _, d in ipairs(hits) do assert.are.equal(boats, d.metadata.source) end
    local sec = docs:retriever{ k = 10, mode = "bm25",
      filter = { section = { ["$ne"] = "Install > Linux" }, ["$or"] = { { page = { ["$exists"] = false } } } } }
    for _, d in ipairs(sec:invoke("install Debian")) do
      assert.are_not.equal("Install > Linux", d.metadata.section)
    end
    err = raised(function() docs:retriever{ filter = { page = { ["$near"] = 1 } } } end)
    assert.matches("rag_spec.lua:%d+: .*'page': unknown operator '%$near'", message(err))
    err = raised(function() docs:retriever{ filter = "source = x" } end)
    assert.matches("filter must be a table", message(err), 1, true)
    -- k1 and b change BM25's scores, not which chunks match
    local a = docs:retriever{ k = 5, mode = "bm25" }:invoke("install Debian")
    local b = docs:retriever{ k = 5, mode = "bm25", k1 = 0.5, b = 0.1 }:invoke("install Debian")
    assert.are.equal(#a, #b)
    assert.are_not.equal(a[1].metadata.score, b[1].metadata.score)
    err = raised(function() docs:retriever{ mode = "bm25", b = 2 } end)
    assert.matches("b must be a number from 0 to 1", message(err), 1, true)
    -- MMR: the most relevant first, then no near-copies of what was picked
    local m = docs:retriever{ k = 3, mmr = true, fetch_k = 10, lambda = 0.5 }
      :invoke("The quiet harbour keeps seven blue boats.")
    assert.are.equal(3, #m)
    assert.matches("boats.txt$", m[1].metadata.source)
    err = raised(function() docs:retriever{ mode = "bm25", mmr = true } end)
    assert.matches("mmr compares the chunks' vectors", message(err), 1, true)
    -- hybrid weights: with the keyword list weighing nothing, the vector order
    local vec = docs:retriever{ k = 4 }:invoke("refunds")
    local hw = docs:retriever{ k = 4, mode = "hybrid", weights = { vector = 1, bm25 = 0 } }:invoke("refunds")
    for i = 1, #vec do assert.are.equal(vec[i].page_content, hw[i].page_content) end
    err = raised(function() docs:retriever{ mode = "hybrid", weights = { vector = 0, bm25 = 0 } } end)
    assert.matches("not both 0", message(err), 1, true)
    -- several versions of a question in one call: their lists fused
    local many = docs:retriever{ k = 4, mode = "hybrid" }:invoke({ "install on Debian", "refunds" })
    assert.are.equal(4, #many)
    local seen = {}
    for _, d in ipairs(many) do
      assert.is_nil(seen[d.page_content]); seen[d.page_content] = true
    end
    err = raised(function() return docs:retriever{ mode = "bm25" }:invoke({ "a", 7 }) end)
    assert.matches("query 2: needs a string or a document", err.message, 1, true)
  end)

  it("formats documents for a prompt, with their sources when asked", function()
    local d = {
      catena.document{ page_content = "first", metadata = { source = "a.md", section = "Intro" } },
      catena.document{ page_content = "second", metadata = { source = "b.pdf", page = 2 } },
      "a bare string",
    }
    assert.are.equal("first\n\nsecond\n\na bare string", catena.format_docs():invoke(d))
    assert.are.equal("[1] a.md, Intro\nfirst | [2] b.pdf, page 2\nsecond | a bare string",
      catena.format_docs{ sources = true, separator = " | " }:invoke(d))
    assert.matches("unknown option 'sep'", message(raised(catena.format_docs, { sep = "," })), 1, true)
    local err = raised(function() return catena.format_docs():invoke({ 42 }) end)
    assert.matches("item 1 is not a document or a string", err.message, 1, true)
  end)

  it("refuses bad options at the caller's line", function()
    local kb = catena.kb.open(tmp .. "/opts.sqlite")
    local c = kb:collection("c", { embed = llm })
    local err = raised(function() c:ingest({ tmp }, { splittr = "markdown" }) end)
    assert.matches("rag_spec.lua:%d+: catena.kb:ingest: unknown option 'splittr' %(did you mean 'splitter'%?%)",
      message(err))
    err = raised(function() c:ingest({ tmp }, { chunk_size = "big" }) end)
    assert.matches("rag_spec.lua:%d+: catena.kb:ingest: chunk_size must be an integer", message(err))
    err = raised(function() kb:collection("x", { dtype = "f8" }) end)
    assert.matches("rag_spec.lua:%d+: .*dtype must be \"f32\", \"f16\" or \"int8\", not 'f8'", message(err))
    err = raised(function() kb:collection("x", { embedd = llm }) end)
    assert.matches("rag_spec.lua:%d+: catena.kb:collection: unknown option 'embedd'", message(err))
    err = raised(function() return kb:ingest({ tmp }, { splitter = "sentences" }) end)
    assert.matches("splitter must be recursive, markdown, page or token, not 'sentences'", message(err), 1, true)
  end)

  it("gives a clear error for a file that is not a knowledge base", function()
    local junk = write("junk.sqlite", ("not a database\n"):rep(100))
    local err = raised(catena.kb.open, junk)
    assert.matches("junk.sqlite", message(err), 1, true)
    assert.matches("not a database", message(err), 1, true)
    assert.are.equal(("not a database\n"):rep(100), assert(io.open(junk, "rb")):read("a"))
    assert.matches("give the path", message(raised(catena.kb.open, 42)), 1, true)
  end)
end)

teardown(function() os.execute("rm -rf '" .. tmp .. "'") end)
