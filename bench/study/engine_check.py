"""Perplexity of the study's checkpoints through the engine (gqa-eval), next to
PyTorch's, on the held-out text: the MHA model, every converted checkpoint
(before uptraining) and every uptrained one at 5% and 10%.

    python3 bench/study/engine_check.py --data DATA [--bin DIR] [--threads 1]

gqa-eval runs with --context 128 --stride 128 (disjoint windows, BOS added by
the tokenizer) so that it scores exactly the tokens PyTorch scores
(common.perplexity). Writes DATA/engine_check.json.
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_ids, perplexity  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--bin", default="/work/main/build/bin")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = args.data
    dirs = [os.path.join(d, "mha")] + sorted(glob.glob(os.path.join(d, "conv", "g*"))) + \
        sorted(glob.glob(os.path.join(d, "up", "g*", "step-*")))
    dirs = [x for x in dirs if os.path.isdir(x)]
    test_ids = load_ids(d, "test.ids")
    out_path = args.out or os.path.join(d, "engine_check.json")
    results = {}
    if os.path.exists(out_path):
        results = json.load(open(out_path))
    for m in dirs:
        key = os.path.relpath(m, d)
        if key in results:
            continue
        r = subprocess.run([os.path.join(args.bin, "gqa-eval"), "--model", m, "--perplexity",
                            os.path.join(d, "test.txt"), "--context", "128", "--stride", "128",
                            "--threads", str(args.threads)], capture_output=True, text=True)
        if r.returncode:
            print(f"{key}: gqa-eval failed: {r.stderr[-500:]}", flush=True)
            continue
        eng = json.loads(r.stdout.strip().splitlines()[-1])
        model = LlamaForCausalLM.from_pretrained(m, torch_dtype=torch.float32)
        pt = perplexity(model, test_ids)
        rel = abs(eng["perplexity"] - pt["perplexity"]) / pt["perplexity"]
        results[key] = {"engine": eng, "torch": pt, "rel_diff": rel}
        print(f"{key}: engine {eng['perplexity']:.4f} ({eng['tokens']} tokens) torch "
              f"{pt['perplexity']:.4f} ({pt['tokens']} tokens) rel diff {rel:.2e}", flush=True)
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
