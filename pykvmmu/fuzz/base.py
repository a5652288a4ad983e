"""The fuzzing harness core: the byte-consuming input helper, the Disagreement error and
its checks, the target registry, the shared configuration pool and SPTE-word generators."""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError

U64 = (1 << 64) - 1
ENGINES = ("random", "hypothesis", "atheris")


# ---------------------------------------------------------------------- input helper
class FuzzInput:
    """Consume typed values from fuzzer bytes (little endian; zeros once exhausted)."""

    __slots__ = ("data", "pos", "features")

    def __init__(self, data: bytes):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError(f"data={data!r}: expected bytes, got {type(data).__name__}")
        self.data = bytes(data)
        self.pos = 0
        self.features: set = set()

    def remaining(self) -> int:
        return max(0, len(self.data) - self.pos)

    def take(self, n: int) -> bytes:
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b + bytes(n - len(b))

    def uint(self, bits: int) -> int:
        """An unsigned integer of ``bits`` bits."""
        nbytes = (bits + 7) >> 3
        return int.from_bytes(self.take(nbytes), "little") & ((1 << bits) - 1)

    def int_in(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]``."""
        span = hi - lo
        if span <= 0:
            return lo
        return lo + self.uint(span.bit_length() + 8) % (span + 1)

    def bool(self) -> bool:
        return bool(self.uint(8) & 1)

    def chance(self, k: int) -> builtins.bool:
        """True with probability about 1/k (for a random byte)."""
        return self.uint(8) % k == 0

    def pick(self, seq):
        return seq[self.int_in(0, len(seq) - 1)] if len(seq) > 1 else seq[0]

    def u64(self, specials=()) -> int:
        """A 64-bit word: uniform, small, one or two bits, all-ones-ish, or a special value."""
        k = self.uint(8) % 8
        if k <= 2:
            return self.uint(64)
        if k == 3:
            return self.uint(16)
        if k == 4:
            return 1 << self.int_in(0, 63)
        if k == 5:
            return (1 << self.int_in(0, 63)) | (1 << self.int_in(0, 63))
        if k == 6:
            return U64 ^ (1 << self.int_in(0, 63))
        return self.pick(list(specials)) if specials else self.uint(64)

    def bits_below(self, limit_bits: int) -> int:
        """A value of a random bit length up to ``limit_bits`` (small values often)."""
        n = self.int_in(0, limit_bits)
        return self.uint(n) if n else 0

    def feature(self, *label) -> None:
        """Report a behaviour (new ones guide the built-in engine)."""
        self.features.add(label)


class Disagreement(AssertionError):
    """The C core and the reference disagree, or an invariant does not hold."""


def check(cond, what: str, *details) -> None:
    if not cond:
        raise Disagreement(what + (": " + ", ".join(_fmt(d) for d in details) if details else ""))


def _fmt(v):
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return hex(v)
    return repr(v)


def expect_same(what: str, got, want, *details) -> None:
    if got != want:
        raise Disagreement(f"{what}: core {_fmt(got)} != reference {_fmt(want)}"
                           + ("; " + ", ".join(_fmt(d) for d in details) if details else ""))


def batch_len(fi: FuzzInput, n: int) -> int:
    """The length of a batch of ``n`` drawn values: ``n``, or (about 1 in 4) up to 200, the
    values repeated (``np.resize``), so the hand-written kernels' vector steps (8 to 64
    elements) and their tails run too."""
    return fi.int_in(n, 200) if fi.chance(4) else n


def isa_level(fi: FuzzInput) -> str:
    """One of the instruction-set levels this CPU supports (:mod:`pykvmmu.isa`), to cap the
    hand-written kernels at."""
    from ..isa import supported_levels
    return fi.pick(supported_levels())


_ISA_CFGS: dict = {}


def isa_cfg(fi: FuzzInput, cfg):
    """``cfg`` with its hand-written kernels capped at a level :func:`isa_level` draws (the
    copies are kept: the pool's configurations live as long as the process)."""
    key = (id(cfg), isa_level(fi))
    if key not in _ISA_CFGS:
        _ISA_CFGS[key] = cfg._isa_copy(key[1])
    return _ISA_CFGS[key]


def rep(a: np.ndarray, m: int) -> np.ndarray:
    """``np.resize(a, m)`` for a 1-D ``a`` (the values repeated to ``m`` elements), without
    its per-repeat cost on large ``m``."""
    return np.tile(a, -(-m // a.size))[:m]


def expect_same_batch(what: str, got: np.ndarray, want, *details) -> None:
    """Every element of a batch result against the reference's values for the drawn inputs
    (``want``, repeated as ``np.resize`` repeated the inputs)."""
    want = list(want)
    if got.dtype.kind in "uib" and want:      # the common case (agreement) in numpy
        try:
            if np.array_equal(got.reshape(-1), rep(np.array(want, dtype=got.dtype), got.size)):
                return
        except (OverflowError, TypeError, ValueError):
            pass
    vals = got.tolist()
    full = want * (len(vals) // len(want)) + want[:len(vals) % len(want)]
    if vals != full:
        i = next(i for i, (g, w) in enumerate(zip(vals, full)) if g != w)
        expect_same(f"{what}[{i}] of {len(vals)}", vals[i], full[i], *details)


# ---------------------------------------------------------------------- registry
@dataclass
class Target:
    name: str
    fn: Callable[[FuzzInput], None]
    doc: str
    stateful: bool = False
    max_len: int = 256
    engines: tuple = ENGINES

    def __call__(self, data: bytes) -> set:
        fi = FuzzInput(data)
        self.fn(fi)
        return fi.features


TARGETS: dict = {}


def target(name: str, *, stateful: bool = False, max_len: int = 256):
    def deco(fn):
        doc = " ".join((fn.__doc__ or "").split())
        TARGETS[name] = Target(name, fn, doc, stateful, max_len)
        return fn
    return deco


class UnknownTarget(InputError, KeyError):
    """A fuzz target name that is not one of TARGETS (also a KeyError, as before)."""

    def __str__(self) -> str:
        return self.args[0]


def get_target(name) -> "Target":
    """The target called ``name``; UnknownTarget (naming the known ones) otherwise."""
    if not isinstance(name, str) or name not in TARGETS:
        raise UnknownTarget(f"target={name!r}: unknown; known: {', '.join(TARGETS)}")
    return TARGETS[name]


# ---------------------------------------------------------------------- shared config pool
_CONFIGS: list = []


def _configs():
    """Every preset of every profile, plus NX-hugepage, L1TF, SME and no-caching variants."""
    if not _CONFIGS:
        from ..config import MmuConfig
        from ..profile import PROFILES
        from ..errors import ConfigError
        out = list(MmuConfig.all_presets())
        for p in PROFILES:
            variants = [lambda n=n: MmuConfig.preset(n, profile=p, nx_huge_pages=True)
                        for n in ("npt", "npt-sme", "ept", "ept-noad", "ept-xo", "shadow")]
            variants += [
                lambda: MmuConfig.ept(profile=p, ignore_guest_pat=False, cache_bits=44, phys_bits=40,
                                      maxphyaddr=46),
                lambda: MmuConfig.npt(profile=p, cache_bits=44, phys_bits=39, maxphyaddr=46),
                lambda: MmuConfig.npt(profile=p, mmio_caching=False, maxphyaddr=52),
                lambda: MmuConfig.ept(profile=p, ad=False, exec_only=True, maxphyaddr=39)]
            for mk in variants:
                try:
                    out.append(mk())
                except ConfigError:
                    pass            # a variant the era does not have
        _CONFIGS.extend(out)
    return _CONFIGS


def _cid(cfg) -> str:
    return (f"{cfg.profile.name}-{cfg.mode}{'-xo' if cfg.exec_only else ''}"
            f"{'' if cfg.ad_enabled else '-noad'}{'-nx' if cfg.nx_huge_pages else ''}"
            f"{'-l1tf' if cfg.nonpresent_or_rsvd_mask else ''}{'' if cfg.mmio_caching else '-nocache'}"
            f"-m{cfg.maxphyaddr}")


# ---------------------------------------------------------------------- target: spte
def _mk_kwargs(fi: FuzzInput) -> dict:
    return dict(level=fi.int_in(1, 5), pte_access=fi.int_in(0, 7),
                prefetch=fi.chance(3), synchronizing=fi.chance(3), host_writable=not fi.chance(4),
                host_mmio=fi.chance(5), ad_disabled=fi.pick((None, False, True)),
                ad_wrprot_only=fi.chance(4), unsync_fails=fi.chance(3),
                nx_huge_pages=fi.pick((None, False, True)),
                memtype=fi.pick((None, None, 0x00, 0x30, 0x70, 0x08, 0x78)))


def _pfn(fi: FuzzInput, cfg) -> int:
    return fi.bits_below(cfg.max_pfn.bit_length()) & cfg.max_pfn


def _spte_word(fi: FuzzInput, cfg) -> int:
    """Raw words, the era's special values, and realistic SPTEs (maybe aged or bit-flipped)."""
    from ..ref import spte as R
    k = fi.uint(8) % 10
    if k <= 2:
        return fi.u64()
    if k == 3:
        return fi.pick([0, cfg.profile.nonpresent_value, cfg.profile.frozen_value or 0,
                        cfg.mmio_value, cfg.mmio_value | (1 << 11), U64])
    s, _ = R.make_spte(cfg, _pfn(fi, cfg), **_mk_kwargs(fi))
    if fi.bool():
        s = R.mark_spte_for_access_track(cfg, s)
    if k >= 8:
        s ^= 1 << fi.int_in(0, 63)
    return s


_BIT = lambda n: 1 << n  # noqa: E731

