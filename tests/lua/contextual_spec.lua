-- Specs for contextual chunks (stdlib/ingest.c's contextualize, through kb:ingest): a model
-- writes each chunk a context from a fork of its document's prefilled session, which goes
-- before the chunk's text for embedding and keyword search. The model is stories260K from
-- ../shared (its context is 512 tokens, so long documents are cut into windows).
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

describe("kb:ingest{contextualize =}", function()
  it("puts a model-written context before each chunk, the document prefilled once", function()
    local llm = catena.model{path = MODEL}
    local parts = {}
    for i = 1, 6 do
      parts[i] = "Part " .. i .. ". Lily and Tom went to the park to play with a big red ball. "
        .. "They ran and laughed until the sun went down, and then they went home."
    end
    local path = write("story.txt", table.concat(parts, "\n\n"))
    local kb = catena.kb.open(tmp .. "/ctx.sqlite")
    local coll = kb:collection("c")
    local r = coll:ingest({path}, {contextualize = llm, context_tokens = 12, chunk_size = 160,
                                   chunk_overlap = 0})
    assert.are.equal(1, r.added)
    assert.is_true(r.chunks >= 3)
    assert.are.equal(r.chunks, r.contextualized)
    assert.is_true(r.context_tokens > 0 and r.context_tokens <= 12 * r.chunks)
    -- One document prefill and one fork per chunk: far less than a request per chunk with
    -- the whole document in its prompt.
    assert.is_true(r.context_prefill < r.context_naive)
    assert.is_true(r.context_naive >= r.chunks * 100)
    local chunks = coll:chunks(path)
    assert.are.equal(r.chunks, #chunks)
    for _, d in ipairs(chunks) do
      local c = d.metadata.context
      assert.are.equal("string", type(c))
      assert.is_true(#c > 0 and not c:find("\n", 1, true))
      assert.are.equal(c .. "\n\n", d.page_content:sub(1, #c + 2))
      assert.truthy(d.page_content:find("Lily and Tom", 1, true))
    end
    -- The context is indexed for keyword search with the chunk.
    local first = chunks[1].metadata.context:match("%a%a%a%a+")
    if first then
      local hits = kb:retriever{collection = "c", mode = "bm25", k = 10}:invoke(first)
      assert.is_true(#hits >= 1)
    end
  end)

  it("refuses what is not a model", function()
    local kb = catena.kb.open(tmp .. "/ctx2.sqlite")
    local ok, err = pcall(function() return kb:collection("c"):ingest({tmp}, {contextualize = 5}) end)
    assert.is_false(ok)
    assert.truthy(tostring(type(err) == "table" and err.message or err):find("contextualize must be a model", 1, true))
  end)
end)
