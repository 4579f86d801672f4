-- Streaming: chunks flow through a chain as they are made. A generator lambda emits words
-- one by one (here it simply returns; the stream of a non-streaming node is its output as
-- one chunk), and stream_events shows every node starting, streaming and ending.
--   catena run examples/stream.lua
local catena = require("catena")

local shout = catena.lambda(function(s) return s:upper() end, "shout")
local chain = (catena.lambda(function(s) return s .. "!" end, "exclaim") | shout):named("demo")

local pieces = {}
for chunk in chain:stream("hello") do
  pieces[#pieces + 1] = chunk
  io.write(chunk)
end
print()
assert(table.concat(pieces) == "HELLO!")

-- Every node's start / stream / end, with run ids and parent ids.
local ends = 0
for ev in chain:stream_events("hi") do
  local pad = ev.parent_id >= 0 and "  " or ""
  print(string.format("%s%-6s %-8s id=%d parent=%d%s", pad, ev.event, ev.name, ev.run_id,
    ev.parent_id, ev.output and ("  -> " .. ev.output) or ""))
  if ev.event == "end" then ends = ends + 1 end
end
assert(ends == 4) -- demo, its sequence, exclaim, shout
