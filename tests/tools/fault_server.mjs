// A misbehaving OpenAI-compatible server for the remote model node's tests
// (tests/lua/remote_spec.lua). Bound to 127.0.0.1 on a free port, which it prints first:
//   listening on http://127.0.0.1:PORT
// The first path segment picks the behaviour: base_url = http://127.0.0.1:PORT/MODE/v1.
//   ok          a streamed answer "Hello, world!" in three chunks, usage, [DONE]
//   echo        one chunk whose content is the request as JSON: {body, auth} (auth: whether
//               an Authorization header came, and its value)
//   json        a whole JSON answer although stream was asked for
//   slow        nothing at all for 10 s (no status line): a first byte past any timeout
//   stall       the headers and one chunk, then nothing; records when the client closes
//   badjson     chunks '{"a": ', ']', ' more', then nothing; records when the client closes
//   drop        the headers and two chunks, then the connection is destroyed (no [DONE])
//   flaky       500 for the first two requests, then ok
//   busy        429 with Retry-After: 1 for the first request, then ok
//   down        500 every time
//   bad400      400 with an OpenAI-shaped error
//   malformed   a data line that is not JSON
//   noend       a clean end of the body without [DONE]
//   big         an event stream of 3 MiB of data (a client limit below that refuses it)
//   bigjson     a declared Content-Length of 100 MiB (then 1 MiB of body, and the end)
//   embed       /embeddings: vector [i, length of text i, 0.5] for each input, in reverse
//               order with their indexes
// Control: GET /_count/MODE (requests seen for MODE), GET /_events (what happened, as a
// JSON array of strings), POST /_reset. The process exits on SIGTERM, and after 300 s in
// any case.
import http from "node:http";

const counts = {};
const events = [];
const timers = new Set();

function sseHead(res) {
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
}
function chunk(res, chat, text, finish) {
  const choice = chat
    ? { index: 0, delta: text === null ? {} : { content: text }, finish_reason: finish ?? null }
    : { index: 0, text: text ?? "", finish_reason: finish ?? null };
  res.write(`data: ${JSON.stringify({ id: "x", object: "chunk", model: "fault", choices: [choice] })}\n\n`);
}
function answer(res, chat) {
  sseHead(res);
  if (chat) res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { role: "assistant" } }] })}\n\n`);
  chunk(res, chat, "Hello");
  res.write(": a comment line\r\n\r\n");
  chunk(res, chat, ", world");
  chunk(res, chat, "!", "stop");
  res.write(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 } })}\n\n`);
  res.end("data: [DONE]\n\n");
}
function later(ms, fn) {
  const t = setTimeout(() => { timers.delete(t); fn(); }, ms);
  timers.add(t);
}
function error(res, status, message, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify({ error: { message, type: "fault", param: null, code: null } }));
}

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (d) => { body += d; });
  req.on("end", () => {
    const parts = req.url.split("/").filter(Boolean);
    if (parts[0] === "_count") return res.end(String(counts[parts[1]] ?? 0));
    if (parts[0] === "_events") return res.end(JSON.stringify(events));
    if (parts[0] === "_reset") {
      for (const k of Object.keys(counts)) delete counts[k];
      events.length = 0;
      return res.end("ok");
    }
    const mode = parts[0];
    const n = (counts[mode] = (counts[mode] ?? 0) + 1);
    const chat = req.url.endsWith("/chat/completions");
    events.push(`${mode} ${n}`);
    switch (mode) {
      case "ok": return answer(res, chat);
      case "echo": {
        sseHead(res);
        chunk(res, chat, JSON.stringify({ body: JSON.parse(body), auth: req.headers.authorization ?? null }), "stop");
        return res.end("data: [DONE]\n\n");
      }
      case "json": {
        res.writeHead(200, { "Content-Type": "application/json" });
        const choice = chat ? { index: 0, message: { role: "assistant", content: "whole" }, finish_reason: "length" }
                            : { index: 0, text: "whole", finish_reason: "length" };
        return res.end(JSON.stringify({ model: "fault-json", choices: [choice], usage: { prompt_tokens: 2, completion_tokens: 1 } }));
      }
      case "slow": return later(10000, () => answer(res, chat));
      case "stall": {
        sseHead(res);
        chunk(res, chat, "Hello");
        req.socket.on("close", () => events.push("stall closed"));
        return;
      }
      case "badjson": {
        sseHead(res);
        chunk(res, chat, '{"a": ');
        chunk(res, chat, "]");
        chunk(res, chat, " more");
        req.socket.on("close", () => events.push("badjson closed"));
        return;
      }
      case "drop": {
        sseHead(res);
        chunk(res, chat, "Hello");
        chunk(res, chat, ", wor");
        return later(50, () => req.socket.destroy());
      }
      case "flaky": return n <= 2 ? error(res, 500, `failure ${n}`) : answer(res, chat);
      case "busy": return n === 1 ? error(res, 429, "slow down", { "Retry-After": "1" }) : answer(res, chat);
      case "down": return error(res, 500, "always down");
      case "bad400": return error(res, 400, "'temperature' must be a number from 0 to 2");
      case "malformed": {
        sseHead(res);
        chunk(res, chat, "Hello");
        res.write("data: {\"choices\": [ nope\n\n");
        return res.end("data: [DONE]\n\n");
      }
      case "noend": {
        sseHead(res);
        chunk(res, chat, "Hello");
        return res.end();
      }
      case "big": {
        sseHead(res);
        const line = `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: "x".repeat(1000) } }] })}\n\n`;
        let sent = 0;
        const pump = () => {
          while (sent < 3 << 20) {
            sent += line.length;
            if (!res.write(line)) return res.once("drain", pump);
          }
          res.end("data: [DONE]\n\n");
        };
        res.on("error", () => {});
        return pump();
      }
      case "bigjson": {
        res.writeHead(200, { "Content-Type": "application/json", "Content-Length": String(100 << 20) });
        res.on("error", () => {});
        res.write(" ".repeat(1 << 20));
        return later(100, () => req.socket.destroy());
      }
      case "embed": {
        const input = JSON.parse(body).input;
        const list = Array.isArray(input) ? input : [input];
        const data = list.map((t, i) => ({ object: "embedding", index: i, embedding: [i, t.length, 0.5] })).reverse();
        res.writeHead(200, { "Content-Type": "application/json" });
        return res.end(JSON.stringify({ object: "list", data, model: "fault", usage: { prompt_tokens: list.length * 2, total_tokens: list.length * 2 } }));
      }
      default: return error(res, 404, `no mode '${mode}'`);
    }
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
const stop = () => { for (const t of timers) clearTimeout(t); server.closeAllConnections?.(); process.exit(0); };
process.on("SIGTERM", stop);
setTimeout(stop, 300000).unref();
