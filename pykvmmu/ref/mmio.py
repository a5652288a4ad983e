"""Pure-Python reference model of MMIO SPTEs (an independent oracle for pykvmmu.mmio).

Written from ../shared/spec/spte-mmio.md sections 3, 5, 6 and 10 with plain ints; it
reads MmuConfig fields (masks and the era profile) but never the C core.
"""
from __future__ import annotations

U64 = (1 << 64) - 1
UPDATE_IN_PROGRESS = 1 << 63
PAGE_SHIFT = 12
RSVD_LEN = 5                      # SHADOW_NONPRESENT_OR_RSVD_MASK_LEN
SPTE_MMIO_MASK_V510 = 3 << 52     # v5.10-5.12 SPTE_SPECIAL_MASK == SPTE_MMIO_MASK
ALLOWED = (1 << 63) | (((1 << 52) - 1) & ~((1 << 12) - 1)) | 0x7
GFN_LIMIT = 1 << 40


def _field(lo: int, hi: int) -> int:
    return ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


def gen_layout(profile):
    """(low_mask, low_shift, high_mask, high_shift, gen_mask) of the era's MMIO generation."""
    ls, le, hs, he = profile.mmio_gen_layout
    low_bits = le - ls + 1
    high_bits = he - hs + 1
    return (_field(ls, le), ls, _field(hs, he), hs - low_bits, (1 << (low_bits + high_bits)) - 1)


def generation_mmio_spte_mask(cfg, gen: int) -> int:
    lm, ls, hm, hs, gm = gen_layout(cfg.profile)
    assert gen & ~gm == 0, "WARN: generation wider than MMIO_SPTE_GEN_MASK"
    return ((gen << ls) & lm) | ((gen << hs) & hm)


def get_mmio_spte_generation(cfg, spte: int) -> int:
    lm, ls, hm, hs, _ = gen_layout(cfg.profile)
    return ((spte & lm) >> ls) | ((spte & hm) >> hs)


def make_mmio_spte(cfg, gfn: int, access: int, generation: int) -> int:
    """gen bits | value | (access & access_mask) | gpa | R | ((gpa & R) << 5)."""
    gm = gen_layout(cfg.profile)[4]
    gpa = (gfn << PAGE_SHIFT) & U64
    r = cfg.nonpresent_or_rsvd_mask
    spte = generation_mmio_spte_mask(cfg, generation & gm)
    spte |= cfg.mmio_value
    spte |= access & cfg.mmio_access_mask
    spte |= gpa | r | ((gpa & r) << RSVD_LEN)
    return spte & U64


def get_mmio_spte_gfn(cfg, spte: int) -> int:
    gpa = spte & cfg.nonpresent_or_rsvd_lower_gfn_mask
    gpa |= (spte >> RSVD_LEN) & cfg.nonpresent_or_rsvd_mask
    return gpa >> PAGE_SHIFT


def get_mmio_spte_access(cfg, spte: int) -> int:
    return spte & cfg.mmio_access_mask


def is_mmio_spte(cfg, spte: int) -> bool:
    """By era: v5.10 tag bits 53:52 == 11b; v5.13-6.9 masked compare with a non-zero value;
    v6.10+ masked compare against the per-VM value while caching is enabled."""
    if not cfg.mmio_caching:
        return False
    p = cfg.profile
    if p.mmio_special_tag:
        return spte & SPTE_MMIO_MASK_V510 == SPTE_MMIO_MASK_V510
    if p.mmio_requires_nonzero_value and not cfg.mmio_value:
        return False
    return spte & cfg.mmio_mask == cfg.mmio_value


def check_mmio_spte(cfg, spte: int, memslots_gen: int) -> bool:
    if memslots_gen & UPDATE_IN_PROGRESS:
        return False
    return (memslots_gen & gen_layout(cfg.profile)[4]) == get_mmio_spte_generation(cfg, spte)


def mmio_fault_outcome(cfg, spte: int, memslots_gen: int) -> str:
    if not is_mmio_spte(cfg, spte):
        return "not_mmio"
    if memslots_gen & UPDATE_IN_PROGRESS:
        return "update_in_progress"
    return "emulate" if check_mmio_spte(cfg, spte, memslots_gen) else "stale"


def kvm_mmu_invalidate_mmio_sptes(cfg, gen: int, nr_as_ids: int) -> bool:
    assert not gen & UPDATE_IN_PROGRESS
    gen &= gen_layout(cfg.profile)[4]
    gen &= ~(nr_as_ids - 1)
    return gen == 0


def set_mmio_spte_mask(profile, value: int, mask: int, access_mask: int, *, allow: bool = True,
                       r: int = 0, lower: int = 0, allowed_check: bool = True):
    """Kernel-order checks: returns (value, mask, caching, fired names)."""
    assert access_mask >> 32 == 0, "BUG_ON"
    fired = []
    if profile.mmio_special_tag:
        if value & (r << RSVD_LEN):
            fired.append("value_collides_with_l1tf_relocation(warn)")
        if value & lower:
            fired.append("value_overlaps_lower_gfn_mask(warn)")
        return value | SPTE_MMIO_MASK_V510, mask | SPTE_MMIO_MASK_V510, True, fired
    if value & lower:
        fired.append("value_overlaps_lower_gfn_mask(warn)")
    if not allow:
        fired.append("mmio_caching_disabled_by_parameter")
        value = 0
    if allowed_check and mask & ~ALLOWED:
        fired.append("mask_outside_SPTE_MMIO_ALLOWED_MASK")
        value = 0
    if value & (r << RSVD_LEN):
        fired.append("value_collides_with_l1tf_relocation")
        value = 0
    if value & mask != value:
        fired.append("value_outside_mask")
        value = 0
    frozen = profile.frozen_value
    if frozen is not None and value and frozen & mask == value:
        fired.append("frozen_spte_matches_value")
        value = 0
    # v5.13-5.18: enable_mmio_caching keeps the parameter's value (8b9e74bfbf8c came in v5.19)
    return value, mask, (value != 0) if profile.mmio_zero_value_disables_caching else allow, fired


def generations(start: int, nr_as_ids: int, n_updates: int):
    """The generations after 0..n_updates memslot updates of one address space."""
    return [start + k * nr_as_ids for k in range(n_updates + 1)]
