/*
 * Chat templates (stdlib/chat.h): every family renders (system, user, assistant, user) with
 * the generation prompt to the exact text its official template (and llama.cpp) produces,
 * detection from real template markers, names, and bad roles.
 */
#include <stdlib.h>

#include "chat.h"
#include "error.h"
#include "test.h"

#define MSG(r, c)                                                                                  \
    { r, sizeof r - 1, c, sizeof c - 1 }

static const ctn_chat_msg conv[] = {
    MSG("system", "You are terse."),
    MSG("user", "Hi"),
    MSG("assistant", "Hello."),
    MSG("user", "2+2?"),
};

static void check_render(ctn_chat_family f, const ctn_chat_msg *m, size_t n, int gen,
                         const char *bos, const char *eos, const char *want) {
    char *out = NULL, err[160] = "";
    size_t len = 0;
    int rc = ctn_chat_render(f, m, n, gen, bos, eos, &out, &len, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    CHECK_STR(out, want);
    CHECK_EQ_INT(len, out ? strlen(out) : 0);
    free(out);
}

#define DS_BOS                                                                                     \
    "<\xEF\xBD\x9C"                                                                                \
    "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define DS_EOS                                                                                     \
    "<\xEF\xBD\x9C"                                                                                \
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define DS_USER "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"
#define DS_ASSISTANT                                                                               \
    "<\xEF\xBD\x9C"                                                                                \
    "Assistant\xEF\xBD\x9C>"

TEST(chatml) {
    check_render(CTN_CHAT_CHATML, conv, 4, 1, NULL, NULL,
                 "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                 "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                 "<|im_start|>assistant\n");
    check_render(CTN_CHAT_CHATML, conv + 1, 1, 0, NULL, NULL, "<|im_start|>user\nHi<|im_end|>\n");
}

TEST(llama2) {
    check_render(CTN_CHAT_LLAMA2, conv, 4, 1, "<s>", "</s>",
                 "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello. </s>"
                 "<s>[INST] 2+2? [/INST]");
    /* No system message; contents are stripped; the generation prompt adds nothing. */
    const ctn_chat_msg m[] = {MSG("user", "  Hi \n")};
    check_render(CTN_CHAT_LLAMA2, m, 1, 0, "<s>", "</s>", "<s>[INST] Hi [/INST]");
    check_render(CTN_CHAT_LLAMA2, m, 1, 1, "", "</s>", "[INST] Hi [/INST]");
}

TEST(llama3) {
    check_render(CTN_CHAT_LLAMA3, conv, 4, 1, "<|begin_of_text|>", NULL,
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are "
                 "terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n");
    const ctn_chat_msg m[] = {MSG("user", "\n Hi  ")};
    check_render(CTN_CHAT_LLAMA3, m, 1, 0, NULL, NULL,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(mistral) {
    check_render(CTN_CHAT_MISTRAL, conv, 4, 1, "<s>", "</s>",
                 "<s>[INST] You are terse.\n\nHi [/INST]Hello.</s>[INST] 2+2? [/INST]");
    check_render(CTN_CHAT_MISTRAL, conv + 1, 1, 0, NULL, NULL, "<s>[INST] Hi [/INST]");
}

TEST(phi3) {
    check_render(CTN_CHAT_PHI3, conv, 4, 1, "<s>", "<|endoftext|>",
                 "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
                 "Hello.<|end|>\n<|user|>\n2+2?<|end|>\n<|assistant|>\n");
}

TEST(gemma) {
    check_render(CTN_CHAT_GEMMA, conv, 4, 1, "<bos>", "<eos>",
                 "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
                 "<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\n2+2?"
                 "<end_of_turn>\n<start_of_turn>model\n");
    /* The system text waits for the next user turn, past a model turn; two join. */
    const ctn_chat_msg m[] = {MSG("assistant", "A"), MSG("system", " S1 "), MSG("system", "S2"),
                              MSG("assistant", "B"), MSG("user", "U"),      MSG("system", "  ")};
    check_render(CTN_CHAT_GEMMA, m, 6, 0, "", NULL,
                 "<start_of_turn>model\nA<end_of_turn>\n<start_of_turn>model\nB<end_of_turn>\n"
                 "<start_of_turn>user\nS1S2\n\nU<end_of_turn>\n");
}

TEST(zephyr) {
    check_render(CTN_CHAT_ZEPHYR, conv, 4, 1, "<s>", "</s>",
                 "<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello.</s>\n"
                 "<|user|>\n2+2?</s>\n<|assistant|>\n");
}

TEST(deepseek) {
    check_render(CTN_CHAT_DEEPSEEK, conv, 4, 1, NULL, NULL,
                 DS_BOS "You are terse.\n\nUser: Hi\n\nAssistant: Hello." DS_EOS
                        "User: 2+2?\n\nAssistant:");
    check_render(CTN_CHAT_DEEPSEEK3, conv, 4, 1, NULL, NULL,
                 DS_BOS "You are terse.\n\n" DS_USER "Hi" DS_ASSISTANT "Hello." DS_EOS DS_USER
                        "2+2?" DS_ASSISTANT);
    check_render(CTN_CHAT_DEEPSEEK3, conv + 1, 1, 0, "", NULL, DS_USER "Hi");
}

TEST(counted_strings_and_empty_lists) {
    /* Contents are counted: bytes past content_len are not read. */
    const ctn_chat_msg m[] = {{"userXX", 4, "abcdef", 3}};
    check_render(CTN_CHAT_CHATML, m, 1, 0, NULL, NULL, "<|im_start|>user\nabc<|im_end|>\n");
    check_render(CTN_CHAT_CHATML, NULL, 0, 1, NULL, NULL, "<|im_start|>assistant\n");
    check_render(CTN_CHAT_PHI3, NULL, 0, 0, NULL, NULL, "");
}

TEST(bad_roles_and_families) {
    const ctn_chat_msg m[] = {MSG("user", "a"), MSG("tool", "b")};
    char *out = (char *)1, err[160] = "";
    size_t len = 9;
    CHECK_EQ_INT(ctn_chat_render(CTN_CHAT_CHATML, m, 2, 1, NULL, NULL, &out, &len, err, sizeof err),
                 CTN_EINVAL);
    CHECK(out == NULL && len == 0);
    CHECK_STR(err, "message 2 has role 'tool'; the roles are system, user and assistant");
    const ctn_chat_msg u[] = {MSG("User", "a")};
    CHECK_EQ_INT(ctn_chat_render(CTN_CHAT_LLAMA3, u, 1, 1, NULL, NULL, &out, &len, err, sizeof err),
                 CTN_EINVAL);
    CHECK_CONTAINS(err, "message 1 has role 'User'"); /* counted from 1, as everywhere */
    CHECK_EQ_INT(
        ctn_chat_render(CTN_CHAT_UNKNOWN, m, 1, 1, NULL, NULL, &out, &len, err, sizeof err),
        CTN_EINVAL);
    CHECK_CONTAINS(err, "unknown chat template family");
    CHECK_EQ_INT(
        ctn_chat_render((ctn_chat_family)99, m, 1, 1, NULL, NULL, &out, &len, err, sizeof err),
        CTN_EINVAL);
}

TEST(names_round_trip) {
    const char *names[] = {"chatml", "llama2", "llama3",   "mistral",  "phi3",
                           "gemma",  "zephyr", "deepseek", "deepseek3"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ctn_chat_family f = ctn_chat_family_from_name(names[i]);
        CHECK(f != CTN_CHAT_UNKNOWN);
        CHECK_STR(ctn_chat_family_name(f), names[i]);
    }
    CHECK_EQ_INT(ctn_chat_family_from_name("ChatML"), CTN_CHAT_CHATML);
    CHECK_EQ_INT(ctn_chat_family_from_name("llama"), CTN_CHAT_UNKNOWN);
    CHECK_EQ_INT(ctn_chat_family_from_name(NULL), CTN_CHAT_UNKNOWN);
    CHECK_STR(ctn_chat_family_name(CTN_CHAT_UNKNOWN), "unknown");
    CHECK_STR(ctn_chat_family_name((ctn_chat_family)42), "unknown");
}

TEST(detect_from_template_markers) {
    /* Shortened from the templates shipped in the models' GGUF files. */
    CHECK_EQ_INT(ctn_chat_detect("{% for message in messages %}{{'<|im_start|>' + message['role']"
                                 " + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"),
                 CTN_CHAT_CHATML);
    CHECK_EQ_INT(ctn_chat_detect("{% set content = '<|start_header_id|>' + message['role'] + "
                                 "'<|end_header_id|>\\n\\n'+ message['content'] | trim + "
                                 "'<|eot_id|>' %}"),
                 CTN_CHAT_LLAMA3);
    CHECK_EQ_INT(ctn_chat_detect("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ "
                                 "raise_exception('System role not supported') }}{% endif %}"
                                 "{{ '<start_of_turn>' + role + '\\n' }}"),
                 CTN_CHAT_GEMMA);
    CHECK_EQ_INT(ctn_chat_detect("{{'<|user|>' + '\\n' + message['content'] + '<|end|>' + "
                                 "'\\n' + '<|assistant|>' + '\\n'}}"),
                 CTN_CHAT_PHI3);
    CHECK_EQ_INT(ctn_chat_detect("{% if message['role'] == 'user' %}\\n{{ '<|user|>\\n' + "
                                 "message['content'] + eos_token }}\\n{% elif %}{{ "
                                 "'<|assistant|>' }}"),
                 CTN_CHAT_ZEPHYR);
    CHECK_EQ_INT(ctn_chat_detect("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
                                 "{% set content = '<<SYS>>\\n' + system_message + "
                                 "'\\n<</SYS>>\\n\\n' %}"),
                 CTN_CHAT_LLAMA2);
    CHECK_EQ_INT(ctn_chat_detect("{{ bos_token }}{% for message in messages %}{{ '[INST] ' + "
                                 "message['content'] + ' [/INST]' }}{% endfor %}"),
                 CTN_CHAT_MISTRAL);
    CHECK_EQ_INT(ctn_chat_detect("{% if message['role'] == 'user' %}{{ 'User: ' + "
                                 "message['content'] + '\\n\\n' }}{% elif %}{{ 'Assistant: ' + "
                                 "message['content'] + eos_token }}"),
                 CTN_CHAT_DEEPSEEK);
    CHECK_EQ_INT(ctn_chat_detect("{{'<\xEF\xBD\x9CUser\xEF\xBD\x9C>' + message['content']}}"
                                 "{{'<\xEF\xBD\x9C"
                                 "Assistant\xEF\xBD\x9C>'}}"),
                 CTN_CHAT_DEEPSEEK3);
    CHECK_EQ_INT(ctn_chat_detect("{{ '<|user|>\\n' + content + '<|endoftext|>' }}"),
                 CTN_CHAT_ZEPHYR);
    CHECK_EQ_INT(ctn_chat_detect("[gMASK]<sop>{{ '<|user|>' }}{{ '<|assistant|>' }}</s>"),
                 CTN_CHAT_UNKNOWN);
    CHECK_EQ_INT(ctn_chat_detect("{{ messages }}"), CTN_CHAT_UNKNOWN);
    CHECK_EQ_INT(ctn_chat_detect(""), CTN_CHAT_UNKNOWN);
    CHECK_EQ_INT(ctn_chat_detect(NULL), CTN_CHAT_UNKNOWN);
}

int main(void) {
    RUN(chatml);
    RUN(llama2);
    RUN(llama3);
    RUN(mistral);
    RUN(phi3);
    RUN(gemma);
    RUN(zephyr);
    RUN(deepseek);
    RUN(counted_strings_and_empty_lists);
    RUN(bad_roles_and_families);
    RUN(names_round_trip);
    RUN(detect_from_template_markers);
    return test_summary();
}
