"""MMIO SPTE benchmarks: batch make / decode / check over 16M entries.

Baselines in every group: memcpy of the same bytes (np.copyto), the best plain-numpy
formulation of the same rule (checked once against the core's output), and the
pure-Python reference on a small sample (ratios are per element).
"""
import numpy as np
import pytest

from conftest import CORE_THREADS, N, REF_N, bench, memcpy_case
from pykvmmu import mmio as M
from pykvmmu.config import MmuConfig
from pykvmmu.ref import mmio as R

EPT = MmuConfig.ept()
L1TF = MmuConfig.npt(phys_bits=39, cache_bits=44)
GEN = 0x12345
u = np.uint64


@pytest.fixture(scope="module")
def gfns(rng):
    return rng.integers(0, 1 << 40, N, dtype=np.uint64)


@pytest.fixture(scope="module")
def l1tf_sptes(gfns):
    return M.make_mmio_spte_batch(L1TF, gfns, 6, GEN)


# ------------------------------------------------------------------ make
def numpy_make(cfg, gfn, out, tmp):
    if np.bitwise_or.reduce(gfn) >> u(40):
        raise ValueError("gfn")
    base = u(M.make_mmio_spte(cfg, 0, 7, GEN))
    r = u(cfg.nonpresent_or_rsvd_mask)
    np.left_shift(gfn, u(12), out=out)
    if r:
        np.bitwise_and(out, r, out=tmp)
        np.left_shift(tmp, u(5), out=tmp)
        np.bitwise_or(out, tmp, out=out)
    np.bitwise_or(out, base, out=out)
    return out


@pytest.mark.parametrize("name,cfg", [("ept", EPT), ("l1tf", L1TF)])
@pytest.mark.parametrize("kind", ["core", "core1t", "memcpy", "numpy", "reference"])
def test_make(benchmark, gfns, name, cfg, kind):
    group = f"mmio.make 16M {name}"
    if kind in CORE_THREADS:
        out = np.empty_like(gfns)
        bench(benchmark, group, kind, N, M.make_mmio_spte_batch, cfg, gfns, 7, GEN, out=out,
              threads=CORE_THREADS[kind])
    elif kind == "memcpy":
        memcpy_case(benchmark, group, N * 8, N)
    elif kind == "numpy":
        out, tmp = np.empty_like(gfns), np.empty_like(gfns)
        assert np.array_equal(numpy_make(cfg, gfns[:4096], out[:4096], tmp[:4096]),
                              M.make_mmio_spte_batch(cfg, gfns[:4096], 7, GEN))
        bench(benchmark, group, kind, N, numpy_make, cfg, gfns, out, tmp)
    else:
        sample = [int(x) for x in gfns[:REF_N]]
        bench(benchmark, group, kind, REF_N,
              lambda: [R.make_mmio_spte(cfg, g, 7, GEN) for g in sample], rounds=2)


# ------------------------------------------------------------------ decode
def numpy_gfn(cfg, s, out, tmp):
    np.right_shift(s, u(5), out=tmp)
    np.bitwise_and(tmp, u(cfg.nonpresent_or_rsvd_mask), out=tmp)
    np.bitwise_and(s, u(cfg.nonpresent_or_rsvd_lower_gfn_mask), out=out)
    np.bitwise_or(out, tmp, out=out)
    np.right_shift(out, u(12), out=out)
    return out


def numpy_generation(cfg, s, out, tmp):
    np.bitwise_and(s, u(0x7F8), out=tmp)
    np.right_shift(tmp, u(3), out=tmp)
    np.bitwise_and(s, u(0x7FF << 52), out=out)
    np.right_shift(out, u(44), out=out)
    np.bitwise_or(out, tmp, out=out)
    return out


DECODERS = {
    "gfn": (M.get_mmio_spte_gfn_batch, numpy_gfn, R.get_mmio_spte_gfn),
    "generation": (M.get_mmio_spte_generation_batch, numpy_generation, R.get_mmio_spte_generation),
}


@pytest.mark.parametrize("field", sorted(DECODERS))
@pytest.mark.parametrize("kind", ["core", "core1t", "memcpy", "numpy", "reference"])
def test_decode(benchmark, l1tf_sptes, field, kind):
    core, npf, ref = DECODERS[field]
    group = f"mmio.decode_{field} 16M l1tf"
    s = l1tf_sptes
    if kind in CORE_THREADS:
        out = np.empty_like(s)
        bench(benchmark, group, kind, N, core, L1TF, s, out=out, threads=CORE_THREADS[kind])
    elif kind == "memcpy":
        memcpy_case(benchmark, group, N * 8, N)
    elif kind == "numpy":
        out, tmp = np.empty_like(s), np.empty_like(s)
        assert np.array_equal(npf(L1TF, s[:4096], out[:4096], tmp[:4096]), core(L1TF, s[:4096]))
        bench(benchmark, group, kind, N, npf, L1TF, s, out, tmp)
    else:
        sample = [int(x) for x in s[:REF_N]]
        bench(benchmark, group, kind, REF_N, lambda: [ref(L1TF, x) for x in sample], rounds=2)


# ------------------------------------------------------------------ check
def numpy_check(cfg, s, gen, out, tmp):
    if gen >> 63:
        out[...] = False
        return out
    want = u(M.generation_mmio_spte_mask(cfg, gen & M.mmio_generation_mask(cfg)))
    np.bitwise_and(s, u(M.mmio_generation_bits(cfg)), out=tmp)
    np.equal(tmp, want, out=out)
    return out


@pytest.mark.parametrize("kind", ["core", "core1t", "memcpy", "numpy", "reference"])
def test_check(benchmark, l1tf_sptes, kind):
    group = "mmio.check 16M"
    s = l1tf_sptes
    gen = GEN + 2
    if kind in CORE_THREADS:
        out = np.empty(s.shape, dtype=np.bool_)
        bench(benchmark, group, kind, N, M.check_mmio_spte_batch, L1TF, s, gen, out=out,
              threads=CORE_THREADS[kind])
    elif kind == "memcpy":
        memcpy_case(benchmark, group, N * 8, N)
    elif kind == "numpy":
        out, tmp = np.empty(s.shape, dtype=np.bool_), np.empty_like(s)
        assert np.array_equal(numpy_check(L1TF, s[:4096], GEN, out[:4096], tmp[:4096]),
                              M.check_mmio_spte_batch(L1TF, s[:4096], GEN))
        bench(benchmark, group, kind, N, numpy_check, L1TF, s, gen, out, tmp)
    else:
        sample = [int(x) for x in s[:REF_N]]
        bench(benchmark, group, kind, REF_N,
              lambda: [R.check_mmio_spte(L1TF, x, gen) for x in sample], rounds=2)
