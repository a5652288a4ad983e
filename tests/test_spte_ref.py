"""C core vs the pure-Python reference (pykvmmu.ref.spte), bit for bit.

Every SPTE routine, scalar and batch, as hypothesis properties over every preset of
every kernel-era profile (MmuConfig.all_presets(), plus NX-hugepage variants) and random
inputs: pfns within the PFN mask, levels, pte_access, all make_spte flags, old SPTEs
both random and realistic (built by make_spte, possibly aged, possibly with a bit flipped).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ProfileError
from pykvmmu.ref import spte as R

CONFIGS = MmuConfig.all_presets() + [
    MmuConfig.preset(n, profile=p, nx_huge_pages=True)
    for p in ("v5.10", "v5.13", "v5.19", "v6.10", "v6.13", "v6.15", "v6.19")
    for n in ("npt", "npt-sme", "ept", "ept-noad", "ept-xo")
] + [
    MmuConfig.ept(profile=p, ignore_guest_pat=False, cache_bits=44, phys_bits=40, maxphyaddr=46)
    for p in ("v5.19", "v6.19")
] + [MmuConfig.npt(profile=p, mmio_caching=False, maxphyaddr=52) for p in ("v5.13", "v6.10")]


def _cid(c: MmuConfig) -> str:
    return f"{c.profile.name}-{c.mode}{'-xo' if c.exec_only else ''}{'' if c.ad_enabled else '-noad'}"


cfgs = st.sampled_from(CONFIGS)
u64 = st.integers(0, 2**64 - 1)
levels = st.integers(1, 5)
access = st.integers(0, 7)
memtypes = st.sampled_from([None, 0x00, 0x30, 0x70, 0x08, 0x78])


@st.composite
def pfns(draw, cfg):
    bits = draw(st.integers(0, cfg.max_pfn.bit_length()))
    return draw(st.integers(0, (1 << bits) - 1)) & cfg.max_pfn


@st.composite
def mk_kwargs(draw, cfg):
    return dict(level=draw(levels), pte_access=draw(access),
                prefetch=draw(st.booleans()), synchronizing=draw(st.booleans()),
                host_writable=draw(st.booleans()), host_mmio=draw(st.booleans()),
                ad_disabled=draw(st.sampled_from([None, False, True])),
                ad_wrprot_only=draw(st.booleans()), unsync_fails=draw(st.booleans()),
                nx_huge_pages=draw(st.sampled_from([None, False, True])),
                memtype=draw(memtypes))


@st.composite
def sptes(draw, cfg):
    """Random words, the era's special values, and realistic SPTEs (maybe aged / flipped)."""
    kind = draw(st.integers(0, 9))
    if kind <= 2:
        return draw(u64)
    if kind == 3:
        return draw(st.sampled_from([0, cfg.profile.nonpresent_value, cfg.profile.frozen_value or 0,
                                     cfg.mmio_value, cfg.mmio_value | (1 << 11)]))
    kw = draw(mk_kwargs(cfg))
    s, _ = R.make_spte(cfg, draw(pfns(cfg)), **kw)
    if draw(st.booleans()):
        s = R.mark_spte_for_access_track(cfg, s)
    if kind >= 8:
        s ^= 1 << draw(st.integers(0, 63))
    return s


def rand_mk_kwargs(rng, cfg) -> dict:
    return dict(level=rng.randint(1, 5), pte_access=rng.randint(0, 7),
                prefetch=rng.random() < .4, synchronizing=rng.random() < .4,
                host_writable=rng.random() < .7, host_mmio=rng.random() < .2,
                ad_disabled=rng.choice([None, False, True]), ad_wrprot_only=rng.random() < .3,
                unsync_fails=rng.random() < .4, nx_huge_pages=rng.choice([None, False, True]),
                memtype=rng.choice([None, None, 0x00, 0x30, 0x70, 0x08]))


def rand_pfn(rng, cfg) -> int:
    return rng.getrandbits(rng.randint(1, cfg.max_pfn.bit_length())) & cfg.max_pfn


def rand_spte(rng, cfg) -> int:
    """The same mix as ``sptes`` from a seeded random.Random (cheap, for bulk checks)."""
    k = rng.randrange(10)
    if k <= 2:
        return rng.getrandbits(64)
    if k == 3:
        return rng.choice([0, cfg.profile.nonpresent_value, cfg.profile.frozen_value or 0,
                           cfg.mmio_value, cfg.mmio_value | (1 << 11)])
    s, _ = R.make_spte(cfg, rand_pfn(rng, cfg), **rand_mk_kwargs(rng, cfg))
    if rng.random() < .5:
        s = R.mark_spte_for_access_track(cfg, s)
    if k >= 8:
        s ^= 1 << rng.randrange(64)
    return s


@st.composite
def cfg_and(draw, *makers):
    cfg = draw(cfgs)
    return (cfg,) + tuple(draw(m(cfg)) for m in makers)


# ------------------------------------------------------------------ make_spte
@given(cfg_and(pfns, mk_kwargs, sptes))
def test_make_spte_scalar(t):
    cfg, pfn, kw, old = t
    r = S.make_spte(cfg, pfn, old_spte=old, **kw)
    assert (r.spte, r.wrprot) == R.make_spte(cfg, pfn, old_spte=old, **kw), (_cid(cfg), hex(pfn), kw, hex(old))
    assert r.warnings == R.make_spte_warnings(cfg, r.spte, kw["level"], kw["pte_access"])


@given(cfg_and(pfns, mk_kwargs))
def test_make_spte_scalar_default_old(t):
    cfg, pfn, kw = t
    r = S.make_spte(cfg, pfn, **kw)
    assert (r.spte, r.wrprot) == R.make_spte(cfg, pfn, **kw)


_FLAG_BITS = [("ad_disabled", S.MK_AD_DISABLED), ("ad_wrprot_only", S.MK_WRPROT_ONLY),
              ("prefetch", S.MK_PREFETCH), ("synchronizing", S.MK_SYNCHRONIZING),
              ("host_writable", S.MK_HOST_WRITABLE), ("host_mmio", S.MK_HOST_MMIO),
              ("unsync_fails", S.MK_UNSYNC_FAILS), ("nx_huge_pages", S.MK_NX_HUGE)]


@given(cfgs, st.randoms(use_true_random=False))
def test_make_spte_batch_per_element(cfg, rng):
    """Every argument an array: each element == the reference on that element."""
    n = rng.randint(0, 32)
    pfn = [rand_pfn(rng, cfg) for _ in range(n)]
    old = [rand_spte(rng, cfg) for _ in range(n)]
    lv = [rng.randint(1, 5) for _ in range(n)]
    ac = [rng.randint(0, 7) for _ in range(n)]
    fl = [rng.randint(0, 255) for _ in range(n)]
    mt = [rng.choice([0x00, 0x30, 0x70, 0x08, S.MEMTYPE_AUTO]) for _ in range(n)]
    out, wp = S.make_spte_batch(
        cfg, np.array(pfn, np.uint64), level=np.array(lv, np.uint8), pte_access=np.array(ac, np.uint8),
        old_spte=np.array(old, np.uint64), flags=np.array(fl, np.uint8), memtype=np.array(mt, np.uint8),
        host_writable=False, ad_disabled=False, nx_huge_pages=False, with_wrprot=True)
    assert out.dtype == np.uint64 and wp.dtype == np.bool_
    for i in range(n):
        kw = {name: bool(fl[i] & bit) for name, bit in _FLAG_BITS}
        want = R.make_spte(cfg, pfn[i], level=lv[i], pte_access=ac[i], old_spte=old[i],
                           memtype=None if mt[i] == S.MEMTYPE_AUTO else mt[i], **kw)
        assert (int(out[i]), bool(wp[i])) == want, (_cid(cfg), i, hex(pfn[i]), lv[i], ac[i], kw,
                                                     hex(old[i]), mt[i])


@given(cfg_and(mk_kwargs), st.data())
def test_make_spte_batch_scalar_args(t, data):
    """Batch with scalar per-call arguments == scalar make_spte on each pfn."""
    cfg, kw = t
    pfn = data.draw(st.lists(pfns(cfg), max_size=16))
    old = data.draw(sptes(cfg))
    out = S.make_spte_batch(cfg, np.array(pfn, np.uint64), old_spte=old, **kw)
    assert [int(x) for x in out] == [R.make_spte(cfg, p, old_spte=old, **kw)[0] for p in pfn]


# ------------------------------------------------------------------ non-leaf, split, collapse
@given(cfgs, st.data())
def test_make_nonleaf_spte(cfg, data):
    pa = data.draw(pfns(cfg)) << 12
    ad = data.draw(st.sampled_from([None, False, True]))
    assert S.make_nonleaf_spte(cfg, pa, ad) == R.make_nonleaf_spte(cfg, pa, ad)
    pas = [data.draw(pfns(cfg)) << 12 for _ in range(data.draw(st.integers(0, 8)))]
    out = S.make_nonleaf_spte_batch(cfg, np.array(pas, np.uint64), ad)
    assert [int(x) for x in out] == [R.make_nonleaf_spte(cfg, p, ad) for p in pas]


@st.composite
def huge_sptes(draw, cfg, child_level):
    """A present large SPTE whose pfn is aligned for a split into child_level pages."""
    lv = child_level + 1
    kw = draw(mk_kwargs(cfg))
    kw["level"] = lv
    pfn = draw(pfns(cfg)) & ~((1 << (9 * child_level)) - 1)
    s, _ = R.make_spte(cfg, pfn, **kw)
    if draw(st.booleans()):
        s = R.mark_spte_for_access_track(cfg, s)
    return s | (1 << 7) | (1 << 11 if cfg.profile.mmu_present_bit11 else 0)


SPLIT_CFGS = [c for c in CONFIGS if c.profile.has_make_small_spte]
HUGE_CFGS = [c for c in CONFIGS if c.profile.has_make_huge_spte]


@given(st.sampled_from(SPLIT_CFGS), st.integers(1, 4), st.data())
def test_make_small_spte(cfg, child_level, data):
    huge = data.draw(huge_sptes(cfg, child_level))
    idx = data.draw(st.integers(0, 511))
    ra = data.draw(access)
    nx = data.draw(st.sampled_from([None, False, True]))
    assert S.make_small_spte(cfg, huge, child_level, idx, ra, nx) == \
        R.make_small_spte(cfg, huge, child_level, idx, ra, nx)
    out = S.make_small_spte_batch(cfg, np.array([huge], np.uint64), child_level, None, ra, nx)
    assert [int(x) for x in out] == [R.make_small_spte(cfg, huge, child_level, i, ra, nx)
                                     for i in range(512)]
    idxs = data.draw(st.lists(st.integers(0, 511), max_size=8))
    out = S.make_small_spte_batch(cfg, np.full(len(idxs), huge, np.uint64), child_level,
                                  np.array(idxs, np.uint16), ra, nx)
    assert [int(x) for x in out] == [R.make_small_spte(cfg, huge, child_level, i, ra, nx) for i in idxs]


@st.composite
def present_sptes(draw, cfg):
    s = draw(sptes(cfg))
    return s if R.is_shadow_present_pte(cfg, s) else R.make_spte(cfg, draw(pfns(cfg)))[0]


@given(st.sampled_from(HUGE_CFGS), st.integers(2, 3), st.data())
def test_make_huge_spte(cfg, level, data):
    small = data.draw(st.lists(present_sptes(cfg), min_size=1, max_size=8))
    nx = data.draw(st.sampled_from([None, False, True]))
    assert S.make_huge_spte(cfg, small[0], level, nx) == R.make_huge_spte(cfg, small[0], level, nx)
    out = S.make_huge_spte_batch(cfg, np.array(small, np.uint64), level, nx)
    assert [int(x) for x in out] == [R.make_huge_spte(cfg, s, level, nx) for s in small]


# ------------------------------------------------------------------ access tracking
@given(cfgs, st.data())
def test_access_tracking(cfg, data):
    ss = data.draw(st.lists(sptes(cfg), min_size=1, max_size=16))
    for s in ss:
        assert S.mark_spte_for_access_track(cfg, s) == R.mark_spte_for_access_track(cfg, s)
        assert S.restore_acc_track_spte(cfg, s) == R.restore_acc_track_spte(cfg, s)
    a = np.array(ss, np.uint64)
    assert [int(x) for x in S.access_track_batch(cfg, a)] == [R.mark_spte_for_access_track(cfg, s) for s in ss]
    assert [int(x) for x in S.access_track_batch(cfg, a, restore=True)] == \
        [R.restore_acc_track_spte(cfg, s) for s in ss]


# ------------------------------------------------------------------ predicates
def _check_predicates(cfg, ss, lv):
    arr, lva = np.array(ss, np.uint64), np.array(lv, np.uint8)
    for name, (_num, _needs_level, feature) in S.PREDICATES.items():
        if feature and not getattr(cfg.profile, feature):
            with pytest.raises(ProfileError):
                S.predicate(cfg, name, ss[0], lv[0])
            with pytest.raises(ProfileError):
                R.predicate(cfg, name, ss[0], lv[0])
            with pytest.raises(ProfileError):
                S.predicate_batch(cfg, name, arr)
            continue
        want = [R.predicate(cfg, name, s, l) for s, l in zip(ss, lv)]
        f = getattr(S, name)
        got = [f(cfg, s, l) if name in R.NEEDS_LEVEL else f(cfg, s) for s, l in zip(ss, lv)]
        assert got == want, (name, _cid(cfg), [hex(s) for s in ss])
        assert [S.predicate(cfg, name, s, l) for s, l in zip(ss, lv)] == want
        b = S.predicate_batch(cfg, name, arr, lva)
        assert b.dtype == np.bool_ and b.tolist() == want, (name, _cid(cfg))
        assert S.predicate_batch(cfg, name, arr, 1).tolist() == [R.predicate(cfg, name, s, 1) for s in ss]


@given(cfgs, st.data())
def test_predicates_scalar_and_batch(cfg, data):
    ss = data.draw(st.lists(sptes(cfg), min_size=1, max_size=6))
    lv = data.draw(st.lists(levels, min_size=len(ss), max_size=len(ss)))
    _check_predicates(cfg, ss, lv)


@given(cfgs, st.randoms(use_true_random=False))
def test_predicates_bulk(cfg, rng):
    """Many SPTEs per example (fast generator), all predicates, scalar and batch."""
    ss = [rand_spte(rng, cfg) for _ in range(24)]
    _check_predicates(cfg, ss, [rng.randint(1, 5) for _ in ss])


@given(cfgs, st.data())
def test_spte_to_pfn(cfg, data):
    ss = data.draw(st.lists(sptes(cfg), min_size=1, max_size=16))
    assert [S.spte_to_pfn(cfg, s) for s in ss] == [R.spte_to_pfn(cfg, s) for s in ss]
    assert [int(x) for x in S.spte_to_pfn_batch(cfg, np.array(ss, np.uint64))] == \
        [R.spte_to_pfn(cfg, s) for s in ss]


@given(cfg_and(sptes, sptes))
def test_leaf_spte_change_needs_tlb_flush(t):
    cfg, old, new = t
    assert S.leaf_spte_change_needs_tlb_flush(cfg, old, new) == \
        R.leaf_spte_change_needs_tlb_flush(cfg, old, new), (_cid(cfg), hex(old), hex(new))
    # The realistic case: the same SPTE after aging / write-protection / dirty clearing.
    for new2 in (R.mark_spte_for_access_track(cfg, old), old & ~2, old & ~cfg.mmu_writable_mask,
                 old & ~cfg.dirty_mask, old & ~cfg.accessed_mask):
        assert S.leaf_spte_change_needs_tlb_flush(cfg, old, new2) == \
            R.leaf_spte_change_needs_tlb_flush(cfg, old, new2)


@given(cfgs, st.data())
def test_decode_batch_fields_match_reference(cfg, data):
    ss = data.draw(st.lists(sptes(cfg), min_size=1, max_size=8))
    lv = data.draw(levels)
    rec = S.decode_batch(cfg, np.array(ss, np.uint64), lv)
    for s, r in zip(ss, rec):
        assert int(r["spte"]) == s
        assert int(r["pfn"]) == R.spte_to_pfn(cfg, s)
        assert int(r["ad_type"]) == (s >> 52) & 3
        for name, fname in zip(S.PREDICATES, S._pred_fields):
            field = "p_" + fname
            feature = S.PREDICATES[name][2]
            if feature and not getattr(cfg.profile, feature):
                assert r[field] == 0, (name, hex(s))        # the era lacks the predicate
                continue
            assert bool(r[field]) == R.predicate(cfg, name, s, lv), (name, hex(s))
