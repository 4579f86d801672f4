/*
 * The settings validator (engine/settings.h): every key takes what its row of the table
 * says and refuses the rest with a message that names the key and what it must be; text
 * is read by the key's kind; sizes have one grammar; unknown keys get a suggestion; and
 * docs/settings.md lists every key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "settings.h"
#include "test.h"

static char err[512];

static int set_num(ctn_settings *s, const char *k, double d) {
    const ctn_setting_value v = {.kind = CTN_SET_NUM, .d = d};
    return ctn_settings_set(s, k, &v, err, sizeof err);
}

static int set_int(ctn_settings *s, const char *k, int64_t i) {
    const ctn_setting_value v = {.kind = CTN_SET_INT, .i = i};
    return ctn_settings_set(s, k, &v, err, sizeof err);
}

static int set_str(ctn_settings *s, const char *k, const char *str) {
    const ctn_setting_value v = {.kind = CTN_SET_STR, .s = str};
    return ctn_settings_set(s, k, &v, err, sizeof err);
}

TEST(defaults_are_the_engines) {
    ctn_settings s;
    ctn_settings_init(&s);
    const ctn_gen_request r = ctn_gen_request_default();
    CHECK(s.max_tokens == r.max_tokens && s.sampling.temp == r.sampling.temp);
    CHECK(s.lora == NULL && s.lora_scale == 1.0f && s.n_stop == 0 && s.given == 0);
    ctn_gen_request q = ctn_gen_request_default();
    CHECK_EQ_INT(set_num(&s, "temperature", 0.5), 0);
    CHECK_EQ_INT(set_int(&s, "max_tokens", 7), 0);
    CHECK_EQ_INT(set_str(&s, "stop", "END"), 0);
    ctn_settings_apply(&s, &q);
    CHECK(q.sampling.temp == 0.5f && q.max_tokens == 7 && q.n_stop == 1);
    CHECK_STR(q.stop[0], "END");
    CHECK(ctn_settings_given(&s, CTN_SET_TEMPERATURE) && !ctn_settings_given(&s, CTN_SET_TOP_K));
}

TEST(ranges_and_messages) {
    ctn_settings s;
    ctn_settings_init(&s);
    CHECK_EQ_INT(set_num(&s, "top_p", 1.5), CTN_ERANGE);
    CHECK_STR(err, "setting 'top_p' must be a number from 0 to 1, not 1.5");
    CHECK_EQ_INT(set_num(&s, "top_p", 1.0), 0);
    CHECK_EQ_INT(set_num(&s, "temperature", -0.1), CTN_ERANGE);
    CHECK_CONTAINS(err, "'temperature' must be a number from 0 to 100");
    CHECK_EQ_INT(set_num(&s, "repeat_penalty", 0), CTN_ERANGE);
    CHECK_CONTAINS(err, "a number above 0");
    CHECK_EQ_INT(set_num(&s, "repeat_penalty", 1.1), 0);
    CHECK_EQ_INT(set_int(&s, "max_tokens", -2), CTN_ERANGE);
    CHECK_EQ_INT(set_int(&s, "max_tokens", 0), 0); /* the prompt only: valid everywhere */
    CHECK_EQ_INT(s.max_tokens, 0);
    const ctn_setting_value null = {.kind = CTN_SET_NULL};
    CHECK_EQ_INT(ctn_settings_set(&s, "max_tokens", &null, err, sizeof err), 0);
    CHECK_EQ_INT(s.max_tokens, -1);
    CHECK_EQ_INT(ctn_settings_set(&s, "top_k", &null, err, sizeof err), CTN_ETYPE);
    CHECK_STR(err, "setting 'top_k' must be an integer from 0 to 2147483647, not null");
    /* A whole number in a float is an integer; a fraction is not. */
    CHECK_EQ_INT(set_num(&s, "top_k", 40.0), 0);
    CHECK_EQ_INT(s.sampling.top_k, 40);
    CHECK_EQ_INT(set_num(&s, "top_k", 4.5), CTN_ETYPE);
    CHECK_EQ_INT(set_str(&s, "temperature", "hot"), CTN_ETYPE);
    CHECK_CONTAINS(err, "not a string");
    CHECK_EQ_INT(set_int(&s, "threads", 0), CTN_ERANGE);
    CHECK_STR(err, "setting 'threads' must be an integer from 1 to 1024, not 0");
    CHECK_EQ_INT(set_int(&s, "threads", 1024), 0);
    CHECK_EQ_INT(set_int(&s, "threads", 1025), CTN_ERANGE);
    CHECK_EQ_INT(set_str(&s, "lora", ""), CTN_ERANGE);
    CHECK_EQ_INT(ctn_settings_set(&s, "lora", &null, err, sizeof err), 0);
    CHECK(s.lora == NULL);
    const ctn_setting_value yes = {.kind = CTN_SET_BOOL, .b = true};
    CHECK_EQ_INT(ctn_settings_set(&s, "ignore_eos", &yes, err, sizeof err), 0);
    CHECK(s.ignore_eos);
    CHECK_EQ_INT(set_int(&s, "ignore_eos", 1), CTN_ETYPE);
    /* Nothing changes on failure. */
    CHECK_EQ_INT(set_num(&s, "min_p", 0.2), 0);
    CHECK_EQ_INT(set_num(&s, "min_p", 2), CTN_ERANGE);
    CHECK(s.sampling.min_p == 0.2f);
}

TEST(stop_strings) {
    ctn_settings s;
    ctn_settings_init(&s);
    ctn_setting_value items[17];
    for (int i = 0; i < 17; i++)
        items[i] = (ctn_setting_value){.kind = CTN_SET_STR, .s = "x"};
    ctn_setting_value list = {.kind = CTN_SET_LIST, .items = items, .n = 16};
    CHECK_EQ_INT(ctn_settings_set(&s, "stop", &list, err, sizeof err), 0);
    CHECK_EQ_INT(s.n_stop, 16);
    list.n = 17;
    CHECK_EQ_INT(ctn_settings_set(&s, "stop", &list, err, sizeof err), CTN_ERANGE);
    CHECK_CONTAINS(err, "at most 16");
    CHECK_CONTAINS(err, "17 of them");
    items[1].s = "";
    list.n = 2;
    CHECK_EQ_INT(ctn_settings_set(&s, "stop", &list, err, sizeof err), CTN_ERANGE);
    CHECK_CONTAINS(err, "item 2 is empty");
    items[1] = (ctn_setting_value){.kind = CTN_SET_INT, .i = 3};
    CHECK_EQ_INT(ctn_settings_set(&s, "stop", &list, err, sizeof err), CTN_ETYPE);
    CHECK_CONTAINS(err, "item 2 is an integer");
    /* The byte limit is the stop matcher's. */
    static char big[20000];
    memset(big, 'a', sizeof big - 1);
    CHECK_EQ_INT(set_str(&s, "stop", big), CTN_ERANGE);
    CHECK_CONTAINS(err, "19999 bytes");
    CHECK_EQ_INT(s.n_stop, 16); /* unchanged */
    /* From text, one string a call. */
    ctn_settings_init(&s);
    CHECK_EQ_INT(ctn_settings_parse(&s, "stop", "A", err, sizeof err), 0);
    CHECK_EQ_INT(ctn_settings_parse(&s, "stop", "B", err, sizeof err), 0);
    CHECK(s.n_stop == 2 && !strcmp(s.stop[0], "A") && !strcmp(s.stop[1], "B"));
}

TEST(text_is_read_by_kind) {
    ctn_settings s;
    ctn_settings_init(&s);
    CHECK_EQ_INT(ctn_settings_parse(&s, "max_tokens", "64", err, sizeof err), 0);
    CHECK_EQ_INT(s.max_tokens, 64);
    CHECK_EQ_INT(ctn_settings_parse(&s, "max_tokens", "none", err, sizeof err), 0);
    CHECK_EQ_INT(s.max_tokens, -1);
    CHECK_EQ_INT(ctn_settings_parse(&s, "max_tokens", "-3", err, sizeof err), CTN_ERANGE);
    CHECK_EQ_INT(ctn_settings_parse(&s, "max_tokens", "12x", err, sizeof err), CTN_ETYPE);
    CHECK_STR(err, "setting 'max_tokens' must be an integer from -1 to 1073741824, or null, "
                   "not '12x'");
    CHECK_EQ_INT(ctn_settings_parse(&s, "temperature", "abc", err, sizeof err), CTN_ETYPE);
    CHECK_EQ_INT(ctn_settings_parse(&s, "temperature", "inf", err, sizeof err), CTN_ETYPE);
    CHECK_EQ_INT(ctn_settings_parse(&s, "temperature", "0.25", err, sizeof err), 0);
    CHECK(s.sampling.temp == 0.25f);
    CHECK_EQ_INT(ctn_settings_parse(&s, "seed", "18446744073709551615", err, sizeof err), 0);
    CHECK(s.sampling.seed == UINT64_MAX);
    CHECK_EQ_INT(ctn_settings_parse(&s, "seed", "-1", err, sizeof err), CTN_ETYPE);
    CHECK_EQ_INT(ctn_settings_parse(&s, "seed", "18446744073709551616", err, sizeof err),
                 CTN_ERANGE);
    CHECK_EQ_INT(ctn_settings_parse(&s, "ignore_eos", "true", err, sizeof err), 0);
    CHECK_EQ_INT(ctn_settings_parse(&s, "ignore_eos", "yes", err, sizeof err), CTN_ETYPE);
    CHECK_EQ_INT(ctn_settings_parse(&s, "kv_memory", "512M", err, sizeof err), 0);
    CHECK_EQ_INT(s.kv_memory, 512LL << 20);
    CHECK_EQ_INT(ctn_settings_parse(&s, "kv_memory", "lots", err, sizeof err), CTN_ERANGE);
    CHECK_CONTAINS(err, "setting 'kv_memory' must be a size in bytes");
    CHECK_EQ_INT(ctn_settings_parse(&s, "lora", "a.gguf", err, sizeof err), 0);
    CHECK_STR(s.lora, "a.gguf");
}

TEST(sizes) {
    const struct {
        const char *text;
        int64_t want; /* -1: refused */
    } cases[] = {
        {"1", 1},           {"4096", 4096},        {"64K", 65536},   {"64k", 65536},
        {"64KB", 65536},    {"64KiB", 65536},      {"512M", 512LL << 20},
        {"1.5G", 3LL << 29}, {"2T", 2LL << 40},     {"100B", 100},    {"0", -1},
        {"-1M", -1},        {"+1M", -1},           {"", -1},         {"M", -1},
        {"1.5", -1},        {"12Q", -1},           {"1MBs", -1},     {"1Mi", -1},
        {"2000T", -1},      {"nan", -1},           {"inf", -1},      {" 1", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t v = 0;
        const int rc = ctn_parse_size(cases[i].text, &v);
        if (cases[i].want < 0) {
            CHECK_EQ_INT(rc, CTN_EINVAL);
        } else {
            CHECK_EQ_INT(rc, 0);
            CHECK_EQ_INT(v, cases[i].want);
        }
        if ((cases[i].want < 0) != (rc < 0)) printf("  size '%s'\n", cases[i].text);
    }
    ctn_settings s;
    ctn_settings_init(&s);
    CHECK_EQ_INT(set_int(&s, "lora_budget", 1 << 20), 0);
    CHECK_EQ_INT(s.lora_budget, 1 << 20);
    CHECK_EQ_INT(set_int(&s, "lora_budget", 0), CTN_ERANGE);
    CHECK_EQ_INT(set_num(&s, "lora_budget", 0.5), CTN_ETYPE);
}

TEST(unknown_keys_get_suggestions) {
    ctn_settings s;
    ctn_settings_init(&s);
    CHECK_EQ_INT(set_num(&s, "temprature", 1), CTN_ENOENT);
    CHECK_STR(err, "unknown setting 'temprature' (did you mean 'temperature'?)");
    CHECK_EQ_INT(set_num(&s, "max_token", 1), CTN_ENOENT);
    CHECK_CONTAINS(err, "did you mean 'max_tokens'?");
    CHECK_EQ_INT(set_num(&s, "topp", 1), CTN_ENOENT);
    CHECK_CONTAINS(err, "did you mean 'top_p'?");
    CHECK_EQ_INT(set_num(&s, "colour", 1), CTN_ENOENT);
    CHECK_STR(err, "unknown setting 'colour'");
    CHECK_EQ_INT(ctn_settings_parse(&s, "sed", "1", err, sizeof err), CTN_ENOENT);
    CHECK_CONTAINS(err, "did you mean 'seed'?");
    CHECK_EQ_INT(ctn_settings_key("lora_scale"), CTN_SET_LORA_SCALE);
    CHECK_EQ_INT(ctn_settings_key("nope"), -1);
}

/* docs/settings.md is the table users read: it names every key. */
TEST(docs_list_every_key) {
    FILE *f = fopen("docs/settings.md", "rb");
    CHECK(f != NULL);
    if (f == NULL) return;
    static char doc[65536];
    const size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    const ctn_setting_info *t = ctn_settings_table();
    for (int k = 0; k < CTN_SET_N_KEYS; k++) {
        char cell[64];
        snprintf(cell, sizeof cell, "| `%s` |", t[k].key);
        CHECK_CONTAINS(doc, cell);
        CHECK(t[k].doc != NULL && t[k].doc[0] != '\0');
    }
}

int main(void) {
    RUN(defaults_are_the_engines);
    RUN(ranges_and_messages);
    RUN(stop_strings);
    RUN(text_is_read_by_kind);
    RUN(sizes);
    RUN(unknown_keys_get_suggestions);
    RUN(docs_list_every_key);
    return test_summary();
}
