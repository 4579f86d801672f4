#!/bin/sh
# `catena search`: examples/docs ingested with stories260K embeddings, then keyword search
# (the right section first, any hostile text a valid query, Korean through the trigram
# index), vector search (the chunk a query was copied from ranks first, since its embedding
# is its own), hybrid fusion, --json, and the errors: no query, a bad mode or -k, vector
# search without the model or with another model, a missing collection or file.
set -u
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models/stories260K.gguf"
[ -f "$M" ] || {
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
has() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac }

kb="$tmp/kb.sqlite"
cp -r examples/docs "$tmp/docs"
printf 'The quiet harbour keeps seven blue boats.\n' > "$tmp/docs/boats.txt"
printf '# 설치\n\n데비안에서 설치하는 방법은 make demo 명령을 실행하는 것입니다.\n' > "$tmp/docs/ko.md"
out=$("$CATENA" ingest "$tmp/docs" --db "$kb" --collection docs --embed "$M" \
    --splitter markdown --chunk-size 400 -q 2>&1) && ok || bad "ingest: $out"

# Keyword search: the Linux section answers a question about Debian.
out=$("$CATENA" search --db "$kb" --collection docs -k 3 how do I install on Debian 2>&1)
[ $? = 0 ] && has "$(echo "$out" | head -n 1)" "install.md  > Install > Linux" && ok ||
    bad "bm25 first hit: $out"
[ "$(echo "$out" | grep -c '^[0-9]\. ')" = 3 ] && ok || bad "bm25 -k 3: $out"

# Any text is a valid query (no FTS5 syntax error), with or without hits.
for q in '"' 'a AND (b OR' 'NEAR(x y)' 'text:install' '*' '^' "it's" '-- ;' '{}' '🙂'; do
    out=$("$CATENA" search --db "$kb" --collection docs -- "$q" 2>&1) && ok ||
        bad "hostile query <$q>: $out"
done

# Korean: the trigram index finds a word inside a longer one.
out=$("$CATENA" search --db "$kb" --collection docs "데비안에서 설치하는 방법은?" 2>&1)
has "$(echo "$out" | head -n 1)" "ko.md" && ok || bad "Korean query: $out"

# Vector search: a chunk's own text embeds to its own vector, cosine 1.
text="The quiet harbour keeps seven blue boats."
out=$("$CATENA" search --db "$kb" --collection docs --mode vector --embed "$M" -k 1 --json \
    "$text" 2>&1)
score=$(echo "$out" | sed -n 's/^    "score": \([0-9.]*\),$/\1/p')
case "$score" in 0.99* | 1 | 1.0*) ok ;; *) bad "vector search of a chunk's own text: $out" ;; esac
has "$out" '"source": "'"$tmp/docs/boats.txt"'"' && ok || bad "vector hit source: $out"
has "$out" '"rank": 1' && has "$out" '"source": ' && ok || bad "--json fields: $out"

# Hybrid (the default with --embed): both lists fused, k hits.
out=$("$CATENA" search --db "$kb" --collection docs --embed "$M" -k 4 install on Debian 2>&1)
[ $? = 0 ] && [ "$(echo "$out" | grep -c '^[0-9]\. ')" = 4 ] && ok || bad "hybrid: $out"

# A filter: only chunks of that source, whatever the query matches.
out=$("$CATENA" search --db "$kb" --collection docs --filter \
    '{"source": "'"$tmp/docs/boats.txt"'"}' install boats 2>&1)
[ $? = 0 ] && [ "$(echo "$out" | grep -c '^[0-9]\. ')" -ge 1 ] &&
    [ "$(echo "$out" | grep '^[0-9]\. ' | grep -vc boats.txt)" = 0 ] && ok || bad "filter: $out"
out=$("$CATENA" search --db "$kb" --collection docs --filter '{"source": "nowhere"}' install 2>&1)
[ $? = 0 ] && [ "$(echo "$out" | grep -c '^[0-9]\. ')" = 0 ] && ok || bad "empty filter: $out"
out=$("$CATENA" search --db "$kb" --filter '{"page": {"$near": 2}}' x 2>&1)
[ $? = 2 ] && has "$out" "--filter: filter: 'page': unknown operator '\$near'" && ok ||
    bad "bad filter: $out"
out=$("$CATENA" search --db "$kb" --filter '{"page": ' x 2>&1)
[ $? = 2 ] && has "$out" "--filter: " && ok || bad "filter not JSON: $out"

# MMR over the vector list, and BM25's k1 and b.
out=$("$CATENA" search --db "$kb" --collection docs --mode vector --embed "$M" --mmr -k 3 \
    --fetch-k 10 --lambda 0.5 "$text" 2>&1)
[ $? = 0 ] && [ "$(echo "$out" | grep -c '^[0-9]\. ')" = 3 ] &&
    has "$(echo "$out" | head -n 1)" "boats.txt" && ok || bad "mmr: $out"
a=$("$CATENA" search --db "$kb" --collection docs --json install Debian 2>&1 | grep '"score"')
b=$("$CATENA" search --db "$kb" --collection docs --json --k1 0.3 --b 0 install Debian 2>&1 |
    grep '"score"')
[ -n "$a" ] && [ "$a" != "$b" ] && ok || bad "k1 and b change the scores: $a / $b"
out=$("$CATENA" search --db "$kb" --mmr x 2>&1)
[ $? = 2 ] && has "$out" "mmr compares the chunks' vectors" && ok || bad "mmr on bm25: $out"
out=$("$CATENA" search --db "$kb" --weights 0,0 x 2>&1)
[ $? = 2 ] && has "$out" "--weights: '0,0'" && ok || bad "bad weights: $out"

# Errors.
"$CATENA" search --db "$kb" > /dev/null 2>&1
[ $? = 2 ] && ok || bad "no query is a usage error"
out=$("$CATENA" search --db "$kb" --mode fuzzy x 2>&1)
[ $? = 2 ] && has "$out" "'fuzzy' is not bm25, vector or hybrid" && ok || bad "bad mode: $out"
out=$("$CATENA" search --db "$kb" -k 0 x 2>&1)
[ $? = 2 ] && has "$out" "-k: '0' is not 1..1000" && ok || bad "bad -k: $out"
out=$("$CATENA" search --db "$kb" --collection docs --mode vector x 2>&1)
[ $? = 2 ] && has "$out" "needs the collection's model" && ok || bad "vector without model: $out"
"${MKMODEL:-build/tools/mkmodel}" -o "$tmp/other.gguf" --dim 32 --layers 1 --heads 2 \
    --kv-heads 1 --ff 64 --type f32 --ctx 256 \
    --vocab "${CTN_SHARED:-../shared}/vocab/ggml-vocab-llama-spm.gguf" > /dev/null 2>&1
out=$("$CATENA" search --db "$kb" --collection docs --embed "$tmp/other.gguf" x 2>&1)
[ $? = 1 ] && has "$out" "is embedded with 'stories260K.gguf:llama:64'" && ok ||
    bad "another model: $out"
out=$("$CATENA" search --db "$kb" --collection nope x 2>&1)
[ $? = 1 ] && has "$out" "no collection 'nope'" && ok || bad "missing collection: $out"
out=$("$CATENA" search --db "$tmp/none.sqlite" x 2>&1)
[ $? = 1 ] && ok || bad "missing file: $out"
[ ! -e "$tmp/none.sqlite" ] && ok || bad "search created a file"

echo "search: $pass passed, $fail failed"
[ "$fail" = 0 ]
