"""Collects the study's results into small files under bench/study/results/
and draws the plots under docs/img/ (matplotlib).

    python3 bench/study/report.py --data DATA --repo .
"""
import argparse
import csv
import glob
import json
import math
import os
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

METHODS = ("mean", "first", "random")
COLORS = {"mean": "tab:blue", "first": "tab:orange", "random": "tab:red"}
GCOLORS = {1: "tab:red", 2: "tab:orange", 4: "tab:green", 8: "tab:blue"}


def read_log(path):
    return [json.loads(line) for line in open(path)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--orig-steps", type=int, default=1200)
    args = ap.parse_args()
    d = args.data
    res = os.path.join(args.repo, "tools", "study", "results")
    img = os.path.join(args.repo, "docs", "img")
    os.makedirs(res, exist_ok=True)
    os.makedirs(img, exist_ok=True)
    for f in ("corpus.json", "tokcheck.json", "mha_eval.json", "engine_check.json"):
        if os.path.exists(os.path.join(d, f)):
            shutil.copy(os.path.join(d, f), os.path.join(res, f))
    shutil.copy(os.path.join(d, "mha", "log.jsonl"), os.path.join(res, "pretrain_log.jsonl"))
    for f in glob.glob(os.path.join(d, "conv", "*.convert.txt")):
        os.makedirs(os.path.join(res, "convert"), exist_ok=True)
        shutil.copy(f, os.path.join(res, "convert", os.path.basename(f)))
    for sub in ("up", "up-lr2e-4"):
        for log in glob.glob(os.path.join(d, sub, "g*", "log.jsonl")):
            dst = os.path.join(res, sub.replace("up", "uptrain"))
            os.makedirs(dst, exist_ok=True)
            shutil.copy(log, os.path.join(dst, os.path.basename(os.path.dirname(log)) + ".jsonl"))
    mha_ppl = json.load(open(os.path.join(d, "mha_eval.json")))["perplexity"]

    # perplexity grid
    rows = []
    curves = {}
    for log in sorted(glob.glob(os.path.join(d, "up", "g*", "log.jsonl"))):
        name = os.path.basename(os.path.dirname(log))
        g, m = name[1:].split("-")
        g = int(g)
        pts = [(r["step"], r["eval"]["perplexity"]) for r in read_log(log) if "eval" in r]
        curves[(g, m)] = pts
        for s, p in pts:
            rows.append({"G": g, "method": m, "step": s, "fraction_of_original": s / args.orig_steps,
                         "perplexity": round(p, 4)})
    with open(os.path.join(res, "ppl_grid.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    # plot 1: perplexity vs uptraining fraction, one panel per G
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=False)
    for ax, g in zip(axes, (1, 2, 4)):
        for m in METHODS:
            if (g, m) in curves:
                xs = [100 * s / args.orig_steps for s, _ in curves[(g, m)]]
                ax.plot(xs, [p for _, p in curves[(g, m)]], "o-", color=COLORS[m], label=m)
        if (8, "mean") in curves:
            xs = [100 * s / args.orig_steps for s, _ in curves[(8, "mean")]]
            ax.plot(xs, [p for _, p in curves[(8, "mean")]], "k--", label="MHA (G=8), same extra training")
        ax.set_yscale("log")
        ax.set_title(f"G = {g}" + (" (MQA)" if g == 1 else ""))
        ax.set_xlabel("uptraining, % of original steps")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("held-out perplexity (log scale)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(img, "gqa-study-uptraining.png"), dpi=80)
    plt.close(fig)

    # plot 2: perplexity vs G, right after conversion and after 5% / 10%
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (s, title) in zip(axes, ((0, "right after conversion"),
                                     (round(0.05 * args.orig_steps), "after 5% uptraining"),
                                     (round(0.10 * args.orig_steps), "after 10% uptraining"))):
        for m in METHODS:
            xs, ys = [], []
            for g in (1, 2, 4):
                pts = dict(curves.get((g, m), []))
                if s in pts:
                    xs.append(g)
                    ys.append(pts[s])
            if xs:
                ax.plot(xs, ys, "o-", color=COLORS[m], label=m)
        ctl = dict(curves.get((8, "mean"), []))
        if s in ctl:
            ax.plot([8], [ctl[s]], "k*", markersize=10, label="MHA, same extra training")
        ax.axhline(mha_ppl, color="gray", ls="--", lw=1, label="MHA before uptraining")
        ax.set_xscale("log", base=2)
        if s == 0:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks([1, 2, 4, 8])
        ax.set_xticklabels(["1\nMQA", "2", "4", "8\nMHA"])
        ax.set_title(title)
        ax.set_xlabel("key/value heads G")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("held-out perplexity (left: log scale)")
    h, lab = axes[0].get_legend_handles_labels()
    axes[2].legend(h, lab, fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(os.path.join(img, "gqa-study-ppl-vs-g.png"), dpi=80)
    plt.close(fig)

    # plot 3: decode throughput vs batch
    bpath = os.path.join(d, "bench.json")
    if os.path.exists(bpath):
        b = json.load(open(bpath))
        slim = {k: v for k, v in b.items() if k != "runs"}
        slim["runs"] = [{k: v for k, v in r.items() if k != "raw"} for r in b["runs"]]
        with open(os.path.join(res, "bench.json"), "w") as f:
            json.dump(slim, f, indent=1)
        fig, ax = plt.subplots(figsize=(6, 4))
        for g in (1, 2, 4, 8):
            pts = sorted((v["batch"], v["median_tokens_per_s"], v["best_tokens_per_s"])
                         for v in b["summary"].values() if v["G"] == g)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=GCOLORS[g],
                    label=f"G={g}" + (" (MQA)" if g == 1 else " (MHA)" if g == 8 else "") + " median")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], "x:", color=GCOLORS[g], alpha=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([1, 16, 64])
        ax.set_xticklabels(["1", "16", "64"])
        ax.set_yticks([300, 500, 1000, 2000, 3000])
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("batch (sequences decoded together)")
        ax.set_ylabel("decode tokens/s (x: best run)")
        ax.set_title(f"engine decode, CPU {b['threads']} thread, context {b['context']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(img, "gqa-study-throughput.png"), dpi=80)
        plt.close(fig)

    # the table printed for the doc
    print(f"MHA original: {mha_ppl:.3f}")
    print("| G | method | 0% | 2.5% | 5% | 7.5% | 10% |")
    for g in (1, 2, 4, 8):
        for m in METHODS:
            if (g, m) not in curves:
                continue
            pts = dict(curves[(g, m)])
            cells = [f"{pts[s]:.2f}" if s in pts else "-" for s in
                     [round(f * args.orig_steps) for f in (0, 0.025, 0.05, 0.075, 0.10)]]
            print(f"| {g} | {m} | " + " | ".join(cells) + " |")
    if os.path.exists(bpath):
        b = json.load(open(bpath))
        print("| G | weight bytes/step | KV bytes/token (f32) | B=1 median (best) | B=16 median (best) | B=64 median (best) |")
        print("|---|---:|---:|---:|---:|---:|")
        for g in (1, 2, 4, 8):
            cells = []
            for bb in (1, 16, 64):
                v = b["summary"].get(f"G{g}_B{bb}")
                cells.append(f"{v['median_tokens_per_s']:.0f} ({v['best_tokens_per_s']:.0f})" if v else "-")
            runs = [r for r in b["runs"] if r["G"] == g]
            wb = runs[0]["weight_bytes_per_step"] if runs else 0
            print(f"| {g} | {wb:,} | {1024 * g:,} | " + " | ".join(cells) + " |")
        loads = [r["load1"] for r in b["runs"]]
        print(f"runs {len(b['runs'])}, load1 min {min(loads):.2f} max {max(loads):.2f}, "
              f"{b['runs'][0]['time']}-{b['runs'][-1]['time']}, {b['machine']}, {b['runs'][0]['backend']}")
    ec = os.path.join(d, "engine_check.json")
    if os.path.exists(ec):
        print("| checkpoint | PyTorch | gqa-eval | relative difference |")
        print("|---|---:|---:|---:|")
        for k, v in json.load(open(ec)).items():
            print(f"| {k} | {v['torch']['perplexity']:.4f} | {v['engine']['perplexity']:.4f} | {v['rel_diff']:.1e} |")


if __name__ == "__main__":
    main()
