#!/bin/sh
# Tokenizer throughput, catena against llama.cpp, on a few MB of generated mixed text.
#
#   scripts/setup-peers.sh && cmake --build build && bench/run_tokenize.sh [--size BYTES]
#       [--seed N] [--alt N] [--runs N] [--whole]
#
# For each vocabulary the two programs run alternately (A B A B ..., --alt times each, 5 by
# default); each invocation reports the median of --runs passes (3) after one warm-up pass;
# the table shows the median over the invocations. Work per pass (bench/tokbench.h): every
# line of the file, '\n' included, is one tokenize call, no BOS, parse_special off; --whole
# makes the entire file one call. One thread each (neither tokenizer uses threads; both
# are pinned to the same CPU when taskset exists). Prints a markdown table; writes nothing
# but the generated text, to a temporary file removed at exit.
#
# Programs: $BENCH_TOKENIZE and $LLAMACPP_TOK, else found under build/. Vocabularies:
# $CATENA_VOCAB_DIR (default ../shared/vocab). llama.cpp libraries: $CATENA_LLAMA_LIBDIR or
# bench/node_modules (scripts/setup-peers.sh).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
size=3000000 seed=1 alt=5 runs=3 whole=
while [ $# -gt 0 ]; do
    case $1 in
    --size) size=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --alt) alt=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --whole) whole=--whole; shift ;;
    *) echo "usage: $0 [--size BYTES] [--seed N] [--alt N] [--runs N] [--whole]" >&2; exit 2 ;;
    esac
done

find_prog() { find build -name "$1" -type f -perm -u+x 2>/dev/null | head -n 1; }
cat_bin=${BENCH_TOKENIZE:-$(find_prog bench_tokenize)}
ref_bin=${LLAMACPP_TOK:-$(find_prog llamacpp_tok)}
[ -x "$cat_bin" ] || { echo "bench_tokenize not built (cmake --build build)" >&2; exit 1; }
[ -x "$ref_bin" ] || { echo "llamacpp_tok not built (cmake --build build)" >&2; exit 1; }
vocab_dir=${CATENA_VOCAB_DIR:-$root/../shared/vocab}

pin=
if command -v taskset >/dev/null 2>&1 && taskset -c 0 true 2>/dev/null; then pin="taskset -c 0"; fi

text=$(mktemp "${TMPDIR:-/tmp}/catena-mixed-s$seed-XXXXXX")
trap 'rm -f "$text"' EXIT
trap 'exit 130' INT TERM
python3 bench/gen_text.py --size "$size" --seed "$seed" -o "$text"
bytes=$(wc -c < "$text")
lines=$(wc -l < "$text")

# Field of a one-line JSON object (numbers only).
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                                               else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "text: bench/gen_text.py --size $size --seed $seed ($bytes bytes, $lines lines), mode ${whole:-lines}," \
     "$alt alternating invocations x $runs passes, 1 thread${pin:+, $pin}"
echo "catena: $cat_bin"
echo "llama.cpp: $ref_bin (${CATENA_LLAMA_LIBDIR:-bench/node_modules})"
echo
echo "| vocab | tokens | catena MB/s | llama.cpp MB/s | catena / llama.cpp |"
echo "|---|---:|---:|---:|---:|"
status=0
for name in llama-spm llama-bpe qwen2 gpt-2; do
    model=$vocab_dir/ggml-vocab-$name.gguf
    [ -f "$model" ] || { echo "| $name | (missing $model) | | | |"; continue; }
    a=$(mktemp) b=$(mktemp)
    i=0 ok=1
    while [ $i -lt "$alt" ]; do
        $pin "$cat_bin" "$model" "$text" --runs "$runs" $whole >> "$a" || ok=0
        $pin "$ref_bin" bench "$model" "$text" --runs "$runs" $whole >> "$b" || ok=0
        i=$((i + 1))
    done
    if [ $ok = 0 ]; then
        echo "| $name | (a run failed) | | | |"
        status=1
    else
        ta=$(field tokens < "$a" | head -n 1) tb=$(field tokens < "$b" | head -n 1)
        ma=$(field mb_s < "$a" | median) mb=$(field mb_s < "$b" | median)
        tok=$ta
        [ "$ta" = "$tb" ] || { tok="$ta vs $tb (DIFFERENT)"; status=1; }
        echo "| $name | $tok | $ma | $mb | $(awk "BEGIN { printf \"%.2f\", $ma / $mb }") |"
    fi
    rm -f "$a" "$b"
done
exit $status
