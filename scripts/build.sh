#!/usr/bin/env bash
# Installs missing packages, then configures and builds into build/ (programs in build/bin/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${GQA_CUDA_ARCHS:+-DGQA_CUDA_ARCHS=$GQA_CUDA_ARCHS} >/dev/null
cmake --build build -j"$(nproc)"
