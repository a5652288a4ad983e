"""MMIO SPTEs: make, decode and check them, and validate the MMIO mask/value pair.

KVM caches emulated-MMIO translations as special SPTEs (arch/x86/kvm/mmu/spte.[ch],
mmu.c): ``make_mmio_spte()`` stores the memslot generation, the gfn and the cached access
bits under a per-configuration value that ``is_mmio_spte()`` recognises through a mask.
Every routine here models the kernel routine it is named after, under the MmuConfig's
kernel-era profile (generation layout, value, access mask, L1TF masks).  Scalar forms
take Python ints; ``*_batch`` forms take numpy uint64 arrays and run in the C core.

Mask validation: :func:`set_mmio_spte_mask` replays ``kvm_mmu_set_mmio_spte_mask()``
(the kernel's checks, in the kernel's order, with the kernel's outcome);
:func:`validate_mmio_masks` is the strict validator the maintainers asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple

import numpy as np

from . import _par
from ._batch import bad_u64, in_array, out_array, ptr, ptr_at, same_shape, uint
from ._check import choice, mmu_config, opt_boolean
from ._ffi import ffi, lib
from .config import (ACC_ALL, GENMASK, PT_PRESENT_MASK,
                     SHADOW_NONPRESENT_OR_RSVD_MASK_LEN,
                     SPTE_MMIO_ALLOWED_MASK, SPTE_MMU_PRESENT_MASK, SPTE_SPECIAL_MMIO_TAG,
                     VMX_EPT_RWX_MASK, VMX_EPT_SUPPRESS_VE_BIT,
                     MmuConfig, default_mmio_masks, ept_mmio_masks, kvm_mmu_set_mmio_spte_mask,
                     rsvd_bits, svm_adjust_mmio_mask)
from .errors import ConfigError, InputError, ProfileError, rule_texts
from .spte import is_mmio_spte, predicate_batch


def _cfg(cfg, name: str = "cfg") -> MmuConfig:
    return mmu_config(cfg, name)

__all__ = [
    "make_mmio_spte", "make_mmio_spte_batch", "get_mmio_spte_gfn", "get_mmio_spte_gfn_batch",
    "get_mmio_spte_access", "get_mmio_spte_access_batch", "get_mmio_spte_generation",
    "get_mmio_spte_generation_batch", "check_mmio_spte", "check_mmio_spte_batch", "is_mmio_spte",
    "is_mmio_spte_batch", "generation_mmio_spte_mask", "mmio_generation_mask", "mmio_generation_bits",
    "mmio_fault_outcome", "mmio_fault_outcome_batch", "FAULT_OUTCOMES",
    "kvm_mmu_invalidate_mmio_sptes", "kvm_mmu_invalidate_mmio_sptes_batch", "mmio_gfn_lost_bits",
    "set_mmio_spte_mask", "MmioMaskReport", "validate_mmio_masks", "mmio_mask_violations",
    "MmioMaskViolation", "MmioMaskError", "default_mmio_masks", "ept_mmio_masks",
    "svm_adjust_mmio_mask", "tdx_vm_mmio_value", "mmio_caching_off_reasons",
    "KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS", "GFN_BITS",
]

#: Bit 63 of a memslots generation: an update is in progress (never part of the MMIO generation).
KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS = 1 << 63
#: A gfn has at most 40 bits (a 52-bit guest physical address).
GFN_BITS = lib.KVMMU_MMIO_GFN_BITS
_GFN_LIMIT = 1 << GFN_BITS

FAULT_OUTCOMES = ("emulate", "stale", "update_in_progress", "not_mmio")

_ERRORS = rule_texts("mmio")


class MmioMaskError(ConfigError):
    """An MMIO value/mask/access-mask set breaks a rule of the strict validator.

    ``violations`` lists every rule broken, as :class:`MmioMaskViolation` tuples.
    """

    def __init__(self, message: str, violations: Iterable[MmioMaskViolation] = ()):
        super().__init__(message)
        self.violations = tuple(violations)


# ------------------------------------------------------------------ generation
_gen_mask_c = lib.kvmmu_mmio_generation_mask
_gen_bits_c = lib.kvmmu_mmio_generation_bits
_gen_spte_bits_c = lib.kvmmu_mmio_gen_spte_bits_checked
_invalidate_c = lib.kvmmu_mmio_invalidate_checked
_U64_MAX = (1 << 64) - 1


def mmio_generation_mask(cfg: MmuConfig) -> int:
    """``MMIO_SPTE_GEN_MASK`` of the era: 19 bits (v5.13+), 18 bits (v5.10-5.12)."""
    if cfg.__class__ is not MmuConfig:
        _cfg(cfg)
    return _gen_mask_c(cfg._cptr)


def mmio_generation_bits(cfg: MmuConfig) -> int:
    """The SPTE bits that hold the generation (``GEN_LOW_MASK | GEN_HIGH_MASK``)."""
    if cfg.__class__ is not MmuConfig:
        _cfg(cfg)
    return _gen_bits_c(cfg._cptr)


def generation_mmio_spte_mask(cfg: MmuConfig, generation: int) -> int:
    """``generation_mmio_spte_mask()``: spread a generation over the SPTE's generation bits.

    The kernel WARNs when the generation is wider than MMIO_SPTE_GEN_MASK; this direct
    caller gets an InputError instead (``make_mmio_spte`` masks first, so the warning
    cannot fire through it).
    """
    if generation.__class__ is int and cfg.__class__ is MmuConfig:
        try:        # fast path: one C call checks the width and spreads the bits
            r = _gen_spte_bits_c(cfg._cptr, generation)
        except OverflowError:
            r = _U64_MAX
        if r != _U64_MAX:
            return r
    g = uint("generation", generation)
    if g & ~mmio_generation_mask(cfg):
        raise InputError(f"generation={g:#x}: wider than MMIO_SPTE_GEN_MASK "
                         f"{mmio_generation_mask(cfg):#x} (WARN in generation_mmio_spte_mask)")
    return lib.kvmmu_mmio_gen_spte_bits(cfg._cptr, g)


# ------------------------------------------------------------------ make / decode
def _check_make_args(gfn, access, generation):
    g = uint("gfn", gfn)
    if g >= _GFN_LIMIT:
        raise InputError(f"gfn={g:#x}: {_ERRORS[lib.KVMMU_MMIO_E_GFN]}")
    a = uint("access", access)
    if a > 7:
        raise InputError(f"access={a:#x}: {_ERRORS[lib.KVMMU_MMIO_E_ACCESS]}")
    return g, a, uint("generation", generation)


def make_mmio_spte(cfg: MmuConfig, gfn: int, access: int = ACC_ALL, generation: int = 0) -> int:
    """``make_mmio_spte()``: the MMIO SPTE for ``gfn`` under the memslots ``generation``.

    The kernel masks the memslots generation to MMIO_SPTE_GEN_MASK (dropping the
    update-in-progress bit), ORs the (per-VM) MMIO value, ``access & shadow_mmio_access_mask``
    and the GPA, and with L1TF masks forces the high PA bits R to 1 while keeping the
    GPA bits under R five bits higher.  The TDP MMU passes ``access = ACC_ALL``.
    """
    if (gfn.__class__ is int and access.__class__ is int and 0 <= gfn < _GFN_LIMIT
            and 0 <= access <= 7):
        try:
            return lib.kvmmu_mmio_make(cfg._cptr, gfn, access, generation if generation.__class__ is int
                                       else uint("generation", generation))
        except (OverflowError, TypeError, AttributeError):
            mmu_config(cfg)
            raise bad_u64("generation", generation) from None
    g, a, gen = _check_make_args(gfn, access, generation)
    return lib.kvmmu_mmio_make(cfg._cptr, g, a, gen)


def _u64_arg(name, v, shapes):
    if isinstance(v, np.ndarray):
        in_array(name, v, np.uint64)
        shapes.append((name, v))
        return v, 0
    return None, uint(name, v)


def make_mmio_spte_batch(cfg: MmuConfig, gfn: np.ndarray, access=ACC_ALL, generation=0,
                         out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Batch ``make_mmio_spte()``: one MMIO SPTE per gfn (uint64 array).

    ``access`` and ``generation`` are scalars or uint64 arrays of the gfn array's shape.
    A bad element raises InputError naming the first one (``out`` then holds unspecified
    data).  ``threads``: see :mod:`pykvmmu._par` (None: automatic).
    """
    mmu_config(cfg)
    in_array("gfn", gfn, np.uint64)
    shapes = [("gfn", gfn)]
    ac_a, ac_s = _u64_arg("access", access, shapes)
    if ac_a is None and ac_s > 7:
        raise InputError(f"access={ac_s:#x}: {_ERRORS[lib.KVMMU_MMIO_E_ACCESS]}")
    ge_a, ge_s = _u64_arg("generation", generation, shapes)
    shape = same_shape(shapes)
    out = out_array("out", out, np.uint64, shape, shapes)
    c = cfg._cptr

    def part(lo, hi):
        err = ffi.new("int *")
        bad = lib.kvmmu_mmio_make_batch(c, ptr_at(gfn, "uint64_t", lo), ptr_at(ac_a, "uint64_t", lo),
                                        ac_s, ptr_at(ge_a, "uint64_t", lo), ge_s,
                                        ptr_at(out, "uint64_t", lo), hi - lo, err)
        return bad, err[0]
    bad, code = _par.run(gfn.size, threads, part)
    if bad:
        i = bad - 1
        name, arr = ("gfn", gfn) if code == lib.KVMMU_MMIO_E_GFN else ("access", ac_a)
        raise InputError(f"make_mmio_spte_batch: element {i} ({name}[{i}]="
                         f"{int(arr.reshape(-1)[i]):#x}): {_ERRORS[code]}")
    return out


def get_mmio_spte_gfn(cfg: MmuConfig, spte: int) -> int:
    """``get_mmio_spte_gfn()``: ``((spte & lower_gfn_mask) | ((spte >> 5) & R)) >> 12``.

    GPA bits outside ``lower_gfn_mask | R`` are lost; with L1TF, SPTE bits
    [cache_bits, cache_bits+5) fold back into R, so GPA bits there alias lower bits.
    """
    try:
        return lib.kvmmu_mmio_get_gfn(cfg._cptr, spte if spte.__class__ is int else uint("spte", spte))
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        raise bad_u64("spte", spte) from None


def get_mmio_spte_access(cfg: MmuConfig, spte: int) -> int:
    """``get_mmio_spte_access()``: ``spte & shadow_mmio_access_mask`` (0 on EPT/TDX)."""
    try:
        return lib.kvmmu_mmio_get_access(cfg._cptr, spte if spte.__class__ is int else uint("spte", spte))
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        raise bad_u64("spte", spte) from None


def get_mmio_spte_generation(cfg: MmuConfig, spte: int) -> int:
    """``get_mmio_spte_generation()``: the generation bits of the SPTE, packed."""
    try:
        return lib.kvmmu_mmio_get_generation(cfg._cptr, spte if spte.__class__ is int else uint("spte", spte))
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        raise bad_u64("spte", spte) from None


def _get_batch(cfg, which, spte, out, threads):
    mmu_config(cfg)
    in_array("spte", spte, np.uint64)
    out = out_array("out", out, np.uint64, spte.shape, [("spte", spte)])
    c = cfg._cptr
    _par.map_parts(spte.size, threads, lambda lo, hi: lib.kvmmu_mmio_get_batch(
        c, which, ptr_at(spte, "uint64_t", lo), ptr_at(out, "uint64_t", lo), hi - lo))
    return out


def get_mmio_spte_gfn_batch(cfg: MmuConfig, spte: np.ndarray, out: np.ndarray | None = None,
                            threads: int | None = None) -> np.ndarray:
    """Batch ``get_mmio_spte_gfn()`` (uint64 in, uint64 out)."""
    return _get_batch(cfg, lib.KVMMU_MMIO_GET_GFN, spte, out, threads)


def get_mmio_spte_access_batch(cfg: MmuConfig, spte: np.ndarray,
                               out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Batch ``get_mmio_spte_access()`` (uint64 in, uint64 out)."""
    return _get_batch(cfg, lib.KVMMU_MMIO_GET_ACCESS, spte, out, threads)


def get_mmio_spte_generation_batch(cfg: MmuConfig, spte: np.ndarray,
                                   out: np.ndarray | None = None,
                                   threads: int | None = None) -> np.ndarray:
    """Batch ``get_mmio_spte_generation()`` (uint64 in, uint64 out)."""
    return _get_batch(cfg, lib.KVMMU_MMIO_GET_GENERATION, spte, out, threads)


def is_mmio_spte_batch(cfg: MmuConfig, spte: np.ndarray, out: np.ndarray | None = None,
                       threads: int | None = None) -> np.ndarray:
    """Batch ``is_mmio_spte()`` (bool array); the scalar form is ``pykvmmu.spte.is_mmio_spte``."""
    mmu_config(cfg)
    return predicate_batch(cfg, "is_mmio_spte", spte, out=out, threads=threads)


def mmio_gfn_lost_bits(cfg: MmuConfig) -> int:
    """The gfn bits (below GFN_BITS) that ``get_mmio_spte_gfn()`` does not give back as stored:
    bits outside ``(lower_gfn_mask | R) >> 12``.  With L1TF those in [cache_bits,
    cache_bits+5) alias into R (section 10.1); the others vanish."""
    _cfg(cfg)
    kept = (cfg.nonpresent_or_rsvd_lower_gfn_mask | cfg.nonpresent_or_rsvd_mask) >> 12
    return (_GFN_LIMIT - 1) & ~kept


# ------------------------------------------------------------------ check / fault / wrap
def check_mmio_spte(cfg: MmuConfig, spte: int, memslots_generation: int) -> bool:
    """``check_mmio_spte()``: false while an update is in progress (bit 63), else the
    masked memslots generation must equal the SPTE's generation."""
    try:
        g = memslots_generation
        return lib.kvmmu_mmio_check(cfg._cptr, spte if spte.__class__ is int else uint("spte", spte),
                                    g if g.__class__ is int else uint("memslots_generation", g))
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        uint("spte", spte)
        raise bad_u64("memslots_generation", memslots_generation) from None


def _generation_batch(cfg, cfn, spte, memslots_generation, out, dtype, threads):
    """A per-SPTE C routine against a scalar or per-element memslots generation."""
    mmu_config(cfg)
    in_array("spte", spte, np.uint64)
    shapes = [("spte", spte)]
    ge_a, ge_s = _u64_arg("memslots_generation", memslots_generation, shapes)
    shape = same_shape(shapes)
    out = out_array("out", out, dtype, shape, shapes)
    c = cfg._cptr
    _par.map_parts(spte.size, threads, lambda lo, hi: cfn(
        c, ptr_at(spte, "uint64_t", lo), ptr_at(ge_a, "uint64_t", lo), ge_s,
        ptr_at(out, "uint8_t", lo), hi - lo))
    return out


def check_mmio_spte_batch(cfg: MmuConfig, spte: np.ndarray, memslots_generation,
                          out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Batch ``check_mmio_spte()``; ``memslots_generation`` is a scalar or a uint64 array."""
    return _generation_batch(cfg, lib.kvmmu_mmio_check_batch, spte, memslots_generation, out,
                             np.bool_, threads)


def mmio_fault_outcome(cfg: MmuConfig, spte: int, memslots_generation: int) -> str:
    """What ``handle_mmio_page_fault()`` does with the terminal SPTE ``spte``.

    ``"emulate"``: an MMIO SPTE of the current generation (cache the MMIO info, emulate);
    ``"stale"``: RET_PF_INVALID, the slow path rebuilds it with the current generation;
    ``"update_in_progress"``: RET_PF_INVALID while a memslot update is in flight; the
    rebuilt SPTE carries the pre-update generation and ``vcpu_cache_mmio_info`` caches
    nothing; ``"not_mmio"``: not an MMIO SPTE (RET_PF_RETRY).
    """
    try:
        g = memslots_generation
        return FAULT_OUTCOMES[lib.kvmmu_mmio_fault_outcome(
            cfg._cptr, spte if spte.__class__ is int else uint("spte", spte),
            g if g.__class__ is int else uint("memslots_generation", g))]
    except (OverflowError, TypeError, AttributeError):
        mmu_config(cfg)
        uint("spte", spte)
        uint("memslots_generation", memslots_generation)
        raise


def mmio_fault_outcome_batch(cfg: MmuConfig, spte: np.ndarray, memslots_generation,
                             out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Batch :func:`mmio_fault_outcome`: uint8 codes indexing FAULT_OUTCOMES."""
    return _generation_batch(cfg, lib.kvmmu_mmio_fault_outcome_batch, spte, memslots_generation,
                             out, np.uint8, threads)


def _nr_as(nr_as_ids) -> int:
    n = uint("nr_as_ids", nr_as_ids, 8)
    if n not in (1, 2):
        raise InputError(f"nr_as_ids={n}: x86 has 1 memslot address space (VMs with private "
                         "memory) or 2 (SMM); kvm_arch_nr_memslot_as_ids()")
    return n


def kvm_mmu_invalidate_mmio_sptes(cfg: MmuConfig, generation: int, nr_as_ids: int = 2) -> bool:
    """``kvm_mmu_invalidate_mmio_sptes()``: True when every root must be zapped.

    Called with the new memslots generation: it is masked to MMIO_SPTE_GEN_MASK, the
    address-space modifier (``nr_as_ids - 1``) is stripped, and a result of 0 means the
    MMIO generation wrapped in some address space, so ``kvm_mmu_zap_all_fast()`` runs.
    """
    if generation.__class__ is int and nr_as_ids.__class__ is int and cfg.__class__ is MmuConfig:
        try:        # fast path: one C call checks and decides; -1: see the full checks
            r = _invalidate_c(cfg._cptr, generation, nr_as_ids)
        except OverflowError:
            r = -1
        if r >= 0:
            return r == 1
    mmu_config(cfg)
    g = uint("generation", generation)
    n = _nr_as(nr_as_ids)
    if g & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
        raise InputError(f"generation={g:#x}: {_ERRORS[lib.KVMMU_MMIO_E_IN_PROGRESS]}")
    return lib.kvmmu_mmio_invalidate_zaps(cfg._cptr, g, n)


def kvm_mmu_invalidate_mmio_sptes_batch(cfg: MmuConfig, generation: np.ndarray, nr_as_ids: int = 2,
                                        out: np.ndarray | None = None) -> np.ndarray:
    """Batch ``kvm_mmu_invalidate_mmio_sptes()`` over new generations: bool array (zap all)."""
    mmu_config(cfg)
    in_array("generation", generation, np.uint64)
    n = _nr_as(nr_as_ids)
    out = out_array("out", out, np.bool_, generation.shape, [("generation", generation)])
    err = ffi.new("int *")
    bad = lib.kvmmu_mmio_invalidate_batch(cfg._cptr, ptr(generation, "uint64_t"), n,
                                          ptr(out, "uint8_t"), generation.size, err)
    if bad:
        i = bad - 1
        raise InputError(f"kvm_mmu_invalidate_mmio_sptes_batch: element {i} (generation[{i}]="
                         f"{int(generation.reshape(-1)[i]):#x}): {_ERRORS[err[0]]}")
    return out


# ------------------------------------------------------------------ vendor computations
def tdx_vm_mmio_value() -> int:
    """``tdx_vm_init()``: a TD's per-VM MMIO value is 0 (RWX=000, SUPPRESS_VE clear: an EPT
    violation the TDX module turns into #VE); the global mask stays RWX|SVE."""
    return 0


def mmio_caching_off_reasons(cfg: MmuConfig) -> tuple:
    """Why MMIO caching is off for ``cfg`` (empty when it is on); every is_mmio_spte is
    then false and no-slot faults are emulated without installing an SPTE."""
    _cfg(cfg)
    if cfg.mmio_caching:
        return ()
    out = []
    fired = cfg.mmio_fired
    if "mmio_caching_disabled_by_parameter" in fired:
        out.append("kvm.mmio_caching=0 (module parameter)")
    if not cfg.is_ept and cfg.maxphyaddr >= 52 and not cfg.me_mask:
        out.append("52-bit MAXPHYADDR outside EPT: no reserved PA bit for the default value")
    if cfg.me_mask and not cfg.mmio_mask:
        out.append("svm_adjust_mmio_mask: the reserved bit above x86_phys_bits is >= 52")
    for f in fired:
        if f not in ("mmio_caching_disabled_by_parameter", "value_zero_disables_caching",
                     "value_overlaps_lower_gfn_mask(warn)"):
            out.append(f"kvm_mmu_set_mmio_spte_mask check fired: {f}")
    if not out:
        out.append("MMIO value 0 (caching disabled)")
    return tuple(out)


# ------------------------------------------------------------------ kvm_mmu_set_mmio_spte_mask
@dataclass(frozen=True)
class MmioMaskReport:
    """Outcome of :func:`set_mmio_spte_mask`.

    ``value``/``mask``/``access_mask`` are the effective globals; ``vm_value`` is the value
    MMIO SPTEs of this VM carry (TDX: 0); ``fired`` names each check that fired, in kernel
    order (``(warn)`` marks a check that only warns); ``config`` is the new MmuConfig, or
    None with ``config_error`` when pykvmmu refuses the accepted masks.
    """

    requested: tuple
    value: int
    mask: int
    access_mask: int
    vm_value: int
    caching: bool
    fired: tuple
    config: MmuConfig | None
    config_error: str | None = None

    def __str__(self) -> str:
        v, m, a = self.requested
        lines = [f"requested   value=0x{v:016x} mask=0x{m:016x} access_mask={a:#x}",
                 f"effective   value=0x{self.value:016x} mask=0x{self.mask:016x} "
                 f"access_mask={self.access_mask:#x}"]
        if self.vm_value != self.value:
            lines.append(f"per-VM      value=0x{self.vm_value:016x}")
        lines.append(f"caching     {'on' if self.caching else 'off'}")
        lines.append("fired       " + (", ".join(self.fired) if self.fired else "(none)"))
        if self.config_error:
            lines.append(f"config      refused: {self.config_error}")
        return "\n".join(lines)


def _set_mask_v510(cfg, p, value, mask, access_mask, allow):
    """v5.10-5.12: (value, access_mask) only; the checks WARN and keep the value, which is
    ORed with SPTE_MMIO_MASK (3<<52); there is no mmio_caching parameter."""
    if allow is False:
        raise ProfileError(f"set_mmio_spte_mask: the kvm.mmio_caching parameter does not exist in "
                           f"kernel era {p} (added in v5.13)")
    if access_mask >> 32:
        raise ConfigError(f"access_mask={access_mask:#x}: must fit in 32 bits "
                          "(BUG_ON in kvm_mmu_set_mmio_spte_mask)")
    fired = []
    if value & (cfg.nonpresent_or_rsvd_mask << SHADOW_NONPRESENT_OR_RSVD_MASK_LEN):
        fired.append("value_collides_with_l1tf_relocation(warn)")
    if value & cfg.nonpresent_or_rsvd_lower_gfn_mask:
        fired.append("value_overlaps_lower_gfn_mask(warn)")
    if not value:
        fired.append("value_zero_tag_only(no reserved bit: MMIO SPTEs fault as not-present)")
    return value | SPTE_SPECIAL_MMIO_TAG, SPTE_SPECIAL_MMIO_TAG | mask, True, tuple(fired)


def set_mmio_spte_mask(config: MmuConfig, value: int, mask: int, access_mask: int, *,
                       allow_mmio_caching: bool | None = None,
                       strict_allowed_mask: bool | None = None) -> MmioMaskReport:
    """``kvm_mmu_set_mmio_spte_mask(value, mask, access_mask)`` on ``config``'s era and host.

    The checks run in the kernel's order: access mask fits 32 bits (BUG_ON, raised as
    ConfigError); value vs lower gfn mask (warn); the mmio_caching parameter; mask within
    SPTE_MMIO_ALLOWED_MASK (about v6.1; ``strict_allowed_mask`` overrides the profile
    default); value vs the L1TF relocation bits; value within mask; value vs FROZEN_SPTE.
    A failed check forces the value to 0, which turns caching off.  A TDX config keeps
    its per-VM value 0.  ``allow_mmio_caching`` defaults to the config's parameter.
    """
    _cfg(config, "config")
    v = uint("value", value)
    m = uint("mask", mask)
    a = uint("access_mask", access_mask)
    p = config.profile
    if allow_mmio_caching is None:
        allow = "mmio_caching_disabled_by_parameter" not in config.mmio_fired
    else:
        allow = opt_boolean("allow_mmio_caching", allow_mmio_caching)
    if p.mmio_special_tag:
        ev, em, caching, fired = _set_mask_v510(config, p, v, m, a, allow_mmio_caching)
    else:
        r = kvm_mmu_set_mmio_spte_mask(p, v, m, a, allow_mmio_caching=allow,
                                       nonpresent_or_rsvd_mask=config.nonpresent_or_rsvd_mask,
                                       lower_gfn_mask=config.nonpresent_or_rsvd_lower_gfn_mask,
                                       strict_allowed_mask=strict_allowed_mask)
        ev, em, caching, fired = r.value, r.mask, r.caching, r.fired
    vm_value = ev
    if config.mode == "tdx":
        vm_value = tdx_vm_mmio_value()
        fired = fired + ("tdx_per_vm_value_0",)
        if not caching:
            fired = fired + ("tdx_requires_mmio_caching(tdx_bringup fails)",)
    new, cerr = None, None
    try:
        new = config.replace(mmio_value=vm_value, mmio_mask=em, mmio_access_mask=a,
                             mmio_caching=caching, mmio_fired=fired)
    except ConfigError as e:
        cerr = str(e)
    return MmioMaskReport((v, m, a), ev, em, a, vm_value, caching, fired, new, cerr)


# ------------------------------------------------------------------ strict validator
class MmioMaskViolation(NamedTuple):
    """One broken rule: its name, the offending bits, and a sentence."""

    rule: str
    bits: int
    detail: str


def _bits(x: int) -> str:
    if not x:
        return "none"
    out, i = [], 0
    while x >> i:
        if x >> i & 1:
            j = i
            while x >> (j + 1) & 1:
                j += 1
            out.append(str(i) if i == j else f"{i}-{j}")
            i = j + 1
        else:
            i += 1
    return "bits " + ",".join(out) + f" ({x:#x})"


def _reserved_pa(cfg: MmuConfig) -> int:
    """PA bits 51..MAXPHYADDR, plus (memory encryption) bits above x86_phys_bits other than
    the C-bit: the bits whose setting makes a hardware walk fault as reserved."""
    r = rsvd_bits(cfg.maxphyaddr, 51)
    if cfg.me_mask and not cfg.is_ept:
        r |= rsvd_bits(cfg.phys_bits, 51) & ~cfg.me_mask
    return r


def mmio_mask_violations(config: MmuConfig, value: int | None = None, mask: int | None = None,
                         access_mask: int | None = None, *, mode: str | None = None) -> list:
    """Every strict-validator rule the MMIO masks break (empty list: all rules hold).

    Defaults are the config's effective (per-VM) value, mask and access mask; ``mode``
    defaults to the config's mode (legacy/npt/shadow, ept, tdx).
    """
    cfg = _cfg(config, "config")
    p = cfg.profile
    v = cfg.mmio_value if value is None else uint("value", value)
    m = cfg.mmio_mask if mask is None else uint("mask", mask)
    a = cfg.mmio_access_mask if access_mask is None else uint("access_mask", access_mask)
    mode = cfg.mode if mode is None else choice("mode", mode, ("legacy", "npt", "shadow", "ept", "tdx"))
    if p.mmio_special_tag:
        # v5.10-5.12: the SPTE_MMIO_MASK tag is the identifier; judge the rest of the pair.
        v &= ~SPTE_SPECIAL_MMIO_TAG
        m &= ~SPTE_SPECIAL_MMIO_TAG
    out = []

    def bad(rule, bits, detail):
        out.append(MmioMaskViolation(rule, bits, f"{rule}: {detail} ({_bits(bits)})"))

    gen = mmio_generation_bits(cfg)
    if m & gen:
        bad("mask_overlaps_generation", m & gen,
            f"mask {m:#x} overlaps the MMIO generation bits {gen:#x}")
    if p.mmu_present_bit11 and m & SPTE_MMU_PRESENT_MASK:
        bad("mask_overlaps_mmu_present", m & SPTE_MMU_PRESENT_MASK,
            f"mask {m:#x} has the MMU-present bit 11 (MMIO SPTEs are !MMU-present)")
    if m & ~SPTE_MMIO_ALLOWED_MASK:
        bad("mask_outside_allowed", m & ~SPTE_MMIO_ALLOWED_MASK,
            f"mask {m:#x} uses bits outside SPTE_MMIO_ALLOWED_MASK {SPTE_MMIO_ALLOWED_MASK:#x}")
    if v & ~m:
        bad("value_outside_mask", v & ~m, f"value {v:#x} has bits outside mask {m:#x}")
    fz = None if p.mmio_special_tag else p.frozen_value   # v5.10: the tag tells them apart
    if fz is not None and (fz & m) == v:
        bad("value_matches_frozen", fz & m,
            f"FROZEN_SPTE {fz:#x} under mask {m:#x} equals value {v:#x}")
    npv = p.nonpresent_value
    if not p.mmio_special_tag and (npv & m) == v:
        bad("value_matches_nonpresent", m,
            f"SHADOW_NONPRESENT_VALUE {npv:#x} under mask {m:#x} equals value {v:#x}")
    rmask = cfg.nonpresent_or_rsvd_mask
    reloc = rmask << SHADOW_NONPRESENT_OR_RSVD_MASK_LEN
    if v & reloc:
        bad("value_collides_with_l1tf_relocation", v & reloc,
            f"value {v:#x} uses the L1TF relocation bits {reloc:#x}")
    if m & rmask & ~v:
        bad("mask_vs_l1tf_mask", m & rmask & ~v,
            f"mask {m:#x} has L1TF bits (forced to 1 in every MMIO SPTE) that value {v:#x} lacks")
    if v & cfg.nonpresent_or_rsvd_lower_gfn_mask:
        bad("value_overlaps_legal_pa", v & cfg.nonpresent_or_rsvd_lower_gfn_mask,
            f"value {v:#x} overlaps the gfn bits {cfg.nonpresent_or_rsvd_lower_gfn_mask:#x}")
    if a >> 32:
        bad("access_mask_wider_than_32_bits", a >> 32 << 32, f"access_mask {a:#x}")
    a_clash = a & (m | gen | SPTE_MMU_PRESENT_MASK | GENMASK(51, 12))
    if a_clash:
        bad("access_mask_overlaps", a_clash,
            f"access_mask {a:#x} overlaps the mask, the generation, bit 11 or the gfn")
    if mode in ("legacy", "npt", "shadow"):
        rsvd = _reserved_pa(cfg)
        if not (v & PT_PRESENT_MASK and v & rsvd):
            missing = (0 if v & PT_PRESENT_MASK else PT_PRESENT_MASK) | (0 if v & rsvd else rsvd)
            bad("legacy_value_not_reserved_present", missing,
                f"value {v:#x} must set P and a reserved PA bit (reserved: {rsvd:#x}) so that "
                "the access faults with PFEC.RSVD")
    elif mode == "ept":
        xwr = v & VMX_EPT_RWX_MASK
        misconfig = xwr in (0b010, 0b110) or (xwr == 0b100 and not cfg.exec_only) or \
            (xwr and v & rsvd_bits(cfg.maxphyaddr, 51))
        if not misconfig:
            bad("ept_value_not_misconfig", VMX_EPT_RWX_MASK,
                f"value {v:#x}: XWR={xwr:03b} is not an EPT misconfiguration "
                f"(W without R, X-only without exec-only support, or a reserved PA bit)")
        if ~m & VMX_EPT_RWX_MASK:
            bad("ept_mask_must_cover_rwx", ~m & VMX_EPT_RWX_MASK,
                f"mask {m:#x} must contain RWX so that present SPTEs never match")
    elif mode == "tdx":
        need = VMX_EPT_RWX_MASK | VMX_EPT_SUPPRESS_VE_BIT
        if v & need:
            bad("tdx_value_not_ve", v & need,
                f"value {v:#x} must have RWX=000 and SUPPRESS_VE clear (EPT violation -> #VE)")
        if ~m & need:
            bad("tdx_mask_must_cover_rwx_sve", ~m & need,
                f"mask {m:#x} must contain RWX and SUPPRESS_VE")
    else:
        raise InputError(f"mode={mode!r}: unknown; known: legacy, npt, shadow, ept, tdx")
    return out


def validate_mmio_masks(config: MmuConfig, value: int | None = None, mask: int | None = None,
                        access_mask: int | None = None, *, mode: str | None = None) -> MmuConfig:
    """The strict validator: raise MmioMaskError naming every broken rule and its bits.

    Rules: the mask must not overlap the generation bits or the MMU-present bit and must
    stay within SPTE_MMIO_ALLOWED_MASK; the value lies within the mask and never equals
    FROZEN_SPTE or SHADOW_NONPRESENT_VALUE under the mask; no collision with the L1TF
    relocation bits (nor L1TF mask bits the value lacks, nor the gfn bits); the access
    mask stays clear of all of these; and per mode the value is not a legal present
    translation (legacy/NPT: P plus a reserved PA bit; EPT: a misconfiguration XWR
    pattern, mask covering RWX; TDX: RWX=000 and SUPPRESS_VE clear, mask covering both).
    Returns the config when every rule holds.
    """
    v = mmio_mask_violations(config, value, mask, access_mask, mode=mode)
    if v:
        raise MmioMaskError("MMIO masks break " + "; ".join(x.detail for x in v), v)
    return config
