"""Shared benchmark helpers: sizes, the baseline kinds and a uniform way to register a case.

Every case sets ``benchmark.group`` and ``extra_info`` (kind, elements); bench/report.py
turns a run into ratios against the baselines of the same group.
"""
import os

import numpy as np
import pytest

#: Batch size of the main benchmarks (16M entries; PYKVMMU_BENCH_N shrinks it for a quick look).
N = int(os.environ.get("PYKVMMU_BENCH_N", 16 * 1024 * 1024))
#: Elements the pure-Python reference is timed on (its ratio is per element).
REF_N = int(os.environ.get("PYKVMMU_BENCH_REF_N", 20000))
KINDS = ("core", "core1t", "memcpy", "numpy", "reference")
#: The core is timed twice per group: ``core`` as called by default (large batches split
#: over the CPUs, pykvmmu._par) and ``core1t`` on one thread (threads=1).
CORE_THREADS = {"core": None, "core1t": 1}
core_kinds = pytest.mark.parametrize("core", list(CORE_THREADS))


def bench(benchmark, group, kind, elements, fn, *args, rounds=5, **kwargs):
    """Time ``fn(*args, **kwargs)`` as one case of ``group``; returns its result."""
    assert kind in KINDS, kind
    benchmark.group = group
    benchmark.extra_info.update(kind=kind, elements=int(elements))
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=rounds, iterations=1,
                              warmup_rounds=1)


def memcpy_case(benchmark, group, nbytes, elements):
    """The memcpy baseline: np.copyto of ``nbytes`` (the bytes the operation reads or writes)."""
    src = np.ones(nbytes // 8, dtype=np.uint64)
    dst = np.empty_like(src)
    bench(benchmark, group, "memcpy", elements, np.copyto, dst, src)


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(2026)
