-- Per-node overhead of catena chains, the same measurements as bench/langchain/overhead.mjs
-- (LangChain.js) so that bench/run_chains.sh can set them side by side. By hand:
--
--   LUA_CPATH="build/?.so;;" lua5.4 bench/chain_overhead.lua
--
-- Every node is an identity catena.lambda and the input is the string "hello", so what is
-- timed is the runtime's own cost of running a node. Measurements (one JSON line each):
--   invoke   steps = 10, 50: one chain:invoke(x) of `steps` lambdas joined with |; time per
--            call / steps.
--   batch    steps = 10, 50: one chain:batch(inputs) of 100 inputs, default options (no
--            max_concurrency: all 100 at once, as LangChain.js's default); time per call /
--            (100 * steps).
--   stream   steps = 10, 50: a generic for over chain:stream(x), every chunk consumed; time
--            per call / steps.
--   parallel steps = 16: one map:invoke(x) of catena.parallel with 16 lambdas; time per
--            call / 16 (per branch).
-- Timing: a monotonic wall clock, system.monotime() from lua-system (Debian's lua-system, a
-- dependency of busted), as the peer uses process.hrtime. Without it the script falls back
-- to os.clock(), the CPU time of the process: close to wall time here because a chain of
-- lambdas runs entirely on the one loop thread and never waits, but it says so on stderr.
-- Each measurement first runs for WARM_S seconds (warm-up, and an estimate of the cost of
-- one call), then BLOCKS timed blocks of as many calls as fit in BLOCK_S seconds; the line
-- reports the median block. CHAIN_BENCH_BLOCK_S and CHAIN_BENCH_BLOCKS override the two.
local catena = require("catena")

local INPUT = "hello"
local BATCH = 100
local WIDTH = 16
local WARM_S = 0.3
local BLOCK_S = tonumber(os.getenv("CHAIN_BENCH_BLOCK_S") or "") or 0.2
local BLOCKS = tonumber(os.getenv("CHAIN_BENCH_BLOCKS") or "") or 5

local now
do
  local ok, system = pcall(require, "system")
  if ok and type(system.monotime) == "function" then
    now = system.monotime
  else
    io.stderr:write("chain_overhead.lua: lua-system not found; timing with os.clock() (CPU time)\n")
    now = os.clock
  end
end

local function identity()
  return catena.lambda(function(x) return x end)
end

-- Before each measurement the same shape, built of counting lambdas, runs once and must
-- run exactly as many nodes as the division assumes: nothing skipped, nothing cached.
local counted = 0
local function counting()
  return catena.lambda(function(x)
    counted = counted + 1
    return x
  end)
end

local function chain_of(steps, make)
  make = make or identity
  local c = make()
  for _ = 2, steps do c = c | make() end
  return c
end

local function parallel_of(width, make)
  make = make or identity
  local branches = {}
  for i = 0, width - 1 do branches["b" .. i] = make() end
  return catena.parallel(branches)
end

local function median(xs)
  local s = {}
  for i, v in ipairs(xs) do s[i] = v end
  table.sort(s)
  local m = #s // 2
  if #s % 2 == 1 then return s[m + 1] end
  return (s[m] + s[m + 1]) / 2
end

-- Times `call` (one call covering `units` node runs) and returns µs per node run.
local function measure(call, units)
  local calls, t0 = 0, now()
  local t = t0
  while t - t0 < WARM_S do
    call()
    calls = calls + 1
    t = now()
  end
  local n = math.max(1, math.ceil(BLOCK_S / ((t - t0) / calls)))
  local per_unit = {}
  for b = 1, BLOCKS do
    local s = now()
    for _ = 1, n do call() end
    per_unit[b] = (now() - s) * 1e6 / (n * units)
  end
  return median(per_unit)
end

local function report(what, steps, us)
  io.write(string.format('{"impl":"catena","what":"%s","steps":%d,"us_per_step":%.4f}\n',
                         what, steps, us))
  io.flush()
end

local function check(cond, msg)
  if not cond then
    io.stderr:write("chain_overhead.lua: wrong result: " .. msg .. "\n")
    os.exit(1)
  end
end

local function check_count(what, run, expected)
  counted = 0
  run()
  check(counted == expected, string.format("%s ran %d lambdas, not %d", what, counted, expected))
end

local function stream_all(chain)
  local chunks = 0
  for c in chain:stream(INPUT) do
    check(c == INPUT, "stream chunk " .. tostring(c))
    chunks = chunks + 1
  end
  return chunks
end

local inputs = {}
for i = 1, BATCH do inputs[i] = INPUT end

for _, steps in ipairs{ 10, 50 } do
  local chain = chain_of(steps)
  check(chain:invoke(INPUT) == INPUT, "invoke")
  local counting_chain = chain_of(steps, counting)
  check_count("invoke", function() return counting_chain:invoke(INPUT) end, steps)
  report("invoke", steps, measure(function() return chain:invoke(INPUT) end, steps))
end
for _, steps in ipairs{ 10, 50 } do
  local chain = chain_of(steps)
  local out = chain:batch(inputs)
  check(#out == BATCH, "batch gave " .. #out .. " outputs")
  for i = 1, BATCH do check(out[i] == INPUT, "batch output " .. i) end
  local counting_chain = chain_of(steps, counting)
  check_count("batch", function() return counting_chain:batch(inputs) end, BATCH * steps)
  report("batch", steps, measure(function() return chain:batch(inputs) end, BATCH * steps))
end
for _, steps in ipairs{ 10, 50 } do
  local chain = chain_of(steps)
  local chunks = stream_all(chain)
  check(chunks >= 1, "stream gave no chunk")
  local counting_chain = chain_of(steps, counting)
  check_count("stream", function() return stream_all(counting_chain) end, steps)
  io.stderr:write(string.format("catena stream %d: %d chunk(s) per run\n", steps, chunks))
  report("stream", steps, measure(function() return stream_all(chain) end, steps))
end
do
  local par = parallel_of(WIDTH)
  local out = par:invoke(INPUT)
  local keys = 0
  for _, v in pairs(out) do
    check(v == INPUT, "parallel output")
    keys = keys + 1
  end
  check(keys == WIDTH, "parallel gave " .. keys .. " branches")
  local counting_par = parallel_of(WIDTH, counting)
  check_count("parallel", function() return counting_par:invoke(INPUT) end, WIDTH)
  report("parallel", WIDTH, measure(function() return par:invoke(INPUT) end, WIDTH))
end
