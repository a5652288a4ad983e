"""Pure-Python reference model of the SPTE engine (no C core: an independent oracle).

Written from the rules of ``../shared/spec/spte-mmio.md`` (sections 1, 2, 4, 5, 6 and
the corrections of section 10), one kernel rule per line, with plain Python ints.
It reads an MmuConfig and its LayoutProfile only as data (masks and era switches)
and never imports ``pykvmmu._core`` or ``pykvmmu.spte``.  Function names and
argument meanings follow ``pykvmmu/spte.py``; ``make_spte`` returns ``(spte, wrprot)``.

Era switches (LayoutProfile fields) and the rule each one selects:

- ``mmu_present_bit11``: bit 11 marks every shadow-present SPTE (v5.13+); v5.10-5.12:
  present means "non-zero and not MMIO".
- ``mmio_special_tag`` / ``mmio_requires_nonzero_value``: the is_mmio_spte rule (3.4).
- ``ad_always`` (v6.13+): make_spte sets A whenever ``!prefetch || synchronizing``, sets
  W|MMU-W|D together after the unsync check, marks prefetched SPTEs only when not
  synchronizing; mark_spte_for_access_track also clears A; is_accessed_spte is the A bit;
  leaf_spte_change_needs_tlb_flush is "MMU-writable cleared"; is_dirty_spte is gone.
- ``writable_shortcut`` before v6.13: ``"can_unsync"`` (v5.10-5.15: when ``!can_unsync``
  -- modelled as ``synchronizing`` -- and the old SPTE is writable, return right after
  setting W|MMU-W: no D, no prefetch mark) or ``"old_writable"`` (v5.16-6.12: when the
  old SPTE is writable skip the unsync check and D, the prefetch mark still applies) or
  ``"old_writable_leaf"`` (the same, only when the old SPTE is also a last-level SPTE:
  2867eb782cf7, in the 6.1.120 / 6.6.64 / 6.11.11 / 6.12.2 stable lines).
- ``mmu_writable_needs_both_bits`` (v5.10-5.16): spte_can_locklessly_be_made_writable needs
  host-W and MMU-W; it stands for is_mmu_writable_spte in those eras.
- ``atomic_rule``: spte_has_volatile_bits ("lockless", "mmuw_not_w") or
  spte_needs_atomic_update ("needs_atomic", v6.15+).
- ``split_exec_from_access`` (v6.19+): make_small_spte's make_spte_executable(s, access).
- ``me_value_split`` (v5.19+): make_spte / make_nonleaf_spte OR ``shadow_me_value``;
  before, the single ``shadow_me_mask``.
"""
from __future__ import annotations

from typing import Callable

from ..errors import ProfileError

U64 = (1 << 64) - 1


def BIT(n: int) -> int:
    return 1 << n


def GENMASK(h: int, l: int) -> int:  # noqa: E741
    return ((1 << (h + 1)) - 1) & ~((1 << l) - 1) if h >= l else 0


# ---------------------------------------------------------------- constants (1.1)
PT_PRESENT_MASK = BIT(0)
PT_WRITABLE_MASK = BIT(1)
PT_USER_MASK = BIT(2)
PT_PAGE_SIZE_MASK = BIT(7)
SPTE_MMU_PRESENT_MASK = BIT(11)
SPTE_TDP_AD_SHIFT = 52
SPTE_TDP_AD_MASK = 3 << 52
SPTE_TDP_AD_ENABLED = 0 << 52
SPTE_TDP_AD_DISABLED = 1 << 52
SPTE_TDP_AD_WRPROT_ONLY = 2 << 52
SPTE_SPECIAL_MMIO = 3 << 52              # v5.10-5.12: SPTE_MMIO_MASK
SHADOW_ACC_TRACK_SAVED_BITS_MASK = 0x5   # EPT R and X
SHADOW_ACC_TRACK_SAVED_BITS_SHIFT = 54
VMX_EPT_RWX_MASK = 0x7
VMX_EPT_SUPPRESS_VE_BIT = BIT(63)
VMX_EPT_MISCONFIG_WX_VALUE = 0x6
VMX_EPT_IPAT_BIT = BIT(6)
MT_UC, MT_WB = 0, 6
ACC_EXEC_MASK, ACC_WRITE_MASK, ACC_USER_MASK, ACC_ALL = 1, 2, 4, 7
PAGE_SHIFT = 12


def KVM_PAGES_PER_HPAGE(level: int) -> int:
    return 1 << ((level - 1) * 9)


def KVM_HPAGE_MASK(level: int) -> int:
    """~(huge page size - 1) as a 64-bit mask."""
    return U64 & ~((KVM_PAGES_PER_HPAGE(level) << PAGE_SHIFT) - 1)


class RefError(ValueError):
    """The reference refuses an input the kernel would BUG/WARN on (not a pykvmmu error)."""


# ---------------------------------------------------------------- predicates (2.1)
def _mmu_present_mask(cfg) -> int:
    return SPTE_MMU_PRESENT_MASK if cfg.profile.mmu_present_bit11 else 0


def is_mmio_spte(cfg, spte: int) -> bool:
    p = cfg.profile
    if p.mmio_special_tag:                        # v5.10-5.12
        return spte & SPTE_SPECIAL_MMIO == SPTE_SPECIAL_MMIO
    matches = spte & cfg.mmio_mask == cfg.mmio_value
    if p.mmio_requires_nonzero_value:             # v5.13-6.9
        return matches and cfg.mmio_value != 0
    return matches and bool(cfg.mmio_caching)     # v6.10+: per-VM value, enable_mmio_caching


def is_shadow_present_pte(cfg, spte: int) -> bool:
    if cfg.profile.mmu_present_bit11:
        return bool(spte & SPTE_MMU_PRESENT_MASK)
    return spte != 0 and not is_mmio_spte(cfg, spte)


def is_frozen_spte(cfg, spte: int) -> bool:
    frozen = cfg.profile.frozen_value
    return frozen is not None and spte == frozen


def is_large_pte(cfg, spte: int) -> bool:
    return bool(spte & PT_PAGE_SIZE_MASK)


def is_last_spte(cfg, spte: int, level: int) -> bool:
    return level == 1 or is_large_pte(cfg, spte)


def is_executable_pte(cfg, spte: int) -> bool:
    return spte & (cfg.x_mask | cfg.nx_mask) == cfg.x_mask


def is_writable_pte(cfg, spte: int) -> bool:
    return bool(spte & PT_WRITABLE_MASK)


def is_host_writable_spte(cfg, spte: int) -> bool:
    return bool(spte & cfg.host_writable_mask)


def is_mmu_writable_spte(cfg, spte: int) -> bool:
    if cfg.profile.mmu_writable_needs_both_bits:
        # spte_can_locklessly_be_made_writable (O1): host-W (10) and MMU-W (11) both set.
        both = cfg.host_writable_mask | cfg.mmu_writable_mask
        return spte & both == both
    return bool(spte & cfg.mmu_writable_mask)


def spte_ad_enabled(cfg, spte: int) -> bool:
    return spte & SPTE_TDP_AD_MASK != SPTE_TDP_AD_DISABLED


def spte_ad_need_write_protect(cfg, spte: int) -> bool:
    return spte & SPTE_TDP_AD_MASK != SPTE_TDP_AD_ENABLED


def is_access_track_spte(cfg, spte: int) -> bool:
    return not spte_ad_enabled(cfg, spte) and spte & cfg.acc_track_mask == 0


def _spte_shadow_accessed_mask(cfg, spte: int) -> int:
    return cfg.accessed_mask if spte_ad_enabled(cfg, spte) else 0


def _spte_shadow_dirty_mask(cfg, spte: int) -> int:
    return cfg.dirty_mask if spte_ad_enabled(cfg, spte) else 0


def is_accessed_spte(cfg, spte: int) -> bool:
    if cfg.profile.ad_always:
        return bool(spte & cfg.accessed_mask)
    m = _spte_shadow_accessed_mask(cfg, spte)
    return bool(spte & m) if m else not is_access_track_spte(cfg, spte)


def _require(cfg, feature: str, routine: str) -> None:
    if not getattr(cfg.profile, feature):
        raise ProfileError(f"{routine}: does not exist in profile {cfg.profile.name!r}")


def is_dirty_spte(cfg, spte: int) -> bool:
    _require(cfg, "has_is_dirty_spte", "is_dirty_spte")
    m = _spte_shadow_dirty_mask(cfg, spte)
    return bool(spte & m) if m else bool(spte & PT_WRITABLE_MASK)


def spte_needs_atomic_update(cfg, spte: int) -> bool:
    """spte_needs_atomic_update (v6.15+) or spte_has_volatile_bits (older eras)."""
    rule = cfg.profile.atomic_rule
    w = is_writable_pte(cfg, spte)
    if rule == "needs_atomic":
        if not w and is_mmu_writable_spte(cfg, spte):
            return True
        if not spte_ad_enabled(cfg, spte):
            return True
        return w and not spte & cfg.dirty_mask
    if rule == "lockless":
        # K1 (v5.14) form: present check, then "can locklessly be made writable".
        if not is_shadow_present_pte(cfg, spte):
            return False
        if is_mmu_writable_spte(cfg, spte) or is_access_track_spte(cfg, spte):
            return True
    elif rule == "mmuw_not_w":
        if not w and is_mmu_writable_spte(cfg, spte):
            return True
        if is_access_track_spte(cfg, spte):
            return True
    else:
        raise RefError(f"unknown atomic_rule {rule!r}")
    if spte_ad_enabled(cfg, spte):
        if not spte & cfg.accessed_mask or (w and not spte & cfg.dirty_mask):
            return True
    return False


def check_spte_writable_invariants(cfg, spte: int) -> bool:
    """True when check_spte_writable_invariants() would not WARN."""
    if spte & cfg.mmu_writable_mask:
        return bool(spte & cfg.host_writable_mask)
    return not is_writable_pte(cfg, spte)


def is_rsvd_spte(cfg, spte: int, level: int) -> bool:
    """is_rsvd_spte(rsvd_check, spte, level) over the config's [2][5] table (row-major)."""
    bad_mt_xwr = (cfg.bad_mt_xwr >> (spte & 0x3F)) & 1
    large = (spte >> 7) & 1
    return bool(bad_mt_xwr) or bool(spte & cfg.rsvd_bits_mask[large * 5 + level - 1])


def is_ept_ve_possible(cfg, spte: int) -> bool:
    _require(cfg, "has_ept_ve_possible", "is_ept_ve_possible")
    return (bool(cfg.present_mask & VMX_EPT_SUPPRESS_VE_BIT)
            and not spte & VMX_EPT_SUPPRESS_VE_BIT
            and spte & VMX_EPT_RWX_MASK != VMX_EPT_MISCONFIG_WX_VALUE)


def spte_to_pfn(cfg, spte: int) -> int:
    return (spte & cfg.base_addr_mask) >> PAGE_SHIFT


def leaf_spte_change_needs_tlb_flush(cfg, old_spte: int, new_spte: int) -> bool:
    """v6.13+: MMU-writable cleared.  Before: mmu_spte_update()'s flush result."""
    if cfg.profile.ad_always:
        return is_mmu_writable_spte(cfg, old_spte) and not is_mmu_writable_spte(cfg, new_spte)
    if not is_shadow_present_pte(cfg, old_spte):
        return False
    if is_mmu_writable_spte(cfg, old_spte) and not is_writable_pte(cfg, new_spte):
        return True
    if is_accessed_spte(cfg, old_spte) and not is_accessed_spte(cfg, new_spte):
        return True
    return is_dirty_spte(cfg, old_spte) and not is_dirty_spte(cfg, new_spte)


#: name -> function, in the order of pykvmmu.spte.PREDICATES
PREDICATES: dict[str, Callable[..., bool]] = {
    "is_shadow_present_pte": is_shadow_present_pte,
    "is_mmio_spte": is_mmio_spte,
    "is_frozen_spte": is_frozen_spte,
    "is_large_pte": is_large_pte,
    "is_last_spte": is_last_spte,
    "is_executable_pte": is_executable_pte,
    "is_writable_pte": is_writable_pte,
    "is_mmu_writable_spte": is_mmu_writable_spte,
    "is_host_writable_spte": is_host_writable_spte,
    "is_accessed_spte": is_accessed_spte,
    "is_dirty_spte": is_dirty_spte,
    "spte_ad_enabled": spte_ad_enabled,
    "spte_ad_need_write_protect": spte_ad_need_write_protect,
    "is_access_track_spte": is_access_track_spte,
    "spte_needs_atomic_update": spte_needs_atomic_update,
    "check_spte_writable_invariants": check_spte_writable_invariants,
    "is_rsvd_spte": is_rsvd_spte,
    "is_ept_ve_possible": is_ept_ve_possible,
}
NEEDS_LEVEL = {"is_last_spte", "is_rsvd_spte"}


def predicate(cfg, name: str, spte: int, level: int = 1) -> bool:
    f = PREDICATES[name]
    return f(cfg, spte, level) if name in NEEDS_LEVEL else f(cfg, spte)


# ---------------------------------------------------------------- access tracking (2.5)
def mark_spte_for_access_track(cfg, spte: int) -> int:
    if spte_ad_enabled(cfg, spte):
        return spte & ~cfg.accessed_mask
    if is_access_track_spte(cfg, spte):
        return spte
    # (WARNs: writable invariants; saved slots must be empty -- values unaffected.)
    spte |= (spte & SHADOW_ACC_TRACK_SAVED_BITS_MASK) << SHADOW_ACC_TRACK_SAVED_BITS_SHIFT
    clear = cfg.acc_track_mask
    if cfg.profile.ad_always:
        clear |= cfg.accessed_mask
    return spte & ~clear


def restore_acc_track_spte(cfg, spte: int) -> int:
    saved = (spte >> SHADOW_ACC_TRACK_SAVED_BITS_SHIFT) & SHADOW_ACC_TRACK_SAVED_BITS_MASK
    spte &= ~cfg.acc_track_mask
    spte &= ~(SHADOW_ACC_TRACK_SAVED_BITS_MASK << SHADOW_ACC_TRACK_SAVED_BITS_SHIFT)
    return spte | saved


def _modify_spte_protections(cfg, spte: int, set_bits: int, clear_bits: int) -> int:
    tracked = is_access_track_spte(cfg, spte)
    if tracked:
        spte = restore_acc_track_spte(cfg, spte)
    spte = (spte | set_bits) & ~clear_bits
    if tracked:
        spte = mark_spte_for_access_track(cfg, spte)
    return spte


# ---------------------------------------------------------------- make_spte (2.2)
def vmx_get_mt_mask(cfg, host_mmio: bool) -> int:
    """2.10: UC for host MMIO; WB|IPAT when guest PAT is ignored; else WB."""
    if host_mmio:
        return MT_UC << 3
    if cfg.ignore_guest_pat:
        return (MT_WB << 3) | VMX_EPT_IPAT_BIT
    return MT_WB << 3


def make_spte(cfg, pfn: int, *, level: int = 1, pte_access: int = ACC_ALL,
              old_spte: int | None = None, prefetch: bool = False, synchronizing: bool = False,
              host_writable: bool = True, host_mmio: bool = False, ad_disabled: bool | None = None,
              ad_wrprot_only: bool = False, unsync_fails: bool = False,
              nx_huge_pages: bool | None = None, memtype: int | None = None):
    """make_spte(): returns ``(spte, wrprot)``.  Before v6.13 ``synchronizing`` is ``!can_unsync``."""
    p = cfg.profile
    if old_spte is None:
        old_spte = p.nonpresent_value
    if ad_disabled is None:
        ad_disabled = not cfg.ad_enabled
    nx_huge = cfg.nx_huge_pages if nx_huge_pages is None else nx_huge_pages
    wrprot = False

    spte = _mmu_present_mask(cfg)                                        # rule 1
    if ad_disabled:                                                      # rule 2
        spte |= SPTE_TDP_AD_DISABLED
    elif ad_wrprot_only:
        spte |= SPTE_TDP_AD_WRPROT_ONLY
    spte |= cfg.present_mask                                             # rule 3
    if p.ad_always:                                                      # rule 4
        if not prefetch or synchronizing:
            spte |= cfg.accessed_mask
    elif not prefetch:
        spte |= _spte_shadow_accessed_mask(cfg, spte)
    if level > 1 and pte_access & ACC_EXEC_MASK and nx_huge:             # rule 5
        pte_access &= ~ACC_EXEC_MASK
    spte |= cfg.x_mask if pte_access & ACC_EXEC_MASK else cfg.nx_mask   # rule 7
    if pte_access & ACC_USER_MASK:                                       # rule 8
        spte |= cfg.user_mask
    if level > 1:                                                        # rule 9
        spte |= PT_PAGE_SIZE_MASK
    if cfg.mt_hook:                                                      # rule 10
        spte |= vmx_get_mt_mask(cfg, host_mmio) if memtype is None else memtype
    if host_writable:                                                    # rule 11
        spte |= cfg.host_writable_mask
    else:
        pte_access &= ~ACC_WRITE_MASK
    me = cfg.me_value if p.me_value_split else cfg.me_mask               # rule 12
    if me and not host_mmio:
        spte |= me
    spte |= pfn << PAGE_SHIFT                                            # rule 13

    if p.ad_always:                                                      # rule 14 (v6.13+)
        if pte_access & ACC_WRITE_MASK:
            if ((not is_last_spte(cfg, old_spte, level) or not is_writable_pte(cfg, old_spte))
                    and unsync_fails):
                wrprot = True
            else:
                spte |= PT_WRITABLE_MASK | cfg.mmu_writable_mask | cfg.dirty_mask
        if prefetch and not synchronizing:                               # rule 15
            spte = mark_spte_for_access_track(cfg, spte)
        return spte, wrprot

    # rule 14 before v6.13: W and MMU-W first, shortcut, unsync check, then D.
    shortcut = False
    if pte_access & ACC_WRITE_MASK:
        spte |= PT_WRITABLE_MASK | cfg.mmu_writable_mask
        if p.writable_shortcut == "can_unsync":
            shortcut = synchronizing and is_writable_pte(cfg, old_spte)
        elif p.writable_shortcut == "old_writable":
            shortcut = is_writable_pte(cfg, old_spte)
        elif p.writable_shortcut == "old_writable_leaf":      # 2867eb782cf7 (stable lines)
            shortcut = is_last_spte(cfg, old_spte, level) and is_writable_pte(cfg, old_spte)
        else:
            raise RefError(f"unknown writable_shortcut {p.writable_shortcut!r}")
        if not shortcut and unsync_fails:
            wrprot = True
            pte_access &= ~ACC_WRITE_MASK
            spte &= ~(PT_WRITABLE_MASK | cfg.mmu_writable_mask)
    if shortcut:
        if p.writable_shortcut == "can_unsync":      # "goto out" past D and the prefetch mark
            return spte, wrprot
    elif pte_access & ACC_WRITE_MASK:
        spte |= _spte_shadow_dirty_mask(cfg, spte)
    if prefetch:                                                         # rule 15 (old form)
        spte = mark_spte_for_access_track(cfg, spte)
    return spte, wrprot


def make_spte_warnings(cfg, spte: int, level: int, pte_access: int) -> tuple:
    """The WARNs make_spte raises for these inputs (10.3: both are unconditional)."""
    w = []
    np_value = cfg.profile.nonpresent_value
    if np_value and (pte_access | cfg.present_mask) == np_value:
        w.append("pte_access|shadow_present_mask == SHADOW_NONPRESENT_VALUE")
    if is_rsvd_spte(cfg, spte, level):
        w.append("is_rsvd_spte(shadow_zero_check)")
    return tuple(w)


# ---------------------------------------------------------------- non-leaf (1.4)
def make_nonleaf_spte(cfg, child_pa: int, ad_disabled: bool | None = None) -> int:
    if ad_disabled is None:
        ad_disabled = not cfg.ad_enabled
    me = cfg.me_value if cfg.profile.me_value_split else cfg.me_mask
    spte = (_mmu_present_mask(cfg) | child_pa | cfg.present_mask | PT_WRITABLE_MASK
            | cfg.user_mask | cfg.x_mask | me)
    if ad_disabled:
        spte |= SPTE_TDP_AD_DISABLED
    else:
        spte |= cfg.accessed_mask
    return spte


# ---------------------------------------------------------------- split / collapse (2.3, 2.4)
def make_small_spte(cfg, huge_spte: int, child_level: int, index: int,
                    role_access: int = ACC_ALL, nx_huge_pages: bool | None = None) -> int:
    _require(cfg, "has_make_small_spte", "make_small_spte")
    if not is_shadow_present_pte(cfg, huge_spte):
        raise RefError("make_small_spte: huge_spte is not shadow-present")
    if not is_large_pte(cfg, huge_spte):
        raise RefError("make_small_spte: huge_spte is not large")
    nx_huge = cfg.nx_huge_pages if nx_huge_pages is None else nx_huge_pages
    child = huge_spte | ((index * KVM_PAGES_PER_HPAGE(child_level)) << PAGE_SHIFT)
    if child_level == 1:
        child &= ~PT_PAGE_SIZE_MASK
        if cfg.profile.split_exec_from_access:                   # v6.19+: (spte, access)
            if nx_huge:
                if role_access & ACC_EXEC_MASK:
                    child = _modify_spte_protections(cfg, child, cfg.x_mask, cfg.nx_mask)
                else:
                    child = _modify_spte_protections(cfg, child, cfg.nx_mask, cfg.x_mask)
        elif role_access & ACC_EXEC_MASK and nx_huge:            # v5.19-6.18
            child = _modify_spte_protections(cfg, child, cfg.x_mask, cfg.nx_mask)
    return child


def make_huge_spte(cfg, small_spte: int, level: int, nx_huge_pages: bool | None = None) -> int:
    _require(cfg, "has_make_huge_spte", "make_huge_spte")
    if not is_shadow_present_pte(cfg, small_spte) or level == 1:
        raise RefError("make_huge_spte: small_spte not present, or level 1")
    nx_huge = cfg.nx_huge_pages if nx_huge_pages is None else nx_huge_pages
    huge = small_spte | PT_PAGE_SIZE_MASK
    huge &= KVM_HPAGE_MASK(level) | 0xFFF
    if nx_huge:
        huge = _modify_spte_protections(cfg, huge, cfg.nx_mask, cfg.x_mask)
    return huge
