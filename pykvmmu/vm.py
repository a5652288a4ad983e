"""A simulated confidential VM: memslots, memory attributes, guest_memfd, a TDP page table of
numpy SPTE pages and (SNP) an RMP, tied together by the KVM x86 page-fault path.

``Vm.fault(gpa, error_code)`` follows ``kvm_mmu_page_fault`` -> ``kvm_mmu_do_page_fault`` ->
``kvm_tdp_page_fault``: the MMIO fast path for reserved-bit faults, classification (a
:mod:`pykvmmu.private` policy), the ``mmu_invalidate_seq`` snapshot, the private/shared mismatch
rule, the no-slot and no-gmem exits, faultin (host memory or guest_memfd), the max mapping level
(slot bounds, uniform attributes, guest_memfd order, the vendor hook), the staleness re-check
under mmu_lock, ``make_spte`` and installation (or an MMIO SPTE).  Conversions
(``KVM_SET_MEMORY_ATTRIBUTES``), punch holes, memslot updates and page migrations zap what they
must.  :meth:`Vm.check` verifies the invariants after any step.
"""
from __future__ import annotations

import errno as _errno
import functools
import operator
from typing import Callable, NamedTuple, Optional

import numpy as np

from . import mmio as M
from . import private as P
from . import spte as S
from .memslots import (KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
                       KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS, KVM_USER_MEM_SLOTS, Memslot,
                       MemslotGenerations, MemslotSet, VmError, check_memory_region_flags,
                       kvm_arch_nr_memslot_as_ids)
from .private import _A_EXIT, _A_SHARED
from .rmp import RmpTable, sev_private_max_mapping_level
from .rmp import _rmp_make_private_4k as _make_private_4k
from ._batch import tuple_new, uint
from ._check import boolean, choice, in_range, snapshot, u64
from .attrs import (KVM_MEMORY_ATTRIBUTE_PRIVATE, MemoryAttributes, MmuInvalidation,
                    kvm_supported_mem_attributes)
from .config import ACC_ALL, MmuConfig
from ._ffi import ffi, lib
from .gmem import (KVM_FILTER_PRIVATE, KVM_FILTER_SHARED, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K,
                   GmemError, GmemHooks, GuestMemfd, HostMemory, MigrateAnswer, MmuLock,
                   gmem_era_of, order_to_level)

__all__ = ["Vm", "Memslot", "FaultOutcome", "VmError", "InvariantError", "SnpHooks", "TdxHooks",
           "KVM_MEM_LOG_DIRTY_PAGES", "KVM_MEM_READONLY", "KVM_MEM_GUEST_MEMFD"]

#: The RMP entry's ASID field is 10 bits; 0 is the hypervisor and 0x3FF RMP_INVALID_ASID.
SEV_ASID_MAX = 0x3FE
PAGES = {1: 1, 2: 512, 3: 512 * 512, 4: 512 ** 3, 5: 512 ** 4}
_PFERR_RSVD = P.PFERR_RSVD_MASK
_U64_END = 1 << 64
#: The gfn mask of a leaf's base at each level.
_LEVEL_MASK = {lv: ~(n - 1) for lv, n in PAGES.items()}
_VM_OK, _VM_SPURIOUS = lib.KVMMU_VM_OK, lib.KVMMU_VM_SPURIOUS
_F_MAKE_SPURIOUS = lib.KVMMU_VM_F_MAKE | lib.KVMMU_VM_F_SPURIOUS
_fault_map = lib.kvmmu_vm_fault_map
#: The built-in policies: pure functions of (VM type, gpa, error code, attributes, memslot
#: kind), so that their verdict on a cached fault stands until one of those changes.
_PURE_POLICIES = frozenset(type(p) for p in P.POLICIES.values())
_faultin_action = P.faultin_action
#: memslot kind -> faultin_action's verdict for a (shared, private) fault (None: an exit,
#: built by the function)
_SLOT_ACTIONS = P.FAULTIN_ACTIONS


def _fault_input(name: str, check: Callable[[Vm, object], object], doc: str) -> property:
    """A :class:`Vm` setting that the fault path reads, stored checked as ``_<name>``:
    setting it checks the value (``check(vm, value)``, which refuses a bad one before
    anything changes) and empties the fault cache, whose entries assumed the old value."""
    attr = "_" + name

    def set_input(vm: Vm, value: object) -> None:
        setattr(vm, attr, check(vm, value))
        vm._fc.clear()
        vm._bind_fault_path()
    return property(operator.attrgetter(attr), set_input, doc=doc)


def _checked_policy(vm: Vm, value) -> P.FaultPolicy:
    value = P.get_policy(value)
    vm._fc_policy_ok = type(value) in _PURE_POLICIES
    # the built-in upstream policy as it is (no per-object override of its steps): the fault
    # path may take its checked-value shortcut (private._upstream_fault_fn, see _bind_fault_path)
    vm._fast_policy = type(value) is P.UpstreamPolicy and not vars(value)
    return value


def _checked_max_level(value) -> int:
    return in_range("max_level", value, PG_LEVEL_4K, PG_LEVEL_1G, "PG_LEVEL_4K..PG_LEVEL_1G",
                    err=VmError)


def _checked_gmem_hooks(vm: Vm, value) -> GmemHooks:
    if not isinstance(value, GmemHooks):
        raise VmError(f"gmem_hooks={value!r}: expected a GmemHooks (or subclass)")
    return value


class InvariantError(AssertionError):
    """:meth:`Vm.check` found a broken invariant (the message says which and where)."""


class FaultOutcome(NamedTuple):
    """What ``vm.fault`` did: ``kind`` is ``mapped`` (at ``level``), ``spurious`` (already
    mapped), ``emulate`` (MMIO; ``spte`` is the MMIO SPTE if one was installed), ``exit``
    (``exit`` is the KVM_EXIT_MEMORY_FAULT), or ``retry`` (stale fault, nothing installed).
    Immutable (a named tuple: one is built per fault)."""

    kind: str
    gfn: int
    is_private: bool = False
    level: int = 0
    pfn: int = 0
    spte: int = 0
    exit: Optional[P.MemoryFaultExit] = None
    reason: str = ""

    def __str__(self) -> str:
        if self.kind in ("mapped", "spurious"):
            sz = {1: "4K", 2: "2M", 3: "1G"}[self.level]
            return (f"{self.kind} gfn {self.gfn:#x} {'private' if self.is_private else 'shared'} "
                    f"-> pfn {self.pfn:#x} at {sz} (spte {self.spte:#018x})")
        if self.kind == "exit":
            return f"exit: {self.exit}"
        if self.kind == "emulate":
            return f"emulate MMIO gfn {self.gfn:#x}" + (f" (MMIO spte {self.spte:#018x})"
                                                         if self.spte else " (no SPTE)") \
                + (f": {self.reason}" if self.reason else "")
        return f"{self.kind} gfn {self.gfn:#x}: {self.reason}"


#: A FaultOutcome from all eight fields in order (``_batch.tuple_new`` through a C partial: no
#: Python frame, no defaults to fill; the fault path builds one or two per fault).
_outcome = functools.partial(tuple_new, FaultOutcome)


# ---------------------------------------------------------------------- vendor hooks
class SnpHooks(GmemHooks):
    """SEV-SNP: ``sev_gmem_prepare`` (RMP private, 2M when the folio is large and its whole 2M
    pfn range is shared), ``sev_gmem_invalidate`` (back to shared; PSMASH first when only part
    of a 2M entry is freed), ``sev_gmem_max_mapping_level`` (the RMP level), SNP_LAUNCH_UPDATE
    as post-populate, and a firmware page move as the migration answer."""

    name = "snp"

    def __init__(self, vm: "Vm"):
        self.vm = vm

    def prepare(self, kvm, gfn, pfn, max_order):
        rmp = self.vm.rmp
        assigned, _ = rmp.snp_lookup_rmpentry(pfn)
        if assigned:
            return 0
        base = pfn & ~511
        if max_order >= 9 and rmp.count_assigned(base, 512) == 0:
            level, p, g = PG_LEVEL_2M, base, gfn & ~511
        else:
            level, p, g = PG_LEVEL_4K, pfn, gfn
        rc = _make_private_4k(rmp, p, g << 12, self.vm.asid) if level == PG_LEVEL_4K else \
            rmp.rmp_make_private(p, g << 12, level, self.vm.asid, False)
        if self.vm.trace is not None:
            self.vm._log("rmp_make_private", pfn=p, gpa=g << 12, level=level, rc=rc)
        return rc

    def invalidate(self, start_pfn, end_pfn):
        rmp = self.vm.rmp
        pfn = start_pfn
        while pfn < end_pfn:
            assigned, level = rmp.snp_lookup_rmpentry(pfn)
            if not assigned:
                pfn += 1
                continue
            if level == PG_LEVEL_2M and pfn % 512 == 0 and pfn + 512 <= end_pfn:
                rmp.rmp_make_shared(pfn, PG_LEVEL_2M)
                self.vm._log("rmp_make_shared", pfn=pfn, level=PG_LEVEL_2M)
                pfn += 512
                continue
            if level == PG_LEVEL_2M:
                rmp.psmash(pfn & ~511)
                self.vm._log("psmash", pfn=pfn & ~511)
            rmp.rmp_make_shared(pfn, PG_LEVEL_4K)
            self.vm._log("rmp_make_shared", pfn=pfn, level=PG_LEVEL_4K)
            pfn += 1

    def max_mapping_level(self, kvm, pfn, is_private):
        return sev_private_max_mapping_level(self.vm.rmp, pfn) if is_private else 0

    def post_populate(self, kvm, gfn, pfn, src, opaque):
        rc = self.vm.rmp.rmp_make_private(pfn, gfn << 12, PG_LEVEL_4K, self.vm.asid, False)
        self.vm._log("SNP_LAUNCH_UPDATE", gfn=gfn, pfn=pfn, rc=rc)
        return rc

    def migrate(self, kvm, slot, gfn, level, old_pfn, new_pfn):
        vm = self.vm
        assert vm.mmu_lock_held, "the migration hook runs under the MMU lock"
        rmp = vm.rmp
        assigned, rlevel = rmp.snp_lookup_rmpentry(old_pfn)
        zapped = vm._zap_gfn_range(gfn, gfn + 1, KVM_FILTER_PRIVATE | KVM_FILTER_SHARED)
        if not assigned:
            return MigrateAnswer(True, 0, ("page not assigned in the RMP: plain copy",), zapped)
        if rlevel == PG_LEVEL_2M:
            rmp.psmash(old_pfn & ~511)
        e = rmp.entry(old_pfn)
        rmp.write_raw(new_pfn, e.lo, e.hi)      # the PSP copies contents and RMP state
        rmp.write_raw(old_pfn, 0, 0)            # the old page returns to the hypervisor
        vm._log("SNP_PAGE_MOVE", old_pfn=old_pfn, new_pfn=new_pfn, gfn=gfn)
        return MigrateAnswer(True, 0, (("SNP_PAGE_MOVE", old_pfn, new_pfn, PG_LEVEL_4K),), zapped)


class TdxHooks(GmemHooks):
    """TDX: no prepare/invalidate (S-EPT AUG at map time), 4K private mappings
    (``tdx_gmem_max_mapping_level``), TDH.MEM.PAGE.ADD as post-populate, and the
    BLOCK/TRACK/RELOCATE SEAMCALL sequence (VM id, gfn, level) as the migration answer."""

    name = "tdx"

    def __init__(self, vm: "Vm"):
        self.vm = vm
        self.seamcalls: list = []

    def max_mapping_level(self, kvm, pfn, is_private):
        return PG_LEVEL_4K if is_private else 0

    def post_populate(self, kvm, gfn, pfn, src, opaque):
        self.seamcalls.append(("TDH.MEM.PAGE.ADD", self.vm.vm_id, gfn << 12, pfn))
        return 0

    def migrate(self, kvm, slot, gfn, level, old_pfn, new_pfn):
        vm = self.vm
        assert vm.mmu_lock_held, "TDX SEAMCALLs on the S-EPT run under the MMU lock"
        leaf = vm._leaf("private", gfn)
        if leaf is None:
            return MigrateAnswer(True, 0, ("not mapped in the S-EPT: plain copy",))
        lvl, base, _pfn = leaf
        gpa = base << 12
        steps = (("TDH.MEM.RANGE.BLOCK", vm.vm_id, gpa, lvl),
                 ("TDH.MEM.TRACK", vm.vm_id),
                 ("TDH.MEM.PAGE.RELOCATE", vm.vm_id, gpa, lvl, new_pfn << 12))
        self.seamcalls.extend(steps)
        vm._relocate_leaf("private", base, lvl, new_pfn)
        vm._log("TDX relocate", gfn=gfn, old_pfn=old_pfn, new_pfn=new_pfn, level=lvl)
        return MigrateAnswer(True, 0, steps)


# ---------------------------------------------------------------------- the VM
class Vm(MmuLock):
    """One VM of a given type (``"snp"``, ``"tdx"``, ``"sw_protected"``, ``"default"``...)."""

    _policy: P.FaultPolicy      # behind the checked properties policy, max_level, gmem_hooks
    _max_level: int
    _gmem_hooks: GmemHooks

    _next_id = 1
    #: ``kvm_mem_is_private(gfn) -> bool``: each VM binds its attribute store's method (one
    #: call per query).
    is_private: Callable[[int], bool]
    #: Whether the policy is one of the built-in pure ones (see _fc_store).
    _fc_policy_ok: bool
    #: Whether the policy is the built-in upstream one (see _checked_policy).
    _fast_policy: bool
    #: The upstream policy's classify + resolve on checked values, bound to this VM
    #: (private._upstream_fault_fn; None: another policy, see _bind_fault_path).
    _fast_fault: Optional[Callable[[int, int], Optional[tuple]]]

    def __init__(self, vm_type="snp", *, cfg: Optional[MmuConfig] = None, gpaw: int = 52,
                 policy=None, host: Optional[HostMemory] = None, rmp=None, hooks=None,
                 asid: int = 1, folio_order: int = 0, max_level: int = PG_LEVEL_1G,
                 log: bool = False):
        vt = P.vm_type_number(vm_type)
        if vt in (P.KVM_X86_SEV_VM, P.KVM_X86_SEV_ES_VM, P.KVM_X86_SNP_VM):
            asid = in_range("asid", asid, 1, SEV_ASID_MAX, "an SEV guest ASID: 1..0x3fe (10-bit "
                            "RMP field; 0 is the hypervisor, 0x3ff RMP_INVALID_ASID)", err=VmError)
        else:
            asid = uint("asid", asid, 32, err=VmError)
        gpaw = choice("gpaw", gpaw, (48, 52), err=VmError)
        if isinstance(folio_order, bool) or folio_order not in (0, 9) or \
                not isinstance(folio_order, int):
            raise VmError(f"folio_order={folio_order!r}: 0 (upstream) or 9 (2 MiB folios)")
        max_level = _checked_max_level(max_level)
        log = boolean("log", log, err=VmError)
        if cfg is not None and not isinstance(cfg, MmuConfig):
            raise VmError(f"cfg={cfg!r}: expected an MmuConfig or None")
        if host is not None and not isinstance(host, HostMemory):
            raise VmError(f"host={host!r}: expected a HostMemory or None")
        if hooks is not None and not isinstance(hooks, GmemHooks):
            raise VmError(f"hooks={hooks!r}: expected a GmemHooks (or subclass) or None")
        if rmp is not None:
            if not isinstance(rmp, RmpTable):
                raise VmError(f"rmp={rmp!r}: expected an RmpTable or None")
        policy = P.get_policy(policy)
        # The fault cache: gpa >> 12 -> (gpa, error_code, outcome or its fields) of a fault that
        # would now be "spurious" (see _fc_store); dropped per gfn range by everything that
        # changes an input.
        self._fc: dict = {}
        self.vm_type = vt
        self.type_name = P.vm_type_name(self.vm_type)
        self.vm_id = Vm._next_id
        Vm._next_id += 1
        self.asid = asid
        if cfg is None:
            cfg = MmuConfig.preset({P.KVM_X86_TDX_VM: "tdx", P.KVM_X86_SNP_VM: "npt-sme",
                                    P.KVM_X86_SEV_VM: "npt-sme", P.KVM_X86_SEV_ES_VM: "npt-sme"}
                                   .get(self.vm_type, "ept"))
        self.cfg = cfg
        self._c = cfg._cptr
        self.gpaw = gpaw
        self.gfn_direct_bits = P.gfn_direct_bits(self.vm_type, gpaw)
        self.has_private_mem = P.has_private_mem(self.vm_type)
        self.has_protected_state = P.has_protected_state(self.vm_type)
        self._sw_protected_enabled = True
        self.policy = policy
        self.host = host or HostMemory()
        self.attrs = MemoryAttributes(kvm_supported_mem_attributes(self.has_private_mem))
        self.is_private = self.attrs.is_private     # kvm_mem_is_private: one call per query
        self.invalidation = MmuInvalidation()
        self.nr_as_ids = kvm_arch_nr_memslot_as_ids(self.has_private_mem)
        self.memslots = MemslotSet()            # address space 0 (private-memory VMs have one)
        self._gens = MemslotGenerations(cfg, self.has_private_mem)
        self.gmems: list = []
        self.folio_order = folio_order
        self._max_level = max_level
        self.levels = 5 if gpaw == 52 and self.vm_type == P.KVM_X86_TDX_VM else 4
        self.mmu_lock_held = 0
        self.trace: Optional[list] = [] if log else None
        self._shared_pfn: dict = {}            # hva page -> host pfn (the host's shared memory)
        self._max_gfn = (1 << (cfg.maxphyaddr - 12)) - 1
        # TDP roots: TDX has a mirror (private, S-EPT) root and a direct (shared) root.
        self.root_names = ("private", "shared") if self.vm_type == P.KVM_X86_TDX_VM else ("direct",)
        self.pages: dict = {}                  # table pa -> np.ndarray[512] uint64 (pool view)
        # The table pool walked by csrc/vm.c: SPTEs, and per entry the pool index of the child
        # table it points to (-1: not a pointer); table pa -> pool index; free pool indexes.
        self._tbl = np.empty((0, 512), dtype=np.uint64)
        self._child = np.empty((0, 512), dtype=np.int32)
        self._pt_idx: dict = {}
        self._pt_free: list = []
        self._tdp = ffi.new("struct kvmmu_vm_tdp *")
        self._tdp.levels = self.levels
        self._tdp.nonpresent = cfg.profile.nonpresent_value
        self._grow_pool(16)
        self._mk = S._mkflags(False, False, True, False, not cfg.ad_enabled, False, False,
                              cfg.nx_huge_pages)
        self._out_spte = ffi.new("uint64_t *")
        self._out_level = ffi.new("uint32_t *")
        # the fault path's kvmmu_vm_fault_map: the per-VM arguments once, the outputs read back
        fm = self._fm = ffi.new("struct kvmmu_vm_fault *")
        fm.cfg, fm.tdp = self._c, self._tdp
        fm.pte_access, fm.mkflags, fm.memtype = ACC_ALL, self._mk, S.MEMTYPE_AUTO
        self.roots = {r: self._alloc_table() for r in self.root_names}
        self.leaves: dict = {r: {} for r in self.root_names}  # base gfn -> (level, pfn, kind)
        # [is_private] -> (root, its pool index, the bits its walk adds to a gfn, its leaf
        # index): the fault path's root (roots are never freed, pool indexes never move, a
        # root's leaf index is emptied in place, never replaced).
        self._fault_roots = tuple(
            (r, self._pt_idx[self.roots[r]], self._walk_gfn(r, 0), self.leaves[r])
            for r in (self._root_for(False), self._root_for(True)))
        self._slot_at = self.memslots.at        # gfn_to_memslot on a checked gfn (bound once)
        self.stats = dict(faults=0, mapped=0, exits=0, retries=0, emulate=0, zapped=0)
        if self.vm_type == P.KVM_X86_SNP_VM:
            if rmp is None:
                rmp = RmpTable.create(self.host.max_pfn() << 12)
            self.rmp = rmp
        else:
            self.rmp = rmp
        if hooks is None:
            hooks = {P.KVM_X86_SNP_VM: SnpHooks, P.KVM_X86_TDX_VM: TdxHooks}.get(
                self.vm_type, lambda vm: GmemHooks())(self)
        self._gmem_hooks = hooks
        self.attrs.on_store = self._fc_drop
        self._bind_fault_path()

    # ------------------------------------------------------------------ settings
    # Inputs of the fault path that users may replace: setting one empties the fault cache.
    policy = _fault_input("policy", _checked_policy, "The classification policy "
                          "(:func:`pykvmmu.private.get_policy`: a name or an object).")
    max_level = _fault_input("max_level", lambda vm, value: _checked_max_level(value),
                             "The largest page level a fault may map (``max_huge_page_level``).")
    gmem_hooks = _fault_input("gmem_hooks", _checked_gmem_hooks, "The vendor's guest_memfd hooks "
                              "(:class:`SnpHooks`, :class:`TdxHooks`...).")
    sw_protected_enabled = _fault_input(
        "sw_protected_enabled", lambda vm, value: boolean("sw_protected_enabled", value, err=VmError),
        "``CONFIG_KVM_SW_PROTECTED_VM`` (SW-protected VMs take privacy from the attributes).")

    def _bind_fault_path(self) -> None:
        """Bind the fault path's per-VM choice after a setting changed: the upstream policy's
        checked-value shortcut for this VM's type and attributes
        (:func:`pykvmmu.private._upstream_fault_fn`, which reads ``sw_protected_enabled`` at
        each call), or None for any other policy.  (During ``__init__``, before the attributes
        exist, nothing: its end binds.)"""
        attrs = getattr(self, "attrs", None)
        if attrs is None:
            return
        self._fast_fault = P._upstream_fault_fn(self, attrs.is_private) if self._fast_policy else None

    # ------------------------------------------------------------------ fault cache
    def _fc_drop(self, start: int, end: int) -> None:
        """Forget the cached faults of gfns [start, end) (either TDX alias of each)."""
        fc = self._fc
        if not fc or start >= end:
            return
        d = self.gfn_direct_bits
        if end - start > len(fc):
            for k in [k for k in fc if start <= k & ~d < end]:
                del fc[k]
            return
        pop = fc.pop
        for g in range(start, end):
            pop(g, None)
            if d:
                pop(g | d, None)

    # ------------------------------------------------------------------ plumbing
    def _log(self, what, **kw):
        if self.trace is not None:
            self.trace.append((what, kw))

    def _snapshot(self):
        """The VM's whole state (slots, attributes, tables, host memory, RMP...), comparable:
        a refused call must leave it equal."""
        return snapshot(self)

    def slot_of(self, gfn: int) -> Optional[Memslot]:
        """``gfn_to_memslot``."""
        return self.memslots.at(u64("gfn", gfn))

    @property
    def slots(self) -> list:
        """The memslots of address space 0, sorted by base gfn."""
        return self.memslots.slots

    @property
    def generation(self) -> int:
        """``kvm_memslots(kvm, 0)->generation`` (bit 63 set while an update is in flight)."""
        return self._gens.generation(0)

    def slot_kind(self, gfn: int):
        s = self.slot_of(gfn)
        return None if s is None else s.kind()

    def _grow_pool(self, cap: int) -> None:
        n = len(self._tbl)
        tbl = np.full((cap, 512), self.cfg.profile.nonpresent_value, dtype=np.uint64)
        child = np.full((cap, 512), -1, dtype=np.int32)
        tbl[:n] = self._tbl
        child[:n] = self._child
        self._tbl, self._child = tbl, child
        self._pt_free.extend(range(cap - 1, n - 1, -1))
        for pa, i in self._pt_idx.items():
            self.pages[pa] = tbl[i]
        t = self._tdp
        t.spte = ffi.cast("uint64_t *", tbl.ctypes.data)
        t.child = ffi.cast("int32_t *", child.ctypes.data)
        t.npages = cap

    def _alloc_table(self) -> int:
        pfn = self.host.alloc("pt")
        if not self._pt_free:
            self._grow_pool(2 * len(self._tbl))
        i = self._pt_free.pop()
        self._tbl[i] = self.cfg.profile.nonpresent_value
        self._child[i] = -1
        self._pt_idx[pfn << 12] = i
        self.pages[pfn << 12] = self._tbl[i]
        return pfn << 12

    def _root_for(self, is_private: bool) -> str:
        if self.vm_type == P.KVM_X86_TDX_VM:
            return "private" if is_private else "shared"
        return "direct"

    def _walk_gfn(self, root: str, gfn: int) -> int:
        """The gfn the root's tables are indexed with (TDX shared root: with the shared bit)."""
        return gfn | self.gfn_direct_bits if root == "shared" else gfn

    def _path_idx(self, root: str, gfn: int, level: int, create: bool):
        """(pool index, index) of the entry for ``gfn`` at ``level``; None if a table is
        missing (``create``: allocate it, with a non-leaf SPTE pointing at it)."""
        g = self._walk_gfn(root, gfn)
        p = self._pt_idx[self.roots[root]]
        for lv in range(self.levels, level, -1):
            i = (g >> (9 * (lv - 1))) & 511
            c = int(self._child[p, i])
            if c >= 0:
                p = c
                continue
            if not create:
                return None
            child = self._alloc_table()
            self._tbl[p, i] = S.make_nonleaf_spte(self.cfg, child)
            c = self._child[p, i] = self._pt_idx[child]
            p = c
        return p, (g >> (9 * (level - 1))) & 511

    def _path(self, root: str, gfn: int, level: int, create: bool):
        """(table, index) of the entry for ``gfn`` at ``level``; None if a table is missing."""
        r = self._path_idx(root, gfn, level, create)
        return None if r is None else (self._tbl[r[0]], r[1])

    def _tdp_map(self, root: str, gfn: int, level: int, pfn: int = 0, make: bool = False):
        """One C call (``kvmmu_vm_tdp_map``): walk ``root`` to ``gfn``'s entry at ``level``
        and (``make``) install ``make_spte(pfn, level)`` there.  Returns (status, spte)."""
        st = lib.kvmmu_vm_tdp_map(self._c, self._tdp, self._pt_idx[self.roots[root]],
                                  gfn | self.gfn_direct_bits if root == "shared" else gfn, level,
                                  pfn, ACC_ALL, self._mk, S.MEMTYPE_AUTO,
                                  lib.KVMMU_VM_F_MAKE if make else 0, self._out_spte,
                                  self._out_level)
        return st, self._out_spte[0]

    def _leaf(self, root: str, gfn: int):
        """(level, base gfn, pfn) of the leaf mapping gfn in ``root``, or None."""
        lv_map = self.leaves[root]
        for lv in (1, 2, 3):
            base = gfn & ~(PAGES[lv] - 1)
            e = lv_map.get(base)
            if e is not None and e[0] == lv:
                return lv, base, e[1]
        return None

    def _set_entry(self, root, base, level, value):
        t, i = self._path(root, base, level, create=False)
        t[i] = value

    def _free_subtree(self, pa: int, level: int):
        self.pages.pop(pa)
        i = self._pt_idx.pop(pa)
        if level > 2:
            mask = self.cfg.base_addr_mask
            for k in np.nonzero(self._child[i] >= 0)[0]:
                self._free_subtree(int(self._tbl[i, k]) & mask, level - 1)
        self._child[i] = -1
        self._tbl[i] = self.cfg.profile.nonpresent_value
        self._pt_free.append(i)
        self.host.free(pa >> 12)

    def _drop_leaves_below(self, root, base, level):
        n = PAGES[level]
        lv_map = self.leaves[root]
        for b in [b for b in lv_map if base <= b < base + n]:
            del lv_map[b]

    # ------------------------------------------------------------------ zapping
    def _zap_gfn_range(self, start: int, end: int, attr_filter: int) -> int:
        """``kvm_unmap_gfn_range`` / ``kvm_tdp_mmu_unmap_gfn_range``: zap every leaf (and MMIO
        SPTE) intersecting [start, end); huge leaves are zapped whole.  TDX: the filter selects
        the mirror (PRIVATE) and/or direct (SHARED) root; other VMs have one root."""
        n = 0
        for root in self.root_names:
            if root == "private" and not attr_filter & KVM_FILTER_PRIVATE:
                continue
            if root == "shared" and not attr_filter & KVM_FILTER_SHARED:
                continue
            lv_map = self.leaves[root]
            if end - start <= 4 * len(lv_map) + 64:
                cands = set()
                for lv in (1, 2, 3):
                    sz = PAGES[lv]
                    b = start & ~(sz - 1)
                    while b < end:
                        e = lv_map.get(b)
                        if e is not None and e[0] == lv:
                            cands.add(b)
                        b += sz
            else:
                cands = {b for b, e in lv_map.items() if b < end and b + PAGES[e[0]] > start}
            for b in cands:
                lv = lv_map[b][0]
                self._set_entry(root, b, lv, self.cfg.profile.nonpresent_value)
                del lv_map[b]
                self._fc_drop(b, b + PAGES[lv])
                n += 1
        self.stats["zapped"] += n
        return n

    def unmap_gfn_range(self, slot, start: int, end: int, attr_filter: int) -> bool:
        """``kvm_mmu_unmap_gfn_range``: widen the invalidation range, then zap."""
        start, end = u64("start", start), u64("end", end)
        attr_filter = in_range("attr_filter", attr_filter, 1, KVM_FILTER_PRIVATE | KVM_FILTER_SHARED,
                               "KVM_FILTER_SHARED and/or KVM_FILTER_PRIVATE")
        self.invalidation.range_add(start, end)
        self._fc_drop(start, end)       # the backing may change even where nothing is mapped
        return bool(self._zap_gfn_range(start, end, attr_filter))

    def _relocate_leaf(self, root, base, level, new_pfn):
        old = self.leaves[root][base]
        r = S.make_spte(self.cfg, new_pfn, level=level, pte_access=ACC_ALL)
        self._set_entry(root, base, level, r.spte)
        self.leaves[root][base] = (level, new_pfn, old[2])
        self._fc_drop(base, base + PAGES[level])

    def zap_all(self) -> int:
        """``kvm_mmu_zap_all_fast``: every root's leaves (MMIO generation wrap, tests)."""
        n = 0
        for root in self.root_names:
            for b, (lv, _, _) in list(self.leaves[root].items()):
                self._set_entry(root, b, lv, self.cfg.profile.nonpresent_value)
                n += 1
            self.leaves[root].clear()
        self._fc.clear()
        return n

    # ------------------------------------------------------------------ memslots
    def create_guest_memfd(self, size: int, flags: int = 0, folio_order: Optional[int] = None) -> GuestMemfd:
        """``KVM_CREATE_GUEST_MEMFD``."""
        g = GuestMemfd(self, size, flags, host=self.host,
                       folio_order=self.folio_order if folio_order is None else folio_order)
        self.gmems.append(g)
        return g

    def _valid_flags(self, flags: int) -> int:
        return check_memory_region_flags(flags, has_private_mem=self.has_private_mem,
                                         has_protected_state=self.has_protected_state,
                                         any_vm_gmem=gmem_era_of(self).any_vm_memslot)

    def set_memory_region(self, slot_id: int, guest_phys_addr: int, memory_size: int,
                          userspace_addr: Optional[int] = None, flags: int = 0,
                          guest_memfd: Optional[GuestMemfd] = None,
                          guest_memfd_offset: int = 0) -> str:
        """``KVM_SET_USER_MEMORY_REGION2``: create, delete (size 0), move or change flags of a
        memslot.  Every rule is checked before anything changes; returns the change kind."""
        slot_id = uint("slot", slot_id, 32, err=VmError)
        gpa = uint("guest_phys_addr", guest_phys_addr, err=VmError)
        size = uint("memory_size", memory_size, err=VmError)
        flags = uint("flags", flags, 32, err=VmError)
        off = uint("guest_memfd_offset", guest_memfd_offset, err=VmError)
        if userspace_addr is not None:
            userspace_addr = uint("userspace_addr", userspace_addr, err=VmError)
            if userspace_addr & 0xFFF:
                raise VmError(f"userspace_addr={userspace_addr:#x}: must be 4 KiB aligned")
        if guest_memfd is not None:
            if not isinstance(guest_memfd, GuestMemfd):
                raise VmError(f"guest_memfd={guest_memfd!r}: expected a GuestMemfd", _errno.EBADF)
            if not flags & KVM_MEM_GUEST_MEMFD:
                raise VmError(f"guest_memfd=<fd {guest_memfd.fd}> given with flags={flags:#x} "
                              "without KVM_MEM_GUEST_MEMFD (the binding would be ignored)")
        if off and not flags & KVM_MEM_GUEST_MEMFD:
            raise VmError(f"guest_memfd_offset={off:#x} given without KVM_MEM_GUEST_MEMFD (the "
                          "kernel ignores it; refused here so that it is not lost silently)")
        if slot_id >= KVM_USER_MEM_SLOTS:
            raise VmError(f"slot={slot_id}: must be < KVM_USER_MEM_SLOTS ({KVM_USER_MEM_SLOTS})")
        if flags & ~self._valid_flags(flags):
            raise VmError(f"flags={flags:#x}: bits {flags & ~self._valid_flags(flags):#x} are not "
                          f"valid for a {self.type_name} VM (check_memory_region_flags)")
        if gpa & 0xFFF or size & 0xFFF:
            raise VmError(f"guest_phys_addr={gpa:#x} memory_size={size:#x}: must be 4 KiB aligned")
        if gpa + size > 1 << 64 or (gpa + size) >> 12 > self._max_gfn + 1:
            raise VmError(f"guest_phys_addr={gpa:#x} + memory_size={size:#x}: beyond the guest "
                          "physical address space")
        if flags & KVM_MEM_GUEST_MEMFD:
            if guest_memfd is None:
                raise VmError("KVM_MEM_GUEST_MEMFD without a guest_memfd", _errno.EBADF)
            if off + size >= 1 << 64:
                raise VmError(f"guest_memfd_offset={off:#x} + memory_size overflows")
        old = self.memslots.by_id(slot_id)
        base, npages = gpa >> 12, size >> 12
        if size == 0:
            if old is None:
                raise VmError(f"slot {slot_id}: deleting a slot that does not exist")
            change = "delete"
        elif old is None:
            change = "create"
        elif old.npages != npages:
            raise VmError(f"slot {slot_id}: memory_size {size:#x} differs from the existing "
                          f"{old.npages << 12:#x} (slots cannot be resized)")
        elif old.base_gfn != base:
            change = "move"
        elif old.flags != flags:
            change = "flags"
        else:
            return "none"
        if change in ("move", "flags"):
            assert old is not None
            if old.flags & KVM_MEM_GUEST_MEMFD:
                raise VmError(f"slot {slot_id}: guest_memfd memslots are immutable ({change} refused)")
            if (old.flags ^ flags) & KVM_MEM_GUEST_MEMFD:
                raise VmError(f"slot {slot_id}: KVM_MEM_GUEST_MEMFD cannot be toggled")
        s = self.memslots.overlapping(base, npages, old) if change in ("create", "move") else None
        if s is not None:
            raise VmError(f"slot {slot_id}: gfns [{base:#x}, {base + npages:#x}) overlap slot "
                          f"{s.id} [{s.base_gfn:#x}, {s.end_gfn:#x})", _errno.EEXIST)
        new = None
        if change == "create":
            new = Memslot(slot_id, base, npages,
                          userspace_addr if userspace_addr is not None else 0x7f0000000000 + gpa,
                          flags)
            if flags & KVM_MEM_GUEST_MEMFD:
                assert guest_memfd is not None                # refused above when None
                guest_memfd.check_bind(self, npages, off)     # validate before any change
        # ---- commit: nothing below can fail
        self._fc.clear()
        self._gens.begin_update(0)
        if change == "create":
            assert new is not None
            if flags & KVM_MEM_GUEST_MEMFD:
                assert guest_memfd is not None
                guest_memfd.bind(new, off)
            self.memslots.add(new)
        elif change == "delete":
            assert old is not None
            self._zap_gfn_range(old.base_gfn, old.end_gfn, KVM_FILTER_PRIVATE | KVM_FILTER_SHARED)
            if old.gmem_file is not None:
                old.gmem_file.unbind(old)
            self.memslots.remove(old)
        elif change == "move":
            assert old is not None
            self._zap_gfn_range(old.base_gfn, old.end_gfn, KVM_FILTER_PRIVATE | KVM_FILTER_SHARED)
            old.base_gfn = base
        else:
            assert old is not None
            old.flags = flags
            if flags & KVM_MEM_LOG_DIRTY_PAGES:
                # dirty logging write-protects; model: zap so that faults re-install
                self._zap_gfn_range(old.base_gfn, old.end_gfn, KVM_FILTER_SHARED | KVM_FILTER_PRIVATE)
        self.memslots.resort()
        if self._gens.end_update(0):        # kvm_mmu_invalidate_mmio_sptes: the generation wrapped
            self.zap_all()
        self._log("memslot", change=change, slot=slot_id, generation=self.generation)
        return change

    # ------------------------------------------------------------------ attributes
    def set_memory_attributes(self, address: int, size: int, attributes: int, flags: int = 0) -> bool:
        """``KVM_SET_MEMORY_ATTRIBUTES``: checks (no change on error), then invalidate-begin, zap
        the old attribute's SPTEs (x86 ``kvm_arch_pre_set_memory_attributes``: converting to
        private zaps shared mappings, to shared zaps private ones), store, invalidate-end."""
        def zap(start, end, attrs):
            flt = KVM_FILTER_SHARED if attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE else KVM_FILTER_PRIVATE
            with self.mmu_lock():
                self._zap_gfn_range(start, end, flt)
        changed = self.attrs.check_and_set(address, size, attributes, flags, self.invalidation, zap)
        self._log("set_memory_attributes", address=address, size=size, attributes=attributes,
                  changed=changed)
        return changed

    def convert(self, gfn: int, npages: int = 1, private: bool = True) -> bool:
        """Convenience: set or clear PRIVATE on ``npages`` gfns from ``gfn``."""
        gfn = uint("gfn", gfn, 52, err=VmError)
        npages = uint("npages", npages, 52, err=VmError)
        if npages == 0:
            raise VmError("npages=0: the range must not be empty")
        private = boolean("private", private, err=VmError)
        return self.set_memory_attributes(gfn << 12, npages << 12,
                                          KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)

    # ------------------------------------------------------------------ faults
    def _lpage_ok(self, slot: Memslot, gfn: int, level: int, is_private: bool) -> bool:
        """Huge page allowed: the aligned block lies in the slot (and, for shared memory, the
        hva has the same alignment) and its attributes are uniform (KVM_LPAGE_MIXED_FLAG)."""
        n = PAGES[level]
        base = gfn & ~(n - 1)
        if base < slot.base_gfn or base + n > slot.end_gfn:
            return False
        if not is_private and ((slot.userspace_addr >> 12) - slot.base_gfn) & (n - 1):
            return False
        if self.has_private_mem:
            want = KVM_MEMORY_ATTRIBUTE_PRIVATE if is_private else 0
            return self.attrs.range_has(base, base + n, KVM_MEMORY_ATTRIBUTE_PRIVATE, want)
        return True

    def fault(self, gpa: int, error_code: int = 0, *, race=None) -> FaultOutcome:
        """One guest page fault (see the module docstring).  ``race()``, if given, runs after
        faultin and before the staleness check, as a concurrent ioctl would.  ``gpa`` and
        ``error_code`` are u64 (kvm_mmu_page_fault's types); nothing changes if they are not.

        A fault that found its leaf already installed (or that installed it) is remembered
        under its exact (gpa, error_code) while nothing it read changes (see ``_fc_store``);
        the same fault again then returns the same ``spurious`` outcome without the walk."""
        if race is None and gpa.__class__ is int and error_code.__class__ is int:
            fc = self._fc
            hit = fc.get(gpa >> 12) if fc else None
            if hit is not None and hit[0] == gpa and hit[1] == error_code and \
                    not self.invalidation.in_progress:
                self.stats["faults"] += 1
                o = hit[2]
                if o.__class__ is tuple:        # stored as its fields: built on the first hit
                    o = _outcome(o)
                    fc[gpa >> 12] = (gpa, error_code, o)
                return o
            if not (0 <= gpa < _U64_END and 0 <= error_code < _U64_END):  # u64's fast path
                gpa = u64("gpa", gpa, err=VmError)                # (refuses: out of range)
                error_code = u64("error_code", error_code, err=VmError)
        else:
            gpa = u64("gpa", gpa, err=VmError)
            error_code = u64("error_code", error_code, err=VmError)
            if race is not None and not callable(race):
                raise VmError(f"race={race!r}: expected a callable or None")
        stats = self.stats
        stats["faults"] += 1
        # --- RSVD fast path: handle_mmio_page_fault on an existing MMIO SPTE.  MMIO is shared
        # only: a TDX private address (shared bit clear) never reads the shared root's entry.
        if error_code & _PFERR_RSVD and (not self.gfn_direct_bits or
                                         (gpa >> 12) & self.gfn_direct_bits):
            gfn0 = (gpa >> 12) & ~self.gfn_direct_bits
            root = self._root_for(False)
            e = self.leaves[root].get(gfn0)
            if e is not None and e[2] == "mmio":
                s = self._tdp_map(root, gfn0, 1)[1]
                if M.mmio_fault_outcome(self.cfg, s, self.generation) == "emulate":
                    stats["emulate"] += 1
                    return _outcome(("emulate", gfn0, False, 0, 0, s, None, "MMIO SPTE hit"))
                # stale generation (RET_PF_INVALID): take the slow path, which replaces it
        inv = self.invalidation
        # the upstream policy on checked values (bound per VM), unless it would warn or exit
        fast = self._fast_fault
        r = fast(gpa, error_code) if fast is not None else None
        if r is not None:
            gfn, is_private = r
            mmu_seq, ex = inv.seq, None
            slot = self._slot_at(gfn)
            # faultin_action's verdict from its table (None: no slot, or an exit to build)
            action = None if slot is None else _SLOT_ACTIONS[slot._kind][is_private]
        else:
            policy = self._policy
            c = policy.classify(self, gpa, error_code)
            gfn = c.gfn
            mmu_seq = inv.seq
            is_private, ex = policy.resolve(self, c)
            slot = self._slot_at(gfn) if ex is None else None
            action = None
        if slot is not None and (inv.in_progress or inv.seq != mmu_seq) and \
                inv._retry(mmu_seq, gfn):                                       # ..._unsafe check
            stats["retries"] += 1
            return _outcome(("retry", gfn, is_private, 0, 0, 0, None, "invalidation in progress"))
        if action is None:
            action, ex = _faultin_action(gfn, is_private, ex, None if slot is None else slot.kind())
            if action == _A_EXIT:
                return self._exit(ex)
        if slot is None:                        # faultin_action: "noslot" (emulated MMIO)
            if not self.cfg.mmio_caching or gfn > self._max_gfn:
                stats["emulate"] += 1
                return _outcome(("emulate", gfn, False, 0, 0, 0, None, "no MMIO caching or gfn "
                                 "above host MAXPHYADDR: no SPTE"))
            pfn, max_level, kind = 0, PG_LEVEL_4K, "mmio"
        elif action == _A_SHARED:               # the host page behind the slot's hva
            hva = (slot.userspace_addr >> 12) + (gfn - slot.base_gfn)
            pfn = self._shared_pfn.get(hva, -1)
            if pfn < 0:
                pfn = self._shared_pfn[hva] = self.host.alloc("shared")
            max_level, kind = PG_LEVEL_4K, "shared"
        else:                                   # guest_memfd: "private" or "gmem_shared"
            gmem = slot.gmem_file
            if gmem is None:
                return self._exit(P.MemoryFaultExit.for_fault(
                    gfn, is_private, "guest_memfd was released (kvm_gmem_get_pfn: -EFAULT)"))
            try:
                pfn, max_order, _ = gmem._get_pfn_fields(slot, gfn)
            except GmemError as e:
                return self._exit(P.MemoryFaultExit.for_fault(gfn, is_private,
                                                              f"kvm_gmem_get_pfn: {e}"))
            if is_private:
                # (order 0: _private_max_level's early 4K return, without the call)
                max_level = self._private_max_level(pfn, max_order) if max_order else PG_LEVEL_4K
                kind = "private"
            else:
                max_level, kind = PG_LEVEL_4K, "shared"
        if race is not None:
            race()
        self.mmu_lock_held += 1                 # with self.mmu_lock(), inline
        try:
            if (inv.in_progress or inv.seq != mmu_seq) and \
                    inv._retry(mmu_seq, gfn):                               # is_page_fault_stale
                stats["retries"] += 1
                return _outcome(("retry", gfn, is_private, 0, 0, 0, None,
                                 "mmu_invalidate_seq moved or range in progress"))
            root, root_idx, walk_bits, lv_map = self._fault_roots[is_private]
            if kind == "mmio":
                spte = M.make_mmio_spte(self.cfg, gfn | walk_bits, ACC_ALL,
                                        self.generation & ~KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS)
                self._install(root, gfn, PG_LEVEL_4K, spte, None, "mmio")
                stats["emulate"] += 1
                return _outcome(("emulate", gfn, False, 0, 0, spte, None,
                                 "MMIO SPTE installed"))
            assert slot is not None                 # set for every kind but mmio
            level, base, bpfn = PG_LEVEL_4K, gfn, pfn
            if max_level > PG_LEVEL_4K:
                for lv in (PG_LEVEL_1G, PG_LEVEL_2M):
                    if lv <= max_level and self._lpage_ok(slot, gfn, lv, is_private):
                        level = lv
                        base = gfn & _LEVEL_MASK[level]
                        bpfn = pfn - (gfn - base)
                        break
            # one C call: already mapped by this very leaf (the entry at ``level`` is a present
            # leaf of bpfn: RET_PF_SPURIOUS; check() verifies that the leaf index and the
            # tables agree, so this is _leaf's answer), else walk and install
            fm = self._fm
            st = _fault_map(fm, root_idx, base | walk_bits, level, bpfn, _F_MAKE_SPURIOUS)
            if st == _VM_SPURIOUS:
                f = ("spurious", gfn, is_private, level, bpfn, fm.spte, None, "")
                if max_level == PG_LEVEL_4K and race is None:
                    self._fc_store(gpa, error_code, f)
                return _outcome(f)
            if st == _VM_OK:
                spte = fm.spte
                lv_map[base] = (level, bpfn, kind)
                fc = self._fc
                if fc:
                    if level == PG_LEVEL_4K:                # _fc_drop(base, base + 1)
                        fc.pop(base, None)
                        if self.gfn_direct_bits:
                            fc.pop(base | self.gfn_direct_bits, None)
                    else:
                        self._fc_drop(base, base + PAGES[level])
            else:           # tables to allocate, a huge leaf to split or a subtree to free
                spte = S.make_spte(self.cfg, bpfn, level=level, pte_access=ACC_ALL).spte
                self._install(root, base, level, spte, bpfn, kind)
            stats["mapped"] += 1
            if max_level == PG_LEVEL_4K and race is None:
                self._fc_store(gpa, error_code, ("spurious", gfn, is_private, level, bpfn,
                                                 spte, None, ""))
            return _outcome(("mapped", gfn, is_private, level, bpfn, spte, None, ""))
        finally:
            self.mmu_lock_held -= 1

    def _private_max_level(self, pfn: int, max_order: int) -> int:
        """``kvm_max_private_mapping_level``: 4K without asking the vendor hook when the VM's
        max level or the folio order already says 4K; else the smaller of the two and of the
        hook's level (0: no limit)."""
        max_level = self._max_level
        if max_level == PG_LEVEL_4K:
            return PG_LEVEL_4K
        max_level = min(max_level, order_to_level(max_order))
        if max_level == PG_LEVEL_4K:
            return PG_LEVEL_4K
        hook = self._gmem_hooks.max_mapping_level(self, pfn, True)
        return min(max_level, hook) if hook else max_level

    def _fc_store(self, gpa: int, error_code: int, fields: tuple) -> None:
        """Remember a fault whose leaf is installed: the same (gpa, error_code) is ``spurious``
        with the outcome of these fields (all eight, in order) while nothing it read changes.
        Only 4K-bounded faults (no huge-page eligibility, no vendor level hook read) of a
        built-in policy, never a reserved-bit fault; entries go when their gfn's leaf,
        attributes or backing change (:meth:`_fc_drop`), and all at once on a memslot, policy,
        hook or max-level change.  The fields are kept as a plain tuple and the
        :class:`FaultOutcome` is built on the first hit: a plain tuple of ints and strings
        leaves the garbage collector's tracking, a tuple subclass never does, so a fault that
        is never repeated (every first fault of a large VM) adds no object that each full
        collection must traverse again."""
        if self._fc_policy_ok and not error_code & _PFERR_RSVD:
            self._fc[gpa >> 12] = (gpa, error_code, fields)

    def _exit(self, ex):
        self.stats["exits"] += 1
        return _outcome(("exit", ex.gpa >> 12, ex.private, 0, 0, 0, ex, ex.reason))

    def _install(self, root, base, level, spte, pfn, kind):
        lv_map = self.leaves[root]
        # a leaf at another level covering this block (or MMIO / smaller leaves) goes first
        for lv in (1, 2, 3):
            b = base & ~(PAGES[lv] - 1)
            e = lv_map.get(b)
            if e is not None and e[0] == lv and lv != level:
                if lv > level:
                    self._set_entry(root, b, lv, self.cfg.profile.nonpresent_value)
                    del lv_map[b]
                    self._fc_drop(b, b + PAGES[lv])
        p, i = self._path_idx(root, base, level, create=True)
        if self._child[p, i] >= 0:
            self._drop_leaves_below(root, base, level)
            self._free_subtree(int(self._tbl[p, i]) & self.cfg.base_addr_mask, level)
            self._child[p, i] = -1
        self._tbl[p, i] = spte
        lv_map[base] = (level, pfn, kind)
        self._fc_drop(base, base + PAGES[level])

    # ------------------------------------------------------------------ punch / migrate
    def punch_hole(self, gmem: GuestMemfd, offset: int, length: int) -> int:
        """``fallocate(PUNCH_HOLE | KEEP_SIZE)`` on a guest_memfd of this VM."""
        from .gmem import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
        if not isinstance(gmem, GuestMemfd) or gmem.kvm is not self:
            raise VmError(f"gmem={gmem!r}: not a guest_memfd of this VM", _errno.EBADF)
        before = self.host.freed_total
        gmem.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        return self.host.freed_total - before

    def migrate_gfn(self, gfn: int) -> MigrateAnswer:
        """Ask the backing store to move the private page behind ``gfn`` (the migration hook).
        A hwpoisoned page is refused (-EHWPOISON) and nothing changes."""
        gfn = u64("gfn", gfn, err=VmError)
        slot = self.slot_of(gfn)
        if slot is None or slot.gmem_file is None:
            raise VmError(f"gfn {gfn:#x}: no guest_memfd-backed memslot")
        answer = slot.gmem_file.migrate(GuestMemfd.index_of(slot, gfn))   # a refusal raises
        self._fc_drop(gfn, gfn + 1)         # before any change: the fault cache stays too
        return answer

    # ------------------------------------------------------------------ invariants
    def walk(self):
        """Every leaf in the tables: {root: {base gfn: (level, spte)}} (vectorised per page)."""
        cfg = self.cfg
        out = {}
        mask = cfg.base_addr_mask
        for root in self.root_names:
            res = {}
            stack = [(self.roots[root], self.levels, 0)]
            while stack:
                pa, lv, gbase = stack.pop()
                t = self.pages[pa]
                present = S.predicate_batch(cfg, "is_shadow_present_pte", t)
                mmio = S.predicate_batch(cfg, "is_mmio_spte", t)
                large = S.predicate_batch(cfg, "is_large_pte", t)
                for i in np.nonzero(present | mmio)[0]:
                    s = int(t[i])
                    g = gbase | (int(i) << (9 * (lv - 1)))
                    if mmio[i] or lv == 1 or large[i]:
                        res[g & ~self.gfn_direct_bits if root == "shared" else g] = (lv, s)
                    else:
                        stack.append((s & mask, lv - 1, g))
            out[root] = res
        return out

    def check(self) -> None:
        """Raise InvariantError unless every invariant holds:

        - the tables and the leaf index agree; every leaf pfn is allocated host memory (no SPTE
          to freed memory) and owned by the right backing (guest_memfd for private, the host's
          shared memory or a gmem-only file for shared);
        - no pfn is mapped both private and shared (guest SPTEs, and the host's shared mappings);
        - attributes and mappings agree over every gfn a leaf covers, inside a memslot;
        - TDX: private leaves only in the mirror root, shared only in the direct root;
        - an MMIO SPTE whose gfn now has a memslot carries a stale generation (never accepted);
        - SNP: each private leaf's pfn is assigned in the RMP to this ASID at this GPA, with the
          NPT level never above the RMP level; shared leaves point at hypervisor-owned pages.
        """
        cfg = self.cfg
        tables = self.walk()
        priv_pfns: set[int] = set()
        shared_pfns: set[int] = set()
        for root in self.root_names:
            idx, tab = self.leaves[root], tables[root]
            if set(idx) != set(tab):
                raise InvariantError(f"root {root}: leaf index {sorted(set(idx) ^ set(tab))[:4]} "
                                     "disagrees with the page tables")
            for base, (lv, pfn, kind) in idx.items():
                tlv, s = tab[base]
                if tlv != lv:
                    raise InvariantError(f"root {root} gfn {base:#x}: level {tlv} in tables, {lv} indexed")
                if kind == "mmio":
                    if not S.is_mmio_spte(cfg, s):
                        raise InvariantError(f"gfn {base:#x}: indexed MMIO but spte {s:#x} is not")
                    if self.slot_of(base) is not None and \
                            M.mmio_fault_outcome(cfg, s, self.generation) == "emulate":
                        raise InvariantError(f"gfn {base:#x}: MMIO SPTE with the current generation "
                                             "but the gfn has a memslot (would be accepted)")
                    continue
                if S.spte_to_pfn(cfg, s) != pfn:
                    raise InvariantError(f"gfn {base:#x}: spte pfn {S.spte_to_pfn(cfg, s):#x} != {pfn:#x}")
                n = PAGES[lv]
                owners: set = {self.host.owner.get(p) for p in range(pfn, pfn + n)}
                if None in owners:
                    raise InvariantError(f"root {root} gfn {base:#x}: SPTE maps freed pfn(s) in "
                                         f"[{pfn:#x}, {pfn + n:#x})")
                is_priv = kind == "private"
                if self.vm_type == P.KVM_X86_TDX_VM and (root == "private") != is_priv:
                    raise InvariantError(f"TDX gfn {base:#x}: {kind} leaf in the {root} root")
                if is_priv and not all(o.startswith("gmem") for o in owners):
                    raise InvariantError(f"gfn {base:#x}: private leaf on non-gmem pfn {pfn:#x}")
                if not is_priv:
                    slot = self.slot_of(base)
                    if not (owners == {"shared"} or (slot is not None and slot.gmem_only)):
                        raise InvariantError(f"gfn {base:#x}: shared leaf on pfn {pfn:#x} owned by {owners}")
                (priv_pfns if is_priv else shared_pfns).update(range(pfn, pfn + n))
                slot = self.slot_of(base)
                if slot is None or base < slot.base_gfn or base + n > slot.end_gfn:
                    raise InvariantError(f"gfn {base:#x} level {lv}: leaf outside any memslot")
                want = KVM_MEMORY_ATTRIBUTE_PRIVATE if is_priv else 0
                if self.has_private_mem and not self.attrs.range_has(
                        base, base + n, KVM_MEMORY_ATTRIBUTE_PRIVATE, want):
                    raise InvariantError(f"gfn {base:#x} level {lv}: {kind} mapping but the "
                                         "attributes disagree")
                if self.rmp is not None and self.vm_type == P.KVM_X86_SNP_VM:
                    self._check_rmp(base, lv, pfn, is_priv)
        both = priv_pfns & shared_pfns
        if both:
            raise InvariantError(f"pfn {min(both):#x} is mapped both private and shared")
        host_shared = set(self._shared_pfn.values())
        if priv_pfns & host_shared:
            raise InvariantError(f"pfn {min(priv_pfns & host_shared):#x}: private in the guest and "
                                 "mapped by the host")
        for g in self.gmems:
            for idx_, pfn in g.foreign_pages().items():
                raise InvariantError(f"guest_memfd {g.fd} index {idx_:#x}: pfn {pfn:#x} not owned by it")

    def _check_rmp(self, base, lv, pfn, is_priv):
        rmp = self.rmp
        for p in range(pfn, pfn + PAGES[lv]):
            assigned, rlevel = rmp.snp_lookup_rmpentry(p)
            if is_priv:
                e = rmp.entry(p if rlevel == PG_LEVEL_4K else p & ~511)
                want_gfn = base + (p - pfn) if rlevel == PG_LEVEL_4K else (base + (p - pfn)) & ~511
                if not assigned:
                    raise InvariantError(f"SNP gfn {base:#x}: private pfn {p:#x} not assigned in the RMP")
                if lv > rlevel:
                    raise InvariantError(f"SNP gfn {base:#x}: NPT level {lv} above RMP level {rlevel}")
                if e.asid != self.asid or e.gpa != want_gfn:
                    raise InvariantError(f"SNP pfn {p:#x}: RMP owner asid={e.asid} gpa={e.gpa << 12:#x} "
                                         f"does not match gfn {base + (p - pfn):#x}")
            elif assigned:
                raise InvariantError(f"SNP gfn {base:#x}: shared pfn {p:#x} is guest-owned in the RMP")

    def __repr__(self) -> str:
        n = sum(len(v) for v in self.leaves.values())
        return (f"<Vm {self.type_name} id={self.vm_id} slots={len(self.slots)} leaves={n} "
                f"gen={self.generation} seq={self.invalidation.seq}>")
