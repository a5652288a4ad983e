"""Memory attributes: range store vs a per-page model, ioctl rules (no change on error),
the invalidation sequence, and the 1 TiB footprint."""
import errno

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pykvmmu.attrs import (KVM_MEMORY_ATTRIBUTE_PRIVATE as PRIV, INVALID_GPA, MemoryAttributeError,
                           MemoryAttributes, MmuInvalidation, check_set_memory_attributes)
from pykvmmu.errors import PykvmmuError

ops = st.lists(st.tuples(st.integers(0, 200), st.integers(1, 60), st.sampled_from([0, PRIV, 1, PRIV | 1])),
               max_size=30)


@given(ops)
def test_store_matches_per_page_model(seq):
    m = MemoryAttributes(supported=PRIV | 1)
    ref = {}
    inv = MmuInvalidation()
    for s, n, v in seq:
        changed = m.set_range(s, s + n, v, inv)
        before = dict(ref)
        for g in range(s, s + n):
            if v:
                ref[g] = v
            else:
                ref.pop(g, None)
        assert changed == (before != ref)
        runs = m.ranges()
        for (a, b, x), (c, d, y) in zip(runs, runs[1:]):
            assert a < b <= c and (b < c or x != y)      # sorted, disjoint, maximal
        assert all(x for _, _, x in runs)
    for g in range(0, 270):
        assert m.get(g) == ref.get(g, 0)
        assert m.is_private(g) == bool(ref.get(g, 0) & PRIV)
    gfns = np.arange(0, 270, dtype=np.uint64)
    assert list(m.get_batch(gfns)) == [ref.get(g, 0) for g in range(270)]
    for s in range(0, 260, 7):
        for e in (s, s + 1, s + 13, s + 64):
            for want in (0, PRIV, PRIV | 1):
                exp = all(ref.get(g, 0) & (PRIV | 1) == want for g in range(s, e))
                assert m.range_has(s, e, PRIV | 1, want) == exp


@pytest.mark.parametrize("args,rule", [
    ((0, 4096, PRIV, 1), "flags"),
    ((0, 4096, 1, 0), "not supported"),
    ((0, 4096, 1 << 4, 0), "not supported"),
    ((0, 0, PRIV, 0), "empty"),
    (((1 << 64) - 4096, 8192, PRIV, 0), "overflows"),
    (((1 << 64) - 4096, 4096, PRIV, 0), "overflows"),
    ((0x800, 4096, PRIV, 0), "aligned"),
    ((0x1000, 0x1800, PRIV, 0), "aligned"),
])
def test_ioctl_rules_each_einval_and_no_change(args, rule):
    m = MemoryAttributes()
    inv = MmuInvalidation()
    m.set_range(0, 4, PRIV, inv)
    before, seq = m.ranges(), inv.snapshot()
    with pytest.raises(MemoryAttributeError, match=rule) as ei:
        m.check_and_set(*args, inv)
    assert ei.value.errno == errno.EINVAL
    assert m.ranges() == before and inv.snapshot() == seq


def test_unsupported_for_non_private_vm():
    with pytest.raises(PykvmmuError, match="supported=0x0|not supported"):
        check_set_memory_attributes(0, 4096, PRIV, 0, supported=0)
    assert check_set_memory_attributes(0x1000, 0x3000, PRIV, 0, PRIV) == (1, 4)


def test_sequence_begin_zap_store_end_order():
    m = MemoryAttributes()
    inv = MmuInvalidation()
    seen = []

    def zap(s, e, a):
        seen.append(("zap", inv.in_progress, inv.range_start, inv.range_end, m.is_private(s)))

    def post(s, e, a):
        seen.append(("post", inv.in_progress, m.is_private(s)))
    assert m.set_range(10, 20, PRIV, inv, zap, post)
    assert seen == [("zap", 1, 10, 20, False), ("post", 1, True)]
    assert inv.seq == 1 and inv.in_progress == 0
    assert not m.set_range(12, 18, PRIV, inv, zap)     # already has the value: nothing
    assert inv.seq == 1 and len(seen) == 2


def test_invalidation_retry_rules():
    inv = MmuInvalidation()
    snap = inv.seq
    assert not inv.retry_gfn(snap, 5)
    inv.begin()
    assert inv.range_start == INVALID_GPA and inv.retry_gfn(snap, 5)   # no range yet: retry
    inv.range_add(10, 20)
    inv.range_add(30, 40)
    assert (inv.range_start, inv.range_end) == (10, 40)
    assert inv.retry_gfn(snap, 15) and not inv.retry_gfn(snap, 5) and not inv.retry_gfn(snap, 40)
    inv.begin()
    assert (inv.range_start, inv.range_end) == (10, 40)    # nested: range kept
    inv.end()
    inv.end()
    assert inv.seq == snap + 2 and inv.retry_gfn(snap, 5) and not inv.retry_gfn(inv.seq, 15)
    with pytest.raises(PykvmmuError, match="negative"):
        inv.end()
    with pytest.raises(PykvmmuError, match="no invalidation"):
        inv.range_add(1, 2)


def test_one_tib_guest_in_a_few_mib():
    npages = 1 << 28                      # 1 TiB of 4 KiB pages
    m = MemoryAttributes()
    inv = MmuInvalidation()
    m.check_and_set(0, npages << 12, PRIV, 0, inv)
    assert len(m) == 1 and m.is_private(npages - 1) and not m.is_private(npages)
    rng = np.random.default_rng(0)
    for g in rng.choice(npages, 2000, replace=False):
        m.set_range(int(g), int(g) + 1, 0, inv)
    assert len(m) <= 2001 + 1
    assert m.nbytes() < 2 << 20
    s, e = m.private_ranges()
    assert int((e - s).sum()) == npages - 2000
