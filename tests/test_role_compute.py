"""Role computations per era, child roles, nested-EPT identity, the checker (worked values of
role-hash-trace.md sections 1.4, 2.2, 2.4, 2.5)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykvmmu import role as R
from pykvmmu.errors import InputError, ProfileError

V = R.VcpuState
L = "latest"


def test_worked_tdp_roots():
    assert R.kvm_calc_tdp_mmu_root_page_role(L, V()) == 0x3784
    assert R.kvm_calc_tdp_mmu_root_page_role(L, V(smm=True)) == 0x01003784
    assert R.kvm_calc_tdp_mmu_root_page_role(L, V(), mirror=True) == 0x00083784
    # TDP roles force cr0_wp = efer_nx = 1 whatever the vCPU does (v5.19+)
    assert R.kvm_calc_tdp_mmu_root_page_role(L, V.real_mode()) == 0x3784
    r = 0x3784
    for want in (0x3783, 0x3782, 0x3781):
        r = R.tdp_mmu_child_role(L, r)
        assert r == want
    with pytest.raises(ProfileError):
        R.kvm_calc_tdp_mmu_root_page_role("v5.19", V(), mirror=True)


def test_worked_shadow_roots_and_quadrants():
    assert R.kvm_calc_shadow_mmu_root_page_role(L, V(cr0_wp=True)) == 0x3704
    roots = R.shadow_root_sp_roles(L, V.nonpae32(cr0_wp=True))
    assert roots[3] == 0x3772 and [(w >> 5) & 3 for w in roots] == [0, 1, 2, 3]
    assert R.kvm_mmu_child_role(L, 0x3772, direct=False, access=7, index=1) == 0x3731
    assert R.kvm_mmu_child_role(L, 0x3772, direct=False, access=7, index=2) == 0x3711
    # PAE guest: four PAE roots, no quadrant
    assert all((w >> 5) & 3 == 0 for w in R.shadow_root_sp_roles(L, V.pae()))
    # CR0.PG=0 shadow: direct, level 3 root role, direct level-2 PAE roots
    assert R.kvm_calc_shadow_mmu_root_page_role(L, V.real_mode()) & 0x8F == 0x83


def test_worked_nested_ept():
    assert R.kvm_calc_shadow_ept_root_page_role(L, V()).base == 0x00020704
    assert R.kvm_calc_shadow_ept_root_page_role(L, V(), accessed_dirty=False).base == 0x00030704
    cr = R.kvm_calc_shadow_ept_root_page_role(L, V(), execonly=True)
    assert R.unpack_ext(L, cr.ext) == {"valid": 1, "execonly": 1, "cr4_pse": 0, "cr4_pke": 0,
                                      "cr4_smap": 0, "cr4_smep": 0, "cr4_la57": 0, "efer_lma": 0}
    # v5.1-v5.13: the marker, smm inherited, gpte_is_8_bytes=1
    w = R.kvm_calc_shadow_ept_root_page_role("v5.1", V(smm=True)).base
    f = R.unpack("v5.1", w)
    assert f.cr0_wp == 1 and f.smap_andnot_wp == 1 and f.gpte_is_8_bytes == 1 and f.smm == 1
    assert R.is_ept_sp("v5.1", w)
    assert R.identify_nested_ept("v5.1", w)[0] == "nested-ept"
    with pytest.raises(ProfileError):
        R.is_ept_sp("v5.14", w)
    with pytest.raises(ProfileError):
        R.kvm_calc_shadow_ept_root_page_role("v4.18", V())


def test_cpu_role_real_mode_level_zero():
    cr = R.kvm_calc_cpu_role(L, V.real_mode())
    b = R.unpack(L, cr.base)
    assert b.level == 0 and b.direct == 1 and b.access == 7
    assert R.check_role_word(L, cr.base, "cpu") == []
    assert R.check_role_word(L, cr.base, "sp")[0][0] == "level"
    cr = R.kvm_calc_cpu_role(L, V(cr4_la57=True, cr4_pke=True, cr4_smep=True, cr0_wp=False))
    b = R.unpack(L, cr.base)
    assert b.level == 5 and b.smep_andnot_wp == 1
    assert R.unpack_ext(L, cr.ext)["cr4_pke"] == 1 and cr.as_u64 >> 32 == cr.ext
    with pytest.raises(ProfileError):
        R.kvm_calc_cpu_role("v5.14", V())


def test_2019_tdp_roles_and_direct_filter():
    # v5.0: cr4_pae in every role; kvm_mmu_get_page clears it for direct pages.
    new_role = R.kvm_calc_tdp_mmu_root_page_role("v5.0", V())
    assert new_role & 0x10
    stored = R.kvm_mmu_get_page_role("v5.0", new_role, level=4, direct=True)
    assert stored == new_role & ~0x10
    assert R.check_role_word("v5.0", new_role, "sp")[0][0] == "direct-bit4"
    # the fix: cr4_pae only in the shadow MMU's role
    assert not R.kvm_calc_tdp_mmu_root_page_role("v5.0-fix", V()) & 0x10
    assert R.kvm_calc_shadow_mmu_root_page_role("v5.0-fix", V()) & 0x10
    # v5.1-v5.16: gpte_is_8_bytes forced to 1 on direct pages, and set in the TDP role
    t = R.kvm_calc_tdp_mmu_root_page_role("v5.1", V.nonpae32())
    assert t & 0x10 and R.kvm_mmu_get_page_role("v5.1", t, level=4, direct=True) == t
    # the bit-4 value of a direct page over the eras: 0 -> 1 -> 0
    assert [R.kvm_calc_tdp_mmu_root_page_role(e, V()) >> 4 & 1 for e in ("v5.0-fix", "v5.1", "v5.17")] \
        == [0, 1, 0]


def test_quadrant_formula():
    assert R.quadrant_for_gaddr(0x00200000, 1) == 1
    assert R.quadrant_for_gaddr(0x00400000, 1) == 0
    assert R.quadrant_for_gaddr(0xC0000000, 2) == 3


@given(st.integers(0, 511), st.integers(0, 3), st.integers(0, 7))
def test_child_quadrant_equals_gaddr_formula(index, root_q, access):
    """Newest derive-from-parent quadrant (index & 1) == 2019 formula on the child's address."""
    parent = R.pack(L, level=2, has_4_byte_gpte=1, quadrant=root_q, access=7, cr0_wp=1, efer_nx=1)
    child = R.kvm_mmu_child_role(L, parent, direct=False, access=access, index=index)
    gaddr = (root_q << 30) | (index << 21)
    assert (child >> 5) & 3 == R.quadrant_for_gaddr(gaddr, 1)
    f = R.unpack(L, child)
    assert f.level == 1 and f.access == access and f.direct == 0 and f.has_4_byte_gpte == 1
    assert R.check_role_word(L, child) == []


@settings(max_examples=100)
@given(st.sampled_from(list(R.ERAS)), st.integers(2, 5), st.booleans(), st.integers(0, 7),
       st.integers(0, 511), st.booleans())
def test_child_role_rules(era, level, direct, access, index, gm):
    e = R.get_era(era)
    vals = {"level": level, "access": 7, "cr0_wp": 1}
    if e.has("guest_mode"):
        vals["guest_mode"] = int(gm)
    if e.has("passthrough"):
        vals["passthrough"] = 1
    vals.update(R._b4_for(e, True))
    parent = R.pack(era, **vals)
    child = R.unpack(era, R.kvm_mmu_child_role(era, parent, direct=direct, access=access, index=index))
    assert child.level == level - 1 and child.access == access and child.direct == int(direct)
    assert child.quadrant == 0                       # 8-byte gptes: no quadrant
    if e.has("passthrough"):
        assert child.passthrough == 0
    # everything else is the parent's
    keep = [f.name for f in e.base.fields
            if f.name not in ("level", "access", "direct", "passthrough", "quadrant")]
    pf = R.unpack(era, parent)
    if direct and e.direct_bit4 is not None:        # kvm_mmu_get_page's direct-page rule
        keep.remove(e.bit4)
        assert child[e.bit4] == e.direct_bit4
    assert all(child[n] == pf[n] for n in keep)


def test_child_role_errors():
    with pytest.raises(InputError):
        R.kvm_mmu_child_role(L, 0x3781, direct=False, access=7, index=0)
    with pytest.raises(InputError):
        R.kvm_mmu_child_role(L, 0x3784, direct=False, access=8, index=0)
    with pytest.raises(InputError):
        R.kvm_mmu_child_role(L, 0x3784, direct=False, access=7, index=512)


def test_checker_rules():
    chk = lambda era, w, k="sp": {c for c, _ in R.check_role_word(era, w, k)}  # noqa: E731
    assert chk(L, 0x3784, "root") == set()
    assert "reserved" in chk(L, 0x00100784)
    assert "impossible" in chk(L, R.pack(L, level=4, cr0_wp=1, smep_andnot_wp=1))
    assert "impossible" in chk(L, R.pack(L, level=4, cr0_wp=1, smap_andnot_wp=1, guest_mode=1))
    assert "impossible" not in chk("v5.1", R.pack("v5.1", level=4, cr0_wp=1, smap_andnot_wp=1,
                                                   guest_mode=1, gpte_is_8_bytes=1))
    assert "quadrant" in chk(L, R.pack(L, level=1, quadrant=1))
    assert "quadrant" in chk(L, R.pack(L, level=1, quadrant=2, has_4_byte_gpte=1))
    assert "gpte" in chk(L, R.pack(L, level=4, has_4_byte_gpte=1))
    assert "passthrough" in chk(L, R.pack(L, level=5, passthrough=1))
    assert "mirror" in chk(L, R.pack(L, level=4, is_mirror=1))
    assert "smm" in chk(L, R.pack(L, level=4, direct=1, smm=2))
    assert "invalid" in chk(L, R.pack(L, level=4, invalid=1), "root")
    with pytest.raises(InputError):
        R.check_role_word(L, 0, "bogus")


def test_collisions_per_era():
    # v4.20/v5.0: nested EPT inherits L1's TDP bits -> collides with L2 shadow roots
    assert len(R.find_collisions("v5.0")) > 0
    # v5.1-v5.13: the impossible-combination marker makes them unique
    assert R.find_collisions("v5.1") == {} and R.find_collisions("v5.9") == {}
    # newest: only nested-NPT (SVM) roots collide, which never share a VM with nested EPT
    c = R.find_collisions(L)
    assert c and all(o[0].startswith("nested NPT") for _, o in c.values())


def test_nested_npt_passthrough():
    w = R.kvm_calc_shadow_npt_root_page_role(L, V(), tdp_level=5)
    f = R.unpack(L, w)
    assert f.passthrough == 1 and f.level == 5 and f.guest_mode == 1 and f.direct == 0
    assert R.unpack(L, R.kvm_calc_shadow_npt_root_page_role(L, V(), 4)).passthrough == 0


def test_masks():
    e = R.get_era("v5.1")
    names = ["cr0_wp", "gpte_is_8_bytes", "nxe", "smep_andnot_wp", "smap_andnot_wp", "smm",
             "guest_mode", "ad_disabled"]
    assert sum(e.base.field(n).mask for n in names) == R.MMU_BASE_ROLE_MASK
    e = R.get_era(L)
    assert sum(e.base.field(n).mask for n in ("level", "access", "quadrant", "invalid")) == R.ROLE_IGN_MASK
    assert sum(e.base.field(n).mask for n in ("level", "access", "quadrant", "passthrough")) \
        == R.SYNC_ROLE_IGN_MASK
    assert R.kvm_mmu_role_as_id(0x01003784) == 1 and R.kvm_mmu_role_as_id(0x3784) == 0


def test_role_record_str():
    r = R.unpack(L, 0x3781)
    assert r.level == 1 and r.direct == 1 and r.gpte_bytes == 8
    assert "l1 8-byte q0 direct wux nx wp ad" in str(r)
    with pytest.raises(AttributeError):
        R.unpack("v5.0", 0).passthrough
    assert R.unpack("v5.0", 0x10).gpte_bytes == 8 and R.unpack(L, 0x10).gpte_bytes == 4
