#!/usr/bin/env bash
# Installs what is missing, builds, and runs every check, one stage at a
# time, printing each stage's time and a summary at the end:
#   layout     the include rules of docs/architecture.md (scripts/check_layout.py)
#   build      the release build with nvcc where found (scripts/build.sh)
#   ctest      every test of that build (GPU tests skip without a GPU and say so)
#   deploy     the validators of deploy/ (deploy/check.sh)
#   sanitized  one clang build with AddressSanitizer + UBSan (build-fuzz/):
#              the fuzzers (regressions replayed, then every target for
#              GQA_FUZZ_SECONDS, default 15), then the suites of the parsers,
#              engine, servers, the SIMT interpreter and the CUDA kernels on it
#              (device buffers are host memory under the interpreter, so an
#              out-of-bounds access in a kernel is caught)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"
stage_names=()
stage_secs=()
t0=$SECONDS
stage_start=$SECONDS
stage_name=
begin() {
  stage_name="$1"
  stage_start=$SECONDS
  echo "== [$(date +%H:%M:%S)] $1: $2"
}
end() {
  local s=$((SECONDS - stage_start))
  stage_names+=("$stage_name")
  stage_secs+=("$s")
  echo "== $stage_name: done in $((s / 60)) min $((s % 60)) s"
}
summary() {
  echo "== stage times"
  for i in "${!stage_names[@]}"; do
    printf '   %-10s %4d s\n' "${stage_names[$i]}" "${stage_secs[$i]}"
  done
  printf '   %-10s %4d s\n' total $((SECONDS - t0))
}
trap summary EXIT

begin layout "include rules (scripts/check_layout.py)"
python3 scripts/check_layout.py
end

begin build "release build into build/ (scripts/build.sh)"
./scripts/build.sh
end

begin ctest "every test of build/, $jobs at a time"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600
end

begin deploy "Dockerfiles, Kubernetes manifests, systemd unit, Grafana dashboard (deploy/check.sh)"
./deploy/check.sh
end

# Sanitizers (docs/sanitizers.md): one clang build with ASan + UBSan serves
# the fuzzers and the sanitized suites; the rest of the matrix is
# scripts/sanitize.sh asan|tsan, run by hand.
if command -v clang++ >/dev/null; then
  begin sanitized "clang, ASan + UBSan (build-fuzz/): fuzzers for ${GQA_FUZZ_SECONDS:-15} s each, then the sanitized suites"
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DGQA_FUZZ=ON \
        -DGQA_SANITIZE=ON -DGQA_ENABLE_CUDA=OFF -DGQA_BUILD_TESTS=ON -DGQA_BUILD_CUDA_TESTS=ON >/dev/null
  ./scripts/fuzz.sh all "${GQA_FUZZ_SECONDS:-15}"
  cmake --build build-fuzz -j"$jobs" --target checkpoint_test chat_template_test tokenizer_unit_test \
        tokenizer_fuzz_test engine_test communicator_test server_test connection_loop_test step_wire_test scheduler_test \
        simt_test cuda_sim_ops_test gqa-server gqa-generate gqa-client gqa-make-model gqa-plan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir build-fuzz --output-on-failure -j"$jobs" --timeout 600 \
          -R '^(CheckpointTest|ConfigTest|ChatTemplateTest|ChatTemplateLimitsTest|EncodeTest|DecodeTest|FuzzTest|StopStringsTest|EngineTest|InProcessCommunicatorTest|ServerTest|ServerProcessTest|ConnectionLoopTest|StepWireTest|SchedulerTest|BlockPoolTest|PrefixCacheTest)\.|^(simt_test|cuda_sim_ops_test)$'
  end
else
  echo "== sanitized stage skipped: clang++ not found (Debian: clang, libclang-rt-14-dev)"
fi
