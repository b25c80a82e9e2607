"""Checks that the engine's tokenizer (gqa-tokenize) gives the same ids as the
`tokenizers` package: on the whole test text (one string, BOS added, as
gqa-eval reads the file) and on each test verse alone.

    python3 bench/study/check_tokenizer.py --data DATA --bin DIR_WITH_GQA_TOOLS
"""
import argparse
import json
import os
import subprocess
import tempfile

from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--bin", default="/work/main/build/bin")
    args = ap.parse_args()
    tdir = os.path.join(args.data, "tokenizer")
    tok = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
    with open(os.path.join(args.data, "test.txt")) as f:
        text = f.read()
    texts = [text] + text.splitlines()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
        path = f.name
    out = subprocess.run([os.path.join(args.bin, "gqa-tokenize"), "--tokenizer", tdir,
                          "--input-jsonl", path, "--add-special-tokens"],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    os.unlink(path)
    assert len(out) == len(texts), (len(out), len(texts))
    mism = 0
    for t, line in zip(texts, out):
        ref = tok.encode(t, add_special_tokens=True).ids
        got = json.loads(line)["ids"]
        if ref != got:
            mism += 1
            if mism <= 3:
                print("MISMATCH", repr(t[:60]), ref[:20], got[:20])
    res = {"strings": len(texts), "mismatches": mism,
           "whole_test_text_tokens": len(tok.encode(text).ids)}
    print(json.dumps(res))
    return 1 if mism else 0


if __name__ == "__main__":
    raise SystemExit(main())
