"""decode_batch on the portable path (the plain C loops a CPU without AVX2 runs: blocks of
64 SPTEs, predicate bytes straight from the rule lanes) against the pure-Python reference,
for every preset, across a block boundary and a partial last block."""
import numpy as np
import pytest

from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.ref import spte as R

from test_isa import _sptes

PRESETS = list(MmuConfig.all_presets())


@pytest.mark.parametrize("i, cfg", list(enumerate(PRESETS)), ids=lambda x: x if isinstance(x, int) else
                         f"{x.mode}-{x.profile.name}")
def test_portable_decode_matches_reference(i, cfg):
    vals = _sptes(cfg, 90, seed=7 + i)               # 273 SPTEs: four full blocks and 17
    lv = 1 + i % 5
    rec = S.decode_batch(cfg._isa_copy("portable"), vals, lv, threads=1)
    have = [not S.PREDICATES[n][2] or getattr(cfg.profile, S.PREDICATES[n][2]) for n in S.PREDICATES]
    fields = [(name, "p_" + f) for name, f, h in zip(S.PREDICATES, S._pred_fields, have) if h]
    for s, r in zip((int(v) for v in vals), rec):
        assert int(r["spte"]) == s and int(r["pfn"]) == R.spte_to_pfn(cfg, s)
        assert int(r["ad_type"]) == (s >> 52) & 3 and int(r["level"]) == lv
        for name, field in fields:
            assert bool(r[field]) == R.predicate(cfg, name, s, lv), (name, hex(s), lv)
    raw = rec.view(np.uint8).reshape(-1, S.DECODE_DTYPE.itemsize)
    assert not np.any(raw[:, 23]) and not np.any(raw[:, 24 + len(S.PREDICATES):])   # pad bytes
