-- Questions answered from the knowledge base, with their sources: examples/docs ingested
-- (Markdown and PDF, embedded with the model), a retriever, the hits formatted into the
-- prompt, and the answer returned with the documents it used, as LangChain's
-- create_retrieval_chain returns them.
--   catena run examples/rag.lua [MODEL.gguf]     (or CATENA_MODEL=...)
-- A story model such as stories260K answers nonsense; the retrieval is the point.
local catena = require("catena")

local model_path = arg and arg[1] or os.getenv("CATENA_MODEL")
assert(model_path, "name a GGUF model: catena run examples/rag.lua MODEL.gguf")
local llm = catena.model{ path = model_path }

local db = os.tmpname()
local kb = catena.kb.open(db)
local docs = kb:collection("docs", { embed = llm })
docs:ingest({ "examples/docs" }, { splitter = "markdown", chunk_size = 400, chunk_overlap = 40 })

-- Keyword search (BM25). With a real embedding model, mode = "hybrid" fuses it with vector
-- search; a story model's vectors carry no meaning, so they would only add noise here.
local retriever = docs:retriever{ k = 3, mode = "bm25" }
local prompt = catena.prompt(
  "Answer from the context.\n\nContext:\n{context}\n\nQuestion: {question}\nAnswer:")
local answer = catena.parallel{
  context = catena.pick("docs") | catena.format_docs{ sources = true },
  question = catena.pick("question"),
} | prompt | llm:with{ max_tokens = 32, temperature = 0 } | catena.parser.str()

-- {question, docs} first, then the answer beside them.
local rag = catena.parallel{ docs = retriever, question = catena.passthrough() }
  | catena.assign{ answer = answer }

local questions = {
  { "How do I install catena on Debian?", "install.md" },
  { "What is the target for a P1 ticket?", "handbook.pdf" },
}
for _, qa in ipairs(questions) do
  local r = rag:invoke(qa[1])
  print("Q: " .. r.question)
  print("A: " .. r.answer:gsub("%s+", " "))
  for i, d in ipairs(r.docs) do
    local m = d.metadata
    print(("  [%d] %s%s%s  (score %.4f)"):format(i, m.source, m.page and (", page " .. m.page) or "",
      m.section and m.section ~= "" and (", " .. m.section) or "", m.score))
  end
  assert(#r.docs == 3 and r.docs[1].metadata.source:find(qa[2], 1, true))
end

-- A conversation: question, answer, follow-up. The follow-up is first rewritten with the
-- history into a question that stands alone (history-aware retrieval), then searched; the
-- turns are kept per session in SQLite (here the knowledge base's own file), as LangChain's
-- RunnableWithMessageHistory keeps them. A story model rewrites nonsense; a chat model
-- turns "And what does it need first?" into "What does installing catena need first?".
local store = catena.history.sqlite(db)
local contextual = catena.retriever.history_aware{
  retriever = retriever, llm = llm, input_key = "question" }
local transcript = catena.lambda(function(x)
  local lines = {}
  for _, m in ipairs(x.history) do
    lines[#lines + 1] = (m.type == "human" and "User: " or "Assistant: ") .. m.content
  end
  return table.concat(lines, "\n")
end, "transcript")
local chat_answer = catena.parallel{
  context = catena.pick("docs") | catena.format_docs{ sources = true },
  transcript = transcript,
  question = catena.pick("question"),
} | catena.prompt("Answer from the context.\n\nContext:\n{context}\n\n{transcript}\nUser: "
    .. "{question}\nAssistant:")
  | llm:with{ max_tokens = 32, temperature = 0 } | catena.parser.str()
local chat = (catena.assign{ docs = contextual } | catena.assign{ answer = chat_answer })
  :with_history{ store = store, input_key = "question", output_key = "answer" }

local cfg = { configurable = { session_id = "reader-1" } }
for _, q in ipairs({ "How do I install catena on Debian?", "And what does it need first?" }) do
  local r = chat:invoke({ question = q }, cfg)
  print("Q: " .. q)
  print("A: " .. r.answer:gsub("%s+", " "))
  print(("  (%d documents, first %s)"):format(#r.docs, r.docs[1] and r.docs[1].metadata.source or "-"))
end
local turns = store:messages("reader-1")
assert(#turns == 4 and turns[3].content == "And what does it need first?" and turns[4].type == "ai")
os.remove(db)
os.remove(db .. "-wal")
os.remove(db .. "-shm")
