"""The kernel's RMP fault handlers and mapping-level rules over an RmpTable: the host #PF
on a user mapping, KVM's NPF with the RMP bit, the gmem max-mapping-level hook and
kvm_max_private_mapping_level() (docs/rmp.md, "Faults")."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from .. import _batch
from .._ffi import lib
from . import (PG_LEVEL_4K, PTE_PFN_BITS, PTRS_PER_PMD, RMP_PF_RETRY, RMP_PF_SPLIT,
               RMP_PF_UNMAP, Rc, RmpTable, _level, _table, _tuple_new)


# ------------------------------------------------------------------ fault handlers

class UserFault(NamedTuple):
    action: str            # "UNMAP", "SIGBUS", "SPLIT" or "RETRY"
    ret: int               # enum rmp_pf_ret value the handler returns (SIGBUS returns RETRY)
    pfn: Optional[int]
    rmp_level: Optional[int]


def handle_user_rmp_page_fault(table: RmpTable, *, pte_present: bool, pte_pfn: int, level: int,
                               address: int) -> UserFault:
    """The v7/v8 patch's handle_user_rmp_page_fault() given the host mapping found for
    ``address``: UNMAP (PTE gone), SIGBUS (4K entry assigned, or the lookup failed),
    SPLIT (host level above the RMP level), else RETRY."""
    if table.__class__ is RmpTable and pte_pfn.__class__ is address.__class__ is int:
        if pte_present is True and level is PG_LEVEL_4K:
            try:        # a present 4K PTE (the common case): the 4K pfn is the PTE's
                w = _user_fault_4k_c(table._t_, pte_pfn, address)
            except (OverflowError, TypeError):     # an operand beyond its C type / the table closed
                w = -1
            if w > 0:
                action, ret, rmp_level = _UPF_WORD[w]
                return _tuple_new(UserFault, (action, ret, pte_pfn, rmp_level))
        elif level.__class__ is int and (pte_present is True or pte_present is False):
            try:
                w = _user_fault_c(table._t_, pte_present, pte_pfn, level, address)
            except (OverflowError, TypeError):
                w = -1
            if w > 0:
                action, ret, rmp_level = _UPF_WORD[w & 15]
                return _tuple_new(UserFault, (action, ret, w >> 4, rmp_level))
            if not w:
                return _UPF_UNMAP
    _table(table)
    pte_present = _batch.boolean("pte_present", pte_present)
    level = _level("level", level)
    pfn = _batch.uint("pte_pfn", pte_pfn, PTE_PFN_BITS)
    address = _batch.uint("address", address)
    return _user_fault(lib.kvmmu_rmp_user_fault(table._t, pte_present, pfn, level, address))


_UPF = {lib.KVMMU_RMP_UPF_SIGBUS: ("SIGBUS", RMP_PF_RETRY), lib.KVMMU_RMP_UPF_SPLIT: ("SPLIT", RMP_PF_SPLIT),
        lib.KVMMU_RMP_UPF_RETRY: ("RETRY", RMP_PF_RETRY)}
_UPF_UNMAP = UserFault("UNMAP", RMP_PF_UNMAP, None, None)
_user_fault_c = lib.kvmmu_rmp_user_fault
_user_fault_4k_c = lib.kvmmu_rmp_user_fault_4k
#: the word's low 4 bits (action | RMP level << 2) -> (action, ret, RMP level or None); UNMAP is the word 0
_UPF_WORD: tuple[Any, ...] = tuple((*_UPF[a], (lv or None)) if a in _UPF else None for lv in range(4) for a in range(4))
assert lib.KVMMU_RMP_UPF_UNMAP == 0 and all(_UPF_WORD[a | lv << 2] == (None if a == lib.KVMMU_RMP_UPF_UNMAP else (*_UPF[a], lv or None))
           for a in range(4) for lv in range(4))


def _user_fault(w: int) -> UserFault:
    """kvmmu_rmp_user_fault's word (action | RMP level << 2 | pfn << 4) as a UserFault."""
    if w & 3 == lib.KVMMU_RMP_UPF_UNMAP:
        return _UPF_UNMAP
    action, ret, rmp_level = _UPF_WORD[w & 15]
    return _tuple_new(UserFault, (action, ret, w >> 4, rmp_level))


class NpfOutcome(NamedTuple):
    action: str            # see sev_handle_rmp_fault
    rmp_level: Optional[int]
    psmash_rc: Optional[int]
    zap: Optional[tuple]   # (gfn_start, gfn_end) passed to kvm_zap_gfn_range


def sev_handle_rmp_fault(table: RmpTable, gpa: int, error_code: int = 0, *,
                         pfn: Optional[int], is_private: bool = True,
                         has_gmem: bool = True) -> NpfOutcome:
    """KVM's sev_handle_rmp_fault() for an NPF with the RMP bit set.

    Actions: "not-private" / "non-gmem-slot" / "no-backing-page" / "no-assigned-entry"
    (warn and return), "spurious" (the entry is already 4K), "psmash" (split, zap the
    GFN range), "psmash-raced" (PSMASH failed but the entry is now 4K and assigned),
    "psmash-failed" (warn, zap anyway).  ``pfn=None``: kvm_gmem_get_pfn() failed."""
    _table(table)
    gfn = _batch.uint("gpa", gpa) >> 12
    _batch.uint("error_code", error_code)
    is_private = _batch.boolean("is_private", is_private)
    has_gmem = _batch.boolean("has_gmem", has_gmem)
    if pfn is not None:
        pfn = _batch.uint("pfn", pfn)
    if not is_private:
        return NpfOutcome("not-private", None, None, None)
    if not has_gmem:
        return NpfOutcome("non-gmem-slot", None, None, None)
    if pfn is None:
        return NpfOutcome("no-backing-page", None, None, None)
    if not table.covered(pfn):
        return NpfOutcome("no-assigned-entry", None, None, None)
    assigned, rmp_level = table.snp_lookup_rmpentry(pfn)
    if not assigned:
        return NpfOutcome("no-assigned-entry", rmp_level, None, None)
    if rmp_level == PG_LEVEL_4K:
        return NpfOutcome("spurious", rmp_level, None, None)
    # snp_rmptable_psmash() aligns down and retries while FAIL_INUSE; a lock is persistent
    # in the model, so one attempt stands for the loop.
    rc = table.psmash(pfn & ~(PTRS_PER_PMD - 1))
    if rc != Rc.SUCCESS:
        a2, l2 = table.snp_lookup_rmpentry(pfn)
        if a2 and l2 == PG_LEVEL_4K:
            return NpfOutcome("psmash-raced", rmp_level, int(rc), None)
        return NpfOutcome("psmash-failed", rmp_level, int(rc), (gfn, gfn + PTRS_PER_PMD))
    return NpfOutcome("psmash", rmp_level, int(rc), (gfn, gfn + PTRS_PER_PMD))


def sev_private_max_mapping_level(table: RmpTable, pfn: int, *, snp: bool = True) -> int:
    """The gmem max-mapping-level hook: 0 (no limit) for non-SNP VMs, 4K if the lookup
    fails or the entry is unassigned, otherwise the RMP level (NPT level <= RMP level)."""
    if table.__class__ is RmpTable and pfn.__class__ is int and (snp is True or snp is False):
        try:
            return _max_mapping_level_c(table._t_, pfn, snp)
        except (OverflowError, TypeError):
            pass
    _table(table)
    snp = _batch.boolean("snp", snp)
    pfn = _batch.uint("pfn", pfn)
    return lib.kvmmu_rmp_max_mapping_level(table._t, pfn, snp)


_max_mapping_level_c = lib.kvmmu_rmp_max_mapping_level
_max_private_level_c = lib.kvmmu_rmp_max_private_level


def kvm_max_private_mapping_level(max_level: int, max_order: int, hook_level: int = 0) -> int:
    """kvm_max_private_mapping_level(): min(max_level, the level the gmem folio order
    allows, the vendor hook's level when it is non-zero)."""
    if max_level.__class__ is max_order.__class__ is hook_level.__class__ is int:
        try:
            r = _max_private_level_c(max_level, max_order, hook_level)
        except OverflowError:
            r = -1
        if r > 0:
            return r
    max_level = _level("max_level", max_level)
    order = _batch.uint("max_order", max_order, 8)
    hook = 0 if isinstance(hook_level, int) and not isinstance(hook_level, bool) and \
        hook_level == 0 else _level("hook_level", hook_level)
    return lib.kvmmu_rmp_max_private_level(max_level, order, hook)
