#!/bin/sh
# libcatena as a service uses it: the build installed into a temporary prefix (cmake
# --install, what make install runs), examples/service.c compiled against it with pkg-config,
# and its answers for six inputs, submitted from four threads, equal to catena run's for the
# same chain (greedy, stories260K). Also: the library exports the API's symbols and no
# others, and the service reports a chain file that does not load.
set -u
CATENA="${CATENA:-build/catena}"
BUILD=$(dirname "$CATENA")
M="${CTN_SHARED:-../shared}/models/stories260K.gguf"
[ -f "$M" ] || {
    echo "skip: $M is missing"
    exit 77
}
for tool in cmake pkg-config nm node "${CC:-cc}"; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "FAIL: $tool is needed (scripts/setup.sh installs it)"
        exit 1
    }
done
ls "$BUILD"/libcatena.so* >/dev/null 2>&1 || {
    echo "FAIL: no $BUILD/libcatena.so (cmake --build builds it)"
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

# Installed where a service would find it.
if cmake --install "$BUILD" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1; then ok; else
    bad "cmake --install: $(cat "$tmp/install.log")"
fi
pc=$(find "$tmp/prefix" -name catena.pc | head -n 1)
[ -n "$pc" ] && [ -f "$tmp/prefix/include/catena.h" ] && [ -x "$tmp/prefix/bin/catena" ] && ok ||
    bad "the install lacks catena.pc, include/catena.h or bin/catena: $(find "$tmp/prefix" -type f)"
libdir=$(dirname "$(dirname "$pc")")
so=$(find "$libdir" -name 'libcatena.so.*.*' | head -n 1)
[ -n "$so" ] && [ -L "$libdir/libcatena.so" ] && ok || bad "no versioned libcatena.so in $libdir"

# The exported symbols are exactly the functions the header declares.
want=$(sed -n 's/^CTN_API [^(]*[ *]\(ctn_[a-z_]*\)(.*/\1/p' include/catena.h | sort)
got=$(nm -D --defined-only "$so" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort)
[ -n "$want" ] && [ "$want" = "$got" ] && ok ||
    bad "exported symbols differ from include/catena.h's: $(printf '%s\n' "$want" "$got" | sort | uniq -u | tr '\n' ' ')"
others=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRVW]$/ && $3 !~ /^ctn_/ { print $3 }')
[ -z "$others" ] && ok || bad "libcatena exports more than the API: $(echo "$others" | head -5)"

# The example, built as its comment says.
export PKG_CONFIG_PATH="$(dirname "$pc")"
# shellcheck disable=SC2046 # pkg-config prints a list of flags
if "${CC:-cc}" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$tmp/service" examples/service.c \
    $(pkg-config --cflags --libs catena) -lpthread 2>"$tmp/cc.log"; then ok; else
    bad "examples/service.c does not build: $(cat "$tmp/cc.log")"
fi

# The chain takes the model the service loaded as its argument (...).
cat >"$tmp/story.lua" <<'EOF'
local catena = require("catena")
local path = assert(..., "the model path comes as the chunk's argument")
return catena.prompt("Once upon a time, {who}")
  | catena.model{ path = path }:with{ max_tokens = 16, temperature = 0 }
  | catena.parser.str()
EOF
for who in Lily Tim "a dog" Sue "the moon" Ben; do printf '{"who": "%s"}\n' "$who"; done >"$tmp/in.jsonl"
LD_LIBRARY_PATH="$libdir" "$tmp/service" "$M" "$tmp/story.lua" <"$tmp/in.jsonl" >"$tmp/out.jsonl" \
    2>"$tmp/err"
st=$?
[ $st = 0 ] && [ "$(wc -l <"$tmp/out.jsonl")" = 6 ] && ok ||
    bad "service exited $st with $(wc -l <"$tmp/out.jsonl") lines: $(cat "$tmp/err" "$tmp/out.jsonl")"
# catena run's answers for the same inputs, one JSON string a line (node writes the JSON).
cat >"$tmp/want.lua" <<EOF
local chain = loadfile("$tmp/story.lua")("$M")
for _, who in ipairs({ "Lily", "Tim", "a dog", "Sue", "the moon", "Ben" }) do
  io.write(chain:invoke({ who = who }), "\0")
end
EOF
"$CATENA" run "$tmp/want.lua" >"$tmp/want.bin" 2>"$tmp/err" || bad "catena run: $(cat "$tmp/err")"
node -e '
const fs = require("fs");
const want = fs.readFileSync(process.argv[1], "utf8").split("\0").slice(0, -1);
const got = fs.readFileSync(process.argv[2], "utf8").split("\n").slice(0, -1).map((l) => JSON.parse(l));
if (want.length !== 6 || JSON.stringify(want) !== JSON.stringify(got)) {
  console.log("want " + JSON.stringify(want) + "\ngot  " + JSON.stringify(got));
  process.exit(1);
}' "$tmp/want.bin" "$tmp/out.jsonl" && ok || bad "the service's answers differ from catena run's"
# The answers are text the model wrote, not empty strings.
head -1 "$tmp/out.jsonl" | grep -q '^"[^"]\{10,\}' && ok || bad "no story in $(head -1 "$tmp/out.jsonl")"

# A chain file that does not load: the service says which and where.
printf 'local catena = require("catena")\nreturn catena.prompt("x" |\n' >"$tmp/broken.lua"
out=$(echo '{}' | LD_LIBRARY_PATH="$libdir" "$tmp/service" "$M" "$tmp/broken.lua" 2>&1)
[ $? = 1 ] && case "$out" in *"broken.lua:"[23]*) true ;; *) false ;; esac && ok ||
    bad "a broken chain file: $out"
out=$(echo '{}' | LD_LIBRARY_PATH="$libdir" "$tmp/service" "$tmp/none.gguf" "$tmp/story.lua" 2>&1)
[ $? = 1 ] && case "$out" in *none.gguf*) true ;; *) false ;; esac && ok || bad "a missing model: $out"
# A bad input line fails that line only, naming the position.
printf '{"who": "Lily"}\n{"who": }\n' | LD_LIBRARY_PATH="$libdir" "$tmp/service" "$M" "$tmp/story.lua" \
    >"$tmp/out2" 2>&1
[ $? = 1 ] && sed -n 2p "$tmp/out2" | grep -q "^error: input: line 1, column 9" &&
    head -1 "$tmp/out2" | grep -q '^"[^"]\{10,\}' && ok || bad "a bad input line: $(cat "$tmp/out2")"

echo "capi: $pass passed, $fail failed"
[ "$fail" = 0 ]
