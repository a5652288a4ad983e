"""Every LayoutProfile field reaches the C core (and agrees with the reference) or is refused.

A field added to LayoutProfile without an entry in profile.FIELD_USE fails here; each rule
field is then varied over the values the profiles use (or flipped), and every configuration
built from the variant either is refused (ProfileError / ConfigError) or gives the C core
and the pure-Python reference the same results.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ConfigError, ProfileError
from pykvmmu.profile import FIELD_USE, PROFILES, LayoutProfile
from pykvmmu.ref import spte as R

ROOT = Path(__file__).resolve().parents[1]
FIELDS = [f.name for f in dataclasses.fields(LayoutProfile)]
RULE_FIELDS = [n for n in FIELDS if FIELD_USE.get(n) != "meta"]
BASES = ("v5.13", "v5.19", "v6.19")


def test_every_field_is_classified():
    assert set(FIELDS) == set(FIELD_USE), \
        f"fields without a FIELD_USE entry: {set(FIELDS) - set(FIELD_USE)}"
    assert set(FIELD_USE.values()) <= {"meta", "c", "config", "gate"}


def _alternatives(name):
    vals = {getattr(p, name) for p in PROFILES.values()}
    cur = [v for v in vals]
    if all(isinstance(v, bool) for v in cur):
        return [False, True]
    return sorted(vals, key=repr)


def _variants(name):
    for base in BASES:
        for v in _alternatives(name):
            if v == getattr(PROFILES[base], name):
                continue
            try:
                yield dataclasses.replace(PROFILES[base], name=f"{base}+{name}={v!r}", **{name: v})
            except ProfileError:
                yield None                     # refused: the engine has no such rule set


def _check_config(c):
    rng = np.random.default_rng(7)
    n = 48
    old = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    old[:8] = [0, 0x2160CF000E03, 0x2160CF000E83, 0x8000_0000_0000_0E87, 0x5A0, 0xE03, 2, 0x1E03]
    lv = rng.integers(1, 6, n, dtype=np.uint8)
    acc = rng.integers(0, 8, n, dtype=np.uint8)
    mk = rng.integers(0, 256, n, dtype=np.uint8)
    pfn = rng.integers(0, 1 << 20, n, dtype=np.uint64)
    for i in range(n):
        f = int(mk[i])
        kw = dict(level=int(lv[i]), pte_access=int(acc[i]), old_spte=int(old[i]),
                  prefetch=bool(f & 1), synchronizing=bool(f & 2), host_writable=bool(f & 4),
                  ad_wrprot_only=bool(f & 8), unsync_fails=bool(f & 16),
                  nx_huge_pages=bool(f & 32), host_mmio=bool(f & 64))
        r = S.make_spte(c, int(pfn[i]), **kw)
        assert (r.spte, r.wrprot) == R.make_spte(c, int(pfn[i]), **kw), (c.profile.name, kw)
    assert S.make_nonleaf_spte(c, 0x5000) == R.make_nonleaf_spte(c, 0x5000)
    for name in S.PREDICATES:
        try:
            want = [R.predicate(c, name, int(s)) for s in old]
        except ProfileError:
            continue
        assert S.predicate_batch(c, name, old).tolist() == want, (c.profile.name, name)


@pytest.mark.parametrize("name", RULE_FIELDS)
def test_field_reaches_core_or_is_refused(name):
    built = refused = 0
    for prof in _variants(name):
        if prof is None:
            refused += 1
            continue
        for preset in MmuConfig.PRESETS:
            try:
                c = MmuConfig.preset(preset, profile=prof)
            except (ConfigError, ProfileError):
                refused += 1
                continue
            built += 1
            _check_config(c)
    assert built + refused > 0


def test_issue_11_me_value_split_is_refused_where_c_cannot_honour_it():
    c = MmuConfig.npt(profile="v5.13", sme_cbit=47, maxphyaddr=48)
    with pytest.raises(ConfigError, match="one shadow_me_mask before v5.19"):
        c.replace(me_value=0)
    # v5.19+: the value really is separate, and the core ORs the value, not the mask
    d = MmuConfig.npt(profile="v5.19", sme_cbit=47, maxphyaddr=48).replace(me_value=0)
    assert S.make_spte(d, 0x1234).spte == R.make_spte(d, 0x1234)[0] == 0x1234E67
    assert S.make_spte(c, 0x1234).spte == R.make_spte(c, 0x1234)[0] == 0x8000_0123_4E67


def test_impossible_rule_sets_are_refused():
    with pytest.raises(ProfileError, match="writable_shortcut='sometimes'"):
        dataclasses.replace(PROFILES["v5.19"], writable_shortcut="sometimes")
    with pytest.raises(ProfileError, match="ad_always iff"):
        dataclasses.replace(PROFILES["v5.19"], ad_always=True)
    with pytest.raises(ProfileError, match="has_tdx"):
        dataclasses.replace(PROFILES["v6.13"], has_tdx=True)


def test_no_era_test_by_profile_name():
    """Era switches are fields read by name: no ``name == "v5.10"`` style tests anywhere, nor
    a profile's or era's name looked up in a table of names (``p.name in NOT_A_RELEASE``)."""
    pat = re.compile(r"""(name|profile)\s*(==|!=|\bin\b)\s*[\(\[{]?\s*["']v\d"""
                     r"""|\b(p|prof|profile|era)\.name\s+(not\s+)?in\s+[A-Z_]+\b""")
    hits = []
    for base in ("pykvmmu", "csrc"):
        for path in (ROOT / base).rglob("*"):
            if path.suffix in (".py", ".c", ".h") and path.is_file():
                for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    if pat.search(line):
                        hits.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not hits, "\n".join(hits)
