-- The prefill a 10-turn chat computes, with the model's engine session kept across turns
-- (r:with_history sets the run's session) against the same chat without it. By hand:
--
--   LUA_CPATH="build/?.so;;" lua5.4 bench/chat_sessions.lua [MODEL.gguf [TURNS [MAX_TOKENS]]]
--
-- The chat is a chat prompt (system line, the history placeholder, the user's question)
-- into the model (ChatML unless the GGUF has a template), greedy, MAX_TOKENS (default 24)
-- per answer, the questions fixed. It runs twice, each on a new engine (catena.unload in
-- between, so neither finds the other's blocks in the prefix cache) after a warm-up:
--   session:  with_history's engine session: each turn computes only what is new;
--   no session: the same turns, the run's session taken away: only the prefix cache helps
--             (whole 16-token blocks of the prompt, where the reply's text tokenizes as
--             the model wrote it).
-- Per run: prompt tokens in all turns (what a server without any cache computes), the
-- tokens computed (prompt minus cache_read), and the wall time. One JSON line per run, then
-- the ratios. The answers of both runs are checked equal.
local catena = require("catena")

local model = arg[1] or os.getenv("CATENA_MODEL") or "../shared/models/stories260K.gguf"
local turns = tonumber(arg[2] or "") or 10
local max_tokens = tonumber(arg[3] or "") or 24
local now = os.clock
local ok_sys, system = pcall(require, "system")
if ok_sys and system.monotime then now = system.monotime end

local llm
local questions = {
  "Tell me a story about Lily.", "What did she find?", "Who was with her?", "Where did they go?",
  "What happened next?", "Was she happy?", "What did her mom say?", "Did it rain?",
  "How did it end?", "What is the lesson?", "Tell me one more thing.", "And then?",
}

local function run(label, keep_session)
  if llm ~= nil then catena.unload(llm) end
  llm = catena.model{ path = model, output = "message", chat_template = "chatml" }
  llm:with{ max_tokens = 4 }:invoke("warm up") -- first-use costs out of the timings
  local store = catena.history.sqlite(":memory:")
  local prompt = catena.prompt.chat{ { "system", "You tell stories." },
                                     { "placeholder", "history" }, { "user", "{input}" } }
  local model_step = llm:with{ max_tokens = max_tokens }
  if not keep_session then
    -- The run's session taken away before the model: only the prefix cache is left.
    local inner = prompt | model_step
    model_step = nil
    prompt = catena.lambda(function(x, cfg)
      local c = {}
      for k, v in pairs(cfg or {}) do if k ~= "session" then c[k] = v end end
      return inner:invoke(x, c)
    end, "no_session")
  end
  local chain = model_step and (prompt | model_step) or prompt
  local chat = chain:with_history{ store = store }
  local cfg = { configurable = { session_id = "chat" } }
  local prompt_tokens, computed, answers = 0, 0, {}
  local t0 = now()
  for i = 1, turns do
    local m = chat:invoke(questions[(i - 1) % #questions + 1], cfg)
    local u = m.usage_metadata
    prompt_tokens = prompt_tokens + u.input_tokens
    computed = computed + u.input_tokens - u.input_token_details.cache_read
    answers[i] = m.content
  end
  local dt = now() - t0
  print(string.format('{"run":"%s","turns":%d,"prompt_tokens":%d,"computed":%d,"seconds":%.4f}',
    keep_session and "session" or "no session", turns, prompt_tokens, computed, dt))
  return prompt_tokens, computed, dt, answers
end

local p1, c1, t1, a1 = run("A", true)
local p2, c2, t2, a2 = run("B", false)
for i = 1, turns do assert(a1[i] == a2[i], "turn " .. i .. ": the answers differ") end
print(string.format("prefill computed: %d with the session, %d with the prefix cache only, %d "
  .. "without any cache; the session saves %.1f%% of the naive prefill and %.1f%% of the "
  .. "prefix cache's; time %.3f s against %.3f s", c1, c2, p1, 100 * (1 - c1 / p1),
  100 * (1 - c1 / c2), t1, t2))
