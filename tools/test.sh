#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (GPU tests skip
# without a GPU and say so).
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600
