-- A retriever for the serve tests: BM25 over two documents in a knowledge base at TEST_KB
-- (a temporary file the test names).
local catena = require("catena")
local kb = catena.kb.open(assert(os.getenv("TEST_KB"), "TEST_KB names the knowledge base file"))
kb:add({ catena.document{ page_content = "Lily had a red ball.", metadata = { source = "a.md" } },
         catena.document{ page_content = "Tim found a big dog in the park.", metadata = { source = "b.md" } } })
return kb:retriever{ k = 1, mode = "bm25" }
