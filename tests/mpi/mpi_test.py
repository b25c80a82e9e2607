#!/usr/bin/env python3
"""Tensor parallelism across processes under mpirun (CPU ranks).

1. Every golden checkpoint, mpirun -np 2 and -np 4 with gqa-generate: the
   greedy tokens equal the threaded executor's at the same TP (which the
   golden tests tie to Hugging Face transformers).
2. gqa-server under mpirun -np 2 and -np 4: completions over the HTTP API give
   the same tokens as the threaded gqa-generate.
3. A rank killed with SIGKILL in the middle of a streamed generation: the
   stream ends with an error naming the failure, /health answers 503, and
   mpirun exits non-zero within a few seconds. The same for a rank that hangs
   (SIGSTOP), which mpirun does not notice: rank 0's heartbeat watchdog
   (--rank-timeout 1) does.

usage: mpi_test.py BIN_DIR FIXTURES_DIR. Exits 77 (skipped) without mpirun or
when the build has no MPI support.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BIN, FIXTURES = sys.argv[1], sys.argv[2]
MPIRUN = shutil.which("mpirun")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def mpirun_cmd(np_):
    cmd = [MPIRUN, "-np", str(np_), "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(model, prompts_file, np_, mpi, extra=()):
    args = [f"{BIN}/gqa-generate", "--model", model, "--prompts-file", prompts_file, "--output", "text", *extra]
    cmd = mpirun_cmd(np_) + args if mpi else args + ["--tp", str(np_)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout.strip().splitlines(), r.stderr


def http(port, path, body=None, timeout=30):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start_server(model, np_, extra=()):
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="gqa_mpi_server_", suffix=".log", delete=False)
    cmd = mpirun_cmd(np_) + [f"{BIN}/gqa-server", "--model", model, "--http-port", str(port),
                             "--grpc-port", str(free_port()), *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            if http(port, "/health", timeout=2)[0] == 200:
                return proc, port, log.name
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    log.seek(0)
    raise RuntimeError("server did not become healthy:\n" + log.read())


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def rank_pids(mpirun_pid):
    """pid of each gqa-server rank started by this mpirun, by MPI rank."""
    ranks = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except OSError:
            continue
        if not argv0.endswith(b"gqa-server") or b"OMPI_COMM_WORLD_RANK" not in env:
            continue
        if os.getsid(int(pid)) != os.getsid(mpirun_pid):
            continue
        ranks[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
    return ranks


def golden_parity():
    cases = sorted(d for d in os.listdir(f"{FIXTURES}/golden") if os.path.isdir(f"{FIXTURES}/golden/{d}"))
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            model = f"{FIXTURES}/golden/{case}"
            with open(f"{model}/expected.json") as f:
                prompts = json.load(f)["prompts"]
            pf = f"{tmp}/{case}.jsonl"
            with open(pf, "w") as f:
                for p in prompts:
                    f.write(json.dumps({"prompt_ids": p, "max_new_tokens": 12, "ignore_eos": True}) + "\n")
            for np_ in (2, 4):
                rc_t, threaded, err_t = generate(model, pf, np_, mpi=False)
                rc_m, mpi, err_m = generate(model, pf, np_, mpi=True)
                check(rc_t == 0 and rc_m == 0 and len(mpi) == len(prompts) and mpi == threaded,
                      f"golden {case}: mpirun -np {np_} gives the threaded --tp {np_} tokens"
                      + ("" if rc_m == 0 else f" (mpirun: {err_m[-400:]})"))


def prefix_cache_parity():
    # Prompts that share prefixes, prefilled in chunks of 8 so that later ones find earlier ones' blocks
    # cached: under mpirun with the cache, the tokens of the threaded executor without it.
    base = [5 + (7 * i) % 250 for i in range(21)]
    prompts = [base, base + [9, 4], base[:13] + [77, 3, 8], base + [9, 4, 11], base]
    with tempfile.TemporaryDirectory() as tmp:
        pf = f"{tmp}/shared.jsonl"
        with open(pf, "w") as f:
            for p in prompts:
                f.write(json.dumps({"prompt_ids": p, "max_new_tokens": 8, "ignore_eos": True}) + "\n")
        for case in ("llama_gqa", "mistral_sliding"):
            model = f"{FIXTURES}/golden/{case}"
            rc_t, ref, err_t = generate(model, pf, 2, mpi=False,
                                        extra=["--no-enable-prefix-caching", "--max-num-batched-tokens", "8"])
            rc_m, got, err_m = generate(model, pf, 2, mpi=True,
                                        extra=["--block-size", "4", "--max-num-batched-tokens", "8"])
            check(rc_t == 0 and rc_m == 0 and len(got) == len(prompts) and got == ref,
                  f"prefix cache {case}: mpirun -np 2 with the cache gives the tokens of --tp 2 without it"
                  + ("" if rc_m == 0 else f" (mpirun: {err_m[-400:]})"))


def server_parity():
    model = f"{FIXTURES}/golden/llama_gqa"
    with open(f"{model}/expected.json") as f:
        prompts = json.load(f)["prompts"]
    with tempfile.TemporaryDirectory() as tmp:
        pf = f"{tmp}/p.jsonl"
        with open(pf, "w") as f:
            for p in prompts:
                f.write(json.dumps({"prompt_ids": p, "max_new_tokens": 16, "ignore_eos": True}) + "\n")
        for np_ in (2, 4):
            _, threaded, _ = generate(model, pf, np_, mpi=False)
            proc, port, log = start_server(model, np_)
            try:
                got = []
                for p in prompts:
                    code, body = http(port, "/v1/completions", {"model": "llama_gqa", "prompt": p, "max_tokens": 16,
                                                               "temperature": 0, "ignore_eos": True})
                    ids = json.loads(body)["choices"][0].get("token_ids") if code == 200 else None
                    got.append(" ".join(map(str, ids)) if ids else f"HTTP {code}: {body[:200]}")
                check(got == threaded, f"gqa-server under mpirun -np {np_}: HTTP completions give the threaded tokens")
            finally:
                stop(proc)
                os.unlink(log)


def rank_failure(sig, extra=()):
    what = signal.Signals(sig).name
    with tempfile.TemporaryDirectory() as tmp:
        model = f"{tmp}/model"
        subprocess.run([f"{BIN}/gqa-make-model", "--out", model, "--layers", "4", "--hidden", "256", "--heads", "8",
                        "--kv-heads", "2", "--intermediate", "688", "--vocab", "512", "--max-position", "4096"],
                       check=True, capture_output=True)
        proc, port, log = start_server(model, 2, extra)
        try:
            events, outcome = [], {}

            def stream():
                body = {"model": "model", "prompt": [5, 6, 7], "max_tokens": 3000, "ignore_eos": True, "stream": True}
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        for line in resp:
                            line = line.decode().strip()
                            if line.startswith("data: "):
                                events.append(line[6:])
                except Exception as e:  # a reset connection is a failure of the test, recorded below
                    outcome["exception"] = repr(e)

            t = threading.Thread(target=stream)
            t.start()
            deadline = time.time() + 30
            while len(events) < 20 and time.time() < deadline and t.is_alive():
                time.sleep(0.01)
            ranks = rank_pids(proc.pid)
            check(sorted(ranks) == [0, 1] and len(events) >= 20, f"two ranks found ({ranks}), stream running")
            if sorted(ranks) != [0, 1]:
                return
            killed_at = time.time()
            os.kill(ranks[1], sig)
            health = []
            while proc.poll() is None and time.time() - killed_at < 15:
                try:
                    health.append(http(port, "/health", timeout=1))
                except OSError:
                    pass
                time.sleep(0.02)
            exit_s = time.time() - killed_at
            t.join(10)
            rc = proc.poll()
            check(rc is not None and rc != 0 and exit_s < 8,
                  f"{what} to rank 1: mpirun exited non-zero ({rc}) {exit_s:.1f} s later")
            errors = [e for e in events if '"error"' in e]
            check(len(errors) == 1 and "tensor-parallel job failed" in errors[0] and events[-1] == "[DONE]",
                  f"the stream ended with an error event naming the failure, then [DONE]: {errors[-1:]} {events[-1:]}"
                  f" {outcome}")
            bad = [h for h in health if h[0] == 503 and "tensor-parallel job failed" in h[1]]
            check(len(bad) > 0, f"/health answered 503 naming the failure ({len(health)} checks, "
                                f"last {health[-1:] if health else None})")
            with open(log) as f:
                text = f.read()
            check("the tensor-parallel job failed" in text, "rank 0 logged the failure")
            if failures:
                print(text[-3000:])
        finally:
            stop(proc)
            os.unlink(log)


def main():
    if MPIRUN is None:
        print("skipped: mpirun not found (Debian: openmpi-bin)")
        return 77
    probe = subprocess.run(mpirun_cmd(2) + [f"{BIN}/gqa-generate", "--model", f"{FIXTURES}/golden/llama_gqa",
                                            "--prompt-ids", "1", "--max-new-tokens", "1"],
                           capture_output=True, text=True, timeout=120)
    if "no MPI support" in probe.stderr:
        print("skipped: this build has no MPI support (libopenmpi-dev was not found at configure time)")
        return 77
    golden_parity()
    prefix_cache_parity()
    server_parity()
    rank_failure(signal.SIGKILL)
    rank_failure(signal.SIGSTOP, ["--rank-timeout", "1"])
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
