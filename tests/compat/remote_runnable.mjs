// catena serve's chains against LangChain.js's RemoteRunnable (@langchain/core 0.3's
// runnables/remote, under bench/langserve/node_modules): invoke, batch, stream and
// streamEvents of a served prompt | model | parser chain and of a lambda chain, with the
// values a local run gives, and a failing chain's error. Run by remote_runnable.sh, which
// starts the server on 127.0.0.1 and passes the repository's root, the server's address and
// what the chains must give (computed there with catena run).
import { createRequire } from "node:module";
import path from "node:path";

const [root, base, storyWant] = process.argv.slice(2);
const require = createRequire(path.join(root, "bench", "langserve", "package.json"));
const { RemoteRunnable } = require("@langchain/core/runnables/remote");
let n = 0;
function check(ok, what, got) {
  if (!ok) {
    console.log("FAIL: " + what + ": " + JSON.stringify(got));
    process.exit(1);
  }
  n++;
}

const story = new RemoteRunnable({ url: base + "/story" });
const upper = new RemoteRunnable({ url: base + "/upper" });

const out = await story.invoke({ who: "Lily" });
check(out === storyWant, "invoke gives what catena run gives", out);

const many = await upper.batch(["a", "b", { n: 1 }]);
check(JSON.stringify(many) === JSON.stringify(["A", "B", { got: { n: 1 } }]), "batch", many);

let streamed = "", chunks = 0;
for await (const c of await story.stream({ who: "Lily" })) {
  streamed += c;
  chunks++;
}
check(streamed === storyWant && chunks > 1, "stream: several chunks that join to the answer", [chunks, streamed]);

const events = [];
for await (const e of story.streamEvents({ who: "Lily" }, { version: "v2" })) events.push(e);
const names = events.map((e) => e.event);
check(names[0] === "on_chain_start" && names[names.length - 1] === "on_chain_end", "streamEvents: the root starts and ends", names);
check(names.includes("on_chat_model_stream") && names.includes("on_prompt_end"), "streamEvents: the model's tokens and the prompt", names);
const end = events[events.length - 1];
check(end.data.output === storyWant, "streamEvents: the root's output", end.data);

const docs = await new RemoteRunnable({ url: base + "/docs" }).invoke("dog");
check(docs.length === 1 && docs[0].pageContent.includes("dog") && docs[0].metadata.source === "b.md",
  "a retriever's hits come back as Documents", docs);

try {
  await upper.invoke({ fail: true });
  check(false, "a failing chain raises", "no error");
} catch (err) {
  check(/asked to fail/.test(String(err.message)), "a failing chain's error names the cause", String(err.message));
}
console.log(`remote runnable: ${n} checks passed`);
