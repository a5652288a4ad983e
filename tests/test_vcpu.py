"""Vcpu from raw registers -> role inputs, cpu role and root roles per era."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pykvmmu import role as R
from pykvmmu.errors import InputError
from pykvmmu.vcpu import (CR0_PE, CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PKE, CR4_PSE, CR4_SMAP,
                          CR4_SMEP, EFER_LMA, EFER_LME, EFER_NX, EptContext, Vcpu, VcpuStateError)


def test_raw_registers_reduce_to_role_inputs():
    v = Vcpu(cr0=CR0_PE | CR0_PG, cr4=CR4_PAE | CR4_SMEP | CR4_SMAP | CR4_PSE | CR4_LA57,
             efer=EFER_LME | EFER_LMA)
    s = v.state
    assert (s.cr0_pg, s.cr0_wp, s.cr4_pae, s.cr4_smep, s.cr4_smap, s.cr4_pse, s.cr4_la57,
            s.efer_lma, s.efer_nx) == (True, False, True, True, True, True, True, True, False)
    assert v.paging_level == 5
    assert Vcpu.pae().paging_level == 3 and Vcpu.legacy32().paging_level == 2
    assert Vcpu.real_mode().paging_level == 0
    # bits outside the role inputs change nothing
    noisy = Vcpu(cr0=CR0_PE | CR0_PG | CR0_WP | 0x60000032, cr4=CR4_PAE | 0x6C8, cr3=0x1234567)
    assert noisy.state == Vcpu().state


def test_worked_root_roles_from_registers():
    L = "latest"
    assert Vcpu().root_role(L) == 0x3704                       # shadow, 64-bit, WP
    assert Vcpu().root_role(L, "tdp") == 0x3784
    assert Vcpu(smm=True).root_role(L, "tdp") == 0x01003784
    roots = Vcpu.legacy32().shadow_root_sp_roles(L)
    assert roots[3] == 0x3772 and [(w >> 5) & 3 for w in roots] == [0, 1, 2, 3]
    assert Vcpu.real_mode().root_role(L) & 0x8F == 0x83
    assert EptContext(0x1000 | (3 << 3) | 0x40).root_role(L) == 0x00020704
    assert EptContext(0x1000 | (3 << 3)).root_role(L) == 0x00030704
    assert R.unpack(L, EptContext(0x1000 | (4 << 3) | 0x40).root_role(L)).level == 5
    npt = R.unpack(L, Vcpu().root_role(L, "nested-npt", tdp_level=5))
    assert npt.passthrough == 1 and npt.guest_mode == 1 and npt.level == 5


def test_cpu_role_ext_bits():
    L = "latest"
    cr = Vcpu(cr4=CR4_PAE | CR4_PKE | CR4_LA57 | CR4_SMEP).cpu_role(L)
    ext = R.unpack_ext(L, cr.ext)
    assert ext["cr4_pke"] == 1 and ext["cr4_la57"] == 1 and ext["efer_lma"] == 1
    assert ext["cr4_smep"] == 1
    # PKE and LA57 need long mode
    ext = R.unpack_ext(L, Vcpu.pae(cr4=CR4_PAE | CR4_PKE).cpu_role(L).ext)
    assert ext["cr4_pke"] == 0 and ext["efer_lma"] == 0
    assert R.unpack(L, Vcpu.real_mode().cpu_role(L).base).level == 0
    assert not Vcpu.pae(cr4=CR4_PAE | CR4_PKE).pke_active
    assert Vcpu(cr4=CR4_PAE | CR4_PKE).pke_active


@given(cr0=st.sampled_from([CR0_PE | CR0_PG, CR0_PE | CR0_PG | CR0_WP, 0]),
       cr4=st.integers(0, (1 << 25) - 1), nx=st.booleans(), lm=st.booleans(),
       smm=st.booleans(), gm=st.booleans(),
       era=st.sampled_from(["v4.18", "v5.0", "v5.1", "v5.14", "v5.17", "v6.6", "latest"]))
def test_roles_equal_role_module_for_every_era(cr0, cr4, nx, lm, smm, gm, era):
    pg = bool(cr0 & CR0_PG)
    if lm and pg:
        cr4 |= CR4_PAE
    lma = lm and pg
    efer = (EFER_LME | EFER_LMA if lma else 0) | (EFER_NX if nx else 0)
    v = Vcpu(cr0=cr0, cr4=cr4, efer=efer, smm=smm, guest_mode=gm)
    s = R.VcpuState(cr0_pg=pg, cr0_wp=bool(cr0 & CR0_WP), cr4_pae=bool(cr4 & CR4_PAE),
                    cr4_pse=bool(cr4 & CR4_PSE), cr4_pke=bool(cr4 & CR4_PKE),
                    cr4_smep=bool(cr4 & CR4_SMEP), cr4_smap=bool(cr4 & CR4_SMAP),
                    cr4_la57=bool(cr4 & CR4_LA57), efer_lma=lma, efer_nx=nx, smm=smm,
                    guest_mode=gm, maxphyaddr=48)
    assert v.state == s
    assert v.root_role(era) == R.kvm_calc_shadow_mmu_root_page_role(era, s)
    assert v.root_role(era, "tdp") == R.kvm_calc_tdp_mmu_root_page_role(era, s)
    assert v.shadow_root_sp_roles(era) == R.shadow_root_sp_roles(era, s)


@pytest.mark.parametrize("kw,match", [
    ({"efer": EFER_LME | EFER_LMA, "cr4": 0}, "CR4.PAE"),
    ({"efer": EFER_LMA, "cr4": CR4_PAE}, "without EFER.LME"),
    ({"efer": EFER_LME, "cr4": CR4_PAE}, "sets EFER.LMA"),
    ({"cr0": CR0_PG}, "CR0.PE"),
])
def test_impossible_register_combinations(kw, match):
    with pytest.raises(VcpuStateError, match=match):
        Vcpu(**kw)


def test_argument_checks():
    with pytest.raises(InputError, match="cr0"):
        Vcpu(cr0=1 << 64)
    with pytest.raises(InputError, match="pkru"):
        Vcpu(pkru=1 << 32)
    with pytest.raises(InputError, match="maxphyaddr"):
        Vcpu(maxphyaddr=60)
    with pytest.raises(InputError, match="smm"):
        Vcpu(smm=1)
    with pytest.raises(InputError, match="pdptrs"):
        Vcpu.pae(pdptrs=(1, 2, 3))
    with pytest.raises(InputError, match="mmu"):
        Vcpu().root_role("latest", "npt")
    with pytest.raises(VcpuStateError, match="NPT requires"):
        Vcpu.real_mode().root_role("latest", "nested-npt")
    with pytest.raises(VcpuStateError, match="page-walk length"):
        EptContext(0x1000 | (2 << 3))
    with pytest.raises(InputError, match="huge_page_level"):
        EptContext(0x1000 | (3 << 3), huge_page_level=4)
