#!/usr/bin/env bash
# Prefix caching, side by side on one server build: gqa-server with the
# cache and without it (--no-enable-prefix-caching), interleaved over
# ROUNDS rounds, each running the same gqa-bench serve level: every prompt
# is one shared prefix of PREFIX token ids plus UNIQUE of its own, OUTPUT
# tokens out, CONCURRENCY clients; then the same clients in conversations of
# TURNS requests (each resends its conversation so far plus TURN_LEN new
# tokens, TURN_OUT out). Prints one line per run (TTFT p50/p90, output
# tokens/s, the server's hit rate after warm-up; prompt tokens sent and
# computed for the conversations) and leaves the JSON in OUT (default
# bench-results/prefix-cache/).
#   bench/prefix_cache_bench.sh [MODEL_DIR]
# Without MODEL_DIR a random Llama-shaped bf16 model is made once (8
# layers, hidden 512, 8 query / 2 KV heads of 64, vocabulary 32000).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-models/prefix-bench}"
rounds="${ROUNDS:-3}"
prefix="${PREFIX:-1024}"
unique="${UNIQUE:-16}"
output="${OUTPUT:-32}"
concurrency="${CONCURRENCY:-4}"
requests="${REQUESTS:-24}"
turns="${TURNS:-8}"
turn_len="${TURN_LEN:-64}"
turn_out="${TURN_OUT:-32}"
out="${OUT:-bench-results/prefix-cache}"
mkdir -p "$out"
if [ ! -f "$model/config.json" ]; then
  ./build/bin/gqa-make-model --out "$model" --layers 8 --hidden 512 --heads 8 --kv-heads 2 --head-dim 64 \
    --intermediate 1536 --vocab 32000 --dtype bf16 --max-position 4096 --seed 3
fi
port=$((20000 + RANDOM % 20000))
for r in $(seq 1 "$rounds"); do
  for mode in on off; do
    args=(--model "$model" --http-port "$port" --grpc-port 0 --num-kv-blocks 2048 --log-stats-interval 0)
    [ "$mode" = off ] && args+=(--no-enable-prefix-caching)
    ./build/bin/gqa-server "${args[@]}" 2> "$out/server-$mode-$r.log" &
    pid=$!
    for _ in $(seq 1 600); do
      grep -q "gqa: serving" "$out/server-$mode-$r.log" 2>/dev/null && break
      sleep 0.1
    done
    ./build/bin/gqa-bench serve --url "http://127.0.0.1:$port" --concurrency "$concurrency" \
      --shared-prefix-len "$prefix" --input-len "$unique" --output-len "$output" --vocab-size 32000 \
      --num-requests "$requests" --no-progress --output-json "$out/cache-$mode-$r.json" > /dev/null
    ./build/bin/gqa-bench serve --url "http://127.0.0.1:$port" --concurrency "$concurrency" \
      --turns "$turns" --input-len "$turn_len" --output-len "$turn_out" --vocab-size 32000 --warmup 0 \
      --num-requests $((turns * concurrency)) --seed "$r" --no-progress \
      --output-json "$out/turns-$mode-$r.json" > /dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    python3 - "$out/cache-$mode-$r.json" "$mode" "$r" <<'EOF'
import json, sys
level = json.load(open(sys.argv[1]))["levels"][0]
hit = (level.get("server") or {}).get("prefix_cache_hit_rate")
print(f"round {sys.argv[3]} cache {sys.argv[2]:3}: TTFT p50 {level['ttft_ms']['p50']:8.1f} ms, "
      f"p90 {level['ttft_ms']['p90']:8.1f} ms, output {level['output_throughput']:7.1f} tok/s, "
      f"hit rate {'-' if hit is None else f'{100 * hit:.1f}%'}")
EOF
    python3 - "$out/turns-$mode-$r.json" "$mode" "$r" <<'EOF'
import json, sys
level = json.load(open(sys.argv[1]))["levels"][0]
print(f"round {sys.argv[3]} cache {sys.argv[2]:3}: conversations: {level['prompt_tokens']} prompt tokens sent, "
      f"{level['computed_prompt_tokens']} computed, TTFT p50 {level['ttft_ms']['p50']:8.1f} ms")
EOF
  done
done
