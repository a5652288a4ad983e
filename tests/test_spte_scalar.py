"""The scalar SPTE entry points make one C call each (issue 14): make_spte validates, builds
and reports wrprot and warnings in one crossing; decode fills one record without numpy.
They must equal the batch forms and the reference, refuse what they refused before, and be
safe from several threads (each thread has its own result buffer)."""
import threading

import numpy as np
import pytest

from pykvmmu import mmio as M
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import InputError
from pykvmmu.ref import spte as R

CONFIGS = MmuConfig.all_presets()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_scalar_decode_equals_batch_record(cfg):
    rng = np.random.default_rng(5)
    made = S.make_spte_batch(cfg, rng.integers(0, 1 << 30, 200, dtype=np.uint64),
                             level=rng.integers(1, 4, 200, dtype=np.uint8))
    raw = rng.integers(0, 1 << 63, 200, dtype=np.uint64)
    vals = np.concatenate([made, raw, np.array([cfg.mmio_value, cfg.profile.nonpresent_value,
                                                cfg.profile.frozen_value or 0], np.uint64)])
    for lv in (1, 3, 5):
        recs = S.decode_batch(cfg, vals, lv)
        for v, rec in zip(vals.tolist(), recs):
            d = S.decode(cfg, v, lv)
            assert d.pfn == int(rec["pfn"]) and d.kind == S.KINDS[int(rec["kind"])]
            assert d.saved_rx == int(rec["saved_rx"]) and d.level == lv
            # one C call fills the MMIO fields too: pykvmmu.mmio's getters, None for others
            assert d.mmio == ({"gfn": M.get_mmio_spte_gfn(cfg, v), "access": M.get_mmio_spte_access(cfg, v),
                               "generation": M.get_mmio_spte_generation(cfg, v)}
                              if d.kind == "mmio" else None), hex(v)
            for name, field in zip(S._PRED_NAMES, S._pred_fields):
                if name in d.predicates:
                    assert d.predicates[name] == bool(rec[f"p_{field}"]), (name, hex(v))
                    assert d.predicates[name] == R.predicate(cfg, name, v, lv)
                else:
                    assert not getattr(cfg.profile, S.PREDICATES[name][2])
    d = S.decode(cfg, int(vals[0]))
    d.predicates["is_large_pte"] = "changed"          # each call gets its own dict
    assert S.decode(cfg, int(vals[0])).predicates["is_large_pte"] != "changed"
    assert S.decode(cfg, int(vals[0])) == S.decode(cfg, int(vals[0]))


@pytest.mark.parametrize("bad", [0, 6, 256, -1, 1.0, "1"])
def test_scalar_decode_refuses_bad_levels(bad):
    with pytest.raises(InputError, match="level"):
        S.decode(MmuConfig.ept(), 0x1234, bad)
    with pytest.raises(InputError, match="spte"):
        S.decode(MmuConfig.ept(), 1 << 64)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_make_spte_one_call_equals_reference(cfg):
    rng = np.random.default_rng(9)
    for _ in range(60):
        kw = dict(level=int(rng.integers(1, 6)), pte_access=int(rng.integers(0, 8)),
                  prefetch=bool(rng.integers(2)), synchronizing=bool(rng.integers(2)),
                  host_writable=bool(rng.integers(2)), unsync_fails=bool(rng.integers(2)),
                  old_spte=[None, 0, 2, 0x8600000012345b77][int(rng.integers(4))])
        pfn = int(rng.integers(0, 1 << 30))
        got = S.make_spte(cfg, pfn, **kw)
        want = R.make_spte(cfg, pfn, **kw)
        assert (got.spte, got.wrprot) == want, kw
        assert got.warnings == R.make_spte_warnings(cfg, want[0], kw["level"], kw["pte_access"])
    # the configuration's defaults travel in the C struct (ad_enabled, nx_huge_pages)
    for ad, nx in ((False, False), (True, True)):
        c2 = cfg.replace(ad_enabled=ad, nx_huge_pages=nx)
        assert S.make_spte(c2, 5, level=2).spte == R.make_spte(c2, 5, level=2)[0]


def test_make_spte_from_threads():
    cfg = MmuConfig.ept()
    want = {p: R.make_spte(cfg, p, level=1 + p % 3)[0] for p in range(400)}
    bad = []

    def work():
        for _ in range(5):
            for p in range(400):
                if S.make_spte(cfg, p, level=1 + p % 3).spte != want[p]:
                    bad.append(p)
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


@pytest.mark.parametrize("kw, match", [
    ({"level": 0}, "level=0"), ({"level": 1 << 40}, "level"), ({"pte_access": 8}, "pte_access=0x8"),
    ({"pfn": 1 << 41}, "pfn="), ({"pfn": -1}, "pfn"), ({"old_spte": 1 << 64}, "old_spte"),
    ({"prefetch": 2}, "prefetch"), ({"level": 1.0}, "level"), ({"memtype": 0x7}, "memtype")])
def test_make_spte_refusals(kw, match):
    pfn = kw.pop("pfn", 1)
    with pytest.raises(InputError, match=match):
        S.make_spte(MmuConfig.ept(), pfn, **kw)
