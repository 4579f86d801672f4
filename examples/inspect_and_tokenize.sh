#!/bin/sh
# The default job of `make demo`: look inside a GGUF model and tokenize a sentence with it,
# then turn the ids back into text.
#   sh examples/inspect_and_tokenize.sh [MODEL.gguf] [path/to/catena]
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
echo
echo "== catena inspect $MODEL"
"$CATENA" inspect "$MODEL"
TEXT="Once upon a time, there was a little girl named Lily."
echo
echo "== catena tokenize: $TEXT"
IDS=$(printf '%s' "$TEXT" | "$CATENA" tokenize -m "$MODEL")
echo "$IDS"
echo
echo "== catena detokenize"
BACK=$(printf '%s' "$IDS" | "$CATENA" detokenize -m "$MODEL")
echo "$BACK"
if [ "$BACK" != "$TEXT" ]; then
    echo "round trip changed the text" >&2
    exit 1
fi
