#!/bin/sh
# catena serve against the OpenAI Node SDK and LangChain.js's ChatOpenAI
# (tests/compat/openai_clients.mjs says what it checks). The server is started here on
# 127.0.0.1 and stopped at the end. Exits 77 (skip) when node or the clients
# (bench/node_modules/openai, @langchain/openai: `make peers`) are not installed.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models/stories260K.gguf"
if ! command -v node >/dev/null 2>&1; then
    echo "SKIP: node is not installed"
    exit 77
fi
for p in openai @langchain/openai; do
    if [ ! -f "bench/node_modules/$p/package.json" ]; then
        echo "SKIP: bench/node_modules/$p is missing; run make peers"
        exit 77
    fi
done
[ -f "$M" ] || {
    echo "SKIP: $M is missing"
    exit 77
}
tmp=$(mktemp -d) || exit 1
"$CATENA" serve -m "$M" --port 0 --chat-template chatml --api-key sekrit -q 2>"$tmp/log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
port=""
i=0
while [ $i -lt 100 ] && [ -z "$port" ]; do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/log" 2>/dev/null)
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || {
    echo "FAIL: catena serve did not start: $(cat "$tmp/log")"
    exit 1
}
want=$("$CATENA" generate -m "$M" -p "Once upon a time" -n 24 --temp 0 2>/dev/null)
timeout 120 node tests/compat/openai_clients.mjs "$root" "http://127.0.0.1:$port" stories260K.gguf "$want"
