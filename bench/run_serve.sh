#!/bin/sh
# catena serve under load against catena bench --parallel on the same model, in the same run
# (issue 18's goal: aggregate throughput over HTTP at 32 concurrent streams >= 0.95x of
# `catena bench --parallel 32`, the server adding <= 5%):
#
#   sh bench/run_serve.sh [MODEL.gguf [CLIENTS [GEN [ROUNDS]]]]
#
# Per round, alternating: `catena bench --parallel CLIENTS --gen-tokens GEN` (decode_tok_s:
# every sequence decoding at once), then bench/serve_load.mjs with CLIENTS streaming clients
# of 3 requests each, GEN tokens per request, against one `catena serve` on 127.0.0.1 kept
# for all rounds (its RSS is read before and after each round). Prints each measurement and
# the medians' ratio. Needs node. Timings on a shared machine are noisy: read the medians.
set -u
M=${1:-../shared/models/stories260K.gguf}
N=${2:-32}
G=${3:-128}
R=${4:-5}
CATENA=${CATENA:-build/catena}
command -v node >/dev/null 2>&1 || { echo "run_serve: node is needed"; exit 1; }
tmp=$(mktemp -d)
"$CATENA" serve -m "$M" --port 0 -q 2>"$tmp/log" &
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
echo "model: $M; $N clients x 3 requests, $G tokens each; $R rounds"
node bench/serve_load.mjs "$port" "$N" 1 8 "$pid" >/dev/null # warm-up
r=1
while [ $r -le "$R" ]; do
    b=$("$CATENA" bench -m "$M" --parallel "$N" --prompt-tokens 16 --gen-tokens "$G" --reps 1 2>/dev/null |
        sed -n 's/.*"decode_tok_s": \([0-9.]*\).*/\1/p')
    s=$(node bench/serve_load.mjs "$port" "$N" 3 "$G" "$pid")
    echo "round $r: catena bench --parallel $N: $b tok/s; serve: $s"
    echo "$b" >>"$tmp/b"
    echo "$s" | sed -n 's/.*"tok_s":\([0-9.]*\).*/\1/p' >>"$tmp/s"
    r=$((r + 1))
done
med() { sort -n "$1" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
mb=$(med "$tmp/b")
ms=$(med "$tmp/s")
echo "median: bench $mb tok/s, serve $ms tok/s, serve / bench = $(echo "$ms $mb" | awk '{printf "%.3f", $1 / $2}')"
