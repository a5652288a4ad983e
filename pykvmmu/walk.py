"""The guest page-table walk of KVM's shadow MMU (arch/x86/kvm/mmu/paging_tmpl.h).

``FNAME(walk_addr_generic)`` is modelled for its three instantiations: ``paging32`` (2-level,
4-byte gptes), ``paging64`` (PAE with its PDPTE registers, 4- and 5-level) and ``ept`` (nested
EPT: L1's EPT tables walked for an L2 GPA).  Per level it yields the gpte, the table gfn, the
accumulated access (``pt_access``/``pte_access``, NX inverted so it ANDs like W and U), the
reserved-bit check (``__reset_rsvds_bits_mask`` tables), huge-page termination
(``FNAME(is_last_gpte)``), then ``permission_fault()`` (:mod:`pykvmmu.perm`),
``FNAME(protect_clean_gpte)``, the A/D update (``FNAME(update_accessed_dirty_bits)``) and the
error code of a failed walk.  :func:`shadow_pages` adds the role of every shadow page that
``FNAME(fetch)`` links along the walk (``kvm_mmu_child_role`` from :mod:`pykvmmu.role`).

Two sources of gptes, one walker:

* :func:`walk_addr` reads guest memory (a :class:`GuestMemory`, a ``{gpa: gpte}`` dict, or a
  ``read_gpte(gpa) -> int`` callback) and writes A/D bits back when it can;
* :func:`walk_observed` replays the gptes a trace reports (``kvm_mmu_pagetable_walk`` +
  ``kvm_mmu_paging_element``), level by level, and returns the same :class:`Walk`.

Modelled kernel: paging_tmpl.h / mmu.c of v6.x (see docs/walk.md for the commits read).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from . import role as R
from ._batch import uint
from . import _check as C
from .errors import InputError
from .perm import (ACCESS_BITS, ACC_EXEC, ACC_USER, ACC_WRITE, PFERR_FETCH, PFERR_PRESENT, PFERR_RSVD,
                   PFERR_USER, PFERR_WRITE, PermissionModel, pfec_str)
from .vcpu import EptContext, Vcpu

__all__ = [
    "GuestMmu", "GuestMemory", "Walk", "WalkLevel", "WalkFault", "ShadowPage", "WalkError",
    "WalkReplayError", "walk_addr", "walk_observed", "shadow_pages", "rsvd_bits_mask",
    "ept_bad_mt_xwr", "gpte_access", "MODES", "ARCHES", "EntryDecode", "decode_entry",
    "WalkReplay", "replay_records", "WALK_EVENTS",
]

U64 = (1 << 64) - 1
PAGE_MASK64 = ((1 << 52) - 1) & ~0xFFF          # GUEST_PT64_BASE_ADDR_MASK
PT_PRESENT, PT_WRITABLE, PT_USER, PT_ACCESSED, PT_DIRTY, PT_PAGE_SIZE = 1, 2, 4, 32, 64, 128
NX_BIT = 1 << 63
EPT_R, EPT_W, EPT_X = 1, 2, 4
EPT_ACCESSED, EPT_DIRTY = 1 << 8, 1 << 9
EPT_VIOLATION_ACC_READ, EPT_VIOLATION_ACC_WRITE, EPT_VIOLATION_ACC_INSTR = 1, 2, 4
EPT_VIOLATION_RWX_SHIFT = 3
#: walker name -> (pttype, cpu_role level)
MODES = {"32bit": ("32", 2), "pae": ("64", 3), "4level": ("64", 4), "5level": ("64", 5),
         "ept4": ("ept", 4), "ept5": ("ept", 5)}


class WalkError(InputError):
    """A walk that cannot be run: bad memory source, unknown mode, CR0.PG=0..."""


class WalkReplayError(WalkError):
    """Observed gptes that do not fit the walk (wrong level, too few, too many)."""


def _rsvd(s: int, e: int) -> int:
    """rsvd_bits(s, e): bits s..e set."""
    return ((2 << (e - s)) - 1) << s


def rsvd_bits_mask(level: int, pa_bits_rsvd: int, nx: bool, gbpages: bool, pse: bool,
                   amd: bool) -> tuple:
    """The guest reserved-bit table of __reset_rsvds_bits_mask(): ``[bit7][level - 1]``.

    ``level`` is the cpu role level (2, 3, 4, 5); PSE-36 is always assumed
    (``is_cpuid_PSE36()`` returns 1 in KVM)."""
    pa_bits_rsvd = C.u64("pa_bits_rsvd", pa_bits_rsvd, err=WalkError)
    nx, gbpages, pse, amd = (C.boolean(n, v, err=WalkError) for n, v in
                             (("nx", nx), ("gbpages", gbpages), ("pse", pse), ("amd", amd)))
    m = [[0] * 5, [0] * 5]
    gb = 0 if gbpages else _rsvd(7, 7)
    high = pa_bits_rsvd & (_rsvd(0, 62) if level == 3 else _rsvd(0, 51))
    if not nx:
        high |= _rsvd(63, 63)
    nl8 = _rsvd(8, 8) if amd else 0
    if level == 2:
        m[1][1] = _rsvd(17, 21) if pse else 0
    elif level == 3:
        m[0][2] = _rsvd(63, 63) | high | _rsvd(5, 8) | _rsvd(1, 2)
        m[0][1] = m[0][0] = m[1][0] = high
        m[1][1] = high | _rsvd(13, 20)
    elif level in (4, 5):
        if level == 5:
            m[0][4] = m[1][4] = high | nl8 | _rsvd(7, 7)
        m[0][3] = m[1][3] = high | nl8 | _rsvd(7, 7)
        m[0][2] = high | gb
        m[0][1] = m[0][0] = m[1][0] = high
        m[1][2] = high | gb | _rsvd(13, 29)
        m[1][1] = high | _rsvd(13, 20)
    else:
        raise WalkError(f"level={level!r}: guest paging levels are 2..5")
    return tuple(m[0]), tuple(m[1])


def ept_rsvd_bits_mask(pa_bits_rsvd: int, huge_page_level: int) -> tuple:
    """__reset_rsvds_bits_mask_ept(): ``[bit7][level - 1]`` for L1's EPT entries."""
    high = pa_bits_rsvd & _rsvd(0, 51)
    l1g = _rsvd(7, 7) if huge_page_level < 3 else 0
    l2m = _rsvd(7, 7) if huge_page_level < 2 else 0
    nl = [high, high | _rsvd(3, 6) | l2m, high | _rsvd(3, 6) | l1g, high | _rsvd(3, 7),
          high | _rsvd(3, 7)]
    lg = [high, high | _rsvd(12, 20) | l2m, high | _rsvd(12, 29) | l1g, nl[3], nl[4]]
    return tuple(nl), tuple(lg)


def ept_bad_mt_xwr(execonly: bool) -> int:
    """The 64-bit ``bad_mt_xwr`` map indexed by ``gpte & 0x3f`` (memtype * 8 + XWR): memory
    types 2, 3, 7 and XWR 010, 110 (and 100 without execute-only support) are misconfigured."""
    execonly = C.boolean("execonly", execonly, err=WalkError)
    bad = 0
    for mt in (2, 3, 7):
        bad |= 0xFF << (8 * mt)
    for xwr in (0b010, 0b110) + (() if execonly else (0b100,)):
        for mt in range(8):
            bad |= 1 << (8 * mt + xwr)
    return bad


def gpte_access(pttype: str, gpte: int) -> int:
    """FNAME(gpte_access): ACC_* bits of a (NX-inverted, for x86) gpte value.

    x86: W, U and P, with ACC_EXEC = P xor bit 63; EPT: W -> ACC_WRITE, X -> ACC_EXEC,
    R -> ACC_USER ("readable")."""
    C.choice("pttype", pttype, ("ept", "64", "32"), err=WalkError)
    gpte = C.u64("gpte", gpte, err=WalkError)
    if pttype == "ept":
        return ((ACC_WRITE if gpte & EPT_W else 0) | (ACC_EXEC if gpte & EPT_X else 0)
                | (ACC_USER if gpte & EPT_R else 0))
    return (gpte & (PT_WRITABLE | PT_USER | PT_PRESENT)) ^ ((gpte >> 63) & 1)


# ---------------------------------------------------------------------------
# The MMU context a walk runs in
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GuestMmu:
    """The guest side of one ``struct kvm_mmu``: paging format, pgd, reserved-bit tables,
    permission tables, and (for MMUs that shadow) the root role.

    Build it with :meth:`for_vcpu` (shadow paging, TDP's gva_to_gpa walker, nested NPT) or
    :meth:`for_ept` (nested EPT)."""

    mode: str
    pgd: int
    have_ad: bool
    efer_nx: bool
    cr0_wp: bool
    cr4_smep: bool
    cr4_pse: bool
    rsvd: tuple
    bad_mt_xwr: int
    perm: PermissionModel
    era: str
    kind: str
    root_role: int | None
    pdptrs: tuple | None = None
    rflags: int = 0x2
    pkru: int = 0
    pkrs: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise WalkError(f"mode={self.mode!r}: one of {', '.join(MODES)}")
        if not isinstance(self.perm, PermissionModel):
            raise WalkError(f"perm={self.perm!r}: expected a PermissionModel")
        if self.pdptrs is not None and (not isinstance(self.pdptrs, tuple) or len(self.pdptrs) != 4):
            raise WalkError(f"pdptrs={self.pdptrs!r}: a tuple of the four PDPTEs")
        for name, bits in (("pgd", 64), ("rflags", 64), ("pkru", 32), ("pkrs", 32)):
            uint(name, getattr(self, name), bits)

    @property
    def pttype(self) -> str:
        return MODES[self.mode][0]

    @property
    def root_level(self) -> int:
        """cpu_role.base.level: the level of the first table the walk reads."""
        return MODES[self.mode][1]

    @property
    def gpte_size(self) -> int:
        return 4 if self.pttype == "32" else 8

    @classmethod
    def for_vcpu(cls, vcpu: Vcpu, era=R.DEFAULT_ERA, mmu: str = "shadow", *,
                 tdp_level: int = 4) -> "GuestMmu":
        """The walker of ``vcpu``'s MMU: "shadow" (root_mmu, TDP off), "tdp" (root_mmu's
        gva_to_gpa with TDP on: no shadow pages), "nested-npt" (guest_mmu shadowing L1's NPT;
        ``vcpu`` holds L1's NPT registers with nCR3 in ``cr3``)."""
        if not isinstance(vcpu, Vcpu):
            raise WalkError(f"vcpu={vcpu!r}: expected a pykvmmu.vcpu.Vcpu")
        era_obj = R.get_era(era)
        if tdp_level not in (4, 5):
            raise WalkError(f"tdp_level={tdp_level!r}: the host TDP level is 4 or 5")
        lvl = vcpu.paging_level
        if lvl == 0:
            raise WalkError("CR0.PG=0: there is no guest page-table walk (nonpaging_gva_to_gpa "
                            "maps every address to itself)")
        mode = {2: "32bit", 3: "pae", 4: "4level", 5: "5level"}[lvl]
        st = vcpu.state
        if mmu == "nested-npt":
            st = st.replace(cr4_pke=False, guest_mode=True)
        root = vcpu.root_role(era_obj, mmu, tdp_level=tdp_level)
        perm = PermissionModel.build(cr0_wp=st.cr0_wp, cr4_smep=st.cr4_smep,
                                     cr4_smap=st.cr4_smap, efer_nx=st.efer_nx,
                                     cr4_pke=vcpu.pke_active and mmu != "nested-npt",
                                     cr4_pks=vcpu.pks_active and mmu != "nested-npt")
        rsvd = rsvd_bits_mask(lvl, vcpu.reserved_gpa_bits, st.efer_nx, vcpu.gbpages,
                              st.cr4_pse, vcpu.amd)
        return cls(mode=mode, pgd=vcpu.cr3, have_ad=True, efer_nx=st.efer_nx, cr0_wp=st.cr0_wp,
                   cr4_smep=st.cr4_smep, cr4_pse=st.cr4_pse, rsvd=rsvd, bad_mt_xwr=0, perm=perm,
                   era=era_obj.name, kind=mmu, root_role=None if mmu == "tdp" else root,
                   pdptrs=vcpu.pdptrs, rflags=vcpu.rflags, pkru=vcpu.pkru, pkrs=vcpu.pkrs)

    @classmethod
    def for_ept(cls, ctx: EptContext, era=R.DEFAULT_ERA) -> "GuestMmu":
        """The nested-EPT walker (kvm_init_shadow_ept_mmu): L1's EPTP, A/D from EPTP bit 6."""
        if not isinstance(ctx, EptContext):
            raise WalkError(f"ctx={ctx!r}: expected a pykvmmu.vcpu.EptContext")
        era_obj = R.get_era(era)
        perm = PermissionModel.build(cr0_wp=False, cr4_smep=False, cr4_smap=False,
                                     efer_nx=False, ept=True)
        return cls(mode=f"ept{ctx.walk_level}", pgd=ctx.eptp, have_ad=ctx.accessed_dirty,
                   efer_nx=False, cr0_wp=False, cr4_smep=False, cr4_pse=False,
                   rsvd=ept_rsvd_bits_mask(ctx.reserved_gpa_bits, ctx.huge_page_level),
                   bad_mt_xwr=ept_bad_mt_xwr(ctx.execonly), perm=perm, era=era_obj.name,
                   kind="nested-ept", root_role=ctx.root_role(era_obj))

    # -- per-format helpers -----------------------------------------------------------------
    def _args(self, what: str, value, level=False):
        """``value`` as a u64 and ``level`` in 1..root_level (the walk's levels)."""
        value = C.u64(what, value, err=WalkError)
        if level is not False:
            C.in_range("level", level, 1, self.root_level, f"the levels of a {self.mode} walk",
                       err=WalkError)
        return value

    def index(self, addr: int, level: int) -> int:
        """PT_INDEX(addr, level): 10 bits per level for 32-bit paging, 9 otherwise."""
        addr = self._args("addr", addr, level)
        if self.pttype == "32":
            return (addr >> (12 + 10 * (level - 1))) & 1023
        return (addr >> (12 + 9 * (level - 1))) & 511

    def gpte_to_gfn_lvl(self, gpte: int, level: int) -> int:
        gpte = self._args("gpte", gpte, level)
        if self.pttype == "32":
            return (gpte & ~((1 << (12 + 10 * (level - 1))) - 1) & 0xFFFFFFFF) >> 12
        return (gpte & PAGE_MASK64 & ~((1 << (12 + 9 * (level - 1))) - 1)) >> 12

    def lvl_offset_gfn(self, addr: int, level: int) -> int:
        """(addr & PT_LVL_OFFSET_MASK(level)) >> PAGE_SHIFT."""
        addr = self._args("addr", addr, level)
        if self.pttype == "32":
            return (addr & ~0xFFF & ((1 << (12 + 10 * (level - 1))) - 1)) >> 12
        return (addr & PAGE_MASK64 & ((1 << (12 + 9 * (level - 1))) - 1)) >> 12

    def is_present(self, gpte: int) -> bool:
        gpte = self._args("gpte", gpte)
        return bool(gpte & 7) if self.pttype == "ept" else bool(gpte & PT_PRESENT)

    def is_rsvd(self, gpte: int, level: int) -> bool:
        """FNAME(is_rsvd_bits_set): the [bit7][level-1] mask, plus bad_mt_xwr for EPT."""
        gpte = self._args("gpte", gpte, level)
        if gpte & self.rsvd[(gpte >> 7) & 1][level - 1]:
            return True
        return self.pttype == "ept" and bool((self.bad_mt_xwr >> (gpte & 0x3F)) & 1)

    def is_last(self, gpte: int, level: int) -> bool:
        """FNAME(is_last_gpte): level 1 always; bit 7 otherwise (32-bit: only at level 2 with
        CR4.PSE, bit 7 is ignored elsewhere)."""
        gpte = self._args("gpte", gpte, level)
        if level == 1:
            return True
        if self.pttype == "32" and level >= 2 + self.cr4_pse:
            return False
        return bool(gpte & PT_PAGE_SIZE)

    @property
    def accessed_mask(self) -> int:
        return EPT_ACCESSED if self.pttype == "ept" else PT_ACCESSED

    @property
    def dirty_mask(self) -> int:
        return EPT_DIRTY if self.pttype == "ept" else PT_DIRTY

    @property
    def nx_mask(self) -> int:
        """walk_nx_mask: bit 63 for paging64 (NX inverted so it ANDs), 0 otherwise."""
        return NX_BIT if self.pttype == "64" else 0


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class WalkLevel:
    """One gpte of the walk (walker->ptes / table_gfn / pte_gpa / pt_access at ``level``).

    For PAE, the first element is the PDPTE register (level 3): ``table_gfn`` is None and it
    contributes nothing to the access or the A/D update."""

    level: int
    gpte: int
    table_gfn: int | None
    pte_gpa: int | None
    #: walker->pt_access[level-1]: ACC_* of the levels above this one
    pt_access: int | None
    #: ACC_* accumulated down to and including this gpte
    access: int | None
    is_leaf: bool = False
    set_accessed: bool = False
    set_dirty: bool = False
    #: the gpte after the A/D update (== gpte when nothing is set)
    new_gpte: int | None = None


@dataclass(frozen=True)
class WalkFault:
    """The guest fault a failed walk injects (walker->fault)."""

    error_code: int
    level: int
    #: "not-present", "rsvd", "permission", "pkey", "no-memslot" (table outside every
    #: visible memslot)
    reason: str
    #: EPT only, non-RSVD faults: exit-qualification bits 0..5 KVM synthesises
    ept_exit_qualification: int | None = None

    @property
    def rsvd(self) -> bool:
        return bool(self.error_code & PFERR_RSVD)

    def __str__(self) -> str:
        return (f"#PF error_code {self.error_code:#x} ({pfec_str(self.error_code) or '-'}) "
                f"{self.reason} at level {self.level}")


@dataclass(frozen=True)
class ShadowPage:
    """A shadow page FNAME(fetch) uses for this address: role word, gfn, level."""

    level: int
    gfn: int
    role: int
    direct: bool
    #: "root", "child" (kvm_mmu_get_child_sp on a guest table) or "direct" (huge gpte split)
    kind: str


@dataclass(frozen=True)
class Walk:
    """The result of FNAME(walk_addr_generic) (plus what FNAME(page_fault) derives)."""

    mode: str
    addr: int
    access: int
    levels: tuple
    ok: bool
    fault: WalkFault | None
    #: walker->gfn, walker->level, walker->max_level
    gfn: int | None
    leaf_level: int
    max_level: int
    #: walker->pte_access (ACC_*, after protect_clean_gpte) and the leaf's protection key
    pte_access: int | None
    pte_pkey: int
    #: the leaf gpte is dirty after the walk (D set before, or set by this write)
    dirty: bool
    #: FNAME(update_accessed_dirty_bits) ran
    ad_update: bool
    #: tracepoints in order: (name, fields dict)
    events: tuple = field(default=())

    @property
    def gpa(self) -> int | None:
        return None if self.gfn is None else (self.gfn << 12) | (self.addr & 0xFFF)

    @property
    def leaf(self) -> WalkLevel | None:
        return self.levels[-1] if self.ok else None

    def fault_pte_access(self, mmu: GuestMmu) -> int | None:
        """walker.pte_access after FNAME(page_fault)'s CR0.WP=0 rule: a supervisor write to a
        read-only page gets W, loses U (and X when SMEP is on).  Assumes a memslot backs it."""
        if not isinstance(mmu, GuestMmu):
            raise WalkError(f"mmu={mmu!r}: expected the GuestMmu of this walk")
        a = self.pte_access
        if not self.ok or a is None:        # a successful walk always has a pte_access
            return None
        if mmu.pttype != "ept" and self.access & PFERR_WRITE and not a & ACC_WRITE and not mmu.cr0_wp \
                and not self.access & PFERR_USER:
            a = (a | ACC_WRITE) & ~ACC_USER
            if mmu.cr4_smep:
                a &= ~ACC_EXEC
        return a

    def __str__(self) -> str:
        lines = [f"walk {self.mode} addr {self.addr:#x} access {self.access:#x} "
                 f"({pfec_str(self.access) or '-'})"]
        for lv in self.levels:
            tg = "regs" if lv.table_gfn is None else f"{lv.table_gfn:#x}"
            acc = "" if lv.access is None else f" access {R._ACCESS_STR[lv.access]}"
            ad = ("A" if lv.set_accessed else "") + ("D" if lv.set_dirty else "")
            lines.append(f"  level {lv.level} table {tg} gpte {lv.gpte:#x}{acc}"
                         + (" leaf" if lv.is_leaf else "") + (f" set {ad}" if ad else ""))
        if self.ok and self.gfn is not None and self.pte_access is not None:
            lines.append(f"  -> gfn {self.gfn:#x} level {self.leaf_level} pte_access "
                         f"{R._ACCESS_STR[self.pte_access]}" + (" dirty" if self.dirty else ""))
        else:
            lines.append(f"  -> {self.fault}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Guest memory
# ---------------------------------------------------------------------------

class GuestMemory:
    """Sparse little-endian guest physical memory for page tables (4 KiB pages on demand)."""

    def __init__(self, maxphyaddr: int = 52):
        self._pages: dict = {}
        self._limit = 1 << C.in_range("maxphyaddr", maxphyaddr, 32, 52, "guest MAXPHYADDR",
                                      err=WalkError)

    def _page(self, gpa: int, create: bool):
        p = self._pages.get(gpa >> 12)
        if p is None and create:
            p = self._pages[gpa >> 12] = bytearray(4096)
        return p

    def _check(self, gpa, size):
        gpa = uint("gpa", gpa, 64)
        if size not in (4, 8):
            raise WalkError(f"size={size!r}: gptes are 4 or 8 bytes")
        if gpa % size:
            raise WalkError(f"gpa={gpa:#x}: not aligned to the {size}-byte gpte")
        if gpa + size > self._limit:
            raise WalkError(f"gpa={gpa:#x}: beyond guest MAXPHYADDR")
        return gpa

    def read(self, gpa: int, size: int = 8) -> int:
        gpa = self._check(gpa, size)
        p = self._page(gpa, False)
        if p is None:
            return 0
        o = gpa & 0xFFF
        return int.from_bytes(p[o:o + size], "little")

    def write(self, gpa: int, value: int, size: int = 8) -> None:
        gpa = self._check(gpa, size)
        v = uint("value", value, 8 * size)
        o = gpa & 0xFFF
        self._page(gpa, True)[o:o + size] = v.to_bytes(size, "little")

    def pages(self) -> list:
        return sorted(self._pages)


def _reader(mem, size):
    """(read(gpa) -> int, write(gpa, value) or None) for a GuestMemory, dict or callback."""
    if isinstance(mem, GuestMemory):
        return (lambda gpa: mem.read(gpa, size)), (lambda gpa, v: mem.write(gpa, v, size))
    if isinstance(mem, dict):
        def rd(gpa):
            return mem.get(gpa, 0)

        def wr(gpa, v):
            mem[gpa] = v
        return rd, wr
    if callable(mem):
        return mem, None
    raise WalkError(f"mem={type(mem).__name__}: expected a GuestMemory, a {{gpa: gpte}} dict "
                    f"or a read_gpte(gpa) callable")


# ---------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------

def _check_inputs(mmu, addr, access):
    if not isinstance(mmu, GuestMmu):
        raise WalkError(f"mmu={mmu!r}: expected a GuestMmu")
    addr = uint("addr", addr, 64)
    access = uint("access", access, 64)
    bad = access & ~ACCESS_BITS
    if bad:
        raise WalkError(f"access={access:#x}: a walk's access is P/W/U/F plus bits 32..63 "
                        f"(PFERR_GUEST_FINAL/PAGE, PFERR_IMPLICIT_ACCESS); bits {bad:#x} are not "
                        f"(FNAME(page_fault) strips RSVD first)")
    return addr, access


_NO_MEMSLOT = object()


def _walk(mmu: GuestMmu, addr: int, access: int, fetch: Callable, pte_writable=None) -> tuple:
    """FNAME(walk_addr_generic); ``fetch(level, gpa, is_pdpte)`` supplies each gpte, or
    ``_NO_MEMSLOT`` when the table's gfn is in no visible memslot.

    Returns (Walk, [(gpa, new_gpte), ...] writes of the A/D update)."""
    size = mmu.gpte_size
    width = 8 * size
    nx = mmu.nx_mask
    write_fault, user_fault, fetch_fault = (access & PFERR_WRITE, access & PFERR_USER,
                                            access & PFERR_FETCH)
    events = [("kvm_mmu_pagetable_walk", {"addr": addr, "pferr": access & 0xFFFFFFFF})]
    levels: list[WalkLevel] = []
    level = mmu.root_level
    pte = mmu.pgd & ((1 << width) - 1)
    errcode = 0
    reason = None
    pte_access = U64
    max_level = level

    def element(p, lvl):
        events.append(("kvm_mmu_paging_element", {"pte": p, "level": lvl}))

    def fail(lvl, pkey=0):
        ec = errcode | write_fault | user_fault
        if fetch_fault and (mmu.efer_nx or mmu.cr4_smep):
            ec |= PFERR_FETCH
        eq = None
        if mmu.pttype == "ept" and not ec & PFERR_RSVD:
            eq = ((EPT_VIOLATION_ACC_WRITE if write_fault else 0)
                  | (EPT_VIOLATION_ACC_READ if user_fault else 0)
                  | (EPT_VIOLATION_ACC_INSTR if fetch_fault else 0)
                  | ((pte_access & 7) << EPT_VIOLATION_RWX_SHIFT))
        events.append(("kvm_mmu_walker_error", {"pferr": ec}))
        w = Walk(mode=mmu.mode, addr=addr, access=access, levels=tuple(levels), ok=False,
                 fault=WalkFault(ec, lvl, reason, eq), gfn=None, leaf_level=lvl,
                 max_level=max_level, pte_access=None, pte_pkey=pkey, dirty=False, ad_update=False,
                 events=tuple(events))
        return w, []

    if mmu.pttype == "64" and level == 3:
        i = (addr >> 30) & 3
        pte = fetch(3, ((mmu.pgd & 0xFFFFFFE0) + 8 * i) & U64, True)
        element(pte, 3)
        levels.append(WalkLevel(3, pte, None, None, None, None, new_gpte=pte))
        if not mmu.is_present(pte):
            reason = "not-present"
            return fail(3)
        level = 2
    max_level = level
    level += 1
    raw: list[tuple] = []      # (level, table_gfn, pte_gpa, pte, pt_access, access) per gpte

    def record(sets=None, leaf=None):
        for (lvl, tg, gpa, p, pa, a) in raw:
            sa, sd, new = (sets or {}).get(lvl, (False, False, p))
            levels.append(WalkLevel(lvl, p, tg, gpa, pa, a, is_leaf=lvl == leaf,
                                    set_accessed=sa, set_dirty=sd, new_gpte=new))
    while True:
        pt_access = pte_access
        level -= 1
        index = mmu.index(addr, level)
        table_gfn = mmu.gpte_to_gfn_lvl(pte, 1)
        pte_gpa = (table_gfn << 12) + index * size
        pte = fetch(level, pte_gpa, False)
        if pte is _NO_MEMSLOT:                 # !kvm_is_visible_memslot(): error, no element
            reason = "no-memslot"
            record()
            return fail(level)
        element(pte, level)
        pte_access = pt_access & (pte ^ nx)
        acc_here = gpte_access(mmu.pttype, pt_access ^ nx)
        if not mmu.is_present(pte) or mmu.is_rsvd(pte, level):
            if mmu.is_present(pte):
                errcode = PFERR_RSVD | PFERR_PRESENT
                reason = "rsvd"
            else:
                reason = "not-present"
            record()
            levels.append(WalkLevel(level, pte, table_gfn, pte_gpa, acc_here, None, new_gpte=pte))
            return fail(level)
        raw.append((level, table_gfn, pte_gpa, pte, acc_here,
                    gpte_access(mmu.pttype, pte_access ^ nx)))
        if mmu.is_last(pte, level):
            break

    pkey = (pte >> 59) & 0xF if mmu.pttype == "64" else 0
    accessed_dirty = pte_access & mmu.accessed_mask if mmu.have_ad else 0
    walker_access = gpte_access(mmu.pttype, pte_access ^ nx)
    perr = mmu.perm.fault(walker_access, access, pte_pkey=pkey, rflags=mmu.rflags,
                          pkru=mmu.pkru, pkrs=mmu.pkrs)

    if perr:
        errcode = perr
        reason = "pkey" if perr & 32 else "permission"
        record(leaf=level)
        return fail(level, pkey)

    gfn = mmu.gpte_to_gfn_lvl(pte, level) + mmu.lvl_offset_gfn(addr, level)
    if mmu.pttype == "32" and level > 1:
        gfn += (pte & (0xF << 13)) << 7        # pse36_gfn_delta (is_cpuid_PSE36() is 1)
    if not write_fault:
        if mmu.have_ad:                        # FNAME(protect_clean_gpte)
            mask = ~ACC_WRITE | ((pte >> (mmu.dirty_mask.bit_length() - 2)) & ACC_WRITE)
            walker_access &= mask
    else:
        accessed_dirty &= pte >> 1             # fold the leaf's D into A (D = A << 1)
    writes = []
    sets = {}
    ran = False
    dirty = bool(pte & mmu.dirty_mask)
    if not accessed_dirty and mmu.have_ad:
        ran = True
        for (lvl, tg, gpa, p, _pa, _a) in raw:
            new = p
            sa = sd = False
            index = (gpa & 0xFFF) // size
            if not p & mmu.accessed_mask:
                events.append(("kvm_mmu_set_accessed_bit", {"gpa": (tg << 12) + index * size}))
                new |= mmu.accessed_mask
                sa = True
            if lvl == level and write_fault and not p & mmu.dirty_mask:
                events.append(("kvm_mmu_set_dirty_bit", {"gpa": (tg << 12) + index * size}))
                new |= mmu.dirty_mask
                sd = True
                dirty = True
            sets[lvl] = (sa, sd, new)
            if new != p and (pte_writable is None or pte_writable(tg)):
                writes.append((gpa, new))
    record(sets, leaf=level)
    w = Walk(mode=mmu.mode, addr=addr, access=access, levels=tuple(levels), ok=True, fault=None,
             gfn=gfn, leaf_level=level, max_level=max_level, pte_access=walker_access,
             pte_pkey=pkey, dirty=dirty, ad_update=ran, events=tuple(events))
    return w, writes


def walk_addr(mmu: GuestMmu, addr: int, access: int, mem, *, write_back: bool = True,
              pte_writable: Callable | None = None, visible: Callable | None = None) -> Walk:
    """Walk guest memory (form a): ``mem`` is a :class:`GuestMemory`, a ``{gpa: gpte}`` dict or
    a ``read_gpte(gpa) -> int`` callable.  A/D bits are written back to a GuestMemory or dict
    when ``write_back`` (a callable source is read-only); ``pte_writable(table_gfn)`` says
    whether a table's memslot is writable (FNAME(update_accessed_dirty_bits) skips the others).
    ``visible(table_gfn)`` False makes the walk fail there without reading (the table is in
    no visible memslot: error code 0 | W | U (| F)).
    PAE: the PDPTEs come from ``mmu.pdptrs`` when set, else from memory at CR3."""
    addr, access = _check_inputs(mmu, addr, access)
    write_back = C.boolean("write_back", write_back, err=WalkError)
    rd, wr = _reader(mem, mmu.gpte_size)
    for name, fn in (("pte_writable", pte_writable), ("visible", visible)):
        if fn is not None and not callable(fn):
            raise WalkError(f"{name}={fn!r}: expected a callable taking a table gfn")
    limit = (1 << (8 * mmu.gpte_size)) - 1

    def fetch(level, gpa, is_pdpte):
        if is_pdpte and mmu.pdptrs is not None:
            return mmu.pdptrs[(addr >> 30) & 3]
        if not is_pdpte and visible is not None and not visible(gpa >> 12):
            return _NO_MEMSLOT
        v = rd(gpa)
        try:
            v = uint(f"gpte at {gpa:#x}", v, 8 * (8 if is_pdpte else mmu.gpte_size))
        except InputError as e:
            raise WalkError(f"{e} (read_gpte returned a value wider than a gpte)") from None
        return v & (U64 if is_pdpte else limit)

    w, writes = _walk(mmu, addr, access, fetch, pte_writable)
    if write_back and wr is not None:
        for gpa, v in writes:
            wr(gpa, v)
    return w


def _observed_pairs(gptes) -> list:
    out: list[tuple[int, int | None]] = []
    for i, g in enumerate(gptes):
        if isinstance(g, tuple):
            if len(g) != 2:
                raise WalkReplayError(f"gptes[{i}]={g!r}: expected (pte, level)")
            p, lv = g
            out.append((uint(f"gptes[{i}].pte", p, 64), uint(f"gptes[{i}].level", lv, 3)))
        elif isinstance(g, dict):
            out.append((uint(f"gptes[{i}]['pte']", g.get("pte"), 64),
                        uint(f"gptes[{i}]['level']", g.get("level"), 3)))
        else:
            out.append((uint(f"gptes[{i}]", g, 64), None))
    return out


def walk_observed(mmu: GuestMmu, addr: int, access: int, gptes: Iterable, *,
                  walker_error: int | None = None) -> Walk:
    """Replay a walk from observed gptes (form b), as the tracepoints report it:
    ``kvm_mmu_pagetable_walk(addr, pferr)`` gives ``addr``/``access``, each
    ``kvm_mmu_paging_element(pte, level)`` one item of ``gptes`` (``(pte, level)`` pairs,
    ``{"pte":, "level":}`` dicts, or bare ints in walk order; PAE starts with the PDPTE at
    level 3).  The same walker as :func:`walk_addr` runs over them; the result's ``events``
    are the tracepoints the kernel emits (incl. the A/D bits it sets and
    ``kvm_mmu_walker_error``) for comparison with the rest of the trace.

    ``walker_error``: the pferr of a ``kvm_mmu_walker_error`` that ends the observed walk.
    When the elements run out before the walk ends and it is given, the table the walk would
    read next was in no visible memslot (the kernel fails there without an element).

    Raises WalkReplayError when an element's level is not the one the walk reads next, or
    the walk needs more (or fewer) elements than given."""
    addr, access = _check_inputs(mmu, addr, access)
    if walker_error is not None:
        walker_error = C.u64("walker_error", walker_error, err=WalkReplayError)
    try:
        gptes = list(gptes)
    except TypeError:
        raise WalkReplayError(f"gptes={gptes!r}: expected an iterable of observed gptes") from None
    seq = _observed_pairs(gptes)
    pos = [0]
    width = 8 * mmu.gpte_size

    def fetch(level, gpa, is_pdpte):
        i = pos[0]
        if i >= len(seq) and walker_error is not None and not is_pdpte:
            return _NO_MEMSLOT
        if i >= len(seq):
            raise WalkReplayError(f"the walk reads a level-{level} gpte at {gpa:#x} after the "
                                  f"{len(seq)} observed element(s): trace truncated?")
        p, lv = seq[i]
        if lv is not None and lv != level:
            raise WalkReplayError(f"gptes[{i}]: observed level {lv}, the {mmu.mode} walk reads "
                                  f"level {level} next (addr {addr:#x})")
        if not is_pdpte and p >> width:
            raise WalkReplayError(f"gptes[{i}]={p:#x}: wider than a {mmu.gpte_size}-byte gpte")
        pos[0] += 1
        return p

    if walker_error is not None:
        walker_error = uint("walker_error", walker_error, 32)
    w, _ = _walk(mmu, addr, access, fetch)
    if walker_error is not None and (w.ok or w.fault.error_code != walker_error):
        got = "success" if w.ok else f"error code {w.fault.error_code:#x}"
        raise WalkReplayError(f"walker_error={walker_error:#x} observed, the walk gives {got}")
    if pos[0] != len(seq):
        raise WalkReplayError(f"{len(seq) - pos[0]} observed element(s) left after the walk ended "
                              f"at level {w.leaf_level} (a retried walk, or another walk's "
                              f"elements)")
    return w


# ---------------------------------------------------------------------------
# Shadow pages along the walk (FNAME(fetch))
# ---------------------------------------------------------------------------

def shadow_pages(mmu: GuestMmu, w: Walk, *, goal_level: int | None = None) -> tuple:
    """The shadow pages FNAME(fetch) links for a successful walk, root first.

    Root: ``mmu.root_role`` at the pgd's gfn (4/5-level), or the PAE root for ``addr``
    (level 2, gfn of the PDPTE, or of CR3 with quadrant ``addr[31:30]`` for 32-bit guests).
    Below it one indirect child per guest table down to the leaf (kvm_mmu_child_role with
    ``access = walker->pt_access[level - 1]``, quadrant = bit 21 for 4-byte gptes); then, when
    ``goal_level`` (the host mapping level) is below the guest leaf level, direct children
    with the leaf's access (after the CR0.WP=0 rule) at gfns aligned to their parent level."""
    if not isinstance(w, Walk) or not isinstance(mmu, GuestMmu):
        raise WalkError("shadow_pages(mmu, walk): a GuestMmu and the Walk it produced")
    if w.mode != mmu.mode:
        raise WalkError(f"walk mode {w.mode} does not match mmu mode {mmu.mode}")
    if not w.ok:
        raise WalkError("shadow_pages: the walk faulted; FNAME(fetch) never runs")
    if mmu.root_role is None:
        raise WalkError(f"shadow_pages: a {mmu.kind} MMU has no shadow pages for guest tables")
    goal = w.leaf_level if goal_level is None else goal_level
    if not isinstance(goal, int) or not 1 <= goal <= w.leaf_level:
        raise WalkError(f"goal_level={goal_level!r}: 1..{w.leaf_level} (the guest leaf level; "
                        f"kvm_mmu_hugepage_adjust never maps above it)")
    era = R.get_era(mmu.era)
    # 4-byte gptes: every child gets a quadrant, direct ones included (v5.x kvm_mmu_get_page
    # tested the MMU's root level; kvm_mmu_child_role inherits has_4_byte_gpte).
    four = mmu.pttype == "32"
    by_level = {lv.level: lv for lv in w.levels if lv.table_gfn is not None}
    root_level = R.unpack(era, mmu.root_role).level
    out = []
    if mmu.root_level >= 4:
        parent = mmu.root_role
        top = root_level
        out.append(ShadowPage(top, by_level[mmu.root_level].table_gfn, parent, False, "root"))
        if top > mmu.root_level:           # passthrough root: its child shadows the top table
            idx = (w.addr >> (12 + 9 * (top - 1))) & 511
            parent = R.kvm_mmu_child_role(era, parent, direct=False,
                                          access=by_level[mmu.root_level].pt_access, index=idx)
            out.append(ShadowPage(top - 1, by_level[mmu.root_level].table_gfn, parent, False,
                                  "child"))
        level = mmu.root_level
    else:
        i = (w.addr >> 30) & 3
        parent = R.kvm_mmu_get_page_role(era, mmu.root_role, level=2, direct=False,
                                         gaddr=i << 30, guest_32bit=four)
        out.append(ShadowPage(2, by_level[2].table_gfn, parent, False, "root"))
        level = 2
    while level > w.leaf_level:
        child = level - 1
        idx = (w.addr >> (12 + 9 * (level - 1))) & 511
        parent = R.kvm_mmu_child_role(era, parent, direct=False, access=by_level[child].pt_access,
                                      index=idx, guest_32bit=four)
        out.append(ShadowPage(child, by_level[child].table_gfn, parent, False, "child"))
        level = child
    direct_access = w.fault_pte_access(mmu)
    if direct_access is None or w.gfn is None:      # w.ok: both are set
        raise WalkError("shadow_pages: the walk has no leaf access or gfn")
    while level > goal:
        child = level - 1
        idx = (w.addr >> (12 + 9 * (level - 1))) & 511
        parent = R.kvm_mmu_child_role(era, parent, direct=True, access=direct_access, index=idx,
                                      guest_32bit=four)
        base = w.gfn & ~((1 << (9 * (level - 1))) - 1)
        out.append(ShadowPage(child, base, parent, True, "direct"))
        level = child
    return tuple(out)


# ---------------------------------------------------------------------------
# Raw hardware paging entries (``pykvmmu decode --arch``)
# ---------------------------------------------------------------------------

ARCHES = ("x86-64", "pae", "32bit", "ept")
_EPT_MT = {0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB"}
_X86_NAMES = {1: "PTE", 2: "PDE", 3: "PDPTE", 4: "PML4E", 5: "PML5E"}
_EPT_NAMES = {1: "EPT PTE", 2: "EPT PDE", 3: "EPT PDPTE", 4: "EPT PML4E", 5: "EPT PML5E"}


@dataclass(frozen=True)
class EntryDecode:
    """One architectural paging-structure entry, decoded (no KVM software bits)."""

    arch: str
    level: int
    word: int
    name: str
    present: bool
    leaf: bool
    page_size: int | None
    address: int
    flags: tuple
    #: leaf entries only: "PAT entry N (PAT:PCD:PWT)" or the EPT memory type
    memtype: str | None
    reserved: int

    def __str__(self) -> str:
        digits = 8 if self.arch == "32bit" else 16
        kind = (f"{self.page_size >> 10}K" if self.page_size and self.page_size < 1 << 20 else
                f"{self.page_size >> 20}M" if self.page_size and self.page_size < 1 << 30 else
                f"{self.page_size >> 30}G" if self.page_size else "")
        what = (f"leaf, {kind} page" if self.leaf else "points to a page table") \
            if self.present else "not present"
        out = [f"0x{self.word:0{digits}x} {self.arch} level {self.level} {self.name} ({what})",
               "  " + " ".join(self.flags)]
        if self.present:
            out.append(f"  {'page' if self.leaf else 'table'} address 0x{self.address:x}")
        if self.memtype is not None:
            out.append(f"  memory type: {self.memtype}")
        out.append(f"  reserved bits set: 0x{self.reserved:x}" if self.reserved
                   else "  reserved bits set: none")
        return "\n".join(out)


def _flag(word, bit, name):
    return f"{name}={(word >> bit) & 1}"


def decode_entry(arch: str, word: int, level: int = 1, *, maxphyaddr: int = 52,
                 execonly: bool = True, gbpages: bool = True) -> EntryDecode:
    """Decode a raw hardware entry: ``arch`` "x86-64" (4/5-level), "pae", "32bit" or "ept",
    at ``level`` (1 = PTE).  Reserved bits come from the same tables the walker uses
    (__reset_rsvds_bits_mask / __reset_rsvds_bits_mask_ept, plus EPT misconfigured
    memory-type/XWR combinations); a non-leaf entry has no memory type."""
    if arch not in ARCHES:
        raise WalkError(f"arch={arch!r}: one of {', '.join(ARCHES)}")
    top = {"x86-64": 5, "pae": 3, "32bit": 2, "ept": 5}[arch]
    if not isinstance(level, int) or not 1 <= level <= top:
        raise WalkError(f"level={level!r}: {arch} entries are levels 1..{top}")
    word = uint("word", word, 32 if arch == "32bit" else 64)
    mpa = uint("maxphyaddr", maxphyaddr, 8)
    if not 32 <= mpa <= 52:
        raise WalkError(f"maxphyaddr={mpa}: 32..52")
    execonly = C.boolean("execonly", execonly, err=WalkError)
    gbpages = C.boolean("gbpages", gbpages, err=WalkError)
    pa_rsvd = U64 & ~((1 << mpa) - 1)
    ps = bool(word & PT_PAGE_SIZE)
    if arch == "ept":
        nl, lg = ept_rsvd_bits_mask(pa_rsvd, 3 if gbpages else 2)
        present = bool(word & 7)
        leaf = level == 1 or (ps and level in (2, 3))
        rsvd = (lg if ps else nl)[level - 1] & word
        bad = ept_bad_mt_xwr(execonly)
        if present and (bad >> (word & (0x3F if leaf else 0x7))) & 1:
            rsvd |= word & (0x3F if leaf else 0x7)
        flags = [_flag(word, 0, "R"), _flag(word, 1, "W"), _flag(word, 2, "X")]
        if level in (2, 3):
            flags.append(_flag(word, 7, "PS"))
        flags.append(_flag(word, 8, "A"))
        if leaf:
            flags += [_flag(word, 6, "IPAT"), _flag(word, 9, "D"), _flag(word, 10, "XU"),
                      _flag(word, 63, "SVE")]
        memtype = None
        if leaf and present:
            mt = (word >> 3) & 7
            memtype = f"{_EPT_MT.get(mt, 'reserved')} ({mt})" + (" ignore-PAT" if word & 64 else "")
        shift = 12 + 9 * (level - 1) if leaf else 12
        addr = word & PAGE_MASK64 & ~((1 << shift) - 1) & ((1 << mpa) - 1)
        return EntryDecode(arch, level, word, _EPT_NAMES[level], present, leaf,
                           (1 << shift) if leaf else None, addr, tuple(flags), memtype, rsvd)
    if arch == "32bit":
        m = rsvd_bits_mask(2, pa_rsvd, True, gbpages, True, False)
        leaf = level == 1 or ps
        shift = 22 if leaf and level == 2 else 12
        addr = word & ~((1 << shift) - 1) & 0xFFFFFFFF
        if level == 2 and leaf:
            # PSE-36/40 (SDM table 4-4): bits (M-19):13 are address bits (M-1):32, M <= 40;
            # the rest of 21:13 is reserved (KVM itself assumes PSE-36: bits 21:17).
            n = min(mpa, 40) - 32
            addr |= ((word >> 13) & ((1 << n) - 1)) << 32
            m = (m[0], m[1][:1] + (_rsvd(13 + n, 21),) + m[1][2:])
    else:
        lvl_table = 3 if arch == "pae" else 5
        m = rsvd_bits_mask(lvl_table, pa_rsvd, True, gbpages, False, False)
        if arch == "pae" and level == 3:
            leaf = False
        else:
            leaf = level == 1 or (ps and level in (2, 3))
        shift = 12 + 9 * (level - 1) if leaf else 12
        addr = word & PAGE_MASK64 & ~((1 << shift) - 1) & ((1 << mpa) - 1)
    rsvd = m[1 if ps else 0][level - 1] & word
    present = bool(word & PT_PRESENT)
    names = ["P", "R/W", "U/S", "PWT", "PCD", "A"]
    if arch == "pae" and level == 3:
        flags = [_flag(word, 0, "P"), _flag(word, 3, "PWT"), _flag(word, 4, "PCD")]
    else:
        flags = [_flag(word, i, n) for i, n in enumerate(names)]
        if leaf:
            flags.append(_flag(word, 6, "D"))
            pat_bit = 7 if level == 1 else 12
            flags += [_flag(word, pat_bit, "PAT"), _flag(word, 8, "G")]
            if level > 1:
                flags.append("PS=1")
        elif level in (2, 3) or (arch == "32bit" and level == 2):
            flags.append("PS=0")
        elif word & PT_PAGE_SIZE:
            flags.append("PS=1(reserved)")
        if arch != "32bit":
            flags.append(_flag(word, 63, "XD"))
        if arch == "x86-64" and leaf:
            flags.append(f"PK={(word >> 59) & 0xF}")
    memtype = None
    if leaf and present:
        pat = 1 if word & (1 << (7 if level == 1 else 12)) else 0
        idx = (pat << 2) | (((word >> 4) & 1) << 1) | ((word >> 3) & 1)
        memtype = f"PAT entry {idx} (PAT:PCD:PWT = {idx:03b})"
    name = ("PDPTE (register)" if arch == "pae" and level == 3
            else _X86_NAMES[level] if arch != "32bit" else ("PTE", "PDE")[level - 1])
    return EntryDecode(arch, level, word, name, present, leaf, (1 << shift) if leaf else None,
                       addr, tuple(flags), memtype, rsvd)


# ---------------------------------------------------------------------------
# Replaying the walk events of a parsed trace
# ---------------------------------------------------------------------------

WALK_EVENTS = ("kvm_mmu_pagetable_walk", "kvm_mmu_paging_element", "kvm_mmu_set_accessed_bit",
               "kvm_mmu_set_dirty_bit", "kvm_mmu_walker_error")


@dataclass(frozen=True)
class WalkReplay:
    """One observed walk (a ``kvm_mmu_pagetable_walk`` and the walk events after it on the same
    CPU) replayed through :func:`walk_observed`: the model's Walk (None when the replay was
    refused), the observed events, and whether the model predicts exactly those events."""

    cpu: int
    observed: tuple
    walk: Walk | None
    error: str | None

    @property
    def matches(self) -> bool:
        return self.walk is not None and tuple(self.walk.events) == self.observed


def replay_records(mmu, records: Iterable) -> list:
    """Group trace records (:class:`pykvmmu.trace.TraceRecord` or anything with ``event``,
    ``fields`` and ``cpu``) into walks and replay each one.

    A walk is a ``kvm_mmu_pagetable_walk`` and the following ``kvm_mmu_paging_element`` /
    ``kvm_mmu_set_{accessed,dirty}_bit`` / ``kvm_mmu_walker_error`` records of the same CPU; it
    ends at that CPU's next walk or next other event.  ``mmu`` is a GuestMmu, or a callable
    ``mmu(record) -> GuestMmu`` given the walk's first record (registers change over a trace)."""
    if not isinstance(mmu, GuestMmu) and not callable(mmu):
        raise WalkError(f"mmu={mmu!r}: expected a GuestMmu or a callable(record) -> GuestMmu")
    try:
        records = list(records)
    except TypeError:
        raise WalkError(f"records={records!r}: expected an iterable of trace records") from None
    for i, r in enumerate(records):
        if not all(hasattr(r, a) for a in ("event", "fields", "cpu")):
            raise WalkError(f"records[{i}]={r!r}: expected a trace record (event, fields, cpu)")
    open_walks: dict = {}
    groups = []
    for r in records:
        ev, cpu = getattr(r, "event", None), getattr(r, "cpu", 0)
        if ev == "kvm_mmu_pagetable_walk":
            g = open_walks[cpu] = [r]
            groups.append(g)
        elif ev in WALK_EVENTS and cpu in open_walks:
            open_walks[cpu].append(r)
            if ev == "kvm_mmu_walker_error":
                del open_walks[cpu]
        else:
            open_walks.pop(cpu, None)
    out = []
    for g in groups:
        first = g[0]
        observed = tuple((r.event, {k: r.fields[k] for k in _EVENT_KEYS[r.event]}) for r in g)
        m = mmu(first) if callable(mmu) and not isinstance(mmu, GuestMmu) else mmu
        elements = [(r.fields["pte"], r.fields["level"]) for r in g
                    if r.event == "kvm_mmu_paging_element"]
        errs = [r.fields["pferr"] for r in g if r.event == "kvm_mmu_walker_error"]
        try:
            w = walk_observed(m, first.fields["addr"], first.fields["pferr"], elements,
                              walker_error=errs[0] if errs else None)
            out.append(WalkReplay(first.cpu, observed, w, None))
        except InputError as e:
            out.append(WalkReplay(first.cpu, observed, None, str(e)))
    return out


_EVENT_KEYS = {"kvm_mmu_pagetable_walk": ("addr", "pferr"), "kvm_mmu_paging_element": ("pte", "level"),
               "kvm_mmu_set_accessed_bit": ("gpa",), "kvm_mmu_set_dirty_bit": ("gpa",),
               "kvm_mmu_walker_error": ("pferr",)}
