#!/bin/sh
# `catena ingest` and `catena kb`: a folder of Markdown, text, JSON Lines and PDF files into a
# knowledge base with embeddings from stories260K; a second run skips every file, a changed
# file is replaced, a removed one pruned; a failing file is reported and counted while the
# rest goes on; a collection refuses another embedding model; kb stats, list, remove and
# check; and a real ingest killed with SIGKILL at random moments leaves a file that passes
# the integrity checks and that the next run completes to what one clean run gives.
set -u
CATENA="${CATENA:-build/catena}"
M="${CTN_SHARED:-../shared}/models"
[ -f "$M/stories260K.gguf" ] || {
    echo "shared models missing; skipping"
    exit 77
}
[ -f examples/docs/handbook.pdf ] || {
    echo "FAIL: examples/docs/handbook.pdf is missing"
    exit 1
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

docs="$tmp/docs"
mkdir -p "$docs/sub"
cp examples/docs/*.md examples/docs/*.pdf "$docs/"
printf 'Plain notes about paged attention.\n\nBlocks of sixteen positions.\n' >"$docs/notes.txt"
printf 'bad byte \377 here\n' >"$docs/sub/latin1.txt"
printf '{"body": "first record"}\n\n{"body": "second record"}\n' >"$docs/sub/r.jsonl"
printf '%%PDF-1.4 this is not really a pdf' >"$docs/sub/broken.pdf"
kb="$tmp/kb.sqlite"
E="--embed $M/stories260K.gguf -t 2"

# 1. First run: everything added but the broken PDF, which fails and is counted.
out=$("$CATENA" ingest "$docs" --db "$kb" $E --chunk-size 300 --chunk-overlap 30 2>"$tmp/err")
rc=$?
[ "$rc" = 1 ] && ok || bad "first ingest exit $rc (a failed file makes it 1): $out"
has "$out" "1 failed" && has "$out" "0 skipped" && ok || bad "first summary: $out"
added=$(echo "$out" | sed -n 's/.*files: \([0-9]*\) added.*/\1/p')
files=$(ls -R "$docs" | grep -c '\.\(md\|txt\|jsonl\|pdf\)$')
[ "$added" = $((files - 1)) ] && ok || bad "added $added of $files files: $out"
grep -q "broken.pdf" "$tmp/err" && ok || bad "the broken PDF is not named: $(cat "$tmp/err")"
grep -q "latin1.txt.*byte 9" "$tmp/err" && ok || bad "no warning for the invalid byte: $(cat "$tmp/err")"
chunks=$(echo "$out" | sed -n 's/.*; \([0-9]*\) chunks.*/\1/p')
emb=$(echo "$out" | sed -n 's/.*, \([0-9]*\) embedded.*/\1/p')
[ -n "$chunks" ] && [ "$chunks" -gt "$files" ] && [ "$emb" = "$chunks" ] && ok ||
    bad "chunks '$chunks', embedded '$emb': $out"

st=$("$CATENA" kb stats --db "$kb" 2>&1)
has "$st" "default: $added documents, $chunks chunks, $chunks embeddings" &&
    has "$st" "model stories260K.gguf:llama:64 (dimension 64)" && ok || bad "kb stats: $st"
ck=$("$CATENA" kb check --db "$kb" 2>&1) && has "$ck" ": ok" && ok || bad "kb check: $ck"

# 2. Nothing changed: all skipped.
out=$("$CATENA" ingest "$docs" --db "$kb" $E --chunk-size 300 --chunk-overlap 30 2>/dev/null)
has "$out" "0 added, 0 replaced, $added skipped, 1 failed" && ok || bad "second run: $out"

# 3. One file changed, one removed (pruned), the broken one gone too.
printf '\nA new paragraph about sliding windows.\n' >>"$docs/notes.txt"
rm "$docs/sub/r.jsonl" "$docs/sub/broken.pdf"
out=$("$CATENA" ingest "$docs" --db "$kb" $E --chunk-size 300 --chunk-overlap 30 --prune 2>&1)
rc=$?
[ "$rc" = 0 ] && has "$out" "0 added, 1 replaced, $((added - 2)) skipped, 0 failed, 1 removed" &&
    ok || bad "changed/pruned run (exit $rc): $out"
ls=$("$CATENA" kb list --db "$kb" 2>&1)
has "$ls" "r.jsonl" && bad "pruned file still listed: $ls" || ok
has "$ls" "notes.txt" && ok || bad "kb list: $ls"

# 4. Another embedding model is refused by the collection, naming both.
"${MKMODEL:-build/tools/mkmodel}" -o "$tmp/other.gguf" --dim 32 --layers 1 --heads 2 --kv-heads 1 --ff 64 --type f32 --ctx 256 --vocab "${CTN_SHARED:-../shared}/vocab/ggml-vocab-llama-spm.gguf" >/dev/null 2>&1 || true
if [ -f "$tmp/other.gguf" ]; then
    out=$("$CATENA" ingest "$docs" --db "$kb" --embed "$tmp/other.gguf" 2>&1)
    rc=$?
    [ "$rc" != 0 ] && has "$out" "is embedded with 'stories260K.gguf:llama:64'" && ok ||
        bad "another model (exit $rc): $out"
else
    bad "mkmodel did not make a model"
fi
out=$("$CATENA" ingest "$docs" --db "$kb" 2>&1)
[ $? != 0 ] && has "$out" "ingest into it with that model" && ok || bad "no --embed: $out"

# 5. kb remove, and errors of the commands.
out=$("$CATENA" kb remove --db "$kb" "$docs/notes.txt" 2>&1) && has "$out" "removed" && ok ||
    bad "kb remove: $out"
out=$("$CATENA" kb remove --db "$kb" "$docs/notes.txt" 2>&1)
[ $? = 1 ] && has "$out" "not in collection 'default'" && ok || bad "kb remove twice: $out"
out=$("$CATENA" kb stats --db "$tmp/none.sqlite" 2>&1)
[ $? = 1 ] && has "$out" "none.sqlite: no such file" && ok || bad "kb stats missing: $out"
out=$("$CATENA" ingest "$docs" --db "$tmp/x.sqlite" --chunk-size 10 --chunk-overlap 10 2>&1)
[ $? = 2 ] && has "$out" "chunk_overlap" && ok || bad "overlap >= size: $out"
out=$("$CATENA" ingest "$docs" --db "$tmp/x.sqlite" --splitter sentences 2>&1)
[ $? = 2 ] && has "$out" "'sentences' is not" && ok || bad "unknown splitter: $out"
printf 'not a database at all, only text of some length to fill a header....' >"$tmp/junk.sqlite"
out=$("$CATENA" ingest "$docs" --db "$tmp/junk.sqlite" 2>&1)
[ $? = 1 ] && has "$out" "junk.sqlite" && ok || bad "ingest into a non-database: $out"

# 6. SIGKILL at random moments of a real ingest (embedding included), then a full run: the
# file passes the checks and holds what one clean run gives.
big="$tmp/big"
mkdir -p "$big"
i=0
while [ $i -lt 120 ]; do
    {
        printf '# Note %d\n\n' $i
        j=0
        while [ $j -lt 6 ]; do
            printf 'Paragraph %d of note %d: the engine batches requests, pages its cache and ' $j $i
            printf 'keeps every sequence exact.\n\n'
            j=$((j + 1))
        done
    } >"$big/n$i.md"
    i=$((i + 1))
done
"$CATENA" ingest "$big" --db "$tmp/clean.sqlite" $E --chunk-size 200 --chunk-overlap 0 -q \
    >/dev/null 2>&1 || bad "clean run of the big folder failed"
"$CATENA" kb list --db "$tmp/clean.sqlite" >"$tmp/clean.list" 2>&1
for delay in 0.3 0.7 1.1 1.6 2.2; do
    "$CATENA" ingest "$big" --db "$tmp/killed.sqlite" $E --chunk-size 200 --chunk-overlap 0 -q \
        >/dev/null 2>&1 &
    pid=$!
    sleep $delay
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    ck=$("$CATENA" kb check --db "$tmp/killed.sqlite" 2>&1) && ok ||
        bad "after SIGKILL at ${delay}s: $ck"
done
out=$("$CATENA" ingest "$big" --db "$tmp/killed.sqlite" $E --chunk-size 200 --chunk-overlap 0 \
    -q 2>&1) && ok || bad "completing run: $out"
"$CATENA" kb list --db "$tmp/killed.sqlite" >"$tmp/killed.list" 2>&1
cmp -s "$tmp/clean.list" "$tmp/killed.list" && ok ||
    bad "killed-then-completed differs from clean: $(diff "$tmp/clean.list" "$tmp/killed.list" | head -5)"
a=$("$CATENA" kb stats --db "$tmp/clean.sqlite" 2>&1)
b=$("$CATENA" kb stats --db "$tmp/killed.sqlite" 2>&1)
[ "$a" = "$b" ] && ok || bad "stats differ: '$a' vs '$b'"

# Contextual chunks: every chunk gets a context from the model, searchable with the chunk,
# and the prefill computed is reported against one request per chunk.
cx="$tmp/cx.sqlite"
out=$("$CATENA" ingest examples/docs/install.md examples/docs/faq.md --db "$cx" $E \
    --contextualize "$M/stories260K.gguf" --context-tokens 16 --splitter markdown \
    --chunk-size 300 --chunk-overlap 0 -q 2>&1) && ok || bad "contextualized ingest: $out"
line=$(echo "$out" | grep '^contexts:')
n=$(echo "$line" | sed -n 's/^contexts: \([0-9]*\) chunks.*/\1/p')
chunks=$(echo "$out" | sed -n 's/.*; \([0-9]*\) chunks.*/\1/p')
[ -n "$n" ] && [ "$n" = "$chunks" ] && ok || bad "contexts for $n of $chunks chunks: $out"
done_=$(echo "$line" | sed -n 's/.*prefill \([0-9]*\) tokens computed, \([0-9]*\) one.*/\1 \2/p')
set -- $done_
[ $# = 2 ] && [ "$1" -lt "$2" ] && ok || bad "prefill computed '$1' against naive '$2': $line"
bad_ct=$("$CATENA" ingest examples/docs --db "$cx" --contextualize "$M/stories260K.gguf" \
    --context-tokens 0 2>&1)
[ $? = 2 ] && has "$bad_ct" "--context-tokens: '0' is not 1..1024" && ok ||
    bad "--context-tokens 0: $bad_ct"
bad_m=$("$CATENA" ingest examples/docs --db "$tmp/cx2.sqlite" --contextualize "$tmp/none.gguf" 2>&1)
[ $? = 1 ] && has "$bad_m" "none.gguf" && ok || bad "missing contextualize model: $bad_m"

echo "ingest: $pass passed, $fail failed"
[ "$fail" = 0 ]
