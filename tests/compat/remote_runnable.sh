#!/bin/sh
# catena serve's chains (tests/cli/chains/) against LangChain.js's RemoteRunnable
# (tests/compat/remote_runnable.mjs says what it checks). The server is started here on
# 127.0.0.1 and stopped at the end. Exits 77 (skip) when node or the client
# (bench/langserve/node_modules/@langchain/core: `make peers`) is not installed.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models/stories260K.gguf"
command -v node >/dev/null 2>&1 || { echo "SKIP: node is not installed"; exit 77; }
[ -f bench/langserve/node_modules/@langchain/core/package.json ] || {
    echo "SKIP: bench/langserve/node_modules/@langchain/core is missing; run make peers"
    exit 77
}
[ -f "$M" ] || { echo "SKIP: $M is missing"; exit 77; }
tmp=$(mktemp -d) || exit 1
export CATENA_MODEL="$M" TEST_KB="$tmp/kb.sqlite"
"$CATENA" serve -m "$M" --port 0 -q --chain story=tests/cli/chains/story.lua \
    --chain upper=tests/cli/chains/upper.lua --chain docs=tests/cli/chains/docs.lua 2>"$tmp/log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
port=""
i=0
while [ $i -lt 100 ] && [ -z "$port" ]; do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/log" 2>/dev/null)
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || { echo "FAIL: catena serve did not start: $(cat "$tmp/log")"; exit 1; }
# What the story chain gives, run locally.
cat >"$tmp/local.lua" <<'LUA'
local chain = dofile("tests/cli/chains/story.lua")
io.write(chain:invoke({ who = "Lily" }))
LUA
want=$("$CATENA" run "$tmp/local.lua" 2>/dev/null)
timeout 120 node tests/compat/remote_runnable.mjs "$root" "http://127.0.0.1:$port" "$want"
