-- Parallel branches: a Lua table of runnables in a chain runs every branch on the same input
-- at once. Each branch here waits 200 ms (catena.sleep yields to the event loop instead of
-- blocking), so the three together take about 200 ms, not 600.
--   catena run examples/parallel.lua
local catena = require("catena")

local function slow(label, ms)
  return catena.lambda(function(text)
    catena.sleep(ms)
    return label .. "(" .. text .. ")"
  end)
end

local chain = catena.lambda(function(q) return q:lower() end)
  | { summary = slow("summary", 200), keywords = slow("keywords", 200), title = slow("title", 200) }
  | function(r) return r.title .. " / " .. r.summary .. " / " .. r.keywords end

local t0 = os.time()
local out = chain:invoke("What Is PagedAttention?")
print(out)
assert(out == "title(what is pagedattention?) / summary(what is pagedattention?) / keywords(what is pagedattention?)")
assert(os.time() - t0 <= 1, "the branches should have run concurrently")
print(chain:describe())
