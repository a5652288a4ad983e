"""SPTE engine benchmarks: batch make_spte, predicates and decode over 16M entries.

Baselines in every group: memcpy of the same bytes, the best plain-numpy formulation of
the same rule (checked once against the core's output), the pure-Python reference.
"""
import numpy as np
import pytest

from conftest import CORE_THREADS, N, REF_N, bench, core_kinds, memcpy_case
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig

CFG = MmuConfig.ept()
U = np.uint64


def u(x):
    return np.uint64(x)


@pytest.fixture(scope="module")
def pfns(rng):
    return rng.integers(0, 1 << 34, N, dtype=np.uint64)


@pytest.fixture(scope="module")
def per_elem(rng):
    level = rng.integers(1, 4, N, dtype=np.uint8)
    access = rng.integers(0, 8, N, dtype=np.uint8)
    flags = (rng.integers(0, 256, N, dtype=np.uint8) & np.uint8(0x7D)) | np.uint8(S.MK_HOST_WRITABLE)
    return level, access, flags


@pytest.fixture(scope="module")
def sptes(pfns, per_elem):
    level, access, flags = per_elem
    return S.make_spte_batch(CFG, pfns, level=level, pte_access=access, flags=flags)


# ------------------------------------------------------------------ make_spte
def numpy_make_spte_uniform(pfn, template, out):
    """numpy: the same template-or-pfn rule, with the PFN-mask check."""
    if np.bitwise_and(pfn, u(~(CFG.base_addr_mask >> 12) & (2**64 - 1))).any():
        raise ValueError("pfn")
    np.left_shift(pfn, u(12), out=out)
    np.bitwise_or(out, u(template), out=out)
    return out


@core_kinds
def test_make_spte_uniform_core(benchmark, pfns, core):
    out = np.empty_like(pfns)
    bench(benchmark, "spte.make_spte 16M shared inputs", core, N, S.make_spte_batch, CFG, pfns, out=out,
          threads=CORE_THREADS[core])


def test_make_spte_uniform_memcpy(benchmark):
    memcpy_case(benchmark, "spte.make_spte 16M shared inputs", N * 8, N)


def test_make_spte_uniform_numpy(benchmark, pfns):
    out = np.empty_like(pfns)
    template = S.make_spte(CFG, 0).spte
    numpy_make_spte_uniform(pfns[:1000], template, out[:1000])
    assert np.array_equal(out[:1000], S.make_spte_batch(CFG, pfns[:1000]))
    bench(benchmark, "spte.make_spte 16M shared inputs", "numpy", N, numpy_make_spte_uniform, pfns,
          template, out)


def test_make_spte_uniform_reference(benchmark, pfns):
    ref = pytest.importorskip("pykvmmu.ref.spte")
    sample = [int(x) for x in pfns[:REF_N]]
    bench(benchmark, "spte.make_spte 16M shared inputs", "reference", REF_N,
          lambda: [ref.make_spte(CFG, p) for p in sample], rounds=2)


def numpy_make_spte_general(pfn, level, acc, flags):
    """numpy formulation of make_spte (v6.19 rules, EPT with A/D) with per-element inputs."""
    c = CFG
    f = flags.astype(U)
    acc = acc.astype(U)
    lv = level.astype(U)
    s = np.full(pfn.shape, u(c.mmu_present_mask | c.present_mask), dtype=U)
    adis = (f & u(S.MK_AD_DISABLED)) != 0
    wpo = ((f & u(S.MK_WRPROT_ONLY)) != 0) & ~adis
    s |= np.where(adis, u(1 << 52), u(0)) | np.where(wpo, u(2 << 52), u(0))
    pf = (f & u(S.MK_PREFETCH)) != 0
    sy = (f & u(S.MK_SYNCHRONIZING)) != 0
    s |= np.where(~pf | sy, u(c.accessed_mask), u(0))
    nxh = (lv > 1) & ((acc & u(1)) != 0) & ((f & u(S.MK_NX_HUGE)) != 0)
    acc = np.where(nxh, acc & u(6), acc)
    s |= np.where((acc & u(1)) != 0, u(c.x_mask), u(c.nx_mask))
    s |= np.where((acc & u(4)) != 0, u(c.user_mask), u(0))
    s |= np.where(lv > 1, u(0x80), u(0))
    mmio = (f & u(S.MK_HOST_MMIO)) != 0
    s |= np.where(mmio, u(0), u(0x70))
    hw = (f & u(S.MK_HOST_WRITABLE)) != 0
    s |= np.where(hw, u(c.host_writable_mask), u(0))
    acc = np.where(hw, acc, acc & u(5))
    s |= pfn << u(12)
    write = (acc & u(2)) != 0
    old_last_w = False  # old SPTE is SHADOW_NONPRESENT_VALUE: not a writable leaf
    wrprot = write & ~np.bool_(old_last_w) & ((f & u(S.MK_UNSYNC_FAILS)) != 0)
    s |= np.where(write & ~wrprot, u(2 | c.mmu_writable_mask | c.dirty_mask), u(0))
    mark = pf & ~sy
    ad_en = (s & u(3 << 52)) != u(1 << 52)
    tracked = ~ad_en & ((s & u(7)) == 0)
    m_ad = mark & ad_en
    m_tr = mark & ~ad_en & ~tracked
    saved = (s & u(5)) << u(54)
    s = np.where(m_ad, s & u(~c.accessed_mask & (2**64 - 1)), s)
    s = np.where(m_tr, (s | saved) & u(~(7 | c.accessed_mask) & (2**64 - 1)), s)
    return s


@core_kinds
def test_make_spte_general_core(benchmark, pfns, per_elem, core):
    level, access, flags = per_elem
    out = np.empty_like(pfns)
    bench(benchmark, "spte.make_spte 16M per-element inputs", core, N, S.make_spte_batch, CFG,
          pfns, level=level, pte_access=access, flags=flags, out=out, threads=CORE_THREADS[core])


def test_make_spte_general_memcpy(benchmark):
    memcpy_case(benchmark, "spte.make_spte 16M per-element inputs", N * (8 + 3), N)


def test_make_spte_general_numpy(benchmark, pfns, per_elem):
    level, access, flags = per_elem
    k = min(100000, N)
    want = S.make_spte_batch(CFG, pfns[:k], level=level[:k], pte_access=access[:k], flags=flags[:k])
    assert np.array_equal(numpy_make_spte_general(pfns[:k], level[:k], access[:k], flags[:k]), want)
    bench(benchmark, "spte.make_spte 16M per-element inputs", "numpy", N, numpy_make_spte_general,
          pfns, level, access, flags, rounds=2)


def test_make_spte_general_reference(benchmark, pfns, per_elem):
    ref = pytest.importorskip("pykvmmu.ref.spte")
    level, access, flags = per_elem
    idx = range(REF_N)
    args = [(int(pfns[i]), int(level[i]), int(access[i]), int(flags[i])) for i in idx]

    def run():
        out = []
        for p, lv, ac, fl in args:
            out.append(ref.make_spte(
                CFG, p, level=lv, pte_access=ac, prefetch=bool(fl & S.MK_PREFETCH),
                synchronizing=bool(fl & S.MK_SYNCHRONIZING), host_writable=True,
                host_mmio=bool(fl & S.MK_HOST_MMIO), ad_disabled=bool(fl & S.MK_AD_DISABLED),
                ad_wrprot_only=bool(fl & S.MK_WRPROT_ONLY), unsync_fails=bool(fl & S.MK_UNSYNC_FAILS),
                nx_huge_pages=bool(fl & S.MK_NX_HUGE)))
        return out
    bench(benchmark, "spte.make_spte 16M per-element inputs", "reference", REF_N, run, rounds=2)


# ----------------------------------------------------------------- predicates
def numpy_present(s, tmp, out):
    np.bitwise_and(s, u(1 << 11), out=tmp)
    np.not_equal(tmp, u(0), out=out)
    return out


def numpy_needs_atomic(s):
    """numpy: spte_needs_atomic_update (v6.15+)."""
    w = (s & u(2)) != 0
    mmuw = (s & u(CFG.mmu_writable_mask)) != 0
    ad_en = (s & u(3 << 52)) != u(1 << 52)
    d = (s & u(CFG.dirty_mask)) != 0
    return (~w & mmuw) | ~ad_en | (w & ~d)


@core_kinds
@pytest.mark.parametrize("pred", ["is_shadow_present_pte", "spte_needs_atomic_update", "is_mmio_spte"])
def test_pred_core(benchmark, sptes, pred, core):
    out = np.empty(sptes.shape, dtype=np.bool_)
    bench(benchmark, f"spte.{pred} 16M", core, N, S.predicate_batch, CFG, pred, sptes, out=out,
          threads=CORE_THREADS[core])


@pytest.mark.parametrize("pred", ["is_shadow_present_pte", "spte_needs_atomic_update", "is_mmio_spte"])
def test_pred_memcpy(benchmark, pred):
    memcpy_case(benchmark, f"spte.{pred} 16M", N * 8, N)


@pytest.mark.parametrize("pred", ["is_shadow_present_pte", "spte_needs_atomic_update", "is_mmio_spte"])
def test_pred_numpy(benchmark, sptes, pred):
    if pred == "is_shadow_present_pte":
        tmp = np.empty_like(sptes)
        out = np.empty(sptes.shape, dtype=np.bool_)
        fn, args = numpy_present, (sptes, tmp, out)
    elif pred == "spte_needs_atomic_update":
        fn, args = numpy_needs_atomic, (sptes,)
    else:
        def fn(s):
            return (s & u(CFG.mmio_mask)) == u(CFG.mmio_value)
        args = (sptes,)
    k = min(100000, N)
    assert np.array_equal(fn(*(a[:k] for a in args)) if pred != "is_shadow_present_pte"
                          else numpy_present(sptes[:k], np.empty(k, U), np.empty(k, np.bool_)),
                          S.predicate_batch(CFG, pred, sptes[:k]))
    bench(benchmark, f"spte.{pred} 16M", "numpy", N, fn, *args)


@pytest.mark.parametrize("pred", ["is_shadow_present_pte", "spte_needs_atomic_update", "is_mmio_spte"])
def test_pred_reference(benchmark, sptes, pred):
    ref = pytest.importorskip("pykvmmu.ref.spte")
    f = getattr(ref, pred)
    sample = [int(x) for x in sptes[:REF_N]]
    bench(benchmark, f"spte.{pred} 16M", "reference", REF_N, lambda: [f(CFG, s) for s in sample],
          rounds=2)


def test_pred_scalar_core(benchmark, sptes):
    """Scalar predicate from Python: the per-call cost (target: under 1 us)."""
    s = int(sptes[0])
    f = S.is_shadow_present_pte
    bench(benchmark, "spte.is_shadow_present_pte scalar call", "core", 1000,
          lambda: [f(CFG, s) for _ in range(1000)], rounds=20)


# --------------------------------------------------------------------- decode
@core_kinds
def test_decode_core(benchmark, sptes, core):
    out = np.empty(sptes.shape, dtype=S.DECODE_DTYPE)
    bench(benchmark, "spte.decode_batch 16M", core, N, S.decode_batch, CFG, sptes, out=out,
          threads=CORE_THREADS[core], rounds=3)


def test_decode_memcpy(benchmark):
    memcpy_case(benchmark, "spte.decode_batch 16M", N * S.DECODE_DTYPE.itemsize, N)


def numpy_decode(s, c=CFG):
    """numpy formulation of decode_batch for an EPT v6.19 config at level 1."""
    out = np.zeros(s.shape, dtype=S.DECODE_DTYPE)
    out["spte"] = s
    out["pfn"] = (s & u(c.base_addr_mask)) >> u(12)
    present = (s & u(1 << 11)) != 0
    mmio = (s & u(c.mmio_mask)) == u(c.mmio_value)
    frozen = s == u(c.frozen_value)
    nonp = s == u(c.profile.nonpresent_value)
    out["kind"] = np.select([frozen, mmio, present, nonp], [3, 2, 1, 0], 4)
    out["ad_type"] = (s >> u(52)) & u(3)
    out["memtype"] = (s >> u(3)) & u(7)
    out["ipat"] = (s >> u(6)) & u(1)
    w = (s & u(2)) != 0
    x = (s & u(4)) != 0
    r = (s & u(c.user_mask)) != 0
    out["access"] = x.astype(np.uint8) | (w.astype(np.uint8) << 1) | (r.astype(np.uint8) << 2)
    out["saved_rx"] = (s >> u(54)) & u(5)
    out["level"] = 1
    ad_en = (s & u(3 << 52)) != u(1 << 52)
    mmuw = (s & u(c.mmu_writable_mask)) != 0
    hw = (s & u(c.host_writable_mask)) != 0
    d = (s & u(c.dirty_mask)) != 0
    out["p_shadow_present"] = present
    out["p_mmio"] = mmio
    out["p_frozen"] = frozen
    out["p_large"] = (s & u(0x80)) != 0
    out["p_last"] = True
    out["p_executable"] = x
    out["p_writable"] = w
    out["p_mmu_writable"] = mmuw
    out["p_host_writable"] = hw
    out["p_accessed"] = (s & u(c.accessed_mask)) != 0
    out["p_dirty"] = d
    out["p_ad_enabled"] = ad_en
    out["p_ad_need_write_protect"] = (s & u(3 << 52)) != 0
    out["p_access_track"] = ~ad_en & ((s & u(7)) == 0)
    out["p_needs_atomic_update"] = (~w & mmuw) | ~ad_en | (w & ~d)
    out["p_writable_invariants_ok"] = np.where(mmuw, hw, ~w)
    large = ((s >> u(7)) & u(1)).astype(np.intp)
    table = np.array(c.rsvd_bits_mask, dtype=U).reshape(2, 5)[:, 0]
    out["p_rsvd"] = (((u(c.bad_mt_xwr) >> (s & u(0x3F))) & u(1)) != 0) | ((s & table[large]) != 0)
    out["p_ept_ve_possible"] = ((s & u(1 << 63)) == 0) & ((s & u(7)) != 6)
    return out


def test_decode_numpy(benchmark, sptes):
    k = min(100000, N)
    a = numpy_decode(sptes[:k])
    b = S.decode_batch(CFG, sptes[:k])
    assert a.tobytes() == b.tobytes()
    bench(benchmark, "spte.decode_batch 16M", "numpy", N, numpy_decode, sptes, rounds=1)


def test_decode_reference(benchmark, sptes):
    ref = pytest.importorskip("pykvmmu.ref.spte")
    sample = [int(x) for x in sptes[:REF_N // 10]]
    names = [n for n, (_, _, feat) in S.PREDICATES.items() if not feat or getattr(CFG.profile, feat)]

    def run():
        out = []
        for s in sample:
            row = []
            for name in names:
                f = getattr(ref, name)
                row.append(f(CFG, s, 1) if S.PREDICATES[name][1] else f(CFG, s))
            out.append((ref.spte_to_pfn(CFG, s), row))
        return out
    bench(benchmark, "spte.decode_batch 16M", "reference", REF_N // 10, run, rounds=2)
