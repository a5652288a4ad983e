"""Every hand-written kernel is tested on every machine (issue 14): each equality test runs at
every ISA level the CPU supports (pykvmmu.isa), capping the kernels through the configuration
struct, and holds the result to the portable loops byte for byte.  Streaming-store tests call
with threads=1 so the batch is not split below KVMMU_STREAM_MIN_BYTES.  Levels the CPU lacks
are skipped and listed in the test run's summary (tests/conftest.py)."""
import numpy as np
import pytest

from pykvmmu import isa
from pykvmmu import mmio as M
from pykvmmu import private as P
from pykvmmu import role as RO
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import ConfigError

SUPPORTED = isa.supported_levels()
LEVELS = [pytest.param(lv, marks=pytest.mark.skipif(lv not in SUPPORTED,
                                                     reason=f"CPU lacks {lv}"))
          for lv in isa.LEVELS]
CONFIGS = [MmuConfig.preset(n) for n in ("ept", "npt", "ept-noad")] + \
    [MmuConfig.ept(profile="v5.10"), MmuConfig.npt(profile="v6.1")]
STREAM_BYTES = 32 << 20          # KVMMU_STREAM_MIN_BYTES (common.h)


def test_levels_and_refusals():
    assert list(isa.LEVELS) == ["portable", "avx2", "avx512"]
    assert SUPPORTED[0] == "portable" and isa.cpu_level() == SUPPORTED[-1]
    assert {k[1] for k in isa.KERNELS} <= set(isa.LEVELS)
    for bad in ("sse", None, 2, "AVX2"):
        with pytest.raises(ConfigError, match="isa="):
            MmuConfig.ept()._isa_copy(bad)
    cfg = MmuConfig.ept()
    assert cfg._isa_copy("avx2") == cfg and cfg._isa_copy("avx2")._cptr.isa == isa.LEVELS["avx2"]
    assert cfg._cptr.isa == isa.DEFAULT


def _sptes(cfg, n, seed=1):
    rng = np.random.default_rng(seed)
    made = S.make_spte_batch(cfg, rng.integers(0, 1 << 30, n, dtype=np.uint64),
                             level=rng.integers(1, 4, n, dtype=np.uint8),
                             pte_access=rng.integers(0, 8, n, dtype=np.uint8))
    raw = rng.integers(0, 1 << 63, n, dtype=np.uint64) | (
        rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63))
    return np.concatenate([made, S.access_track_batch(cfg, made), raw,
                           np.array([cfg.profile.nonpresent_value, cfg.profile.frozen_value or 0,
                                     cfg.mmio_value], np.uint64)])


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_decode_levels(cfg, level):
    vals = _sptes(cfg, 700)
    capped, portable = cfg._isa_copy(level), cfg._isa_copy("portable")
    for lv in (1, 2, 5):
        assert S.decode_batch(capped, vals, lv).tobytes() == \
            S.decode_batch(portable, vals, lv).tobytes()
    raw_out = np.empty(40 * 48 + 64, np.uint8)
    first = (-raw_out.ctypes.data) % 64
    for n in range(0, 40, 3):                      # around the 8-record step, every offset
        off = 8 * (n % 8)
        view = raw_out[first + off:first + off + n * 48].view(S.DECODE_DTYPE)
        S.decode_batch(capped, vals[n:2 * n], 3, out=view)
        assert view.tobytes() == S.decode_batch(portable, vals[n:2 * n], 3).tobytes(), n


@pytest.mark.parametrize("level", LEVELS)
def test_make_spte_table_levels(level):
    cfg = MmuConfig.ept()
    rng = np.random.default_rng(2)
    n = 40001                                      # the table path (>= 16384), odd tail
    pfn = rng.integers(0, 1 << 36, n, dtype=np.uint64)
    kw = dict(level=rng.integers(1, 6, n, dtype=np.uint8),
              pte_access=rng.integers(0, 8, n, dtype=np.uint8),
              flags=rng.integers(0, 256, n, dtype=np.uint8), threads=1)
    assert np.array_equal(S.make_spte_batch(cfg._isa_copy(level), pfn, **kw),
                          S.make_spte_batch(cfg._isa_copy("portable"), pfn, **kw))


@pytest.mark.parametrize("level", LEVELS)
def test_streaming_levels(level):
    """Outputs of 32 MiB and more take the streaming-store paths (make_spte table + gather,
    make_mmio_spte, decode): equal to the portable loops, also into misaligned out=."""
    cfg = MmuConfig.ept()
    capped, portable = cfg._isa_copy(level), cfg._isa_copy("portable")
    rng = np.random.default_rng(17)
    n = STREAM_BYTES // 8 + 5
    pfn = rng.integers(0, 1 << 36, n, dtype=np.uint64)
    kw = dict(level=rng.integers(1, 4, n, dtype=np.uint8),
              pte_access=rng.integers(0, 8, n, dtype=np.uint8), threads=1)
    want = S.make_spte_batch(portable, pfn, **kw)
    buf = np.empty(n + 1, np.uint64)
    for out in (np.empty(n, np.uint64), buf[1:]):  # aligned, and 8 bytes off 32-byte alignment
        S.make_spte_batch(capped, pfn, out=out, **kw)
        assert np.array_equal(out, want)
    gfn = pfn & np.uint64((1 << 30) - 1)
    want = M.make_mmio_spte_batch(portable, gfn, 7, 0x12345, threads=1)
    for out in (np.empty(n, np.uint64), buf[1:]):
        M.make_mmio_spte_batch(capped, gfn, 7, 0x12345, out=out, threads=1)
        assert np.array_equal(out, want)
    m = STREAM_BYTES // 48 + 3                      # 48-byte records
    sptes = want[:m]
    ref = S.decode_batch(portable, sptes, threads=1)
    raw = np.empty(m * 48 + 128, np.uint8)
    first = (-raw.ctypes.data) % 64
    for off in (0, 8, 16, 32, 48):
        view = raw[first + off:first + off + m * 48].view(S.DECODE_DTYPE)
        view.view(np.uint8)[:] = 0xA5
        S.decode_batch(capped, sptes, out=view, threads=1)
        assert view.tobytes() == ref.tobytes(), off


@pytest.mark.parametrize("level", LEVELS)
def test_role_levels(level):
    rng = np.random.default_rng(4)
    n = STREAM_BYTES // 4 + 7                       # uint32 buckets: the streaming size
    gfn = rng.integers(0, 1 << 63, n, dtype=np.uint64)
    for variant in ("x86_64", "pre-4.7", "32bit"):
        got = RO.hash_batch(gfn, 12, variant, threads=1, isa=level)
        assert np.array_equal(got, RO.hash_batch(gfn, 12, variant, threads=1, isa="portable"))
    small = gfn[:1001]
    assert np.array_equal(RO.hash_batch(small, 20, isa=level),
                          RO.hash_batch(small, 20, isa="portable"))
    with pytest.raises(ConfigError, match="isa="):
        RO.hash_batch(small, isa="sse4")
    e = RO.get_era(list(RO.ERAS)[-1])
    for lay in (e.base, e.ext, e.cpu_role):          # 32-bit and 64-bit words
        capped, portable = lay._isa_copy(level), lay._isa_copy("portable")
        wt = np.uint32 if lay.word_bits == 32 else np.uint64
        words = rng.integers(0, 1 << 63, 5000, dtype=np.uint64).astype(wt) & wt(lay.used_mask)
        rows = capped.unpack_batch(words)
        assert rows.tobytes() == portable.unpack_batch(words).tobytes()
        assert np.array_equal(capped.pack_batch(rows), portable.pack_batch(rows))
        assert np.array_equal(capped.pack_batch(rows), words)
    capped, portable = e.base._isa_copy(level), e.base._isa_copy("portable")
    n = STREAM_BYTES // 4 + 21                      # u32 words out of pack: the streaming size
    words = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32) & np.uint32(e.base.used_mask)
    rows = np.zeros(n + 1, capped.dtype)[1:]        # off the 64-byte grid
    capped.unpack_batch(words, rows, threads=1)
    assert rows.tobytes() == portable.unpack_batch(words, threads=1).tobytes()
    out = np.zeros(n + 3, np.uint32)[3:]
    assert np.array_equal(capped.pack_batch(rows, out, threads=1), words)


@pytest.mark.parametrize("level", LEVELS)
def test_private_levels(level):
    rng = np.random.default_rng(6)
    n = STREAM_BYTES // 16 + 3                      # two uint64 outputs per fault
    gpa = rng.integers(0, 1 << 52, n, dtype=np.uint64)
    ec = rng.integers(0, 1 << 63, n, dtype=np.uint64)
    for vm in ("snp", "tdx", "default"):
        got = P.classify_batch(vm, gpa, ec, threads=1, isa=level)
        want = P.classify_batch(vm, gpa, ec, threads=1, isa="portable")
        for g, w in zip(got, want):
            assert np.array_equal(g, w) if isinstance(g, np.ndarray) else g == w
        misaligned = np.empty(n + 1, np.uint64)[1:]
        got = P.classify_batch(vm, gpa, ec, threads=1, isa=level, out_gfn=misaligned)
        assert np.array_equal(got[0], want[0])
        odd = np.empty(n + 3, np.bool_)[3:]                 # is_private off the 64-byte grid
        got = P.classify_batch(vm, gpa, ec, threads=1, isa=level, out_private=odd)
        assert all(np.array_equal(g, w) for g, w in zip(got[:3], want[:3])) and got[3] == want[3]


@pytest.mark.parametrize("env, want", [("portable", 0), ("avx2", 1), ("avx512", 2), ("neon", None)])
def test_pykvmmu_isa_is_read_once_at_import(env, want, tmp_path):
    import os
    import subprocess
    import sys

    import pykvmmu
    code = ("from pykvmmu import isa; from pykvmmu.config import MmuConfig; "
            "print(isa.DEFAULT, MmuConfig.ept()._cptr.isa)")
    # the pykvmmu these tests imported (installed in CI), from a directory no source tree shadows
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(pykvmmu.__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYKVMMU_ISA": env, "PYTHONPATH": pkg_parent})
    if want is None:
        assert r.returncode != 0 and "PYKVMMU_ISA: isa='neon'" in r.stderr
    else:
        assert r.stdout.split() == [str(want), str(want)], r.stderr
