#!/bin/sh
# Compiles the usage example at the top of every header of engine/, chains/, stdlib/, lua/, cli/,
# kernels/, include/ and tests/ref/, so that an example cannot fall behind the API it shows.
#
#   sh tests/docs/check_examples.sh [HEADER...]     (default: every header of those folders)
#
# Environment: CC (default cc), and CTN_DOC_KEEP=DIR to keep the generated .c files there.
# Exit status: 0 when every example compiles, 1 otherwise (each failure is printed with the
# compiler's messages, which name the header's own lines).
#
# The rule. A header's example is the FIRST run of lines of its opening comment (the /* ... */
# block that starts on line 1) that are indented by at least four spaces after " * ", taken
# together with the blank " *" lines inside the run; the run ends at the first non-blank line
# indented less (a prose paragraph or the end of the comment). Later indented blocks (formulas,
# tables, a second snippet inside a prose paragraph) are not part of it. In those lines:
#   - "..." before any "//" stands for elided code and is compiled as an empty block "{}", so
#     "if (f() < 0) ...", a line "...", and "{ ...; free(s); }" are all C; prose that is not
#     C goes in a "//" comment (a "..." inside a string literal would be replaced too);
#   - a paragraph (lines between blank " *" lines) whose first line starts with "static " is a
#     function definition and goes to file scope, before the example;
#   - everything else is the body of one function, which returns int (and ends with
#     "return 0;") when the example returns a value, void otherwise.
# The generated file includes the C headers an example may use (stdbool, stddef, stdint,
# stdio, stdlib, string), the header itself, and then tests/docs/preambles/DIR/NAME.h when it
# exists: file-scope declarations of what the example uses without declaring (a model, a
# loop, callbacks). A preamble includes project headers with <> (a "" include would find the
# preamble of the same name beside it). The file is compiled with -fsyntax-only -Wall
# -Wextra -Werror, less the two unused-variable warnings (an example shows a call's result
# without always using it), against engine/, chains/, stdlib/, lua/, cli/, kernels/ (and its cpu/,
# cuda/), include/ and the pkg-config
# flags of libuv, Lua 5.4, cJSON, PCRE2 and SQLite.
#
# A header whose first indented block is not C is listed in NOT_C below, with the reason.
set -u
cd "$(dirname "$0")/../.." || exit 1

NOT_C="kernels/cpu/attn.h kernels/cpu/lora_kern.h"   # both open with a formula, not a usage example

CC="${CC:-cc}"
tmp="${CTN_DOC_KEEP:-}"
if [ -z "$tmp" ]; then
    tmp=$(mktemp -d) || exit 1
    trap 'rm -rf "$tmp"' EXIT
    trap 'exit 1' INT TERM
fi
mkdir -p "$tmp" || exit 1

pkgflags=""
for p in libuv lua5.4 libcjson libpcre2-8 sqlite3; do
    f=$(pkg-config --cflags "$p" 2>/dev/null) && pkgflags="$pkgflags $f"
done

if [ $# -gt 0 ]; then
    headers="$*"
else
    headers=$(ls engine/*.h chains/*.h stdlib/*.h lua/*.h cli/*.h kernels/*.h kernels/cpu/*.h kernels/cuda/*.h \
              include/*.h tests/ref/*.h 2>/dev/null)
fi

# extract HEADER: prints the example's lines as "F<TAB>line<TAB>text" (file scope) or
# "B<TAB>line<TAB>text" (body), with " * " and the "..." rule applied; nothing when the
# header has no example.
extract() {
    awk '
    NR == 1 && $0 !~ /^\/\*/ { exit }
    /\*\// { exit }
    {
        if ($0 ~ /^ \*$/) { if (state == 1) nb++; next }
        if ($0 ~ /^ \*     /) {
            if (state == 2) next
            if (state == 0) { state = 1; newpar = 1 }
            if (nb > 0) newpar = 1
            nb = 0
            text = substr($0, 4)
            code = text; comment = ""
            i = index(text, "//")
            if (i > 0) { code = substr(text, 1, i - 1); comment = substr(text, i) }
            gsub(/\.\.\./, "{}", code)
            if (newpar) { tmp = code; sub(/^ +/, "", tmp); scope = (tmp ~ /^static /) ? "F" : "B" }
            newpar = 0
            printf "%s\t%d\t%s%s\n", scope, NR, code, comment
            next
        }
        if (state == 1) state = 2
    }' "$1"
}

checked=0
failed=0
for h in $headers; do
    case " $NOT_C " in *" $h "*) continue ;; esac
    [ -f "$h" ] || { echo "check_examples: no such header: $h"; failed=$((failed + 1)); continue; }
    dir=$(dirname "$h")
    name=$(basename "$h" .h)
    pre="tests/docs/preambles/$dir/$name.h"
    lines=$(extract "$h")
    if [ -z "$lines" ]; then
        if [ -f "$pre" ]; then
            echo "FAIL $h: no example, but $pre exists (stale preamble?)"
            failed=$((failed + 1))
        fi
        continue
    fi
    ret=void
    if printf '%s\n' "$lines" | grep -q '^B	[0-9]*	.*return [^;]'; then ret=int; fi
    c="$tmp/$(echo "$dir" | tr / -)-$name.c"
    fn="ctn_doc_example_$(printf "%s_%s" "$dir" "$name" | tr -c "A-Za-z0-9" _)"
    {
        echo "/* Generated from $h by tests/docs/check_examples.sh. */"
        echo "#include <stdbool.h>"
        echo "#include <stddef.h>"
        echo "#include <stdint.h>"
        echo "#include <stdio.h>"
        echo "#include <stdlib.h>"
        echo "#include <string.h>"
        echo "#include \"$name.h\""
        [ -f "$pre" ] && echo "#include \"preambles/$dir/$name.h\""
        printf '%s\n' "$lines" | awk -F '\t' -v h="$h" '
            $1 == "F" { n = $2; sub(/^[^\t]*\t[^\t]*\t/, "")
                        printf "#line %d \"%s\"\n%s\n", n, h, $0 }'
        echo "$ret $fn(void);"
        echo "$ret $fn(void) {"
        printf '%s\n' "$lines" | awk -F '\t' -v h="$h" '
            $1 == "B" { n = $2; sub(/^[^\t]*\t[^\t]*\t/, "")
                        printf "#line %d \"%s\"\n%s\n", n, h, $0 }'
        [ "$ret" = int ] && echo "return 0;"
        echo "}"
    } > "$c"
    # shellcheck disable=SC2086 # pkgflags is a list of words
    if out=$("$CC" -std=c11 -D_GNU_SOURCE -fsyntax-only -Wall -Wextra -Werror \
                -Wno-unused-variable -Wno-unused-but-set-variable \
                -Iengine -Ichains -Istdlib -Ilua -Icli -Ikernels -Ikernels/cpu -Ikernels/cuda -Iinclude -Itests/ref \
                -Itests/docs $pkgflags "$c" 2>&1); then
        echo "ok   $h"
    else
        echo "FAIL $h (generated: $c)"
        printf '%s\n' "$out" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
    checked=$((checked + 1))
done

for pre in $(find tests/docs/preambles -name "*.h"); do
    [ -f "$pre" ] || continue
    h=${pre#tests/docs/preambles/}
    [ -f "$h" ] || { echo "FAIL $pre: $h does not exist (stale preamble)"; failed=$((failed + 1)); }
done

# A rule that silently matched nothing would pass every time.
if [ $# -eq 0 ] && [ "$checked" -lt 10 ]; then
    echo "check_examples: only $checked examples found; has the header comment layout changed?"
    exit 1
fi
echo "check_examples: $checked examples compiled, $failed failed ($CC)"
[ "$failed" -eq 0 ]
