#!/usr/bin/env python3
"""Checks the include rules of docs/architecture.md on every source file.

Product rooms include only downward:
    apps, bench -> server -> engine -> worker -> kernels -> base; tokenizer -> base
  - tokenizer/ and server/ (the network) never include worker/;
  - nothing outside kernels/cpu/ includes kernels/cpu/, except the CPU device
    group (worker/device_group.cc) and the interpreter's stand-in for
    cuBLASLt (kernels/cuda/sim/gemm_sim.cc, the CPU GEMM by design);
  - nothing includes apps/; only tests/ include bench/ (the load generator's
    own tests).
tests/ and fuzz/ may include any product room (what they test); bench/ may
include kernels/cpu/ (the CPU kernels are what some benchmarks measure).

Usage: scripts/check_layout.py [ROOT]   (exit 1 and one line per violation)
"""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
ROOMS = ["base", "kernels", "worker", "engine", "tokenizer", "server", "apps", "bench", "tests", "fuzz"]
# What each room may include besides itself ("gqa" is the generated gRPC code of proto/).
ALLOWED = {
    "base": set(),
    "kernels": {"base"},
    "worker": {"base", "kernels"},
    "engine": {"base", "kernels", "worker"},
    "tokenizer": {"base"},
    "server": {"base", "kernels", "engine", "tokenizer", "gqa"},
    "apps": {"base", "kernels", "worker", "engine", "tokenizer", "server", "gqa"},
    "bench": {"base", "kernels", "worker", "engine", "tokenizer", "server", "gqa"},
    "tests": {"base", "kernels", "worker", "engine", "tokenizer", "server", "gqa", "bench"},
    "fuzz": {"base", "kernels", "worker", "engine", "tokenizer", "server", "gqa"},
}
CPU_INCLUDERS = {"worker/device_group.cc", "kernels/cuda/sim/gemm_sim.cc"}
CPU_ROOMS = {"tests", "bench"}
SOURCE = re.compile(r"\.(cc|h|cu|cuh|in)$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
PROJECT_ROOTS = set(ROOMS) | {"gqa"}


def main():
    problems = []
    for room in ROOMS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, room)):
            for name in files:
                if not SOURCE.search(name):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = m.group(1)
                        top = target.split("/", 1)[0]
                        if top not in PROJECT_ROOTS:
                            continue  # a library's header (absl/, nlohmann/, ...) or a local one
                        where = f"{rel}:{lineno}: includes {target}"
                        if top != room and top not in ALLOWED[room]:
                            problems.append(f"{where}: {room}/ may not include {top}/")
                        if target.startswith("kernels/cpu/") and not rel.startswith("kernels/cpu/") \
                                and rel not in CPU_INCLUDERS and room not in CPU_ROOMS:
                            problems.append(f"{where}: only the CPU device group and the interpreter's GEMM "
                                            "may include kernels/cpu/")
    for p in problems:
        print(p)
    if problems:
        print(f"check_layout: {len(problems)} include(s) break the layout rules (docs/architecture.md)")
        return 1
    print("check_layout: every include follows the layout rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
