"""The simulated fault path: outcomes, retry on a racing invalidation, exits, MMIO SPTEs with
generations, memslot rules (no change on error), SNP RMP levels, migrations, and the checker."""
import pytest

from pykvmmu import private as P
from pykvmmu.errors import PykvmmuError
from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, KVM_MEM_READONLY, InvariantError, Vm, VmError
from pykvmmu.gmem import gmem_era_for_version

ENC = P.PFERR_GUEST_ENC_MASK
SH = 1 << 51


def vm_with_gmem(t, order=0, size=8 << 20):
    vm = Vm(t)
    g = vm.create_guest_memfd(size, folio_order=order)
    vm.set_memory_region(0, 0, size, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    return vm, g


def priv_ec(t):
    return ENC if t == "snp" else 0


def shared_gpa(t, gpa):
    return gpa | SH if t == "tdx" else gpa


@pytest.mark.parametrize("t", ["snp", "tdx", "sw_protected"])
def test_private_shared_and_mismatch(t):
    vm, g = vm_with_gmem(t)
    vm.convert(0x10, 4, True)
    o = vm.fault(0x10000, priv_ec(t) | 2)
    assert o.kind == "mapped" and o.is_private and o.level == 1
    o = vm.fault(shared_gpa(t, 0x20000), 2)
    assert o.kind == "mapped" and not o.is_private
    if t != "sw_protected":          # SW-protected faults take their kind from the attributes
        o = vm.fault(shared_gpa(t, 0x10000), 2)
        assert o.kind == "exit" and o.exit.flags == 0 and o.exit.gpa == 0x10000
        o = vm.fault(0x20000, priv_ec(t))
        assert o.kind == "exit" and o.exit.flags == 8 and o.exit.size == 4096
    vm.check()


@pytest.mark.parametrize("t", ["snp", "tdx"])
def test_conversion_zaps_and_refault(t):
    vm, g = vm_with_gmem(t)
    vm.convert(0x10, 1, True)
    assert vm.fault(0x10000, priv_ec(t)).kind == "mapped"
    vm.convert(0x10, 1, False)
    vm.check()
    assert not any(vm.leaves[r] for r in vm.root_names)
    assert vm.fault(shared_gpa(t, 0x10000), 0).kind == "mapped"
    vm.check()


def test_racing_conversion_retries_nothing_installed():
    vm, g = vm_with_gmem("snp")
    vm.convert(0x10, 1, True)
    o = vm.fault(0x10000, ENC, race=lambda: vm.convert(0x10, 1, False))
    assert o.kind == "retry" and not vm.leaves["direct"]
    vm.check()
    # an unrelated invalidation elsewhere also moves the seq: still a retry (seq check)
    vm.convert(0x10, 1, True)
    o = vm.fault(0x10000, ENC, race=lambda: vm.convert(0x200, 1, True))
    assert o.kind == "retry"
    assert vm.fault(0x10000, ENC).kind == "mapped"


def test_racing_punch_hole_retries():
    vm, g = vm_with_gmem("tdx")
    vm.convert(0x10, 1, True)
    o = vm.fault(0x10000, 0, race=lambda: vm.punch_hole(g, 0x10000, 0x1000))
    assert o.kind == "retry"
    vm.check()                              # nothing maps the freed page


def test_noslot_exits_and_mmio():
    vm = Vm("snp")
    o = vm.fault(0x5000, ENC)                      # the mismatch check comes first
    assert o.kind == "exit" and o.exit.private and "mismatch" in o.exit.reason
    vm.convert(0x5, 1, True)                       # attributes exist without a memslot
    o = vm.fault(0x5000, ENC)
    assert o.exit.private and "no memslot" in o.exit.reason
    o = vm.fault(0x6000, 0)
    assert o.kind == "emulate" and o.spte
    assert vm.fault(0x6000, P.PFERR_RSVD_MASK | 1).reason == "MMIO SPTE hit"
    vm.check()
    # a memslot appears over the MMIO gfn: the generation moves, the SPTE is stale, not accepted
    vm.set_memory_region(1, 0x6000, 0x1000)
    vm.check()
    o = vm.fault(0x6000, P.PFERR_RSVD_MASK | 1)
    assert o.kind == "mapped" and not o.is_private
    vm.check()


def test_private_fault_on_plain_slot_exits():
    vm = Vm("snp")
    vm.set_memory_region(0, 0, 1 << 20)
    vm.convert(0x10, 1, True)
    o = vm.fault(0x10000, ENC)
    assert o.kind == "exit" and "without guest_memfd" in o.exit.reason


def test_memslot_rules_no_change_on_error():
    vm, g = vm_with_gmem("snp", size=1 << 20)
    g2 = vm.create_guest_memfd(1 << 20)
    state = lambda: ([(s.id, s.base_gfn, s.npages, s.flags) for s in vm.slots], vm.generation,  # noqa: E731
                     len(g2.bindings))
    before = state()
    cases = [
        dict(slot_id=0, guest_phys_addr=0x200000, memory_size=1 << 20),                 # move gmem
        dict(slot_id=0, guest_phys_addr=0, memory_size=1 << 20, flags=KVM_MEM_GUEST_MEMFD | 1,
             guest_memfd=g),                                                          # flags
        dict(slot_id=1, guest_phys_addr=0x80000, memory_size=1 << 20),                 # overlap
        dict(slot_id=1, guest_phys_addr=0x800, memory_size=1 << 20),                   # alignment
        dict(slot_id=1, guest_phys_addr=1 << 30, memory_size=1 << 20, flags=KVM_MEM_READONLY),
        dict(slot_id=1, guest_phys_addr=1 << 30, memory_size=2 << 20, flags=KVM_MEM_GUEST_MEMFD,
             guest_memfd=g2),                                                         # > i_size
        dict(slot_id=1, guest_phys_addr=1 << 30, memory_size=1 << 20, flags=KVM_MEM_GUEST_MEMFD,
             guest_memfd=g2, guest_memfd_offset=0x800),
        dict(slot_id=5, guest_phys_addr=0, memory_size=0),                              # delete none
        dict(slot_id=40000, guest_phys_addr=1 << 30, memory_size=4096),
    ]
    for kw in cases:
        with pytest.raises(PykvmmuError):
            vm.set_memory_region(**kw)
        assert state() == before, kw
    old_default = Vm("default")
    old_default.gmem_era = gmem_era_for_version("6.17")     # before d1e54dd08f16 (v6.18)
    with pytest.raises(VmError, match="not valid"):
        old_default.set_memory_region(0, 0, 4096, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g2)


def test_memslot_generation_and_delete():
    vm, g = vm_with_gmem("snp", size=1 << 20)
    assert vm.nr_as_ids == 1 and vm.generation == 1
    vm.convert(0, 1, True)
    vm.fault(0, ENC)
    vm.set_memory_region(0, 0, 0)
    assert vm.generation == 2 and not vm.leaves["direct"] and not g.bindings
    vm.check()
    assert Vm("default").nr_as_ids == 2


def test_set_memory_attributes_error_leaves_state():
    vm, g = vm_with_gmem("snp")
    vm.convert(0, 1, True)
    vm.fault(0, ENC)
    snap = (vm.attrs.ranges(), vm.invalidation.snapshot(), dict(vm.leaves["direct"]))
    with pytest.raises(PykvmmuError, match="aligned"):
        vm.set_memory_attributes(0x800, 0x1000, 8)
    assert (vm.attrs.ranges(), vm.invalidation.snapshot(), dict(vm.leaves["direct"])) == snap


def test_snp_huge_folio_rmp_level_and_invariant():
    vm, g = vm_with_gmem("snp", order=9, size=4 << 20)
    vm.convert(0x200, 512, True)
    o = vm.fault(0x201000, ENC)
    assert o.kind == "mapped" and o.level == 2
    assert vm.rmp.snp_lookup_rmpentry(o.pfn) == (True, 2)
    vm.check()
    # converting one page back to shared: mixed attributes -> the 2M leaf is zapped, 4K refaults
    vm.convert(0x3ff, 1, False)
    o = vm.fault(0x201000, ENC)
    assert o.level == 1
    vm.check()
    # punch the shared page's gmem backing: the RMP 2M entry is PSMASHed, the page made shared
    vm.punch_hole(g, 0x3ff000, 0x1000)
    vm.check()
    # a corrupt RMP (NPT 4K on an unassigned page) is caught
    leaf = vm._leaf("direct", 0x201)
    vm.rmp.write_raw(leaf[2], 0, 0)
    with pytest.raises(InvariantError, match="not assigned"):
        vm.check()


def test_checker_catches_freed_and_double_mapping():
    vm, g = vm_with_gmem("tdx")
    vm.convert(0x10, 1, True)
    o = vm.fault(0x10000, 0)
    vm.host.free(o.pfn)
    with pytest.raises(InvariantError, match="freed"):
        vm.check()
    vm2, g2 = vm_with_gmem("sw_protected")
    vm2.convert(0x10, 1, True)
    o = vm2.fault(0x10000, 0)
    vm2.fault(0x20000, 0)
    vm2.leaves["direct"][0x20] = (1, o.pfn, "shared")
    vm2._set_entry("direct", 0x20, 1, int(vm2._path("direct", 0x10, 1, False)[0][0x10]))
    with pytest.raises(InvariantError):
        vm2.check()


def test_migration_snp_tdx_default():
    for t, ok in (("snp", True), ("tdx", True), ("sw_protected", False)):
        vm, g = vm_with_gmem(t)
        vm.convert(0x10, 1, True)
        o = vm.fault(0x10000, priv_ec(t))
        ans = vm.migrate_gfn(0x10)
        assert ans.ok == ok
        vm.check()
        o2 = vm.fault(0x10000, priv_ec(t))
        assert (o2.pfn != o.pfn) == ok
        if t == "tdx":
            names = [s[0] for s in ans.steps]
            assert names == ["TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "TDH.MEM.PAGE.RELOCATE"]
            assert ans.steps[0][1:] == (vm.vm_id, 0x10000, 1) and o2.kind == "spurious"
        if t == "snp":
            assert ans.steps[0][0] == "SNP_PAGE_MOVE" and ans.zapped
        vm.check()


def test_memory_failure_then_fault_exits():
    vm, g = vm_with_gmem("snp")
    vm.convert(0x10, 1, True)
    vm.fault(0x10000, ENC)
    g.memory_failure(0x10)
    assert not vm.leaves["direct"]
    o = vm.fault(0x10000, ENC)
    assert o.kind == "exit" and "hwpoison" in o.exit.reason


def test_release_then_fault_exits():
    vm, g = vm_with_gmem("tdx")
    vm.convert(0x10, 1, True)
    vm.fault(0x10000, 0)
    g.release()
    vm.check()
    o = vm.fault(0x10000, 0)
    assert o.kind == "exit" and o.exit.private


def test_populate_snp_launch_update():
    vm, g = vm_with_gmem("snp")
    vm.convert(0, 4, True)
    assert g.populate(vm.slots[0], 0, None, 4) == 4
    assert all(vm.rmp.snp_lookup_rmpentry(p)[0] for p in list(g.allocated_pfns().values()))
    assert vm.fault(0x1000, ENC).kind == "mapped"
    vm.check()


def test_policy_choice_changes_vm_behaviour():
    vm = Vm("sw_protected", policy="mask")
    g = vm.create_guest_memfd(1 << 20)
    vm.set_memory_region(0, 0, 1 << 20, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    vm.convert(0, 1, True)
    assert vm.fault(0, 0).kind == "exit"          # the bool mask design: no private source
    vm.policy = P.get_policy("upstream")
    assert vm.fault(0, 0).kind == "mapped"


@pytest.mark.parametrize("policy", list(P.POLICIES))
@pytest.mark.parametrize("t", ["snp", "tdx", "sw_protected", "default"])
def test_fault_and_decide_share_one_decision_tree(t, policy):
    """Issue 15: Vm.fault's exits are private.decide's, word for word, for every policy (one
    tree, private.faultin_action), on a VM with a plain slot, a gmem slot and no slot."""
    vm = Vm(t, policy=policy)
    vm.set_memory_region(0, 0, 1 << 20)                                   # plain: gfns 0..0xff
    if vm.has_private_mem:
        g = vm.create_guest_memfd(1 << 20)
        vm.set_memory_region(1, 1 << 20, 1 << 20, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
        vm.convert(0x10, 1, True)
        vm.convert(0x110, 1, True)
        vm.convert(0x400, 1, True)                                         # no slot
    seen = set()
    for gfn in (0x10, 0x20, 0x110, 0x120, 0x400, 0x500):
        for ec in (0, ENC, P.PFERR_RSVD_MASK, P.PFERR_PRIVATE_ACCESS):
            for gpa in {gfn << 12, shared_gpa(t, gfn << 12)}:
                d = P.decide(vm, gpa, ec, policy)
                o = vm.fault(gpa, ec)
                if o.reason == "MMIO SPTE hit":      # the RSVD fast path runs before the tree
                    continue
                if d.action == "exit":
                    assert o.kind == "exit" and o.exit == d.exit, (gpa, ec, d, o)
                    seen.add(d.exit.reason)
                else:
                    assert o.kind != "exit" or "kvm_gmem_get_pfn" in o.reason, (gpa, ec, d, o)
                    assert o.kind in ("emulate",) if d.action == "noslot" else o.kind != "emulate"
    if vm.has_private_mem and policy == "upstream":
        assert P.EXIT_NOSLOT_PRIVATE in seen and P.EXIT_NO_GMEM in seen
    vm.check()


def test_table_pool_grows_and_c_walk_matches_python_walk():
    """Issue 14: the C walk+install (csrc/vm.c) over the Vm's table pool: mapping 4K pages in
    40 different 2M regions needs more tables than the initial pool (growth re-points every
    table view); the tables walked in Python (Vm.walk) and the leaf index agree (check), a huge
    mapping replaces a subtree, and a refused-by-C case (blocked walk) takes the Python path."""
    vm = Vm("default")
    vm.set_memory_region(0, 0, 1 << 30, userspace_addr=0x7f0000000000)
    start = len(vm._tbl)
    for k in range(40):
        o = vm.fault((k * 512 + 3) << 12, 2)
        assert o.kind == "mapped" and o.level == 1, o
    assert len(vm._tbl) > start and len(vm._pt_idx) > start
    vm.check()
    st, s = vm._tdp_map("direct", 3, 1)
    assert st == 0 and s == vm.fault(3 << 12, 2).spte          # spurious: the same SPTE
    assert vm._tdp_map("direct", 3, 2)[0] == 2                 # a table below the 2M entry
    assert vm._tdp_map("direct", 1 << 30 >> 12, 1)[0] == 1      # no table for the next 1G yet
    vm.check()


def test_tdx_reserved_bit_fault_on_a_private_address_takes_the_decision_tree():
    """A TDX MMIO SPTE lives in the shared root under the shared alias: a reserved-bit fault on
    the private alias of the same gfn is not an MMIO hit but goes through the decision tree
    (upstream: a private fault on a shared gfn exits), as private.decide says."""
    vm = Vm("tdx")
    shared = shared_gpa("tdx", 0x400 << 12)
    assert vm.fault(shared, 0).reason == "MMIO SPTE installed"
    rsvd = P.PFERR_RSVD_MASK | 1
    assert vm.fault(shared, rsvd).reason == "MMIO SPTE hit"
    o, d = vm.fault(0x400 << 12, rsvd), P.decide(vm, 0x400 << 12, rsvd)
    assert o.kind == "exit" and d.action == "exit" and o.exit == d.exit
    assert o.exit.private and "mismatch" in o.exit.reason
    vm.check()
