"""Role computations: ``VcpuState`` (the role-relevant vCPU registers) and the kernel's
``kvm_calc_*`` / ``kvm_mmu_get_page_role`` / child-role rules per era."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from .._batch import uint
from .._memo import bounded_put
from .._check import boolean, in_range, opt_boolean
from ..errors import InputError
from .eras import (_ABSENT, ACC_ALL, EptRule, get_era, MMU_BASE_ROLE_MASK, PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL, PT64_ROOT_4LEVEL, _require,
                   RoleEra, RoleFieldError, SP_LEVEL_MAX, SP_LEVEL_MIN, _sp_level, _tdp_level)
from .packing import _cpu_role, CpuRole

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
    return bounded_put(_MEMO, MEMO_MAX, key, result)


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

    if TYPE_CHECKING:       # not a field (nor in __dataclass_fields__): set per instance by __init__
        _key: ClassVar[int]

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
    # Not a field: ``_key``, set by __init__, the checked values as one int (a byte each in
    # declaration order, maxphyaddr lowest), the role memo's key.

    def __init__(self, cr0_pg=True, cr0_wp=True, cr4_pae=True, cr4_pse=False, cr4_pke=False,
                 cr4_smep=False, cr4_smap=False, cr4_la57=False, efer_lma=True, efer_nx=True,
                 smm=False, guest_mode=False, maxphyaddr=0):
        """The dataclass fields' defaults (tests/test_role_fastpaths.py holds them equal).
        Exact bools and an in-range int are taken as they are; anything else goes through
        ``boolean`` / ``in_range`` field by field, in declaration order."""
        vals = (cr0_pg, cr0_wp, cr4_pae, cr4_pse, cr4_pke, cr4_smep, cr4_smap, cr4_la57, efer_lma,
                efer_nx, smm, guest_mode, maxphyaddr)
        if (cr0_pg.__class__ is cr0_wp.__class__ is cr4_pae.__class__ is cr4_pse.__class__
                is cr4_pke.__class__ is cr4_smep.__class__ is cr4_smap.__class__ is cr4_la57.__class__
                is efer_lma.__class__ is efer_nx.__class__ is smm.__class__ is guest_mode.__class__
                is bool and maxphyaddr.__class__ is int and 0 <= maxphyaddr <= 52):
            d = {"cr0_pg": cr0_pg, "cr0_wp": cr0_wp, "cr4_pae": cr4_pae, "cr4_pse": cr4_pse,
                 "cr4_pke": cr4_pke, "cr4_smep": cr4_smep, "cr4_smap": cr4_smap, "cr4_la57": cr4_la57,
                 "efer_lma": efer_lma, "efer_nx": efer_nx, "smm": smm, "guest_mode": guest_mode,
                 "maxphyaddr": maxphyaddr, "_key": int.from_bytes(bytes(vals), "big")}
        else:
            vals = tuple(boolean(n, v) for n, v in zip(_VS_BOOLS, vals)) + (in_range(
                "maxphyaddr", maxphyaddr, 0, 52, "0 (not modelled) or CPUID.80000008H:EAX[7:0]"),)
            d = dict(zip(_VS_NAMES, vals), _key=int.from_bytes(bytes(vals), "big"))
        _setattr(self, "__dict__", d)

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
        """``dataclasses.replace``; exact bools for the flags of an exact VcpuState are set
        here, in a copy of the instance state with its ``_key`` byte updated."""
        if self.__class__ is VcpuState:
            d = self.__dict__.copy()
            key = d["_key"]
            for k, v in kw.items():
                sh = _VS_KEY_SHIFT.get(k)
                if sh is None or v.__class__ is not bool:
                    break
                d[k] = v
                key = key & ~(0xFF << sh) | v << sh
            else:
                d["_key"] = key
                new = _new(VcpuState)
                _setattr(new, "__dict__", d)
                return new
        return replace(self, **kw)

    @property
    def paging_level(self) -> int:
        """Guest paging level: 0 without paging, 2 (32-bit), 3 (PAE), 4, 5."""
        if not self.cr0_pg:
            return 0
        if self.efer_lma:
            return 5 if self.cr4_la57 else 4
        return 3 if self.cr4_pae else 2


_VS_NAMES = tuple(f.name for f in dataclasses.fields(VcpuState))
_VS_BOOLS = _VS_NAMES[:-1]
#: VcpuState._key: the shift of each flag's byte.
_VS_KEY_SHIFT = {n: 8 * (len(_VS_BOOLS) - i) for i, n in enumerate(_VS_BOOLS)}
_new, _setattr = object.__new__, object.__setattr__


def _b4_for(era: RoleEra, eight: bool) -> dict:
    """Bit 4 for a page with 8-byte (or 4-byte) gptes, in the era's sense."""
    b = _eight(era)
    return {era.bit4: b if eight else b ^ 1}


_W32 = 0xFFFFFFFF
_HAS4 = "has_4_byte_gpte"


@functools.lru_cache(maxsize=None)
def _fmask(era: RoleEra, *names: str) -> int:
    """The bits of the era's base-role fields ``names`` (those the era has)."""
    return sum(era.base.field(n).mask for n in names if n in era.base.index)


def _eight(era: RoleEra) -> int:
    """Bit 4 of a page with 8-byte gptes, in the era's sense (:func:`_b4_for`)."""
    return 0 if era.bit4 == _HAS4 else 1


def _tdp_mirror_ok(era: RoleEra, mirror: bool) -> bool:
    return mirror is False or mirror is True and era.has("is_mirror")


# The word builders below take checked inputs.  Each sets the fields of one kernel rule with
# the era's shifts (``era._sh`` / ``era._xsh``); a field the era lacks lands above bit 31 and
# the final ``& _W32`` drops it.  ``gm`` is the guest_mode bit the rule stores.

def _ext_word(era: RoleEra, v: VcpuState, execonly: bool) -> int:
    """kvm_calc_mmu_role_ext / the ext of kvm_calc_cpu_role: from v5.14 (ext.efer_lma) the CR4
    and EFER bits are gated by CR0.PG (and EFER.LMA), before they are the raw register bits."""
    x = era._xsh
    pg = v.cr0_pg
    if x.efer_lma != _ABSENT:
        lma = pg and v.efer_lma
        w = (1 << x.valid | execonly << x.execonly | pg << x.cr0_pg | (pg and v.cr4_pae) << x.cr4_pae
             | (pg and v.cr4_pse) << x.cr4_pse | (lma and v.cr4_pke) << x.cr4_pke
             | (pg and v.cr4_smap) << x.cr4_smap | (pg and v.cr4_smep) << x.cr4_smep
             | (lma and v.cr4_la57) << x.cr4_la57 | lma << x.efer_lma)
    else:
        w = (1 << x.valid | execonly << x.execonly | pg << x.cr0_pg | v.cr4_pae << x.cr4_pae
             | v.cr4_pse << x.cr4_pse | v.cr4_pke << x.cr4_pke | v.cr4_smap << x.cr4_smap
             | v.cr4_smep << x.cr4_smep | v.cr4_la57 << x.cr4_la57 | v.maxphyaddr << x.maxphyaddr)
    return w & _W32


def _cpu_base(era: RoleEra, v: VcpuState, gm: bool) -> int:
    """kvm_calc_cpu_role's base (v5.19+): level 0 and direct without paging."""
    s = era._sh
    w = ACC_ALL << s.access | v.smm << s.smm | gm << s.guest_mode
    if not v.cr0_pg:
        return (w | 1 << s.direct) & _W32
    wp = v.cr0_wp
    return (w | v.efer_nx << s.nx | wp << s.cr0_wp | (v.cr4_smep and not wp) << s.smep_andnot_wp
            | (v.cr4_smap and not wp) << s.smap_andnot_wp | (not v.cr4_pae) << s.bit4
            | v.paging_level << s.level) & _W32


def _tdp_word(era: RoleEra, v: VcpuState, tdp_level: int, ad_enabled: bool, mirror: bool, gm: bool) -> int:
    """kvm_calc_tdp_mmu_root_page_role: direct, forced cr0_wp/nx (v5.19+) or
    kvm_calc_mmu_role_common's (v4.20-v5.18), bit 4 of an 8-byte-gpte page (v5.1+)."""
    s = era._sh
    w = (tdp_level << s.level | 1 << s.direct | ACC_ALL << s.access | v.smm << s.smm
         | gm << s.guest_mode | (not ad_enabled) << s.ad_disabled | mirror << s.is_mirror)
    if era.forced_wp_nx:
        w |= 1 << s.cr0_wp | 1 << s.nx
    elif era.has_role_common:
        w |= v.efer_nx << s.nx | v.cr0_wp << s.cr0_wp
        if era.common_sets_pae:
            w |= v.cr4_pae << s.bit4
    if era.direct_bit4 == 1 or era.bit4 == _HAS4:
        w = w & ~(1 << s.bit4) | _eight(era) << s.bit4
    return w & _W32


def _shadow_word(era: RoleEra, v: VcpuState, gm: bool) -> int:
    """kvm_calc_shadow_mmu_root_page_role: at least a PAE root; v5.19+ forces efer_nx and
    clears the CR0/CR4 bits without paging."""
    s = era._sh
    pg, wp = v.cr0_pg, v.cr0_wp
    lvl = max(v.paging_level, PT32E_ROOT_LEVEL) if pg else PT32E_ROOT_LEVEL
    w = ACC_ALL << s.access | v.smm << s.smm | gm << s.guest_mode | lvl << s.level
    if era.has_cpu_role:
        if pg:
            w |= (wp << s.cr0_wp | (v.cr4_smep and not wp) << s.smep_andnot_wp
                  | (v.cr4_smap and not wp) << s.smap_andnot_wp | (not v.cr4_pae) << s.bit4)
        else:
            w |= 1 << s.direct
        return (w | 1 << s.nx) & _W32
    b4 = (pg and not v.cr4_pae) if era.bit4 == _HAS4 else v.cr4_pae
    return (w | (not pg) << s.direct | (v.cr4_smep and not wp) << s.smep_andnot_wp
            | (v.cr4_smap and not wp) << s.smap_andnot_wp | wp << s.cr0_wp | v.efer_nx << s.nx
            | b4 << s.bit4) & _W32


def _npt_word(era: RoleEra, v: VcpuState, tdp_level: int) -> int:
    """kvm_init_shadow_npt_mmu: L1's NPT registers in guest mode at the host TDP level."""
    s = era._sh
    if era.has_cpu_role:
        w = _cpu_base(era, v, True) & ~_fmask(era, "level") | tdp_level << s.level
        if tdp_level == 5 and v.paging_level == 4:
            w |= 1 << s.passthrough
        return w
    return _shadow_word(era, v, True) & ~_fmask(era, "level") | tdp_level << s.level


def _get_page_word(era: RoleEra, base_word: int, level: int, direct: bool, access: int, gaddr: int,
                   guest_32bit: bool | None) -> int:
    """kvm_mmu_get_page's role: see :func:`kvm_mmu_get_page_role`."""
    s = era._sh
    w = base_word & (MMU_BASE_ROLE_MASK if era.masks_mmu_role else _W32) & era.base.used_mask
    w = (w & ~_fmask(era, "level", "quadrant", "direct", "access", "invalid")
         | level << s.level | direct << s.direct | access << s.access)
    if direct and era.direct_bit4 is not None:
        w = w & ~(1 << s.bit4) | era.direct_bit4 << s.bit4
    if guest_32bit is None:
        guest_32bit = era.bit4 == _HAS4 and bool(w >> s.bit4 & 1)
    if guest_32bit:
        q = quadrant_for_gaddr(gaddr, level)
        if q << s.quadrant & ~_fmask(era, "quadrant"):
            raise RoleFieldError(f"gaddr={gaddr:#x}: quadrant {q} at level {level} does not fit "
                                 "role.quadrant (2 bits): 4-byte-gpte guests have shadow pages of "
                                 "levels 1-2 only")
        w |= q << s.quadrant
    return w


def kvm_calc_mmu_role_ext(era, v: VcpuState, execonly: bool = False) -> int:
    """The era's extended role for vCPU state ``v`` (kvm_calc_mmu_role_ext / kvm_calc_cpu_role)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if v.__class__ is VcpuState and (execonly is True or execonly is False):
        key = (era, "ext", v._key, execonly)
        r = _MEMO.get(key)
        if r is not None:
            return r
        if era.ext is not None:
            return _memo_put(key, _ext_word(era, v, execonly))
    return _kvm_calc_mmu_role_ext(era, v, execonly)


def _kvm_calc_mmu_role_ext(era, v: VcpuState, execonly: bool = False) -> int:
    """The computation of :func:`kvm_calc_mmu_role_ext` with the full checks (no memo)."""
    era = get_era(era)
    v = _vcpu(v)
    execonly = boolean("execonly", execonly)
    _require(era, era.ext is not None, "kvm_mmu_extended_role")
    return _ext_word(era, v, execonly)


def kvm_calc_cpu_role(era, v: VcpuState) -> CpuRole:
    """kvm_calc_cpu_role (v5.19+): the guest's paging mode as a role (level 0 = CR0.PG=0)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if v.__class__ is VcpuState:
        key = (era, "cpu", v._key)
        r = _MEMO.get(key)
        if r is not None:
            return r
        if era.has_cpu_role:
            return _memo_put(key, _cpu_role(era, _cpu_base(era, v, v.guest_mode), _ext_word(era, v, False)))
    return _kvm_calc_cpu_role(era, v)


def _kvm_calc_cpu_role(era, v: VcpuState) -> CpuRole:
    """The computation of :func:`kvm_calc_cpu_role` with the full checks (no memo)."""
    era = get_era(era)
    v = _vcpu(v)
    _require(era, era.has_cpu_role, "kvm_calc_cpu_role (v5.19+)")
    return CpuRole(era, _cpu_base(era, v, v.guest_mode), _ext_word(era, v, False))


def kvm_calc_tdp_mmu_root_page_role(era, v: VcpuState, tdp_level: int = 4,
                                    ad_enabled: bool = True, mirror: bool = False) -> int:
    """The TDP (EPT/NPT for L1) root role word that root lookups compare against."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if v.__class__ is VcpuState and tdp_level.__class__ is int and (
            ad_enabled is True or ad_enabled is False) and (mirror is True or mirror is False):
        key = (era, "tdp", v._key, tdp_level, ad_enabled, mirror)
        r = _MEMO.get(key)
        if r is not None:
            return r
        if 4 <= tdp_level <= 5 and _tdp_mirror_ok(era, mirror):
            return _memo_put(key, _tdp_word(era, v, tdp_level, ad_enabled, mirror, v.guest_mode))
    return _kvm_calc_tdp_mmu_root_page_role(era, v, tdp_level, ad_enabled, mirror)


def _kvm_calc_tdp_mmu_root_page_role(era, v: VcpuState, tdp_level: int = 4,
                                    ad_enabled: bool = True, mirror: bool = False) -> int:
    """The computation of :func:`kvm_calc_tdp_mmu_root_page_role` with the full checks (no memo)."""
    era = get_era(era)
    v = _vcpu(v)
    tdp_level = _tdp_level(tdp_level)
    ad_enabled = boolean("ad_enabled", ad_enabled)
    mirror = boolean("mirror", mirror)
    if mirror:
        _require(era, era.has("is_mirror"), "is_mirror")
    return _tdp_word(era, v, tdp_level, ad_enabled, mirror, v.guest_mode)


@_memo_on_vcpu("shadow")
def kvm_calc_shadow_mmu_root_page_role(era, v: VcpuState) -> int:
    """The shadow-paging (TDP off) root role for vCPU state ``v``."""
    return _shadow_word(era, _vcpu(v), v.guest_mode)


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
        if r is not None:
            return r
        if 0 <= base_word <= _W32 and SP_LEVEL_MIN <= level <= SP_LEVEL_MAX and 0 <= access <= ACC_ALL \
                and 0 <= gaddr < _U64_END:
            return _memo_put(key, _get_page_word(era, base_word, level, direct, access, gaddr, guest_32bit))
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
    return _get_page_word(era, base_word, level, direct, access, gaddr, guest_32bit)


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
    root = _shadow_word(era, _vcpu(v), v.guest_mode)
    if v.cr0_pg and v.efer_lma:
        return [root]
    g32 = v.cr0_pg and not v.cr4_pae
    w = _get_page_word(era, root, PT32_ROOT_LEVEL, not v.cr0_pg, ACC_ALL, 0, g32)     # quadrant 0
    if not g32:
        return [w] * 4
    return [w | quadrant_for_gaddr(i << 30, PT32_ROOT_LEVEL) << era._sh.quadrant for i in range(4)]


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
        if r is not None:
            return r
        if 4 <= level <= 5 and era.ept_rule is not None:
            return _memo_put(key, _ept_role(era, l1, accessed_dirty, execonly, level, tdp_ad_enabled))
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
    return _ept_role(era, l1, accessed_dirty, execonly, level, tdp_ad_enabled)


def _ept_role(era: RoleEra, l1: VcpuState, accessed_dirty: bool, execonly: bool, level: int,
              tdp_ad_enabled: bool) -> CpuRole:
    """kvm_calc_shadow_ept_root_page_role per the era's :class:`EptRule`."""
    s = era._sh
    gm_ad = 1 << s.guest_mode | (not accessed_dirty) << s.ad_disabled | ACC_ALL << s.access
    if era.ept_rule == EptRule.INHERIT:         # L1's TDP base role (no guest mode), masked
        w = _tdp_word(era, l1, PT64_ROOT_4LEVEL, tdp_ad_enabled, False, False) & MMU_BASE_ROLE_MASK
        base = (w & ~_fmask(era, "level", "direct", "ad_disabled", "guest_mode", "access")
                | PT64_ROOT_4LEVEL << s.level | gm_ad)
        ext = _ext_word(era, l1, execonly)
    elif era.ept_rule == EptRule.MARKER:        # is_ept_sp's marker: cr0_wp=1 + smap_andnot_wp=1
        base = (l1.smm << s.smm | PT64_ROOT_4LEVEL << s.level | 1 << s.bit4 | gm_ad | 1 << s.cr0_wp
                | 1 << s.smap_andnot_wp) & _W32
        ext = _ext_word(era, l1, execonly)
    else:
        base = (level << s.level | gm_ad | _eight(era) << s.bit4) & _W32
        ext = 1 << era._xsh.valid | execonly << era._xsh.execonly
    return _cpu_role(era, base, ext)


def kvm_calc_shadow_npt_root_page_role(era, l1_npt: VcpuState, tdp_level: int = 4) -> int:
    """Nested NPT (SVM L1 with NPT): L1's NPT paging registers as a guest-mode shadow root,
    at the host TDP level; passthrough when a 5-level host shadows a 4-level L1 (v5.19+)."""
    if era.__class__ is not RoleEra:
        era = get_era(era)
    if l1_npt.__class__ is VcpuState and tdp_level.__class__ is int:
        key = (era, "npt", l1_npt._key, tdp_level)
        r = _MEMO.get(key)
        if r is not None:
            return r
        if 4 <= tdp_level <= 5:
            return _memo_put(key, _npt_word(era, l1_npt, tdp_level))
    return _kvm_calc_shadow_npt_root_page_role(era, l1_npt, tdp_level)


def _kvm_calc_shadow_npt_root_page_role(era, l1_npt: VcpuState, tdp_level: int = 4) -> int:
    """The computation of :func:`kvm_calc_shadow_npt_root_page_role` (full checks, no memo)."""
    era = get_era(era)
    tdp_level = _tdp_level(tdp_level)
    return _npt_word(era, _vcpu(l1_npt, "l1_npt"), tdp_level)


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
        if r is not None:
            return r
        if 0 <= parent_word <= _W32 and 0 <= access <= ACC_ALL and 0 <= index < 512:
            return _memo_put(key, _child_word(era, parent_word, direct, access, index, guest_32bit))
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
    return _child_word(era, parent_word, direct, access, index, guest_32bit)


def _child_word(era: RoleEra, parent_word: int, direct: bool, access: int, index: int,
                guest_32bit: bool | None) -> int:
    """kvm_mmu_child_role's word: see :func:`kvm_mmu_child_role`."""
    s = era._sh
    w = parent_word & era.base.used_mask
    lvl = (w & _fmask(era, "level")) >> s.level
    if lvl <= 1:
        raise InputError(f"parent_word={parent_word:#x}: level {lvl}: a level-1 SP (or "
                         "level 0) has no child SPs")
    w = (w & ~_fmask(era, "level", "access", "direct", "passthrough")
         | lvl - 1 << s.level | access << s.access | direct << s.direct)
    if guest_32bit is None:
        b4 = w >> s.bit4 & 1
        guest_32bit = bool(b4) if era.bit4 == _HAS4 else not b4 and not direct
    if direct and era.direct_bit4 is not None:
        w = w & ~(1 << s.bit4) | era.direct_bit4 << s.bit4
    if guest_32bit:
        w = w & ~_fmask(era, "quadrant") | (index & 1) << s.quadrant
    return w


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
