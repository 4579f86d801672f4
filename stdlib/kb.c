/*
 * The knowledge base in SQLite (kb.h). One connection per ctn_kb; statements are prepared
 * per call (a call writes a whole document, so preparing costs nothing next to it).
 */
#include "kb.h"

#include <inttypes.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "json.h"
#include "kb-filter.h"
#include "quant.h"
#include "types.h"
#include "str.h"
#include "unicode.h"

struct ctn_kb {
    sqlite3 *db;
    char *path;
};

/* ---- schema ------------------------------------------------------------------------------ */

/* Version 1. Chunks are never updated in place (a document is replaced by deleting its
 * chunks and inserting new ones), so the index triggers cover insert and delete only; an
 * update trigger keeps the indexes right should a later version edit text. */
static const char schema_v1[] =
    "CREATE TABLE collections("
    " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, embed_model TEXT, embed_dim INTEGER,"
    " labels TEXT NOT NULL DEFAULT '[]', created INTEGER NOT NULL DEFAULT (unixepoch()));"
    "CREATE TABLE documents("
    " id INTEGER PRIMARY KEY,"
    " collection INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,"
    " uri TEXT NOT NULL, hash TEXT NOT NULL, mtime INTEGER, size INTEGER, loader TEXT,"
    " metadata TEXT NOT NULL DEFAULT '{}', ingested INTEGER NOT NULL DEFAULT (unixepoch()),"
    " UNIQUE(collection, uri));"
    "CREATE TABLE chunks("
    " id INTEGER PRIMARY KEY,"
    " document INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    " idx INTEGER NOT NULL, text TEXT NOT NULL, page INTEGER, section TEXT,"
    " start_index INTEGER, end_index INTEGER, metadata TEXT NOT NULL DEFAULT '{}',"
    " UNIQUE(document, idx));"
    "CREATE TABLE embeddings("
    " chunk INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,"
    " model TEXT NOT NULL, dtype TEXT NOT NULL CHECK (dtype IN ('f32', 'f16', 'int8')),"
    " dim INTEGER NOT NULL, scale REAL, vector BLOB NOT NULL, PRIMARY KEY(chunk, model))"
    " WITHOUT ROWID;"
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id',"
    " tokenize='unicode61 remove_diacritics 2');"
    "CREATE VIRTUAL TABLE chunks_tri USING fts5(text, content='chunks', content_rowid='id',"
    " tokenize='trigram');"
    "CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN"
    " INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);"
    " INSERT INTO chunks_tri(rowid, text) VALUES (new.id, new.text); END;"
    "CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN"
    " INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    " INSERT INTO chunks_tri(chunks_tri, rowid, text) VALUES ('delete', old.id, old.text);"
    " END;"
    "CREATE TRIGGER chunks_au AFTER UPDATE OF text ON chunks BEGIN"
    " INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    " INSERT INTO chunks_tri(chunks_tri, rowid, text) VALUES ('delete', old.id, old.text);"
    " INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);"
    " INSERT INTO chunks_tri(rowid, text) VALUES (new.id, new.text); END;"
    "CREATE INDEX chunks_document ON chunks(document);";

/* Version 2: a collection counts the changes to it (generation, one more per transaction
 * that changed its documents) and has a random identity (uid), so that a reader holding its
 * vectors in memory knows when they are stale, even across a file made anew. */
static const char schema_v2[] =
    "ALTER TABLE collections ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE collections ADD COLUMN uid INTEGER NOT NULL DEFAULT 0;"
    "UPDATE collections SET uid = random();";

/* migrations[v] takes a file from version v to v + 1 (v = 0: an empty file). A later schema
 * change appends its statements here; the file moves through each in one transaction. */
static const char *const migrations[CTN_KB_SCHEMA_VERSION] = {schema_v1, schema_v2};

/* One more change to collection c, inside the transaction that made it. */
static int bump(ctn_kb *kb, const ctn_kb_coll *c, char *err, size_t errcap);
/* Registers the ranking function ctn_bm25 (BM25 with k1 and b) on the connection. */
static int register_bm25(ctn_kb *kb, char *err, size_t errcap);

static int sqlerr(ctn_kb *kb, const char *what, char *err, size_t errcap) {
    int code = sqlite3_errcode(kb->db);
    ctn__errf(err, errcap, "%s: %s: %s", kb->path, what, sqlite3_errmsg(kb->db));
    if (code == SQLITE_NOMEM) return CTN_ENOMEM;
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) return CTN_EFORMAT;
    return CTN_EIO;
}

static int exec(ctn_kb *kb, const char *sql, const char *what, char *err, size_t errcap) {
    if (sqlite3_exec(kb->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sqlerr(kb, what, err, errcap);
    return 0;
}

static int prepare(ctn_kb *kb, const char *sql, sqlite3_stmt **st, char *err, size_t errcap) {
    if (sqlite3_prepare_v2(kb->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return sqlerr(kb, "prepare", err, errcap);
    }
    return 0;
}

/* Ends a transaction: COMMIT when rc is 0, else ROLLBACK (keeping rc and its message). */
static int finish_tx(ctn_kb *kb, int rc, char *err, size_t errcap) {
    if (rc == 0) return exec(kb, "COMMIT", "commit", err, errcap);
    sqlite3_exec(kb->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int user_version(ctn_kb *kb, int *v, char *err, size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb, "PRAGMA user_version", &st, err, errcap);
    if (rc < 0) return rc;
    if (sqlite3_step(st) != SQLITE_ROW) rc = sqlerr(kb, "reading the schema version", err, errcap);
    else *v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc;
}

/* Brings the schema to CTN_KB_SCHEMA_VERSION. A file at version 0 must be empty of tables:
 * a SQLite file of some other program is refused rather than gaining our tables. */
static int migrate(ctn_kb *kb, bool readonly, char *err, size_t errcap) {
    int v = 0, rc = user_version(kb, &v, err, errcap);
    if (rc < 0) return rc;
    if (v > CTN_KB_SCHEMA_VERSION) {
        ctn__errf(err, errcap,
                  "%s: knowledge base schema %d is newer than this catena's (%d); use a newer "
                  "catena",
                  kb->path, v, CTN_KB_SCHEMA_VERSION);
        return CTN_ENOTSUP;
    }
    if (v == CTN_KB_SCHEMA_VERSION) return 0;
    if (readonly) {
        ctn__errf(err, errcap, "%s: knowledge base schema %d needs migrating to %d; open it "
                  "for writing once", kb->path, v, CTN_KB_SCHEMA_VERSION);
        return CTN_ENOTSUP;
    }
    if ((rc = exec(kb, "BEGIN IMMEDIATE", "begin", err, errcap)) < 0) return rc;
    /* Read again inside the write lock: another process may have migrated meanwhile. */
    if ((rc = user_version(kb, &v, err, errcap)) < 0) return finish_tx(kb, rc, err, errcap);
    if (v == 0) {
        sqlite3_stmt *st;
        rc = prepare(kb, "SELECT count(*) FROM sqlite_schema", &st, err, errcap);
        if (rc == 0 && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0) {
            ctn__errf(err, errcap, "%s: a SQLite file that is not a catena knowledge base "
                      "(it has tables but no catena schema version)", kb->path);
            rc = CTN_EFORMAT;
        }
        sqlite3_finalize(st);
    }
    for (; rc == 0 && v < CTN_KB_SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof what, "migrating schema %d to %d", v, v + 1);
        rc = exec(kb, migrations[v], what, err, errcap);
    }
    if (rc == 0) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", CTN_KB_SCHEMA_VERSION);
        rc = exec(kb, sql, "setting the schema version", err, errcap);
    }
    return finish_tx(kb, rc, err, errcap);
}

int ctn_kb_open(const char *path, int flags, ctn_kb **out, char *err, size_t errcap) {
    *out = NULL;
    bool ro = (flags & CTN_KB_READONLY) != 0;
    ctn_kb *kb = ctn__calloc(1, sizeof *kb);
    if (kb == NULL || (kb->path = ctn__strdup(path)) == NULL) {
        free(kb);
        ctn__errf(err, errcap, "%s: out of memory", path);
        return CTN_ENOMEM;
    }
    int oflags = ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = 0;
    if (sqlite3_open_v2(path, &kb->db, oflags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = kb->db != NULL ? sqlerr(kb, "open", err, errcap) : CTN_ENOMEM;
        if (kb->db == NULL) ctn__errf(err, errcap, "%s: out of memory", path);
        else if (sqlite3_errcode(kb->db) == SQLITE_CANTOPEN) rc = CTN_EIO;
        goto fail;
    }
    sqlite3_extended_result_codes(kb->db, 0);
    sqlite3_busy_timeout(kb->db, 10000);
    /* The first read finds out whether this is a database at all (SQLITE_NOTADB). */
    if ((rc = exec(kb, "PRAGMA foreign_keys = ON", "open", err, errcap)) < 0) goto fail;
    if (!ro && (rc = exec(kb, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL",
                          "setting WAL mode", err, errcap)) < 0)
        goto fail;
    if ((rc = migrate(kb, ro, err, errcap)) < 0 || (rc = register_bm25(kb, err, errcap)) < 0)
        goto fail;
    *out = kb;
    return 0;
fail:
    ctn_kb_close(kb);
    return rc;
}

void ctn_kb_close(ctn_kb *kb) {
    if (kb == NULL) return;
    sqlite3_close(kb->db);
    free(kb->path);
    free(kb);
}

const char *ctn_kb_path(const ctn_kb *kb) { return kb->path; }

/* ---- collections ------------------------------------------------------------------------- */

static int read_coll(ctn_kb *kb, const char *name, ctn_kb_coll *c, bool *found,
                     int64_t *nchunks, char *err, size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb,
                     "SELECT id, coalesce(embed_model, ''), coalesce(embed_dim, 0),"
                     " (SELECT count(*) FROM chunks k JOIN documents d ON d.id = k.document"
                     "  WHERE d.collection = c.id)"
                     " FROM collections c WHERE name = ?1",
                     &st, err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    *found = s == SQLITE_ROW;
    if (s == SQLITE_ROW) {
        c->id = sqlite3_column_int64(st, 0);
        snprintf(c->embed_model, sizeof c->embed_model, "%s",
                 (const char *)sqlite3_column_text(st, 1));
        c->embed_dim = sqlite3_column_int(st, 2);
        *nchunks = sqlite3_column_int64(st, 3);
    } else if (s != SQLITE_DONE) {
        rc = sqlerr(kb, "reading collections", err, errcap);
    }
    sqlite3_finalize(st);
    return rc;
}

static char *labels_json(const char *const *labels, size_t n) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "[");
    for (size_t i = 0; i < n; i++) {
        ctn_val *s = ctn_val_cstr(labels[i]);
        char *j = s != NULL ? ctn_val_to_json(s, 0) : NULL;
        ctn_val_unref(s);
        if (j == NULL) {
            ctn_sb_free(&b);
            return NULL;
        }
        if (i > 0) ctn_sb_puts(&b, ",");
        ctn_sb_puts(&b, j);
        free(j);
    }
    ctn_sb_puts(&b, "]");
    return ctn_sb_take(&b);
}

int ctn_kb_collection(ctn_kb *kb, const char *name, const ctn_kb_coll_opts *o, ctn_kb_coll *out,
                      char *err, size_t errcap) {
    static const ctn_kb_coll_opts none = {0};
    if (o == NULL) o = &none;
    if (name == NULL || name[0] == '\0' || strlen(name) >= sizeof out->name) {
        ctn__errf(err, errcap, "%s: a collection needs a name of 1 to %zu bytes", kb->path,
                  sizeof out->name - 1);
        return CTN_EINVAL;
    }
    if (o->embed_model != NULL &&
        (strlen(o->embed_model) >= sizeof out->embed_model || o->embed_dim <= 0)) {
        ctn__errf(err, errcap, "%s: collection '%s': an embedding model needs an identity "
                  "under %zu bytes and a dimension > 0", kb->path, name,
                  sizeof out->embed_model);
        return CTN_EINVAL;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    int rc = exec(kb, "BEGIN IMMEDIATE", "begin", err, errcap);
    if (rc < 0) return rc;
    bool found = false;
    int64_t nchunks = 0;
    rc = read_coll(kb, name, out, &found, &nchunks, err, errcap);
    if (rc == 0 && !found && !o->create) {
        ctn__errf(err, errcap, "%s: no collection '%s'", kb->path, name);
        rc = CTN_ENOENT;
    }
    if (rc == 0 && !found) {
        char *lj = labels_json(o->labels, o->n_labels);
        sqlite3_stmt *st = NULL;
        if (lj == NULL) {
            ctn__errf(err, errcap, "%s: out of memory", kb->path);
            rc = CTN_ENOMEM;
        } else if ((rc = prepare(kb, "INSERT INTO collections(name, embed_model, embed_dim,"
                                 " labels, uid) VALUES (?1, ?2, ?3, ?4, random())", &st, err, errcap)) == 0) {
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            if (o->embed_model != NULL) {
                sqlite3_bind_text(st, 2, o->embed_model, -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 3, o->embed_dim);
            }
            sqlite3_bind_text(st, 4, lj, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE) rc = sqlerr(kb, "adding a collection", err, errcap);
            out->id = sqlite3_last_insert_rowid(kb->db);
            if (o->embed_model != NULL) {
                snprintf(out->embed_model, sizeof out->embed_model, "%s", o->embed_model);
                out->embed_dim = o->embed_dim;
            }
        }
        sqlite3_finalize(st);
        free(lj);
    } else if (rc == 0 && o->embed_model != NULL) {
        bool same = strcmp(out->embed_model, o->embed_model) == 0 &&
                    out->embed_dim == o->embed_dim;
        if (!same && out->embed_model[0] == '\0' && nchunks > 0) {
            /* Its chunks have no vectors: a model adopted now would leave them unfindable. */
            ctn__errf(err, errcap,
                      "%s: collection '%s' has no embedding model and holds %lld chunks "
                      "without vectors; '%s' can embed only an empty collection: remove its "
                      "documents or use another collection",
                      kb->path, name, (long long)nchunks, o->embed_model);
            rc = CTN_EINVAL;
        } else if (!same && out->embed_model[0] != '\0') {
            ctn__errf(err, errcap,
                      "%s: collection '%s' is embedded with '%s' (dimension %d); '%s' "
                      "(dimension %d) was asked for: use that model or another collection",
                      kb->path, name, out->embed_model, out->embed_dim, o->embed_model,
                      o->embed_dim);
            rc = CTN_EINVAL;
        } else if (!same) {
            sqlite3_stmt *st = NULL;
            if ((rc = prepare(kb, "UPDATE collections SET embed_model = ?1, embed_dim = ?2"
                              " WHERE id = ?3", &st, err, errcap)) == 0) {
                sqlite3_bind_text(st, 1, o->embed_model, -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 2, o->embed_dim);
                sqlite3_bind_int64(st, 3, out->id);
                if (sqlite3_step(st) != SQLITE_DONE)
                    rc = sqlerr(kb, "recording the embedding model", err, errcap);
            }
            sqlite3_finalize(st);
            snprintf(out->embed_model, sizeof out->embed_model, "%s", o->embed_model);
            out->embed_dim = o->embed_dim;
        }
    }
    return finish_tx(kb, rc, err, errcap);
}

int ctn_kb_model_id(const char *path, const char *arch, int dim, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    int n = snprintf(out, cap, "%s:%s:%d", base, arch != NULL ? arch : "?", dim);
    return n < 0 || (size_t)n >= cap ? CTN_ERANGE : 0;
}

/* ---- documents --------------------------------------------------------------------------- */

void ctn_kb_hash(const void *data, size_t n, char out[48]) {
    /* FNV-1a over the bytes: change detection, not security (a changed file that collides
     * with its old hash would also need the same size). */
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    snprintf(out, 48, "fnv1a64:%016" PRIx64 ":%zu", h, n);
}

static int doc_id(ctn_kb *kb, const ctn_kb_coll *c, const char *uri, int64_t *id, char *hash,
                  size_t hcap, char *err, size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb, "SELECT id, hash FROM documents WHERE collection = ?1 AND uri = ?2", &st,
                     err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_int64(st, 1, c->id);
    sqlite3_bind_text(st, 2, uri, -1, SQLITE_STATIC);
    *id = 0;
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        if (hash != NULL) snprintf(hash, hcap, "%s", (const char *)sqlite3_column_text(st, 1));
    } else if (s != SQLITE_DONE) {
        rc = sqlerr(kb, "reading documents", err, errcap);
    }
    sqlite3_finalize(st);
    return rc;
}

int ctn_kb_doc_state(ctn_kb *kb, const ctn_kb_coll *c, const char *uri, const char *hash,
                     ctn_kb_state *state, char *err, size_t errcap) {
    int64_t id;
    char old[64] = "";
    int rc = doc_id(kb, c, uri, &id, old, sizeof old, err, errcap);
    if (rc < 0) return rc;
    *state = id == 0 ? CTN_KB_NEW : strcmp(old, hash) == 0 ? CTN_KB_SAME : CTN_KB_CHANGED;
    return 0;
}

/* Deletes a document's chunks (their embeddings and index entries go with them: the
 * foreign keys cascade and the triggers fire) and the document row. */
static int delete_doc(ctn_kb *kb, int64_t id, char *err, size_t errcap) {
    static const char *const sql[] = {
        "DELETE FROM embeddings WHERE chunk IN (SELECT id FROM chunks WHERE document = ?1)",
        "DELETE FROM chunks WHERE document = ?1",
        "DELETE FROM documents WHERE id = ?1",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        sqlite3_stmt *st;
        int rc = prepare(kb, sql[i], &st, err, errcap);
        if (rc < 0) return rc;
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) != SQLITE_DONE) rc = sqlerr(kb, "removing a document", err, errcap);
        sqlite3_finalize(st);
        if (rc < 0) return rc;
    }
    return 0;
}

static bool is_column_key(const char *k, size_t n) {
    static const char *const cols[] = {"chunk", "page", "section", "start_index", "end_index"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (strlen(cols[i]) == n && memcmp(cols[i], k, n) == 0) return true;
    return false;
}

/* The chunk's metadata less the fields that have columns, as JSON (malloc'd). */
static char *rest_json(const ctn_val *meta) {
    ctn_val *o = ctn_val_obj();
    if (o == NULL) return NULL;
    for (size_t i = 0; meta != NULL && meta->kind == CTN_VOBJ && i < meta->u.obj.n; i++) {
        const ctn_val *k = meta->u.obj.keys[i];
        if (is_column_key(k->u.str.p, k->u.str.len)) continue;
        if (ctn_val_setk(o, k->u.str.p, k->u.str.len, ctn_val_ref(meta->u.obj.vals[i])) < 0) {
            ctn_val_unref(o);
            return NULL;
        }
    }
    char *j = ctn_val_to_json(o, 0);
    ctn_val_unref(o);
    return j;
}

static void bind_int_field(sqlite3_stmt *st, int col, const ctn_val *meta, const char *key) {
    const ctn_val *v = meta != NULL ? ctn_val_get(meta, key) : NULL;
    if (v != NULL && v->kind == CTN_VINT) sqlite3_bind_int64(st, col, v->u.i);
    else sqlite3_bind_null(st, col);
}

static uint16_t f32_to_f16(float f) {
    union {
        float f;
        uint32_t u;
    } x = {f};
    uint32_t sign = (x.u >> 16) & 0x8000u, e = (x.u >> 23) & 0xffu, m = x.u & 0x7fffffu;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0)); /* inf, NaN */
    int32_t ee = (int32_t)e - 127 + 15;
    if (ee >= 31) return (uint16_t)(sign | 0x7c00u); /* overflow: infinity */
    if (ee <= 0) {                                   /* subnormal or zero */
        if (ee < -10) return (uint16_t)sign;
        m |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - ee);
        uint32_t hm = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (hm & 1u))) hm++;
        return (uint16_t)(sign | hm);
    }
    uint32_t hm = m >> 13, rem = m & 0x1fffu;
    uint32_t h = sign | ((uint32_t)ee << 10) | hm;
    if (rem > 0x1000u || (rem == 0x1000u && (hm & 1u))) h++; /* round to nearest even */
    return (uint16_t)h;
}

/* One vector in the stored form: a malloc'd blob and, for int8, its scale (max |x| / 127). */
static void *encode_vec(const float *v, int dim, ctn_kb_dtype t, size_t *bytes, double *scale) {
    *scale = 1.0;
    if (t == CTN_KB_F32) {
        *bytes = (size_t)dim * 4;
        void *b = ctn__malloc(*bytes);
        if (b != NULL) memcpy(b, v, *bytes);
        return b;
    }
    if (t == CTN_KB_F16) {
        *bytes = (size_t)dim * 2;
        uint16_t *b = ctn__malloc(*bytes);
        for (int i = 0; b != NULL && i < dim; i++) b[i] = f32_to_f16(v[i]);
        return b;
    }
    float amax = 0;
    for (int i = 0; i < dim; i++) amax = fabsf(v[i]) > amax ? fabsf(v[i]) : amax;
    *scale = amax > 0 ? amax / 127.0 : 1.0;
    *bytes = (size_t)dim;
    int8_t *b = ctn__malloc(*bytes);
    for (int i = 0; b != NULL && i < dim; i++) {
        long q = lrint(v[i] / *scale);
        b[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
    }
    return b;
}

static const char *dtype_name(ctn_kb_dtype t) {
    return t == CTN_KB_F16 ? "f16" : t == CTN_KB_INT8 ? "int8" : "f32";
}

static int put_chunks(ctn_kb *kb, int64_t doc, const ctn_val *chunks, const ctn_kb_vectors *emb,
                      char *err, size_t errcap) {
    sqlite3_stmt *ins = NULL, *vec = NULL;
    int rc = prepare(kb, "INSERT INTO chunks(document, idx, text, page, section, start_index,"
                     " end_index, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", &ins, err,
                     errcap);
    if (rc == 0 && emb != NULL)
        rc = prepare(kb, "INSERT INTO embeddings(chunk, model, dtype, dim, scale, vector)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6)", &vec, err, errcap);
    size_t n = ctn_val_len(chunks);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const ctn_val *ch = ctn_val_at(chunks, i);
        const ctn_val *text = ch->kind == CTN_VDOC ? ch->u.doc.text : ch;
        const ctn_val *meta = ch->kind == CTN_VDOC ? ch->u.doc.meta : NULL;
        if (text->kind != CTN_VSTR) {
            ctn__errf(err, errcap, "%s: chunk %zu is a %s, not a document or string", kb->path,
                      i + 1, ctn_vkind_name(ch->kind));
            rc = CTN_ETYPE;
            break;
        }
        char *mj = rest_json(meta);
        if (mj == NULL) {
            ctn__errf(err, errcap, "%s: out of memory", kb->path);
            rc = CTN_ENOMEM;
            break;
        }
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, doc);
        sqlite3_bind_int64(ins, 2, (int64_t)i);
        sqlite3_bind_text(ins, 3, text->u.str.p, (int)text->u.str.len, SQLITE_STATIC);
        bind_int_field(ins, 4, meta, "page");
        const ctn_val *sec = meta != NULL ? ctn_val_get(meta, "section") : NULL;
        if (sec != NULL && sec->kind == CTN_VSTR)
            sqlite3_bind_text(ins, 5, sec->u.str.p, (int)sec->u.str.len, SQLITE_STATIC);
        else sqlite3_bind_null(ins, 5);
        bind_int_field(ins, 6, meta, "start_index");
        bind_int_field(ins, 7, meta, "end_index");
        sqlite3_bind_text(ins, 8, mj, -1, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE) rc = sqlerr(kb, "adding a chunk", err, errcap);
        free(mj);
        if (rc < 0 || emb == NULL) continue;
        size_t bytes;
        double scale;
        void *blob = encode_vec(emb->vecs + i * (size_t)emb->dim, emb->dim, emb->dtype, &bytes,
                                &scale);
        if (blob == NULL) {
            ctn__errf(err, errcap, "%s: out of memory", kb->path);
            rc = CTN_ENOMEM;
            break;
        }
        sqlite3_reset(vec);
        sqlite3_bind_int64(vec, 1, sqlite3_last_insert_rowid(kb->db));
        sqlite3_bind_text(vec, 2, emb->model, -1, SQLITE_STATIC);
        sqlite3_bind_text(vec, 3, dtype_name(emb->dtype), -1, SQLITE_STATIC);
        sqlite3_bind_int(vec, 4, emb->dim);
        if (emb->dtype == CTN_KB_INT8) sqlite3_bind_double(vec, 5, scale);
        else sqlite3_bind_null(vec, 5);
        sqlite3_bind_blob(vec, 6, blob, (int)bytes, SQLITE_STATIC);
        if (sqlite3_step(vec) != SQLITE_DONE) rc = sqlerr(kb, "adding an embedding", err, errcap);
        free(blob);
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(vec);
    return rc;
}

int ctn_kb_put(ctn_kb *kb, const ctn_kb_coll *c, const ctn_kb_doc *d, const ctn_val *chunks,
               const ctn_kb_vectors *emb, char *err, size_t errcap) {
    if (chunks == NULL || chunks->kind != CTN_VARR || d->uri == NULL || d->hash == NULL) {
        ctn__errf(err, errcap, "%s: a document needs a uri, a hash and an array of chunks",
                  kb->path);
        return CTN_EINVAL;
    }
    if (emb != NULL && (emb->n != ctn_val_len(chunks) || emb->model == NULL ||
                        strcmp(emb->model, c->embed_model) != 0 || emb->dim != c->embed_dim)) {
        ctn__errf(err, errcap,
                  "%s: %s: %zu embeddings of '%s' (dimension %d) for %zu chunks in collection "
                  "'%s' of '%s' (dimension %d)",
                  kb->path, d->uri, emb->n, emb->model ? emb->model : "(none)", emb->dim,
                  ctn_val_len(chunks), c->name, c->embed_model[0] ? c->embed_model : "(none)",
                  c->embed_dim);
        return CTN_EINVAL;
    }
    if (emb == NULL && c->embed_model[0] != '\0' && ctn_val_len(chunks) > 0) {
        ctn__errf(err, errcap,
                  "%s: %s: collection '%s' is embedded with '%s': its chunks need embeddings "
                  "of that model",
                  kb->path, d->uri, c->name, c->embed_model);
        return CTN_EINVAL;
    }
    char *mj = d->meta != NULL ? ctn_val_to_json(d->meta, 0) : ctn__strdup("{}");
    if (mj == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", kb->path);
        return CTN_ENOMEM;
    }
    int rc = exec(kb, "BEGIN IMMEDIATE", "begin", err, errcap);
    if (rc < 0) {
        free(mj);
        return rc;
    }
    int64_t old = 0;
    rc = doc_id(kb, c, d->uri, &old, NULL, 0, err, errcap);
    if (rc == 0 && old != 0) rc = delete_doc(kb, old, err, errcap);
    sqlite3_stmt *st = NULL;
    if (rc == 0)
        rc = prepare(kb, "INSERT INTO documents(collection, uri, hash, mtime, size, loader,"
                     " metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", &st, err, errcap);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, c->id);
        sqlite3_bind_text(st, 2, d->uri, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, d->hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, d->mtime);
        sqlite3_bind_int64(st, 5, d->size);
        if (d->loader != NULL) sqlite3_bind_text(st, 6, d->loader, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, mj, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) rc = sqlerr(kb, "adding a document", err, errcap);
    }
    sqlite3_finalize(st);
    free(mj);
    if (rc == 0) rc = put_chunks(kb, sqlite3_last_insert_rowid(kb->db), chunks, emb, err, errcap);
    if (rc == 0) rc = bump(kb, c, err, errcap);
    return finish_tx(kb, rc, err, errcap);
}

int ctn_kb_remove(ctn_kb *kb, const ctn_kb_coll *c, const char *uri, int *removed, char *err,
                  size_t errcap) {
    *removed = 0;
    int rc = exec(kb, "BEGIN IMMEDIATE", "begin", err, errcap);
    if (rc < 0) return rc;
    int64_t id = 0;
    rc = doc_id(kb, c, uri, &id, NULL, 0, err, errcap);
    if (rc == 0 && id != 0 && (rc = delete_doc(kb, id, err, errcap)) == 0 &&
        (rc = bump(kb, c, err, errcap)) == 0)
        *removed = 1;
    return finish_tx(kb, rc, err, errcap);
}

static int bump(ctn_kb *kb, const ctn_kb_coll *c, char *err, size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb, "UPDATE collections SET generation = generation + 1 WHERE id = ?1", &st,
                     err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_int64(st, 1, c->id);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sqlerr(kb, "counting a change", err, errcap);
    sqlite3_finalize(st);
    return rc;
}

int ctn_kb_generation(ctn_kb *kb, const ctn_kb_coll *c, int64_t *uid, int64_t *gen, char *err,
                      size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb, "SELECT uid, generation FROM collections WHERE id = ?1", &st, err,
                     errcap);
    if (rc < 0) return rc;
    sqlite3_bind_int64(st, 1, c->id);
    const int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        *uid = sqlite3_column_int64(st, 0);
        *gen = sqlite3_column_int64(st, 1);
    } else if (s == SQLITE_DONE) {
        ctn__errf(err, errcap, "%s: collection '%s' is gone", kb->path, c->name);
        rc = CTN_ENOENT;
    } else {
        rc = sqlerr(kb, "reading a collection", err, errcap);
    }
    sqlite3_finalize(st);
    return rc;
}

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

int ctn_kb_prune(ctn_kb *kb, const ctn_kb_coll *c, const char *const *prefixes, size_t n,
                 const char *const *keep, size_t n_keep, int64_t *removed, char *err,
                 size_t errcap) {
    *removed = 0;
    int rc = exec(kb, "BEGIN IMMEDIATE", "begin", err, errcap);
    if (rc < 0) return rc;
    sqlite3_stmt *st = NULL;
    /* Collect the ids first: deleting while stepping the same table's cursor is allowed in
     * SQLite but harder to reason about. The keep list is small next to the I/O (a folder's
     * files), so a linear scan per document is fine. */
    int64_t *ids = NULL;
    size_t nids = 0, cap = 0;
    rc = prepare(kb, "SELECT id, uri FROM documents WHERE collection = ?1", &st, err, errcap);
    if (rc == 0) sqlite3_bind_int64(st, 1, c->id);
    int s;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *uri = (const char *)sqlite3_column_text(st, 1);
        bool under = false, kept = false;
        for (size_t i = 0; i < n && !under; i++) under = has_prefix(uri, prefixes[i]);
        for (size_t i = 0; under && i < n_keep && !kept; i++) kept = strcmp(uri, keep[i]) == 0;
        if (!under || kept) continue;
        if (nids == cap) {
            size_t nc = cap ? cap * 2 : 16;
            int64_t *g = ctn__realloc(ids, nc * sizeof *ids);
            if (g == NULL) {
                ctn__errf(err, errcap, "%s: out of memory", kb->path);
                rc = CTN_ENOMEM;
                break;
            }
            ids = g, cap = nc;
        }
        ids[nids++] = sqlite3_column_int64(st, 0);
    }
    if (rc == 0 && s != SQLITE_DONE) rc = sqlerr(kb, "reading documents", err, errcap);
    sqlite3_finalize(st);
    for (size_t i = 0; rc == 0 && i < nids; i++) rc = delete_doc(kb, ids[i], err, errcap);
    if (rc == 0 && nids > 0) rc = bump(kb, c, err, errcap);
    if (rc == 0) *removed = (int64_t)nids;
    free(ids);
    return finish_tx(kb, rc, err, errcap);
}

/* ---- reading ----------------------------------------------------------------------------- */

int ctn_kb_stats(ctn_kb *kb, int (*fn)(void *ud, const ctn_kb_coll_stats *s), void *ud,
                 char *err, size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb,
                     "SELECT c.name, coalesce(c.embed_model, ''), coalesce(c.embed_dim, 0),"
                     " (SELECT count(*) FROM documents d WHERE d.collection = c.id),"
                     " (SELECT count(*) FROM chunks k JOIN documents d ON d.id = k.document"
                     "  WHERE d.collection = c.id),"
                     " (SELECT count(*) FROM embeddings e JOIN chunks k ON k.id = e.chunk"
                     "  JOIN documents d ON d.id = k.document WHERE d.collection = c.id),"
                     " (SELECT coalesce(sum(length(CAST(k.text AS BLOB))), 0) FROM chunks k"
                     "  JOIN documents d ON d.id = k.document WHERE d.collection = c.id)"
                     " FROM collections c ORDER BY c.name",
                     &st, err, errcap);
    if (rc < 0) return rc;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        ctn_kb_coll_stats cs = {0};
        snprintf(cs.name, sizeof cs.name, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(cs.embed_model, sizeof cs.embed_model, "%s",
                 (const char *)sqlite3_column_text(st, 1));
        cs.embed_dim = sqlite3_column_int(st, 2);
        cs.documents = sqlite3_column_int64(st, 3);
        cs.chunks = sqlite3_column_int64(st, 4);
        cs.embeddings = sqlite3_column_int64(st, 5);
        cs.text_bytes = sqlite3_column_int64(st, 6);
        if ((rc = fn(ud, &cs)) != 0) break;
    }
    if (rc == 0 && s != SQLITE_DONE) rc = sqlerr(kb, "reading statistics", err, errcap);
    sqlite3_finalize(st);
    return rc;
}

int ctn_kb_list(ctn_kb *kb, const ctn_kb_coll *c,
                int (*fn)(void *ud, const char *coll, const char *uri, const char *hash,
                          int64_t chunks, const char *meta_json),
                void *ud, char *err, size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb,
                     "SELECT c.name, d.uri, d.hash,"
                     " (SELECT count(*) FROM chunks k WHERE k.document = d.id), d.metadata"
                     " FROM documents d JOIN collections c ON c.id = d.collection"
                     " WHERE ?1 IS NULL OR c.id = ?1 ORDER BY c.name, d.uri",
                     &st, err, errcap);
    if (rc < 0) return rc;
    if (c != NULL) sqlite3_bind_int64(st, 1, c->id);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        rc = fn(ud, (const char *)sqlite3_column_text(st, 0),
                (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
                sqlite3_column_int64(st, 3), (const char *)sqlite3_column_text(st, 4));
        if (rc != 0) break;
    }
    if (rc == 0 && s != SQLITE_DONE) rc = sqlerr(kb, "listing documents", err, errcap);
    sqlite3_finalize(st);
    return rc;
}

/* Puts a column back into the metadata as the splitter had it (NULL columns stay out). */
static int set_col(ctn_val *meta, sqlite3_stmt *st, int col, const char *key) {
    int t = sqlite3_column_type(st, col);
    if (t == SQLITE_NULL) return 0;
    if (t == SQLITE_INTEGER) return ctn_val_set(meta, key, ctn_val_int(sqlite3_column_int64(st, col)));
    return ctn_val_set(meta, key, ctn_val_str((const char *)sqlite3_column_text(st, col),
                                              (size_t)sqlite3_column_bytes(st, col)));
}

/* The chunk document of a row whose columns are text, metadata, idx, page, section,
 * start_index, end_index (*out; rc CTN_ENOMEM, or CTN_EFORMAT for metadata that is not an
 * object, err not set). */
static int row_doc(sqlite3_stmt *st, ctn_val **out, char *err, size_t errcap) {
    *out = NULL;
    ctn_val *meta = NULL;
    const char *mj = (const char *)sqlite3_column_text(st, 1);
    int rc = ctn_json_parse(mj, strlen(mj), &meta, err, errcap);
    if (rc == 0 && meta->kind != CTN_VOBJ) rc = CTN_EFORMAT;
    if (rc == 0)
        rc = set_col(meta, st, 2, "chunk") < 0 || set_col(meta, st, 3, "page") < 0 ||
                     set_col(meta, st, 4, "section") < 0 ||
                     set_col(meta, st, 5, "start_index") < 0 ||
                     set_col(meta, st, 6, "end_index") < 0
                 ? CTN_ENOMEM
                 : 0;
    if (rc == 0) {
        *out = ctn_val_doc((const char *)sqlite3_column_text(st, 0),
                           (size_t)sqlite3_column_bytes(st, 0), meta);
        if (*out == NULL) rc = CTN_ENOMEM;
    } else {
        ctn_val_unref(meta);
    }
    return rc;
}

int ctn_kb_chunks(ctn_kb *kb, const ctn_kb_coll *c, const char *uri, ctn_val *out, char *err,
                  size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb,
                     "SELECT k.text, k.metadata, k.idx, k.page, k.section, k.start_index,"
                     " k.end_index FROM chunks k JOIN documents d ON d.id = k.document"
                     " WHERE d.collection = ?1 AND d.uri = ?2 ORDER BY k.idx",
                     &st, err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_int64(st, 1, c->id);
    sqlite3_bind_text(st, 2, uri, -1, SQLITE_STATIC);
    ctn_val *tmp = ctn_val_arr();
    if (tmp == NULL) rc = CTN_ENOMEM;
    int s = SQLITE_DONE;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        ctn_val *d;
        rc = row_doc(st, &d, err, errcap);
        if (rc == 0) rc = ctn_val_push(tmp, d);
    }
    if (rc == 0 && s != SQLITE_DONE) rc = sqlerr(kb, "reading chunks", err, errcap);
    else if (rc == CTN_ENOMEM) ctn__errf(err, errcap, "%s: out of memory", kb->path);
    else if (rc == CTN_EFORMAT) ctn__errf(err, errcap, "%s: %s: stored chunk metadata is not "
                                          "a JSON object", kb->path, uri);
    sqlite3_finalize(st);
    for (size_t i = 0; rc == 0 && i < ctn_val_len(tmp); i++)
        rc = ctn_val_push(out, ctn_val_ref(ctn_val_at(tmp, i)));
    ctn_val_unref(tmp);
    return rc;
}

int ctn_kb_read_begin(ctn_kb *kb, char *err, size_t errcap) {
    return exec(kb, "BEGIN", "begin a read", err, errcap);
}

void ctn_kb_read_end(ctn_kb *kb) { sqlite3_exec(kb->db, "COMMIT", NULL, NULL, NULL); }

int ctn_kb_chunk(ctn_kb *kb, const ctn_kb_coll *c, int64_t chunk, ctn_val **out, char *err,
                 size_t errcap) {
    *out = NULL;
    sqlite3_stmt *st;
    int rc = prepare(kb,
                     "SELECT k.text, k.metadata, k.idx, k.page, k.section, k.start_index,"
                     " k.end_index, d.uri FROM chunks k JOIN documents d ON d.id = k.document"
                     " WHERE k.id = ?1 AND d.collection = ?2",
                     &st, err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_int64(st, 1, chunk);
    sqlite3_bind_int64(st, 2, c->id);
    const int s = sqlite3_step(st);
    ctn_val *d = NULL;
    if (s == SQLITE_ROW) {
        rc = row_doc(st, &d, err, errcap);
        /* The hit's document: "source" is its uri when the metadata has none. */
        if (rc == 0 && ctn_val_get(d, "source") == NULL &&
            ctn_val_set(d->u.doc.meta, "source",
                        ctn_val_cstr((const char *)sqlite3_column_text(st, 7))) < 0)
            rc = CTN_ENOMEM;
        if (rc == CTN_ENOMEM) ctn__errf(err, errcap, "%s: out of memory", kb->path);
        else if (rc == CTN_EFORMAT)
            ctn__errf(err, errcap, "%s: chunk %" PRId64 ": stored chunk metadata is not a JSON "
                      "object", kb->path, chunk);
    } else if (s == SQLITE_DONE) {
        ctn__errf(err, errcap, "%s: collection '%s' has no chunk %" PRId64, kb->path, c->name,
                  chunk);
        rc = CTN_ENOENT;
    } else {
        rc = sqlerr(kb, "reading a chunk", err, errcap);
    }
    sqlite3_finalize(st);
    if (rc == 0) *out = d;
    else ctn_val_unref(d);
    return rc;
}

/* A stored vector (columns 1 to 4 of st: dtype, dim, scale, vector) into v (dim floats):
 * CTN_EFORMAT naming the chunk when it is not of the collection's size. */
static int decode_vec(ctn_kb *kb, sqlite3_stmt *st, int64_t id, float *v, int dim, char *err,
                      size_t errcap) {
    const char *t = (const char *)sqlite3_column_text(st, 1);
    const double scale = sqlite3_column_double(st, 3);
    const void *blob = sqlite3_column_blob(st, 4);
    const size_t bytes = (size_t)sqlite3_column_bytes(st, 4);
    if (t == NULL) t = "";
    const size_t per = !strcmp(t, "f32") ? 4 : !strcmp(t, "f16") ? 2 : 1;
    if (sqlite3_column_int(st, 2) != dim || bytes != per * (size_t)dim || blob == NULL) {
        ctn__errf(err, errcap, "%s: chunk %" PRId64 ": a stored %s vector of %zu bytes and "
                  "dimension %d where the collection's dimension is %d", kb->path, id, t, bytes,
                  sqlite3_column_int(st, 2), dim);
        return CTN_EFORMAT;
    }
    if (per == 4) {
        memcpy(v, blob, bytes);
    } else if (per == 2) {
        ctn_dequantize_row(CTN_TYPE_F16, blob, v, dim);
    } else {
        for (int i = 0; i < dim; i++)
            v[i] = (float)(((const int8_t *)blob)[i] * scale);
    }
    return 0;
}

static int no_model(ctn_kb *kb, const ctn_kb_coll *c, char *err, size_t errcap) {
    ctn__errf(err, errcap, "%s: collection '%s' has no embedding model: it has no vectors to "
              "search", kb->path, c->name);
    return CTN_EINVAL;
}

int ctn_kb_vector(ctn_kb *kb, const ctn_kb_coll *c, int64_t chunk, float *vec, char *err,
                  size_t errcap) {
    if (c->embed_model[0] == '\0' || c->embed_dim <= 0) return no_model(kb, c, err, errcap);
    sqlite3_stmt *st;
    int rc = prepare(kb,
                     "SELECT e.chunk, e.dtype, e.dim, e.scale, e.vector FROM embeddings e"
                     " JOIN chunks k ON k.id = e.chunk JOIN documents d ON d.id = k.document"
                     " WHERE e.chunk = ?3 AND d.collection = ?1 AND e.model = ?2",
                     &st, err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_int64(st, 1, c->id);
    sqlite3_bind_text(st, 2, c->embed_model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, chunk);
    const int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        rc = decode_vec(kb, st, chunk, vec, c->embed_dim, err, errcap);
    } else if (s == SQLITE_DONE) {
        ctn__errf(err, errcap, "%s: collection '%s' has no vector for chunk %" PRId64, kb->path,
                  c->name, chunk);
        rc = CTN_ENOENT;
    } else {
        rc = sqlerr(kb, "reading a vector", err, errcap);
    }
    sqlite3_finalize(st);
    return rc;
}

int ctn_kb_each_vector(ctn_kb *kb, const ctn_kb_coll *c,
                       int (*fn)(void *ud, int64_t chunk, const float *vec, int dim), void *ud,
                       char *err, size_t errcap) {
    if (c->embed_model[0] == '\0' || c->embed_dim <= 0) return no_model(kb, c, err, errcap);
    sqlite3_stmt *st;
    int rc = prepare(kb,
                     "SELECT e.chunk, e.dtype, e.dim, e.scale, e.vector FROM embeddings e"
                     " JOIN chunks k ON k.id = e.chunk JOIN documents d ON d.id = k.document"
                     " WHERE d.collection = ?1 AND e.model = ?2 ORDER BY e.chunk",
                     &st, err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_int64(st, 1, c->id);
    sqlite3_bind_text(st, 2, c->embed_model, -1, SQLITE_STATIC);
    const int dim = c->embed_dim;
    float *v = ctn__malloc((size_t)dim * sizeof *v);
    if (v == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", kb->path);
        rc = CTN_ENOMEM;
    }
    int s = SQLITE_DONE;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        const int64_t id = sqlite3_column_int64(st, 0);
        if ((rc = decode_vec(kb, st, id, v, dim, err, errcap)) < 0) break;
        rc = fn(ud, id, v, dim);
    }
    if (rc == 0 && s != SQLITE_DONE) rc = sqlerr(kb, "reading vectors", err, errcap);
    sqlite3_finalize(st);
    free(v);
    return rc;
}

int ctn_kb_check(ctn_kb *kb, char *err, size_t errcap) {
    sqlite3_stmt *st;
    int rc = prepare(kb, "PRAGMA integrity_check", &st, err, errcap);
    if (rc < 0) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(st, 0);
        if (strcmp(r, "ok") != 0) {
            ctn__errf(err, errcap, "%s: integrity check: %s", kb->path, r);
            rc = CTN_EFORMAT;
        }
    } else {
        rc = sqlerr(kb, "integrity check", err, errcap);
    }
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    /* FTS5's integrity-check is an INSERT command: SQLite refuses it on a read-only handle,
     * which says nothing about the file. */
    if (sqlite3_db_readonly(kb->db, "main") == 1) {
        ctn__errf(err, errcap, "%s: the full-text index check needs the file opened for "
                  "writing (it changes nothing)", kb->path);
        return CTN_EINVAL;
    }
    static const char *const fts[] = {
        "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)",
        "INSERT INTO chunks_tri(chunks_tri, rank) VALUES ('integrity-check', 1)",
    };
    for (size_t i = 0; i < 2; i++) {
        if (sqlite3_exec(kb->db, fts[i], NULL, NULL, NULL) != SQLITE_OK) {
            ctn__errf(err, errcap, "%s: full-text index check: %s", kb->path,
                      sqlite3_errmsg(kb->db));
            return CTN_EFORMAT;
        }
    }
    return 0;
}

/* ---- keyword search (BM25 through FTS5) ------------------------------------------------- */

/* Hangul, CJK ideographs, kana and the fullwidth forms: text the trigram index serves. */
static bool is_cjk(uint32_t c) {
    return (c >= 0x1100 && c <= 0x11FF) || (c >= 0x2E80 && c <= 0x9FFF) ||
           (c >= 0xA960 && c <= 0xA97F) || (c >= 0xAC00 && c <= 0xD7FF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFF00 && c <= 0xFFEF) ||
           (c >= 0x20000 && c <= 0x3FFFF);
}

char *ctn_kb_fts_query(const char *q, size_t n, bool trigram, bool *cjk) {
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, ""); /* an empty query is "" (no terms), not NULL */
    if (cjk != NULL) *cjk = false;
    size_t i = 0;
    while (i < n) {
        /* A word: a run of bytes that are not ASCII space, punctuation or control, nor part
         * of invalid UTF-8. Inside quotes FTS5 reads it as a phrase of its tokenizer's
         * tokens, so no operator, column filter or syntax of the user's text applies. */
        size_t a = i, cps = 0;
        while (i < n) {
            const unsigned char c = (unsigned char)q[i];
            if (c < 0x80) {
                if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                      c == '_'))
                    break;
                i++, cps++;
                continue;
            }
            uint32_t cp;
            const size_t len = ctn__utf8_decode((const unsigned char *)q + i, n - i, &cp);
            if (len == 0) break;
            if (cjk != NULL && is_cjk(cp)) *cjk = true;
            i += len, cps++;
        }
        if (i > a && (!trigram || cps >= 3)) { /* trigram: 3 characters or none match */
            if (b.len > 0) ctn_sb_puts(&b, " OR ");
            ctn_sb_puts(&b, "\"");
            ctn_sb_put(&b, q + a, i - a);
            ctn_sb_puts(&b, "\"");
        }
        if (i == a) i++; /* a separator byte */
    }
    return ctn_sb_take(&b);
}

/* ---- BM25 with the caller's k1 and b ------------------------------------------------------ */

/* FTS5's own bm25() fixes k1 = 1.2 and b = 0.75. ctn_bm25(table, k1, b) is the same formula
 * (FTS5's: idf = ln((N - n + 0.5) / (n + 0.5)), at least 1e-6; the score negated, lower is
 * better) with the two as arguments; the per-query figures (N, the average length, each
 * phrase's idf) are worked out at the first row and kept for the rest. */
typedef struct {
    double avgdl;
    int nphrase;
    double *freq; /* per phrase: its count in the row being scored */
    double idf[]; /* per phrase */
} bm25_query;

static int count_row(const Fts5ExtensionApi *api, Fts5Context *fts, void *ud) {
    (void)api, (void)fts;
    (*(sqlite3_int64 *)ud)++;
    return SQLITE_OK;
}

static bm25_query *bm25_prepare(const Fts5ExtensionApi *api, Fts5Context *fts, int *rc) {
    bm25_query *q = api->xGetAuxdata(fts, 0);
    if (q != NULL) return q;
    const int np = api->xPhraseCount(fts);
    sqlite3_int64 nrow = 0, ntok = 0;
    if ((*rc = api->xRowCount(fts, &nrow)) != SQLITE_OK ||
        (*rc = api->xColumnTotalSize(fts, -1, &ntok)) != SQLITE_OK)
        return NULL;
    q = sqlite3_malloc64(sizeof *q + 2 * (size_t)(np > 0 ? np : 1) * sizeof(double));
    if (q == NULL) {
        *rc = SQLITE_NOMEM;
        return NULL;
    }
    q->nphrase = np;
    q->freq = q->idf + (np > 0 ? np : 1);
    q->avgdl = nrow > 0 ? (double)ntok / (double)nrow : 1.0;
    for (int i = 0; i < np; i++) {
        sqlite3_int64 hit = 0;
        if ((*rc = api->xQueryPhrase(fts, i, &hit, count_row)) != SQLITE_OK) {
            sqlite3_free(q);
            return NULL;
        }
        double idf = log(((double)nrow - (double)hit + 0.5) / ((double)hit + 0.5));
        q->idf[i] = idf > 0 ? idf : 1e-6;
    }
    if ((*rc = api->xSetAuxdata(fts, q, sqlite3_free)) != SQLITE_OK) return NULL;
    return q;
}

static void bm25_fn(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx, int nv,
                    sqlite3_value **v) {
    if (nv != 2) {
        sqlite3_result_error(ctx, "ctn_bm25 takes k1 and b", -1);
        return;
    }
    const double k1 = sqlite3_value_double(v[0]), b = sqlite3_value_double(v[1]);
    int rc = SQLITE_OK;
    bm25_query *q = bm25_prepare(api, fts, &rc);
    if (q == NULL) {
        sqlite3_result_error_code(ctx, rc);
        return;
    }
    int ninst = 0, len = 0;
    if ((rc = api->xInstCount(fts, &ninst)) != SQLITE_OK ||
        (rc = api->xColumnSize(fts, -1, &len)) != SQLITE_OK) {
        sqlite3_result_error_code(ctx, rc);
        return;
    }
    for (int p = 0; p < q->nphrase; p++)
        q->freq[p] = 0;
    for (int i = 0; i < ninst; i++) {
        int ip, ic, io;
        if ((rc = api->xInst(fts, i, &ip, &ic, &io)) != SQLITE_OK) {
            sqlite3_result_error_code(ctx, rc);
            return;
        }
        if (ip >= 0 && ip < q->nphrase) q->freq[ip] += 1;
    }
    double score = 0;
    for (int p = 0; p < q->nphrase; p++) {
        const double f = q->freq[p];
        if (f > 0) score += q->idf[p] * (f * (k1 + 1)) / (f + k1 * (1 - b + b * len / q->avgdl));
    }
    sqlite3_result_double(ctx, -score);
}

/* Registers ctn_bm25 on kb's connection (FTS5 hands its API over by a pointer query). */
static int register_bm25(ctn_kb *kb, char *err, size_t errcap) {
    fts5_api *api = NULL;
    sqlite3_stmt *st;
    int rc = prepare(kb, "SELECT fts5(?1)", &st, err, errcap);
    if (rc < 0) return rc;
    sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    sqlite3_finalize(st);
    if (api == NULL || api->iVersion < 2 ||
        api->xCreateFunction(api, "ctn_bm25", NULL, bm25_fn, NULL) != SQLITE_OK) {
        ctn__errf(err, errcap, "%s: this SQLite's FTS5 cannot take a ranking function",
                  kb->path);
        return CTN_ENOTSUP;
    }
    return 0;
}

ctn_kb_bm25_opts ctn_kb_bm25_defaults(void) {
    return (ctn_kb_bm25_opts){.k1 = 1.2, .b = 0.75};
}

/* One index's best k into hits (score: -bm25, higher is better); *found of them. */
static int fts_search(ctn_kb *kb, const ctn_kb_coll *c, const char *table, const char *match,
                      const ctn_kb_bm25_opts *o, size_t k, ctn_kb_hit *hits, size_t *found,
                      char *err, size_t errcap) {
    const bool fts_own = o->k1 == 1.2 && o->b == 0.75; /* FTS5's bm25() is the same then */
    char rank[64];
    if (fts_own) snprintf(rank, sizeof rank, "bm25(%s)", table);
    else snprintf(rank, sizeof rank, "ctn_bm25(%s, ?4, ?5)", table);
    const char *cond = o->filter != NULL ? ctn__kb_filter_sql(o->filter) : "1";
    ctn_strbuf q = {0};
    ctn_sb_puts(&q, "SELECT f.rowid, ");
    ctn_sb_puts(&q, rank);
    ctn_sb_puts(&q, " AS r FROM ");
    ctn_sb_puts(&q, table);
    ctn_sb_puts(&q, " f JOIN chunks k ON k.id = f.rowid JOIN documents d ON d.id = k.document"
                    " WHERE f.");
    ctn_sb_puts(&q, table);
    ctn_sb_puts(&q, " MATCH ?1 AND d.collection = ?2 AND (");
    ctn_sb_puts(&q, cond);
    ctn_sb_puts(&q, ") ORDER BY r, f.rowid LIMIT ?3");
    char *sql = ctn_sb_take(&q);
    if (sql == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", kb->path);
        return CTN_ENOMEM;
    }
    sqlite3_stmt *st;
    int rc = prepare(kb, sql, &st, err, errcap);
    free(sql);
    if (rc < 0) return rc;
    sqlite3_bind_text(st, 1, match, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->id);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)k);
    if (!fts_own) {
        sqlite3_bind_double(st, 4, o->k1);
        sqlite3_bind_double(st, 5, o->b);
    }
    if (o->filter != NULL && ctn__kb_filter_bind(o->filter, st) != SQLITE_OK) {
        rc = sqlerr(kb, "binding the filter", err, errcap);
        sqlite3_finalize(st);
        return rc;
    }
    size_t nf = 0;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW && nf < k)
        hits[nf++] = (ctn_kb_hit){sqlite3_column_int64(st, 0), -sqlite3_column_double(st, 1)};
    if (s != SQLITE_ROW && s != SQLITE_DONE) rc = sqlerr(kb, "keyword search", err, errcap);
    sqlite3_finalize(st);
    *found = nf;
    return rc;
}

typedef struct {
    int64_t chunk;
    double score;
} contrib;

static int by_chunk(const void *a, const void *b) {
    const contrib *x = a, *y = b;
    if (x->chunk != y->chunk) return x->chunk < y->chunk ? -1 : 1;
    return x->score < y->score ? -1 : x->score > y->score; /* a fixed order for the sums */
}

static int best_first(const void *a, const void *b) {
    const ctn_kb_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

long ctn_kb_rrf(const ctn_kb_hit *const *lists, const size_t *ns, const double *w, size_t m,
                ctn_kb_hit *out, size_t k) {
    size_t total = 0;
    for (size_t l = 0; l < m; l++)
        total += ns[l];
    contrib *all = ctn__malloc((total + 1) * sizeof *all);
    if (all == NULL) return CTN_ENOMEM;
    size_t t = 0;
    for (size_t l = 0; l < m; l++)
        for (size_t r = 0; r < ns[l]; r++)
            all[t++] = (contrib){lists[l][r].chunk, w[l] / (60.0 + (double)r + 1.0)};
    qsort(all, t, sizeof *all, by_chunk);
    ctn_kb_hit *u = (ctn_kb_hit *)all; /* the same layout: summed in place */
    size_t nu = 0;
    for (size_t i = 0; i < t;) {
        const int64_t id = all[i].chunk;
        double s = 0;
        for (; i < t && all[i].chunk == id; i++)
            s += all[i].score;
        u[nu++] = (ctn_kb_hit){id, s};
    }
    qsort(u, nu, sizeof *u, best_first);
    const size_t n = nu < k ? nu : k;
    memmove(out, u, n * sizeof *out);
    free(all);
    return (long)n;
}

int ctn_kb_bm25(ctn_kb *kb, const ctn_kb_coll *c, const char *query, size_t n,
                const ctn_kb_bm25_opts *o, size_t k, ctn_kb_hit *hits, size_t *found, char *err,
                size_t errcap) {
    *found = 0;
    const ctn_kb_bm25_opts def = ctn_kb_bm25_defaults();
    if (o == NULL) o = &def;
    if (k < 1 || k > 10000) {
        ctn__errf(err, errcap, "%s: keyword search: k %zu is not from 1 to 10000", kb->path, k);
        return CTN_EINVAL;
    }
    if (!(o->k1 >= 0 && o->k1 <= 100) || !(o->b >= 0 && o->b <= 1)) {
        ctn__errf(err, errcap, "%s: keyword search: k1 must be from 0 to 100 and b from 0 to 1 "
                  "(k1 %g, b %g)", kb->path, o->k1, o->b);
        return CTN_EINVAL;
    }
    bool cjk = false;
    char *words = ctn_kb_fts_query(query, n, false, &cjk);
    char *tri = cjk ? ctn_kb_fts_query(query, n, true, NULL) : NULL;
    ctn_kb_hit *a = ctn__malloc(k * sizeof *a), *b = cjk ? ctn__malloc(k * sizeof *b) : NULL;
    int rc = 0;
    if (words == NULL || (cjk && (tri == NULL || b == NULL)) || a == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", kb->path);
        rc = CTN_ENOMEM;
    }
    size_t na = 0, nb = 0;
    if (rc == 0 && words[0] != '\0')
        rc = fts_search(kb, c, "chunks_fts", words, o, k, a, &na, err, errcap);
    if (rc == 0 && cjk && tri[0] != '\0')
        rc = fts_search(kb, c, "chunks_tri", tri, o, k, b, &nb, err, errcap);
    if (rc == 0 && nb == 0) {
        memcpy(hits, a, na * sizeof *a);
        *found = na;
    } else if (rc == 0) { /* both indexes: their lists fused */
        const ctn_kb_hit *lists[2] = {a, b};
        const size_t ns[2] = {na, nb};
        const double w[2] = {1, 1};
        const long m = ctn_kb_rrf(lists, ns, w, 2, hits, k);
        if (m < 0) {
            ctn__errf(err, errcap, "%s: out of memory", kb->path);
            rc = CTN_ENOMEM;
        } else {
            *found = (size_t)m;
        }
    }
    free(words);
    free(tri);
    free(a);
    free(b);
    return rc;
}

/* ---- metadata filters -------------------------------------------------------------------- */

int ctn_kb_filter_chunks(ctn_kb *kb, const ctn_kb_coll *c, const ctn_kb_filter *f,
                         int64_t **ids, size_t *n, char *err, size_t errcap) {
    *ids = NULL, *n = 0;
    ctn_strbuf q = {0};
    ctn_sb_puts(&q, "SELECT k.id FROM chunks k JOIN documents d ON d.id = k.document"
                    " WHERE d.collection = ?1 AND (");
    ctn_sb_puts(&q, ctn__kb_filter_sql(f));
    ctn_sb_puts(&q, ") ORDER BY k.id");
    char *sql = ctn_sb_take(&q);
    if (sql == NULL) {
        ctn__errf(err, errcap, "%s: out of memory", kb->path);
        return CTN_ENOMEM;
    }
    sqlite3_stmt *st;
    int rc = prepare(kb, sql, &st, err, errcap);
    free(sql);
    if (rc < 0) return rc;
    sqlite3_bind_int64(st, 1, c->id);
    if (ctn__kb_filter_bind(f, st) != SQLITE_OK) rc = sqlerr(kb, "binding the filter", err, errcap);
    int64_t *v = NULL;
    size_t m = 0, cap = 0;
    int s = SQLITE_DONE;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        if (m == cap) {
            size_t nc = cap ? 2 * cap : 64;
            int64_t *g = ctn__realloc(v, nc * sizeof *v);
            if (g == NULL) {
                ctn__errf(err, errcap, "%s: out of memory", kb->path);
                rc = CTN_ENOMEM;
                break;
            }
            v = g, cap = nc;
        }
        v[m++] = sqlite3_column_int64(st, 0);
    }
    if (rc == 0 && s != SQLITE_DONE) rc = sqlerr(kb, "filtering chunks", err, errcap);
    sqlite3_finalize(st);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *ids = v, *n = m;
    return 0;
}
