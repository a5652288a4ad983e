"""Issue 11, class 3: a refused call on a stateful object changes nothing (checked against the
object's ``_snapshot()``), and a partly applied kernel batch says how far it got."""
import pytest

from pykvmmu import gmem as G
from pykvmmu.attrs import MemoryAttributes, MmuInvalidation
from pykvmmu.config import MmuConfig
from pykvmmu.errors import PykvmmuError
from pykvmmu.memslots import MemslotGenerations
from pykvmmu.prevroots import PrevRootsCache
from pykvmmu.sphash import MmuPageHash, ShadowPage
from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, Vm


def cache():
    c = PrevRootsCache("v6.19")
    c.new_pgd(0x1000, 0x24)
    c.new_pgd(0x2000, 0x24)
    return c


def page_hash():
    h = MmuPageHash()
    h.alloc(5, 0x24)
    h.alloc(5, 0x23)
    return h


def vm():
    v = Vm("tdx", host=G.HostMemory(nr_pfns=1 << 14))
    g = v.create_guest_memfd(0x400000)
    v.set_memory_region(0, 0, 0x200000, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    v.set_memory_region(1, 0x200000, 0x200000)
    v.convert(0, 16)
    v.fault(0x1000)
    v._g = g
    return v


def gm():
    g = G.GuestMemfd(G.StubKvm(), 0x100000, host=G.HostMemory(nr_pfns=1 << 12))
    g.allocate(0, 0x4000)
    return g


CASES = [
    # the example: new_pgd used to rotate the current root into prev[0] before failing
    ("prevroots new_pgd role 1<<40", cache, lambda c: c.new_pgd(0x3000, 1 << 40)),
    ("prevroots new_pgd pgd -1", cache, lambda c: c.new_pgd(-1, 0x24)),
    ("prevroots new_pgd level 0", cache, lambda c: c.new_pgd(0x3000, 0x20)),
    ("prevroots new_pgd label", cache, lambda c: c.new_pgd(0x3000, 0x24, label=5)),
    ("prevroots fast_pgd_switch", cache, lambda c: c.fast_pgd_switch(0x3000, -1)),
    ("prevroots free_roots", cache, lambda c: c.free_roots(1 << 5)),
    ("sphash alloc 33-bit role", page_hash, lambda h: h.alloc(6, 1 << 32)),
    ("sphash alloc dup", page_hash, lambda h: h.alloc(5, 0x24)),
    ("sphash zap foreign", page_hash, lambda h: h.zap(ShadowPage(5, 0x24))),
    ("sphash find", page_hash, lambda h: h.find(5, "x")),
    ("attrs store", MemoryAttributes, lambda a: a.store(-5, 0x30, 8)),
    ("attrs set_range inval", MemoryAttributes, lambda a: a.set_range(1, 2, 8, None)),
    ("attrs set_range attrs", MemoryAttributes, lambda a: a.set_range(1, 2, 1 << 64, MmuInvalidation())),
    ("host alloc order", lambda: G.HostMemory(nr_pfns=1 << 12), lambda h: h.alloc("x", order=-1)),
    ("host alloc order 99", lambda: G.HostMemory(nr_pfns=1 << 12), lambda h: h.alloc("x", order=99)),
    ("gmem punch", gm, lambda g: g.punch_hole(0, 0)),
    ("gmem allocate", gm, lambda g: g.allocate(0x1000, 0x200000)),
    ("gmem migrate", gm, lambda g: g.migrate(1 << 64)),
    ("vm fault gpa", vm, lambda v: v.fault((1 << 64) + 0x1000)),
    ("vm fault ec", vm, lambda v: v.fault(0x2000, 1 << 64)),
    ("vm fault race", vm, lambda v: v.fault(0x2000, race=5)),
    ("vm region", vm, lambda v: v.set_memory_region(2, 0x400000, 0x1000, flags=1 << 40)),
    ("vm region overlap", vm, lambda v: v.set_memory_region(2, 0x100000, 0x1000)),
    ("vm attrs", vm, lambda v: v.set_memory_attributes(0x1000, 0x1001, 8)),
    ("vm convert", vm, lambda v: v.convert(1, 0)),
    ("vm migrate", vm, lambda v: v.migrate_gfn(-1)),
    ("vm punch", vm, lambda v: v.punch_hole(v._g, 1, 0x1000)),
    ("memslots update", lambda: MemslotGenerations(MmuConfig.ept()), lambda m: m.update(5)),
    ("memslots end", lambda: MemslotGenerations(MmuConfig.ept()), lambda m: m.end_update(0)),
]


@pytest.mark.parametrize("name,make,call", CASES, ids=[c[0] for c in CASES])
def test_refused_call_changes_nothing(name, make, call):
    obj = make()
    before = obj._snapshot()
    with pytest.raises(PykvmmuError):
        call(obj)
    assert obj._snapshot() == before


def test_snapshot_sees_a_change():
    """The snapshots are not blind: a successful call changes them."""
    for make, call in ((cache, lambda c: c.new_pgd(0x3000, 0x24)), (page_hash, lambda h: h.alloc(9, 0x24)),
                       (MemoryAttributes, lambda a: a.store(1, 2, 8)), (gm, lambda g: g.punch_hole(0, 0x1000)),
                       (vm, lambda v: v.fault(0x2000))):
        obj = make()
        before = obj._snapshot()
        call(obj)
        assert obj._snapshot() != before


def test_populate_reports_how_far_it_got():
    """kvm_gmem_populate applies page by page: a failure after the first page returns the count
    done (``ret && !i ? ret : i``), a failure on the first page raises."""
    v = Vm("sw_protected", host=G.HostMemory(nr_pfns=1 << 14))
    g = v.create_guest_memfd(0x200000)
    v.set_memory_region(0, 0, 0x200000, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    v.convert(0, 2)                      # gfns 0, 1 private; gfn 2 shared
    slot = v.slot_of(0)
    assert g.populate(slot, 0, None, 4) == 2
    with pytest.raises(G.GmemError):
        g.populate(slot, 2, None, 1)
