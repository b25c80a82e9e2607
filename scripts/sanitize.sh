#!/usr/bin/env bash
# The sanitizer matrix beyond what every CI run covers (see docs/sanitizers.md):
#   scripts/sanitize.sh asan [CTEST_REGEX]  every GoogleTest suite (or those matching)
#                                         under AddressSanitizer + UBSan (clang, build-fuzz/)
#   scripts/sanitize.sh tsan [CTEST_REGEX]  the concurrent parts under ThreadSanitizer
#                                         (clang, build-tsan/): engine, executor,
#                                         communicators, scheduler, server
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
command -v clang++ >/dev/null || { echo "scripts/sanitize.sh: clang++ is needed (Debian: clang, libclang-rt-dev)" >&2; exit 1; }
jobs="$(nproc)"
case "$mode" in
  asan)
    regex="${2:-.}"
    # The build the fuzzers use (scripts/fuzz.sh), with every suite added.
    cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DGQA_FUZZ=ON \
          -DGQA_SANITIZE=ON -DGQA_ENABLE_CUDA=OFF -DGQA_BUILD_TESTS=ON -DGQA_BUILD_CUDA_TESTS=ON >/dev/null
    cmake --build build-fuzz -j"$jobs"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      ctest --test-dir build-fuzz --output-on-failure -j"$jobs" --timeout 900 -R "$regex" -E '^(mpi_tp|mpi_tp_netns)$'
    ;;
  tsan)
    # The server suites start gRPC, whose Debian build is not instrumented:
    # TSan reports its internal synchronisation as races, so they are not
    # in the default set (the HTTP connection layer is, through
    # ConnectionLoopTest).
    regex="${2:-^(EngineTest|InProcessCommunicatorTest|TpTest|SchedulerTest|ConnectionLoopTest)\.}"
    cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DGQA_TSAN=ON \
          -DGQA_ENABLE_CUDA=OFF -DGQA_ENABLE_MPI=OFF -DGQA_BUILD_CUDA_TESTS=OFF >/dev/null
    cmake --build build-tsan -j"$jobs" --target engine_test communicator_test tp_test scheduler_test server_test connection_loop_test \
          gqa-server gqa-generate gqa-client gqa-make-model gqa-plan
    # Tests that run the SIMT interpreter are left out: its fibers switch
    # stacks by hand, which TSan cannot follow (they hang under it).
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp" \
      ctest --test-dir build-tsan --output-on-failure -j"$jobs" --timeout 600 -R "$regex" \
            -E "OnCudaSim|FailingRankIsReportedAndTheGroupRecovers"
    ;;
  *)
    echo "usage: scripts/sanitize.sh asan|tsan [CTEST_REGEX]" >&2
    exit 2
    ;;
esac
