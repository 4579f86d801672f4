#!/bin/sh
# LoRA from the command line on stories260K with a random adapter (tests/tools/mklora):
# catena lora inspect and merge; generate --lora equals generating with the merged model
# (greedy ids); --lora PATH:0 equals the base model; catena batch lines mixing the adapter
# and the base give what generate gives; a PEFT folder of the same adapter gives what the GGUF
# file gives; a bad adapter path is an error naming it; a bad PATH:SCALE scale is refused.
set -u
CATENA="${CATENA:-build/catena}"
MODEL="${CTN_SHARED:-../shared}/models/stories260K.gguf"
MKLORA="${MKLORA:-build/tools/mklora}"
[ -f "$MODEL" ] || { echo "skip: no $MODEL"; exit 77; }
[ -x "$MKLORA" ] || { echo "skip: no $MKLORA"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

"$MKLORA" "$MODEL" -o "$tmp/a.gguf" --rank 8 --targets q,k,v,o,down --seed 3 --alpha 8 --std 0.3 ||
    { echo "FAIL mklora"; exit 1; }
"$CATENA" lora inspect "$MODEL" "$tmp/a.gguf" > "$tmp/inspect" 2>&1
check "inspect lists the adapted matrices" 'grep -q "blk.0.attn_q .*rank   8" "$tmp/inspect"'
"$CATENA" lora merge "$MODEL" "$tmp/a.gguf" -o "$tmp/merged.gguf" > "$tmp/merge" 2>&1
check "merge writes a model" '[ -s "$tmp/merged.gguf" ] && grep -q "matrices merged" "$tmp/merge"'

P="Once upon a time, there was a little"
gen() { "$CATENA" generate "$@" -p "$P" -n 24 --temp 0 --ids 2>/dev/null; }
base=$(gen -m "$MODEL")
with=$(gen -m "$MODEL" --lora "$tmp/a.gguf")
merged=$(gen -m "$tmp/merged.gguf")
zero=$(gen -m "$MODEL" --lora "$tmp/a.gguf:0")
check "the adapter changes the output" '[ -n "$with" ] && [ "$with" != "$base" ]'
check "--lora equals the merged model" '[ "$with" = "$merged" ]'
check "--lora PATH:0 is the base model" '[ "$zero" = "$base" ]'

# catena batch: the adapter and the base in one batch.
printf '{"prompt": "%s", "max_tokens": 24, "lora": "%s"}\n{"prompt": "%s", "max_tokens": 24}\n{"prompt": "%s", "max_tokens": 24, "lora": "%s", "lora_scale": 0}\n' \
    "$P" "$tmp/a.gguf" "$P" "$P" "$tmp/a.gguf" > "$tmp/p.jsonl"
"$CATENA" batch -m "$MODEL" --prompts "$tmp/p.jsonl" > "$tmp/out" 2> "$tmp/err"
ids() { sed -n "$1p" "$tmp/out" | sed 's/.*"ids": *\[\([^]]*\)\].*/\1/' | tr -d ' ' | tr ',' ' '; }
check "batch: the adapter's line equals generate --lora" '[ "$(ids 1)" = "$with" ]'
check "batch: the base line in the same batch equals the base" '[ "$(ids 2)" = "$base" ]'
check "batch: lora_scale 0 equals the base" '[ "$(ids 3)" = "$base" ]'

# The same adapter as a Hugging Face PEFT folder (mklora --peft: q/k rows in Hugging Face's
# order) gives what the GGUF file gives, from generate and from a batch line.
"$MKLORA" "$MODEL" -o "$tmp/p.gguf" --rank 8 --targets q,k,v,o,down --seed 5 --alpha 8 --std 0.1 \
    --peft "$tmp/peft" || { echo "FAIL mklora --peft"; exit 1; }
pg=$(gen -m "$MODEL" --lora "$tmp/p.gguf")
pf=$(gen -m "$MODEL" --lora "$tmp/peft")
check "the PEFT folder's adapter changes the output" '[ -n "$pf" ] && [ "$pf" != "$base" ]'
check "generate --lora PEFT_DIR equals the GGUF file" '[ "$pf" = "$pg" ]'
printf '{"prompt": "%s", "max_tokens": 24, "lora": "%s"}\n' "$P" "$tmp/peft" > "$tmp/pp.jsonl"
"$CATENA" batch -m "$MODEL" --prompts "$tmp/pp.jsonl" > "$tmp/out" 2> "$tmp/err"
check "batch: a PEFT folder on a prompt line" '[ "$(ids 1)" = "$pg" ]'
echo '{"r": 8, "fan_in_fan_out": true}' > "$tmp/peft/adapter_config.json"
"$CATENA" generate -m "$MODEL" -p "$P" -n 4 --lora "$tmp/peft" > /dev/null 2> "$tmp/err"
check "a PEFT setting catena cannot serve is an error naming it" \
    '[ $? = 1 ] && grep -q "fan_in_fan_out" "$tmp/err" && grep -q "$tmp/peft" "$tmp/err"'

"$CATENA" generate -m "$MODEL" -p "$P" -n 4 --lora "$tmp/missing.gguf" > /dev/null 2> "$tmp/err"
check "a missing adapter is an error naming it" '[ $? = 1 ] && grep -q "missing.gguf" "$tmp/err"'

# PATH:SCALE with a scale that is no number or out of range is refused naming it; a negative
# one is run, with a note that it subtracts the update.
"$CATENA" generate -m "$MODEL" -p "$P" -n 4 --lora "$tmp/a.gguf:abc" > /dev/null 2> "$tmp/err"
check "--lora PATH:abc: abc is no scale" \
    '[ $? = 2 ] && grep -q "'"'"'abc'"'"' after its last '"'"':'"'"' is no scale" "$tmp/err"'
"$CATENA" generate -m "$MODEL" -p "$P" -n 4 --lora "$tmp/a.gguf:500" > /dev/null 2> "$tmp/err"
check "--lora PATH:500: the range" '[ $? = 2 ] && grep -q "from -100 to 100, not 500" "$tmp/err"'
neg=$("$CATENA" generate -m "$MODEL" -p "$P" -n 24 --temp 0 --ids --lora "$tmp/a.gguf:-1" 2> "$tmp/err")
check "--lora PATH:-1 runs and says the update is subtracted" \
    '[ -n "$neg" ] && [ "$neg" != "$with" ] && grep -q "scale -1 is negative" "$tmp/err"'
exit $fail
