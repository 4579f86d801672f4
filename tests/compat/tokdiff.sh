#!/bin/sh
# Differential tokenizer test, catena against llama.cpp, in two parts:
#   1. the library: the tokdiff program (tests/compat/tokdiff.c) compares ctn_tokenize and
#      ctn_detokenize with llama.cpp in one process, on every SPM/BPE vocabulary it finds;
#   2. the command: `catena tokenize -m V [--no-bos]` against `llamacpp_tok tokenize V
#      [--no-bos]`, one process per text, on the shared vocabularies and edge cases of the
#      command's own input handling (empty input, a NUL byte, invalid UTF-8, CR/LF, special-
#      token text, a long line). The ordinary texts are left to part 1 and to the Lua spec
#      (tests/lua/tokenize_cli_spec.lua), because loading a BPE vocabulary per process
#      costs 0.2-0.3 s on each side.
#
#   tests/compat/tokdiff.sh [tokdiff options]     (after scripts/setup-peers.sh and a build)
#
# Programs: $TOKDIFF, $CATENA, $LLAMACPP_TOK, else found under build/. TOKDIFF_CLI_ONLY=1
# runs part 2 only (ctest runs part 1 as its own test). Exits 77 (skip) when llama.cpp is
# not installed, 1 on any difference.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

find_prog() { find build -name "$1" -type f -perm -u+x 2>/dev/null | head -n 1; }
tokdiff=${TOKDIFF:-$(find_prog tokdiff)}
catena=${CATENA:-$(find_prog catena)}
ref=${LLAMACPP_TOK:-$(find_prog llamacpp_tok)}
shared=${CTN_SHARED:-$root/../shared}

status=0
if [ -z "${TOKDIFF_CLI_ONLY:-}" ]; then
    [ -x "$tokdiff" ] || { echo "tokdiff not built (cmake --build build)" >&2; exit 1; }
    "$tokdiff" "$@"
    status=$?
    [ $status = 77 ] && exit 77
fi

if [ ! -x "$catena" ] || [ ! -x "$ref" ]; then
    echo "part 2 skipped: catena or llamacpp_tok not built"
    exit $status
fi
rc=0
"$ref" tokenize "$shared/vocab/ggml-vocab-llama-spm.gguf" < /dev/null > /dev/null 2>&1 || rc=$?
[ $rc = 77 ] && { echo "SKIP: llama.cpp unavailable; run scripts/setup-peers.sh"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
printf '' > "$tmp/e1"; printf '\n' > "$tmp/e2"; printf ' ' > "$tmp/e3"
printf 'a\000b' > "$tmp/e4"; printf '\377\300 bad \342\202' > "$tmp/e5"
printf '<s>x</s><|im_start|>y<|endoftext|>' > "$tmp/e6"; printf '  \t\n\n  ' > "$tmp/e7"
printf ' Hello world\r\n' > "$tmp/e8"; printf '\303\204pfel \360\237\246\231\n' > "$tmp/e9"
awk 'BEGIN { for (i = 0; i < 3000; i++) printf "word%d ", i % 97 }' > "$tmp/e10"

pass=0 fail=0
for name in llama-spm llama-bpe qwen2 gpt-2; do
    model=$shared/vocab/ggml-vocab-$name.gguf
    [ -f "$model" ] || continue
    for t in "$tmp"/e*; do
        for flag in "" --no-bos; do
            want=$("$ref" tokenize "$model" $flag < "$t" 2>&1)
            got=$("$catena" tokenize -m "$model" $flag < "$t" 2>&1)
            if [ "$want" = "$got" ]; then
                pass=$((pass + 1))
            else
                fail=$((fail + 1))
                echo "MISMATCH catena tokenize $name $flag text=$(od -An -c "$t" | tr -s ' ' | head -c 200)"
                echo "    llama.cpp: $want"
                echo "    catena:    $got"
            fi
        done
    done
done
echo "catena tokenize command: $pass passed, $fail failed"
if [ $((pass + fail)) = 0 ]; then
    echo "skip: no vocabulary found in $shared/vocab"
    exit 77
fi
[ $fail -gt 0 ] && status=1
exit $status
