"""Converts the trained MHA model to G = 1, 2, 4 (each method) and G = 8
(mean: the identity, the control that shows what extra training alone does
to the MHA model), then uptrains each, evaluating held-out perplexity every
2.5% of the original steps: the mean runs and the G = 8 control for 10% of
the original steps (checkpoints at 5% and 10%), the first and random runs
for 5% (checkpoint at 5%) to fit the CPU budget. With the same seed and
warm-up, a 5% run is exactly the first half of a 10% run.

    python3 bench/study/run_grid.py --data DATA --orig-steps 1200 [--bin DIR]

Writes DATA/conv/gG-M (converted), DATA/up/gG-M/{log.jsonl,step-N} and
DATA/grid.json; the convert output goes to DATA/conv/gG-M.convert.txt.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

RUNS = [(g, "mean") for g in (1, 2, 4)] + [(8, "mean")] + \
       [(g, m) for m in ("first", "random") for g in (1, 2, 4)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--orig-steps", type=int, default=1200)
    ap.add_argument("--bin", default="/work/main/build/bin")
    ap.add_argument("--seed", type=int, default=0, help="seed of --method random")
    ap.add_argument("--only", default="", help="comma list of gG-M to run")
    args = ap.parse_args()
    every = round(0.025 * args.orig_steps)
    warmup = max(1, round(0.005 * args.orig_steps))
    mha = os.path.join(args.data, "mha")
    for g, m in RUNS:
        name = f"g{g}-{m}"
        if args.only and name not in args.only.split(","):
            continue
        conv = os.path.join(args.data, "conv", name)
        os.makedirs(os.path.dirname(conv), exist_ok=True)
        if not os.path.exists(os.path.join(conv, "config.json")):
            cmd = [os.path.join(args.bin, "gqa-convert"), "--in", mha, "--out", conv,
                   "--kv-heads", str(g), "--method", m, "--seed", str(args.seed)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            with open(conv + ".convert.txt", "w") as f:
                f.write("$ " + " ".join(cmd) + "\n" + r.stdout + r.stderr)
            if r.returncode:
                print(f"{name}: gqa-convert failed:\n{r.stdout}{r.stderr}", flush=True)
                continue
        frac = 0.10 if m == "mean" else 0.05
        up_steps = round(frac * args.orig_steps)
        save_at = ",".join(str(round(f * args.orig_steps)) for f in (0.05, 0.10) if f <= frac)
        out = os.path.join(args.data, "up", name)
        t0 = time.time()
        cmd = [sys.executable, os.path.join(HERE, "train.py"), "--data", args.data, "--init", conv,
               "--out", out, "--uptrain", "--steps", str(up_steps), "--eval-every", str(every),
               "--save-at", save_at, "--warmup", str(warmup), "--log-every", str(every)]
        print(f"{time.strftime('%H:%M:%S')} {name}: " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
