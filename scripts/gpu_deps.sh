#!/usr/bin/env bash
# Bundles what the engine needs besides CUDA, CMake and a compiler (Abseil's
# headers, shared libraries and CMake package, nlohmann-json's headers and
# package) from this Debian machine into .gpu-deps/, for a GPU machine that
# has neither and cannot install them. scripts/gpu_check.sh uses the bundle
# when it is there; with the device tool, carry ".gpu-deps".
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
out=.gpu-deps
rm -rf "$out"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
copy() { mkdir -p "$out$(dirname "$1")"; cp -a "$1" "$out$1"; }
copy /usr/include/absl
copy /usr/include/nlohmann
copy "/usr/lib/$multiarch/cmake/absl"
copy /usr/share/cmake/nlohmann_json
for f in /usr/lib/"$multiarch"/libabsl_*.so*; do copy "$f"; done
echo "bundled into $out ($(du -sh "$out" | cut -f1))"
