#!/bin/sh
# catena ingest end to end (issue 15: files/s and chunks/s, with and without embeddings; no
# peer): `catena ingest DIR --db X.sqlite [--embed MODEL]` over the corpus of
# bench/run_load_split.sh (bench/load_split/gen_corpus.mjs, Node.js), into a new database
# each run.
#
#   cmake --build build --target catena mkmodel && sh bench/run_ingest.sh
#
# Runs, each $RUNS times (medians reported):
#   - text only: the corpus at scale $SCALE;
#   - with --embed, for each model of run_embed.sh (stories260K, and the random Q8_0 llama
#     it makes into $MODEL_DIR; run bench/run_embed.sh first or set MODELS): a smaller
#     corpus, scale $EMBED_SCALE, as every chunk is embedded ($EMBED_RUNS runs).
# Options of every run: --chunk-size 1000 --chunk-overlap 200 -t $THREADS -q; JSON files
# without --json-text, so each is one record (a .json file's whole array, as compact JSON;
# a .jsonl file's lines, each whole). Times: the wall time of the command (process start,
# database creation and close included) and the time catena ingest reports itself.
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr.
# Environment (defaults in brackets): BUILD_DIR [build]  MODEL_DIR [$BUILD_DIR/bench-models]
#   RUNS [5]  EMBED_RUNS [3]  SCALE [1]  EMBED_SCALE [0.03]  THREADS [2]  MODELS [as above]
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
model_dir=${MODEL_DIR:-$build/bench-models}
runs=${RUNS:-5}
eruns=${EMBED_RUNS:-3}
scale=${SCALE:-1}
escale=${EMBED_SCALE:-0.03}
threads=${THREADS:-2}
catena=$build/catena
models=${MODELS:-../shared/models/stories260K.gguf $model_dir/llama-d512-l8-h8-kv4-ff1408-v32000-q8_0.gguf}

say() { echo "$*" >&2; }
die() {
    say "run_ingest.sh: $*"
    exit 1
}
[ -x "$catena" ] || die "$catena not built (cmake --build $build --target catena)"
command -v node >/dev/null 2>&1 || die "node not found (the corpus generator needs Node.js)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-ingest-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
node bench/load_split/gen_corpus.mjs "$tmp/corpus" "$scale"
node bench/load_split/gen_corpus.mjs "$tmp/small" "$escale"
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# One run: label dir [--embed model] -> a line "label wall_s summary..." in raw.
raw=$tmp/raw
: > "$raw"
run() {
    r_label=$1 r_dir=$2
    shift 2
    rm -f "$tmp/kb.sqlite"*
    t0=$(date +%s.%N)
    "$catena" ingest "$r_dir" --db "$tmp/kb.sqlite" --chunk-size 1000 --chunk-overlap 200 \
        -t "$threads" -q "$@" > "$tmp/out" 2> "$tmp/err" ||
        die "catena ingest $* failed: $(tail -n 3 "$tmp/err")"
    t1=$(date +%s.%N)
    echo "$r_label $t0 $t1 $(tail -n 1 "$tmp/out")" >> "$raw"
}
i=1
while [ "$i" -le "$runs" ]; do
    say "text only: run $i of $runs"
    run text "$tmp/corpus"
    i=$((i + 1))
done
for m in $models; do
    [ -s "$m" ] || { say "no $m: skipped (bench/run_embed.sh makes it)"; continue; }
    i=1
    while [ "$i" -le "$eruns" ]; do
        say "$(basename "$m"): run $i of $eruns"
        run "$(basename "$m")" "$tmp/small" --embed "$m"
        i=$((i + 1))
    done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
files_big=$(find "$tmp/corpus" -type f | wc -l | tr -d ' ')
bytes_big=$(find "$tmp/corpus" -type f -exec cat {} + | wc -c | tr -d ' ')
files_small=$(find "$tmp/small" -type f | wc -l | tr -d ' ')
bytes_small=$(find "$tmp/small" -type f -exec cat {} + | wc -c | tr -d ' ')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
node - "$raw" "$commit" "${cpu:-unknown} x $(nproc)" "$load_start" "$load_end" "$runs" "$eruns" \
    "$scale" "$escale" "$files_big" "$bytes_big" "$files_small" "$bytes_small" "$threads" <<'JS'
const fs = require("fs");
const [raw, commit, cpu, load0, load1, runs, eruns, scale, escale, fb, bb, fs_, bs, threads] =
    process.argv.slice(2);
const by = {};
for (const line of fs.readFileSync(raw, "utf8").split("\n").filter(Boolean)) {
    const [label, t0, t1, ...rest] = line.split(" ");
    const s = rest.join(" ");
    const num = (re) => { const m = s.match(re); return m ? Number(m[1]) : null; };
    (by[label] ??= []).push({ wall: Number(t1) - Number(t0), files: num(/(\d+) files:/), chunks: num(/; (\d+) chunks/),
        embedded: num(/, (\d+) embedded/), tokens: num(/\((\d+) tokens/), elapsed: num(/ in ([\d.]+) s/) });
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); const n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const f = (x, d = 0) => x == null ? "—" : x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
console.log(`- **Date:** ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC; **machine:** ${cpu}; ` +
    `load average ${load0} at the start, ${load1} at the end`);
console.log(`- **catena:** commit ${commit}; \`catena ingest DIR --db X.sqlite --chunk-size 1000 --chunk-overlap 200 -t ${threads} -q [--embed MODEL]\`, a new database each run`);
console.log(`- **Work:** text only: ${fb} files, ${(bb / 1e6).toFixed(2)} MB (gen_corpus.mjs scale ${scale}), ${runs} runs; ` +
    `with embeddings: ${fs_} files, ${(bs / 1e6).toFixed(2)} MB (scale ${escale}), ${eruns} runs; medians`);
console.log("- **Command:** `sh bench/run_ingest.sh`");
console.log();
console.log("| run | files | chunks | embedded | tokens | wall s | ingest s | files/s | chunks/s | tokens/s |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const [label, rs] of Object.entries(by)) {
    const r = rs[0], w = med(rs.map((x) => x.wall)), e = med(rs.map((x) => x.elapsed));
    console.log(`| ${label === "text" ? "text only" : `--embed ${label}`} | ${r.files} | ${f(r.chunks)} | ${f(r.embedded)} | ` +
        `${f(r.tokens)} | ${f(w, 2)} | ${f(e, 2)} | ${f(r.files / w, 1)} | ${f(r.chunks / w, 1)} | ` +
        `${r.tokens ? f(r.tokens / e) : "—"} |`);
}
JS
