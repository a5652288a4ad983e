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
