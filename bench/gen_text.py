#!/usr/bin/env python3
"""Writes a few MB of mixed text for the tokenizer benchmark, the same bytes for a given
seed and size on every machine (random.Random with a fixed seed; only choice/randint/
random are used, whose output Python keeps stable across 3.x versions).

The mix is what a tokenizer meets in prompts, not one language: English, German and French
with accents, Chinese, Japanese, Russian, Arabic, C and Python code with indentation,
whitespace runs, numbers of every length, emoji with ZWJ sequences and skin tones, URLs and
punctuation runs. Every line is one paragraph or one code block line; the benchmark
tokenizes line by line.

    python3 bench/gen_text.py --size 4000000 --seed 1 > /tmp/mixed.txt
"""
import argparse
import random
import sys

EN = ("the of and to in is was for that with as on by at from his her which this are be "
      "have had not but what all were when we there can an your their said if do will each "
      "about how up out them then she many some so these would other into has more two like "
      "time could people my than first water been call who its now find long down day did get "
      "come made may part tokenizer model context window prompt chain engine latency cache "
      "throughput sentence paragraph language benchmark measurement result".split())
EN_CAP = ["The", "It", "We", "They", "This", "However,", "In", "When", "After", "Most"]
CONTRACT = ["don't", "isn't", "it's", "we'll", "they've", "I'm", "you'd", "can't", "she's",
            "WE'LL", "DON'T", "O'Neil", "rock'n'roll"]
DE = ("der die das und ist nicht für über Straße Mädchen größer Größe Äpfel Öl Übung schön "
      "müssen können Brücke Frühstück Geschäftsführer Donaudampfschifffahrt Häuser Bäume "
      "Fußgängerübergang weiß heißen Gemütlichkeit".split())
FR = ("le la les et est où à été élève café naïve cœur français déjà très après garçon "
      "hôpital forêt noël Ça façon œuvre problème réveillé s'il qu'il l'été aujourd'hui".split())
RU = ("и в не на я быть он с что а по это она этот к но они мы как из у который то за свой "
      "привет мир язык модель токенизатор Москва Россия пример большой ещё объём".split())
AR = ("في من على إلى عن مع هذا هذه الذي التي كان كانت اللغة العربية النموذج مرحبا بالعالم "
      "كتاب مدرسة جميل الحمد لله".split())
ZH = ("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家"
      "学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见"
      "经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话"
      "模型分词器语言处理数据")
JA_KANA = ("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろ"
           "わをんがぎぐげござじずぜぞだぢづでどばびぶべぼぱぴぷぺぽ"
           "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン"
           "ー")
JA_WORDS = ["日本語", "東京", "私は", "です", "ます", "ありがとう", "こんにちは", "トークナイザー",
            "モデル", "漢字", "ひらがな", "カタカナ", "。", "、", "「", "」"]
EMOJI = ["🦙", "😀", "👍", "🎉", "❤️", "🔥", "🚀", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇩🇪", "🇯🇵",
         "👋🏿", "🤷‍♀️", "✨", "☕", "🧪", "🙂🙃"]
PUNCT = ["...", "!!!", "?!", "—", "–", "«", "»", "„", "“", "”", "(", ")", "[", "]", "{", "}",
         "::", "->", "=>", "&&", "||", "...?", "#", "@", "%", "$", "€", "£", "¥", "°", "§",
         "©", "™", "±", "×", "÷", "≠", "≤", "≥", "∞", "√", "π", "½", "¾"]
IDENT = ["buf", "len", "ctx", "node", "result", "tokens", "n_tokens", "vocab", "i", "j", "k",
         "self", "data", "value", "key", "cache_size", "max_len", "error", "ptr", "offset"]
PY_LINES = [
    "def {a}({b}, {c}={n}):",
    "    if {a} is None or len({b}) > {n}:",
    "        return [{b} * 2 for {b} in range({n})]",
    "    {a} = {{'{b}': {n}, \"{c}\": {f}}}",
    "    for {a}, {b} in enumerate({c}):",
    "        print(f\"{{{a}}}: {{{b}!r}}\")",
    "class {A}({B}):",
    "    \"\"\"Docstring for {A}.\"\"\"",
    "\t\treturn self.{a}.get('{b}', {n})  # comment: {a}",
    "import os, sys; from collections import defaultdict",
    "{a} = lambda {b}: {b} ** {n} % 0x{h}",
]
C_LINES = [
    "static int {a}_{b}(const char *{c}, size_t {a})",
    "{{",
    "    for (size_t {a} = 0; {a} < {n}; {a}++) {{",
    "        if ({b}[{a}] == '\\n') return -{n};",
    "\t{c}->{a} = ({A} *)malloc(sizeof(*{c}) * {n});",
    "    }}",
    "    /* {A}: see {b}() for why */",
    "    return {a} != NULL ? {n} : 0x{h}u;",
    "}}",
    "#define {A}_MAX {n}",
    "#include <stdint.h>",
    "    uint32_t {a} = ({b} >> {n}) & 0x{h};",
]


def rnd_number(r):
    kind = r.randint(0, 5)
    if kind == 0:
        return str(r.randint(0, 9))
    if kind == 1:
        return str(r.randint(0, 10 ** r.randint(1, 18)))
    if kind == 2:
        return "%.*f" % (r.randint(1, 6), r.random() * 10 ** r.randint(0, 6))
    if kind == 3:
        return "{:,}".format(r.randint(1000, 10 ** 12))
    if kind == 4:
        return "%d-%02d-%02d" % (r.randint(1900, 2100), r.randint(1, 12), r.randint(1, 28))
    return "+%d (%03d) %03d-%04d" % (r.randint(1, 99), r.randint(0, 999), r.randint(0, 999),
                                      r.randint(0, 9999))


def words(r, pool, n):
    return [r.choice(pool) for _ in range(n)]


def sentence_en(r):
    w = [r.choice(EN_CAP)] + words(r, EN, r.randint(4, 18))
    if r.random() < 0.3:
        w.insert(r.randint(1, len(w)), r.choice(CONTRACT))
    if r.random() < 0.3:
        w.insert(r.randint(1, len(w)), rnd_number(r))
    if r.random() < 0.1:
        w.insert(r.randint(1, len(w)), w[-1].upper())
    return " ".join(w) + r.choice([".", ".", ".", "?", "!", ";", ":", "..."])


def sentence_from(r, pool, end="."):
    w = words(r, pool, r.randint(4, 16))
    w[0] = w[0][:1].upper() + w[0][1:]
    return " ".join(w) + end


def sentence_zh(r):
    s = "".join(r.choice(ZH) for _ in range(r.randint(8, 40)))
    if r.random() < 0.3:
        s += rnd_number(r)
    return s + r.choice(["。", "，", "！", "？", "；"])


def sentence_ja(r):
    parts = []
    for _ in range(r.randint(3, 10)):
        if r.random() < 0.5:
            parts.append(r.choice(JA_WORDS))
        else:
            parts.append("".join(r.choice(JA_KANA) for _ in range(r.randint(1, 6))))
    return "".join(parts) + "。"


def sentence_ar(r):
    return " ".join(words(r, AR, r.randint(4, 14))) + r.choice([".", "؟", "،"])


def sentence_mixed(r):
    bits = []
    for _ in range(r.randint(3, 12)):
        k = r.randint(0, 7)
        if k == 0:
            bits.append(r.choice(EMOJI) * r.randint(1, 3))
        elif k == 1:
            bits.append(r.choice(PUNCT) * r.randint(1, 4))
        elif k == 2:
            bits.append(rnd_number(r))
        elif k == 3:
            bits.append("https://example.org/%s/%s?id=%d&q=%s" % (
                r.choice(EN), r.choice(IDENT), r.randint(0, 99999), r.choice(EN)))
        elif k == 4:
            bits.append(r.choice(EN).upper() + r.choice(["_", "-", "."]) + r.choice(IDENT))
        elif k == 5:
            bits.append(r.choice(" \t") * r.randint(2, 9))
        elif k == 6:
            bits.append("".join(r.choice("abcdefghijklmnopqrstuvwxyz")
                                for _ in range(r.randint(12, 40))))
        else:
            bits.append(r.choice(CONTRACT))
    return " ".join(bits)


def code_line(r, lines):
    t = r.choice(lines)
    return t.format(a=r.choice(IDENT), b=r.choice(IDENT), c=r.choice(IDENT),
                    A=r.choice(IDENT).capitalize(), B=r.choice(IDENT).capitalize(),
                    n=r.randint(0, 4096), f=round(r.random() * 100, 3),
                    h="%x" % r.randint(0, 0xFFFFFFFF))


SENTENCES = [(sentence_en, 30), (lambda r: sentence_from(r, DE), 8),
             (lambda r: sentence_from(r, FR), 8), (lambda r: sentence_from(r, RU), 8),
             (sentence_ar, 5), (sentence_zh, 8), (sentence_ja, 6), (sentence_mixed, 10)]


def pick_weighted(r, table):
    total = sum(w for _, w in table)
    x = r.random() * total
    for item, w in table:
        x -= w
        if x < 0:
            return item
    return table[-1][0]


def block(r):
    """One paragraph (one line) or one code block (several lines)."""
    k = r.random()
    if k < 0.15:
        lines = PY_LINES if r.random() < 0.5 else C_LINES
        return "\n".join(code_line(r, lines) for _ in range(r.randint(3, 15))) + "\n"
    if k < 0.20:
        # Whitespace runs: blank lines, trailing spaces, tab/space indentation, CRLF.
        return r.choice(["\n", "\n\n", "   \n", "\t\t\n", " \t \n", "\r\n", "    \n\n\n"])
    if k < 0.30:
        f = pick_weighted(r, SENTENCES)
        return f(r) + "\n"
    # A paragraph: one language most of the time, sometimes switching mid-paragraph.
    f = pick_weighted(r, SENTENCES)
    out = []
    for _ in range(r.randint(2, 9)):
        if r.random() < 0.15:
            f = pick_weighted(r, SENTENCES)
        out.append(f(r))
    sep = " " if r.random() < 0.9 else "  "
    return sep.join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4_000_000, help="bytes to write (about)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--output", help="file to write (default stdout)")
    a = ap.parse_args()
    r = random.Random(a.seed)
    parts, n = [], 0
    while n < a.size:
        b = block(r).encode("utf-8")
        parts.append(b)
        n += len(b)
    data = b"".join(parts)
    if a.output:
        with open(a.output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
