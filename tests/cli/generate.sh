#!/bin/sh
# `catena generate` and `catena bench` on stories260K: the greedy continuation is the one
# llama2.c and llama.cpp print (../shared/models/README.md), also from the GGUF that
# `catena convert llama2c` makes; sampling is reproducible by seed; stop strings cut the
# text; bad input is a clear error.
set -u
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models"
[ -f "$M/stories260K.gguf" ] && [ -f "$M/stories260K.bin" ] && [ -f "$M/tok512.bin" ] || {
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
S="$M/stories260K.gguf"
want=', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.
Lily'

for t in 1 2 3; do
    out=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 60 --temp 0 --threads $t 2>&1)
    [ "$out" = "$want" ] && ok || bad "greedy, $t threads: '$out'"
done
out=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 60 --temp 0 --kv-f32 2>&1)
[ "$out" = "$want" ] && ok || bad "greedy, F32 KV: '$out'"
"$CATENA" convert llama2c "$M/stories260K.bin" "$M/tok512.bin" -o "$tmp/c.gguf" >/dev/null 2>&1
out=$("$CATENA" generate -m "$tmp/c.gguf" -p "Once upon a time" -n 60 --temp 0 2>&1)
[ "$out" = "$want" ] && ok || bad "greedy on the converted model: '$out'"

# -f FILE and -f - (stdin) read the prompt.
printf 'Once upon a time' >"$tmp/prompt.txt"
out=$("$CATENA" generate -m "$S" -f "$tmp/prompt.txt" -n 60 --temp 0 2>&1)
[ "$out" = "$want" ] && ok || bad "-f FILE: '$out'"
out=$(printf 'Once upon a time' | "$CATENA" generate -m "$S" -f - -n 60 --temp 0 2>&1)
[ "$out" = "$want" ] && ok || bad "-f -: '$out'"

# --ids: the generated ids on one line; their text is the continuation.
ids=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 60 --temp 0 --ids 2>&1)
[ "$(printf '%s' "$ids" | wc -w)" = 60 ] && ok || bad "--ids: '$ids'"
printf '%s' "$ids" | grep -qE '^[0-9]+( [0-9]+)*$' && ok || bad "--ids format: '$ids'"

# Sampling: the same seed gives the same text, another seed another text.
a=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 40 --temp 1 --top-p 0.9 --seed 7 2>&1)
b=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 40 --temp 1 --top-p 0.9 --seed 7 -t 1 2>&1)
c=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 40 --temp 1 --top-p 0.9 --seed 8 2>&1)
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "seed 7 twice: '$a' vs '$b'"
[ "$a" != "$c" ] && ok || bad "seeds 7 and 8 agree: '$a'"

# Stop strings: the text before the first occurrence, without the stop string.
out=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 60 --temp 0 --stop "Lily" 2>&1)
[ "$out" = ", there was a little girl named " ] && ok || bad "--stop Lily: '$out'"
out=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 60 --temp 0 -s "zzz" -s "red ball" 2>&1)
[ "$out" = ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, " ] &&
    ok || bad "--stop 'red ball': '$out'"

# Text held back as a possible stop string is all released at the end, however long: a
# stop string that the whole output is a prefix of (plus one more byte) holds everything
# (more than the 1024 bytes that were once kept).
long=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 500 --temp 0 --ignore-eos 2>&1)
out=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 500 --temp 0 --ignore-eos --stop "$long~" 2>&1)
[ "${#long}" -gt 1100 ] && [ "$out" = "$long" ] && ok ||
    bad "held-back text of ${#long} bytes came out as ${#out}"

# -n 0 prints nothing but the newline; EOS ends the text unless --ignore-eos.
out=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 0 --temp 0 2>&1)
[ -z "$out" ] && ok || bad "-n 0: '$out'"
# Without -n, generation stops when the context is full (5 prompt tokens + 59 fed back
# + the last one sampled), saying so on stderr.
out=$("$CATENA" generate -m "$S" -p "Once upon a time" --temp 0 -c 64 --ids 2>"$tmp/err")
n=$(printf '%s' "$out" | wc -w)
[ "$n" = 60 ] && grep -q "context of 64 tokens is full" "$tmp/err" && ok ||
    bad "until the context is full: $n tokens, $(cat "$tmp/err")"

# Errors: exit 1 with a message naming the problem; usage errors exit 2.
expect() { # status pattern args...
    st=$1 pat=$2
    shift 2
    out=$("$CATENA" "$@" 2>&1)
    [ $? = "$st" ] && printf '%s' "$out" | grep -q -- "$pat" && ok || bad "$*: $out"
}
expect 1 "the prompt is empty" generate -m "$S" -p ""
expect 1 "context holds 8" generate -m "$S" -p "Once upon a time there was a girl named Lily" -c 8
expect 1 "no-such.gguf" generate -m "$tmp/no-such.gguf" -p "x"
expect 2 "no prompt given" generate -m "$S"
expect 2 "not both" generate -m "$S" -p x -f "$tmp/prompt.txt"
expect 1 "no-such.txt" generate -m "$S" -f "$tmp/no-such.txt"
expect 2 "no model given" generate -p "x"
expect 2 "bad value 'abc' for --temp" generate -m "$S" -p x --temp abc
expect 2 "bad value '-3' for -n" generate -m "$S" -p x -n -3
expect 2 "unknown argument '--bogus'" generate -m "$S" -p x --bogus 1
expect 2 "setting 'top_p' must be a number from 0 to 1, not -1" generate -m "$S" -p x --top-p -1
expect 2 "unknown argument '--tmep'" generate -m "$S" -p x --tmep 1
expect 2 "bad value '0' for -t: setting 'threads' must be an integer from 1 to 1024" generate -m "$S" -p x -t 0
head -c 5000 "$S" >"$tmp/trunc.gguf"
expect 1 "trunc.gguf" generate -m "$tmp/trunc.gguf" -p x

# bench: one JSON line with both rates (positive numbers) and the sizes asked for.
out=$("$CATENA" bench -m "$S" --prompt-tokens 64 --gen-tokens 16 --threads 2 --reps 2 2>&1)
num() { printf '%s' "$out" | sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
[ "$(printf '%s' "$out" | wc -l)" -le 1 ] && [ "$(num prompt_tokens)" = 64 ] &&
    [ "$(num gen_tokens)" = 16 ] && [ "$(num threads)" = 2 ] &&
    awk -v p="$(num prefill_tok_s)" -v d="$(num decode_tok_s)" 'BEGIN { exit !(p > 0 && d > 0) }' &&
    ok || bad "bench: $out"
expect 2 "whole number" bench -m "$S" --threads 0

# Grammars: --grammar and --grammar-file (GBNF), -j and --json-schema-file (JSON Schema);
# the output follows them at any temperature, and a bad one is named.
for seed in 1 2 3; do
    out=$("$CATENA" generate -m "$S" -p "Once" --temp 1 --seed $seed --grammar 'root ::= ("yes" | "no") "."' 2>&1)
    case "$out" in yes. | no.) ok ;; *) bad "--grammar: '$out'" ;; esac
done
printf 'root ::= [0-9]{3} "-" [a-z]{2}\n' >"$tmp/g.gbnf"
out=$("$CATENA" generate -m "$S" -p "Once" --temp 1 --seed 4 --grammar-file "$tmp/g.gbnf" 2>&1)
printf '%s' "$out" | grep -qx '[0-9][0-9][0-9]-[a-z][a-z]' && ok || bad "--grammar-file: '$out'"
SCH='{"type":"object","properties":{"mood":{"enum":["happy","sad"]},"n":{"type":"boolean"}},"required":["mood","n"]}'
out=$("$CATENA" generate -m "$S" -p "Once" --temp 1 --seed 5 -n 60 -j "$SCH" 2>&1)
printf '%s' "$out" | node -e 'const v = JSON.parse(require("fs").readFileSync(0, "utf8")); if (!["happy","sad"].includes(v.mood) || typeof v.n !== "boolean") process.exit(1)' &&
    ok || bad "-j: '$out'"
printf '%s' "$SCH" >"$tmp/s.json"
[ "$("$CATENA" generate -m "$S" -p "Once" --temp 1 --seed 5 -n 60 --json-schema-file "$tmp/s.json" 2>&1)" = "$out" ] &&
    ok || bad "--json-schema-file differs from -j"
expect 1 "line 1, column" generate -m "$S" -p x --grammar 'root ::= "a'
expect 1 "undefined rule" generate -m "$S" -p x --grammar 'root ::= nope'
expect 1 "the JSON schema" generate -m "$S" -p x -j '{"type":"string","not":{}}'
expect 1 "no-such.gbnf" generate -m "$S" -p x --grammar-file "$tmp/no-such.gbnf"
expect 2 "not both" generate -m "$S" -p x --grammar 'root ::= "a"' -j '{}'

# End of generation: a model whose greedy choice is always EOS (or EOT) stops at once;
# --logprobs N: stdout is the same text; stderr has a line per token, the token first and
# then N alternatives, the greedy token the most likely; out of range is a usage error.
plain=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 12 --temp 0 2>/dev/null)
withlp=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 12 --temp 0 --logprobs 3 2>"$tmp/lp")
[ "$withlp" = "$plain" ] && ok || bad "--logprobs changed the text: '$withlp' against '$plain'"
[ "$(wc -l <"$tmp/lp")" = 12 ] && ok || bad "--logprobs lines: $(cat "$tmp/lp")"
awk -F' [|] ' '{ n = split($2, alt, ", "); split($1, t, " "); split(alt[1], a, " ");
    if (n != 3 || t[1] != a[1] || $1 != alt[1] || t[length(t)] > 0) bad = 1 } END { exit bad }' "$tmp/lp" &&
    ok || bad "--logprobs format: $(head -3 "$tmp/lp")"
"$CATENA" generate -m "$S" -p "x" --logprobs 21 >/dev/null 2>"$tmp/err"
[ $? = 2 ] && grep -q -- "--logprobs" "$tmp/err" && ok || bad "--logprobs 21: $(cat "$tmp/err")"

# --ignore-eos goes on.
if [ -n "${EOSMODEL:-}" ] && [ -x "$EOSMODEL" ]; then
    "$EOSMODEL" "$tmp/eos.gguf" 2 && "$EOSMODEL" "$tmp/eot.gguf" 3 && "$EOSMODEL" "$tmp/w.gguf" 7 ||
        bad "eosmodel failed"
    out=$("$CATENA" generate -m "$tmp/eos.gguf" -p "w5" -n 5 --temp 0 --ids 2>&1)
    [ -z "$out" ] && ok || bad "EOS first: '$out'"
    out=$("$CATENA" generate -m "$tmp/eot.gguf" -p "w5" -n 5 --temp 0 --ids 2>&1)
    [ -z "$out" ] && ok || bad "EOT first: '$out'"
    out=$("$CATENA" generate -m "$tmp/eos.gguf" -p "w5" -n 4 --temp 0 --ids --ignore-eos 2>&1)
    [ "$out" = "2 2 2 2" ] && ok || bad "--ignore-eos: '$out'"
    out=$("$CATENA" generate -m "$tmp/w.gguf" -p "w5" -n 3 --temp 0 --ids 2>&1)
    [ "$out" = "7 7 7" ] && ok || bad "control model: '$out'"
    out=$("$CATENA" generate -m "$tmp/w.gguf" -p "w5" -n 3 --temp 0 2>&1)
    [ "$out" = " w7 w7 w7" ] && ok || bad "control model text: '$out'"
else
    echo "EOSMODEL not set: end-of-generation cases skipped"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
