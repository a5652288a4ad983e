"""Bad input to the SPTE engine: every refusal is a pykvmmu error naming the value; nothing is masked."""
from __future__ import annotations

import numpy as np
import pytest

from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ArrayError, InputError, ProfileError, PykvmmuError
from pykvmmu.profile import get_profile

CFG = MmuConfig.ept()
NPT_SME = MmuConfig.npt(sme_cbit=47, maxphyaddr=48)


def test_errors_are_pykvmmu_errors():
    for e in (InputError, ArrayError, ProfileError):
        assert issubclass(e, PykvmmuError)


@pytest.mark.parametrize("pfn", [1 << 40, (1 << 64) - 1])
def test_pfn_wider_than_mask(pfn):
    with pytest.raises(InputError, match=f"pfn={pfn:#x}"):
        S.make_spte(CFG, pfn)
    with pytest.raises(InputError, match="element 1"):
        S.make_spte_batch(CFG, np.array([1, pfn], np.uint64))


def test_pfn_with_the_sme_c_bit_is_refused():
    with pytest.raises(InputError, match="pfn=0x800000000"):
        S.make_spte(NPT_SME, 1 << 35)                 # PA bit 47 = the C-bit, outside the PFN mask


@pytest.mark.parametrize("level", [0, 6, 255])
def test_level_out_of_range(level):
    with pytest.raises(InputError, match=f"level={level}"):
        S.make_spte(CFG, 1, level=level)
    with pytest.raises(InputError, match="level"):
        S.make_spte_batch(CFG, np.array([1], np.uint64), level=np.array([level], np.uint8))
    with pytest.raises(InputError, match="level"):
        S.is_last_spte(CFG, 0, level)
    with pytest.raises(InputError, match="level"):
        S.predicate_batch(CFG, "is_rsvd_spte", np.zeros(2, np.uint64), level)


@pytest.mark.parametrize("bad", [-1, 1 << 64, 2.0, "7", None])
def test_bad_scalars(bad):
    for call in (lambda: S.make_spte(CFG, bad), lambda: S.spte_to_pfn(CFG, bad),
                 lambda: S.is_shadow_present_pte(CFG, bad), lambda: S.mark_spte_for_access_track(CFG, bad),
                 lambda: S.restore_acc_track_spte(CFG, bad), lambda: S.make_nonleaf_spte(CFG, bad),
                 lambda: S.leaf_spte_change_needs_tlb_flush(CFG, 0, bad),
                 lambda: S.leaf_spte_change_needs_tlb_flush(CFG, bad, 0)):
        with pytest.raises(InputError) as ei:
            call()
        assert str(bad) in str(ei.value) or repr(bad) in str(ei.value) or f"{bad:#x}" in str(ei.value)


def test_bad_pte_access_and_memtype():
    with pytest.raises(InputError, match="pte_access=0x8"):
        S.make_spte(CFG, 1, pte_access=8)
    with pytest.raises(InputError, match="memtype=0x7"):
        S.make_spte(CFG, 1, memtype=0x07)


def test_nonleaf_unaligned_or_too_wide():
    with pytest.raises(InputError, match="child_pa=0x1001"):
        S.make_nonleaf_spte(CFG, 0x1001)
    with pytest.raises(InputError, match="child_pa"):
        S.make_nonleaf_spte(NPT_SME, 1 << 47)
    with pytest.raises(InputError, match="element 1"):
        S.make_nonleaf_spte_batch(CFG, np.array([0x1000, 0x1001], np.uint64))


def test_split_and_collapse_bad_input():
    huge = S.make_spte(CFG, 0x200, level=2).spte
    with pytest.raises(InputError, match="not aligned"):
        S.make_small_spte(CFG, S.make_spte(CFG, 0x201, level=2).spte, 1, 0)
    with pytest.raises(InputError, match="not shadow-present"):
        S.make_small_spte(CFG, 0, 1, 0)
    with pytest.raises(InputError, match="not a huge"):
        S.make_small_spte(CFG, S.make_spte(CFG, 0x200).spte, 1, 0)
    with pytest.raises(InputError, match="index"):
        S.make_small_spte(CFG, huge, 1, 512)
    with pytest.raises(InputError, match="child_level=5"):
        S.make_small_spte(CFG, huge, 5, 0)
    with pytest.raises(InputError, match="role_access"):
        S.make_small_spte(CFG, huge, 1, 0, role_access=8)
    with pytest.raises(InputError, match="level=4"):
        S.make_huge_spte(CFG, huge, 4)
    with pytest.raises(InputError, match="not shadow-present"):
        S.make_huge_spte(CFG, 0, 2)


ARRAY_CALLS = {
    "make_spte_batch": lambda a, **kw: S.make_spte_batch(CFG, a, **kw),
    "make_nonleaf_spte_batch": lambda a, **kw: S.make_nonleaf_spte_batch(CFG, a, **kw),
    "access_track_batch": lambda a, **kw: S.access_track_batch(CFG, a, **kw),
    "spte_to_pfn_batch": lambda a, **kw: S.spte_to_pfn_batch(CFG, a, **kw),
    "make_huge_spte_batch": lambda a, **kw: S.make_huge_spte_batch(CFG, a, 2, **kw),
}


@pytest.mark.parametrize("name", ARRAY_CALLS)
def test_batch_array_rules(name):
    f = ARRAY_CALLS[name]
    good = np.zeros(4, np.uint64)
    with pytest.raises(ArrayError, match="dtype int64"):
        f(np.zeros(4, np.int64))
    with pytest.raises(ArrayError, match="dtype uint32"):
        f(np.zeros(4, np.uint32))
    with pytest.raises(ArrayError, match="not C-contiguous"):
        f(np.zeros(8, np.uint64)[::2])
    with pytest.raises(ArrayError, match="numpy.ndarray"):
        f([0, 0, 0, 0])
    ro = np.zeros(4, np.uint64)
    ro.flags.writeable = False
    with pytest.raises(ArrayError, match="read-only"):
        f(good, out=ro)
    with pytest.raises(ArrayError, match="shape"):
        f(good, out=np.zeros(3, np.uint64))
    with pytest.raises(ArrayError, match="dtype"):
        f(good, out=np.zeros(4, np.int64))
    with pytest.raises(ArrayError, match="not C-contiguous"):
        f(good, out=np.zeros(8, np.uint64)[::2])


def test_batch_mismatched_lengths():
    pfn = np.zeros(4, np.uint64)
    with pytest.raises(ArrayError, match="level: shape"):
        S.make_spte_batch(CFG, pfn, level=np.ones(3, np.uint8))
    with pytest.raises(ArrayError, match="old_spte: shape"):
        S.make_spte_batch(CFG, pfn, old_spte=np.zeros(5, np.uint64))
    with pytest.raises(ArrayError, match="dtype"):
        S.make_spte_batch(CFG, pfn, pte_access=np.ones(4, np.uint16))
    with pytest.raises(ArrayError, match="level: shape"):
        S.predicate_batch(CFG, "is_last_spte", pfn, np.ones(2, np.uint8))
    huge = np.full(2, S.make_spte(CFG, 0x200, level=2).spte, np.uint64)
    with pytest.raises(ArrayError, match="index: shape"):
        S.make_small_spte_batch(CFG, huge, 1, np.zeros(3, np.uint16))
    with pytest.raises(ArrayError, match="dtype uint8 given, bool required"):
        S.predicate_batch(CFG, "is_large_pte", pfn, out=np.zeros(4, np.uint8))
    with pytest.raises(ArrayError, match="shape"):
        S.predicate_batch(CFG, "is_large_pte", pfn, out=np.zeros(3, np.bool_))


def test_batch_error_names_the_element_and_value():
    pfn = np.array([1, 2, 1 << 45], np.uint64)
    with pytest.raises(InputError, match=r"element 2 \(pfn\[2\]=.*35184372088832.*PFN mask"):
        S.make_spte_batch(CFG, pfn)


def test_unknown_profile_preset_predicate():
    with pytest.raises(ProfileError, match="'v4.19x'"):
        get_profile("v4.19x")
    with pytest.raises(ProfileError, match="42"):
        get_profile(42)
    with pytest.raises(ProfileError, match="v7"):
        MmuConfig.ept(profile="v7")
    with pytest.raises(PykvmmuError, match="preset='x86'"):
        MmuConfig.preset("x86")
    with pytest.raises(InputError, match="predicate='is_blue'"):
        S.predicate(CFG, "is_blue", 0)
    with pytest.raises(InputError, match="predicate='is_blue'"):
        S.predicate_batch(CFG, "is_blue", np.zeros(1, np.uint64))


def test_nothing_silently_masked_on_bool_and_numpy_scalars():
    assert S.make_spte(CFG, np.uint64(0x12345)).spte == S.make_spte(CFG, 0x12345).spte
    with pytest.raises(InputError):
        S.make_spte(CFG, np.float64(1.0))
