"""RMP benchmarks: a 1 TiB host's 4 GiB table (build, guest assignment, random lookups) and
lookup latency against table size.

Groups and baselines:
- ``rmp build 1TiB + 64GiB guest``: creating the table and assigning a 64 GiB guest in
  2 MiB pages (RMPUPDATE x 32768); extra_info has seconds and peak memory; memcpy baseline
  of the bytes written.
- ``rmp lookup <size>``: snp_lookup_rmpentry() over random pfns (assigned, level, ASID, GPA),
  core vs the best plain-numpy formulation of the same two-read lookup, and the pure-Python
  reference on a small sample.
- ``rmp lookup 1TiB vs single gather``: the same core call against one numpy gather of the
  4K entries only (a lower bound for any numpy formulation).
- ``rmp lookup 1TiB level index``: the lookup with ``enable_level_index()`` (one entry read
  per pfn), default threads and ``threads=1``, against the same single numpy gather.
The 1 TiB cases run only here, never in tests/.  PYKVMMU_BENCH_RMP_MAX (bytes of host memory,
default 1 TiB) shrinks the largest table for a quick look.
"""
import os
import sys
import time

import numpy as np
import pytest

from conftest import N, REF_N, bench, memcpy_case
from pykvmmu.ref import rmp as ref
from pykvmmu.rmp import PG_LEVEL_2M, RmpTable

GiB, TiB = 1 << 30, 1 << 40
HOST_MAX = int(os.environ.get("PYKVMMU_BENCH_RMP_MAX", TiB))
GUEST = min(64 * GiB, HOST_MAX // 4)
LOOKUPS = min(N, 4 * 1024 * 1024)
GPA_MASK = np.uint64(((1 << 39) - 1) << 12)
_STATE = {}


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")            # resets VmHWM to the current RSS
    except OSError:
        pass


def _progress(done, total, t0, what):
    w = 40
    k = w * done // total
    sys.stderr.write(f"\r  {what} [{'#' * k}{'.' * (w - k)}] {done}/{total} "
                     f"{time.perf_counter() - t0:5.1f}s")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def assign_guest(t, first_pfn, nbytes, asid, chunks=64):
    """rmp_make_private of a guest in 2M pages, in chunks with a progress bar."""
    pages = nbytes >> 21
    heads = first_pfn + (np.arange(pages, dtype=np.uint64) << np.uint64(9))
    gpas = np.arange(pages, dtype=np.uint64) << np.uint64(21)
    t0 = time.perf_counter()
    step = -(-pages // chunks)
    for i in range(0, pages, step):
        t.rmpupdate_batch(heads[i:i + step], gpas[i:i + step], assigned=1, pagesize=1, asid=asid)
        _progress(min(i + step, pages), pages, t0, f"assign {nbytes >> 30} GiB guest")
    return pages


def populate(t, asid0=10):
    """Fill the whole table with guests: 3 of 4 2M blocks as 2M pages, the 4th as 4K pages
    (every other one), so that every page of the table is resident and non-trivial."""
    blocks = t.nr_pfns // 512
    heads = np.arange(blocks, dtype=np.uint64) << np.uint64(9)
    big = heads[(np.arange(blocks) % 4) != 3]
    big = big[np.nonzero(t.lookup_batch(big, with_owner=False).assigned == 0)[0]]
    t.rmpupdate_batch(big, big << np.uint64(12), assigned=1, pagesize=1, asid=asid0)
    small_heads = heads[(np.arange(blocks) % 4) == 3]
    offs = np.arange(0, 512, 2, dtype=np.uint64)
    small = (small_heads[:, None] + offs[None, :]).reshape(-1)
    small = small[np.nonzero(t.lookup_batch(small, with_owner=False).assigned == 0)[0]]
    t.rmpupdate_batch(small, small << np.uint64(12), assigned=1, pagesize=0, asid=asid0 + 1)


def numpy_lookup(flat, pfns, idx, hidx, e, h, assigned, level, asid, gpa):
    """The same two-read lookup in plain numpy (preallocated outputs, no strided gathers)."""
    np.left_shift(pfns, np.uint64(1), out=idx)
    np.bitwise_and(idx, np.uint64(~1023 & (2**64 - 1)), out=hidx)
    if int(pfns.max()) >= flat.size // 2:
        raise IndexError("pfn beyond the RMP")
    np.take(flat, idx, out=e)
    np.take(flat, hidx, out=h)
    np.bitwise_and(e, np.uint64(1), out=assigned, casting="unsafe")
    np.right_shift(h, np.uint64(1), out=h)
    np.bitwise_and(h, np.uint64(1), out=h)
    np.add(h, np.uint64(1), out=level, casting="unsafe")
    np.right_shift(e, np.uint64(51), out=h)
    np.bitwise_and(h, np.uint64(0x3FF), out=asid, casting="unsafe")
    np.bitwise_and(e, GPA_MASK, out=gpa)
    return assigned, level, asid, gpa


def _lookup_cases(benchmark, kind, t, pfns, group):
    n = pfns.size
    outs = (np.empty(n, np.uint8), np.empty(n, np.uint8), np.empty(n, np.uint16),
            np.empty(n, np.uint64))
    if kind == "core":
        def run():
            return t.lookup_batch(pfns, assigned=outs[0], level=outs[1], asid=outs[2], gpa=outs[3])
        res = bench(benchmark, group, "core", n, run)
        check = np.random.default_rng(1).integers(0, n, 1000)
        for j in check[:50]:
            a, lv = t.snp_lookup_rmpentry(int(pfns[j]))
            assert (res.assigned[j], res.level[j]) == (a, lv)
        return res
    flat = t.buffer[16384:].view(np.uint64)
    tmp = [np.empty(n, np.uint64) for _ in range(4)]
    res = bench(benchmark, group, "numpy", n, numpy_lookup, flat, pfns, *tmp, *outs)
    core = t.lookup_batch(pfns)
    for a, b in zip(res, core):
        assert np.array_equal(a, b)
    return res


# ------------------------------------------------------------------ latency vs size

SIZES = [s for s in (1 * GiB, 16 * GiB, 256 * GiB) if s < HOST_MAX]
_SIZED = {}


@pytest.fixture(params=SIZES, ids=lambda s: f"{(s >> 8) >> 20}MiB")
def sized(request):
    if request.param not in _SIZED:
        _SIZED.clear()                      # one table at a time (the machine is shared)
        t = RmpTable.create(request.param)
        populate(t)
        pfns = np.random.default_rng(3).integers(0, t.nr_pfns, LOOKUPS, dtype=np.uint64)
        _SIZED[request.param] = (t, pfns)
    return _SIZED[request.param]


@pytest.mark.parametrize("kind", ["core", "numpy"])
def test_lookup_by_size(benchmark, sized, kind):
    t, pfns = sized
    _lookup_cases(benchmark, kind, t, pfns, f"rmp lookup {t.size >> 20}MiB")


def test_release_sized_tables():
    _SIZED.clear()


# ------------------------------------------------------------------ 1 TiB host

def test_build_1tib_and_assign_64g_guest(benchmark):
    """Create the 4 GiB table of a 1 TiB host and assign a 64 GiB guest in 2 MiB pages."""
    group = f"rmp build {HOST_MAX >> 30}GiB host + {GUEST >> 30}GiB guest"

    def build():
        _STATE.pop("big", None)
        _reset_peak()
        rss0 = _status("VmRSS")
        t0 = time.perf_counter()
        t = RmpTable.create(HOST_MAX)
        t_create = time.perf_counter() - t0
        assign_guest(t, 512, GUEST, asid=1)
        secs = time.perf_counter() - t0
        peak = _status("VmHWM") - rss0
        _STATE["big"] = t
        _STATE["build"] = dict(seconds=round(secs, 3), create_seconds=round(t_create, 6),
                               table_bytes=t.size, peak_rss_bytes=peak,
                               peak_over_table_bytes=peak - t.size)
        return t

    t = bench(benchmark, group, "core", GUEST >> 21, build, rounds=1)
    benchmark.extra_info.update(_STATE["build"])
    sys.stderr.write(f"  build: {_STATE['build']}\n")
    assert t.size == HOST_MAX // 256 + 16384
    assert t.snp_lookup_rmpentry(512 + 5) == (True, PG_LEVEL_2M)
    assert _STATE["build"]["peak_rss_bytes"] <= t.size + (64 << 20)


def test_build_memcpy_baseline(benchmark):
    memcpy_case(benchmark, f"rmp build {HOST_MAX >> 30}GiB host + {GUEST >> 30}GiB guest",
                (GUEST >> 21) * 512 * 16, GUEST >> 21)


@pytest.fixture(scope="module")
def big_table():
    t = _STATE.get("big") or RmpTable.create(HOST_MAX)
    t0 = time.perf_counter()
    populate(t)
    sys.stderr.write(f"  populated {t.nr_pfns:#x} entries in {time.perf_counter() - t0:.1f}s\n")
    yield t
    _STATE.pop("big", None)


@pytest.fixture(scope="module")
def big_pfns(big_table):
    return np.random.default_rng(7).integers(0, big_table.nr_pfns, LOOKUPS, dtype=np.uint64)


@pytest.mark.parametrize("kind", ["core", "numpy"])
def test_lookup_1tib(benchmark, big_table, big_pfns, kind):
    _lookup_cases(benchmark, kind, big_table, big_pfns, f"rmp lookup {big_table.size >> 20}MiB")


@pytest.mark.parametrize("kind", ["core", "numpy"])
def test_lookup_1tib_vs_single_gather(benchmark, big_table, big_pfns, kind):
    group = f"rmp lookup {big_table.size >> 20}MiB vs single gather"
    if kind == "core":
        _lookup_cases(benchmark, "core", big_table, big_pfns, group)
        return
    flat = big_table.buffer[16384:].view(np.uint64)
    idx = big_pfns << np.uint64(1)
    out = np.empty(idx.size, np.uint64)
    bench(benchmark, group, "numpy", idx.size, np.take, flat, idx, out=out)


@pytest.mark.parametrize("kind", ["core", "core1t", "numpy"])
def test_lookup_1tib_level_index(benchmark, big_table, big_pfns, kind):
    """The level index (a 64 KiB-per-TiB bitmap of the 2M entries' Page_Size): one entry,
    one DRAM line per lookup; numpy: one gather of the 4K entries (the same one line)."""
    group = f"rmp lookup {big_table.size >> 20}MiB level index"
    t = big_table
    if kind == "numpy":
        flat = t.buffer[16384:].view(np.uint64)
        idx = big_pfns << np.uint64(1)
        out = np.empty(idx.size, np.uint64)
        bench(benchmark, group, "numpy", idx.size, np.take, flat, idx, out=out)
        return
    n = big_pfns.size
    outs = dict(assigned=np.empty(n, np.uint8), level=np.empty(n, np.uint8),
                asid=np.empty(n, np.uint16), gpa=np.empty(n, np.uint64))
    plain = t.lookup_batch(big_pfns)
    t.enable_level_index()
    try:
        res = bench(benchmark, group, kind, n, t.lookup_batch, big_pfns, **outs,
                    threads=1 if kind == "core1t" else None)
        for a, b in zip(res, plain):
            assert np.array_equal(a, b)
    finally:
        t.disable_level_index()


def test_lookup_1tib_reference(benchmark, big_pfns):
    r = ref.RefRmp(4 * 512)
    r.rmpupdate(512, 0, 1, 1, 0, 3)
    sample = [int(p) % (4 * 512) for p in big_pfns[:REF_N]]
    bench(benchmark, f"rmp lookup {(HOST_MAX // 256 + 16384) >> 20}MiB", "reference", len(sample),
          lambda: [r.lookup(p) for p in sample], rounds=3)


def test_release_big_table(big_table):
    """Drop the 4 GiB table before the size sweep (the machine is shared)."""
    _STATE.pop("big", None)


