"""CLI: ``pykvmmu fuzz kernel --time N`` (alias ``pykvmmu fuzz-kernel``): guests on /dev/kvm under
the recorder, every capture audited; ``pykvmmu fuzz --replay REPRO.kvmcap`` re-judges a reproducer."""
from __future__ import annotations

import os
import signal
import sys

from .record import _raise_interrupt

DOC = ("Run guest descriptions (the seed corpus, mutants of it, random ones) on /dev/kvm under "
       "the recorder and audit every capture (root). Findings (a guest that did not reach its "
       "HLT, lost events, audit disagreements) are written to --out as a capture holding "
       "guest.json (the reproducer) and a .txt with the evidence; exit status 1 if any.")


def register(sub) -> None:
    p = sub.add_parser("fuzz-kernel", help="alias of 'pykvmmu fuzz kernel' (root)", description=DOC)
    p.add_argument("--time", type=float, default=60.0, metavar="SECONDS", help="time budget (default 60)")
    p.add_argument("--runs", type=int, default=None, metavar="N", help="stop after N guests")
    p.add_argument("--seed", type=int, default=None, help="seed of the guest generator")
    p.add_argument("--out", default="fuzz-crashes", metavar="DIR", help="where findings go (default fuzz-crashes/)")
    p.add_argument("--keep-going", action="store_true", help="do not stop at the first finding")
    p.add_argument("--shrink", type=float, default=20.0, metavar="SECONDS",
                   help="time to shrink each finding's guest (default 20, 0: keep it as found)")
    p.add_argument("--corpus", default=None, metavar="DIR",
                   help="seed descriptions (*.json; default the shipped pykvmmu/data/kernel_corpus)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


class _Status:
    """The progress line on stderr when it is a terminal, at most every 0.5 s."""

    def __init__(self, quiet: bool = False, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.on = not quiet and self.stream.isatty()
        self.last = 0.0

    def __call__(self, st) -> None:
        import time
        now = time.monotonic()
        if self.on and now - self.last >= 0.5:
            self.last = now
            self.stream.write("\r\033[K" + st.line())
            self.stream.flush()

    def clear(self) -> None:
        if self.on:
            self.stream.write("\r\033[K")
            self.stream.flush()


def corpus_dir(root: str | None) -> str | None:
    """``--corpus DIR``: DIR/kernel when it exists (a corpus root of one directory per target), else DIR."""
    if root is None:
        return None
    sub = os.path.join(root, "kernel")
    return sub if os.path.isdir(sub) else root


def run(args) -> int:
    """Run the kernel fuzzer with ``args`` (time, runs, seed, out, keep_going, shrink, corpus,
    quiet) and print the summary, the per-check table and the coverage."""
    from .. import kfuzz
    from ..errors import PykvmmuError
    why = kfuzz.live_unavailable()
    if why:
        print(f"pykvmmu fuzz kernel: cannot run guests here: {why}", file=sys.stderr)
        return 2
    status = _Status(getattr(args, "quiet", False))
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)    # SIGTERM: like Ctrl-C
    try:
        st = kfuzz.fuzz_kernel(args.time, runs=args.runs, seed=args.seed, out_dir=args.out,
                               keep_going=args.keep_going, shrink_s=getattr(args, "shrink", 20.0),
                               progress=status, corpus=corpus_dir(getattr(args, "corpus", None)))
    except PykvmmuError as e:
        status.clear()
        print(f"pykvmmu fuzz kernel: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, old_term)
    status.clear()
    print(st.line(), file=sys.stderr)
    print(f"seed {st.seed}: {st.from_corpus} corpus, {st.mutants} mutants, {st.random} random guests in "
          f"{st.elapsed:.1f}s; {st.records} trace records read"
          + ("" if st.audit else " (pykvmmu.audit absent: traces not audited)")
          + (" (interrupted)" if st.interrupted else ""))
    for name, why in st.skipped:
        print(f"corpus {name}: skipped on this host: {why}")
    if st.total is not None:
        print("\n" + st.total.format_table(20))
    print("\n" + st.coverage.table())
    for f in st.findings:
        print(f"finding {f.kind}: {f.message}\n  reproducer: {f.path}")
    if st.interrupted:
        from ..cli import EXIT_INTERRUPTED
        return EXIT_INTERRUPTED
    return 1 if st.findings else 0


def replay(path: str, offline_only: bool = False) -> int:
    """``pykvmmu fuzz --replay`` of kernel reproducers: 1 when a finding still shows, else 0."""
    from .. import kfuzz
    res = kfuzz.replay_kernel(path, live=False if offline_only else None)
    if not res:
        print(f"pykvmmu fuzz: {path}: no kernel reproducers (*.kvmcap)", file=sys.stderr)
        return 2
    return 1 if any(r.still_fails for r in res) else 0
