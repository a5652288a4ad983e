"""Role-word benchmarks: batch pack / unpack (newest layout) and kvm_page_table_hashfn over
16M entries.

Baselines in every group: memcpy of the larger side's bytes (16-byte unpacked rows for
pack/unpack, the uint64 gfns for hashing), the best plain-numpy formulation of the same rule
(checked once against the core), the pure-Python reference on REF_N elements.
"""
import numpy as np
import pytest

from conftest import CORE_THREADS, N, REF_N, bench, core_kinds, memcpy_case
from pykvmmu import role as R
from pykvmmu.ref import role as ref

ERA = R.get_era("latest")
LAY = ERA.base
ROW = LAY.row


@pytest.fixture(scope="module")
def words(rng):
    w = rng.integers(0, 1 << 32, N, dtype=np.uint64).astype(np.uint32)
    return w & np.uint32(LAY.used_mask)


@pytest.fixture(scope="module")
def rows(words):
    return R.unpack_batch(ERA, words)


@pytest.fixture(scope="module")
def gfns(rng):
    return rng.integers(0, 1 << 40, N, dtype=np.uint64)


# ------------------------------------------------------------------ numpy formulations
_LANE_MASK = np.zeros(ROW, dtype=np.uint8)
for _i, _f in enumerate(LAY.fields):
    _LANE_MASK[_i] = (1 << _f.width) - 1
_BAD = ~_LANE_MASK.view(np.uint64)


def numpy_pack(rec, out, tmp):
    raw = rec.view(np.uint8).reshape(-1, ROW)
    if (raw.view(np.uint64).reshape(-1, ROW // 8) & _BAD).any():
        raise ValueError("width")
    out[...] = 0
    for i, f in enumerate(LAY.fields):
        np.left_shift(raw[:, i], np.uint32(f.shift), out=tmp, dtype=np.uint32)
        np.bitwise_or(out, tmp, out=out)
    return out


def numpy_unpack(w, out, tmp):
    if (w & np.uint32(~LAY.used_mask & 0xFFFFFFFF)).any():
        raise ValueError("reserved")
    raw = out.view(np.uint8).reshape(-1, ROW)
    for i, f in enumerate(LAY.fields):
        np.right_shift(w, np.uint32(f.shift), out=tmp)
        np.bitwise_and(tmp, np.uint32((1 << f.width) - 1), out=tmp)
        raw[:, i] = tmp
    return out


def numpy_hash(g, out, tmp):
    np.multiply(g, np.uint64(ref.GOLDEN_RATIO_64), out=tmp)
    np.right_shift(tmp, np.uint64(64 - R.KVM_MMU_HASH_SHIFT), out=tmp)
    out[...] = tmp
    return out


def test_numpy_formulations_agree(words, rows, gfns):
    k = min(1 << 16, N)
    assert np.array_equal(numpy_pack(rows[:k], np.empty(k, np.uint32), np.empty(k, np.uint32)), words[:k])
    o = np.zeros(k, dtype=LAY.dtype)
    assert np.array_equal(numpy_unpack(words[:k], o, np.empty(k, np.uint32)).view(np.uint8),
                          rows[:k].view(np.uint8))
    assert np.array_equal(numpy_hash(gfns[:k], np.empty(k, np.uint32), np.empty(k, np.uint64)),
                          R.hash_batch(gfns[:k]))


# ------------------------------------------------------------------ pack
G_PACK = "role.pack 16M (newest layout, 16-byte rows -> u32)"


@core_kinds
def test_pack_core(benchmark, rows, words, core):
    out = np.empty(N, dtype=np.uint32)
    bench(benchmark, G_PACK, core, N, R.pack_batch, ERA, rows, out=out, threads=CORE_THREADS[core])
    assert np.array_equal(out, words)


def test_pack_memcpy(benchmark):
    memcpy_case(benchmark, G_PACK, N * ROW, N)


def test_pack_numpy(benchmark, rows):
    bench(benchmark, G_PACK, "numpy", N, numpy_pack, rows, np.empty(N, np.uint32), np.empty(N, np.uint32),
          rounds=3)


def test_pack_reference(benchmark, rows):
    sample = [{f.name: int(r[f.name]) for f in LAY.fields} for r in rows[:REF_N]]
    bench(benchmark, G_PACK, "reference", REF_N,
          lambda: [ref.pack_role("v6.14", **d) for d in sample], rounds=3)


# ------------------------------------------------------------------ unpack
G_UNPACK = "role.unpack 16M (newest layout, u32 -> 16-byte rows)"


@core_kinds
def test_unpack_core(benchmark, words, rows, core):
    out = np.empty(N, dtype=LAY.dtype)
    bench(benchmark, G_UNPACK, core, N, R.unpack_batch, ERA, words, out=out, threads=CORE_THREADS[core])
    assert np.array_equal(out.view(np.uint8), rows.view(np.uint8))


def test_unpack_memcpy(benchmark):
    memcpy_case(benchmark, G_UNPACK, N * ROW, N)


def test_unpack_numpy(benchmark, words):
    bench(benchmark, G_UNPACK, "numpy", N, numpy_unpack, words, np.zeros(N, dtype=LAY.dtype),
          np.empty(N, np.uint32), rounds=3)


def test_unpack_reference(benchmark, words):
    sample = [int(x) for x in words[:REF_N]]
    bench(benchmark, G_UNPACK, "reference", REF_N,
          lambda: [ref.unpack_role("v6.14", w) for w in sample], rounds=3)


# ------------------------------------------------------------------ hash
G_HASH = "role.kvm_page_table_hashfn 16M (u64 gfn -> u32 bucket)"


@core_kinds
def test_hash_core(benchmark, gfns, core):
    out = np.empty(N, dtype=np.uint32)
    bench(benchmark, G_HASH, core, N, R.hash_batch, gfns, out=out, threads=CORE_THREADS[core])


def test_hash_memcpy(benchmark):
    memcpy_case(benchmark, G_HASH, N * 8, N)


def test_hash_numpy(benchmark, gfns):
    bench(benchmark, G_HASH, "numpy", N, numpy_hash, gfns, np.empty(N, np.uint32),
          np.empty(N, np.uint64))


def test_hash_reference(benchmark, gfns):
    sample = [int(x) for x in gfns[:REF_N]]
    bench(benchmark, G_HASH, "reference", REF_N,
          lambda: [ref.kvm_page_table_hashfn(g) for g in sample], rounds=3)
