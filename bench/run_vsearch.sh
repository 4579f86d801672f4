#!/bin/sh
# Exact kNN (issue 16): catena's vector search (stdlib/vsearch.h, f32 / f16 / int8) against
# sqlite-vec (vec0 KNN through better-sqlite3) and FAISS (IndexFlatIP, Debian's libfaiss-dev)
# on the same vectors and queries, in the same run; then BM25 and hybrid retrieval latency
# over a knowledge base of synthetic chunks (no peer).
#
#   scripts/setup-peers.sh --vsearch && cmake --build build --target vsearch_bench membw && \
#   sh bench/run_vsearch.sh
#
# 1. Data: bench/vsearch_bench gen writes $N unit vectors of $DIM floats and $QUERIES unit
#    queries (Gaussian directions, seed $SEED) to one file that all three sides read.
# 2. Sides, alternating, $ALT rounds (catena, FAISS, sqlite-vec, catena, ...); every side
#    searches every query for its k = 10 best by inner product (= cosine on unit vectors)
#    after an untimed pass, $REPS timed passes per round (sqlite-vec: 1):
#    - catena: f32, f16 and int8 (Q8_0 scan, the best 80 rescored in f32), on 1 thread and
#      on all ($(nproc)), one query per call, and 4 queries per call on 1 thread;
#    - FAISS: omp_set_num_threads(1) and all, 1 and 4 queries per call (bench/faiss_knn.cc,
#      built here with g++ when libfaiss-dev is installed, skipped otherwise);
#    - sqlite-vec: one query per statement (bench/vsearch/sqlite_vec.mjs; its database is
#      made once, then reused by every round).
#    The table gives medians over the rounds of each side's median pass.
# 3. Checks: recall@10 of each catena storage type and of sqlite-vec against FAISS's hits
#    (the first round's); the script fails when catena f32's is under 0.999.
# 4. Bandwidth: bench/membw (read, 1 and all threads) before the first round and after the
#    last; GB/s of a search = the bytes of the stored rows it reads / its time.
# 5. Knowledge base: bench/vsearch_bench kb: $CHUNKS chunks (the file's vectors as their
#    embeddings), $KB_QUERIES queries, BM25 and hybrid one after the other; p50 / p99.
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr.
# Environment (defaults in brackets): BUILD_DIR [build]  ALT [3]  REPS [2]  N [100000]
#   DIM [384]  QUERIES [200]  SEED [1]  CHUNKS [100000]  KB_QUERIES [200]  RAW [none]
#   (RAW=FILE keeps the JSON lines)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
alt=${ALT:-3}
reps=${REPS:-2}
n=${N:-100000}
dim=${DIM:-384}
nq=${QUERIES:-200}
seed=${SEED:-1}
chunks=${CHUNKS:-100000}
kbq=${KB_QUERIES:-200}
cside=$build/bench/vsearch_bench
membw=$build/bench/membw
ncpu=$(nproc)

say() { echo "$*" >&2; }
die() {
    say "run_vsearch.sh: $*"
    exit 1
}
for p in "$cside" "$membw"; do
    [ -x "$p" ] || die "$p not built (cmake --build $build --target vsearch_bench membw)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-vsearch-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
data=$tmp/vectors.bin
say "writing $n x $dim vectors and $nq queries (seed $seed)"
"$cside" gen "$data" --n "$n" --dim "$dim" --queries "$nq" --seed "$seed"

faiss=
if [ -f /usr/include/faiss/IndexFlat.h ] && command -v g++ >/dev/null 2>&1; then
    say "building bench/faiss_knn.cc"
    g++ -O2 -std=c++17 -o "$tmp/faiss_knn" bench/faiss_knn.cc -lfaiss -fopenmp -lblas \
        -llapack || die "faiss_knn does not build against libfaiss-dev"
    faiss=$tmp/faiss_knn
else
    say "FAISS skipped: libfaiss-dev (or g++) is not installed; scripts/setup-peers.sh --vsearch installs it"
fi
sv=
if command -v node >/dev/null 2>&1 && [ -f bench/vsearch/node_modules/sqlite-vec/package.json ] &&
    [ -f bench/vsearch/node_modules/better-sqlite3/package.json ]; then
    sv=bench/vsearch/sqlite_vec.mjs
else
    say "sqlite-vec skipped: bench/vsearch/node_modules is missing; scripts/setup-peers.sh --vsearch installs it"
fi

raw=$tmp/raw.jsonl
: > "$raw"
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
say "membw"
echo "membw $("$membw" --threads-max "$ncpu")" >> "$raw"
i=1
while [ "$i" -le "$alt" ]; do
    ids=
    [ "$i" = 1 ] && ids="--ids $tmp/ids-catena"
    say "round $i of $alt: catena"
    # shellcheck disable=SC2086
    "$cside" knn "$data" --reps "$reps" $ids --config f32:1:1 --config f32:0:1 \
        --config f16:1:1 --config f16:0:1 --config int8:1:1 --config int8:0:1 \
        --config f32:1:4 --config f16:1:4 --config int8:1:4 | sed 's/^/knn /' >> "$raw"
    if [ -n "$faiss" ]; then
        ids=
        [ "$i" = 1 ] && ids="--ids $tmp/ids-faiss"
        say "round $i of $alt: FAISS"
        # shellcheck disable=SC2086
        "$faiss" "$data" --reps "$reps" $ids --config 1:1 --config 0:1 --config 1:4 \
            --config 0:4 | sed 's/^/knn /' >> "$raw"
    fi
    if [ -n "$sv" ]; then
        ids=
        [ "$i" = 1 ] && ids="--ids $tmp/ids-sqlite-vec"
        say "round $i of $alt: sqlite-vec$([ "$i" = 1 ] && echo ' (loading the vectors first)')"
        # shellcheck disable=SC2086
        node "$sv" "$data" "$tmp/vec.db" --reps 1 $ids | sed 's/^/knn /' >> "$raw"
    fi
    i=$((i + 1))
done
say "membw"
echo "membw $("$membw" --threads-max "$ncpu")" >> "$raw"
load_knn=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
rm -f "$tmp/vec.db"
say "knowledge base: $chunks chunks, $kbq queries"
echo "kb $("$cside" kb "$data" --db "$tmp/kb.sqlite" --chunks "$chunks" --queries "$kbq" \
    --seed "$seed")" >> "$raw"
[ -n "${RAW:-}" ] && cp "$raw" "$RAW"
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | grep -o 'avx512f\|avx512_vnni\|avx2\|amx_tile' | sort -u | tr '\n' ' ')
node - "$raw" "$tmp" "$commit" "${cpu:-unknown} x $ncpu (${flags% })" "$load_start" "$load_knn" \
    "$load_end" "$alt" "$reps" "$ncpu" <<'JS'
const fs = require("fs");
const [raw, tmp, commit, cpu, load0, loadk, load1, alt, reps, ncpu] = process.argv.slice(2);
const med = (a) => { const s = [...a].sort((x, y) => x - y); const n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const f = (x, d = 2) => x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const runs = {}, membw = [];
let kb = null, info = null;
for (const line of fs.readFileSync(raw, "utf8").split("\n").filter(Boolean)) {
    const sp = line.indexOf(" "), tag = line.slice(0, sp), j = JSON.parse(line.slice(sp + 1));
    if (tag === "membw") membw.push(j);
    else if (tag === "kb") kb = j;
    else { (runs[`${j.impl} ${j.dtype} ${j.threads} ${j.batch}`] ??= []).push(j); info ??= j; }
}
const get = (impl, dtype, threads, batch) => {
    const r = runs[`${impl} ${dtype} ${threads} ${batch}`];
    return r && { ms: med(r.map((j) => j.ms_query)), call: med(r.map((j) => j.ms_call)),
                  gb: med(r.map((j) => j.gb_s)), bytes: r[0].matrix_bytes, n: r.length };
};
const bw = (t) => med(membw.map((m) => m.read_gb_s[String(t)]));
const ids = (p) => fs.existsSync(p) ? new BigInt64Array(new Uint8Array(fs.readFileSync(p)).buffer) : null;
const ref = ids(`${tmp}/ids-faiss`);
const recall = (p) => {
    const a = ids(p);
    if (!a || !ref) return null;
    const k = info.k, nq = info.nq;
    let same = 0;
    for (let q = 0; q < nq; q++) {
        const s = new Set(ref.subarray(q * k, (q + 1) * k));
        for (let i = 0; i < k; i++) if (s.has(a[q * k + i])) same++;
    }
    return same / (nq * k);
};
const rc = { f32: recall(`${tmp}/ids-catena.f32`), f16: recall(`${tmp}/ids-catena.f16`),
             int8: recall(`${tmp}/ids-catena.int8`), sv: recall(`${tmp}/ids-sqlite-vec`) };
const N = ncpu;
console.log(`- **Date:** ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC; ` +
    `**machine:** ${cpu}; load average ${load0} at the start, ${loadk} after the kNN rounds, ${load1} at the end`);
console.log(`- **catena:** commit ${commit}; bench/vsearch_bench (ctn_vs_search, inner product, k = ${info.k})`);
console.log(`- **Peers:** FAISS IndexFlatIP (Debian libfaiss-dev, bench/faiss_knn.cc, omp threads set)` +
    `${get("faiss", "f32", 1, 1) ? "" : " — **skipped: not installed**"}; sqlite-vec ` +
    `${runs["sqlite-vec f32 1 1"] ? runs["sqlite-vec f32 1 1"][0].version : "— **skipped: not installed**"} ` +
    `vec0 (cosine) through better-sqlite3, \`WHERE embedding MATCH ? AND k = 10\``);
console.log(`- **Work:** ${info.n.toLocaleString("en-US")} × ${info.dim} random unit f32 vectors, ${info.nq} queries ` +
    `(seeded); ${alt} alternating rounds, ${reps} timed passes per round after an untimed one (sqlite-vec 1); medians`);
console.log(`- **Bandwidth (bench/membw, read, before and after):** ${f(bw(1), 1)} GB/s on 1 thread, ` +
    `${f(bw(N), 1)} GB/s on ${N} (${membw.map((m) => `${f(m.read_gb_s["1"], 1)} / ${f(m.read_gb_s[String(N)], 1)}`).join(", then ")})`);
console.log("- **Command:** `sh bench/run_vsearch.sh`");
console.log();
console.log("| side | storage | threads | queries per call | ms / query | ms / call | GB/s read | of membw | recall@10 vs FAISS |");
console.log("|---|---|---:|---:|---:|---:|---:|---:|---:|");
const row = (name, impl, dtype, t, b, rec) => {
    const r = get(impl, dtype, t, b);
    if (!r) return;
    console.log(`| ${name} | ${dtype} | ${t} | ${b} | ${f(r.ms, 3)} | ${f(r.call, 3)} | ${f(r.gb, 1)} | ` +
        `${f(100 * r.gb / bw(t), 0)}% | ${rec == null ? "—" : rec.toFixed(4)} |`);
};
for (const d of ["f32", "f16", "int8"]) {
    row("catena", "catena", d, 1, 1, rc[d]);
    row("catena", "catena", d, N, 1, rc[d]);
}
for (const d of ["f32", "f16", "int8"]) row("catena", "catena", d, 1, 4, rc[d]);
for (const [t, b] of [[1, 1], [N, 1], [1, 4], [N, 4]]) row("FAISS", "faiss", "f32", t, b, 1);
row("sqlite-vec", "sqlite-vec", "f32", 1, 1, rc.sv);
console.log();
const c = (d, t, b) => get("catena", d, t, b);
const ratio = (p, q) => (p && q ? `${(p.ms / q.ms).toFixed(2)}×` : "—");
const fa1 = get("faiss", "f32", 1, 1), faN = get("faiss", "f32", N, 1), sv = get("sqlite-vec", "f32", 1, 1);
console.log(`| comparison (one query per call) | peer ms ÷ catena ms |`);
console.log(`|---|---:|`);
console.log(`| FAISS 1 thread ÷ catena f32 1 thread | ${ratio(fa1, c("f32", 1, 1))} |`);
console.log(`| FAISS ${N} threads ÷ catena f32 ${N} threads | ${ratio(faN, c("f32", N, 1))} |`);
console.log(`| sqlite-vec ÷ catena f32 1 thread | ${ratio(sv, c("f32", 1, 1))} |`);
console.log(`| sqlite-vec ÷ catena f32 ${N} threads | ${ratio(sv, c("f32", N, 1))} |`);
console.log(`| catena f32 ÷ int8, 1 thread (target ≥ 2×) | ${ratio(c("f32", 1, 1), c("int8", 1, 1))} |`);
console.log(`| catena f32 ÷ int8, ${N} threads | ${ratio(c("f32", N, 1), c("int8", N, 1))} |`);
for (const d of ["f32", "f16", "int8"]) {
    const one = c(d, 1, 1), four = c(d, 1, 4);
    if (one && four) console.log(`| catena ${d}: 4 queries per call ÷ 1, time per call (target ≤ 1.3×) | ${(four.call / one.call).toFixed(2)}× |`);
}
const f4 = get("faiss", "f32", 1, 4);
if (fa1 && f4) console.log(`| FAISS: 4 queries per call ÷ 1, time per call | ${(f4.call / fa1.call).toFixed(2)}× |`);
if (kb) {
    console.log();
    console.log(`Knowledge base: ${kb.chunks.toLocaleString("en-US")} chunks of 30–80 words (Zipf over 20,000 made-up words), ` +
        `${kb.dim}-dimensional vectors; built in ${f(kb.build_s, 1)} s through ctn_kb_put; ${kb.queries} queries of 2–5 words; ` +
        `k = 10 (hybrid: fetch_k 20, fused by reciprocal rank); the first hybrid search, which reads the vectors into memory, took ` +
        `${f(kb.first_hybrid_ms, 1)} ms and is not counted.`);
    console.log();
    console.log("| retrieval | p50 ms | p99 ms | mean hits |");
    console.log("|---|---:|---:|---:|");
    console.log(`| BM25 (FTS5) | ${f(kb.bm25_p50_ms, 2)} | ${f(kb.bm25_p99_ms, 2)} | ${f(kb.bm25_mean_hits, 1)} |`);
    console.log(`| hybrid (BM25 + vectors, f32 1 thread) | ${f(kb.hybrid_p50_ms, 2)} | ${f(kb.hybrid_p99_ms, 2)} | ${f(kb.hybrid_mean_hits, 1)} |`);
}
if (rc.f32 != null && rc.f32 < 0.999) {
    console.error(`run_vsearch.sh: catena f32 recall@10 against FAISS is ${rc.f32}`);
    process.exit(1);
}
JS
