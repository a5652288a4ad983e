"""Batch lookups: the level index (one cache line per lookup) and threads; page-cache
controls of file-backed tables.  No timing assertions (see bench/test_bench_rmp.py)."""
import numpy as np
import pytest

from pykvmmu.errors import InputError
from pykvmmu.rmp import BOOKKEEPING, Rc, RmpError, RmpFlags, RmpTable

MiB, GiB = 1 << 20, 1 << 30


def tables():
    yield RmpTable(np.zeros(BOOKKEEPING + 16 * (4 * 512 + 37), np.uint8))
    yield RmpTable(np.zeros(BOOKKEEPING + 16 * (4 * 512), np.uint8), flags=RmpFlags.MIDDLE_FULL)
    yield RmpTable.create(2 * GiB + 4 * MiB, segmented=True, seg_shift=30)


def same_as_entries(t, pfns):
    """The indexed batch lookup equals the scalar lookup, which reads the 2M entry."""
    t.check_level_index()
    r = t.lookup_batch(pfns)
    want = [t.snp_lookup_rmpentry(int(p)) for p in pfns]
    assert [(bool(a), int(lv)) for a, lv in zip(r.assigned, r.level)] == want
    t.disable_level_index()
    plain = t.lookup_batch(pfns)
    t.enable_level_index()
    assert all(np.array_equal(a, b) for a, b in zip(r, plain))


@pytest.mark.parametrize("t", list(tables()), ids=["contiguous", "middle-full", "segmented"])
def test_every_writer_keeps_the_index(t):
    base = 0x40000 if t.segmented else 0
    pfns = np.array([base + x for x in (0, 1, 511, 512, 513, 1023, 1024, 1500)], np.uint64)
    t.enable_level_index()
    assert t.level_index
    same_as_entries(t, pfns)
    steps = [
        lambda: t.rmpupdate(base + 512, gpa=0x200000, assigned=1, pagesize=1, asid=3),
        lambda: t.psmash(base + 512),
        lambda: t.rmp_make_shared(base + 1024, 2),            # hypervisor-owned, Page_Size 1
        lambda: t.rmpupdate(base + 1024, assigned=0),         # 4K update of a head: size 0
        lambda: t.write_raw(base, 0b10),                      # raw Page_Size at a head
        lambda: t.write_raw(base + 1, 0b11),                  # not a head: no bit
        lambda: t.rmpupdate(base + 512, gpa=0x200000, assigned=1, pagesize=0, asid=3),
    ]
    for step in steps:
        assert step() in (None, 0, Rc.SUCCESS)
        same_as_entries(t, pfns)


def test_buffer_is_read_only_while_indexed_and_stale_bits_are_found():
    raw = np.zeros(BOOKKEEPING + 16 * 2048, np.uint8)
    t = RmpTable(raw)
    t.enable_level_index()
    with pytest.raises(ValueError):
        t.entries[512, 0] = 2
    raw[BOOKKEEPING + 16 * 512] = 2                 # behind the index's back
    with pytest.raises(RmpError, match="2M block at pfn 0x200 differs"):
        t.check_level_index()
    t.enable_level_index()                          # rebuild
    t.check_level_index()
    assert t.lookup_batch(np.array([600], np.uint64)).level[0] == 2
    t.disable_level_index()
    assert not t.level_index
    t.entries[512, 0] = 0
    assert t.lookup_batch(np.array([600], np.uint64)).level[0] == 1


def test_threads_give_one_pass_results():
    t = RmpTable.create(16 * GiB)
    heads = np.arange(0, t.nr_pfns, 1024, dtype=np.uint64)
    t.rmpupdate_batch(heads, heads << np.uint64(12), assigned=1, pagesize=1, asid=4)
    t.enable_level_index()
    p = np.random.default_rng(5).integers(0, t.nr_pfns, (1 << 20) + 77, dtype=np.uint64)
    one = t.lookup_batch(p, threads=1)
    for threads in (None, 2, 3):
        many = t.lookup_batch(p, threads=threads)
        assert all(np.array_equal(a, b) for a, b in zip(one, many))
    assert np.array_equal(t.page_states(p, threads=1), t.page_states(p, threads=3))
    assert np.array_equal(t.host_check_batch(p, 2, threads=1), t.host_check_batch(p, 2, threads=2))
    assert np.array_equal(t.fields(p[:1 << 20], threads=1), t.fields(p[:1 << 20], threads=2))
    p[(1 << 20) + 5] = t.nr_pfns                   # in the last part
    p[(1 << 19) + 3] = t.nr_pfns + 9               # earlier, in another part: reported
    with pytest.raises(RmpError, match=r"pfns\[524291\]=0x400009: beyond the RMP"):
        t.lookup_batch(p, threads=3)
    with pytest.raises(InputError, match="threads=0"):
        t.lookup_batch(p[:10], threads=0)


def test_page_cache_controls(tmp_path):
    p = tmp_path / "t.rmp"
    RmpTable.create_file(p, 1 * GiB)
    with RmpTable.open(p, mode="r+") as t:
        t.advise("random")
        assert t.rmpupdate(512, gpa=0x200000, assigned=1, pagesize=1, asid=3) == Rc.SUCCESS
        t.drop_cache()                              # written back before the pages go
        assert t.snp_lookup_rmpentry(700) == (True, 2)
    with RmpTable.open(p, mode="r") as u:
        assert u.snp_lookup_rmpentry(700) == (True, 2)
        u.drop_cache()
        with pytest.raises(RmpError, match="pattern='backwards'"):
            u.advise("backwards")
    with RmpTable.open(p, mode="c") as c:
        with pytest.raises(RmpError, match="copy-on-write"):
            c.drop_cache()
    RmpTable.create(GiB).drop_cache()               # in memory: nothing to drop


@pytest.mark.parametrize("t", list(tables()), ids=["contiguous", "middle-full", "segmented"])
def test_batch_level_index_equals_two_reads(t, monkeypatch):
    """A batch of BATCH_INDEX_RATIO lookups per 2M block or more builds a level index for
    itself (contiguous in-memory tables); its answers equal the two-read lookup's and the
    scalar lookup's, for every kind of 2M block, with and without threads."""
    base = 0x40000 if t.segmented else 0
    t.rmpupdate(base + 512, gpa=0x200000, assigned=True, pagesize=1, asid=3)
    t.rmp_make_shared(base + 1024, 2)                       # hypervisor-owned 2M head
    t.rmpupdate(base + 1536 + 7, gpa=0x7000, assigned=True, asid=4)
    t.write_raw(base + 1, 0b11)                             # Page_Size away from a head
    blocks = -(-t.nr_pfns // 512)
    n = max(RmpTable.BATCH_INDEX_RATIO * blocks, 1 << 12)
    if t.segmented:
        n = 1 << 12                                         # segmented: never an index
    rng = np.random.default_rng(11)
    pfns = base + rng.integers(0, min(t.nr_pfns - base, 4 * 512 + 37), n, dtype=np.uint64)
    for threads in (1, None):
        r = t.lookup_batch(pfns, threads=threads)
        monkeypatch.setattr(t, "BATCH_INDEX_RATIO", 1 << 62)    # the two-read path
        plain = t.lookup_batch(pfns, threads=threads)
        monkeypatch.undo()
        assert all(np.array_equal(a, b) for a, b in zip(r, plain))
    sample = pfns[:300]
    want = [t.snp_lookup_rmpentry(int(p)) for p in sample]
    assert [(bool(a), int(lv)) for a, lv in zip(r.assigned[:300], r.level[:300])] == want
    if not t.segmented:
        assert t._batch_level_bits(n) != t._batch_level_bits(1)   # the index path was taken


@pytest.mark.parametrize("blocks", [1000, 1024, 64 * 3 + 1])
def test_batch_level_index_built_in_parts(blocks, monkeypatch):
    """A batch's level index is built in parts on the batch's threads, each part whole
    64-bit words: every split gives the index enable_level_index() builds in one pass,
    and the lookups through it equal the two-read lookup's."""
    from pykvmmu import _par
    from pykvmmu._ffi import ffi
    t = RmpTable(np.zeros(BOOKKEEPING + 16 * 512 * blocks, np.uint8))
    rng = np.random.default_rng(blocks)
    for b in rng.choice(blocks, blocks // 3, replace=False):
        t.write_raw(int(b) * 512, 0b11)                     # Assigned | Page_Size at the head
    t.write_raw(0, 0b11)
    t.write_raw((blocks - 1) * 512, 0b11)                   # the last, partial word's last bit
    words = -(-blocks // 64)
    t.enable_level_index()
    want = np.frombuffer(ffi.buffer(t._t.lvl_bits, 8 * words), np.uint64).copy()
    t.disable_level_index()
    assert want.any() and int(want[-1]) >> ((blocks - 1) % 64) & 1
    n = RmpTable.BATCH_INDEX_RATIO * blocks
    pfns = rng.integers(0, t.nr_pfns, n, dtype=np.uint64)
    monkeypatch.setattr(_par, "MIN_PART", 64)
    monkeypatch.setattr(_par, "MIN_ELEMENTS", 1)
    seen = set()
    for threads in (1, 2, 3, 4):
        seen.add(_par.threads_for(blocks, _par.threads_for(n, threads)))
        bits = t._batch_level_bits(n, threads)
        assert np.array_equal(np.frombuffer(ffi.buffer(bits, 8 * words), np.uint64), want), threads
        r = t.lookup_batch(pfns, threads=threads)
        monkeypatch.setattr(t, "BATCH_INDEX_RATIO", 1 << 62)    # the two-read path
        plain = t.lookup_batch(pfns, threads=threads)
        monkeypatch.setattr(t, "BATCH_INDEX_RATIO", RmpTable.BATCH_INDEX_RATIO)
        assert all(np.array_equal(a, b) for a, b in zip(r, plain))
    assert len(seen) > 2                                    # several splits were taken
