/*
 * Chat templates (chat.h): one small renderer per family, each a loop over the messages
 * that writes what the family's official template writes. The formats are described with
 * examples in chat.h.
 */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "str.h"
#include "alloc.h"

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Writes s without leading and trailing whitespace (Jinja's trim / Python's strip). */
static void put_trim(ctn_strbuf *b, const char *s, size_t n) {
    while (n > 0 && is_space(*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_space(s[n - 1]))
        n--;
    ctn_sb_put(b, s, n);
}

enum { R_SYSTEM, R_USER, R_ASSISTANT };

static int role_index(const char *role, size_t len) {
    static const char *const names[] = {"system", "user", "assistant"};
    for (int r = 0; r < 3; r++)
        if (role != NULL && len == strlen(names[r]) && memcmp(role, names[r], len) == 0) return r;
    return -1;
}

static int role_of(const ctn_chat_msg *m) {
    return role_index(m->role, m->role_len);
}

bool ctn_chat_role_known(const char *role, size_t len) {
    return role_index(role, len) >= 0;
}

static const char *const role_names[] = {"system", "user", "assistant"};

#define CONTENT(m) (m)->content, (m)->content_len

static void chatml(ctn_strbuf *b, const ctn_chat_msg *m, const int *r, size_t n, int gen) {
    for (size_t i = 0; i < n; i++) {
        ctn_sb_puts(b, "<|im_start|>");
        ctn_sb_puts(b, role_names[r[i]]);
        ctn_sb_puts(b, "\n");
        ctn_sb_put(b, CONTENT(&m[i]));
        ctn_sb_puts(b, "<|im_end|>\n");
    }
    if (gen) ctn_sb_puts(b, "<|im_start|>assistant\n");
}

/* Meta's reference: every [INST] turn opens with BOS, an answer is " A </s>". */
static void llama2(ctn_strbuf *b, const ctn_chat_msg *m, const int *r, size_t n, const char *bos,
                   const char *eos) {
    int inside = 0;
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            ctn_sb_puts(b, bos);
            ctn_sb_puts(b, "[INST] ");
            inside = 1;
        }
        if (r[i] == R_SYSTEM) {
            ctn_sb_puts(b, "<<SYS>>\n");
            put_trim(b, CONTENT(&m[i]));
            ctn_sb_puts(b, "\n<</SYS>>\n\n");
        } else if (r[i] == R_USER) {
            put_trim(b, CONTENT(&m[i]));
            ctn_sb_puts(b, " [/INST]");
        } else {
            ctn_sb_puts(b, " ");
            put_trim(b, CONTENT(&m[i]));
            ctn_sb_puts(b, " ");
            ctn_sb_puts(b, eos);
            inside = 0;
        }
    }
}

static void llama3(ctn_strbuf *b, const ctn_chat_msg *m, const int *r, size_t n, int gen,
                   const char *bos) {
    ctn_sb_puts(b, bos);
    for (size_t i = 0; i < n; i++) {
        ctn_sb_puts(b, "<|start_header_id|>");
        ctn_sb_puts(b, role_names[r[i]]);
        ctn_sb_puts(b, "<|end_header_id|>\n\n");
        put_trim(b, CONTENT(&m[i]));
        ctn_sb_puts(b, "<|eot_id|>");
    }
    if (gen) ctn_sb_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void mistral(ctn_strbuf *b, const ctn_chat_msg *m, const int *r, size_t n, const char *bos,
                    const char *eos) {
    ctn_sb_puts(b, bos);
    int inside = 0;
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            ctn_sb_puts(b, "[INST] ");
            inside = 1;
        }
        if (r[i] == R_SYSTEM) {
            ctn_sb_put(b, CONTENT(&m[i]));
            ctn_sb_puts(b, "\n\n");
        } else if (r[i] == R_USER) {
            ctn_sb_put(b, CONTENT(&m[i]));
            ctn_sb_puts(b, " [/INST]");
        } else {
            ctn_sb_put(b, CONTENT(&m[i]));
            ctn_sb_puts(b, eos);
            inside = 0;
        }
    }
}

/* Phi-3 and Zephyr share the shape "<|role|>\ncontent END\n"; only END differs. */
static void tagged(ctn_strbuf *b, const ctn_chat_msg *m, const int *r, size_t n, int gen,
                   const char *end) {
    for (size_t i = 0; i < n; i++) {
        ctn_sb_puts(b, "<|");
        ctn_sb_puts(b, role_names[r[i]]);
        ctn_sb_puts(b, "|>\n");
        ctn_sb_put(b, CONTENT(&m[i]));
        ctn_sb_puts(b, end);
        ctn_sb_puts(b, "\n");
    }
    if (gen) ctn_sb_puts(b, "<|assistant|>\n");
}

/* Gemma has no system role: system text waits and leads the next user turn. */
static void gemma(ctn_strbuf *b, const ctn_chat_msg *m, const int *r, size_t n, int gen,
                  const char *bos) {
    ctn_sb_puts(b, bos);
    size_t pending = n; /* the first system message not yet written, or n */
    for (size_t i = 0; i < n; i++) {
        if (r[i] == R_SYSTEM) {
            if (pending == n) pending = i;
            continue;
        }
        int model = r[i] == R_ASSISTANT;
        ctn_sb_puts(b, model ? "<start_of_turn>model\n" : "<start_of_turn>user\n");
        if (!model && pending < n) {
            /* Several system messages join as llama.cpp joins them: trimmed, back to
             * back; an empty one adds nothing. */
            size_t before = b->len;
            for (size_t k = pending; k < i; k++)
                if (r[k] == R_SYSTEM) put_trim(b, CONTENT(&m[k]));
            if (b->len > before) ctn_sb_puts(b, "\n\n");
            pending = n;
        }
        put_trim(b, CONTENT(&m[i]));
        ctn_sb_puts(b, "<end_of_turn>\n");
    }
    if (gen) ctn_sb_puts(b, "<start_of_turn>model\n");
}

static void deepseek(ctn_strbuf *b, const ctn_chat_msg *m, const int *r, size_t n, int gen,
                     const char *bos, const char *eos) {
    ctn_sb_puts(b, bos);
    for (size_t i = 0; i < n; i++) {
        if (r[i] == R_USER) {
            ctn_sb_puts(b, "User: ");
            ctn_sb_put(b, CONTENT(&m[i]));
            ctn_sb_puts(b, "\n\n");
        } else if (r[i] == R_ASSISTANT) {
            ctn_sb_puts(b, "Assistant: ");
            ctn_sb_put(b, CONTENT(&m[i]));
            ctn_sb_puts(b, eos);
        } else {
            ctn_sb_put(b, CONTENT(&m[i]));
            ctn_sb_puts(b, "\n\n");
        }
    }
    if (gen) ctn_sb_puts(b, "Assistant:");
}

#define DS_USER "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"
#define DS_ASSISTANT                                                                               \
    "<\xEF\xBD\x9C"                                                                                \
    "Assistant\xEF\xBD\x9C>"
#define DS_BOS                                                                                     \
    "<\xEF\xBD\x9C"                                                                                \
    "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define DS_EOS                                                                                     \
    "<\xEF\xBD\x9C"                                                                                \
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"

static void deepseek3(ctn_strbuf *b, const ctn_chat_msg *m, const int *r, size_t n, int gen,
                      const char *bos, const char *eos) {
    ctn_sb_puts(b, bos);
    for (size_t i = 0; i < n; i++) {
        if (r[i] == R_SYSTEM) {
            ctn_sb_put(b, CONTENT(&m[i]));
            ctn_sb_puts(b, "\n\n");
        } else if (r[i] == R_USER) {
            ctn_sb_puts(b, DS_USER);
            ctn_sb_put(b, CONTENT(&m[i]));
        } else {
            ctn_sb_puts(b, DS_ASSISTANT);
            ctn_sb_put(b, CONTENT(&m[i]));
            ctn_sb_puts(b, eos);
        }
    }
    if (gen) ctn_sb_puts(b, DS_ASSISTANT);
}

static const char *const family_names[] = {
    "unknown", "chatml", "llama2", "llama3",   "mistral",
    "phi3",    "gemma",  "zephyr", "deepseek", "deepseek3",
};

#define NFAMILIES (sizeof family_names / sizeof family_names[0])

const char *ctn_chat_family_name(ctn_chat_family f) {
    return (unsigned)f < NFAMILIES ? family_names[f] : "unknown";
}

static int same_nocase(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a >= 'A' && *a <= 'Z' ? (char)(*a + 32) : *a;
        if (x != *b) return 0;
    }
    return *a == *b;
}

ctn_chat_family ctn_chat_family_from_name(const char *name) {
    if (name == NULL) return CTN_CHAT_UNKNOWN;
    for (size_t i = 1; i < NFAMILIES; i++)
        if (same_nocase(name, family_names[i])) return (ctn_chat_family)i;
    return CTN_CHAT_UNKNOWN;
}

/* The markers are checked from the most specific down: a Phi-3 and a Zephyr template both
 * hold <|user|>, a Llama 2 and a Mistral template both hold [INST]. */
ctn_chat_family ctn_chat_detect(const char *t) {
    if (t == NULL) return CTN_CHAT_UNKNOWN;
#define HAS(s) (strstr(t, (s)) != NULL)
    if (HAS("<|im_start|>")) return CTN_CHAT_CHATML;
    if (HAS("<|start_header_id|>")) return CTN_CHAT_LLAMA3;
    if (HAS("<start_of_turn>")) return CTN_CHAT_GEMMA;
    if (HAS(DS_USER) || HAS(DS_ASSISTANT)) return CTN_CHAT_DEEPSEEK3;
    if (HAS("<|user|>") && HAS("<|end|>")) return CTN_CHAT_PHI3;
    /* GLM-4 also has <|user|> and <|assistant|>; its "[gMASK]" prefix tells it apart. */
    if (HAS("<|user|>") && !HAS("[gMASK]") &&
        (HAS("</s>") || HAS("eos_token") || HAS("<|endoftext|>")))
        return CTN_CHAT_ZEPHYR;
    if (HAS("[INST]")) return HAS("<<SYS>>") ? CTN_CHAT_LLAMA2 : CTN_CHAT_MISTRAL;
    if (HAS("'User: '") && HAS("'Assistant:")) return CTN_CHAT_DEEPSEEK;
#undef HAS
    return CTN_CHAT_UNKNOWN;
}

int ctn_chat_render(ctn_chat_family f, const ctn_chat_msg *msgs, size_t n,
                    int add_generation_prompt, const char *bos, const char *eos, char **out,
                    size_t *len, char *err, size_t errcap) {
    if (out != NULL) *out = NULL;
    if (len != NULL) *len = 0;
    if (out == NULL || (msgs == NULL && n > 0)) return CTN_EINVAL;
    if (f <= CTN_CHAT_UNKNOWN || (unsigned)f >= NFAMILIES) {
        if (err != NULL && errcap > 0)
            ctn__errf(err, errcap, "unknown chat template family %d", (int)f);
        return CTN_EINVAL;
    }
    int *r = ctn__malloc((n ? n : 1) * sizeof *r);
    if (r == NULL) goto nomem;
    for (size_t i = 0; i < n; i++) {
        r[i] = role_of(&msgs[i]);
        if (r[i] < 0) {
            if (err != NULL && errcap > 0) {
                size_t rl = msgs[i].role ? msgs[i].role_len : 0;
                ctn__errf(err, errcap,
                          "message %zu has role '%.*s'; the roles are system, user and "
                          "assistant",
                          i + 1, (int)(rl > 40 ? 40 : rl), msgs[i].role ? msgs[i].role : "");
            }
            free(r);
            return CTN_EINVAL;
        }
        if (msgs[i].content == NULL && msgs[i].content_len > 0) {
            if (err != NULL && errcap > 0) ctn__errf(err, errcap, "message %zu has no content", i);
            free(r);
            return CTN_EINVAL;
        }
    }
    int ds = f == CTN_CHAT_DEEPSEEK || f == CTN_CHAT_DEEPSEEK3;
    if (bos == NULL)
        bos = f == CTN_CHAT_LLAMA3  ? "<|begin_of_text|>"
              : f == CTN_CHAT_GEMMA ? "<bos>"
              : ds                  ? DS_BOS
                                    : "<s>";
    if (eos == NULL) eos = ds ? DS_EOS : "</s>";
    ctn_strbuf b = {0};
    int gen = add_generation_prompt != 0;
    switch (f) {
    case CTN_CHAT_CHATML: chatml(&b, msgs, r, n, gen); break;
    case CTN_CHAT_LLAMA2: llama2(&b, msgs, r, n, bos, eos); break;
    case CTN_CHAT_LLAMA3: llama3(&b, msgs, r, n, gen, bos); break;
    case CTN_CHAT_MISTRAL: mistral(&b, msgs, r, n, bos, eos); break;
    case CTN_CHAT_PHI3: tagged(&b, msgs, r, n, gen, "<|end|>"); break;
    case CTN_CHAT_GEMMA: gemma(&b, msgs, r, n, gen, bos); break;
    case CTN_CHAT_ZEPHYR: tagged(&b, msgs, r, n, gen, eos); break;
    case CTN_CHAT_DEEPSEEK: deepseek(&b, msgs, r, n, gen, bos, eos); break;
    case CTN_CHAT_DEEPSEEK3: deepseek3(&b, msgs, r, n, gen, bos, eos); break;
    default: break;
    }
    free(r);
    const size_t blen = b.len;
    *out = ctn_sb_take(&b); /* "" when nothing was written */
    if (*out == NULL) goto nomem;
    if (len != NULL) *len = blen;
    return 0;
nomem:
    if (err != NULL && errcap > 0) ctn__errf(err, errcap, "out of memory");
    return CTN_ENOMEM;
}
