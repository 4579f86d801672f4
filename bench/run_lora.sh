#!/bin/sh
# LoRA serving (issue: adapters per node): aggregate decode of 32 sequences with 0, 1, 4 and
# 16 distinct adapters, catena (every sequence in every step, whatever its adapter) against
# llama.cpp (which applies one set of adapters to a whole batch, so each adapter's sequences
# run as a batch of their own, one group after another), in the same run.
#
#   scripts/setup-peers.sh && cmake --build build && sh bench/run_lora.sh
#
# - Model: the ~110M Q8_0 model of bench/run_engine.sh (made there if missing).
# - Adapters: tests/tools/mklora, rank $RANK on q, k, v, o, seeds 1..16, in $LORA_TYPE (F16 by
#   default: what llama.cpp's convert_lora_to_gguf.py writes unless told otherwise). The
#   same files go to both programs. Sequence s uses adapter s mod count.
# - Each count: `catena bench --parallel $PAR --lora ...` and `bench/llamacpp_gen --parallel
#   $PAR --lora ...` alternately, $ALT invocations each, each the median of $REPS after a
#   warm-up; medians. The table gives both rates, catena / llama.cpp, and each program
#   against its own no-adapter rate; then catena's adapter load time and memory.
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr.
#
# Environment (defaults in brackets):
#   BUILD_DIR [build]  MODEL_DIR [$BUILD_DIR/bench-models]  THREADS [2]  PAR [32]
#   COUNTS ["0 1 4 16"]  ALT [3]  REPS [3]  PROMPT_TOKENS [64]  GEN_TOKENS [32]  RANK [16]
#   LORA_TYPE [f16]  (f16 or f32)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
model_dir=${MODEL_DIR:-$build/bench-models}
threads=${THREADS:-2}
par=${PAR:-32}
counts=${COUNTS:-0 1 4 16}
alt=${ALT:-3}
reps=${REPS:-3}
prompt=${PROMPT_TOKENS:-64}
gen=${GEN_TOKENS:-32}
rank=${RANK:-16}
ltype=${LORA_TYPE:-f16}
catena=$build/catena
lgen=$build/bench/llamacpp_gen
mklora=$build/tools/mklora

say() { echo "$*" >&2; }
for p in "$catena" "$lgen" "$mklora"; do
    [ -x "$p" ] || {
        say "$p not built (cmake --build $build)"
        exit 1
    }
done
case $ltype in f16) f16=--f16 ;; f32) f16= ;; *) say "LORA_TYPE is f16 or f32"; exit 2 ;; esac
model=$model_dir/llama-d768-l12-h12-kv4-ff2048-v32000-q8_0.gguf
if [ ! -s "$model" ]; then
    say "making the models (bench/run_engine.sh's)"
    BUILD_DIR=$build MODEL_DIR=$model_dir TYPES=Q8_0 THREADS=1 ALT=1 REPS=1 \
        sh bench/run_engine.sh > /dev/null
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-lora-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
raw=$tmp/raw
: > "$raw"
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

max=0
for c in $counts; do [ "$c" -gt "$max" ] && max=$c; done
for i in $(seq "$max"); do
    "$mklora" "$model" -o "$tmp/a$i.gguf" --rank "$rank" --targets q,k,v,o --seed "$i" $f16
done
list() { # the first $1 adapters, comma-separated
    i=1
    out=
    while [ "$i" -le "$1" ]; do
        out="$out${out:+,}$tmp/a$i.gguf"
        i=$((i + 1))
    done
    echo "$out"
}
num() { # json key
    echo "$1" | sed -n "s/.*\"$2\": *\([0-9.eE+-]*\).*/\1/p"
}

for n in $counts; do
    say "$n adapters: $alt alternating invocations"
    opt=
    [ "$n" -gt 0 ] && opt="--lora $(list "$n")"
    for i in $(seq "$alt"); do
        # shellcheck disable=SC2086
        c=$("$catena" bench -m "$model" --prompt-tokens "$prompt" --gen-tokens "$gen" \
            --threads "$threads" --reps "$reps" --parallel "$par" $opt 2>"$tmp/err") ||
            { say "catena failed: $(tail -n 3 "$tmp/err")"; exit 1; }
        # shellcheck disable=SC2086
        l=$("$lgen" -m "$model" --prompt-tokens "$prompt" --gen-tokens "$gen" \
            --threads "$threads" --reps "$reps" --parallel "$par" $opt 2>"$tmp/err") ||
            { say "llama.cpp failed: $(tail -n 3 "$tmp/err")"; exit 1; }
        echo "$n catena $(num "$c" decode_tok_s) $(num "$c" adapter_load_ms) $(num "$c" adapter_mb)" >> "$raw"
        echo "$n llama $(num "$l" decode_tok_s)" >> "$raw"
        say "  catena $(num "$c" decode_tok_s)  llama.cpp $(num "$l" decode_tok_s)"
    done
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain 2>/dev/null)" ] && commit="$commit (with uncommitted changes)"
echo "## LoRA: $par sequences decoding with $(echo "$counts" | sed 's/ /, /g') adapters — catena vs llama.cpp (issue 6)"
echo
echo "- **Date:** $(date -u '+%Y-%m-%d %H:%M') UTC; **machine:** $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc); load average $load_start at the start"
echo "- **catena:** commit $commit; \`catena bench --parallel $par --lora a1.gguf,...\`"
echo "- **Peer:** llama.cpp (node-llama-cpp) via \`bench/llamacpp_gen --parallel $par --lora a1.gguf,...\`: each adapter's sequences as one batch of their own, one group after another; the rate is all tokens over the summed times"
echo "- **Work:** the ~110M Q8_0 model, $threads threads, prompts of $prompt tokens, $gen greedy steps; adapters rank $rank on q, k, v, o in $(echo "$ltype" | tr a-z A-Z) (tests/tools/mklora, the same files for both); $alt alternating invocations, each the median of $reps repetitions; medians"
echo "- **Command:** \`BUILD_DIR=$build sh bench/run_lora.sh\`"
echo
echo "| adapters | catena tok/s | llama.cpp tok/s | catena / llama.cpp | catena vs its no-adapter rate | llama.cpp vs its no-adapter rate |"
echo "|---:|---:|---:|---:|---:|---:|"
python3 - "$raw" "$counts" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
counts = sys.argv[2].split()
def med(n, who, col=2):
    v = [float(r[col]) for r in rows if r[0] == n and r[1] == who and len(r) > col and r[col]]
    return statistics.median(v) if v else None
c0, l0 = med("0", "catena"), med("0", "llama")
for n in counts:
    c, l = med(n, "catena"), med(n, "llama")
    rc = f"{c / c0:.2f}×" if c0 else "–"
    rl = f"{l / l0:.2f}×" if l0 else "–"
    print(f"| {n} | {c:,.1f} | {l:,.1f} | {c / l:.2f}× | {rc} | {rl} |")
print()
for n in counts:
    if n == "0":
        continue
    ms, mb = med(n, "catena", 3), med(n, "catena", 4)
    if ms is not None and mb is not None:
        print(f"- {n} adapter(s): catena loads each in {ms:.1f} ms; each holds {mb:.2f} MiB")
PY
