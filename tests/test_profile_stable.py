"""Stable and LTS lines as eras: version -> profile mapping and the rules backports changed.

Facts (docs/spte.md "Stable lines"): 2867eb782cf7 (v6.13-rc1, Cc: stable) entered 6.1.120,
6.6.64, 6.11.11 and 6.12.2; 5f16bcac6e28 (v5.17) dropped host-W from
spte_can_locklessly_be_made_writable; 8b9e74bfbf8c (v5.19) made MMIO value 0 clear
enable_mmio_caching.  The KVM merge-window pulls of v6.19 and v7.0 change no modelled rule
(both map to v6.15 without a warning); v7.1 and the 5.10.y / 6.18.y lines stay warned.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ProfileError
from pykvmmu.profile import (DEFAULT_PROFILE, HOW_EXACT, HOW_NEAREST, HOW_STABLE, HOW_UNVERIFIED,
                             MAINLINE_RELEASES, MAINLINE_UNVERIFIED, NOT_A_RELEASE, PROFILES,
                             STABLE_RULES, STABLE_UNVERIFIED, ProfileVersionWarning,
                             PykvmmuWarning, describe_version, get_profile, parse_version,
                             profile_for_version)
from pykvmmu.ref import spte as R

BIT = lambda n: 1 << n  # noqa: E731


def _quiet(version):
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # any warning fails the call
        return profile_for_version(version)


@pytest.mark.parametrize("version, name, how", [
    ("v6.6", "v5.19", HOW_EXACT), ("6.6", "v5.19", HOW_EXACT), ("6.6.0", "v5.19", HOW_EXACT),
    ("6.6.63", "v5.19", HOW_STABLE), ("6.6.64", "v6.6.64", HOW_STABLE),
    ("6.6.75", "v6.6.64", HOW_STABLE), ("6.6.120-rt45", "v6.6.64", HOW_STABLE),
    ("6.1.119", "v5.19", HOW_STABLE), ("6.1.120", "v6.1.120", HOW_STABLE),
    ("v6.1.158", "v6.1.120", HOW_STABLE),
    ("6.11.10", "v6.10", HOW_STABLE), ("6.11.11", "v6.11.11", HOW_STABLE),
    ("6.12.1", "v6.10", HOW_STABLE), ("6.12.2", "v6.12.2", HOW_STABLE), ("v6.12.2", "v6.12.2", HOW_EXACT),
    ("6.12.60", "v6.12.2", HOW_STABLE), ("v6.12", "v6.10", HOW_EXACT),
    ("6.13", "v6.13", HOW_EXACT), ("v6.18", "v6.15", HOW_EXACT), ("latest", "v6.19", HOW_EXACT),
    ("v5.16", "v5.16", HOW_EXACT), ("5.17", "v5.17", HOW_EXACT), ("5.18", "v5.17", HOW_EXACT),
    ("v5.15", "v5.13", HOW_EXACT), ("v5.19-6.9", "v5.19", HOW_EXACT),
    ("5.15.76", "v5.13", HOW_STABLE), ("5.15.222", "v5.13", HOW_STABLE),
    # v6.19 and v7.0: merge-window pulls read, no modelled rule changed -> the v6.15 rules
    ("6.19", "v6.15", HOW_EXACT), ("v6.19.0", "v6.15", HOW_EXACT), ("7.0", "v6.15", HOW_EXACT),
    ("v7.0", "v6.15", HOW_EXACT), ("7.0.0", "v6.15", HOW_EXACT),
    # the default rule set under its honest alias
    ("kvm-2026", "v6.19", HOW_EXACT), ("KVM-2026", "v6.19", HOW_EXACT),
])
def test_versions_the_tables_know(version, name, how):
    p, h = _quiet(version)
    assert (p.name, h) == (name, how)
    assert get_profile(version) is p
    assert MmuConfig.npt(profile=version).profile is p


@pytest.mark.parametrize("version, name, how, needle", [
    ("4.19", "v5.10", HOW_NEAREST, "nearest known release 5.10"),
    ("v5.9", "v5.10", HOW_NEAREST, "nearest known release 5.10"),
    ("7.2", "v6.15", HOW_NEAREST, "nearest known release 7.1"),
    ("7.1", "v6.15", HOW_UNVERIFIED, "kvm-x86-mmu-7.1"),
    ("7.1.4", "v6.15", HOW_UNVERIFIED, "0c768fa0aeb8, is in the v7.2 merge window"),
    ("6.19.3", "v6.15", HOW_UNVERIFIED, "6.19.y backports were not checked"),
    ("7.0.12", "v6.15", HOW_UNVERIFIED, "7.0.y backports were not checked"),
    ("5.10.234", "v5.10", HOW_UNVERIFIED, "2867eb782cf7, which 5.10 does not need"),
    ("5.10.1", "v5.10", HOW_UNVERIFIED, "other 5.10.y backports were not checked"),
    ("6.18.44-fc-v669", "v6.15", HOW_UNVERIFIED, "no 6.18.y backport of an SPTE rule was found"),
    ("6.18.1", "v6.15", HOW_UNVERIFIED, "7.1 MMU pull and later were not checked"),
    ("5.15.0-91-generic", "v5.13", HOW_UNVERIFIED, "stable level is unknown"),
    ("6.1.0-28-amd64", "v5.19", HOW_UNVERIFIED, "stable level is unknown"),
])
def test_versions_the_tables_do_not_confirm_warn(version, name, how, needle):
    with pytest.warns(ProfileVersionWarning, match=needle):
        p, h = profile_for_version(version)
    assert (p.name, h) == (name, how)
    assert issubclass(ProfileVersionWarning, PykvmmuWarning)
    with pytest.warns(ProfileVersionWarning):
        assert MmuConfig.ept(profile=version).profile is p
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert profile_for_version(version, warn=False) == (p, how)


@pytest.mark.parametrize("bad", ["", "linux", "v7", "6", "6.6.x", "v5.13-5.18", None, 6.6, b"6.6"])
def test_not_a_version_is_refused(bad):
    with pytest.raises(ProfileError, match="profile="):
        profile_for_version(bad)


def test_parse_version():
    assert parse_version("6.18.44-fc-v669") == (6, 18, 44, "-fc-v669")
    assert parse_version(" V6.6 ") == (6, 6, None, "")
    assert parse_version("v5.13-5.18") is None and parse_version(42) is None


def test_describe_names_profile_and_rule():
    assert describe_version("6.6.75") == \
        "profile v6.6.64 (6.6.64 and later 6.6.y) for '6.6.75': stable-line rule"
    assert "nearest known" in describe_version("7.3")
    # a profile name wins over the release of the same spelling
    assert describe_version("v6.19").startswith("profile v6.19 (kvm.git 2026")
    assert describe_version("6.19") == "profile v6.15 (v6.15-v7.1) for '6.19': exact"


def test_default_profile_says_it_is_no_release():
    """The default rule set (named v6.19 for history) is kvm.git's 0c768fa0aeb8, merged in the
    v7.2 window with an MBEC layout no profile models: describe_version says so, for every
    spelling that selects it, and for no release."""
    assert DEFAULT_PROFILE == "v6.19" and set(NOT_A_RELEASE) == {"v6.19"}
    for spelling in ("v6.19", "latest", "default", "kvm-2026"):
        d = describe_version(spelling)
        assert "; not a kernel release: " in d and "0c768fa0aeb8" in d and "v7.2 merge window" in d
    assert "v7.2 merge window" in PROFILES["v6.19"].kernels
    for release in ("6.18", "6.19", "7.0", "6.12.2", "6.6.75"):
        assert "not a kernel release" not in describe_version(release)


def test_mapping_tables_are_consistent():
    """Every table key is a known line, every profile named exists, and the partially checked
    lines are lines the tables know (so their releases warn with the recorded reason)."""
    assert set(MAINLINE_UNVERIFIED) == {(7, 1)} and set(MAINLINE_UNVERIFIED) <= set(MAINLINE_RELEASES)
    assert set(STABLE_UNVERIFIED) == {(5, 10), (6, 18)} <= set(STABLE_RULES)
    assert set(STABLE_RULES) <= set(MAINLINE_RELEASES)
    for mm, rules in STABLE_RULES.items():
        assert [f for f, _ in rules] == sorted(f for f, _ in rules)
        for _, name in rules:
            assert name in PROFILES
    # 6.18 -> 7.1 carry one rule set; 0c768fa0aeb8 (the default's extra rule) is in none of them
    p = {MAINLINE_RELEASES[mm] for mm in ((6, 18), (6, 19), (7, 0), (7, 1))}
    assert p == {"v6.15"} and not PROFILES["v6.15"].split_exec_from_access


# ------------------------------------------------------------ 6.x.y: 2867eb782cf7 (leaf shortcut)
STABLE_LEAF = {"v6.1.120": "v5.19", "v6.6.64": "v5.19", "v6.11.11": "v6.10", "v6.12.2": "v6.10"}


def test_stable_profiles_differ_from_their_base_only_in_the_shortcut():
    for name, base in STABLE_LEAF.items():
        p, b = PROFILES[name], PROFILES[base]
        assert p.writable_shortcut == "old_writable_leaf" and b.writable_shortcut == "old_writable"
        assert p == type(p)(**{**b.__dict__, "name": p.name, "kernels": p.kernels,
                               "writable_shortcut": "old_writable_leaf"})


@pytest.mark.parametrize("ref", [False, True])
def test_issue_vector_legacy_level2_nonleaf_old(ref):
    """Issue 16: legacy, MAXPHYADDR 46, level 2, old SPTE 0x2160cf000e03 (writable, not last)."""
    kw = dict(level=2, pte_access=S.ACC_WRITE_MASK, old_spte=0x2160CF000E03, prefetch=True,
              ad_wrprot_only=True)

    def mk(profile, **more):
        c = MmuConfig.npt(profile=profile, maxphyaddr=46)
        if ref:
            return R.make_spte(c, 0x2160CF000, **kw, **more)
        r = S.make_spte(c, 0x2160CF000, **kw, **more)
        return r.spte, r.wrprot
    assert mk("6.6.75") == (0x8020_2160_CF00_0EC3, False)            # the 6.6.75 kernel's value
    assert mk("v6.6") == (0x8020_2160_CF00_0E83, False)              # v6.6.0: shortcut, no D
    # unsync fails: the leaf rule write-protects (bits 1 and MMU-W 10 clear), v6.6.0 did not
    assert mk("6.6.75", unsync_fails=True) == (0x8020_2160_CF00_0A81, True)
    assert mk("v6.6", unsync_fails=True) == (0x8020_2160_CF00_0E83, False)


OLD = st.integers(0, 2**64 - 1) | st.sampled_from([0x2160CF000E03, 0x8000_0000_0000_0E87, 0xE83])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(STABLE_LEAF)), st.sampled_from(["npt", "ept", "ept-noad", "shadow"]),
       OLD, st.integers(1, 5), st.integers(0, 7), st.integers(0, 255))
def test_leaf_rule_from_its_definition(name, preset, old, level, acc, mkbits):
    """Under 2867eb782cf7 make_spte equals the base era's make_spte, except that a writable
    old SPTE that is not last-level no longer takes the shortcut (it acts like a read-only
    old SPTE)."""
    c = MmuConfig.preset(preset, profile=name)
    b = MmuConfig.preset(preset, profile=STABLE_LEAF[name])
    kw = dict(level=level, pte_access=acc, prefetch=bool(mkbits & 1),
              host_writable=bool(mkbits & 2), ad_wrprot_only=bool(mkbits & 4),
              unsync_fails=bool(mkbits & 8), nx_huge_pages=bool(mkbits & 16))
    nonleaf_writable = bool(old & 2) and level > 1 and not old & BIT(7)
    base_old = old & ~2 if nonleaf_writable else old
    got = S.make_spte(c, 0x1234, old_spte=old, **kw)
    want = S.make_spte(b, 0x1234, old_spte=base_old, **kw)
    assert (got.spte, got.wrprot) == (want.spte, want.wrprot)
    assert R.make_spte(c, 0x1234, old_spte=old, **kw) == (got.spte, got.wrprot)


@pytest.mark.parametrize("name", sorted(STABLE_LEAF))
def test_leaf_rule_batch_paths(name):
    """Scalar, per-element and table (>= 16384 elements) batch paths agree."""
    c = MmuConfig.preset("ept", profile=name)
    n = 20000
    rng = np.random.default_rng(16)
    lv = rng.integers(1, 4, n, dtype=np.uint8)
    acc = rng.integers(0, 8, n, dtype=np.uint8)
    pfn = rng.integers(0, 1 << 20, n, dtype=np.uint64) << np.uint64(9)
    for old in (0x2160CF000E03, 0x2160CF000E83):
        out = S.make_spte_batch(c, pfn, old_spte=old, level=lv, pte_access=acc)
        for i in range(0, n, 997):
            r = R.make_spte(c, int(pfn[i]), old_spte=old, level=int(lv[i]), pte_access=int(acc[i]))
            assert int(out[i]) == r[0]


# ------------------------------------------------ 5.13-5.16: both bits; 5.17+: MMU-W (5f16bcac6e28)
@pytest.mark.parametrize("profile, want", [("v5.10", False), ("v5.13", False), ("v5.16", False),
                                           ("v5.17", True), ("v5.19", True), ("v6.19", True)])
def test_issue_vector_lockless_writable(profile, want):
    c = MmuConfig.npt(profile=profile)
    s = 0x8000_0000_0000_05A0             # MMU-W (bit 10 legacy, 11 in v5.10) without host-W
    if profile == "v5.10":
        s = 0x8000_0000_0000_08A0
    assert S.is_mmu_writable_spte(c, s) is want is R.is_mmu_writable_spte(c, s)
    both = s | c.host_writable_mask
    assert S.is_mmu_writable_spte(c, both) and R.is_mmu_writable_spte(c, both)


@pytest.mark.parametrize("profile", ["v5.13", "v5.16", "v5.17"])
def test_lockless_rule_feeds_volatile_bits(profile):
    """spte_has_volatile_bits: a present, read-only, MMU-W SPTE without host-W is volatile
    only where spte_can_locklessly_be_made_writable tests MMU-W alone."""
    c = MmuConfig.ept(profile=profile, ad=True)
    s = BIT(11) | BIT(58) | 0x1 | c.accessed_mask | (0x1234 << 12)      # MMU-W, no host-W, A set
    want = not PROFILES[profile].mmu_writable_needs_both_bits
    assert S.spte_needs_atomic_update(c, s) is want is R.spte_needs_atomic_update(c, s)
    assert S.spte_needs_atomic_update(c, s | BIT(57))                     # host-W too: volatile
    a = S.predicate_batch(c, "spte_needs_atomic_update", np.array([s, s | BIT(57)], np.uint64))
    assert a.tolist() == [want, True]


def test_5_15_222_uses_the_both_bits_rule():
    c = MmuConfig.npt(profile="5.15.222")
    assert c.profile.name == "v5.13" and not S.is_mmu_writable_spte(c, 0x8000_0000_0000_05A0)


# ------------------------------------------------ 5.13-5.18: MMIO caching stays on at value 0
@pytest.mark.parametrize("profile", ["v5.13", "v5.16", "v5.17", "v5.19", "v6.1.120", "v6.10"])
def test_mmio_value_zero_and_caching(profile):
    c = MmuConfig.npt(profile=profile, maxphyaddr=52)          # no reserved PA bit: value 0
    assert c.mmio_value == 0
    assert c.mmio_caching is (not PROFILES[profile].mmio_zero_value_disables_caching)
    assert ("value_zero_disables_caching" in c.mmio_fired) is PROFILES[profile].mmio_zero_value_disables_caching
    spte = np.array([0, 1, 0x800, 0x8000_0000_0000_0000], np.uint64)
    assert not S.predicate_batch(c, "is_mmio_spte", spte).any()
    assert not any(R.is_mmio_spte(c, int(s)) for s in spte)


# ------------------------------------------------ LTS lines through the per-era vectors
LTS = {"5.10": "v5.10", "5.15": "v5.13", "6.1": "v5.19", "6.1.120": "v6.1.120",
       "6.6": "v5.19", "6.6.64": "v6.6.64", "6.12": "v6.10", "6.12.2": "v6.12.2"}


@pytest.mark.parametrize("version", sorted(LTS))
def test_lts_lines_per_era_vectors(version):
    c = MmuConfig.npt(profile=version)
    assert c.profile.name == LTS[version]
    leaf = S.make_spte(c, 0x12345).spte
    assert leaf == (0x1234_5C67 if version == "5.10" else 0x1234_5E67)
    e = MmuConfig.ept(profile=version)
    sve = BIT(63) if e.profile.ept_suppress_ve else 0
    present = BIT(11) if e.profile.mmu_present_bit11 else 0
    assert S.make_nonleaf_spte(e, 0x1000) == sve | present | BIT(8) | 0x1000 | 0x7
    rng = np.random.default_rng(int(version.replace(".", "")))
    s = rng.integers(0, 2**63, 300, dtype=np.uint64) | rng.integers(0, 2, 300, dtype=np.uint64) << np.uint64(63)
    for pred in ("is_shadow_present_pte", "is_mmu_writable_spte", "spte_needs_atomic_update",
                 "is_mmio_spte", "is_accessed_spte"):
        got = S.predicate_batch(e, pred, s)
        assert got.tolist() == [R.predicate(e, pred, int(x)) for x in s]


# ------------------------------------------------ CLI: pykvmmu config --profile X
@pytest.mark.parametrize("version, line, warned", [
    ("6.6.75", "profile v6.6.64 (6.6.64 and later 6.6.y) for '6.6.75': stable-line rule", False),
    ("v6.12", "profile v6.10 (v6.10-v6.12) for 'v6.12': exact", False),
    ("7.3", "profile v6.15 (v6.15-v7.1) for '7.3': nearest known (warned)", True),
    ("6.18.44-fc-v669", "profile v6.15 (v6.15-v7.1) for '6.18.44-fc-v669': unverified (warned)",
     True),
    ("7.0", "profile v6.15 (v6.15-v7.1) for '7.0': exact", False),
    ("7.1", "profile v6.15 (v6.15-v7.1) for '7.1': unverified (warned)", True),
])
def test_cli_config_prints_the_mapping(capsys, version, line, warned):
    from pykvmmu.cli import main
    assert main(["config", "--profile", version, "--mode", "npt"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == line
    p = profile_for_version(version, warn=False)[0]
    assert out.splitlines()[1].startswith(f"MmuConfig mode=npt profile={p.name} ")
    assert (err.startswith("pykvmmu: warning: kernel ") and version in err) is warned
    assert bool(err) is warned


def test_cli_config_default_names_what_the_default_is(capsys):
    """`pykvmmu config` without --profile: the first line says the default is no release."""
    from pykvmmu.cli import main
    assert main(["config", "--mode", "ept"]) == 0
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.startswith(f"profile {DEFAULT_PROFILE} (kvm.git 2026 (0c768fa0aeb8, v7.2 merge "
                            f"window; no release)) for '{DEFAULT_PROFILE}': exact; not a kernel "
                            "release: the name is historical")
    assert "v6.19-v7.1 releases map to v6.15" in first and err == ""


# ------------------------------------------------ guest_memfd eras (pykvmmu.gmem)
def test_gmem_eras_from_versions():
    from pykvmmu import gmem as G
    assert [G.gmem_era_for_version(v).name for v in
            ("6.8", "6.12.30", "v6.17", "6.18.44-fc-v669", "7.1", "v7.2", "7.3.1", "latest")] == \
        ["v6.8", "v6.8", "v6.8", "v6.18", "v6.18", "v7.2", "v7.2", "v7.2"]
    for bad in ("6.6", "linux", None):
        with pytest.raises(ProfileError, match="gmem_era="):
            G.gmem_era_for_version(bad)


@pytest.mark.parametrize("version, errno_name", [("6.12", "EINVAL"), ("6.18", "EINVAL"),
                                                 ("7.2", "EEXIST"), ("latest", "EEXIST")])
def test_gmem_overlapping_binding_errno_by_era(version, errno_name):
    """kvm_gmem_bind: overlapping file offsets give -EINVAL before 7ea987a90585 (v7.2),
    -EEXIST after; nothing changes either way."""
    import errno

    from pykvmmu import gmem as G

    class Slot:
        def __init__(self, sid, base, n):
            self.id, self.base_gfn, self.npages, self.gmem_file = sid, base, n, None
    kvm = G.StubKvm(gmem_era=version)
    f = G.GuestMemfd(kvm, 1 << 20, host=G.HostMemory())
    f.bind(Slot(0, 0x100, 16), 0x4000)
    before = f.bindings
    s = Slot(1, 0, 4)
    with pytest.raises(G.GmemError, match=f"overlap.*-{errno_name}") as e:
        f.bind(s, 0x6000)
    assert e.value.errno == getattr(errno, errno_name)
    assert f.bindings == before and s.gmem_file is None


@pytest.mark.parametrize("version, allowed", [("6.17", False), ("6.18", True), ("latest", True)])
def test_gmem_default_vm_mmap_memslot_by_era(version, allowed):
    """d1e54dd08f16 (v6.18): a default VM may create an MMAP|INIT_SHARED guest_memfd and bind
    it to a memslot; before, KVM_MEM_GUEST_MEMFD needed a private-memory VM type."""
    from pykvmmu import gmem as G
    from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, Vm, VmError
    vm = Vm("default")
    vm.gmem_era = G.gmem_era_for_version(version)
    flags = G.GUEST_MEMFD_FLAG_MMAP | G.GUEST_MEMFD_FLAG_INIT_SHARED
    if not allowed:
        with pytest.raises(G.GmemError, match="not supported"):
            vm.create_guest_memfd(1 << 20, flags)
        g = vm.create_guest_memfd(1 << 20, 0)
        with pytest.raises(VmError, match="not valid"):
            vm.set_memory_region(0, 0, 1 << 20, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
        assert not vm.slots
        return
    g = vm.create_guest_memfd(1 << 20, flags)
    assert vm.set_memory_region(0, 0, 1 << 20, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g) == "create"
    assert vm.slots[0].gmem_only and g.bindings[0].npages == 256


@pytest.mark.parametrize("version", ["v1.0", "2.4.37", "2.6.19"])
def test_a_kernel_without_kvm_is_refused_not_mapped(version):
    with pytest.raises(ProfileError, match=f"profile={version!r}: Linux .* has no KVM"):
        profile_for_version(version)
