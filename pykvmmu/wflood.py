"""Write-flooding and misaligned-write detection for indirect shadow pages.

Models kvm_mmu_track_write (kvm_mmu_pte_write before ~v6.6) and its helpers
detect_write_flooding, detect_write_misaligned and get_written_sptes (fact sheet
section 5), with the era's sense of role bit 4 (cr4_pae / gpte_is_8_bytes: 1 = 8-byte
gptes; has_4_byte_gpte: 1 = 4-byte gptes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ._batch import uint
from ._check import boolean, in_range
from .errors import InputError
from .role import get_era, gpte_bytes
from .sphash import MmuPageHash, ShadowPage

__all__ = ["detect_write_flooding", "detect_write_misaligned", "get_written_sptes",
           "mmu_pte_write_fetch_gpte", "kvm_mmu_track_write", "TrackWriteResult",
           "WRITE_FLOOD_THRESHOLD"]

WRITE_FLOOD_THRESHOLD = 3
PT32_ROOT_LEVEL = 2


def detect_write_flooding(sp) -> bool:
    """detect_write_flooding: 4K SPs never flood (they can go unsync); otherwise count the
    write and report flooding from the third one on."""
    if not isinstance(sp, ShadowPage):
        raise InputError(f"sp={sp!r}: expected a ShadowPage, got {type(sp).__name__}")
    if sp.level == 1:
        return False
    sp.write_flooding_count += 1
    return sp.write_flooding_count >= WRITE_FLOOD_THRESHOLD


def _bytes(nbytes) -> int:
    b = uint("bytes", nbytes, 8)
    if not 1 <= b <= 8:
        raise InputError(f"bytes={b}: an emulated guest write is 1..8 bytes")
    return b


def detect_write_misaligned(era, role: int, gpa: int, nbytes: int) -> bool:
    """detect_write_misaligned: a 1-byte write to the first byte of a gpte is allowed;
    otherwise misaligned when the write crosses a gpte or is shorter than 4 bytes."""
    role = uint("role", role, 32)
    gpa = uint("gpa", gpa, 64)
    nbytes = _bytes(nbytes)
    offset = gpa & 0xFFF
    pte_size = gpte_bytes(era, role)
    if (offset & (pte_size - 1)) == 0 and nbytes == 1:
        return False
    misaligned = ((offset ^ (offset + nbytes - 1)) & ~(pte_size - 1)) != 0
    return misaligned or nbytes < 4


def get_written_sptes(era, role: int, gpa: int):
    """get_written_sptes: (first SPTE index, nspte) the write hits, or None when this SP
    shadows another quadrant.  4-byte gptes: offset doubled (32->64); a 32-bit PDE (level 2)
    is shadowed by two PAE PDEs (``&= ~7``, doubled again, nspte 2)."""
    era = get_era(era)
    role = uint("role", role, 32)
    gpa = uint("gpa", gpa, 64)
    page_offset = gpa & 0xFFF
    level = role & 0xF
    quadrant = (role >> 5) & 3
    nspte = 1
    if gpte_bytes(era, role) == 4:
        page_offset <<= 1
        if level == PT32_ROOT_LEVEL:
            page_offset &= ~7
            page_offset <<= 1
            nspte = 2
        if (page_offset >> 12) != quadrant:
            return None
        page_offset &= 0xFFF
    return page_offset // 8, nspte


def mmu_pte_write_fetch_gpte(gpa: int, nbytes: int, is_pae: bool) -> tuple:
    """The (gpa, bytes) kvm_mmu_track_write reads: a 4-byte write by a PAE guest covers the
    whole 8-byte gpte (gpa &= ~7, bytes = 8)."""
    gpa, nbytes, is_pae = uint("gpa", gpa), _bytes(nbytes), boolean("is_pae", is_pae)
    if is_pae and nbytes == 4:
        return gpa & ~7, 8
    return gpa, nbytes


@dataclass
class TrackWriteResult:
    zapped: list = field(default_factory=list)      # (sp, "misaligned" | "flooded")
    written: list = field(default_factory=list)     # (sp, index, nspte)
    skipped: list = field(default_factory=list)     # SPs of another quadrant
    stat: dict = field(default_factory=lambda: {"mmu_pte_write": 0, "mmu_flooded": 0})


def kvm_mmu_track_write(era, page_hash, gpa: int, nbytes: int, is_pae: bool = True,
                        passthrough_bit: int | None = 18) -> TrackWriteResult:
    """One emulated guest write to a write-tracked gfn, against a sphash.MmuPageHash:
    misaligned or flooded SPs are zapped, the others get the written SPTEs zapped."""
    era = get_era(era)
    if not isinstance(page_hash, MmuPageHash):
        raise InputError(f"page_hash={page_hash!r}: expected an MmuPageHash")
    if passthrough_bit is not None:
        passthrough_bit = in_range("passthrough_bit", passthrough_bit, 0, 31, "a role word bit")
    if "passthrough" not in era.base.index:
        passthrough_bit = None
    res = TrackWriteResult()
    gpa, nbytes = mmu_pte_write_fetch_gpte(gpa, nbytes, is_pae)
    res.stat["mmu_pte_write"] += 1
    gfn = gpa >> 12
    for sp in list(page_hash.for_each_gfn_valid_sp_with_gptes(gfn, passthrough_bit)):
        if detect_write_misaligned(era, sp.role, gpa, nbytes):
            page_hash.zap(sp)
            res.zapped.append((sp, "misaligned"))
            res.stat["mmu_flooded"] += 1
            continue
        if detect_write_flooding(sp):
            page_hash.zap(sp)
            res.zapped.append((sp, "flooded"))
            res.stat["mmu_flooded"] += 1
            continue
        w = get_written_sptes(era, sp.role, gpa)
        if w is None:
            res.skipped.append(sp)
            continue
        idx, n = w
        for k in range(n):
            sp.spt[idx + k] = 0
        res.written.append((sp, idx, n))
    return res
