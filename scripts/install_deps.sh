#!/usr/bin/env bash
# Installs the Debian packages gqa-serve builds with, if any are missing.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config libabsl-dev nlohmann-json3-dev
          libgtest-dev libgmock-dev libpcre2-dev libicu-dev
          libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libcpp-httplib-dev
          openmpi-bin libopenmpi-dev clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
