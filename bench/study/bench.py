"""Inference side of the study: KV-cache bytes per token (gqa-plan) and decode
throughput through the engine (gqa-bench --mode decode --model DIR) of the
uptrained G = 1, 2, 4, 8 checkpoints at batch 1, 16 and 64. The points are
run REPEATS times, interleaved across G (rep -> batch -> G), and the median
and best of the per-run medians are reported.

    python3 bench/study/bench.py --data DATA [--bin DIR] [--repeats 3] [--threads 1]

Each run prefills --context 95 tokens per sequence and times 8 x 4 decode
steps (gqa-bench needs context + 8 * 4 + 1 <= max_position_embeddings = 128). Writes DATA/bench.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

GS = (1, 2, 4, 8)
BATCHES = (1, 16, 64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--bin", default="/work/main/build/bin")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--context", type=int, default=95)
    args = ap.parse_args()
    models = {g: os.path.join(args.data, "up", f"g{g}-mean", "step-120") for g in GS}
    out = {"machine": subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                                     text=True).stdout.split(":", 1)[-1].strip(),
           "threads": args.threads, "context": args.context, "plan": {}, "runs": []}
    for g, m in models.items():
        r = subprocess.run([os.path.join(args.bin, "gqa-plan"), "--model", m, "--output", "json"],
                           capture_output=True, text=True)
        out["plan"][g] = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr}
    for rep in range(args.repeats):
        for b in BATCHES:
            for g in GS:
                load = os.getloadavg()[0]
                r = subprocess.run([os.path.join(args.bin, "gqa-bench"), "--mode", "decode",
                                    "--model", models[g], "--batch", str(b), "--threads",
                                    str(args.threads), "--context", str(args.context),
                                    "--kv-cache-dtype", "f32"], capture_output=True, text=True)
                if r.returncode:
                    print(f"G={g} B={b}: gqa-bench failed: {r.stderr[-300:]}", flush=True)
                    continue
                j = json.loads(r.stdout)
                rec = {"rep": rep, "G": g, "batch": b, "load1": load, "time": time.strftime("%H:%M:%S"),
                       "tokens_per_s_median": j["decode_tokens_per_s"]["median"],
                       "tokens_per_s_best": j["decode_tokens_per_s"]["best"],
                       "step_ms_median": j["decode_step_ms"]["median"], "backend": j["backend"],
                       "weight_bytes_per_step": j["weight_bytes_per_step"], "raw": j}
                out["runs"].append(rec)
                print(f"rep {rep} B={b} G={g}: {rec['tokens_per_s_median']:.0f} tok/s "
                      f"(best {rec['tokens_per_s_best']:.0f}), load {load:.2f}", flush=True)
    summary = {}
    for g in GS:
        for b in BATCHES:
            v = [r["tokens_per_s_median"] for r in out["runs"] if r["G"] == g and r["batch"] == b]
            bb = [r["tokens_per_s_best"] for r in out["runs"] if r["G"] == g and r["batch"] == b]
            if v:
                summary[f"G{g}_B{b}"] = {"G": g, "batch": b, "median_tokens_per_s": statistics.median(v),
                                         "best_tokens_per_s": max(bb), "runs": len(v)}
    out["summary"] = summary
    with open(os.path.join(args.data, "bench.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
