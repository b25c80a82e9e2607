#!/usr/bin/env python3
"""Single-threaded Hugging Face tokenizers encode speed on a JSONL corpus,
for comparison with build/bin/gqa-tokenizer-bench (same corpus, same file).

    RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
      python3 tests/reference/bench_hf_tokenizers.py --tokenizer DIR --corpus F
Encodes one text at a time with Tokenizer.encode (or, with --batch, one
encode_batch call on one Rayon thread); reports the first pass and the best of --repeat later passes.
"""
import argparse
import json
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", action="store_true",
                    help="one encode_batch call per pass (RAYON_NUM_THREADS=1 keeps it on one thread); "
                         "removes the per-call Python overhead")
    a = ap.parse_args()
    tok = Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
    texts = [json.loads(l)["text"] for l in open(a.corpus, encoding="utf-8") if l.strip()]
    nbytes = sum(len(t.encode()) for t in texts)

    def run():
        t0 = time.perf_counter()
        n = 0
        if a.batch:
            n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
        else:
            for t in texts:
                n += len(tok.encode(t, add_special_tokens=False).ids)
        return time.perf_counter() - t0, n

    cold, ntok = run()
    best = min(run()[0] for _ in range(a.repeat))
    print(json.dumps({"tokenizer": a.tokenizer, "texts": len(texts), "bytes": nbytes, "tokens": ntok, "mode": "encode_batch" if a.batch else "encode",
                      "cold_s": cold, "warm_best_s": best, "warm_MB_per_s": nbytes / best / 1e6}))


if __name__ == "__main__":
    main()
