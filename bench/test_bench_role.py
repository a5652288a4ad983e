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


#: (u64 half of the 16-byte row, bit position of the field's byte in it, shift, width)
LANES = [(i // 8, 8 * (i % 8), f.shift, f.width) for i, f in enumerate(LAY.fields)]
U = np.uint64


def _move(src, pos, shift, out):
    """out = src moved from bit ``pos`` to bit ``shift``."""
    if pos > shift:
        np.right_shift(src, U(pos - shift), out=out)
    elif pos < shift:
        np.left_shift(src, U(shift - pos), out=out)
    else:
        np.copyto(out, src)


#: 1-bit fields in consecutive bytes of one u64 half, packed to consecutive bits: gathered by
#: one multiply (byte j's bit 0 times 2^(56 - 7j) lands on bit 56 + j; no two partial
#: products share a bit, so there are no carries).  [(half, first byte, count, first shift)]
GATHERS = []
_GATHER_MUL = U(sum(1 << (56 - 7 * j) for j in range(8)))


def _find_gathers():
    """Runs of >= 3 one-bit fields in consecutive bytes of a half with consecutive shifts."""
    runs, i = [], 0
    fields = LAY.fields
    while i < len(fields):
        j = i
        while (j + 1 < len(fields) and fields[j + 1].width == 1 and fields[i].width == 1
               and (j + 1) // 8 == i // 8 and fields[j + 1].shift == fields[j].shift + 1):
            j += 1
        if j - i + 1 >= 3:
            runs.append((i // 8, i % 8, j - i + 1, fields[i].shift))
        i = j + 1
    return runs


GATHERS = _find_gathers()
_GATHERED = {h * 8 + b + k for h, b, n, _ in GATHERS for k in range(n)}


def _pack_block(rec, out, t, acc, lo, hi):
    r64 = rec.view(U).reshape(-1, 2)
    np.copyto(lo, r64[:, 0])
    np.copyto(hi, r64[:, 1])
    for half, bad in zip((lo, hi), _BAD):
        np.bitwise_and(half, bad, out=t)
        if t.any():
            raise ValueError("a field wider than its width")
    acc[...] = 0
    for h, first, n, shift in GATHERS:
        np.bitwise_and(lo if h == 0 else hi, U(sum(1 << (8 * (first + k)) for k in range(n))), out=t)
        if first:
            np.right_shift(t, U(8 * first), out=t)
        np.multiply(t, _GATHER_MUL, out=t)
        np.right_shift(t, U(56), out=t)
        np.left_shift(t, U(shift), out=t)
        np.bitwise_or(acc, t, out=acc)
    for i, (h, pos, shift, width) in enumerate(LANES):
        if i in _GATHERED:
            continue
        _move(lo if h == 0 else hi, pos, shift, t)
        np.bitwise_and(t, U(((1 << width) - 1) << shift), out=t)
        np.bitwise_or(acc, t, out=acc)
    np.copyto(out, acc, casting="unsafe")


def numpy_pack(rec, out, tmps):
    """numpy: the rows as two contiguous u64 halves, the width check, runs of one-bit fields
    gathered by one multiply each (GATHERS), one move + mask + OR per other field into a u64
    accumulator, in cache-sized blocks."""
    blocks(_pack_block, (rec, out), tmps)
    return out


def _unpack_block(w, out, t, lo, hi):
    np.bitwise_and(w, U(~LAY.used_mask & 0xFFFFFFFF), out=t)
    if t.any():
        raise ValueError("reserved bits set")
    lo[...] = 0
    hi[...] = 0
    for h, first, n, shift in GATHERS:          # the inverse multiply: one bit to each byte
        ones = sum(1 << (8 * k) for k in range(n))
        np.right_shift(w, U(shift), out=t, dtype=U)
        np.bitwise_and(t, U((1 << n) - 1), out=t)
        np.multiply(t, U(0x0101010101010101), out=t)            # the n bits in every byte
        np.bitwise_and(t, U(sum(1 << (9 * k) for k in range(n))), out=t)   # bit k of byte k
        np.add(t, U(ones * 0x7F), out=t)                          # byte k >= 0x80 iff bit k
        np.bitwise_and(t, U(ones * 0x80), out=t)
        _move(t, 7, 8 * first, t)                                  # bit 7 of byte k -> bit 0
        np.bitwise_or(lo if h == 0 else hi, t, out=lo if h == 0 else hi)
    for i, (h, pos, shift, width) in enumerate(LANES):
        if i in _GATHERED:
            continue
        np.bitwise_and(w, U(((1 << width) - 1) << shift), out=t)
        _move(t, shift, pos, t)
        np.bitwise_or(lo if h == 0 else hi, t, out=lo if h == 0 else hi)
    r64 = out.view(U).reshape(-1, 2)
    np.copyto(r64[:, 0], lo)
    np.copyto(r64[:, 1], hi)


def numpy_unpack(w, out, tmps):
    """numpy: the reserved-bit check, runs of one-bit fields spread to their bytes by one
    multiply each, one mask + move + OR per other field into the two u64 halves of the rows
    (contiguous), copied into the rows once, in cache-sized blocks."""
    blocks(_unpack_block, (w, out), tmps)
    return out


def _hash_block(g, out, t):
    np.multiply(g, np.uint64(ref.GOLDEN_RATIO_64), out=t)
    np.right_shift(t, np.uint64(64 - R.KVM_MMU_HASH_SHIFT), out=out, casting="unsafe")


def numpy_hash(g, out, t):
    """numpy: hash_64(gfn, KVM_MMU_HASH_SHIFT) = gfn * GOLDEN_RATIO_64 >> (64 - bits)."""
    blocks(_hash_block, (g, out), (t,))
    return out


# ------------------------------------------------------------------ pack
G_PACK = "role.pack 16M (newest layout, 16-byte rows -> u32)"


def test_pack(benchmark, rows, words):
    outs = [np.empty(N, np.uint32) for _ in range(3)]
    tmps = [tmp(U) for _ in range(4)]
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
        "numpy": lambda: numpy_pack(rows, outs[2], tmps),
        "reference": (lambda: [ref.pack_role("v6.14", **d) for d in sample], len(sample)),
    }, check=check, in_bytes=ROW, out_bytes=4,
        targets=({"subject": "core1t", "vs": "memcpy", "min": 0.9},
                 {"subject": "core1t", "vs": "numpy", "min": 3.0}))


# ------------------------------------------------------------------ unpack
G_UNPACK = "role.unpack 16M (newest layout, u32 -> 16-byte rows)"


def test_unpack(benchmark, words, rows):
    outs = [np.zeros(N, dtype=LAY.dtype) for _ in range(3)]
    tmps = [tmp(U) for _ in range(3)]
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
        "numpy": lambda: numpy_unpack(words, outs[2], tmps),
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
