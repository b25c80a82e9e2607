"""Held-out perplexity of the trained MHA model (PyTorch), and the unigram
baseline from corpus.json, into DATA/mha_eval.json.

    python3 bench/study/eval_mha.py --data DATA
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_ids, perplexity  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = LlamaForCausalLM.from_pretrained(os.path.join(args.data, "mha"), torch_dtype=torch.float32)
    r = perplexity(model, load_ids(args.data, "test.ids"))
    r["parameters"] = sum(p.numel() for p in model.parameters())
    logs = [json.loads(x) for x in open(os.path.join(args.data, "mha", "log.jsonl"))]
    done = [x for x in logs if x.get("done")][-1]
    r["train_steps"] = done["steps"]
    r["train_s"] = done["train_s"]
    r["train_tokens_seen"] = done["steps"] * 16 * 128
    with open(os.path.join(args.data, "mha_eval.json"), "w") as f:
        json.dump(r, f, indent=1)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
