"""Issue 11, class 6: an ``out=`` that shares memory with an input is refused everywhere (the C
loops declare their pointers ``restrict``); separate arrays, even views of one buffer that do
not overlap, still work and give the same values."""
import numpy as np
import pytest

from pykvmmu import mmio as M, private as P, role as R, spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ArrayError

CFG = MmuConfig.ept()
E = R.get_era("v6.19")

# (name, function(in, out), input dtype, output dtype, input value)
APIS = [
    ("make_spte_batch", lambda a, o: S.make_spte_batch(CFG, a, out=o), np.uint64, np.uint64, 0x1234),
    ("make_nonleaf_spte_batch", lambda a, o: S.make_nonleaf_spte_batch(CFG, a, out=o), np.uint64,
     np.uint64, 0x5000),
    ("make_huge_spte_batch", lambda a, o: S.make_huge_spte_batch(CFG, a, 2, out=o), np.uint64,
     np.uint64, 0x12345b77),
    ("make_small_spte_batch", lambda a, o: S.make_small_spte_batch(CFG, a, 1, 3, out=o), np.uint64,
     np.uint64, 0x200ef7),
    ("access_track_batch", lambda a, o: S.access_track_batch(CFG, a, out=o), np.uint64, np.uint64,
     0x12345b77),
    ("spte_to_pfn_batch", lambda a, o: S.spte_to_pfn_batch(CFG, a, out=o), np.uint64, np.uint64,
     0x12345b77),
    ("predicate_batch", lambda a, o: S.predicate_batch(CFG, "is_large_pte", a, out=o), np.uint64,
     np.bool_, 0x12345b77),
    ("make_mmio_spte_batch", lambda a, o: M.make_mmio_spte_batch(CFG, a, out=o), np.uint64, np.uint64,
     0x10),
    ("get_mmio_spte_gfn_batch", lambda a, o: M.get_mmio_spte_gfn_batch(CFG, a, out=o), np.uint64,
     np.uint64, 0x6),
    ("check_mmio_spte_batch", lambda a, o: M.check_mmio_spte_batch(CFG, a, 0, out=o), np.uint64,
     np.bool_, 0x6),
    ("invalidate_mmio_sptes_batch", lambda a, o: M.kvm_mmu_invalidate_mmio_sptes_batch(CFG, a, out=o),
     np.uint64, np.bool_, 2),
    ("hash_batch", lambda a, o: R.hash_batch(a, out=o), np.uint64, np.uint32, 0x1234),
]


def _buf(dt_in, dt_out, n, v):
    """One byte buffer holding the input (n elements) so that an output view can overlap it."""
    raw = np.zeros(n * 8 + 64, dtype=np.uint8)
    a = raw[:n * np.dtype(dt_in).itemsize].view(dt_in)
    a[:] = v
    return raw, a


@pytest.mark.parametrize("name,fn,dt_in,dt_out,v", APIS, ids=[a[0] for a in APIS])
def test_partial_overlap_refused(name, fn, dt_in, dt_out, v):
    n = 16
    raw, a = _buf(dt_in, dt_out, n, v)
    isz = np.dtype(dt_out).itemsize
    o = raw[8:8 + n * isz].view(dt_out)          # starts one u64 into the input
    keep = raw.copy()
    with pytest.raises(ArrayError, match="overlaps"):
        fn(a, o)
    assert np.array_equal(raw, keep)             # nothing written


@pytest.mark.parametrize("name,fn,dt_in,dt_out,v", [a for a in APIS if a[2] == a[3]],
                         ids=[a[0] for a in APIS if a[2] == a[3]])
def test_exact_alias_refused(name, fn, dt_in, dt_out, v):
    a = np.full(8, v, dtype=dt_in)
    with pytest.raises(ArrayError, match="same memory"):
        fn(a, a)


@pytest.mark.parametrize("name,fn,dt_in,dt_out,v", APIS, ids=[a[0] for a in APIS])
def test_disjoint_views_of_one_buffer_work(name, fn, dt_in, dt_out, v):
    n = 16
    raw = np.zeros(n * 16 + 64, dtype=np.uint8)
    a = raw[:n * 8].view(dt_in)
    a[:] = v
    isz = np.dtype(dt_out).itemsize
    o = raw[n * 8:n * 8 + n * isz].view(dt_out)
    want = fn(a.copy(), None)
    assert np.array_equal(fn(a, o), want)


def test_the_issue_example_no_longer_gives_wrong_values():
    buf = np.arange(17, dtype=np.uint64)
    with pytest.raises(ArrayError):
        S.make_spte_batch(CFG, buf[:-1], out=buf[1:])
    assert np.array_equal(buf, np.arange(17, dtype=np.uint64))


def test_second_input_and_multiple_outputs():
    a = np.zeros(8, np.uint64)
    b = np.zeros(8, np.uint64)
    with pytest.raises(ArrayError, match="new_spte"):
        S.leaf_spte_change_needs_tlb_flush_batch(CFG, a, b, out=b.view(np.bool_)[:8])
    gpa = np.zeros(8, np.uint64)
    ec = np.zeros(8, np.uint64)
    with pytest.raises(ArrayError, match="out_ec"):
        og = np.zeros(8, np.uint64)
        P.classify_batch("snp", gpa, ec, out_gfn=og, out_ec=og)
    rows = np.zeros(4, E.base.dtype)
    with pytest.raises(ArrayError, match="fields"):
        R.pack_batch("v6.19", rows, out=rows.view(np.uint8)[:16].view(np.uint32))
