"""The three engines that drive a target: the built-in mutational one, hypothesis and
atheris (libFuzzer), with the progress line and run statistics."""
from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from ..errors import InputError
from .base import FuzzInput, get_target
from .corpus import corpus_dir, load_corpus, write_reproducer
from .shrinker import run_one, shrink


def _budget(seconds, max_execs) -> None:
    import math
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
            not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"seconds={seconds!r}: must be a finite number of seconds >= 0")
    if max_execs is not None and (isinstance(max_execs, bool) or not isinstance(max_execs, int)
                                  or max_execs < 1):
        raise InputError(f"max_execs={max_execs!r}: must be None or an integer >= 1")


# ---------------------------------------------------------------------- progress
class Progress:
    """The status line: executions, executions per second, corpus size, crashes (stderr)."""

    def __init__(self, name: str, engine: str, stream=None, interval: float = 1.0, quiet=False):
        self.name, self.engine = name, engine
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.last = self.t0
        self.interval = interval
        self.quiet = quiet
        self.execs = 0

    def tick(self, corpus: int, crashes: int, features: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < self.interval):
            return
        self.last = now
        el = max(now - self.t0, 1e-9)
        print(f"[{self.name}/{self.engine}] #{self.execs} exec/s {self.execs / el:.0f} "
              f"corpus {corpus} features {features} crashes {crashes} time {el:.0f}s",
              file=self.stream, flush=True)


# ---------------------------------------------------------------------- engine: random
def _mutate(rng: random.Random, data: bytes, corpus: list, max_len: int) -> bytes:
    b = bytearray(data)
    for _ in range(1 + rng.randrange(4)):
        k = rng.randrange(9)
        if not b or k == 0:                          # insert random bytes
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif k == 1:                                 # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif k == 2:                                 # random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif k == 3:                                 # interesting byte
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x3F, 0x40))
        elif k == 4:                                 # delete a range
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif k == 5:                                 # duplicate a range
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 16))
            b[i:i] = b[i:j]
        elif k == 6 and corpus:                      # splice with another corpus entry
            o = rng.choice(corpus)
            if o:
                i = rng.randrange(len(b))
                j = rng.randrange(len(o))
                b = b[:i] + o[j:]
        elif k == 7:                                 # add/sub a small delta
            i = rng.randrange(len(b))
            b[i] = (b[i] + rng.choice((-2, -1, 1, 2))) & 0xFF
        else:                                        # fresh random tail
            i = rng.randrange(len(b))
            b[i:] = rng.randbytes(rng.randint(1, 32))
    return bytes(b[:max_len])


@dataclass
class RunStats:
    target: str
    engine: str
    execs: int = 0
    seconds: float = 0.0
    corpus: int = 0
    features: int = 0
    failures: list = field(default_factory=list)
    interrupted: bool = False          # stopped by Ctrl-C (the counts are those reached)

    @property
    def rate(self) -> float:
        return self.execs / self.seconds if self.seconds else 0.0


def fuzz_random(name: str, *, seconds: float = 60.0, max_execs: Optional[int] = None, seed=None,
                corpus_root: Optional[str] = None, out_dir: str = "fuzz-crashes",
                save_corpus: Optional[str] = None, stop_on_failure: bool = True,
                shrink_budget: float = 10.0, quiet: bool = False, emit=None) -> RunStats:
    """The built-in mutational engine: mutate corpus entries, keep inputs with new features."""
    t = get_target(name)
    _budget(seconds, max_execs)
    rng = random.Random(seed)
    emit = emit or (lambda s: print(s, file=sys.stderr, flush=True))
    corpus = load_corpus(name, corpus_root) or [b""]
    seen: set = set()
    stats = RunStats(name, "random")
    prog = Progress(name, "random", quiet=quiet)
    sigs: set = set()

    def execute(data):
        feats, fail = run_one(t, data)
        prog.execs += 1
        stats.execs += 1
        if fail is not None:
            if fail.signature not in sigs:
                sigs.add(fail.signature)
                small = shrink(t, fail, shrink_budget)
                path = write_reproducer(small, name, out_dir)
                stats.failures.append((small, path))
                emit(f"[{name}] {small.kind}: {small.message.splitlines()[0][:300]}\n"
                     f"[{name}] reproducer ({len(small.data)} bytes): {path}\n"
                     f"[{name}] replay: pykvmmu fuzz --replay {path}")
            return False
        new = feats - seen
        if new:
            seen.update(new)
            return True
        return False

    t0 = time.monotonic()
    try:
        for d in list(corpus):
            execute(d)
        while True:
            el = time.monotonic() - t0
            if el >= seconds or (max_execs is not None and stats.execs >= max_execs):
                break
            if stats.failures and stop_on_failure:
                break
            if rng.random() < 0.05:
                data = rng.randbytes(rng.randint(1, t.max_len))
            else:
                data = _mutate(rng, rng.choice(corpus), corpus, t.max_len)
            if execute(data) and len(corpus) < 4096:
                corpus.append(data)
                if save_corpus:
                    os.makedirs(save_corpus, exist_ok=True)
                    with open(os.path.join(save_corpus, hashlib.sha1(data).hexdigest()[:16]),
                              "wb") as f:
                        f.write(data)
            prog.tick(len(corpus), len(stats.failures), len(seen))
    except KeyboardInterrupt:
        stats.interrupted = True
    return _finish(stats, prog, t0, corpus, seen)


def _finish(stats: RunStats, prog, t0: float, corpus: list, seen: set) -> RunStats:
    """An engine's closing figures (also after Ctrl-C) and its last progress line."""
    stats.seconds = time.monotonic() - t0
    stats.corpus, stats.features = len(corpus), len(seen)
    prog.tick(len(corpus), len(stats.failures), len(seen), force=True)
    return stats


# ---------------------------------------------------------------------- engine: hypothesis
def fuzz_hypothesis(name: str, *, seconds: float = 60.0, max_execs: Optional[int] = None,
                    seed=None, out_dir: str = "fuzz-crashes", quiet: bool = False,
                    emit=None, corpus_root: Optional[str] = None, **_ignored) -> RunStats:
    """hypothesis drives the target with ``st.binary()`` (seeded with the corpus) in rounds
    until the time is up; a failure is shrunk by hypothesis, then by :func:`shrink`."""
    try:
        import hypothesis  # noqa: F401
    except ImportError:  # pragma: no cover - hypothesis is a test extra
        raise RuntimeError("the hypothesis engine needs hypothesis: pip install 'pykvmmu[test]'") from None
    t = get_target(name)
    _budget(seconds, max_execs)
    emit = emit or (lambda s: print(s, file=sys.stderr, flush=True))
    stats = RunStats(name, "hypothesis")
    prog = Progress(name, "hypothesis", quiet=quiet)
    seen: set = set()
    smallest: list = []
    corpus = load_corpus(name, corpus_root)
    t0 = time.monotonic()
    rnd = random.Random(seed)

    def body(data):
        prog.execs += 1
        stats.execs += 1
        feats, fail = run_one(t, data)
        if fail is not None:
            if not smallest or (len(fail.data), fail.data) < (len(smallest[0].data), smallest[0].data):
                smallest[:] = [fail]
            raise AssertionError(fail.message)
        seen.update(feats)
        prog.tick(len(corpus), len(stats.failures), len(seen))

    try:
        _hypothesis_rounds(t, name, body, corpus, smallest, stats, seconds, max_execs, t0, rnd,
                           out_dir, emit)
    except KeyboardInterrupt:
        stats.interrupted = True
    return _finish(stats, prog, t0, corpus, seen)


def _hypothesis_rounds(t, name, body, corpus, smallest, stats, seconds, max_execs, t0, rnd,
                       out_dir, emit):
    """fuzz_hypothesis's loop: rounds of 100 examples until time, runs or a failure."""
    from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st
    rounds = 0
    while time.monotonic() - t0 < seconds and (max_execs is None or stats.execs < max_execs):
        rounds += 1
        n = 100 if max_execs is None else max(1, min(100, max_execs - stats.execs))
        test = given(st.binary(max_size=t.max_len))(body)
        if rounds == 1:
            for d in corpus[:20]:
                test = example(d)(test)
        test = settings(max_examples=n, deadline=None, database=None, derandomize=False,
                        suppress_health_check=list(HealthCheck),
                        phases=[Phase.explicit, Phase.generate, Phase.shrink])(test)
        test = _seeded(test, rnd.getrandbits(64))
        try:
            test()
        except AssertionError:
            if smallest:
                small = shrink(t, smallest[0], 5.0)
                path = write_reproducer(small, name, out_dir)
                stats.failures.append((small, path))
                emit(f"[{name}] {small.kind}: {small.message.splitlines()[0][:300]}\n"
                     f"[{name}] reproducer ({len(small.data)} bytes): {path}\n"
                     f"[{name}] replay: pykvmmu fuzz --replay {path}")
            break


def _seeded(test, s):
    from hypothesis import seed as hseed
    return hseed(s)(test)


# ---------------------------------------------------------------------- engine: atheris
ATHERIS_HINT = ("atheris is not installed. Install it with: pip install 'pykvmmu[fuzz]' "
                "(or pip install atheris; it needs clang with libFuzzer). For coverage of the C "
                "core build it instrumented: fuzz/build-fuzz-core.sh (see fuzz/README.md). "
                "Without atheris, use the built-in engine: --engine random.")


def fuzz_atheris(name: str, *, seconds: float = 60.0, max_execs: Optional[int] = None,
                 corpus_root: Optional[str] = None, out_dir: str = "fuzz-crashes",
                 extra_args=(), **_ignored):  # pragma: no cover - needs atheris
    """Coverage-guided libFuzzer through atheris (never returns: libFuzzer exits)."""
    try:
        import atheris
    except ImportError:
        raise RuntimeError(ATHERIS_HINT) from None
    t = get_target(name)
    # The CLI has already imported the engines, so instrument what is loaded (Python-side
    # coverage); the C core's coverage comes from the clang build (fuzz/build-fuzz-core.sh).
    from .. import config, mmio, private, rmp, role, spte, vm  # noqa: F401
    from ..ref import mmio as _rm, private as _rp, rmp as _rr, role as _rl, spte as _rs  # noqa: F401
    atheris.instrument_all()

    def one(data: bytes) -> None:
        fi = FuzzInput(data)
        t.fn(fi)

    os.makedirs(out_dir, exist_ok=True)
    args = [sys.argv[0], f"-max_total_time={int(seconds)}", f"-max_len={t.max_len}",
            f"-artifact_prefix={os.path.join(out_dir, name + '-')}", "-print_final_stats=1"]
    if max_execs:
        args.append(f"-runs={max_execs}")
    args += list(extra_args)
    # libFuzzer writes new units into the first corpus directory: a scratch one under
    # out_dir, never the seed corpus kept in the repository (read as the second).
    work = os.path.join(out_dir, f"corpus-{name}")
    os.makedirs(work, exist_ok=True)
    args.append(work)
    d = corpus_dir(name, corpus_root)
    if os.path.isdir(d):
        args.append(d)
    atheris.Setup(args, one)
    atheris.Fuzz()
