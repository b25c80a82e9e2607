#!/usr/bin/env python3
"""Checks deploy/lws/leaderworkerset.yaml, whose LeaderWorkerSet is a custom
resource that the Kubernetes schemas do not cover:

- the leader and worker pod templates, each wrapped as a Pod, and the other
  objects, strictly against the Kubernetes schemas (kubernetes-validate);
- the LeaderWorkerSet's own fields against the subset of its API this
  manifest uses (unknown fields rejected);
- the wiring: mpirun's -np equals group size x GPUs per pod, every pod asks
  for the same GPUs, and every gqa-server flag exists (gqa-server --help).

usage: check_lws.py MANIFEST [--kubernetes-version V] [--server-help FILE]
"""
import argparse
import re
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

LWS_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "leaderworkerset.x-k8s.io/v1"},
        "kind": {"const": "LeaderWorkerSet"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["leaderWorkerTemplate"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
                "leaderWorkerTemplate": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["size", "workerTemplate"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "restartPolicy": {"enum": ["RecreateGroupOnPodRestart", "None"]},
                        "leaderTemplate": {"type": "object"},
                        "workerTemplate": {"type": "object"},
                    },
                },
            },
        },
    },
}


def gpus(template):
    n = 0
    for c in template["spec"].get("containers", []):
        n += int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--kubernetes-version", default="1.30.0")
    ap.add_argument("--server-help", help="gqa-server --help output")
    a = ap.parse_args()
    errors = []
    docs = [d for d in yaml.safe_load_all(open(a.manifest)) if d]
    lws = [d for d in docs if d.get("kind") == "LeaderWorkerSet"]
    if len(lws) != 1:
        errors.append(f"expected one LeaderWorkerSet, found {len(lws)}")
    for d in docs:
        if d.get("kind") == "LeaderWorkerSet":
            try:
                jsonschema.validate(d, LWS_SCHEMA)
            except jsonschema.ValidationError as e:
                errors.append(f"LeaderWorkerSet: {e.message} at {'/'.join(map(str, e.absolute_path))}")
                continue
            t = d["spec"]["leaderWorkerTemplate"]
            templates = {"worker": t["workerTemplate"]}
            if "leaderTemplate" in t:
                templates["leader"] = t["leaderTemplate"]
            for role, tmpl in templates.items():
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": tmpl.get("metadata", {}) | {"name": role},
                       "spec": tmpl.get("spec", {})}
                try:
                    kv.validate(pod, a.kubernetes_version, strict=True)
                except kv.ValidationError as e:
                    errors.append(f"{role} pod template: {e.message} at {'/'.join(map(str, e.path))}")
            per_pod = {role: gpus(tmpl) for role, tmpl in templates.items()}
            if len(set(per_pod.values())) != 1:
                errors.append(f"pods ask for different GPU counts: {per_pod}")
            script = " ".join(" ".join(c.get("args", [])) for c in templates.get("leader", {}).get("spec", {}).get("containers", []))
            m = re.search(r"mpirun\s+-np\s+(\d+)", script)
            if not m:
                errors.append("the leader does not start mpirun -np N")
            elif int(m.group(1)) != t["size"] * per_pod.get("leader", 0):
                errors.append(f"mpirun -np {m.group(1)} but the group has {t['size']} pods x {per_pod.get('leader')} GPUs")
            if a.server_help and "gqa-server" in script:
                known = set(re.findall(r"^\s+--([a-z0-9-]+)", open(a.server_help).read(), re.M))
                flags = re.findall(r"\s--([a-z0-9-]+)", script.split("gqa-server", 1)[1])
                errors += [f"gqa-server has no flag --{f}" for f in flags if f not in known]
        else:
            try:
                kv.validate(d, a.kubernetes_version, strict=True)
            except kv.ValidationError as e:
                errors.append(f"{d.get('kind')}: {e.message}")
    for e in errors:
        print("   error: " + e)
    if errors:
        return 1
    print(f"   ok: {a.manifest}: LeaderWorkerSet fields, both pod templates and the Service against Kubernetes "
          f"{a.kubernetes_version}; mpirun -np matches the group's GPUs; gqa-server flags exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
