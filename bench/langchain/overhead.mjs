// Per-node overhead of LangChain.js chains: the peer of bench/chain_overhead.lua, which
// measures the same shapes with catena. Run by bench/run_chains.sh; by hand:
//
//   (cd bench/langchain && npm install --no-audit --no-fund --no-package-lock)
//   node bench/langchain/overhead.mjs
//
// Every node is an identity RunnableLambda and the input is the string "hello", so what is
// timed is the runtime's own cost of running a node. Measurements (one JSON line each):
//   invoke   steps = 10, 50: one `await chain.invoke(x)` of a RunnableSequence of `steps`
//            lambdas; time per call / steps.
//   batch    steps = 10, 50: one `await chain.batch(inputs)` of 100 inputs, default options
//            (no maxConcurrency: all 100 at once, as catena's default); time per call /
//            (100 * steps).
//   stream   steps = 10, 50: `for await` over `await chain.stream(x)`, every chunk consumed;
//            time per call / steps.
//   parallel steps = 16: one `await map.invoke(x)` of a RunnableParallel of 16 lambdas;
//            time per call / 16 (per branch).
// Timing: wall clock (process.hrtime.bigint, monotonic). Each measurement first runs for
// WARM_S seconds (JIT warm-up, and an estimate of the cost of one call), then BLOCKS timed
// blocks of as many calls as fit in BLOCK_S seconds; the line reports the median block.
// BLOCK_S and BLOCKS can be set in the environment (CHAIN_BENCH_BLOCK_S, CHAIN_BENCH_BLOCKS).
import {
  RunnableLambda,
  RunnableParallel,
  RunnableSequence,
} from "@langchain/core/runnables";

const INPUT = "hello";
const BATCH = 100;
const WIDTH = 16;
const WARM_S = 0.3;
const BLOCK_S = Number(process.env.CHAIN_BENCH_BLOCK_S ?? 0.2);
const BLOCKS = Number(process.env.CHAIN_BENCH_BLOCKS ?? 5);

const identity = () => RunnableLambda.from((x) => x);

// Before each measurement the same shape, built of counting lambdas, runs once and must run
// exactly as many nodes as the division assumes: nothing skipped, nothing cached.
let counted = 0;
const counting = () =>
  RunnableLambda.from((x) => {
    counted++;
    return x;
  });

function chainOf(steps, make = identity) {
  return RunnableSequence.from(Array.from({ length: steps }, make));
}

function parallelOf(width, make = identity) {
  const branches = {};
  for (let i = 0; i < width; i++) branches[`b${i}`] = make();
  return RunnableParallel.from(branches);
}

const nowS = () => Number(process.hrtime.bigint()) / 1e9;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// Times `call` (one async call covering `units` node runs) and returns µs per node run.
async function measure(call, units) {
  let calls = 0;
  const t0 = nowS();
  let t = t0;
  while (t - t0 < WARM_S) {
    await call();
    calls++;
    t = nowS();
  }
  const n = Math.max(1, Math.ceil(BLOCK_S / ((t - t0) / calls)));
  const perUnit = [];
  for (let b = 0; b < BLOCKS; b++) {
    const s = nowS();
    for (let i = 0; i < n; i++) await call();
    perUnit.push(((nowS() - s) * 1e6) / (n * units));
  }
  return median(perUnit);
}

function report(what, steps, us) {
  console.log(JSON.stringify({ impl: "langchain", what, steps, us_per_step: Number(us.toFixed(4)) }));
}

function check(cond, msg) {
  if (!cond) {
    console.error(`overhead.mjs: wrong result: ${msg}`);
    process.exit(1);
  }
}

async function checkCount(what, run, expected) {
  counted = 0;
  await run();
  check(counted === expected, `${what} ran ${counted} lambdas, not ${expected}`);
}

async function streamAll(chain) {
  let chunks = 0;
  for await (const c of await chain.stream(INPUT)) {
    check(c === INPUT, `stream chunk ${JSON.stringify(c)}`);
    chunks++;
  }
  return chunks;
}

const inputs = Array.from({ length: BATCH }, () => INPUT);

for (const steps of [10, 50]) {
  const chain = chainOf(steps);
  check((await chain.invoke(INPUT)) === INPUT, "invoke");
  const countingChain = chainOf(steps, counting);
  await checkCount("invoke", () => countingChain.invoke(INPUT), steps);
  report("invoke", steps, await measure(() => chain.invoke(INPUT), steps));
}
for (const steps of [10, 50]) {
  const chain = chainOf(steps);
  const out = await chain.batch(inputs);
  check(out.length === BATCH && out.every((o) => o === INPUT), "batch");
  const countingChain = chainOf(steps, counting);
  await checkCount("batch", () => countingChain.batch(inputs), BATCH * steps);
  report("batch", steps, await measure(() => chain.batch(inputs), BATCH * steps));
}
for (const steps of [10, 50]) {
  const chain = chainOf(steps);
  const chunks = await streamAll(chain);
  check(chunks >= 1, "stream gave no chunk");
  const countingChain = chainOf(steps, counting);
  await checkCount("stream", () => streamAll(countingChain), steps);
  console.error(`langchain stream ${steps}: ${chunks} chunk(s) per run`);
  report("stream", steps, await measure(() => streamAll(chain), steps));
}
{
  const par = parallelOf(WIDTH);
  const out = await par.invoke(INPUT);
  check(Object.keys(out).length === WIDTH && Object.values(out).every((o) => o === INPUT),
        "parallel");
  const countingPar = parallelOf(WIDTH, counting);
  await checkCount("parallel", () => countingPar.invoke(INPUT), WIDTH);
  report("parallel", WIDTH, await measure(() => par.invoke(INPUT), WIDTH));
}
