"""Layout profiles (spte-mmio.md section 6): lookup, aliases, era switches as the fact sheet dates them."""
from __future__ import annotations

import pytest

from pykvmmu.errors import ProfileError
from pykvmmu.profile import DEFAULT_PROFILE, MAINLINE_PROFILES, PROFILES, LayoutProfile, get_profile


def test_default_is_newest():
    assert DEFAULT_PROFILE == "v6.19" and get_profile("latest") is PROFILES["v6.19"]


@pytest.mark.parametrize("alias, name", [
    ("v5.11", "v5.10"), ("5.12", "v5.10"), ("v5.13-5.15", "v5.13"), ("v5.15", "v5.13"),
    ("v5.16", "v5.16"), ("v5.17", "v5.17"), ("v5.18", "v5.17"), ("v5.17-5.18", "v5.17"),
    ("v6.0", "v5.19"), ("v6.9", "v5.19"), ("v6.11", "v6.10"), ("v6.14", "v6.13"),
    ("v6.17", "v6.15"), ("V6.19", "v6.19"), (" newest ", "v6.19")])
def test_aliases(alias, name):
    assert get_profile(alias) is PROFILES[name]
    assert get_profile(PROFILES[name]) is PROFILES[name]


@pytest.mark.parametrize("bad", ["v7", "", "linux", None, 6.1, "v5.13-5.18", "6.6.x"])
def test_unknown_profile(bad):
    with pytest.raises(ProfileError, match=repr(bad).replace(".", r"\.").replace("(", r"\(")):
        get_profile(bad)


def test_profiles_are_immutable_and_comparable():
    p = PROFILES["v6.13"]
    with pytest.raises(AttributeError):
        p.ad_always = False
    assert isinstance(p, LayoutProfile) and p == PROFILES["v6.13"] and p != PROFILES["v6.15"]
    assert "v6.13" in str(p)


def _switch(field):
    return [n for n in MAINLINE_PROFILES if getattr(PROFILES[n], field)]


def test_era_switches_follow_section_6():
    order = list(MAINLINE_PROFILES)
    assert order == ["v5.10", "v5.13", "v5.16", "v5.17", "v5.19", "v6.10", "v6.13", "v6.15",
                     "v6.19"]
    assert list(PROFILES)[:len(order)] == order
    assert _switch("mmio_special_tag") == ["v5.10"]                          # P1
    assert _switch("mmu_present_bit11") == order[1:]                         # edea7c4fc215 (v5.13)
    assert _switch("mmio_requires_nonzero_value") == ["v5.13", "v5.16", "v5.17", "v5.19"]  # 3.4
    assert _switch("me_value_split") == order[4:]                            # v5.19
    assert _switch("ept_suppress_ve") == order[5:]                           # 7fa5e2929198 (v6.10)
    assert _switch("has_ept_ve_possible") == order[5:]
    assert _switch("ad_always") == order[6:]                                 # G3 (v6.13)
    assert _switch("has_make_huge_spte") == order[6:]
    assert _switch("has_is_dirty_spte") == order[:6]
    assert _switch("has_make_small_spte") == order[4:]
    assert _switch("split_exec_from_access") == ["v6.19"]
    assert _switch("mmu_writable_needs_both_bits") == ["v5.10", "v5.13", "v5.16"]  # 5f16bcac6e28
    assert _switch("mmio_zero_value_disables_caching") == order[4:]          # 8b9e74bfbf8c
    assert [PROFILES[n].atomic_rule for n in order] == \
        ["lockless"] * 4 + ["mmuw_not_w"] * 3 + ["needs_atomic"] * 2
    assert [PROFILES[n].writable_shortcut for n in order[:6]] == \
        ["can_unsync", "can_unsync"] + ["old_writable"] * 4
    assert {PROFILES[n].writable_shortcut for n in order[6:]} == {"v6.13"}
    assert _switch("has_tdx") == ["v6.15", "v6.19"]


def test_layout_constants_per_era():
    v510 = PROFILES["v5.10"]
    assert v510.mmio_gen_layout == (3, 11, 54, 62) and v510.mmio_gen_bits == 18
    assert v510.writable_bits_legacy == v510.writable_bits_ept == (10, 11)
    for n in list(PROFILES)[1:]:
        p = PROFILES[n]
        assert p.mmio_gen_layout == (3, 10, 52, 62) and p.mmio_gen_bits == 19
        assert p.writable_bits_legacy == (9, 10) and p.writable_bits_ept == (57, 58)
    assert [PROFILES[n].frozen_value for n in MAINLINE_PROFILES] == \
        [None, 0x5A0, 0x5A0, 0x5A0, 0x5A0] + [0x8000_0000_0000_05A0] * 4
