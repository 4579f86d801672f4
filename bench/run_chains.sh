#!/bin/sh
# Per-node overhead of chains (issue: catena >= 20x lower per step than LangChain.js):
# invoke, batch and stream of chains of 10 and 50 identity lambdas, and a 16-way parallel
# map, with catena (bench/chain_overhead.lua) and LangChain.js (bench/langchain/overhead.mjs,
# @langchain/core pinned in bench/langchain/package.json and installed here if missing).
#
#   cmake --build build --target catena_lua && sh bench/run_chains.sh
#
# The two run alternately, catena then LangChain.js, $ALT times each; each run prints one
# JSON line per measurement, itself the median of timed blocks after a warm-up (the two
# scripts say exactly what is timed and what it is divided by). The table gives, per row,
# the median over the $ALT runs of each and the ratio LangChain.js / catena (above 1:
# catena's overhead is lower). Prints Markdown for bench/RESULTS.md on stdout; the values
# of every run go to stderr.
#
# Environment (defaults in brackets): BUILD_DIR [build]  ALT [5]; passed on to both scripts:
#   CHAIN_BENCH_BLOCK_S [0.2] seconds per timed block, CHAIN_BENCH_BLOCKS [5] blocks per run
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
alt=${ALT:-5}
peer=bench/langchain
pinned_re='s/.*"@langchain\/core": *"\([^"]*\)".*/\1/p'

say() { echo "$*" >&2; }
die() {
    say "run_chains.sh: $*"
    exit 1
}

case $alt in
'' | *[!0-9]* | 0) die "ALT must be a positive integer, not '$alt'" ;;
esac
[ -f "$build/catena.so" ] ||
    die "$build/catena.so not built (cmake --build $build --target catena_lua)"
command -v lua5.4 >/dev/null 2>&1 || die "lua5.4 not found (apt-get install lua5.4)"
command -v node >/dev/null 2>&1 || die "node not found: LangChain.js, the peer, needs Node.js >= 20"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 20 ] 2>/dev/null ||
    die "node $(node --version 2>/dev/null) is too old: @langchain/core needs Node.js >= 20"

pinned=$(sed -n "$pinned_re" "$peer/package.json")
[ -n "$pinned" ] || die "no @langchain/core version pinned in $peer/package.json"
installed() {
    node -p 'require("./'"$peer"'/node_modules/@langchain/core/package.json").version' \
        2>/dev/null || true
}
if [ "$(installed)" != "$pinned" ]; then
    command -v npm >/dev/null 2>&1 || die "npm not found: cannot install @langchain/core $pinned"
    say "installing @langchain/core $pinned into $peer/node_modules"
    had_modules=0
    [ -e "$peer/node_modules" ] && had_modules=1
    # --no-package-lock: the version is pinned exactly in package.json; no lock file to keep.
    if ! (cd "$peer" && npm install --no-audit --no-fund --no-package-lock \
              --loglevel=error >&2); then
        [ "$had_modules" = 0 ] && rm -rf "$peer/node_modules"
        die "npm install @langchain/core@$pinned failed (offline or registry unreachable?)"
    fi
    [ "$(installed)" = "$pinned" ] ||
        die "npm install ran but $peer/node_modules has @langchain/core '$(installed)', not $pinned"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-chains-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
raw=$tmp/raw
: > "$raw"
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# One JSON line of either script -> "what steps impl us_per_step".
fields() {
    sed -n 's/.*"impl": *"\([a-z]*\)".*"what": *"\([a-z]*\)".*"steps": *\([0-9]*\).*"us_per_step": *\([0-9.eE+-]*\).*/\2 \3 \1 \4/p'
}

for i in $(seq "$alt"); do
    say "run $i of $alt: catena"
    LUA_CPATH="$build/?.so;;" lua5.4 bench/chain_overhead.lua > "$tmp/out" 2> "$tmp/err" ||
        die "catena run failed: $(tail -n 3 "$tmp/err")"
    fields < "$tmp/out" | tee -a "$raw" >&2
    say "run $i of $alt: LangChain.js"
    # No tracing: an exported LangSmith switch would add the cost of a tracer to every node.
    env -u LANGSMITH_TRACING -u LANGSMITH_TRACING_V2 -u LANGCHAIN_TRACING \
        -u LANGCHAIN_TRACING_V2 node "$peer/overhead.mjs" > "$tmp/out" 2> "$tmp/err" ||
        die "LangChain.js run failed: $(tail -n 3 "$tmp/err")"
    fields < "$tmp/out" | tee -a "$raw" >&2
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

median() { # what steps impl
    awk -v w="$1" -v s="$2" -v m="$3" '$1 == w && $2 == s && $3 == m { print $4 }' "$raw" |
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) print "nan";
            else if (NR % 2) print v[(NR + 1) / 2];
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo 2>/dev/null | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] &&
    commit="$commit (with uncommitted changes)"

echo "### Per-node overhead of chains: catena vs LangChain.js"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: ${cpu:-unknown}, $(nproc) cores; load average $load_start at start," \
    "$load_end at end"
echo "- commit: $commit"
echo "- command: \`BUILD_DIR=$build ALT=$alt sh bench/run_chains.sh\`"
echo "- peer: @langchain/core $(installed) on node $(node --version); catena.so under lua5.4"
echo "- identity lambdas, input \"hello\", one thread; each value is the median of $alt" \
    "alternating runs, each run the median of ${CHAIN_BENCH_BLOCKS:-5} timed blocks" \
    "of ${CHAIN_BENCH_BLOCK_S:-0.2} s after a warm-up"
echo "- batch: 100 inputs per call, default concurrency (all at once) in both;" \
    "µs per input per step. parallel: µs per branch of one invoke"
echo
echo "| measurement | steps | catena µs/step | LangChain.js µs/step | LangChain / catena |"
echo "|---|---:|---:|---:|---:|"
for row in "invoke 10" "invoke 50" "batch 10" "batch 50" "stream 10" "stream 50" \
    "parallel 16"; do
    set -- $row
    c=$(median "$1" "$2" catena)
    l=$(median "$1" "$2" langchain)
    awk -v w="$1" -v s="$2" -v c="$c" -v l="$l" 'BEGIN {
        if (c + 0 > 0 && l + 0 > 0)
            printf "| %s | %s | %.3f | %.1f | %.0f× |\n", w, s, c, l, l / c;
        else
            printf "| %s | %s | %s | %s | n/a |\n", w, s, c, l }'
done
