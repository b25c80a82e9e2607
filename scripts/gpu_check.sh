#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and only CUDA, CMake, Ninja and a compiler
# (no gRPC, no GoogleTest): builds the engine with the CUDA backend for this
# GPU, runs every GPU test (the interpreter's tests, the CUDA ops against the
# CPU backend on the device, whole models on the device against the CPU),
# then the GPU benchmarks (decode steps of a Llama-3-8B-shaped random model
# at batch 1, 16 and 64 against a device-to-device copy measured in the same
# run, with CUDA graphs and, at batch 16, without; prefill tokens/s; the attention op alone: decode GB/s against the
# copy, prefill TFLOP/s), and prints tables. Logs go to $OUT (or
# gpu-check-out/). Abseil and nlohmann-json come from the system, or from
# .gpu-deps/ made by scripts/gpu_deps.sh on a Debian machine.
#   GQA_GPU_LAYERS (default 32), GQA_GPU_CONTEXT (default 1024) size the benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
log="$out/gpu_check.log"
exec > >(tee "$log") 2>&1

echo "== gpu_check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi -L failed); nothing to check here"
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
gpus=$(nvidia-smi -L | wc -l)
archs="${GQA_CUDA_ARCHS:-$cap}"

prefix=()
[ -d .gpu-deps ] && prefix=(-DCMAKE_PREFIX_PATH="$PWD/.gpu-deps/usr")
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DGQA_ENABLE_CUDA=ON -DGQA_BUILD_SERVER=OFF \
      -DGQA_BUILD_TESTS=OFF -DGQA_CUDA_ARCHS="$archs" "${prefix[@]}" || exit 1
cmake --build build-gpu -j"$(nproc)" || exit 1
if [ -d .gpu-deps ]; then
  export LD_LIBRARY_PATH="$PWD/.gpu-deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

declare -A result
run() {  # name, command...
  local name=$1
  shift
  echo "== $name: $*"
  if "$@" > "$out/$name.txt" 2>&1; then result[$name]=pass; else result[$name]="FAIL (exit $?)"; fi
  tail -3 "$out/$name.txt"
}
bin=build-gpu/bin
golden=$(ls -d tests/fixtures/golden/*/ | sed 's:/$::' | paste -sd,)
tps=1
for t in 2 4 8; do [ "$t" -le "$gpus" ] && tps="$tps,$t"; done
run simt_test "$bin/simt_test"
run cuda_sim_ops_test "$bin/cuda_sim_ops_test"
run cuda_ops_test "$bin/cuda_ops_test"
run models_cuda "$bin/gqa-device-check" --device cuda --tp "$tps" --models "$golden"
run models_cuda_bf16_kv "$bin/gqa-device-check" --device cuda --tp 1 --kv-cache-dtype bf16 --models "$golden"

layers="${GQA_GPU_LAYERS:-32}"
context="${GQA_GPU_CONTEXT:-1024}"
for b in 1 16 64; do
  "$bin/gqa-bench" --device cuda --layers "$layers" --hidden 4096 --heads 32 --kv-heads 8 --head-dim 128 \
      --intermediate 14336 --vocab 128256 --dtype bf16 --untied --context "$context" --batch "$b" \
      --kv-cache-dtype bf16 --samples 8 --steps-per-sample 8 --probe-mib 2048 > "$out/bench_b$b.json" 2> "$out/bench_b$b.err" \
    || { result[bench_b$b]="FAIL"; tail -3 "$out/bench_b$b.err"; }
done
# The same decode steps kernel by kernel, against the CUDA graphs above.
"$bin/gqa-bench" --device cuda --layers "$layers" --hidden 4096 --heads 32 --kv-heads 8 --head-dim 128 \
    --intermediate 14336 --vocab 128256 --dtype bf16 --untied --context "$context" --batch 16 \
    --kv-cache-dtype bf16 --samples 8 --steps-per-sample 8 --probe-mib 2048 --cuda-graphs off \
    > "$out/bench_b16_no_graphs.json" 2> "$out/bench_b16_no_graphs.err" \
  || { result[bench_b16_no_graphs]="FAIL"; tail -3 "$out/bench_b16_no_graphs.err"; }

echo "== attention kernels alone (decode GB/s against a device copy, prefill TFLOP/s)"
"$bin/gqa-bench" --mode attention --device cuda --attn-context 1024,4096,16384,32768 --attn-batch 1,8,16,64 \
    --attn-groups 1,4,8 --kv-heads 8 --head-dim 128 --samples 10 --probe-mib 2048 --attn-max-gib 24 \
    > "$out/attention.md" 2> "$out/attention.err" || result[attention]="FAIL"
cat "$out/attention.md"

echo
echo "| check | result |"
echo "|---|---|"
for k in simt_test cuda_sim_ops_test cuda_ops_test models_cuda models_cuda_bf16_kv; do echo "| $k | ${result[$k]} |"; done
echo
echo "Llama-3-8B-shaped random model ($layers layers, bf16 weights and KV), context $context, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1):"
echo "| batch | step ms (median / best) | tok/s (median) | achieved GB/s | copy GB/s | fraction of copy (median / best) | prefill tok/s |"
echo "|---|---|---|---|---|---|---|"
for b in 1 16 64 16_no_graphs; do
  f="$out/bench_b$b.json"
  if [ -s "$f" ] && python3 -c "import json,sys; json.load(open('$f'))" 2>/dev/null; then
    python3 - "$f" "$b" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print("| %s | %.2f / %.2f | %.0f | %.0f | %.0f | %.2f / %.2f | %.0f |" % (
    sys.argv[2], j["decode_step_ms"]["median"], j["decode_step_ms"]["best"], j["decode_tokens_per_s"]["median"],
    j["achieved_GBps"]["median"], j["copy_GBps"]["median"], j["roofline_fraction_vs_copy"]["median"],
    j["roofline_fraction_vs_copy"]["best"], j["prefill_tokens_per_s"]))
PY
  else
    echo "| $b | ${result[bench_b$b]:-no result} | | | | | |"
  fi
done
for k in "${!result[@]}"; do [ "${result[$k]}" = pass ] || exit 1; done
