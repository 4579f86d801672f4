#!/bin/sh
# `catena perplexity` on stories260K: the running and final PPL as llama-perplexity prints
# them, over the windows the text holds; the same with any thread count; the base file in
# llama.cpp's layout (header, tokens, one row per scored position); the model against its own
# base has KLD ~0 and the same top token everywhere, Q8_0 a small positive KLD and Q4_0 a
# larger one; bad input, bad options and bad or mismatched base files are clear errors.
set -u
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models"
[ -f "$M/stories260K.gguf" ] || {
    echo "shared models missing; skipping"
    exit 77
}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL: $*"
}
S="$M/stories260K.gguf"

# A text of TinyStories-like sentences, about 4,000 tokens.
i=0
while [ $i -lt 20 ]; do
    printf 'Once upon a time, there was a little girl named Lily. She loved to play outside '
    printf 'in the park. One day, she saw a big, red ball. She wanted to play with it, but it '
    printf 'was too high. Lily asked her mom for help. Tom had a small dog named Max. Max liked '
    printf 'to run and jump in the sun. One day, Tom and Max went to the lake. They saw a duck '
    printf 'in the water. Max barked and the duck swam away. Tom laughed. The bird sang a happy '
    printf 'song. Sue and Ben ate cake with their friends. The sky was blue and the grass was '
    printf 'green. %s\n' "$i"
    i=$((i + 1))
done >"$tmp/text.txt"
n_tok=$("$CATENA" tokenize -m "$S" <"$tmp/text.txt" | wc -w)
[ "$n_tok" -gt 1024 ] && ok || bad "the text has only $n_tok tokens"

# ppl FILE: the number after "PPL = " in a run's output; unc FILE: after "+/-".
ppl() { sed -n 's/^Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\)$/\1/p' "$1"; }
unc() { sed -n 's/^Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\)$/\2/p' "$1"; }

# PPL over windows of 128: n_tok / 128 windows, the running value after each, a finite
# estimate above 1 with a positive uncertainty.
"$CATENA" perplexity -m "$S" -f "$tmp/text.txt" -c 128 -t 2 >"$tmp/p2" 2>"$tmp/e2" ||
    bad "perplexity: $(cat "$tmp/e2")"
n_win=$((n_tok / 128))
p=$(ppl "$tmp/p2")
u=$(unc "$tmp/p2")
awk -v p="$p" -v u="$u" 'BEGIN { exit !(p + 0 > 1 && p + 0 < 100 && u + 0 > 0) }' && ok ||
    bad "PPL '$p' +/- '$u': $(cat "$tmp/p2")"
grep -q "^\[1\][0-9]*\.[0-9]\{4\},\[2\]" "$tmp/p2" && grep -q "\[$n_win\][0-9.]*,\$" "$tmp/p2" &&
    ! grep -q "\[$((n_win + 1))\]" "$tmp/p2" && ok ||
    bad "running PPL over $n_win windows: $(cat "$tmp/p2")"
# The last running value is the final estimate.
grep -q "\[$n_win\]$p," "$tmp/p2" && ok || bad "last running value is not $p"
grep -q "$n_tok tokens; $n_win windows of 128 tokens, 63 scored in each" "$tmp/e2" && ok ||
    bad "summary line: $(cat "$tmp/e2")"

# Threads do not change a bit of it; --chunks takes the first windows; stdin works.
"$CATENA" perplexity -m "$S" -f "$tmp/text.txt" -c 128 -t 1 >"$tmp/p1" 2>/dev/null
cmp -s "$tmp/p1" "$tmp/p2" && ok || bad "1 and 2 threads differ"
"$CATENA" perplexity -m "$S" -f - -c 128 --chunks 3 <"$tmp/text.txt" >"$tmp/p3" 2>/dev/null
head -c 30 "$tmp/p2" >"$tmp/p2.head"
grep -q "^\[1\][0-9.]*,\[2\][0-9.]*,\[3\]\([0-9.]*\),\$" "$tmp/p3" &&
    [ "$(head -c 30 "$tmp/p3")" = "$(cat "$tmp/p2.head")" ] && ok ||
    bad "--chunks 3: $(cat "$tmp/p3")"
# The base file: llama.cpp's layout, "_logits_", n_ctx, n_vocab, n_chunk, the tokens, then
# 63 rows of 2 * ((512 + 1) / 2) + 4 = 516 uint16 per window.
B="$tmp/base.bin"
"$CATENA" perplexity -m "$S" -f "$tmp/text.txt" -c 128 --chunks 6 --kl-divergence-base "$B" \
    >"$tmp/pb" 2>"$tmp/eb" || bad "writing the base: $(cat "$tmp/eb")"
size=$(wc -c <"$B")
[ "$size" = $((20 + 4 * 6 * 128 + 6 * 63 * 516 * 2)) ] && [ "$(head -c 8 "$B")" = "_logits_" ] &&
    ok || bad "base file of $size bytes"
grep -q "^\[1\].*,\[6\][0-9.]*,\$" "$tmp/pb" && ok ||
    bad "writing the base prints the PPL: $(cat "$tmp/pb")"
if command -v python3 >/dev/null 2>&1; then
    # Read back independently: the header, the tokens (the text's, BOS first), and the PPL of
    # the stored log-probabilities of the right tokens, which must match the printed one.
    "$CATENA" tokenize -m "$S" <"$tmp/text.txt" >"$tmp/ids"
    py=$(python3 - "$B" "$tmp/ids" <<'EOF'
import math, struct, sys
d = open(sys.argv[1], "rb").read()
ids = [int(x) for x in open(sys.argv[2]).read().split()]
n_ctx, n_vocab, n_chunk = struct.unpack_from("<iii", d, 8)
toks = struct.unpack_from("<%di" % (n_chunk * n_ctx), d, 20)
assert list(toks) == ids[: n_chunk * n_ctx], "tokens differ"
nv = 2 * ((n_vocab + 1) // 2) + 4
off = 20 + 4 * n_chunk * n_ctx
nll = []
for c in range(n_chunk):
    for j in range(n_ctx // 2, n_ctx - 1):
        scale, min_lp = struct.unpack_from("<ff", d, off)
        q = struct.unpack_from("<%dH" % n_vocab, d, off + 8)
        nll.append(-(scale * q[toks[c * n_ctx + j + 1]] + min_lp))
        # The stored distribution sums to about 1.
        s = sum(math.exp(scale * v + min_lp) for v in q if scale * v + min_lp > -16)
        assert abs(s - 1) < 1e-3, s
        off += 2 * nv
assert off == len(d)
print("%d %d %d %.4f" % (n_ctx, n_vocab, n_chunk, math.exp(sum(nll) / len(nll))))
EOF
    )
    want="128 512 6 $(ppl "$tmp/pb")"
    [ "$py" = "$want" ] && ok || bad "python3 read of the base: '$py', expected '$want'"
else
    echo "python3 not found: the independent read of the base file is skipped"
fi

# kld MODEL [args]: run the comparison with -v; the output in $tmp/k, stderr in $tmp/ke.
kld() {
    m=$1
    shift
    "$CATENA" perplexity -m "$m" --kl-divergence --kl-divergence-base "$B" -v "$@" >"$tmp/k" \
        2>"$tmp/ke"
}
# field NAME: a number from the -v summary line ("mean KLD X", "same top p X", ...).
field() { sed -n "s/.*$1 \([-0-9.e+]*\).*/\1/p" "$tmp/ke"; }

# The model against its own base: KLD zero up to the base's 16-bit rounding, the same top
# token everywhere, PPL(Q) = PPL(base) = the PPL printed when the base was written.
kld "$S" -f "$tmp/text.txt" || bad "self comparison: $(cat "$tmp/ke")"
awk -v k="$(field "mean KLD")" 'BEGIN { exit !(k != "" && k < 1e-6 && k > -1e-6) }' && ok ||
    bad "self KLD $(field "mean KLD"): $(cat "$tmp/ke")"
[ "$(field "same top p")" = 1 ] && grep -q "^Same top p: 100.000 ± 0.000 %" "$tmp/k" && ok ||
    bad "self same top p: $(cat "$tmp/k")"
pq=$(sed -n 's/^Mean PPL(Q)  *: *\([0-9.]*\) .*/\1/p' "$tmp/k")
awk -v a="$pq" -v b="$(ppl "$tmp/pb")" \
    'BEGIN { d = a - b; exit !(a != "" && d < 6e-5 && d > -6e-5) }' &&
    ok || bad "self PPL(Q) '$pq': $(cat "$tmp/k")"
for line in "Mean PPL(base)" "Mean ln(PPL(Q)/PPL(base))" "Maximum KLD" "99.9%   KLD" \
    "Median  KLD" " 1.0%   KLD" "Minimum KLD" "Mean    Δp" "RMS Δp" "90.0%   Δp"; do
    grep -q "^$line" "$tmp/k" && ok || bad "no '$line' line: $(cat "$tmp/k")"
done
[ "$(grep -c '^   [1-6]  ' "$tmp/k")" = 6 ] && ok || bad "per-window lines: $(cat "$tmp/k")"
# Without -f the base's own tokens are used: the same result.
cp "$tmp/k" "$tmp/k_self"
kld "$S" && cmp -s "$tmp/k" "$tmp/k_self" && ok || bad "self comparison without -f differs"

# Q8_0: a small positive KLD; Q4_0: larger; both still mostly agree on the top token.
"$CATENA" quantize "$S" "$tmp/q8.gguf" Q8_0 >/dev/null 2>&1 &&
    "$CATENA" quantize "$S" "$tmp/q4.gguf" Q4_0 >/dev/null 2>&1 || bad "quantize failed"
kld "$tmp/q8.gguf" -f "$tmp/text.txt" || bad "Q8_0 comparison: $(cat "$tmp/ke")"
k8=$(field "mean KLD")
t8=$(field "same top p")
kld "$tmp/q4.gguf" || bad "Q4_0 comparison: $(cat "$tmp/ke")"
k4=$(field "mean KLD")
awk -v a="$k8" -v b="$k4" -v t="$t8" \
    'BEGIN { exit !(a > 1e-5 && a < 0.01 && b > 3 * a && b < 1 && t > 0.9 && t < 1.0000001) }' &&
    ok || bad "KLD Q8_0 $k8 (top $t8), Q4_0 $k4"

# Errors: exit 1 with a message naming the problem; usage errors exit 2.
expect() { # status pattern args...
    st=$1 pat=$2
    shift 2
    out=$("$CATENA" "$@" 2>&1)
    [ $? = "$st" ] && printf '%s' "$out" | grep -q -- "$pat" && ok || bad "$*: $out"
}
: >"$tmp/empty.txt"
printf 'Once upon a time, there was a little girl.' >"$tmp/short.txt"
n_short=$("$CATENA" tokenize -m "$S" <"$tmp/short.txt" | wc -w)
expect 1 "reading the text from $tmp/no-such.txt" perplexity -m "$S" -f "$tmp/no-such.txt"
expect 1 "the text in $tmp/empty.txt is empty" perplexity -m "$S" -f "$tmp/empty.txt"
expect 1 "short.txt tokenizes to only $n_short tokens; a context of 128 needs at least 256" \
    perplexity -m "$S" -f "$tmp/short.txt" -c 128
# The default window is llama.cpp's 512.
head -c 2000 "$tmp/text.txt" >"$tmp/mid.txt"
n_mid=$("$CATENA" tokenize -m "$S" <"$tmp/mid.txt" | wc -w)
expect 1 "mid.txt tokenizes to only $n_mid tokens; a context of 512 needs at least 1024" \
    perplexity -m "$S" -f "$tmp/mid.txt"
expect 1 "a context of 4096 is beyond the model's 2048" perplexity -m "$S" -f "$tmp/text.txt" \
    -c 4096
expect 1 "too small" perplexity -m "$S" -f "$tmp/text.txt" -c 2
expect 1 "no-such.gguf" perplexity -m "$tmp/no-such.gguf" -f "$tmp/text.txt"
expect 1 "opening the base $tmp/no/b.bin to write" perplexity -m "$S" -f "$tmp/text.txt" -c 128 \
    --kl-divergence-base "$tmp/no/b.bin"
expect 2 "no model given" perplexity -f "$tmp/text.txt"
expect 2 "no text given" perplexity -m "$S"
expect 2 "needs the base log-probabilities" perplexity -m "$S" -f "$tmp/text.txt" --kl-divergence
expect 2 "bad value '0' for --chunks" perplexity -m "$S" -f "$tmp/text.txt" --chunks 0
expect 2 "bad value 'abc' for -c" perplexity -m "$S" -f "$tmp/text.txt" -c abc
expect 2 "unknown argument '--bogus'" perplexity -m "$S" -f "$tmp/text.txt" --bogus 1

# Bad and mismatched base files: each refused with the file and what differs.
expect 1 "opening the base $tmp/none.bin" perplexity -m "$S" --kl-divergence \
    --kl-divergence-base "$tmp/none.bin"
expect 1 "text.txt is not a file of base log-probabilities" perplexity -m "$S" --kl-divergence \
    --kl-divergence-base "$tmp/text.txt"
head -c 12 "$B" >"$tmp/hdr.bin"
expect 1 "hdr.bin is not a file of base log-probabilities" perplexity -m "$S" --kl-divergence \
    --kl-divergence-base "$tmp/hdr.bin"
head -c $((size - 1000)) "$B" >"$tmp/trunc.bin"
expect 1 "the base $tmp/trunc.bin is $((size - 1000)) bytes; 6 windows of 128 tokens over \
a vocabulary of 512 take $size bytes" \
    perplexity -m "$S" --kl-divergence --kl-divergence-base "$tmp/trunc.bin"
{ cat "$B"; printf 'x'; } >"$tmp/long.bin"
expect 1 "long.bin is $((size + 1)) bytes" perplexity -m "$S" --kl-divergence \
    --kl-divergence-base "$tmp/long.bin"
# poke FILE OFFSET BYTES: overwrite bytes (octal escapes) in place.
poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null; }
cp "$B" "$tmp/vocab.bin" && poke "$tmp/vocab.bin" 12 '\350\003\000\000' # n_vocab 1000
expect 1 "the base $tmp/vocab.bin holds log-probabilities over 1000 tokens, the model has 512" \
    perplexity -m "$S" --kl-divergence --kl-divergence-base "$tmp/vocab.bin"
cp "$B" "$tmp/zero.bin" && poke "$tmp/zero.bin" 8 '\000\000\000\000' # n_ctx 0
expect 1 "impossible header: windows of 0 tokens" perplexity -m "$S" --kl-divergence \
    --kl-divergence-base "$tmp/zero.bin"
cp "$B" "$tmp/tok.bin" && poke "$tmp/tok.bin" $((20 + 4 * 7)) '\377\377\000\000' # token 7
expect 1 "token 7 is 65535, outside the vocabulary (0..511)" perplexity -m "$S" --kl-divergence \
    --kl-divergence-base "$tmp/tok.bin"
expect 1 "was made with windows of 128 tokens, not --ctx 64" perplexity -m "$S" --kl-divergence \
    --kl-divergence-base "$B" -c 64
sed 's/Lily/Anna/g' "$tmp/text.txt" >"$tmp/other.txt"
expect 1 "of $tmp/other.txt is [0-9]*, the base $B has [0-9]* there (another text or tokenizer)" \
    perplexity -m "$S" --kl-divergence --kl-divergence-base "$B" -f "$tmp/other.txt"
expect 1 "short.txt tokenizes to $n_short tokens; the base $B holds 768 (6 windows of 128)" \
    perplexity -m "$S" --kl-divergence --kl-divergence-base "$B" -f "$tmp/short.txt"
if [ -n "${EOSMODEL:-}" ] && [ -x "$EOSMODEL" ]; then
    "$EOSMODEL" "$tmp/eos.gguf" 2 || bad "eosmodel failed"
    expect 1 "over 512 tokens, the model has 16 (another vocabulary)" \
        perplexity -m "$tmp/eos.gguf" --kl-divergence --kl-divergence-base "$B"
else
    echo "EOSMODEL not set: the other-vocabulary model case is skipped"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
