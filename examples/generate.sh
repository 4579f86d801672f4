#!/bin/sh
# The default job of `make demo`: continue a prompt with a model, greedily and then with
# seeded sampling, and measure the engine's speed on it.
#   sh examples/generate.sh [MODEL.gguf] [path/to/catena]
set -eu
MODEL="${1:-../shared/models/stories260K.gguf}"
CATENA="${2:-${CATENA:-build/catena}}"

if [ ! -f "$MODEL" ]; then
    echo "No model at $MODEL." >&2
    echo "Put a GGUF model there (the default is stories260K.gguf in ../shared/models/)," >&2
    echo "or name one: make demo MODEL=/path/to/model.gguf" >&2
    exit 1
fi

"$CATENA" version
PROMPT="Once upon a time"
echo
echo "== catena generate -p \"$PROMPT\" -n 60 --temp 0      (greedy)"
printf '%s' "$PROMPT"
"$CATENA" generate -m "$MODEL" -p "$PROMPT" -n 60 --temp 0
echo
echo "== catena generate -p \"$PROMPT\" -n 60 --seed 42      (temperature 0.8, top-k 40, top-p 0.95)"
printf '%s' "$PROMPT"
"$CATENA" generate -m "$MODEL" -p "$PROMPT" -n 60 --seed 42
echo
echo "== catena bench (prefill 128 tokens, decode 32)"
"$CATENA" bench -m "$MODEL" --prompt-tokens 128 --gen-tokens 32
