#!/usr/bin/env python3
"""Checks that a Grafana dashboard asks only for metrics gqa-server exports.

Every PromQL expression of the dashboard (panel targets and templating
queries) is reduced to the metric names it selects; each must be a sample
name of the exposition given with --metrics-file (a /metrics scrape) or
fetched from --metrics-url. A histogram is exported as NAME_bucket,
NAME_sum and NAME_count, so the bare NAME of a histogram is not a metric.
Also checked: every histogram_quantile() reads a _bucket series and keeps
the `le` label; panel ids are unique; every target has an expression.
Exit status 1 with one line per problem, 0 with a summary otherwise.
"""
import argparse
import json
import re
import sys
import urllib.request

# Words of PromQL that are not metric names where an identifier may stand.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr):
    """Metric names selected by a PromQL expression (or a label_values() query)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\$\{?\w+\}?", "1", s)  # Grafana variables ($__rate_interval, ${x})
    s = re.sub(r"\{[^{}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range and subquery selectors
    # Label lists of by / without / on / ignoring / group_left / group_right.
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"(?<![A-Za-z0-9_:])\d+(\.\d+)?([eE][-+]?\d+)?[smhdwy]?\b", " ", s)  # numbers and durations
    names = set()
    label_values = re.match(r"\s*label_values\s*\((.*),\s*[A-Za-z_]\w*\s*\)\s*$", s)
    if label_values:  # label_values(METRIC, label): only METRIC is a selector
        s = label_values.group(1)
    for m in IDENT.finditer(s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("("):  # a function or aggregation
            continue
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def exported_samples(text):
    """Sample names of a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = IDENT.match(line)
        if m:
            names.add(m.group(0))
    return names


def expressions(dash):
    """(where, PromQL) for every target and templating query of the dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    for p in walk(dash.get("panels", [])):
        for t in p.get("targets", []):
            out.append((f'panel {p.get("id")} "{p.get("title")}" target {t.get("refId")}', t.get("expr")))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            out.append((f'variable {v.get("name")}', q.get("query") if isinstance(q, dict) else q))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dashboard")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--metrics-file", help="a scrape of gqa-server's /metrics")
    src.add_argument("--metrics-url", help="gqa-server's /metrics URL")
    args = ap.parse_args()

    dash = json.load(open(args.dashboard))
    if args.metrics_file:
        text = open(args.metrics_file).read()
    else:
        text = urllib.request.urlopen(args.metrics_url, timeout=10).read().decode()
    exported = exported_samples(text)
    if not exported:
        print("check_dashboard: the exposition holds no samples")
        return 1

    problems = []
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids are not unique: {ids}")
    used = set()
    exprs = expressions(dash)
    for where, expr in exprs:
        if not expr or not expr.strip():
            problems.append(f"{where}: no expression")
            continue
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: selects no metric: {expr}")
        for n in sorted(names - exported):
            problems.append(f"{where}: {n} is not exported by the server")
        used |= names
        for arg in re.findall(r"histogram_quantile\s*\(\s*[\d.]+\s*,(.*)", expr):
            if "_bucket" not in arg or not re.search(r"\bby\s*\([^)]*\ble\b", arg):
                problems.append(f"{where}: histogram_quantile needs a _bucket series aggregated by (le)")
    for p in problems:
        print("check_dashboard: " + p)
    if problems:
        return 1
    print(f"check_dashboard: {len(exprs)} expressions, {len(used)} metrics, all exported: {' '.join(sorted(used))}")
    unused = sorted(n for n in exported - used if not n.endswith(("_bucket", "_sum", "_count")))
    if unused:
        print(f"check_dashboard: (exported, not on the dashboard: {' '.join(unused)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
