"""The SPTE engine: build, change, test and decode shadow page table entries.

Every routine models the kernel routine it is named after (arch/x86/kvm/mmu/spte.[ch],
mmu.c) under the MmuConfig's kernel-era profile.  Scalar forms take Python ints;
``*_batch`` forms take numpy arrays (exact dtype, C-contiguous) and run in the C core
with the GIL released.
"""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, overload

import numpy as np

from . import _par
from . import profile as _profile
from ._batch import bad_u64, in_array, out_array, ptr, ptr_at, same_shape, uint
from ._batch import tuple_new as _tuple_new
from ._check import boolean, in_range, mmu_config
from ._ffi import ffi, lib
from ._memo import bounded_put
from .config import (ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, MmuConfig)
from .errors import InputError, rule_texts

__all__ = [  # the predicates are appended from the C table (RULES) below
    "make_spte", "make_spte_batch", "MakeSpteResult", "make_nonleaf_spte", "make_nonleaf_spte_batch",
    "make_small_spte", "make_small_spte_batch", "make_huge_spte", "make_huge_spte_batch",
    "mark_spte_for_access_track", "restore_acc_track_spte", "access_track_batch",
    "PREDICATES", "predicate", "predicate_batch", "spte_to_pfn", "spte_to_pfn_batch",
    "leaf_spte_change_needs_tlb_flush", "leaf_spte_change_needs_tlb_flush_batch",
    "decode", "decode_batch", "SpteRecord", "DECODE_DTYPE", "RULES", "PredicateRule",
    "ACC_EXEC_MASK", "ACC_WRITE_MASK", "ACC_USER_MASK", "ACC_ALL",
]

_ERRORS = rule_texts("spte")

# make_spte per-SPTE flag bits (the ``flags`` array of make_spte_batch).
MK_AD_DISABLED = lib.KVMMU_MK_AD_DISABLED
MK_WRPROT_ONLY = lib.KVMMU_MK_WRPROT_ONLY
MK_PREFETCH = lib.KVMMU_MK_PREFETCH
MK_SYNCHRONIZING = lib.KVMMU_MK_SYNCHRONIZING
MK_HOST_WRITABLE = lib.KVMMU_MK_HOST_WRITABLE
MK_HOST_MMIO = lib.KVMMU_MK_HOST_MMIO
MK_UNSYNC_FAILS = lib.KVMMU_MK_UNSYNC_FAILS
MK_NX_HUGE = lib.KVMMU_MK_NX_HUGE
MEMTYPE_AUTO = lib.KVMMU_MEMTYPE_AUTO


def _batch_error(func: str, idx: int, err: int, values: dict) -> InputError:
    i = idx - 1
    shown = ", ".join(f"{k}[{i}]={v[i] if isinstance(v, np.ndarray) else v!r}"
                      for k, v in values.items())
    return InputError(f"{func}: element {i} ({shown}): {_ERRORS.get(err, f'error {err}')}")


def _mkflags(prefetch, synchronizing, host_writable, host_mmio, ad_disabled, ad_wrprot_only,
             unsync_fails, nx_huge) -> int:
    flags = (prefetch, synchronizing, host_writable, host_mmio, ad_disabled, ad_wrprot_only,
             unsync_fails, nx_huge)
    if not (prefetch.__class__ is bool and synchronizing.__class__ is bool     # fast path
            and host_writable.__class__ is bool and host_mmio.__class__ is bool
            and ad_disabled.__class__ is bool and ad_wrprot_only.__class__ is bool
            and unsync_fails.__class__ is bool and nx_huge.__class__ is bool):
        for n, f in zip(("prefetch", "synchronizing", "host_writable", "host_mmio", "ad_disabled",
                         "ad_wrprot_only", "unsync_fails", "nx_huge_pages"), flags):
            boolean(n, f)
    return ((MK_PREFETCH if prefetch else 0) | (MK_SYNCHRONIZING if synchronizing else 0)
            | (MK_HOST_WRITABLE if host_writable else 0) | (MK_HOST_MMIO if host_mmio else 0)
            | (MK_AD_DISABLED if ad_disabled else 0) | (MK_WRPROT_ONLY if ad_wrprot_only else 0)
            | (MK_UNSYNC_FAILS if unsync_fails else 0) | (MK_NX_HUGE if nx_huge else 0))


class MakeSpteResult(NamedTuple):
    """make_spte()'s outputs: the new SPTE, the write-protect flag, and the WARNs it would raise."""

    spte: int
    wrprot: bool
    warnings: tuple


def _memtype(memtype) -> int:
    if memtype is None:
        return MEMTYPE_AUTO
    m = uint("memtype", memtype, 8)
    if m & ~0x78:
        raise InputError(f"memtype={m:#x}: {_ERRORS[lib.KVMMU_E_MEMTYPE]}")
    return m


_U64_LIMIT = 1 << 64
_MAKE_OUT = threading.local()      # per thread: the C call releases the GIL
#: kvmmu_make_spte's return word >> 9 -> the warnings make_spte() would raise
_WARNINGS = tuple(tuple(w for bit, w in ((lib.KVMMU_MKR_WARN_NONPRESENT,
                                          "pte_access|shadow_present_mask == SHADOW_NONPRESENT_VALUE"),
                                         (lib.KVMMU_MKR_WARN_RSVD, "is_rsvd_spte(shadow_zero_check)"))
                        if (bits << 9) & bit) for bits in range(4))
_MK_AD_DEFAULT, _MK_NX_DEFAULT = lib.KVMMU_MK_AD_DEFAULT, lib.KVMMU_MK_NX_DEFAULT
_MK_OLD_DEFAULT, _MKR_WRPROT = lib.KVMMU_MK_OLD_DEFAULT, lib.KVMMU_MKR_WRPROT
_make_c = lib.kvmmu_make_spte


_make_fast = lib.kvmmu_make_spte_fast
_MKF_ERROR = lib.KVMMU_MKF_ERROR
#: the flags make_spte() passes with every argument at its default
_MK_DEFAULTS = MK_HOST_WRITABLE | _MK_AD_DEFAULT | _MK_NX_DEFAULT | _MK_OLD_DEFAULT
#: kvmmu_make_spte_fast's result (0..7) -> MakeSpteResult's wrprot and warnings
_FAST_WRPROT = tuple(bool(r & 1) for r in range(8))
_FAST_WARNINGS = tuple(_WARNINGS[r >> 1] for r in range(8))


def make_spte(cfg: MmuConfig, pfn: int, *, level: int = 1, pte_access: int = ACC_ALL,
              old_spte: int | None = None, prefetch: bool = False, synchronizing: bool = False,
              host_writable: bool = True, host_mmio: bool = False, ad_disabled: bool | None = None,
              ad_wrprot_only: bool = False, unsync_fails: bool = False,
              nx_huge_pages: bool | None = None, memtype: int | None = None) -> MakeSpteResult:
    """Model of ``make_spte()`` (arch/x86/kvm/mmu/spte.c) for one leaf SPTE.

    ``ad_disabled`` is ``sp->role.ad_disabled``; ``ad_wrprot_only`` is
    ``kvm_mmu_page_ad_need_write_protect()`` (PML + L2); ``unsync_fails`` is the outcome of
    ``mmu_try_to_unsync_pages()`` (nonzero: write-tracked, or shadowed and not unsyncable);
    ``host_mmio`` is ``kvm_is_mmio_pfn()``; ``memtype`` is the value ``get_mt_mask`` returns
    (None: ``vmx_get_mt_mask()``'s rule, honouring ``cfg.ignore_guest_pat``).
    ``old_spte`` defaults to the era's SHADOW_NONPRESENT_VALUE; ``ad_disabled`` defaults
    to ``!kvm_ad_enabled()`` (the TDP MMU's role).  Before v6.13, ``synchronizing``
    stands for ``!can_unsync``.
    """
    # Fast path: an MmuConfig, plain ints, real bools, old_spte and memtype at their defaults:
    # one C call that validates and builds.  Anything else, or any rule the C call reports,
    # goes to the full checks (_make_spte_checked), which name the argument and the rule.
    if (cfg.__class__ is MmuConfig and pfn.__class__ is int and level.__class__ is int
            and pte_access.__class__ is int and old_spte is None and memtype is None):
        mk = _MK_DEFAULTS           # a non-bool flag makes it negative (and it stays negative)
        if prefetch is not False:
            mk = mk | MK_PREFETCH if prefetch is True else -1
        if synchronizing is not False:
            mk = mk | MK_SYNCHRONIZING if synchronizing is True else -1
        if host_writable is not True:
            mk = mk & ~MK_HOST_WRITABLE if host_writable is False else -1
        if host_mmio is not False:
            mk = mk | MK_HOST_MMIO if host_mmio is True else -1
        if ad_wrprot_only is not False:
            mk = mk | MK_WRPROT_ONLY if ad_wrprot_only is True else -1
        if unsync_fails is not False:
            mk = mk | MK_UNSYNC_FAILS if unsync_fails is True else -1
        if ad_disabled is not None:
            mk = (mk & ~_MK_AD_DEFAULT | (MK_AD_DISABLED if ad_disabled else 0)
                  if ad_disabled is True or ad_disabled is False else -1)
        if nx_huge_pages is not None:
            mk = (mk & ~_MK_NX_DEFAULT | (MK_NX_HUGE if nx_huge_pages else 0)
                  if nx_huge_pages is True or nx_huge_pages is False else -1)
        if mk >= 0:
            try:
                out = _MAKE_OUT.out
            except AttributeError:
                out = _MAKE_OUT.out = ffi.new("uint64_t *")
            try:
                r = _make_fast(cfg._cptr, pfn, level, pte_access, mk, out)
            except OverflowError:
                r = _MKF_ERROR
            if r < _MKF_ERROR:
                return _tuple_new(MakeSpteResult, (out[0], _FAST_WRPROT[r], _FAST_WARNINGS[r]))
    return _make_spte_checked(cfg, pfn, level, pte_access, old_spte, prefetch, synchronizing,
                              host_writable, host_mmio, ad_disabled, ad_wrprot_only, unsync_fails,
                              nx_huge_pages, memtype)


def _make_spte_checked(cfg, pfn, level, pte_access, old_spte, prefetch, synchronizing,
                       host_writable, host_mmio, ad_disabled, ad_wrprot_only, unsync_fails,
                       nx_huge_pages, memtype) -> MakeSpteResult:
    """make_spte() with every argument checked (types, widths, then the C core's rules)."""
    mmu_config(cfg)
    mk = 0
    for name, flag, bit in (("prefetch", prefetch, MK_PREFETCH),
                            ("synchronizing", synchronizing, MK_SYNCHRONIZING),
                            ("host_writable", host_writable, MK_HOST_WRITABLE),
                            ("host_mmio", host_mmio, MK_HOST_MMIO),
                            ("ad_wrprot_only", ad_wrprot_only, MK_WRPROT_ONLY),
                            ("unsync_fails", unsync_fails, MK_UNSYNC_FAILS)):
        if boolean(name, flag):
            mk |= bit
    mk |= (_MK_AD_DEFAULT if ad_disabled is None else
           MK_AD_DISABLED if boolean("ad_disabled", ad_disabled) else 0)
    mk |= (_MK_NX_DEFAULT if nx_huge_pages is None else
           MK_NX_HUGE if boolean("nx_huge_pages", nx_huge_pages) else 0)
    if old_spte is None:
        mk |= _MK_OLD_DEFAULT
        old_spte = 0
    try:
        out = _MAKE_OUT.out
    except AttributeError:
        out = _MAKE_OUT.out = ffi.new("uint64_t *")
    r = -1
    if memtype is None and pfn.__class__ is int and level.__class__ is int \
            and pte_access.__class__ is int and old_spte.__class__ is int:
        try:        # plain ints: the C core names a level or access outside its range
            r = _make_c(cfg._cptr, pfn, old_spte, level, pte_access, mk, MEMTYPE_AUTO, out)
        except OverflowError:
            pass
    if r < 0:       # the argument types and widths, then the C rules
        r = _make_c(cfg._cptr, uint("pfn", pfn), uint("old_spte", old_spte),
                    uint("level", level, 8), uint("pte_access", pte_access, 8), mk,
                    _memtype(memtype), out)
    err = r & 0xFF
    if err:
        bad = {lib.KVMMU_E_PFN: f"pfn={pfn:#x}", lib.KVMMU_E_LEVEL: f"level={level}",
               lib.KVMMU_E_ACCESS: f"pte_access={pte_access:#x}"}.get(err, "input")
        raise InputError(f"make_spte: {bad}: {_ERRORS[err]}"
                         + (f" {cfg.base_addr_mask:#x}" if err == lib.KVMMU_E_PFN else ""))
    return _tuple_new(MakeSpteResult, (out[0], (r & _MKR_WRPROT) != 0, _WARNINGS[r >> 9]))


def _arg(name, v, dtype, bits, shape_list):
    """A per-element argument: None, a scalar (validated) or an array (checked)."""
    if isinstance(v, np.ndarray):
        in_array(name, v, dtype)
        shape_list.append((name, v))
        return v, 0
    return None, uint(name, v, bits)


@overload
def make_spte_batch(cfg: MmuConfig, pfn: np.ndarray, *, level=..., pte_access=..., old_spte=...,
                    flags=..., prefetch: bool = ..., synchronizing: bool = ...,
                    host_writable: bool = ..., host_mmio: bool = ..., ad_disabled: bool | None = ...,
                    ad_wrprot_only: bool = ..., unsync_fails: bool = ...,
                    nx_huge_pages: bool | None = ..., memtype=..., out: np.ndarray | None = ...,
                    with_wrprot: Literal[False] = ..., threads: int | None = ...) -> np.ndarray: ...
@overload
def make_spte_batch(cfg: MmuConfig, pfn: np.ndarray, *, level=..., pte_access=..., old_spte=...,
                    flags=..., prefetch: bool = ..., synchronizing: bool = ...,
                    host_writable: bool = ..., host_mmio: bool = ..., ad_disabled: bool | None = ...,
                    ad_wrprot_only: bool = ..., unsync_fails: bool = ...,
                    nx_huge_pages: bool | None = ..., memtype=..., out: np.ndarray | None = ...,
                    with_wrprot: Literal[True], threads: int | None = ...) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def make_spte_batch(cfg: MmuConfig, pfn: np.ndarray, *, level=..., pte_access=..., old_spte=...,
                    flags=..., prefetch: bool = ..., synchronizing: bool = ...,
                    host_writable: bool = ..., host_mmio: bool = ..., ad_disabled: bool | None = ...,
                    ad_wrprot_only: bool = ..., unsync_fails: bool = ...,
                    nx_huge_pages: bool | None = ..., memtype=..., out: np.ndarray | None = ...,
                    with_wrprot: bool, threads: int | None = ...) -> np.ndarray | tuple[np.ndarray, np.ndarray]: ...
def make_spte_batch(cfg: MmuConfig, pfn: np.ndarray, *, level=1, pte_access=ACC_ALL, old_spte=None,
                    flags=None, prefetch: bool = False, synchronizing: bool = False,
                    host_writable: bool = True, host_mmio: bool = False, ad_disabled: bool | None = None,
                    ad_wrprot_only: bool = False, unsync_fails: bool = False,
                    nx_huge_pages: bool | None = None, memtype=None, out: np.ndarray | None = None,
                    with_wrprot: bool = False,
                    threads: int | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Batch ``make_spte()``: one SPTE per pfn (uint64 array).

    ``level``, ``pte_access``, ``memtype`` (uint8 arrays), ``old_spte`` (uint64 array) and
    ``flags`` (uint8 array of ``MK_*`` bits, ORed with the scalar booleans) may be scalars
    or arrays of the pfn array's shape.  Returns the SPTE array, or ``(sptes, wrprot)``
    with ``with_wrprot=True``.  ``threads``: see :mod:`pykvmmu._par` (None: automatic).
    """
    mmu_config(cfg)
    in_array("pfn", pfn, np.uint64)
    shapes = [("pfn", pfn)]
    lv_a, lv_s = _arg("level", level, np.uint8, 8, shapes)
    ac_a, ac_s = _arg("pte_access", pte_access, np.uint8, 8, shapes)
    if old_spte is None:
        old_spte = cfg.profile.nonpresent_value
    os_a, os_s = _arg("old_spte", old_spte, np.uint64, 64, shapes)
    if memtype is None:
        mt_a, mt_s = None, MEMTYPE_AUTO
    else:
        mt_a, mt_s = _arg("memtype", memtype, np.uint8, 8, shapes)
        if mt_a is None:
            mt_s = _memtype(mt_s)
    if flags is None:
        fl_a = None
    else:
        fl_a, extra = _arg("flags", flags, np.uint8, 8, shapes)
        if fl_a is None:
            raise InputError(f"flags={flags!r}: pass a uint8 array of MK_* bits, or use the booleans")
    nx = cfg.nx_huge_pages if nx_huge_pages is None else boolean("nx_huge_pages", nx_huge_pages)
    if ad_disabled is None:
        ad_disabled = not cfg.ad_enabled
    with_wrprot = boolean("with_wrprot", with_wrprot)
    mk = _mkflags(prefetch, synchronizing, host_writable, host_mmio, ad_disabled, ad_wrprot_only,
                  unsync_fails, nx)
    shape = same_shape(shapes)
    out = out_array("out", out, np.uint64, shape, shapes)
    wp = np.empty(shape, dtype=np.bool_) if with_wrprot else None
    c = cfg._cptr

    def part(lo, hi):
        err = ffi.new("int *")
        bad = lib.kvmmu_make_spte_batch(
            c, ptr_at(pfn, "uint64_t", lo), ptr_at(os_a, "uint64_t", lo), os_s,
            ptr_at(lv_a, "uint8_t", lo), lv_s, ptr_at(ac_a, "uint8_t", lo), ac_s,
            ptr_at(fl_a, "uint8_t", lo), mk, ptr_at(mt_a, "uint8_t", lo), mt_s,
            ptr_at(out, "uint64_t", lo), ptr_at(wp, "uint8_t", lo), hi - lo, err)
        return bad, err[0]
    bad, code = _par.run(pfn.size, threads, part)
    if bad:
        raise _batch_error("make_spte_batch", bad, code,
                           {"pfn": pfn.reshape(-1), "level": lv_a.reshape(-1) if lv_a is not None else lv_s,
                            "pte_access": ac_a.reshape(-1) if ac_a is not None else ac_s})
    return out if wp is None else (out, wp)       # wp: an array exactly with with_wrprot


_nonleaf_c = lib.kvmmu_make_nonleaf_spte


def make_nonleaf_spte(cfg: MmuConfig, child_pa: int, ad_disabled: bool | None = None) -> int:
    """``make_nonleaf_spte(child_pt, ad_disabled)``: an SPTE pointing to a child page table
    (``ad_disabled`` defaults to ``!kvm_ad_enabled()``, as tdp_mmu_link_sp passes)."""
    if cfg.__class__ is MmuConfig and child_pa.__class__ is int and not child_pa & ~cfg.base_addr_mask:
        if ad_disabled is None:         # fast path: a plain int within the mask, a real bool
            return _nonleaf_c(cfg._cptr, child_pa, not cfg.ad_enabled)
        if ad_disabled is True or ad_disabled is False:
            return _nonleaf_c(cfg._cptr, child_pa, ad_disabled)
    mmu_config(cfg)
    pa = uint("child_pa", child_pa)
    ad_disabled = not cfg.ad_enabled if ad_disabled is None else boolean("ad_disabled", ad_disabled)
    if pa & ~cfg.base_addr_mask:
        raise InputError(f"make_nonleaf_spte: child_pa={pa:#x}: must be 4 KiB aligned and within "
                         f"SPTE_BASE_ADDR_MASK {cfg.base_addr_mask:#x}")
    return _nonleaf_c(cfg._cptr, pa, bool(ad_disabled))


def make_nonleaf_spte_batch(cfg: MmuConfig, child_pa: np.ndarray, ad_disabled: bool | None = None,
                            out: np.ndarray | None = None) -> np.ndarray:
    """Batch ``make_nonleaf_spte()`` over a uint64 array of child page-table addresses."""
    mmu_config(cfg)
    in_array("child_pa", child_pa, np.uint64)
    ad_disabled = not cfg.ad_enabled if ad_disabled is None else boolean("ad_disabled", ad_disabled)
    out = out_array("out", out, np.uint64, child_pa.shape, [("child_pa", child_pa)])
    bad = lib.kvmmu_make_nonleaf_spte_batch(cfg._cptr, ptr(child_pa, "uint64_t"), bool(ad_disabled),
                                            ptr(out, "uint64_t"), child_pa.size)
    if bad:
        v = int(child_pa.reshape(-1)[bad - 1])
        raise InputError(f"make_nonleaf_spte_batch: element {bad - 1} (child_pa={v:#x}): must be "
                         f"4 KiB aligned and within SPTE_BASE_ADDR_MASK {cfg.base_addr_mask:#x}")
    return out


def _split_args(cfg, child_level, role_access):
    _profile.require(cfg.profile, "has_make_small_spte", "make_small_spte")
    child_level = uint("child_level", child_level, 8)
    if not 1 <= child_level <= 4:
        raise InputError(f"child_level={child_level}: a split child is at level 1..4")
    role_access = uint("role_access", role_access, 8)
    if role_access > 7:
        raise InputError(f"role_access={role_access:#x}: must be ACC_* bits (0..7)")
    return child_level, role_access


_small_c = lib.kvmmu_make_small_spte_checked
_huge_c = lib.kvmmu_make_huge_spte_checked
_NX_DEFAULT = lib.KVMMU_NX_DEFAULT     # nx_huge_pages=None; -1 (a non-bool) overflows: full checks


def make_small_spte(cfg: MmuConfig, huge_spte: int, child_level: int, index: int,
                    role_access: int = ACC_ALL, nx_huge_pages: bool | None = None) -> int:
    """``make_small_spte()`` (``make_huge_page_split_spte()`` before v6.13): child ``index``
    (0..511) of a huge SPTE split into a page table at ``child_level``."""
    if (cfg.__class__ is MmuConfig and huge_spte.__class__ is int and child_level.__class__ is int
            and index.__class__ is int and role_access.__class__ is int
            and cfg.profile.has_make_small_spte):
        try:        # fast path: one C call checks and splits; 0 means "see the full checks"
            s = _small_c(cfg._cptr, huge_spte, child_level, role_access, index,
                         _NX_DEFAULT if nx_huge_pages is None else 1 if nx_huge_pages is True
                         else 0 if nx_huge_pages is False else -1)
        except OverflowError:
            s = 0
        if s:
            return s
    mmu_config(cfg)
    child_level, role_access = _split_args(cfg, child_level, role_access)
    huge = uint("huge_spte", huge_spte)
    index = in_range("index", index, 0, 511, "a page table has 512 entries")
    nx = cfg.nx_huge_pages if nx_huge_pages is None else boolean("nx_huge_pages", nx_huge_pages)
    s = _small_c(cfg._cptr, huge, child_level, role_access, index, int(nx))
    if s:
        return s
    one = np.array([huge], dtype=np.uint64)      # the batch form names the rule (or returns 0)
    return int(make_small_spte_batch(cfg, one, child_level, index, role_access, nx)[0])


def make_small_spte_batch(cfg: MmuConfig, huge_spte: np.ndarray, child_level: int, index=None,
                          role_access: int = ACC_ALL, nx_huge_pages: bool | None = None,
                          out: np.ndarray | None = None) -> np.ndarray:
    """Batch ``make_small_spte()``; ``index`` is a scalar or a uint16 array (default: the
    512 children of a single huge SPTE are produced when ``huge_spte`` has one element
    and ``index`` is None)."""
    mmu_config(cfg)
    child_level, role_access = _split_args(cfg, child_level, role_access)
    in_array("huge_spte", huge_spte, np.uint64)
    nx = cfg.nx_huge_pages if nx_huge_pages is None else boolean("nx_huge_pages", nx_huge_pages)
    if index is None:
        if huge_spte.size != 1:
            raise InputError("make_small_spte_batch: index is required unless huge_spte has one element")
        index = np.arange(512, dtype=np.uint16)
        huge_spte = np.repeat(huge_spte.reshape(-1), 512)
    shapes = [("huge_spte", huge_spte)]
    ix_a, ix_s = _arg("index", index, np.uint16, 16, shapes)
    shape = same_shape(shapes)
    out = out_array("out", out, np.uint64, shape, shapes)
    err = ffi.new("int *")
    bad = lib.kvmmu_make_small_spte_batch(
        cfg._cptr, ptr(huge_spte, "uint64_t"), child_level, role_access,
        ptr(ix_a, "uint16_t") if ix_a is not None else ffi.NULL, ix_s, nx, ptr(out, "uint64_t"),
        huge_spte.size, err)
    if bad:
        e = _batch_error("make_small_spte", bad, err[0],
                         {"huge_spte": huge_spte.reshape(-1),
                          "index": ix_a.reshape(-1) if ix_a is not None else ix_s})
        if err[0] == lib.KVMMU_E_PFN:   # small_check: the huge pfn is not aligned
            pages = 1 << (9 * child_level)
            e = InputError(str(e).replace(_ERRORS[lib.KVMMU_E_PFN],
                                          f"the huge SPTE's pfn is not aligned to {pages} pages "
                                          f"(a level-{child_level + 1} huge page); "
                                          "make_small_spte ORs the child offset into it"))
        raise e
    return out


def make_huge_spte(cfg: MmuConfig, small_spte: int, level: int,
                   nx_huge_pages: bool | None = None) -> int:
    """``make_huge_spte()`` (v6.13+): the huge SPTE at ``level`` that replaces a page table
    whose child ``small_spte`` is given (collapsing after dirty logging)."""
    if (cfg.__class__ is MmuConfig and small_spte.__class__ is int and level.__class__ is int
            and cfg.profile.has_make_huge_spte):
        try:        # fast path: one C call checks and builds; 0 means "see the full checks"
            s = _huge_c(cfg._cptr, small_spte, level,
                        _NX_DEFAULT if nx_huge_pages is None else 1 if nx_huge_pages is True
                        else 0 if nx_huge_pages is False else -1)
        except OverflowError:
            s = 0
        if s:
            return s
    mmu_config(cfg)
    one = np.array([uint("small_spte", small_spte)], dtype=np.uint64)
    return int(make_huge_spte_batch(cfg, one, level, nx_huge_pages)[0])


def make_huge_spte_batch(cfg: MmuConfig, small_spte: np.ndarray, level: int,
                         nx_huge_pages: bool | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Batch ``make_huge_spte()``."""
    mmu_config(cfg)
    _profile.require(cfg.profile, "has_make_huge_spte", "make_huge_spte")
    level = uint("level", level, 8)
    if not 2 <= level <= 3:
        raise InputError(f"level={level}: huge SPTEs are at level 2 (2M) or 3 (1G)")
    in_array("small_spte", small_spte, np.uint64)
    nx = cfg.nx_huge_pages if nx_huge_pages is None else boolean("nx_huge_pages", nx_huge_pages)
    out = out_array("out", out, np.uint64, small_spte.shape, [("small_spte", small_spte)])
    err = ffi.new("int *")
    bad = lib.kvmmu_make_huge_spte_batch(cfg._cptr, ptr(small_spte, "uint64_t"), level, nx,
                                         ptr(out, "uint64_t"), small_spte.size, err)
    if bad:
        raise _batch_error("make_huge_spte", bad, err[0], {"small_spte": small_spte.reshape(-1)})
    return out


def mark_spte_for_access_track(cfg: MmuConfig, spte: int) -> int:
    """``mark_spte_for_access_track()``: age an SPTE (clear A, or save R/X and clear RWX)."""
    try:
        return lib.kvmmu_mark_spte_for_access_track(cfg._cptr, spte if spte.__class__ is int else uint("spte", spte))
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        raise bad_u64("spte", spte) from None


def restore_acc_track_spte(cfg: MmuConfig, spte: int) -> int:
    """``restore_acc_track_spte()``: put the saved R/X bits back (not W, not A)."""
    try:
        return lib.kvmmu_restore_acc_track_spte(cfg._cptr, spte if spte.__class__ is int else uint("spte", spte))
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        raise bad_u64("spte", spte) from None


def access_track_batch(cfg: MmuConfig, spte: np.ndarray, restore: bool = False,
                       out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Batch ``mark_spte_for_access_track()`` (or ``restore_acc_track_spte()``)."""
    mmu_config(cfg)
    in_array("spte", spte, np.uint64)
    out = out_array("out", out, np.uint64, spte.shape, [("spte", spte)])
    c, r = cfg._cptr, boolean("restore", restore)
    _par.map_parts(spte.size, threads, lambda lo, hi: lib.kvmmu_access_track_batch(
        c, ptr_at(spte, "uint64_t", lo), r, ptr_at(out, "uint64_t", lo), hi - lo))
    return out


# ------------------------------------------------------------------ predicates
class PredicateRule(NamedTuple):
    """One row of csrc/spte_rules.h: the predicate ``name`` (the kernel function modelled)."""

    name: str
    id: int                 # bit / byte index in the C core (KVMMU_P_*)
    needs_level: bool
    feature: str | None     # LayoutProfile flag the era needs, None for every era
    field: str              # DECODE_DTYPE field p_<field>
    doc: str


def _rules() -> tuple:
    n = ffi.new("size_t *")
    t = lib.kvmmu_spte_pred_table(n)
    rows = [t[i] for i in range(n[0])]
    s = lambda p: ffi.string(p).decode()  # noqa: E731
    return tuple(sorted((PredicateRule(s(r.kernel_fn), r.id, bool(r.needs_level), s(r.feature) or None,
                                       s(r.field), s(r.doc)) for r in rows), key=lambda r: r.id))


#: The predicate table of the C core (csrc/spte_rules.h), in predicate-number order.
RULES = _rules()
#: name -> (C predicate number, needs level, profile feature it requires or None)
PREDICATES = {r.name: (r.id, r.needs_level, r.feature) for r in RULES}


def _make_pred(name, num, needs_level, feature, doc) -> Callable[..., bool]:
    pred = lib.kvmmu_spte_pred

    def with_level(cfg: MmuConfig, spte: int, level: int) -> bool:
        if level.__class__ is not int or not 1 <= level <= 5:
            raise InputError(f"{name}: level={level!r}: must be 1..5")
        try:
            return pred(cfg._cptr, num, spte if spte.__class__ is int else uint("spte", spte), level)
        except (OverflowError, TypeError, AttributeError):
            mmu_config(cfg)
            raise bad_u64("spte", spte) from None

    def with_feature(cfg: MmuConfig, spte: int) -> bool:
        try:
            if not getattr(cfg.profile, feature):
                _profile.require(cfg.profile, feature, name)
            return pred(cfg._cptr, num, spte if spte.__class__ is int else uint("spte", spte), 1)
        except (OverflowError, TypeError, AttributeError):
            mmu_config(cfg)
            raise bad_u64("spte", spte) from None

    def plain(cfg: MmuConfig, spte: int) -> bool:
        try:
            return pred(cfg._cptr, num, spte if spte.__class__ is int else uint("spte", spte), 1)
        except (OverflowError, TypeError, AttributeError):
            mmu_config(cfg)
            raise bad_u64("spte", spte) from None
    f: Callable[..., bool] = with_level if needs_level else with_feature if feature else plain
    f.__name__ = f.__qualname__ = name
    f.__module__ = __name__
    f.__doc__ = f"Model of ``{name}()`` (arch/x86/kvm/mmu/spte.h): {doc}"
    return f


for _r in RULES:
    globals()[_r.name] = _make_pred(_r.name, _r.id, _r.needs_level, _r.feature, _r.doc)
    __all__.append(_r.name)
del _r


def __getattr__(name: str) -> Callable:
    """Only reached for names that do not exist (the predicates are bound above from the C
    table); declared so type checkers accept ``spte.is_mmio_spte`` and friends."""
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_pred_c = lib.kvmmu_spte_pred


def predicate(cfg: MmuConfig, name: str, spte: int, level: int = 1) -> bool:
    """Evaluate the predicate called ``name`` (a key of PREDICATES) on one SPTE."""
    try:
        _num, needs_level, _feat = PREDICATES[name]
    except (KeyError, TypeError):
        raise InputError(f"predicate={name!r}: unknown; known: {', '.join(PREDICATES)}") from None
    if (_feat is None and level.__class__ is int and 0 < level < 6 and spte.__class__ is int
            and cfg.__class__ is MmuConfig):
        try:        # fast path: plain ints, a predicate every era has: the C predicate directly
            return _pred_c(cfg._cptr, _num, spte, level if needs_level else 1)
        except OverflowError:
            pass
    if not needs_level:
        in_range("level", level, 1, 5, "PG_LEVEL_4K..PT64_ROOT_MAX_LEVEL")
    f = globals()[name]
    return f(cfg, spte, level) if needs_level else f(cfg, spte)


def predicate_batch(cfg: MmuConfig, name: str, spte: np.ndarray, level=1,
                    out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Evaluate predicate ``name`` over a uint64 array; returns a bool array."""
    mmu_config(cfg)
    try:
        num, needs_level, feat = PREDICATES[name]
    except (KeyError, TypeError):
        raise InputError(f"predicate={name!r}: unknown; known: {', '.join(PREDICATES)}") from None
    if feat:
        _profile.require(cfg.profile, feat, name)
    in_array("spte", spte, np.uint64)
    shapes = [("spte", spte)]
    lv_a, lv_s = _arg("level", level, np.uint8, 8, shapes)
    if lv_a is None and not 1 <= lv_s <= 5:
        raise InputError(f"level={lv_s}: must be 1..5")
    shape = same_shape(shapes)
    out = out_array("out", out, np.bool_, shape, shapes)
    c = cfg._cptr

    def part(lo, hi):
        err = ffi.new("int *")
        bad = lib.kvmmu_spte_pred_batch(c, num, ptr_at(spte, "uint64_t", lo),
                                        ptr_at(lv_a, "uint8_t", lo), lv_s,
                                        ptr_at(out, "uint8_t", lo), hi - lo, err)
        return bad, err[0]
    bad, code = _par.run(spte.size, threads, part)
    if bad:
        raise _batch_error(name, bad, code, {"level": lv_a.reshape(-1) if lv_a is not None else lv_s})
    return out


def spte_to_pfn(cfg: MmuConfig, spte: int) -> int:
    """``spte_to_pfn()``: ``(spte & SPTE_BASE_ADDR_MASK) >> 12``."""
    try:
        return lib.kvmmu_spte_to_pfn(cfg._cptr, spte if spte.__class__ is int else uint("spte", spte))
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        raise bad_u64("spte", spte) from None


def spte_to_pfn_batch(cfg: MmuConfig, spte: np.ndarray, out: np.ndarray | None = None,
                      threads: int | None = None) -> np.ndarray:
    """Batch ``spte_to_pfn()``."""
    mmu_config(cfg)
    in_array("spte", spte, np.uint64)
    out = out_array("out", out, np.uint64, spte.shape, [("spte", spte)])
    c = cfg._cptr
    _par.map_parts(spte.size, threads, lambda lo, hi: lib.kvmmu_spte_to_pfn_batch(
        c, ptr_at(spte, "uint64_t", lo), ptr_at(out, "uint64_t", lo), hi - lo))
    return out


def leaf_spte_change_needs_tlb_flush(cfg: MmuConfig, old_spte: int, new_spte: int) -> bool:
    """v6.13+ ``leaf_spte_change_needs_tlb_flush()`` (MMU-writable cleared); before v6.13
    what ``mmu_spte_update()`` returned (MMU-W lost W, or A or D cleared)."""
    try:
        return lib.kvmmu_leaf_spte_change_needs_tlb_flush(
            cfg._cptr, old_spte if old_spte.__class__ is int else uint("old_spte", old_spte),
            new_spte if new_spte.__class__ is int else uint("new_spte", new_spte))
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        uint("old_spte", old_spte)
        raise bad_u64("new_spte", new_spte) from None


def leaf_spte_change_needs_tlb_flush_batch(cfg: MmuConfig, old_spte: np.ndarray, new_spte: np.ndarray,
                                           out: np.ndarray | None = None,
                                           threads: int | None = None) -> np.ndarray:
    """Batch ``leaf_spte_change_needs_tlb_flush()`` over two uint64 arrays of equal shape."""
    mmu_config(cfg)
    in_array("old_spte", old_spte, np.uint64)
    in_array("new_spte", new_spte, np.uint64)
    ins = [("old_spte", old_spte), ("new_spte", new_spte)]
    shape = same_shape(ins)
    out = out_array("out", out, np.bool_, shape, ins)
    c = cfg._cptr
    _par.map_parts(old_spte.size, threads, lambda lo, hi: lib.kvmmu_leaf_spte_change_needs_tlb_flush_batch(
        c, ptr_at(old_spte, "uint64_t", lo), ptr_at(new_spte, "uint64_t", lo),
        ptr_at(out, "uint8_t", lo), hi - lo))
    return out


# ---------------------------------------------------------------------- decode
KINDS = ("nonpresent", "present", "mmio", "frozen", "other")
_PRED_NAMES = list(PREDICATES)
_FIELD = {r.name: r.field for r in RULES}
_pred_fields = [_FIELD[n] for n in _PRED_NAMES]
assert ffi.sizeof("struct kvmmu_spte_info") == 48
DECODE_DTYPE = np.dtype({
    "names": ["spte", "pfn", "kind", "ad_type", "memtype", "ipat", "access", "saved_rx", "level"]
    + [f"p_{n}" for n in _pred_fields],
    "formats": ["<u8", "<u8", "u1", "u1", "u1", "u1", "u1", "u1", "u1"] + ["?"] * len(_pred_fields),
    "offsets": [0, 8, 16, 17, 18, 19, 20, 21, 22] + [24 + PREDICATES[n][0] for n in _PRED_NAMES],
    "itemsize": 48,
})


def decode_batch(cfg: MmuConfig, spte: np.ndarray, level=1, out: np.ndarray | None = None,
                 threads: int | None = None) -> np.ndarray:
    """Decode a uint64 array into a structured array (DECODE_DTYPE): pfn, kind
    (index into KINDS), AD type, EPT memtype/IPAT, granted ACC bits, saved R/X and one
    ``p_<predicate>`` bool field per predicate.  ``p_dirty`` is ``is_dirty_spte()`` before
    v6.13 and the raw D bit after; ``p_ept_ve_possible`` is False before v6.10."""
    mmu_config(cfg)
    in_array("spte", spte, np.uint64)
    shapes = [("spte", spte)]
    lv_a, lv_s = _arg("level", level, np.uint8, 8, shapes)
    if lv_a is None and not 1 <= lv_s <= 5:
        raise InputError(f"level={lv_s}: must be 1..5")
    shape = same_shape(shapes)
    out = out_array("out", out, DECODE_DTYPE, shape, shapes)
    c = cfg._cptr

    def part(lo, hi):
        err = ffi.new("int *")
        bad = lib.kvmmu_spte_decode_batch(
            c, ptr_at(spte, "uint64_t", lo), ptr_at(lv_a, "uint8_t", lo), lv_s,
            ffi.cast("struct kvmmu_spte_info *", ffi.from_buffer(out)) + lo, hi - lo, err)
        return bad, err[0]
    bad, code = _par.run(spte.size, threads, part)
    if bad:
        raise _batch_error("decode_batch", bad, code,
                           {"level": lv_a.reshape(-1) if lv_a is not None else lv_s})
    return out


_EPT_MT = {0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB"}
_AD = {0: "ad-enabled", 1: "ad-disabled", 2: "ad-wrprot-only", 3: "special(3)"}
# decode()'s names by index: EPT memtype (bits 5:3), AD type (bits 53:52), and the access
# string of the SPTE's bits 2:0 (EPT: RWX; legacy: PWU, then " NX" without ACC_EXEC)
_MT_NAMES = tuple(_EPT_MT.get(mt) or f"reserved({mt})" for mt in range(8))
_AD_NAMES = tuple(_AD[t] for t in range(4))
_ACCESS_EPT = tuple(("R" if b & 1 else "-") + ("W" if b & 2 else "-") + ("X" if b & 4 else "-")
                    for b in range(8))
_ACCESS_LEGACY = tuple(("P" if b & 1 else "-") + ("W" if b & 2 else "-") + ("U" if b & 4 else "-")
                       + ("-" if x else " NX") for x in (0, 1) for b in range(8))
_object_new, _object_setattr = object.__new__, object.__setattr__


@dataclass(frozen=True)
class SpteRecord:
    """One SPTE decoded under an MmuConfig; ``str()`` prints it field by field."""

    spte: int
    mode: str
    profile: str
    level: int
    kind: str
    pfn: int
    ad_type: str
    memtype: str | None
    ipat: bool | None
    access: str
    saved_rx: int
    predicates: dict
    mmio: dict | None = None

    def __str__(self) -> str:
        lines = [f"SPTE 0x{self.spte:016x}  mode={self.mode} profile={self.profile} level={self.level}",
                 f"  kind      : {self.kind}"]
        if self.kind == "present":
            lines.append(f"  pfn       : {self.pfn:#x} (pa {self.pfn << 12:#x})")
            lines.append(f"  access    : {self.access}")
            lines.append(f"  ad type   : {self.ad_type}")
            if self.memtype is not None:
                lines.append(f"  memtype   : {self.memtype}{' +IPAT' if self.ipat else ''}")
            if self.saved_rx:
                lines.append(f"  saved R/X : {self.saved_rx:#x}")
        if self.mmio:
            for k, v in self.mmio.items():
                lines.append(f"  {k:10s}: {v:#x}" if isinstance(v, int) else f"  {k:10s}: {v}")
        on = [k for k, v in self.predicates.items() if v]
        lines.append("  true      : " + (", ".join(on) if on else "(none)"))
        return "\n".join(lines)


_DECODE_OUT = threading.local()      # per thread: the C call releases the GIL
_decode_c = lib.kvmmu_spte_decode
_RECORD = struct.Struct("<QQ8B24s")   # struct kvmmu_spte_info, as DECODE_DTYPE
_MMIO_FIELDS = struct.Struct("<48xQQQ")   # struct kvmmu_spte_decoded's MMIO fields
#: (id of the profile, predicate bytes) -> (that profile, {name: bool} for the predicates its
#: era has): keyed on the profile object, not its name (a replaced profile keeps the name);
#: the entry holds the profile, so its id is not reused while cached; copied out on use.
_PRED_DICTS: dict = {}


def _pred_dict(profile, pred: bytes) -> dict:
    key = (id(profile), pred)
    entry = _PRED_DICTS.get(key)
    if entry is not None and entry[0] is profile:
        return entry[1].copy()
    d = {r.name: pred[r.id] != 0 for r in RULES if not r.feature or getattr(profile, r.feature)}
    bounded_put(_PRED_DICTS, 4096, key, (profile, d))
    return d.copy()


def decode(cfg: MmuConfig, spte: int, level: int = 1) -> SpteRecord:
    """Decode one SPTE to a readable record (every field named, with the mode's meaning).

    MMIO SPTEs also get gfn, access and generation (as pykvmmu.mmio's getters give them)."""
    if cfg.__class__ is not MmuConfig:
        mmu_config(cfg)
    s = spte if spte.__class__ is int else uint("spte", spte)
    if level.__class__ is not int:
        uint("spte", s)             # a bad spte is named before a bad level
        level = uint("level", level, 8)
    try:
        r, buf = _DECODE_OUT.rec
    except AttributeError:
        r = ffi.new("struct kvmmu_spte_decoded *")
        _DECODE_OUT.rec = (r, ffi.buffer(r))
        buf = _DECODE_OUT.rec[1]
    try:
        bad = _decode_c(cfg._cptr, s, level, r)
    except OverflowError:       # spte outside u64 or level outside u32: name it
        uint("spte", s)
        uint("level", level, 8)
        raise
    if bad:
        raise InputError(f"level={uint('level', level, 8)}: must be 1..5")
    _s, pfn, kind, ad_type, mt, ipat, acc, saved_rx, _lv, _pad, pred = _RECORD.unpack_from(buf)
    profile = cfg.profile
    preds = _pred_dict(profile, pred)
    mmio = None
    kind = KINDS[kind]
    if kind == "mmio":          # pykvmmu.mmio's get_mmio_spte_gfn/_access/_generation
        gfn, access, generation = _MMIO_FIELDS.unpack_from(buf)
        mmio = {"gfn": gfn, "access": access, "generation": generation}
    rec = _object_new(SpteRecord)       # the frozen dataclass's fields, set without __init__
    if cfg.is_ept:
        _object_setattr(rec, "__dict__", {
            "spte": s, "mode": cfg.mode, "profile": profile.name, "level": level, "kind": kind,
            "pfn": pfn, "ad_type": _AD_NAMES[ad_type], "memtype": _MT_NAMES[mt], "ipat": ipat != 0,
            "access": _ACCESS_EPT[s & 7], "saved_rx": saved_rx, "predicates": preds, "mmio": mmio})
    else:
        _object_setattr(rec, "__dict__", {
            "spte": s, "mode": cfg.mode, "profile": profile.name, "level": level, "kind": kind,
            "pfn": pfn, "ad_type": "n/a (legacy)", "memtype": None, "ipat": None,
            "access": _ACCESS_LEGACY[s & 7 | (acc & ACC_EXEC_MASK) << 3], "saved_rx": saved_rx,
            "predicates": preds, "mmio": mmio})
    return rec
