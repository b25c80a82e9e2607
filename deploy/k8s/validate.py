#!/usr/bin/env python3
"""Validates the output of `kubectl kustomize deploy/k8s/overlays/NAME`.

1. Every built-in object against the Kubernetes OpenAPI schemas shipped in
   the kubernetes-validate package, strictly (unknown fields are errors). A
   kind with no schema is an error, except:
2. ServiceMonitor (a Prometheus Operator CRD, not in those schemas): against
   the CRD's own openAPIV3Schema when --servicemonitor-crd names the CRD's
   YAML (e.g. `kubectl get crd servicemonitors.monitoring.coreos.com -o yaml`
   on a cluster that has it); otherwise against SERVICEMONITOR_SCHEMA below,
   which covers only the fields these manifests use, and says so.
3. How the objects fit together, which no schema sees: selectors that select
   the pod, ports that exist, probes on /health, a startup probe long enough
   for loading, the shutdown timing (preStop sleep + --shutdown-timeout + 5 s
   <= terminationGracePeriodSeconds), the API key read from a Secret, a
   memory-backed /dev/shm, GPUs = --tp on --device cuda, gqa-server flags that
   exist (--server-help), and with --plan (gqa-plan --output json for the
   overlay's model) memory that holds the weights and the KV cache.
Prints one line per problem and exits 1, or a summary and 0.
"""
import argparse
import json
import re
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

SERVICEMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": {"type": "object",
                                                            "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        "scrapeTimeout": {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        "honorLabels": {"type": "boolean"},
                    }}},
            },
        },
    },
}

GIB = 1 << 30
QUANTITY = re.compile(r"^([0-9.]+)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|m)?$")
UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50,
         "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "m": 1e-3}


def quantity(q):
    m = QUANTITY.match(str(q))
    if not m:
        raise ValueError(f"bad quantity {q}")
    return float(m.group(1)) * UNITS[m.group(2)]


def duration_s(d):
    total = 0
    for n, unit in re.findall(r"(\d+)(ms|h|m|s)", d):
        total += int(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def parse_args(args):
    """gqa-server's arguments as {flag: value}; the last occurrence counts."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ValueError(f"unexpected argument {a!r}")
        if "=" in a:
            k, v = a[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            k, v = a[2:], args[i + 1]
            i += 1
        else:
            k, v = a[2:], "true"
        out[k] = v
        i += 1
    return out


def strict_schema(schema):
    """A CRD's structural schema with unknown fields rejected, as the API
    server does with field validation Strict: every object with properties
    and no x-kubernetes-preserve-unknown-fields gets additionalProperties
    false, metadata excepted (the server checks it against ObjectMeta)."""
    if isinstance(schema, dict):
        out = {k: strict_schema(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        if "properties" in out and "metadata" in out["properties"]:
            out["properties"]["metadata"] = {"type": "object"}
        return out
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Checker:
    def __init__(self, docs, opts):
        self.docs, self.opts, self.problems, self.notes = docs, opts, [], []

    def fail(self, msg):
        self.problems.append(msg)

    def of_kind(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    def schemas(self):
        crd_schema = None
        if self.opts.servicemonitor_crd:
            crd = yaml.safe_load(open(self.opts.servicemonitor_crd))
            for v in crd["spec"]["versions"]:
                if v["name"] == "v1":
                    crd_schema = strict_schema(v["schema"]["openAPIV3Schema"])
            if crd_schema is None:
                self.fail(f"{self.opts.servicemonitor_crd}: no v1 schema in the CRD")
        for d in self.docs:
            name = f'{d.get("kind")}/{d.get("metadata", {}).get("name")}'
            if d.get("kind") == "ServiceMonitor":
                schema = crd_schema or SERVICEMONITOR_SCHEMA
                errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=str)
                for e in errors:
                    self.fail(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
                self.notes.append(f"{name}: checked against "
                                  + ("the CRD's openAPIV3Schema" if crd_schema else
                                     "validate.py's schema of the fields used (no CRD given: --servicemonitor-crd)"))
                continue
            try:
                kv.validate(d, self.opts.kubernetes_version, strict=True)
            except kv.ValidationError as e:
                self.fail(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
            except kv.SchemaNotFoundError as e:
                self.fail(f"{name}: {e.message}")

    def cross(self):
        deps = self.of_kind("Deployment")
        if len(deps) != 1:
            self.fail(f"expected one Deployment, found {len(deps)}")
            return
        dep = deps[0]
        spec = dep["spec"]
        pod = spec["template"]
        labels = pod["metadata"].get("labels", {})
        pspec = pod["spec"]
        if not selects(spec["selector"].get("matchLabels"), labels):
            self.fail("Deployment selector does not select its own pods")
        ctrs = [c for c in pspec["containers"] if c["name"] == "gqa-server"]
        if len(ctrs) != 1:
            self.fail("no container named gqa-server")
            return
        c = ctrs[0]
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for need in ("http", "grpc"):
            if need not in ports:
                self.fail(f"container port {need} missing")

        def port_of(ref):
            return ports.get(ref) if isinstance(ref, str) else (ref if ref in ports.values() else None)

        try:
            flags = parse_args(c.get("args", []))
        except ValueError as e:
            self.fail(f"container args: {e}")
            return
        if c.get("command"):
            self.fail("container command overrides the image's entrypoint; use args")
        if self.opts.server_help:
            known = set(re.findall(r"^\s+--([a-z0-9-]+)", open(self.opts.server_help).read(), re.M))
            for k in flags:
                if k not in known:
                    self.fail(f"--{k} is not a gqa-server flag")
        if flags.get("host") != "0.0.0.0":
            self.fail("--host must be 0.0.0.0 for the Service and the probes to reach the server")
        if int(flags.get("http-port", 8000)) != ports.get("http"):
            self.fail("--http-port differs from container port http")
        if int(flags.get("grpc-port", 50051)) != ports.get("grpc"):
            self.fail("--grpc-port differs from container port grpc")
        if "api-key" in flags:
            self.fail("--api-key on the command line: read it from the Secret (--api-key-file)")

        # Volumes and mounts.
        vols = {v["name"]: v for v in pspec.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for m in mounts.values():
            if m["name"] not in vols:
                self.fail(f"volumeMount {m['name']} has no volume")
        shm = mounts.get("/dev/shm")
        if not shm or vols.get(shm["name"], {}).get("emptyDir", {}).get("medium") != "Memory":
            self.fail("/dev/shm is not a memory-backed emptyDir")
        key_file = flags.get("api-key-file")
        env_key = any(e["name"] == "GQA_API_KEY" and "secretKeyRef" in e.get("valueFrom", {}) for e in c.get("env", []))
        if key_file:
            mount = [m for p, m in mounts.items() if key_file.startswith(p.rstrip("/") + "/")]
            if not mount or "secret" not in vols.get(mount[0]["name"], {}):
                self.fail(f"--api-key-file {key_file} is not on a Secret volume")
        elif not env_key:
            self.fail("no API key from a Secret (--api-key-file on a Secret volume, or GQA_API_KEY from secretKeyRef)")
        model = flags.get("model", "")
        model_mount = [m for p, m in mounts.items() if model.startswith(p.rstrip("/") + "/") or model == p]
        if not model_mount:
            self.fail(f"--model {model} is not on a mounted volume")
        else:
            v = vols.get(model_mount[0]["name"], {})
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if not claim:
                self.fail("the model volume is not a PersistentVolumeClaim")
            elif claim not in {p["metadata"]["name"] for p in self.of_kind("PersistentVolumeClaim")}:
                self.fail(f"PersistentVolumeClaim {claim} is not in the manifests")
            if not model_mount[0].get("readOnly"):
                self.fail("the model is mounted writable")

        # Probes.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not p:
                self.fail(f"no {probe}")
                continue
            get = p.get("httpGet", {})
            if get.get("path") != "/health" or port_of(get.get("port")) != ports.get("http"):
                self.fail(f"{probe} is not an HTTP GET of /health on the http port")
        sp = c.get("startupProbe", {})
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) + sp.get("initialDelaySeconds", 0)
        if budget < self.opts.min_startup_seconds:
            self.fail(f"the startup probe allows {budget} s for loading, less than {self.opts.min_startup_seconds} s")

        # Shutdown timing.
        pre = c.get("lifecycle", {}).get("preStop", {})
        cmd = pre.get("exec", {}).get("command", [])
        if "sleep" in pre:
            pre_s = pre["sleep"]["seconds"]
        elif len(cmd) == 2 and cmd[0].endswith("sleep"):
            pre_s = int(cmd[1])
        else:
            self.fail("preStop is not a sleep (the pod must leave the endpoints before SIGTERM)")
            pre_s = 0
        drain = int(flags.get("shutdown-timeout", 30))
        grace = pspec.get("terminationGracePeriodSeconds", 30)
        if grace < pre_s + drain + 5:
            self.fail(f"terminationGracePeriodSeconds {grace} < preStop {pre_s} + --shutdown-timeout {drain} + 5")

        # Scraping.
        ann = pod["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics" \
                or int(ann.get("prometheus.io/port", 0)) != ports.get("http"):
            self.fail("prometheus.io/* annotations do not point at /metrics on the http port")
        if flags.get("metrics-require-key") == "true":
            self.fail("--metrics-require-key: scrapers carry no key")

        # Service, ServiceMonitor, PDB, NetworkPolicy.
        svcs = self.of_kind("Service")
        if len(svcs) != 1:
            self.fail(f"expected one Service, found {len(svcs)}")
        for s in svcs:
            if not selects(s["spec"].get("selector"), labels):
                self.fail(f"Service {s['metadata']['name']} does not select the pods")
            names = set()
            for p in s["spec"]["ports"]:
                names.add(p.get("name"))
                if port_of(p.get("targetPort", p["port"])) is None:
                    self.fail(f"Service port {p.get('name')} targets no container port")
            if not {"http", "grpc"} <= names:
                self.fail("the Service lacks the http or grpc port")
            for sm in self.of_kind("ServiceMonitor"):
                if not selects(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {})):
                    self.fail("the ServiceMonitor does not select the Service")
                for ep in sm["spec"]["endpoints"]:
                    if ep.get("port") not in names:
                        self.fail(f"ServiceMonitor endpoint port {ep.get('port')} is not a Service port")
                    if ep.get("path", "/metrics") != "/metrics":
                        self.fail("ServiceMonitor path is not /metrics")
                    if "scrapeTimeout" in ep and duration_s(ep["scrapeTimeout"]) > duration_s(ep.get("interval", "30s")):
                        self.fail("ServiceMonitor scrapeTimeout exceeds its interval")
        if not self.of_kind("ServiceMonitor"):
            self.fail("no ServiceMonitor")
        pdbs = self.of_kind("PodDisruptionBudget")
        if len(pdbs) != 1 or not selects(pdbs[0]["spec"].get("selector", {}).get("matchLabels"), labels):
            self.fail("no PodDisruptionBudget selecting the pods")
        elif pdbs[0]["spec"].get("minAvailable") not in (None, 0) and spec.get("replicas", 1) <= int(pdbs[0]["spec"]["minAvailable"]):
            self.fail("the PodDisruptionBudget's minAvailable leaves no pod evictable: node drains would block")
        nps = self.of_kind("NetworkPolicy")
        if len(nps) != 1 or not selects(nps[0]["spec"].get("podSelector", {}).get("matchLabels"), labels):
            self.fail("no NetworkPolicy selecting the pods")
        else:
            allowed = {p.get("port") for r in nps[0]["spec"].get("ingress", []) for p in r.get("ports", [])}
            for n in ("http", "grpc"):
                if n not in allowed and ports.get(n) not in allowed:
                    self.fail(f"the NetworkPolicy does not admit the {n} port")

        # Resources.
        res = c.get("resources", {})
        req, lim = res.get("requests", {}), res.get("limits", {})
        for what in ("cpu", "memory"):
            if what not in req:
                self.fail(f"no {what} request")
        if "memory" not in lim:
            self.fail("no memory limit")
        gpus = int(lim.get("nvidia.com/gpu", 0))
        tp = int(flags.get("tp", 1))
        if flags.get("device") == "cuda":
            if gpus != tp:
                self.fail(f"--device cuda --tp {tp} with nvidia.com/gpu {gpus}")
        elif gpus:
            self.fail(f"nvidia.com/gpu {gpus} without --device cuda")
        if flags.get("device", "cpu") == "cpu" and "cpu" in req:
            # hardware_concurrency() sees the node, not the pod's CPUs.
            threads = int(flags.get("threads", 0))
            if threads <= 0 or threads * tp > quantity(req["cpu"]):
                self.fail(f"--device cpu needs --threads set so that --tp x --threads <= the cpu request {req['cpu']}")
        if self.opts.plan:
            self.sizing(flags, req, lim, vols, mounts, gpus)

    def sizing(self, flags, req, lim, vols, mounts, gpus):
        plan = json.load(open(self.opts.plan))
        weights = sum(r["weight_bytes"] for r in plan["ranks"])
        max_rank = max(r["weight_bytes"] for r in plan["ranks"])
        if plan["tp"] != int(flags.get("tp", 1)):
            self.fail(f"the plan is for TP {plan['tp']}, the pod runs --tp {flags.get('tp', 1)}")
        kv = int(flags.get("kv-cache-memory", 0))
        if kv <= 0:
            self.fail("--kv-cache-memory is not set: size it from the plan")
            return
        kv_flag = flags.get("kv-cache-dtype", "auto")
        kv_bytes = 2 if kv_flag == "bf16" else 4
        if kv_flag == "auto":
            self.fail("--kv-cache-dtype is not set: auto follows the checkpoint; say f32 or bf16 as the plan does")
        elif plan["kv_dtype"] not in ("bf16", "bfloat16") and kv_bytes == 2 or \
           plan["kv_dtype"] in ("bf16", "bfloat16") and kv_bytes == 4:
            self.fail(f"the plan's KV dtype {plan['kv_dtype']} differs from --kv-cache-dtype")
        mem_req = quantity(req.get("memory", 0))
        mem_lim = quantity(lim.get("memory", 0))
        shm = quantity(vols[mounts["/dev/shm"]["name"]]["emptyDir"].get("sizeLimit", "0"))
        if gpus:
            # --kv-cache-memory is over all ranks, each holding the same tokens:
            # a rank's share is its KV bytes per token over the sum of all ranks'
            # (ranks differ when KV heads are replicated unevenly).
            kv_per_token = [r["kv_bytes_per_token"] for r in plan["ranks"]]
            kv_rank = kv * max(kv_per_token) / sum(kv_per_token)
            per_gpu = max_rank + kv_rank
            usable = self.opts.gpu_memory * self.opts.gpu_utilization
            self.notes.append(f"per GPU: weights {max_rank / GIB:.1f} GiB + KV {kv_rank / GIB:.1f} GiB "
                              f"= {per_gpu / GIB:.1f} GiB of {usable / GIB:.1f} GiB usable; "
                              f"{int(kv // sum(kv_per_token)):,} KV tokens")
            if per_gpu > usable:
                self.fail(f"per GPU {per_gpu / GIB:.1f} GiB > {usable / GIB:.1f} GiB usable")
            need = shm + self.opts.host_overhead
        else:
            need = weights + kv + shm + self.opts.host_overhead
            kv_tokens = int(kv // sum(r["kv_bytes_per_token"] for r in plan["ranks"]))
            self.notes.append(f"{kv_tokens:,} KV tokens; "
                              f"host memory: weights {weights / GIB:.1f} GiB + KV {kv / GIB:.1f} GiB + /dev/shm "
                              f"{shm / GIB:.1f} GiB + {self.opts.host_overhead / GIB:.0f} GiB = {need / GIB:.1f} GiB; "
                              f"request {mem_req / GIB:.1f} GiB")
        if mem_req < need:
            self.fail(f"memory request {mem_req / GIB:.1f} GiB < {need / GIB:.1f} GiB needed")
        if mem_lim < mem_req:
            self.fail("memory limit below the request")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifests", help="kustomize output ('-' for stdin)")
    ap.add_argument("--kubernetes-version", default="1.30.0")
    ap.add_argument("--servicemonitor-crd")
    ap.add_argument("--server-help", help="gqa-server --help output: args must be its flags")
    ap.add_argument("--plan", help="gqa-plan --output json for the overlay's model and --tp")
    ap.add_argument("--gpu-memory", type=float, default=80 * GIB, help="bytes per GPU (default 80 GiB)")
    ap.add_argument("--gpu-utilization", type=float, default=0.9, help="share of a GPU for weights + KV")
    ap.add_argument("--host-overhead", type=float, default=4 * GIB, help="host bytes beyond weights, KV, /dev/shm")
    ap.add_argument("--min-startup-seconds", type=int, default=600)
    opts = ap.parse_args()
    text = sys.stdin.read() if opts.manifests == "-" else open(opts.manifests).read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    ch = Checker(docs, opts)
    ch.schemas()
    ch.cross()
    for p in ch.problems:
        print(f"validate: {opts.manifests}: {p}")
    if ch.problems:
        return 1
    for n in ch.notes:
        print(f"validate: {opts.manifests}: {n}")
    kinds = ", ".join(sorted(f'{d["kind"]}/{d["metadata"]["name"]}' for d in docs))
    print(f"validate: {opts.manifests}: OK ({len(docs)} objects: {kinds}; Kubernetes {opts.kubernetes_version} schemas, strict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
