-- Structured output and tools: a JSON parser with a schema makes the model before it decode
-- under the schema, so its output always parses and validates, even from stories260K, a
-- model that has only ever seen children's stories. Then a tool loop: the model calls a
-- tool under the grammar of the tools' schemas, the tool runs, its result goes back.
--   catena run examples/structured.lua [MODEL.gguf]
local catena = require("catena")

local path = arg[1] or os.getenv("CATENA_MODEL") or "../shared/models/stories260K.gguf"
local llm = catena.model{ path = path, chat_template = "chatml" }

local hero = catena.parser.json{ schema = [[{
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 16},
    "animal": {"enum": ["cat", "dog", "bird"]},
    "brave": {"type": "boolean"}
  },
  "required": ["name", "animal", "brave"]}]] }
print(hero:format_instructions())

local chain = catena.prompt("Once upon a time, there was a hero.\n{instructions}\n")
            | llm:with{ max_tokens = 120, temperature = 0.8, seed = 7 }
            | hero
local h = chain:invoke({ instructions = hero:format_instructions() })
print(string.format("name = %q, animal = %s, brave = %s", h.name, h.animal, tostring(h.brave)))
assert(h.animal == "cat" or h.animal == "dog" or h.animal == "bird")

-- One of a list of answers.
local yes_no = llm:with{ temperature = 0 } | catena.parser.enum{ "yes", "no" }
print("Is the sky blue? " .. yes_no:invoke("Is the sky blue?"))

-- Tools: catena.tool_loop runs what the model calls until it answers (here at most 3
-- steps; a story model keeps calling, so the loop's limit ends it).
local calls = 0
local weather = catena.tool{
  name = "weather", description = "Today's weather in a city.",
  schema = { type = "object", properties = { city = { enum = { "Paris", "Oslo" } } }, required = { "city" } },
  fn = function(args)
    calls = calls + 1
    print("  tool weather(" .. args.city .. ")")
    return args.city == "Oslo" and "snow" or "sun"
  end,
}
local agent = catena.tool_loop{ model = llm:with{ max_tokens = 200, seed = 1 }, tools = { weather },
                                parallel_tool_calls = false, max_steps = 3 }
local ok, err = pcall(agent.invoke, agent, "What is the weather in Oslo?")
print(ok and ("answer: " .. err.content) or ("stopped: " .. tostring(err)))
assert(calls >= 1)
