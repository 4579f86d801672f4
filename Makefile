# The two set-up commands of the README. Both install what is missing (Debian 12, apt),
# configure with CMake and build; `demo` then runs the default job on the default model,
# `test` runs the whole suite through ctest.

MODEL ?= ../shared/models/stories260K.gguf
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local

.PHONY: all setup configure build demo test peers install clean
MAKEFLAGS += --no-print-directory

all: build

setup:
	@sh scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD) -DCMAKE_C_COMPILER=$$(command -v clang || command -v cc) \
	    -DCMAKE_BUILD_TYPE=RelWithDebInfo $(if $(CI),-DCTN_WERROR=ON) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The demo needs only the command, not the test and fuzz builds.
demo: configure
	@cmake --build $(BUILD) -j $(JOBS) --target catena
	@if [ ! -f "$(MODEL)" ]; then echo "No model at $(MODEL): put a GGUF model there or name one: make demo MODEL=path/to/model.gguf" >&2; exit 1; fi
	@$(BUILD)/catena run examples/hello.lua "$(MODEL)"

# The llama.cpp peer (npm package node-llama-cpp) for the differential tokenizer test and
# the benchmarks; best effort: without it those tests skip and say why.
peers:
	@sh scripts/setup-peers.sh || true

test: build peers
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The command, libcatena (include/catena.h) and catena.pc under PREFIX: make install
# PREFIX=$HOME/.local, then PKG_CONFIG_PATH=$HOME/.local/lib/pkgconfig pkg-config --libs catena.
# Only what is installed is built (not the tests).
install: configure
	@cmake --build $(BUILD) -j $(JOBS) --target catena libcatena
	@cmake --install $(BUILD) --prefix "$(PREFIX)"

clean:
	rm -rf $(BUILD)
