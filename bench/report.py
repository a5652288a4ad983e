"""Turn a pytest-benchmark JSON run into a ratio report (markdown table + PNG plot).

Usage: python bench/report.py [results.json] [--out bench/report]
For every group it prints the core's ns per element and its throughput ratio to each
baseline measured in the same run (memcpy, numpy, reference): ratio = baseline time per
element / core time per element, so > 1 means the core is faster.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict


def load(path):
    with open(path) as f:
        data = json.load(f)
    groups = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        kind = info.get("kind")
        n = info.get("elements")
        if not kind or not n:
            continue
        t = b["stats"]["min"]
        groups[b["group"] or b["name"]].setdefault(kind, []).append((t / n * 1e9, b["name"], n))
    return groups


def rows(groups):
    out = []
    for g in sorted(groups):
        kinds = groups[g]
        if "core" not in kinds:
            continue
        for ns_core, name, n in kinds["core"]:
            r = {"group": g, "case": name.split("[")[-1].rstrip("]") if "[" in name else name,
                 "n": n, "ns_core": ns_core}
            for base in ("memcpy", "numpy", "reference"):
                if base in kinds:
                    ns_base = min(k[0] for k in kinds[base])
                    r[base] = ns_base / ns_core
                    r["ns_" + base] = ns_base
            out.append(r)
    return out


def markdown(table):
    lines = ["| group | elements | core ns/elem | vs memcpy | vs numpy | vs reference |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in table:
        def f(k):
            return f"{r[k]:.2f}x" if k in r else "-"
        lines.append(f"| {r['group']} | {r['n']:,} | {r['ns_core']:.3f} | {f('memcpy')} | "
                     f"{f('numpy')} | {f('reference')} |")
    return "\n".join(lines)


def plot(table, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [r["group"] for r in table]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(labels) + 1.5))
    y = range(len(labels))
    for i, (base, color) in enumerate((("memcpy", "tab:blue"), ("numpy", "tab:orange"))):
        vals = [r.get(base, 0) for r in table]
        ax.barh([v + i * 0.4 for v in y], vals, height=0.4, color=color, label=f"vs {base}")
    ax.axvline(0.7, color="tab:blue", ls=":", lw=1)
    ax.axvline(3.0, color="tab:orange", ls=":", lw=1)
    ax.set_yticks([v + 0.2 for v in y])
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("throughput ratio (core / baseline); dotted: 0.7x memcpy and 3x numpy targets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("json", nargs="?", default="bench/report/results.json")
    ap.add_argument("--out", default="bench/report")
    a = ap.parse_args(argv)
    table = rows(load(a.json))
    md = markdown(table)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "REPORT.md"), "w") as f:
        f.write("# pykvmmu benchmark report\n\nRatios are throughput ratios against baselines "
                "measured in the same run (> 1: the C core is faster).\n\n" + md + "\n")
    png = os.path.join(a.out, "ratios.png")
    drew = plot(table, png)
    print(md)
    print(f"\nwrote {os.path.join(a.out, 'REPORT.md')}" + (f" and {png}" if drew else
          " (install matplotlib for the PNG plot)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
