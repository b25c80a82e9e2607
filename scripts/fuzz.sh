#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UBSan, build-fuzz/)
# and runs one for a while, or all of them:
#   scripts/fuzz.sh TARGET [SECONDS]     one target (default 300 s)
#   scripts/fuzz.sh all [SECONDS]        every target in turn (default 30 s each)
#   scripts/fuzz.sh list                 the targets
# Each run starts from the committed seeds (fuzz/corpus/TARGET) and the
# regression inputs (fuzz/regressions/TARGET), which are also replayed first;
# new corpus entries go to build-fuzz/corpus/TARGET, crashes to
# build-fuzz/artifacts/. A crash found becomes a file in fuzz/regressions/.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(fuzz_safetensors fuzz_config fuzz_step_wire fuzz_tokenizer_json fuzz_chat_template fuzz_http_request fuzz_grpc_request
         fuzz_detokenizer)
what="${1:-}"
if [ "$what" = list ]; then printf '%s\n' "${targets[@]}"; exit 0; fi
if [ -z "$what" ]; then echo "usage: scripts/fuzz.sh TARGET|all|list [SECONDS]" >&2; exit 2; fi
if [ "$what" = all ]; then run=("${targets[@]}"); secs="${2:-30}"; else run=("$what"); secs="${2:-300}"; fi
command -v clang++ >/dev/null || { echo "scripts/fuzz.sh: clang++ is needed (Debian: clang, libclang-rt-dev)" >&2; exit 1; }

# The same build directory serves scripts/sanitize.sh asan and CI's sanitized
# test subset (which configure it with the GoogleTest suites too).
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DGQA_FUZZ=ON \
        -DGQA_SANITIZE=ON -DGQA_ENABLE_CUDA=OFF -DGQA_BUILD_TESTS=OFF -DGQA_BUILD_CUDA_TESTS=OFF >/dev/null
fi
cmake --build build-fuzz -j"$(nproc)" --target "${run[@]}"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
mkdir -p build-fuzz/artifacts
failed=()
for t in "${run[@]}"; do
  work=build-fuzz/corpus/$t
  mkdir -p "$work"
  regress=()
  [ -d "fuzz/regressions/$t" ] && regress=("fuzz/regressions/$t")
  if [ ${#regress[@]} -gt 0 ]; then
    echo "== $t: replaying fuzz/regressions/$t"
    "build-fuzz/bin/$t" -runs=0 "${regress[@]}" || { failed+=("$t (regression)"); continue; }
  fi
  echo "== $t: ${secs}s"
  if ! "build-fuzz/bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
         -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$t-" "$work" "fuzz/corpus/$t" \
         "${regress[@]}" 2>"build-fuzz/$t.log"; then
    tail -40 "build-fuzz/$t.log"
    failed+=("$t")
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "build-fuzz/$t.log" | tr '\n' ' '
    echo
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "scripts/fuzz.sh: failed: ${failed[*]} (inputs in build-fuzz/artifacts/)" >&2
  exit 1
fi
echo "scripts/fuzz.sh: ${#run[@]} target(s) ran clean"
