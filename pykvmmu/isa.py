"""The ISA cap of the C core's hand-written kernels (issue 14).

Every hand-written kernel (intrinsics, streaming stores) runs only when both the CPU has its
instruction set and the cap carried in the call's configuration struct allows it:
``portable`` (plain C loops only), ``avx2`` (also the SSE2, AVX2 and BMI2 kernels and
streaming stores) or ``avx512`` (everything).  The process default comes from the
``PYKVMMU_ISA`` environment variable, read once at import (default ``avx512``: no cap);
``MmuConfig._isa_copy(level)``, ``RoleLayout._isa_copy(level)`` and the ``isa=`` argument of
:func:`pykvmmu.role.hash_batch` and :func:`pykvmmu.private.classify_batch` override it per
configuration or call, so tests can hold every level to the same bytes.
"""
from __future__ import annotations

import os

from ._ffi import lib
from .errors import ConfigError

__all__ = ["LEVELS", "DEFAULT", "KERNELS", "level", "cpu_level", "supported_levels"]

#: level name -> KVMMU_ISA_* value, lowest first
LEVELS = {"portable": lib.KVMMU_ISA_PORTABLE, "avx2": lib.KVMMU_ISA_AVX2,
          "avx512": lib.KVMMU_ISA_AVX512}
_NAMES = {v: k for k, v in LEVELS.items()}

#: Every hand-written kernel of the C core: (kernel, the level it needs, the test that holds it
#: to the portable loop at every level the CPU supports).
KERNELS = (
    ("spte decode_batch AVX-512 kernel", "avx512", "tests/test_isa.py::test_decode_levels"),
    ("spte decode_batch streaming stores", "avx2", "tests/test_isa.py::test_streaming_levels"),
    ("spte make_spte_batch AVX2 gather (+streaming)", "avx2",
     "tests/test_isa.py::test_make_spte_table_levels"),
    ("spte decode_batch AVX2 kernel", "avx2", "tests/test_isa_spte.py::test_decode_presets"),
    ("spte predicate_batch AVX-512 kernel", "avx512", "tests/test_isa_spte.py::test_predicate_presets"),
    ("spte make_spte_batch AVX-512 gather (+streaming)", "avx512",
     "tests/test_isa.py::test_make_spte_table_levels"),
    ("mmio make_mmio_spte_batch streaming stores", "avx2", "tests/test_isa.py::test_streaming_levels"),
    ("role hash_batch AVX-512DQ (+streaming)", "avx512", "tests/test_isa.py::test_role_levels"),
    ("role pack/unpack BMI2 pext/pdep", "avx2", "tests/test_isa.py::test_role_levels"),
    ("private classify_batch SSE2 streaming", "avx2", "tests/test_isa.py::test_private_levels"),
    ("private classify_batch AVX-512 (+streaming)", "avx512",
     "tests/test_isa.py::test_private_levels"),
    ("role pack/unpack batch32 AVX-512 merge tree (+streaming)", "avx512",
     "tests/test_isa.py::test_role_levels"),
)


def level(name) -> int:
    """The KVMMU_ISA_* value of a level name (``portable``, ``avx2``, ``avx512``)."""
    try:
        return LEVELS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"isa={name!r}: must be one of {', '.join(LEVELS)} "
                          "(the highest instruction-set level hand-written kernels may use)") from None


def cpu_level() -> str:
    """The highest level this CPU supports."""
    return _NAMES[lib.kvmmu_isa_cpu()]


def supported_levels() -> tuple:
    """Every level this CPU supports, lowest first."""
    top = lib.kvmmu_isa_cpu()
    return tuple(n for n, v in LEVELS.items() if v <= top)


def _from_env() -> int:
    raw = os.environ.get("PYKVMMU_ISA", "avx512")
    try:
        return level(raw)
    except ConfigError as e:
        raise ConfigError(f"PYKVMMU_ISA: {e}") from None


#: The process default cap (PYKVMMU_ISA, read once at import).
DEFAULT = _from_env()
