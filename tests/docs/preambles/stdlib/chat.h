/* Free names of stdlib/chat.h's example (tests/docs/check_examples.sh). */
const char *gguf_chat_template;
