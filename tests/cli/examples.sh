#!/bin/sh
# Runs every example script against the shared test model; any failure fails the test.
set -u
CATENA="${CATENA:-build/catena}"
MODEL="${CTN_SHARED:-../shared}/models/stories260K.gguf"
pass=0
fail=0
for ex in examples/*.sh; do
    if sh "$ex" "$MODEL" "$CATENA" >/tmp/catena-example.$$ 2>&1; then
        pass=$((pass + 1))
        echo "ok   $ex"
    else
        fail=$((fail + 1))
        echo "FAIL $ex"
        sed 's/^/    /' /tmp/catena-example.$$
    fi
done
rm -f /tmp/catena-example.$$
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
