#!/usr/bin/env python3
"""Prints the markdown tables of docs/tensor-parallel.md from gqa-plan's JSON.

Usage: python3 bench/plan_table.py [build/bin/gqa-plan]
"""
import json
import subprocess
import sys

PLAN = sys.argv[1] if len(sys.argv) > 1 else "build/bin/gqa-plan"
MODELS = [("Llama-3-8B", "tests/fixtures/configs/llama3_8b.json"),
          ("Llama-3-70B", "tests/fixtures/configs/llama3_70b.json"),
          ("Qwen2-7B", "tests/fixtures/configs/qwen2_7b.json")]
MEM, LEN = 85899345920, 8192  # 80 GiB devices, 8192-token sequences

for name, cfg in MODELS:
    print(f"### {name}\n")
    print("| TP | query heads / rank | KV heads / rank | kv_replication_factor | weights / rank (GiB, max) "
          "| KV bytes / token / rank (max) | sequences of 8192 that fit: as configured / MHA / MQA |")
    print("|---|---|---|---|---|---|---|")
    for tp in range(1, 9):
        out = subprocess.run([PLAN, "--config", cfg, "--tp", str(tp), "--device-memory", str(MEM),
                              "--max-model-len", str(LEN), "--output", "json"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {tp} | refused: {out.stderr.strip()} | | | | | |")
            continue
        j = json.loads(out.stdout)
        ranks = j["ranks"]
        q = sorted({r["q_heads"][1] - r["q_heads"][0] for r in ranks})
        kv = sorted({r["kv_heads"][1] - r["kv_heads"][0] for r in ranks})
        w = max(r["weight_bytes"] for r in ranks) / 2**30
        kvb = max(r["kv_bytes_per_token"] for r in ranks)
        cap = j["capacity"]
        seqs = " / ".join(str(cap[v]["max_sequences"]) for v in ("as_configured", "mha", "mqa"))
        print(f"| {tp} | {'/'.join(map(str, q))} | {'/'.join(map(str, kv))} | {j['kv_replication_factor']:g} "
              f"| {w:.2f} | {kvb} | {seqs} |")
    print()
