// Writes the corpus of bench/run_load_split.sh: Markdown, plain text, JSON, JSON Lines and
// PDF files under OUT, the same bytes for the same seed on every machine (a xorshift
// generator, no Math.random). Node.js is needed for the peer anyway, so the corpus costs no
// other tool. Every character is in the Basic Multilingual Plane, so catena's lengths (code
// points) and LangChain.js's (UTF-16 units) are the same numbers and the chunks can be
// compared byte for byte.
//
//   node bench/load_split/gen_corpus.mjs OUT [SCALE]
//
// SCALE (default 1) multiplies the number of files: at 1, 400 Markdown and 400 text files of
// 2-9 KB, 40 JSON files of 10-40 records, 20 JSON Lines files and 40 copies of
// examples/docs/handbook.pdf, about 5 MB.
import { mkdirSync, writeFileSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const out = process.argv[2];
const scale = Number(process.argv[3] ?? 1);
if (!out || !(scale > 0)) {
    console.error("usage: node gen_corpus.mjs OUT [SCALE]");
    process.exit(2);
}

let s = 0x9e3779b9;
function rnd(n) { // uniform in [0, n)
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s % n;
}
const WORDS = ("the a of to and in is that for it on with as was by at be this from or an " +
    "which but not are have had one all were when there can more if will so about out up " +
    "ticket request engine model chain node loader splitter chunk token vector index query " +
    "answer support desk team release build test error warning file folder page section " +
    "table column row value field record source metadata embedding cache memory thread " +
    "batch prompt stream parser schema document corpus library kernel buffer socket timer " +
    "café naïve résumé über façade jalapeño smörgåsbord crème brûlée déjà vu coöperate " +
    "straße Ελλάδα данные 東京 データ — – “quoted” ‘single’ … ½ € ±").split(" ");
const word = () => WORDS[rnd(WORDS.length)];
function sentence() {
    const n = 6 + rnd(16);
    const w = [];
    for (let i = 0; i < n; i++) w.push(word());
    const t = w.join(" ");
    return t[0].toUpperCase() + t.slice(1) + [".", ".", ".", "?", "!", ";"][rnd(6)];
}
function paragraph(wrap) {
    const n = 2 + rnd(9);
    const ss = [];
    for (let i = 0; i < n; i++) ss.push(sentence());
    const p = ss.join(" ");
    if (!wrap) return p;
    // Hard-wrapped at about 76 columns, as plain text often is (so "\n" splits matter).
    const lines = [];
    let line = "";
    for (const w of p.split(" ")) {
        if (line && line.length + 1 + w.length > 76) { lines.push(line); line = w; }
        else line = line ? line + " " + w : w;
    }
    if (line) lines.push(line);
    return lines.join("\n");
}
function markdown(i) {
    const parts = [`# Note ${i}: ${sentence().slice(0, 40)}`, paragraph(false)];
    const sections = 2 + rnd(6);
    for (let k = 0; k < sections; k++) {
        parts.push(`## Section ${k + 1} ${word()} ${word()}`);
        const blocks = 1 + rnd(4);
        for (let b = 0; b < blocks; b++) {
            const r = rnd(10);
            if (r < 6) parts.push(paragraph(rnd(2) === 0));
            else if (r < 8) {
                const items = [];
                for (let j = 0, n = 2 + rnd(5); j < n; j++) items.push(`- ${sentence()}`);
                parts.push(items.join("\n"));
            } else if (r < 9) {
                const lines = ["```c"];
                for (let j = 0, n = 3 + rnd(8); j < n; j++)
                    lines.push(`    int ${word().replace(/\W/g, "x")}_${j} = ${rnd(1000)};`);
                lines.push("```");
                parts.push(lines.join("\n"));
            } else {
                const rows = ["| name | value | note |", "| --- | --- | --- |"];
                for (let j = 0, n = 2 + rnd(6); j < n; j++)
                    rows.push(`| ${word()} | ${rnd(10000)} | ${word()} ${word()} |`);
                parts.push(rows.join("\n"));
            }
            if (rnd(5) === 0) parts.push(`### Detail ${b + 1}`);
        }
    }
    return parts.join("\n\n") + "\n";
}
function text() {
    const parts = [];
    for (let k = 0, n = 3 + rnd(12); k < n; k++) parts.push(paragraph(rnd(3) !== 0));
    return parts.join("\n\n") + "\n";
}
function body() {
    const parts = [];
    for (let k = 0, n = 1 + rnd(3); k < n; k++) parts.push(paragraph(false));
    return parts.join("\n\n");
}

function put(rel, data) {
    const p = join(out, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, data);
}
const pad = (n) => String(n).padStart(4, "0");
const nm = Math.round(400 * scale), nj = Math.round(40 * scale), nl = Math.round(20 * scale);
for (let i = 0; i < nm; i++) put(`notes/${pad(i % 20)}/note-${pad(i)}.md`, markdown(i));
for (let i = 0; i < nm; i++) put(`text/${pad(i % 20)}/text-${pad(i)}.txt`, text());
// JSON records hold a number and one string, so that LangChain's JSONLoader without
// pointers (every string of the file) and catena's "/*/body" pick the same texts.
for (let i = 0; i < nj; i++) {
    const recs = [];
    for (let j = 0, n = 10 + rnd(31); j < n; j++) recs.push({ id: i * 100 + j, body: body() });
    put(`records/rec-${pad(i)}.json`, JSON.stringify(recs, null, 1));
}
for (let i = 0; i < nl; i++) {
    const lines = [];
    for (let j = 0, n = 10 + rnd(31); j < n; j++)
        lines.push(JSON.stringify({ id: i * 100 + j, body: body() }));
    put(`records/log-${pad(i)}.jsonl`, lines.join("\n") + "\n");
}
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const pdf = readFileSync(join(root, "examples", "docs", "handbook.pdf"));
for (let i = 0; i < nj; i++) put(`pdf/handbook-${pad(i)}.pdf`, pdf);
