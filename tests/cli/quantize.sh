#!/bin/sh
# `catena quantize`: stories260K to Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16 and the K-quants; tensor types, file_type and
# fallbacks as llama-quantize --pure would choose them; the tokenizer still works.
set -u
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models"
[ -f "$M/stories260K.gguf" ] || {
    echo "shared models missing; skipping"
    exit 77
}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL: $*"
}
# tensor_type FILE NAME: the type column of a tensor in `catena inspect`.
tensor_type() {
    "$CATENA" inspect "$1" | awk -F'|' -v n="$2" '{ gsub(/ /, "", $5) } $5 == n { gsub(/ /, "", $3); print $3 }'
}
expect_type() {
    got=$(tensor_type "$1" "$2")
    [ "$got" = "$3" ] && ok || bad "$1: $2 is '$got', expected $3"
}

tok_ref=$(printf 'Once upon a time, Lily saw a ball.' | "$CATENA" tokenize -m "$M/stories260K.gguf" 2>&1)

# TYPE FTYPE MATRIX_TYPE FFN_DOWN_TYPE: rows of 64 fit 32-blocks; ffn_down's rows of 172
# fit none, so 32-block types fall back to F16 (as llama.cpp does).
for spec in "Q8_0 7 Q8_0 F16" "Q4_0 2 Q4_0 F16" "Q4_1 3 Q4_1 F16" "Q5_0 8 Q5_0 F16" \
    "Q5_1 9 Q5_1 F16" "F16 1 F16 F16" "Q4_K 15 Q5_0 F16" "Q5_K 17 Q5_1 F16" \
    "Q6_K 18 Q8_0 F16" "BF16 32 BF16 BF16"; do
    set -- $spec
    f="$tmp/s_$1.gguf"
    out=$("$CATENA" quantize "$M/stories260K.gguf" "$f" "$1" 2>&1) && [ -s "$f" ] && ok ||
        bad "quantize $1: $out"
    info=$("$CATENA" inspect "$f" 2>&1)
    for want in "general.file_type = $2" 'general.quantization_version = 2' 'n_tensors: 48' \
        'llama.block_count = 5' 'tokenizer.ggml.model = "llama"'; do
        printf '%s' "$info" | grep -qF -- "$want" && ok || bad "$1: inspect lacks '$want'"
    done
    expect_type "$f" token_embd.weight "$3"
    expect_type "$f" output.weight "$3"
    expect_type "$f" blk.2.attn_q.weight "$3"
    expect_type "$f" blk.4.ffn_up.weight "$3"
    expect_type "$f" blk.0.ffn_down.weight "$4"
    expect_type "$f" blk.0.attn_norm.weight F32
    expect_type "$f" output_norm.weight F32
    tok=$(printf 'Once upon a time, Lily saw a ball.' | "$CATENA" tokenize -m "$f" 2>&1)
    [ -n "$tok_ref" ] && [ "$tok" = "$tok_ref" ] && ok || bad "$1: tokenize '$tok' vs '$tok_ref'"
done

# Fallbacks are reported; sizes shrink with the bits.
out=$("$CATENA" quantize "$M/stories260K.gguf" "$tmp/k.gguf" Q4_K 2>&1)
printf '%s' "$out" | grep -q 'blk.0.attn_q.weight *F32 *-> Q5_0 *(rows of 64 do not fit Q4_K' &&
    ok || bad "Q4_K fallback not reported: $out"
# The summary says what happened, in numbers that add up (not "37 matrices as Q4_K").
printf '%s' "$out" | tail -n 1 | grep -q "0 of 37 matrices as Q4_K; the other 37 have rows (64, 172 values) that are not a multiple of Q4_K's 256, written as F16 (5), Q5_0 (32) instead; 11 tensors kept as they were$" &&
    ok || bad "Q4_K summary: $(printf '%s' "$out" | tail -n 1)"
out=$("$CATENA" quantize "$M/stories260K.gguf" "$tmp/q8.gguf" Q8_0 2>&1)
printf '%s' "$out" | tail -n 1 | grep -q ": 32 of 37 matrices as Q8_0; the other 5 have rows (172 values)" &&
    ok || bad "Q8_0 summary: $(printf '%s' "$out" | tail -n 1)"
s32=$(wc -c <"$M/stories260K.gguf")
s16=$(wc -c <"$tmp/s_F16.gguf")
s8=$(wc -c <"$tmp/s_Q8_0.gguf")
s51=$(wc -c <"$tmp/s_Q5_1.gguf")
s50=$(wc -c <"$tmp/s_Q5_0.gguf")
s41=$(wc -c <"$tmp/s_Q4_1.gguf")
s4=$(wc -c <"$tmp/s_Q4_0.gguf")
[ "$s4" -lt "$s41" ] && [ "$s41" -lt "$s50" ] && [ "$s50" -lt "$s51" ] && [ "$s51" -lt "$s8" ] &&
    [ "$s8" -lt "$s16" ] && [ "$s16" -lt "$s32" ] && ok ||
    bad "sizes not decreasing: F32 $s32 F16 $s16 Q8_0 $s8 Q5_1 $s51 Q5_0 $s50 Q4_1 $s41 Q4_0 $s4"

# A quantized input is dequantized first; a tensor already of the target type is copied.
"$CATENA" quantize "$tmp/s_Q8_0.gguf" "$tmp/re.gguf" Q4_0 >/dev/null 2>&1 && ok ||
    bad "requantize Q8_0 -> Q4_0"
expect_type "$tmp/re.gguf" blk.1.attn_k.weight Q4_0
expect_type "$tmp/re.gguf" blk.1.ffn_down.weight F16
"$CATENA" quantize "$tmp/s_Q8_0.gguf" "$tmp/same.gguf" Q8_0 >/dev/null 2>&1 &&
    cmp -s "$tmp/s_Q8_0.gguf" "$tmp/same.gguf" && ok || bad "Q8_0 -> Q8_0 is not a byte copy"

# Errors: usage errors exit 2, runtime errors 1 with the file named.
"$CATENA" quantize "$M/stories260K.gguf" "$tmp/x.gguf" Q3_K >/dev/null 2>&1
[ $? = 2 ] && ok || bad "unknown type should exit 2"
"$CATENA" quantize "$M/stories260K.gguf" "$tmp/x.gguf" >/dev/null 2>&1
[ $? = 2 ] && ok || bad "missing type should exit 2"
out=$("$CATENA" quantize "$tmp/none.gguf" "$tmp/x.gguf" Q8_0 2>&1)
[ $? = 1 ] && printf '%s' "$out" | grep -q "none.gguf" && ok || bad "missing input: $out"
[ ! -e "$tmp/x.gguf" ] && ok || bad "output written despite errors"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
