#!/bin/sh
# `catena batch` on stories260K: greedy results equal `catena generate`'s, alone or repeated
# in one batch; results come in input order whatever their lengths; every bad line is an
# error naming FILE:LINE before anything runs. `catena bench --parallel`.
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
S="$M/stories260K.gguf"

# The text as cJSON-style JSON string contents (backslash, quote, tab, newline escaped).
json_text() {
    awk 'BEGIN { ORS = "" } { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t");
         if (NR > 1) print "\\n"; print }'
}

# Greedy: the text and ids of `catena generate` (its output less its final newline).
gen=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 60 --temp 0 2>/dev/null; echo x)
gen=${gen%x}
gen=${gen%?}
gen_ids=$("$CATENA" generate -m "$S" -p "Once upon a time" -n 60 --temp 0 --ids 2>/dev/null)
want_text=$(printf '%s' "$gen" | json_text)
want_ids=$(printf '%s' "$gen_ids" | tr ' ' ',')
want="{\"text\":\"$want_text\",\"ids\":[$want_ids],\"finish_reason\":\"length\",\"prompt_tokens\":5,\"completion_tokens\":60}"
[ -n "$gen" ] && ok || bad "generate printed nothing"

echo '{"prompt": "Once upon a time", "max_tokens": 60}' >"$tmp/one.jsonl"
out=$("$CATENA" batch -m "$S" --prompts "$tmp/one.jsonl" 2>"$tmp/err")
[ $? = 0 ] && [ "$out" = "$want" ] && ok || bad "one prompt: '$out' want '$want'"
grep -q "1 requests, 5 prompt tokens, 60 generated tokens" "$tmp/err" && ok ||
    bad "summary: $(cat "$tmp/err")"
# stdin, with blank lines and CRLF.
out=$(printf '\n{"prompt": "Once upon a time", "max_tokens": 60}\r\n\n' |
    "$CATENA" batch -m "$S" --prompts - --threads 2 2>/dev/null)
[ "$out" = "$want" ] && ok || bad "stdin: '$out'"

# The same prompt 20 times, 7 at a time: 20 identical lines, each the single run's.
: >"$tmp/20.jsonl"
for i in $(seq 20); do echo '{"prompt": "Once upon a time", "max_tokens": 60}' >>"$tmp/20.jsonl"; done
"$CATENA" batch -m "$S" --prompts "$tmp/20.jsonl" --concurrency 7 >"$tmp/20.out" 2>"$tmp/err"
[ $? = 0 ] && [ "$(wc -l <"$tmp/20.out")" = 20 ] && [ "$(sort -u "$tmp/20.out")" = "$want" ] &&
    ok || bad "20 at concurrency 7: $(sort -u "$tmp/20.out" | head -3) $(cat "$tmp/err")"
# A small KV pool and short steps (preemption, chunked prefill) change nothing.
"$CATENA" batch -m "$S" --prompts "$tmp/20.jsonl" --kv-memory 64K --step-tokens 8 \
    >"$tmp/20s.out" 2>"$tmp/err"
[ $? = 0 ] && cmp -s "$tmp/20.out" "$tmp/20s.out" && ok ||
    bad "small pool: $(sort -u "$tmp/20s.out" | head -3) $(cat "$tmp/err")"

# A request longer than the whole KV pool (6 blocks, 96 positions) ends with "length" where
# the pool ends: 2 + 94 positions computed, the 95th token sampled from the last of them.
out=$(echo '{"prompt": "Once", "max_tokens": 200, "ignore_eos": true}' |
    timeout 60 "$CATENA" batch -m "$S" --prompts - --kv-memory 64K 2>"$tmp/err")
printf '%s' "$out" | grep -q '"finish_reason":"length","prompt_tokens":2,"completion_tokens":95}' &&
    ok || bad "pool end: '$out' $(cat "$tmp/err")"

# Input order with mixed lengths (long ones first, so later ones finish earlier).
cat >"$tmp/mixed.jsonl" <<'J'
{"prompt": "Once upon a time", "max_tokens": 50}
{"prompt": "Lily", "max_tokens": 1}
{"prompt": "The dog", "max_tokens": 30, "ignore_eos": true}
{"prompt": "Tom", "max_tokens": 0}
{"prompt": "Once upon a time", "max_tokens": 60, "stop": "red ball"}
{"prompt": "A", "max_tokens": 7, "temperature": 1, "seed": 5, "top_k": 10, "top_p": 0.9, "min_p": 0.01, "repeat_penalty": 1.1}
J
"$CATENA" batch -m "$S" --prompts "$tmp/mixed.jsonl" --concurrency 3 >"$tmp/mixed.out" 2>"$tmp/err"
st=$?
counts=$(sed -n 's/.*"completion_tokens":\([0-9]*\).*/\1/p' "$tmp/mixed.out" | tr '\n' ' ')
reasons=$(sed -n 's/.*"finish_reason":"\([a-z]*\)".*/\1/p' "$tmp/mixed.out" | tr '\n' ' ')
[ $st = 0 ] && [ "$(wc -l <"$tmp/mixed.out")" = 6 ] &&
    printf '%s' "$counts" | grep -q '^50 1 30 0 [0-9]* 7 $' &&
    [ "$reasons" = "length length length length stop length " ] && ok ||
    bad "mixed order: counts '$counts' reasons '$reasons' $(cat "$tmp/err")"
sed -n 5p "$tmp/mixed.out" | grep -q '^{"text":", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, ","ids":\[' &&
    ok || bad "stop string: $(sed -n 5p "$tmp/mixed.out")"
# The seeded line is reproducible.
"$CATENA" batch -m "$S" --prompts "$tmp/mixed.jsonl" >"$tmp/mixed2.out" 2>/dev/null
cmp -s "$tmp/mixed.out" "$tmp/mixed2.out" && ok || bad "seeded run differs"

# Bad lines: exit 1, "FILE:LINE: reason", nothing on stdout, nothing run.
good='{"prompt": "Once upon a time", "max_tokens": 5}'
bad_line() { # pattern line
    printf '%s\n%s\n%s\n' "$good" "$good" "$2" >"$tmp/bad.jsonl"
    out=$("$CATENA" batch -m "$S" --prompts "$tmp/bad.jsonl" 2>"$tmp/err")
    st=$?
    [ $st = 1 ] && [ -z "$out" ] && grep -q "catena batch: $tmp/bad.jsonl:3: .*$1" "$tmp/err" &&
        ! grep -q requests "$tmp/err" && ok || bad "bad line '$2': status $st, '$out', $(cat "$tmp/err")"
}
bad_line "not valid JSON" '{"prompt": "x"'
bad_line "not valid JSON" '{"prompt": "x"} trailing'
bad_line "not a JSON object" '["prompt"]'
bad_line 'no "prompt"' '{"max_tokens": 5}'
bad_line '"prompt" must be a non-empty string' '{"prompt": 5}'
bad_line '"prompt" must be a non-empty string' '{"prompt": ""}'
bad_line "unknown setting 'temp'" '{"prompt": "x", "temp": 0.5}'
bad_line "setting 'threads' is the model's" '{"prompt": "x", "threads": 2}'
bad_line "setting 'stop' must be" '{"prompt": "x", "stop": ["a", ["b"]]}'
bad_line "setting 'max_tokens' must be" '{"prompt": "x", "max_tokens": -2}'
bad_line "setting 'max_tokens' must be" '{"prompt": "x", "max_tokens": 2.5}'
bad_line "setting 'max_tokens' must be" '{"prompt": "x", "max_tokens": "5"}'
bad_line "setting 'temperature' must be" '{"prompt": "x", "temperature": -0.1}'
bad_line "setting 'seed' must be" '{"prompt": "x", "seed": -1}'
bad_line "setting 'top_k' must be" '{"prompt": "x", "top_k": 1.5}'
bad_line "setting 'top_p' must be" '{"prompt": "x", "top_p": 1.5}'
bad_line "setting 'min_p' must be" '{"prompt": "x", "min_p": -0.5}'
bad_line "setting 'repeat_penalty' must be" '{"prompt": "x", "repeat_penalty": 0}'
bad_line "setting 'stop' must be" '{"prompt": "x", "stop": 5}'
bad_line "setting 'stop' must be" '{"prompt": "x", "stop": ["a", 5]}'
bad_line "setting 'stop' must be" '{"prompt": "x", "stop": [""]}'
bad_line "setting 'ignore_eos' must be" '{"prompt": "x", "ignore_eos": 1}'
bad_line 'given twice' '{"prompt": "x", "prompt": "y"}'
out=$(printf '%s\n' "$good" '{' | "$CATENA" batch -m "$S" --prompts - 2>&1 >"$tmp/out")
[ $? = 1 ] && [ ! -s "$tmp/out" ] && printf '%s' "$out" | grep -q "<stdin>:2: not valid JSON" &&
    ok || bad "stdin bad line: $out"

expect() { # status pattern args...
    st=$1 pat=$2
    shift 2
    out=$("$CATENA" "$@" 2>&1 >"$tmp/out")
    [ $? = "$st" ] && [ ! -s "$tmp/out" ] && printf '%s' "$out" | grep -q -- "$pat" && ok ||
        bad "$*: $out"
}
expect 2 "bad value '12X' for --kv-memory" batch -m "$S" --prompts "$tmp/one.jsonl" --kv-memory 12X
expect 2 "bad value '0' for --concurrency" batch -m "$S" --prompts "$tmp/one.jsonl" --concurrency 0
expect 2 "no prompts given" batch -m "$S"
expect 2 "no model given" batch --prompts "$tmp/one.jsonl"
expect 1 "no-such.jsonl" batch -m "$S" --prompts "$tmp/no-such.jsonl"
: >"$tmp/empty.jsonl"
expect 1 "no prompts" batch -m "$S" --prompts "$tmp/empty.jsonl"
expect 1 "no-such.gguf" batch -m "$tmp/no-such.gguf" --prompts "$tmp/one.jsonl"

# A prompt longer than the context fails alone: an error result in its place, status 1.
printf '%s\n%s\n' '{"prompt": "Once upon a time there was a girl named Lily", "max_tokens": 3}' \
    '{"prompt": "Once", "max_tokens": 3}' >"$tmp/long.jsonl"
"$CATENA" batch -m "$S" --prompts "$tmp/long.jsonl" -c 8 >"$tmp/long.out" 2>"$tmp/err"
st=$?
[ $st = 1 ] && sed -n 1p "$tmp/long.out" | grep -q '"finish_reason":"error".*"error":".*context holds 8' &&
    sed -n 2p "$tmp/long.out" | grep -q '"finish_reason":"length"' && ok ||
    bad "too long a prompt: status $st, $(cat "$tmp/long.out" "$tmp/err")"

# Grammars per line: "grammar" (GBNF) and "json_schema"; other lines are not constrained.
printf '%s\n%s\n%s\n' '{"prompt": "Once", "grammar": "root ::= \"yes\" | \"no\"", "temperature": 1, "seed": 3}' \
    '{"prompt": "Once", "max_tokens": 4}' \
    '{"prompt": "Once", "json_schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}, "max_tokens": 40}' >"$tmp/g.jsonl"
"$CATENA" batch -m "$S" --prompts "$tmp/g.jsonl" >"$tmp/g.out" 2>"$tmp/err"
st=$?
t1=$(sed -n 1p "$tmp/g.out" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).text)')
t3=$(sed -n 3p "$tmp/g.out" | node -e 'console.log(typeof JSON.parse(JSON.parse(require("fs").readFileSync(0, "utf8")).text).ok)')
want2=$("$CATENA" generate -m "$S" -p "Once" -n 4 --temp 0 2>/dev/null)
t2=$(sed -n 2p "$tmp/g.out" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).text)')
[ $st = 0 ] && { [ "$t1" = yes ] || [ "$t1" = no ]; } && [ "$t3" = boolean ] && [ "$t2" = "$want2" ] && ok ||
    bad "batch grammars: status $st, '$t1' '$t2' (want '$want2') '$t3', $(cat "$tmp/g.out" "$tmp/err")"
printf '%s\n' '{"prompt": "x", "json_schema": {"type": "string", "not": {}}}' >"$tmp/gbad.jsonl"
out=$("$CATENA" batch -m "$S" --prompts "$tmp/gbad.jsonl" 2>&1)
printf '%s' "$out" | grep -q 'gbad.jsonl:1.*json_schema' && ok || bad "bad json_schema: $out"
printf '%s\n' '{"prompt": "x", "grammar": "root ::= \"a\"", "json_schema": {}}' >"$tmp/gboth.jsonl"
out=$("$CATENA" batch -m "$S" --prompts "$tmp/gboth.jsonl" 2>&1)
printf '%s' "$out" | grep -q 'not both' && ok || bad "grammar and json_schema: $out"

# bench --parallel 4: one JSON line with parallel 4 and positive rates.
out=$("$CATENA" bench -m "$S" --prompt-tokens 32 --gen-tokens 16 --threads 2 --reps 2 --parallel 4 2>&1)
num() { printf '%s' "$out" | sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
[ "$(printf '%s' "$out" | wc -l)" -le 1 ] && [ "$(num parallel)" = 4 ] &&
    [ "$(num gen_tokens)" = 16 ] &&
    awk -v p="$(num prefill_tok_s)" -v d="$(num decode_tok_s)" 'BEGIN { exit !(p > 0 && d > 0) }' &&
    ok || bad "bench --parallel 4: $out"
expect 2 "whole number" bench -m "$S" --parallel 0

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
