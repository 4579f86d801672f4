-- 10,000 concurrent invocations of a prompt | model | parser chain on the small model: the
-- shared engine batches them (its decode batch sizes are printed), each output equals the
-- output of the same prompt alone (greedy), and nothing leaks (run by catena_asan with leak
-- checking in the test suite).
--   catena run tests/lua/many_invocations.lua [N] [MODEL.gguf]
local catena = require("catena")
local n = tonumber(arg[1]) or 10000
local path = arg[2] or os.getenv("CATENA_MODEL") or "../shared/models/stories260K.gguf"

local llm = catena.model{ path = path }
local chain = catena.prompt("Once upon a time, {who}") | llm:with{ max_tokens = 6 }
            | catena.parser.str()

local who = { "a cat", "a dog", "Lily", "Tom", "the sun", "a bird", "a boy", "a girl" }
local alone = {}
for i, w in ipairs(who) do alone[i] = chain:invoke({ who = w }) end

local inputs = {}
for i = 1, n do inputs[i] = { who = who[(i - 1) % #who + 1] } end
local t0 = os.time()
local outs = chain:batch(inputs, { max_concurrency = n })
for i = 1, n do
  local want = alone[(i - 1) % #who + 1]
  assert(outs[i] == want, string.format("output %d differs: %q vs %q", i, outs[i], want))
end
local st = catena.stats(llm)
local hist = {}
for _, k in ipairs{ "1", "2-3", "4-7", "8-15", "16-31", "32-63", "64+" } do
  hist[#hist + 1] = k .. ": " .. st.decode_batches[k]
end
print(string.format("%d invocations in %d s; engine steps %d, max decode batch %d", n,
  os.time() - t0, st.steps, st.max_batch))
print("decode batch sizes (steps): " .. table.concat(hist, ", "))
assert(st.max_batch > 1, "the engine never batched")
assert(st.running == 0 and st.waiting == 0)
