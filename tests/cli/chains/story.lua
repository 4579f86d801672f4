-- A chain for tests/cli/serve.sh and tests/compat/remote_runnable.sh: prompt | model | parser
-- on the test model (CATENA_MODEL), greedy, 12 tokens.
local catena = require("catena")
local llm = catena.model{ path = os.getenv("CATENA_MODEL") or "../shared/models/stories260K.gguf" }
return catena.prompt("Once upon a time, {who}") | llm:with{ max_tokens = 12, temperature = 0 }
  | catena.parser.str()
