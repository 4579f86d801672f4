#!/bin/sh
# Embedding throughput (issue 15: catena >= 1.0x llama.cpp in tokens/s): the shared engine
# through ctn_lm_embed (bench/embed_bench.c, up to 256 requests in flight as catena ingest
# keeps them) against llama.cpp (bench/llamacpp_embed.c: sequences packed into one
# llama_decode per batch with mean pooling, as llama.cpp's embedding example does), on the
# same chunks, the same models, the same threads.
#
#   scripts/setup-peers.sh && \
#   cmake --build build --target catena mkmodel load_split embed_bench llamacpp_embed && \
#   sh bench/run_embed.sh
#
# 1. Chunks: the corpus of bench/run_load_split.sh (bench/load_split/gen_corpus.mjs, Node.js)
#    split by bench/load_split (text set: 1000 / 200 characters), the first $LIMIT chunks.
# 2. Models: ../shared/models/stories260K.gguf, and a random-weight llama from
#    tests/tools/mkmodel (dim 512, 8 layers, 8 heads, 4 KV heads, FFN 1408, vocabulary 32000
#    from llama.cpp's SPM vocab), quantized to Q8_0 by `catena quantize`, made once into
#    $MODEL_DIR.
# 3. For each model the sides run alternately, catena then llama.cpp, $ALT times each; each
#    run embeds every chunk once after a warm-up and prints tokens/s. The table gives the
#    median over the runs and catena / llama.cpp (above 1: catena is faster).
# 4. Checks: both sides must count the same tokens (the script fails otherwise: same
#    tokenization, BOS included); the first run of each writes its first 8 vectors and the
#    cosines between the two sides' are printed (both L2-normalised mean pooling).
#
# llama.cpp's batch: a context of $LLAMA_CTX positions that is also its batch (n_batch =
# n_ubatch), up to 64 sequences, unified KV cache (the example's setting). 1024 was the
# fastest of 1024, 2048 and 4096 for both models on this machine (attention in a unified
# cache spans every sequence of the batch, masked, so a larger batch costs more per token).
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr.
# Environment (defaults in brackets): BUILD_DIR [build]  MODEL_DIR [$BUILD_DIR/bench-models]
#   ALT [5]  LIMIT [48]  THREADS [2]  LLAMA_CTX [1024]  SCALE [1] (of the corpus)
#   MODELS [the two above; paths separated by spaces]  RAW [none] (RAW=FILE keeps the lines)
#   CATENA_LLAMA_LIBDIR  llama.cpp libraries [bench/node_modules/...]
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
model_dir=${MODEL_DIR:-$build/bench-models}
alt=${ALT:-5}
limit=${LIMIT:-48}
threads=${THREADS:-2}
lctx=${LLAMA_CTX:-1024}
scale=${SCALE:-1}
catena=$build/catena
mkmodel=$build/tools/mkmodel
split=$build/bench/load_split
cside=$build/bench/embed_bench
lside=$build/bench/llamacpp_embed

say() { echo "$*" >&2; }
die() {
    say "run_embed.sh: $*"
    exit 1
}
for p in "$catena" "$mkmodel" "$split" "$cside" "$lside"; do
    [ -x "$p" ] || die "$p not built (cmake --build $build --target catena mkmodel load_split embed_bench llamacpp_embed)"
done
command -v node >/dev/null 2>&1 || die "node not found (the corpus generator needs Node.js)"
if [ ! -d bench/node_modules ] && [ -z "${CATENA_LLAMA_LIBDIR:-}" ]; then
    die "llama.cpp is not installed: run scripts/setup-peers.sh"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-embed-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
say "writing the corpus and its chunks"
node bench/load_split/gen_corpus.mjs "$tmp/corpus" "$scale"
"$split" "$tmp/corpus" --set text --reps 1 --dump "$tmp" > /dev/null
chunks=$tmp/text.dump

mkdir -p "$model_dir"
big=$model_dir/llama-d512-l8-h8-kv4-ff1408-v32000
if [ -z "${MODELS:-}" ]; then
    if [ ! -s "$big-q8_0.gguf" ]; then
        say "writing $big-q8_0.gguf"
        "$mkmodel" -o "$big-f16.gguf.tmp" --dim 512 --layers 8 --heads 8 --kv-heads 4 \
            --ff 1408 --type f16 --seed 1 --ctx 2048 >&2
        mv "$big-f16.gguf.tmp" "$big-f16.gguf"
        "$catena" quantize "$big-f16.gguf" "$big-q8_0.gguf.tmp" Q8_0 >&2
        mv "$big-q8_0.gguf.tmp" "$big-q8_0.gguf"
    fi
    MODELS="../shared/models/stories260K.gguf $big-q8_0.gguf"
fi

load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
raw=$tmp/raw.jsonl
: > "$raw"
k=0
for m in $MODELS; do
    [ -s "$m" ] || die "no model $m"
    k=$((k + 1))
    i=1
    while [ "$i" -le "$alt" ]; do
        vc= vl=
        if [ "$i" = 1 ]; then vc="--vectors $tmp/vec-catena-$k" vl="--vectors $tmp/vec-llama-$k"; fi
        say "$(basename "$m"): run $i of $alt: catena"
        # shellcheck disable=SC2086
        out=$("$cside" -m "$m" --chunks "$chunks" --limit "$limit" --threads "$threads" $vc \
              2> "$tmp/err") || die "catena failed: $(tail -n 3 "$tmp/err")"
        echo "$k $out" >> "$raw"
        say "$(basename "$m"): run $i of $alt: llama.cpp"
        # shellcheck disable=SC2086
        out=$("$lside" -m "$m" --chunks "$chunks" --limit "$limit" --threads "$threads" \
              --ctx "$lctx" $vl 2> "$tmp/err") || die "llama.cpp failed: $(tail -n 3 "$tmp/err")"
        echo "$k $out" >> "$raw"
        i=$((i + 1))
    done
done
[ -n "${RAW:-}" ] && cp "$raw" "$RAW"
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | grep -o 'avx512f\|avx2\|amx_tile' | sort -u | tr '\n' ' ')
node - "$raw" "$tmp" "$commit" "${cpu:-unknown} x $(nproc) (${flags% })" "$load_start" \
    "$load_end" "$alt" "$limit" "$threads" "$lctx" "$MODELS" <<'JS'
const fs = require("fs");
const [raw, tmp, commit, cpu, load0, load1, alt, limit, threads, lctx, models] = process.argv.slice(2);
const runs = {};
for (const line of fs.readFileSync(raw, "utf8").split("\n").filter(Boolean)) {
    const sp = line.indexOf(" ");
    const j = JSON.parse(line.slice(sp + 1));
    (runs[`${line.slice(0, sp)} ${j.impl}`] ??= []).push(j);
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); const n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const f = (x, d = 0) => x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const vecs = (p) => fs.existsSync(p) ? new Float32Array(new Uint8Array(fs.readFileSync(p)).buffer) : null;
let failed = false, isa = "";
const rows = [];
models.split(" ").forEach((m, idx) => {
    const k = idx + 1, c = runs[`${k} catena`], l = runs[`${k} llama.cpp`];
    if (!c || !l) return;
    isa = l[0].isa;
    const tc = med(c.map((j) => j.tok_s)), tl = med(l.map((j) => j.tok_s));
    const ct = new Set(c.map((j) => j.tokens)), lt = new Set(l.map((j) => j.tokens));
    const same = ct.size === 1 && lt.size === 1 && c[0].tokens === l[0].tokens && c[0].chunks === l[0].chunks;
    if (!same) failed = true;
    const a = vecs(`${tmp}/vec-catena-${k}`), b = vecs(`${tmp}/vec-llama-${k}`), d = c[0].dim;
    let cmin = 1, csum = 0, nv = 0;
    for (let v = 0; a && b && (v + 1) * d <= Math.min(a.length, b.length); v++, nv++) {
        let x = 0, na = 0, nb = 0;
        for (let i = 0; i < d; i++) { const p = a[v * d + i], q = b[v * d + i]; x += p * q; na += p * p; nb += q * q; }
        const cos = x / Math.sqrt(na * nb);
        cmin = Math.min(cmin, cos); csum += cos;
    }
    const name = m.split("/").pop();
    rows.push(`| ${name} | ${d} | ${c[0].chunks} | ${f(c[0].tokens)} / ${f(l[0].tokens)}${same ? "" : " **differ**"} | ` +
        `${f(tc)} | ${f(tl)} | **${(tc / tl).toFixed(2)}×** | ${f(med(c.map((j) => j.chunks_s)), 1)} | ` +
        `${f(med(l.map((j) => j.chunks_s)), 1)} | ${nv ? `${cmin.toFixed(6)} / ${(csum / nv).toFixed(6)} (${nv})` : "—"} | ` +
        `${c[0].prefix_hits} |`);
});
console.log(`- **Date:** ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC; ` +
    `**machine:** ${cpu}; load average ${load0} at the start, ${load1} at the end`);
console.log(`- **catena:** commit ${commit}; bench/embed_bench (ctn_lm_embed, 256 in flight, mean pooling, ${threads} threads)`);
console.log(`- **Peer:** llama.cpp from node-llama-cpp 3.22.1 via bench/llamacpp_embed (dlopen), CPU variant ${isa}; ` +
    `embeddings on, pooling mean, n_ctx = n_batch = n_ubatch = ${lctx}, up to 64 sequences per llama_decode, ` +
    `unified KV cache, ${threads} threads; vectors L2-normalised`);
console.log(`- **Work:** the first ${limit} chunks (1000 / 200 characters) of the load+split corpus's text set; ` +
    `${alt} alternating runs per side, each one timed pass after a warm-up (tokenizing included); medians over the runs`);
console.log("- **Command:** `sh bench/run_embed.sh`");
console.log();
console.log("| model | dim | chunks | tokens catena / llama.cpp | catena tok/s | llama.cpp tok/s | catena / llama.cpp | catena chunks/s | llama.cpp chunks/s | cosine min / mean (vectors) | catena prefix-cache hits |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
rows.forEach((r) => console.log(r));
if (failed) { console.error("run_embed.sh: the two sides did not count the same tokens"); process.exit(1); }
JS
