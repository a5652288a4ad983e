"""The guest permission model: ``update_permission_bitmask()``, ``update_pkru_bitmask()`` and
``permission_fault()`` (arch/x86/kvm/mmu/mmu.c, arch/x86/kvm/mmu.h).

KVM precomputes, per MMU, ``u8 permissions[16]``: entry ``pfec >> 1`` (the W, U, RSVD and F
bits of a page-fault error code; RSVD stands in for "SMAP not checked") has bit ``pte_access``
(ACC_EXEC=1, ACC_WRITE=2, ACC_USER=4) set when that access to a page with those effective
rights faults.  ``pkru_mask`` (u32) holds two bits per even offset ``pfec & ~1`` (RSVD again
standing in, this time for the page's U bit): which of PKRU.AD / PKRU.WD apply.

Everything here is numpy-vectorised: the tables are built as (16, 8) boolean matrices, and
:func:`permission_fault_batch` gathers over whole arrays of (pte_access, pfec, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._batch import in_array, same_shape, uint
from . import _check as C
from .errors import InputError

__all__ = [
    "PFERR_PRESENT", "PFERR_WRITE", "PFERR_USER", "PFERR_RSVD", "PFERR_FETCH", "PFERR_PK",
    "PFERR_IMPLICIT_ACCESS", "ACC_EXEC", "ACC_WRITE", "ACC_USER", "ACCESS_BITS",
    "PermissionModel", "update_permission_bitmask", "update_pkru_bitmask", "permission_fault",
    "permission_fault_batch", "pfec_str",
]

PFERR_PRESENT, PFERR_WRITE, PFERR_USER, PFERR_RSVD, PFERR_FETCH, PFERR_PK = 1, 2, 4, 8, 16, 32
#: KVM's software bit for implicit supervisor accesses (GDT/IDT/TSS reads...): SMAP applies
#: whatever EFLAGS.AC says.
PFERR_IMPLICIT_ACCESS = 1 << 48
ACC_EXEC, ACC_WRITE, ACC_USER = 1, 2, 4
#: The access bits permission_fault() accepts in ``access``: P (ignored), W, U, F, and anything
#: at bit 32 and above (PFERR_GUEST_FINAL/PAGE, PFERR_IMPLICIT_ACCESS...: ``unsigned int pfec =
#: access`` drops them).  RSVD, PK and bits 5..31 would index past ``permissions[16]``.
ACCESS_BITS = ((1 << 64) - 1) & ~0xFFFFFFE8
RFLAGS_AC = 1 << 18

_PFERR_NAMES = ((PFERR_PRESENT, "P"), (PFERR_WRITE, "W"), (PFERR_USER, "U"), (PFERR_RSVD, "RSVD"),
                (PFERR_FETCH, "F"), (PFERR_PK, "PK"))


def pfec_str(pfec: int) -> str:
    """The kvmmmu tracepoints' ``__print_flags(pferr, "|", P/W/U/RSVD/F)`` text (plus PK)."""
    pfec = C.u64("pfec", pfec)
    return "|".join(n for m, n in _PFERR_NAMES if pfec & m)


def _bits(v, name):
    if not isinstance(v, (bool, int, np.bool_)) or int(v) not in (0, 1):
        raise InputError(f"{name}={v!r}: expected a bool")
    return bool(v)


def update_permission_bitmask(cr0_wp: bool, cr4_smep: bool, cr4_smap: bool, efer_nx: bool,
                              ept: bool = False) -> np.ndarray:
    """``mmu->permissions[16]`` as a uint8 array (update_permission_bitmask()).

    For EPT (``ept=True``) only the W/U/F-versus-ACC rules apply (ACC_USER means "readable"
    in an EPT walk; CR0.WP, SMEP, SMAP and NX do not exist)."""
    wp, smep, smap, nx, ept = (_bits(cr0_wp, "cr0_wp"), _bits(cr4_smep, "cr4_smep"),
                               _bits(cr4_smap, "cr4_smap"), _bits(efer_nx, "efer_nx"),
                               _bits(ept, "ept"))
    pfec = (np.arange(16, dtype=np.uint32) << 1)[:, None]
    acc = np.arange(8, dtype=np.uint32)[None, :]
    w = (pfec & PFERR_WRITE) != 0
    u = (pfec & PFERR_USER) != 0
    f = (pfec & PFERR_FETCH) != 0
    no_smap = (pfec & PFERR_RSVD) != 0
    x_ok = (acc & ACC_EXEC) != 0
    w_ok = (acc & ACC_WRITE) != 0
    u_pg = (acc & ACC_USER) != 0
    wf = w & ~w_ok
    uf = u & ~u_pg
    ff = f & ~x_ok
    fault = uf | np.zeros((16, 8), bool)
    if ept:
        fault = fault | wf | ff
    else:
        kf = ~u & u_pg                       # supervisor access to a user page
        if nx:
            fault = fault | ff
        fault = fault | (wf if wp else (wf & u))
        if smep:
            fault = fault | (f & kf)
        if smap:
            fault = fault | (~(no_smap | f) & kf)
    weights = (1 << np.arange(8, dtype=np.uint32))[None, :]
    return (fault.astype(np.uint32) * weights).sum(axis=1).astype(np.uint8)


def update_pkru_bitmask(cr4_pke: bool, cr0_wp: bool, cr4_pks: bool = False) -> int:
    """``mmu->pkru_mask`` (update_pkru_bitmask()): 2 bits at offset ``pfec & ~1`` for each
    of the 16 (W, U, F, page-U) combinations, page-U in the RSVD slot; bit 0 = AD applies,
    bit 1 = WD applies.  ``cr4_pke`` is the cpu role's ``ext.cr4_pke`` (CR4.PKE && EFER.LMA).

    ``cr4_pks``: protection keys for supervisor pages (PKRS).  Not in mainline KVM (the PKS
    series was not merged); the architectural rule (SDM 4.6.2) is modelled in the slots whose
    page-U bit is 0, which mainline always leaves 0."""
    pke, wp, pks = _bits(cr4_pke, "cr4_pke"), _bits(cr0_wp, "cr0_wp"), _bits(cr4_pks, "cr4_pks")
    pfec = np.arange(16, dtype=np.uint64) << 1
    ff = (pfec & PFERR_FETCH) != 0
    uf = (pfec & PFERR_USER) != 0
    wf = (pfec & PFERR_WRITE) != 0
    pte_user = (pfec & PFERR_RSVD) != 0
    enabled = np.where(pte_user, pke, pks)
    check_pkey = ~ff & enabled
    check_write = check_pkey & wf & (uf | wp)
    bits = check_pkey.astype(np.uint64) | (check_write.astype(np.uint64) << 1)
    return int(np.bitwise_or.reduce(bits << pfec))


@dataclass(frozen=True)
class PermissionModel:
    """The permission state of one MMU context: the two tables plus the paging bits."""

    permissions: bytes
    pkru_mask: int
    ept: bool = False

    def __post_init__(self):
        if not isinstance(self.permissions, bytes) or len(self.permissions) != 16:
            raise InputError(f"permissions={self.permissions!r}: the 16 bytes of "
                             "mmu->permissions[] (one per pfec >> 1)")
        C.uint("pkru_mask", self.pkru_mask, 32)
        C.boolean("ept", self.ept)

    @classmethod
    def build(cls, *, cr0_wp: bool, cr4_smep: bool, cr4_smap: bool, efer_nx: bool,
              cr4_pke: bool = False, cr4_pks: bool = False, ept: bool = False) -> "PermissionModel":
        """update_permission_bitmask() + update_pkru_bitmask() (pkru_mask = 0 for EPT)."""
        perms = update_permission_bitmask(cr0_wp, cr4_smep, cr4_smap, efer_nx, ept).tobytes()
        pk = 0 if ept else update_pkru_bitmask(cr4_pke, cr0_wp, cr4_pks)
        return cls(perms, pk, bool(ept))

    @property
    def table(self) -> np.ndarray:
        return np.frombuffer(self.permissions, dtype=np.uint8)

    def fault(self, pte_access: int, access: int, *, pte_pkey: int = 0, rflags: int = 0,
              pkru: int = 0, pkrs: int = 0) -> int:
        return permission_fault(self, pte_access, access, pte_pkey=pte_pkey, rflags=rflags,
                                pkru=pkru, pkrs=pkrs)


def _check_access(access: int) -> int:
    a = uint("access", access, 64)
    if a & ~ACCESS_BITS:
        raise InputError(f"access={a:#x}: permission_fault takes P/W/U/F (+ bits 32..63 such as "
                         f"PFERR_IMPLICIT_ACCESS); bits {a & ~ACCESS_BITS:#x} would index past "
                         f"permissions[16]")
    return a


def permission_fault(model: PermissionModel, pte_access: int, access: int, *, pte_pkey: int = 0,
                     rflags: int = 0, pkru: int = 0, pkrs: int = 0) -> int:
    """permission_fault(): 0, or the error code (PFERR_PRESENT, + PFERR_PK) of the fault.

    ``access`` is the walker's pfec (P/W/U/F, optionally PFERR_IMPLICIT_ACCESS); SMAP is not
    checked when EFLAGS.AC=1 and the access is explicit; ``pte_pkey`` (0..15) selects two
    bits of PKRU (user pages) or PKRS (supervisor pages, PKS model)."""
    if not isinstance(model, PermissionModel):
        raise InputError(f"model={model!r}: expected a PermissionModel")
    acc = uint("pte_access", pte_access, 3)
    a = _check_access(access)
    key = uint("pte_pkey", pte_pkey, 4)
    rf = uint("rflags", rflags, 64)
    ru, rs = uint("pkru", pkru, 32), uint("pkrs", pkrs, 32)
    pfec = a & 0xFFFFFFFF
    not_smap = bool(rf & RFLAGS_AC) and not (a & PFERR_IMPLICIT_ACCESS)
    index = (pfec | (PFERR_RSVD if not_smap else 0)) >> 1
    fault = (model.permissions[index & 0xF] >> acc) & 1
    errcode = PFERR_PRESENT
    if model.pkru_mask:
        user = bool(acc & ACC_USER)
        reg = ru if user else rs
        bits = (reg >> (key * 2)) & 3
        offset = (pfec & ~1 & 0x1F) | (PFERR_RSVD if user else 0)
        bits &= model.pkru_mask >> offset
        if bits:
            errcode |= PFERR_PK
            fault = 1
    return errcode if fault else 0


def permission_fault_batch(model: PermissionModel, pte_access: np.ndarray, access: np.ndarray, *,
                           pte_pkey: np.ndarray | None = None, rflags_ac: np.ndarray | None = None,
                           pkru: int = 0, pkrs: int = 0) -> np.ndarray:
    """permission_fault() over arrays: uint8 ``pte_access``, uint64 ``access``, optional uint8
    ``pte_pkey`` and bool ``rflags_ac`` (EFLAGS.AC per element), all of one shape.  Returns the
    uint8 error codes (0 = no fault).  Pure numpy gathers; no Python loop over elements."""
    if not isinstance(model, PermissionModel):
        raise InputError(f"model={model!r}: expected a PermissionModel")
    in_array("pte_access", pte_access, np.uint8)
    in_array("access", access, np.uint64)
    arrays = [("pte_access", pte_access), ("access", access)]
    if pte_pkey is not None:
        in_array("pte_pkey", pte_pkey, np.uint8)
        arrays.append(("pte_pkey", pte_pkey))
    if rflags_ac is not None:
        in_array("rflags_ac", rflags_ac, np.bool_)
        arrays.append(("rflags_ac", rflags_ac))
    same_shape(arrays)
    ru, rs = uint("pkru", pkru, 32), uint("pkrs", pkrs, 32)
    if pte_access.size and int(pte_access.max()) > 7:
        i = int(np.argmax(pte_access > 7))
        raise InputError(f"pte_access[{i}]={int(pte_access.reshape(-1)[i])}: ACC_* bits are 0..7")
    bad = (access & np.uint64(~ACCESS_BITS & 0xFFFFFFFFFFFFFFFF)) != 0
    if bad.any():
        i = int(np.argmax(bad.reshape(-1)))
        raise InputError(f"access[{i}]={int(access.reshape(-1)[i]):#x}: permission_fault takes "
                         f"P/W/U/F (+ bits 32..63); RSVD, PK and bits 5..31 are refused")
    if pte_pkey is not None and pte_pkey.size and int(pte_pkey.max()) > 15:
        i = int(np.argmax(pte_pkey.reshape(-1) > 15))
        raise InputError(f"pte_pkey[{i}]={int(pte_pkey.reshape(-1)[i])}: protection keys are 0..15")
    pfec = (access & np.uint64(0x1F)).astype(np.uint32)
    implicit = (access & np.uint64(PFERR_IMPLICIT_ACCESS)) != 0
    ac = rflags_ac if rflags_ac is not None else np.zeros(access.shape, bool)
    not_smap = ac & ~implicit
    index = (pfec | np.where(not_smap, np.uint32(PFERR_RSVD), np.uint32(0))) >> 1
    table = model.table
    fault = (table[index] >> pte_access.astype(np.uint8)) & 1
    out = np.where(fault != 0, np.uint8(PFERR_PRESENT), np.uint8(0))
    if model.pkru_mask:
        key = (pte_pkey if pte_pkey is not None else np.zeros(access.shape, np.uint8)).astype(np.uint32)
        user = (pte_access & ACC_USER) != 0
        reg = np.where(user, np.uint32(ru), np.uint32(rs))
        bits = (reg >> (key * 2)) & 3
        offset = (pfec & ~np.uint32(1)) | np.where(user, np.uint32(PFERR_RSVD), np.uint32(0))
        bits &= (np.uint32(model.pkru_mask) >> offset) & 3
        pk = bits != 0
        out = np.where(pk, np.uint8(PFERR_PRESENT | PFERR_PK), out)
    return out.astype(np.uint8)
