// A load test of catena serve (bench/run_serve.sh runs it): N concurrent clients each send R
// streaming completions one after another (greedy, ignore_eos, G tokens each, a prompt of
// the same words as catena bench's), over keep-alive connections on 127.0.0.1. Prints one
// JSON line: the aggregate completion tokens/s (first token of the first request to the
// last token of the last), p50/p99 time to first token, errors, and the server's RSS before
// and after (from /proc, its pid given).
import http from "node:http";
import fs from "node:fs";

const [port, clients, reps, gen, pid] = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
const body = JSON.stringify({
  prompt: "Once upon a time there was a little girl named Lily who lived in a house",
  max_tokens: gen, temperature: 0, ignore_eos: true, stream: true,
});
const rss = () => {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/);
    return m ? Number(m[1]) / 1024 : -1;
  } catch { return -1; }
};

function one() {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let ttft = -1, tokens = 0, buf = "", err = null;
    const req = http.request({ host: "127.0.0.1", port, path: "/v1/completions", method: "POST", agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } }, (res) => {
      if (res.statusCode !== 200) err = "status " + res.statusCode;
      res.setEncoding("utf8");
      res.on("data", (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
          const j = JSON.parse(ev.slice(6));
          if (j.error) err = j.error.message;
          else if (j.choices[0] && j.choices[0].text) {
            if (ttft < 0) ttft = Number(process.hrtime.bigint() - t0) / 1e6;
            tokens++;
          }
        }
      });
      res.on("end", () => resolve({ ttft, tokens, err, end: process.hrtime.bigint() }));
    });
    req.on("error", (e) => resolve({ ttft, tokens, err: e.message, end: process.hrtime.bigint() }));
    req.end(body);
  });
}

const rss0 = rss();
const results = [];
const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: clients }, async () => {
  for (let r = 0; r < reps; r++) results.push(await one());
}));
const t1 = process.hrtime.bigint();
const ok = results.filter((r) => !r.err);
const ttfts = ok.map((r) => r.ttft).sort((a, b) => a - b);
const q = (p) => ttfts.length ? ttfts[Math.min(ttfts.length - 1, Math.floor(p * ttfts.length))] : -1;
const tokens = ok.reduce((s, r) => s + r.tokens, 0);
console.log(JSON.stringify({
  clients, reps, gen_tokens: gen, requests: results.length, errors: results.length - ok.length,
  tokens, seconds: Number(t1 - t0) / 1e9, tok_s: tokens / (Number(t1 - t0) / 1e9),
  ttft_p50_ms: q(0.5), ttft_p99_ms: q(0.99), rss_mb_before: rss0, rss_mb_after: rss(),
  first_error: results.find((r) => r.err)?.err ?? null,
}));
agent.destroy();
