#!/bin/sh
# Differential test of catena's recursive text splitter against LangChain.js's
# RecursiveCharacterTextSplitter (tests/compat/split_langchain.mjs says what it compares):
#
#   tests/compat/split_langchain.sh        (after `make peers` and a build of split_driver)
#
# The driver is $SPLIT_DRIVER, else found under build/. Exits 77 (skip) when node or the
# package (bench/node_modules/@langchain/textsplitters) is not installed, 1 on any difference.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

if ! command -v node > /dev/null 2>&1; then
    echo "SKIP: node is not installed (LangChain.js runs on it); install it, then run make peers"
    exit 77
fi
if [ ! -f bench/node_modules/@langchain/textsplitters/package.json ]; then
    echo "SKIP: bench/node_modules/@langchain/textsplitters is missing; run make peers"
    exit 77
fi
driver=${SPLIT_DRIVER:-$(find build -name split_driver -type f -perm -u+x 2>/dev/null | head -n 1)}
if [ -z "$driver" ] || [ ! -x "$driver" ]; then
    echo "split_driver is not built (cmake --build build --target split_driver)" >&2
    exit 1
fi
exec node tests/compat/split_langchain.mjs "$root" "$driver"
