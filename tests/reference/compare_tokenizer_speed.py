#!/usr/bin/env python3
"""Runs gqa-tokenizer-bench and bench_hf_tokenizers.py alternately, ROUNDS times
per tokenizer, on the same corpus, and prints the median times and ratios.

    python3 tests/reference/compare_tokenizer_speed.py \
        --bin build/bin/gqa-tokenizer-bench --tokenizers build/fixtures/tokenizers \
        --corpus tests/fixtures/tokenizer/corpus.jsonl
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin/gqa-tokenizer-bench")
    ap.add_argument("--tokenizers", default="build/fixtures/tokenizers")
    ap.add_argument("--corpus", default="tests/fixtures/tokenizer/corpus.jsonl")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--join-bytes", type=int, default=0,
                    help="if > 0, first join the corpus texts (with newlines) into documents of about this "
                         "many bytes, written to a temporary JSONL that both sides read")
    a = ap.parse_args()
    if a.join_bytes > 0:
        import tempfile
        texts = [json.loads(l)["text"] for l in open(a.corpus, encoding="utf-8") if l.strip()]
        docs, cur = [], []
        for t in texts:
            cur.append(t)
            if sum(len(x.encode()) for x in cur) >= a.join_bytes:
                docs.append("\n".join(cur))
                cur = []
        if cur:
            docs.append("\n".join(cur))
        tmp = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8")
        for d in docs:
            tmp.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
        tmp.close()
        a.corpus = tmp.name
    env = dict(os.environ, RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    print("| tokenizer | gqa cold ms | gqa warm ms | HF encode cold ms | HF encode warm ms | HF batch(1 thread) warm ms | warm speed-up vs HF encode | vs HF batch |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ["llama3", "qwen3", "mistral"]:
        d = os.path.join(a.tokenizers, name)
        ours, hf, hfb = [], [], []
        for _ in range(a.rounds):
            ours.append(run([a.bin, "--tokenizer", d, "--corpus", a.corpus, "--repeat", str(a.repeat)]))
            hf.append(run([sys.executable, os.path.join(HERE, "bench_hf_tokenizers.py"), "--tokenizer", d,
                           "--corpus", a.corpus, "--repeat", str(a.repeat)], env))
            hfb.append(run([sys.executable, os.path.join(HERE, "bench_hf_tokenizers.py"), "--tokenizer", d,
                            "--corpus", a.corpus, "--repeat", str(a.repeat), "--batch"], env))
        assert all(r["tokens"] == ours[0]["tokens"] for r in ours + hf + hfb), "token counts differ"
        med = lambda rs, k: statistics.median(r[k] for r in rs) * 1e3
        print(f"| {name} | {med(ours, 'cold_s'):.2f} | {med(ours, 'warm_best_s'):.2f} | {med(hf, 'cold_s'):.2f} | "
              f"{med(hf, 'warm_best_s'):.2f} | {med(hfb, 'warm_best_s'):.2f} | "
              f"{med(hf, 'warm_best_s') / med(ours, 'warm_best_s'):.1f}x | "
              f"{med(hfb, 'warm_best_s') / med(ours, 'warm_best_s'):.1f}x |")
    print(f"\ncorpus: {a.corpus} (join_bytes={a.join_bytes}) ({ours[0]['texts']} texts, {ours[0]['bytes']} bytes); "
          f"medians of {a.rounds} alternating rounds; warm = best of {a.repeat} passes")


if __name__ == "__main__":
    main()
