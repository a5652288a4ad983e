"""The role computations as they were written before issue 14's word builders: field dicts
packed with the reference's layouts (pykvmmu.ref.role), from the checked inputs.  The oracle of
tests/test_role_words.py; not imported by pykvmmu."""
from __future__ import annotations

from pykvmmu import role as R
from pykvmmu.errors import InputError
from pykvmmu.ref import role as ref
from pykvmmu.role import (ACC_ALL, EptRule, MMU_BASE_ROLE_MASK, PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL,
                          RoleEra, VcpuState, _b4_for)


def _pack(era, f):
    return ref.pack_role(era.name, **f)


def _unpack(era, w):
    return ref.unpack_role(era.name, w)


def _pack_ext(era, f):
    return ref.pack(ref.ext_fields(era.name), f)


def _pk(era, **f) -> int:
    f = {k: int(v) for k, v in f.items() if k in ref.base_fields(era.name)}
    return _pack(era, f)


def _kvm_calc_mmu_role_ext(era, v: VcpuState, execonly: bool = False) -> int:
    names = ref.ext_fields(era.name)
    pg = v.cr0_pg
    if "cr0_pg" not in names:           # v5.19+: kvm_calc_cpu_role
        vals = dict(valid=1, execonly=execonly, cr4_smep=pg and v.cr4_smep, cr4_smap=pg and v.cr4_smap,
                    cr4_pse=pg and v.cr4_pse, cr4_pke=pg and v.efer_lma and v.cr4_pke,
                    cr4_la57=pg and v.efer_lma and v.cr4_la57, efer_lma=pg and v.efer_lma)
    elif "efer_lma" in names:           # v5.14-v5.18 [approx]: gated by CR0.PG
        vals = dict(valid=1, execonly=execonly, cr0_pg=pg, cr4_pae=pg and v.cr4_pae,
                    cr4_smep=pg and v.cr4_smep, cr4_smap=pg and v.cr4_smap,
                    cr4_pse=pg and v.cr4_pse, cr4_pke=pg and v.efer_lma and v.cr4_pke,
                    cr4_la57=pg and v.efer_lma and v.cr4_la57, efer_lma=pg and v.efer_lma)
    else:                               # v4.20-v5.13: raw register bits
        vals = dict(valid=1, execonly=execonly, cr0_pg=pg, cr4_pae=v.cr4_pae, cr4_pse=v.cr4_pse,
                    cr4_pke=v.cr4_pke, cr4_smap=v.cr4_smap, cr4_smep=v.cr4_smep,
                    cr4_la57=v.cr4_la57, maxphyaddr=v.maxphyaddr)
    return _pack_ext(era, {k: int(x) for k, x in vals.items() if k in names})


def kvm_calc_cpu_role(era, v: VcpuState) -> tuple:
    """kvm_calc_cpu_role (v5.19+): the guest's paging mode as a role (level 0 = CR0.PG=0)."""
    f = dict(access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode)
    if not v.cr0_pg:
        f["direct"] = 1
    else:
        f.update({era.nx: v.efer_nx, "cr0_wp": v.cr0_wp,
                  "smep_andnot_wp": v.cr4_smep and not v.cr0_wp,
                  "smap_andnot_wp": v.cr4_smap and not v.cr0_wp,
                  "has_4_byte_gpte": not v.cr4_pae, "level": v.paging_level})
    return (_pk(era, **f), _kvm_calc_mmu_role_ext(era, v))


def _role_common(era: RoleEra, v: VcpuState) -> dict:
    """kvm_calc_mmu_role_common (v4.20-v5.18): access, nxe, cr0_wp, smm, guest_mode
    (+ cr4_pae in v4.20/v5.0)."""
    f = {"access": ACC_ALL, era.nx: v.efer_nx, "cr0_wp": v.cr0_wp, "smm": v.smm,
         "guest_mode": v.guest_mode}
    if era.common_sets_pae:
        f["cr4_pae"] = v.cr4_pae
    return f


def _kvm_calc_tdp_mmu_root_page_role(era, v: VcpuState, tdp_level: int = 4,
                                    ad_enabled: bool = True, mirror: bool = False) -> int:
    f = dict(level=tdp_level, direct=1, access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode,
             ad_disabled=not ad_enabled)
    if era.forced_wp_nx:
        f.update({"cr0_wp": 1, era.nx: 1})
    elif era.has_role_common:
        f.update(_role_common(era, v))
    if era.direct_bit4 == 1 or era.bit4 == "has_4_byte_gpte":
        f.update(_b4_for(era, True))
    if mirror:
            f["is_mirror"] = 1
    return _pk(era, **f)


def kvm_calc_shadow_mmu_root_page_role(era, v: VcpuState) -> int:
    """The shadow-paging (TDP off) root role for vCPU state ``v``."""
    pg = v.cr0_pg
    lvl = max(v.paging_level, PT32E_ROOT_LEVEL) if pg else PT32E_ROOT_LEVEL
    if era.has_cpu_role:
        f = dict(access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode, level=lvl)
        f[era.nx] = 1
        if pg:
            f.update(cr0_wp=v.cr0_wp, smep_andnot_wp=v.cr4_smep and not v.cr0_wp,
                     smap_andnot_wp=v.cr4_smap and not v.cr0_wp, has_4_byte_gpte=not v.cr4_pae)
        else:
            f["direct"] = 1
        return _pk(era, **f)
    f = dict(access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode, level=lvl, direct=not pg,
             smep_andnot_wp=v.cr4_smep and not v.cr0_wp, smap_andnot_wp=v.cr4_smap and not v.cr0_wp,
             cr0_wp=v.cr0_wp)
    f[era.nx] = v.efer_nx
    if era.bit4 == "has_4_byte_gpte":
        f["has_4_byte_gpte"] = pg and not v.cr4_pae
    else:
        f[era.bit4] = v.cr4_pae
    return _pk(era, **f)


def _kvm_mmu_get_page_role(era, base_word: int, *, level: int, direct: bool, access: int = ACC_ALL,
                          gaddr: int = 0, guest_32bit: bool | None = None) -> int:
    f = _unpack(era, base_word & (MMU_BASE_ROLE_MASK if era.masks_mmu_role else 0xFFFFFFFF))
    f.update(level=level, direct=int(direct), access=access, quadrant=0, invalid=0)
    if direct and era.direct_bit4 is not None:
        f[era.bit4] = era.direct_bit4
    if guest_32bit is None:
        guest_32bit = bool(f[era.bit4]) if era.bit4 == "has_4_byte_gpte" else False
    if guest_32bit:
        f["quadrant"] = R.quadrant_for_gaddr(gaddr, level)
    return _pack(era, f)


def _shadow_root_sp_roles(era, v: VcpuState) -> list:
    root = kvm_calc_shadow_mmu_root_page_role(era, v)
    if v.cr0_pg and v.efer_lma:
        return [root]
    out = []
    for i in range(4):
        out.append(_kvm_mmu_get_page_role(era, root, level=PT32_ROOT_LEVEL, direct=not v.cr0_pg,
                                         gaddr=i << 30, guest_32bit=v.cr0_pg and not v.cr4_pae))
    return out


def _kvm_calc_shadow_ept_root_page_role(era, l1: VcpuState, accessed_dirty: bool = True,
                                       execonly: bool = False, level: int = 4,
                                       tdp_ad_enabled: bool = True) -> tuple:
    if era.ept_rule == EptRule.INHERIT:
        l1b = _kvm_calc_tdp_mmu_root_page_role(era, l1.replace(guest_mode=False),
                                              ad_enabled=tdp_ad_enabled)
        f = _unpack(era, l1b & MMU_BASE_ROLE_MASK)
        f.update(level=4, direct=0, ad_disabled=int(not accessed_dirty), guest_mode=1,
                 access=ACC_ALL)
        base = _pack(era, f)
        ext = _kvm_calc_mmu_role_ext(era, l1, execonly)
    elif era.ept_rule == EptRule.MARKER:
        base = _pk(era, smm=l1.smm, level=4, gpte_is_8_bytes=1, direct=0,
                   ad_disabled=not accessed_dirty, guest_mode=1, access=ACC_ALL, cr0_wp=1,
                   smap_andnot_wp=1)
        ext = _kvm_calc_mmu_role_ext(era, l1, execonly)
    else:
        f = dict(level=level, direct=0, ad_disabled=not accessed_dirty, guest_mode=1,
                 access=ACC_ALL)
        f.update(_b4_for(era, True))
        base = _pk(era, **f)
        ext = _pack_ext(era, {"valid": 1, "execonly": int(execonly)})
    return (base, ext)


def _kvm_calc_shadow_npt_root_page_role(era, l1_npt: VcpuState, tdp_level: int = 4) -> int:
    v = l1_npt.replace(guest_mode=True, cr4_pke=False)
    if era.has_cpu_role:
        f = _unpack(era, kvm_calc_cpu_role(era, v)[0])
        f["level"] = tdp_level
        if tdp_level == 5 and v.paging_level == 4:
            f["passthrough"] = 1
        return _pack(era, f)
    f = _unpack(era, kvm_calc_shadow_mmu_root_page_role(era, v))
    f["level"] = tdp_level
    return _pack(era, f)


def _kvm_mmu_child_role(era, parent_word: int, *, direct: bool, access: int, index: int,
                       guest_32bit: bool | None = None) -> int:
    f = _unpack(era, parent_word)
    if f["level"] <= 1:
        raise InputError(f"parent_word={parent_word:#x}: level {f['level']}: a level-1 SP (or "
                         "level 0) has no child SPs")
    f.update(level=f["level"] - 1, access=access, direct=int(direct))
    if "passthrough" in f:
        f["passthrough"] = 0
    if guest_32bit is None:
        guest_32bit = (bool(f[era.bit4]) if era.bit4 == "has_4_byte_gpte"
                       else not f[era.bit4] and not f["direct"])
    if direct and era.direct_bit4 is not None:
        f[era.bit4] = era.direct_bit4
    if guest_32bit:
        f["quadrant"] = index & 1
    return _pack(era, f)


