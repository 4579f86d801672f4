/*
 * The engine layer's public header: everything a program outside the engine needs from
 * catena's engine library (libcatena_engine): models and their files, tokenizers, the
 * generation engine (gen.h, the one way in for generation), request settings, LoRA
 * adapters and the error codes. Headers not included here are the engine's own.
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
#include "gen.h"
#include "gguf.h"
#include "lora.h"
#include "model.h"
#include "settings.h"
#include "vocab.h"

#endif
