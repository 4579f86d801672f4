#!/bin/sh
# catena serve under load against catena bench --parallel on the same model, in the same run
# (issue 18's goal: aggregate throughput over HTTP at 32 concurrent streams >= 0.95x of
# `catena bench --parallel 32`, the server adding <= 5%):
#
#   [THREADS=T] sh bench/run_serve.sh [MODEL.gguf [CLIENTS [GEN [ROUNDS]]]]
#
# Per round, alternating: `catena bench --parallel CLIENTS --gen-tokens GEN` (decode_tok_s:
# every sequence decoding at once); `catena batch` on the very request stream the clients
# send (CLIENTS at once, 3 each, the same prompt, GEN tokens, greedy, ignore_eos: prefill and
# the turnover between requests included, no HTTP); then bench/serve_load.mjs with CLIENTS
# streaming clients of 3 requests each against one `catena serve` on 127.0.0.1 kept for all
# rounds (its RSS is read before and after each round). Prints each measurement and the
# medians' ratios: serve / bench (the issue's goal) and serve / batch (what HTTP, JSON and SSE
# cost for the same work). THREADS (default: all CPUs) sets the engine's threads on every
# side: on a machine this small the load client's CPU comes out of the engine's unless the
# engine leaves it a core (THREADS=1 on 2 CPUs). Needs node. Timings on a shared machine are
# noisy: read the medians.
set -u
M=${1:-../shared/models/stories260K.gguf}
N=${2:-32}
G=${3:-128}
R=${4:-5}
CATENA=${CATENA:-build/catena}
T=${THREADS:-$(nproc)}
command -v node >/dev/null 2>&1 || { echo "run_serve: node is needed"; exit 1; }
tmp=$(mktemp -d)
"$CATENA" serve -m "$M" --port 0 --threads "$T" -q 2>"$tmp/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
port=""
i=0
while [ $i -lt 100 ] && [ -z "$port" ]; do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/log" 2>/dev/null)
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || { echo "run_serve: the server did not start: $(cat "$tmp/log")"; exit 1; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model: $M; $N clients x 3 requests, $G tokens each; $R rounds; $T engine threads"
# The clients' requests as a prompts file (serve_load.mjs sends the same prompt).
i=0
while [ $i -lt $((N * 3)) ]; do
    echo '{"prompt": "Once upon a time there was a little girl named Lily who lived in a house", "max_tokens": '"$G"', "ignore_eos": true}'
    i=$((i + 1))
done >"$tmp/prompts.jsonl"
node bench/serve_load.mjs "$port" "$N" 1 8 "$pid" >/dev/null # warm-up
r=1
while [ $r -le "$R" ]; do
    b=$("$CATENA" bench -m "$M" --parallel "$N" --prompt-tokens 16 --gen-tokens "$G" --reps 1 --threads "$T" 2>/dev/null |
        sed -n 's/.*"decode_tok_s": \([0-9.]*\).*/\1/p')
    q=$("$CATENA" batch -m "$M" --prompts "$tmp/prompts.jsonl" --concurrency "$N" --threads "$T" 2>&1 >/dev/null |
        sed -n 's/.* in \([0-9.]*\) s (\([0-9.]*\) tok\/s generated).*/\2/p')
    s=$(node bench/serve_load.mjs "$port" "$N" 3 "$G" "$pid")
    echo "round $r: catena bench --parallel $N: $b tok/s; catena batch: $q tok/s; serve: $s"
    echo "$b" >>"$tmp/b"
    echo "$q" >>"$tmp/q"
    echo "$s" | sed -n 's/.*"tok_s":\([0-9.]*\).*/\1/p' >>"$tmp/s"
    r=$((r + 1))
done
med() { sort -n "$1" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
mb=$(med "$tmp/b")
mq=$(med "$tmp/q")
ms=$(med "$tmp/s")
echo "median: bench $mb tok/s, batch $mq tok/s, serve $ms tok/s; serve / bench = $(echo "$ms $mb" | awk '{printf "%.3f", $1 / $2}'), serve / batch = $(echo "$ms $mq" | awk '{printf "%.3f", $1 / $2}')"
