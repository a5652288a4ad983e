"""Turn a pytest-benchmark JSON run into the benchmark report (REPORT.md + PNG plots).

Usage: python bench/report.py [results.json] [--out bench/report]

Every ratio comes from one interleaved benchmark (bench/conftest.py ``interleaved``): the
operation and its baselines ran in alternating rounds, and the report gives the median of
the per-round ratios with the interquartile range [q1..q3] and the outside load during those
rounds (other processes' CPU use in cores, and the 1-minute loadavg).  Ratio = baseline time
per element / subject time per element, so > 1 means the library is faster.  Target lines
(the goals of issue 14, declared next to each benchmark) are marked met / NOT met from the
measured median.  A ">= Nx numpy" target of a batch operation also carries its copy-speed
ceiling: the median of the per-round numpy / copy time ratios, what the library would score
against numpy if it ran at exactly the speed of a copy of the same bytes (information only: the
met / NOT met mark comes from the measured median alone).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections import defaultdict

FULL_N = 16 * 1024 * 1024
SUBJECTS = ("core", "core1t", "alloc", "avx2", "portable")
SUBJECT_LABEL = {"core": "out=, auto threads", "core1t": "out=, 1 thread",
                 "alloc": "no out=, auto threads", "avx2": "out=, 1 thread, ISA cap avx2 (a CPU without AVX-512)",
                 "portable": "out=, 1 thread, portable path (plain C loops, built by this CPU's "
                             "target_clones variant, not SSE2 code)"}


# ------------------------------------------------------------------ statistics
def med(xs):
    return statistics.median(xs) if xs else float("nan")


def iqr(xs):
    """(q1, q3) of the per-round values (min..max when there are fewer than 4)."""
    if not xs:
        return float("nan"), float("nan")
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def fmt_ratio(xs):
    if not xs:
        return "-"
    lo, hi = iqr(xs)
    return f"{med(xs):.2f}x [{lo:.2f}..{hi:.2f}]"


def fmt_ns(x):
    if x != x:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f} ms"
    if x >= 1e3:
        return f"{x / 1e3:.2f} µs"
    return f"{x:.3g} ns" if x < 10 else f"{x:.0f} ns"


# ------------------------------------------------------------------ loading
def load(path):
    """The run's interleaved benchmarks (dicts) and its other benchmarks (scaling, build)."""
    with open(path) as f:
        data = json.load(f)
    inter, other = [], []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("interleaved"):
            inter.append(dict(info, group=b.get("group") or b["name"], name=b["name"]))
        else:
            other.append(b)
    return data, inter, other


def other_cpus(rounds):
    """Other processes' CPU use in cores over the rounds (CPU seconds summed before dividing
    by the wall time, since /proc/stat counts 10 ms ticks) and the maximum over rounds of at
    least 0.2 s (None when there are none)."""
    wall = sum(r["seconds"] for r in rounds)
    if "busy_s" not in (rounds[0] if rounds else {}) or wall < 0.2:
        return float("nan"), None                    # too short for 10 ms ticks
    total = max(0.0, sum(r["busy_s"] for r in rounds) - sum(r["own_s"] for r in rounds)) / wall
    long = [r["other_cpus"] for r in rounds if r["seconds"] >= 0.2]
    return total, (max(long) if long else None)


def pressure(rounds):
    """Share of the rounds' time some task waited for a CPU (PSI), time-weighted."""
    rs = [r for r in rounds if r.get("cpu_pressure") == r.get("cpu_pressure") and "cpu_pressure" in r]
    wall = sum(r["seconds"] for r in rs)
    return sum(r["cpu_pressure"] * r["seconds"] for r in rs) / wall if wall > 0 else float("nan")


def load_summary(benches):
    rounds = [r for b in benches for r in b.get("load", [])]
    return [r["loadavg"] for r in rounds], other_cpus(rounds) if rounds else (float("nan"), None)


def fmt_load(b):
    rounds = b.get("load", [])
    if not rounds:
        return "-"
    avg, mx = other_cpus(rounds)
    p = pressure(rounds)
    return (("n/a" if avg != avg else f"{avg:.2f}") + (f" (max {mx:.2f})" if mx is not None else "")
            + " / " + ("n/a" if p != p else f"{100 * p:.0f}%")
            + f" / {med([r['loadavg'] for r in rounds]):.2f}")


# ------------------------------------------------------------------ targets
def ceiling(b):
    """Per-round numpy / copy time ratios of a batch benchmark ([] without both baselines):
    what the library would score against numpy if it ran at exactly the copy's speed, the most
    a memory-bound operation can reach against numpy."""
    ns = b["ns_per_elem"]
    if b.get("scalar") or b.get("threads") or b.get("workload") or "numpy" not in ns \
            or "memcpy" not in ns:
        return []
    return [tn / tc for tn, tc in zip(ns["numpy"], ns["memcpy"]) if tc > 0]


def thread_ceiling(b):
    """Per-round t(copy, 1 thread) / t(copy, 2 threads) of a threads benchmark ([] without the
    copies): the two-thread speed-up of a copy moving the operation's bytes, the most two
    threads can gain on an operation that already runs at one thread's copy speed."""
    ns = b["ns_per_elem"]
    if not b.get("threads") or "copy 1 thread" not in ns or "copy 2 threads" not in ns:
        return []
    return [t1 / t2 for t1, t2 in zip(ns["copy 1 thread"], ns["copy 2 threads"]) if t2 > 0]


def bandwidth_limit(b):
    """Per round, about the most two threads can gain on the operation when memory bandwidth
    bounds it ([] without the copies): the copy's two-thread speed-up C over min(r, 1), r the
    operation's one-thread speed relative to the one-thread copy.  An operation slower than
    the copy (r < 1) can gain up to reaching the two-thread copy's speed, C / r; one already at
    or past the copy's speed (its stores may stream where the copy's do not) gains what the
    bandwidth gains, C."""
    ns = b["ns_per_elem"]
    if not b.get("threads") or not {"copy 1 thread", "copy 2 threads", "1 thread"} <= set(ns):
        return []
    return [(c1 / c2) / min(c1 / t1, 1.0)
            for t1, c1, c2 in zip(ns["1 thread"], ns["copy 1 thread"], ns["copy 2 threads"])
            if c2 > 0 and t1 > 0]


def compute_bound(lim, goal):
    """True when memory would let two threads gain ``goal`` (the median of the bandwidth
    limit ``lim``, from :func:`bandwidth_limit`, reaches it), False when it would not, None
    without the copies."""
    return med(lim) >= goal if lim else None


def call_ceiling(b, floor="call"):
    """Per round, reference time / floor time of a scalar group: the ratio to the reference
    a function would score if it cost no more than its floor, ``call`` (a Python function that
    does nothing, called the same way) or ``floor`` (the library call without its checks:
    the binding's own cost)."""
    ns = b["ns_per_elem"]
    return [r / c for r, c in zip(ns.get("reference", []), ns.get(floor, [])) if c > 0]


def ceiling_note(cx, goal, what):
    """" (above the <what> ceiling Cx)" when the median ceiling is under the goal, else
    " (<what> ceiling Cx)"; "" without a ceiling."""
    if not cx:
        return ""
    c = med(cx)
    return f" (above the {what} ceiling {c:.2f}x)" if c < goal else f" ({what} ceiling {c:.2f}x)"


def target_line(b, t):
    """(met: bool | None, text) of one declared target of benchmark b."""
    s = t["subject"]
    where = b["group"]
    note = ""
    if not (b.get("scalar") or b.get("threads") or where.startswith(("rmp", "vm."))) \
            and b.get("n_batch", FULL_N) < FULL_N:
        note = f" (measured at {b['n_batch']:,} elements; the goal is at 16M)"
    if b.get("workload") and b.get("elements", 0) < b.get("full_elements", 0):
        note = f" (measured on {b['elements']:,} operations; the goal is for {b['full_elements']:,})"
    if "vs" in t:
        xs = b["ratios"].get(f"{s}/{t['vs']}", [])
        if not xs:
            return None, f"{where}: {s} vs {t['vs']} >= {t['min']}x: not measured"
        m = med(xs)
        lo, hi = iqr(xs)
        ok = m >= t["min"]
        who = s if b.get("scalar") or s not in SUBJECT_LABEL else f"{s} ({SUBJECT_LABEL[s]})"
        if t["vs"] == "numpy":
            note += ceiling_note(ceiling(b), t["min"], "copy-speed")
        elif b.get("scalar") and t["vs"] == "reference":
            note += ceiling_note(call_ceiling(b), t["min"], "call-floor")
            if "floor" in b["ns_per_elem"]:
                note += ceiling_note(call_ceiling(b, "floor"), t["min"], "binding-floor")
        elif b.get("threads") and t["vs"] == "1 thread":
            lim = bandwidth_limit(b)
            if t.get("when") == "compute-bound" and compute_bound(lim, t["min"]) is False:
                return None, (f"{where}: {who} >= {t['min']}x {t['vs']} (compute-bound batches): "
                              f"not judged, memory-bound in this run: its bandwidth limit is "
                              f"{med(lim):.2f}x [{iqr(lim)[0]:.2f}..{iqr(lim)[1]:.2f}] (two-thread "
                              f"copy speed-up / min(1, its speed vs the copy)); measured {m:.2f}x "
                              f"[{lo:.2f}..{hi:.2f}] = {100 * m / med(lim):.0f}% of that limit")
            note += ceiling_note(thread_ceiling(b), t["min"], "two-thread copy")
        return ok, (f"{where}: {who} >= {t['min']}x {t['vs']}: "
                    f"median {m:.2f}x [{lo:.2f}..{hi:.2f}]{note}")
    xs = b["ns_per_elem"].get(s, [])
    if not xs:
        return None, f"{where}: {s} <= {t['max_ns']} ns: not measured"
    m = med(xs)
    ok = m <= t["max_ns"]
    label = t.get("label") or f"< {fmt_ns(t['max_ns'])} per call"
    extra = f" = {1e9 / m:,.0f}/s" if "/s" in label else ""
    return ok, f"{where}: {s} {label}: median {fmt_ns(m)}{extra}{note}"


def targets(inter):
    out = []
    for b in inter:
        for t in b.get("targets", []):
            out.append((b, t) + target_line(b, t))
    return out


def mark(ok):
    return "met" if ok else ("**NOT met**" if ok is not None else "n/a")


def scalar_target_lines(tl):
    """The scalar goals as a few lines: the < 0.5 us rule over every function (with the ones
    that miss it), and the function-specific goals (decode, make_spte vs the reference)."""
    sc = [x for x in tl if x[0].get("scalar")]
    if not sc:
        return []
    out = []
    per_call = [x for x in sc if "max_ns" in x[1] and x[1]["max_ns"] == 500.0]
    if per_call:
        bad = [x for x in per_call if not x[2]]
        worst = ", ".join(f"{x[0]['group'][7:]} {med(x[0]['ns_per_elem']['core']):.0f} ns "
                          f"(no-op call {med(x[0]['ns_per_elem'].get('call', [])):.0f} ns)"
                          for x in sorted(bad, key=lambda x: -med(x[0]["ns_per_elem"]["core"])))
        floor = [x[0]["group"][7:] for x in bad if med(x[0]["ns_per_elem"].get("call", [])) >= 500.0]
        out.append(f"- [{mark(not bad)}] every scalar SPTE/MMIO/role/RMP call < 500 ns: "
                   f"{len(per_call) - len(bad)} of {len(per_call)} functions"
                   + (f"; over: {worst}" if bad else "")
                   + (f"; under the call floor (a function that does nothing, called the same way, "
                      f"already takes 500 ns or more): {', '.join(floor)}" if floor else ""))
    for b, t, ok, text in sc:
        if not ("max_ns" in t and t["max_ns"] == 500.0):
            out.append(f"- [{mark(ok)}] {text}")
    return out


# ------------------------------------------------------------------ sections
def batch_rows(inter):
    """Per batch group and subject: ns/elem, ratios to each baseline, load."""
    rows = []
    for b in sorted(inter, key=lambda b: b["group"]):
        if b.get("scalar") or b.get("threads") or b.get("workload") or b["group"].startswith("rmp"):
            continue
        for s in [k for k in b["ns_per_elem"] if k in SUBJECTS]:
            r = {"group": b["group"], "subject": s, "n": b.get("elements"),
                 "ns": med(b["ns_per_elem"][s]), "load": fmt_load(b), "rounds": b.get("rounds", 0)}
            for base in [k for k in b["ns_per_elem"] if k not in SUBJECTS]:
                r[base] = b["ratios"].get(f"{s}/{base}", [])
                r["ns_" + base] = med(b["ns_per_elem"][base])
            rows.append(r)
    return rows


def batch_markdown(rows):
    bases = sorted({k for r in rows for k in r if k in ("memcpy", "numpy", "reference", "gather")},
                   key=("memcpy", "numpy", "gather", "reference").index)
    lines = ["| group | elements | core call | ns/elem | " + " | ".join(f"vs {b}" for b in bases)
             + " | other CPUs (max) / CPU pressure / loadavg |",
             "|---|---:|---|---:|" + "---:|" * len(bases) + "---:|"]
    for r in rows:
        cells = [fmt_ratio(r.get(b, [])) for b in bases]
        lines.append(f"| {r['group']} | {r['n']:,} | {SUBJECT_LABEL.get(r['subject'], r['subject'])} | "
                     f"{r['ns']:.3f} | " + " | ".join(cells) + f" | {r['load']} |")
    return lines


def scalar_markdown(inter, tl):
    marks = {id(b): [ok for bb, _, ok, _ in tl if bb is b] for b in inter}
    lines = ["| function | core ns/call [q1..q3] | reference ns/call | vs reference | "
             "no-op called the same way ns | target |", "|---|---:|---:|---:|---:|---|"]
    for b in sorted((b for b in inter if b.get("scalar")), key=lambda b: b["group"]):
        ns = b["ns_per_elem"]
        lo, hi = iqr(ns["core"])
        ms = marks[id(b)]
        tgt = "-" if not ms else ("met" if all(ms) else "**NOT met**")
        lines.append(f"| {b['group'][7:]} | {med(ns['core']):.0f} [{lo:.0f}..{hi:.0f}] | "
                     f"{med(ns['reference']):.0f} | {fmt_ratio(b['ratios'].get('core/reference', []))} | "
                     f"{med(ns['call']):.0f} | {tgt} |" if "reference" in ns else
                     f"| {b['group'][7:]} | {med(ns['core']):.0f} [{lo:.0f}..{hi:.0f}] | - | - | "
                     f"{med(ns.get('call', [])):.0f} | {tgt} |")
    return lines


def threads_markdown(inter):
    """Per operation: its two-thread speed-up next to the two-thread copy's (the bandwidth
    ceiling) and its one-thread speed relative to the one-thread copy, from the same rounds."""
    lines = ["| operation | 1 thread ms | 2 threads ms | speed-up [q1..q3] | "
             "two-thread copy speed-up (ceiling) [q1..q3] | 1 thread vs 1-thread copy [q1..q3] | "
             "compute-bound | other CPUs (max) / CPU pressure / loadavg |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for b in sorted((b for b in inter if b.get("threads")), key=lambda b: b["group"]):
        ns, n = b["ns_per_elem"], b["elements"]
        cx = thread_ceiling(b)
        vs_copy = [tc / t1 for t1, tc in zip(ns.get("1 thread", []), ns.get("copy 1 thread", []))
                   if t1 > 0]
        t = next((t for t in b.get("targets", []) if t.get("vs") == "1 thread"), None)
        goal = t["min"] if t else None
        lim = bandwidth_limit(b)
        cbound = compute_bound(lim, goal or 1.8)
        cb = ("yes" if cbound else "no") + (f", limit {med(lim):.2f}x" if lim else "")
        if goal is not None and (cbound or t.get("when") != "compute-bound"):
            cb += f" (target {goal}x)" + (ceiling_note(cx, goal, "two-thread copy")
                                          if cx and med(cx) < goal else "")
        lines.append(f"| {b.get('op', b['group'])} | {med(ns['1 thread']) * n / 1e6:.2f} | "
                     f"{med(ns['2 threads']) * n / 1e6:.2f} | "
                     f"{fmt_ratio(b['ratios'].get('2 threads/1 thread', []))} | "
                     f"{fmt_ratio(cx)} | {fmt_ratio(vs_copy)} | {cb} | {fmt_load(b)} |")
    return lines


def _per_s(xs, what):
    """``what`` per second: the median and the range over rounds, from ns per operation."""
    return f"{1e9 / med(xs):,.0f} {what}/s (rounds {1e9 / max(xs):,.0f}..{1e9 / min(xs):,.0f})"


def vm_markdown(b):
    """The Vm.fault workload (the headline, with the cache) and, from the same rounds, the same
    workload with the fault cache off and the first-fault workload; the cache hit rate."""
    ns, r = b["ns_per_elem"], b.get("ratios", {})
    xs = ns["core"]
    if not xs:
        return [f"{b['elements']:,} random operations on an SNP VM: not timed."]
    out = [f"{b['elements']:,} random operations on an SNP VM (faults, 1 in 64 a conversion, "
           f"1 in 256 a punch hole): median {1e9 / med(xs):,.0f} operations/s over "
           f"{len(xs)} rounds (min {1e9 / max(xs):,.0f}, max {1e9 / min(xs):,.0f}); other CPUs / "
           f"CPU pressure / loadavg {fmt_load(b)}."]
    if "cache_hits" in b and b.get("faults"):
        out += ["", f"Fault cache: {b['cache_hits']:,} of the workload's {b['faults']:,} faults "
                f"({100 * b['cache_hits'] / b['faults']:.1f}%) were answered by Vm's fault cache "
                "(a repeated (gpa, error_code) on an unchanged VM; counted on one more, untimed, "
                "run of the same workload)"
                + (", so the headline mostly measures cache hits." if 2 * b["cache_hits"] > b["faults"]
                   else ".")]
    if "no cache" in ns or "first faults" in ns:
        out += ["", "Timed in the same interleaved rounds (headline / this: the headline's "
                "operations/s over this workload's, per round, median [q1..q3]):", ""]
    if "no cache" in ns:
        out.append(f"- the same workload with the fault cache off (every fault walks): "
                   f"{_per_s(ns['no cache'], 'operations')}; headline / this "
                   f"{fmt_ratio(r.get('core/no cache', []))}")
    if "first faults" in ns:
        out.append(f"- first faults only (a fresh VM, each of {b['elements']:,} gfns faulted once: "
                   f"every fault maps a new 4K page; none can hit the cache): "
                   f"{_per_s(ns['first faults'], 'faults')}; headline / this "
                   f"{fmt_ratio(r.get('core/first faults', []))}")
    return out


def rmp_sizes(inter):
    out = []
    for b in inter:
        m = re.fullmatch(r"rmp lookup (\d+)MiB( .+)?", b["group"])
        if m:
            out.append((int(m.group(1)), m.group(2) or "", b))
    return sorted(out, key=lambda x: (x[0], x[1]))


def f2(xs):
    """The median of xs with two decimals, or "-" when there is none."""
    return f"{med(xs):.2f}" if xs else "-"


def rmp_markdown(sizes, other):
    lines = ["| RMP table | lookups | core ns/lookup [q1..q3] | 1 thread ns | no out= ns | numpy ns | "
             "core vs numpy | core vs one numpy gather | core vs reference | "
             "other CPUs (max) / CPU pressure / loadavg |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mib, variant, b in sizes:
        ns, r = b["ns_per_elem"], b["ratios"]
        lo, hi = iqr(ns["core"])
        lines.append(f"| {mib:,} MiB{variant} | {b['elements']:,} | {med(ns['core']):.2f} [{lo:.2f}..{hi:.2f}] | "
                     f"{f2(ns.get('core1t'))} | {f2(ns.get('alloc'))} | {f2(ns.get('numpy'))} | {fmt_ratio(r.get('core/numpy', []))} | "
                     f"{fmt_ratio(r.get('core/gather', []))} | {fmt_ratio(r.get('core/reference', []))} | "
                     f"{fmt_load(b)} |")
    for b in other:
        info = b.get("extra_info", {})
        if (b.get("group") or "").startswith("rmp build") and "seconds" in info:
            lines += ["", f"{b['group']}: {info['seconds']:.2f} s (create {info.get('create_seconds', 0):.4f} s), "
                      f"peak RSS {info.get('peak_rss_bytes', 0) / 2**20:,.0f} MiB for a "
                      f"{info.get('table_bytes', 0) / 2**20:,.0f} MiB table; a copy of the bytes "
                      f"written took {info.get('memcpy_seconds', float('nan')):.3f} s (one run, "
                      "not interleaved)."]
    return lines


def load_scaling(other):
    scaling = defaultdict(list)
    for b in other:
        info = b.get("extra_info", {})
        if info.get("scaling"):
            scaling[info["op"]].append((info["elements"], b["stats"]["median"] / info["elements"] * 1e9))
    for v in scaling.values():
        v.sort()
    return scaling


def scaling_markdown(scaling):
    sizes = sorted({n for v in scaling.values() for n, _ in v})
    lines = ["| operation | " + " | ".join(f"{n:,}" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for op, pts in sorted(scaling.items()):
        d = dict(pts)
        lines.append(f"| {op} | " + " | ".join(f"{d[n]:.2f}" if n in d else "-" for n in sizes) + " |")
    return lines


# ------------------------------------------------------------------ plots
def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def plot_ratios(rows, path):
    plt = _plt()
    rows = [r for r in rows if r["subject"] in ("core1t", "avx2", "portable") and r.get("memcpy")]
    if plt is None or not rows:
        return False
    labels = [r["group"] + ("" if r["subject"] == "core1t" else f" ({r['subject']})") for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(labels) + 1.5))
    for i, (base, color) in enumerate((("memcpy", "tab:blue"), ("numpy", "tab:orange"))):
        meds, err = [], [[], []]
        for r in rows:
            xs = r.get(base, [])
            m = med(xs)
            lo, hi = iqr(xs)
            meds.append(m)
            err[0].append(max(0.0, m - lo) if xs else 0)
            err[1].append(max(0.0, hi - m) if xs else 0)
        ax.barh([k + i * 0.4 for k in range(len(rows))], meds, height=0.4, color=color,
                xerr=err, capsize=2, label=f"vs {base} (median, IQR)")
    ax.set_xscale("log")
    for x, c in ((0.9, "tab:blue"), (0.5, "tab:blue"), (3.0, "tab:orange")):
        ax.axvline(x, color=c, ls=":", lw=1)
    ax.set_yticks([k + 0.2 for k in range(len(rows))])
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("ratio, one library thread vs baseline (median, IQR; log)\n"
                  "dotted: 0.5x and 0.9x the copy, 3x numpy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_scaling(scaling, sizes, path):
    plt = _plt()
    if plt is None or (not scaling and not sizes):
        return False
    fig, axes = plt.subplots(1, 2 if sizes else 1, figsize=(12 if sizes else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for op, pts in sorted(scaling.items()):
        ax.plot([n for n, _ in pts], [1e3 / ns for _, ns in pts], marker="o", label=op)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (elements)")
    ax.set_ylabel("throughput (M elements/s)")
    ax.set_title("throughput against batch size")
    ax.grid(True, which="both", alpha=0.3)
    if scaling:
        ax.legend(fontsize=7)
    if sizes:
        ax = axes[0][1]
        plain = [(m, b) for m, v, b in sizes if not v]
        for kind in ("core", "numpy"):
            xs = [m for m, _ in plain]
            ms = [med(b["ns_per_elem"][kind]) for _, b in plain]
            q = [iqr(b["ns_per_elem"][kind]) for _, b in plain]
            ax.errorbar(xs, ms, yerr=[[m - lo for m, (lo, _) in zip(ms, q)], [hi - m for m, (_, hi) in zip(ms, q)]],
                        marker="o", capsize=3, label=kind)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("RMP table size (MiB)")
        ax.set_ylabel("ns per lookup (median, IQR)")
        ax.set_title("RMP random lookup latency against table size")
        ax.axhline(12, color="gray", ls=":", lw=1)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_threads(inter, path):
    """Two-thread speed-up per operation (median, IQR), the 1.8x goal dotted, the two-thread
    copy's speed-up (the bandwidth ceiling) as a black diamond."""
    plt = _plt()
    tb = sorted((b for b in inter if b.get("threads")), key=lambda b: b["group"])
    if plt is None or not tb:
        return False
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(tb) + 1.5))
    xs = [b["ratios"].get("2 threads/1 thread", []) for b in tb]
    ms = [med(x) for x in xs]
    q = [iqr(x) for x in xs]
    ax.barh(range(len(tb)), ms, color=["tab:red" if compute_bound(bandwidth_limit(b), 1.8) else "tab:gray" for b in tb],
            xerr=[[max(0.0, m - lo) for m, (lo, _) in zip(ms, q)], [max(0.0, hi - m) for m, (_, hi) in zip(ms, q)]],
            capsize=3)
    ax.axvline(1.8, color="tab:red", ls=":", lw=1)
    cs = [(i, med(c)) for i, c in enumerate(thread_ceiling(b) for b in tb) if c]
    if cs:
        ax.plot([c for _, c in cs], [i for i, _ in cs], "kD", ms=6)
    ax.set_yticks(range(len(tb)))
    ax.set_yticklabels([b.get("op", b["group"]) for b in tb], fontsize=8)
    ax.set_xlabel("speed-up t(1 thread) / t(2 threads), median [IQR]; red: compute-bound (goal 1.8x)"
                  "\n◆ two-thread copy speed-up (bandwidth ceiling)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# ------------------------------------------------------------------ main
def render(data, inter, other):
    tl = targets(inter)
    la, (oc_avg, oc_max) = load_summary(inter)
    psi = pressure([r for b in inter for r in b.get("load", [])])
    n_batch = max((b.get("n_batch", 0) for b in inter), default=0)
    mi = data.get("machine_info", {})
    md = ["# pykvmmu benchmark report", "",
          f"Run {data.get('datetime', '?')} on {mi.get('cpu', {}).get('brand_raw', mi.get('processor', '?'))}, "
          f"{os.cpu_count()} CPUs; batch size {n_batch:,} elements; "
          f"{max((b.get('rounds', 0) for b in inter), default=0)} interleaved rounds per batch group.", "",
          "Outside load during the measured rounds (other processes' CPU use in cores: the "
          "machine's busy time from /proc/stat minus this process's CPU time, per round): "
          f"{oc_avg:.2f} on average" + (f", max {oc_max:.2f} over rounds of 0.2 s or more" if oc_max
                                        is not None else "")
          + f"; CPU pressure (PSI: share of the time some runnable task waited for a CPU) "
          f"{100 * psi:.0f}%; 1-minute loadavg median {med(la):.2f}, max "
          f"{max(la) if la else float('nan'):.2f}.  "
          "Ratios measured while other processes used a large share of the cores are not the "
          "library's figures.", "",
          "Ratios: baseline time / library time per element, median of the per-round ratios "
          "[q1..q3]; > 1 means the library is faster.", "",
          "A memory-bound operation cannot run much faster than a copy moving the same bytes, "
          "and per round its ratio to numpy is (numpy time / copy time) x its ratio to the copy: "
          "each \">= Nx numpy\" target line therefore gives the copy-speed ceiling, the median "
          "of the per-round numpy/copy time ratios of the same rounds, i.e. the score the library "
          "would get running at exactly the copy's speed.  A goal above its ceiling is marked "
          "\"(above the copy-speed ceiling Cx)\" but is judged like any other: met or NOT met "
          "from the measured median alone.", "",
          "## Targets (issue 14)", ""]
    met = sum(1 for *_, ok, _ in tl if ok)
    unjudged = sum(1 for *_, ok, _ in tl if ok is None)
    md += [f"{met} of {len(tl) - unjudged} target lines met"
           + (f" ({unjudged} not judged: a goal for compute-bound batches on a batch memory-bound "
              "in this run)" if unjudged else "")
           + " (scalar calls summarised below; each is marked in the scalar table).", ""]
    for b, t, ok, text in sorted((x for x in tl if not x[0].get("scalar")), key=lambda x: x[0]["group"]):
        md.append(f"- [{mark(ok)}] {text}")
    md += scalar_target_lines(tl)
    rows = batch_rows(inter)
    md += ["", "## Batch operations", "", *batch_markdown(rows), ""]
    if any(b.get("scalar") for b in inter):
        md += ["## Scalar calls (ns per call, loop included)", "", *scalar_markdown(inter, tl), ""]
    if any(b.get("threads") for b in inter):
        md += ["## Two threads on the two halves vs one thread on all (GIL released)", "",
               "The same rounds time a copy of the operation's bytes (input + output per element) "
               "by one thread and by two threads on the two halves: the copy's two-thread "
               "speed-up is the bandwidth ceiling, what two threads gain on an operation already "
               "running at one thread's copy speed (\"1 thread vs 1-thread copy\" near 1x; one at r x "
               "the copy's speed can gain up to about ceiling / r).  The bandwidth limit of an "
               "operation is the median over rounds of ceiling / min(r, 1): an operation slower "
               "than the copy can gain up to the two-thread copy's speed, one at or past the "
               "copy's speed (streaming stores) what the bandwidth gains.  "
               "The 1.8x goal is issue 14's for compute-bound batches: an operation is "
               "compute-bound when its limit reaches 1.8x; one whose limit is under it is "
               "memory-bound in that run and its line is not judged (the speed-up and the share of "
               "the limit it reaches are given).  A goal above the two-thread copy ceiling is "
               "marked \"(above the two-thread copy ceiling Cx)\" and judged from the measured "
               "median alone.", "",
               *threads_markdown(inter), ""]
    for b in (b for b in inter if b.get("workload")):
        md += ["## Vm.fault workload", "", *vm_markdown(b), ""]
    sizes = rmp_sizes(inter)
    if sizes:
        md += ["## RMP random lookup latency against table size", "", *rmp_markdown(sizes, other), ""]
    scaling = load_scaling(other)
    if scaling:
        md += ["## Scaling: ns per element against batch size (pytest-benchmark median, not "
               "interleaved)", "", *scaling_markdown(scaling), ""]
    return "\n".join(md) + "\n", rows, scaling, sizes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="?", default="bench/report/results.json")
    ap.add_argument("--out", default="bench/report")
    a = ap.parse_args(argv)
    data, inter, other = load(a.json)
    text, rows, scaling, sizes = render(data, inter, other)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "REPORT.md"), "w") as f:
        f.write(text)
    print(text)
    wrote = [os.path.join(a.out, "REPORT.md")]
    for fn, args, name in ((plot_ratios, (rows,), "ratios.png"), (plot_scaling, (scaling, sizes), "scaling.png"),
                           (plot_threads, (inter,), "threads.png")):
        p = os.path.join(a.out, name)
        if fn(*args, p):
            wrote.append(p)
    print("wrote " + ", ".join(wrote) + ("" if len(wrote) > 1 else " (install matplotlib for the PNG plots)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
