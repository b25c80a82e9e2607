#!/usr/bin/env python3
"""gqa-server end to end with stock clients: the `openai` package (completions,
chat, streaming, models), grpcio's health checking and reflection, 512
simultaneous streaming clients, and a SIGTERM that drains and exits 0.

Run by ctest; exits 77 (skipped) when the PyPI packages are missing:
    pip install openai grpcio grpcio-health-checking grpcio-reflection
Usage: server_e2e_test.py BIN_DIR TOKENIZERS_DIR TEMPLATE_FILE
"""
import asyncio
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

try:
    import grpc
    import openai
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}; pip install openai grpcio grpcio-health-checking grpcio-reflection")
    sys.exit(77)

BIN, TOKENIZERS, TEMPLATE = sys.argv[1], sys.argv[2], sys.argv[3]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(root):
    model = os.path.join(root, "tiny-mistral")
    subprocess.run([f"{BIN}/gqa-make-model", "--out", model, "--layers", "1", "--hidden", "32", "--heads", "4",
                    "--kv-heads", "2", "--intermediate", "48", "--vocab", "32000", "--dtype", "bf16",
                    "--max-position", "512", "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
    shutil.copy(os.path.join(TOKENIZERS, "mistral", "tokenizer.json"), model)
    with open(os.path.join(TOKENIZERS, "mistral", "tokenizer_config.json")) as f:
        cfg = json.load(f)
    with open(TEMPLATE) as f:
        cfg["chat_template"] = f.read()
    with open(os.path.join(model, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)
    return model


def start_server(model, http_port, grpc_port, extra=()):
    log = open(os.path.join(os.path.dirname(model), f"server-{http_port}.log"), "w")
    proc = subprocess.Popen([f"{BIN}/gqa-server", "--model", model, "--tp", "2", "--http-port", str(http_port),
                             "--grpc-port", str(grpc_port), "--num-kv-blocks", "4096", "--block-size", "8",
                             "--max-num-seqs", "256", "--max-queued-requests", "1024", *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused", max_retries=0)
    for _ in range(300):
        try:
            client.models.list()
            return proc, client
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def main():
    root = tempfile.mkdtemp(prefix="gqa_e2e_")
    model = make_model(root)
    http_port, grpc_port = free_port(), free_port()
    proc, client = start_server(model, http_port, grpc_port)
    try:
        models = client.models.list()
        check(models.data[0].id == "tiny-mistral", "models.list names the model")
        check(client.models.retrieve("tiny-mistral").id == "tiny-mistral", "models.retrieve finds the model")

        c = client.completions.create(model="tiny-mistral", prompt="The capital of France is", max_tokens=12,
                                      temperature=0, extra_body={"ignore_eos": True})
        check(c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 12,
              "completions.create: 12 tokens, finish_reason length")
        streamed = "".join(ch.choices[0].text for ch in client.completions.create(
            model="tiny-mistral", prompt="The capital of France is", max_tokens=12, temperature=0, stream=True,
            extra_body={"ignore_eos": True}) if ch.choices)
        check(streamed == c.choices[0].text, "streamed completion text equals the unary text")

        chat = client.chat.completions.create(model="tiny-mistral", temperature=0, max_tokens=8,
                                              messages=[{"role": "user", "content": "Hello!"}],
                                              extra_body={"ignore_eos": True})
        chat_stream = "".join((ch.choices[0].delta.content or "") for ch in client.chat.completions.create(
            model="tiny-mistral", temperature=0, max_tokens=8, stream=True,
            messages=[{"role": "user", "content": "Hello!"}], extra_body={"ignore_eos": True}) if ch.choices)
        check(chat.choices[0].message.role == "assistant" and chat_stream == chat.choices[0].message.content,
              "chat.completions: streamed content equals the unary content")
        # Prefix caching: the same long preamble again is served from the cache (whole blocks of 8, never
        # the last prompt token); a salt keeps requests apart.
        preamble = "You are a terse assistant who answers in one word. " * 6
        def cached(question, **kw):
            r = client.completions.create(model="tiny-mistral", prompt=preamble + question, temperature=0,
                                          max_tokens=2, **kw)
            return r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens
        first_total, first_cached = cached("What is 2 + 2?", extra_body={"cache_salt": "e2e-salt"})
        again_total, again_cached = cached("What is 3 + 3?", extra_body={"cache_salt": "e2e-salt"})
        other_total, other_cached = cached("What is 2 + 2?", extra_body={"cache_salt": "another-salt"})
        check(first_cached == 0 and other_cached == 0 and 0 < again_cached < again_total and again_cached % 8 == 0,
              f"usage.prompt_tokens_details.cached_tokens: {first_cached}, then {again_cached} of {again_total} "
              f"under the same cache_salt, {other_cached} under another")
        last = [ch for ch in client.completions.create(
            model="tiny-mistral", prompt=preamble + "What is 4 + 4?", temperature=0, max_tokens=2, stream=True,
            stream_options={"include_usage": True}, extra_body={"cache_salt": "e2e-salt"})][-1]
        check(last.usage is not None and last.usage.prompt_tokens_details.cached_tokens >= again_cached,
              "the streamed usage chunk carries cached_tokens")
        lp = client.completions.create(model="tiny-mistral", prompt="a", max_tokens=3, temperature=0, logprobs=2)
        check(len(lp.choices[0].logprobs.token_logprobs) == 3 and len(lp.choices[0].logprobs.top_logprobs[0]) <= 2,
              "completions logprobs have the OpenAI shape")
        try:
            client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
            check(False, "unknown model is refused")
        except openai.NotFoundError:
            check(True, "unknown model is refused with 404 (openai.NotFoundError)")
        try:
            client.completions.create(model="tiny-mistral", prompt="x", max_tokens=-1)
            check(False, "negative max_tokens is refused")
        except openai.BadRequestError:
            check(True, "negative max_tokens is refused with 400 (openai.BadRequestError)")

        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        check(health.status == health_pb2.HealthCheckResponse.SERVING, "grpc.health.v1 Check says SERVING")
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        names = []
        for resp in refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=5):
            names = [s.name for s in resp.list_services_response.service]
        check("gqa.v1.Generation" in names and "grpc.health.v1.Health" in names,
              f"reflection lists gqa.v1.Generation and grpc.health.v1.Health ({names})")

        # 512 simultaneous streaming clients, all served.
        async def many():
            aclient = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused",
                                         max_retries=0, timeout=300)

            async def one(i):
                n = 0
                stream = await aclient.completions.create(model="tiny-mistral", prompt=[1, 100 + i], max_tokens=6,
                                                          temperature=0, stream=True, extra_body={"ignore_eos": True})
                async for ch in stream:
                    if ch.choices and ch.choices[0].finish_reason is None:
                        n += 1
                return n
            return await asyncio.gather(*[one(i) for i in range(512)], return_exceptions=True)
        results = asyncio.run(many())
        ok = sum(1 for r in results if r == 6)
        check(ok == 512, f"512 simultaneous streams all served ({ok} complete; errors: "
                         f"{[r for r in results if not isinstance(r, int)][:3]})")

        # SIGTERM while a request streams: it finishes, the server exits 0.
        got = []

        def long_stream():
            for ch in client.completions.create(model="tiny-mistral", prompt=[1, 5], max_tokens=200, temperature=0,
                                                stream=True, extra_body={"ignore_eos": True}):
                if ch.choices and ch.choices[0].finish_reason is None:
                    got.append(ch)
        t = threading.Thread(target=long_stream)
        t.start()
        while not got:
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=60)
        code = proc.wait(timeout=60)
        check(len(got) == 200, f"the running request finished during the drain ({len(got)} of 200 chunks)")
        check(code == 0, f"SIGTERM: the server drained and exited 0 (exit code {code})")
    finally:
        if proc.poll() is None:
            proc.kill()
    if failures:
        print(f"{len(failures)} failed")
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
