#!/bin/sh
# `catena serve` decoding under a grammar: response_format (json_object, json_schema) on
# chat and completions, tools with tool_choice (auto, required, one function, none), a
# streamed tool call, the conversation that gives a tool's result back, and the 400s for bad
# fields. The model (stories260K) writes stories, so every reply that parses here parses
# because of the grammar; node checks each against its schema.
. "$(dirname "$0")/lib/serve.sh"

start main --chat-template chatml
post() { code "$1" -H 'Content-Type: application/json' -d "$2"; }

# json_object: every reply is a JSON object.
for seed in 1 2 3 4; do
    st=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Tell me about Lily."}],"response_format":{"type":"json_object"},"max_tokens":160,"seed":'$seed'}')
    [ "$st" = 200 ] || bad "json_object $seed: $st $(cat "$tmp/body")"
    r=$(json "$tmp/body" '(() => { const c = j.choices[0]; if (c.finish_reason === "length") return "length"; const v = JSON.parse(c.message.content); return typeof v === "object" && v !== null && !Array.isArray(v) ? "object" : "not an object" })()')
    case "$r" in object | length) ok ;; *) bad "json_object $seed: $r: $(cat "$tmp/body")" ;; esac
done

# json_schema (strict, as the OpenAI SDK sends it): parses and satisfies the schema.
SCHEMA='{"type":"object","properties":{"name":{"type":"string","maxLength":10},"mood":{"enum":["happy","sad"]},"age":{"type":"integer","minimum":1,"maximum":99}},"required":["name","mood","age"],"additionalProperties":false}'
for seed in 1 2 3 4 5 6; do
    st=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Who?"}],"response_format":{"type":"json_schema","json_schema":{"name":"person","strict":true,"schema":'"$SCHEMA"'}},"max_tokens":120,"temperature":1,"seed":'$seed'}')
    r=$(json "$tmp/body" '(() => { const v = JSON.parse(j.choices[0].message.content); return Object.keys(v).join(",") + " " + (v.name.length <= 10) + " " + ["happy","sad"].includes(v.mood) + " " + (Number.isInteger(v.age) && v.age >= 1 && v.age <= 99) })()' 2>&1)
    [ "$st" = 200 ] && [ "$r" = "name,mood,age true true true" ] && ok || bad "json_schema $seed: $st $r $(cat "$tmp/body")"
done
# The same on /v1/completions.
st=$(post /v1/completions '{"prompt":"Once upon a time","response_format":{"type":"json_schema","json_schema":{"name":"p","schema":'"$SCHEMA"'}},"max_tokens":120,"seed":9}')
r=$(json "$tmp/body" 'Object.keys(JSON.parse(j.choices[0].text)).join(",")' 2>&1)
[ "$st" = 200 ] && [ "$r" = "name,mood,age" ] && ok || bad "completions json_schema: $st $r $(cat "$tmp/body")"

# Tools. tool_choice required: tool calls with arguments valid for the tool named.
TOOLS='[{"type":"function","function":{"name":"weather","description":"The weather in a city.","parameters":{"type":"object","properties":{"city":{"enum":["Paris","Oslo"]},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"]}}},{"type":"function","function":{"name":"time","parameters":{"type":"object","properties":{"zone":{"enum":["UTC","CET"]}},"required":["zone"]}}}]'
CHECK='(() => { const c = j.choices[0]; if (c.finish_reason !== "tool_calls" || c.message.content !== null) return "finish " + c.finish_reason; return c.message.tool_calls.map(t => { const a = JSON.parse(t.function.arguments); if (t.type !== "function" || !/^call_/.test(t.id)) return "bad call"; if (t.function.name === "weather") return ["Paris","Oslo"].includes(a.city) && a.days >= 1 && a.days <= 7 ? "weather" : "bad weather " + t.function.arguments; if (t.function.name === "time") return ["UTC","CET"].includes(a.zone) ? "time" : "bad time"; return "unknown " + t.function.name }).join(",") })()'
for seed in 1 2 3 4 5; do
    st=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Weather in Oslo?"}],"tools":'"$TOOLS"',"tool_choice":"required","parallel_tool_calls":false,"max_tokens":150,"temperature":1,"seed":'$seed'}')
    r=$(json "$tmp/body" "$CHECK" 2>&1)
    [ "$st" = 200 ] && ! has "$r" bad && ! has "$r" finish && ! has "$r" unknown && [ -n "$r" ] && ok ||
        bad "tools required $seed: $st $r $(cat "$tmp/body")"
done
# One function by name: only it is called.
st=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Time?"}],"tools":'"$TOOLS"',"tool_choice":{"type":"function","function":{"name":"time"}},"parallel_tool_calls":false,"max_tokens":150,"seed":3}')
r=$(json "$tmp/body" "$CHECK" 2>&1)
case "$r" in time | time,time | time,time,time) ok ;; *) bad "tool_choice by name: $st $r" ;; esac
# auto: a call or an answer, never free text.
for seed in 1 2 3; do
    st=$(post /v1/chat/completions '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"tools":'"$TOOLS"',"max_tokens":150,"temperature":1,"seed":'$seed'}')
    r=$(json "$tmp/body" '(() => { const c = j.choices[0]; if (c.finish_reason === "tool_calls") return "calls"; if (c.finish_reason === "length") return "length"; return typeof c.message.content === "string" && c.message.tool_calls === undefined ? "answer" : "bad" })()' 2>&1)
    case "$r" in calls | answer | length) ok ;; *) bad "tools auto $seed: $st $r $(cat "$tmp/body")" ;; esac
done
# none: the plain model, text as without tools.
st=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"tools":'"$TOOLS"',"tool_choice":"none","max_tokens":12,"temperature":0}')
a=$(json "$tmp/body" 'j.choices[0].message.content')
post /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":12,"temperature":0}' >/dev/null
b=$(json "$tmp/body" 'j.choices[0].message.content')
[ "$st" = 200 ] && [ "$a" = "$b" ] && ok || bad "tool_choice none: '$a' vs '$b'"
# Streamed: the calls in one delta, then finish_reason tool_calls, then [DONE].
curl -sN "$(U /v1/chat/completions)" -d '{"messages":[{"role":"user","content":"Weather?"}],"tools":'"$TOOLS"',"tool_choice":"required","parallel_tool_calls":false,"max_tokens":150,"seed":2,"stream":true}' >"$tmp/sse"
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(l => l.startsWith("data: "));
if (lines.pop() !== "data: [DONE]") throw "no [DONE]";
const chunks = lines.map(l => JSON.parse(l.slice(6)));
const calls = chunks.flatMap(c => c.choices[0].delta.tool_calls || []);
if (calls.length < 1 || calls[0].index !== 0 || !calls[0].function.name) throw "no call: " + JSON.stringify(chunks);
JSON.parse(calls[0].function.arguments);
if (chunks[chunks.length - 1].choices[0].finish_reason !== "tool_calls") throw "finish";
' "$tmp/sse" && ok || bad "streamed tool call: $(cat "$tmp/sse")"
# The conversation after a call: the assistant's tool_calls and the tool's result are read.
st=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Weather in Oslo?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\",\"days\":1}"}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"}],"tools":'"$TOOLS"',"max_tokens":40}')
[ "$st" = 200 ] && ok || bad "tool result turn: $st $(cat "$tmp/body")"

# Errors: 400 naming the field.
err() { # ERR BODY PARAM TEXT
    st=$(post /v1/chat/completions "$1")
    p=$(json "$tmp/body" 'j.error.param')
    [ "$st" = 400 ] && [ "$p" = "$2" ] && has "$(cat "$tmp/body")" "$3" && ok || bad "error $2: $st $(cat "$tmp/body")"
}
MSG='"messages":[{"role":"user","content":"x"}]'
err '{'"$MSG"',"response_format":{"type":"xml"}}' response_format 'must be'
err '{'"$MSG"',"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","not":{}}}}}' response_format 'not'
err '{'"$MSG"',"tools":{"a":1}}' tools 'must be an array'
err '{'"$MSG"',"tools":[{"type":"function","function":{"name":"bad name"}}]}' tools 'tools[0]'
err '{'"$MSG"',"tools":[{"type":"function","function":{"name":"a","parameters":{"type":"string"}}}]}' tools 'object'
err '{'"$MSG"',"tools":'"$TOOLS"',"tool_choice":{"type":"function","function":{"name":"nope"}}}' tool_choice 'not one of the tools'
err '{'"$MSG"',"tools":'"$TOOLS"',"tool_choice":7}' tool_choice 'must be'
err '{'"$MSG"',"tool_choice":"required"}' tool_choice 'needs'
err '{'"$MSG"',"tools":'"$TOOLS"',"response_format":{"type":"json_object"}}' response_format 'together'
err '{"messages":[{"role":"assistant","tool_calls":[{"function":{"name":"a","arguments":"{bad"}}]}]}' messages 'arguments'
st=$(post /v1/completions '{"prompt":"x","tools":'"$TOOLS"'}')
[ "$st" = 400 ] && ok || bad "tools on completions: $st"
# The server goes on.
[ "$(code /health)" = 200 ] && ok || bad "health after the errors"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
