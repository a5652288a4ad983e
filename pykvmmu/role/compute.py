"""Role computations: ``VcpuState`` (the role-relevant vCPU registers) and the kernel's
``kvm_calc_*`` / ``kvm_mmu_get_page_role`` / child-role rules per era."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, replace

from .._batch import uint
from .._check import boolean, in_range, opt_boolean
from ..errors import InputError
from .eras import (ACC_ALL, EptRule, get_era, MMU_BASE_ROLE_MASK, PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL, _require,
                   RoleEra, RoleFieldError, SP_LEVEL_MAX, SP_LEVEL_MIN, _sp_level, _tdp_level)
from .packing import CpuRole

_U64_END = 1 << 64
#: Entries of the role computations' memo before it is emptied.
MEMO_MAX = 1 << 14
_MEMO: dict = {}


def _memo_put(key, result):
    """Store ``result`` under ``key`` in the bounded memo and return it.

    Each role computation below is a pure function of the era and its arguments; a call
    whose arguments all have their exact types (the RoleEra object; a VcpuState, as its
    ``_key``; bools that are True/False; plain ints) looks its key (era, the routine's tag,
    those arguments) up in ``_MEMO`` first, so that 1 and True, or 4 and 4.0, never share
    an entry; any other call runs the full checks.  Only a successful computation is
    stored, so an input the checks refuse is refused on every call.  Stored results are
    immutable (ints, frozen CpuRoles, tuples).  The memo is module state, not the era's,
    so object snapshots (``_check.snapshot``) never see it."""
    if len(_MEMO) >= MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = result
    return result


def _memo_on_vcpu(tag: str):
    """Decorate the full-check computation ``fn(era, v)`` of a role routine whose result
    depends on the era and the vCPU state alone: the routine then looks its memo key
    (era, ``tag``, ``v._key``) up first when ``v`` is exactly a VcpuState (see _memo_put)."""
    def wrap(compute):
        def memoized(era, v):
            if era.__class__ is not RoleEra:
                era = get_era(era)
            if v.__class__ is VcpuState:
                key = (era, tag, v._key)
                r = _MEMO.get(key)
                return r if r is not None else _memo_put(key, compute(era, v))
            return compute(era, v)
        return functools.update_wrapper(memoized, compute)
    return wrap


def _vcpu(v, name: str = "v"):
    if not isinstance(v, VcpuState):
        raise InputError(f"{name}={v!r}: expected a VcpuState, got {type(v).__name__}")
    return v


# ---------------------------------------------------------------------------
# Role computations
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VcpuState:
    """The vCPU registers the role computations read (KVM_MMU_{CR0,CR4,EFER}_ROLE_BITS)."""

    cr0_pg: bool = True
    cr0_wp: bool = True
    cr4_pae: bool = True
    cr4_pse: bool = False
    cr4_pke: bool = False
    cr4_smep: bool = False
    cr4_smap: bool = False
    cr4_la57: bool = False
    efer_lma: bool = True
    efer_nx: bool = True
    smm: bool = False
    guest_mode: bool = False
    maxphyaddr: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "maxphyaddr":
                object.__setattr__(self, f.name, in_range(
                    "maxphyaddr", v, 0, 52, "0 (not modelled) or CPUID.80000008H:EAX[7:0]"))
            else:
                object.__setattr__(self, f.name, boolean(f.name, v))
        self._key           # computed once, with the checked values

    @functools.cached_property
    def _key(self) -> int:
        """Not a field: the checked values as one int (6 bits each), the role memo's key."""
        key = 0
        for f in dataclasses.fields(self):
            key = key << 6 | getattr(self, f.name)
        return key

    @classmethod
    def long_mode(cls, **kw) -> "VcpuState":
        return cls(**kw)

    @classmethod
    def pae(cls, **kw) -> "VcpuState":
        return cls(**{"efer_lma": False, **kw})

    @classmethod
    def nonpae32(cls, **kw) -> "VcpuState":
        return cls(**{"efer_lma": False, "cr4_pae": False, "efer_nx": False, **kw})

    @classmethod
    def real_mode(cls, **kw) -> "VcpuState":
        return cls(**{"cr0_pg": False, "cr0_wp": False, "cr4_pae": False, "efer_lma": False,
                      "efer_nx": False, **kw})

    def replace(self, **kw) -> "VcpuState":
        return replace(self, **kw)

    @property
    def paging_level(self) -> int:
        """Guest paging level: 0 without paging, 2 (32-bit), 3 (PAE), 4, 5."""
        if not self.cr0_pg:
            return 0
        if self.efer_lma:
            return 5 if self.cr4_la57 else 4
        return 3 if self.cr4_pae else 2


def _b4_for(era: RoleEra, eight: bool) -> dict:
    """Bit 4 for a page with 8-byte (or 4-byte) gptes, in the era's sense."""
    if era.bit4 == "has_4_byte_gpte":
        return {era.bit4: 0 if eight else 1}
    return {era.bit4: 1 if eight else 0}


def _pk(era, **f) -> int:
    f = {k: int(v) for k, v in f.items() if k in era.base.index}
    return era.base.pack(f)


def kvm_calc_mmu_role_ext(era, v: VcpuState, execonly: bool = False) -> int:
    """The era's extended role for vCPU state ``v`` (kvm_calc_mmu_role_ext / kvm_calc_cpu_role)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if v.__class__ is VcpuState and (execonly is True or execonly is False):
        key = (era, "ext", v._key, execonly)
        r = _MEMO.get(key)
        return r if r is not None else _memo_put(key, _kvm_calc_mmu_role_ext(era, v, execonly))
    return _kvm_calc_mmu_role_ext(era, v, execonly)


def _kvm_calc_mmu_role_ext(era, v: VcpuState, execonly: bool = False) -> int:
    """The computation of :func:`kvm_calc_mmu_role_ext` (full checks, no memo)."""
    era = get_era(era)
    v = _vcpu(v)
    execonly = boolean("execonly", execonly)
    _require(era, era.ext is not None, "kvm_mmu_extended_role")
    names = era.ext.index
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
    return era.ext.pack({k: int(x) for k, x in vals.items() if k in names})


@_memo_on_vcpu("cpu")
def kvm_calc_cpu_role(era, v: VcpuState) -> CpuRole:
    """kvm_calc_cpu_role (v5.19+): the guest's paging mode as a role (level 0 = CR0.PG=0)."""
    era = get_era(era)
    v = _vcpu(v)
    _require(era, era.has_cpu_role, "kvm_calc_cpu_role (v5.19+)")
    f = dict(access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode)
    if not v.cr0_pg:
        f["direct"] = 1
    else:
        f.update({era.nx: v.efer_nx, "cr0_wp": v.cr0_wp,
                  "smep_andnot_wp": v.cr4_smep and not v.cr0_wp,
                  "smap_andnot_wp": v.cr4_smap and not v.cr0_wp,
                  "has_4_byte_gpte": not v.cr4_pae, "level": v.paging_level})
    return CpuRole(era, _pk(era, **f), kvm_calc_mmu_role_ext(era, v))


def _role_common(era: RoleEra, v: VcpuState) -> dict:
    """kvm_calc_mmu_role_common (v4.20-v5.18): access, nxe, cr0_wp, smm, guest_mode
    (+ cr4_pae in v4.20/v5.0)."""
    f = {"access": ACC_ALL, era.nx: v.efer_nx, "cr0_wp": v.cr0_wp, "smm": v.smm,
         "guest_mode": v.guest_mode}
    if era.common_sets_pae:
        f["cr4_pae"] = v.cr4_pae
    return f


def kvm_calc_tdp_mmu_root_page_role(era, v: VcpuState, tdp_level: int = 4,
                                    ad_enabled: bool = True, mirror: bool = False) -> int:
    """The TDP (EPT/NPT for L1) root role word that root lookups compare against."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if v.__class__ is VcpuState and tdp_level.__class__ is int and (
            ad_enabled is True or ad_enabled is False) and (mirror is True or mirror is False):
        key = (era, "tdp", v._key, tdp_level, ad_enabled, mirror)
        r = _MEMO.get(key)
        return r if r is not None else _memo_put(
            key, _kvm_calc_tdp_mmu_root_page_role(era, v, tdp_level, ad_enabled, mirror))
    return _kvm_calc_tdp_mmu_root_page_role(era, v, tdp_level, ad_enabled, mirror)


def _kvm_calc_tdp_mmu_root_page_role(era, v: VcpuState, tdp_level: int = 4,
                                    ad_enabled: bool = True, mirror: bool = False) -> int:
    """The computation of :func:`kvm_calc_tdp_mmu_root_page_role` (full checks, no memo)."""
    era = get_era(era)
    v = _vcpu(v)
    tdp_level = _tdp_level(tdp_level)
    ad_enabled = boolean("ad_enabled", ad_enabled)
    mirror = boolean("mirror", mirror)
    f = dict(level=tdp_level, direct=1, access=ACC_ALL, smm=v.smm, guest_mode=v.guest_mode,
             ad_disabled=not ad_enabled)
    if era.forced_wp_nx:
        f.update({"cr0_wp": 1, era.nx: 1})
    elif era.has_role_common:
        f.update(_role_common(era, v))
    if era.direct_bit4 == 1 or era.bit4 == "has_4_byte_gpte":
        f.update(_b4_for(era, True))
    if mirror:
        _require(era, era.has("is_mirror"), "is_mirror")
        f["is_mirror"] = 1
    return _pk(era, **f)


@_memo_on_vcpu("shadow")
def kvm_calc_shadow_mmu_root_page_role(era, v: VcpuState) -> int:
    """The shadow-paging (TDP off) root role for vCPU state ``v``."""
    era = get_era(era)
    v = _vcpu(v)
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


def quadrant_for_gaddr(gaddr: int, level: int) -> int:
    """The 2019 kvm_mmu_get_page quadrant: (gaddr >> (12 + 9*level)) & ((1 << level) - 1)."""
    if not (gaddr.__class__ is int and 0 <= gaddr < _U64_END):
        gaddr = uint("gaddr", gaddr)
    if not (level.__class__ is int and SP_LEVEL_MIN <= level <= SP_LEVEL_MAX):
        level = _sp_level(level)
    return (gaddr >> (12 + 9 * level)) & ((1 << ((10 - 9) * level)) - 1)


def kvm_mmu_get_page_role(era, base_word: int, *, level: int, direct: bool, access: int = ACC_ALL,
                          gaddr: int = 0, guest_32bit: bool | None = None) -> int:
    """The role ``kvm_mmu_get_page()`` (v4.x-v5.x) stores for a new SP built from the MMU's
    base role: level/direct/access set, bit 4 forced on direct pages (era rule), quadrant
    from ``gaddr`` for 32-bit non-PAE guests."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if base_word.__class__ is int and level.__class__ is int and (direct is True or direct is False) \
            and access.__class__ is int and gaddr.__class__ is int and (
                guest_32bit is None or guest_32bit is True or guest_32bit is False):
        key = (era, "get_page", base_word, level, direct, access, gaddr, guest_32bit)
        r = _MEMO.get(key)
        return r if r is not None else _memo_put(key, _kvm_mmu_get_page_role(
            era, base_word, level=level, direct=direct, access=access, gaddr=gaddr, guest_32bit=guest_32bit))
    return _kvm_mmu_get_page_role(era, base_word, level=level, direct=direct, access=access, gaddr=gaddr,
                                  guest_32bit=guest_32bit)


def _kvm_mmu_get_page_role(era, base_word: int, *, level: int, direct: bool, access: int = ACC_ALL,
                          gaddr: int = 0, guest_32bit: bool | None = None) -> int:
    """The computation of :func:`kvm_mmu_get_page_role` (full checks, no memo)."""
    era = get_era(era)
    base_word = uint("base_word", base_word, 32)
    level = _sp_level(level)
    direct = boolean("direct", direct)
    access = in_range("access", access, 0, 7, "ACC_* bits")
    gaddr = uint("gaddr", gaddr)
    guest_32bit = opt_boolean("guest_32bit", guest_32bit)
    f = era.base.unpack(base_word & (MMU_BASE_ROLE_MASK if era.masks_mmu_role else 0xFFFFFFFF))
    f.update(level=level, direct=int(direct), access=access, quadrant=0, invalid=0)
    if direct and era.direct_bit4 is not None:
        f[era.bit4] = era.direct_bit4
    if guest_32bit is None:
        guest_32bit = bool(f[era.bit4]) if era.bit4 == "has_4_byte_gpte" else False
    if guest_32bit:
        f["quadrant"] = quadrant_for_gaddr(gaddr, level)
    return era.base.pack(f)


def shadow_root_sp_roles(era, v: VcpuState) -> list:
    """The root SP role words that shadow paging allocates: one 4/5-level root, or four PAE
    page directories (level 2) with quadrant i for a 32-bit non-PAE guest."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if v.__class__ is VcpuState:
        key = (era, "sp_roles", v._key)
        r = _MEMO.get(key)
        if r is None:
            r = _memo_put(key, tuple(_shadow_root_sp_roles(era, v)))
        return list(r)
    return _shadow_root_sp_roles(era, v)


def _shadow_root_sp_roles(era, v: VcpuState) -> list:
    """The computation of :func:`shadow_root_sp_roles` (full checks, no memo)."""
    era = get_era(era)
    root = kvm_calc_shadow_mmu_root_page_role(era, _vcpu(v))
    if v.cr0_pg and v.efer_lma:
        return [root]
    out = []
    for i in range(4):
        out.append(kvm_mmu_get_page_role(era, root, level=PT32_ROOT_LEVEL, direct=not v.cr0_pg,
                                         gaddr=i << 30, guest_32bit=v.cr0_pg and not v.cr4_pae))
    return out


def kvm_calc_shadow_ept_root_page_role(era, l1: VcpuState, accessed_dirty: bool = True,
                                       execonly: bool = False, level: int = 4,
                                       tdp_ad_enabled: bool = True) -> CpuRole:
    """The nested-EPT (shadow EPT) root role for an L1 in state ``l1`` (era rules, sec. 2.5)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if l1.__class__ is VcpuState and level.__class__ is int and (
            accessed_dirty is True or accessed_dirty is False) and (execonly is True or execonly is False) \
            and (tdp_ad_enabled is True or tdp_ad_enabled is False):
        key = (era, "ept", l1._key, accessed_dirty, execonly, level, tdp_ad_enabled)
        r = _MEMO.get(key)
        return r if r is not None else _memo_put(key, _kvm_calc_shadow_ept_root_page_role(
            era, l1, accessed_dirty, execonly, level, tdp_ad_enabled))
    return _kvm_calc_shadow_ept_root_page_role(era, l1, accessed_dirty, execonly, level, tdp_ad_enabled)


def _kvm_calc_shadow_ept_root_page_role(era, l1: VcpuState, accessed_dirty: bool = True,
                                       execonly: bool = False, level: int = 4,
                                       tdp_ad_enabled: bool = True) -> CpuRole:
    """The computation of :func:`kvm_calc_shadow_ept_root_page_role` (full checks, no memo)."""
    era = get_era(era)
    l1 = _vcpu(l1, "l1")
    accessed_dirty = boolean("accessed_dirty", accessed_dirty)
    execonly = boolean("execonly", execonly)
    level = _tdp_level(level, "level")
    tdp_ad_enabled = boolean("tdp_ad_enabled", tdp_ad_enabled)
    _require(era, era.ept_rule is not None, "kvm_calc_shadow_ept_root_page_role (modelled v4.20+)")
    if era.ept_rule == EptRule.INHERIT:
        l1b = kvm_calc_tdp_mmu_root_page_role(era, l1.replace(guest_mode=False),
                                              ad_enabled=tdp_ad_enabled)
        f = era.base.unpack(l1b & MMU_BASE_ROLE_MASK)
        f.update(level=4, direct=0, ad_disabled=int(not accessed_dirty), guest_mode=1,
                 access=ACC_ALL)
        base = era.base.pack(f)
        ext = kvm_calc_mmu_role_ext(era, l1, execonly)
    elif era.ept_rule == EptRule.MARKER:
        base = _pk(era, smm=l1.smm, level=4, gpte_is_8_bytes=1, direct=0,
                   ad_disabled=not accessed_dirty, guest_mode=1, access=ACC_ALL, cr0_wp=1,
                   smap_andnot_wp=1)
        ext = kvm_calc_mmu_role_ext(era, l1, execonly)
    else:
        f = dict(level=level, direct=0, ad_disabled=not accessed_dirty, guest_mode=1,
                 access=ACC_ALL)
        f.update(_b4_for(era, True))
        base = _pk(era, **f)
        ext = era.ext.pack({"valid": 1, "execonly": int(execonly)})
    return CpuRole(era, base, ext)


def kvm_calc_shadow_npt_root_page_role(era, l1_npt: VcpuState, tdp_level: int = 4) -> int:
    """Nested NPT (SVM L1 with NPT): L1's NPT paging registers as a guest-mode shadow root,
    at the host TDP level; passthrough when a 5-level host shadows a 4-level L1 (v5.19+)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if l1_npt.__class__ is VcpuState and tdp_level.__class__ is int:
        key = (era, "npt", l1_npt._key, tdp_level)
        r = _MEMO.get(key)
        return r if r is not None else _memo_put(
            key, _kvm_calc_shadow_npt_root_page_role(era, l1_npt, tdp_level))
    return _kvm_calc_shadow_npt_root_page_role(era, l1_npt, tdp_level)


def _kvm_calc_shadow_npt_root_page_role(era, l1_npt: VcpuState, tdp_level: int = 4) -> int:
    """The computation of :func:`kvm_calc_shadow_npt_root_page_role` (full checks, no memo)."""
    era = get_era(era)
    tdp_level = _tdp_level(tdp_level)
    v = _vcpu(l1_npt, "l1_npt").replace(guest_mode=True, cr4_pke=False)
    if era.has_cpu_role:
        f = era.base.unpack(kvm_calc_cpu_role(era, v).base)
        f["level"] = tdp_level
        if tdp_level == 5 and v.paging_level == 4:
            f["passthrough"] = 1
        return era.base.pack(f)
    f = era.base.unpack(kvm_calc_shadow_mmu_root_page_role(era, v))
    f["level"] = tdp_level
    return era.base.pack(f)


def kvm_mmu_child_role(era, parent_word: int, *, direct: bool, access: int, index: int,
                       guest_32bit: bool | None = None) -> int:
    """Child SP role derived from the parent SP (kvm_mmu_child_role, ~v6.0+; equal to the
    older kvm_mmu_get_page results): level - 1, access, direct, passthrough = 0, and for
    4-byte gptes quadrant = index & 1 (bit 21 of the address).  Older eras also apply the
    direct-page bit-4 rule."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if parent_word.__class__ is int and (direct is True or direct is False) and access.__class__ is int \
            and index.__class__ is int and (guest_32bit is None or guest_32bit is True or guest_32bit is False):
        key = (era, "child", parent_word, direct, access, index, guest_32bit)
        r = _MEMO.get(key)
        return r if r is not None else _memo_put(key, _kvm_mmu_child_role(
            era, parent_word, direct=direct, access=access, index=index, guest_32bit=guest_32bit))
    return _kvm_mmu_child_role(era, parent_word, direct=direct, access=access, index=index,
                               guest_32bit=guest_32bit)


def _kvm_mmu_child_role(era, parent_word: int, *, direct: bool, access: int, index: int,
                       guest_32bit: bool | None = None) -> int:
    """The computation of :func:`kvm_mmu_child_role` (full checks, no memo)."""
    era = get_era(era)
    parent_word = uint("parent_word", parent_word, 32)
    direct = boolean("direct", direct)
    uint("index", index, 9)
    access = in_range("access", access, 0, 7, "ACC_* bits", err=RoleFieldError)
    guest_32bit = opt_boolean("guest_32bit", guest_32bit)
    f = era.base.unpack(parent_word)
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
    return era.base.pack(f)


def tdp_mmu_child_role(era, parent_word: int) -> int:
    """tdp_mmu_init_child_sp: the parent role with level - 1 and nothing else."""
    if era.__class__ is not RoleEra:
        get_era(era)
    if not (parent_word.__class__ is int and 0 <= parent_word < 1 << 32):
        parent_word = uint("parent_word", parent_word, 32)
    lvl = parent_word & 0xF
    if lvl <= 1:
        raise InputError(f"parent_word={parent_word:#x}: level {lvl}: a level-1 SP (or level 0) "
                         "has no child SPs")
    return (parent_word & ~0xF) | (lvl - 1)
