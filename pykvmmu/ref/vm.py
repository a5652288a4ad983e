"""Reference twin of ``csrc/vm.c``: one fault's TDP walk and leaf install over the Vm's pool.

Models the part of ``kvm_tdp_mmu_map()`` (arch/x86/kvm/mmu/tdp_mmu.c) that descends from the root
to the target level (``tdp_mmu_for_each_pte``) and sets the leaf
(``tdp_mmu_map_handle_target_level`` with ``make_spte()``), over the table pool of
:class:`pykvmmu.vm.Vm` (docs/private.md section 7): ``npages`` tables of 512 entries, entry
``(page, index)`` at flat position ``page * 512 + index`` holds an SPTE and, for a non-leaf SPTE,
the pool index of its child table (-1: not a pointer: non-present, a leaf or an MMIO SPTE).

Plain ints and Python sequences only; never imports ``pykvmmu._core``.  The leaf comes from
:func:`pykvmmu.ref.spte.make_spte`.
"""
from __future__ import annotations

from typing import MutableSequence, NamedTuple, Optional

from .spte import is_shadow_present_pte, make_spte, spte_to_pfn

__all__ = ["tdp_map", "TdpMapResult", "make_spte_refusal", "F_MAKE", "F_SPURIOUS", "OK", "BLOCKED",
           "SUBTREE", "E_INDEX", "E_MAKE", "SPURIOUS", "MK_AD_DISABLED", "MK_WRPROT_ONLY", "MK_PREFETCH",
           "MK_SYNCHRONIZING", "MK_HOST_WRITABLE", "MK_HOST_MMIO", "MK_UNSYNC_FAILS", "MK_NX_HUGE",
           "MK_ALL_FLAGS", "MK_AD_DEFAULT", "MK_NX_DEFAULT", "MK_OLD_DEFAULT", "MEMTYPE_AUTO"]

#: flags: build make_spte(pfn, level) and write it at the target level (else only read the entry)
F_MAKE = 1
#: flags: first, an entry at the target level that already maps pfn (a shadow-present leaf
#: whose spte_to_pfn is pfn: the fault is RET_PF_SPURIOUS) is read and reported, not rebuilt;
#: make_spte's inputs are then validated after the walk (still before any write)
F_SPURIOUS = 2
#: results: installed (or read); a non-pointer entry above the level (a missing table or a huge
#: leaf in the way); the entry at the level points to a table; root / child index outside the
#: pool or a bad level; make_spte refused its inputs.  Nothing is written unless OK.
OK, BLOCKED, SUBTREE, E_INDEX, E_MAKE = 0, 1, 2, 3, 4
#: result with F_SPURIOUS: the entry at the level already maps pfn (read, nothing written)
SPURIOUS = 5

# make_spte's per-SPTE input bits (the mkflags word), as in the C core's header.
MK_AD_DISABLED = 1
MK_WRPROT_ONLY = 2
MK_PREFETCH = 4
MK_SYNCHRONIZING = 8
MK_HOST_WRITABLE = 16
MK_HOST_MMIO = 32
MK_UNSYNC_FAILS = 64
MK_NX_HUGE = 128
MK_ALL_FLAGS = 255
#: take ad_disabled / nx_huge from the configuration, old_spte = SHADOW_NONPRESENT_VALUE
MK_AD_DEFAULT = 256
MK_NX_DEFAULT = 512
MK_OLD_DEFAULT = 1024
#: memtype: vmx_get_mt_mask()'s rule (else the value get_mt_mask returns: EPT bits 6:3 only)
MEMTYPE_AUTO = 255
_EPT_MT_FIELD = 0x78
_ENTRIES = 512
_MAX_LEVELS = 5


class TdpMapResult(NamedTuple):
    """``code`` (OK / BLOCKED / SUBTREE / E_INDEX / E_MAKE / SPURIOUS); ``spte``: the SPTE written (OK with
    F_MAKE) or read at ``stop_level``; both None on an error (the C outputs stay untouched)."""

    code: int
    spte: Optional[int] = None
    stop_level: Optional[int] = None


def make_spte_refusal(cfg, pfn: int, level: int, pte_access: int, mkflags: int,
                      memtype: int) -> bool:
    """True when the one-SPTE ``make_spte`` entry point refuses its inputs: a pfn above 40 bits
    or outside the configuration's PFN mask, a level outside 1..5, pte_access above ACC_ALL (7),
    an mkflags bit beyond the eight make_spte inputs (after the three *_DEFAULT bits), or a
    memtype other than AUTO using bits outside EPT 6:3."""
    mk = mkflags & ~(MK_AD_DEFAULT | MK_NX_DEFAULT | MK_OLD_DEFAULT)
    return bool((pfn >> 40) or ((pfn << 12) & ~cfg.base_addr_mask)
                or not 1 <= level <= 5 or pte_access > 7 or mk & ~MK_ALL_FLAGS
                or (memtype != MEMTYPE_AUTO and memtype & ~_EPT_MT_FIELD))


def _leaf(cfg, old: int, pfn: int, level: int, pte_access: int, mkflags: int,
          memtype: int) -> int:
    """make_spte() with the mkflags word turned into its keyword arguments (as
    ``pykvmmu.spte.make_spte`` builds the word from them); old_spte is the entry's current
    value unless MK_OLD_DEFAULT asks for the configuration's non-present value."""
    ad_disabled = bool(mkflags & MK_AD_DISABLED) or \
        bool(mkflags & MK_AD_DEFAULT and not cfg.ad_enabled)
    nx_huge = bool(mkflags & MK_NX_HUGE) or bool(mkflags & MK_NX_DEFAULT and cfg.nx_huge_pages)
    old = cfg.profile.nonpresent_value if mkflags & MK_OLD_DEFAULT else old
    spte, _wrprot = make_spte(
        cfg, pfn, level=level, pte_access=pte_access, old_spte=old,
        prefetch=bool(mkflags & MK_PREFETCH), synchronizing=bool(mkflags & MK_SYNCHRONIZING),
        host_writable=bool(mkflags & MK_HOST_WRITABLE), host_mmio=bool(mkflags & MK_HOST_MMIO),
        ad_disabled=ad_disabled, ad_wrprot_only=bool(mkflags & MK_WRPROT_ONLY),
        unsync_fails=bool(mkflags & MK_UNSYNC_FAILS), nx_huge_pages=nx_huge,
        memtype=None if memtype == MEMTYPE_AUTO else memtype)
    return spte


def tdp_map(cfg, spte: MutableSequence[int], child: MutableSequence[int], npages: int,
            levels: int, nonpresent: int, root: int, gfn: int, level: int, pfn: int = 0,
            pte_access: int = 7, mkflags: int = 0, memtype: int = MEMTYPE_AUTO,
            flags: int = 0) -> TdpMapResult:
    """Walk from pool table ``root`` (a ``levels``-level table) to ``gfn``'s entry at ``level``.

    At each level above the target the entry's child index is followed; a non-pointer entry
    stops the walk (BLOCKED, with that entry and its level: ``kvm_tdp_mmu_map`` would allocate
    a table there or split the huge leaf), a child index outside the pool is E_INDEX.  At the
    target level, an entry pointing to a table is SUBTREE (the kernel frees it before
    installing); with F_SPURIOUS an entry already mapping ``pfn`` there is SPURIOUS (read, and
    make_spte's inputs validated only past this point); otherwise, with F_MAKE, ``make_spte(pfn, level)`` is written there (its inputs
    are validated before any table is touched: E_MAKE), else the entry is read.  ``spte`` and
    ``child`` are the flat pool (``npages * 512`` entries each); only OK with F_MAKE writes."""
    if root >= npages or not 1 <= level <= levels or levels > _MAX_LEVELS:
        return TdpMapResult(E_INDEX)
    make, spurious = bool(flags & F_MAKE), bool(flags & F_SPURIOUS)
    if make and not spurious and make_spte_refusal(cfg, pfn, level, pte_access, mkflags, memtype):
        return TdpMapResult(E_MAKE)
    page = root
    for lv in range(levels, level, -1):
        i = page * _ENTRIES + ((gfn >> (9 * (lv - 1))) & (_ENTRIES - 1))
        c = child[i]
        if c < 0:
            return TdpMapResult(BLOCKED, spte[i], lv)
        if c >= npages:
            return TdpMapResult(E_INDEX)
        page = c
    i = page * _ENTRIES + ((gfn >> (9 * (level - 1))) & (_ENTRIES - 1))
    if child[i] >= 0:
        return TdpMapResult(SUBTREE, spte[i], level)
    if spurious and is_shadow_present_pte(cfg, spte[i]) and spte_to_pfn(cfg, spte[i]) == pfn:
        return TdpMapResult(SPURIOUS, spte[i], level)
    if make and spurious and make_spte_refusal(cfg, pfn, level, pte_access, mkflags, memtype):
        return TdpMapResult(E_MAKE)
    if make:
        # tdp_mmu_map_handle_target_level: make_spte() is given the entry's current value
        new = _leaf(cfg, spte[i], pfn, level, pte_access, mkflags, memtype)
        spte[i] = new
        return TdpMapResult(OK, new, level)
    return TdpMapResult(OK, spte[i], level)
