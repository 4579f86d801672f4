#!/bin/sh
# Installs the peers that catena is compared with, for bench/ and tests/compat/:
#   - llama.cpp's prebuilt CPU libraries, from the npm package node-llama-cpp, and
#     LangChain.js's text splitters (@langchain/textsplitters), and the OpenAI clients that
#     catena serve is tested with (openai, @langchain/openai), pinned in bench/package.json,
#     into bench/node_modules;
#   - the llama.cpp source tree those libraries were built from (its vocab test files),
#     cloned from the git bundle inside that package into build/peers/llama.cpp;
#   - with --vsearch, the peers of bench/run_vsearch.sh: sqlite-vec with better-sqlite3 (pinned in
#     bench/vsearch/package.json, into bench/vsearch/node_modules) and FAISS (Debian's
#     libfaiss-dev, with apt-get when running as root or with sudo). These are best effort on
#     their own: a failure prints "vsearch peer unavailable: <why>" and the rest goes on.
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

# The kNN peers. better-sqlite3 needs its install script (it fetches or builds its native
# module), so this install runs scripts, unlike the one of bench/node_modules below.
vsearch_peers() {
    vs="$bench/vsearch"
    if [ ! -f "$vs/node_modules/sqlite-vec/package.json" ] ||
        [ ! -f "$vs/node_modules/better-sqlite3/package.json" ]; then
        if ! command -v npm >/dev/null 2>&1; then
            echo "vsearch peer unavailable: npm not found (sqlite-vec)"
        elif ! (cd "$vs" && npm install --no-audit --no-fund --no-package-lock \
                    --loglevel=error >&2); then
            echo "vsearch peer unavailable: npm install of sqlite-vec and better-sqlite3 failed"
        fi
    fi
    if [ ! -f /usr/include/faiss/IndexFlat.h ]; then
        sudo=
        [ "$(id -u)" = 0 ] || sudo=sudo
        if [ -n "$sudo" ] && ! command -v sudo >/dev/null 2>&1; then
            echo "vsearch peer unavailable: FAISS needs root or sudo (apt-get install libfaiss-dev)"
        elif ! { $sudo apt-get update -qq >&2 &&
                 $sudo apt-get install -y -qq --no-install-recommends libfaiss-dev >&2; }; then
            echo "vsearch peer unavailable: apt-get install libfaiss-dev failed"
        fi
    fi
    [ -f "$vs/node_modules/sqlite-vec/package.json" ] && echo "sqlite-vec:          $vs/node_modules"
    [ -f /usr/include/faiss/IndexFlat.h ] && echo "FAISS:               /usr/include/faiss (libfaiss-dev)"
    return 0
}
# LangChain.js's RemoteRunnable, for tests/compat/remote_runnable (@langchain/core 0.3: 1.x
# no longer ships runnables/remote), pinned in bench/langserve/package.json. Best effort.
ls_dir="$bench/langserve"
if [ ! -f "$ls_dir/node_modules/@langchain/core/package.json" ] && command -v npm >/dev/null 2>&1; then
    (cd "$ls_dir" && npm install --ignore-scripts --no-audit --no-fund --no-package-lock \
        --loglevel=error >&2) || echo "langserve client unavailable: npm install failed"
fi

# Benchmarks only (nothing in the test suite uses them): `scripts/setup-peers.sh --vsearch`,
# which bench/run_vsearch.sh names; `make test` does not pay for them.
[ "${1:-}" = --vsearch ] && vsearch_peers

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
