/*
 * Chat templates for the common model families, rendered in C (no Jinja engine): a list of
 * (role, content) messages becomes the prompt text the model was trained on.
 *
 *     ctn_chat_family f = ctn_chat_detect(gguf_chat_template); // or _from_name("chatml")
 *     ctn_chat_msg m[] = {{"system", 6, "Be brief.", 9}, {"user", 4, "Hi", 2}};
 *     char *p; size_t n; char err[128];
 *     if (ctn_chat_render(f, m, 2, 1, "<s>", "</s>", &p, &n, err, sizeof err) == 0) {
 *         ...; free(p);             // tokenize p WITHOUT adding a BOS token (see below)
 *     }
 *
 * BOS: the families whose official template writes the BOS token themselves (Llama 2,
 * Llama 3, Mistral, Gemma, DeepSeek, DeepSeek-V3) get the bos string written into the text
 * here, so the engine must tokenize the result with special tokens parsed and WITHOUT
 * adding its own BOS, or the model sees two. The others (ChatML, Phi-3, Zephyr) write none;
 * for them the tokenizer adds BOS as the vocabulary asks (add_bos_token). Passing NULL for
 * bos or eos uses the family's usual token text (below); pass "" to write nothing.
 *
 * The formats, for messages (system S, user U, assistant A, user U2) with the generation
 * prompt; llama.cpp's llm_chat_apply_template is the reference, and where it differs from
 * the official template the difference is named.
 *
 *   chatml     <|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n
 *              <|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n
 *              <|im_start|>assistant\n                                    (no BOS)
 *   llama2     <s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] U2 [/INST]
 *              BOS before every [INST] and " A </s>" around an answer as Meta's reference
 *              code (generation.py) builds it; contents are stripped. A generation prompt
 *              adds nothing: the text already ends with [/INST].
 *   llama3     <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>
 *              ...user...U<|eot_id|>...assistant...A<|eot_id|>...user...U2<|eot_id|>
 *              <|start_header_id|>assistant<|end_header_id|>\n\n     (contents trimmed)
 *   mistral    <s>[INST] S\n\nU [/INST]A</s>[INST] U2 [/INST]
 *              Mistral-7B-Instruct v0.1/v0.2: BOS once, the system message leads the
 *              next user turn, no space before an answer; nothing for a generation prompt.
 *   phi3       <|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n
 *              <|user|>\nU2<|end|>\n<|assistant|>\n                          (no BOS)
 *   gemma      <bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n
 *              A<end_of_turn>\n<start_of_turn>user\nU2<end_of_turn>\n<start_of_turn>model\n
 *              Gemma has no system role: the system text leads the next user turn; the
 *              assistant is "model"; contents trimmed.
 *   zephyr     <|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\nA</s>\n<|user|>\nU2</s>\n
 *              <|assistant|>\n                     (eos after every turn; no BOS)
 *   deepseek   <｜begin▁of▁sentence｜>S\n\nUser: U\n\nAssistant: A<｜end▁of▁sentence｜>
 *              User: U2\n\nAssistant:              (DeepSeek-LLM chat, DeepSeek-V2 chat)
 *   deepseek3  <｜begin▁of▁sentence｜>S\n\n<｜User｜>U<｜Assistant｜>A<｜end▁of▁sentence｜>
 *              <｜User｜>U2<｜Assistant｜>          (DeepSeek-V2.5/V3/R1)
 *
 * Default bos/eos texts: llama2, mistral, zephyr "<s>"/"</s>"; llama3 "<|begin_of_text|>";
 * gemma "<bos>"; deepseek, deepseek3 "<｜begin▁of▁sentence｜>"/"<｜end▁of▁sentence｜>".
 */
#ifndef CTN_CHAT_H
#define CTN_CHAT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    CTN_CHAT_UNKNOWN = 0,
    CTN_CHAT_CHATML,
    CTN_CHAT_LLAMA2,
    CTN_CHAT_LLAMA3,
    CTN_CHAT_MISTRAL,
    CTN_CHAT_PHI3,
    CTN_CHAT_GEMMA,
    CTN_CHAT_ZEPHYR,
    CTN_CHAT_DEEPSEEK,
    CTN_CHAT_DEEPSEEK3,
} ctn_chat_family;

/* Whether a message's role is one the templates render: system, user or assistant. */
bool ctn_chat_role_known(const char *role, size_t len);

/* The family of a GGUF tokenizer.chat_template (Jinja text), recognised by its distinctive
 * markers, or CTN_CHAT_UNKNOWN (also for NULL). */
ctn_chat_family ctn_chat_detect(const char *jinja);

/* "chatml", "llama2", "llama3", "mistral", "phi3", "gemma", "zephyr", "deepseek",
 * "deepseek3"; "unknown" for anything else. */
const char *ctn_chat_family_name(ctn_chat_family f);
/* The family of a name above (case does not matter), or CTN_CHAT_UNKNOWN. */
ctn_chat_family ctn_chat_family_from_name(const char *name);

/* One message; the strings are borrowed and counted (they need not end in NUL). */
typedef struct {
    const char *role; /* "system", "user" or "assistant" */
    size_t role_len;
    const char *content;
    size_t content_len;
} ctn_chat_msg;

/* Renders n messages as family f's prompt; add_generation_prompt appends the text that
 * opens the assistant's answer. On success *out gets a malloc'd NUL-terminated string (the
 * caller frees it) and *len (when not NULL) its length. Errors: CTN_EINVAL for an unknown
 * family or a role other than system/user/assistant (err names the role and the message's
 * index), CTN_ENOMEM. */
int ctn_chat_render(ctn_chat_family f, const ctn_chat_msg *msgs, size_t n,
                    int add_generation_prompt, const char *bos, const char *eos, char **out,
                    size_t *len, char *err, size_t errcap);

#endif
