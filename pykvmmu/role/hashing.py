"""The shadow-page hash: ``hash_64`` (three kernel variants), ``kvm_page_table_hashfn`` and the batch
form (C core ``csrc/role.c``)."""
from __future__ import annotations

import numpy as np

from .. import _par
from .._batch import in_array, out_array, ptr_at, uint
from .._ffi import lib
from ..errors import InputError


KVM_MMU_HASH_SHIFT = lib.KVMMU_MMU_HASH_SHIFT
KVM_NUM_MMU_PAGES = 1 << KVM_MMU_HASH_SHIFT

_HASH_VARIANTS = {"x86_64": lib.KVMMU_HASH_X86_64, "32bit": lib.KVMMU_HASH_32BIT_HOST,
                  "pre-4.7": lib.KVMMU_HASH_PRE_4_7}

# ---------------------------------------------------------------------------
# hash_64 / kvm_page_table_hashfn
# ---------------------------------------------------------------------------

def _variant(variant: str) -> int:
    try:
        return _HASH_VARIANTS[variant]
    except KeyError:
        raise InputError(f"variant={variant!r}: one of {', '.join(_HASH_VARIANTS)}") from None


def _bits(bits) -> int:
    b = uint("bits", bits, 8)
    if not 1 <= b <= 32:
        raise InputError(f"bits={b}: hash_64 returns 1..32 bits")
    return b


def hash_64(val: int, bits: int = KVM_MMU_HASH_SHIFT, variant: str = "x86_64") -> int:
    """hash_64 (include/linux/hash.h): the top ``bits`` of val * GOLDEN_RATIO_64 on x86-64."""
    try:
        return int(lib.kvmmu_role_hash_64(val, _bits(bits), _variant(variant)))
    except (OverflowError, TypeError):
        uint("val", val, 64)
        raise


def kvm_page_table_hashfn(gfn: int) -> int:
    """kvm_page_table_hashfn: hash_64(gfn, KVM_MMU_HASH_SHIFT) -> bucket 0..4095."""
    try:
        return int(lib.kvmmu_role_hash_64(gfn, KVM_MMU_HASH_SHIFT, 0))
    except (OverflowError, TypeError):
        uint("gfn", gfn, 64)
        raise


def hash_batch(gfn: np.ndarray, bits: int = KVM_MMU_HASH_SHIFT, variant: str = "x86_64",
               out=None, threads: int | None = None) -> np.ndarray:
    """Batch hash_64 of a uint64 array into a uint32 array (C core, GIL released)."""
    in_array("gfn", gfn, np.uint64)
    out = out_array("out", out, np.uint32, gfn.shape, [("gfn", gfn)])
    b, v = _bits(bits), _variant(variant)
    _par.map_parts(gfn.size, threads, lambda lo, hi: lib.kvmmu_role_hash_batch(
        ptr_at(gfn, "uint64_t", lo), ptr_at(out, "uint32_t", lo), hi - lo, b, v))
    return out
