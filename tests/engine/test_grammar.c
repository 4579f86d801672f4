/*
 * GBNF grammars (engine/grammar.c): the parser takes llama.cpp-style grammars and names the
 * line, column and rule of what it refuses; the matcher accepts exactly the sentences that a
 * separate recognizer over the compiled form accepts (a memoised set-of-ends recursion, no
 * stacks); the trie walk's mask equals a token-by-token check of every vocabulary entry in
 * many states (synthetic vocabularies with split UTF-8, and the shared llama.cpp ones, where
 * the mask cost per token is printed); on random-weight models every greedy and sampled
 * generation under a grammar is a sentence of it (also preempted, in sessions, and submitted
 * from two threads to a threaded engine), and unconstrained sequences batched with it are
 * unchanged; allocation failures anywhere in compiling and matching are clean. JSON
 * schemas (engine/json_schema.c) become grammars whose sentences validate against the schema
 * (by a validator written here), keywords outside the subset are refused by name, and
 * generations under them validate.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "gen.h"
#include "grammar-impl.h"
#include "grammar.h"
#include "json_schema.h"
#include "model.h"
#include "randmodel.h"
#include "test.h"
#include "unicode.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- the grammars ----------------------------------------------------------------------- */

/* JSON, in the manner of llama.cpp's grammars/json.gbnf (written for this test). */
static const char *const G_JSON =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "\n"
    "object ::=\n"
    "  \"{\" ws (\n"
    "            string \":\" ws value\n"
    "    (\",\" ws string \":\" ws value)*\n"
    "  )? \"}\" ws\n"
    "\n"
    "array  ::=\n"
    "  \"[\" ws (\n"
    "            value\n"
    "    (\",\" ws value)*\n"
    "  )? \"]\" ws\n"
    "\n"
    "string ::=\n"
    "  \"\\\"\" (\n"
    "    [^\"\\\\\\x7F\\x00-\\x1F] |\n"
    "    \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4}) # escapes\n"
    "  )* \"\\\"\" ws\n"
    "\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9]{1,3})? "
    "ws\n"
    "\n"
    "# Optional space: by convention, applied in this grammar after literal chars when allowed\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static const char *const G_ARITH = "root   ::= expr\n"
                                   "expr   ::= term ((\"+\" | \"-\") term)*\n"
                                   "term   ::= factor ((\"*\" | \"/\") factor)*\n"
                                   "factor ::= number | \"(\" expr \")\" | \"-\" factor\n"
                                   "number ::= [0-9]+\n";

static const char *const G_LIST = "# a Markdown list\r\n"
                                  "root ::= item+   # one or more\r\n"
                                  "item ::= \"- \" [^\\n]+ \"\\n\"\r\n";

static const char *const G_CHESS = "root   ::= move (\" \" move)*\n"
                                   "move   ::= pawn | piece | castle\n"
                                   "pawn   ::= [a-h] [1-8] (\"=\" [QRBN])?\n"
                                   "piece  ::= [KQRBN] [a-h]? [1-8]? \"x\"? [a-h] [1-8] [+#]?\n"
                                   "castle ::= \"O-O\" \"-O\"?\n";

static const char *const G_REPEAT = "root ::= \"a\"{2} \"b\"{1,3} (\"c\"){2,} d{0,2} \"e\"? "
                                    "[xy]{ 0 , 1 }\n"
                                    "d ::= \"d\"\n";

static const char *const G_UNICODE =
    "root ::= [α-ω]+ \"→\" [\\u4e00-\\u9fff]{1,2} \"\\U0001F600\"? (\"é\" | [^a-z\\x00-\\x7f])*\n";

static const char *const G_YESNO = "root ::= (\"yes\" | \"no\") \".\"?\n";

static ctn_grammar *YESNO;
static const ctn_grammar *g_yesno(void) {
    char err[256];
    if (YESNO == NULL && ctn_grammar_new(&YESNO, G_YESNO, err, sizeof err) < 0) abort();
    return YESNO;
}

/* ---- a reference recognizer over the compiled form ---------------------------------------- */

/* The set of ends j (bit j) such that the elements from pos match cps[i, j); memoised per
 * (position, i). Strings of up to 62 code points. Terminates because left recursion is
 * refused. */
typedef struct {
    const ctn_grammar *g;
    const uint32_t *cps;
    int n;
    uint64_t *seq_memo, *rule_memo; /* (n_elems or n_rules, 64) */
    uint8_t *seq_done, *rule_done;
} refm;

static uint64_t ref_rule(refm *M, int32_t r, int i);

static uint64_t ref_seq(refm *M, int32_t pos, int i) {
    const ctn__gel e = M->g->elems[pos];
    if (e.type == CTN__GEL_END || e.type == CTN__GEL_ALT) return 1ull << i;
    const size_t k = (size_t)pos * 64 + (size_t)i;
    if (M->seq_done[k]) return M->seq_memo[k];
    uint64_t out = 0;
    if (e.type == CTN__GEL_SET) {
        if (i < M->n && ctn__gset_has(M->g, e.val, M->cps[i])) out = ref_seq(M, pos + 1, i + 1);
    } else {
        const uint64_t m = ref_rule(M, e.val, i);
        for (int j = i; j <= M->n; j++)
            if (m >> j & 1) out |= ref_seq(M, pos + 1, j);
    }
    M->seq_done[k] = 1;
    M->seq_memo[k] = out;
    return out;
}

static uint64_t ref_rule(refm *M, int32_t r, int i) {
    const size_t k = (size_t)r * 64 + (size_t)i;
    if (M->rule_done[k]) return M->rule_memo[k];
    uint64_t out = 0;
    for (int32_t a = M->g->alt_off[r]; a < M->g->alt_off[r + 1]; a++)
        out |= ref_seq(M, M->g->alts[a], i);
    M->rule_done[k] = 1;
    M->rule_memo[k] = out;
    return out;
}

/* Whether the UTF-8 string s is a sentence of g, by the reference (-1: too long/invalid). */
static int ref_accepts(const ctn_grammar *g, const char *s, size_t len) {
    uint32_t cps[64];
    int n = 0;
    for (size_t i = 0; i < len;) {
        const int k = ctn__utf8_char((const unsigned char *)s + i, len - i);
        if (k <= 0) return 0; /* the matcher takes only well-formed UTF-8 */
        if (n == 62) return -1;
        ctn__utf8_decode((const unsigned char *)s + i, (size_t)k, &cps[n++]);
        i += (size_t)k;
    }
    refm M = {g,
              cps,
              n,
              calloc((size_t)g->n_elems * 64, 8),
              calloc((size_t)g->n_rules * 64, 8),
              calloc((size_t)g->n_elems * 64, 1),
              calloc((size_t)g->n_rules * 64, 1)};
    const int ok = (int)(ref_rule(&M, g->root, 0) >> n & 1);
    free(M.seq_memo), free(M.rule_memo), free(M.seq_done), free(M.rule_done);
    return ok;
}

/* The matcher's verdict on a whole string: 1 when it is taken and complete. */
static int match(const ctn_grammar *g, const char *s, size_t len) {
    ctn_grammar_state *st;
    if (ctn_grammar_state_new(&st, g) < 0) return -1;
    const int ok = ctn_grammar_accept(st, s, len, true) == 0 && ctn_grammar_complete(st);
    ctn_grammar_state_free(st);
    return ok;
}

/* Appends a random sentence of g (from the elements at pos) to out; false when it ran past
 * cap code points. */
static bool derive(const ctn_grammar *g, int32_t pos, uint64_t *rng, char *out, size_t *len,
                   size_t cap, int depth) {
    for (;; pos++) {
        const ctn__gel e = g->elems[pos];
        if (e.type == CTN__GEL_END || e.type == CTN__GEL_ALT) return true;
        if (*len + 4 >= cap || depth > 40) return false;
        if (e.type == CTN__GEL_SET) {
            const int32_t a = g->set_off[e.val], z = g->set_off[e.val + 1];
            if (a == z) return false;
            const ctn__grange r = g->ranges[a + (int32_t)(rng_next(rng) % (uint64_t)(z - a))];
            uint32_t c = r.lo + (uint32_t)(rng_next(rng) % (uint64_t)(r.hi - r.lo + 1));
            if (rng_next(rng) % 2) c = r.lo; /* often the low end: ASCII, mostly */
            *len += ctn__utf8_encode(c, out + *len);
        } else {
            const int32_t na = g->alt_off[e.val + 1] - g->alt_off[e.val];
            /* past some depth prefer the last alternative (the empty one of repetitions) */
            int32_t k = (int32_t)(rng_next(rng) % (uint64_t)na);
            if (depth > 12) k = na - 1;
            if (!derive(g, g->alts[g->alt_off[e.val] + k], rng, out, len, cap, depth + 1))
                return false;
        }
    }
}

/* ---- the parser ------------------------------------------------------------------------------ */

TEST(parses_llama_cpp_style_grammars) {
    const char *const all[] = {G_JSON, G_ARITH, G_LIST, G_CHESS, G_REPEAT, G_UNICODE, G_YESNO};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        char err[256] = "";
        ctn_grammar *g = NULL;
        const int rc = ctn_grammar_new(&g, all[i], err, sizeof err);
        if (rc != 0) printf("  grammar %zu: %s\n", i, err);
        CHECK_EQ_INT(rc, 0);
        CHECK(g != NULL && ctn_grammar_n_rules(g) > 0);
        ctn_grammar_free(g);
    }
    /* 50 bounded repetitions make 100,000 rules; past a million elements is refused */
    static char big[4096] = "root ::=";
    for (int i = 0; i < 50; i++)
        strcat(big, " \"a\"{0,2000}");
    char err[256];
    ctn_grammar *g = NULL;
    CHECK_EQ_INT(ctn_grammar_new(&g, big, err, sizeof err), 0);
    CHECK(g != NULL && ctn_grammar_n_rules(g) == 100001);
    ctn_grammar_free(g);
    strcpy(big, "root ::=");
    for (int i = 0; i < 140; i++) /* a literal repeats whole: 140 x 8,000 elements */
        strcat(big, " \"abcd\"{2000}");
    CHECK_EQ_INT(ctn_grammar_new(&g, big, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "too large") != NULL);
}

typedef struct {
    const char *text;
    const char *msg; /* the message, exactly */
} bad_case;

TEST(parse_errors_name_line_column_and_rule) {
    static const bad_case bad[] = {
        {"root ::= [a-z", "grammar line 1, column 10 (rule 'root'): a character class that is "
                          "never closed (expected ']')"},
        {"root ::= \"abc", "grammar line 1, column 10 (rule 'root'): a string that is never "
                           "closed (expected '\"')"},
        {"root ::= foo\n", "grammar line 1, column 10 (rule 'root'): undefined rule 'foo'"},
        {"root ::= item\nitem ::= (\"a\" | \"b\"\n",
         "grammar line 2, column 10 (rule 'item'): expected ')' to close this group"},
        {"root ::= \"a\"{3,1}", "grammar line 1, column 13 (rule 'root'): {3,1}: the maximum is "
                                "below the minimum"},
        {"root ::= * \"a\"", "grammar line 1, column 10 (rule 'root'): '*' with nothing before "
                             "it to repeat"},
        {"root ::= \"\\q\"", "grammar line 1, column 11 (rule 'root'): unknown escape '\\q'"},
        {"root ::= \"\\x4\"", "grammar line 1, column 14 (rule 'root'): expected 2 hex digits "
                              "after '\\x'"},
        {"foo ::= \"a\"\n", "grammar: no rule 'root' (the start rule)"},
        {"root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\"\n",
         "grammar line 2, column 1 (rule 'expr'): left recursion: 'expr' can begin with 'expr' "
         "(write it as a repetition)"},
        {"root \"a\"", "grammar line 1, column 6 (rule 'root'): expected '::='"},
        {"root ::= \"a\" )", "grammar line 1, column 14 (rule 'root'): ')' without a '(' before "
                             "it"},
        {"root ::= \"a\"\n# again\nroot ::= \"b\"",
         "grammar line 3, column 1 (rule 'root'): the rule is defined twice (first on line 1)"},
        {"root ::= [z-a]", "grammar line 1, column 12 (rule 'root'): a range whose end U+0061 is "
                           "below its start U+007A"},
        {"root ::= \"a\"{5000}", "grammar line 1, column 14 (rule 'root'): a repetition count "
                                 "over 2000"},
        {"root ::= x\nx ::= (\"a\"?)*\n",
         "grammar line 2, column 1 (rule 'x'): left recursion in a group or repetition of 'x' (a "
         "repetition of something that can match nothing, or a group that begins with itself)"},
        {"::= \"a\"", "grammar line 1, column 1: expected a rule name"},
        {"root ::= \"\\U00110000\"", "grammar line 1, column 11 (rule 'root'): code point "
                                     "U+110000 is past U+10FFFF"},
        {"root ::= \"\xff\"", "grammar line 1, column 11 (rule 'root'): invalid UTF-8"},
        {"root ::= []", "grammar line 1, column 10 (rule 'root'): an empty character class"},
        {"root ::= \"a\" b ::= \"c\"", "grammar line 1, column 16 (rule 'root'): '::=' inside a "
                                       "rule (a rule ends at a newline)"},
        {"root ::= \"a\"{2", "grammar line 1, column 15 (rule 'root'): expected '}'"},
        {"root ::= <[12]>", "grammar line 1, column 10 (rule 'root'): unexpected '<' (expected "
                            "an element, '|' or the end of the line)"},
        {"", "grammar: no rule 'root' (the start rule)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[320] = "";
        ctn_grammar *g = (ctn_grammar *)&err; /* must come back NULL */
        const int rc = ctn_grammar_new(&g, bad[i].text, err, sizeof err);
        CHECK_EQ_INT(rc, CTN_EINVAL);
        CHECK(g == NULL);
        if (strcmp(err, bad[i].msg) != 0) {
            printf("  case %zu:\n    got  %s\n    want %s\n", i, err, bad[i].msg);
            CHECK(0);
        }
    }
    /* a NUL inside the text, through the length-taking form */
    char err[256];
    ctn_grammar *g;
    CHECK_EQ_INT(ctn_grammar_new_n(&g, "root ::= \"a\0\"", 13, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "NUL") != NULL);
}

/* ---- the matcher against the reference ----------------------------------------------------- */

typedef struct {
    const char *s;
    int ok;
} mcase;

static void check_cases(const char *gtext, const mcase *c, size_t n) {
    char err[256];
    ctn_grammar *g;
    CHECK_EQ_INT(ctn_grammar_new(&g, gtext, err, sizeof err), 0);
    if (g == NULL) return;
    for (size_t i = 0; i < n; i++) {
        const int m = match(g, c[i].s, strlen(c[i].s)), r = ref_accepts(g, c[i].s, strlen(c[i].s));
        if (m != c[i].ok || r != c[i].ok) {
            printf("  \"%s\": matcher %d, reference %d, expected %d\n", c[i].s, m, r, c[i].ok);
            CHECK(0);
        }
    }
    ctn_grammar_free(g);
}

TEST(matcher_accepts_exactly_the_chosen_cases) {
    static const mcase json[] = {
        {"{}", 1},
        {"{ }", 1},
        {"{\"a\": 1}", 1},
        {"{\"a\":[1, 2.5e3, true, null, \"x\"]}", 1},
        {"{\"k\": {\"n\": -0.5}}", 1},
        {"{\"s\": \"\\u00e9\\n\"}", 1},
        {"{\"é\": \"ü\"}", 1},
        {"{", 0},
        {"{\"a\" 1}", 0},
        {"[1]", 0},
        {"{\"a\": 01}", 0},
        {"{\"a\": tru}", 0},
        {"{\"a\": \"\\x\"}", 0},
        {"{\"a\":1,}", 0},
        {"{\"a\": \"\x01\"}", 0},
        {"{} ", 1},
    };
    check_cases(G_JSON, json, sizeof json / sizeof *json);
    static const mcase arith[] = {
        {"1", 1},  {"1+2*3", 1}, {"(1+2)*-3", 1}, {"((4))", 1}, {"12/4-7", 1}, {"", 0},
        {"1+", 0}, {"(1", 0},    {"1)", 0},       {"+1", 0},    {"1 + 2", 0},
    };
    check_cases(G_ARITH, arith, sizeof arith / sizeof *arith);
    static const mcase list[] = {
        {"- a\n", 1}, {"- milk\n- eggs\n", 1}, {"- \n", 0}, {"- a", 0}, {"", 0}, {"* a\n", 0},
    };
    check_cases(G_LIST, list, sizeof list / sizeof *list);
    static const mcase chess[] = {
        {"e4", 1},     {"e4 e5 Nf3 Nc6 Bb5", 1},
        {"O-O", 1},    {"O-O-O", 1},
        {"exd5", 0},   {"Qxf7#", 1},
        {"e8=Q", 1},   {"Nbd2", 1},
        {"e9", 0},     {"O-O-O-O", 0},
        {"e4  e5", 0},
    };
    check_cases(G_CHESS, chess, sizeof chess / sizeof *chess);
    static const mcase rep[] = {
        {"aabcc", 1},    {"aabbbccccdde", 1}, {"aabccdx", 1},  {"abcc", 0},    {"aaabcc", 0},
        {"aabbbbcc", 0}, {"aabc", 0},         {"aabccddd", 0}, {"aabccxy", 0}, {"aabccey", 1},
    };
    check_cases(G_REPEAT, rep, sizeof rep / sizeof *rep);
    static const mcase uni[] = {
        {"αβ→中", 1}, {"ω→中文😀", 1},   {"α→中é€", 1},   {"α→", 0},
        {"a→中", 0},  {"α→中文字a", 0}, {"α→中文字", 1}, {"α→中x", 0},
    };
    check_cases(G_UNICODE, uni, sizeof uni / sizeof *uni);
    static const mcase any[] = {
        {"xa", 1},
        {"é"
         "a",
         1},
        {"\na", 1},
        {"a", 0},
        {"xya", 0},
        {"😀"
         "a",
         1},
    };
    check_cases("root ::= . \"a\"", any, sizeof any / sizeof *any);
    static const mcase empty[] = {{"a", 1}, {"", 0}, {"aa", 0}};
    check_cases("root ::= \"\"+ \"a\" \"\"* \"\"{3}", empty, sizeof empty / sizeof *empty);
}

/* Random strings over each grammar's alphabet, and random sentences derived from it: the
 * matcher and the reference agree on every one, and every derived sentence is accepted. */
TEST(matcher_agrees_with_the_reference_on_random_strings) {
    static const struct {
        const char *g, *alpha;
    } gs[] = {
        {G_JSON, "{}[]\":, 1-.e0tru\\n"}, {G_ARITH, "12+-*/()"}, {G_LIST, "- a\n"},
        {G_CHESS, "e4 NxO-=Q#"},          {G_REPEAT, "abcdexy"}, {G_YESNO, "yesno."},
    };
    uint64_t rng = 7;
    int agree = 0, derived = 0, accepted_random = 0;
    for (size_t k = 0; k < sizeof gs / sizeof *gs; k++) {
        char err[256];
        ctn_grammar *g;
        CHECK_EQ_INT(ctn_grammar_new(&g, gs[k].g, err, sizeof err), 0);
        if (g == NULL) continue;
        const size_t na = strlen(gs[k].alpha);
        for (int t = 0; t < 3000; t++) {
            char s[64];
            const size_t len = rng_next(&rng) % 12;
            for (size_t i = 0; i < len; i++)
                s[i] = gs[k].alpha[rng_next(&rng) % na];
            const int r = ref_accepts(g, s, len), m = match(g, s, len);
            if (r != m) {
                printf("  grammar %zu, \"%.*s\": reference %d, matcher %d\n", k, (int)len, s, r, m);
                CHECK(0);
                break;
            }
            agree++;
            accepted_random += r;
        }
        for (int t = 0; t < 500; t++) {
            char s[256];
            size_t len = 0;
            if (!derive(g, g->alts[g->alt_off[g->root]], &rng, s, &len, 200, 0)) continue;
            const int r = ref_accepts(g, s, len), m = match(g, s, len);
            if (m != 1 || (r != 1 && r != -1)) {
                printf("  grammar %zu, derived \"%.*s\": reference %d, matcher %d\n", k, (int)len,
                       s, r, m);
                CHECK(0);
                break;
            }
            derived++;
        }
        ctn_grammar_free(g);
    }
    printf("  %d random strings agree (%d of them sentences), %d derived sentences accepted\n",
           agree, accepted_random, derived);
    CHECK(derived > 1000);
    CHECK(accepted_random > 50);
}

/* A token split inside a UTF-8 character carries the bytes into the next one. */
TEST(partial_utf8_is_carried_between_pieces) {
    char err[256];
    ctn_grammar *g;
    CHECK_EQ_INT(ctn_grammar_new(&g, "root ::= \"é\" [€-€] \"😀\"", err, sizeof err), 0);
    ctn_grammar_state *st;
    CHECK_EQ_INT(ctn_grammar_state_new(&st, g), 0);
    CHECK_EQ_INT(ctn_grammar_accept(st, "\xc3", 1, true), 0);
    CHECK(!ctn_grammar_complete(st));
    CHECK_EQ_INT(ctn_grammar_accept(st, "\xa8", 1, false), CTN_EINVAL); /* è, not é */
    CHECK_EQ_INT(ctn_grammar_accept(st, "\xa9\xe2\x82", 3, true), 0);
    CHECK_EQ_INT(ctn_grammar_accept(st, "\xac\xf0\x9f", 3, true), 0);
    CHECK_EQ_INT(ctn_grammar_accept(st, "\x98", 1, true), 0);
    CHECK(!ctn_grammar_complete(st));
    CHECK_EQ_INT(ctn_grammar_accept(st, "\x81", 1, true), CTN_EINVAL); /* U+1F601: not 😀 */
    CHECK_EQ_INT(ctn_grammar_accept(st, "\x80", 1, true), 0);
    CHECK(ctn_grammar_complete(st));
    CHECK_EQ_INT(ctn_grammar_accept(st, "a", 1, false), CTN_EINVAL); /* nothing after */
    ctn_grammar_state_free(st);
    CHECK_EQ_INT(ctn_grammar_state_new(&st, g), 0);
    CHECK_EQ_INT(ctn_grammar_accept(st, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, true), 0);
    CHECK(ctn_grammar_complete(st) && ctn_grammar_finished(st));
    /* a lead byte no grammar character can begin with, and bytes that are not UTF-8 */
    ctn_grammar_state_reset(st);
    CHECK_EQ_INT(ctn_grammar_accept(st, "\xc4", 1, false), CTN_EINVAL);
    CHECK_EQ_INT(ctn_grammar_accept(st, "\xff", 1, false), CTN_EINVAL);
    CHECK_EQ_INT(ctn_grammar_accept(st, "\xc3\x28", 2, false), CTN_EINVAL);
    ctn_grammar_state_free(st);
    ctn_grammar_free(g);
}

/* A grammar whose parses multiply with each character stops at CTN_GRAMMAR_MAX_STACKS with
 * CTN_ERANGE, in time, and the state it had is kept. */
TEST(ambiguity_past_the_limit_is_an_error) {
    char err[256];
    ctn_grammar *g;
    CHECK_EQ_INT(ctn_grammar_new(&g, "root ::= \"a\"++++++++++++++++++++ \"b\"", err, sizeof err),
                 0);
    ctn_grammar_state *st = NULL;
    CHECK_EQ_INT(ctn_grammar_state_new(&st, g), 0);
    int n = 0, rc = 0;
    while (st != NULL && n < 300 && (rc = ctn_grammar_accept(st, "a", 1, true)) == 0)
        n++;
    CHECK_EQ_INT(rc, CTN_ERANGE);
    CHECK(n >= 1 && n < 300);
    CHECK_EQ_INT(ctn_grammar_accept(st, "b", 1, true), 0); /* the state before it stands */
    CHECK(ctn_grammar_complete(st));
    ctn_grammar_state_free(st);
    ctn_grammar_free(g);
    /* the same language written plainly has one parse */
    CHECK_EQ_INT(ctn_grammar_new(&g, "root ::= \"a\"+ \"b\"", err, sizeof err), 0);
    CHECK_EQ_INT(ctn_grammar_state_new(&st, g), 0);
    for (int i = 0; i < 300; i++)
        CHECK_EQ_INT(ctn_grammar_accept(st, "a", 1, true), 0);
    ctn_grammar_state_free(st);
    ctn_grammar_free(g);
}

/* ---- the trie's mask against a brute-force check ------------------------------------------ */

typedef struct {
    int32_t n;
    char **p;
    size_t *len;
    bool *eog;
} synvocab;

static void synvocab_free(synvocab *v) {
    for (int32_t i = 0; i < v->n; i++)
        free(v->p[i]);
    free(v->p), free(v->len), free(v->eog);
}

/* Every single byte, UTF-8 characters whole and split, pieces of the grammars' alphabets,
 * duplicates, empty control tokens and one end-of-generation token. */
static void synvocab_make(synvocab *v, uint64_t seed, int n) {
    static const char *const frag[] = {
        "{", "}",  "[", "]",   "\"", ":",  ",",  " ",  "\n",  "true", "false", "null",
        "1", "23", "-", ".",   "e",  "\\", "u",  "00", "é",   "ü",    "→",     "中",
        "😀", "α",  "β", "ω",   "a",  "b",  "c",  "d",  "x",   "y",    "- ",    "+",
        "*", "(",  ")", "O-O", "Nf", "3",  "x5", "#",  "yes", "no",   "s",     "o",
    };
    const int nf = (int)(sizeof frag / sizeof *frag);
    uint64_t rng = seed;
    v->n = n;
    v->p = calloc((size_t)n, sizeof *v->p);
    v->len = calloc((size_t)n, sizeof *v->len);
    v->eog = calloc((size_t)n, sizeof *v->eog);
    for (int32_t i = 0; i < n; i++) {
        char b[64];
        size_t len = 0;
        if (i < 256) {
            b[0] = (char)i;
            len = 1;
        } else if (i == 256) {
            v->eog[i] = true; /* EOS: no bytes */
        } else if (i == 257 || i == 258) {
            len = 0; /* control tokens */
        } else {
            const int parts = 1 + (int)(rng_next(&rng) % 4);
            for (int k = 0; k < parts; k++) {
                const char *f = frag[rng_next(&rng) % (uint64_t)nf];
                memcpy(b + len, f, strlen(f));
                len += strlen(f);
            }
            if (rng_next(&rng) % 5 == 0 && len > 1) len -= 1 + rng_next(&rng) % (len - 1); /* cut */
            if (rng_next(&rng) % 7 == 0 && len > 1) { /* drop the head: may start mid-character */
                const size_t d = 1 + rng_next(&rng) % (len - 1);
                memmove(b, b + d, len - d);
                len -= d;
            }
        }
        v->p[i] = malloc(len + 1);
        memcpy(v->p[i], b, len);
        v->len[i] = len;
    }
}

/* Compares the mask with a token-by-token check in the state st; returns the mismatches. */
static int brute_compare(ctn_grammar_state *st, const ctn_token_trie *t, int32_t n_tokens,
                         char **pieces, const size_t *lens, const bool *eog, uint8_t *mark) {
    const int32_t *ids;
    const int64_t n = ctn_grammar_allowed(st, t, &ids);
    if (n < 0) return 1;
    memset(mark, 0, (size_t)n_tokens);
    int bad = 0;
    for (int64_t k = 0; k < n; k++) {
        if (mark[ids[k]]) bad++; /* twice */
        mark[ids[k]] = 1;
    }
    for (int32_t i = 0; i < n_tokens; i++) {
        int ok;
        if (eog[i])
            ok = ctn_grammar_complete(st);
        else
            ok = lens[i] > 0 && ctn_grammar_accept(st, pieces[i], lens[i], false) == 0;
        if (ok != mark[i]) {
            if (bad < 3)
                printf("  token %d (\"%.*s\"): mask %d, check %d\n", (int)i, (int)lens[i],
                       pieces[i], mark[i], ok);
            bad++;
        }
    }
    return bad;
}

/* Walks random paths through the grammar (a random allowed token each time), comparing the
 * mask with the brute-force check at every state; returns the states checked. */
static int walk_compare(const ctn_grammar *g, const ctn_token_trie *t, int32_t n_tokens,
                        char **pieces, const size_t *lens, const bool *eog, uint64_t seed,
                        int n_walks, int max_len, int *bad) {
    uint8_t *mark = malloc((size_t)n_tokens);
    uint64_t rng = seed;
    int states = 0;
    ctn_grammar_state *st;
    if (ctn_grammar_state_new(&st, g) < 0) {
        free(mark);
        ++*bad;
        return 0;
    }
    for (int w = 0; w < n_walks && *bad == 0; w++) {
        ctn_grammar_state_reset(st);
        for (int step = 0; step < max_len && *bad == 0; step++) {
            *bad += brute_compare(st, t, n_tokens, pieces, lens, eog, mark);
            states++;
            const int32_t *ids;
            const int64_t n = ctn_grammar_allowed(st, t, &ids);
            if (n <= 0) break;
            const int32_t tok = ids[rng_next(&rng) % (uint64_t)n];
            if (eog[tok]) break;
            if (ctn_grammar_accept_token(st, t, tok) != 0) ++*bad;
        }
    }
    ctn_grammar_state_free(st);
    free(mark);
    return states;
}

TEST(trie_mask_equals_brute_force_on_synthetic_vocabularies) {
    const char *const all[] = {G_JSON, G_ARITH, G_LIST, G_CHESS, G_REPEAT, G_UNICODE, G_YESNO};
    int states = 0;
    for (int vs = 0; vs < 2; vs++) {
        synvocab v;
        synvocab_make(&v, 11 + (uint64_t)vs, vs == 0 ? 600 : 3000);
        char err[256];
        ctn_token_trie *t;
        CHECK_EQ_INT(
            ctn_token_trie_new(&t, v.n, (const char *const *)v.p, v.len, v.eog, err, sizeof err),
            0);
        for (size_t k = 0; t != NULL && k < sizeof all / sizeof *all; k++) {
            ctn_grammar *g;
            CHECK_EQ_INT(ctn_grammar_new(&g, all[k], err, sizeof err), 0);
            if (g == NULL) continue;
            int bad = 0;
            states += walk_compare(g, t, v.n, v.p, v.len, v.eog, 100 + k, 12, 40, &bad);
            if (bad) printf("  grammar %zu: %d mismatches\n", k, bad);
            CHECK_EQ_INT(bad, 0);
            ctn_grammar_free(g);
        }
        ctn_token_trie_free(t);
        synvocab_free(&v);
    }
    printf("  %d states compared\n", states);
    CHECK(states > 1000);
}

/* The tokens a mask left at 0 (the others are -inf) into mark; their number. */
static int64_t mask_marks(ctn_grammar_state *st, const ctn_token_trie *t, int32_t n_tokens,
                          float *logits, uint8_t *mark) {
    for (int32_t i = 0; i < n_tokens; i++)
        logits[i] = 0;
    const int64_t n = ctn_grammar_mask(st, t, logits);
    int64_t k = 0;
    for (int32_t i = 0; i < n_tokens; i++) {
        mark[i] = logits[i] == 0;
        k += mark[i];
    }
    return n == k ? n : -1;
}

/* Mismatches of mark against a token-by-token check in st. */
static int brute_marks(ctn_grammar_state *st, int32_t n_tokens, char **pieces, const size_t *lens,
                       const bool *eog, const uint8_t *mark) {
    int bad = 0;
    for (int32_t i = 0; i < n_tokens; i++) {
        const int ok = eog[i]
                           ? ctn_grammar_complete(st)
                           : lens[i] > 0 && ctn_grammar_accept(st, pieces[i], lens[i], false) == 0;
        if (ok != mark[i]) {
            if (bad < 3)
                printf("  token %d (\"%.*s\"): mask %d, check %d\n", (int)i, (int)lens[i],
                       pieces[i], mark[i], ok);
            bad++;
        }
    }
    return bad;
}

/*
 * A state keeps the masks of states it was in (grammar.c): along random paths through looping
 * grammars, where the same state comes back token after token, every ctn_grammar_mask (found
 * or walked; as allowed tokens or as refused ones) equals the token-by-token check, asked
 * twice in a row and for two vocabularies in turn (a mask found for one trie is never the
 * other's). The engine masks with ctn_grammar_mask, so this is the path it takes.
 */
TEST(cached_masks_equal_brute_force) {
    const char *const all[] = {G_JSON, G_LIST, G_UNICODE, G_ARITH,
                               "root ::= \"\\\"\" [^\"\\\\]* \"\\\"\" [a-z]{0,3}\n"};
    synvocab v[2];
    ctn_token_trie *t[2] = {NULL, NULL};
    char err[256];
    for (int k = 0; k < 2; k++) {
        synvocab_make(&v[k], 21 + (uint64_t)k, k == 0 ? 800 : 2500);
        CHECK_EQ_INT(ctn_token_trie_new(&t[k], v[k].n, (const char *const *)v[k].p, v[k].len,
                                        v[k].eog, err, sizeof err),
                     0);
    }
    const int32_t nmax = v[0].n > v[1].n ? v[0].n : v[1].n;
    float *logits = malloc((size_t)nmax * sizeof *logits);
    uint8_t *mark = malloc((size_t)nmax), *mark2 = malloc((size_t)nmax);
    int states = 0, bad = 0;
    for (size_t gi = 0; t[0] && t[1] && gi < sizeof all / sizeof *all; gi++) {
        ctn_grammar *g;
        CHECK_EQ_INT(ctn_grammar_new(&g, all[gi], err, sizeof err), 0);
        ctn_grammar_state *st;
        if (g == NULL || ctn_grammar_state_new(&st, g) < 0) {
            CHECK(0);
            ctn_grammar_free(g);
            continue;
        }
        uint64_t rng = 7 + gi;
        for (int w = 0; w < 6 && bad == 0; w++) {
            ctn_grammar_state_reset(st);
            for (int step = 0; step < 40 && bad == 0; step++) {
                for (int k = 0; k < 2; k++) {
                    const int64_t n = mask_marks(st, t[k], v[k].n, logits, mark);
                    const int64_t n2 = mask_marks(st, t[k], v[k].n, logits, mark2);
                    if (n < 0 || n != n2 || memcmp(mark, mark2, (size_t)v[k].n) != 0) bad++;
                    bad += brute_marks(st, v[k].n, v[k].p, v[k].len, v[k].eog, mark);
                    states++;
                }
                /* the next token: a random allowed one of the first vocabulary */
                const int64_t n = mask_marks(st, t[0], v[0].n, logits, mark);
                if (n <= 0) break;
                int64_t pick = (int64_t)(rng_next(&rng) % (uint64_t)n);
                int32_t tok = 0;
                for (; tok < v[0].n; tok++)
                    if (mark[tok] && pick-- == 0) break;
                if (v[0].eog[tok]) break;
                if (ctn_grammar_accept_token(st, t[0], tok) != 0) bad++;
            }
        }
        if (bad) printf("  grammar %zu: %d mismatches\n", gi, bad);
        ctn_grammar_state_free(st);
        ctn_grammar_free(g);
    }
    printf("  %d states compared\n", states);
    CHECK_EQ_INT(bad, 0);
    CHECK(states > 400);
    free(logits), free(mark), free(mark2);
    for (int k = 0; k < 2; k++) {
        ctn_token_trie_free(t[k]);
        synvocab_free(&v[k]);
    }
}

/*
 * A walk that meets more distinct level states than its memo holds (grammar.c, LS_MAX): every
 * three-byte character as a token, and each again after "a", under a grammar whose state
 * differs by position, gives over two thousand partial-character states; the mask still
 * equals the token-by-token check.
 */
TEST(mask_walk_past_its_memo) {
    int32_t n = 0;
    const int32_t cap = 2 * 0xF800 + 1;
    char **p = calloc((size_t)cap, sizeof *p);
    size_t *len = calloc((size_t)cap, sizeof *len);
    bool *eog = calloc((size_t)cap, sizeof *eog);
    for (int pre = 0; pre < 2; pre++)
        for (uint32_t c = 0x800; c <= 0xFFFF; c++) {
            if (c >= 0xD800 && c <= 0xDFFF) continue;
            char *b = malloc(4);
            size_t o = 0;
            if (pre) b[o++] = 'a';
            b[o++] = (char)(0xE0 | (c >> 12));
            b[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            b[o++] = (char)(0x80 | (c & 0x3F));
            p[n] = b;
            len[n++] = o;
        }
    p[n] = malloc(1);
    eog[n++] = true;
    char err[256];
    ctn_token_trie *t;
    CHECK_EQ_INT(ctn_token_trie_new(&t, n, (const char *const *)p, len, eog, err, sizeof err), 0);
    ctn_grammar *g;
    CHECK_EQ_INT(ctn_grammar_new(&g, "root ::= [^\\u4e00-\\u4eff] [^\\u5000-\\u50ff]? .{0,3}\n",
                                 err, sizeof err),
                 0);
    ctn_grammar_state *st = NULL;
    if (t && g && ctn_grammar_state_new(&st, g) == 0) {
        float *logits = malloc((size_t)n * sizeof *logits);
        uint8_t *mark = malloc((size_t)n);
        int64_t na = mask_marks(st, t, n, logits, mark);
        CHECK(na > 0);
        CHECK_EQ_INT(brute_marks(st, n, p, len, eog, mark), 0);
        /* after one character: the second class, then any */
        CHECK_EQ_INT(ctn_grammar_accept(st, "\xe4\xb8\x80", 3, true), CTN_EINVAL); /* U+4E00 */
        CHECK_EQ_INT(ctn_grammar_accept(st, "\xe5\x80\x80", 3, true), 0);          /* U+5000 */
        na = mask_marks(st, t, n, logits, mark);
        CHECK(na > 0);
        CHECK_EQ_INT(brute_marks(st, n, p, len, eog, mark), 0);
        free(logits), free(mark);
    } else {
        CHECK(0);
    }
    ctn_grammar_state_free(st);
    ctn_grammar_free(g);
    ctn_token_trie_free(t);
    for (int32_t i = 0; i < n; i++)
        free(p[i]);
    free(p), free(len), free(eog);
}

static const char *shared_dir(void) {
    const char *s = getenv("CTN_SHARED");
    return s && *s ? s : "../shared";
}

static ctn_vocab *load_vocab(const char *name) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/vocab/%s", shared_dir(), name);
    ctn_gguf *g;
    if (ctn_gguf_open(&g, path, err, sizeof err) < 0) return NULL;
    ctn_vocab *v = NULL;
    if (ctn_vocab_load(&v, g, err, sizeof err) < 0) v = NULL;
    ctn_gguf_free(g);
    return v;
}

/* The shared llama.cpp vocabularies: the mask equals the brute-force check in states along
 * random paths, and the mask cost per token (mean over those states) is printed. */
TEST(trie_mask_on_real_vocabularies_and_its_cost) {
    static const char *const names[] = {"ggml-vocab-llama-bpe.gguf", "ggml-vocab-qwen2.gguf",
                                        "ggml-vocab-llama-spm.gguf"};
    int found = 0;
    for (size_t vi = 0; vi < sizeof names / sizeof *names; vi++) {
        ctn_vocab *v = load_vocab(names[vi]);
        if (v == NULL) continue;
        found++;
        const int32_t n = ctn_vocab_n_tokens(v);
        char **pieces = calloc((size_t)n, sizeof *pieces);
        size_t *lens = calloc((size_t)n, sizeof *lens);
        bool *eog = calloc((size_t)n, sizeof *eog);
        for (int32_t i = 0; i < n; i++) {
            char buf[512];
            const int len = ctn_token_to_piece(v, i, buf, sizeof buf, 0, false);
            pieces[i] = malloc(len > 0 ? (size_t)len : 1);
            if (len > 0) memcpy(pieces[i], buf, (size_t)len);
            lens[i] = len > 0 ? (size_t)len : 0;
            eog[i] = ctn_vocab_is_eog(v, i);
        }
        char err[256];
        ctn_token_trie *t;
        const double t0 = now_s();
        CHECK_EQ_INT(ctn_token_trie_from_vocab(&t, v, err, sizeof err), 0);
        const double t_build = now_s() - t0;
        const char *const gs[] = {G_JSON, G_ARITH, G_UNICODE};
        const char *const gnames[] = {"json", "arith", "unicode"};
        for (size_t k = 0; t != NULL && k < 3; k++) {
            ctn_grammar *g;
            CHECK_EQ_INT(ctn_grammar_new(&g, gs[k], err, sizeof err), 0);
            if (g == NULL) continue;
            int bad = 0;
            const int states = walk_compare(g, t, n, pieces, lens, eog, 5 + k, 2, 8, &bad);
            CHECK_EQ_INT(bad, 0);
            CHECK(states >= 2);
            /* cost: masks along a path of 64 random allowed tokens, first state excluded */
            ctn_grammar_state *st;
            CHECK_EQ_INT(ctn_grammar_state_new(&st, g), 0);
            float *logits = calloc((size_t)n, sizeof *logits);
            uint64_t rng = 99;
            double tot = 0, first = 0;
            int masks = 0;
            for (int step = 0; step < 64; step++) {
                const double a = now_s();
                const int64_t na = ctn_grammar_mask(st, t, logits);
                const double b = now_s() - a;
                if (step == 0)
                    first = b;
                else
                    tot += b, masks++;
                if (na <= 0) break;
                const int32_t *ids;
                const int64_t m = ctn_grammar_allowed(st, t, &ids);
                int32_t tok = ids[rng_next(&rng) % (uint64_t)m];
                if (eog[tok]) {
                    if (m == 1) break;
                    tok = ids[0] == tok ? ids[1] : ids[0];
                }
                CHECK_EQ_INT(ctn_grammar_accept_token(st, t, tok), 0);
                for (int32_t i = 0; i < n; i++)
                    logits[i] = 0;
            }
            printf("  %s, %d tokens (trie of %lld nodes built in %.1f ms), %s: mask %.1f us per "
                   "token (first %.1f us), %d states checked by brute force\n",
                   names[vi], (int)n, (long long)ctn_token_trie_n_nodes(t), t_build * 1e3,
                   gnames[k], masks ? tot / masks * 1e6 : 0.0, first * 1e6, states);
            free(logits);
            ctn_grammar_state_free(st);
            ctn_grammar_free(g);
        }
        ctn_token_trie_free(t);
        for (int32_t i = 0; i < n; i++)
            free(pieces[i]);
        free(pieces), free(lens), free(eog);
        ctn_vocab_free(v);
    }
    if (found == 0) SKIP("no vocabularies in %s/vocab (set CTN_SHARED)", shared_dir());
}

/* A vocabulary that cleans up spaces when decoding (Llama 3's: " ," becomes ",") keeps the
 * pieces as they are in a raw stream, the one a grammar request uses: its text is then what
 * the grammar matched. */
TEST(raw_detok_stream_keeps_the_pieces) {
    ctn_vocab *v = load_vocab("ggml-vocab-llama-bpe.gguf");
    if (v == NULL) SKIP("no ggml-vocab-llama-bpe.gguf in %s/vocab (set CTN_SHARED)", shared_dir());
    const char *text = "a , b ? c";
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ_INT(ctn_tokenize(v, text, strlen(text), false, false, &ids, &n), 0);
    char got[2][64];
    for (int raw = 0; raw < 2; raw++) {
        ctn_detok_stream ds;
        ctn_detok_stream_init(&ds, v, false);
        ds.first = false;
        ds.raw = raw;
        size_t len = 0;
        char buf[512];
        for (size_t i = 0; i < n; i++) {
            const int k = ctn_detok_stream_push(&ds, ids[i], buf, sizeof buf);
            CHECK(k >= 0);
            if (k > 0 && len + (size_t)k < sizeof got[raw]) memcpy(got[raw] + len, buf, (size_t)k);
            len += k > 0 ? (size_t)k : 0;
        }
        const int k = ctn_detok_stream_flush(&ds, buf, sizeof buf);
        if (k > 0 && len + (size_t)k < sizeof got[raw]) memcpy(got[raw] + len, buf, (size_t)k);
        len += k > 0 ? (size_t)k : 0;
        got[raw][len < sizeof got[raw] ? len : sizeof got[raw] - 1] = 0;
        ctn_detok_stream_close(&ds);
    }
    CHECK_STR(got[0], "a, b? c"); /* cleaned up, as llama.cpp's detokenizer does */
    CHECK_STR(got[1], text);
    free(ids);
    ctn_vocab_free(v);
}

/* ---- generation under a grammar on a random-weight model ------------------------------------ */

/* Token texts 4.. of the test model: every byte but 0x0A (token 3), then pieces the grammars
 * can use (U+2581 is a space in SPM texts), whole and split UTF-8 characters among them. */
static const char *const FRAGS[] = {
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\xe2\x96\x81",
    "true",
    "false",
    "null",
    "0",
    "1",
    "2",
    "3",
    "45",
    "-",
    ".",
    "e",
    "\\",
    "u",
    "a",
    "b",
    "c",
    "d",
    "x",
    "y",
    "key",
    "\"a\"",
    "\":",
    "\xe2\x96\x81\"",
    "{\"",
    "\"}",
    "[1",
    ",\xe2\x96\x81",
    "+",
    "*",
    "/",
    "(",
    ")",
    "12",
    "7",
    "-\xe2\x96\x81",
    "e4",
    "Nf3",
    "O-O",
    "x5",
    "#",
    "=Q",
    "yes",
    "no",
    "ye",
    "s.",
    ".",
    "\xc3\xa9",
    "\xc3",
    "\xce\xb1",
    "\xe2\x86\x92",
    "\xe4\xb8\xad",
    "\xf0\x9f\x98\x80",
    "\xf0\x9f",
    "\x98\x80",
    "aa",
    "bb",
    "cc",
    "dd",
    "\xe2\x96\x81-\xe2\x96\x81",
    "\xe2\x96\x81x",
};
#define N_FRAGS ((int)(sizeof FRAGS / sizeof *FRAGS))

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    ctn_vocab *v;
    char path[256];
    const char *texts[600];
    char bytes[256][8];
} gmodel;

static int gmodel_load(gmodel *L, uint64_t seed) {
    char err[512];
    memset(L, 0, sizeof *L);
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if (b == 0x0A) continue;
        snprintf(L->bytes[b], sizeof L->bytes[b], "<0x%02X>", b);
        L->texts[n++] = L->bytes[b];
    }
    for (int i = 0; i < N_FRAGS; i++)
        L->texts[n++] = FRAGS[i];
    randmodel_shape sh = {CTN_TYPE_F32,    64, 4, 2, 128, 2, false, 4 + n, 10000, 1e-5f, seed,
                          RANDMODEL_LLAMA, 0};
    const char *tmp = getenv("TMPDIR");
    snprintf(L->path, sizeof L->path, "%s/test_grammar-%d-%llu.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid(), (unsigned long long)seed);
    if (randmodel_write_tokens(&sh, L->texts, false, L->path, err, sizeof err) < 0 ||
        ctn_gguf_open(&L->g, L->path, err, sizeof err) < 0 ||
        ctn_model_load(&L->m, L->g, err, sizeof err) < 0 ||
        ctn_vocab_load(&L->v, L->g, err, sizeof err) < 0) {
        printf("  %s: %s\n", L->path, err);
        return -1;
    }
    return 0;
}

static void gmodel_free(gmodel *L) {
    ctn_vocab_free(L->v);
    ctn_model_free(L->m);
    ctn_gguf_free(L->g);
    unlink(L->path);
}

#define MAX_GEN 48

typedef struct {
    int32_t toks[MAX_GEN + 1];
    int n;
    char text[1024]; /* on_token texts, then the released tail */
    size_t len;
    int done;
    ctn_finish finish;
    int code;
    char error[200];
} gout;

static void g_on_token(void *ud, const ctn_gen_token *t) {
    gout *o = ud;
    if (o->n <= MAX_GEN) o->toks[o->n] = t->token;
    o->n++;
    if (t->text != NULL && o->len + t->len < sizeof o->text) {
        memcpy(o->text + o->len, t->text, t->len);
        o->len += t->len;
    }
}

static void g_on_done(void *ud, int64_t id, const ctn_gen_result *r) {
    (void)id;
    gout *o = ud;
    o->done++;
    o->finish = r->finish;
    o->code = r->code;
    snprintf(o->error, sizeof o->error, "%s", r->error);
    if (o->len + r->text_len < sizeof o->text) {
        memcpy(o->text + o->len, r->text, r->text_len);
        o->len += r->text_len;
    }
}

static bool QUIET; /* submissions expected to fail (allocation-failure loops) say nothing */

static ctn_gen *g_engine(const gmodel *L, bool with_vocab) {
    ctn_gen_params p = {0};
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 256;
    p.manual = true;
    ctn_gen *e = NULL;
    char err[512];
    if (ctn_gen_new(&e, L->m, with_vocab ? L->v : NULL, &p, err, sizeof err) < 0)
        printf("  engine: %s\n", err);
    return e;
}

/* A manual engine whose KV pool holds n_blocks blocks of 16 positions. */
static ctn_gen *g_engine_small(const gmodel *L, int32_t n_blocks) {
    ctn_gen_params p = {0};
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 256;
    p.fwd.kv_memory =
        (size_t)n_blocks * ctn_kv_bytes_per_block(L->m->hp.n_layer,
                                                  L->m->hp.n_head_kv * L->m->hp.head_dim,
                                                  CTN_TYPE_F16, 16);
    p.manual = true;
    ctn_gen *e = NULL;
    char err[512];
    if (ctn_gen_new(&e, L->m, L->v, &p, err, sizeof err) < 0) printf("  engine: %s\n", err);
    return e;
}

static int64_t g_submit(ctn_gen *e, gout *o, const char *grammar, uint64_t seed, float temp,
                        int max_tokens) {
    ctn_gen_request r = ctn_gen_request_default();
    int32_t prompt[8];
    uint64_t rng = seed * 31 + 5;
    const int n = 1 + (int)(rng_next(&rng) % 8);
    prompt[0] = 1;
    for (int i = 1; i < n; i++)
        prompt[i] = 4 + (int32_t)(rng_next(&rng) % 100);
    r.prompt_ids = prompt;
    r.n_prompt_ids = n;
    r.max_tokens = max_tokens;
    r.sampling.temp = temp;
    r.sampling.top_k = temp > 0 ? 0 : 40;
    r.sampling.top_p = 1.0f;
    r.sampling.min_p = 0.0f;
    r.sampling.seed = seed;
    r.grammar = grammar;
    r.on_token = g_on_token;
    r.on_done = g_on_done;
    r.ud = o;
    memset(o, 0, sizeof *o);
    char err[512];
    const int64_t id = ctn_gen_submit(e, &r, err, sizeof err);
    if (id < 0 && !QUIET) printf("  submit: %s\n", err);
    return id;
}

static void g_run(ctn_gen *e) {
    for (int k = 0; k < 10000 && ctn_gen_step(e, NULL) > 0; k++) {
    }
}

/* The bytes the tokens spell (end-of-generation tokens spell nothing). */
static size_t spell(const ctn_vocab *v, const gout *o, char *buf, size_t cap) {
    size_t len = 0;
    for (int i = 0; i < o->n && i <= MAX_GEN; i++) {
        char piece[64];
        const int k = ctn_token_to_piece(v, o->toks[i], piece, sizeof piece, 0, false);
        if (k > 0 && len + (size_t)k < cap) memcpy(buf + len, piece, (size_t)k), len += (size_t)k;
    }
    return len;
}

TEST(generations_follow_the_grammar) {
    gmodel L;
    if (gmodel_load(&L, 77) < 0) {
        CHECK(0);
        return;
    }
    static const char *const gs[] = {G_JSON,   G_ARITH, G_LIST,   G_CHESS,
                                     G_REPEAT, G_YESNO, G_UNICODE};
    int complete = 0, runs = 0;
    for (size_t k = 0; k < sizeof gs / sizeof *gs; k++) {
        char err[256];
        ctn_grammar *g;
        CHECK_EQ_INT(ctn_grammar_new(&g, gs[k], err, sizeof err), 0);
        ctn_gen *e = g_engine(&L, true);
        if (e == NULL || g == NULL) {
            CHECK(0);
            ctn_gen_free(e);
            ctn_grammar_free(g);
            break;
        }
        enum { N = 24 };
        static gout out[N];
        for (int i = 0; i < N; i++) /* the first four greedy, the rest sampled */
            CHECK(g_submit(e, &out[i], gs[k], 1000 * k + (uint64_t)i, i < 4 ? 0.0f : 1.0f,
                           MAX_GEN) > 0);
        g_run(e);
        for (int i = 0; i < N; i++) {
            const gout *o = &out[i];
            char text[1024];
            const size_t len = spell(L.v, o, text, sizeof text);
            runs++;
            CHECK_EQ_INT(o->done, 1);
            if (o->finish == CTN_FINISH_ERROR) {
                printf("  grammar %zu, request %d: %s\n", k, i, o->error);
                CHECK(0);
                continue;
            }
            /* the streamed text is the bytes the grammar matched */
            if (o->len != len || memcmp(o->text, text, len) != 0) {
                printf("  grammar %zu, request %d: streamed \"%.*s\", spelled \"%.*s\"\n", k, i,
                       (int)o->len, o->text, (int)len, text);
                CHECK(0);
            }
            ctn_grammar_state *st;
            CHECK_EQ_INT(ctn_grammar_state_new(&st, g), 0);
            const int taken = ctn_grammar_accept(st, text, len, true) == 0;
            if (o->finish == CTN_FINISH_EOS) {
                complete++;
                const int r = ref_accepts(g, text, len);
                if (!taken || !ctn_grammar_complete(st) || r == 0) {
                    printf("  grammar %zu, request %d ended but \"%.*s\" is not a sentence\n", k, i,
                           (int)len, text);
                    CHECK(0);
                }
            } else {
                CHECK_EQ_INT(o->finish, CTN_FINISH_LENGTH);
                CHECK_EQ_INT(o->n, MAX_GEN);
                if (!taken) {
                    printf("  grammar %zu, request %d: \"%.*s\" is not a prefix\n", k, i, (int)len,
                           text);
                    CHECK(0);
                }
            }
            ctn_grammar_state_free(st);
        }
        ctn_gen_free(e);
        ctn_grammar_free(g);
    }
    printf("  %d generations, %d ended as whole sentences, the rest at max_tokens as prefixes\n",
           runs, complete);
    CHECK(complete >= runs / 4);
    gmodel_free(&L);
}

/* Unconstrained requests batched with grammar requests get the tokens they get alone; the
 * grammar requests too. */
TEST(grammar_sequences_leave_the_batch_unchanged) {
    gmodel L;
    if (gmodel_load(&L, 78) < 0) {
        CHECK(0);
        return;
    }
    enum { N = 6 };
    static gout alone[2 * N], mixed[2 * N];
    for (int i = 0; i < 2 * N; i++) { /* even: no grammar; odd: JSON */
        ctn_gen *e = g_engine(&L, true);
        CHECK(g_submit(e, &alone[i], i % 2 ? G_JSON : NULL, (uint64_t)i, i % 3 ? 0.8f : 0.0f, 24) >
              0);
        g_run(e);
        ctn_gen_free(e);
    }
    ctn_gen *e = g_engine(&L, true);
    for (int i = 0; i < 2 * N; i++)
        CHECK(g_submit(e, &mixed[i], i % 2 ? G_JSON : NULL, (uint64_t)i, i % 3 ? 0.8f : 0.0f, 24) >
              0);
    g_run(e);
    ctn_gen_free(e);
    int differ_from_grammar = 0;
    for (int i = 0; i < 2 * N; i++) {
        CHECK_EQ_INT(alone[i].done, 1);
        CHECK_EQ_INT(mixed[i].done, 1);
        CHECK_EQ_INT(alone[i].n, mixed[i].n);
        CHECK(memcmp(alone[i].toks, mixed[i].toks, sizeof(int32_t) * (size_t)alone[i].n) == 0);
        CHECK(alone[i].len == mixed[i].len &&
              memcmp(alone[i].text, mixed[i].text, alone[i].len) == 0);
        if (i % 2 == 0 && i + 1 < 2 * N)
            differ_from_grammar += alone[i].len != alone[i + 1].len ||
                                   memcmp(alone[i].text, alone[i + 1].text, alone[i].len) != 0;
    }
    CHECK(differ_from_grammar > 0); /* the grammar did constrain its neighbours' twins */
    gmodel_free(&L);
}

/* Preempted and recomputed grammar sequences keep their grammar state: the same tokens as
 * alone. */
TEST(grammar_state_survives_preemption) {
    gmodel L;
    if (gmodel_load(&L, 84) < 0) {
        CHECK(0);
        return;
    }
    enum { N = 8 };
    static gout alone[N], crowded[N];
    for (int i = 0; i < N; i++) {
        ctn_gen *e = g_engine(&L, true);
        CHECK(g_submit(e, &alone[i], G_JSON, 40 + (uint64_t)i, 0.9f, MAX_GEN) > 0);
        g_run(e);
        ctn_gen_free(e);
    }
    ctn_gen *e = g_engine_small(&L, 12);
    if (e == NULL) {
        CHECK(0);
        gmodel_free(&L);
        return;
    }
    for (int i = 0; i < N; i++)
        CHECK(g_submit(e, &crowded[i], G_JSON, 40 + (uint64_t)i, 0.9f, MAX_GEN) > 0);
    g_run(e);
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    ctn_gen_free(e);
    printf("  %lld preemptions\n", (long long)st.preemptions);
    CHECK(st.preemptions > 0);
    for (int i = 0; i < N; i++) {
        CHECK(crowded[i].done == 1 && crowded[i].finish != CTN_FINISH_ERROR);
        CHECK_EQ_INT(alone[i].n, crowded[i].n);
        CHECK(memcmp(alone[i].toks, crowded[i].toks, sizeof(int32_t) * (size_t)alone[i].n) == 0);
    }
    gmodel_free(&L);
}

/* Requests with grammars submitted from two threads at once to an engine running its own
 * thread: the first builds the trie while the other waits, equal texts share one compiled
 * grammar, and every output follows its grammar. */
typedef struct {
    ctn_gen *e;
    gout *out;
    int first;
} th_arg;

static const char *const TH_GRAMMARS[] = {G_YESNO, G_ARITH, G_CHESS};
static pthread_mutex_t TH_MU = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t TH_CV = PTHREAD_COND_INITIALIZER;
static int TH_LEFT;

static void th_done(void *ud, int64_t id, const ctn_gen_result *r) {
    g_on_done(ud, id, r);
    pthread_mutex_lock(&TH_MU);
    TH_LEFT--;
    pthread_cond_broadcast(&TH_CV);
    pthread_mutex_unlock(&TH_MU);
}

static void *th_submit(void *p) {
    th_arg *a = p;
    for (int i = 0; i < 6; i++) {
        ctn_gen_request r = ctn_gen_request_default();
        const int32_t prompt[] = {1, 5 + i, 9};
        r.prompt_ids = prompt;
        r.n_prompt_ids = 3;
        r.max_tokens = 24;
        r.sampling.temp = 1.0f;
        r.sampling.seed = (uint64_t)(a->first + i);
        r.grammar = TH_GRAMMARS[(a->first + i) % 3];
        r.on_token = g_on_token;
        r.on_done = th_done;
        r.ud = &a->out[i];
        char err[256];
        if (ctn_gen_submit(a->e, &r, err, sizeof err) <= 0) {
            printf("  submit: %s\n", err);
            pthread_mutex_lock(&TH_MU);
            TH_LEFT--;
            pthread_mutex_unlock(&TH_MU);
        }
    }
    return NULL;
}

TEST(grammar_requests_from_two_threads) {
    gmodel L;
    if (gmodel_load(&L, 85) < 0) {
        CHECK(0);
        return;
    }
    ctn_gen_params p = {0};
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 256;
    ctn_gen *e = NULL;
    char err[512];
    CHECK_EQ_INT(ctn_gen_new(&e, L.m, L.v, &p, err, sizeof err), 0);
    static gout out[12];
    memset(out, 0, sizeof out);
    th_arg a[2] = {{e, out, 0}, {e, out + 6, 6}};
    TH_LEFT = 12;
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, th_submit, &a[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_lock(&TH_MU);
    while (TH_LEFT > 0)
        pthread_cond_wait(&TH_CV, &TH_MU);
    pthread_mutex_unlock(&TH_MU);
    ctn_gen_free(e);
    for (int k = 0; k < 12; k++) {
        CHECK_EQ_INT(out[k].done, 1);
        CHECK(out[k].finish == CTN_FINISH_EOS || out[k].finish == CTN_FINISH_LENGTH);
        ctn_grammar *g;
        CHECK_EQ_INT(ctn_grammar_new(&g, TH_GRAMMARS[k % 3], err, sizeof err), 0);
        char text[1024];
        const size_t len = spell(L.v, &out[k], text, sizeof text);
        ctn_grammar_state *st;
        CHECK_EQ_INT(ctn_grammar_state_new(&st, g), 0);
        CHECK_EQ_INT(ctn_grammar_accept(st, text, len, true), 0);
        if (out[k].finish == CTN_FINISH_EOS) CHECK(ctn_grammar_complete(st));
        ctn_grammar_state_free(st);
        ctn_grammar_free(g);
    }
    gmodel_free(&L);
}

TEST(bad_grammars_are_refused_at_submit) {
    gmodel L;
    if (gmodel_load(&L, 79) < 0) {
        CHECK(0);
        return;
    }
    ctn_gen *e = g_engine(&L, true);
    ctn_gen_request r = ctn_gen_request_default();
    const int32_t prompt[] = {1, 5, 6};
    r.prompt_ids = prompt;
    r.n_prompt_ids = 3;
    r.grammar = "root ::= \"a\" | [b-";
    char err[512] = "";
    CHECK_EQ_INT(ctn_gen_submit(e, &r, err, sizeof err), CTN_EINVAL);
    CHECK_STR(err, "grammar line 1, column 16 (rule 'root'): a character class that is never "
                   "closed (expected ']')");
    r.grammar = "root ::= x";
    CHECK_EQ_INT(ctn_gen_submit(e, &r, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "undefined rule 'x'") != NULL);
    r.grammar = "root ::= \"a\"";
    r.pooling = CTN_POOL_MEAN;
    CHECK_EQ_INT(ctn_gen_submit(e, &r, err, sizeof err), CTN_EINVAL);
    r.pooling = CTN_POOL_NONE;
    ctn_gen_free(e);
    e = g_engine(&L, false);
    CHECK_EQ_INT(ctn_gen_submit(e, &r, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "vocabulary") != NULL);
    ctn_gen_free(e);
    /* a grammar the vocabulary cannot spell past a point (its pieces are " w<id>" only):
     * an error at that token, never a stray token */
    gmodel P;
    memset(&P, 0, sizeof P);
    randmodel_shape sh = {CTN_TYPE_F32,    64, 4, 2, 128, 2, false, 120, 10000, 1e-5f, 81,
                          RANDMODEL_LLAMA, 0};
    snprintf(P.path, sizeof P.path, "/tmp/test_grammar-%d-plain.gguf", (int)getpid());
    CHECK(randmodel_write(&sh, false, P.path, err, sizeof err) == 0 &&
          ctn_gguf_open(&P.g, P.path, err, sizeof err) == 0 &&
          ctn_model_load(&P.m, P.g, err, sizeof err) == 0 &&
          ctn_vocab_load(&P.v, P.g, err, sizeof err) == 0);
    e = g_engine(&P, true);
    gout o;
    CHECK(g_submit(e, &o, "root ::= \" w1\" [0-9] \"q\"", 3, 0.0f, 8) > 0);
    g_run(e);
    CHECK_EQ_INT(o.done, 1);
    CHECK_EQ_INT(o.finish, CTN_FINISH_ERROR);
    CHECK_EQ_INT(o.code, CTN_ERANGE);
    CHECK(strstr(o.error, "grammar allows no token") != NULL);
    CHECK_EQ_INT(o.n, 1); /* " w1<digit>" came as one token, then nothing could */
    CHECK(o.n == 1 && o.toks[0] >= 10 && o.toks[0] <= 19);
    ctn_gen_free(e);
    gmodel_free(&P);
    gmodel_free(&L);
}

/* A session's history is not matched: each request's grammar starts at its first token. */
TEST(grammar_applies_to_generated_tokens_of_a_session) {
    gmodel L;
    if (gmodel_load(&L, 80) < 0) {
        CHECK(0);
        return;
    }
    ctn_gen *e = g_engine(&L, true);
    const int64_t sess = ctn_gen_session_new(e);
    CHECK(sess > 0);
    for (int turn = 0; turn < 3; turn++) {
        ctn_gen_request r = ctn_gen_request_default();
        const int32_t prompt[] = {1, 40, 41, 42};
        r.prompt_ids = turn == 0 ? prompt : prompt + 1;
        r.n_prompt_ids = turn == 0 ? 4 : 3;
        r.session = sess;
        r.max_tokens = 16;
        r.grammar = G_YESNO;
        gout o;
        memset(&o, 0, sizeof o);
        r.on_token = g_on_token;
        r.on_done = g_on_done;
        r.ud = &o;
        char err[256];
        CHECK(ctn_gen_submit(e, &r, err, sizeof err) > 0);
        g_run(e);
        CHECK_EQ_INT(o.done, 1);
        CHECK_EQ_INT(o.finish, CTN_FINISH_EOS);
        char text[256];
        const size_t len = spell(L.v, &o, text, sizeof text);
        CHECK(ref_accepts(g_yesno(), text, len) == 1);
    }
    ctn_gen_free(e);
    gmodel_free(&L);
}

/* ---- allocation failures ----------------------------------------------------------------------
 */

/* Compiles a grammar, makes the trie of v (or of the synthetic vocabulary) and a state, and
 * walks 20 tokens with masks: 0, or the first error (which must be CTN_ENOMEM). */
static int alloc_run(const ctn_vocab *v, const synvocab *sv, const char *gtext) {
    char err[256];
    ctn_grammar *g = NULL;
    ctn_token_trie *t = NULL;
    ctn_grammar_state *st = NULL;
    float logits[4096];
    int rc = ctn_grammar_new(&g, gtext, err, sizeof err);
    if (rc == 0)
        rc = v != NULL ? ctn_token_trie_from_vocab(&t, v, err, sizeof err)
                       : ctn_token_trie_new(&t, sv->n, (const char *const *)sv->p, sv->len, sv->eog,
                                            err, sizeof err);
    if (rc == 0) rc = ctn_grammar_state_new(&st, g);
    uint64_t rng = 3;
    for (int step = 0; rc == 0 && step < 20; step++) {
        const int32_t n = ctn_token_trie_n_tokens(t);
        for (int32_t i = 0; i < n && i < 4096; i++)
            logits[i] = 1.0f;
        const int64_t na = ctn_grammar_mask(st, t, logits);
        if (na < 0) {
            rc = (int)na;
            break;
        }
        if (na == 0) break;
        int32_t pick = -1;
        int64_t k = (int64_t)(rng_next(&rng) % (uint64_t)na);
        for (int32_t i = 0; i < n; i++)
            if (logits[i] == 1.0f && k-- == 0) pick = i;
        rc = ctn_grammar_accept_token(st, t, pick);
        if (rc == CTN_EINVAL) rc = 0, step = 20; /* an end of generation: done */
    }
    if (rc != 0 && rc != CTN_ENOMEM) printf("  rc %d: %s\n", rc, err);
    ctn_grammar_state_free(st);
    ctn_token_trie_free(t);
    ctn_grammar_free(g);
    return rc;
}

TEST(allocation_failures_in_compiling_and_matching) {
    gmodel L;
    if (gmodel_load(&L, 82) < 0) {
        CHECK(0);
        return;
    }
    synvocab sv;
    synvocab_make(&sv, 5, 400);
    int failures = 0;
    for (int which = 0; which < 3; which++) {
        const char *gtext = which == 2 ? G_UNICODE : G_JSON;
        for (int once = 0; once < 2; once++) {
            for (long n = 0;; n++) {
                const long before = ctn__alloc_n_failed;
                ctn__alloc_fail_once = once;
                ctn__alloc_fail_after = n;
                const int rc = alloc_run(which == 0 ? L.v : NULL, &sv, gtext);
                ctn__alloc_fail_after = -1;
                ctn__alloc_fail_once = false;
                const bool hit = ctn__alloc_n_failed != before;
                if (!hit) {
                    CHECK_EQ_INT(rc, 0);
                    break;
                }
                failures++;
                if (!once) CHECK_EQ_INT(rc, CTN_ENOMEM);
                if (rc != 0 && rc != CTN_ENOMEM) {
                    CHECK(0);
                    break;
                }
            }
        }
    }
    printf("  %d failed allocations, each a clean CTN_ENOMEM or recovered from\n", failures);
    CHECK(failures > 100);
    /* the engine: a request with a grammar under failing allocations ends cleanly */
    int engine_failures = 0;
    for (long n = 0;; n++) {
        ctn_gen *e = g_engine(&L, true);
        if (e == NULL) {
            CHECK(0);
            break;
        }
        gout o;
        const long before = ctn__alloc_n_failed;
        ctn__alloc_fail_after = n;
        QUIET = true;
        const int64_t id = g_submit(e, &o, G_JSON, 9, 0.7f, 12);
        if (id > 0) g_run(e);
        ctn__alloc_fail_after = -1;
        QUIET = false;
        const bool hit = ctn__alloc_n_failed != before;
        ctn_gen_free(e); /* a request still waiting for memory is cancelled here */
        if (id > 0) {
            CHECK_EQ_INT(o.done, 1);
            if (o.finish == CTN_FINISH_ERROR || o.finish == CTN_FINISH_CANCELLED) CHECK(hit);
        } else {
            CHECK_EQ_INT(id, CTN_ENOMEM);
        }
        if (!hit) {
            CHECK(id > 0 && o.finish != CTN_FINISH_ERROR);
            break;
        }
        engine_failures++;
    }
    printf("  %d failed allocations in the engine's grammar requests\n", engine_failures);
    synvocab_free(&sv);
    gmodel_free(&L);
}

/* ---- JSON Schema to GBNF ----------------------------------------------------------------------
 */

static const char *const SCHEMAS[] = {
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":"
    "\"integer\"}},\"required\":[\"name\",\"age\"]}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"boolean\"},\"b\":{"
    "\"type\":\"null\"},"
    "\"c\":{\"type\":\"number\"}}}",
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":"
    "\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":3}},\"required\":["
    "\"id\"]}",
    "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,"
    "\"maxItems\":4}",
    "{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"minItems\":1}",
    "{\"type\":\"array\",\"maxItems\":0}",
    "{\"enum\":[\"red\",\"green\",\"blue\"]}",
    "{\"const\":{\"k\":[1,2]}}",
    "{\"type\":[\"string\",\"null\"]}",
    "{\"type\":\"string\",\"minLength\":2,\"maxLength\":5}",
    "{}",
    "true",
    "{\"type\":\"object\"}",
    "{\"type\":\"object\",\"properties\":{\"p\":{\"type\":\"object\","
    "\"properties\":{\"q\":{"
    "\"enum\":[1,2.5,\"x\",null,true]}},\"required\":[\"q\"]}},\"required\":["
    "\"p\"]}",
    "{\"properties\":{\"x\":{\"type\":\"integer\"}},\"required\":[\"x\"]}",
    "{\"items\":{\"type\":\"boolean\"}}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{"
    "\"type\":"
    "\"integer\"},\"c\":{\"type\":\"integer\"}},\"required\":[\"b\"]}",
    "{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":"
    "\"integer\"},"
    "\"maxItems\":2},\"maxItems\":2}",
    "{\"type\":\"object\",\"properties\":{\"\xc3\xa9\":{\"type\":\"string\","
    "\"maxLength\":1},"
    "\"with space\":{\"const\":\"a\\\"b\"}},\"required\":[\"with space\"],"
    "\"additionalProperties\":false,\"title\":\"t\",\"description\":\"d\"}",
    "{\"type\":\"number\"}",
    "{\"type\":\"boolean\"}",
    "{\"type\":\"object\",\"properties\":{\"list\":{\"type\":\"array\","
    "\"items\":{\"type\":"
    "\"object\",\"properties\":{\"k\":{\"type\":\"string\",\"minLength\":1}},"
    "\"required\":[\"k\"]}"
    ",\"minItems\":1,\"maxItems\":2}},\"required\":[\"list\"]}",
    "{\"type\":\"integer\",\"$comment\":\"c\",\"default\":3,\"examples\":[1]}",
    "{\"type\":[\"integer\",\"boolean\",\"array\"],\"items\":{\"const\":0},"
    "\"maxItems\":2}",
    "{\"type\":\"object\",\"properties\":{\"x\":{\"enum\":[[1],{\"a\":null}]}},"
    "\"required\":[\"x\"]}",
    "{\"type\":\"string\",\"maxLength\":0}",
    "{\"type\":\"array\",\"items\":{\"type\":\"string\",\"minLength\":1,"
    "\"maxLength\":1},"
    "\"minItems\":3,\"maxItems\":3}",
    "{\"type\":\"object\",\"properties\":{\"a\":true,\"b\":{}},\"required\":["
    "\"a\",\"b\"]}",
    "{\"type\":\"object\",\"properties\":{\"o1\":{\"type\":\"integer\"},\"o2\":"
    "{\"type\":"
    "\"string\"},\"o3\":{\"type\":\"boolean\"},\"o4\":{\"type\":\"null\"}}}",
    "{\"type\":\"null\"}",
};
#define N_SCHEMAS ((int)(sizeof SCHEMAS / sizeof *SCHEMAS))

static int utf8_count(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* A validator for the subset (json_schema.h), written apart from the converter. */
static bool validate(const cJSON *sc, const cJSON *v) {
    if (cJSON_IsTrue(sc)) return true;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(sc, "const");
    if (c != NULL) return cJSON_Compare(c, v, true);
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(sc, "enum");
    if (en != NULL) {
        for (const cJSON *x = en->child; x != NULL; x = x->next)
            if (cJSON_Compare(x, v, true)) return true;
        return false;
    }
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(sc, "type");
    if (ty == NULL) {
        if (cJSON_GetObjectItemCaseSensitive(sc, "properties") != NULL && !cJSON_IsObject(v))
            return false;
        if (cJSON_GetObjectItemCaseSensitive(sc, "items") != NULL && !cJSON_IsArray(v))
            return false;
    } else {
        bool ok = false;
        const cJSON *first = cJSON_IsArray(ty) ? ty->child : ty;
        for (const cJSON *t = first; t != NULL && !ok; t = cJSON_IsArray(ty) ? t->next : NULL) {
            const char *n = t->valuestring;
            ok = (!strcmp(n, "object") && cJSON_IsObject(v)) ||
                 (!strcmp(n, "array") && cJSON_IsArray(v)) ||
                 (!strcmp(n, "string") && cJSON_IsString(v)) ||
                 (!strcmp(n, "number") && cJSON_IsNumber(v)) ||
                 (!strcmp(n, "integer") && cJSON_IsNumber(v) &&
                  v->valuedouble == floor(v->valuedouble)) ||
                 (!strcmp(n, "boolean") && cJSON_IsBool(v)) ||
                 (!strcmp(n, "null") && cJSON_IsNull(v));
        }
        if (!ok) return false;
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(sc, "properties");
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(sc, "required");
        if (props != NULL || req != NULL) {
            for (const cJSON *k = v->child; k != NULL; k = k->next) {
                const cJSON *ps = props ? cJSON_GetObjectItemCaseSensitive(props, k->string) : NULL;
                if (ps == NULL || !validate(ps, k)) return false;
            }
            for (const cJSON *r = req ? req->child : NULL; r != NULL; r = r->next)
                if (cJSON_GetObjectItemCaseSensitive(v, r->valuestring) == NULL) return false;
        }
    }
    if (cJSON_IsArray(v)) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(sc, "items");
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(sc, "minItems");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(sc, "maxItems");
        const int n = cJSON_GetArraySize(v);
        if ((lo && n < lo->valueint) || (hi && n > hi->valueint)) return false;
        for (const cJSON *x = v->child; x != NULL && it != NULL; x = x->next)
            if (!validate(it, x)) return false;
    }
    if (cJSON_IsString(v)) {
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(sc, "minLength");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(sc, "maxLength");
        const int n = utf8_count(v->valuestring);
        if ((lo && n < lo->valueint) || (hi && n > hi->valueint)) return false;
    }
    return true;
}

/* Whether text parses as JSON and validates against the schema (-1: a lone surrogate
 * escape, which JSON's grammar allows and cJSON refuses). */
static int valid_instance(const cJSON *sc, const char *text, size_t len) {
    cJSON *v = cJSON_ParseWithLength(text, len);
    if (v == NULL) {
        for (size_t i = 0; i + 2 < len; i++)
            if (text[i] == '\\' && text[i + 1] == 'u' && (text[i + 2] == 'd' || text[i + 2] == 'D'))
                return -1;
        return 0;
    }
    const int ok = validate(sc, v);
    cJSON_Delete(v);
    return ok;
}

TEST(json_schemas_become_grammars_of_their_instances) {
    uint64_t rng = 17;
    int derived = 0, lone = 0;
    for (int k = 0; k < N_SCHEMAS; k++) {
        char *gbnf = NULL, err[256];
        const int rc =
            ctn_json_schema_to_gbnf(SCHEMAS[k], strlen(SCHEMAS[k]), &gbnf, err, sizeof err);
        if (rc != 0) printf("  schema %d: %s\n", k, err);
        CHECK_EQ_INT(rc, 0);
        if (gbnf == NULL) continue;
        ctn_grammar *g = NULL;
        if (ctn_grammar_new(&g, gbnf, err, sizeof err) != 0) {
            printf("  schema %d: %s\n%s", k, err, gbnf);
            CHECK(0);
            free(gbnf);
            continue;
        }
        cJSON *sc = cJSON_Parse(SCHEMAS[k]);
        int got = 0;
        for (int t = 0; t < 400; t++) {
            char text[256];
            size_t len = 0;
            if (!derive(g, g->alts[g->alt_off[g->root]], &rng, text, &len, 200, 0)) continue;
            const int ok = valid_instance(sc, text, len);
            if (ok < 0) {
                lone++;
                continue;
            }
            if (!ok) {
                printf("  schema %d: derived \"%.*s\" does not validate\n%s", k, (int)len, text,
                       gbnf);
                CHECK(0);
                break;
            }
            got++;
        }
        derived += got;
        if (got == 0) printf("  schema %d: no sentence derived\n", k);
        CHECK(got > 0);
        cJSON_Delete(sc);
        ctn_grammar_free(g);
        free(gbnf);
    }
    printf("  %d schemas, %d derived instances validate (%d with lone surrogates "
           "skipped)\n",
           N_SCHEMAS, derived, lone);
}

TEST(json_schema_instances_accepted_and_rejected) {
    static const struct {
        int schema;
        const char *text;
        int ok;
    } cases[] = {
        {0, "{\"name\": \"x\", \"age\": 3}", 1},
        {0, "{ \"name\" : \"Ann\",\"age\":-12 }", 1},
        {0, "{\"age\": 3, \"name\": \"x\"}", 0}, /* properties come in the schema's order */
        {0, "{\"name\": \"x\"}", 0},
        {0, "{\"name\": \"x\", \"age\": 3.5}", 0},
        {0, "{\"name\": 1, \"age\": 3}", 0},
        {0, "{\"name\": \"x\", \"age\": 3, \"z\": 1}", 0},
        {1, "{}", 1},
        {1, "{\"c\": 1.5e3}", 1},
        {1, "{\"a\": true, \"c\": 2}", 1},
        {1, "{\"b\": null, \"a\": true}", 0},
        {1, "{\"a\": true,}", 0},
        {3, "[1, 2]", 1},
        {3, "[1, 2, 3, 4]", 1},
        {3, "[1]", 0},
        {3, "[1, 2, 3, 4, 5]", 0},
        {5, "[]", 1},
        {5, "[1]", 0},
        {6, "\"green\"", 1},
        {6, "\"purple\"", 0},
        {7, "{\"k\":[1,2]}", 1},
        {7, "{\"k\": [1, 2]}", 0}, /* a constant is matched as cJSON writes it */
        {8, "null", 1},
        {8, "\"s\"", 1},
        {8, "1", 0},
        {9, "\"ab\"", 1},
        {9, "\"abcdef\"", 0},
        {9, "\"a\"", 0},
        {9, "\"\\u00e9\\n\"", 1},
        {16, "{\"b\": 1}", 1},
        {16, "{\"b\": 2, \"a\": 1, \"c\": 3}", 1},
        {16, "{\"b\": 2, \"c\": 3}", 1},
        {16, "{\"a\": 1, \"b\": 2, \"c\": 3}", 0}, /* required first */
        {16, "{\"b\": 2, \"c\": 3, \"a\": 1}", 0},
        {16, "{\"a\": 1, \"c\": 3}", 0},
        {18, "{\"with space\": \"a\\\"b\"}", 1},
        {18, "{\"with space\": \"a\\\"b\", \"\xc3\xa9\": \"\xc3\xbc\"}", 1},
        {18, "{\"with space\": \"a\\\"b\", \"\xc3\xa9\": \"ab\"}", 0},
        {18, "{\"\xc3\xa9\": \"\xc3\xbc\", \"with space\": \"a\\\"b\"}", 0}, /* required first */
        {23, "[0, 0]", 1},
        {23, "true", 1},
        {23, "-7", 1},
        {23, "[1]", 0},
        {29, "null", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *gbnf = NULL, err[256];
        const char *sch = SCHEMAS[cases[i].schema];
        CHECK_EQ_INT(ctn_json_schema_to_gbnf(sch, strlen(sch), &gbnf, err, sizeof err), 0);
        ctn_grammar *g = NULL;
        if (gbnf == NULL || ctn_grammar_new(&g, gbnf, err, sizeof err) != 0) {
            CHECK(0);
            free(gbnf);
            continue;
        }
        const int m = match(g, cases[i].text, strlen(cases[i].text));
        if (m != cases[i].ok) {
            printf("  schema %d, %s: matcher %d, expected %d\n%s", cases[i].schema, cases[i].text,
                   m, cases[i].ok, gbnf);
            CHECK(0);
        }
        ctn_grammar_free(g);
        free(gbnf);
    }
}

/* An object schema with no properties still defines the space its braces use (fuzz_json_schema
 * found {"properties":{}} giving a grammar with 'space' undefined). */
TEST(json_schema_object_without_properties) {
    static const char *const schemas[] = {"{\"properties\":{}}",
                                          "{\"type\":\"object\",\"properties\":{}}"};
    for (size_t k = 0; k < 2; k++) {
        char *gbnf = NULL, err[256] = "";
        CHECK_EQ_INT(
            ctn_json_schema_to_gbnf(schemas[k], strlen(schemas[k]), &gbnf, err, sizeof err), 0);
        ctn_grammar *g = NULL;
        const int rc = gbnf != NULL ? ctn_grammar_new(&g, gbnf, err, sizeof err) : -1;
        if (rc != 0) printf("  %s: %s\n%s", schemas[k], err, gbnf ? gbnf : "");
        CHECK_EQ_INT(rc, 0);
        if (g != NULL) {
            CHECK_EQ_INT(match(g, "{}", 2), 1);
            CHECK_EQ_INT(match(g, "{ } ", 4), 1);
            CHECK_EQ_INT(match(g, "{\"a\":1}", 7), 0);
        }
        ctn_grammar_free(g);
        free(gbnf);
    }
}

TEST(json_schema_keywords_outside_the_subset_are_named) {
    static const struct {
        const char *schema, *msg;
    } bad[] = {
        {"{\"not\":{\"type\":\"string\"}}", "schema at /: 'not' is not supported"},
        {"{\"type\":\"object\",\"properties\":{\"age\":{\"type\":\"number\","
         "\"minimum\":0}}}",
         "schema at /properties/age: 'minimum' on type \"number\" is not supported (bounds are "
         "for type \"integer\")"},
        {"{\"type\":\"string\",\"pattern\":\"^a(?=b)$\"}",
         "schema at /: 'pattern' at byte 2: lookaround, named groups and flags ('(?') are not "
         "supported"},
        {"{\"$ref\":\"#/$defs/x\"}", "schema at /: '$ref' '#/$defs/x' names no definition"},
        {"{\"type\":\"object\",\"patternProperties\":{}}",
         "schema at /: 'patternProperties' is not supported"},
        {"{\"type\":\"array\",\"items\":[{\"type\":\"string\"}]}",
         "schema at /: 'items' as a list (draft 4 tuples) is not supported; use 'prefixItems'"},
        {"{\"type\":\"array\",\"items\":{\"type\":\"string\",\"format\":\"email\"}"
         "}",
         "schema at /items: 'format' \"email\" is not supported (only date, time, date-time, "
         "uuid)"},
        {"{\"type\":\"array\",\"uniqueItems\":true}",
         "schema at /: 'uniqueItems' is not supported"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}",
         "schema at /: required property 'b' is not in 'properties'"},
        {"{\"type\":\"strin\"}", "schema at /: unknown type 'strin'"},
        {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":1}",
         "schema at /: 'maxItems' 1 is below 'minItems' 3"},
        {"{\"type\":\"array\",\"minItems\":-1}",
         "schema at /: 'minItems' must be a whole number from 0 to 2000"},
        {"false", "schema at /: the schema false matches nothing"},
        {"3", "schema at /: a schema must be an object or a boolean"},
        {"{\"enum\":[]}", "schema at /: 'enum' must be a non-empty array"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *gbnf = (char *)"x", err[256] = "";
        CHECK_EQ_INT(
            ctn_json_schema_to_gbnf(bad[i].schema, strlen(bad[i].schema), &gbnf, err, sizeof err),
            CTN_EINVAL);
        CHECK(gbnf == NULL);
        if (strcmp(err, bad[i].msg) != 0) {
            printf("  case %zu:\n    got  %s\n    want %s\n", i, err, bad[i].msg);
            CHECK(0);
        }
    }
    char *gbnf, err[256];
    CHECK_EQ_INT(ctn_json_schema_to_gbnf("{\"type\":", 8, &gbnf, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "not valid JSON") != NULL);
    const char *bad_utf8 = "{\"properties\":{\"a\xff\":{}}}";
    CHECK_EQ_INT(ctn_json_schema_to_gbnf(bad_utf8, strlen(bad_utf8), &gbnf, err, sizeof err),
                 CTN_EINVAL);
    CHECK_STR(err, "schema: not valid UTF-8");
}

/* On the random model, every generation under a schema's grammar that ends is JSON that
 * validates against the schema. */
TEST(generations_under_json_schemas_validate) {
    gmodel L;
    if (gmodel_load(&L, 83) < 0) {
        CHECK(0);
        return;
    }
    int ended = 0, runs = 0;
    for (int k = 0; k < N_SCHEMAS; k++) {
        char *gbnf = NULL, err[256];
        CHECK_EQ_INT(
            ctn_json_schema_to_gbnf(SCHEMAS[k], strlen(SCHEMAS[k]), &gbnf, err, sizeof err), 0);
        if (gbnf == NULL) continue;
        cJSON *sc = cJSON_Parse(SCHEMAS[k]);
        ctn_gen *e = g_engine(&L, true);
        enum { N = 6 };
        static gout out[N];
        for (int i = 0; i < N; i++)
            CHECK(g_submit(e, &out[i], gbnf, 500 * (uint64_t)k + (uint64_t)i, i == 0 ? 0.0f : 1.0f,
                           MAX_GEN) > 0);
        g_run(e);
        for (int i = 0; i < N; i++) {
            runs++;
            CHECK(out[i].done == 1 && out[i].finish != CTN_FINISH_ERROR);
            if (out[i].finish != CTN_FINISH_EOS) continue;
            ended++;
            const int ok = valid_instance(sc, out[i].text, out[i].len);
            if (ok == 0) {
                printf("  schema %d: \"%.*s\" does not validate\n", k, (int)out[i].len,
                       out[i].text);
                CHECK(0);
            }
        }
        ctn_gen_free(e);
        cJSON_Delete(sc);
        free(gbnf);
    }
    printf("  %d generations under %d schemas, %d ended and validate, the rest "
           "at max_tokens\n",
           runs, N_SCHEMAS, ended);
    CHECK(ended >= runs / 4);
    gmodel_free(&L);
}

int main(void) {
    RUN(parses_llama_cpp_style_grammars);
    RUN(parse_errors_name_line_column_and_rule);
    RUN(matcher_accepts_exactly_the_chosen_cases);
    RUN(matcher_agrees_with_the_reference_on_random_strings);
    RUN(partial_utf8_is_carried_between_pieces);
    RUN(ambiguity_past_the_limit_is_an_error);
    RUN(trie_mask_equals_brute_force_on_synthetic_vocabularies);
    RUN(trie_mask_on_real_vocabularies_and_its_cost);
    RUN(cached_masks_equal_brute_force);
    RUN(mask_walk_past_its_memo);
    RUN(raw_detok_stream_keeps_the_pieces);
    RUN(generations_follow_the_grammar);
    RUN(grammar_sequences_leave_the_batch_unchanged);
    RUN(grammar_state_survives_preemption);
    RUN(grammar_requests_from_two_threads);
    RUN(bad_grammars_are_refused_at_submit);
    RUN(grammar_applies_to_generated_tokens_of_a_session);
    RUN(allocation_failures_in_compiling_and_matching);
    RUN(json_schemas_become_grammars_of_their_instances);
    RUN(json_schema_instances_accepted_and_rejected);
    RUN(json_schema_object_without_properties);
    RUN(json_schema_keywords_outside_the_subset_are_named);
    RUN(generations_under_json_schemas_validate);
    ctn_grammar_free(YESNO);
    return test_summary();
}
