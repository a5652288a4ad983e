"""CLI: ``pykvmmu fuzz TARGET --time 60``, ``pykvmmu fuzz kernel --time 600`` (the live kernel, root),
``pykvmmu fuzz --replay FILE``, ``pykvmmu fuzz --list``."""
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
  sudo pykvmmu fuzz kernel --time 600       guests on this host's /dev/kvm, recorded and audited
  pykvmmu fuzz --replay fuzz-crashes/kernel-audit-0000002a-00017.kvmcap
                                            re-audit offline; rerun live where root + /dev/kvm + tracefs
A failure is shrunk and written to --out (default fuzz-crashes/) as raw bytes plus a .txt
with the message and traceback (kernel: the capture with guest.json plus a .txt with the
evidence); the exit status is 1 when anything failed.
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
    p.add_argument("target", nargs="?", help="a target name (see --list), 'all', or 'kernel' (the live kernel)")
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
    p.add_argument("--shrink", type=float, default=20.0, metavar="SECONDS",
                   help="kernel: time to shrink each finding's guest (default 20, 0: keep it as found)")
    p.add_argument("--offline", action="store_true",
                   help="kernel --replay: only re-audit the stored capture, do not rerun the guest")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def _is_capture(path: str) -> bool:
    return path.endswith((".kvmcap", ".tar")) or path.endswith(".tar.gz")


def _replay(args, F) -> int:
    """--replay: kernel reproducers (captures) are re-judged by kfuzz, byte inputs by the
    targets' replay; a directory may hold both."""
    from . import kfuzz as KF
    path = args.replay
    if not os.path.exists(path):
        print(f"pykvmmu fuzz: --replay {path}: no such file or directory", file=sys.stderr)
        return 2
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        kernel = any(_is_capture(n) for n in names)
        other = [n for n in names if not _is_capture(n) and not n.endswith((".txt", ".orig.json"))
                 and args.target != "kernel"]
    else:
        kernel = args.target == "kernel" or _is_capture(path)
        other = [] if kernel else [path]
    rc = 0
    if kernel:
        rc = KF.replay(path, offline_only=args.offline)
    for n in other:
        p = os.path.join(path, n) if os.path.isdir(path) else n
        try:
            fail = F.replay(p, args.target)
        except KeyError as e:
            print(f"pykvmmu fuzz: {e.args[0]}", file=sys.stderr)
            return 2
        rc = max(rc, 1 if fail else 0)
    return rc


def run(args) -> int:
    from .. import fuzz as F
    if args.list:
        for name, t in F.TARGETS.items():
            kind = "stateful" if t.stateful else "stateless"
            print(f"{name:8s} ({kind}) {t.doc}\n")
            print(f"{'':8s}  seed corpus: {len(F.load_corpus(name, args.corpus))} files")
        from .. import kfuzz
        from .kfuzz import corpus_dir
        print(f"{'kernel':8s} (live, root) guest descriptions run on this host's /dev/kvm under the "
              f"recorder, every capture audited (pykvmmu.audit); not part of 'all'\n")
        print(f"{'':8s}  seed corpus: {len(kfuzz.load_corpus(corpus_dir(args.corpus)))} guest descriptions")
        return 0
    if args.replay:
        return _replay(args, F)
    if args.target == "kernel":
        from . import kfuzz as KF
        if args.engine not in ("auto", "random"):
            print(f"pykvmmu fuzz kernel: --engine {args.engine}: the kernel target has its own "
                  "generator (corpus, mutants, random guests)", file=sys.stderr)
            return 2
        why = _writable_dir(args.out)
        if why:
            print(f"pykvmmu fuzz: --out {args.out}: {why}", file=sys.stderr)
            return 2
        return KF.run(args)
    if not args.target:
        print("pykvmmu fuzz: name a target (or 'all'); pykvmmu fuzz --list shows them",
              file=sys.stderr)
        return 2
    if args.corpus is not None and not os.path.isdir(args.corpus):
        print(f"pykvmmu fuzz: --corpus {args.corpus}: not a directory", file=sys.stderr)
        return 2
    for opt, d in (("--out", args.out), ("--save-corpus", args.save_corpus)):
        why = _writable_dir(d) if d is not None else None
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
