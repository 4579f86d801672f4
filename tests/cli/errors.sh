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
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
