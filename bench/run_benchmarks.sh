#!/usr/bin/env bash
# Runs the benchmarks behind docs/benchmarks.md and leaves their JSON in
# bench-results/ (not committed). Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-results
mkdir -p "$out"
{ date -u; uname -a; lscpu | grep -E 'Model name|^CPU\(s\)|L3'; cat /proc/loadavg; } > "$out/machine.txt"
# 1. Batch-1 decode against the roofline: the issue's Llama-3.2-1B-sized shape
#    (heads of 128) and the real Llama-3.2-1B shape (heads of 64).
./build/bin/gqa-bench --mode decode --samples 12 --steps-per-sample 4 > "$out/decode_1b_hd128.json"
./build/bin/gqa-bench --mode decode --samples 12 --steps-per-sample 4 --head-dim 64 > "$out/decode_1b_hd64.json"
# 2. Throughput against batch size, MHA / GQA-8 / MQA under one KV budget.
./build/bin/gqa-bench --mode sweep --layers 4 --hidden 1024 --heads 32 --head-dim 32 --intermediate 2816 \
  --vocab 32000 --kv-budget-mib 32 --prompt-len 16 --gen-len 112 --max-batch 256 > "$out/sweep.json"
# 3. Through the server (docs/img/*.png): gqa-bench serve against gqa-server
#    on the demo model, then serve-sweep (MHA / GQA-8 / MQA, one KV budget).
if [ ! -f models/demo/config.json ]; then
  ./build/bin/gqa-make-model --out models/demo --layers 4 --hidden 256 --heads 8 --kv-heads 2 \
    --head-dim 32 --intermediate 688 --vocab 32000 --dtype bf16 --max-position 4096 --seed 1
fi
./build/bin/gqa-server --model models/demo --tp 1 --http-port 8700 --grpc-port 8701 --seed 0 2> "$out/serve_server.log" &
server=$!
until grep -q 'gqa: serving' "$out/serve_server.log"; do sleep 0.2; done
./build/bin/gqa-bench serve --url http://127.0.0.1:8700 --concurrency 1,2,4,8,16,32,64 --duration 15 \
  --input-len 64 --output-len 64 --vocab-size 32000 --slo-ttft-ms 500 --slo-tpot-ms 50 \
  --output-json "$out/serve.json" --output-csv "$out/serve.csv" --plot "$out/serve.png" > "$out/serve.txt"
kill $server; wait $server || true
./build/bin/gqa-bench serve-sweep --concurrency 1,2,4,8,16,32,64 --duration 15 --input-len 64 --output-len 64 \
  --kv-cache-memory 16777216 --work-dir "$out/serve-sweep" \
  --output-json "$out/serve_sweep.json" --output-csv "$out/serve_sweep.csv" --plot "$out/serve_sweep.png" \
  > "$out/serve_sweep.txt"
cat /proc/loadavg >> "$out/machine.txt"
