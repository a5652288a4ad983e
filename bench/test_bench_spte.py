"""SPTE engine benchmarks: batch make_spte, predicates and decode over 16M entries.

Each group is one interleaved benchmark (conftest.interleaved): the core with ``out=`` on
the default threading (``core``) and on one thread (``core1t``), the default call without
``out=`` (``alloc``), a copy of the same bytes (``memcpy``), the best plain-numpy
formulation (blocks of cache-sized temporaries, ``out=``, a table + take where the core uses
a table; checked against the core's output) and the pure-Python reference.
"""
import numpy as np
import pytest

from conftest import (CHUNK, HAVE_AVX512, N, REF_N, assert_same, blocks, interleaved,
                      same_traffic_copy, tmp)
from pykvmmu import isa
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.ref import spte as ref

CFG = MmuConfig.ept()
U = np.uint64
PFN_MAX = CFG.base_addr_mask >> 12
assert PFN_MAX & (PFN_MAX + 1) == 0, "the pfn check below is a max() against a low mask"
#: One-thread goals of issue 14 (16M batches): ratio to the same-traffic copy and to numpy.
ENCODE_TARGETS = ({"subject": "core1t", "vs": "memcpy", "min": 0.9},
                  {"subject": "core1t", "vs": "numpy", "min": 3.0})


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


def _check_pfn(pfn):
    if pfn.size and int(pfn.max()) > PFN_MAX:
        raise ValueError("pfn beyond the physical address mask")


# ------------------------------------------------------------------ make_spte
def _make_uniform_block(pfn, out, template):
    _check_pfn(pfn)
    np.left_shift(pfn, u(12), out=out)
    np.bitwise_or(out, template, out=out)


def numpy_make_spte_uniform(pfn, out, template):
    """numpy: pfn << 12 | the template SPTE, with the pfn range check, in cache-sized blocks."""
    blocks(lambda p, o: _make_uniform_block(p, o, template), (pfn, out))
    return out


G_UNIFORM = "spte.make_spte 16M shared inputs"


def test_make_spte_uniform(benchmark, pfns):
    template = u(S.make_spte(CFG, 0).spte)
    out, out1, outn = (np.empty_like(pfns) for _ in range(3))
    sample = [int(x) for x in pfns[:REF_N]]

    def check(r):
        assert_same(r["core1t"], r["alloc"])
        assert_same(r["core"], r["alloc"])
        assert_same(r["numpy"], r["alloc"])
        assert [ref.make_spte(CFG, p)[0] for p in sample[:64]] == r["alloc"][:64].tolist()
    interleaved(benchmark, G_UNIFORM, {
        "core": lambda: S.make_spte_batch(CFG, pfns, out=out),
        "core1t": lambda: S.make_spte_batch(CFG, pfns, out=out1, threads=1),
        "alloc": lambda: S.make_spte_batch(CFG, pfns),
        "memcpy": same_traffic_copy(8, 8),
        "numpy": lambda: numpy_make_spte_uniform(pfns, outn, template),
        "reference": (lambda: [ref.make_spte(CFG, p) for p in sample], len(sample)),
    }, check=check, targets=ENCODE_TARGETS, in_bytes=8, out_bytes=8)


def numpy_make_spte_rule(pfn, level, acc, flags):
    """numpy: make_spte (v6.19 rules, EPT with A/D) with per-element inputs, as elementwise
    logic; used once to build the (level, access, flags) table of numpy_make_spte_general."""
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
    wrprot = write & ((f & u(S.MK_UNSYNC_FAILS)) != 0)   # the old SPTE is not a writable leaf
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


def _make_table():
    """make_spte without the pfn for every (level 0..5, access, flags): index
    level << 11 | access << 8 | flags (level 0 is refused before the lookup)."""
    k = np.arange(6 * 2048)
    lv = np.maximum(k >> 11, 1).astype(np.uint8)
    return numpy_make_spte_rule(np.zeros(k.size, U), lv, ((k >> 8) & 7).astype(np.uint8),
                                (k & 255).astype(np.uint8))


MK_TABLE = _make_table()


def _make_general_block(pfn, level, acc, flags, out, idx, idx2, t64):
    _check_pfn(pfn)
    if pfn.size and (int(level.min()) < 1 or int(level.max()) > 5 or int(acc.max()) > 7):
        raise ValueError("level must be 1..5 and pte_access 0..7")
    np.left_shift(level, 11, out=idx, dtype=np.intp)
    np.left_shift(acc, 8, out=idx2, dtype=np.intp)
    np.bitwise_or(idx, idx2, out=idx)
    np.bitwise_or(idx, flags, out=idx, dtype=np.intp)
    np.take(MK_TABLE, idx, out=t64, mode="clip")
    np.left_shift(pfn, u(12), out=out)
    np.bitwise_or(out, t64, out=out)


def numpy_make_spte_general(pfn, level, acc, flags, out, tmps):
    """numpy: the core's table algorithm: one take from the (level, access, flags) table,
    ORed with pfn << 12, with the range checks, in cache-sized blocks."""
    blocks(_make_general_block, (pfn, level, acc, flags, out), tmps)
    return out


G_GENERAL = "spte.make_spte 16M per-element inputs"


def _ref_make(args):
    out = []
    for p, lv, ac, fl in args:
        out.append(ref.make_spte(
            CFG, p, level=lv, pte_access=ac, prefetch=bool(fl & S.MK_PREFETCH),
            synchronizing=bool(fl & S.MK_SYNCHRONIZING), host_writable=bool(fl & S.MK_HOST_WRITABLE),
            host_mmio=bool(fl & S.MK_HOST_MMIO), ad_disabled=bool(fl & S.MK_AD_DISABLED),
            ad_wrprot_only=bool(fl & S.MK_WRPROT_ONLY), unsync_fails=bool(fl & S.MK_UNSYNC_FAILS),
            nx_huge_pages=bool(fl & S.MK_NX_HUGE)))
    return out


def test_make_spte_general(benchmark, pfns, per_elem):
    level, access, flags = per_elem
    out, out1, outn = (np.empty_like(pfns) for _ in range(3))
    tmps = (tmp(np.intp), tmp(np.intp), tmp(U))
    args = [(int(pfns[i]), int(level[i]), int(access[i]), int(flags[i])) for i in range(min(REF_N, N))]
    kw = dict(level=level, pte_access=access, flags=flags)

    def check(r):
        for k in ("core", "core1t", "numpy"):
            assert_same(r[k], r["alloc"])
        k = min(N, 4096)
        assert_same(numpy_make_spte_rule(pfns[:k], level[:k], access[:k], flags[:k]), r["alloc"][:k])
        assert [x[0] for x in r["reference"]] == r["alloc"][:len(args)].tolist()
    interleaved(benchmark, G_GENERAL, {
        "core": lambda: S.make_spte_batch(CFG, pfns, out=out, **kw),
        "core1t": lambda: S.make_spte_batch(CFG, pfns, out=out1, threads=1, **kw),
        "alloc": lambda: S.make_spte_batch(CFG, pfns, **kw),
        "memcpy": same_traffic_copy(8 + 3, 8),
        "numpy": lambda: numpy_make_spte_general(pfns, level, access, flags, outn, tmps),
        "reference": (lambda: _ref_make(args), len(args)),
    }, check=check, in_bytes=11, out_bytes=8,
        targets=({"subject": "core1t", "vs": "memcpy", "min": 0.75},
                 {"subject": "core1t", "vs": "numpy", "min": 3.0}))


# ----------------------------------------------------------------- predicates
def _bit_gather(mask, extra=2, seed=5):
    """A multiplier m with ((s & mask) * m) >> shift distinct for every subset of mask's bits
    (a classic multiply-gather), found by a seeded search; returns (m, shift)."""
    bits = [b for b in range(64) if mask >> b & 1]
    k = len(bits)
    subsets = [sum(1 << bits[i] for i in range(k) if j >> i & 1) for j in range(1 << k)]
    r = np.random.default_rng(seed)
    for width in range(k, k + extra + 1):
        for _ in range(20000):
            m = int(r.integers(0, 1 << 63, dtype=np.uint64)) * 2 + 1
            idx = {((v * m) & (2**64 - 1)) >> (64 - width) for v in subsets}
            if len(idx) == len(subsets):
                return m, 64 - width
    raise AssertionError(f"no multiply-gather for mask {mask:#x}")


class TablePredicate:
    """numpy: a predicate of a few SPTE bits as (s & mask) * m >> shift, then a take from a
    table of the predicate over every subset of those bits (the reference's own values)."""

    def __init__(self, name, mask):
        self.mask = u(mask)
        m, self.shift = _bit_gather(mask)
        self.mul = u(m)
        bits = [b for b in range(64) if mask >> b & 1]
        self.table = np.zeros(1 << (64 - self.shift), dtype=np.bool_)
        f = getattr(ref, name)
        for j in range(1 << len(bits)):
            v = sum(1 << bits[i] for i in range(len(bits)) if j >> i & 1)
            self.table[((v * m) & (2**64 - 1)) >> self.shift] = f(CFG, v)

    def block(self, s, out, t64):
        np.bitwise_and(s, self.mask, out=t64)
        np.multiply(t64, self.mul, out=t64)
        np.right_shift(t64, u(self.shift), out=t64)
        np.take(self.table, t64.view(np.intp), out=out, mode="clip")

    def __call__(self, s, out, t64):
        blocks(self.block, (s, out), (t64,))
        return out


def _present_block(s, out, t64):
    np.bitwise_and(s, u(1 << 11), out=t64)
    np.not_equal(t64, u(0), out=out)


def _mmio_block(s, out, t64):
    np.bitwise_and(s, u(CFG.mmio_mask), out=t64)
    np.equal(t64, u(CFG.mmio_value), out=out)


NUMPY_PRED = {
    "is_shadow_present_pte": lambda s, o, t: blocks(_present_block, (s, o), (t,)),
    "spte_needs_atomic_update": TablePredicate(
        "spte_needs_atomic_update", 2 | (3 << 52) | CFG.mmu_writable_mask | CFG.host_writable_mask
        | CFG.dirty_mask),
    "is_mmio_spte": lambda s, o, t: blocks(_mmio_block, (s, o), (t,)),
}


@pytest.mark.parametrize("pred", sorted(NUMPY_PRED))
def test_predicate(benchmark, sptes, pred):
    out, out1, outn = (np.empty(sptes.shape, np.bool_) for _ in range(3))
    t64 = tmp(U)
    f = getattr(ref, pred)
    sample = [int(x) for x in sptes[:REF_N]]

    def check(r):
        assert_same(r["core"], r["alloc"])
        assert_same(r["core1t"], r["alloc"])
        assert_same(outn, r["alloc"])
        assert r["reference"] == r["alloc"][:len(sample)].tolist()
    interleaved(benchmark, f"spte.{pred} 16M", {
        "core": lambda: S.predicate_batch(CFG, pred, sptes, out=out),
        "core1t": lambda: S.predicate_batch(CFG, pred, sptes, out=out1, threads=1),
        "alloc": lambda: S.predicate_batch(CFG, pred, sptes),
        "memcpy": same_traffic_copy(8, 1),
        "numpy": lambda: NUMPY_PRED[pred](sptes, outn, t64),
        "reference": (lambda: [f(CFG, s) for s in sample], len(sample)),
    }, check=check, targets=ENCODE_TARGETS, in_bytes=8, out_bytes=1)


# --------------------------------------------------------------------- decode
class NumpyDecode:
    """numpy: decode_batch for an EPT v6.19 config at level 1, field by field into the
    structured output (``out=`` views), in cache-sized blocks."""

    def __init__(self, c=CFG, n=None):
        self.c = c
        self.rsvd = np.array(c.rsvd_bits_mask, dtype=U).reshape(2, 5)[:, 0].copy()
        self.t = [tmp(U, n or CHUNK) for _ in range(2)]
        self.b = [tmp(np.bool_, n or CHUNK) for _ in range(8)]

    def _bit(self, s, mask, out):
        np.bitwise_and(s, u(mask), out=self.t[0][:s.size])
        np.not_equal(self.t[0][:s.size], u(0), out=out)
        return out

    def _field(self, s, shift, mask, out):
        t = self.t[0][:s.size]
        np.right_shift(s, u(shift), out=t)
        np.bitwise_and(t, u(mask), out=t)
        np.copyto(out, t, casting="unsafe")

    def block(self, s, o):
        c, n = self.c, s.size
        t, t1 = self.t[0][:n], self.t[1][:n]
        w, x, r, mmuw, hw, d, ad_en, b = (a[:n] for a in self.b)
        o["spte"] = s
        np.bitwise_and(s, u(c.base_addr_mask), out=t)
        np.right_shift(t, u(12), out=o["pfn"])
        present = self._bit(s, 1 << 11, o["p_shadow_present"])
        np.bitwise_and(s, u(c.mmio_mask), out=t)
        mmio = np.equal(t, u(c.mmio_value), out=o["p_mmio"])
        frozen = np.equal(s, u(c.frozen_value), out=o["p_frozen"])
        np.equal(s, u(c.profile.nonpresent_value), out=b)
        kind = o["kind"]
        kind[...] = 4
        np.copyto(kind, 0, where=b)
        np.copyto(kind, 1, where=present)
        np.copyto(kind, 2, where=mmio)
        np.copyto(kind, 3, where=frozen)
        self._field(s, 52, 3, o["ad_type"])
        self._field(s, 3, 7, o["memtype"])
        self._field(s, 6, 1, o["ipat"])
        self._bit(s, 2, w)
        self._bit(s, 4, x)
        self._bit(s, c.user_mask, r)
        acc = o["access"]
        np.left_shift(r, 2, out=acc, dtype=np.uint8)
        np.left_shift(w, 1, out=o["saved_rx"], dtype=np.uint8)     # saved_rx as scratch
        np.bitwise_or(acc, o["saved_rx"], out=acc)
        np.bitwise_or(acc, x, out=acc, dtype=np.uint8)
        self._field(s, 54, 5, o["saved_rx"])
        o["level"] = 1
        self._bit(s, c.mmu_writable_mask, mmuw)
        self._bit(s, c.host_writable_mask, hw)
        self._bit(s, c.dirty_mask, d)
        np.bitwise_and(s, u(3 << 52), out=t)
        np.not_equal(t, u(1 << 52), out=ad_en)
        self._bit(s, 0x80, o["p_large"])
        o["p_last"] = True
        o["p_executable"] = x
        o["p_writable"] = w
        o["p_mmu_writable"] = mmuw
        o["p_host_writable"] = hw
        self._bit(s, c.accessed_mask, o["p_accessed"])
        o["p_dirty"] = d if c.profile.has_is_dirty_spte else False   # v6.13+: no is_dirty_spte
        o["p_ad_enabled"] = ad_en
        self._bit(s, 3 << 52, o["p_ad_need_write_protect"])
        np.bitwise_and(s, u(7), out=t)
        np.equal(t, u(0), out=b)
        np.greater(b, ad_en, out=o["p_access_track"])            # ~ad_en & (s & 7) == 0
        at = o["p_needs_atomic_update"]                          # (~w & mmuw) | ~ad_en | (w & ~d)
        np.greater(mmuw, w, out=at)
        np.logical_or(at, np.logical_not(ad_en, out=b), out=at)
        np.logical_or(at, np.greater(w, d, out=b), out=at)
        inv = o["p_writable_invariants_ok"]                      # mmuw ? hw : ~w
        np.logical_not(w, out=inv)
        np.copyto(inv, hw, where=mmuw)
        np.bitwise_and(s, u(0x3F), out=t)
        np.right_shift(u(c.bad_mt_xwr), t, out=t)
        np.bitwise_and(t, u(1), out=t)
        np.right_shift(s, u(7), out=t1)
        np.bitwise_and(t1, u(1), out=t1)
        np.take(self.rsvd, t1.view(np.intp), out=t1, mode="clip")
        np.bitwise_and(t1, s, out=t1)
        np.bitwise_or(t, t1, out=t)
        np.not_equal(t, u(0), out=o["p_rsvd"])
        ve = o["p_ept_ve_possible"]                              # !(s & bit 63) && (s & 7) != 6
        np.bitwise_and(s, u((1 << 63) | 7), out=t)
        np.less(t, u(1 << 63), out=ve)
        np.not_equal(t, u(6), out=b)
        np.logical_and(ve, b, out=ve)

    def __call__(self, s, out):
        blocks(self.block, (s, out))
        return out


NUMPY_DECODE = NumpyDecode()


class NumpyDecodeTable:
    """numpy: decode_batch as a table lookup.  Every output byte from 16 on (kind, AD type,
    memtype, IPAT, access, saved R/X, level, the predicates) depends only on SPTE bits 0-11,
    52-58 and 63, except three whole-value rules handled separately: the reserved-PA bits of
    is_rsvd_spte, and the frozen / non-present values (exact compares, patched when present).
    Index = bits 0-11 | bits 52-58 << 12 | bit 63 << 19: one take of the 32 bytes from a
    2^20-row table built with NumpyDecode (bit 12 set so that no row is a whole-value match),
    then the spte and pfn fields, and the rare rows with reserved-PA bits or a whole-value
    match patched."""

    def __init__(self, c=CFG):
        rs = np.array(c.rsvd_bits_mask, dtype=U).reshape(2, 5)[:, 0]
        assert rs[0] == rs[1] and not int(rs[0]) & ~(((1 << 52) - 1) ^ ((1 << 12) - 1)), \
            "level-1 reserved bits are PA bits for both page sizes"
        self.c, self.rsvd = c, u(rs[0])
        k = np.arange(1 << 20, dtype=U)
        v = (k & u(0xFFF)) | ((k >> u(12) & u(0x7F)) << u(52)) | ((k >> u(19)) << u(63)) | u(1 << 12)
        rows = NumpyDecode(c, n=v.size)(v, np.zeros(v.size, S.DECODE_DTYPE))
        # numpy's take has fast copies for 32-byte items: gather bytes 16..47 as one 32-byte
        # item into a cache-sized buffer, then copy them into the output rows
        self.rest = np.dtype([("spte", "<u8"), ("pfn", "<u8"), ("rest", "V32")])
        self.table = rows.view(self.rest)["rest"].copy()
        self.r = tmp(self.table.dtype)
        self.full = NumpyDecode(c)
        self.t = [tmp(U) for _ in range(2)]
        self.b = tmp(np.bool_)

    def block(self, s, o):
        n = s.size
        t, t1, b = self.t[0][:n], self.t[1][:n], self.b[:n]
        np.right_shift(s, u(52), out=t)                  # bits 52..63
        np.right_shift(t, u(4), out=t1)
        np.bitwise_and(t1, u(0x80), out=t1)              # bit 63 -> 7
        np.bitwise_and(t, u(0x7F), out=t)                # bits 52..58 -> 0..6
        np.bitwise_or(t, t1, out=t)
        np.left_shift(t, u(12), out=t)
        np.bitwise_and(s, u(0xFFF), out=t1)
        np.bitwise_or(t, t1, out=t)
        r = self.r[:n]
        np.take(self.table, t.view(np.intp), out=r, mode="clip")
        np.copyto(o.view(self.rest)["rest"], r)
        o["spte"] = s
        np.bitwise_and(s, u(self.c.base_addr_mask), out=t)
        np.right_shift(t, u(12), out=o["pfn"])
        np.bitwise_and(s, self.rsvd, out=t)
        if t.any():                                      # reserved PA bits set: is_rsvd_spte
            o["p_rsvd"][np.flatnonzero(t)] = True
        for value in (self.c.frozen_value, self.c.profile.nonpresent_value):
            np.equal(s, u(value), out=b)
            if b.any():                                  # whole-value matches: decode them fully
                i = np.nonzero(b)[0]
                o[i] = self.full(s[i], np.zeros(i.size, S.DECODE_DTYPE))

    def __call__(self, s, out):
        blocks(self.block, (s, out))
        return out




def _ref_decode(sample):
    names = [n for n, (_, _, feat) in S.PREDICATES.items() if not feat or getattr(CFG.profile, feat)]
    out = []
    for s in sample:
        row = []
        for name in names:
            f = getattr(ref, name)
            row.append(f(CFG, s, 1) if S.PREDICATES[name][1] else f(CFG, s))
        out.append((ref.spte_to_pfn(CFG, s), row))
    return out


def test_decode(benchmark, sptes):
    out, out1, outn = (np.zeros(sptes.shape, S.DECODE_DTYPE) for _ in range(3))
    numpy_decode = NumpyDecodeTable()
    sample = [int(x) for x in sptes[:max(1, REF_N // 10)]]
    cases = {
        "core": lambda: S.decode_batch(CFG, sptes, out=out),
        "core1t": lambda: S.decode_batch(CFG, sptes, out=out1, threads=1),
        "alloc": lambda: S.decode_batch(CFG, sptes),
        "memcpy": same_traffic_copy(8, S.DECODE_DTYPE.itemsize),
        "numpy": lambda: numpy_decode(sptes, outn),
        "reference": (lambda: _ref_decode(sample), len(sample)),
    }
    targets = [{"subject": "core1t", "vs": "memcpy", "min": 0.5},
               {"subject": "core1t", "vs": "numpy", "min": 3.0}]
    # The levels below this CPU's: "avx2" is what a CPU without AVX-512 runs (the goal
    # for such machines), "portable" what one without AVX2 runs (plain C loops).
    lower = [lv for lv in isa.supported_levels() if isa.LEVELS[lv] < isa.LEVELS[isa.cpu_level()]]
    outs = {lv: np.zeros(sptes.shape, S.DECODE_DTYPE) for lv in lower}
    for lv in lower:
        cases[lv] = (lambda c, o: lambda: S.decode_batch(c, sptes, out=o, threads=1))(CFG._isa_copy(lv), outs[lv])
        targets += [{"subject": lv, "vs": "memcpy", "min": 0.5}, {"subject": lv, "vs": "numpy", "min": 3.0}]

    def check(r):
        for k in ("core", "core1t", "numpy", *lower):
            assert_same(r[k], r["alloc"])
        k = min(N, 4096)                 # the field-by-field formulation the table is built with
        assert_same(NUMPY_DECODE(sptes[:k], np.zeros(k, S.DECODE_DTYPE)), r["alloc"][:k])
        got = r["alloc"][:len(sample)]
        assert [int(p) for p in got["pfn"]] == [p for p, _ in r["reference"]]
    interleaved(benchmark, "spte.decode_batch 16M", cases, check=check, targets=targets,
                in_bytes=8, out_bytes=S.DECODE_DTYPE.itemsize, chunk=CHUNK,
                avx512=HAVE_AVX512)
