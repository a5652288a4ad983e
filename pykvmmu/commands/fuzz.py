"""CLI: ``pykvmmu fuzz TARGET --time 60``, ``pykvmmu fuzz --replay FILE``, ``pykvmmu fuzz --list``."""
from __future__ import annotations

import argparse
import math
import os
import sys

from ._args import positive_int

EPILOG = """\
examples:
  pykvmmu fuzz --list                       the targets and what each checks
  pykvmmu fuzz spte --time 60               built-in engine, progress on stderr
  pykvmmu fuzz all --time 5                 every target for 5 s each
  pykvmmu fuzz rmp --engine hypothesis      hypothesis drives (default for rmp and vm)
  pykvmmu fuzz spte --engine atheris        coverage-guided libFuzzer (pip install 'pykvmmu[fuzz]')
  pykvmmu fuzz --replay fuzz-crashes/spte-disagreement-0123abcd.bin
  pykvmmu fuzz --replay DIR                 every file of a directory
A failure is shrunk and written to --out (default fuzz-crashes/) as raw bytes plus a .txt
with the message and traceback; the exit status is 1 when anything failed.
"""


def _seconds(text: str) -> float:
    """argparse type: a finite time budget > 0 seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds > 0")
    return v


def _writable_dir(path: str) -> str | None:
    """Why ``path`` cannot hold files (None when it exists as, or can be created as, a directory)."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        return f"{p} is not a directory"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def register(sub) -> None:
    p = sub.add_parser("fuzz", help="fuzz the C core against the reference (see --list)",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="a target name (see --list) or 'all'")
    p.add_argument("--time", type=_seconds, default=60.0, metavar="SECONDS",
                   help="time budget per target (default 60)")
    p.add_argument("--runs", type=positive_int, default=None, metavar="N",
                   help="stop after N executions per target")
    p.add_argument("--engine", default="auto", choices=("auto", "random", "hypothesis", "atheris"),
                   help="auto: hypothesis for stateful targets, the built-in random engine otherwise")
    p.add_argument("--seed", type=int, default=None, help="seed of the built-in engine")
    p.add_argument("--corpus", default=None, metavar="DIR",
                   help="corpus root holding one directory per target (default: the seed corpus shipped in the package, pykvmmu/data/fuzz_corpus)")
    p.add_argument("--save-corpus", default=None, metavar="DIR",
                   help="write inputs that found new features to DIR (random engine)")
    p.add_argument("--out", default="fuzz-crashes", metavar="DIR",
                   help="where reproducers are written (default fuzz-crashes/)")
    p.add_argument("--keep-going", action="store_true",
                   help="do not stop at the first failure (random engine)")
    p.add_argument("--replay", metavar="FILE", help="replay a reproducer or corpus file (or a directory)")
    p.add_argument("--list", action="store_true", help="list the targets")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import fuzz as F
    if args.list:
        for name, t in F.TARGETS.items():
            kind = "stateful" if t.stateful else "stateless"
            print(f"{name:8s} ({kind}) {t.doc}\n")
            print(f"{'':8s}  seed corpus: {len(F.load_corpus(name, args.corpus))} files")
        return 0
    if args.replay:
        try:
            fail = F.replay(args.replay, args.target)
        except KeyError as e:
            print(f"pykvmmu fuzz: {e.args[0]}", file=sys.stderr)
            return 2
        return 1 if fail else 0
    if not args.target:
        print("pykvmmu fuzz: name a target (or 'all'); pykvmmu fuzz --list shows them",
              file=sys.stderr)
        return 2
    if args.corpus is not None and not os.path.isdir(args.corpus):
        print(f"pykvmmu fuzz: --corpus {args.corpus}: not a directory", file=sys.stderr)
        return 2
    for opt, d in (("--out", args.out), ("--save-corpus", args.save_corpus)):
        why = d is not None and _writable_dir(d)
        if why:
            print(f"pykvmmu fuzz: {opt} {d}: {why}", file=sys.stderr)
            return 2
    names = list(F.TARGETS) if args.target == "all" else [args.target]
    for n in names:
        if n not in F.TARGETS:
            print(f"pykvmmu fuzz: unknown target {n!r}; known: {', '.join(F.TARGETS)}, all",
                  file=sys.stderr)
            return 2
    failed = 0
    for n in names:
        t = F.TARGETS[n]
        engine = args.engine
        if engine == "auto":
            engine = "hypothesis" if t.stateful else "random"
        kw = dict(seconds=args.time, max_execs=args.runs, corpus_root=args.corpus, out_dir=args.out,
                  quiet=args.quiet)
        if engine == "atheris":
            try:
                import atheris  # noqa: F401
            except ImportError:
                print(f"pykvmmu fuzz: {F.ATHERIS_HINT}", file=sys.stderr)
                return 2
            F.fuzz_atheris(n, **kw)          # libFuzzer exits the process
            return 0
        if engine == "hypothesis":
            try:
                st = F.fuzz_hypothesis(n, seed=args.seed, **kw)
            except RuntimeError as e:
                print(f"pykvmmu fuzz: {e}", file=sys.stderr)
                return 2
        else:
            st = F.fuzz_random(n, seed=args.seed, save_corpus=args.save_corpus,
                               stop_on_failure=not args.keep_going, **kw)
        print(f"{n}: {engine}: {st.execs} executions in {st.seconds:.1f}s ({st.rate:.0f}/s), "
              f"corpus {st.corpus}, features {st.features}, failures {len(st.failures)}"
              + (" (interrupted)" if st.interrupted else ""))
        for fail, path in st.failures:
            print(f"  {fail.kind}: {fail.message.splitlines()[0][:200]}\n  reproducer: {path}")
        failed += len(st.failures)
        if st.interrupted:
            from ..cli import EXIT_INTERRUPTED
            return EXIT_INTERRUPTED          # Ctrl-C: the summary above, then 128 + SIGINT
    return 1 if failed else 0
