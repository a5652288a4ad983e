"""pykvmmu.shadow: make_spte's unsync decision, mark_page_dirty_in_slot, is_access_allowed
and the WARNs (mmu.c / spte.c of v6.17-v6.18)."""
import pytest

from pykvmmu import shadow as SH
from pykvmmu import spte as S
from pykvmmu.config import MmuConfig
from pykvmmu.errors import InputError

CFG = MmuConfig.shadow(maxphyaddr=48, profile="v6.15", mmio_caching=False)
L1, L2 = 0x3701, 0x3702


def test_write_tracked_gfn_is_eperm_and_withholds_w():
    m = SH.ShadowMmu()
    m.get(0x100, L2)                       # upper-level indirect SP: write-tracks gfn 0x100
    assert m.is_write_tracked(0x100) and not m.is_write_tracked(0x101)
    d = m.mmu_try_to_unsync_pages(0x100)
    assert d.result == -SH.EPERM and not d.allowed
    o = SH.make_spte_outcome(CFG, m, L1, 0x100, 0x1234, pte_access=7)
    assert o.wrprot and o.spte == 0x1234a25          # host-W kept, W/MMU-W/D withheld
    assert o.unsync.result == -SH.EPERM


def test_4k_shadow_pages_go_unsync_unless_prefetch_or_synchronizing():
    m = SH.ShadowMmu()
    sp, created = m.get(0x200, L1)
    assert created and not m.is_write_tracked(0x200)
    assert m.mmu_try_to_unsync_pages(0x200, prefetch=True).result == -SH.EEXIST
    assert m.mmu_try_to_unsync_pages(0x200, synchronizing=True).result == -SH.EPERM
    assert not sp.unsync
    d = m.mmu_try_to_unsync_pages(0x200, apply=False)
    assert d.unsynced == ((0x200, L1),) and not sp.unsync
    o = SH.make_spte_outcome(CFG, m, L1, 0x200, 0x1234, pte_access=7)
    assert sp.unsync and not o.wrprot and o.spte == 0x1234e67
    assert o.unsync.unsynced == ((0x200, L1),)
    # already unsync: a prefetch no longer fails
    assert m.mmu_try_to_unsync_pages(0x200, prefetch=True).allowed


def test_no_unsync_attempt_without_write_or_with_writable_old_spte():
    m = SH.ShadowMmu()
    m.get(0x300, L2)
    o = SH.make_spte_outcome(CFG, m, L1, 0x300, 0x1234, pte_access=5)
    assert o.unsync is None and not o.wrprot
    o = SH.make_spte_outcome(CFG, m, L1, 0x300, 0x1234, pte_access=7, host_writable=False)
    assert o.unsync is None
    old = 0x1234e67                        # writable leaf: the hash lookup is skipped
    o = SH.make_spte_outcome(CFG, m, L1, 0x300, 0x1234, pte_access=7, old_spte=old)
    assert o.unsync is None and o.spte & 2


def test_mark_page_dirty_and_huge_warn():
    o = SH.make_spte_outcome(CFG, None, L1, 0x10, 0x1234, pte_access=7, dirty_tracked=True)
    assert o.mark_page_dirty and not o.warnings
    o = SH.make_spte_outcome(CFG, None, L2, 0x200, 0x1200, pte_access=7, dirty_tracked=True)
    assert o.mark_page_dirty and any("WARN_ON_ONCE(level > PG_LEVEL_4K)" in w for w in o.warnings)
    o = SH.make_spte_outcome(CFG, None, L2, 0x200, 0x1200, pte_access=5, dirty_tracked=True)
    assert not o.mark_page_dirty and not o.warnings


def test_zap_unaccounts_and_roots_stay_invalid():
    m = SH.ShadowMmu()
    sp, _ = m.get(0x100, L2)
    m.prepare_zap(sp)
    assert not m.is_write_tracked(0x100) and m.lookup(0x100, L2) is None and m.used_pages == 0
    root, _ = m.get(0x1000, 0x3704)
    root.root_count = 1
    assert m.prepare_zap(root) is True              # zapped while in use
    assert root.role & SH.ROLE_INVALID and m.used_pages == 1
    assert m.lookup(0x1000, 0x3704) is None


def test_zap_all_fast_makes_pages_obsolete():
    m = SH.ShadowMmu()
    m.get(0x100, L2)
    assert m.zap_all_fast() == 1
    sp, created = m.get(0x100, L2)
    assert created and sp.mmu_valid_gen == 1


def test_is_access_allowed():
    assert SH.is_access_allowed(CFG, 0x1234a25, "read")
    assert not SH.is_access_allowed(CFG, 0x1234a25, "write")
    assert SH.is_access_allowed(CFG, 0x1234a25, "exec")
    assert not SH.is_access_allowed(CFG, 0x8000000001234a25, "exec")
    assert SH.is_access_allowed(CFG, 0x1234e67, "write")
    with pytest.raises(InputError, match="not shadow-present"):
        SH.is_access_allowed(CFG, 0x1234, "read")
    with pytest.raises(InputError, match="access="):
        SH.is_access_allowed(CFG, 0x1234a25, "fetch")


def test_access_track_warns():
    ept = MmuConfig.ept(ad=False, profile="v6.15")
    s = S.make_spte(ept, 0x1234, ad_disabled=True).spte
    new, w = SH.mark_spte_for_access_track_warnings(ept, s)
    assert not w and new == S.mark_spte_for_access_track(ept, s)
    new, w = SH.mark_spte_for_access_track_warnings(ept, s | (1 << 54))
    assert any("saved bit locations" in x for x in w)
    bad = (s | 2) & ~ept.mmu_writable_mask            # W without MMU-W
    _, w = SH.mark_spte_for_access_track_warnings(ept, bad)
    assert any("check_spte_writable_invariants" in x for x in w)


def test_modify_spte_protections_prove_mmu_warn():
    s = 0x8000000001234a25
    new, w = SH.modify_spte_protections(CFG, s, 0, CFG.nx_mask)
    assert new == 0x1234a25 and not w
    _, w = SH.modify_spte_protections(CFG, s, 4, 4)
    assert not w
    _, w = SH.modify_spte_protections(CFG, s, 4, 4, prove_mmu=True)
    assert w and "KVM_MMU_WARN_ON" in w[0]


@pytest.mark.parametrize("kw,match", [
    (dict(sp_role=0x3700), "level 0"), (dict(pte_access=8), "pte_access"),
    (dict(gfn=-1), "gfn"), (dict(old_spte=1 << 64), "old_spte"),
])
def test_make_spte_outcome_refuses_bad_arguments(kw, match):
    args = dict(sp_role=L1, gfn=1, pfn=1, pte_access=7)
    args.update(kw)
    m = SH.ShadowMmu()
    with pytest.raises(InputError, match=match):
        SH.make_spte_outcome(CFG, m, args.pop("sp_role"), args.pop("gfn"), args.pop("pfn"), **args)
