"""Scaling curves: throughput of the main batch operations against batch size (1 to 16M).

Each point is its own group ``scaling <op> n=<size>`` (kind ``core``, extra_info ``op`` and
``scaling=True``); bench/report.py draws throughput (elements/s) against n per operation in
``bench/report/scaling.png``: the knee is where per-call overhead (argument checks, the cffi
call, array allocation) stops mattering.  Sizes above PYKVMMU_BENCH_N are skipped.
"""
import numpy as np
import pytest

from conftest import N

from pykvmmu import mmio as M
from pykvmmu import role as R
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig

SIZES = [n for n in (1, 16, 256, 4096, 65536, 1 << 20, 1 << 24) if n <= max(N, 1)]
CFG = MmuConfig.ept()
_DATA = {}


def _data(n):
    """Input arrays of n elements, built once per size (largest first freed by the next)."""
    if n not in _DATA:
        if len(_DATA) > 1:
            _DATA.pop(max(_DATA))
        rng = np.random.default_rng(n)
        pfns = rng.integers(0, 1 << 30, n, dtype=np.uint64)
        sptes = S.make_spte_batch(CFG, pfns)
        gens = rng.integers(0, 1 << 19, n, dtype=np.uint64)
        _DATA[n] = dict(pfns=pfns, sptes=sptes, gens=gens, out64=np.empty(n, np.uint64),
                        outb=np.empty(n, np.bool_), outdec=np.empty(n, S.DECODE_DTYPE),
                        out32=np.empty(n, np.uint32))
    return _DATA[n]


def _ops():
    return {
        "spte.make_spte_batch": lambda d: S.make_spte_batch(CFG, d["pfns"], out=d["out64"]),
        "spte.predicate_batch": lambda d: S.predicate_batch(CFG, "is_shadow_present_pte", d["sptes"],
                                                            out=d["outb"]),
        "spte.decode_batch": lambda d: S.decode_batch(CFG, d["sptes"], out=d["outdec"]),
        "mmio.make_mmio_spte_batch": lambda d: M.make_mmio_spte_batch(CFG, d["pfns"], 7, d["gens"],
                                                                      out=d["out64"]),
        "mmio.check_mmio_spte_batch": lambda d: M.check_mmio_spte_batch(CFG, d["sptes"], 5,
                                                                        out=d["outb"]),
        "role.hash_batch": lambda d: R.hash_batch(d["pfns"], out=d["out32"]),
    }




@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n{n}")
@pytest.mark.parametrize("op", list(_ops()))
def test_scaling(benchmark, op, n):
    d = _data(n)
    fn = _ops()[op]
    try:
        fn(d)
    except TypeError:                          # an op without out=: let it allocate
        pytest.skip(f"{op} takes no out= array")
    benchmark.group = f"scaling {op} n={n}"
    benchmark.extra_info.update(kind="core", elements=n, op=op, scaling=True)
    # enough calls per round that the timer resolution does not matter at small n
    iters = max(1, min(20000, (1 << 16) // n))
    benchmark.pedantic(fn, args=(d,), rounds=5 if n < (1 << 20) else 3, iterations=iters,
                       warmup_rounds=1)


def test_release_scaling_data():
    _DATA.clear()
