"""kvm_mmu_set_mmio_spte_mask (kernel order and outcome), the strict validator, vendor values."""
import pytest
from hypothesis import given, strategies as st

from pykvmmu import mmio as M
from pykvmmu.config import SPTE_MMIO_ALLOWED_MASK, MmuConfig
from pykvmmu.errors import ConfigError, ProfileError
from pykvmmu.profile import PROFILES, get_profile
from pykvmmu.ref import mmio as R

BIT = lambda n: 1 << n  # noqa: E731
FROZEN = BIT(63) | 0x5A0


# ------------------------------------------------------------------ kernel checks, in order
def test_each_kernel_check_fires_and_zeroes():
    c = MmuConfig.npt()
    ok = M.set_mmio_spte_mask(c, BIT(51) | 1, BIT(51) | 1, 6)
    assert ok.caching and ok.fired == () and ok.value == BIT(51) | 1
    assert ok.config.mmio_value == BIT(51) | 1 and ok.config.mmio_caching
    # parameter
    r = M.set_mmio_spte_mask(c, BIT(51) | 1, BIT(51) | 1, 6, allow_mmio_caching=False)
    assert r.fired == ("mmio_caching_disabled_by_parameter",) and not r.caching and r.value == 0
    # allowed mask (bit 11 is not allowed)
    r = M.set_mmio_spte_mask(c, BIT(51) | 1, BIT(51) | BIT(11) | 1, 6)
    assert r.fired == ("mask_outside_SPTE_MMIO_ALLOWED_MASK", "value_zero_disables_caching")
    # value outside mask
    r = M.set_mmio_spte_mask(c, BIT(51) | 3, BIT(51) | 1, 6)
    assert r.fired[0] == "value_outside_mask" and r.value == 0
    # frozen SPTE under the mask equals the value
    r = M.set_mmio_spte_mask(c, BIT(63), BIT(63) | BIT(12), 6)
    assert r.fired[0] == "frozen_spte_matches_value" and not r.caching
    # lower gfn overlap only warns
    r = M.set_mmio_spte_mask(c, BIT(40) | 1, BIT(40) | 1, 6)
    assert r.fired == ("value_overlaps_lower_gfn_mask(warn)",) and r.caching and r.value == BIT(40) | 1
    # BUG_ON: access mask wider than 32 bits
    with pytest.raises(ConfigError, match="32 bits"):
        M.set_mmio_spte_mask(c, 1, 1, 1 << 32)


def test_l1tf_collision_and_order():
    c = MmuConfig.npt(phys_bits=39, cache_bits=44)
    v = BIT(44) | 1                                 # inside R << 5 (bits 44..48)
    r = M.set_mmio_spte_mask(c, v, v, 6)
    assert r.fired == ("value_collides_with_l1tf_relocation", "value_zero_disables_caching")
    # Order: the allowed-mask check comes before the L1TF check (both would fire; only
    # the first zeroes the value, the L1TF check then sees 0).
    r = M.set_mmio_spte_mask(c, v, v | BIT(5), 6)
    assert r.fired[0] == "mask_outside_SPTE_MMIO_ALLOWED_MASK"
    assert "value_collides_with_l1tf_relocation" not in r.fired
    # ...and the parameter comes before both.
    r = M.set_mmio_spte_mask(c, v, v | BIT(5), 6, allow_mmio_caching=False)
    assert r.fired == ("mmio_caching_disabled_by_parameter", "mask_outside_SPTE_MMIO_ALLOWED_MASK")


def test_allowed_mask_check_by_era():
    # Entered about v6.1 (present in a v6.1-based tree): on for the v5.19+ profiles by
    # default, absent in v5.13; strict_allowed_mask selects it explicitly (v5.19-6.0 kernels).
    bad = BIT(51) | BIT(11) | 1
    assert "mask_outside_SPTE_MMIO_ALLOWED_MASK" in M.set_mmio_spte_mask(
        MmuConfig.npt(profile="v5.19"), BIT(51) | 1, bad, 6).fired
    r = M.set_mmio_spte_mask(MmuConfig.npt(profile="v5.13"), BIT(51) | 1, bad, 6)
    assert r.caching and r.config is None and "MMU-present" in r.config_error
    r = M.set_mmio_spte_mask(MmuConfig.npt(profile="v5.19"), BIT(51) | 1, bad, 6,
                             strict_allowed_mask=False)
    assert r.caching


def test_v510_era():
    c = MmuConfig.npt(profile="v5.10", maxphyaddr=52)
    # 52-bit host: value 0 is still ORed with SPTE_MMIO_MASK, no caching switch existed.
    assert c.mmio_value == 3 << 52 and c.mmio_caching
    r = M.set_mmio_spte_mask(c, *M.default_mmio_masks(52))
    assert r.value == 3 << 52 and r.caching and r.fired[0].startswith("value_zero_tag_only")
    # The L1TF collision only warns in v5.10-5.12.
    l1 = MmuConfig.npt(profile="v5.10", phys_bits=39, cache_bits=44)
    r = M.set_mmio_spte_mask(l1, BIT(44) | 1, BIT(44) | 1, 6)
    assert r.caching and r.value == BIT(44) | 1 | 3 << 52
    assert r.fired == ("value_collides_with_l1tf_relocation(warn)",)
    with pytest.raises(ProfileError, match="mmio_caching"):
        M.set_mmio_spte_mask(c, 1, 1, 6, allow_mmio_caching=False)


def test_tdx_keeps_per_vm_value_zero():
    c = MmuConfig.tdx()
    r = M.set_mmio_spte_mask(c, *M.ept_mmio_masks())
    assert r.value == 6 and r.vm_value == 0 and r.caching
    assert r.config.mmio_value == 0 and "tdx_per_vm_value_0" in r.fired
    r = M.set_mmio_spte_mask(c, 6, 7 | BIT(63), 0, allow_mmio_caching=False)
    assert not r.caching and any(f.startswith("tdx_requires_mmio_caching") for f in r.fired)


@given(st.sampled_from(sorted(PROFILES)), st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1),
       st.booleans(), st.sampled_from([None, 44]))
def test_set_mask_matches_reference(prof, value, mask, allow, cache_bits):
    kw = {"profile": prof}
    if cache_bits:
        kw.update(phys_bits=39, cache_bits=cache_bits)
    c = MmuConfig.npt(**kw)
    p = get_profile(prof)
    if p.mmio_special_tag and not allow:
        return
    # Bias towards interesting masks: sometimes make the value fit the mask.
    if value & 1:
        value &= mask
    r = M.set_mmio_spte_mask(c, value, mask, 6, allow_mmio_caching=allow)
    v, m, caching, fired = R.set_mmio_spte_mask(
        p, value, mask, 6, allow=allow, r=c.nonpresent_or_rsvd_mask,
        lower=c.nonpresent_or_rsvd_lower_gfn_mask, allowed_check=p.me_value_split)
    assert (r.value, r.mask, r.caching) == (v, m, caching)
    assert [f for f in r.fired if not f.startswith(("value_zero", "tdx"))] == fired


# ------------------------------------------------------------------ strict validator
def test_presets_pass_strict_validator():
    for c in MmuConfig.all_presets():
        if c.mmio_caching:
            assert M.validate_mmio_masks(c) is c, (c.mode, c.profile.name)


def _rules(c, **kw):
    return {v.rule: v.bits for v in M.mmio_mask_violations(c, **kw)}


def test_rule_mask_vs_generation_and_mmu_present():
    c = MmuConfig.npt()
    r = _rules(c, value=BIT(51) | 1, mask=BIT(51) | BIT(53) | BIT(11) | BIT(4) | 1)
    assert r["mask_overlaps_generation"] == BIT(53) | BIT(4)
    assert r["mask_overlaps_mmu_present"] == BIT(11)
    assert r["mask_outside_allowed"] == BIT(53) | BIT(11) | BIT(4)
    with pytest.raises(M.MmioMaskError) as ei:
        M.validate_mmio_masks(c, value=BIT(51) | 1, mask=BIT(51) | BIT(11) | 1)
    assert "mask_overlaps_mmu_present" in str(ei.value) and "bits 11" in str(ei.value)
    assert {v.rule for v in ei.value.violations} >= {"mask_overlaps_mmu_present", "mask_outside_allowed"}
    # v5.10 generation layout: bit 11 is a generation bit there.
    old = MmuConfig.npt(profile="v5.10")
    assert "mask_overlaps_generation" in _rules(old, value=BIT(51) | 1, mask=BIT(51) | BIT(11) | 1)


def test_rule_value_within_mask_and_frozen_nonpresent():
    c = MmuConfig.npt()
    assert _rules(c, value=BIT(51) | 3, mask=BIT(51) | 1)["value_outside_mask"] == 2
    e = MmuConfig.ept()
    # value 0 with mask RWX|SVE on non-TDX EPT: frozen has SVE, nonpresent too: no match...
    assert "value_matches_frozen" not in _rules(e, value=0, mask=7 | BIT(63))
    # ...but with mask RWX only, both FROZEN_SPTE and SHADOW_NONPRESENT_VALUE match value 0.
    r = _rules(e, value=0, mask=7, mode="tdx")
    assert "value_matches_frozen" in r and "value_matches_nonpresent" in r
    assert "tdx_mask_must_cover_rwx_sve" in r
    # FROZEN under a mask of bits 5,7 (gen bits anyway) equals 0x1A0.
    assert "value_matches_frozen" in _rules(e, value=0x1A0, mask=0x1A0)
    assert FROZEN & 0x1A0 == 0x1A0


def test_rule_l1tf():
    c = MmuConfig.npt(phys_bits=39, cache_bits=44)
    r = _rules(c, value=BIT(45) | BIT(51) | 1, mask=BIT(45) | BIT(51) | 1)
    assert r["value_collides_with_l1tf_relocation"] == BIT(45)
    r = _rules(c, value=BIT(51) | 1, mask=BIT(51) | BIT(40) | 1)
    assert r["mask_vs_l1tf_mask"] == BIT(40)
    r = _rules(c, value=BIT(30) | BIT(51) | 1, mask=BIT(30) | BIT(51) | 1)
    assert r["value_overlaps_legal_pa"] == BIT(30)


def test_rule_access_mask():
    c = MmuConfig.npt()
    r = _rules(c, access_mask=0x7)
    assert r["access_mask_overlaps"] == 1            # ACC_EXEC would hit P, a mask bit
    assert "access_mask_wider_than_32_bits" in _rules(c, access_mask=1 << 33)


def test_rule_per_mode_legal_translation():
    n = MmuConfig.npt()                               # maxphyaddr 46: bits 46..51 reserved
    assert _rules(n, value=BIT(51), mask=BIT(51) | 1)["legacy_value_not_reserved_present"] == 1
    assert _rules(n, value=BIT(40) | 1, mask=BIT(40) | 1)["legacy_value_not_reserved_present"] \
        == ((1 << 52) - 1) & ~((1 << 46) - 1)
    assert "legacy_value_not_reserved_present" not in _rules(n, value=BIT(46) | 1, mask=BIT(46) | 1)
    sme = MmuConfig.preset("npt-sme")                 # bits above x86_phys_bits are reserved
    assert "legacy_value_not_reserved_present" not in _rules(sme)
    e = MmuConfig.ept()
    for xwr, ok in ((0b110, True), (0b010, True), (0b100, True), (0b111, False), (0b001, False),
                    (0b000, False), (0b011, False), (0b101, False)):
        assert ("ept_value_not_misconfig" not in _rules(e, value=xwr, mask=7)) == ok, xwr
    xo = MmuConfig.preset("ept-xo")
    assert "ept_value_not_misconfig" in _rules(xo, value=0b100, mask=7)
    assert "ept_value_not_misconfig" not in _rules(e, value=BIT(50) | 1, mask=BIT(50) | 7)
    assert "ept_mask_must_cover_rwx" in _rules(e, value=6, mask=6)
    t = MmuConfig.tdx()
    assert _rules(t) == {}
    assert _rules(t, value=6, mask=7 | BIT(63))["tdx_value_not_ve"] == 6
    assert _rules(t, value=BIT(63), mask=7 | BIT(63))["tdx_value_not_ve"] == BIT(63)


# ------------------------------------------------------------------ vendor computations
def test_vendor_values():
    assert M.default_mmio_masks(46) == (BIT(51) | 1, BIT(51) | 1, 6)
    assert M.default_mmio_masks(52) == (0, 0, 6)
    assert M.ept_mmio_masks("v6.19") == (6, 7 | BIT(63), 0)
    assert M.ept_mmio_masks("v5.19") == (6, 7, 0)
    assert M.tdx_vm_mmio_value() == 0
    # svm_adjust_mmio_mask: first bit above x86_phys_bits, bumped over the C-bit.
    v, m, a = M.svm_adjust_mmio_mask(43, 47)
    assert v == m == (((1 << 52) - 1) & ~((1 << 43) - 1)) | 1 and a == 6
    v, _, _ = M.svm_adjust_mmio_mask(47, 47)
    assert v == (((1 << 52) - 1) & ~((1 << 48) - 1)) | 1
    assert M.svm_adjust_mmio_mask(51, 51) == (0, 0, 6)          # bumped to 52: no reserved bit
    assert M.svm_adjust_mmio_mask(52, 47) == (0, 0, 6)
    assert M.svm_adjust_mmio_mask(43, 47, mem_encrypt=False) is None
    sme = MmuConfig.preset("npt-sme")
    assert (sme.mmio_value, sme.mmio_mask) == M.svm_adjust_mmio_mask(sme.phys_bits, 47)[:2]


def test_caching_off_conditions():
    assert not MmuConfig.npt(maxphyaddr=52).mmio_caching            # 52-bit outside EPT
    assert not MmuConfig.shadow(maxphyaddr=52).mmio_caching
    assert MmuConfig.ept(maxphyaddr=52).mmio_caching                 # EPT unaffected
    assert not MmuConfig.ept(mmio_caching=False).mmio_caching        # module parameter
    assert not MmuConfig.npt(sme_cbit=51, maxphyaddr=52, phys_bits=51).mmio_caching  # SVM bump
    reasons = M.mmio_caching_off_reasons(MmuConfig.npt(maxphyaddr=52))
    assert any("52-bit" in r for r in reasons)
    assert any("parameter" in r for r in M.mmio_caching_off_reasons(MmuConfig.ept(mmio_caching=False)))
    with pytest.raises(ConfigError, match="MMIO caching"):
        MmuConfig.tdx(mmio_caching=False)
    assert SPTE_MMIO_ALLOWED_MASK == 0x800F_FFFF_FFFF_F007
