// sqlite-vec's side of bench/run_vsearch.sh: exact kNN with a vec0 table (cosine distance,
// which on the file's unit vectors ranks as the inner product does) through better-sqlite3,
// over the file bench/vsearch_bench.c writes ("CTNVEC01", uint32 n, dim, nq, 0, n * dim
// floats, nq * dim floats).
//
//   node bench/vsearch/sqlite_vec.mjs FILE DB [--k 10] [--reps 1] [--ids OUT]
//
// DB is made on the first call (rowid = row + 1, in one transaction) and reused after, so
// that alternating runs time the queries, not the load. Every query runs once untimed, then
// --reps timed passes of one query per statement (`WHERE embedding MATCH ? AND k = ?`); the
// median pass is printed as one JSON line in vsearch_bench's shape. --ids writes the hits,
// nq * k int64 rows, for the recall check.
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Database = require("better-sqlite3");
const sqliteVec = require("sqlite-vec");

const args = process.argv.slice(2);
if (args.length < 2) {
    console.error("usage: node sqlite_vec.mjs FILE DB [--k K] [--reps R] [--ids OUT]");
    process.exit(2);
}
const [file, dbPath] = args;
const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i > 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const k = Number(opt("--k", "10")), reps = Number(opt("--reps", "1")), idsPath = opt("--ids", null);
if (!(k >= 1) || !(reps >= 1)) {
    console.error("sqlite_vec.mjs: --k and --reps must be at least 1");
    process.exit(2);
}

const buf = fs.readFileSync(file);
if (buf.toString("latin1", 0, 8) !== "CTNVEC01") {
    console.error("sqlite_vec.mjs: not a vector file of vsearch_bench gen (CTNVEC01)");
    process.exit(1);
}
const n = buf.readUInt32LE(8), dim = buf.readUInt32LE(12), nq = buf.readUInt32LE(16);
const floats = new Float32Array(buf.buffer, buf.byteOffset + 24, (n + nq) * dim);
const row = (i) => floats.subarray(i * dim, (i + 1) * dim);

const fresh = !fs.existsSync(dbPath);
const db = new Database(dbPath);
sqliteVec.load(db);
if (fresh) {
    db.exec(`CREATE VIRTUAL TABLE v USING vec0(embedding float[${dim}] distance_metric=cosine)`);
    const ins = db.prepare("INSERT INTO v(rowid, embedding) VALUES (?, ?)");
    db.transaction(() => {
        for (let i = 0; i < n; i++) {
            const r = row(i);
            ins.run(BigInt(i + 1), Buffer.from(r.buffer, r.byteOffset, r.byteLength));
        }
    })();
}
const count = db.prepare("SELECT count(*) AS c FROM v").get().c;
if (count !== n) {
    console.error(`sqlite_vec.mjs: ${dbPath} holds ${count} vectors, the file ${n}: remove it`);
    process.exit(1);
}

const knn = db.prepare("SELECT rowid, distance FROM v WHERE embedding MATCH ? AND k = ?");
const ids = new BigInt64Array(nq * k).fill(-1n);
const pass = (keep) => {
    const t0 = process.hrtime.bigint();
    for (let q = 0; q < nq; q++) {
        const v = row(n + q);
        const hits = knn.all(Buffer.from(v.buffer, v.byteOffset, v.byteLength), k);
        if (keep) hits.forEach((h, i) => { ids[q * k + i] = BigInt(h.rowid) - 1n; });
    }
    return Number(process.hrtime.bigint() - t0) / 1e6;
};
pass(true);
const ms = [];
for (let r = 0; r < reps; r++) ms.push(pass(false));
ms.sort((a, b) => a - b);
const med = ms.length % 2 ? ms[(ms.length - 1) / 2] : (ms[ms.length / 2 - 1] + ms[ms.length / 2]) / 2;
if (idsPath) fs.writeFileSync(idsPath, Buffer.from(ids.buffer));
const bytes = n * dim * 4;
console.log(JSON.stringify({
    impl: "sqlite-vec", version: db.prepare("SELECT vec_version() AS v").get().v, dtype: "f32",
    threads: 1, batch: 1, n, dim, nq, k, ms_query: med / nq, ms_call: med / nq,
    matrix_bytes: bytes, gb_s: bytes / (med / nq * 1e6),
}));
db.close();
