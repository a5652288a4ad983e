"""One command for the whole benchmark suite and its report.

    python bench/run.py                    # pytest bench/ --benchmark-only, then bench/report.py
    python bench/run.py --quick            # PYKVMMU_BENCH_N=1M (a quick look)
    python bench/run.py -k scaling         # extra arguments go to pytest

Writes bench/report/results.json (pytest-benchmark), bench/report/REPORT.md (target lines
met / not met; every ratio as the median [q1..q3] of interleaved rounds with the outside load;
scalar calls; two-thread speed-ups; RMP lookup latency by table size; scaling curves),
bench/report/ratios.png, threads.png and scaling.png (with matplotlib: pip install matplotlib).
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="PYKVMMU_BENCH_N=1048576 (default 16M)")
    ap.add_argument("--n", type=int, default=None, help="batch size of the main benchmarks")
    ap.add_argument("--out", default=os.path.join(HERE, "report"), help="report directory")
    ap.add_argument("--report-only", action="store_true", help="re-render the report from results.json")
    a, rest = ap.parse_known_args(argv)
    env = dict(os.environ)
    if a.quick:
        env.setdefault("PYKVMMU_BENCH_N", str(1 << 20))
    if a.n:
        env["PYKVMMU_BENCH_N"] = str(a.n)
    os.makedirs(a.out, exist_ok=True)
    results = os.path.join(a.out, "results.json")
    if not a.report_only:
        cmd = [sys.executable, "-m", "pytest", os.path.join(HERE), "--benchmark-only",
               f"--benchmark-json={results}", "-p", "no:cacheprovider", "-q", *rest]
        print("+", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        if rc not in (0, 5) or not os.path.exists(results):
            print(f"bench/run.py: pytest failed (exit {rc})", file=sys.stderr)
            return rc or 1
    return subprocess.call([sys.executable, os.path.join(HERE, "report.py"), results, "--out", a.out],
                           cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
