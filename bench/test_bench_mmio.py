"""MMIO SPTE benchmarks: batch make / decode / check over 16M entries.

Each group is one interleaved benchmark (conftest.interleaved): ``core`` (``out=``, default
threading), ``core1t`` (``out=``, one thread), ``alloc`` (the default call, no ``out=``), a
copy of the same bytes (``memcpy``), the best plain-numpy formulation (cache-sized blocks,
``out=``; checked against the core's output) and the pure-Python reference on REF_N
elements (ratios are per element).
"""
import numpy as np
import pytest

from conftest import N, REF_N, assert_same, blocks, interleaved, same_traffic_copy, tmp
from pykvmmu import mmio as M
from pykvmmu.config import MmuConfig
from pykvmmu.ref import mmio as R

EPT = MmuConfig.ept()
L1TF = MmuConfig.npt(phys_bits=39, cache_bits=44)
GEN = 0x12345
u = np.uint64
TARGETS = ({"subject": "core1t", "vs": "memcpy", "min": 0.9},
           {"subject": "core1t", "vs": "numpy", "min": 3.0})


@pytest.fixture(scope="module")
def gfns(rng):
    return rng.integers(0, 1 << 40, N, dtype=np.uint64)


@pytest.fixture(scope="module")
def l1tf_sptes(gfns):
    return M.make_mmio_spte_batch(L1TF, gfns, 6, GEN)


def _cases(core, core_args, npf, ref_fn, sample, out_dtype, check_extra=None):
    """The six cases of a group; ``core(*core_args, out=, threads=)``."""
    outs = [np.empty(N, out_dtype) for _ in range(3)]
    return {
        "core": lambda: core(*core_args, out=outs[0]),
        "core1t": lambda: core(*core_args, out=outs[1], threads=1),
        "alloc": lambda: core(*core_args),
        "memcpy": same_traffic_copy(8, np.dtype(out_dtype).itemsize),
        "numpy": lambda: npf(outs[2]),
        "reference": (lambda: [ref_fn(x) for x in sample], len(sample)),
    }


def _check(r):
    for k in ("core", "core1t", "numpy"):
        assert_same(r[k], r["alloc"])
    assert list(r["reference"]) == r["alloc"][:len(r["reference"])].tolist()


# ------------------------------------------------------------------ make
def _make_block(gfn, out, t, base, r):
    if gfn.size and int(gfn.max()) >> 40:
        raise ValueError("gfn")
    np.left_shift(gfn, u(12), out=out)
    if r:
        np.bitwise_and(out, r, out=t)
        np.left_shift(t, u(5), out=t)
        np.bitwise_or(out, t, out=out)
    np.bitwise_or(out, base, out=out)


def numpy_make(cfg, gfn, out, t):
    """numpy: gfn << 12 with the L1TF high-bit copy, ORed with the generation/access/value
    template, in cache-sized blocks."""
    base = u(M.make_mmio_spte(cfg, 0, 7, GEN))
    r = u(cfg.nonpresent_or_rsvd_mask)
    blocks(lambda g, o, tt: _make_block(g, o, tt, base, r), (gfn, out), (t,))
    return out


@pytest.mark.parametrize("name,cfg", [("ept", EPT), ("l1tf", L1TF)])
def test_make(benchmark, gfns, name, cfg):
    t = tmp(u)
    sample = [int(x) for x in gfns[:REF_N]]
    interleaved(benchmark, f"mmio.make 16M {name}", _cases(
        M.make_mmio_spte_batch, (cfg, gfns, 7, GEN), lambda o: numpy_make(cfg, gfns, o, t),
        lambda g: R.make_mmio_spte(cfg, g, 7, GEN), sample, np.uint64),
        check=_check, targets=TARGETS, in_bytes=8, out_bytes=8)


# ------------------------------------------------------------------ decode
def _gfn_block(s, out, t, cfg):
    np.right_shift(s, u(5), out=t)
    np.bitwise_and(t, u(cfg.nonpresent_or_rsvd_mask), out=t)
    np.bitwise_and(s, u(cfg.nonpresent_or_rsvd_lower_gfn_mask), out=out)
    np.bitwise_or(out, t, out=out)
    np.right_shift(out, u(12), out=out)


def _generation_block(s, out, t, cfg):
    np.bitwise_and(s, u(0x7F8), out=t)
    np.right_shift(t, u(3), out=t)
    np.bitwise_and(s, u(0x7FF << 52), out=out)
    np.right_shift(out, u(44), out=out)
    np.bitwise_or(out, t, out=out)


DECODERS = {
    "gfn": (M.get_mmio_spte_gfn_batch, _gfn_block, R.get_mmio_spte_gfn),
    "generation": (M.get_mmio_spte_generation_batch, _generation_block, R.get_mmio_spte_generation),
}


@pytest.mark.parametrize("field", sorted(DECODERS))
def test_decode(benchmark, l1tf_sptes, field):
    core, npb, ref = DECODERS[field]
    s = l1tf_sptes
    t = tmp(u)
    sample = [int(x) for x in s[:REF_N]]
    interleaved(benchmark, f"mmio.decode_{field} 16M l1tf", _cases(
        core, (L1TF, s), lambda o: blocks(lambda a, b, c: npb(a, b, c, L1TF), (s, o), (t,)) or o,
        lambda x: ref(L1TF, x), sample, np.uint64),
        check=_check, in_bytes=8, out_bytes=8)


# ------------------------------------------------------------------ check
def _check_block(s, out, t, gen_bits, want):
    np.bitwise_and(s, gen_bits, out=t)
    np.equal(t, want, out=out)


def numpy_check(cfg, s, gen, out, t):
    """numpy: (s & generation bits) == the generation's bits, in cache-sized blocks."""
    if gen >> 63:
        out[...] = False
        return out
    want = u(M.generation_mmio_spte_mask(cfg, gen & M.mmio_generation_mask(cfg)))
    gb = u(M.mmio_generation_bits(cfg))
    blocks(lambda a, o, tt: _check_block(a, o, tt, gb, want), (s, out), (t,))
    return out


def test_check(benchmark, l1tf_sptes):
    s = l1tf_sptes
    gen = GEN + 2
    t = tmp(u)
    sample = [int(x) for x in s[:REF_N]]
    assert_same(numpy_check(L1TF, s, GEN, np.empty(N, np.bool_), t), M.check_mmio_spte_batch(L1TF, s, GEN))
    interleaved(benchmark, "mmio.check 16M", _cases(
        M.check_mmio_spte_batch, (L1TF, s, gen), lambda o: numpy_check(L1TF, s, gen, o, t),
        lambda x: R.check_mmio_spte(L1TF, x, gen), sample, np.bool_),
        check=_check, targets=TARGETS, in_bytes=8, out_bytes=1)
