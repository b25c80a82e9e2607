#!/usr/bin/env python3
"""schemathesis against a live gqa-server, driven by the server's own OpenAPI
description (GET /openapi.json, built from docs/openapi.json): a bounded
number of generated requests per operation, valid and invalid, checked for
no 5xx, documented status codes and content types, and bodies that match
the schemas. Afterwards the server must be idle (nothing running or waiting,
every KV block free) and exit 0 on SIGTERM.

Run by ctest; exits 77 (skipped) when schemathesis is not installed:
    pip install schemathesis==4.32.5
Usage: schemathesis_test.py BIN_DIR TOKENIZERS_DIR TEMPLATE_FILE [MAX_EXAMPLES]
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

SCHEMATHESIS_VERSION = "4.32.5"


def schemathesis_command():
    """The schemathesis CLI beside this interpreter, or on PATH."""
    try:
        import schemathesis  # noqa: F401
    except ImportError as e:
        return None, str(e)
    here = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    exe = here if os.path.exists(here) else shutil.which("schemathesis")
    if exe is None:
        return None, "the schemathesis program is not on PATH"
    return exe, ""


def make_model(bin_dir, tokenizers, template, root):
    model = os.path.join(root, "tiny-mistral")
    subprocess.run([f"{bin_dir}/gqa-make-model", "--out", model, "--layers", "1", "--hidden", "32", "--heads", "4",
                    "--kv-heads", "2", "--intermediate", "48", "--vocab", "32000", "--dtype", "bf16",
                    "--max-position", "256", "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
    shutil.copy(os.path.join(tokenizers, "mistral", "tokenizer.json"), model)
    with open(os.path.join(tokenizers, "mistral", "tokenizer_config.json")) as f:
        cfg = json.load(f)
    with open(template) as f:
        cfg["chat_template"] = f.read()
    with open(os.path.join(model, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)
    return model


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    bin_dir, tokenizers, template = sys.argv[1:4]
    max_examples = sys.argv[4] if len(sys.argv) > 4 else "25"
    exe, why = schemathesis_command()
    if exe is None:
        print(f"SKIP: schemathesis is not installed ({why}); pip install schemathesis=={SCHEMATHESIS_VERSION}")
        return 77
    root = tempfile.mkdtemp(prefix="gqa_schemathesis_")
    model = make_model(bin_dir, tokenizers, template, root)
    log_path = os.path.join(root, "server.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([f"{bin_dir}/gqa-server", "--model", model, "--tp", "1", "--threads", "1",
                             "--http-port", "0", "--grpc-port", "0", "--num-kv-blocks", "512", "--block-size", "8",
                             "--max-num-seqs", "16", "--served-model-name", "tiny-mistral"],
                            stdout=log, stderr=subprocess.STDOUT)
    port = 0
    try:
        for _ in range(600):
            text = open(log_path).read()
            if "gqa: serving" in text:
                port = int(text.split("HTTP on 127.0.0.1:")[1].split()[0].rstrip(","))
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        if port == 0:
            print("FAIL: gqa-server did not come up\n" + open(log_path).read())
            return 1
        base = f"http://127.0.0.1:{port}"
        cmd = [exe, "run", f"{base}/openapi.json", "--url", base,
               "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                           "response_headers_conformance,response_schema_conformance",
               "--mode", "all", "--max-examples", max_examples, "--phases", "examples,coverage,fuzzing",
               "--workers", "2", "--request-timeout", "30", "--seed", "1", "--max-time", "100",
               "--suppress-health-check", "all"]
        print("+ " + " ".join(cmd), flush=True)
        started = time.time()
        # In the temporary directory: schemathesis keeps a cache where it runs.
        rc = subprocess.run(cmd, cwd=root, env=dict(os.environ, NO_COLOR="1")).returncode
        print(f"schemathesis: exit {rc} after {time.time() - started:.0f} s", flush=True)
        failures = []
        if proc.poll() is not None:
            failures.append(f"gqa-server died (exit {proc.returncode})")
        else:
            # Everything the generated requests started has ended (a loaded
            # machine may still be generating for the last ones: up to 60 s).
            idle = False
            for _ in range(600):
                _, text = get(f"{base}/metrics")
                if (metric(text, "gqa_num_requests_running") == 0 and metric(text, "gqa_num_requests_waiting") == 0
                        and metric(text, "gqa_kv_cache_usage_ratio") == 0):
                    idle = True
                    break
                time.sleep(0.1)
            if not idle:
                failures.append("requests or KV blocks still in use after the run")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            if code != 0:
                failures.append(f"SIGTERM: exit code {code}")
        if rc != 0:
            failures.append("schemathesis found failures (above)")
        for f in failures:
            print("FAIL " + f)
        if failures:
            print("server log: " + log_path)
            return 1
        print("all passed")
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
