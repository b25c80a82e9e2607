#!/bin/bash
# Container entrypoint: execs gqa-server with a flag for every GQA_FLAG_<NAME>
# variable (--name=value; NAME upper-case with '_' for '-', e.g.
# GQA_FLAG_KV_CACHE_MEMORY=8589934592 gives --kv-cache-memory=8589934592),
# then the command-line arguments, which win where both set a flag (the last
# occurrence of a flag counts). GQA_API_KEY is read by gqa-server itself.
set -euo pipefail
args=()
for var in $(compgen -v GQA_FLAG_ || true); do
  name="${var#GQA_FLAG_}"
  name="${name,,}"
  args+=("--${name//_/-}=${!var}")
done
exec /usr/local/bin/gqa-server "${args[@]}" "$@"
