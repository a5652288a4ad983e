"""The role computations' word builders (issue 14: a memo miss costs a few word operations):
the memoised call (cold and warm), the full-check computation and the dict model written before
the word builders (tests/role_dict_model.py, packed with pykvmmu.ref.role) give the same words;
VcpuState's fast construction and replace keep the dataclass's values, keys and refusals."""
import dataclasses
import inspect

import numpy as np
from hypothesis import given, strategies as st

import role_dict_model as M
from pykvmmu import role as R
from pykvmmu._check import boolean, in_range
from pykvmmu.errors import PykvmmuError
from pykvmmu.ref import role as ref_role
from pykvmmu.role import compute as C, packing as P

ERAS = [R.get_era(e) for e in R.ERAS]
FLAGS = [f for f in R.VcpuState.__dataclass_fields__ if f != "maxphyaddr"]
vcpus = st.builds(R.VcpuState, **{f: st.booleans() for f in FLAGS}, maxphyaddr=st.integers(0, 52))


def outcome(fn, *a, **kw):
    try:
        r = fn(*a, **kw)
    except PykvmmuError as e:
        return ("error", type(e), str(e))
    return ("ok", (r.base, r.ext) if isinstance(r, R.CpuRole) else r)


def same(public, full, model, *a, **kw):
    """public (memo cold, then warm) == full; and == the dict model when the call is valid."""
    C._MEMO.clear()
    want = outcome(full, *a, **kw)
    assert outcome(public, *a, **kw) == want
    assert outcome(public, *a, **kw) == want
    if want[0] == "ok":
        m = model(*a, **kw)
        assert want[1] == (type(want[1])(m) if isinstance(m, (tuple, list)) else m)


@given(st.sampled_from(ERAS), vcpus, st.booleans(), st.integers(3, 6), st.booleans(), st.booleans(),
       st.booleans())
def test_state_roles_equal_the_dict_model(era, v, b1, level, b2, b3, b4):
    same(R.kvm_calc_mmu_role_ext, C._kvm_calc_mmu_role_ext, M._kvm_calc_mmu_role_ext, era, v, b1)
    same(R.kvm_calc_cpu_role, C._kvm_calc_cpu_role, M.kvm_calc_cpu_role, era, v)
    same(R.kvm_calc_tdp_mmu_root_page_role, C._kvm_calc_tdp_mmu_root_page_role,
         M._kvm_calc_tdp_mmu_root_page_role, era, v, level, b1, b2)
    same(R.kvm_calc_shadow_mmu_root_page_role, R.kvm_calc_shadow_mmu_root_page_role.__wrapped__,
         M.kvm_calc_shadow_mmu_root_page_role, era, v)
    same(R.shadow_root_sp_roles, C._shadow_root_sp_roles, M._shadow_root_sp_roles, era, v)
    same(R.kvm_calc_shadow_ept_root_page_role, C._kvm_calc_shadow_ept_root_page_role,
         M._kvm_calc_shadow_ept_root_page_role, era, v, b1, b2, level, b3)
    same(R.kvm_calc_shadow_npt_root_page_role, C._kvm_calc_shadow_npt_root_page_role,
         M._kvm_calc_shadow_npt_root_page_role, era, v, level)
    assert b4 in (True, False)


@given(st.sampled_from(ERAS), st.one_of(st.integers(0, (1 << 32) - 1), st.sampled_from([-1, 1 << 32])),
       st.integers(0, 6), st.booleans(), st.integers(-1, 8),
       st.one_of(st.integers(0, (1 << 40) - 1), st.sampled_from([-1, 1 << 64])), st.sampled_from([None, False, True]))
def test_get_page_and_child_roles_equal_the_dict_model(era, word, level, direct, access, x, g32):
    same(R.kvm_mmu_get_page_role, C._kvm_mmu_get_page_role, M._kvm_mmu_get_page_role, era, word,
         level=level, direct=direct, access=access, gaddr=x, guest_32bit=g32)
    same(R.kvm_mmu_child_role, C._kvm_mmu_child_role, M._kvm_mmu_child_role, era, word,
         direct=direct, access=access, index=x & 0x3FF if x >= 0 else x, guest_32bit=g32)


# --------------------------------------------------------------------- VcpuState fast paths
def test_init_defaults_are_the_field_defaults():
    sig = inspect.signature(R.VcpuState.__init__).parameters
    assert [(n, p.default) for n, p in sig.items() if n != "self"] == [
        (f.name, f.default) for f in dataclasses.fields(R.VcpuState)]


def checked(vals: dict) -> dict:
    """What the dataclass's field checks made of ``vals`` (boolean / in_range)."""
    return {k: bool(v) if k != "maxphyaddr" else int(v) for k, v in vals.items()}


@given(st.fixed_dictionaries({f: st.booleans() for f in FLAGS} | {"maxphyaddr": st.integers(0, 52)}),
       st.sets(st.sampled_from(FLAGS + ["maxphyaddr"])))
def test_fast_and_checked_construction_agree(vals, as_numpy):
    fast = R.VcpuState(**vals)
    slow = R.VcpuState(**{k: (np.bool_(v) if k != "maxphyaddr" else np.uint8(v)) if k in as_numpy else v
                          for k, v in vals.items()})
    assert fast == slow and fast._key == slow._key and fast.__dict__ == slow.__dict__
    assert {k: getattr(fast, k) for k in vals} == checked(vals)
    assert all(getattr(slow, k).__class__ is (int if k == "maxphyaddr" else bool) for k in vals)


BAD = [0, 1, None, 1.0, "x", np.int64(1), np.uint8(1)]


def field_checks(**kw):
    """The dataclass's former __post_init__: each field checked in declaration order."""
    for f in dataclasses.fields(R.VcpuState):
        v = kw.get(f.name, f.default)
        if f.name == "maxphyaddr":
            in_range("maxphyaddr", v, 0, 52, "0 (not modelled) or CPUID.80000008H:EAX[7:0]")
        else:
            boolean(f.name, v)


@given(st.dictionaries(st.sampled_from(FLAGS + ["maxphyaddr"]),
                       st.one_of(st.booleans(), st.integers(-1, 60), st.sampled_from(BAD + [40.0]))))
def test_refusals_are_the_field_checks(kw):
    want = outcome(field_checks, **kw)
    got = outcome(R.VcpuState, **kw)
    assert got[0] == want[0] and got[1:] == want[1:] if got[0] == "error" else want == ("ok", None)


@given(vcpus, st.dictionaries(st.sampled_from(FLAGS + ["maxphyaddr"]),
                              st.one_of(st.booleans(), st.integers(0, 60), st.sampled_from(BAD))))
def test_replace_equals_dataclasses_replace(v, kw):
    want = outcome(dataclasses.replace, v, **kw)
    got = outcome(v.replace, **kw)
    assert got == want
    if got[0] == "ok":
        assert got[1]._key == want[1]._key == R.VcpuState(**{**dataclasses.asdict(v), **kw})._key


# --------------------------------------------------------------------- unpack_cpu_role memo
@given(st.sampled_from(ERAS), st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from(
    [True, False, -1, 1 << 64, 1.0, np.uint64(5), np.int64(-1), None, "1"])))
def test_unpack_cpu_role_memo_equals_the_full_path(era, x):
    P._CPU_ROLES.clear()
    word = x.__class__ is int and 0 <= x < 1 << 64
    full = outcome(R.unpack_cpu_role, era, np.uint64(x) if word else x)     # numpy: no memo
    cold = outcome(R.unpack_cpu_role, era, x)
    assert cold == full == outcome(R.unpack_cpu_role, era, x) == outcome(R.unpack_cpu_role, era.name, x)
    if word and era.ext is not None:
        assert cold == ("ok", (x & 0xFFFFFFFF, x >> 32))
        ref_word = ref_role.pack_cpu_role(era.name, ref_role.unpack_role(era.name, x & 0xFFFFFFFF),
                                          ref_role.unpack(ref_role.ext_fields(era.name), x >> 32))
        assert ref_word == x & (era.base.used_mask | era.ext.used_mask << 32)
    for other in ERAS:          # a memoised word never leaks into another era
        if other.ext is None:
            assert outcome(R.unpack_cpu_role, other, 5)[0] == "error"
