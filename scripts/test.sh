#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (GPU tests skip
# without a GPU and say so) and the validators of deploy/ (deploy/check.sh).
# Then builds the SIMT interpreter and the CUDA kernels with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs their tests again
# there (device buffers are host memory under the interpreter, so an
# out-of-bounds access in a kernel is caught).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600

echo "== deploy/: Dockerfiles, Kubernetes manifests, systemd unit, Grafana dashboard (deploy/check.sh)"
./deploy/check.sh

# Sanitizers (docs/sanitizers.md): CI runs the fuzzers and the suites of the
# parsers, engine and servers under ASan + UBSan (clang, build-fuzz/); the
# rest of the matrix is scripts/sanitize.sh asan|tsan, run by hand.
if command -v clang++ >/dev/null; then
  echo "== fuzzers: regressions replayed, then every target for ${GQA_FUZZ_SECONDS:-15} s (build-fuzz/, clang, ASan + UBSan)"
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DGQA_FUZZ=ON \
        -DGQA_SANITIZE=ON -DGQA_ENABLE_CUDA=OFF -DGQA_BUILD_TESTS=ON -DGQA_BUILD_CUDA_TESTS=OFF >/dev/null
  ./scripts/fuzz.sh all "${GQA_FUZZ_SECONDS:-15}"
  echo "== parser, engine and server suites under ASan + UBSan (build-fuzz/)"
  cmake --build build-fuzz -j"$(nproc)" --target checkpoint_test chat_template_test tokenizer_unit_test \
        tokenizer_fuzz_test engine_test communicator_test server_test connection_loop_test gqa-server gqa-generate \
        gqa-client gqa-make-model gqa-plan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir build-fuzz --output-on-failure -j"$(nproc)" --timeout 600 \
          -R '^(CheckpointTest|ConfigTest|ChatTemplateTest|ChatTemplateLimitsTest|EncodeTest|DecodeTest|FuzzTest|StopStringsTest|EngineTest|InProcessCommunicatorTest|ServerTest|ServerProcessTest|ConnectionLoopTest)\.'
else
  echo "== fuzzers and sanitized suites skipped: clang++ not found (Debian: clang, libclang-rt-14-dev)"
fi

echo "== interpreter and CUDA kernel tests under AddressSanitizer + UBSan (build-asan/)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGQA_SANITIZE=ON -DGQA_BUILD_SERVER=OFF \
      -DGQA_BUILD_TESTS=OFF -DGQA_ENABLE_CUDA=OFF >/dev/null
cmake --build build-asan -j"$(nproc)" --target simt_test cuda_sim_ops_test
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -R '^(simt_test|cuda_sim_ops_test)$'
