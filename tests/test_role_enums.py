"""HashVariant: the hash_64 variants as a str enum; members and their plain strings are
interchangeable, anything else is refused with the list of variants."""
import numpy as np
import pytest

from pykvmmu import role as R
from pykvmmu.errors import InputError
from pykvmmu.ref import role as ref

REF = {R.HashVariant.X86_64: ref.hash_64, R.HashVariant.HOST_32BIT: ref.hash_64_32bit_host,
       R.HashVariant.PRE_4_7: ref.hash_64_pre_4_7}
VALS = [0, 1, 0x1234, 0xDEADBEEFCAFEF00D, (1 << 64) - 1]


def test_members_are_the_strings_accepted_before():
    assert [v.value for v in R.HashVariant] == ["x86_64", "32bit", "pre-4.7"]
    for v in R.HashVariant:
        assert v == v.value and isinstance(v, str) and str(v) == v.value
        assert R.HashVariant(v.value) is v


@pytest.mark.parametrize("variant", list(R.HashVariant))
def test_member_and_string_give_the_reference_hash(variant):
    for bits in (1, 12, 32):
        for x in VALS:
            want = REF[variant](x, bits)
            assert R.hash_64(x, bits, variant) == R.hash_64(x, bits, variant.value) == want
        got_m = R.hash_batch(np.array(VALS, np.uint64), bits, variant)
        got_s = R.hash_batch(np.array(VALS, np.uint64), bits, variant.value)
        assert got_m.tolist() == got_s.tolist() == [REF[variant](x, bits) for x in VALS]


def test_variants_differ():
    x = 0xDEADBEEFCAFEF00D
    assert len({R.hash_64(x, 32, v) for v in R.HashVariant}) == 3


def test_default_is_x86_64():
    x = 0x123456789
    assert R.hash_64(x) == R.hash_64(x, R.KVM_MMU_HASH_SHIFT, R.HashVariant.X86_64) \
        == R.kvm_page_table_hashfn(x)


@pytest.mark.parametrize("bad", ["X86_64", "pre-v4.7", "", None, 0, True, [], "HashVariant.X86_64"])
def test_other_values_refused_naming_value_and_variants(bad):
    with pytest.raises(InputError) as e:
        R.hash_64(1, 12, bad)
    assert f"variant={bad!r}" in str(e.value) and "x86_64, 32bit, pre-4.7" in str(e.value)
    with pytest.raises(InputError):
        R.hash_batch(np.zeros(2, np.uint64), 12, bad)


# ---------------------------------------------------------------------- EptRule
def test_ept_rule_per_era():
    want = {"v4.2": None, "v4.12": None, "v4.18": None, "v4.20": R.EptRule.INHERIT,
            "v5.0": R.EptRule.INHERIT, "v5.0-fix": R.EptRule.INHERIT, "v5.1": R.EptRule.MARKER,
            "v5.9": R.EptRule.MARKER, "v5.14": R.EptRule.CLEAN, "v5.17": R.EptRule.CLEAN,
            "v5.19": R.EptRule.CLEAN, "v6.14": R.EptRule.CLEAN}
    assert {n: e.ept_rule for n, e in R.ERAS.items()} == want
    for e in R.ERAS.values():
        assert e.ept_rule is None or isinstance(e.ept_rule, R.EptRule)
    assert [r.value for r in R.EptRule] == ["inherit", "marker", "clean"]
    assert R.EptRule.MARKER == "marker" and str(R.EptRule.CLEAN) == "clean"


@pytest.mark.parametrize("name", ["v4.20", "v5.1", "v5.9", "v5.14", "v6.14"])
def test_era_with_plain_string_rule_behaves_the_same(name):
    """A RoleEra built with the rule as a plain string (as before the enum) computes the
    same nested-EPT roles and the same is_ept_sp answers."""
    import dataclasses
    e = R.get_era(name)
    s = dataclasses.replace(e, ept_rule=e.ept_rule.value)
    assert type(s.ept_rule) is str
    for cr0_wp in (False, True):
        for ad in (False, True):
            v = R.VcpuState(cr0_wp=cr0_wp)
            a = R.kvm_calc_shadow_ept_root_page_role(e, v, accessed_dirty=ad)
            b = R.kvm_calc_shadow_ept_root_page_role(s, v, accessed_dirty=ad)
            assert (a.base, a.ext) == (b.base, b.ext)
            if e.ept_rule == R.EptRule.MARKER:
                assert R.is_ept_sp(e, a.base) and R.is_ept_sp(s, b.base)
            assert R.identify_nested_ept(e, a.base) == R.identify_nested_ept(s, b.base)
    assert R.find_collisions(e) == R.find_collisions(s)


# ---------------------------------------------------------------------- PrevRootsRule
def test_prev_roots_rule_per_era():
    P = R.PrevRootsRule
    want = {"v4.2": None, "v4.12": None, "v4.18": P.V4_19, "v4.20": P.V4_19, "v5.0": P.V4_19,
            "v5.0-fix": P.V4_19, "v5.1": P.V4_19, "v5.9": P.V5_7, "v5.14": P.V5_7, "v5.17": P.V5_7,
            "v5.19": P.V5_19, "v6.14": P.V5_19}
    assert {n: e.prev_roots for n, e in R.ERAS.items()} == want
    assert [r.value for r in P] == ["v4.19", "v5.7", "v5.19"]
    assert P.V5_7 == "v5.7" and f"{P.V5_19}" == "v5.19"


@pytest.mark.parametrize("name", ["v4.18", "v5.9", "v5.19"])
def test_prev_roots_cache_same_with_plain_string_rule(name):
    """The prev_roots cache behaves the same when the era carries the rule as a plain string."""
    import dataclasses
    from pykvmmu.prevroots import PrevRootsCache
    e = R.get_era(name)
    s = dataclasses.replace(e, prev_roots=e.prev_roots.value)
    assert type(s.prev_roots) is str
    direct = R.pack(e, level=4, direct=1)
    shadow = R.pack(e, level=4, direct=0)
    seq = [(0x1000, shadow), (0x2000, shadow), (0x1000, shadow), (0x3000, direct), (0x4000, direct),
           (0x2000, shadow), (0x3000, direct)]
    runs = []
    for era in (e, s):
        c = PrevRootsCache(era)
        for pgd, role in seq:
            c.new_pgd(pgd, role)
        runs.append((c.hits, c.misses, c.root.pgd, [r.pgd for r in c.prev_roots], c.describe(), c.log))
    assert runs[0] == runs[1]
