#!/usr/bin/env python3
"""Time to first token of any OpenAI-compatible server on shared-prefix prompts.

Closed loop: CONCURRENCY clients send streamed /v1/completions requests
back to back; every prompt is one shared prefix of --prefix-len random token
ids plus --unique-len of its own (ids in [3, --vocab-size)), greedy,
--output-len tokens, ignore_eos. TTFT is taken at the first streamed chunk
that carries text or token ids, so servers that send only text (llama.cpp's
llama-server) and servers that send ids too (gqa-server) are timed alike.
The first request of each client is warm-up. Prints one JSON line:
{"label", "ttft_ms": {"p50", "p90", "mean"}, "requests", "errors"}.

    bench/ttft_compare.py --url http://127.0.0.1:8000 --label gqa-server
"""
import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.parse


def one_request(host, port, body, timeout):
    """Sends one streamed completion; returns (ttft_s, ok)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    start = time.monotonic()
    conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        resp.read()
        conn.close()
        return None, False
    ttft = None
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            continue
        choices = chunk.get("choices") or []
        if ttft is None and choices and (choices[0].get("text") or choices[0].get("token_ids")):
            ttft = time.monotonic() - start
    conn.close()
    return ttft, ttft is not None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--label", default="server")
    ap.add_argument("--model", default=None, help="the request's model field (omitted when not given)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--requests", type=int, default=24, help="measured requests (after one warm-up per client)")
    ap.add_argument("--prefix-len", type=int, default=1024)
    ap.add_argument("--unique-len", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    rng = random.Random(a.seed)
    prefix = [rng.randrange(3, a.vocab_size) for _ in range(a.prefix_len)]
    total = a.requests + a.concurrency
    prompts = [prefix + [rng.randrange(3, a.vocab_size) for _ in range(a.unique_len)] for _ in range(total)]
    lock = threading.Lock()
    next_index = [0]
    ttfts, errors = [], [0]

    def client():
        first = True
        while True:
            with lock:
                i = next_index[0]
                if i >= total:
                    return
                next_index[0] += 1
            body = {"prompt": prompts[i], "max_tokens": a.output_len, "temperature": 0, "stream": True,
                    "ignore_eos": True}
            if a.model:
                body["model"] = a.model
            ttft, ok = one_request(u.hostname, u.port, body, a.timeout)
            with lock:
                if first:
                    first = False  # warm-up
                elif ok:
                    ttfts.append(ttft)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not ttfts:
        print(json.dumps({"label": a.label, "error": "no request succeeded", "errors": errors[0]}))
        return 1
    q = statistics.quantiles(ttfts, n=10) if len(ttfts) > 1 else [ttfts[0]] * 9
    print(json.dumps({"label": a.label, "requests": len(ttfts), "errors": errors[0],
                      "ttft_ms": {"p50": 1e3 * statistics.median(ttfts), "p90": 1e3 * q[8],
                                  "mean": 1e3 * statistics.fmean(ttfts)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
