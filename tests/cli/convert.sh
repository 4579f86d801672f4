#!/bin/sh
# `catena convert llama2c`: converts stories260K, the output inspects cleanly, and the
# tokenizer inside it gives the same ids as llama.cpp's GGUF of the same model.
set -u
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models"
[ -f "$M/stories260K.bin" ] && [ -f "$M/tok512.bin" ] && [ -f "$M/stories260K.gguf" ] || {
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

out=$("$CATENA" convert llama2c "$M/stories260K.bin" "$M/tok512.bin" -o "$tmp/s.gguf" 2>&1) &&
    [ -s "$tmp/s.gguf" ] && ok || bad "convert: $out"

info=$("$CATENA" inspect "$tmp/s.gguf" 2>&1)
for want in 'general.architecture = "llama"' 'n_tensors: 48' 'llama.block_count = 5' \
    'tokenizer.ggml.model = "llama"' 'blk.4.ffn_norm.weight'; do
    printf '%s' "$info" | grep -qF -- "$want" && ok || bad "inspect lacks '$want'"
done

for text in 'Once upon a time' 'Lily saw a big, red ball!' '  two  spaces and a tab	x' \
    'ünïcödé 日本 🙂' ''; do
    a=$(printf '%s' "$text" | "$CATENA" tokenize -m "$tmp/s.gguf" 2>&1)
    b=$(printf '%s' "$text" | "$CATENA" tokenize -m "$M/stories260K.gguf" 2>&1)
    [ -n "$b" ] && [ "$a" = "$b" ] && ok || bad "tokenize '$text': '$a' vs '$b'"
done

# Errors name the file, the field and the offset, and exit 1; usage errors exit 2.
head -c 1000 "$M/stories260K.bin" >"$tmp/short.bin"
out=$("$CATENA" convert llama2c "$tmp/short.bin" "$M/tok512.bin" -o "$tmp/x.gguf" 2>&1)
[ $? = 1 ] && printf '%s' "$out" | grep -q "short.bin: token_embedding (at offset 28)" &&
    ok || bad "truncated checkpoint: $out"
[ ! -e "$tmp/x.gguf" ] && ok || bad "output written for a bad input"
out=$("$CATENA" convert llama2c "$M/stories260K.bin" "$M/tok512.bin" 2>&1)
[ $? = 2 ] && printf '%s' "$out" | grep -q "no output file" && ok || bad "no -o: $out"
out=$("$CATENA" convert safetensors a b -o c 2>&1)
[ $? = 2 ] && printf '%s' "$out" | grep -q "unknown source format" && ok || bad "format: $out"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
