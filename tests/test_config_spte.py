"""MmuConfig: presets as the kernel builds them (spte-mmio.md 1.2, 3.7), per profile; printing,
equality, immutability, explicit construction, invariant refusals; reserved-bit tables (2.9)."""
from __future__ import annotations

import dataclasses

import pytest

from pykvmmu.config import GENMASK, MmuConfig, ept_rsvd_table, legacy_rsvd_table, rsvd_bits
from pykvmmu.errors import ConfigError, ProfileError, PykvmmuError
from pykvmmu.profile import PROFILES

BIT = lambda n: 1 << n  # noqa: E731
OLD = ("v5.13", "v5.19")
NEW = ("v6.10", "v6.13", "v6.15", "v6.19")


@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "v5.10"])
def test_legacy_preset_masks(profile):
    c = MmuConfig.npt(profile=profile, maxphyaddr=46)
    assert (c.present_mask, c.user_mask, c.accessed_mask, c.dirty_mask) == (1, 4, BIT(5), BIT(6))
    assert (c.nx_mask, c.x_mask, c.acc_track_mask) == (BIT(63), 0, 0)
    assert (c.host_writable_mask, c.mmu_writable_mask) == (BIT(9), BIT(10))
    assert (c.me_value, c.me_mask) == (0, 0)
    assert c.mmio_value == c.mmio_mask == BIT(51) | 1 and c.mmio_access_mask == 6 and c.mmio_caching
    assert c.base_addr_mask == GENMASK(51, 12)
    assert (c.nonpresent_or_rsvd_mask, c.nonpresent_or_rsvd_lower_gfn_mask) == (0, GENMASK(45, 12))
    s = MmuConfig.shadow(profile=profile)
    assert s.mode == "shadow" and not s.tdp and s.present_mask == 1 and s.nx_mask == BIT(63)


@pytest.mark.parametrize("profile", PROFILES)
def test_legacy_maxphyaddr_52_disables_mmio_caching(profile):
    c = MmuConfig.npt(profile=profile, maxphyaddr=52)
    if PROFILES[profile].mmio_special_tag:
        assert c.mmio_value & (3 << 52) == 3 << 52
    else:
        # 8b9e74bfbf8c (v5.19): value 0 clears enable_mmio_caching; before, the parameter
        # stays on and is_mmio_spte's value != 0 test keeps every SPTE non-MMIO.
        assert c.mmio_value == 0
        assert c.mmio_caching == (not PROFILES[profile].mmio_zero_value_disables_caching)
        assert not c.mmio_detects


@pytest.mark.parametrize("profile", OLD + NEW)
@pytest.mark.parametrize("ad", [True, False])
@pytest.mark.parametrize("xo", [False, True])
def test_ept_preset_masks(profile, ad, xo):
    p = PROFILES[profile]
    c = MmuConfig.ept(profile=profile, ad=ad, exec_only=xo)
    sve = BIT(63) if p.ept_suppress_ve else 0
    assert c.present_mask == (0 if xo else 1) | sve
    assert c.user_mask == 1 and c.x_mask == 4 and c.nx_mask == 0 and c.acc_track_mask == 7
    a, d = (BIT(8), BIT(9)) if (ad or p.ad_always) else (0, 0)
    assert (c.accessed_mask, c.dirty_mask) == (a, d)
    assert (c.host_writable_mask, c.mmu_writable_mask) == (BIT(57), BIT(58))
    assert (c.mmio_value, c.mmio_mask, c.mmio_access_mask) == (6, 7 | sve, 0)
    assert c.ad_enabled == ad and c.mt_hook


def test_sme_and_mktme_presets():
    c = MmuConfig.npt(sme_cbit=47, maxphyaddr=48)
    assert c.me_value == c.me_mask == BIT(47)
    assert c.phys_bits == 43 and c.base_addr_mask == GENMASK(51, 12) & ~BIT(47)
    assert c.mmio_value == c.mmio_mask == rsvd_bits(43, 51) | 1          # svm_adjust_mmio_mask
    k = MmuConfig.ept(maxphyaddr=52, phys_bits=46)                        # KeyID bits 46..51
    assert (k.me_value, k.me_mask) == (0, rsvd_bits(46, 51))
    assert MmuConfig.ept(maxphyaddr=52, phys_bits=46, profile="v5.13").me_mask == 0   # before the split


def test_l1tf_masks():
    c = MmuConfig.npt(maxphyaddr=46, phys_bits=39, cache_bits=44)
    assert c.nonpresent_or_rsvd_mask == GENMASK(43, 39)
    assert c.nonpresent_or_rsvd_lower_gfn_mask == GENMASK(38, 12)
    with pytest.raises(ConfigError, match="cache_bits"):
        MmuConfig.npt(maxphyaddr=46, cache_bits=47)


def test_tdx_preset():
    c = MmuConfig.tdx()
    assert c.mode == "tdx" and c.mmio_value == 0 and c.mmio_mask == 7 | BIT(63) and c.mmio_caching
    assert c.accessed_mask == BIT(8) and c.ad_enabled and not c.ignore_guest_pat
    for prof in ("v5.19", "v6.10", "v6.13"):
        with pytest.raises(ConfigError, match="TDX"):
            MmuConfig.tdx(profile=prof)
    with pytest.raises(ConfigError, match="A/D"):
        MmuConfig.tdx(ad=False)
    with pytest.raises(ConfigError, match="caching"):
        MmuConfig.tdx(mmio_caching=False)


@pytest.mark.parametrize("cfg", MmuConfig.all_presets(), ids=lambda c: f"{c.profile.name}-{c.mode}")
def test_printable_comparable_immutable(cfg):
    text = str(cfg)
    rows = {ln.split()[0]: ln.split()[-1] for ln in text.splitlines()[2:]}
    for name in ("present_mask", "user_mask", "accessed_mask", "dirty_mask", "nx_mask", "x_mask",
                 "acc_track_mask", "host_writable_mask", "mmu_writable_mask", "me_value", "me_mask",
                 "mmio_value", "mmio_mask", "mmio_access_mask", "base_addr_mask"):
        assert rows[name] == f"0x{getattr(cfg, name):016x}", name
    assert "SHADOW_NONPRESENT_VALUE" in text and "FROZEN_SPTE" in text
    assert cfg == cfg.replace() and hash(cfg) == hash(cfg.replace())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.present_mask = 0
    assert cfg != cfg.replace(nx_huge_pages=not cfg.nx_huge_pages)


def test_presets_compare_by_value_and_profile():
    assert MmuConfig.ept() == MmuConfig.ept() == MmuConfig.preset("ept")
    assert MmuConfig.ept() != MmuConfig.ept(profile="v6.15")
    assert MmuConfig.ept() != MmuConfig.ept(ad=False)


def _explicit(**kw):
    base = dict(mode="npt", profile="v6.19", maxphyaddr=46, phys_bits=46, present_mask=1, user_mask=4,
                accessed_mask=BIT(5), dirty_mask=BIT(6), nx_mask=BIT(63), x_mask=0, acc_track_mask=0,
                host_writable_mask=BIT(9), mmu_writable_mask=BIT(10), mmio_value=BIT(51) | 1,
                mmio_mask=BIT(51) | 1, mmio_access_mask=6)
    base.update(kw)
    return MmuConfig(**base)


def test_explicit_construction_matches_preset():
    c = _explicit()
    p = MmuConfig.npt()
    for f in ("present_mask", "user_mask", "accessed_mask", "dirty_mask", "nx_mask",
              "host_writable_mask", "mmu_writable_mask", "mmio_value", "mmio_mask", "base_addr_mask"):
        assert getattr(c, f) == getattr(p, f)
    assert c.profile is PROFILES["v6.19"]


@pytest.mark.parametrize("kw, rule", [
    (dict(me_value=BIT(47), me_mask=BIT(46)), "me_value within me_mask"),
    (dict(host_writable_mask=BIT(11)), "software SPTE bits must not overlap"),
    (dict(mmu_writable_mask=BIT(9)), "software SPTE bits must not overlap"),
    (dict(host_writable_mask=BIT(20)), "software SPTE bits must not overlap"),     # PFN bit
    (dict(host_writable_mask=BIT(9) | BIT(8)), "single bit"),
    (dict(x_mask=4), "exactly one of shadow_x_mask / shadow_nx_mask"),
    (dict(acc_track_mask=3), "acc_track_mask"),
    (dict(mmio_value=BIT(51) | 3), "MMIO value within MMIO mask"),
    (dict(mmio_mask=BIT(51) | 1 | BIT(5), mmio_value=BIT(51) | 1), "generation"),
    (dict(mmio_mask=BIT(51) | 1 | BIT(11), mmio_value=BIT(51) | 1), "overlap"),
    (dict(base_addr_mask=GENMASK(52, 12)), "SPTE_BASE_ADDR_MASK"),
    (dict(mode="arm"), "mode"),
    (dict(maxphyaddr=53), "maxphyaddr"),
    (dict(present_mask=-1), "unsigned 64-bit"),
    (dict(present_mask=1 << 64), "unsigned 64-bit"),
    (dict(profile="v7"), "unknown kernel-era layout profile"),
    (dict(profile="v5.19", mmio_value=0), "MMIO caching on iff"),
])
def test_invariant_refusals_name_the_rule(kw, rule):
    with pytest.raises(PykvmmuError, match=rule) as ei:
        _explicit(**kw)
    assert isinstance(ei.value, (ConfigError, ProfileError))


def test_unknown_preset():
    with pytest.raises(ConfigError, match="preset='arm64'"):
        MmuConfig.preset("arm64")


def test_all_presets_cover_every_profile():
    cs = MmuConfig.all_presets()
    assert {c.profile.name for c in cs} == set(PROFILES)
    assert {c.mode for c in cs} == {"npt", "shadow", "ept", "tdx"}


# ------------------------------------------------------------------ reserved-bit tables (2.9)
def test_ept_rsvd_table_hand_derived():
    rsvd, bad = ept_rsvd_table(46, execonly=False, huge_level=3)
    high = GENMASK(51, 46)
    b3_7, b3_6 = GENMASK(7, 3), GENMASK(6, 3)
    assert rsvd[:5] == (high, high | b3_6, high | b3_6, high | b3_7, high | b3_7)
    assert rsvd[5:] == (high, high | GENMASK(20, 12), high | GENMASK(29, 12), high | b3_7, high | b3_7)
    # huge_level 2 (no 1G pages): bit 7 reserved at level 3, in both rows
    rsvd2, _ = ept_rsvd_table(46, execonly=False, huge_level=2)
    assert rsvd2[2] == high | b3_6 | BIT(7) and rsvd2[7] == high | GENMASK(29, 12) | BIT(7)
    # bad_mt_xwr: memtypes 2, 3, 7; XWR 010, 110; 100 unless exec-only
    want = 0
    for pte in range(64):
        mt, xwr = pte >> 3, pte & 7
        if mt in (2, 3, 7) or xwr in (2, 6) or xwr == 4:
            want |= 1 << pte
    assert bad == want
    assert bad == 0xFF54_5454_FFFF_5454
    _, bad_xo = ept_rsvd_table(46, execonly=True, huge_level=3)
    assert bad_xo == 0xFF44_4444_FFFF_4444


def test_legacy_rsvd_table_hand_derived():
    high = GENMASK(51, 46)
    rsvd, bad = legacy_rsvd_table(46, 4, nx=True, gbpages=True, amd=True)
    assert bad == 0
    assert rsvd[:5] == (high, high, high, high | BIT(8) | BIT(7), 0)
    assert rsvd[5:] == (high, high | GENMASK(20, 13), high | GENMASK(29, 13), high | BIT(8) | BIT(7), 0)
    rsvd, _ = legacy_rsvd_table(46, 4, nx=False, gbpages=False, amd=False)
    h = high | BIT(63)
    assert rsvd[:4] == (h, h, h | BIT(7), h | BIT(7))
    assert rsvd[7] == h | BIT(7) | GENMASK(29, 13)
    rsvd5, _ = legacy_rsvd_table(46, 5, nx=True, gbpages=True, amd=False)
    assert rsvd5[4] == high | BIT(7) and rsvd5[9] == rsvd5[4]


def test_preset_tables():
    e = MmuConfig.ept(maxphyaddr=46)
    assert (e.rsvd_bits_mask, e.bad_mt_xwr) == ept_rsvd_table(46, execonly=False, huge_level=3)
    # TDP table drops shadow_me_mask bits (MKTME KeyIDs are legal PA bits for KVM's own tables)
    k = MmuConfig.ept(maxphyaddr=52, phys_bits=46)
    assert k.rsvd_bits_mask[0] == 0
    n = MmuConfig.npt(maxphyaddr=46)
    assert n.rsvd_bits_mask == legacy_rsvd_table(46, 4, nx=True, gbpages=True, amd=True)[0]
    s = MmuConfig.npt(maxphyaddr=48, sme_cbit=47)
    assert not s.rsvd_bits_mask[0] & BIT(47)


def test_v510_has_no_mmio_caching_switch():
    """v5.10-5.12 had no kvm.mmio_caching parameter: such a configuration is refused."""
    import pytest as _pytest
    from pykvmmu.config import MmuConfig as _M
    from pykvmmu.errors import ConfigError as _CE
    with _pytest.raises(_CE, match="mmio_caching"):
        _M.npt(profile="v5.10", mmio_caching=False)
    good = _M.npt(profile="v5.10")
    with _pytest.raises(_CE, match="no MMIO caching switch"):
        good.replace(mmio_caching=False)
