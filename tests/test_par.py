"""Batches split over threads (pykvmmu._par) give exactly the one-pass results and errors."""
import numpy as np
import pytest

from pykvmmu import _par
from pykvmmu import mmio as M
from pykvmmu import private as P
from pykvmmu import role as R
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ConfigError, InputError, PykvmmuError

N = 3 * _par.MIN_PART + 1234          # three parts with threads=3; the last one ragged
CFG = MmuConfig.ept()
L1TF = MmuConfig.npt(phys_bits=39, cache_bits=44)


@pytest.mark.parametrize("n, parts", [(0, 1), (1, 1), (63, 2), (1000, 3), (N, 3), (10**7 + 7, 8)])
def test_bounds_cover_the_batch_on_aligned_cuts(n, parts):
    b = _par.bounds(n, parts)
    assert [lo for lo, _ in b[1:]] == [hi for _, hi in b[:-1]]
    assert (b[0][0] if b else 0) == 0 and (b[-1][1] if b else 0) == n
    assert all(hi > lo for lo, hi in b)
    assert all(lo % _par.ALIGN == 0 for lo, _ in b)


def test_threads_for():
    assert _par.threads_for(_par.MIN_ELEMENTS - 1, None) == 1
    assert _par.threads_for(N, 3) == 3
    assert _par.threads_for(N, 1) == 1
    assert _par.threads_for(1000, 8) == 1                 # parts never below MIN_PART
    for bad in (0, -1, _par.MAX_THREADS + 1, "2", 2.0, True):
        with pytest.raises(InputError, match="threads="):
            _par.threads_for(N, bad)


def test_environment_default(monkeypatch):
    monkeypatch.setenv("PYKVMMU_THREADS", "3")
    assert _par.default_threads() == 3
    assert _par.threads_for(_par.MIN_ELEMENTS, None) == 3
    for bad in ("0", "x", "100"):
        monkeypatch.setenv("PYKVMMU_THREADS", bad)
        with pytest.raises(ConfigError, match="PYKVMMU_THREADS"):
            _par.default_threads()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    pfn = rng.integers(0, 1 << 36, N, dtype=np.uint64)
    level = rng.integers(1, 4, N, dtype=np.uint8)
    access = rng.integers(0, 8, N, dtype=np.uint8)
    flags = rng.integers(0, 128, N, dtype=np.uint8)
    sptes = S.make_spte_batch(CFG, pfn, level=level, pte_access=access, flags=flags, threads=1)
    mmio = M.make_mmio_spte_batch(L1TF, pfn & np.uint64((1 << 27) - 1), 6, 0x345, threads=1)
    return dict(pfn=pfn, level=level, access=access, flags=flags, sptes=sptes, mmio=mmio,
                gen=rng.integers(0x340, 0x34A, N, dtype=np.uint64))


CASES = {
    "make_spte": lambda d, t: S.make_spte_batch(CFG, d["pfn"], level=d["level"], pte_access=d["access"],
                                                flags=d["flags"], with_wrprot=True, threads=t),
    "access_track": lambda d, t: S.access_track_batch(CFG, d["sptes"], threads=t),
    "predicate": lambda d, t: S.predicate_batch(CFG, "spte_needs_atomic_update", d["sptes"], threads=t),
    "predicate_levels": lambda d, t: S.predicate_batch(CFG, "is_last_spte", d["sptes"], d["level"],
                                                       threads=t),
    "spte_to_pfn": lambda d, t: S.spte_to_pfn_batch(CFG, d["sptes"], threads=t),
    "tlb_flush": lambda d, t: S.leaf_spte_change_needs_tlb_flush_batch(
        CFG, d["sptes"], S.access_track_batch(CFG, d["sptes"], threads=1), threads=t),
    "decode": lambda d, t: S.decode_batch(CFG, d["sptes"], 2, threads=t),
    "decode_levels": lambda d, t: S.decode_batch(CFG, d["sptes"], d["level"], threads=t),
    "mmio_make": lambda d, t: M.make_mmio_spte_batch(L1TF, d["pfn"] & np.uint64((1 << 30) - 1), 6,
                                                     d["gen"], threads=t),
    "mmio_gfn": lambda d, t: M.get_mmio_spte_gfn_batch(L1TF, d["mmio"], threads=t),
    "mmio_generation": lambda d, t: M.get_mmio_spte_generation_batch(L1TF, d["mmio"], threads=t),
    "mmio_check": lambda d, t: M.check_mmio_spte_batch(L1TF, d["mmio"], d["gen"], threads=t),
    "mmio_outcome": lambda d, t: M.mmio_fault_outcome_batch(L1TF, d["mmio"], 0x345, threads=t),
    "role_hash": lambda d, t: R.hash_batch(d["pfn"], threads=t),
    "role_unpack_pack": lambda d, t: R.pack_batch("v6.13", R.unpack_batch(
        "v6.13", (d["pfn"] & np.uint64(R.get_era("v6.13").base.used_mask)).astype(np.uint32),
        threads=t), threads=t),
    "private": lambda d, t: P.classify_batch("snp", d["pfn"] << np.uint64(12),
                                             d["flags"].astype(np.uint64) << np.uint64(32),
                                             threads=t),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_split_batches_equal_one_pass(data, name):
    one, split = CASES[name](data, 1), CASES[name](data, 3)
    one = one if isinstance(one, tuple) else (one,)
    split = split if isinstance(split, tuple) else (split,)
    for a, b in zip(one, split):
        if isinstance(a, np.ndarray):
            assert a.tobytes() == b.tobytes()
        else:
            assert a == b


def _err(fn):
    with pytest.raises(PykvmmuError) as e:
        fn()
    return type(e.value), str(e.value)


def test_split_batches_report_the_one_pass_error(data):
    level = data["level"].copy()
    level[N - 5] = 6                                           # in the third part
    level[2 * _par.MIN_PART + 17] = 0                          # earlier, also in the third
    for t in (1, 3):
        assert _err(lambda: S.make_spte_batch(CFG, data["pfn"], level=level, threads=t)) == \
            _err(lambda: S.make_spte_batch(CFG, data["pfn"], level=level, threads=1))
    assert "element 131089 " in _err(lambda: S.make_spte_batch(CFG, data["pfn"], level=level,
                                                                  threads=3))[1]
    # make_mmio_spte reports a bad gfn before a bad access, whichever part each is in.
    gfn = data["pfn"] & np.uint64((1 << 30) - 1)
    gfn[N - 3] = 1 << 45
    acc = np.full(N, 7, np.uint64)
    acc[10] = 9
    one = _err(lambda: M.make_mmio_spte_batch(L1TF, gfn, acc, 0, threads=1))
    assert one == _err(lambda: M.make_mmio_spte_batch(L1TF, gfn, acc, 0, threads=3))
    assert f"element {N - 3} (gfn" in one[1]
    words = np.zeros(N, np.uint32)
    words[N - 1] = 0xFFFFFFFF
    assert _err(lambda: R.unpack_batch("v6.13", words, threads=3)) == \
        _err(lambda: R.unpack_batch("v6.13", words, threads=1))


def test_split_batches_work_in_a_forked_child(data):
    import os
    import signal
    want = CASES["decode"](data, 1).tobytes()
    assert CASES["decode"](data, 3).tobytes() == want       # the parent's pool is running
    pid = os.fork()
    if pid == 0:                                            # child: a pool of its own
        signal.alarm(30)                                    # a hang fails instead of blocking
        try:
            os._exit(0 if CASES["decode"](data, 3).tobytes() == want else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
