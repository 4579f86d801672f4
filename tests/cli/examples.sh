#!/bin/sh
# Runs every example script against the shared test model; any failure fails the test.
set -u
CATENA="${CATENA:-build/catena}"
MODEL="${CTN_SHARED:-../shared}/models/stories260K.gguf"
# No model: skipped (ctest's skip code), not failed and not passed.
if [ ! -r "$MODEL" ]; then
    echo "skip: $MODEL is missing (set CTN_SHARED to the shared folder)"
    exit 77
fi
pass=0
fail=0
# Shell examples take the model and the command; Lua examples run with `catena run` and
# find the model in CATENA_MODEL.
for ex in examples/*.sh examples/*.lua; do
    case "$ex" in
    *.lua) set -- env CATENA_MODEL="$MODEL" "$CATENA" run "$ex" ;;
    *) set -- sh "$ex" "$MODEL" "$CATENA" ;;
    esac
    if "$@" >/tmp/catena-example.$$ 2>&1; then
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
