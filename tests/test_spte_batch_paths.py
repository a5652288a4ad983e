"""make_spte_batch has three C paths (shared inputs; per-element table with an AVX2 gather;
per-element general).  They must agree bit for bit and report the same first bad element."""
import numpy as np
import pytest

from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import InputError

BIG = 20001          # above the table threshold (16384), odd to exercise the scalar tail
CONFIGS = MmuConfig.all_presets()


def _inputs(cfg, rng, n=BIG):
    pfn = rng.integers(0, 1 << 40, n, dtype=np.uint64) & np.uint64(cfg.base_addr_mask >> 12)
    return (pfn, rng.integers(1, 6, n, dtype=np.uint8), rng.integers(0, 8, n, dtype=np.uint8),
            rng.integers(0, 256, n, dtype=np.uint8))


def _chunked(cfg, pfn, **kw):
    """The same call in chunks below the table threshold (the general per-element path)."""
    parts = []
    for i in range(0, pfn.size, 1000):
        sub = {k: (v[i:i + 1000] if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        parts.append(S.make_spte_batch(cfg, pfn[i:i + 1000], **sub))
    return np.concatenate(parts)


def _scalar(cfg, pfn, old, level, access, flags, memtype):
    """The scalar C path (make_spte_nopfn) for one element of a batch call."""
    fl = int(flags)
    r = S.make_spte(cfg, int(pfn), level=int(level), pte_access=int(access), old_spte=int(old),
                    prefetch=bool(fl & S.MK_PREFETCH), synchronizing=bool(fl & S.MK_SYNCHRONIZING),
                    host_writable=bool(fl & S.MK_HOST_WRITABLE), host_mmio=bool(fl & S.MK_HOST_MMIO),
                    ad_disabled=bool(fl & S.MK_AD_DISABLED), ad_wrprot_only=bool(fl & S.MK_WRPROT_ONLY),
                    unsync_fails=bool(fl & S.MK_UNSYNC_FAILS), nx_huge_pages=bool(fl & S.MK_NX_HUGE),
                    memtype=None if memtype == S.MEMTYPE_AUTO else int(memtype))
    return r.spte, r.wrprot


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_vector_path_equals_scalar_path(cfg):
    """The branch-free per-element batch path equals the scalar make_spte, bit for bit,
    including per-element old SPTEs (writable or not, leaf or not) and memtypes."""
    rng = np.random.default_rng(7)
    n = 1500
    pfn, level, access, flags = _inputs(cfg, rng, n)
    olds = np.array([0, 2, 0x82, 0x8000000000000002, cfg.profile.nonpresent_value,
                     0x8600000012345b77, 0x12345e67], dtype=np.uint64)
    old = olds[rng.integers(0, olds.size, n)]
    memtype = np.where(rng.integers(0, 2, n) == 0, S.MEMTYPE_AUTO,
                       rng.integers(0, 16, n) << 3).astype(np.uint8)
    got, wp = S.make_spte_batch(cfg, pfn, level=level, pte_access=access, flags=flags,
                                old_spte=old, memtype=memtype, with_wrprot=True,
                                host_writable=False, ad_disabled=False)  # flags alone decide
    for i in range(n):
        want = _scalar(cfg, pfn[i], old[i], level[i], access[i], flags[i], memtype[i])
        assert (int(got[i]), bool(wp[i])) == want, i
    # A large batch (table + AVX2 gather path) against the scalar path on a sample.
    bpfn, blevel, baccess, bflags = _inputs(cfg, rng, BIG)
    big, bwp = S.make_spte_batch(cfg, bpfn, level=blevel, pte_access=baccess, flags=bflags,
                                 old_spte=int(olds[5]), with_wrprot=True, host_writable=False,
                                 ad_disabled=False)
    for i in list(range(0, BIG, 53)) + [BIG - 1, BIG - 2, BIG - 3]:
        want = _scalar(cfg, bpfn[i], olds[5], blevel[i], baccess[i], bflags[i], S.MEMTYPE_AUTO)
        assert (int(big[i]), bool(bwp[i])) == want, i
    shared = S.make_spte_batch(cfg, pfn, level=3, pte_access=access, old_spte=int(olds[1]))
    for i in range(0, n, 7):
        fl = S.MK_HOST_WRITABLE | (0 if cfg.ad_enabled else S.MK_AD_DISABLED)
        assert int(shared[i]) == _scalar(cfg, pfn[i], olds[1], 3, access[i], fl, S.MEMTYPE_AUTO)[0]


@pytest.mark.parametrize("field, value, index", [
    ("level", 0, 40001), ("level", 6, 12345), ("pte_access", 8, 33333),
    ("pfn", 1 << 41, 49999), ("pfn", 1 << 41, 3)])
def test_table_path_reports_the_first_bad_element(field, value, index):
    cfg = MmuConfig.ept()
    n = 50000
    pfn = np.arange(n, dtype=np.uint64)
    kw = {"level": np.ones(n, np.uint8), "pte_access": np.full(n, 7, np.uint8)}
    if field == "pfn":
        pfn[index] = value
    else:
        kw[field][index] = value
    with pytest.raises(InputError, match=rf"element {index} \("):
        S.make_spte_batch(cfg, pfn, **kw)


def test_large_batches_equal_chunked_batches():
    """A large batch (beyond the caches) gives exactly the chunked results."""
    from pykvmmu import mmio as M
    cfg = MmuConfig.ept()
    n = (1 << 20) + 3
    pfn = np.arange(n, dtype=np.uint64) * np.uint64(977) & np.uint64((1 << 36) - 1)
    big = S.make_spte_batch(cfg, pfn)
    small = np.concatenate([S.make_spte_batch(cfg, pfn[i:i + 65536]) for i in range(0, n, 65536)])
    assert np.array_equal(big, small)
    gfn = pfn & np.uint64((1 << 30) - 1)
    big = M.make_mmio_spte_batch(cfg, gfn, 7, 0x12345)
    small = np.concatenate([M.make_mmio_spte_batch(cfg, gfn[i:i + 65536], 7, 0x12345)
                            for i in range(0, n, 65536)])
    assert np.array_equal(big, small)
    bad = pfn.copy()
    bad[n - 2] = 1 << 45
    with pytest.raises(InputError, match=rf"element {n - 2} "):
        S.make_spte_batch(cfg, bad)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_tlb_flush_batch_equals_scalar_and_reference(cfg):
    from pykvmmu.ref import spte as ref
    rng = np.random.default_rng(11)
    pfn, level, access, flags = _inputs(cfg, rng, 400)
    built = S.make_spte_batch(cfg, pfn, level=level, pte_access=access, flags=flags)
    old = np.concatenate([built, built, built[::-1]])
    new = np.concatenate([S.access_track_batch(cfg, built), built & np.uint64(~2 & (2**64 - 1)),
                          built])
    got = S.leaf_spte_change_needs_tlb_flush_batch(cfg, old, new)
    for o, nw, g in zip(old.tolist(), new.tolist(), got.tolist()):
        assert g == S.leaf_spte_change_needs_tlb_flush(cfg, o, nw)
        assert g == ref.leaf_spte_change_needs_tlb_flush(cfg, o, nw)
    with pytest.raises(Exception, match="shape"):
        S.leaf_spte_change_needs_tlb_flush_batch(cfg, old, new[:-1])


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.profile.name}")
def test_decode_fast_path_equals_per_element_path(cfg):
    """decode_batch with one level uses a block-vectorised path; with a level array the
    per-element path.  Every byte of every record must agree, and kind must follow the
    scalar predicates (frozen > mmio > present > non-present value > other)."""
    rng = np.random.default_rng(13)
    pfn, level, access, flags = _inputs(cfg, rng, 1500)
    made = S.make_spte_batch(cfg, pfn, level=level, pte_access=access, flags=flags)
    raw = rng.integers(0, 1 << 63, 1500, dtype=np.uint64) | (
        rng.integers(0, 2, 1500, dtype=np.uint64) << np.uint64(63))
    special = np.array([cfg.profile.nonpresent_value, cfg.profile.frozen_value or 0,
                        cfg.mmio_value, 0], dtype=np.uint64)
    vals = np.concatenate([made, S.access_track_batch(cfg, made), raw, special])
    portable = cfg._portable_copy()
    for lv in (1, 2, 3, 4, 5):
        fast = S.decode_batch(cfg, vals, lv)
        slow = S.decode_batch(cfg, vals, np.full(vals.shape, lv, np.uint8))
        assert fast.tobytes() == slow.tobytes()
        assert S.decode_batch(portable, vals, lv).tobytes() == fast.tobytes()
    # Every length around the 8-record SIMD step, from every 8-byte offset of out.
    raw_out = np.empty(40 * 48 + 64, np.uint8)
    first = (-raw_out.ctypes.data) % 64
    for n in range(0, 40):
        off = 8 * (n % 8)
        view = raw_out[first + off:first + off + n * 48].view(S.DECODE_DTYPE)
        S.decode_batch(cfg, vals[n:2 * n], 2, out=view)
        want = S.decode_batch(cfg, vals[n:2 * n], np.full(n, 2, np.uint8))
        assert view.tobytes() == want.tobytes(), n
    rec = S.decode_batch(cfg, vals, 1)
    for v, k in zip(vals[-10:].tolist() + vals[:50].tolist(), rec["kind"][-10:].tolist() + rec["kind"][:50].tolist()):
        want = (3 if S.is_frozen_spte(cfg, v) else 2 if S.is_mmio_spte(cfg, v)
                else 1 if S.is_shadow_present_pte(cfg, v)
                else 0 if v == cfg.profile.nonpresent_value else 4)
        assert S.KINDS[k] == S.KINDS[want]
