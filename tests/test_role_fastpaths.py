"""Scalar fast paths of pykvmmu.role (issue 14): the memo of the role computations, the
pack/unpack fast paths and the lazy Role fields.  Each fast path must give what the full
path gives, and refuse what it refuses, with the same error."""
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pykvmmu import role as R
from pykvmmu._ffi import lib
from pykvmmu.errors import InputError, PykvmmuError
from pykvmmu.ref import role as ref_role
from pykvmmu.role import compute as C
from pykvmmu.role import nested as N
from pykvmmu.role import packing as PK

ERAS = list(R.ERAS)

vcpus = st.builds(R.VcpuState, cr0_pg=st.booleans(), cr0_wp=st.booleans(), cr4_pae=st.booleans(),
                  cr4_pse=st.booleans(), cr4_pke=st.booleans(), cr4_smep=st.booleans(),
                  cr4_smap=st.booleans(), cr4_la57=st.booleans(), efer_lma=st.booleans(),
                  efer_nx=st.booleans(), smm=st.booleans(), guest_mode=st.booleans(),
                  maxphyaddr=st.integers(0, 52))


def outcome(fn, *a, **kw):
    """The result, or the error's type and message."""
    try:
        r = fn(*a, **kw)
    except PykvmmuError as e:
        return ("error", type(e), str(e))
    return ("ok", r.as_u64 if isinstance(r, R.CpuRole) else r)


class SubState(R.VcpuState):
    """A VcpuState subclass: never memoised (not the exact type)."""


# (public, uncached computation (a routine's `_` twin, or `__wrapped__` of a `_memo_on_vcpu` one),
# extra positional arguments drawn per call)
STATE_FNS = [
    (R.kvm_calc_mmu_role_ext, C._kvm_calc_mmu_role_ext, st.tuples(st.booleans())),
    (R.kvm_calc_cpu_role, C._kvm_calc_cpu_role, st.just(())),
    (R.kvm_calc_tdp_mmu_root_page_role, C._kvm_calc_tdp_mmu_root_page_role,
     st.tuples(st.integers(3, 6), st.booleans(), st.booleans())),
    (R.kvm_calc_shadow_mmu_root_page_role, R.kvm_calc_shadow_mmu_root_page_role.__wrapped__,
     st.just(())),
    (R.shadow_root_sp_roles, C._shadow_root_sp_roles, st.just(())),
    (R.kvm_calc_shadow_ept_root_page_role, C._kvm_calc_shadow_ept_root_page_role,
     st.tuples(st.booleans(), st.booleans(), st.integers(3, 6), st.booleans())),
    (R.kvm_calc_shadow_npt_root_page_role, C._kvm_calc_shadow_npt_root_page_role,
     st.tuples(st.integers(3, 6))),
]


@pytest.mark.parametrize("fn,calc,extra", STATE_FNS, ids=[f[0].__name__ for f in STATE_FNS])
@given(data=st.data())
def test_memoised_state_roles_equal_the_computation(fn, calc, extra, data):
    era = R.get_era(data.draw(st.sampled_from(ERAS)))
    v = data.draw(vcpus)
    args = data.draw(extra)
    want = outcome(calc, era, v, *args)
    assert outcome(fn, era, v, *args) == want          # first call (fills the memo)
    assert outcome(fn, era, v, *args) == want          # memo hit
    assert outcome(fn, era.name, v, *args) == want     # era by name
    sub = SubState(**{f: getattr(v, f) for f in R.VcpuState.__dataclass_fields__})
    assert outcome(fn, era, sub, *args) == want        # not memoised


@given(st.sampled_from(ERAS), st.integers(0, (1 << 32) - 1), st.integers(1, 5), st.booleans(),
       st.integers(0, 7), st.integers(0, (1 << 40) - 1), st.sampled_from([None, False, True]))
def test_memoised_get_page_role_equals_the_computation(era, word, level, direct, access, gaddr, g32):
    kw = dict(level=level, direct=direct, access=access, gaddr=gaddr, guest_32bit=g32)
    want = outcome(C._kvm_mmu_get_page_role, era, word, **kw)
    assert outcome(R.kvm_mmu_get_page_role, era, word, **kw) == want
    assert outcome(R.kvm_mmu_get_page_role, era, word, **kw) == want


@given(st.sampled_from(ERAS), st.integers(0, (1 << 32) - 1), st.booleans(), st.integers(0, 8),
       st.integers(0, 512), st.sampled_from([None, False, True]))
def test_memoised_child_role_equals_the_computation(era, word, direct, access, index, g32):
    kw = dict(direct=direct, access=access, index=index, guest_32bit=g32)
    want = outcome(C._kvm_mmu_child_role, era, word, **kw)
    assert outcome(R.kvm_mmu_child_role, era, word, **kw) == want
    assert outcome(R.kvm_mmu_child_role, era, word, **kw) == want


@given(st.sampled_from(ERAS), st.integers(0, (1 << 32) - 1), st.sampled_from(["sp", "root", "cpu", "x"]))
def test_memoised_checker_equals_the_computation(era, word, kind):
    want = outcome(N._check_role_word, era, word, kind)
    assert outcome(R.check_role_word, era, word, kind) == want
    assert outcome(R.check_role_word, era, word, kind) == want


V = R.VcpuState()

# (call that succeeds and is memoised, the same call with one equal-hashing bad argument)
REFUSED_AFTER_HIT = [
    (lambda: R.kvm_calc_mmu_role_ext("v6.14", V, False), lambda: R.kvm_calc_mmu_role_ext("v6.14", V, 0)),
    (lambda: R.kvm_calc_tdp_mmu_root_page_role("v6.14", V, 4, True, False),
     lambda: R.kvm_calc_tdp_mmu_root_page_role("v6.14", V, 4, 1, False)),
    (lambda: R.kvm_calc_tdp_mmu_root_page_role("v6.14", V, 4, True, False),
     lambda: R.kvm_calc_tdp_mmu_root_page_role("v6.14", V, 4.0, True, False)),
    (lambda: R.kvm_calc_tdp_mmu_root_page_role("v6.14", V, 4, True, False),
     lambda: R.kvm_calc_tdp_mmu_root_page_role("v6.14", V, 4, True, 0)),
    (lambda: R.kvm_calc_shadow_ept_root_page_role("v6.14", V, True, False, 4, True),
     lambda: R.kvm_calc_shadow_ept_root_page_role("v6.14", V, 1, False, 4, True)),
    (lambda: R.kvm_calc_shadow_ept_root_page_role("v6.14", V, True, False, 4, True),
     lambda: R.kvm_calc_shadow_ept_root_page_role("v6.14", V, True, False, Fraction(4), True)),
    (lambda: R.kvm_calc_shadow_npt_root_page_role("v6.14", V, 4),
     lambda: R.kvm_calc_shadow_npt_root_page_role("v6.14", V, 4.0)),
    (lambda: R.kvm_mmu_child_role("v6.14", 0x84, direct=True, access=7, index=1),
     lambda: R.kvm_mmu_child_role("v6.14", 0x84, direct=1, access=7, index=1)),
    (lambda: R.kvm_mmu_child_role("v6.14", 0x84, direct=True, access=7, index=1, guest_32bit=False),
     lambda: R.kvm_mmu_child_role("v6.14", 0x84, direct=True, access=7, index=1, guest_32bit=0)),
    (lambda: R.kvm_mmu_child_role("v6.14", 0x84, direct=True, access=7, index=1),
     lambda: R.kvm_mmu_child_role("v6.14", 0x84, direct=True, access=7.0, index=1)),
    (lambda: R.kvm_mmu_get_page_role("v5.4", 0x24, level=1, direct=False),
     lambda: R.kvm_mmu_get_page_role("v5.4", 0x24, level=1, direct=0)),
    (lambda: R.kvm_mmu_get_page_role("v5.4", 0x24, level=1, direct=False),
     lambda: R.kvm_mmu_get_page_role("v5.4", 0x24, level=1.0, direct=False)),
    (lambda: R.check_role_word("v6.14", 0x24, "sp"), lambda: R.check_role_word("v6.14", 36.0, "sp")),
]


@pytest.mark.parametrize("good,bad", REFUSED_AFTER_HIT)
def test_refused_after_a_memoised_success(good, bad):
    good()
    good()
    with pytest.raises(PykvmmuError) as first:
        bad()
    C._MEMO.clear()
    with pytest.raises(PykvmmuError) as cold:
        bad()
    assert (type(first.value), str(first.value)) == (type(cold.value), str(cold.value))


def test_memo_is_bounded_and_results_are_not_shared(monkeypatch):
    monkeypatch.setattr(C, "MEMO_MAX", 8)
    C._MEMO.clear()
    for v in (R.VcpuState(smm=s, cr0_wp=w, cr4_smep=p) for s in (False, True) for w in (False, True)
              for p in (False, True)):
        R.kvm_calc_tdp_mmu_root_page_role("v6.14", v)
        R.kvm_calc_shadow_mmu_root_page_role("v6.14", v)
        assert len(C._MEMO) <= 8
    roots = R.shadow_root_sp_roles("v5.0", R.VcpuState.nonpae32())
    roots.append(0)
    assert R.shadow_root_sp_roles("v5.0", R.VcpuState.nonpae32()) == roots[:-1]
    bad = R.check_role_word("v6.14", 0xFFFFFFFF)
    bad.clear()
    assert R.check_role_word("v6.14", 0xFFFFFFFF)


def test_vcpu_state_key_is_its_checked_fields():
    a = R.VcpuState(maxphyaddr=np.uint8(40), smm=np.bool_(True))
    b = R.VcpuState(maxphyaddr=40, smm=True)
    assert a == b and a._key == b._key
    keys = {R.VcpuState(**{f: not getattr(V, f)})._key for f in R.VcpuState.__dataclass_fields__
            if f != "maxphyaddr"} | {R.VcpuState(maxphyaddr=m)._key for m in range(53)}
    assert len(keys) == 12 + 53
    assert R.VcpuState(cr0_pg=False).replace(cr0_pg=True)._key == V._key


# ------------------------------------------------------------------ pack / unpack fast paths
class PlainDict(dict):
    """A dict subclass: RoleLayout.pack takes its full path."""


BAD_VALUES = [True, np.bool_(True), np.uint8(1), np.int64(3), -1, 2, 255, 256, 1 << 70, 1.0,
              Decimal(1), Fraction(1), "1", None, np.float64(1)]


LAYOUTS = [lay for e in R.ERAS.values() for lay in (e.base, e.ext, e.cpu_role) if lay is not None]


@given(data=st.data())
def test_layout_pack_fast_equals_full_path(data):
    lay = data.draw(st.sampled_from(LAYOUTS))
    vals = data.draw(st.dictionaries(st.sampled_from(lay.names + ("nope",)),
                                     st.one_of(st.integers(0, 255), st.sampled_from(BAD_VALUES)),
                                     max_size=len(lay.names)))
    assert outcome(lay.pack, vals) == outcome(lay.pack, PlainDict(vals))


@given(st.sampled_from(ERAS), st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 32) - 1))
def test_pack_and_pack_cpu_role_match_the_reference(era, w, x):
    e = R.get_era(era)
    word = w & e.base.used_mask
    f = e.base.unpack(word)
    if f["level"] <= 5:
        assert R.pack(era, **f) == ref_role.pack_role(era, **f) == word
    if e.ext is not None:
        x = e.ext.unpack(x & e.ext.used_mask)
        assert R.pack_cpu_role(era, f, x) == ref_role.pack_cpu_role(era, f, x)
        assert R.pack_ext(era, **x) == ref_role.pack(ref_role.ext_fields(era), x)


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_non_integers_refused_by_both_fast_paths(bad):
    lay = R.get_era("v6.14").base
    few, many = {"direct": bad}, {**lay.unpack(0x24), "direct": bad}
    for d in (few, many):
        assert outcome(lay.pack, d) == outcome(lay.pack, PlainDict(d))
        assert outcome(R.pack, "v6.14", **d) == outcome(R.pack, "v6.14", **PlainDict(d))
    if isinstance(bad, (Decimal, Fraction, float, str)) or bad is None:
        assert outcome(lay.pack, many)[0] == "error"


def test_pack_cpu_role_mixed_names_take_the_full_path():
    # an "ext_" name in base packs into the cpu role's ext field; ext's own value wins
    assert R.pack_cpu_role("v6.14", {"ext_valid": 1}, {}) == 1 << 32
    assert R.pack_cpu_role("v6.14", {"ext_valid": 1}, {"valid": 0}) == 0
    with pytest.raises(PykvmmuError):
        R.pack_cpu_role("v6.14", {"level": 4}, {"ext_valid": 1})


@given(st.sampled_from(ERAS), st.integers(0, (1 << 32) - 1), st.sampled_from([False, True]))
def test_unpack_fast_paths(era, word, strict):
    e = R.get_era(era)
    r = outcome(lambda: R.unpack(era, word, strict).fields)
    if strict and word & ~e.base.used_mask:
        assert r[0] == "error"
    else:
        assert r == ("ok", ref_role.unpack_role(era, word))
        assert R.unpack(era, word, strict) == R.Role(e, word, None)
    if e.ext is not None:
        w = word & 0xFFFF
        got = outcome(R.unpack_ext, era, w, strict)
        assert got == outcome(e.ext.unpack, np.uint32(w), strict)       # numpy: the full path


def test_unpack_returns_fresh_dicts():
    d = R.unpack_ext("v6.14", 0x55)
    d["valid"] = 7
    assert R.unpack_ext("v6.14", 0x55)["valid"] == 1
    r = R.unpack("v6.14", 0x24)
    assert r.level == 4 and r["quadrant"] == 1 and r.fields is r.fields
    with pytest.raises(AttributeError):
        r.nosuchfield


def test_unpack_cpu_role_is_a_plain_cpu_role():
    era = R.get_era("v6.14")
    r = R.unpack_cpu_role(era, 0x55 << 32 | 0x24)
    assert r == R.CpuRole(era, 0x24, 0x55) and hash(r) == hash(R.CpuRole(era, 0x24, 0x55))
    assert (r.base, r.ext, r.as_u64) == (0x24, 0x55, 0x55 << 32 | 0x24)
    with pytest.raises(AttributeError):
        r.base = 1


def test_cpu_role_layout_is_the_eras_own():
    # an era replaced under the same name with another ext layout gets its own kvm_cpu_role
    import dataclasses
    e = R.get_era("v6.14")
    other = next(x for x in R.ERAS.values() if x.ext is not None and x.ext.names != e.ext.names)
    q = dataclasses.replace(e, ext=other.ext)
    assert q.name == e.name
    assert q.cpu_role.names == tuple(e.base.names) + tuple("ext_" + n for n in other.ext.names)
    assert e.cpu_role.names == tuple(e.base.names) + tuple("ext_" + n for n in e.ext.names)


# ------------------------------------------------------------------ pack(era, dict) / one C call

_NAMES = sorted({n for e in R.ERAS.values() for lay in (e.base, e.ext) if lay is not None
                 for n in lay.names} | {"nx", "gpte_bytes", "nope"})
_VALUES = st.one_of(st.integers(0, 16), st.sampled_from([4, 8, 63, 64, 255, 256, -1] + BAD_VALUES))


def _fields(era_layout_names):
    """Dicts of the layout's names, other eras' names, the aliases and unknown names."""
    return st.dictionaries(st.sampled_from(era_layout_names + tuple(_NAMES)), _VALUES, max_size=18)


@given(st.sampled_from(ERAS), st.data())
def test_pack_fast_path_equals_full_checks(era, data):
    e = R.get_era(era)
    d = data.draw(_fields(e.base.names))
    kept = dict(d)
    full = outcome(PK._pack_full, e, dict(d))
    assert outcome(R.pack, era, **d) == full
    assert outcome(R.pack, e, d) == full
    assert outcome(R.pack, era, PlainDict(d)) == full
    assert d == kept                                    # the caller's dict is never changed


@given(st.sampled_from([e for e in ERAS if R.get_era(e).ext is not None]), st.data())
def test_pack_ext_and_cpu_role_fast_paths_equal_full_checks(era, data):
    e = R.get_era(era)
    x = data.draw(_fields(e.ext.names))
    full = outcome(e.ext.pack, PlainDict(x))
    assert outcome(R.pack_ext, era, **x) == full
    assert outcome(R.pack_ext, era, x) == full
    b = data.draw(_fields(e.base.names))
    assert outcome(R.pack_cpu_role, era, b, x) == outcome(PK._pack_cpu_role_full, e, b, x)


def test_pack_takes_one_dict_or_keywords():
    f = {"level": 3, "direct": 1}
    assert R.pack("v6.14", f) == R.pack("v6.14", **f) == R.pack("v6.14", PlainDict(f)) == 0x83
    assert R.pack_ext("v6.14", {"valid": 1}) == R.pack_ext("v6.14", valid=1) == 1
    assert R.pack("v6.14", None) == R.pack("v6.14") == 0
    for fn in (R.pack, R.pack_ext):
        with pytest.raises(InputError, match="expected a dict"):
            fn("v6.14", [("level", 1)])
        with pytest.raises(InputError, match="not both"):
            fn("v6.14", {"level": 1}, direct=1)


@pytest.mark.parametrize("era", ERAS)
def test_pack_level_rule_in_both_fast_paths(era):
    e = R.get_era(era)
    many = e.base.unpack(0)                             # every field: the C call
    for lv in [*range(16), True, np.uint8(3)]:
        for d in ({"level": lv, "direct": 1}, {**many, "level": lv}):
            got = outcome(R.pack, era, d)
            assert got == outcome(PK._pack_full, e, dict(d))
            assert (got[0] == "ok") == (lv <= 5)


def test_pack_named_refuses_a_count_other_than_the_spec():
    lay = R.get_era("v6.14").base
    spec = bytes([0, 5, 3, 1, lib.KVMMU_ROLE_SPEC_END])   # level <= 5, direct
    vals = bytes([2, 1, 1])
    assert lib.kvmmu_role_pack_named(lay._c, spec, vals, 2) == 0x82
    for n in (0, 1, 3):
        assert lib.kvmmu_role_pack_named(lay._c, spec, vals, n) == lib.KVMMU_ROLE_REFUSED
    assert lib.kvmmu_role_pack_named(lay._c, spec, bytes([6, 1]), 2) == lib.KVMMU_ROLE_REFUSED
    assert lib.kvmmu_role_pack_named(lay._c, spec, bytes([2, 2]), 2) == lib.KVMMU_ROLE_REFUSED


@pytest.mark.parametrize("era", ERAS)
def test_every_field_in_layout_order_or_not_packs_the_same(era):
    # every field in the layout's order takes the precomputed spec, any other order the memo
    e = R.get_era(era)
    for w in (0, e.base.used_mask & 0x0F0F3F72, e.base.used_mask):
        f = e.base.unpack(w)
        f["level"] = 4
        rev = dict(reversed(f.items()))
        assert R.pack(era, f) == R.pack(era, rev) == PK._pack_full(e, dict(f))
        for bad in ({**f, "level": 6}, {**rev, "level": 6}):
            assert outcome(R.pack, era, bad) == outcome(PK._pack_full, e, dict(bad))
            assert outcome(R.pack, era, bad)[0] == "error"
        for lay in (e.base, e.ext, e.cpu_role):
            if lay is not None:
                g = lay.unpack(w & lay.used_mask)
                assert lay.pack(g) == lay.pack(dict(reversed(g.items()))) == lay.pack(PlainDict(g))
        if e.ext is not None:
            x = e.ext.unpack(w & e.ext.used_mask)
            xr = dict(reversed(x.items()))
            assert R.pack_ext(era, x) == R.pack_ext(era, xr) == e.ext.pack(PlainDict(x))
            assert (R.pack_cpu_role(era, f, x) == R.pack_cpu_role(era, rev, xr)
                    == PK._pack_cpu_role_full(e, f, x))


@pytest.mark.parametrize("era", ERAS)
def test_every_field_count_with_an_alias_or_unknown_name_takes_the_full_checks(era):
    # as many names as the layout has fields, one of them not a field: the full checks decide
    e = R.get_era(era)
    f = {**e.base.unpack(0), "level": 2}
    for swap in ({e.nx: "nx"}, {e.bit4: "gpte_bytes"}, {"smm": "nope"}):
        (old, new), = swap.items()
        d = {new if k == old else k: (8 if new == "gpte_bytes" else v) for k, v in f.items()}
        assert len(d) == len(e.base.fields)
        assert outcome(R.pack, era, d) == outcome(R.pack, era, **d) == outcome(PK._pack_full, e, dict(d))
    if e.ext is not None:
        x = {**e.ext.unpack(0)}
        x["nope"] = x.pop("valid")
        assert outcome(R.pack_ext, era, x) == outcome(e.ext.pack, PlainDict(x))
        assert outcome(R.pack_cpu_role, era, f, x) == outcome(PK._pack_cpu_role_full, e, f, x)
        assert outcome(R.pack_cpu_role, era, f, x)[0] == "error"
