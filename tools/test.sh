#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (GPU tests skip
# without a GPU and say so) and the validators of deploy/ (deploy/check.sh).
# Then builds the SIMT interpreter and the CUDA kernels with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs their tests again
# there (device buffers are host memory under the interpreter, so an
# out-of-bounds access in a kernel is caught).
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600

echo "== deploy/: Dockerfiles, Kubernetes manifests, systemd unit, Grafana dashboard (deploy/check.sh)"
./deploy/check.sh

echo "== interpreter and CUDA kernel tests under AddressSanitizer + UBSan (build-asan/)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGQA_SANITIZE=ON -DGQA_BUILD_SERVER=OFF \
      -DGQA_BUILD_TESTS=OFF -DGQA_ENABLE_CUDA=OFF >/dev/null
cmake --build build-asan -j"$(nproc)" --target simt_test cuda_sim_ops_test
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -R '^(simt_test|cuda_sim_ops_test)$'
