#!/bin/sh
# The shared generation engine (issue: continuous batching, prefix caching): aggregate decode
# throughput with P sequences decoding together against llama.cpp decoding the same P
# sequences in one batch, plus the engine's KV waste and shared-prefix workloads.
#
#   scripts/setup-peers.sh && cmake --build build && sh bench/run_parallel.sh
#
# 1. Aggregate decode: for each P in $PARALLEL, `catena bench --parallel P` and
#    `bench/llamacpp_gen --parallel P` run alternately ($ALT invocations each, each the
#    median of --reps $REPS after a warm-up) on the ~110M Q8_0 model of bench/run_engine.sh
#    (made there if missing), $THREADS threads. Both give sequence s the prompt of
#    $PROMPT_TOKENS ids 1 + ((i + 131 s) * 7919) % (n_vocab - 1), then $GEN_TOKENS greedy
#    steps with every sequence in the step; decode_tok_s is the aggregate. The table gives
#    the medians and the ratio catena / llama.cpp (above 1: catena is faster).
# 2. KV waste: bench/engine_load --workload mixed, 256 requests with prompt and output
#    lengths uniform in 16..1024 on a small model (waste does not depend on the model's
#    size; the ~110M one would take many minutes), with the default pool and with a 8 MiB
#    pool that forces preemption.
# 3. Shared prefix: bench/engine_load --workload shared on the Q8_0 model, 64 requests with
#    a 512-token shared prefix, prefix cache on and off: time until the last request's first
#    token and the hit rate on the prefix.
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr.
#
# Environment (defaults in brackets):
#   BUILD_DIR [build]  MODEL_DIR [$BUILD_DIR/bench-models]  THREADS [2]
#   PARALLEL ["1 4 16 64"]  ALT [3]  REPS [3]  PROMPT_TOKENS [128]  GEN_TOKENS [32]
#   SKIP_LOAD [unset]  set to skip parts 2 and 3
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
model_dir=${MODEL_DIR:-$build/bench-models}
threads=${THREADS:-2}
parallel=${PARALLEL:-1 4 16 64}
alt=${ALT:-3}
reps=${REPS:-3}
prompt=${PROMPT_TOKENS:-128}
gen=${GEN_TOKENS:-32}
catena=$build/catena
lgen=$build/bench/llamacpp_gen
load=$build/bench/engine_load
mkmodel=$build/tools/mkmodel

say() { echo "$*" >&2; }
for p in "$catena" "$lgen" "$load" "$mkmodel"; do
    [ -x "$p" ] || {
        say "$p not built (cmake --build $build)"
        exit 1
    }
done
model=$model_dir/llama-d768-l12-h12-kv4-ff2048-v32000-q8_0.gguf
if [ ! -s "$model" ]; then
    say "making the models (bench/run_engine.sh's)"
    BUILD_DIR=$build MODEL_DIR=$model_dir TYPES=Q8_0 THREADS=1 ALT=1 REPS=1 \
        sh bench/run_engine.sh > /dev/null
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-par-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
raw=$tmp/raw
: > "$raw"
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

num() { # json key
    echo "$1" | sed -n "s/.*\"$2\": *\([0-9.eE+-]*\).*/\1/p"
}

for p in $parallel; do
    say "P = $p: $alt alternating invocations"
    for i in $(seq "$alt"); do
        c=$("$catena" bench -m "$model" --prompt-tokens "$prompt" --gen-tokens "$gen" \
            --threads "$threads" --reps "$reps" --parallel "$p" 2>"$tmp/err") ||
            { say "catena failed: $(tail -n 3 "$tmp/err")"; exit 1; }
        l=$("$lgen" -m "$model" --prompt-tokens "$prompt" --gen-tokens "$gen" \
            --threads "$threads" --reps "$reps" --parallel "$p" 2>"$tmp/err") ||
            { say "llama.cpp failed: $(tail -n 3 "$tmp/err")"; exit 1; }
        echo "$p catena $(num "$c" decode_tok_s) $(num "$c" prefill_tok_s)" >> "$raw"
        echo "$p llama $(num "$l" decode_tok_s) $(num "$l" prefill_tok_s)" >> "$raw"
        say "  catena $(num "$c" decode_tok_s)  llama.cpp $(num "$l" decode_tok_s)"
    done
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "## Shared engine: aggregate decode with P sequences — catena vs llama.cpp (issue 4)"
echo
echo "- **Date:** $(date -u +%Y-%m-%d); **machine:** $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc); load average $load_start at the start"
echo "- **catena:** commit $commit; \`catena bench --parallel P\` (the shared engine: one forward pass per step over every sequence)"
echo "- **Peer:** llama.cpp (node-llama-cpp) via \`bench/llamacpp_gen --parallel P\`: P sequences in one llama_batch per step, one KV stream per sequence (its faster setting here: \`--kv-unified\` measured 721 vs 1056 tok/s at P = 16)"
echo "- **Work:** the ~110M Q8_0 model, $threads threads, prompts of $prompt tokens per sequence, then $gen greedy steps; $alt alternating invocations, each the median of $reps repetitions; medians"
echo "- **Command:** \`BUILD_DIR=$build sh bench/run_parallel.sh\`"
echo
echo "| P | decode catena tok/s | decode llama.cpp tok/s | catena / llama.cpp |"
echo "|---:|---:|---:|---:|"
for p in $parallel; do
    python3 - "$raw" "$p" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
p = sys.argv[2]
c = [float(r[2]) for r in rows if r[0] == p and r[1] == "catena"]
l = [float(r[2]) for r in rows if r[0] == p and r[1] == "llama"]
mc, ml = statistics.median(c), statistics.median(l)
print(f"| {p} | {mc:,.1f} | {ml:,.1f} | {mc / ml:.2f}× |")
EOF
done
echo

[ -n "${SKIP_LOAD:-}" ] && exit 0
small=$tmp/small.gguf
"$mkmodel" -o "$small" --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128 --type f32 \
    --ctx 4096 > /dev/null
say "mixed workload (default pool, then 8 MiB)"
m1=$("$load" -m "$small" --workload mixed --threads "$threads")
m2=$("$load" -m "$small" --workload mixed --threads "$threads" --kv-memory 8)
say "shared prefix (cache on, then off)"
s1=$("$load" -m "$model" --workload shared --threads "$threads")
s2=$("$load" -m "$model" --workload shared --threads "$threads" --no-prefix-cache)
echo "### KV waste and shared prefixes (bench/engine_load)"
echo
echo "| workload | KV blocks | preemptions | KV waste | prefix hits / misses | last first token s | hit rate on the shared prefix |"
echo "|---|---:|---:|---:|---:|---:|---:|"
python3 - "$m1" "$m2" "$s1" "$s2" <<'EOF2'
import json, sys
pools = ["default pool", "8 MiB pool", "default pool", "default pool"]
for pool, a in zip(pools, sys.argv[1:]):
    j = json.loads(a)
    name = j["workload"] + (", cache on" if j["prefix_cache"] else ", cache off") + ", " + pool
    hr = j.get("shared_prefix_hit_rate")
    hr_s = f"{100 * hr:.1f}%" if hr is not None else ""
    print(f"| {name}, {j['requests']} requests | {j['kv_blocks']} | {j['preemptions']} | "
          f"{100 * j['kv_waste']:.2f}% | {j['prefix_hits']} / {j['prefix_misses']} | "
          f"{j['last_first_token_s']:.2f} | {hr_s} |")
EOF2
echo
echo "Raw lines:"
echo
for j in "$m1" "$m2" "$s1" "$s2"; do echo "    $j"; done
