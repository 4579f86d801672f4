/*
 * The engine layer's public header: everything a program needs to read models and
 * tokenize text with catena's engine library (libcatena_engine).
 *
 *     char err[512];
 *     ctn_gguf *g;
 *     ctn_vocab *v;
 *     if (ctn_gguf_open(&g, "model.gguf", err, sizeof err) < 0 ||
 *         ctn_vocab_load(&v, g, err, sizeof err) < 0) { fprintf(stderr, "%s\n", err); return; }
 *     int32_t *ids; size_t n;
 *     ctn_tokenize(v, "Hello", 5, true, false, &ids, &n);
 *     free(ids);
 *     ctn_vocab_free(v);
 *     ctn_gguf_free(g);
 *
 * The engine has no Lua and no event loop in it; later layers (chains/, lua/) build on it.
 */
#ifndef CTN_ENGINE_H
#define CTN_ENGINE_H

#include "backend.h"
#include "error.h"
#include "gguf.h"
#include "vocab.h"

#endif
