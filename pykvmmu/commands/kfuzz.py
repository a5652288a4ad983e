"""CLI: ``pykvmmu fuzz-kernel --time N``: random guests on /dev/kvm under the recorder, audited."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("fuzz-kernel", help="random guests on /dev/kvm, recorded and audited (root)",
                       description=__doc__ + "\n\nFindings (a guest that did not reach its HLT, lost "
                       "events, audit disagreements) are written to --out as a capture holding "
                       "guest.json (the reproducer) and a .txt report; exit status 1 if any.")
    p.add_argument("--time", type=float, default=60.0, metavar="SECONDS", help="time budget (default 60)")
    p.add_argument("--runs", type=int, default=None, metavar="N", help="stop after N guests")
    p.add_argument("--seed", type=int, default=None, help="seed of the guest generator")
    p.add_argument("--out", default="fuzz-crashes", metavar="DIR", help="where findings go (default fuzz-crashes/)")
    p.add_argument("--keep-going", action="store_true", help="do not stop at the first finding")
    p.add_argument("--shrink", type=float, default=20.0, metavar="SECONDS",
                   help="time to shrink each finding's guest (default 20, 0: keep it as found)")
    p.set_defaults(func=run)


def _status(line: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + line)
        sys.stderr.flush()


def run(args) -> int:
    from ..kfuzz import fuzz_kernel
    st = fuzz_kernel(args.time, runs=args.runs, seed=args.seed, out_dir=args.out, keep_going=args.keep_going,
                     shrink_s=getattr(args, "shrink", 20.0), progress=_status)
    _status("")
    print(f"kernel fuzz: {st.runs} guests, {st.records} trace records in {st.elapsed:.1f}s, "
          f"{len(st.findings)} findings" + ("" if st.audited else " (pykvmmu.audit absent: traces not audited)"),
          file=sys.stderr)
    for f in st.findings:
        print(f"  {f.kind}: {f.message}\n    reproducer: {f.path}", file=sys.stderr)
    return 1 if st.findings else 0
