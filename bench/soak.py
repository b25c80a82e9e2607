#!/usr/bin/env python3
"""The load behind bench/soak.sh: mixed traffic against one running
gqa-server for a number of minutes, then the checks that it came back to
rest. Standard library only; gRPC goes through build/bin/gqa-client.

Traffic (picked at random by each of --clients threads): completions and chat
completions, streamed and not; gRPC Generate and GenerateStream; streams
cancelled after a few chunks; non-streaming requests whose client goes away;
gRPC deadlines that pass; bad inputs (malformed and deep JSON, wrong types,
bad token ids, unknown model, oversized max_tokens); bursts beyond the
waiting room (429); slow clients whose headers never finish (408).

After it: 0 running, 0 waiting, all KV blocks free (from /metrics), RSS within
--rss-tolerance of where it settled after warm-up, no unexpected status code.
Prints a summary (also to --summary as Markdown); exits 1 when a check fails.
"""
import argparse
import collections
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

PROMPTS = ["The capital of France is", "Once upon a time", "def fib(n):", "Lorem ipsum dolor sit amet",
           "A grouped-query attention layer", "\u00e9t\u00e9 \u4e16\u754c \U0001f600"]


class Soak:
    def __init__(self, args):
        self.a = args
        self.lock = threading.Lock()
        self.counts = collections.Counter()      # (scenario, outcome) -> n
        self.unexpected = collections.Counter()  # (scenario, outcome) -> n
        self.examples = {}                       # first body of each unexpected outcome
        self.stop_at = 0.0
        self.burst_lock = threading.Lock()

    # ---- bookkeeping
    def record(self, scenario, outcome, expected, detail=""):
        with self.lock:
            self.counts[(scenario, outcome)] += 1
            if outcome not in expected:
                self.unexpected[(scenario, outcome)] += 1
                self.examples.setdefault((scenario, outcome), detail[:300])

    # ---- HTTP helpers
    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.a.http_port, timeout=timeout)

    def post(self, path, body, timeout=60):
        c = self.conn(timeout)
        try:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            c.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            c.close()

    def metrics(self):
        c = self.conn(10)
        try:
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
        finally:
            c.close()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def rss_kb(self):
        with open(f"/proc/{self.a.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def threads(self):
        with open(f"/proc/{self.a.pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        return 0

    # ---- scenarios: each returns after one request
    def unary(self, chat):
        n = random.randint(1, 48)
        if chat:
            body = {"messages": [{"role": "user", "content": random.choice(PROMPTS)}], "max_tokens": n,
                    "temperature": random.choice([0, 0.7, 1.0]), "ignore_eos": True}
            path = "/v1/chat/completions"
        else:
            body = {"prompt": random.choice(PROMPTS), "max_tokens": n, "temperature": random.choice([0, 0.8]),
                    "ignore_eos": True, "logprobs": random.choice([0, 2])}
            path = "/v1/completions"
        status, text = self.post(path, body)
        name = "chat" if chat else "completion"
        if status == 200:
            usage = json.loads(text)["usage"]
            ok = usage["completion_tokens"] == n
            self.record(name, "200" if ok else "200-wrong-length", {"200", "429"}, text)
        else:
            self.record(name, str(status), {"429"}, text)

    def stream(self, chat, cancel_after=None):
        n = random.randint(8, 96)
        if chat:
            body = {"messages": [{"role": "user", "content": random.choice(PROMPTS)}], "max_tokens": n,
                    "stream": True, "ignore_eos": True}
            path = "/v1/chat/completions"
        else:
            body = {"prompt": random.choice(PROMPTS), "max_tokens": n, "stream": True, "ignore_eos": True,
                    "stream_options": {"include_usage": True}}
            path = "/v1/completions"
        name = ("chat-stream" if chat else "stream") + ("-cancel" if cancel_after else "")
        c = self.conn(60)
        try:
            c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                self.record(name, str(r.status), {"429"}, r.read().decode("utf-8", "replace"))
                return
            events = 0
            done = False
            while True:
                line = r.fp.readline()
                if not line:
                    break
                if line.startswith(b"data: "):
                    events += 1
                    if line.strip() == b"data: [DONE]":
                        done = True
                        break
                    if cancel_after and events >= cancel_after:
                        break  # the client goes away mid-stream
            if cancel_after:
                self.record(name, "cancelled" if not done else "finished-early", {"cancelled", "finished-early"})
            else:
                self.record(name, "200" if done else "200-no-done", {"200"})
        finally:
            c.close()

    def disconnect_unary(self):
        # A non-streaming request whose client closes before the answer.
        s = socket.create_connection(("127.0.0.1", self.a.http_port), timeout=10)
        body = json.dumps({"prompt": [1, random.randint(2, 30000)], "max_tokens": 200, "ignore_eos": True})
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        time.sleep(random.uniform(0.01, 0.3))
        s.close()
        self.record("disconnect", "closed", {"closed"})

    def grpc(self, stream, deadline=None):
        n = random.randint(1, 48) if deadline is None else 400
        cmd = [self.a.client, "--server", f"127.0.0.1:{self.a.grpc_port}", "--prompt", random.choice(PROMPTS),
               "--max-tokens", str(n), "--timeout", str(deadline or 60)]
        if stream:
            cmd.append("--stream")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        name = ("grpc-stream" if stream else "grpc") + ("-deadline" if deadline else "")
        if p.returncode == 0:
            outcome = "OK"
        else:
            code = p.stderr.rsplit("(code ", 1)[-1].split(")")[0] if "(code " in p.stderr else f"exit{p.returncode}"
            outcome = {"4": "DEADLINE_EXCEEDED", "8": "RESOURCE_EXHAUSTED", "3": "INVALID_ARGUMENT"}.get(code, code)
        expected = {"OK", "RESOURCE_EXHAUSTED"} if deadline is None else {"DEADLINE_EXCEEDED", "OK", "RESOURCE_EXHAUSTED"}
        self.record(name, outcome, expected, p.stderr)

    def bad_input(self):
        cases = [
            ("/v1/completions", b"{not json", {"400"}),
            ("/v1/completions", json.dumps({"prompt": "x", "max_tokens": "many"}), {"400"}),
            ("/v1/completions", json.dumps({"prompt": [1, -5], "max_tokens": 4}), {"400"}),
            # Checked after admission: under overload these meet 429 first.
            ("/v1/completions", json.dumps({"prompt": [1, 10**9], "max_tokens": 4}), {"400", "429"}),
            ("/v1/completions", json.dumps({"prompt": "x", "max_tokens": 10**7}), {"400"}),
            ("/v1/completions", json.dumps({"prompt": "x", "model": "no-such-model"}), {"404"}),
            ("/v1/chat/completions", json.dumps({"messages": []}), {"400"}),
            ("/v1/chat/completions", json.dumps({"messages": [{"content": "no role"}]}), {"400"}),
            ("/v1/chat/completions", '{"messages": [{"role": "user", "content": ' + "[" * 5000 + "]" * 5000 + "}]}",
             {"400"}),
            ("/tokenize", json.dumps({"prompt": 5}), {"400"}),
            ("/detokenize", json.dumps({"tokens": ["a"]}), {"400"}),
            ("/v1/completions", json.dumps({"prompt": "x", "temperature": -1}), {"400", "429"}),
        ]
        path, body, expected = random.choice(cases)
        status, text = self.post(path, body)
        self.record("bad-input", str(status), expected, text)

    def slow_headers(self):
        # A client whose headers never finish: 408 after --http-header-timeout.
        s = socket.create_connection(("127.0.0.1", self.a.http_port), timeout=30)
        try:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: soak\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            status = data.split(b" ")[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
            self.record("slow-headers", status, {"408"}, data.decode("utf-8", "replace"))
        except socket.timeout:
            self.record("slow-headers", "no-answer", {"408"})
        finally:
            s.close()

    def burst(self):
        # More requests at once than slots plus waiting room: some get 429,
        # none another error.
        if not self.burst_lock.acquire(blocking=False):
            return
        try:
            results = collections.Counter()

            def one():
                try:
                    status, _ = self.post("/v1/completions", {"prompt": [1, 7], "max_tokens": 64, "ignore_eos": True})
                except Exception as e:  # noqa: BLE001
                    status = type(e).__name__
                results[str(status)] += 1
            ts = [threading.Thread(target=one) for _ in range(self.a.burst)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for status, n in results.items():
                for _ in range(n):
                    self.record("burst", status, {"200", "429"})
        finally:
            self.burst_lock.release()

    def client_loop(self, seed):
        random.seed(seed)
        choices = [(self.unary, (False,), 14), (self.unary, (True,), 10), (self.stream, (False,), 12),
                   (self.stream, (True,), 8), (self.stream, (False, 2), 6), (self.stream, (True, 3), 4),
                   (self.disconnect_unary, (), 6), (self.grpc, (False,), 8), (self.grpc, (True,), 6),
                   (self.grpc, (False, 0.05), 3), (self.grpc, (True, 0.05), 3), (self.bad_input, (), 12),
                   (self.slow_headers, (), 1), (self.burst, (), 1)]
        weights = [w for _, _, w in choices]
        while time.time() < self.stop_at:
            fn, args, _ = random.choices(choices, weights)[0]
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - any client-side failure is an outcome to report
                self.record(fn.__name__, "exception:" + type(e).__name__, set(), str(e))

    def run(self):
        start = time.time()
        duration = self.a.minutes * 60
        warmup = min(max(duration * 0.2, 30), 120)
        self.stop_at = start + duration
        seed = self.a.seed if self.a.seed is not None else random.randrange(1 << 30)
        print(f"soak: {self.a.minutes} min, {self.a.clients} clients, seed {seed}, warm-up {warmup:.0f} s", flush=True)
        rss_start = self.rss_kb()
        threads_start = self.threads()
        workers = [threading.Thread(target=self.client_loop, args=(seed + i,), daemon=True)
                   for i in range(self.a.clients)]
        for t in workers:
            t.start()
        samples = []
        rss_settled = None
        while time.time() < self.stop_at:
            time.sleep(min(10, max(0.1, self.stop_at - time.time())))
            rss = self.rss_kb()
            samples.append((time.time() - start, rss, self.threads()))
            if rss_settled is None and time.time() - start >= warmup:
                rss_settled = rss
            done = sum(self.counts.values())
            print(f"  t={time.time() - start:5.0f}s requests={done} rss={rss / 1024:.0f} MiB "
                  f"threads={samples[-1][2]} unexpected={sum(self.unexpected.values())}", flush=True)
        for t in workers:
            t.join(timeout=180)
        stragglers = sum(1 for t in workers if t.is_alive())
        # Back to rest: nothing running or waiting, every block free.
        rest = None
        for _ in range(300):
            m = self.metrics()
            rest = (m.get("gqa_num_requests_running"), m.get("gqa_num_requests_waiting"),
                    m.get("gqa_kv_cache_usage_ratio"))
            if rest == (0, 0, 0):
                break
            time.sleep(0.1)
        time.sleep(2)
        rss_end = self.rss_kb()
        threads_end = self.threads()
        if rss_settled is None:
            rss_settled = rss_end
        rss_max = max([s[1] for s in samples] + [rss_end])
        drift = (rss_end - rss_settled) / rss_settled
        checks = [
            ("0 running, 0 waiting, KV cache usage 0 after the load", rest == (0, 0, 0), f"{rest}"),
            (f"RSS within {self.a.rss_tolerance:.0%} of the settled value", abs(drift) <= self.a.rss_tolerance,
             f"settled {rss_settled / 1024:.0f} MiB, end {rss_end / 1024:.0f} MiB ({drift:+.1%}), "
             f"max {rss_max / 1024:.0f} MiB"),
            ("no unexpected status codes or client errors", not self.unexpected,
             f"{sum(self.unexpected.values())} unexpected"),
            ("every client thread finished", stragglers == 0, f"{stragglers} still running"),
        ]
        lines = [f"Soak of {self.a.minutes} min against one gqa-server ({self.a.describe}); {self.a.clients} client "
                 f"threads, seed {seed}, warm-up {warmup:.0f} s.", "",
                 f"- requests: {sum(self.counts.values())} in {time.time() - start:.0f} s",
                 f"- RSS: {rss_start / 1024:.0f} MiB at start, {rss_settled / 1024:.0f} MiB after warm-up, "
                 f"{rss_max / 1024:.0f} MiB at most, {rss_end / 1024:.0f} MiB at the end",
                 f"- threads: {threads_start} at start, {max(s[2] for s in samples) if samples else 0} at most, "
                 f"{threads_end} at the end", "", "| scenario | outcome | count |", "|---|---|---|"]
        for (scenario, outcome), n in sorted(self.counts.items()):
            mark = " (unexpected)" if (scenario, outcome) in self.unexpected else ""
            lines.append(f"| {scenario} | {outcome}{mark} | {n} |")
        lines += ["", "| check | result | detail |", "|---|---|---|"]
        for what, ok, detail in checks:
            lines.append(f"| {what} | {'pass' if ok else 'FAIL'} | {detail} |")
        for key, example in self.examples.items():
            lines.append(f"\nunexpected {key[0]} {key[1]}: {example}")
        text = "\n".join(lines)
        print("\n" + text)
        if self.a.summary:
            with open(self.a.summary, "w") as f:
                f.write(text + "\n")
        return 0 if all(ok for _, ok, _ in checks) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server's process id (for RSS and threads)")
    p.add_argument("--client", required=True, help="path of gqa-client")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--clients", type=int, default=12)
    p.add_argument("--burst", type=int, default=96, help="requests sent at once by a burst")
    p.add_argument("--rss-tolerance", type=float, default=0.10)
    p.add_argument("--seed", type=int)
    p.add_argument("--summary", help="write the summary here too")
    p.add_argument("--describe", default="", help="a few words on the server, for the summary")
    return Soak(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
