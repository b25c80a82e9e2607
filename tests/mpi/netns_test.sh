#!/usr/bin/env bash
# Two hosts on one machine: ranks in two network namespaces joined by a veth
# pair, mpirun over TCP between them (shared memory excluded), so that every
# collective crosses an interface. The greedy tokens must equal the threaded
# executor's at the same TP, and the veth must have carried the traffic.
# usage: netns_test.sh BIN_DIR FIXTURES_DIR. Exits 77 (skipped) where network
# namespaces cannot be made (no CAP_NET_ADMIN) or mpirun is missing.
set -euo pipefail
bin=$(realpath "$1")
fixtures=$(realpath "$2")
here=$(dirname "$(realpath "$0")")
command -v mpirun >/dev/null || { echo "skipped: mpirun not found (Debian: openmpi-bin)"; exit 77; }
command -v ip >/dev/null || { echo "skipped: ip not found (Debian: iproute2)"; exit 77; }
a=gqa-tp-a-$$
b=gqa-tp-b-$$
net=10.231.$(( $$ % 250 ))
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; }
trap cleanup EXIT
if ! ip netns add "$a" 2>/dev/null; then
  echo "skipped: cannot create network namespaces here (needs CAP_NET_ADMIN)"
  exit 77
fi
ip netns add "$b"
ip link add "va$$" type veth peer name "vb$$"
ip link set "va$$" netns "$a"
ip link set "vb$$" netns "$b"
ip -n "$a" addr add "$net.1/24" dev "va$$"
ip -n "$b" addr add "$net.2/24" dev "vb$$"
for n in "$a" "$b"; do ip -n "$n" link set lo up; done
ip -n "$a" link set "va$$" up
ip -n "$b" link set "vb$$" up

root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
failures=0
for case in llama_gqa qwen2_bias mistral_sliding; do
  model=$fixtures/golden/$case
  prompts=$(mktemp)
  python3 - "$model/expected.json" > "$prompts" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1]))["prompts"]:
    print(json.dumps({"prompt_ids": p, "max_new_tokens": 12, "ignore_eos": True}))
PY
  want=$("$bin/gqa-generate" --model "$model" --tp 2 --prompts-file "$prompts" --output text 2>/dev/null)
  tx0=$(ip netns exec "$a" cat "/sys/class/net/va$$/statistics/tx_bytes")
  got=$(timeout 120 ip netns exec "$a" mpirun "${root[@]}" -np 2 --host "$net.1:1,$net.2:1" \
          --mca plm_rsh_agent "$here/netns_rsh.sh" --mca btl tcp,self \
          --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
          "$bin/gqa-generate" --model "$model" --prompts-file "$prompts" --output text 2>/tmp/netns_$$.log) || true
  tx1=$(ip netns exec "$a" cat "/sys/class/net/va$$/statistics/tx_bytes")
  rm -f "$prompts"
  if [ -n "$want" ] && [ "$got" = "$want" ] && [ $((tx1 - tx0)) -gt 10000 ]; then
    echo "ok   $case: two namespaces over TCP give the threaded --tp 2 tokens ($((tx1 - tx0)) bytes sent over the veth)"
  else
    echo "FAIL $case: want [$want] got [$got], $((tx1 - tx0)) bytes over the veth"
    tail -20 /tmp/netns_$$.log
    failures=$((failures + 1))
  fi
  rm -f /tmp/netns_$$.log
done
exit $((failures > 0))
