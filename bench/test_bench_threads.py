"""Two-thread scaling: cffi releases the GIL around every C call, so two Python threads
working on the two halves of a batch should take about half the time of one thread doing
all of it (on a machine with two idle cores).

Group ``threads <op>``: the 1-thread case (kind ``core``, extra_info threads=1) and the
2-thread case (kind ``core``, threads=2), both over the same N elements; bench/report.py
prints the speed-up t(1 thread) / t(2 threads).  Every call passes threads=1, so the
library's own splitting (pykvmmu._par, timed as ``core`` against ``core1t`` in the other
groups) stays out of this measurement.
"""
import threading

import numpy as np
import pytest

from conftest import N

from pykvmmu import mmio as M
from pykvmmu import role as R
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig

CFG = MmuConfig.ept()
_D = {}


def _data():
    if not _D:
        rng = np.random.default_rng(11)
        pfns = rng.integers(0, 1 << 30, N, dtype=np.uint64)
        _D.update(pfns=pfns, sptes=S.make_spte_batch(CFG, pfns), out64=np.empty(N, np.uint64),
                  outb=np.empty(N, np.bool_), outdec=np.empty(N, S.DECODE_DTYPE),
                  out32=np.empty(N, np.uint32))
    return _D


OPS = {
    "spte.make_spte_batch": lambda d, s: S.make_spte_batch(CFG, d["pfns"][s], out=d["out64"][s], threads=1),
    "spte.predicate_batch": lambda d, s: S.predicate_batch(CFG, "is_mmu_writable_spte", d["sptes"][s],
                                                           out=d["outb"][s], threads=1),
    "spte.decode_batch": lambda d, s: S.decode_batch(CFG, d["sptes"][s], out=d["outdec"][s], threads=1),
    "mmio.make_mmio_spte_batch": lambda d, s: M.make_mmio_spte_batch(CFG, d["pfns"][s], 7, 3,
                                                                     out=d["out64"][s], threads=1),
    "role.hash_batch": lambda d, s: R.hash_batch(d["pfns"][s], out=d["out32"][s], threads=1),
}


class _Pair:
    """Two persistent worker threads; run() hands each a half and waits for both."""

    def __init__(self):
        self.go = [threading.Event(), threading.Event()]
        self.done = [threading.Event(), threading.Event()]
        self.job = None
        self.stop = False
        self.err = []
        self.t = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in (0, 1)]
        for t in self.t:
            t.start()

    def _loop(self, i):
        while True:
            self.go[i].wait()
            self.go[i].clear()
            if self.stop:
                return
            try:
                fn, d, s = self.job[i]
                fn(d, s)
            except BaseException as e:  # noqa: BLE001
                self.err.append(e)
            self.done[i].set()

    def run(self, jobs):
        self.job = jobs
        for i in (0, 1):
            self.done[i].clear()
            self.go[i].set()
        for i in (0, 1):
            self.done[i].wait()
        if self.err:
            raise self.err.pop()

    def close(self):
        self.stop = True
        for i in (0, 1):
            self.go[i].set()


@pytest.fixture(scope="module")
def pair():
    p = _Pair()
    yield p
    p.close()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", list(OPS))
def test_threads(benchmark, pair, op, threads):
    d = _data()
    fn = OPS[op]
    half = N // 2
    benchmark.group = f"threads {op}"
    benchmark.extra_info.update(kind="core", elements=N, op=op, threads=threads)
    if threads == 1:
        benchmark.pedantic(fn, args=(d, slice(0, N)), rounds=5, iterations=1, warmup_rounds=1)
    else:
        jobs = [(fn, d, slice(0, half)), (fn, d, slice(half, N))]
        benchmark.pedantic(pair.run, args=(jobs,), rounds=5, iterations=1, warmup_rounds=1)
    # both halves were computed: the result equals the single-call result
    ref = np.empty_like(d["out64"][:8])
    if op == "spte.make_spte_batch":
        S.make_spte_batch(CFG, d["pfns"][half:half + 8], out=ref)
        assert np.array_equal(ref, d["out64"][half:half + 8])


def test_release_thread_data():
    _D.clear()
