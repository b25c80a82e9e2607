#!/usr/bin/env bash
# Measures one gqa-server at three concurrencies with gqa-bench serve and
# with guidellm (PyPI), the same requests per level, and prints a Markdown
# table of both. The server runs on CPU 1 and each load generator on CPU 0
# (taskset), so that a client's own CPU time does not slow the server.
#   GUIDELLM=/path/to/guidellm ./tools/serve_crosscheck.sh [OUT_DIR]
# Needs build/bin (tools/build.sh), models/demo (tools/demo.sh writes it, or
# this script does) and guidellm (pip install guidellm).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results/crosscheck}
guidellm=${GUIDELLM:-guidellm}
levels=(1 4 16)
read -r -a counts <<< "${COUNTS:-30 80 200}"  # requests per level, the same for both tools
input=64
output=64
mkdir -p "$out"

if [ ! -f models/demo/config.json ]; then
  ./build/bin/gqa-make-model --out models/demo --layers 4 --hidden 256 --heads 8 --kv-heads 2 \
    --head-dim 32 --intermediate 688 --vocab 32000 --dtype bf16 --max-position 4096 --seed 1
  cp build/fixtures/tokenizers/mistral/tokenizer.json build/fixtures/tokenizers/mistral/tokenizer_config.json models/demo/
fi

taskset -c 1 ./build/bin/gqa-server --model models/demo --tp 1 --threads 1 --http-port 0 --grpc-port 0 \
  --seed 0 2> "$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q 'gqa: serving' "$out/server.log" && break
  sleep 0.1
done
port=$(sed -n 's/.*gqa: serving.*HTTP on [^:]*:\([0-9]*\),.*/\1/p' "$out/server.log")
[ -n "$port" ] || { echo "server did not start; see $out/server.log" >&2; exit 1; }
echo "gqa-server (demo model, 1 thread on CPU 1) on port $port" >&2

for i in 0 1 2; do
  c=${levels[$i]}
  n=${counts[$i]}
  echo "== concurrency $c, $n requests: gqa-bench serve" >&2
  taskset -c 0 ./build/bin/gqa-bench serve --url "http://127.0.0.1:$port" --concurrency "$c" --num-requests "$n" \
    --warmup 0 --input-len $input --output-len $output --vocab-size 32000 --no-progress \
    --output-json "$out/gqa-bench-c$c.json" > "$out/gqa-bench-c$c.txt" 2>&1
  echo "== concurrency $c, $n requests: guidellm" >&2
  taskset -c 0 "$guidellm" run \
    --backend "kind=openai_http,target=http://127.0.0.1:$port,model=demo,request_format=/v1/completions" \
    --profile "kind=concurrent,streams=$c" --constraint "kind=max_requests,count=$n" \
    --data "kind=synthetic_text,prompt_tokens=$input,output_tokens=$output" \
    --tokenizer "kind=huggingface_auto,model=$PWD/models/demo" \
    --output "kind=json,path=$out/guidellm-c$c.json" --disable-progress > "$out/guidellm-c$c.txt" 2>&1
done

python3 - "$out" "${levels[@]}" <<'PY'
import json, sys
out, levels = sys.argv[1], [int(x) for x in sys.argv[2:]]
print("| concurrency | tool | completed | req/s | output tok/s | TTFT mean ms | TTFT p50 ms | TTFT p99 ms | TPOT mean ms |")
print("|---|---|---|---|---|---|---|---|---|")
diffs = []
for c in levels:
    g = json.load(open(f"{out}/gqa-bench-c{c}.json"))["levels"][0]
    row_g = (g["completed"], g["request_throughput"], g["output_throughput"], g["ttft_ms"]["mean"],
             g["ttft_ms"]["p50"], g["ttft_ms"]["p99"], g["tpot_ms"]["mean"])
    b = json.load(open(f"{out}/guidellm-c{c}.json"))["benchmarks"][0]
    m = b["metrics"]
    ok = m["request_latency"]["successful"]["count"]
    dur = b["duration"]
    ttft = m["time_to_first_token_ms"]["successful"]
    # guidellm's inter-token latency, averaged over tokens: with equal
    # lengths the same quantity as gqa-bench's TPOT mean over requests.
    row_l = (ok, ok / dur, m["output_token_count"]["successful"]["total_sum"] / dur, ttft["mean"],
             ttft["percentiles"]["p50"], ttft["percentiles"]["p99"], m["inter_token_latency_ms"]["successful"]["mean"])
    for name, r in (("gqa-bench serve", row_g), ("guidellm", row_l)):
        print(f"| {c} | {name} | {r[0]} | {r[1]:.2f} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.2f} |")
    diffs.append((c, 100 * (row_g[1] / row_l[1] - 1), 100 * (row_g[2] / row_l[2] - 1), 100 * (row_g[3] / row_l[3] - 1),
                  100 * (row_g[6] / row_l[6] - 1)))
print()
print("| concurrency | req/s: gqa-bench vs guidellm | output tok/s | TTFT mean | TPOT mean |")
print("|---|---|---|---|---|")
for c, a, b, t, p in diffs:
    print(f"| {c} | {a:+.1f}% | {b:+.1f}% | {t:+.1f}% | {p:+.1f}% |")
PY
