"""Issue 14: the uncached ``Vm.fault`` path's shortcuts agree with the definitions they stand
for, on the random operations of tests/test_vm_cache.py (faults, conversions, punch holes,
poison, migration, races, memslot and setting changes; huge folios too):

- the "already mapped" test reads the table entry at the fault's level and base in the walk
  (``KVMMU_VM_F_SPURIOUS``: a present leaf of the pfn) where ``Vm._leaf`` probes the leaf
  index at every level: a fault is ``spurious`` exactly when ``_leaf`` found that very leaf,
  on the VM types here and on a VM of every configuration preset;
- outcomes built field by field (``tuple.__new__``) equal the keyword-built ``FaultOutcome``;
- the root's pool index and walk bits precomputed per privacy are those of ``_root_for``;
- ``GuestMemfd._get_pfn`` (checked gfn) answers as ``get_pfn``, which still refuses bad gfns.
"""
import zlib

import numpy as np
import pytest

from pykvmmu import private as P
from pykvmmu.gmem import GetPfn
from pykvmmu.errors import InputError
from pykvmmu.vm import FaultOutcome, Vm, VmError

from test_vm_cache import NPAGES, _apply, _ops, _state, _vm


def _same_outcomes(a, ga, b, gb, t, seed):
    """The same 1500 random operations on VMs a and b give equal outcomes, one by one."""
    last = None
    for i, op in enumerate(_ops(t, 1500, seed=zlib.crc32(seed.encode()))):
        oa, ob = _apply(a, ga, op, last), _apply(b, gb, op, last)
        if op[0] == "fault":
            last = op[1:]
        assert oa == ob, (i, op, oa, ob)


@pytest.mark.parametrize("folio_order", [0, 9])
@pytest.mark.parametrize("t", ["snp", "tdx", "sw_protected"])
def test_fault_shortcuts_match_their_definitions(t, folio_order):
    vm, g = _vm(t, "upstream", folio_order)
    vm._fc_store = lambda *a: None                      # every fault walks (the uncached path)
    for p in (True, False):
        root, idx, bits, lv_map = vm._fault_roots[p]
        assert root == vm._root_for(p) and idx == vm._pt_idx[vm.roots[root]]
        assert lv_map is vm.leaves[root]
        assert bits == vm._walk_gfn(root, 0)
    last, kinds = None, set()
    for i, op in enumerate(_ops(t, 1500, seed=zlib.crc32(f"fast{t}{folio_order}".encode()))):
        before = None
        if op[0] == "fault":
            gfn = (op[1] >> 12) & ~vm.gfn_direct_bits
            before = {r: vm._leaf(r, gfn) for r in vm.root_names}
        o = _apply(vm, g, op, last)
        if op[0] == "fault":
            last = op[1:]
        if not isinstance(o, FaultOutcome):
            continue
        assert type(o) is FaultOutcome and o == FaultOutcome(**o._asdict()), (i, op, o)
        kinds.add(o.kind)
        if before is not None and o.kind in ("mapped", "spurious"):
            root = vm._root_for(o.is_private)
            cur = before[root]
            base = o.gfn & ~((1 << (9 * (o.level - 1))) - 1)
            was = cur is not None and cur[0] == o.level and cur[1] == base and cur[2] == o.pfn
            assert (o.kind == "spurious") == was, (i, op, o, cur)
            assert vm._leaf(root, o.gfn) == (o.level, base, o.pfn)
    assert {"mapped", "spurious", "exit", "emulate"} <= kinds
    vm.check()


def test_get_pfn_checked_and_unchecked_agree():
    vm, g = _vm("snp", "upstream", 9)
    slot = vm.slot_of(0)
    a = g.get_pfn(slot, 5)
    b = g._get_pfn(slot, 5)
    assert type(a) is type(b) is GetPfn and a.pfn == b.pfn and a.max_order == b.max_order
    assert a.prepared_now and not b.prepared_now
    for bad in (-1, 1 << 64, 5.0, "5"):
        with pytest.raises(InputError):
            g.get_pfn(slot, bad)
    with pytest.raises(InputError):
        g.get_pfn(slot, NPAGES + 3)             # outside the slot: the same refusal


@pytest.mark.parametrize("t", ["snp", "tdx", "sw_protected", "default"])
def test_upstream_shortcut_is_classify_then_resolve(t):
    """The VM's bound private._upstream_fault_fn (the fault path's one call) answers (gfn,
    is_private) exactly when UpstreamPolicy's classify() then resolve() neither warn nor exit,
    and then with their gfn and privacy; synthetic bits, RSVD, both TDX aliases and
    mismatches; rebound when sw_protected_enabled changes; other policies bind none."""
    if t == "default":
        vm = Vm("default")
        vm.set_memory_region(0, 0, NPAGES << 12)
    else:
        vm, _ = _vm(t, "upstream", 0)
    pol = P.get_policy("upstream")
    rng = np.random.default_rng(zlib.crc32(t.encode()))
    shared = P.gfn_direct_bits(t) << 12
    bits = (0, P.PFERR_GUEST_ENC_MASK, P.PFERR_RSVD_MASK, P.PFERR_PRIVATE_ACCESS,
            P.PFERR_IMPLICIT_ACCESS, P.PFERR_WRITE_MASK)
    seen = set()
    for i in range(3000):
        if i == 1500:
            vm.sw_protected_enabled = False
        gpa = (int(rng.integers(0, NPAGES + 32)) << 12) | int(rng.integers(0, 4096)) | \
            (shared if rng.integers(0, 2) else 0)
        ec = sum(b for b in bits if rng.integers(0, 3) == 0)
        c = pol.classify(vm, gpa, ec)
        is_private, ex = pol.resolve(vm, c)
        got = vm._fast_fault(gpa, ec)
        assert got == P._upstream_fault_fn(vm, vm.is_private)(gpa, ec)
        want = None if c.warnings or ex is not None else (c.gfn, is_private)
        assert got == want, (gpa, ec, got, want)
        assert got is None or type(got[1]) is bool
        seen.add(want is None)
    assert seen == {True, False}
    for p in ("rfc-v9", P.UpstreamPolicy(), "upstream"):
        vm.policy = p
        assert (vm._fast_fault is None) is (p == "rfc-v9")


@pytest.mark.parametrize("t", ["snp", "tdx", "sw_protected"])
def test_fast_policy_changes_no_outcome(t):
    """Vm.fault with the upstream shortcut and without it (``_fast_policy`` off: classify()
    and resolve() every fault) give the same outcomes, statistics and state on the random
    operations of tests/test_vm_cache.py; a policy object whose steps are overridden per
    object, or another policy, never takes the shortcut."""
    a, ga = _vm(t, "upstream", 0)
    b, gb = _vm(t, "upstream", 0)
    assert a._fast_policy and b._fast_policy and a._fast_fault and b._fast_fault
    b._fast_fault = None
    b.vm_id = a.vm_id                                   # (TDX SEAMCALLs name the VM)
    _same_outcomes(a, ga, b, gb, t, f"pol{t}")
    assert _state(a) == _state(b)
    a.check()
    odd = P.UpstreamPolicy()
    odd.classify = lambda ctx, gpa, ec: P.kvm_mmu_do_page_fault(ctx, gpa, ec)
    for p in (odd, "rfc-v9", P.UpstreamPolicy()):
        a.policy = p
        assert a._fast_policy is (p.__class__ is P.UpstreamPolicy and not vars(p))
        assert (a._fast_fault is not None) is a._fast_policy


def test_rmp_make_private_4k_is_the_public_call():
    """rmp._rmp_make_private_4k (the SNP prepare hook's call) = rmp_make_private(..., 4K, ...,
    False): return value, last_rc and the table, on fresh, assigned, 2M-covered and uncovered
    pfns; a read-only table and out-of-range operands are refused the same way."""
    from pykvmmu.rmp import RmpError, RmpTable, _rmp_make_private_4k
    mem = 64 << 20
    ta, tb = RmpTable.create(mem), RmpTable.create(mem)
    n = mem >> 12
    for t in (ta, tb):
        t.rmp_make_private(1024, 0x200000, 2, 7, False)         # a 2M private entry
        t.set_in_use(2048 + 3)                                   # a locked entry
    cases = [(5, 0x5000, 1), (5, 0x5000, 1), (6, 0x9000, 3), (1024 + 9, 0x1000, 7),
             (2048 + 3, 0x3000, 1), (n - 1, 0x7000, 2), (n, 0x7000, 2), (n + 5000, 0, 1),
             (7, 0x7001, 1), (7, 0x7000, 5000), (7, 1 << 60, 1)]
    for pfn, gpa, asid in cases:
        ra = ta.rmp_make_private(pfn, gpa, 1, asid, False)
        rb = _rmp_make_private_4k(tb, pfn, gpa, asid)
        assert (ra, ta.last_rc) == (rb, tb.last_rc), (pfn, gpa, asid)
        assert np.array_equal(ta.buffer, tb.buffer)
    for pfn, gpa, asid in ((-1, 0, 1), (5, -1, 1), (5, 0, 1 << 32), (5, 1 << 64, 1), (5.0, 0, 1)):
        with pytest.raises(InputError) as ea:
            ta.rmp_make_private(pfn, gpa, 1, asid, False)
        with pytest.raises(InputError) as eb:
            _rmp_make_private_4k(tb, pfn, gpa, asid)
        assert (type(ea.value), str(ea.value)) == (type(eb.value), str(eb.value))
        assert np.array_equal(ta.buffer, tb.buffer)
    ro = RmpTable.open(tb.buffer.copy(), mode="r")
    with pytest.raises(RmpError) as ea:
        ro.rmp_make_private(5, 0, 1, 1, False)
    with pytest.raises(RmpError) as eb:
        _rmp_make_private_4k(ro, 5, 0, 1)
    assert str(ea.value) == str(eb.value)
    ta.close()
    with pytest.raises(RmpError, match="closed"):
        _rmp_make_private_4k(ta, 5, 0, 1)


def test_fault_map_is_tdp_map():
    """kvmmu_vm_fault_map (the fault path's call, per-VM arguments in struct kvmmu_vm_fault)
    = kvmmu_vm_tdp_map with those arguments: status, SPTE, stop level and the pool."""
    from pykvmmu import spte as S
    from pykvmmu._ffi import ffi, lib
    from pykvmmu.config import ACC_ALL
    vm, _ = _vm("snp", "upstream", 0)
    for gfn in range(0, NPAGES, 3):
        vm.fault(gfn << 12, P.PFERR_GUEST_ENC_MASK if vm.is_private(gfn) else 0)
    fm = vm._fm
    assert (fm.pte_access, fm.mkflags, fm.memtype) == (ACC_ALL, vm._mk, S.MEMTYPE_AUTO)
    sp, lv = ffi.new("uint64_t *"), ffi.new("uint32_t *")
    root = vm._pt_idx[vm.roots["direct"]]
    rng = np.random.default_rng(3)
    for _ in range(400):
        gfn, level = int(rng.integers(0, 1 << 22)), int(rng.integers(1, 4))
        pfn, flags = int(rng.integers(0, 1 << 20)), int(rng.integers(0, 4))
        leaf = vm._leaf("direct", gfn)
        if leaf is not None and rng.integers(0, 2):         # (F_SPURIOUS: its own pfn too)
            level, gfn, pfn = leaf
        tbl = vm._tbl.copy()
        a = lib.kvmmu_vm_tdp_map(vm._c, vm._tdp, root, gfn, level, pfn, ACC_ALL, vm._mk,
                                 S.MEMTYPE_AUTO, flags, sp, lv)
        after_a = vm._tbl.copy()
        vm._tbl[:] = tbl
        b = lib.kvmmu_vm_fault_map(fm, root, gfn, level, pfn, flags)
        assert (a, sp[0], lv[0]) == (b, fm.spte, fm.stop_level)
        assert np.array_equal(after_a, vm._tbl)


@pytest.mark.parametrize("folio_order", [0, 9])
@pytest.mark.parametrize("t", ["snp", "tdx", "sw_protected"])
def test_gmem_fields_shortcut_changes_no_outcome(t, folio_order):
    """Vm.fault through GuestMemfd._get_pfn_fields (plain fields, the file not re-checked) and
    through the public get_pfn (checked gfn, file check, a GetPfn) give the same outcomes,
    statistics and state on the random operations of tests/test_vm_cache.py, with the fault
    cache off (every fault walks); the bound gfn_to_memslot is the VM's memslot set's."""
    a, ga = _vm(t, "upstream", folio_order)
    b, gb = _vm(t, "upstream", folio_order)
    b.vm_id = a.vm_id                                   # (TDX SEAMCALLs name the VM)
    calls = [0]

    def full(slot, gfn):
        calls[0] += 1
        del gb._get_pfn_fields                          # the class's, under the public call
        try:
            r = gb.get_pfn(slot, gfn)
        finally:
            gb._get_pfn_fields = full
        assert type(r) is GetPfn
        return tuple(r)
    for vm in (a, b):
        vm._fc_store = lambda *args: None
        assert vm._slot_at.__self__ is vm.memslots
    gb._get_pfn_fields = full
    _same_outcomes(a, ga, b, gb, t, f"gmem{t}{folio_order}")
    assert calls[0] > 100
    del gb._get_pfn_fields
    assert _state(a) == _state(b) and a.stats == b.stats
    a.check()
    b.check()


def test_refused_fast_path_calls_change_nothing():
    """The u64 fast path of ``Vm.fault`` (plain ints, warm cache) and ``get_pfn`` through
    ``_bound_index`` refuse before anything changes (stats, cache, folios, tables)."""
    vm, g = _vm("snp", "upstream", 9)
    enc = P.PFERR_GUEST_ENC_MASK
    vm.fault(0x5000, enc)
    vm.fault(0x5000, enc)
    slot = vm.slot_of(0)
    before, gbefore = vm._snapshot(), g._snapshot()
    for gpa, ec in ((-0x5000, enc), (0x5000 + (1 << 64), enc), (0x5000, -1), (0x5000, 1 << 64)):
        with pytest.raises(VmError):
            vm.fault(gpa, ec)
    for bad in (-1, 1 << 64, 5.0, "5", NPAGES + 3):
        with pytest.raises(InputError):
            g.get_pfn(slot, bad)
    assert vm._snapshot() == before and g._snapshot() == gbefore


def test_refused_migrate_keeps_the_fault_cache():
    """A refused ``migrate_gfn`` (no folio behind the gfn) changes nothing, its fault cache
    included: a cached fault of the same gfn (here the TDX shared alias) stays (found by
    tests/test_trust_stateful.py: the cache entry used to be dropped in a ``finally``)."""
    from pykvmmu import gmem as G
    from pykvmmu.vm import KVM_MEM_GUEST_MEMFD
    vm = Vm("tdx", host=G.HostMemory(nr_pfns=1 << 13))
    g = vm.create_guest_memfd(0x400000)
    vm.set_memory_region(0, 0, 0x200000, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    shared = vm.gfn_direct_bits << 12
    assert vm.fault(shared, 0).kind == "mapped"
    assert vm.fault(shared, 0).kind == "spurious" and vm._fc
    before = vm._snapshot()
    with pytest.raises(G.GmemError, match="no folio"):
        vm.migrate_gfn(0)
    assert vm._snapshot() == before


def test_slot_actions_are_faultin_action_and_kind_stays_current():
    """Vm.fault's per-kind verdicts (vm._SLOT_ACTIONS, from private.FAULTIN_ACTIONS) are
    faultin_action's action for every memslot kind and privacy, None exactly where it exits;
    Memslot._kind (what the fault path reads) equals kind() through flag and gmem_only changes,
    and a memslot's equality ignores it."""
    from pykvmmu import vm as V
    from pykvmmu.memslots import KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, Memslot
    kinds = {k.value for k in P.SlotKind}
    assert set(V._SLOT_ACTIONS) == kinds
    for kind in kinds:
        for private in (False, True):
            action, ex = P.faultin_action(7, private, None, kind)
            assert V._SLOT_ACTIONS[kind][private] == (None if ex is not None else action)
            assert action != "noslot"
    rng = np.random.default_rng(5)
    s = Memslot(1, 0, 8, 0)
    for _ in range(64):
        if rng.integers(0, 2):
            s.flags = int(rng.choice([0, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES,
                                      KVM_MEM_GUEST_MEMFD | KVM_MEM_LOG_DIRTY_PAGES]))
        else:
            s.gmem_only = bool(rng.integers(0, 2))
        assert s._kind == s.kind()
        t = Memslot(1, 0, 8, 0, s.flags, gmem_only=s.gmem_only)
        assert t == s and t._kind == s._kind
    vm, _ = _vm("snp", "upstream", 0)
    assert [sl._kind for sl in vm.slots] == [sl.kind() for sl in vm.slots] == ["gmem", "plain"]


@pytest.mark.parametrize("preset", sorted({c.mode for c in __import__(
    "pykvmmu.config", fromlist=["MmuConfig"]).MmuConfig.all_presets()}))
def test_spurious_from_the_table_is_the_leaf_index_on_every_preset(preset):
    """On a VM of each configuration preset, a repeated fault is ``spurious`` (found by the C
    walk from the table entry) exactly when the leaf index holds that very leaf, and a fault
    on a page whose leaf was zapped maps it again."""
    from pykvmmu.config import MmuConfig
    vm = Vm("default", cfg=MmuConfig.preset(preset))
    vm.set_memory_region(0, 0, 256 << 12)
    for rnd in range(3):
        for gfn in range(0, 256, 5):
            had = vm._leaf("direct", gfn)
            o = vm.fault(gfn << 12, 2)
            assert (o.kind == "spurious") == (had == (o.level, gfn, o.pfn)), (preset, rnd, o)
            assert o.kind == ("mapped" if rnd == 0 or gfn % 3 == 0 and rnd == 2 else "spurious")
        if rnd == 1:
            for gfn in range(0, 256, 15):
                vm._zap_gfn_range(gfn, gfn + 1, 3)
    vm.check()
