#!/bin/sh
# The command line's answers to bad usage: a clear message and the right exit status.
set -u
CATENA="${CATENA:-build/catena}"
pass=0
fail=0
expect() { # expect STATUS PATTERN -- command...
    want=$1 pat=$2
    shift 3
    out=$("$@" 2>&1 </dev/null)
    got=$?
    if [ "$got" = "$want" ] && printf '%s' "$out" | grep -q -- "$pat"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $* -> status $got (want $want), output: $out (want /$pat/)"
    fi
}
expect 2 "usage: catena" -- "$CATENA"
expect 2 "unknown command 'frobnicate'" -- "$CATENA" frobnicate
expect 0 "CUDA" -- "$CATENA" version
expect 2 "no model given" -- "$CATENA" tokenize
expect 2 "unknown or incomplete argument '--bogus'" -- "$CATENA" tokenize -m x --bogus
expect 1 "/no/such.gguf" -- "$CATENA" tokenize -m /no/such.gguf
expect 1 "/no/such.gguf" -- "$CATENA" inspect /no/such.gguf
expect 2 "usage" -- "$CATENA" inspect

# Out-of-range settings: the same validator and the same message (the real range) from
# catena generate and catena batch (and from Lua: tests/lua/components_spec.lua).
S="${CTN_SHARED:-../shared}/models/stories260K.gguf"
if [ -f "$S" ]; then
    expect 2 "setting 'min_p' must be a number from 0 to 1, not -0.5" -- \
        "$CATENA" generate -m "$S" -p x -n 1 --min-p -0.5
    expect 2 "setting 'top_p' must be a number from 0 to 1, not 2" -- \
        "$CATENA" generate -m "$S" -p x -n 1 --top-p 2
    expect 2 "setting 'top_k' must be an integer from 0 to 2147483647, not -3" -- \
        "$CATENA" generate -m "$S" -p x -n 1 --top-k -3
    expect 2 "setting 'temperature' must be a number from 0 to 100, not 1e.308" -- \
        "$CATENA" generate -m "$S" -p x -n 1 --temp 1e308
    printf '{"prompt": "x", "temperature": -1}\n' > "${TMPDIR:-/tmp}/errors-$$.jsonl"
    expect 1 "setting 'temperature' must be a number from 0 to 100, not -1" -- \
        "$CATENA" batch -m "$S" --prompts "${TMPDIR:-/tmp}/errors-$$.jsonl"
    printf '{"prompt": "x", "top_p": 2}\n' > "${TMPDIR:-/tmp}/errors-$$.jsonl"
    expect 1 "setting 'top_p' must be a number from 0 to 1, not 2" -- \
        "$CATENA" batch -m "$S" --prompts "${TMPDIR:-/tmp}/errors-$$.jsonl"
    rm -f "${TMPDIR:-/tmp}/errors-$$.jsonl"
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
