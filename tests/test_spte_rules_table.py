"""The SPTE predicate table (csrc/spte_rules.h) is the one place a predicate is named: the
C core, the Python functions, PREDICATES, DECODE_DTYPE and __all__ all come from it, and
every row has an independent reference twin (pykvmmu/ref/spte.py) and a CONVENTIONS entry.
These tests enforce the checklist "Adding an SPTE predicate" of docs/CONVENTIONS.md."""
import os
import re

import numpy as np
import pytest

from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.profile import PROFILES, get_profile
from pykvmmu.ref import spte as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = MmuConfig.all_presets()


def _header_rows():
    """(NAME, id, needs_level, feature, kernel_fn, field) of each row, read from the header."""
    text = open(os.path.join(ROOT, "csrc", "spte_rules.h")).read()
    return re.findall(r'^KVMMU_SPTE_PREDICATE\((\w+), (\d+), ([01]), "(\w*)", (\w+), (\w+),',
                      text, re.M)


def test_table_ids_names_fields():
    ids = [r.id for r in S.RULES]
    assert ids == list(range(len(S.RULES)))
    assert len({r.name for r in S.RULES}) == len(S.RULES)
    assert len({r.field for r in S.RULES}) == len(S.RULES)
    assert len(S.RULES) <= 24                      # bytes of kvmmu_spte_info.pred
    rows = _header_rows()
    assert sorted((int(i), fn, fd, lv == "1", feat or None) for _n, i, lv, feat, fn, fd in rows) == \
        [(r.id, r.name, r.field, r.needs_level, r.feature) for r in S.RULES]


def test_every_row_is_bound_exported_and_documented():
    for r in S.RULES:
        f = getattr(S, r.name)
        assert f.__name__ == r.name and r.name in S.__all__
        assert r.doc and r.doc in f.__doc__ and f"``{r.name}()``" in f.__doc__
        assert S.PREDICATES[r.name] == (r.id, r.needs_level, r.feature)
        assert S._FIELD[r.name] == r.field


def test_every_row_has_a_reference_twin():
    """The reference is written independently from the spec; it must cover every row."""
    assert set(R.PREDICATES) == set(S.PREDICATES)
    assert set(R.NEEDS_LEVEL) == {r.name for r in S.RULES if r.needs_level}


def test_features_are_profile_flags():
    for r in S.RULES:
        if r.feature:
            assert all(isinstance(getattr(get_profile(p), r.feature), bool) for p in PROFILES), r


def test_decode_dtype_follows_the_table():
    for r in S.RULES:
        off = S.DECODE_DTYPE.fields[f"p_{r.field}"][1]
        assert off == 24 + r.id


def test_conventions_name_the_checklist():
    text = open(os.path.join(ROOT, "docs", "CONVENTIONS.md")).read()
    assert "csrc/spte_rules.h" in text and "Adding an SPTE predicate" in text


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="is_not_a_predicate"):
        S.is_not_a_predicate  # noqa: B018


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_needs_level_is_exact(cfg):
    """A row that does not declare needs_level gives the same answer at every level, in the
    batch form (level array) and in decode; a row that declares it depends on it somewhere."""
    rng = np.random.default_rng(3)
    made = S.make_spte_batch(cfg, rng.integers(0, 1 << 30, 2000, dtype=np.uint64),
                             level=rng.integers(1, 4, 2000, dtype=np.uint8))
    raw = rng.integers(0, 1 << 63, 2000, dtype=np.uint64) | np.uint64(1 << 63)
    vals = np.concatenate([made, raw, made & np.uint64(~0x80 & (2**64 - 1))])
    ones = S.decode_batch(cfg, vals, 1)
    for r in S.RULES:
        if r.feature and not getattr(cfg.profile, r.feature):
            continue
        by_level = [S.predicate_batch(cfg, r.name, vals, np.full(vals.shape, lv, np.uint8))
                    for lv in range(1, 6)]
        same = all(np.array_equal(by_level[0], b) for b in by_level[1:])
        if not r.needs_level:
            assert same, r.name
            for lv in range(2, 6):
                assert np.array_equal(S.decode_batch(cfg, vals, lv)[f"p_{r.field}"],
                                      ones[f"p_{r.field}"]), (r.name, lv)
        elif r.name == "is_last_spte":
            assert not same


def test_engine_layout():
    """Every C engine has its header section, Python module, reference twin, tests and bench."""
    engines = sorted(f[:-2] for f in os.listdir(os.path.join(ROOT, "csrc")) if f.endswith(".c"))
    header = open(os.path.join(ROOT, "csrc", "pykvmmu.h")).read()
    tests = os.listdir(os.path.join(ROOT, "tests"))
    for x in engines:
        assert f"/* {x.upper()}_SECTION */" in header, x
        assert any(os.path.exists(os.path.join(ROOT, "pykvmmu", p)) for p in (f"{x}.py", f"{x}/__init__.py")), x
        assert os.path.exists(os.path.join(ROOT, "pykvmmu", "ref", f"{x}.py")), x
        assert any(t.startswith(f"test_{x}") for t in tests), x
        assert os.path.exists(os.path.join(ROOT, "bench", f"test_bench_{x}.py")), x
