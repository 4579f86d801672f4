#!/bin/sh
# KL divergence of quantized models to their F32 original, catena against llama.cpp: how much
# each side's quantized kernels move the next-token distributions, on the same files, tokens
# and windows, against the same reference logits.
#
#   scripts/setup-peers.sh && cmake --build build && sh bench/run_kld.sh
#
# 1. Models: stories260K (../shared/models/stories260K.gguf, F32) and the random-weight llama
#    of bench/run_engine.sh ("125M" in the table: 124.7M parameters, 49M of them the two
#    embedding matrices) (tests/tools/mkmodel: dim 768, 12 layers, 12/4 heads, FFN 2048,
#    vocabulary 32000 from llama.cpp's SPM vocab, untied output), written here in F32
#    (made once, kept in $MODEL_DIR). `catena quantize` makes each of $TYPES from the F32
#    file; both programs read the same quantized files. stories260K's rows of 64 and 172
#    values take the fallbacks llama-quantize --pure would (tests/cli/quantize.sh): its
#    "Q4_K" matrices are Q5_0 and its "Q6_K" ones Q8_0, ffn_down F16 in every 32-block type.
# 2. Text: $TEXT, or generated here (TinyStories-like sentences from a fixed seed, awk), the
#    same for both models. Windows of $CTX tokens (llama-perplexity's default 512):
#    $CHUNKS_SMALL of them for stories260K, $CHUNKS_BIG for the 125M model.
# 3. The reference is catena's F32 logits: `catena perplexity --kl-divergence-base` writes
#    them (llama-perplexity's file format, docs/perplexity.md). Each quantized model is then
#    compared with that file by `catena perplexity --kl-divergence` and by
#    bench/llamacpp_ppl (llama.cpp through dlopen, F16 KV cache and flash attention AUTO, its
#    defaults), with llama-perplexity's definitions: mean KL(F32 || Q) over the scored
#    positions (the second half of each window) and the share of positions whose most
#    likely token is the same. catena runs twice: with its default kernels (activations
#    converted to Q8_0 / Q8_K as llama.cpp's are) and with --f32-act (exact products: F32
#    activations against the dequantized weights). The F32 row is the floor: catena F32
#    against its own file (the file's 16-bit rounding alone) and llama.cpp F32 against
#    catena's F32 (the two engines' rounding). llamacpp_ppl also checks that llama.cpp tokenizes the text to the
#    file's tokens.
#
# Prints Markdown for bench/RESULTS.md on stdout; progress on stderr.
#
# Environment (defaults in brackets):
#   BUILD_DIR [build]  MODEL_DIR [$BUILD_DIR/bench-models]  TYPES ["Q8_0 Q4_0 Q4_K Q6_K"]
#   THREADS [2]  CTX [512]  CHUNKS_SMALL [16]  CHUNKS_BIG [8]  TEXT [generated]
#   CATENA, LLAMACPP_PPL, MKMODEL override the programs' paths
#   CATENA_LLAMA_LIBDIR                  llama.cpp libraries [bench/node_modules/...]
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
model_dir=${MODEL_DIR:-$build/bench-models}
types=${TYPES:-Q8_0 Q4_0 Q4_K Q6_K}
threads=${THREADS:-2}
ctx=${CTX:-512}
chunks_small=${CHUNKS_SMALL:-16}
chunks_big=${CHUNKS_BIG:-8}
catena=${CATENA:-$build/catena}
lppl=${LLAMACPP_PPL:-$build/bench/llamacpp_ppl}
mkmodel=${MKMODEL:-$build/tools/mkmodel}
shared=${CTN_SHARED:-../shared}

say() { echo "$*" >&2; }
for p in "$catena" "$lppl" "$mkmodel"; do
    [ -x "$p" ] || {
        say "$p not built (cmake --build $build --target catena llamacpp_ppl mkmodel)"
        exit 1
    }
done
if [ ! -d bench/node_modules ] && [ -z "${CATENA_LLAMA_LIBDIR:-}" ]; then
    say "llama.cpp is not installed: run scripts/setup-peers.sh"
    exit 1
fi
[ -f "$shared/models/stories260K.gguf" ] || { say "no $shared/models/stories260K.gguf"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/catena-bench-kld-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
t_start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# ---- the text ----------------------------------------------------------------------------
text=${TEXT:-$tmp/text.txt}
if [ -z "${TEXT:-}" ]; then
    awk 'BEGIN {
        split("Lily Tom Sue Ben Max Anna Tim Mia", who, " ")
        split("ball kite cat dog bird tree cake boat", what, " ")
        split("big small red happy sad shiny old little", how, " ")
        split("park garden lake forest house school beach farm", where, " ")
        s = 12345
        for (i = 0; i < 900; i++) {
            s = (s * 1103515245 + 12345) % 2147483648; a = int(s / 65536) % 8 + 1
            s = (s * 1103515245 + 12345) % 2147483648; b = int(s / 65536) % 8 + 1
            s = (s * 1103515245 + 12345) % 2147483648; c = int(s / 65536) % 8 + 1
            s = (s * 1103515245 + 12345) % 2147483648; d = int(s / 65536) % 8 + 1
            s = (s * 1103515245 + 12345) % 2147483648; k = int(s / 65536) % 5
            if (k == 0) printf "Once upon a time, there was a %s %s named %s. ", how[c], what[b], who[a]
            else if (k == 1) printf "%s went to the %s and saw a %s %s. ", who[a], where[d], how[c], what[b]
            else if (k == 2) printf "%s was %s because the %s was gone. ", who[a], how[c], what[b]
            else if (k == 3) printf "\"Can I play with your %s?\" asked %s. ", what[b], who[a]
            else printf "They played in the %s all day and went home. ", where[d]
            if (i % 7 == 6) printf "\n"
        }
        printf "\n"
    }' >"$text"
fi

# ---- models ------------------------------------------------------------------------------
mkdir -p "$model_dir"
# Not run_engine.sh's names: its quantized files are made from its F16 model, these from F32.
big=$model_dir/kld-llama-d768-l12-h12-kv4-ff2048-v32000
if [ ! -s "$big-f32.gguf" ]; then
    say "writing $big-f32.gguf"
    "$mkmodel" -o "$big-f32.gguf.tmp" --dim 768 --layers 12 --heads 12 --kv-heads 4 --ff 2048 \
        --type f32 --seed 1 --ctx 2048
    mv "$big-f32.gguf.tmp" "$big-f32.gguf"
fi
cp "$shared/models/stories260K.gguf" "$tmp/stories260K-f32.gguf"
small=$tmp/stories260K
# quantized FAMILY TYPE: the file of that family in that type, made from its F32 when stale.
quantized() {
    src=$1-f32.gguf
    dst=$1-$(echo "$2" | tr '[:upper:]' '[:lower:]').gguf
    if [ ! -s "$dst" ] || [ -n "$(find "$src" -newer "$dst")" ]; then
        say "catena quantize -> $dst"
        "$catena" quantize "$src" "$dst.tmp" "$2" >"$tmp/quantize.log" 2>&1 || {
            cat "$tmp/quantize.log" >&2
            exit 1
        }
        mv "$dst.tmp" "$dst"
    fi
    echo "$dst"
}

# ---- runs --------------------------------------------------------------------------------
# summary FILE: "KLD UNC TOP PPL_Q PPL_BASE" from a -v / llamacpp_ppl summary line.
summary() {
    sed -n 's/.*mean KLD \([^ ]*\) ± \([^,]*\), same top p \([^,]*\), PPL(Q) \([^,]*\), PPL(base) \([^,]*\),.*/\1 \2 \3 \4 \5/p' "$1" |
        tail -n 1
}
rows=$tmp/rows
: >"$rows"
variant=unknown
for fam in small big; do
    if [ $fam = small ]; then base=$small name=stories260K chunks=$chunks_small
    else base=$big name=125M chunks=$chunks_big; fi
    ref=$tmp/$fam-base.bin
    say "$name: catena F32 reference logits ($chunks windows of $ctx)"
    "$catena" perplexity -m "$base-f32.gguf" -f "$text" -c "$ctx" --chunks "$chunks" \
        -t "$threads" --kl-divergence-base "$ref" >"$tmp/out" 2>"$tmp/err" || {
        cat "$tmp/err" >&2
        exit 1
    }
    for t in F32 $types; do
        if [ "$t" = F32 ]; then m=$base-f32.gguf; else m=$(quantized "$base" "$t"); fi
        say "$name $t: catena, catena --f32-act, then llama.cpp"
        "$catena" perplexity -m "$m" --kl-divergence --kl-divergence-base "$ref" -t "$threads" \
            -v >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
        c=$(summary "$tmp/err")
        "$catena" perplexity -m "$m" --kl-divergence --kl-divergence-base "$ref" -t "$threads" \
            --f32-act -v >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
        x=$(summary "$tmp/err")
        "$lppl" -m "$m" --base "$ref" -t "$threads" -f "$text" >"$tmp/out" 2>"$tmp/err" || {
            cat "$tmp/err" >&2
            exit 1
        }
        l=$(summary "$tmp/out")
        v=$(sed -n 's/^llamacpp_ppl: CPU backend //p' "$tmp/err")
        [ -n "$v" ] && variant=$v
        [ -n "$c" ] && [ -n "$l" ] && [ -n "$x" ] || { say "no summary line for $name $t"; exit 1; }
        echo "$name $t $c $l $x" >>"$rows"
    done
done

# ---- the table ---------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
n_text=$(wc -c <"$text")
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
echo "## KL divergence to F32: catena vs llama.cpp"
echo
echo "- **Date:** $(date -u '+%Y-%m-%d %H:%M UTC'); **machine:** ${cpu:-unknown} x $(nproc); load average $load_start at the start, $load_end at the end; $(($(date +%s) - t_start)) s in all"
echo "- **catena:** commit $commit; \`catena perplexity --kl-divergence\`, $threads threads, F16 KV cache"
echo "- **Peer:** llama.cpp from node-llama-cpp $(sed -n 's/.*"node-llama-cpp": "\([^"]*\)".*/\1/p' bench/package.json) via \`bench/llamacpp_ppl\` (dlopen), CPU variant $variant, $threads threads, F16 KV cache and flash attention AUTO (its defaults)"
echo "- **Work:** $n_text bytes of generated TinyStories-like text; windows of $ctx tokens, each from an empty cache with BOS first, the second half scored (llama-perplexity's method): $chunks_small windows for stories260K, $chunks_big for the 125M random-weight model; the files made by \`catena quantize\` from the F32 ones, read by both sides"
echo "- **Reference:** catena's F32 logits (\`catena perplexity --kl-divergence-base\`, llama-perplexity's file format: 16-bit log-probabilities); KLD = mean KL(F32 || Q) per position, same top = share of positions where the most likely token agrees"
echo "- **Command:** \`sh bench/run_kld.sh\` (THREADS=$threads CTX=$ctx CHUNKS_SMALL=$chunks_small CHUNKS_BIG=$chunks_big TYPES=\"$types\")"
echo
echo "| model | type | catena KLD | catena --f32-act KLD | llama.cpp KLD | catena / llama.cpp | --f32-act / llama.cpp | same top: catena, --f32-act, llama.cpp | PPL(Q) catena, llama.cpp |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
awk '{
    # name type  c_kld c_unc c_top c_ppl c_base  l_kld l_unc l_top l_ppl l_base  x_kld x_unc x_top x_ppl x_base
    ratio = ($2 != "F32" && $8 > 0 && $3 > 0) ? sprintf("%.3f×", $3 / $8) : "—"
    xratio = ($2 != "F32" && $8 > 0 && $13 > 0) ? sprintf("%.3f×", $13 / $8) : "—"
    type = $2 == "F32" ? "F32 (floor)" : $2
    printf "| %s | %s | %.3g ± %.1g | %.3g ± %.1g | %.3g ± %.1g | %s | %s | %.2f%%, %.2f%%, %.2f%% | %.4f, %.4f |\n",
        $1, type, $3, $4, $13, $14, $8, $9, ratio, xratio, 100 * $5, 100 * $15, 100 * $10, $6, $11
}' "$rows"
echo
awk 'NR == 1 || $1 != prev { printf "PPL(F32) of %s on this text: %.4f (catena).\n", $1, $7 } { prev = $1 }' "$rows"
