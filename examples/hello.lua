-- Hello: prompt | model | parser on the default model (stories260K, a tiny story model).
-- The model is loaded once and shared by every chain; settings bound with :with{...} go
-- with the request.
--   catena run examples/hello.lua [MODEL.gguf]
local catena = require("catena")

local path = arg[1] or os.getenv("CATENA_MODEL") or "../shared/models/stories260K.gguf"
local llm = catena.model{ path = path }

local story = catena.prompt("Once upon a time, there was a {animal} who")
            | llm:with{ max_tokens = 40, temperature = 0 }
            | catena.parser.str()

print(story:describe())
local text = story:invoke({ animal = "little cat" })
print("invoke: " .. text)
assert(#text > 0)

-- The same chain, streamed: pieces arrive as the engine makes them.
io.write("stream: ")
local streamed = {}
for piece in story:stream({ animal = "little cat" }) do
  streamed[#streamed + 1] = piece
  io.write(piece)
  io.flush()
end
print()
assert(table.concat(streamed) == text, "greedy decoding gives the same text either way")

-- Several at once: the engine batches them into shared forward passes.
local animals = { { animal = "dog" }, { animal = "bird" }, { animal = "fish" }, { animal = "frog" } }
for i, t in ipairs(story:batch(animals)) do print(animals[i].animal .. ": " .. t) end
local st = catena.stats(llm)
print(string.format("engine: %d steps, %d tokens, at most %d sequences decoding together",
  st.steps, st.tokens, st.max_batch))
