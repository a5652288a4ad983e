"""MMIO SPTE encoding: worked vectors, C core vs reference, round trips, lost bits, batch API."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from pykvmmu import mmio as M
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ArrayError, InputError, PykvmmuError
from pykvmmu.profile import PROFILES
from pykvmmu.ref import mmio as R

U64 = (1 << 64) - 1


def _configs():
    out = list(MmuConfig.all_presets())
    for prof in PROFILES:
        # L1TF hosts (legacy and EPT), a 52-bit EPT host, a caching-off host.
        out.append(MmuConfig.npt(profile=prof, phys_bits=39, cache_bits=44))
        out.append(MmuConfig.ept(profile=prof, maxphyaddr=46, phys_bits=40, cache_bits=45))
        out.append(MmuConfig.ept(profile=prof, maxphyaddr=52))
        out.append(MmuConfig.npt(profile=prof, maxphyaddr=52))
        out.append(MmuConfig.shadow(profile=prof, maxphyaddr=39))
    return out


CONFIGS = _configs()
CACHING = [c for c in CONFIGS if c.mmio_detects]
ids = st.integers(0, len(CONFIGS) - 1)
cids = st.integers(0, len(CACHING) - 1)
gfns = st.integers(0, (1 << 40) - 1)
gens = st.integers(0, U64)
accs = st.integers(0, 7)
u64s = st.integers(0, U64)


# ------------------------------------------------------------------ worked vectors (section 8)
def test_worked_ept():
    c = MmuConfig.ept()
    s = M.make_mmio_spte(c, 0xFEE00, 7, 0x12345)
    assert s == 0x1230_0000_FEE0_022E
    assert M.get_mmio_spte_generation(c, s) == 0x12345
    assert M.get_mmio_spte_gfn(c, s) == 0xFEE00
    assert M.get_mmio_spte_access(c, s) == 0
    assert S.is_mmio_spte(c, s) and not S.is_shadow_present_pte(c, s)


def test_worked_legacy():
    c = MmuConfig.npt()
    assert c.mmio_value == (1 << 51) | 1
    s = M.make_mmio_spte(c, 0x12345, 7, 0x7FFFF)
    assert s == 0x7FF8_0000_1234_57FF
    assert M.get_mmio_spte_access(c, s) == 6
    assert M.get_mmio_spte_generation(c, s) == 0x7FFFF and M.get_mmio_spte_gfn(c, s) == 0x12345


def test_worked_l1tf():
    c = MmuConfig.npt(phys_bits=39, cache_bits=44)
    assert c.nonpresent_or_rsvd_mask == 0x1F << 39
    assert c.nonpresent_or_rsvd_lower_gfn_mask == ((1 << 39) - 1) & ~0xFFF
    s = M.make_mmio_spte(c, 0x1000_0ABC, 6, 1)
    assert s == 0x0008_2F80_00AB_C00F
    assert M.get_mmio_spte_gfn(c, s) == 0x1000_0ABC


def test_worked_tdx():
    c = MmuConfig.tdx()
    assert c.mmio_value == 0 and c.mmio_mask == 0x8000_0000_0000_0007
    s = M.make_mmio_spte(c, 0x80000, 7, 0x100)
    assert s == 0x0010_0000_8000_0000
    assert S.is_mmio_spte(c, s) and S.is_mmio_spte(c, 0)   # a raw 0 is MMIO for a TD


def test_worked_frozen_nonpresent_never_mmio():
    for c in CONFIGS:
        for v in (c.profile.nonpresent_value, c.profile.frozen_value):
            if v is not None:
                assert not S.is_mmio_spte(c, v), (c.mode, c.profile.name, hex(v))


# ------------------------------------------------------------------ C core vs reference
@given(ids, gfns, accs, gens)
def test_make_matches_reference(i, gfn, acc, gen):
    c = CONFIGS[i]
    assert M.make_mmio_spte(c, gfn, acc, gen) == R.make_mmio_spte(c, gfn, acc, gen)


@given(ids, u64s, u64s)
def test_decode_check_matches_reference(i, s, g):
    c = CONFIGS[i]
    assert M.get_mmio_spte_gfn(c, s) == R.get_mmio_spte_gfn(c, s)
    assert M.get_mmio_spte_access(c, s) == R.get_mmio_spte_access(c, s)
    assert M.get_mmio_spte_generation(c, s) == R.get_mmio_spte_generation(c, s)
    assert S.is_mmio_spte(c, s) == R.is_mmio_spte(c, s)
    assert M.check_mmio_spte(c, s, g) == R.check_mmio_spte(c, s, g)
    assert M.mmio_fault_outcome(c, s, g) == R.mmio_fault_outcome(c, s, g)


@given(ids, st.lists(st.tuples(gfns, accs, gens), min_size=1, max_size=40), gens)
def test_batch_matches_reference(i, rows, g):
    c = CONFIGS[i]
    gfn = np.array([r[0] for r in rows], dtype=np.uint64)
    acc = np.array([r[1] for r in rows], dtype=np.uint64)
    gen = np.array([r[2] for r in rows], dtype=np.uint64)
    s = M.make_mmio_spte_batch(c, gfn, acc, gen)
    assert [int(x) for x in s] == [R.make_mmio_spte(c, *r) for r in rows]
    s2 = M.make_mmio_spte_batch(c, gfn, 5, g)
    assert [int(x) for x in s2] == [R.make_mmio_spte(c, r[0], 5, g) for r in rows]
    assert [int(x) for x in M.get_mmio_spte_gfn_batch(c, s)] == [R.get_mmio_spte_gfn(c, int(x)) for x in s]
    assert [int(x) for x in M.get_mmio_spte_access_batch(c, s)] == [R.get_mmio_spte_access(c, int(x)) for x in s]
    assert [int(x) for x in M.get_mmio_spte_generation_batch(c, s)] == \
        [R.get_mmio_spte_generation(c, int(x)) for x in s]
    assert list(M.check_mmio_spte_batch(c, s, g)) == [R.check_mmio_spte(c, int(x), g) for x in s]
    assert list(M.check_mmio_spte_batch(c, s, gen)) == \
        [R.check_mmio_spte(c, int(x), r[2]) for x, r in zip(s, rows)]
    assert [M.FAULT_OUTCOMES[k] for k in M.mmio_fault_outcome_batch(c, s, g)] == \
        [R.mmio_fault_outcome(c, int(x), g) for x in s]
    assert list(M.is_mmio_spte_batch(c, s)) == [R.is_mmio_spte(c, int(x)) for x in s]


# ------------------------------------------------------------------ round trips and lost bits
def _expected_gfn(c, gfn):
    """Section 10.1: lower bits kept, R bits kept, bits [cache, cache+5) alias into R."""
    gpa = gfn << 12
    r = c.nonpresent_or_rsvd_mask
    return ((gpa & (c.nonpresent_or_rsvd_lower_gfn_mask | r)) | ((gpa >> 5) & r)) >> 12


@given(cids, gfns, accs, gens)
def test_round_trip_caching_on(i, gfn, acc, gen):
    c = CACHING[i]
    s = M.make_mmio_spte(c, gfn, acc, gen)
    assert S.is_mmio_spte(c, s)
    assert not S.is_shadow_present_pte(c, s)
    assert M.get_mmio_spte_generation(c, s) == gen & M.mmio_generation_mask(c)
    assert M.get_mmio_spte_access(c, s) == acc & c.mmio_access_mask
    assert M.get_mmio_spte_gfn(c, s) == _expected_gfn(c, gfn)
    if not gfn << 12 & ~(c.nonpresent_or_rsvd_lower_gfn_mask | c.nonpresent_or_rsvd_mask):
        assert M.get_mmio_spte_gfn(c, s) == gfn          # no bit lost
    assert M.check_mmio_spte(c, s, gen & ~M.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS)
    assert not M.check_mmio_spte(c, s, gen | M.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS)


def test_lost_bits_documented():
    # No L1TF, SME host: bits [x86_phys_bits, 52) of the GPA are dropped by decode.
    c = MmuConfig.preset("npt-sme")
    lost = M.mmio_gfn_lost_bits(c)
    assert lost == ((1 << 40) - 1) & ~(((1 << c.phys_bits) - 1) >> 12)
    gfn = 1 << (c.phys_bits - 12)
    assert M.get_mmio_spte_gfn(c, M.make_mmio_spte(c, gfn | 5, 6, 0)) == 5
    # L1TF: a GPA bit at cache_bits aliases the bit five below; a bit at cache_bits+5 vanishes.
    l1 = MmuConfig.npt(phys_bits=39, cache_bits=44)
    assert M.get_mmio_spte_gfn(l1, M.make_mmio_spte(l1, 1 << (44 - 12), 6, 0)) == 1 << (39 - 12)
    assert M.get_mmio_spte_gfn(l1, M.make_mmio_spte(l1, 1 << (49 - 12), 6, 0)) == 0
    assert M.mmio_gfn_lost_bits(l1) == ((1 << 40) - 1) & ~(((1 << 44) - 1) >> 12)
    # EPT, 46-bit, no L1TF: every gfn below 2^34 survives; bit 34 and up is lost.
    e = MmuConfig.ept()
    assert M.mmio_gfn_lost_bits(e) == ((1 << 40) - 1) & ~((1 << 34) - 1)


def test_gen_layout_v510_18_bits():
    c = MmuConfig.ept(profile="v5.10")
    assert M.mmio_generation_mask(c) == (1 << 18) - 1
    assert M.mmio_generation_bits(c) == (0x1FF << 3) | (0x1FF << 54)
    s = M.make_mmio_spte(c, 0x1234, 7, 0x3FFFF)
    assert s & (3 << 52) == 3 << 52 and S.is_mmio_spte(c, s)
    assert M.get_mmio_spte_generation(c, s) == 0x3FFFF
    assert M.make_mmio_spte(c, 0, 0, 1 << 18) == M.make_mmio_spte(c, 0, 0, 0)   # bit 18 masked away
    n = MmuConfig.ept()
    assert M.make_mmio_spte(n, 0, 0, 1 << 18) != M.make_mmio_spte(n, 0, 0, 0)


def test_generation_mask_and_bits_match_reference():
    """mmio_generation_mask / mmio_generation_bits (the C core's) = the reference's layout."""
    for c in CONFIGS:
        low, _, high, _, gm = R.gen_layout(c.profile)
        assert M.mmio_generation_mask(c) == gm
        assert M.mmio_generation_bits(c) == low | high


def test_generation_mmio_spte_mask_warn():
    c = MmuConfig.ept()
    assert M.generation_mmio_spte_mask(c, 0x7FFFF) == 0x7F8 | (0x7FF << 52)
    with pytest.raises(InputError, match="MMIO_SPTE_GEN_MASK"):
        M.generation_mmio_spte_mask(c, 1 << 19)


def test_caching_off_every_is_mmio_false():
    off = [c for c in CONFIGS if not c.mmio_caching]
    assert off
    rng = np.random.default_rng(3)
    for c in off:
        s = M.make_mmio_spte_batch(c, rng.integers(0, 1 << 40, 500, dtype=np.uint64), 7,
                                   rng.integers(0, 1 << 19, 500, dtype=np.uint64))
        s = np.concatenate([s, np.array([0, U64, c.mmio_value], dtype=np.uint64)])
        assert not M.is_mmio_spte_batch(c, s).any()
        assert M.mmio_fault_outcome(c, int(s[0]), 0) == "not_mmio"
        assert M.mmio_caching_off_reasons(c)
    for c in CACHING:
        assert M.mmio_caching_off_reasons(c) == ()


def test_decode_prints_mmio_fields():
    c = MmuConfig.ept()
    s = M.make_mmio_spte(c, 0xFEE00, 7, 0x12345)
    rec = S.decode(c, s)
    assert rec.kind == "mmio"
    assert rec.mmio == {"gfn": 0xFEE00, "access": 0, "generation": 0x12345}
    text = str(rec)
    assert "0xfee00" in text and "0x12345" in text


def test_is_mmio_reexport():
    assert M.is_mmio_spte is S.is_mmio_spte


# ------------------------------------------------------------------ errors
def test_scalar_errors():
    c = MmuConfig.ept()
    with pytest.raises(InputError, match="gfn"):
        M.make_mmio_spte(c, 1 << 40)
    with pytest.raises(InputError, match="access"):
        M.make_mmio_spte(c, 1, 8)
    with pytest.raises(InputError, match="generation"):
        M.make_mmio_spte(c, 1, 7, 1 << 64)
    with pytest.raises(InputError, match="gfn"):
        M.make_mmio_spte(c, -1)
    with pytest.raises(InputError, match="gfn"):
        M.make_mmio_spte(c, "x")
    for f in (M.get_mmio_spte_gfn, M.get_mmio_spte_access, M.get_mmio_spte_generation):
        with pytest.raises(InputError, match="spte"):
            f(c, 1 << 64)
        with pytest.raises(InputError, match="spte"):
            f(c, 1.5)
    with pytest.raises(InputError, match="memslots_generation"):
        M.check_mmio_spte(c, 0, -1)
    with pytest.raises(InputError, match="update-in-progress"):
        M.kvm_mmu_invalidate_mmio_sptes(c, 1 << 63)
    with pytest.raises(InputError, match="nr_as_ids"):
        M.kvm_mmu_invalidate_mmio_sptes(c, 2, 3)
    # numpy scalars work on the scalar path
    assert M.make_mmio_spte(c, np.uint64(0xFEE00), np.uint8(7), np.uint64(0x12345)) == 0x1230_0000_FEE0_022E


def test_batch_errors_name_element():
    c = MmuConfig.ept()
    g = np.array([1, 2, 1 << 40, 3], dtype=np.uint64)
    out = np.full(4, 7, dtype=np.uint64)
    with pytest.raises(InputError, match=r"element 2 \(gfn\[2\]=0x10000000000\)"):
        M.make_mmio_spte_batch(c, g, out=out)
    a = np.array([7, 9, 0, 0], dtype=np.uint64)
    with pytest.raises(InputError, match=r"element 1 \(access\[1\]=0x9\)"):
        M.make_mmio_spte_batch(c, g[:2].copy(), a[:2].copy())
    with pytest.raises(InputError, match=r"element 1 .*generation\[1\]"):
        M.kvm_mmu_invalidate_mmio_sptes_batch(c, np.array([2, 1 << 63], dtype=np.uint64))


def test_batch_array_checks():
    c = MmuConfig.ept()
    g = np.arange(8, dtype=np.uint64)
    with pytest.raises(ArrayError, match="dtype"):
        M.make_mmio_spte_batch(c, g.astype(np.int64))
    with pytest.raises(ArrayError, match="contiguous"):
        M.get_mmio_spte_gfn_batch(c, g[::2])
    with pytest.raises(ArrayError, match="shape"):
        M.make_mmio_spte_batch(c, g, generation=np.arange(4, dtype=np.uint64))
    with pytest.raises(ArrayError, match="shape"):
        M.get_mmio_spte_generation_batch(c, g, out=np.empty(4, dtype=np.uint64))
    ro = np.empty(8, dtype=np.uint64)
    ro.flags.writeable = False
    with pytest.raises(ArrayError, match="read-only"):
        M.get_mmio_spte_access_batch(c, g, out=ro)
    with pytest.raises(ArrayError):
        M.check_mmio_spte_batch(c, g, 0, out=np.empty(8, dtype=np.uint8))
    with pytest.raises(PykvmmuError):
        M.make_mmio_spte_batch(c, [1, 2])
    out = np.empty(8, dtype=np.uint64)
    assert M.make_mmio_spte_batch(c, g, out=out) is out
    two_d = M.make_mmio_spte_batch(c, np.arange(6, dtype=np.uint64).reshape(2, 3))
    assert two_d.shape == (2, 3)
    assert M.get_mmio_spte_gfn_batch(c, two_d).tolist() == [[0, 1, 2], [3, 4, 5]]
