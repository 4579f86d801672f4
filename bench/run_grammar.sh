#!/bin/sh
# Decode under a JSON-schema grammar against unconstrained decode, catena and llama.cpp in the
# same run, and catena's mask cost per token.
#
#   scripts/setup-peers.sh && cmake --build build --target catena mkmodel grammar_bench && \
#       sh bench/run_grammar.sh
#
# 1. The model (made once, kept in $MODEL_DIR, the same files as bench/run_engine.sh): the
#    ~110M random llama (tests/tools/mkmodel: dim 768, 12 layers, 12 heads, 4 KV heads, FFN
#    2048, llama-spm vocabulary of 32000 tokens, untied output, F16), quantized to Q8_0 by
#    `catena quantize` (133 MB).
# 2. The schema below (an object with strings, an integer, an enum, an array of strings and an
#    array of objects), converted by catena's ctn_json_schema_to_gbnf inside grammar_bench:
#    both engines get the same GBNF text.
# 3. $ALT rounds; each runs, one after the other, `grammar_bench decode` for catena without and
#    with the grammar, then llama.cpp (its sampler chain: greedy, or the grammar sampler and
#    greedy) without and with it. Each invocation prefills a 64-token prompt and decodes up to
#    $GEN tokens greedily, $REPS repetitions with different prompts after a warm-up, and
#    reports the median decode tok/s (tokens after the first over the time from the first to
#    the last; under the grammar a repetition ends where the grammar does). The table gives
#    the median over the rounds and the ratios.
# 4. `grammar_bench mask`: catena's ctn_grammar_mask alone along a random path of 256 allowed
#    tokens, median and worst microseconds, for the schema on llama-spm and for the worst case
#    of the issue, a grammar that allows any JSON string, on qwen2's 152k-token vocabulary,
#    started inside the string; both as the engine runs it (a state finds the masks of states
#    it was in) and --cold (every mask a whole trie walk).
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr.
# Environment (defaults in brackets): BUILD_DIR [build], MODEL_DIR [$BUILD_DIR/bench-models],
#   ALT [5], REPS [3], GEN [256], THREADS [2], CTN_SHARED [../shared],
#   CATENA_LLAMA_LIBDIR (llama.cpp's libraries) [bench/node_modules/...].
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
model_dir=${MODEL_DIR:-$build/bench-models}
alt=${ALT:-5}
reps=${REPS:-3}
gen=${GEN:-256}
threads=${THREADS:-2}
shared=${CTN_SHARED:-../shared}
catena=$build/catena
mkmodel=$build/tools/mkmodel
gb=$build/bench/grammar_bench

say() { echo "$*" >&2; }
for p in "$catena" "$mkmodel" "$gb"; do
    [ -x "$p" ] || {
        say "$p not built (cmake --build $build --target catena mkmodel grammar_bench)"
        exit 1
    }
done
if [ ! -d bench/node_modules ] && [ -z "${CATENA_LLAMA_LIBDIR:-}" ]; then
    say "llama.cpp is not installed: run scripts/setup-peers.sh"
    exit 1
fi
for v in llama-spm qwen2; do
    [ -f "$shared/vocab/ggml-vocab-$v.gguf" ] || {
        say "no $shared/vocab/ggml-vocab-$v.gguf (set CTN_SHARED)"
        exit 1
    }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-grammar-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

mkdir -p "$model_dir"
base=$model_dir/llama-d768-l12-h12-kv4-ff2048-v32000
f16=$base-f16.gguf
model=$base-q8_0.gguf
if [ ! -s "$f16" ]; then
    say "writing $f16"
    "$mkmodel" -o "$f16.tmp" --dim 768 --layers 12 --heads 12 --kv-heads 4 --ff 2048 \
        --type f16 --seed 1 --ctx 2048 --vocab "$shared/vocab/ggml-vocab-llama-spm.gguf"
    mv "$f16.tmp" "$f16"
fi
if [ ! -s "$model" ] || [ -n "$(find "$f16" -newer "$model")" ]; then
    say "catena quantize -> $model"
    "$catena" quantize "$f16" "$model.tmp" Q8_0 >&2
    mv "$model.tmp" "$model"
fi

schema=$tmp/schema.json
cat > "$schema" <<'EOF'
{"type": "object",
 "properties": {
   "name": {"type": "string", "maxLength": 40},
   "age": {"type": "integer"},
   "role": {"enum": ["admin", "editor", "viewer"]},
   "email": {"type": "string"},
   "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
   "orders": {"type": "array", "items": {"type": "object",
       "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"},
                      "gift": {"type": "boolean"}},
       "required": ["sku", "qty"]}}
 },
 "required": ["name", "age", "role", "orders"]}
EOF
anystr=$tmp/anystring.gbnf
cat > "$anystr" <<'EOF'
root ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\""
EOF

raw=$tmp/raw.txt
: > "$raw"
run() { # tag cmd...
    tag=$1
    shift
    if out=$("$@" 2>"$tmp/err"); then
        printf '%s %s\n' "$tag" "$(echo "$out" | tail -n 1)" >> "$raw"
    else
        say "  $tag failed: $(tail -n 3 "$tmp/err")"
        exit 1
    fi
}
args="-m $model --gen-tokens $gen --reps $reps --threads $threads"
i=0
while [ $i -lt "$alt" ]; do
    say "round $((i + 1)) of $alt"
    # shellcheck disable=SC2086
    run catena-free "$gb" decode --engine catena $args
    # shellcheck disable=SC2086
    run catena-schema "$gb" decode --engine catena $args --schema "$schema"
    # shellcheck disable=SC2086
    run llama-free "$gb" decode --engine llama $args
    # shellcheck disable=SC2086
    run llama-schema "$gb" decode --engine llama $args --schema "$schema"
    i=$((i + 1))
done
say "mask costs"
spm=$shared/vocab/ggml-vocab-llama-spm.gguf
qwen=$shared/vocab/ggml-vocab-qwen2.gguf
run mask-schema-spm "$gb" mask --vocab "$spm" --schema "$schema"
run mask-schema-spm-cold "$gb" mask --vocab "$spm" --schema "$schema" --cold
run mask-anystring-qwen2 "$gb" mask --vocab "$qwen" --grammar "$anystr" --start '"'
run mask-anystring-qwen2-cold "$gb" mask --vocab "$qwen" --grammar "$anystr" --start '"' \
    --steps 64 --cold

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
python3 - "$raw" "$alt" "$reps" "$gen" "$threads" "$commit" "${cpu:-unknown} x $(nproc)" \
    "$load_start" "$load_end" <<'EOF'
import datetime, json, statistics, sys

raw, alt, reps, gen, threads, commit, cpu, load0, load1 = sys.argv[1:10]
runs = {}
for line in open(raw):
    tag, js = line.split(" ", 1)
    runs.setdefault(tag, []).append(json.loads(js))
med = lambda tag: statistics.median(r["decode_tok_s"] for r in runs[tag])
toks = lambda tag: sum(sum(r["tokens"]) for r in runs[tag])
cf, cs, lf, ls = (med(t) for t in ("catena-free", "catena-schema", "llama-free", "llama-schema"))
print(f"- **Date:** {datetime.date.today()}; commit {commit}")
print(f"- **Machine:** {cpu}; load average {load0} at the start, {load1} at the end")
print(f"- **Command:** `ALT={alt} REPS={reps} GEN={gen} THREADS={threads} sh bench/run_grammar.sh`")
print(f"- **Work:** the ~110M random llama, Q8_0, {threads} threads, 64-token prompts, up to "
      f"{gen} greedy tokens; {alt} rounds alternating the four runs, each the median of {reps} "
      "repetitions; medians over the rounds")
print()
print("| engine | unconstrained tok/s | JSON schema tok/s | schema / unconstrained | tokens under the schema |")
print("|---|---:|---:|---:|---:|")
print(f"| catena | {cf:.1f} | {cs:.1f} | {cs / cf:.3f} | {toks('catena-schema')} |")
print(f"| llama.cpp | {lf:.1f} | {ls:.1f} | {ls / lf:.3f} | {toks('llama-schema')} |")
print(f"| catena / llama.cpp | {cf / lf:.2f} | {cs / ls:.2f} | | |")
print()
print("| mask (catena, ctn_grammar_mask) | vocabulary | steps | median µs | p90 µs | worst µs | tokens allowed (mean) |")
print("|---|---|---:|---:|---:|---:|---:|")
names = {"mask-schema-spm": ("the schema, as the engine runs it", "llama-spm 32k"),
         "mask-schema-spm-cold": ("the schema, every mask a trie walk (--cold)", "llama-spm 32k"),
         "mask-anystring-qwen2": ("any JSON string, as the engine runs it", "qwen2 152k"),
         "mask-anystring-qwen2-cold": ("any JSON string, every mask a trie walk (--cold)",
                                       "qwen2 152k")}
for tag, (what, voc) in names.items():
    r = runs[tag][0]
    print(f"| {what} | {voc} | {r['steps']} | {r['mask_us_median']:.1f} | {r['mask_us_p90']:.1f} "
          f"| {r['mask_us_max']:.1f} | {r['allowed_mean']:.0f} |")
print()
print(f"One decode step of catena unconstrained takes {1e6 / cf:.0f} µs here.")
EOF
