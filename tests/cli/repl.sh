#!/bin/sh
# catena repl from a pipe: expressions print their values (JSON for tables, graphs for
# runnables), statements run, a chunk continues over lines until complete, errors do not end
# the session, :graph and :trace work, and Ctrl-C (SIGINT) cancels a running chain while
# the session goes on.
set -u
CATENA="${CATENA:-build/catena}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

printf '%s\n' 'x = catena.lambda(function(v) return v * 2 end, "double")' '=x:invoke(21)' \
    '{a = {1, 2}}' 'for i = 1,' '  2 do print("line", i) end' 'error("oops", 0)' \
    ':graph x | x' '"after error"' ':trace' 'x:invoke(1)' ':nope' |
    "$CATENA" repl > "$tmp/out" 2> "$tmp/err"
rc=$?
check "exits 0 at the end of input" '[ $rc = 0 ]'
check "=expr prints the value" 'grep -qx 42 "$tmp/out"'
check "tables print as JSON" 'grep -q "\"a\": \[" "$tmp/out"'
check "a chunk continues over lines" 'grep -q "line	2" "$tmp/out"'
check "errors are printed and the session goes on" 'grep -q oops "$tmp/err" && grep -q "\"after error\"" "$tmp/out"'
check ":graph draws the runnable" 'grep -q "^|-- double (lambda)" "$tmp/out"'
check ":trace prints trace trees" 'grep -q "^double (lambda)  [0-9.]* ms  -> 2" "$tmp/err"'
check "unknown commands are named" 'grep -q "unknown command :nope" "$tmp/err"'

# Ctrl-C during a long chain: the chain is cancelled, the session continues.
{
    printf '%s\n' 'slow = catena.lambda(function(v) catena.sleep(20000); return v end)'
    printf '%s\n' 'slow:invoke(1)'
    sleep 2
    printf '%s\n' 'print("still here")'
} | "$CATENA" repl > "$tmp/out2" 2> "$tmp/err2" &
pid=$!
sleep 1
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
check "Ctrl-C cancels the chain" 'grep -q "cancelled" "$tmp/err2"'
check "and the session goes on" 'grep -q "still here" "$tmp/out2" && [ $rc = 0 ]'
check "a cancellation is one line, no traceback" '[ "$(cat "$tmp/err2")" = "lambda: cancelled" ]'

# Ctrl-C during a stream: the same.
{
    printf '%s\n' 'slow = catena.lambda(function(v) catena.sleep(20000); return v end)'
    printf '%s\n' 'for c in slow:stream(1) do print(c) end'
    sleep 3
    printf '%s\n' 'print("still here")'
} | "$CATENA" repl > "$tmp/out3" 2> "$tmp/err3" &
pid=$!
sleep 2
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
check "Ctrl-C during a stream prints one line" '[ "$(cat "$tmp/err3")" = "lambda: cancelled" ]'
check "and the session goes on after it" 'grep -q "still here" "$tmp/out3" && [ $rc = 0 ]'

# :graph without a runnable says what it expects.
printf '%s\n' ':graph 42' ':graph' ':graph nosuch' | "$CATENA" repl > /dev/null 2> "$tmp/err4"
check ":graph 42 says what :graph expects" \
    'grep -q "^:graph EXPR draws a runnable, for example :graph chain; .42. is a number$" "$tmp/err4"'
check ":graph alone and :graph of nil say it too" \
    '[ "$(grep -c "^:graph EXPR draws a runnable" "$tmp/err4")" = 3 ] && grep -q "is nil" "$tmp/err4"'
# A model's settings change in the session without a restart: catena.unload it, load it
# again with others (the error for a loaded model says so).
S="${CTN_SHARED:-../shared}/models/stories260K.gguf"
if [ -f "$S" ]; then
    printf '%s\n' "llm = catena.model{path = \"$S\"}" '=llm:with{max_tokens = 2}:invoke("Once")' \
        "ok, e = pcall(catena.model, {path = \"$S\", ctx = 256})" '=e.message' \
        'old = llm:with{max_tokens = 1}' 'catena.unload(llm)' \
        "llm = catena.model{path = \"$S\", ctx = 256, output = \"message\"}" \
        '=llm:with{max_tokens = -1, ignore_eos = true}:invoke("Once").usage_metadata.output_tokens' \
        '=old:invoke("Once")' |
        "$CATENA" repl > "$tmp/out5" 2> "$tmp/err5"
    check "a loaded model with other settings is refused in catena.model's words" \
        'grep -q "ctx 256 was asked, but .* is already loaded with the default ctx" "$tmp/out5"'
    check "after catena.unload it loads again with the new ctx (2 + 255 tokens fill 256)" \
        '[ "$(tail -n 2 "$tmp/out5" | head -n 1)" = 255 ]'
    check "and what was made from the old one goes on working" '[ "$(tail -n 1 "$tmp/out5")" = "\" upon\"" ]'
fi
exit $fail
