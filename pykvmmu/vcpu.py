"""A vCPU's paging state built from raw registers, and the roles KVM derives from it.

:class:`Vcpu` holds raw ``CR0``, ``CR3``, ``CR4``, ``EFER``, ``RFLAGS``, ``PKRU``/``PKRS``, the
CPUID facts the MMU reads (guest MAXPHYADDR, GBPAGES, AMD-compatible vendor), SMM and guest
mode.  It reduces them to :class:`pykvmmu.role.VcpuState` (the KVM_MMU_{CR0,CR4,EFER}_ROLE_BITS,
``vcpu_to_role_regs()``) and hands that to the role computations of :mod:`pykvmmu.role`:
the cpu role (``kvm_calc_cpu_role``) and the root role of shadow paging
(``kvm_init_shadow_mmu``), TDP (``kvm_calc_tdp_mmu_root_page_role``), nested NPT
(``kvm_init_shadow_npt_mmu``) and nested EPT (``kvm_calc_shadow_ept_root_page_role``), per era.
No role bit is packed here: :mod:`pykvmmu.role` is the one definition.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from . import role as R
from ._batch import uint
from . import _check as C
from .errors import InputError

__all__ = [
    "CR0_PE", "CR0_WP", "CR0_PG", "CR4_PSE", "CR4_PAE", "CR4_LA57", "CR4_SMEP", "CR4_SMAP",
    "CR4_PKE", "CR4_PKS", "EFER_LME", "EFER_LMA", "EFER_NX", "RFLAGS_AC", "Vcpu", "EptContext",
    "VcpuStateError",
]

CR0_PE, CR0_WP, CR0_PG = 1 << 0, 1 << 16, 1 << 31
CR4_PSE, CR4_PAE, CR4_LA57 = 1 << 4, 1 << 5, 1 << 12
CR4_SMEP, CR4_SMAP, CR4_PKE, CR4_PKS = 1 << 20, 1 << 21, 1 << 22, 1 << 24
EFER_LME, EFER_LMA, EFER_NX = 1 << 8, 1 << 10, 1 << 11
RFLAGS_AC = 1 << 18

MMU_KINDS = ("shadow", "tdp", "nested-npt")


class VcpuStateError(InputError):
    """Register values that no x86 vCPU can hold together (e.g. EFER.LMA without CR4.PAE)."""


@dataclass(frozen=True)
class Vcpu:
    """Raw registers and CPUID facts of one vCPU (defaults: 4-level long mode, WP, NX)."""

    cr0: int = CR0_PE | CR0_WP | CR0_PG
    cr4: int = CR4_PAE
    efer: int = EFER_LME | EFER_LMA | EFER_NX
    cr3: int = 0
    rflags: int = 0x2
    pkru: int = 0
    pkrs: int = 0
    #: guest CPUID.80000008H:EAX[7:0]; reserved_gpa_bits = bits maxphyaddr..63
    maxphyaddr: int = 48
    #: guest CPUID GBPAGES (1G pages allowed in 4/5-level paging)
    gbpages: bool = True
    #: guest_cpuid_is_amd_compatible(): bit 8 of non-leaf PML4E/PML5E is reserved
    amd: bool = False
    smm: bool = False
    guest_mode: bool = False
    #: PAE only: the four PDPTEs loaded by the last CR3 load (None: read from guest memory)
    pdptrs: tuple | None = None

    def __post_init__(self):
        for name, bits in (("cr0", 64), ("cr4", 64), ("efer", 64), ("cr3", 64), ("rflags", 64),
                           ("pkru", 32), ("pkrs", 32)):
            object.__setattr__(self, name, uint(name, getattr(self, name), bits))
        mpa = uint("maxphyaddr", self.maxphyaddr, 8)
        if not 32 <= mpa <= 52:
            raise InputError(f"maxphyaddr={mpa}: guest MAXPHYADDR is 32..52")
        for name in ("gbpages", "amd", "smm", "guest_mode"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise InputError(f"{name}={v!r}: expected a bool")
        if self.pdptrs is not None:
            if not isinstance(self.pdptrs, tuple) or len(self.pdptrs) != 4:
                raise InputError(f"pdptrs={self.pdptrs!r}: a tuple of the four PDPTEs")
            object.__setattr__(self, "pdptrs", tuple(uint(f"pdptrs[{i}]", p, 64)
                                                     for i, p in enumerate(self.pdptrs)))
        pg, pae, lma = self.cr0 & CR0_PG, self.cr4 & CR4_PAE, self.efer & EFER_LMA
        if pg and not self.cr0 & CR0_PE:
            raise VcpuStateError(f"cr0={self.cr0:#x}: CR0.PG=1 requires CR0.PE=1")
        if lma and not (pg and pae):
            raise VcpuStateError(f"efer={self.efer:#x}: EFER.LMA=1 requires CR0.PG=1 and CR4.PAE=1 "
                                 f"(cr0={self.cr0:#x}, cr4={self.cr4:#x})")
        if lma and not self.efer & EFER_LME:
            raise VcpuStateError(f"efer={self.efer:#x}: EFER.LMA=1 without EFER.LME")
        if pg and pae and self.efer & EFER_LME and not lma:
            raise VcpuStateError(f"efer={self.efer:#x}: CR0.PG=1 with EFER.LME=1 sets EFER.LMA")

    # -- constructors for the usual modes ---------------------------------------------------
    @classmethod
    def long_mode(cls, *, la57: bool = False, **kw) -> "Vcpu":
        kw.setdefault("cr4", CR4_PAE | (CR4_LA57 if la57 else 0))
        return cls._make(kw)

    @classmethod
    def pae(cls, **kw) -> "Vcpu":
        kw.setdefault("cr4", CR4_PAE)
        kw.setdefault("efer", EFER_NX)
        return cls._make(kw)

    @classmethod
    def legacy32(cls, *, pse: bool = True, **kw) -> "Vcpu":
        kw.setdefault("cr4", CR4_PSE if pse else 0)
        kw.setdefault("efer", 0)
        return cls._make(kw)

    @classmethod
    def real_mode(cls, **kw) -> "Vcpu":
        kw.setdefault("cr0", 0)
        kw.setdefault("cr4", 0)
        kw.setdefault("efer", 0)
        return cls._make(kw)

    @classmethod
    def _make(cls, kw: dict, base=None) -> "Vcpu":
        """``cls(**kw)`` (or ``replace(base, **kw)``), refusing a keyword that is no register."""
        names = {f.name for f in fields(cls)}
        for k in kw:
            if k not in names:
                raise InputError(f"{k}={kw[k]!r}: not a Vcpu field (one of {', '.join(sorted(names))})")
        return cls(**kw) if base is None else replace(base, **kw)

    def replace(self, **kw) -> "Vcpu":
        return self._make(kw, self)

    # -- what the MMU reads -----------------------------------------------------------------
    @property
    def state(self) -> R.VcpuState:
        """The role inputs (vcpu_to_role_regs): CR0.PG/WP, CR4 PSE/PAE/LA57/SMEP/SMAP/PKE,
        EFER.LMA/NX, SMM, guest mode."""
        c0, c4, e = self.cr0, self.cr4, self.efer
        return R.VcpuState(cr0_pg=c0 & CR0_PG != 0, cr0_wp=c0 & CR0_WP != 0,
                           cr4_pae=c4 & CR4_PAE != 0, cr4_pse=c4 & CR4_PSE != 0,
                           cr4_pke=c4 & CR4_PKE != 0, cr4_smep=c4 & CR4_SMEP != 0,
                           cr4_smap=c4 & CR4_SMAP != 0, cr4_la57=c4 & CR4_LA57 != 0,
                           efer_lma=e & EFER_LMA != 0, efer_nx=e & EFER_NX != 0, smm=self.smm,
                           guest_mode=self.guest_mode, maxphyaddr=self.maxphyaddr)

    @property
    def paging_level(self) -> int:
        """cpu_role.base.level: 0 (CR0.PG=0), 2 (32-bit), 3 (PAE), 4, 5."""
        return self.state.paging_level

    @property
    def pke_active(self) -> bool:
        """cpu_role.ext.cr4_pke: CR4.PKE && EFER.LMA (protection keys need long mode)."""
        return bool(self.cr4 & CR4_PKE and self.efer & EFER_LMA and self.cr0 & CR0_PG)

    @property
    def pks_active(self) -> bool:
        """CR4.PKS && EFER.LMA (the PKS model; not mainline KVM)."""
        return bool(self.cr4 & CR4_PKS and self.efer & EFER_LMA and self.cr0 & CR0_PG)

    @property
    def reserved_gpa_bits(self) -> int:
        """vcpu->arch.reserved_gpa_bits = rsvd_bits(maxphyaddr, 63)."""
        return ((1 << 64) - 1) & ~((1 << self.maxphyaddr) - 1)

    # -- roles ------------------------------------------------------------------------------
    def cpu_role(self, era=R.DEFAULT_ERA) -> R.CpuRole:
        """kvm_calc_cpu_role() (v5.19+; earlier eras have no separate cpu role)."""
        return R.kvm_calc_cpu_role(era, self.state)

    def root_role(self, era=R.DEFAULT_ERA, mmu: str = "shadow", *, tdp_level: int = 4,
                  ad_enabled: bool = True) -> int:
        """The root role word of the MMU that serves this vCPU.

        mmu: "shadow" (TDP off: kvm_init_shadow_mmu), "tdp" (EPT/NPT for L1), "nested-npt"
        (this Vcpu holds L1's NPT registers, nCR3 in ``cr3``: kvm_init_shadow_npt_mmu)."""
        C.in_range("tdp_level", tdp_level, 4, 5, "the host TDP level")
        C.boolean("ad_enabled", ad_enabled)
        if mmu == "shadow":
            return R.kvm_calc_shadow_mmu_root_page_role(era, self.state)
        if mmu == "tdp":
            return R.kvm_calc_tdp_mmu_root_page_role(era, self.state, tdp_level, ad_enabled)
        if mmu == "nested-npt":
            if not self.cr0 & CR0_PG:
                raise VcpuStateError("nested NPT: NPT requires CR0.PG=1 (kvm_init_shadow_npt_mmu "
                                     "WARNs on a direct cpu role)")
            return R.kvm_calc_shadow_npt_root_page_role(era, self.state, tdp_level)
        raise InputError(f"mmu={mmu!r}: one of {', '.join(MMU_KINDS)}")

    def shadow_root_sp_roles(self, era=R.DEFAULT_ERA) -> list:
        """The root SP role words shadow paging allocates (mmu_alloc_shadow_roots)."""
        return R.shadow_root_sp_roles(era, self.state)


@dataclass(frozen=True)
class EptContext:
    """What a nested-EPT walk reads: L1's EPTP plus the EPT capabilities KVM gives L1."""

    eptp: int
    #: VMX_EPT_EXECUTE_ONLY_BIT offered to L1 (an XWR=100 entry is legal)
    execonly: bool = False
    #: largest EPT huge page L1 may use: 1 (none), 2 (2M) or 3 (1G)
    huge_page_level: int = 3
    maxphyaddr: int = 48
    smm: bool = False

    def __post_init__(self):
        object.__setattr__(self, "eptp", uint("eptp", self.eptp, 64))
        mpa = uint("maxphyaddr", self.maxphyaddr, 8)
        if not 32 <= mpa <= 52:
            raise InputError(f"maxphyaddr={mpa}: guest MAXPHYADDR is 32..52")
        if self.huge_page_level not in (1, 2, 3):
            raise InputError(f"huge_page_level={self.huge_page_level!r}: 1, 2 (2M) or 3 (1G)")
        for name in ("execonly", "smm"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name}={getattr(self, name)!r}: expected a bool")
        if self.walk_level not in (4, 5):
            raise VcpuStateError(f"eptp={self.eptp:#x}: page-walk length {self.walk_level} "
                                 f"(bits 5:3 + 1) must be 4 or 5")

    @property
    def walk_level(self) -> int:
        """vmx_eptp_page_walk_level(): EPTP bits 5:3 plus one."""
        return ((self.eptp >> 3) & 7) + 1

    @property
    def accessed_dirty(self) -> bool:
        """EPTP bit 6: A/D flags enabled for L1's EPT."""
        return bool(self.eptp & (1 << 6))

    @property
    def reserved_gpa_bits(self) -> int:
        return ((1 << 64) - 1) & ~((1 << self.maxphyaddr) - 1)

    def cpu_role(self, era=R.DEFAULT_ERA, l1: R.VcpuState | None = None) -> R.CpuRole:
        """kvm_calc_shadow_ept_root_page_role(); ``root_role.word == cpu_role.base``."""
        l1 = l1 if l1 is not None else R.VcpuState(smm=self.smm)
        return R.kvm_calc_shadow_ept_root_page_role(era, l1, accessed_dirty=self.accessed_dirty,
                                                    execonly=self.execonly, level=self.walk_level)

    def root_role(self, era=R.DEFAULT_ERA, l1: R.VcpuState | None = None) -> int:
        return self.cpu_role(era, l1).base
