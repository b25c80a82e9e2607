"""By-hand check that checkpoints written by gqa-convert load in Hugging Face
transformers and run the same there as in the engine. From the repository
root, after building:

    pip install torch transformers safetensors
    python3 tests/reference/check_convert.py build/bin > tests/fixtures/convert/transcript.txt

Converts golden fixtures to fewer key/value heads with each method, then for
each result compares transformers' greedy tokens with gqa-generate's and
transformers' perplexity (tests/reference/eval_perplexity.py's loop) with
gqa-eval's on tests/fixtures/perplexity/ids.txt.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_perplexity import perplexity  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
CONVERSIONS = [("llama_mha", g, m) for g in (8, 4, 2, 1) for m in ("mean", "first", "random")] + [
    ("qwen2_bias", 1, "mean"), ("llama_bf16", 1, "mean"), ("llama_sharded", 1, "mean")]


TMP = [""]  # the temporary directory, shown as $TMP


def show(text):
    return text.replace(TMP[0], "$TMP").replace(os.path.abspath(os.path.join(ROOT, "..", "..")) + "/", "")


def run(cmd):
    print(show("$ " + " ".join(os.path.abspath(c) if os.path.exists(c) else c for c in cmd)))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(show(out), end="")
    return out


def main():
    bindir = sys.argv[1]
    torch.set_num_threads(1)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    with open(os.path.join(ROOT, "perplexity", "ids.txt")) as f:
        ids = [int(v) for v in f.read().split()]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        TMP[0] = tmp
        for case, g, method in CONVERSIONS:
            src = os.path.join(ROOT, "golden", case)
            dst = os.path.join(tmp, f"{case}_{g}_{method}")
            print()
            run([os.path.join(bindir, "gqa-convert"), "--in", src, "--out", dst, "--kv-heads", str(g),
                 "--method", method, "--seed", "3"])
            model = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32)
            model.eval()
            assert model.config.num_key_value_heads == g
            prompt = json.load(open(os.path.join(src, "expected.json")))["prompts"][0]
            with torch.no_grad():
                seq = list(prompt)
                for _ in range(8):
                    seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
            hf_tokens = seq[len(prompt):]
            gen = json.loads(run([os.path.join(bindir, "gqa-generate"), "--model", dst, "--prompt-ids",
                                  ",".join(map(str, prompt)), "--max-new-tokens", "8", "--temperature", "0",
                                  "--ignore-eos", "--output", "json"]))
            hf_nll, _, _ = perplexity(model, ids, 64, 32)
            ev = json.loads(run([os.path.join(bindir, "gqa-eval"), "--model", dst, "--token-ids",
                                 os.path.join(ROOT, "perplexity", "ids.txt"), "--context", "64", "--stride", "32"]))
            rel = abs(ev["perplexity"] - np.exp(hf_nll)) / np.exp(hf_nll)
            same = gen["token_ids"] == hf_tokens
            ok = ok and same and rel < 1e-4
            print(f"transformers loads it: num_key_value_heads {g}; greedy tokens {hf_tokens} "
                  f"({'same' if same else 'DIFFERENT'} in gqa-generate); perplexity {np.exp(hf_nll):.6f} "
                  f"(gqa-eval {ev['perplexity']:.6f}, relative difference {rel:.1e})")
    print("\nall match" if ok else "\nMISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
