"""The scalar fast paths (issue 14): plain ints and real bools go to one checked C call
(kvmmu_make_spte_fast, kvmmu_make_small_spte_checked, ..., kvmmu_mmio_invalidate_checked);
anything else, and any input the C call refuses, goes to the full checks.  The fast path
must give the reference's values and must refuse exactly what the full checks refuse, with
the same message (the messages below are those the entry points gave before the fast paths)."""
import decimal
import fractions

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykvmmu import mmio as M
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import InputError, ProfileError
from pykvmmu.ref import mmio as RM
from pykvmmu.ref import spte as R

CONFIGS = MmuConfig.all_presets()
CFG = MmuConfig.ept()
V510 = MmuConfig.ept(profile="v5.10")
HUGE = S.make_spte(CFG, 512, level=2).spte
FLAG = st.sampled_from([True, False])
OPT_FLAG = st.sampled_from([True, False, None])


@settings(max_examples=300)
@given(cfg=st.sampled_from(CONFIGS), pfn=st.integers(0, (1 << 40) - 1), level=st.integers(1, 5),
       access=st.integers(0, 7), prefetch=FLAG, synchronizing=FLAG, host_writable=FLAG,
       host_mmio=FLAG, ad_wrprot_only=FLAG, unsync_fails=FLAG, ad_disabled=OPT_FLAG,
       nx=OPT_FLAG)
def test_make_spte_fast_path_equals_reference(cfg, pfn, level, access, prefetch, synchronizing,
                                              host_writable, host_mmio, ad_wrprot_only,
                                              unsync_fails, ad_disabled, nx):
    pfn &= cfg.max_pfn
    kw = dict(level=level, pte_access=access, prefetch=prefetch, synchronizing=synchronizing,
              host_writable=host_writable, host_mmio=host_mmio, ad_wrprot_only=ad_wrprot_only,
              unsync_fails=unsync_fails, ad_disabled=ad_disabled, nx_huge_pages=nx)
    got = S.make_spte(cfg, pfn, **kw)
    want = R.make_spte(cfg, pfn, **kw)
    assert type(got) is S.MakeSpteResult
    assert (got.spte, got.wrprot) == want
    assert got.warnings == R.make_spte_warnings(cfg, want[0], level, access)


@settings(max_examples=200)
@given(cfg=st.sampled_from([c for c in CONFIGS if c.profile.has_make_small_spte]),
       pfn=st.integers(0, (1 << 30) - 1), child_level=st.integers(1, 2), index=st.integers(0, 511),
       role_access=st.integers(0, 7), nx=OPT_FLAG, exec_=FLAG)
def test_split_and_collapse_fast_paths_equal_reference(cfg, pfn, child_level, index, role_access,
                                                       nx, exec_):
    pfn &= cfg.max_pfn & ~((1 << (9 * child_level)) - 1)
    huge = S.make_spte(cfg, pfn, level=child_level + 1, pte_access=7 if exec_ else 6).spte
    small = S.make_small_spte(cfg, huge, child_level, index, role_access, nx)
    assert small == R.make_small_spte(cfg, huge, child_level, index, role_access, nx)
    if cfg.profile.has_make_huge_spte:
        assert S.make_huge_spte(cfg, small, child_level + 1, nx) == \
            R.make_huge_spte(cfg, small, child_level + 1, nx)
    pa = pfn << 12
    for ad in (None, True, False):
        assert S.make_nonleaf_spte(cfg, pa, ad) == R.make_nonleaf_spte(cfg, pa, ad)


@settings(max_examples=200)
@given(cfg=st.sampled_from(CONFIGS), gen=st.integers(0, (1 << 19) - 1), nr=st.integers(1, 2),
       spte=st.integers(0, (1 << 64) - 1), level=st.integers(1, 5))
def test_mmio_and_predicate_fast_paths_equal_reference(cfg, gen, nr, spte, level):
    gen &= M.mmio_generation_mask(cfg)
    assert M.generation_mmio_spte_mask(cfg, gen) == RM.generation_mmio_spte_mask(cfg, gen)
    assert M.kvm_mmu_invalidate_mmio_sptes(cfg, gen, nr) is RM.kvm_mmu_invalidate_mmio_sptes(cfg, gen, nr)
    assert M.mmio_generation_bits(cfg) & spte == RM.generation_mmio_spte_mask(
        cfg, RM.get_mmio_spte_generation(cfg, spte))
    for name, (_num, _needs_level, feat) in S.PREDICATES.items():
        if not feat or getattr(cfg.profile, feat):
            assert S.predicate(cfg, name, spte, level) == R.predicate(cfg, name, spte, level), name


REFUSALS = [   # (function, args, kwargs, error, message): as the entry points said before
    (S.make_spte, (CFG, 1), dict(level=0), InputError, "make_spte: level=0: level must be 1..5"),
    (S.make_spte, (CFG, 1), dict(level=300), InputError, "make_spte: level=300: level must be 1..5"),
    (S.make_spte, (CFG, 1), dict(level=1 << 40), InputError,
     "level=0x10000000000: does not fit in 8 unsigned bits"),
    (S.make_spte, (CFG, 1), dict(pte_access=8), InputError, "make_spte: pte_access=0x8: pte_access "
     "must be a combination of ACC_EXEC|ACC_WRITE|ACC_USER (0..7)"),
    (S.make_spte, (CFG, 1), dict(pte_access=300), InputError, "make_spte: pte_access=0x12c: "
     "pte_access must be a combination of ACC_EXEC|ACC_WRITE|ACC_USER (0..7)"),
    (S.make_spte, (CFG, 1 << 41), {}, InputError, "make_spte: pfn=0x20000000000: pfn does not fit "
     "the configuration's PFN mask (SPTE_BASE_ADDR_MASK) 0xffffffffff000"),
    (S.make_spte, (CFG, -1), {}, InputError, "pfn=-1: must not be negative (an unsigned 64-bit value)"),
    (S.make_spte, (CFG, 1.0), {}, InputError, "pfn=1.0: expected an integer, got float"),
    (S.make_spte, (CFG, np.float32(1)), {}, InputError,
     "pfn=np.float32(1.0): expected an integer, got float32"),
    (S.make_spte, (CFG, 1), dict(prefetch=1), InputError,
     "prefetch=1: expected a bool (True or False), got int"),
    (S.make_spte, (CFG, 1), dict(host_writable=0), InputError,
     "host_writable=0: expected a bool (True or False), got int"),
    (S.make_spte, (CFG, 1), dict(ad_disabled=1), InputError,
     "ad_disabled=1: expected a bool (True or False), got int"),
    (S.make_spte, (CFG, 1), dict(nx_huge_pages="yes"), InputError,
     "nx_huge_pages='yes': expected a bool (True or False), got str"),
    (S.make_spte, ("cfg", 1), {}, InputError, "cfg='cfg': expected an MmuConfig, got str"),
    (S.make_small_spte, (CFG, HUGE, 0, 1), {}, InputError, "child_level=0: a split child is at level 1..4"),
    (S.make_small_spte, (CFG, HUGE, 1, 512), {}, InputError,
     "index=512: must be in 0..511 (a page table has 512 entries)"),
    (S.make_small_spte, (CFG, HUGE, 1, 1, 8), {}, InputError, "role_access=0x8: must be ACC_* bits (0..7)"),
    (S.make_small_spte, (CFG, HUGE | 1 << 12, 1, 1), {}, InputError,
     f"make_small_spte: element 0 (huge_spte[0]=np.uint64({HUGE | 1 << 12}), index[0]=1): the huge "
     "SPTE's pfn is not aligned to 512 pages (a level-2 huge page); make_small_spte ORs the child "
     "offset into it"),
    (S.make_small_spte, (CFG, 0, 1, 1), {}, InputError, "make_small_spte: element 0 "
     "(huge_spte[0]=np.uint64(0), index[0]=1): the SPTE is not shadow-present"),
    (S.make_small_spte, (CFG, HUGE & ~0x80, 1, 1), {}, InputError,
     f"make_small_spte: element 0 (huge_spte[0]=np.uint64({HUGE & ~0x80}), index[0]=1): the SPTE "
     "is not a huge (large) SPTE"),
    (S.make_small_spte, (CFG, HUGE, 1, 1, 7, 1), {}, InputError,
     "nx_huge_pages=1: expected a bool (True or False), got int"),
    (S.make_small_spte, (CFG, HUGE, 1, np.float32(1)), {}, InputError,
     "index=np.float32(1.0): expected an integer, got float32"),
    (S.make_huge_spte, (CFG, 0, 2), {}, InputError,
     "make_huge_spte: element 0 (small_spte[0]=np.uint64(0)): the SPTE is not shadow-present"),
    (S.make_huge_spte, (CFG, HUGE, 1), {}, InputError, "level=1: huge SPTEs are at level 2 (2M) or 3 (1G)"),
    (S.make_huge_spte, (CFG, HUGE, 2, 0), {}, InputError,
     "nx_huge_pages=0: expected a bool (True or False), got int"),
    (S.make_huge_spte, (V510, HUGE, 2), {}, ProfileError, "make_huge_spte: does not exist in kernel era "
     "v5.10 (v5.10-v5.12) (profile 'v5.10'); choose a profile where it exists"),
    (S.make_nonleaf_spte, (CFG, 4097), {}, InputError, "make_nonleaf_spte: child_pa=0x1001: must be "
     "4 KiB aligned and within SPTE_BASE_ADDR_MASK 0xffffffffff000"),
    (S.make_nonleaf_spte, (CFG, 4096, 1), {}, InputError,
     "ad_disabled=1: expected a bool (True or False), got int"),
    (S.predicate, (CFG, "is_last_spte", 1, 0), {}, InputError, "is_last_spte: level=0: must be 1..5"),
    (S.predicate, (CFG, "is_large_pte", 1, 6), {}, InputError,
     "level=6: must be in 1..5 (PG_LEVEL_4K..PT64_ROOT_MAX_LEVEL)"),
    (S.predicate, (CFG, "is_large_pte", -1), {}, InputError,
     "spte=-1: must not be negative (an unsigned 64-bit value)"),
    (S.decode, (CFG, -1, 1.0), {}, InputError, "spte=-1: must not be negative (an unsigned 64-bit value)"),
    (S.decode, (CFG, 1, 0), {}, InputError, "level=0: must be 1..5"),
    (S.decode, (CFG, 1, 300), {}, InputError, "level=300: does not fit in 8 unsigned bits"),
    (M.generation_mmio_spte_mask, (CFG, 1 << 19), {}, InputError,
     "generation=0x80000: wider than MMIO_SPTE_GEN_MASK 0x7ffff (WARN in generation_mmio_spte_mask)"),
    (M.generation_mmio_spte_mask, (CFG, -1), {}, InputError,
     "generation=-1: must not be negative (an unsigned 64-bit value)"),
    (M.kvm_mmu_invalidate_mmio_sptes, (CFG, 1 << 63), {}, InputError,
     "generation=0x8000000000000000: generation has the update-in-progress bit 63 (WARN in "
     "kvm_mmu_invalidate_mmio_sptes)"),
    (M.kvm_mmu_invalidate_mmio_sptes, (CFG, 2, 3), {}, InputError, "nr_as_ids=3: x86 has 1 memslot "
     "address space (VMs with private memory) or 2 (SMM); kvm_arch_nr_memslot_as_ids()"),
    (M.kvm_mmu_invalidate_mmio_sptes, (CFG, 2, 1 << 40), {}, InputError,
     "nr_as_ids=0x10000000000: does not fit in 8 unsigned bits"),
    (M.mmio_generation_bits, ("x",), {}, InputError, "cfg='x': expected an MmuConfig, got str"),
]


@pytest.mark.parametrize("fn, args, kw, err, msg", REFUSALS,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(REFUSALS)])
def test_fast_paths_refuse_with_the_same_message(fn, args, kw, err, msg):
    with pytest.raises(err) as ei:
        fn(*args, **kw)
    assert str(ei.value) == msg


def test_bools_and_numpy_ints_as_integers_take_the_full_checks_with_the_same_values():
    """``_check.uint`` accepts bools (0/1) and numpy integers for integer arguments; the fast
    paths send them to the full checks, which give what a plain int gives."""
    assert S.make_spte(CFG, np.uint64(5), level=np.uint8(2)) == S.make_spte(CFG, 5, level=2)
    assert S.make_spte(CFG, True) == S.make_spte(CFG, 1)
    assert S.make_small_spte(CFG, np.uint64(HUGE), np.int8(1), True) == S.make_small_spte(CFG, HUGE, 1, 1)
    assert S.make_huge_spte(CFG, np.uint64(HUGE), np.uint8(2), np.bool_(False)) == \
        S.make_huge_spte(CFG, HUGE, 2, False)
    assert M.kvm_mmu_invalidate_mmio_sptes(CFG, np.uint64(2), True) is \
        M.kvm_mmu_invalidate_mmio_sptes(CFG, 2, 1)
    assert M.generation_mmio_spte_mask(CFG, np.uint32(3)) == M.generation_mmio_spte_mask(CFG, 3)
    assert S.predicate(CFG, "is_last_spte", np.uint64(HUGE), 2) == S.predicate(CFG, "is_last_spte", HUGE, 2)


SPTE_ARGS = [   # (function, the arguments before the bad one, its name, the arguments after it)
    (S.spte_to_pfn, (CFG,), "spte", ()), (S.mark_spte_for_access_track, (CFG,), "spte", ()),
    (S.restore_acc_track_spte, (CFG,), "spte", ()), (S.is_shadow_present_pte, (CFG,), "spte", ()),
    (S.is_last_spte, (CFG,), "spte", (1,)), (S.is_ept_ve_possible, (CFG,), "spte", ()),
    (S.leaf_spte_change_needs_tlb_flush, (CFG,), "old_spte", (0,)),
    (S.leaf_spte_change_needs_tlb_flush, (CFG, 0), "new_spte", ()),
    (S.decode, (CFG,), "spte", ()), (S.make_spte, (CFG,), "pfn", ()),
    (M.get_mmio_spte_gfn, (CFG,), "spte", ()), (M.get_mmio_spte_access, (CFG,), "spte", ()),
    (M.get_mmio_spte_generation, (CFG,), "spte", ()), (M.check_mmio_spte, (CFG,), "spte", (0,)),
    (M.check_mmio_spte, (CFG, 0), "memslots_generation", ()),
    (M.mmio_fault_outcome, (CFG,), "spte", (0,)), (M.mmio_fault_outcome, (CFG, 0), "memslots_generation", ()),
    (M.make_mmio_spte, (CFG, 1, 7), "generation", ()), (M.generation_mmio_spte_mask, (CFG,), "generation", ()),
    (M.kvm_mmu_invalidate_mmio_sptes, (CFG,), "generation", ()),
]


@pytest.mark.parametrize("bad", [np.float32(5), np.float64(5), decimal.Decimal(5), fractions.Fraction(11, 2)],
                         ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("fn, before, name, after", SPTE_ARGS,
                         ids=[f"{c[0].__name__}-{c[2]}" for c in SPTE_ARGS])
def test_scalar_entry_points_refuse_non_integers_that_cffi_would_truncate(fn, before, name, after, bad):
    """cffi converts any object with __int__ (numpy floats, Decimal, Fraction: 11/2 -> 5) to a
    C integer; the scalar entry points must refuse them as the full checks do."""
    with pytest.raises(InputError, match=f"^{name}=.*expected an integer, got {type(bad).__name__}$"):
        fn(*before, bad, *after)


def test_decode_predicates_follow_the_profile_object_not_its_name():
    # a replaced profile keeps its name; decode's memo must not hand it the original's list
    import dataclasses

    from pykvmmu import profile as PR
    p = PR.PROFILES["v6.10"]
    q = dataclasses.replace(p, has_ept_ve_possible=not p.has_ept_ve_possible)
    s = 0x8000000012345E77                       # the same predicate bytes under both
    for first, second in ((p, q), (q, p)):
        a = S.decode(MmuConfig.ept(profile=first), s).predicates
        b = S.decode(MmuConfig.ept(profile=second), s).predicates
        assert ("is_ept_ve_possible" in a) == first.has_ept_ve_possible
        assert ("is_ept_ve_possible" in b) == second.has_ept_ve_possible
