-- Routing: a router picks a runnable by a key of the input; a branch picks the first
-- runnable whose condition holds. Each route gets the whole input.
--   catena run examples/routing.lua
local catena = require("catena")

local classify = catena.assign{
  topic = function(x)
    if x.question:find("%d") then return "math" end
    if x.question:find("poem") then return "poetry" end
    return "general"
  end,
}
local answer = catena.router{
  key = "topic",
  routes = {
    math = function(x) return "math desk: " .. x.question end,
    poetry = function(x) return "poetry desk: " .. x.question end,
  },
  default = function(x) return "front desk: " .. x.question end,
}
local chain = classify | answer
for _, q in ipairs{ "What is 2+2?", "Write a poem about KV caches", "Who are you?" } do
  print(chain:invoke({ question = q }))
end
assert(chain:invoke({ question = "1+1" }) == "math desk: 1+1")

local size = catena.branch{
  { function(n) return n < 10 end, function() return "small" end },
  { function(n) return n < 1000 end, function() return "medium" end },
  function() return "large" end,
}
print(size:invoke(5), size:invoke(50), size:invoke(5000))
assert(size:invoke(50) == "medium")
print(chain:mermaid())
