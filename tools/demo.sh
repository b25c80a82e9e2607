#!/usr/bin/env bash
# The main job on a built-in default: installs what is missing, builds, writes
# a small random-weight demo model (models/demo) unless --model is given, and
# generates tokens with it. Extra arguments go to gqa-generate.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/build.sh
model=models/demo
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --model=*) model="${1#--model=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ "$model" = models/demo ] && [ ! -f models/demo/config.json ]; then
  ./build/bin/gqa-make-model --out models/demo --layers 4 --hidden 256 --heads 8 --kv-heads 2 \
    --intermediate 688 --vocab 1024 --dtype bf16 --seed 1
fi
set -x
./build/bin/gqa-generate --model "$model" --tp 1 --prompt-ids 1,15,27,300 --max-new-tokens 16 \
  --temperature 0 --output json "${args[@]}"
