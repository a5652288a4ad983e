"""csrc/vm.c (``kvmmu_vm_tdp_map``) vs the pure-Python reference (pykvmmu.ref.vm), bit for bit.

Random small table pools laid out as ``pykvmmu.vm.Vm`` lays them out (a uint64 SPTE page and an
int32 child page per table, -1 for no child), with child links along the fault's path that
stop, point outside the pool, or lead on; huge leaves, MMIO and random words in the way;
random gfn / level / pfn / access / mkflags / memtype / flags, over every preset of every
profile.  Same result code, stop level, SPTE and pool afterwards; a refused call writes nothing.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pykvmmu import spte as S
from pykvmmu._ffi import ffi, lib
from pykvmmu.config import MmuConfig
from pykvmmu.ref import spte as RS
from pykvmmu.ref import vm as R

CONFIGS = MmuConfig.all_presets()
NX_CONFIGS = [MmuConfig.preset(n, profile=p, nx_huge_pages=True)
              for p in ("v5.10", "v6.13", "v6.19") for n in ("npt-sme", "ept", "ept-noad")]
CONFIGS_ALL = CONFIGS + NX_CONFIGS
_SENTINEL_SPTE = 0xDEAD_BEEF_0BAD_F00D
_SENTINEL_LEVEL = 0xABCD


def test_constants_match_the_core():
    """The reference's result codes, flag and make_spte input bits are the C core's."""
    for name in ("OK", "BLOCKED", "SUBTREE", "E_INDEX", "E_MAKE", "F_MAKE"):
        assert getattr(R, name) == getattr(lib, f"KVMMU_VM_{name}"), name
    for name in ("AD_DISABLED", "WRPROT_ONLY", "PREFETCH", "SYNCHRONIZING", "HOST_WRITABLE",
                 "HOST_MMIO", "UNSYNC_FAILS", "NX_HUGE", "ALL_FLAGS", "AD_DEFAULT", "NX_DEFAULT",
                 "OLD_DEFAULT"):
        assert getattr(R, f"MK_{name}") == getattr(lib, f"KVMMU_MK_{name}"), name
    assert R.MEMTYPE_AUTO == S.MEMTYPE_AUTO


def test_reference_is_independent_of_the_core():
    """The twin imports only the standard library and other reference modules."""
    import ast
    import pykvmmu.ref.vm as mod
    tree = ast.parse(open(mod.__file__).read())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [("." * n.level) + (n.module or "") for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom)]
    assert names and all(m in ("__future__", "typing", ".spte") for m in names), names


@st.composite
def pools(draw):
    """(cfg, spte pool, child pool, npages, levels, nonpresent, root, gfn, level)."""
    cfg = draw(st.sampled_from(CONFIGS) | st.sampled_from(NX_CONFIGS))
    npages = draw(st.integers(1, 6))
    odd = draw(st.integers(0, 15)) == 0        # 1 in 16: a bad root, level or level count
    levels = draw(st.sampled_from([3, 0, 6, 4, 5] if odd else [4, 5]))
    gfn = draw(st.integers(0, 2**64 - 1) | st.integers(0, 2**40 - 1))
    level = draw(st.integers(0, 6) if odd else st.integers(1, 3))
    root = draw(st.integers(0, npages + 2) if odd else st.integers(0, npages - 1))
    # the pool's non-present value is make_spte's old SPTE (unless MK_OLD_DEFAULT): any word
    nonpresent = draw(st.sampled_from([cfg.profile.nonpresent_value, 0]) | st.integers(0, 2**64 - 1)
                      | st.just(RS.make_spte(cfg, 0x1234 & cfg.max_pfn, level=2)[0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tbl = np.full((npages, 512), cfg.profile.nonpresent_value, dtype=np.uint64)
    child = np.full((npages, 512), -1, dtype=np.int32)
    # background: random words and sparse random links
    mask = rng.random((npages, 512)) < 0.05
    tbl[mask] = rng.integers(0, 2**64 - 1, int(mask.sum()), dtype=np.uint64, endpoint=True)
    links = rng.random((npages, 512)) < 0.02
    child[links] = rng.integers(-3, npages + 3, int(links.sum()), dtype=np.int32)
    # the fault's path: at each level, a link on (or off) the pool, a huge leaf or nothing
    page = min(root, npages - 1)
    path = [page]           # distinct tables along the path while the pool has them
    done = set()
    for lv in range(max(levels, 1), 0, -1):
        i = (gfn >> (9 * (lv - 1))) & 511
        if (page, i) in done:       # a cycle back to an entry already set: the walk is fixed
            break
        done.add((page, i))
        odd_kinds = ["none", "huge", "mmio", "random", "far"]
        kind = draw(st.sampled_from(["link"] + odd_kinds if lv == level else
                                    ["link"] * 12 + odd_kinds))
        if kind in ("link", "far"):
            fresh = [q for q in range(npages) if q not in path] or list(range(npages))
            c = draw(st.sampled_from(fresh)) if kind == "link" else \
                draw(st.sampled_from([npages, npages + 1, 2**31 - 1, -2, -(2**31)]))
            path.append(c)
            child[page, i] = c
            tbl[page, i] = RS.make_nonleaf_spte(cfg, (0x1000 + c % 4096) << 12)
            if not 0 <= c < npages:
                break
            page = c
            continue
        child[page, i] = -1
        if kind == "huge" and lv in (2, 3):
            tbl[page, i] = RS.make_spte(cfg, (int(rng.integers(0, 1 << 20)) << 9) & cfg.max_pfn,
                                        level=lv)[0]
        elif kind == "mmio":
            tbl[page, i] = int(rng.integers(0, 2**64 - 1, dtype=np.uint64, endpoint=True)) | 6
        elif kind == "random":
            tbl[page, i] = int(rng.integers(0, 2**64 - 1, dtype=np.uint64, endpoint=True))
        break
    return cfg, tbl, child, npages, levels, nonpresent, root, gfn, level


@st.composite
def make_args(draw, cfg):
    """pfn, pte_access, mkflags, memtype, flags: mostly valid, some refused by make_spte."""
    bad = draw(st.sampled_from([None] * 8 + ["pfn", "acc", "mk", "memtype"]))   # one refused
    pfn = draw(st.integers(0, 2**64 - 1) | st.sampled_from([cfg.max_pfn + 1, 1 << 40])
               if bad == "pfn" else (st.integers(0, cfg.max_pfn) | st.integers(0, 2**40 - 1)
                                     | st.just(cfg.max_pfn)).map(lambda p: p & cfg.max_pfn))
    acc = draw(st.integers(8, 2**32 - 1) | st.sampled_from([8, 0xFF]) if bad == "acc" else
               st.integers(0, 7))
    mk = draw((st.integers(2048, 2**32 - 1) | st.sampled_from([2048, 2047 | 4096, 1 << 31]))
              if bad == "mk" else st.integers(0, 255) | st.integers(0, 255).map(
                  lambda m: m | lib.KVMMU_MK_AD_DEFAULT | lib.KVMMU_MK_NX_DEFAULT
                  | lib.KVMMU_MK_OLD_DEFAULT) | st.integers(0, 2047))
    memtype = draw(st.integers(0, 2**32 - 1).filter(lambda m: m != S.MEMTYPE_AUTO and m & ~0x78)
                   | st.sampled_from([0x80, 0x06, 0x79, 0xFE]) if bad == "memtype" else
                   st.sampled_from([S.MEMTYPE_AUTO, S.MEMTYPE_AUTO, 0x00, 0x30, 0x70, 0x78, 0x08]))
    flags = draw(st.sampled_from([0, lib.KVMMU_VM_F_MAKE, lib.KVMMU_VM_F_MAKE, 2, 3]))
    return pfn, acc, mk, memtype, flags


def _core(cfg, tbl, child, npages, levels, nonpresent, root, gfn, level, pfn, acc, mk, memtype,
          flags):
    """kvmmu_vm_tdp_map over numpy buffers wired as Vm._grow_pool wires them."""
    t = ffi.new("struct kvmmu_vm_tdp *")
    t.spte = ffi.cast("uint64_t *", tbl.ctypes.data)
    t.child = ffi.cast("int32_t *", child.ctypes.data)
    t.npages = npages
    t.levels = levels
    t.nonpresent = nonpresent
    out_spte = ffi.new("uint64_t *", _SENTINEL_SPTE)
    out_level = ffi.new("uint32_t *", _SENTINEL_LEVEL)
    code = lib.kvmmu_vm_tdp_map(cfg._cptr, t, root, gfn, level, pfn, acc, mk, memtype, flags,
                                out_spte, out_level)
    return code, out_spte[0], out_level[0]


@given(data=st.data())
def test_core_equals_reference(data):
    cfg, tbl, child, npages, levels, nonpresent, root, gfn, level = data.draw(pools())
    pfn, acc, mk, memtype, flags = data.draw(make_args(cfg))
    ref_tbl, ref_child = tbl.ravel().tolist(), child.ravel().tolist()
    before_tbl, before_child = tbl.copy(), child.copy()
    want = R.tdp_map(cfg, ref_tbl, ref_child, npages, levels, nonpresent, root, gfn, level, pfn,
                     acc, mk, memtype, flags)
    code, spte, stop = _core(cfg, tbl, child, npages, levels, nonpresent, root, gfn, level, pfn,
                             acc, mk, memtype, flags)
    assert code == want.code
    if want.code in (R.E_INDEX, R.E_MAKE):
        assert (spte, stop) == (_SENTINEL_SPTE, _SENTINEL_LEVEL)
        np.testing.assert_array_equal(tbl, before_tbl)
        np.testing.assert_array_equal(child, before_child)
    else:
        assert (spte, stop) == (want.spte, want.stop_level)
    assert tbl.ravel().tolist() == ref_tbl
    assert child.ravel().tolist() == ref_child
    np.testing.assert_array_equal(child, before_child)          # links are never written
    changed = np.nonzero(tbl.ravel() != before_tbl.ravel())[0]
    assert len(changed) <= (1 if want.code == R.OK and flags & R.F_MAKE else 0)


def _walk_to_leaf_pool(cfg, data):
    """A drawn (levels, level, gfn) and a pool of non-present tables linked from the root to
    the table at ``level`` on gfn's path: (levels, level, gfn, npages, tbl, child)."""
    levels = data.draw(st.sampled_from([4, 5]))
    level = data.draw(st.integers(1, 3))
    gfn = data.draw(st.integers(0, 2**64 - 1))
    npages = levels - level + 1
    tbl = np.full((npages, 512), cfg.profile.nonpresent_value, dtype=np.uint64)
    child = np.full((npages, 512), -1, dtype=np.int32)
    for p, lv in enumerate(range(levels, level, -1)):
        child[p, (gfn >> (9 * (lv - 1))) & 511] = p + 1
    return levels, level, gfn, npages, tbl, child


@given(cfg=st.sampled_from(CONFIGS) | st.sampled_from(NX_CONFIGS), data=st.data())
def test_install_equals_reference(cfg, data):
    """Every walk reaches its target: the leaf (all make_spte inputs, any old SPTE) and where
    it lands agree with the reference, and nothing else in the pool changes."""
    levels, level, gfn, npages, tbl, child = _walk_to_leaf_pool(cfg, data)
    old = data.draw(st.sampled_from(["nonpresent", "random", "huge", "small"]))
    i = (gfn >> (9 * (level - 1))) & 511
    tbl[npages - 1, i] = {"nonpresent": cfg.profile.nonpresent_value,
                          "random": data.draw(st.integers(0, 2**64 - 1)),
                          "huge": RS.make_spte(cfg, 0x200 & cfg.max_pfn, level=max(level, 2))[0],
                          "small": RS.make_spte(cfg, 0x201 & cfg.max_pfn, level=1)[0]}[old]
    # make_spte's old SPTE is the pool's non-present value (MK_OLD_DEFAULT: the era's): a
    # writable leaf there changes the writable shortcut / unsync outcome in some eras
    nonpresent = data.draw(st.sampled_from([cfg.profile.nonpresent_value, int(tbl[npages - 1, i]),
                                            RS.make_spte(cfg, 0x203 & cfg.max_pfn, level=level)[0]])
                           | st.integers(0, 2**64 - 1))
    pfn = data.draw(st.integers(0, cfg.max_pfn)) & cfg.max_pfn       # within the PFN mask
    acc = data.draw(st.integers(0, 7))
    mk = data.draw(st.integers(0, 2047))
    memtype = data.draw(st.sampled_from([S.MEMTYPE_AUTO, 0x00, 0x30, 0x70, 0x78, 0x08]))
    ref_tbl, ref_child = tbl.ravel().tolist(), child.ravel().tolist()
    want = R.tdp_map(cfg, ref_tbl, ref_child, npages, levels, nonpresent, 0, gfn, level, pfn,
                     acc, mk, memtype, R.F_MAKE)
    assert (want.code, want.stop_level) == (R.OK, level)
    got = _core(cfg, tbl, child, npages, levels, nonpresent, 0, gfn, level, pfn, acc, mk,
                memtype, lib.KVMMU_VM_F_MAKE)
    assert got == (want.code, want.spte, want.stop_level)
    assert tbl.ravel().tolist() == ref_tbl and int(tbl[npages - 1, i]) == want.spte


@pytest.mark.parametrize("cfg", CONFIGS_ALL[::7], ids=lambda c: f"{c.profile.name}-{c.mode}")
def test_install_through_a_full_path(cfg):
    """A walk that reaches the target level installs exactly make_spte(pfn, level) (the
    reference's leaf is the public make_spte's), at the right entry, for 4 and 5 levels."""
    for levels in (4, 5):
        npages = levels
        tbl = np.full((npages, 512), cfg.profile.nonpresent_value, dtype=np.uint64)
        child = np.full((npages, 512), -1, dtype=np.int32)
        gfn = 0x1_2345_6789 & ((1 << (9 * levels)) - 1)
        for lv in range(levels, 1, -1):
            p = levels - lv
            child[p, (gfn >> (9 * (lv - 1))) & 511] = p + 1
        mk = S._mkflags(False, False, True, False, not cfg.ad_enabled, False, False,
                        cfg.nx_huge_pages)
        for level in (1, 2, 3):
            pfn = (0x4567 << 9 * (level - 1)) & cfg.max_pfn
            code, spte, stop = _core(cfg, tbl, child, npages, levels,
                                     cfg.profile.nonpresent_value, 0, gfn, level, pfn, 7, mk,
                                     S.MEMTYPE_AUTO, lib.KVMMU_VM_F_MAKE)
            if level > 1:       # a link at this level: the target is a subtree, nothing written
                assert (code, stop) == (lib.KVMMU_VM_SUBTREE, level)
                continue
            assert (code, stop) == (lib.KVMMU_VM_OK, 1)
            assert spte == S.make_spte(cfg, pfn, level=1).spte
            assert int(tbl[levels - 1, gfn & 511]) == spte
            assert np.count_nonzero(tbl != cfg.profile.nonpresent_value) == 1


@pytest.mark.parametrize("cfg", CONFIGS[::5], ids=lambda c: f"{c.profile.name}-{c.mode}")
def test_make_refusal_boundaries(cfg):
    """Each make_spte input just past its rule is E_MAKE with nothing written (core and
    reference); the value just inside is installed."""
    levels, gfn = 4, 0x2_0406_0810
    tbl = np.full((4, 512), cfg.profile.nonpresent_value, dtype=np.uint64)
    child = np.full((4, 512), -1, dtype=np.int32)
    for p, lv in enumerate(range(levels, 1, -1)):
        child[p, (gfn >> (9 * (lv - 1))) & 511] = p + 1
    good = dict(pfn=cfg.max_pfn, acc=7, mk=2047, memtype=0x78)
    for field, bad in (("pfn", cfg.max_pfn + 1), ("pfn", 1 << 40), ("acc", 8), ("mk", 2048),
                       ("memtype", 0x79), ("memtype", 0x80)):
        for args, want in ((good, R.OK), ({**good, field: bad}, R.E_MAKE)):
            before = tbl.copy()
            ref_tbl, ref_child = tbl.ravel().tolist(), child.ravel().tolist()
            r = R.tdp_map(cfg, ref_tbl, ref_child, 4, levels, cfg.profile.nonpresent_value, 0,
                          gfn, 1, args["pfn"], args["acc"], args["mk"], args["memtype"], R.F_MAKE)
            code, spte, stop = _core(cfg, tbl, child, 4, levels, cfg.profile.nonpresent_value, 0,
                                     gfn, 1, args["pfn"], args["acc"], args["mk"],
                                     args["memtype"], lib.KVMMU_VM_F_MAKE)
            assert r.code == code == want, (field, args)
            assert tbl.ravel().tolist() == ref_tbl
            if want == R.E_MAKE:
                np.testing.assert_array_equal(tbl, before)
                assert (spte, stop) == (_SENTINEL_SPTE, _SENTINEL_LEVEL)
            else:
                assert (spte, stop) == (r.spte, 1) and int(tbl[3, gfn & 511]) == spte


@pytest.mark.parametrize("profile", ["v5.19", "v6.6.64", "v6.19"])
def test_install_over_a_present_leaf_sees_the_old_spte(profile):
    """tdp_mmu_map_handle_target_level hands make_spte() the entry's current value
    (iter->old_spte), not the non-present value: installing over a writable leaf follows the
    era's writable shortcut exactly as make_spte(old_spte=current) does, in C and reference."""
    cfg = MmuConfig.ept(profile=profile)
    np_val = cfg.profile.nonpresent_value
    mk = S._mkflags(False, False, True, False, not cfg.ad_enabled, False, False, cfg.nx_huge_pages)
    gfn, pfn = 0x1234, 0x5678
    old = S.make_spte(cfg, pfn, level=1).spte            # present, writable, host-writable
    differs = False
    for o in (old, old & ~(cfg.dirty_mask or 0)):
        tbl = np.full((1, 512), np_val, dtype=np.uint64)
        child = np.full((1, 512), -1, dtype=np.int32)
        tbl[0, gfn & 511] = o
        want = S.make_spte(cfg, pfn, level=1, old_spte=o).spte
        differs |= want != S.make_spte(cfg, pfn, level=1).spte
        ref_tbl = [int(x) for x in tbl.ravel()]
        r = R.tdp_map(cfg, ref_tbl, [int(x) for x in child.ravel()], 1, 1, np_val, 0, gfn, 1,
                      pfn, 7, mk, S.MEMTYPE_AUTO, R.F_MAKE)
        code, spte, stop = _core(cfg, tbl, child, 1, 1, np_val, 0, gfn, 1, pfn, 7, mk,
                                 S.MEMTYPE_AUTO, lib.KVMMU_VM_F_MAKE)
        assert (code, spte, stop) == (lib.KVMMU_VM_OK, want, 1)
        assert (r.code, r.spte, r.stop_level) == (R.OK, want, 1)
        assert int(tbl[0, gfn & 511]) == want == ref_tbl[gfn & 511]
    if profile != "v6.19":
        assert differs, "the old SPTE must matter in an era with the old-writable shortcut"


@given(cfg=st.sampled_from(CONFIGS) | st.sampled_from(NX_CONFIGS), data=st.data())
def test_spurious_equals_reference(cfg, data):
    """F_SPURIOUS (Vm.fault's one call): an entry at the target level that already maps the
    pfn (a present leaf of it: huge, small or any value) is reported SPURIOUS and left as it
    is, any other is installed (F_MAKE) or read, and a refused make_spte input is reported only
    past that check; code, SPTE, stop level and pool agree with the reference."""
    levels, level, gfn, npages, tbl, child = _walk_to_leaf_pool(cfg, data)
    i = (gfn >> (9 * (level - 1))) & 511
    old = data.draw(st.sampled_from([cfg.profile.nonpresent_value,
                                     RS.make_spte(cfg, 0x200 & cfg.max_pfn, level=level)[0],
                                     RS.make_spte(cfg, 0x201 & cfg.max_pfn, level=1)[0]])
                    | st.integers(0, 2**64 - 1))
    tbl[npages - 1, i] = old
    pfn = data.draw(st.sampled_from([RS.spte_to_pfn(cfg, old), 0x200 & cfg.max_pfn])
                    | st.integers(0, cfg.max_pfn).map(lambda p: p & cfg.max_pfn)
                    | st.just(1 << 40))
    flags = data.draw(st.sampled_from([lib.KVMMU_VM_F_SPURIOUS,
                                       lib.KVMMU_VM_F_SPURIOUS | lib.KVMMU_VM_F_MAKE]))
    acc = data.draw(st.integers(0, 7) | st.just(8))
    ref_tbl, ref_child = tbl.ravel().tolist(), child.ravel().tolist()
    before = tbl.copy()
    want = R.tdp_map(cfg, ref_tbl, ref_child, npages, levels, cfg.profile.nonpresent_value, 0,
                     gfn, level, pfn, acc, 0, S.MEMTYPE_AUTO, flags)
    present = RS.is_shadow_present_pte(cfg, old) and RS.spte_to_pfn(cfg, old) == pfn
    assert (want.code == R.SPURIOUS) is present
    got = _core(cfg, tbl, child, npages, levels, cfg.profile.nonpresent_value, 0, gfn, level,
                pfn, acc, 0, S.MEMTYPE_AUTO, flags)
    assert got[0] == want.code
    if want.code != R.E_MAKE:
        assert got[1:] == (want.spte, want.stop_level)
    assert tbl.ravel().tolist() == ref_tbl
    if want.code != R.OK or not flags & R.F_MAKE:
        np.testing.assert_array_equal(tbl, before)
