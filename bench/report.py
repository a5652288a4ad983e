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
        if not kind or not n or info.get("scaling") or info.get("threads"):
            continue                     # scaling curves and thread runs have their own sections
        t = b["stats"]["min"]
        groups[b["group"] or b["name"]].setdefault(kind, []).append((t / n * 1e9, b["name"], n))
    return groups


def rows(groups):
    out = []
    for g in sorted(groups):
        kinds = groups[g]
        for kind in ("core", "core1t"):
            for ns_core, name, n in kinds.get(kind, []):
                out.append(_row(g, kinds, kind, ns_core, name, n))
    return out


def _row(g, kinds, kind, ns_core, name, n):
    """One measured core case of group g with its ratios to the group's baselines."""
    r = {"group": g, "case": name.split("[")[-1].rstrip("]") if "[" in name else name,
         "n": n, "ns_core": ns_core, "threads": "1" if kind == "core1t" else "auto"}
    for base in ("memcpy", "numpy", "reference"):
        if base in kinds:
            ns_base = min(k[0] for k in kinds[base])
            r[base] = ns_base / ns_core
            r["ns_" + base] = ns_base
    return r


def markdown(table):
    lines = ["| group | elements | core threads | core ns/elem | vs memcpy | vs numpy | vs reference |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        def f(k):
            return f"{r[k]:.2f}x" if k in r else "-"
        lines.append(f"| {r['group']} | {r['n']:,} | {r['threads']} | {r['ns_core']:.3f} | "
                     f"{f('memcpy')} | {f('numpy')} | {f('reference')} |")
    return "\n".join(lines)


def plot(table, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [r["group"] + (" (1 thread)" if r["threads"] == "1" else "") for r in table]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(labels) + 1.5))
    y = range(len(labels))
    for i, (base, color) in enumerate((("memcpy", "tab:blue"), ("numpy", "tab:orange"))):
        vals = [r.get(base, float("nan")) for r in table]
        ax.barh([v + i * 0.4 for v in y], vals, height=0.4, color=color, label=f"vs {base}")
    ax.set_xscale("log")
    ax.axvline(0.7, color="tab:blue", ls=":", lw=1)
    ax.axvline(3.0, color="tab:orange", ls=":", lw=1)
    ax.set_yticks([v + 0.2 for v in y])
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("throughput ratio, core / baseline (log scale); dotted: 0.7x memcpy and 3x numpy targets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def load_extra(path):
    """The scaling points {op: [(n, ns/elem)]}, the thread runs {op: {threads: seconds}} and
    the RMP lookup latency by table size [(MiB, ns/lookup)] of a run."""
    import re
    with open(path) as f:
        data = json.load(f)
    scaling, threads, rmp = defaultdict(list), defaultdict(dict), []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        t = b["stats"]["min"]
        per_call = t                     # pytest-benchmark's stats are per iteration
        if info.get("scaling"):
            scaling[info["op"]].append((info["elements"], per_call / info["elements"] * 1e9))
        elif info.get("threads"):
            threads[info["op"]][info["threads"]] = t
        else:
            m = re.fullmatch(r"rmp lookup (\d+)MiB", b.get("group") or "")
            if m and info.get("kind") == "core" and info.get("elements"):
                rmp.append((int(m.group(1)), t / info["elements"] * 1e9))
    for v in scaling.values():
        v.sort()
    rmp.sort()
    return scaling, threads, rmp


def extra_markdown(scaling, threads, rmp):
    out = []
    if scaling:
        sizes = sorted({n for v in scaling.values() for n, _ in v})
        out += ["## Scaling: ns per element against batch size", "",
                "| operation | " + " | ".join(f"{n:,}" for n in sizes) + " |",
                "|---|" + "---:|" * len(sizes)]
        for op, pts in sorted(scaling.items()):
            d = dict(pts)
            out.append(f"| {op} | " + " | ".join(f"{d[n]:.2f}" if n in d else "-" for n in sizes) + " |")
        out.append("")
    if threads:
        out += ["## Two threads on the two halves vs one thread on all (GIL released)", "",
                "| operation | 1 thread ms | 2 threads ms | speed-up |", "|---|---:|---:|---:|"]
        for op, d in sorted(threads.items()):
            if 1 in d and 2 in d:
                out.append(f"| {op} | {d[1] * 1e3:.2f} | {d[2] * 1e3:.2f} | {d[1] / d[2]:.2f}x |")
        out.append("")
    if rmp:
        out += ["## RMP lookup latency against table size (random pfns)", "",
                "| RMP table | ns per lookup |", "|---:|---:|"]
        out += [f"| {mib:,} MiB | {ns:.2f} |" for mib, ns in rmp]
        out.append("")
    return "\n".join(out)


def plot_scaling(scaling, rmp, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not scaling and not rmp:
        return False
    fig, axes = plt.subplots(1, 2 if rmp else 1, figsize=(12 if rmp else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for op, pts in sorted(scaling.items()):
        ax.plot([n for n, _ in pts], [1e3 / ns for _, ns in pts], marker="o", label=op)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (elements)")
    ax.set_ylabel("throughput (M elements/s)")
    ax.set_title("throughput against batch size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    if rmp:
        ax = axes[0][1]
        ax.plot([m for m, _ in rmp], [ns for _, ns in rmp], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("RMP table size (MiB)")
        ax.set_ylabel("ns per lookup")
        ax.set_title("RMP lookup latency against table size")
        ax.grid(True, which="both", alpha=0.3)
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
    scaling, threads, rmp = load_extra(a.json)
    extra = extra_markdown(scaling, threads, rmp)
    with open(os.path.join(a.out, "REPORT.md"), "w") as f:
        f.write("# pykvmmu benchmark report\n\nRatios are throughput ratios against baselines "
                "measured in the same run (> 1: the C core is faster).\n\n" + md + "\n\n" + extra)
    png = os.path.join(a.out, "ratios.png")
    drew = plot(table, png)
    spng = os.path.join(a.out, "scaling.png")
    if plot_scaling(scaling, rmp, spng):
        print(f"wrote {spng}")
    print(md)
    print()
    print(extra)
    print(f"\nwrote {os.path.join(a.out, 'REPORT.md')}" + (f" and {png}" if drew else
          " (install matplotlib for the PNG plot)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
