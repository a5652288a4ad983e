"""Permission bitmask vs an exhaustive enumeration of the architectural rules.

The oracle below is written from the SDM/APM text (Intel SDM vol. 3 4.6 "Access Rights",
4.6.2 "Protection Keys"; 28.3.3 for EPT), not from KVM: for every access (read/write/fetch,
user/supervisor, explicit/implicit, EFLAGS.AC) and every combination of effective page rights
(U/S, R/W, XD) under every CR0.WP / CR4.SMEP / CR4.SMAP / EFER.NX, it must agree with
``permissions[pfec >> 1] >> pte_access`` as KVM precomputes it, scalar and batch."""
import itertools

import numpy as np
import pytest

from pykvmmu import perm as P
from pykvmmu.errors import PykvmmuError

BOOLS = (False, True)


def arch_fault(*, user_page, writable, executable, write, user_mode, fetch, wp, smep, smap, nx,
               ac, implicit):
    """Does the access fault (SDM 4.6)?  ``user_mode``: CPL=3 explicit access."""
    if user_mode:
        if not user_page:
            return True                              # supervisor-mode address
        if write and not writable:
            return True                              # user writes need R/W=1 at every level
        if fetch and nx and not executable:
            return True
        return False
    if fetch:
        if nx and not executable:
            return True
        if smep and user_page:                       # SMEP: no supervisor fetch from user pages
            return True
        return False
    if smap and user_page and (implicit or not ac):  # SMAP: data access to user page
        return True
    if write and not writable and wp:                # CR0.WP=0 lets supervisor writes through
        return True
    return False


def arch_pk(*, user_page, write, user_mode, fetch, wp, pke, pks, ad, wd):
    """Protection-key violation (SDM 4.6.2; PKS for supervisor-mode addresses)."""
    if fetch:
        return False
    if user_page and not pke or not user_page and not pks:
        return False
    if ad:
        return True
    return bool(wd and write and (user_mode or wp))


def _models():
    for wp, smep, smap, nx in itertools.product(BOOLS, repeat=4):
        yield (wp, smep, smap, nx), P.PermissionModel.build(cr0_wp=wp, cr4_smep=smep,
                                                            cr4_smap=smap, efer_nx=nx)


def test_permission_bitmask_matches_architecture_exhaustively():
    n = 0
    for (wp, smep, smap, nx), model in _models():
        for w, u, f, present, ac, implicit in itertools.product(BOOLS, repeat=6):
            if implicit and u or w and f:
                continue                  # implicit accesses are supervisor; a fetch never writes
            access = ((P.PFERR_WRITE if w else 0) | (P.PFERR_USER if u else 0)
                      | (P.PFERR_FETCH if f else 0) | (P.PFERR_PRESENT if present else 0)
                      | (P.PFERR_IMPLICIT_ACCESS if implicit else 0))
            for acc in range(8):
                want = arch_fault(user_page=bool(acc & 4), writable=bool(acc & 2),
                                  executable=bool(acc & 1), write=w, user_mode=u, fetch=f,
                                  wp=wp, smep=smep, smap=smap, nx=nx, ac=ac, implicit=implicit)
                got = P.permission_fault(model, acc, access, rflags=P.RFLAGS_AC if ac else 0)
                assert got == (P.PFERR_PRESENT if want else 0), (wp, smep, smap, nx, access, acc, ac)
                n += 1
    assert n == 16 * 36 * 8


def test_ept_bitmask_matches_architecture():
    model = P.PermissionModel.build(cr0_wp=False, cr4_smep=False, cr4_smap=False, efer_nx=False,
                                    ept=True)
    assert model.pkru_mask == 0
    for acc in range(8):                            # ACC_USER = readable in an EPT walk
        r, w, x = bool(acc & 4), bool(acc & 2), bool(acc & 1)
        for read, write, fetch in itertools.product(BOOLS, repeat=3):
            access = (P.PFERR_USER if read else 0) | (P.PFERR_WRITE if write else 0) | (
                P.PFERR_FETCH if fetch else 0)
            want = (read and not r) or (write and not w) or (fetch and not x)
            assert P.permission_fault(model, acc, access) == (1 if want else 0)


def test_pkeys_match_architecture_exhaustively():
    for wp, pke, pks in itertools.product(BOOLS, repeat=3):
        model = P.PermissionModel.build(cr0_wp=wp, cr4_smep=False, cr4_smap=False, efer_nx=True,
                                        cr4_pke=pke, cr4_pks=pks)
        for w, u, f, acc, key, ad, wd, ac in itertools.product(
                BOOLS, BOOLS, BOOLS, range(8), (0, 7, 15), BOOLS, BOOLS, BOOLS):
            if w and f:
                continue
            access = (P.PFERR_WRITE if w else 0) | (P.PFERR_USER if u else 0) | (
                P.PFERR_FETCH if f else 0)
            reg = ((2 if wd else 0) | (1 if ad else 0)) << (2 * key)
            other = 0xFFFFFFFF & ~(3 << (2 * key))   # every other key fully disabled
            pkru, pkrs = (reg | other, reg | other)
            base = arch_fault(user_page=bool(acc & 4), writable=bool(acc & 2),
                              executable=bool(acc & 1), write=w, user_mode=u, fetch=f, wp=wp,
                              smep=False, smap=False, nx=True, ac=ac, implicit=False)
            pk = arch_pk(user_page=bool(acc & 4), write=w, user_mode=u, fetch=f, wp=wp, pke=pke,
                         pks=pks, ad=ad, wd=wd)
            want = (P.PFERR_PRESENT | (P.PFERR_PK if pk else 0)) if base or pk else 0
            got = P.permission_fault(model, acc, access, pte_pkey=key, pkru=pkru, pkrs=pkrs,
                                     rflags=P.RFLAGS_AC if ac else 0)
            assert got == want, (wp, pke, pks, access, acc, key, ad, wd)


def test_mainline_pkru_mask_values():
    assert P.update_pkru_bitmask(False, True) == 0
    m = P.update_pkru_bitmask(True, True)
    # slots with the page-U bit (RSVD position) clear are 0 without PKS
    for pfec in range(0, 32, 2):
        bits = (m >> pfec) & 3
        if not pfec & P.PFERR_RSVD or pfec & P.PFERR_FETCH:
            assert bits == 0
        else:
            assert bits & 1
            assert bool(bits & 2) == bool(pfec & P.PFERR_WRITE)
    # CR0.WP=0: WD ignored for supervisor writes only
    m0 = P.update_pkru_bitmask(True, False)
    assert (m0 >> (P.PFERR_RSVD | P.PFERR_WRITE)) & 3 == 1
    assert (m0 >> (P.PFERR_RSVD | P.PFERR_WRITE | P.PFERR_USER)) & 3 == 3


def test_bitmask_table_shape_and_known_bytes():
    t = P.update_permission_bitmask(True, False, False, True)
    assert t.dtype == np.uint8 and t.shape == (16,)
    assert t[0] == 0                                  # supervisor read: never faults
    assert t[P.PFERR_USER >> 1] == 0x0F               # user read of supervisor pages (U=0)
    assert t[P.PFERR_WRITE >> 1] == 0x33              # supervisor write needs W
    assert t[P.PFERR_FETCH >> 1] == 0x55              # fetch needs X


def test_batch_equals_scalar():
    rng = np.random.default_rng(1)
    n = 4096
    acc = rng.integers(0, 8, n, dtype=np.uint8)
    bits = rng.integers(0, 32, n).astype(np.uint64)
    access = (bits & np.uint64(0x17)) | np.where(bits & np.uint64(8), np.uint64(1 << 48),
                                                  np.uint64(0))
    access = np.where((access & np.uint64(4)) != 0, access & np.uint64(0x17), access)
    key = rng.integers(0, 16, n, dtype=np.uint8)
    ac = rng.integers(0, 2, n).astype(bool)
    pkru, pkrs = 0x5A5A_1234, 0x0F0F_A5A5
    for (wp, smep, smap, nx), _ in _models():
        for pke, pks in ((False, False), (True, False), (True, True)):
            model = P.PermissionModel.build(cr0_wp=wp, cr4_smep=smep, cr4_smap=smap, efer_nx=nx,
                                            cr4_pke=pke, cr4_pks=pks)
            got = P.permission_fault_batch(model, acc, access, pte_pkey=key, rflags_ac=ac,
                                           pkru=pkru, pkrs=pkrs)
            want = [P.permission_fault(model, int(a), int(x), pte_pkey=int(k),
                                       rflags=P.RFLAGS_AC if c else 0, pkru=pkru, pkrs=pkrs)
                    for a, x, k, c in zip(acc, access, key, ac)]
            assert got.tolist() == want


def test_refusals():
    model = P.PermissionModel.build(cr0_wp=True, cr4_smep=True, cr4_smap=True, efer_nx=True)
    for bad in (P.PFERR_RSVD, P.PFERR_PK, 1 << 15):
        with pytest.raises(PykvmmuError, match="access"):
            P.permission_fault(model, 7, bad)
    with pytest.raises(PykvmmuError, match="pte_access"):
        P.permission_fault(model, 8, 0)
    with pytest.raises(PykvmmuError, match="pte_pkey"):
        P.permission_fault(model, 7, 0, pte_pkey=16)
    with pytest.raises(PykvmmuError, match="expected a bool"):
        P.update_permission_bitmask(2, False, False, False)
    with pytest.raises(PykvmmuError, match="dtype"):
        P.permission_fault_batch(model, np.zeros(3, np.int64), np.zeros(3, np.uint64))
    with pytest.raises(PykvmmuError, match="shape"):
        P.permission_fault_batch(model, np.zeros(3, np.uint8), np.zeros(4, np.uint64))
    with pytest.raises(PykvmmuError, match=r"access\[1\]"):
        P.permission_fault_batch(model, np.zeros(3, np.uint8), np.array([0, 8, 0], np.uint64))
    with pytest.raises(PykvmmuError, match=r"pte_access\[2\]"):
        P.permission_fault_batch(model, np.array([0, 1, 9], np.uint8), np.zeros(3, np.uint64))
    assert P.pfec_str(0x1F) == "P|W|U|RSVD|F"
