#!/usr/bin/env bash
# Measures one gqa-server at three concurrencies with gqa-bench serve and
# with guidellm (PyPI), the same requests per level, and prints a Markdown
# table of both. The server runs on CPU 1 and each load generator on CPU 0
# (taskset), so that a client's own CPU time does not slow the server.
# Both send the same requests: 64 prompt tokens, exactly 64 output tokens,
# streamed, sampled at temperature 1 (guidellm sends no temperature, so the
# server uses its default, 1; random sampling costs this server ~1.5 ms per
# token over greedy, so the two must match).
# The server's own log line per request (ttft_s, latency_s) is the third
# witness: each tool's requests are matched to it by order.
#   GUIDELLM=/path/to/guidellm ./bench/serve_crosscheck.sh [OUT_DIR]
# HOG=1 keeps CPU 0 busy (a pinned busy loop) while gqa-bench runs, as
# guidellm's Python keeps it busy while it runs: on a 2-vCPU machine a busy
# neighbour vCPU slows the server's, so this makes the two runs comparable.
# Needs build/bin (scripts/build.sh), models/demo (scripts/demo.sh writes it, or
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
  hog=
  if [ "${HOG:-0}" = 1 ]; then taskset -c 0 python3 -c 'while True: pass' & hog=$!; fi
  taskset -c 0 ./build/bin/gqa-bench serve --url "http://127.0.0.1:$port" --concurrency "$c" --num-requests "$n" \
    --warmup 0 --input-len $input --output-len $output --vocab-size 32000 --temperature 1 --no-progress \
    --output-json "$out/gqa-bench-c$c.json" > "$out/gqa-bench-c$c.txt" 2>&1
  if [ -n "$hog" ]; then kill $hog; wait $hog 2>/dev/null || true; fi
  echo "== concurrency $c, $n requests: guidellm" >&2
  taskset -c 0 "$guidellm" run \
    --backend "kind=openai_http,target=http://127.0.0.1:$port,model=demo,request_format=/v1/completions" \
    --profile "kind=concurrent,streams=$c" --constraint "kind=max_requests,count=$n" \
    --data "kind=synthetic_text,prompt_tokens=$input,output_tokens=$output" \
    --tokenizer "kind=huggingface_auto,model=$PWD/models/demo" \
    --output "kind=json,path=$out/guidellm-c$c.json" --disable-progress > "$out/guidellm-c$c.txt" 2>&1
done

python3 - "$out" "${#levels[@]}" "${levels[@]}" "${counts[@]}" <<'PY'
import json, re, statistics, sys
out, k = sys.argv[1], int(sys.argv[2])
levels = [int(x) for x in sys.argv[3:3 + k]]
counts = [int(x) for x in sys.argv[3 + k:3 + 2 * k]]
# The server's request log, in finishing order: gqa-bench's requests of a
# level, then guidellm's, level after level (each run ends before the next).
log = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(f"{out}/server.log") if l.startswith("gqa: request")]
server, at = {}, 0
for c, n in zip(levels, counts):
    for tool in ("gqa-bench serve", "guidellm"):
        seg = log[at:at + n]
        at += n
        server[(c, tool)] = (statistics.mean(float(r["ttft_s"]) for r in seg) * 1e3,
                             statistics.mean(float(r["latency_s"]) for r in seg) * 1e3, len(seg))
print(f"server log: {len(log)} requests, {2 * sum(counts)} expected")
print()
print("| concurrency | tool | completed | req/s | output tok/s | TTFT mean ms | TTFT p50 ms | TTFT p99 ms | TPOT mean ms | e2e mean ms | server: TTFT mean ms | server: e2e mean ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
diffs = []
for c in levels:
    g = json.load(open(f"{out}/gqa-bench-c{c}.json"))["levels"][0]
    row_g = (g["completed"], g["request_throughput"], g["output_throughput"], g["ttft_ms"]["mean"],
             g["ttft_ms"]["p50"], g["ttft_ms"]["p99"], g["tpot_ms"]["mean"], g["e2e_latency_ms"]["mean"])
    b = json.load(open(f"{out}/guidellm-c{c}.json"))["benchmarks"][0]
    m = b["metrics"]
    ok = m["request_latency"]["successful"]["count"]
    dur = b["duration"]
    ttft = m["time_to_first_token_ms"]["successful"]
    # guidellm's inter-token latency, averaged over tokens: with equal
    # lengths the same quantity as gqa-bench's TPOT mean over requests.
    row_l = (ok, ok / dur, m["output_token_count"]["successful"]["total_sum"] / dur, ttft["mean"],
             ttft["percentiles"]["p50"], ttft["percentiles"]["p99"], m["inter_token_latency_ms"]["successful"]["mean"],
             1e3 * m["request_latency"]["successful"]["mean"])
    for name, r in (("gqa-bench serve", row_g), ("guidellm", row_l)):
        sv = server[(c, name)]
        print(f"| {c} | {name} | {r[0]} | {r[1]:.2f} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.2f} | "
              f"{r[7]:.0f} | {sv[0]:.1f} | {sv[1]:.0f} |")
    sg, sl = server[(c, "gqa-bench serve")], server[(c, "guidellm")]
    diffs.append((c, 100 * (row_g[1] / row_l[1] - 1), 100 * (row_g[2] / row_l[2] - 1), 100 * (row_g[3] / row_l[3] - 1),
                  100 * (row_g[6] / row_l[6] - 1), 100 * (sg[1] / sl[1] - 1),
                  100 * (row_g[7] / sg[1] - 1), 100 * (row_l[7] / sl[1] - 1)))
print()
print("| concurrency | req/s: gqa-bench vs guidellm | output tok/s | TTFT mean | TPOT mean | server e2e: gqa-bench's vs guidellm's requests | gqa-bench e2e vs server log | guidellm e2e vs server log |")
print("|---|---|---|---|---|---|---|---|")
for c, a, b, t, p, se, ge, le in diffs:
    print(f"| {c} | {a:+.1f}% | {b:+.1f}% | {t:+.1f}% | {p:+.1f}% | {se:+.1f}% | {ge:+.1f}% | {le:+.1f}% |")
PY
