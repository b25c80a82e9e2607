"""Sliding-window perplexity with Hugging Face transformers, the reference for
gqa-eval (tests/eval_test.cc). Run by hand from the repository root:

    pip install torch transformers safetensors
    python3 tests/reference/eval_perplexity.py

Writes tests/fixtures/perplexity/ids.txt (seeded token ids) and expected.json.
The loop is the one of transformers' perplexity guide (windows of `context`
tokens every `stride`, labels before the previous window's end masked), with
each scored token's log-probability summed in float64 so that the mean is
over exactly the tokens scored.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
MODEL = "golden/llama_gqa"
CASES = [(256, 128), (256, 256), (64, 32), (48, 16)]
N_TOKENS = 400


def perplexity(model, ids, context, stride):
    n = len(ids)
    nll, count, windows, prev_end = 0.0, 0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        x = torch.tensor([ids[begin:end]])
        with torch.no_grad():
            logits = model(x).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for t in range(max(prev_end, begin + 1), end):
            nll -= logp[t - 1 - begin, ids[t]].item()
            count += 1
        windows += 1
        prev_end = end
        if end == n:
            break
    return nll / count, count, windows


def main():
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, MODEL), torch_dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    rng = np.random.default_rng(15)
    ids = [int(v) for v in rng.integers(3, vocab, size=N_TOKENS)]
    out_dir = os.path.join(ROOT, "perplexity")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "ids.txt"), "w") as f:
        f.write(" ".join(str(v) for v in ids) + "\n")
    cases = []
    for context, stride in CASES:
        mean_nll, count, windows = perplexity(model, ids, context, stride)
        cases.append({"context": context, "stride": stride, "mean_nll": mean_nll,
                      "perplexity": float(np.exp(mean_nll)), "tokens": count, "windows": windows})
        print(f"context {context} stride {stride}: {count} tokens in {windows} windows, "
              f"mean nll {mean_nll:.10f}, perplexity {np.exp(mean_nll):.10f}")
    expected = {"model": MODEL, "ids": "perplexity/ids.txt", "cases": cases,
                "made_with": f"transformers {transformers.__version__}, torch {torch.__version__}, "
                             f"python {sys.version.split()[0]}"}
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
