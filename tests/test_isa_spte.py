"""The SPTE kernels at every ISA level the CPU supports, for every preset of every era (each
era-rule combination is a separately compiled kernel variant): decode_batch (AVX2 and
AVX-512 kernels) and predicate_batch (AVX-512 kernel, 64 SPTEs per step) equal the portable
loops byte for byte, around the vector step and with scalar and per-element levels."""
import numpy as np
import pytest

from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ConfigError, ProfileError

from test_isa import LEVELS, _sptes
from test_profile_fields import RULE_FIELDS, _variants

PRESETS = list(MmuConfig.all_presets())


def _names(cfg):
    return [n for n, (_, _, feat) in S.PREDICATES.items() if not feat or getattr(cfg.profile, feat)]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("cfg", PRESETS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_decode_presets(cfg, level):
    vals = _sptes(cfg, 300, seed=3)
    capped, portable = cfg._isa_copy(level), cfg._isa_copy("portable")
    for lv in (1, 4):
        for n in (len(vals), 61):
            assert S.decode_batch(capped, vals[:n], lv, threads=1).tobytes() == \
                S.decode_batch(portable, vals[:n], lv, threads=1).tobytes()


@pytest.mark.parametrize("cfg", PRESETS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_decode_portable_blocks(cfg):
    """The portable uniform-level decode (32-bit lanes, blocks of 64 records) equals the
    per-element-level one (decode_one(): 64-bit lanes, spread bit mask) at every level, around
    and across the block boundaries."""
    vals = _sptes(cfg, 300, seed=11)
    portable = cfg._isa_copy("portable")
    for lv in range(1, 6):
        lvs = np.full(vals.size, lv, np.uint8)
        for lo, hi in ((0, vals.size), (0, 64), (0, 65), (1, 130), (3, 67), (63, 192)):
            got = S.decode_batch(portable, vals[lo:hi], lv, threads=1)
            want = S.decode_batch(portable, vals[lo:hi], lvs[lo:hi], threads=1)
            assert got.tobytes() == want.tobytes(), (lv, lo, hi)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("cfg", PRESETS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_predicate_presets(cfg, level):
    vals = _sptes(cfg, 300, seed=4)
    lvs = np.random.default_rng(5).integers(1, 6, vals.size, dtype=np.uint8)
    capped, portable = cfg._isa_copy(level), cfg._isa_copy("portable")
    for name in _names(cfg):
        for lv in (1, 3, lvs):
            for lo, hi in ((0, vals.size), (1, 130), (5, 68)):     # around the 64-SPTE step
                lv_part = lv[lo:hi] if isinstance(lv, np.ndarray) else lv
                got = S.predicate_batch(capped, name, vals[lo:hi], lv_part, threads=1)
                want = S.predicate_batch(portable, name, vals[lo:hi], lv_part, threads=1)
                assert np.array_equal(got, want), (name, lv, lo)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("field, value, index", [
    ("level", 0, 40001), ("level", 6, 12345), ("level", 255, 7), ("pte_access", 8, 33333),
    ("pte_access", 255, 49999), ("pfn", 1 << 41, 49998), ("pfn", 1 << 63, 3)])
def test_make_spte_table_refusals(level, field, value, index):
    """The vector table paths (AVX2 and AVX-512 gathers, range checks as running maxima)
    refuse exactly what the portable loop refuses, naming the same first bad element."""
    from pykvmmu.errors import InputError
    cfg = MmuConfig.ept()._isa_copy(level)
    n = 50000
    pfn = np.arange(n, dtype=np.uint64)
    kw = {"level": np.ones(n, np.uint8), "pte_access": np.full(n, 7, np.uint8),
          "flags": np.zeros(n, np.uint8)}
    if field == "pfn":
        pfn[index] = value
    else:
        kw[field][index] = value
    with pytest.raises(InputError, match=rf"element {index} \("):
        S.make_spte_batch(cfg, pfn, threads=1, **kw)


@pytest.mark.parametrize("level", LEVELS)
def test_make_spte_table_scalars(level):
    """A scalar level or access next to per-element arrays takes the same vector table path."""
    rng = np.random.default_rng(8)
    n = 20011
    pfn = rng.integers(0, 1 << 36, n, dtype=np.uint64)
    arrays = {"level": rng.integers(1, 6, n, dtype=np.uint8),
              "pte_access": rng.integers(0, 8, n, dtype=np.uint8),
              "flags": rng.integers(0, 256, n, dtype=np.uint8)}
    for scalar in ({"level": 2}, {"pte_access": 5}, {"level": 5, "pte_access": 0}):
        kw = dict(arrays, **scalar)
        assert np.array_equal(S.make_spte_batch(MmuConfig.ept()._isa_copy(level), pfn, threads=1, **kw),
                              S.make_spte_batch(MmuConfig.ept()._portable_copy(), pfn, threads=1, **kw))


@pytest.mark.parametrize("level", [lv for lv in LEVELS if lv != "portable"])
def test_predicate_rule_variants(level):
    """Rule combinations outside the profiles' own (a profile with one rule field changed)
    run the predicate kernels' run-time era variant: equal to the portable loops too."""
    built = 0
    for field in RULE_FIELDS:
        for prof in _variants(field):
            for preset in (MmuConfig.PRESETS if prof is not None else ()):
                try:
                    cfg = MmuConfig.preset(preset, profile=prof)
                except (ConfigError, ProfileError):
                    continue
                built += 1
                vals = _sptes(cfg, 100, seed=6)
                capped, portable = cfg._isa_copy(level), cfg._isa_copy("portable")
                for name in _names(cfg):
                    got = S.predicate_batch(capped, name, vals, 2, threads=1)
                    want = S.predicate_batch(portable, name, vals, 2, threads=1)
                    assert np.array_equal(got, want), (prof.name, preset, name)
    assert built


def _vlane_configs():
    from pykvmmu.profile import PROFILES
    out = list(PRESETS)
    for prof in PROFILES:     # L1TF hosts, 52-bit hosts, shadow paging, MMIO caching off
        out += [MmuConfig.npt(profile=prof, phys_bits=39, cache_bits=44),
                MmuConfig.ept(profile=prof, maxphyaddr=46, phys_bits=40, cache_bits=45),
                MmuConfig.ept(profile=prof, maxphyaddr=52), MmuConfig.shadow(profile=prof, maxphyaddr=39)]
    for field in RULE_FIELDS:  # rule combinations outside the profiles' own
        for prof in _variants(field):
            for preset in (("ept", "npt") if prof is not None else ()):
                try:
                    out.append(MmuConfig.preset(preset, profile=prof))
                except (ConfigError, ProfileError):
                    pass
    return out


def _vlane_sptes(cfg, seed):
    """_sptes() plus SPTEs for the multi-bit EQ rows (MMIO SPTEs, every AD type, RWX 110b)
    and the BITIDX row (every value of bits 5:0), padded to a multiple of 64."""
    from pykvmmu import mmio as M
    rng = np.random.default_rng(seed)
    base = _sptes(cfg, 64, seed=seed)
    made = base[:8]
    ad = np.concatenate([(made & ~np.uint64(3 << 52)) | np.uint64(t << 52) for t in range(4)])
    low = (made[0] & ~np.uint64(63)) | np.arange(64, dtype=np.uint64)
    mmio = [M.make_mmio_spte(cfg, g, a, 0) for g, a in ((0, 0), (0x1234, 7), (0x5678, 3))]
    vals = np.concatenate([base, ad, low, low ^ np.uint64(0x80),           # 0x80: the PS bit
                           np.array(mmio + [0x6, 0x806, ~0x6 & (2**64 - 1)], np.uint64)])
    pad = (-vals.size) % 64
    return np.concatenate([vals, rng.integers(0, 2**64 - 1, pad, dtype=np.uint64, endpoint=True)])


def test_vlane_every_predicate_matches_reference():
    """The AVX-512 vector-lane kernel (spte_vlane512) for every predicate, not only those of
    PRED_VLANES, through its test entry: its row kinds BITIDX, TEST_SEL and multi-bit EQ
    (which no listed predicate uses) equal the reference model over many configurations."""
    from pykvmmu import isa
    from pykvmmu._batch import ptr
    from pykvmmu._ffi import lib
    from pykvmmu.ref import spte as R
    if "avx512" not in isa.supported_levels():
        pytest.skip("CPU lacks AVX-512: the vector-lane predicate kernel cannot run")
    seen = {name: set() for name in S.PREDICATES}
    for k, cfg in enumerate(_vlane_configs()):
        c = cfg._isa_copy("avx512")
        vals = _vlane_sptes(cfg, k)
        out = np.empty(vals.size, np.uint8)
        for name in _names(cfg):
            pid, needs_level, _ = S.PREDICATES[name]
            for level in ((1, 2, 3, 4, 5) if needs_level else (1,)):
                assert lib.kvmmu_spte_pred_vlane_batch(c._cptr, pid, ptr(vals, "uint64_t"), level,
                                                       ptr(out, "uint8_t"), vals.size) == 0
                want = [R.predicate(cfg, name, int(v), level) for v in vals]
                assert out.tolist() == [int(w) for w in want], (cfg.mode, cfg.profile.name, name, level)
                seen[name].update(want)
    assert not [n for n, s in seen.items() if s != {False, True}], seen
    assert lib.kvmmu_spte_pred_vlane_batch(MmuConfig.ept()._isa_copy("avx2")._cptr, 0,
                                           ptr(vals, "uint64_t"), 1, ptr(out, "uint8_t"), 64) == 1
    assert lib.kvmmu_spte_pred_vlane_batch(c._cptr, 0, ptr(vals, "uint64_t"), 1, ptr(out, "uint8_t"), 63) == -1
