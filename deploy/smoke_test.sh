#!/usr/bin/env bash
# Smoke test of the CPU image (deploy/build_image.sh makes it):
#   deploy/smoke_test.sh [IMAGE]            (default gqa-server:cpu)
# Makes the demo model (scripts/demo.sh's shape and tokenizer) with the image's
# own gqa-make-model, starts the image with it mounted read-only and an API
# key and flags from the environment, waits for /health, sends a completion
# over HTTP, checks the key is enforced, scrapes /metrics, runs a gRPC health
# check (grpcurl, or Python's grpcio-health-checking), sends SIGTERM during a
# streaming request and checks that the stream ends properly and the server
# exits 0 within its --shutdown-timeout. Prints the time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-gqa-server:cpu}"
# runc: crun fails on the project's machines. The limits: gqa-server starts
# one HTTP thread per --max-connections (1024 by default) up front, and
# needs a descriptor per connection, so nproc and nofile of 1024 are too low.
run_opts=(--runtime runc --ulimit nofile=8192:8192 --ulimit nproc=4096:4096)
key=smoke-test-key
shutdown_timeout=20
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }
fail() {
  echo "smoke_test.sh: FAIL: $*" >&2
  if [ -n "${name:-}" ]; then podman logs --tail 40 "$name" >&2 2>&1 || true; fi
  exit 1
}

command -v podman >/dev/null || fail "podman is not installed"
podman image exists "$image" || fail "no image $image: run deploy/build_image.sh first"
command -v curl >/dev/null || fail "curl is needed"
if command -v grpcurl >/dev/null; then grpc_check=grpcurl
elif python3 -c 'import grpc, grpc_health.v1' 2>/dev/null; then grpc_check=python
else fail "no gRPC health client: install grpcurl or 'pip install grpcio grpcio-health-checking'"; fi

work=$(mktemp -d /var/tmp/gqa-smoke.XXXXXX)
name="gqa-smoke-$$"
cleanup() { podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

step "demo model (gqa-make-model in the image)"
mkdir -p "$work/model"
podman run --rm "${run_opts[@]}" --user 0 -v "$work/model:/out" --entrypoint /usr/local/bin/gqa-make-model "$image" \
  --out /out --layers 4 --hidden 256 --heads 8 --kv-heads 2 --head-dim 32 --intermediate 688 --vocab 32000 \
  --dtype bf16 --max-position 4096 --seed 1 >/dev/null
tar -xJf tests/fixtures/tokenizers.tar.xz -C "$work" tokenizers/mistral/tokenizer.json tokenizers/mistral/tokenizer_config.json
cp "$work"/tokenizers/mistral/* "$work/model/"
chmod -R a+rX "$work/model"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port=$(free_port); grpc_port=$(free_port)
step "start $image (HTTP on 127.0.0.1:$http_port, gRPC on 127.0.0.1:$grpc_port)"
# --tp comes from the command line, the drain timeout and the key from the environment.
podman run -d --name "$name" "${run_opts[@]}" \
  -p "127.0.0.1:$http_port:8000" -p "127.0.0.1:$grpc_port:50051" \
  -v "$work/model:/models:ro" -e GQA_API_KEY="$key" -e GQA_FLAG_SHUTDOWN_TIMEOUT="$shutdown_timeout" \
  "$image" --tp 2 >/dev/null
base="http://127.0.0.1:$http_port"

step "wait for /health"
for _ in $(seq 1 120); do
  [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the server exited while starting"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health" || true)" = 200 ] && break
  sleep 1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200 ] || fail "/health not 200 after 120 s"
step "healthy"
# The entrypoint turned GQA_FLAG_* into flags, before the command line's.
cmdline=$(podman exec "$name" cat /proc/1/cmdline | tr '\0' ' ')
case "$cmdline" in
  "/usr/local/bin/gqa-server "*"--shutdown-timeout=$shutdown_timeout "*"--tp 2 ") step "command line: $cmdline" ;;
  *) fail "unexpected server command line: $cmdline" ;;
esac

code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/completions" -H 'Content-Type: application/json' \
       -d '{"prompt": "Hello", "max_tokens": 4}')
[ "$code" = 401 ] || fail "a completion without the API key got $code, expected 401"

out=$(curl -s -f "$base/v1/completions" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
      -d '{"prompt": "Hello, my name is", "max_tokens": 8, "temperature": 0, "ignore_eos": true}') \
  || fail "completion request failed"
python3 - "$out" <<'PY' || fail "unexpected completion: $out"
import json, sys
r = json.loads(sys.argv[1])
c = r["choices"][0]
assert c["finish_reason"] == "length", c
assert r["usage"]["completion_tokens"] == 8, r["usage"]
assert isinstance(c["text"], str)
PY
step "completion: 8 tokens"

metrics=$(curl -s -f "$base/metrics") || fail "/metrics failed"
grep -Eq '^gqa_requests_total [1-9]' <<<"$metrics" || fail "/metrics does not count the request"
step "/metrics counts the request"

if [ "$grpc_check" = grpcurl ]; then
  status=$(grpcurl -plaintext "127.0.0.1:$grpc_port" grpc.health.v1.Health/Check | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
else
  status=$(python3 - "$grpc_port" <<'PY'
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}") as ch:
    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
PY
  )
fi
[ "$status" = SERVING ] || fail "gRPC health: $status"
step "gRPC health ($grpc_check): SERVING"

# A streaming request in flight when SIGTERM arrives must still end with [DONE].
curl -s -N "$base/v1/completions" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true, "stream": true}' > "$work/stream.txt" &
curl_pid=$!
for _ in $(seq 1 50); do grep -q '^data: {' "$work/stream.txt" 2>/dev/null && break; sleep 0.1; done
grep -q '^data: {' "$work/stream.txt" || fail "the streaming request got no event in 5 s"
grep -q '^data: \[DONE\]' "$work/stream.txt" && fail "the stream ended before SIGTERM: nothing in flight to drain"
step "SIGTERM with a stream in flight"
term=$(date +%s)
podman kill --signal TERM "$name" >/dev/null
rc=$(timeout $(( shutdown_timeout + 15 )) podman wait "$name") || fail "no exit within $(( shutdown_timeout + 15 )) s of SIGTERM"
took=$(( $(date +%s) - term ))
wait "$curl_pid" || true
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM, expected 0"
[ "$took" -le $(( shutdown_timeout + 2 )) ] || fail "exit took $took s, above --shutdown-timeout $shutdown_timeout"
grep -q '^data: \[DONE\]' "$work/stream.txt" || fail "the stream in flight at SIGTERM did not end with [DONE]"
# Drained, not cut: the request ran to its 400 tokens (finish_reason length).
grep -q '"finish_reason": *"length"' "$work/stream.txt" || fail "the stream in flight did not finish its 400 tokens"
step "exited 0 in $took s after SIGTERM; the stream in flight finished its 400 tokens and [DONE]"
echo "smoke_test.sh: PASS ($image, $(( $(date +%s) - t0 )) s)"
