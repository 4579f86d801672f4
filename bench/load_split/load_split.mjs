// LangChain.js's side of bench/run_load_split.sh, the peer of bench/load_split.c: the same
// passes over the same folder, printing the same JSON lines (see load_split.c for the sets).
//
//   node bench/load_split/load_split.mjs ROOT [--reps N] [--chunk-size N]
//        [--chunk-overlap N] [--set NAME]... [--dump DIR]
//
// A pass is what a LangChain.js user writes: a DirectoryLoader over ROOT with one loader
// factory per extension (others ignored), load(), then
// RecursiveCharacterTextSplitter.splitDocuments on all the documents.
//   text      .txt and .md: TextLoader; .json: JSONLoader without pointers (every string of
//             the file: the records' "body", as their other field is a number); .jsonl:
//             JSONLinesLoader with "/body".
//   markdown  .md: TextLoader, then the Markdown splitter LangChain.js has,
//             RecursiveCharacterTextSplitter.fromLanguage("markdown") (separators at
//             headings, code fences and rules); not catena's sections: context only.
//   pdf       .pdf: PDFLoader of @langchain/community (pdf-parse 1, one document a page).
// chunk_chars counts code points (as catena does; with the corpus in the BMP these equal
// LangChain's own UTF-16 lengths, reported as chunk_utf16).
import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { DirectoryLoader } from "@langchain/classic/document_loaders/fs/directory";
import { TextLoader } from "@langchain/classic/document_loaders/fs/text";
import { JSONLoader, JSONLinesLoader } from "@langchain/classic/document_loaders/fs/json";
import { PDFLoader } from "@langchain/community/document_loaders/fs/pdf";
import { RecursiveCharacterTextSplitter } from "@langchain/textsplitters";

const args = process.argv.slice(2);
let root = null, reps = 5, size = 1000, overlap = 200, dumpDir = null;
const sets = [];
for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--reps") reps = Number(args[++i]);
    else if (a === "--chunk-size") size = Number(args[++i]);
    else if (a === "--chunk-overlap") overlap = Number(args[++i]);
    else if (a === "--dump") dumpDir = args[++i];
    else if (a === "--set") sets.push(args[++i]);
    else if (!a.startsWith("-") && root === null) root = a;
    else { console.error(`load_split.mjs: unknown argument ${a}`); process.exit(2); }
}
if (root === null || !(reps >= 1)) { console.error("load_split.mjs: ROOT and --reps >= 1"); process.exit(2); }
root = resolve(root);

const text = (p) => new TextLoader(p);
const SETS = {
    text: {
        loaders: { ".txt": text, ".md": text, ".json": (p) => new JSONLoader(p),
                   ".jsonl": (p) => new JSONLinesLoader(p, "/body") },
        splitter: () => new RecursiveCharacterTextSplitter({ chunkSize: size, chunkOverlap: overlap }),
    },
    markdown: {
        loaders: { ".md": text },
        splitter: () => RecursiveCharacterTextSplitter.fromLanguage("markdown",
            { chunkSize: size, chunkOverlap: overlap }),
    },
    pdf: {
        loaders: { ".pdf": (p) => new PDFLoader(p) },
        splitter: () => new RecursiveCharacterTextSplitter({ chunkSize: size, chunkOverlap: overlap }),
    },
};

async function pass(set) {
    const docs = await new DirectoryLoader(root, SETS[set].loaders, true, "ignore").load();
    const loaded = performance.now();
    const chunks = await SETS[set].splitter().splitDocuments(docs);
    return { docs, chunks, loaded };
}

const codePoints = (s) => { let n = 0; for (const _ of s) n++; return n; };
const rel = (src) => (src.startsWith(root + "/") ? src.slice(root.length + 1) : src);

for (const set of sets.length ? sets : Object.keys(SETS)) {
    if (!SETS[set]) { console.error(`load_split.mjs: unknown set ${set}`); process.exit(2); }
    const ms = [], lms = [];
    let last;
    for (let r = -1; r < reps; r++) { // r = -1: the warm-up
        const t0 = performance.now();
        last = await pass(set);
        const t1 = performance.now();
        if (r >= 0) { ms.push(t1 - t0); lms.push(last.loaded - t0); }
    }
    ms.sort((x, y) => x - y);
    lms.sort((x, y) => x - y);
    const files = new Set(last.docs.map((d) => d.metadata.source)).size;
    let cps = 0, u16 = 0;
    for (const c of last.chunks) { cps += codePoints(c.pageContent); u16 += c.pageContent.length; }
    if (dumpDir !== null) {
        // DirectoryLoader goes in readdir's order; catena lists by bytes of the path. A
        // stable sort by source (ASCII names: code units order = byte order) lines them up.
        const cs = last.chunks.map((c, i) => [rel(c.metadata.source), i, c.pageContent]);
        cs.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] - y[1]));
        writeFileSync(`${dumpDir}/${set}.dump`, cs.map((c) => `${c[0]}\x1f${c[2]}\x1e\n`).join(""));
    }
    console.log(JSON.stringify({ impl: "langchain", set, files, docs: last.docs.length,
        chunks: last.chunks.length, chunk_chars: cps, chunk_utf16: u16, reps,
        ms: Number(ms[Math.floor(reps / 2)].toFixed(3)), min_ms: Number(ms[0].toFixed(3)),
        load_ms: Number(lms[Math.floor(reps / 2)].toFixed(3)) }));
}
