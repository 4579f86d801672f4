// The differential test of catena's recursive splitter (stdlib/split.c) against LangChain.js's
// RecursiveCharacterTextSplitter (@langchain/textsplitters in bench/node_modules):
//
//   node tests/compat/split_langchain.mjs ROOT SPLIT_DRIVER
//
// It writes a corpus (hand-written edge cases and a large seeded, generated part: English
// prose, lists, code, Korean, Japanese, Chinese, Arabic, Russian, emoji, words longer than
// any chunk, runs of separators, white space alone), splits each text with a grid of
// settings on both sides and compares the chunk lists exactly; catena's start offsets must
// point at its chunks and never go back. The first difference of a setting is shown.
//
// LangChain.js measures UTF-16 units; the lengthFunction here counts code points, as catena
// does. Two intended differences are modelled on the JavaScript side (split.h lists them):
// splitting on "" gives code points (Array.from), not UTF-16 units; past the last separator
// pieces are joined with "" where LangChain.js fails on an undefined separator. The texts
// without characters outside the BMP are also split by the unmodified class wherever it
// does not fail, to show that those changes hide nothing. keep "end" (Python LangChain's,
// which LangChain.js lacks) and strip false are modelled the same way, from Python's source.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [root, driver] = process.argv.slice(2);
const mod = await import(
    pathToFileURL(path.join(root, "bench/node_modules/@langchain/textsplitters/dist/index.js")).href
);
const { RecursiveCharacterTextSplitter } = mod;

// ---- a seeded generator (mulberry32), so the corpus is the same on every run -----------
let seed = 0x5eed1234;
function rand() {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

const words = (
    "the of and to in is was for that with as on by at from his her which an be this are " +
    "were it not or have had but one all their also has its new first two after who they " +
    "been more other into time can may some would only over such these when about than " +
    "tokenizer attention transformer embedding retrieval document paragraph sentence chunk " +
    "overlap separator boundary recursive character language model context window"
).split(" ");
const ko = "한국어 텍스트 분할 시험 문장 단락 검색 문서 모델 언어 토큰 경계 겹침 구분자".split(" ");
const ja = "日本語の文章を分割します。これは試験です。検索と文書と言語モデル、".split("");
const zh = "中文文本分割测试段落句子检索文档语言模型上下文窗口。，".split("");
const ar = "النص العربي تقسيم اختبار فقرة جملة بحث وثيقة نموذج لغة".split(" ");
const ru = "русский текст разделение проверка абзац предложение поиск документ модель".split(" ");
const emoji = ["😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇰🇷", "𝒳", "𠜎", "🧪", "❤️", "✨"];
const spaces = [" ", "  ", "\t", "\u00a0", "\u3000", " \n", "\n", "\n\n", "\n\n\n", "\r\n"];

function sentence(lang) {
    const n = int(3, 18);
    const parts = [];
    for (let i = 0; i < n; i++) {
        switch (lang) {
        case "ko": parts.push(pick(ko)); break;
        case "ar": parts.push(pick(ar)); break;
        case "ru": parts.push(pick(ru)); break;
        case "ja": parts.push(Array.from({ length: int(2, 8) }, () => pick(ja)).join("")); break;
        case "zh": parts.push(Array.from({ length: int(2, 8) }, () => pick(zh)).join("")); break;
        default: parts.push(pick(words));
        }
    }
    const glue = lang === "ja" || lang === "zh" ? "" : " ";
    let s = parts.join(glue);
    return lang === "en" ? s[0].toUpperCase() + s.slice(1) + pick([".", ".", "!", "?", ";"]) : s;
}

function codeBlock() {
    const lines = [];
    for (let i = 0, n = int(3, 15); i < n; i++)
        lines.push(" ".repeat(4 * int(0, 3)) + pick(["if (x) {", "return y;", "}", "\tfor (;;)",
            "let " + pick(words) + " = " + int(0, 999) + ";", "// " + sentence("en")]));
    return "```c\n" + lines.join("\n") + "\n```";
}

function paragraph(bmpOnly) {
    const r = rand();
    if (r < 0.05) return codeBlock();
    if (r < 0.1) return Array.from({ length: int(2, 7) }, (_, i) =>
        (rand() < 0.5 ? "- " : `${i + 1}. `) + sentence("en")).join("\n");
    if (r < 0.13) return "x".repeat(int(60, 2500)); // a word longer than most chunks
    if (r < 0.15) return "https://example.com/" + Array.from({ length: int(20, 200) },
        () => pick(words)).join("/");
    if (r < 0.18) return pick(spaces).repeat(int(1, 30)); // white space alone
    if (r < 0.21) return Array.from({ length: int(1, 6) }, () => "| " + pick(words) + " | " +
        int(0, 99) + " |").join("\n");
    const langs = ["en", "en", "en", "ko", "ja", "zh", "ar", "ru"];
    const lang = pick(langs);
    const out = [];
    for (let i = 0, n = int(1, 8); i < n; i++) {
        let s = sentence(lang);
        if (!bmpOnly && rand() < 0.15) s += " " + pick(emoji).repeat(int(1, 4));
        out.push(s);
    }
    return out.join(pick([" ", " ", "  ", "\n", lang === "ja" || lang === "zh" ? "" : " "]));
}

function generate(nbytes, bmpOnly) {
    const parts = [];
    let len = 0;
    while (len < nbytes) {
        const p = paragraph(bmpOnly);
        parts.push(p);
        len += p.length;
        parts.push(pick(["\n\n", "\n\n", "\n\n", "\n", "\n\n\n", "\n \n", " \n\n", "\n\n\n\n\n"]));
    }
    return parts.join("");
}

const handwritten = [
    "",
    " ",
    "\n\n\n\n",
    "a\n\n\nb\n\n\n\nc",
    "a  b   c    d",
    "word",
    "Hello world, this is a test of the splitter.\n\nA second paragraph follows here.",
    "😀😀😀😀😀😀😀 🎉🎉🎉 𠜎𠜎𠜎𠜎𠜎𠜎𠜎𠜎",
    "한국어 텍스트를 나누는 시험입니다.\n\n두 번째 문장도 있습니다. 세 번째 문장입니다.",
    "日本語の文章を分割します。これは試験です。\n中文文本分割测试。",
    "\u00a0\u3000 padded \u3000\u00a0\n\n\u2028x\u2029",
    "ab ab ab ab ab ab ab ab",
    "x".repeat(300) + " " + "y".repeat(5) + "\n" + "z".repeat(120),
].join("\u0000");

const texts = {
    hand: { parts: handwritten.split("\u0000"), bmp: false },
    small: { parts: [generate(6000, false)], bmp: false },
    smallbmp: { parts: [generate(6000, true)], bmp: true },
    big: { parts: [generate(260000, false)], bmp: false },
    bigbmp: { parts: [generate(120000, true)], bmp: true },
};

// ---- the settings grid --------------------------------------------------------------------
const sepSets = [
    null,
    ["\n\n", "\n", " ", ""],
    ["\n\n", "\n", "。", ".", " ", ""],
    ["\n", " "],                 // no "": pieces that are still too long are kept whole
    [". ", "\n\n"],
    ["x", ""],
    ["\n## ", "```\n\n", "\n\n", "\n", " ", ""],
    [],                          // no separators at all: code points
];
const keeps = ["start", "none", "end"];
// Big texts get neither the largest overlaps nor the separator lists that end in code points
// alone: LangChain.js then makes a chunk per character and overflows its stack spreading
// them (finalChunks.push(...mergedText)).
function grid(sizes, count, big = false) {
    const out = [];
    const seps = big ? sepSets.slice(0, 5).concat([sepSets[6]]) : sepSets;
    for (const size of sizes)
        for (const keep of keeps) {
            const overlaps = new Set([0, Math.floor(size / 2), Math.floor(size / 10)]);
            if (!big) overlaps.add(size - 1);
            for (const overlap of overlaps) {
                if (overlap < 0 || overlap >= size) continue;
                out.push({ size, overlap, keep, seps: pick(seps), strip: true, tokens: null });
            }
        }
    // A random sample of the rest, with token lengths and strip false among them.
    for (let i = 0; i < count; i++) {
        const size = pick(sizes);
        out.push({ size, overlap: int(0, big ? size / 2 : size - 1), keep: pick(keeps), seps: pick(seps),
                   strip: rand() < 0.85, tokens: rand() < 0.25 ? "words" : null });
    }
    return out;
}
const grids = {
    hand: grid([1, 2, 3, 5, 8, 13, 40, 100], 40),
    small: grid([1, 2, 3, 4, 7, 16, 33], 20),
    smallbmp: grid([1, 2, 5, 11], 10),
    big: grid([50, 237, 1000, 2000], 8, true),
    bigbmp: grid([64, 400, 1500], 6, true),
};

// ---- the JavaScript side ------------------------------------------------------------------
const cpLength = (t) => [...t].length;
const wordTokens = (t) => (t.match(/[A-Za-z0-9_]+|[\s\S]/gu) || []).length;

class Modelled extends RecursiveCharacterTextSplitter {
    constructor(fields, keepMode, strip) {
        super(fields);
        this.keepMode = keepMode;
        this.strip = strip;
    }
    splitOnSeparator(text, separator) {
        if (!separator) return Array.from(text);
        if (this.keepMode === "end") {
            const parts = text.split(separator);
            return parts.map((p, i) => (i < parts.length - 1 ? p + separator : p))
                .filter((s) => s !== "");
        }
        return super.splitOnSeparator(text, separator);
    }
    mergeSplits(splits, separator) {
        return super.mergeSplits(splits, separator ?? "");
    }
    joinDocs(docs, separator) {
        if (this.strip) return super.joinDocs(docs, separator);
        const text = docs.join(separator);
        return text === "" ? null : text;
    }
}

function fields(st) {
    const f = { chunkSize: st.size, chunkOverlap: st.overlap, keepSeparator: st.keep !== "none",
                lengthFunction: st.tokens ? wordTokens : cpLength };
    if (st.seps) f.separators = st.seps;
    return f;
}

// ---- catena's side ------------------------------------------------------------------------
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "split-lc-"));
function catena(text, settings) {
    const tf = path.join(tmp, "text"), sf = path.join(tmp, "settings");
    fs.writeFileSync(tf, text);
    fs.writeFileSync(sf, settings.map((s) => JSON.stringify(s)).join("\n") + "\n");
    const r = spawnSync(driver, [tf, sf], { maxBuffer: 1 << 30, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`split_driver failed (${r.status}): ${r.stderr}`);
    return r.stdout.trim().split("\n").map((l) => JSON.parse(l));
}

const show = (s) => JSON.stringify(s.length > 240 ? s.slice(0, 240) + "..." : s);
let runs = 0, failures = 0, chunks = 0, pure = 0, startsChecked = 0;
const t0 = Date.now();
for (const [name, { parts, bmp }] of Object.entries(texts)) {
    const settings = grids[name];
    for (const [pi, text] of parts.entries()) {
        let tc = Date.now();
        const got = catena(text, settings);
        tc = Date.now() - tc;
        let tj = Date.now();
        const cps = Array.from(text);
        for (const [si, st] of settings.entries()) {
            runs++;
            const where = `${name}[${pi}] (${text.length} UTF-16 units) ${JSON.stringify(st)}`;
            const want = await new Modelled(fields(st), st.keep, st.strip).splitText(text);
            const g = got[si];
            if (g.error) {
                failures++;
                console.log(`FAIL ${where}: catena: ${g.error}`);
                continue;
            }
            chunks += want.length;
            let i = 0;
            while (i < want.length && i < g.chunks.length && want[i] === g.chunks[i]) i++;
            if (i < want.length || i < g.chunks.length) {
                failures++;
                console.log(`FAIL ${where}: chunk ${i} of ${want.length} (catena: ${g.chunks.length})`);
                console.log(`    LangChain.js: ${i < want.length ? show(want[i]) : "(none)"}`);
                console.log(`    catena:       ${i < g.chunks.length ? show(g.chunks[i]) : "(none)"}`);
                if (failures > 20) process.exit(1);
                continue;
            }
            // The offsets: each chunk at its start, in order; only joined chunks have none.
            let prev = 0;
            for (const [k, c] of g.chunks.entries()) {
                const s = g.starts[k];
                if (s === null) {
                    if (st.keep === "none") continue;
                    failures++;
                    console.log(`FAIL ${where}: chunk ${k} has no start though separators are kept`);
                    break;
                }
                const at = cps.slice(s, s + Array.from(c).length).join("");
                if (at !== c || s < prev) {
                    failures++;
                    console.log(`FAIL ${where}: chunk ${k} start ${s} (previous ${prev}) holds ${show(at)}, not ${show(c)}`);
                    break;
                }
                prev = s;
                startsChecked++;
            }
            // The unmodified class, where the modelled changes cannot matter.
            if (bmp && st.keep !== "end" && st.strip) {
                let plain = null;
                try {
                    plain = await new RecursiveCharacterTextSplitter(fields(st)).splitText(text);
                } catch (e) {
                    if (!(e instanceof TypeError)) throw e;
                }
                if (plain !== null) {
                    pure++;
                    if (JSON.stringify(plain) !== JSON.stringify(want)) {
                        failures++;
                        console.log(`FAIL ${where}: the modelled class differs from the plain one`);
                    }
                }
            }
        }
        console.log(`${name}[${pi}]: ${text.length} UTF-16 units, ${settings.length} settings: ` +
                    `catena ${tc} ms, LangChain.js and the checks ${Date.now() - tj} ms`);
    }
}
fs.rmSync(tmp, { recursive: true, force: true });
const secs = ((Date.now() - t0) / 1000).toFixed(1);
console.log(`split_langchain: ${runs} runs (${pure} also with the unmodified class), ${chunks} ` +
            `chunks, ${startsChecked} starts checked, ${failures} failed, ${secs} s`);
process.exit(failures ? 1 : 0);
