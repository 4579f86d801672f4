# Shared by the tests of `catena serve` (tests/cli/serve*.sh), which source it after setting
# nothing: the model, a temporary folder removed at exit, pass / fail counting, and start
# (a server on a free port of 127.0.0.1, killed at exit), U, code and json for requests.
set -u
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models/stories260K.gguf"
[ -f "$M" ] || {
    echo "skip: $M is missing"
    exit 77
}
for tool in curl node bash; do
    command -v $tool >/dev/null 2>&1 || {
        echo "FAIL: $tool is needed (scripts/setup.sh installs it)"
        exit 1
    }
done
tmp=$(mktemp -d) || exit 1
pids=""
cleanup() {
    for p in $pids; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL: $*"
}
has() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac }
# json FILE EXPR: evaluates EXPR with j = the parsed file (node), prints the result.
json() { node -e "const j = JSON.parse(require('fs').readFileSync('$1', 'utf8')); console.log($2)"; }

# start NAME ARGS...: a server on a free port; sets PORT (from its first line).
start() {
    name=$1
    shift
    "$CATENA" serve -m "$M" --port 0 "$@" 2>"$tmp/$name.log" &
    pid=$!
    pids="$pids $pid"
    PORT=""
    i=0
    while [ $i -lt 100 ] && [ -z "$PORT" ]; do
        PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/$name.log" 2>/dev/null)
        [ -n "$PORT" ] || sleep 0.1
        i=$((i + 1))
    done
    [ -n "$PORT" ] || bad "$name did not start: $(cat "$tmp/$name.log")"
}
U() { echo "http://127.0.0.1:$PORT$1"; }
# code URL ARGS...: the HTTP status of a request, the body into $tmp/body
code() {
    u=$1
    shift
    curl -s -o "$tmp/body" -D "$tmp/head" -w '%{http_code}' "$@" "$(U "$u")"
}
