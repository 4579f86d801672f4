#!/bin/sh
# Document loading and splitting (issue 15: catena >= 20x faster than LangChain.js): the
# loaders and the recursive splitter of stdlib/ (bench/load_split.c) against LangChain.js's
# DirectoryLoader, TextLoader, JSONLoader, JSONLinesLoader, PDFLoader and
# RecursiveCharacterTextSplitter (bench/load_split/load_split.mjs; versions pinned in
# bench/load_split/package.json, installed into bench/load_split/node_modules here when
# missing), over one generated corpus.
#
#   cmake --build build --target load_split && sh bench/run_load_split.sh
#
# 1. The corpus: bench/load_split/gen_corpus.mjs (Node.js; no Python) writes $SCALE x (400
#    Markdown, 400 text, 40 JSON, 20 JSON Lines files, 40 copies of examples/docs/handbook.pdf)
#    into a temporary folder, the same bytes on every run.
# 2. The sides run alternately, catena then LangChain.js, $ALT times each; each run does, per
#    set (text, markdown, pdf: see load_split.c), a warm-up pass and $REPS timed ones and
#    prints the median. The table gives the median over the runs and LangChain.js / catena
#    (above 1: catena is faster), for the whole pass, for its loading part and for the split.
# 3. The work is checked, not assumed: the first run of each side dumps every chunk, and the
#    text set's dumps must be the same bytes (same files, documents, chunks, chunk texts, in
#    the same order); the script fails otherwise. The markdown set does different work on each
#    side and the pdf set reads the same pages with two different PDF libraries (poppler,
#    pdf.js): their counts are printed, and how many chunks are the same.
#
# Chunks are 1000 / 200 (LangChain's common setting) unless CHUNK_SIZE / CHUNK_OVERLAP say
# otherwise, in code points for catena and UTF-16 units for LangChain.js: the corpus is all in
# the Basic Multilingual Plane, where the two are the same.
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr.
# Environment (defaults in brackets): BUILD_DIR [build]  ALT [5]  REPS [5]  SCALE [1]
#   CHUNK_SIZE [1000]  CHUNK_OVERLAP [200]  RAW [none] (RAW=FILE keeps every JSON line)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
alt=${ALT:-5}
reps=${REPS:-5}
scale=${SCALE:-1}
size=${CHUNK_SIZE:-1000}
overlap=${CHUNK_OVERLAP:-200}
peer=bench/load_split
driver=$build/bench/load_split

say() { echo "$*" >&2; }
die() {
    say "run_load_split.sh: $*"
    exit 1
}
case $alt$reps in *[!0-9]*) die "ALT and REPS must be positive integers" ;; esac
[ "$alt" -gt 0 ] && [ "$reps" -gt 0 ] || die "ALT and REPS must be positive integers"
[ -x "$driver" ] || die "$driver not built (cmake --build $build --target load_split)"
command -v node >/dev/null 2>&1 || die "node not found: LangChain.js, the peer, needs Node.js >= 20"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 20 ] 2>/dev/null || die "node $(node --version 2>/dev/null) is too old (>= 20)"

# Installed when any pinned package is missing or at another version.
check_peer() {
    node -e '
        const dir = process.argv[1];
        const want = require("./" + dir + "/package.json").dependencies;
        for (const [p, v] of Object.entries(want)) {
            let got = "";
            try { got = require("./" + dir + "/node_modules/" + p + "/package.json").version; }
            catch (e) {}
            if (got !== v) { console.log(p + " " + (got || "missing") + ", not " + v); process.exit(1); }
        }' "$peer"
}
if ! check_peer >/dev/null 2>&1; then
    command -v npm >/dev/null 2>&1 || die "npm not found: cannot install the peer"
    say "installing the packages of $peer/package.json into $peer/node_modules"
    had_modules=0
    [ -e "$peer/node_modules" ] && had_modules=1
    # --no-package-lock: versions are pinned exactly in package.json; no lock file to keep.
    if ! (cd "$peer" && npm install --no-audit --no-fund --no-package-lock --loglevel=error >&2); then
        [ "$had_modules" = 0 ] && rm -rf "$peer/node_modules"
        die "npm install failed (offline or registry unreachable?)"
    fi
    why=$(check_peer) || die "npm install ran but $why"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-load-split-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
corpus=$tmp/corpus
say "writing the corpus (scale $scale)"
node $peer/gen_corpus.mjs "$corpus" "$scale"
files=$(find "$corpus" -type f | wc -l | tr -d ' ')
bytes=$(find "$corpus" -type f -exec cat {} + | wc -c | tr -d ' ')
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
raw=$tmp/raw.jsonl
: > "$raw"
mkdir -p "$tmp/dump-catena" "$tmp/dump-langchain"
args="--reps $reps --chunk-size $size --chunk-overlap $overlap"
i=1
while [ "$i" -le "$alt" ]; do
    d1= d2=
    if [ "$i" = 1 ]; then d1="--dump $tmp/dump-catena" d2="--dump $tmp/dump-langchain"; fi
    say "run $i of $alt: catena"
    # shellcheck disable=SC2086
    "$driver" "$corpus" $args $d1 >> "$raw" 2> "$tmp/err" ||
        die "catena run failed: $(tail -n 3 "$tmp/err")"
    say "run $i of $alt: LangChain.js"
    # shellcheck disable=SC2086
    node $peer/load_split.mjs "$corpus" $args $d2 >> "$raw" 2> "$tmp/err" ||
        die "LangChain.js run failed: $(tail -n 3 "$tmp/err")"
    i=$((i + 1))
done
[ -n "${RAW:-}" ] && cp "$raw" "$RAW"
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
node - "$raw" "$tmp" "$commit" "${cpu:-unknown} x $(nproc)" "$load_start" "$load_end" "$alt" \
    "$reps" "$size" "$overlap" "$files" "$bytes" "$scale" "$(node --version)" <<'JS'
const fs = require("fs");
const [raw, tmp, commit, cpu, load0, load1, alt, reps, size, overlap, files, bytes, scale, nodev] =
    process.argv.slice(2);
const runs = {};
for (const line of fs.readFileSync(raw, "utf8").split("\n").filter(Boolean)) {
    const j = JSON.parse(line);
    (runs[`${j.set} ${j.impl}`] ??= []).push(j);
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); const n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const f = (x, d = 1) => x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
// Chunks of a dump, and how many of one side's are the other's at the same index.
const chunks = (side, set) => { const p = `${tmp}/dump-${side}/${set}.dump`;
    return fs.existsSync(p) ? fs.readFileSync(p, "utf8").split("\x1e\n").slice(0, -1) : []; };
let failed = false;
const rows = [], checks = [];
for (const set of ["text", "markdown", "pdf"]) {
    const c = runs[`${set} catena`], l = runs[`${set} langchain`];
    if (!c || !l) continue;
    const mc = med(c.map((j) => j.ms)), ml = med(l.map((j) => j.ms));
    const lc = med(c.map((j) => j.load_ms)), ll = med(l.map((j) => j.load_ms));
    const sc = med(c.map((j) => j.ms - j.load_ms)), sl = med(l.map((j) => j.ms - j.load_ms));
    rows.push(`| ${set} | ${f(mc)} | ${f(ml)} | **${(ml / mc).toFixed(1)}×** | ${f(lc)} | ${f(ll)} | ` +
        `${(ll / lc).toFixed(1)}× | ${f(sc)} | ${f(sl)} | ${(sl / sc).toFixed(1)}× |`);
    const a = c[0], b = l[0];
    const dc = chunks("catena", set), dl = chunks("langchain", set);
    let same = 0;
    for (let i = 0; i < Math.min(dc.length, dl.length); i++) same += dc[i] === dl[i];
    const identical = dc.length === dl.length && same === dc.length;
    checks.push(`| ${set} | ${a.files} / ${b.files} | ${a.docs} / ${b.docs} | ${a.chunks} / ${b.chunks} | ` +
        `${a.chunk_chars.toLocaleString("en-US")} / ${b.chunk_chars.toLocaleString("en-US")} | ` +
        `${same} of ${Math.max(dc.length, dl.length)}${identical ? " (identical dumps)" : ""} |`);
    if (set === "text" && !identical) failed = true;
}
console.log(`- **Date:** ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC; ` +
    `**machine:** ${cpu}; load average ${load0} at the start, ${load1} at the end`);
console.log(`- **catena:** commit ${commit}; bench/load_split (one thread)`);
console.log(`- **Peer:** LangChain.js (@langchain/classic 1.0.50 loaders, @langchain/community ` +
    `1.1.29 PDFLoader with pdf-parse 1.1.1, @langchain/textsplitters 1.0.2) on Node.js ${nodev}`);
console.log(`- **Work:** ${files} files, ${(bytes / 1e6).toFixed(2)} MB (gen_corpus.mjs, scale ${scale}); ` +
    `chunks ${size} / overlap ${overlap}; ${alt} alternating runs per side, each the median of ` +
    `${reps} passes after a warm-up; medians over the runs (ms)`);
console.log("- **Command:** `sh bench/run_load_split.sh`");
console.log();
console.log("| set | catena ms | LangChain.js ms | LangChain.js / catena | load catena | load LangChain.js | ratio | split catena | split LangChain.js | ratio |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
rows.forEach((r) => console.log(r));
console.log();
console.log("The work of each side (catena / LangChain.js; chunk chars in code points; same chunks: " +
    "equal texts at the same place in the sorted dumps):");
console.log();
console.log("| set | files | documents | chunks | chunk chars | same chunks |");
console.log("|---|---:|---:|---:|---:|---:|");
checks.forEach((r) => console.log(r));
if (failed) { console.error("run_load_split.sh: the text set's chunks differ between the sides"); process.exit(1); }
JS
