/*
 * Writes a tiny llama GGUF whose greedy choice is always one given token, for the
 * command-line tests of end-of-generation handling (tests/cli/generate.sh):
 *
 *     eosmodel OUT.gguf TOKEN
 *
 * Every attention and feed-forward weight is zero, so the final hidden state is the RMS
 * normalised embedding (all ones); the output matrix is zero except row TOKEN, all ones,
 * whose logit is therefore the largest. The vocabulary is a minimal SPM one: <unk>, <s>,
 * </s> (EOS), <|eot|> (EOT, a control token), <0x0A>, then ordinary pieces.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

enum { E = 32, H = 4, FF = 32, V = 16 };

static float zeros[FF * E], ones_e[E], embd[V * E], out[V * E];

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: eosmodel OUT.gguf TOKEN\n");
        return 2;
    }
    int target = atoi(argv[2]);
    if (target < 0 || target >= V) {
        fprintf(stderr, "eosmodel: token must be in 0..%d\n", V - 1);
        return 2;
    }
    static char names[V][16];
    const char *toks[V];
    float scores[V];
    int32_t types[V];
    static const char *const fixed[] = {"<unk>", "<s>", "</s>", "<|eot|>", "<0x0A>"};
    static const int fixed_type[] = {2, 3, 3, 3, 6};
    for (int i = 0; i < V; i++) {
        if (i < 5)
            snprintf(names[i], sizeof names[i], "%s", fixed[i]);
        else
            snprintf(names[i], sizeof names[i], "\xe2\x96\x81w%d", i);
        toks[i] = names[i];
        types[i] = i < 5 ? fixed_type[i] : 1;
        scores[i] = i < 5 ? 0.0f : -(float)i;
    }
    for (int i = 0; i < E; i++)
        ones_e[i] = 1.0f;
    for (int i = 0; i < V * E; i++)
        embd[i] = 1.0f + 0.01f * (float)(i % 7);
    for (int i = 0; i < E; i++)
        out[target * E + i] = 1.0f;

    ctn_gguf_writer *w = ctn_gguf_writer_new();
    if (w == NULL) return 1;
    ctn_gguf_writer_set_str(w, "general.architecture", "llama");
    ctn_gguf_writer_set_str(w, "general.name", "eosmodel");
    ctn_gguf_writer_set_u32(w, "llama.context_length", 64);
    ctn_gguf_writer_set_u32(w, "llama.embedding_length", E);
    ctn_gguf_writer_set_u32(w, "llama.block_count", 1);
    ctn_gguf_writer_set_u32(w, "llama.feed_forward_length", FF);
    ctn_gguf_writer_set_u32(w, "llama.attention.head_count", H);
    ctn_gguf_writer_set_u32(w, "llama.attention.head_count_kv", H);
    ctn_gguf_writer_set_u32(w, "llama.rope.dimension_count", E / H);
    ctn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, V);
    ctn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CTN_GGUF_FLOAT32, scores, V);
    ctn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CTN_GGUF_INT32, types, V);
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    ctn_gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", 3);
    int64_t ev[2] = {E, V}, e1[1] = {E}, ee[2] = {E, E}, ef[2] = {E, FF}, fe[2] = {FF, E};
    ctn_gguf_writer_add_tensor(w, "token_embd.weight", CTN_TYPE_F32, 2, ev, embd);
    ctn_gguf_writer_add_tensor(w, "output_norm.weight", CTN_TYPE_F32, 1, e1, ones_e);
    ctn_gguf_writer_add_tensor(w, "output.weight", CTN_TYPE_F32, 2, ev, out);
    ctn_gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", CTN_TYPE_F32, 1, e1, ones_e);
    ctn_gguf_writer_add_tensor(w, "blk.0.ffn_norm.weight", CTN_TYPE_F32, 1, e1, ones_e);
    static const char *const sq[] = {"attn_q", "attn_k", "attn_v", "attn_output"};
    char name[64];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "blk.0.%s.weight", sq[i]);
        ctn_gguf_writer_add_tensor(w, name, CTN_TYPE_F32, 2, ee, zeros);
    }
    ctn_gguf_writer_add_tensor(w, "blk.0.ffn_gate.weight", CTN_TYPE_F32, 2, ef, zeros);
    ctn_gguf_writer_add_tensor(w, "blk.0.ffn_up.weight", CTN_TYPE_F32, 2, ef, zeros);
    ctn_gguf_writer_add_tensor(w, "blk.0.ffn_down.weight", CTN_TYPE_F32, 2, fe, zeros);
    char err[512];
    int rc = ctn_gguf_writer_write(w, argv[1], err, sizeof err);
    if (rc < 0) fprintf(stderr, "eosmodel: %s (%s)\n", err, ctn_gguf_writer_errmsg(w));
    ctn_gguf_writer_free(w);
    return rc < 0 ? 1 : 0;
}
