"""Fuzzing harness: byte-driven targets that run the C core and the pure-Python reference
side by side and check bit-for-bit agreement and the engines' invariants.

A *target* is a function ``f(data: bytes)`` that turns fuzzer bytes into a valid call
sequence through :class:`FuzzInput` (a small byte-consuming helper in the spirit of
atheris' ``FuzzedDataProvider``; exhausted input reads as zeros, so every byte string is a
valid input).  It returns normally when everything agrees and raises :class:`Disagreement`
(or any other exception: a crash) otherwise.  ``PykvmmuError`` escaping a target is a bug
too: targets only produce inputs whose validity they know.

Three engines drive the same targets:

* ``random`` (built in, always available): a mutational engine over the seed corpus with
  cheap feedback (each target reports *features*, e.g. which rule fired or which
  configuration it ran; an input that shows a new feature joins the corpus);
* ``hypothesis``: ``st.binary()`` fed to the target, hypothesis shrinking a failure (the
  default for the stateful targets ``rmp`` and ``vm``);
* ``atheris``: coverage-guided libFuzzer (``pip install 'pykvmmu[fuzz]'``; see fuzz/README.md
  for the instrumented build of the C core).

A failure is shrunk (truncate, drop chunks, zero bytes while it still fails the same way)
and written as a raw bytes file; ``pykvmmu fuzz --replay FILE`` replays it.
"""
from __future__ import annotations

import hashlib
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import InputError

__all__ = ["FuzzInput", "Disagreement", "Target", "TARGETS", "target", "run_one", "Failure",
           "shrink", "fuzz_random", "fuzz_hypothesis", "fuzz_atheris", "replay", "corpus_dir",
           "load_corpus", "target_for_file", "ENGINES"]

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

    def chance(self, k: int) -> bool:
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


# ---------------------------------------------------------------------- shared config pool
_CONFIGS: list = []


def _configs():
    """Every preset of every profile, plus NX-hugepage, L1TF, SME and no-caching variants."""
    if not _CONFIGS:
        from .config import MmuConfig
        from .profile import PROFILES
        from .errors import ConfigError
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
    from .ref import spte as R
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


@target("spte")
def fuzz_spte(fi: FuzzInput) -> None:
    """SPTE engine: make_spte / predicates / decode / access tracking / split / collapse /
    non-leaf / TLB-flush rule, scalar and batch C core vs pykvmmu.ref.spte, plus the
    invariants of spte-mmio.md section 5."""
    from . import spte as S
    from .ref import spte as R
    cfgs = _configs()
    cfg = cfgs[fi.int_in(0, len(cfgs) - 1)]
    op = fi.int_in(0, 6)
    fi.feature("spte", op, cfg.profile.name, cfg.mode)
    cid = _cid(cfg)
    if op == 0:                                     # make_spte, scalar and batch
        pfn = _pfn(fi, cfg)
        kw = _mk_kwargs(fi)
        old = _spte_word(fi, cfg) if fi.bool() else None
        r = S.make_spte(cfg, pfn, old_spte=old, **kw)
        want = R.make_spte(cfg, pfn, old_spte=old, **kw)
        expect_same("make_spte", (r.spte, r.wrprot), want, cid, pfn, kw, old)
        expect_same("make_spte warnings", r.warnings,
                    R.make_spte_warnings(cfg, r.spte, kw["level"], kw["pte_access"]), cid)
        s = r.spte
        fi.feature("spte.make", r.wrprot, r.warnings, kw["level"] > 1)
        if cfg.profile.mmu_present_bit11:
            check(s & _BIT(11), "make_spte output lacks MMU-present bit 11", cid, s)
        check(S.check_spte_writable_invariants(cfg, s), "make_spte broke the writable invariants",
              cid, s, kw)
        check(S.spte_to_pfn(cfg, s) == pfn, "spte_to_pfn(make_spte(pfn)) != pfn", cid, pfn, s)
        if cfg.profile.mmu_present_bit11:
            # v5.10-5.12 (no MMU-present bit): an exec-only EPT SPTE with no access, pfn 0
            # and memtype UC is the word 0, which that era's is_shadow_present_pte calls
            # non-present; both the core and the reference reproduce it.
            check(S.is_shadow_present_pte(cfg, s), "make_spte output is not shadow-present", cid, s)
        if r.wrprot:
            check(not s & _BIT(1), "wrprot but W set", cid, s)
        n = fi.int_in(1, 4)
        pfns = [pfn] + [_pfn(fi, cfg) for _ in range(n - 1)]
        b = S.make_spte_batch(cfg, np.array(pfns, np.uint64), old_spte=old, **kw)
        for i, p in enumerate(pfns):
            expect_same(f"make_spte_batch[{i}]", int(b[i]),
                        R.make_spte(cfg, p, old_spte=old, **kw)[0], cid, p, kw)
    elif op == 1:                                   # predicates: scalar, batch, decode
        n = fi.int_in(1, 6)
        words = [_spte_word(fi, cfg) for _ in range(n)]
        levels = [fi.int_in(1, 5) for _ in range(n)]
        arr = np.array(words, np.uint64)
        lv = np.array(levels, np.uint8)
        dec = S.decode_batch(cfg, arr, lv)
        for name, (_num, needs_level, feat) in S.PREDICATES.items():
            if feat and not getattr(cfg.profile, feat):
                continue
            got = S.predicate_batch(cfg, name, arr, lv)
            for i, (s, level) in enumerate(zip(words, levels)):
                want = R.predicate(cfg, name, s, level)
                expect_same(f"{name} batch", bool(got[i]), want, cid, s, level)
                if i == 0:
                    expect_same(f"{name} scalar", S.predicate(cfg, name, s, level), want, cid, s, level)
                fld = "p_" + S._FIELD[name]
                if name not in ("is_dirty_spte", "is_ept_ve_possible"):
                    expect_same(f"decode_batch.{fld}", bool(dec[fld][i]), want, cid, s, level)
        for i, (s, level) in enumerate(zip(words, levels)):
            check(S.is_last_spte(cfg, s, level) == (level == 1 or bool(s & _BIT(7))),
                  "is_last_spte rule", cid, s, level)
            expect_same("decode_batch.pfn", int(dec["pfn"][i]), R.spte_to_pfn(cfg, s), cid, s)
            expect_same("spte_to_pfn", S.spte_to_pfn(cfg, s), R.spte_to_pfn(cfg, s), cid, s)
            kind = S.KINDS[int(dec["kind"][i])]
            fi.feature("spte.kind", kind)
            if kind == "present":
                check(dec["p_shadow_present"][i], "kind present but not shadow-present", cid, s)
            if kind == "mmio":
                check(dec["p_mmio"][i], "kind mmio but not is_mmio_spte", cid, s)
        rec = S.decode(cfg, words[0], levels[0])
        check(str(rec), "decode() printed nothing")
        for v in (cfg.profile.nonpresent_value, cfg.profile.frozen_value):
            if v is not None:
                check(not S.is_shadow_present_pte(cfg, v) and not S.is_mmio_spte(cfg, v),
                      "FROZEN_SPTE / SHADOW_NONPRESENT_VALUE is present or MMIO", cid, v)
    elif op == 2:                                   # access tracking
        n = fi.int_in(1, 4)
        words = [_spte_word(fi, cfg) for _ in range(n)]
        arr = np.array(words, np.uint64)
        marked = S.access_track_batch(cfg, arr)
        restored = S.access_track_batch(cfg, arr, restore=True)
        for i, s in enumerate(words):
            m = S.mark_spte_for_access_track(cfg, s)
            expect_same("mark_spte_for_access_track", m, R.mark_spte_for_access_track(cfg, s), cid, s)
            expect_same("access_track_batch(mark)", int(marked[i]), m, cid, s)
            rs = S.restore_acc_track_spte(cfg, s)
            expect_same("restore_acc_track_spte", rs, R.restore_acc_track_spte(cfg, s), cid, s)
            expect_same("access_track_batch(restore)", int(restored[i]), rs, cid, s)
            check(S.mark_spte_for_access_track(cfg, m) == m, "mark is not idempotent", cid, s, m)
            ad_disabled = (s >> 52) & 3 == 1
            fi.feature("spte.mark", ad_disabled, m == s)
            if not ad_disabled:
                check(m == s & ~cfg.accessed_mask, "mark of an AD-enabled SPTE only clears A", cid, s)
            elif cfg.acc_track_mask and s & 7 and S.is_shadow_present_pte(cfg, s) \
                    and not s & (_BIT(54) | _BIT(56)):
                a = cfg.accessed_mask if cfg.profile.ad_always else 0
                check(S.restore_acc_track_spte(cfg, m) == s & ~(_BIT(1) | a),
                      "restore(mark(s)) != s & ~(W|A)", cid, s, m)
                check(S.is_access_track_spte(cfg, m), "mark(s) is not access-tracked", cid, s, m)
    elif op == 3:                                   # split a huge SPTE
        if not cfg.profile.has_make_small_spte:
            return
        child = fi.int_in(1, 4)
        kw = _mk_kwargs(fi)
        kw["level"] = child + 1
        pfn = _pfn(fi, cfg) & ~((1 << (9 * child)) - 1)
        h, _ = R.make_spte(cfg, pfn, **kw)
        if fi.bool():
            h = R.mark_spte_for_access_track(cfg, h)
        h |= _BIT(7) | (_BIT(11) if cfg.profile.mmu_present_bit11 else 0)
        idx = fi.int_in(0, 511)
        ra = fi.int_in(0, 7)
        nx = fi.pick((None, False, True))
        small = S.make_small_spte(cfg, h, child, idx, ra, nx)
        expect_same("make_small_spte", small, R.make_small_spte(cfg, h, child, idx, ra, nx),
                    cid, h, child, idx, ra, nx)
        want_pfn = S.spte_to_pfn(cfg, h) + (idx << (9 * (child - 1)))
        if not (want_pfn << 12) & ~cfg.base_addr_mask:     # the child's PA exists on this host
            check(S.spte_to_pfn(cfg, small) == want_pfn,
                  "spte_to_pfn(make_small_spte(H, i)) != pfn(H) + i * pages", cid, h, child, idx, small)
        kids = S.make_small_spte_batch(cfg, np.array([h], np.uint64), child, None, ra, nx)
        expect_same("make_small_spte_batch[idx]", int(kids[idx]), small, cid, h, idx)
        fi.feature("spte.split", child, bool(small & _BIT(7)))
        if cfg.profile.has_make_huge_spte and child + 1 in (2, 3):
            huge = S.make_huge_spte(cfg, small, child + 1, nx)
            expect_same("make_huge_spte", huge, R.make_huge_spte(cfg, small, child + 1, nx),
                        cid, small, child + 1)
            base = (S.spte_to_pfn(cfg, h)) & ~((1 << (9 * child)) - 1)
            check(S.spte_to_pfn(cfg, huge) == base, "make_huge_spte(make_small_spte(H)) lost H's PA",
                  cid, h, small, huge)
    elif op == 4:                                   # collapse an arbitrary small SPTE
        if not cfg.profile.has_make_huge_spte:
            return
        s, _ = R.make_spte(cfg, _pfn(fi, cfg), **_mk_kwargs(fi))
        level = fi.int_in(2, 3)
        nx = fi.pick((None, False, True))
        got = S.make_huge_spte(cfg, s, level, nx)
        expect_same("make_huge_spte", got, R.make_huge_spte(cfg, s, level, nx), cid, s, level)
        b = S.make_huge_spte_batch(cfg, np.array([s], np.uint64), level, nx)
        expect_same("make_huge_spte_batch", int(b[0]), got, cid, s)
    elif op == 5:                                   # non-leaf
        pa = _pfn(fi, cfg) << 12
        ad = fi.pick((None, False, True))
        v = S.make_nonleaf_spte(cfg, pa, ad)
        expect_same("make_nonleaf_spte", v, R.make_nonleaf_spte(cfg, pa, ad), cid, pa, ad)
        b = S.make_nonleaf_spte_batch(cfg, np.array([pa], np.uint64), ad)
        expect_same("make_nonleaf_spte_batch", int(b[0]), v, cid, pa)
        check(S.is_shadow_present_pte(cfg, v) and not S.is_large_pte(cfg, v),
              "non-leaf SPTE must be present and not large", cid, v)
    else:                                           # TLB-flush rule
        a, b = _spte_word(fi, cfg), _spte_word(fi, cfg)
        if fi.bool():
            b = a & ~(1 << fi.int_in(0, 63))
        got = S.leaf_spte_change_needs_tlb_flush(cfg, a, b)
        expect_same("leaf_spte_change_needs_tlb_flush", got,
                    R.leaf_spte_change_needs_tlb_flush(cfg, a, b), cid, a, b)
        fi.feature("spte.flush", got)


# ---------------------------------------------------------------------- target: config
@target("config")
def fuzz_config(fi: FuzzInput) -> None:
    """MmuConfig: presets with random host facts either raise ConfigError or give a
    configuration whose invariants hold; kvm_mmu_set_mmio_spte_mask vs pykvmmu.ref.mmio."""
    from . import mmio as M
    from . import spte as S
    from .config import MmuConfig
    from .errors import ConfigError, ProfileError
    from .profile import PROFILES
    from .ref import mmio as RM
    prof = fi.pick(list(PROFILES))
    name = fi.pick(MmuConfig.PRESETS)
    kw: dict = {"profile": prof}
    if fi.bool():
        kw["maxphyaddr"] = fi.int_in(30, 53)
    if fi.chance(3):
        kw["phys_bits"] = fi.int_in(30, 53)
    if fi.chance(3):
        kw["cache_bits"] = fi.int_in(30, 53)
    if fi.chance(4):
        kw["mmio_caching"] = False
    if fi.chance(4):
        kw["nx_huge_pages"] = True
    if name in ("npt", "npt-sme") and fi.chance(3):
        kw["sme_cbit"] = fi.int_in(30, 52)
    try:
        cfg = MmuConfig.preset(name, **kw)
    except (ConfigError, ProfileError) as e:
        fi.feature("config.refused", name, type(e).__name__, str(e).split(":")[0][:40])
        return
    fi.feature("config.ok", name, prof, cfg.mmio_caching, bool(cfg.nonpresent_or_rsvd_mask))
    cid = _cid(cfg)
    check(str(cfg), "str(MmuConfig) is empty")
    check(cfg.replace() == cfg, "replace() with no change is not equal", cid)
    check(not cfg.me_value & ~cfg.me_mask, "me_value outside me_mask", cid)
    check(not cfg.base_addr_mask & ~(((1 << 52) - 1) & ~0xFFF), "base_addr_mask outside bits 51:12", cid)
    if cfg.mmio_caching and not cfg.profile.mmio_special_tag and cfg.mode != "tdx":
        check(cfg.mmio_value & ~cfg.mmio_mask == 0, "mmio_value outside mmio_mask", cid)
    for v in (cfg.profile.nonpresent_value, cfg.profile.frozen_value):
        if v is not None:
            check(not S.is_shadow_present_pte(cfg, v) and not S.is_mmio_spte(cfg, v),
                  "FROZEN/NONPRESENT value is present or MMIO", cid, v)
    # kvm_mmu_set_mmio_spte_mask on this host: the library vs the reference
    value = fi.u64([cfg.mmio_value, 1 | _BIT(51), 6, 0])
    mask = value | (fi.u64() if fi.chance(2) else 0) if fi.bool() else fi.u64([0x7, _BIT(63) | 7])
    access = fi.uint(3) if not fi.chance(16) else fi.uint(33)
    allow = fi.pick((None, True, False))
    if cfg.profile.mmio_special_tag and allow is False:
        try:
            M.set_mmio_spte_mask(cfg, value, mask, access, allow_mmio_caching=allow)
        except ProfileError:
            fi.feature("config.setmask.v510-param-refused")
            return
        raise Disagreement("v5.10-era set_mmio_spte_mask accepted the mmio_caching parameter")
    try:
        rep = M.set_mmio_spte_mask(cfg, value, mask, access, allow_mmio_caching=allow)
    except ConfigError as e:
        check(access >> 32, "set_mmio_spte_mask refused a 32-bit access mask", cid, str(e))
        return
    check(not access >> 32, "access_mask wider than 32 bits accepted (BUG_ON)", cid, access)
    a = ("mmio_caching_disabled_by_parameter" not in cfg.mmio_fired) if allow is None else allow
    if cfg.profile.mmio_special_tag:
        a = True if allow is None else allow
    rv, rmask, rcaching, _ = RM.set_mmio_spte_mask(
        cfg.profile, value, mask, access, allow=a, r=cfg.nonpresent_or_rsvd_mask,
        lower=cfg.nonpresent_or_rsvd_lower_gfn_mask, allowed_check=cfg.profile.me_value_split)
    fi.feature("config.setmask", rcaching, tuple(rep.fired)[:2])
    if cfg.profile.mmio_special_tag and allow is False:
        return                                   # v5.10: the parameter is handled elsewhere
    expect_same("set_mmio_spte_mask (value, mask, caching)",
                (rep.value, rep.mask, rep.caching), (rv, rmask, rcaching), cid, value, mask, access)


# ---------------------------------------------------------------------- target: mmio
@target("mmio")
def fuzz_mmio(fi: FuzzInput) -> None:
    """MMIO SPTEs: make / decode (gfn, access, generation) / is_mmio / check / fault outcome /
    invalidation, scalar and batch vs pykvmmu.ref.mmio; round-trip invariants; the strict
    mask validator never crashes."""
    from . import mmio as M
    from . import spte as S
    from .ref import mmio as RM
    cfgs = _configs()
    cfg = cfgs[fi.int_in(0, len(cfgs) - 1)]
    cid = _cid(cfg)
    gmask = M.mmio_generation_mask(cfg)
    op = fi.int_in(0, 3)
    fi.feature("mmio", op, cfg.profile.name, cfg.mode, cfg.mmio_caching)
    if op == 0:
        n = fi.int_in(1, 5)
        rows = [(fi.bits_below(40), fi.int_in(0, 7), fi.u64([0, gmask, gmask + 1]) if fi.bool()
                 else fi.bits_below(20)) for _ in range(n)]
        sp = M.make_mmio_spte_batch(cfg, np.array([r[0] for r in rows], np.uint64),
                                    np.array([r[1] for r in rows], np.uint64),
                                    np.array([r[2] for r in rows], np.uint64))
        memgen = fi.u64([0, rows[0][2], rows[0][2] | _BIT(63)])
        for i, (gfn, acc, gen) in enumerate(rows):
            s = M.make_mmio_spte(cfg, gfn, acc, gen)
            expect_same("make_mmio_spte", s, RM.make_mmio_spte(cfg, gfn, acc, gen), cid, gfn, acc, gen)
            expect_same("make_mmio_spte_batch", int(sp[i]), s, cid, gfn, acc, gen)
            if cfg.mmio_caching:
                check(S.is_mmio_spte(cfg, s), "make_mmio_spte output is not MMIO", cid, s)
                check(not S.is_shadow_present_pte(cfg, s), "MMIO SPTE is shadow-present", cid, s)
            check(M.get_mmio_spte_generation(cfg, s) == gen & gmask, "generation round trip",
                  cid, gen, s)
            check(M.get_mmio_spte_access(cfg, s) == acc & cfg.mmio_access_mask, "access round trip",
                  cid, acc, s)
            lower = cfg.nonpresent_or_rsvd_lower_gfn_mask or (((1 << 52) - 1) & ~0xFFF)
            keep = (lower | cfg.nonpresent_or_rsvd_mask) >> 12
            if not (gfn << 12) & ~(lower | cfg.nonpresent_or_rsvd_mask):
                check(M.get_mmio_spte_gfn(cfg, s) == gfn & keep, "gfn round trip", cid, gfn, s)
            ok = M.check_mmio_spte(cfg, s, memgen)
            expect_same("check_mmio_spte", ok, RM.check_mmio_spte(cfg, s, memgen), cid, s, memgen)
            out = M.mmio_fault_outcome(cfg, s, memgen)
            expect_same("mmio_fault_outcome", out, RM.mmio_fault_outcome(cfg, s, memgen), cid, s, memgen)
            fi.feature("mmio.outcome", out)
    elif op == 1:
        n = fi.int_in(1, 6)
        words = [_spte_word(fi, cfg) if fi.bool() else fi.u64([cfg.mmio_value]) for _ in range(n)]
        g = fi.u64([0, gmask, _BIT(63)])
        arr = np.array(words, np.uint64)
        gfn_b = M.get_mmio_spte_gfn_batch(cfg, arr)
        acc_b = M.get_mmio_spte_access_batch(cfg, arr)
        gen_b = M.get_mmio_spte_generation_batch(cfg, arr)
        is_b = M.is_mmio_spte_batch(cfg, arr)
        chk_b = M.check_mmio_spte_batch(cfg, arr, g)
        out_b = M.mmio_fault_outcome_batch(cfg, arr, g)
        for i, s in enumerate(words):
            for what, got, want in (
                    ("get_mmio_spte_gfn", M.get_mmio_spte_gfn(cfg, s), RM.get_mmio_spte_gfn(cfg, s)),
                    ("get_mmio_spte_gfn_batch", int(gfn_b[i]), RM.get_mmio_spte_gfn(cfg, s)),
                    ("get_mmio_spte_access", M.get_mmio_spte_access(cfg, s), RM.get_mmio_spte_access(cfg, s)),
                    ("get_mmio_spte_access_batch", int(acc_b[i]), RM.get_mmio_spte_access(cfg, s)),
                    ("get_mmio_spte_generation", M.get_mmio_spte_generation(cfg, s),
                     RM.get_mmio_spte_generation(cfg, s)),
                    ("get_mmio_spte_generation_batch", int(gen_b[i]), RM.get_mmio_spte_generation(cfg, s)),
                    ("is_mmio_spte", S.is_mmio_spte(cfg, s), RM.is_mmio_spte(cfg, s)),
                    ("is_mmio_spte_batch", bool(is_b[i]), RM.is_mmio_spte(cfg, s)),
                    ("check_mmio_spte", M.check_mmio_spte(cfg, s, g), RM.check_mmio_spte(cfg, s, g)),
                    ("check_mmio_spte_batch", bool(chk_b[i]), RM.check_mmio_spte(cfg, s, g)),
                    ("mmio_fault_outcome", M.mmio_fault_outcome(cfg, s, g), RM.mmio_fault_outcome(cfg, s, g))):
                expect_same(what, got, want, cid, s, g)
            fi.feature("mmio.decode", RM.is_mmio_spte(cfg, s), RM.mmio_fault_outcome(cfg, s, g))
            expect_same("mmio_fault_outcome_batch", M.FAULT_OUTCOMES[int(out_b[i])],
                        RM.mmio_fault_outcome(cfg, s, g), cid, s, g)
    elif op == 2:
        nr = fi.pick((1, 2))
        gen = fi.u64([0, gmask, gmask + 1, gmask - 1]) & ~_BIT(63)
        got = M.kvm_mmu_invalidate_mmio_sptes(cfg, gen, nr)
        expect_same("kvm_mmu_invalidate_mmio_sptes", got, RM.kvm_mmu_invalidate_mmio_sptes(cfg, gen, nr),
                    cid, gen, nr)
        b = M.kvm_mmu_invalidate_mmio_sptes_batch(cfg, np.array([gen], np.uint64), nr)
        expect_same("kvm_mmu_invalidate_mmio_sptes_batch", bool(b[0]), got, cid, gen)
        fi.feature("mmio.inval", got)
    else:
        from .errors import PykvmmuError
        value = fi.u64([cfg.mmio_value, 6, 1 | _BIT(51)])
        mask = value | fi.u64() if fi.bool() else fi.u64([cfg.mmio_mask])
        try:
            v = M.mmio_mask_violations(cfg, value, mask)
        except PykvmmuError as e:
            fi.feature("mmio.validator.error", type(e).__name__)
            return
        fi.feature("mmio.validator", tuple(sorted({x.rule for x in v}))[:3])
        str(M.mmio_caching_off_reasons(cfg))


# ---------------------------------------------------------------------- target: role
@target("role")
def fuzz_role(fi: FuzzInput) -> None:
    """Role words: pack / unpack (scalar and batch, base and cpu role) per era vs
    pykvmmu.ref.role; hash_64 (three variants, any bit count) and hash_batch vs the reference."""
    from . import role as R
    from .ref import role as RR
    eras = list(R.ERAS)
    era = fi.pick(eras)
    e = R.get_era(era)
    op = fi.int_in(0, 3)
    fi.feature("role", op, era)
    if op == 0:
        vals = {f.name: fi.int_in(0, 5) if f.name == "level" else fi.uint(f.width)
                for f in e.base.fields}       # pack() refuses levels above 5
        w = R.pack(era, **vals)
        expect_same("pack", w, RR.pack_role(era, **vals), era, vals)
        expect_same("unpack(pack)", R.unpack(era, w).fields, vals, era, w)
        expect_same("ref unpack", RR.unpack_role(era, w), vals, era, w)
        rec = R.unpack_batch(era, np.array([w], np.uint32))
        expect_same("pack_batch(unpack_batch)", int(R.pack_batch(era, rec)[0]), w, era)
        check(str(R.unpack(era, w)), "str(Role) is empty")
        fi.feature("role.level", vals.get("level"))
    elif op == 1:
        n = fi.int_in(1, 6)
        words = [fi.uint(32) & (e.base.used_mask if not fi.chance(8) else 0xFFFFFFFF) for _ in range(n)]
        arr = np.array(words, np.uint32)
        bad = [w for w in words if w & ~e.base.used_mask]
        if bad:
            from .errors import PykvmmuError
            try:
                R.unpack_batch(era, arr)
            except PykvmmuError:
                fi.feature("role.strict_refused")
            else:
                raise Disagreement(f"unpack_batch(strict) accepted unused bits {bad[0]:#x} ({era})")
            rec = R.unpack_batch(era, arr, strict=False)
        else:
            rec = R.unpack_batch(era, arr)
        for i, w in enumerate(words):
            mw = w & e.base.used_mask
            got = {nm: int(rec[nm][i]) for nm in e.base.names}
            expect_same("unpack_batch", got, RR.unpack_role(era, mw), era, w)
        if not bad:
            check(np.array_equal(R.pack_batch(era, rec), arr), "pack_batch(unpack_batch(w)) != w", era)
    elif op == 2:
        if e.ext is None:
            return
        b = {f.name: fi.int_in(0, 5) if f.name == "level" else fi.uint(f.width)
             for f in e.base.fields}
        x = {f.name: fi.uint(f.width) for f in e.ext.fields}
        v = R.pack_cpu_role(era, b, x)
        expect_same("pack_cpu_role", v, RR.pack_cpu_role(era, b, x), era)
        cr = R.unpack_cpu_role(era, v)
        check(cr.base == R.pack(era, **b) and cr.ext == R.pack_ext(era, **x), "unpack_cpu_role", era, v)
        arr = np.array([v], np.uint64)
        check(np.array_equal(R.cpu_role_pack_batch(era, R.cpu_role_unpack_batch(era, arr)), arr),
              "cpu_role batch round trip", era, v)
    else:
        variant = fi.pick(("x86_64", "32bit", "pre-4.7"))
        bits = fi.int_in(1, 32)
        ref = {"x86_64": RR.hash_64, "32bit": RR.hash_64_32bit_host, "pre-4.7": RR.hash_64_pre_4_7}[variant]
        vals = [fi.u64() for _ in range(fi.int_in(1, 6))]
        out = R.hash_batch(np.array(vals, np.uint64), bits, variant)
        for i, v in enumerate(vals):
            want = ref(v, bits)
            expect_same("hash_64", R.hash_64(v, bits, variant), want, variant, bits, v)
            expect_same("hash_batch", int(out[i]), want, variant, bits, v)
            check(want < (1 << bits), "hash wider than bits", variant, bits, v)
        expect_same("kvm_page_table_hashfn", R.kvm_page_table_hashfn(vals[0]),
                    RR.kvm_page_table_hashfn(vals[0]), vals[0])
        fi.feature("role.hash", variant, bits)


# ---------------------------------------------------------------------- target: fault
_VM_TYPES = (0, 1, 2, 3, 4, 5)


@target("fault")
def fuzz_fault(fi: FuzzInput) -> None:
    """Private/shared fault classification: classify_batch (C) vs kvm_mmu_do_page_fault
    (Python) vs pykvmmu.ref.private, per VM type, GPAW and private ranges; decide() under
    every policy returns a well-formed decision."""
    from . import private as P
    from .ref import private as RP
    vt = fi.pick(_VM_TYPES)
    gpaw = fi.pick((52, 48))
    ranges = []
    g = 0
    for _ in range(fi.int_in(0, 4)):
        g += fi.int_in(0, 64)
        e = g + fi.int_in(1, 64)
        ranges.append((g, e))
        g = e
    n = fi.int_in(1, 6)
    gpas, ecs = [], []
    interesting_ec = [0, 1, 2, 3, P.PFERR_RSVD_MASK | 1, P.PFERR_GUEST_ENC_MASK,
                      P.PFERR_GUEST_ENC_MASK | 2, 1 << 48, 1 << 49, (1 << 48) | (1 << 49)]
    for _ in range(n):
        gpa = (fi.int_in(0, 300) << 12) | fi.uint(12) if fi.bool() else fi.u64()
        if fi.chance(3):
            gpa |= 1 << P.tdx_shared_gpa_bit(gpaw)
        gpas.append(gpa & U64)
        ecs.append(fi.pick(interesting_ec) | (fi.u64() if fi.chance(6) else 0))
    starts = np.array([s for s, _ in ranges], np.uint64)
    ends = np.array([e for _, e in ranges], np.uint64)
    og, oe, op, nsyn = P.classify_batch(vt, np.array(gpas, np.uint64), np.array(ecs, np.uint64),
                                        gpaw=gpaw, attrs=(starts, ends))
    shared_bit = P.tdx_shared_gpa_bit(gpaw)

    def priv(gfn):
        return any(s <= gfn < e for s, e in ranges)

    ctx = P.FaultContext(vm_type=vt, gpaw=gpaw, is_private=priv,
                         slot_kind=lambda gfn: (None, "plain", "gmem", "gmem_only")[gfn % 4])
    ncol = 0
    for i, (gpa, ec) in enumerate(zip(gpas, ecs)):
        want = RP.classify(vt, gpa, ec, shared_bit, ranges)
        got = (int(og[i]), int(oe[i]), bool(op[i]))
        expect_same("classify_batch", got, want[:3], vt, gpaw, gpa, ec, ranges)
        ncol += want[3]
        c = P.kvm_mmu_do_page_fault(ctx, gpa, ec)
        expect_same("kvm_mmu_do_page_fault", (c.gfn, c.error_code, c.kind == P.KVM_FAULT_PRIVATE),
                    want[:3], vt, gpa, ec)
        fi.feature("fault.classify", vt, want[2], want[3])
        for pol in P.POLICIES:
            d = P.decide(ctx, gpa, ec, pol)
            check(d.action in ("private", "shared", "gmem_shared", "noslot", "exit"),
                  "decide: unknown action", pol, d.action)
            check((d.exit is not None) == (d.action == "exit"), "decide: exit iff action exit", pol)
            fi.feature("fault.decide", vt, pol, d.outcome)
        str(P.decode_error_code(ec))
    expect_same("classify_batch synthetic collisions", nsyn, ncol, vt)


# ---------------------------------------------------------------------- target: rmp (stateful)
_RMP_NPFN = 2 * 512 + 37


@target("rmp", stateful=True, max_len=512)
def fuzz_rmp(fi: FuzzInput) -> None:
    """SEV-SNP RMP, stateful: a sequence of RMPUPDATE / PSMASH / PVALIDATE / RMPADJUST /
    lock toggles / host and guest checks on a small table, C core vs pykvmmu.ref.rmp after
    every step (return codes, exit info, every entry), failed instructions change nothing,
    and the architectural invariants of the table hold."""
    from .ref import rmp as ref
    from .rmp import BOOKKEEPING, Rc, RmpFlags, RmpTable
    npfn = _RMP_NPFN
    flags = fi.uint(8) & int(sum(f for f in RmpFlags))
    t = RmpTable(np.zeros(BOOKKEEPING + 16 * npfn, np.uint8), flags=flags)
    r = ref.RefRmp(npfn, flags)
    special = [0, 1, 2, 300, 511, 512, 513, 777, 1023, 1024, 1025, npfn - 1, npfn, npfn + 3]

    def pfn_any():
        if fi.chance(4):
            return fi.int_in(0, npfn + 8)
        return fi.pick(special)

    def pick_owned(pfn):
        owned = np.nonzero(t.entries[:, 0] & np.uint64(1))[0]
        if not fi.chance(4) and owned.size:
            return int(owned[fi.int_in(0, owned.size - 1)])
        return pfn

    def matched(pfn, size):
        if r.covered(pfn) and r.governing(pfn)[1]:
            return pfn - pfn % 512, 1
        return pfn, 0 if size == 1 else size

    def guest_args(pfn, own_asid, own_gfn, asid, gfn):
        if r.covered(pfn):
            g, in2m = r.governing(pfn)
            lo = r.e[g][0]
            if own_asid:
                asid = ref.field(lo, "asid")
            if own_gfn:
                gfn = ref.field(lo, "gpa") + (pfn % 512 if in2m else 0)
        return asid, gfn

    def compare(rc_c, rc_r, before, what):
        expect_same(f"{what} rc", int(rc_c), rc_r, flags)
        fi.feature("rmp", what, Rc(rc_r).name)
        mine = t.entries
        theirs = np.array(r.e, dtype=np.uint64)
        bad = np.nonzero((mine != theirs).any(axis=1))[0]
        check(bad.size == 0, f"{what}: entry differs from the reference",
              *(() if not bad.size else (int(bad[0]), mine[bad[0]].tolist(), theirs[bad[0]].tolist())))
        if rc_r != ref.SUCCESS:
            check(np.array_equal(before, mine), f"{what}: failed instruction changed the table")

    steps = 0
    while fi.remaining() and steps < 64:
        steps += 1
        op = fi.int_in(0, 5)
        if op == 0:
            pfn = pfn_any()
            gpa = fi.pick([0, 0x1000, 0x200000, 0x400000, 0x401000, 0x123, 1 << 51])
            assigned = fi.pick([0, 1, 1, 2])
            pagesize = fi.pick([0, 1, 1])
            immutable = fi.pick([0, 0, 0, 1])
            asid = fi.pick([0, 1, 2, 0x3FF, 0x400])
            if not fi.chance(4):
                assigned = min(assigned, 1)
                asid = (asid % 2 + 1) if assigned else 0
                gpa = (gpa >> 21 << 21) % (1 << 40)
            before = t.entries.copy()
            rc_c = t.rmpupdate(pfn, gpa=gpa, assigned=assigned, pagesize=pagesize,
                               immutable=immutable, asid=asid)
            compare(rc_c, r.rmpupdate(pfn, gpa, assigned, pagesize, immutable, asid), before, "rmpupdate")
        elif op == 1:
            pfn = pfn_any()
            heads = [h for h in range(0, npfn - 511, 512) if r.is_2m(h)]
            if fi.bool() and heads:
                pfn = fi.pick(heads)
            before = t.entries.copy()
            compare(t.psmash(pfn), r.psmash(pfn), before, "psmash")
        elif op == 2:
            pfn = pick_owned(pfn_any())
            own_asid, own_gfn = not fi.chance(4), not fi.chance(4)
            asid = fi.pick([0, 1, 2, 0x3FF, 0x400])
            gfn = fi.pick([0, 1, 0x200, 0x201])
            vmpl = fi.pick([0, 0, 0, 0, 1])
            size = fi.pick([0, 0, 1, 2])
            validate = fi.pick([0, 1, 1])
            size = size if size < 2 or own_gfn else 0
            if fi.bool():
                pfn, size = matched(pfn, size)
            if fi.chance(4):
                own_asid = own_gfn = True
                vmpl, validate = 0, 1
            asid, gfn = guest_args(pfn, own_asid, own_gfn, asid, gfn)
            before = t.entries.copy()
            c = t.pvalidate(pfn, asid=asid, gfn=gfn, size=size, validate=validate, vmpl=vmpl)
            rc_r, ei_r = r.pvalidate(pfn, asid, vmpl, gfn, size, validate)
            expect_same("pvalidate exitinfo", c.exitinfo, ei_r, pfn)
            compare(c.rc, rc_r, before, "pvalidate")
        elif op == 3:
            pfn = pick_owned(pfn_any())
            valid = np.nonzero(t.entries[:, 0] >> np.uint64(62) & np.uint64(1))[0]
            if fi.bool() and valid.size:
                pfn = int(valid[fi.int_in(0, valid.size - 1)])
            size = fi.pick([0, 1])
            if fi.bool():
                pfn, size = matched(pfn, size)
            own_asid, own_gfn = not fi.chance(4), not fi.chance(4)
            asid, gfn = guest_args(pfn, own_asid, own_gfn, fi.pick([0, 1, 2, 0x3FF, 0x400]),
                                   fi.pick([0, 0x200]))
            vmpl = fi.pick([0, 0, 0, 1, 3])
            tvmpl = fi.pick([0, 1, 1, 2, 3, 4])
            perms = fi.pick([0, 1, 3, 3, 0xF, 0x1F, 0x20])
            vmsa = fi.bool()
            before = t.entries.copy()
            c = t.rmpadjust(pfn, asid=asid, gfn=gfn, target_vmpl=tvmpl, perms=perms, size=size,
                            vmsa=vmsa, vmpl=vmpl)
            rc_r, ei_r = r.rmpadjust(pfn, asid, vmpl, gfn, size, tvmpl, perms, int(vmsa))
            expect_same("rmpadjust exitinfo", c.exitinfo, ei_r, pfn)
            compare(c.rc, rc_r, before, "rmpadjust")
        elif op == 4:
            pfn = pfn_any()
            lock = fi.bool()
            if r.covered(pfn):
                t.set_in_use(pfn, lock)
                r.e[pfn][0] = ref.put(r.e[pfn][0], "lock", int(lock))
        else:
            pfn = pick_owned(pfn_any())
            level, npt = fi.pick([1, 2, 3]), fi.pick([1, 2])
            kind, c_bit, snp = fi.int_in(0, 4), fi.bool(), fi.bool()
            vmpl, user, own = fi.int_in(0, 3), fi.bool(), fi.bool()
            h = t.host_check(pfn, level, user=user)
            expect_same("host_check", (int(h.check), h.error_code), r.host_check(pfn, level, user), pfn, level)
            asid, gfn = guest_args(pfn, own, own, 1, 0)
            g = t.guest_check(pfn, gfn, asid=asid, vmpl=vmpl, npt_level=npt, kind=kind, c_bit=c_bit,
                              snp_active=snp, user=user)
            expect_same("guest_check", (int(g.check), g.fault, g.error_code),
                        r.guest_check(pfn, gfn, asid, vmpl, npt, kind, c_bit, snp, user), pfn, gfn)
            fi.feature("rmp.check", g.check.name)
            if r.covered(pfn):
                expect_same("snp_lookup_rmpentry", t.snp_lookup_rmpentry(pfn), tuple(r.lookup(pfn)[:2]), pfn)
                arr = np.array([pfn], np.uint64)
                lb = t.lookup_batch(arr)
                check(lb is not None, "lookup_batch returned None")
            expect_same("page_state", int(t.page_state(pfn)), r.page_state(pfn), pfn)
    # architectural invariants of the final table
    lo = t.entries[:, 0]
    full = (npfn // 512) * 512
    blocks = lo[:full].reshape(-1, 512)
    assigned = (blocks & 1).astype(bool)
    head_2m = (blocks[:, 0] & 3) == 3
    check(assigned[head_2m, 1:].all(), "2M assigned entry with an unassigned 4K entry under it")
    count = (blocks[:, 0] >> np.uint64(3)) & np.uint64(0x1FF)
    small = ~head_2m
    check(np.array_equal(count[small], assigned[small, 1:].sum(axis=1)),
          "head sub-page count != assigned 4K entries")
    hv = (lo & np.uint64(1)) == 0
    check(not ((lo[hv] >> np.uint64(51)) & np.uint64(0x3FF)).any(), "hypervisor-owned entry with an ASID")
    check(not ((lo[hv] >> np.uint64(62)) & np.uint64(1)).any(), "hypervisor-owned entry validated")


# ---------------------------------------------------------------------- target: vm (stateful)
_VM_NPAGES = 2048
_VM_PLAIN = 0x10000


@target("vm", stateful=True, max_len=256)
def fuzz_vm(fi: FuzzInput) -> None:
    """The simulated confidential VM, stateful: faults (private/shared, write, reserved-bit),
    conversions, racing faults, punch holes, migrations, memory failures and memslot updates
    per VM type, with Vm.check() (every invariant) after every step."""
    from . import private as P
    from .errors import PykvmmuError
    from .vm import KVM_MEM_GUEST_MEMFD, Vm
    vm_type = fi.pick(("snp", "tdx", "sw_protected"))
    order = fi.pick((0, 9))
    vm = Vm(vm_type, folio_order=order)
    g = vm.create_guest_memfd(_VM_NPAGES << 12)
    vm.set_memory_region(0, 0, _VM_NPAGES << 12, flags=KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    vm.set_memory_region(1, _VM_PLAIN << 12, 64 << 12)
    plain = True

    def gfn_any():
        k = fi.uint(8) % 4
        if k <= 1:
            return fi.int_in(0, _VM_NPAGES - 1)
        if k == 2:
            return _VM_PLAIN + fi.int_in(0, 63)
        return 0x20000 + fi.int_in(0, 3)

    def gpa(gfn, private):
        a = gfn << 12
        if vm_type == "tdx" and not private:
            a |= 1 << 51
        return a

    steps = 0
    while fi.remaining() and steps < 40:
        steps += 1
        op = fi.int_in(0, 7)
        if op == 0:
            gfn, private, write, rsvd = gfn_any(), fi.bool(), fi.bool(), fi.chance(4)
            ec = (2 if write else 0) | (P.PFERR_RSVD_MASK | 1 if rsvd else 0)
            if private and vm_type == "snp":
                ec |= P.PFERR_GUEST_ENC_MASK
            o = vm.fault(gpa(gfn, private), ec)
            check(o.kind in ("mapped", "spurious", "emulate", "exit", "retry"), "fault kind", o.kind)
            if o.kind == "exit":
                check(o.exit.size == 4096 and o.exit.gpa == gfn << 12, "exit gpa/size", gfn, o.exit.gpa)
            fi.feature("vm.fault", vm_type, o.kind)
        elif op == 1:
            vm.convert(gfn_any(), fi.pick((1, 2, 16, 512)), fi.bool())
        elif op == 2:
            gfn, private = gfn_any(), fi.bool()
            ec = P.PFERR_GUEST_ENC_MASK if private and vm_type == "snp" else 0
            o = vm.fault(gpa(gfn, private), ec,
                         race=lambda: vm.convert(gfn, 1, not vm.is_private(gfn)))
            check(o.kind in ("retry", "exit", "emulate"), "racing fault kind", o.kind)
            fi.feature("vm.race", vm_type, o.kind)
        elif op == 3:
            index = fi.int_in(0, _VM_NPAGES - 1)
            n = fi.pick((1, 3, 512))
            vm.punch_hole(g, index << 12, min(n, _VM_NPAGES - index) << 12)
        elif op == 4:
            try:
                vm.migrate_gfn(fi.int_in(0, _VM_NPAGES - 1))
            except PykvmmuError:
                fi.feature("vm.migrate.refused")
        elif op == 5:
            try:
                g.memory_failure(fi.int_in(0, _VM_NPAGES - 1))
            except PykvmmuError:
                fi.feature("vm.poison.refused")
        elif op == 6:
            if plain:
                vm.set_memory_region(1, 0, 0)
            else:
                vm.set_memory_region(1, _VM_PLAIN << 12, 64 << 12)
            plain = not plain
        else:
            gfn = 0x20000 + fi.int_in(0, 3)
            try:
                vm.set_memory_region(2, gfn << 12, 4096)
            except PykvmmuError:
                vm.set_memory_region(2, 0, 0)
        vm.check()


# ---------------------------------------------------------------------- running one input
@dataclass
class Failure:
    """A failing input: its bytes, a signature (exception type and where it was raised),
    the message and the traceback."""

    data: bytes
    signature: tuple
    message: str
    tb: str = ""

    @property
    def kind(self) -> str:
        return "disagreement" if self.signature[0] == "Disagreement" else "crash"


def _signature(exc: BaseException) -> tuple:
    tb = traceback.extract_tb(exc.__traceback__)
    where = ""
    for fr in reversed(tb):
        if "pykvmmu" in fr.filename:
            where = f"{os.path.basename(fr.filename)}:{fr.lineno}"
            break
    head = str(exc).split(":")[0][:60] if isinstance(exc, Disagreement) else ""
    return (type(exc).__name__, where, head)


def run_one(t: Target, data: bytes):
    """Run ``t`` on ``data``; returns ``(features, None)`` or ``(None, Failure)``."""
    try:
        return t(data), None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every escape is a finding
        return None, Failure(bytes(data), _signature(e), f"{type(e).__name__}: {e}",
                             traceback.format_exc())


def shrink(t: Target, fail: Failure, budget_s: float = 10.0, max_execs: int = 5000) -> Failure:
    """Minimise a failing input while it fails with the same signature: truncate, drop
    chunks of halving size, then zero and decrement single bytes."""
    best = fail
    deadline = time.monotonic() + budget_s
    execs = 0

    def still(data: bytes):
        nonlocal execs
        execs += 1
        _, f = run_one(t, data)
        return f if f is not None and f.signature == fail.signature else None

    def out_of_budget():
        return execs >= max_execs or time.monotonic() > deadline

    changed = True
    while changed and not out_of_budget():
        changed = False
        data = best.data
        # truncation, largest cut first
        n = len(data)
        cut = n // 2
        while cut and not out_of_budget():
            f = still(best.data[:len(best.data) - cut])
            if f:
                best, changed = f, True
            else:
                cut //= 2
        # chunk removal
        size = max(1, len(best.data) // 2)
        while size and not out_of_budget():
            i = 0
            while i < len(best.data) and not out_of_budget():
                cand = best.data[:i] + best.data[i + size:]
                f = still(cand)
                if f:
                    best, changed = f, True
                else:
                    i += size
            size //= 2
        # byte simplification: zero, then smaller values
        for i in range(len(best.data)):
            if out_of_budget():
                break
            b = best.data[i]
            for v in (0, 1, b >> 1, b - 1):
                if 0 <= v < b:
                    cand = best.data[:i] + bytes([v]) + best.data[i + 1:]
                    f = still(cand)
                    if f:
                        best, changed = f, True
                        break
    return best


# ---------------------------------------------------------------------- corpus and files
def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UnknownTarget(InputError, KeyError):
    """A fuzz target name that is not one of TARGETS (also a KeyError, as before)."""

    def __str__(self) -> str:
        return self.args[0]


def get_target(name) -> "Target":
    """The target called ``name``; UnknownTarget (naming the known ones) otherwise."""
    if not isinstance(name, str) or name not in TARGETS:
        raise UnknownTarget(f"target={name!r}: unknown; known: {', '.join(TARGETS)}")
    return TARGETS[name]


def _budget(seconds, max_execs) -> None:
    import math
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
            not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"seconds={seconds!r}: must be a finite number of seconds >= 0")
    if max_execs is not None and (isinstance(max_execs, bool) or not isinstance(max_execs, int)
                                  or max_execs < 1):
        raise InputError(f"max_execs={max_execs!r}: must be None or an integer >= 1")


#: The seed corpus ships inside the package (package data), so an installed pykvmmu finds it.
SEED_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fuzz_corpus")


def corpus_dir(name: str, root: Optional[str] = None) -> str:
    """The corpus directory of target ``name`` under ``root`` (default: the shipped seed
    corpus, SEED_CORPUS); ``name=""`` is ``root`` itself when a root is given."""
    if name or root is None:
        get_target(name)
    return os.path.join(root or SEED_CORPUS, name)


def load_corpus(name: str, root: Optional[str] = None) -> list:
    d = corpus_dir(name, root)
    out = []
    if os.path.isdir(d):
        for fn in sorted(os.listdir(d)):
            p = os.path.join(d, fn)
            if os.path.isfile(p) and not fn.startswith("."):
                with open(p, "rb") as f:
                    out.append(f.read())
    return out


def target_for_file(path: str) -> Optional[str]:
    """The target a reproducer or corpus file belongs to: its parent directory if that is a
    target name, else the file name prefix before the first '-' or '.'."""
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if parent in TARGETS:
        return parent
    base = os.path.basename(path)
    for sep in ("-", "."):
        head = base.split(sep)[0]
        if head in TARGETS:
            return head
    return None


def write_reproducer(fail: Failure, name: str, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    h = hashlib.sha1(fail.data).hexdigest()[:12]
    path = os.path.join(out_dir, f"{name}-{fail.kind}-{h}.bin")
    with open(path, "wb") as f:
        f.write(fail.data)
    with open(path + ".txt", "w") as f:
        f.write(f"target: {name}\nsignature: {fail.signature}\n{fail.message}\n\n{fail.tb}")
    return path


def replay(path: str, name: Optional[str] = None, emit=print) -> Optional[Failure]:
    """Replay one file (or every file of a directory); returns the first failure or None."""
    paths = ([os.path.join(path, p) for p in sorted(os.listdir(path)) if not p.endswith(".txt")]
             if os.path.isdir(path) else [path])
    first = None
    for p in paths:
        tname = name or target_for_file(p)
        if tname not in TARGETS:
            raise UnknownTarget(f"{p}: cannot tell the target; name it (pykvmmu fuzz TARGET --replay "
                           f"FILE); known: {', '.join(TARGETS)}")
        with open(p, "rb") as f:
            data = f.read()
        _, fail = run_one(TARGETS[tname], data)
        if fail is None:
            emit(f"{p}: {tname}: ok ({len(data)} bytes)")
        else:
            emit(f"{p}: {tname}: FAILED ({fail.kind}) {fail.message}\n{fail.tb}")
            first = first or fail
    return first


# ---------------------------------------------------------------------- progress
class Progress:
    """The status line: executions, executions per second, corpus size, crashes (stderr)."""

    def __init__(self, name: str, engine: str, stream=None, interval: float = 1.0, quiet=False):
        self.name, self.engine = name, engine
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.last = self.t0
        self.interval = interval
        self.quiet = quiet
        self.execs = 0

    def tick(self, corpus: int, crashes: int, features: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < self.interval):
            return
        self.last = now
        el = max(now - self.t0, 1e-9)
        print(f"[{self.name}/{self.engine}] #{self.execs} exec/s {self.execs / el:.0f} "
              f"corpus {corpus} features {features} crashes {crashes} time {el:.0f}s",
              file=self.stream, flush=True)


# ---------------------------------------------------------------------- engine: random
def _mutate(rng: random.Random, data: bytes, corpus: list, max_len: int) -> bytes:
    b = bytearray(data)
    for _ in range(1 + rng.randrange(4)):
        k = rng.randrange(9)
        if not b or k == 0:                          # insert random bytes
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif k == 1:                                 # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif k == 2:                                 # random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif k == 3:                                 # interesting byte
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x3F, 0x40))
        elif k == 4:                                 # delete a range
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif k == 5:                                 # duplicate a range
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 16))
            b[i:i] = b[i:j]
        elif k == 6 and corpus:                      # splice with another corpus entry
            o = rng.choice(corpus)
            if o:
                i = rng.randrange(len(b))
                j = rng.randrange(len(o))
                b = b[:i] + o[j:]
        elif k == 7:                                 # add/sub a small delta
            i = rng.randrange(len(b))
            b[i] = (b[i] + rng.choice((-2, -1, 1, 2))) & 0xFF
        else:                                        # fresh random tail
            i = rng.randrange(len(b))
            b[i:] = rng.randbytes(rng.randint(1, 32))
    return bytes(b[:max_len])


@dataclass
class RunStats:
    target: str
    engine: str
    execs: int = 0
    seconds: float = 0.0
    corpus: int = 0
    features: int = 0
    failures: list = field(default_factory=list)
    interrupted: bool = False          # stopped by Ctrl-C (the counts are those reached)

    @property
    def rate(self) -> float:
        return self.execs / self.seconds if self.seconds else 0.0


def fuzz_random(name: str, *, seconds: float = 60.0, max_execs: Optional[int] = None, seed=None,
                corpus_root: Optional[str] = None, out_dir: str = "fuzz-crashes",
                save_corpus: Optional[str] = None, stop_on_failure: bool = True,
                shrink_budget: float = 10.0, quiet: bool = False, emit=None) -> RunStats:
    """The built-in mutational engine: mutate corpus entries, keep inputs with new features."""
    t = get_target(name)
    _budget(seconds, max_execs)
    rng = random.Random(seed)
    emit = emit or (lambda s: print(s, file=sys.stderr, flush=True))
    corpus = load_corpus(name, corpus_root) or [b""]
    seen: set = set()
    stats = RunStats(name, "random")
    prog = Progress(name, "random", quiet=quiet)
    sigs: set = set()

    def execute(data):
        feats, fail = run_one(t, data)
        prog.execs += 1
        stats.execs += 1
        if fail is not None:
            if fail.signature not in sigs:
                sigs.add(fail.signature)
                small = shrink(t, fail, shrink_budget)
                path = write_reproducer(small, name, out_dir)
                stats.failures.append((small, path))
                emit(f"[{name}] {small.kind}: {small.message.splitlines()[0][:300]}\n"
                     f"[{name}] reproducer ({len(small.data)} bytes): {path}\n"
                     f"[{name}] replay: pykvmmu fuzz --replay {path}")
            return False
        new = feats - seen
        if new:
            seen.update(new)
            return True
        return False

    t0 = time.monotonic()
    try:
        for d in list(corpus):
            execute(d)
        while True:
            el = time.monotonic() - t0
            if el >= seconds or (max_execs is not None and stats.execs >= max_execs):
                break
            if stats.failures and stop_on_failure:
                break
            if rng.random() < 0.05:
                data = rng.randbytes(rng.randint(1, t.max_len))
            else:
                data = _mutate(rng, rng.choice(corpus), corpus, t.max_len)
            if execute(data) and len(corpus) < 4096:
                corpus.append(data)
                if save_corpus:
                    os.makedirs(save_corpus, exist_ok=True)
                    with open(os.path.join(save_corpus, hashlib.sha1(data).hexdigest()[:16]),
                              "wb") as f:
                        f.write(data)
            prog.tick(len(corpus), len(stats.failures), len(seen))
    except KeyboardInterrupt:
        stats.interrupted = True
    stats.seconds = time.monotonic() - t0
    stats.corpus, stats.features = len(corpus), len(seen)
    prog.tick(len(corpus), len(stats.failures), len(seen), force=True)
    return stats


# ---------------------------------------------------------------------- engine: hypothesis
def fuzz_hypothesis(name: str, *, seconds: float = 60.0, max_execs: Optional[int] = None,
                    seed=None, out_dir: str = "fuzz-crashes", quiet: bool = False,
                    emit=None, corpus_root: Optional[str] = None, **_ignored) -> RunStats:
    """hypothesis drives the target with ``st.binary()`` (seeded with the corpus) in rounds
    until the time is up; a failure is shrunk by hypothesis, then by :func:`shrink`."""
    try:
        import hypothesis  # noqa: F401
    except ImportError:  # pragma: no cover - hypothesis is a test extra
        raise RuntimeError("the hypothesis engine needs hypothesis: pip install 'pykvmmu[test]'") from None
    t = get_target(name)
    _budget(seconds, max_execs)
    emit = emit or (lambda s: print(s, file=sys.stderr, flush=True))
    stats = RunStats(name, "hypothesis")
    prog = Progress(name, "hypothesis", quiet=quiet)
    seen: set = set()
    smallest: list = []
    corpus = load_corpus(name, corpus_root)
    t0 = time.monotonic()
    rnd = random.Random(seed)

    def body(data):
        prog.execs += 1
        stats.execs += 1
        feats, fail = run_one(t, data)
        if fail is not None:
            if not smallest or (len(fail.data), fail.data) < (len(smallest[0].data), smallest[0].data):
                smallest[:] = [fail]
            raise AssertionError(fail.message)
        seen.update(feats)
        prog.tick(len(corpus), len(stats.failures), len(seen))

    try:
        _hypothesis_rounds(t, name, body, corpus, smallest, stats, seconds, max_execs, t0, rnd,
                           out_dir, emit)
    except KeyboardInterrupt:
        stats.interrupted = True
    stats.seconds = time.monotonic() - t0
    stats.corpus, stats.features = len(corpus), len(seen)
    prog.tick(len(corpus), len(stats.failures), len(seen), force=True)
    return stats


def _hypothesis_rounds(t, name, body, corpus, smallest, stats, seconds, max_execs, t0, rnd,
                       out_dir, emit):
    """fuzz_hypothesis's loop: rounds of 100 examples until time, runs or a failure."""
    from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st
    rounds = 0
    while time.monotonic() - t0 < seconds and (max_execs is None or stats.execs < max_execs):
        rounds += 1
        n = 100 if max_execs is None else max(1, min(100, max_execs - stats.execs))
        test = given(st.binary(max_size=t.max_len))(body)
        if rounds == 1:
            for d in corpus[:20]:
                test = example(d)(test)
        test = settings(max_examples=n, deadline=None, database=None, derandomize=False,
                        suppress_health_check=list(HealthCheck),
                        phases=[Phase.explicit, Phase.generate, Phase.shrink])(test)
        test = _seeded(test, rnd.getrandbits(64))
        try:
            test()
        except AssertionError:
            if smallest:
                small = shrink(t, smallest[0], 5.0)
                path = write_reproducer(small, name, out_dir)
                stats.failures.append((small, path))
                emit(f"[{name}] {small.kind}: {small.message.splitlines()[0][:300]}\n"
                     f"[{name}] reproducer ({len(small.data)} bytes): {path}\n"
                     f"[{name}] replay: pykvmmu fuzz --replay {path}")
            break


def _seeded(test, s):
    from hypothesis import seed as hseed
    return hseed(s)(test)


# ---------------------------------------------------------------------- engine: atheris
ATHERIS_HINT = ("atheris is not installed. Install it with: pip install 'pykvmmu[fuzz]' "
                "(or pip install atheris; it needs clang with libFuzzer). For coverage of the C "
                "core build it instrumented: fuzz/build-fuzz-core.sh (see fuzz/README.md). "
                "Without atheris, use the built-in engine: --engine random.")


def fuzz_atheris(name: str, *, seconds: float = 60.0, max_execs: Optional[int] = None,
                 corpus_root: Optional[str] = None, out_dir: str = "fuzz-crashes",
                 extra_args=(), **_ignored):  # pragma: no cover - needs atheris
    """Coverage-guided libFuzzer through atheris (never returns: libFuzzer exits)."""
    try:
        import atheris
    except ImportError:
        raise RuntimeError(ATHERIS_HINT) from None
    t = get_target(name)
    # The CLI has already imported the engines, so instrument what is loaded (Python-side
    # coverage); the C core's coverage comes from the clang build (fuzz/build-fuzz-core.sh).
    from . import config, mmio, private, rmp, role, spte, vm  # noqa: F401
    from .ref import mmio as _rm, private as _rp, rmp as _rr, role as _rl, spte as _rs  # noqa: F401
    atheris.instrument_all()

    def one(data: bytes) -> None:
        fi = FuzzInput(data)
        t.fn(fi)

    os.makedirs(out_dir, exist_ok=True)
    args = [sys.argv[0], f"-max_total_time={int(seconds)}", f"-max_len={t.max_len}",
            f"-artifact_prefix={os.path.join(out_dir, name + '-')}", "-print_final_stats=1"]
    if max_execs:
        args.append(f"-runs={max_execs}")
    args += list(extra_args)
    # libFuzzer writes new units into the first corpus directory: a scratch one under
    # out_dir, never the seed corpus kept in the repository (read as the second).
    work = os.path.join(out_dir, f"corpus-{name}")
    os.makedirs(work, exist_ok=True)
    args.append(work)
    d = corpus_dir(name, corpus_root)
    if os.path.isdir(d):
        args.append(d)
    atheris.Setup(args, one)
    atheris.Fuzz()
