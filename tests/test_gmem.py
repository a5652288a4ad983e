"""guest_memfd: create/bind/fallocate rules (no change on error), punch-hole invalidation flow,
release, memory failure, get_pfn, populate, and the migration hook (default: refuse)."""
import errno

import pytest

from pykvmmu import gmem as G
from pykvmmu.errors import PykvmmuError


class Slot:
    def __init__(self, id, base_gfn, npages):
        self.id, self.base_gfn, self.npages = id, base_gfn, npages
        self.gmem_file, self.gmem_pgoff = None, 0


class RecHooks(G.GmemHooks):
    def __init__(self):
        self.calls = []

    def prepare(self, kvm, gfn, pfn, max_order):
        self.calls.append(("prepare", gfn, pfn, max_order))
        return 0

    def invalidate(self, start, end):
        self.calls.append(("invalidate", start, end, kvm_state(self.kvm)))


def kvm_state(kvm):
    return (kvm.invalidation.in_progress, kvm.invalidation.seq)


def make(size=64 << 12, flags=0, order=0, private=True):
    h = RecHooks()
    kvm = G.StubKvm(hooks=h, has_private_mem=private)
    h.kvm = kvm
    f = G.GuestMemfd(kvm, size, flags, host=G.HostMemory(), folio_order=order)
    return kvm, h, f


def test_create_rules():
    kvm = G.StubKvm()
    host = G.HostMemory()
    for size, flags, rule in [(0, 0, "size"), (4097, 0, "size"), (4096, 4, "flags"),
                              (4096, G.GUEST_MEMFD_FLAG_MMAP, "not supported")]:
        with pytest.raises(G.GmemError, match=rule) as e:
            G.GuestMemfd(kvm, size, flags, host=host)
        assert e.value.errno == errno.EINVAL
    f = G.GuestMemfd(G.StubKvm(has_private_mem=False), 4096,
                     G.GUEST_MEMFD_FLAG_MMAP | G.GUEST_MEMFD_FLAG_INIT_SHARED, host=host)
    assert f.flags == 3


def test_bind_rules_and_index_formula():
    kvm, _, f = make()
    a = Slot(0, 0x100, 16)
    f.bind(a, 0x4000)
    assert f.index_of(a, 0x105) == 0x105 - 0x100 + 4
    for slot, off, rule in [(Slot(1, 0, 4), 0x2000, "overlap"), (Slot(1, 0, 4), 0x800, "aligned"),
                            (Slot(1, 0, 64), 0x1000, "exceeds"), (Slot(1, 0, 17), 0x14000 - 0x1000, "overlap")]:
        before = f.bindings
        with pytest.raises(G.GmemError, match=rule):
            f.bind(slot, off)
        assert f.bindings == before and slot.gmem_file is None
    with pytest.raises(G.GmemError, match="another VM"):
        f.check_bind(G.StubKvm(), 1, 0)
    b = Slot(2, 0x900, 4)
    f.bind(b, 0)                      # adjacent, no overlap
    assert [x.slot.id for x in f.bindings] == [2, 0]


def test_fallocate_rules():
    kvm, h, f = make()
    for mode, off, ln, rule, err in [(0, 0, 4096, "KEEP_SIZE", errno.EOPNOTSUPP),
                                     (G.FALLOC_FL_KEEP_SIZE | 0x10, 0, 4096, "only", errno.EOPNOTSUPP),
                                     (G.FALLOC_FL_KEEP_SIZE, 1, 4096, "aligned", errno.EINVAL),
                                     (G.FALLOC_FL_KEEP_SIZE, 0, 65 << 12, "beyond", errno.EINVAL)]:
        with pytest.raises(G.GmemError, match=rule) as e:
            f.fallocate(mode, off, ln)
        assert e.value.errno == err and not f.allocated_pfns()
    f.fallocate(G.FALLOC_FL_KEEP_SIZE, 0, 8 << 12)
    assert len(f.allocated_pfns()) == 8 and not h.calls     # allocate does not prepare


def test_get_pfn_prepares_once_and_errors():
    kvm, h, f = make()
    s = Slot(0, 0x100, 16)
    f.bind(s, 0)
    r = f.get_pfn(s, 0x103)
    assert r.prepared_now and r.max_order == 0 and h.calls == [("prepare", 0x103, r.pfn, 0)]
    assert not f.get_pfn(s, 0x103).prepared_now and len(h.calls) == 1
    other = Slot(1, 0x100, 16)
    other.gmem_file, other.gmem_pgoff = f, 0
    with pytest.raises(G.GmemError) as e:
        f.get_pfn(other, 0x103)
    assert e.value.errno == errno.EIO
    f.memory_failure(3)
    with pytest.raises(G.GmemError) as e:
        f.get_pfn(s, 0x103)
    assert e.value.errno == G.EHWPOISON


def test_punch_hole_flow():
    kvm, h, f = make()
    s1, s2 = Slot(0, 0x100, 8), Slot(1, 0x900, 8)
    f.bind(s1, 0)
    f.bind(s2, 8 << 12)
    pfns = [f.get_pfn(s1, 0x100 + i).pfn for i in range(8)] + [f.get_pfn(s2, 0x900 + i).pfn for i in range(8)]
    h.calls.clear()
    seq = kvm.invalidation.seq
    freed = f.punch_hole(6 << 12, 4 << 12)            # indexes 6..9: two pages in each slot
    assert freed == 4
    # unmap per binding with the gfn formula, filter PRIVATE, one invalidate-begin
    assert [(u[0].id, u[1], u[2], u[3]) for u in kvm.unmapped] == [(0, 0x106, 0x108, G.KVM_FILTER_PRIVATE),
                                                                   (1, 0x900, 0x902, G.KVM_FILTER_PRIVATE)]
    # folios freed (invalidate hook) while the invalidation is in progress, then seq bumped
    assert [c[1] for c in h.calls] == pfns[6:10] and all(c[3] == (1, seq) for c in h.calls)
    assert kvm.invalidation.seq == seq + 1 and kvm.invalidation.in_progress == 0
    assert all(not f.host.is_allocated(p) for p in pfns[6:10])
    # a hole with no binding: no invalidation at all
    f.punch_hole(40 << 12, 4096)
    assert kvm.invalidation.seq == seq + 1


def test_punch_hole_large_folio_split():
    kvm, h, f = make(size=2 << 21, order=9)
    s = Slot(0, 0x200, 1024)
    f.bind(s, 0)
    r = f.get_pfn(s, 0x201)
    assert r.max_order == 9 and h.calls[0] == ("prepare", 0x200, r.pfn - 1, 9)
    h.calls.clear()
    f.punch_hole(4 << 12, 2 << 12)                    # part of the 2M folio: split, free 2 pages
    assert [c[1:3] for c in h.calls] == [(r.pfn + 3, r.pfn + 4), (r.pfn + 4, r.pfn + 5)]
    assert f.get_pfn(s, 0x201).max_order == 0
    h.calls.clear()
    f.get_pfn(s, 0x400)
    f.punch_hole(512 << 12, 512 << 12)                # a whole 2M folio: one invalidate call
    assert len(h.calls) == 2 and h.calls[1][2] - h.calls[1][1] == 512
    s2 = Slot(1, 0x10001, 512)                        # gfn/index misaligned: order 0
    kvm2, _, f2 = make(size=2 << 21, order=9)
    f2.bind(s2, 0)
    assert f2.get_pfn(s2, 0x10001).max_order == 0


def test_release_and_memory_failure():
    kvm, h, f = make()
    s = Slot(0, 0x100, 16)
    f.bind(s, 0)
    p = f.get_pfn(s, 0x100).pfn
    seq = kvm.invalidation.seq
    assert f.memory_failure(0) == "MF_DELAYED"
    assert kvm.invalidation.seq == seq + 1 and f.host.is_allocated(p)   # no truncate
    f.release()
    assert s.gmem_file is None and not f.host.is_allocated(p) and not f.bindings
    with pytest.raises(G.GmemError) as e:
        f.get_pfn(s, 0x100)
    assert e.value.errno == errno.EFAULT
    with pytest.raises(G.GmemError, match="released"):
        f.fallocate(G.FALLOC_FL_KEEP_SIZE, 0, 4096)


def test_populate():
    calls = []
    priv = {0x100, 0x101, 0x102}
    kvm = G.StubKvm(is_private=lambda g: g in priv)
    f = G.GuestMemfd(kvm, 16 << 12, host=G.HostMemory())
    s = Slot(0, 0x100, 16)
    f.bind(s, 0)
    cb = lambda k, gfn, pfn, src, opaque: calls.append((gfn, src, opaque)) or 0  # noqa: E731
    assert f.populate(s, 0x100, ["a", "b", "c", "d"], 4, cb, "op") == 3      # gfn 0x103 not private
    assert calls == [(0x100, "a", "op"), (0x101, "b", "op"), (0x102, "c", "op")]
    with pytest.raises(G.GmemError) as e:
        f.populate(s, 0x100, None, 1, cb)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(G.GmemError, match="not PRIVATE"):
        f.populate(s, 0x105, None, 1, cb)
    priv.update(range(0x10c, 0x200))
    assert f.populate(s, 0x10c, None, 50, lambda *a: 0) == 4                # clipped to the slot


def test_migrate_default_refuses_and_changes_nothing():
    kvm, h, f = make()
    s = Slot(0, 0x100, 16)
    f.bind(s, 0)
    p = f.get_pfn(s, 0x100).pfn
    allocated = dict(f.host.owner)
    ans = f.migrate(0)
    assert not ans.ok and ans.errno == errno.EINVAL
    assert f.allocated_pfns()[0] == p and f.host.owner == allocated


def test_migrate_user_hook_under_mmu_lock():
    kvm, h, f = make()
    seen = []

    def migrate(kvm_, slot, gfn, level, old, new):
        seen.append((kvm_.mmu_lock_held, slot.id, gfn, level, old, new))
        return G.MigrateAnswer(True, 0, ("moved",))
    h.migrate = migrate
    s = Slot(0, 0x100, 16)
    f.bind(s, 0)
    p = f.get_pfn(s, 0x102).pfn
    ans = f.migrate(2)
    new = f.allocated_pfns()[2]
    assert ans.ok and seen == [(1, 0, 0x102, 1, p, new)] and new != p
    assert not f.host.is_allocated(p)
    with pytest.raises(PykvmmuError, match="no folio"):
        f.migrate(9)
