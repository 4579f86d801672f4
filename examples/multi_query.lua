-- Multi-query retrieval, as LangChain's MultiQueryRetriever: the model writes n other
-- versions of the question, and the question and its versions are searched together (the
-- vectors in one pass over the collection, every list fused by reciprocal rank, so a chunk
-- several versions find rises and none appears twice). The versions come from n forks of
-- one engine session: the prompt that asks for them is computed once.
--   catena run examples/multi_query.lua [MODEL.gguf]     (or CATENA_MODEL=...)
-- A story model writes nonsense versions; with a chat model they are real rewordings.
local catena = require("catena")

local model_path = arg and arg[1] or os.getenv("CATENA_MODEL")
assert(model_path, "name a GGUF model: catena run examples/multi_query.lua MODEL.gguf")
local llm = catena.model{ path = model_path }

local db = os.tmpname()
local kb = catena.kb.open(db)
local docs = kb:collection("docs", { embed = llm })
docs:ingest({ "examples/docs" }, { splitter = "markdown", chunk_size = 400, chunk_overlap = 40 })

-- The searches the retriever is asked for, to show them.
local searched
local bm25 = docs:retriever{ k = 4, mode = "bm25" }
local shown = catena.lambda(function(queries)
  searched = queries
  return bm25:invoke(queries)
end, "bm25")
local retriever = catena.retriever.multi_query{ retriever = shown, llm = llm, n = 3 }

local question = "How do I install catena on Debian?"
local hits = retriever:invoke(question)
print("searched:")
for i, q in ipairs(searched) do print(("  %d. %s"):format(i, q)) end
print("found:")
for i, d in ipairs(hits) do
  print(("  [%d] %s  (fused score %.4f)"):format(i, d.metadata.source, d.metadata.score))
end
assert(searched[1] == question and #searched >= 2, "the question and its versions are searched")
assert(#hits >= 1 and #hits <= 4)
os.remove(db)
os.remove(db .. "-wal")
os.remove(db .. "-shm")
