#!/usr/bin/env bash
# TTFT on shared-prefix traffic, gqa-server against llama.cpp's llama-server
# on one random-weight model (as a Hugging Face directory and as GGUF):
#
#   bench/compare_prefix_llamacpp.sh LLAMA_CPP_CHECKOUT [ROUNDS]
#
# Builds llama-server from the checkout (native CPU flags, into
# CHECKOUT/build-gqa-compare), writes the model once (8 layers, hidden 512,
# 8 query / 2 KV heads of 64, MLP 1536, the Llama 3 tokenizer of
# tests/fixtures, bf16), and then, interleaved over ROUNDS rounds (default
# 3), starts each server in turn and runs bench/ttft_compare.py against it:
# gqa-server with its prefix cache (the default), gqa-server with
# --no-enable-prefix-caching, and llama-server with 4 slots (-np 4) and its
# prompt cache (on by default). Requests: concurrency 4, 24 measured after
# one warm-up per client, 1,024 shared + 16 own token ids, 32 output tokens.
# Results: compare-prefix-out/rounds.jsonl, one line per run. Nothing of
# llama.cpp enters this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 && -d "$1" ]] || { echo "usage: $0 LLAMA_CPP_CHECKOUT [ROUNDS]" >&2; exit 2; }
LLAMA=$(cd "$1" && pwd)
ROUNDS=${2:-3}
OUT=$PWD/compare-prefix-out
mkdir -p "$OUT"
python3 -c "import numpy, sentencepiece, yaml" 2>/dev/null || python3 -m pip install --quiet numpy sentencepiece pyyaml
if [[ ! -x $LLAMA/build-gqa-compare/bin/llama-server ]]; then
  cmake -S "$LLAMA" -B "$LLAMA/build-gqa-compare" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$LLAMA/build-gqa-compare" -j"$(nproc)" --target llama-server >/dev/null
fi
MODEL=$OUT/model
if [[ ! -f $MODEL/model.gguf ]]; then
  rm -rf "$MODEL"
  build/bin/gqa-make-model --out "$MODEL" --layers 8 --hidden 512 --heads 8 --kv-heads 2 --head-dim 64 \
    --intermediate 1536 --vocab 128256 --dtype bf16 --rope-theta 500000 --max-position 4096 --bos 128000 \
    --eos 128001 --seed 3
  tar -xJf tests/fixtures/tokenizers.tar.xz -C "$OUT" tokenizers/llama3
  cp "$OUT"/tokenizers/llama3/tokenizer.json "$OUT"/tokenizers/llama3/tokenizer_config.json "$MODEL"/
  python3 bench/hf_to_gguf.py --llama-cpp "$LLAMA" --in "$MODEL" --out "$MODEL/model.gguf.tmp"
  mv "$MODEL/model.gguf.tmp" "$MODEL/model.gguf"
fi
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; gqa-serve $(git rev-parse --short HEAD);" \
     "llama.cpp $(git -C "$LLAMA" rev-parse --short HEAD 2>/dev/null || echo '?')"
port=$((20000 + RANDOM % 20000))
wait_for() {  # port, log
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 did not come up; see $2" >&2
  return 1
}
run() {  # label, command...
  local label=$1
  shift
  port=$((port + 1))  # a fresh port: the last server's may still be closing
  "${@//PORT/$port}" > "$OUT/$label.log" 2>&1 &
  local pid=$!
  wait_for "$port" "$OUT/$label.log"
  python3 bench/ttft_compare.py --url "http://127.0.0.1:$port" --label "$label" --vocab-size 128000 \
    --seed "$round" | tee -a "$OUT/rounds.jsonl"
  kill -TERM "$pid"
  wait "$pid" || true
}
for round in $(seq 1 "$ROUNDS"); do
  run gqa-server build/bin/gqa-server --model "$MODEL" --http-port PORT --grpc-port 0 --num-kv-blocks 2048 \
    --log-stats-interval 0
  run gqa-server-no-cache build/bin/gqa-server --model "$MODEL" --http-port PORT --grpc-port 0 \
    --num-kv-blocks 2048 --log-stats-interval 0 --no-enable-prefix-caching
  run llama-server "$LLAMA/build-gqa-compare/bin/llama-server" -m "$MODEL/model.gguf" --port PORT -np 4 \
    -c 16384 -t "$(nproc)"
done
