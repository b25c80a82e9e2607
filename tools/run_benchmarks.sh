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
cat /proc/loadavg >> "$out/machine.txt"
