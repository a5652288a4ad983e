"""Role-word benchmarks: batch pack / unpack (newest layout) and kvm_page_table_hashfn over
16M entries.

Each group is one interleaved benchmark (conftest.interleaved): ``core`` / ``core1t`` /
``alloc`` (the default call without ``out=``), a copy moving the operation's bytes (16-byte
rows + u32 words for pack/unpack, u64 gfns + u32 buckets for hashing), the best plain-numpy
formulation (cache-sized blocks, ``out=``; checked against the core) and the pure-Python
reference on REF_N elements.
"""
import numpy as np
import pytest

from conftest import N, REF_N, assert_same, blocks, interleaved, same_traffic_copy, tmp
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


def _pack_block(rec, out, t32, t64):
    raw = rec.view(np.uint8).reshape(-1, ROW)
    np.bitwise_and(raw.view(np.uint64).reshape(-1, ROW // 8), _BAD, out=t64)
    if t64.any():
        raise ValueError("a field wider than its width")
    np.left_shift(raw[:, 0], np.uint32(LAY.fields[0].shift), out=out, dtype=np.uint32)
    for i, f in enumerate(LAY.fields[1:], 1):
        np.left_shift(raw[:, i], np.uint32(f.shift), out=t32, dtype=np.uint32)
        np.bitwise_or(out, t32, out=out)


def numpy_pack(rec, out, t32, t64):
    """numpy: the width check, then OR of every byte lane shifted to its field, in blocks."""
    blocks(_pack_block, (rec, out), (t32, t64))
    return out


def _unpack_block(w, out, t):
    np.bitwise_and(w, np.uint32(~LAY.used_mask & 0xFFFFFFFF), out=t)
    if t.any():
        raise ValueError("reserved bits set")
    raw = out.view(np.uint8).reshape(-1, ROW)
    for i, f in enumerate(LAY.fields):
        np.right_shift(w, np.uint32(f.shift), out=t)
        np.bitwise_and(t, np.uint32((1 << f.width) - 1), out=t)
        np.copyto(raw[:, i], t, casting="unsafe")


def numpy_unpack(w, out, t):
    """numpy: the reserved-bit check, then one shift + mask per field into its byte lane."""
    blocks(_unpack_block, (w, out), (t,))
    return out


def _hash_block(g, out, t):
    np.multiply(g, np.uint64(ref.GOLDEN_RATIO_64), out=t)
    np.right_shift(t, np.uint64(64 - R.KVM_MMU_HASH_SHIFT), out=t)
    np.copyto(out, t, casting="unsafe")


def numpy_hash(g, out, t):
    """numpy: hash_64(gfn, KVM_MMU_HASH_SHIFT) = gfn * GOLDEN_RATIO_64 >> (64 - bits)."""
    blocks(_hash_block, (g, out), (t,))
    return out


# ------------------------------------------------------------------ pack
G_PACK = "role.pack 16M (newest layout, 16-byte rows -> u32)"


def test_pack(benchmark, rows, words):
    outs = [np.empty(N, np.uint32) for _ in range(3)]
    t32, t64 = tmp(np.uint32), np.empty((min(N, tmp(np.uint8).size), ROW // 8), np.uint64)
    sample = [{f.name: int(r[f.name]) for f in LAY.fields} for r in rows[:REF_N]]

    def check(r):
        for k in ("core", "core1t", "numpy", "alloc"):
            assert_same(r[k], words)
        assert r["reference"] == words[:len(sample)].tolist()
    interleaved(benchmark, G_PACK, {
        "core": lambda: R.pack_batch(ERA, rows, out=outs[0]),
        "core1t": lambda: R.pack_batch(ERA, rows, out=outs[1], threads=1),
        "alloc": lambda: R.pack_batch(ERA, rows),
        "memcpy": same_traffic_copy(ROW, 4),
        "numpy": lambda: numpy_pack(rows, outs[2], t32, t64),
        "reference": (lambda: [ref.pack_role("v6.14", **d) for d in sample], len(sample)),
    }, check=check, in_bytes=ROW, out_bytes=4,
        targets=({"subject": "core1t", "vs": "memcpy", "min": 0.9},
                 {"subject": "core1t", "vs": "numpy", "min": 3.0}))


# ------------------------------------------------------------------ unpack
G_UNPACK = "role.unpack 16M (newest layout, u32 -> 16-byte rows)"


def test_unpack(benchmark, words, rows):
    outs = [np.zeros(N, dtype=LAY.dtype) for _ in range(3)]
    t = tmp(np.uint32)
    sample = [int(x) for x in words[:REF_N]]

    def check(r):
        for k in ("core", "core1t", "numpy", "alloc"):
            assert np.array_equal(r[k].view(np.uint8), rows.view(np.uint8))
        for d, row in zip(r["reference"], rows[:len(sample)]):
            assert all(d[f.name] == int(row[f.name]) for f in LAY.fields)
    interleaved(benchmark, G_UNPACK, {
        "core": lambda: R.unpack_batch(ERA, words, out=outs[0]),
        "core1t": lambda: R.unpack_batch(ERA, words, out=outs[1], threads=1),
        "alloc": lambda: R.unpack_batch(ERA, words),
        "memcpy": same_traffic_copy(4, ROW),
        "numpy": lambda: numpy_unpack(words, outs[2], t),
        "reference": (lambda: [ref.unpack_role("v6.14", w) for w in sample], len(sample)),
    }, check=check, in_bytes=4, out_bytes=ROW)


# ------------------------------------------------------------------ hash
G_HASH = "role.kvm_page_table_hashfn 16M (u64 gfn -> u32 bucket)"


def test_hash(benchmark, gfns):
    outs = [np.empty(N, np.uint32) for _ in range(3)]
    t = tmp(np.uint64)
    sample = [int(x) for x in gfns[:REF_N]]

    def check(r):
        for k in ("core", "core1t", "numpy"):
            assert_same(r[k], r["alloc"])
        assert r["reference"] == r["alloc"][:len(sample)].tolist()
    interleaved(benchmark, G_HASH, {
        "core": lambda: R.hash_batch(gfns, out=outs[0]),
        "core1t": lambda: R.hash_batch(gfns, out=outs[1], threads=1),
        "alloc": lambda: R.hash_batch(gfns),
        "memcpy": same_traffic_copy(8, 4),
        "numpy": lambda: numpy_hash(gfns, outs[2], t),
        "reference": (lambda: [ref.kvm_page_table_hashfn(g) for g in sample], len(sample)),
    }, check=check, in_bytes=8, out_bytes=4)
