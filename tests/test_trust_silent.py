"""Issue 11, class 4: values outside the width or range the kernel uses are refused (no silent
accept), with the kernel's errno where the kernel refuses the same thing."""
import errno

import numpy as np
import pytest

from pykvmmu import gmem as G, mmio as M, private as P, role as R, spte as S
from pykvmmu.attrs import MemoryAttributes, kvm_supported_mem_attributes
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ConfigError, InputError, PykvmmuError
from pykvmmu.sphash import MmuPageHash
from pykvmmu.vm import KVM_MEM_GUEST_MEMFD, Vm, VmError

CFG = MmuConfig.ept()


def small_vm(kind="tdx"):
    vm = Vm(kind, host=G.HostMemory(nr_pfns=1 << 14))
    g = vm.create_guest_memfd(0x400000)
    vm.set_memory_region(0, 0, 0x200000, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    vm.convert(0, 16)
    return vm, g


def gmemfd(released=False):
    g = G.GuestMemfd(G.StubKvm(), 0x100000, host=G.HostMemory(nr_pfns=1 << 12))
    if released:
        g.release()
    return g


@pytest.mark.parametrize("gpa,ec,name", [
    (0x2000, 1 << 64, "error_code"),            # extra bits used to be dropped, a page mapped
    ((1 << 64) + 0x1000, 0, "gpa"),             # used to report a 65-bit gpa
    (-0x1000, 0, "gpa"),
    (0x2000, "1", "error_code"),
])
def test_vm_fault_u64_arguments(gpa, ec, name):
    vm, _ = small_vm()
    before = vm._snapshot()
    with pytest.raises(VmError, match=name):
        vm.fault(gpa, ec)
    assert vm._snapshot() == before and vm.stats["faults"] == 0


def test_memory_attributes_store_refuses_negative_and_reversed_ranges():
    a = MemoryAttributes()
    with pytest.raises(InputError, match="start=-5"):
        a.store(-5, 0x30, 8)
    with pytest.raises(InputError, match="end must not be below start"):
        a.store(0x40, 0x30, 8)
    with pytest.raises(InputError, match="not supported"):
        a.store(0x10, 0x20, 0x10)
    assert a.ranges() == []


@pytest.mark.parametrize("call,err", [
    (lambda g: g.punch_hole(-4096, 0x1000), errno.EINVAL),   # vfs_fallocate: offset < 0
    (lambda g: g.punch_hole(0, 0), errno.EINVAL),            # vfs_fallocate: len <= 0
    (lambda g: g.allocate(1, 0x1000), errno.EINVAL),         # kvm_gmem_fallocate: !PAGE_ALIGNED
    (lambda g: g.allocate(0, 0x1001), errno.EINVAL),
    (lambda g: g.allocate(0, 0x200000), errno.EINVAL),       # kvm_gmem_allocate: beyond i_size
    (lambda g: g.fallocate(0x3, 0, 0), errno.EINVAL),
    (lambda g: g.fallocate(0x1, 1 << 63, 0x1000), errno.EINVAL),
])
def test_gmem_fallocate_rules_with_kernel_errno(call, err):
    g = gmemfd()
    before = g._snapshot()
    with pytest.raises(G.GmemError) as e:
        call(g)
    assert e.value.errno == err
    assert g._snapshot() == before


@pytest.mark.parametrize("call", [lambda g: g.allocate(0, 0x1000), lambda g: g.punch_hole(0, 0x1000),
                                  lambda g: g.fallocate(3, 0, 0x1000), lambda g: g.release()])
def test_gmem_after_release_is_ebadf(call):
    g = gmemfd(released=True)
    with pytest.raises(G.GmemError, match="released") as e:
        call(g)
    assert e.value.errno == errno.EBADF


def test_migrate_gfn_refuses_a_hwpoisoned_page():
    vm, g = small_vm()
    assert vm.fault(0x1000).kind == "mapped"
    g.memory_failure(1)
    before = vm._snapshot()
    with pytest.raises(G.GmemError, match="hwpoisoned") as e:
        vm.migrate_gfn(1)
    assert e.value.errno == G.EHWPOISON
    assert vm._snapshot() == before


def test_guest_memfd_without_the_flag_is_refused():
    vm, _ = small_vm()
    g2 = vm.create_guest_memfd(0x100000)
    before = vm._snapshot()
    with pytest.raises(VmError, match="without KVM_MEM_GUEST_MEMFD"):
        vm.set_memory_region(5, 0x800000, 0x1000, guest_memfd=g2)
    with pytest.raises(VmError, match="guest_memfd_offset"):
        vm.set_memory_region(5, 0x800000, 0x1000, guest_memfd_offset=0x1000)
    assert vm._snapshot() == before


def test_page_hash_alloc_refuses_wide_role_and_duplicates():
    h = MmuPageHash()
    with pytest.raises(InputError, match="role=0x1000000aa"):
        h.alloc(5, (1 << 32) | 0xAA)
    sp = h.alloc(5, 0x24)
    with pytest.raises(InputError, match="already exists"):
        h.alloc(5, 0x24)
    assert h.get(5, 0x24) == (sp, False)
    h.zap_all_fast()                      # the old page is obsolete: a new one may be made
    assert h.alloc(5, 0x24) is not sp


@pytest.mark.parametrize("call,name", [
    (lambda: R.pack("latest", level=9), "level=9"),
    (lambda: R.kvm_mmu_get_page_role("v5.4", 0x24, level=0, direct=False), "level=0"),
    (lambda: R.quadrant_for_gaddr(-1, 1), "gaddr=-1"),
    (lambda: R.kvm_mmu_role_as_id(-1), "word=-1"),
    (lambda: R.kvm_mmu_role_as_id(1 << 32), "word=0x100000000"),
    (lambda: R.VcpuState(cr0_pg="no"), "cr0_pg='no'"),
    (lambda: MmuConfig.ept(huge_level=9), "huge_level=9"),
    (lambda: MmuConfig.npt(tdp_level=7), "tdp_level=7"),
    (lambda: Vm("snp", asid=0), "asid=0"),
    (lambda: Vm("snp", asid=5000), "asid=5000"),
    (lambda: Vm("snp", max_level=7), "max_level=7"),
    (lambda: M.default_mmio_masks(0), "maxphyaddr=0"),
    (lambda: S.make_spte(CFG, 0x1234, ad_disabled="no"), "ad_disabled='no'"),
    (lambda: S.make_spte(CFG, 0x1234, prefetch=2), "prefetch=2"),
    (lambda: MmuConfig.ept(ad="no"), "ad='no'"),
    (lambda: S.access_track_batch(CFG, np.zeros(2, np.uint64), restore="no"), "restore='no'"),
    (lambda: P.FaultContext(vm_type="snp", sw_protected_enabled="no"), "sw_protected_enabled"),
    (lambda: kvm_supported_mem_attributes("no"), "has_private_mem"),
    (lambda: G.HostMemory().alloc("x", order=-1), "order=-1"),
    (lambda: S.predicate(CFG, "is_large_pte", 0, level=9), "level=9"),
])
def test_out_of_range_and_truthiness_refused(call, name):
    with pytest.raises(PykvmmuError) as e:
        call()
    assert name in str(e.value)


def test_booleans_accept_bools_only():
    a = S.make_spte(CFG, 0x1234, prefetch=True).spte
    assert S.make_spte(CFG, 0x1234, prefetch=np.bool_(True)).spte == a
    for bad in ("yes", 1, 0, 2, 1.0, None, []):
        with pytest.raises(InputError, match="prefetch"):
            S.make_spte(CFG, 0x1234, prefetch=bad)


@pytest.mark.parametrize("preset", MmuConfig.PRESETS)
def test_unknown_preset_option_is_refused(preset):
    with pytest.raises(ConfigError, match="unknown option.*bogus"):
        MmuConfig.preset(preset, bogus=1)


def test_config_errors_are_config_errors():
    with pytest.raises(ConfigError, match="maxphyaddr=99"):
        MmuConfig.ept(maxphyaddr=99)
    with pytest.raises(ConfigError, match="nosuch"):
        CFG.replace(nosuch=1)
