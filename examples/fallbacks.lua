-- Reliability: retry a flaky step with exponential backoff, fall back to another runnable
-- when one fails, and give up on a slow one after a timeout. Errors name the node path.
--   catena run examples/fallbacks.lua
local catena = require("catena")

-- Fails twice, then works: with_retry{attempts = 3} gets through.
local calls = 0
local flaky = catena.lambda(function(q)
  calls = calls + 1
  if calls < 3 then error("service busy (call " .. calls .. ")", 0) end
  return "answer to " .. q
end, "flaky")
print(flaky:with_retry{ attempts = 3, backoff_ms = 5 }:invoke("q1"))
assert(calls == 3)

-- A primary that always fails, then a fallback.
local primary = catena.lambda(function() error("primary is down", 0) end, "primary")
local backup = catena.lambda(function(q) return "backup answer to " .. q end, "backup")
print(primary:with_fallbacks{ backup }:invoke("q2"))

-- A step that takes too long is cancelled.
local slow = catena.lambda(function(q) catena.sleep(5000); return q end, "slow")
local ok, err = pcall(function() return slow:with_timeout(50):invoke("q3") end)
print(ok, tostring(err))
assert(not ok and err.message == "timed out after 50 ms")

-- An error deep in a graph says where it happened.
local rag = (catena.parallel{ context = primary, question = catena.passthrough() }
             | function(x) return x end):named("rag")
ok, err = pcall(function() return rag:invoke("q4") end)
print(tostring(err))
assert(err.path == "rag > parallel.context > primary")
