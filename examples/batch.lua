-- Batch: many inputs through one chain, at most max_concurrency at once, results in input
-- order. With return_exceptions, a failing input gives an error object in its place
-- instead of failing the whole batch.
--   catena run examples/batch.lua
local catena = require("catena")

local inflight, most = 0, 0
local square = catena.lambda(function(n)
  inflight = inflight + 1
  most = math.max(most, inflight)
  catena.sleep(10)
  inflight = inflight - 1
  if n == 13 then error("unlucky " .. n, 0) end
  return n * n
end)

local inputs = {}
for i = 1, 20 do inputs[i] = i end
local results = square:batch(inputs, { max_concurrency = 4, return_exceptions = true })
for i, r in ipairs(results) do
  if type(r) == "table" then
    print(i, "error: " .. tostring(r))
  else
    print(i, r)
  end
end
assert(results[12] == 144 and results[13].message == "unlucky 13")
assert(most == 4, "at most 4 at once, saw " .. most)
