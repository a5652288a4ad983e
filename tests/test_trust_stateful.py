"""Issue 11: for every stateful object (memory attributes, guest_memfd, Vm, prev_roots cache,
page hash, memslots; the RMP has its own), random operation sequences with random invalid
arguments mixed in leave the object equal to its snapshot after every refused call; every
refusal is a PykvmmuError (any other exception fails the test)."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pykvmmu import gmem as G
from pykvmmu.attrs import MemoryAttributes, MmuInvalidation
from pykvmmu.config import MmuConfig
from pykvmmu.errors import PykvmmuError
from pykvmmu.memslots import MemslotGenerations
from pykvmmu.prevroots import PrevRootsCache
from pykvmmu.sphash import MmuPageHash, ShadowPage
from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, Vm

BAD = [-1, -4096, 1 << 64, (1 << 64) + 0x1000, 1 << 63, "1", 1.5, None, True, [], 2 ** 80]


def ints(lo, hi, *extra):
    """A valid-ish integer, or a bad value (wrong type, negative, too wide) a third of the time."""
    return st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.sampled_from(BAD + list(extra)))


def pages(n):
    return st.one_of(st.integers(0, n).map(lambda k: k << 12), st.integers(0, n << 12),
                     st.sampled_from(BAD))


def bools():
    return st.one_of(st.booleans(), st.sampled_from(["no", 2, None, 1.5]))


def run(obj, ops, data):
    """Run drawn operations; after each refused one the snapshot must be unchanged."""
    refused = 0
    for name, make_args in ops:
        args = data.draw(make_args, label=name)
        before = obj._snapshot()
        try:
            getattr(obj, name)(*args)
        except PykvmmuError:
            refused += 1
            assert obj._snapshot() == before, f"{name}{args!r} was refused but changed the object"
    return refused


def seq(ops):
    return st.lists(st.sampled_from(ops), min_size=1, max_size=25)


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


ATTR_OPS = [
    ("store", st.tuples(ints(0, 300), ints(0, 300), st.sampled_from([0, 8, 1, 8 | 1 << 64]))),
    ("set_range", st.tuples(ints(0, 300), ints(0, 300), st.sampled_from([0, 8, 1, -8]),
                            st.sampled_from([MmuInvalidation(), None, 5]))),
    ("check_and_set", st.tuples(pages(300), pages(40), st.sampled_from([0, 8, 16, "8"]),
                                st.sampled_from([0, 1]), st.just(MmuInvalidation()))),
    ("get", st.tuples(ints(0, 300))),
    ("range_has", st.tuples(ints(0, 300), ints(0, 300), ints(0, 15), ints(0, 15))),
]


@SETTINGS
@given(data=st.data())
def test_memory_attributes(data):
    run(MemoryAttributes(), data.draw(seq(ATTR_OPS)), data)


GMEM_OPS = [
    ("allocate", st.tuples(pages(300), pages(40))),
    ("punch_hole", st.tuples(pages(300), pages(40))),
    ("fallocate", st.tuples(st.sampled_from([0, 1, 3, 4, -1, "3"]), pages(300), pages(40))),
    ("memory_failure", st.tuples(ints(0, 300))),
    ("migrate", st.tuples(ints(0, 300))),
    ("folio_of", st.tuples(ints(0, 300))),
    ("release", st.tuples()),
]


@pytest.mark.parametrize("folio_order", [0, 9])
@SETTINGS
@given(data=st.data())
def test_guest_memfd(folio_order, data):
    g = G.GuestMemfd(G.StubKvm(), 256 << 12, host=G.HostMemory(nr_pfns=1 << 12),
                     folio_order=folio_order)
    run(g, data.draw(seq(GMEM_OPS)), data)


def _vm(kind):
    vm = Vm(kind, host=G.HostMemory(nr_pfns=1 << 13))
    g = vm.create_guest_memfd(0x400000)
    vm.set_memory_region(0, 0, 0x200000, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    vm.set_memory_region(1, 0x200000, 0x100000)
    vm._trust_gmem = g
    return vm


def vm_ops(vm):
    g = vm._trust_gmem
    gpas = st.one_of(st.integers(0, 0x300).map(lambda k: k << 12),
                     st.integers(0, 0x300).map(lambda k: (k << 12) | (1 << 51)), st.sampled_from(BAD))
    return [
        ("fault", st.tuples(gpas, st.one_of(st.sampled_from([0, 2, 1 << 34, 9]), st.sampled_from(BAD)))),
        ("convert", st.tuples(ints(0, 0x300), ints(0, 64), bools())),
        ("set_memory_attributes", st.tuples(pages(0x300), pages(64), st.sampled_from([0, 8, 1, None]))),
        ("set_memory_region", st.tuples(ints(0, 4, 1 << 32), pages(0x400), pages(64),
                                        st.sampled_from([None, 0x7f0000000000, 1]),
                                        st.sampled_from([0, 1, 2, KVM_MEM_GUEST_MEMFD, 1 << 40]),
                                        st.sampled_from([None, g, 5]))),
        ("punch_hole", st.tuples(st.sampled_from([g, None]), pages(0x200), pages(64))),
        ("migrate_gfn", st.tuples(ints(0, 0x300))),
        ("slot_of", st.tuples(ints(0, 0x300))),
    ]


@pytest.mark.parametrize("kind", ["tdx", "snp", "sw_protected"])
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_vm(kind, data):
    vm = _vm(kind)
    run(vm, data.draw(st.lists(st.sampled_from(vm_ops(vm)), min_size=1, max_size=15)), data)
    vm.check()                      # the accepted calls kept every invariant


ROLES = st.one_of(st.sampled_from([0x24, 0x23, 0x84, 0x1024, 0x44]), st.sampled_from(BAD + [1 << 40, 0x20]))
PR_OPS = [
    ("new_pgd", st.tuples(ints(0, 4, 0x1000, 0x2000, 0x3000).map(lambda x: x << 12 if isinstance(x, int)
                                                                   and 0 <= x < 8 else x), ROLES)),
    ("fast_pgd_switch", st.tuples(ints(0x1000, 0x4000), ROLES)),
    ("free_roots", st.tuples(ints(0, 15, 16, 1 << 20))),
    ("alloc_root", st.tuples(ints(0x1000, 0x4000), ROLES)),
    ("free_guest_mode_roots", st.tuples()),
]


@pytest.mark.parametrize("era", ["v4.19", "v5.7", "v6.19"])
@SETTINGS
@given(data=st.data())
def test_prev_roots_cache(era, data):
    run(PrevRootsCache(era), data.draw(seq(PR_OPS)), data)


@SETTINGS
@given(data=st.data())
def test_page_hash(data):
    h = MmuPageHash()
    foreign = ShadowPage(3, 0x24)
    ops = [
        ("alloc", st.tuples(ints(0, 8), ROLES, bools())),
        ("get", st.tuples(ints(0, 8), ROLES)),
        ("find", st.tuples(ints(0, 8), ROLES)),
        ("zap", st.one_of(st.just((foreign,)), st.just((None,)),
                          st.builds(lambda: (h.active_mmu_pages[0],) if h.active_mmu_pages
                                    else (foreign,)))),
        ("zap_all_fast", st.tuples()),
    ]
    run(h, data.draw(seq(ops)), data)


MS_OPS = [(m, st.tuples(ints(0, 2))) for m in ("begin_update", "end_update", "update", "generation")] + [
    ("make_mmio_spte", st.tuples(ints(0, 1 << 20), ints(0, 7), ints(0, 2))),
]


@pytest.mark.parametrize("private_mem", [False, True])
@SETTINGS
@given(data=st.data())
def test_memslot_generations(private_mem, data):
    run(MemslotGenerations(MmuConfig.npt(), private_mem), data.draw(seq(MS_OPS)), data)
