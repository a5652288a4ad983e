"""The shadow-page hash: ``hash_64`` (three kernel variants), ``kvm_page_table_hashfn`` and the batch
form (C core ``csrc/role.c``)."""
from __future__ import annotations

import enum
from typing import Union

import numpy as np

from .. import _par
from .. import isa as _isa
from .._batch import in_array, out_array, ptr_at, uint
from .._ffi import lib
from ..errors import InputError


KVM_MMU_HASH_SHIFT = lib.KVMMU_MMU_HASH_SHIFT
KVM_NUM_MMU_PAGES = 1 << KVM_MMU_HASH_SHIFT


class HashVariant(str, enum.Enum):
    """Which kernel ``hash_64`` the shadow-page hash uses.  A ``str`` enum: the plain strings
    (``"x86_64"``, ``"32bit"``, ``"pre-4.7"``) are accepted wherever a member is."""

    #: 64-bit kernels, v4.7+ (include/linux/hash.h): the top bits of val * GOLDEN_RATIO_64.
    X86_64 = "x86_64"
    #: 32-bit kernels, v4.7+: hash_32((u32)val ^ __hash_32(val >> 32), bits).
    HOST_32BIT = "32bit"
    #: before v4.7: the shift/add sequence (equal to val * GOLDEN_RATIO_PRIME_64).
    PRE_4_7 = "pre-4.7"

    def __str__(self) -> str:
        return self.value


_HASH_VARIANTS: dict[str, int] = {HashVariant.X86_64: lib.KVMMU_HASH_X86_64,
                                   HashVariant.HOST_32BIT: lib.KVMMU_HASH_32BIT_HOST,
                                   HashVariant.PRE_4_7: lib.KVMMU_HASH_PRE_4_7}

#: A hash variant argument: a :class:`HashVariant` member or its string value.
HashVariantLike = Union[HashVariant, str]

# ---------------------------------------------------------------------------
# hash_64 / kvm_page_table_hashfn
# ---------------------------------------------------------------------------

def _variant(variant: HashVariantLike) -> int:
    try:
        return _HASH_VARIANTS[HashVariant(variant)]
    except ValueError:
        raise InputError(f"variant={variant!r}: one of {', '.join(v.value for v in HashVariant)} "
                         "(a HashVariant or its string)") from None


def _bits(bits) -> int:
    b = uint("bits", bits, 8)
    if not 1 <= b <= 32:
        raise InputError(f"bits={b}: hash_64 returns 1..32 bits")
    return b


def hash_64(val: int, bits: int = KVM_MMU_HASH_SHIFT, variant: HashVariantLike = HashVariant.X86_64) -> int:
    """hash_64 (include/linux/hash.h): the top ``bits`` of val * GOLDEN_RATIO_64 on x86-64."""
    if not (bits.__class__ is int and 1 <= bits <= 32):
        bits = _bits(bits)
    try:
        v = _HASH_VARIANTS[variant]
    except (KeyError, TypeError):
        v = _variant(variant)
    try:
        return lib.kvmmu_role_hash_64(val, bits, v)
    except (OverflowError, TypeError):
        uint("val", val, 64)
        raise


def kvm_page_table_hashfn(gfn: int) -> int:
    """kvm_page_table_hashfn: hash_64(gfn, KVM_MMU_HASH_SHIFT) -> bucket 0..4095."""
    try:
        return lib.kvmmu_role_hash_64(gfn, KVM_MMU_HASH_SHIFT, 0)
    except (OverflowError, TypeError):
        uint("gfn", gfn, 64)
        raise


def hash_batch(gfn: np.ndarray, bits: int = KVM_MMU_HASH_SHIFT, variant: HashVariantLike = HashVariant.X86_64,
               out=None, threads: int | None = None, isa: str | None = None) -> np.ndarray:
    """Batch hash_64 of a uint64 array into a uint32 array (C core, GIL released).
    ``isa`` caps the hand-written kernels (:mod:`pykvmmu.isa`; None: PYKVMMU_ISA)."""
    in_array("gfn", gfn, np.uint64)
    out = out_array("out", out, np.uint32, gfn.shape, [("gfn", gfn)])
    b, v = _bits(bits), _variant(variant)
    cap = _isa.DEFAULT if isa is None else _isa.level(isa)
    _par.map_parts(gfn.size, threads, lambda lo, hi: lib.kvmmu_role_hash_batch(
        ptr_at(gfn, "uint64_t", lo), ptr_at(out, "uint32_t", lo), hi - lo, b, v, cap))
    return out
