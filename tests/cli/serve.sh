#!/bin/sh
# `catena serve` on 127.0.0.1 with stories260K, talked to with curl (and bash's /dev/tcp for
# raw bytes): health, models, completions (the text catena generate gives), chat, streams
# (SSE chunks, usage, [DONE]), logprobs on both routes, embeddings (float and base64), tokenize / detokenize, the
# errors in OpenAI's shape (404, 405, 400, 401, 413, 431, 408, 503), keep-alive and
# pipelining, a client that goes away cancelling its generation, and SIGTERM letting a
# running request finish. Every server is started here and stopped before the end; request
# loops are bounded.
. "$(dirname "$0")/lib/serve.sh"

start main --chat-template chatml --header-timeout 1
main_pid=$pid

# Health and models.
[ "$(code /health)" = 200 ] && has "$(cat "$tmp/body")" '"ok"' && ok || bad "health: $(cat "$tmp/body")"
[ "$(code /v1/models)" = 200 ] && [ "$(json "$tmp/body" 'j.data[0].id')" = stories260K.gguf ] && ok ||
    bad "models: $(cat "$tmp/body")"

# A greedy completion is catena generate's text.
want=$("$CATENA" generate -m "$M" -p "Once upon a time" -n 24 --temp 0 2>/dev/null)
[ "$(code /v1/completions -d '{"model":"stories260K.gguf","prompt":"Once upon a time","max_tokens":24,"temperature":0}')" = 200 ] &&
    ok || bad "completion status: $(cat "$tmp/body")"
got=$(json "$tmp/body" 'j.choices[0].text')
[ "$got" = "$want" ] && ok || bad "completion text '$got', catena generate '$want'"
[ "$(json "$tmp/body" 'j.object + " " + j.choices[0].finish_reason + " " + j.usage.completion_tokens')" = "text_completion length 24" ] &&
    ok || bad "completion fields: $(cat "$tmp/body")"

# The same streamed: SSE chunks whose texts join to it, the usage, then [DONE].
curl -sN "$(U /v1/completions)" -d '{"prompt":"Once upon a time","max_tokens":24,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' >"$tmp/sse"
node -e "
const lines = require('fs').readFileSync('$tmp/sse', 'utf8').split('\n').filter(l => l.startsWith('data: '));
const last = lines.pop();
if (last !== 'data: [DONE]') { console.log('no [DONE] at the end: ' + last); process.exit(1); }
const chunks = lines.map(l => JSON.parse(l.slice(6)));
const usage = chunks.pop();
if (!usage.usage || usage.usage.completion_tokens !== 24) { console.log('usage chunk: ' + JSON.stringify(usage)); process.exit(1); }
const text = chunks.map(c => c.choices[0].text).join('');
if (text !== process.argv[1]) { console.log('streamed \"' + text + '\"'); process.exit(1); }
if (chunks[chunks.length - 1].choices[0].finish_reason !== 'length') { console.log('no finish_reason'); process.exit(1); }
" "$want" && ok || bad "completion stream: $(head -c 600 "$tmp/sse")"

# Chat, whole and streamed (the role first, then the content, then the finish).
[ "$(code /v1/chat/completions -d '{"messages":[{"role":"system","content":"Tell a story."},{"role":"user","content":[{"type":"text","text":"Lily"}]}],"max_tokens":12,"temperature":0}')" = 200 ] &&
    [ "$(json "$tmp/body" 'j.object + " " + j.choices[0].message.role')" = "chat.completion assistant" ] &&
    ok || bad "chat: $(cat "$tmp/body")"
chat=$(json "$tmp/body" 'j.choices[0].message.content')
curl -sN "$(U /v1/chat/completions)" -d '{"messages":[{"role":"system","content":"Tell a story."},{"role":"user","content":"Lily"}],"max_tokens":12,"temperature":0,"stream":true}' >"$tmp/csse"
node -e "
const ls = require('fs').readFileSync('$tmp/csse', 'utf8').split('\n').filter(l => l.startsWith('data: ') && l !== 'data: [DONE]');
const cs = ls.map(l => JSON.parse(l.slice(6)));
if (cs[0].choices[0].delta.role !== 'assistant' || cs[0].object !== 'chat.completion.chunk') process.exit(1);
const t = cs.map(c => c.choices[0].delta.content || '').join('');
if (t !== process.argv[1]) { console.log('streamed \"' + t + '\"'); process.exit(1); }
" "$chat" && ok || bad "chat stream: $(head -c 400 "$tmp/csse")"

# X-Session-Id: the next turn of a chat finds the earlier one in the engine session.
t1='{"messages":[{"role":"user","content":"Lily"}],"max_tokens":8,"temperature":0}'
[ "$(code /v1/chat/completions -H 'X-Session-Id: chat-7' -d "$t1")" = 200 ] && ok || bad "turn 1: $(cat "$tmp/body")"
a1=$(json "$tmp/body" 'JSON.stringify(j.choices[0].message.content)')
p1=$(json "$tmp/body" 'j.usage.prompt_tokens + j.usage.completion_tokens')
t2="{\"messages\":[{\"role\":\"user\",\"content\":\"Lily\"},{\"role\":\"assistant\",\"content\":$a1},{\"role\":\"user\",\"content\":\"And Tom?\"}],\"max_tokens\":8,\"temperature\":0}"
[ "$(code /v1/chat/completions -H 'X-Session-Id: chat-7' -d "$t2")" = 200 ] && ok || bad "turn 2: $(cat "$tmp/body")"
cached=$(json "$tmp/body" 'j.usage.prompt_tokens_details.cached_tokens')
[ "$cached" = $((p1 - 1)) ] && ok || bad "turn 2 found $cached tokens, turn 1 held $p1"

# n = 3: three choices from forks of one prefill, each what one request with seed + i gives.
[ "$(code /v1/completions -d '{"prompt":"Once upon a time","max_tokens":8,"n":3,"seed":5,"temperature":0.9}')" = 200 ] &&
    cp "$tmp/body" "$tmp/n3" && ok || bad "n = 3: $(cat "$tmp/body")"
for i in 0 1 2; do
    code /v1/completions -d "{\"prompt\":\"Once upon a time\",\"max_tokens\":8,\"seed\":$((5 + i)),\"temperature\":0.9}" >/dev/null
    [ "$(json "$tmp/n3" "j.choices[$i].index + ':' + j.choices[$i].text")" = "$i:$(json "$tmp/body" 'j.choices[0].text')" ] &&
        ok || bad "n = 3, choice $i: $(cat "$tmp/n3") against $(cat "$tmp/body")"
done
err_is_n() { [ "$1" = 400 ] && [ "$(json "$tmp/body" 'j.error.param')" = n ] && ok || bad "n = 0: $1 $(cat "$tmp/body")"; }
err_is_n "$(code /v1/completions -d '{"prompt":"x","n":0}')"

# Logprobs. Chat: logprobs.content in OpenAI's shape, one entry per token, the greedy token
# first among its top_logprobs (sorted), the tokens joining to the content; streamed, each
# chunk carries its own tokens' entries and they add up to the same.
lpchk="$tmp/lpchk.js"
cat >"$lpchk" <<'JS'
const fs = require('fs');
const [kind, file, want] = process.argv.slice(2);
const raw = fs.readFileSync(file);
const fail = m => { console.log(m); process.exit(1); };
let text;
try { text = new TextDecoder('utf-8', { fatal: true }).decode(raw); } catch (e) { fail('not UTF-8'); }
const sse = kind.endsWith('-stream');
const bodies = sse ? text.split('\n').filter(l => l.startsWith('data: ') && l !== 'data: [DONE]').map(l => JSON.parse(l.slice(6))) : [JSON.parse(text)];
const usage = bodies.map(b => b.usage).filter(u => u)[0];
const valid = b => { try { new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(b)); return true; } catch (e) { return false; } };
let out = '', toks = [], split = 0;
const entry = (e, where) => {
  if (typeof e.token !== 'string' || typeof e.logprob !== 'number' || !(e.logprob <= 0) || !Array.isArray(e.bytes)) fail('bad entry at ' + where + ': ' + JSON.stringify(e));
  if (valid(e.bytes) && !e.bytes.includes(0)) { if (Buffer.from(e.bytes).toString('utf8') !== e.token) fail('bytes are not the token: ' + JSON.stringify(e)); }
  else { split++; if (!e.token.includes('\ufffd')) fail('a partial character without U+FFFD: ' + JSON.stringify(e)); }
};
for (const b of bodies) for (const c of b.choices || []) {
  if (kind.startsWith('chat')) {
    out += sse ? (c.delta.content || '') : c.message.content;
    if (c.logprobs === null) continue;
    for (const e of c.logprobs.content) {
      entry(e, toks.length);
      if (e.top_logprobs.length !== +want) fail('top_logprobs has ' + e.top_logprobs.length);
      e.top_logprobs.forEach((t, i) => { entry(t, toks.length + '.' + i); if (i > 0 && t.logprob > e.top_logprobs[i - 1].logprob) fail('not sorted'); });
      if (process.env.GREEDY && (e.top_logprobs[0].token !== e.token || e.top_logprobs[0].logprob !== e.logprob)) fail('greedy token not first: ' + JSON.stringify(e));
      toks.push(e.token);
    }
  } else {
    out += c.text;
    if (c.logprobs === null) continue;
    const l = c.logprobs;
    if (l.tokens.length !== l.token_logprobs.length || l.tokens.length !== l.top_logprobs.length || l.tokens.length !== l.text_offset.length) fail('lists differ in length');
    l.tokens.forEach((t, i) => {
      const top = Object.entries(l.top_logprobs[i]);
      if (top.length < 1 || top.length > +want + 1 || l.top_logprobs[i][t] !== l.token_logprobs[i]) fail('top_logprobs ' + JSON.stringify(l.top_logprobs[i]) + ' for ' + t);
      if (l.text_offset[i] !== [...toks.join('')].length) fail('text_offset ' + l.text_offset[i]);
      toks.push(t);
    });
  }
}
if (!usage || toks.length !== usage.completion_tokens) fail(toks.length + ' entries for ' + JSON.stringify(usage));
if (process.env.GREEDY && toks.join('') !== out) fail('tokens ' + JSON.stringify(toks.join('')) + ', text ' + JSON.stringify(out));
if (process.env.SPLIT && split === 0) fail('no token was a partial character');
JS
lpc='"messages":[{"role":"user","content":"Lily"}],"max_tokens":16,"temperature":0'
[ "$(code /v1/chat/completions -d "{$lpc,\"logprobs\":true,\"top_logprobs\":3}")" = 200 ] &&
    GREEDY=1 node "$lpchk" chat "$tmp/body" 3 && ok || bad "chat logprobs: $(head -c 600 "$tmp/body")"
curl -sN "$(U /v1/chat/completions)" -d "{$lpc,\"logprobs\":true,\"top_logprobs\":2,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$tmp/lsse"
GREEDY=1 node "$lpchk" chat-stream "$tmp/lsse" 2 && ok || bad "chat logprobs stream: $(head -c 600 "$tmp/lsse")"
[ "$(code /v1/chat/completions -d "{$lpc,\"logprobs\":true}")" = 200 ] && GREEDY= node "$lpchk" chat "$tmp/body" 0 &&
    ok || bad "chat logprobs without top_logprobs: $(head -c 600 "$tmp/body")"
# Hot sampling splits characters across this model's byte tokens: bytes keep them, the token's
# text has U+FFFD (so has a NUL byte), and the body stays UTF-8.
[ "$(code /v1/chat/completions -d '{"messages":[{"role":"user","content":"Lily"}],"max_tokens":80,"temperature":50,"seed":3,"logprobs":true,"top_logprobs":5}')" = 200 ] &&
    SPLIT=1 node "$lpchk" chat "$tmp/body" 5 && ok || bad "chat logprobs, hot: $(head -c 600 "$tmp/body")"
# Completions: tokens, token_logprobs, top_logprobs ({token: logprob}, the sampled one
# included), text_offset; and streamed.
lpp='"prompt":"Once upon a time","max_tokens":16,"temperature":0'
[ "$(code /v1/completions -d "{$lpp,\"logprobs\":2}")" = 200 ] && GREEDY=1 node "$lpchk" completion "$tmp/body" 2 &&
    ok || bad "completion logprobs: $(head -c 600 "$tmp/body")"
curl -sN "$(U /v1/completions)" -d "{$lpp,\"logprobs\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$tmp/lsse"
GREEDY=1 node "$lpchk" completion-stream "$tmp/lsse" 0 && ok || bad "completion logprobs stream: $(head -c 600 "$tmp/lsse")"
# Not asked for: null.
[ "$(code /v1/completions -d "{$lpp}")" = 200 ] && [ "$(json "$tmp/body" 'j.choices[0].logprobs')" = null ] &&
    ok || bad "logprobs not asked for: $(head -c 300 "$tmp/body")"
# Out of range, the wrong type, top_logprobs without logprobs: 400 naming the field.
err_param() { # STATUS PARAM WHAT
    [ "$1" = 400 ] && [ "$(json "$tmp/body" 'j.error.param')" = "$2" ] && [ -n "$(json "$tmp/body" 'j.error.message')" ] &&
        ok || bad "$3: $1 $(cat "$tmp/body")"
}
m='"messages":[{"role":"user","content":"x"}]'
err_param "$(code /v1/chat/completions -d "{$m,\"logprobs\":true,\"top_logprobs\":21}")" top_logprobs "top_logprobs 21"
err_param "$(code /v1/chat/completions -d "{$m,\"logprobs\":true,\"top_logprobs\":-1}")" top_logprobs "top_logprobs -1"
err_param "$(code /v1/chat/completions -d "{$m,\"top_logprobs\":2}")" top_logprobs "top_logprobs without logprobs"
err_param "$(code /v1/chat/completions -d "{$m,\"logprobs\":3}")" logprobs "chat logprobs 3"
err_param "$(code /v1/completions -d '{"prompt":"x","logprobs":21}')" logprobs "completion logprobs 21"
err_param "$(code /v1/completions -d '{"prompt":"x","logprobs":1.5}')" logprobs "completion logprobs 1.5"
err_param "$(code /v1/completions -d '{"prompt":"x","logprobs":true}')" logprobs "completion logprobs true"
err_param "$(code /v1/completions -d '{"prompt":"x","top_logprobs":2}')" top_logprobs "completion top_logprobs"

# Embeddings: float and base64 give the same vector.
[ "$(code /v1/embeddings -d '{"input":["hello there","a dog"]}')" = 200 ] && cp "$tmp/body" "$tmp/ef" && ok ||
    bad "embeddings: $(cat "$tmp/body")"
[ "$(code /v1/embeddings -d '{"input":["hello there","a dog"],"encoding_format":"base64"}')" = 200 ] && ok ||
    bad "embeddings base64: $(cat "$tmp/body")"
node -e "
const f = JSON.parse(require('fs').readFileSync('$tmp/ef', 'utf8')), b = JSON.parse(require('fs').readFileSync('$tmp/body', 'utf8'));
for (let i = 0; i < 2; i++) {
  const buf = Buffer.from(b.data[i].embedding, 'base64');
  const v = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  if (v.length !== 64 || f.data[i].embedding.length !== 64) process.exit(1);
  for (let k = 0; k < 64; k++) if (Math.abs(v[k] - f.data[i].embedding[k]) > 1e-6) process.exit(1);
}
" && ok || bad "base64 and float embeddings differ"

# Tokenize and detokenize.
[ "$(code /tokenize -d '{"prompt":"Once upon a time","add_special_tokens":false}')" = 200 ] && ok || bad "tokenize: $(cat "$tmp/body")"
ids=$(json "$tmp/body" 'JSON.stringify(j.tokens)')
[ "$(code /detokenize -d "{\"tokens\":$ids}")" = 200 ] && [ "$(json "$tmp/body" 'j.prompt')" = "Once upon a time" ] &&
    ok || bad "detokenize of $ids: $(cat "$tmp/body")"

# Errors, in OpenAI's shape.
err_is() { # STATUS GOT WHAT
    [ "$2" = "$1" ] && [ -n "$(json "$tmp/body" 'j.error.message')" ] && ok || bad "$3: status $2: $(cat "$tmp/body")"
}
err_is 404 "$(code /nope)" "unknown route"
err_is 405 "$(code /v1/completions)" "GET of a POST route"
grep -qi '^Allow: POST' "$tmp/head" && ok || bad "405 without Allow: $(cat "$tmp/head")"
err_is 400 "$(code /v1/completions -d '{"prompt":')" "malformed JSON"
err_is 400 "$(code /v1/completions -d '[1,2]')" "JSON that is not an object"
err_is 400 "$(code /v1/completions -d '{"prompt":"x"} trailing')" "bytes after the JSON value"
printf '{"prompt":"x\000"}' >"$tmp/nul.json"
err_is 400 "$(code /v1/completions --data-binary @"$tmp/nul.json")" "a NUL byte in the body"
has "$(cat "$tmp/body")" "NUL byte (at byte 12)" && ok || bad "the NUL's place: $(cat "$tmp/body")"
err_is 400 "$(code /v1/completions -d '{"prompt":"x","best_of":3}')" "best_of"
[ "$(json "$tmp/body" 'j.error.param')" = best_of ] && ok || bad "unsupported param not named: $(cat "$tmp/body")"
err_is 400 "$(code /v1/completions -d '{"prompt":"x","temperature":"hot"}')" "a bad temperature"
err_is 400 "$(code /v1/completions -d '{"prompt":""}')" "an empty prompt"
err_is 400 "$(code /v1/chat/completions -d '{"messages":[{"role":"wizard","content":"x"}]}')" "a bad role"
err_is 404 "$(code /v1/completions -d '{"model":"gpt-4","prompt":"x"}')" "an unknown model"
[ "$(json "$tmp/body" 'j.error.code')" = model_not_found ] && ok || bad "model_not_found: $(cat "$tmp/body")"
head -c 9000000 /dev/zero >"$tmp/big"
err_is 413 "$(code /v1/completions --data-binary @"$tmp/big")" "a body past --max-body"
err_is 431 "$(code /health -H "X-Pad: $(head -c 20000 /dev/zero | tr '\0' a)")" "headers past --max-header"

# Keep-alive: two requests on one connection; pipelined ones answered in order.
n=$(curl -s -o /dev/null -o /dev/null -w '%{num_connects}\n' "$(U /health)" "$(U /v1/models)" | awk '{s += $1} END {print s}')
[ "$n" = 1 ] && ok || bad "keep-alive: $n connections for two requests"
bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT
printf 'GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
timeout 5 cat <&3" >"$tmp/pipe" 2>/dev/null
[ "$(grep -o 'HTTP/1.1 200' "$tmp/pipe" | wc -l)" = 2 ] && grep -q '"status":"ok"' "$tmp/pipe" && grep -q '"object":"list"' "$tmp/pipe" &&
    ok || bad "pipelining: $(cat "$tmp/pipe")"
# A client that sends part of a request and stalls gets 408 (--header-timeout 1).
bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT
printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"pro' >&3
timeout 5 cat <&3" >"$tmp/slow" 2>/dev/null
has "$(head -1 "$tmp/slow")" "408" && ok || bad "slow client: $(cat "$tmp/slow")"
# Garbage gets 400 and the server goes on.
bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT; printf 'NOT HTTP AT ALL\r\n\r\n' >&3; timeout 5 cat <&3" >"$tmp/junk" 2>/dev/null
has "$(head -1 "$tmp/junk")" "400" && ok || bad "garbage: $(cat "$tmp/junk")"

# A client that goes away cancels its generation: nothing left running, no more KV held
# than before (the idle session above keeps its blocks).
curl -s "$(U /metrics)" >"$tmp/m0"
kv0=$(sed -n 's/^catena_kv_blocks_used \(.*\)/\1/p' "$tmp/m0")
c0=$(sed -n 's/^catena_requests_cancelled_total \(.*\)/\1/p' "$tmp/m0")
# The client reads the start of the stream, then closes the socket (until the context is
# full the generation would go on for hundreds of milliseconds).
body='{"prompt":"Once upon a time","max_tokens":-1,"ignore_eos":true,"stream":true}'
bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT
printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${#body}\r\n\r\n%s' '$body' >&3
head -c 400 <&3 >/dev/null
exec 3<&-" 2>/dev/null
held="?"
i=0
while [ $i -lt 50 ]; do
    curl -s "$(U /metrics)" >"$tmp/m"
    held=$(sed -n 's/^catena_requests_held \(.*\)/\1/p' "$tmp/m")
    kv=$(sed -n 's/^catena_kv_blocks_used \(.*\)/\1/p' "$tmp/m")
    [ "$held" = 0 ] && [ "$kv" = "$kv0" ] && break
    sleep 0.1
    i=$((i + 1))
done
c1=$(sed -n 's/^catena_requests_cancelled_total \(.*\)/\1/p' "$tmp/m")
[ "$held" = 0 ] && [ "$kv" = "$kv0" ] && [ "$c1" = $((c0 + 1)) ] && ok ||
    bad "after the client left: held $held, KV blocks $kv (before: $kv0), cancelled $c0 -> $c1"
grep -q '^catena_http_requests_total [1-9]' "$tmp/m" && ok || bad "metrics: $(head -20 "$tmp/m")"
# The latency histograms: cumulative buckets ending in +Inf, which equals the count.
node -e "
const lines = require('fs').readFileSync('$tmp/m', 'utf8').split('\n');
for (const h of ['time_to_first_token_seconds', 'inter_token_seconds']) {
  const p = 'catena_' + h;
  const b = lines.filter(l => l.startsWith(p + '_bucket{le=')).map(l => [l.split('\"')[1], Number(l.split(' ')[1])]);
  const n = Number((lines.find(l => l.startsWith(p + '_count ')) || ' -1').split(' ')[1]);
  if (b.length < 5 || b[b.length - 1][0] !== '+Inf' || b[b.length - 1][1] !== n || n < 5) process.exit(1);
  for (let i = 1; i < b.length; i++) if (b[i][1] < b[i - 1][1]) process.exit(1);
}" && ok || bad "histograms: $(grep -A3 'histogram' "$tmp/m" | head -20)"

# The access log names each request.
grep -q 'POST /v1/completions 200' "$tmp/main.log" && grep -q 'GET /nope 404' "$tmp/main.log" && ok ||
    bad "access log: $(tail -5 "$tmp/main.log")"

# SIGTERM while a request runs: it finishes, then the server exits 0.
curl -s "$(U /v1/completions)" -d '{"prompt":"Once upon a time","max_tokens":120,"ignore_eos":true}' >"$tmp/last" &
cpid=$!
sleep 0.1
kill -TERM $main_pid
wait $cpid
wait $main_pid
rc=$?
[ "$rc" = 0 ] && ok || bad "exit status after SIGTERM: $rc"
[ "$(json "$tmp/last" 'j.usage.completion_tokens')" = 120 ] && ok || bad "the running request after SIGTERM: $(cat "$tmp/last")"

# API keys and a full server.
echo "sekrit" >"$tmp/key"
start keyed --api-key-file "$tmp/key" --max-concurrency 1
[ "$(code /health)" = 200 ] && ok || bad "health needs no key"
err_is 401 "$(code /v1/models)" "no key"
err_is 401 "$(code /v1/models -H 'Authorization: Bearer wrong')" "a wrong key"
[ "$(code /v1/models -H 'Authorization: Bearer sekrit')" = 200 ] && ok || bad "the right key: $(cat "$tmp/body")"
# One long request held (--max-concurrency 1): the next is refused with 503 and Retry-After.
curl -s "$(U /v1/completions)" -H 'Authorization: Bearer sekrit' -d '{"prompt":"Once","max_tokens":-1,"ignore_eos":true,"stream":true}' >/dev/null &
cpid=$!
i=0
held=0
while [ $i -lt 100 ] && [ "$held" != 1 ]; do
    held=$(curl -s -H 'Authorization: Bearer sekrit' "$(U /metrics)" | sed -n 's/^catena_requests_held \(.*\)/\1/p')
    [ "$held" = 1 ] || sleep 0.02
    i=$((i + 1))
done
st=$(code /v1/completions -H 'Authorization: Bearer sekrit' -d '{"prompt":"x","max_tokens":1}')
[ "$held" = 1 ] && [ "$st" = 503 ] && grep -qi '^Retry-After:' "$tmp/head" && ok ||
    bad "a full server (held $held): $st $(cat "$tmp/head")"
kill $cpid 2>/dev/null
wait $cpid 2>/dev/null

# Adapters: --lora at the start, and vLLM's runtime API with --allow-lora-loading.
MKLORA="${MKLORA:-build/tools/mklora}"
if [ -x "$MKLORA" ]; then
    "$MKLORA" "$M" -o "$tmp/a.gguf" --rank 4 --targets q,v --seed 3 --alpha 8 --std 0.3 >/dev/null 2>&1 ||
        bad "mklora failed"
    "$MKLORA" "$M" -o "$tmp/b.gguf" --rank 4 --targets q,v --seed 4 --alpha 8 --std 0.3 >/dev/null 2>&1
    start lora --lora story="$tmp/a.gguf" --allow-lora-loading -q
    [ "$(code /v1/models)" = 200 ] && [ "$(json "$tmp/body" 'j.data.map(m => m.id).join(",")')" = "stories260K.gguf,story" ] &&
        ok || bad "models with an adapter: $(cat "$tmp/body")"
    want=$("$CATENA" generate -m "$M" -p "Once upon a time" -n 16 --temp 0 --lora "$tmp/a.gguf" 2>/dev/null)
    code /v1/completions -d '{"model":"story","prompt":"Once upon a time","max_tokens":16,"temperature":0}' >/dev/null
    [ "$(json "$tmp/body" 'j.choices[0].text')" = "$want" ] && [ "$(json "$tmp/body" 'j.model')" = story ] && ok ||
        bad "the adapter's completion: $(cat "$tmp/body"), catena generate --lora: $want"
    [ "$(code /v1/load_lora_adapter -d "{\"lora_name\":\"b\",\"lora_path\":\"$tmp/b.gguf\"}")" = 200 ] &&
        has "$(cat "$tmp/body")" "added successfully" && ok || bad "load_lora_adapter: $(cat "$tmp/body")"
    [ "$(code /v1/completions -d '{"model":"b","prompt":"Once","max_tokens":4}')" = 200 ] && ok || bad "the loaded adapter: $(cat "$tmp/body")"
    err_is 400 "$(code /v1/load_lora_adapter -d "{\"lora_name\":\"c\",\"lora_path\":\"$tmp/none.gguf\"}")" "a missing adapter file"
    [ "$(code /v1/unload_lora_adapter -d '{"lora_name":"b"}')" = 200 ] && ok || bad "unload: $(cat "$tmp/body")"
    err_is 404 "$(code /v1/completions -d '{"model":"b","prompt":"Once"}')" "an unloaded adapter"
    err_is 404 "$(code /v1/unload_lora_adapter -d '{"lora_name":"b"}')" "unloading twice"
else
    bad "no $MKLORA (built with the tests): the adapter checks cannot run"
fi

# Chains the LangServe way (tests/cli/chains/): invoke, batch, stream, stream_events,
# schemas, and their errors.
export CATENA_MODEL="$M" TEST_KB="$tmp/kb.sqlite"
start chains --chain story=tests/cli/chains/story.lua --chain upper=tests/cli/chains/upper.lua \
    --chain docs=tests/cli/chains/docs.lua
cat >"$tmp/local.lua" <<'LUA'
io.write(dofile("tests/cli/chains/story.lua"):invoke({ who = "Lily" }))
LUA
want=$("$CATENA" run "$tmp/local.lua" 2>/dev/null)
[ "$(code /story/invoke -d '{"input":{"who":"Lily"},"config":{},"kwargs":{}}')" = 200 ] &&
    [ "$(json "$tmp/body" 'j.output')" = "$want" ] && [ -n "$(json "$tmp/body" 'j.metadata.run_id')" ] &&
    ok || bad "chain invoke: $(cat "$tmp/body"), catena run: $want"
[ "$(code /upper/batch -d '{"inputs":["a","b",{"n":1}],"config":[{},{"tags":["x"]},{}]}')" = 200 ] &&
    [ "$(json "$tmp/body" 'JSON.stringify(j.output) + " " + j.metadata.run_ids.length')" = '["A","B",{"got":{"n":1}}] 3' ] &&
    ok || bad "chain batch: $(cat "$tmp/body")"
curl -sN "$(U /story/stream)" -d '{"input":{"who":"Lily"}}' >"$tmp/cs"
node -e "
const t = require('fs').readFileSync('$tmp/cs', 'utf8').split('\n\n').filter(Boolean);
if (!t[0].startsWith('event: metadata') || t[t.length - 1] !== 'event: end') process.exit(1);
const data = t.filter(m => m.startsWith('event: data')).map(m => JSON.parse(m.split('\ndata: ')[1]));
if (data.length < 2 || data.join('') !== process.argv[1]) process.exit(1);
" "$want" && ok || bad "chain stream: $(head -c 500 "$tmp/cs")"
curl -sN "$(U /story/stream_events)" -d '{"input":{"who":"Lily"}}' >"$tmp/ce"
node -e "
const ev = require('fs').readFileSync('$tmp/ce', 'utf8').split('\n\n').filter(m => m.startsWith('event: data')).map(m => JSON.parse(m.split('\ndata: ')[1]));
const names = ev.map(e => e.event);
if (names[0] !== 'on_chain_start' || names[names.length - 1] !== 'on_chain_end') process.exit(1);
if (!names.includes('on_chat_model_stream') || ev[ev.length - 1].data.output !== process.argv[1]) process.exit(1);
if (ev.some(e => e.parent_ids.length === 0 && e.name !== 'story')) process.exit(1);
" "$want" && ok || bad "chain stream_events: $(head -c 600 "$tmp/ce")"
[ "$(code /docs/invoke -d '{"input":"dog"}')" = 200 ] && [ "$(json "$tmp/body" 'j.output[0].metadata.source')" = b.md ] &&
    ok || bad "a served retriever: $(cat "$tmp/body")"
[ "$(code /upper/input_schema)" = 200 ] && [ "$(json "$tmp/body" 'j.title')" = upperInput ] && ok ||
    bad "input_schema: $(cat "$tmp/body")"
[ "$(code /upper/invoke -d '{"input":{"fail":true}}')" = 500 ] && has "$(json "$tmp/body" 'j.detail')" "asked to fail" &&
    ok || bad "a failing chain: $(cat "$tmp/body")"
[ "$(code /upper/invoke -d '{"inputs":[1]}')" = 422 ] && ok || bad "invoke without input: $(cat "$tmp/body")"
[ "$(code /upper/invoke -d '{"input":"x","config":{"temperature":"hot"}}')" = 422 ] &&
    has "$(cat "$tmp/body")" "config.temperature" && ok || bad "a bad config: $(cat "$tmp/body")"
[ "$(code /upper/invoke)" = 405 ] && ok || bad "GET of invoke: $(cat "$tmp/body")"
[ "$(code /upper/nothing -d '{}')" = 404 ] && ok || bad "an unknown chain route: $(cat "$tmp/body")"
[ "$(code /nochain/invoke -d '{}')" = 404 ] && ok || bad "an unknown chain: $(cat "$tmp/body")"
out=$("$CATENA" serve -m "$M" --chain bad="$tmp/none.lua" 2>&1)
[ $? = 1 ] && has "$out" "none.lua" && ok || bad "a missing chain file: $out"
echo 'return 42' >"$tmp/num.lua"
out=$("$CATENA" serve -m "$M" --chain num="$tmp/num.lua" 2>&1)
[ $? = 1 ] && has "$out" "must return a runnable" && ok || bad "a chain file that returns no runnable: $out"

# Bad command lines.
out=$("$CATENA" serve 2>&1)
[ $? = 2 ] && has "$out" "-m MODEL.gguf is required" && ok || bad "no model: $out"
out=$("$CATENA" serve -m "$M" --port 99999 2>&1)
[ $? = 2 ] && has "$out" "--port: '99999'" && ok || bad "bad port: $out"
out=$("$CATENA" serve -m "$M" --host nowhere 2>&1)
[ $? = 2 ] && has "$out" "not an IP address" && ok || bad "bad host: $out"

echo "serve: $pass passed, $fail failed"
[ "$fail" = 0 ]
