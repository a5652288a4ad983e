"""Shadow-MMU state and the outputs of ``make_spte()`` that are not SPTE bits.

``spte.make_spte`` returns the new SPTE and the write-protect flag; the kernel's
``make_spte()`` (arch/x86/kvm/mmu/spte.c, v6.13-v6.18 form) also decides, through
``mmu_try_to_unsync_pages()`` (mmu.c), whether a writable mapping of a gfn that is
shadowed as a guest page table may exist (the gfn is write-tracked, or its 4K shadow pages
go unsync), calls ``mark_page_dirty_in_slot()`` for a writable SPTE in a dirty-logged
memslot, and fires WARNs.  :class:`ShadowMmu` holds the state those decisions read: the
shadow pages by (gfn, role word) in the page hash (``sphash.MmuPageHash``) with their
generation, unsync flag and root count, and the per-gfn write-track count that
``account_shadowed()`` keeps for upper-level indirect shadow pages.

Kernel rules modelled here were read in Kingxukai/linux arch/x86/kvm/mmu/mmu.c @ 9b44fff6
(v6.17/6.18: ``mmu_try_to_unsync_pages``, ``mmu_set_spte``, ``__kvm_mmu_prepare_zap_page``,
``kvm_mmu_alloc_shadow_page``) and spte.c @ 0291023e (``make_spte``,
``mark_spte_for_access_track``, ``modify_spte_protections``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from . import spte as S
from ._batch import uint
from . import _check as C
from .config import (ACC_WRITE_MASK, PT_PRESENT_MASK,
                     PT_WRITABLE_MASK, SHADOW_ACC_TRACK_SAVED_BITS_MASK,
                     SHADOW_ACC_TRACK_SAVED_BITS_SHIFT, MmuConfig)
from .errors import InputError
from .sphash import MmuPageHash, ShadowPage

__all__ = ["ShadowMmu", "UnsyncDecision", "MakeSpteOutcome", "make_spte_outcome",
           "is_access_allowed", "mark_spte_for_access_track_warnings", "modify_spte_protections",
           "EPERM", "EEXIST", "ROLE_INVALID"]

EPERM, EEXIST = 1, 17
#: role.invalid (bit 11 in every era).
ROLE_INVALID = 1 << 11
_PASSTHROUGH = 1 << 18
ACCESS_KINDS = ("read", "write", "exec")


class UnsyncDecision(NamedTuple):
    """``mmu_try_to_unsync_pages()``'s answer: 0, -EPERM or -EEXIST; why; the shadow pages
    (gfn, role) it marked unsync (each one fires ``kvm_mmu_unsync_page``)."""

    result: int
    reason: str
    unsynced: tuple = ()

    @property
    def allowed(self) -> bool:
        return self.result == 0


class MakeSpteOutcome(NamedTuple):
    """Everything ``make_spte()`` decides: the SPTE, ``wrprot``, the unsync decision (None when
    it was not consulted: no ACC_WRITE left, or the old leaf SPTE was already writable), whether
    ``mark_page_dirty_in_slot()`` is called, and the WARNs the kernel would fire."""

    spte: int
    wrprot: bool
    unsync: UnsyncDecision | None
    mark_page_dirty: bool
    warnings: tuple


@dataclass
class ShadowMmu:
    """The shadow MMU's page state (kvm->arch.mmu_page_hash, mmu_valid_gen, the gfn
    write-track counts and indirect_shadow_pages)."""

    page_hash: MmuPageHash = field(default_factory=MmuPageHash)
    write_track: dict = field(default_factory=dict)
    indirect_shadow_pages: int = 0
    #: kvm->arch.n_used_mmu_pages (kvm_account_mmu_page / kvm_unaccount_mmu_page).
    used_pages: int = 0

    def __post_init__(self):
        if not isinstance(self.page_hash, MmuPageHash):
            raise InputError(f"page_hash={self.page_hash!r}: expected a pykvmmu.sphash.MmuPageHash")
        if not isinstance(self.write_track, dict):
            raise InputError(f"write_track={self.write_track!r}: expected a {{gfn: count}} dict")
        C.u64("indirect_shadow_pages", self.indirect_shadow_pages)
        C.u64("used_pages", self.used_pages)

    @property
    def mmu_valid_gen(self) -> int:
        return self.page_hash.mmu_valid_gen

    # ---------------------------------------------------------------- lookups
    def lookup(self, gfn: int, role: int) -> ShadowPage | None:
        """The valid (not obsolete) SP with this gfn and role word, without side effects."""
        gfn, role = uint("gfn", gfn), uint("role", role, 32)
        for sp in self.page_hash.buckets[self.page_hash.bucket_of(gfn)]:
            if sp.gfn == gfn and sp.role == role and not self.page_hash.is_obsolete(sp):
                return sp
        return None

    def any_page(self, gfn: int, role: int, gen: int | None = None) -> ShadowPage | None:
        """The newest SP with this gfn and exact role word (and generation), obsolete or not."""
        gfn, role = uint("gfn", gfn), uint("role", role, 32)
        if gen is not None:
            gen = uint("gen", gen)
        for sp in self.page_hash.buckets[self.page_hash.bucket_of(gfn)]:
            if sp.gfn == gfn and sp.role == role and (gen is None or sp.mmu_valid_gen == gen):
                return sp
        return None

    def valid_pages_with_gptes(self, gfn: int) -> list:
        """for_each_gfn_valid_sp_with_gptes: valid SPs of gfn with !direct && !passthrough."""
        gfn = uint("gfn", gfn)
        return list(self.page_hash.for_each_gfn_valid_sp_with_gptes(gfn))

    def is_write_tracked(self, gfn: int) -> bool:
        """kvm_gfn_is_write_tracked: an upper-level indirect SP shadows this gfn."""
        gfn = uint("gfn", gfn)
        return self.write_track.get(gfn, 0) > 0

    # ---------------------------------------------------------------- changes
    def _account(self, sp: ShadowPage) -> None:
        """account_shadowed: indirect_shadow_pages++, and for level > 4K write-track the gfn."""
        self.indirect_shadow_pages += 1
        if sp.level > 1:
            self.write_track[sp.gfn] = self.write_track.get(sp.gfn, 0) + 1

    def _unaccount(self, sp: ShadowPage) -> None:
        """unaccount_shadowed."""
        self.indirect_shadow_pages -= 1
        if sp.level > 1:
            n = self.write_track.get(sp.gfn, 0) - 1
            if n > 0:
                self.write_track[sp.gfn] = n
            else:
                self.write_track.pop(sp.gfn, None)

    def alloc(self, gfn: int, role: int) -> ShadowPage:
        """kvm_mmu_alloc_shadow_page: current generation, head of the bucket, accounted."""
        gfn = uint("gfn", gfn)
        role = uint("role", role, 32)
        sp = self.page_hash.alloc(gfn, role)
        self.used_pages += 1
        if sp.has_gptes():
            self._account(sp)
        return sp

    def get(self, gfn: int, role: int) -> tuple:
        """__kvm_mmu_get_shadow_page without the guest-memory sync: (sp, created).  Unsync SPs
        of the gfn with another role are zapped first when the requested level is > 4K."""
        gfn, role = uint("gfn", gfn), uint("role", role, 32)
        if (role & 0xF) > 1:
            for other in list(self.page_hash.buckets[self.page_hash.bucket_of(gfn)]):
                if (other.gfn == gfn and other.role != role and other.unsync
                        and not self.page_hash.is_obsolete(other)):
                    self.prepare_zap(other)
        sp = self.lookup(gfn, role)
        if sp is not None:
            if not sp.direct:
                sp.write_flooding_count = 0
            return sp, False
        self.page_hash.stat["mmu_cache_miss"] += 1
        return self.alloc(gfn, role), True

    def prepare_zap(self, sp: ShadowPage) -> bool:
        """__kvm_mmu_prepare_zap_page for one SP: unaccount a valid SP with gptes, drop the
        unsync flag; an SP with root_count > 0 stays (role.invalid set) until its last root
        reference goes, otherwise it leaves the hash and n_used_mmu_pages.  Returns True when
        an in-use, not yet obsolete root was zapped (KVM_REQ_MMU_FREE_OBSOLETE_ROOTS)."""
        if not isinstance(sp, ShadowPage):
            raise InputError(f"sp={sp!r}: expected a pykvmmu.sphash.ShadowPage")
        was_valid = not self.page_hash.is_obsolete(sp)
        if not (sp.role & ROLE_INVALID) and sp.has_gptes():
            self._unaccount(sp)
        sp.unsync = False
        zapped_root = False
        active = self.page_hash.active_mmu_pages
        if sp.root_count:
            zapped_root = was_valid
            if sp in active:
                active.remove(sp)
        else:
            if sp in self.page_hash.buckets[self.page_hash.bucket_of(sp.gfn)]:
                self.page_hash.zap(sp)
            self.used_pages -= 1
        sp.role |= ROLE_INVALID
        return zapped_root

    def zap_all_fast(self) -> int:
        """kvm_mmu_zap_all_fast: toggle mmu_valid_gen (every current page becomes obsolete).
        Returns the new generation (what the kvm_mmu_zap_all_fast event records)."""
        self.page_hash.zap_all_fast()
        return self.page_hash.mmu_valid_gen

    def mmu_try_to_unsync_pages(self, gfn: int, synchronizing: bool = False,
                                prefetch: bool = False, apply: bool = True) -> UnsyncDecision:
        """mmu_try_to_unsync_pages: -EPERM if the gfn is write-tracked, or if it has valid
        indirect SPs while synchronizing; -EEXIST for a prefetch that would have to unsync an
        SP; otherwise every valid indirect SP of the gfn is (or becomes) unsync and 0."""
        gfn = uint("gfn", gfn)
        synchronizing = C.boolean("synchronizing", synchronizing)
        prefetch = C.boolean("prefetch", prefetch)
        apply = C.boolean("apply", apply)
        if self.is_write_tracked(gfn):
            return UnsyncDecision(-EPERM, "write-tracked gfn (an upper-level shadow page)")
        marked = []
        for sp in self.valid_pages_with_gptes(gfn):
            if synchronizing:
                return UnsyncDecision(-EPERM, "shadowed gfn while synchronizing an unsync SP")
            if sp.unsync:
                continue
            if prefetch:
                return UnsyncDecision(-EEXIST, "prefetch would unsync a shadow page")
            marked.append(sp)
        if apply:
            for sp in marked:
                sp.unsync = True
        keys = tuple((sp.gfn, sp.role) for sp in marked)
        if keys:
            return UnsyncDecision(0, "shadow pages marked unsync", keys)
        shadowed = bool(self.valid_pages_with_gptes(gfn))
        return UnsyncDecision(0, "already unsync" if shadowed else "not shadowed")


def make_spte_outcome(cfg: MmuConfig, mmu: ShadowMmu | None, sp_role: int, gfn: int, pfn: int, *,
                      pte_access: int, old_spte: int | None = None, prefetch: bool = False,
                      synchronizing: bool = False, host_writable: bool = True,
                      dirty_tracked: bool = False, host_mmio: bool = False,
                      ad_wrprot_only: bool = False, apply: bool = True) -> MakeSpteOutcome:
    """``make_spte()`` with every output: the SPTE and wrprot from ``spte.make_spte`` (the SP's
    level and ad_disabled come from ``sp_role``), the ``mmu_try_to_unsync_pages()`` decision
    against ``mmu`` (None: no shadow pages, a TDP-only VM), the ``mark_page_dirty_in_slot()``
    call (``dirty_tracked``: the memslot logs dirty pages) and the WARNs: make_spte's
    dirty-tracked huge writable SPTE and the ones ``spte.make_spte`` reports.  With
    ``apply`` the SPs it unsyncs are marked unsync in ``mmu``."""
    C.mmu_config(cfg)
    if mmu is not None and not isinstance(mmu, ShadowMmu):
        raise InputError(f"mmu={mmu!r}: expected a ShadowMmu or None (no shadow pages)")
    uint("pfn", pfn)
    for name, v in (("prefetch", prefetch), ("synchronizing", synchronizing),
                    ("host_writable", host_writable), ("dirty_tracked", dirty_tracked),
                    ("host_mmio", host_mmio), ("ad_wrprot_only", ad_wrprot_only), ("apply", apply)):
        C.boolean(name, v)
    sp_role = uint("sp_role", sp_role, 32)
    level = sp_role & 0xF
    if not 1 <= level <= 5:
        raise InputError(f"sp_role={sp_role:#x}: level {level} is not 1..5")
    pte_access = uint("pte_access", pte_access, 8)
    if pte_access & ~7:
        raise InputError(f"pte_access={pte_access:#x}: ACC_EXEC|ACC_WRITE|ACC_USER (0..7)")
    gfn = uint("gfn", gfn)
    old = cfg.profile.nonpresent_value if old_spte is None else uint("old_spte", old_spte)
    ad_disabled = bool((sp_role >> 16) & 1)
    access = pte_access if host_writable else pte_access & ~ACC_WRITE_MASK
    decision = None
    if access & ACC_WRITE_MASK:
        old_writable_leaf = (S.is_shadow_present_pte(cfg, old) and S.is_last_spte(cfg, old, level)
                             and S.is_writable_pte(cfg, old))
        shortcut = cfg.profile.writable_shortcut
        skip = old_writable_leaf and (shortcut != "can_unsync" or synchronizing)
        if not skip:
            if mmu is None:
                decision = UnsyncDecision(0, "not shadowed")
            else:
                decision = mmu.mmu_try_to_unsync_pages(gfn, synchronizing, prefetch, apply=apply)
    r = S.make_spte(cfg, pfn, level=level, pte_access=pte_access, old_spte=old, prefetch=prefetch,
                    synchronizing=synchronizing, host_writable=host_writable, host_mmio=host_mmio,
                    ad_disabled=ad_disabled, ad_wrprot_only=ad_wrprot_only,
                    unsync_fails=decision is not None and not decision.allowed)
    warnings = list(r.warnings)
    dirty = bool(r.spte & PT_WRITABLE_MASK) and dirty_tracked
    if dirty and level > 1:
        warnings.append("make_spte: WARN_ON_ONCE(level > PG_LEVEL_4K): writable huge SPTE in a "
                        "dirty-logged memslot (kvm_mmu_hugepage_adjust should prevent it)")
    return MakeSpteOutcome(r.spte, r.wrprot, decision, dirty, tuple(warnings))


def is_access_allowed(cfg: MmuConfig, spte: int, access: str) -> bool:
    """is_access_allowed (spte.h): an exec fault needs an executable SPTE, a write fault a
    writable one, a read fault the present/readable bit 0.  The SPTE must be a shadow-present
    leaf (the caller's job in the kernel; refused here)."""
    if access not in ACCESS_KINDS:
        raise InputError(f"access={access!r}: one of {', '.join(ACCESS_KINDS)}")
    spte = uint("spte", spte)
    if not S.is_shadow_present_pte(cfg, spte):
        raise InputError(f"spte={spte:#x}: not shadow-present; is_access_allowed needs a present leaf")
    if access == "exec":
        return S.is_executable_pte(cfg, spte)
    if access == "write":
        return S.is_writable_pte(cfg, spte)
    return bool(spte & PT_PRESENT_MASK)


def mark_spte_for_access_track_warnings(cfg: MmuConfig, spte: int) -> tuple:
    """``mark_spte_for_access_track()`` with its WARNs: (new spte, warnings).  An A/D-disabled
    SPTE that is not yet access-tracked is checked by check_spte_writable_invariants (WARN
    when MMU-writable without host-writable, or writable without MMU-writable) and must have
    the saved-bit slots (54, 56) clear."""
    spte = uint("spte", spte)
    warnings = []
    if (S.is_shadow_present_pte(cfg, spte) and not S.spte_ad_enabled(cfg, spte)
            and not S.is_access_track_spte(cfg, spte)):
        if not S.check_spte_writable_invariants(cfg, spte):
            warnings.append("check_spte_writable_invariants: MMU-writable without host-writable, "
                            "or writable without MMU-writable")
        saved = SHADOW_ACC_TRACK_SAVED_BITS_MASK << SHADOW_ACC_TRACK_SAVED_BITS_SHIFT
        if spte & saved:
            warnings.append("mark_spte_for_access_track: Access Tracking saved bit locations "
                            f"are not zero ({spte & saved:#x})")
    return S.mark_spte_for_access_track(cfg, spte), tuple(warnings)


def modify_spte_protections(cfg: MmuConfig, spte: int, set_bits: int, clear_bits: int,
                            prove_mmu: bool = False) -> tuple:
    """``modify_spte_protections()``: restore an access-tracked SPTE, apply
    ``(spte | set) & ~clear``, re-mark it.  ``KVM_MMU_WARN_ON(set & clear)`` fires only in
    CONFIG_KVM_PROVE_MMU kernels (``prove_mmu``).  Returns (new spte, warnings)."""
    spte = uint("spte", spte)
    set_bits = uint("set_bits", set_bits)
    clear_bits = uint("clear_bits", clear_bits)
    prove_mmu = C.boolean("prove_mmu", prove_mmu)
    warnings = []
    if prove_mmu and set_bits & clear_bits:
        warnings.append(f"KVM_MMU_WARN_ON(set & clear): {set_bits & clear_bits:#x}")
    tracked = S.is_shadow_present_pte(cfg, spte) and S.is_access_track_spte(cfg, spte)
    if tracked:
        spte = S.restore_acc_track_spte(cfg, spte)
    spte = (spte | set_bits) & ~clear_bits & 0xFFFFFFFFFFFFFFFF
    if tracked:
        spte, w = mark_spte_for_access_track_warnings(cfg, spte)
        warnings += w
    return spte, tuple(warnings)

