#!/usr/bin/env bash
# The main job on a built-in default: installs what is missing, builds, writes
# a small random-weight demo model (models/demo, with the Mistral tokenizer)
# unless --model DIR is given, and serves it with gqa-server on 8 simulated
# devices. Other arguments go to gqa-server. Stop it with Ctrl-C. The chat
# template is Mistral's, with an optional system message put before the
# first user message (mistral_system.jinja), as most OpenAI examples send one.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
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
    --head-dim 32 --intermediate 688 --vocab 32000 --dtype bf16 --max-position 4096 --seed 1
  cp build/fixtures/tokenizers/mistral/tokenizer.json models/demo/
  python3 - <<'PY'
import json
cfg = json.load(open("build/fixtures/tokenizers/mistral/tokenizer_config.json"))
cfg["chat_template"] = open("tests/fixtures/tokenizer/templates/mistral_system.jinja").read()
json.dump(cfg, open("models/demo/tokenizer_config.json", "w"), indent=1)
PY
fi
cat <<'MSG'
Serving the demo model (random weights: the text is noise). In another terminal:
  curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \
       -d '{"prompt": "Hello, my name is", "max_tokens": 16, "temperature": 0}'
  ./build/bin/gqa-client --prompt "Hello, my name is" --max-tokens 16 --stream
MSG
exec ./build/bin/gqa-server --model "$model" --tp 8 "${args[@]}"
