"""Fact-sheet rules for the SPTE engine (spte-mmio.md sections 1, 2, 5, 8, 10).

Worked values of section 8, the static asserts of section 5 as tests, the runtime
invariants and derived properties of section 5 as properties over random inputs, and
the era differences (the same inputs give the kernel's different results per profile).
All checks run on the C core (pykvmmu.spte); the reference agreement is in test_spte_ref.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from pykvmmu import spte as S
from pykvmmu.config import (GENMASK, SPTE_MMIO_ALLOWED_MASK, MmuConfig)
from pykvmmu.errors import ProfileError
from pykvmmu.profile import PROFILES
from pykvmmu.ref import spte as R

BIT = R.BIT
ALL = MmuConfig.all_presets()
ALL_NX = ALL + [c.replace(nx_huge_pages=True) for c in ALL]
EPT = [c for c in ALL if c.is_ept]
NEW = ("v6.10", "v6.13", "v6.15", "v6.19")   # SVE in the EPT present mask


def _cid(c):
    return f"{c.profile.name}-{c.mode}{'-xo' if c.exec_only else ''}{'' if c.ad_enabled else '-noad'}"


def cfg_ids(cs):
    return [_cid(c) for c in cs]


# ------------------------------------------------------------------ section 8: worked values
@pytest.mark.parametrize("profile", NEW)
@pytest.mark.parametrize("exec_only", [False, True])
def test_vector_ept_leaf(profile, exec_only):
    cfg = MmuConfig.ept(profile=profile, exec_only=exec_only)
    r = S.make_spte(cfg, 0x12345, level=1, pte_access=S.ACC_ALL, host_writable=True,
                    prefetch=False, memtype=0x70)
    assert r.spte == 0x8600_0000_1234_5B77 and r.wrprot is False
    assert S.make_spte(cfg, 0x12345).spte == 0x8600_0000_1234_5B77      # memtype 0x70 by default


@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "v5.10"])
@pytest.mark.parametrize("mode", ["npt", "shadow"])
def test_vector_legacy_leaf(profile, mode):
    cfg = MmuConfig.preset(mode, profile=profile)
    r = S.make_spte(cfg, 0x12345, level=1, pte_access=S.ACC_ALL, host_writable=True)
    assert (r.spte, r.wrprot) == (0x0000_0000_1234_5E67, False)


@pytest.mark.parametrize("profile", NEW)
def test_vector_nonleaf(profile):
    assert S.make_nonleaf_spte(MmuConfig.ept(profile=profile), 0x1000) == 0x8000_0000_0000_1907
    assert S.make_nonleaf_spte(MmuConfig.npt(profile=profile), 0x1000) == 0x0000_0000_0000_1827
    assert S.make_nonleaf_spte(MmuConfig.shadow(profile=profile), 0x1000) == 0x1827


@pytest.mark.parametrize("cfg", EPT, ids=cfg_ids(EPT))
def test_vector_access_track(cfg):
    s = 0x8210_0000_1234_5875
    assert S.mark_spte_for_access_track(cfg, s) == 0x8350_0000_1234_5870
    assert S.restore_acc_track_spte(cfg, 0x8350_0000_1234_5870) == s
    a = S.access_track_batch(cfg, np.array([s], np.uint64))
    assert int(a[0]) == 0x8350_0000_1234_5870
    assert int(S.access_track_batch(cfg, a, restore=True)[0]) == s


@pytest.mark.parametrize("profile", NEW)
def test_vector_special_values(profile):
    p = PROFILES[profile]
    assert p.frozen_value == 0x8000_0000_0000_05A0
    assert p.nonpresent_value == 0x8000_0000_0000_0000
    for c in MmuConfig.all_presets([profile]):
        assert S.is_frozen_spte(c, 0x8000_0000_0000_05A0)
        assert not S.is_frozen_spte(c, 0x5A0)


# ------------------------------------------------------------------ section 5: static asserts
GEN19 = GENMASK(10, 3) | GENMASK(62, 52)


def test_static_asserts():
    assert R.SPTE_TDP_AD_ENABLED == 0                                              # 1
    saved = R.SHADOW_ACC_TRACK_SAVED_BITS_MASK << R.SHADOW_ACC_TRACK_SAVED_BITS_SHIFT
    assert saved == BIT(54) | BIT(56)
    assert not R.SPTE_TDP_AD_MASK & saved                                          # 2
    assert not BIT(57) & R.SPTE_TDP_AD_MASK and not BIT(58) & R.SPTE_TDP_AD_MASK   # 3
    assert not BIT(57) & saved and not BIT(58) & saved                             # 4
    assert not BIT(11) & GEN19                                                     # 5
    assert not SPTE_MMIO_ALLOWED_MASK & (BIT(11) | GEN19)                          # 6
    assert SPTE_MMIO_ALLOWED_MASK == 0x800F_FFFF_FFFF_F007
    assert R.VMX_EPT_MISCONFIG_WX_VALUE == 0x6 and R.PT_WRITABLE_MASK == 0x2       # EPT W == PT W


@pytest.mark.parametrize("name", [n for n, p in PROFILES.items() if p.mmu_present_bit11])
def test_static_asserts_per_profile(name):
    p = PROFILES[name]
    ls, le, hs, he = p.mmio_gen_layout
    assert (le - ls + 1, he - hs + 1) == (8, 11) and p.mmio_gen_bits == 19        # 7
    gen = GENMASK(le, ls) | GENMASK(he, hs)
    assert gen == GEN19 and not BIT(11) & gen                                      # 5
    assert not p.nonpresent_value & BIT(11)                                        # 8
    assert p.frozen_value is not None and not p.frozen_value & BIT(11)             # 9
    hw, mw = p.writable_bits_ept
    assert (hw, mw) == (57, 58)
    assert not (BIT(hw) | BIT(mw)) & (R.SPTE_TDP_AD_MASK | BIT(54) | BIT(56))      # 3, 4


@pytest.mark.parametrize("cfg", ALL, ids=cfg_ids(ALL))
def test_config_respects_static_layout(cfg):
    """Each preset's software bits avoid bit 11, the AD type and the saved slots (EPT)."""
    for m in (cfg.host_writable_mask, cfg.mmu_writable_mask):
        if cfg.profile.mmu_present_bit11:
            assert not m & BIT(11)
        if cfg.is_ept and cfg.profile.mmu_present_bit11:
            assert not m & (R.SPTE_TDP_AD_MASK | BIT(54) | BIT(56))
    if cfg.mmio_caching and cfg.profile.mmu_present_bit11:
        assert not cfg.mmio_mask & (BIT(11) | GEN19)
        assert not cfg.mmio_mask & ~SPTE_MMIO_ALLOWED_MASK


# ------------------------------------------------------------------ runtime invariants
cfgs = st.sampled_from(ALL_NX)


@st.composite
def make_args(draw, cfg):
    # a host pfn below MAXPHYADDR (a wider pfn fits the PFN mask but may hit reserved PA bits)
    pfn = draw(st.integers(0, cfg.max_pfn & ((1 << (cfg.maxphyaddr - 12)) - 1)))
    old = draw(st.one_of(st.integers(0, 2**64 - 1),
                         st.builds(lambda p: R.make_spte(cfg, p)[0], st.integers(0, cfg.max_pfn))))
    kw = dict(level=draw(st.integers(1, 5)), pte_access=draw(st.integers(0, 7)), old_spte=old,
              prefetch=draw(st.booleans()), synchronizing=draw(st.booleans()),
              host_writable=draw(st.booleans()), host_mmio=draw(st.booleans()),
              ad_disabled=draw(st.sampled_from([None, False, True])),
              ad_wrprot_only=draw(st.booleans()), unsync_fails=draw(st.booleans()))
    return pfn, kw


@given(cfgs, st.data())
def test_make_spte_invariants(cfg, data):
    pfn, kw = data.draw(make_args(cfg))
    r = S.make_spte(cfg, pfn, **kw)
    s = r.spte
    if cfg.profile.mmu_present_bit11:
        assert s & BIT(11)                                          # MMU-present on every output
    assert S.is_shadow_present_pte(cfg, s)
    assert S.check_spte_writable_invariants(cfg, s)                 # MMU-W => host-W; !MMU-W => !W
    if not kw["host_writable"]:
        assert not s & (cfg.host_writable_mask | BIT(1) | cfg.mmu_writable_mask)
    assert S.spte_to_pfn(cfg, s) == pfn
    assert S.is_last_spte(cfg, s, kw["level"])
    assert S.is_large_pte(cfg, s) == (kw["level"] > 1)
    if cfg.profile.mmu_present_bit11 and not r.warnings:
        # (an exec-only host asked for W|X without R builds the WX misconfig pattern, which
        # is also the EPT MMIO value; make_spte WARNs on that reserved combination)
        assert not S.is_mmio_spte(cfg, s)
    if r.wrprot:
        assert not s & BIT(1)


@given(cfgs, st.integers(0, 2**64 - 1), st.integers(1, 5))
def test_is_last_rule(cfg, s, level):
    assert S.is_last_spte(cfg, s, level) == (level == 1 or bool(s & BIT(7)))


@given(cfgs, st.data())
def test_mark_idempotent_and_restore_identity(cfg, data):
    s = data.draw(st.one_of(st.integers(0, 2**64 - 1),
                            make_args(cfg).map(lambda a: S.make_spte(cfg, a[0], **a[1]).spte)))
    m = S.mark_spte_for_access_track(cfg, s)
    assert S.mark_spte_for_access_track(cfg, m) == m
    saved_slots = BIT(54) | BIT(56)
    ad_disabled = (s >> 52) & 3 == 1
    if not ad_disabled:
        assert m == s & ~cfg.accessed_mask
        return
    if cfg.acc_track_mask == 0 or s & 7 == 0:
        # 10.2 (exec-only EPT, RWX already 000) and 10.5 (legacy word with AD type 01):
        # already "access-tracked", so mark leaves it unchanged, A bit included.
        assert m == s
        return
    if not S.is_shadow_present_pte(cfg, s) or s & saved_slots:
        return
    a = cfg.accessed_mask if cfg.profile.ad_always else 0
    assert S.restore_acc_track_spte(cfg, m) == s & ~(BIT(1) | a)
    assert S.is_access_track_spte(cfg, m)
    # W is not saved: a W-only SPTE comes back with RWX 000, still access-tracked
    assert S.is_access_track_spte(cfg, S.restore_acc_track_spte(cfg, m)) == (s & 5 == 0)


def test_section_10_2_exec_only_a_bit_survives_mark():
    cfg = MmuConfig.ept(exec_only=True, ad=False)
    s = S.make_spte(cfg, 0x1234, pte_access=S.ACC_WRITE_MASK, host_writable=False).spte
    assert s & 7 == 0 and s & BIT(8) and S.is_access_track_spte(cfg, s)
    assert S.mark_spte_for_access_track(cfg, s) == s


def test_section_10_5_legacy_ad_disabled_word_is_access_tracked():
    cfg = MmuConfig.npt()
    s = S.make_spte(cfg, 0x1234, ad_disabled=True).spte
    assert (s >> 52) & 3 == 1 and S.is_access_track_spte(cfg, s)
    assert S.mark_spte_for_access_track(cfg, s) == s
    real = S.make_spte(cfg, 0x1234).spte
    assert not S.is_access_track_spte(cfg, real)


SPLIT = [c for c in ALL_NX if c.profile.has_make_small_spte]
HUGE = [c for c in ALL_NX if c.profile.has_make_huge_spte]


def host_pfn_max(cfg):
    return (1 << (cfg.phys_bits - 12)) - 1


@given(st.sampled_from(SPLIT), st.integers(1, 2), st.integers(0, 511), st.data())
def test_make_small_spte_pfn_formula(cfg, child_level, index, data):
    """Children of a 2M (child level 1) or 1G (child level 2) page of host memory."""
    pfn = data.draw(st.integers(0, host_pfn_max(cfg))) & ~((1 << (9 * child_level)) - 1)
    H = S.make_spte(cfg, pfn, level=child_level + 1, pte_access=data.draw(st.integers(0, 7))).spte
    child = S.make_small_spte(cfg, H, child_level, index, data.draw(st.integers(0, 7)))
    assert S.spte_to_pfn(cfg, child) == S.spte_to_pfn(cfg, H) + index * (1 << (9 * (child_level - 1)))
    assert S.is_large_pte(cfg, child) == (child_level > 1)
    assert S.is_shadow_present_pte(cfg, child)


@given(st.sampled_from(HUGE), st.integers(1, 2), st.integers(0, 511), st.data())
def test_make_huge_of_small_child_has_parent_pa(cfg, child_level, index, data):
    L = child_level + 1
    pfn = data.draw(st.integers(0, host_pfn_max(cfg))) & ~((1 << (9 * child_level)) - 1)
    H = S.make_spte(cfg, pfn, level=L, pte_access=data.draw(st.integers(0, 7))).spte
    child = S.make_small_spte(cfg, H, child_level, index, data.draw(st.integers(0, 7)))
    h2 = S.make_huge_spte(cfg, child, L)
    assert S.spte_to_pfn(cfg, h2) == S.spte_to_pfn(cfg, H)
    assert S.is_large_pte(cfg, h2)
    if cfg.nx_huge_pages:
        assert not S.is_executable_pte(cfg, h2)


@pytest.mark.parametrize("cfg", ALL, ids=cfg_ids(ALL))
def test_frozen_and_nonpresent_neither_present_nor_mmio(cfg):
    p = cfg.profile
    for v in (p.nonpresent_value, p.frozen_value):
        if v is None:
            continue
        assert not S.is_shadow_present_pte(cfg, v)
        assert not S.is_mmio_spte(cfg, v)
        assert not R.is_shadow_present_pte(cfg, v) and not R.is_mmio_spte(cfg, v)


# ------------------------------------------------------------------ warnings (10.3, 10.7)
def test_make_spte_warnings():
    xo = MmuConfig.ept(exec_only=True)
    r = S.make_spte(xo, 0x1234, pte_access=0)
    assert "pte_access|shadow_present_mask == SHADOW_NONPRESENT_VALUE" in r.warnings
    r = S.make_spte(xo, 0x1234, pte_access=S.ACC_EXEC_MASK)            # XWR = 100b on the TDP table
    assert r.spte & 7 == 4 and "is_rsvd_spte(shadow_zero_check)" in r.warnings
    assert S.make_spte(MmuConfig.ept(), 0x1234).warnings == ()
    assert S.make_spte(MmuConfig.npt(), 0x1234).warnings == ()


# ------------------------------------------------------------------ era differences
def test_era_dirty_bit_on_writable_ept_without_ad():
    for prof, want_ad in (("v5.19", False), ("v6.10", False), ("v6.13", True), ("v6.19", True)):
        cfg = MmuConfig.ept(ad=False, profile=prof)
        s = S.make_spte(cfg, 0x12345).spte          # ad_disabled = !kvm_ad_enabled
        assert s & BIT(52) and s & BIT(1)
        assert bool(s & BIT(9)) == want_ad and bool(s & BIT(8)) == want_ad, prof


def test_era_accessed_bit_when_synchronizing():
    for prof, want in (("v6.10", False), ("v6.13", True), ("v6.19", True)):
        for cfg, a in ((MmuConfig.npt(profile=prof), BIT(5)), (MmuConfig.ept(profile=prof), BIT(8))):
            s = S.make_spte(cfg, 0x42, prefetch=True, synchronizing=True).spte
            assert bool(s & a) == want, (prof, cfg.mode)
            s = S.make_spte(cfg, 0x42, prefetch=True).spte
            assert not s & a


def test_era_mmu_present_bit_v5_10():
    old, new = MmuConfig.npt(profile="v5.10"), MmuConfig.npt(profile="v5.13")
    assert S.make_spte(old, 0x12345).spte == 0x1234_5C67             # host-W 10, MMU-W 11
    assert S.make_spte(new, 0x12345).spte == 0x1234_5E67             # host-W 9, MMU-W 10, present 11
    assert S.is_shadow_present_pte(old, 0x1) and not S.is_shadow_present_pte(new, 0x1)
    assert S.is_shadow_present_pte(new, BIT(11)) and S.is_shadow_present_pte(old, BIT(11))
    mmio = old.mmio_value
    assert S.is_mmio_spte(old, mmio) and not S.is_shadow_present_pte(old, mmio)
    # v5.10: "MMU-writable" needs both bits 10 and 11
    assert not S.is_mmu_writable_spte(old, BIT(11)) and S.is_mmu_writable_spte(old, BIT(10) | BIT(11))
    # v5.13-v5.16 still need both (host-W 9, MMU-W 10); MMU-W alone from 5f16bcac6e28 (v5.17)
    assert not S.is_mmu_writable_spte(new, BIT(10)) and S.is_mmu_writable_spte(new, BIT(9) | BIT(10))
    assert S.is_mmu_writable_spte(MmuConfig.npt(profile="v5.17"), BIT(10))


def test_era_writable_bit_positions():
    for prof, (hw, mw) in (("v5.10", (10, 11)), ("v5.13", (57, 58)), ("v6.19", (57, 58))):
        cfg = MmuConfig.ept(profile=prof)
        assert (cfg.host_writable_mask, cfg.mmu_writable_mask) == (BIT(hw), BIT(mw))
        s = S.make_spte(cfg, 0x10).spte
        assert s & BIT(hw) and s & BIT(mw)
    for prof, (hw, mw) in (("v5.10", (10, 11)), ("v5.19", (9, 10))):
        cfg = MmuConfig.npt(profile=prof)
        assert (cfg.host_writable_mask, cfg.mmu_writable_mask) == (BIT(hw), BIT(mw))


def test_era_ept_present_mask_with_sve():
    for prof, sve in (("v5.19", False), ("v6.10", True), ("v6.19", True)):
        for xo in (False, True):
            cfg = MmuConfig.ept(profile=prof, exec_only=xo)
            assert cfg.present_mask == (BIT(63) if sve else 0) | (0 if xo else 1)
            assert bool(S.make_spte(cfg, 0x10).spte & BIT(63)) == sve
            assert cfg.mmio_mask == 0x7 | (BIT(63) if sve else 0)


def test_era_make_small_spte_executability():
    """v6.19: a 4K child is executable iff role.access has ACC_EXEC; v6.13: only ever made executable."""
    for prof, want_exec in (("v6.13", True), ("v6.15", True), ("v6.19", False)):
        cfg = MmuConfig.ept(profile=prof, nx_huge_pages=True)
        huge = S.make_spte(cfg, 0x200, level=2, nx_huge_pages=False).spte   # executable huge page
        assert S.is_executable_pte(cfg, huge)
        child = S.make_small_spte(cfg, huge, 1, 3, role_access=S.ACC_USER_MASK | S.ACC_WRITE_MASK)
        assert S.is_executable_pte(cfg, child) == want_exec, prof
        nxhuge = S.make_spte(cfg, 0x200, level=2).spte                        # NX hugepage rule
        assert not S.is_executable_pte(cfg, nxhuge)
        assert S.is_executable_pte(cfg, S.make_small_spte(cfg, nxhuge, 1, 3, role_access=S.ACC_ALL))
        gig = S.make_spte(cfg, 0x40000, level=3).spte                          # 1G, NX hugepage rule
        assert not S.is_executable_pte(cfg, S.make_small_spte(cfg, gig, 2, 3, role_access=S.ACC_ALL))


def test_era_needs_atomic_update():
    for mode in ("ept-noad", "ept"):
        old, new = MmuConfig.preset(mode, profile="v6.13"), MmuConfig.preset(mode, profile="v6.15")
        rx = S.make_spte(new, 0x10, pte_access=S.ACC_EXEC_MASK | S.ACC_USER_MASK, ad_disabled=True).spte
        assert S.spte_needs_atomic_update(new, rx)          # v6.15: A/D-disabled SPTEs always atomic
        assert not S.spte_needs_atomic_update(old, rx)
    npt_old, npt_new = MmuConfig.npt(profile="v6.13"), MmuConfig.npt(profile="v6.15")
    s = S.make_spte(npt_new, 0x10).spte & ~BIT(5)           # writable, dirty, Accessed clear
    assert S.spte_needs_atomic_update(npt_old, s) and not S.spte_needs_atomic_update(npt_new, s)
    # v5.19-v6.14: no shadow-present check (moved to the callers); v5.13: present check.
    assert S.spte_needs_atomic_update(MmuConfig.npt(profile="v5.19"), 0)
    assert not S.spte_needs_atomic_update(MmuConfig.npt(profile="v5.13"), 0)


def test_era_is_dirty_spte():
    for prof in ("v5.10", "v5.13", "v5.19", "v6.10"):
        cfg = MmuConfig.ept(ad=False, profile=prof)
        s = S.make_spte(cfg, 0x10).spte
        assert S.is_dirty_spte(cfg, s)                      # no D mask: dirty == writable
        assert not S.is_dirty_spte(cfg, s & ~BIT(1))
    for prof in ("v6.13", "v6.15", "v6.19"):
        with pytest.raises(ProfileError, match="is_dirty_spte"):
            S.is_dirty_spte(MmuConfig.npt(profile=prof), 0)
        with pytest.raises(ProfileError):
            S.predicate_batch(MmuConfig.npt(profile=prof), "is_dirty_spte", np.zeros(2, np.uint64))


def test_era_routine_existence():
    for prof in ("v5.10", "v5.13", "v5.19", "v6.10"):
        with pytest.raises(ProfileError, match="make_huge_spte"):
            S.make_huge_spte(MmuConfig.npt(profile=prof), 0x1234_5E67, 2)
    for prof in ("v5.10", "v5.13"):
        with pytest.raises(ProfileError, match="make_small_spte"):
            S.make_small_spte(MmuConfig.npt(profile=prof), 0x1234_5EE7, 1, 0)
    for prof in ("v5.10", "v5.13", "v5.19"):
        with pytest.raises(ProfileError, match="is_ept_ve_possible"):
            S.is_ept_ve_possible(MmuConfig.ept(profile=prof), 0)
    assert S.is_ept_ve_possible(MmuConfig.ept(profile="v6.10"), 0x7)
    assert not S.is_ept_ve_possible(MmuConfig.ept(profile="v6.10"), 0x6)
    assert not S.is_ept_ve_possible(MmuConfig.npt(profile="v6.10"), 0x7)   # no SVE in present mask


def test_era_accessed_and_tlb_flush():
    for prof, flush_on_a in (("v6.10", True), ("v6.13", False)):
        cfg = MmuConfig.npt(profile=prof)
        s = S.make_spte(cfg, 0x10).spte
        assert S.leaf_spte_change_needs_tlb_flush(cfg, s, s & ~BIT(5)) == flush_on_a
        assert S.leaf_spte_change_needs_tlb_flush(cfg, s, s & ~cfg.mmu_writable_mask & ~BIT(1))
    # before v6.13 without hardware A/D: accessed == not access-tracked
    cfg = MmuConfig.ept(ad=False, profile="v6.10")
    s = S.make_spte(cfg, 0x10).spte
    assert S.is_accessed_spte(cfg, s) and not S.is_accessed_spte(cfg, S.mark_spte_for_access_track(cfg, s))
    cfg = MmuConfig.ept(ad=False, profile="v6.13")
    s = S.make_spte(cfg, 0x10).spte
    assert s & BIT(8) and S.is_accessed_spte(cfg, s)
    assert not S.mark_spte_for_access_track(cfg, s) & BIT(8)     # v6.13+: mark clears A too


def test_era_mmio_detection():
    v510 = MmuConfig.npt(profile="v5.10")
    assert S.is_mmio_spte(v510, 3 << 52) and not S.is_mmio_spte(v510, BIT(51) | 1)
    v513 = MmuConfig.npt(profile="v5.13")
    assert S.is_mmio_spte(v513, BIT(51) | 1) and not S.is_mmio_spte(v513, 3 << 52)
    off = MmuConfig.npt(profile="v5.13", maxphyaddr=52)           # no reserved PA bit: value 0
    assert off.mmio_value == 0 and not S.is_mmio_spte(off, 0)
    tdx = MmuConfig.tdx()
    assert S.is_mmio_spte(tdx, 0) and S.is_mmio_spte(tdx, 0x0010_0000_8000_0000)
    assert not S.is_mmio_spte(tdx, tdx.profile.nonpresent_value)
    assert not S.is_mmio_spte(tdx, tdx.profile.frozen_value)


def test_era_writable_shortcut():
    """Old writable SPTE + failing unsync check, per era (2.2 rule 14)."""
    old_npt = MmuConfig.npt(profile="v6.19")
    old = S.make_spte(old_npt, 0x10).spte
    # v6.13+: a writable leaf old SPTE skips the unsync check; W, MMU-W and D are set
    r = S.make_spte(old_npt, 0x10, old_spte=old, unsync_fails=True)
    assert r.spte & BIT(1) and r.spte & BIT(6) and not r.wrprot
    r = S.make_spte(old_npt, 0x10, old_spte=old, unsync_fails=True, level=2)   # not a leaf at L2
    assert r.wrprot and not r.spte & BIT(1)
    # v5.19-v6.12: W and MMU-W kept, but the shortcut also skips D
    c = MmuConfig.npt(profile="v5.19")
    r = S.make_spte(c, 0x10, old_spte=old, unsync_fails=True)
    assert r.spte & BIT(1) and not r.spte & BIT(6) and not r.wrprot
    # v5.16-v5.18: the same shortcut as v5.19, on the v5.13 layout
    c = MmuConfig.npt(profile="v5.16")
    r = S.make_spte(c, 0x10, old_spte=old, unsync_fails=True)
    assert r.spte & BIT(1) and not r.spte & BIT(6) and not r.wrprot
    r = S.make_spte(c, 0x10, old_spte=old, unsync_fails=True, synchronizing=True, prefetch=True)
    assert r.spte & BIT(1) and not r.wrprot
    assert r.spte == S.mark_spte_for_access_track(c, r.spte)          # the prefetch mark applied
    # v5.13-v5.15: the shortcut needs !can_unsync (synchronizing); otherwise the check runs
    c = MmuConfig.npt(profile="v5.13")
    r = S.make_spte(c, 0x10, old_spte=old, unsync_fails=True)
    assert r.wrprot and not r.spte & BIT(1)
    r = S.make_spte(c, 0x10, old_spte=old, unsync_fails=True, synchronizing=True, prefetch=True)
    assert r.spte & BIT(1) and r.spte & BIT(5) == 0 and not r.wrprot   # also skips the prefetch mark
    # the v5.13 -> v5.16 difference on one input: an ordinary fault (can_unsync) on a
    # writable old SPTE sets D in v5.13 (no shortcut) and not in v5.16 (shortcut)
    v513 = S.make_spte(MmuConfig.npt(profile="v5.13"), 0x10, old_spte=old)
    v516 = S.make_spte(MmuConfig.npt(profile="v5.16"), 0x10, old_spte=old)
    assert v513.spte == v516.spte | BIT(6) and v513.spte & BIT(6)


def test_era_nonpresent_value_and_default_old_spte():
    for prof in PROFILES:
        want = BIT(63) if PROFILES[prof].ept_suppress_ve else 0
        assert PROFILES[prof].nonpresent_value == want
    assert PROFILES["v5.13"].frozen_value == 0x5A0 and PROFILES["v5.10"].frozen_value is None


@given(st.sampled_from(EPT), st.integers(0, 2**64 - 1))
def test_ept_ve_possible_rule(cfg, s):
    assume(cfg.profile.has_ept_ve_possible)
    assert S.is_ept_ve_possible(cfg, s) == (not s >> 63 and s & 7 != 6)
