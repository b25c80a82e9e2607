#!/usr/bin/env bash
# Soak test: MINUTES (default 10) of mixed load against one gqa-server
# (bench/soak.py: HTTP and gRPC, streamed and not, cancels, disconnects,
# deadlines, bad inputs, overload, slow clients), then checks that it is back
# at rest: 0 running, 0 waiting, every KV block free, RSS within 10% of where
# it settled after warm-up, no unexpected status code. Prints a summary;
# exits 1 when a check fails.
#
#   bench/soak.sh [--minutes N] [--clients N] [--summary FILE] [--model DIR] [-- gqa-server flags...]
#
# Without --model it serves a small random-weight model with the Mistral
# tokenizer (made in a temporary directory). Needs a build (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=10
clients=12
summary=""
model=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --summary) summary="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: bench/soak.sh [--minutes N] [--clients N] [--summary FILE] [--model DIR] [-- server flags]" >&2; exit 2 ;;
  esac
done
bin=build/bin
for p in gqa-server gqa-client gqa-make-model; do
  [ -x "$bin/$p" ] || { echo "soak: $bin/$p is missing: run scripts/build.sh" >&2; exit 2; }
done
work=$(mktemp -d /tmp/gqa_soak.XXXXXX)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

if [ -z "$model" ]; then
  model="$work/soak-model"
  "$bin/gqa-make-model" --out "$model" --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
    --vocab 32000 --dtype bf16 --max-position 1024 --seed 7 >/dev/null
  cp build/fixtures/tokenizers/mistral/tokenizer.json "$model/"
  python3 - "$model" <<'PY'
import json, sys
cfg = json.load(open("build/fixtures/tokenizers/mistral/tokenizer_config.json"))
cfg["chat_template"] = open("tests/fixtures/tokenizer/templates/mistral_system.jinja").read()
json.dump(cfg, open(sys.argv[1] + "/tokenizer_config.json", "w"))
PY
fi

# A small waiting room so that bursts meet 429; a short header timeout so
# that slow clients meet 408 within the run.
args=(--model "$model" --tp 2 --http-port 0 --grpc-port 0 --num-kv-blocks 2048 --block-size 8 --max-num-seqs 32
      --max-queued-requests 32 --http-header-timeout 2 --max-connections 256 --shutdown-timeout 30)
"$bin/gqa-server" "${args[@]}" "${extra[@]}" >"$work/server.log" 2>&1 &
server_pid=$!
http_port=""
for _ in $(seq 600); do
  if grep -q "gqa: serving" "$work/server.log"; then
    line=$(grep "gqa: serving" "$work/server.log")
    http_port=$(sed -E 's/.*HTTP on [^:]+:([0-9]+),.*/\1/' <<<"$line")
    grpc_port=$(sed -E 's/.*gRPC on [^:]+:([0-9]+).*/\1/' <<<"$line")
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$http_port" ]; then
  echo "soak: gqa-server did not come up:" >&2
  cat "$work/server.log" >&2
  exit 1
fi

others() { pgrep -c -f 'cc1plus|clang\+\+|nvcc|ptxas|ninja' 2>/dev/null || echo 0; }
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
others_before=$(others)
describe="$(nproc) CPUs; load average $load_before and $others_before compiler/build processes at the start"
rc=0
python3 bench/soak.py --http-port "$http_port" --grpc-port "$grpc_port" --pid "$server_pid" --client "$bin/gqa-client" \
  --minutes "$minutes" --clients "$clients" --describe "$describe" ${summary:+--summary "$summary"} || rc=$?

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
note="Machine at the end: load average $load_after, $(others) compiler/build processes running."
echo "$note"
[ -n "$summary" ] && printf '\n%s\n' "$note" >>"$summary"

# The server stops cleanly after all that.
kill -TERM "$server_pid"
if wait "$server_pid"; then
  echo "soak: gqa-server drained and exited 0"
  [ -n "$summary" ] && echo "gqa-server drained and exited 0 on SIGTERM afterwards." >>"$summary"
else
  code=$?
  echo "soak: gqa-server exited $code on SIGTERM" >&2
  [ -n "$summary" ] && echo "gqa-server exited $code on SIGTERM afterwards (FAIL)." >>"$summary"
  rc=1
fi
server_pid=""
echo "soak: server log in $work/server.log"
exit "$rc"
