-- A knowledge base from the files in examples/docs: load (Markdown, PDF), split, embed with
-- the model and keep it all in one SQLite file; then ingest the folder again, which skips
-- every unchanged file.
--   catena run examples/ingest.lua [MODEL.gguf]     (or CATENA_MODEL=...)
local catena = require("catena")

local model_path = arg and arg[1] or os.getenv("CATENA_MODEL")
assert(model_path, "name a GGUF model: catena run examples/ingest.lua MODEL.gguf")
local llm = catena.model{ path = model_path }

-- Loaders and splitters are runnables: they compose with | like any other node.
local load_and_split = catena.loader.dir{ path = "examples/docs" }
  | catena.splitter.markdown{ chunk_size = 400, chunk_overlap = 40 }
local chunks = load_and_split:invoke()
print(("%d chunks from examples/docs"):format(#chunks))
local first = chunks[1]
print(("first: %s, section %q, characters %d to %d"):format(
  first.metadata.source, first.metadata.section or "", first.metadata.start_index,
  first.metadata.end_index))

-- The knowledge base: a collection records its embedding model.
local db = os.tmpname()
local kb = catena.kb.open(db)
local docs = kb:collection("docs", { embed = llm, labels = { "internal" } })
local r = docs:ingest({ "examples/docs" },
  { splitter = "markdown", chunk_size = 400, chunk_overlap = 40 })
print(("ingest: %d added, %d chunks, %d embedded in %.2f s"):format(
  r.added, r.chunks, r.embedded, r.seconds))
assert(r.failed == 0 and r.added > 0 and r.embedded == r.chunks)

local again = docs:ingest({ "examples/docs" },
  { splitter = "markdown", chunk_size = 400, chunk_overlap = 40 })
print(("again: %d skipped, %d added"):format(again.skipped, again.added))
assert(again.skipped == r.added and again.added == 0)

for _, c in ipairs(kb:stats()) do
  print(("collection %s: %d documents, %d chunks, %d embeddings (%s)"):format(
    c.name, c.documents, c.chunks, c.embeddings, c.embed_model))
end
os.remove(db)
os.remove(db .. "-wal")
os.remove(db .. "-shm")
