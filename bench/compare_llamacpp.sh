#!/usr/bin/env bash
# Side-by-side CPU benchmark against llama.cpp on one random-weight model.
#
#   bench/compare_llamacpp.sh LLAMA_CPP_CHECKOUT [--rounds R] [--threads T] [--head-dim 64|128]
#                             [--batches 16,32] [--out DIR] [--skip-build] [--f32-activations]
#
# Builds llama.cpp from the checkout (its own default, native CPU flags, into
# CHECKOUT/build-gqa-compare), writes one Llama-3.2-1B-shaped BF16 model with
# random weights as a Hugging Face directory (gqa-make-model, the Llama 3
# tokenizer from tests/fixtures) and as GGUF (bench/hf_to_gguf.py), then runs
# both engines interleaved, R rounds of:
#   batch-1 decode   gqa-bench --batch 1            | llama-bench -n 128 (tg128; f16 KV, its default)
#   prefill          gqa-bench --context 512        | llama-bench -p 512 (pp512)
#   batched decode   gqa-bench --batch B            | llama-batched-bench -fa -npl B (S_TG)
# gqa-bench measures the host's read and copy bandwidth before each of its
# timed samples; the same figures put llama.cpp's decode on the roofline.
# Results: DIR/rounds.jsonl (every run) and DIR/summary.md (medians, best,
# ratios), printed at the end. Nothing of llama.cpp enters this repository.
# gqa-bench runs with its defaults: on AVX-512 BF16, activations rounded to
# bf16 in the products over bf16 weights (llama.cpp's numerics).
# --f32-activations also runs it with GQA_CPU_BF16_ACTIVATIONS=0 (f32
# activations, the weights widened for FMAs; AVX-512 BF16 only) beside each
# default run, as rows of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

[[ $# -ge 1 && -d "$1" ]] || { echo "usage: $0 LLAMA_CPP_CHECKOUT [--rounds R] [--threads T] [--head-dim 64|128] [--batches 16,32] [--out DIR] [--skip-build] [--f32-activations]" >&2; exit 2; }
LLAMA=$(cd "$1" && pwd); shift
ROUNDS=3 THREADS=2 HEAD_DIM=64 BATCHES=16,32 OUT=$ROOT/compare-out SKIP_BUILD=0 F32ACT=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --head-dim) HEAD_DIM=$2; shift 2 ;;
    --batches) BATCHES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --f32-activations) F32ACT=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case $HEAD_DIM in
  64) HEADS=32 ;;   # Llama 3.2 1B: 32 x 64
  128) HEADS=16 ;;  # the same hidden size with 16 heads of 128
  *) echo "--head-dim must be 64 or 128" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# hf_to_gguf.py imports the checkout's gguf package, which needs these.
python3 -c "import numpy, sentencepiece, yaml" 2>/dev/null || python3 -m pip install --quiet numpy sentencepiece pyyaml

if [[ $SKIP_BUILD == 0 ]]; then
  echo "== building llama.cpp ($(cat "$LLAMA/.commit" 2>/dev/null || git -C "$LLAMA" rev-parse --short HEAD 2>/dev/null || echo unknown commit))"
  cmake -S "$LLAMA" -B "$LLAMA/build-gqa-compare" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$LLAMA/build-gqa-compare" -j"$(nproc)" --target llama-bench llama-batched-bench >/dev/null
  [[ -x build/bin/gqa-bench && -x build/bin/gqa-make-model ]] || ./scripts/build.sh
fi
LB=$LLAMA/build-gqa-compare/bin

MODEL=$OUT/model-hd$HEAD_DIM
if [[ ! -f $MODEL/model.gguf ]]; then
  echo "== writing the random model ($MODEL)"
  rm -rf "$MODEL"
  build/bin/gqa-make-model --out "$MODEL" --layers 16 --hidden 2048 --heads $HEADS --kv-heads 8 --head-dim "$HEAD_DIM" \
    --intermediate 8192 --vocab 128256 --dtype bf16 --rope-theta 500000 --max-position 8192 --bos 128000 --eos 128001 --seed 1
  tar -xJf tests/fixtures/tokenizers.tar.xz -C "$OUT" tokenizers/llama3
  cp "$OUT"/tokenizers/llama3/tokenizer.json "$OUT"/tokenizers/llama3/tokenizer_config.json "$MODEL"/
  python3 bench/hf_to_gguf.py --llama-cpp "$LLAMA" --in "$MODEL" --out "$MODEL/model.gguf.tmp"
  mv "$MODEL/model.gguf.tmp" "$MODEL/model.gguf"
fi

{
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; ISA flags: $(grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "gqa-serve $(git rev-parse --short HEAD)$(git diff --quiet || echo +changes); llama.cpp $(cat "$LLAMA/.commit" 2>/dev/null || git -C "$LLAMA" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "date: $(date -u +%FT%TZ); threads: $THREADS; model: 16 layers, hidden 2048, $HEADS x $HEAD_DIM query heads, 8 KV heads, MLP 8192, vocab 128256, BF16, random weights"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

ROUNDS_FILE=$OUT/rounds.jsonl
: > "$ROUNDS_FILE"
ours() {  # ours KIND ARGS...: one gqa-bench run, its JSON as one line; with --f32-activations a second
         # run with f32 activations as KIND-f32act
  ours_run "$@"
  if [[ $F32ACT == 1 ]]; then
    local kind=$1; shift
    GQA_CPU_BF16_ACTIVATIONS=0 ours_run "$kind-f32act" "$@"
  fi
}
ours_run() {
  local kind=$1; shift
  build/bin/gqa-bench --model "$MODEL" --threads "$THREADS" --kv-cache-dtype bf16 "$@" 2>/dev/null |
    python3 -c "import json,sys; j=json.load(sys.stdin); j['engine']='gqa'; j['kind']='$kind'; print(json.dumps(j))" >> "$ROUNDS_FILE"
}
llama_bench() {  # llama_bench KIND ARGS...: one llama-bench run (its defaults: f16 KV cache, no flash attention)
  local kind=$1; shift
  "$LB/llama-bench" -m "$MODEL/model.gguf" -t "$THREADS" -r 1 -o json "$@" 2>/dev/null |
    python3 -c "
import json,sys
for r in json.load(sys.stdin):
    print(json.dumps({'engine':'llama.cpp','kind':'$kind','flash_attn':r.get('flash_attn'),'tokens_per_s':r['avg_ts']}))" >> "$ROUNDS_FILE"
}
llama_batched() {  # llama_batched B: S_TG of llama-batched-bench with flash attention
  local b=$1
  "$LB/llama-batched-bench" -m "$MODEL/model.gguf" -t "$THREADS" -tb "$THREADS" -fa -c $(( b * 160 + 64 )) -b 2048 -ub 512 \
    -npp 64 -ntg 32 -npl "$b" --output-format jsonl 2>/dev/null | grep '^{' |
    python3 -c "
import json,sys
for line in sys.stdin:
    r=json.loads(line)
    print(json.dumps({'engine':'llama.cpp','kind':'batch$b','tokens_per_s':r['speed_tg'],'prefill_tokens_per_s':r['speed_pp']}))" >> "$ROUNDS_FILE"
}

for ((r = 1; r <= ROUNDS; ++r)); do
  echo "== round $r of $ROUNDS"
  ours decode --batch 1 --context 64 --samples 4 --steps-per-sample 8
  llama_bench decode -p 0 -n 128
  ours prefill --batch 1 --context 512 --samples 1 --steps-per-sample 1
  llama_bench prefill -p 512 -n 0
  for b in ${BATCHES//,/ }; do
    ours "batch$b" --batch "$b" --context 64 --samples 2 --steps-per-sample 4
    llama_batched "$b"
  done
done

python3 - "$ROUNDS_FILE" "$OUT/summary.md" "$OUT/machine.txt" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
if not rows:
    sys.exit(0)
read_bw = [r["read_GBps"]["median"] for r in rows if r["engine"] == "gqa" and "read_GBps" in r]
weight_bytes = next(r["weight_bytes_per_step"] for r in rows if r["engine"] == "gqa")
def series(engine, kind, key):
    out = []
    for r in rows:
        if r["engine"] != engine or r["kind"] != kind:
            continue
        if engine == "gqa":
            out.append(r["prefill_tokens_per_s"] if key == "prefill" else r["decode_tokens_per_s"]["median"])
        else:
            out.append(r["tokens_per_s"])
    return out
def best_llama(kind):
    return [r["tokens_per_s"] for r in rows if r["engine"] == "llama.cpp" and r["kind"] == kind]
lines = [open(sys.argv[3]).read().strip(), "",
         "| work | gqa-serve median (best) tok/s | llama.cpp median (best) tok/s | ratio of medians |", "|---|---|---|---|"]
kinds = [("decode", "batch-1 decode (tg)", "decode"), ("prefill", "prefill pp512", "prefill")]
kinds += [(k, f"batched decode B={k[5:]} (S_TG, -fa)", "decode") for k in sorted({r["kind"] for r in rows if r["kind"].startswith("batch") and not r["kind"].endswith("-f32act")}, key=lambda k: int(k[5:]))]
kinds += [(k + "-f32act", l + ", gqa with f32 activations", key) for k, l, key in kinds]
for kind, label, key in kinds:
    g, l = series("gqa", kind, key), best_llama(kind.replace("-f32act", ""))
    if not g or not l:
        continue
    gm, lm = statistics.median(g), statistics.median(l)
    lines.append(f"| {label} | {gm:.1f} ({max(g):.1f}) | {lm:.1f} ({max(l):.1f}) | {gm / lm:.2f} |")
dec = [r for r in rows if r["engine"] == "gqa" and r["kind"] == "decode"]
if dec:
    ours_frac = [r["per_sample_fraction_vs_read"]["median"] for r in dec]
    l = best_llama("decode")
    # llama.cpp's tg128 reads the weights once per token (its KV cache is small at these lengths)
    llama_frac = [t * weight_bytes / 1e9 / bw for t, bw in zip(l, [r["read_GBps"]["median"] for r in dec])]
    lines += ["", f"read bandwidth measured by gqa-bench: median {statistics.median(read_bw):.1f} GB/s, range {min(read_bw):.1f}-{max(read_bw):.1f}",
              f"batch-1 decode, fraction of the read roofline: gqa-serve median {statistics.median(ours_frac):.0%} (best {max(ours_frac):.0%}); "
              f"llama.cpp median {statistics.median(llama_frac):.0%} (best {max(llama_frac):.0%}, weights only, against the probe of the adjacent gqa-bench run)"]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
