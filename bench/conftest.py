"""Shared benchmark helpers: sizes, the interleaving harness, same-traffic copies, numpy blocks.

Every ratio of the report is measured inside one benchmark by :func:`interleaved`: the
operation and each of its baselines run once per round, in an order that rotates from round
to round, so that they share the machine's state (other processes' load, frequency, cache)
as closely as possible.  The report gives the median of the per-round ratios and their
spread, with the outside load sampled per round next to it.
"""
import os
import time

import numpy as np
import pytest

#: Batch size of the main benchmarks (16M entries; PYKVMMU_BENCH_N shrinks it for a quick look).
N = int(os.environ.get("PYKVMMU_BENCH_N", 16 * 1024 * 1024))
#: Elements the pure-Python reference is timed on (its ratio is per element).
REF_N = int(os.environ.get("PYKVMMU_BENCH_REF_N", 20000))
#: Interleaved rounds per benchmark (each round runs every case once).
ROUNDS = int(os.environ.get("PYKVMMU_BENCH_ROUNDS", 11))
#: Elements per block of the numpy formulations: their temporaries stay in the L2 cache.
CHUNK = int(os.environ.get("PYKVMMU_BENCH_NUMPY_CHUNK", 1 << 16))
#: Subject kinds (the library's own calls): ``core`` = the call with ``out=`` and default
#: threading (batches of 1M+ split over the CPUs, pykvmmu._par), ``core1t`` = with ``out=``
#: and ``threads=1``, ``alloc`` = the default call (no ``out=``, default threading),
#: ``avx2`` / ``portable`` = ``core1t`` on ``MmuConfig._isa_copy(level)`` (the kernels a CPU
#: without AVX-512 / without AVX2 runs; timed where this CPU has more).
SUBJECTS = ("core", "core1t", "alloc", "avx2", "portable")
#: Baseline kinds: a copy of the same bytes, the best plain-numpy formulation, the
#: pure-Python reference (timed on REF_N elements; compared per element).
BASELINES = ("memcpy", "numpy", "reference")
KINDS = SUBJECTS + BASELINES
CORE_THREADS = {"core": None, "core1t": 1}
#: True when the CPU has AVX-512.
try:
    with open("/proc/cpuinfo") as _f:
        HAVE_AVX512 = " avx512f " in _f.read().replace("\n", " ")
except OSError:
    HAVE_AVX512 = False
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ machine load
def _cpu_pressure():
    """Microseconds some runnable task waited for a CPU (PSI, /proc/pressure/cpu; nan without)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1]) / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


def load_sample():
    """(wall s, 1-min loadavg, busy CPU s of the whole machine, CPU s of this process,
    CPU-pressure stall s)."""
    try:
        with open("/proc/loadavg") as f:
            la = float(f.read().split()[0])
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        la, busy = float("nan"), float("nan")
    return time.perf_counter(), la, busy, time.process_time(), _cpu_pressure()


def load_delta(a, b):
    """Outside load during [a, b]: loadavg at the end, the machine's busy CPU seconds and this
    process's CPU seconds; ``other_cpus`` = (busy - own) / wall, the other processes' use in
    cores (0 = nothing else ran; 1 = one core's worth).  /proc/stat counts in clock ticks
    (10 ms), so a short round's figure is coarse: the report sums rounds before dividing.
    ``cpu_pressure``: the share of the round during which some runnable task waited for a
    CPU (PSI "some", microsecond resolution; 0 = never, 1 = all the time)."""
    wall = max(b[0] - a[0], 1e-9)
    busy, own = b[2] - a[2], b[3] - a[3]
    return {"loadavg": b[1], "other_cpus": round(max(0.0, busy - own) / wall, 3),
            "cpu_pressure": round((b[4] - a[4]) / wall, 4),
            "seconds": round(wall, 6), "busy_s": round(busy, 4), "own_s": round(own, 4)}


# ------------------------------------------------------------------ harness
def _norm(spec, elements):
    if callable(spec):
        return spec, elements
    fn, n = spec
    return fn, int(n)


def interleaved(benchmark, group, cases, *, elements=N, rounds=None, targets=(), check=None,
                warmup=True, bench_rounds=3, self_timed=False, **info):
    """Time every case of ``cases`` ({kind: fn or (fn, elements)}, each fn called without
    arguments) in ``rounds`` interleaved rounds after one warm-up call of each.

    The warm-up results are passed to ``check(results)`` (results equality against the core),
    so with ``--benchmark-disable`` each case still runs once and is checked.  Per round the
    harness records ns per element of every case, the ratios baseline/subject (throughput
    ratio: > 1 means the subject is faster; subject/baseline pairs as in SUBJECTS/BASELINES
    or, for custom kinds, first case vs the others) and the outside load.  All of it goes to
    ``benchmark.extra_info``; pytest-benchmark itself times the first case (so
    ``--benchmark-json`` has the usual statistics).  ``targets``: goals the report marks met /
    not met, e.g. ``{"subject": "core1t", "vs": "memcpy", "min": 0.9}`` or
    ``{"subject": "core", "max_ns": 500}``.  ``warmup=False`` (long workloads) skips the
    warm-up call; ``bench_rounds``: pytest-benchmark's own rounds of the first case.
    ``self_timed=True``: every fn returns ``(seconds, ...)``, the time of its own measured part
    (a workload that excludes its setup), which the harness records instead of its clock.
    Returns the warm-up results.
    """
    norm = {k: _norm(v, elements) for k, v in cases.items()}
    kinds = list(norm)
    results = {k: fn() for k, (fn, _) in norm.items()} if warmup else {}
    if check is not None:
        check(results)
    disabled = getattr(benchmark, "disabled", False)
    rounds = ROUNDS if rounds is None else rounds
    rounds = 0 if disabled else rounds
    ns = {k: [] for k in kinds}
    load = []
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        a = load_sample()
        for k in order:
            fn, n = norm[k]
            t0 = time.perf_counter_ns()
            res = fn()
            dt = res[0] * 1e9 if self_timed else time.perf_counter_ns() - t0
            ns[k].append(dt / n)
            del res                      # freeing the result is not part of the call
        load.append(load_delta(a, load_sample()))
    subjects = [k for k in kinds if k in SUBJECTS] or kinds[:1]
    baselines = [k for k in kinds if k not in subjects]
    ratios = {f"{s}/{b}": [tb / ts for ts, tb in zip(ns[s], ns[b])]
              for s in subjects for b in baselines}
    benchmark.group = group
    benchmark.extra_info.update(
        kind=kinds[0], elements=int(norm[kinds[0]][1]), interleaved=True, rounds=rounds,
        ns_per_elem=ns, ratios=ratios, load=load, targets=list(targets), n_batch=N,
        case_elements={k: n for k, (_, n) in norm.items()}, **info)
    benchmark.pedantic(norm[kinds[0]][0], rounds=1 if disabled else bench_rounds, iterations=1)
    return results


# ------------------------------------------------------------------ baselines
def same_traffic_copy(in_bytes, out_bytes, elements=N):
    """The memcpy baseline: a copy whose source + destination bytes equal the operation's
    input + output bytes (``in_bytes`` read and ``out_bytes`` written per element), i.e.
    (in + out) / 2 bytes per element copied.  Returns a callable."""
    nbytes = (elements * (in_bytes + out_bytes) + 1) // 2
    src = np.ones(-(-nbytes // 8), dtype=np.uint64).view(np.uint8)[:nbytes]
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


def blocks(fn, arrays, tmps=(), chunk=CHUNK):
    """Run ``fn(*array_blocks, *tmp_blocks)`` over consecutive blocks of ``chunk`` elements
    (a loop over blocks, never elements): the numpy formulations' temporaries are ``chunk``
    elements long and stay in cache instead of costing a 16M-element memory round trip."""
    n = arrays[0].shape[0]
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        fn(*(a[lo:hi] for a in arrays), *(t[:hi - lo] for t in tmps))


def tmp(dtype, n=CHUNK):
    """A cache-sized temporary for :func:`blocks`."""
    return np.empty(n if n != CHUNK else min(n, max(N, 1)), dtype=dtype)


def assert_same(a, b):
    """Equal arrays (structured arrays compared byte for byte)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    assert a.tobytes() == b.tobytes()


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(2026)
