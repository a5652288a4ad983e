"""prev_roots cache, the seed's NPT bug, shadow-page hash model, write flooding."""
import pytest

from pykvmmu import prevroots as P
from pykvmmu import role as R
from pykvmmu import sphash as H
from pykvmmu import wflood as W
from pykvmmu.commands import role as cmd
from pykvmmu.errors import InputError, ProfileError

L = "latest"
TDP = 0x3784


def _hpa(c, i=None):
    return c.root.hpa if i is None else c.prev_roots[i].hpa


def test_rotation_diagram_keep_current():
    """C 0 1 2 -> 0 C 1 2 -> 1 C 0 2 -> 2 C 0 1 (section 4.2)."""
    c = P.PrevRootsCache(L)
    shadow = 0x3704
    for pgd in (0x1000, 0x2000, 0x3000, 0x4000):     # fill: current 4000, prev 3000 2000 1000
        c.new_pgd(pgd, shadow)
    assert c.misses == 4
    pg = lambda: [c.root.pgd] + [r.pgd for r in c.prev_roots]  # noqa: E731
    assert pg() == [0x4000, 0x3000, 0x2000, 0x1000]
    assert c.new_pgd(0x1000, shadow)                 # hit in the LRU slot
    assert pg() == [0x1000, 0x4000, 0x3000, 0x2000]
    assert c.new_pgd(0x1000, shadow) and pg()[0] == 0x1000   # current reused, no change
    assert c.new_pgd(0x3000, shadow)
    assert pg() == [0x3000, 0x1000, 0x4000, 0x2000]


def test_miss_frees_lru_only():
    c = P.PrevRootsCache(L)
    for pgd in (0x1000, 0x2000, 0x3000, 0x4000):
        c.new_pgd(pgd, 0x3704)
    lru = c.prev_roots[2].hpa
    assert not c.new_pgd(0x5000, 0x3704)
    assert lru not in c.pages and c.freed == 1
    assert [r.pgd for r in c.prev_roots] == [0x4000, 0x3000, 0x2000]


def test_find_without_current_bubbles_up_and_invalidates_lru_hpa():
    c = P.PrevRootsCache(L)
    for pgd in (0x1000, 0x2000, 0x3000, 0x4000):
        c.new_pgd(pgd, 0x3704)
    c.free_roots(P.KVM_MMU_ROOT_CURRENT)
    assert not c.root.valid and c.root.pgd == 0
    assert c.new_pgd(0x2000, 0x3704)
    assert c.root.pgd == 0x2000
    # prev[1] takes prev[2]; the LRU slot keeps its pgd but loses its hpa (not freed:
    # prev[1] still holds that root)
    assert [r.pgd for r in c.prev_roots] == [0x3000, 0x1000, 0x1000]
    assert [r.valid for r in c.prev_roots] == [True, True, False]
    assert c.prev_roots[1].hpa in c.pages


def test_direct_roots_ignore_pgd_v57_plus_not_v419():
    c = P.PrevRootsCache(L)
    c.new_pgd(0x1000, TDP)
    assert c.new_pgd(0x9000, TDP)                    # direct: pgd ignored
    c = P.PrevRootsCache("v5.0-fix")
    t = R.kvm_calc_tdp_mmu_root_page_role("v5.0-fix", R.VcpuState())
    c.new_pgd(0x1000, t)
    assert not c.new_pgd(0x1000, t)                  # v4.19 flavour never reuses the current root
    with pytest.raises(ProfileError):
        P.PrevRootsCache("v4.12")


def test_free_roots_and_guest_mode():
    c = P.PrevRootsCache(L)
    c.new_pgd(0x1000, TDP)
    c.new_pgd(0x2000, 0x23704)                       # guest-mode root
    c.new_pgd(0x1000, TDP)
    assert c.prev_roots[0].pgd == 0x2000 and c.prev_roots[0].valid
    c.free_guest_mode_roots()
    assert not c.prev_roots[0].valid and c.prev_roots[0].pgd == 0x2000
    with pytest.raises(InputError):
        c.free_roots(0x10)
    c.free_roots(P.KVM_MMU_ROOTS_ALL)
    assert not c.root.valid and not any(r.valid for r in c.prev_roots)
    assert P.KVM_MMU_ROOT_PREVIOUS(2) == 8 and P.KVM_MMU_ROOTS_ALL == 0xF


@pytest.mark.parametrize("era,expect", [("v5.0", 0.0), ("v4.20", 0.0), ("v5.0-fix", 1.0),
                                        ("v5.1", 1.0), ("v5.9", 1.0), ("v5.14", 1.0),
                                        ("v6.14", 1.0)])
def test_seed_npt_l1_l2_l1_bug(era, expect, capsys):
    """Seed 002: v4.20/v5.0 miss the cache on every return to L1; the fix hits."""
    c = P.run_switches(era, cmd.l1_l2_switches(era, rounds=8))
    hits, n = cmd.l1_return_hits(c)
    print(f"{era}: L2->L1 hit rate {hits}/{n}")
    assert n == 8 and hits / n == expect
    assert "hit rate" in capsys.readouterr().out


def test_demo_scene_prints_hit_rates():
    lines = []
    cmd.demo(lines.append)
    text = "\n".join(lines)
    assert "v5.0      " in text and "L2->L1 hits 0/10 (0%)" in text
    assert "L2->L1 hits 10/10 (100%)" in text
    assert cmd.DEMO_ORDER == 40


def test_hash_table_model():
    h = H.MmuPageHash()
    sp, created = h.get(0x1000, 0x3704)
    assert created and h.stat["mmu_cache_miss"] == 1
    sp2, created = h.get(0x1000, 0x3704)
    assert sp2 is sp and not created
    other, _ = h.get(0x1000, 0x3703)                 # same gfn, other role: a different SP
    assert other is not sp
    b = h.bucket_of(0x1000)
    assert h.buckets[b][0] is other                  # LIFO head insertion
    # a gfn colliding in the same bucket counts as a collision
    g = next(x for x in range(0x2000, 0x200000) if R.kvm_page_table_hashfn(x) == b)
    h.get(g, 0x3704)
    h.find(0x1000, 0x3704)
    assert h.last_collisions == 1 and h.stat["max_mmu_page_hash_collisions"] >= 1
    # obsolete: generation toggle and role.invalid
    h.zap_all_fast()
    assert h.find(0x1000, 0x3704) is None
    inv = h.alloc(0x5000, 0x3704 | 0x800)
    assert h.find(0x5000, 0x3704 | 0x800) is None and inv.invalid
    # unsync SP with a mismatching role is zapped when the requested level > 4K
    u = h.alloc(0x6000, 0x3701)
    u.unsync = True
    h.find(0x6000, 0x3702)
    assert u not in h.buckets[h.bucket_of(0x6000)]


def test_bucket_stats_and_plot(tmp_path):
    gfns = H.realistic_gfns()
    counts = H.bucket_counts(gfns)
    assert counts.sum() == gfns.size and counts.size == 4096
    s = H.bucket_stats(counts)
    assert s["pages"] == gfns.size and s["max"] >= 1 and sum(s["histogram"]) == 4096
    out = H.plot_bucket_occupancy(counts, str(tmp_path / "occ.png"))
    assert out.endswith((".png", ".txt"))
    if out.endswith(".txt"):
        assert "matplotlib is not installed" in open(out).read()


MISALIGNED = [(0x8, 1, 8, False), (0x9, 1, 8, True), (0x8, 2, 8, True), (0x8, 4, 8, False),
              (0xC, 4, 8, False), (0xC, 8, 8, True), (0x4, 4, 4, False), (0x6, 4, 4, True),
              (0x4, 8, 4, True)]


@pytest.mark.parametrize("era", ["v5.0", "v5.1", "v6.14"])
@pytest.mark.parametrize("off,nbytes,ps,want", MISALIGNED)
def test_detect_write_misaligned(era, off, nbytes, ps, want):
    role = R.pack(era, level=2, gpte_bytes=ps)
    assert W.detect_write_misaligned(era, role, 0x7000 + off, nbytes) is want


WRITTEN = [(0x804, 2, 2, (2, 2)), (0x804, 1, 1, (1, 1)), (0x804, 1, 0, None),
           (0xFFC, 2, 3, (510, 2)), (0x7FC, 1, 0, (511, 1))]


@pytest.mark.parametrize("era", ["v5.0", "v5.1", "v6.14"])
@pytest.mark.parametrize("off,level,q,want", WRITTEN)
def test_get_written_sptes(era, off, level, q, want):
    role = R.pack(era, level=level, quadrant=q, gpte_bytes=4)
    assert W.get_written_sptes(era, role, 0x7000 + off) == want
    role8 = R.pack(era, level=level, gpte_bytes=8)
    assert W.get_written_sptes(era, role8, 0x7000 + off) == (off // 8, 1)


def test_write_flooding_and_track_write():
    h = H.MmuPageHash()
    pd = h.alloc(0x7, R.pack(L, level=2, access=7))
    pt = h.alloc(0x7, R.pack(L, level=1, access=7, quadrant=0))
    direct = h.alloc(0x7, R.pack(L, level=1, direct=1))
    for k in range(2):
        res = W.kvm_mmu_track_write(L, h, 0x7008, 8)
        assert not res.zapped and len(res.written) == 2     # direct SPs are never visited
    res = W.kvm_mmu_track_write(L, h, 0x7008, 8)
    assert [(sp, why) for sp, why in res.zapped] == [(pd, "flooded")]  # third write, upper level
    assert any(sp is pt for sp, _, _ in res.written)
    res = W.kvm_mmu_track_write(L, h, 0x7009, 2)
    assert res.zapped == [(pt, "misaligned")]
    assert direct in h.buckets[h.bucket_of(7)]
    assert W.mmu_pte_write_fetch_gpte(0x700C, 4, True) == (0x7008, 8)
    with pytest.raises(InputError):
        W.detect_write_misaligned(L, 0x3702, 0x1000, 9)
    # a hash hit clears the flood count
    pd2 = h.alloc(0x8, R.pack(L, level=2, access=7))
    W.kvm_mmu_track_write(L, h, 0x8000, 8)
    assert pd2.write_flooding_count == 1
    h.find(0x8, pd2.role)
    assert pd2.write_flooding_count == 0
