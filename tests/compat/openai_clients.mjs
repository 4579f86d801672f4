// catena serve against real clients: the OpenAI Node SDK (npm `openai`) for models, chat
// (whole and streamed, with logprobs), completions, embeddings, response_format and tools, and
// LangChain.js's ChatOpenAI pointed at the server (invoke, stream, bindTools,
// withStructuredOutput). Run by openai_clients.sh, which starts the server on
// 127.0.0.1 and passes the repository's root, the server's address, the model id and the
// text `catena generate` gives for the completion below. Prints one line per check; exits 1 on the first failure.
import { createRequire } from "node:module";
import path from "node:path";

const [root, base, model, want] = process.argv.slice(2);
// The clients live in bench/node_modules (scripts/setup-peers.sh installs them).
const require = createRequire(path.join(root, "bench", "package.json"));
const OpenAI = require("openai").default ?? require("openai");
const { ChatOpenAI } = require("@langchain/openai");
const client = new OpenAI({ baseURL: base + "/v1", apiKey: "sekrit", maxRetries: 0 });
let n = 0;
function check(ok, what, got) {
  if (!ok) {
    console.log("FAIL: " + what + ": " + JSON.stringify(got));
    process.exit(1);
  }
  n++;
}

const models = await client.models.list();
check(models.data.some((m) => m.id === model), "models.list names the model", models.data);

const c = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 24, temperature: 0 });
check(c.choices[0].text === want, "a greedy completion is catena generate's text", c.choices[0].text);
check(c.usage.completion_tokens === 24 && c.choices[0].finish_reason === "length", "completion usage", c.usage);

const msgs = [{ role: "system", content: "Tell a story." }, { role: "user", content: "Lily" }];
const chat = await client.chat.completions.create({ model, messages: msgs, max_tokens: 12, temperature: 0 });
const text = chat.choices[0].message.content;
check(chat.choices[0].message.role === "assistant" && text.length > 0, "chat", chat);

let streamed = "", usage = null, roles = 0;
const st = await client.chat.completions.create({
  model, messages: msgs, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
});
for await (const ch of st) {
  if (ch.usage) usage = ch.usage;
  for (const choice of ch.choices) {
    if (choice.delta.role) roles++;
    streamed += choice.delta.content || "";
  }
}
check(streamed === text, "a streamed chat is the whole one", streamed);
check(roles === 1 && usage && usage.completion_tokens === 12, "the stream's role and usage", usage);

// Logprobs as the SDK types them: choices[0].logprobs.content[i].top_logprobs, whole and streamed.
const lp = await client.chat.completions.create({ model, messages: msgs, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 });
const lpc = lp.choices[0].logprobs?.content ?? [];
check(lpc.length === lp.usage.completion_tokens && lpc.map((t) => t.token).join("") === lp.choices[0].message.content,
  "chat logprobs: one entry per token, joining to the content", lpc.map((t) => t.token));
const top = lpc[0]?.top_logprobs ?? [];
check(top.length === 3 && top[0].token === lpc[0].token && top[0].logprob === lpc[0].logprob && top[1].logprob <= top[0].logprob &&
  lpc.every((t) => t.logprob <= 0 && Array.isArray(t.bytes)), "chat top_logprobs: sorted, the greedy token first", lpc[0]);
const lst = await client.chat.completions.create({
  model, messages: msgs, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3, stream: true,
});
const sc = [];
for await (const ch of lst) for (const choice of ch.choices) sc.push(...(choice.logprobs?.content ?? []));
check(JSON.stringify(sc) === JSON.stringify(lpc), "streamed chat logprobs are the whole ones", sc.length);
check(sc[0]?.top_logprobs?.[0]?.token === lpc[0].token, "streamed choices[0].logprobs.content[0].top_logprobs", sc[0]);
try {
  await client.chat.completions.create({ model, messages: msgs, logprobs: true, top_logprobs: 21 });
  check(false, "top_logprobs 21 is refused", "no error");
} catch (err) {
  check(err.status === 400 && err.param === "top_logprobs", "top_logprobs 21: 400 naming it", err.message);
}

const two = await client.chat.completions.create({ model, messages: msgs, max_tokens: 6, n: 2, seed: 3, temperature: 0.9 });
check(two.choices.length === 2 && two.choices[1].index === 1, "n = 2", two.choices);

const e = await client.embeddings.create({ model, input: ["hello there", "a dog"] });
check(e.data.length === 2 && e.data[0].embedding.length === 64, "embeddings (the SDK asks for base64)", e.data.length);

try {
  await client.completions.create({ model: "nope", prompt: "x" });
  check(false, "an unknown model is refused", "no error");
} catch (err) {
  check(err.status === 404 && /does not exist/.test(err.message), "an unknown model: 404 in OpenAI's shape", err.message);
}
try {
  await new OpenAI({ baseURL: base + "/v1", apiKey: "wrong", maxRetries: 0 }).models.list();
  check(false, "a wrong key is refused", "no error");
} catch (err) {
  check(err.status === 401, "a wrong key: 401", err.status);
}

const lc = new ChatOpenAI({ model, temperature: 0, maxTokens: 12, apiKey: "sekrit", configuration: { baseURL: base + "/v1" } });
const m = await lc.invoke([["system", "Tell a story."], ["human", "Lily"]]);
check(m.content === text, "ChatOpenAI.invoke gives the same answer", m.content);
let lcs = "";
for await (const chunk of await lc.stream([["system", "Tell a story."], ["human", "Lily"]])) lcs += chunk.content;
check(lcs === text, "ChatOpenAI.stream gives it too", lcs);

// Structured output and tools, as the SDK and LangChain.js send them: the replies are
// decoded under the schema's or the tools' grammar.
const schema = {
  type: "object", properties: { mood: { type: "string", enum: ["happy", "sad"] }, ok: { type: "boolean" } },
  required: ["mood", "ok"], additionalProperties: false,
};
const so = await client.chat.completions.create({
  model, messages: msgs, max_tokens: 40, response_format: { type: "json_schema", json_schema: { name: "m", strict: true, schema } },
});
const sv = JSON.parse(so.choices[0].message.content);
check(["happy", "sad"].includes(sv.mood) && typeof sv.ok === "boolean", "response_format json_schema", sv);
const tools = [{
  type: "function",
  function: { name: "weather", description: "The weather in a city.",
              parameters: { type: "object", properties: { city: { type: "string", enum: ["Paris", "Oslo"] } }, required: ["city"] } },
}];
const tq = { model, messages: [{ role: "user", content: "Weather in Oslo?" }], tools, tool_choice: "required", parallel_tool_calls: false, max_tokens: 200 };
const tc = await client.chat.completions.create(tq);
const call = tc.choices[0].message.tool_calls?.[0];
check(tc.choices[0].finish_reason === "tool_calls" && call?.function.name === "weather" &&
      ["Paris", "Oslo"].includes(JSON.parse(call.function.arguments).city), "a tool call", tc.choices[0]);
let sargs = "", sname = "";
for await (const ch of await client.chat.completions.create({ ...tq, stream: true })) {
  for (const d of ch.choices[0]?.delta?.tool_calls ?? []) {
    sname += d.function?.name ?? "";
    sargs += d.function?.arguments ?? "";
  }
}
check(sname === "weather" && sargs === call.function.arguments, "a streamed tool call is the whole one", [sname, sargs]);
const back = await client.chat.completions.create({
  model, max_tokens: 8, tools,
  messages: [...tq.messages, tc.choices[0].message, { role: "tool", tool_call_id: call.id, content: "sunny" }],
});
check(back.choices.length === 1, "the tool's result is read back", back);
const lct = new ChatOpenAI({ model, temperature: 0, maxTokens: 300, apiKey: "sekrit", configuration: { baseURL: base + "/v1" } });
const bound = lct.bindTools(tools, { tool_choice: "required", parallel_tool_calls: false });
const am = await bound.invoke("Weather in Paris?");
check(am.tool_calls?.[0]?.name === "weather" && ["Paris", "Oslo"].includes(am.tool_calls[0].args.city),
      "ChatOpenAI.bindTools gives tool calls", am.tool_calls);
for (const method of ["jsonSchema", "functionCalling"]) {
  const v = await lct.withStructuredOutput(schema, { name: "mood", method }).invoke("How is Lily?");
  check(["happy", "sad"].includes(v.mood) && typeof v.ok === "boolean", "ChatOpenAI.withStructuredOutput " + method, v);
}

console.log(`openai clients: ${n} checks passed`);
