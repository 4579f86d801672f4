#!/bin/sh
# The recipe of docs/serving.md: HAProxy (Debian's) in front of two `catena serve` processes
# on 127.0.0.1, balancing by the X-Session-Id header with consistent hashing, so that every
# turn of a conversation reaches the server that holds its engine session: a second turn
# finds the first in the session (cached_tokens), for each of 12 conversations, and both
# servers take some of them. Everything is started here and stopped at the end.
set -u
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models/stories260K.gguf"
[ -f "$M" ] || { echo "skip: $M is missing"; exit 77; }
for tool in haproxy curl node; do
    command -v $tool >/dev/null 2>&1 || { echo "FAIL: $tool is needed (scripts/setup.sh installs it)"; exit 1; }
done
tmp=$(mktemp -d) || exit 1
pids=""
trap 'for p in $pids; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
json() { node -e "const j = JSON.parse(require('fs').readFileSync('$1', 'utf8')); console.log($2)"; }

# Two servers on free ports.
for s in a b; do
    "$CATENA" serve -m "$M" --port 0 --chat-template chatml 2>"$tmp/$s.log" &
    pids="$pids $!"
done
for s in a b; do
    p=""
    i=0
    while [ $i -lt 100 ] && [ -z "$p" ]; do
        p=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/$s.log" 2>/dev/null)
        [ -n "$p" ] || sleep 0.1
        i=$((i + 1))
    done
    [ -n "$p" ] || { echo "FAIL: server $s did not start: $(cat "$tmp/$s.log")"; exit 1; }
    eval "port_$s=$p"
done

# HAProxy on a free port (tried until one binds).
try=0
front=""
while [ $try -lt 10 ] && [ -z "$front" ]; do
    f=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
    sed -e "s/@FRONT@/$f/" -e "s/@A@/$port_a/" -e "s/@B@/$port_b/" docs/haproxy.cfg >"$tmp/h.cfg"
    haproxy -db -f "$tmp/h.cfg" >"$tmp/h.log" 2>&1 &
    hp=$!
    i=0
    while [ $i -lt 50 ]; do
        curl -s -o /dev/null "http://127.0.0.1:$f/health" && { front=$f; break; }
        kill -0 $hp 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    if [ -n "$front" ]; then pids="$pids $hp"; else kill -9 $hp 2>/dev/null; fi
    try=$((try + 1))
done
[ -n "$front" ] || { echo "FAIL: haproxy did not start: $(cat "$tmp/h.log")"; exit 1; }

# 12 conversations of two turns each through HAProxy.
n=1
while [ $n -le 12 ]; do
    q1="{\"messages\":[{\"role\":\"user\",\"content\":\"Lily $n\"}],\"max_tokens\":6,\"temperature\":0}"
    curl -s "http://127.0.0.1:$front/v1/chat/completions" -H "X-Session-Id: conv-$n" -d "$q1" >"$tmp/t1"
    a1=$(json "$tmp/t1" 'JSON.stringify(j.choices[0].message.content)')
    held=$(json "$tmp/t1" 'j.usage.prompt_tokens + j.usage.completion_tokens')
    q2="{\"messages\":[{\"role\":\"user\",\"content\":\"Lily $n\"},{\"role\":\"assistant\",\"content\":$a1},{\"role\":\"user\",\"content\":\"And then?\"}],\"max_tokens\":6,\"temperature\":0}"
    curl -s "http://127.0.0.1:$front/v1/chat/completions" -H "X-Session-Id: conv-$n" -d "$q2" >"$tmp/t2"
    got=$(json "$tmp/t2" 'j.usage.prompt_tokens_details.cached_tokens')
    [ "$got" = $((held - 1)) ] && ok || bad "conversation $n: turn 2 found $got tokens, turn 1 held $held"
    n=$((n + 1))
done
na=$(grep -c 'POST /v1/chat/completions 200' "$tmp/a.log")
nb=$(grep -c 'POST /v1/chat/completions 200' "$tmp/b.log")
[ $((na + nb)) = 24 ] && [ "$na" -gt 0 ] && [ "$nb" -gt 0 ] && ok || bad "the servers took $na and $nb turns of 24"

echo "haproxy: $pass passed, $fail failed"
[ "$fail" = 0 ]
