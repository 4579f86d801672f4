#!/bin/sh
# Installs what catena needs to build and test on Debian 12, and only what is missing.
# Runs as root (apt-get) or through sudo; prints the command to run otherwise.
set -eu

PKGS="gcc make cmake pkg-config git clang libclang-rt-14-dev \
libpcre2-dev libcjson-dev liblua5.4-dev lua5.4 lua-busted libuv1-dev libsqlite3-dev libedit-dev \
libmd4c-dev libyaml-dev libpoppler-glib-dev libhttp-parser-dev libcurl4-openssl-dev curl haproxy"
# The document loaders (stdlib/): md4c reads Markdown (GFM tables), libyaml its front
# matter, poppler (through its GLib binding, which brings cairo) reads PDF. catena serve
# frames HTTP with http-parser; its tests talk to it with curl, and put HAProxy in front of
# two servers (docs/serving.md). The remote model nodes speak HTTP through libcurl.
# Node.js and npm bring the llama.cpp peer used by benchmarks and differential tests.
command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "setup: installing$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "setup: not root and no sudo; install these packages first:$missing" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "setup: done"
