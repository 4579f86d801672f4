#!/bin/sh
# Before/after throughput of two catena binaries on the same machine in the same run: a
# change that must not cost speed (a refactor) is measured with this.
#
#     bench/run_ab.sh OLD_CATENA NEW_CATENA
#
# For each weight type of $TYPES on the ~110M random llama (the model run_engine.sh makes):
# prompt processing and decode (`catena bench`, $PROMPT_TOKENS then $GEN_TOKENS tokens, one
# sequence) and batched decode (`catena bench --parallel $PARALLEL`), $ALT invocations per
# side alternating OLD, NEW, OLD, ..., each the median of $REPS repetitions. Prints per row
# the medians over invocations and NEW / OLD.
#
# Environment: BUILD_DIR [build], MODEL_DIR [$BUILD_DIR/bench-models], TYPES [Q8_0 Q4_K],
# THREADS [2], ALT [5], REPS [3], PROMPT_TOKENS [256], GEN_TOKENS [64], PARALLEL [16].
set -eu

[ $# -eq 2 ] || { echo "usage: bench/run_ab.sh OLD_CATENA NEW_CATENA" >&2; exit 2; }
old=$1
new=$2
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
model_dir=${MODEL_DIR:-$build/bench-models}
types=${TYPES:-Q8_0 Q4_K}
threads=${THREADS:-2}
alt=${ALT:-5}
reps=${REPS:-3}
prompt=${PROMPT_TOKENS:-256}
gen=${GEN_TOKENS:-64}
par=${PARALLEL:-16}
mkmodel=${MKMODEL:-$build/tools/mkmodel}
for b in "$old" "$new" "$mkmodel"; do
    [ -x "$b" ] || { echo "run_ab: $b is not an executable" >&2; exit 1; }
done

mkdir -p "$model_dir"
base=$model_dir/llama-d768-l12-h12-kv4-ff2048-v32000
f16=$base-f16.gguf
if [ ! -s "$f16" ]; then
    "$mkmodel" -o "$f16.tmp" --dim 768 --layers 12 --heads 12 --kv-heads 4 --ff 2048 \
        --type f16 --seed 1 --ctx 2048
    mv "$f16.tmp" "$f16"
fi

# The value of "key": in a JSON line.
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "cpu: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $threads threads"
printf '%-6s %-16s %12s %12s %7s\n' type measure old new new/old
for t in $types; do
    m=$base-$(echo "$t" | tr '[:upper:]' '[:lower:]').gguf
    if [ "$t" != F16 ] && [ ! -s "$m" ]; then
        "$new" quantize "$f16" "$m.tmp" "$t" > /dev/null
        mv "$m.tmp" "$m"
    fi
    i=0
    while [ "$i" -lt "$alt" ]; do
        for side in old new; do
            bin=$old
            [ "$side" = new ] && bin=$new
            "$bin" bench -m "$m" -p "$prompt" -n "$gen" -t "$threads" -r "$reps" \
                > "$tmp/$side.1.$i"
            "$bin" bench -m "$m" -p 32 -n "$gen" -t "$threads" -r "$reps" -P "$par" \
                > "$tmp/$side.p.$i"
        done
        i=$((i + 1))
    done
    for row in "prefill_tok_s 1 prompt" "decode_tok_s 1 decode" "decode_tok_s p batched"; do
        set -- $row
        o=$(cat "$tmp"/old."$2".* | field "$1" | median)
        n=$(cat "$tmp"/new."$2".* | field "$1" | median)
        printf '%-6s %-16s %12s %12s %7s\n' "$t" "$3 tok/s" "$o" "$n" \
            "$(awk -v a="$o" -v b="$n" 'BEGIN { printf "%.3f", b / a }')"
    done
done
